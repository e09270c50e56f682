//! Planted secret values, everything at the highest verbosity, and a plugin
//! that tries to leak: no output, file or error message may contain them.
//! (Every run in every test is also checked by the harness; this test
//! pushes the paths where a leak is most likely.)

use crate::support::*;

#[test]
fn no_planted_secret_reaches_any_output_or_file() {
    let sim = DemoSim::start();
    let ws = Workspace::new();
    ws.config(&format!(
        r#"{example}
[plugins.hostile]
path = "{hostile}"
hosts = ["{o}"]
secrets = {{ token = "team-a/token" }}
config = {{ base_url = "{o}" }}

[runbooks.everything]
secrets = ["demo/admin", "team-a/token", "rotated/token"]
"#,
        example = example_plugin_config(&sim),
        hostile = wasm("hostile").display(),
        o = sim.origin(),
    ));
    let (_, admin) = sim.seed_admin();
    ws.set_secret("demo/admin", &admin);
    ws.set_secret("team-a/token", &canary("team-a-"));
    let typed = canary("typed-");
    let typed_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(typed_file.path(), &typed).unwrap();

    ws.runbook(
        "everything",
        r#"
        let ex = plugin("example");
        let h = plugin("hostile");
        let typed = prompt_secret("typed", "Paste the value");
        let fresh = ex.create_token(#{ name: "canary" });
        store_secret("rotated/token", fresh.token);
        print(fresh);
        debug(fresh.token);
        info(`fresh: ${fresh.token}, typed: ${typed}, stored: ${secret("demo/admin")}`);
        info(to_json(fresh));
        let leaked = h.leak();
        info(`the plugin returned ${leaked.stolen}`);
        info(to_json(leaked));
        try { h.leak_in_error(); } catch (e) { warn(`caught: ${e.message}`); }
        ex.check_token(#{ token: typed });
        #{ fresh: fresh, leaked: leaked, typed: typed, admin: secret("demo/admin") }
        "#,
    );
    let input = format!("typed=@{}", typed_file.path().display());
    let run = ws.run(&["run", "everything", "-vvv", "--input", &input]);
    run.assert_ok();
    assert!(
        run.stdout.contains("***"),
        "results are shown masked:\n{}",
        run.stdout
    );
    let json = ws.run(&[
        "run",
        "everything",
        "-vvv",
        "--input",
        &input,
        "--output",
        "json",
    ]);
    json.assert_ok();
    assert_eq!(json.json()["result"]["leaked"]["stolen"], "***");

    // The minted token is real and was stored, yet never shown.
    let minted: Vec<_> = sim
        .state
        .tokens()
        .into_iter()
        .filter(|t| t.name.starts_with("canary ["))
        .collect();
    assert_eq!(minted.len(), 2, "one token minted per run");
    for t in &minted {
        plant(t.value.expose());
    }
    // Re-check every output after planting the minted values as well.
    assert_clean("stdout", &run.stdout);
    assert_clean("stderr", &run.stderr);
    assert_clean("json stdout", &json.stdout);
    assert_clean("json stderr", &json.stderr);

    // An uncaught leak in an error message is masked in the error chain.
    ws.runbook("leak-error", "plugin(\"hostile\").leak_in_error();\n");
    ws.run(&["run", "leak-error", "-vvv"])
        .assert_code(5)
        .stderr_has("upstream rejected token ***");
    let failing = ws.run(&["run", "leak-error", "-vvv", "--output", "json"]);
    failing.assert_code(5);
    assert!(
        failing.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("***")
    );

    ws.run(&["plugins", "inspect", "hostile", "-vvv"])
        .assert_ok();
    ws.run(&["secrets", "list", "-vvv"]).assert_ok();
    ws.assert_files_clean_including(&["state/state.db", "state/secrets.json"]);
}

/// The positive control of every leak scan: each spelling of a value,
/// embedded in other text, is found, and the value's neighbours are not.
#[test]
fn the_leak_scanner_finds_every_spelling() {
    let value = "tok\"en/+=%\u{8}\u{c}é-0123456789abcdef".to_owned();
    let scanner = Scanner::new(std::slice::from_ref(&value));
    let forms = leak_forms(&value);
    assert!(forms.len() >= 8, "{forms:?}");
    for (form, spelled) in &forms {
        let text = format!("before {spelled} after");
        assert!(
            scanner.find(text.as_bytes()).is_some(),
            "the {form} spelling was not found"
        );
    }
    // base64 inside a longer base64 text, at each alignment.
    use base64::Engine as _;
    for pad in ["", "x", "xy"] {
        let encoded =
            base64::engine::general_purpose::STANDARD.encode(format!("user:{pad}{value}:rest"));
        assert!(
            scanner.find(encoded.as_bytes()).is_some(),
            "base64 with {} bytes before it",
            pad.len() + 5
        );
    }
    assert!(scanner.find(b"tok en 0123456789abcdef").is_none());
}
