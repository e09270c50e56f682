//! `keycycle plugins new`: the project it writes, in each language, builds
//! and passes its own smoke test (`test/run.sh`: a stand-in provider on
//! 127.0.0.1, the plugin granted that origin, a runbook through the real
//! binary) from a temporary folder outside the repository.

use std::process::Command;

use crate::support::*;

/// Writes a `lang` project for `acme-tokens` in a temporary folder, runs
/// its `test/run.sh` with this repository's toolchains on `PATH`, and
/// returns what it printed.
fn new_project_passes_its_smoke_test(lang: &str) -> String {
    let team = tempfile::Builder::new()
        .prefix("plugin-new-")
        .tempdir()
        .unwrap();
    let dir = team.path().join("acme-tokens");
    let ws = Workspace::new();
    let made = ws.run(&[
        "plugins",
        "new",
        "acme-tokens",
        "--lang",
        lang,
        "--dir",
        dir.to_str().unwrap(),
    ]);
    made.assert_ok();
    assert!(made.stdout.contains("test/run.sh"), "{}", made.stdout);
    let root = repo_root();
    if lang == "rust" {
        // The versions this repository's plugins build with, which the
        // machine has: no registry needed.
        std::fs::copy(root.join("plugins/Cargo.lock"), dir.join("Cargo.lock")).unwrap();
    }
    let path = format!(
        "{}:{}:{}",
        root.join("target/python-clients/bin").display(),
        root.join("target/node-tools/node_modules/.bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new(dir.join("test/run.sh"))
        .current_dir(&dir)
        .env("KEYCYCLE", bin())
        .env("PATH", path)
        .env("PYTHONPATH", root.join("target/python-clients"))
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("CARGO_TARGET_DIR", root.join("target/standalone-plugin"))
        .env_remove("KEYCYCLE_CONFIG")
        .env_remove("RUSTFLAGS")
        .output()
        .expect("run test/run.sh");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{lang}: the new project's smoke test failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("smoke test passed"), "{lang}: {stdout}");
    stdout
}

#[test]
fn a_new_rust_plugin_builds_and_passes_its_smoke_test() {
    new_project_passes_its_smoke_test("rust");
}

#[test]
fn a_new_python_plugin_builds_and_passes_its_smoke_test() {
    new_project_passes_its_smoke_test("python");
}

#[test]
fn a_new_js_plugin_builds_and_passes_its_smoke_test() {
    new_project_passes_its_smoke_test("js");
}

#[test]
fn a_new_project_never_overwrites_files_and_names_are_checked() {
    let ws = Workspace::new();
    ws.file("taken.txt", "mine");
    ws.run(&["plugins", "new", "x", "--dir", "."])
        .assert_code(3)
        .stderr_has("already holds files");
    assert_eq!(
        std::fs::read_to_string(ws.path().join("taken.txt")).unwrap(),
        "mine"
    );
    ws.run(&["plugins", "new", "Acme_Tokens"])
        .assert_code(3)
        .stderr_has("cannot name a plugin");
}
