//! The plain client of `cargo xtask bench-fleet`: the HTTP requests one
//! `gitlab-project-token` rotation with one masked CI/CD variable makes,
//! sent with reqwest and nothing else (no sandbox, no runbook, no journal).
//! It runs as its own process (`xtask fleet-client SPEC`), so the parent
//! reads its CPU time and peak RSS from `wait4` exactly as it reads
//! keycycle's.
//!
//! Per credential, in the order the runbook and the gitlab plugin send
//! them (`plugins/gitlab/src`):
//!
//! 1. `GET  /projects/P/access_tokens/T`          get_access_token
//! 2. `GET  /personal_access_tokens/self`         get_self_token
//! 3. `GET  /projects/P/variables/K`              check_variable_writable: the variable,
//! 4. `GET  /projects/P`                          the caller's role,
//! 5. `GET  /personal_access_tokens/self`         the caller's scopes
//! 6. `POST /projects/P/access_tokens/T/rotate`   rotate_access_token `{"expires_at"}`
//! 7. `PUT  /projects/P/variables/K`              update_variable `{"value"}`
//! 8. `GET  /personal_access_tokens/self`         check_token, with the new token

use std::sync::Arc;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

/// What the parent hands the client, as JSON in a file.
pub const SPEC_FIELDS: &str =
    "base_url, token, concurrency, expires_at, credentials[{project, token_id, key}]";

/// Requests one rotation makes.
pub const REQUESTS_PER_ROTATION: usize = 8;

pub fn run(spec_path: &str) -> Result<()> {
    let text = std::fs::read_to_string(spec_path)
        .with_context(|| format!("cannot read the client spec {spec_path}"))?;
    let spec: Value = serde_json::from_str(&text).context("the client spec is not JSON")?;
    let field = |name: &str| {
        spec[name]
            .as_str()
            .map(str::to_owned)
            .with_context(|| format!("the client spec has no `{name}` ({SPEC_FIELDS})"))
    };
    let api = format!("{}/api/v4", field("base_url")?.trim_end_matches('/'));
    let token = field("token")?;
    let expires_at = field("expires_at")?;
    let concurrency = spec["concurrency"].as_u64().unwrap_or(1).max(1) as usize;
    let credentials: Vec<(u64, u64, String)> = spec["credentials"]
        .as_array()
        .context("the client spec has no `credentials`")?
        .iter()
        .map(|c| {
            Ok((
                c["project"]
                    .as_u64()
                    .context("a credential without project")?,
                c["token_id"]
                    .as_u64()
                    .context("a credential without token_id")?,
                c["key"]
                    .as_str()
                    .context("a credential without key")?
                    .to_owned(),
            ))
        })
        .collect::<Result<_>>()?;

    // A multi-threaded runtime with a worker per core, as `keycycle rotate`
    // runs on.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    runtime.block_on(async move {
        let client = reqwest::Client::builder()
            .no_proxy()
            .build()
            .context("cannot build the HTTP client")?;
        let shared = Arc::new((client, api, token, expires_at));
        let limit = Arc::new(tokio::sync::Semaphore::new(concurrency));
        let mut tasks = tokio::task::JoinSet::new();
        for (project, token_id, key) in credentials {
            let (shared, limit) = (shared.clone(), limit.clone());
            tasks.spawn(async move {
                let _permit = limit.acquire_owned().await;
                let (client, api, token, expires_at) = &*shared;
                rotate(client, api, token, expires_at, project, token_id, &key)
                    .await
                    .with_context(|| format!("rotating the token of project {project}"))
            });
        }
        let mut failed = 0;
        while let Some(done) = tasks.join_next().await {
            if let Err(e) = done.context("a rotation task stopped")? {
                eprintln!("fleet-client: {e:#}");
                failed += 1;
            }
        }
        if failed > 0 {
            bail!("{failed} rotation(s) failed");
        }
        Ok(())
    })
}

/// One rotation: the eight requests, each answer parsed as JSON and the
/// fields the plugin looks at read, as a client that checks its work must.
async fn rotate(
    client: &reqwest::Client,
    api: &str,
    token: &str,
    expires_at: &str,
    project: u64,
    token_id: u64,
    key: &str,
) -> Result<()> {
    let tokens = format!("{api}/projects/{project}/access_tokens/{token_id}");
    let variable = format!("{api}/projects/{project}/variables/{key}");
    let me = format!("{api}/personal_access_tokens/self");

    let current = send(client.get(&tokens), token).await?;
    if current["active"] != true || current["revoked"] == true {
        bail!("token {token_id} is not active");
    }
    let myself = send(client.get(&me), token).await?;
    if myself["id"] == current["id"] {
        bail!("the client acts with the token it rotates");
    }
    let var = send(client.get(&variable), token).await?;
    if var["masked"] != true {
        bail!("variable {key} is not masked");
    }
    let details = send(client.get(format!("{api}/projects/{project}")), token).await?;
    if details["permissions"]["project_access"]["access_level"]
        .as_u64()
        .unwrap_or(0)
        < 40
    {
        bail!("not a Maintainer of project {project}");
    }
    let scopes = send(client.get(&me), token).await?;
    if !scopes["scopes"]
        .as_array()
        .is_some_and(|s| s.iter().any(|x| x == "api"))
    {
        bail!("the client's token lacks the api scope");
    }
    let fresh = send(
        client
            .post(format!("{tokens}/rotate"))
            .json(&json!({ "expires_at": expires_at })),
        token,
    )
    .await?;
    let new_token = fresh["token"]
        .as_str()
        .context("the rotation answered no token")?
        .to_owned();
    send(
        client.put(&variable).json(&json!({ "value": new_token })),
        token,
    )
    .await?;
    let check = send(client.get(&me), &new_token).await?;
    if check["id"] != fresh["id"] {
        bail!("GitLab does not accept the new token");
    }
    Ok(())
}

/// Sends `request` with `PRIVATE-TOKEN`, as the gitlab plugin does, and
/// returns the JSON answer of a 2xx.
async fn send(request: reqwest::RequestBuilder, token: &str) -> Result<Value> {
    let response = request
        .header("PRIVATE-TOKEN", token)
        .header("Accept", "application/json")
        .send()
        .await?;
    let status = response.status();
    let body = response.bytes().await?;
    if !status.is_success() {
        bail!("HTTP {status}: {}", String::from_utf8_lossy(&body));
    }
    Ok(serde_json::from_slice(&body)?)
}
