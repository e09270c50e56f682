//! OAuth clients, OAuth access tokens and the grant endpoint, as the
//! Zendesk OAS describes them (`/api/v2/oauth/clients`,
//! `/api/v2/oauth/tokens`, `POST /oauth/tokens`).
//!
//! Token values leave the plugin only in output fields the operations
//! declare secret: list and read outputs drop `token` (Zendesk shows its
//! first 10 characters there, kept as `token_prefix` so an operator can
//! tell tokens apart) and `refresh_token`.

use keycycle_plugin_sdk::{Error, Input, Value, http, json, log};

use crate::api::{self, Api, Auth};
use crate::fields;

const CLIENTS: &str = "/api/v2/oauth/clients";
const TOKENS: &str = "/api/v2/oauth/tokens";
const CURRENT: &str = "/api/v2/oauth/tokens/current.json";

/// A client without its `secret`, which Zendesk shows in full only when it
/// is created or generated.
fn client(value: &Value) -> Value {
    fields::pick(
        value,
        &[
            "id",
            "name",
            "identifier",
            "kind",
            "redirect_uri",
            "global",
            "user_id",
        ],
    )
}

/// A token without its value: only the 10-character prefix Zendesk shows.
pub(crate) fn token(value: &Value) -> Value {
    let mut out = fields::pick(
        value,
        &[
            "id",
            "client_id",
            "user_id",
            "scopes",
            "created_at",
            "expires_at",
            "used_at",
            "refresh_token_expires_at",
        ],
    );
    if let (Some(prefix), Value::Object(map)) =
        (value.get("token").and_then(Value::as_str), &mut out)
    {
        let prefix: String = prefix.chars().take(10).collect();
        map.insert("token_prefix".into(), Value::String(prefix));
    }
    out
}

/// `GET /api/v2/oauth/clients`, every page.
pub(crate) fn list_clients(api: &Api) -> Result<Value, Error> {
    let clients = api.get_all(CLIENTS, "clients")?;
    Ok(json!({"clients": clients.iter().map(client).collect::<Vec<_>>()}))
}

/// The body of `create_client`: only what the operator gave.
pub(crate) fn client_body(input: &Value) -> Result<Value, Error> {
    let mut body = json!({
        "name": fields::non_blank(input, "name")?,
        "identifier": fields::non_blank(input, "identifier")?,
    });
    if let Some(kind) = input.opt_str_field("kind")? {
        if kind != "public" && kind != "confidential" {
            return Err(Error::invalid_input(
                "input `kind` must be \"public\" or \"confidential\"",
            ));
        }
        body["kind"] = json!(kind);
    }
    if input.field("redirect_uri").is_some() {
        let uris: Vec<String> = input.parse_field("redirect_uri")?;
        body["redirect_uri"] = json!(uris);
    }
    Ok(json!({ "client": body }))
}

/// `POST /api/v2/oauth/clients`: the client and its `secret`.
pub(crate) fn create_client(api: &Api, input: &Value) -> Result<Value, Error> {
    let body = client_body(input)?;
    let created = api.json(api.request("POST", CLIENTS).json(&body))?;
    let created = fields::unwrapped(&created, "client");
    let mut out = client(created);
    out["secret"] = non_empty_secret(created, "secret", "the new client")?;
    log::info(&format!("created OAuth client {}", out["id"]));
    Ok(out)
}

/// `DELETE /api/v2/oauth/clients/{id}`. The reference does not give the
/// answer to deleting a missing client; a 404 is taken as already deleted,
/// the conservative reading for a delete that may be sent twice, and is
/// reported as `already_gone`.
pub(crate) fn delete_client(api: &Api, input: &Value) -> Result<Value, Error> {
    let id = fields::id(input, "client_id")?;
    gone_or(
        api,
        &format!("{CLIENTS}/{id}"),
        json!({"client_id": id, "deleted": true}),
    )
}

/// `PUT /api/v2/oauth/clients/{id}/generate_secret` (200): a new secret,
/// which replaces the old one.
pub(crate) fn generate_client_secret(api: &Api, input: &Value) -> Result<Value, Error> {
    let id = fields::id(input, "client_id")?;
    let answer = api.json(api.request("PUT", &format!("{CLIENTS}/{id}/generate_secret")))?;
    let generated = fields::unwrapped(&answer, "client");
    let mut out = client(generated);
    out["secret"] = non_empty_secret(generated, "secret", "the client's new secret")?;
    log::info(&format!("generated a new secret for OAuth client {id}"));
    Ok(out)
}

/// The body of `create_token`.
pub(crate) fn token_body(input: &Value) -> Result<Value, Error> {
    let client_id = fields::id(input, "client_id")?;
    let scopes: Vec<String> = input.parse_field("scopes")?;
    // Zendesk accepts unknown scopes and the token then gets 403s; an empty
    // list would make a token that can do nothing useful.
    if scopes.is_empty() || scopes.iter().any(|s| s.trim().is_empty()) {
        return Err(Error::invalid_input(
            "input `scopes` must list at least one scope, none empty",
        ));
    }
    Ok(json!({"token": {"client_id": client_id, "scopes": scopes}}))
}

/// `POST /api/v2/oauth/tokens` (201): the new token, its full value in
/// `token` (Zendesk's `full_token`, shown only here).
pub(crate) fn create_token(api: &Api, input: &Value) -> Result<Value, Error> {
    let body = token_body(input)?;
    let answer = api.json(api.request("POST", TOKENS).json(&body))?;
    let created = &answer["token"];
    let mut out = token(created);
    out["token"] = non_empty_secret(created, "full_token", "the new token")?;
    log::info(&format!(
        "created OAuth token {} for client {}",
        out["id"], out["client_id"]
    ));
    Ok(out)
}

/// `GET /api/v2/oauth/tokens`, optionally for one client, every page.
pub(crate) fn list_tokens(api: &Api, input: &Value) -> Result<Value, Error> {
    let mut request = http::Request::get(TOKENS);
    if input.field("client_id").is_some() {
        request = request.query("client_id", &fields::id(input, "client_id")?.to_string());
    }
    if input.opt_bool_field("all")? == Some(true) {
        request = request.query("all", "true");
    }
    let tokens = api.get_all(request.url(), "tokens")?;
    Ok(json!({"tokens": tokens.iter().map(token).collect::<Vec<_>>()}))
}

/// `DELETE /api/v2/oauth/tokens/{id}` (204). A 404 counts as revoked: the
/// token is gone either way, and a revoke may be sent twice.
pub(crate) fn revoke_token(api: &Api, input: &Value) -> Result<Value, Error> {
    let id = fields::id(input, "token_id")?;
    gone_or(
        api,
        &format!("{TOKENS}/{id}"),
        json!({"token_id": id, "revoked": true}),
    )
}

/// `GET /api/v2/oauth/tokens/current.json` with `token` as the bearer: the
/// token's id and scopes, or `valid: false` when Zendesk does not accept it.
pub(crate) fn token_scopes(api: &Api, token_value: &str) -> Result<Value, Error> {
    let response = api.request("GET", CURRENT).bearer(token_value).send()?;
    if response.status == 401 {
        return Ok(json!({"valid": false}));
    }
    let answer: Value = api::check(response)?.json()?;
    let mut out = token(fields::unwrapped(&answer, "token"));
    out["valid"] = json!(true);
    Ok(out)
}

/// Who the plugin's token is. The provider reference documents no
/// `users/me` endpoint, so this reads the plugin's own OAuth token
/// (`tokens/current.json`): its id, user, client and scopes. An API token
/// has no documented self-description, so with `auth = api_token` this is
/// refused rather than guessed.
pub(crate) fn whoami(api: &Api) -> Result<Value, Error> {
    if *api.auth() != Auth::OAuth {
        return Err(Error::invalid_input(
            "whoami reads the plugin's OAuth token (tokens/current.json); with config \
             `auth = api_token` there is no documented endpoint to ask; use list_api_tokens",
        ));
    }
    let answer = api.json(api.request("GET", CURRENT))?;
    Ok(token(fields::unwrapped(&answer, "token")))
}

/// The body of the refresh grant.
pub(crate) fn refresh_body(input: &Value) -> Result<Value, Error> {
    let mut body = json!({
        "grant_type": "refresh_token",
        "client_id": fields::non_blank(input, "client_id")?,
        "client_secret": fields::non_blank(input, "client_secret")?,
        "refresh_token": fields::non_blank(input, "refresh_token")?,
    });
    if let Some(scope) = input.opt_str_field("scope")? {
        body["scope"] = json!(scope);
    }
    for (name, range) in [
        ("expires_in", 300..=172_800),
        ("refresh_token_expires_in", 604_800..=7_776_000),
    ] {
        if input.field(name).is_some() {
            let seconds = input.u64_field(name)?;
            if !range.contains(&seconds) {
                return Err(Error::invalid_input(format!(
                    "input `{name}` must be between {} and {} seconds",
                    range.start(),
                    range.end()
                )));
            }
            body[name] = json!(seconds);
        }
    }
    Ok(body)
}

/// `POST /oauth/tokens` with `grant_type=refresh_token`: a new access and
/// refresh token; the old pair stops working. The client authenticates in
/// the body, so the plugin's own token is not sent. Both 200 and 201 are
/// success (the OAS says 201, Zendesk's CLI expects 200).
pub(crate) fn refresh_token(api: &Api, input: &Value) -> Result<Value, Error> {
    let body = refresh_body(input)?;
    let response = api.request("POST", "/oauth/tokens").json(&body).send()?;
    let answer: Value = api::check(response)?.json()?;
    let access = non_empty_secret(&answer, "access_token", "the refreshed access token")?;
    let mut out = fields::pick(
        &answer,
        &[
            "token_type",
            "scope",
            "expires_in",
            "refresh_token_expires_in",
        ],
    );
    out["access_token"] = access;
    // Zendesk issues a new refresh token with every refresh; should one be
    // missing, say so as null rather than fail after the old pair is dead.
    out["refresh_token"] = answer
        .get("refresh_token")
        .filter(|v| v.as_str().is_some_and(|s| !s.is_empty()))
        .cloned()
        .unwrap_or(Value::Null);
    log::info("refreshed an OAuth token pair");
    Ok(out)
}

/// `field` of `value` as a non-empty string, else an error naming `what`:
/// a value shown once and missing from its only answer cannot be had later.
fn non_empty_secret(value: &Value, field: &str, what: &str) -> Result<Value, Error> {
    match value.get(field) {
        Some(Value::String(s)) if !s.is_empty() => Ok(Value::String(s.clone())),
        _ => Err(Error::provider(
            200,
            format!(
                "Zendesk's answer carries no `{field}` for {what}; it is shown only once, so \
                 undo the change and start again"
            ),
        )),
    }
}

/// DELETE `path`; 2xx or 404 both end with `done`, 404 adding
/// `already_gone: true`.
pub(crate) fn gone_or(api: &Api, path: &str, mut done: Value) -> Result<Value, Error> {
    match api.send(api.request("DELETE", path)) {
        Ok(_) => {
            log::info(&format!("DELETE {path} done"));
            Ok(done)
        }
        Err(Error::Provider { status: 404, .. }) => {
            log::info(&format!("DELETE {path}: already gone (404)"));
            done["already_gone"] = json!(true);
            Ok(done)
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_outputs_never_carry_values() {
        let t = token(
            &json!({"id": 5, "token": "abcdefghijKLMNOP", "full_token": "full",
                              "refresh_token": "r", "scopes": ["read"], "client_id": 3}),
        );
        assert_eq!(
            t,
            json!({"id": 5, "token_prefix": "abcdefghij", "scopes": ["read"], "client_id": 3})
        );
        let c = client(&json!({"id": 1, "identifier": "app", "secret": "s3cr3t"}));
        assert_eq!(c, json!({"id": 1, "identifier": "app"}));
    }

    #[test]
    fn create_token_body_uses_the_resource_id_and_scopes() {
        let body =
            token_body(&json!({"client_id": "42", "scopes": ["read", "tickets:write"]})).unwrap();
        assert_eq!(
            body,
            json!({"token": {"client_id": 42, "scopes": ["read", "tickets:write"]}})
        );
        assert!(token_body(&json!({"client_id": 42, "scopes": []})).is_err());
    }

    #[test]
    fn refresh_body_and_limits() {
        let body = refresh_body(&json!({"client_id": "app", "client_secret": "cs",
                                        "refresh_token": "rt", "expires_in": 3600}))
        .unwrap();
        assert_eq!(
            body,
            json!({"grant_type": "refresh_token", "client_id": "app", "client_secret": "cs",
                   "refresh_token": "rt", "expires_in": 3600})
        );
        let e = refresh_body(&json!({"client_id": "app", "client_secret": "cs",
                                     "refresh_token": "rt", "expires_in": 10}))
        .unwrap_err();
        assert!(e.to_string().contains("`expires_in`") && !e.to_string().contains("rt"));
    }

    #[test]
    fn client_body_has_only_given_fields() {
        let body = client_body(
            &json!({"name": "CI", "identifier": "ci", "kind": "confidential",
                                       "redirect_uri": ["https://x/cb"]}),
        )
        .unwrap();
        assert_eq!(
            body,
            json!({"client": {"name": "CI", "identifier": "ci", "kind": "confidential",
                              "redirect_uri": ["https://x/cb"]}})
        );
        assert!(client_body(&json!({"name": "CI", "identifier": "ci", "kind": "x"})).is_err());
    }

    #[test]
    fn shown_once_values_must_be_present() {
        assert!(non_empty_secret(&json!({"full_token": "v"}), "full_token", "t").is_ok());
        assert!(non_empty_secret(&json!({"full_token": ""}), "full_token", "t").is_err());
    }
}
