//! Crash injection: the real binary is killed with SIGKILL at every effect
//! boundary of each GitLab runbook, then `keycycle resume` must finish the
//! rotation exactly once, or, where that is impossible, stop and say so in
//! words an operator can act on.
//!
//! The boundaries are the provider requests a clean run makes. For each one
//! a simulator gate holds that request when it arrives, the test kills the
//! client there, and releases the request either as never processed (a
//! dropped connection) or as processed with its response lost. The
//! simulator's true state is then checked against what a single clean
//! rotation leaves, and every file keycycle wrote is scanned for secrets in
//! clear.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Duration;

use crate::support::*;
use keycycle_sim::{FailRule, HookSeed, Release, RequestRecord, VariableSeed};

/// How long a gated request may take to arrive: covers plugin loading on a
/// busy machine. Gates make the kill itself deterministic.
const ARRIVAL: Duration = Duration::from_secs(30);

/// One runbook scenario, seeded on a fresh simulator.
struct Case {
    /// `keycycle run` arguments.
    args: Vec<String>,
    /// What exactly one finished rotation leaves behind.
    expect: Expect,
}

enum Expect {
    /// A rotated access token: one active token in its family, the old one
    /// revoked, the consumer variable and the store holding the new value.
    Token {
        old_id: u64,
        variable: (u64, &'static str),
        store_as: &'static str,
    },
    /// A replaced pipeline trigger: exactly one trigger left in the
    /// project, the old one deleted, the variable holding the new token.
    Trigger {
        project: u64,
        old_id: u64,
        variable: (u64, &'static str),
    },
    /// A new webhook secret: the hook's token equals the variable's value,
    /// both new, and the store holds it.
    Hook {
        hook_id: u64,
        old_value: String,
        variable: (u64, &'static str),
        store_as: &'static str,
    },
}

impl Case {
    fn args(&self) -> Vec<&str> {
        self.args.iter().map(String::as_str).collect()
    }
}

fn argv(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

fn personal_token_self_rotation(sim: &GitLabSim) -> Case {
    sim.state
        .add_variable(
            sim.deploy,
            VariableSeed::new("GITLAB_TOKEN", sim.ops_token.token.expose()).masked(),
        )
        .unwrap();
    Case {
        args: argv(&[
            "run",
            "gitlab-personal-token",
            "--set",
            "store_as=gitlab/ops",
            "--set",
            "variables=acme/deploy:GITLAB_TOKEN",
        ]),
        expect: Expect::Token {
            old_id: sim.ops_token.id,
            variable: (sim.deploy, "GITLAB_TOKEN"),
            store_as: "gitlab/ops",
        },
    }
}

fn project_token(sim: &GitLabSim) -> Case {
    let bot = sim.seed_project_token();
    Case {
        args: argv(&[
            "run",
            "gitlab-project-token",
            "--set",
            "owner=acme/api",
            "--set",
            &format!("token_id={}", bot.id),
            "--set",
            "store_as=gitlab/kept",
            "--set",
            "variables=acme/deploy:API_TOKEN",
        ]),
        expect: Expect::Token {
            old_id: bot.id,
            variable: (sim.deploy, "API_TOKEN"),
            store_as: "gitlab/kept",
        },
    }
}

fn trigger_token(sim: &GitLabSim) -> Case {
    let old = sim.seed_trigger("deploy-docs");
    sim.state
        .add_variable(
            sim.deploy,
            VariableSeed::new("API_TRIGGER", old.token.expose()).masked(),
        )
        .unwrap();
    Case {
        args: argv(&[
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
        ]),
        expect: Expect::Trigger {
            project: sim.api,
            old_id: old.id,
            variable: (sim.deploy, "API_TRIGGER"),
        },
    }
}

fn webhook_secret(sim: &GitLabSim) -> Case {
    let old_value = canary("hook-");
    let hook_id = sim
        .state
        .add_hook(
            sim.api,
            HookSeed::new("https://receiver.example/hook").token(&old_value),
        )
        .unwrap();
    sim.state
        .add_variable(
            sim.receiver,
            VariableSeed::new("WEBHOOK_SECRET", &old_value).masked(),
        )
        .unwrap();
    Case {
        args: argv(&[
            "run",
            "gitlab-webhook-secret",
            "--set",
            "project=acme/api",
            "--set",
            &format!("hook_id={hook_id}"),
            "--set",
            "variables=acme/receiver:WEBHOOK_SECRET",
            "--set",
            "store_as=gitlab/kept",
        ]),
        expect: Expect::Hook {
            hook_id,
            old_value,
            variable: (sim.receiver, "WEBHOOK_SECRET"),
            store_as: "gitlab/kept",
        },
    }
}

fn variable_value(sim: &GitLabSim, (project, key): (u64, &str)) -> String {
    sim.state
        .snapshot()
        .variable(project, key, "*")
        .unwrap_or_else(|| panic!("variable {key} of project {project} is gone"))
        .value
        .expose()
        .to_owned()
}

fn family(sim: &GitLabSim, token_id: u64) -> Vec<keycycle_sim::TokenState> {
    let snap = sim.state.snapshot();
    let family = snap.token(token_id).unwrap().family_id;
    snap.family(family).into_iter().cloned().collect()
}

/// Checks the simulator's true state is what exactly one finished rotation
/// leaves, and returns the new secret values (planted from now on).
#[track_caller]
fn assert_rotated_once(sim: &GitLabSim, ws: &Workspace, expect: &Expect) -> Vec<String> {
    let stored = ws.stored_secrets();
    match expect {
        Expect::Token {
            old_id,
            variable,
            store_as,
        } => {
            let members = family(sim, *old_id);
            let active: Vec<_> = members.iter().filter(|t| t.active).collect();
            assert_eq!(
                active.len(),
                1,
                "exactly one active token in the family; family: {:?}",
                members
                    .iter()
                    .map(|t| (t.id, t.active, t.revoked))
                    .collect::<Vec<_>>()
            );
            assert_eq!(members.len(), 2, "one rotation: the old token and one new");
            assert_ne!(active[0].id, *old_id, "the active token is a new one");
            let old = members.iter().find(|t| t.id == *old_id).unwrap();
            assert!(old.revoked && !old.active, "the old token is revoked");
            let new = active[0].value.expose().to_owned();
            plant(&new);
            assert!(
                variable_value(sim, *variable) == new,
                "the consumer variable {} holds the new token",
                variable.1
            );
            assert!(
                stored.get(*store_as) == Some(&new),
                "the store holds the new token as {store_as}"
            );
            vec![new]
        }
        Expect::Trigger {
            project,
            old_id,
            variable,
        } => {
            let snap = sim.state.snapshot();
            assert!(
                snap.trigger(*old_id).is_none(),
                "the old trigger is deleted"
            );
            let triggers: Vec<_> = snap
                .triggers
                .iter()
                .filter(|t| t.project_id == *project)
                .collect();
            assert_eq!(
                triggers.len(),
                1,
                "exactly one trigger: {:?}",
                triggers.iter().map(|t| t.id).collect::<Vec<_>>()
            );
            let new = triggers[0].token.expose().to_owned();
            plant(&new);
            assert!(
                variable_value(sim, *variable) == new,
                "the consumer variable {} holds the new trigger token",
                variable.1
            );
            vec![new]
        }
        Expect::Hook {
            hook_id,
            old_value,
            variable,
            store_as,
        } => {
            let snap = sim.state.snapshot();
            let hook = snap.hook(*hook_id).unwrap();
            let new = hook.token.as_ref().unwrap().expose().to_owned();
            plant(&new);
            assert!(&new != old_value, "the hook has a new secret token");
            assert_eq!(hook.url, "https://receiver.example/hook");
            assert!(
                variable_value(sim, *variable) == new,
                "the receiver's variable {} holds the hook's token",
                variable.1
            );
            assert!(
                stored.get(*store_as) == Some(&new),
                "the store holds the hook's token as {store_as}"
            );
            vec![new]
        }
    }
}

/// Provider requests, without the control API.
fn provider_requests(sim: &GitLabSim) -> Vec<RequestRecord> {
    sim.state
        .requests()
        .into_iter()
        .filter(|r| !r.path.starts_with("/_sim"))
        .collect()
}

/// A clean run's provider requests: the effect boundaries.
fn boundaries(setup: fn(&GitLabSim) -> Case) -> Vec<RequestRecord> {
    let sim = GitLabSim::start();
    let ws = gitlab_workspace(&sim);
    let case = setup(&sim);
    sim.state.clear_requests();
    ws.run(&case.args()).assert_ok();
    let new = assert_rotated_once(&sim, &ws, &case.expect);
    assert_secrets_kept(&ws, &new);
    let requests = provider_requests(&sim);
    assert!(
        requests.iter().any(|r| r.method != "GET"),
        "a clean run changes something: {requests:?}"
    );
    requests
}

/// Every planted secret and every new value must be absent, in clear, from
/// every file of the workspace (state.db and its WAL included).
fn assert_secrets_kept(ws: &Workspace, new_values: &[String]) {
    ws.assert_files_lack("a planted secret", &planted());
    ws.assert_files_lack("a new secret value", new_values);
}

/// Which occurrence of a gate on (method, exact path as prefix) request `k`
/// is, counting as the gate does.
fn occurrence(requests: &[RequestRecord], k: usize) -> u32 {
    let target = &requests[k];
    requests[..=k]
        .iter()
        .filter(|r| r.method == target.method && r.path.starts_with(&target.path))
        .count() as u32
}

fn is_rotate(request: &RequestRecord) -> bool {
    request.method == "POST" && request.path.ends_with("/rotate")
}

/// Everything a scenario's `keycycle` processes printed, for checking that
/// values learnt only later (a new token) never appeared in any of it.
#[derive(Default)]
struct Transcript(Vec<(String, String)>);

impl Transcript {
    fn add(&mut self, what: &str, text: &str) {
        self.0.push((what.to_owned(), text.to_owned()));
    }

    fn run(&mut self, what: &str, run: &Run) {
        self.add(&format!("stdout of {what}"), &run.stdout);
        self.add(&format!("stderr of {what}"), &run.stderr);
    }

    #[track_caller]
    fn assert_lacks(&self, values: &[String]) {
        for (what, text) in &self.0 {
            for value in values {
                assert!(
                    !text.contains(value.as_str()),
                    "{what} holds a new secret value:\n{text}"
                );
            }
        }
    }
}

/// Kills `keycycle run` when request `k` of the clean run arrives, lets the
/// request go as `mode` says, resumes, and checks the outcome.
fn crash_and_resume(
    setup: fn(&GitLabSim) -> Case,
    requests: &[RequestRecord],
    k: usize,
    mode: Release,
) {
    let sim = GitLabSim::start();
    let ws = gitlab_workspace(&sim);
    let case = setup(&sim);
    sim.state.clear_requests();
    let target = &requests[k];
    let gate = sim
        .state
        .gate(&target.method, &target.path, occurrence(requests, k));
    let mut transcript = Transcript::default();

    let killed = ws.kill_at_gate(&case.args(), &gate, ARRIVAL);
    transcript.add("the killed run's stdout", &killed.stdout);
    transcript.add("the killed run's stderr", &killed.stderr);
    // What the killed run left, before any keycycle opens the database
    // again: SQLite would fold the WAL into state.db and remove it.
    ws.assert_files_clean_including(&[
        "state/state.db",
        "state/state.db-wal",
        "state/secrets.json",
    ]);
    gate.release(mode);
    assert!(
        gate.wait_finished(ARRIVAL),
        "the released request was not answered"
    );
    assert_eq!(
        &provider_requests(&sim)[..=k],
        &requests[..=k],
        "the killed run made the clean run's requests up to the gate"
    );

    let run_id = ws.only_unfinished_run();
    let resume = ws.run(&["resume", &run_id]);
    transcript.run("keycycle resume", &resume);

    if is_rotate(target) {
        assert_rotation_needs_attention(&sim, &ws, &case, &run_id, &resume, &mut transcript, mode);
        return;
    }
    resume.assert_ok();
    let new = assert_rotated_once(&sim, &ws, &case.expect);
    assert!(ws.unfinished_runs().is_empty(), "the resumed run finished");
    transcript.assert_lacks(&new);
    assert_secrets_kept(&ws, &new);
}

/// A rotate request whose outcome the client never learnt. GitLab revokes
/// the old token and shows the new value only in its response, and the
/// plugin has no way to look the new value up, so keycycle cannot know
/// whether the rotation happened: it must stop with exit code 9 and the
/// plugin's advice, whether the request was processed or not.
fn assert_rotation_needs_attention(
    sim: &GitLabSim,
    ws: &Workspace,
    case: &Case,
    run_id: &str,
    resume: &Run,
    transcript: &mut Transcript,
    mode: Release,
) {
    let Expect::Token { old_id, .. } = case.expect else {
        panic!("only token runbooks rotate");
    };
    let show = ws.run(&["show", run_id, "--output", "json"]);
    show.assert_ok();
    transcript.run("keycycle show", &show);
    let steps = show.json()["steps"].as_array().cloned().unwrap_or_default();
    let step = steps
        .iter()
        .find(|s| {
            s["name"].as_str().is_some_and(|n| n.contains("rotate")) && s["outcome"] == "in-flight"
        })
        .unwrap_or_else(|| panic!("no rotate step in flight in {steps:#?}"));
    let seq = step["seq"].as_u64().unwrap();
    let name = step["name"].as_str().unwrap();
    resume
        .assert_code(9)
        .stderr_has(&format!("step {seq}"))
        .stderr_has(name)
        .stderr_has("rotate")
        .stderr_has("cannot be recovered")
        .stderr_has("gitlab-adopt-token")
        // The plugin's advice names this run, ready to copy.
        .stderr_has(&format!(
            "nothing happened and `keycycle resume {run_id} --retry-in-flight` rotates it again"
        ));
    assert!(
        !resume.stderr.contains("RUN_ID"),
        "the advice still has the placeholder:\n{}",
        resume.stderr
    );
    let listed = ws.unfinished_runs();
    assert!(
        listed.iter().any(|r| r["run_id"] == run_id),
        "a run that needs attention stays listed: {listed:#?}"
    );

    let members = family(sim, old_id);
    match mode {
        Release::Process => {
            // GitLab rotated: the old token is revoked and one new token is
            // active, whose value nobody will ever see again.
            let old = members.iter().find(|t| t.id == old_id).unwrap();
            assert!(old.revoked, "the old token is revoked");
            let active: Vec<_> = members.iter().filter(|t| t.active).collect();
            assert_eq!(active.len(), 1, "one new active token");
            assert_ne!(active[0].id, old_id);
            let lost = active[0].value.expose().to_owned();
            assert!(
                !ws.stored_secrets().values().any(|v| *v == lost),
                "the lost token's value is in keycycle's store"
            );
            transcript.assert_lacks(std::slice::from_ref(&lost));
            assert_secrets_kept(ws, &[lost]);
        }
        Release::Drop => {
            // Nothing happened at GitLab; the operator checks that, as the
            // advice says, and retries the call.
            assert_eq!(members.len(), 1, "no rotation happened");
            assert!(members[0].active);
            assert_secrets_kept(ws, &[]);
            let retried = ws.run(&["resume", run_id, "--retry-in-flight"]);
            transcript.run("keycycle resume --retry-in-flight", &retried);
            retried.assert_ok();
            let new = assert_rotated_once(sim, ws, &case.expect);
            transcript.assert_lacks(&new);
            assert_secrets_kept(ws, &new);
        }
    }
}

/// Crashes the runbook at each of its boundaries in turn, both ways for a
/// changing request, and reports every scenario that went wrong.
fn crash_at_every_boundary(setup: fn(&GitLabSim) -> Case) {
    let requests = boundaries(setup);
    let mut failures = Vec::new();
    let mut scenarios = 0;
    for k in 0..requests.len() {
        let modes: &[Release] = if requests[k].method == "GET" {
            &[Release::Drop]
        } else {
            &[Release::Drop, Release::Process]
        };
        for &mode in modes {
            scenarios += 1;
            eprintln!(
                "crash {scenarios}: at request {} ({} {}), released as {mode:?}",
                k + 1,
                requests[k].method,
                requests[k].path
            );
            let outcome = catch_unwind(AssertUnwindSafe(|| {
                crash_and_resume(setup, &requests, k, mode);
            }));
            if let Err(panic) = outcome {
                let message = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_default();
                failures.push(format!(
                    "killed at request {} ({} {}), released as {mode:?}: {message}",
                    k + 1,
                    requests[k].method,
                    requests[k].path
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of the crash scenarios failed:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

#[test]
fn personal_token_self_rotation_survives_a_crash_at_every_boundary() {
    crash_at_every_boundary(personal_token_self_rotation);
}

#[test]
fn project_token_rotation_survives_a_crash_at_every_boundary() {
    crash_at_every_boundary(project_token);
}

#[test]
fn trigger_token_replacement_survives_a_crash_at_every_boundary() {
    crash_at_every_boundary(trigger_token);
}

#[test]
fn webhook_secret_survives_a_crash_at_every_boundary() {
    crash_at_every_boundary(webhook_secret);
}

#[test]
fn a_second_rotation_of_a_locked_token_is_refused_and_changes_nothing() {
    let sim = GitLabSim::start();
    let ws = gitlab_workspace(&sim);
    let case = personal_token_self_rotation(&sim);
    let gate = sim
        .state
        .gate("POST", "/api/v4/personal_access_tokens/self/rotate", 1);
    let first = ws.spawn(&case.args());
    let arrived = gate.wait_arrived(ARRIVAL);
    if !arrived {
        let mut first = first;
        let _ = first.kill();
        let out = first.timed_wait_with_output().unwrap();
        panic!(
            "the first run never sent its rotate request:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let first_id = ws.only_unfinished_run();
    let before = provider_requests(&sim).len();

    let second = ws.run(&case.args());
    second.assert_code(8).stderr_has(&first_id);
    let sent = &provider_requests(&sim)[before..];
    assert!(
        sent.iter().all(|r| r.method == "GET"),
        "the refused run changed something: {sent:?}"
    );

    gate.release(Release::Process);
    let out = first.timed_wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_clean("stderr of the first run", &stderr);
    assert_eq!(out.status.code(), Some(0), "the first run:\n{stderr}");
    let rotations = provider_requests(&sim)
        .iter()
        .filter(|r| is_rotate(r))
        .count();
    assert_eq!(rotations, 1, "exactly one rotation was sent");
    let new = assert_rotated_once(&sim, &ws, &case.expect);
    assert!(!stderr.contains(&new[0]));
    assert_secrets_kept(&ws, &new);
}

/// A trigger and a runbook in the workspace that defers its deletion.
fn deferred_trigger_deletion(sim: &GitLabSim, ws: &Workspace) -> u64 {
    let old = sim.seed_trigger("old-trigger");
    ws.runbook(
        "x",
        &format!(
            "let gl = plugin(\"gitlab\");\n\
             defer(gl, \"delete_trigger\", #{{ project: \"acme/api\", trigger_id: {} }}, 0, \"remove the old trigger\");\n",
            old.id
        ),
    );
    ws.run(&["run", "runbooks/x.rhai"]).assert_ok();
    assert!(
        sim.state.snapshot().trigger(old.id).is_some(),
        "deferring deletes nothing yet"
    );
    let pending = ws.pending();
    assert_eq!(pending.len(), 1, "{pending:#?}");
    assert_eq!(pending[0]["call"], "gitlab.delete_trigger");
    old.id
}

fn deletes(sim: &GitLabSim) -> usize {
    provider_requests(sim)
        .iter()
        .filter(|r| r.method == "DELETE")
        .count()
}

#[test]
fn a_deferred_action_killed_mid_request_is_done_exactly_once() {
    let sim = GitLabSim::start();
    let ws = gitlab_workspace(&sim);
    let old_id = deferred_trigger_deletion(&sim, &ws);
    sim.state.clear_requests();

    let gate = sim.state.gate("DELETE", "/api/v4/projects/", 1);
    ws.kill_at_gate(&["cleanup"], &gate, ARRIVAL);
    gate.release(Release::Process);
    assert!(gate.wait_finished(ARRIVAL));
    assert!(
        sim.state.snapshot().trigger(old_id).is_none(),
        "the processed DELETE removed the trigger"
    );
    assert_eq!(deletes(&sim), 1);

    // From here on any DELETE of the trigger finds it gone: GitLab answers
    // 404, which the plugin counts as deleted.
    let again = ws.run(&["cleanup"]);
    again.assert_ok();
    let pending = ws.pending();
    assert!(pending.is_empty(), "nothing is left pending: {pending:#?}");
    assert!(
        deletes(&sim) <= 2,
        "the DELETE was sent {} times",
        deletes(&sim)
    );
    assert!(sim.state.snapshot().trigger(old_id).is_none());
    let again = ws.run(&["cleanup", "--output", "json"]);
    again.assert_ok();
    assert_eq!(again.json(), serde_json::json!([]), "nothing runs twice");
    assert!(deletes(&sim) <= 2);
    assert_secrets_kept(&ws, &[]);
}

#[test]
fn a_failing_deferred_action_stays_pending_and_is_never_dropped() {
    let sim = GitLabSim::start();
    let ws = gitlab_workspace(&sim);
    let old_id = deferred_trigger_deletion(&sim, &ws);
    sim.state
        .fail(FailRule::new("DELETE", "/api/v4/projects/", 500).times(1000));

    let cleanup = ws.run(&["cleanup", "--output", "json"]);
    assert_ne!(
        cleanup.code, 0,
        "a failed action fails the cleanup:\n{}",
        cleanup.stderr
    );
    let report = cleanup.json();
    assert_eq!(report[0]["outcome"], "retrying", "{report:#}");
    assert!(deletes(&sim) >= 1, "the action was attempted");

    for _ in 0..2 {
        let pending = ws.pending();
        assert_eq!(pending.len(), 1, "the action is kept: {pending:#?}");
        let action = &pending[0];
        assert_eq!(action["state"], "pending", "waiting to retry: {action:#}");
        assert_eq!(action["call"], "gitlab.delete_trigger");
        assert!(action["attempts"].as_u64().unwrap() >= 1, "{action:#}");
        assert!(
            action["last_error"]
                .as_str()
                .unwrap_or_default()
                .contains("500"),
            "{action:#}"
        );
        // A cleanup before the retry is due leaves it where it is.
        ws.run(&["cleanup"]);
    }
    assert!(
        sim.state.snapshot().trigger(old_id).is_some(),
        "the trigger was never deleted"
    );
    assert_secrets_kept(&ws, &[]);
}
