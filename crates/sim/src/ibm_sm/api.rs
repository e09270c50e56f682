//! The Secrets Manager v2 endpoints (secrets-manager-go-sdk
//! `secretsmanagerv2/secrets_manager_v2.go`): secrets, versions, locks and
//! secret groups, with IBM's error shape and bearer authentication.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use keycycle_secret::SecretValue;
use serde_json::{Map, Value, json};
use time::OffsetDateTime;

use super::model::{Db, Lock, Payload, Secret, Version, uuid};
use super::{IbmSmState, generated_password};
use crate::clock::timestamp;

/// Where IBM's errors point for more information.
const MORE_INFO: &str = "https://cloud.ibm.com/apidocs/secrets-manager/secrets-manager-v2";

/// The reference: list limit default 200, at most 1000; locks default 25.
const LIST_DEFAULT: usize = 200;
const LIST_MAX: usize = 1000;
const LOCKS_DEFAULT: usize = 25;
/// The reference: at most 30 labels.
const MAX_LABELS: usize = 30;

/// The `code` of an error with `status`, in the style of IBM's API
/// convention (*not verified* against a live instance).
pub(crate) fn code_for(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "bad_request",
        401 => "unauthorized",
        403 => "forbidden",
        404 => "not_found",
        409 => "conflict",
        412 => "precondition_failed",
        415 => "unsupported_media_type",
        429 => "too_many_requests",
        503 => "service_unavailable",
        _ => "internal_server_error",
    }
}

/// `{"errors":[{"code","message","more_info"}],"trace","status_code"}`.
pub(crate) fn error_body(status: StatusCode, code: &str, message: &str) -> Value {
    json!({
        "errors": [{ "code": code, "message": message, "more_info": MORE_INFO }],
        "trace": uuid(),
        "status_code": status.as_u16(),
    })
}

/// An answer other than success.
#[derive(Debug)]
pub(crate) struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) message: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }

    fn bad(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    fn secret_not_found() -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "Secret not found")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = error_body(self.status, code_for(self.status), &self.message);
        (self.status, Json(body)).into_response()
    }
}

type Answer = Result<Response, ApiError>;

/// Any path the API does not route.
pub(crate) async fn no_route() -> Response {
    ApiError::new(StatusCode::NOT_FOUND, "Not Found").into_response()
}

pub(crate) fn routes() -> Router<IbmSmState> {
    Router::new()
        .route("/api/v2/secrets", post(create_secret).get(list_secrets))
        .route(
            "/api/v2/secrets/{id}",
            get(get_secret).delete(delete_secret),
        )
        .route(
            "/api/v2/secrets/{id}/metadata",
            get(get_metadata).patch(patch_metadata),
        )
        .route(
            "/api/v2/secrets/{id}/versions",
            post(create_version).get(list_versions),
        )
        .route("/api/v2/secrets/{id}/versions/{version}", get(get_version))
        .route(
            "/api/v2/secrets/{id}/versions/{version}/metadata",
            get(get_version_metadata),
        )
        .route("/api/v2/secrets/{id}/locks", get(list_locks))
        .route(
            "/api/v2/secrets/{id}/locks_bulk",
            post(add_locks).delete(remove_locks),
        )
        .route(
            "/api/v2/secret_groups/{group}/secret_types/{secret_type}/secrets/{name}",
            get(get_by_name),
        )
        .route("/api/v2/secret_groups", get(list_groups))
}

/// The IAM id of the caller: a known, unexpired bearer token of the
/// instance's account.
fn authorize(state: &IbmSmState, headers: &HeaderMap) -> Result<String, ApiError> {
    let unauthorized = || ApiError::new(StatusCode::UNAUTHORIZED, "Unauthorized");
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim().to_owned())
        .ok_or_else(unauthorized)?;
    let (iam_id, account) = state.iam().caller(&bearer).ok_or_else(unauthorized)?;
    if account != state.lock().account_id {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "Forbidden: the caller's account does not own this instance",
        ));
    }
    Ok(iam_id)
}

fn body_object(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(ApiError::bad("The request body must be a JSON object")),
    }
}

fn string_field(body: &Map<String, Value>, key: &str) -> Result<Option<String>, ApiError> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(ApiError::bad(format!("Field `{key}` must be a string"))),
    }
}

fn object_field(body: &Map<String, Value>, key: &str) -> Result<Map<String, Value>, ApiError> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(Map::new()),
        Some(Value::Object(m)) => Ok(m.clone()),
        Some(_) => Err(ApiError::bad(format!("Field `{key}` must be an object"))),
    }
}

fn labels_field(body: &Map<String, Value>) -> Result<Vec<String>, ApiError> {
    let labels: Vec<String> = match body.get("labels") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().map(str::to_owned))
            .collect::<Option<_>>()
            .ok_or_else(|| ApiError::bad("Field `labels` must be an array of strings"))?,
        Some(_) => return Err(ApiError::bad("Field `labels` must be an array of strings")),
    };
    if labels.len() > MAX_LABELS {
        return Err(ApiError::bad(format!(
            "A secret can have at most {MAX_LABELS} labels"
        )));
    }
    Ok(labels)
}

/// The SDK's name pattern, simplified: 2 to 256 letters, digits, `_`, `-`
/// and `.`, starting with a letter, digit or `_`.
fn check_name(name: &str) -> Result<(), ApiError> {
    let ok = (2..=256).contains(&name.chars().count())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad(format!(
            "Invalid secret name `{name}`: use 2 to 256 letters, digits, `_`, `-` and `.`"
        )))
    }
}

/// The fields of a new secret, from the API or a control-API seed.
pub(crate) struct NewSecret {
    pub(crate) secret_type: String,
    pub(crate) name: String,
    pub(crate) secret_group_id: String,
    pub(crate) description: String,
    pub(crate) labels: Vec<String>,
    pub(crate) custom_metadata: Map<String, Value>,
    pub(crate) version_custom_metadata: Map<String, Value>,
    pub(crate) expiration_date: Option<String>,
    pub(crate) payload: Option<SecretValue>,
    pub(crate) username: Option<String>,
    pub(crate) password: Option<SecretValue>,
}

/// Checks and stores a new secret with its first version.
pub(crate) fn insert_secret<'a>(
    db: &'a mut Db,
    new: NewSecret,
    created_by: &str,
    now: OffsetDateTime,
) -> Result<&'a Secret, ApiError> {
    check_name(&new.name)?;
    if new.labels.len() > MAX_LABELS {
        return Err(ApiError::bad(format!(
            "A secret can have at most {MAX_LABELS} labels"
        )));
    }
    if !db.group_exists(&new.secret_group_id) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("Secret group `{}` not found", new.secret_group_id),
        ));
    }
    let (payload, username) = match new.secret_type.as_str() {
        "arbitrary" => match new.payload {
            Some(p) if !p.is_empty() => (Payload::Arbitrary(p), None),
            _ => {
                return Err(ApiError::bad(
                    "Field `payload` is required for arbitrary secrets",
                ));
            }
        },
        "username_password" => match new.username {
            Some(u) if !u.is_empty() => (
                Payload::Password(new.password.unwrap_or_else(generated_password)),
                Some(u),
            ),
            _ => {
                return Err(ApiError::bad(
                    "Field `username` is required for username_password secrets",
                ));
            }
        },
        other => {
            return Err(ApiError::bad(format!(
                "Secret type `{other}` is not supported by this simulator (it models \
                 arbitrary and username_password)"
            )));
        }
    };
    // Names are unique per group and type: get-by-name needs exactly that
    // (reference, *inferred*).
    if db
        .by_name(&new.secret_group_id, &new.secret_type, &new.name)
        .is_some()
    {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "A secret with the name `{}` already exists in this secret group for type `{}`",
                new.name, new.secret_type
            ),
        ));
    }
    let id = uuid();
    db.secrets.insert(
        id.clone(),
        Secret {
            id: id.clone(),
            name: new.name,
            secret_type: new.secret_type,
            secret_group_id: new.secret_group_id,
            description: new.description,
            labels: new.labels,
            custom_metadata: new.custom_metadata,
            username,
            expiration_date: new.expiration_date,
            created_by: created_by.to_owned(),
            created_at: now,
            updated_at: now,
            retrieved_at: None,
            versions: vec![Version {
                id: uuid(),
                created_at: now,
                created_by: created_by.to_owned(),
                payload,
                downloaded: false,
                custom_metadata: new.version_custom_metadata,
                locks: Vec::new(),
            }],
        },
    );
    db.secrets.get(&id).ok_or_else(ApiError::secret_not_found)
}

/// A secret's metadata as the API shows it.
fn metadata_json(db: &Db, s: &Secret) -> Value {
    let mut out = json!({
        "id": s.id,
        "name": s.name,
        "secret_type": s.secret_type,
        "secret_group_id": s.secret_group_id,
        "crn": db.crn("secret", &s.id),
        "created_by": s.created_by,
        "created_at": timestamp(s.created_at),
        "updated_at": timestamp(s.updated_at),
        "labels": s.labels,
        "custom_metadata": s.custom_metadata,
        "description": s.description,
        "state": 1,
        "state_description": "active",
        "versions_total": s.versions.len(),
        "locks_total": s.locks_total(),
        "downloaded": s.versions.iter().any(|v| v.downloaded),
    });
    if let Some(at) = s.retrieved_at {
        out["retrieved_at"] = json!(timestamp(at));
    }
    if let Some(date) = &s.expiration_date {
        out["expiration_date"] = json!(date);
    }
    if let Some(username) = &s.username {
        out["username"] = json!(username);
    }
    out
}

/// Adds the value of `version` to `out` in the field its type uses.
fn with_value(mut out: Value, version: &Version) -> Value {
    match &version.payload {
        Payload::Arbitrary(v) => out["payload"] = json!(v.expose()),
        Payload::Password(v) => out["password"] = json!(v.expose()),
    }
    out
}

fn version_json(db: &Db, s: &Secret, index: usize) -> Value {
    let v = &s.versions[index];
    json!({
        "id": v.id,
        "secret_id": s.id,
        "secret_name": s.name,
        "secret_type": s.secret_type,
        "secret_group_id": s.secret_group_id,
        "crn": db.crn("secret", &s.id),
        "created_at": timestamp(v.created_at),
        "created_by": v.created_by,
        "alias": s.alias(index),
        "payload_available": true,
        "auto_rotated": false,
        "downloaded": v.downloaded,
        "version_custom_metadata": v.custom_metadata,
        "locks_total": v.locks.len(),
    })
}

/// Reads a secret with its current value; records the retrieval.
fn read_secret(db: &mut Db, id: &str, now: OffsetDateTime) -> Answer {
    let secret = db
        .secrets
        .get_mut(id)
        .ok_or_else(ApiError::secret_not_found)?;
    secret.retrieved_at = Some(now);
    if let Some(v) = secret.versions.last_mut() {
        v.downloaded = true;
    }
    let secret = &db.secrets[id];
    let current = secret
        .versions
        .last()
        .ok_or_else(ApiError::secret_not_found)?;
    Ok(Json(with_value(metadata_json(db, secret), current)).into_response())
}

async fn create_secret(State(state): State<IbmSmState>, headers: HeaderMap, body: Bytes) -> Answer {
    let caller = authorize(&state, &headers)?;
    let body = body_object(&body)?;
    let new = NewSecret {
        secret_type: string_field(&body, "secret_type")?
            .ok_or_else(|| ApiError::bad("Field `secret_type` is required"))?,
        name: string_field(&body, "name")?
            .ok_or_else(|| ApiError::bad("Field `name` is required"))?,
        secret_group_id: string_field(&body, "secret_group_id")?
            .unwrap_or_else(|| "default".into()),
        description: string_field(&body, "description")?.unwrap_or_default(),
        labels: labels_field(&body)?,
        custom_metadata: object_field(&body, "custom_metadata")?,
        version_custom_metadata: object_field(&body, "version_custom_metadata")?,
        expiration_date: string_field(&body, "expiration_date")?,
        payload: string_field(&body, "payload")?.map(SecretValue::new),
        username: string_field(&body, "username")?,
        password: string_field(&body, "password")?.map(SecretValue::new),
    };
    let now = state.now();
    let mut db = state.lock();
    let id = insert_secret(&mut db, new, &caller, now)?.id.clone();
    let secret = &db.secrets[&id];
    let out = with_value(metadata_json(&db, secret), &secret.versions[0]);
    Ok((StatusCode::CREATED, Json(out)).into_response())
}

async fn get_secret(
    State(state): State<IbmSmState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Answer {
    authorize(&state, &headers)?;
    let now = state.now();
    read_secret(&mut state.lock(), &id, now)
}

async fn get_by_name(
    State(state): State<IbmSmState>,
    headers: HeaderMap,
    Path((group, secret_type, name)): Path<(String, String, String)>,
) -> Answer {
    authorize(&state, &headers)?;
    let now = state.now();
    let mut db = state.lock();
    let id = db
        .group_id_by_name(&group)
        .and_then(|g| db.by_name(&g, &secret_type, &name))
        .map(|s| s.id.clone())
        .ok_or_else(ApiError::secret_not_found)?;
    read_secret(&mut db, &id, now)
}

async fn get_metadata(
    State(state): State<IbmSmState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Answer {
    authorize(&state, &headers)?;
    let db = state.lock();
    let secret = db.secrets.get(&id).ok_or_else(ApiError::secret_not_found)?;
    Ok(Json(metadata_json(&db, secret)).into_response())
}

/// `PATCH .../metadata` takes only `application/merge-patch+json`.
async fn patch_metadata(
    State(state): State<IbmSmState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Answer {
    authorize(&state, &headers)?;
    let merge_patch = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| {
            v.trim()
                .eq_ignore_ascii_case("application/merge-patch+json")
        });
    if !merge_patch {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Unsupported Media Type: use Content-Type application/merge-patch+json",
        ));
    }
    let patch = body_object(&body)?;
    let now = state.now();
    let mut db = state.lock();
    let (group, secret_type) = {
        let s = db.secrets.get(&id).ok_or_else(ApiError::secret_not_found)?;
        (s.secret_group_id.clone(), s.secret_type.clone())
    };
    let name = string_field(&patch, "name")?;
    if let Some(name) = &name {
        check_name(name)?;
        if db
            .by_name(&group, &secret_type, name)
            .is_some_and(|other| other.id != id)
        {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                format!(
                    "A secret with the name `{name}` already exists in this secret group for \
                     type `{secret_type}`"
                ),
            ));
        }
    }
    let labels = patch
        .contains_key("labels")
        .then(|| labels_field(&patch))
        .transpose()?;
    let description = string_field(&patch, "description")?;
    let expiration = string_field(&patch, "expiration_date")?;
    let custom = patch
        .get("custom_metadata")
        .map(|_| object_field(&patch, "custom_metadata"))
        .transpose()?;
    let secret = db
        .secrets
        .get_mut(&id)
        .ok_or_else(ApiError::secret_not_found)?;
    if let Some(name) = name {
        secret.name = name;
    }
    if let Some(labels) = labels {
        secret.labels = labels;
    }
    // Merge patch: a field set to null is removed.
    if patch.contains_key("description") {
        secret.description = description.unwrap_or_default();
    }
    if patch.contains_key("expiration_date") {
        secret.expiration_date = expiration;
    }
    if let Some(custom) = custom {
        secret.custom_metadata = custom;
    }
    secret.updated_at = now;
    let secret = &db.secrets[&id];
    Ok(Json(metadata_json(&db, secret)).into_response())
}

async fn list_secrets(State(state): State<IbmSmState>, headers: HeaderMap, uri: Uri) -> Answer {
    authorize(&state, &headers)?;
    let query: Vec<(String, String)> =
        url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
    let get = |key: &str| query.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
    let number = |key: &str, default: usize| -> Result<usize, ApiError> {
        get(key)
            .map(|v| {
                v.parse::<usize>()
                    .map_err(|_| ApiError::bad(format!("Query `{key}` must be a number")))
            })
            .unwrap_or(Ok(default))
    };
    let offset = number("offset", 0)?;
    let limit = number("limit", LIST_DEFAULT)?;
    if limit == 0 || limit > LIST_MAX {
        return Err(ApiError::bad(format!(
            "Query `limit` must be 1 to {LIST_MAX}"
        )));
    }
    let list = |key: &str| -> Option<Vec<String>> {
        get(key).map(|v| v.split(',').map(|s| s.trim().to_owned()).collect())
    };
    let groups = list("groups");
    let types = list("secret_types");
    let labels = list("match_all_labels");
    // The reference does not say which fields `search` looks at; name and
    // labels are *inferred* from the console's search box.
    let search = get("search").map(|s| s.to_lowercase());
    let db = state.lock();
    let mut found: Vec<&Secret> = db
        .secrets
        .values()
        .filter(|s| {
            groups
                .as_ref()
                .is_none_or(|g| g.contains(&s.secret_group_id))
        })
        .filter(|s| types.as_ref().is_none_or(|t| t.contains(&s.secret_type)))
        .filter(|s| {
            labels
                .as_ref()
                .is_none_or(|l| l.iter().all(|x| s.labels.contains(x)))
        })
        .filter(|s| {
            search.as_ref().is_none_or(|q| {
                s.name.to_lowercase().contains(q)
                    || s.labels.iter().any(|l| l.to_lowercase().contains(q))
            })
        })
        .collect();
    let sort = get("sort").unwrap_or_else(|| "id".into());
    let (descending, key) = match sort.strip_prefix('-') {
        Some(key) => (true, key.to_owned()),
        None => (false, sort.clone()),
    };
    let sort_key = |s: &Secret| -> String {
        match key.as_str() {
            "created_at" => timestamp(s.created_at),
            "updated_at" => timestamp(s.updated_at),
            "retrieved_at" => s.retrieved_at.map(timestamp).unwrap_or_default(),
            "expiration_date" => s.expiration_date.clone().unwrap_or_default(),
            "secret_type" => s.secret_type.clone(),
            "name" => s.name.clone(),
            _ => s.id.clone(),
        }
    };
    if !matches!(
        key.as_str(),
        "id" | "created_at"
            | "updated_at"
            | "retrieved_at"
            | "expiration_date"
            | "secret_type"
            | "name"
    ) {
        return Err(ApiError::bad(format!("Query `sort` cannot be `{sort}`")));
    }
    found.sort_by_key(|s| sort_key(s));
    if descending {
        found.reverse();
    }
    let total = found.len();
    let page: Vec<Value> = found
        .iter()
        .skip(offset)
        .take(limit)
        .map(|s| metadata_json(&db, s))
        .collect();
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("127.0.0.1");
    let href = |at: usize| json!({ "href": format!("http://{host}/api/v2/secrets?limit={limit}&offset={at}") });
    let last = if total == 0 {
        0
    } else {
        (total - 1) / limit * limit
    };
    let mut out = json!({
        "total_count": total,
        "limit": limit,
        "offset": offset,
        "first": href(0),
        "last": href(last),
        "secrets": page,
    });
    if offset + limit < total {
        out["next"] = href(offset + limit);
    }
    if offset > 0 {
        out["previous"] = href(offset.saturating_sub(limit));
    }
    Ok(Json(out).into_response())
}

/// `DELETE /api/v2/secrets/{id}`: 204, or 412 while any version is locked.
async fn delete_secret(
    State(state): State<IbmSmState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Answer {
    authorize(&state, &headers)?;
    let mut db = state.lock();
    let secret = db.secrets.get(&id).ok_or_else(ApiError::secret_not_found)?;
    let locks = secret.locks_total();
    if locks > 0 {
        // IBM docs: a locked secret cannot be deleted until all its locks
        // are removed; the message is *inferred*.
        return Err(ApiError::new(
            StatusCode::PRECONDITION_FAILED,
            format!(
                "The secret is locked and cannot be deleted: it has {locks} lock(s); remove them \
                 first"
            ),
        ));
    }
    db.secrets.remove(&id);
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn create_version(
    State(state): State<IbmSmState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Answer {
    let caller = authorize(&state, &headers)?;
    let body = body_object(&body)?;
    let payload = string_field(&body, "payload")?;
    let password = string_field(&body, "password")?;
    let custom = object_field(&body, "version_custom_metadata")?;
    let now = state.now();
    let mut db = state.lock();
    let secret = db
        .secrets
        .get_mut(&id)
        .ok_or_else(ApiError::secret_not_found)?;
    let value = match secret.secret_type.as_str() {
        "arbitrary" => match payload {
            Some(p) if !p.is_empty() => Payload::Arbitrary(SecretValue::new(p)),
            _ => {
                return Err(ApiError::bad(
                    "Field `payload` is required for arbitrary secrets",
                ));
            }
        },
        _ => Payload::Password(
            password
                .map(SecretValue::new)
                .unwrap_or_else(generated_password),
        ),
    };
    secret.versions.push(Version {
        id: uuid(),
        created_at: now,
        created_by: caller,
        payload: value,
        downloaded: false,
        custom_metadata: custom,
        locks: Vec::new(),
    });
    secret.updated_at = now;
    let secret = &db.secrets[&id];
    let index = secret.versions.len() - 1;
    let out = with_value(version_json(&db, secret, index), &secret.versions[index]);
    Ok((StatusCode::CREATED, Json(out)).into_response())
}

async fn list_versions(
    State(state): State<IbmSmState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Answer {
    authorize(&state, &headers)?;
    let db = state.lock();
    let secret = db.secrets.get(&id).ok_or_else(ApiError::secret_not_found)?;
    let versions: Vec<Value> = (0..secret.versions.len())
        .rev()
        .map(|i| version_json(&db, secret, i))
        .collect();
    Ok(Json(json!({ "versions_total": versions.len(), "versions": versions })).into_response())
}

async fn get_version(
    State(state): State<IbmSmState>,
    headers: HeaderMap,
    Path((id, version)): Path<(String, String)>,
) -> Answer {
    authorize(&state, &headers)?;
    let now = state.now();
    let mut db = state.lock();
    let secret = db
        .secrets
        .get_mut(&id)
        .ok_or_else(ApiError::secret_not_found)?;
    let index = secret
        .version_index(&version)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "Secret version not found"))?;
    secret.versions[index].downloaded = true;
    secret.retrieved_at = Some(now);
    let secret = &db.secrets[&id];
    let out = with_value(version_json(&db, secret, index), &secret.versions[index]);
    Ok(Json(out).into_response())
}

async fn get_version_metadata(
    State(state): State<IbmSmState>,
    headers: HeaderMap,
    Path((id, version)): Path<(String, String)>,
) -> Answer {
    authorize(&state, &headers)?;
    let db = state.lock();
    let secret = db.secrets.get(&id).ok_or_else(ApiError::secret_not_found)?;
    let index = secret
        .version_index(&version)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "Secret version not found"))?;
    Ok(Json(version_json(&db, secret, index)).into_response())
}

fn lock_json(db: &Db, s: &Secret, index: usize, lock: &Lock) -> Value {
    json!({
        "name": lock.name,
        "description": lock.description,
        "attributes": lock.attributes,
        "created_at": timestamp(lock.created_at),
        "updated_at": timestamp(lock.created_at),
        "created_by": lock.created_by,
        "secret_group_id": s.secret_group_id,
        "secret_id": s.id,
        "secret_version_id": s.versions[index].id,
        "secret_version_alias": s.alias(index),
        "crn": db.crn("secret", &s.id),
    })
}

async fn list_locks(
    State(state): State<IbmSmState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    uri: Uri,
) -> Answer {
    authorize(&state, &headers)?;
    let query: Vec<(String, String)> =
        url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
    let number = |key: &str, default: usize| {
        query
            .iter()
            .find(|(k, _)| k == key)
            .and_then(|(_, v)| v.parse::<usize>().ok())
            .unwrap_or(default)
    };
    let (offset, limit) = (
        number("offset", 0),
        number("limit", LOCKS_DEFAULT).clamp(1, LIST_MAX),
    );
    let db = state.lock();
    let secret = db.secrets.get(&id).ok_or_else(ApiError::secret_not_found)?;
    let all: Vec<Value> = secret
        .versions
        .iter()
        .enumerate()
        .rev()
        .flat_map(|(i, v)| v.locks.iter().map(move |l| (i, l)))
        .map(|(i, l)| lock_json(&db, secret, i, l))
        .collect();
    let total = all.len();
    let page: Vec<Value> = all.into_iter().skip(offset).take(limit).collect();
    Ok(Json(json!({
        "total_count": total,
        "limit": limit,
        "offset": offset,
        "locks": page,
    }))
    .into_response())
}

/// The answer of the bulk lock endpoints.
fn locks_summary(s: &Secret) -> Value {
    let versions: Vec<Value> = s
        .versions
        .iter()
        .enumerate()
        .rev()
        .map(|(i, v)| {
            json!({
                "version_id": v.id,
                "version_alias": s.alias(i),
                "locks": v.locks.iter().map(|l| l.name.clone()).collect::<Vec<_>>(),
                "payload_available": true,
            })
        })
        .collect();
    json!({
        "secret_id": s.id,
        "secret_group_id": s.secret_group_id,
        "secret_type": s.secret_type,
        "secret_name": s.name,
        "versions": versions,
    })
}

/// `POST .../locks_bulk` locks the current version; `mode=remove_previous`
/// also removes same-named locks from the previous version.
async fn add_locks(
    State(state): State<IbmSmState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    uri: Uri,
    body: Bytes,
) -> Answer {
    let caller = authorize(&state, &headers)?;
    let mode = url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
        .find(|(k, _)| k == "mode")
        .map(|(_, v)| v.into_owned());
    let remove_previous = match mode.as_deref() {
        None => false,
        Some("remove_previous") => true,
        Some(other) => {
            return Err(ApiError::bad(format!(
                "Lock mode `{other}` is not supported by this simulator (it models \
                 remove_previous)"
            )));
        }
    };
    let body = body_object(&body)?;
    let Some(Value::Array(items)) = body.get("locks") else {
        return Err(ApiError::bad("Field `locks` is required"));
    };
    let mut locks = Vec::new();
    let now = state.now();
    for item in items {
        let Value::Object(item) = item else {
            return Err(ApiError::bad("Each lock must be an object"));
        };
        let name = string_field(item, "name")?
            .filter(|n| !n.is_empty())
            .ok_or_else(|| ApiError::bad("Each lock needs a `name`"))?;
        locks.push(Lock {
            name,
            description: string_field(item, "description")?.unwrap_or_default(),
            attributes: object_field(item, "attributes")?,
            created_at: now,
            created_by: caller.clone(),
        });
    }
    let mut db = state.lock();
    let secret = db
        .secrets
        .get_mut(&id)
        .ok_or_else(ApiError::secret_not_found)?;
    let n = secret.versions.len();
    if remove_previous && n >= 2 {
        let names: Vec<String> = locks.iter().map(|l| l.name.clone()).collect();
        secret.versions[n - 2]
            .locks
            .retain(|l| !names.contains(&l.name));
    }
    let current = &mut secret.versions[n - 1].locks;
    for lock in locks {
        current.retain(|l| l.name != lock.name);
        current.push(lock);
    }
    Ok((StatusCode::CREATED, Json(locks_summary(&db.secrets[&id]))).into_response())
}

/// `DELETE .../locks_bulk?name=a,b` removes those locks from the current
/// version; without `name`, all of them.
async fn remove_locks(
    State(state): State<IbmSmState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    uri: Uri,
) -> Answer {
    authorize(&state, &headers)?;
    let names: Option<Vec<String>> =
        url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
            .find(|(k, _)| k == "name")
            .map(|(_, v)| v.split(',').map(|s| s.trim().to_owned()).collect());
    let mut db = state.lock();
    let secret = db
        .secrets
        .get_mut(&id)
        .ok_or_else(ApiError::secret_not_found)?;
    if let Some(current) = secret.versions.last_mut() {
        match &names {
            Some(names) => current.locks.retain(|l| !names.contains(&l.name)),
            None => current.locks.clear(),
        }
    }
    Ok(Json(locks_summary(&db.secrets[&id])).into_response())
}

async fn list_groups(State(state): State<IbmSmState>, headers: HeaderMap) -> Answer {
    authorize(&state, &headers)?;
    let db = state.lock();
    let groups: Vec<Value> = db
        .groups
        .values()
        .map(|g| {
            json!({
                "id": g.id,
                "name": g.name,
                "description": g.description,
                "created_at": timestamp(g.created_at),
                "updated_at": timestamp(g.updated_at),
            })
        })
        .collect();
    Ok(Json(json!({ "total_count": groups.len(), "secret_groups": groups })).into_response())
}
