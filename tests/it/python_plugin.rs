//! A plugin written in Python: `plugins/example-py`, built with
//! componentize-py against `wit/plugin.wit`, in the real binary. It is the
//! Rust example's equal: the same description, the same demo rotation with
//! the same outcome, and the same recovery of a `create_token` whose answer
//! was lost. Its runtime imports `wasi:filesystem` and `wasi:sockets`, which
//! load only with `inert_wasi = true`.

use std::path::Path;
use std::time::Duration;

use keycycle_sim::Release;

use crate::support::*;

/// The demo rotation against `sim`, with plugin `example` from `wasm`.
fn workspace(sim: &DemoSim, wasm: &Path, inert_wasi: bool) -> Workspace {
    let ws = Workspace::new();
    ws.config(&format!(
        "[plugins.example]\npath = \"{}\"\nhosts = [\"{o}\"]\nsecrets = {{ token = \"demo/admin\" }}\n\
         config = {{ base_url = \"{o}\" }}\ninert_wasi = {inert_wasi}\n\n\
         [runbooks.demo-rotate]\nsecrets = [\"demo/admin\"]\n",
        wasm.display(),
        o = sim.origin()
    ));
    let text = std::fs::read_to_string(repo_root().join("runbooks/demo-rotate.rhai")).unwrap();
    // Without its comments: the files are scanned for every planted value,
    // and prose holds common words.
    let code: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect();
    ws.runbook("demo-rotate", &code.join("\n"));
    let (_, admin) = sim.seed_admin();
    ws.set_secret("demo/admin", &admin);
    ws
}

/// The one active token, which the store must hold; planted.
fn the_active_token(sim: &DemoSim, ws: &Workspace) -> keycycle_sim::DemoToken {
    let active: Vec<_> = sim
        .state
        .tokens()
        .into_iter()
        .filter(|t| t.active)
        .collect();
    assert_eq!(active.len(), 1, "one active token: {active:?}");
    let token = active[0].clone();
    plant(token.value.expose());
    assert!(
        ws.stored_secrets()["demo/admin"] == token.value.expose(),
        "the store holds the active token"
    );
    token
}

#[test]
fn without_inert_wasi_the_python_plugin_is_refused_naming_the_setting() {
    let sim = DemoSim::start();
    let ws = workspace(&sim, &python_example(), false);
    let list = ws.run(&["plugins", "list", "--output", "json"]);
    list.assert_ok();
    let row = list.json()[0].clone();
    assert_eq!(row["status"], "refused", "{row}");
    let error = row["error"].as_str().unwrap();
    assert!(
        error.contains("it imports wasi:") && error.contains("`inert_wasi = true`"),
        "{error}"
    );
    ws.run(&["run", "demo-rotate"]).assert_code(4);
    assert!(sim.state.requests().is_empty(), "nothing was sent");
}

#[test]
fn the_python_plugin_describes_itself_as_the_rust_one_does() {
    let sim = DemoSim::start();
    let inspect = |wasm: &Path| {
        let ws = workspace(&sim, wasm, true);
        let run = ws.run(&["plugins", "inspect", "example", "--output", "json"]);
        run.assert_ok();
        let report = run.json();
        (report["operations"].clone(), report["declares"].clone())
    };
    let rust = inspect(&wasm("example"));
    let python = inspect(&python_example());
    assert_eq!(python, rust);
}

#[test]
fn the_demo_rotation_runs_on_the_python_plugin_as_on_the_rust_one() {
    let mut results = Vec::new();
    for (which, wasm) in [("rust", wasm("example")), ("python", python_example())] {
        let sim = DemoSim::start();
        let ws = workspace(&sim, &wasm, true);
        let (old_id, _) = (sim.state.tokens()[0].id, ());
        let dry = ws.run(&["run", "demo-rotate", "--dry-run", "--output", "json"]);
        dry.assert_ok();
        assert_eq!(
            sim.state.tokens().len(),
            1,
            "{which}: a dry run creates nothing"
        );

        let run = ws.run(&["run", "demo-rotate", "--output", "json"]);
        run.assert_ok();
        let result = run.json()["result"].clone();
        let new = the_active_token(&sim, &ws);
        assert_eq!(result["new_id"], new.id, "{which}: {result}");
        assert_eq!(result["old_id"], old_id, "{which}: {result}");
        assert!(
            !sim.state.token(old_id).unwrap().active,
            "{which}: the old token is revoked"
        );
        let show = ws.run(&[
            "show",
            run.json()["run_id"].as_str().unwrap(),
            "--output",
            "json",
        ]);
        show.assert_ok();
        let steps: Vec<String> = show.json()["steps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| format!("{} {}", s["name"], s["outcome"]))
            .collect();
        ws.assert_files_clean();
        results.push((which, steps));
    }
    assert_eq!(
        results[0].1, results[1].1,
        "the same journal with either plugin"
    );
}

/// The create request is processed but its answer is lost with the
/// process: the resume asks `find_token` (the Python one), which finds the
/// token by its idempotency label but cannot see its value, so the run
/// stops for an operator (exit 9) rather than creating a second token.
#[test]
fn a_lost_create_is_found_again_by_the_python_find_token() {
    let sim = DemoSim::start();
    let ws = workspace(&sim, &python_example(), true);
    let gate = sim.state.gate("POST", "/api/tokens", 1);
    ws.kill_at_gate(&["run", "demo-rotate"], &gate, Duration::from_secs(60));
    gate.release(Release::Process);
    assert!(gate.wait_finished(Duration::from_secs(30)));
    let run_id = ws.only_unfinished_run();
    let resume = ws.run(&["resume", &run_id]);
    resume.assert_code(9);
    assert!(
        resume.stderr.contains("find_token") || resume.stderr.contains("found"),
        "{}",
        resume.stderr
    );
    let created: Vec<_> = sim
        .state
        .tokens()
        .into_iter()
        .filter(|t| t.name.starts_with("keycycle-admin-"))
        .collect();
    assert_eq!(
        created.len(),
        1,
        "one token was created, not two: {created:?}"
    );
    assert!(
        created[0].name.contains(&format!("[{run_id}")),
        "labelled with the step's idempotency key: {}",
        created[0].name
    );
    plant(created[0].value.expose());
    ws.assert_files_clean();
}
