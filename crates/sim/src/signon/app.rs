//! A GOV.UK server application behind gds-sso: the API a consuming app
//! calls with its Signon token, the "real call to the server application"
//! of the Signon runbook.
//!
//! gds-sso checks each bearer token with Signon's `/user.json?client_id=`
//! of its own application and caches the answer for 5 minutes per token,
//! refusals included. So a token revoked in Signon keeps working here for
//! up to the cache's life, while Signon itself refuses it at once; a
//! runbook's final check has to tell the two apart. The cache's life is
//! settable (`POST /_sim/cache {"ttl_secs"}`) so tests need not wait five
//! real minutes; `DELETE /_sim/cache` empties it.
//!
//! | Request | Answer |
//! | --- | --- |
//! | any `GET`/`POST`/... outside `/_sim/` with a token Signon accepts for this app | 200 `{"authenticated_as": email, "name", "path"}` |
//! | the same without a token, or with one Signon refuses | 401 `{"error"}` with `WWW-Authenticate: Bearer` |
//! | `GET /_sim/calls` | every call: `{path, token_sha256, status, cached}` |

use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::extract::{OriginalUri, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::SignonState;
use super::api::{bearer, look_up};
use crate::server::SimServer;

/// gds-sso's `Rails.cache` life for a bearer token lookup.
pub const GDS_SSO_CACHE: Duration = Duration::from_secs(5 * 60);

/// One call the application received.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SignonAppCall {
    pub path: String,
    /// The SHA-256 of the bearer token, hex; never the token.
    pub token_sha256: Option<String>,
    pub status: u16,
    /// Answered from gds-sso's cache rather than by asking Signon.
    pub cached: bool,
}

#[derive(Default)]
struct AppDb {
    ttl: Option<Duration>,
    /// Token SHA-256 → (when Signon was asked, what it answered).
    cache: HashMap<String, (Instant, Option<Value>)>,
    calls: Vec<SignonAppCall>,
}

/// Handle on one simulated server application; clones share it.
#[derive(Clone)]
pub struct SignonAppServerState {
    signon: SignonState,
    /// The application's OAuth id, the `client_id` gds-sso sends.
    client_id: String,
    db: Arc<Mutex<AppDb>>,
}

impl SignonAppServerState {
    fn lock(&self) -> MutexGuard<'_, AppDb> {
        self.db.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sets how long a token lookup is cached (gds-sso: 5 minutes).
    pub fn set_cache_ttl(&self, ttl: Duration) {
        self.lock().ttl = Some(ttl);
    }

    /// Forgets every cached lookup, as a restart of the app would.
    pub fn clear_cache(&self) {
        self.lock().cache.clear();
    }

    /// Every call received so far.
    pub fn calls(&self) -> Vec<SignonAppCall> {
        self.lock().calls.clone()
    }

    /// The user a token authenticates as here, by gds-sso's rules and
    /// cache: `None` when the app answers 401. The bool is whether the
    /// cache answered.
    fn authenticate(&self, token: &str) -> (Option<Value>, bool) {
        let key = sha256_hex(token);
        let mut db = self.lock();
        let ttl = db.ttl.unwrap_or(GDS_SSO_CACHE);
        if let Some((at, answer)) = db.cache.get(&key)
            && at.elapsed() < ttl
        {
            return (answer.clone(), true);
        }
        let answer = look_up(&self.signon.lock(), token, Some(&self.client_id));
        db.cache.insert(key, (Instant::now(), answer.clone()));
        (answer, false)
    }
}

impl SignonState {
    /// Starts a server application that lives as long as this Signon:
    /// what `POST /_sim/server_apps` does for a simulator served by
    /// `keycycle sim`. Returns its base URL.
    pub fn spawn_server_app(
        &self,
        client_id: &str,
        cache_ttl: Option<Duration>,
    ) -> io::Result<String> {
        let (server, app) = start_signon_app(self, client_id, 0)?;
        if let Some(ttl) = cache_ttl {
            app.set_cache_ttl(ttl);
        }
        let url = server.base_url.clone();
        self.lock().server_apps.push(server);
        Ok(url)
    }
}

fn sha256_hex(value: &str) -> String {
    hex::encode(Sha256::digest(value.as_bytes()))
}

/// Starts a server application that authenticates its callers against
/// `signon` as the application whose OAuth id is `client_id`.
pub fn start_signon_app(
    signon: &SignonState,
    client_id: &str,
    port: u16,
) -> io::Result<(SimServer, SignonAppServerState)> {
    let state = SignonAppServerState {
        signon: signon.clone(),
        client_id: client_id.to_owned(),
        db: Arc::default(),
    };
    let router = Router::new()
        .route("/_sim/cache", post(set_cache).delete(clear_cache))
        .route("/_sim/calls", get(calls))
        .fallback(serve)
        .with_state(state.clone());
    Ok((SimServer::spawn(router, port)?, state))
}

#[derive(Deserialize)]
struct CacheBody {
    ttl_secs: u64,
}

async fn set_cache(
    State(state): State<SignonAppServerState>,
    Json(body): Json<CacheBody>,
) -> StatusCode {
    state.set_cache_ttl(Duration::from_secs(body.ttl_secs));
    StatusCode::NO_CONTENT
}

async fn clear_cache(State(state): State<SignonAppServerState>) -> StatusCode {
    state.clear_cache();
    StatusCode::NO_CONTENT
}

async fn calls(State(state): State<SignonAppServerState>) -> Json<Vec<SignonAppCall>> {
    Json(state.calls())
}

async fn serve(
    State(state): State<SignonAppServerState>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
) -> Response {
    let path = uri.path().to_owned();
    let token = bearer(&headers).map(str::to_owned);
    let (user, cached) = match &token {
        Some(token) => state.authenticate(token),
        None => (None, false),
    };
    let status = if user.is_some() {
        StatusCode::OK
    } else {
        StatusCode::UNAUTHORIZED
    };
    state.lock().calls.push(SignonAppCall {
        path: path.clone(),
        token_sha256: token.as_deref().map(sha256_hex),
        status: status.as_u16(),
        cached,
    });
    match user {
        Some(user) => Json(json!({
            "authenticated_as": user["email"],
            "name": user["name"],
            "path": path,
        }))
        .into_response(),
        None => (
            status,
            [(header::WWW_AUTHENTICATE, "Bearer error=\"invalid_token\"")],
            Json(json!({ "error": "Unauthorised: the bearer token was not accepted" })),
        )
            .into_response(),
    }
}
