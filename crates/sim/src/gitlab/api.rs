//! Plumbing every GitLab endpoint shares: reading a request, authenticating
//! it (expiry, revocation, reuse detection, scopes), GitLab's error shapes,
//! permission checks, offset pagination and the RateLimit-* headers.

use std::collections::BTreeMap;

use axum::Json;
use axum::body::Body;
use axum::extract::{FromRequest, Multipart, OriginalUri, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::GitLabState;
use super::model::{AuthErrorStyle, Db, Resource, ReuseDetection};
use super::params::Params;
use crate::clock::{http_date, timestamp};

/// Largest request body the simulator reads.
const BODY_LIMIT: usize = 1024 * 1024;

/// An answer other than success, in one of GitLab's error shapes.
#[derive(Debug)]
pub(crate) enum ApiError {
    /// `{"message": "..."}`, from `render_api_error!` and friends.
    Message(StatusCode, String),
    /// `{"message": {"field": ["..."]}}`, from `render_validation_error!`.
    Fields(StatusCode, BTreeMap<String, Vec<String>>),
    /// `{"error": "..."}`, from Grape's parameter validation and `error!`.
    Grape(StatusCode, String),
    /// Rack::OAuth2's bearer errors, from `API::APIGuard`.
    Oauth {
        status: StatusCode,
        error: &'static str,
        description: &'static str,
        scope: Option<String>,
    },
}

impl ApiError {
    pub(crate) fn unauthorized() -> ApiError {
        ApiError::Message(StatusCode::UNAUTHORIZED, "401 Unauthorized".into())
    }

    pub(crate) fn forbidden() -> ApiError {
        ApiError::Message(StatusCode::FORBIDDEN, "403 Forbidden".into())
    }

    /// `forbidden!(reason)`: "403 Forbidden - reason".
    pub(crate) fn forbidden_because(reason: &str) -> ApiError {
        ApiError::Message(StatusCode::FORBIDDEN, format!("403 Forbidden - {reason}"))
    }

    /// `not_found!(what)`: "404 What Not Found", or "404 Not Found".
    pub(crate) fn not_found(what: Option<&str>) -> ApiError {
        let message = match what {
            Some(what) => format!("404 {what} Not Found"),
            None => "404 Not Found".into(),
        };
        ApiError::Message(StatusCode::NOT_FOUND, message)
    }

    /// What GitLab answers when `Model.find(id)` raises RecordNotFound.
    pub(crate) fn record_not_found() -> ApiError {
        ApiError::Message(StatusCode::NOT_FOUND, "404 Not found".into())
    }

    /// `bad_request!(reason)`: "400 Bad request - reason", or "400 Bad request".
    pub(crate) fn bad_request(reason: Option<&str>) -> ApiError {
        let message = match reason {
            Some(reason) => format!("400 Bad request - {reason}"),
            None => "400 Bad request".into(),
        };
        ApiError::Message(StatusCode::BAD_REQUEST, message)
    }

    pub(crate) fn not_allowed() -> ApiError {
        ApiError::Message(
            StatusCode::METHOD_NOT_ALLOWED,
            "405 Method Not Allowed".into(),
        )
    }

    pub(crate) fn conflict(message: &str) -> ApiError {
        ApiError::Message(StatusCode::CONFLICT, message.into())
    }

    pub(crate) fn grape(message: String) -> ApiError {
        ApiError::Grape(StatusCode::BAD_REQUEST, message)
    }

    pub(crate) fn missing(param: &str) -> ApiError {
        ApiError::grape(format!("{param} is missing"))
    }

    pub(crate) fn invalid(param: &str) -> ApiError {
        ApiError::grape(format!("{param} is invalid"))
    }

    pub(crate) fn not_a_valid_value(param: &str) -> ApiError {
        ApiError::grape(format!("{param} does not have a valid value"))
    }

    fn status(&self) -> StatusCode {
        match self {
            ApiError::Message(status, _)
            | ApiError::Fields(status, _)
            | ApiError::Grape(status, _) => *status,
            ApiError::Oauth { status, .. } => *status,
        }
    }

    pub(crate) fn body(&self) -> Value {
        match self {
            ApiError::Message(_, message) => json!({ "message": message }),
            ApiError::Fields(_, fields) => json!({ "message": fields }),
            ApiError::Grape(_, message) => json!({ "error": message }),
            ApiError::Oauth {
                error,
                description,
                scope,
                ..
            } => {
                let mut body = json!({ "error": error, "error_description": description });
                if let Some(scope) = scope {
                    body["scope"] = json!(scope);
                }
                body
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status(), Json(self.body())).into_response();
        if let ApiError::Oauth {
            status: StatusCode::UNAUTHORIZED,
            error,
            description,
            ..
        } = &self
        {
            let challenge = format!(
                "Bearer realm=\"\", error=\"{error}\", error_description=\"{description}\""
            );
            if let Ok(value) = HeaderValue::from_str(&challenge) {
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, value);
            }
        }
        response
    }
}

/// A request as the endpoints need it: route facts, headers and the merged
/// parameters. No `Debug`: headers and parameters carry secrets.
pub(crate) struct Req {
    pub(crate) method: Method,
    pub(crate) uri: Uri,
    pub(crate) headers: HeaderMap,
    pub(crate) params: Params,
}

impl<S: Send + Sync> FromRequest<S> for Req {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Req, ApiError> {
        let method = req.method().clone();
        // Inside the `/api/v4` nest axum strips the prefix from `req.uri()`;
        // the original URI keeps it, and links built from it must carry it
        // (python-gitlab follows `Link` verbatim).
        let uri = req
            .extensions()
            .get::<OriginalUri>()
            .map_or_else(|| req.uri().clone(), |original| original.0.clone());
        let headers = req.headers().clone();
        let mut params = Params::default();
        if let Some(query) = uri.query() {
            params.merge_form(query.as_bytes());
        }
        let content_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase();
        if content_type.starts_with("multipart/form-data") {
            // `curl --form`, as GitLab's own examples send it.
            let mut form = Multipart::from_request(req, state)
                .await
                .map_err(|_| ApiError::bad_request(None))?;
            while let Some(field) = form
                .next_field()
                .await
                .map_err(|_| ApiError::bad_request(None))?
            {
                let Some(name) = field.name().map(str::to_owned) else {
                    continue;
                };
                let text = field
                    .text()
                    .await
                    .map_err(|_| ApiError::bad_request(None))?;
                params.insert_pair(&name, text);
            }
        } else {
            let body = axum::body::to_bytes(req.into_body(), BODY_LIMIT)
                .await
                .map_err(|_| ApiError::bad_request(None))?;
            if body.iter().any(|b| !b.is_ascii_whitespace()) {
                let form = content_type.contains("x-www-form-urlencoded");
                if content_type.contains("json") {
                    params.merge_json(&body)?;
                } else if form || params.merge_json(&body).is_err() {
                    // Untyped bodies: JSON if they parse as such, else a form.
                    params.merge_form(&body);
                }
            }
        }
        Ok(Req {
            method,
            uri,
            headers,
            params,
        })
    }
}

impl Req {
    pub(crate) fn path(&self) -> &str {
        self.uri.path()
    }

    /// The token presented: `PRIVATE-TOKEN`, `Authorization: Bearer`, or the
    /// `private_token` parameter, in GitLab's order.
    fn presented_token(&self) -> Option<String> {
        if let Some(token) = self.params.str("private_token") {
            return Some(token);
        }
        if let Some(token) = self
            .headers
            .get("private-token")
            .and_then(|v| v.to_str().ok())
        {
            return Some(token.trim().to_owned());
        }
        let authorization = self.headers.get(header::AUTHORIZATION)?.to_str().ok()?;
        let (scheme, token) = authorization.split_once(' ')?;
        scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| token.trim().to_owned())
    }

    /// `http://host` as the client addressed the simulator.
    pub(crate) fn base_url(&self) -> String {
        let host = self
            .headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("127.0.0.1");
        format!("http://{host}")
    }
}

/// The authenticated user behind a request.
#[derive(Clone, Debug)]
pub(crate) struct Caller {
    pub(crate) user_id: u64,
    pub(crate) token_id: u64,
    pub(crate) admin: bool,
    pub(crate) bot_of: Option<Resource>,
    pub(crate) name: String,
}

/// The scopes an endpoint accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Need {
    /// `api` or `read_api` (GET endpoints).
    Read,
    /// `api`.
    Write,
    /// `api` or `self_rotate`.
    SelfRotate,
    /// Any scope: introspection of the presented token itself.
    AnyScope,
}

impl Need {
    /// GETs read; everything else writes.
    pub(crate) fn for_method(method: &Method) -> Need {
        if method == Method::GET || method == Method::HEAD {
            Need::Read
        } else {
            Need::Write
        }
    }

    fn allows(self, scopes: &[String]) -> bool {
        let has = |s: &str| scopes.iter().any(|x| x == s);
        match self {
            Need::Read => has("api") || has("read_api"),
            Need::Write => has("api"),
            Need::SelfRotate => has("api") || has("self_rotate"),
            Need::AnyScope => true,
        }
    }

    fn scope_list(self) -> &'static str {
        match self {
            Need::Read => "api read_api",
            Need::Write => "api",
            Need::SelfRotate => "api self_rotate",
            Need::AnyScope => "",
        }
    }
}

/// `Gitlab::Auth::AuthFinders#access_token_rotation_request?`:
/// `access_tokens/(\d+|self)/rotate$`.
fn rotation_request(path: &str) -> bool {
    let segments: Vec<&str> = path.trim_end_matches('/').rsplit('/').take(3).collect();
    matches!(segments.as_slice(), ["rotate", id, tokens]
        if (*id == "self" || (!id.is_empty() && id.bytes().all(|b| b.is_ascii_digit())))
            && tokens.ends_with("access_tokens"))
}

fn revoked_error(db: &Db) -> ApiError {
    match db.settings.auth_error_style {
        AuthErrorStyle::Message => ApiError::unauthorized(),
        AuthErrorStyle::Oauth => ApiError::Oauth {
            status: StatusCode::UNAUTHORIZED,
            error: "invalid_token",
            description: "Token was revoked. You have to re-authorize from the user.",
            scope: None,
        },
    }
}

fn expired_error(db: &Db) -> ApiError {
    match db.settings.auth_error_style {
        AuthErrorStyle::Message => ApiError::unauthorized(),
        AuthErrorStyle::Oauth => ApiError::Oauth {
            status: StatusCode::UNAUTHORIZED,
            error: "invalid_token",
            description: "Token is expired. You can either do re-authorization or token refresh.",
            scope: None,
        },
    }
}

/// Authenticates `req` against the true state, applying GitLab's rules in
/// its order: unknown → 401; revoked → reuse detection, then 401; expired →
/// 401; missing scope → 403. Success records `last_used_at`.
pub(crate) fn authenticate(db: &mut Db, req: &Req, need: Need) -> Result<Caller, ApiError> {
    let presented = req.presented_token().ok_or_else(ApiError::unauthorized)?;
    let id = db
        .token_by_value(&presented)
        .ok_or_else(ApiError::unauthorized)?;
    let token = &db.tokens[&id];
    if token.revoked {
        // Reuse detection: a revoked token that comes back means it leaked,
        // so its successors are revoked too (provider reference, "Reuse
        // detection"; gitlab-org/gitlab MR 125270).
        if db.settings.reuse_detection == ReuseDetection::AnyRequest || rotation_request(req.path())
        {
            db.revoke_descendants(id);
        }
        return Err(revoked_error(db));
    }
    if db.expired(token) {
        return Err(expired_error(db));
    }
    if !need.allows(&token.scopes) {
        return Err(ApiError::Oauth {
            status: StatusCode::FORBIDDEN,
            error: "insufficient_scope",
            description: "The request requires higher privileges than provided by the access token.",
            scope: Some(need.scope_list().to_owned()),
        });
    }
    let user_id = token.user_id;
    let now = db.now();
    if let Some(token) = db.tokens.get_mut(&id) {
        token.last_used_at = Some(now);
    }
    let user = db.users.get(&user_id).ok_or_else(ApiError::unauthorized)?;
    Ok(Caller {
        user_id,
        token_id: id,
        admin: user.admin,
        bot_of: user.bot_of,
        name: user.name.clone(),
    })
}

/// The project `reference` names (id or URL-encoded path) if the caller may
/// see it. GitLab answers 404 both for missing projects and for projects the
/// caller is not a member of.
pub(crate) fn visible_project(db: &Db, caller: &Caller, reference: &str) -> Result<u64, ApiError> {
    db.project_by_ref(reference)
        .filter(|pid| db.project_level(caller.user_id, *pid).is_some())
        .ok_or_else(|| ApiError::not_found(Some("Project")))
}

pub(crate) fn visible_group(db: &Db, caller: &Caller, reference: &str) -> Result<u64, ApiError> {
    db.group_by_ref(reference)
        .filter(|gid| db.group_level(caller.user_id, *gid).is_some())
        .ok_or_else(|| ApiError::not_found(Some("Group")))
}

/// 403 unless the caller has at least `level` in the project.
pub(crate) fn require_project_level(
    db: &Db,
    caller: &Caller,
    project_id: u64,
    level: u8,
) -> Result<(), ApiError> {
    match db.project_level(caller.user_id, project_id) {
        Some(have) if have >= level => Ok(()),
        _ => Err(ApiError::forbidden()),
    }
}

/// `UserBasic`, as owners and `/user` are shown.
pub(crate) fn user_basic(db: &Db, req: &Req, user_id: u64) -> Value {
    match db.users.get(&user_id) {
        Some(user) => json!({
            "id": user.id,
            "username": user.username,
            "name": user.name,
            "state": "active",
            "locked": false,
            "avatar_url": null,
            "web_url": format!("{}/{}", req.base_url(), user.username),
        }),
        None => Value::Null,
    }
}

pub(crate) fn json_ok(body: Value) -> Response {
    Json(body).into_response()
}

pub(crate) fn json_created(body: Value) -> Response {
    (StatusCode::CREATED, Json(body)).into_response()
}

pub(crate) fn ts(at: time::OffsetDateTime) -> Value {
    Value::String(timestamp(at))
}

pub(crate) fn ts_opt(at: Option<time::OffsetDateTime>) -> Value {
    at.map_or(Value::Null, ts)
}

/// Offset pagination (`page`, `per_page` default 20, max 100) with GitLab's
/// X-Total, X-Total-Pages, X-Page, X-Per-Page, X-Next-Page, X-Prev-Page and
/// Link headers.
pub(crate) fn paginate(req: &Req, items: Vec<Value>) -> Result<Response, ApiError> {
    let page = req.params.int("page")?.filter(|p| *p >= 1).unwrap_or(1) as usize;
    let per_page = req
        .params
        .int("per_page")?
        .filter(|p| *p >= 1)
        .map_or(20, |p| p.min(100)) as usize;
    let total = items.len();
    let total_pages = total.div_ceil(per_page).max(1);
    let shown: Vec<Value> = items
        .into_iter()
        .skip((page - 1) * per_page)
        .take(per_page)
        .collect();

    let mut response = Json(shown).into_response();
    let headers = response.headers_mut();
    let set = |headers: &mut HeaderMap, name: &'static str, value: String| {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(name, value);
        }
    };
    let next = (page < total_pages).then(|| page + 1);
    let prev = (page > 1).then(|| page - 1);
    set(headers, "x-page", page.to_string());
    set(headers, "x-per-page", per_page.to_string());
    set(headers, "x-total", total.to_string());
    set(headers, "x-total-pages", total_pages.to_string());
    set(
        headers,
        "x-next-page",
        next.map(|p| p.to_string()).unwrap_or_default(),
    );
    set(
        headers,
        "x-prev-page",
        prev.map(|p| p.to_string()).unwrap_or_default(),
    );

    let mut links = Vec::new();
    for (rel, target) in [
        ("prev", prev),
        ("next", next),
        ("first", Some(1)),
        ("last", Some(total_pages)),
    ] {
        if let Some(target) = target {
            links.push(format!(
                "<{}>; rel=\"{rel}\"",
                page_url(req, target, per_page)
            ));
        }
    }
    set(headers, "link", links.join(", "));
    Ok(response)
}

fn page_url(req: &Req, page: usize, per_page: usize) -> String {
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    if let Some(original) = req.uri.query() {
        for (key, value) in url::form_urlencoded::parse(original.as_bytes()) {
            if key != "page" && key != "per_page" && key != "private_token" {
                query.append_pair(&key, &value);
            }
        }
    }
    query.append_pair("page", &page.to_string());
    query.append_pair("per_page", &per_page.to_string());
    format!("{}{}?{}", req.base_url(), req.path(), query.finish())
}

/// Marks a request that went over the per-minute limit; carries the seconds
/// until the window resets.
#[derive(Clone, Copy)]
struct OverLimit(u64);

/// Outermost API middleware: counts the request in the current minute and
/// adds the RateLimit-* headers GitLab sends on every response.
pub(crate) async fn rate_headers(
    State(state): State<GitLabState>,
    mut req: Request,
    next: Next,
) -> Response {
    if !req.uri().path().starts_with("/api/") {
        return next.run(req).await;
    }
    let (limit, observed, reset_at, reset_in) = {
        let mut db = state.lock();
        // Rate limiting runs on the real clock, whatever date a test pinned.
        let now = time::OffsetDateTime::now_utc();
        let minute = now.unix_timestamp().div_euclid(60);
        if db.rate.minute != minute {
            db.rate.minute = minute;
            db.rate.observed = 0;
        }
        db.rate.observed = db.rate.observed.saturating_add(1);
        let reset_at = now.replace_nanosecond(0).unwrap_or(now)
            + time::Duration::seconds(60 - now.unix_timestamp().rem_euclid(60));
        let reset_in = (reset_at - now).whole_seconds().max(1) as u64;
        (
            db.settings.rate_limit_per_minute,
            db.rate.observed,
            reset_at,
            reset_in,
        )
    };
    if observed > limit {
        req.extensions_mut().insert(OverLimit(reset_in));
    }
    let mut response = next.run(req).await;
    let throttled = response.status() == StatusCode::TOO_MANY_REQUESTS;
    let remaining = if throttled {
        0
    } else {
        limit.saturating_sub(observed)
    };
    let headers = response.headers_mut();
    headers.insert("ratelimit-limit", HeaderValue::from(limit));
    headers.insert(
        "ratelimit-name",
        HeaderValue::from_static("throttle_authenticated_api"),
    );
    headers.insert("ratelimit-observed", HeaderValue::from(observed));
    headers.insert("ratelimit-remaining", HeaderValue::from(remaining));
    headers.insert(
        "ratelimit-reset",
        HeaderValue::from(reset_at.unix_timestamp()),
    );
    if throttled {
        if let Ok(value) = HeaderValue::from_str(&http_date(reset_at)) {
            headers.insert("ratelimit-resettime", value);
        }
        headers
            .entry(header::RETRY_AFTER)
            .or_insert(HeaderValue::from(reset_in));
    }
    response
}

/// Innermost API middleware: answers 429 once the minute's limit is spent
/// (after the request was logged and any injected fault had its turn).
pub(crate) async fn throttle(req: Request, next: Next) -> Response {
    match req.extensions().get::<OverLimit>().copied() {
        Some(OverLimit(retry_after)) => {
            let mut response = (
                StatusCode::TOO_MANY_REQUESTS,
                [(header::CONTENT_TYPE, "text/plain")],
                Body::from("Retry later"),
            )
                .into_response();
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
            response
        }
        None => next.run(req).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_paths_match_gitlabs_regex() {
        assert!(rotation_request("/api/v4/personal_access_tokens/12/rotate"));
        assert!(rotation_request(
            "/api/v4/personal_access_tokens/self/rotate"
        ));
        assert!(rotation_request(
            "/api/v4/projects/7/access_tokens/3/rotate"
        ));
        assert!(rotation_request(
            "/api/v4/groups/a%2Fb/access_tokens/self/rotate"
        ));
        assert!(!rotation_request("/api/v4/personal_access_tokens/self"));
        assert!(!rotation_request("/api/v4/projects/7/triggers/3/rotate"));
        assert!(!rotation_request(
            "/api/v4/personal_access_tokens/x1/rotate"
        ));
    }
}
