//! keycycle plugin for GitLab (gitlab.com or self-managed): personal,
//! project and group access tokens, pipeline trigger tokens, project CI/CD
//! variables and webhook secrets, over the REST API at
//! `{base_url}/api/v4` with `PRIVATE-TOKEN: <token>`.
//!
//! Errors keep GitLab's own message. A 429 is waited out a few times (it
//! means GitLab did nothing); a 5xx or a lost connection is retried only for
//! requests that are safe to send twice, never for rotate or create.

mod access_tokens;
mod api;
mod discover;
mod fields;
mod hooks;
mod labels;
mod masking;
mod messages;
mod output;
mod pages;
mod permissions;
mod retry;
mod tokens;
mod triggers;
mod variables;

use keycycle_plugin_sdk::prelude::*;

use api::{Api, TOKEN_SECRET};

struct GitLab;

impl Plugin for GitLab {
    fn describe() -> Description {
        let description = Description::new("gitlab", env!("CARGO_PKG_VERSION"))
            .host("{config.base_url}")
            .secret(TOKEN_SECRET)
            .config("base_url");
        operations()
            .into_iter()
            .fold(description, Description::operation)
    }

    fn invoke(ctx: &Context, operation: &str, input: Value) -> Result<Value, Error> {
        let api = Api::new(ctx)?;
        match operation {
            "whoami" => tokens::whoami(&api),
            "check_token" => tokens::check_token(&api, &input),
            "get_self_token" => tokens::get_self_token(&api),
            "discover" => discover::discover(&api, &input),
            "get_pat" => tokens::get_pat(&api, &input),
            "list_pats" => tokens::list_pats(&api, &input),
            "rotate_pat" => tokens::rotate_pat(&api, &input),
            "rotate_self" => tokens::rotate_self(&api, &input),
            "revoke_pat" => tokens::revoke_pat(&api, &input),
            "list_access_tokens" => access_tokens::list(&api, &input),
            "get_access_token" => access_tokens::get(&api, &input),
            "create_access_token" => access_tokens::create(&api, ctx, &input),
            "find_access_token" => access_tokens::find(&api, ctx, &input),
            "rotate_access_token" => access_tokens::rotate(&api, &input),
            "revoke_access_token" => access_tokens::revoke(&api, &input),
            "list_triggers" => triggers::list(&api, &input),
            "create_trigger" => triggers::create(&api, ctx, &input),
            "find_trigger" => triggers::find(&api, ctx, &input),
            "check_trigger" => triggers::check(&api, &input),
            "delete_trigger" => triggers::delete(&api, &input),
            "set_trigger_description" => triggers::describe(&api, &input),
            "get_variable" => variables::get(&api, &input),
            "check_variable_writable" => variables::check_writable(&api, &input),
            "update_variable" => variables::update(&api, &input),
            "get_hook" => hooks::get(&api, &input),
            "check_hook_writable" => hooks::check_writable(&api, &input),
            "set_hook_token" => hooks::set_token(&api, &input),
            "recreate_hook" => hooks::recreate(&api, &input),
            "find_hook_copy" => hooks::find_copy(&api, &input),
            "test_hook" => hooks::test(&api, &input),
            other => Err(Error::unknown_operation(other)),
        }
    }
}

keycycle_plugin_sdk::export_plugin!(GitLab);

const PROJECT: &str = "project id or full path (`group/project`)";
const EXPIRES_AT: &str = "expiry date YYYY-MM-DD (GitLab's default when absent)";

/// The inputs shared by the access token operations.
fn owner(op: Operation) -> Operation {
    op.input("owner_type", "\"project\" or \"group\"", true)
        .input("owner", "project or group id or full path", true)
}

/// The inputs of `create_access_token`, which `find_access_token` takes too
/// so that the host can recover an interrupted create with the same input.
fn access_token_spec(op: Operation) -> Operation {
    owner(op)
        .input("name", "token name", true)
        .input("scopes", "array of scopes, such as [\"api\"]", true)
        .input(
            "access_level",
            "10, 15, 20, 30, 40 or 50 (GitLab's default: 40, Maintainer)",
            false,
        )
        .input("expires_at", EXPIRES_AT, false)
        .input(
            "description",
            "free text; the step's idempotency label is appended",
            false,
        )
}

// GitLab revokes the old token in the same request that issues the new
// one, and the new value is shown only in that response
// (doc/api/personal_access_tokens.md, "Rotate a personal access token").
const ROTATE_INTERRUPTED: &str = "GitLab may already have revoked the old token and issued a new one \
     whose value was shown only in the lost response; that value cannot be recovered. Check the \
     token in GitLab (list_pats, or the Access tokens page): if the old token is still active, \
     nothing happened and `keycycle resume RUN_ID --retry-in-flight` rotates it again; if it is \
     revoked, create a new token in GitLab's UI and run the `gitlab-adopt-token` runbook to store \
     it and hand it to the consumers. Never use the old token again: reuse of a revoked token \
     revokes its whole rotation family.";

/// The inputs of `recreate_hook`, which `find_hook_copy` takes too so that
/// the host can recover an interrupted re-creation with the same input.
fn hook_copy_spec(op: Operation) -> Operation {
    op.input("project", PROJECT, true)
        .input("hook_id", "id of the hook to replace", true)
        .input(
            "hook",
            "the hook as get_hook returned it: every setting the copy repeats",
            true,
        )
        .input("token", "the new secret token", true)
}

fn operations() -> Vec<Operation> {
    vec![
        Operation::new(
            "whoami",
            "Who the plugin's token belongs to: {id, username, name}",
        ),
        Operation::new(
            "check_token",
            "Whether GitLab accepts a token; never pass one just rotated away (reuse detection \
             would revoke its successor)",
        )
        .input("token", "the token value to test", true),
        Operation::new("get_self_token", "The plugin's own personal access token"),
        Operation::new(
            "discover",
            "Every active token the plugin's user can see, as inventory candidates: its \
             personal access tokens, and the access tokens and triggers of the projects and \
             groups named: {credentials: [{kind, id, name, owner, expires_at, last_used_at, \
             runbook, params}]}",
        )
        .input(
            "projects",
            "projects (paths or ids) whose tokens and triggers to list",
            false,
        )
        .input(
            "groups",
            "groups (paths or ids) whose access tokens to list",
            false,
        ),
        Operation::new("get_pat", "A personal access token by id").input("id", "token id", true),
        Operation::new(
            "list_pats",
            "All personal access tokens, every page: {tokens}",
        )
        .input("user_id", "only this user's tokens (administrators)", false)
        .input("state", "\"active\" or \"inactive\"", false)
        .input("search", "part of the token name", false),
        Operation::new(
            "rotate_pat",
            "Rotate a personal access token: new id and value, the old one revoked at once",
        )
        .input("id", "token id", true)
        .input("expires_at", EXPIRES_AT, false)
        .secret_output("token")
        .mutates()
        .if_interrupted(ROTATE_INTERRUPTED),
        Operation::new(
            "rotate_self",
            "Rotate the plugin's own token; store the new value before the next call",
        )
        .input("expires_at", EXPIRES_AT, false)
        .secret_output("token")
        .mutates()
        .if_interrupted(ROTATE_INTERRUPTED),
        Operation::new("revoke_pat", "Revoke a personal access token by id")
            .input("id", "token id", true)
            .mutates()
            .idempotent(),
        owner(Operation::new(
            "list_access_tokens",
            "All access tokens of a project or group, every page: {tokens}",
        )),
        owner(Operation::new(
            "get_access_token",
            "A project or group access token by id",
        ))
        .input("token_id", "token id", true),
        access_token_spec(Operation::new(
            "create_access_token",
            "Create a project or group access token and return its value",
        ))
        .secret_output("token")
        .mutates()
        .recover_with("find_access_token"),
        access_token_spec(Operation::new(
            "find_access_token",
            "Find the active access token create_access_token made with this name in this step",
        )),
        owner(Operation::new(
            "rotate_access_token",
            "Rotate a project or group access token: new id and value, the old one revoked",
        ))
        .input("token_id", "token id", true)
        .input("expires_at", EXPIRES_AT, false)
        .input(
            "self_rotate",
            "true when token_id is the token the plugin acts with (a bot rotating itself): \
             GitLab allows that only through .../access_tokens/self/rotate",
            false,
        )
        .secret_output("token")
        .mutates()
        .if_interrupted(ROTATE_INTERRUPTED),
        owner(Operation::new(
            "revoke_access_token",
            "Revoke a project or group access token",
        ))
        .input("token_id", "token id", true)
        .mutates()
        .idempotent(),
        Operation::new(
            "list_triggers",
            "All pipeline triggers of a project, tokens reduced to token_last4: {triggers}",
        )
        .input("project", PROJECT, true),
        Operation::new(
            "create_trigger",
            "Create a pipeline trigger token and return its value",
        )
        .input("project", PROJECT, true)
        .input(
            "description",
            "what the trigger is for; the step's idempotency label is appended",
            true,
        )
        .secret_output("token")
        .mutates()
        .recover_with("find_trigger"),
        Operation::new(
            "find_trigger",
            "Find the trigger create_trigger made with this description in this step",
        )
        .input("project", PROJECT, true)
        .input(
            "description",
            "the description given to create_trigger",
            true,
        )
        .secret_output("token"),
        Operation::new(
            "check_trigger",
            "Whether a token is a trigger's token (needs the plugin's user to own the trigger)",
        )
        .input("project", PROJECT, true)
        .input("trigger_id", "trigger id", true)
        .input("token", "the token value to compare", true),
        Operation::new(
            "set_trigger_description",
            "Set a pipeline trigger's description, e.g. to drop create_trigger's label once the \
             trigger is recorded",
        )
        .input("project", PROJECT, true)
        .input("trigger_id", "trigger id", true)
        .input("description", "the new description", true)
        .mutates()
        .idempotent(),
        Operation::new(
            "delete_trigger",
            "Delete a pipeline trigger; one already gone counts as deleted",
        )
        .input("project", PROJECT, true)
        .input("trigger_id", "trigger id", true)
        .mutates()
        .idempotent(),
        Operation::new("get_variable", "A project CI/CD variable, value included")
            .input("project", PROJECT, true)
            .input("key", "variable key", true)
            .input(
                "environment_scope",
                "which scope, when several share the key",
                false,
            )
            .secret_output("value"),
        Operation::new(
            "check_variable_writable",
            "Check without writing that a CI/CD variable exists and can be updated",
        )
        .input("project", PROJECT, true)
        .input("key", "variable key", true)
        .input(
            "environment_scope",
            "which scope, when several share the key",
            false,
        )
        .input(
            "sample",
            "a value like the one to be written, checked against GitLab's masking rules",
            false,
        ),
        Operation::new(
            "update_variable",
            "Set a project CI/CD variable's value (refused before sending if GitLab could not \
             mask it)",
        )
        .input("project", PROJECT, true)
        .input("key", "variable key", true)
        .input("value", "the new value", true)
        .input(
            "environment_scope",
            "which scope, when several share the key",
            false,
        )
        .input("masked", "mask the value in job logs", false)
        .input(
            "protected",
            "expose only to protected branches and tags",
            false,
        )
        .mutates()
        .idempotent(),
        Operation::new(
            "get_hook",
            "A project webhook (GitLab never returns its token)",
        )
        .input("project", PROJECT, true)
        .input("hook_id", "hook id", true),
        Operation::new(
            "check_hook_writable",
            "Check without writing that a project webhook exists and can be edited",
        )
        .input("project", PROJECT, true)
        .input("hook_id", "hook id", true)
        .input(
            "recreate",
            "true to check also that recreate_hook can copy it (no URL variables or custom \
             headers) and that no other hook of the project has its URL and name",
            false,
        ),
        Operation::new(
            "set_hook_token",
            "Set a project webhook's secret token, keeping its URL",
        )
        .input("project", PROJECT, true)
        .input("hook_id", "hook id", true)
        .input("token", "the new secret token", true)
        .mutates()
        .idempotent(),
        hook_copy_spec(Operation::new(
            "recreate_hook",
            "Replace a project webhook by a copy with a new secret token: delete it, then \
             create it again with every setting get_hook returned; the hook gets a new id",
        ))
        .mutates()
        .recover_with("find_hook_copy"),
        hook_copy_spec(Operation::new(
            "find_hook_copy",
            "Find the copy an interrupted recreate_hook made: once the old hook is gone, the \
             later hook with its URL and name",
        )),
        Operation::new(
            "test_hook",
            "Ask GitLab for a test delivery of a project webhook: {ok, status, message}; a \
             receiver that refuses it is ok: false, not an error",
        )
        .input("project", PROJECT, true)
        .input("hook_id", "hook id", true)
        .input(
            "trigger",
            "the event to send, such as push_events (the default) or pipeline_events",
            false,
        )
        // The receiver acts on the event, so a dry run does not send it;
        // a second test delivery is just another test.
        .mutates()
        .idempotent(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    const MUTATING: [&str; 13] = [
        "rotate_pat",
        "rotate_self",
        "revoke_pat",
        "create_access_token",
        "rotate_access_token",
        "revoke_access_token",
        "create_trigger",
        "delete_trigger",
        "set_trigger_description",
        "update_variable",
        "set_hook_token",
        "recreate_hook",
        "test_hook",
    ];

    #[test]
    fn declares_every_operation_once() {
        let d = GitLab::describe();
        let names = d.operation_names();
        assert_eq!(names.len(), 30);
        let mut unique = names.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), names.len());
        for name in MUTATING {
            assert!(d.find(name).is_some(), "{name}");
        }
    }

    #[test]
    fn mutating_secret_and_recovery_flags() {
        let d = keycycle_plugin_sdk::glue::describe::<GitLab>();
        assert_eq!(d.name, "gitlab");
        assert_eq!(d.hosts, ["{config.base_url}"]);
        assert_eq!(d.secrets, ["token"]);
        assert_eq!(d.config, ["base_url"]);
        for op in &d.operations {
            assert_eq!(
                op.mutates,
                MUTATING.contains(&op.name.as_str()),
                "{}",
                op.name
            );
            let secret: &[&str] = match op.name.as_str() {
                "rotate_pat"
                | "rotate_self"
                | "create_access_token"
                | "rotate_access_token"
                | "create_trigger"
                // It hands an interrupted create_trigger's token back.
                | "find_trigger" => &["token"],
                "get_variable" => &["value"],
                _ => &[],
            };
            assert_eq!(op.secret_outputs, secret, "{}", op.name);
            let recover = match op.name.as_str() {
                "create_access_token" => Some("find_access_token"),
                "create_trigger" => Some("find_trigger"),
                "recreate_hook" => Some("find_hook_copy"),
                _ => None,
            };
            assert_eq!(op.recover_with.as_deref(), recover, "{}", op.name);
        }
    }

    #[test]
    fn recovery_operations_take_the_same_input() {
        let d = GitLab::describe();
        let create = json!({"owner_type": "project", "owner": "acme/api", "name": "ci",
                            "scopes": ["api"], "access_level": 30,
                            "expires_at": "2030-01-01", "description": "deploy"});
        d.find("create_access_token")
            .unwrap()
            .check_input(&create)
            .unwrap();
        d.find("find_access_token")
            .unwrap()
            .check_input(&create)
            .unwrap();
        let trigger = json!({"project": 7, "description": "deploy"});
        d.find("create_trigger")
            .unwrap()
            .check_input(&trigger)
            .unwrap();
        d.find("find_trigger")
            .unwrap()
            .check_input(&trigger)
            .unwrap();
        let hook = json!({"project": "acme/api", "hook_id": 3, "token": "t",
                          "hook": {"id": 3, "url": "https://r.example/"}});
        d.find("recreate_hook").unwrap().check_input(&hook).unwrap();
        d.find("find_hook_copy")
            .unwrap()
            .check_input(&hook)
            .unwrap();
    }

    #[test]
    fn only_the_hook_operations_that_change_state_are_sent_again() {
        let d = keycycle_plugin_sdk::glue::describe::<GitLab>();
        let op = |name: &str| d.operations.iter().find(|o| o.name == name).unwrap();
        // A second test delivery is harmless; a second re-creation is not:
        // it is settled by looking for the copy.
        assert!(op("test_hook").idempotent);
        assert!(!op("recreate_hook").idempotent);
        assert!(!op("find_hook_copy").mutates);
    }

    #[test]
    fn inputs_are_checked_by_name() {
        let d = GitLab::describe();
        let err = d
            .find("update_variable")
            .unwrap()
            .check_input(&json!({"project": 7, "key": "K"}))
            .unwrap_err();
        assert!(err.to_string().contains("`value`"), "{err}");
        let err = d
            .find("set_hook_token")
            .unwrap()
            .check_input(&json!({"project": 7, "hook_id": 1, "token": "t", "url": "x"}))
            .unwrap_err();
        assert!(err.to_string().contains("`url`"), "{err}");
    }
}
