//! End-to-end tests of the GitHub simulator over HTTP: each pins a provider
//! behaviour a client relies on (token headers and expiry, 401 once revoked
//! or expired, sealed boxes opened with each scope's own key, 201 then 204,
//! metadata-only reads, scopes and permissions, rate limits, error shape).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use crypto_box::aead::OsRng;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use time::macros::{date, datetime};

use super::*;
use crate::{FailRule, SimServer, start_github};

const ADMIN_TOKEN: &str = "ghp_AdminToken000000000000000000000000";
const NOSCOPE_TOKEN: &str = "ghp_NoScopeToken0000000000000000000000";

struct World {
    server: SimServer,
    state: GitHubState,
    http: reqwest::Client,
    admin_token_id: u64,
}

async fn world() -> World {
    let (server, state) = start_github(0).await.unwrap();
    state.set_today(Some(date!(2026 - 10 - 01)));
    state.add_user(GitHubUserSeed::new("aihelp")).unwrap();
    state.add_user(GitHubUserSeed::new("someone")).unwrap();
    state
        .add_org(GitHubOrgSeed {
            login: "acme".into(),
            admins: vec!["aihelp".into()],
        })
        .unwrap();
    state
        .add_repo(GitHubRepoSeed {
            owner: "acme".into(),
            name: "qa-analyzer".into(),
            admins: vec![],
            environments: vec!["qa-analyzer-stg".into()],
        })
        .unwrap();
    let admin_token_id = state
        .add_token(
            GitHubTokenSeed::classic("aihelp", &["repo", "admin:org", "workflow"])
                .value(ADMIN_TOKEN)
                .expires(datetime!(2026-12-30 09:00:00 UTC)),
        )
        .unwrap()
        .id;
    state
        .add_token(GitHubTokenSeed::classic("aihelp", &["read:user"]).value(NOSCOPE_TOKEN))
        .unwrap();
    World {
        server,
        state,
        http: reqwest::Client::new(),
        admin_token_id,
    }
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

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }
}

const ENV_PATH: &str = "/repos/acme/qa-analyzer/environments/qa-analyzer-stg/secrets";
const REPO_PATH: &str = "/repos/acme/qa-analyzer/actions/secrets";
const ORG_PATH: &str = "/orgs/acme/actions/secrets";

impl World {
    async fn call(&self, method: Method, path: &str, token: &str, body: Option<Value>) -> Answer {
        let mut request = self
            .http
            .request(method, self.server.url(path))
            .header("Authorization", format!("Bearer {token}"))
            .header("X-GitHub-Api-Version", "2022-11-28");
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

    async fn get(&self, path: &str, token: &str) -> Answer {
        self.call(Method::GET, path, token, None).await
    }

    /// Seals `value` with the public key served at `{base}/public-key`.
    async fn sealed(&self, base: &str, value: &str) -> (String, String) {
        let key = self.get(&format!("{base}/public-key"), ADMIN_TOKEN).await;
        assert_eq!(key.status, StatusCode::OK, "{}", key.text);
        let key = key.json();
        (
            key["key_id"].as_str().unwrap().to_owned(),
            seal(&key["key"], value),
        )
    }

    async fn put(&self, base: &str, name: &str, body: Value) -> Answer {
        self.call(
            Method::PUT,
            &format!("{base}/{name}"),
            ADMIN_TOKEN,
            Some(body),
        )
        .await
    }
}

/// libsodium's `crypto_box_seal` of `value` for the base64 public `key`.
fn seal(key: &Value, value: &str) -> String {
    let raw: [u8; 32] = STANDARD
        .decode(key.as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap();
    let sealed = crypto_box::PublicKey::from(raw)
        .seal(&mut OsRng, value.as_bytes())
        .unwrap();
    STANDARD.encode(sealed)
}

#[tokio::test]
async fn user_answers_with_the_token_headers() {
    let w = world().await;
    let me = w.get("/user", ADMIN_TOKEN).await;
    assert_eq!(me.status, StatusCode::OK);
    let body = me.json();
    assert_eq!(body["login"], "aihelp");
    assert_eq!(body["type"], "User");
    assert!(body["id"].as_u64().is_some());
    assert_eq!(
        me.header("x-oauth-scopes"),
        Some("repo, admin:org, workflow")
    );
    assert_eq!(me.header("x-accepted-oauth-scopes"), Some(""));
    assert_eq!(
        me.header("github-authentication-token-expiration"),
        Some("2026-12-30 09:00:00 UTC")
    );
    assert_eq!(me.header("x-ratelimit-limit"), Some("5000"));
    assert_eq!(me.header("x-ratelimit-used"), Some("1"));
    assert_eq!(me.header("x-ratelimit-remaining"), Some("4999"));
    assert_eq!(me.header("x-ratelimit-resource"), Some("core"));
    assert!(
        me.header("x-ratelimit-reset")
            .unwrap()
            .parse::<i64>()
            .unwrap()
            > 0
    );

    // A token that never expires has no expiry header; a fine-grained one
    // has no scopes header.
    let plain = w.get("/user", NOSCOPE_TOKEN).await;
    assert_eq!(plain.header("github-authentication-token-expiration"), None);
    assert_eq!(plain.header("x-oauth-scopes"), Some("read:user"));
    let fine = w
        .state
        .add_token(GitHubTokenSeed {
            login: "aihelp".into(),
            fine_grained: true,
            ..GitHubTokenSeed::default()
        })
        .unwrap();
    assert!(fine.value.expose().starts_with("github_pat_"));
    let fine = w.get("/user", fine.value.expose()).await;
    assert_eq!(fine.status, StatusCode::OK);
    assert_eq!(fine.header("x-oauth-scopes"), None);
}

#[tokio::test]
async fn unknown_revoked_and_expired_tokens_get_bad_credentials() {
    let w = world().await;
    let expected = json!({
        "message": "Bad credentials",
        "documentation_url": "https://docs.github.com/rest",
        "status": "401",
    });
    let unknown = w.get("/user", "ghp_unknown").await;
    assert_eq!(unknown.status, StatusCode::UNAUTHORIZED);
    assert_eq!(unknown.json(), expected);
    assert_eq!(unknown.header("x-oauth-scopes"), None);
    assert_eq!(unknown.header("x-ratelimit-limit"), Some("60"));

    // The day before expiry it works; on the day after, 401.
    w.state.set_today(Some(date!(2026 - 12 - 29)));
    assert_eq!(w.get("/user", ADMIN_TOKEN).await.status, StatusCode::OK);
    w.state.set_today(Some(date!(2026 - 12 - 31)));
    let expired = w.get("/user", ADMIN_TOKEN).await;
    assert_eq!(expired.status, StatusCode::UNAUTHORIZED);
    assert_eq!(expired.json(), expected);
    assert_eq!(
        expired.header("github-authentication-token-expiration"),
        None
    );
    assert!(!w.state.token(w.admin_token_id).unwrap().usable);

    w.state.set_today(Some(date!(2026 - 10 - 01)));
    assert_eq!(w.get("/user", ADMIN_TOKEN).await.status, StatusCode::OK);
    w.state.revoke_token(w.admin_token_id).unwrap();
    let revoked = w.get("/user", ADMIN_TOKEN).await;
    assert_eq!(revoked.status, StatusCode::UNAUTHORIZED);
    assert_eq!(revoked.json(), expected);
}

#[tokio::test]
async fn a_sealed_value_is_opened_into_the_true_state() {
    let w = world().await;
    let (key_id, sealed) = w.sealed(ENV_PATH, "the-new-pat-value").await;
    let created = w
        .put(
            ENV_PATH,
            "qa_git_token",
            json!({ "encrypted_value": sealed, "key_id": key_id }),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    assert_eq!(created.json(), json!({}));

    let scope = SecretScope::environment("acme", "qa-analyzer", "qa-analyzer-stg");
    let stored = w.state.secret(&scope, "QA_GIT_TOKEN").unwrap();
    assert_eq!(stored.value.expose(), "the-new-pat-value");
    assert_eq!(stored.name, "QA_GIT_TOKEN");

    // Replacing it answers 204 and keeps created_at.
    let (key_id, sealed) = w.sealed(ENV_PATH, "the-newer-value").await;
    let updated = w
        .put(
            ENV_PATH,
            "QA_GIT_TOKEN",
            json!({ "encrypted_value": sealed, "key_id": key_id }),
        )
        .await;
    assert_eq!(updated.status, StatusCode::NO_CONTENT);
    let after = w.state.secret(&scope, "qa_git_token").unwrap();
    assert_eq!(after.value.expose(), "the-newer-value");
    assert_eq!(after.created_at, stored.created_at);

    // The API shows metadata only.
    let shown = w
        .get(&format!("{ENV_PATH}/QA_GIT_TOKEN"), ADMIN_TOKEN)
        .await;
    assert_eq!(shown.status, StatusCode::OK);
    let mut fields: Vec<String> = shown.json().as_object().unwrap().keys().cloned().collect();
    fields.sort();
    assert_eq!(fields, ["created_at", "name", "updated_at"]);
    assert!(!shown.text.contains("the-newer-value"));
    let list = w.get(ENV_PATH, ADMIN_TOKEN).await.json();
    assert_eq!(list["total_count"], 1);
    assert_eq!(list["secrets"][0]["name"], "QA_GIT_TOKEN");

    // Nothing landed in the repository's own secrets.
    assert_eq!(w.get(REPO_PATH, ADMIN_TOKEN).await.json()["total_count"], 0);

    let path = format!("{ENV_PATH}/QA_GIT_TOKEN");
    let deleted = w.call(Method::DELETE, &path, ADMIN_TOKEN, None).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    assert!(w.state.secret(&scope, "QA_GIT_TOKEN").is_none());
    let again = w.call(Method::DELETE, &path, ADMIN_TOKEN, None).await;
    assert_eq!(again.status, StatusCode::NOT_FOUND);
    assert_eq!(again.json()["status"], "404");
}

#[tokio::test]
async fn each_scope_has_its_own_key_and_a_wrong_one_is_refused() {
    let w = world().await;
    let env_key = w
        .get(&format!("{ENV_PATH}/public-key"), ADMIN_TOKEN)
        .await
        .json();
    let repo_key = w
        .get(&format!("{REPO_PATH}/public-key"), ADMIN_TOKEN)
        .await
        .json();
    let org_key = w
        .get(&format!("{ORG_PATH}/public-key"), ADMIN_TOKEN)
        .await
        .json();
    assert_ne!(env_key["key"], repo_key["key"]);
    assert_ne!(repo_key["key"], org_key["key"]);
    assert_ne!(env_key["key_id"], repo_key["key_id"]);
    // The key is stable between reads.
    assert_eq!(
        w.get(&format!("{ENV_PATH}/public-key"), ADMIN_TOKEN)
            .await
            .json(),
        env_key
    );

    // Sealed for the repository, sent to the environment with the
    // repository's key id: 422 for the key id.
    let wrong_id = w
        .put(
            ENV_PATH,
            "X",
            json!({ "encrypted_value": seal(&repo_key["key"], "v"), "key_id": repo_key["key_id"] }),
        )
        .await;
    assert_eq!(wrong_id.status, StatusCode::UNPROCESSABLE_ENTITY);
    let body = wrong_id.json();
    assert_eq!(body["message"], "Validation Failed");
    assert_eq!(body["errors"][0]["field"], "key_id");
    assert_eq!(body["status"], "422");

    // The environment's key id, but a box that does not open with it.
    let wrong_box = w
        .put(
            ENV_PATH,
            "X",
            json!({ "encrypted_value": seal(&repo_key["key"], "v"), "key_id": env_key["key_id"] }),
        )
        .await;
    assert_eq!(wrong_box.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(wrong_box.json()["errors"][0]["field"], "encrypted_value");

    let missing = w
        .put(ENV_PATH, "X", json!({ "key_id": env_key["key_id"] }))
        .await;
    assert_eq!(missing.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(w.state.snapshot().secrets.is_empty());

    // A key rotated by GitHub: the old key id no longer works.
    let scope = SecretScope::environment("acme", "qa-analyzer", "qa-analyzer-stg");
    let fresh = w.state.rotate_public_key(&scope).unwrap();
    assert_ne!(json!(fresh.key_id), env_key["key_id"]);
    let stale = w
        .put(
            ENV_PATH,
            "X",
            json!({ "encrypted_value": seal(&env_key["key"], "v"), "key_id": env_key["key_id"] }),
        )
        .await;
    assert_eq!(stale.status, StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn secret_names_follow_githubs_rules() {
    let w = world().await;
    for bad in ["GITHUB_TOKEN", "1ABC", "WITH-DASH"] {
        let (key_id, sealed) = w.sealed(REPO_PATH, "v").await;
        let answer = w
            .put(
                REPO_PATH,
                bad,
                json!({ "encrypted_value": sealed, "key_id": key_id }),
            )
            .await;
        assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
        assert_eq!(answer.json()["errors"][0]["field"], "name", "{bad}");
    }
}

#[tokio::test]
async fn scopes_and_admin_rights_are_enforced() {
    let w = world().await;
    let refused = w
        .get(&format!("{ENV_PATH}/public-key"), NOSCOPE_TOKEN)
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert_eq!(refused.header("x-accepted-oauth-scopes"), Some("repo"));
    assert_eq!(refused.json()["status"], "403");
    assert!(refused.json()["documentation_url"].is_string());

    // `repo` is not enough for organisation secrets.
    let repo_only = w
        .state
        .add_token(GitHubTokenSeed::classic("aihelp", &["repo"]))
        .unwrap();
    let org = w
        .get(&format!("{ORG_PATH}/public-key"), repo_only.value.expose())
        .await;
    assert_eq!(org.status, StatusCode::FORBIDDEN);
    assert_eq!(org.header("x-accepted-oauth-scopes"), Some("admin:org"));

    // A user who does not administer the repository.
    let stranger = w
        .state
        .add_token(GitHubTokenSeed::classic("someone", &["repo", "admin:org"]))
        .unwrap();
    let answer = w
        .get(&format!("{REPO_PATH}/public-key"), stranger.value.expose())
        .await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN);
    let answer = w
        .get(&format!("{ORG_PATH}/public-key"), stranger.value.expose())
        .await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN);
    // Unknown places are 404.
    let answer = w
        .get("/repos/acme/nope/actions/secrets/public-key", ADMIN_TOKEN)
        .await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    let answer = w
        .get(
            "/repos/acme/qa-analyzer/environments/prod/secrets/public-key",
            ADMIN_TOKEN,
        )
        .await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn fine_grained_permissions_distinguish_read_and_write() {
    let w = world().await;
    let reader = w
        .state
        .add_token(GitHubTokenSeed {
            login: "aihelp".into(),
            fine_grained: true,
            permissions: [("environments".to_owned(), "read".to_owned())].into(),
            ..GitHubTokenSeed::default()
        })
        .unwrap();
    let reader = reader.value.expose();
    let key = w.get(&format!("{ENV_PATH}/public-key"), reader).await;
    assert_eq!(key.status, StatusCode::OK);
    let key = key.json();
    let put = w
        .call(
            Method::PUT,
            &format!("{ENV_PATH}/X"),
            reader,
            Some(json!({ "encrypted_value": seal(&key["key"], "v"), "key_id": key["key_id"] })),
        )
        .await;
    assert_eq!(put.status, StatusCode::FORBIDDEN);
    assert_eq!(
        put.header("x-accepted-github-permissions"),
        Some("environments=write")
    );
    assert_eq!(
        put.json()["message"],
        "Resource not accessible by personal access token"
    );
    // Repository secrets need the `secrets` permission instead.
    let repo = w.get(&format!("{REPO_PATH}/public-key"), reader).await;
    assert_eq!(repo.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn org_secrets_carry_visibility_and_selected_repositories() {
    let w = world().await;
    let repo_id = w.state.snapshot().repos[0].id;
    let (key_id, sealed) = w.sealed(ORG_PATH, "org-value").await;
    let missing = w
        .put(
            ORG_PATH,
            "DEPLOY",
            json!({ "encrypted_value": sealed, "key_id": key_id }),
        )
        .await;
    assert_eq!(missing.status, StatusCode::UNPROCESSABLE_ENTITY);
    let stranger = w
        .put(
            ORG_PATH,
            "DEPLOY",
            json!({ "encrypted_value": sealed, "key_id": key_id, "visibility": "selected",
                    "selected_repository_ids": [42] }),
        )
        .await;
    assert_eq!(stranger.status, StatusCode::UNPROCESSABLE_ENTITY);
    let created = w
        .put(
            ORG_PATH,
            "DEPLOY",
            json!({ "encrypted_value": sealed, "key_id": key_id, "visibility": "selected",
                    "selected_repository_ids": [repo_id] }),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    let shown = w
        .get(&format!("{ORG_PATH}/DEPLOY"), ADMIN_TOKEN)
        .await
        .json();
    assert_eq!(shown["visibility"], "selected");
    assert!(shown["selected_repositories_url"].is_string());
    let stored = w.state.secret(&SecretScope::org("acme"), "DEPLOY").unwrap();
    assert_eq!(stored.value.expose(), "org-value");
    assert_eq!(stored.selected_repository_ids, [repo_id]);
}

#[tokio::test]
async fn lists_are_paged_with_a_link_header() {
    let w = world().await;
    for i in 0..3 {
        let (key_id, sealed) = w.sealed(REPO_PATH, "v").await;
        let name = format!("S{i}");
        let answer = w
            .put(
                REPO_PATH,
                &name,
                json!({ "encrypted_value": sealed, "key_id": key_id }),
            )
            .await;
        assert_eq!(answer.status, StatusCode::CREATED);
    }
    let first = w.get(&format!("{REPO_PATH}?per_page=2"), ADMIN_TOKEN).await;
    assert_eq!(first.json()["total_count"], 3);
    assert_eq!(first.json()["secrets"].as_array().unwrap().len(), 2);
    assert!(
        first
            .header("link")
            .unwrap()
            .contains("page=2>; rel=\"next\"")
    );
    let second = w
        .get(&format!("{REPO_PATH}?per_page=2&page=2"), ADMIN_TOKEN)
        .await;
    assert_eq!(second.json()["secrets"][0]["name"], "S2");
    assert_eq!(second.header("link"), None);
}

#[tokio::test]
async fn the_primary_rate_limit_and_injected_faults_look_like_githubs() {
    let w = world().await;
    w.state.set_hourly_limit(Some(2));
    assert_eq!(w.get("/user", ADMIN_TOKEN).await.status, StatusCode::OK);
    assert_eq!(w.get("/user", ADMIN_TOKEN).await.status, StatusCode::OK);
    let over = w.get("/user", ADMIN_TOKEN).await;
    assert_eq!(over.status, StatusCode::FORBIDDEN);
    assert_eq!(over.header("x-ratelimit-remaining"), Some("0"));
    assert!(
        over.json()["message"]
            .as_str()
            .unwrap()
            .contains("API rate limit exceeded")
    );
    w.state.set_hourly_limit(None);

    w.state.rate_limit(1, 7);
    let limited = w.get("/user", ADMIN_TOKEN).await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(limited.header("retry-after"), Some("7"));
    assert_eq!(limited.header("x-ratelimit-remaining"), Some("0"));

    w.state.fail(FailRule::new("GET", "/user", 502));
    let failed = w.get("/user", ADMIN_TOKEN).await;
    assert_eq!(failed.status, StatusCode::BAD_GATEWAY);
    assert_eq!(failed.json()["status"], "502");
    assert!(failed.json()["documentation_url"].is_string());
}

#[tokio::test]
async fn control_api_seeds_and_shows_the_true_state() {
    let (server, _state) = start_github(0).await.unwrap();
    let http = reqwest::Client::new();
    let post = |path: &str, body: Value| http.post(server.url(path)).json(&body).send();
    assert_eq!(
        post("/_sim/users", json!({"login": "aihelp"}))
            .await
            .unwrap()
            .status(),
        StatusCode::CREATED
    );
    assert_eq!(
        post("/_sim/repos", json!({"owner": "aihelp", "name": "tools"}))
            .await
            .unwrap()
            .status(),
        StatusCode::CREATED
    );
    let env = post(
        "/_sim/repos/aihelp/tools/environments",
        json!({"name": "stg"}),
    )
    .await
    .unwrap();
    assert_eq!(env.status(), StatusCode::NO_CONTENT);
    let token: Value = post(
        "/_sim/tokens",
        json!({"login": "aihelp", "scopes": ["repo"], "expires_at": "2027-01-01", "note": "qa-analyzer-stg"}),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let value = token["value"].as_str().unwrap();
    assert!(value.starts_with("ghp_") && value.len() == 40, "{value}");
    let today = post("/_sim/today", json!({"date": "2027-01-02"}))
        .await
        .unwrap();
    assert_eq!(today.status(), StatusCode::NO_CONTENT);
    let state: Value = http
        .get(server.url("/_sim/state"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(state["today"], "2027-01-02");
    assert_eq!(state["tokens"][0]["value"], value);
    assert_eq!(state["tokens"][0]["usable"], false);
    assert_eq!(state["tokens"][0]["expires_at"], "2027-01-01T00:00:00Z");
    assert_eq!(state["repos"][0]["environments"], json!(["stg"]));
    let bad = post("/_sim/tokens", json!({"login": "nobody"}))
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn debug_output_never_shows_a_secret() {
    let w = world().await;
    let (key_id, sealed) = w.sealed(REPO_PATH, "canary-plaintext-value").await;
    let answer = w
        .put(
            REPO_PATH,
            "S",
            json!({ "encrypted_value": sealed, "key_id": key_id }),
        )
        .await;
    assert_eq!(answer.status, StatusCode::CREATED);
    let snapshot = w.state.snapshot();
    let text = format!("{snapshot:?} {:?}", *w.state.lock());
    assert!(!text.contains("canary-plaintext-value"), "{text}");
    assert!(!text.contains(ADMIN_TOKEN), "{text}");
    assert!(text.contains("key_id"));
    // While the control API does show the plaintext.
    let shown = serde_json::to_string(&snapshot).unwrap();
    assert!(shown.contains("canary-plaintext-value"));
}
