//! The host's retry policy, counted at the provider: a read the plugin
//! says may be retried (a 429 with `Retry-After`) is sent again, a few
//! times at most, and a call that changes the provider is never sent
//! twice, whatever the provider answers.
//!
//! These go through the example plugin, which hands a 429 back to the host
//! as `retryable` instead of waiting it out itself, so it is the host's
//! retry loop that the simulator's request log measures.

use crate::support::*;
use keycycle_sim::FailRule;

const READ: &str = r#"
let ex = plugin("example");
let me = ex.whoami();
#{ token_id: me.token_id }
"#;

const CREATE: &str = r#"
let ex = plugin("example");
let me = ex.whoami();
lock("demo:admin");
let fresh = ex.create_token(#{ name: "rotated" });
#{ fresh: fresh.get("id") }
"#;

fn workspace(sim: &DemoSim) -> (Workspace, u64) {
    let ws = Workspace::new();
    ws.config(&example_plugin_config(sim));
    let (id, admin) = sim.seed_admin();
    ws.set_secret("demo/admin", &admin);
    ws.runbook("read", READ);
    ws.runbook("create", CREATE);
    (ws, id)
}

fn count(sim: &DemoSim, method: &str, path: &str) -> usize {
    sim.state
        .requests()
        .iter()
        .filter(|r| r.method == method && r.path == path)
        .count()
}

#[test]
fn a_rate_limited_read_is_sent_again_by_the_host_until_it_passes() {
    let sim = DemoSim::start();
    let (ws, id) = workspace(&sim);
    sim.state.fail(
        FailRule::new("GET", "/api/whoami", 429)
            .retry_after(1)
            .times(2),
    );
    let run = ws.run(&["run", "read", "--output", "json"]);
    run.assert_ok();
    assert_eq!(run.json()["result"]["token_id"], id);
    assert_eq!(
        count(&sim, "GET", "/api/whoami"),
        3,
        "two 429s, then the answer"
    );
    assert!(
        run.stderr.contains("asked to retry") && run.stderr.contains("attempt 2 of 3"),
        "each wait is said:\n{}",
        run.stderr
    );
}

#[test]
fn a_read_that_stays_rate_limited_is_given_up_after_three_retries() {
    let sim = DemoSim::start();
    let (ws, _) = workspace(&sim);
    sim.state.fail(
        FailRule::new("GET", "/api/whoami", 429)
            .retry_after(1)
            .times(100),
    );
    let run = ws.run(&["run", "read"]);
    run.assert_code(5).stderr_has("whoami");
    assert_eq!(
        count(&sim, "GET", "/api/whoami"),
        4,
        "the first request and three retries"
    );
}

#[test]
fn a_rate_limited_create_is_never_sent_again() {
    let sim = DemoSim::start();
    let (ws, _) = workspace(&sim);
    sim.state.fail(
        FailRule::new("POST", "/api/tokens", 429)
            .retry_after(1)
            .times(1),
    );
    let run = ws.run(&["run", "create"]);
    run.assert_code(5).stderr_has("create_token");
    assert_eq!(
        count(&sim, "POST", "/api/tokens"),
        1,
        "a call that changes the provider is sent once"
    );
    assert_eq!(sim.state.tokens().len(), 1, "no token was created");
    // The 429 is journaled as the step's result: resuming the failed run
    // replays it rather than sending the create again.
    let history = ws.run(&["history", "--output", "json"]);
    let run_id = history.json()[0]["run_id"].as_str().unwrap().to_owned();
    ws.run(&["resume", &run_id]).assert_code(5);
    assert_eq!(
        count(&sim, "POST", "/api/tokens"),
        1,
        "the resume sent nothing"
    );
}
