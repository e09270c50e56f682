//! Running runbooks the way an operator does: parameters, prompts answered
//! with `--input`, dry runs, JSON output and exit codes, with the example
//! plugin against the demo token service.

use crate::support::*;

fn workspace(sim: &DemoSim) -> Workspace {
    demo_workspace(sim, "issue").0
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
    // A prompt answer stays inside keycycle (it never travels in a
    // header), so it can be a value that every escaping changes.
    let approval = hard_canary("approval-");
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
    // The new token is a secret too, though the run masked it.
    plant(created.value.expose());
    ws.assert_files_clean_including(&["state/state.db", "state/secrets.json"]);
    // The shared plugin cache holds what the run compiled: the example
    // plugin's machine code, and no secret of this or any other test.
    let cached = assert_tree_clean(&shared_cache());
    assert!(
        cached
            .iter()
            .any(|f| f.extension().is_some_and(|x| x == "cwasm")),
        "the cache scan saw no compiled plugin: {cached:?}"
    );
}

#[test]
fn secret_inputs_come_from_env_and_never_from_argv() {
    let sim = DemoSim::start();
    let ws = workspace(&sim);
    ws.runbook("issue", ISSUE);
    let approval = hard_canary("approval-");
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
    // Refused before the run starts, as a configuration mistake.
    run.assert_code(3)
        .stderr_has("--input approval: `approval` is a secret (")
        .stderr_has("issue.rhai:6)")
        .stderr_has("pass --input approval=@FILE or --input approval=env:VAR");
    let history = ws.run(&["history", "-o", "json"]);
    history.assert_ok();
    assert_eq!(
        history.json().as_array().unwrap().len(),
        1,
        "only the first run was recorded: {}",
        history.stdout
    );
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
    // Refused before the run starts: the runbook names the plugin, and
    // the plugin's file is missing.
    ws.run(&["run", "uses-gone"])
        .assert_code(3)
        .stderr_has("the runbook uses plugin `gone`, which did not load")
        .stderr_has("plugins/gone.wasm: No such file or directory");
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

/// `runbooks/demo-rotate.rhai` as shipped, run from the repository's
/// runbooks folder by name, as the README has an operator do.
fn demo_rotate_workspace(sim: &DemoSim) -> (Workspace, u64) {
    let ws = Workspace::new();
    ws.config(&format!(
        "runbooks_dir = \"{}\"\n\n{}\n[runbooks.demo-rotate]\nsecrets = [\"demo/admin\"]\n",
        repo_root().join("runbooks").display(),
        example_plugin_config(sim)
    ));
    let (id, admin) = sim.seed_admin();
    ws.set_secret("demo/admin", &admin);
    (ws, id)
}

#[test]
fn demo_rotate_replaces_the_admin_token_at_the_service_and_in_the_store() {
    let sim = DemoSim::start();
    let (ws, old) = demo_rotate_workspace(&sim);
    let before = ws.stored_secrets();

    // A dry run reads, and changes neither the service nor the store.
    let dry = ws.run(&["run", "demo-rotate", "--dry-run", "-o", "json"]);
    dry.assert_ok();
    assert!(dry.json()["result"]["new_id"].is_null(), "{}", dry.stdout);
    assert!(
        sim.state.requests().iter().all(|r| r.method == "GET"),
        "{:?}",
        sim.state.requests()
    );
    assert_eq!(sim.state.tokens().len(), 1);
    assert!(
        ws.stored_secrets() == before,
        "the dry run changed the store"
    );

    let first_day = time::OffsetDateTime::now_utc().date();
    let run = ws.run(&["run", "demo-rotate", "-o", "json"]);
    let last_day = time::OffsetDateTime::now_utc().date();
    run.assert_ok();
    let result = run.json()["result"].clone();
    let new_id = result["new_id"].as_u64().unwrap();
    assert_eq!(result["old_id"], old);
    assert_ne!(new_id, old);
    // The default name carries the day of the run (UTC), which may have
    // changed while it ran; the plugin adds the call's idempotency key.
    let name = result["new_name"].as_str().unwrap();
    assert!(
        [first_day, last_day]
            .iter()
            .any(|d| name.starts_with(&format!("keycycle-admin-{d} "))),
        "{name}"
    );

    // At the service: the old token revoked, the new one the only active.
    assert!(
        !sim.state.token(old).unwrap().active,
        "the old token is active"
    );
    let active: Vec<_> = sim.state.active_tokens();
    assert_eq!(active.len(), 1);
    assert_eq!(active[0].id, new_id);
    assert_eq!(active[0].name, name);
    let new_value = plant(active[0].value.expose());
    // In the store: the new token, in place of the old one.
    let stored = ws.stored_secrets();
    assert_eq!(stored.keys().collect::<Vec<_>>(), ["demo/admin"]);
    assert!(
        stored["demo/admin"] == new_value,
        "the store does not hold the new token"
    );

    // The stored token works: a second rotation, with a chosen name,
    // authenticates with it and revokes it.
    let again = ws.run(&["run", "demo-rotate", "--set", "name=second", "-o", "json"]);
    again.assert_ok();
    let result = again.json()["result"].clone();
    assert_eq!(result["old_id"], new_id);
    assert!(
        result["new_name"].as_str().unwrap().starts_with("second "),
        "{result}"
    );
    assert!(!sim.state.token(new_id).unwrap().active);
    let active: Vec<_> = sim.state.active_tokens();
    assert_eq!(active.len(), 1);
    assert_eq!(active[0].id, result["new_id"].as_u64().unwrap());
    plant(active[0].value.expose());
    assert!(ws.stored_secrets()["demo/admin"] == active[0].value.expose());
    ws.assert_files_clean_including(&["state/state.db", "state/secrets.json"]);
}
