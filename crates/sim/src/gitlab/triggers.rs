//! Pipeline trigger tokens (`lib/api/ci/triggers.rb`): no rotate endpoint, so
//! rotation means create, apply, delete. Only the owner sees the full token;
//! everyone else sees `Ci::Trigger#short_token`, the first 4 characters after
//! the `glptt-` prefix.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use super::GitLabState;
use super::api::{
    ApiError, Caller, Need, Req, authenticate, json_created, json_ok, paginate,
    require_project_level, ts, ts_opt, user_basic, visible_project,
};
use super::model::{Db, MAINTAINER, Pipeline, Trigger};
use crate::values::hex_token;

pub(crate) const TRIGGER_PREFIX: &str = "glptt-";

pub(crate) fn routes() -> Router<GitLabState> {
    Router::new()
        .route(
            "/projects/{id}/triggers",
            get(list_triggers).post(create_trigger),
        )
        .route(
            "/projects/{id}/triggers/{trigger_id}",
            get(show_trigger).put(update_trigger).delete(delete_trigger),
        )
        .route("/projects/{id}/trigger/pipeline", post(run_pipeline))
}

/// The 4 characters GitLab shows to everyone but the owner.
pub(crate) fn short_token(token: &str) -> String {
    token
        .strip_prefix(TRIGGER_PREFIX)
        .unwrap_or(token)
        .chars()
        .take(4)
        .collect()
}

/// A fresh `glptt-` + 40 hex value no other token has.
pub(crate) fn fresh_trigger_value(db: &Db) -> keycycle_secret::SecretValue {
    loop {
        let value = hex_token(TRIGGER_PREFIX, 20);
        if !db.value_in_use(value.expose()) {
            return value;
        }
    }
}

fn trigger_json(db: &Db, req: &Req, caller: &Caller, trigger: &Trigger) -> Value {
    let token = if trigger.owner_id == caller.user_id {
        trigger.token.expose().to_owned()
    } else {
        short_token(trigger.token.expose())
    };
    json!({
        "id": trigger.id,
        "token": token,
        "description": trigger.description,
        "created_at": ts(trigger.created_at),
        "updated_at": ts(trigger.updated_at),
        "last_used": ts_opt(trigger.last_used),
        "expires_at": null,
        "owner": user_basic(db, req, trigger.owner_id),
    })
}

/// Authenticates and checks Maintainer (`admin_build` / `manage_trigger`).
fn maintainer(db: &mut Db, req: &Req, raw: &str) -> Result<(Caller, u64), ApiError> {
    let caller = authenticate(db, req, Need::for_method(&req.method))?;
    let project_id = visible_project(db, &caller, raw)?;
    require_project_level(db, &caller, project_id, MAINTAINER)?;
    Ok((caller, project_id))
}

fn find_trigger(db: &Db, project_id: u64, raw: &str) -> Result<u64, ApiError> {
    raw.parse::<u64>()
        .ok()
        .filter(|id| {
            db.triggers
                .get(id)
                .is_some_and(|t| t.project_id == project_id)
        })
        .ok_or_else(|| ApiError::not_found(Some("Trigger")))
}

async fn list_triggers(
    State(state): State<GitLabState>,
    Path(raw): Path<String>,
    req: Req,
) -> Result<Response, ApiError> {
    let mut db = state.lock();
    let (caller, project_id) = maintainer(&mut db, &req, &raw)?;
    let items: Vec<Value> = db
        .triggers
        .values()
        .filter(|t| t.project_id == project_id)
        .map(|t| trigger_json(&db, &req, &caller, t))
        .collect();
    paginate(&req, items)
}

async fn show_trigger(
    State(state): State<GitLabState>,
    Path((raw, trigger_raw)): Path<(String, String)>,
    req: Req,
) -> Result<Response, ApiError> {
    let mut db = state.lock();
    let (caller, project_id) = maintainer(&mut db, &req, &raw)?;
    let id = find_trigger(&db, project_id, &trigger_raw)?;
    Ok(json_ok(trigger_json(&db, &req, &caller, &db.triggers[&id])))
}

async fn create_trigger(
    State(state): State<GitLabState>,
    Path(raw): Path<String>,
    req: Req,
) -> Result<Response, ApiError> {
    let mut db = state.lock();
    let (caller, project_id) = maintainer(&mut db, &req, &raw)?;
    let description = req.params.required("description")?;
    let id = db.ids.trigger();
    let now = db.now();
    let token = fresh_trigger_value(&db);
    db.triggers.insert(
        id,
        Trigger {
            id,
            project_id,
            description,
            owner_id: caller.user_id,
            token,
            created_at: now,
            updated_at: now,
            last_used: None,
        },
    );
    Ok(json_created(trigger_json(
        &db,
        &req,
        &caller,
        &db.triggers[&id],
    )))
}

async fn update_trigger(
    State(state): State<GitLabState>,
    Path((raw, trigger_raw)): Path<(String, String)>,
    req: Req,
) -> Result<Response, ApiError> {
    let mut db = state.lock();
    let (caller, project_id) = maintainer(&mut db, &req, &raw)?;
    let id = find_trigger(&db, project_id, &trigger_raw)?;
    // `admin_trigger` belongs to the owner alone (`Ci::PipelineTriggers::
    // UpdateService`).
    if db.triggers[&id].owner_id != caller.user_id {
        return Err(ApiError::forbidden_because(
            "The current user is not authorized to update the pipeline trigger token",
        ));
    }
    let now = db.now();
    if let Some(trigger) = db.triggers.get_mut(&id) {
        if let Some(description) = req.params.str("description") {
            trigger.description = description;
        }
        trigger.updated_at = now;
    }
    Ok(json_ok(trigger_json(&db, &req, &caller, &db.triggers[&id])))
}

async fn delete_trigger(
    State(state): State<GitLabState>,
    Path((raw, trigger_raw)): Path<(String, String)>,
    req: Req,
) -> Result<Response, ApiError> {
    let mut db = state.lock();
    let (_caller, project_id) = maintainer(&mut db, &req, &raw)?;
    let id = find_trigger(&db, project_id, &trigger_raw)?;
    db.triggers.remove(&id);
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /projects/:id/trigger/pipeline` with `token` and `ref`: proves a
/// trigger token works. Authenticated by the trigger token alone.
async fn run_pipeline(
    State(state): State<GitLabState>,
    Path(raw): Path<String>,
    req: Req,
) -> Result<Response, ApiError> {
    let mut db = state.lock();
    let ref_name = req.params.required("ref")?;
    let token = req.params.required("token")?;
    let project_id = db
        .project_by_ref(&raw)
        .ok_or_else(|| ApiError::not_found(None))?;
    let trigger_id = db
        .triggers
        .values()
        .find(|t| t.project_id == project_id && t.token.expose() == token)
        .map(|t| t.id)
        .ok_or_else(|| ApiError::not_found(None))?;
    let now = db.now();
    if let Some(trigger) = db.triggers.get_mut(&trigger_id) {
        trigger.last_used = Some(now);
    }
    let id = db.ids.pipeline();
    db.pipelines.push(Pipeline {
        id,
        project_id,
        trigger_id,
        ref_name: ref_name.clone(),
        created_at: now,
    });
    Ok(json_created(json!({
        "id": id,
        "iid": id,
        "project_id": project_id,
        "sha": "0000000000000000000000000000000000000000",
        "ref": ref_name,
        "status": "created",
        "source": "trigger",
        "created_at": ts(now),
        "updated_at": ts(now),
        "web_url": format!("{}/-/pipelines/{id}", req.base_url()),
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_token_drops_the_prefix() {
        assert_eq!(short_token("glptt-abcdef0123"), "abcd");
        assert_eq!(short_token("12345678"), "1234");
    }
}
