//! Project and group access tokens (`doc/api/project_access_tokens.md`,
//! `doc/api/group_access_tokens.md`): list, show, create, find what an
//! interrupted create made, rotate, revoke. Managing them needs Maintainer
//! in a project and Owner in a group.

use keycycle_plugin_sdk::{Context, Error, Input, Value, json, log};

use crate::api::{Api, Call};
use crate::fields::{self, OwnerType};
use crate::labels;
use crate::output::{item, not_found, with_new_token};
use crate::tokens::{expiry_body, expiry_text, rotation_hint};

/// Which project or group the tokens belong to.
struct Owner {
    kind: OwnerType,
    reference: String,
}

impl Owner {
    fn from_input(input: &Value) -> Result<Owner, Error> {
        Ok(Owner {
            kind: OwnerType::from_input(input)?,
            reference: fields::resource_ref(input, "owner")?,
        })
    }

    fn tokens_path(&self) -> String {
        format!("/{}/{}/access_tokens", self.kind.plural(), self.reference)
    }

    fn describe(&self) -> String {
        format!(
            "{} {}",
            self.kind.name(),
            fields::display_ref(&self.reference)
        )
    }
}

/// `GET /:owner_type/:owner/access_tokens`, every page.
pub(crate) fn list(api: &Api, input: &Value) -> Result<Value, Error> {
    let owner = Owner::from_input(input)?;
    let tokens: Vec<Value> = api
        .get_all(&owner.tokens_path(), &[])?
        .into_iter()
        .map(item)
        .collect();
    Ok(json!({ "tokens": tokens }))
}

/// `GET /:owner_type/:owner/access_tokens/:token_id`.
pub(crate) fn get(api: &Api, input: &Value) -> Result<Value, Error> {
    let owner = Owner::from_input(input)?;
    let token_id = fields::id(input, "token_id")?;
    let path = format!("{}/{token_id}", owner.tokens_path());
    Ok(item(api.json(&Call::get(path))?))
}

/// `POST /:owner_type/:owner/access_tokens`, with the call's idempotency
/// key appended to the description so `find_access_token` can find the
/// token if this call is interrupted.
pub(crate) fn create(api: &Api, ctx: &Context, input: &Value) -> Result<Value, Error> {
    let owner = Owner::from_input(input)?;
    let name = fields::non_blank(input, "name")?;
    let mut body = json!({
        "name": name,
        "scopes": fields::string_list(input, "scopes")?,
        "description": labels::labelled(
            input.opt_str_field("description")?.unwrap_or(""),
            ctx.idempotency_key(),
        ),
    });
    if input.field("access_level").is_some() {
        body["access_level"] = json!(input.u64_field("access_level")?);
    }
    if let Some(date) = fields::opt_date(input, "expires_at")? {
        body["expires_at"] = json!(date);
    }
    let call = Call::post(
        owner.tokens_path(),
        format!(
            "a token named `{name}` may have been created in {}; run find_access_token with \
             the same input in the same step to find it before creating another",
            owner.describe()
        ),
    )
    .json(body);
    let created = with_new_token(api.json(&call)?, "the new access token")?;
    log::info(&format!(
        "created {} access token {} named `{name}` in {} (expires {})",
        owner.kind.name(),
        created["id"],
        owner.describe(),
        expiry_text(&created)
    ));
    Ok(created)
}

/// The active token named `name` whose description carries this call's
/// idempotency label, or a 404: what an interrupted `create_access_token`
/// made, if anything.
pub(crate) fn find(api: &Api, ctx: &Context, input: &Value) -> Result<Value, Error> {
    let owner = Owner::from_input(input)?;
    let name = fields::non_blank(input, "name")?;
    let key = ctx.idempotency_key();
    if key.is_empty() {
        return Err(not_found(
            "this call has no idempotency key, so a token made by an interrupted \
             create_access_token cannot be told apart from others",
        ));
    }
    // `state=active` narrows the list on GitLab versions that know it;
    // the same filter is applied here for those that ignore it.
    let tokens = api.get_all(&owner.tokens_path(), &[("state", "active".to_owned())])?;
    pick_labelled(tokens, name, key).map(item).ok_or_else(|| {
        not_found(format!(
            "no active access token named `{name}` in {} carries the label {}",
            owner.describe(),
            labels::suffix(key).trim_start()
        ))
    })
}

/// Of `tokens`, the newest active one named `name` labelled with `key`.
fn pick_labelled(tokens: Vec<Value>, name: &str, key: &str) -> Option<Value> {
    tokens
        .into_iter()
        .filter(|t| {
            t["name"].as_str() == Some(name)
                && t["active"].as_bool() != Some(false)
                && t["revoked"].as_bool() != Some(true)
                && t["description"]
                    .as_str()
                    .is_some_and(|d| labels::carries(d, key))
        })
        .max_by_key(|t| t["id"].as_u64().unwrap_or(0))
}

/// `POST /:owner_type/:owner/access_tokens/:token_id/rotate`: a new token
/// with a new id; the old one is revoked at once. With `self_rotate` (the
/// token is the one the plugin acts with: a project or group bot rotating
/// itself) it is `.../access_tokens/self/rotate`, the only form GitLab
/// accepts there; it answers the by-id form with 401. The caller says so
/// rather than the plugin asking GitLab first: a request inside this
/// operation, which is never sent twice, would turn a crash during a
/// harmless lookup into a rotation of unknown outcome.
pub(crate) fn rotate(api: &Api, input: &Value) -> Result<Value, Error> {
    let owner = Owner::from_input(input)?;
    let token_id = fields::id(input, "token_id")?;
    let self_rotate = input.opt_bool_field("self_rotate")?.unwrap_or(false);
    let call = Call::post(
        rotate_path(&owner, token_id, self_rotate),
        format!(
            "access token {token_id} of {} may already be revoked and replaced; check with \
             list_access_tokens before rotating again",
            owner.describe()
        ),
    )
    .json(expiry_body(input)?);
    let rotated = api
        .json(&call)
        .map_err(|e| rotation_hint(e, "list_access_tokens"))?;
    let rotated = with_new_token(rotated, "the rotated access token")?;
    log::info(&format!(
        "rotated access token {token_id} of {}: GitLab revoked it and issued token {} \
         (expires {})",
        owner.describe(),
        rotated["id"],
        expiry_text(&rotated)
    ));
    Ok(rotated)
}

/// Where to rotate `token_id`, which is the plugin's own when `self_rotate`.
fn rotate_path(owner: &Owner, token_id: u64, self_rotate: bool) -> String {
    if self_rotate {
        format!("{}/self/rotate", owner.tokens_path())
    } else {
        format!("{}/{token_id}/rotate", owner.tokens_path())
    }
}

/// `DELETE /:owner_type/:owner/access_tokens/:token_id` → 204.
pub(crate) fn revoke(api: &Api, input: &Value) -> Result<Value, Error> {
    let owner = Owner::from_input(input)?;
    let token_id = fields::id(input, "token_id")?;
    api.send(&Call::delete(format!("{}/{token_id}", owner.tokens_path())))?;
    log::info(&format!(
        "revoked access token {token_id} of {}",
        owner.describe()
    ));
    Ok(json!({"revoked": true, "token_id": token_id}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_the_newest_active_labelled_token() {
        let tokens = vec![
            json!({"id": 1, "name": "ci", "active": true, "revoked": false,
                   "description": "deploy [keycycle:k1]"}),
            json!({"id": 5, "name": "ci", "active": true, "revoked": false,
                   "description": "deploy [keycycle:k1]"}),
            json!({"id": 9, "name": "ci", "active": false, "revoked": true,
                   "description": "deploy [keycycle:k1]"}),
            json!({"id": 7, "name": "ci", "active": true, "revoked": false,
                   "description": "deploy [keycycle:k2]"}),
            json!({"id": 8, "name": "cd", "active": true, "revoked": false,
                   "description": "deploy [keycycle:k1]"}),
            json!({"id": 6, "name": "ci", "active": true, "revoked": false,
                   "description": null}),
        ];
        assert_eq!(pick_labelled(tokens.clone(), "ci", "k1").unwrap()["id"], 5);
        assert_eq!(pick_labelled(tokens.clone(), "ci", "k2").unwrap()["id"], 7);
        assert!(pick_labelled(tokens.clone(), "ci", "k3").is_none());
        assert!(pick_labelled(tokens, "build", "k1").is_none());
    }

    #[test]
    fn owner_paths() {
        let owner =
            Owner::from_input(&json!({"owner_type": "group", "owner": "acme/platform"})).unwrap();
        assert_eq!(owner.tokens_path(), "/groups/acme%2Fplatform/access_tokens");
        let owner = Owner::from_input(&json!({"owner_type": "project", "owner": 12})).unwrap();
        assert_eq!(owner.tokens_path(), "/projects/12/access_tokens");
        assert!(Owner::from_input(&json!({"owner_type": "project"})).is_err());
    }

    #[test]
    fn a_token_rotating_itself_uses_self() {
        let owner =
            Owner::from_input(&json!({"owner_type": "project", "owner": "acme/docs"})).unwrap();
        assert_eq!(
            rotate_path(&owner, 7, true),
            "/projects/acme%2Fdocs/access_tokens/self/rotate"
        );
        assert_eq!(
            rotate_path(&owner, 7, false),
            "/projects/acme%2Fdocs/access_tokens/7/rotate"
        );
    }
}
