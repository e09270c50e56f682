//! Durable runs through the CLI: a run that stops is listed and resumed
//! from its journal without sending anything twice; a changed runbook is
//! refused; a replay that asks for something else is caught; the audit
//! history shows who did what, and never a secret.

use crate::support::*;
use keycycle_sim::FailRule;

const ROTATE: &str = r#"
// Rotates the demo admin token, asking the operator for a label half-way.
let ex = plugin("example");
let me = ex.whoami();
lock("demo:admin");
let fresh = ex.create_token(#{ name: "rotated" });
store_secret("demo/admin", fresh.token);
let label = prompt("label", "Label for the change record");
ex.revoke_token(#{ id: me.token_id });
#{ old: me.token_id, fresh: fresh.get("id"), label: label }
"#;

fn workspace(sim: &DemoSim) -> (Workspace, u64) {
    let (ws, id) = demo_workspace(sim, "rotate");
    ws.runbook("rotate", ROTATE);
    (ws, id)
}

fn unfinished(ws: &Workspace) -> Vec<serde_json::Value> {
    let runs = ws.run(&["runs", "--output", "json"]);
    runs.assert_ok();
    runs.json().as_array().unwrap().clone()
}

#[test]
fn a_stopped_run_resumes_from_its_journal_without_sending_twice() {
    let sim = DemoSim::start();
    let (ws, old) = workspace(&sim);
    let first = ws.run(&["run", "rotate"]);
    first.assert_code(6).stderr_has("missing input `label`");
    let runs = unfinished(&ws);
    assert_eq!(runs.len(), 1);
    let run_id = runs[0]["run_id"].as_str().unwrap().to_owned();
    assert_eq!(runs[0]["state"], "running");
    assert_eq!(runs[0]["credentials"][0], "demo:admin");
    let posts_before = sim
        .state
        .requests()
        .iter()
        .filter(|r| r.method == "POST")
        .count();
    assert_eq!(posts_before, 1, "one token was created");

    // A second run on the same credential fails fast, naming the holder.
    ws.run(&["run", "rotate", "--input", "label=x"])
        .assert_code(8)
        .stderr_has(&run_id);

    let resumed = ws.run(&[
        "resume",
        &run_id,
        "--input",
        "label=CHG-42",
        "--output",
        "json",
    ]);
    resumed.assert_ok();
    let result = resumed.json()["result"].clone();
    assert_eq!(result["label"], "CHG-42");
    assert_eq!(result["old"], old);
    // The create was replayed, not sent again; the revoke happened once.
    let requests = sim.state.requests();
    assert_eq!(requests.iter().filter(|r| r.method == "POST").count(), 1);
    assert_eq!(requests.iter().filter(|r| r.method == "DELETE").count(), 1);
    let tokens = sim.state.tokens();
    assert_eq!(
        tokens.iter().filter(|t| t.active).count(),
        1,
        "exactly one active token"
    );
    let new = tokens.iter().find(|t| t.active).unwrap();
    plant(new.value.expose());
    assert_eq!(new.id, result["fresh"].as_u64().unwrap());
    assert!(unfinished(&ws).is_empty());
    // The lock went with the run.
    ws.run(&["resume", &run_id])
        .assert_code(3)
        .stderr_has("already succeeded");

    // The audit trail: who, which runbook and plugins, each step.
    let show = ws.run(&["show", &run_id, "--output", "json"]);
    show.assert_ok();
    let doc = show.json();
    assert_eq!(doc["state"], "succeeded");
    assert!(!doc["user"].as_str().unwrap().is_empty() && !doc["host"].as_str().unwrap().is_empty());
    assert_eq!(doc["runbook_sha256"].as_str().unwrap().len(), 64);
    assert_eq!(doc["plugins"][0]["name"], "example");
    assert_eq!(doc["plugins"][0]["sha256"].as_str().unwrap().len(), 64);
    let names: Vec<&str> = doc["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "example.whoami",
            "lock:demo:admin",
            "example.create_token",
            "store_secret:demo/admin",
            "prompt:label",
            "example.revoke_token"
        ]
    );
    assert!(
        doc["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "resumed")
    );
    let history = ws.run(&["history", "--credential", "demo:admin", "--output", "json"]);
    history.assert_ok();
    let h = history.json();
    assert_eq!(
        h.as_array().unwrap().len(),
        1,
        "the run that failed on the lock took none"
    );
    ws.run(&["show", &run_id]).assert_ok();
    ws.assert_files_clean_including(&["state/state.db", "state/secrets.json"]);
}

#[test]
fn a_changed_runbook_is_refused_unless_forced_and_a_different_step_is_caught() {
    let sim = DemoSim::start();
    let (ws, _) = workspace(&sim);
    ws.run(&["run", "rotate"]).assert_code(6);
    let run_id = unfinished(&ws)[0]["run_id"].as_str().unwrap().to_owned();
    ws.runbook(
        "rotate",
        &ROTATE.replace("name: \"rotated\"", "name: \"renamed\""),
    );
    ws.run(&["resume", &run_id, "--input", "label=x"])
        .assert_code(3)
        .stderr_has("changed since run")
        .stderr_has("--force");
    let forced = ws.run(&["resume", &run_id, "--input", "label=x", "--force"]);
    forced
        .assert_code(5)
        .stderr_has("runbook is not deterministic")
        .stderr_has("step 3");
    let creates = sim
        .state
        .requests()
        .iter()
        .filter(|r| r.method == "POST")
        .count();
    assert_eq!(creates, 1, "nothing more was sent");
}

#[test]
fn dry_runs_keep_no_state() {
    let sim = DemoSim::start();
    let (ws, _) = workspace(&sim);
    ws.run(&["run", "rotate", "--dry-run", "--input", "label=x"])
        .assert_ok();
    assert!(unfinished(&ws).is_empty());
    let history = ws.run(&["history", "--output", "json"]);
    assert_eq!(history.json().as_array().unwrap().len(), 0);
}

#[test]
fn unlock_asks_before_releasing() {
    let sim = DemoSim::start();
    let (ws, _) = workspace(&sim);
    ws.run(&["run", "rotate"]).assert_code(6);
    let credential = "demo:admin".to_owned();
    ws.run(&["unlock", &credential])
        .assert_code(6)
        .stderr_has("--yes");
    ws.run(&["unlock", &credential, "--yes"]).assert_ok();
    ws.run(&["unlock", &credential, "--yes"])
        .assert_code(3)
        .stderr_has("not locked");
}

#[test]
fn an_abandoned_run_leaves_the_list_and_frees_its_locks() {
    let sim = DemoSim::start();
    let (ws, _) = workspace(&sim);
    ws.run(&["run", "rotate"]).assert_code(6);
    let run_id = unfinished(&ws)[0]["run_id"].as_str().unwrap().to_owned();
    ws.run(&["abandon", &run_id])
        .assert_code(6)
        .stderr_has("--yes");
    ws.run(&["abandon", &run_id, "--yes", "--reason", "replaced by hand"])
        .assert_ok()
        .stderr_has("released 1 lock");
    assert!(unfinished(&ws).is_empty());
    ws.run(&["abandon", &run_id, "--yes"])
        .assert_code(3)
        .stderr_has("already ended");
    let show = ws.run(&["show", &run_id, "--output", "json"]);
    let doc = show.json();
    assert_eq!(doc["state"], "failed");
    assert!(
        doc["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "abandoned"
                && e["message"].as_str().unwrap().contains("replaced by hand"))
    );
    // The credential is free again: a new run takes it.
    ws.run(&["run", "rotate", "--input", "label=x"]).assert_ok();
    // Only failed actions can be retried, and the refusal says why.
    ws.run(&["retry", "no-such-action"])
        .assert_code(3)
        .stderr_has("no-such-action");
}

/// The run id of the workspace's newest run.
fn newest_run(ws: &Workspace) -> String {
    let history = ws.run(&["history", "--output", "json"]);
    history.assert_ok();
    history.json()[0]["run_id"].as_str().unwrap().to_owned()
}

fn sent(sim: &DemoSim, method: &str) -> usize {
    sim.state
        .requests()
        .iter()
        .filter(|r| r.method == method)
        .count()
}

#[test]
fn a_live_run_cannot_be_resumed() {
    let sim = DemoSim::start();
    let (ws, _) = workspace(&sim);
    let gate = sim.state.gate("DELETE", "/api/tokens/", 1);
    let live = ws.spawn(&["run", "rotate", "--input", "label=x"]);
    assert!(
        gate.wait_arrived(std::time::Duration::from_secs(30)),
        "the run never got to its revoke"
    );
    let run_id = ws.only_unfinished_run();
    ws.run(&["resume", &run_id, "--input", "label=x"])
        .assert_code(8)
        .stderr_has(&format!("run {run_id} is still running as process"));
    gate.release(keycycle_sim::Release::Process);
    let out = live.timed_wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_clean("stderr of the live run", &stderr);
    assert_eq!(out.status.code(), Some(0), "the live run:\n{stderr}");
    assert_eq!(sent(&sim, "POST"), 1, "the refused resume created nothing");
    assert_eq!(
        sent(&sim, "DELETE"),
        1,
        "the refused resume revoked nothing"
    );
    assert!(unfinished(&ws).is_empty());
    let new = sim.state.tokens().into_iter().find(|t| t.active).unwrap();
    plant(new.value.expose());
    ws.assert_files_clean_including(&["state/state.db", "state/secrets.json"]);
}

#[test]
fn a_changed_imported_file_is_refused_on_resume() {
    let sim = DemoSim::start();
    let (ws, _) = workspace(&sim);
    ws.runbook("lib/naming", "fn token_name() { \"rotated\" }\n");
    ws.runbook(
        "rotate",
        &ROTATE
            .replace(
                "let ex = plugin(\"example\");",
                "import \"lib/naming\" as naming;\nlet ex = plugin(\"example\");",
            )
            .replace("name: \"rotated\"", "name: naming::token_name()"),
    );
    ws.run(&["run", "rotate"]).assert_code(6);
    let run_id = unfinished(&ws)[0]["run_id"].as_str().unwrap().to_owned();
    ws.runbook("lib/naming", "fn token_name() { \"renamed\" }\n");
    ws.run(&["resume", &run_id, "--input", "label=x"])
        .assert_code(3)
        .stderr_has("changed since run")
        .stderr_has("--force");
    assert_eq!(sent(&sim, "POST"), 1, "nothing more was sent");
    assert_eq!(sent(&sim, "DELETE"), 0, "nothing more was sent");
    assert_eq!(
        unfinished(&ws)[0]["run_id"],
        run_id.as_str(),
        "still resumable"
    );
}

#[test]
fn now_is_replayed_from_the_journal_when_the_clock_has_moved() {
    let sim = DemoSim::start();
    let (ws, _) = workspace(&sim);
    ws.runbook(
        "clock",
        "let before = now();\nlet label = prompt(\"label\", \"Label\");\nlet after = now();\n#{ before: before, after: after, label: label }\n",
    );
    let secs = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
    };
    let started = secs();
    ws.run(&["run", "clock"]).assert_code(6);
    let run_id = unfinished(&ws)[0]["run_id"].as_str().unwrap().to_owned();
    // The clock the resume reads is at least two seconds later.
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let resumed_at = secs();
    let resumed = ws.run(&["resume", &run_id, "--input", "label=x", "--output", "json"]);
    resumed.assert_ok();
    let result = resumed.json()["result"].clone();
    let before = result["before"].as_i64().unwrap();
    let after = result["after"].as_i64().unwrap();
    assert!(
        (started..resumed_at).contains(&before),
        "the first now() is the journaled time of the first attempt ({started}..{resumed_at}): {result}"
    );
    assert!(
        after >= resumed_at,
        "a now() the journal did not have reads the clock: {result}"
    );
}

#[test]
fn a_failed_run_releases_its_locks() {
    let sim = DemoSim::start();
    let (ws, _) = workspace(&sim);
    ws.runbook(
        "failing",
        "lock(\"demo:admin\");\nfail(\"the change window is closed\");\n",
    );
    ws.run(&["run", "failing"])
        .assert_code(5)
        .stderr_has("the change window is closed");
    let run_id = newest_run(&ws);
    let show = ws.run(&["show", &run_id, "--output", "json"]);
    let doc = show.json();
    assert_eq!(doc["state"], "failed");
    assert_eq!(doc["credentials"][0], "demo:admin", "it did take the lock");
    assert_eq!(doc["locks"], serde_json::json!([]), "and released it");
    assert!(ws.held_locks().is_empty(), "{:?}", ws.held_locks());
    assert!(unfinished(&ws).is_empty());
    // The credential is free: a new run takes it.
    ws.run(&["run", "rotate", "--input", "label=x"]).assert_ok();
    let new = sim.state.tokens().into_iter().find(|t| t.active).unwrap();
    plant(new.value.expose());
}

/// The example plugin's `create_token` is recovered with `find_token`,
/// which finds the token by name but not its value. Step 3 of ROTATE.
const CREATE_STEP: &str = "3";

#[test]
fn a_create_that_happened_but_whose_value_was_lost_needs_attention_every_time() {
    let sim = DemoSim::start();
    let (ws, _) = workspace(&sim);
    let gate = sim.state.gate("POST", "/api/tokens", 1);
    ws.kill_at_gate(
        &["run", "rotate", "--input", "label=x"],
        &gate,
        std::time::Duration::from_secs(30),
    );
    gate.release(keycycle_sim::Release::Process);
    assert!(gate.wait_finished(std::time::Duration::from_secs(30)));
    let made = sim.state.tokens().into_iter().last().unwrap();
    plant(made.value.expose());
    let run_id = ws.only_unfinished_run();
    for attempt in ["first", "second"] {
        ws.run(&["resume", &run_id, "--input", "label=x"])
            .assert_code(9)
            .stderr_has(&format!("step {CREATE_STEP} (example.create_token)"))
            .stderr_has("was interrupted after it succeeded at the provider")
            .stderr_has(&format!("keycycle resume {run_id} --retry-in-flight"));
        let run = &unfinished(&ws)[0];
        assert_eq!(run["state"], "needs-attention", "{attempt}: {run:#}");
        assert_eq!(run["locks"][0], "demo:admin", "{attempt}: the lock is kept");
    }
    assert_eq!(sent(&sim, "POST"), 1, "the create was never sent again");
    assert_eq!(sent(&sim, "DELETE"), 0, "nothing was revoked");
    ws.assert_files_clean_including(&["state/state.db", "state/secrets.json"]);
}

#[test]
fn a_create_whose_lookup_fails_needs_attention_until_the_lookup_answers() {
    let sim = DemoSim::start();
    let (ws, old) = workspace(&sim);
    // Dies with the create's intent on disk and the request not sent.
    ws.run_aborting(&["run", "rotate", "--input", "label=x"], CREATE_STEP);
    let run_id = ws.only_unfinished_run();
    sim.state
        .fail(FailRule::new("GET", "/api/tokens", 500).times(1000));
    for attempt in ["first", "second"] {
        ws.run(&["resume", &run_id, "--input", "label=x"])
            .assert_code(9)
            .stderr_has(&format!("step {CREATE_STEP} (example.create_token)"))
            .stderr_has("looking up what it did with example.find_token failed")
            .stderr_has(&format!("keycycle resume {run_id}"));
        let run = &unfinished(&ws)[0];
        assert_eq!(run["locks"][0], "demo:admin", "{attempt}: the lock is kept");
    }
    assert_eq!(sent(&sim, "POST"), 0, "nothing was created");
    // Once the lookup answers, it finds nothing, so the create is sent.
    sim.state.clear_faults();
    let done = ws.run(&["resume", &run_id, "--input", "label=x", "--output", "json"]);
    done.assert_ok();
    assert_eq!(done.json()["result"]["old"], old);
    assert_eq!(sent(&sim, "POST"), 1, "one create");
    assert_eq!(sent(&sim, "DELETE"), 1, "one revoke");
    let active: Vec<_> = sim.state.active_tokens();
    assert_eq!(active.len(), 1);
    plant(active[0].value.expose());
    assert!(ws.held_locks().is_empty());
    ws.assert_files_clean_including(&["state/state.db", "state/secrets.json"]);
}

/// A resume runs under the config as it is now: a grant withdrawn while the
/// run was stopped is refused for every step still to come, whether it is
/// a secret the runbook reads or the origin its plugin calls.
#[test]
fn a_grant_withdrawn_while_a_run_was_stopped_is_not_used_by_its_resume() {
    let sim = DemoSim::start();
    let (ws, _) = demo_workspace(&sim, "later");
    let file = ws.path().join("keycycle.toml");
    let config = std::fs::read_to_string(&file).unwrap();
    let write = |text: String| std::fs::write(&file, text).unwrap();
    ws.runbook(
        "later",
        "let answer = prompt(\"go\", \"go on?\");\nlet admin = secret(\"demo/admin\");\nplugin(\"example\").whoami().user\n",
    );
    let stopped = ws.run(&["run", "later"]);
    stopped.assert_code(6);
    let run_id = ws.only_unfinished_run();

    // The runbook's grant of the secret is withdrawn.
    let withdrawn = config.replace(
        "[runbooks.later]\nsecrets = [\"demo/admin\"]",
        "[runbooks.later]\nsecrets = []",
    );
    assert_ne!(withdrawn, config);
    write(withdrawn);
    ws.run(&["resume", &run_id, "--input", "go=yes"])
        .assert_code(4)
        .stderr_has("demo/admin");

    // Another run, stopped the same way; then the plugin's host is
    // withdrawn: its call is refused, and nothing reaches the service.
    write(config.clone());
    ws.run(&["run", "later"]).assert_code(6);
    let run_id = ws.only_unfinished_run();
    let no_host = config.replace(&format!("hosts = [\"{}\"]", sim.origin()), "hosts = []");
    assert_ne!(no_host, config);
    write(no_host);
    let before = sim.state.requests().len();
    let run = ws.run(&["resume", &run_id, "--input", "go=yes"]);
    run.assert_code(4);
    assert_eq!(
        sim.state.requests().len(),
        before,
        "nothing reached the service"
    );
}

/// A run loads the plugins its runbook names, and no others: a runner
/// configured with many plugins pays only for the ones a runbook calls.
/// The other instance here is a FIFO nobody writes to, so reading it
/// would hang the run; a misconfigured one would be refused. Neither is
/// touched, and the run's record names only the plugin it used.
#[test]
fn a_run_loads_and_records_only_the_plugins_its_runbook_names() {
    let sim = DemoSim::start();
    let (ws, _) = demo_workspace(&sim, "whoami");
    let fifo = ws.path().join("never-read.wasm");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo runs");
    assert!(made.success());
    ws.config(&format!(
        "{}\n[runbooks.whoami]\nsecrets = [\"demo/admin\"]\n\n[plugins.hanging]\npath = \"{}\"\n\n[plugins.missing]\npath = \"{}\"\n",
        example_plugin_config(&sim),
        fifo.display(),
        ws.path().join("no-such.wasm").display()
    ));
    ws.runbook("whoami", "plugin(\"example\").whoami()");
    let run = ws.run(&["run", "whoami", "--output", "json"]);
    run.assert_ok();
    let run_id = run.json()["run_id"].as_str().unwrap().to_owned();
    let show = ws.run(&["show", &run_id, "--output", "json"]);
    show.assert_ok();
    let doc = show.json();
    let names: Vec<&str> = doc["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["example"]);

    // A runbook that computes a plugin's name may ask for any of them, so
    // all are loaded before it runs (the FIFO would hang it: gone now).
    ws.config(&format!(
        "{}\n[runbooks.computed]\nsecrets = [\"demo/admin\"]\n\n[plugins.missing]\npath = \"{}\"\n",
        example_plugin_config(&sim),
        ws.path().join("no-such.wasm").display()
    ));
    ws.runbook(
        "computed",
        "let name = \"exam\" + \"ple\"; plugin(name).whoami()",
    );
    ws.run(&["run", "computed"]).assert_ok();
    // A computed name that did not load fails at its call, with why.
    ws.runbook(
        "computed",
        "let name = \"miss\" + \"ing\"; plugin(name).whoami()",
    );
    ws.run(&["run", "computed"])
        .assert_code(5)
        .stderr_has("no-such.wasm");
}
