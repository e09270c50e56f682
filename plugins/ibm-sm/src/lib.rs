//! keycycle plugin for IBM Cloud Secrets Manager v2
//! (`https://{instance_id}.{region}.secrets-manager.appdomain.cloud`):
//! find, read and check secrets, create secrets and versions, rename and
//! delete secrets. The operations are primitive; a runbook composes them
//! (rename the old secret, create the new value under the name, check it,
//! delete the old one later).
//!
//! The plugin exchanges secret `api_key` for an IAM access token at config
//! `iam_url` (default `https://iam.cloud.ibm.com`) once per call, and once
//! more after a 401. Errors keep IBM's message; a 429 comes back retryable
//! after `Retry-After`.

mod api;
mod messages;
mod secrets;

use keycycle_plugin_sdk::prelude::*;

use api::{API_KEY_SECRET, Api, DEFAULT_IAM_URL};

struct IbmSm;

impl Plugin for IbmSm {
    fn describe() -> Description {
        let description = Description::new("ibm-sm", env!("CARGO_PKG_VERSION"))
            .host("{config.base_url}")
            .host("{config.iam_url}")
            .host(DEFAULT_IAM_URL)
            .secret(API_KEY_SECRET)
            .config("base_url")
            .config("iam_url");
        operations()
            .into_iter()
            .fold(description, Description::operation)
    }

    fn invoke(ctx: &Context, operation: &str, input: Value) -> Result<Value, Error> {
        let api = Api::new(ctx)?;
        match operation {
            "find_secret" => secrets::find(&api, &input),
            "get_secret" => secrets::get(&api, &input),
            "check_secret" => secrets::check(&api, &input),
            "list_secrets" => secrets::list(&api, &input),
            "create_secret" => secrets::create(&api, ctx, &input),
            "find_created_secret" => secrets::find_created(&api, ctx, &input),
            "create_version" => secrets::create_version(&api, &input),
            "rename_secret" => secrets::rename(&api, &input),
            "delete_secret" => secrets::delete(&api, &input),
            other => Err(Error::unknown_operation(other)),
        }
    }
}

keycycle_plugin_sdk::export_plugin!(IbmSm);

const ID: &str = "secret id (UUID)";
const TYPE: &str = "secret type: arbitrary (default) or username_password";
const GROUP: &str = "secret group name (default: default)";

/// A secret named in the group and type given (by-name lookups).
fn named(op: Operation, required: bool) -> Operation {
    op.input("name", "secret name", required)
        .input("secret_type", TYPE, false)
        .input("group", GROUP, false)
}

/// The inputs of `create_secret`, which `find_created_secret` takes too so
/// that the host can recover an interrupted create with the same input.
fn create_spec(op: Operation) -> Operation {
    named(op, true)
        .input("payload", "the value (arbitrary secrets)", false)
        .input(
            "username",
            "the user name (username_password secrets)",
            false,
        )
        .input(
            "password",
            "the password (username_password; generated when absent)",
            false,
        )
        .input("description", "description", false)
        .input("labels", "array of labels (at most 30)", false)
}

fn operations() -> Vec<Operation> {
    vec![
        named(
            Operation::new(
                "find_secret",
                "A secret's metadata by name in a group and type, never its value; 404 when none",
            ),
            true,
        ),
        named(
            Operation::new(
                "get_secret",
                "A secret (by id, or by name) with its value as payload or password",
            ),
            false,
        )
        .input("id", ID, false)
        .input(
            "version",
            "a version id, current or previous (default: current)",
            false,
        )
        .secret_output("payload")
        .secret_output("password"),
        named(
            Operation::new(
                "check_secret",
                "Whether a secret's current value (read back) equals `value`: {matches}",
            ),
            false,
        )
        .input("id", ID, false)
        .input("value", "the value it should hold", true),
        Operation::new("list_secrets", "Secrets' metadata, every page: {secrets}")
            .input(
                "search",
                "only secrets whose name or labels contain this",
                false,
            )
            .input(
                "groups",
                "comma-separated group ids (default for the default group)",
                false,
            )
            .input("secret_types", "comma-separated secret types", false),
        create_spec(Operation::new(
            "create_secret",
            "Create a secret under a name that is free in its group and type",
        ))
        .secret_output("password")
        .mutates()
        .recover_with("find_created_secret"),
        create_spec(Operation::new(
            "find_created_secret",
            "The secret create_secret made in this step (same input), or 404",
        ))
        .secret_output("password"),
        Operation::new(
            "create_version",
            "Add a version to a secret; it becomes current, the old one previous",
        )
        .input("id", ID, true)
        .input("payload", "the new value (arbitrary secrets)", false)
        .input(
            "password",
            "the new password (username_password; generated when absent)",
            false,
        )
        .secret_output("password")
        .mutates()
        .if_interrupted(
            "a new version may have been added. Check the secret with check_secret against \
             the value you meant to set: if it matches, the version exists and the run can go \
             on from there; if not, run `keycycle resume RUN_ID --retry-in-flight` to add it",
        ),
        Operation::new(
            "rename_secret",
            "Rename a secret (merge-patch of its metadata)",
        )
        .input("id", ID, true)
        .input(
            "name",
            "the new name, free in the secret's group and type",
            true,
        )
        .mutates()
        .idempotent(),
        Operation::new(
            "delete_secret",
            "Delete a secret; one already gone counts as deleted, a locked one is refused (412)",
        )
        .input("id", ID, true)
        .mutates()
        .idempotent(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use keycycle_plugin_sdk::bindings::keycycle::plugin::types::Operation as WitOperation;

    /// (operation, mutates, idempotent, recover_with, secret outputs).
    type Expected = (
        &'static str,
        bool,
        bool,
        Option<&'static str>,
        &'static [&'static str],
    );

    const EXPECTED: &[Expected] = &[
        ("find_secret", false, false, None, &[]),
        ("get_secret", false, false, None, &["payload", "password"]),
        ("check_secret", false, false, None, &[]),
        ("list_secrets", false, false, None, &[]),
        (
            "create_secret",
            true,
            false,
            Some("find_created_secret"),
            &["password"],
        ),
        ("find_created_secret", false, false, None, &["password"]),
        ("create_version", true, false, None, &["password"]),
        ("rename_secret", true, true, None, &[]),
        ("delete_secret", true, true, None, &[]),
    ];

    fn ops() -> Vec<WitOperation> {
        keycycle_plugin_sdk::glue::describe::<IbmSm>().operations
    }

    #[test]
    fn declares_hosts_secret_and_config() {
        let d = keycycle_plugin_sdk::glue::describe::<IbmSm>();
        assert_eq!(d.name, "ibm-sm");
        assert_eq!(
            d.hosts,
            [
                "{config.base_url}",
                "{config.iam_url}",
                "https://iam.cloud.ibm.com"
            ]
        );
        assert_eq!(d.secrets, ["api_key"]);
        assert_eq!(d.config, ["base_url", "iam_url"]);
    }

    #[test]
    fn flags_per_operation() {
        let ops = ops();
        assert_eq!(ops.len(), EXPECTED.len());
        for (op, (name, mutates, idempotent, recover, secrets)) in ops.iter().zip(EXPECTED) {
            assert_eq!(op.name, *name);
            assert_eq!(op.mutates, *mutates, "{name} mutates");
            assert_eq!(op.idempotent, *idempotent, "{name} idempotent");
            assert_eq!(op.recover_with.as_deref(), *recover, "{name} recover_with");
            assert_eq!(op.secret_outputs, *secrets, "{name} secret outputs");
            // A change that can be neither repeated nor looked up must
            // tell the operator what to do.
            let needs_advice = *mutates && !*idempotent && recover.is_none();
            assert_eq!(op.if_interrupted.is_some(), needs_advice, "{name} advice");
            if let Some(advice) = &op.if_interrupted {
                assert!(advice.contains("RUN_ID"), "{name}");
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
        assert_eq!(inputs("create_secret"), inputs("find_created_secret"));
    }
}
