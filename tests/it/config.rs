//! keycycle.toml as an operator meets it: which file is used (`--config`,
//! `KEYCYCLE_CONFIG`, the current folder), where the state goes
//! (`state_dir`, `KEYCYCLE_STATE_DIR`, `XDG_STATE_HOME`, the home folder),
//! what is refused (unknown keys, limits of zero, an unknown `--env`) and
//! what `--env` overlays change. Each is checked by its effect: the state
//! folder that gets the database, the requests the simulator receives.

use std::path::Path;

use crate::support::*;

/// Runs keycycle in the workspace with extra environment variables (paths),
/// checking its output for canaries as [`Workspace::run`] does.
fn run_env(ws: &Workspace, args: &[&str], env: &[(&str, &Path)]) -> Run {
    let env: Vec<(&str, String)> = env
        .iter()
        .map(|(k, v)| (*k, v.display().to_string()))
        .collect();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    ws.run_env(args, &env)
}

/// A config file at `path` (relative to the workspace) with the shared
/// plugin cache and `rest`.
fn write_config(ws: &Workspace, path: &str, rest: &str) {
    let file = ws.path().join(path);
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    let text = format!(
        "cache_dir = \"{}\"\ncache_key_file = \"{}\"\n{rest}",
        shared_cache().display(),
        shared_cache_key().display()
    );
    std::fs::write(file, text).unwrap();
}

/// Whether a run recorded itself in the state folder `dir`.
fn has_state(dir: &Path) -> bool {
    dir.join("state.db").is_file()
}

#[test]
fn the_config_comes_from_the_flag_then_keycycle_config_then_the_current_folder() {
    let ws = Workspace::new();
    ws.runbook("hello", "info(\"hi\");\n");
    write_config(&ws, "keycycle.toml", "state_dir = \"state-found\"\n");
    // Relative paths are relative to the file's folder, not the current one.
    write_config(&ws, "conf/by-var.toml", "state_dir = \"state-var\"\n");
    write_config(&ws, "conf/by-flag.toml", "state_dir = \"state-flag\"\n");
    let found = ws.path().join("state-found");
    let by_var = ws.path().join("conf/state-var");
    let by_flag = ws.path().join("conf/state-flag");
    let var = ws.path().join("conf/by-var.toml");
    let args = ["-v", "run", "runbooks/hello.rhai"];

    let run = run_env(&ws, &args, &[]);
    run.assert_ok().stderr_has(&format!(
        "using config {} (found in the current folder or a parent)",
        ws.path().join("keycycle.toml").display()
    ));
    assert!(has_state(&found));
    assert!(!has_state(&by_var) && !has_state(&by_flag));

    // KEYCYCLE_CONFIG wins over the current folder.
    let run = run_env(&ws, &args, &[("KEYCYCLE_CONFIG", &var)]);
    run.assert_ok().stderr_has("(given with KEYCYCLE_CONFIG)");
    assert!(has_state(&by_var), "KEYCYCLE_CONFIG was not used");
    assert!(!has_state(&by_flag));

    // --config wins over both.
    let mut with_flag = vec!["--config", "conf/by-flag.toml"];
    with_flag.extend_from_slice(&args);
    let run = run_env(&ws, &with_flag, &[("KEYCYCLE_CONFIG", &var)]);
    run.assert_ok().stderr_has("(given with --config)");
    assert!(has_state(&by_flag), "--config was not used");

    // A named file must exist: no quiet fallback to another one.
    let missing = ws.path().join("conf/missing.toml");
    let run = run_env(&ws, &["runs"], &[("KEYCYCLE_CONFIG", &missing)]);
    run.assert_code(3).stderr_has("missing.toml");
    ws.run(&["--config", "conf/missing.toml", "runs"])
        .assert_code(3)
        .stderr_has("missing.toml");
    ws.assert_files_clean_including(&[
        "state-found/state.db",
        "conf/state-var/state.db",
        "conf/state-flag/state.db",
    ]);
}

#[test]
fn without_state_dir_the_state_goes_to_keycycle_state_dir_then_xdg_state_home_then_home() {
    let ws = Workspace::new();
    ws.runbook("hello", "info(\"hi\");\n");
    write_config(&ws, "keycycle.toml", "");
    let by_var = ws.path().join("by-var");
    let xdg = ws.path().join("xdg");
    let by_xdg = xdg.join("keycycle");
    let by_home = ws.home().join(".local/state/keycycle");
    let args = ["-v", "run", "hello"];

    // KEYCYCLE_STATE_DIR wins over XDG_STATE_HOME.
    let run = run_env(
        &ws,
        &args,
        &[("KEYCYCLE_STATE_DIR", &by_var), ("XDG_STATE_HOME", &xdg)],
    );
    run.assert_ok()
        .stderr_has(&format!("state folder {}", by_var.display()));
    assert!(has_state(&by_var));
    assert!(!has_state(&by_xdg) && !has_state(&by_home));

    let run = run_env(&ws, &args, &[("XDG_STATE_HOME", &xdg)]);
    run.assert_ok()
        .stderr_has(&format!("state folder {}", by_xdg.display()));
    assert!(has_state(&by_xdg));
    assert!(!has_state(&by_home));

    ws.run(&args)
        .assert_ok()
        .stderr_has(&format!("state folder {}", by_home.display()));
    assert!(has_state(&by_home));

    // state_dir in keycycle.toml wins over the variable.
    write_config(&ws, "keycycle.toml", "state_dir = \"by-config\"\n");
    let elsewhere = ws.path().join("elsewhere");
    run_env(&ws, &args, &[("KEYCYCLE_STATE_DIR", &elsewhere)]).assert_ok();
    assert!(has_state(&ws.path().join("by-config")));
    assert!(!elsewhere.exists(), "KEYCYCLE_STATE_DIR won over state_dir");
    ws.assert_files_clean_including(&[
        "by-var/state.db",
        "xdg/keycycle/state.db",
        "home/.local/state/keycycle/state.db",
        "by-config/state.db",
    ]);
}

#[test]
fn unknown_keys_are_refused_naming_the_file_the_line_and_the_key() {
    let ws = Workspace::new();
    let cases = [
        ("stat_dir = \"x\"\n", 4, "stat_dir"),
        ("[secrets]\nkeyfile = \"k\"\n", 5, "keyfile"),
        (
            "[plugins.example]\npath = \"x.wasm\"\nhostz = []\n",
            6,
            "hostz",
        ),
        (
            "[plugins.example]\npath = \"x.wasm\"\n[plugins.example.envs.prod]\nhost = []\n",
            7,
            "host",
        ),
        ("[runbooks.hello]\nsecret = [\"a\"]\n", 5, "secret"),
    ];
    for (rest, line, key) in cases {
        // Line 1 is cache_dir, line 2 cache_key_file, line 3 state_dir.
        write_config(
            &ws,
            "keycycle.toml",
            &format!("state_dir = \"state\"\n{rest}"),
        );
        let run = ws.run(&["runs"]);
        run.assert_code(3)
            .stderr_has("keycycle.toml")
            .stderr_has(&format!("line {line}"))
            .stderr_has(&format!("unknown field `{key}`"));
        let json = ws.run(&["runs", "-o", "json"]);
        json.assert_code(3);
        let error = &json.json()["error"];
        assert_eq!(error["kind"], "config", "{key}: {error}");
        assert_eq!(error["exit_code"], 3, "{key}: {error}");
        let message = error["message"].as_str().unwrap();
        assert!(
            message.contains("keycycle.toml")
                && message.contains(&format!("unknown field `{key}`")),
            "{key}: {message}"
        );
    }
    assert!(
        !ws.path().join("state").exists(),
        "a refused config made state"
    );
}

#[test]
fn limits_of_zero_are_refused_before_any_call() {
    let sim = DemoSim::start();
    let ws = Workspace::new();
    let (_, admin) = sim.seed_admin();
    ws.runbook("who", "plugin(\"example\").whoami().user\n");
    for (limit, says) in [
        (
            "memory_mb = 0",
            "[plugins.example]: memory_mb must be above zero",
        ),
        (
            "timeout_secs = 0",
            "[plugins.example]: timeout_secs must be above zero",
        ),
        (
            "max_output_kb = 0",
            "[plugins.example]: max_output_kb must be above zero",
        ),
        (
            "memory_mb = 18446744073709551615",
            "memory_mb = 18446744073709551615 is over the most keycycle allows",
        ),
    ] {
        ws.config(&format!("{}{limit}\n", example_plugin_config(&sim)));
        // Every command refuses it, naming the file, not only those that
        // load plugins.
        for args in [&["run", "who"][..], &["plugins", "list"], &["runs"]] {
            ws.run(args)
                .assert_code(3)
                .stderr_has("keycycle.toml: ")
                .stderr_has(says);
        }
    }
    ws.config(&example_plugin_config(&sim));
    ws.set_secret("demo/admin", &admin);
    assert!(
        sim.state.requests().is_empty(),
        "a plugin with a zero limit reached the service: {:?}",
        sim.state.requests()
    );
    // The same config with sane limits works: the refusal was the limit's.
    ws.config(&format!("{}memory_mb = 64\n", example_plugin_config(&sim)));
    let run = ws.run(&["run", "who", "-o", "json"]);
    run.assert_ok();
    assert_eq!(run.json()["result"], "demo-admin");
}

/// The example plugin with base grants that cannot reach the simulator (its
/// host is not granted, the token name is not in the store) and a `prod`
/// overlay that can: it grants the host and the token, and leaves
/// `base_url` to the base, so a run works only if the overlay's config is
/// merged over the base's rather than replacing it.
fn overlay_workspace(sim: &DemoSim) -> Workspace {
    let ws = Workspace::new();
    ws.config(&format!(
        r#"[plugins.example]
path = "{wasm}"
hosts = ["http://127.0.0.1:9"]
secrets = {{ token = "demo/base", spare = "demo/spare" }}
config = {{ base_url = "{o}" }}

[plugins.example.envs.prod]
hosts = ["{o}"]
secrets = {{ token = "demo/admin" }}
config = {{ region = "eu" }}
"#,
        wasm = wasm("example").display(),
        o = sim.origin()
    ));
    let (_, admin) = sim.seed_admin();
    ws.set_secret("demo/admin", &admin);
    ws.runbook(
        "who",
        "let me = plugin(\"example\").whoami();\n#{ user: me.user, env: params.env }\n",
    );
    ws
}

#[test]
fn an_env_overlay_replaces_hosts_and_merges_secrets_and_config() {
    let sim = DemoSim::start();
    let ws = overlay_workspace(&sim);

    let inspect = ws.run(&[
        "plugins", "inspect", "example", "--env", "prod", "-o", "json",
    ]);
    inspect.assert_ok();
    let doc = inspect.json();
    let granted = &doc["granted"];
    // hosts: the overlay's list replaces the base one.
    assert_eq!(
        granted["hosts"],
        serde_json::json!([sim.origin()]),
        "{granted}"
    );
    // secrets: the overlay's token over the base's; the base's `spare` is
    // kept (and, undeclared, listed as not effective).
    assert_eq!(
        granted["secrets"],
        serde_json::json!([{ "name": "token", "store": "demo/admin" }]),
        "{granted}"
    );
    assert_eq!(
        doc["not_effective"],
        serde_json::json!(["secret `spare` is granted but the plugin does not declare it"]),
        "{doc}"
    );
    // config: the base's base_url is kept under the overlay's keys.
    assert_eq!(
        granted["config"],
        serde_json::json!(["base_url"]),
        "{granted}"
    );
    // Without --env, the base grants.
    let base = ws.run(&["plugins", "inspect", "example", "-o", "json"]);
    base.assert_ok();
    let base = base.json();
    // The base's only host is not the one base_url names, so no host is
    // granted in effect.
    assert_eq!(base["granted"]["hosts"], serde_json::json!([]), "{base}");
    assert!(
        base["not_effective"]
            .to_string()
            .contains("http://127.0.0.1:9"),
        "{base}"
    );
    assert_eq!(base["granted"]["secrets"][0]["store"], "demo/base");

    // A run with the overlay reaches the simulator (at the base's
    // base_url) with the overlay's token, and the runbook sees the name.
    let run = ws.run(&["run", "who", "--env", "prod", "-o", "json"]);
    run.assert_ok();
    assert_eq!(run.json()["result"]["user"], "demo-admin");
    assert_eq!(run.json()["result"]["env"], "prod");
    let sent = |sim: &DemoSim| -> Vec<String> {
        sim.state
            .requests()
            .iter()
            .map(|r| format!("{} {}", r.method, r.path))
            .collect()
    };
    assert_eq!(sent(&sim), ["GET /api/whoami"]);
    // Without it, the base grants: their token name is not in the store,
    // and nothing reaches the simulator.
    ws.run(&["run", "who"])
        .assert_code(4)
        .stderr_has("asked for its secret `token`, granted as `demo/base`, but the store has no `demo/base`; add it with `keycycle secrets set demo/base`")
        .stderr_has("the secret `token` is unavailable");
    assert_eq!(sent(&sim), ["GET /api/whoami"]);
}

#[test]
fn an_unknown_env_is_a_configuration_error_before_anything_is_sent() {
    let sim = DemoSim::start();
    let ws = overlay_workspace(&sim);
    for args in [
        &["run", "who", "--env", "prd"][..],
        &["run", "who", "--env", "prd", "--dry-run"][..],
    ] {
        ws.run(args)
            .assert_code(3)
            .stderr_has("environment `prd` is not defined by any plugin (defined: prod)");
    }
    let json = ws.run(&["run", "who", "--env", "prd", "-o", "json"]);
    json.assert_code(3);
    assert_eq!(json.json()["error"]["kind"], "config");
    assert!(
        sim.state.requests().is_empty(),
        "{:?}",
        sim.state.requests()
    );
    let history = ws.run(&["history", "-o", "json"]);
    history.assert_ok();
    assert_eq!(history.json(), serde_json::json!([]), "no run was recorded");
}

/// A plugin's `ca_cert` is a file beside the config: one that cannot be
/// read or holds no certificate refuses the plugin before anything is
/// sent, naming the plugin and what is wrong, and `doctor` says the same.
#[test]
fn a_ca_cert_that_cannot_be_used_refuses_the_plugin_before_any_call() {
    let sim = DemoSim::start();
    let ws = Workspace::new();
    let (_, admin) = sim.seed_admin();
    ws.runbook("who", "plugin(\"example\").whoami().user\n");
    ws.file("not-a-cert.pem", "this is not a certificate\n");
    ws.file(
        "empty.pem",
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    );
    for (ca, code, says) in [
        ("missing.pem", 3, "[plugins.example] ca_cert: cannot read"),
        (
            "not-a-cert.pem",
            3,
            "the configured ca_cert holds no certificate",
        ),
        (
            "empty.pem",
            3,
            "the configured ca_cert holds no certificate",
        ),
    ] {
        ws.config(&format!(
            "{}ca_cert = \"{ca}\"\n",
            example_plugin_config(&sim)
        ));
        ws.set_secret("demo/admin", &admin);
        ws.run(&["run", "who"]).assert_code(code).stderr_has(says);
        let doctor = ws.run(&["doctor"]);
        doctor.assert_code(3);
        assert!(
            doctor.stdout.contains(says),
            "doctor does not say {says:?}:\n{}",
            doctor.stdout
        );
    }
    assert!(
        sim.state.requests().is_empty(),
        "a plugin with an unusable CA reached the service"
    );
}
