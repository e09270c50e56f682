//! The errors of the run state. Each names the database and the operation
//! and says what to do next; none contains a journaled result or action
//! input, which may hold sealed secrets.

use std::error::Error as StdError;
use std::io;

use super::{ApprovalState, DeferredState};

/// Something went wrong reading or changing the run state.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    /// Another process kept the database locked for longer than the busy
    /// timeout.
    #[error(
        "state database {db} is busy: could not {operation} because another keycycle process \
         kept it locked for over {waited_ms} ms; wait for that process (a run or a cleanup) to \
         finish, then try again"
    )]
    Busy {
        db: String,
        operation: &'static str,
        waited_ms: u64,
    },

    /// The database engine failed.
    #[error(
        "state database {db}: could not {operation}: {source}; check that the disk is not full \
         and that you may read and write the database and its directory"
    )]
    Backend {
        db: String,
        operation: &'static str,
        #[source]
        source: Box<dyn StdError + Send + Sync>,
    },

    /// A file system step around the database failed.
    #[error(
        "state database {db}: could not {action}: {source}; check that the path is right and \
         that you may read and write it"
    )]
    Io {
        db: String,
        action: &'static str,
        #[source]
        source: io::Error,
    },

    /// The database was written by a newer keycycle.
    #[error(
        "state database {db} has schema version {found}, but this keycycle understands only \
         version {supported}; use the keycycle release that wrote it, or a newer one"
    )]
    NewerSchema {
        db: String,
        found: i64,
        supported: i64,
    },

    /// The file is not a keycycle state database.
    #[error(
        "{db} is not a keycycle state database: {problem}; move it aside or point keycycle at \
         another state directory"
    )]
    NotStateDatabase { db: String, problem: String },

    /// A stored record is not in the shape this keycycle writes.
    #[error("state database {db} is corrupt: {problem}; restore it from a backup")]
    Corrupt { db: String, problem: String },

    /// The caller passed something the store refuses.
    #[error("state database {db}: cannot {operation}: {problem}")]
    Invalid {
        db: String,
        operation: &'static str,
        problem: String,
    },

    #[error(
        "state database {db} already has a run `{run_id}`; run ids must be unique, so start the \
         run under a new id"
    )]
    RunExists { db: String, run_id: String },

    #[error("state database {db} has no run `{run_id}`; `keycycle runs` lists the runs it has")]
    RunNotFound { db: String, run_id: String },

    /// `begin_effect` with a sequence number other than the next.
    #[error(
        "journal of run `{run_id}` in {db}: effect {got} was begun, but the next effect is \
         {expected}; the run and its journal disagree (is another process running it?), so \
         stop and inspect the run"
    )]
    SeqOutOfOrder {
        db: String,
        run_id: String,
        expected: u64,
        got: u64,
    },

    #[error(
        "journal of run `{run_id}` in {db} has no effect {seq} to finish; an effect must be \
         begun before it is finished"
    )]
    EffectNotFound {
        db: String,
        run_id: String,
        seq: u64,
    },

    /// An outcome is written once; a second one would rewrite history.
    #[error(
        "journal of run `{run_id}` in {db}: effect {seq} already has an outcome, and outcomes \
         are never replaced; is another process running this run?"
    )]
    EffectFinished {
        db: String,
        run_id: String,
        seq: u64,
    },

    #[error(
        "state database {db} has no deferred action `{id}`; `keycycle pending` lists the actions \
         that are not done"
    )]
    ActionNotFound { db: String, id: String },

    /// Someone other than the action's current claimer tried to finish it;
    /// typically the claimer's lease expired and another cleanup took over.
    #[error(
        "deferred action `{id}` in {db} is not claimed by {claimer} (it is {state}{held}); its \
         lease probably expired and another cleanup took it over, so this attempt's result is \
         not recorded",
        held = holder.as_ref().map(|h| format!(", claimed by {h}")).unwrap_or_default()
    )]
    LostLease {
        db: String,
        id: String,
        claimer: String,
        holder: Option<String>,
        state: DeferredState,
    },

    #[error(
        "deferred action `{id}` in {db} is {state}, not failed; only failed actions can be \
         retried"
    )]
    NotFailed {
        db: String,
        id: String,
        state: DeferredState,
    },

    #[error(
        "state database {db} has no change request `{id}`; `keycycle approvals` lists the ones \
         waiting"
    )]
    ApprovalNotFound { db: String, id: String },

    /// A run's lease was taken over (it expired) or given up.
    #[error(
        "the lease of run `{run_id}` in {db} is no longer held by {holder}{by}; its renewals \
         stopped for longer than the lease, so another runner may have taken the run over: \
         stop this process",
        by = by.as_ref().map(|h| format!(" (it is {h}'s)")).unwrap_or_default()
    )]
    RunLeaseLost {
        db: String,
        run_id: String,
        holder: String,
        by: Option<String>,
    },

    /// A change request is decided once.
    #[error("change request `{id}` in {db} was already {state} by {by}; a decision is final")]
    AlreadyDecided {
        db: String,
        id: String,
        state: ApprovalState,
        by: String,
    },
}
