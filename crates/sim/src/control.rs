//! The test-control side every simulator shares: the request log, the fault
//! gate in front of the provider API (injected failures, rate limits and
//! request gates), and the `/_sim/fail`, `/_sim/rate_limit`, `/_sim/gates`
//! and `/_sim/requests` endpoints.
//!
//! Everything under `/_sim/` is for tests and rehearsals only: it needs no
//! authentication, is never logged, and is never subject to injected faults.

use axum::body::Bytes;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::fail::{FailRule, Faults, Injected, RateLimit};
use crate::gate::{self as gates, GateRule, Gates, Release};

/// The path prefix of the control API.
pub const CONTROL_PREFIX: &str = "/_sim";

/// One provider API request the simulator received.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RequestRecord {
    pub method: String,
    /// The path without the query string.
    pub path: String,
    /// When it arrived, in Unix milliseconds: lets a test see that clients
    /// held back after a 429.
    #[serde(default)]
    pub at_ms: u64,
}

/// Two records are the same request whenever they arrived: tests compare
/// the requests of two runs.
impl PartialEq for RequestRecord {
    fn eq(&self, other: &RequestRecord) -> bool {
        self.method == other.method && self.path == other.path
    }
}

impl Eq for RequestRecord {}

/// Request log and pending faults of one simulator.
#[derive(Debug, Default)]
pub(crate) struct Control {
    pub(crate) faults: Faults,
    pub(crate) log: Vec<RequestRecord>,
    pub(crate) gates: Gates,
}

/// A simulator state that carries a [`Control`].
pub(crate) trait SimState: Clone + Send + Sync + 'static {
    fn with_control<R>(&self, f: impl FnOnce(&mut Control) -> R) -> R;

    /// The body of an injected error, in the provider's own shape, so a
    /// plugin's error parsing is tried as the real provider would try it.
    /// GitLab's `{"message": ...}` unless the provider says otherwise.
    fn error_body(status: StatusCode, message: &str) -> serde_json::Value {
        let _ = status;
        json!({ "message": message })
    }
}

/// How one simulator shapes an error body.
type ErrorBody = fn(StatusCode, &str) -> serde_json::Value;

/// Adds the control-side methods shared by every simulator state to `$state`.
macro_rules! control_methods {
    ($state:ty) => {
        impl $state {
            /// Makes matching provider requests fail (see [`FailRule`](crate::FailRule)).
            pub fn fail(&self, rule: $crate::FailRule) {
                $crate::control::SimState::with_control(self, |c| c.faults.add(rule));
            }

            /// Answers the next `times` provider requests with 429 and
            /// `Retry-After: retry_after`.
            pub fn rate_limit(&self, times: u32, retry_after: u64) {
                $crate::control::SimState::with_control(self, |c| {
                    c.faults
                        .set_rate_limit($crate::RateLimit { times, retry_after })
                });
            }

            /// Drops every pending fail rule and rate limit.
            pub fn clear_faults(&self) {
                $crate::control::SimState::with_control(self, |c| c.faults.clear());
            }

            /// Every provider API request received so far, oldest first.
            pub fn requests(&self) -> Vec<$crate::RequestRecord> {
                $crate::control::SimState::with_control(self, |c| c.log.clone())
            }

            /// Holds the `nth` provider request matching `method` and
            /// `path_prefix` (counted from now, 1-based) when it arrives,
            /// until the returned [`Gate`](crate::Gate) is released or dropped.
            pub fn gate(&self, method: &str, path_prefix: &str, nth: u32) -> $crate::Gate {
                let rule = $crate::GateRule {
                    method: method.to_owned(),
                    path_prefix: path_prefix.to_owned(),
                    nth,
                };
                $crate::control::SimState::with_control(self, |c| c.gates.add(rule))
            }

            /// Forgets the request log.
            pub fn clear_requests(&self) {
                $crate::control::SimState::with_control(self, |c| c.log.clear());
            }
        }
    };
}
pub(crate) use control_methods;

/// Middleware in front of the provider API: logs the request, holds it while a
/// request gate says so, then answers it with an injected fault if one is
/// pending.
pub(crate) async fn gate<S: SimState>(
    State(state): State<S>,
    req: Request,
    next: Next,
) -> Response {
    let path = req.uri().path().to_owned();
    if path == CONTROL_PREFIX || path.starts_with("/_sim/") {
        return next.run(req).await;
    }
    let method = req.method().as_str().to_owned();
    let (fired, injected) = state.with_control(|c| {
        c.log.push(RequestRecord {
            method: method.clone(),
            path: path.clone(),
            at_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or_default(),
        });
        let fired = c.gates.arrive(&method, &path);
        // A held request meets the faults when it is let through, not now.
        let injected = if fired.is_empty() {
            c.faults.take(&method, &path)
        } else {
            None
        };
        (fired, injected)
    });
    if !fired.is_empty() {
        let fired_here = fired.clone();
        // On a task of its own: when the client dies while the request is
        // held, the server drops this future, but a request released with
        // `Process` must still reach the provider.
        let held = tokio::spawn(async move {
            let response = match gates::decide(&fired).await {
                Release::Drop => dropped_response(S::error_body),
                Release::Process => {
                    let injected = state.with_control(|c| c.faults.take(&method, &path));
                    answer(injected, req, next, S::error_body).await
                }
            };
            for gate in &fired {
                gate.mark_finished();
            }
            response
        });
        let waiting = Abandoned(Some(fired_here));
        let response = held
            .await
            .unwrap_or_else(|_| dropped_response(S::error_body));
        waiting.disarm();
        return response;
    }
    answer(injected, req, next, S::error_body).await
}

/// The provider's answer to `req`, or the injected fault instead; a fault
/// marked `after_processing` lets the provider act first and discards what
/// it answered.
async fn answer(
    injected: Option<Injected>,
    req: Request,
    next: Next,
    error_body: ErrorBody,
) -> Response {
    match injected {
        None => next.run(req).await,
        Some(
            injected @ Injected::Failed {
                after_processing: true,
                ..
            },
        ) => {
            let _lost = next.run(req).await;
            injected_response(injected, error_body)
        }
        Some(injected) => injected_response(injected, error_body),
    }
}

/// Marks the gates of a held request abandoned when the server drops the
/// future that waits for it before the answer: the client went away. A
/// test waits for that instead of guessing how long the server takes.
struct Abandoned(Option<Vec<std::sync::Arc<gates::GateShared>>>);

impl Abandoned {
    /// The answer was made; the client was still there for it.
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for Abandoned {
    fn drop(&mut self) {
        for gate in self.0.iter().flatten() {
            gate.mark_abandoned();
        }
    }
}

/// The answer to a request a gate dropped: the provider never saw it.
fn dropped_response(error_body: ErrorBody) -> Response {
    let status = StatusCode::SERVICE_UNAVAILABLE;
    (status, Json(error_body(status, &status_line(status)))).into_response()
}

fn injected_response(injected: Injected, error_body: ErrorBody) -> Response {
    match injected {
        Injected::RateLimited { retry_after } => {
            let mut response = (
                StatusCode::TOO_MANY_REQUESTS,
                [(header::CONTENT_TYPE, "text/plain")],
                "Retry later",
            )
                .into_response();
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
            response
        }
        Injected::Failed {
            status,
            retry_after,
            message,
            ..
        } => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let message = message.unwrap_or_else(|| status_line(status));
            let mut response = (status, Json(error_body(status, &message))).into_response();
            if let Some(seconds) = retry_after {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
            }
            response
        }
    }
}

/// "404 Not Found", "500 Internal Server Error", …
pub(crate) fn status_line(status: StatusCode) -> String {
    match status.canonical_reason() {
        Some(reason) => format!("{} {reason}", status.as_u16()),
        None => status.as_u16().to_string(),
    }
}

/// The control endpoints every simulator has.
pub(crate) fn routes<S: SimState>() -> Router<S> {
    Router::new()
        .route(
            "/_sim/fail",
            post(add_fail::<S>)
                .get(list_fail::<S>)
                .delete(clear_fail::<S>),
        )
        .route("/_sim/rate_limit", post(set_rate_limit::<S>))
        .route(
            "/_sim/requests",
            get(list_requests::<S>).delete(clear_requests::<S>),
        )
        .route("/_sim/gates", post(add_gate::<S>))
        .route("/_sim/gates/{id}", get(show_gate::<S>))
        .route("/_sim/gates/{id}/release", post(release_gate::<S>))
}

async fn add_fail<S: SimState>(
    State(state): State<S>,
    body: Bytes,
) -> Result<StatusCode, ControlError> {
    let rule = parse_json::<FailRule>(&body)?;
    state.with_control(|c| c.faults.add(rule));
    Ok(StatusCode::NO_CONTENT)
}

async fn list_fail<S: SimState>(State(state): State<S>) -> Response {
    Json(state.with_control(|c| c.faults.pending_rules())).into_response()
}

async fn clear_fail<S: SimState>(State(state): State<S>) -> Response {
    state.with_control(|c| c.faults.clear());
    StatusCode::NO_CONTENT.into_response()
}

async fn set_rate_limit<S: SimState>(
    State(state): State<S>,
    body: Bytes,
) -> Result<StatusCode, ControlError> {
    let limit = parse_json::<RateLimit>(&body)?;
    state.with_control(|c| c.faults.set_rate_limit(limit));
    Ok(StatusCode::NO_CONTENT)
}

async fn add_gate<S: SimState>(
    State(state): State<S>,
    body: Bytes,
) -> Result<Response, ControlError> {
    let rule = parse_json::<GateRule>(&body)?;
    // Served gates live until released over HTTP: no handle releases them
    // on drop.
    let id = state.with_control(|c| c.gates.arm(rule));
    Ok((StatusCode::CREATED, Json(json!({ "id": id }))).into_response())
}

fn find_gate<S: SimState>(
    state: &S,
    id: u64,
) -> Result<std::sync::Arc<gates::GateShared>, ControlError> {
    state.with_control(|c| c.gates.get(id)).ok_or_else(|| {
        ControlError::new(
            StatusCode::NOT_FOUND,
            format!("there is no gate {id}; set one with POST /_sim/gates"),
        )
    })
}

async fn show_gate<S: SimState>(
    State(state): State<S>,
    Path(id): Path<u64>,
) -> Result<Response, ControlError> {
    let gate = find_gate(&state, id)?;
    Ok(Json(json!({
        "id": id,
        "arrived": gate.has_arrived(),
        "finished": gate.has_finished(),
    }))
    .into_response())
}

#[derive(Deserialize)]
struct ReleaseBody {
    mode: Release,
}

async fn release_gate<S: SimState>(
    State(state): State<S>,
    Path(id): Path<u64>,
    body: Bytes,
) -> Result<StatusCode, ControlError> {
    let gate = find_gate(&state, id)?;
    let release = parse_json::<ReleaseBody>(&body)?;
    gate.release(release.mode);
    Ok(StatusCode::NO_CONTENT)
}

async fn list_requests<S: SimState>(State(state): State<S>) -> Response {
    Json(state.with_control(|c| c.log.clone())).into_response()
}

async fn clear_requests<S: SimState>(State(state): State<S>) -> Response {
    state.with_control(|c| c.log.clear());
    StatusCode::NO_CONTENT.into_response()
}

/// Parses a control request body. The error names the position and kind of
/// the problem but never quotes the input, which may hold a token value.
pub(crate) fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ControlError> {
    let body = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}".as_slice()
    } else {
        body
    };
    serde_json::from_slice(body).map_err(|e| ControlError {
        status: StatusCode::BAD_REQUEST,
        message: format!(
            "invalid control request body: {}; check the field names and types",
            describe_json_error(&e)
        ),
    })
}

/// serde_json's message, except that it quotes offending values ("invalid
/// type: string \"glpat-...\""), which may be secrets: those keep only what
/// was expected and where.
fn describe_json_error(e: &serde_json::Error) -> String {
    let text = e.to_string();
    let quotes_input = [
        "invalid type",
        "invalid value",
        "invalid length",
        "unknown variant",
    ]
    .iter()
    .any(|p| text.starts_with(p));
    if !quotes_input {
        return text;
    }
    match text.find("expected") {
        Some(at) => format!("a value has the wrong type or content ({})", &text[at..]),
        None => format!(
            "a value has the wrong type or content at line {} column {}",
            e.line(),
            e.column()
        ),
    }
}

/// A control API error, answered as `{"message": "..."}`.
#[derive(Debug)]
pub(crate) struct ControlError {
    pub(crate) status: StatusCode,
    pub(crate) message: String,
}

impl ControlError {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> ControlError {
        ControlError {
            status,
            message: message.into(),
        }
    }
}

impl IntoResponse for ControlError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({ "message": self.message }))).into_response()
    }
}
