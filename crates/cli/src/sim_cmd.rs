//! `keycycle sim`: serve a provider simulator so operators can rehearse a
//! runbook before pointing it at production.

use std::path::PathBuf;

use anyhow::{Context, Result, anyhow};

use crate::exit::Code;
use clap::{Args, ValueEnum};

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

/// How the simulator is served: plain http unless a CA file is named.
#[derive(Debug, Clone, Default, Args)]
pub struct TlsOptions {
    /// Serve https with a certificate for 127.0.0.1 and localhost from a CA
    /// made at start-up, and write that CA's certificate (PEM) to FILE
    /// before printing the address (kubernetes only: kubectl sends a
    /// kubeconfig's token only over TLS)
    #[arg(long, value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
}

pub async fn serve(provider: Provider, port: u16, tls: TlsOptions) -> Result<()> {
    if let Some(ca_file) = &tls.tls_ca {
        if provider != Provider::Kubernetes {
            return Err(anyhow!(
                "--tls-ca is only offered by the kubernetes simulator; serve {} without it",
                provider
                    .to_possible_value()
                    .map_or_else(String::new, |v| v.get_name().to_owned())
            ))
            .context(Code::Config);
        }
        let served = keycycle_sim::serve_kubernetes_tls_forever(port, ca_file).await;
        return finished(served, port, "Kubernetes");
    }
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
    finished(served, port, name)
}

fn finished(served: std::io::Result<()>, port: u16, name: &str) -> Result<()> {
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
