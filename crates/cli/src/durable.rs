//! Where the config puts a run's durable side: the state database and the
//! folder of the runs' lock files.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
pub use keycycle_engine::liveness::RunFile;
use keycycle_engine::liveness::{self, LivenessError};
use keycycle_store::state::{SqliteState, StateStore};

use crate::config::Config;
use crate::exit::Code;

/// Chooses the in-memory state for benchmarks that compare journaling on
/// disk with journaling in memory. Nothing survives the process with it,
/// so it is not a configuration option.
pub const STATE_BACKEND_ENV: &str = "KEYCYCLE_STATE_BACKEND";

/// The state database: `STATE_DIR/state.db`.
pub fn open_state(config: &Config) -> Result<Arc<dyn StateStore>> {
    if std::env::var(STATE_BACKEND_ENV).is_ok_and(|v| v == "memory") {
        tracing::warn!(target: "keycycle", "{STATE_BACKEND_ENV}=memory: the journal is kept in memory and a crash loses it");
        return Ok(Arc::new(keycycle_store::state::MemoryState::new()));
    }
    let path = config.state_dir.join("state.db");
    if !config.state_dir.exists() {
        // Say it: a typo in state_dir, or a command run from the wrong
        // folder, would otherwise start a new history and hide the locks
        // and unfinished runs of the real one.
        tracing::warn!(target: "keycycle", "creating a new state folder {} (none was there)", config.state_dir.display());
    } else if std::fs::metadata(&path).is_ok_and(|m| m.len() == 0) {
        tracing::warn!(target: "keycycle", "{} is empty (0 bytes); it is set up as a new state database, and no earlier runs, locks or deferred actions are in it", path.display());
    }
    let state = SqliteState::open(&path)
        .with_context(|| format!("cannot open the state database {}", path.display()))
        .context(Code::Config)?;
    Ok(Arc::new(state))
}

/// The state database for a command that only reads it: `None` when there
/// is none yet, which is not created (a read must not leave state behind,
/// nor make a missing folder look like an empty history).
pub fn open_existing_state(config: &Config) -> Result<Option<Arc<dyn StateStore>>> {
    if std::env::var(STATE_BACKEND_ENV).is_ok_and(|v| v == "memory") {
        return open_state(config).map(Some);
    }
    let path = config.state_dir.join("state.db");
    if !path.is_file() {
        tracing::info!(target: "keycycle", "no state database at {}: nothing has run with this state folder yet", path.display());
        return Ok(None);
    }
    open_state(config).map(Some)
}

/// Takes a run's lock file (see [`RunFile`]): refused with [`Code::Locked`]
/// while the run's process lives.
pub fn hold_run_file(config: &Config, run_id: &str) -> Result<RunFile> {
    liveness::hold_run_file(&runs_dir(config), run_id).map_err(|e| {
        let code = match e {
            LivenessError::Running(_) => Code::Locked,
            _ => Code::Config,
        };
        anyhow::Error::new(e).context(code)
    })
}

/// The folder of the runs' lock files.
pub fn runs_dir(config: &Config) -> PathBuf {
    config.state_dir.join("runs")
}

pub use keycycle_engine::who::{host, user};
