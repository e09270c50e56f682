//! Project webhooks (`lib/api/project_hooks.rb`, `doc/api/project_webhooks.md`):
//! Maintainer only; `url` required on create and edit; the secret `token` is
//! write-only; and editing the URL without sending a token clears the token.

use std::collections::BTreeMap;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use keycycle_secret::SecretValue;
use serde_json::{Value, json};

use super::GitLabState;
use super::api::{
    ApiError, Need, Req, authenticate, json_created, json_ok, paginate, require_project_level, ts,
    visible_project,
};
use super::model::{Db, HOOK_FLAGS, Hook, MAINTAINER};
use super::params::Params;

pub(crate) fn routes() -> Router<GitLabState> {
    Router::new()
        .route("/projects/{id}/hooks", get(list_hooks).post(create_hook))
        .route(
            "/projects/{id}/hooks/{hook_id}",
            get(show_hook).put(update_hook).delete(delete_hook),
        )
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
        "url_variables": [],
        "custom_headers": [],
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
    Ok(())
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
