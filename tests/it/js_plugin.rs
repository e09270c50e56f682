//! A plugin written in JavaScript: `plugins/example-js`, built with
//! componentize-js against `wit/plugin.wit`, in the real binary. With
//! stdio, HTTP and fetch disabled in the build it imports nothing beyond
//! what a Rust plugin may, so it loads under the same allowlist, with no
//! `inert_wasi`. It is the Rust example's equal: the same description, the
//! same demo rotation, the same recovery of a lost `create_token`.

use crate::interpreted::*;
use crate::support::*;

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
    describes_as_the_rust_example(&js_example(), false);
}

#[test]
fn the_demo_rotation_runs_on_the_js_plugin_as_on_the_rust_one() {
    rotates_as_the_rust_example(&js_example(), false);
}

/// A 429 from the service reaches the runbook as `retryable`, with the
/// service's message and the delay it asked for (a read is retried by the
/// host first; here it stays limited).
#[test]
fn a_rate_limit_is_retryable_with_the_services_delay() {
    let sim = DemoSim::start();
    let ws = workspace(&sim, &js_example(), false);
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
    recovers_a_lost_create_as_the_rust_example(&js_example(), false);
}
