//! Group commit: many callers, in any number of threads, share one fsync.
//!
//! A commit is counted ([`GroupCommit::committed`]) once its bytes are in
//! the file, whether or not they are on disk yet. A caller that needs its
//! commits durable asks for a barrier up to the count it saw
//! ([`GroupCommit::sync_through`]). One caller at a time, the leader, runs
//! the fsync; it covers every commit counted before it started. Callers
//! that arrive while it runs wait for it, and if it did not cover them,
//! one of them leads the next fsync for all of them. So however many runs
//! of a process journal at once, a barrier costs at most two fsyncs of
//! waiting, and usually shares one.
//!
//! The count is per database file and per process (handles on one file
//! share it through [`GroupCommit::for_file`]), since `keycycle rotate`
//! opens one handle per run. Other processes' commits are not counted:
//! they make their own barriers, and an fsync of ours that happens to cover
//! them does no harm.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, Weak};

/// The group commit of one database file in this process.
#[derive(Debug, Default)]
pub(super) struct GroupCommit {
    progress: Mutex<Progress>,
    /// Signalled when a leader's fsync ends, well or badly.
    turn: Condvar,
}

#[derive(Debug, Default)]
struct Progress {
    /// Commits counted so far.
    committed: u64,
    /// Every commit up to this count is durable.
    synced: u64,
    /// An fsync is under way.
    leading: bool,
    /// Fsyncs run, for tests and benchmarks.
    fsyncs: u64,
}

/// Which file a group commit belongs to: the same inode whatever path
/// named it.
type FileId = (u64, u64);

impl GroupCommit {
    /// The group commit of the file `file` is open on, shared by every
    /// handle of this process on that file.
    pub(super) fn for_file(file: &File) -> io::Result<Arc<GroupCommit>> {
        static GROUPS: OnceLock<Mutex<HashMap<FileId, Weak<GroupCommit>>>> = OnceLock::new();
        let id = file_id(file)?;
        let mut groups = GROUPS
            .get_or_init(Mutex::default)
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        // Forget the files no handle has open any more.
        groups.retain(|_, group| group.strong_count() > 0);
        if let Some(group) = groups.get(&id).and_then(Weak::upgrade) {
            return Ok(group);
        }
        let group = Arc::new(GroupCommit::default());
        groups.insert(id, Arc::downgrade(&group));
        Ok(group)
    }

    fn progress(&self) -> MutexGuard<'_, Progress> {
        // The counters are changed in single statements; a panic elsewhere
        // cannot leave them half-updated.
        self.progress.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts a commit whose bytes are in the file now; returns the count
    /// a barrier must reach to cover it.
    pub(super) fn committed(&self) -> u64 {
        let mut progress = self.progress();
        progress.committed += 1;
        progress.committed
    }

    /// The count a barrier must reach to cover every commit so far.
    pub(super) fn current(&self) -> u64 {
        self.progress().committed
    }

    /// Fsyncs run so far.
    #[cfg(test)]
    pub(super) fn fsyncs(&self) -> u64 {
        self.progress().fsyncs
    }

    /// Returns once every commit up to `ticket` is durable: at once if an
    /// fsync already covered it; after the fsync under way if that covers
    /// it; otherwise after an fsync this caller or another waiting one
    /// leads with `fsync`. An fsync that fails fails its leader only; a
    /// caller that waited for it tries again itself.
    pub(super) fn sync_through<E>(
        &self,
        ticket: u64,
        fsync: impl FnOnce() -> Result<(), E>,
    ) -> Result<(), E> {
        let mut progress = self.progress();
        loop {
            if progress.synced >= ticket {
                return Ok(());
            }
            if !progress.leading {
                break;
            }
            progress = self.turn.wait(progress).unwrap_or_else(|p| p.into_inner());
        }
        // Lead: everything counted now is in the file, so the fsync about
        // to run covers it, and whoever arrives meanwhile waits for it.
        progress.leading = true;
        let covers = progress.committed;
        drop(progress);
        let result = fsync();
        let mut progress = self.progress();
        progress.leading = false;
        progress.fsyncs += 1;
        if result.is_ok() {
            progress.synced = progress.synced.max(covers);
        }
        drop(progress);
        self.turn.notify_all();
        result
    }
}

#[cfg(unix)]
fn file_id(file: &File) -> io::Result<FileId> {
    use std::os::unix::fs::MetadataExt;
    let meta = file.metadata()?;
    Ok((meta.dev(), meta.ino()))
}

#[cfg(not(unix))]
fn file_id(file: &File) -> io::Result<FileId> {
    // No inode numbers to go by: every handle gets its own group, which is
    // correct, only shares less.
    let _ = file;
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    Ok((0, NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Barrier;
    use std::time::Duration;

    #[test]
    fn a_barrier_with_nothing_new_to_cover_runs_no_fsync() {
        let group = GroupCommit::default();
        let fsync = || Ok::<(), ()>(());
        group.sync_through(group.current(), fsync).unwrap();
        assert_eq!(group.fsyncs(), 0, "nothing was committed");
        let ticket = group.committed();
        group.sync_through(ticket, fsync).unwrap();
        group.sync_through(ticket, fsync).unwrap();
        assert_eq!(group.fsyncs(), 1, "the second barrier was covered");
    }

    #[test]
    fn barriers_asked_during_an_fsync_share_the_next_one() {
        const CALLERS: usize = 8;
        let group = GroupCommit::default();
        let started = Barrier::new(CALLERS + 1);
        // The first leader's fsync is slow; every other caller commits and
        // asks for its barrier while it runs.
        let first = group.committed();
        let (group, started) = (&group, &started);
        std::thread::scope(|s| {
            s.spawn(move || {
                group
                    .sync_through(first, || {
                        started.wait();
                        std::thread::sleep(Duration::from_millis(200));
                        Ok::<(), ()>(())
                    })
                    .unwrap()
            });
            for _ in 0..CALLERS {
                s.spawn(move || {
                    // Committed once the first fsync is under way, so it
                    // cannot cover them (committing before it started
                    // would let it cover everyone, with one fsync).
                    started.wait();
                    let ticket = group.committed();
                    group
                        .sync_through(ticket, || {
                            std::thread::sleep(Duration::from_millis(20));
                            Ok::<(), ()>(())
                        })
                        .unwrap()
                });
            }
        });
        assert_eq!(
            group.fsyncs(),
            2,
            "the first fsync, then one for the {CALLERS} callers that came during it"
        );
    }

    #[test]
    fn a_failed_fsync_covers_nothing_and_the_next_caller_tries_again() {
        let group = GroupCommit::default();
        let ticket = group.committed();
        assert_eq!(
            group.sync_through(ticket, || Err("disk full")),
            Err("disk full")
        );
        let mut ran = false;
        group
            .sync_through(ticket, || {
                ran = true;
                Ok::<(), &str>(())
            })
            .unwrap();
        assert!(
            ran,
            "the commit was not durable yet, so the barrier ran an fsync"
        );
    }

    #[cfg(unix)]
    #[test]
    fn handles_on_one_file_share_one_group() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let a = File::create(&path).unwrap();
        let b = File::open(&path).unwrap();
        let other = File::create(dir.path().join("g")).unwrap();
        let ga = GroupCommit::for_file(&a).unwrap();
        let gb = GroupCommit::for_file(&b).unwrap();
        assert!(Arc::ptr_eq(&ga, &gb));
        assert!(!Arc::ptr_eq(&ga, &GroupCommit::for_file(&other).unwrap()));
    }
}
