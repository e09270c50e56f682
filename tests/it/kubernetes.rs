//! The Kubernetes plugin through the real binary against the Kubernetes
//! simulator: Secret keys read as fingerprints and patched with
//! resourceVersion conflicts retried, the API's Status reason and message
//! kept in errors, a rollout that misses its deadline reported as failed,
//! and no value anywhere in what keycycle prints or keeps.

use keycycle_secret::SecretValue;
use keycycle_sim::{
    FailRule, KubeDeploymentSeed, KubeSecretSeed, KubeTokenSeed, KubernetesState, RolloutOutcome,
    SimServer,
};

use crate::support::*;

const NS: &str = "apps";

struct Cluster {
    rt: tokio::runtime::Runtime,
    server: Option<SimServer>,
    state: KubernetesState,
    ws: Workspace,
    value: String,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            self.rt.block_on(server.shutdown());
        }
    }
}

fn cluster(runbook: &str) -> Cluster {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (server, state) = rt.block_on(keycycle_sim::start_kubernetes(0)).unwrap();
    let origin = server.base_url.clone();
    state.add_namespace(NS);
    let token = state
        .add_token(KubeTokenSeed {
            namespace: NS.into(),
            service_account: "rotator".into(),
            token: None,
            namespaces: Some(vec![NS.into()]),
        })
        .unwrap();
    let value = canary("k8s-value-");
    state
        .put_secret(KubeSecretSeed {
            namespace: NS.into(),
            name: "app-token".into(),
            data: [("token".to_owned(), SecretValue::new(value.clone()))].into(),
            ..KubeSecretSeed::default()
        })
        .unwrap();
    state
        .add_deployment(KubeDeploymentSeed {
            namespace: NS.into(),
            name: "app".into(),
            ..KubeDeploymentSeed::default()
        })
        .unwrap();
    let ws = Workspace::new();
    ws.config(&format!(
        "[plugins.kube]\npath = \"{}\"\nhosts = [\"{origin}\"]\nsecrets = {{ token = \"k8s/rotator\" }}\nconfig = {{ api_url = \"{origin}\", namespace = \"{NS}\" }}\ntimeout_secs = 60\n\n[runbooks.k]\nsecrets = [\"next\"]\n",
        wasm("kubernetes").display()
    ));
    ws.set_secret("k8s/rotator", token.expose());
    ws.runbook("k", runbook);
    Cluster {
        rt,
        server: Some(server),
        state,
        ws,
        value,
    }
}

const PATCH: &str = r#"
let kube = plugin("kube");
let before = kube.read_secret(#{ name: "app-token" });
let next = secret("next");
let patched = kube.patch_secret_key(#{ name: "app-token", key: "token", value: next });
let again = kube.patch_secret_key(#{ name: "app-token", key: "token", value: next });
let check = kube.secret_key_matches(#{ name: "app-token", key: "token", expected: next });
#{ before: before.keys.token, patched: patched, again_changed: again.changed, matches: check.matches }
"#;

#[test]
fn a_secret_key_is_patched_through_a_conflict_and_only_fingerprints_leave_the_plugin() {
    let c = cluster(PATCH);
    let next = canary("k8s-next-");
    c.ws.set_secret("next", &next);
    // Another writer wins the race once: the API answers 409 Conflict.
    c.state.fail(FailRule {
        times: 1,
        message: Some("Operation cannot be fulfilled on secrets \"app-token\": the object has been modified; please apply your changes to the latest version and try again".into()),
        ..FailRule::new("PATCH", "/api/v1/namespaces/apps/secrets/app-token", 409)
    });
    let run = c.ws.run(&["run", "k", "-o", "json"]);
    run.assert_ok();
    assert_clean("output", &format!("{}{}", run.stdout, run.stderr));
    let result = &run.json()["result"];
    assert_eq!(result["before"]["length"], c.value.len());
    assert_eq!(result["before"]["fingerprint"].as_str().unwrap().len(), 16);
    assert_eq!(result["patched"]["changed"], true);
    assert_eq!(
        result["again_changed"], false,
        "an equal value is not written again"
    );
    assert_eq!(result["matches"], true);
    let patches = c
        .state
        .requests()
        .iter()
        .filter(|r| r.method == "PATCH")
        .count();
    assert_eq!(patches, 2, "one conflict, then the patch that landed");
    assert_eq!(
        c.state.secret(NS, "app-token").unwrap().data["token"].expose(),
        next
    );
    c.ws.assert_files_clean_including(&["state/state.db"]);
}

#[test]
fn conflicts_that_never_end_fail_with_the_apis_reason_and_message() {
    let c = cluster(PATCH);
    c.ws.set_secret("next", &canary("k8s-next-"));
    c.state.fail(FailRule {
        times: 100,
        message: Some(
            "Operation cannot be fulfilled on secrets \"app-token\": the object has been modified"
                .into(),
        ),
        ..FailRule::new("PATCH", "/api/v1/namespaces/apps/secrets/app-token", 409)
    });
    let run = c.ws.run(&["run", "k"]);
    run.assert_code(5)
        .stderr_has("kube")
        .stderr_has("patch_secret_key")
        .stderr_has("Conflict")
        .stderr_has("the object has been modified");
    assert_clean("output", &format!("{}{}", run.stdout, run.stderr));
    assert_eq!(
        c.state.secret(NS, "app-token").unwrap().data["token"].expose(),
        c.value,
        "nothing was written"
    );
}

#[test]
fn errors_keep_the_status_reason_and_a_missed_rollout_deadline_is_a_failure() {
    let c = cluster(
        r#"
let kube = plugin("kube");
let missing = "";
try { kube.read_secret(#{ name: "nope" }); } catch (e) { missing = `${e.status} ${e.message}`; }
let restarted = kube.rollout_restart(#{ deployment: "app" });
let rolled = kube.wait_rollout(#{ deployment: "app", timeout_secs: 20, poll_secs: 1 });
#{ missing: missing, generation: restarted.generation, outcome: rolled.outcome, message: rolled.message }
"#,
    );
    c.ws.set_secret("next", &canary("unused-"));
    // The rollout misses its progress deadline once the restart landed.
    let state = c.state.clone();
    let watcher = std::thread::spawn(move || {
        for _ in 0..200 {
            let generation = state.deployment(NS, "app").unwrap()["metadata"]["generation"]
                .as_i64()
                .unwrap();
            if generation == 2 {
                state
                    .advance_rollout(NS, "app", RolloutOutcome::DeadlineExceeded)
                    .unwrap();
                return true;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        false
    });
    let run = c.ws.run(&["run", "k", "-o", "json"]);
    run.assert_ok();
    assert!(watcher.join().unwrap(), "the restart never came");
    let result = &run.json()["result"];
    assert_eq!(
        result["missing"],
        "404 kube.read_secret: provider answered 404: NotFound: secrets \"nope\" not found",
        "{result}"
    );
    assert_eq!(result["generation"], 2);
    assert_eq!(result["outcome"], "failed");
    assert!(
        result["message"]
            .as_str()
            .unwrap()
            .contains("ReplicaSet has timed out progressing"),
        "{result}"
    );
    let restarted = c.state.deployment(NS, "app").unwrap();
    assert!(
        restarted["spec"]["template"]["metadata"]["annotations"]
            ["kubectl.kubernetes.io/restartedAt"]
            .is_string()
    );
}

/// A service-account token the API server does not know is a 401 the
/// operator can act on: the plugin, the operation, the API's reason, and
/// which granted secret to replace.
#[test]
fn an_unknown_service_account_token_says_which_secret_to_replace() {
    let c = cluster(PATCH);
    c.ws.set_secret("next", &canary("k8s-next-"));
    c.ws.set_secret("k8s/rotator", &canary("k8s-stale-"));
    let run = c.ws.run(&["run", "k"]);
    run.assert_code(5)
        .stderr_has("kube.read_secret")
        .stderr_has("401")
        .stderr_has("Unauthorized")
        .stderr_has("service-account token (secret `token`)");
    assert_clean("output", &format!("{}{}", run.stdout, run.stderr));
}
