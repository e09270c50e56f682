//! End-to-end tests of the IBM Secrets Manager simulator over HTTP: each
//! pins a provider behaviour a client relies on or trips over (the API key
//! grant and expiring tokens, unique names per group and type, get by
//! name, merge-patch only renames, version aliases, locks refusing a
//! deletion, IBM's error shape, instances sharing one IAM).

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::*;
use crate::{FailRule, start_ibm_sm};

const API_KEY: &str = "sim-api-key-0000000000000000000000000000";

struct World {
    server: SimServer,
    state: IbmSmState,
    http: reqwest::Client,
    token: String,
}

async fn world() -> World {
    let (server, state) = start_ibm_sm(0).await.unwrap();
    state.add_api_key(IbmApiKeySeed::new(API_KEY)).unwrap();
    let http = reqwest::Client::new();
    let token = iam_token(&http, &server, API_KEY).await;
    World {
        server,
        state,
        http,
        token,
    }
}

async fn iam_token(http: &reqwest::Client, server: &SimServer, key: &str) -> String {
    let answer: Value = http
        .post(server.url("/identity/token"))
        .form(&[
            ("grant_type", "urn:ibm:params:oauth:grant-type:apikey"),
            ("apikey", key),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    answer["access_token"].as_str().unwrap().to_owned()
}

struct Answer {
    status: StatusCode,
    text: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("not JSON ({e}): status {}", self.status))
    }

    /// `errors[0].message`, where the SDK looks first.
    fn message(&self) -> String {
        self.json()["errors"][0]["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }
}

impl World {
    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Answer {
        let mut request = self
            .http
            .request(method, self.server.url(path))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        Answer {
            status: response.status(),
            text: response.text().await.unwrap(),
        }
    }

    async fn create(&self, name: &str, payload: &str) -> String {
        let created = self
            .call(
                Method::POST,
                "/api/v2/secrets",
                Some(json!({ "secret_type": "arbitrary", "name": name, "payload": payload })),
            )
            .await;
        assert_eq!(created.status, 201, "{}", created.text);
        created.json()["id"].as_str().unwrap().to_owned()
    }

    async fn rename(&self, id: &str, name: &str, content_type: &str) -> Answer {
        let response = self
            .http
            .patch(self.server.url(&format!("/api/v2/secrets/{id}/metadata")))
            .bearer_auth(&self.token)
            .header("Content-Type", content_type)
            .body(json!({ "name": name }).to_string())
            .send()
            .await
            .unwrap();
        Answer {
            status: response.status(),
            text: response.text().await.unwrap(),
        }
    }
}

#[tokio::test]
async fn iam_exchanges_a_known_api_key_and_refuses_others_in_its_own_shape() {
    let w = world().await;
    let answer: Value = w
        .http
        .post(w.server.url("/identity/token"))
        .form(&[
            ("grant_type", "urn:ibm:params:oauth:grant-type:apikey"),
            ("apikey", API_KEY),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer["token_type"], "Bearer");
    assert_eq!(answer["expires_in"], 3600);
    let expiration = answer["expiration"].as_i64().unwrap();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    assert!(
        (now + 3590..=now + 3610).contains(&expiration),
        "{expiration}"
    );
    assert!(answer["refresh_token"].is_string());

    let refused = w
        .http
        .post(w.server.url("/identity/token"))
        .form(&[
            ("grant_type", "urn:ibm:params:oauth:grant-type:apikey"),
            ("apikey", "not-a-key"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["errorCode"], "BXNIM0415E");
    assert!(body["errorMessage"].as_str().unwrap().contains("API key"));
}

#[tokio::test]
async fn an_expired_access_token_gets_401_and_a_fresh_one_works() {
    let w = world().await;
    assert_eq!(
        w.call(Method::GET, "/api/v2/secrets", None).await.status,
        200
    );
    w.state.advance_clock(3601);
    let expired = w.call(Method::GET, "/api/v2/secrets", None).await;
    assert_eq!(expired.status, 401);
    assert_eq!(expired.json()["errors"][0]["code"], "unauthorized");
    assert_eq!(expired.json()["status_code"], 401);
    let fresh = World {
        token: iam_token(&w.http, &w.server, API_KEY).await,
        ..w
    };
    assert_eq!(
        fresh
            .call(Method::GET, "/api/v2/secrets", None)
            .await
            .status,
        200
    );

    // A short lifetime, for tests that want expiry without moving time.
    fresh.state.set_token_lifetime(0);
    let instant = World {
        token: iam_token(&fresh.http, &fresh.server, API_KEY).await,
        ..fresh
    };
    assert_eq!(
        instant
            .call(Method::GET, "/api/v2/secrets", None)
            .await
            .status,
        401
    );
}

#[tokio::test]
async fn names_are_unique_per_group_and_type_and_get_by_name_finds_them() {
    let w = world().await;
    let id = w.create("QA_GIT_TOKEN", "value-one").await;
    let again = w
        .call(
            Method::POST,
            "/api/v2/secrets",
            Some(json!({ "secret_type": "arbitrary", "name": "QA_GIT_TOKEN", "payload": "x" })),
        )
        .await;
    assert_eq!(again.status, 409);
    assert!(again.message().contains("QA_GIT_TOKEN"), "{}", again.text);

    // Another group may hold the same name.
    let group = w
        .state
        .add_group(IbmGroupSeed {
            name: "aihelp".into(),
            description: String::new(),
        })
        .unwrap();
    let other = w
        .call(
            Method::POST,
            "/api/v2/secrets",
            Some(json!({ "secret_type": "arbitrary", "name": "QA_GIT_TOKEN", "payload": "y", "secret_group_id": group })),
        )
        .await;
    assert_eq!(other.status, 201, "{}", other.text);

    let by_name = w
        .call(
            Method::GET,
            "/api/v2/secret_groups/default/secret_types/arbitrary/secrets/QA_GIT_TOKEN",
            None,
        )
        .await;
    assert_eq!(by_name.status, 200);
    assert_eq!(by_name.json()["id"], id);
    assert_eq!(by_name.json()["payload"], "value-one");
    // The group is named, not given by id, in this path.
    let in_group = w
        .call(
            Method::GET,
            "/api/v2/secret_groups/aihelp/secret_types/arbitrary/secrets/QA_GIT_TOKEN",
            None,
        )
        .await;
    assert_eq!(in_group.json()["payload"], "y");
    let wrong_type = w
        .call(
            Method::GET,
            "/api/v2/secret_groups/default/secret_types/username_password/secrets/QA_GIT_TOKEN",
            None,
        )
        .await;
    assert_eq!(wrong_type.status, 404);
    assert_eq!(wrong_type.json()["errors"][0]["code"], "not_found");

    // Metadata never carries the value; retrieval is recorded.
    let metadata = w
        .call(Method::GET, &format!("/api/v2/secrets/{id}/metadata"), None)
        .await;
    assert!(!metadata.text.contains("value-one"));
    assert!(w.state.secret(&id).unwrap().retrieved_at.is_some());
}

#[tokio::test]
async fn renames_need_merge_patch_and_a_free_name() {
    let w = world().await;
    let old = w.create("TOKEN", "old-value").await;
    let refused = w
        .rename(&old, "TOKEN-replaced-2026-11-29", "application/json")
        .await;
    assert_eq!(refused.status, 415);
    assert_eq!(w.state.secret(&old).unwrap().name, "TOKEN");

    let renamed = w
        .rename(
            &old,
            "TOKEN-replaced-2026-11-29",
            "application/merge-patch+json",
        )
        .await;
    assert_eq!(renamed.status, 200, "{}", renamed.text);
    assert_eq!(renamed.json()["name"], "TOKEN-replaced-2026-11-29");
    let new = w.create("TOKEN", "new-value").await;
    let taken = w
        .rename(
            &new,
            "TOKEN-replaced-2026-11-29",
            "application/merge-patch+json",
        )
        .await;
    assert_eq!(taken.status, 409);
    let bad = w
        .rename(&new, "no spaces", "application/merge-patch+json")
        .await;
    assert_eq!(bad.status, 400);
}

#[tokio::test]
async fn versions_move_the_current_and_previous_aliases() {
    let w = world().await;
    let id = w.create("ROTATING", "v1").await;
    let added = w
        .call(
            Method::POST,
            &format!("/api/v2/secrets/{id}/versions"),
            Some(json!({ "payload": "v2" })),
        )
        .await;
    assert_eq!(added.status, 201, "{}", added.text);
    assert_eq!(added.json()["alias"], "current");
    let current = w
        .call(
            Method::GET,
            &format!("/api/v2/secrets/{id}/versions/current"),
            None,
        )
        .await;
    assert_eq!(current.json()["payload"], "v2");
    let previous = w
        .call(
            Method::GET,
            &format!("/api/v2/secrets/{id}/versions/previous"),
            None,
        )
        .await;
    assert_eq!(previous.json()["payload"], "v1");
    assert_eq!(previous.json()["alias"], "previous");
    let listed = w
        .call(Method::GET, &format!("/api/v2/secrets/{id}/versions"), None)
        .await;
    assert_eq!(listed.json()["versions_total"], 2);
    assert!(
        !listed.text.contains("\"v1\""),
        "a version list carries no value"
    );
    let got = w
        .call(Method::GET, &format!("/api/v2/secrets/{id}"), None)
        .await;
    assert_eq!(got.json()["payload"], "v2");
    assert_eq!(got.json()["versions_total"], 2);
}

#[tokio::test]
async fn username_password_secrets_get_a_generated_password() {
    let w = world().await;
    let created = w
        .call(
            Method::POST,
            "/api/v2/secrets",
            Some(json!({ "secret_type": "username_password", "name": "db-login", "username": "app" })),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.text);
    let password = created.json()["password"].as_str().unwrap().to_owned();
    assert_eq!(password.len(), 32);
    let id = created.json()["id"].as_str().unwrap().to_owned();
    let state = w.state.secret(&id).unwrap();
    assert_eq!(state.username.as_deref(), Some("app"));
    assert_eq!(state.current_value().unwrap().expose(), password);
    assert!(
        !format!("{state:?}").contains(&password),
        "Debug shows a value"
    );
}

#[tokio::test]
async fn a_locked_secret_is_not_deleted_until_its_locks_are_gone() {
    let w = world().await;
    let id = w.create("LOCKED", "v").await;
    let locked = w
        .call(
            Method::POST,
            &format!("/api/v2/secrets/{id}/locks_bulk"),
            Some(json!({ "locks": [{ "name": "eso-sync", "description": "in use" }] })),
        )
        .await;
    assert_eq!(locked.status, 201, "{}", locked.text);
    assert_eq!(locked.json()["versions"][0]["locks"], json!(["eso-sync"]));
    let listed = w
        .call(Method::GET, &format!("/api/v2/secrets/{id}/locks"), None)
        .await;
    assert_eq!(listed.json()["locks"][0]["secret_version_alias"], "current");

    let refused = w
        .call(Method::DELETE, &format!("/api/v2/secrets/{id}"), None)
        .await;
    assert_eq!(refused.status, 412);
    assert!(refused.message().contains("locked"), "{}", refused.text);
    assert!(w.state.secret(&id).is_some());

    let unlocked = w
        .call(
            Method::DELETE,
            &format!("/api/v2/secrets/{id}/locks_bulk?name=eso-sync"),
            None,
        )
        .await;
    assert_eq!(unlocked.status, 200);
    let deleted = w
        .call(Method::DELETE, &format!("/api/v2/secrets/{id}"), None)
        .await;
    assert_eq!(deleted.status, 204);
    assert!(deleted.text.is_empty());
    assert!(w.state.secret(&id).is_none());
    let gone = w
        .call(Method::DELETE, &format!("/api/v2/secrets/{id}"), None)
        .await;
    assert_eq!(gone.status, 404);
}

#[tokio::test]
async fn lists_filter_and_page() {
    let w = world().await;
    for name in ["alpha-1", "alpha-2", "beta-1"] {
        w.create(name, "v").await;
    }
    let page = w
        .call(
            Method::GET,
            "/api/v2/secrets?search=alpha&limit=1&sort=name",
            None,
        )
        .await;
    let body = page.json();
    assert_eq!(body["total_count"], 2);
    assert_eq!(body["secrets"][0]["name"], "alpha-1");
    assert!(body["next"]["href"].as_str().unwrap().contains("offset=1"));
    assert!(!page.text.contains("payload"));
    let too_many = w
        .call(Method::GET, "/api/v2/secrets?limit=1001", None)
        .await;
    assert_eq!(too_many.status, 400);
}

#[tokio::test]
async fn instances_of_one_account_share_iam_but_not_secrets() {
    let w = world().await;
    let (stage_server, stage) = w.state.start_instance(0).unwrap();
    assert_ne!(stage.instance_id(), w.state.instance_id());
    w.create("SHARED_NAME", "dev").await;
    // The token from the first instance's IAM works at the second.
    let listed: Value = w
        .http
        .get(stage_server.url("/api/v2/secrets"))
        .bearer_auth(&w.token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["total_count"], 0);
    // A key of another account is refused by this instance.
    stage
        .add_api_key(IbmApiKeySeed {
            account_id: Some("another-account".into()),
            ..IbmApiKeySeed::new("foreign-key-000000000000")
        })
        .unwrap();
    let foreign = iam_token(&w.http, &w.server, "foreign-key-000000000000").await;
    let refused = w
        .http
        .get(stage_server.url("/api/v2/secrets"))
        .bearer_auth(&foreign)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
}

#[tokio::test]
async fn injected_faults_use_ibms_error_shape() {
    let w = world().await;
    w.state.fail(FailRule::new("GET", "/api/v2/secrets", 503));
    let failed = w.call(Method::GET, "/api/v2/secrets", None).await;
    assert_eq!(failed.status, 503);
    assert_eq!(failed.json()["status_code"], 503);
    assert!(failed.json()["errors"][0]["message"].is_string());
    assert!(failed.json()["trace"].is_string());
}

#[tokio::test]
async fn the_control_api_seeds_and_shows_the_true_state() {
    let w = world().await;
    let seeded: Value = w
        .http
        .post(w.server.url("/_sim/secrets"))
        .json(&json!({ "name": "SEEDED", "payload": "seeded-value" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = seeded["id"].as_str().unwrap();
    let lock = w
        .http
        .post(w.server.url(&format!("/_sim/secrets/{id}/locks")))
        .json(&json!({ "name": "app" }))
        .send()
        .await
        .unwrap();
    assert_eq!(lock.status(), 204);
    let state: Value = w
        .http
        .get(w.server.url("/_sim/state"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let secret = &state["secrets"][0];
    assert_eq!(secret["versions"][0]["value"], "seeded-value");
    assert_eq!(secret["versions"][0]["locks"][0]["name"], "app");
    assert_eq!(state["tokens"].as_array().unwrap().len(), 1);

    let clock = w
        .http
        .post(w.server.url("/_sim/clock"))
        .json(&json!({ "advance_seconds": 7200 }))
        .send()
        .await
        .unwrap();
    assert_eq!(clock.status(), 204);
    assert!(w.state.snapshot().tokens[0].expired);

    let spawned: Value = w
        .http
        .post(w.server.url("/_sim/instances"))
        .json(&json!({ "name": "stage" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let stage_url = spawned["base_url"].as_str().unwrap();
    let answer = w
        .http
        .get(format!("{stage_url}/api/v2/secrets"))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 401, "the new instance answers, with auth");
}
