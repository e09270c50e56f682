//! Project CI/CD variables (`lib/api/ci/variables.rb`): Maintainer only,
//! keyed by `key` + `environment_scope`, with GitLab's 409 for ambiguous keys,
//! its uniqueness message and its masked-value rule.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

use super::GitLabState;
use super::api::{
    ApiError, Need, Req, authenticate, json_created, json_ok, paginate, require_project_level,
    visible_project,
};
use super::model::{Db, MAINTAINER, Variable, maskable, valid_variable_key};
use keycycle_secret::SecretValue;

/// `API::Helpers::VariablesHelpers#find_variable`.
const AMBIGUOUS: &str =
    "There are multiple variables with provided parameters. Please use 'filter[environment_scope]'";

pub(crate) fn routes() -> Router<GitLabState> {
    Router::new()
        .route(
            "/projects/{id}/variables",
            get(list_variables).post(create_variable),
        )
        .route(
            "/projects/{id}/variables/{key}",
            get(show_variable)
                .put(update_variable)
                .delete(delete_variable),
        )
}

/// `Entities::Ci::Variable`. Hidden variables never show their value.
fn variable_json(variable: &Variable) -> Value {
    let value = if variable.hidden {
        Value::Null
    } else {
        json!(variable.value.expose())
    };
    json!({
        "variable_type": variable.variable_type,
        "key": variable.key,
        "value": value,
        "hidden": variable.hidden,
        "protected": variable.protected,
        "masked": variable.masked,
        "raw": variable.raw,
        "environment_scope": variable.environment_scope,
        "description": variable.description,
    })
}

fn maintainer_project(db: &mut Db, req: &Req, raw: &str) -> Result<u64, ApiError> {
    let caller = authenticate(db, req, Need::for_method(&req.method))?;
    let project_id = visible_project(db, &caller, raw)?;
    require_project_level(db, &caller, project_id, MAINTAINER)?;
    Ok(project_id)
}

/// The index of the one variable `key` (narrowed by
/// `filter[environment_scope]`) names: 404 when none, 409 when several.
fn find_variable(db: &Db, project_id: u64, key: &str, req: &Req) -> Result<usize, ApiError> {
    let scope = req.params.nested("filter", "environment_scope");
    let matches: Vec<usize> = db
        .variables
        .iter()
        .enumerate()
        .filter(|(_, v)| {
            v.project_id == project_id
                && v.key == key
                && scope.as_deref().is_none_or(|s| v.environment_scope == s)
        })
        .map(|(i, _)| i)
        .collect();
    match matches.as_slice() {
        [] => Err(ApiError::not_found(Some("Variable"))),
        [one] => Ok(*one),
        _ => Err(ApiError::conflict(AMBIGUOUS)),
    }
}

/// The model validations GitLab runs on save, in its order, collected into
/// one `{"message": {field: [...]}}` body.
fn validate(db: &Db, variable: &Variable, skip: Option<usize>) -> Result<(), ApiError> {
    let mut fields = std::collections::BTreeMap::<String, Vec<String>>::new();
    if !valid_variable_key(&variable.key) {
        fields
            .entry("key".into())
            .or_default()
            .push("can contain only letters, digits and '_'.".into());
    }
    let taken = db.variables.iter().enumerate().any(|(i, v)| {
        Some(i) != skip
            && v.project_id == variable.project_id
            && v.key == variable.key
            && v.environment_scope == variable.environment_scope
    });
    if taken {
        fields
            .entry("key".into())
            .or_default()
            .push(format!("({}) has already been taken", variable.key));
    }
    if variable.masked && !maskable(variable.value.expose()) {
        fields
            .entry("value".into())
            .or_default()
            .push("is invalid".into());
    }
    if fields.is_empty() {
        Ok(())
    } else {
        Err(ApiError::Fields(StatusCode::BAD_REQUEST, fields))
    }
}

fn variable_type(req: &Req) -> Result<Option<String>, ApiError> {
    match req.params.str("variable_type") {
        None => Ok(None),
        Some(t) if t == "env_var" || t == "file" => Ok(Some(t)),
        Some(_) => Err(ApiError::not_a_valid_value("variable_type")),
    }
}

async fn list_variables(
    State(state): State<GitLabState>,
    Path(raw): Path<String>,
    req: Req,
) -> Result<Response, ApiError> {
    let mut db = state.lock();
    let project_id = maintainer_project(&mut db, &req, &raw)?;
    let items: Vec<Value> = db
        .variables
        .iter()
        .filter(|v| v.project_id == project_id)
        .map(variable_json)
        .collect();
    paginate(&req, items)
}

async fn show_variable(
    State(state): State<GitLabState>,
    Path((raw, key)): Path<(String, String)>,
    req: Req,
) -> Result<Response, ApiError> {
    let mut db = state.lock();
    let project_id = maintainer_project(&mut db, &req, &raw)?;
    let index = find_variable(&db, project_id, &key, &req)?;
    Ok(json_ok(variable_json(&db.variables[index])))
}

async fn create_variable(
    State(state): State<GitLabState>,
    Path(raw): Path<String>,
    req: Req,
) -> Result<Response, ApiError> {
    let mut db = state.lock();
    let project_id = maintainer_project(&mut db, &req, &raw)?;
    let params = &req.params;
    let key = params.str("key").ok_or_else(|| ApiError::missing("key"))?;
    let value = params
        .str("value")
        .ok_or_else(|| ApiError::missing("value"))?;
    let masked_and_hidden = params.bool("masked_and_hidden")?.unwrap_or(false);
    let variable = Variable {
        project_id,
        key: key.trim().to_owned(),
        value: SecretValue::new(value),
        masked: masked_and_hidden || params.bool("masked")?.unwrap_or(false),
        protected: params.bool("protected")?.unwrap_or(false),
        raw: params.bool("raw")?.unwrap_or(false),
        hidden: masked_and_hidden,
        variable_type: variable_type(&req)?.unwrap_or_else(|| "env_var".into()),
        environment_scope: params
            .str("environment_scope")
            .unwrap_or_else(|| "*".into()),
        description: params.str("description"),
    };
    validate(&db, &variable, None)?;
    let body = variable_json(&variable);
    db.variables.push(variable);
    Ok(json_created(body))
}

async fn update_variable(
    State(state): State<GitLabState>,
    Path((raw, key)): Path<(String, String)>,
    req: Req,
) -> Result<Response, ApiError> {
    let mut db = state.lock();
    let project_id = maintainer_project(&mut db, &req, &raw)?;
    let index = find_variable(&db, project_id, &key, &req)?;
    let params = &req.params;
    let value = params
        .str("value")
        .ok_or_else(|| ApiError::missing("value"))?;
    let current = &db.variables[index];
    let updated = Variable {
        project_id,
        key: current.key.clone(),
        value: SecretValue::new(value),
        masked: params.bool("masked")?.unwrap_or(current.masked),
        protected: params.bool("protected")?.unwrap_or(current.protected),
        raw: params.bool("raw")?.unwrap_or(current.raw),
        hidden: current.hidden,
        variable_type: variable_type(&req)?.unwrap_or_else(|| current.variable_type.clone()),
        environment_scope: params
            .str("environment_scope")
            .unwrap_or_else(|| current.environment_scope.clone()),
        description: params
            .str("description")
            .or_else(|| current.description.clone()),
    };
    validate(&db, &updated, Some(index))?;
    let body = variable_json(&updated);
    db.variables[index] = updated;
    Ok(json_ok(body))
}

async fn delete_variable(
    State(state): State<GitLabState>,
    Path((raw, key)): Path<(String, String)>,
    req: Req,
) -> Result<Response, ApiError> {
    let mut db = state.lock();
    let project_id = maintainer_project(&mut db, &req, &raw)?;
    let index = find_variable(&db, project_id, &key, &req)?;
    db.variables.remove(index);
    Ok(StatusCode::NO_CONTENT.into_response())
}
