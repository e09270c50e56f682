//! The run state in PostgreSQL, through the real binary: a rotation
//! journaled there and read back by `runs`, `show` and `history`; and two
//! runners with state folders of their own racing on one database for
//! one credential: one wins, the other is refused with the holder's run
//! id and host.

use keycycle_store::pg_test_server::{PASSWORD, TestServer};

use crate::support::*;

/// Rotates the demo admin token under a lock; stops at a prompt when no
/// `label` is given, keeping the lock.
const ROTATE: &str = r#"
let ex = plugin("example");
let me = ex.whoami();
lock("demo:admin");
let fresh = ex.create_token(#{ name: "rotated" });
store_secret("demo/admin", fresh.token);
let label = prompt("label", "Label for the change record");
ex.revoke_token(#{ id: me.token_id });
#{ old: me.token_id, label: label }
"#;

/// A demo workspace whose run state is database `db` of `server`.
fn workspace(sim: &DemoSim, server: &TestServer, db: &str) -> Workspace {
    let (ws, _) = demo_workspace(sim, "rotate");
    ws.config(&format!(
        "state = \"{}\"\n{}\n[runbooks.rotate]\nsecrets = [\"demo/admin\"]\n",
        server.url(db),
        example_plugin_config(sim)
    ));
    ws.runbook("rotate", ROTATE);
    ws
}

/// The password reaches keycycle only through the environment; it is a
/// canary, so no output or file may hold it.
fn env() -> [(&'static str, &'static str); 1] {
    plant(PASSWORD);
    [("KEYCYCLE_STATE_PASSWORD", PASSWORD)]
}

#[test]
fn a_rotation_is_journaled_in_postgres_and_read_back() {
    let server = TestServer::start();
    let db = server.create_database();
    let sim = DemoSim::start();
    let ws = workspace(&sim, &server, &db);

    let run = ws.run_env(
        &[
            "run",
            "rotate",
            "--input",
            "label=CHG-7",
            "--output",
            "json",
        ],
        &env(),
    );
    run.assert_ok();
    assert_eq!(run.json()["result"]["label"], "CHG-7");
    assert!(
        !ws.path().join("state/state.db").exists(),
        "the run state went to PostgreSQL, not to a local database"
    );
    let journaled: i64 = server
        .psql(&db, "SELECT count(*) FROM journal")
        .parse()
        .unwrap();
    assert!(journaled >= 5, "{journaled} journal entries");
    let run_id = server.psql(&db, "SELECT run_id FROM runs");

    let history = ws.run_env(&["history", "--output", "json"], &env());
    history.assert_ok();
    let runs = history.json();
    let runs = runs.as_array().unwrap();
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0]["run_id"], run_id.as_str());
    assert_eq!(runs[0]["state"], "succeeded");

    let show = ws.run_env(&["show", &run_id], &env());
    show.assert_ok();
    assert!(show.stdout.contains("create_token"), "{}", show.stdout);

    let unfinished = ws.run_env(&["runs", "--output", "json"], &env());
    unfinished.assert_ok();
    assert_eq!(unfinished.json().as_array().unwrap().len(), 0);

    // Without the password the database refuses, and says which one.
    let refused = ws.run(&["history"]);
    refused.assert_code(3);
    assert!(
        refused
            .stderr
            .contains(&format!("127.0.0.1:{}", server.port)),
        "{}",
        refused.stderr
    );
    ws.assert_files_clean();
}

#[test]
fn two_runners_race_for_one_credential_and_one_wins() {
    let server = TestServer::start();
    let db = server.create_database();
    let sim = DemoSim::start();
    let a = workspace(&sim, &server, &db);
    let b = workspace(&sim, &server, &db);

    // Both start at once and stop at the prompt if they get the lock, so
    // the winner keeps holding it.
    let spawn = |ws: &Workspace| {
        let mut cmd = ws.command(&["run", "rotate"]);
        cmd.envs(env())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        cmd.spawn().expect("start keycycle")
    };
    let (ca, cb) = (spawn(&a), spawn(&b));
    let outs = [wait_or_kill(ca, "runner a"), wait_or_kill(cb, "runner b")];
    let codes: Vec<Option<i32>> = outs.iter().map(|o| o.status.code()).collect();
    let winner = match codes.as_slice() {
        [Some(6), Some(8)] => 0,
        [Some(8), Some(6)] => 1,
        other => panic!(
            "one runner must stop at the prompt holding the lock (6) and the other be refused \
             (8): {other:?}\n{}\n{}",
            String::from_utf8_lossy(&outs[0].stderr),
            String::from_utf8_lossy(&outs[1].stderr)
        ),
    };
    let loser_err = String::from_utf8_lossy(&outs[1 - winner].stderr).into_owned();
    for out in &outs {
        assert_clean("stderr", &String::from_utf8_lossy(&out.stderr));
        assert_clean("stdout", &String::from_utf8_lossy(&out.stdout));
    }

    let holder = server.psql(
        &db,
        "SELECT run_id || ' ' || host FROM runs WHERE run_id IN (SELECT run_id FROM locks)",
    );
    let (run_id, host) = holder.split_once(' ').expect("one run holds the lock");
    assert!(loser_err.contains(run_id), "{loser_err}");
    assert!(loser_err.contains(&format!("@{host}")), "{loser_err}");
    assert_eq!(server.psql(&db, "SELECT count(*) FROM locks"), "1");

    // The other runner sees the same lock and runs: the state is shared.
    let ws = [&a, &b][1 - winner];
    let runs = ws.run_env(&["runs", "--output", "json"], &env());
    runs.assert_ok();
    assert!(runs.stdout.contains(run_id), "{}", runs.stdout);

    // The winner finishes; then the other may rotate.
    let winner_ws = [&a, &b][winner];
    winner_ws
        .run_env(&["resume", run_id, "--input", "label=first"], &env())
        .assert_ok();
    ws.run_env(&["run", "rotate", "--input", "label=second"], &env())
        .assert_ok();
}

#[test]
fn the_password_comes_from_a_private_file_never_the_url_and_doctor_reports_the_backend() {
    let server = TestServer::start();
    let db = server.create_database();
    let ws = Workspace::new();
    let secret = plant("pw-in-url-canary-5e1b");
    let url = server.url(&db);
    let with_password = url.replacen("keycycle@", &format!("keycycle:{secret}@"), 1);
    ws.config(&format!("state = \"{with_password}\"\n"));
    let refused = ws.run(&["history"]);
    refused.assert_code(3).stderr_has("holds a password");

    let file = ws.file("pgpass", &format!("{PASSWORD}\n"));
    plant(PASSWORD);
    ws.config(&format!(
        "state = \"{url}\"\nstate_password_file = \"pgpass\"\n"
    ));
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    ws.run(&["history"]).assert_code(3).stderr_has("chmod 600");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    ws.run(&["history"]).assert_ok();

    let doctor = ws.run(&["doctor", "--output", "json"]);
    let report = doctor.json();
    assert_eq!(report["state"]["backend"], "postgres", "{report}");
    assert_eq!(
        report["state"]["schema_version"],
        keycycle_store::state::PG_SCHEMA_VERSION,
        "{report}"
    );
    assert!(
        report["state"]["url"]
            .as_str()
            .unwrap()
            .contains(&format!("127.0.0.1:{}", server.port)),
        "{report}"
    );
}

/// A runner that died is seen alive by the other runners until its lease
/// runs out, not by a lock file they cannot see; then another runner
/// resumes its run.
/// Runner b beside runner a: the same runbooks and master key (as runners
/// that share a state share their runbooks and keys), a state folder of its
/// own (`--config b.toml`), so none of runner a's lock files. Returns the
/// environment both run with: the password and a lease of `lease_ms`.
fn second_runner(a: &Workspace, lease_ms: u64) -> Vec<(&'static str, String)> {
    let config = std::fs::read_to_string(a.path().join("keycycle.toml")).unwrap();
    let b_config = config.replacen("state_dir = \"state\"", "state_dir = \"state-b\"", 1);
    assert_ne!(config, b_config);
    a.file("b.toml", &b_config);
    std::fs::create_dir_all(a.path().join("state-b")).unwrap();
    std::fs::copy(
        a.path().join("state/secrets.json"),
        a.path().join("state-b/secrets.json"),
    )
    .unwrap();
    let mut env: Vec<(&'static str, String)> =
        env().iter().map(|(k, v)| (*k, (*v).to_owned())).collect();
    env.push(("KEYCYCLE_DEBUG_RUN_LEASE_MS", lease_ms.to_string()));
    env
}

/// `env` as `Workspace::run_env` takes it.
fn pairs<'a>(env: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    env.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// Runner a dies (SIGABRT) after taking the credential's lock (step 2);
/// returns its run's id.
fn runner_a_dies_holding_the_lock(
    a: &Workspace,
    server: &TestServer,
    db: &str,
    env: &[(&'static str, String)],
) -> String {
    let mut aborting = pairs(env);
    aborting.push(("KEYCYCLE_DEBUG_ABORT_AFTER", "2"));
    let died = a.run_env(&["run", "rotate", "--input", "label=x"], &aborting);
    assert_eq!(
        died.signal,
        Some(6),
        "runner a was to abort: {}",
        died.stderr
    );
    server.psql(db, "SELECT run_id FROM runs")
}

#[test]
fn a_dead_runners_run_is_refused_elsewhere_until_its_lease_runs_out() {
    const LEASE_MS: u64 = 4_000;
    let server = TestServer::start();
    let db = server.create_database();
    let sim = DemoSim::start();
    let a = workspace(&sim, &server, &db);
    let with_lease = second_runner(&a, LEASE_MS);
    let run_id = runner_a_dies_holding_the_lock(&a, &server, &db, &with_lease);
    // As if runner a had run on another machine, whose processes this one
    // cannot see.
    server.psql(
        &db,
        "UPDATE run_leases SET host = 'runner-a.internal', \
         holder = 'runner-a.internal:' || pid || ':0123456789abcdef:00000000'",
    );
    let lease_until: i64 = server
        .psql(&db, "SELECT lease_until FROM run_leases")
        .parse()
        .unwrap();

    // Runner b has no lock file for it, but the lease stands.
    let refused = a.run_env(
        &[
            "--config", "b.toml", "resume", &run_id, "--input", "label=x",
        ],
        &pairs(&with_lease),
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    assert!(
        now < lease_until,
        "the check came too late to see the lease"
    );
    refused
        .assert_code(8)
        .stderr_has(&format!("run {run_id} is still running"))
        .stderr_has("on host runner-a.internal")
        .stderr_has("lease");

    // Once the lease has run out, b resumes the run and finishes it.
    let wait = u64::try_from(lease_until - now).unwrap_or(0) + 300;
    std::thread::sleep(std::time::Duration::from_millis(wait));
    a.run_env(
        &[
            "--config", "b.toml", "resume", &run_id, "--input", "label=x",
        ],
        &pairs(&with_lease),
    )
    .assert_ok();
    assert_eq!(
        server.psql(&db, "SELECT state FROM runs"),
        "succeeded",
        "the run was finished by runner b"
    );
    assert_eq!(
        server.psql(&db, "SELECT count(*) FROM run_leases"),
        "0",
        "b gave the lease up when it finished"
    );
}

/// Runner b, on the same machine as runner a, but with a state folder of its
/// own (none of a's lock files): the lease names a process of this machine
/// that is gone, so b takes the run over at once instead of waiting for the
/// lease to run out. A live runner's lease still stands (see the race
/// above).
#[test]
fn a_runner_that_died_on_this_machine_is_taken_over_at_once() {
    // Long enough that waiting for it would fail the test's timing.
    const LEASE_MS: u64 = 600_000;
    let server = TestServer::start();
    let db = server.create_database();
    let sim = DemoSim::start();
    let a = workspace(&sim, &server, &db);
    let with_lease = second_runner(&a, LEASE_MS);
    let run_id = runner_a_dies_holding_the_lock(&a, &server, &db, &with_lease);
    let dead_pid = server.psql(&db, "SELECT pid FROM run_leases");

    let mut logged = with_lease.clone();
    logged.push(("KEYCYCLE_LOG", "info".to_owned()));
    let resumed = a.run_env(
        &[
            "--config", "b.toml", "resume", &run_id, "--input", "label=x",
        ],
        &pairs(&logged),
    );
    resumed.assert_ok().stderr_has(&format!(
        "process {dead_pid} that held it on this host is gone"
    ));
    assert_eq!(server.psql(&db, "SELECT state FROM runs"), "succeeded");
    assert_eq!(server.psql(&db, "SELECT count(*) FROM run_leases"), "0");
}

/// A run that can no longer renew its lease stops before its next change:
/// once the lease is another runner's (`taken`), or when the database
/// cannot be reached until the lease is about to run out (`unreachable`,
/// here its lease table renamed away). The run stays unfinished, and a
/// resume finishes the rotation exactly once.
#[test]
fn a_run_that_loses_its_lease_stops_before_its_next_change() {
    for how in ["taken", "unreachable"] {
        let sim = GitLabSim::start();
        let ws = gitlab_workspace_in(Workspace::on_postgres(), &sim);
        let bot = sim.seed_project_token();
        let args = [
            "run",
            "gitlab-project-token",
            "--set",
            "owner=acme/api",
            "--set",
            &format!("token_id={}", bot.id),
            "--set",
            "variables=acme/deploy:API_TOKEN",
        ];
        sim.state.clear_requests();
        // The run's first request is held while its lease goes away.
        let gate = sim.state.gate("GET", "/api/v4/", 1);
        let child = ws
            .command(&args)
            .env("KEYCYCLE_DEBUG_RUN_LEASE_MS", "1500")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        assert!(
            gate.wait_arrived(std::time::Duration::from_secs(30)),
            "{how}: the run never sent its first request"
        );
        let run_id = ws.psql("SELECT run_id FROM runs");
        match how {
            "taken" => ws.psql(
                "UPDATE run_leases SET host = 'runner-b.internal', \
                 holder = 'runner-b.internal:1:0123456789abcdef:00000000', \
                 lease_until = lease_until + 600000",
            ),
            _ => ws.psql("ALTER TABLE run_leases RENAME TO run_leases_away"),
        };
        let out = wait_or_kill(child, "the run that lost its lease");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(8), "{how}: {stderr}");
        assert!(
            stderr.contains(&format!(
                "stopping: run {run_id} may no longer be this process's"
            )) && stderr.contains(&format!("keycycle resume {run_id}")),
            "{how}: {stderr}"
        );
        assert_clean("stderr of the stopped run", &stderr);
        gate.release(keycycle_sim::Release::Drop);
        let changes: Vec<_> = sim
            .state
            .requests()
            .into_iter()
            .filter(|r| r.method != "GET" && !r.path.starts_with("/_sim"))
            .collect();
        assert!(
            changes.is_empty(),
            "{how}: sent after the lease was lost: {changes:?}"
        );
        assert_eq!(ws.psql("SELECT state FROM runs"), "running", "{how}");

        if how == "taken" {
            // Runner b holds it: this runner may not resume it.
            ws.run(&["resume", &run_id])
                .assert_code(8)
                .stderr_has("on host runner-b.internal");
            ws.psql("DELETE FROM run_leases");
        } else {
            ws.psql("ALTER TABLE run_leases_away RENAME TO run_leases");
        }
        ws.run(&["resume", &run_id]).assert_ok();
        let snap = sim.state.snapshot();
        let family = snap.family(snap.token(bot.id).unwrap().family_id);
        assert_eq!(
            family.iter().filter(|t| t.active).count(),
            1,
            "{how}: one active token after the resume: {family:?}"
        );
        let rotations = sim
            .state
            .requests()
            .into_iter()
            .filter(|r| r.method == "POST" && r.path.ends_with("/rotate"))
            .count();
        assert_eq!(rotations, 1, "{how}: rotated exactly once");
        ws.assert_files_clean();
    }
}
