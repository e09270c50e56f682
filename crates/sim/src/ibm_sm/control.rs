//! The IBM Secrets Manager simulator's control API (tests and rehearsals
//! only, no auth):
//!
//! | Request | Effect |
//! | --- | --- |
//! | `POST /_sim/api_keys` [`IbmApiKeySeed`] | 201 `{"iam_id"}`: a key IAM accepts |
//! | `POST /_sim/secret_groups` [`IbmGroupSeed`] | 201 `{"id"}` |
//! | `POST /_sim/secrets` [`IbmSecretSeed`] | 201 `{"id"}` |
//! | `GET /_sim/secrets/:id` | [`IbmSecretState`](super::IbmSecretState), every version's value in clear |
//! | `POST /_sim/secrets/:id/locks` `{"name","version"?}` | 204; locks a version (default `current`) |
//! | `DELETE /_sim/secrets/:id/locks` | 204; removes every lock of the secret |
//! | `GET /_sim/state` | [`IbmSmSnapshot`](super::IbmSmSnapshot), values and access tokens in clear |
//! | `POST /_sim/clock` `{"advance_seconds"?, "token_lifetime_seconds"?}` | 204; moves the account's clock, sets the lifetime of tokens issued from now on |
//! | `POST /_sim/instances` `{"name"}` | 201 `{"name","base_url","instance_id"}`: another instance of the same account on a port of its own |
//! | `GET /_sim/instances` | `[{"name","base_url"}]` |
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

use super::{IbmApiKeySeed, IbmGroupSeed, IbmSecretSeed, IbmSmState};
use crate::control::{ControlError, parse_json};
use crate::error::SimError;

pub(crate) fn routes() -> Router<IbmSmState> {
    Router::new()
        .route("/_sim/api_keys", post(add_api_key))
        .route("/_sim/secret_groups", post(add_group))
        .route("/_sim/secrets", post(add_secret))
        .route("/_sim/secrets/{id}", get(show_secret))
        .route(
            "/_sim/secrets/{id}/locks",
            post(add_lock).delete(clear_locks),
        )
        .route("/_sim/state", get(state))
        .route("/_sim/clock", post(set_clock))
        .route("/_sim/instances", post(add_instance).get(list_instances))
}

fn refused(error: SimError) -> ControlError {
    let status = match error {
        SimError::Unknown { .. } => StatusCode::NOT_FOUND,
        SimError::DuplicateTokenValue { .. } => StatusCode::CONFLICT,
        SimError::InvalidSeed { .. } => StatusCode::BAD_REQUEST,
    };
    ControlError::new(status, error.to_string())
}

fn created(body: serde_json::Value) -> Response {
    (StatusCode::CREATED, Json(body)).into_response()
}

async fn add_api_key(State(s): State<IbmSmState>, body: Bytes) -> Result<Response, ControlError> {
    let seed: IbmApiKeySeed = parse_json(&body)?;
    let iam_id = s.add_api_key(seed).map_err(refused)?;
    Ok(created(json!({ "iam_id": iam_id })))
}

async fn add_group(State(s): State<IbmSmState>, body: Bytes) -> Result<Response, ControlError> {
    let seed: IbmGroupSeed = parse_json(&body)?;
    let id = s.add_group(seed).map_err(refused)?;
    Ok(created(json!({ "id": id })))
}

async fn add_secret(State(s): State<IbmSmState>, body: Bytes) -> Result<Response, ControlError> {
    let seed: IbmSecretSeed = parse_json(&body)?;
    let id = s.add_secret(seed).map_err(refused)?;
    Ok(created(json!({ "id": id })))
}

async fn show_secret(
    State(s): State<IbmSmState>,
    Path(id): Path<String>,
) -> Result<Response, ControlError> {
    s.secret(&id)
        .map(|secret| Json(secret).into_response())
        .ok_or_else(|| ControlError::new(StatusCode::NOT_FOUND, format!("no secret {id}")))
}

#[derive(Deserialize)]
struct LockBody {
    name: String,
    #[serde(default)]
    version: Option<String>,
}

async fn add_lock(
    State(s): State<IbmSmState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<StatusCode, ControlError> {
    let body: LockBody = parse_json(&body)?;
    s.add_lock(&id, body.version.as_deref(), &body.name)
        .map_err(refused)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn clear_locks(
    State(s): State<IbmSmState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ControlError> {
    s.clear_locks(&id).map_err(refused)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn state(State(s): State<IbmSmState>) -> Response {
    Json(s.snapshot()).into_response()
}

#[derive(Deserialize)]
struct ClockBody {
    #[serde(default)]
    advance_seconds: Option<i64>,
    #[serde(default)]
    token_lifetime_seconds: Option<i64>,
}

async fn set_clock(State(s): State<IbmSmState>, body: Bytes) -> Result<StatusCode, ControlError> {
    let body: ClockBody = parse_json(&body)?;
    if let Some(seconds) = body.advance_seconds {
        s.advance_clock(seconds);
    }
    if let Some(seconds) = body.token_lifetime_seconds {
        s.set_token_lifetime(seconds);
    }
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
struct InstanceBody {
    name: String,
}

async fn add_instance(State(s): State<IbmSmState>, body: Bytes) -> Result<Response, ControlError> {
    let body: InstanceBody = parse_json(&body)?;
    if s.spawned_instances().iter().any(|(n, _)| *n == body.name) {
        return Err(ControlError::new(
            StatusCode::CONFLICT,
            format!("an instance named {} is already running", body.name),
        ));
    }
    let (base_url, instance_id) = s.spawn_instance(&body.name).map_err(|e| {
        ControlError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot start another instance: {e}"),
        )
    })?;
    Ok(created(json!({
        "name": body.name,
        "base_url": base_url,
        "instance_id": instance_id,
    })))
}

async fn list_instances(State(s): State<IbmSmState>) -> Response {
    let list: Vec<_> = s
        .spawned_instances()
        .into_iter()
        .map(|(name, base_url)| json!({ "name": name, "base_url": base_url }))
        .collect();
    Json(list).into_response()
}
