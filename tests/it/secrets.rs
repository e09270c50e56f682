//! The secrets store through the CLI: values come from stdin, files or the
//! environment, never argv; the key file must be private; nothing is stored
//! in clear. One damaged entry in the store stays confined to that entry.

use std::os::unix::fs::PermissionsExt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use crate::support::*;

#[test]
fn set_list_rm_round_trip_without_values_in_output_or_on_disk() {
    let ws = Workspace::new();
    ws.config("");
    // Values that every escaping changes, so that neither a leak nor a
    // mangled round trip can hide behind one.
    let value = hard_canary("glpat-");
    ws.set_secret("gitlab/token", &value);
    let from_file = tempfile::NamedTempFile::new().unwrap();
    let file_value = hard_canary("file-");
    std::fs::write(from_file.path(), format!("{file_value}\n")).unwrap();
    ws.run(&[
        "secrets",
        "set",
        "from/file",
        "--from-file",
        from_file.path().to_str().unwrap(),
    ])
    .assert_ok();
    let env_value = hard_canary("env-");
    let out = ws
        .command(&["secrets", "set", "from/env", "--from-env", "TOKEN_VAR"])
        .env("TOKEN_VAR", &env_value)
        .timed_output()
        .unwrap();
    assert!(out.status.success());
    assert_clean(
        "stdout of set --from-env",
        &String::from_utf8_lossy(&out.stdout),
    );
    assert_clean(
        "stderr of set --from-env",
        &String::from_utf8_lossy(&out.stderr),
    );

    // What was stored is exactly what was given: stdin and the file lose
    // their one trailing newline and nothing else. Compared without
    // printing the values.
    let stored = ws.stored_secrets();
    for (name, want) in [
        ("gitlab/token", &value),
        ("from/file", &file_value),
        ("from/env", &env_value),
    ] {
        let got = stored
            .get(name)
            .unwrap_or_else(|| panic!("{name} was not stored"));
        assert!(
            got == want,
            "{name} came back changed: {} bytes stored, {} given",
            got.len(),
            want.len()
        );
    }

    let list = ws.run(&["secrets", "list", "--output", "json"]);
    list.assert_ok();
    let names: Vec<String> = list
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["from/env", "from/file", "gitlab/token"]);
    ws.assert_files_clean_including(&["state/secrets.json"]);

    ws.run(&["secrets", "rm", "from/env"]).assert_ok();
    ws.run(&["secrets", "rm", "from/env"])
        .assert_code(3)
        .stderr_has("no secret `from/env`");
    let list = ws.run(&["secrets", "list", "--output", "json"]);
    assert_eq!(list.json().as_array().unwrap().len(), 2);
    let left = ws.stored_secrets();
    assert_eq!(
        left.keys().collect::<Vec<_>>(),
        ["from/file", "gitlab/token"],
        "rm removed exactly from/env"
    );
    assert!(left["gitlab/token"] == value && left["from/file"] == file_value);

    // An empty value is refused rather than stored.
    ws.run_with_stdin(&["secrets", "set", "empty"], Some(""))
        .assert_code(3)
        .stderr_has("empty");
}

#[test]
fn a_key_file_others_can_read_is_refused() {
    let ws = Workspace::new();
    ws.config("");
    let run = |args: &[&str]| {
        let out = ws
            .command(args)
            .env_remove("KEYCYCLE_MASTER_KEY")
            .timed_output()
            .unwrap();
        (
            out.status.code().unwrap(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, stderr) = run(&["secrets", "list"]);
    assert_eq!(code, 3, "{stderr}");
    assert!(
        stderr.contains("no master key") && stderr.contains("keycycle secrets init"),
        "{stderr}"
    );

    let (code, stderr) = run(&["secrets", "init"]);
    assert_eq!(code, 0, "{stderr}");
    let key = ws.path().join("state/master.key");
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    plant(std::fs::read_to_string(&key).unwrap().trim());
    let (code, _) = run(&["secrets", "list"]);
    assert_eq!(code, 0);

    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (code, stderr) = run(&["secrets", "list"]);
    assert_eq!(code, 3, "{stderr}");
    assert!(stderr.contains("chmod 600"), "{stderr}");

    // init never overwrites a key.
    let (code, stderr) = run(&["secrets", "init"]);
    assert_eq!(code, 3, "{stderr}");
    assert!(stderr.contains("already exists"), "{stderr}");
}

#[test]
fn the_wrong_master_key_is_reported_plainly() {
    let ws = Workspace::new();
    ws.config("");
    ws.set_secret("a", &canary("a-"));
    let out = ws
        .command(&["secrets", "list"])
        .env(
            "KEYCYCLE_MASTER_KEY",
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        )
        .timed_output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("wrong master key"), "{stderr}");
}

/// A wrong key that decodes: 32 zero bytes.
const WRONG_KEY: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";

#[test]
fn operator_mistakes_exit_with_the_configuration_code() {
    let ws = Workspace::new();
    ws.config("");
    ws.set_secret("a", &canary("a-"));

    ws.run_with_stdin(&["secrets", "set", "bad name"], Some("some-value"))
        .assert_code(3)
        .stderr_has("invalid secret name `bad name`");
    ws.run_with_stdin(&["secrets", "set", "empty"], Some("\n"))
        .assert_code(3)
        .stderr_has("is empty; nothing was stored");
    ws.run(&["secrets", "set", "f", "--from-file", "no/such/file.txt"])
        .assert_code(3)
        .stderr_has("check the path given to --from-file");
    ws.run(&[
        "secrets",
        "set",
        "e",
        "--from-env",
        "KEYCYCLE_TEST_UNSET_VAR",
    ])
    .assert_code(3)
    .stderr_has("KEYCYCLE_TEST_UNSET_VAR is not set");
    ws.run(&["secrets", "rm", "../x"])
        .assert_code(3)
        .stderr_has("invalid secret name");

    // `init` with a key file in place.
    let init = || {
        let out = ws
            .command(&["secrets", "init"])
            .env_remove("KEYCYCLE_MASTER_KEY")
            .timed_output()
            .unwrap();
        (
            out.status.code().unwrap(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, stderr) = init();
    assert_eq!(code, 0, "{stderr}");
    let (code, stderr) = init();
    assert_eq!(code, 3, "{stderr}");
    assert!(
        stderr.contains("already exists") && stderr.contains("move it aside"),
        "{stderr}"
    );

    // The wrong master key, for every command that opens the store.
    let with_wrong_key = |args: &[&str], stdin: &str| {
        use std::io::Write;
        let mut child = ws
            .command(args)
            .env("KEYCYCLE_MASTER_KEY", WRONG_KEY)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        let out = child.timed_wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_clean("stderr", &stderr);
        (out.status.code().unwrap(), stderr)
    };
    for (args, stdin) in [
        (&["secrets", "list"][..], ""),
        (&["secrets", "list", "--output", "json"][..], ""),
        (&["secrets", "set", "b"][..], "value-under-a-wrong-key"),
        (&["secrets", "rm", "a"][..], ""),
    ] {
        let (code, stderr) = with_wrong_key(args, stdin);
        assert_eq!(code, 3, "{args:?}: {stderr}");
        assert!(stderr.contains("wrong master key"), "{args:?}: {stderr}");
    }
    // A run is refused before it starts, whether or not it reads a secret.
    ws.config("[runbooks.read]\nsecrets = [\"a\"]\n");
    for runbook in ["let s = secret(\"a\");\n", "\"no secret\"\n"] {
        ws.runbook("read", runbook);
        for args in [&["run", "read"][..], &["run", "read", "--dry-run"][..]] {
            let (code, stderr) = with_wrong_key(args, "");
            assert_eq!(code, 3, "{args:?} {runbook:?}: {stderr}");
            assert!(stderr.contains("wrong master key"), "{args:?}: {stderr}");
        }
    }
    let (code, stderr) = with_wrong_key(&["cleanup"], "");
    assert_eq!(code, 3, "cleanup: {stderr}");
    assert!(stderr.contains("wrong master key"), "cleanup: {stderr}");

    // Nothing was changed under the wrong key.
    assert_eq!(
        ws.stored_secrets().keys().collect::<Vec<_>>(),
        ["a"],
        "the store changed under a wrong key"
    );
}

fn store_file(ws: &Workspace) -> std::path::PathBuf {
    ws.path().join("state/secrets.json")
}

/// The JSON object of entry `name` in the store file.
fn entry(ws: &Workspace, name: &str) -> Option<serde_json::Value> {
    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(store_file(ws)).unwrap()).unwrap();
    doc["secrets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == name)
        .cloned()
}

/// An edit of one entry's JSON object.
type Edit = fn(&mut serde_json::Value);

/// Edits entry `name` of the store file in place, as damage on disk would.
fn damage(ws: &Workspace, name: &str, edit: Edit) {
    let path = store_file(ws);
    let mut doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let entry = doc["secrets"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|e| e["name"] == name)
        .unwrap();
    edit(entry);
    std::fs::write(&path, serde_json::to_vec_pretty(&doc).unwrap()).unwrap();
}

/// One byte flipped in each kind of field an entry has.
const DAMAGES: [(&str, &str, Edit); 3] = [
    ("bad base64 nonce", "nonce", |e| {
        let nonce = e["nonce"].as_str().unwrap().replacen(|_| true, "*", 1);
        e["nonce"] = nonce.into();
    }),
    ("bad timestamp", "updated_at", |e| {
        let time = e["updated_at"].as_str().unwrap().replacen('-', "#", 1);
        e["updated_at"] = time.into();
    }),
    ("failed authentication", "authentication", |e| {
        let mut ct = STANDARD.decode(e["ciphertext"].as_str().unwrap()).unwrap();
        ct[0] ^= 0x01;
        e["ciphertext"] = STANDARD.encode(&ct).into();
    }),
];

fn reader_workspace() -> Workspace {
    let ws = Workspace::new();
    ws.config("[runbooks.read]\nsecrets = [\"alpha\", \"beta\", \"gamma\"]\n");
    for name in ["alpha", "beta", "gamma"] {
        ws.set_secret(name, &canary(&format!("{name}-")));
    }
    ws
}

fn read(ws: &Workspace, name: &str) -> Run {
    ws.runbook("read", &format!("let s = secret(\"{name}\");\n\"read\"\n"));
    ws.run(&["run", "read"])
}

#[test]
fn a_damaged_entry_is_listed_and_does_not_block_the_others() {
    for (what, field, edit) in DAMAGES {
        let ws = reader_workspace();
        damage(&ws, "beta", edit);
        let damaged = entry(&ws, "beta").unwrap();
        let ciphertext = damaged["ciphertext"].as_str().unwrap().to_owned();

        let list = ws.run(&["secrets", "list"]);
        list.assert_ok()
            .stderr_has("secret `beta` is damaged")
            .stderr_has(field)
            .stderr_has("keycycle secrets set beta")
            .stderr_has("keycycle secrets rm beta");
        let lines: Vec<&str> = list.stdout.lines().collect();
        assert_eq!(lines.len(), 3, "{what}: {}", list.stdout);
        assert!(
            lines[0].starts_with("alpha\t(updated "),
            "{what}: {}",
            lines[0]
        );
        assert!(
            lines[1].starts_with("beta\tDAMAGED: "),
            "{what}: {}",
            lines[1]
        );
        assert!(lines[1].contains(field), "{what}: {}", lines[1]);
        assert!(
            lines[2].starts_with("gamma\t(updated "),
            "{what}: {}",
            lines[2]
        );
        assert!(
            !list.stdout.contains(&ciphertext) && !list.stderr.contains(&ciphertext),
            "{what}: the ciphertext is quoted"
        );

        let json = ws.run(&["secrets", "list", "--output", "json"]);
        json.assert_ok().stderr_has("secret `beta` is damaged");
        let rows = json.json();
        let rows = rows.as_array().unwrap();
        let names: Vec<_> = rows.iter().map(|r| r["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["alpha", "beta", "gamma"], "{what}");
        assert!(rows[0]["damaged"].is_null(), "{what}: {rows:?}");
        assert!(rows[2]["damaged"].is_null(), "{what}: {rows:?}");
        let reason = rows[1]["damaged"]
            .as_str()
            .unwrap_or_else(|| panic!("{what}: {rows:?}"));
        assert!(reason.contains(field), "{what}: {reason}");
        assert!(
            !json.stdout.contains(&ciphertext),
            "{what}: the ciphertext is quoted"
        );

        // A run that does not use the damaged secret is unaffected; one that
        // reads it fails naming the entry and the fix.
        read(&ws, "alpha").assert_ok();
        read(&ws, "beta")
            .assert_code(5)
            .stderr_has("secret `beta`")
            .stderr_has("is damaged")
            .stderr_has("keycycle secrets set beta");

        // Another change keeps the damaged entry as it was on disk.
        ws.set_secret("delta", &canary("delta-"));
        assert_eq!(entry(&ws, "beta").as_ref(), Some(&damaged), "{what}");

        // `set` replaces it.
        let fresh = canary("beta-fresh-");
        ws.set_secret("beta", &fresh);
        let list = ws.run(&["secrets", "list", "--output", "json"]);
        list.assert_ok();
        assert!(!list.stderr.contains("damaged"), "{what}: {}", list.stderr);
        assert!(
            list.json()
                .as_array()
                .unwrap()
                .iter()
                .all(|r| r["damaged"].is_null()),
            "{what}: {}",
            list.stdout
        );
        read(&ws, "beta").assert_ok();
        assert!(
            ws.stored_secrets()["beta"] == fresh,
            "{what}: set did not store the new value"
        );
        ws.assert_files_clean();

        // `rm` removes it.
        damage(&ws, "beta", edit);
        ws.run(&["secrets", "rm", "beta"])
            .assert_ok()
            .stderr_has("removed secret `beta`");
        assert_eq!(entry(&ws, "beta"), None, "{what}");
        let list = ws.run(&["secrets", "list"]);
        list.assert_ok();
        assert!(!list.stderr.contains("damaged"), "{what}: {}", list.stderr);
        assert_eq!(
            ws.stored_secrets().keys().collect::<Vec<_>>(),
            ["alpha", "delta", "gamma"],
            "{what}"
        );
        read(&ws, "gamma").assert_ok();
    }
}

#[test]
fn damage_to_the_whole_store_still_fails_it() {
    let ws = reader_workspace();
    let path = store_file(&ws);
    let mut doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    doc["key_check"]["nonce"] = "*".into();
    std::fs::write(&path, serde_json::to_vec_pretty(&doc).unwrap()).unwrap();
    ws.run(&["secrets", "list"])
        .assert_code(3)
        .stderr_has("is corrupt")
        .stderr_has("key check");
    ws.run_with_stdin(&["secrets", "set", "alpha"], Some("another-value"))
        .assert_code(3)
        .stderr_has("is corrupt");
}

/// Values shorter than 4 bytes are not masked inside output (masking every
/// "ab" would destroy it), so keycycle never takes one as a secret: not in
/// `secrets set`, not as a secret answer, and not in `store_secret`.
#[test]
fn secrets_too_short_to_mask_are_refused_everywhere() {
    let ws = Workspace::new();
    let set = ws.run_with_stdin(&["secrets", "set", "short"], Some("abc"));
    set.assert_code(3)
        .stderr_has("is 3 bytes; nothing was stored")
        .stderr_has("at least 4");
    let list = ws.run(&["secrets", "list", "-o", "json"]);
    list.assert_ok();
    assert!(!list.stdout.contains("short"), "{}", list.stdout);

    ws.runbook(
        "ask",
        "let t = prompt_secret(\"token\", \"paste it\");\nstore_secret(\"kept\", t);\n\"done\"\n",
    );
    ws.config("[runbooks.ask]\nsecrets = [\"kept\"]\n");
    let file = ws.file("answer.txt", "xyz");
    let run = ws.run(&[
        "run",
        "ask",
        "--input",
        &format!("token=@{}", file.display()),
    ]);
    // The answer is refused as no answer: the run waits for a usable one.
    run.assert_code(6)
        .stderr_has("the secret answer is 3 bytes")
        .stderr_has("at least 4");
    let run_id = ws.only_unfinished_run();
    let good = ws.file("good.txt", "long-enough-value");
    ws.run(&[
        "resume",
        &run_id,
        "--input",
        &format!("token=@{}", good.display()),
    ])
    .assert_ok();

    ws.runbook(
        "mint",
        "store_secret(\"kept\", random_secret(1));\n\"done\"\n",
    );
    ws.config("[runbooks.mint]\nsecrets = [\"kept\"]\n");
    let run = ws.run(&["run", "mint"]);
    run.assert_code(5)
        .stderr_has("cannot store secret `kept`")
        .stderr_has("at least 4");
}
