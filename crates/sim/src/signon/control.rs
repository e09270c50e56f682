//! The Signon simulator's control API (tests and rehearsals only, no auth).
//! It also plays the person in Signon's UI, since Signon has no API that
//! creates or revokes an API user's token:
//!
//! | Request | Effect |
//! | --- | --- |
//! | `POST /_sim/api_users` [`SignonUserSeed`] | 201 `{"id"}` |
//! | `POST /_sim/api_users/:id/suspended` `{"suspended"}` | 204 |
//! | `POST /_sim/applications` [`SignonAppSeed`] | 201 `{"id","oauth_id"}` |
//! | `PUT /_sim/permissions` `{"api_user_id","application_id","permissions"}` | 204; replaces them |
//! | `POST /_sim/tokens` [`SignonTokenSeed`] | 201 [`SignonCreatedToken`](super::SignonCreatedToken): "Create access token", value shown once |
//! | `POST /_sim/tokens/:id/revoke` | 204: the "Revoke" link |
//! | `POST /_sim/renew_expiring_internal_tokens` | 200 `{"created":[ids]}`: Signon's own nightly renewal of internal users' tokens |
//! | `GET /_sim/sync` | what `kubernetes:sync_token_secrets` would apply: [`SignonSyncedSecret`](super::SignonSyncedSecret)s, values in clear |
//! | `DELETE /_sim/metrics_cache` | 204; `/metrics` recomputes the gauge |
//! | `POST /_sim/server_apps` `{"client_id","cache_ttl_secs"?}` | 201 `{"base_url"}`: a server application behind gds-sso on a port of its own (see `app.rs`) |
//! | `GET /_sim/state` | [`SignonSnapshot`](super::SignonSnapshot), token values in clear |
//! | `GET`/`POST /_sim/today` `{"date":"YYYY-MM-DD"\|null}` | the simulated date |
//!
//! plus the shared `/_sim/fail`, `/_sim/rate_limit`, `/_sim/gates` and
//! `/_sim/requests`.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use time::Date;

use super::{SignonAppSeed, SignonState, SignonTokenSeed, SignonUserSeed};
use crate::clock::{date_opt, date_string};
use crate::control::{ControlError, parse_json};
use crate::error::SimError;

pub(crate) fn routes() -> Router<SignonState> {
    Router::new()
        .route("/_sim/api_users", post(add_user))
        .route("/_sim/api_users/{id}/suspended", post(set_suspended))
        .route("/_sim/applications", post(add_application))
        .route("/_sim/permissions", put(set_permissions))
        .route("/_sim/tokens", post(create_token))
        .route("/_sim/tokens/{id}/revoke", post(revoke_token))
        .route(
            "/_sim/renew_expiring_internal_tokens",
            post(renew_expiring_internal_tokens),
        )
        .route("/_sim/sync", get(sync))
        .route("/_sim/metrics_cache", delete(clear_metrics_cache))
        .route("/_sim/server_apps", post(add_server_app))
        .route("/_sim/state", get(state))
        .route("/_sim/today", get(today).post(set_today))
}

fn refused(error: SimError) -> ControlError {
    let status = match error {
        SimError::Unknown { .. } => StatusCode::NOT_FOUND,
        SimError::DuplicateTokenValue { .. } => StatusCode::CONFLICT,
        SimError::InvalidSeed { .. } => StatusCode::BAD_REQUEST,
    };
    ControlError::new(status, error.to_string())
}

#[derive(Deserialize)]
struct ServerAppBody {
    client_id: String,
    #[serde(default)]
    cache_ttl_secs: Option<u64>,
}

async fn add_server_app(
    State(s): State<SignonState>,
    body: Bytes,
) -> Result<Response, ControlError> {
    let body: ServerAppBody = parse_json(&body)?;
    let url = s
        .spawn_server_app(
            &body.client_id,
            body.cache_ttl_secs.map(std::time::Duration::from_secs),
        )
        .map_err(|e| ControlError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    Ok(created(json!({ "base_url": url })))
}

fn created(body: impl serde::Serialize) -> Response {
    (StatusCode::CREATED, Json(body)).into_response()
}

async fn add_user(State(s): State<SignonState>, body: Bytes) -> Result<Response, ControlError> {
    let seed: SignonUserSeed = parse_json(&body)?;
    let id = s.add_api_user(seed).map_err(refused)?;
    Ok(created(json!({ "id": id })))
}

#[derive(Deserialize)]
struct Suspended {
    suspended: bool,
}

async fn set_suspended(
    State(s): State<SignonState>,
    Path(id): Path<u64>,
    body: Bytes,
) -> Result<StatusCode, ControlError> {
    let body: Suspended = parse_json(&body)?;
    s.set_suspended(id, body.suspended).map_err(refused)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn add_application(
    State(s): State<SignonState>,
    body: Bytes,
) -> Result<Response, ControlError> {
    let seed: SignonAppSeed = parse_json(&body)?;
    let id = s.add_application(seed).map_err(refused)?;
    let oauth_id = s
        .snapshot()
        .applications
        .into_iter()
        .find(|a| a.id == id)
        .map(|a| a.oauth_id);
    Ok(created(json!({ "id": id, "oauth_id": oauth_id })))
}

#[derive(Deserialize)]
struct Permissions {
    api_user_id: u64,
    application_id: u64,
    permissions: Vec<String>,
}

async fn set_permissions(
    State(s): State<SignonState>,
    body: Bytes,
) -> Result<StatusCode, ControlError> {
    let body: Permissions = parse_json(&body)?;
    let names: Vec<&str> = body.permissions.iter().map(String::as_str).collect();
    s.set_permissions(body.api_user_id, body.application_id, &names)
        .map_err(refused)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn create_token(State(s): State<SignonState>, body: Bytes) -> Result<Response, ControlError> {
    let seed: SignonTokenSeed = parse_json(&body)?;
    Ok(created(s.create_token(seed).map_err(refused)?))
}

async fn revoke_token(
    State(s): State<SignonState>,
    Path(id): Path<u64>,
) -> Result<StatusCode, ControlError> {
    s.revoke_token(id).map_err(refused)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn renew_expiring_internal_tokens(State(s): State<SignonState>) -> Response {
    Json(json!({ "created": s.renew_expiring_internal_tokens() })).into_response()
}

async fn sync(State(s): State<SignonState>) -> Response {
    Json(s.sync()).into_response()
}

async fn clear_metrics_cache(State(s): State<SignonState>) -> StatusCode {
    s.clear_metrics_cache();
    StatusCode::NO_CONTENT
}

async fn state(State(s): State<SignonState>) -> Response {
    Json(s.snapshot()).into_response()
}

async fn today(State(s): State<SignonState>) -> Response {
    Json(json!({ "today": date_string(s.today()) })).into_response()
}

#[derive(Deserialize)]
struct TodayBody {
    #[serde(default, with = "date_opt")]
    date: Option<Date>,
}

async fn set_today(State(s): State<SignonState>, body: Bytes) -> Result<StatusCode, ControlError> {
    let body: TodayBody = parse_json(&body)?;
    s.set_today(body.date);
    Ok(StatusCode::NO_CONTENT)
}
