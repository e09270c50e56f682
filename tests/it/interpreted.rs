//! What the Python and JavaScript example plugins must both do, as the Rust
//! one does: the demo rotation workspace, the same description, the same
//! journal, and the recovery of a lost `create_token`. `python_plugin.rs`
//! and `js_plugin.rs` run these on their own builds.

use std::path::Path;
use std::time::Duration;

use keycycle_sim::Release;

use crate::support::*;

/// The demo rotation against `sim`, with plugin `example` from `wasm`.
pub fn workspace(sim: &DemoSim, wasm: &Path, inert_wasi: bool) -> Workspace {
    let ws = Workspace::new();
    ws.config(&format!(
        "[plugins.example]\npath = \"{}\"\nhosts = [\"{o}\"]\nsecrets = {{ token = \"demo/admin\" }}\n\
         config = {{ base_url = \"{o}\" }}\ninert_wasi = {inert_wasi}\n\n\
         [runbooks.demo-rotate]\nsecrets = [\"demo/admin\"]\n",
        wasm.display(),
        o = sim.origin()
    ));
    ws.runbook_from_repo("demo-rotate");
    let (_, admin) = sim.seed_admin();
    ws.set_secret("demo/admin", &admin);
    ws
}

/// The one active token, planted; the store must hold it.
pub fn the_active_token(sim: &DemoSim, ws: &Workspace) -> keycycle_sim::DemoToken {
    let active: Vec<_> = sim.state.active_tokens();
    assert_eq!(active.len(), 1, "one active token: {active:?}");
    let token = active[0].clone();
    plant(token.value.expose());
    assert!(
        ws.stored_secrets()["demo/admin"] == token.value.expose(),
        "the store holds the active token"
    );
    token
}

/// `plugins inspect`'s operations and declarations of `wasm` and of the
/// Rust example are the same.
pub fn describes_as_the_rust_example(wasm: &Path, inert_wasi: bool) {
    let sim = DemoSim::start();
    let inspect = |wasm: &Path| {
        let ws = workspace(&sim, wasm, inert_wasi);
        let run = ws.run(&["plugins", "inspect", "example", "--output", "json"]);
        run.assert_ok();
        let report = run.json();
        (report["operations"].clone(), report["declares"].clone())
    };
    assert_eq!(inspect(wasm), inspect(&crate::support::wasm("example")));
}

/// The demo rotation (a dry run, then the real one) with `wasm` and with
/// the Rust example: the same outcome at the service and in the store, and
/// the same journal.
pub fn rotates_as_the_rust_example(wasm: &Path, inert_wasi: bool) {
    let mut journals = Vec::new();
    for (which, wasm) in [
        ("rust", crate::support::wasm("example")),
        ("other", wasm.to_owned()),
    ] {
        let sim = DemoSim::start();
        let ws = workspace(&sim, &wasm, inert_wasi);
        let old_id = sim.state.tokens()[0].id;
        ws.run(&["run", "demo-rotate", "--dry-run", "--output", "json"])
            .assert_ok();
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
        let run_id = run.json()["run_id"].as_str().unwrap().to_owned();
        let show = ws.run(&["show", &run_id, "--output", "json"]);
        show.assert_ok();
        let steps: Vec<String> = show.json()["steps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| format!("{} {}", s["name"], s["outcome"]))
            .collect();
        ws.assert_files_clean();
        journals.push(steps);
    }
    assert_eq!(
        journals[0], journals[1],
        "the same journal with either plugin"
    );
}

/// The create request is processed but its answer is lost with the
/// process: the resume asks the plugin's `find_token`, which finds the
/// token by its idempotency label but cannot see its value, so the run
/// stops for an operator (exit 9) rather than creating a second token.
pub fn recovers_a_lost_create_as_the_rust_example(wasm: &Path, inert_wasi: bool) {
    let sim = DemoSim::start();
    let ws = workspace(&sim, wasm, inert_wasi);
    let gate = sim.state.gate("POST", "/api/tokens", 1);
    ws.kill_at_gate(&["run", "demo-rotate"], &gate, Duration::from_secs(60));
    gate.release(Release::Process);
    assert!(gate.wait_finished(Duration::from_secs(30)));
    let run_id = ws.only_unfinished_run();
    ws.run(&["resume", &run_id]).assert_code(9);
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
