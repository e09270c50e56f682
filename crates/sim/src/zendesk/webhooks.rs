//! Webhooks: cursor-paginated list with filters, create (201), show (200),
//! replace with PUT and change with PATCH (both 204, no body), delete (204),
//! the signing secret, and the test call, which the simulator records
//! instead of making. Credentials in `authentication` are write-only: the
//! API shows only a basic-auth `username`. Errors use the JSON:API shape.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Map, Value, json};

use super::ZendeskState;
use super::api::{ApiError, Scope, authorize, body_json, query_pairs, query_value, string_list};
use super::model::{Db, Webhook, WebhookTest};
use crate::clock::timestamp;
use crate::values::url_safe_token;

const MAX_PAGE: usize = 100;

pub(crate) fn routes() -> Router<ZendeskState> {
    Router::new()
        .route("/api/v2/webhooks", get(list).post(create_route))
        .route("/api/v2/webhooks/test", post(test))
        .route(
            "/api/v2/webhooks/{id}",
            get(show).put(replace).patch(patch).delete(delete),
        )
        .route(
            "/api/v2/webhooks/{id}/signing_secret",
            get(show_secret).post(reset_secret),
        )
}

fn invalid(detail: impl Into<String>) -> ApiError {
    ApiError::Errors(StatusCode::BAD_REQUEST, "InvalidValue", detail.into())
}

fn not_found() -> ApiError {
    ApiError::Errors(
        StatusCode::NOT_FOUND,
        "RecordNotFound",
        "Webhook not found".into(),
    )
}

/// Checks an `authentication` object: a known type, the data that type
/// needs, and `add_position` `header`.
fn check_auth(auth: &Value) -> Result<(), ApiError> {
    let needs: &[&str] = match auth.get("type").and_then(Value::as_str) {
        Some("basic_auth") => &["username", "password"],
        Some("bearer_token") => &["token"],
        Some("api_key") => &["name", "value"],
        _ => {
            return Err(invalid(
                "authentication.type must be basic_auth, bearer_token or api_key",
            ));
        }
    };
    for field in needs {
        if auth
            .get("data")
            .and_then(|d| d.get(*field))
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            return Err(invalid(format!("authentication.data.{field} is required")));
        }
    }
    if let Some(position) = auth.get("add_position")
        && position != "header"
    {
        return Err(invalid("authentication.add_position must be header"));
    }
    Ok(())
}

/// The fields of a whole webhook, validated.
struct Fields {
    name: String,
    description: Option<String>,
    endpoint: String,
    http_method: String,
    request_format: String,
    status: String,
    subscriptions: Vec<String>,
    authentication: Option<Value>,
    custom_headers: Option<Value>,
}

fn whole(w: &Map<String, Value>) -> Result<Fields, ApiError> {
    let text = |k: &str| {
        w.get(k)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .ok_or_else(|| invalid(format!("{k} is required")))
    };
    let http_method = text("http_method")?.to_ascii_uppercase();
    if !["GET", "POST", "PUT", "PATCH", "DELETE"].contains(&http_method.as_str()) {
        return Err(invalid("http_method is invalid"));
    }
    let request_format = text("request_format")?;
    if !["json", "xml", "form_encoded"].contains(&request_format.as_str()) {
        return Err(invalid("request_format is invalid"));
    }
    let status = text("status")?;
    if !["active", "inactive"].contains(&status.as_str()) {
        return Err(invalid("status is invalid"));
    }
    let subscriptions = string_list(w.get("subscriptions"));
    if subscriptions.is_empty() {
        return Err(invalid("subscriptions is required"));
    }
    let authentication = w.get("authentication").filter(|a| !a.is_null()).cloned();
    if let Some(auth) = &authentication {
        check_auth(auth)?;
    }
    Ok(Fields {
        name: text("name")?,
        description: w
            .get("description")
            .and_then(Value::as_str)
            .map(str::to_owned),
        endpoint: text("endpoint")?,
        http_method,
        request_format,
        status,
        subscriptions,
        authentication,
        custom_headers: w.get("custom_headers").filter(|a| !a.is_null()).cloned(),
    })
}

/// Creates a webhook from an unwrapped body; returns its id.
pub(crate) fn create(db: &mut Db, user_id: u64, body: &Value) -> Result<String, ApiError> {
    let w = body
        .as_object()
        .ok_or_else(|| invalid("webhook is required"))?;
    let f = whole(w)?;
    let id = db.next_webhook_id();
    let now = db.now();
    db.webhooks.insert(
        id.clone(),
        Webhook {
            id: id.clone(),
            name: f.name,
            description: f.description,
            endpoint: f.endpoint,
            http_method: f.http_method,
            request_format: f.request_format,
            status: f.status,
            subscriptions: f.subscriptions,
            authentication: f.authentication,
            custom_headers: f.custom_headers,
            signing_secret: url_safe_token("", 43),
            created_at: now,
            updated_at: now,
            created_by: user_id,
            updated_by: user_id,
        },
    );
    Ok(id)
}

/// `authentication` as responses show it: the type and position, and of
/// the data only a basic-auth `username`.
fn shown_auth(auth: &Value) -> Value {
    let mut out = json!({
        "type": auth.get("type"),
        "add_position": auth.get("add_position").cloned().unwrap_or(json!("header")),
    });
    if auth.get("type").and_then(Value::as_str) == Some("basic_auth") {
        out["data"] = json!({ "username": auth.get("data").and_then(|d| d.get("username")) });
    }
    out
}

fn webhook_json(w: &Webhook) -> Value {
    let mut out = json!({
        "id": w.id,
        "name": w.name,
        "description": w.description,
        "endpoint": w.endpoint,
        "http_method": w.http_method,
        "request_format": w.request_format,
        "status": w.status,
        "subscriptions": w.subscriptions,
        "created_at": timestamp(w.created_at),
        "created_by": w.created_by.to_string(),
        "updated_at": timestamp(w.updated_at),
        "updated_by": w.updated_by.to_string(),
    });
    if let Some(auth) = &w.authentication {
        out["authentication"] = shown_auth(auth);
    }
    if let Some(headers) = &w.custom_headers {
        out["custom_headers"] = headers.clone();
    }
    out
}

fn wrapped(body: &Value) -> Result<&Map<String, Value>, ApiError> {
    body.get("webhook")
        .and_then(Value::as_object)
        .ok_or_else(|| invalid("webhook is required"))
}

fn base_url(headers: &HeaderMap) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("127.0.0.1");
    format!("http://{host}")
}

async fn list(
    State(s): State<ZendeskState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&s, &method, &headers, Some(Scope::Webhooks))?;
    let size = match query_value(&uri, "page[size]") {
        None => MAX_PAGE,
        Some(raw) => match raw.parse::<usize>() {
            Ok(n) if (1..=MAX_PAGE).contains(&n) => n,
            _ => return Err(invalid("page[size] must be between 1 and 100")),
        },
    };
    let after = query_value(&uri, "page[after]");
    let before = query_value(&uri, "page[before]");
    let name = query_value(&uri, "filter[name_contains]").map(|n| n.to_lowercase());
    let status = query_value(&uri, "filter[status]");
    let db = s.lock();
    let matching: Vec<&Webhook> = db
        .webhooks
        .values()
        .filter(|w| {
            name.as_ref()
                .is_none_or(|n| w.name.to_lowercase().contains(n))
        })
        .filter(|w| status.as_ref().is_none_or(|st| w.status == *st))
        .collect();
    // Cursors are the ids bounding the page (opaque to clients).
    let (start, end) = match (&after, &before) {
        (Some(a), _) => {
            let start = matching
                .iter()
                .position(|w| w.id > *a)
                .unwrap_or(matching.len());
            (start, (start + size).min(matching.len()))
        }
        (None, Some(b)) => {
            let end = matching
                .iter()
                .position(|w| w.id >= *b)
                .unwrap_or(matching.len());
            (end.saturating_sub(size), end)
        }
        (None, None) => (0, size.min(matching.len())),
    };
    let page = &matching[start..end];
    let has_more = end < matching.len();
    let first = page.first().map(|w| w.id.clone());
    let last = page.last().map(|w| w.id.clone());
    // Keep the filters in the links; replace only the cursor.
    let link = |key: &str, cursor: &str| {
        let mut pairs: Vec<(String, String)> = query_pairs(&uri)
            .into_iter()
            .filter(|(k, _)| k != "page[after]" && k != "page[before]" && k != "page[size]")
            .collect();
        pairs.push(("page[size]".into(), size.to_string()));
        pairs.push((key.into(), cursor.into()));
        let query: String = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs)
            .finish();
        format!("{}/api/v2/webhooks?{query}", base_url(&headers))
    };
    let next = if has_more {
        last.as_deref().map(|c| link("page[after]", c))
    } else {
        None
    };
    let prev = (start > 0)
        .then(|| first.as_deref().map(|c| link("page[before]", c)))
        .flatten();
    let items: Vec<Value> = page.iter().map(|w| webhook_json(w)).collect();
    Ok(Json(json!({
        "webhooks": items,
        "meta": { "has_more": has_more, "after_cursor": last, "before_cursor": first },
        "links": { "next": next, "prev": prev },
    }))
    .into_response())
}

async fn create_route(
    State(s): State<ZendeskState>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let caller = authorize(&s, &method, &headers, Some(Scope::Webhooks))?;
    let body = body_json(&body)?;
    let w = Value::Object(wrapped(&body)?.clone());
    let mut db = s.lock();
    let id = create(&mut db, caller.user_id, &w)?;
    let out = webhook_json(&db.webhooks[&id]);
    Ok((StatusCode::CREATED, Json(json!({ "webhook": out }))).into_response())
}

async fn show(
    State(s): State<ZendeskState>,
    method: Method,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    authorize(&s, &method, &headers, Some(Scope::Webhooks))?;
    let db = s.lock();
    let w = db.webhooks.get(&id).ok_or_else(not_found)?;
    Ok(Json(json!({ "webhook": webhook_json(w) })).into_response())
}

/// PUT replaces the whole object: a field left out is gone, including the
/// authentication (the conservative reading of "whole object").
async fn replace(
    State(s): State<ZendeskState>,
    method: Method,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let caller = authorize(&s, &method, &headers, Some(Scope::Webhooks))?;
    let body = body_json(&body)?;
    let f = whole(wrapped(&body)?)?;
    let mut db = s.lock();
    let now = db.now();
    let w = db.webhooks.get_mut(&id).ok_or_else(not_found)?;
    w.name = f.name;
    w.description = f.description;
    w.endpoint = f.endpoint;
    w.http_method = f.http_method;
    w.request_format = f.request_format;
    w.status = f.status;
    w.subscriptions = f.subscriptions;
    w.authentication = f.authentication;
    w.custom_headers = f.custom_headers;
    w.updated_at = now;
    w.updated_by = caller.user_id;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// PATCH merges: fields sent replace theirs (an object merges key by key, as
/// JSON merge patch does; `null` removes), the rest stay.
async fn patch(
    State(s): State<ZendeskState>,
    method: Method,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let caller = authorize(&s, &method, &headers, Some(Scope::Webhooks))?;
    let body = body_json(&body)?;
    let changes = wrapped(&body)?.clone();
    let mut db = s.lock();
    let now = db.now();
    let w = db.webhooks.get_mut(&id).ok_or_else(not_found)?;
    let mut current = json!({
        "name": w.name,
        "description": w.description,
        "endpoint": w.endpoint,
        "http_method": w.http_method,
        "request_format": w.request_format,
        "status": w.status,
        "subscriptions": w.subscriptions,
        "authentication": w.authentication,
        "custom_headers": w.custom_headers,
    });
    merge_patch(&mut current, &Value::Object(changes));
    let f = whole(
        current
            .as_object()
            .ok_or_else(|| invalid("webhook is required"))?,
    )?;
    w.name = f.name;
    w.description = f.description;
    w.endpoint = f.endpoint;
    w.http_method = f.http_method;
    w.request_format = f.request_format;
    w.status = f.status;
    w.subscriptions = f.subscriptions;
    w.authentication = f.authentication;
    w.custom_headers = f.custom_headers;
    w.updated_at = now;
    w.updated_by = caller.user_id;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// RFC 7386 JSON merge patch.
fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    if let Value::Object(target) = target {
        for (k, v) in patch {
            if v.is_null() {
                target.remove(k);
            } else {
                merge_patch(target.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    }
}

async fn delete(
    State(s): State<ZendeskState>,
    method: Method,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    authorize(&s, &method, &headers, Some(Scope::Webhooks))?;
    s.lock().webhooks.remove(&id).ok_or_else(not_found)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

fn secret_json(w: &Webhook) -> Value {
    json!({ "signing_secret": { "algorithm": "sha256", "secret": w.signing_secret.expose() } })
}

async fn show_secret(
    State(s): State<ZendeskState>,
    method: Method,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    authorize(&s, &method, &headers, Some(Scope::Webhooks))?;
    let db = s.lock();
    let w = db.webhooks.get(&id).ok_or_else(not_found)?;
    Ok(Json(secret_json(w)).into_response())
}

async fn reset_secret(
    State(s): State<ZendeskState>,
    method: Method,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    authorize(&s, &method, &headers, Some(Scope::Webhooks))?;
    let mut db = s.lock();
    let w = db.webhooks.get_mut(&id).ok_or_else(not_found)?;
    w.signing_secret = url_safe_token("", 43);
    Ok((StatusCode::CREATED, Json(secret_json(w))).into_response())
}

/// The test call. With `webhook_id`, the stored webhook fills every field
/// the body leaves out, its credentials included. The simulator records
/// the call and answers with the status set for the endpoint (default 200)
/// under a `response` key (the wrapper key is not verified).
async fn test(
    State(s): State<ZendeskState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    authorize(&s, &method, &headers, Some(Scope::Webhooks))?;
    let body = body_json(&body)?;
    let given = body
        .get("webhook")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let webhook_id = query_value(&uri, "webhook_id");
    let mut db = s.lock();
    let stored = match &webhook_id {
        Some(id) => Some(db.webhooks.get(id).ok_or_else(not_found)?.clone()),
        None => None,
    };
    let pick = |k: &str, fallback: Option<String>| {
        given
            .get(k)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .or(fallback)
            .ok_or_else(|| invalid(format!("{k} is required")))
    };
    let endpoint = pick("endpoint", stored.as_ref().map(|w| w.endpoint.clone()))?;
    let http_method = pick(
        "http_method",
        stored.as_ref().map(|w| w.http_method.clone()),
    )?;
    let request_format = pick(
        "request_format",
        stored.as_ref().map(|w| w.request_format.clone()),
    )?;
    let authentication = match given.get("authentication").filter(|a| !a.is_null()) {
        Some(auth) => {
            check_auth(auth)?;
            Some(auth.clone())
        }
        None => stored.and_then(|w| w.authentication),
    };
    let status = db.endpoint_status.get(&endpoint).copied().unwrap_or(200);
    db.webhook_tests.push(WebhookTest {
        webhook_id,
        endpoint,
        http_method,
        request_format,
        authentication,
        status,
    });
    Ok(Json(json!({
        "response": { "status": status, "headers": [], "body": "" }
    }))
    .into_response())
}
