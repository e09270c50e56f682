//! The Signon plugin and the http-check plugin through the real binary
//! against the Signon simulator: after the person has created a new token
//! (the manual step), a runbook checks that it is valid for the consuming
//! app's client_id with the right permissions, that the revoked and the
//! expired tokens are refused, and that another app's client_id refuses
//! the new token too.

use keycycle_sim::{SignonAppSeed, SignonTokenSeed, SignonUserSeed};
use time::macros::date;

use crate::support::*;

/// The Signon simulator in the test process: an API user, the application
/// its tokens are for and another one, an old token the person has since
/// revoked, an expired one, and the new one the person just created.
struct SignonSim {
    rt: tokio::runtime::Runtime,
    server: Option<keycycle_sim::SimServer>,
    state: keycycle_sim::SignonState,
    origin: String,
    new_token: String,
    old_token: String,
    expired_token: String,
}

const CLIENT_ID: &str = "publishing-api-oauth-id";
const OTHER_CLIENT_ID: &str = "content-store-oauth-id";

impl SignonSim {
    fn start() -> SignonSim {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let (server, state) = rt.block_on(keycycle_sim::start_signon(0)).unwrap();
        state.set_today(Some(date!(2026 - 11 - 02)));
        let origin = server.base_url.trim_end_matches('/').to_owned();
        let user = state
            .add_api_user(SignonUserSeed::new(
                "Short URL Manager",
                "short-url-manager@alphagov.co.uk",
            ))
            .unwrap();
        let app = state
            .add_application(SignonAppSeed {
                name: "Publishing API".into(),
                oauth_id: Some(CLIENT_ID.into()),
                oauth_secret: None,
            })
            .unwrap();
        state
            .add_application(SignonAppSeed {
                name: "Content Store".into(),
                oauth_id: Some(OTHER_CLIENT_ID.into()),
                oauth_secret: None,
            })
            .unwrap();
        let seed = |value: &str, created_on| {
            state
                .create_token(
                    SignonTokenSeed::new(user, app)
                        .value(value)
                        .created_on(created_on),
                )
                .unwrap()
        };
        let expired_token = canary("signon-expired-");
        seed(&expired_token, date!(2024 - 09 - 01));
        let old_token = canary("signon-old-");
        let old = seed(&old_token, date!(2025 - 01 - 10));
        // The manual step: "Create access token" in Signon's UI.
        let new_token = canary("signon-new-");
        seed(&new_token, date!(2026 - 11 - 02));
        state
            .set_permissions(user, app, &["signin", "internal_app"])
            .unwrap();
        // And, once the consumer used the new one, "Revoke" on the old.
        state.revoke_token(old.id).unwrap();
        SignonSim {
            rt,
            server: Some(server),
            state,
            origin,
            new_token,
            old_token,
            expired_token,
        }
    }
}

impl Drop for SignonSim {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            self.rt.block_on(server.shutdown());
        }
    }
}

const CHECK: &str = r#"
// Check the tokens of one API user for one application, as gds-sso would.
let signon = plugin("signon");
let consumer = plugin("consumer");
let fresh = signon.check_token(#{ token: secret("signon/new"), client_id: params.client_id });
if !fresh.valid { fail("the new token is not valid for the application"); }
if !("signin" in fresh.permissions) { fail("the new token's user lacks signin"); }
let old = signon.check_token(#{ token: secret("signon/old"), client_id: params.client_id });
let expired = signon.check_token(#{ token: secret("signon/expired"), client_id: params.client_id });
let wrong = signon.check_token(#{ token: secret("signon/new"), client_id: params.other_client_id });
let path = `/user.json?client_id=${params.client_id}`;
let probe_new = consumer.probe(#{ url: path, bearer: secret("signon/new"), json_field: "user.email", json_equals: "short-url-manager@alphagov.co.uk" });
let probe_perm = consumer.probe(#{ url: path, bearer: secret("signon/new"), json_field: "user.permissions", json_contains: "admin" });
let probe_old = consumer.probe(#{ url: path, bearer: secret("signon/old"), expect_status: 401 });
#{
    new_valid: fresh.valid,
    email: fresh.email,
    permissions: fresh.permissions,
    disabled: fresh.disabled,
    old_valid: old.valid,
    expired_valid: expired.valid,
    wrong_client_valid: wrong.valid,
    probe_new: probe_new,
    probe_old: probe_old,
    probe_perm: probe_perm,
}
"#;

#[test]
fn a_new_token_is_checked_valid_and_revoked_expired_and_misdirected_ones_invalid() {
    let sim = SignonSim::start();
    let ws = Workspace::new();
    ws.config(&format!(
        "[plugins.signon]\npath = \"{}\"\nhosts = [\"{o}\"]\nconfig = {{ base_url = \"{o}\" }}\n\n\
         [plugins.consumer]\npath = \"{}\"\nhosts = [\"{o}\"]\nconfig = {{ base_url = \"{o}\" }}\n\n\
         [runbooks.signon-check]\nsecrets = [\"signon/new\", \"signon/old\", \"signon/expired\"]\n",
        wasm("signon").display(),
        wasm("http_check").display(),
        o = sim.origin
    ));
    ws.set_secret("signon/new", &sim.new_token);
    ws.set_secret("signon/old", &sim.old_token);
    ws.set_secret("signon/expired", &sim.expired_token);
    ws.runbook("signon-check", CHECK);
    let tokens_before = sim.state.snapshot().tokens;

    let run = ws.run(&[
        "run",
        "signon-check",
        "--set",
        &format!("client_id={CLIENT_ID}"),
        "--set",
        &format!("other_client_id={OTHER_CLIENT_ID}"),
        "-o",
        "json",
    ]);
    run.assert_ok();
    let result = &run.json()["result"];
    assert_eq!(result["new_valid"], true, "{result}");
    assert_eq!(result["email"], "short-url-manager@alphagov.co.uk");
    assert_eq!(
        result["permissions"],
        serde_json::json!(["internal_app", "signin"])
    );
    assert_eq!(result["disabled"], false);
    assert_eq!(result["old_valid"], false, "the revoked token");
    assert_eq!(result["expired_valid"], false, "the expired token");
    assert_eq!(
        result["wrong_client_valid"], false,
        "another app's client_id"
    );
    assert_eq!(
        result["probe_new"],
        serde_json::json!({"method": "GET", "status": 200, "status_ok": true, "field_found": true, "field_ok": true, "ok": true})
    );
    assert_eq!(
        result["probe_old"],
        serde_json::json!({"method": "GET", "status": 401, "status_ok": true, "field_found": null, "field_ok": null, "ok": true})
    );
    assert_eq!(
        result["probe_perm"],
        serde_json::json!({"method": "GET", "status": 200, "status_ok": true, "field_found": true, "field_ok": false, "ok": false}),
        "the user has no admin permission"
    );

    // Checking changed nothing at Signon: seven lookups, the same tokens.
    let lookups = sim
        .state
        .requests()
        .iter()
        .filter(|r| r.method == "GET" && r.path == "/user.json")
        .count();
    assert_eq!(lookups, 7);
    assert_eq!(sim.state.snapshot().tokens, tokens_before);
    ws.assert_files_clean_including(&["state/state.db", "state/secrets.json"]);
}

#[test]
fn a_check_without_client_id_is_refused_before_anything_is_sent() {
    let sim = SignonSim::start();
    let ws = Workspace::new();
    ws.config(&format!(
        "[plugins.signon]\npath = \"{}\"\nhosts = [\"{o}\"]\nconfig = {{ base_url = \"{o}\" }}\n\n\
         [runbooks.signon-blank]\nsecrets = [\"signon/old\"]\n",
        wasm("signon").display(),
        o = sim.origin
    ));
    ws.set_secret("signon/old", &sim.old_token);
    ws.runbook(
        "signon-blank",
        r#"plugin("signon").check_token(#{ token: secret("signon/old"), client_id: " " })"#,
    );
    let run = ws.run(&["run", "signon-blank"]);
    assert_ne!(run.code, 0, "a blank client_id must not pass");
    run.stderr_has("client_id");
    assert!(sim.state.requests().is_empty(), "nothing reached Signon");
}

/// `send` is the mutating form of the check: a dry run shows it and sends
/// nothing; a real run sends the method and body the runbook gives, with
/// the credential in the header it names.
#[test]
fn http_check_send_is_a_change_shown_in_dry_runs() {
    let sim = SignonSim::start();
    let (app_server, app) = keycycle_sim::start_signon_app(&sim.state, CLIENT_ID, 0).unwrap();
    let origin = app_server.base_url.clone();
    let ws = Workspace::new();
    ws.config(&format!(
        "[plugins.server]\npath = \"{}\"\nhosts = [\"{origin}\"]\nconfig = {{ base_url = \"{origin}\" }}\nsecrets = {{ token = \"signon/new\" }}\n",
        wasm("http_check").display(),
    ));
    ws.set_secret("signon/new", &sim.new_token);
    ws.runbook(
        "send",
        r#"
let server = plugin("server");
let sent = server.send(#{ url: "/api/publish", method: "put", body: #{ base_path: "/x" }, use_granted_token: true, json_field: "path", json_equals: "/api/publish" });
if dry_run() { return #{ dry: true }; }
sent
"#,
    );
    let dry = ws.run(&["run", "send", "--dry-run", "-o", "json"]);
    dry.assert_ok();
    assert_clean("dry run", &format!("{}{}", dry.stdout, dry.stderr));
    assert!(
        dry.stderr.contains("would call server.send"),
        "{}",
        dry.stderr
    );
    assert!(app.calls().is_empty(), "a dry run sent the change");

    let run = ws.run(&["run", "send", "-o", "json"]);
    run.assert_ok();
    assert_clean("run", &format!("{}{}", run.stdout, run.stderr));
    let result = &run.json()["result"];
    assert_eq!(result["method"], "PUT");
    assert_eq!(result["status"], 200);
    assert_eq!(result["field_ok"], true, "{result}");
    let calls = app.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].path, "/api/publish");
    assert_eq!(calls[0].status, 200, "the granted token was sent as bearer");
    ws.assert_files_clean();
}
