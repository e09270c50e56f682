//! The GitHub simulator's control API (tests and rehearsals only, no auth):
//!
//! | Request | Effect |
//! | --- | --- |
//! | `POST /_sim/users` [`GitHubUserSeed`] | 201 `{"id"}` |
//! | `POST /_sim/orgs` [`GitHubOrgSeed`] | 201 `{"id"}` |
//! | `POST /_sim/repos` [`GitHubRepoSeed`] | 201 `{"id"}` |
//! | `POST /_sim/repos/:owner/:repo/environments` `{"name"}` | 204 |
//! | `POST /_sim/tokens` [`GitHubTokenSeed`] | 201 [`SeededSecret`](crate::SeededSecret) (value included), as the person on the settings page |
//! | `POST /_sim/tokens/:id/revoke` | 204, as the person on the settings page |
//! | `GET /_sim/tokens/:id` | [`GitHubTokenState`](super::GitHubTokenState), value included |
//! | `POST /_sim/rotate_key` [`SecretScope`] | 200 the scope's new public key |
//! | `GET /_sim/state` | [`GitHubSnapshot`](super::GitHubSnapshot), secrets' plaintext included |
//! | `GET`/`POST /_sim/today` `{"date":"YYYY-MM-DD"\|null}` | the simulated date |
//! | `POST /_sim/hourly_limit` `{"limit":N\|null}` | 204; every user's hourly request budget |
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
    GitHubOrgSeed, GitHubRepoSeed, GitHubState, GitHubTokenSeed, GitHubUserSeed, SecretScope,
};
use crate::clock::{date_opt, date_string};
use crate::control::{ControlError, parse_json};
use crate::error::SimError;

pub(crate) fn routes() -> Router<GitHubState> {
    Router::new()
        .route("/_sim/users", post(add_user))
        .route("/_sim/orgs", post(add_org))
        .route("/_sim/repos", post(add_repo))
        .route(
            "/_sim/repos/{owner}/{repo}/environments",
            post(add_environment),
        )
        .route("/_sim/tokens", post(add_token))
        .route("/_sim/tokens/{id}", get(show_token))
        .route("/_sim/tokens/{id}/revoke", post(revoke_token))
        .route("/_sim/rotate_key", post(rotate_key))
        .route("/_sim/state", get(state))
        .route("/_sim/today", get(today).post(set_today))
        .route("/_sim/hourly_limit", post(set_hourly_limit))
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

async fn add_user(State(s): State<GitHubState>, body: Bytes) -> Result<Response, ControlError> {
    let seed: GitHubUserSeed = parse_json(&body)?;
    let id = s.add_user(seed).map_err(refused)?;
    Ok(created(json!({ "id": id })))
}

async fn add_org(State(s): State<GitHubState>, body: Bytes) -> Result<Response, ControlError> {
    let seed: GitHubOrgSeed = parse_json(&body)?;
    let id = s.add_org(seed).map_err(refused)?;
    Ok(created(json!({ "id": id })))
}

async fn add_repo(State(s): State<GitHubState>, body: Bytes) -> Result<Response, ControlError> {
    let seed: GitHubRepoSeed = parse_json(&body)?;
    let id = s.add_repo(seed).map_err(refused)?;
    Ok(created(json!({ "id": id })))
}

#[derive(Deserialize)]
struct EnvironmentBody {
    name: String,
}

async fn add_environment(
    State(s): State<GitHubState>,
    Path((owner, repo)): Path<(String, String)>,
    body: Bytes,
) -> Result<StatusCode, ControlError> {
    let body: EnvironmentBody = parse_json(&body)?;
    s.add_environment(&owner, &repo, &body.name)
        .map_err(refused)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn add_token(State(s): State<GitHubState>, body: Bytes) -> Result<Response, ControlError> {
    let seed: GitHubTokenSeed = parse_json(&body)?;
    Ok(created(s.add_token(seed).map_err(refused)?))
}

async fn show_token(
    State(s): State<GitHubState>,
    Path(id): Path<u64>,
) -> Result<Response, ControlError> {
    s.token(id)
        .map(|t| Json(t).into_response())
        .ok_or_else(|| ControlError::new(StatusCode::NOT_FOUND, format!("no token {id}")))
}

async fn revoke_token(
    State(s): State<GitHubState>,
    Path(id): Path<u64>,
) -> Result<StatusCode, ControlError> {
    s.revoke_token(id).map_err(refused)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn rotate_key(State(s): State<GitHubState>, body: Bytes) -> Result<Response, ControlError> {
    let scope: SecretScope = parse_json(&body)?;
    let key = s.rotate_public_key(&scope).map_err(refused)?;
    Ok(Json(key).into_response())
}

async fn state(State(s): State<GitHubState>) -> Response {
    Json(s.snapshot()).into_response()
}

async fn today(State(s): State<GitHubState>) -> Response {
    Json(json!({ "today": date_string(s.today()) })).into_response()
}

#[derive(Deserialize)]
struct TodayBody {
    #[serde(default, with = "date_opt")]
    date: Option<Date>,
}

async fn set_today(State(s): State<GitHubState>, body: Bytes) -> Result<StatusCode, ControlError> {
    let body: TodayBody = parse_json(&body)?;
    s.set_today(body.date);
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
struct LimitBody {
    #[serde(default)]
    limit: Option<u32>,
}

async fn set_hourly_limit(
    State(s): State<GitHubState>,
    body: Bytes,
) -> Result<StatusCode, ControlError> {
    let body: LimitBody = parse_json(&body)?;
    s.set_hourly_limit(body.limit);
    Ok(StatusCode::NO_CONTENT)
}
