//! The Kubernetes API server simulator, following the provider reference's
//! Kubernetes section closely enough that the real `kubectl` and the
//! official Python client work against it unchanged: discovery, bearer
//! service-account tokens, Secrets (data in base64, `stringData` merged and
//! never returned, merge, strategic merge, JSON patch and server-side
//! apply, resourceVersion conflicts), CronJobs, Jobs created from them,
//! and Deployments restarted by `kubectl rollout restart`, with the list
//! then watch that `kubectl rollout status` and `kubectl wait` use. It
//! presents itself as a 1.24 API server, the last to serve CronJobs at
//! batch/v1beta1 beside batch/v1, so kubectl from 1.20 on works against it.
//!
//! Pods are records, not processes: a Job has one pod and a Deployment
//! `replicas` of them, listed and read at `/api/v1/namespaces/{ns}/pods`
//! (with `labelSelector`), each holding the values of the Secret keys its
//! env vars reference as they were when it started ([`pods`]). A Job stays
//! active until the control API ends it (complete or failed, with the
//! conditions Kubernetes 1.31+ reports), optionally writing the Secrets the
//! Job's real pods would have written, unless the CronJob it was created
//! from has a behaviour ([`KubeJobBehaviour`]): then it runs Signon's token
//! sync against the Signon simulator, or succeeds or fails, by itself
//! ([`controllers`]). A Deployment's rollout advances when the control API
//! says so, or by itself after a template change when it has automatic
//! rollout; either way its pods are replaced and read the Secrets afresh.
//!
//! [`KubernetesState`] is the in-process handle on the true state; the same
//! is served under `/_sim/` (see [`control`]).

mod api;
pub(crate) mod control;
mod controllers;
mod model;
mod pods;
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
pub use pods::{KubePodEnvState, KubePodState};

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
    /// absent. Its containers' `env[].valueFrom.secretKeyRef` are resolved
    /// when the pods are created.
    #[serde(default)]
    pub template: Option<Value>,
    /// Roll out by itself this many milliseconds after each template
    /// change (`None`: only when the control API says so).
    #[serde(default)]
    pub auto_rollout_ms: Option<u64>,
}

/// What a Job created from a CronJob (owner reference to it, as `kubectl
/// create job --from` sets) does by itself, after `delay_ms`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case", tag = "run")]
pub enum KubeJobBehaviour {
    /// Signon's `kubernetes:sync_token_secrets`: `GET {source}/_sim/sync`
    /// of the Signon simulator, then a server-side apply of each Secret
    /// into the CronJob's namespace as Signon's kubeclient sends it (field
    /// manager `signon`, force); then Complete. A failed fetch or apply
    /// fails the Job, the reason in its pod's termination message.
    SignonSync {
        /// The Signon simulator's base URL, `http://127.0.0.1:PORT`.
        source: String,
        #[serde(default)]
        delay_ms: u64,
    },
    /// Complete.
    Succeed {
        #[serde(default)]
        delay_ms: u64,
    },
    /// Failed (conditions FailureTarget then Failed).
    Fail {
        #[serde(default)]
        delay_ms: u64,
        /// The Job's condition reason; default `BackoffLimitExceeded`.
        #[serde(default)]
        reason: Option<String>,
        /// The Job's condition message; default "Job has reached the
        /// specified backoff limit".
        #[serde(default)]
        message: Option<String>,
        /// The pod's `state.terminated.reason`; default `Error`.
        #[serde(default)]
        pod_reason: Option<String>,
        /// The pod's `state.terminated.exitCode`; default 1.
        #[serde(default)]
        exit_code: Option<i64>,
        /// The pod's `state.terminated.message`.
        #[serde(default)]
        pod_message: Option<String>,
    },
}

/// How a Job ends, with what its pod reports.
pub(crate) enum JobEnd {
    Complete,
    Failed {
        reason: String,
        message: String,
        pod_reason: String,
        exit_code: i64,
        pod_message: Option<String>,
    },
}

impl JobEnd {
    pub(crate) fn failed(
        reason: Option<String>,
        message: Option<String>,
        pod_reason: Option<String>,
        exit_code: Option<i64>,
        pod_message: Option<String>,
    ) -> JobEnd {
        JobEnd::Failed {
            reason: reason.unwrap_or_else(|| "BackoffLimitExceeded".into()),
            message: message
                .unwrap_or_else(|| "Job has reached the specified backoff limit".into()),
            pod_reason: pod_reason.unwrap_or_else(|| "Error".into()),
            exit_code: exit_code.unwrap_or(1),
            pod_message,
        }
    }
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
    pub pods: Vec<Value>,
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
        db.record(Kind::CronJob, &seed.namespace, &seed.name, "ADDED");
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
        pods::roll_deployment_pods(&mut db, &seed.namespace, &seed.name);
        if let Some(delay) = seed.auto_rollout_ms {
            db.auto_rollouts
                .insert((seed.namespace.clone(), seed.name.clone()), delay);
        }
        db.record(Kind::Deployment, &seed.namespace, &seed.name, "ADDED");
        Ok(uid)
    }

    /// Sets what Jobs created from the CronJob `ns/name` from now on do by
    /// themselves.
    pub fn set_cronjob_behaviour(
        &self,
        namespace: &str,
        name: &str,
        behaviour: KubeJobBehaviour,
    ) -> Result<(), SimError> {
        let mut db = self.lock();
        let key = (Kind::CronJob, namespace.to_owned(), name.to_owned());
        if !db.objects.contains_key(&key) {
            return Err(unknown("cronjob", namespace, name));
        }
        db.job_behaviours
            .insert((namespace.to_owned(), name.to_owned()), behaviour);
        Ok(())
    }

    /// Jobs created from the CronJob from now on wait for the control API
    /// again.
    pub fn clear_cronjob_behaviour(&self, namespace: &str, name: &str) {
        self.lock()
            .job_behaviours
            .remove(&(namespace.to_owned(), name.to_owned()));
    }

    /// Lets the Deployment roll out by itself `delay_ms` after each
    /// template change (`None`: only on the control API's word).
    pub fn set_auto_rollout(
        &self,
        namespace: &str,
        name: &str,
        delay_ms: Option<u64>,
    ) -> Result<(), SimError> {
        let mut db = self.lock();
        let key = (Kind::Deployment, namespace.to_owned(), name.to_owned());
        if !db.objects.contains_key(&key) {
            return Err(unknown("deployment", namespace, name));
        }
        let key = (namespace.to_owned(), name.to_owned());
        match delay_ms {
            Some(delay) => db.auto_rollouts.insert(key, delay),
            None => db.auto_rollouts.remove(&key),
        };
        Ok(())
    }

    /// The pods of a Deployment, each with the digests of the values its
    /// env vars hold from Secrets.
    pub fn deployment_pods(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Vec<KubePodState>, SimError> {
        let db = self.lock();
        if !db
            .objects
            .contains_key(&(Kind::Deployment, namespace.to_owned(), name.to_owned()))
        {
            return Err(unknown("deployment", namespace, name));
        }
        Ok(pods::deployment_pod_names(&db, namespace, name)
            .iter()
            .filter_map(|pod| pods::pod_state(&db, namespace, pod))
            .collect())
    }

    /// Whether the Deployment has pods and every one of them holds `value`
    /// for the env var `env` (in every container that has it).
    pub fn deployment_pods_hold(
        &self,
        namespace: &str,
        name: &str,
        env: &str,
        value: &str,
    ) -> Result<bool, SimError> {
        let db = self.lock();
        if !db
            .objects
            .contains_key(&(Kind::Deployment, namespace.to_owned(), name.to_owned()))
        {
            return Err(unknown("deployment", namespace, name));
        }
        let names = pods::deployment_pod_names(&db, namespace, name);
        Ok(!names.is_empty()
            && names
                .iter()
                .all(|pod| pods::pod_holds(&db, namespace, pod, env, value)))
    }

    /// A pod as the API serves it.
    pub fn pod(&self, namespace: &str, name: &str) -> Option<Value> {
        self.object(Kind::Pod, namespace, name)
    }

    /// The pods in `namespace`, as the API serves them.
    pub fn pods(&self, namespace: &str) -> Vec<Value> {
        self.lock().list(Kind::Pod, namespace)
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
        let end = match outcome {
            JobOutcome::Complete => JobEnd::Complete,
            JobOutcome::Failed { reason, message } => {
                JobEnd::failed(reason, message, None, None, None)
            }
        };
        self.end_job(namespace, name, end, secrets)
    }

    /// Ends a Job and its pod (see [`KubernetesState::finish_job`]).
    pub(crate) fn end_job(
        &self,
        namespace: &str,
        name: &str,
        end: JobEnd,
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
        let pod_end = controllers::pod_end(&end);
        pods::end_job_pods(&mut db, namespace, name, &pod_end);
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
        let status = match end {
            JobEnd::Complete => json!({
                "active": 0, "ready": 0, "terminating": 0, "succeeded": 1,
                "completionTime": at,
                "conditions": [
                    condition("SuccessCriteriaMet", "CompletionsReached", "Reached expected number of succeeded pods"),
                    condition("Complete", "CompletionsReached", "Reached expected number of succeeded pods"),
                ],
            }),
            JobEnd::Failed {
                reason, message, ..
            } => json!({
                "active": 0, "ready": 0, "terminating": 0, "failed": 1,
                "conditions": [
                    condition("FailureTarget", &reason, &message),
                    condition("Failed", &reason, &message),
                ],
            }),
        };
        merge_patch(&mut job["status"], &status);
        job["metadata"]["resourceVersion"] = json!(rv);
        db.record(Kind::Job, namespace, name, "MODIFIED");
        Ok(())
    }

    /// Moves a Deployment's status to the end of its rollout (or to a
    /// missed progress deadline). At the end, pods of an older template are
    /// replaced by new ones, which snapshot the Secrets their env vars
    /// reference.
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
        // A finished rollout replaced the pods whose template changed; the
        // new ones read the Secrets now.
        if outcome == RolloutOutcome::Complete {
            pods::roll_deployment_pods(&mut db, namespace, name);
        }
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
            pods: of(Kind::Pod),
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
