//! `GET /projects/:id`: lets a client check it can see a project (by id or
//! URL-encoded path) before touching its tokens, variables or hooks.

use axum::Router;
use axum::extract::{Path, State};
use axum::response::Response;
use axum::routing::get;
use serde_json::json;

use super::GitLabState;
use super::api::{ApiError, Need, Req, authenticate, json_ok, visible_project};

pub(crate) fn routes() -> Router<GitLabState> {
    Router::new().route("/projects/{id}", get(show_project))
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
