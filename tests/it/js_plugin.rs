//! A plugin written in JavaScript: `plugins/example-js`, built with
//! componentize-js against `wit/plugin.wit`, in the real binary. With
//! stdio, HTTP and fetch disabled in the build it imports nothing beyond
//! what a Rust plugin may, so it loads under the same allowlist, with no
//! `inert_wasi`. It is the Rust example's equal: the same description, the
//! same demo rotation, the same recovery of a lost `create_token`.

use std::path::Path;
use std::time::Duration;

use keycycle_sim::Release;

use crate::support::*;

fn workspace(sim: &DemoSim, wasm: &Path) -> Workspace {
    let ws = Workspace::new();
    ws.config(&format!(
        "[plugins.example]\npath = \"{}\"\nhosts = [\"{o}\"]\nsecrets = {{ token = \"demo/admin\" }}\n\
         config = {{ base_url = \"{o}\" }}\n\n[runbooks.demo-rotate]\nsecrets = [\"demo/admin\"]\n",
        wasm.display(),
        o = sim.origin()
    ));
    let text = std::fs::read_to_string(repo_root().join("runbooks/demo-rotate.rhai")).unwrap();
    let code: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect();
    ws.runbook("demo-rotate", &code.join("\n"));
    let (_, admin) = sim.seed_admin();
    ws.set_secret("demo/admin", &admin);
    ws
}

#[test]
fn the_js_plugin_passes_the_check_under_the_rust_allowlist() {
    let ws = Workspace::new();
    let run = ws.run(&[
        "plugins",
        "check",
        js_example().to_str().unwrap(),
        "--output",
        "json",
    ]);
    run.assert_ok();
    let report = run.json();
    assert_eq!(
        report["findings"].as_array().unwrap().len(),
        0,
        "{}",
        run.stdout
    );
    assert!(
        report["imports"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["allowed"] == true && i["inert"] == false),
        "{}",
        run.stdout
    );
}

#[test]
fn the_js_plugin_describes_itself_as_the_rust_one_does() {
    let sim = DemoSim::start();
    let inspect = |wasm: &Path| {
        let ws = workspace(&sim, wasm);
        let run = ws.run(&["plugins", "inspect", "example", "--output", "json"]);
        run.assert_ok();
        let report = run.json();
        (report["operations"].clone(), report["declares"].clone())
    };
    assert_eq!(inspect(&js_example()), inspect(&wasm("example")));
}

#[test]
fn the_demo_rotation_runs_on_the_js_plugin_as_on_the_rust_one() {
    let mut journals = Vec::new();
    for (which, wasm) in [("rust", wasm("example")), ("js", js_example())] {
        let sim = DemoSim::start();
        let ws = workspace(&sim, &wasm);
        let old_id = sim.state.tokens()[0].id;
        let run = ws.run(&["run", "demo-rotate", "--output", "json"]);
        run.assert_ok();
        let result = run.json()["result"].clone();
        let active: Vec<_> = sim
            .state
            .tokens()
            .into_iter()
            .filter(|t| t.active)
            .collect();
        assert_eq!(active.len(), 1, "{which}: {active:?}");
        plant(active[0].value.expose());
        assert_eq!(result["new_id"], active[0].id, "{which}: {result}");
        assert_eq!(result["old_id"], old_id, "{which}: {result}");
        assert!(
            ws.stored_secrets()["demo/admin"] == active[0].value.expose(),
            "{which}: the store holds the new token"
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
        journals.push(steps);
    }
    assert_eq!(
        journals[0], journals[1],
        "the same journal with either plugin"
    );
}

/// A 429 from the service reaches the runbook as `retryable`, with the
/// service's message and the delay it asked for (a read is retried by the
/// host first; here it stays limited).
#[test]
fn a_rate_limit_is_retryable_with_the_services_delay() {
    let sim = DemoSim::start();
    let ws = workspace(&sim, &js_example());
    sim.state
        .fail(keycycle_sim::FailRule::new("GET", "/api/whoami", 429).times(100));
    ws.runbook(
        "limited",
        "let r = ();\ntry { plugin(\"example\").whoami(); r = #{ ok: true }; } catch (e) { r = #{ kind: e.kind, message: e.message, delay_ms: e.delay_ms }; }\nr",
    );
    let run = ws.run(&["run", "limited", "--output", "json"]);
    run.assert_ok();
    let result = run.json()["result"].clone();
    assert_eq!(result["kind"], "retryable", "{result}");
    assert!(result["delay_ms"].as_u64().is_some(), "{result}");
}

#[test]
fn a_lost_create_is_found_again_by_the_js_find_token() {
    let sim = DemoSim::start();
    let ws = workspace(&sim, &js_example());
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
        "{}",
        created[0].name
    );
    plant(created[0].value.expose());
    ws.assert_files_clean();
}
