//! The Zendesk plugin through the real binary against the Zendesk
//! simulator (and the GitLab one for GitLab consumers): OAuth tokens
//! rotated into app settings, webhooks and CI/CD variables, dry run first,
//! with the simulators' true state checked afterwards.

use keycycle_sim::{
    InstallationSeed, OauthClientSeed, OauthTokenSeed, VariableSeed, WebhookSeed, ZendeskUserSeed,
};

use crate::support::*;

/// The Zendesk simulator in the test process, with an admin, an OAuth
/// client, the admin token the plugin acts with, an app installation and
/// the consumer token the app holds.
struct ZendeskSim {
    rt: tokio::runtime::Runtime,
    server: Option<keycycle_sim::SimServer>,
    state: keycycle_sim::ZendeskState,
    origin: String,
    admin_token: String,
    client_id: u64,
    installation: u64,
    old_token: u64,
    admin_user: u64,
}

impl ZendeskSim {
    fn start() -> ZendeskSim {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let (server, state) = rt.block_on(keycycle_sim::start_zendesk(0)).unwrap();
        let origin = server.base_url.trim_end_matches('/').to_owned();
        let admin = state
            .add_user(ZendeskUserSeed::admin("ops@example.com"))
            .unwrap();
        let client = state
            .add_oauth_client(OauthClientSeed {
                name: "Deploy Bot".into(),
                identifier: "deploy_bot".into(),
                user_id: admin,
                ..OauthClientSeed::default()
            })
            .unwrap();
        let admin_token = state
            .add_oauth_token(OauthTokenSeed {
                client_id: client.id,
                user_id: admin,
                scopes: vec!["read".into(), "write".into()],
                token: Some(keycycle_secret::SecretValue::new(canary("zd-admin-"))),
            })
            .unwrap();
        let old = state
            .add_oauth_token(OauthTokenSeed {
                client_id: client.id,
                user_id: admin,
                scopes: vec!["read".into()],
                token: Some(keycycle_secret::SecretValue::new(canary("zd-old-"))),
            })
            .unwrap();
        let mut settings = serde_json::Map::new();
        settings.insert("api_token".into(), old.value.expose().into());
        settings.insert("subdomain".into(), "acme".into());
        let installation = state
            .add_installation(InstallationSeed {
                app_id: 42,
                settings,
                secure: vec!["api_token".into()],
                ..InstallationSeed::default()
            })
            .unwrap();
        ZendeskSim {
            rt,
            server: Some(server),
            state,
            origin,
            admin_token: admin_token.value.expose().to_owned(),
            client_id: client.id,
            installation,
            old_token: old.id,
            admin_user: admin,
        }
    }
}

impl Drop for ZendeskSim {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            self.rt.block_on(server.shutdown());
        }
    }
}

const ROTATE: &str = r#"
// Rotate the OAuth token an app installation holds: create, prove, apply,
// store, then revoke the old one.
let z = plugin("zendesk");
lock(`zendesk:oauth/${params.old_token_id}`);
let created = z.create_token(#{ client_id: params.client_id.parse_int(), scopes: ["read"] });
if "dry_run" in created {
    info("dry run: the new token does not exist, so nothing else is done");
    return #{ dry_run: true };
}
let check = z.token_scopes(#{ token: created.token });
if !check.valid { fail(`the new token ${created.id} does not authenticate`); }
z.set_installation_setting(#{ installation_id: params.installation.parse_int(), name: "api_token", value: created.token });
store_secret("zendesk/deploy-bot", created.token);
z.revoke_token(#{ token_id: params.old_token_id.parse_int() });
#{ new_id: created.id, scopes: check.scopes }
"#;

#[test]
fn an_oauth_token_is_rotated_into_an_app_setting() {
    let sim = ZendeskSim::start();
    let ws = Workspace::new();
    ws.config(&format!(
        "[plugins.zendesk]\npath = \"{}\"\nhosts = [\"{o}\"]\nsecrets = {{ token = \"zendesk/admin\" }}\nconfig = {{ base_url = \"{o}\" }}\n\n[runbooks.zd-rotate]\nsecrets = [\"zendesk/deploy-bot\"]\n",
        wasm("zendesk").display(),
        o = sim.origin
    ));
    ws.set_secret("zendesk/admin", &sim.admin_token);
    ws.runbook("zd-rotate", ROTATE);
    let args = |dry: bool| {
        let mut a = vec![
            "run".to_owned(),
            "zd-rotate".to_owned(),
            "--set".to_owned(),
            format!("client_id={}", sim.client_id),
            "--set".to_owned(),
            format!("installation={}", sim.installation),
            "--set".to_owned(),
            format!("old_token_id={}", sim.old_token),
            "-o".to_owned(),
            "json".to_owned(),
        ];
        if dry {
            a.push("--dry-run".to_owned());
        }
        a
    };
    let tokens_before = sim.state.snapshot().oauth_tokens.len();
    let setting = |sim: &ZendeskSim| {
        sim.state.installation_settings(sim.installation).unwrap()["api_token"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let old_value = setting(&sim);

    // Dry run: nothing is created, applied or revoked.
    let dry: Vec<String> = args(true);
    let dry = ws.run(&dry.iter().map(String::as_str).collect::<Vec<_>>());
    dry.assert_ok();
    assert_eq!(sim.state.snapshot().oauth_tokens.len(), tokens_before);
    assert!(
        setting(&sim) == old_value,
        "the dry run changed the app's setting"
    );

    let real: Vec<String> = args(false);
    let run = ws.run(&real.iter().map(String::as_str).collect::<Vec<_>>());
    run.assert_ok();
    let result = &run.json()["result"];
    let new_id = result["new_id"].as_u64().expect("the new token's id");
    assert_eq!(result["scopes"], serde_json::json!(["read"]));

    // The true state: the new token exists with the asked scopes, the app
    // holds it (the API never shows it), the store holds it, the old one
    // is revoked.
    let snapshot = sim.state.snapshot();
    let new = snapshot
        .oauth_tokens
        .iter()
        .find(|t| t.id == new_id)
        .expect("the new token at Zendesk");
    assert!(new.usable);
    assert_eq!(new.scopes, ["read"]);
    let new_value = new.value.expose().to_owned();
    plant(&new_value);
    assert!(
        setting(&sim) == new_value,
        "the app does not hold the new token"
    );
    assert!(
        ws.stored_secrets()["zendesk/deploy-bot"] == new_value,
        "the store does not hold the new token"
    );
    let old = snapshot
        .oauth_tokens
        .iter()
        .find(|t| t.id == sim.old_token)
        .unwrap();
    assert!(old.revoked && !old.usable, "the old token is revoked");
    // Other settings of the app were left as they were.
    assert_eq!(
        sim.state.installation_settings(sim.installation).unwrap()["subdomain"],
        "acme"
    );
    ws.assert_files_clean_including(&["state/state.db", "state/secrets.json"]);
}

fn token_value(sim: &ZendeskSim, id: u64) -> String {
    let snapshot = sim.state.snapshot();
    let token = snapshot.oauth_tokens.iter().find(|t| t.id == id).unwrap();
    token.value.expose().to_owned()
}

#[test]
fn the_oauth_token_runbook_updates_apps_webhooks_and_gitlab_variables() {
    let zd = ZendeskSim::start();
    let gl = GitLabSim::start();
    let old_value = token_value(&zd, zd.old_token);
    let webhook = zd
        .state
        .add_webhook(
            zd.admin_user,
            WebhookSeed {
                name: "Deploy hook".into(),
                endpoint: "https://deploy.example.com/zendesk".into(),
                subscriptions: vec!["conditional_ticket_events".into()],
                authentication: Some(serde_json::json!({
                    "type": "bearer_token",
                    "data": {"token": old_value},
                    "add_position": "header"
                })),
                ..WebhookSeed::default()
            },
        )
        .unwrap();
    gl.state
        .add_variable(gl.deploy, VariableSeed::new("ZENDESK_TOKEN", &old_value))
        .unwrap();

    let ws = gitlab_workspace(&gl);
    let config = std::fs::read_to_string(ws.path().join("keycycle.toml")).unwrap();
    std::fs::write(
        ws.path().join("keycycle.toml"),
        format!(
            "{config}\n[plugins.zendesk]\npath = \"{}\"\nhosts = [\"{o}\"]\nsecrets = {{ token = \"zendesk/admin\" }}\nconfig = {{ base_url = \"{o}\" }}\n\n[runbooks.zendesk-oauth-token]\nsecrets = [\"zendesk/deploy-bot\"]\n",
            wasm("zendesk").display(),
            o = zd.origin
        ),
    )
    .unwrap();
    ws.set_secret("zendesk/admin", &zd.admin_token);
    let token_id = zd.old_token.to_string();
    let apps = format!("{}:api_token", zd.installation);
    let webhooks = format!("{webhook}:bearer_token");
    let args = |extra: &[&'static str]| {
        let mut a = vec![
            "run".to_owned(),
            "zendesk-oauth-token".to_owned(),
            "--set".to_owned(),
            format!("token_id={token_id}"),
            "--set".to_owned(),
            format!("apps={apps}"),
            "--set".to_owned(),
            format!("webhooks={webhooks}"),
            "--set".to_owned(),
            "variables=acme/deploy:ZENDESK_TOKEN".to_owned(),
            "--set".to_owned(),
            "store_as=zendesk/deploy-bot".to_owned(),
            "-o".to_owned(),
            "json".to_owned(),
        ];
        a.extend(extra.iter().map(|s| (*s).to_owned()));
        a
    };
    let run = |extra: &[&'static str]| {
        let a = args(extra);
        ws.run(&a.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let tokens = |zd: &ZendeskSim| zd.state.snapshot().oauth_tokens.len();
    let before = tokens(&zd);

    // Dry run: nothing changes anywhere.
    run(&["--dry-run"]).assert_ok();
    assert_eq!(tokens(&zd), before);
    assert!(
        zd.state.installation_settings(zd.installation).unwrap()["api_token"] == old_value.as_str(),
        "the dry run changed the app"
    );
    assert!(
        zd.state.webhook(&webhook).unwrap().authentication.unwrap()["data"]["token"]
            == old_value.as_str(),
        "the dry run changed the webhook"
    );
    assert!(
        !zd.state.snapshot().oauth_tokens.iter().any(|t| t.revoked),
        "the dry run revoked a token"
    );

    let real = run(&[]);
    real.assert_ok();
    let new_id = real.json()["result"]["new_id"]
        .as_u64()
        .expect("a new token id");
    let new_value = token_value(&zd, new_id);
    plant(&new_value);

    // The true state: one new token with the old one's scopes; every
    // consumer holds it; the store holds it; the old token is revoked.
    let snapshot = zd.state.snapshot();
    let new = snapshot
        .oauth_tokens
        .iter()
        .find(|t| t.id == new_id)
        .unwrap();
    assert!(new.usable);
    assert_eq!(new.scopes, ["read"]);
    let old = snapshot
        .oauth_tokens
        .iter()
        .find(|t| t.id == zd.old_token)
        .unwrap();
    assert!(old.revoked, "the old token is revoked");
    assert_eq!(
        snapshot.oauth_tokens.len(),
        before + 1,
        "exactly one token was created"
    );
    assert!(
        zd.state.installation_settings(zd.installation).unwrap()["api_token"] == new_value.as_str(),
        "the app holds the new token"
    );
    let hook = zd.state.webhook(&webhook).unwrap();
    assert!(
        hook.authentication.unwrap()["data"]["token"] == new_value.as_str(),
        "the webhook holds the new token"
    );
    assert_eq!(
        hook.subscriptions,
        ["conditional_ticket_events"],
        "other webhook settings kept"
    );
    assert!(
        gl.state
            .snapshot()
            .variable(gl.deploy, "ZENDESK_TOKEN", "*")
            .unwrap()
            .value
            .expose()
            == new_value,
        "the GitLab variable holds the new token"
    );
    assert!(
        ws.stored_secrets()["zendesk/deploy-bot"] == new_value,
        "the store holds the new token"
    );
    // Zendesk's test call proved the webhook's stored credential.
    let tests = zd.state.webhook_tests();
    // Counted and compared, never printed: the record holds the credential.
    assert_eq!(tests.len(), 1, "Zendesk's webhook test calls");
    assert!(
        tests[0].webhook_id.as_deref() == Some(webhook.as_str())
            && tests[0].authentication.as_ref().unwrap()["data"]["token"] == new_value.as_str(),
        "the test call did not carry the new credential of the webhook"
    );
    ws.assert_files_clean_including(&["state/state.db", "state/secrets.json"]);
}

#[test]
fn a_consumer_that_cannot_be_written_stops_the_rotation_before_any_change() {
    let zd = ZendeskSim::start();
    let (ws, _) = (Workspace::new(), ());
    ws.config(&format!(
        "runbooks_dir = \"{}\"\n[plugins.zendesk]\npath = \"{}\"\nhosts = [\"{o}\"]\nsecrets = {{ token = \"zendesk/admin\" }}\nconfig = {{ base_url = \"{o}\" }}\n",
        repo_root().join("runbooks").display(),
        wasm("zendesk").display(),
        o = zd.origin
    ));
    ws.set_secret("zendesk/admin", &zd.admin_token);
    let before = zd.state.snapshot().oauth_tokens.len();
    let run = ws.run(&[
        "run",
        "zendesk-oauth-token",
        "--set",
        &format!("token_id={}", zd.old_token),
        "--set",
        &format!("apps={}:api_token", zd.installation),
        "--set",
        "webhooks=01NOSUCHWEBHOOK0000000000:bearer_token",
    ]);
    run.assert_code(5)
        .stderr_has("nothing was changed, because 1 consumer(s) cannot be written")
        .stderr_has("bearer_token credential of Zendesk webhook 01NOSUCHWEBHOOK0000000000")
        // A secure setting cannot be checked, and the run says so.
        .stderr_has("the API does not show it (a secure setting never is)");
    assert_eq!(
        zd.state.snapshot().oauth_tokens.len(),
        before,
        "no token was created"
    );
}
