//! Durable runs through the CLI: a run that stops is listed and resumed
//! from its journal without sending anything twice; a changed runbook is
//! refused; a replay that asks for something else is caught; the audit
//! history shows who did what, and never a secret.

use crate::support::*;

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
    let ws = Workspace::new();
    ws.config(&format!(
        "{}\n[runbooks.rotate]\nsecrets = [\"demo/admin\"]\n",
        example_plugin_config(sim)
    ));
    let (id, admin) = sim.seed_admin();
    ws.set_secret("demo/admin", &admin);
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
    ws.assert_files_clean();
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
