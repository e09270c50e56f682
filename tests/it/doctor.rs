//! `keycycle doctor`: what it reports on a healthy workspace, the problems
//! it names (a missing secret, a broken plugin, a granted name the
//! sandbox's resolver will refuse), its exit codes, and that it creates
//! nothing.

use std::path::{Path, PathBuf};

use crate::support::*;

/// The example plugin granted the demo sim, with its secret stored.
fn healthy(sim: &DemoSim) -> Workspace {
    let ws = Workspace::new();
    ws.config(&example_plugin_config(sim));
    let (_, admin) = sim.seed_admin();
    ws.set_secret("demo/admin", &admin);
    ws
}

fn lines_at<'a>(run: &'a Run, level: &str) -> Vec<&'a str> {
    run.stdout
        .lines()
        .filter(|l| l.trim_start().starts_with(&format!("{level} ")))
        .collect()
}

#[test]
fn a_healthy_workspace_is_all_ok() {
    let sim = DemoSim::start();
    let ws = healthy(&sim);
    // Doctor does not create the plugin cache; a load does.
    ws.run(&["plugins", "list"]).assert_ok();

    let run = ws.run(&["doctor", "--output", "json"]);
    run.assert_ok();
    let r = run.json();
    assert_eq!(r["status"], "ok", "{r:#}");
    let config = std::fs::canonicalize(ws.path().join("keycycle.toml")).unwrap();
    assert_eq!(r["config"]["file"], config.display().to_string());
    assert_eq!(
        r["config"]["found_by"],
        "keycycle.toml found from the current folder"
    );
    assert_eq!(r["config"]["state_dir"]["exists"], true);
    assert_eq!(r["config"]["runbooks_dir"]["exists"], true);
    assert_eq!(r["master_key"]["source"], "KEYCYCLE_MASTER_KEY");
    assert_eq!(r["master_key"]["opens_store"], true);
    assert_eq!(r["store"]["secrets"], 1);
    assert_eq!(r["store"]["damaged"].as_array().unwrap().len(), 0);
    assert_eq!(r["cache"]["exists"], true);
    assert_eq!(r["cache"]["mode"], "0700");
    assert_eq!(r["cache"]["owned_by_you"], true);
    let plugin = &r["plugins"][0];
    assert_eq!(plugin["name"], "example");
    assert_eq!(plugin["status"], "ok");
    assert_eq!(plugin["granted"]["hosts"][0], sim.origin());
    assert_eq!(plugin["granted"]["secrets"][0]["store"], "demo/admin");
    assert_eq!(plugin["granted"]["config"][0], "base_url");
    assert_eq!(
        plugin["granted"]["host_problems"].as_array().unwrap().len(),
        0
    );
    assert_eq!(r["missing_secrets"].as_array().unwrap().len(), 0);

    let text = ws.run(&["doctor"]);
    text.assert_ok();
    assert!(lines_at(&text, "error").is_empty(), "{}", text.stdout);
    assert!(lines_at(&text, "warn").is_empty(), "{}", text.stdout);
    for section in [
        "config",
        "master key",
        "store",
        "cache",
        "plugins",
        "secrets",
    ] {
        assert!(
            text.stdout.lines().any(|l| l == section),
            "section {section}:\n{}",
            text.stdout
        );
    }
    assert!(
        text.stdout.contains("it opens the store"),
        "{}",
        text.stdout
    );
    assert!(
        text.stdout.contains("0 errors, 0 warnings"),
        "{}",
        text.stdout
    );
}

#[test]
fn a_missing_granted_secret_is_an_error_naming_it() {
    let sim = DemoSim::start();
    let ws = Workspace::new();
    ws.config(&format!(
        "{}\n[runbooks.adopt]\nsecrets = [\"made/by-runbook\"]\n",
        example_plugin_config(&sim)
    ));
    ws.set_secret("unrelated/token", &canary("other-"));

    let run = ws.run(&["doctor"]);
    run.assert_code(3).stderr_has("doctor found 1 error");
    let errors = lines_at(&run, "error");
    assert_eq!(errors.len(), 1, "{}", run.stdout);
    assert!(
        errors[0].contains(
            "secret `demo/admin`, granted to plugin `example` (as `token`), is not in the store"
        ) && errors[0].contains("keycycle secrets set demo/admin"),
        "{}",
        errors[0]
    );
    // A runbook may create the secret it is granted: a warning only.
    let warnings = lines_at(&run, "warn");
    assert!(
        warnings
            .iter()
            .any(|l| l.contains("made/by-runbook") && l.contains("store_secret()")),
        "{}",
        run.stdout
    );

    let json = ws.run(&["doctor", "--output", "json"]);
    json.assert_code(3);
    let r = json.json();
    assert_eq!(r["status"], "error");
    assert_eq!(r["missing_secrets"][0]["secret"], "demo/admin");
    assert_eq!(r["missing_secrets"][0]["level"], "error");
}

#[test]
fn a_plugin_that_does_not_load_is_an_error_naming_it() {
    let sim = DemoSim::start();
    let ws = healthy(&sim);
    ws.file("broken.wasm", "<html>404 Not Found</html>\n");
    let text = std::fs::read_to_string(ws.path().join("keycycle.toml")).unwrap();
    std::fs::write(
        ws.path().join("keycycle.toml"),
        format!("{text}\n[plugins.broken]\npath = \"broken.wasm\"\n"),
    )
    .unwrap();

    let run = ws.run(&["doctor"]);
    run.assert_code(3);
    let errors = lines_at(&run, "error");
    assert_eq!(errors.len(), 1, "{}", run.stdout);
    assert!(
        errors[0].contains("plugin `broken`: ")
            && errors[0]
                .contains("broken.wasm is not a WebAssembly file (it starts with `<html`…)"),
        "{}",
        errors[0]
    );
    // The other plugin is still checked.
    assert!(
        lines_at(&run, "ok")
            .iter()
            .any(|l| l.contains("example: example")),
        "{}",
        run.stdout
    );

    let r = ws.run(&["doctor", "--output", "json"]).json();
    let broken = r["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "broken")
        .unwrap()
        .clone();
    assert_eq!(broken["status"], "error");
}

#[test]
fn a_granted_name_resolving_to_loopback_is_a_warning() {
    let sim = DemoSim::start();
    let ws = Workspace::new();
    let local = sim.origin().replace("127.0.0.1", "localhost");
    ws.config(&format!(
        "[plugins.example]\npath = \"{}\"\nhosts = [\"{local}\"]\nsecrets = {{ token = \"demo/admin\" }}\nconfig = {{ base_url = \"{local}\" }}\n",
        wasm("example").display()
    ));
    let (_, admin) = sim.seed_admin();
    ws.set_secret("demo/admin", &admin);

    let run = ws.run(&["doctor"]);
    run.assert_ok();
    let warnings = lines_at(&run, "warn");
    assert_eq!(warnings.len(), 1, "{}", run.stdout);
    assert!(
        warnings[0].contains(&format!("example: host {local}: granted, but calls will be refused: localhost resolves to the loopback address")),
        "{}",
        warnings[0]
    );
    let r = ws.run(&["doctor", "--output", "json"]).json();
    assert_eq!(r["status"], "warn");
    assert_eq!(
        r["plugins"][0]["granted"]["host_problems"][0]["host"],
        local
    );

    let inspect = ws.run(&["plugins", "inspect", "example"]);
    inspect.assert_ok();
    assert!(
        inspect
            .stdout
            .contains("granted, but calls will be refused: localhost resolves to"),
        "{}",
        inspect.stdout
    );

    // The warning is right: the call is refused before it leaves the host.
    ws.runbook("who", "plugin(\"example\").whoami().user\n");
    ws.run(&["run", "who"])
        .assert_code(4)
        .stderr_has("non-public address");
    assert!(
        sim.state.requests().is_empty(),
        "nothing reached the server"
    );
}

fn tree(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let p = entry.path();
        out.push(p.clone());
        if p.is_dir() {
            out.extend(tree(&p));
        }
    }
    out.sort();
    out
}

#[test]
fn doctor_creates_nothing() {
    // A config naming a state folder, a cache and a key file that do not
    // exist, with a plugin and a granted secret.
    let ws = Workspace::new();
    std::fs::write(
        ws.path().join("keycycle.toml"),
        format!(
            "state_dir = \"state\"\ncache_dir = \"cache\"\n\n[plugins.example]\npath = \"{}\"\nhosts = [\"http://127.0.0.1:9\"]\nsecrets = {{ token = \"demo/admin\" }}\nconfig = {{ base_url = \"http://127.0.0.1:9\" }}\n",
            wasm("example").display()
        ),
    )
    .unwrap();
    let before = tree(ws.path());
    let out = ws
        .command(&["doctor"])
        .env_remove("KEYCYCLE_MASTER_KEY")
        .timed_output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{stdout}");
    assert!(stdout.contains("no master key"), "{stdout}");
    assert!(
        stdout.contains("example: example"),
        "the plugin still loads:\n{stdout}"
    );
    assert_eq!(tree(ws.path()), before, "doctor wrote files:\n{stdout}");

    // No config at all: the default state and cache folders (under HOME
    // and the XDG folders) are not created either.
    let empty = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(BIN)
        .current_dir(empty.path())
        .arg("doctor")
        .env_remove("KEYCYCLE_CONFIG")
        .env_remove("KEYCYCLE_MASTER_KEY")
        .env_remove("KEYCYCLE_STATE_DIR")
        .env("HOME", empty.path().join("home"))
        .env("XDG_STATE_HOME", empty.path().join("xdg-state"))
        .env("XDG_CACHE_HOME", empty.path().join("xdg-cache"))
        .timed_output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "warnings only:\n{stdout}");
    assert!(stdout.contains("no config file"), "{stdout}");
    assert!(
        tree(empty.path()).is_empty(),
        "doctor wrote files:\n{stdout}"
    );
}

/// keycycle hardens its own process before anything else: it cannot be
/// dumped or ptraced by other processes of the user, and the master key
/// given in the environment is taken out of it (and still opens the store).
#[test]
fn the_process_is_not_dumpable_and_the_master_key_leaves_its_environment() {
    let ws = Workspace::new();
    ws.set_secret("team/token", &canary("doctor-"));
    let run = ws.run(&["doctor", "-o", "json"]);
    let report = run.json();
    assert_eq!(report["process"]["dumpable"], false, "{report}");
    assert_eq!(report["process"]["master_key_from_environment"], true);
    assert_eq!(report["process"]["master_key_in_environment"], false);
    assert_eq!(report["master_key"]["opens_store"], true, "{report}");
}
