//! Project webhooks (`doc/api/project_webhooks.md`): read one, check that
//! it can be edited, set its secret token, re-create it with a new token,
//! find such a copy after an interruption, and ask GitLab for a test
//! delivery. GitLab never returns the token, `url` is required on every
//! edit, and changing the URL resets the token (`WebHook#reset_token`), so
//! the URL and the token are always sent together.
//!
//! Re-creating copies every setting `get_hook` returned into a new hook and
//! deletes the old one. GitLab returns URL variables and custom headers by
//! key only, so a hook with either cannot be copied and is refused before
//! anything changes.

use keycycle_plugin_sdk::{Error, Input, Value, json, log};
use serde_json::Map;

use crate::api::{Api, Call};
use crate::fields;
use crate::messages;
use crate::output::{item, not_found};
use crate::permissions::require_maintainer;

/// Text settings a copy repeats when GitLab showed them (null means
/// GitLab's default, which a create without them gives too).
const COPIED_TEXT: [&str; 6] = [
    "url",
    "name",
    "description",
    "push_events_branch_filter",
    "branch_filter_strategy",
    "custom_webhook_template",
];

/// What GitLab shows about a hook that is not a setting: a copy gets its
/// own values, or they cannot be set at all.
const NOT_SETTINGS: [&str; 8] = [
    "id",
    "project_id",
    "created_at",
    "alert_status",
    "disabled_until",
    "url_variables",
    "custom_headers",
    "token",
];

/// The events GitLab's test endpoint can send (`API::Hooks::TestHooks`).
pub(crate) const TEST_TRIGGERS: [&str; 14] = [
    "push_events",
    "tag_push_events",
    "issues_events",
    "confidential_issues_events",
    "note_events",
    "merge_requests_events",
    "job_events",
    "pipeline_events",
    "wiki_page_events",
    "deployment_events",
    "feature_flag_events",
    "releases_events",
    "emoji_events",
    "resource_access_token_events",
];

struct Hook {
    project: String,
    id: u64,
}

impl Hook {
    fn from_input(input: &Value) -> Result<Hook, Error> {
        Ok(Hook {
            project: fields::resource_ref(input, "project")?,
            id: fields::id(input, "hook_id")?,
        })
    }

    fn path(&self) -> String {
        format!("/projects/{}/hooks/{}", self.project, self.id)
    }

    fn list_path(&self) -> String {
        format!("/projects/{}/hooks", self.project)
    }

    fn project_name(&self) -> String {
        fields::display_ref(&self.project)
    }

    fn read(&self, api: &Api) -> Result<Value, Error> {
        Ok(item(api.json(&Call::get(self.path()))?))
    }
}

/// `GET /projects/:id/hooks/:hook_id`, without any token field.
pub(crate) fn get(api: &Api, input: &Value) -> Result<Value, Error> {
    Hook::from_input(input)?.read(api)
}

/// Check, without writing, that the hook exists and that the plugin's
/// token may edit it. With `recreate: true`, also that `recreate_hook` can
/// copy it and that `find_hook_copy` could tell its copy from every other
/// hook of the project.
pub(crate) fn check_writable(api: &Api, input: &Value) -> Result<Value, Error> {
    let hook = Hook::from_input(input)?;
    let current = hook.read(api)?;
    require_maintainer(api, &hook.project, &format!("edit webhook {}", hook.id))?;
    if !input.opt_bool_field("recreate")?.unwrap_or(false) {
        return Ok(json!({"writable": true, "url": current["url"]}));
    }
    let fields = hook_object(&current)?;
    refuse_uncopyable(&hook, fields)?;
    let twins: Vec<String> = api
        .get_all(&hook.list_path(), &[])?
        .iter()
        .filter(|other| other["id"].as_u64() != Some(hook.id) && same_identity(other, &current))
        .map(|other| other["id"].to_string())
        .collect();
    if !twins.is_empty() {
        return Err(Error::invalid_input(format!(
            "webhook {} of project {} has the same URL and name as webhook(s) {}; if a \
             re-creation were interrupted, its copy could not be told from them; nothing was \
             changed; give the hooks different names, or set the token in place \
             (method=update)",
            hook.id,
            hook.project_name(),
            twins.join(", ")
        )));
    }
    Ok(json!({"writable": true, "copyable": true, "url": current["url"]}))
}

/// Set the hook's secret token: read its URL, then `PUT` the URL and the
/// token together so the URL stays and the token is not reset.
pub(crate) fn set_token(api: &Api, input: &Value) -> Result<Value, Error> {
    let hook = Hook::from_input(input)?;
    // An empty token would clear the secret, never what a rotation means.
    let token = fields::non_blank(input, "token")?;
    let current = hook.read(api)?;
    let url = current["url"]
        .as_str()
        .filter(|u| !u.is_empty())
        .ok_or_else(|| {
            Error::provider(
                200,
                format!(
                    "GitLab's answer for {} has no url, and an edit must send it",
                    hook.path()
                ),
            )
        })?
        .to_owned();
    let updated = api.json(&Call::put(hook.path()).json(json!({"url": url, "token": token})))?;
    log::info(&format!(
        "set the secret token of webhook {} in project {}",
        hook.id,
        fields::display_ref(&hook.project)
    ));
    Ok(json!({"id": updated["id"], "url": updated["url"]}))
}

/// The hook object `get_hook` returned, as given in the input `hook`.
fn hook_object(hook: &Value) -> Result<&Map<String, Value>, Error> {
    hook.as_object().ok_or_else(|| {
        Error::invalid_input("`hook` must be the webhook object get_hook returned".to_owned())
    })
}

/// The keys of a `url_variables` or `custom_headers` list (`[{key}]`).
fn keys(fields: &Map<String, Value>, name: &str) -> Vec<String> {
    fields
        .get(name)
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .map(|item| match item.get("key").and_then(Value::as_str) {
                    Some(key) => key.to_owned(),
                    None => "(unnamed)".to_owned(),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Refuses a hook whose settings GitLab does not show in full: URL
/// variables (masked parts of the URL) and custom headers come back as
/// keys without values, so a copy would lose them.
fn refuse_uncopyable(hook: &Hook, fields: &Map<String, Value>) -> Result<(), Error> {
    let variables = keys(fields, "url_variables");
    let headers = keys(fields, "custom_headers");
    if variables.is_empty() && headers.is_empty() {
        return Ok(());
    }
    let mut parts = Vec::new();
    if !variables.is_empty() {
        parts.push(format!("URL variables ({})", variables.join(", ")));
    }
    if !headers.is_empty() {
        parts.push(format!("custom headers ({})", headers.join(", ")));
    }
    Err(Error::invalid_input(format!(
        "webhook {} of project {} has {}, whose values GitLab never returns, so a copy of it \
         would lose them; nothing was changed; set its secret token in place instead \
         (set_hook_token, method=update), or re-create the hook by hand in GitLab with those \
         values",
        hook.id,
        hook.project_name(),
        parts.join(" and ")
    )))
}

/// The body that creates a copy of `fields` (what GitLab showed of the
/// hook): every text setting GitLab showed and every boolean setting (the
/// `*_events` switches and `enable_ssl_verification`, whatever this GitLab
/// version has). Without the token: the caller adds the new one.
fn copy_body(fields: &Map<String, Value>) -> Map<String, Value> {
    let mut body = Map::new();
    for (key, value) in fields {
        let text = COPIED_TEXT.contains(&key.as_str()) && value.is_string();
        let switch =
            value.is_boolean() && (key.ends_with("_events") || key == "enable_ssl_verification");
        if text || switch {
            body.insert(key.clone(), value.clone());
        } else if !value.is_null()
            && !COPIED_TEXT.contains(&key.as_str())
            && !NOT_SETTINGS.contains(&key.as_str())
        {
            // A field this plugin does not know: say so rather than drop
            // it without a word.
            log::warn(&format!(
                "the webhook's `{key}` is not a setting this plugin knows how to copy; the copy \
                 gets GitLab's default for it"
            ));
        }
    }
    body
}

/// Whether `candidate` has the URL and name of `original` (a missing and
/// an empty name are the same).
fn same_identity(candidate: &Value, original: &Value) -> bool {
    let name = |v: &Value| v["name"].as_str().unwrap_or_default().to_owned();
    candidate["url"].as_str().is_some()
        && candidate["url"] == original["url"]
        && name(candidate) == name(original)
}

/// Delete the old hook (a 404 counts as already deleted), then create a
/// copy of it with the new token. Reads nothing: a call sent again after
/// the delete went through still has the settings, from the input.
pub(crate) fn recreate(api: &Api, input: &Value) -> Result<Value, Error> {
    let hook = Hook::from_input(input)?;
    let token = fields::non_blank(input, "token")?;
    let shown = input
        .field("hook")
        .ok_or_else(|| Error::invalid_input("`hook` is missing".to_owned()))?;
    let fields = hook_object(shown)?;
    if shown["id"].as_u64() != Some(hook.id) {
        return Err(Error::invalid_input(format!(
            "`hook` describes webhook {}, not webhook {}; pass what get_hook returned for it",
            shown["id"], hook.id
        )));
    }
    if shown["url"].as_str().is_none_or(str::is_empty) {
        return Err(Error::invalid_input(
            "`hook` has no url; pass what get_hook returned".to_owned(),
        ));
    }
    refuse_uncopyable(&hook, fields)?;
    let mut body = copy_body(fields);

    let already_gone = match api.send(&Call::delete(hook.path())) {
        Ok(_) => false,
        Err(Error::Provider {
            status: 404,
            message,
        }) if !messages::project_missing(&message) => true,
        Err(other) => return Err(other),
    };
    log::info(&format!(
        "{} webhook {} of project {}",
        if already_gone {
            "found already deleted"
        } else {
            "deleted"
        },
        hook.id,
        hook.project_name()
    ));

    body.insert("token".into(), json!(token));
    let call = Call::post(
        hook.list_path(),
        format!(
            "webhook {} is deleted and its copy may have been created; run find_hook_copy with \
             the same input to find it before creating another",
            hook.id
        ),
    )
    .json(Value::Object(body));
    let created = api.json(&call)?;
    let new_id = created["id"].as_u64().ok_or_else(|| {
        Error::provider(
            201,
            format!(
                "GitLab's answer for the copy of webhook {} has no id; look for it in the \
                 project's webhooks",
                hook.id
            ),
        )
    })?;
    log::info(&format!(
        "created webhook {new_id} in project {} as the copy of webhook {}, with the new \
         secret token",
        hook.project_name(),
        hook.id
    ));
    Ok(json!({
        "id": new_id,
        "old_id": hook.id,
        "url": created["url"],
        "old_deleted": true,
        "old_already_gone": already_gone,
    }))
}

/// What an interrupted `recreate_hook` made: a hook of the project with the
/// old hook's URL and name, created after it (GitLab's ids only grow), once
/// the old hook is gone. While the old hook exists, the call never got past
/// its delete, so it made nothing: 404. `check_hook_writable` with
/// `recreate` made sure no other hook shares the URL and name.
pub(crate) fn find_copy(api: &Api, input: &Value) -> Result<Value, Error> {
    let hook = Hook::from_input(input)?;
    let shown = input
        .field("hook")
        .ok_or_else(|| Error::invalid_input("`hook` is missing".to_owned()))?;
    hook_object(shown)?;
    match hook.read(api) {
        Ok(_) => {
            return Err(not_found(format!(
                "webhook {} of project {} still exists, so the interrupted call neither \
                 deleted it nor made a copy",
                hook.id,
                hook.project_name()
            )));
        }
        Err(Error::Provider {
            status: 404,
            message,
        }) if !messages::project_missing(&message) => {}
        Err(other) => return Err(other),
    }
    let copies: Vec<Value> = api
        .get_all(&hook.list_path(), &[])?
        .into_iter()
        .filter(|h| h["id"].as_u64().is_some_and(|id| id > hook.id) && same_identity(h, shown))
        .collect();
    match copies.as_slice() {
        [] => Err(not_found(format!(
            "webhook {} of project {} is gone and no later webhook has its URL and name",
            hook.id,
            hook.project_name()
        ))),
        [copy] => {
            log::info(&format!(
                "found webhook {} in project {}, the copy of webhook {}",
                copy["id"],
                hook.project_name(),
                hook.id
            ));
            Ok(json!({
                "id": copy["id"],
                "old_id": hook.id,
                "url": copy["url"],
                "old_deleted": true,
                "old_already_gone": false,
            }))
        }
        several => Err(Error::provider(
            409,
            format!(
                "webhook {} of project {} is gone and several later webhooks have its URL and \
                 name ({}); keep the one with the new secret token, delete the others, and \
                 resume with --retry-in-flight only if none has it",
                hook.id,
                hook.project_name(),
                several
                    .iter()
                    .map(|h| h["id"].to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )),
    }
}

/// Ask GitLab for a test delivery of `trigger` (default `push_events`).
/// GitLab answers 201 when the receiver answered 2xx and 422 with the
/// receiver's answer otherwise: both are outcomes, not errors.
pub(crate) fn test(api: &Api, input: &Value) -> Result<Value, Error> {
    let hook = Hook::from_input(input)?;
    let trigger = input.opt_str_field("trigger")?.unwrap_or("push_events");
    if !TEST_TRIGGERS.contains(&trigger) {
        return Err(Error::invalid_input(format!(
            "`trigger` must be one of {}",
            TEST_TRIGGERS.join(", ")
        )));
    }
    let call = Call::post_repeatable(format!("{}/test/{trigger}", hook.path()));
    let (ok, status, message) = match api.send(&call) {
        Ok(response) => (
            true,
            response.status,
            messages::from_body(response.status, &response.body),
        ),
        Err(Error::Provider {
            status: 422,
            message,
        }) => (false, 422, message),
        Err(other) => return Err(other),
    };
    let message = messages::limited(&message);
    log::info(&format!(
        "test delivery ({trigger}) of webhook {} in project {}: {}",
        hook.id,
        hook.project_name(),
        if ok {
            "the receiver accepted it"
        } else {
            "the receiver did not accept it"
        }
    ));
    Ok(json!({"ok": ok, "status": status, "message": message}))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shown() -> Value {
        json!({
            "id": 3, "url": "https://r.example/hook", "name": "deploys",
            "description": null, "project_id": 7, "push_events": false,
            "pipeline_events": true, "vulnerability_events": true,
            "enable_ssl_verification": false, "push_events_branch_filter": "main",
            "branch_filter_strategy": "wildcard", "custom_webhook_template": null,
            "alert_status": "executable", "disabled_until": null,
            "url_variables": [], "custom_headers": [],
            "created_at": "2024-01-01T00:00:00.000Z"
        })
    }

    fn hook() -> Hook {
        Hook {
            project: "acme%2Fapi".into(),
            id: 3,
        }
    }

    #[test]
    fn a_copy_carries_every_setting_and_nothing_else() {
        let v = shown();
        let body = copy_body(v.as_object().unwrap());
        assert_eq!(
            Value::Object(body),
            json!({
                "url": "https://r.example/hook", "name": "deploys",
                "push_events": false, "pipeline_events": true,
                // A switch of a newer GitLab is copied too.
                "vulnerability_events": true,
                "enable_ssl_verification": false,
                "push_events_branch_filter": "main", "branch_filter_strategy": "wildcard"
            })
        );
    }

    #[test]
    fn masked_parts_are_refused_by_name() {
        let mut v = shown();
        assert!(refuse_uncopyable(&hook(), v.as_object().unwrap()).is_ok());
        v["url_variables"] = json!([{"key": "path"}, {"key": "tenant"}]);
        v["custom_headers"] = json!([{"key": "X-Auth"}]);
        let e = refuse_uncopyable(&hook(), v.as_object().unwrap()).unwrap_err();
        let text = e.to_string();
        assert!(matches!(e, Error::InvalidInput(_)), "{text}");
        for needle in [
            "webhook 3 of project acme/api",
            "URL variables (path, tenant)",
            "custom headers (X-Auth)",
            "nothing was changed",
            "method=update",
        ] {
            assert!(text.contains(needle), "{needle} in {text}");
        }
        v["url_variables"] = json!([]);
        let text = refuse_uncopyable(&hook(), v.as_object().unwrap())
            .unwrap_err()
            .to_string();
        assert!(
            !text.contains("URL variables") && text.contains("X-Auth"),
            "{text}"
        );
    }

    #[test]
    fn copies_are_told_by_url_and_name() {
        let original = shown();
        let mut other = shown();
        other["id"] = json!(9);
        assert!(same_identity(&other, &original));
        other["name"] = json!("other");
        assert!(!same_identity(&other, &original));
        let mut unnamed = shown();
        unnamed["name"] = Value::Null;
        let mut empty = shown();
        empty["name"] = json!("");
        assert!(same_identity(&unnamed, &empty));
        let mut moved = shown();
        moved["url"] = json!("https://elsewhere.example/");
        assert!(!same_identity(&moved, &original));
        assert!(!same_identity(
            &json!({"name": "deploys"}),
            &json!({"name": "deploys"})
        ));
    }

    #[test]
    fn test_triggers_follow_gitlab() {
        assert!(TEST_TRIGGERS.contains(&"push_events"));
        assert!(TEST_TRIGGERS.contains(&"resource_access_token_events"));
        assert!(!TEST_TRIGGERS.contains(&"confidential_note_events"));
    }
}
