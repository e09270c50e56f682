//! Seed 000 end to end: `github-pat-to-ibm-sm` against the GitHub
//! simulator and three IBM Secrets Manager instances (dev, stage, prod).
//! Pasted tokens with the wrong login, an extra scope or the wrong expiry
//! change nothing; a dry run changes nothing; the real run rotates dev,
//! stops at the change request for stage and prod, goes on once another
//! person approves it, checks the old tokens are dead, and the deferred
//! removals run in `keycycle cleanup`. The true state of every environment
//! is checked.

use keycycle_sim::{GitHubTokenSeed, GitHubUserSeed};

use crate::ibm_sm::{ENVS, IbmSim, NAME};
use crate::support::*;

struct Seed000 {
    ibm: IbmSim,
    gh_rt: tokio::runtime::Runtime,
    gh_server: Option<keycycle_sim::SimServer>,
    gh: keycycle_sim::GitHubState,
    ws: Workspace,
    /// Each environment's old token at GitHub: its id.
    old_pats: Vec<u64>,
    /// The pasted tokens' files, outside the workspace: the person's, not
    /// keycycle's, so the leak scan of what keycycle wrote skips them.
    inputs: tempfile::TempDir,
}

impl Drop for Seed000 {
    fn drop(&mut self) {
        if let Some(server) = self.gh_server.take() {
            self.gh_rt.block_on(server.shutdown());
        }
    }
}

fn in_days(days: i64) -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc() + time::Duration::days(days)
}

impl Seed000 {
    fn start() -> Seed000 {
        let ibm = IbmSim::start();
        let gh_rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let (server, gh) = gh_rt.block_on(keycycle_sim::start_github(0)).unwrap();
        let gh_origin = server.base_url.trim_end_matches('/').to_owned();
        gh.add_user(GitHubUserSeed::new("aihelp")).unwrap();
        gh.add_user(GitHubUserSeed::new("someone")).unwrap();
        // The old tokens are what each environment's secret holds now.
        let old_pats = ibm
            .old_values
            .iter()
            .map(|v| {
                gh.add_token(
                    GitHubTokenSeed::classic("aihelp", &["repo"])
                        .value(v)
                        .expires(in_days(10)),
                )
                .unwrap()
                .id
            })
            .collect();
        let checker = gh
            .add_token(GitHubTokenSeed::classic("someone", &[]).value(&canary("ghp_checker-")))
            .unwrap();
        let ws = Workspace::new();
        let iam = ibm.origin(0);
        let mut config = format!(
            "runbooks_dir = \"{}\"\n\n[plugins.github]\npath = \"{}\"\nhosts = [\"{gh_origin}\"]\nsecrets = {{ token = \"github/checker\" }}\nconfig = {{ base_url = \"{gh_origin}\" }}\n",
            repo_root().join("runbooks").display(),
            wasm("github").display(),
        );
        for (i, env) in ENVS.iter().enumerate() {
            let origin = ibm.origin(i);
            config.push_str(&format!(
                "\n[plugins.ibm-sm-{env}]\npath = \"{}\"\nhosts = [\"{origin}\", \"{iam}\"]\nsecrets = {{ api_key = \"ibm/api-key\" }}\nconfig = {{ base_url = \"{origin}\", iam_url = \"{iam}\" }}\n",
                wasm("ibm_sm").display()
            ));
        }
        ws.config(&config);
        ws.set_secret("ibm/api-key", &ibm.api_key);
        ws.set_secret("github/checker", checker.value.expose());
        Seed000 {
            ibm,
            gh_rt,
            gh_server: Some(server),
            gh,
            ws,
            old_pats,
            inputs: tempfile::tempdir().unwrap(),
        }
    }

    /// A token as the functional ID makes it on GitHub's settings page,
    /// written to a file for `--input NAME=@FILE`.
    fn person_creates(
        &self,
        env: &str,
        login: &str,
        scopes: &[&str],
        days: i64,
    ) -> (String, String) {
        let value = canary("ghp_new-");
        self.gh
            .add_token(
                GitHubTokenSeed {
                    note: format!("qa-analyzer-{env}"),
                    ..GitHubTokenSeed::classic(login, scopes)
                }
                .value(&value)
                .expires(in_days(days)),
            )
            .unwrap();
        let file = self
            .inputs
            .path()
            .join(format!("pat-{env}-{}.txt", self.gh.snapshot().tokens.len()));
        std::fs::write(&file, &value).unwrap();
        (value, format!("pat_{env}=@{}", file.display()))
    }

    fn current(&self, i: usize) -> Option<(String, String)> {
        self.ibm.states[i]
            .secret_named(NAME)
            .map(|s| (s.id.clone(), s.current_value().unwrap().expose().to_owned()))
    }
}

fn base() -> Vec<String> {
    [
        "run",
        "github-pat-to-ibm-sm",
        "--set",
        &format!("secret={NAME}"),
        "--set",
        "functional_id=aihelp",
        "--set",
        "note=qa-analyzer",
    ]
    .map(str::to_owned)
    .to_vec()
}

fn with(mut args: Vec<String>, extra: &[&str]) -> Vec<String> {
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    args
}

fn argv(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

#[test]
fn a_wrong_pasted_token_changes_nothing() {
    let s = Seed000::start();
    let before: Vec<_> = (0..3).map(|i| s.current(i)).collect();
    for (login, scopes, days, says) in [
        (
            "someone",
            &["repo"][..],
            90,
            "belongs to someone, not aihelp",
        ),
        (
            "aihelp",
            &["repo", "admin:org"][..],
            90,
            "remove [\"admin:org\"]",
        ),
        ("aihelp", &["repo"][..], 30, "not in 90 days"),
    ] {
        let (_, input) = s.person_creates("dev", login, scopes, days);
        s.ws.run(&argv(&with(base(), &["--input", &input])))
            .assert_code(5)
            .stderr_has(says)
            .stderr_has("nothing was changed");
        let after: Vec<_> = (0..3).map(|i| s.current(i)).collect();
        assert_eq!(after, before, "no environment changed ({says})");
        // The failed run released its locks, so the next attempt may start.
        assert!(s.ws.held_locks().is_empty());
    }
}

#[test]
fn the_pat_is_rotated_into_every_environment_behind_one_change_request() {
    let s = Seed000::start();
    let before: Vec<_> = (0..3).map(|i| s.current(i)).collect();
    let pats: Vec<(String, String)> = ENVS
        .iter()
        .map(|env| s.person_creates(env, "aihelp", &["repo"], 90))
        .collect();

    // The dry run reads everything, changes nothing, and records no request.
    let dry = with(
        base(),
        &[
            "--input",
            &pats[0].1,
            "--input",
            &pats[1].1,
            "--input",
            &pats[2].1,
            "--dry-run",
        ],
    );
    s.ws.run_env(&argv(&dry), &[("KEYCYCLE_DEBUG_USER", "ops")])
        .assert_ok()
        .stderr_has("dry run: would ask for approval `stage-prod`");
    assert_eq!((0..3).map(|i| s.current(i)).collect::<Vec<_>>(), before);
    assert!(s.ws.approvals_waiting().is_empty());

    // dev is rotated; the run stops at the change request.
    let run = with(base(), &["--input", &pats[0].1, "-o", "json"]);
    let stopped = s.ws.run_env(&argv(&run), &[("KEYCYCLE_DEBUG_USER", "ops")]);
    stopped
        .assert_code(10)
        .stderr_has("dev: GitHub accepts the new token as aihelp, scope repo");
    let run_id = stopped.json()["run_id"].as_str().unwrap().to_owned();
    let (dev_id, dev_value) = s.current(0).unwrap();
    assert_ne!(
        dev_id, s.ibm.old_ids[0],
        "dev has a new secret under the name"
    );
    assert!(dev_value == pats[0].0, "dev holds the new token");
    let renamed = s.ibm.states[0]
        .secret(&s.ibm.old_ids[0])
        .expect("the old dev secret is kept");
    assert!(renamed.name.starts_with(&format!("{NAME}-replaced-")));
    assert_eq!(
        s.current(1),
        before[1],
        "stage waits for the change request"
    );
    assert_eq!(s.current(2), before[2], "prod waits for the change request");

    let request = format!("{run_id}:stage-prod");
    s.ws.run_env(&["approve", &request], &[("KEYCYCLE_DEBUG_USER", "ops")])
        .assert_code(4);
    s.ws.run_env(
        &["approve", &request, "--comment", "CHG0042"],
        &[("KEYCYCLE_DEBUG_USER", "alice")],
    )
    .assert_ok();

    // stage and prod, then the old tokens: the run asks whether each was
    // deleted in GitHub.
    let resumed = s.ws.run_env(
        &[
            "resume", &run_id, "--input", &pats[1].1, "--input", &pats[2].1,
        ],
        &[("KEYCYCLE_DEBUG_USER", "ops")],
    );
    resumed
        .assert_code(6)
        .stderr_has("--input old_pat_deleted_dev=");
    for (i, (value, _)) in pats.iter().enumerate() {
        let (_, current) = s.current(i).unwrap();
        assert!(current == *value, "{} holds its new token", ENVS[i]);
    }
    // The person deletes dev's and stage's old tokens, and forgets prod's.
    s.gh.revoke_token(s.old_pats[0]).unwrap();
    s.gh.revoke_token(s.old_pats[1]).unwrap();
    let done = s.ws.run_env(
        &[
            "resume",
            &run_id,
            "--input",
            "old_pat_deleted_dev=yes",
            "--input",
            "old_pat_deleted_stage=yes",
            "--input",
            "old_pat_deleted_prod=yes",
            "-o",
            "json",
        ],
        &[("KEYCYCLE_DEBUG_USER", "ops")],
    );
    done.assert_ok()
        .stderr_has("prod: GitHub STILL ACCEPTS the old token");
    assert_eq!(
        done.json()["result"]["old_tokens_still_valid"],
        serde_json::json!(["prod"])
    );

    // The renamed old values are removed once External Secrets had time.
    assert_eq!(
        s.ws.run(&["pending", "-o", "json"])
            .json()
            .as_array()
            .map(Vec::len),
        Some(3)
    );
    s.ws.run_env(&["cleanup"], &[("KEYCYCLE_DEBUG_NOW_OFFSET_SECS", "3700")])
        .assert_ok();
    for (i, env) in ENVS.iter().enumerate() {
        assert!(
            s.ibm.states[i].secret(&s.ibm.old_ids[i]).is_none(),
            "{env}: the renamed old value is deleted"
        );
        let snapshot = s.ibm.states[i].snapshot();
        assert_eq!(snapshot.secrets.len(), 1, "{env}: one secret left");
    }
    s.ws.assert_files_clean_including(&["state/state.db", "state/secrets.json"]);
}

/// Crash injection, to the standard of `crash.rs`: the run is killed at
/// every provider request a clean rotation makes (at GitHub and at each
/// Secrets Manager instance, IAM included), the request is let through as
/// dropped or as processed with its answer lost, and resuming (approving
/// the change request when the run reaches it) must end with exactly one
/// rotation: each environment holds its new token under the name and its
/// old value under the renamed name once, with one deferred removal each.
mod crash {
    use std::time::Duration;

    use keycycle_sim::{Release, RequestRecord};

    use super::*;

    const ARRIVAL: Duration = Duration::from_secs(30);

    /// Which simulator a request went to: GitHub, or Secrets Manager
    /// instance 0, 1 or 2.
    #[derive(Clone, Copy, Debug, PartialEq)]
    enum At {
        GitHub,
        Sm(usize),
    }

    fn requests(s: &Seed000, at: At) -> Vec<RequestRecord> {
        let all = match at {
            At::GitHub => s.gh.requests(),
            At::Sm(i) => s.ibm.states[i].requests(),
        };
        all.into_iter()
            .filter(|r| !r.path.starts_with("/_sim"))
            .map(|mut r| {
                // Secret ids are random UUIDs: keep the path's shape.
                r.path = r
                    .path
                    .split('/')
                    .map(|seg| {
                        if seg.len() == 36 && seg.matches('-').count() == 4 {
                            "ID"
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

    fn clear(s: &Seed000) {
        s.gh.clear_requests();
        for state in &s.ibm.states {
            state.clear_requests();
        }
    }

    const ALL: [At; 4] = [At::GitHub, At::Sm(0), At::Sm(1), At::Sm(2)];

    /// A fresh scenario: the new tokens made, the old ones already deleted
    /// in GitHub, and the arguments of a run that answers everything.
    fn setup() -> (Seed000, Vec<String>) {
        let s = Seed000::start();
        for id in &s.old_pats {
            s.gh.revoke_token(*id).unwrap();
        }
        let mut args = base();
        for env in ENVS {
            let (_, input) = s.person_creates(env, "aihelp", &["repo"], 90);
            args.extend(["--input".to_owned(), input]);
            args.extend(["--input".to_owned(), format!("old_pat_deleted_{env}=yes")]);
        }
        clear(&s);
        (s, args)
    }

    /// Resumes until the run ends, approving its change request as alice
    /// when it waits at the gate.
    fn drive(s: &Seed000, args: &[String]) {
        let inputs: Vec<&str> = argv(args).into_iter().skip(base().len()).collect();
        for _ in 0..4 {
            let run_id = s.ws.only_unfinished_run();
            let mut resume = vec!["resume", run_id.as_str()];
            resume.extend(inputs.iter().copied());
            let run = s.ws.run(&resume);
            match run.code {
                0 => return,
                10 => {
                    for request in s.ws.approvals_waiting() {
                        let id = request["id"].as_str().unwrap().to_owned();
                        s.ws.run_env(&["approve", &id], &[("KEYCYCLE_DEBUG_USER", "alice")])
                            .assert_ok();
                    }
                }
                _ => panic!("resume exited with {}:\n{}", run.code, run.stderr),
            }
        }
        panic!("the run did not finish after 4 resumes");
    }

    /// What one finished rotation leaves, whatever crashed on the way.
    fn assert_rotated_once(s: &Seed000, new_values: &[String]) {
        for (i, env) in ENVS.iter().enumerate() {
            let secrets = s.ibm.states[i].snapshot().secrets;
            assert_eq!(
                secrets.len(),
                2,
                "{env}: the new secret and the renamed old one"
            );
            let (_, current) = s.current(i).unwrap();
            assert!(
                current == new_values[i],
                "{env}: the name holds the new token"
            );
            let old = s.ibm.states[i]
                .secret(&s.ibm.old_ids[i])
                .expect("the old secret is kept");
            assert!(
                old.name.starts_with(&format!("{NAME}-replaced-")),
                "{env}: renamed"
            );
            assert!(
                old.current_value().unwrap().expose() == s.ibm.old_values[i],
                "{env}: the renamed secret holds the old value"
            );
        }
        let pending = s.ws.run(&["pending", "-o", "json"]);
        pending.assert_ok();
        assert_eq!(
            pending.json().as_array().map(Vec::len),
            Some(3),
            "one deferred removal per environment"
        );
        assert!(s.ws.held_locks().is_empty(), "every lock released");
    }

    fn new_values(s: &Seed000) -> Vec<String> {
        (0..3).map(|i| s.current(i).unwrap().1).collect()
    }

    fn clean_flow() -> Vec<(At, Vec<RequestRecord>)> {
        let (s, args) = setup();
        let first = s.ws.run(&argv(&args));
        first.assert_code(10);
        drive(&s, &args);
        let values = new_values(&s);
        assert_rotated_once(&s, &values);
        ALL.iter().map(|at| (*at, requests(&s, *at))).collect()
    }

    fn crash_once(at: At, list: &[RequestRecord], k: usize, mode: Release) {
        let (s, args) = setup();
        let target = &list[k];
        // The path up to a random id is a prefix that still matches.
        let prefix = target.path.split("/ID").next().unwrap().to_owned();
        let n = gate_occurrence(list, k, &prefix);
        let gate = match at {
            At::GitHub => s.gh.gate(&target.method, &prefix, n),
            At::Sm(i) => s.ibm.states[i].gate(&target.method, &prefix, n),
        };
        let mut killed = s.ws.run_or_kill_at_gate(&argv(&args), &gate, ARRIVAL);
        if !killed {
            // The gated request comes after the change request.
            drive_one_approval(&s);
            let run_id = s.ws.only_unfinished_run();
            let inputs: Vec<&str> = argv(&args).into_iter().skip(base().len()).collect();
            let mut resume = vec!["resume", run_id.as_str()];
            resume.extend(inputs);
            killed = s.ws.run_or_kill_at_gate(&resume, &gate, ARRIVAL);
        }
        assert!(killed, "the gated request never came");
        gate.release(mode);
        assert!(
            gate.wait_finished(ARRIVAL),
            "the released request was not answered"
        );
        s.ws.assert_files_clean_including(&["state/state.db"]);
        drive(&s, &args);
        let values = new_values(&s);
        assert_rotated_once(&s, &values);
        s.ws.assert_files_lack("a new token", &values);
    }

    fn drive_one_approval(s: &Seed000) {
        for request in s.ws.approvals_waiting() {
            let id = request["id"].as_str().unwrap().to_owned();
            s.ws.run_env(&["approve", &id], &[("KEYCYCLE_DEBUG_USER", "alice")])
                .assert_ok();
        }
    }

    #[test]
    fn a_crash_at_every_boundary_still_rotates_every_environment_once() {
        let scenarios = crash_at_every_request(&clean_flow(), crash_once);
        assert!(scenarios > 20, "only {scenarios} scenarios");
    }
}
