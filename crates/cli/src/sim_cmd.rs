//! `keycycle sim`: serve a provider simulator so operators can rehearse a
//! runbook before pointing it at production.

use anyhow::{Context, Result, anyhow};

use crate::exit::Code;
use clap::ValueEnum;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Provider {
    /// The demo token service the example plugin talks to
    Demo,
    /// GitHub's REST API: personal access tokens, Actions secrets
    Github,
    /// GitLab's REST API: access tokens, triggers, CI/CD variables, webhooks
    Gitlab,
    /// Zendesk: API tokens, OAuth clients and tokens, app installations, webhooks
    Zendesk,
    /// IBM Cloud Secrets Manager v2 and IAM: one instance; start the
    /// account's other instances with POST /_sim/instances
    IbmSm,
    /// GOV.UK Signon: API users' application tokens, /user.json as gds-sso
    /// calls it, the token-expiry gauge
    Signon,
    /// A Kubernetes API server: Secrets, CronJobs, Jobs, Deployments
    Kubernetes,
}

pub async fn serve(provider: Provider, port: u16) -> Result<()> {
    let (served, name) = match provider {
        Provider::Demo => (keycycle_sim::serve_demo_forever(port).await, "demo"),
        Provider::Github => (keycycle_sim::serve_github_forever(port).await, "GitHub"),
        Provider::Gitlab => (keycycle_sim::serve_gitlab_forever(port).await, "GitLab"),
        Provider::Zendesk => (keycycle_sim::serve_zendesk_forever(port).await, "Zendesk"),
        Provider::IbmSm => (
            keycycle_sim::serve_ibm_sm_forever(port).await,
            "IBM Secrets Manager",
        ),
        Provider::Signon => (keycycle_sim::serve_signon_forever(port).await, "Signon"),
        Provider::Kubernetes => (
            keycycle_sim::serve_kubernetes_forever(port).await,
            "Kubernetes",
        ),
    };
    match served {
        Ok(()) => Ok(()),
        // A port that is taken is the operator's to fix: a usage mistake
        // (exit 3) with the way out, not an internal error.
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => Err(anyhow!(
            "cannot listen on 127.0.0.1:{port}: {e}; pick another port with --port, or --port 0 for a free one"
        ))
        .context(Code::Config),
        Err(e) => Err(e).with_context(|| format!("the {name} simulator stopped")),
    }
}
