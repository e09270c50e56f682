//! {{name}}: a keycycle plugin. `describe` says what it does and needs;
//! `invoke` runs one operation against the provider at `base_url`.

use keycycle_plugin_sdk::prelude::*;
use serde::Deserialize;

struct Provider;

impl Plugin for Provider {
    fn describe() -> Description {
        Description::new("{{name}}", env!("CARGO_PKG_VERSION"))
            .host("{config.base_url}")
            .secret("token")
            .config("base_url")
            .operation(Operation::new("whoami", "Who the granted token belongs to"))
            .operation(
                Operation::new("create_token", "Create a token and return its value")
                    .input("name", "name of the new token", true)
                    .secret_output("token")
                    .mutates()
                    .recover_with("find_token"),
            )
            .operation(
                Operation::new("find_token", "Find the token create_token made in this step")
                    .input("name", "name given to create_token", true),
            )
    }

    fn invoke(ctx: &Context, operation: &str, input: Value) -> Result<Value, Error> {
        let base = ctx.config("base_url")?.trim_end_matches('/').to_owned();
        let token = secret("token")?;
        match operation {
            "whoami" => {
                let me: Value = http::Request::get(format!("{base}/api/whoami"))
                    .bearer(&token)
                    .send()?
                    .error_for_status()?
                    .json()?;
                Ok(json!({ "user": me["user"] }))
            }
            "create_token" => {
                let name = labelled(ctx, input.str_field("name")?);
                let made: Created = http::Request::post(format!("{base}/api/tokens"))
                    .bearer(&token)
                    .json(&json!({ "name": name }))
                    .send()?
                    .error_for_status()?
                    .json()?;
                Ok(json!({ "id": made.id, "name": made.name, "token": made.token }))
            }
            "find_token" => {
                let name = labelled(ctx, input.str_field("name")?);
                let listed: Vec<Listed> = http::Request::get(format!("{base}/api/tokens"))
                    .query("name", &name)
                    .bearer(&token)
                    .send()?
                    .error_for_status()?
                    .json()?;
                // The value was shown only in the lost answer: return the
                // token without it, and keycycle stops for an operator
                // instead of minting a second one.
                listed
                    .into_iter()
                    .filter(|t| t.name == name)
                    .max_by_key(|t| t.id)
                    .map(|t| json!({ "id": t.id, "name": t.name }))
                    .ok_or_else(|| Error::provider(404, format!("no token named `{name}`")))
            }
            other => Err(Error::unknown_operation(other)),
        }
    }
}

keycycle_plugin_sdk::export_plugin!(Provider);

#[derive(Deserialize)]
struct Created {
    id: u64,
    name: String,
    token: String,
}

#[derive(Deserialize)]
struct Listed {
    id: u64,
    name: String,
}

/// The name `create_token` gives, labelled with the call's idempotency key
/// so that `find_token` finds it after an interruption.
fn labelled(ctx: &Context, name: &str) -> String {
    match ctx.idempotency_key() {
        "" => name.to_owned(),
        key => format!("{name} [{key}]"),
    }
}
