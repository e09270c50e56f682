//! Plugin files that are not components (a script, random bytes, a core
//! module, a path that does not exist): each gets a one-line error that
//! says what the file is and what to do, and `plugins list` stays one line
//! per plugin whatever the error text holds.

use crate::support::*;

/// A workspace whose plugins are a shell script, random bytes, a core
/// module, and a missing file whose name holds a tab and a newline.
fn workspace() -> Workspace {
    let ws = Workspace::new();
    ws.file("script.wasm", "#!/bin/sh\necho not wasm\n");
    std::fs::write(
        ws.path().join("noise.wasm"),
        [0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a, 0xff, 0x00],
    )
    .unwrap();
    // The 8-byte header alone is a valid, empty core module.
    std::fs::write(ws.path().join("core.wasm"), b"\0asm\x01\0\0\0").unwrap();
    ws.config(
        "[plugins.script]\npath = \"script.wasm\"\n\n\
         [plugins.noise]\npath = \"noise.wasm\"\n\n\
         [plugins.core]\npath = \"core.wasm\"\n\n\
         [plugins.gone]\npath = \"gone\\tsecond\\nline.wasm\"\n",
    );
    ws
}

#[test]
fn plugins_list_is_one_line_per_plugin_whatever_the_error() {
    let ws = workspace();
    let run = ws.run(&["plugins", "list"]);
    run.assert_ok();
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), 4, "one line per plugin:\n{}", run.stdout);
    for line in &lines {
        assert_eq!(line.matches('\t').count(), 1, "name TAB status: {line:?}");
    }
    let line = |name: &str| {
        *lines
            .iter()
            .find(|l| l.starts_with(&format!("{name}\t")))
            .unwrap_or_else(|| panic!("no line for {name}:\n{}", run.stdout))
    };
    assert!(
        line("script").contains("script.wasm is not a WebAssembly file (it starts with `#!/bi`…)"),
        "{}",
        line("script")
    );
    assert!(
        line("noise").contains("it starts with `\\x89PNG\\x0d`…"),
        "{}",
        line("noise")
    );
    assert!(
        line("core").contains(
            "is a core WebAssembly module, not a component; build it for the wasm32-wasip2 \
             target (`cargo build --target wasm32-wasip2`), or wrap it with `wasm-tools component new`"
        ),
        "{}",
        line("core")
    );
    assert!(
        line("gone").contains("gone\\tsecond\\nline.wasm"),
        "{}",
        line("gone")
    );
    // No byte dump from the WebAssembly parser.
    assert!(!run.stdout.contains("0x61"), "{}", run.stdout);

    let json = ws.run(&["plugins", "list", "--output", "json"]);
    json.assert_ok();
    let rows = json.json();
    assert_eq!(rows.as_array().unwrap().len(), 4);
    for row in rows.as_array().unwrap() {
        assert_eq!(row["status"], "error", "{row}");
        let error = row["error"].as_str().unwrap();
        assert!(!error.contains("0x61"), "{error}");
    }
}

#[test]
fn plugins_inspect_of_a_broken_file_is_a_one_line_config_error() {
    let ws = workspace();
    for (name, needle) in [
        ("script", "is not a WebAssembly file"),
        ("noise", "is not a WebAssembly file"),
        ("core", "wasm-tools component new"),
    ] {
        let run = ws.run(&["plugins", "inspect", name]);
        run.assert_code(3).stderr_has(needle);
        assert_eq!(
            run.stderr.lines().count(),
            1,
            "one line for {name}:\n{}",
            run.stderr
        );
        assert!(
            run.stderr.starts_with(&format!("error: plugin `{name}`: ")),
            "{}",
            run.stderr
        );
    }
}
