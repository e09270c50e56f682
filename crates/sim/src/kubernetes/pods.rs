//! Pods, as the Job and Deployment controllers create them and the kubelet
//! reports them: one pod per Job, `replicas` pods per Deployment, each
//! holding the values of the Secret keys its env vars reference as they
//! were when it started (the kubelet resolves `secretKeyRef` once, at
//! container start; later changes reach a pod only when it is replaced).
//!
//! A pod's JSON lives in the store with the other objects; the values its
//! env vars hold live beside it as `SecretValue`s, so they are never served
//! or shown (the control API shows their sha256).

use keycycle_secret::SecretValue;
use rand::Rng;
use serde::Serialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::model::{Db, Kind, decode, merge_patch, now};

/// The characters Kubernetes uses for generated name suffixes and the
/// pod-template-hash (apimachinery `rand.SafeEncodeString`: no vowels, no
/// look-alikes).
const SAFE: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// One env var of a pod that came from a Secret key, and what it holds.
pub(crate) struct HeldEnv {
    pub(crate) container: String,
    pub(crate) env: String,
    pub(crate) secret: String,
    pub(crate) key: String,
    /// The value resolved when the pod started; `None` when the Secret or
    /// key was missing (the container then never started).
    pub(crate) value: Option<SecretValue>,
}

/// What the simulator keeps about a pod beside its JSON.
pub(crate) struct PodRecord {
    /// The Deployment generation it was created for (Deployment pods).
    pub(crate) generation: Option<i64>,
    /// `pod-template-hash` (Deployment pods).
    pub(crate) template_hash: Option<String>,
    pub(crate) env: Vec<HeldEnv>,
}

/// A pod as the control API shows it: its name, what created it, and a
/// digest of each value its env vars hold from Secrets.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct KubePodState {
    pub name: String,
    /// `Pending`, `Running`, `Succeeded` or `Failed`.
    pub phase: String,
    /// The Deployment's `metadata.generation` when the pod was created.
    pub generation: Option<i64>,
    /// The pod's `pod-template-hash` label (Deployment pods).
    pub template_hash: Option<String>,
    pub env: Vec<KubePodEnvState>,
}

/// One env var a pod holds from a Secret key (`valueFrom.secretKeyRef`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct KubePodEnvState {
    pub container: String,
    pub env: String,
    pub secret: String,
    pub key: String,
    /// Hex sha256 of the value the pod holds; `None` when the Secret or key
    /// was missing when the pod started.
    pub sha256: Option<String>,
}

/// How a Job's pod ended.
pub(crate) enum PodEnd {
    Succeeded,
    Failed {
        reason: String,
        exit_code: i64,
        message: Option<String>,
    },
}

fn safe_chars(n: usize) -> String {
    let mut rng = rand::rng();
    (0..n)
        .map(|_| SAFE[rng.random_range(0..SAFE.len())] as char)
        .collect()
}

/// The `pod-template-hash` of a pod template: stable for the same template,
/// different when it changes (as the restartedAt annotation makes it).
pub(crate) fn template_hash(template: &Value) -> String {
    let digest = Sha256::digest(template.to_string().as_bytes());
    digest
        .iter()
        .take(10)
        .map(|b| SAFE[*b as usize % SAFE.len()] as char)
        .collect()
}

/// A uid derived from a name, for owners the simulator does not store
/// (ReplicaSets).
fn derived_uid(name: &str) -> String {
    let hex = hex::encode(Sha256::digest(name.as_bytes()));
    format!(
        "{}-{}-4{}-8{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[13..16],
        &hex[17..20],
        &hex[20..32]
    )
}

/// Resolves the `secretKeyRef` env vars of `spec`'s containers against the
/// Secrets now; returns what each holds and the first reason a container
/// could not start (the kubelet's CreateContainerConfigError message).
fn resolve_env(db: &Db, ns: &str, spec: &Value) -> (Vec<HeldEnv>, Option<String>) {
    let mut held = Vec::new();
    let mut blocked = None;
    let containers = spec["containers"].as_array().cloned().unwrap_or_default();
    for container in &containers {
        let cname = container["name"].as_str().unwrap_or("").to_owned();
        for env in container["env"].as_array().into_iter().flatten() {
            let Some(reference) = env.pointer("/valueFrom/secretKeyRef") else {
                continue;
            };
            let secret = reference["name"].as_str().unwrap_or("").to_owned();
            let key = reference["key"].as_str().unwrap_or("").to_owned();
            let optional = reference["optional"].as_bool().unwrap_or(false);
            let stored = db.secrets.get(&(ns.to_owned(), secret.clone()));
            let value = stored.and_then(|s| s.data.get(&key)).map(decode);
            if value.is_none() && !optional && blocked.is_none() {
                blocked = Some(match stored {
                    None => format!("secret \"{secret}\" not found"),
                    Some(_) => format!("couldn't find key {key} in Secret {ns}/{secret}"),
                });
            }
            held.push(HeldEnv {
                container: cname.clone(),
                env: env["name"].as_str().unwrap_or("").to_owned(),
                secret,
                key,
                value,
            });
        }
    }
    (held, blocked)
}

/// The container statuses and phase of a pod that just started: Running,
/// or Pending when a referenced Secret or key is missing.
fn started_status(spec: &Value, blocked: Option<&str>) -> Value {
    let at = now();
    let statuses: Vec<Value> = spec["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            let state = match blocked {
                Some(message) => json!({ "waiting": {
                    "reason": "CreateContainerConfigError", "message": message } }),
                None => json!({ "running": { "startedAt": at } }),
            };
            json!({
                "name": c["name"], "image": c["image"], "imageID": "",
                "ready": blocked.is_none(), "started": blocked.is_none(),
                "restartCount": 0, "state": state,
            })
        })
        .collect();
    let ready = if blocked.is_none() { "True" } else { "False" };
    let condition = |kind: &str, status: &str| json!({ "type": kind, "status": status, "lastProbeTime": null, "lastTransitionTime": at });
    json!({
        "phase": if blocked.is_none() { "Running" } else { "Pending" },
        "conditions": [
            condition("PodScheduled", "True"),
            condition("Initialized", "True"),
            condition("ContainersReady", ready),
            condition("Ready", ready),
        ],
        "hostIP": "10.0.0.10",
        "podIP": "10.244.0.10",
        "startTime": at,
        "containerStatuses": statuses,
    })
}

/// Creates a pod from `template` (metadata and spec), snapshotting the
/// Secret values its env vars reference.
fn create_pod(
    db: &mut Db,
    ns: &str,
    name: &str,
    template: &Value,
    extra_labels: &Value,
    owner: Value,
    record: (Option<i64>, Option<String>),
) {
    let spec = template.get("spec").cloned().unwrap_or_else(|| json!({}));
    let (env, blocked) = resolve_env(db, ns, &spec);
    let mut labels = template
        .pointer("/metadata/labels")
        .cloned()
        .unwrap_or_else(|| json!({}));
    merge_patch(&mut labels, extra_labels);
    let mut metadata = json!({
        "name": name,
        "namespace": ns,
        "uid": db.next_uid(),
        "resourceVersion": db.next_revision(),
        "creationTimestamp": now(),
        "labels": labels,
        "ownerReferences": [owner],
    });
    if let Some(annotations) = template.pointer("/metadata/annotations") {
        metadata["annotations"] = annotations.clone();
    }
    let mut spec = spec;
    spec["nodeName"] = json!("sim-node-1");
    let object = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata,
        "spec": spec.clone(),
        "status": started_status(&spec, blocked.as_deref()),
    });
    db.objects
        .insert((Kind::Pod, ns.to_owned(), name.to_owned()), object);
    db.pods.insert(
        (ns.to_owned(), name.to_owned()),
        PodRecord {
            generation: record.0,
            template_hash: record.1,
            env,
        },
    );
}

fn remove_pod(db: &mut Db, ns: &str, name: &str) {
    db.objects
        .remove(&(Kind::Pod, ns.to_owned(), name.to_owned()));
    db.pods.remove(&(ns.to_owned(), name.to_owned()));
}

/// The names of the pods in `ns` owned by an object of `kind` whose name
/// satisfies `owned`.
fn pods_owned(db: &Db, ns: &str, kind: &str, owned: impl Fn(&str) -> bool) -> Vec<String> {
    db.objects
        .iter()
        .filter(|((k, n, _), _)| *k == Kind::Pod && n == ns)
        .filter(|(_, pod)| {
            pod.pointer("/metadata/ownerReferences/0")
                .is_some_and(|o| o["kind"] == kind && o["name"].as_str().is_some_and(&owned))
        })
        .map(|((_, _, name), _)| name.clone())
        .collect()
}

/// Starts the one pod of a Job just created: `<job>-<5 chars>`, labelled
/// as the Job controller labels it (the Job's template labels carry
/// `job-name`, `batch.kubernetes.io/job-name` and `controller-uid`).
pub(crate) fn start_job_pod(db: &mut Db, ns: &str, job: &str) {
    let Some(object) = db
        .objects
        .get(&(Kind::Job, ns.to_owned(), job.to_owned()))
        .cloned()
    else {
        return;
    };
    let template = object
        .pointer("/spec/template")
        .cloned()
        .unwrap_or_else(|| json!({}));
    let owner = json!({
        "apiVersion": "batch/v1", "kind": "Job", "name": job,
        "uid": object["metadata"]["uid"], "controller": true, "blockOwnerDeletion": true,
    });
    let name = format!("{job}-{}", safe_chars(5));
    create_pod(db, ns, &name, &template, &json!({}), owner, (None, None));
}

/// Ends the pods of a Job, as the kubelet reports a container that exited.
pub(crate) fn end_job_pods(db: &mut Db, ns: &str, job: &str, end: &PodEnd) {
    let at = now();
    for name in pods_owned(db, ns, "Job", |owner| owner == job) {
        let rv = db.next_revision();
        let Some(pod) = db
            .objects
            .get_mut(&(Kind::Pod, ns.to_owned(), name.clone()))
        else {
            continue;
        };
        let (phase, terminated) = match end {
            PodEnd::Succeeded => (
                "Succeeded",
                json!({ "exitCode": 0, "reason": "Completed", "startedAt": pod["status"]["startTime"], "finishedAt": at }),
            ),
            PodEnd::Failed {
                reason,
                exit_code,
                message,
            } => {
                let mut t = json!({ "exitCode": exit_code, "reason": reason,
                    "startedAt": pod["status"]["startTime"], "finishedAt": at });
                if let Some(message) = message {
                    t["message"] = json!(message);
                }
                ("Failed", t)
            }
        };
        pod["status"]["phase"] = json!(phase);
        if let Some(statuses) = pod["status"]["containerStatuses"].as_array_mut() {
            for status in statuses {
                status["ready"] = json!(false);
                status["started"] = json!(false);
                status["state"] = json!({ "terminated": terminated.clone() });
            }
        }
        if let Some(conditions) = pod["status"]["conditions"].as_array_mut() {
            for c in conditions {
                if matches!(c["type"].as_str(), Some("Ready" | "ContainersReady")) {
                    c["status"] = json!("False");
                    c["reason"] = json!("PodCompleted");
                }
            }
        }
        pod["metadata"]["resourceVersion"] = json!(rv);
    }
}

/// Makes a Deployment's pods match its template: when their
/// pod-template-hash is not the template's, or there are not `replicas` of
/// them, they are replaced by `replicas` new pods (`<deploy>-<hash>-<5
/// chars>`, with the selector's labels), each snapshotting the Secrets now.
pub(crate) fn roll_deployment_pods(db: &mut Db, ns: &str, deployment: &str) {
    let Some(object) = db
        .objects
        .get(&(Kind::Deployment, ns.to_owned(), deployment.to_owned()))
        .cloned()
    else {
        return;
    };
    let template = object
        .pointer("/spec/template")
        .cloned()
        .unwrap_or_else(|| json!({}));
    let hash = template_hash(&template);
    let replicas = object["spec"]["replicas"].as_u64().unwrap_or(1) as usize;
    let replica_set = format!("{deployment}-{hash}");
    let current = pods_owned(db, ns, "ReplicaSet", |owner| {
        owner
            .strip_prefix(deployment)
            .and_then(|rest| rest.strip_prefix('-'))
            .is_some_and(|h| !h.contains('-'))
    });
    let up_to_date = current.len() == replicas
        && current.iter().all(|name| {
            db.pods
                .get(&(ns.to_owned(), name.clone()))
                .is_some_and(|p| p.template_hash.as_deref() == Some(hash.as_str()))
        });
    if up_to_date {
        return;
    }
    for name in current {
        remove_pod(db, ns, &name);
    }
    let mut labels = object
        .pointer("/spec/selector/matchLabels")
        .cloned()
        .unwrap_or_else(|| json!({}));
    labels["pod-template-hash"] = json!(hash);
    let owner = json!({
        "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": replica_set,
        "uid": derived_uid(&format!("{ns}/{replica_set}")), "controller": true, "blockOwnerDeletion": true,
    });
    let generation = object["metadata"]["generation"].as_i64();
    for _ in 0..replicas {
        let name = format!("{replica_set}-{}", safe_chars(5));
        create_pod(
            db,
            ns,
            &name,
            &template,
            &labels,
            owner.clone(),
            (generation, Some(hash.clone())),
        );
    }
}

/// The pods of a Deployment (owned by one of its ReplicaSets), by name.
pub(crate) fn deployment_pod_names(db: &Db, ns: &str, deployment: &str) -> Vec<String> {
    pods_owned(db, ns, "ReplicaSet", |owner| {
        owner
            .strip_prefix(deployment)
            .and_then(|rest| rest.strip_prefix('-'))
            .is_some_and(|h| !h.contains('-'))
    })
}

/// A pod as the control API shows it.
pub(crate) fn pod_state(db: &Db, ns: &str, name: &str) -> Option<KubePodState> {
    let object = db
        .objects
        .get(&(Kind::Pod, ns.to_owned(), name.to_owned()))?;
    let record = db.pods.get(&(ns.to_owned(), name.to_owned()))?;
    Some(KubePodState {
        name: name.to_owned(),
        phase: object["status"]["phase"].as_str().unwrap_or("").to_owned(),
        generation: record.generation,
        template_hash: record.template_hash.clone(),
        env: record
            .env
            .iter()
            .map(|e| KubePodEnvState {
                container: e.container.clone(),
                env: e.env.clone(),
                secret: e.secret.clone(),
                key: e.key.clone(),
                sha256: e
                    .value
                    .as_ref()
                    .map(|v| hex::encode(Sha256::digest(v.expose().as_bytes()))),
            })
            .collect(),
    })
}

/// Whether the pod holds `value` for the env var `env` (in any container).
pub(crate) fn pod_holds(db: &Db, ns: &str, name: &str, env: &str, value: &str) -> bool {
    db.pods
        .get(&(ns.to_owned(), name.to_owned()))
        .is_some_and(|record| {
            let held: Vec<&HeldEnv> = record.env.iter().filter(|e| e.env == env).collect();
            !held.is_empty()
                && held
                    .iter()
                    .all(|e| e.value.as_ref().is_some_and(|v| v.expose() == value))
        })
}

/// Why a label selector cannot be read (the API server answers 400).
pub(crate) struct BadSelector(pub(crate) String);

/// Whether `labels` satisfy a `labelSelector`: comma-joined requirements
/// `k=v`, `k==v`, `k!=v`, `k` (exists) and `!k` (does not).
pub(crate) fn selector_matches(selector: &str, labels: &Value) -> Result<bool, BadSelector> {
    let label = |k: &str| labels.get(k).and_then(Value::as_str);
    for requirement in selector.split(',').map(str::trim).filter(|r| !r.is_empty()) {
        let holds = if let Some((k, v)) = requirement.split_once("!=") {
            label(k.trim()) != Some(v.trim())
        } else if let Some((k, v)) = requirement
            .split_once("==")
            .or_else(|| requirement.split_once('='))
        {
            label(k.trim()) == Some(v.trim())
        } else if let Some(k) = requirement.strip_prefix('!') {
            label(k.trim()).is_none()
        } else if requirement.contains(' ') || requirement.contains('(') {
            return Err(BadSelector(format!(
                "unable to parse requirement: {requirement:?}: set-based requirements are not served by this simulator"
            )));
        } else {
            label(requirement).is_some()
        };
        if !holds {
            return Ok(false);
        }
    }
    Ok(true)
}
