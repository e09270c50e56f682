//! CronJobs and Jobs: reading a CronJob, running it once as `kubectl
//! create job NAME --from=cronjob/CJ` does (kubectl `create_job.go`), finding
//! that Job again after an interruption, and waiting for a Job to end.
//!
//! The Job is named from the call's idempotency key, so a retried or
//! resumed call asks for the same name: the API server's `AlreadyExists`
//! then stands for "this step made it already", once the Job's annotation
//! proves it.

use keycycle_plugin_sdk::{Context, Error, Input, Value, json, log};

use crate::api::{self, Api};
use crate::clock::{self, Pace};
use crate::values::sha256_hex;

/// The annotation kubectl puts on a Job made from a CronJob by hand.
const INSTANTIATE: &str = "cronjob.kubernetes.io/instantiate";

/// The annotation holding the idempotency key of the call that made the
/// Job: how `find_job` and a repeated create know it is theirs.
pub(crate) const KEY_ANNOTATION: &str = "keycycle.io/idempotency-key";

/// The label holding the run id, so an operator can list a run's Jobs with
/// `kubectl get jobs -l keycycle.io/run-id=RUN_ID`.
pub(crate) const RUN_LABEL: &str = "keycycle.io/run-id";

/// The field manager kubectl uses for `create job`.
const FIELD_MANAGER: &str = "kubectl-create";

/// Default `timeout_secs` of `wait_job`.
pub(crate) const DEFAULT_TIMEOUT_SECS: u64 = 300;

/// `read_cronjob`: the CronJob's schedule, suspension, uid, last run and
/// container names.
pub(crate) fn read_cronjob(api: &Api, input: &Value) -> Result<Value, Error> {
    let ns = api.namespace(input)?;
    let name = api::name_field(input, "name", 52)?;
    let cronjob = api.get(&api::cronjob_path(&ns, name))?;
    let containers: Vec<Value> = cronjob
        .pointer("/spec/jobTemplate/spec/template/spec/containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|c| c["name"].clone())
        .collect();
    Ok(json!({
        "name": cronjob["metadata"]["name"],
        "namespace": cronjob["metadata"]["namespace"],
        "uid": cronjob["metadata"]["uid"],
        "schedule": cronjob["spec"]["schedule"],
        "suspend": cronjob["spec"]["suspend"].as_bool().unwrap_or(false),
        "last_schedule_time": cronjob["status"]["lastScheduleTime"],
        "containers": containers,
    }))
}

/// The Job name a create in this call uses: input `job_name`, else
/// `<cronjob>-kc-<10 hex of sha256(idempotency key)>`, the CronJob's
/// part shortened so the whole is a DNS label of at most 63 characters
/// (the Job controller copies the name into a label value, which allows no
/// more).
pub(crate) fn job_name(ctx: &Context, input: &Value, cronjob: &str) -> Result<String, Error> {
    if let Some(name) = input.opt_str_field("job_name")? {
        let name = name.trim();
        api::check_name("job_name", name, 63)?;
        return Ok(name.to_owned());
    }
    let key = ctx.idempotency_key();
    if key.is_empty() {
        return Err(Error::invalid_input(
            "this call has no idempotency key to name the Job after; give `job_name`",
        ));
    }
    Ok(derived_name(cronjob, key))
}

/// See [`job_name`].
pub(crate) fn derived_name(cronjob: &str, key: &str) -> String {
    let suffix = format!("-kc-{}", &sha256_hex(key.as_bytes())[..10]);
    let mut prefix: String = cronjob
        .chars()
        .map(|c| if c == '.' { '-' } else { c })
        .take(63 - suffix.len())
        .collect();
    while prefix.ends_with('-') {
        prefix.pop();
    }
    format!("{prefix}{suffix}")
}

/// The Job `kubectl create job NAME --from=cronjob/CJ` sends: the
/// jobTemplate's labels and spec, its annotations over
/// `cronjob.kubernetes.io/instantiate: manual`, and the CronJob as the
/// controlling owner. keycycle adds its idempotency key annotation and its
/// run-id label (when the run id is a valid label value).
pub(crate) fn job_manifest(cronjob: &Value, name: &str, ctx: &Context) -> Value {
    let template = &cronjob["spec"]["jobTemplate"];
    let mut annotations = serde_json::Map::new();
    annotations.insert(INSTANTIATE.into(), json!("manual"));
    if let Some(theirs) = template["metadata"]["annotations"].as_object() {
        for (k, v) in theirs {
            annotations.insert(k.clone(), v.clone());
        }
    }
    annotations.insert(KEY_ANNOTATION.into(), json!(ctx.idempotency_key()));
    let mut labels = template["metadata"]["labels"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    if is_label_value(ctx.run_id()) {
        labels.insert(RUN_LABEL.into(), json!(ctx.run_id()));
    }
    let mut metadata = json!({
        "name": name,
        "namespace": cronjob["metadata"]["namespace"],
        "annotations": annotations,
        "ownerReferences": [{
            "apiVersion": "batch/v1",
            "kind": "CronJob",
            "name": cronjob["metadata"]["name"],
            "uid": cronjob["metadata"]["uid"],
            "controller": true,
        }],
    });
    if !labels.is_empty() {
        metadata["labels"] = Value::Object(labels);
    }
    json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": metadata,
        "spec": template["spec"],
    })
}

/// A label value: at most 63 of `[A-Za-z0-9._-]`, alphanumeric at both
/// ends (or empty, which is not worth a label).
fn is_label_value(value: &str) -> bool {
    let ends = |b: Option<&u8>| b.is_some_and(u8::is_ascii_alphanumeric);
    !value.is_empty()
        && value.len() <= 63
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && ends(value.as_bytes().first())
        && ends(value.as_bytes().last())
}

/// Whether `job` was made by the call with idempotency key `key`.
fn made_by(job: &Value, key: &str) -> bool {
    !key.is_empty() && job["metadata"]["annotations"][KEY_ANNOTATION].as_str() == Some(key)
}

fn created(job: &Value) -> Value {
    json!({
        "job": job["metadata"]["name"],
        "namespace": job["metadata"]["namespace"],
        "uid": job["metadata"]["uid"],
    })
}

/// `create_job_from_cronjob`: reads the CronJob, then creates the Job from
/// its jobTemplate.
pub(crate) fn create_job_from_cronjob(
    api: &Api,
    ctx: &Context,
    input: &Value,
) -> Result<Value, Error> {
    let ns = api.namespace(input)?;
    let cronjob_name = api::name_field(input, "cronjob", 52)?;
    let name = job_name(ctx, input, cronjob_name)?;
    let cronjob = api.get(&api::cronjob_path(&ns, cronjob_name))?;
    let manifest = job_manifest(&cronjob, &name, ctx);
    let response = api
        .request("POST", &api::jobs_path(&ns, None))?
        .query("fieldManager", FIELD_MANAGER)
        .query("fieldValidation", "Strict")
        .json(&manifest)
        .send()?;
    if response.status == 409 && api::status_reason(&response.body) == "AlreadyExists" {
        // The name is this step's own, so the Job is most likely the one
        // an earlier attempt of this call made; the annotation decides.
        let existing = api.get(&api::jobs_path(&ns, Some(&name)))?;
        if made_by(&existing, ctx.idempotency_key()) {
            log::info(&format!(
                "job {ns}/{name} exists already, made by this step"
            ));
            return Ok(created(&existing));
        }
    }
    let job: Value = api::check(response)?.json()?;
    log::info(&format!(
        "created job {ns}/{name} from cronjob {cronjob_name}"
    ));
    Ok(created(&job))
}

/// `find_job`: the Job an interrupted `create_job_from_cronjob` with the
/// same input and call context made, or provider 404.
pub(crate) fn find_job(api: &Api, ctx: &Context, input: &Value) -> Result<Value, Error> {
    let ns = api.namespace(input)?;
    let cronjob_name = api::name_field(input, "cronjob", 52)?;
    let name = job_name(ctx, input, cronjob_name)?;
    let job = api.get(&api::jobs_path(&ns, Some(&name)))?;
    if !made_by(&job, ctx.idempotency_key()) {
        return Err(Error::provider(
            404,
            format!(
                "job {ns}/{name} exists, but this step did not create it (its annotation \
                 {KEY_ANNOTATION} is not this step's key)"
            ),
        ));
    }
    Ok(created(&job))
}

/// How a Job ended, from its status: a `Complete` or `Failed` condition
/// with status "True". `SuccessCriteriaMet` and `FailureTarget` (1.31+)
/// come earlier, while pods may still be ending, so they do not count.
pub(crate) fn job_outcome(job: &Value) -> Option<(&'static str, String, String)> {
    let conditions = job["status"]["conditions"].as_array()?;
    conditions.iter().find_map(|c| {
        let outcome = match c["type"].as_str() {
            Some("Complete") => "complete",
            Some("Failed") => "failed",
            _ => return None,
        };
        (c["status"].as_str() == Some("True")).then(|| {
            let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
            (outcome, text(&c["reason"]), text(&c["message"]))
        })
    })
}

/// The first container of `pods` that ended with a failure (else the first
/// that ended at all): `{pod, container, reason, exit_code, message}`.
/// Init containers count, and so does the last state of a container that
/// was restarted (`restartPolicy: OnFailure`).
pub(crate) fn pod_failure(pods: &Value) -> Value {
    let mut first_ended = Value::Null;
    for pod in pods["items"].as_array().into_iter().flatten() {
        let statuses = ["initContainerStatuses", "containerStatuses"]
            .into_iter()
            .filter_map(|k| pod["status"][k].as_array())
            .flatten();
        for status in statuses {
            for state in ["state", "lastState"] {
                let ended = &status[state]["terminated"];
                if !ended.is_object() {
                    continue;
                }
                let shown = json!({
                    "pod": pod["metadata"]["name"],
                    "container": status["name"],
                    "reason": ended["reason"],
                    "exit_code": ended["exitCode"],
                    "message": ended["message"],
                });
                if ended["exitCode"].as_i64().unwrap_or(0) != 0 {
                    return shown;
                }
                if first_ended.is_null() {
                    first_ended = shown;
                }
            }
        }
    }
    first_ended
}

/// The Job's pods, by the label the Job controller sets on them: `job-name`
/// (every version), then `batch.kubernetes.io/job-name` (1.27+) if the
/// first finds none. A failure here only costs the detail.
fn failed_pod(api: &Api, ns: &str, job: &str) -> Value {
    for label in ["job-name", "batch.kubernetes.io/job-name"] {
        let pods = api.request("GET", &api::pods_path(ns)).and_then(|request| {
            api.send(request.query("labelSelector", &format!("{label}={job}")))?
                .json::<Value>()
        });
        match pods {
            Ok(pods) if pods["items"].as_array().is_some_and(|i| !i.is_empty()) => {
                return pod_failure(&pods);
            }
            Ok(_) => {}
            Err(e) => {
                log::warn(&format!("could not list the pods of job {ns}/{job}: {e}"));
                return Value::Null;
            }
        }
    }
    Value::Null
}

/// `wait_job`: polls the Job until it completes or fails, or the timeout
/// passes (`outcome: "timeout"`).
pub(crate) fn wait_job(api: &Api, input: &Value) -> Result<Value, Error> {
    let ns = api.namespace(input)?;
    let name = api::name_field(input, "name", 63)?;
    let pace = pace(input, DEFAULT_TIMEOUT_SECS)?;
    let path = api::jobs_path(&ns, Some(name));
    let mut last = Value::Null;
    let ended = clock::poll(pace, || {
        last = api.get(&path)?;
        Ok::<_, Error>(job_outcome(&last))
    })?;
    let counts = |job: &Value| {
        (
            job["status"]["succeeded"].as_u64().unwrap_or(0),
            job["status"]["failed"].as_u64().unwrap_or(0),
        )
    };
    let (succeeded, failed) = counts(&last);
    let Some((outcome, reason, message)) = ended else {
        let active = last["status"]["active"].as_u64().unwrap_or(0);
        return Ok(json!({
            "job": name,
            "namespace": ns,
            "outcome": "timeout",
            "reason": null,
            "message": format!(
                "job {ns}/{name} had not finished after {} s ({active} active, {succeeded} \
                 succeeded, {failed} failed pods)",
                pace.timeout.as_secs()
            ),
            "pod_failure": null,
            "succeeded": succeeded,
            "failed": failed,
        }));
    };
    let pod_failure = if outcome == "failed" {
        failed_pod(api, &ns, name)
    } else {
        Value::Null
    };
    log::info(&format!("job {ns}/{name}: {outcome} ({reason})"));
    Ok(json!({
        "job": name,
        "namespace": ns,
        "outcome": outcome,
        "reason": reason,
        "message": message,
        "pod_failure": pod_failure,
        "succeeded": succeeded,
        "failed": failed,
    }))
}

/// Inputs `timeout_secs` and `poll_secs` of a wait.
pub(crate) fn pace(input: &Value, default_timeout: u64) -> Result<Pace, Error> {
    let opt = |field: &str| -> Result<Option<u64>, Error> {
        input
            .field(field)
            .map(|_| input.u64_field(field))
            .transpose()
    };
    Ok(Pace::new(
        opt("timeout_secs")?,
        opt("poll_secs")?,
        default_timeout,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> Context {
        Context::new("3f2a9c0d11aa22bb", "3f2a9c0d11aa22bb-4", Vec::new())
    }

    fn cronjob() -> Value {
        json!({
            "apiVersion": "batch/v1", "kind": "CronJob",
            "metadata": { "name": "signon-sync-token-secrets-to-k8s", "namespace": "apps", "uid": "u-cj" },
            "spec": {
                "schedule": "9 1 * * *",
                "jobTemplate": {
                    "metadata": {
                        "labels": { "app": "signon" },
                        "annotations": { "team": "platform", INSTANTIATE: "from-template" },
                    },
                    "spec": {
                        "backoffLimit": 2,
                        "template": { "spec": { "restartPolicy": "Never",
                            "containers": [{ "name": "sync", "image": "signon:1" }] } },
                    },
                },
            },
        })
    }

    #[test]
    fn the_job_is_the_one_kubectl_create_job_from_sends() {
        let job = job_manifest(&cronjob(), "sync-1", &ctx());
        assert_eq!(job["apiVersion"], "batch/v1");
        assert_eq!(job["kind"], "Job");
        assert_eq!(job["metadata"]["name"], "sync-1");
        assert_eq!(job["metadata"]["namespace"], "apps");
        // kubectl copies the template's annotations over its own.
        assert_eq!(job["metadata"]["annotations"][INSTANTIATE], "from-template");
        assert_eq!(job["metadata"]["annotations"]["team"], "platform");
        assert_eq!(
            job["metadata"]["annotations"][KEY_ANNOTATION],
            "3f2a9c0d11aa22bb-4"
        );
        assert_eq!(job["metadata"]["labels"]["app"], "signon");
        assert_eq!(job["metadata"]["labels"][RUN_LABEL], "3f2a9c0d11aa22bb");
        assert_eq!(
            job["metadata"]["ownerReferences"],
            json!([{ "apiVersion": "batch/v1", "kind": "CronJob",
                     "name": "signon-sync-token-secrets-to-k8s", "uid": "u-cj", "controller": true }])
        );
        assert_eq!(job["spec"], cronjob()["spec"]["jobTemplate"]["spec"]);
        assert!(made_by(&job, "3f2a9c0d11aa22bb-4"));
        assert!(!made_by(&job, "other"));
        assert!(!made_by(&job, ""));
    }

    #[test]
    fn a_plain_template_gets_the_manual_annotation() {
        let mut cj = cronjob();
        cj["spec"]["jobTemplate"]["metadata"] = json!({});
        let job = job_manifest(
            &cj,
            "j",
            &Context::new("run id with spaces", "k", Vec::new()),
        );
        assert_eq!(job["metadata"]["annotations"][INSTANTIATE], "manual");
        assert!(job["metadata"].get("labels").is_none(), "{job}");
    }

    #[test]
    fn names_derive_from_the_idempotency_key() {
        let name = derived_name("signon-sync-token-secrets-to-k8s", "3f2a9c0d11aa22bb-4");
        let hash = &sha256_hex(b"3f2a9c0d11aa22bb-4")[..10];
        assert_eq!(name, format!("signon-sync-token-secrets-to-k8s-kc-{hash}"));
        assert_eq!(
            name,
            derived_name("signon-sync-token-secrets-to-k8s", "3f2a9c0d11aa22bb-4")
        );
        assert_ne!(
            name,
            derived_name("signon-sync-token-secrets-to-k8s", "3f2a9c0d11aa22bb-5")
        );
        // Long and dotted CronJob names still give a DNS label.
        for cronjob in [
            "a".repeat(52),
            format!("{}-b", "a".repeat(48)),
            "a.b.c".to_owned(),
        ] {
            let name = derived_name(&cronjob, "k");
            assert!(name.len() <= 63, "{name}");
            assert!(!name.contains('.') && !name.contains("--kc"), "{name}");
            assert!(api::check_name("job", &name, 63).is_ok(), "{name}");
        }
        let explicit = job_name(&ctx(), &json!({"job_name": "sync-by-hand"}), "cj").unwrap();
        assert_eq!(explicit, "sync-by-hand");
        assert!(job_name(&ctx(), &json!({"job_name": "Bad_Name"}), "cj").is_err());
        let keyless = Context::new("r", "", Vec::new());
        assert!(job_name(&keyless, &json!({}), "cj").is_err());
    }

    #[test]
    fn only_complete_or_failed_true_ends_a_job() {
        let job = |conditions: Value| json!({ "status": { "conditions": conditions } });
        assert_eq!(job_outcome(&json!({"status": {"active": 1}})), None);
        let interim = json!([{ "type": "SuccessCriteriaMet", "status": "True", "reason": "CompletionsReached" }]);
        assert_eq!(job_outcome(&job(interim)), None);
        let target = json!([{ "type": "FailureTarget", "status": "True", "reason": "BackoffLimitExceeded" }]);
        assert_eq!(job_outcome(&job(target)), None);
        let complete = json!([
            { "type": "SuccessCriteriaMet", "status": "True", "reason": "CompletionsReached" },
            { "type": "Complete", "status": "True", "reason": "CompletionsReached", "message": "Reached expected number of succeeded pods" },
        ]);
        assert_eq!(
            job_outcome(&job(complete)),
            Some((
                "complete",
                "CompletionsReached".into(),
                "Reached expected number of succeeded pods".into()
            ))
        );
        let failed = json!([
            { "type": "FailureTarget", "status": "True", "reason": "BackoffLimitExceeded" },
            { "type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "message": "Job has reached the specified backoff limit" },
        ]);
        assert_eq!(job_outcome(&job(failed)).unwrap().0, "failed");
        let not_yet = json!([{ "type": "Failed", "status": "False" }]);
        assert_eq!(job_outcome(&job(not_yet)), None);
    }

    #[test]
    fn the_failed_container_is_reported() {
        let pods = json!({ "items": [
            { "metadata": { "name": "sync-1-abcde" }, "status": {
                "initContainerStatuses": [{ "name": "init", "state": { "terminated": { "reason": "Completed", "exitCode": 0 } } }],
                "containerStatuses": [{ "name": "sync", "state": { "terminated": {
                    "reason": "Error", "exitCode": 1, "message": "rake aborted!" } } }],
            } },
        ] });
        assert_eq!(
            pod_failure(&pods),
            json!({ "pod": "sync-1-abcde", "container": "sync", "reason": "Error", "exit_code": 1, "message": "rake aborted!" })
        );
        let restarted = json!({ "items": [{ "metadata": { "name": "p" }, "status": {
            "containerStatuses": [{ "name": "c", "state": { "waiting": { "reason": "CrashLoopBackOff" } },
                "lastState": { "terminated": { "reason": "OOMKilled", "exitCode": 137 } } }] } }] });
        assert_eq!(pod_failure(&restarted)["reason"], "OOMKilled");
        let clean = json!({ "items": [{ "metadata": { "name": "p" }, "status": {
            "containerStatuses": [{ "name": "c", "state": { "terminated": { "reason": "Completed", "exitCode": 0 } } }] } }] });
        assert_eq!(pod_failure(&clean)["reason"], "Completed");
        assert_eq!(pod_failure(&json!({ "items": [] })), Value::Null);
    }

    #[test]
    fn wait_inputs() {
        let pace = pace(&json!({"timeout_secs": 60, "poll_secs": 3}), 300).unwrap();
        assert_eq!(pace.timeout.as_secs(), 60);
        assert_eq!(pace.interval.as_secs(), 3);
        assert!(super::pace(&json!({"timeout_secs": "60"}), 300).is_err());
        assert_eq!(super::pace(&json!({}), 300).unwrap().timeout.as_secs(), 300);
    }

    #[test]
    fn label_values() {
        assert!(is_label_value("3f2a9c0d11aa22bb"));
        assert!(!is_label_value(""));
        assert!(!is_label_value("a b"));
        assert!(!is_label_value(&"a".repeat(64)));
    }
}
