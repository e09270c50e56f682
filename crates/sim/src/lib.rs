//! Faithful simulators of token providers that tests cannot reach: used as a
//! library by integration tests, and served by `keycycle sim <provider>` for
//! operators rehearsing a runbook.
//!
//! Each simulator binds 127.0.0.1 only and has two faces:
//!
//! * the provider API, behaving like the real one (auth, errors, status codes);
//! * a control API under `/_sim/` (no auth; tests and rehearsals only) that
//!   seeds state, reads the *true* state (token values included), injects
//!   failures and rate limits, and returns the request log.
//!
//! The same control is available in-process through the state handle
//! returned by `start_*` ([`DemoState`]), which is `Clone` and shares the
//! server's state.
//!
//! # Demo token service
//!
//! | Request | Answer |
//! | --- | --- |
//! | `GET /api/whoami` | 200 `{"user":"demo-admin","token_id":N,"token_name":"..."}` |
//! | `POST /api/tokens` `{"name"}` | 201 `{"id","name","token":"demo-<32 hex>","created_at"}` (value shown only here); 400 `{"message":"name is missing"}` |
//! | `GET /api/tokens[?name=exact]` | 200 `[{"id","name","active","created_at"}]` |
//! | `DELETE /api/tokens/:id` | 204; 404 `{"message":"404 Not found"}` |
//! | `GET /api/redirect?to=URL` | 302 `Location: URL` (no auth) |
//!
//! Every `/api` call except the redirect needs `Authorization: Bearer <token>`
//! and answers 401 `{"message":"401 Unauthorized"}` for unknown or revoked
//! tokens.
//!
//! Control: `POST /_sim/tokens {"name","token"}` → 201 `{"id"}`;
//! `GET /_sim/state` → `{"tokens":[{"id","name","active","created_at","value"}],"requests":[...]}`.
//!
//! # GitLab
//!
//! [`start_gitlab`] serves `/api/v4` as the provider reference's GitLab
//! section describes it: personal, project and group access tokens (rotation
//! with new ids, immediate revocation, token families and reuse detection,
//! expiry on a date tests control), pipeline trigger tokens (full value for
//! the owner only), project CI/CD variables (environment scopes, masked-value
//! rule) and project webhooks (write-only secret token, reset when the URL
//! changes without one), with GitLab's permissions, error shapes, pagination
//! and RateLimit-* headers. [`GitLabState`] seeds and inspects it in-process;
//! the same is served under `/_sim/` (users, groups, projects, members,
//! tokens, variables, hooks, triggers, `state`, `today`, `settings`).
//!
//! # Zendesk
//!
//! [`start_zendesk`] serves `/api/v2` and `/oauth/tokens` as the provider
//! reference's Zendesk section describes them: API tokens that only a
//! person creates or deactivates (the control API plays that person), go
//! idle after 30 days and stop on 2027-04-30; OAuth clients, tokens (value
//! shown once, scopes enforced) and the client_credentials and refresh_token
//! grants; app installations whose secure settings are never echoed; and
//! webhooks with write-only credentials, cursor pagination and a recorded
//! test call. [`ZendeskState`] seeds and inspects it; the same is served
//! under `/_sim/`.
//!
//! # GitHub
//!
//! [`start_github`] serves the REST API at the root, as the provider
//! reference's GitHub section describes it: `GET /user` with the
//! `X-OAuth-Scopes`, expiry and rate-limit headers; personal access tokens
//! that only a person creates or revokes (the control API plays that
//! person), 401 "Bad credentials" once revoked or expired on the settable
//! clock; Actions secrets of repositories, environments and organisations,
//! each scope with its own Curve25519 key pair, opened from the client's
//! sealed box into the true state. [`GitHubState`] seeds and inspects it;
//! the same is served under `/_sim/`.
//!
//! # IBM Cloud Secrets Manager
//!
//! [`start_ibm_sm`] serves one Secrets Manager instance's `/api/v2` and
//! IAM's `POST /identity/token`, as the provider reference's IBM section
//! describes them: arbitrary and username_password secrets in groups,
//! get by name, versions (`current`, `previous`), renames by merge-patch,
//! locks that refuse a deletion with 412, and access tokens that expire on
//! a settable clock. Each instance is a server of its own, as each real
//! instance has an origin of its own; [`IbmSmState::start_instance`] starts
//! another instance of the same account, sharing IAM and the clock.
//! [`IbmSmState`] seeds and inspects it; the same is served under `/_sim/`.
//!
//! # GOV.UK Signon
//!
//! [`start_signon`] serves `GET /user.json` as gds-sso calls it and the
//! token-expiry gauge at `/metrics`, as the provider reference's Signon
//! section describes them: API users, applications with OAuth ids, and
//! two-year Doorkeeper access tokens that only a person creates or revokes
//! (the control API plays that person), answered 401 with an empty body
//! when unknown, expired, revoked, for another `client_id` or without
//! `signin`. [`SignonState::sync`] returns what the token sync job would
//! put in each Secret. [`SignonState`] seeds and inspects it; the same is
//! served under `/_sim/`.
//!
//! # Kubernetes
//!
//! [`start_kubernetes`] serves a Kubernetes API server as the provider
//! reference's Kubernetes section describes it, well enough for the real
//! `kubectl` and the official Python client: discovery, bearer
//! service-account tokens, Secrets with every patch format and
//! resourceVersion conflicts, CronJobs, Jobs created from them, Deployments
//! restarted by `kubectl rollout restart`, and Pods (read and listed by
//! label). No container runs: a Job ends on the control API's word, or by
//! itself when its CronJob has a [`KubeJobBehaviour`] (Signon's token sync
//! against the Signon simulator, a success or a failure); a rollout finishes
//! on the control API's word, or by itself after a template change with
//! automatic rollout. Each pod holds the values of the Secret keys its env
//! vars reference as they were when it was created, so a test can ask
//! whether every pod of a Deployment has the new token
//! ([`KubernetesState::deployment_pods_hold`]). [`start_kubernetes_tls`]
//! serves it over https with a CA of its own (kubectl sends a kubeconfig's
//! token only over TLS). [`KubernetesState`] seeds and inspects it; the
//! same is served under `/_sim/`.
//!
//! # Control shared by every simulator
//!
//! `POST /_sim/fail` [`FailRule`] (`DELETE` clears, `GET` lists);
//! `POST /_sim/rate_limit` [`RateLimit`]: the next N provider requests get 429,
//! `Retry-After` and the body "Retry later"; `GET|DELETE /_sim/requests`: the
//! log of provider requests (method and path), for asserting that nothing
//! was sent. The state handles offer the same as methods.
//!
//! Request gates ([`Gate`]) hold one chosen provider request when it arrives
//! until the test releases it, so a test can kill a client at an exact
//! effect boundary: `state.gate(method, path_prefix, nth)` in-process, or
//! `POST /_sim/gates` [`GateRule`] → 201 `{"id"}`, `GET /_sim/gates/{id}` →
//! `{"id","arrived","finished"}`, `POST /_sim/gates/{id}/release {"mode":"process"|"drop"}`
//! → 204. `process` hands the request to the provider (its effects happen
//! even if the client is gone); `drop` answers 503 and changes nothing.

mod clock;
mod control;
mod demo;
mod error;
mod fail;
mod gate;
mod github;
mod gitlab;
mod ibm_sm;
mod kubernetes;
mod server;
mod signon;
mod values;
mod zendesk;

use std::io;

pub use control::{CONTROL_PREFIX, RequestRecord};
pub use demo::{DEMO_USER, DemoState, DemoToken};
pub use error::SimError;
pub use fail::{FailRule, RateLimit};
pub use gate::{Gate, GateRule, Release};
pub use github::{
    ActionsSecretState, GitHubOrgSeed, GitHubOrgState, GitHubRepoSeed, GitHubRepoState,
    GitHubSnapshot, GitHubState, GitHubTokenSeed, GitHubTokenState, GitHubUserSeed,
    GitHubUserState, PublicKeyState, SecretScope,
};
pub use gitlab::{
    AuthErrorStyle, GitLabSettings, GitLabSnapshot, GitLabState, GroupSeed, GroupState, HookSeed,
    HookSettings, HookState, HookTestState, Member, MemberSeed, PipelineState, ProjectSeed,
    ProjectState, Resource, ReuseDetection, SeededToken, SeededTrigger, TokenSeed, TokenState,
    TriggerSeed, TriggerState, UserSeed, UserState, VariableSeed, VariableState,
};
pub use ibm_sm::{
    IBM_DEFAULT_ACCOUNT, IbmApiKeySeed, IbmGroupSeed, IbmGroupState, IbmLockState, IbmSecretSeed,
    IbmSecretState, IbmSmSnapshot, IbmSmState, IbmTokenState, IbmVersionState,
};
pub use kubernetes::{
    JobOutcome, KubeCronJobSeed, KubeDeploymentSeed, KubeJobBehaviour, KubePodEnvState,
    KubePodState, KubeSecretSeed, KubeSecretState, KubeTokenSeed, KubernetesSnapshot,
    KubernetesState, RolloutOutcome,
};
pub use server::SimServer;
pub use signon::{
    GDS_SSO_CACHE, SignonAppCall, SignonAppSeed, SignonAppServerState, SignonAppState,
    SignonCreatedToken, SignonSnapshot, SignonState, SignonSyncedSecret, SignonTokenSeed,
    SignonTokenState, SignonUserSeed, SignonUserState, start_signon_app,
};
pub use zendesk::{
    ApiTokenSeed, ApiTokenState, InstallationSeed, InstallationState, OauthClientSeed,
    OauthClientState, OauthTokenSeed, OauthTokenState, SeededSecret, WebhookSeed, WebhookState,
    WebhookTestState, ZendeskSnapshot, ZendeskState, ZendeskUserSeed, ZendeskUserState,
};

/// The providers that can be simulated, as `keycycle sim <provider>` names them.
pub const PROVIDERS: [&str; 7] = [
    "demo",
    "github",
    "gitlab",
    "zendesk",
    "ibm-sm",
    "signon",
    "kubernetes",
];

/// Serves the simulator of `provider` (one of [`PROVIDERS`]) on
/// 127.0.0.1:`port` until Ctrl-C.
pub async fn serve_forever(provider: &str, port: u16) -> io::Result<()> {
    match provider {
        "demo" => serve_demo_forever(port).await,
        "github" => serve_github_forever(port).await,
        "gitlab" => serve_gitlab_forever(port).await,
        "zendesk" => serve_zendesk_forever(port).await,
        "ibm-sm" => serve_ibm_sm_forever(port).await,
        "signon" => serve_signon_forever(port).await,
        "kubernetes" => serve_kubernetes_forever(port).await,
        other => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "no simulator for provider {other:?}; choose one of: {}",
                PROVIDERS.join(", ")
            ),
        )),
    }
}

/// Starts the demo token service on 127.0.0.1:`port` (0 = any free port).
pub async fn start_demo(port: u16) -> io::Result<(SimServer, DemoState)> {
    let state = DemoState::new();
    let server = SimServer::spawn(demo::router(state.clone()), port)?;
    Ok((server, state))
}

/// Serves the demo token service on 127.0.0.1:`port` until Ctrl-C, printing
/// only the address it listens on.
pub async fn serve_demo_forever(port: u16) -> io::Result<()> {
    server::serve_forever(demo::router(DemoState::new()), port, "demo").await
}

/// Starts the GitHub simulator on 127.0.0.1:`port` (0 = any free port); its
/// REST API lives at the root, as at `https://api.github.com`.
pub async fn start_github(port: u16) -> io::Result<(SimServer, GitHubState)> {
    let state = GitHubState::new();
    let server = SimServer::spawn(github::router(state.clone()), port)?;
    Ok((server, state))
}

/// Serves the GitHub simulator on 127.0.0.1:`port` until Ctrl-C, printing
/// only the address it listens on. It starts empty: seed it through `/_sim/`.
pub async fn serve_github_forever(port: u16) -> io::Result<()> {
    server::serve_forever(github::router(GitHubState::new()), port, "github").await
}

/// Starts the GitLab simulator on 127.0.0.1:`port` (0 = any free port); its
/// API lives under `/api/v4`.
pub async fn start_gitlab(port: u16) -> io::Result<(SimServer, GitLabState)> {
    let state = GitLabState::new();
    let server = SimServer::spawn(gitlab::router(state.clone()), port)?;
    Ok((server, state))
}

/// Serves the GitLab simulator on 127.0.0.1:`port` until Ctrl-C, printing
/// only the address it listens on. It starts empty: seed it through `/_sim/`.
pub async fn serve_gitlab_forever(port: u16) -> io::Result<()> {
    server::serve_forever(gitlab::router(GitLabState::new()), port, "gitlab").await
}

/// Starts the Zendesk simulator on 127.0.0.1:`port` (0 = any free port);
/// its API lives under `/api/v2`, the grant endpoint at `/oauth/tokens`.
pub async fn start_zendesk(port: u16) -> io::Result<(SimServer, ZendeskState)> {
    let state = ZendeskState::new();
    let server = SimServer::spawn(zendesk::router(state.clone()), port)?;
    Ok((server, state))
}

/// Serves the Zendesk simulator on 127.0.0.1:`port` until Ctrl-C, printing
/// only the address it listens on. It starts empty: seed it through `/_sim/`.
pub async fn serve_zendesk_forever(port: u16) -> io::Result<()> {
    server::serve_forever(zendesk::router(ZendeskState::new()), port, "zendesk").await
}

/// Starts one IBM Secrets Manager instance (and IAM) on 127.0.0.1:`port`
/// (0 = any free port), in a new account; its API lives under `/api/v2`,
/// IAM's token endpoint at `/identity/token`. Start the account's other
/// instances with [`IbmSmState::start_instance`].
pub async fn start_ibm_sm(port: u16) -> io::Result<(SimServer, IbmSmState)> {
    let state = IbmSmState::new();
    let server = SimServer::spawn(ibm_sm::router(state.clone()), port)?;
    Ok((server, state))
}

/// Serves one IBM Secrets Manager instance and IAM on 127.0.0.1:`port`
/// until Ctrl-C, printing only the address it listens on. It starts empty:
/// seed it, and start the account's other instances, through `/_sim/`.
pub async fn serve_ibm_sm_forever(port: u16) -> io::Result<()> {
    server::serve_forever(ibm_sm::router(IbmSmState::new()), port, "ibm-sm").await
}

/// Starts the GOV.UK Signon simulator on 127.0.0.1:`port` (0 = any free
/// port); `/user.json` and `/metrics` live at the root.
pub async fn start_signon(port: u16) -> io::Result<(SimServer, SignonState)> {
    let state = SignonState::new();
    let server = SimServer::spawn(signon::router(state.clone()), port)?;
    Ok((server, state))
}

/// Serves the Signon simulator on 127.0.0.1:`port` until Ctrl-C, printing
/// only the address it listens on. It starts empty: seed it through `/_sim/`.
pub async fn serve_signon_forever(port: u16) -> io::Result<()> {
    server::serve_forever(signon::router(SignonState::new()), port, "signon").await
}

/// Starts the Kubernetes API server simulator on 127.0.0.1:`port` (0 = any
/// free port), over plain http with bearer service-account tokens.
pub async fn start_kubernetes(port: u16) -> io::Result<(SimServer, KubernetesState)> {
    let state = KubernetesState::new();
    let server = SimServer::spawn(kubernetes::router(state.clone()), port)?;
    Ok((server, state))
}

/// Serves the Kubernetes simulator on 127.0.0.1:`port` until Ctrl-C,
/// printing only the address it listens on. It starts empty: plant tokens
/// and objects through `/_sim/`.
pub async fn serve_kubernetes_forever(port: u16) -> io::Result<()> {
    server::serve_forever(
        kubernetes::router(KubernetesState::new()),
        port,
        "kubernetes",
    )
    .await
}

/// Starts the Kubernetes API server simulator over https on
/// 127.0.0.1:`port` (0 = any free port), with a certificate for
/// `127.0.0.1` and `localhost` from a CA generated now; returns the CA's
/// certificate (PEM) for clients to trust. kubectl sends a kubeconfig's
/// bearer token only over TLS, so this is how it authenticates with one.
pub async fn start_kubernetes_tls(port: u16) -> io::Result<(SimServer, KubernetesState, String)> {
    let state = KubernetesState::new();
    let (server, ca_pem) = SimServer::spawn_tls(kubernetes::router(state.clone()), port)?;
    Ok((server, state, ca_pem))
}

/// Serves the Kubernetes simulator over https on 127.0.0.1:`port` until
/// Ctrl-C, after writing its CA's certificate (PEM) to `ca_file`; then
/// prints only the address it listens on.
pub async fn serve_kubernetes_tls_forever(port: u16, ca_file: &std::path::Path) -> io::Result<()> {
    server::serve_forever_tls(
        kubernetes::router(KubernetesState::new()),
        port,
        "kubernetes",
        ca_file,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn unknown_provider_is_refused_with_the_list_of_known_ones() {
        let error = serve_forever("acme", 0).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
        assert!(
            error
                .to_string()
                .contains("demo, github, gitlab, zendesk, ibm-sm, signon, kubernetes")
        );
    }

    /// Serves `provider` on a free port and returns what a request to it
    /// answered. `serve_forever` binds the port itself, so the test can only
    /// name a port it found free a moment ago; another process may take it
    /// in between. Then `serve_forever` fails to bind, which the test sees,
    /// and it tries another port rather than failing or asking a stranger.
    async fn status_of_served(provider: &'static str) -> reqwest::StatusCode {
        const ATTEMPTS: usize = 5;
        const STARTUP: std::time::Duration = std::time::Duration::from_secs(30);
        for _ in 0..ATTEMPTS {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let serving = tokio::spawn(serve_forever(provider, port));
            let url = match provider {
                "demo" => format!("http://127.0.0.1:{port}/api/whoami"),
                "zendesk" => format!("http://127.0.0.1:{port}/api/v2/webhooks"),
                "github" => format!("http://127.0.0.1:{port}/user"),
                "ibm-sm" => format!("http://127.0.0.1:{port}/api/v2/secrets"),
                "signon" => format!("http://127.0.0.1:{port}/user.json"),
                "kubernetes" => {
                    format!("http://127.0.0.1:{port}/api/v1/namespaces/default/secrets")
                }
                _ => format!("http://127.0.0.1:{port}/api/v4/user"),
            };
            let deadline = tokio::time::Instant::now() + STARTUP;
            let answered = loop {
                if serving.is_finished() {
                    break None;
                }
                if let Ok(response) = reqwest::get(&url).await {
                    break Some(response.status());
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "{provider}: nothing answered on port {port} within {STARTUP:?}"
                );
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            };
            // An answer counts only while our server is still serving:
            // had it failed to bind, the answer came from someone else.
            let ours = !serving.is_finished();
            serving.abort();
            match (answered, ours) {
                (Some(status), true) => return status,
                _ => match serving.await {
                    Ok(Err(e)) if e.kind() == io::ErrorKind::AddrInUse => continue,
                    other => panic!("{provider}: serve_forever ended: {other:?}"),
                },
            }
        }
        panic!("{provider}: every one of {ATTEMPTS} free ports was taken before it could be bound")
    }

    #[tokio::test]
    async fn served_over_tls_the_ca_is_written_before_the_server_answers() {
        let dir = std::env::temp_dir().join(format!("kc-sim-tls-ca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca_file = dir.join("ca.pem");
        let mut answered = None;
        for _ in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let _ = std::fs::remove_file(&ca_file);
            let serving = tokio::spawn({
                let ca_file = ca_file.clone();
                async move { serve_kubernetes_tls_forever(port, &ca_file).await }
            });
            let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
            while !ca_file.exists() && !serving.is_finished() {
                assert!(tokio::time::Instant::now() < deadline, "no CA file written");
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            if serving.is_finished() {
                continue; // The port was taken meanwhile: try another.
            }
            let ca = std::fs::read_to_string(&ca_file).unwrap();
            let client = reqwest::Client::builder()
                .tls_built_in_root_certs(false)
                .add_root_certificate(reqwest::Certificate::from_pem(ca.as_bytes()).unwrap())
                .build()
                .unwrap();
            let status = client
                .get(format!(
                    "https://localhost:{port}/api/v1/namespaces/default/secrets"
                ))
                .send()
                .await
                .unwrap()
                .status();
            serving.abort();
            answered = Some(status);
            break;
        }
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(answered, Some(reqwest::StatusCode::UNAUTHORIZED));
    }

    #[tokio::test]
    async fn serve_forever_answers_on_the_loopback_port() {
        for provider in PROVIDERS {
            assert_eq!(
                status_of_served(provider).await,
                reqwest::StatusCode::UNAUTHORIZED,
                "{provider}"
            );
        }
    }
}
