//! keycycle plugin for the demo token service: create, find, check, list
//! and revoke API tokens with an admin token.
//!
//! The service speaks JSON with `Authorization: Bearer <token>`; errors are
//! `{"message": "..."}` and 429 answers carry `Retry-After` in seconds.

use keycycle_plugin_sdk::prelude::*;
use serde::Deserialize;

struct Demo;

impl Plugin for Demo {
    fn describe() -> Description {
        Description::new("example", env!("CARGO_PKG_VERSION"))
            .host("{config.base_url}")
            .secret("token")
            .config("base_url")
            .operation(Operation::new(
                "ping",
                "Answer without touching the network (for health checks and benchmarks)",
            ))
            .operation(Operation::new("whoami", "Who the admin token belongs to"))
            .operation(Operation::new(
                "list_tokens",
                "List all tokens (names and ids, never values)",
            ))
            .operation(
                Operation::new("create_token", "Create a token and return its value")
                    .input("name", "name of the new token", true)
                    .secret_output("token")
                    .mutates()
                    .recover_with("find_token"),
            )
            .operation(
                Operation::new(
                    "find_token",
                    "Find the token create_token made with this name in this step",
                )
                .input("name", "name given to create_token", true),
            )
            .operation(
                Operation::new("check_token", "Check whether a token is accepted").input(
                    "token",
                    "the token to check",
                    true,
                ),
            )
            .operation(
                Operation::new("revoke_token", "Revoke a token by id")
                    .input("id", "id of the token to revoke", true)
                    .mutates()
                    .if_interrupted(
                        "the token may or may not be revoked; check with list_tokens and \
                         revoke it again if it is still active",
                    ),
            )
    }

    fn invoke(ctx: &Context, operation: &str, input: Value) -> Result<Value, Error> {
        if operation == "ping" {
            return Ok(json!({"pong": true}));
        }
        let api = Api::new(ctx)?;
        match operation {
            "whoami" => whoami(&api),
            "list_tokens" => list_tokens(&api),
            "create_token" => create_token(&api, ctx, input.str_field("name")?),
            "find_token" => find_token(&api, ctx, input.str_field("name")?),
            "check_token" => check_token(&api, input.str_field("token")?),
            "revoke_token" => revoke_token(&api, input.u64_field("id")?),
            other => Err(Error::unknown_operation(other)),
        }
    }
}

keycycle_plugin_sdk::export_plugin!(Demo);

/// How long to wait on a 429 that does not say.
const DEFAULT_RETRY_MS: u64 = 1_000;

#[derive(Deserialize)]
struct Whoami {
    user: String,
    token_id: u64,
    token_name: String,
}

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
    active: bool,
}

/// The service at the operator's `base_url`.
struct Api {
    base: String,
}

impl Api {
    fn new(ctx: &Context) -> Result<Self, Error> {
        let base = ctx.config("base_url")?.trim_end_matches('/').to_owned();
        Ok(Api { base })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Send with the admin token, and turn any non-2xx answer into an error
    /// (the SDK's mapping: 429 retryable, else the service's message).
    fn send(&self, request: http::Request) -> Result<http::Response, Error> {
        let response = request.bearer(&secret("token")?).send()?;
        if response.is_success() {
            Ok(response)
        } else {
            Err(response.to_error_with_default_retry(DEFAULT_RETRY_MS))
        }
    }
}

/// The name `create_token` gives a token, labelled with the step's
/// idempotency key so that `find_token` can find it after an interruption.
fn labelled(ctx: &Context, name: &str) -> String {
    match ctx.idempotency_key() {
        "" => name.to_owned(),
        key => format!("{name} [{key}]"),
    }
}

fn whoami(api: &Api) -> Result<Value, Error> {
    let me: Whoami = api
        .send(http::Request::get(api.url("/api/whoami")))?
        .json()?;
    Ok(json!({"user": me.user, "token_id": me.token_id, "token_name": me.token_name}))
}

fn list_tokens(api: &Api) -> Result<Value, Error> {
    let tokens: Vec<Value> = api
        .send(http::Request::get(api.url("/api/tokens")))?
        .json()?;
    Ok(json!({ "tokens": tokens }))
}

fn create_token(api: &Api, ctx: &Context, name: &str) -> Result<Value, Error> {
    let name = labelled(ctx, name);
    let created: Created = api
        .send(http::Request::post(api.url("/api/tokens")).json(&json!({ "name": name })))?
        .json()?;
    log::info(&format!("created token {} ({})", created.id, created.name));
    Ok(json!({"id": created.id, "name": created.name, "token": created.token}))
}

fn find_token(api: &Api, ctx: &Context, name: &str) -> Result<Value, Error> {
    let name = labelled(ctx, name);
    let listed: Vec<Listed> = api
        .send(http::Request::get(api.url("/api/tokens")).query("name", &name))?
        .json()?;
    // The filter is exact, but a service that ignores it must not make us
    // adopt someone else's token; prefer an active one, then the newest.
    listed
        .into_iter()
        .filter(|t| t.name == name)
        .max_by_key(|t| (t.active, t.id))
        .map(|t| json!({"id": t.id, "name": t.name}))
        .ok_or_else(|| Error::provider(404, format!("no token named `{name}`")))
}

fn check_token(api: &Api, token: &str) -> Result<Value, Error> {
    // This call authenticates with the token under test, not the admin one.
    let response = http::Request::get(api.url("/api/whoami"))
        .bearer(token)
        .send()?;
    match response.status {
        401 => Ok(json!({"valid": false, "token_id": null})),
        _ if response.is_success() => {
            let me: Whoami = response.json()?;
            Ok(json!({"valid": true, "token_id": me.token_id}))
        }
        _ => Err(response.to_error_with_default_retry(DEFAULT_RETRY_MS)),
    }
}

fn revoke_token(api: &Api, id: u64) -> Result<Value, Error> {
    api.send(http::Request::delete(api.url(&format!("/api/tokens/{id}"))))?;
    log::info(&format!("revoked token {id}"));
    Ok(json!({"id": id, "revoked": true}))
}
