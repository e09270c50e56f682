//! End-to-end tests of the Zendesk simulator over HTTP: each pins a
//! provider behaviour that bites clients (API token creation refused, idle
//! deactivation and the cut-off, OAuth tokens shown once, scopes, refresh
//! invalidation, hidden secure settings, write-only webhook credentials,
//! 204 without a body, cursor pagination, 429s).

use base64::Engine;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use time::macros::date;

use super::*;
use crate::{FailRule, SimServer, start_zendesk};

const ADMIN: &str = "admin@acme.test";
const AGENT: &str = "agent@acme.test";
const ADMIN_TOKEN: &str = "AdminApiToken0000000000000000000000000000";
const AGENT_TOKEN: &str = "AgentApiToken0000000000000000000000000000";

struct World {
    server: SimServer,
    state: ZendeskState,
    http: reqwest::Client,
    admin: u64,
    admin_token: u64,
    client: u64,
}

async fn world() -> World {
    let (server, state) = start_zendesk(0).await.unwrap();
    state.set_today(Some(date!(2026 - 11 - 02)));
    let admin = state.add_user(ZendeskUserSeed::admin(ADMIN)).unwrap();
    let agent = state.add_user(ZendeskUserSeed::agent(AGENT)).unwrap();
    let admin_token = state
        .add_api_token(ApiTokenSeed::new(admin, "ci").value(ADMIN_TOKEN))
        .unwrap()
        .id;
    state
        .add_api_token(ApiTokenSeed::new(agent, "agent").value(AGENT_TOKEN))
        .unwrap();
    let client = state
        .add_oauth_client(OauthClientSeed {
            name: "keycycle".into(),
            identifier: "keycycle".into(),
            user_id: admin,
            secret: Some(SecretValue::new("client-secret-0001")),
            ..OauthClientSeed::default()
        })
        .unwrap()
        .id;
    World {
        server,
        state,
        http: reqwest::Client::new(),
        admin,
        admin_token,
        client,
    }
}

/// `Authorization` for an API token used as `email`.
fn basic(email: &str, token: &str) -> String {
    let raw = format!("{email}/token:{token}");
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    )
}

fn admin() -> String {
    basic(ADMIN, ADMIN_TOKEN)
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

struct Answer {
    status: StatusCode,
    headers: reqwest::header::HeaderMap,
    text: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("not JSON ({e}): status {}", self.status))
    }
}

impl World {
    async fn call(&self, method: Method, path: &str, auth: &str, body: Option<Value>) -> Answer {
        let mut request = self
            .http
            .request(method, self.server.url(path))
            .header("Authorization", auth);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        Answer {
            status: response.status(),
            headers: response.headers().clone(),
            text: response.text().await.unwrap(),
        }
    }

    async fn get(&self, path: &str, auth: &str) -> Answer {
        self.call(Method::GET, path, auth, None).await
    }

    async fn post(&self, path: &str, auth: &str, body: Value) -> Answer {
        self.call(Method::POST, path, auth, Some(body)).await
    }

    /// An OAuth token with `scopes`, through the admin API; its full value.
    async fn oauth_token(&self, scopes: &[&str]) -> String {
        let created = self
            .post(
                "/api/v2/oauth/tokens",
                &admin(),
                json!({ "token": { "client_id": self.client, "scopes": scopes } }),
            )
            .await;
        assert_eq!(created.status, 201, "{}", created.text);
        created.json()["token"]["full_token"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    async fn new_webhook(&self, name: &str, auth: Value) -> String {
        let created = self
            .post(
                "/api/v2/webhooks",
                &admin(),
                json!({ "webhook": {
                    "name": name, "endpoint": format!("https://hooks.test/{name}"),
                    "http_method": "POST", "request_format": "json", "status": "active",
                    "subscriptions": ["conditional_ticket_events"], "authentication": auth,
                }}),
            )
            .await;
        assert_eq!(created.status, 201, "{}", created.text);
        created.json()["webhook"]["id"].as_str().unwrap().to_owned()
    }
}

#[tokio::test]
async fn api_tokens_authenticate_and_record_last_used_but_passwords_do_not() {
    let w = world().await;
    assert!(
        w.state
            .api_token(w.admin_token)
            .unwrap()
            .last_used
            .is_none()
    );
    let list = w
        .get("/api/v2/api_tokens.json?include_users=true", &admin())
        .await;
    assert_eq!(list.status, 200);
    let body = list.json();
    let item = &body["api_tokens"][0];
    assert_eq!(item["visible_token"], "Admi");
    assert!(
        !list.text.contains(ADMIN_TOKEN),
        "the value is never listed"
    );
    assert!(body["users"].as_array().unwrap().len() == 2);
    assert!(
        w.state
            .api_token(w.admin_token)
            .unwrap()
            .last_used
            .is_some()
    );

    let password = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{ADMIN}:{ADMIN_TOKEN}"))
    );
    for auth in [
        password,
        basic(ADMIN, "wrong"),
        "Bearer nope".into(),
        String::new(),
    ] {
        let refused = w.get("/api/v2/api_tokens.json", &auth).await;
        assert_eq!(refused.status, 401);
        assert_eq!(
            refused.json(),
            json!({ "error": "Couldn't authenticate you" })
        );
    }
    let agent = w
        .get("/api/v2/api_tokens.json", &basic(AGENT, AGENT_TOKEN))
        .await;
    assert_eq!(agent.status, 403);
}

#[tokio::test]
async fn api_token_creation_is_refused() {
    let w = world().await;
    let before = w.state.snapshot().api_tokens.len();
    let refused = w
        .post(
            "/api/v2/api_tokens",
            &admin(),
            json!({ "api_token": { "description": "new" } }),
        )
        .await;
    assert_eq!(refused.status, 403);
    assert_eq!(refused.json()["error"], "Forbidden");
    assert_eq!(w.state.snapshot().api_tokens.len(), before);
}

#[tokio::test]
async fn idle_api_tokens_are_deactivated_and_all_stop_at_the_cut_off() {
    let w = world().await;
    assert_eq!(w.get("/api/v2/api_tokens.json", &admin()).await.status, 200);
    // The agent's token, never used, was created on 11-02: idle 29 days
    // on 12-01, still active.
    w.state.set_today(Some(date!(2026 - 12 - 01)));
    let list = w.get("/api/v2/api_tokens.json", &admin()).await;
    assert_eq!(active_flags(&list), [true, true]);
    // Thirty days: deactivated. The admin's, used on 12-01, lives on.
    w.state.set_today(Some(date!(2026 - 12 - 02)));
    assert_eq!(
        w.get("/api/v2/api_tokens.json", &basic(AGENT, AGENT_TOKEN))
            .await
            .status,
        401
    );
    let list = w.get("/api/v2/api_tokens.json", &admin()).await;
    assert_eq!(list.status, 200);
    assert_eq!(active_flags(&list), [true, false]);
    // Moving the clock back does not revive it.
    w.state.set_today(Some(date!(2026 - 11 - 03)));
    assert!(!w.snapshot_token_active(1));
    // Used daily, the admin token still dies on 2027-04-30.
    w.state.set_today(Some(date!(2027 - 04 - 29)));
    let used = w.state.add_api_token(ApiTokenSeed {
        last_used: Some(date!(2027 - 04 - 29)),
        ..ApiTokenSeed::new(w.admin, "fresh").value("FreshToken")
    });
    let fresh = used.unwrap();
    assert_eq!(
        w.get("/api/v2/api_tokens.json", &basic(ADMIN, "FreshToken"))
            .await
            .status,
        200
    );
    w.state.set_today(Some(date!(2027 - 04 - 30)));
    assert_eq!(
        w.get("/api/v2/api_tokens.json", &basic(ADMIN, "FreshToken"))
            .await
            .status,
        401
    );
    let state = w.state.api_token(fresh.id).unwrap();
    assert!(state.active && !state.usable);
}

fn active_flags(list: &Answer) -> Vec<bool> {
    list.json()["api_tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["active"].as_bool().unwrap())
        .collect()
}

impl World {
    fn snapshot_token_active(&self, index: usize) -> bool {
        self.state.snapshot().api_tokens[index].active
    }
}

#[tokio::test]
async fn operators_deactivate_and_delete_api_tokens_through_the_control_api() {
    let w = world().await;
    let seeded: SeededSecret = w
        .http
        .post(w.server.url("/_sim/api_tokens"))
        .json(&json!({ "user_id": w.admin, "description": "old", "token": "OldToken" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(seeded.value.expose(), "OldToken");
    let deactivate = w
        .http
        .post(
            w.server
                .url(&format!("/_sim/api_tokens/{}/deactivate", seeded.id)),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(deactivate.status(), 204);
    assert_eq!(
        w.get("/api/v2/api_tokens.json", &basic(ADMIN, "OldToken"))
            .await
            .status,
        401
    );
    let listed = w.get("/api/v2/api_tokens.json", &admin()).await.json();
    assert!(
        listed["api_tokens"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["id"] == seeded.id && t["active"] == false)
    );
    let delete = w
        .http
        .delete(w.server.url(&format!("/_sim/api_tokens/{}", seeded.id)))
        .send()
        .await
        .unwrap();
    assert_eq!(delete.status(), 204);
    let listed = w.get("/api/v2/api_tokens.json", &admin()).await.json();
    assert!(
        !listed["api_tokens"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["id"] == seeded.id)
    );
}

#[tokio::test]
async fn oauth_tokens_are_shown_in_full_once_and_revoked_with_a_bodiless_204() {
    let w = world().await;
    let full = w.oauth_token(&["read"]).await;
    assert_eq!(full.len(), 64);
    let list = w.get("/api/v2/oauth/tokens", &admin()).await;
    assert!(!list.text.contains(&full));
    let item = list.json()["tokens"][0].clone();
    assert_eq!(item["token"], full[..10]);
    assert!(item.get("full_token").is_none());
    let id = item["id"].as_u64().unwrap();
    let one = w.get(&format!("/api/v2/oauth/tokens/{id}"), &admin()).await;
    assert!(!one.text.contains(&full));

    let current = w
        .get("/api/v2/oauth/tokens/current.json", &bearer(&full))
        .await;
    assert_eq!(current.status, 200);
    assert_eq!(current.json()["token"]["scopes"], json!(["read"]));
    assert!(w.state.snapshot().oauth_tokens[0].used_at.is_some());

    let revoked = w
        .call(
            Method::DELETE,
            &format!("/api/v2/oauth/tokens/{id}"),
            &admin(),
            None,
        )
        .await;
    assert_eq!(revoked.status, 204);
    assert!(revoked.text.is_empty());
    assert!(revoked.headers.get("content-type").is_none());
    assert_eq!(
        w.get("/api/v2/oauth/tokens/current.json", &bearer(&full))
            .await
            .status,
        401
    );
}

#[tokio::test]
async fn calls_outside_a_tokens_scopes_are_403_and_unknown_scopes_are_accepted() {
    let w = world().await;
    let read = w.oauth_token(&["read"]).await;
    let webhooks_read = w
        .oauth_token(&["webhooks:read", "tickets:frobnicate"])
        .await;
    assert_eq!(w.get("/api/v2/webhooks", &bearer(&read)).await.status, 200);
    let write = w
        .post("/api/v2/webhooks", &bearer(&read), json!({ "webhook": {} }))
        .await;
    assert_eq!(write.status, 403);
    assert_eq!(write.json()["error"], "Forbidden");
    assert_eq!(
        w.get("/api/v2/webhooks", &bearer(&webhooks_read))
            .await
            .status,
        200
    );
    assert_eq!(
        w.get("/api/v2/apps/installations", &bearer(&webhooks_read))
            .await
            .status,
        403
    );
    // Introspection needs no particular scope.
    assert_eq!(
        w.get("/api/v2/oauth/tokens/current.json", &bearer(&webhooks_read))
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn client_credentials_and_refresh_grants() {
    let w = world().await;
    let grant = |body: Value| {
        let http = w.http.clone();
        let url = w.server.url("/oauth/tokens");
        async move {
            let r = http.post(url).json(&body).send().await.unwrap();
            (r.status(), r.json::<Value>().await.unwrap())
        }
    };
    let (status, cc) = grant(
        json!({ "grant_type": "client_credentials", "client_id": "keycycle",
        "client_secret": "client-secret-0001", "scope": "read write" }),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(cc["expires_in"], 1800);
    assert!(cc.get("refresh_token").is_none());
    assert_eq!(
        w.get(
            "/api/v2/webhooks",
            &bearer(cc["access_token"].as_str().unwrap())
        )
        .await
        .status,
        200
    );

    let (status, bad) = grant(
        json!({ "grant_type": "client_credentials", "client_id": "keycycle",
        "client_secret": "client-secret-0001", "expires_in": 299 }),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(bad["error"], "invalid_request");
    let (status, _) = grant(
        json!({ "grant_type": "client_credentials", "client_id": "keycycle",
        "client_secret": "wrong" }),
    )
    .await;
    assert_eq!(status, 401);

    // A token with a refresh token (as an authorization-code grant would give).
    let access = {
        let mut db = w.state.lock();
        let client = w.client;
        let user = w.admin;
        api::insert_oauth_token(
            &mut db,
            client,
            user,
            vec!["read".into()],
            None,
            Some(3600),
            Some(30 * 86_400),
        )
    };
    let refresh = w
        .state
        .snapshot()
        .oauth_tokens
        .iter()
        .find(|t| t.id == access.id)
        .unwrap()
        .refresh_token
        .clone()
        .unwrap();
    let body = json!({ "grant_type": "refresh_token", "client_id": "keycycle",
        "client_secret": "client-secret-0001", "refresh_token": refresh.expose(), "expires_in": 172800 });
    let (status, renewed) = grant(body.clone()).await;
    assert_eq!(status, 200);
    assert!(renewed["refresh_token"].is_string());
    assert_eq!(renewed["expires_in"], 172800);
    assert_eq!(
        w.get(
            "/api/v2/oauth/tokens/current.json",
            &bearer(access.value.expose())
        )
        .await
        .status,
        401
    );
    let new = renewed["access_token"].as_str().unwrap();
    assert_eq!(
        w.get("/api/v2/oauth/tokens/current.json", &bearer(new))
            .await
            .status,
        200
    );
    // The old refresh token is spent.
    let (status, again) = grant(body).await;
    assert_eq!(status, 400);
    assert_eq!(again["error"], "invalid_grant");
}

#[tokio::test]
async fn oauth_client_secrets_are_shown_only_when_created_or_generated() {
    let w = world().await;
    let created = w
        .post(
            "/api/v2/oauth/clients",
            &admin(),
            json!({ "client": { "name": "x", "identifier": "x-id", "kind": "confidential" } }),
        )
        .await;
    assert_eq!(created.status, 201);
    let client = created.json()["client"].clone();
    let secret = client["secret"].as_str().unwrap().to_owned();
    let id = client["id"].as_u64().unwrap();
    let shown = w
        .get(&format!("/api/v2/oauth/clients/{id}"), &admin())
        .await;
    assert!(shown.json()["client"]["secret"].is_null());
    assert!(
        !w.get("/api/v2/oauth/clients", &admin())
            .await
            .text
            .contains(&secret)
    );
    let generated = w
        .call(
            Method::PUT,
            &format!("/api/v2/oauth/clients/{id}/generate_secret"),
            &admin(),
            None,
        )
        .await;
    assert_eq!(generated.status, 200);
    let new = generated.json()["client"]["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(new, secret);
    let truth = w
        .state
        .snapshot()
        .oauth_clients
        .into_iter()
        .find(|c| c.id == id)
        .unwrap();
    assert_eq!(truth.secret.expose(), new);
    let deleted = w
        .call(
            Method::DELETE,
            &format!("/api/v2/oauth/clients/{id}"),
            &admin(),
            None,
        )
        .await;
    assert_eq!(deleted.status, 204);
    assert_eq!(
        w.get(&format!("/api/v2/oauth/clients/{id}"), &admin())
            .await
            .json()["error"],
        "RecordNotFound"
    );
}

#[tokio::test]
async fn installation_settings_merge_and_secure_ones_are_never_echoed() {
    let w = world().await;
    let mut settings = serde_json::Map::new();
    settings.insert("subdomain".into(), json!("acme"));
    settings.insert("api_token".into(), json!("old-secret"));
    let id = w
        .state
        .add_installation(InstallationSeed {
            app_id: 42,
            enabled: true,
            settings,
            secure: vec!["api_token".into()],
            ..InstallationSeed::default()
        })
        .unwrap();
    let list = w.get("/api/v2/apps/installations", &admin()).await;
    assert_eq!(
        list.json()["installations"][0]["settings"],
        json!({ "subdomain": "acme" })
    );
    let updated = w
        .call(
            Method::PUT,
            &format!("/api/v2/apps/installations/{id}"),
            &admin(),
            Some(json!({ "settings": { "api_token": "new-secret" } })),
        )
        .await;
    assert_eq!(updated.status, 200);
    let body = updated.json();
    assert_eq!(body["id"], id, "unwrapped");
    assert_eq!(body["settings"], json!({ "subdomain": "acme" }));
    assert!(!updated.text.contains("new-secret"));
    let truth = w.state.installation_settings(id).unwrap();
    assert_eq!(truth["api_token"], "new-secret");
    assert_eq!(truth["subdomain"], "acme", "merged, not replaced");
    let over_http: Value = w
        .http
        .get(w.server.url(&format!("/_sim/installations/{id}/settings")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(over_http["api_token"], "new-secret");
}

#[tokio::test]
async fn webhook_credentials_are_write_only_and_updates_are_bodiless_204s() {
    let w = world().await;
    let id = w
        .new_webhook("basic", json!({ "type": "basic_auth", "data": { "username": "u", "password": "p1" }, "add_position": "header" }))
        .await;
    let shown = w.get(&format!("/api/v2/webhooks/{id}"), &admin()).await;
    assert_eq!(
        shown.json()["webhook"]["authentication"]["data"],
        json!({ "username": "u" })
    );
    assert!(!shown.text.contains("p1"));

    let patched = w
        .call(
            Method::PATCH,
            &format!("/api/v2/webhooks/{id}"),
            &admin(),
            Some(json!({ "webhook": { "authentication": { "data": { "password": "p2" } } } })),
        )
        .await;
    assert_eq!(patched.status, 204, "{}", patched.text);
    assert!(patched.text.is_empty());
    let truth = w.state.webhook(&id).unwrap();
    assert_eq!(
        truth.authentication.unwrap()["data"],
        json!({ "username": "u", "password": "p2" })
    );
    assert_eq!(truth.name, "basic");

    let bearer_hook = w
        .new_webhook(
            "bearer",
            json!({ "type": "bearer_token", "data": { "token": "tok1" } }),
        )
        .await;
    let shown = w
        .get(&format!("/api/v2/webhooks/{bearer_hook}"), &admin())
        .await;
    assert!(
        shown.json()["webhook"]["authentication"]
            .get("data")
            .is_none()
    );
    assert!(!shown.text.contains("tok1"));

    // PUT replaces the whole object: authentication left out is gone.
    let put = w
        .call(Method::PUT, &format!("/api/v2/webhooks/{bearer_hook}"), &admin(),
            Some(json!({ "webhook": { "name": "bearer", "endpoint": "https://hooks.test/b2", "http_method": "POST",
                "request_format": "json", "status": "inactive", "subscriptions": ["conditional_ticket_events"] } })))
        .await;
    assert_eq!(put.status, 204);
    assert!(put.text.is_empty());
    assert!(
        w.state
            .webhook(&bearer_hook)
            .unwrap()
            .authentication
            .is_none()
    );

    let bad = w
        .new_webhook_raw(json!({ "webhook": { "name": "x" } }))
        .await;
    assert_eq!(bad.status, 400);
    assert!(bad.json()["errors"][0]["detail"].is_string());

    let deleted = w
        .call(
            Method::DELETE,
            &format!("/api/v2/webhooks/{id}"),
            &admin(),
            None,
        )
        .await;
    assert_eq!(deleted.status, 204);
    assert!(deleted.text.is_empty());
    assert_eq!(
        w.get(&format!("/api/v2/webhooks/{id}"), &admin())
            .await
            .status,
        404
    );
}

impl World {
    async fn new_webhook_raw(&self, body: Value) -> Answer {
        self.post("/api/v2/webhooks", &admin(), body).await
    }
}

#[tokio::test]
async fn webhook_signing_secrets_and_test_calls_with_stored_or_given_auth() {
    let w = world().await;
    let id = w
        .new_webhook(
            "signed",
            json!({ "type": "api_key", "data": { "name": "X-Key", "value": "k1" } }),
        )
        .await;
    let secret = w
        .get(&format!("/api/v2/webhooks/{id}/signing_secret"), &admin())
        .await
        .json();
    assert_eq!(secret["signing_secret"]["algorithm"], "sha256");
    let reset = w
        .post(
            &format!("/api/v2/webhooks/{id}/signing_secret"),
            &admin(),
            json!({}),
        )
        .await;
    assert_eq!(reset.status, 201);
    assert_ne!(
        reset.json()["signing_secret"]["secret"],
        secret["signing_secret"]["secret"]
    );
    assert_eq!(
        w.state.webhook(&id).unwrap().signing_secret,
        reset.json()["signing_secret"]["secret"].as_str().unwrap()
    );

    w.state
        .set_endpoint_status("https://hooks.test/signed", 401);
    let test = w
        .post(
            &format!("/api/v2/webhooks/test?webhook_id={id}"),
            &admin(),
            json!({}),
        )
        .await;
    assert_eq!(test.status, 200);
    assert_eq!(test.json()["response"]["status"], 401);
    let overridden = w
        .post(&format!("/api/v2/webhooks/test?webhook_id={id}"), &admin(),
            json!({ "webhook": { "authentication": { "type": "api_key", "data": { "name": "X-Key", "value": "k2" } } } }))
        .await;
    assert_eq!(overridden.json()["response"]["status"], 401);
    let standalone = w
        .post("/api/v2/webhooks/test", &admin(),
            json!({ "webhook": { "endpoint": "https://elsewhere.test", "http_method": "GET", "request_format": "json" } }))
        .await;
    assert_eq!(standalone.json()["response"]["status"], 200);
    let tests = w.state.webhook_tests();
    assert_eq!(
        tests[0].authentication.as_ref().unwrap()["data"]["value"],
        "k1"
    );
    assert_eq!(
        tests[1].authentication.as_ref().unwrap()["data"]["value"],
        "k2"
    );
    assert_eq!(tests[2].webhook_id, None);
    assert!(tests[2].authentication.is_none());
}

#[tokio::test]
async fn webhooks_paginate_by_cursor_and_filter() {
    let w = world().await;
    for i in 0..5 {
        w.new_webhook(&format!("hook-{i}"), Value::Null).await;
    }
    w.new_webhook("other", Value::Null).await;
    let first = w
        .get(
            "/api/v2/webhooks?page[size]=2&filter[name_contains]=HOOK",
            &admin(),
        )
        .await;
    assert_eq!(first.headers["ratelimit-limit"], "700");
    let body = first.json();
    assert_eq!(body["webhooks"].as_array().unwrap().len(), 2);
    assert_eq!(body["meta"]["has_more"], true);
    assert!(body["links"]["prev"].is_null());
    let mut names: Vec<String> = body["webhooks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["name"].as_str().unwrap().to_owned())
        .collect();
    let mut next = body["links"]["next"].as_str().map(str::to_owned);
    while let Some(url) = next {
        let path = url.strip_prefix(&w.server.base_url).unwrap().to_owned();
        let page = w.get(&path, &admin()).await.json();
        names.extend(
            page["webhooks"]
                .as_array()
                .unwrap()
                .iter()
                .map(|h| h["name"].as_str().unwrap().to_owned()),
        );
        assert!(page["links"]["prev"].is_string());
        next = if page["meta"]["has_more"] == true {
            page["links"]["next"].as_str().map(str::to_owned)
        } else {
            None
        };
    }
    assert_eq!(names, ["hook-0", "hook-1", "hook-2", "hook-3", "hook-4"]);
    let inactive = w
        .get("/api/v2/webhooks?filter[status]=inactive", &admin())
        .await
        .json();
    assert!(inactive["webhooks"].as_array().unwrap().is_empty());
    assert_eq!(
        w.get("/api/v2/webhooks?page[size]=101", &admin())
            .await
            .status,
        400
    );
}

#[tokio::test]
async fn rate_limits_answer_429_with_or_without_retry_after() {
    let w = world().await;
    let ok = w.get("/api/v2/apps/installations", &admin()).await;
    assert_eq!(ok.headers["x-rate-limit"], "700");
    assert!(ok.headers.contains_key("x-rate-limit-remaining"));
    w.state.rate_limit(1, 7);
    let limited = w.get("/api/v2/webhooks", &admin()).await;
    assert_eq!(limited.status, 429);
    assert_eq!(limited.headers["retry-after"], "7");
    w.state.fail(FailRule::new("GET", "/api/v2/webhooks", 429));
    let bare = w.get("/api/v2/webhooks", &admin()).await;
    assert_eq!(bare.status, 429);
    assert!(bare.headers.get("retry-after").is_none());
    assert_eq!(w.get("/api/v2/webhooks", &admin()).await.status, 200);
}

#[tokio::test]
async fn injected_errors_have_zendesks_body_shape() {
    let w = world().await;
    w.state.fail(FailRule::new("GET", "/api/v2/webhooks", 502));
    let failed = w.get("/api/v2/webhooks", &admin()).await;
    assert_eq!(failed.status, 502);
    assert_eq!(
        failed.json(),
        json!({"error": "InternalServerError", "description": "502 Bad Gateway"})
    );
}

#[tokio::test]
async fn control_api_seeds_and_reveals_the_true_state() {
    let w = world().await;
    let http = &w.http;
    let hook: Value = http
        .post(w.server.url("/_sim/webhooks"))
        .json(
            &json!({ "created_by": w.admin, "name": "seeded", "endpoint": "https://hooks.test/s",
            "subscriptions": ["conditional_ticket_events"],
            "authentication": { "type": "bearer_token", "data": { "token": "seeded-tok" } } }),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = hook["id"].as_str().unwrap();
    assert_eq!(id.len(), 26);
    let truth: Value = http
        .get(w.server.url(&format!("/_sim/webhooks/{id}")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(truth["authentication"]["data"]["token"], "seeded-tok");
    let set = http
        .post(w.server.url("/_sim/today"))
        .json(&json!({ "date": "2027-05-01" }))
        .send()
        .await
        .unwrap();
    assert_eq!(set.status(), 204);
    let state: Value = http
        .get(w.server.url("/_sim/state"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(state["today"], "2027-05-01");
    assert_eq!(state["api_tokens"][0]["value"], ADMIN_TOKEN);
    assert_eq!(state["api_tokens"][0]["usable"], false);
    let unknown = http
        .post(w.server.url("/_sim/api_tokens/1/deactivate"))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    let unrouted = w.get("/api/v2/nothing", &admin()).await;
    assert_eq!(unrouted.status, 404);
    assert!(!format!("{:?}", w.state.snapshot().api_tokens).contains(ADMIN_TOKEN));
}
