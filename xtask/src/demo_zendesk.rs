//! The seed-002 part of `cargo xtask demo`: the team's Zendesk and GitLab
//! procedures with the repository's runbooks against the Zendesk and GitLab
//! simulators. An API token's consumers move to a scoped OAuth token and
//! the API token is retired; that OAuth token is then rotated, its webhook
//! replaced by a copy; an OAuth integration is checked against its access
//! request; and a pipeline trigger is replaced as a service bot into a
//! Zendesk app. The manual steps are answered as an operator would, doing
//! them through the simulators' control APIs, and the simulators' true
//! state is checked afterwards.

use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::demo::{DemoEnv, toml_string};
use crate::sim::Sim;
use crate::{cmd, plugins};

const ADMIN_SECRET: &str = "zendesk/admin";
const BOT_SECRET: &str = "gitlab/trigger-bot";
const DEPLOY_SECRET: &str = "zendesk/deploy-bot";
const HOOK_SECRET: &str = "gitlab/deploy-hook-secret";

/// What was seeded, by id.
struct Seeded {
    client: u64,
    api_token: u64,
    installation: u64,
    webhook: String,
    trigger_app: u64,
    project: u64,
    trigger: u64,
    bot: u64,
    hook: u64,
}

pub fn run(keycycle: &Path, env: &DemoEnv) -> Result<()> {
    cmd::say(
        "Seed 002: starting the Zendesk and GitLab simulators (documented APIs, state in memory only)",
    );
    let zd = Sim::start_provider(keycycle, "zendesk")?;
    let gl = Sim::start_provider(keycycle, "gitlab")?;
    cmd::note(&format!(
        "Zendesk listens on {}, GitLab on {}",
        zd.url(),
        gl.url()
    ));
    let seeded = seed(&zd, &gl, env)?;

    cmd::say("Which API tokens are left, and when each stops working (nothing is changed)");
    cmd::run(env.keycycle().args(["run", "zendesk-api-token-migrate"]))?;

    let migrate: Vec<String> = [
        format!("api_token_id={}", seeded.api_token),
        format!("client_id={}", seeded.client),
        "scopes=read".to_owned(),
        format!("apps={}:api_token", seeded.installation),
        format!("webhooks={}:basic_auth:zendesk", seeded.webhook),
        format!("store_as={DEPLOY_SECRET}"),
    ]
    .into_iter()
    .flat_map(|s| ["--set".to_owned(), s])
    .collect();
    cmd::say("Rehearsing the API token's migration with --dry-run");
    cmd::run(
        env.keycycle()
            .args(["run", "zendesk-api-token-migrate"])
            .args(&migrate)
            .arg("--dry-run"),
    )?;
    cmd::say(
        "Migrating for real: an OAuth token with the scope asked, every consumer moved and verified",
    );
    let run_id = stops_for_an_answer(
        env.keycycle()
            .args(["run", "zendesk-api-token-migrate"])
            .args(&migrate),
    )?;
    cmd::say(
        "The operator deactivates the API token in Admin Center (here, through the simulator)",
    );
    zd.control(
        &format!("/api_tokens/{}/deactivate", seeded.api_token),
        json!({}),
    )?;
    let again = stops_for_an_answer(env.keycycle().args([
        "resume",
        &run_id,
        "--input",
        "api_token_deactivated=yes",
    ]))?;
    cmd::say("The operator deletes it in Admin Center");
    zd.delete(&format!("/api_tokens/{}", seeded.api_token))?;
    let migrated =
        json_run(
            env.keycycle()
                .args(["resume", &again, "--input", "api_token_deleted=yes"]),
        )?;
    let oauth_id = migrated["result"]["new_id"]
        .as_u64()
        .context("the migration's result has no new_id")?;

    cmd::say(
        "Rotating that OAuth token: a new one for the same client and scopes; the webhook replaced by a copy",
    );
    let rotate: Vec<String> = [
        format!("token_id={oauth_id}"),
        format!("apps={}:api_token", seeded.installation),
        format!("webhooks={}:basic_auth:zendesk", seeded.webhook),
        "webhook_method=recreate".to_owned(),
        format!("store_as={DEPLOY_SECRET}"),
    ]
    .into_iter()
    .flat_map(|s| ["--set".to_owned(), s])
    .collect();
    cmd::run(
        env.keycycle()
            .args(["run", "zendesk-oauth-token"])
            .args(&rotate)
            .arg("--dry-run"),
    )?;
    let rotated = json_run(
        env.keycycle()
            .args(["run", "zendesk-oauth-token"])
            .args(&rotate),
    )?;
    let rotated_id = rotated["result"]["new_id"]
        .as_u64()
        .context("the rotation's result has no new_id")?;

    cmd::say(
        "An OAuth integration after its access request: the manual steps are answered, the granted scopes checked",
    );
    let scopes = env.dir().join("REQ-1042-scopes.txt");
    std::fs::write(&scopes, "read\n").context("cannot write the access request's scopes")?;
    let integrate = [
        "run".to_owned(),
        "zendesk-oauth-integration".to_owned(),
        "--set".to_owned(),
        "client=deploy_bot".to_owned(),
        "--set".to_owned(),
        "user=integration@acme.example".to_owned(),
        "--set".to_owned(),
        "request=REQ-1042".to_owned(),
        "--input".to_owned(),
        format!("approved_scopes=@{}", scopes.display()),
        "--plain-input".to_owned(),
        "approved_scopes".to_owned(),
        "--input".to_owned(),
        "okta_removed=yes".to_owned(),
    ];
    let flow = stops_for_an_answer(env.keycycle().args(&integrate))?;
    cmd::say(
        "The integration user runs the application's OAuth flow (here, through the simulator)",
    );
    let user = id(&zd.control("/users", json!({"email": "integration@acme.example"}))?)?;
    let granted = zd.control(
        "/oauth/tokens",
        json!({"client_id": seeded.client, "user_id": user, "scopes": ["read"]}),
    )?;
    let granted = id(&granted)?;
    cmd::run(env.keycycle().args([
        "resume",
        &flow,
        "--input",
        "oauth_flow_done=yes",
        "--input",
        "logged_out=yes",
        "--input",
        "okta_restored=yes",
    ]))?;

    cmd::say(
        "A pipeline trigger replaced as the service bot, into a Zendesk app (\"INSTANCE - NAME_OF_APP\")",
    );
    let trigger: Vec<String> = [
        "project=acme/api".to_owned(),
        format!("trigger_id={}", seeded.trigger),
        "kind=zendesk-app".to_owned(),
        "target=Zendesk Global - Deploy Bot".to_owned(),
        format!("apps={}:trigger_token", seeded.trigger_app),
        "plugin=gitlab-bot".to_owned(),
        "as_bot=true".to_owned(),
    ]
    .into_iter()
    .flat_map(|s| ["--set".to_owned(), s])
    .collect();
    cmd::run(
        env.keycycle()
            .args(["run", "gitlab-trigger-token"])
            .args(&trigger)
            .arg("--dry-run"),
    )?;
    cmd::run(
        env.keycycle()
            .args(["run", "gitlab-trigger-token"])
            .args(&trigger),
    )?;

    cmd::say(
        "A GitLab webhook's secret token by delete-and-create, as the page prescribes: every setting copied, then tested",
    );
    let hook: Vec<String> = [
        "project=acme/api".to_owned(),
        format!("hook_id={}", seeded.hook),
        "method=recreate".to_owned(),
        format!("store_as={HOOK_SECRET}"),
        "plugin=gitlab-bot".to_owned(),
    ]
    .into_iter()
    .flat_map(|s| ["--set".to_owned(), s])
    .collect();
    cmd::run(
        env.keycycle()
            .args(["run", "gitlab-webhook-secret"])
            .args(&hook)
            .arg("--dry-run"),
    )?;
    cmd::run(
        env.keycycle()
            .args(["run", "gitlab-webhook-secret"])
            .args(&hook),
    )?;

    cmd::say("Zendesk's and GitLab's true state (from the simulators; values compared, not shown)");
    check(
        &zd.state()?,
        &gl.state()?,
        &seeded,
        oauth_id,
        rotated_id,
        granted,
    )?;
    zd.stop()?;
    gl.stop()?;
    Ok(())
}

/// Seeds both simulators and writes the plugins' config and secrets.
fn seed(zd: &Sim, gl: &Sim, env: &DemoEnv) -> Result<Seeded> {
    cmd::say(
        "Seeding Zendesk: an admin with an OAuth token, an API token that an app and a webhook hold",
    );
    let admin = id(&zd.control(
        "/users",
        json!({"email": "ops@acme.example", "admin": true}),
    )?)?;
    let client = id(&zd.control(
        "/oauth/clients",
        json!({"name": "Deploy Bot", "identifier": "deploy_bot", "user_id": admin}),
    )?)?;
    let admin_token = zd.control(
        "/oauth/tokens",
        json!({"client_id": client, "user_id": admin, "scopes": ["read", "write"]}),
    )?;
    let api_token = zd.control(
        "/api_tokens",
        json!({"user_id": admin, "description": "https://gitlab.example.com/acme/deploy"}),
    )?;
    let api_value = value(&api_token)?;
    let installation = id(&zd.control(
        "/installations",
        json!({"app_id": 42, "settings": {"api_token": api_value, "subdomain": "acme"}, "secure": ["api_token"]}),
    )?)?;
    let webhook = zd.control(
        "/webhooks",
        json!({"created_by": admin, "name": "Deploy hook", "endpoint": "https://deploy.acme.example/zendesk",
               "subscriptions": ["conditional_ticket_events"],
               "authentication": {"type": "basic_auth", "data": {"username": "zendesk", "password": api_value},
                                  "add_position": "header"}}),
    )?;
    let webhook = webhook["id"]
        .as_str()
        .context("the seeded webhook has no id")?
        .to_owned();

    cmd::say(
        "Seeding GitLab: acme/api with a service bot (a project access token) that owns a trigger a Zendesk app holds",
    );
    let project = id(&gl.control("/projects", json!({"path": "acme/api"}))?)?;
    let bot = gl.control(
        "/tokens",
        json!({"project_id": project, "name": "trigger-bot", "scopes": ["api"]}),
    )?;
    let bot_user = bot["user_id"]
        .as_u64()
        .context("the bot token has no user_id")?;
    let trigger = gl.control(
        &format!("/projects/{project}/triggers"),
        json!({"owner_id": bot_user, "description": "Zendesk Global - Deploy Bot"}),
    )?;
    let trigger_value = trigger["token"]
        .as_str()
        .context("the seeded trigger has no token")?
        .to_owned();
    let trigger_app = id(&zd.control(
        "/installations",
        json!({"app_id": 43, "settings": {"trigger_token": trigger_value, "project": "acme/api"},
               "secure": ["trigger_token"]}),
    )?)?;

    let hook = id(&gl.control(
        &format!("/projects/{project}/hooks"),
        json!({"url": "https://deploy.acme.example/gitlab", "name": "Deploy",
               "events": {"push_events": true, "pipeline_events": true, "tag_push_events": false},
               "push_events_branch_filter": "main"}),
    )?)?;
    cmd::note(&format!(
        "webhook {hook} of acme/api (push and pipeline events, branch main)"
    ));

    cmd::say(
        "Granting the zendesk plugin this Zendesk, and gitlab-bot this GitLab with the bot's token",
    );
    env.append_config(&format!(
        "
[plugins.zendesk]
path = {zwasm}
hosts = [{zurl}]
secrets = {{ token = {admin} }}
config = {{ base_url = {zurl} }}

[plugins.gitlab-bot]
path = {gwasm}
hosts = [{gurl}]
secrets = {{ token = {bot} }}
config = {{ base_url = {gurl} }}

[runbooks.zendesk-api-token-migrate]
secrets = [{deploy}]
[runbooks.zendesk-oauth-token]
secrets = [{deploy}]
[runbooks.gitlab-webhook-secret]
secrets = [{hook}]
",
        zwasm = toml_string(plugins::wasm_path("zendesk"))?,
        gwasm = toml_string(plugins::wasm_path("gitlab"))?,
        zurl = toml_string(zd.url())?,
        gurl = toml_string(gl.url())?,
        admin = toml_string(ADMIN_SECRET)?,
        bot = toml_string(BOT_SECRET)?,
        deploy = toml_string(DEPLOY_SECRET)?,
        hook = toml_string(HOOK_SECRET)?,
    ))?;
    env.set_secret(ADMIN_SECRET, &value(&admin_token)?)?;
    env.set_secret(
        BOT_SECRET,
        bot["token"]
            .as_str()
            .context("the bot token has no value")?,
    )?;
    Ok(Seeded {
        client,
        api_token: id(&api_token)?,
        installation,
        webhook,
        trigger_app,
        project,
        trigger: id(&trigger)?,
        bot: bot_user,
        hook,
    })
}

/// Runs a command that must stop for an answer (exit code 6) and returns
/// the id of the run it left waiting.
fn stops_for_an_answer(command: &mut Command) -> Result<String> {
    stops_with(command, 6)
}

/// Runs a command that must stop with exit `code` (6: an answer; 10: an
/// approval) and returns the id of the run it left waiting.
pub fn stops_with(command: &mut Command, code: i32) -> Result<String> {
    let report = json_report(command.args(["--output", "json"]))?;
    if report.0 != Some(code) {
        bail!(
            "`{}` was to stop with exit {code}, but it exited with {:?}",
            cmd::shown(command),
            report.0
        );
    }
    cmd::note("the run waits for people; it goes on with `keycycle resume`");
    report.1["run_id"]
        .as_str()
        .map(str::to_owned)
        .context("the stopped run's report has no run_id")
}

/// Runs a command that must succeed and returns its JSON report.
pub fn json_run(command: &mut Command) -> Result<Value> {
    let (code, report) = json_report(command.args(["--output", "json"]))?;
    if code != Some(0) {
        bail!(
            "`{}` failed with {code:?}: {}",
            cmd::shown(command),
            report["error"]["message"]
        );
    }
    Ok(report)
}

fn json_report(command: &mut Command) -> Result<(Option<i32>, Value)> {
    command.stderr(Stdio::inherit());
    cmd::note(&format!("$ {}", cmd::shown(command)));
    let output = command
        .output()
        .with_context(|| format!("cannot start `{}`", cmd::shown(command)))?;
    let report = serde_json::from_slice(&output.stdout)
        .with_context(|| format!("`{}` did not print a JSON report", cmd::shown(command)))?;
    Ok((output.status.code(), report))
}

fn id(v: &Value) -> Result<u64> {
    v["id"]
        .as_u64()
        .with_context(|| format!("the simulator's answer has no id: {}", redacted(v)))
}

fn value(v: &Value) -> Result<String> {
    v["value"]
        .as_str()
        .map(str::to_owned)
        .context("the simulator's answer has no value")
}

/// A control answer without its values, for an error message.
fn redacted(v: &Value) -> Value {
    let mut v = v.clone();
    for key in ["value", "token", "secret"] {
        if v.get(key).is_some() {
            v[key] = json!("(hidden)");
        }
    }
    v
}

/// The seed's procedures all worked: the API token is gone and the OAuth
/// token that replaced it was rotated; the app and the webhook copy hold
/// the rotated token, which the store holds too; the integration's grant
/// is kept; the bot owns the one trigger, whose token the other app holds.
fn check(
    zd: &Value,
    gl: &Value,
    seeded: &Seeded,
    migrated: u64,
    rotated: u64,
    granted: u64,
) -> Result<()> {
    let list = |v: &Value, key: &str| v[key].as_array().cloned().unwrap_or_default();
    if list(zd, "api_tokens")
        .iter()
        .any(|t| t["id"] == seeded.api_token)
    {
        bail!("the API token {} still exists", seeded.api_token);
    }
    let tokens = list(zd, "oauth_tokens");
    let token = |id: u64| {
        tokens
            .iter()
            .find(|t| t["id"] == id)
            .cloned()
            .unwrap_or_default()
    };
    if token(migrated)["revoked"] != true {
        bail!("OAuth token {migrated}, rotated away, is not revoked");
    }
    let current = token(rotated);
    if current["usable"] != true {
        bail!("the rotated OAuth token {rotated} is not usable");
    }
    let installation = |id: u64| {
        list(zd, "installations")
            .into_iter()
            .find(|i| i["id"] == id)
            .unwrap_or_default()
    };
    if installation(seeded.installation)["settings"]["api_token"] != current["value"] {
        bail!("the app does not hold the rotated OAuth token");
    }
    let hooks: Vec<Value> = list(zd, "webhooks")
        .into_iter()
        .filter(|w| w["name"] == "Deploy hook")
        .collect();
    let [hook] = hooks.as_slice() else {
        bail!(
            "expected one webhook named Deploy hook, found {}",
            hooks.len()
        );
    };
    if hook["id"] == seeded.webhook.as_str()
        || hook["authentication"]["data"]["password"] != current["value"]
    {
        bail!("the webhook was not replaced by a copy holding the rotated token");
    }
    if token(granted)["usable"] != true {
        bail!("the integration's token {granted}, within its approved scopes, is not usable");
    }
    let triggers: Vec<Value> = list(gl, "triggers")
        .into_iter()
        .filter(|t| t["project_id"] == seeded.project)
        .collect();
    let [trigger] = triggers.as_slice() else {
        bail!("expected one trigger in acme/api, found {}", triggers.len());
    };
    if trigger["id"] == seeded.trigger || trigger["owner_id"] != seeded.bot {
        bail!("the trigger was not replaced by one the bot owns");
    }
    if installation(seeded.trigger_app)["settings"]["trigger_token"] != trigger["token"] {
        bail!("the Zendesk app does not hold the new trigger token");
    }
    let hooks: Vec<Value> = list(gl, "hooks")
        .into_iter()
        .filter(|h| h["project_id"] == seeded.project)
        .collect();
    let [copy] = hooks.as_slice() else {
        bail!("expected one webhook in acme/api, found {}", hooks.len());
    };
    if copy["id"] == seeded.hook
        || copy["url"] != "https://deploy.acme.example/gitlab"
        || copy["events"]["pipeline_events"] != true
        || copy["push_events_branch_filter"] != "main"
        || copy["token"].as_str().is_none_or(str::is_empty)
    {
        bail!("the GitLab webhook was not replaced by a copy with every setting and a token");
    }
    let delivered = list(gl, "hook_tests")
        .iter()
        .any(|t| t["hook_id"] == copy["id"] && t["token"] == copy["token"] && t["status"] == 200);
    if !delivered {
        bail!("no test delivery of the copy carried its new token");
    }
    cmd::note(&format!(
        "API token {} is gone; its consumers moved to OAuth token {migrated}",
        seeded.api_token
    ));
    cmd::note(&format!(
        "OAuth token {migrated} is revoked; {rotated} replaced it in the app, in webhook {} (a copy of {}) and in the store",
        hook["id"].as_str().unwrap_or_default(),
        seeded.webhook
    ));
    cmd::note(&format!(
        "the integration's token {granted} has only approved scopes and is kept"
    ));
    cmd::note(&format!(
        "trigger {} is gone; trigger {}, owned by the service bot, is in the Zendesk app",
        seeded.trigger, trigger["id"]
    ));
    cmd::note(&format!(
        "GitLab webhook {} was deleted; {}, its copy with every setting, has the new secret token, and its test delivery carried it",
        seeded.hook, copy["id"]
    ));
    Ok(())
}
