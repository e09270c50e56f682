//! Where the config puts a run's durable side: the state database (the
//! local `state.db`, or PostgreSQL) and the folder of the runs' lock files.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
pub use keycycle_engine::liveness::RunFile;
use keycycle_engine::liveness::{self, LivenessError};
use keycycle_store::state::{PgOptions, PostgresState, SqliteState, StateStore};
use zeroize::Zeroizing;

use crate::config::{Config, StateLocation};
use crate::exit::Code;

/// Chooses the in-memory state for benchmarks that compare journaling on
/// disk with journaling in memory. Nothing survives the process with it,
/// so it is not a configuration option.
pub const STATE_BACKEND_ENV: &str = "KEYCYCLE_STATE_BACKEND";

/// The PostgreSQL password's variables, in the order they are read: ours,
/// then libpq's.
pub const STATE_PASSWORD_ENV: [&str; 2] = ["KEYCYCLE_STATE_PASSWORD", "PGPASSWORD"];

/// The state database: `STATE_DIR/state.db`, or the PostgreSQL database
/// `state` names.
pub fn open_state(config: &Config) -> Result<Arc<dyn StateStore>> {
    if std::env::var(STATE_BACKEND_ENV).is_ok_and(|v| v == "memory") {
        tracing::warn!(target: "keycycle", "{STATE_BACKEND_ENV}=memory: the journal is kept in memory and a crash loses it");
        return Ok(Arc::new(keycycle_store::state::MemoryState::new()));
    }
    if let StateLocation::Postgres { url, password_file } = &config.state {
        let state: Arc<dyn StateStore> = Arc::new(open_postgres(url, password_file.as_deref())?);
        // Runners on other hosts cannot see this host's run lock files:
        // runs hold a lease in the shared state too.
        liveness::share_liveness(state.clone(), run_lease());
        return Ok(state);
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

/// Connects to the PostgreSQL state database (and applies its
/// migrations). Messages name it by its URL, which holds no password.
pub fn open_postgres(url: &str, password_file: Option<&std::path::Path>) -> Result<PostgresState> {
    let password = state_password(password_file).context(Code::Config)?;
    let options = PgOptions::new(url, password.map(|p| p.to_string()));
    PostgresState::open(&options)
        .with_context(|| format!("cannot open the state database {}", options.display()))
        .context(Code::Config)
}

/// Debug builds only: how long a run's lease lasts, in milliseconds, so a
/// test sees a dead runner's lease run out in a second or two.
#[cfg(debug_assertions)]
pub const RUN_LEASE_ENV: &str = "KEYCYCLE_DEBUG_RUN_LEASE_MS";

/// How long a run's lease in the shared state lasts without renewal.
fn run_lease() -> std::time::Duration {
    #[cfg(debug_assertions)]
    if let Some(ms) = std::env::var(RUN_LEASE_ENV)
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        return std::time::Duration::from_millis(ms);
    }
    liveness::DEFAULT_LEASE
}

/// The PostgreSQL password: `KEYCYCLE_STATE_PASSWORD`, else `PGPASSWORD`,
/// else the first line of `state_password_file`, which only its owner may
/// read (as libpq asks of `.pgpass`). Never from the command line, where
/// any user's `ps` shows it.
fn state_password(file: Option<&std::path::Path>) -> Result<Option<Zeroizing<String>>> {
    for var in STATE_PASSWORD_ENV {
        // Taken out of the environment at start (see `hardening`).
        if let Some(value) = crate::hardening::env_credential(var).filter(|v| !v.is_empty()) {
            return Ok(Some(value));
        }
    }
    let Some(file) = file else {
        return Ok(None);
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(file)
            .with_context(|| format!("cannot read state_password_file {}", file.display()))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            anyhow::bail!(
                "state_password_file {} may be read by others (mode {:o}); make it the owner's \
                 alone with `chmod 600 {}`",
                file.display(),
                mode & 0o777,
                file.display()
            );
        }
    }
    let text = Zeroizing::new(
        std::fs::read_to_string(file)
            .with_context(|| format!("cannot read state_password_file {}", file.display()))?,
    );
    let line = text.lines().next().unwrap_or_default();
    if line.is_empty() {
        anyhow::bail!("state_password_file {} is empty", file.display());
    }
    Ok(Some(Zeroizing::new(line.to_owned())))
}

/// The state database for a command that only reads it: `None` when there
/// is none yet, which is not created (a read must not leave state behind,
/// nor make a missing folder look like an empty history). A PostgreSQL
/// database is always there: it is opened.
pub fn open_existing_state(config: &Config) -> Result<Option<Arc<dyn StateStore>>> {
    if std::env::var(STATE_BACKEND_ENV).is_ok_and(|v| v == "memory")
        || matches!(config.state, StateLocation::Postgres { .. })
    {
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
