//! Zendesk endpoints other than webhooks, and the plumbing all share:
//! authentication (API tokens with the idle rule and cut-off, OAuth bearer
//! tokens), scope checks, Zendesk's error shapes and rate-limit headers.

use axum::body::Bytes;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use base64::Engine;
use keycycle_secret::SecretValue;
use serde_json::{Map, Value, json};
use time::Duration;

use super::model::{Client, Db, OauthToken};
use super::{SeededSecret, ZendeskState};
use crate::clock::timestamp;
use crate::values::hex_token;

/// Requests per minute the simulator advertises (Zendesk's Team plan figure
/// would be a guess; this is only what the headers report).
const RATE_LIMIT: u32 = 700;

/// An answer other than success, in one of Zendesk's shapes.
#[derive(Debug)]
pub(crate) enum ApiError {
    /// `{"error":"Couldn't authenticate you"}`.
    Unauthenticated,
    /// `{"error": code, "description": text}` (RecordNotFound, Forbidden, ...).
    Described(StatusCode, &'static str, String),
    /// `{"error":"RecordInvalid","description":"Record validation errors","details":{field:[{description,error}]}}`.
    Invalid(String, String),
    /// JSON:API `{"errors":[{"code","title","detail"}]}` (webhooks).
    Errors(StatusCode, &'static str, String),
    /// The grant endpoint's OAuth errors `{"error","error_description"}`.
    Oauth(StatusCode, &'static str, String),
}

impl ApiError {
    pub(crate) fn not_found() -> ApiError {
        ApiError::Described(StatusCode::NOT_FOUND, "RecordNotFound", "Not found".into())
    }

    pub(crate) fn forbidden(description: impl Into<String>) -> ApiError {
        ApiError::Described(StatusCode::FORBIDDEN, "Forbidden", description.into())
    }

    pub(crate) fn detail(&self) -> String {
        match self {
            ApiError::Unauthenticated => "Couldn't authenticate you".into(),
            ApiError::Described(_, _, d)
            | ApiError::Invalid(_, d)
            | ApiError::Errors(_, _, d)
            | ApiError::Oauth(_, _, d) => d.clone(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, body) = match self {
            ApiError::Unauthenticated => (
                StatusCode::UNAUTHORIZED,
                json!({ "error": "Couldn't authenticate you" }),
            ),
            ApiError::Described(status, error, description) => (
                status,
                json!({ "error": error, "description": description }),
            ),
            ApiError::Invalid(field, description) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                json!({
                    "error": "RecordInvalid",
                    "description": "Record validation errors",
                    "details": { field: [{ "description": description, "error": "InvalidValue" }] },
                }),
            ),
            ApiError::Errors(status, code, detail) => {
                let title = status.canonical_reason().unwrap_or("Error");
                (
                    status,
                    json!({ "errors": [{ "code": code, "title": title, "detail": detail }] }),
                )
            }
            ApiError::Oauth(status, error, description) => (
                status,
                json!({ "error": error, "error_description": description }),
            ),
        };
        (status, Json(body)).into_response()
    }
}

/// Who is calling, and what the credential allows.
#[derive(Clone, Debug)]
pub(crate) struct Caller {
    pub(crate) user_id: u64,
    pub(crate) admin: bool,
    /// `None` for API-token callers (not scope-limited).
    pub(crate) scopes: Option<Vec<String>>,
    pub(crate) oauth_token_id: Option<u64>,
}

/// The resource part of a `<resource>:read|write` scope.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Scope {
    ApiTokens,
    Oauth,
    Apps,
    Webhooks,
}

impl Scope {
    fn name(self) -> &'static str {
        match self {
            Scope::ApiTokens => "api_tokens",
            Scope::Oauth => "oauth",
            Scope::Apps => "apps",
            Scope::Webhooks => "webhooks",
        }
    }
}

/// Authenticates the request, records the use, and checks scope and role.
/// `resource: None` means any valid credential will do (token introspection).
pub(crate) fn authorize(
    state: &ZendeskState,
    method: &Method,
    headers: &HeaderMap,
    resource: Option<Scope>,
) -> Result<Caller, ApiError> {
    let mut db = state.lock();
    db.sweep();
    let caller = authenticate(&mut db, headers)?;
    let Some(resource) = resource else {
        return Ok(caller);
    };
    if let Some(scopes) = &caller.scopes {
        let access = if method == Method::GET {
            "read"
        } else {
            "write"
        };
        let specific = format!("{}:{access}", resource.name());
        if !scopes.iter().any(|s| s == access || *s == specific) {
            // Shape inferred from Zendesk's 403s; the reference gives only
            // the status for calls outside a token's scopes.
            return Err(ApiError::forbidden(format!(
                "You are missing the following required scopes: {access}"
            )));
        }
    }
    if !caller.admin {
        return Err(ApiError::forbidden(
            "You do not have access to this page. Please contact the account owner of this help desk for further help.",
        ));
    }
    Ok(caller)
}

fn authenticate(db: &mut Db, headers: &HeaderMap) -> Result<Caller, ApiError> {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or(ApiError::Unauthenticated)?;
    let (scheme, credential) = authorization
        .trim()
        .split_once(' ')
        .ok_or(ApiError::Unauthenticated)?;
    let now = db.now();
    if scheme.eq_ignore_ascii_case("bearer") {
        let value = credential.trim();
        let id = db
            .oauth_tokens
            .values()
            .find(|t| t.value.expose() == value)
            .filter(|t| db.oauth_usable(t))
            .map(|t| t.id)
            .ok_or(ApiError::Unauthenticated)?;
        let token = db
            .oauth_tokens
            .get_mut(&id)
            .ok_or(ApiError::Unauthenticated)?;
        token.used_at = Some(now);
        let (user_id, scopes) = (token.user_id, token.scopes.clone());
        let admin = db.users.get(&user_id).is_some_and(|u| u.admin);
        return Ok(Caller {
            user_id,
            admin,
            scopes: Some(scopes),
            oauth_token_id: Some(id),
        });
    }
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(ApiError::Unauthenticated);
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(credential.trim())
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or(ApiError::Unauthenticated)?;
    // Email+password ("email:password") was switched off in January 2026:
    // only "{email}/token:{api_token}" is accepted.
    let (user, value) = decoded.split_once(':').ok_or(ApiError::Unauthenticated)?;
    let email = user
        .strip_suffix("/token")
        .ok_or(ApiError::Unauthenticated)?;
    if db.api_tokens_retired() {
        return Err(ApiError::Unauthenticated);
    }
    let (user_id, admin) = db
        .user_by_email(email)
        .map(|u| (u.id, u.admin))
        .ok_or(ApiError::Unauthenticated)?;
    // API tokens belong to the account, not to a user: the email names who
    // the call acts as, and any active token of the account is accepted.
    // The reference is silent on this; it is how Zendesk documents tokens.
    let token = db
        .api_tokens
        .values_mut()
        .find(|t| t.active && t.value.expose() == value)
        .ok_or(ApiError::Unauthenticated)?;
    token.last_used = Some(now);
    Ok(Caller {
        user_id,
        admin,
        scopes: None,
        oauth_token_id: None,
    })
}

/// Parses a JSON body; Zendesk answers malformed JSON with a 400.
pub(crate) fn body_json(body: &[u8]) -> Result<Value, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(json!({}));
    }
    serde_json::from_slice(body).map_err(|_| {
        ApiError::Described(
            StatusCode::BAD_REQUEST,
            "InvalidJSON",
            "The request body is not valid JSON".into(),
        )
    })
}

/// The query string as pairs, percent-decoded.
pub(crate) fn query_pairs(uri: &Uri) -> Vec<(String, String)> {
    url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

pub(crate) fn query_value(uri: &Uri, key: &str) -> Option<String> {
    query_pairs(uri)
        .into_iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v)
}

/// `X-Rate-Limit` and `X-Rate-Limit-Remaining` on every provider response;
/// list endpoints (GETs of collections) add `ratelimit-limit/remaining/reset`.
pub(crate) async fn rate_headers(
    State(state): State<ZendeskState>,
    req: Request,
    next: Next,
) -> Response {
    let path = req.uri().path().to_owned();
    if path.starts_with("/_sim") {
        return next.run(req).await;
    }
    let is_list = req.method() == Method::GET && is_collection(&path);
    let (observed, reset_in) = {
        let mut db = state.lock();
        // Rate accounting runs on the real clock, whatever date is pinned.
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let minute = now.div_euclid(60);
        if db.rate.minute != minute {
            db.rate.minute = minute;
            db.rate.observed = 0;
        }
        db.rate.observed = db.rate.observed.saturating_add(1);
        (db.rate.observed, 60 - now.rem_euclid(60))
    };
    let mut response = next.run(req).await;
    let remaining = if response.status() == StatusCode::TOO_MANY_REQUESTS {
        0
    } else {
        RATE_LIMIT.saturating_sub(observed)
    };
    let headers = response.headers_mut();
    headers.insert("x-rate-limit", HeaderValue::from(RATE_LIMIT));
    headers.insert("x-rate-limit-remaining", HeaderValue::from(remaining));
    if is_list {
        headers.insert("ratelimit-limit", HeaderValue::from(RATE_LIMIT));
        headers.insert("ratelimit-remaining", HeaderValue::from(remaining));
        headers.insert("ratelimit-reset", HeaderValue::from(reset_in));
    }
    response
}

fn is_collection(path: &str) -> bool {
    matches!(
        path.trim_end_matches(".json"),
        "/api/v2/api_tokens"
            | "/api/v2/oauth/clients"
            | "/api/v2/oauth/tokens"
            | "/api/v2/apps/installations"
            | "/api/v2/webhooks"
    )
}

pub(crate) fn routes() -> Router<ZendeskState> {
    Router::new()
        .route(
            "/api/v2/api_tokens",
            get(list_api_tokens).post(create_api_token),
        )
        .route(
            "/api/v2/api_tokens.json",
            get(list_api_tokens).post(create_api_token),
        )
        .route(
            "/api/v2/oauth/clients",
            get(list_clients).post(create_client),
        )
        .route(
            "/api/v2/oauth/clients/{id}",
            get(show_client).put(update_client).delete(delete_client),
        )
        .route(
            "/api/v2/oauth/clients/{id}/generate_secret",
            put(generate_secret),
        )
        .route("/api/v2/oauth/tokens", get(list_tokens).post(create_token))
        .route(
            "/api/v2/oauth/tokens/{id}",
            get(show_token).delete(revoke_token),
        )
        .route("/oauth/tokens", post(grant))
        .route("/api/v2/apps/installations", get(list_installations))
        .route(
            "/api/v2/apps/installations/{id}",
            get(show_installation).put(update_installation),
        )
}

/// `{id}` may carry Zendesk's optional `.json` suffix.
fn numeric_id(raw: &str) -> Result<u64, ApiError> {
    raw.trim_end_matches(".json")
        .parse()
        .map_err(|_| ApiError::not_found())
}

// ---- API tokens -------------------------------------------------------

async fn list_api_tokens(
    State(s): State<ZendeskState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&s, &method, &headers, Some(Scope::ApiTokens))?;
    let include_users = query_value(&uri, "include_users").as_deref() == Some("true");
    let db = s.lock();
    // The list never carries a value: `visible_token` is a prefix. Its
    // length is not documented; four characters reveal little.
    let tokens: Vec<Value> = db
        .api_tokens
        .values()
        .map(|t| {
            json!({
                "id": t.id,
                "description": t.description,
                "active": t.active,
                "created_at": timestamp(t.created_at),
                "updated_at": timestamp(t.updated_at),
                "last_used": t.last_used.map(timestamp),
                "user_id": t.user_id,
                "visible_token": t.value.expose().chars().take(4).collect::<String>(),
            })
        })
        .collect();
    let mut body = json!({ "api_tokens": tokens });
    if include_users {
        let users: Vec<Value> = db
            .users
            .values()
            .filter(|u| db.api_tokens.values().any(|t| t.user_id == u.id))
            .map(|u| json!({ "id": u.id, "name": u.name, "email": u.email }))
            .collect();
        body["users"] = json!(users);
    }
    Ok(Json(body).into_response())
}

/// No documented endpoint creates API tokens, and since 2026-10-27 no
/// account may create them at all. The refusal is a 403 in Zendesk's
/// `{"error","description"}` shape; the exact wording is not documented.
async fn create_api_token(
    State(s): State<ZendeskState>,
    method: Method,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&s, &method, &headers, Some(Scope::ApiTokens))?;
    Err(ApiError::forbidden(
        "API token creation is no longer available; use OAuth access tokens instead",
    ))
}

// ---- OAuth clients ----------------------------------------------------

/// A client as the API shows it; `secret` only when just created or
/// regenerated. Otherwise it is null: the reference says only when it is
/// shown in full, so the simulator shows nothing else.
fn client_json(c: &Client, reveal: bool) -> Value {
    json!({
        "id": c.id,
        "name": c.name,
        "identifier": c.identifier,
        "kind": c.kind,
        "redirect_uri": c.redirect_uri,
        "secret": if reveal { Some(c.secret.expose()) } else { None },
        "global": false,
        "user_id": c.user_id,
        "created_at": timestamp(c.created_at),
        "updated_at": timestamp(c.updated_at),
    })
}

async fn list_clients(
    State(s): State<ZendeskState>,
    method: Method,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&s, &method, &headers, Some(Scope::Oauth))?;
    let db = s.lock();
    let clients: Vec<Value> = db.clients.values().map(|c| client_json(c, false)).collect();
    Ok(Json(json!({ "clients": clients, "next_page": null, "previous_page": null, "count": clients.len() })).into_response())
}

fn client_fields(body: &Value) -> Result<&Map<String, Value>, ApiError> {
    body.get("client")
        .and_then(Value::as_object)
        .ok_or_else(|| ApiError::Invalid("client".into(), "Client is missing".into()))
}

async fn create_client(
    State(s): State<ZendeskState>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let caller = authorize(&s, &method, &headers, Some(Scope::Oauth))?;
    let body = body_json(&body)?;
    let fields = client_fields(&body)?;
    let text = |k: &str| fields.get(k).and_then(Value::as_str).map(str::to_owned);
    let name = text("name")
        .ok_or_else(|| ApiError::Invalid("name".into(), "Name cannot be blank".into()))?;
    let identifier = text("identifier").ok_or_else(|| {
        ApiError::Invalid("identifier".into(), "Identifier cannot be blank".into())
    })?;
    let mut db = s.lock();
    if db.clients.values().any(|c| c.identifier == identifier) {
        return Err(ApiError::Invalid(
            "identifier".into(),
            "Identifier has already been taken".into(),
        ));
    }
    let id = db.next_id();
    let now = db.now();
    let client = Client {
        id,
        name,
        identifier,
        kind: text("kind").unwrap_or_else(|| "confidential".into()),
        redirect_uri: string_list(fields.get("redirect_uri")),
        secret: hex_token("", 32),
        user_id: caller.user_id,
        created_at: now,
        updated_at: now,
    };
    let out = client_json(&client, true);
    db.clients.insert(id, client);
    Ok((StatusCode::CREATED, Json(json!({ "client": out }))).into_response())
}

pub(crate) fn string_list(value: Option<&Value>) -> Vec<String> {
    value
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

async fn show_client(
    State(s): State<ZendeskState>,
    method: Method,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    authorize(&s, &method, &headers, Some(Scope::Oauth))?;
    let id = numeric_id(&id)?;
    let db = s.lock();
    let c = db.clients.get(&id).ok_or_else(ApiError::not_found)?;
    Ok(Json(json!({ "client": client_json(c, false) })).into_response())
}

async fn update_client(
    State(s): State<ZendeskState>,
    method: Method,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    authorize(&s, &method, &headers, Some(Scope::Oauth))?;
    let id = numeric_id(&id)?;
    let body = body_json(&body)?;
    let fields = client_fields(&body)?.clone();
    let mut db = s.lock();
    let now = db.now();
    let c = db.clients.get_mut(&id).ok_or_else(ApiError::not_found)?;
    if let Some(name) = fields.get("name").and_then(Value::as_str) {
        c.name = name.to_owned();
    }
    if let Some(kind) = fields.get("kind").and_then(Value::as_str) {
        c.kind = kind.to_owned();
    }
    if fields.contains_key("redirect_uri") {
        c.redirect_uri = string_list(fields.get("redirect_uri"));
    }
    c.updated_at = now;
    Ok(Json(json!({ "client": client_json(c, false) })).into_response())
}

/// Deleting a client also ends its tokens: the reference is silent, and a
/// token outliving its client would be the surprise to avoid in a rehearsal.
async fn delete_client(
    State(s): State<ZendeskState>,
    method: Method,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    authorize(&s, &method, &headers, Some(Scope::Oauth))?;
    let id = numeric_id(&id)?;
    let mut db = s.lock();
    db.clients.remove(&id).ok_or_else(ApiError::not_found)?;
    for t in db.oauth_tokens.values_mut().filter(|t| t.client_id == id) {
        t.revoked = true;
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn generate_secret(
    State(s): State<ZendeskState>,
    method: Method,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    authorize(&s, &method, &headers, Some(Scope::Oauth))?;
    let id = numeric_id(&id)?;
    let mut db = s.lock();
    let now = db.now();
    let c = db.clients.get_mut(&id).ok_or_else(ApiError::not_found)?;
    c.secret = hex_token("", 32);
    c.updated_at = now;
    Ok(Json(json!({ "client": client_json(c, true) })).into_response())
}

// ---- OAuth tokens -----------------------------------------------------

/// Stores a new access token (and refresh token when asked) and returns its
/// id and value.
pub(crate) fn insert_oauth_token(
    db: &mut Db,
    client_id: u64,
    user_id: u64,
    scopes: Vec<String>,
    value: Option<SecretValue>,
    expires_in: Option<i64>,
    refresh_expires_in: Option<i64>,
) -> SeededSecret {
    let value = value.unwrap_or_else(|| fresh_value(db));
    let refresh = refresh_expires_in.map(|_| fresh_value(db));
    let id = db.next_id();
    let now = db.now();
    db.oauth_tokens.insert(
        id,
        OauthToken {
            id,
            client_id,
            user_id,
            scopes,
            value: value.clone(),
            refresh,
            created_at: now,
            expires_at: expires_in.map(|s| now + Duration::seconds(s)),
            refresh_expires_at: refresh_expires_in.map(|s| now + Duration::seconds(s)),
            used_at: None,
            revoked: false,
        },
    );
    SeededSecret { id, value }
}

fn fresh_value(db: &Db) -> SecretValue {
    loop {
        let value = hex_token("", 32);
        if !db.value_in_use(value.expose()) {
            return value;
        }
    }
}

/// A token as the API shows it: `token` holds ten characters, except
/// `full_token` right after creation. The refresh token is never shown.
fn token_json(t: &OauthToken, full: bool) -> Value {
    let mut out = json!({
        "id": t.id,
        "token": t.value.expose().chars().take(10).collect::<String>(),
        "client_id": t.client_id,
        "user_id": t.user_id,
        "scopes": t.scopes,
        "created_at": timestamp(t.created_at),
        "expires_at": t.expires_at.map(timestamp),
        "used_at": t.used_at.map(timestamp),
        "refresh_token": null,
        "refresh_token_expires_at": t.refresh_expires_at.map(timestamp),
    });
    if full {
        out["full_token"] = json!(t.value.expose());
    }
    out
}

async fn list_tokens(
    State(s): State<ZendeskState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let caller = authorize(&s, &method, &headers, Some(Scope::Oauth))?;
    let all = query_value(&uri, "all").as_deref() == Some("true");
    let client = query_value(&uri, "client_id").and_then(|c| c.parse::<u64>().ok());
    let db = s.lock();
    let tokens: Vec<Value> = db
        .oauth_tokens
        .values()
        .filter(|t| !t.revoked)
        .filter(|t| all || t.user_id == caller.user_id)
        .filter(|t| client.is_none_or(|c| t.client_id == c))
        .map(|t| token_json(t, false))
        .collect();
    Ok(Json(json!({ "tokens": tokens, "next_page": null, "previous_page": null, "count": tokens.len() })).into_response())
}

async fn create_token(
    State(s): State<ZendeskState>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let caller = authorize(&s, &method, &headers, Some(Scope::Oauth))?;
    let body = body_json(&body)?;
    let fields = body
        .get("token")
        .and_then(Value::as_object)
        .ok_or_else(|| ApiError::Invalid("token".into(), "Token is missing".into()))?;
    let client_id = fields
        .get("client_id")
        .and_then(Value::as_u64)
        .ok_or_else(|| ApiError::Invalid("client_id".into(), "Client cannot be blank".into()))?;
    // Unknown scopes are accepted here, as Zendesk does; calls fail later.
    let scopes = string_list(fields.get("scopes"));
    if scopes.is_empty() {
        return Err(ApiError::Invalid(
            "scopes".into(),
            "Scopes cannot be blank".into(),
        ));
    }
    let mut db = s.lock();
    if !db.clients.contains_key(&client_id) {
        return Err(ApiError::Invalid(
            "client_id".into(),
            "Client cannot be blank".into(),
        ));
    }
    let seeded = insert_oauth_token(&mut db, client_id, caller.user_id, scopes, None, None, None);
    let t = &db.oauth_tokens[&seeded.id];
    Ok((
        StatusCode::CREATED,
        Json(json!({ "token": token_json(t, true) })),
    )
        .into_response())
}

async fn show_token(
    State(s): State<ZendeskState>,
    method: Method,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    if id.trim_end_matches(".json") == "current" {
        // Introspection: any valid token may read its own record.
        let caller = authorize(&s, &method, &headers, None)?;
        let db = s.lock();
        let t = caller
            .oauth_token_id
            .and_then(|id| db.oauth_tokens.get(&id))
            .ok_or_else(ApiError::not_found)?;
        return Ok(Json(json!({ "token": token_json(t, false) })).into_response());
    }
    authorize(&s, &method, &headers, Some(Scope::Oauth))?;
    let id = numeric_id(&id)?;
    let db = s.lock();
    let t = db
        .oauth_tokens
        .get(&id)
        .filter(|t| !t.revoked)
        .ok_or_else(ApiError::not_found)?;
    Ok(Json(json!({ "token": token_json(t, false) })).into_response())
}

async fn revoke_token(
    State(s): State<ZendeskState>,
    method: Method,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    authorize(&s, &method, &headers, Some(Scope::Oauth))?;
    let id = numeric_id(&id)?;
    let mut db = s.lock();
    let t = db
        .oauth_tokens
        .get_mut(&id)
        .filter(|t| !t.revoked)
        .ok_or_else(ApiError::not_found)?;
    t.revoked = true;
    Ok(StatusCode::NO_CONTENT.into_response())
}

// ---- Grant endpoint ---------------------------------------------------

const DEFAULT_EXPIRES_IN: i64 = 30 * 60;
const DEFAULT_REFRESH_EXPIRES_IN: i64 = 30 * 24 * 3600;

fn bad_grant(error: &'static str, description: &str) -> ApiError {
    let status = if error == "invalid_client" {
        StatusCode::UNAUTHORIZED
    } else {
        StatusCode::BAD_REQUEST
    };
    ApiError::Oauth(status, error, description.into())
}

/// `POST /oauth/tokens`: `client_credentials` and `refresh_token`. The
/// answer is 200 (Zendesk's own CLI accepts only 200; the OAS says 201).
async fn grant(
    State(s): State<ZendeskState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let json_body = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_none_or(|v| v.contains("json"));
    let params: Map<String, Value> = if json_body {
        body_json(&body)?.as_object().cloned().unwrap_or_default()
    } else {
        url::form_urlencoded::parse(&body)
            .map(|(k, v)| (k.into_owned(), Value::String(v.into_owned())))
            .collect()
    };
    let text = |k: &str| params.get(k).and_then(Value::as_str).map(str::to_owned);
    let number = |k: &str| {
        params.get(k).and_then(|v| {
            v.as_i64()
                .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        })
    };
    let expires_in = number("expires_in").unwrap_or(DEFAULT_EXPIRES_IN);
    if !(300..=172_800).contains(&expires_in) {
        return Err(bad_grant(
            "invalid_request",
            "expires_in must be between 300 and 172800 seconds",
        ));
    }
    let refresh_in = number("refresh_token_expires_in").unwrap_or(DEFAULT_REFRESH_EXPIRES_IN);
    if !(7 * 86_400..=90 * 86_400).contains(&refresh_in) {
        return Err(bad_grant(
            "invalid_request",
            "refresh_token_expires_in must be between 604800 and 7776000 seconds",
        ));
    }
    let mut db = s.lock();
    let client_id = {
        let identifier = text("client_id").unwrap_or_default();
        let secret = text("client_secret").unwrap_or_default();
        let client = db
            .clients
            .values()
            .find(|c| c.identifier == identifier && c.secret.expose() == secret)
            .ok_or_else(|| bad_grant("invalid_client", "Client authentication failed"))?;
        client.id
    };
    let (user_id, scopes, refresh) = match text("grant_type").as_deref() {
        Some("client_credentials") => {
            let owner = db.clients[&client_id].user_id;
            let scopes: Vec<String> = text("scope")
                .unwrap_or_else(|| "read".into())
                .split_whitespace()
                .map(str::to_owned)
                .collect();
            (owner, scopes, None)
        }
        Some("refresh_token") => {
            let presented = text("refresh_token").unwrap_or_default();
            let now = db.now();
            let old = db
                .oauth_tokens
                .values_mut()
                .find(|t| {
                    t.client_id == client_id
                        && !t.revoked
                        && t.refresh.as_ref().is_some_and(|r| r.expose() == presented)
                        && t.refresh_expires_at.is_none_or(|at| at > now)
                })
                .ok_or_else(|| bad_grant("invalid_grant", "The refresh token is invalid"))?;
            // A refresh invalidates the old pair.
            old.revoked = true;
            (old.user_id, old.scopes.clone(), Some(refresh_in))
        }
        Some("authorization_code") => {
            return Err(bad_grant(
                "invalid_grant",
                "The simulator has no authorization codes: use client_credentials, or seed a token",
            ));
        }
        _ => {
            return Err(bad_grant(
                "unsupported_grant_type",
                "The grant type is not supported",
            ));
        }
    };
    let seeded = insert_oauth_token(
        &mut db,
        client_id,
        user_id,
        scopes.clone(),
        None,
        Some(expires_in),
        refresh,
    );
    let token = &db.oauth_tokens[&seeded.id];
    let mut out = json!({
        "access_token": token.value.expose(),
        "token_type": "bearer",
        "scope": scopes.join(" "),
        "expires_in": expires_in,
    });
    if let Some(r) = &token.refresh {
        out["refresh_token"] = json!(r.expose());
        out["refresh_token_expires_in"] = json!(refresh_in);
    }
    Ok(Json(out).into_response())
}

// ---- App installations ------------------------------------------------

/// An installation as the API shows it: secure settings left out.
fn installation_json(i: &super::model::Installation) -> Value {
    let visible: Map<String, Value> = i
        .settings
        .iter()
        .filter(|(k, _)| !i.secure.contains(*k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let objects: Vec<Value> = visible
        .iter()
        .map(|(k, v)| json!({ "name": k, "value": v }))
        .collect();
    json!({
        "id": i.id,
        "app_id": i.app_id,
        "product": i.product,
        "enabled": i.enabled,
        "settings": visible,
        "settings_objects": objects,
        "updated_at": timestamp(i.updated_at),
        "pending_installation": false,
        "pending_job_id": null,
    })
}

async fn list_installations(
    State(s): State<ZendeskState>,
    method: Method,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&s, &method, &headers, Some(Scope::Apps))?;
    let db = s.lock();
    let all: Vec<Value> = db.installations.values().map(installation_json).collect();
    Ok(Json(json!({ "installations": all })).into_response())
}

async fn show_installation(
    State(s): State<ZendeskState>,
    method: Method,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    authorize(&s, &method, &headers, Some(Scope::Apps))?;
    let id = numeric_id(&id)?;
    let db = s.lock();
    let i = db.installations.get(&id).ok_or_else(ApiError::not_found)?;
    Ok(Json(installation_json(i)).into_response())
}

/// Settings merge: keys sent replace theirs, others stay (inferred in the
/// reference; it is the behaviour that loses nothing when a client sends
/// only what changes).
async fn update_installation(
    State(s): State<ZendeskState>,
    method: Method,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    authorize(&s, &method, &headers, Some(Scope::Apps))?;
    let id = numeric_id(&id)?;
    let body = body_json(&body)?;
    let mut db = s.lock();
    let now = db.now();
    let i = db
        .installations
        .get_mut(&id)
        .ok_or_else(ApiError::not_found)?;
    if let Some(settings) = body.get("settings").and_then(Value::as_object) {
        for (k, v) in settings {
            i.settings.insert(k.clone(), v.clone());
        }
    }
    if let Some(enabled) = body.get("enabled").and_then(Value::as_bool) {
        i.enabled = enabled;
    }
    i.updated_at = now;
    Ok(Json(installation_json(i)).into_response())
}
