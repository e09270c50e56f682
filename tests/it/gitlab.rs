//! GitLab, end to end: the repository's rotation runbooks run by the real
//! binary with the real gitlab plugin against the GitLab simulator, and the
//! simulator's true state is checked afterwards.

use crate::support::*;
use keycycle_sim::{FailRule, HookSeed, TokenSeed, VariableSeed};

/// The active tokens of the family a token belongs to.
fn active_in_family(sim: &GitLabSim, token_id: u64) -> Vec<keycycle_sim::TokenState> {
    let snap = sim.state.snapshot();
    let family = snap.token(token_id).unwrap().family_id;
    snap.family(family)
        .into_iter()
        .filter(|t| t.active)
        .cloned()
        .collect()
}

fn variable_value(sim: &GitLabSim, project: u64, key: &str) -> String {
    sim.state
        .snapshot()
        .variable(project, key, "*")
        .unwrap()
        .value
        .expose()
        .to_owned()
}

#[test]
fn personal_token_self_rotation_reaches_every_consumer() {
    let sim = GitLabSim::start();
    let ws = gitlab_workspace(&sim);
    let old = sim.ops_token.token.expose().to_owned();
    sim.state
        .add_variable(sim.deploy, VariableSeed::new("GITLAB_TOKEN", &old).masked())
        .unwrap();
    let hook = sim
        .state
        .add_hook(
            sim.receiver,
            HookSeed::new("https://hooks.example/ci").token(&old),
        )
        .unwrap();

    // The run may cross midnight UTC: the expiry it asks for is 45 days
    // after the day it started or the day it ended.
    let first_day = sim.state.today();
    let run = ws.run(&[
        "run",
        "gitlab-personal-token",
        "--output",
        "json",
        "--set",
        "store_as=gitlab/ops",
        "--set",
        "expires_in_days=45",
        "--set",
        "variables=acme/deploy:GITLAB_TOKEN",
        "--set",
        &format!("hooks=acme/receiver:{hook}"),
    ]);
    let last_day = sim.state.today();
    run.assert_ok();
    let result = run.json()["result"].clone();
    let new_id = result["new_id"].as_u64().unwrap();
    assert_ne!(new_id, sim.ops_token.id, "rotation gives a new id");

    // Exactly one active token in the family: the new one.
    let active = active_in_family(&sim, sim.ops_token.id);
    assert_eq!(active.len(), 1);
    assert_eq!(active[0].id, new_id);
    let snap = sim.state.snapshot();
    assert!(
        snap.token(sim.ops_token.id).unwrap().revoked,
        "the old token is revoked"
    );
    let new_value = active[0].value.expose().to_owned();
    plant(&new_value);
    // Every consumer holds the new value.
    assert_eq!(variable_value(&sim, sim.deploy, "GITLAB_TOKEN"), new_value);
    assert_eq!(
        snap.hook(hook).unwrap().token.as_ref().unwrap().expose(),
        new_value
    );
    // The new expiry is the one asked for.
    let expires = active[0].expires_at.expect("the new token expires");
    let earliest = first_day + time::Duration::days(45);
    let latest = last_day + time::Duration::days(45);
    assert!(
        earliest <= expires && expires <= latest,
        "expires {expires}, expected between {earliest} and {latest}"
    );
    assert_eq!(result["expires_at"], expires.to_string());

    // The store holds the new token: the plugin keeps working with it, and
    // nothing touched the revoked one (which would revoke the family).
    ws.runbook("after", "plugin(\"gitlab\").whoami().username\n");
    let after = ws.run(&["run", "runbooks/after.rhai", "--output", "json"]);
    after.assert_ok();
    assert_eq!(after.json()["result"], "ops");
    assert_eq!(active_in_family(&sim, sim.ops_token.id).len(), 1);
    ws.assert_files_clean_including(&["state/state.db", "state/secrets.json"]);
}

#[test]
fn personal_token_rotation_by_id_with_an_environment_scoped_variable() {
    let sim = GitLabSim::start();
    let ws = gitlab_workspace(&sim);
    let other = sim
        .state
        .add_token(TokenSeed::personal(sim.ops, "ci-reader").value(&canary("glpat-")))
        .unwrap();
    sim.state
        .add_variable(
            sim.deploy,
            VariableSeed::new("READER", other.token.expose()).scope("production"),
        )
        .unwrap();
    sim.state
        .add_variable(
            sim.deploy,
            VariableSeed::new("READER", "staging-value-untouched").scope("staging"),
        )
        .unwrap();
    let run = ws.run(&[
        "run",
        "gitlab-personal-token",
        "--output",
        "json",
        "--set",
        &format!("token_id={}", other.id),
        "--set",
        "store_as=gitlab/kept",
        "--set",
        "variables=acme/deploy:READER@production",
    ]);
    run.assert_ok();
    let new_id = run.json()["result"]["new_id"].as_u64().unwrap();
    let active = active_in_family(&sim, other.id);
    assert_eq!(active.iter().map(|t| t.id).collect::<Vec<_>>(), [new_id]);
    plant(active[0].value.expose());
    let snap = sim.state.snapshot();
    assert_eq!(
        snap.variable(sim.deploy, "READER", "production")
            .unwrap()
            .value
            .expose(),
        active[0].value.expose()
    );
    assert_eq!(
        snap.variable(sim.deploy, "READER", "staging")
            .unwrap()
            .value
            .expose(),
        "staging-value-untouched"
    );
    // The plugin's own token was not touched.
    assert!(snap.token(sim.ops_token.id).unwrap().active);
}

#[test]
fn project_token_rotation() {
    let sim = GitLabSim::start();
    let ws = gitlab_workspace(&sim);
    let bot = sim.seed_project_token();
    let run = ws.run(&[
        "run",
        "gitlab-project-token",
        "--output",
        "json",
        "--set",
        "owner=acme/api",
        "--set",
        &format!("token_id={}", bot.id),
        "--set",
        "store_as=gitlab/kept",
        "--set",
        "variables=acme/deploy:API_TOKEN",
    ]);
    run.assert_ok();
    let new_id = run.json()["result"]["new_id"].as_u64().unwrap();
    let active = active_in_family(&sim, bot.id);
    assert_eq!(active.iter().map(|t| t.id).collect::<Vec<_>>(), [new_id]);
    plant(active[0].value.expose());
    assert!(sim.state.snapshot().token(bot.id).unwrap().revoked);
    assert_eq!(
        variable_value(&sim, sim.deploy, "API_TOKEN"),
        active[0].value.expose()
    );
}

#[test]
fn trigger_token_replacement_deletes_the_old_trigger_last() {
    let sim = GitLabSim::start();
    let ws = gitlab_workspace(&sim);
    let old = sim.seed_trigger("deploy-docs");
    sim.state
        .add_variable(
            sim.deploy,
            VariableSeed::new("API_TRIGGER", old.token.expose()).masked(),
        )
        .unwrap();
    let run = ws.run(&[
        "run",
        "gitlab-trigger-token",
        "--output",
        "json",
        "--set",
        "project=acme/api",
        "--set",
        &format!("trigger_id={}", old.id),
        "--set",
        "kind=ci-job",
        "--set",
        "target=deploy-docs",
        "--set",
        "variables=acme/deploy:API_TRIGGER",
    ]);
    run.assert_ok();
    let new_id = run.json()["result"]["new_id"].as_u64().unwrap();
    let snap = sim.state.snapshot();
    assert!(snap.trigger(old.id).is_none(), "the old trigger is deleted");
    let triggers: Vec<_> = snap
        .triggers
        .iter()
        .filter(|t| t.project_id == sim.api)
        .collect();
    assert_eq!(triggers.len(), 1, "one trigger remains");
    assert_eq!(triggers[0].id, new_id);
    assert!(
        triggers[0].description.starts_with("deploy-docs"),
        "{}",
        triggers[0].description
    );
    plant(triggers[0].token.expose());
    assert_eq!(
        variable_value(&sim, sim.deploy, "API_TRIGGER"),
        triggers[0].token.expose()
    );
    // The delete came after the consumer was written.
    let changes = sim.changes();
    let put = changes
        .iter()
        .position(|c| c.starts_with("PUT") && c.contains("API_TRIGGER"))
        .unwrap();
    let delete = changes
        .iter()
        .position(|c| c.starts_with("DELETE"))
        .unwrap();
    assert!(put < delete, "{changes:?}");
}

#[test]
fn trigger_descriptions_follow_the_naming_rules() {
    let sim = GitLabSim::start();
    let ws = gitlab_workspace(&sim);
    let old = sim.seed_trigger("x");
    let run = ws.run(&[
        "run",
        "gitlab-trigger-token",
        "--set",
        "project=acme/api",
        "--set",
        &format!("trigger_id={}", old.id),
        "--set",
        "kind=zendesk-app",
        "--set",
        "target=Deploy App",
    ]);
    run.assert_code(5).stderr_has("INSTANCE - NAME_OF_APP");
    assert!(sim.changes().is_empty());
}

#[test]
fn webhook_secret_reaches_hook_and_receiver() {
    let sim = GitLabSim::start();
    let ws = gitlab_workspace(&sim);
    let hook = sim
        .state
        .add_hook(
            sim.api,
            HookSeed::new("https://receiver.example/hook").token("old-hook-secret-1"),
        )
        .unwrap();
    sim.state
        .add_variable(
            sim.receiver,
            VariableSeed::new("WEBHOOK_SECRET", "old-hook-secret-1").masked(),
        )
        .unwrap();
    let run = ws.run(&[
        "run",
        "gitlab-webhook-secret",
        "--set",
        "project=acme/api",
        "--set",
        &format!("hook_id={hook}"),
        "--set",
        "variables=acme/receiver:WEBHOOK_SECRET",
        "--set",
        "store_as=gitlab/kept",
    ]);
    run.assert_ok();
    let snap = sim.state.snapshot();
    let h = snap.hook(hook).unwrap();
    let token = h.token.as_ref().unwrap().expose().to_owned();
    plant(&token);
    assert_eq!(token.len(), 64);
    assert_ne!(token, "old-hook-secret-1");
    assert_eq!(
        h.url, "https://receiver.example/hook",
        "the URL was sent back unchanged"
    );
    assert_eq!(variable_value(&sim, sim.receiver, "WEBHOOK_SECRET"), token);
}

/// A webhook of acme/api with every setting away from GitLab's defaults,
/// its token planted, and the receiver's masked variable holding it.
fn seed_full_hook(sim: &GitLabSim) -> (u64, String) {
    let old = canary("hook-");
    let hook = sim
        .state
        .add_hook(
            sim.api,
            HookSeed::new("https://receiver.example/hook")
                .token(&old)
                .name("deploys")
                .description("tells the deployer")
                .event("push_events", false)
                .event("pipeline_events", true)
                .event("tag_push_events", true)
                .event("enable_ssl_verification", false)
                .branch_filter("release/.*", "regex")
                .template(r#"{"kind":"{{object_kind}}"}"#),
        )
        .unwrap();
    sim.state
        .add_variable(
            sim.receiver,
            VariableSeed::new("WEBHOOK_SECRET", &old).masked(),
        )
        .unwrap();
    (hook, old)
}

fn recreate_args(hook: u64, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
        "run",
        "gitlab-webhook-secret",
        "--output",
        "json",
        "--set",
        "project=acme/api",
        "--set",
        &format!("hook_id={hook}"),
        "--set",
        "method=recreate",
        "--set",
        "test_trigger=pipeline_events",
        "--set",
        "variables=acme/receiver:WEBHOOK_SECRET",
        "--set",
        "store_as=gitlab/kept",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    args
}

#[test]
fn webhook_recreation_copies_every_setting_with_the_new_token() {
    let sim = GitLabSim::start();
    let ws = gitlab_workspace(&sim);
    let (hook, old) = seed_full_hook(&sim);
    let before = sim.state.snapshot();
    let old_settings = before.hook(hook).unwrap().settings();

    // A dry run reads, checks and changes nothing.
    let args = recreate_args(hook, &["--dry-run"]);
    let dry = ws.run(&args.iter().map(String::as_str).collect::<Vec<_>>());
    dry.assert_ok();
    assert!(sim.changes().is_empty(), "{:?}", sim.changes());
    let after_dry = sim.state.snapshot();
    assert_eq!(after_dry.hooks, before.hooks, "the dry run changed a hook");
    assert_eq!(after_dry.variables, before.variables);
    assert!(after_dry.hook_tests.is_empty(), "the dry run sent a test");
    assert!(!ws.stored_secrets().contains_key("gitlab/kept"));

    let args = recreate_args(hook, &[]);
    let run = ws.run(&args.iter().map(String::as_str).collect::<Vec<_>>());
    run.assert_ok();
    let snap = sim.state.snapshot();
    assert!(snap.hook(hook).is_none(), "the old hook is deleted");
    let hooks = snap.project_hooks(sim.api);
    assert_eq!(hooks.len(), 1, "exactly one hook: {hooks:?}");
    let new = hooks[0];
    let value = new.token.as_ref().expect("the copy has a token").expose();
    plant(value);
    assert_clean("stdout of the run", &run.stdout);
    assert_clean("stderr of the run", &run.stderr);
    assert_ne!(value, old);
    assert_eq!(value.len(), 64);
    assert_eq!(new.settings(), old_settings, "every setting was copied");
    assert!(variable_value(&sim, sim.receiver, "WEBHOOK_SECRET") == value);
    assert!(ws.stored_secrets().get("gitlab/kept").map(String::as_str) == Some(value));

    // GitLab's test delivery reached the copy's URL with the new token.
    let tests = sim.state.hook_tests();
    assert_eq!(tests.len(), 1, "{tests:?}");
    assert_eq!(tests[0].hook_id, new.id);
    assert_eq!(tests[0].url, "https://receiver.example/hook");
    assert_eq!(tests[0].trigger, "pipeline_events");
    assert!(tests[0].sent_token(value), "the test carried the new token");

    // The new id is the result, and the log says the id changed.
    let result = run.json()["result"].clone();
    assert_eq!(result["hook_id"], new.id, "{result}");
    assert_eq!(result["old_hook_id"], hook, "{result}");
    assert_eq!(result["method"], "recreate");
    run.stderr_has(&format!("the hook's id changed from {hook} to {}", new.id));
    ws.assert_files_clean_including(&["state/state.db", "state/secrets.json"]);
    ws.assert_files_lack("the new secret", &[value.to_owned()]);
}

#[test]
fn webhook_recreation_fails_naming_the_new_hook_when_the_receiver_refuses_the_test() {
    let sim = GitLabSim::start();
    let ws = gitlab_workspace(&sim);
    let (hook, _) = seed_full_hook(&sim);
    sim.state
        .set_endpoint_response("https://receiver.example/hook", 401, "bad X-Gitlab-Token");
    let args = recreate_args(hook, &[]);
    let run = ws.run(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let snap = sim.state.snapshot();
    let hooks = snap.project_hooks(sim.api);
    assert_eq!(hooks.len(), 1);
    plant(hooks[0].token.as_ref().unwrap().expose());
    assert_clean("stderr of the run", &run.stderr);
    run.assert_code(5)
        .stderr_has(&format!("re-created as webhook {}", hooks[0].id))
        .stderr_has("HTTP 422: bad X-Gitlab-Token")
        .stderr_has("X-Gitlab-Token");
}

#[test]
fn a_webhook_with_masked_parts_is_refused_before_any_change() {
    let sim = GitLabSim::start();
    let ws = gitlab_workspace(&sim);
    let old = canary("hook-");
    let hook = sim
        .state
        .add_hook(
            sim.api,
            HookSeed::new("https://receiver.example/{tenant}/hook")
                .token(&old)
                .url_variable("tenant", &canary("tenant-"))
                .custom_header("X-Receiver-Key", &canary("header-")),
        )
        .unwrap();
    sim.state
        .add_variable(
            sim.receiver,
            VariableSeed::new("WEBHOOK_SECRET", &old).masked(),
        )
        .unwrap();
    let before = sim.state.snapshot();
    let args = recreate_args(hook, &[]);
    let run = ws.run(&args.iter().map(String::as_str).collect::<Vec<_>>());
    run.assert_code(5)
        .stderr_has("nothing was changed")
        .stderr_has("URL variables (tenant)")
        .stderr_has("custom headers (X-Receiver-Key)")
        .stderr_has("method=update");
    assert!(sim.changes().is_empty(), "{:?}", sim.changes());
    let after = sim.state.snapshot();
    assert_eq!(after.hooks, before.hooks);
    assert_eq!(after.variables, before.variables);
    assert!(!ws.stored_secrets().contains_key("gitlab/kept"));
}

#[test]
fn dry_runs_change_nothing() {
    let sim = GitLabSim::start();
    let ws = gitlab_workspace(&sim);
    sim.state
        .add_variable(
            sim.deploy,
            VariableSeed::new("GITLAB_TOKEN", sim.ops_token.token.expose()),
        )
        .unwrap();
    let stored = ws.stored_secrets();
    assert!(
        stored["gitlab/ops"] == sim.ops_token.token.expose(),
        "the store holds the plugin's token before the dry run"
    );
    let run = ws.run(&[
        "run",
        "gitlab-personal-token",
        "--dry-run",
        "--set",
        "store_as=gitlab/ops",
        "--set",
        "variables=acme/deploy:GITLAB_TOKEN",
    ]);
    run.assert_ok()
        .stderr_has("would call gitlab.rotate_self")
        .stderr_has("would call gitlab.update_variable")
        .stderr_has("would store a new value for secret `gitlab/ops`");
    assert!(sim.changes().is_empty(), "{:?}", sim.changes());
    assert_eq!(
        active_in_family(&sim, sim.ops_token.id)[0].id,
        sim.ops_token.id
    );
    // The store still holds the old token, and nothing else was added.
    assert!(
        ws.stored_secrets() == stored,
        "the dry run changed the secrets store"
    );
}

#[test]
fn a_consumer_that_cannot_be_written_stops_the_rotation_before_it_starts() {
    let sim = GitLabSim::start();
    let ws = gitlab_workspace(&sim);
    // ops is only a Developer in this project: variables cannot be written.
    let other = sim
        .state
        .add_project(keycycle_sim::ProjectSeed {
            path: "acme/locked".into(),
            ..Default::default()
        })
        .unwrap();
    sim.state.add_project_member(other, sim.ops, 30).unwrap();
    sim.state
        .add_variable(other, VariableSeed::new("TOKEN", "whatever-value"))
        .unwrap();
    let run = ws.run(&[
        "run",
        "gitlab-personal-token",
        "--set",
        "store_as=gitlab/ops",
        "--set",
        "variables=acme/locked:TOKEN,acme/deploy:MISSING",
    ]);
    run.assert_code(5)
        .stderr_has("nothing was changed")
        .stderr_has("2 consumer(s) cannot be written")
        .stderr_has("TOKEN of project acme/locked")
        .stderr_has("MISSING of project acme/deploy");
    assert!(sim.changes().is_empty(), "{:?}", sim.changes());
    assert!(
        sim.state.snapshot().token(sim.ops_token.id).unwrap().active,
        "the token was not rotated"
    );
}

#[test]
fn a_value_that_cannot_be_masked_is_refused_before_anything_changes() {
    let sim = GitLabSim::start();
    let ws = gitlab_workspace(&sim);
    sim.state
        .add_variable(sim.deploy, VariableSeed::new("SHORT", "12345678").masked())
        .unwrap();
    ws.runbook(
        "mask",
        "let gl = plugin(\"gitlab\");\ngl.update_variable(#{ project: \"acme/deploy\", key: \"SHORT\", value: random_secret(2) });\n",
    );
    let run = ws.run(&["run", "runbooks/mask.rhai"]);
    run.assert_code(5)
        .stderr_has("SHORT")
        .stderr_has("mask.rhai:2");
    assert!(sim.changes().is_empty(), "{:?}", sim.changes());
}

/// The rotate POSTs GitLab received: each one may revoke the token, so no
/// retry may ever send one twice.
fn rotate_posts(sim: &GitLabSim) -> usize {
    sim.state
        .requests()
        .iter()
        .filter(|r| r.method == "POST" && r.path.ends_with("/rotate"))
        .count()
}

#[test]
fn a_429_storm_is_waited_out_and_said_in_the_log() {
    let sim = GitLabSim::start();
    let ws = gitlab_workspace(&sim);
    sim.state
        .add_variable(
            sim.deploy,
            VariableSeed::new("GITLAB_TOKEN", sim.ops_token.token.expose()),
        )
        .unwrap();
    sim.state.rate_limit(3, 1);
    let run = ws.run(&[
        "run",
        "gitlab-personal-token",
        "--set",
        "store_as=gitlab/ops",
        "--set",
        "variables=acme/deploy:GITLAB_TOKEN",
    ]);
    run.assert_ok().stderr_has("rate limit");
    assert_eq!(
        rotate_posts(&sim),
        1,
        "the rotation, which changes GitLab, was sent once"
    );
    let active = active_in_family(&sim, sim.ops_token.id);
    assert_eq!(active.len(), 1);
    plant(active[0].value.expose());
    assert_eq!(
        variable_value(&sim, sim.deploy, "GITLAB_TOKEN"),
        active[0].value.expose()
    );
}

#[test]
fn a_long_rate_limit_on_rotate_fails_clearly_and_rotates_nothing() {
    let sim = GitLabSim::start();
    let ws = gitlab_workspace(&sim);
    sim.state.fail(
        FailRule::new("POST", "/api/v4/personal_access_tokens/self/rotate", 429)
            .retry_after(600)
            .times(100),
    );
    let run = ws.run(&[
        "run",
        "gitlab-personal-token",
        "--set",
        "store_as=gitlab/ops",
    ]);
    run.assert_code(5)
        .stderr_has("rotate_self")
        .stderr_has("retry");
    assert_eq!(
        rotate_posts(&sim),
        1,
        "a rotation answered 429 is not sent again"
    );
    assert!(
        sim.state.snapshot().token(sim.ops_token.id).unwrap().active,
        "nothing was rotated"
    );
    assert_eq!(active_in_family(&sim, sim.ops_token.id).len(), 1);
}

#[test]
fn a_500_on_deleting_the_old_trigger_leaves_the_new_one_working() {
    let sim = GitLabSim::start();
    let ws = gitlab_workspace(&sim);
    let old = sim.seed_trigger("deploy-docs");
    sim.state
        .add_variable(
            sim.deploy,
            VariableSeed::new("API_TRIGGER", old.token.expose()),
        )
        .unwrap();
    sim.state.fail(
        FailRule::new(
            "DELETE",
            &format!("/api/v4/projects/{}/triggers/{}", sim.api, old.id),
            500,
        )
        .times(10),
    );
    let run = ws.run(&[
        "run",
        "gitlab-trigger-token",
        "--set",
        &format!("project={}", sim.api),
        "--set",
        &format!("trigger_id={}", old.id),
        "--set",
        "kind=ci-job",
        "--set",
        "target=deploy-docs",
        "--set",
        "variables=acme/deploy:API_TRIGGER",
    ]);
    run.assert_ok()
        .stderr_has("is in place and verified")
        .stderr_has(&format!("deleting the old trigger {} failed", old.id))
        .stderr_has("500")
        .stderr_has("keycycle cleanup");
    // The deletion is scheduled, not dropped.
    let pending = ws.run(&["pending", "--output", "json"]);
    pending.assert_ok();
    let actions = pending.json();
    assert_eq!(actions.as_array().unwrap().len(), 1, "{actions}");
    assert_eq!(actions[0]["call"], "gitlab.delete_trigger");
    let snap = sim.state.snapshot();
    assert!(
        snap.trigger(old.id).is_some(),
        "the old trigger is still there to delete later"
    );
    let new: Vec<_> = snap.triggers.iter().filter(|t| t.id != old.id).collect();
    assert_eq!(new.len(), 1);
    plant(new[0].token.expose());
    assert_eq!(
        variable_value(&sim, sim.deploy, "API_TRIGGER"),
        new[0].token.expose(),
        "the consumer holds the new token"
    );
}

#[test]
fn a_token_that_is_already_revoked_is_reported_and_not_rotated() {
    let sim = GitLabSim::start();
    let ws = gitlab_workspace(&sim);
    let dead = sim
        .state
        .add_token(
            TokenSeed::personal(sim.ops, "old-ci")
                .value(&canary("glpat-"))
                .revoked(),
        )
        .unwrap();
    let run = ws.run(&[
        "run",
        "gitlab-personal-token",
        "--set",
        &format!("token_id={}", dead.id),
        "--set",
        "store_as=gitlab/kept",
    ]);
    run.assert_code(5)
        .stderr_has("already revoked or expired")
        .stderr_has("keycycle secrets set");
    assert!(sim.changes().is_empty(), "{:?}", sim.changes());

    // When the plugin's own token is revoked, GitLab's 401 comes through.
    sim.state.revoke_token(sim.ops_token.id).unwrap();
    let run = ws.run(&[
        "run",
        "gitlab-personal-token",
        "--set",
        "store_as=gitlab/ops",
    ]);
    run.assert_code(5).stderr_has("401");
    assert!(sim.changes().is_empty());
}

#[test]
fn the_plugin_reaches_only_the_granted_origin() {
    let sim = GitLabSim::start();
    let elsewhere = DemoSim::start();
    let ws = gitlab_workspace(&sim);
    // Point the plugin at another server it was not granted.
    let text = std::fs::read_to_string(ws.path().join("keycycle.toml")).unwrap();
    let text = text.replace(
        &format!("config = {{ base_url = \"{}\" }}", sim.origin()),
        &format!("config = {{ base_url = \"{}\" }}", elsewhere.origin()),
    );
    std::fs::write(ws.path().join("keycycle.toml"), text).unwrap();
    ws.runbook("who", "plugin(\"gitlab\").whoami()\n");
    ws.run(&["run", "runbooks/who.rhai"])
        .assert_code(4)
        .stderr_has("not granted")
        .stderr_has(&elsewhere.origin().replace("http://", ""));
    assert!(
        elsewhere.state.requests().is_empty(),
        "nothing reached the other server"
    );
    assert!(sim.state.requests().is_empty());
}

#[test]
fn an_expiry_beyond_gitlabs_limit_is_refused_before_any_change() {
    let sim = GitLabSim::start();
    let ws = gitlab_workspace(&sim);
    let bot = sim.seed_project_token();
    let personal = [
        "gitlab-personal-token",
        "--set",
        "store_as=gitlab/ops",
        "--set",
        "expires_in_days=400",
    ];
    let owner = format!("token_id={}", bot.id);
    let project = [
        "gitlab-project-token",
        "--set",
        "owner=acme/api",
        "--set",
        &owner,
        "--set",
        "store_as=gitlab/kept",
        "--set",
        "expires_in_days=366",
    ];
    for args in [&personal[..], &project[..]] {
        for dry in [true, false] {
            let mut argv = vec!["run"];
            argv.extend_from_slice(args);
            if dry {
                argv.push("--dry-run");
            }
            ws.run(&argv)
                .assert_code(5)
                .stderr_has("nothing was changed")
                .stderr_has("365 days");
        }
    }
    assert!(sim.changes().is_empty(), "{:?}", sim.changes());
    let snap = sim.state.snapshot();
    assert!(snap.token(sim.ops_token.id).unwrap().active);
    assert!(snap.token(bot.id).unwrap().active);
    assert_eq!(active_in_family(&sim, bot.id).len(), 1);
    // Nothing was locked either: a run at the limit goes through.
    ws.run(&[
        "run",
        "gitlab-project-token",
        "--set",
        "owner=acme/api",
        "--set",
        &owner,
        "--set",
        "store_as=gitlab/kept",
        "--set",
        "expires_in_days=365",
    ])
    .assert_ok();
    assert!(sim.state.snapshot().token(bot.id).unwrap().revoked);
}

#[test]
fn log_lines_name_projects_by_their_path_not_its_url_encoding() {
    let sim = GitLabSim::start();
    let ws = gitlab_workspace(&sim);
    sim.state
        .add_variable(sim.deploy, VariableSeed::new("K", "some-value"))
        .unwrap();
    // One 500 makes the plugin log the request it sends again.
    sim.state.fail(FailRule::new(
        "GET",
        "/api/v4/projects/acme%2Fdeploy/variables/K",
        500,
    ));
    ws.runbook(
        "read",
        "let g = plugin(\"gitlab\");\nlet k = g.get_variable(#{ project: \"acme/deploy\", key: \"K\" }).key;\ng.update_variable(#{ project: \"acme/deploy\", key: \"K\", value: random_secret(16) });\nk\n",
    );
    let run = ws.run(&["run", "runbooks/read.rhai"]);
    run.assert_ok()
        .stderr_has("GET /projects/acme/deploy/variables/K")
        .stderr_has("500")
        .stderr_has("updated CI/CD variable `K` in project acme/deploy");
    assert!(
        !run.stderr.contains("%2F"),
        "a path is shown URL-encoded:\n{}",
        run.stderr
    );
    // The request itself went out encoded, as GitLab needs it.
    assert!(
        sim.state
            .requests()
            .iter()
            .any(|r| r.path == "/api/v4/projects/acme%2Fdeploy/variables/K")
    );
}

#[test]
fn a_project_bot_rotates_its_own_token_through_self_rotate() {
    let sim = GitLabSim::start();
    let ws = gitlab_workspace(&sim);
    let bot = sim
        .state
        .add_token(
            TokenSeed::project(sim.api, "api-bot")
                .value(&canary("glpat-"))
                .scopes(&["api"])
                .access_level(40),
        )
        .unwrap();
    // The plugin acts with the bot's token.
    ws.set_secret("gitlab/ops", bot.token.expose());
    let run = ws.run(&[
        "run",
        "gitlab-project-token",
        "--output",
        "json",
        "--set",
        "owner=acme/api",
        "--set",
        &format!("token_id={}", bot.id),
        "--set",
        "store_as=gitlab/ops",
    ]);
    run.assert_ok();
    let new_id = run.json()["result"]["new_id"].as_u64().unwrap();
    let active = active_in_family(&sim, bot.id);
    assert_eq!(active.iter().map(|t| t.id).collect::<Vec<_>>(), [new_id]);
    plant(active[0].value.expose());
    assert!(sim.state.snapshot().token(bot.id).unwrap().revoked);
    let rotations: Vec<String> = sim
        .changes()
        .into_iter()
        .filter(|c| c.ends_with("/rotate"))
        .collect();
    assert_eq!(
        rotations,
        ["POST /api/v4/projects/acme%2Fapi/access_tokens/self/rotate"]
    );
    assert_eq!(
        ws.stored_secrets()["gitlab/ops"],
        active[0].value.expose(),
        "the plugin's secret holds the bot's new token"
    );
}

#[test]
fn a_rotation_carried_out_but_answered_502_needs_attention_and_keeps_its_lock() {
    let sim = GitLabSim::start();
    let ws = gitlab_workspace(&sim);
    let old = sim.ops_token.token.expose().to_owned();
    sim.state
        .add_variable(sim.deploy, VariableSeed::new("GITLAB_TOKEN", &old))
        .unwrap();
    // GitLab rotates; the proxy in front loses the answer.
    sim.state.fail(
        FailRule::new("POST", "/api/v4/personal_access_tokens/self/rotate", 502).after_processing(),
    );
    let run = ws.run(&[
        "run",
        "gitlab-personal-token",
        "--set",
        "store_as=gitlab/ops",
        "--set",
        "variables=acme/deploy:GITLAB_TOKEN",
    ]);
    run.assert_code(9)
        .stderr_has("502")
        .stderr_has("outcome is unknown")
        .stderr_has("gitlab-adopt-token");
    assert_eq!(rotate_posts(&sim), 1, "the rotation was not sent again");
    assert!(
        sim.state
            .snapshot()
            .token(sim.ops_token.id)
            .unwrap()
            .revoked
    );

    let runs = ws.unfinished_runs();
    assert_eq!(runs.len(), 1, "{runs:#?}");
    assert_eq!(runs[0]["state"], "needs-attention", "{runs:#?}");
    assert_eq!(
        runs[0]["locks"],
        serde_json::json!([format!("gitlab:pat/{}", sim.ops_token.id)]),
        "the lock is kept"
    );
    let run_id = runs[0]["run_id"].as_str().unwrap().to_owned();
    assert!(
        run.stderr
            .contains(&format!("keycycle resume {run_id} --retry-in-flight")),
        "the advice names the run:\n{}",
        run.stderr
    );
    // A resume faces the same question rather than carrying on.
    ws.run(&["resume", &run_id])
        .assert_code(9)
        .stderr_has("gitlab-adopt-token");
    assert_eq!(rotate_posts(&sim), 1);
    // Nothing was handed the unseen value or told it was done.
    assert_eq!(variable_value(&sim, sim.deploy, "GITLAB_TOKEN"), old);
}

#[test]
fn a_trigger_made_but_answered_502_is_found_and_adopted_not_made_twice() {
    let sim = GitLabSim::start();
    let ws = gitlab_workspace(&sim);
    let old = sim.seed_trigger("deploy-docs");
    sim.state
        .add_variable(
            sim.deploy,
            VariableSeed::new("API_TRIGGER", old.token.expose()).masked(),
        )
        .unwrap();
    // GitLab creates the trigger; the proxy in front loses the answer.
    sim.state.fail(
        FailRule::new("POST", "/api/v4/projects/acme%2Fapi/triggers", 502).after_processing(),
    );
    let run = ws.run(&[
        "run",
        "gitlab-trigger-token",
        "--set",
        "project=acme/api",
        "--set",
        &format!("trigger_id={}", old.id),
        "--set",
        "kind=ci-job",
        "--set",
        "target=deploy-docs",
        "--set",
        "variables=acme/deploy:API_TRIGGER",
    ]);
    run.assert_ok()
        .stderr_has("got HTTP 502; the provider may have carried it out, so looking for what it did with gitlab.find_trigger")
        .stderr_has("had succeeded despite HTTP 502; adopting what it made");
    let triggers = sim.state.snapshot().triggers;
    assert_eq!(
        triggers.len(),
        1,
        "one trigger, made once: {}",
        triggers.len()
    );
    assert_ne!(triggers[0].id, old.id, "the old trigger was deleted");
    let new = triggers[0].token.expose().to_owned();
    plant(&new);
    assert!(
        variable_value(&sim, sim.deploy, "API_TRIGGER") == new,
        "the variable holds the adopted trigger's token"
    );
}

#[test]
fn a_trigger_creation_refused_with_502_before_any_work_fails_as_before() {
    let sim = GitLabSim::start();
    let ws = gitlab_workspace(&sim);
    let old = sim.seed_trigger("deploy-docs");
    sim.state
        .fail(FailRule::new("POST", "/api/v4/projects/acme%2Fapi/triggers", 502).times(1000));
    let run = ws.run(&[
        "run",
        "gitlab-trigger-token",
        "--set",
        "project=acme/api",
        "--set",
        &format!("trigger_id={}", old.id),
        "--set",
        "kind=ci-job",
        "--set",
        "target=deploy-docs",
    ]);
    run.assert_code(5)
        .stderr_has("made nothing at the provider");
    assert_eq!(sim.state.snapshot().triggers.len(), 1, "nothing was made");
    assert!(
        ws.unfinished_runs().is_empty(),
        "the run failed, it does not need attention"
    );
}

/// A project reference of `..` or `.` would turn `/projects/{ref}/hooks`
/// into the instance-wide `/hooks` (system hooks) or the project list; the
/// plugin refuses such references before it sends anything.
#[test]
fn dot_segments_in_a_project_reference_are_refused() {
    let sim = GitLabSim::start();
    let ws = Workspace::new();
    let o = sim.origin();
    ws.config(&format!(
        "[plugins.gitlab]\npath = \"{}\"\nhosts = [\"{o}\"]\nsecrets = {{ token = \"gitlab/ops\" }}\nconfig = {{ base_url = \"{o}\" }}\n",
        wasm("gitlab").display()
    ));
    ws.set_secret("gitlab/ops", sim.ops_token.token.expose());
    for (project, call) in [
        ("..", "get_hook(#{ project: \"..\", hook_id: 1 })"),
        (".", "get_hook(#{ project: \".\", hook_id: 1 })"),
        ("acme/..", "get_hook(#{ project: \"acme/..\", hook_id: 1 })"),
        ("..", "list_triggers(#{ project: \"..\" })"),
        (
            "..",
            "get_variable(#{ project: \"acme/api\", key: \"..\" })",
        ),
    ] {
        ws.runbook(
            "dots",
            &format!(
                "let err = ();\ntry {{ plugin(\"gitlab\").{call}; }} catch (e) {{ err = e; }}\nerr\n"
            ),
        );
        let run = ws.run(&["run", "dots", "--output", "json"]);
        run.assert_ok();
        let err = run.json()["result"].clone();
        assert_eq!(err["kind"], "invalid-input", "{project}: {call}: {err}");
    }
    let sent: Vec<String> = sim
        .state
        .requests()
        .iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    assert!(sent.is_empty(), "nothing was sent: {sent:?}");
}
