//! The seed-001 part of `cargo xtask demo`: a GOV.UK Signon API user's
//! token rotated with the repository's `signon-api-token` runbook, against
//! the Signon simulator (with a server application behind gds-sso) and the
//! Kubernetes simulator, whose sync CronJob's Jobs copy the token from
//! Signon into the client's Secret and whose Deployment's pods read it at
//! start. The person's steps in Signon's UI (creating the new token,
//! revoking the old one) are done through the Signon simulator when the
//! run asks; the special case of a staging alert is shown too; and the true
//! state is checked at the end.

use std::path::Path;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::demo::{DemoEnv, toml_string};
use crate::demo_zendesk::{json_run, stops_with};
use crate::sim::Sim;
use crate::{cmd, plugins};

const NS: &str = "apps";
const CRONJOB: &str = "signon-sync-token-secrets-to-k8s";
const CLIENT: &str = "short-url-manager";
const EMAIL: &str = "short-url-manager@alphagov.co.uk";
const SECRET: &str = "signon-token-short-url-manager-publishing-api";
const CLIENT_ID: &str = "publishing-api-oauth-id";

pub fn run(keycycle: &Path, env: &DemoEnv) -> Result<()> {
    cmd::say("Seed 001: starting the Signon and Kubernetes simulators");
    let signon = Sim::start_provider(keycycle, "signon")?;
    let kube = Sim::start_provider(keycycle, "kubernetes")?;

    cmd::say(
        "Seeding Signon: the API user Short URL Manager, the application Publishing API, a token two years old, and Publishing API's server behind gds-sso",
    );
    let user = id(&signon.control(
        "/api_users",
        json!({ "name": "Short URL Manager", "email": EMAIL }),
    )?)?;
    let app = id(&signon.control(
        "/applications",
        json!({ "name": "Publishing API", "oauth_id": CLIENT_ID }),
    )?)?;
    let made = (time::OffsetDateTime::now_utc() - time::Duration::days(723)).date();
    let old = signon.control(
        "/tokens",
        json!({ "api_user_id": user, "application_id": app, "created_on": made.to_string() }),
    )?;
    let old_id = id(&old)?;
    let old_value = text(&old, "token")?;
    let server = text(
        &signon.control("/server_apps", json!({ "client_id": CLIENT_ID }))?,
        "base_url",
    )?;

    cmd::say(
        "Seeding the cluster: namespace apps, the sync CronJob (its Jobs copy tokens from Signon), the client's Secret and its Deployment reading it into PUBLISHING_API_BEARER_TOKEN",
    );
    kube.control("/namespaces", json!({ "name": NS }))?;
    let sa_token = text(
        &kube.control(
            "/tokens",
            json!({ "namespace": NS, "service_account": "signon-rotator", "namespaces": [NS] }),
        )?,
        "token",
    )?;
    kube.control(
        "/secrets",
        json!({ "namespace": NS, "name": SECRET, "data": { "bearer_token": old_value } }),
    )?;
    kube.control(
        "/cronjobs",
        json!({ "namespace": NS, "name": CRONJOB, "schedule": "9 1 * * *" }),
    )?;
    kube.control(
        &format!("/cronjobs/{NS}/{CRONJOB}/behaviour"),
        json!({ "run": "signon_sync", "source": signon.url(), "delay_ms": 500 }),
    )?;
    kube.control(
        "/deployments",
        json!({
            "namespace": NS,
            "name": CLIENT,
            "replicas": 2,
            "auto_rollout_ms": 500,
            "template": {
                "metadata": { "labels": { "app": CLIENT } },
                "spec": { "containers": [{
                    "name": "app",
                    "image": "ghcr.io/alphagov/short-url-manager:release",
                    "env": [{ "name": "PUBLISHING_API_BEARER_TOKEN",
                              "valueFrom": { "secretKeyRef": { "name": SECRET, "key": "bearer_token" } } }],
                }]},
            },
        }),
    )?;
    let before = pod_digests(&kube)?;

    cmd::say(
        "Granting signon-production, kubernetes-production and server-production (http-check) their hosts, and storing the service-account token",
    );
    env.append_config(&format!(
        "
[plugins.signon-production]
path = {signon_wasm}
hosts = [{signon_url}]
config = {{ base_url = {signon_url} }}

[plugins.kubernetes-production]
path = {kube_wasm}
hosts = [{kube_url}]
secrets = {{ token = \"k8s/production/signon-rotator\" }}
config = {{ api_url = {kube_url}, namespace = \"{NS}\" }}
timeout_secs = 120

[plugins.server-production]
path = {http_wasm}
hosts = [{server_url}]
config = {{ base_url = {server_url} }}
",
        signon_wasm = toml_string(plugins::wasm_path("signon"))?,
        kube_wasm = toml_string(plugins::wasm_path("kubernetes"))?,
        http_wasm = toml_string(plugins::wasm_path("http_check"))?,
        signon_url = toml_string(signon.url())?,
        kube_url = toml_string(kube.url())?,
        server_url = toml_string(&server)?,
    ))?;
    env.set_secret("k8s/production/signon-rotator", &sa_token)?;

    let base = [
        "run",
        "signon-api-token",
        "--set",
        "environment=production",
        "--set",
        &format!("api_user={EMAIL}"),
        "--set",
        "application=publishing-api",
        "--set",
        &format!("client_id={CLIENT_ID}"),
        "--set",
        "poll_secs=1",
        "--set",
        "server_path=/api/content/healthcheck",
    ];

    cmd::say("A staging alert ends at once: staging is overwritten from production every night");
    let staging: Vec<&str> = base
        .iter()
        .map(|a| {
            if *a == "environment=production" {
                "environment=staging"
            } else {
                a
            }
        })
        .collect();
    cmd::run(env.keycycle().args(&staging))?;

    cmd::say(
        "An internal API user's token is renewed by Signon itself: the run says so unless forced",
    );
    cmd::run(env.keycycle().args(base))?;

    cmd::say("The person creates the new token in Signon's UI (here, through the simulator)");
    let new = signon.control(
        "/tokens",
        json!({ "api_user_id": user, "application_id": app }),
    )?;
    let new_value = text(&new, "token")?;
    let pasted = env.dir().join("signon-new-token.txt");
    std::fs::write(&pasted, &new_value).context("cannot write the pasted token's file")?;
    let pasted = format!("new_token=@{}", pasted.display());

    cmd::say("Rehearsing with --dry-run: the CronJob is read; no Job, no restart, no revocation");
    cmd::run(
        env.keycycle()
            .args(base)
            .args(["--set", "force=true", "--dry-run", "--input", &pasted])
            .args(["--input", "old_token_revoked=yes"]),
    )?;

    cmd::say(
        "Rotating: Signon checks the token; the sync Job runs; the client restarts; the server accepts the new token; then the run asks for the old token's revocation",
    );
    let run_id = stops_with(
        env.keycycle()
            .args(base)
            .args(["--set", "force=true", "--input", &pasted]),
        6,
    )?;
    cmd::say("The person revokes the old token in Signon's UI (here, through the simulator)");
    signon.control(&format!("/tokens/{old_id}/revoke"), json!({}))?;
    let done =
        json_run(
            env.keycycle()
                .args(["resume", &run_id, "--input", "old_token_revoked=yes"]),
        )?;
    if done["result"]["old_token_still_valid"] != json!(false) {
        bail!("Signon still accepts the old token: {}", done["result"]);
    }

    cmd::say("The true state (from the simulators; values compared, not shown)");
    let secret = kube.get(&format!("/secrets/{NS}/{SECRET}"))?;
    if secret["data"]["bearer_token"] != new_value.as_str() {
        bail!("{NS}/{SECRET} does not hold the new token");
    }
    cmd::note(&format!(
        "{NS}/{SECRET} holds the new token, applied by field manager {}",
        secret["managers"]["bearer_token"]
    ));
    let after = pod_digests(&kube)?;
    if after.is_empty()
        || after.iter().any(|d| before.contains(d))
        || after.windows(2).any(|w| w[0] != w[1])
    {
        bail!(
            "the client's pods do not all hold one new value: before {before:?}, after {after:?}"
        );
    }
    cmd::note(&format!(
        "deployment/{CLIENT}: {} pods, each started after the sync and holding the new token",
        after.len()
    ));
    let state = signon.state()?;
    let tokens = state["tokens"].as_array().cloned().unwrap_or_default();
    let revoked = tokens
        .iter()
        .find(|t| t["id"] == old_id)
        .map(|t| !t["revoked_at"].is_null())
        .unwrap_or(false);
    if !revoked {
        bail!("the old token is not revoked in Signon");
    }
    let live = tokens
        .iter()
        .filter(|t| t["api_user_id"] == user && t["accessible"] == true)
        .count();
    if live != 1 {
        bail!("the API user has {live} live tokens, not 1");
    }
    cmd::note(
        "Signon: the old token is revoked and refused; the new one is the user's only live token",
    );
    signon.stop()?;
    kube.stop()?;
    Ok(())
}

/// The digest each of the client's pods holds for its token env var.
fn pod_digests(kube: &Sim) -> Result<Vec<String>> {
    let pods = kube.get(&format!("/deployments/{NS}/{CLIENT}/pods"))?;
    pods.as_array()
        .context("the pods answer is not a list")?
        .iter()
        .map(|pod| {
            pod["env"][0]["sha256"]
                .as_str()
                .map(str::to_owned)
                .context("a pod holds no token")
        })
        .collect()
}

fn id(v: &Value) -> Result<u64> {
    v["id"].as_u64().context("the simulator's answer has no id")
}

fn text(v: &Value, key: &str) -> Result<String> {
    v[key]
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("the simulator's answer has no {key}"))
}
