//! The GitLab simulator's control API (tests and rehearsals only, no auth):
//!
//! | Request | Effect |
//! | --- | --- |
//! | `POST /_sim/users` [`UserSeed`] | 201 `{"id"}` |
//! | `POST /_sim/groups` [`GroupSeed`] | 201 `{"id"}` |
//! | `POST /_sim/projects` [`ProjectSeed`] | 201 `{"id"}` |
//! | `POST /_sim/projects/:id/members`, `/_sim/groups/:id/members` [`MemberSeed`] | 204 |
//! | `POST /_sim/tokens` [`TokenSeed`] | 201 [`SeededToken`] (value included) |
//! | `GET /_sim/tokens/:id` | [`TokenState`](super::TokenState) |
//! | `POST /_sim/tokens/:id/revoke` | 204, no reuse detection |
//! | `POST /_sim/projects/:id/variables` [`VariableSeed`] | 201 |
//! | `POST /_sim/projects/:id/hooks` [`HookSeed`] | 201 `{"id"}` |
//! | `POST /_sim/projects/:id/triggers` [`TriggerSeed`] | 201 [`SeededTrigger`] |
//! | `POST /_sim/endpoint_status` `{"endpoint","status","body"?}` | 204; what a webhook's receiving URL answers to test deliveries |
//! | `GET /_sim/hook_tests` | the recorded test deliveries, tokens in clear |
//! | `GET /_sim/state` | [`GitLabSnapshot`](super::GitLabSnapshot): every value, secret or not |
//! | `GET`/`POST /_sim/today` `{"date":"YYYY-MM-DD"\|null}` | the simulated date |
//! | `GET`/`POST /_sim/settings` (any subset of [`GitLabSettings`]) | behaviour switches |
//!
//! plus the shared `/_sim/fail`, `/_sim/rate_limit` and `/_sim/requests`.

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
    AuthErrorStyle, GitLabSettings, GitLabState, GroupSeed, HookSeed, MemberSeed, ProjectSeed,
    ReuseDetection, SeededToken, TokenSeed, TriggerSeed, UserSeed, VariableSeed,
};
use crate::clock::{date_opt, date_string};
use crate::control::{ControlError, parse_json};
use crate::error::SimError;

pub(crate) fn routes() -> Router<GitLabState> {
    Router::new()
        .route("/_sim/users", post(add_user))
        .route("/_sim/groups", post(add_group))
        .route("/_sim/projects", post(add_project))
        .route("/_sim/projects/{id}/members", post(add_project_member))
        .route("/_sim/groups/{id}/members", post(add_group_member))
        .route("/_sim/tokens", post(add_token))
        .route("/_sim/tokens/{id}", get(show_token))
        .route("/_sim/tokens/{id}/revoke", post(revoke_token))
        .route("/_sim/projects/{id}/variables", post(add_variable))
        .route("/_sim/projects/{id}/hooks", post(add_hook))
        .route("/_sim/projects/{id}/triggers", post(add_trigger))
        .route("/_sim/endpoint_status", post(set_endpoint_status))
        .route("/_sim/hook_tests", get(hook_tests))
        .route("/_sim/state", get(state))
        .route("/_sim/today", get(today).post(set_today))
        .route("/_sim/settings", get(settings).post(set_settings))
}

fn refused(error: SimError) -> ControlError {
    let status = match error {
        SimError::Unknown { .. } => StatusCode::NOT_FOUND,
        SimError::DuplicateTokenValue { .. } => StatusCode::CONFLICT,
        SimError::InvalidSeed { .. } => StatusCode::BAD_REQUEST,
    };
    ControlError::new(status, error.to_string())
}

fn created_id(id: u64) -> Response {
    (StatusCode::CREATED, Json(json!({ "id": id }))).into_response()
}

async fn add_user(State(s): State<GitLabState>, body: Bytes) -> Result<Response, ControlError> {
    let seed: UserSeed = parse_json(&body)?;
    s.add_user(seed).map(created_id).map_err(refused)
}

async fn add_group(State(s): State<GitLabState>, body: Bytes) -> Result<Response, ControlError> {
    let seed: GroupSeed = parse_json(&body)?;
    s.add_group(seed).map(created_id).map_err(refused)
}

async fn add_project(State(s): State<GitLabState>, body: Bytes) -> Result<Response, ControlError> {
    let seed: ProjectSeed = parse_json(&body)?;
    s.add_project(seed).map(created_id).map_err(refused)
}

async fn add_project_member(
    State(s): State<GitLabState>,
    Path(id): Path<u64>,
    body: Bytes,
) -> Result<StatusCode, ControlError> {
    let seed: MemberSeed = parse_json(&body)?;
    s.add_project_member(id, seed.user_id, seed.access_level)
        .map_err(refused)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn add_group_member(
    State(s): State<GitLabState>,
    Path(id): Path<u64>,
    body: Bytes,
) -> Result<StatusCode, ControlError> {
    let seed: MemberSeed = parse_json(&body)?;
    s.add_group_member(id, seed.user_id, seed.access_level)
        .map_err(refused)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn add_token(State(s): State<GitLabState>, body: Bytes) -> Result<Response, ControlError> {
    let seed: TokenSeed = parse_json(&body)?;
    let seeded: SeededToken = s.add_token(seed).map_err(refused)?;
    Ok((StatusCode::CREATED, Json(seeded)).into_response())
}

async fn show_token(
    State(s): State<GitLabState>,
    Path(id): Path<u64>,
) -> Result<Response, ControlError> {
    s.token(id)
        .map(|t| Json(t).into_response())
        .ok_or_else(|| ControlError::new(StatusCode::NOT_FOUND, format!("no token {id}")))
}

async fn revoke_token(
    State(s): State<GitLabState>,
    Path(id): Path<u64>,
) -> Result<StatusCode, ControlError> {
    s.revoke_token(id).map_err(refused)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn add_variable(
    State(s): State<GitLabState>,
    Path(id): Path<u64>,
    body: Bytes,
) -> Result<StatusCode, ControlError> {
    let seed: VariableSeed = parse_json(&body)?;
    s.add_variable(id, seed).map_err(refused)?;
    Ok(StatusCode::CREATED)
}

async fn add_hook(
    State(s): State<GitLabState>,
    Path(id): Path<u64>,
    body: Bytes,
) -> Result<Response, ControlError> {
    let seed: HookSeed = parse_json(&body)?;
    s.add_hook(id, seed).map(created_id).map_err(refused)
}

async fn add_trigger(
    State(s): State<GitLabState>,
    Path(id): Path<u64>,
    body: Bytes,
) -> Result<Response, ControlError> {
    let seed: TriggerSeed = parse_json(&body)?;
    let seeded = s.add_trigger(id, seed).map_err(refused)?;
    Ok((StatusCode::CREATED, Json(seeded)).into_response())
}

#[derive(Deserialize)]
struct EndpointStatus {
    endpoint: String,
    status: u16,
    #[serde(default)]
    body: String,
}

async fn set_endpoint_status(
    State(s): State<GitLabState>,
    body: Bytes,
) -> Result<StatusCode, ControlError> {
    let body: EndpointStatus = parse_json(&body)?;
    s.set_endpoint_response(&body.endpoint, body.status, &body.body);
    Ok(StatusCode::NO_CONTENT)
}

async fn hook_tests(State(s): State<GitLabState>) -> Response {
    Json(s.hook_tests()).into_response()
}

async fn state(State(s): State<GitLabState>) -> Response {
    Json(s.snapshot()).into_response()
}

async fn today(State(s): State<GitLabState>) -> Response {
    Json(json!({ "today": date_string(s.today()) })).into_response()
}

#[derive(Deserialize)]
struct TodayBody {
    #[serde(default, with = "date_opt")]
    date: Option<Date>,
}

async fn set_today(State(s): State<GitLabState>, body: Bytes) -> Result<StatusCode, ControlError> {
    let body: TodayBody = parse_json(&body)?;
    s.set_today(body.date);
    Ok(StatusCode::NO_CONTENT)
}

async fn settings(State(s): State<GitLabState>) -> Response {
    Json(s.settings()).into_response()
}

/// Any subset of the settings; the rest keep their values.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SettingsPatch {
    reuse_detection: Option<ReuseDetection>,
    auth_error_style: Option<AuthErrorStyle>,
    rate_limit_per_minute: Option<u32>,
    rotation_default_days: Option<i64>,
    max_lifetime_days: Option<i64>,
}

async fn set_settings(State(s): State<GitLabState>, body: Bytes) -> Result<Response, ControlError> {
    let patch: SettingsPatch = parse_json(&body)?;
    let mut settings: GitLabSettings = s.settings();
    if let Some(v) = patch.reuse_detection {
        settings.reuse_detection = v;
    }
    if let Some(v) = patch.auth_error_style {
        settings.auth_error_style = v;
    }
    if let Some(v) = patch.rate_limit_per_minute {
        settings.rate_limit_per_minute = v;
    }
    if let Some(v) = patch.rotation_default_days {
        settings.rotation_default_days = v;
    }
    if let Some(v) = patch.max_lifetime_days {
        settings.max_lifetime_days = v;
    }
    s.set_settings(settings);
    Ok(Json(settings).into_response())
}
