//! The run's durable side: the state database, the per-run liveness file,
//! resume checks, and recording how a run ended.

use std::fs::File;
use std::sync::Arc;

use anyhow::{Context, Result, anyhow};
use keycycle_runbook::{ErrorKind, RunbookError};
use keycycle_store::state::{RunEvent, RunState, SqliteState, StateStore};

use crate::config::Config;
use crate::exit::Code;
use crate::journal::now_ms;
use crate::run::Resume;

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

/// Holds an exclusive lock on `STATE_DIR/runs/RUN_ID.lock` for as long as
/// the returned file lives. The OS releases it when the process dies,
/// however it dies, which is how a resume tells a dead run from a live one.
pub fn hold_run_file(config: &Config, run_id: &str) -> Result<File> {
    let dir = config.state_dir.join("runs");
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("cannot create {}", dir.display()))
        .context(Code::Config)?;
    let path = dir.join(format!("{run_id}.lock"));
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))
        .context(Code::Config)?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(anyhow!(
            "run {run_id} is still running in another process; wait for it to finish"
        ))
        .context(Code::Locked),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(anyhow!("cannot lock {}: {e}", path.display())).context(Code::Config)
        }
    }
}

/// A run may be resumed if it did not finish well and its runbook is the
/// one it started with (unless forced).
pub fn check_resumable(state: &dyn StateStore, resume: &Resume, hash: &str) -> Result<()> {
    let run = state
        .run(&resume.run_id)
        .context(Code::Config)?
        .ok_or_else(|| {
            anyhow!(
                "there is no run {}; list unfinished runs with `keycycle runs`",
                resume.run_id
            )
        })
        .context(Code::Config)?;
    if run.state == RunState::Succeeded {
        return Err(anyhow!(
            "run {} already succeeded; there is nothing to resume",
            run.run_id
        ))
        .context(Code::Config);
    }
    if run.runbook_sha256 != hash {
        if !resume.force {
            return Err(anyhow!(
                "the runbook {} changed since run {} started, so replaying its journal could do something else than the run began; \
                 check the change, then pass --force to resume anyway",
                run.runbook_path, run.run_id
            ))
            .context(Code::Config);
        }
        tracing::warn!(target: "keycycle", "resuming run {} although its runbook changed (--force)", run.run_id);
    }
    if run.state.is_finished() {
        // A run that stopped for an operator, or failed, is running again.
        state
            .finish_run(&run.run_id, RunState::Running, None)
            .context(Code::Config)?;
    }
    let _ = state.append_event(
        &run.run_id,
        &RunEvent {
            at: now_ms(),
            kind: "resumed".into(),
            message: format!(
                "resumed by {}@{}{}{}",
                user(),
                host(),
                if resume.force {
                    ", forced past a changed runbook"
                } else {
                    ""
                },
                if resume.retry_in_flight {
                    ", retrying the call in flight"
                } else {
                    ""
                }
            ),
        },
    );
    Ok(())
}

/// Records how the run ended and releases its locks, except when the run
/// must be resumed: a run that stopped for an answer or for an operator
/// keeps its locks, because a double rotation is worse than a wait.
pub fn record_end(
    state: &dyn StateStore,
    run_id: &str,
    outcome: &Result<keycycle_contract::Value, RunbookError>,
) {
    let (run_state, detail, release) = match outcome {
        Ok(_) => (Some(RunState::Succeeded), None, true),
        Err(e) if e.kind == ErrorKind::Interrupted => {
            (Some(RunState::NeedsAttention), Some(e.to_string()), false)
        }
        // Still resumable: the answer can be given to `keycycle resume`.
        Err(e) if e.kind == ErrorKind::MissingInput => (None, Some(e.to_string()), false),
        Err(e) => (Some(RunState::Failed), Some(e.to_string()), true),
    };
    let result = (|| -> Result<(), keycycle_store::state::StateError> {
        if let Some(s) = run_state {
            state.finish_run(run_id, s, detail.as_deref())?;
        } else if let Some(d) = &detail {
            state.append_event(
                run_id,
                &RunEvent {
                    at: now_ms(),
                    kind: "stopped".into(),
                    message: d.clone(),
                },
            )?;
        }
        if release {
            state.release_run_locks(run_id)?;
        }
        Ok(())
    })();
    if let Err(e) = result {
        tracing::error!(target: "keycycle", "could not record the end of run {run_id}: {e}");
    }
}

pub fn user() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| format!("uid {}", rustix::process::getuid().as_raw()))
}

pub fn host() -> String {
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned()
}
