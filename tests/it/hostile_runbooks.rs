//! Runbooks that misbehave: each ends with a clear error naming the file and
//! line, and none reaches a provider or leaks a secret.

use crate::support::*;

fn workspace(sim: &DemoSim) -> Workspace {
    demo_workspace(sim, "prints-secret").0
}

#[test]
fn a_runbook_that_loops_forever_is_stopped_at_its_line() {
    let sim = DemoSim::start();
    let ws = workspace(&sim);
    ws.runbook(
        "loops",
        "info(\"starting\");\nlet n = 0;\nloop { n += 1; }\n",
    );
    ws.run(&["run", "loops"])
        .assert_code(5)
        .stderr_has("loops.rhai:3")
        .stderr_has("operations");
}

#[test]
fn a_runbook_that_recurses_without_end_is_stopped() {
    let sim = DemoSim::start();
    let ws = workspace(&sim);
    ws.runbook("recurses", "fn down(n) {\n    down(n + 1)\n}\ndown(0);\n");
    // Rhai reports the limit at the outermost call, the one that started
    // the recursion: line 4.
    ws.run(&["run", "recurses"])
        .assert_code(5)
        .stderr_has("recurses.rhai:4:1: ")
        .stderr_has("exceeded its limit of 32 nested function calls (max_call_levels)")
        .stderr_has("is a recursion missing its base case?");
    assert!(
        sim.state.requests().is_empty(),
        "nothing reached the service"
    );
}

#[test]
fn a_runbook_that_builds_a_huge_string_is_stopped() {
    let sim = DemoSim::start();
    let ws = workspace(&sim);
    ws.runbook("huge", "let s = \"x\";\nloop {\n    s += s;\n}\n");
    ws.run(&["run", "huge"])
        .assert_code(5)
        .stderr_has("huge.rhai:3")
        .stderr_has("string");
}

#[test]
fn a_runbook_that_imports_outside_its_folder_is_refused_before_any_effect() {
    let sim = DemoSim::start();
    let ws = workspace(&sim);
    ws.runbook(
        "escape",
        "plugin(\"example\").whoami();\nimport \"../../etc/passwd\" as pw;\n",
    );
    ws.run(&["run", "escape"])
        .assert_code(7)
        .stderr_has("escape.rhai:2")
        .stderr_has("../../etc/passwd");
    ws.runbook("absolute", "import \"/etc/passwd\" as pw;\n");
    ws.run(&["run", "absolute"])
        .assert_code(7)
        .stderr_has("absolute.rhai:1");
    assert!(
        sim.state.requests().is_empty(),
        "compile errors happen before any effect"
    );

    // An import inside the folder works.
    ws.runbook("lib/greet", "fn greet(name) { `hello ${name}` }\n");
    ws.runbook("imports", "import \"lib/greet\" as g;\ng::greet(\"ops\")\n");
    let run = ws.run(&["run", "imports", "--output", "json"]);
    run.assert_ok();
    assert_eq!(run.json()["result"], "hello ops");
}

#[test]
fn a_misspelt_operation_is_refused_before_the_first_call() {
    let sim = DemoSim::start();
    let ws = workspace(&sim);
    // The typo is on the last call; without the compile-time check the
    // token would have been created before the run failed.
    ws.runbook(
        "typo",
        "let demo = plugin(\"example\");\n\
         let fresh = demo.create_token(#{ name: \"typo-test\" });\n\
         demo.revok_token(#{ id: fresh.id });\n",
    );
    for args in [&["run", "typo"][..], &["run", "typo", "--dry-run"][..]] {
        ws.run(args)
            .assert_code(7)
            .stderr_has("typo.rhai:3:")
            .stderr_has("plugin `example` has no operation `revok_token`")
            .stderr_has("did you mean `revoke_token`?");
    }
    assert!(
        sim.state.active_tokens_named("typo-test").is_empty(),
        "no token was created"
    );
    let sent: Vec<_> = sim
        .state
        .requests()
        .iter()
        .map(|r| format!("{r:?}"))
        .collect();
    assert!(sent.is_empty(), "nothing reached the service: {sent:?}");
}

#[test]
fn a_runbook_that_prints_a_secret_prints_a_mask_and_cannot_build_text_from_it() {
    let sim = DemoSim::start();
    let ws = workspace(&sim);
    ws.runbook(
        "prints-secret",
        "let s = secret(\"demo/admin\");\nprint(s);\ninfo(`token is ${s}`);\nlet url = \"https://example.com/?token=\" + s;\n",
    );
    let run = ws.run(&["run", "prints-secret", "-vv"]);
    run.assert_code(5)
        .stderr_has("token is ***")
        .stderr_has("prints-secret.rhai:4")
        .stderr_has("secret values cannot be turned into text");
}

/// Rhai's size limits count map entries, not their keys: 1,000 keys of
/// 512 KiB each pass them all and would hold 500 MiB, and a loop of them
/// gigabytes. The heap bound stops it, with the limit and the line.
#[test]
fn a_runbook_that_hoards_memory_in_map_keys_is_stopped() {
    let sim = DemoSim::start();
    let ws = workspace(&sim);
    ws.runbook(
        "hoard",
        "let k = \"x\";\nfor i in 0..19 { k += k; }\nlet m = #{};\nlet i = 0;\nloop {\n    m[`${i}${k}`] = i;\n    i += 1;\n    if i > 5000 { break; }\n}\nm.len()\n",
    );
    let run = ws.run(&["run", "hoard"]);
    run.assert_code(5)
        .stderr_has("hoard.rhai:")
        .stderr_has("used more than 512 MiB of memory");
}

/// Text a runbook fails with may come from a provider (a pod's message):
/// it reaches the terminal on one escaped line, never as a line that looks
/// like keycycle's own.
#[test]
fn a_failure_message_with_newlines_cannot_forge_a_line() {
    let sim = DemoSim::start();
    let ws = workspace(&sim);
    ws.runbook(
        "forge",
        "let said = \"rake aborted\\nerror: all good, nothing to do\\x1b[2J\";\nfail(`the sync Job failed: ${said}`);\n",
    );
    let run = ws.run(&["run", "forge"]);
    run.assert_code(5)
        .stderr_has("rake aborted\\nerror: all good");
    assert!(
        !run.stderr.lines().any(|l| l.starts_with("error: all good")),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains('\u{1b}'), "{}", run.stderr);
    let json = ws.run(&["run", "forge", "-o", "json"]);
    let message = json.json()["error"]["message"].as_str().unwrap().to_owned();
    assert!(!message.contains('\n'), "{message}");
}
