//! The Kubernetes simulator's store: the kinds it serves, the objects (a
//! Secret's data held as `SecretValue`s, other kinds as the JSON the API
//! server would keep), the cluster-wide resourceVersion counter, and the
//! patch formats the reference lists (merge, strategic merge, JSON patch).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use tokio::sync::Notify;

use base64::Engine;
use keycycle_secret::SecretValue;
use serde_json::{Map, Value};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::KubeJobBehaviour;
use super::pods::PodRecord;
use crate::control::Control;

/// A kind the simulator serves, with the names the API server uses for it
/// in URLs, discovery and error messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Kind {
    Secret,
    CronJob,
    Job,
    Deployment,
    Pod,
}

impl Kind {
    pub(crate) fn kind(self) -> &'static str {
        match self {
            Kind::Secret => "Secret",
            Kind::CronJob => "CronJob",
            Kind::Job => "Job",
            Kind::Deployment => "Deployment",
            Kind::Pod => "Pod",
        }
    }

    pub(crate) fn api_version(self) -> &'static str {
        match self {
            Kind::Secret | Kind::Pod => "v1",
            Kind::CronJob | Kind::Job => "batch/v1",
            Kind::Deployment => "apps/v1",
        }
    }

    pub(crate) fn group(self) -> &'static str {
        match self {
            Kind::Secret | Kind::Pod => "",
            Kind::CronJob | Kind::Job => "batch",
            Kind::Deployment => "apps",
        }
    }

    /// The resource (plural) name.
    pub(crate) fn resource(self) -> &'static str {
        match self {
            Kind::Secret => "secrets",
            Kind::CronJob => "cronjobs",
            Kind::Job => "jobs",
            Kind::Deployment => "deployments",
            Kind::Pod => "pods",
        }
    }

    /// `secrets`, `jobs.batch`, `deployments.apps`: how error messages name
    /// the resource (apimachinery's `GroupResource.String()`).
    pub(crate) fn qualified(self) -> String {
        match self.group() {
            "" => self.resource().to_owned(),
            group => format!("{}.{group}", self.resource()),
        }
    }

    /// Whether writes to the main resource bump `metadata.generation` when
    /// the spec changes and leave `status` alone (a status subresource).
    pub(crate) fn has_spec(self) -> bool {
        self != Kind::Secret
    }
}

/// A service-account token the simulator accepts as a bearer token.
pub(crate) struct SaToken {
    pub(crate) namespace: String,
    pub(crate) service_account: String,
    pub(crate) value: SecretValue,
    /// The namespaces it may act in; `None`: every namespace.
    pub(crate) namespaces: Option<BTreeSet<String>>,
}

impl SaToken {
    pub(crate) fn user(&self) -> String {
        format!(
            "system:serviceaccount:{}:{}",
            self.namespace, self.service_account
        )
    }
}

/// A stored Secret: everything but its data as JSON, and the data values
/// (canonical base64, as the API serves them) as secrets.
pub(crate) struct StoredSecret {
    /// apiVersion, kind, metadata, type (and immutable, if set).
    pub(crate) object: Value,
    pub(crate) data: BTreeMap<String, SecretValue>,
    /// The field manager owning each data key, for server-side apply.
    pub(crate) owners: BTreeMap<String, String>,
}

impl StoredSecret {
    /// The object as the API serves it, data included; `stringData` never.
    pub(crate) fn render(&self) -> Value {
        let mut object = self.object.clone();
        if !self.data.is_empty() {
            let data: Map<String, Value> = self
                .data
                .iter()
                .map(|(k, v)| (k.clone(), Value::String(v.expose().to_owned())))
                .collect();
            object["data"] = Value::Object(data);
        }
        object
    }
}

/// Why a Secret body cannot be stored; the message never quotes a value.
pub(crate) enum SecretBodyError {
    /// 400: a data value is not base64 or not a string.
    BadRequest(String),
}

/// Splits a Secret object into the JSON kept as is and its data: `data`
/// values decoded (newlines skipped, as Go's decoder does, since Ruby's
/// `Base64.encode64` wraps lines) and re-encoded canonically, then
/// `stringData` merged over them.
pub(crate) fn split_secret(
    mut object: Value,
) -> Result<(Value, BTreeMap<String, SecretValue>), SecretBodyError> {
    let mut data = BTreeMap::new();
    let fields = object.as_object_mut().ok_or_else(|| {
        SecretBodyError::BadRequest("the body of the request is not a JSON object".into())
    })?;
    match fields.remove("data") {
        None | Some(Value::Null) => {}
        Some(Value::Object(map)) => {
            for (key, value) in map {
                let text = match value {
                    Value::String(text) => text,
                    Value::Null => continue,
                    _ => {
                        return Err(SecretBodyError::BadRequest(format!(
                            "Secret in version \"v1\" cannot be handled as a Secret: data.{key}: expected a base64 string"
                        )));
                    }
                };
                let compact: String = text.chars().filter(|c| *c != '\n' && *c != '\r').collect();
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(compact.as_bytes())
                    .map_err(|_| {
                        SecretBodyError::BadRequest(format!(
                            "Secret in version \"v1\" cannot be handled as a Secret: illegal base64 data in data.{key}"
                        ))
                    })?;
                data.insert(key, encode(&bytes));
            }
        }
        Some(_) => {
            return Err(SecretBodyError::BadRequest(
                "Secret in version \"v1\" cannot be handled as a Secret: data must be an object"
                    .into(),
            ));
        }
    }
    match fields.remove("stringData") {
        None | Some(Value::Null) => {}
        Some(Value::Object(map)) => {
            for (key, value) in map {
                match value {
                    Value::String(text) => {
                        data.insert(key, encode(text.as_bytes()));
                    }
                    _ => {
                        return Err(SecretBodyError::BadRequest(format!(
                            "Secret in version \"v1\" cannot be handled as a Secret: stringData.{key}: expected a string"
                        )));
                    }
                }
            }
        }
        Some(_) => {
            return Err(SecretBodyError::BadRequest(
                "Secret in version \"v1\" cannot be handled as a Secret: stringData must be an object"
                    .into(),
            ));
        }
    }
    Ok((object, data))
}

/// `bytes` as the canonical base64 the API server answers with.
pub(crate) fn encode(bytes: &[u8]) -> SecretValue {
    SecretValue::new(base64::engine::general_purpose::STANDARD.encode(bytes))
}

/// The clear text of a canonical base64 value (lossy for binary data).
pub(crate) fn decode(value: &SecretValue) -> SecretValue {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(value.expose())
        .unwrap_or_default();
    SecretValue::new(String::from_utf8_lossy(&bytes).into_owned())
}

/// How many changes a watch can replay; an older resourceVersion is 410.
pub(crate) const HISTORY: usize = 1000;

/// One change a watch reports.
pub(crate) struct Event {
    pub(crate) revision: u64,
    pub(crate) kind: Kind,
    pub(crate) namespace: String,
    /// `ADDED` or `MODIFIED`.
    pub(crate) change: &'static str,
    pub(crate) object: Value,
}

/// The whole simulated cluster.
#[derive(Default)]
pub(crate) struct Db {
    pub(crate) control: Control,
    pub(crate) tokens: Vec<SaToken>,
    /// Whether requests without credentials act as system:anonymous, and
    /// in which namespaces (`None` inside: all).
    pub(crate) anonymous: Option<Option<BTreeSet<String>>>,
    pub(crate) namespaces: BTreeMap<String, Value>,
    pub(crate) secrets: BTreeMap<(String, String), StoredSecret>,
    /// CronJobs, Jobs, Deployments and Pods, by kind, namespace and name.
    pub(crate) objects: BTreeMap<(Kind, String, String), Value>,
    /// What each pod holds beside its JSON (the values of its env vars
    /// from Secrets), by namespace and name.
    pub(crate) pods: BTreeMap<(String, String), PodRecord>,
    /// What Jobs created from a CronJob do by themselves, by the CronJob's
    /// namespace and name.
    pub(crate) job_behaviours: BTreeMap<(String, String), KubeJobBehaviour>,
    /// Deployments the simulator rolls out by itself after a template
    /// change, and after how many milliseconds.
    pub(crate) auto_rollouts: BTreeMap<(String, String), u64>,
    /// Changes to CronJobs, Jobs and Deployments, oldest first, for
    /// watches: a watch from resourceVersion N replays those after N, then
    /// follows.
    pub(crate) history: VecDeque<Event>,
    /// Wakes the watches when `history` grows.
    pub(crate) changed: Arc<Notify>,
    /// The last resourceVersion handed out; etcd's revision is cluster-wide,
    /// so every write anywhere moves it.
    pub(crate) revision: u64,
    uids: u64,
}

impl Db {
    /// The next resourceVersion, as the string the API serves.
    pub(crate) fn next_revision(&mut self) -> String {
        self.revision += 1;
        self.revision.to_string()
    }

    /// Records a change to a watched kind (CronJobs, Jobs, Deployments;
    /// Secrets are not watched here, so their data never sits in the
    /// history) and wakes the watches.
    pub(crate) fn record(&mut self, kind: Kind, ns: &str, name: &str, change: &'static str) {
        if !matches!(kind, Kind::CronJob | Kind::Job | Kind::Deployment) {
            return;
        }
        let Some(object) = self.objects.get(&(kind, ns.to_owned(), name.to_owned())) else {
            return;
        };
        let revision = object["metadata"]["resourceVersion"]
            .as_str()
            .and_then(|rv| rv.parse().ok())
            .unwrap_or(self.revision);
        let object = object.clone();
        if self.history.len() == HISTORY {
            self.history.pop_front();
        }
        self.history.push_back(Event {
            revision,
            kind,
            namespace: ns.to_owned(),
            change,
            object,
        });
        self.changed.notify_waiters();
    }

    /// A fresh uid in the 8-4-4-4-12 form.
    pub(crate) fn next_uid(&mut self) -> String {
        self.uids += 1;
        let random = crate::values::random_hex(6);
        format!("{:08x}-0000-4000-8000-{random}", self.uids)
    }

    pub(crate) fn token(&self, presented: &str) -> Option<&SaToken> {
        self.tokens.iter().find(|t| t.value.expose() == presented)
    }

    /// Creates a namespace if it is missing, as `kubectl create namespace`.
    pub(crate) fn ensure_namespace(&mut self, name: &str) {
        if self.namespaces.contains_key(name) {
            return;
        }
        let uid = self.next_uid();
        let rv = self.next_revision();
        let object = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {
                "name": name,
                "uid": uid,
                "resourceVersion": rv,
                "creationTimestamp": now(),
                "labels": { "kubernetes.io/metadata.name": name },
            },
            "spec": { "finalizers": ["kubernetes"] },
            "status": { "phase": "Active" },
        });
        self.namespaces.insert(name.to_owned(), object);
    }

    /// The stored object of `kind` (secrets rendered with their data).
    pub(crate) fn rendered(&self, kind: Kind, ns: &str, name: &str) -> Option<Value> {
        match kind {
            Kind::Secret => self
                .secrets
                .get(&(ns.to_owned(), name.to_owned()))
                .map(StoredSecret::render),
            _ => self
                .objects
                .get(&(kind, ns.to_owned(), name.to_owned()))
                .cloned(),
        }
    }

    /// Every stored object of `kind` in `ns`, by name.
    pub(crate) fn list(&self, kind: Kind, ns: &str) -> Vec<Value> {
        match kind {
            Kind::Secret => self
                .secrets
                .iter()
                .filter(|((n, _), _)| n == ns)
                .map(|(_, s)| s.render())
                .collect(),
            _ => self
                .objects
                .iter()
                .filter(|((k, n, _), _)| *k == kind && n == ns)
                .map(|(_, o)| o.clone())
                .collect(),
        }
    }
}

/// Now in RFC 3339 with whole seconds, as Kubernetes writes timestamps.
pub(crate) fn now() -> String {
    let at = OffsetDateTime::now_utc();
    let at = at.replace_nanosecond(0).unwrap_or(at);
    at.format(&Rfc3339)
        .unwrap_or_else(|_| at.unix_timestamp().to_string())
}

/// RFC 7386 JSON merge patch: objects merge, `null` removes, anything else
/// replaces.
pub(crate) fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Value::Object(fields) = target else {
        return;
    };
    for (key, value) in patch {
        if value.is_null() {
            fields.remove(key);
        } else {
            merge_patch(fields.entry(key.clone()).or_insert(Value::Null), value);
        }
    }
}

/// Strategic merge patch as far as the kinds served here need it: maps
/// merge and `null` removes (as in a merge patch), and lists of objects
/// that all carry a `name` (containers, env, volumes: the merge key of
/// every such list in these kinds) merge element by element instead of
/// being replaced; `$patch: replace` on a map replaces it whole.
pub(crate) fn strategic_merge_patch(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(fields), Value::Object(patch)) => {
            if patch.get("$patch").and_then(Value::as_str) == Some("replace") {
                let mut whole = patch.clone();
                whole.remove("$patch");
                *fields = whole;
                return;
            }
            for (key, value) in patch {
                if key.starts_with("$setElementOrder/") || key == "$retainKeys" {
                    continue;
                }
                if value.is_null() {
                    fields.remove(key);
                } else if let Some(existing) = fields.get_mut(key) {
                    strategic_merge_patch(existing, value);
                } else {
                    let mut fresh = Value::Null;
                    merge_patch(&mut fresh, value);
                    fields.insert(key.clone(), fresh);
                }
            }
        }
        (Value::Array(items), Value::Array(patch))
            if keyed_by_name(items) && keyed_by_name(patch) =>
        {
            for element in patch {
                let name = element.get("name").cloned();
                let delete = element.get("$patch").and_then(Value::as_str) == Some("delete");
                match items.iter().position(|i| i.get("name") == name.as_ref()) {
                    Some(at) if delete => {
                        items.remove(at);
                    }
                    Some(at) => strategic_merge_patch(&mut items[at], element),
                    None if delete => {}
                    None => items.push(element.clone()),
                }
            }
        }
        (target, patch) => merge_patch(target, patch),
    }
}

fn keyed_by_name(items: &[Value]) -> bool {
    !items.is_empty()
        && items
            .iter()
            .all(|i| i.get("name").is_some_and(Value::is_string))
}

/// Why a JSON patch could not be applied: the message the API server
/// gives, which names the operation and path, never a value.
pub(crate) enum JsonPatchError {
    /// The body is not a list of operations (400).
    Undecodable(String),
    /// An operation does not apply to the object (422).
    Failed(String),
}

/// RFC 6902 JSON patch (add, remove, replace, move, copy, test).
pub(crate) fn json_patch(target: &mut Value, patch: &Value) -> Result<(), JsonPatchError> {
    let ops = patch.as_array().ok_or_else(|| {
        JsonPatchError::Undecodable(
            "json: cannot unmarshal object into Go value of type jsonpatch.Patch".into(),
        )
    })?;
    for op in ops {
        let name = op.get("op").and_then(Value::as_str).unwrap_or("");
        let path = op
            .get("path")
            .and_then(Value::as_str)
            .ok_or_else(|| JsonPatchError::Failed(format!("operation {name:?} has no path")))?;
        match name {
            "add" | "replace" => {
                let value = op.get("value").cloned().ok_or_else(|| {
                    JsonPatchError::Failed(format!(
                        "{name} operation does not apply: missing value"
                    ))
                })?;
                if name == "replace" && target.pointer(path).is_none() {
                    return Err(JsonPatchError::Failed(format!(
                        "replace operation does not apply: doc is missing key: {path}"
                    )));
                }
                add_at(target, path, value)?;
            }
            "remove" => {
                remove_at(target, path)?;
            }
            "test" => {
                if target.pointer(path) != op.get("value") {
                    return Err(JsonPatchError::Failed(format!(
                        "testing value {path} failed"
                    )));
                }
            }
            "move" | "copy" => {
                let from = op.get("from").and_then(Value::as_str).ok_or_else(|| {
                    JsonPatchError::Failed(format!("{name} operation has no from"))
                })?;
                let value = if name == "move" {
                    remove_at(target, from)?
                } else {
                    target.pointer(from).cloned().ok_or_else(|| {
                        JsonPatchError::Failed(format!(
                            "copy operation does not apply: doc is missing from path: {from}"
                        ))
                    })?
                };
                add_at(target, path, value)?;
            }
            other => {
                return Err(JsonPatchError::Failed(format!("Unexpected kind: {other}")));
            }
        }
    }
    Ok(())
}

/// Splits a JSON pointer into its parent pointer and unescaped last token.
fn parent_and_key(path: &str) -> Result<(&str, String), JsonPatchError> {
    let at = path
        .rfind('/')
        .ok_or_else(|| JsonPatchError::Failed(format!("invalid path {path:?}")))?;
    let key = path[at + 1..].replace("~1", "/").replace("~0", "~");
    Ok((&path[..at], key))
}

fn add_at(target: &mut Value, path: &str, value: Value) -> Result<(), JsonPatchError> {
    if path.is_empty() {
        *target = value;
        return Ok(());
    }
    let (parent, key) = parent_and_key(path)?;
    match target.pointer_mut(parent) {
        Some(Value::Object(fields)) => {
            fields.insert(key, value);
            Ok(())
        }
        Some(Value::Array(items)) => {
            let at = if key == "-" {
                items.len()
            } else {
                key.parse::<usize>()
                    .ok()
                    .filter(|i| *i <= items.len())
                    .ok_or_else(|| {
                        JsonPatchError::Failed(format!(
                            "add operation does not apply: index out of bounds at {path}"
                        ))
                    })?
            };
            items.insert(at, value);
            Ok(())
        }
        _ => Err(JsonPatchError::Failed(format!(
            "add operation does not apply: doc is missing path: \"{path}\""
        ))),
    }
}

fn remove_at(target: &mut Value, path: &str) -> Result<Value, JsonPatchError> {
    let (parent, key) = parent_and_key(path)?;
    let removed = match target.pointer_mut(parent) {
        Some(Value::Object(fields)) => fields.remove(&key),
        Some(Value::Array(items)) => key
            .parse::<usize>()
            .ok()
            .filter(|i| *i < items.len())
            .map(|i| items.remove(i)),
        _ => None,
    };
    removed.ok_or_else(|| {
        JsonPatchError::Failed(format!(
            "remove operation does not apply: doc is missing path: \"{path}\""
        ))
    })
}
