//! `discover`: the tokens this plugin's user can see, as candidates for
//! keycycle's inventory: its personal access tokens, and the access tokens
//! and pipeline triggers of the projects and groups it is asked about.
//! Each comes with the runbook that rotates it and the parameters that
//! name it, so `keycycle discover` can tell which ones nobody rotates.
//! Only active tokens are listed; values never are.

use keycycle_plugin_sdk::prelude::*;
use serde_json::json;

use crate::api::Api;
use crate::{access_tokens, fields, tokens, triggers};

pub(crate) fn discover(api: &Api, input: &Value) -> Result<Value, Error> {
    let mut found = Vec::new();
    let listed = tokens::list_pats(api, &json!({ "state": "active" }))?;
    for t in listed["tokens"].as_array().into_iter().flatten() {
        found.push(json!({
            "kind": "personal_access_token",
            "id": t["id"],
            "name": t["name"],
            "owner": t["user_id"],
            "expires_at": t["expires_at"],
            "last_used_at": t["last_used_at"],
            "runbook": "gitlab-personal-token",
            "params": { "token_id": id_text(&t["id"]) },
        }));
    }
    for (owner_type, key) in [("project", "projects"), ("group", "groups")] {
        for owner in fields::string_list_opt(input, key)? {
            let listed =
                access_tokens::list(api, &json!({ "owner": owner, "owner_type": owner_type }))?;
            for t in listed["tokens"].as_array().into_iter().flatten() {
                if t["active"] == json!(false) || t["revoked"] == json!(true) {
                    continue;
                }
                found.push(json!({
                    "kind": format!("{owner_type}_access_token"),
                    "id": t["id"],
                    "name": t["name"],
                    "owner": owner,
                    "expires_at": t["expires_at"],
                    "last_used_at": t["last_used_at"],
                    "runbook": "gitlab-project-token",
                    "params": {
                        "owner": owner,
                        "owner_type": owner_type,
                        "token_id": id_text(&t["id"]),
                    },
                }));
            }
            if owner_type == "project" {
                let listed = triggers::list(api, &json!({ "project": owner }))?;
                for t in listed["triggers"].as_array().into_iter().flatten() {
                    found.push(json!({
                        "kind": "pipeline_trigger",
                        "id": t["id"],
                        "name": t["description"],
                        "owner": owner,
                        // Trigger tokens do not expire; only their use says
                        // whether one is still needed.
                        "expires_at": null,
                        "last_used_at": t["last_used"],
                        "runbook": "gitlab-trigger-token",
                        "params": { "project": owner, "trigger_id": id_text(&t["id"]) },
                    }));
                }
            }
        }
    }
    Ok(json!({ "credentials": found }))
}

/// Runbook parameters are text.
fn id_text(id: &Value) -> String {
    match id {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}
