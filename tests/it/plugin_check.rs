//! `keycycle plugins check FILE`: a component reviewed before anyone grants
//! it, with no keycycle.toml: its imports against the sandbox's, its
//! contract version, and its self-description.

use crate::support::*;

fn check(ws: &Workspace, wasm: &std::path::Path) -> Run {
    ws.run(&[
        "plugins",
        "check",
        wasm.to_str().unwrap(),
        "--output",
        "json",
    ])
}

#[test]
fn a_sound_plugin_passes_with_its_imports_and_operations_listed() {
    // No config at all: checking needs none.
    let ws = Workspace::new();
    let run = check(&ws, &wasm("example"));
    run.assert_ok();
    let report = run.json();
    assert_eq!(report["ok"], true, "{}", run.stdout);
    assert_eq!(report["findings"].as_array().unwrap().len(), 0);
    assert_eq!(report["description"]["name"], "example");
    let imports = report["imports"].as_array().unwrap();
    assert!(
        imports
            .iter()
            .any(|i| i["name"] == "keycycle:plugin/host@0.1.0" && i["allowed"] == true),
        "{imports:#?}"
    );
    assert!(imports.iter().all(|i| i["allowed"] == true));
    assert_eq!(
        report["sha256"].as_str().unwrap().len(),
        64,
        "{}",
        run.stdout
    );

    let text = ws.run(&["plugins", "check", wasm("example").to_str().unwrap()]);
    text.assert_ok();
    assert!(
        text.stdout
            .contains("create_token (mutates, recovered with find_token)"),
        "{}",
        text.stdout
    );
    assert!(
        text.stdout.contains("0 error(s), 0 warning(s)"),
        "{}",
        text.stdout
    );
}

#[test]
fn forbidden_imports_and_another_contract_are_errors() {
    let ws = Workspace::new();
    let run = check(&ws, &wasm("wasi_http"));
    run.assert_code(3);
    let report = run.json();
    assert_eq!(report["ok"], false);
    let refused: Vec<&str> = report["imports"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["allowed"] == false)
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert!(
        refused.iter().any(|n| n.starts_with("wasi:http/")),
        "{refused:?}"
    );
    assert!(
        report["description"].is_null(),
        "not asked: it would not link"
    );
    assert!(
        run.stderr
            .contains("problem(s) that will fail whoever grants it"),
        "{}",
        run.stderr
    );

    // Files and sockets are inert imports: warnings naming the setting,
    // and the plugin describes itself.
    let fs = check(&ws, &wasm("fs_reader"));
    fs.assert_ok();
    let report = fs.json();
    assert_eq!(report["description"]["name"], "fs-reader");
    let findings = report["findings"].as_array().unwrap();
    assert!(!findings.is_empty());
    assert!(findings.iter().all(|f| {
        f["severity"] == "warning"
            && f["message"]
                .as_str()
                .unwrap()
                .contains("`inert_wasi = true`")
    }));

    let next = check(&ws, &wasm("contract_next"));
    next.assert_code(3);
    let findings = next.json()["findings"].to_string();
    assert!(
        findings.contains("built against keycycle:plugin@0.2.0; this keycycle speaks 0.1.x"),
        "{findings}"
    );
}

#[test]
fn a_careless_description_is_reported_operation_by_operation() {
    let ws = Workspace::new();
    let run = check(&ws, &wasm("sloppy_describe"));
    run.assert_code(3);
    let findings = run.json()["findings"].as_array().cloned().unwrap();
    let of = |severity: &str| -> Vec<String> {
        findings
            .iter()
            .filter(|f| f["severity"] == severity)
            .map(|f| {
                format!(
                    "{}: {}",
                    f["operation"].as_str().unwrap_or("-"),
                    f["message"].as_str().unwrap()
                )
            })
            .collect()
    };
    let errors = of("error");
    assert_eq!(errors.len(), 5, "{errors:#?}");
    for want in [
        "-: host `{config.elsewhere}` names config key `elsewhere`",
        "create_key: recovers with `find_key`, which the plugin does not declare",
        "rotate_key: recovers with `delete_key`, which mutates",
        "list_keys: is declared twice",
        "Get-Key: is not a name a runbook can call",
    ] {
        assert!(
            errors.iter().any(|e| e.starts_with(want)),
            "{want}: {errors:#?}"
        );
    }
    let warnings = of("warning");
    assert_eq!(warnings.len(), 1, "{warnings:#?}");
    assert!(warnings[0].starts_with("delete_key: mutates, and declares no way to settle"));
}

#[test]
fn a_file_that_is_not_a_component_is_a_clear_error() {
    let ws = Workspace::new();
    let bogus = ws.file("notes.wasm", "not a component at all");
    let run = ws.run(&["plugins", "check", bogus.to_str().unwrap()]);
    run.assert_code(3);
    assert!(run.stderr.contains("notes.wasm"), "{}", run.stderr);
    assert!(run.stderr.contains("not a WebAssembly"), "{}", run.stderr);
}
