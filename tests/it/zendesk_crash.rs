//! Crash injection for the Zendesk runbooks: the real binary is killed with
//! SIGKILL at every provider request a clean run makes, at Zendesk and at
//! GitLab, and `keycycle resume` must finish the rotation exactly once, or
//! stop with the plugin's advice where the lost answer held a value shown
//! only once; following that advice must then finish it.
//!
//! The scenarios cover the changing steps seed 002 adds: an OAuth token's
//! creation and revocation, an app setting's update, a webhook's
//! delete-and-create, and a trigger created as a service bot into a
//! Zendesk app. The simulators' true state is checked against what one
//! clean rotation leaves, and every output and file for secrets in clear.

use std::time::Duration;

use keycycle_sim::{InstallationSeed, Release, RequestRecord};

use crate::support::*;
use crate::zendesk::{
    ZendeskSim, argv, seed_oauth_consumers, with_service_bot, zendesk_and_gitlab_workspace,
};

/// How long a gated request may take to arrive.
const ARRIVAL: Duration = Duration::from_secs(30);

/// One scenario on fresh simulators.
struct Scenario {
    zd: ZendeskSim,
    gl: GitLabSim,
    ws: Workspace,
    args: Vec<String>,
    /// Checks the simulators hold what one finished rotation leaves, and
    /// returns the new secret values.
    expect: fn(&Scenario) -> Vec<String>,
    webhook: String,
    installation: u64,
    old_trigger: u64,
    bot: u64,
}

/// Which simulator a boundary is at.
#[derive(Clone, Copy, Debug, PartialEq)]
enum At {
    Zendesk,
    GitLab,
}

/// Provider requests, without the control API. A webhook id is cut to its
/// counter part (`01J` and 7 characters): the rest is random, differs from
/// one scenario to the next, and a gate on the prefix still matches.
fn provider_requests(s: &Scenario, at: At) -> Vec<RequestRecord> {
    let all = match at {
        At::Zendesk => s.zd.state.requests(),
        At::GitLab => s.gl.state.requests(),
    };
    all.into_iter()
        .filter(|r| !r.path.starts_with("/_sim"))
        .map(|mut r| {
            r.path = r
                .path
                .split('/')
                .map(|seg| {
                    if seg.len() == 26 && seg.starts_with("01J") {
                        &seg[..10]
                    } else {
                        seg
                    }
                })
                .collect::<Vec<_>>()
                .join("/");
            r
        })
        .collect()
}

fn clear_requests(s: &Scenario) {
    s.zd.state.clear_requests();
    s.gl.state.clear_requests();
}

/// Zendesk's OAuth token rotated into an app setting, a webhook replaced by
/// a copy (`webhook_method=recreate`) and a GitLab variable.
fn oauth_rotation() -> Scenario {
    let zd = ZendeskSim::start();
    let gl = GitLabSim::start();
    let (_, webhook) = seed_oauth_consumers(&zd, &gl);
    let ws = zendesk_and_gitlab_workspace(&zd, &gl);
    let args = [
        "run",
        "zendesk-oauth-token",
        "--set",
        &format!("token_id={}", zd.old_token),
        "--set",
        &format!("apps={}:api_token", zd.installation),
        "--set",
        &format!("webhooks={webhook}:bearer_token"),
        "--set",
        "webhook_method=recreate",
        "--set",
        "variables=acme/deploy:ZENDESK_TOKEN",
        "--set",
        "store_as=zendesk/deploy-bot",
    ]
    .map(str::to_owned)
    .to_vec();
    let installation = zd.installation;
    Scenario {
        zd,
        gl,
        ws,
        args,
        expect: oauth_rotated_once,
        webhook,
        installation,
        old_trigger: 0,
        bot: 0,
    }
}

fn oauth_rotated_once(s: &Scenario) -> Vec<String> {
    let snapshot = s.zd.state.snapshot();
    let old = snapshot
        .oauth_tokens
        .iter()
        .find(|t| t.id == s.zd.old_token)
        .unwrap();
    assert!(old.revoked && !old.usable, "the old token is revoked");
    // Besides the plugin's own admin token, exactly one usable token.
    let admin = s.zd.admin_token.as_str();
    let usable: Vec<_> = snapshot
        .oauth_tokens
        .iter()
        .filter(|t| t.usable && t.value.expose() != admin)
        .collect();
    assert_eq!(usable.len(), 1, "exactly one new usable token");
    let new = usable[0];
    assert_eq!(new.scopes, ["read"], "the old token's scopes");
    let value = new.value.expose().to_owned();
    plant(&value);
    assert!(
        s.zd.state.installation_settings(s.installation).unwrap()["api_token"] == value.as_str(),
        "the app holds the new token"
    );
    let hooks: Vec<_> = snapshot
        .webhooks
        .iter()
        .filter(|w| w.name == "Deploy hook")
        .collect();
    assert_eq!(hooks.len(), 1, "exactly one webhook, the copy");
    let hook = hooks[0];
    assert_ne!(hook.id, s.webhook, "the old webhook was deleted");
    assert_eq!(hook.endpoint, "https://deploy.example.com/zendesk");
    assert_eq!(hook.subscriptions, ["conditional_ticket_events"]);
    assert!(
        hook.authentication.as_ref().unwrap()["data"]["token"] == value.as_str(),
        "the copy holds the new token"
    );
    assert!(
        s.gl.state
            .snapshot()
            .variable(s.gl.deploy, "ZENDESK_TOKEN", "*")
            .unwrap()
            .value
            .expose()
            == value,
        "the GitLab variable holds the new token"
    );
    assert!(
        s.ws.stored_secrets().get("zendesk/deploy-bot") == Some(&value),
        "the store holds the new token"
    );
    vec![value]
}

/// A pipeline trigger replaced as the service bot, into a Zendesk app.
fn bot_trigger() -> Scenario {
    let zd = ZendeskSim::start();
    let gl = GitLabSim::start();
    let ws = zendesk_and_gitlab_workspace(&zd, &gl);
    let bot = with_service_bot(&ws, &gl);
    let old = gl
        .state
        .add_trigger(
            gl.api,
            keycycle_sim::TriggerSeed {
                owner_id: bot,
                description: "Zendesk Global - Deploy Bot".into(),
                token: None,
            },
        )
        .unwrap();
    plant(old.token.expose());
    let mut settings = serde_json::Map::new();
    settings.insert("trigger_token".into(), old.token.expose().into());
    let installation = zd
        .state
        .add_installation(InstallationSeed {
            app_id: 44,
            settings,
            secure: vec!["trigger_token".into()],
            ..InstallationSeed::default()
        })
        .unwrap();
    let args = [
        "run",
        "gitlab-trigger-token",
        "--set",
        "project=acme/api",
        "--set",
        &format!("trigger_id={}", old.id),
        "--set",
        "kind=zendesk-app",
        "--set",
        "target=Zendesk Global - Deploy Bot",
        "--set",
        &format!("apps={installation}:trigger_token"),
        "--set",
        "plugin=gitlab-bot",
        "--set",
        "as_bot=true",
    ]
    .map(str::to_owned)
    .to_vec();
    Scenario {
        zd,
        gl,
        ws,
        args,
        expect: trigger_replaced_once,
        webhook: String::new(),
        installation,
        old_trigger: old.id,
        bot,
    }
}

fn trigger_replaced_once(s: &Scenario) -> Vec<String> {
    let triggers = s.gl.state.snapshot().triggers;
    assert_eq!(triggers.len(), 1, "one trigger: the new one");
    let new = &triggers[0];
    assert_ne!(new.id, s.old_trigger, "the old trigger was deleted");
    assert_eq!(new.owner_id, s.bot, "the service bot owns it");
    let value = new.token.expose().to_owned();
    plant(&value);
    assert!(
        s.zd.state.installation_settings(s.installation).unwrap()["trigger_token"]
            == value.as_str(),
        "the app holds the new trigger token"
    );
    vec![value]
}

/// A clean run's boundaries at both simulators.
fn boundaries(setup: fn() -> Scenario) -> Vec<(At, Vec<RequestRecord>)> {
    let s = setup();
    clear_requests(&s);
    s.ws.run(&argv(&s.args)).assert_ok();
    let new = (s.expect)(&s);
    s.ws.assert_files_lack("a new secret value", &new);
    let out = vec![
        (At::Zendesk, provider_requests(&s, At::Zendesk)),
        (At::GitLab, provider_requests(&s, At::GitLab)),
    ];
    assert!(
        out.iter().flat_map(|(_, r)| r).any(|r| r.method != "GET"),
        "a clean run changes something"
    );
    out
}

/// Zendesk's token creation: the value is only in the answer.
fn is_token_creation(at: At, request: &RequestRecord) -> bool {
    at == At::Zendesk && request.method == "POST" && request.path == "/api/v2/oauth/tokens"
}

/// Kills the run at request `k` of `at`, releases it as `mode`, resumes,
/// and checks the outcome.
fn crash_and_resume(
    setup: fn() -> Scenario,
    at: At,
    requests: &[RequestRecord],
    k: usize,
    mode: Release,
) {
    let s = setup();
    clear_requests(&s);
    let target = &requests[k];
    let n = gate_occurrence(requests, k, &target.path);
    let gate = match at {
        At::Zendesk => s.zd.state.gate(&target.method, &target.path, n),
        At::GitLab => s.gl.state.gate(&target.method, &target.path, n),
    };
    let mut outputs = Vec::new();
    let killed = s.ws.kill_at_gate(&argv(&s.args), &gate, ARRIVAL);
    outputs.push(killed.stdout.clone());
    outputs.push(killed.stderr.clone());
    s.ws.assert_files_clean_including(&["state/state.db", "state/secrets.json"]);
    gate.release(mode);
    assert!(
        gate.wait_finished(ARRIVAL),
        "the released request was not answered"
    );
    assert_eq!(
        &provider_requests(&s, at)[..=k],
        &requests[..=k],
        "the killed run made the clean run's requests up to the gate"
    );

    let run_id = s.ws.only_unfinished_run();
    let mut resume = s.ws.run(&["resume", &run_id]);
    outputs.push(resume.stdout.clone());
    outputs.push(resume.stderr.clone());
    if is_token_creation(at, target) {
        // The lost answer held the only copy of the new value: the run
        // stops with the plugin's advice, and following it finishes.
        resume
            .assert_code(9)
            .stderr_has("a token may have been created, its value shown only in the lost answer")
            .stderr_has(&format!("`keycycle resume {run_id} --retry-in-flight`"));
        let orphans: Vec<u64> = s
            .zd
            .state
            .snapshot()
            .oauth_tokens
            .iter()
            .filter(|t| t.usable && t.id != s.zd.old_token && t.value.expose() != s.zd.admin_token)
            .map(|t| t.id)
            .collect();
        match mode {
            Release::Drop => assert!(orphans.is_empty(), "nothing was created"),
            Release::Process => {
                assert_eq!(orphans.len(), 1, "the lost token exists");
                // As the advice says: revoke the token nobody holds.
                let revoke = s.ws.runbook(
                    "zd-revoke",
                    "plugin(\"zendesk\").revoke_token(#{ token_id: param(\"id\").parse_int() })",
                );
                s.ws.run(&[
                    "run",
                    &revoke.display().to_string(),
                    "--set",
                    &format!("id={}", orphans[0]),
                ])
                .assert_ok();
            }
        }
        resume = s.ws.run(&["resume", &run_id, "--retry-in-flight"]);
        outputs.push(resume.stdout.clone());
        outputs.push(resume.stderr.clone());
    }
    resume.assert_ok();
    // A webhook copy whose old webhook was not deleted leaves a deferred
    // deletion: the next cleanup, when due, finishes it.
    let pending = s.ws.run(&["pending", "-o", "json"]);
    pending.assert_ok();
    if pending.json().as_array().is_some_and(|a| !a.is_empty()) {
        s.ws.run_env(&["cleanup"], &[("KEYCYCLE_DEBUG_NOW_OFFSET_SECS", "3600")])
            .assert_ok();
    }
    let new = (s.expect)(&s);
    assert!(
        s.ws.unfinished_runs().is_empty(),
        "the resumed run finished"
    );
    for text in &outputs {
        for value in &new {
            assert!(
                !text.contains(value.as_str()),
                "an output holds a new secret value"
            );
        }
    }
    s.ws.assert_files_lack("a new secret value", &new);
}

fn crash_at_every_boundary(setup: fn() -> Scenario) {
    crash_at_every_request(&boundaries(setup), |at, requests, k, mode| {
        crash_and_resume(setup, at, requests, k, mode)
    });
}

#[test]
fn an_oauth_token_rotation_into_an_app_a_recreated_webhook_and_a_variable_survives_a_crash_at_every_boundary()
 {
    crash_at_every_boundary(oauth_rotation);
}

#[test]
fn a_trigger_replaced_as_a_service_bot_into_a_zendesk_app_survives_a_crash_at_every_boundary() {
    crash_at_every_boundary(bot_trigger);
}
