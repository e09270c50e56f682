//! The per-run lock file that tells a live run from a dead one:
//! `RUNS_DIR/RUN_ID.lock`, held exclusively while the run's process lives.
//! When runners share their state ([`share_liveness`], PostgreSQL), the
//! run also holds a lease in that state, renewed while it lives, so a
//! runner on another host, which cannot see the file, sees the run alive
//! until the lease runs out.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, mpsc};
use std::thread::JoinHandle;
use std::time::Duration;

use keycycle_store::state::{LeaseAttempt, RunLease, StateError, StateStore};
use sha2::Digest as _;

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
    /// The shared state could not record the run's lease.
    #[error("cannot take the lease of run {run_id} in the shared state: {source}")]
    Lease {
        run_id: String,
        // Boxed: the store's errors are large, and this one is rare.
        #[source]
        source: Box<StateError>,
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
    /// The run's lease in the shared state, when runners share one; held
    /// for its renewals and given up when dropped.
    _lease: Option<Lease>,
}

/// How long a run's lease lasts without renewal, by default. A runner that
/// dies is seen dead by other hosts this long after its last renewal.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);

/// The state runners share, and how long a lease lasts in it.
static SHARED: OnceLock<(Arc<dyn StateStore>, Duration)> = OnceLock::new();

/// Runs of this process take a lease in `state` too (see the module
/// documentation), lasting `lease` unless renewed; they renew it every
/// third of that. Called once, when the shared state is opened; later
/// calls change nothing.
pub fn share_liveness(state: Arc<dyn StateStore>, lease: Duration) {
    let _ = SHARED.set((state, lease));
}

/// A thread that does `work` again and again until dropped: first after
/// `first`, then after whatever wait `work` returns, or never again when it
/// returns `None`. Renewals of leases and claims run on it.
pub struct Periodic {
    /// Closed to stop the thread.
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Periodic {
    pub fn start(
        name: &str,
        first: Duration,
        mut work: impl FnMut() -> Option<Duration> + Send + 'static,
    ) -> std::io::Result<Periodic> {
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                let mut wait = first;
                while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(wait) {
                    match work() {
                        Some(next) => wait = next,
                        None => return,
                    }
                }
            })?;
        Ok(Periodic {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for Periodic {
    /// Stops the thread and waits for it, so nothing runs after the drop.
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A run's lease in the shared state, renewed by a thread while held and
/// given up when dropped.
struct Lease {
    state: Arc<dyn StateStore>,
    run_id: String,
    holder: String,
    renewer: Option<Periodic>,
}

impl Lease {
    fn take(
        state: &Arc<dyn StateStore>,
        ttl: Duration,
        run_id: &str,
    ) -> Result<Lease, LivenessError> {
        let pid = std::process::id();
        let host = host();
        let holder = format!(
            "{host}:{pid}:{}:{:08x}",
            process_space(),
            rand::random::<u32>()
        );
        let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
        let now = now_ms();
        let lease = RunLease {
            run_id: run_id.to_owned(),
            holder: holder.clone(),
            host,
            pid,
            lease_until: now.saturating_add(ttl_ms),
        };
        let lease_error = |source| LivenessError::Lease {
            run_id: run_id.to_owned(),
            source: Box::new(source),
        };
        let mut attempt = state.take_run_lease(&lease, now).map_err(lease_error)?;
        if let LeaseAttempt::HeldBy(l) = &attempt
            && holder_is_dead(l)
        {
            // Its holder died on this machine: no need to wait for the
            // lease to run out. Taken only if nobody renewed or took it
            // since it was read.
            tracing::info!(target: "keycycle", "run {run_id}: process {} that held it on this host is gone; taking its lease over", l.pid);
            attempt = state.take_over_run_lease(&lease, l).map_err(lease_error)?;
        }
        match attempt {
            LeaseAttempt::Taken => {}
            LeaseAttempt::HeldBy(l) => {
                return Err(LivenessError::Running(format!(
                    "run {run_id} is still running as process {} on host {}: its lease in the \
                     shared state runs until {} and is renewed while it runs; wait for it, or \
                     stop that process and wait for the lease to run out",
                    l.pid,
                    l.host,
                    rfc3339(l.lease_until)
                )));
            }
        }
        let valid = Arc::new(AtomicI64::new(lease.lease_until));
        fences().insert(run_id.to_owned(), (valid.clone(), ttl_ms));
        let renewer = {
            let (state, run, holder) = (state.clone(), run_id.to_owned(), holder.clone());
            // Renewing every third of the lease leaves two chances to get
            // through before it runs out; after a failure the next try
            // comes sooner.
            Periodic::start("keycycle-lease", ttl / 3, move || {
                // The lease counts from before the request: an answer that
                // took long must not stretch it.
                let until = now_ms().saturating_add(ttl_ms);
                match state.renew_run_lease(&run, &holder, until) {
                    Ok(()) => {
                        valid.store(until, Ordering::Release);
                        Some(ttl / 3)
                    }
                    Err(e @ StateError::RunLeaseLost { .. }) => {
                        stop_process(&run, &format!("{e}"));
                    }
                    Err(e) => {
                        let until = valid.load(Ordering::Acquire);
                        if now_ms() >= until.saturating_sub(margin(ttl_ms)) {
                            stop_process(
                                &run,
                                &format!(
                                    "its lease in the shared state could not be renewed \
                                     and runs out at {} ({e})",
                                    rfc3339(until)
                                ),
                            );
                        }
                        tracing::warn!(target: "keycycle", "could not renew the lease of run {run}: {e}; trying again");
                        Some(ttl / 10)
                    }
                }
            })
            .map_err(|source| LivenessError::Io {
                what: "start the lease renewal of",
                path: PathBuf::from(run_id),
                source,
            })?
        };
        Ok(Lease {
            state: state.clone(),
            run_id: run_id.to_owned(),
            holder,
            renewer: Some(renewer),
        })
    }
}

/// The end of each leased run's lease as last renewed, and the lease's
/// length, by run id.
type Fences = std::collections::HashMap<String, (Arc<AtomicI64>, i64)>;

fn fences() -> std::sync::MutexGuard<'static, Fences> {
    static FENCES: OnceLock<Mutex<Fences>> = OnceLock::new();
    FENCES
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner())
}

/// How long before its lease runs out a run stops: the time the last
/// request it sent may still take to arrive.
fn margin(ttl_ms: i64) -> i64 {
    ttl_ms / 6
}

/// Checked before every externally visible effect of run `run_id`: when
/// its lease (if it has one) is about to run out unrenewed, another runner
/// may soon resume the run, so this process stops instead of acting for
/// it. A process that was frozen (a stopped container, a suspended VM)
/// meets this before it sends anything, even if its renewal thread has
/// not run yet.
pub fn fence(run_id: &str) {
    let Some((valid, ttl_ms)) = fences().get(run_id).cloned() else {
        return;
    };
    let until = valid.load(Ordering::Acquire);
    if now_ms() >= until.saturating_sub(margin(ttl_ms)) {
        stop_process(
            run_id,
            &format!(
                "its lease in the shared state was last renewed until {}",
                rfc3339(until)
            ),
        );
    }
}

/// Ends the process at once, as a crash would: another runner may take
/// run `run_id` over, and two processes must never act for one run. The
/// journal makes the stop as safe as any crash; the run stays unfinished,
/// holding its locks, for `keycycle resume`.
fn stop_process(run_id: &str, why: &str) -> ! {
    tracing::error!(
        target: "keycycle",
        "stopping: run {run_id} may no longer be this process's: {why}. Nothing more is sent \
         for it; it stays unfinished, and `keycycle resume {run_id}` on any runner finishes it \
         once its lease has run out"
    );
    std::process::exit(LEASE_LOST_EXIT);
}

/// The exit code of a process that stopped because a run's lease was lost:
/// the run is alive elsewhere, or may be soon.
const LEASE_LOST_EXIT: i32 = 8;

/// Which processes a pid names: this boot of this machine, in this pid
/// namespace. A lease holder with the same space and a pid that does not
/// exist is dead. Two containers may share a host name and still not see
/// each other's processes, which the namespace tells apart.
fn process_space() -> &'static str {
    static SPACE: OnceLock<String> = OnceLock::new();
    SPACE.get_or_init(|| {
        let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
        let ns = std::fs::read_link("/proc/self/ns/pid").unwrap_or_default();
        let (boot, ns) = (boot.trim(), ns.to_string_lossy());
        if boot.is_empty() || ns.is_empty() {
            // Unknown: no other holder is ever judged dead from here.
            return "unknown".to_owned();
        }
        let digest = sha2::Sha256::digest(format!("{boot}\0{ns}").as_bytes());
        hex::encode(&digest[..8])
    })
}

/// Whether the lease's holder is a process of this machine's boot and pid
/// namespace that no longer exists. A reused pid keeps it "alive", which
/// only means waiting for the lease to run out.
fn holder_is_dead(lease: &RunLease) -> bool {
    let mut parts = lease.holder.rsplitn(3, ':');
    let (_random, space) = (parts.next(), parts.next());
    let mine = process_space();
    if space != Some(mine) || mine == "unknown" || lease.host != host() {
        return false;
    }
    let Some(pid) = i32::try_from(lease.pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    else {
        return false;
    };
    matches!(
        rustix::process::test_kill_process(pid),
        Err(rustix::io::Errno::SRCH)
    )
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("run_id", &self.run_id)
            .field("holder", &self.holder)
            .finish_non_exhaustive()
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        fences().remove(&self.run_id);
        // Stopped before the lease is given up, so no renewal follows.
        drop(self.renewer.take());
        // A lease that cannot be given up runs out by itself.
        if let Err(e) = self.state.drop_run_lease(&self.run_id, &self.holder) {
            tracing::warn!(target: "keycycle", "could not give up the lease of run {}: {e}", self.run_id);
        }
    }
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
fn run_file_path(runs_dir: &Path, run_id: &str) -> PathBuf {
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
        // The file says this host's processes may not run it; the lease
        // says so to the other hosts' too.
        let lease = match SHARED.get() {
            Some((state, ttl)) => Some(Lease::take(state, *ttl, run_id)?),
            None => None,
        };
        return Ok(RunFile {
            file,
            path,
            _lease: lease,
        });
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
