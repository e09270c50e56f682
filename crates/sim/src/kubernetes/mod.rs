//! The Kubernetes API server simulator, following the provider reference's
//! Kubernetes section closely enough that the real `kubectl` and the
//! official Python client work against it unchanged: discovery, bearer
//! service-account tokens, Secrets (data in base64, `stringData` merged and
//! never returned, merge, strategic merge, JSON patch and server-side
//! apply, resourceVersion conflicts), CronJobs, Jobs created from them,
//! and Deployments restarted by `kubectl rollout restart`, with the list
//! then watch that `kubectl rollout status` and `kubectl wait` use.
//!
//! No pods run. A Job stays active until the control API ends it (complete
//! or failed, with the conditions Kubernetes 1.31+ reports), optionally
//! writing the Secrets the Job's real pods would have written; a
//! Deployment's rollout advances when the control API says so.
//!
//! [`KubernetesState`] is the in-process handle on the true state; the same
//! is served under `/_sim/` (see [`control`]).

mod api;
pub(crate) mod control;
mod model;
mod protobuf;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};

use axum::Router;
use axum::http::StatusCode;
use axum::middleware::from_fn_with_state;
use keycycle_secret::SecretValue;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::control::{Control, SimState, control_methods};
use crate::error::SimError;
use crate::values::{expose, url_safe_token};
use model::{Db, Kind, SaToken, decode, encode, merge_patch, now};

const PROVIDER: &str = "kubernetes";

/// A service-account token to plant.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct KubeTokenSeed {
    /// The service account's namespace (created if missing).
    pub namespace: String,
    pub service_account: String,
    /// The bearer token; a random one when absent.
    #[serde(default, deserialize_with = "expose::deserialize_opt")]
    pub token: Option<SecretValue>,
    /// The namespaces its Role bindings cover; `None`: all (cluster-admin).
    #[serde(default)]
    pub namespaces: Option<Vec<String>>,
}

/// A Secret to plant, its values in clear.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct KubeSecretSeed {
    pub namespace: String,
    pub name: String,
    /// Default `Opaque`.
    #[serde(default, rename = "type")]
    pub type_: Option<String>,
    #[serde(default, deserialize_with = "expose::deserialize_map")]
    pub data: BTreeMap<String, SecretValue>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// A CronJob to plant.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct KubeCronJobSeed {
    pub namespace: String,
    pub name: String,
    /// Default `0 3 * * *`.
    #[serde(default)]
    pub schedule: Option<String>,
    /// `spec.jobTemplate` (metadata and spec); a one-container template
    /// when absent.
    #[serde(default)]
    pub job_template: Option<Value>,
}

/// A Deployment to plant, fully rolled out.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct KubeDeploymentSeed {
    pub namespace: String,
    pub name: String,
    /// Default 1.
    #[serde(default)]
    pub replicas: Option<u32>,
    #[serde(default)]
    pub paused: bool,
    /// The pod template; one container named after the Deployment when
    /// absent.
    #[serde(default)]
    pub template: Option<Value>,
}

/// How the control API ends a Job.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "snake_case", tag = "outcome")]
pub enum JobOutcome {
    Complete,
    Failed {
        /// `BackoffLimitExceeded` (default), `DeadlineExceeded`, ...
        #[serde(default)]
        reason: Option<String>,
        #[serde(default)]
        message: Option<String>,
    },
}

/// How the control API advances a Deployment's rollout.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RolloutOutcome {
    /// Every replica updated and available at the current generation.
    Complete,
    /// `Progressing` false with `ProgressDeadlineExceeded`.
    DeadlineExceeded,
}

/// A Secret as it truly is, values decoded.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct KubeSecretState {
    pub namespace: String,
    pub name: String,
    #[serde(rename = "type")]
    pub type_: String,
    pub resource_version: String,
    #[serde(serialize_with = "expose::map::serialize")]
    pub data: BTreeMap<String, SecretValue>,
    /// The field manager owning each data key.
    pub managers: BTreeMap<String, String>,
}

/// The whole true state, as `GET /_sim/state` returns it (Secret values in
/// clear, tokens not at all).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct KubernetesSnapshot {
    pub namespaces: Vec<String>,
    pub secrets: Vec<KubeSecretState>,
    pub cronjobs: Vec<Value>,
    pub jobs: Vec<Value>,
    pub deployments: Vec<Value>,
}

/// Handle on the Kubernetes simulator's true state; clones share it.
#[derive(Clone, Default)]
pub struct KubernetesState {
    inner: Arc<Mutex<Db>>,
}

impl SimState for KubernetesState {
    fn with_control<R>(&self, f: impl FnOnce(&mut Control) -> R) -> R {
        f(&mut self.lock().control)
    }

    /// A `Status` object, as the API server answers every error.
    fn error_body(status: StatusCode, message: &str) -> Value {
        json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": api::reason_for(status),
            "code": status.as_u16(),
        })
    }
}

control_methods!(KubernetesState);

fn unknown(what: &'static str, ns: &str, name: &str) -> SimError {
    SimError::Unknown {
        provider: PROVIDER,
        what,
        id: format!("{ns}/{name}"),
    }
}

fn invalid(reason: impl Into<String>) -> SimError {
    SimError::InvalidSeed {
        provider: PROVIDER,
        reason: reason.into(),
    }
}

impl KubernetesState {
    pub fn new() -> KubernetesState {
        KubernetesState::default()
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Db> {
        // A panicking test thread must not wedge every later request.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn add_namespace(&self, name: &str) {
        self.lock().ensure_namespace(name);
    }

    /// Plants a service-account token and returns its value.
    pub fn add_token(&self, seed: KubeTokenSeed) -> Result<SecretValue, SimError> {
        let mut db = self.lock();
        if seed.namespace.is_empty() || seed.service_account.is_empty() {
            return Err(invalid("a token needs a namespace and a service account"));
        }
        let value = seed.token.unwrap_or_else(|| url_safe_token("eyJ", 60));
        if db.token(value.expose()).is_some() {
            return Err(invalid("another token already has this value"));
        }
        db.ensure_namespace(&seed.namespace);
        db.tokens.push(SaToken {
            namespace: seed.namespace,
            service_account: seed.service_account,
            value: value.clone(),
            namespaces: seed
                .namespaces
                .map(|n| n.into_iter().collect::<BTreeSet<_>>()),
        });
        Ok(value)
    }

    /// Lets requests without credentials act as `system:anonymous` in
    /// `namespaces` (`None`: all), as a cluster with anonymous auth and a
    /// binding for it does. kubectl needs it over plain http, where it
    /// sends no token.
    pub fn allow_anonymous(&self, namespaces: Option<Vec<String>>) {
        self.lock().anonymous = Some(namespaces.map(|n| n.into_iter().collect()));
    }

    /// Plants (or replaces) a Secret; returns its resourceVersion.
    pub fn put_secret(&self, seed: KubeSecretSeed) -> Result<String, SimError> {
        let mut db = self.lock();
        db.ensure_namespace(&seed.namespace);
        let key = (seed.namespace.clone(), seed.name.clone());
        let data: BTreeMap<String, SecretValue> = seed
            .data
            .iter()
            .map(|(k, v)| (k.clone(), encode(v.expose().as_bytes())))
            .collect();
        let rv = db.next_revision();
        let (uid, created) = match db.secrets.get(&key) {
            Some(s) => (
                s.object["metadata"]["uid"].clone(),
                s.object["metadata"]["creationTimestamp"].clone(),
            ),
            None => (json!(db.next_uid()), json!(now())),
        };
        let mut metadata = json!({
            "name": seed.name,
            "namespace": seed.namespace,
            "uid": uid,
            "resourceVersion": rv,
            "creationTimestamp": created,
        });
        if !seed.labels.is_empty() {
            metadata["labels"] = json!(seed.labels);
        }
        let owners = data
            .keys()
            .map(|k| (k.clone(), "seed".to_owned()))
            .collect();
        db.secrets.insert(
            key,
            model::StoredSecret {
                object: json!({
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "metadata": metadata,
                    "type": seed.type_.unwrap_or_else(|| "Opaque".into()),
                }),
                data,
                owners,
            },
        );
        Ok(rv)
    }

    /// A Secret's true state, values decoded.
    pub fn secret(&self, namespace: &str, name: &str) -> Option<KubeSecretState> {
        let db = self.lock();
        db.secrets
            .get(&(namespace.to_owned(), name.to_owned()))
            .map(|s| KubeSecretState {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
                type_: s.object["type"].as_str().unwrap_or("Opaque").to_owned(),
                resource_version: s.object["metadata"]["resourceVersion"]
                    .as_str()
                    .unwrap_or("")
                    .to_owned(),
                data: s.data.iter().map(|(k, v)| (k.clone(), decode(v))).collect(),
                managers: s.owners.clone(),
            })
    }

    /// Plants a CronJob; returns its uid.
    pub fn add_cronjob(&self, seed: KubeCronJobSeed) -> Result<String, SimError> {
        let mut db = self.lock();
        db.ensure_namespace(&seed.namespace);
        let key = (Kind::CronJob, seed.namespace.clone(), seed.name.clone());
        if db.objects.contains_key(&key) {
            return Err(invalid(format!(
                "cronjob {}/{} exists",
                seed.namespace, seed.name
            )));
        }
        let template = seed.job_template.unwrap_or_else(|| {
            json!({
                "metadata": { "labels": { "app": seed.name } },
                "spec": {
                    "backoffLimit": 2,
                    "template": {
                        "metadata": {},
                        "spec": {
                            "restartPolicy": "Never",
                            "containers": [{ "name": seed.name, "image": "registry.example/job:1" }],
                        },
                    },
                },
            })
        });
        let uid = db.next_uid();
        let rv = db.next_revision();
        let object = json!({
            "apiVersion": "batch/v1",
            "kind": "CronJob",
            "metadata": {
                "name": seed.name,
                "namespace": seed.namespace,
                "uid": uid,
                "resourceVersion": rv,
                "generation": 1,
                "creationTimestamp": now(),
            },
            "spec": {
                "schedule": seed.schedule.unwrap_or_else(|| "0 3 * * *".into()),
                "concurrencyPolicy": "Forbid",
                "suspend": false,
                "successfulJobsHistoryLimit": 3,
                "failedJobsHistoryLimit": 1,
                "jobTemplate": template,
            },
            "status": {},
        });
        db.objects.insert(key, object);
        Ok(uid)
    }

    /// Plants a Deployment whose rollout is complete; returns its uid.
    pub fn add_deployment(&self, seed: KubeDeploymentSeed) -> Result<String, SimError> {
        let mut db = self.lock();
        db.ensure_namespace(&seed.namespace);
        let key = (Kind::Deployment, seed.namespace.clone(), seed.name.clone());
        if db.objects.contains_key(&key) {
            return Err(invalid(format!(
                "deployment {}/{} exists",
                seed.namespace, seed.name
            )));
        }
        let replicas = seed.replicas.unwrap_or(1);
        let template = seed.template.unwrap_or_else(|| {
            json!({
                "metadata": { "labels": { "app": seed.name } },
                "spec": { "containers": [{ "name": seed.name, "image": "registry.example/app:1" }] },
            })
        });
        let uid = db.next_uid();
        let rv = db.next_revision();
        let mut object = json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {
                "name": seed.name,
                "namespace": seed.namespace,
                "uid": uid,
                "resourceVersion": rv,
                "generation": 1,
                "creationTimestamp": now(),
            },
            "spec": {
                "replicas": replicas,
                "selector": { "matchLabels": { "app": seed.name } },
                "strategy": { "type": "RollingUpdate", "rollingUpdate": { "maxSurge": "25%", "maxUnavailable": "25%" } },
                "revisionHistoryLimit": 10,
                "progressDeadlineSeconds": 600,
                "template": template,
            },
        });
        if seed.paused {
            object["spec"]["paused"] = json!(true);
        }
        rollout(&mut object, RolloutOutcome::Complete);
        db.objects.insert(key, object);
        db.record(Kind::Deployment, &seed.namespace, &seed.name, "ADDED");
        Ok(uid)
    }

    /// A Job, CronJob or Deployment as the API serves it.
    fn object(&self, kind: Kind, namespace: &str, name: &str) -> Option<Value> {
        self.lock().rendered(kind, namespace, name)
    }

    pub fn job(&self, namespace: &str, name: &str) -> Option<Value> {
        self.object(Kind::Job, namespace, name)
    }

    pub fn deployment(&self, namespace: &str, name: &str) -> Option<Value> {
        self.object(Kind::Deployment, namespace, name)
    }

    /// Ends a Job as its controller would once its pods ended, after
    /// writing `secrets` (what the Job's pods would have written; each
    /// replaces the Secret's data).
    pub fn finish_job(
        &self,
        namespace: &str,
        name: &str,
        outcome: JobOutcome,
        secrets: Vec<KubeSecretSeed>,
    ) -> Result<(), SimError> {
        {
            let db = self.lock();
            let key = (Kind::Job, namespace.to_owned(), name.to_owned());
            match db.objects.get(&key) {
                None => return Err(unknown("job", namespace, name)),
                Some(job) if finished(job) => {
                    return Err(invalid(format!(
                        "job {namespace}/{name} has finished already"
                    )));
                }
                Some(_) => {}
            }
        }
        for seed in secrets {
            self.put_secret(seed)?;
        }
        let mut db = self.lock();
        let rv = db.next_revision();
        let key = (Kind::Job, namespace.to_owned(), name.to_owned());
        let job = db
            .objects
            .get_mut(&key)
            .ok_or_else(|| unknown("job", namespace, name))?;
        let at = now();
        let condition = |kind: &str, reason: &str, message: &str| {
            json!({ "type": kind, "status": "True", "reason": reason, "message": message,
                    "lastProbeTime": at, "lastTransitionTime": at })
        };
        // Since 1.31 the interim condition comes first, the terminal one
        // after the pods ended (reference).
        let status = match outcome {
            JobOutcome::Complete => json!({
                "active": 0, "ready": 0, "terminating": 0, "succeeded": 1,
                "completionTime": at,
                "conditions": [
                    condition("SuccessCriteriaMet", "CompletionsReached", "Reached expected number of succeeded pods"),
                    condition("Complete", "CompletionsReached", "Reached expected number of succeeded pods"),
                ],
            }),
            JobOutcome::Failed { reason, message } => {
                let reason = reason.unwrap_or_else(|| "BackoffLimitExceeded".into());
                let message =
                    message.unwrap_or_else(|| "Job has reached the specified backoff limit".into());
                json!({
                    "active": 0, "ready": 0, "terminating": 0, "failed": 1,
                    "conditions": [
                        condition("FailureTarget", &reason, &message),
                        condition("Failed", &reason, &message),
                    ],
                })
            }
        };
        merge_patch(&mut job["status"], &status);
        job["metadata"]["resourceVersion"] = json!(rv);
        db.record(Kind::Job, namespace, name, "MODIFIED");
        Ok(())
    }

    /// Moves a Deployment's status to the end of its rollout (or to a
    /// missed progress deadline).
    pub fn advance_rollout(
        &self,
        namespace: &str,
        name: &str,
        outcome: RolloutOutcome,
    ) -> Result<(), SimError> {
        let mut db = self.lock();
        let rv = db.next_revision();
        let key = (Kind::Deployment, namespace.to_owned(), name.to_owned());
        let deployment = db
            .objects
            .get_mut(&key)
            .ok_or_else(|| unknown("deployment", namespace, name))?;
        rollout(deployment, outcome);
        deployment["metadata"]["resourceVersion"] = json!(rv);
        db.record(Kind::Deployment, namespace, name, "MODIFIED");
        Ok(())
    }

    pub fn snapshot(&self) -> KubernetesSnapshot {
        let names: Vec<(String, String)> = self.lock().secrets.keys().cloned().collect();
        let secrets = names
            .iter()
            .filter_map(|(ns, name)| self.secret(ns, name))
            .collect();
        let db = self.lock();
        let of = |kind: Kind| -> Vec<Value> {
            db.objects
                .iter()
                .filter(|((k, _, _), _)| *k == kind)
                .map(|(_, o)| o.clone())
                .collect()
        };
        KubernetesSnapshot {
            namespaces: db.namespaces.keys().cloned().collect(),
            secrets,
            cronjobs: of(Kind::CronJob),
            jobs: of(Kind::Job),
            deployments: of(Kind::Deployment),
        }
    }
}

fn finished(job: &Value) -> bool {
    job.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|c| {
            c.iter().any(|c| {
                matches!(c["type"].as_str(), Some("Complete" | "Failed")) && c["status"] == "True"
            })
        })
}

/// The status a Deployment controller reports at `outcome`.
fn rollout(deployment: &mut Value, outcome: RolloutOutcome) {
    let replicas = deployment["spec"]["replicas"].as_u64().unwrap_or(1);
    let generation = deployment["metadata"]["generation"].clone();
    let at = now();
    let available = json!({ "type": "Available", "status": "True", "reason": "MinimumReplicasAvailable",
        "message": "Deployment has minimum availability.", "lastUpdateTime": at, "lastTransitionTime": at });
    let status = match outcome {
        RolloutOutcome::Complete => json!({
            "observedGeneration": generation,
            "replicas": replicas,
            "updatedReplicas": replicas,
            "readyReplicas": replicas,
            "availableReplicas": replicas,
            "conditions": [available, { "type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable",
                "message": "ReplicaSet has successfully progressed.", "lastUpdateTime": at, "lastTransitionTime": at }],
        }),
        RolloutOutcome::DeadlineExceeded => json!({
            "observedGeneration": generation,
            "conditions": [available, { "type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
                "message": "ReplicaSet has timed out progressing.", "lastUpdateTime": at, "lastTransitionTime": at }],
        }),
    };
    deployment["status"] = status;
}

pub(crate) fn router(state: KubernetesState) -> Router {
    Router::new()
        .merge(api::routes())
        .merge(control::routes())
        .merge(crate::control::routes::<KubernetesState>())
        // The API server's answer for a path it does not serve.
        .fallback(|| async {
            api::status(
                StatusCode::NOT_FOUND,
                "NotFound",
                "the server could not find the requested resource",
                json!({}),
            )
        })
        .method_not_allowed_fallback(|| async {
            api::status(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                "the server does not allow this method on the requested resource",
                json!({}),
            )
        })
        .layer(from_fn_with_state(
            state.clone(),
            crate::control::gate::<KubernetesState>,
        ))
        .with_state(state)
}

#[cfg(test)]
mod tests;
