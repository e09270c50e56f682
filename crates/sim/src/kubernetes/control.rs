//! The Kubernetes simulator's control API (tests and rehearsals only, no auth):
//!
//! | Request | Effect |
//! | --- | --- |
//! | `POST /_sim/namespaces` `{"name"}` | 201 |
//! | `POST /_sim/tokens` [`KubeTokenSeed`] | 201 `{"token"}` (the bearer value) |
//! | `POST /_sim/anonymous` `{"namespaces":[..]\|null}` | 204; requests without credentials act as system:anonymous there |
//! | `POST /_sim/secrets` [`KubeSecretSeed`] (values in clear) | 201 `{"resourceVersion"}` |
//! | `GET /_sim/secrets/:ns/:name` | [`KubeSecretState`](super::KubeSecretState), values in clear |
//! | `POST /_sim/cronjobs` [`KubeCronJobSeed`] | 201 `{"uid"}` |
//! | `POST /_sim/deployments` [`KubeDeploymentSeed`] | 201 `{"uid"}` |
//! | `POST /_sim/cronjobs/:ns/:name/behaviour` [`KubeJobBehaviour`] | 204; Jobs created from it from now on run it by itself |
//! | `DELETE /_sim/cronjobs/:ns/:name/behaviour` | 204; its Jobs wait for `finish` again |
//! | `POST /_sim/jobs/:ns/:name/finish` `{"outcome":"complete"\|"failed","reason","message","secrets":[KubeSecretSeed]}` | 204 |
//! | `POST /_sim/deployments/:ns/:name/rollout` `{"outcome":"complete"\|"deadline_exceeded"}` | 204; a complete rollout replaces pods of an older template |
//! | `POST /_sim/deployments/:ns/:name/auto_rollout` `{"delay_ms":N\|null}` | 204; rolls out by itself N ms after each template change (`null`: off) |
//! | `GET /_sim/deployments/:ns/:name/pods` | `[`[`KubePodState`](super::KubePodState)`]`: `{"name","phase","generation","template_hash","env":[{"container","env","secret","key","sha256"}]}`, digests only |
//! | `GET /_sim/state` | [`KubernetesSnapshot`](super::KubernetesSnapshot) |
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

use super::{
    JobOutcome, KubeCronJobSeed, KubeDeploymentSeed, KubeJobBehaviour, KubeSecretSeed,
    KubeTokenSeed, KubernetesState, RolloutOutcome,
};
use crate::control::{ControlError, parse_json};
use crate::error::SimError;

pub(crate) fn routes() -> Router<KubernetesState> {
    Router::new()
        .route("/_sim/namespaces", post(add_namespace))
        .route("/_sim/tokens", post(add_token))
        .route("/_sim/anonymous", post(allow_anonymous))
        .route("/_sim/secrets", post(put_secret))
        .route("/_sim/secrets/{ns}/{name}", get(show_secret))
        .route("/_sim/cronjobs", post(add_cronjob))
        .route("/_sim/deployments", post(add_deployment))
        .route(
            "/_sim/cronjobs/{ns}/{name}/behaviour",
            post(set_behaviour).delete(clear_behaviour),
        )
        .route("/_sim/jobs/{ns}/{name}/finish", post(finish_job))
        .route("/_sim/deployments/{ns}/{name}/rollout", post(rollout))
        .route(
            "/_sim/deployments/{ns}/{name}/auto_rollout",
            post(auto_rollout),
        )
        .route("/_sim/deployments/{ns}/{name}/pods", get(deployment_pods))
        .route("/_sim/state", get(state))
}

fn refused(e: SimError) -> ControlError {
    let status = match e {
        SimError::Unknown { .. } => StatusCode::NOT_FOUND,
        _ => StatusCode::BAD_REQUEST,
    };
    ControlError::new(status, e.to_string())
}

#[derive(Deserialize)]
struct NamespaceBody {
    name: String,
}

async fn add_namespace(
    State(s): State<KubernetesState>,
    body: Bytes,
) -> Result<StatusCode, ControlError> {
    let body = parse_json::<NamespaceBody>(&body)?;
    s.add_namespace(&body.name);
    Ok(StatusCode::CREATED)
}

async fn add_token(
    State(s): State<KubernetesState>,
    body: Bytes,
) -> Result<Response, ControlError> {
    let token = s
        .add_token(parse_json::<KubeTokenSeed>(&body)?)
        .map_err(refused)?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "token": token.expose() })),
    )
        .into_response())
}

#[derive(Deserialize)]
struct AnonymousBody {
    #[serde(default)]
    namespaces: Option<Vec<String>>,
}

async fn allow_anonymous(
    State(s): State<KubernetesState>,
    body: Bytes,
) -> Result<StatusCode, ControlError> {
    let body = parse_json::<AnonymousBody>(&body)?;
    s.allow_anonymous(body.namespaces);
    Ok(StatusCode::NO_CONTENT)
}

async fn put_secret(
    State(s): State<KubernetesState>,
    body: Bytes,
) -> Result<Response, ControlError> {
    let rv = s
        .put_secret(parse_json::<KubeSecretSeed>(&body)?)
        .map_err(refused)?;
    Ok((StatusCode::CREATED, Json(json!({ "resourceVersion": rv }))).into_response())
}

async fn show_secret(
    State(s): State<KubernetesState>,
    Path((ns, name)): Path<(String, String)>,
) -> Result<Response, ControlError> {
    match s.secret(&ns, &name) {
        Some(secret) => Ok(Json(secret).into_response()),
        None => Err(ControlError::new(
            StatusCode::NOT_FOUND,
            format!("there is no secret {ns}/{name}"),
        )),
    }
}

async fn add_cronjob(
    State(s): State<KubernetesState>,
    body: Bytes,
) -> Result<Response, ControlError> {
    let uid = s
        .add_cronjob(parse_json::<KubeCronJobSeed>(&body)?)
        .map_err(refused)?;
    Ok((StatusCode::CREATED, Json(json!({ "uid": uid }))).into_response())
}

async fn add_deployment(
    State(s): State<KubernetesState>,
    body: Bytes,
) -> Result<Response, ControlError> {
    let uid = s
        .add_deployment(parse_json::<KubeDeploymentSeed>(&body)?)
        .map_err(refused)?;
    Ok((StatusCode::CREATED, Json(json!({ "uid": uid }))).into_response())
}

#[derive(Deserialize)]
struct FinishBody {
    #[serde(flatten)]
    outcome: JobOutcome,
    #[serde(default)]
    secrets: Vec<KubeSecretSeed>,
}

async fn finish_job(
    State(s): State<KubernetesState>,
    Path((ns, name)): Path<(String, String)>,
    body: Bytes,
) -> Result<StatusCode, ControlError> {
    let body = parse_json::<FinishBody>(&body)?;
    s.finish_job(&ns, &name, body.outcome, body.secrets)
        .map_err(refused)?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
struct RolloutBody {
    outcome: RolloutOutcome,
}

async fn rollout(
    State(s): State<KubernetesState>,
    Path((ns, name)): Path<(String, String)>,
    body: Bytes,
) -> Result<StatusCode, ControlError> {
    let body = parse_json::<RolloutBody>(&body)?;
    s.advance_rollout(&ns, &name, body.outcome)
        .map_err(refused)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn set_behaviour(
    State(s): State<KubernetesState>,
    Path((ns, name)): Path<(String, String)>,
    body: Bytes,
) -> Result<StatusCode, ControlError> {
    let behaviour = parse_json::<KubeJobBehaviour>(&body)?;
    s.set_cronjob_behaviour(&ns, &name, behaviour)
        .map_err(refused)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn clear_behaviour(
    State(s): State<KubernetesState>,
    Path((ns, name)): Path<(String, String)>,
) -> StatusCode {
    s.clear_cronjob_behaviour(&ns, &name);
    StatusCode::NO_CONTENT
}

#[derive(Deserialize)]
struct AutoRolloutBody {
    #[serde(default)]
    delay_ms: Option<u64>,
}

async fn auto_rollout(
    State(s): State<KubernetesState>,
    Path((ns, name)): Path<(String, String)>,
    body: Bytes,
) -> Result<StatusCode, ControlError> {
    let body = parse_json::<AutoRolloutBody>(&body)?;
    s.set_auto_rollout(&ns, &name, body.delay_ms)
        .map_err(refused)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn deployment_pods(
    State(s): State<KubernetesState>,
    Path((ns, name)): Path<(String, String)>,
) -> Result<Response, ControlError> {
    let pods = s.deployment_pods(&ns, &name).map_err(refused)?;
    Ok(Json(pods).into_response())
}

async fn state(State(s): State<KubernetesState>) -> Response {
    Json(s.snapshot()).into_response()
}
