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
        /// The old trigger's deletion failed and was deferred: it is still
        /// there, beside the new one, and exactly one action deletes it.
        deferred: bool,
    },
    /// A new webhook secret: the hook's token equals the variable's value,
    /// both new, and the store holds it.
    Hook {
        hook_id: u64,
        old_value: String,
        variable: (u64, &'static str),
        store_as: &'static str,
    },
    /// A re-created webhook: the old hook gone, exactly one hook left in
    /// the project, with every setting of the old one and a new token that
    /// the variable and the store hold, and a test delivery that carried it.
    RecreatedHook {
        project: u64,
        old_id: u64,
        settings: Box<keycycle_sim::HookSettings>,
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

/// Where a scenario's run state lives.
#[derive(Debug, Clone, Copy)]
enum Backend {
    /// `state/state.db`, the default.
    Sqlite,
    /// A database of its own on the shared PostgreSQL test server. The
    /// scans then cover a dump of it instead of the database files.
    Postgres,
}

impl Backend {
    fn workspace(self, sim: &GitLabSim) -> Workspace {
        match self {
            Backend::Sqlite => gitlab_workspace(sim),
            Backend::Postgres => gitlab_workspace_in(Workspace::on_postgres(), sim),
        }
    }

    /// The files a scan must have covered: without the SQLite ones on
    /// PostgreSQL.
    fn files(self, files: &[&'static str]) -> Vec<&'static str> {
        files
            .iter()
            .copied()
            .filter(|f| matches!(self, Backend::Sqlite) || !f.starts_with("state/state.db"))
            .collect()
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
            deferred: false,
        },
    }
}

/// [`trigger_token`] where deleting the old trigger keeps failing, so the
/// runbook defers it to `keycycle cleanup`.
fn trigger_token_with_deferred_deletion(sim: &GitLabSim) -> Case {
    let mut case = trigger_token(sim);
    sim.state
        .fail(FailRule::new("DELETE", "/api/v4/projects/", 500).times(1000));
    if let Expect::Trigger { deferred, .. } = &mut case.expect {
        *deferred = true;
    }
    case
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

/// [`webhook_secret`] with `method=recreate`, on a hook whose settings are
/// all away from GitLab's defaults.
fn webhook_recreate(sim: &GitLabSim) -> Case {
    let old_value = canary("hook-");
    let hook_id = sim
        .state
        .add_hook(
            sim.api,
            HookSeed::new("https://receiver.example/hook")
                .token(&old_value)
                .name("deploys")
                .description("tells the deployer")
                .event("push_events", false)
                .event("pipeline_events", true)
                .event("enable_ssl_verification", false)
                .branch_filter("release/*", "wildcard")
                .template(r#"{"kind":"{{object_kind}}"}"#),
        )
        .unwrap();
    sim.state
        .add_variable(
            sim.receiver,
            VariableSeed::new("WEBHOOK_SECRET", &old_value).masked(),
        )
        .unwrap();
    let settings = sim.state.snapshot().hook(hook_id).unwrap().settings();
    Case {
        args: argv(&[
            "run",
            "gitlab-webhook-secret",
            "--set",
            "project=acme/api",
            "--set",
            &format!("hook_id={hook_id}"),
            "--set",
            "method=recreate",
            "--set",
            "variables=acme/receiver:WEBHOOK_SECRET",
            "--set",
            "store_as=gitlab/kept",
        ]),
        expect: Expect::RecreatedHook {
            project: sim.api,
            old_id: hook_id,
            settings: Box::new(settings),
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
            deferred,
        } => {
            let snap = sim.state.snapshot();
            assert_eq!(
                snap.trigger(*old_id).is_some(),
                *deferred,
                "the old trigger is deleted, unless its deletion was deferred"
            );
            let triggers: Vec<_> = snap
                .triggers
                .iter()
                .filter(|t| t.project_id == *project && t.id != *old_id)
                .collect();
            assert_eq!(
                triggers.len(),
                1,
                "exactly one new trigger: {:?}",
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
        Expect::RecreatedHook {
            project,
            old_id,
            settings,
            old_value,
            variable,
            store_as,
        } => {
            let snap = sim.state.snapshot();
            assert!(snap.hook(*old_id).is_none(), "the old hook is deleted");
            let hooks = snap.project_hooks(*project);
            assert_eq!(
                hooks.len(),
                1,
                "exactly one hook in the project: {:?}",
                hooks.iter().map(|h| h.id).collect::<Vec<_>>()
            );
            let hook = hooks[0];
            let new = hook.token.as_ref().unwrap().expose().to_owned();
            plant(&new);
            assert!(&new != old_value, "the copy has a new secret token");
            assert_eq!(hook.settings(), **settings, "the copy has every setting");
            assert!(
                variable_value(sim, *variable) == new,
                "the receiver's variable {} holds the copy's token",
                variable.1
            );
            assert!(
                stored.get(*store_as) == Some(&new),
                "the store holds the copy's token as {store_as}"
            );
            assert!(
                snap.hook_tests
                    .iter()
                    .any(|t| t.hook_id == hook.id && t.sent_token(&new)),
                "a test delivery of the copy carried the new token"
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
    backend: Backend,
    requests: &[RequestRecord],
    k: usize,
    mode: Release,
) {
    let sim = GitLabSim::start();
    let ws = backend.workspace(&sim);
    let case = setup(&sim);
    sim.state.clear_requests();
    let target = &requests[k];
    let gate = sim.state.gate(
        &target.method,
        &target.path,
        gate_occurrence(requests, k, &target.path),
    );
    let mut transcript = Transcript::default();

    let killed = ws.kill_at_gate(&case.args(), &gate, ARRIVAL);
    transcript.add("the killed run's stdout", &killed.stdout);
    transcript.add("the killed run's stderr", &killed.stderr);
    // What the killed run left, before any keycycle opens the database
    // again: SQLite would fold the WAL into state.db and remove it.
    ws.assert_files_clean_including(&backend.files(&[
        "state/state.db",
        "state/state.db-wal",
        "state/secrets.json",
    ]));
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
            // The rotate is not safe to send twice: the log says it goes
            // again on the operator's word, not that it is safe.
            retried.stderr_has("--retry-in-flight says it did not happen");
            assert!(
                !retried.stderr.contains("it is safe to send again"),
                "{}",
                retried.stderr
            );
            let new = assert_rotated_once(sim, ws, &case.expect);
            transcript.assert_lacks(&new);
            assert_secrets_kept(ws, &new);
        }
    }
}

/// Crashes the runbook at each of its boundaries in turn, both ways for a
/// changing request, and reports every scenario that went wrong.
fn crash_at_every_boundary(setup: fn(&GitLabSim) -> Case) {
    crash_at_every_boundary_on(setup, Backend::Sqlite);
}

fn crash_at_every_boundary_on(setup: fn(&GitLabSim) -> Case, backend: Backend) {
    // One simulator, so one group of requests.
    crash_at_every_request(&[("GitLab", boundaries(setup))], |_, requests, k, mode| {
        crash_and_resume(setup, backend, requests, k, mode)
    });
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

/// Includes a crash after GitLab deleted the old hook and before the copy
/// was created, and one with the copy created but its answer lost.
#[test]
fn webhook_recreate_survives_a_crash_at_every_boundary() {
    crash_at_every_boundary(webhook_recreate);
}

// Every crash and abort family above again, with the run state in
// PostgreSQL: the journal, locks and deferred actions there must give the
// same guarantees. (The power cuts are SQLite's: PostgreSQL makes a commit
// durable before answering it.)

#[test]
fn project_token_rotation_survives_a_crash_at_every_boundary_on_postgres() {
    crash_at_every_boundary_on(project_token, Backend::Postgres);
}

#[test]
fn webhook_recreate_survives_a_crash_at_every_boundary_on_postgres() {
    crash_at_every_boundary_on(webhook_recreate, Backend::Postgres);
}

#[test]
fn personal_token_self_rotation_survives_a_crash_at_every_boundary_on_postgres() {
    crash_at_every_boundary_on(personal_token_self_rotation, Backend::Postgres);
}

#[test]
fn trigger_token_replacement_survives_a_crash_at_every_boundary_on_postgres() {
    crash_at_every_boundary_on(trigger_token, Backend::Postgres);
}

#[test]
fn webhook_secret_survives_a_crash_at_every_boundary_on_postgres() {
    crash_at_every_boundary_on(webhook_secret, Backend::Postgres);
}

#[test]
fn personal_token_self_rotation_survives_an_abort_after_every_journaled_step_on_postgres() {
    stop_at_every_step(
        personal_token_self_rotation,
        Backend::Postgres,
        &["plugin", "lock", "store_secret"],
        Stop::Abort,
    );
}

#[test]
fn trigger_token_replacement_survives_an_abort_after_every_journaled_step_on_postgres() {
    stop_at_every_step(
        trigger_token,
        Backend::Postgres,
        &["plugin", "lock"],
        Stop::Abort,
    );
}

#[test]
fn webhook_secret_survives_an_abort_after_every_journaled_step_on_postgres() {
    stop_at_every_step(
        webhook_secret,
        Backend::Postgres,
        &["plugin", "lock", "random", "store_secret"],
        Stop::Abort,
    );
}

#[test]
fn webhook_recreate_survives_an_abort_after_every_journaled_step_on_postgres() {
    stop_at_every_step(
        webhook_recreate,
        Backend::Postgres,
        &["plugin", "lock", "random", "store_secret"],
        Stop::Abort,
    );
}

#[test]
fn project_token_rotation_survives_an_abort_after_every_journaled_step_on_postgres() {
    stop_at_every_step(
        project_token,
        Backend::Postgres,
        &["plugin", "lock", "store_secret"],
        Stop::Abort,
    );
}

#[test]
fn a_deferred_trigger_deletion_survives_an_abort_after_every_journaled_step_on_postgres() {
    stop_at_every_step(
        trigger_token_with_deferred_deletion,
        Backend::Postgres,
        &["plugin", "lock", "defer"],
        Stop::Abort,
    );
}

/// One durable write of a clean run, which the debug build's
/// `KEYCYCLE_DEBUG_ABORT_AFTER` can stop the process right after.
struct Point {
    /// The switch's value: `N`, `N:result` or `end` (after the write and
    /// its barrier, if it has one), or `N:unsynced` (after the write,
    /// before its barrier).
    label: String,
    /// What it is, for failure messages.
    what: String,
    /// The intent of a call that changes the provider, is not safe to send
    /// twice and cannot be looked up: a resume cannot know whether it
    /// happened, and must stop for an operator (exit 9).
    needs_operator: bool,
    /// Under a power cut: whether every journal write before this point is
    /// durable (a barrier just ran), `Some(false)` where grouped writes
    /// must be waiting for one, `None` where the test does not say.
    durable: Option<bool>,
}

/// How the process stopped at a point leaves the state database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// The process dies: the kernel keeps everything it wrote.
    Abort,
    /// The machine loses power as the process dies: every journal write
    /// that no barrier made durable is gone (the debug build's
    /// `KEYCYCLE_DEBUG_POWER_CUT` records what the last barrier covered,
    /// and the test cuts the write-ahead log back to it).
    PowerCut,
}

/// Runs keycycle until it aborts at `point`, then, for a power cut, throws
/// away what was not durable. Returns the run and how many bytes of the
/// write-ahead log the power cut took.
fn stop_at(ws: &Workspace, args: &[&str], point: &str, stop: Stop) -> (Run, u64) {
    match stop {
        Stop::Abort => (ws.run_aborting(args, point), 0),
        Stop::PowerCut => {
            let run = ws.run_env(
                args,
                &[
                    ("KEYCYCLE_DEBUG_ABORT_AFTER", point),
                    ("KEYCYCLE_DEBUG_POWER_CUT", "1"),
                ],
            );
            assert_eq!(
                run.signal,
                Some(SIGABRT),
                "keycycle {args:?} was to abort after {point}, but it exited with {}; stderr:\n{}",
                run.code,
                run.stderr
            );
            let lost = cut_power(ws);
            (run, lost)
        }
    }
}

/// What a power cut does to the state database of a dead process: its
/// write-ahead log keeps what the last barrier made durable and loses the
/// rest (SQLite's recovery then ends at the last whole commit there). The
/// shared-memory index goes too, as it would with the machine's memory.
/// Returns how many bytes were lost.
fn cut_power(ws: &Workspace) -> u64 {
    let state = ws.path().join("state");
    let wal = state.join("state.db-wal");
    let record = state.join("state.db-wal.synced");
    let synced: u64 = std::fs::read_to_string(&record)
        .expect("the killed process recorded what its last barrier covered")
        .trim()
        .parse()
        .expect("a length");
    std::fs::remove_file(&record).unwrap();
    let written = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
    assert!(
        synced <= written,
        "the last barrier covered {synced} bytes of a {written}-byte log"
    );
    std::fs::OpenOptions::new()
        .write(true)
        .open(&wal)
        .and_then(|f| f.set_len(synced))
        .unwrap();
    let _ = std::fs::remove_file(state.join("state.db-shm"));
    written - synced
}

/// The gitlab operations a resume cannot settle on its own, from the
/// plugin's own description (`keycycle plugins inspect`).
fn unsettleable_operations(ws: &Workspace) -> Vec<String> {
    let inspect = ws.run(&["plugins", "inspect", "gitlab", "--output", "json"]);
    inspect.assert_ok();
    let ops = inspect.json()["operations"]
        .as_array()
        .cloned()
        .unwrap_or_else(|| panic!("no operations in {}", inspect.stdout));
    ops.iter()
        .filter(|op| {
            op["mutates"] == true && op["idempotent"] != true && op["recover_with"].is_null()
        })
        .map(|op| format!("gitlab.{}", op["name"].as_str().unwrap()))
        .collect()
}

/// A clean run's durable points: each journal step's intent, then its
/// result, then the run's end; read from `keycycle show RUN -o json`.
///
/// For a power cut, also the point between each intent and its barrier,
/// and what must be durable at each point: nothing may be waiting for a
/// barrier right after the intent of a change or after the result of a
/// call that minted a secret or cannot be sent twice, and the intent of a
/// change must be waiting for its barrier just before it.
fn journal_points(setup: fn(&GitLabSim) -> Case, kinds: &[&str], stop: Stop) -> Vec<Point> {
    let sim = GitLabSim::start();
    let ws = gitlab_workspace(&sim);
    let case = setup(&sim);
    ws.run(&case.args()).assert_ok();
    let new = assert_rotated_once(&sim, &ws, &case.expect);
    assert_secrets_kept(&ws, &new);
    let history = ws.run(&["history", "--output", "json"]);
    history.assert_ok();
    let run_id = history.json()[0]["run_id"].as_str().unwrap().to_owned();
    let show = ws.run(&["show", &run_id, "--output", "json"]);
    show.assert_ok();
    let steps = show.json()["steps"].as_array().cloned().unwrap();
    let unsettleable = unsettleable_operations(&ws);
    let mut points = Vec::new();
    for step in &steps {
        let seq = step["seq"].as_u64().unwrap();
        let name = step["name"].as_str().unwrap();
        // An error the runbook handles (a store probe, a failed delete it
        // defers) is a result like any other.
        assert_ne!(step["outcome"], "in-flight", "a clean run's step: {step:#}");
        let unsettled = step["kind"] == "plugin" && unsettleable.iter().any(|u| u == name);
        // What the journal's rule makes a barrier (engine::journal): the
        // intent of a plugin call that changes the provider, a secret
        // write and a prompt; the result of a rotation (a minted token,
        // and not safe to send twice).
        let visible = (step["kind"] == "plugin" && step["mutates"] == true)
            || step["kind"] == "store_secret"
            || step["kind"] == "prompt";
        if stop == Stop::PowerCut {
            points.push(Point {
                label: format!("{seq}:unsynced"),
                what: format!("the intent of step {seq} ({name}), before its barrier"),
                needs_operator: false,
                durable: visible.then_some(false),
            });
        }
        points.push(Point {
            label: seq.to_string(),
            what: format!("the intent of step {seq} ({name})"),
            needs_operator: unsettled,
            durable: visible.then_some(true),
        });
        points.push(Point {
            label: format!("{seq}:result"),
            what: format!("the result of step {seq} ({name})"),
            needs_operator: false,
            durable: (unsettled || name.contains("rotate")).then_some(true),
        });
    }
    points.push(Point {
        label: "end".into(),
        what: "the end of the run, before the one write that ends it and releases its locks".into(),
        needs_operator: false,
        durable: None,
    });
    for kind in kinds {
        assert!(
            steps.iter().any(|s| s["kind"] == *kind),
            "the clean run has no {kind} step to abort at: {steps:#?}"
        );
    }
    points
}

/// The locks of run `run_id`, as `keycycle runs` lists them.
fn locks_of(ws: &Workspace, run_id: &str) -> Vec<serde_json::Value> {
    ws.unfinished_runs()
        .into_iter()
        .find(|r| r["run_id"] == run_id)
        .unwrap_or_else(|| panic!("run {run_id} is not listed as unfinished"))["locks"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Aborts `keycycle run` after durable point `i`, then, unless the resume
/// must stop for an operator there, aborts the resume after the next point
/// too; resumes to the end and checks the true state, the locks, the
/// pending actions and every file.
fn abort_and_resume(
    setup: fn(&GitLabSim) -> Case,
    backend: Backend,
    points: &[Point],
    i: usize,
    stop: Stop,
) {
    let sim = GitLabSim::start();
    let ws = backend.workspace(&sim);
    let case = setup(&sim);
    sim.state.clear_requests();
    let mut transcript = Transcript::default();

    let (aborted, lost) = stop_at(&ws, &case.args(), &points[i].label, stop);
    transcript.run("the aborted run", &aborted);
    if stop == Stop::PowerCut {
        match points[i].durable {
            Some(true) => assert_eq!(
                lost, 0,
                "a barrier made every journal write durable before this point"
            ),
            Some(false) => assert!(
                lost > 0,
                "the intent is grouped until its barrier, so a power cut here takes it"
            ),
            None => {}
        }
    }
    // What the dead process left, before any keycycle opens it again.
    ws.assert_files_clean_including(&backend.files(&["state/state.db", "state/secrets.json"]));
    let run_id = ws.only_unfinished_run();

    // A second crash, during the resume, at the next durable write.
    let mut at = i;
    if !points[i].needs_operator
        && let Some(next) = points.get(i + 1)
    {
        let (second, _) = stop_at(&ws, &["resume", &run_id], &next.label, stop);
        transcript.run("the aborted resume", &second);
        assert_eq!(ws.only_unfinished_run(), run_id);
        at = i + 1;
    }

    if points[at].needs_operator {
        // Nothing was sent: the process died between writing the intent
        // and sending the request. keycycle cannot know that, so it stops
        // and keeps the locks, every time it is asked.
        assert_eq!(rotations(&sim), 0, "the rotate request was never sent");
        let held = locks_of(&ws, &run_id);
        assert!(!held.is_empty(), "the run holds its locks");
        for attempt in ["the first resume", "the second resume"] {
            let resume = ws.run(&["resume", &run_id]);
            transcript.run(attempt, &resume);
            resume
                .assert_code(9)
                .stderr_has(&format!("step {}", points[at].label));
            assert_eq!(locks_of(&ws, &run_id), held, "{attempt} kept the locks");
        }
        assert_eq!(rotations(&sim), 0, "a resume that stops sends nothing");
        let retried = ws.run(&["resume", &run_id, "--retry-in-flight"]);
        transcript.run("keycycle resume --retry-in-flight", &retried);
        retried.assert_ok();
    } else {
        let resume = ws.run(&["resume", &run_id]);
        transcript.run("keycycle resume", &resume);
        resume.assert_ok();
    }

    let new = assert_rotated_once(&sim, &ws, &case.expect);
    if matches!(case.expect, Expect::Token { .. }) {
        assert_eq!(rotations(&sim), 1, "exactly one rotate request was sent");
    }
    assert!(ws.unfinished_runs().is_empty(), "the resumed run finished");
    let locks = ws.held_locks();
    assert!(locks.is_empty(), "locks left after the run: {locks:?}");
    let pending = ws.pending();
    match case.expect {
        Expect::Trigger { deferred: true, .. } => {
            assert_eq!(pending.len(), 1, "one deferred deletion: {pending:#?}");
            assert_eq!(pending[0]["call"], "gitlab.delete_trigger");
            assert_eq!(pending[0]["state"], "pending");
        }
        _ => assert!(pending.is_empty(), "nothing is pending: {pending:#?}"),
    }
    transcript.assert_lacks(&new);
    assert_secrets_kept(&ws, &new);
}

fn rotations(sim: &GitLabSim) -> usize {
    provider_requests(sim)
        .iter()
        .filter(|r| is_rotate(r))
        .count()
}

/// Aborts the runbook after each durable point of its clean run in turn,
/// and reports every scenario that went wrong.
fn abort_at_every_step(setup: fn(&GitLabSim) -> Case, kinds: &[&str]) {
    stop_at_every_step(setup, Backend::Sqlite, kinds, Stop::Abort)
}

/// Cuts the power as the runbook passes each durable point of its clean
/// run, and before each barrier, in turn: group commit must lose nothing
/// that a resume cannot do again.
fn power_cut_at_every_step(setup: fn(&GitLabSim) -> Case, kinds: &[&str]) {
    stop_at_every_step(setup, Backend::Sqlite, kinds, Stop::PowerCut)
}

fn stop_at_every_step(setup: fn(&GitLabSim) -> Case, backend: Backend, kinds: &[&str], stop: Stop) {
    let points = journal_points(setup, kinds, stop);
    let mut failures = Vec::new();
    for (i, point) in points.iter().enumerate() {
        eprintln!("{stop:?} {}: after {} ({})", i + 1, point.label, point.what);
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            abort_and_resume(setup, backend, &points, i, stop)
        }));
        if let Err(panic) = outcome {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_default();
            failures.push(format!(
                "aborted after {} ({}): {message}",
                point.label, point.what
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} abort scenarios failed:\n\n{}",
        failures.len(),
        points.len(),
        failures.join("\n\n")
    );
}

#[test]
fn personal_token_self_rotation_survives_an_abort_after_every_journaled_step() {
    abort_at_every_step(
        personal_token_self_rotation,
        &["plugin", "lock", "store_secret"],
    );
}

#[test]
fn project_token_rotation_survives_an_abort_after_every_journaled_step() {
    abort_at_every_step(project_token, &["plugin", "lock", "store_secret"]);
}

#[test]
fn trigger_token_replacement_survives_an_abort_after_every_journaled_step() {
    abort_at_every_step(trigger_token, &["plugin", "lock"]);
}

#[test]
fn a_deferred_trigger_deletion_survives_an_abort_after_every_journaled_step() {
    abort_at_every_step(
        trigger_token_with_deferred_deletion,
        &["plugin", "lock", "defer"],
    );
}

#[test]
fn webhook_secret_survives_an_abort_after_every_journaled_step() {
    abort_at_every_step(
        webhook_secret,
        &["plugin", "lock", "random", "store_secret"],
    );
}

#[test]
fn webhook_recreate_survives_an_abort_after_every_journaled_step() {
    abort_at_every_step(
        webhook_recreate,
        &["plugin", "lock", "random", "store_secret"],
    );
}

#[test]
fn personal_token_self_rotation_survives_a_power_cut_at_every_journaled_step() {
    power_cut_at_every_step(
        personal_token_self_rotation,
        &["plugin", "lock", "store_secret"],
    );
}

#[test]
fn webhook_secret_survives_a_power_cut_at_every_journaled_step() {
    power_cut_at_every_step(
        webhook_secret,
        &["plugin", "lock", "random", "store_secret"],
    );
}

#[test]
fn a_deferred_trigger_deletion_survives_a_power_cut_at_every_journaled_step() {
    power_cut_at_every_step(
        trigger_token_with_deferred_deletion,
        &["plugin", "lock", "defer"],
    );
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

    // The dead cleanup's claim is taken back and the action runs again:
    // its DELETE finds the trigger gone, GitLab answers 404, which the
    // plugin counts as deleted. That second DELETE is the only repeat.
    let again = ws.run(&["cleanup", "--output", "json"]);
    again.assert_ok();
    let report = again.json();
    assert_eq!(report.as_array().map(Vec::len), Some(1), "{report:#}");
    assert_eq!(report[0]["outcome"], "done", "{report:#}");
    assert_eq!(deletes(&sim), 2, "the DELETE was sent once more, not again");
    let pending = ws.pending();
    assert!(pending.is_empty(), "nothing is left pending: {pending:#?}");
    assert!(sim.state.snapshot().trigger(old_id).is_none());
    let again = ws.run(&["cleanup", "--output", "json"]);
    again.assert_ok();
    assert_eq!(again.json(), serde_json::json!([]), "nothing runs twice");
    assert_eq!(deletes(&sim), 2, "a done action is never sent again");
    assert_secrets_kept(&ws, &[]);
}

/// The DELETEs one cleanup attempt sends while GitLab answers 500: the
/// plugin itself sends a safe-to-repeat call twice more on a server error
/// (`MAX_SERVER_ERROR_RETRIES` in the gitlab plugin), then gives up.
const DELETES_PER_ATTEMPT: usize = 3;

/// Unix milliseconds of an RFC 3339 time as keycycle prints it.
fn parse_ms(text: &serde_json::Value) -> i64 {
    let text = text
        .as_str()
        .unwrap_or_else(|| panic!("not a time: {text}"));
    let t = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|e| panic!("{text} is not RFC 3339: {e}"));
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

fn wall_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// The one pending (or failed) action.
#[track_caller]
fn only_action(ws: &Workspace) -> serde_json::Value {
    let pending = ws.pending();
    assert_eq!(pending.len(), 1, "one action is kept: {pending:#?}");
    pending[0].clone()
}

#[test]
fn a_failing_deferred_action_stays_pending_and_is_never_dropped() {
    let sim = GitLabSim::start();
    let ws = gitlab_workspace(&sim);
    let old_id = deferred_trigger_deletion(&sim, &ws);
    sim.state
        .fail(FailRule::new("DELETE", "/api/v4/projects/", 500).times(1000));

    let before = wall_ms();
    let cleanup = ws.run(&["cleanup", "--output", "json"]);
    let after = wall_ms();
    cleanup.assert_code(5);
    let report = cleanup.json();
    assert_eq!(report[0]["outcome"], "retrying", "{report:#}");
    assert_eq!(
        deletes(&sim),
        DELETES_PER_ATTEMPT,
        "the action was attempted once"
    );
    let action = only_action(&ws);
    let next = parse_ms(&action["next_attempt_at"]);
    assert!(
        (before + 60_000..=after + 60_000).contains(&next),
        "the first retry is due a minute after the failure: {action:#}"
    );

    for _ in 0..2 {
        // A cleanup before the retry is due runs nothing and leaves the
        // action as it was.
        let early = ws.run(&["cleanup", "--output", "json"]);
        early.assert_ok();
        assert_eq!(early.json(), serde_json::json!([]), "nothing was due");
        assert_eq!(
            deletes(&sim),
            DELETES_PER_ATTEMPT,
            "the retry was not sent before it was due"
        );
        let action = only_action(&ws);
        assert_eq!(action["state"], "pending", "waiting to retry: {action:#}");
        assert_eq!(action["call"], "gitlab.delete_trigger");
        assert_eq!(action["attempts"], 1, "{action:#}");
        assert_eq!(parse_ms(&action["next_attempt_at"]), next, "{action:#}");
        assert!(
            action["last_error"]
                .as_str()
                .unwrap_or_default()
                .contains("500"),
            "{action:#}"
        );
    }
    assert!(
        sim.state.snapshot().trigger(old_id).is_some(),
        "the trigger was never deleted"
    );
    assert_secrets_kept(&ws, &[]);
}

/// Runs `keycycle cleanup --output json` with its clock moved to just past
/// the action's next attempt (`KEYCYCLE_DEBUG_NOW_OFFSET_SECS`, debug
/// builds only). Returns the run, the offset and the wall-clock interval
/// the run took, in milliseconds.
fn cleanup_when_due(ws: &Workspace, due_ms: i64) -> (Run, i64, (i64, i64)) {
    let offset_secs = ((due_ms - wall_ms()) / 1000 + 1).max(0);
    let before = wall_ms();
    let run = ws.run_env(
        &["cleanup", "--output", "json"],
        &[("KEYCYCLE_DEBUG_NOW_OFFSET_SECS", &offset_secs.to_string())],
    );
    (run, offset_secs * 1000, (before, wall_ms()))
}

#[test]
fn a_failing_deferred_action_backs_off_from_a_minute_doubling_to_an_hour_and_gives_up_after_eight_attempts()
 {
    let sim = GitLabSim::start();
    let ws = gitlab_workspace(&sim);
    let old_id = deferred_trigger_deletion(&sim, &ws);
    sim.state
        .fail(FailRule::new("DELETE", "/api/v4/projects/", 500).times(1000));
    // The wait after attempt k, in seconds.
    let backoff = [60, 120, 240, 480, 960, 1920, 3600];

    let mut due = parse_ms(&only_action(&ws)["next_attempt_at"]);
    let mut offset = 0;
    for attempt in 1..=8u64 {
        let (cleanup, moved, (before, after)) = cleanup_when_due(&ws, due);
        offset = moved;
        cleanup.assert_code(5);
        let report = cleanup.json();
        assert_eq!(report.as_array().map(Vec::len), Some(1), "{report:#}");
        let sent = DELETES_PER_ATTEMPT * attempt as usize;
        assert_eq!(deletes(&sim), sent, "attempt {attempt} was made once");
        let action = only_action(&ws);
        assert_eq!(action["attempts"], attempt, "{action:#}");
        if attempt < 8 {
            assert_eq!(report[0]["outcome"], "retrying", "{report:#}");
            assert_eq!(action["state"], "pending", "{action:#}");
            let wait = backoff[attempt as usize - 1] * 1000;
            due = parse_ms(&action["next_attempt_at"]);
            assert!(
                (before + offset + wait..=after + offset + wait).contains(&due),
                "attempt {attempt} is retried {} s later: {action:#}",
                wait / 1000
            );
            // Not a moment before it is due.
            let (early, _, _) = cleanup_when_due(&ws, due - 5_000);
            early.assert_ok();
            assert_eq!(early.json(), serde_json::json!([]), "attempt {attempt}");
            assert_eq!(deletes(&sim), sent, "sent before it was due");
        } else {
            assert_eq!(report[0]["outcome"], "failed", "{report:#}");
            assert_eq!(report[0]["retry_at"], serde_json::Value::Null);
            assert_eq!(action["state"], "failed", "given up: {action:#}");
        }
    }
    // A failed action is left for an operator: no later cleanup runs it.
    let later = ws.run_env(
        &["cleanup", "--output", "json"],
        &[("KEYCYCLE_DEBUG_NOW_OFFSET_SECS", "1000000")],
    );
    later.assert_ok();
    assert_eq!(later.json(), serde_json::json!([]));
    assert_eq!(
        deletes(&sim),
        8 * DELETES_PER_ATTEMPT,
        "a failed action is not retried on its own"
    );
    assert!(sim.state.snapshot().trigger(old_id).is_some());
    assert_secrets_kept(&ws, &[]);

    // `keycycle retry` puts it back; with GitLab answering again, the next
    // cleanup deletes the trigger and the action is done.
    sim.state.clear_faults();
    let id = only_action(&ws)["id"].as_str().unwrap().to_owned();
    ws.run(&["retry", &id]).assert_ok();
    assert_eq!(only_action(&ws)["state"], "pending");
    let (cleanup, _, _) = cleanup_when_due(&ws, due.max(wall_ms() + offset));
    cleanup.assert_ok();
    let report = cleanup.json();
    assert_eq!(report[0]["id"], id.as_str(), "{report:#}");
    assert_eq!(report[0]["outcome"], "done", "{report:#}");
    assert_eq!(
        deletes(&sim),
        8 * DELETES_PER_ATTEMPT + 1,
        "the retried action ran once"
    );
    assert!(
        sim.state.snapshot().trigger(old_id).is_none(),
        "the retried action deleted the trigger"
    );
    assert!(ws.pending().is_empty(), "a done action is not pending");
    ws.run(&["retry", &id])
        .assert_code(3)
        .stderr_has("it is done");
    assert_secrets_kept(&ws, &[]);
}

#[test]
fn a_cleanup_aborted_after_claiming_or_running_an_action_is_finished_by_the_next() {
    for point in ["cleanup:claimed", "cleanup:ran"] {
        let sim = GitLabSim::start();
        let ws = gitlab_workspace(&sim);
        let old_id = deferred_trigger_deletion(&sim, &ws);
        sim.state.clear_requests();
        ws.run_aborting(&["cleanup"], point);
        let sent = usize::from(point == "cleanup:ran");
        assert_eq!(deletes(&sim), sent, "after {point}");
        assert_eq!(
            sim.state.snapshot().trigger(old_id).is_none(),
            point == "cleanup:ran",
            "after {point}, the trigger is deleted only if the action ran"
        );
        let action = only_action(&ws);
        assert_eq!(action["state"], "running", "{point}: {action:#}");
        ws.assert_files_clean_including(&["state/state.db", "state/secrets.json"]);

        // The claimer is dead: the next cleanup takes the action back at
        // once and runs it (again), which the plugin's DELETE tolerates.
        let again = ws.run(&["cleanup", "--output", "json"]);
        again.assert_ok();
        let report = again.json();
        assert_eq!(
            report.as_array().map(Vec::len),
            Some(1),
            "{point}: {report:#}"
        );
        assert_eq!(report[0]["outcome"], "done", "{point}: {report:#}");
        assert_eq!(deletes(&sim), sent + 1, "{point}: sent once more");
        assert!(sim.state.snapshot().trigger(old_id).is_none(), "{point}");
        assert!(ws.pending().is_empty(), "{point}: nothing left pending");
        let last = ws.run(&["cleanup", "--output", "json"]);
        last.assert_ok();
        assert_eq!(last.json(), serde_json::json!([]), "{point}");
        assert_eq!(deletes(&sim), sent + 1, "{point}: nothing runs twice");
        assert_secrets_kept(&ws, &[]);
    }
}

/// The way out the exit-9 advice of a lost self-rotation gives: a person
/// creates a token in GitLab's UI and `gitlab-adopt-token` stores it and
/// hands it to the consumers; the stuck run is then abandoned.
#[test]
fn a_lost_self_rotation_is_repaired_with_gitlab_adopt_token() {
    let sim = GitLabSim::start();
    let ws = gitlab_workspace(&sim);
    let case = personal_token_self_rotation(&sim);
    let config = std::fs::read_to_string(ws.path().join("keycycle.toml")).unwrap();
    ws.file(
        "keycycle.toml",
        &format!("{config}[runbooks.gitlab-adopt-token]\nsecrets = [\"gitlab/ops\"]\n"),
    );
    let gate = sim
        .state
        .gate("POST", "/api/v4/personal_access_tokens/self/rotate", 1);
    ws.kill_at_gate(&case.args(), &gate, ARRIVAL);
    gate.release(Release::Process);
    assert!(gate.wait_finished(ARRIVAL));
    let run_id = ws.only_unfinished_run();
    ws.run(&["resume", &run_id])
        .assert_code(9)
        .stderr_has("gitlab-adopt-token");
    let lost: Vec<_> = family(&sim, sim.ops_token.id)
        .into_iter()
        .filter(|t| t.active)
        .collect();
    assert_eq!(lost.len(), 1, "GitLab rotated");
    plant(lost[0].value.expose());

    // The token a person creates in GitLab's UI.
    let by_hand = sim
        .state
        .add_token(
            keycycle_sim::TokenSeed::personal(sim.ops, "keycycle-by-hand")
                .value(&canary("glpat-"))
                .scopes(&["api"]),
        )
        .unwrap();
    let adopt = ws.run_env(
        &[
            "run",
            "gitlab-adopt-token",
            "--set",
            "store_as=gitlab/ops",
            "--set",
            "variables=acme/deploy:GITLAB_TOKEN",
            "--input",
            "new_token=env:NEW_GITLAB_TOKEN",
            "--output",
            "json",
        ],
        &[("NEW_GITLAB_TOKEN", by_hand.token.expose())],
    );
    adopt.assert_ok();
    let result = adopt.json()["result"].clone();
    assert_eq!(result["token_id"], by_hand.id, "{result}");
    assert_eq!(result["consumers"], 1, "{result}");
    assert!(
        ws.stored_secrets().get("gitlab/ops").map(String::as_str) == Some(by_hand.token.expose()),
        "the store holds the adopted token"
    );
    assert!(
        variable_value(&sim, (sim.deploy, "GITLAB_TOKEN")) == by_hand.token.expose(),
        "the consumer variable holds the adopted token"
    );
    assert_eq!(rotations(&sim), 1, "adopting rotates nothing");

    // The adopt run released its own lock; the stuck run still holds the
    // old token's until it is abandoned.
    assert_eq!(
        ws.held_locks(),
        [format!("gitlab:pat/{}", sim.ops_token.id)],
        "only the stuck run's lock is left"
    );
    ws.run(&[
        "abandon",
        &run_id,
        "--yes",
        "--reason",
        "adopted a new token",
    ])
    .assert_ok();
    assert!(ws.unfinished_runs().is_empty());
    assert!(ws.held_locks().is_empty());
    assert_secrets_kept(&ws, &[]);
}
