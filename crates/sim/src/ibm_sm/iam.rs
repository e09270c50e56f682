//! IAM's token endpoint, `POST /identity/token` with the API key grant
//! (IAM docs "Generating an IBM Cloud IAM token by using an API key";
//! go-sdk-core `IamTokenServerResponse`).
//!
//! Errors use IAM's own shape, `{errorCode, errorMessage}`, not the
//! Secrets Manager one. `BXNIM0415E` ("Provided API key could not be
//! found") is IAM's code for an unknown key; the codes of the other
//! refusals are *inferred*.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use keycycle_secret::SecretValue;
use serde_json::json;
use time::Duration;

use super::IbmSmState;
use super::model::{AccessToken, Iam};
use crate::values::url_safe_token;

const APIKEY_GRANT: &str = "urn:ibm:params:oauth:grant-type:apikey";

pub(crate) fn routes() -> Router<IbmSmState> {
    Router::new().route("/identity/token", post(token))
}

fn iam_error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        Json(json!({
            "errorCode": code,
            "errorMessage": message,
            "context": { "requestId": super::model::uuid() },
        })),
    )
        .into_response()
}

/// Issues an access token for `apikey`: its value, the refresh token, its
/// lifetime and its expiry; `None` for an unknown key.
pub(crate) fn issue(
    iam: &mut Iam,
    apikey: &str,
) -> Option<(SecretValue, SecretValue, i64, time::OffsetDateTime)> {
    let key = iam.api_keys.iter().find(|k| k.value.expose() == apikey)?;
    let (iam_id, account_id) = (key.iam_id.clone(), key.account_id.clone());
    let lifetime = iam.token_lifetime;
    let expires_at = iam.now() + Duration::seconds(lifetime);
    // Real access tokens are JWTs; clients must treat them as opaque, and
    // an opaque value is what a client that parses them deserves to trip on.
    let value = url_safe_token("", 64);
    let refresh = url_safe_token("", 48);
    iam.tokens.push(AccessToken {
        value: value.clone(),
        refresh: refresh.clone(),
        iam_id,
        account_id,
        expires_at,
    });
    Some((value, refresh, lifetime, expires_at))
}

async fn token(State(state): State<IbmSmState>, headers: HeaderMap, body: Bytes) -> Response {
    let form_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if !form_type {
        return iam_error(
            StatusCode::BAD_REQUEST,
            "BXNIM0109E",
            "Property missing or empty. Operation requires a form body with grant_type.",
        );
    }
    let mut grant_type = None;
    let mut apikey = None;
    for (k, v) in url::form_urlencoded::parse(&body) {
        match k.as_ref() {
            "grant_type" => grant_type = Some(v.into_owned()),
            "apikey" => apikey = Some(SecretValue::new(v.into_owned())),
            _ => {}
        }
    }
    match grant_type.as_deref() {
        Some(APIKEY_GRANT) => {}
        Some(_) => {
            return iam_error(
                StatusCode::BAD_REQUEST,
                "BXNIM0104E",
                "Unsupported grant type.",
            );
        }
        None => {
            return iam_error(
                StatusCode::BAD_REQUEST,
                "BXNIM0109E",
                "Property missing or empty. Operation requires grant_type.",
            );
        }
    }
    let Some(apikey) = apikey.filter(|k| !k.is_empty()) else {
        return iam_error(
            StatusCode::BAD_REQUEST,
            "BXNIM0109E",
            "Property missing or empty. Operation requires apikey.",
        );
    };
    let mut iam = state.iam();
    match issue(&mut iam, apikey.expose()) {
        Some((value, refresh, lifetime, expires_at)) => Json(json!({
            "access_token": value.expose(),
            "refresh_token": refresh.expose(),
            "token_type": "Bearer",
            "expires_in": lifetime,
            "expiration": expires_at.unix_timestamp(),
            "scope": "ibm openid",
        }))
        .into_response(),
        None => iam_error(
            StatusCode::BAD_REQUEST,
            "BXNIM0415E",
            "Provided API key could not be found.",
        ),
    }
}
