//! keycycle plugin for GOV.UK Signon: checks an API user's application
//! token the way gds-sso does in every consuming app, with
//! `GET /user.json?client_id=...`.
//!
//! Signon has no API that creates, lists or revokes API users' tokens (a
//! person does it in Signon's UI), so this plugin only reads. The token to
//! check is an input, not a granted secret: a runbook checks the new token
//! and the old one with the same plugin.

mod check;

use keycycle_plugin_sdk::prelude::*;

struct Signon;

impl Plugin for Signon {
    fn describe() -> Description {
        let description = Description::new("signon", env!("CARGO_PKG_VERSION"))
            .host("{config.base_url}")
            .config("base_url");
        operations()
            .into_iter()
            .fold(description, Description::operation)
    }

    fn invoke(ctx: &Context, operation: &str, input: Value) -> Result<Value, Error> {
        match operation {
            "check_token" => check::check_token(ctx.config("base_url")?, &input),
            other => Err(Error::unknown_operation(other)),
        }
    }
}

keycycle_plugin_sdk::export_plugin!(Signon);

fn operations() -> Vec<Operation> {
    vec![
        Operation::new(
            "check_token",
            "Whether Signon accepts a token for an application, as gds-sso asks: \
             {valid, uid, name, email, permissions, disabled, organisation_slug, \
             organisation_content_id}, or {valid: false}",
        )
        .input(
            "token",
            "the API user's bearer token to check (a secret)",
            true,
        )
        .input(
            "client_id",
            "the OAuth id (Doorkeeper uid) of the application the token is for",
            true,
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_reads_and_asks_for_no_secret_of_its_own() {
        let description = Signon::describe();
        assert_eq!(description.operation_names(), ["check_token"]);
        let check = description.find("check_token").unwrap();
        assert!(
            check
                .check_input(&serde_json::json!({"token": "t"}))
                .is_err(),
            "client_id is required: without it Signon accepts a token for any app"
        );
        assert!(
            check
                .check_input(&serde_json::json!({"token": "t", "client_id": "c"}))
                .is_ok()
        );
    }
}
