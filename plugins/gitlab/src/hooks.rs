//! Project webhooks (`doc/api/project_webhooks.md`): read one, check that
//! it can be edited, and set its secret token. GitLab never returns the
//! token, `url` is required on every edit, and changing the URL resets the
//! token (`WebHook#reset_token`), so the URL and the token are always sent
//! together.

use keycycle_plugin_sdk::{Error, Value, json, log};

use crate::api::{Api, Call};
use crate::fields;
use crate::output::item;
use crate::permissions::require_maintainer;

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

    fn read(&self, api: &Api) -> Result<Value, Error> {
        Ok(item(api.json(&Call::get(self.path()))?))
    }
}

/// `GET /projects/:id/hooks/:hook_id`, without any token field.
pub(crate) fn get(api: &Api, input: &Value) -> Result<Value, Error> {
    Hook::from_input(input)?.read(api)
}

/// Check, without writing, that the hook exists and that the plugin's
/// token may edit it.
pub(crate) fn check_writable(api: &Api, input: &Value) -> Result<Value, Error> {
    let hook = Hook::from_input(input)?;
    let current = hook.read(api)?;
    require_maintainer(api, &hook.project, &format!("edit webhook {}", hook.id))?;
    Ok(json!({"writable": true, "url": current["url"]}))
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
