//! Who the plugin acts as, whether a token value works, and personal access
//! tokens: show, list, rotate, revoke (`doc/api/personal_access_tokens.md`).
//!
//! Rotation gives the token a new id and revokes the old one at once. From
//! then on the old value must never be used again, not even to check that
//! it is dead: GitLab's reuse detection treats a revoked token of a
//! rotation family coming back as a leak and revokes every active token of
//! the family, the new one included (gitlab-org/gitlab MR 125270; since
//! issue 418769 GitLab does this only on the rotate endpoints, but the
//! provider reference and the simulator allow for any request, and older
//! instances do so).

use keycycle_plugin_sdk::{Error, Input, Value, json, log};

use crate::api::{Api, Call};
use crate::fields;
use crate::output::{item, with_new_token};

/// `GET /user`: who the plugin's token belongs to.
pub(crate) fn whoami(api: &Api) -> Result<Value, Error> {
    let me = api.json(&Call::get("/user"))?;
    // `bot` tells a project or group access token's bot user from a person:
    // a trigger created as a service bot must be owned by the bot.
    Ok(json!({
        "id": me["id"],
        "username": me["username"],
        "name": me["name"],
        "bot": me["bot"].as_bool().unwrap_or(false),
    }))
}

/// Whether GitLab accepts `token`, asking `GET /personal_access_tokens/self`
/// with that token itself.
///
/// Never call this with a token that was just rotated away: GitLab's
/// reuse detection revokes the successor of a revoked token that is used
/// again, so checking "is the old one dead" kills the new one.
pub(crate) fn check_token(api: &Api, input: &Value) -> Result<Value, Error> {
    let token = fields::non_blank(input, "token")?;
    match api.send_as(&Call::get("/personal_access_tokens/self"), token) {
        Ok(response) => {
            let me: Value = response.json()?;
            Ok(json!({
                "valid": true,
                "id": me["id"],
                "name": me["name"],
                "expires_at": me["expires_at"],
                "scopes": me["scopes"],
                "active": me["active"],
            }))
        }
        // Unknown, revoked and expired tokens all get 401, whether as
        // `{"message":"401 Unauthorized"}` or as the OAuth layer's
        // `invalid_token` body.
        Err(Error::Provider { status: 401, .. }) => Ok(json!({"valid": false})),
        Err(other) => Err(other),
    }
}

/// `GET /personal_access_tokens/self`: the plugin's own token.
pub(crate) fn get_self_token(api: &Api) -> Result<Value, Error> {
    Ok(item(api.json(&Call::get("/personal_access_tokens/self"))?))
}

/// `GET /personal_access_tokens/:id`. GitLab answers 401, not 404, for a
/// token that does not exist or is someone else's, unless the caller is an
/// administrator.
pub(crate) fn get_pat(api: &Api, input: &Value) -> Result<Value, Error> {
    let id = fields::id(input, "id")?;
    Ok(item(api.json(&Call::get(format!(
        "/personal_access_tokens/{id}"
    )))?))
}

/// `GET /personal_access_tokens`, every page. Only administrators see other
/// users' tokens; anyone else naming another `user_id` gets 401.
pub(crate) fn list_pats(api: &Api, input: &Value) -> Result<Value, Error> {
    let mut filters = Vec::new();
    if let Some(user_id) = fields::opt_id(input, "user_id")? {
        filters.push(("user_id", user_id.to_string()));
    }
    if let Some(state) = input.opt_str_field("state")? {
        if state != "active" && state != "inactive" {
            return Err(Error::invalid_input(
                "input `state` must be \"active\" or \"inactive\"",
            ));
        }
        filters.push(("state", state.to_owned()));
    }
    if let Some(search) = input.opt_str_field("search")? {
        filters.push(("search", search.to_owned()));
    }
    let tokens: Vec<Value> = api
        .get_all("/personal_access_tokens", &filters)?
        .into_iter()
        .map(item)
        .collect();
    Ok(json!({ "tokens": tokens }))
}

/// `POST /personal_access_tokens/:id/rotate`: a new token with a new id;
/// the old one is revoked at once.
pub(crate) fn rotate_pat(api: &Api, input: &Value) -> Result<Value, Error> {
    let id = fields::id(input, "id")?;
    let call = Call::post(
        format!("/personal_access_tokens/{id}/rotate"),
        format!(
            "personal access token {id} may already be revoked and replaced; check with \
             list_pats (state active) before rotating again"
        ),
    )
    .json(expiry_body(input)?);
    let rotated = api.json(&call).map_err(|e| rotation_hint(e, "list_pats"))?;
    let rotated = with_new_token(rotated, "the rotated personal access token")?;
    log::info(&format!(
        "rotated personal access token {id}: GitLab revoked it and issued token {} (expires {})",
        rotated["id"],
        expiry_text(&rotated)
    ));
    Ok(rotated)
}

/// `POST /personal_access_tokens/self/rotate`: rotates the token the plugin
/// acts with. Afterwards the plugin's configured `token` is revoked: the
/// runbook must store the new value before anything else calls GitLab with
/// this plugin, and must never use the old value again: self-rotating with
/// an already rotated token revokes its successor and creates nothing
/// (gitlab-org/gitlab issue 524639).
pub(crate) fn rotate_self(api: &Api, input: &Value) -> Result<Value, Error> {
    let call = Call::post(
        "/personal_access_tokens/self/rotate",
        "the plugin's token may already be revoked and replaced by a value nobody has seen; \
         do not use the old token again (reuse detection would revoke its successor); check \
         with list_pats using another token, and revoke the unseen successor if there is one",
    )
    .json(expiry_body(input)?);
    let rotated = api
        .json(&call)
        .map_err(|e| rotation_hint(e, "list_pats with another token"))?;
    let rotated = with_new_token(rotated, "the rotated personal access token")?;
    log::info(&format!(
        "rotated the plugin's own personal access token: the old one is revoked, the new one is \
         token {} (expires {}); store it before the next call",
        rotated["id"],
        expiry_text(&rotated)
    ));
    Ok(rotated)
}

/// `DELETE /personal_access_tokens/:id` → 204.
pub(crate) fn revoke_pat(api: &Api, input: &Value) -> Result<Value, Error> {
    let id = fields::id(input, "id")?;
    api.send(&Call::delete(format!("/personal_access_tokens/{id}")))?;
    log::info(&format!("revoked personal access token {id}"));
    Ok(json!({"revoked": true, "id": id}))
}

/// The body of a rotate request: `expires_at` when given. Without it
/// GitLab picks one week when expiry is enforced, else the maximum
/// lifetime.
pub(crate) fn expiry_body(input: &Value) -> Result<Value, Error> {
    Ok(match fields::opt_date(input, "expires_at")? {
        Some(date) => json!({ "expires_at": date }),
        None => json!({}),
    })
}

pub(crate) fn expiry_text(token: &Value) -> String {
    token["expires_at"]
        .as_str()
        .map_or_else(|| "never".to_owned(), str::to_owned)
}

/// A refused rotation of a token that is already revoked may have done
/// more than refuse: the docs say rotating a revoked token of a rotation
/// family revokes the whole family, while GitLab's `RotateService` answers
/// 400 "Token already revoked" (provider reference, GitLab gotchas). Say
/// so, keeping GitLab's message first.
pub(crate) fn rotation_hint(error: Error, list_with: &str) -> Error {
    match error {
        Error::Provider {
            status: 400,
            message,
        } if mentions_already_revoked(&message) => Error::Provider {
            status: 400,
            message: format!(
                "{message}; rotating a revoked token can make GitLab revoke every token of its \
                 rotation family, so check which tokens are still active with {list_with}"
            ),
        },
        other => other,
    }
}

fn mentions_already_revoked(message: &str) -> bool {
    message.to_ascii_lowercase().contains("already revoked")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_body_checks_the_date() {
        assert_eq!(
            expiry_body(&json!({"expires_at": "2030-02-03"})).unwrap(),
            json!({"expires_at": "2030-02-03"})
        );
        assert_eq!(expiry_body(&json!({})).unwrap(), json!({}));
        assert!(expiry_body(&json!({"expires_at": "soon"})).is_err());
    }

    #[test]
    fn revoked_rotations_get_a_family_warning() {
        let e = rotation_hint(
            Error::provider(400, "400 Bad request - Token already revoked"),
            "list_pats",
        );
        let Error::Provider { status, message } = e else {
            panic!("kind changed")
        };
        assert_eq!(status, 400);
        assert!(
            message.starts_with("400 Bad request - Token already revoked; "),
            "{message}"
        );
        assert!(message.contains("list_pats"), "{message}");
        let other = rotation_hint(Error::provider(403, "403 Forbidden"), "list_pats");
        assert_eq!(other, Error::provider(403, "403 Forbidden"));
        // A 5xx whose own text mentions revocation is not a refused rotation.
        let unknown = Error::provider(502, "502 Bad Gateway; token 6 may already be revoked");
        assert_eq!(rotation_hint(unknown.clone(), "list_pats"), unknown);
    }

    #[test]
    fn expiry_text_says_never_for_null() {
        assert_eq!(
            expiry_text(&json!({"expires_at": "2030-01-01"})),
            "2030-01-01"
        );
        assert_eq!(expiry_text(&json!({"expires_at": null})), "never");
    }
}
