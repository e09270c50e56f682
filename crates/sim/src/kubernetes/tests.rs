//! Tests of the Kubernetes simulator over HTTP and https, and with the real
//! `kubectl`: each pins an API server behaviour clients rely on (Status
//! errors, stringData merged and never returned, patch formats,
//! resourceVersion conflicts, apply conflicts, Jobs from CronJobs, the
//! rollout restart, pods and the Secret values they hold) or a behaviour of
//! the simulator itself (CronJob behaviours, automatic rollout, TLS).

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

/// The minor version of the `kubectl` on the PATH, asked once.
fn kubectl_minor() -> u32 {
    static MINOR: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *MINOR.get_or_init(|| {
        let output = Command::new("kubectl")
            .args(["version", "--client", "-o", "json"])
            .output()
            .unwrap_or_else(|e| {
                panic!("kubectl is needed on the PATH for this test (apt-get install kubernetes-client): {e}")
            });
        let version: Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
            panic!(
                "kubectl version --client -o json: {e}: {}",
                String::from_utf8_lossy(&output.stderr)
            )
        });
        // "20", or "32+" from some builds.
        let minor = version["clientVersion"]["minor"].as_str().unwrap_or("");
        let digits: String = minor.chars().take_while(char::is_ascii_digit).collect();
        digits
            .parse()
            .unwrap_or_else(|_| panic!("no client minor version in {version}"))
    })
}

/// The `--from` of `kubectl create job` naming the CronJob `name`, for the
/// kubectl on the PATH. kubectl before 1.21 converts the CronJob it reads
/// to batch/v1beta1, and its scheme has no batch/v1 CronJob to convert
/// from, so against a 1.21+ server `--from=cronjob/X` (which fetches the
/// preferred batch/v1) fails with `no kind "CronJob" is registered for
/// version "batch/v1"`. The fully qualified resource makes it fetch
/// batch/v1beta1, which API servers served until 1.25; that is the
/// workaround for such a client (Debian's kubernetes-client is 1.20).
fn from_cronjob(name: &str) -> String {
    if kubectl_minor() < 21 {
        format!("--from=cronjob.v1beta1.batch/{name}")
    } else {
        format!("--from=cronjob/{name}")
    }
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

    let from = from_cronjob("signon-sync");
    let out = kubectl(server, &dir, &["create", "job", "manual-sync", &from]);
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

/// A pod template whose container reads `signon-token`'s `bearer_token`
/// into `PUBLISHING_API_BEARER_TOKEN`, as the reference's consumers do.
fn reading_template(app: &str) -> Value {
    json!({
        "metadata": { "labels": { "app": app } },
        "spec": { "containers": [{ "name": "app", "image": "registry.example/app:1",
            "env": [
                { "name": "RAILS_ENV", "value": "production" },
                { "name": "PUBLISHING_API_BEARER_TOKEN", "valueFrom": { "secretKeyRef": {
                    "name": "signon-token", "key": "bearer_token" } } },
            ] }] },
    })
}

fn sha256_hex(text: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(text.as_bytes()))
}

/// Waits (up to 10 s) until `check` holds.
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !check() {
        assert!(std::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// A Job as `kubectl create job NAME --from=cronjob/CJ` sends it.
fn job_from(w: &World, cronjob: &str, name: &str) -> Value {
    let cj = w
        .state
        .lock()
        .rendered(Kind::CronJob, "apps", cronjob)
        .unwrap();
    json!({ "apiVersion": "batch/v1", "kind": "Job",
        "metadata": { "name": name, "namespace": "apps",
            "annotations": { "cronjob.kubernetes.io/instantiate": "manual" },
            "ownerReferences": [{ "apiVersion": "batch/v1", "kind": "CronJob", "name": cronjob,
                "uid": cj["metadata"]["uid"], "controller": true }] },
        "spec": cj["spec"]["jobTemplate"]["spec"] })
}

const JOBS: &str = "/apis/batch/v1/namespaces/apps/jobs";

fn condition_types(job: &Value) -> Vec<String> {
    job["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| c["type"].as_str().unwrap_or("").to_owned())
        .collect()
}

#[tokio::test]
async fn pods_are_listed_by_label_selector_and_read_by_name() {
    let w = world().await;
    let (_, discovery) = w.call(Method::GET, "/api/v1", "", None).await;
    assert!(
        discovery["resources"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["name"] == "pods" && r["verbs"] == json!(["get", "list"]))
    );
    let pods = "/api/v1/namespaces/apps/pods";
    let (status, list) = w
        .call(
            Method::GET,
            &format!("{pods}?labelSelector=app%3Dshort-url-manager"),
            "",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["kind"], "PodList");
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "one pod per replica");
    for pod in items {
        let name = pod["metadata"]["name"].as_str().unwrap();
        let hash = pod["metadata"]["labels"]["pod-template-hash"]
            .as_str()
            .unwrap();
        assert_eq!(hash.len(), 10);
        assert!(
            name.starts_with(&format!("short-url-manager-{hash}-")),
            "{name}"
        );
        assert_eq!(name.len(), "short-url-manager-".len() + 10 + 1 + 5);
        assert_eq!(pod["status"]["phase"], "Running");
        assert_eq!(pod["metadata"]["ownerReferences"][0]["kind"], "ReplicaSet");
    }

    // A Job's one pod, labelled as the Job controller labels it.
    let job = json!({ "apiVersion": "batch/v1", "kind": "Job", "metadata": { "name": "sync-1" },
        "spec": { "template": { "spec": { "restartPolicy": "Never", "containers": [{ "name": "c", "image": "i" }] } } } });
    let (_, created) = w
        .call(Method::POST, JOBS, "application/json", Some(job))
        .await;
    let uid = created["metadata"]["uid"].as_str().unwrap();
    let (_, list) = w
        .call(
            Method::GET,
            &format!("{pods}?labelSelector=job-name%3Dsync-1,controller-uid%3D{uid}"),
            "",
            None,
        )
        .await;
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{list}");
    let pod = &items[0];
    let name = pod["metadata"]["name"].as_str().unwrap().to_owned();
    assert!(
        name.starts_with("sync-1-") && name.len() == "sync-1-".len() + 5,
        "{name}"
    );
    assert_eq!(
        pod["metadata"]["labels"]["batch.kubernetes.io/job-name"],
        "sync-1"
    );
    assert_eq!(pod["status"]["phase"], "Running");
    let (_, none) = w
        .call(
            Method::GET,
            &format!("{pods}?labelSelector=job-name%3Dother"),
            "",
            None,
        )
        .await;
    assert_eq!(none["items"], json!([]));
    let (status, _) = w
        .call(
            Method::GET,
            &format!("{pods}?labelSelector=app%20in%20(a,b)"),
            "",
            None,
        )
        .await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "set-based selectors are not served"
    );

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
    let (status, pod) = w
        .call(Method::GET, &format!("{pods}/{name}"), "", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(pod["kind"], "Pod");
    assert_eq!(pod["status"]["phase"], "Failed");
    let terminated = &pod["status"]["containerStatuses"][0]["state"]["terminated"];
    assert_eq!(terminated["reason"], "Error");
    assert_eq!(terminated["exitCode"], 1);
    let (status, body) = w.call(Method::GET, &format!("{pods}/nope"), "", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["message"], "pods \"nope\" not found");
    let (status, _) = w
        .call(Method::GET, "/api/v1/namespaces/kube-system/pods", "", None)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn pods_keep_the_secret_values_they_started_with_until_a_rollout() {
    let w = world().await;
    w.state
        .add_deployment(KubeDeploymentSeed {
            namespace: "apps".into(),
            name: "publisher".into(),
            replicas: Some(3),
            template: Some(reading_template("publisher")),
            ..KubeDeploymentSeed::default()
        })
        .unwrap();
    let env = "PUBLISHING_API_BEARER_TOKEN";
    assert!(
        w.state
            .deployment_pods_hold("apps", "publisher", env, VALUE)
            .unwrap()
    );
    assert!(
        !w.state
            .deployment_pods_hold("apps", "publisher", "RAILS_ENV", "production")
            .unwrap(),
        "only env vars from Secrets are held"
    );
    let before = w.state.deployment_pods("apps", "publisher").unwrap();
    assert_eq!(before.len(), 3);
    assert_eq!(before[0].generation, Some(1));
    assert_eq!(before[0].env.len(), 1);
    assert_eq!(before[0].env[0].env, env);
    assert_eq!(before[0].env[0].secret, "signon-token");
    assert_eq!(before[0].env[0].key, "bearer_token");
    assert_eq!(
        before[0].env[0].sha256.as_deref(),
        Some(sha256_hex(VALUE).as_str())
    );

    // The Secret changes (as the Signon sync applies it); running pods keep
    // what they read at start.
    let config = json!({ "apiVersion": "v1", "kind": "Secret",
        "metadata": { "name": "signon-token", "namespace": "apps" },
        "data": { "bearer_token": b64("rotated-0010") } });
    let (status, _) = w
        .call(
            Method::PATCH,
            &format!("{SECRET}?fieldManager=signon&force=true"),
            "application/apply-patch+yaml",
            Some(config),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        w.state
            .deployment_pods_hold("apps", "publisher", env, VALUE)
            .unwrap()
    );
    assert!(
        !w.state
            .deployment_pods_hold("apps", "publisher", env, "rotated-0010")
            .unwrap()
    );
    // A rollout without a template change replaces nothing.
    w.state
        .advance_rollout("apps", "publisher", RolloutOutcome::Complete)
        .unwrap();
    assert_eq!(
        w.state.deployment_pods("apps", "publisher").unwrap(),
        before
    );

    // `kubectl rollout restart`'s patch, then the control API's rollout.
    let restart = json!({ "spec": { "template": { "metadata": { "annotations": {
        "kubectl.kubernetes.io/restartedAt": "2026-11-30T00:00:00Z" } } } } });
    w.call(
        Method::PATCH,
        "/apis/apps/v1/namespaces/apps/deployments/publisher",
        "application/strategic-merge-patch+json",
        Some(restart),
    )
    .await;
    assert!(
        w.state
            .deployment_pods_hold("apps", "publisher", env, VALUE)
            .unwrap(),
        "no rollout without the control API's word"
    );
    w.state
        .advance_rollout("apps", "publisher", RolloutOutcome::Complete)
        .unwrap();
    assert!(
        w.state
            .deployment_pods_hold("apps", "publisher", env, "rotated-0010")
            .unwrap()
    );
    let after = w.state.deployment_pods("apps", "publisher").unwrap();
    assert_eq!(after.len(), 3);
    assert_eq!(after[0].generation, Some(2));
    assert_ne!(after[0].template_hash, before[0].template_hash);
    assert!(
        after
            .iter()
            .all(|p| before.iter().all(|b| b.name != p.name))
    );

    // The control API shows digests, never the value.
    let answer = w
        .http
        .get(w.server.url("/_sim/deployments/apps/publisher/pods"))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    let text = answer.text().await.unwrap();
    assert!(!text.contains("rotated-0010"), "{text}");
    let shown: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(shown.as_array().unwrap().len(), 3);
    assert_eq!(
        shown[0]["env"][0],
        json!({ "container": "app", "env": env, "secret": "signon-token", "key": "bearer_token",
            "sha256": sha256_hex("rotated-0010") })
    );
    assert_eq!(shown[0]["generation"], 2);
    assert!(shown[0]["template_hash"].is_string());
    let missing = w
        .http
        .get(w.server.url("/_sim/deployments/apps/nope/pods"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_pod_whose_secret_is_missing_waits_with_a_config_error() {
    let w = world().await;
    let mut template = reading_template("orphan");
    template["spec"]["containers"][0]["env"][1]["valueFrom"]["secretKeyRef"]["name"] =
        json!("absent");
    w.state
        .add_deployment(KubeDeploymentSeed {
            namespace: "apps".into(),
            name: "orphan".into(),
            template: Some(template),
            ..KubeDeploymentSeed::default()
        })
        .unwrap();
    let pods = w.state.deployment_pods("apps", "orphan").unwrap();
    assert_eq!(pods[0].phase, "Pending");
    assert_eq!(pods[0].env[0].sha256, None);
    let pod = w.state.pod("apps", &pods[0].name).unwrap();
    let waiting = &pod["status"]["containerStatuses"][0]["state"]["waiting"];
    assert_eq!(waiting["reason"], "CreateContainerConfigError");
    assert_eq!(waiting["message"], "secret \"absent\" not found");
    assert!(
        !w.state
            .deployment_pods_hold("apps", "orphan", "PUBLISHING_API_BEARER_TOKEN", VALUE)
            .unwrap()
    );
}

#[tokio::test]
async fn with_automatic_rollout_a_restart_finishes_by_itself() {
    let w = world().await;
    w.state
        .add_deployment(KubeDeploymentSeed {
            namespace: "apps".into(),
            name: "publisher".into(),
            replicas: Some(2),
            template: Some(reading_template("publisher")),
            auto_rollout_ms: Some(100),
            ..KubeDeploymentSeed::default()
        })
        .unwrap();
    w.state
        .put_secret(KubeSecretSeed {
            namespace: "apps".into(),
            name: "signon-token".into(),
            data: [("bearer_token".to_owned(), SecretValue::new("rotated-0011"))].into(),
            ..KubeSecretSeed::default()
        })
        .unwrap();
    let path = "/apis/apps/v1/namespaces/apps/deployments/publisher";
    let restart = json!({ "spec": { "template": { "metadata": { "annotations": {
        "kubectl.kubernetes.io/restartedAt": "2026-11-30T00:00:00Z" } } } } });
    let (_, patched) = w
        .call(
            Method::PATCH,
            path,
            "application/strategic-merge-patch+json",
            Some(restart),
        )
        .await;
    assert_eq!(patched["metadata"]["generation"], 2);
    assert_eq!(patched["status"]["observedGeneration"], 1, "not at once");
    let env = "PUBLISHING_API_BEARER_TOKEN";
    assert!(
        w.state
            .deployment_pods_hold("apps", "publisher", env, VALUE)
            .unwrap()
    );
    eventually("the rollout finished", || {
        w.state.deployment("apps", "publisher").unwrap()["status"]["observedGeneration"] == 2
    })
    .await;
    let deployment = w.state.deployment("apps", "publisher").unwrap();
    assert_eq!(deployment["status"]["updatedReplicas"], 2);
    assert_eq!(deployment["status"]["readyReplicas"], 2);
    assert_eq!(deployment["status"]["availableReplicas"], 2);
    assert_eq!(
        deployment["status"]["conditions"][1]["reason"],
        "NewReplicaSetAvailable"
    );
    assert!(
        w.state
            .deployment_pods_hold("apps", "publisher", env, "rotated-0011")
            .unwrap()
    );

    // The control route turns it on for another Deployment; a PUT of a
    // changed template counts as well.
    let answer = w
        .http
        .post(
            w.server
                .url("/_sim/deployments/apps/short-url-manager/auto_rollout"),
        )
        .body(json!({ "delay_ms": 10 }).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::NO_CONTENT);
    let path = "/apis/apps/v1/namespaces/apps/deployments/short-url-manager";
    let (_, mut current) = w.call(Method::GET, path, "", None).await;
    current["spec"]["template"]["metadata"]["annotations"] = json!({ "x": "1" });
    let (status, _) = w
        .call(Method::PUT, path, "application/json", Some(current))
        .await;
    assert_eq!(status, StatusCode::OK);
    eventually("the second rollout finished", || {
        w.state.deployment("apps", "short-url-manager").unwrap()["status"]["observedGeneration"]
            == 2
    })
    .await;
    let answer = w
        .http
        .post(w.server.url("/_sim/deployments/apps/nope/auto_rollout"))
        .body(json!({ "delay_ms": 10 }).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_paused_deployment_is_not_rolled_out_by_itself() {
    let w = world().await;
    w.state
        .add_deployment(KubeDeploymentSeed {
            namespace: "apps".into(),
            name: "held".into(),
            paused: true,
            auto_rollout_ms: Some(10),
            ..KubeDeploymentSeed::default()
        })
        .unwrap();
    let restart = json!({ "spec": { "template": { "metadata": { "annotations": {
        "kubectl.kubernetes.io/restartedAt": "2026-11-30T00:00:00Z" } } } } });
    w.call(
        Method::PATCH,
        "/apis/apps/v1/namespaces/apps/deployments/held",
        "application/strategic-merge-patch+json",
        Some(restart),
    )
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(
        w.state.deployment("apps", "held").unwrap()["status"]["observedGeneration"],
        1
    );
}

#[tokio::test]
async fn a_job_from_a_signon_sync_cronjob_applies_what_signon_would_write() {
    let w = world().await;
    let (signon, signon_state) = crate::start_signon(0).await.unwrap();
    let user = signon_state
        .add_api_user(crate::SignonUserSeed::new(
            "Short URL Manager",
            "short-url-manager@example.gov.uk",
        ))
        .unwrap();
    let app = signon_state
        .add_application(crate::SignonAppSeed {
            name: "Publishing API".into(),
            ..crate::SignonAppSeed::default()
        })
        .unwrap();
    signon_state
        .create_token(crate::SignonTokenSeed::new(user, app).value("signon-made-0012"))
        .unwrap();
    // The Secret exists, owned by someone else: the sync forces it over.
    w.state
        .put_secret(KubeSecretSeed {
            namespace: "apps".into(),
            name: "signon-token-short-url-manager-publishing-api".into(),
            data: [("bearer_token".to_owned(), SecretValue::new("old-0013"))].into(),
            ..KubeSecretSeed::default()
        })
        .unwrap();
    let before = w
        .state
        .secret("apps", "signon-token-short-url-manager-publishing-api")
        .unwrap()
        .resource_version;
    let answer = w
        .http
        .post(w.server.url("/_sim/cronjobs/apps/signon-sync/behaviour"))
        .body(
            json!({ "run": "signon_sync", "source": signon.base_url, "delay_ms": 100 }).to_string(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::NO_CONTENT);

    let (status, created) = w
        .call(
            Method::POST,
            JOBS,
            "application/json",
            Some(job_from(&w, "signon-sync", "signon-token-sync-1")),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["status"]["active"], 1, "it runs first");
    eventually("the job ended", || {
        finished(&w.state.job("apps", "signon-token-sync-1").unwrap())
    })
    .await;
    let job = w.state.job("apps", "signon-token-sync-1").unwrap();
    assert_eq!(
        condition_types(&job),
        ["SuccessCriteriaMet", "Complete"],
        "{job}"
    );
    assert_eq!(job["status"]["succeeded"], 1);
    assert_eq!(job["status"]["active"], 0);
    assert!(job["status"]["completionTime"].is_string());

    let synced = w
        .state
        .secret("apps", "signon-token-short-url-manager-publishing-api")
        .unwrap();
    assert_eq!(synced.data["bearer_token"].expose(), "signon-made-0012");
    assert_eq!(synced.type_, "Opaque");
    assert_eq!(synced.managers["bearer_token"], "signon");
    assert!(synced.resource_version.parse::<u64>().unwrap() > before.parse::<u64>().unwrap());
    let pods = w.state.pods("apps");
    let pod = pods
        .iter()
        .find(|p| p["metadata"]["labels"]["job-name"] == "signon-token-sync-1")
        .unwrap();
    assert_eq!(pod["status"]["phase"], "Succeeded");
    assert_eq!(
        pod["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"],
        0
    );
    // The control API can no longer end it.
    assert!(
        w.state
            .finish_job("apps", "signon-token-sync-1", JobOutcome::Complete, vec![])
            .is_err()
    );
    signon.shutdown().await;
}

#[tokio::test]
async fn a_signon_sync_that_cannot_reach_signon_fails_the_job_with_the_reason() {
    let w = world().await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    w.state
        .set_cronjob_behaviour(
            "apps",
            "signon-sync",
            KubeJobBehaviour::SignonSync {
                source: format!("http://127.0.0.1:{closed}"),
                delay_ms: 0,
            },
        )
        .unwrap();
    w.call(
        Method::POST,
        JOBS,
        "application/json",
        Some(job_from(&w, "signon-sync", "sync-unreachable")),
    )
    .await;
    eventually("the job ended", || {
        finished(&w.state.job("apps", "sync-unreachable").unwrap())
    })
    .await;
    let job = w.state.job("apps", "sync-unreachable").unwrap();
    assert_eq!(condition_types(&job), ["FailureTarget", "Failed"]);
    assert_eq!(
        job["status"]["conditions"][1]["reason"],
        "BackoffLimitExceeded"
    );
    assert_eq!(job["status"]["failed"], 1);
    assert!(job["status"].get("completionTime").is_none());
    let pod = w
        .state
        .pods("apps")
        .into_iter()
        .find(|p| p["metadata"]["labels"]["job-name"] == "sync-unreachable")
        .unwrap();
    assert_eq!(pod["status"]["phase"], "Failed");
    let terminated = &pod["status"]["containerStatuses"][0]["state"]["terminated"];
    assert_eq!(terminated["reason"], "Error");
    let message = terminated["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("http://127.0.0.1:{closed}/_sim/sync")),
        "{message}"
    );
}

#[tokio::test]
async fn behaviours_end_jobs_by_themselves_and_only_jobs_of_their_cronjob() {
    let w = world().await;
    let behaviour = |body: Value| {
        w.http
            .post(w.server.url("/_sim/cronjobs/apps/signon-sync/behaviour"))
            .body(body.to_string())
            .send()
    };
    let answer = behaviour(
        json!({ "run": "fail", "delay_ms": 20, "reason": "DeadlineExceeded",
        "message": "Job was active longer than specified deadline", "pod_reason": "OOMKilled",
        "exit_code": 137, "pod_message": "out of memory" }),
    )
    .await
    .unwrap();
    assert_eq!(answer.status(), StatusCode::NO_CONTENT);
    w.call(
        Method::POST,
        JOBS,
        "application/json",
        Some(job_from(&w, "signon-sync", "doomed")),
    )
    .await;
    // A Job without an owner reference (older kubectl) waits for the
    // control API, as before.
    let mut plain = job_from(&w, "signon-sync", "plain");
    plain["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("ownerReferences");
    w.call(Method::POST, JOBS, "application/json", Some(plain))
        .await;
    eventually("the job failed", || {
        finished(&w.state.job("apps", "doomed").unwrap())
    })
    .await;
    let job = w.state.job("apps", "doomed").unwrap();
    assert_eq!(condition_types(&job), ["FailureTarget", "Failed"]);
    assert_eq!(job["status"]["conditions"][1]["reason"], "DeadlineExceeded");
    assert_eq!(
        job["status"]["conditions"][1]["message"],
        "Job was active longer than specified deadline"
    );
    let pod = w
        .state
        .pods("apps")
        .into_iter()
        .find(|p| p["metadata"]["labels"]["job-name"] == "doomed")
        .unwrap();
    assert_eq!(
        pod["status"]["containerStatuses"][0]["state"]["terminated"],
        json!({ "exitCode": 137, "reason": "OOMKilled", "message": "out of memory",
            "startedAt": pod["status"]["startTime"],
            "finishedAt": pod["status"]["containerStatuses"][0]["state"]["terminated"]["finishedAt"] })
    );

    behaviour(json!({ "run": "succeed" })).await.unwrap();
    w.call(
        Method::POST,
        JOBS,
        "application/json",
        Some(job_from(&w, "signon-sync", "fine")),
    )
    .await;
    eventually("the job completed", || {
        finished(&w.state.job("apps", "fine").unwrap())
    })
    .await;
    assert_eq!(
        condition_types(&w.state.job("apps", "fine").unwrap()),
        ["SuccessCriteriaMet", "Complete"]
    );
    assert!(!finished(&w.state.job("apps", "plain").unwrap()));

    // Cleared, Jobs wait for the control API again.
    let answer = w
        .http
        .delete(w.server.url("/_sim/cronjobs/apps/signon-sync/behaviour"))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::NO_CONTENT);
    w.call(
        Method::POST,
        JOBS,
        "application/json",
        Some(job_from(&w, "signon-sync", "manual")),
    )
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert!(!finished(&w.state.job("apps", "manual").unwrap()));

    let answer = w
        .http
        .post(w.server.url("/_sim/cronjobs/apps/nope/behaviour"))
        .body(json!({ "run": "succeed" }).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::NOT_FOUND);
    let answer = behaviour(json!({ "run": "explode" })).await.unwrap();
    assert_eq!(answer.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn cronjobs_are_also_served_at_batch_v1beta1_as_a_1_24_server_does() {
    let w = world().await;
    let (code, version) = w.call(Method::GET, "/version", "", None).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(version["minor"], "24");
    assert!(
        version["gitVersion"]
            .as_str()
            .unwrap()
            .starts_with("v1.24."),
        "{version}"
    );
    let (_, groups) = w.call(Method::GET, "/apis", "", None).await;
    let batch = groups["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["name"] == "batch")
        .unwrap();
    let versions: Vec<&str> = batch["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["groupVersion"].as_str().unwrap())
        .collect();
    assert_eq!(versions, ["batch/v1", "batch/v1beta1"]);
    assert_eq!(batch["preferredVersion"]["groupVersion"], "batch/v1");
    let (code, resources) = w.call(Method::GET, "/apis/batch/v1beta1", "", None).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(resources["groupVersion"], "batch/v1beta1");
    let cronjobs = &resources["resources"][0];
    assert_eq!(
        (
            &cronjobs["name"],
            &cronjobs["kind"],
            &cronjobs["shortNames"]
        ),
        (&json!("cronjobs"), &json!("CronJob"), &json!(["cj"]))
    );
    for verb in ["get", "list", "watch"] {
        assert!(
            cronjobs["verbs"].as_array().unwrap().contains(&json!(verb)),
            "{cronjobs}"
        );
    }

    // The same stored CronJob, in the version asked for, with the
    // deprecation warning a 1.24 server adds.
    let beta = "/apis/batch/v1beta1/namespaces/apps/cronjobs";
    let answer = w
        .http
        .get(w.server.url(&format!("{beta}/signon-sync")))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    let warning = answer.headers()["warning"].to_str().unwrap().to_owned();
    assert!(
        warning.starts_with("299 - \"batch/v1beta1 CronJob is deprecated in v1.21+"),
        "{warning}"
    );
    let old: Value = answer.json().await.unwrap();
    let (_, new) = w
        .call(
            Method::GET,
            "/apis/batch/v1/namespaces/apps/cronjobs/signon-sync",
            "",
            None,
        )
        .await;
    assert_eq!(old["apiVersion"], "batch/v1beta1");
    assert_eq!(new["apiVersion"], "batch/v1");
    assert_eq!(old["metadata"], new["metadata"]);
    assert_eq!(old["spec"], new["spec"]);
    let (_, list) = w.call(Method::GET, beta, "", None).await;
    assert_eq!(list["apiVersion"], "batch/v1beta1");
    assert_eq!(list["kind"], "CronJobList");
    assert_eq!(list["items"][0]["metadata"]["name"], "signon-sync");
    let (code, missing) = w.call(Method::GET, &format!("{beta}/nope"), "", None).await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    assert_eq!(missing["message"], "cronjobs.batch \"nope\" not found");
    let watched = w
        .http
        .get(w.server.url(&format!(
            "{beta}?watch=1&fieldSelector=metadata.name%3Dsignon-sync&timeoutSeconds=1"
        )))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let event: Value = serde_json::from_str(watched.lines().next().unwrap()).unwrap();
    assert_eq!(event["type"], "ADDED");
    assert_eq!(event["object"]["apiVersion"], "batch/v1beta1");
    assert_eq!(event["object"]["metadata"]["name"], "signon-sync");

    // A Job whose owner reference names the CronJob at batch/v1beta1 (as
    // kubectl 1.20 sends it) is one of that CronJob's Jobs.
    w.state
        .set_cronjob_behaviour(
            "apps",
            "signon-sync",
            KubeJobBehaviour::Succeed { delay_ms: 0 },
        )
        .unwrap();
    let mut job = job_from(&w, "signon-sync", "from-beta");
    job["metadata"]["ownerReferences"][0]["apiVersion"] = json!("batch/v1beta1");
    let (code, _) = w
        .call(Method::POST, JOBS, "application/json", Some(job))
        .await;
    assert_eq!(code, StatusCode::CREATED);
    eventually("the job completed", || {
        finished(&w.state.job("apps", "from-beta").unwrap())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_real_kubectl_waits_for_jobs_and_rollouts_that_end_by_themselves() {
    let w = world().await;
    w.state.allow_anonymous(Some(vec!["apps".into()]));
    w.state
        .set_cronjob_behaviour(
            "apps",
            "signon-sync",
            KubeJobBehaviour::Succeed { delay_ms: 300 },
        )
        .unwrap();
    w.state
        .set_auto_rollout("apps", "short-url-manager", Some(300))
        .unwrap();
    let dir = std::env::temp_dir().join(format!("kc-sim-kubectl-auto-{}", w.server.addr.port()));
    std::fs::create_dir_all(&dir).unwrap();
    let server = &w.server;
    let from = from_cronjob("signon-sync");
    let out = kubectl(server, &dir, &["create", "job", "auto-sync", &from]);
    assert!(out.contains("job.batch/auto-sync created"), "{out}");
    let out = kubectl(
        server,
        &dir,
        &[
            "wait",
            "--for=condition=complete",
            "job/auto-sync",
            "--timeout=30s",
        ],
    );
    assert!(out.contains("job.batch/auto-sync condition met"), "{out}");
    let pods: Value = serde_json::from_str(&kubectl(
        server,
        &dir,
        &["get", "pods", "-l", "job-name=auto-sync", "-o", "json"],
    ))
    .unwrap();
    assert_eq!(pods["items"].as_array().unwrap().len(), 1, "{pods}");
    assert_eq!(pods["items"][0]["status"]["phase"], "Succeeded");
    let names = kubectl(
        server,
        &dir,
        &["get", "pods", "-l", "app=short-url-manager", "-o", "name"],
    );
    assert_eq!(names.lines().count(), 2, "{names}");

    kubectl(
        server,
        &dir,
        &["rollout", "restart", "deployment/short-url-manager"],
    );
    let out = kubectl(
        server,
        &dir,
        &[
            "rollout",
            "status",
            "deployment/short-url-manager",
            "--timeout=30s",
        ],
    );
    assert!(out.contains("successfully rolled out"), "{out}");
    let renamed = kubectl(
        server,
        &dir,
        &["get", "pods", "-l", "app=short-url-manager", "-o", "name"],
    );
    assert_eq!(renamed.lines().count(), 2, "{renamed}");
    assert!(
        names.lines().all(|n| !renamed.contains(n)),
        "the pods were replaced"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
