//! `keycycle sim`: serve a provider simulator so operators can rehearse a
//! runbook before pointing it at production.

use anyhow::{Context, Result};
use clap::ValueEnum;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Provider {
    /// The demo token service the example plugin talks to
    Demo,
}

pub async fn serve(provider: Provider, port: u16) -> Result<()> {
    match provider {
        Provider::Demo => keycycle_sim::serve_demo_forever(port)
            .await
            .context("the demo simulator stopped"),
    }
}
