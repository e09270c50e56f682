//! Several runners, one truth: three `keycycle` processes with state
//! folders of their own (so none sees another's lock files), all on one
//! PostgreSQL database for run state and one OpenBao for secrets, as
//! runners on three machines would be. They race to rotate the same
//! credential, and run `cleanup` at the same time; every change at the
//! provider happens exactly once. (A runner that dies mid-rotation and is
//! finished by another is in `postgres.rs`, and every crash of `crash.rs`
//! runs on PostgreSQL too.)

use std::process::Child;
use std::time::Duration;

use keycycle_sim::Release;

use crate::support::*;

const RUNNERS: [&str; 3] = ["a", "b", "c"];

/// A workspace on PostgreSQL and `bao`, with the gitlab plugin, the
/// project-token runbook for inventory credential `deploy` (when given a
/// token id), and one config file per runner, `RUNNER.toml`, differing only
/// in its state folder. The ops token is stored in OpenBao.
fn runners(sim: &GitLabSim, bao: &OpenBao, token_id: Option<u64>) -> Workspace {
    let ws = Workspace::on_postgres();
    let credential = token_id
        .map(|id| {
            format!(
                "[credentials.deploy]\nrunbook = \"gitlab-project-token\"\n\
                 params = {{ owner = \"acme/api\", token_id = \"{id}\", \
                 variables = \"acme/deploy:API_TOKEN\", store_as = \"gitlab/kept\" }}\n"
            )
        })
        .unwrap_or_default();
    ws.config(&format!(
        r#"runbooks_dir = "{runbooks}"

[plugins.gitlab]
path = "{wasm}"
hosts = ["{o}"]
secrets = {{ token = "gitlab/ops" }}
config = {{ base_url = "{o}" }}

[runbooks.gitlab-project-token]
secrets = ["gitlab/ops", "gitlab/kept"]

{credential}
{secrets}"#,
        runbooks = repo_root().join("runbooks").display(),
        wasm = wasm("gitlab").display(),
        o = sim.origin(),
        secrets = bao.secrets_section("keycycle/", ""),
    ));
    let config = std::fs::read_to_string(ws.path().join("keycycle.toml")).unwrap();
    for runner in RUNNERS {
        let own = config.replacen(
            "state_dir = \"state\"",
            &format!("state_dir = \"state-{runner}\""),
            1,
        );
        assert_ne!(own, config);
        ws.file(&format!("{runner}.toml"), &own);
    }
    plant(&bao.root_token);
    let ops = sim.ops_token.token.expose();
    plant(ops);
    run_as(
        &ws,
        bao,
        "a",
        &["secrets", "set", "gitlab/ops", "--from-env", "OPS"],
    )
    .env("OPS", ops)
    .status()
    .map(|s| assert!(s.success(), "storing the ops token in OpenBao"))
    .unwrap();
    ws
}

/// `keycycle --config RUNNER.toml ARGS` with OpenBao's token.
fn run_as(ws: &Workspace, bao: &OpenBao, runner: &str, args: &[&str]) -> std::process::Command {
    let config = format!("{runner}.toml");
    let mut all = vec!["--config", config.as_str()];
    all.extend_from_slice(args);
    let mut cmd = ws.command(&all);
    cmd.env("VAULT_TOKEN", &bao.root_token)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    cmd
}

fn spawn_all(ws: &Workspace, bao: &OpenBao, args: &[&str]) -> Vec<(&'static str, Child)> {
    RUNNERS
        .iter()
        .map(|r| {
            (
                *r,
                run_as(ws, bao, r, args).spawn().expect("start keycycle"),
            )
        })
        .collect()
}

/// Waits for each runner; returns (runner, exit code, stdout, stderr),
/// with the output checked for every planted secret.
fn finish(
    children: Vec<(&'static str, Child)>,
) -> Vec<(&'static str, Option<i32>, String, String)> {
    children
        .into_iter()
        .map(|(runner, child)| {
            let out = wait_or_kill(child, &format!("runner {runner}"));
            let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
            let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
            assert_clean(&format!("stdout of runner {runner}"), &stdout);
            assert_clean(&format!("stderr of runner {runner}"), &stderr);
            (runner, out.status.code(), stdout, stderr)
        })
        .collect()
}

/// Three runners are asked to rotate the same credential at once. The
/// first to claim it rotates it; its rotate request is held at the
/// provider until the other two have ended, so they race against a
/// rotation in progress: each finds it claimed by the winner's unfinished
/// run and skips it (exit 0), starting no run of its own. One token is
/// minted, and the consumer and OpenBao hold it.
#[test]
fn three_runners_race_to_rotate_one_credential_and_it_is_rotated_once() {
    let sim = GitLabSim::start();
    let bao = OpenBao::start();
    let bot = sim.seed_project_token();
    let ws = runners(&sim, &bao, Some(bot.id));
    sim.state.clear_requests();
    let gate = sim.state.gate("POST", "/api/v4/projects/", 1);

    let children = spawn_all(&ws, &bao, &["rotate", "deploy", "--output", "json"]);
    assert!(
        gate.wait_arrived(Duration::from_secs(60)),
        "no runner sent the rotate request"
    );
    // Every runner but the winner ends while the rotation is held; the
    // winner is the one left.
    let mut running = children;
    let mut losers = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while losers.len() < RUNNERS.len() - 1 && std::time::Instant::now() < deadline {
        let mut still = Vec::new();
        for (runner, mut child) in running {
            if child.try_wait().unwrap().is_some() {
                losers.push((runner, child));
            } else {
                still.push((runner, child));
            }
        }
        running = still;
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        running.len(),
        1,
        "exactly one runner is rotating while the request is held"
    );
    let winner = running.pop();
    let losers = finish(losers);
    let run_id =
        ws.psql("SELECT record::json->>'last_run_id' FROM credentials WHERE id = 'deploy'");
    for (runner, code, stdout, stderr) in &losers {
        match code {
            Some(0) => {
                let summary: serde_json::Value = serde_json::from_str(stdout).unwrap();
                assert_eq!(
                    summary[0]["outcome"], "skipped",
                    "runner {runner}: {stdout}"
                );
                assert!(
                    summary[0]["error"]
                        .as_str()
                        .unwrap()
                        .contains(&format!("run {run_id} is rotating it")),
                    "runner {runner}: {stdout}"
                );
            }
            other => panic!("runner {runner} ended with {other:?}:\n{stdout}\n{stderr}"),
        }
    }
    gate.release(Release::Process);
    let (winner, child) = winner.unwrap_or_else(|| {
        panic!("no runner was left rotating: {losers:?}");
    });
    let done = finish(vec![(winner, child)]);
    assert_eq!(done[0].1, Some(0), "runner {winner}: {}", done[0].3);

    let rotations = sim
        .state
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST" && r.path.ends_with("/rotate"))
        .count();
    assert_eq!(rotations, 1, "one rotation among three runners");
    let snap = sim.state.snapshot();
    let family = snap.family(snap.token(bot.id).unwrap().family_id);
    let active: Vec<_> = family.iter().filter(|t| t.active).collect();
    assert_eq!(active.len(), 1, "{family:?}");
    let new = active[0].value.expose().to_owned();
    plant(&new);
    let (kept, version) = bao
        .kv_read("keycycle/gitlab/kept")
        .expect("kept in OpenBao");
    assert!(kept == new, "OpenBao holds the new token");
    assert_eq!(version, 1, "written once");
    assert_eq!(ws.psql("SELECT count(*) FROM runs"), "1", "one run");
    ws.assert_files_clean();
}

/// Five deferred deletions, and three runners running `cleanup` at the
/// same moment: each deletion is sent once, all are done, and together the
/// runners report five.
#[test]
fn three_runners_clean_up_at_once_and_each_action_runs_once() {
    let sim = GitLabSim::start();
    let bao = OpenBao::start();
    let ws = runners(&sim, &bao, None);
    let triggers: Vec<u64> = (0..5)
        .map(|i| sim.seed_trigger(&format!("old-{i}")).id)
        .collect();
    let defers: String = triggers
        .iter()
        .map(|id| {
            format!(
                "defer(gl, \"delete_trigger\", #{{ project: \"acme/api\", trigger_id: {id} }}, 0);\n"
            )
        })
        .collect();
    ws.runbook("retire", &format!("let gl = plugin(\"gitlab\");\n{defers}"));
    let scheduled = run_as(&ws, &bao, "a", &["run", "runbooks/retire.rhai"])
        .output()
        .unwrap();
    assert!(
        scheduled.status.success(),
        "{}",
        String::from_utf8_lossy(&scheduled.stderr)
    );
    assert_eq!(
        ws.psql("SELECT count(*) FROM deferred WHERE state = 'pending'"),
        "5"
    );
    sim.state.clear_requests();

    let ran = finish(spawn_all(&ws, &bao, &["cleanup", "--output", "json"]));
    let mut reported = 0;
    for (runner, code, stdout, stderr) in &ran {
        assert_eq!(*code, Some(0), "runner {runner}: {stderr}");
        let done: serde_json::Value = serde_json::from_str(stdout)
            .unwrap_or_else(|e| panic!("runner {runner}: {e}: {stdout}"));
        reported += done
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["outcome"] == "done")
            .count();
    }
    assert_eq!(
        reported, 5,
        "the runners together ran each action once: {ran:?}"
    );
    let deletes: Vec<String> = sim
        .state
        .requests()
        .into_iter()
        .filter(|r| r.method == "DELETE")
        .map(|r| r.path)
        .collect();
    assert_eq!(deletes.len(), 5, "{deletes:?}");
    for id in &triggers {
        assert_eq!(
            deletes
                .iter()
                .filter(|p| p.ends_with(&format!("/{id}")))
                .count(),
            1,
            "trigger {id} deleted once: {deletes:?}"
        );
        assert!(sim.state.snapshot().trigger(*id).is_none());
    }
    assert_eq!(
        ws.psql("SELECT count(*) FROM deferred WHERE state <> 'done'"),
        "0"
    );
    ws.assert_files_clean();
}

/// A deferred action whose call outlasts the claim's lease (here 1.5 s, a
/// debug switch; 10 minutes in release) keeps its claim, renewed while it
/// runs: a second runner's cleanup meanwhile finds nothing to do, and the
/// deletion is sent once.
#[test]
fn a_long_action_keeps_its_claim_while_another_runner_cleans_up() {
    let sim = GitLabSim::start();
    let bao = OpenBao::start();
    let ws = runners(&sim, &bao, None);
    let trigger = sim.seed_trigger("old").id;
    ws.runbook(
        "retire",
        &format!(
            "let gl = plugin(\"gitlab\");\ndefer(gl, \"delete_trigger\", #{{ project: \"acme/api\", trigger_id: {trigger} }}, 0);\n"
        ),
    );
    let scheduled = run_as(&ws, &bao, "a", &["run", "runbooks/retire.rhai"])
        .output()
        .unwrap();
    assert!(scheduled.status.success());
    sim.state.clear_requests();
    let gate = sim.state.gate("DELETE", "/api/v4/projects/", 1);

    let slow = run_as(&ws, &bao, "a", &["cleanup", "--output", "json"])
        .env("KEYCYCLE_DEBUG_CLAIM_LEASE_MS", "1500")
        .spawn()
        .unwrap();
    assert!(
        gate.wait_arrived(Duration::from_secs(60)),
        "runner a never sent the deletion"
    );
    // Two leases go by while the call is held.
    std::thread::sleep(Duration::from_millis(3500));
    let other = run_as(&ws, &bao, "b", &["cleanup", "--output", "json"])
        .env("KEYCYCLE_DEBUG_CLAIM_LEASE_MS", "1500")
        .output()
        .unwrap();
    let other_out = String::from_utf8_lossy(&other.stdout).into_owned();
    assert!(
        other.status.success(),
        "{}",
        String::from_utf8_lossy(&other.stderr)
    );
    let done: serde_json::Value = serde_json::from_str(&other_out).unwrap_or_default();
    assert!(
        done.as_array().is_none_or(|a| a.is_empty()),
        "runner b took over a claim that was being renewed: {other_out}"
    );
    gate.release(Release::Process);
    let finished = finish(vec![("a", slow)]);
    assert_eq!(finished[0].1, Some(0), "{}", finished[0].3);
    let deletes = sim
        .state
        .requests()
        .into_iter()
        .filter(|r| r.method == "DELETE")
        .count();
    assert_eq!(deletes, 1, "the deletion was sent once");
    assert_eq!(
        ws.psql("SELECT state FROM deferred"),
        "done",
        "runner a recorded it"
    );
}
