//! GitHub's REST endpoints the simulator serves: `GET /user` and the
//! Actions secrets of repositories, environments and organisations, with
//! the plumbing they share: token authentication and expiry, scope and
//! permission checks, GitHub's error shape and its response headers.

use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use keycycle_secret::SecretValue;
use serde::Deserialize;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::macros::format_description;

use super::model::{Db, Secret, Token, Vault, VaultKey};
use super::{GitHubState, PublicKeyState, github_error};

/// GitHub's largest secret value: "Secrets can store values of up to 48 KB"
/// (docs, "Limits for secrets"; not in the reference).
const MAX_SECRET_BYTES: usize = 48 * 1024;

/// `2011-01-26T19:01:12Z`: GitHub's timestamps, without fractions.
pub(crate) fn iso(at: OffsetDateTime) -> String {
    let format = format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    at.to_offset(time::UtcOffset::UTC)
        .format(&format)
        .unwrap_or_else(|_| at.unix_timestamp().to_string())
}

/// `2026-10-12 09:00:00 UTC`, as `GitHub-Authentication-Token-Expiration`
/// carries it (reference, "Expiry").
pub(crate) fn expiration_header(at: OffsetDateTime) -> String {
    let format = format_description!("[year]-[month]-[day] [hour]:[minute]:[second] UTC");
    at.to_offset(time::UtcOffset::UTC)
        .format(&format)
        .unwrap_or_else(|_| at.unix_timestamp().to_string())
}

pub(crate) fn public_key_of(vault: &Vault) -> PublicKeyState {
    PublicKeyState {
        key_id: vault.key_id.clone(),
        key: STANDARD.encode(vault.public_key()),
    }
}

/// An answer other than success, in GitHub's shape.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    message: String,
    /// 422's `errors[]` (reference: "422 adds `errors[]`").
    errors: Option<Value>,
    /// Headers that say what the endpoint would have accepted.
    headers: Vec<(&'static str, String)>,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            errors: None,
            headers: Vec::new(),
        }
    }

    fn bad_credentials() -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "Bad credentials")
    }

    fn not_found() -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "Not Found")
    }

    /// 422 "Validation Failed" naming the field, as GitHub's validation
    /// errors do (`resource`, `field`, `code`).
    fn invalid_field(field: &str, code: &str, message: &str) -> ApiError {
        let mut error = ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "Validation Failed");
        error.errors = Some(json!([{
            "resource": "Secret",
            "field": field,
            "code": code,
            "message": message,
        }]));
        error
    }

    /// 422 for a body that does not fit the endpoint's schema, in the
    /// words GitHub's schema check uses.
    fn invalid_request(detail: &str) -> ApiError {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("Invalid request.\n\n{detail}"),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = github_error(self.status, &self.message);
        if let Some(errors) = self.errors {
            body["errors"] = errors;
        }
        let mut response = (self.status, Json(body)).into_response();
        for (name, value) in self.headers {
            if let Ok(value) = HeaderValue::from_str(&value) {
                response.headers_mut().insert(name, value);
            }
        }
        response
    }
}

/// The credential in `Authorization`: `Bearer <token>` or the older
/// `token <token>`.
fn presented(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, credential) = value.split_once(' ')?;
    (scheme.eq_ignore_ascii_case("bearer") || scheme.eq_ignore_ascii_case("token"))
        .then(|| credential.trim())
}

/// Who is calling: a usable token and its user.
#[derive(Clone, Debug)]
struct Caller {
    user_id: u64,
    scopes: Option<Vec<String>>,
    permissions: std::collections::BTreeMap<String, String>,
}

/// Authenticates the request and spends one request of the caller's hourly
/// budget (an unknown, revoked or expired token spends the anonymous one).
fn authenticate(db: &mut Db, headers: &HeaderMap) -> Result<Caller, ApiError> {
    db.rate.roll(OffsetDateTime::now_utc().unix_timestamp());
    let token = presented(headers)
        .and_then(|v| db.token_by_value(v))
        .cloned();
    let bucket = token.as_ref().map(|t| t.user_id);
    let used = db.rate.used.entry(bucket).or_insert(0);
    *used = used.saturating_add(1);
    let used = *used;
    let Some(token) = token else {
        // Reference, "Expired, revoked or invalid → 401".
        return Err(ApiError::bad_credentials());
    };
    if used > db.rate.limit(bucket) {
        // Rate-limits doc: 403 or 429 with `x-ratelimit-remaining: 0`.
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "API rate limit exceeded for user ID {}. If you reach out to GitHub Support \
                 for help, please include the request ID.",
                token.user_id
            ),
        ));
    }
    Ok(Caller {
        user_id: token.user_id,
        scopes: token.scopes.clone(),
        permissions: token.permissions,
    })
}

/// Adds the rate-limit headers to every provider answer, and the token's
/// own headers to authenticated ones: `X-OAuth-Scopes` for classic tokens
/// (absent for fine-grained ones) and `GitHub-Authentication-Token-Expiration`
/// for expiring tokens (reference, "Checking a token" and "Expiry").
pub(crate) async fn token_headers(
    State(state): State<GitHubState>,
    req: Request,
    next: Next,
) -> Response {
    if req.uri().path().starts_with("/_sim") {
        return next.run(req).await;
    }
    let token: Option<Token> = {
        let db = state.lock();
        presented(req.headers())
            .and_then(|v| db.token_by_value(v))
            .cloned()
    };
    let mut response = next.run(req).await;
    let bucket = token.as_ref().map(|t| t.user_id);
    let (limit, used, reset) = {
        let mut db = state.lock();
        db.rate.roll(OffsetDateTime::now_utc().unix_timestamp());
        (db.rate.limit(bucket), db.rate.used(bucket), db.rate.reset())
    };
    let status = response.status();
    let exhausted = status == StatusCode::TOO_MANY_REQUESTS || used > limit;
    let remaining = if exhausted {
        0
    } else {
        limit.saturating_sub(used)
    };
    let headers = response.headers_mut();
    headers.insert("x-ratelimit-limit", HeaderValue::from(limit));
    headers.insert("x-ratelimit-remaining", HeaderValue::from(remaining));
    headers.insert("x-ratelimit-used", HeaderValue::from(used.min(limit)));
    headers.insert("x-ratelimit-reset", HeaderValue::from(reset));
    headers.insert("x-ratelimit-resource", HeaderValue::from_static("core"));
    if status == StatusCode::UNAUTHORIZED {
        return response;
    }
    if let Some(token) = token {
        if let Some(scopes) = &token.scopes
            && let Ok(value) = HeaderValue::from_str(&scopes.join(", "))
        {
            headers.insert("x-oauth-scopes", value);
        }
        if let Some(at) = token.expires_at
            && let Ok(value) = HeaderValue::from_str(&expiration_header(at))
        {
            headers.insert("github-authentication-token-expiration", value);
        }
    }
    response
}

pub(crate) fn routes() -> Router<GitHubState> {
    Router::new()
        .route("/user", get(user))
        .route("/repos/{owner}/{repo}/actions/secrets", get(list_repo))
        .route(
            "/repos/{owner}/{repo}/actions/secrets/public-key",
            get(key_repo),
        )
        .route(
            "/repos/{owner}/{repo}/actions/secrets/{name}",
            get(get_repo).put(put_repo).delete(delete_repo),
        )
        .route(
            "/repos/{owner}/{repo}/environments/{env}/secrets",
            get(list_env),
        )
        .route(
            "/repos/{owner}/{repo}/environments/{env}/secrets/public-key",
            get(key_env),
        )
        .route(
            "/repos/{owner}/{repo}/environments/{env}/secrets/{name}",
            get(get_env).put(put_env).delete(delete_env),
        )
        .route("/orgs/{org}/actions/secrets", get(list_org))
        .route("/orgs/{org}/actions/secrets/public-key", get(key_org))
        .route(
            "/orgs/{org}/actions/secrets/{name}",
            get(get_org).put(put_org).delete(delete_org),
        )
}

async fn user(State(state): State<GitHubState>, headers: HeaderMap) -> Result<Response, ApiError> {
    let mut db = state.lock();
    let caller = authenticate(&mut db, &headers)?;
    let user = db
        .users
        .get(&caller.user_id)
        .ok_or_else(ApiError::bad_credentials)?;
    let body = json!({
        "login": user.login,
        "id": user.id,
        "node_id": format!("U_{:x}", user.id),
        "type": "User",
        "site_admin": false,
        "name": user.name,
        "html_url": format!("https://github.com/{}", user.login),
        "created_at": iso(user.created_at),
    });
    let mut response = Json(body).into_response();
    // `GET /user` needs no scope, so it accepts none.
    response
        .headers_mut()
        .insert("x-accepted-oauth-scopes", HeaderValue::from_static(""));
    Ok(response)
}

/// A secrets scope as a request names it.
enum Place {
    Repo(String, String),
    Environment(String, String, String),
    Org(String),
}

impl Place {
    /// The classic scope the endpoint accepts.
    fn oauth_scope(&self) -> &'static str {
        match self {
            Place::Org(_) => "admin:org",
            _ => "repo",
        }
    }

    /// The fine-grained permission the endpoint needs.
    fn permission(&self) -> &'static str {
        match self {
            Place::Repo(..) => "secrets",
            Place::Environment(..) => "environments",
            Place::Org(_) => "organization_secrets",
        }
    }

    fn is_org(&self) -> bool {
        matches!(self, Place::Org(_))
    }
}

/// Checks the caller may read (`write: false`) or change the secrets of
/// `place`, and finds their vault.
///
/// Order: the token's scope or permission first (403, with the headers
/// that say what the endpoint accepts), then whether the repository,
/// environment or organisation exists for this user (404: GitHub answers
/// "Not Found" rather than reveal what a caller may not see, REST
/// troubleshooting doc), then admin rights (403). The 403 message for a
/// scope is the one fine-grained tokens get (*inferred* for classic ones).
fn access(db: &Db, caller: &Caller, place: &Place, write: bool) -> Result<VaultKey, ApiError> {
    let level = if write { "write" } else { "read" };
    let allowed = match &caller.scopes {
        Some(scopes) => scopes.iter().any(|s| s == place.oauth_scope()),
        None => match caller
            .permissions
            .get(place.permission())
            .map(String::as_str)
        {
            Some("write") => true,
            Some("read") => !write,
            _ => false,
        },
    };
    if !allowed {
        let mut error = ApiError::new(
            StatusCode::FORBIDDEN,
            "Resource not accessible by personal access token",
        );
        error
            .headers
            .push(("x-accepted-oauth-scopes", place.oauth_scope().to_owned()));
        error.headers.push((
            "x-accepted-github-permissions",
            format!("{}={level}", place.permission()),
        ));
        return Err(error);
    }
    match place {
        Place::Repo(owner, name) | Place::Environment(owner, name, _) => {
            let repo = db.repo(owner, name).ok_or_else(ApiError::not_found)?;
            if !db.repo_admin(caller.user_id, repo) {
                // Docs' wording for a collaborator without admin rights.
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "Must have admin rights to Repository.",
                ));
            }
            match place {
                Place::Environment(_, _, env) => repo
                    .environments
                    .iter()
                    .find(|e| e.eq_ignore_ascii_case(env))
                    .map(|e| VaultKey::Environment(repo.id, e.clone()))
                    .ok_or_else(ApiError::not_found),
                _ => Ok(VaultKey::Repo(repo.id)),
            }
        }
        Place::Org(login) => {
            let org = db.org_by_login(login).ok_or_else(ApiError::not_found)?;
            if !org.admins.contains(&caller.user_id) {
                // Inferred: what a member who is not an owner is told.
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "You must be an organization owner to manage its secrets.",
                ));
            }
            Ok(VaultKey::Org(org.id))
        }
    }
}

/// Headers a successful secrets answer carries about what it accepted.
fn accepted(mut response: Response, place: &Place, write: bool) -> Response {
    let level = if write { "write" } else { "read" };
    let headers = response.headers_mut();
    headers.insert(
        "x-accepted-oauth-scopes",
        HeaderValue::from_static(place.oauth_scope()),
    );
    if let Ok(value) = HeaderValue::from_str(&format!("{}={level}", place.permission())) {
        headers.insert("x-accepted-github-permissions", value);
    }
    response
}

fn public_key(
    state: &GitHubState,
    headers: &HeaderMap,
    place: Place,
) -> Result<Response, ApiError> {
    let mut db = state.lock();
    let caller = authenticate(&mut db, headers)?;
    let key = access(&db, &caller, &place, false)?;
    let body = public_key_of(db.vault(&key));
    Ok(accepted(Json(body).into_response(), &place, false))
}

/// Secret names: letters, digits and `_`, not starting with a digit or
/// `GITHUB_` (docs, "Naming your secrets"; not in the reference). Stored and
/// shown upper-cased, because GitHub treats them case-insensitively.
fn secret_name(name: &str) -> Result<String, ApiError> {
    let upper = name.to_ascii_uppercase();
    let valid = !upper.is_empty()
        && upper
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !upper.as_bytes()[0].is_ascii_digit()
        && !upper.starts_with("GITHUB_");
    if valid {
        Ok(upper)
    } else {
        Err(ApiError::invalid_field(
            "name",
            "invalid",
            "Secret names can only contain alphanumeric characters ([a-z], [A-Z], [0-9]) or \
             underscores (_), must not start with a number or GITHUB_.",
        ))
    }
}

fn metadata(db: &Db, key: &VaultKey, name: &str, secret: &Secret) -> Value {
    let mut body = json!({
        "name": name,
        "created_at": iso(secret.created_at),
        "updated_at": iso(secret.updated_at),
    });
    if let (VaultKey::Org(id), Some(visibility)) = (key, &secret.visibility) {
        body["visibility"] = json!(visibility);
        if visibility == "selected"
            && let Some(org) = db.orgs.get(id)
        {
            body["selected_repositories_url"] = json!(format!(
                "https://api.github.com/orgs/{}/actions/secrets/{name}/repositories",
                org.login
            ));
        }
    }
    body
}

fn get_secret(
    state: &GitHubState,
    headers: &HeaderMap,
    place: Place,
    name: &str,
) -> Result<Response, ApiError> {
    let mut db = state.lock();
    let caller = authenticate(&mut db, headers)?;
    let key = access(&db, &caller, &place, false)?;
    let name = name.to_ascii_uppercase();
    let vault = db.vaults.get(&key).ok_or_else(ApiError::not_found)?;
    let secret = vault.secrets.get(&name).ok_or_else(ApiError::not_found)?;
    let body = metadata(&db, &key, &name, secret);
    Ok(accepted(Json(body).into_response(), &place, false))
}

#[derive(Deserialize)]
struct ListQuery {
    per_page: Option<usize>,
    page: Option<usize>,
}

/// `{"total_count","secrets":[...]}`, `per_page` (default 30, at most 100)
/// at a time, with a `Link` header to the next page.
fn list_secrets(
    state: &GitHubState,
    headers: &HeaderMap,
    place: Place,
    path: &str,
    query: &ListQuery,
) -> Result<Response, ApiError> {
    let mut db = state.lock();
    let caller = authenticate(&mut db, headers)?;
    let key = access(&db, &caller, &place, false)?;
    let per_page = query.per_page.unwrap_or(30).clamp(1, 100);
    let page = query.page.unwrap_or(1).max(1);
    let all: Vec<Value> = db
        .vaults
        .get(&key)
        .map(|v| {
            v.secrets
                .iter()
                .map(|(name, s)| metadata(&db, &key, name, s))
                .collect()
        })
        .unwrap_or_default();
    let total = all.len();
    let items: Vec<Value> = all
        .into_iter()
        .skip((page - 1) * per_page)
        .take(per_page)
        .collect();
    let mut response = Json(json!({ "total_count": total, "secrets": items })).into_response();
    if page * per_page < total {
        let link = format!(
            "<{path}?per_page={per_page}&page={}>; rel=\"next\"",
            page + 1
        );
        if let Ok(value) = HeaderValue::from_str(&link) {
            response.headers_mut().insert(header::LINK, value);
        }
    }
    Ok(accepted(response, &place, false))
}

#[derive(Deserialize)]
struct PutBody {
    encrypted_value: Option<String>,
    key_id: Option<String>,
    visibility: Option<String>,
    selected_repository_ids: Option<Vec<Value>>,
}

/// Creates or updates a secret from the sealed box in the body: 201 with
/// `{}` when it is new, 204 when it replaced one (reference).
fn put_secret(
    state: &GitHubState,
    headers: &HeaderMap,
    place: Place,
    name: &str,
    body: &[u8],
) -> Result<Response, ApiError> {
    let mut db = state.lock();
    let caller = authenticate(&mut db, headers)?;
    let key = access(&db, &caller, &place, true)?;
    let name = secret_name(name)?;
    let body: PutBody = serde_json::from_slice(body)
        .map_err(|_| ApiError::invalid_request("The request body is not valid JSON."))?;
    let (Some(encrypted), Some(key_id)) = (body.encrypted_value, body.key_id) else {
        return Err(ApiError::invalid_request(
            "\"encrypted_value\" and \"key_id\" must both be supplied.",
        ));
    };
    let (visibility, selected) = if place.is_org() {
        org_visibility(&db, &key, body.visibility, body.selected_repository_ids)?
    } else {
        (None, Vec::new())
    };
    let now = db.now();
    let vault = db.vault(&key);
    // Reference: encrypt with the key of the scope you write to (422
    // otherwise, inferred).
    if key_id != vault.key_id {
        return Err(ApiError::invalid_field(
            "key_id",
            "invalid",
            "key_id does not match the current public key of this scope",
        ));
    }
    let sealed = STANDARD
        .decode(encrypted.trim())
        .map_err(|_| ApiError::invalid_field("encrypted_value", "invalid", "not base64"))?;
    let plain = vault.open(&sealed).ok_or_else(|| {
        ApiError::invalid_field(
            "encrypted_value",
            "invalid",
            "the value could not be decrypted with the key of key_id",
        )
    })?;
    if plain.len() > MAX_SECRET_BYTES {
        return Err(ApiError::invalid_field(
            "encrypted_value",
            "too_large",
            "secrets are limited to 48 KB",
        ));
    }
    // Secrets are text; the box is opened into a SecretValue at once, so
    // the plaintext never sits in an ordinary String.
    let value = String::from_utf8(plain)
        .map(SecretValue::new)
        .map_err(|_| {
            ApiError::invalid_field("encrypted_value", "invalid", "the value is not UTF-8 text")
        })?;
    let created = match vault.secrets.get_mut(&name) {
        Some(existing) => {
            existing.value = value;
            existing.updated_at = now;
            if visibility.is_some() {
                existing.visibility = visibility;
                existing.selected_repository_ids = selected;
            }
            false
        }
        None => {
            vault.secrets.insert(
                name,
                Secret {
                    value,
                    created_at: now,
                    updated_at: now,
                    visibility,
                    selected_repository_ids: selected,
                },
            );
            true
        }
    };
    let response = if created {
        (StatusCode::CREATED, Json(json!({}))).into_response()
    } else {
        StatusCode::NO_CONTENT.into_response()
    };
    Ok(accepted(response, &place, true))
}

/// An organisation secret's `visibility` (required: `all`, `private` or
/// `selected`) and `selected_repository_ids` (integers, only with
/// `selected`, each a repository of the organisation).
fn org_visibility(
    db: &Db,
    key: &VaultKey,
    visibility: Option<String>,
    selected: Option<Vec<Value>>,
) -> Result<(Option<String>, Vec<u64>), ApiError> {
    let visibility = match visibility.as_deref() {
        Some(v @ ("all" | "private" | "selected")) => v.to_owned(),
        Some(_) => {
            return Err(ApiError::invalid_request(
                "\"visibility\" must be one of: all, private, selected.",
            ));
        }
        None => {
            return Err(ApiError::invalid_request("\"visibility\" wasn't supplied."));
        }
    };
    let ids = selected
        .unwrap_or_default()
        .iter()
        .map(|v| {
            v.as_u64().ok_or_else(|| {
                ApiError::invalid_request("\"selected_repository_ids\" must hold integers.")
            })
        })
        .collect::<Result<Vec<u64>, ApiError>>()?;
    if visibility != "selected" && !ids.is_empty() {
        return Err(ApiError::invalid_field(
            "selected_repository_ids",
            "invalid",
            "selected_repository_ids is only used with visibility \"selected\"",
        ));
    }
    let org_login = match key {
        VaultKey::Org(id) => db.orgs.get(id).map(|o| o.login.as_str()).unwrap_or(""),
        _ => "",
    };
    if let Some(stranger) = ids.iter().find(|id| {
        db.repos
            .get(id)
            .is_none_or(|r| !r.owner.eq_ignore_ascii_case(org_login))
    }) {
        return Err(ApiError::invalid_field(
            "selected_repository_ids",
            "invalid",
            &format!("repository {stranger} is not a repository of this organization"),
        ));
    }
    Ok((Some(visibility), ids))
}

fn delete_secret(
    state: &GitHubState,
    headers: &HeaderMap,
    place: Place,
    name: &str,
) -> Result<Response, ApiError> {
    let mut db = state.lock();
    let caller = authenticate(&mut db, headers)?;
    let key = access(&db, &caller, &place, true)?;
    let name = name.to_ascii_uppercase();
    db.vaults
        .get_mut(&key)
        .and_then(|v| v.secrets.remove(&name))
        .ok_or_else(ApiError::not_found)?;
    Ok(accepted(
        StatusCode::NO_CONTENT.into_response(),
        &place,
        true,
    ))
}

async fn key_repo(
    State(s): State<GitHubState>,
    Path((owner, repo)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    public_key(&s, &headers, Place::Repo(owner, repo))
}

async fn key_env(
    State(s): State<GitHubState>,
    Path((owner, repo, env)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    public_key(&s, &headers, Place::Environment(owner, repo, env))
}

async fn key_org(
    State(s): State<GitHubState>,
    Path(org): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    public_key(&s, &headers, Place::Org(org))
}

async fn list_repo(
    State(s): State<GitHubState>,
    Path((owner, repo)): Path<(String, String)>,
    Query(q): Query<ListQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let path = format!("/repos/{owner}/{repo}/actions/secrets");
    list_secrets(&s, &headers, Place::Repo(owner, repo), &path, &q)
}

async fn list_env(
    State(s): State<GitHubState>,
    Path((owner, repo, env)): Path<(String, String, String)>,
    Query(q): Query<ListQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let path = format!("/repos/{owner}/{repo}/environments/{env}/secrets");
    list_secrets(
        &s,
        &headers,
        Place::Environment(owner, repo, env),
        &path,
        &q,
    )
}

async fn list_org(
    State(s): State<GitHubState>,
    Path(org): Path<String>,
    Query(q): Query<ListQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let path = format!("/orgs/{org}/actions/secrets");
    list_secrets(&s, &headers, Place::Org(org), &path, &q)
}

/// One handler per method and scope for `.../secrets/{name}`.
macro_rules! named {
    ($repo:ident, $env:ident, $org:ident, $method:expr) => {
        async fn $repo(
            State(s): State<GitHubState>,
            Path((owner, repo, name)): Path<(String, String, String)>,
            headers: HeaderMap,
            body: Bytes,
        ) -> Result<Response, ApiError> {
            secret_call(
                &s,
                &headers,
                Place::Repo(owner, repo),
                &name,
                $method,
                &body,
            )
        }

        async fn $env(
            State(s): State<GitHubState>,
            Path((owner, repo, env, name)): Path<(String, String, String, String)>,
            headers: HeaderMap,
            body: Bytes,
        ) -> Result<Response, ApiError> {
            let place = Place::Environment(owner, repo, env);
            secret_call(&s, &headers, place, &name, $method, &body)
        }

        async fn $org(
            State(s): State<GitHubState>,
            Path((org, name)): Path<(String, String)>,
            headers: HeaderMap,
            body: Bytes,
        ) -> Result<Response, ApiError> {
            secret_call(&s, &headers, Place::Org(org), &name, $method, &body)
        }
    };
}

named!(get_repo, get_env, get_org, Method::GET);
named!(put_repo, put_env, put_org, Method::PUT);
named!(delete_repo, delete_env, delete_org, Method::DELETE);

fn secret_call(
    state: &GitHubState,
    headers: &HeaderMap,
    place: Place,
    name: &str,
    method: Method,
    body: &[u8],
) -> Result<Response, ApiError> {
    match method {
        Method::PUT => put_secret(state, headers, place, name, body),
        Method::DELETE => delete_secret(state, headers, place, name),
        _ => get_secret(state, headers, place, name),
    }
}
