//! `keycycle sim`: serve a provider simulator so operators can rehearse a
//! runbook before pointing it at production.

use anyhow::{Context, Result};
use clap::ValueEnum;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Provider {
    /// The demo token service the example plugin talks to
    Demo,
    /// GitLab's REST API: access tokens, triggers, CI/CD variables, webhooks
    Gitlab,
}

pub async fn serve(provider: Provider, port: u16) -> Result<()> {
    match provider {
        Provider::Demo => keycycle_sim::serve_demo_forever(port)
            .await
            .context("the demo simulator stopped"),
        Provider::Gitlab => keycycle_sim::serve_gitlab_forever(port)
            .await
            .context("the GitLab simulator stopped"),
    }
}
