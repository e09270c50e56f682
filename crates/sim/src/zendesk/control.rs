//! The Zendesk simulator's control API (tests and rehearsals only, no auth):
//!
//! | Request | Effect |
//! | --- | --- |
//! | `POST /_sim/users` [`ZendeskUserSeed`] | 201 `{"id"}` |
//! | `POST /_sim/api_tokens` [`ApiTokenSeed`] | 201 [`SeededSecret`] (value included) |
//! | `POST /_sim/api_tokens/:id/deactivate` | 204, as an admin in Admin Center |
//! | `DELETE /_sim/api_tokens/:id` | 204, as an admin in Admin Center |
//! | `POST /_sim/oauth/clients` [`OauthClientSeed`] | 201 [`SeededSecret`] (secret) |
//! | `POST /_sim/oauth/tokens` [`OauthTokenSeed`] | 201 [`SeededSecret`] (access token) |
//! | `POST /_sim/installations` [`InstallationSeed`] | 201 `{"id"}` |
//! | `GET /_sim/installations/:id/settings` | every setting, secure ones included |
//! | `POST /_sim/webhooks` `{"created_by", ...`[`WebhookSeed`]`}` | 201 `{"id"}` |
//! | `GET /_sim/webhooks/:id` | [`WebhookState`](super::WebhookState), credentials in clear |
//! | `POST /_sim/endpoint_status` `{"endpoint","status"}` | 204; what test calls to that URL report |
//! | `GET /_sim/webhook_tests` | the recorded test calls, credentials in clear |
//! | `GET /_sim/state` | [`ZendeskSnapshot`](super::ZendeskSnapshot) |
//! | `GET`/`POST /_sim/today` `{"date":"YYYY-MM-DD"\|null}` | the simulated date |
//!
//! plus the shared `/_sim/fail`, `/_sim/rate_limit`, `/_sim/gates` and
//! `/_sim/requests`.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use time::Date;

use super::{
    ApiTokenSeed, InstallationSeed, OauthClientSeed, OauthTokenSeed, WebhookSeed, ZendeskState,
    ZendeskUserSeed,
};
use crate::clock::{date_opt, date_string};
use crate::control::{ControlError, parse_json};
use crate::error::SimError;

pub(crate) fn routes() -> Router<ZendeskState> {
    Router::new()
        .route("/_sim/users", post(add_user))
        .route("/_sim/api_tokens", post(add_api_token))
        .route(
            "/_sim/api_tokens/{id}",
            axum::routing::delete(delete_api_token),
        )
        .route(
            "/_sim/api_tokens/{id}/deactivate",
            post(deactivate_api_token),
        )
        .route("/_sim/oauth/clients", post(add_client))
        .route("/_sim/oauth/tokens", post(add_oauth_token))
        .route("/_sim/installations", post(add_installation))
        .route(
            "/_sim/installations/{id}/settings",
            get(installation_settings),
        )
        .route("/_sim/webhooks", post(add_webhook))
        .route("/_sim/webhooks/{id}", get(show_webhook))
        .route("/_sim/endpoint_status", post(set_endpoint_status))
        .route("/_sim/webhook_tests", get(webhook_tests))
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

fn created(body: impl serde::Serialize) -> Response {
    (StatusCode::CREATED, Json(body)).into_response()
}

async fn add_user(State(s): State<ZendeskState>, body: Bytes) -> Result<Response, ControlError> {
    let seed: ZendeskUserSeed = parse_json(&body)?;
    let id = s.add_user(seed).map_err(refused)?;
    Ok(created(json!({ "id": id })))
}

async fn add_api_token(
    State(s): State<ZendeskState>,
    body: Bytes,
) -> Result<Response, ControlError> {
    let seed: ApiTokenSeed = parse_json(&body)?;
    Ok(created(s.add_api_token(seed).map_err(refused)?))
}

async fn deactivate_api_token(
    State(s): State<ZendeskState>,
    Path(id): Path<u64>,
) -> Result<StatusCode, ControlError> {
    s.deactivate_api_token(id).map_err(refused)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn delete_api_token(
    State(s): State<ZendeskState>,
    Path(id): Path<u64>,
) -> Result<StatusCode, ControlError> {
    s.delete_api_token(id).map_err(refused)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn add_client(State(s): State<ZendeskState>, body: Bytes) -> Result<Response, ControlError> {
    let seed: OauthClientSeed = parse_json(&body)?;
    Ok(created(s.add_oauth_client(seed).map_err(refused)?))
}

async fn add_oauth_token(
    State(s): State<ZendeskState>,
    body: Bytes,
) -> Result<Response, ControlError> {
    let seed: OauthTokenSeed = parse_json(&body)?;
    Ok(created(s.add_oauth_token(seed).map_err(refused)?))
}

async fn add_installation(
    State(s): State<ZendeskState>,
    body: Bytes,
) -> Result<Response, ControlError> {
    let seed: InstallationSeed = parse_json(&body)?;
    let id = s.add_installation(seed).map_err(refused)?;
    Ok(created(json!({ "id": id })))
}

async fn installation_settings(
    State(s): State<ZendeskState>,
    Path(id): Path<u64>,
) -> Result<Response, ControlError> {
    s.installation_settings(id)
        .map(|settings| Json(settings).into_response())
        .ok_or_else(|| ControlError::new(StatusCode::NOT_FOUND, format!("no installation {id}")))
}

#[derive(Deserialize)]
struct WebhookBody {
    created_by: u64,
    #[serde(flatten)]
    seed: WebhookSeed,
}

async fn add_webhook(State(s): State<ZendeskState>, body: Bytes) -> Result<Response, ControlError> {
    let body: WebhookBody = parse_json(&body)?;
    let id = s.add_webhook(body.created_by, body.seed).map_err(refused)?;
    Ok(created(json!({ "id": id })))
}

async fn show_webhook(
    State(s): State<ZendeskState>,
    Path(id): Path<String>,
) -> Result<Response, ControlError> {
    s.webhook(&id)
        .map(|w| Json(w).into_response())
        .ok_or_else(|| ControlError::new(StatusCode::NOT_FOUND, format!("no webhook {id}")))
}

#[derive(Deserialize)]
struct EndpointStatus {
    endpoint: String,
    status: u16,
}

async fn set_endpoint_status(
    State(s): State<ZendeskState>,
    body: Bytes,
) -> Result<StatusCode, ControlError> {
    let body: EndpointStatus = parse_json(&body)?;
    s.set_endpoint_status(&body.endpoint, body.status);
    Ok(StatusCode::NO_CONTENT)
}

async fn webhook_tests(State(s): State<ZendeskState>) -> Response {
    Json(s.webhook_tests()).into_response()
}

async fn state(State(s): State<ZendeskState>) -> Response {
    Json(s.snapshot()).into_response()
}

async fn today(State(s): State<ZendeskState>) -> Response {
    Json(json!({ "today": date_string(s.today()) })).into_response()
}

#[derive(Deserialize)]
struct TodayBody {
    #[serde(default, with = "date_opt")]
    date: Option<Date>,
}

async fn set_today(State(s): State<ZendeskState>, body: Bytes) -> Result<StatusCode, ControlError> {
    let body: TodayBody = parse_json(&body)?;
    s.set_today(body.date);
    Ok(StatusCode::NO_CONTENT)
}
