//! The GitLab part of `cargo xtask demo`: rotate a personal access token
//! with the repository's `gitlab-personal-token` runbook against the GitLab
//! simulator, handing the new value to a CI/CD variable, then check the
//! simulator's true state: one active token, the old one revoked, the
//! variable and the store holding the new value.

use std::path::Path;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::demo::{DemoEnv, toml_string};
use crate::sim::Sim;
use crate::{cmd, plugins};

const TOKEN_SECRET: &str = "gitlab/ops";

pub fn run(keycycle: &Path, env: &DemoEnv) -> Result<()> {
    cmd::say(
        "Starting the GitLab simulator (GitLab's REST API as documented, state in memory only)",
    );
    let sim = Sim::start_provider(keycycle, "gitlab")?;
    cmd::note(&format!("GitLab listens on {}", sim.url()));

    let (project, old_id) = prepare(&sim, env)?;

    let (runbook, args) = rotation_args();
    cmd::say("Rehearsing the rotation with --dry-run: GitLab is read, nothing is changed");
    cmd::run(
        env.keycycle()
            .arg("run")
            .arg(&runbook)
            .args(args)
            .arg("--dry-run"),
    )?;

    cmd::say(
        "Rotating the token for real: consumers checked first, GitLab rotates, the new value is stored and applied, then verified",
    );
    cmd::run(env.keycycle().arg("run").arg(&runbook).args(args))?;

    cmd::say("The run's audit trail");
    cmd::run(env.keycycle().args(["history"]))?;

    cmd::say("GitLab's true state (from the simulator; values compared, not shown)");
    let state = sim.state()?;
    check(&state, old_id, project)?;
    sim.stop()?;
    Ok(())
}

/// Seeds user `ops`, project acme/deploy with a CI/CD variable holding
/// ops's token, grants the gitlab plugin this simulator, and stores the
/// token. Returns the project id and the token id.
pub fn prepare(sim: &Sim, env: &DemoEnv) -> Result<(u64, u64)> {
    cmd::say(
        "Seeding GitLab: user `ops`, Maintainer of acme/deploy, with a personal access token that a CI/CD variable holds",
    );
    let user = id(&sim.control("/users", json!({"username": "ops"}))?)?;
    let project = id(&sim.control("/projects", json!({"path": "acme/deploy"}))?)?;
    sim.control(
        &format!("/projects/{project}/members"),
        json!({"user_id": user, "access_level": 40}),
    )?;
    let seeded = sim.control(
        "/tokens",
        json!({"user_id": user, "name": "keycycle", "scopes": ["api"]}),
    )?;
    let old_id = id(&seeded)?;
    let old_value = seeded["token"]
        .as_str()
        .context("the seeded token has no value")?
        .to_owned();
    sim.control(
        &format!("/projects/{project}/variables"),
        json!({"key": "GITLAB_TOKEN", "value": old_value, "masked": true}),
    )?;
    cmd::note(&format!(
        "personal access token {old_id}; CI/CD variable GITLAB_TOKEN of acme/deploy holds it"
    ));

    cmd::say("Granting the gitlab plugin this GitLab only, and its token as `gitlab/ops`");
    env.append_config(&format!(
        "
[plugins.gitlab]
path = {wasm}
hosts = [{url}]
secrets = {{ token = {secret} }}
config = {{ base_url = {url} }}

[runbooks.gitlab-personal-token]
secrets = [{secret}]
",
        wasm = toml_string(plugins::wasm_path("gitlab"))?,
        url = toml_string(sim.url())?,
        secret = toml_string(TOKEN_SECRET)?,
    ))?;
    env.set_secret(TOKEN_SECRET, &old_value)?;

    Ok((project, old_id))
}

/// The runbook and its parameters, as the demo and the benchmark run it.
pub fn rotation_args() -> (std::path::PathBuf, [&'static str; 6]) {
    (
        cmd::repo_root().join("runbooks/gitlab-personal-token.rhai"),
        [
            "--set",
            "store_as=gitlab/ops",
            "--set",
            "variables=acme/deploy:GITLAB_TOKEN",
            "--set",
            "expires_in_days=90",
        ],
    )
}

fn id(v: &Value) -> Result<u64> {
    v["id"]
        .as_u64()
        .with_context(|| format!("the simulator's answer has no id: {v}"))
}

/// The rotation worked when the old token is revoked, exactly one token of
/// its family is active, and the variable holds that token's value.
fn check(state: &Value, old_id: u64, project: u64) -> Result<()> {
    let tokens = state["tokens"]
        .as_array()
        .context("no tokens in the state")?;
    let old = tokens
        .iter()
        .find(|t| t["id"] == old_id)
        .context("the old token is gone")?;
    let family = &old["family_id"];
    let active: Vec<&Value> = tokens
        .iter()
        .filter(|t| &t["family_id"] == family && t["active"] == true)
        .collect();
    for t in tokens.iter().filter(|t| &t["family_id"] == family) {
        cmd::note(&format!(
            "token {:>3}  {:<8} expires {}",
            t["id"],
            if t["active"] == true {
                "active"
            } else {
                "revoked"
            },
            t["expires_at"].as_str().unwrap_or("never")
        ));
    }
    if old["revoked"] != true {
        bail!("the old token {old_id} is not revoked");
    }
    let [new] = active.as_slice() else {
        bail!(
            "expected exactly one active token in the family, found {}",
            active.len()
        );
    };
    let variable = state["variables"]
        .as_array()
        .and_then(|vs| {
            vs.iter()
                .find(|v| v["project_id"] == project && v["key"] == "GITLAB_TOKEN")
        })
        .context("the variable is gone")?;
    if variable["value"] != new["value"] {
        bail!("the CI/CD variable does not hold the new token");
    }
    cmd::note(&format!(
        "rotated: token {old_id} is revoked, token {} is the only active one, and GITLAB_TOKEN holds it",
        new["id"]
    ));
    Ok(())
}
