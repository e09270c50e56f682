//! A change-management system's smallest face, for the tests of approval
//! gates that an external system decides: `change_state` reads
//! `GET {base_url}/changes/{number}` and answers `{state, by, comment}`,
//! as a runbook's `approval(#{ poll: ... })` expects. The test plays the
//! change board behind that URL.

use keycycle_plugin_sdk::prelude::*;

struct ChangeBoard;

impl Plugin for ChangeBoard {
    fn describe() -> Description {
        Description::new("change-board", env!("CARGO_PKG_VERSION"))
            .host("{config.base_url}")
            .config("base_url")
            .operation(
                Operation::new(
                    "change_state",
                    "A change request's state: {state, by, comment}",
                )
                .input("number", "the change request's number", true),
            )
    }

    fn invoke(ctx: &Context, operation: &str, input: Value) -> Result<Value, Error> {
        match operation {
            "change_state" => {
                let base = ctx.config("base_url")?.trim_end_matches('/').to_owned();
                let number = input.str_field("number")?;
                let response = http::Request::get(format!("{base}/changes/{number}")).send()?;
                if !response.is_success() {
                    return Err(Error::provider(
                        response.status,
                        format!("the change board answered {}", response.status),
                    ));
                }
                response.json::<Value>()
            }
            other => Err(Error::unknown_operation(other)),
        }
    }
}

keycycle_plugin_sdk::export_plugin!(ChangeBoard);
