//! keycycle plugin for GitHub (`https://api.github.com`, or a GitHub
//! Enterprise Server's `/api/v3`): checks personal access tokens, which
//! only a person can create, and writes Actions secrets of repositories,
//! environments and organisations, sealed with each scope's public key.
//!
//! The plugin authenticates with secret `token` (`Authorization: Bearer`)
//! and sends the headers GitHub asks for (`Accept`, `X-GitHub-Api-Version`,
//! `User-Agent`). Errors keep GitHub's message; rate-limited answers come
//! back retryable after the delay GitHub gives. Nothing is sent twice by the
//! plugin itself.

mod api;
mod scope;
mod seal;
mod secrets;
mod token;

use keycycle_plugin_sdk::prelude::*;

use api::{Api, DEFAULT_BASE_URL, TOKEN_SECRET};

struct GitHub;

impl Plugin for GitHub {
    fn describe() -> Description {
        let description = Description::new("github", env!("CARGO_PKG_VERSION"))
            // GitHub.com when `base_url` is not set; the configured
            // instance otherwise. Each works only where the operator grants
            // its origin.
            .host(DEFAULT_BASE_URL)
            .host("{config.base_url}")
            .secret(TOKEN_SECRET)
            .config("base_url");
        operations()
            .into_iter()
            .fold(description, Description::operation)
    }

    fn invoke(ctx: &Context, operation: &str, input: Value) -> Result<Value, Error> {
        let api = Api::new(ctx);
        match operation {
            "whoami" => token::whoami(&api),
            "check_token" => token::check_token(&api, input.str_field("token")?),
            "get_public_key" => secrets::public_key(&api, &input),
            "set_actions_secret" => secrets::set(&api, &input),
            "get_actions_secret" => secrets::get(&api, &input),
            "list_actions_secrets" => secrets::list(&api, &input),
            "delete_actions_secret" => secrets::delete(&api, &input),
            other => Err(Error::unknown_operation(other)),
        }
    }
}

keycycle_plugin_sdk::export_plugin!(GitHub);

/// The inputs that name where a secret lives.
fn scoped(op: Operation) -> Operation {
    op.input(
        "owner",
        "repository owner (user or organisation login)",
        false,
    )
    .input(
        "repo",
        "repository name (or `owner/name` without `owner`)",
        false,
    )
    .input(
        "environment",
        "environment name, for an environment secret",
        false,
    )
    .input(
        "org",
        "organisation login, for an organisation secret (instead of owner and repo)",
        false,
    )
}

fn named(op: Operation) -> Operation {
    scoped(op).input("name", "secret name, such as QA_GIT_TOKEN", true)
}

fn operations() -> Vec<Operation> {
    vec![
        Operation::new(
            "whoami",
            "The plugin's own token (GET /user): {login, id, type, scopes, expires_at}",
        ),
        Operation::new(
            "check_token",
            "Check a pasted token with GET /user: {valid, login, id, scopes, expires_at}; 401 gives valid: false",
        )
        .input("token", "the personal access token to check", true),
        Operation::new(
            "get_public_key",
            "The public key secrets of this scope are sealed with: {key_id, key}",
        )
        .pipe(scoped),
        Operation::new(
            "set_actions_secret",
            "Seal a value with the scope's public key and store it as an Actions secret",
        )
        .pipe(named)
        .input("value", "the secret value", true)
        .input(
            "visibility",
            "organisation secrets: all, private or selected",
            false,
        )
        .input(
            "selected_repository_ids",
            "organisation secrets with visibility selected: array of repository ids",
            false,
        )
        .mutates()
        .idempotent(),
        Operation::new(
            "get_actions_secret",
            "A secret's metadata, never its value: {name, created_at, updated_at, visibility?}",
        )
        .pipe(named),
        Operation::new(
            "list_actions_secrets",
            "Every secret's metadata in the scope: {total_count, secrets}",
        )
        .pipe(scoped),
        Operation::new(
            "delete_actions_secret",
            "Delete an Actions secret; one already gone counts as deleted",
        )
        .pipe(named)
        .mutates()
        .idempotent(),
    ]
}

/// `op.pipe(f)` reads top to bottom where `f(op)` would nest.
trait Pipe: Sized {
    fn pipe(self, f: impl FnOnce(Self) -> Self) -> Self {
        f(self)
    }
}

impl Pipe for Operation {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_are_marked_and_reads_are_not() {
        let description = GitHub::describe();
        for (name, mutates) in [
            ("whoami", false),
            ("check_token", false),
            ("get_public_key", false),
            ("set_actions_secret", true),
            ("get_actions_secret", false),
            ("list_actions_secrets", false),
            ("delete_actions_secret", true),
        ] {
            let op = description
                .find(name)
                .unwrap_or_else(|| panic!("{name} is not declared"));
            let text = format!("{op:?}");
            assert_eq!(text.contains("mutates: true"), mutates, "{name}: {text}");
            assert_eq!(text.contains("idempotent: true"), mutates, "{name}: {text}");
        }
        assert_eq!(description.operation_names().len(), 7);
    }
}
