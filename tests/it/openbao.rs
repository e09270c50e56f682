//! Secrets in OpenBao (`[secrets] backend = "openbao"`), against a real
//! `bao server -dev` per test: `keycycle secrets` set, list and rm; a real
//! rotation whose minted token lands in OpenBao and nowhere in clear;
//! check-and-set refusing a second writer, at the CLI and at the crate's
//! API; AppRole login from files and again after the token expires; the
//! CA file for TLS; refused tokens and policies as configuration errors
//! that never show the token.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use keycycle_secret::SecretValue;
use keycycle_sim::Release;
use keycycle_vault::{Auth, Credential, KvConfig, KvStore, VaultError};

use crate::support::*;

/// The policy docs/operations.md gives for a prefix of `keycycle/` in
/// mount `secret`, word for word: the tests prove it is enough.
const POLICY: &str = r#"
path "secret/data/keycycle/*" {
  capabilities = ["create", "read", "update"]
}
path "secret/metadata/keycycle/*" {
  capabilities = ["read", "list", "delete"]
}
path "secret/metadata/keycycle" {
  capabilities = ["list"]
}
"#;

/// A workspace whose secrets live in `bao` below `keycycle/`, with `rest`
/// after the `[secrets]` section.
fn workspace(bao: &OpenBao, secrets_extra: &str, rest: &str) -> Workspace {
    let ws = Workspace::new();
    ws.config(&format!(
        "{rest}\n{}",
        bao.secrets_section("keycycle/", secrets_extra)
    ));
    ws
}

/// Runs keycycle with the root token in `VAULT_TOKEN` and `env` besides;
/// the output is checked for every planted value.
fn run(ws: &Workspace, bao: &OpenBao, args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut all = vec![("VAULT_TOKEN", bao.root_token.as_str())];
    all.extend_from_slice(env);
    ws.run_env(args, &all)
}

/// `keycycle secrets set NAME` with the value from an environment variable.
fn set(ws: &Workspace, bao: &OpenBao, name: &str, value: &str) -> Run {
    run(
        ws,
        bao,
        &["secrets", "set", name, "--from-env", "KC_TEST_VALUE"],
        &[("KC_TEST_VALUE", value)],
    )
}

fn list_names(ws: &Workspace, bao: &OpenBao) -> Vec<String> {
    let list = run(ws, bao, &["secrets", "list", "--output", "json"], &[]);
    list.assert_ok();
    list.json()
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn secrets_set_list_rm_work_on_openbao_and_nothing_is_kept_locally() {
    let bao = OpenBao::start();
    let ws = workspace(&bao, "", "");
    let value = hard_canary("glpat-");
    set(&ws, &bao, "gitlab/ci-bot", &value).assert_ok();
    set(&ws, &bao, "demo/admin", &canary("demo-")).assert_ok();
    // What OpenBao holds is exactly what was given, as {"value": ...}.
    let (stored, version) = bao.kv_read("keycycle/gitlab/ci-bot").unwrap();
    assert!(stored == value, "the value came back changed");
    assert_eq!(version, 1);

    // A second set is a new version (check-and-set against the current one).
    let newer = hard_canary("glpat2-");
    set(&ws, &bao, "gitlab/ci-bot", &newer).assert_ok();
    let (stored, version) = bao.kv_read("keycycle/gitlab/ci-bot").unwrap();
    assert!(stored == newer);
    assert_eq!(version, 2);

    assert_eq!(list_names(&ws, &bao), ["demo/admin", "gitlab/ci-bot"]);
    let text = run(&ws, &bao, &["secrets", "list"], &[]);
    text.assert_ok();
    assert!(
        text.stdout.contains("gitlab/ci-bot\t(updated ") && text.stdout.contains("version 2"),
        "{}",
        text.stdout
    );

    // rm deletes the metadata with every version.
    run(&ws, &bao, &["secrets", "rm", "gitlab/ci-bot"], &[]).assert_ok();
    assert_eq!(bao.kv_read("keycycle/gitlab/ci-bot"), None);
    let (status, _) = bao
        .request(
            "GET",
            "secret/metadata/keycycle/gitlab/ci-bot",
            None,
            Some(&bao.root_token),
        )
        .unwrap();
    assert_eq!(status, 404, "the metadata and versions are gone");
    run(&ws, &bao, &["secrets", "rm", "gitlab/ci-bot"], &[])
        .assert_code(3)
        .stderr_has("there is no secret `gitlab/ci-bot` in OpenBao at");
    assert_eq!(list_names(&ws, &bao), ["demo/admin"]);

    // A name the local store refuses is refused here too, before any request.
    run(
        &ws,
        &bao,
        &["secrets", "set", "../escape", "--from-env", "KC_TEST_VALUE"],
        &[("KC_TEST_VALUE", &canary("x-"))],
    )
    .assert_code(3);

    // Nothing of the secrets is on local disk: no store file at all.
    assert!(!ws.path().join("state/secrets.json").exists());
    ws.assert_files_clean();
}

/// The shipped demo runbook, rotating `demo/admin` kept in OpenBao.
fn rotation_workspace(sim: &DemoSim, bao: &OpenBao) -> (Workspace, String) {
    let ws = workspace(
        bao,
        "",
        &format!(
            "{}\n[runbooks.demo-rotate]\nsecrets = [\"demo/admin\"]\n",
            example_plugin_config(sim)
        ),
    );
    ws.runbook_from_repo("demo-rotate");
    let (_, admin) = sim.seed_admin();
    set(&ws, bao, "demo/admin", &admin).assert_ok();
    (ws, admin)
}

#[test]
fn a_rotation_keeps_the_minted_token_in_openbao_and_nowhere_in_clear() {
    let sim = DemoSim::start();
    let bao = OpenBao::start();
    let (ws, old) = rotation_workspace(&sim, &bao);
    let rotated = run(&ws, &bao, &["run", "demo-rotate", "--output", "json"], &[]);
    rotated.assert_ok();

    let (new, version) = bao.kv_read("keycycle/demo/admin").unwrap();
    assert_eq!(
        version, 2,
        "one check-and-set write on top of the seeded value"
    );
    assert!(new != old, "the store holds a new token");
    // The minted token is the one the service knows, and the old one is
    // revoked.
    let tokens = sim.state.tokens();
    assert!(tokens.iter().any(|t| t.active && t.value.expose() == new));
    assert!(tokens.iter().any(|t| !t.active && t.value.expose() == old));

    // Now that its value is known, the minted token is a canary too: it
    // was in no output of the run, and is in no file of the workspace
    // (the journal in state.db holds it sealed).
    plant(&new);
    assert_clean("stdout of the rotation", &rotated.stdout);
    assert_clean("stderr of the rotation", &rotated.stderr);
    ws.assert_files_clean_including(&["state/state.db", "keycycle.toml"]);
    assert!(!ws.path().join("state/secrets.json").exists());
}

#[test]
fn a_second_writer_between_read_and_write_is_refused_and_keeps_its_value() {
    let sim = DemoSim::start();
    let bao = OpenBao::start();
    let (ws, _old) = rotation_workspace(&sim, &bao);
    // The run reads demo/admin (version 1) for its first plugin call, then
    // mints a new token; while the service holds that request, another
    // runner rotates the same secret.
    let gate = sim.state.gate("POST", "/api/tokens", 1);
    let child = ws
        .command(&["run", "demo-rotate"])
        .env("VAULT_TOKEN", &bao.root_token)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    assert!(
        gate.wait_arrived(Duration::from_secs(120)),
        "keycycle never asked for a new token"
    );
    let theirs = canary("other-runner-");
    assert_eq!(bao.kv_write("keycycle/demo/admin", &theirs), 2);
    gate.release(Release::Process);
    let out = child.timed_wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_clean(
        "stdout of the refused run",
        &String::from_utf8_lossy(&out.stdout),
    );
    assert_clean("stderr of the refused run", &stderr);
    assert_eq!(
        out.status.code(),
        Some(5),
        "a failed run; stderr:\n{stderr}"
    );
    assert!(
        stderr.contains("secret `demo/admin` was changed by another writer since keycycle read it"),
        "{stderr}"
    );
    // Nothing was overwritten: the other runner's value is the current one.
    let (value, version) = bao.kv_read("keycycle/demo/admin").unwrap();
    assert!(value == theirs, "the other writer's value was overwritten");
    assert_eq!(version, 2);
    // The token keycycle minted is in no output or file either.
    let minted: Vec<String> = sim
        .state
        .tokens()
        .into_iter()
        .filter(|t| t.name != "admin")
        .map(|t| t.value.expose().to_owned())
        .collect();
    assert_eq!(minted.len(), 1, "one token was minted");
    for m in &minted {
        plant(m);
    }
    assert_clean("stderr of the refused run", &stderr);
    ws.assert_files_clean_including(&["state/state.db"]);
}

/// A `KvStore` on `bao` with `auth`, below `keycycle/`.
fn kv(bao: &OpenBao, auth: Auth) -> KvStore {
    KvStore::new(KvConfig {
        address: bao.address.clone(),
        mount: "secret".to_owned(),
        prefix: "keycycle/".to_owned(),
        ca_pem: bao.ca_file.as_ref().map(|f| std::fs::read(f).unwrap()),
        auth,
        timeout: Duration::from_secs(30),
    })
    .unwrap()
}

fn root(bao: &OpenBao) -> Auth {
    Auth::Token(Credential::Given {
        value: SecretValue::new(bao.root_token.as_str()),
        from: "the test".to_owned(),
    })
}

#[test]
fn check_and_set_at_the_crate_level_refuses_every_stale_write() {
    let bao = OpenBao::start();
    let (a, b) = (kv(&bao, root(&bao)), kv(&bao, root(&bao)));

    // Two runners create the same new key: the second is refused.
    assert_eq!(a.get("team/new").unwrap(), None);
    assert_eq!(b.get("team/new").unwrap(), None);
    let first = SecretValue::new(canary("first-"));
    assert_eq!(a.set("team/new", &first).unwrap(), 1);
    let second = SecretValue::new(canary("second-"));
    match b.set("team/new", &second) {
        Err(e @ VaultError::Conflict { .. }) => {
            let text = e.to_string();
            assert!(
                text.contains("`team/new`") && text.contains("another writer"),
                "{text}"
            );
            assert_clean("the conflict error", &text);
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(bao.kv_read("keycycle/team/new").unwrap().0, first.expose());

    // Both read version 1; one writes, and the other's write is stale.
    assert_eq!(a.get("team/new").unwrap().as_ref(), Some(&first));
    let b2 = kv(&bao, root(&bao));
    assert_eq!(b2.get("team/new").unwrap().as_ref(), Some(&first));
    let newer = SecretValue::new(canary("newer-"));
    assert_eq!(a.set("team/new", &newer).unwrap(), 2);
    // A later read by the stale writer does not make its write pass: a
    // rotation's writes go against the version it started from.
    assert_eq!(b2.get("team/new").unwrap().as_ref(), Some(&newer));
    assert!(matches!(
        b2.set("team/new", &second),
        Err(VaultError::Conflict { expected: 1, .. })
    ));
    // The writer's own writes move its version on.
    assert_eq!(a.set("team/new", &first).unwrap(), 3);
    assert_eq!(
        a.set_cas("team/new", &second, 2).err().map(|e| e.class()),
        Some(keycycle_vault::ErrorClass::Conflict)
    );
    assert_eq!(
        bao.kv_read("keycycle/team/new").unwrap(),
        (first.expose().to_owned(), 3)
    );

    // Values read are registered for masking.
    let masked = keycycle_secret::redact(first.expose()).into_owned();
    assert_eq!(masked, keycycle_secret::MASK);
}

#[test]
fn the_store_answers_from_inside_the_tokio_runtime() {
    let bao = OpenBao::start();
    let value = canary("in-runtime-");
    bao.kv_write("keycycle/rt/one", &value);
    let store = std::sync::Arc::new(kv(&bao, root(&bao)));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let got = rt.block_on({
        let store = store.clone();
        async move {
            // On a worker, as the sandbox calls `SecretSource::get` from an
            // async host function; several at once.
            let tasks: Vec<_> = (0..4)
                .map(|_| {
                    let store = store.clone();
                    tokio::spawn(async move { store.get("rt/one").unwrap().unwrap() })
                })
                .collect();
            let mut values = Vec::new();
            for t in tasks {
                values.push(t.await.unwrap());
            }
            values
        }
    });
    assert!(got.iter().all(|v| v.expose() == value));
    // The store outlives the runtime, and the last handle drops inside one.
    drop(rt);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        assert_eq!(store.list().unwrap(), ["rt/one"]);
        drop(store);
    });
}

/// A 0600 file in the workspace holding `value`.
fn private_file(ws: &Workspace, name: &str, value: &str) -> std::path::PathBuf {
    let path = ws.file(name, &format!("{value}\n"));
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

#[test]
fn approle_logs_in_from_files_and_again_when_its_token_expires() {
    let bao = OpenBao::start();
    bao.api(
        "PUT",
        "sys/policies/acl/keycycle",
        Some(serde_json::json!({ "policy": POLICY })),
    );
    let (role_id, secret_id) = bao.approle("keycycle", "keycycle", "1h");
    let ws = Workspace::new();
    private_file(&ws, "role-id", &role_id);
    private_file(&ws, "secret-id", &secret_id);
    ws.config(&bao.secrets_section(
        "keycycle/",
        "auth = \"approle\"\nrole_id_file = \"role-id\"\nsecret_id_file = \"secret-id\"\n",
    ));
    // No token anywhere: the commands log in.
    let value = hard_canary("approle-");
    ws.run_env(
        &["secrets", "set", "ci/deploy", "--from-env", "KC_TEST_VALUE"],
        &[("KC_TEST_VALUE", &value)],
    )
    .assert_ok();
    assert!(bao.kv_read("keycycle/ci/deploy").unwrap().0 == value);
    let list = ws.run(&["secrets", "list", "--output", "json"]);
    list.assert_ok();
    assert_eq!(list.json()[0]["name"], "ci/deploy");
    let doctor = ws.run(&["doctor"]);
    doctor.assert_ok();
    assert!(
        doctor
            .stdout
            .contains("authenticated with the AppRole login (role id from file")
            && doctor.stdout.contains("keycycle"),
        "{}",
        doctor.stdout
    );
    // Outside the policy's paths: denied, by path, as a configuration error.
    let (status, _) = bao
        .request(
            "POST",
            "secret/data/elsewhere/x",
            Some(serde_json::json!({"data": {"value": "v"}})),
            Some(&bao.root_token),
        )
        .unwrap();
    assert_eq!(status, 200);
    let ws_other = Workspace::new();
    private_file(&ws_other, "role-id", &role_id);
    private_file(&ws_other, "secret-id", &secret_id);
    ws_other.config(&bao.secrets_section(
        "elsewhere/",
        "auth = \"approle\"\nrole_id_file = \"role-id\"\nsecret_id_file = \"secret-id\"\n",
    ));
    ws_other
        .run(&["secrets", "list"])
        .assert_code(3)
        .stderr_has("denied listing secrets under `elsewhere/`");

    // A wrong secret id is refused at login, by where it came from.
    private_file(&ws, "secret-id", &canary("wrong-secret-id-"));
    ws.run(&["secrets", "list"])
        .assert_code(3)
        .stderr_has("refused the AppRole login (role id from file");

    // A token that expires after two seconds: the store logs in again.
    let (role_id, secret_id) = bao.approle("short", "keycycle", "2s");
    let store = kv(
        &bao,
        Auth::AppRole {
            mount: "approle".to_owned(),
            role_id: Credential::Given {
                value: SecretValue::new(role_id),
                from: "the test".to_owned(),
            },
            secret_id: Credential::Given {
                value: SecretValue::new(secret_id),
                from: "the test".to_owned(),
            },
        },
    );
    assert!(store.get("ci/deploy").unwrap().is_some());
    std::thread::sleep(Duration::from_millis(2500));
    assert!(store.get("ci/deploy").unwrap().is_some());
    let status = store.status().unwrap();
    assert!(
        status.policies.iter().any(|p| p == "keycycle"),
        "{:?}",
        status.policies
    );
    // The policy covers deleting too.
    assert!(store.remove("ci/deploy").unwrap());
    assert_eq!(bao.kv_read("keycycle/ci/deploy"), None);
    // And it is the policy the operations guide gives.
    let guide = std::fs::read_to_string(repo_root().join("docs/operations.md")).unwrap();
    assert!(
        guide.contains(POLICY.trim()),
        "docs/operations.md no longer gives the policy this test uses"
    );
}

#[test]
fn a_wrong_token_is_a_configuration_error_that_never_shows_the_token() {
    let bao = OpenBao::start();
    let sim = DemoSim::start();
    let (ws, _) = rotation_workspace(&sim, &bao);
    let wrong = canary("wrong-token-");
    // `run` checks the token before the run is recorded.
    let refused = ws.run_env(&["run", "demo-rotate"], &[("VAULT_TOKEN", &wrong)]);
    refused
        .assert_code(3)
        .stderr_has("refused the token from VAULT_TOKEN")
        .stderr_has("wrong, expired or revoked");
    assert!(ws.unfinished_runs().is_empty(), "nothing was recorded");
    ws.run_env(&["secrets", "list"], &[("BAO_TOKEN", &wrong)])
        .assert_code(3)
        .stderr_has("refused the token from BAO_TOKEN");
    // No token at all says how to give one.
    ws.run(&["secrets", "list"])
        .assert_code(3)
        .stderr_has("set VAULT_TOKEN (or BAO_TOKEN), or [secrets] token_file");

    // A token file that others may read is refused before it is sent.
    // Outside the workspace, whose files are scanned for planted values.
    let elsewhere = tempfile::tempdir().unwrap();
    let token_file = elsewhere.path().join("token");
    std::fs::write(&token_file, format!("{}\n", bao.root_token)).unwrap();
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    ws.config(&format!(
        "{}\n[runbooks.demo-rotate]\nsecrets = [\"demo/admin\"]\n\n{}",
        example_plugin_config(&sim),
        bao.secrets_section(
            "keycycle/",
            &format!("token_file = \"{}\"\n", token_file.display())
        )
    ));
    ws.run(&["secrets", "list"])
        .assert_code(3)
        .stderr_has("chmod 600");
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(
        ws.run(&["secrets", "list", "--output", "json"]).json()[0]["name"],
        "demo/admin"
    );

    // A token with a policy but the wrong one: denied, naming the path.
    let other = bao.token_with_policy(
        "other",
        "path \"secret/data/other/*\" { capabilities = [\"read\"] }",
    );
    // The plugin's secret is unavailable: a refused capability (exit 4).
    ws.run_env(&["run", "demo-rotate"], &[("VAULT_TOKEN", &other)])
        .assert_code(4)
        .stderr_has("denied reading secret `demo/admin`")
        .stderr_has("policy must allow it on secret/data/keycycle/demo/admin");
    ws.assert_files_clean();
}

#[test]
fn doctor_reports_the_backend_and_tls_needs_the_ca_file() {
    let bao = OpenBao::start_tls();
    let ws = workspace(&bao, "", "");
    set(&ws, &bao, "tls/one", &canary("tls-")).assert_ok();
    let doctor = run(&ws, &bao, &["doctor", "--output", "json"], &[]);
    doctor.assert_ok();
    let facts = &doctor.json()["secrets_backend"];
    assert_eq!(facts["reachable"], true, "{facts}");
    assert_eq!(facts["authenticated"], true, "{facts}");
    assert_eq!(facts["kv_v2"], true, "{facts}");
    assert_eq!(facts["secrets"], 1, "{facts}");
    assert_eq!(facts["credential"], "token from VAULT_TOKEN");
    let text = run(&ws, &bao, &["doctor"], &[]);
    text.assert_ok();
    assert!(
        text.stdout.contains("mount `secret` is KV version 2"),
        "{}",
        text.stdout
    );

    // Without the CA file the server's certificate is not trusted.
    let no_ca = Workspace::new();
    no_ca.config(&format!(
        "[secrets]\nbackend = \"openbao\"\naddress = \"{}\"\nprefix = \"keycycle/\"\n",
        bao.address
    ));
    run(&no_ca, &bao, &["secrets", "list"], &[])
        .assert_code(3)
        .stderr_has("cannot reach");

    // A mount that is not KV v2 is named as such.
    let wrong_mount = Workspace::new();
    wrong_mount.config(&format!(
        "[secrets]\nbackend = \"vault\"\naddress = \"{}\"\nmount = \"cubbyhole\"\nca_cert = \"{}\"\n",
        bao.address,
        bao.ca_file.as_ref().unwrap().display()
    ));
    let doctor = run(&wrong_mount, &bao, &["doctor"], &[]);
    doctor.assert_code(3);
    assert!(
        doctor.stdout.contains("is cubbyhole, not KV version 2"),
        "{}",
        doctor.stdout
    );
}

#[test]
fn kv_settings_are_checked_with_the_config() {
    let ws = Workspace::new();
    ws.config("[secrets]\nbackend = \"openbao\"\n");
    ws.run(&["secrets", "list"])
        .assert_code(3)
        .stderr_has("needs address");
    ws.config("[secrets]\naddress = \"http://127.0.0.1:1\"\n");
    ws.run(&["secrets", "list"])
        .assert_code(3)
        .stderr_has("address is a setting of backend");
    ws.config("[secrets]\nbackend = \"openbao\"\naddress = \"http://vault.example.com:8200\"\n");
    ws.run_env(&["secrets", "list"], &[("VAULT_TOKEN", &canary("t-"))])
        .assert_code(3)
        .stderr_has("in clear");
    ws.config("[secrets]\nbackend = \"consul\"\n");
    ws.run(&["secrets", "list"])
        .assert_code(3)
        .stderr_has("backend = \"consul\" is not known");
}
