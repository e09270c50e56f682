//! `GET /projects/:id` and `GET /groups/:id`: let a client check it can see
//! a project or group (by id or URL-encoded full path) before touching its
//! tokens, variables or hooks.

use axum::Router;
use axum::extract::{Path, State};
use axum::response::Response;
use axum::routing::get;
use serde_json::json;

use super::GitLabState;
use super::api::{ApiError, Need, Req, authenticate, json_ok, visible_group, visible_project};

pub(crate) fn routes() -> Router<GitLabState> {
    Router::new()
        .route("/projects/{id}", get(show_project))
        .route("/groups/{id}", get(show_group))
}

/// GitLab's `Group` entity, reduced to the fields clients look at. Groups are
/// private here, so 404 covers both "missing" and "not a member", as in
/// GitLab.
async fn show_group(
    State(state): State<GitLabState>,
    Path(raw): Path<String>,
    req: Req,
) -> Result<Response, ApiError> {
    let mut db = state.lock();
    let caller = authenticate(&mut db, &req, Need::Read)?;
    let id = visible_group(&db, &caller, &raw)?;
    let group = &db.groups[&id];
    // A subgroup's parent is the group whose full path is this one's prefix.
    let parent_id = group.path.rsplit_once('/').and_then(|(parent, _)| {
        db.groups
            .values()
            .find(|g| g.path.eq_ignore_ascii_case(parent))
            .map(|g| g.id)
    });
    Ok(json_ok(json!({
        "id": group.id,
        "name": group.name,
        "path": group.path.rsplit('/').next().unwrap_or(&group.path),
        "full_name": group.name,
        "full_path": group.path,
        "description": "",
        "visibility": "private",
        "parent_id": parent_id,
        "web_url": format!("{}/groups/{}", req.base_url(), group.path),
    })))
}

async fn show_project(
    State(state): State<GitLabState>,
    Path(raw): Path<String>,
    req: Req,
) -> Result<Response, ApiError> {
    let mut db = state.lock();
    let caller = authenticate(&mut db, &req, Need::Read)?;
    let id = visible_project(&db, &caller, &raw)?;
    let project = &db.projects[&id];
    let level = db.project_level(caller.user_id, id);
    let namespace = project
        .path
        .rsplit_once('/')
        .map_or("", |(namespace, _)| namespace);
    Ok(json_ok(json!({
        "id": project.id,
        "name": project.name,
        "path": project.path.rsplit('/').next().unwrap_or(&project.path),
        "path_with_namespace": project.path,
        "namespace": { "full_path": namespace },
        "web_url": format!("{}/{}", req.base_url(), project.path),
        "permissions": { "project_access": level.map(|l| json!({ "access_level": l })) },
    })))
}
