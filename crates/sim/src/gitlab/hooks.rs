//! Project webhooks (`lib/api/project_hooks.rb`, `doc/api/project_webhooks.md`):
//! Maintainer only; `url` required on create and edit; the secret `token` is
//! write-only; and editing the URL without sending a token clears the token.
//! URL variables and custom headers are write-only too: answers show their
//! keys, never their values.
//!
//! The test endpoint (`POST .../hooks/:hook_id/test/:trigger`,
//! `API::Hooks::TestHooks`) records the delivery GitLab would make instead
//! of making it: the simulator never connects anywhere. What the receiving
//! URL answers is set per URL (default 200).

use std::collections::BTreeMap;

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use keycycle_secret::SecretValue;
use serde_json::{Value, json};

use super::GitLabState;
use super::api::{
    ApiError, Need, Req, authenticate, json_created, json_ok, paginate, require_project_level, ts,
    visible_project,
};
use super::model::{
    Db, EndpointAnswer, HOOK_FLAGS, HOOK_TEST_TRIGGERS, HOOK_TESTS_PER_MINUTE, Hook, HookTest,
    MAINTAINER,
};
use super::params::Params;

pub(crate) fn routes() -> Router<GitLabState> {
    Router::new()
        .route("/projects/{id}/hooks", get(list_hooks).post(create_hook))
        .route(
            "/projects/{id}/hooks/{hook_id}",
            get(show_hook).put(update_hook).delete(delete_hook),
        )
        .route(
            "/projects/{id}/hooks/{hook_id}/test/{trigger}",
            post(test_hook),
        )
}

/// `[{"key": ...}]`: how GitLab shows URL variables and custom headers.
fn keys_only(values: &BTreeMap<String, SecretValue>) -> Value {
    values.keys().map(|key| json!({ "key": key })).collect()
}

/// `Entities::ProjectHook`; the secret token is never part of it.
fn hook_json(hook: &Hook) -> Value {
    let mut body = json!({
        "id": hook.id,
        "url": hook.url,
        "name": hook.name,
        "description": hook.description,
        "project_id": hook.project_id,
        "push_events_branch_filter": hook.push_events_branch_filter,
        "branch_filter_strategy": hook.branch_filter_strategy,
        "custom_webhook_template": hook.custom_webhook_template,
        "alert_status": "executable",
        "disabled_until": null,
        "url_variables": keys_only(&hook.url_variables),
        "custom_headers": keys_only(&hook.custom_headers),
        "created_at": ts(hook.created_at),
    });
    for (flag, value) in &hook.flags {
        body[flag.as_str()] = json!(value);
    }
    body
}

pub(crate) fn default_flags() -> BTreeMap<String, bool> {
    HOOK_FLAGS
        .iter()
        .map(|(name, default)| ((*name).to_owned(), *default))
        .collect()
}

/// GitLab answers an unusable URL with 422 `{"error":"Invalid url given"}`.
fn check_url(url: &str) -> Result<(), ApiError> {
    match url::Url::parse(url) {
        Ok(parsed) if matches!(parsed.scheme(), "http" | "https") && parsed.host().is_some() => {
            Ok(())
        }
        _ => Err(ApiError::Grape(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid url given".into(),
        )),
    }
}

/// Applies the optional attributes present in `params`.
fn apply_attributes(hook: &mut Hook, params: &Params) -> Result<(), ApiError> {
    for (flag, _) in HOOK_FLAGS {
        if let Some(value) = params.bool(flag)? {
            hook.flags.insert(flag.to_owned(), value);
        }
    }
    if let Some(name) = params.str("name") {
        hook.name = Some(name);
    }
    if let Some(description) = params.str("description") {
        hook.description = Some(description);
    }
    if let Some(filter) = params.str("push_events_branch_filter") {
        hook.push_events_branch_filter = Some(filter);
    }
    match params.str("branch_filter_strategy").as_deref() {
        None => {}
        Some(s @ ("wildcard" | "regex" | "all_branches")) => hook.branch_filter_strategy = s.into(),
        Some(_) => return Err(ApiError::not_a_valid_value("branch_filter_strategy")),
    }
    if let Some(template) = params.str("custom_webhook_template") {
        hook.custom_webhook_template = Some(template);
    }
    if let Some(variables) = key_values(params, "url_variables")? {
        hook.url_variables = variables;
    }
    if let Some(headers) = key_values(params, "custom_headers")? {
        hook.custom_headers = headers;
    }
    Ok(())
}

/// `url_variables` and `custom_headers`: arrays of `{key, value}`, which
/// replace the hook's whole set when sent.
fn key_values(
    params: &Params,
    name: &str,
) -> Result<Option<BTreeMap<String, SecretValue>>, ApiError> {
    let Some(items) = params.objects(name)? else {
        return Ok(None);
    };
    let mut out = BTreeMap::new();
    for item in items {
        let text = |field: &str| item.get(field).and_then(Value::as_str).map(str::to_owned);
        let key = text("key")
            .filter(|k| !k.is_empty())
            .ok_or_else(|| ApiError::missing(&format!("{name}[key]")))?;
        let value = text("value").ok_or_else(|| ApiError::missing(&format!("{name}[value]")))?;
        out.insert(key, SecretValue::new(value));
    }
    Ok(Some(out))
}

fn secret(params: &Params) -> Option<Option<SecretValue>> {
    params
        .str("token")
        .map(|t| (!t.is_empty()).then(|| SecretValue::new(t)))
}

fn maintainer_project(db: &mut Db, req: &Req, raw: &str) -> Result<u64, ApiError> {
    let caller = authenticate(db, req, Need::for_method(&req.method))?;
    let project_id = visible_project(db, &caller, raw)?;
    require_project_level(db, &caller, project_id, MAINTAINER)?;
    Ok(project_id)
}

/// `user_project.hooks.find(id)`: a miss raises RecordNotFound, so 404
/// "Not found". The docs call DELETE idempotent in that repeating it leaves
/// the same state; the answer to a hook already gone is still this 404.
fn find_hook(db: &Db, project_id: u64, raw: &str) -> Result<u64, ApiError> {
    raw.parse::<u64>()
        .ok()
        .filter(|id| db.hooks.get(id).is_some_and(|h| h.project_id == project_id))
        .ok_or_else(ApiError::record_not_found)
}

async fn list_hooks(
    State(state): State<GitLabState>,
    Path(raw): Path<String>,
    req: Req,
) -> Result<Response, ApiError> {
    let mut db = state.lock();
    let project_id = maintainer_project(&mut db, &req, &raw)?;
    let items: Vec<Value> = db
        .hooks
        .values()
        .filter(|h| h.project_id == project_id)
        .map(hook_json)
        .collect();
    paginate(&req, items)
}

async fn show_hook(
    State(state): State<GitLabState>,
    Path((raw, hook_raw)): Path<(String, String)>,
    req: Req,
) -> Result<Response, ApiError> {
    let mut db = state.lock();
    let project_id = maintainer_project(&mut db, &req, &raw)?;
    let id = find_hook(&db, project_id, &hook_raw)?;
    Ok(json_ok(hook_json(&db.hooks[&id])))
}

async fn create_hook(
    State(state): State<GitLabState>,
    Path(raw): Path<String>,
    req: Req,
) -> Result<Response, ApiError> {
    let mut db = state.lock();
    let project_id = maintainer_project(&mut db, &req, &raw)?;
    let url = req.params.required("url")?;
    check_url(&url)?;
    let mut hook = Hook {
        id: 0,
        project_id,
        url,
        token: secret(&req.params).flatten(),
        name: None,
        description: None,
        flags: default_flags(),
        push_events_branch_filter: None,
        branch_filter_strategy: "wildcard".into(),
        custom_webhook_template: None,
        url_variables: BTreeMap::new(),
        custom_headers: BTreeMap::new(),
        created_at: db.now(),
    };
    apply_attributes(&mut hook, &req.params)?;
    hook.id = db.ids.hook();
    let body = hook_json(&hook);
    db.hooks.insert(hook.id, hook);
    Ok(json_created(body))
}

async fn update_hook(
    State(state): State<GitLabState>,
    Path((raw, hook_raw)): Path<(String, String)>,
    req: Req,
) -> Result<Response, ApiError> {
    let mut db = state.lock();
    let project_id = maintainer_project(&mut db, &req, &raw)?;
    let id = find_hook(&db, project_id, &hook_raw)?;
    let url = req.params.required("url")?;
    check_url(&url)?;
    let Some(hook) = db.hooks.get_mut(&id) else {
        return Err(ApiError::record_not_found());
    };
    let mut edited = hook.clone();
    apply_attributes(&mut edited, &req.params)?;
    let url_changed = edited.url != url;
    edited.url = url;
    match secret(&req.params) {
        Some(token) => edited.token = token,
        // `WebHook#reset_token`: a new URL without a new token drops the
        // old token, so a leaked secret cannot follow the hook elsewhere.
        None if url_changed => edited.token = None,
        None => {}
    }
    let body = hook_json(&edited);
    *hook = edited;
    Ok(json_ok(body))
}

async fn delete_hook(
    State(state): State<GitLabState>,
    Path((raw, hook_raw)): Path<(String, String)>,
    req: Req,
) -> Result<Response, ApiError> {
    let mut db = state.lock();
    let project_id = maintainer_project(&mut db, &req, &raw)?;
    let id = find_hook(&db, project_id, &hook_raw)?;
    db.hooks.remove(&id);
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The test delivery. Checks in GitLab's order: the project and the
/// Maintainer role, the trigger's value (Grape), the hook, then the rate
/// limit of 5 tests per hook and minute (`check_rate_limit!`). Then it
/// records the delivery and answers as `API::Hooks::TestHooks` does: 201
/// `{"message":"201 Created"}` when the receiver answered 2xx, else 422 with
/// the receiver's body (or the connection error) as the message.
async fn test_hook(
    State(state): State<GitLabState>,
    Path((raw, hook_raw, trigger)): Path<(String, String, String)>,
    req: Req,
) -> Result<Response, ApiError> {
    let mut db = state.lock();
    let project_id = maintainer_project(&mut db, &req, &raw)?;
    if !HOOK_TEST_TRIGGERS.contains(&trigger.as_str()) {
        return Err(ApiError::not_a_valid_value("trigger"));
    }
    let id = find_hook(&db, project_id, &hook_raw)?;
    let now = db.now();
    let window_start = now - time::Duration::minutes(1);
    let recent: Vec<time::OffsetDateTime> = db
        .hook_tests
        .iter()
        .filter(|t| t.hook_id == id && t.at > window_start)
        .map(|t| t.at)
        .collect();
    if recent.len() >= HOOK_TESTS_PER_MINUTE {
        let oldest = recent.iter().min().copied().unwrap_or(now);
        let retry_after = (oldest + time::Duration::minutes(1) - now)
            .whole_seconds()
            .max(1);
        return Ok(too_many_tests(retry_after as u64));
    }
    let hook = db.hooks[&id].clone();
    let answer = db
        .endpoints
        .get(&hook.url)
        .cloned()
        .unwrap_or(EndpointAnswer {
            status: 200,
            body: String::new(),
        });
    db.hook_tests.push(HookTest {
        hook_id: id,
        project_id,
        url: hook.url.clone(),
        trigger,
        token: hook.token.clone(),
        status: answer.status,
        at: now,
    });
    if (200..300).contains(&answer.status) {
        return Ok(json_created(json!({ "message": "201 Created" })));
    }
    let message = if answer.status == 0 {
        let host = url::Url::parse(&hook.url)
            .ok()
            .and_then(|u| u.host_str().map(str::to_owned))
            .unwrap_or_default();
        format!("Failed to open TCP connection to {host} (Connection refused)")
    } else {
        answer.body
    };
    Ok((
        StatusCode::UNPROCESSABLE_ENTITY,
        Json(json!({ "message": message })),
    )
        .into_response())
}

/// `check_rate_limit!`'s answer, `render_api_error!({error: ...}, 429)`,
/// with `Retry-After`; the outer middleware adds the RateLimit-* headers.
fn too_many_tests(retry_after: u64) -> Response {
    let mut response = (
        StatusCode::TOO_MANY_REQUESTS,
        Json(json!({
            "message": {
                "error": "This endpoint has been requested too many times. Try again later."
            }
        })),
    )
        .into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
    response
}
