//! Webhooks (`/api/v2/webhooks`, ids are ULID strings): read and list
//! them, set or replace their credential, test them, and read or reset
//! their signing secret.
//!
//! Credentials are write-only: Zendesk shows only the basic-auth
//! `username`. Outputs keep no other `authentication.data` field, and show
//! custom header names without values, since a custom header may carry a
//! credential.

use keycycle_plugin_sdk::{Error, Input, Value, http, json, log};

use crate::api::Api;
use crate::fields;
use crate::oauth::gone_or;
use crate::pages;

const WEBHOOKS: &str = "/api/v2/webhooks";

/// The settings `recreate_webhook` copies: every field the reference lists
/// for creating a webhook, except `authentication`, which is replaced.
pub(crate) const COPIED: [&str; 7] = [
    "name",
    "endpoint",
    "http_method",
    "request_format",
    "status",
    "subscriptions",
    "custom_headers",
];

fn path(id: &str) -> String {
    format!("{WEBHOOKS}/{id}")
}

/// A webhook as an output: no credential, no custom header values.
pub(crate) fn shown(webhook: &Value) -> Value {
    let mut out = fields::pick(
        webhook,
        &[
            "id",
            "name",
            "description",
            "endpoint",
            "http_method",
            "request_format",
            "status",
            "subscriptions",
            "created_at",
            "updated_at",
        ],
    );
    if let Some(auth) = webhook.get("authentication").filter(|a| !a.is_null()) {
        let mut a = fields::pick(auth, &["type", "add_position"]);
        if let Some(username) = auth.pointer("/data/username") {
            a["data"] = json!({ "username": username });
        }
        out["authentication"] = a;
    }
    if let Some(headers) = webhook.get("custom_headers").and_then(Value::as_object) {
        let mut names: Vec<&String> = headers.keys().collect();
        names.sort();
        out["custom_header_names"] = json!(names);
    }
    out
}

/// The `authentication` object for the input's `auth_type` and secret
/// `value`, sent in the request header (`add_position: header`, the only
/// position the reference shows).
pub(crate) fn authentication(input: &Value) -> Result<Value, Error> {
    let value = fields::non_blank(input, "value")?;
    let data = match input.str_field("auth_type")? {
        "basic_auth" => json!({
            "username": fields::non_blank(input, "username")?,
            "password": value,
        }),
        "bearer_token" => json!({ "token": value }),
        "api_key" => json!({
            "name": fields::non_blank(input, "header_name")?,
            "value": value,
        }),
        _ => {
            return Err(Error::invalid_input(
                "input `auth_type` must be basic_auth, bearer_token or api_key",
            ));
        }
    };
    Ok(json!({
        "type": input.str_field("auth_type")?,
        "data": data,
        "add_position": "header",
    }))
}

/// The `POST` body of the replacement: every copied setting of `old` as it
/// is, and the new `authentication`.
pub(crate) fn recreate_body(old: &Value, authentication: Value) -> Value {
    let mut webhook = fields::pick(old, &COPIED);
    webhook["authentication"] = authentication;
    json!({ "webhook": webhook })
}

fn read(api: &Api, id: &str) -> Result<Value, Error> {
    let answer = api.json(api.request("GET", &path(id)))?;
    match answer.get("webhook") {
        Some(w) if w.is_object() => Ok(w.clone()),
        _ => Err(Error::provider(
            200,
            format!("Zendesk's answer for {} has no webhook", path(id)),
        )),
    }
}

/// `GET /api/v2/webhooks/{id}`.
pub(crate) fn get(api: &Api, input: &Value) -> Result<Value, Error> {
    Ok(shown(&read(api, fields::webhook_id(input, "webhook_id")?)?))
}

/// Every webhook, optionally filtered, every page, as Zendesk sends them.
fn all(api: &Api, name_contains: Option<&str>, status: Option<&str>) -> Result<Vec<Value>, Error> {
    let mut request = http::Request::get(WEBHOOKS);
    if let Some(name) = name_contains {
        request = request.query("filter[name_contains]", name);
    }
    if let Some(status) = status {
        request = request.query("filter[status]", status);
    }
    let request = request.query("page[size]", pages::PAGE_SIZE);
    api.get_all(request.url(), "webhooks")
}

/// `GET /api/v2/webhooks` following `links.next` while `meta.has_more`.
pub(crate) fn list(api: &Api, input: &Value) -> Result<Value, Error> {
    let webhooks = all(
        api,
        input.opt_str_field("name_contains")?,
        input.opt_str_field("status")?,
    )?;
    Ok(json!({"webhooks": webhooks.iter().map(shown).collect::<Vec<_>>()}))
}

/// `PATCH /api/v2/webhooks/{id}` (204) with only the new
/// `authentication`. The reference recalls `application/merge-patch+json`
/// for this PATCH without a primary source; it is what is sent.
pub(crate) fn set_auth(api: &Api, input: &Value) -> Result<Value, Error> {
    let id = fields::webhook_id(input, "webhook_id")?;
    let body = json!({"webhook": {"authentication": authentication(input)?}});
    api.send(
        api.request("PATCH", &path(id))
            .json(&body)
            .header("Content-Type", "application/merge-patch+json"),
    )?;
    log::info(&format!("set the credential of webhook {id}"));
    Ok(json!({"webhook_id": id, "auth_type": input.str_field("auth_type")?}))
}

/// Whether `w` has exactly `name` and `endpoint`.
fn same_target(w: &Value, name: &str, endpoint: &str) -> bool {
    w["name"].as_str() == Some(name) && w["endpoint"].as_str() == Some(endpoint)
}

/// Replace a webhook by a copy with a new credential. The new webhook is
/// created before the old one is deleted, so that no failure in between
/// leaves the account without it: at worst both exist for a moment and
/// the old one keeps sending with the old credential.
pub(crate) fn recreate(api: &Api, input: &Value) -> Result<Value, Error> {
    let old_id = fields::webhook_id(input, "webhook_id")?;
    let name = fields::non_blank(input, "name")?;
    let endpoint = fields::non_blank(input, "endpoint")?;
    let auth = authentication(input)?;
    let old = read(api, old_id)?;
    // `name` and `endpoint` are how find_webhook recognises the copy, and
    // they guard against recreating the wrong webhook.
    if !same_target(&old, name, endpoint) {
        return Err(Error::invalid_input(format!(
            "webhook {old_id} does not have the given `name` and `endpoint`; nothing was changed"
        )));
    }
    if all(api, Some(name), None)?
        .iter()
        .any(|w| w["id"].as_str() != Some(old_id) && same_target(w, name, endpoint))
    {
        return Err(Error::invalid_input(format!(
            "another webhook already has the name and endpoint of {old_id}; find_webhook could \
             not tell the copy apart, so nothing was changed"
        )));
    }
    let created = api.json(
        api.request("POST", WEBHOOKS)
            .json(&recreate_body(&old, auth)),
    )?;
    let new_id = created
        .pointer("/webhook/id")
        .and_then(Value::as_str)
        .ok_or_else(|| {
            Error::provider(
                201,
                format!(
                    "Zendesk created the copy of webhook {old_id} but its answer has no id; \
                     find it with list_webhooks and delete one of the two"
                ),
            )
        })?
        .to_owned();
    log::info(&format!("created webhook {new_id} as the copy of {old_id}"));
    let old_deleted = match gone_or(api, &path(old_id), json!({})) {
        Ok(_) => true,
        Err(e) => {
            // The copy exists and holds the new credential: report it
            // rather than fail, so the runbook keeps the new id.
            log::error(&format!(
                "webhook {new_id} replaces {old_id}, but deleting {old_id} failed ({e}); delete \
                 it with delete_webhook"
            ));
            false
        }
    };
    Ok(
        json!({"id": new_id, "old_id": old_id, "name": name, "endpoint": endpoint,
              "old_deleted": old_deleted}),
    )
}

/// The copy `recreate_webhook` made: a webhook with the same name and
/// endpoint and another id; the newest if several (ULIDs sort by creation
/// time). 404 when there is none, i.e. nothing was created.
pub(crate) fn find(api: &Api, input: &Value) -> Result<Value, Error> {
    let old_id = fields::webhook_id(input, "webhook_id")?;
    let name = fields::non_blank(input, "name")?;
    let endpoint = fields::non_blank(input, "endpoint")?;
    let webhooks = all(api, Some(name), None)?;
    let old_present = webhooks.iter().any(|w| w["id"].as_str() == Some(old_id));
    let copy = webhooks
        .iter()
        .filter(|w| same_target(w, name, endpoint))
        .filter_map(|w| w["id"].as_str())
        .filter(|id| *id != old_id)
        .max()
        .ok_or_else(|| {
            Error::provider(
                404,
                format!("no copy of webhook {old_id} named `{name}` with that endpoint"),
            )
        })?;
    if old_present {
        log::warn(&format!(
            "webhook {copy} replaces {old_id}, which still exists; delete it with delete_webhook"
        ));
    }
    Ok(
        json!({"id": copy, "old_id": old_id, "name": name, "endpoint": endpoint,
              "old_deleted": !old_present}),
    )
}

/// `DELETE /api/v2/webhooks/{id}` (204); a 404 counts as deleted.
pub(crate) fn delete(api: &Api, input: &Value) -> Result<Value, Error> {
    let id = fields::webhook_id(input, "webhook_id")?;
    gone_or(api, &path(id), json!({"webhook_id": id, "deleted": true}))
}

/// `POST /api/v2/webhooks/test?webhook_id=`: Zendesk calls the endpoint
/// with the stored credential (the body leaves `authentication` out so the
/// stored one is used) and reports the endpoint's answer. The wrapper key
/// of that answer is unverified, so `response.status` and a top-level
/// `status` are both read.
pub(crate) fn test(api: &Api, input: &Value) -> Result<Value, Error> {
    let id = fields::webhook_id(input, "webhook_id")?;
    let webhook = read(api, id)?;
    let body =
        json!({"webhook": fields::pick(&webhook, &["endpoint", "http_method", "request_format"])});
    let request = http::Request::get(format!("{WEBHOOKS}/test")).query("webhook_id", id);
    let answer = api.json(api.request("POST", request.url()).json(&body))?;
    let status = endpoint_status(&answer).ok_or_else(|| {
        Error::provider(
            200,
            format!("Zendesk's test answer for webhook {id} carries no status"),
        )
    })?;
    Ok(json!({"webhook_id": id, "status": status, "ok": (200..300).contains(&status)}))
}

/// The endpoint's status in a test answer.
pub(crate) fn endpoint_status(answer: &Value) -> Option<u64> {
    answer
        .pointer("/response/status")
        .or_else(|| answer.get("status"))
        .and_then(Value::as_u64)
}

/// `GET` (200) or `POST` (201, reset) `/api/v2/webhooks/{id}/signing_secret`.
pub(crate) fn signing_secret(api: &Api, input: &Value, reset: bool) -> Result<Value, Error> {
    let id = fields::webhook_id(input, "webhook_id")?;
    let method = if reset { "POST" } else { "GET" };
    let answer = api.json(api.request(method, &format!("{}/signing_secret", path(id))))?;
    let secret = answer
        .pointer("/signing_secret/secret")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| {
            Error::provider(
                200,
                format!("Zendesk's answer carries no signing secret for webhook {id}"),
            )
        })?;
    if reset {
        log::info(&format!("reset the signing secret of webhook {id}"));
    }
    Ok(json!({"webhook_id": id,
              "algorithm": answer.pointer("/signing_secret/algorithm").cloned().unwrap_or(Value::Null),
              "secret": secret}))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn old() -> Value {
        json!({
            "id": "01OLD", "name": "Billing", "endpoint": "https://hooks.example/z",
            "http_method": "POST", "request_format": "json", "status": "active",
            "subscriptions": ["conditional_ticket_events"],
            "custom_headers": {"X-Tenant": "acme"},
            "authentication": {"type": "basic_auth", "data": {"username": "zd"}, "add_position": "header"},
            "created_at": "2025-01-01T00:00:00Z", "created_by": "1"
        })
    }

    #[test]
    fn recreate_copies_every_setting_and_replaces_only_the_credential() {
        let auth = authentication(&json!({"auth_type": "bearer_token", "value": "NEW"})).unwrap();
        let body = recreate_body(&old(), auth);
        let w = body["webhook"].as_object().unwrap();
        for field in COPIED {
            assert_eq!(w[field], old()[field], "{field}");
        }
        assert_eq!(
            w["authentication"],
            json!({"type": "bearer_token", "data": {"token": "NEW"}, "add_position": "header"})
        );
        // Nothing else: no id, no timestamps.
        assert_eq!(w.len(), COPIED.len() + 1);
    }

    #[test]
    fn authentication_per_type() {
        let a = authentication(&json!({"auth_type": "basic_auth", "username": "u", "value": "p"}))
            .unwrap();
        assert_eq!(a["data"], json!({"username": "u", "password": "p"}));
        let a =
            authentication(&json!({"auth_type": "api_key", "header_name": "X-Key", "value": "k"}))
                .unwrap();
        assert_eq!(a["data"], json!({"name": "X-Key", "value": "k"}));
        let e = authentication(&json!({"auth_type": "basic_auth", "value": "p"})).unwrap_err();
        assert!(e.to_string().contains("`username`"), "{e}");
        let e = authentication(&json!({"auth_type": "digest", "value": "SECRETX"})).unwrap_err();
        assert!(!e.to_string().contains("SECRETX"));
    }

    #[test]
    fn outputs_hide_credentials_and_header_values() {
        let mut w = old();
        w["authentication"]["data"]["password"] = json!("leak");
        let s = shown(&w);
        assert_eq!(s["authentication"]["data"], json!({"username": "zd"}));
        assert_eq!(s["custom_header_names"], json!(["X-Tenant"]));
        assert!(!s.to_string().contains("leak") && !s.to_string().contains("acme"));
    }

    #[test]
    fn test_status_from_either_shape() {
        assert_eq!(
            endpoint_status(&json!({"response": {"status": 200}})),
            Some(200)
        );
        assert_eq!(endpoint_status(&json!({"status": 401})), Some(401));
        assert_eq!(endpoint_status(&json!({})), None);
    }
}
