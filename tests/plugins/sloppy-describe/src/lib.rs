//! Loads and runs, but describes itself carelessly, for `keycycle plugins
//! check`: a recovery pair pointing at nothing, a finder that mutates, an
//! operation declared twice, a name no runbook can call, a host naming an
//! undeclared config key, and a change with no way to settle an
//! interrupted call.

use keycycle_plugin_sdk::prelude::*;

struct Sloppy;

impl Plugin for Sloppy {
    fn describe() -> Description {
        Description::new("sloppy", "0.1.0")
            .host("{config.base_url}")
            .host("{config.elsewhere}")
            .config("base_url")
            .operation(
                Operation::new("create_key", "Create a key")
                    .input("name", "its name", true)
                    .secret_output("key")
                    .mutates()
                    .recover_with("find_key"),
            )
            .operation(
                Operation::new("rotate_key", "Rotate a key")
                    .mutates()
                    .recover_with("delete_key"),
            )
            .operation(Operation::new("delete_key", "Delete a key").mutates())
            .operation(Operation::new("list_keys", "List keys"))
            .operation(Operation::new("list_keys", "List keys again"))
            .operation(Operation::new("Get-Key", "Not a name a runbook can call"))
    }

    fn invoke(_ctx: &Context, operation: &str, _input: Value) -> Result<Value, Error> {
        match operation {
            "list_keys" => Ok(json!({ "keys": [] })),
            other => Err(Error::unknown_operation(other)),
        }
    }
}

keycycle_plugin_sdk::export_plugin!(Sloppy);
