//! The seed-000 part of `cargo xtask demo`: a GitHub personal access token
//! rotated into IBM Secrets Manager for dev, stage and prod with the
//! repository's `github-pat-to-ibm-sm` runbook, against the GitHub
//! simulator and three Secrets Manager instances. The functional ID's new
//! tokens are made through the simulator, as the person on GitHub's
//! settings page would; stage and prod wait for a change request that
//! another person approves; the old tokens are deleted, the renamed old
//! values removed by `keycycle cleanup`, and every environment's true state
//! is checked.

use std::path::Path;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::demo::{DemoEnv, random_token, toml_string};
use crate::demo_zendesk::{json_run, stops_with};
use crate::sim::Sim;
use crate::{cmd, plugins};

const SECRET: &str = "aihelp--QA_GIT_TOKEN";
const ENVS: [&str; 3] = ["dev", "stage", "prod"];

pub fn run(keycycle: &Path, env: &DemoEnv) -> Result<()> {
    cmd::say(
        "Seed 000: starting the GitHub simulator and three IBM Secrets Manager instances (dev, stage, prod)",
    );
    let gh = Sim::start_provider(keycycle, "github")?;
    let sm = Sim::start_provider(keycycle, "ibm-sm")?;
    let mut instances = vec![sm.url().to_owned()];
    for name in &ENVS[1..] {
        let started = sm.control("/instances", json!({ "name": name }))?;
        instances.push(
            started["base_url"]
                .as_str()
                .context("the new instance has no base_url")?
                .to_owned(),
        );
    }
    cmd::note(&format!(
        "GitHub on {}; Secrets Manager {}",
        gh.url(),
        instances.join(", ")
    ));

    cmd::say(
        "Seeding: the functional ID `aihelp`, its current tokens, and each environment's secret holding one",
    );
    gh.control("/users", json!({ "login": "aihelp" }))?;
    gh.control("/users", json!({ "login": "checker" }))?;
    let checker = value(
        &gh.control("/tokens", json!({ "login": "checker", "scopes": [] }))?,
        "token",
    )?;
    let mut old_pats = Vec::new();
    let api_key = random_token();
    sm.control("/api_keys", json!({ "apikey": api_key }))?;
    for (i, env_name) in ENVS.iter().enumerate() {
        let old = gh.control(
            "/tokens",
            json!({ "login": "aihelp", "note": format!("qa-analyzer-{env_name}"), "scopes": ["repo"] }),
        )?;
        let old_value = value(&old, "token")?;
        sm.control_at(
            &instances[i],
            "/secrets",
            json!({ "name": SECRET, "payload": old_value }),
        )?;
        old_pats.push(old["id"].as_u64().context("the token has no id")?);
    }

    cmd::say(
        "Granting github and ibm-sm-dev/stage/prod their hosts, and storing the API key and a checker token",
    );
    let mut config = format!(
        "
[plugins.github]
path = {gwasm}
hosts = [{gurl}]
secrets = {{ token = \"github/checker\" }}
config = {{ base_url = {gurl} }}
",
        gwasm = toml_string(plugins::wasm_path("github"))?,
        gurl = toml_string(gh.url())?,
    );
    for (i, env_name) in ENVS.iter().enumerate() {
        config.push_str(&format!(
            "
[plugins.ibm-sm-{env_name}]
path = {wasm}
hosts = [{url}, {iam}]
secrets = {{ api_key = \"ibm/api-key\" }}
config = {{ base_url = {url}, iam_url = {iam} }}
",
            wasm = toml_string(plugins::wasm_path("ibm_sm"))?,
            url = toml_string(&instances[i])?,
            iam = toml_string(sm.url())?,
        ));
    }
    env.append_config(&config)?;
    env.set_secret("github/checker", &checker)?;
    env.set_secret("ibm/api-key", &api_key)?;

    cmd::say(
        "The functional ID makes a new token per environment on GitHub's settings page (here, through the simulator)",
    );
    let expires = time::OffsetDateTime::now_utc() + time::Duration::days(90);
    let expires = expires
        .format(&time::format_description::well_known::Rfc3339)
        .context("cannot format the expiry")?;
    let mut inputs = Vec::new();
    let mut new_values = Vec::new();
    for env_name in ENVS {
        let token = gh.control(
            "/tokens",
            json!({ "login": "aihelp", "note": format!("qa-analyzer-{env_name}"), "scopes": ["repo"], "expires_at": expires }),
        )?;
        let new_value = value(&token, "token")?;
        let file = env.dir().join(format!("pat-{env_name}.txt"));
        std::fs::write(&file, &new_value).context("cannot write the pasted token's file")?;
        inputs.push(format!("pat_{env_name}=@{}", file.display()));
        new_values.push(new_value);
    }
    let base = [
        "run",
        "github-pat-to-ibm-sm",
        "--set",
        &format!("secret={SECRET}"),
        "--set",
        "functional_id=aihelp",
        "--set",
        "note=qa-analyzer",
        // The demo does not wait an hour for External Secrets.
        "--set",
        "propagation_delay=0",
    ];
    let pasted: Vec<String> = inputs
        .iter()
        .flat_map(|i| ["--input".to_owned(), i.clone()])
        .collect();

    cmd::say(
        "Rehearsing with --dry-run: every environment is read, nothing changes, no change request is made",
    );
    cmd::run(env.keycycle().args(base).args(&pasted).arg("--dry-run"))?;

    cmd::say("Rotating: dev now; stage and prod stop at one change request");
    let run_id = stops_with(
        env.keycycle()
            .args(base)
            .args(&pasted[..2])
            .env("KEYCYCLE_DEBUG_USER", "operator"),
        10,
    )?;
    cmd::run(env.keycycle().args(["approvals"]))?;
    cmd::say("Another person approves the change request");
    cmd::run(
        env.keycycle()
            .args([
                "approve",
                &format!("{run_id}:stage-prod"),
                "--comment",
                "CHG0042 approved in CAB",
            ])
            .env("KEYCYCLE_DEBUG_USER", "cab-approver"),
    )?;
    cmd::say("Resuming: stage and prod rotated; then the run asks for the old tokens' deletion");
    stops_with(
        env.keycycle()
            .args(["resume", &run_id])
            .args(&pasted[2..])
            .env("KEYCYCLE_DEBUG_USER", "operator"),
        6,
    )?;
    cmd::say("The functional ID deletes the old tokens in GitHub (here, through the simulator)");
    for id in &old_pats {
        gh.control(&format!("/tokens/{id}/revoke"), json!({}))?;
    }
    let done = json_run(
        env.keycycle()
            .args(["resume", &run_id])
            .args([
                "--input",
                "old_pat_deleted_dev=yes",
                "--input",
                "old_pat_deleted_stage=yes",
            ])
            .args(["--input", "old_pat_deleted_prod=yes"])
            .env("KEYCYCLE_DEBUG_USER", "operator"),
    )?;
    if done["result"]["old_tokens_still_valid"] != json!([]) {
        bail!(
            "GitHub still accepts an old token: {}",
            done["result"]["old_tokens_still_valid"]
        );
    }
    cmd::say("keycycle cleanup removes the renamed old values, now due");
    cmd::run(env.keycycle().args(["cleanup"]))?;

    cmd::say("Every environment's true state (from the simulators; values compared, not shown)");
    for (i, env_name) in ENVS.iter().enumerate() {
        let state = sm.state_at(&instances[i])?;
        let secrets = state["secrets"].as_array().cloned().unwrap_or_default();
        let [only] = secrets.as_slice() else {
            bail!("{env_name}: expected one secret, found {}", secrets.len());
        };
        if only["name"] != SECRET {
            bail!(
                "{env_name}: the secret left is {}, not {SECRET}",
                only["name"]
            );
        }
        let current = only["versions"]
            .as_array()
            .and_then(|v| v.last())
            .map(|v| v["value"].clone())
            .unwrap_or(Value::Null);
        if current != new_values[i].as_str() {
            bail!("{env_name}: {SECRET} does not hold the new token");
        }
        cmd::note(&format!(
            "{env_name}: {SECRET} holds the new token (secret {}); the renamed old value is gone",
            only["id"].as_str().unwrap_or_default()
        ));
    }
    cmd::note(
        "the old tokens are refused by GitHub; the change request's approval is in the run's audit trail",
    );
    gh.stop()?;
    sm.stop()?;
    Ok(())
}

fn value(v: &Value, key: &str) -> Result<String> {
    v[key]
        .as_str()
        .or_else(|| v["value"].as_str())
        .map(str::to_owned)
        .with_context(|| format!("the simulator's answer has no {key}"))
}
