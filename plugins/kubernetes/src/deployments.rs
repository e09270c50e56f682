//! Deployments: `kubectl rollout restart` (kubectl `rollout_restart.go`,
//! `objectrestarter.go`) and `kubectl rollout status` (`rollout_status.go`)
//! as plugin operations.
//!
//! A restart stamps the pod template with `restartedAt`, so the controller
//! rolls every pod; pods read `secretKeyRef` env vars only when they start,
//! which is why a rotation restarts its consumers. keycycle also stamps its
//! idempotency key, so a resumed run can tell whether its restart happened
//! and a repeated call does not roll the pods twice.

use keycycle_plugin_sdk::{Context, Error, Value, json, log};

use crate::api::{self, Api};
use crate::clock;
use crate::jobs::pace;

/// The annotation `kubectl rollout restart` sets on the pod template.
const RESTARTED_AT: &str = "kubectl.kubernetes.io/restartedAt";

/// The annotation holding the idempotency key of the restart.
pub(crate) const RESTART_KEY: &str = "keycycle.io/restart-key";

/// The field manager kubectl uses for `rollout restart`.
const FIELD_MANAGER: &str = "kubectl-rollout";

/// Default `timeout_secs` of `wait_rollout`.
const DEFAULT_TIMEOUT_SECS: u64 = 300;

fn annotation<'a>(deployment: &'a Value, key: &str) -> Option<&'a str> {
    deployment["spec"]["template"]["metadata"]["annotations"][key].as_str()
}

fn restarted(deployment: &Value, name: &str, ns: &str) -> Value {
    json!({
        "deployment": name,
        "namespace": ns,
        "generation": deployment["metadata"]["generation"],
        "restarted_at": annotation(deployment, RESTARTED_AT),
    })
}

/// The strategic merge patch of a restart at `now` by the call with
/// idempotency key `key` (none when the call has no key).
pub(crate) fn restart_patch(now: &str, key: &str) -> Value {
    let mut annotations = json!({ RESTARTED_AT: now });
    if !key.is_empty() {
        annotations[RESTART_KEY] = json!(key);
    }
    json!({ "spec": { "template": { "metadata": { "annotations": annotations } } } })
}

/// `rollout_restart`: refuses a paused Deployment as kubectl does; a
/// Deployment this call restarted already is left alone.
pub(crate) fn rollout_restart(api: &Api, ctx: &Context, input: &Value) -> Result<Value, Error> {
    let ns = api.namespace(input)?;
    let name = api::name_field(input, "deployment", 253)?;
    let path = api::deployment_path(&ns, name);
    let deployment = api.get(&path)?;
    let key = ctx.idempotency_key();
    if !key.is_empty() && annotation(&deployment, RESTART_KEY) == Some(key) {
        log::info(&format!(
            "deployment {ns}/{name} was restarted by this step already"
        ));
        return Ok(restarted(&deployment, name, &ns));
    }
    if deployment["spec"]["paused"].as_bool() == Some(true) {
        return Err(Error::provider(
            409,
            format!(
                "deployment {ns}/{name}: can't restart paused deployment (run rollout resume first)"
            ),
        ));
    }
    let patched: Value = api
        .send(
            api.request("PATCH", &path)?
                .query("fieldManager", FIELD_MANAGER)
                .header("Content-Type", "application/strategic-merge-patch+json")
                .body(restart_patch(&clock::now_rfc3339(), key).to_string()),
        )?
        .json()?;
    log::info(&format!(
        "restarted deployment {ns}/{name} (generation {})",
        patched["metadata"]["generation"]
    ));
    Ok(restarted(&patched, name, &ns))
}

/// `find_restart`: the Deployment's generation and `restartedAt` when its
/// template carries this call's restart key, else provider 404.
pub(crate) fn find_restart(api: &Api, ctx: &Context, input: &Value) -> Result<Value, Error> {
    let ns = api.namespace(input)?;
    let name = api::name_field(input, "deployment", 253)?;
    let deployment = api.get(&api::deployment_path(&ns, name))?;
    let key = ctx.idempotency_key();
    if key.is_empty() || annotation(&deployment, RESTART_KEY) != Some(key) {
        return Err(Error::provider(
            404,
            format!(
                "deployment {ns}/{name} was not restarted by this step (its pod template's \
                 {RESTART_KEY} annotation is not this step's key)"
            ),
        ));
    }
    Ok(restarted(&deployment, name, &ns))
}

/// Where a rollout stands.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Rollout {
    /// Still under way, with what it waits for (kubectl's words).
    Waiting(String),
    Complete,
    /// `ProgressDeadlineExceeded`, with the condition's message.
    Failed(String),
}

/// The rollout_status rules: the controller has seen the latest spec
/// (`generation <= observedGeneration`), its `Progressing` condition has
/// not given up (`ProgressDeadlineExceeded`), and every replica is updated
/// and available with no old one left.
pub(crate) fn rollout_state(deployment: &Value, name: &str) -> Rollout {
    let number = |v: &Value| v.as_i64().unwrap_or(0);
    let status = &deployment["status"];
    let generation = number(&deployment["metadata"]["generation"]);
    if generation > number(&status["observedGeneration"]) {
        return Rollout::Waiting("waiting for deployment spec update to be observed".into());
    }
    let progressing = status["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "Progressing");
    if let Some(c) = progressing
        && c["reason"] == "ProgressDeadlineExceeded"
    {
        let detail = c["message"].as_str().unwrap_or_default();
        return Rollout::Failed(
            format!("deployment \"{name}\" exceeded its progress deadline: {detail}")
                .trim_end_matches([' ', ':'])
                .to_owned(),
        );
    }
    // The API server defaults spec.replicas to 1.
    let wanted = deployment["spec"]["replicas"].as_i64().unwrap_or(1);
    let replicas = number(&status["replicas"]);
    let updated = number(&status["updatedReplicas"]);
    let available = number(&status["availableReplicas"]);
    if updated != wanted {
        return Rollout::Waiting(format!(
            "{updated} out of {wanted} new replicas have been updated"
        ));
    }
    if replicas != updated {
        return Rollout::Waiting(format!(
            "{} old replicas are pending termination",
            replicas - updated
        ));
    }
    if available < updated {
        return Rollout::Waiting(format!(
            "{available} of {updated} updated replicas are available"
        ));
    }
    Rollout::Complete
}

/// `wait_rollout`: polls the Deployment until its rollout is complete,
/// failed (progress deadline) or the timeout passes (`outcome: "timeout"`).
pub(crate) fn wait_rollout(api: &Api, input: &Value) -> Result<Value, Error> {
    let ns = api.namespace(input)?;
    let name = api::name_field(input, "deployment", 253)?;
    let pace = pace(input, DEFAULT_TIMEOUT_SECS)?;
    let path = api::deployment_path(&ns, name);
    let mut last = Value::Null;
    let mut waiting_for = String::new();
    let ended = clock::poll(pace, || {
        last = api.get(&path)?;
        Ok::<_, Error>(match rollout_state(&last, name) {
            Rollout::Waiting(why) => {
                waiting_for = why;
                None
            }
            Rollout::Complete => Some(("complete", "successfully rolled out".to_owned())),
            Rollout::Failed(why) => Some(("failed", why)),
        })
    })?;
    let (outcome, message) = ended.unwrap_or_else(|| {
        (
            "timeout",
            format!(
                "deployment {ns}/{name} had not finished rolling out after {} s: {waiting_for}",
                pace.timeout.as_secs()
            ),
        )
    });
    log::info(&format!("deployment {ns}/{name}: {outcome}: {message}"));
    let status = &last["status"];
    Ok(json!({
        "deployment": name,
        "namespace": ns,
        "outcome": outcome,
        "message": message,
        "replicas": status["replicas"].as_i64().unwrap_or(0),
        "updated": status["updatedReplicas"].as_i64().unwrap_or(0),
        "available": status["availableReplicas"].as_i64().unwrap_or(0),
        "generation": last["metadata"]["generation"],
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment(generation: i64, observed: i64, counts: (i64, i64, i64)) -> Value {
        json!({
            "metadata": { "name": "web", "generation": generation },
            "spec": { "replicas": 3 },
            "status": {
                "observedGeneration": observed,
                "replicas": counts.0, "updatedReplicas": counts.1, "availableReplicas": counts.2,
                "conditions": [{ "type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable" }],
            },
        })
    }

    #[test]
    fn the_rollout_status_rules() {
        assert_eq!(
            rollout_state(&deployment(2, 2, (3, 3, 3)), "web"),
            Rollout::Complete
        );
        assert!(
            matches!(rollout_state(&deployment(3, 2, (3, 3, 3)), "web"), Rollout::Waiting(w) if w.contains("observed"))
        );
        assert!(
            matches!(rollout_state(&deployment(2, 2, (3, 1, 3)), "web"), Rollout::Waiting(w) if w.contains("1 out of 3"))
        );
        assert!(
            matches!(rollout_state(&deployment(2, 2, (4, 3, 3)), "web"), Rollout::Waiting(w) if w.contains("1 old"))
        );
        assert!(
            matches!(rollout_state(&deployment(2, 2, (3, 3, 2)), "web"), Rollout::Waiting(w) if w.contains("2 of 3"))
        );
        // More available than updated is done (kubectl: available >= updated).
        let mut extra = deployment(2, 2, (3, 3, 3));
        extra["status"]["availableReplicas"] = json!(4);
        assert_eq!(rollout_state(&extra, "web"), Rollout::Complete);
        // No status yet at all: waiting, not done.
        let fresh = json!({ "metadata": { "generation": 1 }, "spec": { "replicas": 1 } });
        assert!(matches!(rollout_state(&fresh, "web"), Rollout::Waiting(_)));
        // spec.replicas absent means 1.
        let one = json!({ "metadata": { "generation": 1 }, "spec": {}, "status": {
            "observedGeneration": 1, "replicas": 1, "updatedReplicas": 1, "availableReplicas": 1 } });
        assert_eq!(rollout_state(&one, "web"), Rollout::Complete);
    }

    #[test]
    fn a_missed_progress_deadline_is_a_failure() {
        let mut d = deployment(2, 2, (3, 1, 2));
        d["status"]["conditions"] = json!([
            { "type": "Available", "status": "True", "reason": "MinimumReplicasAvailable" },
            { "type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
              "message": "ReplicaSet \"web-5d4\" has timed out progressing." },
        ]);
        assert_eq!(
            rollout_state(&d, "web"),
            Rollout::Failed("deployment \"web\" exceeded its progress deadline: ReplicaSet \"web-5d4\" has timed out progressing.".into())
        );
        // Not yet observed wins: the deadline may be from the old spec.
        d["metadata"]["generation"] = json!(3);
        assert!(matches!(rollout_state(&d, "web"), Rollout::Waiting(_)));
    }

    #[test]
    fn the_restart_patch() {
        assert_eq!(
            restart_patch("2026-08-01T10:00:00Z", "3f2a-7"),
            json!({ "spec": { "template": { "metadata": { "annotations": {
                RESTARTED_AT: "2026-08-01T10:00:00Z", RESTART_KEY: "3f2a-7" } } } } })
        );
        assert_eq!(
            restart_patch("2026-08-01T10:00:00Z", ""),
            json!({ "spec": { "template": { "metadata": { "annotations": {
                RESTARTED_AT: "2026-08-01T10:00:00Z" } } } } })
        );
    }

    #[test]
    fn restarted_reads_the_template() {
        let d = json!({ "metadata": { "generation": 5 }, "spec": { "template": { "metadata": {
            "annotations": { RESTARTED_AT: "2026-08-01T10:00:00Z", RESTART_KEY: "k" } } } } });
        assert_eq!(annotation(&d, RESTART_KEY), Some("k"));
        assert_eq!(
            restarted(&d, "web", "apps"),
            json!({ "deployment": "web", "namespace": "apps", "generation": 5, "restarted_at": "2026-08-01T10:00:00Z" })
        );
    }
}
