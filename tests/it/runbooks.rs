//! Running runbooks the way an operator does: parameters, prompts answered
//! with `--input`, dry runs, JSON output and exit codes, with the example
//! plugin against the demo token service.

use crate::support::*;

fn workspace(sim: &DemoSim) -> Workspace {
    let ws = Workspace::new();
    ws.config(&format!(
        "{}\n[runbooks.issue]\nsecrets = [\"demo/admin\"]\n",
        example_plugin_config(sim)
    ));
    let (_, admin) = sim.seed_admin();
    ws.set_secret("demo/admin", &admin);
    ws
}

const ISSUE: &str = r#"
// Creates a token named after a parameter, after asking the operator.
let ex = plugin("example");
let me = ex.whoami();
let label = prompt("label", "Label for the new token");
let approval = prompt_secret("approval", "Change approval code");
if !confirm("go", "Create the token?") { fail("the operator said no"); }
let created = ex.create_token(#{ name: params.name + "-" + label });
let check = ex.check_token(#{ token: created.token });
info(`created token ${created.id} as ${me.user}, valid: ${check.valid}`);
#{ id: created.id, name: created.name, valid: check.valid, token: created.token, approval: approval }
"#;

#[test]
fn params_and_prompts_from_inputs_with_json_output() {
    let sim = DemoSim::start();
    let ws = workspace(&sim);
    ws.runbook("issue", ISSUE);
    let approval = canary("approval-");
    let inputs = tempfile::tempdir().unwrap();
    let approval_file = inputs.path().join("approval.txt");
    std::fs::write(&approval_file, format!("{approval}\n")).unwrap();
    let run = ws.run(&[
        "run",
        "issue",
        "--set",
        "name=ci",
        "--input",
        "label=nightly",
        "--input",
        &format!("approval=@{}", approval_file.display()),
        "--input",
        "go=yes",
        "--output",
        "json",
    ]);
    run.assert_ok();
    let report = run.json();
    assert_eq!(report["ok"], true);
    let result = &report["result"];
    assert_eq!(result["valid"], true);
    assert_eq!(result["token"], "***", "secret outputs are masked in JSON");
    assert_eq!(
        result["approval"], "***",
        "prompted secrets are masked in JSON"
    );
    assert!(
        result["name"].as_str().unwrap().starts_with("ci-nightly"),
        "{result}"
    );
    // The provider really holds the new token, active.
    let created = sim
        .state
        .token(result["id"].as_u64().unwrap())
        .expect("token exists at the provider");
    assert!(created.active);
    assert!(created.name.starts_with("ci-nightly"));
    let steps = report["steps"].as_array().unwrap();
    let ops: Vec<&str> = steps
        .iter()
        .map(|s| s["operation"].as_str().unwrap())
        .collect();
    assert_eq!(ops, ["whoami", "create_token", "check_token"]);
    ws.assert_files_clean_including(&["state/state.db", "state/secrets.json"]);
}

#[test]
fn secret_inputs_come_from_env_and_never_from_argv() {
    let sim = DemoSim::start();
    let ws = workspace(&sim);
    ws.runbook("issue", ISSUE);
    let approval = canary("approval-");
    let out = ws
        .command(&[
            "run",
            "issue",
            "--set",
            "name=ci",
            "--input",
            "label=x",
            "--input",
            "approval=env:APPROVAL",
            "--input",
            "go=y",
        ])
        .env("APPROVAL", &approval)
        .timed_output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_clean("stdout", &String::from_utf8_lossy(&out.stdout));
    assert_clean("stderr", &String::from_utf8_lossy(&out.stderr));

    // A literal secret on the command line is refused, naming the input.
    let run = ws.run(&[
        "run",
        "issue",
        "--set",
        "name=ci",
        "--input",
        "label=x",
        "--input",
        "approval=literal-value",
        "--input",
        "go=y",
    ]);
    run.assert_code(6)
        .stderr_has("approval")
        .stderr_has("@FILE");
}

#[test]
fn a_missing_answer_names_the_input_and_how_to_pass_it() {
    let sim = DemoSim::start();
    let ws = workspace(&sim);
    ws.runbook("issue", ISSUE);
    let run = ws.run(&["run", "issue", "--set", "name=ci"]);
    run.assert_code(6)
        .stderr_has("missing input `label`")
        .stderr_has("--input label=")
        .stderr_has("issue.rhai:5");
    // Only the read before the prompt reached the provider.
    let sent: Vec<String> = sim
        .state
        .requests()
        .iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    assert_eq!(sent, ["GET /api/whoami"]);
}

#[test]
fn a_missing_parameter_is_a_clear_error() {
    let sim = DemoSim::start();
    let ws = workspace(&sim);
    ws.runbook("issue", ISSUE);
    let out = ws
        .command(&[
            "run",
            "issue",
            "--input",
            "label=x",
            "--input",
            "approval=env:APPROVAL",
            "--input",
            "go=y",
        ])
        .env("APPROVAL", canary("approval-"))
        .timed_output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(6), "{stderr}");
    assert!(
        stderr.contains("missing parameter `name`") && stderr.contains("--set name="),
        "{stderr}"
    );
    assert!(stderr.contains("issue.rhai:8"), "{stderr}");
}

#[test]
fn dry_run_reads_for_real_and_sends_no_change() {
    let sim = DemoSim::start();
    let ws = workspace(&sim);
    ws.runbook(
        "rotate",
        r#"
        let ex = plugin("example");
        let me = ex.whoami();
        let fresh = ex.create_token(#{ name: "rotated" });
        ex.revoke_token(#{ id: me.token_id });
        #{ old: me.token_id, dry: fresh.dry_run }
        "#,
    );
    let before = sim.state.tokens().len();
    let run = ws.run(&["run", "rotate", "--dry-run", "--output", "json"]);
    run.assert_ok();
    let report = run.json();
    assert_eq!(report["dry_run"], true);
    assert_eq!(report["result"]["dry"], true);
    let steps = report["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 3);
    assert_eq!(steps[0]["skipped"], false);
    assert_eq!(steps[1]["skipped"], true);
    assert_eq!(steps[1]["input"]["name"], "rotated");
    assert_eq!(steps[2]["skipped"], true);
    // The provider saw the read and nothing else.
    let sent: Vec<String> = sim
        .state
        .requests()
        .iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    assert_eq!(sent, ["GET /api/whoami"]);
    assert_eq!(sim.state.tokens().len(), before);
    assert!(sim.state.tokens().iter().all(|t| t.active));

    // Text mode says what would change.
    let run = ws.run(&["run", "rotate", "--dry-run"]);
    run.assert_ok()
        .stderr_has("would call example.create_token")
        .stderr_has("would call example.revoke_token");
}

#[test]
fn exit_codes_tell_failure_classes_apart() {
    let sim = DemoSim::start();
    let ws = workspace(&sim);

    ws.runbook("bad-syntax", "let x = ;\n");
    ws.run(&["run", "bad-syntax"])
        .assert_code(7)
        .stderr_has("bad-syntax.rhai:1");

    ws.runbook(
        "fails",
        "info(\"step one\");\nfail(\"the provider is on fire\");\n",
    );
    ws.run(&["run", "fails"])
        .assert_code(5)
        .stderr_has("fails.rhai:2")
        .stderr_has("the provider is on fire");

    ws.runbook(
        "provider-error",
        "plugin(\"example\").revoke_token(#{ id: 999 });\n",
    );
    ws.run(&["run", "provider-error"])
        .assert_code(5)
        .stderr_has("404")
        .stderr_has("provider-error.rhai:1");

    ws.runbook("ungranted", "secret(\"team-b/token\");\n");
    ws.run(&["run", "ungranted"])
        .assert_code(4)
        .stderr_has("not granted secret `team-b/token`");

    ws.run(&["run", "no-such-runbook"])
        .assert_code(3)
        .stderr_has("not found");

    std::fs::write(ws.path().join("keycycle.toml"), "[plugins.x]\npath = 3\n").unwrap();
    ws.run(&["run", "fails"])
        .assert_code(3)
        .stderr_has("keycycle.toml");
}

#[test]
fn missing_plugin_file_fails_only_when_used() {
    let sim = DemoSim::start();
    let ws = Workspace::new();
    ws.config(&format!(
        "{}\n[plugins.gone]\npath = \"plugins/gone.wasm\"\n",
        example_plugin_config(&sim)
    ));
    let (_, admin) = sim.seed_admin();
    ws.set_secret("demo/admin", &admin);
    ws.runbook("ok", "plugin(\"example\").whoami().user\n");
    ws.run(&["run", "ok"]).assert_ok();
    ws.runbook("uses-gone", "let g = plugin(\"gone\");\n");
    ws.run(&["run", "uses-gone"])
        .assert_code(5)
        .stderr_has("gone.wasm")
        .stderr_has("uses-gone.rhai:1");
    let list = ws.run(&["plugins", "list", "--output", "json"]);
    list.assert_ok();
    let rows = list.json();
    let gone = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "gone")
        .unwrap();
    assert_eq!(gone["status"], "error");
}

#[test]
fn plugins_inspect_shows_operations_needs_and_grants() {
    let sim = DemoSim::start();
    let ws = Workspace::new();
    ws.config(&example_plugin_config(&sim));
    let run = ws.run(&["plugins", "inspect", "example", "--output", "json"]);
    run.assert_ok();
    let r = run.json();
    let ops: Vec<&str> = r["operations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["name"].as_str().unwrap())
        .collect();
    assert!(
        ops.contains(&"create_token") && ops.contains(&"whoami"),
        "{ops:?}"
    );
    let create = r["operations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["name"] == "create_token")
        .unwrap();
    assert_eq!(create["mutates"], true);
    assert_eq!(create["secret_outputs"][0], "token");
    assert_eq!(r["declares"]["hosts"][0], "{config.base_url}");
    assert_eq!(r["granted"]["hosts"][0], format!("{}", sim.origin()));
    assert_eq!(r["granted"]["secrets"][0]["store"], "demo/admin");
    assert_eq!(r["sha256"].as_str().unwrap().len(), 64);
    ws.run(&["plugins", "inspect", "nope"])
        .assert_code(3)
        .stderr_has("no plugin `nope`");
}

#[test]
fn second_run_compiles_nothing() {
    use std::os::unix::fs::MetadataExt;
    let sim = DemoSim::start();
    let ws = Workspace::new();
    let cache = ws.path().join("own-cache");
    ws.config(&example_plugin_config(&sim));
    // Point this workspace at a cache of its own, empty at first.
    let text = std::fs::read_to_string(ws.path().join("keycycle.toml")).unwrap();
    let text = text.replace(
        &format!("cache_dir = \"{}\"", shared_cache().display()),
        &format!("cache_dir = \"{}\"", cache.display()),
    );
    std::fs::write(ws.path().join("keycycle.toml"), text).unwrap();
    assert!(!cache.exists());

    ws.run(&["plugins", "list"]).assert_ok();
    let compiled = |cache: &std::path::Path| -> Vec<std::path::PathBuf> {
        std::fs::read_dir(cache)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "cwasm"))
            .collect()
    };
    let entries = compiled(&cache);
    assert_eq!(entries.len(), 1, "one precompiled component: {entries:?}");
    let file = &entries[0];
    let before = std::fs::metadata(file).unwrap();
    assert!(before.len() > 0, "{} is empty", file.display());

    // A second load, and a run that calls the plugin, read the file as it
    // is: the same file (inode), never rewritten (mtime, size), and no
    // other file beside it.
    let (_, admin) = sim.seed_admin();
    ws.set_secret("demo/admin", &admin);
    ws.run(&["plugins", "list"]).assert_ok();
    ws.runbook("who", "plugin(\"example\").whoami().user\n");
    ws.run(&["run", "who"]).assert_ok();
    assert_eq!(compiled(&cache), entries);
    let after = std::fs::metadata(file).unwrap();
    assert_eq!(
        (after.ino(), after.mtime(), after.mtime_nsec(), after.len()),
        (
            before.ino(),
            before.mtime(),
            before.mtime_nsec(),
            before.len()
        ),
        "the cached component was compiled again"
    );
}
