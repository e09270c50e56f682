//! What the cluster does by itself once told how: Jobs created from a
//! CronJob with a behaviour run it (Signon's token sync, or a plain success
//! or failure) and end on their own, and Deployments with automatic
//! rollout finish their rollout after a delay. Both run on tokio tasks of
//! the runtime that received the request (the server's own), or on a
//! thread of their own when there is none.

use std::future::Future;
use std::time::Duration;

use serde_json::{Value, json};

use super::model::{Db, Kind};
use super::pods::PodEnd;
use super::{JobEnd, KubeJobBehaviour, KubernetesState, RolloutOutcome, api};
use crate::SignonSyncedSecret;

/// How long the Signon sync waits for the Signon simulator's answer.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs `work` after `delay_ms` on the current tokio runtime, or on a
/// thread with a runtime of its own when called outside one.
fn spawn_after(delay_ms: u64, work: impl Future<Output = ()> + Send + 'static) {
    let task = async move {
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        work.await;
    };
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => {
            handle.spawn(task);
        }
        Err(_) => {
            let _ = std::thread::Builder::new()
                .name("keycycle-sim-controller".into())
                .spawn(move || {
                    if let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        runtime.block_on(task);
                    }
                });
        }
    }
}

/// The behaviour of the CronJob that owns `job` (its ownerReference, as
/// `kubectl create job --from` sets it), if that CronJob has one. The
/// reference may name either version the CronJob is served at: kubectl
/// before 1.21 reads it as batch/v1beta1 and says so.
pub(crate) fn behaviour_of(db: &Db, ns: &str, job: &Value) -> Option<KubeJobBehaviour> {
    let owners = job.pointer("/metadata/ownerReferences")?.as_array()?;
    owners
        .iter()
        .filter(|o| {
            o["kind"] == "CronJob"
                && matches!(o["apiVersion"].as_str(), Some("batch/v1" | "batch/v1beta1"))
        })
        .find_map(|o| {
            let name = o["name"].as_str()?;
            let cronjob = db
                .objects
                .get(&(Kind::CronJob, ns.to_owned(), name.to_owned()))?;
            // An owner reference names one object: a CronJob of the same
            // name created since is another one.
            if let Some(uid) = o.get("uid").and_then(Value::as_str)
                && cronjob["metadata"]["uid"].as_str() != Some(uid)
            {
                return None;
            }
            db.job_behaviours
                .get(&(ns.to_owned(), name.to_owned()))
                .cloned()
        })
}

/// Lets the Job `ns/job` run `behaviour` by itself.
pub(crate) fn run_job(
    state: KubernetesState,
    ns: String,
    job: String,
    behaviour: KubeJobBehaviour,
) {
    let delay = match &behaviour {
        KubeJobBehaviour::SignonSync { delay_ms, .. }
        | KubeJobBehaviour::Succeed { delay_ms }
        | KubeJobBehaviour::Fail { delay_ms, .. } => *delay_ms,
    };
    spawn_after(delay, async move {
        let end = match behaviour {
            KubeJobBehaviour::Succeed { .. } => JobEnd::Complete,
            KubeJobBehaviour::Fail {
                reason,
                message,
                pod_reason,
                exit_code,
                pod_message,
                ..
            } => JobEnd::failed(reason, message, pod_reason, exit_code, pod_message),
            KubeJobBehaviour::SignonSync { source, .. } => {
                match signon_sync(&state, &ns, &source).await {
                    Ok(()) => JobEnd::Complete,
                    Err(why) => JobEnd::failed(None, None, None, None, Some(why)),
                }
            }
        };
        // The control API may have ended the Job meanwhile: then it stays
        // as it was ended.
        let _ = state.end_job(&ns, &job, end, Vec::new());
    });
}

/// What `kubernetes:sync_token_secrets` does in the Job's pod: asks Signon
/// (here its simulator's `/_sim/sync`) for the Secrets to write, and
/// server-side-applies each into the Job's namespace as Signon's kubeclient
/// does. Errors name what failed, never a value.
async fn signon_sync(state: &KubernetesState, ns: &str, source: &str) -> Result<(), String> {
    let url = format!("{}/_sim/sync", source.trim_end_matches('/'));
    let client = reqwest::Client::builder()
        .timeout(FETCH_TIMEOUT)
        .build()
        .map_err(|e| format!("cannot make an HTTP client: {e}"))?;
    let response = client
        .get(&url)
        .send()
        .await
        .map_err(|e| format!("GET {url} failed: {e}"))?;
    let status = response.status();
    if !status.is_success() {
        return Err(format!("GET {url} answered {status}"));
    }
    let secrets: Vec<SignonSyncedSecret> = response
        .json()
        .await
        .map_err(|e| format!("GET {url} answered something that is not a sync list: {e}"))?;
    for secret in secrets {
        apply_as_signon(state, ns, &secret).await?;
    }
    Ok(())
}

/// Ruby's `Base64.encode64`: standard base64 in lines of 60 characters,
/// each ending with a newline.
fn ruby_encode64(bytes: &[u8]) -> String {
    use base64::Engine;
    let text = base64::engine::general_purpose::STANDARD.encode(bytes);
    let mut out = String::with_capacity(text.len() + text.len() / 60 + 1);
    for line in text.as_bytes().chunks(60) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out
}

/// The apply request Signon's kubeclient sends for one synced Secret
/// (`PATCH .../secrets/{name}?fieldManager=signon&force=true`,
/// `application/apply-patch+yaml`), through the API's own apply path.
async fn apply_as_signon(
    state: &KubernetesState,
    ns: &str,
    secret: &SignonSyncedSecret,
) -> Result<(), String> {
    let config = json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": { "name": secret.name, "namespace": ns },
        "type": "Opaque",
        "data": { "bearer_token": ruby_encode64(secret.bearer_token.expose().as_bytes()) },
    });
    let query = [
        ("fieldManager".to_owned(), "signon".to_owned()),
        ("force".to_owned(), "true".to_owned()),
    ]
    .into();
    let response = {
        let mut db = state.lock();
        api::patch_authorized(
            &mut db,
            Kind::Secret,
            ns,
            &secret.name,
            &query,
            "application/apply-patch+yaml",
            config.to_string().as_bytes(),
            "signon",
        )
    };
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let body = axum::body::to_bytes(response.into_body(), 64 * 1024)
        .await
        .unwrap_or_default();
    let message = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|b| b["message"].as_str().map(str::to_owned))
        .unwrap_or_default();
    Err(format!(
        "applying secret {ns}/{} answered {status}: {message}",
        secret.name
    ))
}

/// After a write to a Deployment: if it rolls out by itself and its
/// template changed (generation ahead of observedGeneration), finishes the
/// rollout after its delay, unless another change came meanwhile (that
/// change's own rollout then finishes it) or it is paused.
pub(crate) fn after_deployment_write(state: &KubernetesState, db: &Db, ns: &str, name: &str) {
    let Some(delay) = db.auto_rollouts.get(&(ns.to_owned(), name.to_owned())) else {
        return;
    };
    let Some(deployment) = db
        .objects
        .get(&(Kind::Deployment, ns.to_owned(), name.to_owned()))
    else {
        return;
    };
    let Some(generation) = deployment["metadata"]["generation"].as_i64() else {
        return;
    };
    let observed = deployment
        .pointer("/status/observedGeneration")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    if generation <= observed {
        return;
    }
    let (state, ns, name) = (state.clone(), ns.to_owned(), name.to_owned());
    spawn_after(*delay, async move {
        let due = {
            let db = state.lock();
            db.objects
                .get(&(Kind::Deployment, ns.clone(), name.clone()))
                .is_some_and(|d| {
                    d["metadata"]["generation"].as_i64() == Some(generation)
                        && d["spec"]["paused"] != json!(true)
                        && d.pointer("/status/observedGeneration")
                            .and_then(Value::as_i64)
                            .unwrap_or(0)
                            < generation
                })
        };
        if due {
            let _ = state.advance_rollout(&ns, &name, RolloutOutcome::Complete);
        }
    });
}

/// The pod end a Job end implies.
pub(crate) fn pod_end(end: &JobEnd) -> PodEnd {
    match end {
        JobEnd::Complete => PodEnd::Succeeded,
        JobEnd::Failed {
            pod_reason,
            exit_code,
            pod_message,
            ..
        } => PodEnd::Failed {
            reason: pod_reason.clone(),
            exit_code: *exit_code,
            message: pod_message.clone(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::{ruby_encode64, spawn_after};

    #[test]
    fn work_scheduled_outside_a_runtime_still_runs() {
        let (done, ran) = std::sync::mpsc::channel();
        spawn_after(10, async move {
            let _ = done.send(());
        });
        ran.recv_timeout(std::time::Duration::from_secs(10))
            .expect("the delayed work ran on a thread of its own");
    }

    #[test]
    fn encode64_wraps_at_sixty_characters_and_ends_with_a_newline() {
        assert_eq!(ruby_encode64(b"abc"), "YWJj\n");
        let long = ruby_encode64(&[b'x'; 50]);
        let lines: Vec<&str> = long.lines().collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].len(), 60);
        assert!(long.ends_with('\n'));
    }
}
