//! The secrets store through the CLI: values come from stdin, files or the
//! environment, never argv; the key file must be private; nothing is stored
//! in clear.

use std::os::unix::fs::PermissionsExt;

use crate::support::*;

#[test]
fn set_list_rm_round_trip_without_values_in_output_or_on_disk() {
    let ws = Workspace::new();
    ws.config("");
    let value = canary("glpat-");
    ws.set_secret("gitlab/token", &value);
    let from_file = tempfile::NamedTempFile::new().unwrap();
    let file_value = canary("file-");
    std::fs::write(from_file.path(), format!("{file_value}\n")).unwrap();
    ws.run(&[
        "secrets",
        "set",
        "from/file",
        "--from-file",
        from_file.path().to_str().unwrap(),
    ])
    .assert_ok();
    let env_value = canary("env-");
    let out = ws
        .command(&["secrets", "set", "from/env", "--from-env", "TOKEN_VAR"])
        .env("TOKEN_VAR", &env_value)
        .output()
        .unwrap();
    assert!(out.status.success());

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
    ws.assert_files_clean();

    ws.run(&["secrets", "rm", "from/env"]).assert_ok();
    ws.run(&["secrets", "rm", "from/env"])
        .assert_code(3)
        .stderr_has("no secret `from/env`");
    let list = ws.run(&["secrets", "list", "--output", "json"]);
    assert_eq!(list.json().as_array().unwrap().len(), 2);

    // An empty value is refused rather than stored.
    ws.run_with_stdin(&["secrets", "set", "empty"], Some(""))
        .assert_code(1)
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
            .output()
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
    assert_ne!(code, 0);
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
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("wrong master key"), "{stderr}");
}
