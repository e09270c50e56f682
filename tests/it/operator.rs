//! The operator's side of durable runs: a live run cannot be abandoned or
//! unlocked from under it, run lock files do not pile up, a run stopped
//! for an answer says how to resume it, `retry` and `history` guide the
//! operator, and every JSON output keeps the documented shape
//! (docs/json.md).

use std::time::Duration;

use crate::support::*;
use keycycle_sim::Release;

const ARRIVAL: Duration = Duration::from_secs(30);

/// A demo workspace whose runbook locks a credential, then asks for an
/// answer of the given prompt call (`prompt("label", …)`, …).
fn demo_workspace(sim: &DemoSim, prompt_call: &str) -> Workspace {
    let ws = Workspace::new();
    ws.config(&format!(
        "{}\n[runbooks.ask]\nsecrets = [\"demo/admin\"]\n",
        example_plugin_config(sim)
    ));
    let (_, admin) = sim.seed_admin();
    ws.set_secret("demo/admin", &admin);
    ws.runbook(
        "ask",
        &format!(
            "let ex = plugin(\"example\");\nlet me = ex.whoami();\nlock(\"demo:admin\");\nlet answer = {prompt_call};\n#{{ id: me.token_id }}\n"
        ),
    );
    ws
}

/// The files in STATE_DIR/runs.
fn run_files(ws: &Workspace) -> Vec<String> {
    match std::fs::read_dir(ws.path().join("state/runs")) {
        Ok(rd) => rd
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// A workspace on the GitLab simulator with a runbook that locks
/// `gitlab:test/live`, then deletes a trigger (the request a test gates)
/// and defers nothing.
fn live_workspace(sim: &GitLabSim) -> (Workspace, u64) {
    let ws = gitlab_workspace(sim);
    let trigger = sim.seed_trigger("old");
    ws.runbook(
        "live",
        &format!(
            "let gl = plugin(\"gitlab\");\nlock(\"gitlab:test/live\");\ngl.delete_trigger(#{{ project: \"acme/api\", trigger_id: {} }});\n",
            trigger.id
        ),
    );
    (ws, trigger.id)
}

#[test]
fn a_live_run_cannot_be_abandoned_or_unlocked_and_its_lock_file_goes_with_it() {
    let sim = GitLabSim::start();
    let (ws, trigger) = live_workspace(&sim);
    let gate = sim.state.gate("DELETE", "/api/v4/projects/", 1);
    let mut child = ws.spawn(&["run", "runbooks/live.rhai"]);
    if !gate.wait_arrived(ARRIVAL) {
        let _ = child.kill();
        let out = child.timed_wait_with_output().unwrap();
        panic!(
            "the run never sent its request:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let pid = child.id();
    let run_id = ws.only_unfinished_run();
    assert_eq!(run_files(&ws), [format!("{run_id}.lock")]);

    let abandon = ws.run(&["abandon", &run_id, "--yes"]);
    abandon
        .assert_code(8)
        .stderr_has(&format!(
            "run {run_id} is still running as process {pid} on host "
        ))
        .stderr_has("wait for it, or stop that process first");
    let unlock = ws.run(&["unlock", "gitlab:test/live", "--yes"]);
    unlock
        .assert_code(8)
        .stderr_has(&format!("process {pid}"))
        .stderr_has("gitlab:test/live was not released");
    // Nothing was released or ended.
    let runs = ws.unfinished_runs();
    assert_eq!(runs[0]["state"], "running");
    assert_eq!(runs[0]["locks"][0], "gitlab:test/live", "{runs:#?}");

    gate.release(Release::Process);
    let out = child.timed_wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_clean("stderr of the live run", &stderr);
    assert_eq!(out.status.code(), Some(0), "the live run:\n{stderr}");
    assert!(sim.state.snapshot().trigger(trigger).is_none());
    let show = ws.run(&["show", &run_id, "--output", "json"]);
    assert_eq!(show.json()["state"], "succeeded", "it stayed succeeded");
    assert!(run_files(&ws).is_empty(), "{:?}", run_files(&ws));
    // Once it is over, both commands go on as for any finished run.
    ws.run(&["abandon", &run_id, "--yes"])
        .assert_code(3)
        .stderr_has("already ended (succeeded)");
    ws.run(&["unlock", "gitlab:test/live", "--yes"])
        .assert_code(3)
        .stderr_has("not locked");
}

#[test]
fn a_run_stopped_for_an_answer_names_the_resume_line_and_its_locks() {
    let sim = DemoSim::start();
    let ws = demo_workspace(&sim, "prompt(\"label\", \"Label for the change\")");
    let stopped = ws.run(&["run", "ask"]);
    let run_id = ws.only_unfinished_run();
    stopped
        .assert_code(6)
        .stderr_has(&format!(
            "\n  keycycle resume {run_id} --input label=VALUE\n"
        ))
        .stderr_has("holds its locks (demo:admin)");
    // The process ended, so its lock file is gone; the run stays resumable.
    assert!(run_files(&ws).is_empty(), "{:?}", run_files(&ws));
    let json = ws.run(&["run", "ask", "--output", "json"]);
    json.assert_code(8);
    ws.run(&["resume", &run_id, "--input", "label=CHG-1"])
        .assert_ok();

    // A secret prompt: the answer comes from a file or a variable, never
    // from argv.
    let ws = demo_workspace(&sim, "prompt_secret(\"approval\", \"Approval token\")");
    let stopped = ws.run(&["run", "ask", "--output", "json"]);
    let run_id = ws.only_unfinished_run();
    stopped.assert_code(6);
    let line = format!("keycycle resume {run_id} --input approval=@FILE");
    assert_eq!(stopped.json()["error"]["resume_command"], line.as_str());
    assert!(
        stopped.stderr.contains(&format!("\n  {line}\n")),
        "{}",
        stopped.stderr
    );
    assert!(
        stopped.stderr.contains("approval=env:VAR"),
        "{}",
        stopped.stderr
    );
    // A dry run is not kept, so it has no resume line.
    let dry = ws.run(&["run", "ask", "--dry-run"]);
    dry.assert_code(6);
    assert!(!dry.stderr.contains("keycycle resume"), "{}", dry.stderr);
}

#[test]
fn lock_files_are_removed_after_success_and_abandon_and_stale_ones_are_taken_over() {
    let sim = DemoSim::start();
    let ws = demo_workspace(&sim, "prompt(\"label\", \"Label\")");
    ws.run(&["run", "ask", "--input", "label=x"]).assert_ok();
    assert!(run_files(&ws).is_empty(), "{:?}", run_files(&ws));

    ws.run(&["run", "ask"]).assert_code(6);
    let run_id = ws.only_unfinished_run();
    // What a run killed with SIGKILL leaves: its file, unlocked.
    let stale = ws.path().join(format!("state/runs/{run_id}.lock"));
    std::fs::write(&stale, "{\"pid\":1,\"host\":\"gone\",\"since\":\"x\"}").unwrap();
    ws.run(&["abandon", &run_id, "--yes"])
        .assert_ok()
        .stderr_has("released 1 lock");
    assert!(run_files(&ws).is_empty(), "{:?}", run_files(&ws));
}

#[test]
fn retry_refusals_name_a_command_that_exists() {
    let sim = GitLabSim::start();
    let ws = gitlab_workspace(&sim);
    let missing = ws.run(&["retry", "nope-1"]);
    missing
        .assert_code(3)
        .stderr_has("there is no deferred action nope-1")
        .stderr_has("`keycycle pending`");
    assert!(!missing.stderr.contains("--list"), "{}", missing.stderr);

    let old = sim.seed_trigger("old");
    ws.runbook(
        "later",
        &format!(
            "let gl = plugin(\"gitlab\");\ndefer(gl, \"delete_trigger\", #{{ project: \"acme/api\", trigger_id: {} }}, 3600, \"remove the old trigger\");\n",
            old.id
        ),
    );
    ws.run(&["run", "runbooks/later.rhai"]).assert_ok();
    let id = ws.pending()[0]["id"].as_str().unwrap().to_owned();
    ws.run(&["retry", &id])
        .assert_code(3)
        .stderr_has("is pending")
        .stderr_has("`keycycle cleanup` runs it when it is due");
}

/// Runs of the demo workspace: two that succeed, one stopped for an answer.
fn three_runs(ws: &Workspace) -> String {
    ws.run(&["run", "ask", "--input", "label=a"]).assert_ok();
    ws.run(&["run", "ask", "--input", "label=b"]).assert_ok();
    ws.run(&["run", "ask"]).assert_code(6);
    ws.only_unfinished_run()
}

fn ids(run: &Run) -> Vec<String> {
    run.assert_ok();
    run.json()
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["run_id"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn history_filters_by_limit_since_and_state_and_tables_have_headers() {
    let sim = DemoSim::start();
    let ws = demo_workspace(&sim, "prompt(\"label\", \"Label\")");
    let stopped = three_runs(&ws);
    let all = ids(&ws.run(&["history", "--output", "json"]));
    assert_eq!(all.len(), 3);
    assert_eq!(all[0], stopped, "newest first");
    assert_eq!(
        ids(&ws.run(&["history", "--limit", "2", "--output", "json"])),
        all[..2]
    );
    assert_eq!(
        ids(&ws.run(&["history", "--state", "running", "--output", "json"])),
        std::slice::from_ref(&stopped)
    );
    assert_eq!(
        ids(&ws.run(&["history", "--state", "succeeded", "--output", "json"])),
        all[1..]
    );
    assert!(
        ids(&ws.run(&["history", "--state", "needs-attention", "--output", "json"])).is_empty()
    );
    ws.run(&["history", "--state", "sleeping"])
        .assert_code(2)
        .stderr_has("needs-attention");
    assert_eq!(
        ids(&ws.run(&["history", "--since", "1h", "--output", "json"])).len(),
        3
    );
    assert_eq!(
        ids(&ws.run(&[
            "history",
            "--since",
            "2000-01-01T00:00:00Z",
            "--output",
            "json"
        ]))
        .len(),
        3
    );
    assert!(ids(&ws.run(&["history", "--since", "2999-01-01", "--output", "json"])).is_empty());
    ws.run(&["history", "--since", "last tuesday"])
        .assert_code(2)
        .stderr_has("7d");

    // Tables: a tab-separated header, then one line per row.
    let history = ws.run(&["history"]);
    history.assert_ok();
    let lines: Vec<&str> = history.stdout.lines().collect();
    assert_eq!(lines[0], "STARTED\tRUN_ID\tSTATE\tBY\tRUNBOOK\tCREDENTIALS");
    assert_eq!(lines.len(), 4, "{}", history.stdout);
    assert_eq!(lines[1].split('\t').nth(1), Some(stopped.as_str()));
    let runs = ws.run(&["runs"]);
    runs.assert_ok();
    let lines: Vec<&str> = runs.stdout.lines().collect();
    assert_eq!(lines[0], "RUN_ID\tSTATE\tRUNBOOK\tSTARTED\tBY\tLOCKS");
    assert_eq!(lines[1].split('\t').next(), Some(stopped.as_str()));
    assert_eq!(lines[1].split('\t').nth(5), Some("demo:admin"));
}

#[test]
fn positional_arguments_have_help() {
    let ws = Workspace::new();
    for (command, argument) in [
        ("unlock", "<CREDENTIAL>"),
        ("abandon", "<RUN_ID>"),
        ("retry", "<ACTION_ID>"),
        ("show", "<RUN_ID>"),
    ] {
        let help = ws.run(&[command, "--help"]);
        help.assert_ok();
        let line = help
            .stdout
            .lines()
            .find(|l| l.trim_start().starts_with(argument))
            .unwrap_or_else(|| panic!("{command} --help lists no {argument}:\n{}", help.stdout));
        assert!(
            line.trim_start().len() > argument.len() + 4,
            "{command} {argument} has no help: {line:?}"
        );
    }
    let help = ws.run(&["history", "--help"]);
    for flag in [
        "--limit <N>",
        "--since <WHEN>",
        "--state <STATE>",
        "--credential",
    ] {
        assert!(help.stdout.contains(flag), "history --help lacks {flag}");
    }
}

/// `2026-11-29T19:21:12.000Z`: RFC 3339, UTC, three fractional digits.
#[track_caller]
fn assert_time(value: &serde_json::Value, what: &str) {
    let text = value
        .as_str()
        .unwrap_or_else(|| panic!("{what} is not a string: {value}"));
    let shape: String = text
        .chars()
        .map(|c| if c.is_ascii_digit() { '9' } else { c })
        .collect();
    assert_eq!(shape, "9999-99-99T99:99:99.999Z", "{what} = {text}");
}

#[track_caller]
fn assert_fields(value: &serde_json::Value, fields: &[&str], what: &str) {
    let object = value
        .as_object()
        .unwrap_or_else(|| panic!("{what} is not an object: {value:#}"));
    for field in fields {
        assert!(
            object.contains_key(*field),
            "{what} lacks `{field}`: {value:#}"
        );
    }
    for key in object.keys() {
        assert!(
            key.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
            "{what} has a field not in snake_case: {key}"
        );
    }
}

const RUN_FIELDS: &[&str] = &[
    "run_id",
    "state",
    "runbook",
    "runbook_sha256",
    "params",
    "env",
    "user",
    "host",
    "plugins",
    "started_at",
    "finished_at",
    "credentials",
    "locks",
    "detail",
];

#[track_caller]
fn assert_run(run: &serde_json::Value) {
    assert_fields(run, RUN_FIELDS, "a run");
    assert_time(&run["started_at"], "started_at");
    if !run["finished_at"].is_null() {
        assert_time(&run["finished_at"], "finished_at");
    }
    let state = run["state"].as_str().unwrap();
    assert!(
        ["running", "succeeded", "failed", "needs-attention"].contains(&state),
        "state {state}"
    );
}

#[test]
fn json_outputs_keep_the_documented_shape() {
    let sim = DemoSim::start();
    let ws = demo_workspace(&sim, "prompt(\"label\", \"Label\")");

    // The run report, and a dry run's, which has no run id.
    let report = ws.run(&["run", "ask", "--input", "label=a", "--output", "json"]);
    report.assert_ok();
    let report = report.json();
    assert_fields(
        &report,
        &[
            "ok",
            "run_id",
            "runbook",
            "dry_run",
            "duration_ms",
            "steps",
            "result",
        ],
        "the run report",
    );
    assert_eq!(report["run_id"].as_str().unwrap().len(), 16);
    for step in report["steps"].as_array().unwrap() {
        assert_fields(
            step,
            &[
                "seq",
                "plugin",
                "operation",
                "mutates",
                "skipped",
                "input",
                "duration_ms",
                "outcome",
                "error_kind",
            ],
            "a report step",
        );
        assert_eq!(step["outcome"], "ok");
    }
    let dry = ws.run(&[
        "run",
        "ask",
        "--input",
        "label=a",
        "--dry-run",
        "--output",
        "json",
    ]);
    dry.assert_ok();
    assert!(dry.json()["run_id"].is_null(), "{}", dry.stdout);
    let stopped = ws.run(&["run", "ask", "--output", "json"]);
    stopped.assert_code(6);
    let error = &stopped.json()["error"];
    assert_fields(
        error,
        &["kind", "exit_code", "message", "resume_command"],
        "error",
    );
    assert_eq!(error["kind"], "input-required");

    let runs = ws.run(&["runs", "--output", "json"]);
    runs.assert_ok();
    let runs = runs.json();
    assert_eq!(runs.as_array().unwrap().len(), 1);
    assert_run(&runs[0]);
    assert_eq!(runs[0]["locks"][0], "demo:admin");
    let run_id = runs[0]["run_id"].as_str().unwrap().to_owned();

    let history = ws.run(&["history", "--output", "json"]);
    history.assert_ok();
    for run in history.json().as_array().unwrap() {
        assert_run(run);
    }

    let show = ws.run(&["show", &run_id, "--output", "json"]);
    show.assert_ok();
    let show = show.json();
    assert_run(&show);
    let steps = show["steps"].as_array().unwrap();
    assert!(!steps.is_empty());
    for step in steps {
        assert_fields(
            step,
            &[
                "seq",
                "kind",
                "name",
                "request",
                "mutates",
                "started_at",
                "finished_at",
                "duration_ms",
                "outcome",
                "error_kind",
                "error",
            ],
            "a show step",
        );
        assert_time(&step["started_at"], "step started_at");
        assert!(["ok", "error", "in-flight"].contains(&step["outcome"].as_str().unwrap()));
    }
    // The plugin call's request is JSON, not JSON in a string.
    let whoami = steps
        .iter()
        .find(|s| s["name"] == "example.whoami")
        .unwrap();
    assert!(whoami["request"].is_object(), "{whoami:#}");
    ws.run(&["abandon", &run_id, "--yes"]).assert_ok();
    let show = ws.run(&["show", &run_id, "--output", "json"]).json();
    assert_run(&show);
    let event = &show["events"][0];
    assert_fields(event, &["at", "kind", "message"], "an event");
    assert_time(&event["at"], "event at");

    // Deferred actions: pending, then what cleanup did.
    let sim = GitLabSim::start();
    let ws = gitlab_workspace(&sim);
    let (now, later) = (sim.seed_trigger("now"), sim.seed_trigger("later"));
    ws.runbook(
        "defer",
        &format!(
            "let gl = plugin(\"gitlab\");\n\
             defer(gl, \"delete_trigger\", #{{ project: \"acme/api\", trigger_id: {} }}, 0, \"remove now\");\n\
             defer(gl, \"delete_trigger\", #{{ project: \"acme/api\", trigger_id: {} }}, 3600, \"remove later\");\n",
            now.id, later.id
        ),
    );
    ws.run(&["run", "runbooks/defer.rhai"]).assert_ok();
    let pending = ws.pending();
    assert_eq!(pending.len(), 2);
    for action in &pending {
        assert_fields(
            action,
            &[
                "id",
                "run_id",
                "state",
                "description",
                "call",
                "credential",
                "created_at",
                "due_at",
                "next_attempt_at",
                "attempts",
                "claimed_by",
                "last_error",
            ],
            "a pending action",
        );
        for field in ["created_at", "due_at", "next_attempt_at"] {
            assert_time(&action[field], field);
        }
    }
    let text = ws.run(&["pending"]);
    assert_eq!(
        text.stdout.lines().next(),
        Some("ID\tSTATE\tCALL\tDESCRIPTION\tDUE\tATTEMPTS\tLAST_ERROR")
    );
    let cleanup = ws.run(&["cleanup", "--output", "json"]);
    cleanup.assert_ok();
    let report = cleanup.json();
    assert_eq!(report.as_array().unwrap().len(), 1, "{report:#}");
    assert_fields(
        &report[0],
        &["id", "outcome", "description", "error", "retry_at"],
        "a cleanup entry",
    );
    assert_eq!(report[0]["outcome"], "done");
}

#[test]
fn a_resumed_run_that_succeeds_takes_its_lock_with_it() {
    let sim = DemoSim::start();
    let ws = demo_workspace(&sim, "prompt(\"label\", \"Label\")");
    ws.run(&["run", "ask"]).assert_code(6);
    let run_id = ws.only_unfinished_run();
    let runs = ws.unfinished_runs();
    assert_eq!(runs[0]["locks"], serde_json::json!(["demo:admin"]));
    // While the run is kept, the credential is its: a new run is refused.
    ws.run(&["run", "ask", "--input", "label=early"])
        .assert_code(8)
        .stderr_has(&run_id);

    ws.run(&["resume", &run_id, "--input", "label=CHG-7"])
        .assert_ok();
    // The lock went with the run: no run lists it, `unlock` finds nothing
    // to release, and a new run takes the same credential and finishes.
    let runs = ws.unfinished_runs();
    assert!(runs.is_empty(), "{runs:#?}");
    ws.run(&["unlock", "demo:admin", "--yes"])
        .assert_code(3)
        .stderr_has("not locked");
    let again = ws.run(&["run", "ask", "--input", "label=CHG-8", "-o", "json"]);
    again.assert_ok();
    let again_id = again.json()["run_id"].as_str().unwrap().to_owned();
    assert_ne!(again_id, run_id);
    assert!(ws.unfinished_runs().is_empty());
    let show = ws.run(&["show", &again_id, "-o", "json"]);
    show.assert_ok();
    let steps: Vec<String> = show.json()["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        steps.iter().any(|s| s == "lock:demo:admin"),
        "the new run took the lock: {steps:?}"
    );
}

/// A deferred action runs with the plugins of the environment its run had:
/// a run with `--env staging` defers a revocation, and a plain
/// `keycycle cleanup` (no `--env`) sends it to staging, never to the
/// production service the base config names.
#[test]
fn cleanup_runs_an_action_in_the_environment_of_the_run_that_deferred_it() {
    let production = DemoSim::start();
    let staging = DemoSim::start();
    let ws = Workspace::new();
    ws.config(&format!(
        "[plugins.example]\npath = \"{}\"\nhosts = [\"{p}\"]\nsecrets = {{ token = \"demo/admin\" }}\nconfig = {{ base_url = \"{p}\" }}\n\n\
         [plugins.example.envs.staging]\nhosts = [\"{s}\"]\nsecrets = {{ token = \"demo/staging-admin\" }}\nconfig = {{ base_url = \"{s}\" }}\n",
        wasm("example").display(),
        p = production.origin(),
        s = staging.origin()
    ));
    let (_, prod_admin) = production.seed_admin();
    let (_, staging_admin) = staging.seed_admin();
    ws.set_secret("demo/admin", &prod_admin);
    ws.set_secret("demo/staging-admin", &staging_admin);
    // The same id names a token at both services.
    let doomed = staging
        .state
        .seed_token("old", &canary("demo-old-"))
        .unwrap();
    let bystander = production
        .state
        .seed_token("old", &canary("demo-old-"))
        .unwrap();
    assert_eq!(doomed, bystander);
    ws.runbook(
        "later",
        &format!(
            "defer(plugin(\"example\"), \"revoke_token\", #{{ id: {doomed} }}, 0, \"revoke the old token\");\n"
        ),
    );
    ws.run(&["run", "later", "--env", "staging"]).assert_ok();
    ws.run(&["cleanup"]).assert_ok();
    assert!(
        !staging.state.token(doomed).unwrap().active,
        "the action ran against staging"
    );
    assert!(
        production.state.token(bystander).unwrap().active,
        "production was not touched"
    );
}
