//! Pipeline trigger tokens (`doc/api/pipeline_triggers.md`). GitLab has no
//! rotate endpoint for them: rotation is create a new one, put it where it
//! is used, then delete the old one.
//!
//! GitLab shows a trigger's full token only to its owner, the user who
//! created it; everyone else sees the first 4 characters after the
//! `glptt-` prefix (`Ci::Trigger#short_token`). Lists from this plugin
//! never carry a full token: they say only whether it was visible and its
//! last 4 characters.

use keycycle_plugin_sdk::{Context, Error, Value, json, log};

use crate::api::{Api, Call};
use crate::fields;
use crate::labels;
use crate::messages;
use crate::output::{not_found, with_new_token};

/// The prefix of trigger tokens since GitLab 16.
const PREFIX: &str = "glptt-";

/// How many characters GitLab shows to users other than the owner.
const SHORT_LENGTH: usize = 4;

/// The triggers of the project an operation names.
struct Triggers {
    project: String,
}

impl Triggers {
    fn from_input(input: &Value) -> Result<Triggers, Error> {
        Ok(Triggers {
            project: fields::resource_ref(input, "project")?,
        })
    }

    fn path(&self) -> String {
        format!("/projects/{}/triggers", self.project)
    }

    fn one(&self, id: u64) -> String {
        format!("{}/{id}", self.path())
    }

    fn project_name(&self) -> String {
        fields::display_ref(&self.project)
    }
}

/// `GET /projects/:id/triggers`, every page, each trigger with
/// `token_last4` and `token_visible` in place of `token`.
pub(crate) fn list(api: &Api, input: &Value) -> Result<Value, Error> {
    let triggers: Vec<Value> = api
        .get_all(&Triggers::from_input(input)?.path(), &[])?
        .into_iter()
        .map(masked)
        .collect();
    Ok(json!({ "triggers": triggers }))
}

/// A listed trigger without its token: `token_visible` says whether GitLab
/// showed the full token (the plugin's user owns the trigger), and
/// `token_last4` holds its last 4 characters, or null when GitLab showed
/// only its shortened form, whose 4 characters are the first ones.
fn masked(mut trigger: Value) -> Value {
    if let Value::Object(fields) = &mut trigger {
        let shown = fields
            .remove("token")
            .and_then(|t| t.as_str().map(str::to_owned))
            .unwrap_or_default();
        let visible = is_full(&shown);
        let last4 = visible.then(|| last_chars(&shown, SHORT_LENGTH));
        fields.insert("token_last4".into(), json!(last4));
        fields.insert("token_visible".into(), json!(visible));
    }
    trigger
}

/// Whether `shown` is a whole token rather than GitLab's 4-character
/// shortening (or nothing).
fn is_full(shown: &str) -> bool {
    shown.chars().count() > SHORT_LENGTH
}

fn last_chars(text: &str, n: usize) -> String {
    let skip = text.chars().count().saturating_sub(n);
    text.chars().skip(skip).collect()
}

/// What GitLab shows non-owners of the trigger whose token is `token`.
fn short_form(token: &str) -> String {
    token
        .strip_prefix(PREFIX)
        .unwrap_or(token)
        .chars()
        .take(SHORT_LENGTH)
        .collect()
}

/// `POST /projects/:id/triggers` with the description labelled with the
/// call's idempotency key, so `find_trigger` can find it after an
/// interruption.
pub(crate) fn create(api: &Api, ctx: &Context, input: &Value) -> Result<Value, Error> {
    let triggers = Triggers::from_input(input)?;
    let description = labels::labelled(
        fields::non_blank(input, "description")?,
        ctx.idempotency_key(),
    );
    let call = Call::post(
        triggers.path(),
        "a trigger may have been created; run find_trigger with the same input in the same \
         step to find it before creating another",
    )
    .json(json!({ "description": description }));
    let created = with_new_token(api.json(&call)?, "the new pipeline trigger")?;
    log::info(&format!(
        "created pipeline trigger {} in project {}",
        created["id"],
        triggers.project_name()
    ));
    Ok(json!({
        "id": created["id"],
        "description": created["description"],
        "token": created["token"],
        "owner": created["owner"],
        "created_at": created["created_at"],
    }))
}

/// The trigger whose description is `description` plus this call's
/// idempotency label, or a 404: what an interrupted `create_trigger` made.
pub(crate) fn find(api: &Api, ctx: &Context, input: &Value) -> Result<Value, Error> {
    let triggers = Triggers::from_input(input)?;
    let key = ctx.idempotency_key();
    if key.is_empty() {
        return Err(not_found(
            "this call has no idempotency key, so a trigger made by an interrupted \
             create_trigger cannot be told apart from others",
        ));
    }
    let wanted = labels::labelled(fields::non_blank(input, "description")?, key);
    api.get_all(&triggers.path(), &[])?
        .into_iter()
        .filter(|t| t["description"].as_str().map(str::trim) == Some(wanted.trim()))
        .max_by_key(|t| t["id"].as_u64().unwrap_or(0))
        .map(|t| {
            // The owner sees the whole token (doc/api/pipeline_triggers.md), so a
            // trigger made by an interrupted create_trigger can be adopted,
            // value included, instead of being made again.
            let shown = t["token"].as_str().unwrap_or_default();
            if is_full(shown) {
                json!({"id": t["id"], "description": t["description"], "token": shown, "owner": t["owner"]})
            } else {
                json!({"id": t["id"], "description": t["description"], "owner": t["owner"]})
            }
        })
        .ok_or_else(|| {
            not_found(format!(
                "no trigger in project {} has the description `{wanted}`",
                triggers.project_name()
            ))
        })
}

/// Whether `token` is the token of trigger `trigger_id`, read back from
/// GitLab (only the owner sees it whole).
pub(crate) fn check(api: &Api, input: &Value) -> Result<Value, Error> {
    let triggers = Triggers::from_input(input)?;
    let trigger_id = fields::id(input, "trigger_id")?;
    let given = fields::non_blank(input, "token")?;
    let trigger = api.json(&Call::get(triggers.one(trigger_id)))?;
    let shown = trigger["token"].as_str().unwrap_or_default();
    if is_full(shown) {
        return Ok(json!({ "valid": same_secret(shown, given) }));
    }
    // A non-owner sees 4 characters: enough to tell a wrong token, not
    // enough to vouch for a right one.
    if !same_secret(shown, &short_form(given)) {
        return Ok(json!({ "valid": false }));
    }
    Err(Error::denied(format!(
        "GitLab shows the token of pipeline trigger {trigger_id} in project {} only to the \
         trigger's owner, and the plugin's token belongs to another user; its first characters \
         match, but the whole token cannot be checked; check it as the owner, or by running a \
         pipeline with it",
        triggers.project_name()
    )))
}

/// Equality that takes the same time wherever the first difference is, so
/// the comparison does not hint at how much of a guess was right.
fn same_secret(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut difference = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        difference |= usize::from(x ^ y);
    }
    difference == 0
}

/// `PUT /projects/:id/triggers/:trigger_id` with a new `description`: gives
/// a trigger made by `create_trigger` the name the team's rules call for,
/// once the trigger is recorded and the label that found it after a crash
/// is no longer needed. Sending it twice leaves the same trigger.
pub(crate) fn describe(api: &Api, input: &Value) -> Result<Value, Error> {
    let trigger_id = fields::id(input, "trigger_id")?;
    let triggers = Triggers::from_input(input)?;
    let description = fields::non_blank(input, "description")?;
    let call = Call::put(triggers.one(trigger_id)).json(json!({ "description": description }));
    let updated = api.json(&call)?;
    log::info(&format!(
        "named pipeline trigger {trigger_id} in project {}",
        triggers.project_name()
    ));
    Ok(json!({ "id": updated["id"], "description": updated["description"] }))
}

/// `DELETE /projects/:id/triggers/:trigger_id` → 204. Deleting a trigger
/// that is already gone counts as done, so the step can be repeated.
pub(crate) fn delete(api: &Api, input: &Value) -> Result<Value, Error> {
    let trigger_id = fields::id(input, "trigger_id")?;
    let triggers = Triggers::from_input(input)?;
    match api.send(&Call::delete(triggers.one(trigger_id))) {
        Ok(_) => {
            log::info(&format!(
                "deleted pipeline trigger {trigger_id} in project {}",
                triggers.project_name()
            ));
            Ok(json!({ "deleted": true }))
        }
        Err(Error::Provider {
            status: 404,
            message,
        }) if !messages::project_missing(&message) => {
            log::info(&format!(
                "pipeline trigger {trigger_id} in project {} was already gone",
                triggers.project_name()
            ));
            Ok(json!({ "deleted": true, "already_gone": true }))
        }
        Err(other) => Err(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = "glptt-0123456789abcdef0123456789abcdef01234567";

    #[test]
    fn lists_never_carry_the_token() {
        let v = masked(json!({"id": 3, "token": FULL, "description": "d"}));
        assert_eq!(v["token_last4"], "4567");
        assert_eq!(v["token_visible"], true);
        assert!(v.get("token").is_none());
        assert!(!v.to_string().contains("0123456789abcdef"));
        let v = masked(json!({"id": 4, "token": "0123"}));
        assert_eq!(v["token_last4"], Value::Null);
        assert_eq!(v["token_visible"], false);
        assert!(v.get("token").is_none());
        let v = masked(json!({"id": 5}));
        assert_eq!(v["token_visible"], false);
    }

    #[test]
    fn short_forms_follow_gitlab() {
        assert_eq!(short_form(FULL), "0123");
        assert_eq!(short_form("abcdef123456"), "abcd");
        assert!(!is_full("0123"));
        assert!(is_full(FULL));
    }

    #[test]
    fn secret_comparison() {
        assert!(same_secret(FULL, FULL));
        assert!(!same_secret(FULL, &FULL[..FULL.len() - 1]));
        assert!(!same_secret(FULL, &FULL.replace('7', "8")));
        assert!(!same_secret("", "a"));
        assert!(same_secret("", ""));
    }
}
