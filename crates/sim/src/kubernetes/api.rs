//! The Kubernetes API as the reference describes it: discovery, bearer
//! service-account tokens, Secrets (get, list, create, update, the four
//! patch formats), CronJobs (at batch/v1 and, as a 1.24 API server still
//! did, batch/v1beta1), Jobs (create as `kubectl create job --from` sends
//! it), Deployments (the `rollout restart` patch) and Pods (get and
//! list, with `labelSelector`), with every error a `Status` object.

use std::collections::BTreeMap;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

use super::model::{
    Db, JsonPatchError, Kind, SecretBodyError, StoredSecret, json_patch, merge_patch, now,
    split_secret, strategic_merge_patch,
};
use super::protobuf::{Undecodable, decode_object};
use super::{KubernetesState, controllers, pods};

type Params = Query<BTreeMap<String, String>>;

/// A refusal on its way out of a helper, boxed: a `Response` is large.
type Refused = Box<Response>;

/// A `Status` answer (apimachinery `api/errors`).
pub(crate) fn status(code: StatusCode, reason: &str, message: &str, details: Value) -> Response {
    let mut body = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code.as_u16(),
    });
    if !details.is_null() {
        body["details"] = details;
    }
    object(code, &body)
}

/// The reason a `Status` carries for `code`.
pub(crate) fn reason_for(code: StatusCode) -> &'static str {
    match code.as_u16() {
        400 => "BadRequest",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "NotFound",
        405 => "MethodNotAllowed",
        409 => "Conflict",
        410 => "Expired",
        415 => "UnsupportedMediaType",
        422 => "Invalid",
        429 => "TooManyRequests",
        503 => "ServiceUnavailable",
        504 => "Timeout",
        _ => "InternalError",
    }
}

fn object(code: StatusCode, body: &Value) -> Response {
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn ok(body: &Value) -> Response {
    object(StatusCode::OK, body)
}

fn details(kind: Kind, name: &str) -> Value {
    let mut d = json!({ "name": name, "kind": kind.resource() });
    if !kind.group().is_empty() {
        d["group"] = json!(kind.group());
    }
    d
}

fn not_found(kind: Kind, name: &str) -> Response {
    status(
        StatusCode::NOT_FOUND,
        "NotFound",
        &format!("{} \"{name}\" not found", kind.qualified()),
        details(kind, name),
    )
}

fn conflict(kind: Kind, name: &str) -> Response {
    status(
        StatusCode::CONFLICT,
        "Conflict",
        &format!(
            "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
            kind.qualified()
        ),
        details(kind, name),
    )
}

fn bad_request(message: &str) -> Response {
    status(StatusCode::BAD_REQUEST, "BadRequest", message, Value::Null)
}

fn invalid(kind: Kind, name: &str, field: &str, message: &str) -> Response {
    let mut d = details(kind, name);
    d["kind"] = json!(kind.kind());
    d["causes"] = json!([{ "reason": "FieldValueInvalid", "message": message, "field": field }]);
    status(
        StatusCode::UNPROCESSABLE_ENTITY,
        "Invalid",
        &format!("{} \"{name}\" is invalid: {field}: {message}", kind.kind()),
        d,
    )
}

/// The caller's token, if the API server knows it; otherwise the 401 it
/// answers. Then the namespace check a Role binding would make (403).
fn authorize(
    db: &Db,
    headers: &HeaderMap,
    verb: &str,
    kind: Option<Kind>,
    ns: Option<&str>,
    name: Option<&str>,
) -> Result<(), Refused> {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        // The scheme is matched case-insensitively, as the API server's
        // bearer-token authenticator does.
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    let unauthorized = || {
        status(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "Unauthorized",
            Value::Null,
        )
    };
    // kubectl (clientcmd) sends a kubeconfig's credentials only over TLS,
    // so over plain http it arrives anonymous: allowed only when the
    // control API enabled anonymous requests, as `--anonymous-auth` and a
    // binding for system:anonymous would on a real API server.
    let (user, namespaces) = match presented {
        Some(p) => match db.token(p) {
            Some(token) => (token.user(), token.namespaces.as_ref()),
            None => return Err(unauthorized().into()),
        },
        None => match &db.anonymous {
            Some(namespaces) => ("system:anonymous".to_owned(), namespaces.as_ref()),
            None => return Err(unauthorized().into()),
        },
    };
    let (Some(kind), Some(ns)) = (kind, ns) else {
        return Ok(());
    };
    match namespaces {
        Some(allowed) if !allowed.contains(ns) => {
            let target = match name {
                Some(name) => format!("{} \"{name}\"", kind.qualified()),
                None => kind.qualified(),
            };
            Err(Box::new(status(
                StatusCode::FORBIDDEN,
                "Forbidden",
                &format!(
                    "{target} is forbidden: User \"{}\" cannot {verb} resource \"{}\" in API group \"{}\" in the namespace \"{ns}\"",
                    user,
                    kind.resource(),
                    kind.group()
                ),
                details(kind, name.unwrap_or("")),
            )))
        }
        _ => Ok(()),
    }
}

/// CronJobs' older version. A 1.24 API server, which this simulator
/// answers as, still serves it (1.25 removed it), with a deprecation
/// warning; kubectl before 1.21 knows CronJobs in no other version.
const BATCH_V1BETA1: &str = "batch/v1beta1";

/// Each kind with the versions it is served at: the stored object is the
/// same, only its `apiVersion` differs (the fields used here have one
/// shape in both versions of a CronJob).
const SERVED: [(Kind, &str); 6] = [
    (Kind::Secret, "v1"),
    (Kind::CronJob, "batch/v1"),
    (Kind::CronJob, BATCH_V1BETA1),
    (Kind::Job, "batch/v1"),
    (Kind::Deployment, "apps/v1"),
    (Kind::Pod, "v1"),
];

/// The `Warning` header (RFC 7234 code 299) a 1.24 API server adds to
/// every answer from a deprecated version; kubectl prints it on stderr.
fn deprecation(version: &str, mut response: Response) -> Response {
    if version == BATCH_V1BETA1 {
        response.headers_mut().insert(
            header::WARNING,
            header::HeaderValue::from_static(
                "299 - \"batch/v1beta1 CronJob is deprecated in v1.21+, unavailable in v1.25+; use batch/v1 CronJob\"",
            ),
        );
    }
    response
}

/// `object` as served at `version`.
fn in_version(mut object: Value, version: &str) -> Value {
    if object.get("apiVersion").is_some() {
        object["apiVersion"] = json!(version);
    }
    object
}

pub(crate) fn routes() -> Router<KubernetesState> {
    let mut router = Router::new()
        .route("/version", get(version))
        .route("/api", get(api_versions))
        .route("/apis", get(api_groups))
        .route("/api/v1", get(|s, h| resources(s, h, "v1")))
        .route("/apis/batch/v1", get(|s, h| resources(s, h, "batch/v1")))
        .route(
            "/apis/batch/v1beta1",
            get(|s, h| resources(s, h, BATCH_V1BETA1)),
        )
        .route("/apis/apps/v1", get(|s, h| resources(s, h, "apps/v1")))
        .route("/api/v1/namespaces", get(list_namespaces))
        .route("/api/v1/namespaces/{ns}", get(get_namespace));
    for (kind, version) in SERVED {
        let prefix = match version {
            "v1" => "/api/v1".to_owned(),
            _ => format!("/apis/{version}"),
        };
        let collection = format!("{prefix}/namespaces/{{ns}}/{}", kind.resource());
        let item = format!("{collection}/{{name}}");
        let mut on_collection = get(
            move |State(s): State<KubernetesState>,
                  Path(ns): Path<String>,
                  Query(q): Params,
                  h: HeaderMap| async move {
                if q.get("watch").is_some_and(|w| w == "true" || w == "1") {
                    watch(&s, kind, version, &ns, &q, &h)
                } else {
                    list(&s, kind, version, &ns, &q, &h)
                }
            },
        );
        if matches!(kind, Kind::Secret | Kind::Job) {
            on_collection = on_collection.post(
                move |State(s): State<KubernetesState>,
                      Path(ns): Path<String>,
                      Query(q): Params,
                      h: HeaderMap,
                      body: Bytes| async move { create(&s, kind, &ns, &q, &h, &body) },
            );
        }
        let mut on_item = get(
            move |State(s): State<KubernetesState>,
                  Path((ns, name)): Path<(String, String)>,
                  h: HeaderMap| async move { read(&s, kind, version, &ns, &name, &h) },
        );
        if matches!(kind, Kind::Secret | Kind::Deployment) {
            on_item = on_item
                .put(
                    move |State(s): State<KubernetesState>,
                          Path((ns, name)): Path<(String, String)>,
                          Query(q): Params,
                          h: HeaderMap,
                          body: Bytes| async move {
                        replace(&s, kind, &ns, &name, &q, &h, &body)
                    },
                )
                .patch(
                    move |State(s): State<KubernetesState>,
                          Path((ns, name)): Path<(String, String)>,
                          Query(q): Params,
                          h: HeaderMap,
                          body: Bytes| async move {
                        patch(&s, kind, &ns, &name, &q, &h, &body)
                    },
                );
        }
        router = router
            .route(&collection, on_collection)
            .route(&item, on_item);
    }
    router
}

/// `/version` is readable without a token (system:public-info-viewer).
/// The simulator answers as a 1.24 API server: the last to serve CronJobs
/// at batch/v1beta1 beside batch/v1, which kubectl 1.20 needs.
async fn version() -> Response {
    ok(&json!({
        "major": "1",
        "minor": "24",
        "gitVersion": "v1.24.17",
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2023-08-23T23:37:25Z",
        "goVersion": "go1.20.7",
        "compiler": "gc",
        "platform": "linux/amd64",
    }))
}

/// The legacy discovery answers. kubectl asks for the aggregated
/// `apidiscovery.k8s.io` forms first but lists `application/json` last in
/// its `Accept`, and client-go falls back to these when the Content-Type
/// does not name the aggregated form.
async fn api_versions(State(s): State<KubernetesState>, h: HeaderMap) -> Response {
    if let Err(denied) = authorize(&s.lock(), &h, "get", None, None, None) {
        return *denied;
    }
    ok(&json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{ "clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1:6443" }],
    }))
}

async fn api_groups(State(s): State<KubernetesState>, h: HeaderMap) -> Response {
    if let Err(denied) = authorize(&s.lock(), &h, "get", None, None, None) {
        return *denied;
    }
    // Preferred first, as the API server orders them.
    let group = |name: &str, versions: &[&str]| {
        let versions: Vec<Value> = versions
            .iter()
            .map(|v| json!({ "groupVersion": format!("{name}/{v}"), "version": v }))
            .collect();
        json!({ "name": name, "versions": versions, "preferredVersion": versions[0] })
    };
    ok(&json!({
        "kind": "APIGroupList",
        "apiVersion": "v1",
        "groups": [group("apps", &["v1"]), group("batch", &["v1", "v1beta1"])],
    }))
}

async fn resources(State(s): State<KubernetesState>, h: HeaderMap, gv: &'static str) -> Response {
    if let Err(denied) = authorize(&s.lock(), &h, "get", None, None, None) {
        return *denied;
    }
    // Only the verbs served here are listed: clients check them.
    let resource = |name: &str, singular: &str, kind: &str, verbs: &[&str], short: &[&str]| {
        let mut r = json!({
            "name": name,
            "singularName": singular,
            "namespaced": name != "namespaces",
            "kind": kind,
            "verbs": verbs,
        });
        if !short.is_empty() {
            r["shortNames"] = json!(short);
        }
        r
    };
    let list = match gv {
        "v1" => vec![
            resource(
                "namespaces",
                "namespace",
                "Namespace",
                &["get", "list"],
                &["ns"],
            ),
            resource("pods", "pod", "Pod", &["get", "list"], &["po"]),
            resource(
                "secrets",
                "secret",
                "Secret",
                &["create", "get", "list", "patch", "update"],
                &[],
            ),
        ],
        "batch/v1" => vec![
            resource(
                "cronjobs",
                "cronjob",
                "CronJob",
                &["get", "list", "watch"],
                &["cj"],
            ),
            resource(
                "jobs",
                "job",
                "Job",
                &["create", "get", "list", "watch"],
                &[],
            ),
        ],
        BATCH_V1BETA1 => vec![resource(
            "cronjobs",
            "cronjob",
            "CronJob",
            &["get", "list", "watch"],
            &["cj"],
        )],
        _ => vec![resource(
            "deployments",
            "deployment",
            "Deployment",
            &["get", "list", "patch", "update", "watch"],
            &["deploy"],
        )],
    };
    ok(&json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": gv,
        "resources": list,
    }))
}

async fn list_namespaces(State(s): State<KubernetesState>, h: HeaderMap) -> Response {
    let db = s.lock();
    if let Err(denied) = authorize(&db, &h, "list", None, None, None) {
        return *denied;
    }
    let items: Vec<Value> = db.namespaces.values().cloned().collect();
    ok(&json!({
        "kind": "NamespaceList",
        "apiVersion": "v1",
        "metadata": { "resourceVersion": db.revision.to_string() },
        "items": items,
    }))
}

async fn get_namespace(
    State(s): State<KubernetesState>,
    Path(ns): Path<String>,
    h: HeaderMap,
) -> Response {
    let db = s.lock();
    if let Err(denied) = authorize(&db, &h, "get", None, None, None) {
        return *denied;
    }
    match db.namespaces.get(&ns) {
        Some(object) => ok(object),
        None => status(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("namespaces \"{ns}\" not found"),
            json!({ "name": ns, "kind": "namespaces" }),
        ),
    }
}

fn read(
    s: &KubernetesState,
    kind: Kind,
    version: &str,
    ns: &str,
    name: &str,
    h: &HeaderMap,
) -> Response {
    let db = s.lock();
    if let Err(denied) = authorize(&db, h, "get", Some(kind), Some(ns), Some(name)) {
        return *denied;
    }
    let response = match db.rendered(kind, ns, name) {
        Some(object) => ok(&in_version(object, version)),
        None => not_found(kind, name),
    };
    deprecation(version, response)
}

/// The name a `fieldSelector=metadata.name=X` (or `==X`) asks for; the
/// one field selector clients use to follow a single object.
fn selected_name(q: &BTreeMap<String, String>) -> Option<String> {
    let selector = q.get("fieldSelector")?;
    let name = selector
        .strip_prefix("metadata.name==")
        .or_else(|| selector.strip_prefix("metadata.name="))?;
    Some(name.to_owned())
}

/// `?watch=1`: the changes after `resourceVersion` (all current objects as
/// `ADDED` when it is absent or "0"), then each change as it happens, one
/// JSON event per line, until `timeoutSeconds` (default 30 minutes).
fn watch(
    s: &KubernetesState,
    kind: Kind,
    version: &'static str,
    ns: &str,
    q: &BTreeMap<String, String>,
    h: &HeaderMap,
) -> Response {
    let db = s.lock();
    if let Err(denied) = authorize(&db, h, "watch", Some(kind), Some(ns), None) {
        return *denied;
    }
    if !matches!(kind, Kind::CronJob | Kind::Job | Kind::Deployment) {
        return status(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
            json!({ "kind": kind.resource() }),
        );
    }
    let name = selected_name(q);
    let wanted = move |o: &Value| match &name {
        Some(name) => o["metadata"]["name"].as_str() == Some(name.as_str()),
        None => true,
    };
    let mut pending: std::collections::VecDeque<Value> = Default::default();
    let since = match q.get("resourceVersion").map(String::as_str) {
        None | Some("") | Some("0") => {
            for object in db.list(kind, ns).into_iter().filter(|o| wanted(o)) {
                let object = in_version(object, version);
                pending.push_back(json!({ "type": "ADDED", "object": object }));
            }
            db.revision
        }
        Some(rv) => {
            let Ok(rv) = rv.parse::<u64>() else {
                return bad_request(&format!("invalid resource version: {rv}"));
            };
            // The history starts where it was cut: older is gone (410).
            if db.history.len() == super::model::HISTORY
                && db.history.front().is_some_and(|e| e.revision > rv + 1)
            {
                let oldest = db.history.front().map_or(0, |e| e.revision);
                return status(
                    StatusCode::GONE,
                    "Expired",
                    &format!("too old resource version: {rv} ({oldest})"),
                    Value::Null,
                );
            }
            rv
        }
    };
    let timeout = q
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .unwrap_or(1800);
    drop(db);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(timeout);
    let ns = ns.to_owned();
    let state = s.clone();
    let stream = futures_util::stream::unfold((pending, since), move |(mut pending, mut since)| {
        let state = state.clone();
        let ns = ns.clone();
        let wanted = wanted.clone();
        async move {
            loop {
                if let Some(event) = pending.pop_front() {
                    let line = format!("{event}\n");
                    return Some((Ok::<_, std::io::Error>(line), (pending, since)));
                }
                let changed = state.lock().changed.clone();
                let notified = changed.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                {
                    let db = state.lock();
                    let from = since;
                    for event in db.history.iter().filter(|e| e.revision > from) {
                        since = event.revision;
                        if event.kind == kind && event.namespace == ns && wanted(&event.object) {
                            let object = in_version(event.object.clone(), version);
                            pending.push_back(json!({ "type": event.change, "object": object }));
                        }
                    }
                }
                if pending.is_empty() {
                    tokio::select! {
                        _ = &mut notified => {}
                        _ = tokio::time::sleep_until(deadline) => return None,
                    }
                }
            }
        }
    });
    let response = (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        axum::body::Body::from_stream(stream),
    )
        .into_response();
    deprecation(version, response)
}

fn list(
    s: &KubernetesState,
    kind: Kind,
    version: &str,
    ns: &str,
    q: &BTreeMap<String, String>,
    h: &HeaderMap,
) -> Response {
    let db = s.lock();
    if let Err(denied) = authorize(&db, h, "list", Some(kind), Some(ns), None) {
        return *denied;
    }
    // Items of a list carry no kind or apiVersion: the list does.
    let name = selected_name(q);
    let selector = q.get("labelSelector").map(String::as_str).unwrap_or("");
    let mut unreadable = None;
    let items: Vec<Value> = db
        .list(kind, ns)
        .into_iter()
        .filter(|o| {
            name.as_deref()
                .is_none_or(|n| o["metadata"]["name"].as_str() == Some(n))
        })
        .filter(|o| {
            let labels = o.pointer("/metadata/labels").unwrap_or(&Value::Null);
            match pods::selector_matches(selector, labels) {
                Ok(holds) => holds,
                Err(pods::BadSelector(message)) => {
                    unreadable = Some(message);
                    false
                }
            }
        })
        .map(|mut o| {
            if let Some(fields) = o.as_object_mut() {
                fields.remove("kind");
                fields.remove("apiVersion");
            }
            o
        })
        .collect();
    if let Some(message) = unreadable {
        return bad_request(&message);
    }
    let response = ok(&json!({
        "kind": format!("{}List", kind.kind()),
        "apiVersion": version,
        "metadata": { "resourceVersion": db.revision.to_string() },
        "items": items,
    }));
    deprecation(version, response)
}

fn parse_body(body: &[u8]) -> Result<Value, Refused> {
    serde_json::from_slice::<Value>(body)
        .ok()
        .filter(Value::is_object)
        .ok_or_else(|| {
            Box::new(bad_request("the body of the request was in an unknown format - accepted media types include: application/json"))
        })
}

/// The field manager of a write: `?fieldManager=`, else the user agent's
/// product (the API server's default).
fn manager(q: &BTreeMap<String, String>, h: &HeaderMap) -> String {
    if let Some(m) = q.get("fieldManager") {
        return m.clone();
    }
    h.get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .and_then(|ua| ua.split('/').next())
        .filter(|p| !p.is_empty())
        .unwrap_or("unknown")
        .to_owned()
}

/// The request's media type, without parameters.
fn content_type(h: &HeaderMap) -> String {
    h.get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .unwrap_or("")
        .trim()
        .to_owned()
}

fn create(
    s: &KubernetesState,
    kind: Kind,
    ns: &str,
    q: &BTreeMap<String, String>,
    h: &HeaderMap,
    body: &[u8],
) -> Response {
    let mut db = s.lock();
    if let Err(denied) = authorize(&db, h, "create", Some(kind), Some(ns), None) {
        return *denied;
    }
    let body = match content_type(h).as_str() {
        "application/vnd.kubernetes.protobuf" => match decode_object(kind.kind(), body) {
            Ok(body) => body,
            Err(Undecodable(message)) => {
                return status(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "UnsupportedMediaType",
                    &message,
                    Value::Null,
                );
            }
        },
        _ => match parse_body(body) {
            Ok(body) => body,
            Err(refused) => return *refused,
        },
    };
    let Some(name) = body
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .map(str::to_owned)
    else {
        return invalid(
            kind,
            "",
            "metadata.name",
            "Required value: name or generateName is required",
        );
    };
    if let Some(other) = body.pointer("/metadata/namespace").and_then(Value::as_str)
        && other != ns
    {
        return bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        );
    }
    if !db.namespaces.contains_key(ns) {
        return status(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("namespaces \"{ns}\" not found"),
            json!({ "name": ns, "kind": "namespaces" }),
        );
    }
    if db.rendered(kind, ns, &name).is_some() {
        return status(
            StatusCode::CONFLICT,
            "AlreadyExists",
            &format!("{} \"{name}\" already exists", kind.qualified()),
            details(kind, &name),
        );
    }
    let manager = manager(q, h);
    match insert_new(&mut db, kind, ns, &name, body, &manager) {
        Ok(object) => {
            if kind == Kind::Job {
                // The Job controller starts its pod; a Job from a CronJob
                // with a behaviour then runs it by itself.
                pods::start_job_pod(&mut db, ns, &name);
                if let Some(behaviour) = controllers::behaviour_of(&db, ns, &object) {
                    controllers::run_job(s.clone(), ns.to_owned(), name.clone(), behaviour);
                }
            }
            object_created(&object)
        }
        Err(refused) => *refused,
    }
}

fn object_created(created: &Value) -> Response {
    object(StatusCode::CREATED, created)
}

/// Stores a new object as the API server would: server-set metadata, and
/// for a Job the selector, labels and starting status its controller adds.
fn insert_new(
    db: &mut Db,
    kind: Kind,
    ns: &str,
    name: &str,
    mut body: Value,
    manager: &str,
) -> Result<Value, Refused> {
    let uid = db.next_uid();
    body["apiVersion"] = json!(kind.api_version());
    body["kind"] = json!(kind.kind());
    {
        let meta = &mut body["metadata"];
        meta["name"] = json!(name);
        meta["namespace"] = json!(ns);
        meta["uid"] = json!(uid);
        meta["creationTimestamp"] = json!(now());
        if let Some(fields) = meta.as_object_mut() {
            fields.remove("resourceVersion");
        }
        if kind.has_spec() {
            meta["generation"] = json!(1);
        }
    }
    if kind == Kind::Job {
        // The Job controller's own labels, which tie pods to the Job.
        let labels = json!({ "batch.kubernetes.io/controller-uid": uid, "batch.kubernetes.io/job-name": name, "controller-uid": uid, "job-name": name });
        if body.pointer("/spec/selector").is_none() {
            body["spec"]["selector"] =
                json!({ "matchLabels": { "batch.kubernetes.io/controller-uid": uid } });
        }
        merge_patch(&mut body["spec"]["template"]["metadata"]["labels"], &labels);
        merge_patch(&mut body["metadata"]["labels"], &labels);
        // No pods run here: the Job shows what its controller reports once
        // it started one; the control API decides how it ends.
        body["status"] = json!({ "active": 1, "ready": 0, "terminating": 0, "startTime": now() });
    }
    let rv = db.next_revision();
    body["metadata"]["resourceVersion"] = json!(rv);
    match kind {
        Kind::Secret => {
            let (object, data) = split_secret(body).map_err(|e| Box::new(secret_error(e)))?;
            let mut object = object;
            if object.get("type").is_none_or(Value::is_null) {
                object["type"] = json!("Opaque");
            }
            let owners = data
                .keys()
                .map(|k| (k.clone(), manager.to_owned()))
                .collect();
            let stored = StoredSecret {
                object,
                data,
                owners,
            };
            let rendered = stored.render();
            db.secrets.insert((ns.to_owned(), name.to_owned()), stored);
            Ok(rendered)
        }
        _ => {
            db.objects
                .insert((kind, ns.to_owned(), name.to_owned()), body.clone());
            db.record(kind, ns, name, "ADDED");
            Ok(body)
        }
    }
}

fn secret_error(e: SecretBodyError) -> Response {
    match e {
        SecretBodyError::BadRequest(message) => bad_request(&message),
    }
}

fn replace(
    s: &KubernetesState,
    kind: Kind,
    ns: &str,
    name: &str,
    q: &BTreeMap<String, String>,
    h: &HeaderMap,
    body: &[u8],
) -> Response {
    let mut db = s.lock();
    if let Err(denied) = authorize(&db, h, "update", Some(kind), Some(ns), Some(name)) {
        return *denied;
    }
    let body = match parse_body(body) {
        Ok(body) => body,
        Err(refused) => return *refused,
    };
    if body.pointer("/metadata/name").and_then(Value::as_str) != Some(name) {
        return bad_request(&format!(
            "the name of the object ({}) does not match the name on the URL ({name})",
            body.pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or("")
        ));
    }
    let Some(current) = db.rendered(kind, ns, name) else {
        return not_found(kind, name);
    };
    let manager = manager(q, h);
    match write(&mut db, kind, ns, name, &current, body, &manager, false) {
        Ok(object) => {
            if kind == Kind::Deployment {
                controllers::after_deployment_write(s, &db, ns, name);
            }
            ok(&object)
        }
        Err(refused) => *refused,
    }
}

fn patch(
    s: &KubernetesState,
    kind: Kind,
    ns: &str,
    name: &str,
    q: &BTreeMap<String, String>,
    h: &HeaderMap,
    body: &[u8],
) -> Response {
    let mut db = s.lock();
    if let Err(denied) = authorize(&db, h, "patch", Some(kind), Some(ns), Some(name)) {
        return *denied;
    }
    let manager = manager(q, h);
    let response = patch_authorized(&mut db, kind, ns, name, q, &content_type(h), body, &manager);
    if kind == Kind::Deployment && response.status().is_success() {
        controllers::after_deployment_write(s, &db, ns, name);
    }
    response
}

/// A patch the caller may make, in any of the four formats: the API's
/// PATCH after authorization, and the path Jobs' own writes take (the
/// Signon sync's server-side apply). `default_manager` is the field
/// manager when the query names none (apply requires one).
#[allow(clippy::too_many_arguments)]
pub(crate) fn patch_authorized(
    db: &mut Db,
    kind: Kind,
    ns: &str,
    name: &str,
    q: &BTreeMap<String, String>,
    content_type: &str,
    body: &[u8],
    default_manager: &str,
) -> Response {
    let accepted = [
        "application/json-patch+json",
        "application/merge-patch+json",
        "application/strategic-merge-patch+json",
        "application/apply-patch+yaml",
    ];
    if !accepted.contains(&content_type) {
        return status(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UnsupportedMediaType",
            &format!(
                "the body of the request was in an unknown format - accepted media types include: {}",
                accepted.join(", ")
            ),
            Value::Null,
        );
    }
    let Ok(patch_body) = serde_json::from_slice::<Value>(body) else {
        // The apply form is YAML; this simulator reads its JSON subset,
        // which is what the reference's clients send.
        return bad_request("error decoding patch: the patch body is not JSON");
    };
    let apply = content_type == "application/apply-patch+yaml";
    let manager = if apply {
        match q.get("fieldManager").filter(|m| !m.is_empty()) {
            Some(m) => m.clone(),
            None => return bad_request("fieldManager is required for apply requests"),
        }
    } else {
        default_manager.to_owned()
    };
    let current = match db.rendered(kind, ns, name) {
        Some(current) => current,
        None if apply => {
            // Server-side apply creates what does not exist yet.
            if !db.namespaces.contains_key(ns) {
                return status(
                    StatusCode::NOT_FOUND,
                    "NotFound",
                    &format!("namespaces \"{ns}\" not found"),
                    json!({ "name": ns, "kind": "namespaces" }),
                );
            }
            if kind != Kind::Secret {
                return not_found(kind, name);
            }
            return match insert_new(db, kind, ns, name, patch_body, &manager) {
                Ok(object) => object_created(&object),
                Err(refused) => *refused,
            };
        }
        None => return not_found(kind, name),
    };
    let mut patched = current.clone();
    match content_type {
        "application/json-patch+json" => match json_patch(&mut patched, &patch_body) {
            Ok(()) => {}
            Err(JsonPatchError::Undecodable(message)) => return bad_request(&message),
            Err(JsonPatchError::Failed(message)) => {
                return status(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "Invalid",
                    &message,
                    Value::Null,
                );
            }
        },
        "application/merge-patch+json" => merge_patch(&mut patched, &patch_body),
        "application/strategic-merge-patch+json" => {
            strategic_merge_patch(&mut patched, &patch_body)
        }
        _ => {
            if !patch_body.is_object() {
                return bad_request(
                    "error decoding patch: an apply configuration must be an object",
                );
            }
            if let Some(refused) =
                apply_secret_conflicts(db, kind, ns, name, &patch_body, &manager, q)
            {
                return refused;
            }
            // Keys the manager stopped applying are gone by now.
            patched = db.rendered(kind, ns, name).unwrap_or(patched);
            merge_patch(&mut patched, &without_nulls(&patch_body));
        }
    }
    // A resourceVersion the patch carries is a precondition; none means
    // "the latest object".
    let wanted = patch_body.pointer("/metadata/resourceVersion").cloned();
    if let Some(wanted) = wanted.filter(|w| !w.is_null()) {
        if Some(&wanted) != current.pointer("/metadata/resourceVersion") {
            return conflict(kind, name);
        }
    } else if let Some(fields) = patched["metadata"].as_object_mut() {
        fields.insert(
            "resourceVersion".into(),
            current["metadata"]["resourceVersion"].clone(),
        );
    }
    match write(db, kind, ns, name, &current, patched, &manager, apply) {
        Ok(object) => ok(&object),
        Err(refused) => *refused,
    }
}

/// An apply configuration's `null`s mean "I have no opinion", not
/// "remove": they are dropped before the merge.
fn without_nulls(value: &Value) -> Value {
    match value {
        Value::Object(fields) => Value::Object(
            fields
                .iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), without_nulls(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Server-side apply on a Secret's data: a key another manager owns with a
/// different value is a conflict unless `force=true`, which takes it over;
/// keys this manager applied before and no longer applies are removed (the
/// apply semantics of `managedFields`). Returns the 409 when refused.
fn apply_secret_conflicts(
    db: &mut Db,
    kind: Kind,
    ns: &str,
    name: &str,
    config: &Value,
    manager: &str,
    q: &BTreeMap<String, String>,
) -> Option<Response> {
    if kind != Kind::Secret {
        return None;
    }
    let (_, applied) = match split_secret(config.clone()) {
        Ok(split) => split,
        Err(e) => return Some(secret_error(e)),
    };
    let force = q.get("force").is_some_and(|f| f == "true");
    let stored = db.secrets.get_mut(&(ns.to_owned(), name.to_owned()))?;
    let mut conflicts: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (key, value) in &applied {
        if let Some(owner) = stored.owners.get(key)
            && owner != manager
            && stored.data.get(key) != Some(value)
        {
            conflicts
                .entry(owner.clone())
                .or_default()
                .push(format!(".data.{key}"));
        }
    }
    if !conflicts.is_empty() && !force {
        let count: usize = conflicts.values().map(Vec::len).sum();
        let message = if count == 1 {
            let (owner, fields) = conflicts.iter().next().expect("one conflict");
            format!(
                "Apply failed with 1 conflict: conflict with \"{owner}\" using v1: {}",
                fields[0]
            )
        } else {
            let mut text = format!("Apply failed with {count} conflicts:");
            for (owner, fields) in &conflicts {
                text.push_str(&format!(" conflicts with \"{owner}\" using v1:"));
                for field in fields {
                    text.push_str(&format!("\n- {field}"));
                }
            }
            text
        };
        let causes: Vec<Value> = conflicts
            .iter()
            .flat_map(|(owner, fields)| {
                fields.iter().map(move |f| {
                    json!({ "reason": "FieldManagerConflict", "message": format!("conflict with \"{owner}\" using v1"), "field": f })
                })
            })
            .collect();
        let mut d = details(kind, name);
        d["causes"] = json!(causes);
        return Some(status(StatusCode::CONFLICT, "Conflict", &message, d));
    }
    let dropped: Vec<String> = stored
        .owners
        .iter()
        .filter(|(k, m)| *m == manager && !applied.contains_key(*k))
        .map(|(k, _)| k.clone())
        .collect();
    for key in dropped {
        stored.owners.remove(&key);
        stored.data.remove(&key);
    }
    // Applying a field makes the applier its manager, also when the value
    // was already the same (the API server then lists both managers; one
    // owner per key is all the simulator tracks).
    for key in applied.keys() {
        stored.owners.insert(key.clone(), manager.to_owned());
    }
    None
}

/// Stores `next` over `current`: a stale resourceVersion is a conflict,
/// server-set metadata is kept, `status` belongs to its subresource, a
/// spec change bumps `metadata.generation`, and every write moves the
/// resourceVersion.
#[allow(clippy::too_many_arguments)]
fn write(
    db: &mut Db,
    kind: Kind,
    ns: &str,
    name: &str,
    current: &Value,
    mut next: Value,
    manager: &str,
    apply: bool,
) -> Result<Value, Refused> {
    if let Some(wanted) = next
        .pointer("/metadata/resourceVersion")
        .filter(|w| !w.is_null())
        && Some(wanted) != current.pointer("/metadata/resourceVersion")
    {
        return Err(conflict(kind, name).into());
    }
    next["apiVersion"] = json!(kind.api_version());
    next["kind"] = json!(kind.kind());
    for kept in [
        "name",
        "namespace",
        "uid",
        "creationTimestamp",
        "generation",
    ] {
        match current["metadata"].get(kept) {
            Some(value) => next["metadata"][kept] = value.clone(),
            None => {
                if let Some(fields) = next["metadata"].as_object_mut() {
                    fields.remove(kept);
                }
            }
        }
    }
    if kind.has_spec() {
        match current.get("status") {
            Some(status) => next["status"] = status.clone(),
            None => {
                if let Some(fields) = next.as_object_mut() {
                    fields.remove("status");
                }
            }
        }
        if next.get("spec") != current.get("spec") {
            let generation = current["metadata"]["generation"].as_i64().unwrap_or(1);
            next["metadata"]["generation"] = json!(generation + 1);
        }
    }
    if kind == Kind::Secret {
        let (object, data) = split_secret(next).map_err(|e| Box::new(secret_error(e)))?;
        let key = (ns.to_owned(), name.to_owned());
        let stored = db.secrets.get(&key).expect("the current secret");
        let old_type = stored
            .object
            .get("type")
            .cloned()
            .unwrap_or(json!("Opaque"));
        let mut object = object;
        match object.get("type") {
            None | Some(Value::Null) => object["type"] = old_type,
            Some(t) if *t != old_type => {
                return Err(invalid(
                    kind,
                    name,
                    "type",
                    &format!("Invalid value: {t}: field is immutable"),
                )
                .into());
            }
            Some(_) => {}
        }
        let mut owners = stored.owners.clone();
        owners.retain(|k, _| data.contains_key(k));
        for (k, v) in &data {
            if (!apply && stored.data.get(k) != Some(v)) || !owners.contains_key(k) {
                owners.insert(k.clone(), manager.to_owned());
            }
        }
        object["metadata"]["resourceVersion"] = json!(db.next_revision());
        let stored = StoredSecret {
            object,
            data,
            owners,
        };
        let rendered = stored.render();
        db.secrets.insert(key, stored);
        return Ok(rendered);
    }
    next["metadata"]["resourceVersion"] = json!(db.next_revision());
    db.objects
        .insert((kind, ns.to_owned(), name.to_owned()), next.clone());
    db.record(kind, ns, name, "MODIFIED");
    Ok(next)
}
