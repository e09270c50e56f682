//! Seed 001 end to end: `signon-api-token` against a Signon simulator, a
//! server application behind gds-sso and a Kubernetes simulator per
//! environment (production over https with its own CA, integration over
//! http). The person's steps (creating the token in Signon's UI, revoking
//! the old one) are done through the Signon simulator when the run asks.
//! The true state is checked: the Secret and every pod of the client hold
//! the new token, the Job was made as `kubectl create job --from` makes it,
//! Signon refuses the old token. The special cases end as the seed says; a
//! failed sync Job and a consumer left on the old token revoke nothing; a
//! crash at every request boundary still rotates once.

use std::path::PathBuf;

use keycycle_sim::{
    KubeCronJobSeed, KubeDeploymentSeed, KubeJobBehaviour, KubeSecretSeed, KubeTokenSeed,
    KubernetesState, SignonAppSeed, SignonAppServerState, SignonState, SignonTokenSeed,
    SignonUserSeed, SimServer,
};
use serde_json::{Value, json};

use crate::support::*;

const NS: &str = "apps";
const CRONJOB: &str = "signon-sync-token-secrets-to-k8s";
const CLIENT_ID: &str = "publishing-api-oauth-id";
const EMAIL: &str = "short-url-manager@alphagov.co.uk";
const CLIENT: &str = "short-url-manager";
const SECRET: &str = "signon-token-short-url-manager-publishing-api";
const ENV_VAR: &str = "PUBLISHING_API_BEARER_TOKEN";
/// An API user outside GOV.UK, whose token a person hands over.
const EXTERNAL_EMAIL: &str = "tax-credits@digital.hmrc.gov.uk";

/// One environment: its Signon, the server application, its cluster.
struct Env {
    name: &'static str,
    signon_server: Option<SimServer>,
    signon: SignonState,
    signon_origin: String,
    user: u64,
    external_user: u64,
    app: u64,
    app_server: Option<SimServer>,
    server_app: SignonAppServerState,
    cluster_server: Option<SimServer>,
    cluster: KubernetesState,
    kube_origin: String,
    kube_token: String,
    /// The CA file when the cluster is served over https.
    ca: Option<PathBuf>,
    old_token: String,
    old_id: u64,
    external_old_id: u64,
}

struct Seed001 {
    rt: tokio::runtime::Runtime,
    envs: Vec<Env>,
    ws: Workspace,
    /// The pasted tokens' files, outside the workspace: the person's.
    inputs: tempfile::TempDir,
}

impl Drop for Seed001 {
    fn drop(&mut self) {
        for env in &mut self.envs {
            for server in [
                env.signon_server.take(),
                env.app_server.take(),
                env.cluster_server.take(),
            ]
            .into_iter()
            .flatten()
            {
                self.rt.block_on(server.shutdown());
            }
        }
    }
}

fn days_ago(days: i64) -> time::Date {
    (time::OffsetDateTime::now_utc() - time::Duration::days(days)).date()
}

impl Env {
    fn start(
        rt: &tokio::runtime::Runtime,
        name: &'static str,
        tls: bool,
        dir: &std::path::Path,
    ) -> Env {
        let (signon_server, signon) = rt.block_on(keycycle_sim::start_signon(0)).unwrap();
        let signon_origin = signon_server.base_url.clone();
        let user = signon
            .add_api_user(SignonUserSeed::new("Short URL Manager", EMAIL))
            .unwrap();
        let external_user = signon
            .add_api_user(SignonUserSeed::new("HMRC Tax Credits", EXTERNAL_EMAIL))
            .unwrap();
        let app = signon
            .add_application(SignonAppSeed {
                name: "Publishing API".into(),
                oauth_id: Some(CLIENT_ID.into()),
                oauth_secret: None,
            })
            .unwrap();
        // Tokens made two years ago less a week: the alert fired.
        let seed = |user: u64, prefix: &str| {
            let value = canary(prefix);
            let made = signon
                .create_token(
                    SignonTokenSeed::new(user, app)
                        .value(&value)
                        .created_on(days_ago(723)),
                )
                .unwrap();
            (value, made.id)
        };
        let (old_token, old_id) = seed(user, "signon-old-");
        let (_, external_old_id) = seed(external_user, "signon-hmrc-old-");

        let (app_server, server_app) =
            keycycle_sim::start_signon_app(&signon, CLIENT_ID, 0).unwrap();

        let (cluster_server, cluster, ca) = if tls {
            let (server, state, ca_pem) =
                rt.block_on(keycycle_sim::start_kubernetes_tls(0)).unwrap();
            let ca = dir.join(format!("{name}-ca.pem"));
            std::fs::write(&ca, ca_pem).unwrap();
            (server, state, Some(ca))
        } else {
            let (server, state) = rt.block_on(keycycle_sim::start_kubernetes(0)).unwrap();
            (server, state, None)
        };
        let kube_origin = cluster_server.base_url.clone();
        cluster.add_namespace(NS);
        let kube_token = cluster
            .add_token(KubeTokenSeed {
                namespace: NS.into(),
                service_account: "signon-rotator".into(),
                token: None,
                namespaces: Some(vec![NS.into()]),
            })
            .unwrap()
            .expose()
            .to_owned();
        plant(&kube_token);
        cluster
            .put_secret(KubeSecretSeed {
                namespace: NS.into(),
                name: SECRET.into(),
                data: [(
                    "bearer_token".to_owned(),
                    keycycle_secret::SecretValue::new(old_token.clone()),
                )]
                .into(),
                ..KubeSecretSeed::default()
            })
            .unwrap();
        cluster
            .add_cronjob(KubeCronJobSeed {
                namespace: NS.into(),
                name: CRONJOB.into(),
                schedule: Some("9 1 * * *".into()),
                job_template: None,
            })
            .unwrap();
        cluster
            .set_cronjob_behaviour(
                NS,
                CRONJOB,
                KubeJobBehaviour::SignonSync {
                    source: signon_origin.clone(),
                    delay_ms: 200,
                },
            )
            .unwrap();
        cluster
            .add_deployment(KubeDeploymentSeed {
                namespace: NS.into(),
                name: CLIENT.into(),
                replicas: Some(2),
                template: Some(json!({
                    "metadata": { "labels": { "app": CLIENT } },
                    "spec": { "containers": [{
                        "name": "app",
                        "image": "ghcr.io/alphagov/short-url-manager:release",
                        "env": [{
                            "name": ENV_VAR,
                            "valueFrom": { "secretKeyRef": { "name": SECRET, "key": "bearer_token" } },
                        }],
                    }]},
                })),
                auto_rollout_ms: Some(200),
                ..KubeDeploymentSeed::default()
            })
            .unwrap();
        assert!(
            cluster
                .deployment_pods_hold(NS, CLIENT, ENV_VAR, &old_token)
                .unwrap(),
            "the client starts on the old token"
        );
        Env {
            name,
            signon_server: Some(signon_server),
            signon,
            signon_origin,
            user,
            external_user,
            app,
            app_server: Some(app_server),
            server_app,
            cluster_server: Some(cluster_server),
            cluster,
            kube_origin,
            kube_token,
            ca,
            old_token,
            old_id,
            external_old_id,
        }
    }

    fn app_origin(&self) -> String {
        self.app_server.as_ref().unwrap().base_url.clone()
    }

    fn config(&self) -> String {
        let ca = self
            .ca
            .as_ref()
            .map(|ca| format!("ca_cert = \"{}\"\n", ca.display()))
            .unwrap_or_default();
        format!(
            "
[plugins.signon-{env}]
path = \"{signon}\"
hosts = [\"{so}\"]
config = {{ base_url = \"{so}\" }}

[plugins.kubernetes-{env}]
path = \"{kube}\"
hosts = [\"{ko}\"]
secrets = {{ token = \"k8s/{env}\" }}
config = {{ api_url = \"{ko}\", namespace = \"{NS}\" }}
timeout_secs = 120
{ca}
[plugins.server-{env}]
path = \"{http}\"
hosts = [\"{ao}\"]
config = {{ base_url = \"{ao}\" }}
",
            env = self.name,
            signon = wasm("signon").display(),
            kube = wasm("kubernetes").display(),
            http = wasm("http_check").display(),
            so = self.signon_origin,
            ko = self.kube_origin,
            ao = self.app_origin(),
        )
    }

    /// The person's "Create access token" in Signon's UI, for `user`.
    fn person_creates(&self, user: u64, application: u64) -> String {
        let value = canary("signon-new-");
        self.signon
            .create_token(SignonTokenSeed::new(user, application).value(&value))
            .unwrap();
        value
    }

    /// The true value of the client's Secret.
    fn secret_value(&self) -> String {
        self.cluster
            .secret(NS, SECRET)
            .unwrap()
            .data
            .get("bearer_token")
            .unwrap()
            .expose()
            .to_owned()
    }

    fn jobs(&self) -> Vec<Value> {
        self.cluster.snapshot().jobs
    }

    fn generation(&self) -> i64 {
        self.cluster.deployment(NS, CLIENT).unwrap()["metadata"]["generation"]
            .as_i64()
            .unwrap()
    }

    fn token_accepted(&self, id: u64) -> bool {
        self.signon.token(id).unwrap().revoked_at.is_none()
    }

    /// Requests the run sent to Signon and the cluster (not the control API).
    fn provider_requests(&self) -> usize {
        let count = |all: Vec<keycycle_sim::RequestRecord>| {
            all.iter().filter(|r| !r.path.starts_with("/_sim")).count()
        };
        count(self.signon.requests()) + count(self.cluster.requests())
    }
}

impl Seed001 {
    fn start() -> Seed001 {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let inputs = tempfile::tempdir().unwrap();
        let envs = vec![
            Env::start(&rt, "production", true, inputs.path()),
            Env::start(&rt, "integration", false, inputs.path()),
        ];
        let ws = Workspace::new();
        let mut config = format!(
            "runbooks_dir = \"{}\"\n",
            repo_root().join("runbooks").display()
        );
        for env in &envs {
            config.push_str(&env.config());
        }
        ws.config(&config);
        for env in &envs {
            ws.set_secret(&format!("k8s/{}", env.name), &env.kube_token);
        }
        Seed001 {
            rt,
            envs,
            ws,
            inputs,
        }
    }

    fn env(&self, name: &str) -> &Env {
        self.envs.iter().find(|e| e.name == name).unwrap()
    }

    /// The pasted token's file, for `--input new_token=@FILE`.
    fn pasted(&self, value: &str) -> String {
        let file = self
            .inputs
            .path()
            .join(format!("pasted-{}.txt", rand::random::<u32>()));
        std::fs::write(&file, value).unwrap();
        format!("new_token=@{}", file.display())
    }

    fn run(&self, args: &[String]) -> Run {
        let run = self.ws.run(&argv(args));
        assert_clean("stdout", &run.stdout);
        assert_clean("stderr", &run.stderr);
        run
    }
}

fn base(env: &str, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
        "run",
        "signon-api-token",
        "--set",
        &format!("environment={env}"),
        "--set",
        &format!("api_user={EMAIL}"),
        "--set",
        "application=publishing-api",
        "--set",
        &format!("client_id={CLIENT_ID}"),
        "--set",
        "force=true",
        "--set",
        "job_timeout=60",
        "--set",
        "rollout_timeout=60",
        "--set",
        "poll_secs=1",
        "--set",
        "server_path=/api/content/healthcheck",
    ]
    .map(str::to_owned)
    .to_vec();
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    args
}

fn with(mut args: Vec<String>, extra: &[&str]) -> Vec<String> {
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    args
}

fn argv(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

#[test]
fn special_cases_end_as_the_seed_says_and_touch_nothing() {
    let s = Seed001::start();
    let cases: [(&[&str], i32, &str, Option<&str>); 5] = [
        (
            &["--set", "application=Trade Tariff Admin"],
            5,
            "Trade Tariff Admin procedure",
            None,
        ),
        (
            &["--set", "application=trade-tariff-backend"],
            5,
            "Trade Tariff Admin procedure",
            None,
        ),
        (
            &[
                "--set",
                "application=Signon API Client (permission and suspension updater)",
            ],
            0,
            "rotates by itself",
            Some("rotates-itself"),
        ),
        (
            &["--set", "environment=staging"],
            0,
            "overwritten every night from production",
            Some("staging-copied-from-production"),
        ),
        (
            &["--set", "force=false"],
            0,
            "renews tokens of short-url-manager@alphagov.co.uk by itself",
            Some("renewed-by-signon"),
        ),
    ];
    for (extra, code, says, reason) in cases {
        let args = with(base("production", extra), &["-o", "json"]);
        let run = s.run(&args);
        run.assert_code(code);
        let report = run.json();
        let text = format!("{}{}", run.stderr, report);
        assert!(text.contains(says), "{extra:?}: {text}");
        if let Some(reason) = reason {
            assert_eq!(report["result"]["rotated"], false, "{extra:?}");
            assert_eq!(report["result"]["reason"], reason, "{extra:?}");
        }
    }
    for env in &s.envs {
        assert_eq!(
            env.provider_requests(),
            0,
            "{}: nothing was asked",
            env.name
        );
        assert_eq!(env.secret_value(), env.old_token);
        assert!(env.token_accepted(env.old_id));
    }
    assert!(s.ws.held_locks().is_empty());
}

#[test]
fn production_and_integration_rotate_end_to_end() {
    let s = Seed001::start();
    for env in &s.envs {
        // The client already called the server with the old token, so
        // gds-sso there has it cached.
        let warm = s.rt.block_on(
            reqwest::Client::new()
                .get(format!("{}/api/content/warm", env.app_origin()))
                .bearer_auth(&env.old_token)
                .send(),
        );
        assert_eq!(warm.unwrap().status(), 200);

        let new = env.person_creates(env.user, env.app);
        let pasted = s.pasted(&new);

        // A dry run reads, and changes nothing.
        let dry = s.run(&base(
            env.name,
            &[
                "--dry-run",
                "--input",
                &pasted,
                "--input",
                "old_token_revoked=yes",
            ],
        ));
        dry.assert_ok();
        assert!(env.jobs().is_empty(), "{}: a dry run made a Job", env.name);
        assert_eq!(env.generation(), 1, "{}: a dry run restarted", env.name);
        assert_eq!(env.secret_value(), env.old_token);

        // The real run stops where the person revokes the old token.
        let first = s.run(&base(env.name, &["--input", &pasted]));
        first.assert_code(6).stderr_has("old_token_revoked");
        assert_eq!(
            env.secret_value(),
            new,
            "{}: the Secret holds the new token",
            env.name
        );
        assert!(
            env.cluster
                .deployment_pods_hold(NS, CLIENT, ENV_VAR, &new)
                .unwrap(),
            "{}: every pod of the client holds the new token",
            env.name
        );
        assert!(
            env.token_accepted(env.old_id),
            "{}: the old token still works",
            env.name
        );

        let jobs = env.jobs();
        assert_eq!(jobs.len(), 1, "{}: one sync Job", env.name);
        let job = &jobs[0];
        assert_eq!(
            job["metadata"]["annotations"]["cronjob.kubernetes.io/instantiate"],
            "manual"
        );
        let owner = &job["metadata"]["ownerReferences"][0];
        assert_eq!(
            (owner["kind"].as_str(), owner["name"].as_str()),
            (Some("CronJob"), Some(CRONJOB))
        );
        assert_eq!(owner["controller"], true);
        assert_eq!(env.generation(), 2, "{}: restarted once", env.name);
        let secret = env.cluster.secret(NS, SECRET).unwrap();
        assert_eq!(
            secret.managers["bearer_token"], "signon",
            "the sync job applied it"
        );

        // The person revokes the old token in Signon; the run goes on.
        env.signon.revoke_token(env.old_id).unwrap();
        let run_id = s.ws.only_unfinished_run();
        let done = s.run(&[
            "resume".to_owned(),
            run_id,
            "--input".to_owned(),
            "old_token_revoked=yes".to_owned(),
            "-o".to_owned(),
            "json".to_owned(),
        ]);
        done.assert_ok();
        let report = done.json();
        assert_eq!(report["result"]["rotated"], true);
        assert_eq!(report["result"]["old_token_still_valid"], false);
        assert_eq!(report["result"]["secret"], SECRET);
        assert!(
            done.stderr
                .contains("still accepts the old token from gds-sso's cache"),
            "{}",
            done.stderr
        );
        let calls = env.server_app.calls();
        assert!(
            calls
                .iter()
                .any(|c| c.path == "/api/content/healthcheck" && c.status == 200 && !c.cached),
            "{}: the server application was called with the new token: {calls:?}",
            env.name
        );
        assert!(!env.token_accepted(env.old_id));
        assert!(s.ws.held_locks().is_empty(), "every lock released");
        s.ws.assert_files_lack("the new token", std::slice::from_ref(&new));
    }
    s.ws.assert_files_clean_including(&["state/state.db"]);
}

#[test]
fn a_failed_sync_job_revokes_nothing_and_says_why() {
    let s = Seed001::start();
    let env = s.env("integration");
    env.cluster
        .set_cronjob_behaviour(
            NS,
            CRONJOB,
            KubeJobBehaviour::Fail {
                delay_ms: 100,
                reason: None,
                message: None,
                pod_reason: Some("Error".into()),
                exit_code: Some(1),
                pod_message: Some("rake aborted! Kubeclient::HttpError: Forbidden".into()),
            },
        )
        .unwrap();
    let new = env.person_creates(env.user, env.app);
    let run = s.run(&base(
        env.name,
        &[
            "--input",
            &s.pasted(&new),
            "--input",
            "old_token_revoked=yes",
        ],
    ));
    run.assert_code(5)
        .stderr_has("BackoffLimitExceeded")
        .stderr_has("rake aborted! Kubeclient::HttpError: Forbidden")
        .stderr_has("exit 1")
        .stderr_has("NOT revoked");
    assert_eq!(env.secret_value(), env.old_token);
    assert_eq!(env.generation(), 1, "the client was not restarted");
    assert!(
        env.cluster
            .deployment_pods_hold(NS, CLIENT, ENV_VAR, &env.old_token)
            .unwrap()
    );
    assert!(
        env.token_accepted(env.old_id),
        "the old token was not touched"
    );
    assert!(
        !run.stderr.contains("Signon no longer accepts"),
        "the revocation was never reached"
    );
}

#[test]
fn a_consumer_left_on_the_old_token_revokes_nothing() {
    let s = Seed001::start();
    let env = s.env("production");
    // The Job completes, but writes nothing: the Secret keeps the old token.
    env.cluster
        .set_cronjob_behaviour(NS, CRONJOB, KubeJobBehaviour::Succeed { delay_ms: 100 })
        .unwrap();
    let new = env.person_creates(env.user, env.app);
    let run = s.run(&base(
        env.name,
        &[
            "--input",
            &s.pasted(&new),
            "--input",
            "old_token_revoked=yes",
        ],
    ));
    run.assert_code(5)
        .stderr_has("does not hold the new token")
        .stderr_has("NOT revoked");
    assert_eq!(env.secret_value(), env.old_token);
    assert_eq!(env.generation(), 1);
    assert!(
        env.cluster
            .deployment_pods_hold(NS, CLIENT, ENV_VAR, &env.old_token)
            .unwrap()
    );
    assert!(env.token_accepted(env.old_id));
}

#[test]
fn a_pasted_token_for_another_user_or_application_changes_nothing() {
    let s = Seed001::start();
    let env = s.env("integration");
    let other_app = env
        .signon
        .add_application(SignonAppSeed {
            name: "Content Store".into(),
            oauth_id: Some("content-store-oauth-id".into()),
            oauth_secret: None,
        })
        .unwrap();
    for (token, says) in [
        (
            env.person_creates(env.user, other_app),
            "does not accept the pasted token",
        ),
        (
            env.person_creates(env.external_user, env.app),
            "belongs to tax-credits@digital.hmrc.gov.uk",
        ),
        (
            "not-a-token-at-all".to_owned(),
            "does not accept the pasted token",
        ),
    ] {
        let run = s.run(&base(env.name, &["--input", &s.pasted(&token)]));
        run.assert_code(5)
            .stderr_has(says)
            .stderr_has("Nothing was changed");
    }
    assert!(env.jobs().is_empty());
    assert_eq!(env.secret_value(), env.old_token);
    assert!(env.token_accepted(env.old_id));
}

#[test]
fn an_external_consumer_is_handed_the_token_and_nothing_is_revoked_before_it_switches() {
    let s = Seed001::start();
    let env = s.env("production");
    let new = env.person_creates(env.external_user, env.app);
    let args = [
        "run",
        "signon-api-token",
        "--set",
        "environment=production",
        "--set",
        &format!("api_user={EXTERNAL_EMAIL}"),
        "--set",
        "application=Publishing API",
        "--set",
        &format!("client_id={CLIENT_ID}"),
        "--set",
        "consumer=external",
        "--input",
        &s.pasted(&new),
        "--input",
        "token_handed_over=yes",
    ]
    .map(str::to_owned);
    let first = s.run(&args);
    first.assert_code(6).stderr_has("consumer_switched");
    assert!(
        env.token_accepted(env.external_old_id),
        "nothing revoked before the switch"
    );

    let run_id = s.ws.only_unfinished_run();
    let resume = |answer: &str| {
        s.run(&[
            "resume".to_owned(),
            run_id.clone(),
            "--input".to_owned(),
            answer.to_owned(),
            "-o".to_owned(),
            "json".to_owned(),
        ])
    };
    resume("consumer_switched=yes")
        .assert_code(6)
        .stderr_has("old_token_revoked");
    env.signon.revoke_token(env.external_old_id).unwrap();
    let done = resume("old_token_revoked=yes");
    done.assert_ok();
    assert_eq!(done.json()["result"]["consumer"], "external");
    assert_eq!(
        env.cluster
            .requests()
            .iter()
            .filter(|r| !r.path.starts_with("/_sim"))
            .count(),
        0,
        "the cluster is not touched for an external consumer"
    );
    assert!(env.jobs().is_empty());
    assert!(s.ws.held_locks().is_empty());
}

#[test]
fn a_cluster_whose_certificate_is_not_from_the_configured_ca_is_refused() {
    let s = Seed001::start();
    // Another cluster's CA in place of production's.
    let (_other, _state, other_ca) =
        s.rt.block_on(keycycle_sim::start_kubernetes_tls(0))
            .unwrap();
    let production = s.env("production");
    std::fs::write(production.ca.as_ref().unwrap(), other_ca).unwrap();
    let new = production.person_creates(production.user, production.app);
    let run = s.run(&base("production", &["--input", &s.pasted(&new)]));
    run.assert_code(5).stderr_has("kubernetes-production");
    assert!(
        run.stderr.to_lowercase().contains("certificate"),
        "{}",
        run.stderr
    );
    assert!(production.jobs().is_empty());
    assert_eq!(production.secret_value(), production.old_token);
}

mod crash {
    use std::time::Duration;

    use keycycle_sim::{Release, RequestRecord};

    use super::*;

    const ARRIVAL: Duration = Duration::from_secs(30);

    #[derive(Clone, Copy, Debug, PartialEq)]
    enum At {
        Signon,
        Cluster,
    }

    fn requests(env: &Env, at: At) -> Vec<RequestRecord> {
        let all = match at {
            At::Signon => env.signon.requests(),
            At::Cluster => env.cluster.requests(),
        };
        all.into_iter()
            .filter(|r| !r.path.starts_with("/_sim"))
            .map(|mut r| {
                // The Job's name comes from the run's step key: keep the
                // path's shape.
                if let Some(at) = r.path.find("/jobs/") {
                    r.path = format!("{}/jobs/JOB", &r.path[..at]);
                }
                r
            })
            .collect()
    }

    /// The requests, a run of the same read counted once: the waits poll a
    /// varying number of times, so only the first poll is a boundary every
    /// run has.
    fn boundaries(mut list: Vec<RequestRecord>) -> Vec<RequestRecord> {
        list.dedup_by(|later, earlier| {
            later.method == "GET"
                && earlier.method == "GET"
                && later.path == earlier.path
                && later.path.contains("/apis/")
        });
        list
    }

    /// A scenario: integration only, the sync and the rollout at once.
    fn setup() -> (Seed001, Vec<String>, String, String) {
        let s = Seed001::start();
        let env = s.env("integration");
        env.cluster
            .set_cronjob_behaviour(
                NS,
                CRONJOB,
                KubeJobBehaviour::SignonSync {
                    source: env.signon_origin.clone(),
                    delay_ms: 0,
                },
            )
            .unwrap();
        env.cluster.set_auto_rollout(NS, CLIENT, Some(0)).unwrap();
        let new = env.person_creates(env.user, env.app);
        let pasted = s.pasted(&new);
        let args = base("integration", &["--input", &pasted]);
        env.signon.clear_requests();
        env.cluster.clear_requests();
        (s, args, new, pasted)
    }

    /// Resumes until the run ends, revoking the old token when asked.
    fn drive(s: &Seed001, pasted: &str) {
        let env = s.env("integration");
        let run_id = s.ws.only_unfinished_run();
        // The pasted token again: a run killed before it took the answer
        // asks for it.
        let mut args = vec![
            "resume".to_owned(),
            run_id,
            "--input".to_owned(),
            pasted.to_owned(),
        ];
        // The answer is given only once the person has revoked the token:
        // before then, the run must stop and ask.
        if env.token_accepted(env.old_id) {
            let run = s.run(&args);
            if run.code == 0 {
                return;
            }
            run.assert_code(6).stderr_has("old_token_revoked");
            env.signon.revoke_token(env.old_id).unwrap();
        }
        args.extend(["--input".to_owned(), "old_token_revoked=yes".to_owned()]);
        s.run(&args).assert_ok();
    }

    fn first_run(s: &Seed001, args: &[String]) {
        let env = s.env("integration");
        let run = s.run(args);
        run.assert_code(6);
        env.signon.revoke_token(env.old_id).unwrap();
    }

    fn assert_rotated_once(s: &Seed001, new: &str) {
        let env = s.env("integration");
        assert_eq!(env.secret_value(), new);
        assert!(
            env.cluster
                .deployment_pods_hold(NS, CLIENT, ENV_VAR, new)
                .unwrap()
        );
        assert_eq!(env.jobs().len(), 1, "one sync Job");
        assert!(!env.token_accepted(env.old_id));
        assert!(s.ws.held_locks().is_empty(), "every lock released");
        assert!(s.ws.unfinished_runs().is_empty());
    }

    fn clean_flow() -> Vec<(At, Vec<RequestRecord>)> {
        let (s, args, new, pasted) = setup();
        first_run(&s, &args);
        drive(&s, &pasted);
        assert_rotated_once(&s, &new);
        let env = s.env("integration");
        [At::Signon, At::Cluster]
            .into_iter()
            .map(|at| (at, boundaries(requests(env, at))))
            .collect()
    }

    fn crash_once(at: At, list: &[RequestRecord], k: usize, mode: Release) {
        let (s, args, new, pasted) = setup();
        let env = s.env("integration");
        let target = &list[k];
        let prefix = target.path.trim_end_matches("JOB").to_owned();
        let n = gate_occurrence(list, k, &prefix);
        let gate = match at {
            At::Signon => env.signon.gate(&target.method, &prefix, n),
            At::Cluster => env.cluster.gate(&target.method, &prefix, n),
        };
        let mut killed = s.ws.run_or_kill_at_gate(&argv(&args), &gate, ARRIVAL);
        if !killed {
            // The gated request comes after the revocation question.
            env.signon.revoke_token(env.old_id).unwrap();
            let run_id = s.ws.only_unfinished_run();
            killed = s.ws.run_or_kill_at_gate(
                &[
                    "resume",
                    &run_id,
                    "--input",
                    "old_token_revoked=yes",
                    "--input",
                    &pasted,
                ],
                &gate,
                ARRIVAL,
            );
        }
        assert!(killed, "the gated request never came");
        gate.release(mode);
        assert!(
            gate.wait_finished(ARRIVAL),
            "the released request was not answered"
        );
        s.ws.assert_files_clean_including(&["state/state.db"]);
        drive(&s, &pasted);
        assert_rotated_once(&s, &new);
        s.ws.assert_files_lack("the new token", &[new]);
    }

    #[test]
    fn a_crash_at_every_boundary_still_rotates_once() {
        let scenarios = crash_at_every_request(&clean_flow(), crash_once);
        assert!(scenarios > 10, "only {scenarios} scenarios");
    }
}
