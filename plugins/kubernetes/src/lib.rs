//! keycycle plugin for the Kubernetes API: the steps a rotation takes in a
//! cluster, as kubectl would take them. It reads Secrets (digests, or one
//! key's value as a secret output), checks and sets one key of a Secret,
//! runs a CronJob once as `kubectl create job --from=cronjob/...` does and
//! waits for that Job, and restarts a Deployment as `kubectl rollout
//! restart` does and waits for the rollout.
//!
//! It acts with a service-account bearer token (secret `token`) against
//! config `api_url`; config `namespace` is the namespace of inputs that
//! name none. The API server's CA is the host's business, not the
//! plugin's. Errors keep the `Status` reason and message; a 429 comes back
//! retryable after `Retry-After`.

mod api;
mod clock;
mod deployments;
mod jobs;
mod secrets;
mod values;

use keycycle_plugin_sdk::prelude::*;

use api::{Api, TOKEN_SECRET};

struct Kubernetes;

impl Plugin for Kubernetes {
    fn describe() -> Description {
        let description = Description::new("kubernetes", env!("CARGO_PKG_VERSION"))
            .host("{config.api_url}")
            .secret(TOKEN_SECRET)
            .config("api_url")
            .config("namespace");
        operations()
            .into_iter()
            .fold(description, Description::operation)
    }

    fn invoke(ctx: &Context, operation: &str, input: Value) -> Result<Value, Error> {
        let api = Api::new(ctx)?;
        match operation {
            "read_secret" => secrets::read_secret(&api, &input),
            "read_secret_key" => secrets::read_secret_key(&api, &input),
            "secret_key_matches" => secrets::secret_key_matches(&api, &input),
            "patch_secret_key" => secrets::patch_secret_key(&api, &input),
            "read_cronjob" => jobs::read_cronjob(&api, &input),
            "create_job_from_cronjob" => jobs::create_job_from_cronjob(&api, ctx, &input),
            "find_job" => jobs::find_job(&api, ctx, &input),
            "wait_job" => jobs::wait_job(&api, &input),
            "rollout_restart" => deployments::rollout_restart(&api, ctx, &input),
            "find_restart" => deployments::find_restart(&api, ctx, &input),
            "wait_rollout" => deployments::wait_rollout(&api, &input),
            other => Err(Error::unknown_operation(other)),
        }
    }
}

keycycle_plugin_sdk::export_plugin!(Kubernetes);

const NAMESPACE: &str = "namespace (default: this plugin's config `namespace`)";
const TIMEOUT: &str = "how long to wait, in seconds (default 300); keep it under the plugin's \
                       `timeout_secs` in keycycle.toml";
const POLL: &str = "seconds between looks (default 2; stretched so a wait sends at most 90 \
                    requests)";

/// A Secret and one of its keys.
fn secret_key(op: Operation) -> Operation {
    op.input("namespace", NAMESPACE, false)
        .input("name", "the Secret's name", true)
        .input("key", "the key in the Secret's data", true)
}

/// The inputs of `create_job_from_cronjob`, which `find_job` takes too so
/// that the host can recover an interrupted create with the same input.
fn job_from(op: Operation) -> Operation {
    op.input("namespace", NAMESPACE, false)
        .input("cronjob", "the CronJob to run once", true)
        .input(
            "job_name",
            "the Job's name (default: <cronjob>-kc-<hash of this step's idempotency key>)",
            false,
        )
}

fn operations() -> Vec<Operation> {
    vec![
        Operation::new(
            "read_secret",
            "A Secret's type, resourceVersion and keys, each with the fingerprint and length of its \
             value, never the value",
        )
        .input("namespace", NAMESPACE, false)
        .input("name", "the Secret's name", true),
        secret_key(Operation::new(
            "read_secret_key",
            "One key of a Secret: {value (a secret), fingerprint, resource_version}; 404 when the \
             key is absent",
        ))
        .secret_output("value"),
        secret_key(Operation::new(
            "secret_key_matches",
            "Whether a Secret's key holds `expected` (constant-time): {matches, \
             fingerprint_current, fingerprint_expected, resource_version}",
        ))
        .input("expected", "the value it should hold (a secret)", true),
        secret_key(Operation::new(
            "patch_secret_key",
            "Set one key of an existing Secret (merge patch guarded by its resourceVersion, \
             retried on conflict); a key already equal is not written",
        ))
        .input("value", "the new value, in clear (a secret)", true)
        .mutates()
        .idempotent()
        .if_interrupted(
            "the Secret's key may have been set. Compare it with secret_key_matches, or check \
             `kubectl get secret NAME -n NAMESPACE -o jsonpath='{.metadata.resourceVersion}'`; \
             setting the same value again changes nothing, so `keycycle resume RUN_ID` is safe",
        ),
        Operation::new(
            "read_cronjob",
            "A CronJob: {name, namespace, uid, schedule, suspend, last_schedule_time, \
             containers}",
        )
        .input("namespace", NAMESPACE, false)
        .input("name", "the CronJob's name", true),
        job_from(Operation::new(
            "create_job_from_cronjob",
            "Run a CronJob once, as `kubectl create job --from=cronjob/...`: {job, namespace, \
             uid}",
        ))
        .mutates()
        .recover_with("find_job")
        .if_interrupted(
            "a Job may have been created from the CronJob. List this run's Jobs with `kubectl \
             get jobs -n NAMESPACE -l keycycle.io/run-id=RUN_ID`; a Job there has run or is \
             running, so wait for it (wait_job) rather than create another",
        ),
        job_from(Operation::new(
            "find_job",
            "The Job create_job_from_cronjob made in this step (same input), or 404",
        )),
        Operation::new(
            "wait_job",
            "Wait until a Job completes or fails: {job, namespace, outcome \
             (complete|failed|timeout), reason, message, pod_failure, succeeded, failed}",
        )
        .input("namespace", NAMESPACE, false)
        .input("name", "the Job's name", true)
        .input("timeout_secs", TIMEOUT, false)
        .input("poll_secs", POLL, false),
        Operation::new(
            "rollout_restart",
            "Restart a Deployment's pods, as `kubectl rollout restart`: {deployment, \
             namespace, generation, restarted_at}; a paused one is refused",
        )
        .input("namespace", NAMESPACE, false)
        .input("deployment", "the Deployment's name", true)
        .mutates()
        .idempotent()
        .recover_with("find_restart")
        .if_interrupted(
            "the Deployment may have been restarted. Check `kubectl get deployment NAME -n \
             NAMESPACE -o jsonpath='{.spec.template.metadata.annotations}'` for \
             keycycle.io/restart-key and `kubectl rollout status deployment/NAME -n \
             NAMESPACE`; `keycycle resume RUN_ID` restarts it only if this step's key is not \
             there",
        ),
        Operation::new(
            "find_restart",
            "The restart rollout_restart made in this step (same input): {deployment, \
             namespace, generation, restarted_at}, or 404",
        )
        .input("namespace", NAMESPACE, false)
        .input("deployment", "the Deployment's name", true),
        Operation::new(
            "wait_rollout",
            "Wait until a Deployment's rollout is done, as `kubectl rollout status`: \
             {deployment, namespace, outcome (complete|failed|timeout), message, replicas, \
             updated, available, generation}",
        )
        .input("namespace", NAMESPACE, false)
        .input("deployment", "the Deployment's name", true)
        .input("timeout_secs", TIMEOUT, false)
        .input("poll_secs", POLL, false),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use keycycle_plugin_sdk::bindings::keycycle::plugin::types::Operation as WitOperation;

    /// (operation, mutates, idempotent, recover_with, secret outputs).
    type Expected = (
        &'static str,
        bool,
        bool,
        Option<&'static str>,
        &'static [&'static str],
    );

    const EXPECTED: &[Expected] = &[
        ("read_secret", false, false, None, &[]),
        ("read_secret_key", false, false, None, &["value"]),
        ("secret_key_matches", false, false, None, &[]),
        ("patch_secret_key", true, true, None, &[]),
        ("read_cronjob", false, false, None, &[]),
        (
            "create_job_from_cronjob",
            true,
            false,
            Some("find_job"),
            &[],
        ),
        ("find_job", false, false, None, &[]),
        ("wait_job", false, false, None, &[]),
        ("rollout_restart", true, true, Some("find_restart"), &[]),
        ("find_restart", false, false, None, &[]),
        ("wait_rollout", false, false, None, &[]),
    ];

    fn ops() -> Vec<WitOperation> {
        keycycle_plugin_sdk::glue::describe::<Kubernetes>().operations
    }

    #[test]
    fn declares_host_secret_and_config() {
        let d = keycycle_plugin_sdk::glue::describe::<Kubernetes>();
        assert_eq!(d.name, "kubernetes");
        assert_eq!(d.hosts, ["{config.api_url}"]);
        assert_eq!(d.secrets, ["token"]);
        assert_eq!(d.config, ["api_url", "namespace"]);
    }

    #[test]
    fn flags_per_operation() {
        let ops = ops();
        assert_eq!(ops.len(), EXPECTED.len());
        for (op, (name, mutates, idempotent, recover, secrets)) in ops.iter().zip(EXPECTED) {
            assert_eq!(op.name, *name);
            assert_eq!(op.mutates, *mutates, "{name} mutates");
            assert_eq!(op.idempotent, *idempotent, "{name} idempotent");
            assert_eq!(op.recover_with.as_deref(), *recover, "{name} recover_with");
            assert_eq!(op.secret_outputs, *secrets, "{name} secret outputs");
            // Every change tells the operator what to look at.
            assert_eq!(op.if_interrupted.is_some(), *mutates, "{name} advice");
            if let Some(advice) = &op.if_interrupted {
                assert!(advice.contains("RUN_ID"), "{name}");
            }
            assert!(!op.doc.contains('\n'), "{name}: one line");
        }
    }

    #[test]
    fn recovery_takes_the_same_input() {
        let ops = ops();
        let inputs = |n: &str| {
            ops.iter()
                .find(|o| o.name == n)
                .unwrap()
                .inputs
                .iter()
                .map(|f| (f.name.clone(), f.required))
                .collect::<Vec<_>>()
        };
        assert_eq!(inputs("create_job_from_cronjob"), inputs("find_job"));
        assert_eq!(inputs("rollout_restart"), inputs("find_restart"));
    }

    #[test]
    fn the_namespace_is_optional_everywhere() {
        for op in ops() {
            let ns = op.inputs.iter().find(|f| f.name == "namespace");
            assert!(ns.is_some_and(|f| !f.required), "{}", op.name);
        }
    }
}
