//! The run's durable side: the state database, the per-run liveness file,
//! resume checks, and recording how a run ended.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, anyhow};
use keycycle_runbook::{ErrorKind, RunbookError};
use keycycle_store::state::{RunEvent, RunState, SqliteState, StateStore};

use crate::config::Config;
use crate::exit::Code;
use crate::run::Resume;
use keycycle_engine::journal::now_ms;

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

/// Who holds a run's lock file, written into it when the lock is taken so
/// a refusal can name the process instead of saying "another process".
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Holder {
    pub pid: u32,
    pub host: String,
    /// RFC 3339, UTC.
    pub since: String,
}

impl Holder {
    fn me() -> Holder {
        Holder {
            pid: std::process::id(),
            host: host(),
            since: keycycle_engine::journal::rfc3339(now_ms()),
        }
    }
}

/// An exclusive lock on `STATE_DIR/runs/RUN_ID.lock`, held for as long as
/// this value lives. The OS releases the lock when the process dies,
/// however it dies, which is how a resume, an abandon or an unlock tells a
/// dead run from a live one.
///
/// The file is removed when the value is dropped, while the lock is still
/// held; whoever takes the lock checks afterwards that the path still
/// names the file it locked (see [`hold_run_file`]), so a removal never
/// lets two processes both believe they hold it.
#[derive(Debug)]
pub struct RunFile {
    file: File,
    path: PathBuf,
}

impl Drop for RunFile {
    fn drop(&mut self) {
        // Only unlink the path if it is still this file: a file someone
        // put there by hand is not ours to remove.
        if same_file(&self.file, &self.path)
            && let Err(e) = std::fs::remove_file(&self.path)
        {
            tracing::debug!(target: "keycycle", "could not remove {}: {e}", self.path.display());
        }
        // The lock goes when `file` is closed, after the unlink.
    }
}

/// Whether `path` names the very file `file` has open (same device and
/// inode). False when the path is gone.
fn same_file(file: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(open), Ok(named)) => open.dev() == named.dev() && open.ino() == named.ino(),
        _ => false,
    }
}

/// The lock-file path of a run.
pub fn run_file_path(config: &Config, run_id: &str) -> PathBuf {
    config.state_dir.join("runs").join(format!("{run_id}.lock"))
}

/// Takes the run's lock file (see [`RunFile`]), or fails with
/// [`Code::Locked`] naming the process that holds it.
pub fn hold_run_file(config: &Config, run_id: &str) -> Result<RunFile> {
    let path = run_file_path(config, run_id);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create {}", dir.display()))
            .context(Code::Config)?;
    }
    // A holder that finishes unlinks the file while we wait on, or just
    // after we locked, the old one; a handful of rounds covers any number
    // of such races in practice, and more means something else is wrong.
    for _ in 0..16 {
        let mut file = File::options()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))
            .context(Code::Config)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(anyhow!(still_running(run_id, &mut file))).context(Code::Locked);
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(anyhow!("cannot lock {}: {e}", path.display())).context(Code::Config);
            }
        }
        if !same_file(&file, &path) {
            // The file was removed by the holder that just finished:
            // locking an unlinked file locks nothing anyone else sees.
            continue;
        }
        // Who holds it, for the message of whoever is refused.
        let holder = serde_json::to_string(&Holder::me())?;
        file.set_len(0)
            .and_then(|()| file.seek(SeekFrom::Start(0)))
            .and_then(|_| file.write_all(holder.as_bytes()))
            .with_context(|| format!("cannot write {}", path.display()))
            .context(Code::Config)?;
        return Ok(RunFile { file, path });
    }
    Err(anyhow!(
        "cannot take the lock file {} of run {run_id}: it kept being replaced while being locked; \
         check that nothing else removes files in {}",
        path.display(),
        path.parent()
            .map(Path::display)
            .map(|d| d.to_string())
            .unwrap_or_default()
    ))
    .context(Code::Config)
}

/// The refusal for a run whose lock file another process holds, naming
/// that process when it wrote itself into the file.
fn still_running(run_id: &str, file: &mut File) -> String {
    let mut text = String::new();
    let holder = file
        .read_to_string(&mut text)
        .ok()
        .and_then(|_| serde_json::from_str::<Holder>(&text).ok());
    match holder {
        Some(h) => format!(
            "run {run_id} is still running as process {} on host {} since {}; wait for it, or stop that process first",
            h.pid, h.host, h.since
        ),
        // It has just taken the lock and not written itself in yet.
        None => format!(
            "run {run_id} is still running in another process; wait for it, or stop that process first"
        ),
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
    if run.state == RunState::Rejected {
        return Err(anyhow!(
            "run {} ended at a rejected change request ({}); a decision is final, so start a new run for a new request",
            run.run_id,
            run.detail.as_deref().unwrap_or("no reason recorded")
        ))
        .context(Code::Rejected);
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
        // Waits for people, holding its locks; resumable once decided.
        Err(e) if e.kind == ErrorKind::AwaitingApproval => (
            Some(RunState::WaitingForApproval),
            Some(e.to_string()),
            false,
        ),
        Err(e) if e.kind == ErrorKind::Rejected => {
            (Some(RunState::Rejected), Some(e.to_string()), true)
        }
        Err(e) => (Some(RunState::Failed), Some(e.to_string()), true),
    };
    let result = (|| -> Result<(), keycycle_store::state::StateError> {
        crate::debug::abort_after(|| "end".to_owned());
        match (run_state, release) {
            // One write: a crash can leave neither a finished run holding
            // its locks (nothing would ever release them) nor a running
            // one without them.
            (Some(s), true) => {
                state.end_run(run_id, s, detail.as_deref())?;
            }
            (Some(s), false) => state.finish_run(run_id, s, detail.as_deref())?,
            (None, _) => {
                if let Some(d) = &detail {
                    state.append_event(
                        run_id,
                        &RunEvent {
                            at: now_ms(),
                            kind: "stopped".into(),
                            message: d.clone(),
                        },
                    )?;
                }
            }
        }
        Ok(())
    })();
    if let Err(e) = result {
        tracing::error!(target: "keycycle", "could not record the end of run {run_id}: {e}");
    }
}

pub use keycycle_engine::who::{host, user};
