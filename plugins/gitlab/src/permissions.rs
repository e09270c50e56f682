//! Checking, without writing anything, that the plugin's token may change a
//! project's CI/CD variables and webhooks: both need the Maintainer role
//! (`doc/api/project_level_variables.md`, `doc/api/project_webhooks.md`)
//! and a token with the `api` scope.

use keycycle_plugin_sdk::{Error, Value, log};

use crate::api::{Api, Call};

/// GitLab's Maintainer access level.
pub(crate) const MAINTAINER: u64 = 40;

/// The name GitLab gives access level `level` (`doc/api/members.md`,
/// "Roles").
pub(crate) fn role_name(level: u64) -> &'static str {
    match level {
        0 => "No access",
        5 => "Minimal access",
        10 => "Guest",
        15 => "Planner",
        20 => "Reporter",
        30 => "Developer",
        40 => "Maintainer",
        50 => "Owner",
        60 => "Admin",
        _ => "an unnamed role",
    }
}

/// The highest access level `GET /projects/:id` shows for the caller, from
/// `permissions.project_access` and `permissions.group_access`. `None`
/// when neither is set: GitLab fills them from direct membership of the
/// project and of its own group only, so an administrator or a member of
/// a parent group sees nulls (`doc/api/projects.md`, "Get a single
/// project").
pub(crate) fn shown_access_level(project: &Value) -> Option<u64> {
    let permissions = project.get("permissions")?;
    ["project_access", "group_access"]
        .iter()
        .filter_map(|kind| permissions.get(kind)?.get("access_level")?.as_u64())
        .max()
}

/// Fail unless the plugin's token may `purpose` in project `project`
/// (already URL-encoded). The caller has already read the object it will
/// change, which in GitLab needs the same role.
pub(crate) fn require_maintainer(api: &Api, project: &str, purpose: &str) -> Result<(), Error> {
    let details = api.json(&Call::get(format!("/projects/{project}")))?;
    match shown_access_level(&details) {
        Some(level) if level < MAINTAINER => {
            return Err(Error::denied(format!(
                "the plugin's token has the {} role ({level}) in project {}; to {purpose} it \
                 needs Maintainer ({MAINTAINER}) or higher",
                role_name(level),
                project_name(&details, project)
            )));
        }
        Some(_) => {}
        None => log::debug(&format!(
            "GitLab shows no direct membership in project {} (an administrator, or a member \
             through a parent group); the successful read already needed Maintainer",
            project_name(&details, project)
        )),
    }
    require_api_scope(api, purpose)
}

/// Fail when the plugin's token lacks the `api` scope, which every write
/// needs: a `read_api` token reads variables and hooks but cannot change
/// them. Tokens that are not personal, project or group access tokens
/// (OAuth, job tokens) cannot describe themselves; they pass with a note.
fn require_api_scope(api: &Api, purpose: &str) -> Result<(), Error> {
    let me = match api.json(&Call::get("/personal_access_tokens/self")) {
        Ok(me) => me,
        Err(Error::Provider {
            status: 401 | 403 | 404,
            ..
        }) => {
            log::debug(
                "the plugin's token cannot describe itself (not an access token); its scopes \
                 were not checked",
            );
            return Ok(());
        }
        Err(other) => return Err(other),
    };
    let scopes: Vec<&str> = me
        .get("scopes")
        .and_then(Value::as_array)
        .map(|s| s.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if scopes.contains(&"api") {
        Ok(())
    } else {
        Err(Error::denied(format!(
            "the plugin's token has the scopes [{}]; to {purpose} it needs the `api` scope",
            scopes.join(", ")
        )))
    }
}

fn project_name(details: &Value, fallback: &str) -> String {
    details
        .get("path_with_namespace")
        .and_then(Value::as_str)
        .map_or_else(|| crate::fields::display_ref(fallback), str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use keycycle_plugin_sdk::json;

    #[test]
    fn takes_the_higher_of_project_and_group_access() {
        let p = json!({"permissions": {"project_access": {"access_level": 30},
                                       "group_access": {"access_level": 50}}});
        assert_eq!(shown_access_level(&p), Some(50));
        let p = json!({"permissions": {"project_access": {"access_level": 40},
                                       "group_access": null}});
        assert_eq!(shown_access_level(&p), Some(40));
        let p = json!({"permissions": {"project_access": null, "group_access": null}});
        assert_eq!(shown_access_level(&p), None);
        assert_eq!(shown_access_level(&json!({"id": 1})), None);
    }

    #[test]
    fn names_roles() {
        assert_eq!(role_name(30), "Developer");
        assert_eq!(role_name(MAINTAINER), "Maintainer");
        assert_eq!(role_name(7), "an unnamed role");
    }
}
