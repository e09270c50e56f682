//! The account's API tokens, read only. No documented endpoint creates,
//! deactivates or deletes them (that is done in Admin Center), and Zendesk
//! is retiring them: from 2026-07-28 tokens unused for 30 days are
//! deactivated, and on 2027-04-30 all stop working.

use keycycle_plugin_sdk::{Error, Value, json};

use crate::api::Api;
use crate::fields;

/// What a listed API token may show. Deliberately a list of what to keep,
/// not of what to drop: the reference has not verified that `token` is
/// masked, and `visible_token` is part of a value.
const KEEP: [&str; 10] = [
    "id",
    "description",
    "active",
    "created_at",
    "updated_at",
    "last_used",
    "user_id",
    "assigned_user_id",
    "user_name",
    "user_email",
];

/// One listed token, without any part of its value.
pub(crate) fn item(value: &Value) -> Value {
    fields::pick(value, &KEEP)
}

/// `GET /api/v2/api_tokens.json?include_users=true` (not paginated). Idle
/// time is left to the runbook: the plugin has no trustworthy clock, so it
/// returns `last_used` (null when never used) and `created_at` as Zendesk
/// gives them.
pub(crate) fn list(api: &Api) -> Result<Value, Error> {
    let answer = match api.json(api.request("GET", "/api/v2/api_tokens.json?include_users=true")) {
        Err(Error::Provider {
            status: 404,
            message,
        }) => {
            return Err(Error::provider(
                404,
                format!("{message} (Zendesk answers 404 here when token access is turned off)"),
            ));
        }
        other => other?,
    };
    let tokens = answer
        .get("api_tokens")
        .and_then(Value::as_array)
        .map(|list| list.iter().map(item).collect::<Vec<_>>())
        .unwrap_or_default();
    Ok(json!({ "api_tokens": tokens }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_keep_no_part_of_the_value() {
        let v = item(
            &json!({"id": 1, "description": "ci", "active": true, "token": "abc",
                             "visible_token": "abc", "last_used": null,
                             "created_at": "2025-01-01T00:00:00Z", "user_email": "a@b"}),
        );
        assert_eq!(
            v,
            json!({"id": 1, "description": "ci", "active": true, "last_used": null,
                   "created_at": "2025-01-01T00:00:00Z", "user_email": "a@b"})
        );
    }
}
