//! Tests of the Kubernetes simulator over HTTP, and with the real `kubectl`:
//! each pins an API server behaviour clients rely on (Status errors,
//! stringData merged and never returned, patch formats, resourceVersion
//! conflicts, apply conflicts, Jobs from CronJobs, the rollout restart).

use std::process::Command;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::*;
use crate::{SimServer, start_kubernetes};

const TOKEN: &str = "sa-token-for-tests-0001";
const VALUE: &str = "signon-bearer-value-0001";

struct World {
    server: SimServer,
    state: KubernetesState,
    http: reqwest::Client,
}

async fn world() -> World {
    let (server, state) = start_kubernetes(0).await.unwrap();
    state
        .add_token(KubeTokenSeed {
            namespace: "apps".into(),
            service_account: "signon".into(),
            token: Some(SecretValue::new(TOKEN)),
            namespaces: Some(vec!["apps".into()]),
        })
        .unwrap();
    state
        .put_secret(KubeSecretSeed {
            namespace: "apps".into(),
            name: "signon-token".into(),
            data: [("bearer_token".to_owned(), SecretValue::new(VALUE))].into(),
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
            replicas: Some(2),
            ..KubeDeploymentSeed::default()
        })
        .unwrap();
    World {
        server,
        state,
        http: reqwest::Client::new(),
    }
}

impl World {
    async fn call(
        &self,
        method: Method,
        path: &str,
        ctype: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self
            .http
            .request(method, self.server.url(path))
            .bearer_auth(TOKEN);
        if let Some(body) = body {
            request = request.header("content-type", ctype).body(body.to_string());
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }
}

const SECRET: &str = "/api/v1/namespaces/apps/secrets/signon-token";

fn b64(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(text)
}

#[tokio::test]
async fn unknown_tokens_get_a_401_status_and_other_namespaces_a_403() {
    let w = world().await;
    let answer = w.http.get(w.server.url(SECRET)).send().await.unwrap();
    assert_eq!(
        answer.status(),
        StatusCode::UNAUTHORIZED,
        "anonymous is off by default"
    );
    let answer = w
        .http
        .get(w.server.url(SECRET))
        .bearer_auth("nope")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::UNAUTHORIZED);
    let body: Value = answer.json().await.unwrap();
    assert_eq!(body["kind"], "Status");
    assert_eq!(body["reason"], "Unauthorized");
    assert_eq!(body["code"], 401);
    let answer = w
        .http
        .get(w.server.url(SECRET))
        .header("authorization", format!("bearer {TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        answer.status(),
        StatusCode::OK,
        "the scheme is case-insensitive"
    );
    let (status, body) = w
        .call(
            Method::GET,
            "/api/v1/namespaces/kube-system/secrets/x",
            "",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["reason"], "Forbidden");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("system:serviceaccount:apps:signon")
    );
}

#[tokio::test]
async fn a_missing_secret_is_a_not_found_status() {
    let w = world().await;
    let (status, body) = w
        .call(Method::GET, "/api/v1/namespaces/apps/secrets/x", "", None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["message"], "secrets \"x\" not found");
    assert_eq!(body["details"], json!({ "name": "x", "kind": "secrets" }));
}

#[tokio::test]
async fn string_data_is_merged_into_data_and_never_returned() {
    let w = world().await;
    let (status, body) = w
        .call(
            Method::PATCH,
            SECRET,
            "application/merge-patch+json",
            Some(json!({ "stringData": { "extra": "clear-text-0002" } })),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.get("stringData").is_none());
    assert_eq!(body["data"]["extra"], b64("clear-text-0002"));
    assert_eq!(body["data"]["bearer_token"], b64(VALUE));
    let truth = w.state.secret("apps", "signon-token").unwrap();
    assert_eq!(truth.data["extra"].expose(), "clear-text-0002");
}

#[tokio::test]
async fn every_write_moves_the_resource_version_and_a_stale_one_conflicts() {
    let w = world().await;
    let (_, before) = w.call(Method::GET, SECRET, "", None).await;
    let rv: u64 = before["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let mut next = before.clone();
    next["data"]["bearer_token"] = json!(b64("new-value-0003"));
    let (status, after) = w
        .call(Method::PUT, SECRET, "application/json", Some(next.clone()))
        .await;
    assert_eq!(status, StatusCode::OK);
    let rv2: u64 = after["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(rv2 > rv);
    // The same body again carries the now stale resourceVersion.
    let (status, body) = w
        .call(Method::PUT, SECRET, "application/json", Some(next))
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(body["reason"], "Conflict");
    assert_eq!(
        body["message"],
        "Operation cannot be fulfilled on secrets \"signon-token\": the object has been modified; please apply your changes to the latest version and try again"
    );
    assert_eq!(
        w.state.secret("apps", "signon-token").unwrap().data["bearer_token"].expose(),
        "new-value-0003"
    );
}

#[tokio::test]
async fn merge_null_removes_a_key_and_unknown_patch_types_are_415() {
    let w = world().await;
    let (status, body) = w
        .call(
            Method::PATCH,
            SECRET,
            "application/strategic-merge-patch+json",
            Some(json!({ "data": { "bearer_token": null, "b": b64("x-0004") } })),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["data"], json!({ "b": b64("x-0004") }));
    let (status, body) = w
        .call(Method::PATCH, SECRET, "application/json", Some(json!({})))
        .await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(body["reason"], "UnsupportedMediaType");
    let (status, body) = w
        .call(
            Method::PATCH,
            SECRET,
            "application/json-patch+json",
            Some(json!([{ "op": "replace", "path": "/data/b", "value": b64("y-0005") }])),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        w.state.secret("apps", "signon-token").unwrap().data["b"].expose(),
        "y-0005"
    );
}

#[tokio::test]
async fn apply_needs_a_field_manager_and_force_takes_fields_over() {
    let w = world().await;
    // Ruby's Base64.encode64 wraps lines and ends with a newline.
    let wrapped = format!("{}\n", b64("applied-by-signon-0006"));
    let config = json!({ "apiVersion": "v1", "kind": "Secret",
        "metadata": { "name": "signon-token", "namespace": "apps" },
        "data": { "bearer_token": wrapped } });
    let apply = "application/apply-patch+yaml";
    let (status, body) = w
        .call(Method::PATCH, SECRET, apply, Some(config.clone()))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body["message"],
        "fieldManager is required for apply requests"
    );
    let path = format!("{SECRET}?fieldManager=signon");
    let (status, body) = w
        .call(Method::PATCH, &path, apply, Some(config.clone()))
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(
        body["message"],
        "Apply failed with 1 conflict: conflict with \"seed\" using v1: .data.bearer_token"
    );
    let (status, body) = w
        .call(
            Method::PATCH,
            &format!("{path}&force=true"),
            apply,
            Some(config),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["data"]["bearer_token"], b64("applied-by-signon-0006"));
    let truth = w.state.secret("apps", "signon-token").unwrap();
    assert_eq!(truth.managers["bearer_token"], "signon");
}

#[tokio::test]
async fn jobs_are_created_once_and_end_on_the_control_apis_word() {
    let w = world().await;
    let path = "/apis/batch/v1/namespaces/apps/jobs";
    let job = json!({ "apiVersion": "batch/v1", "kind": "Job", "metadata": { "name": "sync-1" },
        "spec": { "template": { "spec": { "restartPolicy": "Never", "containers": [{ "name": "c", "image": "i" }] } } } });
    let (status, created) = w
        .call(Method::POST, path, "application/json", Some(job.clone()))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(created["status"]["active"], 1);
    let (status, body) = w
        .call(Method::POST, path, "application/json", Some(job))
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(body["reason"], "AlreadyExists");
    assert_eq!(body["message"], "jobs.batch \"sync-1\" already exists");
    w.state
        .finish_job(
            "apps",
            "sync-1",
            JobOutcome::Failed {
                reason: None,
                message: None,
            },
            vec![],
        )
        .unwrap();
    let (_, got) = w
        .call(Method::GET, &format!("{path}/sync-1"), "", None)
        .await;
    let conditions = got["status"]["conditions"].as_array().unwrap();
    assert_eq!(conditions[1]["type"], "Failed");
    assert_eq!(conditions[1]["reason"], "BackoffLimitExceeded");
    assert!(got["status"].get("completionTime").is_none());
    assert!(
        w.state
            .finish_job("apps", "sync-1", JobOutcome::Complete, vec![])
            .is_err()
    );
}

#[tokio::test]
async fn a_spec_change_bumps_the_generation_and_the_rollout_catches_up() {
    let w = world().await;
    let path = "/apis/apps/v1/namespaces/apps/deployments/short-url-manager";
    let restart = json!({ "spec": { "template": { "metadata": { "annotations": {
        "kubectl.kubernetes.io/restartedAt": "2026-11-30T00:00:00Z" } } } } });
    let (status, body) = w
        .call(
            Method::PATCH,
            path,
            "application/strategic-merge-patch+json",
            Some(restart),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["metadata"]["generation"], 2);
    assert_eq!(body["status"]["observedGeneration"], 1);
    // Containers merge by name rather than being replaced.
    assert_eq!(
        body["spec"]["template"]["spec"]["containers"][0]["name"],
        "short-url-manager"
    );
    w.state
        .advance_rollout("apps", "short-url-manager", RolloutOutcome::Complete)
        .unwrap();
    let (_, body) = w.call(Method::GET, path, "", None).await;
    assert_eq!(body["status"]["observedGeneration"], 2);
    assert_eq!(body["status"]["updatedReplicas"], 2);
    assert_eq!(body["status"]["availableReplicas"], 2);
}

/// Runs the real `kubectl` against the simulator with a kubeconfig of its
/// own and a fresh discovery cache; returns stdout, or panics with stderr.
/// The kubeconfig names a token, but kubectl sends it only over TLS, so
/// the simulator must allow anonymous requests for it.
fn kubectl(server: &SimServer, dir: &std::path::Path, args: &[&str]) -> String {
    kubectl_with_ca(server, dir, None, args)
}

/// [`kubectl`] with the kubeconfig naming `ca` (a PEM file) as the
/// cluster's certificate authority, for a simulator served over https.
fn kubectl_with_ca(
    server: &SimServer,
    dir: &std::path::Path,
    ca: Option<&std::path::Path>,
    args: &[&str],
) -> String {
    let config = dir.join("kubeconfig");
    let authority = ca.map_or_else(String::new, |ca| {
        format!("    certificate-authority: {}\n", ca.display())
    });
    std::fs::write(
        &config,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: sim\n  cluster:\n    server: {}\n{authority}users:\n- name: sa\n  user:\n    token: {TOKEN}\ncontexts:\n- name: sim\n  context:\n    cluster: sim\n    user: sa\n    namespace: apps\ncurrent-context: sim\n",
            server.base_url
        ),
    )
    .unwrap();
    let output = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&config)
        .arg("--cache-dir")
        .arg(dir.join("cache"))
        .arg("--request-timeout=20s")
        .args(args)
        .env("HOME", dir)
        .output()
        .unwrap_or_else(|e| {
            panic!("kubectl is needed on the PATH for this test (apt-get install kubernetes-client): {e}")
        });
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "kubectl {args:?} failed: {stderr}");
    String::from_utf8(output.stdout).unwrap()
}

/// Starts a `kubectl` that waits for something (`rollout status`, `wait`)
/// on a thread of its own.
fn kubectl_waiting(
    dir: &std::path::Path,
    args: &'static [&'static str],
) -> std::thread::JoinHandle<std::process::Output> {
    let config = dir.join("kubeconfig");
    let cache = dir.join("cache");
    std::thread::spawn(move || {
        Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(config)
            .arg("--cache-dir")
            .arg(cache)
            .args(args)
            .output()
            .expect("run kubectl")
    })
}

/// Returns once a client listed and then watched `collection` (two
/// requests to it since the log was cleared), and checks that the waiting
/// kubectl is still waiting then.
async fn until_watching(
    w: &World,
    collection: &str,
    waiting: &std::thread::JoinHandle<std::process::Output>,
) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while w
        .state
        .requests()
        .iter()
        .filter(|r| r.path == collection)
        .count()
        < 2
    {
        assert!(
            std::time::Instant::now() < deadline,
            "kubectl never watched {collection}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(
        !waiting.is_finished(),
        "kubectl stopped waiting before anything changed"
    );
}

/// The output of a waiting kubectl, which must have succeeded.
async fn waited(waiting: std::thread::JoinHandle<std::process::Output>) -> String {
    let output = tokio::task::spawn_blocking(move || waiting.join().unwrap())
        .await
        .unwrap();
    let out = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{out}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn the_real_kubectl_gets_secrets_creates_jobs_and_restarts_deployments() {
    let w = world().await;
    w.state.allow_anonymous(Some(vec!["apps".into()]));
    let dir = std::env::temp_dir().join(format!("kc-sim-kubectl-{}", w.server.addr.port()));
    std::fs::create_dir_all(&dir).unwrap();
    let server = &w.server;
    let secret: Value = serde_json::from_str(&kubectl(
        server,
        &dir,
        &["get", "secret", "signon-token", "-o", "json"],
    ))
    .unwrap();
    assert_eq!(secret["data"]["bearer_token"], b64(VALUE));
    // Without -o, kubectl asks for a Table and prints its own from the object.
    let table = kubectl(server, &dir, &["get", "secret", "signon-token"]);
    assert!(table.starts_with("NAME"), "{table}");
    assert!(table.contains("signon-token"), "{table}");
    assert!(!table.contains(&b64(VALUE)), "{table}");

    let out = kubectl(
        server,
        &dir,
        &["create", "job", "manual-sync", "--from=cronjob/signon-sync"],
    );
    assert!(out.contains("job.batch/manual-sync created"), "{out}");
    let job = w.state.job("apps", "manual-sync").unwrap();
    assert_eq!(
        job["metadata"]["annotations"]["cronjob.kubernetes.io/instantiate"],
        "manual"
    );
    assert_eq!(job["metadata"]["ownerReferences"][0]["name"], "signon-sync");

    // `kubectl wait` follows the Job until the control API completes it,
    // having the sync's Secret written as its pods would have.
    w.state.clear_requests();
    let waiting = kubectl_waiting(
        &dir,
        &[
            "wait",
            "--for=condition=complete",
            "job/manual-sync",
            "--timeout=30s",
        ],
    );
    until_watching(&w, "/apis/batch/v1/namespaces/apps/jobs", &waiting).await;
    let synced = KubeSecretSeed {
        namespace: "apps".into(),
        name: "signon-token".into(),
        data: [(
            "bearer_token".to_owned(),
            SecretValue::new("synced-value-0007"),
        )]
        .into(),
        ..KubeSecretSeed::default()
    };
    w.state
        .finish_job("apps", "manual-sync", JobOutcome::Complete, vec![synced])
        .unwrap();
    let out = waited(waiting).await;
    assert!(out.contains("job.batch/manual-sync condition met"), "{out}");
    let secret: Value = serde_json::from_str(&kubectl(
        server,
        &dir,
        &["get", "secret", "signon-token", "-o", "json"],
    ))
    .unwrap();
    assert_eq!(secret["data"]["bearer_token"], b64("synced-value-0007"));
    let job: Value = serde_json::from_str(&kubectl(
        server,
        &dir,
        &["get", "job", "manual-sync", "-o", "json"],
    ))
    .unwrap();
    assert_eq!(job["status"]["succeeded"], 1);
    assert_eq!(job["status"]["conditions"][1]["type"], "Complete");

    let out = kubectl(
        server,
        &dir,
        &["rollout", "restart", "deployment/short-url-manager"],
    );
    assert!(
        out.contains("deployment.apps/short-url-manager restarted"),
        "{out}"
    );
    let deployment = w.state.deployment("apps", "short-url-manager").unwrap();
    assert!(deployment["spec"]["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"].is_string());
    assert_eq!(deployment["metadata"]["generation"], 2);

    // `rollout status` lists, then watches until the rollout ends; the
    // control API ends it while kubectl waits.
    w.state.clear_requests();
    let waiting = kubectl_waiting(
        &dir,
        &[
            "rollout",
            "status",
            "deployment/short-url-manager",
            "--timeout=30s",
        ],
    );
    until_watching(&w, "/apis/apps/v1/namespaces/apps/deployments", &waiting).await;
    w.state
        .advance_rollout("apps", "short-url-manager", RolloutOutcome::Complete)
        .unwrap();
    let out = waited(waiting).await;
    assert!(out.contains("successfully rolled out"), "{out}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn the_control_api_plants_and_shows_the_true_state() {
    let (server, _state) = start_kubernetes(0).await.unwrap();
    let http = reqwest::Client::new();
    let post = |path: &str, body: Value| http.post(server.url(path)).body(body.to_string()).send();
    let token: Value = post(
        "/_sim/tokens",
        json!({ "namespace": "ops", "service_account": "rotator" }),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let token = token["token"].as_str().unwrap().to_owned();
    let answer = post(
        "/_sim/secrets",
        json!({ "namespace": "ops", "name": "api", "data": { "key": "planted-0008" } }),
    )
    .await
    .unwrap();
    assert_eq!(answer.status(), StatusCode::CREATED);
    let got: Value = http
        .get(server.url("/api/v1/namespaces/ops/secrets/api"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(got["data"]["key"], b64("planted-0008"));
    assert_eq!(got["type"], "Opaque");
    let truth: Value = http
        .get(server.url("/_sim/secrets/ops/api"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(truth["data"]["key"], "planted-0008");
    // Finishing a job that does not exist names it.
    let answer = post(
        "/_sim/jobs/ops/nope/finish",
        json!({ "outcome": "complete" }),
    )
    .await
    .unwrap();
    assert_eq!(answer.status(), StatusCode::NOT_FOUND);
    let state: Value = http
        .get(server.url("/_sim/state"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(state["namespaces"], json!(["ops"]));
    assert_eq!(state["secrets"][0]["name"], "api");
}

#[tokio::test]
async fn injected_failures_answer_with_status_objects() {
    let w = world().await;
    w.state.fail(crate::FailRule {
        method: Some("PATCH".into()),
        path_prefix: "/api/v1/namespaces/apps/secrets".into(),
        status: 500,
        times: 1,
        retry_after: None,
        message: None,
        after_processing: false,
    });
    let (status, body) = w
        .call(
            Method::PATCH,
            SECRET,
            "application/merge-patch+json",
            Some(json!({ "stringData": { "bearer_token": "lost-0009" } })),
        )
        .await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(body["kind"], "Status");
    assert_eq!(body["reason"], "InternalError");
    assert_eq!(body["code"], 500);
    assert_eq!(
        w.state.secret("apps", "signon-token").unwrap().data["bearer_token"].expose(),
        VALUE,
        "nothing was written"
    );
}

#[tokio::test]
async fn a_json_patch_that_does_not_apply_is_invalid_and_changes_nothing() {
    let w = world().await;
    let (status, body) = w
        .call(
            Method::PATCH,
            SECRET,
            "application/json-patch+json",
            Some(json!([{ "op": "remove", "path": "/data/missing" }])),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["reason"], "Invalid");
    let (status, _) = w
        .call(
            Method::PATCH,
            SECRET,
            "application/json-patch+json",
            Some(json!({ "data": {} })),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let truth = w.state.secret("apps", "signon-token").unwrap();
    assert_eq!(truth.data.len(), 1);
}

/// A reqwest client that trusts `ca_pem` and nothing else.
fn trusting(ca_pem: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap())
        .build()
        .unwrap()
}

#[tokio::test]
async fn over_tls_only_clients_trusting_the_generated_ca_get_through() {
    let (server, state, ca_pem) = crate::start_kubernetes_tls(0).await.unwrap();
    assert!(server.base_url.starts_with("https://127.0.0.1:"));
    assert!(
        ca_pem.starts_with("-----BEGIN CERTIFICATE-----"),
        "{ca_pem}"
    );
    state
        .add_token(KubeTokenSeed {
            namespace: "apps".into(),
            service_account: "signon".into(),
            token: Some(SecretValue::new(TOKEN)),
            namespaces: None,
        })
        .unwrap();
    let client = trusting(&ca_pem);
    // The leaf names 127.0.0.1 (an IP SAN) and localhost.
    let port = server.addr.port();
    for url in [
        server.url("/api/v1/namespaces/apps/secrets"),
        format!("https://localhost:{port}/api/v1/namespaces/apps/secrets"),
    ] {
        let answer = client.get(&url).bearer_auth(TOKEN).send().await.unwrap();
        assert_eq!(answer.status(), StatusCode::OK, "{url}");
    }
    // The control API is served over the same listener.
    let answer = client.get(server.url("/_sim/state")).send().await.unwrap();
    assert_eq!(answer.status(), StatusCode::OK);

    // The public roots do not know the simulator's CA, nor does a client
    // trusting another simulator's CA.
    let public = reqwest::Client::new();
    let refused = public.get(server.url("/version")).send().await.unwrap_err();
    assert!(refused.is_connect(), "{refused:?}");
    let (other, _, other_ca) = crate::start_kubernetes_tls(0).await.unwrap();
    assert_ne!(other_ca, ca_pem, "each server makes a CA of its own");
    let refused = trusting(&other_ca)
        .get(server.url("/version"))
        .send()
        .await
        .unwrap_err();
    assert!(refused.is_connect(), "{refused:?}");
    // Plain http on the TLS port is not answered as http.
    assert!(
        reqwest::get(format!("http://127.0.0.1:{port}/version"))
            .await
            .is_err()
    );
    other.shutdown().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_real_kubectl_sends_its_token_over_tls() {
    let (server, state, ca_pem) = crate::start_kubernetes_tls(0).await.unwrap();
    // No anonymous access: kubectl must present the kubeconfig's token.
    state
        .add_token(KubeTokenSeed {
            namespace: "apps".into(),
            service_account: "signon".into(),
            token: Some(SecretValue::new(TOKEN)),
            namespaces: Some(vec!["apps".into()]),
        })
        .unwrap();
    state
        .put_secret(KubeSecretSeed {
            namespace: "apps".into(),
            name: "signon-token".into(),
            data: [("bearer_token".to_owned(), SecretValue::new(VALUE))].into(),
            ..KubeSecretSeed::default()
        })
        .unwrap();
    let dir = std::env::temp_dir().join(format!("kc-sim-kubectl-tls-{}", server.addr.port()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, &ca_pem).unwrap();
    let secret: Value = serde_json::from_str(&kubectl_with_ca(
        &server,
        &dir,
        Some(&ca),
        &["get", "secret", "signon-token", "-o", "json"],
    ))
    .unwrap();
    assert_eq!(secret["data"]["bearer_token"], b64(VALUE));
    let _ = std::fs::remove_dir_all(&dir);
}
