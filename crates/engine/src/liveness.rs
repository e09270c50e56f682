//! The per-run lock file that tells a live run from a dead one:
//! `RUNS_DIR/RUN_ID.lock`, held exclusively while the run's process lives.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::journal::{now_ms, rfc3339};
use crate::who::host;

/// The run's lock file could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LivenessError {
    /// Another process holds it: the run is alive.
    #[error("{0}")]
    Running(String),
    #[error("cannot {what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "cannot take the lock file {} of run {run_id}: it kept being replaced while being locked; \
         check that nothing else removes files in {}",
        path.display(),
        path.parent().map(Path::display).map(|d| d.to_string()).unwrap_or_default()
    )]
    Replaced { run_id: String, path: PathBuf },
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
            since: rfc3339(now_ms()),
        }
    }
}

/// An exclusive lock on `RUNS_DIR/RUN_ID.lock`, held for as long as this
/// value lives. The OS releases the lock when the process dies, however it
/// dies, which is how a resume, an abandon or an unlock tells a dead run
/// from a live one.
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
pub fn run_file_path(runs_dir: &Path, run_id: &str) -> PathBuf {
    runs_dir.join(format!("{run_id}.lock"))
}

/// Takes the run's lock file (see [`RunFile`]), or fails with
/// [`LivenessError::Running`] naming the process that holds it.
pub fn hold_run_file(runs_dir: &Path, run_id: &str) -> Result<RunFile, LivenessError> {
    let path = run_file_path(runs_dir, run_id);
    let io = |what: &'static str, path: &Path| {
        let path = path.to_owned();
        move |source| LivenessError::Io { what, path, source }
    };
    std::fs::create_dir_all(runs_dir).map_err(io("create", runs_dir))?;
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
            .map_err(io("open", &path))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(LivenessError::Running(still_running(run_id, &mut file)));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io("lock", &path)(e)),
        }
        if !same_file(&file, &path) {
            // The file was removed by the holder that just finished:
            // locking an unlinked file locks nothing anyone else sees.
            continue;
        }
        // Who holds it, for the message of whoever is refused.
        let holder = serde_json::to_string(&Holder::me()).unwrap_or_default();
        file.set_len(0)
            .and_then(|()| file.seek(SeekFrom::Start(0)))
            .and_then(|_| file.write_all(holder.as_bytes()))
            .map_err(io("write", &path))?;
        return Ok(RunFile { file, path });
    }
    Err(LivenessError::Replaced {
        run_id: run_id.to_owned(),
        path,
    })
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
