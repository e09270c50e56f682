//! The demo token service: a deliberately small provider that the example
//! plugin rotates. Its API is fixed here and documented in the crate docs.

use std::sync::{Arc, Mutex, MutexGuard};

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use keycycle_secret::SecretValue;
use serde::{Deserialize, Serialize};
use serde_json::json;
use time::OffsetDateTime;

use crate::clock::timestamp;
use crate::control::{self, Control, ControlError, SimState, control_methods, parse_json};
use crate::error::SimError;
use crate::values::{expose, hex_token};

const PROVIDER: &str = "demo";

/// The only user of the demo service.
pub const DEMO_USER: &str = "demo-admin";

/// One token of the demo service, as the simulator knows it (value included).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DemoToken {
    pub id: u64,
    pub name: String,
    pub active: bool,
    pub created_at: String,
    #[serde(serialize_with = "expose::serialize")]
    pub value: SecretValue,
}

/// Handle on the demo service's true state; clones share it.
#[derive(Clone, Default)]
pub struct DemoState {
    inner: Arc<Mutex<DemoInner>>,
}

#[derive(Default)]
struct DemoInner {
    tokens: Vec<DemoToken>,
    last_id: u64,
    control: Control,
}

impl DemoInner {
    fn insert(&mut self, name: &str, value: SecretValue) -> Result<u64, SimError> {
        if let Some(existing) = self.tokens.iter().find(|t| t.value == value) {
            return Err(SimError::DuplicateTokenValue {
                provider: PROVIDER,
                existing_id: existing.id,
            });
        }
        self.last_id += 1;
        self.tokens.push(DemoToken {
            id: self.last_id,
            name: name.to_owned(),
            active: true,
            created_at: timestamp(OffsetDateTime::now_utc()),
            value,
        });
        Ok(self.last_id)
    }

    fn active_token(&self, value: &str) -> Option<&DemoToken> {
        self.tokens
            .iter()
            .find(|t| t.active && t.value.expose() == value)
    }
}

impl SimState for DemoState {
    fn with_control<R>(&self, f: impl FnOnce(&mut Control) -> R) -> R {
        f(&mut self.lock().control)
    }
}

control_methods!(DemoState);

impl DemoState {
    pub fn new() -> DemoState {
        DemoState::default()
    }

    fn lock(&self) -> MutexGuard<'_, DemoInner> {
        // A panicking test thread must not wedge every later request.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stores an active token with a known value; returns its id.
    pub fn seed_token(&self, name: &str, value: &str) -> Result<u64, SimError> {
        self.lock().insert(name, SecretValue::new(value))
    }

    /// Every token, revoked ones included, in id order.
    pub fn tokens(&self) -> Vec<DemoToken> {
        self.lock().tokens.clone()
    }

    pub fn token(&self, id: u64) -> Option<DemoToken> {
        self.lock().tokens.iter().find(|t| t.id == id).cloned()
    }

    /// Every active token.
    pub fn active_tokens(&self) -> Vec<DemoToken> {
        self.lock()
            .tokens
            .iter()
            .filter(|t| t.active)
            .cloned()
            .collect()
    }

    /// The active tokens called `name`.
    pub fn active_tokens_named(&self, name: &str) -> Vec<DemoToken> {
        self.lock()
            .tokens
            .iter()
            .filter(|t| t.active && t.name == name)
            .cloned()
            .collect()
    }

    /// Revokes token `id`; false when there is no such active token.
    pub fn revoke(&self, id: u64) -> bool {
        let mut inner = self.lock();
        match inner.tokens.iter_mut().find(|t| t.id == id && t.active) {
            Some(token) => {
                token.active = false;
                true
            }
            None => false,
        }
    }
}

/// The demo service's router, control API included.
pub(crate) fn router(state: DemoState) -> Router {
    Router::new()
        .route("/api/whoami", get(whoami))
        .route("/api/tokens", get(list_tokens).post(create_token))
        .route("/api/tokens/{id}", delete(revoke_token))
        .route("/api/redirect", get(redirect))
        .route("/_sim/tokens", post(seed_token))
        .route("/_sim/state", get(true_state))
        .merge(control::routes::<DemoState>())
        .fallback(|| async { NOT_FOUND })
        .layer(middleware::from_fn_with_state(
            state.clone(),
            control::gate::<DemoState>,
        ))
        .with_state(state)
}

/// An answer of the demo API other than success: `{"message": "..."}`.
#[derive(Debug)]
struct ApiError(StatusCode, &'static str);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "message": self.1 }))).into_response()
    }
}

const UNAUTHORIZED: ApiError = ApiError(StatusCode::UNAUTHORIZED, "401 Unauthorized");
const NOT_FOUND: ApiError = ApiError(StatusCode::NOT_FOUND, "404 Not found");

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// The id and name of the active token presented.
fn authenticate(inner: &DemoInner, headers: &HeaderMap) -> Result<(u64, String), ApiError> {
    let presented = bearer(headers).ok_or(UNAUTHORIZED)?;
    inner
        .active_token(presented)
        .map(|t| (t.id, t.name.clone()))
        .ok_or(UNAUTHORIZED)
}

async fn whoami(State(state): State<DemoState>, headers: HeaderMap) -> Result<Response, ApiError> {
    let inner = state.lock();
    let (id, name) = authenticate(&inner, &headers)?;
    Ok(Json(json!({ "user": DEMO_USER, "token_id": id, "token_name": name })).into_response())
}

async fn create_token(
    State(state): State<DemoState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let mut inner = state.lock();
    authenticate(&inner, &headers)?;
    let name = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("name").and_then(|n| n.as_str()).map(str::to_owned))
        .filter(|n| !n.trim().is_empty())
        .ok_or(ApiError(StatusCode::BAD_REQUEST, "name is missing"))?;
    let value = hex_token("demo-", 16);
    // 128 random bits colliding would be news; answer like a server bug.
    let id = inner.insert(&name, value.clone()).map_err(|_| {
        ApiError(
            StatusCode::INTERNAL_SERVER_ERROR,
            "500 Internal Server Error",
        )
    })?;
    let created_at = inner
        .tokens
        .last()
        .map(|t| t.created_at.clone())
        .unwrap_or_default();
    let body = json!({
        "id": id,
        "name": name,
        "token": value.expose(),
        "created_at": created_at,
    });
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

#[derive(Deserialize)]
struct ListQuery {
    name: Option<String>,
}

async fn list_tokens(
    State(state): State<DemoState>,
    headers: HeaderMap,
    Query(query): Query<ListQuery>,
) -> Result<Response, ApiError> {
    let inner = state.lock();
    authenticate(&inner, &headers)?;
    let listed: Vec<_> = inner
        .tokens
        .iter()
        .filter(|t| query.name.as_deref().is_none_or(|n| t.name == n))
        .map(|t| {
            json!({
                "id": t.id,
                "name": t.name,
                "active": t.active,
                "created_at": t.created_at,
            })
        })
        .collect();
    Ok(Json(listed).into_response())
}

async fn revoke_token(
    State(state): State<DemoState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let mut inner = state.lock();
    authenticate(&inner, &headers)?;
    // A revoked token is gone as far as the API is concerned, so deleting it
    // again is a 404 like an id that never existed.
    let token = id
        .parse::<u64>()
        .ok()
        .and_then(|id| inner.tokens.iter_mut().find(|t| t.id == id && t.active))
        .ok_or(NOT_FOUND)?;
    token.active = false;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
struct RedirectQuery {
    to: Option<String>,
}

async fn redirect(Query(query): Query<RedirectQuery>) -> Result<Response, ApiError> {
    let to = query
        .to
        .filter(|to| !to.is_empty())
        .ok_or(ApiError(StatusCode::BAD_REQUEST, "to is missing"))?;
    let location = axum::http::HeaderValue::from_str(&to)
        .map_err(|_| ApiError(StatusCode::BAD_REQUEST, "to is invalid"))?;
    Ok((StatusCode::FOUND, [(header::LOCATION, location)]).into_response())
}

#[derive(Deserialize)]
struct SeedBody {
    name: String,
    token: String,
}

async fn seed_token(State(state): State<DemoState>, body: Bytes) -> Result<Response, ControlError> {
    let seed: SeedBody = parse_json(&body)?;
    let id = state
        .seed_token(&seed.name, &seed.token)
        .map_err(|e| ControlError::new(StatusCode::CONFLICT, e.to_string()))?;
    Ok((StatusCode::CREATED, Json(json!({ "id": id }))).into_response())
}

async fn true_state(State(state): State<DemoState>) -> Response {
    let inner = state.lock();
    Json(json!({ "tokens": inner.tokens, "requests": inner.control.log })).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FailRule;
    use serde_json::Value;

    fn client() -> reqwest::Client {
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap()
    }

    async fn started() -> (crate::SimServer, DemoState, reqwest::Client) {
        let (server, state) = crate::start_demo(0).await.unwrap();
        (server, state, client())
    }

    #[tokio::test]
    async fn whoami_accepts_only_active_known_tokens() {
        let (server, state, http) = started().await;
        let id = state.seed_token("ci", "demo-known").unwrap();

        let ok = http
            .get(server.url("/api/whoami"))
            .bearer_auth("demo-known")
            .send()
            .await
            .unwrap();
        assert_eq!(ok.status(), 200);
        let body: Value = ok.json().await.unwrap();
        assert_eq!(
            body,
            json!({"user": "demo-admin", "token_id": id, "token_name": "ci"})
        );

        for auth in [Some("demo-unknown"), None] {
            let mut request = http.get(server.url("/api/whoami"));
            if let Some(token) = auth {
                request = request.bearer_auth(token);
            }
            let denied = request.send().await.unwrap();
            assert_eq!(denied.status(), 401);
            let body: Value = denied.json().await.unwrap();
            assert_eq!(body, json!({"message": "401 Unauthorized"}));
        }

        assert!(state.revoke(id));
        let revoked = http
            .get(server.url("/api/whoami"))
            .bearer_auth("demo-known")
            .send()
            .await
            .unwrap();
        assert_eq!(revoked.status(), 401);
    }

    #[tokio::test]
    async fn created_token_is_shown_once_and_works() {
        let (server, state, http) = started().await;
        state.seed_token("admin", "demo-admin-token").unwrap();

        let created = http
            .post(server.url("/api/tokens"))
            .bearer_auth("demo-admin-token")
            .json(&json!({"name": "deploy"}))
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), 201);
        let body: Value = created.json().await.unwrap();
        let value = body["token"].as_str().unwrap().to_owned();
        let hex = value.strip_prefix("demo-").unwrap();
        assert_eq!(hex.len(), 32);
        assert!(
            hex.chars()
                .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
        );
        assert_eq!(body["name"], "deploy");
        assert!(body["created_at"].as_str().unwrap().ends_with('Z'));

        let whoami: Value = http
            .get(server.url("/api/whoami"))
            .bearer_auth(&value)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(whoami["token_id"], body["id"]);

        let listed = http
            .get(server.url("/api/tokens?name=deploy"))
            .bearer_auth(&value)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(!listed.contains(&value), "list must never carry values");
        let listed: Value = serde_json::from_str(&listed).unwrap();
        assert_eq!(listed.as_array().unwrap().len(), 1);
        assert_eq!(listed[0]["active"], true);
        assert!(listed[0].get("token").is_none());

        let all: Value = http
            .get(server.url("/api/tokens"))
            .bearer_auth(&value)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(all.as_array().unwrap().len(), 2);

        let nameless = http
            .post(server.url("/api/tokens"))
            .bearer_auth(&value)
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        assert_eq!(nameless.status(), 400);
        let body: Value = nameless.json().await.unwrap();
        assert_eq!(body, json!({"message": "name is missing"}));

        let truth = state.active_tokens_named("deploy");
        assert_eq!(truth.len(), 1);
        assert_eq!(truth[0].value.expose(), value);
    }

    #[tokio::test]
    async fn delete_revokes_and_second_delete_is_404() {
        let (server, state, http) = started().await;
        state.seed_token("admin", "demo-admin-token").unwrap();
        let victim = state.seed_token("old", "demo-old").unwrap();

        let url = server.url(&format!("/api/tokens/{victim}"));
        let first = http
            .delete(&url)
            .bearer_auth("demo-admin-token")
            .send()
            .await
            .unwrap();
        assert_eq!(first.status(), 204);
        assert!(!state.token(victim).unwrap().active);

        let second = http
            .delete(&url)
            .bearer_auth("demo-admin-token")
            .send()
            .await
            .unwrap();
        assert_eq!(second.status(), 404);
        let body: Value = second.json().await.unwrap();
        assert_eq!(body, json!({"message": "404 Not found"}));

        let old = http
            .get(server.url("/api/whoami"))
            .bearer_auth("demo-old")
            .send()
            .await
            .unwrap();
        assert_eq!(old.status(), 401);
    }

    #[tokio::test]
    async fn redirect_needs_no_auth() {
        let (server, _state, http) = started().await;
        let response = http
            .get(server.url("/api/redirect?to=http%3A%2F%2F127.0.0.2%3A9%2Fsteal"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 302);
        assert_eq!(
            response.headers()[header::LOCATION],
            "http://127.0.0.2:9/steal"
        );
    }

    #[tokio::test]
    async fn control_api_seeds_and_reveals_true_state() {
        let (server, _state, http) = started().await;
        let seeded = http
            .post(server.url("/_sim/tokens"))
            .json(&json!({"name": "seeded", "token": "demo-seeded-value"}))
            .send()
            .await
            .unwrap();
        assert_eq!(seeded.status(), 201);
        let id = seeded.json::<Value>().await.unwrap()["id"].clone();

        let duplicate = http
            .post(server.url("/_sim/tokens"))
            .json(&json!({"name": "again", "token": "demo-seeded-value"}))
            .send()
            .await
            .unwrap();
        assert_eq!(duplicate.status(), 409);
        assert!(
            !duplicate
                .text()
                .await
                .unwrap()
                .contains("demo-seeded-value")
        );

        let truth: Value = http
            .get(server.url("/_sim/state"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(truth["tokens"][0]["id"], id);
        assert_eq!(truth["tokens"][0]["value"], "demo-seeded-value");
        assert_eq!(truth["tokens"][0]["active"], true);
    }

    #[tokio::test]
    async fn injected_failure_hits_only_matching_requests_and_changes_nothing() {
        let (server, state, http) = started().await;
        state.seed_token("admin", "demo-admin-token").unwrap();
        let victim = state.seed_token("old", "demo-old").unwrap();
        let fail = http
            .post(server.url("/_sim/fail"))
            .json(
                &json!({"method": "DELETE", "path_prefix": "/api/tokens/", "status": 500,
                          "times": 1, "retry_after": null}),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(fail.status(), 204);

        let whoami = http
            .get(server.url("/api/whoami"))
            .bearer_auth("demo-admin-token")
            .send()
            .await
            .unwrap();
        assert_eq!(whoami.status(), 200);

        let url = server.url(&format!("/api/tokens/{victim}"));
        let failed = http
            .delete(&url)
            .bearer_auth("demo-admin-token")
            .send()
            .await
            .unwrap();
        assert_eq!(failed.status(), 500);
        let body: Value = failed.json().await.unwrap();
        assert_eq!(body, json!({"message": "500 Internal Server Error"}));
        assert!(
            state.token(victim).unwrap().active,
            "a failed request changes nothing"
        );

        let retried = http
            .delete(&url)
            .bearer_auth("demo-admin-token")
            .send()
            .await
            .unwrap();
        assert_eq!(retried.status(), 204);

        state.fail(FailRule::new("GET", "/api/whoami", 503).retry_after(9));
        let unavailable = http
            .get(server.url("/api/whoami"))
            .bearer_auth("demo-admin-token")
            .send()
            .await
            .unwrap();
        assert_eq!(unavailable.status(), 503);
        assert_eq!(unavailable.headers()[header::RETRY_AFTER], "9");
    }

    #[tokio::test]
    async fn rate_limit_answers_429_with_retry_after() {
        let (server, state, http) = started().await;
        state.seed_token("admin", "demo-admin-token").unwrap();
        let set = http
            .post(server.url("/_sim/rate_limit"))
            .json(&json!({"times": 2, "retry_after": 30}))
            .send()
            .await
            .unwrap();
        assert_eq!(set.status(), 204);

        for _ in 0..2 {
            let limited = http
                .get(server.url("/api/whoami"))
                .bearer_auth("demo-admin-token")
                .send()
                .await
                .unwrap();
            assert_eq!(limited.status(), 429);
            assert_eq!(limited.headers()[header::RETRY_AFTER], "30");
            assert_eq!(limited.text().await.unwrap(), "Retry later");
        }
        let through = http
            .get(server.url("/api/whoami"))
            .bearer_auth("demo-admin-token")
            .send()
            .await
            .unwrap();
        assert_eq!(through.status(), 200);
    }

    #[tokio::test]
    async fn request_log_records_api_calls_but_not_control_calls() {
        let (server, state, http) = started().await;
        http.post(server.url("/_sim/tokens"))
            .json(&json!({"name": "a", "token": "demo-a"}))
            .send()
            .await
            .unwrap();
        assert!(state.requests().is_empty());

        http.delete(server.url("/api/tokens/77?x=1"))
            .bearer_auth("demo-a")
            .send()
            .await
            .unwrap();
        let log: Value = http
            .get(server.url("/_sim/requests"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(log.as_array().map(Vec::len), Some(1), "{log}");
        assert_eq!(log[0]["method"], "DELETE");
        assert_eq!(log[0]["path"], "/api/tokens/77");
        assert!(log[0]["at_ms"].as_u64().is_some_and(|t| t > 0), "{log}");

        state.clear_requests();
        assert!(state.requests().is_empty());
    }

    #[tokio::test]
    async fn shutdown_releases_the_port() {
        let (server, _state, http) = started().await;
        let addr = server.addr;
        assert!(addr.ip().is_loopback());
        server.shutdown().await;
        let after = http.get(format!("http://{addr}/api/whoami")).send().await;
        assert!(after.is_err(), "nothing may answer after shutdown");
    }
}
