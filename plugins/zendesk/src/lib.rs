//! keycycle plugin for Zendesk (`https://{subdomain}.zendesk.com`): OAuth
//! clients and tokens, the account's API tokens (read only: Zendesk has no
//! API to create or delete them), app installation settings, and webhook
//! credentials and signing secrets.
//!
//! The plugin authenticates with secret `token`: an OAuth access token
//! (`Authorization: Bearer`, config `auth = oauth`, the default) or an API
//! token (`Basic base64("{email}/token:{token}")`, config
//! `auth = api_token` with config `email`). Errors keep Zendesk's own
//! message; a 429 comes back retryable after `Retry-After`. Nothing is sent
//! twice by the plugin itself.

mod api;
mod api_tokens;
mod apps;
mod fields;
mod messages;
mod oauth;
mod pages;
mod webhooks;

use keycycle_plugin_sdk::prelude::*;

use api::{Api, TOKEN_SECRET};

struct Zendesk;

impl Plugin for Zendesk {
    fn describe() -> Description {
        let description = Description::new("zendesk", env!("CARGO_PKG_VERSION"))
            .host("{config.base_url}")
            .secret(TOKEN_SECRET)
            .config("base_url")
            .config("auth")
            .config("email");
        operations()
            .into_iter()
            .fold(description, Description::operation)
    }

    fn invoke(ctx: &Context, operation: &str, input: Value) -> Result<Value, Error> {
        let api = Api::new(ctx)?;
        match operation {
            "whoami" => oauth::whoami(&api),
            "list_api_tokens" => api_tokens::list(&api),
            "list_clients" => oauth::list_clients(&api),
            "create_client" => oauth::create_client(&api, &input),
            "delete_client" => oauth::delete_client(&api, &input),
            "generate_client_secret" => oauth::generate_client_secret(&api, &input),
            "create_token" => oauth::create_token(&api, &input),
            "list_tokens" => oauth::list_tokens(&api, &input),
            "revoke_token" => oauth::revoke_token(&api, &input),
            "token_scopes" => oauth::token_scopes(&api, input.str_field("token")?),
            "refresh_token" => oauth::refresh_token(&api, &input),
            "get_installation" => apps::get(&api, &input),
            "set_installation_setting" => apps::set_setting(&api, &input),
            "get_webhook" => webhooks::get(&api, &input),
            "list_webhooks" => webhooks::list(&api, &input),
            "set_webhook_auth" => webhooks::set_auth(&api, &input),
            "recreate_webhook" => webhooks::recreate(&api, &input),
            "find_webhook" => webhooks::find(&api, &input),
            "delete_webhook" => webhooks::delete(&api, &input),
            "test_webhook" => webhooks::test(&api, &input),
            "signing_secret" => webhooks::signing_secret(&api, &input, false),
            "reset_signing_secret" => webhooks::signing_secret(&api, &input, true),
            other => Err(Error::unknown_operation(other)),
        }
    }
}

keycycle_plugin_sdk::export_plugin!(Zendesk);

const CLIENT_ID: &str = "OAuth client resource id (the numeric `id`, not `identifier`)";
const WEBHOOK_ID: &str = "webhook id (ULID)";

/// The inputs of a webhook credential, shared by `set_webhook_auth`,
/// `recreate_webhook` and `find_webhook`.
fn credential(op: Operation) -> Operation {
    op.input("auth_type", "basic_auth, bearer_token or api_key", true)
        .input("value", "the new password, token or key value", true)
        .input("username", "basic_auth user name", false)
        .input(
            "header_name",
            "api_key header name, such as X-Api-Key",
            false,
        )
}

/// The inputs of `recreate_webhook`, which `find_webhook` takes too so the
/// host can recover an interrupted recreate with the same input.
fn recreate_spec(op: Operation) -> Operation {
    credential(
        op.input("webhook_id", "id of the webhook to replace", true)
            .input("name", "its current name (checked; finds the copy)", true)
            .input(
                "endpoint",
                "its current endpoint URL (checked; finds the copy)",
                true,
            ),
    )
}

fn operations() -> Vec<Operation> {
    vec![
        Operation::new(
            "whoami",
            "The plugin's own OAuth token (tokens/current.json): {id, user_id, client_id, scopes}",
        ),
        Operation::new(
            "list_api_tokens",
            "The account's API tokens with created_at and last_used, never values: {api_tokens}",
        ),
        Operation::new(
            "list_clients",
            "All OAuth clients, without secrets: {clients}",
        ),
        Operation::new(
            "create_client",
            "Create an OAuth client and return its secret",
        )
        .input("name", "client name", true)
        .input(
            "identifier",
            "unique identifier (the OAuth client_id)",
            true,
        )
        .input("kind", "\"public\" or \"confidential\"", false)
        .input("redirect_uri", "array of redirect URLs", false)
        .secret_output("secret")
        .mutates()
        .if_interrupted(
            "the client may have been created, its secret shown only in the lost answer. \
                 Look for the identifier with list_clients: if it is there, delete it with \
                 delete_client (or give it a new secret with generate_client_secret), then \
                 `keycycle resume RUN_ID --retry-in-flight`",
        ),
        Operation::new(
            "delete_client",
            "Delete an OAuth client; one already gone counts as deleted",
        )
        .input("client_id", CLIENT_ID, true)
        .mutates()
        .idempotent(),
        Operation::new(
            "generate_client_secret",
            "Generate a new secret for an OAuth client; the old one stops working",
        )
        .input("client_id", CLIENT_ID, true)
        .secret_output("secret")
        .mutates()
        .if_interrupted(
            "Zendesk may have replaced the client's secret, the new one shown only in the lost \
             answer and the old one no longer valid; it cannot be read back. Run \
             `keycycle resume RUN_ID --retry-in-flight` to generate another and hand that one on",
        ),
        Operation::new(
            "create_token",
            "Create an OAuth access token for a client; its value is shown only in this answer",
        )
        .input("client_id", CLIENT_ID, true)
        .input(
            "scopes",
            "array of scopes, such as [\"read\", \"tickets:write\"]",
            true,
        )
        .secret_output("token")
        .mutates()
        .if_interrupted(
            "a token may have been created, its value shown only in the lost answer. Run \
             list_tokens for the client, revoke with revoke_token any token created during run \
             RUN_ID that nobody holds, then `keycycle resume RUN_ID --retry-in-flight`",
        ),
        Operation::new(
            "list_tokens",
            "OAuth tokens with a 10-character prefix, never values: {tokens}",
        )
        .input(
            "client_id",
            "only this client's tokens (resource id)",
            false,
        )
        .input(
            "all",
            "true: every user's tokens, not only the plugin user's",
            false,
        ),
        Operation::new(
            "revoke_token",
            "Revoke an OAuth token; one already gone counts as revoked",
        )
        .input("token_id", "token id", true)
        .mutates()
        .idempotent(),
        Operation::new(
            "token_scopes",
            "Whether Zendesk accepts a token, and its scopes: {valid, id, scopes, ...}",
        )
        .input("token", "the OAuth access token to check", true),
        Operation::new(
            "refresh_token",
            "Refresh an OAuth token pair (POST /oauth/tokens); the old pair stops working",
        )
        .input(
            "client_id",
            "the client's `identifier` (OAuth client_id)",
            true,
        )
        .input("client_secret", "the client's secret", true)
        .input("refresh_token", "the current refresh token", true)
        .input(
            "scope",
            "space-separated scopes, such as \"read write\"",
            false,
        )
        .input(
            "expires_in",
            "access token lifetime in seconds (300-172800)",
            false,
        )
        .input(
            "refresh_token_expires_in",
            "refresh token lifetime in seconds (7-90 days)",
            false,
        )
        .secret_output("access_token")
        .secret_output("refresh_token")
        .mutates()
        .if_interrupted(
            "Zendesk may have refreshed the pair: then the old access and refresh tokens are \
             dead and the new pair was only in the lost answer. Check the old access token with \
             token_scopes: if it is still valid nothing happened and `keycycle resume RUN_ID \
             --retry-in-flight` refreshes again; if not, authorize the client again (or create a \
             token with create_token) and store the new value",
        ),
        Operation::new(
            "get_installation",
            "An app installation with its setting names, never their values",
        )
        .input("installation_id", "installation id", true),
        Operation::new(
            "set_installation_setting",
            "Set one setting of an app installation; nothing else is sent",
        )
        .input("installation_id", "installation id", true)
        .input("name", "setting name, such as api_token", true)
        .input("value", "the new value", true)
        .mutates()
        .idempotent(),
        Operation::new(
            "get_webhook",
            "A webhook, without credential or header values",
        )
        .input("webhook_id", WEBHOOK_ID, true),
        Operation::new("list_webhooks", "All webhooks, every page: {webhooks}")
            .input(
                "name_contains",
                "only webhooks whose name contains this",
                false,
            )
            .input("status", "\"active\" or \"inactive\"", false),
        credential(
            Operation::new(
                "set_webhook_auth",
                "Set a webhook's credential (PATCH authentication)",
            )
            .input("webhook_id", WEBHOOK_ID, true),
        )
        .mutates()
        .idempotent(),
        recreate_spec(Operation::new(
            "recreate_webhook",
            "Replace a webhook by a copy with a new credential; the copy has a new id",
        ))
        .mutates()
        .recover_with("find_webhook"),
        recreate_spec(Operation::new(
            "find_webhook",
            "The copy recreate_webhook made: same name and endpoint, another id, or 404",
        )),
        Operation::new(
            "delete_webhook",
            "Delete a webhook; one already gone counts as deleted",
        )
        .input("webhook_id", WEBHOOK_ID, true)
        .mutates()
        .idempotent(),
        Operation::new(
            "test_webhook",
            "Have Zendesk call a webhook's endpoint with its stored credential: {status, ok}",
        )
        .input("webhook_id", WEBHOOK_ID, true),
        Operation::new(
            "signing_secret",
            "A webhook's signing secret: {algorithm, secret}",
        )
        .input("webhook_id", WEBHOOK_ID, true)
        .secret_output("secret"),
        Operation::new(
            "reset_signing_secret",
            "Reset a webhook's signing secret; Zendesk signs with the new one at once",
        )
        .input("webhook_id", WEBHOOK_ID, true)
        .secret_output("secret")
        .mutates()
        .if_interrupted(
            "the signing secret may have been reset, and Zendesk would then sign with a secret \
             no consumer has. Read the current one with signing_secret and hand it to the \
             consumers, or `keycycle resume RUN_ID --retry-in-flight` to reset again",
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use keycycle_plugin_sdk::bindings::keycycle::plugin::types::Operation as WitOperation;

    /// name, mutates, idempotent, recover_with, secret outputs.
    type Flags = (
        &'static str,
        bool,
        bool,
        Option<&'static str>,
        &'static [&'static str],
    );

    const EXPECTED: [Flags; 22] = [
        ("whoami", false, false, None, &[]),
        ("list_api_tokens", false, false, None, &[]),
        ("list_clients", false, false, None, &[]),
        ("create_client", true, false, None, &["secret"]),
        ("delete_client", true, true, None, &[]),
        ("generate_client_secret", true, false, None, &["secret"]),
        ("create_token", true, false, None, &["token"]),
        ("list_tokens", false, false, None, &[]),
        ("revoke_token", true, true, None, &[]),
        ("token_scopes", false, false, None, &[]),
        (
            "refresh_token",
            true,
            false,
            None,
            &["access_token", "refresh_token"],
        ),
        ("get_installation", false, false, None, &[]),
        ("set_installation_setting", true, true, None, &[]),
        ("get_webhook", false, false, None, &[]),
        ("list_webhooks", false, false, None, &[]),
        ("set_webhook_auth", true, true, None, &[]),
        ("recreate_webhook", true, false, Some("find_webhook"), &[]),
        ("find_webhook", false, false, None, &[]),
        ("delete_webhook", true, true, None, &[]),
        ("test_webhook", false, false, None, &[]),
        ("signing_secret", false, false, None, &["secret"]),
        ("reset_signing_secret", true, false, None, &["secret"]),
    ];

    fn ops() -> Vec<WitOperation> {
        keycycle_plugin_sdk::glue::describe::<Zendesk>().operations
    }

    #[test]
    fn declares_the_expected_operations_in_order() {
        let d = keycycle_plugin_sdk::glue::describe::<Zendesk>();
        assert_eq!(d.name, "zendesk");
        assert_eq!(d.hosts, ["{config.base_url}"]);
        assert_eq!(d.secrets, ["token"]);
        assert_eq!(d.config, ["base_url", "auth", "email"]);
        let names: Vec<&str> = d.operations.iter().map(|o| o.name.as_str()).collect();
        let expected: Vec<&str> = EXPECTED.iter().map(|e| e.0).collect();
        assert_eq!(names, expected);
    }

    #[test]
    fn flags_per_operation() {
        for (op, (name, mutates, idempotent, recover, secrets)) in ops().iter().zip(EXPECTED) {
            assert_eq!(op.name, name);
            assert_eq!(op.mutates, mutates, "{name} mutates");
            assert_eq!(op.idempotent, idempotent, "{name} idempotent");
            assert_eq!(op.recover_with.as_deref(), recover, "{name} recover_with");
            assert_eq!(op.secret_outputs, secrets, "{name} secret outputs");
            // A mutating call whose outcome can be neither repeated nor
            // looked up must tell the operator what to do.
            let needs_advice = mutates && !idempotent && recover.is_none();
            assert_eq!(op.if_interrupted.is_some(), needs_advice, "{name} advice");
            if let Some(advice) = &op.if_interrupted {
                assert!(advice.contains("RUN_ID"), "{name}");
            }
            for input in &op.inputs {
                assert!(!input.doc.is_empty(), "{name}.{}", input.name);
            }
        }
    }

    #[test]
    fn recovery_takes_the_same_input() {
        let ops = ops();
        let inputs = |n: &str| {
            ops.iter()
                .find(|o| o.name == n)
                .unwrap()
                .inputs
                .iter()
                .map(|f| (f.name.clone(), f.required))
                .collect::<Vec<_>>()
        };
        assert_eq!(inputs("recreate_webhook"), inputs("find_webhook"));
    }
}
