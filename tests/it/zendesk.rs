//! The Zendesk plugin through the real binary against the Zendesk
//! simulator (and the GitLab one for GitLab consumers): OAuth tokens
//! rotated into app settings, webhooks and CI/CD variables, dry run first,
//! with the simulators' true state checked afterwards.

use keycycle_sim::{
    ApiTokenSeed, InstallationSeed, OauthClientSeed, OauthTokenSeed, VariableSeed, WebhookSeed,
    ZendeskUserSeed,
};

use crate::support::*;

/// The Zendesk simulator in the test process, with an admin, an OAuth
/// client, the admin token the plugin acts with, an app installation and
/// the consumer token the app holds.
pub(crate) struct ZendeskSim {
    pub(crate) rt: tokio::runtime::Runtime,
    pub(crate) server: Option<keycycle_sim::SimServer>,
    pub(crate) state: keycycle_sim::ZendeskState,
    pub(crate) origin: String,
    pub(crate) admin_token: String,
    pub(crate) client_id: u64,
    pub(crate) installation: u64,
    pub(crate) old_token: u64,
    pub(crate) admin_user: u64,
}

impl ZendeskSim {
    pub(crate) fn start() -> ZendeskSim {
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

/// The repository's runbooks with both plugins: gitlab as
/// `gitlab_workspace` sets it up, zendesk acting with the admin's OAuth
/// token, and every Zendesk runbook granted `zendesk/deploy-bot`.
pub(crate) fn zendesk_and_gitlab_workspace(zd: &ZendeskSim, gl: &GitLabSim) -> Workspace {
    let ws = gitlab_workspace(gl);
    let config = std::fs::read_to_string(ws.path().join("keycycle.toml")).unwrap();
    let mut text = format!(
        "{config}\n[plugins.zendesk]\npath = \"{}\"\nhosts = [\"{o}\"]\nsecrets = {{ token = \"zendesk/admin\" }}\nconfig = {{ base_url = \"{o}\" }}\n",
        wasm("zendesk").display(),
        o = zd.origin
    );
    for runbook in ["zendesk-oauth-token", "zendesk-api-token-migrate"] {
        text.push_str(&format!(
            "\n[runbooks.{runbook}]\nsecrets = [\"zendesk/deploy-bot\"]\n"
        ));
    }
    std::fs::write(ws.path().join("keycycle.toml"), text).unwrap();
    ws.set_secret("zendesk/admin", &zd.admin_token);
    ws
}

/// Turns `--set`/`--input` pairs and flags into argv.
pub(crate) fn argv(items: &[String]) -> Vec<&str> {
    items.iter().map(String::as_str).collect()
}

/// A plain HTTP/1.1 GET with one Authorization header, as a forgotten
/// consumer of a Zendesk API token would send it. Returns the status.
fn get_with(origin: &str, path: &str, authorization: &str) -> u16 {
    use std::io::{Read, Write};
    let addr = origin.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: {authorization}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status in the answer"))
}

/// The old OAuth token's value in a bearer-token webhook ("Deploy hook")
/// and the GitLab variable ZENDESK_TOKEN of acme/deploy, beside the app
/// the simulator starts with. Returns the value and the webhook's id.
pub(crate) fn seed_oauth_consumers(zd: &ZendeskSim, gl: &GitLabSim) -> (String, String) {
    let old_value = token_value(zd, zd.old_token);
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
    (old_value, webhook)
}

pub(crate) fn token_value(sim: &ZendeskSim, id: u64) -> String {
    let snapshot = sim.state.snapshot();
    let token = snapshot.oauth_tokens.iter().find(|t| t.id == id).unwrap();
    token.value.expose().to_owned()
}

#[test]
fn the_oauth_token_runbook_updates_apps_webhooks_and_gitlab_variables() {
    let zd = ZendeskSim::start();
    let gl = GitLabSim::start();
    let (old_value, webhook) = seed_oauth_consumers(&zd, &gl);

    let ws = zendesk_and_gitlab_workspace(&zd, &gl);
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

/// An API token with an app, a webhook and a GitLab variable depending on
/// it, as the seed's teams have them today.
struct ApiTokenCase {
    id: u64,
    value: String,
    webhook: String,
}

fn seed_api_token_consumers(zd: &ZendeskSim, gl: &GitLabSim) -> ApiTokenCase {
    let value = canary("zd-api-");
    let seeded = zd
        .state
        .add_api_token(
            ApiTokenSeed::new(zd.admin_user, "https://gitlab.example.com/acme/deploy")
                .value(&value),
        )
        .unwrap();
    let webhook = zd
        .state
        .add_webhook(
            zd.admin_user,
            WebhookSeed {
                name: "Deploy hook".into(),
                endpoint: "https://deploy.example.com/zendesk".into(),
                subscriptions: vec!["conditional_ticket_events".into()],
                authentication: Some(serde_json::json!({
                    "type": "basic_auth",
                    "data": {"username": "zendesk", "password": value},
                    "add_position": "header"
                })),
                ..WebhookSeed::default()
            },
        )
        .unwrap();
    let mut settings = serde_json::Map::new();
    settings.insert("api_token".into(), value.clone().into());
    zd.state
        .add_installation(InstallationSeed {
            app_id: 43,
            settings,
            secure: vec!["api_token".into()],
            ..InstallationSeed::default()
        })
        .unwrap();
    gl.state
        .add_variable(gl.deploy, VariableSeed::new("ZENDESK_API_TOKEN", &value))
        .unwrap();
    ApiTokenCase {
        id: seeded.id,
        value,
        webhook,
    }
}

fn migrate_args(zd: &ZendeskSim, case: &ApiTokenCase, installation: u64) -> Vec<String> {
    [
        "run".to_owned(),
        "zendesk-api-token-migrate".to_owned(),
        "--set".to_owned(),
        format!("api_token_id={}", case.id),
        "--set".to_owned(),
        format!("client_id={}", zd.client_id),
        "--set".to_owned(),
        "scopes=read tickets:write".to_owned(),
        "--set".to_owned(),
        format!("apps={installation}:api_token"),
        "--set".to_owned(),
        format!("webhooks={}:basic_auth:zendesk", case.webhook),
        "--set".to_owned(),
        "variables=acme/deploy:ZENDESK_API_TOKEN".to_owned(),
        "--set".to_owned(),
        "store_as=zendesk/deploy-bot".to_owned(),
    ]
    .to_vec()
}

/// The installation the case's app got: the newest one.
fn newest_installation(zd: &ZendeskSim) -> u64 {
    zd.state
        .snapshot()
        .installations
        .iter()
        .map(|i| i.id)
        .max()
        .unwrap()
}

#[test]
fn an_api_token_is_migrated_to_a_scoped_oauth_token_and_retired() {
    let zd = ZendeskSim::start();
    let gl = GitLabSim::start();
    let case = seed_api_token_consumers(&zd, &gl);
    let installation = newest_installation(&zd);
    let ws = zendesk_and_gitlab_workspace(&zd, &gl);
    let tokens = |zd: &ZendeskSim| zd.state.snapshot().oauth_tokens.len();
    let before = tokens(&zd);

    // The inventory: every API token with its end dates, nothing changed.
    let list = ws.run(&["run", "zendesk-api-token-migrate", "-o", "json"]);
    list.assert_ok()
        .stderr_has(&format!(
            "API token {} \"https://gitlab.example.com/acme/deploy\": never used, active; deactivated on",
            case.id
        ))
        .stderr_has("every one stops working on 2027-04-30");
    let listed = &list.json()["result"]["api_tokens"];
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
    assert_eq!(listed[0]["id"], case.id);

    // Dry run: nothing created, written or asked.
    let mut dry = migrate_args(&zd, &case, installation);
    dry.push("--dry-run".to_owned());
    ws.run(&argv(&dry))
        .assert_ok()
        .stderr_has("[dry run, not done] The operator would deactivate, then delete");
    assert_eq!(tokens(&zd), before, "the dry run created a token");
    assert!(
        zd.state.installation_settings(installation).unwrap()["api_token"] == case.value.as_str(),
        "the dry run changed the app"
    );

    // The real run moves every consumer, then stops for the manual step.
    let args = migrate_args(&zd, &case, installation);
    let first = ws.run(&argv(&args));
    first
        .assert_code(6)
        .stderr_has("Deactivate Admin Center › Apps and integrations › APIs › API tokens")
        .stderr_has("--input api_token_deactivated=");
    let snapshot = zd.state.snapshot();
    assert_eq!(snapshot.oauth_tokens.len(), before + 1, "one OAuth token");
    let new = snapshot.oauth_tokens.iter().max_by_key(|t| t.id).unwrap();
    assert_eq!(new.client_id, zd.client_id);
    let mut scopes = new.scopes.clone();
    scopes.sort();
    assert_eq!(
        scopes,
        ["read", "tickets:write"],
        "exactly the scopes asked"
    );
    let new_value = new.value.expose().to_owned();
    plant(&new_value);
    assert!(
        zd.state.installation_settings(installation).unwrap()["api_token"] == new_value.as_str(),
        "the app holds the OAuth token"
    );
    let hook = zd.state.webhook(&case.webhook).unwrap();
    let auth = hook.authentication.unwrap();
    assert!(
        auth["type"] == "basic_auth"
            && auth["data"]["username"] == "zendesk"
            && auth["data"]["password"] == new_value.as_str(),
        "the webhook holds the OAuth token as its basic-auth password"
    );
    assert!(
        gl.state
            .snapshot()
            .variable(gl.deploy, "ZENDESK_API_TOKEN", "*")
            .unwrap()
            .value
            .expose()
            == new_value,
        "the GitLab variable holds the OAuth token"
    );
    assert!(ws.stored_secrets()["zendesk/deploy-bot"] == new_value);
    assert!(
        zd.state.api_token(case.id).unwrap().active,
        "nobody deactivated the API token yet"
    );

    // Answering before doing it is caught by the token list.
    let run_id = ws.only_unfinished_run();
    ws.run(&["resume", &run_id, "--input", "api_token_deactivated=yes"])
        .assert_code(5)
        .stderr_has(&format!("API token {} is still active at Zendesk", case.id))
        .stderr_has("--set retire_only=true");
    assert_eq!(tokens(&zd), before + 1, "no second OAuth token");
    zd.state.deactivate_api_token(case.id).unwrap();
    // The run says how to take up the retirement: no new token, the
    // consumers stay as they are.
    let retire = [
        "run",
        "zendesk-api-token-migrate",
        "--set",
        &format!("api_token_id={}", case.id),
        "--set",
        "retire_only=true",
        "--input",
        "api_token_deactivated=yes",
    ]
    .map(str::to_owned);
    let resumed = ws.run(&argv(&retire));
    resumed
        .assert_code(6)
        .stderr_has("is inactive, and nothing used it after the consumers moved")
        .stderr_has("--input api_token_deleted=");
    assert_eq!(tokens(&zd), before + 1, "retiring created no token");
    let run_id = ws.only_unfinished_run();
    zd.state.delete_api_token(case.id).unwrap();
    let done = ws.run(&[
        "resume",
        &run_id,
        "--input",
        "api_token_deleted=yes",
        "-o",
        "json",
    ]);
    done.assert_ok().stderr_has(&format!(
        "API token {} is gone from Zendesk's list",
        case.id
    ));
    assert!(
        zd.state.api_token(case.id).is_none(),
        "the API token is gone"
    );
    assert_eq!(tokens(&zd), before + 1, "one OAuth token in all");
    assert!(
        zd.state.installation_settings(installation).unwrap()["api_token"] == new_value.as_str()
            && ws.stored_secrets()["zendesk/deploy-bot"] == new_value,
        "the app and the store still hold the OAuth token"
    );
    ws.assert_files_clean_including(&["state/state.db", "state/secrets.json"]);
}

#[test]
fn a_consumer_nobody_named_stops_the_api_token_deletion() {
    let zd = ZendeskSim::start();
    let gl = GitLabSim::start();
    let case = seed_api_token_consumers(&zd, &gl);
    let installation = newest_installation(&zd);
    let ws = zendesk_and_gitlab_workspace(&zd, &gl);
    let args = migrate_args(&zd, &case, installation);
    ws.run(&argv(&args)).assert_code(6);
    // Something the run was not told about still calls with the API token.
    use base64::Engine as _;
    let basic = base64::engine::general_purpose::STANDARD
        .encode(format!("ops@example.com/token:{}", case.value));
    assert_eq!(
        get_with(&zd.origin, "/api/v2/webhooks", &format!("Basic {basic}")),
        200,
        "the forgotten consumer's call"
    );
    zd.state.deactivate_api_token(case.id).unwrap();
    let run_id = ws.only_unfinished_run();
    ws.run(&["resume", &run_id, "--input", "api_token_deactivated=yes"])
        .assert_code(5)
        .stderr_has(&format!("API token {} was used at", case.id))
        .stderr_has("something else still uses it");
    assert!(
        zd.state.api_token(case.id).is_some(),
        "the API token was not deleted"
    );
}

/// Runs `zendesk-oauth-integration` up to the OAuth flow, which the test
/// then performs as the integration user would, granting `scopes`.
/// Returns the workspace, the run id and the id of the granted token.
fn integrate_until_the_flow(
    zd: &ZendeskSim,
    gl: &GitLabSim,
    scopes: &[&str],
) -> (Workspace, String, u64) {
    let ws = zendesk_and_gitlab_workspace(zd, gl);
    let approved = ws.file("REQ-1042-scopes.txt", "read,\ntickets:write\n");
    let base = [
        "run",
        "zendesk-oauth-integration",
        "--set",
        "client=deploy_bot",
        "--set",
        "user=integration@example.com",
        "--set",
        "request=REQ-1042",
    ];
    // The scopes are read from a file, so they are declared plain text.
    let answer = format!("approved_scopes=@{}", approved.display());
    let mut dry = base.to_vec();
    dry.extend([
        "--input",
        &answer,
        "--plain-input",
        "approved_scopes",
        "--dry-run",
    ]);
    let tokens_before = zd.state.snapshot().oauth_tokens.len();
    ws.run(&dry)
        .assert_ok()
        .stderr_has("REQ-1042 approves [\"read\", \"tickets:write\"]")
        .stderr_has("[dry run, not done] integration@example.com would have the Okta login requirement removed");
    let mut real = base.to_vec();
    real.extend(["--input", &answer, "--plain-input", "approved_scopes"]);
    ws.run(&real)
        .assert_code(6)
        .stderr_has("remove the login requirement for integration@example.com")
        .stderr_has("--input okta_removed=");
    let run_id = ws.only_unfinished_run();
    ws.run(&["resume", &run_id, "--input", "okta_removed=yes"])
        .assert_code(6)
        .stderr_has("perform the OAuth flow as the application directs")
        .stderr_has("--input oauth_flow_done=");
    assert_eq!(
        zd.state.snapshot().oauth_tokens.len(),
        tokens_before,
        "nothing was granted before the flow"
    );
    // The application's OAuth flow, done by the integration user.
    let user = zd
        .state
        .add_user(ZendeskUserSeed::agent("integration@example.com"))
        .unwrap();
    let granted = zd
        .state
        .add_oauth_token(OauthTokenSeed {
            client_id: zd.client_id,
            user_id: user,
            scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
            token: Some(keycycle_secret::SecretValue::new(canary("zd-flow-"))),
        })
        .unwrap();
    (ws, run_id, granted.id)
}

const AFTER_THE_FLOW: [&str; 6] = [
    "--input",
    "oauth_flow_done=yes",
    "--input",
    "logged_out=yes",
    "--input",
    "okta_restored=yes",
];

#[test]
fn an_oauth_integration_within_its_approved_scopes_is_recorded() {
    let zd = ZendeskSim::start();
    let gl = GitLabSim::start();
    let (ws, run_id, granted) = integrate_until_the_flow(&zd, &gl, &["tickets:write", "read"]);
    let mut resume = vec!["resume", run_id.as_str()];
    resume.extend(AFTER_THE_FLOW);
    resume.extend(["-o", "json"]);
    let done = ws.run(&resume);
    done.assert_ok()
        .stderr_has(&format!("Granted: token {granted} of user"))
        .stderr_has("The Okta login requirement of integration@example.com is restored.")
        .stderr_has("Every granted scope is approved in REQ-1042.");
    assert_eq!(
        done.json()["result"]["tokens"],
        serde_json::json!([granted])
    );
    let snapshot = zd.state.snapshot();
    let token = snapshot
        .oauth_tokens
        .iter()
        .find(|t| t.id == granted)
        .unwrap();
    assert!(
        token.usable && !token.revoked,
        "the integration's token is kept"
    );
    // Every answer was recorded once: a second resume has nothing to ask.
    ws.run(&["resume", &run_id]).assert_code(3);
}

#[test]
fn an_oauth_integration_granted_an_unapproved_scope_stops_and_restores_okta() {
    let zd = ZendeskSim::start();
    let gl = GitLabSim::start();
    let (ws, run_id, granted) = integrate_until_the_flow(
        &zd,
        &gl,
        &["read", "users:write", "tickets:write", "hc:write"],
    );
    // The answers so far are kept: only the questions after the flow are asked.
    ws.run(&["resume", &run_id, "--input", "oauth_flow_done=yes"])
        .assert_code(6)
        .stderr_has("--input logged_out=");
    let mut resume = vec!["resume", run_id.as_str()];
    resume.extend(AFTER_THE_FLOW);
    ws.run(&resume)
        .assert_code(5)
        .stderr_has("STOP: the application was granted scope(s) REQ-1042 did not approve: users:write; hc:write")
        .stderr_has(&format!("token(s) [{granted}] were revoked"))
        .stderr_has("The Okta login requirement of integration@example.com is restored.");
    let snapshot = zd.state.snapshot();
    let token = snapshot
        .oauth_tokens
        .iter()
        .find(|t| t.id == granted)
        .unwrap();
    assert!(token.revoked, "the unapproved grant is revoked");
}

/// The workspace of `zendesk_and_gitlab_workspace`, plus a second gitlab
/// plugin, `gitlab-bot`, acting with a project access token of acme/api:
/// the seed's service bot. Returns the bot's user id.
pub(crate) fn with_service_bot(ws: &Workspace, gl: &GitLabSim) -> u64 {
    let bot = gl
        .state
        .add_token(
            keycycle_sim::TokenSeed::project(gl.api, "trigger-bot")
                .value(&canary("glpat-"))
                .scopes(&["api"]),
        )
        .unwrap();
    let config = std::fs::read_to_string(ws.path().join("keycycle.toml")).unwrap();
    let o = gl.origin();
    std::fs::write(
        ws.path().join("keycycle.toml"),
        format!(
            "{config}\n[plugins.gitlab-bot]\npath = \"{}\"\nhosts = [\"{o}\"]\nsecrets = {{ token = \"gitlab/trigger-bot\" }}\nconfig = {{ base_url = \"{o}\" }}\n",
            wasm("gitlab").display()
        ),
    )
    .unwrap();
    ws.set_secret("gitlab/trigger-bot", bot.token.expose());
    bot.user_id
}

#[test]
fn a_trigger_token_is_replaced_as_a_service_bot_into_a_zendesk_app_and_webhook() {
    let zd = ZendeskSim::start();
    let gl = GitLabSim::start();
    let ws = zendesk_and_gitlab_workspace(&zd, &gl);
    let bot = with_service_bot(&ws, &gl);
    let old = gl
        .state
        .add_trigger(
            gl.api,
            keycycle_sim::TriggerSeed {
                owner_id: bot,
                description: "Zendesk Global - Deploy Bot".into(),
                token: None,
            },
        )
        .unwrap();
    let old_value = old.token.expose().to_owned();
    plant(&old_value);
    let mut settings = serde_json::Map::new();
    settings.insert("trigger_token".into(), old_value.clone().into());
    settings.insert("project".into(), "acme/api".into());
    let installation = zd
        .state
        .add_installation(InstallationSeed {
            app_id: 44,
            settings,
            secure: vec!["trigger_token".into()],
            ..InstallationSeed::default()
        })
        .unwrap();
    let webhook = zd
        .state
        .add_webhook(
            zd.admin_user,
            WebhookSeed {
                name: "Deploy pipeline".into(),
                endpoint: format!(
                    "{}/api/v4/projects/{}/trigger/pipeline",
                    gl.origin(),
                    gl.api
                ),
                subscriptions: vec!["conditional_ticket_events".into()],
                authentication: Some(serde_json::json!({
                    "type": "api_key",
                    "data": {"name": "X-Trigger-Token", "value": old_value},
                    "add_position": "header"
                })),
                ..WebhookSeed::default()
            },
        )
        .unwrap();
    let args = |extra: &[&str]| -> Vec<String> {
        let mut a: Vec<String> = [
            "run",
            "gitlab-trigger-token",
            "--set",
            "project=acme/api",
            "--set",
            &format!("trigger_id={}", old.id),
            "--set",
            "kind=zendesk-app",
            "--set",
            "target=Zendesk Global - Deploy Bot",
            "--set",
            &format!("apps={installation}:trigger_token"),
            "--set",
            &format!("webhooks={webhook}:api_key:X-Trigger-Token"),
            "--set",
            "plugin=gitlab-bot",
            "--set",
            "as_bot=true",
            "-o",
            "json",
        ]
        .map(str::to_owned)
        .to_vec();
        a.extend(extra.iter().map(|s| (*s).to_owned()));
        a
    };
    let triggers = |gl: &GitLabSim| gl.state.snapshot().triggers;

    // The naming rule is checked before anything: a webhook's link.
    let mut wrong_link = args(&[]);
    for a in wrong_link.iter_mut() {
        match a.as_str() {
            "kind=zendesk-app" => *a = "kind=zendesk-webhook".into(),
            "target=Zendesk Global - Deploy Bot" => {
                *a = "target=https://acme.zendesk.com/admin/webhooks/01OTHER".into();
            }
            _ => {}
        }
    }
    ws.run(&argv(&wrong_link))
        .assert_code(5)
        .stderr_has("links to another");
    // A person's token is refused when the trigger must be the bot's.
    let mut as_person = args(&[]);
    let at = as_person
        .iter()
        .position(|a| a == "plugin=gitlab-bot")
        .unwrap();
    as_person[at] = "plugin=gitlab".into();
    ws.run(&argv(&as_person))
        .assert_code(5)
        .stderr_has("acts as ops, a person");
    ws.run(&argv(&args(&["--dry-run"]))).assert_ok();
    assert_eq!(triggers(&gl).len(), 1, "nothing was created");

    let run = ws.run(&argv(&args(&[])));
    run.assert_ok();
    let result = &run.json()["result"];
    assert!(
        result["owner"]
            .as_str()
            .is_some_and(|o| !o.is_empty() && o != "ops"),
        "the run names the bot it acted as: {result}"
    );
    let now = triggers(&gl);
    assert_eq!(now.len(), 1, "the old trigger was replaced by one new one");
    let new = &now[0];
    assert_ne!(new.id, old.id);
    assert_eq!(new.owner_id, bot, "the service bot owns the new trigger");
    assert!(new.description.starts_with("Zendesk Global - Deploy Bot"));
    let new_value = new.token.expose().to_owned();
    plant(&new_value);
    assert!(
        zd.state.installation_settings(installation).unwrap()["trigger_token"]
            == new_value.as_str(),
        "the app holds the new trigger token"
    );
    assert_eq!(
        zd.state.installation_settings(installation).unwrap()["project"],
        "acme/api",
        "the app's other settings are untouched"
    );
    let auth = zd.state.webhook(&webhook).unwrap().authentication.unwrap();
    assert!(
        auth["data"]["name"] == "X-Trigger-Token" && auth["data"]["value"] == new_value.as_str(),
        "the webhook sends the new trigger token"
    );
    ws.assert_files_clean_including(&["state/state.db", "state/secrets.json"]);
}
