//! The official Kubernetes Python client, driven against the Kubernetes
//! simulator by `tests/clients/python_kubernetes.py`: reading and rotating
//! a Secret (merge patch with stringData, JSON patch, server-side apply with
//! Ruby-style wrapped base64), a stale replace refused with 409, a Job from
//! a CronJob and its AlreadyExists, a Deployment restart. Its models must
//! read every answer, and the simulator's true state must show what it did.
//!
//! The client is installed by `cargo xtask setup` into
//! `target/python-clients`; without it this test fails rather than skips.

use std::process::Command;

use crate::support::*;
use keycycle_sim::{
    KubeCronJobSeed, KubeDeploymentSeed, KubeSecretSeed, KubeTokenSeed, start_kubernetes,
};

fn python() -> Command {
    let mut python = Command::new("python3");
    python
        .current_dir(repo_root())
        .env("PYTHONPATH", repo_root().join("target/python-clients"))
        .env("PYTHONDONTWRITEBYTECODE", "1");
    python
}

#[tokio::test]
async fn the_kubernetes_python_client_gets_the_api_servers_answers() {
    let probe = python()
        .args(["-c", "import kubernetes; print(kubernetes.__version__)"])
        .output()
        .expect("run python3");
    assert!(
        probe.status.success(),
        "the kubernetes Python client is not installed in target/python-clients: run `cargo xtask setup`\n{}",
        String::from_utf8_lossy(&probe.stderr)
    );

    let (server, state) = start_kubernetes(0).await.unwrap();
    let token = state
        .add_token(KubeTokenSeed {
            namespace: "apps".into(),
            service_account: "signon".into(),
            token: Some(keycycle_secret::SecretValue::new(canary("sa-"))),
            namespaces: Some(vec!["apps".into()]),
        })
        .unwrap();
    let old = canary("old-");
    let new = canary("new-");
    state
        .put_secret(KubeSecretSeed {
            namespace: "apps".into(),
            name: "signon-token".into(),
            data: [(
                "bearer_token".to_owned(),
                keycycle_secret::SecretValue::new(old.clone()),
            )]
            .into(),
            ..KubeSecretSeed::default()
        })
        .unwrap();
    state
        .add_cronjob(KubeCronJobSeed {
            namespace: "apps".into(),
            name: "signon-sync".into(),
            ..KubeCronJobSeed::default()
        })
        .unwrap();
    state
        .add_deployment(KubeDeploymentSeed {
            namespace: "apps".into(),
            name: "short-url-manager".into(),
            ..KubeDeploymentSeed::default()
        })
        .unwrap();

    let output = python()
        .arg("tests/clients/python_kubernetes.py")
        .env("K8S_URL", &server.base_url)
        .env("K8S_TOKEN", token.expose())
        .env("NAMESPACE", "apps")
        .env("SECRET", "signon-token")
        .env("NEW_VALUE", &new)
        .env("CRONJOB", "signon-sync")
        .env("DEPLOYMENT", "short-url-manager")
        .output()
        .expect("run python3");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the Kubernetes client met an answer the API server would not give:\n{stderr}\n{stdout}"
    );
    let report: serde_json::Value = serde_json::from_str(
        stdout
            .lines()
            .last()
            .unwrap_or_else(|| panic!("no report\n{stderr}")),
    )
    .unwrap();
    assert_eq!(report["keys"], serde_json::json!(["bearer_token"]));
    assert_eq!(report["unauthorized"], "Unauthorized");
    assert!(
        report["conflict"]
            .as_str()
            .unwrap()
            .contains("the object has been modified")
    );
    assert_eq!(
        report["job_exists"],
        "jobs.batch \"py-sync\" already exists"
    );
    assert_eq!(report["jobs_listed"], serde_json::json!(["py-sync"]));
    assert_eq!(report["generation"], 2);
    assert_eq!(report["observed_generation"], 1);
    let versions: Vec<u64> = ["rv_before", "rv_after_patch", "rv_after_apply"]
        .iter()
        .map(|k| report[k].as_str().unwrap().parse().unwrap())
        .collect();
    assert!(versions.windows(2).all(|w| w[0] < w[1]), "{versions:?}");

    let secret = state.secret("apps", "signon-token").unwrap();
    assert_eq!(secret.data["bearer_token"].expose(), new);
    assert_eq!(secret.managers["bearer_token"], "signon");
    let job = state.job("apps", "py-sync").unwrap();
    assert_eq!(job["metadata"]["ownerReferences"][0]["name"], "signon-sync");
    // Names, versions and statuses only: neither value, nor the token.
    assert_clean("the Kubernetes client's stdout", &stdout);
    assert_clean("the Kubernetes client's stderr", &stderr);
}
