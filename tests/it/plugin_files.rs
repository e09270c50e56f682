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

// Plugin trust: pinned digests, signatures, and the precompiled cache.

/// A workspace with its own copy of the example plugin (`example.wasm`),
/// granted the demo simulator, `extra` added to its section and `top`
/// before it; a runbook `who` that calls it.
fn trust_workspace(sim: &DemoSim, top: &str, extra: &str) -> Workspace {
    let ws = Workspace::new();
    std::fs::copy(wasm("example"), ws.path().join("example.wasm")).unwrap();
    write_trust_config(&ws, sim, top, extra);
    let (_, admin) = sim.seed_admin();
    ws.set_secret("demo/admin", &admin);
    ws.runbook("who", "plugin(\"example\").whoami().user\n");
    ws
}

fn write_trust_config(ws: &Workspace, sim: &DemoSim, top: &str, extra: &str) {
    ws.config(&format!(
        "{top}\n[plugins.example]\npath = \"example.wasm\"\nhosts = [\"{o}\"]\nsecrets = {{ token = \"demo/admin\" }}\nconfig = {{ base_url = \"{o}\" }}\n{extra}\n",
        o = sim.origin()
    ));
}

fn sha256_of(path: &std::path::Path) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(std::fs::read(path).unwrap()))
}

#[test]
fn a_pinned_plugin_whose_file_changed_is_refused_with_both_digests() {
    let sim = DemoSim::start();
    let ws = trust_workspace(&sim, "", "");
    let file = ws.path().join("example.wasm");
    let pinned = sha256_of(&file);
    // `plugins hash` prints the digest to pin, as sha256sum does.
    let hash = ws.run(&["plugins", "hash", "example.wasm"]);
    hash.assert_ok();
    assert_eq!(hash.stdout.trim(), format!("{pinned}  example.wasm"));
    write_trust_config(&ws, &sim, "", &format!("sha256 = \"{pinned}\""));
    ws.run(&["run", "who"]).assert_ok();

    // Another component in its place: refused at load, before the run.
    std::fs::copy(wasm("http_check"), &file).unwrap();
    let actual = sha256_of(&file);
    let run = ws.run(&["run", "who"]);
    run.assert_code(3)
        .stderr_has("plugin `example`")
        .stderr_has("is not the pinned file")
        .stderr_has(&format!("expects {pinned}"))
        .stderr_has(&format!("the file's sha256 is {actual}"))
        .stderr_has("keycycle plugins hash");
    ws.run(&["plugins", "inspect", "example"])
        .assert_code(3)
        .stderr_has("is not the pinned file");
    let list = ws.run(&["plugins", "list", "-o", "json"]);
    list.assert_ok();
    assert_eq!(list.json()[0]["status"], "error", "{}", list.stdout);

    // doctor names the mismatch.
    let doctor = ws.run(&["doctor"]);
    doctor.assert_code(3);
    assert!(
        doctor.stdout.contains("is not the pinned file") && doctor.stdout.contains(&actual),
        "{}",
        doctor.stdout
    );

    // Pinned to the new digest (what `plugins hash` printed), it loads.
    let printed = ws.run(&["plugins", "hash", "example.wasm", "-o", "json"]);
    assert_eq!(printed.json()["sha256"], actual.as_str());
    write_trust_config(&ws, &sim, "", &format!("sha256 = \"{actual}\""));
    ws.run(&["plugins", "inspect", "example"]).assert_ok();

    // A pin that is not a digest is a config error.
    write_trust_config(&ws, &sim, "", "sha256 = \"abc\"");
    ws.run(&["plugins", "list"])
        .assert_code(3)
        .stderr_has("is not a sha256");
}

/// Makes a key pair with the binary; returns (secret key file, public key
/// file, public key line).
fn keygen(ws: &Workspace, name: &str) -> (std::path::PathBuf, std::path::PathBuf, String) {
    let run = ws.run(&["plugins", "keygen", name]);
    run.assert_ok();
    let secret = ws.path().join(format!("{name}.key"));
    let public = ws.path().join(format!("{name}.pub"));
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&secret).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "mode of the secret key");
    }
    (secret, public, run.stdout.trim().to_owned())
}

#[test]
fn require_signed_refuses_unsigned_and_wrongly_signed_plugins() {
    let sim = DemoSim::start();
    let ws = trust_workspace(&sim, "", "");
    let (a_secret, _a_public, a_key) = keygen(&ws, "team-a");
    let (b_secret, b_public, _b_key) = keygen(&ws, "team-b");
    let file = ws.path().join("example.wasm");
    let sig = ws.path().join("example.wasm.minisig");
    // One key inline, one as the team's .pub file.
    let trust = format!(
        "[trust]\nrequire_signed = true\nkeys = {{ team-a = \"{a_key}\", team-b = \"{}\" }}\n",
        b_public.display()
    );
    write_trust_config(&ws, &sim, &trust, "signed_by = \"team-a\"");

    // Unsigned: denied, naming the plugin and why.
    ws.run(&["run", "who"])
        .assert_code(4)
        .stderr_has("plugin `example` is refused: it is not signed")
        .stderr_has("example.wasm.minisig");

    // Signed by team-a: loads and runs.
    let signed = ws.run(&[
        "plugins",
        "sign",
        "example.wasm",
        "--key",
        a_secret.to_str().unwrap(),
    ]);
    signed.assert_ok();
    assert!(sig.is_file());
    ws.run(&["run", "who"]).assert_ok();
    ws.run(&["plugins", "verify", "example.wasm", "--key", &a_key])
        .assert_ok();
    ws.run(&[
        "plugins",
        "verify",
        "example.wasm",
        "--key",
        b_public.to_str().unwrap(),
    ])
    .assert_code(4)
    .stderr_has("made with another key");

    // Signed by team-b, a trusted key, but not the plugin's team: denied.
    ws.run(&[
        "plugins",
        "sign",
        "example.wasm",
        "--key",
        b_secret.to_str().unwrap(),
    ])
    .assert_ok();
    ws.run(&["run", "who"])
        .assert_code(4)
        .stderr_has("plugin `example` is refused")
        .stderr_has("not by `team-a`: it was made with another key");
    // Without signed_by, require_signed takes any trusted team's key.
    write_trust_config(&ws, &sim, &trust, "");
    ws.run(&["run", "who"]).assert_ok();

    // The signature covers the exact bytes: one byte more and it fails.
    write_trust_config(&ws, &sim, &trust, "signed_by = \"team-b\"");
    ws.run(&["run", "who"]).assert_ok();
    let mut bytes = std::fs::read(&file).unwrap();
    bytes.push(0);
    std::fs::write(&file, &bytes).unwrap();
    ws.run(&["run", "who"])
        .assert_code(4)
        .stderr_has("does not match the file's bytes");
    ws.run(&["plugins", "list"])
        .assert_ok()
        .stdout
        .contains("refused");

    // signed_by must name a configured team.
    write_trust_config(&ws, &sim, &trust, "signed_by = \"team-c\"");
    ws.run(&["plugins", "list"])
        .assert_code(3)
        .stderr_has("signed_by = \"team-c\" names no key in [trust] keys (known: team-a, team-b)");
}

#[test]
fn signed_by_alone_is_enforced_and_no_trust_section_works_as_before() {
    let sim = DemoSim::start();
    let ws = trust_workspace(&sim, "", "");
    ws.run(&["run", "who"]).assert_ok();
    let (_secret, _public, key) = keygen(&ws, "team-a");
    write_trust_config(
        &ws,
        &sim,
        &format!("[trust]\nkeys = {{ team-a = \"{key}\" }}\n"),
        "signed_by = \"team-a\"",
    );
    ws.run(&["run", "who"])
        .assert_code(4)
        .stderr_has("it is not signed");
}

/// A workspace with a cache and a state folder of its own (its own cache
/// key), the example plugin, and a runbook that calls it.
fn own_cache_workspace(sim: &DemoSim) -> (Workspace, std::path::PathBuf) {
    let ws = trust_workspace(sim, "", "");
    let cache = ws.path().join("cache");
    let text = std::fs::read_to_string(ws.path().join("keycycle.toml")).unwrap();
    let text = text
        .lines()
        .filter(|l| !l.starts_with("cache_dir") && !l.starts_with("cache_key_file"))
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(
        ws.path().join("keycycle.toml"),
        format!("cache_dir = \"cache\"\n{text}\n"),
    )
    .unwrap();
    (ws, cache)
}

fn cache_entries(cache: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "cwasm"))
        .collect();
    v.sort();
    v
}

#[test]
fn a_planted_cache_entry_with_the_right_name_is_compiled_again_not_loaded() {
    let sim = DemoSim::start();
    let (ws, cache) = own_cache_workspace(&sim);
    ws.run(&["run", "who"]).assert_ok();
    let entries = cache_entries(&cache);
    assert_eq!(entries.len(), 1, "{entries:?}");
    let entry = &entries[0];
    assert!(
        ws.path().join("state/cache.key").is_file(),
        "the cache key is in the state folder"
    );

    // Real machine code for the same plugin and engine, written by another
    // keycycle (its own key): what someone who can write the cache folder
    // plants under the expected name.
    let (other, other_cache) = own_cache_workspace(&sim);
    other.run(&["run", "who"]).assert_ok();
    let planted = std::fs::read(&cache_entries(&other_cache)[0]).unwrap();
    assert_eq!(
        cache_entries(&other_cache)[0].file_name(),
        entry.file_name(),
        "the same name: same plugin, same engine"
    );
    assert_ne!(std::fs::read(entry).unwrap(), planted);
    std::fs::write(entry, &planted).unwrap();

    let run = ws.run(&["run", "who", "-v"]);
    run.assert_ok()
        .stderr_has("discarding a cache entry: its authentication tag does not verify");
    let now = std::fs::read(entry).unwrap();
    assert_ne!(now, planted, "the planted entry was replaced");

    // A planted entry of garbage is no different.
    std::fs::write(entry, b"planted").unwrap();
    ws.run(&["run", "who"]).assert_ok();
    assert_ne!(std::fs::read(entry).unwrap(), b"planted");
}

#[test]
fn a_cache_folder_others_can_write_or_a_linked_one_is_not_used() {
    use std::os::unix::fs::PermissionsExt as _;
    let sim = DemoSim::start();
    let (ws, cache) = own_cache_workspace(&sim);
    ws.run(&["run", "who"]).assert_ok();
    let entry = cache_entries(&cache).remove(0);
    let before = std::fs::read(&entry).unwrap();

    // Group-writable: refused as it is, not chmod-ed and trusted.
    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o770)).unwrap();
    ws.run(&["run", "who"])
        .assert_code(3)
        .stderr_has("is writable by other users (mode 0770)");
    assert_eq!(
        std::fs::metadata(&cache).unwrap().permissions().mode() & 0o777,
        0o770
    );
    assert_eq!(
        std::fs::read(&entry).unwrap(),
        before,
        "nothing in it was touched"
    );
    let doctor = ws.run(&["doctor"]);
    doctor.assert_code(3);
    assert!(doctor.stdout.contains("mode 0770"), "{}", doctor.stdout);
    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o700)).unwrap();

    // A cache folder that is a symbolic link is not followed.
    let real = ws.path().join("real-cache");
    std::fs::rename(&cache, &real).unwrap();
    std::os::unix::fs::symlink(&real, &cache).unwrap();
    ws.run(&["run", "who"])
        .assert_code(3)
        .stderr_has("is a symbolic link");
    std::fs::remove_file(&cache).unwrap();
    std::fs::rename(&real, &cache).unwrap();
    ws.run(&["run", "who"]).assert_ok();
}

#[test]
fn a_linked_cache_entry_is_not_followed() {
    let sim = DemoSim::start();
    let (ws, cache) = own_cache_workspace(&sim);
    ws.run(&["run", "who"]).assert_ok();
    let entry = cache_entries(&cache).remove(0);
    // The entry, authentic, moved elsewhere and linked back.
    let elsewhere = ws.path().join("elsewhere.cwasm");
    std::fs::rename(&entry, &elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &entry).unwrap();
    let target = std::fs::read(&elsewhere).unwrap();
    ws.run(&["run", "who", "-v"])
        .assert_ok()
        .stderr_has("discarding a cache entry: it is a symbolic link");
    let meta = std::fs::symlink_metadata(&entry).unwrap();
    assert!(
        meta.file_type().is_file(),
        "the link was replaced by a file"
    );
    assert_eq!(
        std::fs::read(&elsewhere).unwrap(),
        target,
        "its target is untouched"
    );
}
