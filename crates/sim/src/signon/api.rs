//! The part of Signon that clients reach: `GET /user.json`, the token
//! check gds-sso makes for every API request a consuming app receives, and
//! the `/metrics` text with the token-expiry gauge the alert reads.

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::SignonState;
use super::model::{Db, METRICS_CACHE, SIGNIN, parameterize};

pub(super) fn routes() -> Router<SignonState> {
    Router::new()
        .route("/user.json", get(user_json))
        .route("/metrics", get(metrics))
}

#[derive(Deserialize)]
struct UserQuery {
    client_id: Option<String>,
}

/// Every refusal of `/user.json`: Doorkeeper's `head :unauthorized`, with
/// nothing in the body to tell the cases apart.
fn unauthorized() -> Response {
    StatusCode::UNAUTHORIZED.into_response()
}

/// The bearer token of `Authorization: Bearer <token>`.
pub(super) fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

async fn user_json(
    State(state): State<SignonState>,
    headers: HeaderMap,
    Query(query): Query<UserQuery>,
) -> Response {
    let Some(value) = bearer(&headers) else {
        return unauthorized();
    };
    match look_up(&state.lock(), value, query.client_id.as_deref()) {
        Some(user) => Json(json!({ "user": user })).into_response(),
        None => unauthorized(),
    }
}

/// What `/user.json` answers for a token: the user as
/// `UserOAuthPresenter` shows it, or `None` for every 401 case.
pub(super) fn look_up(db: &Db, value: &str, client_id: Option<&str>) -> Option<Value> {
    let now = db.now();
    let token = db.token_by_value(value).filter(|t| t.accessible(now))?;
    let user = db.users.get(&token.user_id)?;
    let app = db.applications.get(&token.application_id)?;
    // Signon compares client_id only when it is given (its controller and
    // tests): without it any live token is answered for its own app.
    if client_id.is_some_and(|client_id| client_id != app.oauth_id) {
        return None;
    }
    let permissions = db.permissions_of(user.id, app.id);
    if !permissions.iter().any(|p| p == SIGNIN) {
        return None;
    }
    // UserOAuthPresenter: a suspended user keeps answering, with no
    // permissions and `disabled`.
    let permissions = if user.suspended {
        Vec::new()
    } else {
        permissions
    };
    Some(json!({
        "uid": user.uid,
        "name": user.name,
        "email": user.email,
        "permissions": permissions,
        "organisation_slug": user.organisation_slug,
        "organisation_content_id": user.organisation_content_id,
        "disabled": user.suspended,
    }))
}

const GAUGE: &str = "signon_api_user_token_expiry_timestamp_seconds";

/// The collector's gauge: for every API user (suspended ones too) and
/// every unrevoked token, expired ones included, one observation labelled
/// with the user's email and the parameterized application name. Tokens
/// of the same user and application share their labels, so each overwrites
/// the one before and the series shows the newest token's expiry, as
/// prometheus_exporter's gauge does. Cached for an hour.
pub(super) fn gauge_text(db: &mut Db) -> String {
    let now = db.now();
    if let Some((at, text)) = &db.metrics_cache
        && now >= *at
        && now - *at < METRICS_CACHE
    {
        return text.clone();
    }
    let mut series: std::collections::BTreeMap<(String, String), i64> =
        std::collections::BTreeMap::new();
    for token in db.tokens.values().filter(|t| t.revoked_at.is_none()) {
        let (Some(user), Some(app)) = (
            db.users.get(&token.user_id),
            db.applications.get(&token.application_id),
        ) else {
            continue;
        };
        // Tokens are visited in creation order, so the last one wins.
        series.insert(
            (user.email.clone(), parameterize(&app.name)),
            token.expires_at().unix_timestamp(),
        );
    }
    let mut text =
        format!("# HELP {GAUGE} Timestamp when API User token expires\n# TYPE {GAUGE} gauge\n");
    for ((api_user, application), expires_at) in series {
        text.push_str(&format!(
            "{GAUGE}{{api_user=\"{}\",application=\"{}\"}} {expires_at}\n",
            label(&api_user),
            label(&application)
        ));
    }
    db.metrics_cache = Some((now, text.clone()));
    text
}

/// A Prometheus label value: backslash, quote and newline escaped.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

async fn metrics(State(state): State<SignonState>) -> Response {
    let text = gauge_text(&mut state.lock());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}
