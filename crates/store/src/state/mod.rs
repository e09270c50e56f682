//! Durable run state: the audit history of runs, the journal of every
//! effect a run had, the locks runs hold on credentials, and the deferred
//! actions `keycycle cleanup` carries out later.
//!
//! Everything goes through the [`StateStore`] trait so a shared database
//! server can take the place of the local file later. The trait speaks only
//! of keycycle's own records: no SQL, no row ids, no file paths. Two
//! implementations exist:
//!
//! - [`SqliteState`]: the file `state.db` next to the secrets store. Every
//!   change is a transaction that is on disk (fsynced) before the call
//!   returns, but for the journal writes a caller marks
//!   [`Durability::Grouped`], and the decisions that must have exactly one
//!   winner across processes (taking a lock, claiming an action) are made
//!   inside a single write transaction.
//! - [`PostgresState`]: a PostgreSQL database several runners share, with
//!   the same semantics (`postgres.rs` says how).
//! - [`MemoryState`]: the same behaviour inside one process, for tests and
//!   for measuring what durability costs.
//!
//! Group commit: an fsync costs milliseconds, and a run journals two
//! writes per effect, most of them for effects nobody outside the process
//! can see (a read, the time, a secret from the store). So a journal write
//! may be [`Durability::Grouped`]: committed and visible at once, kept if
//! the process dies, but on disk only at the next *barrier*: a
//! [`StateStore::sync`] or any durable change, by any run of the process.
//! Writes become durable in the order they were made, so a power cut loses
//! at most a suffix of grouped writes, never one from the middle. Concurrent
//! runs that ask for a barrier while an fsync is under way wait for it and
//! share the next one. Which writes the journal groups, and why that keeps
//! its promise, is the engine's rule (`keycycle_engine::journal`).
//!
//! Secret values never reach this module in the clear: callers seal them
//! with [`crate::MasterKey::seal`] first.
//!
//! Times are Unix milliseconds (`i64`). Where a call takes a time
//! (`claim_due`, `fail_action`) the caller's clock decides; the times the
//! store records on its own (a lock's `acquired_at`, a run's `finished_at`,
//! an action's `created_at` and `finished_at`) come from [`now_ms`].

mod error;
mod group;
mod memory;
pub mod postgres;
mod sqlite;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

pub use error::StateError;
pub use memory::MemoryState;
pub use postgres::{PG_SCHEMA_VERSION, PgOptions, PostgresState, is_postgres_url, mask_url};
pub use sqlite::{DEFAULT_BUSY_TIMEOUT, SCHEMA_VERSION, STATE_FILE_NAME, SqliteState};
#[cfg(debug_assertions)]
pub use sqlite::{POWER_CUT_ENV, SYNCED_SUFFIX};

/// The sequence number of a run's first effect; each later effect takes the
/// next integer.
pub const FIRST_SEQ: u64 = 1;

/// The current time as Unix milliseconds, the unit of every time here.
pub fn now_ms() -> i64 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(since) => i64::try_from(since.as_millis()).unwrap_or(i64::MAX),
        // A clock set before 1970: report how far before.
        Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX),
    }
}

/// Where a run's state is kept: the runs and their audit events, the effect
/// journal, credential locks and deferred actions.
///
/// Every method that changes something has made the change durable when it
/// returns `Ok`, and with it every change made before it (see
/// [`Durability`]); only a journal write the caller marks
/// [`Durability::Grouped`] may wait for a later barrier. Implementations
/// are safe to share between threads, and [`SqliteState`] handles on one
/// file are safe to use from many processes at once.
pub trait StateStore: Send + Sync {
    /// What this store is, for messages: a database path, or
    /// `in-memory state`.
    fn location(&self) -> String;

    // ---- runs and their audit history ----

    /// Records a new run in state [`RunState::Running`]. Fails with
    /// [`StateError::RunExists`] if the id is taken.
    fn create_run(&self, run: &NewRun) -> Result<(), StateError>;

    /// The run `run_id`, or `None` when there is none.
    fn run(&self, run_id: &str) -> Result<Option<RunRecord>, StateError>;

    /// Runs matching `filter`, newest first (by `started_at`, then by
    /// `run_id`, both descending).
    fn list_runs(&self, filter: &RunFilter) -> Result<Vec<RunRecord>, StateError>;

    /// Sets a run's state and detail. Finishing as `Running` reopens the run
    /// (clears `finished_at`), which is what resuming it means; any other
    /// state sets `finished_at` to now. Calling it again overwrites.
    fn finish_run(
        &self,
        run_id: &str,
        state: RunState,
        detail: Option<&str>,
    ) -> Result<(), StateError>;

    /// Adds a line to a run's audit history (resumed by, unlocked by, step
    /// notes). Events are kept in the order they were appended.
    fn append_event(&self, run_id: &str, event: &RunEvent) -> Result<(), StateError>;

    /// A run's audit events in the order they were appended.
    fn events(&self, run_id: &str) -> Result<Vec<RunEvent>, StateError>;

    // ---- the effect journal ----

    /// Records that an effect is about to happen, durably. `intent.seq`
    /// must be the run's next sequence number ([`FIRST_SEQ`] for its first
    /// effect, then one more than the last begun), else
    /// [`StateError::SeqOutOfOrder`]. The previous effect need not be
    /// finished: a resumed run may finish an effect it finds in flight
    /// before or after beginning the next.
    fn begin_effect(&self, run_id: &str, intent: &EffectIntent) -> Result<(), StateError> {
        self.begin_effect_with(run_id, intent, Durability::Durable)
    }

    /// [`StateStore::begin_effect`], on disk as `durability` says.
    fn begin_effect_with(
        &self,
        run_id: &str,
        intent: &EffectIntent,
        durability: Durability,
    ) -> Result<(), StateError>;

    /// Records how an effect begun with [`StateStore::begin_effect`] ended,
    /// durably. Fails with [`StateError::EffectNotFound`] when no such
    /// effect was begun and [`StateError::EffectFinished`] when it already
    /// has an outcome: an outcome is written once and never replaced.
    fn finish_effect(
        &self,
        run_id: &str,
        seq: u64,
        outcome: &EffectOutcome,
    ) -> Result<(), StateError> {
        self.finish_effect_with(run_id, seq, outcome, Durability::Durable)
    }

    /// [`StateStore::finish_effect`], on disk as `durability` says.
    fn finish_effect_with(
        &self,
        run_id: &str,
        seq: u64,
        outcome: &EffectOutcome,
        durability: Durability,
    ) -> Result<(), StateError>;

    /// The barrier: when it returns `Ok`, every change made through this
    /// store before the call, grouped or not, by any run of the process, is
    /// durable. Callers that ask while another barrier's fsync is under way
    /// wait for it and share the next one. Cheap when nothing is waiting
    /// to be made durable. A change whose barrier fails is reported as
    /// failed, although it is in the store: nothing can be said of its
    /// durability, so the caller must not act on it, and the next barrier
    /// that succeeds covers it.
    fn sync(&self) -> Result<(), StateError>;

    /// A run's journal by sequence number. An effect whose `outcome` is
    /// `None` was in flight when the run stopped.
    fn effects(&self, run_id: &str) -> Result<Vec<EffectRecord>, StateError>;

    // ---- credential locks ----

    /// Takes the lock on `credential` for `run_id`, atomically with respect
    /// to every other handle and process. The run is remembered among the
    /// credential's runs (see [`RunFilter::credential`]) for good.
    fn acquire_lock(&self, credential: &str, run_id: &str) -> Result<LockAttempt, StateError>;

    /// Releases every lock `run_id` holds; returns their credentials,
    /// sorted.
    fn release_run_locks(&self, run_id: &str) -> Result<Vec<String>, StateError>;

    /// Ends a run as `state` (a finished state) and releases its locks, in
    /// one write: no crash can leave a finished run holding locks, nor a
    /// running one without them. Returns the released credentials, sorted.
    fn end_run(
        &self,
        run_id: &str,
        state: RunState,
        detail: Option<&str>,
    ) -> Result<Vec<String>, StateError>;

    /// Releases the lock on `credential` whoever holds it (an operator's
    /// unlock); returns the lock that was held, if any.
    fn release_lock(&self, credential: &str) -> Result<Option<LockRecord>, StateError>;

    /// Every lock held now, sorted by credential.
    fn locks(&self) -> Result<Vec<LockRecord>, StateError>;

    // ---- deferred actions ----

    /// Schedules an action; returns its id. An empty `action.id` gets a
    /// generated one (`d-<run_id>-<16 hex digits>`). Scheduling an id that
    /// exists already changes nothing and returns the id, so a replayed
    /// run cannot schedule an action twice; the first scheduling's fields
    /// are kept.
    fn schedule(&self, action: &NewDeferred) -> Result<String, StateError>;

    /// Actions matching `filter`, ordered by `due_at`, then id.
    fn deferred(&self, filter: &DeferredFilter) -> Result<Vec<DeferredRecord>, StateError>;

    /// Atomically claims the action to run next, if any: among actions that
    /// are `Pending` with `next_attempt_at <= now_ms`, or `Running` with
    /// `lease_until <= now_ms` (their claimer died or stalled), the one with
    /// the earliest `next_attempt_at` (then `created_at`, then id). The
    /// claimed action becomes `Running`, claimed by `claimer` until
    /// `now_ms + lease_ms`, with one more attempt counted. No two callers,
    /// in any processes, get the same claim.
    fn claim_due(
        &self,
        now_ms: i64,
        claimer: &str,
        lease_ms: i64,
    ) -> Result<Option<DeferredRecord>, StateError>;

    /// Extends `claimer`'s claim of action `id` to `lease_until`, while the
    /// action runs: a call that takes longer than the claim's first lease
    /// is not taken over. Anyone else, or a claimer whose expired lease was
    /// taken over, gets [`StateError::LostLease`].
    fn renew_claim(&self, id: &str, claimer: &str, lease_until: i64) -> Result<(), StateError>;

    /// Marks a claimed action done. Only its current claimer may: anyone
    /// else, or a claimer whose expired lease was taken over, gets
    /// [`StateError::LostLease`]. A claimer whose lease expired but was not
    /// yet taken over still completes.
    fn complete_action(
        &self,
        id: &str,
        claimer: &str,
        note: Option<&str>,
    ) -> Result<(), StateError>;

    /// Records a failed attempt by the current claimer (else
    /// [`StateError::LostLease`]). With `retry_at_ms` the action is
    /// `Pending` again from then on; without, it is `Failed` for good
    /// (kept and listed until an operator calls
    /// [`StateStore::retry_action`]).
    fn fail_action(
        &self,
        id: &str,
        claimer: &str,
        error: &str,
        retry_at_ms: Option<i64>,
    ) -> Result<(), StateError>;

    /// Puts a `Failed` action back to `Pending`, due at once (its
    /// `next_attempt_at` stays the time of its last attempt). Any other
    /// state gives [`StateError::NotFailed`].
    fn retry_action(&self, id: &str) -> Result<(), StateError>;

    // Approval gates.

    /// Records a change request, or returns the one already recorded under
    /// `request.id` (a resumed run asks again; the first request stands).
    fn request_approval(&self, request: &NewApproval) -> Result<ApprovalRecord, StateError>;

    /// One request, by id.
    fn approval(&self, id: &str) -> Result<Option<ApprovalRecord>, StateError>;

    /// Every request, oldest first; only the undecided ones with
    /// `pending_only`.
    fn approvals(&self, pending_only: bool) -> Result<Vec<ApprovalRecord>, StateError>;

    /// Records a decision on a pending request. A request is decided once:
    /// deciding it again is [`StateError::AlreadyDecided`].
    fn decide_approval(
        &self,
        id: &str,
        decision: &ApprovalDecision,
    ) -> Result<ApprovalRecord, StateError>;

    // The inventory's records: what keycycle learnt of each credential.

    /// Records the end of a run that rotated (or tried to rotate) inventory
    /// credential `id`. A successful rotation sets `last_rotated_at` and
    /// replaces the expiry with the new token's (none when unknown: the
    /// old token's expiry no longer applies).
    fn record_rotation(&self, id: &str, outcome: &RotationOutcome) -> Result<(), StateError>;

    /// [`Self::record_rotation`] of a starting run (`outcome.state` is
    /// `Running`), but only while the credential's last run is still
    /// `seen`, the one the caller saw when it chose to rotate it, and
    /// that run is not unfinished (`Running`). Of
    /// runners that chose the same credential at once, one claims it; the
    /// others get [`RotationClaim::Taken`] with the record that stands.
    fn claim_rotation(
        &self,
        id: &str,
        seen: Option<&str>,
        outcome: &RotationOutcome,
    ) -> Result<RotationClaim, StateError>;

    /// Records a check of credential `id`; an expiry or last use it read
    /// replaces the one recorded.
    fn record_check(&self, id: &str, outcome: &CheckOutcome) -> Result<(), StateError>;

    /// One credential's record.
    fn credential(&self, id: &str) -> Result<Option<CredentialRecord>, StateError>;

    /// Every credential's record, by id.
    fn credentials(&self) -> Result<Vec<CredentialRecord>, StateError>;

    // Run leases: which process runs a run, seen from every runner that
    // shares the store (a run's lock file is seen on its own host only).

    /// Takes the lease of run `lease.run_id` for `lease.holder` until
    /// `lease.lease_until`: when nobody holds it, when `lease.holder`
    /// holds it already, or when the lease that stands ended at or before
    /// `now_ms` (its holder died or stalled). Otherwise returns the lease
    /// that stands. No two callers, in any processes, both take it.
    fn take_run_lease(&self, lease: &RunLease, now_ms: i64) -> Result<LeaseAttempt, StateError>;

    /// [`Self::take_run_lease`] from a holder known to be dead before its
    /// lease ends (a process of this machine that is gone): taken only if
    /// the lease that stands is still `read`, neither renewed nor taken
    /// by anyone since it was read. Otherwise returns the one that stands.
    fn take_over_run_lease(
        &self,
        lease: &RunLease,
        read: &RunLease,
    ) -> Result<LeaseAttempt, StateError>;

    /// Extends `holder`'s lease of `run_id` to `lease_until`. Fails with
    /// [`StateError::RunLeaseLost`] when `holder` no longer holds it.
    fn renew_run_lease(
        &self,
        run_id: &str,
        holder: &str,
        lease_until: i64,
    ) -> Result<(), StateError>;

    /// Gives `holder`'s lease of `run_id` up; nothing when `holder` does
    /// not hold it.
    fn drop_run_lease(&self, run_id: &str, holder: &str) -> Result<(), StateError>;

    /// The lease of `run_id` as recorded, expired or not.
    fn run_lease(&self, run_id: &str) -> Result<Option<RunLease>, StateError>;
}

/// A process's claim to be running a run, until `lease_until` unless it
/// renews it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunLease {
    pub run_id: String,
    /// Unique per process and run: `HOST:PID:SPACE:RANDOM`, SPACE naming
    /// the boot and pid namespace the pid belongs to.
    pub holder: String,
    pub host: String,
    pub pid: u32,
    /// Unix milliseconds.
    pub lease_until: i64,
}

/// What [`StateStore::claim_rotation`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RotationClaim {
    /// The credential's record names the caller's run now.
    Claimed,
    /// Another run was recorded since the caller looked: its record.
    Taken(Box<CredentialRecord>),
}

/// Whether a credential whose record is `current` may be claimed by a
/// caller that saw `seen` as its last run: nobody started another since,
/// and the last one is not still unfinished (it is resumed, not rotated
/// over).
fn rotation_claimable(current: Option<&CredentialRecord>, seen: Option<&str>) -> bool {
    current.and_then(|r| r.last_run_id.as_deref()) == seen
        && current.and_then(|r| r.last_run_state) != Some(RunState::Running)
}

/// What [`StateStore::take_run_lease`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseAttempt {
    /// The lease is the caller's now.
    Taken,
    /// Another holder's lease stands.
    HeldBy(RunLease),
}

/// When a lease that stands gives way to another holder.
#[derive(Debug, Clone)]
enum GiveWay {
    /// It ended at or before this time (its holder died or stalled).
    Ended(i64),
    /// It is still exactly this one: the same holder and end, neither
    /// renewed nor taken since it was read.
    StillIs(RunLease),
}

/// Whether `existing` stands against `holder`, or gives way as `give_way`
/// says.
fn lease_stands(existing: &RunLease, holder: &str, give_way: &GiveWay) -> bool {
    existing.holder != holder
        && match give_way {
            GiveWay::Ended(now_ms) => existing.lease_until > *now_ms,
            GiveWay::StillIs(read) => {
                existing.holder != read.holder || existing.lease_until != read.lease_until
            }
        }
}

fn lease_lost(db: &str, run_id: &str, holder: &str, now: Option<&RunLease>) -> StateError {
    StateError::RunLeaseLost {
        db: db.to_owned(),
        run_id: run_id.to_owned(),
        holder: holder.to_owned(),
        by: now.map(|l| l.holder.clone()),
    }
}

/// How soon a journal write must be on disk: the one choice
/// [`StateStore`] leaves to its caller.
///
/// Whatever is chosen, a write is visible at once to every handle and
/// process, survives the death of the process that made it, and becomes
/// durable no later than the next barrier ([`StateStore::sync`], or any
/// durable change). Writes become durable in the order they were made: a
/// power cut or a kernel crash loses at most the grouped writes made since
/// the last barrier, as a suffix, never one write without those after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Durability {
    /// On disk, with every write before it, when the call returns.
    Durable,
    /// On disk at the next barrier; until then a power cut may take it.
    /// For records that nothing outside the process has acted on yet.
    Grouped,
}

/// What keycycle has learnt of one inventory credential. The config says
/// what the credential is; this says what happened to it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CredentialRecord {
    pub id: String,
    /// When the current token expires, as last learnt.
    pub expires_at: Option<i64>,
    /// Where `expires_at` came from: `provider` (read through a plugin),
    /// `rotation` (recorded when it was minted), `manual`.
    pub expiry_source: Option<String>,
    /// When the provider says it was last used.
    pub last_used_at: Option<i64>,
    pub last_rotated_at: Option<i64>,
    pub last_run_id: Option<String>,
    pub last_run_state: Option<RunState>,
    pub last_run_at: Option<i64>,
    pub last_checked_at: Option<i64>,
    /// `ok`, `due`, `warning`, `critical` or `error`.
    pub last_check: Option<String>,
    pub last_check_detail: Option<String>,
    /// Parameters the last successful rotation changed (the new token's
    /// id, say), over the inventory's own.
    #[serde(default)]
    pub params: BTreeMap<String, String>,
}

/// How a rotation run of an inventory credential ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RotationOutcome {
    pub run_id: String,
    pub state: RunState,
    pub at: i64,
    /// The new token's expiry, when known.
    pub expires_at: Option<i64>,
    pub expiry_source: Option<String>,
    /// Parameters that follow the rotation (a new token has a new id).
    #[serde(default)]
    pub params: BTreeMap<String, String>,
}

/// What one check of a credential found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckOutcome {
    pub at: i64,
    pub state: String,
    pub detail: Option<String>,
    pub expires_at: Option<i64>,
    pub expiry_source: Option<String>,
    pub last_used_at: Option<i64>,
}

impl CredentialRecord {
    /// A credential nothing is known of yet.
    pub fn new(id: &str) -> CredentialRecord {
        CredentialRecord {
            id: id.to_owned(),
            ..CredentialRecord::default()
        }
    }

    fn rotated(mut self, outcome: &RotationOutcome) -> CredentialRecord {
        self.last_run_id = Some(outcome.run_id.clone());
        self.last_run_state = Some(outcome.state);
        self.last_run_at = Some(outcome.at);
        if outcome.state == RunState::Succeeded {
            self.last_rotated_at = Some(outcome.at);
            self.expires_at = outcome.expires_at;
            self.expiry_source = outcome.expires_at.and(outcome.expiry_source.clone());
            // The new token has not been used yet.
            self.last_used_at = None;
            self.params.extend(outcome.params.clone());
        }
        self
    }

    fn checked(mut self, outcome: &CheckOutcome) -> CredentialRecord {
        self.last_checked_at = Some(outcome.at);
        self.last_check = Some(outcome.state.clone());
        self.last_check_detail = outcome.detail.clone();
        if let Some(at) = outcome.expires_at {
            self.expires_at = Some(at);
            self.expiry_source = outcome.expiry_source.clone();
        }
        if outcome.last_used_at.is_some() {
            self.last_used_at = outcome.last_used_at;
        }
        self
    }
}

/// A run as it starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewRun {
    pub run_id: String,
    pub runbook_path: String,
    /// Hex SHA-256 of the runbook source, so a resume can refuse a changed
    /// runbook.
    pub runbook_sha256: String,
    pub params: BTreeMap<String, String>,
    pub env: Option<String>,
    pub dry_run: bool,
    pub user: String,
    pub host: String,
    pub plugins: Vec<PluginInfo>,
    pub started_at: i64,
}

/// A plugin a run loaded, as it was when loaded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginInfo {
    /// The name the runbook uses for it.
    pub name: String,
    /// The plugin's own name, from its description.
    pub plugin: String,
    pub version: String,
    /// Hex SHA-256 of the component file.
    pub sha256: String,
}

/// Where a run stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    /// Running now, or interrupted if no process is running it.
    Running,
    Succeeded,
    Failed,
    /// Stopped in a state an operator must look at (for example an effect
    /// that changes things was in flight when the run died).
    NeedsAttention,
    /// Stopped at an approval gate until people decide; keeps its locks.
    WaitingForApproval,
    /// Ended at an approval gate that was rejected; its locks are released.
    Rejected,
}

impl RunState {
    pub const ALL: [RunState; 6] = [
        RunState::Running,
        RunState::Succeeded,
        RunState::Failed,
        RunState::NeedsAttention,
        RunState::WaitingForApproval,
        RunState::Rejected,
    ];

    /// The stable lower-case name stored and shown: `running`,
    /// `succeeded`, `failed`, `needs_attention`, `waiting_for_approval`,
    /// `rejected`.
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Running => "running",
            RunState::Succeeded => "succeeded",
            RunState::Failed => "failed",
            RunState::NeedsAttention => "needs_attention",
            RunState::WaitingForApproval => "waiting_for_approval",
            RunState::Rejected => "rejected",
        }
    }

    /// The state named by [`RunState::as_str`], if any.
    pub fn parse(name: &str) -> Option<RunState> {
        RunState::ALL.into_iter().find(|s| s.as_str() == name)
    }

    /// Whether the run is over (every state but `Running`).
    pub fn is_finished(self) -> bool {
        self != RunState::Running
    }
}

impl fmt::Display for RunState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A run as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRecord {
    pub run_id: String,
    pub runbook_path: String,
    pub runbook_sha256: String,
    pub params: BTreeMap<String, String>,
    pub env: Option<String>,
    pub dry_run: bool,
    pub user: String,
    pub host: String,
    pub plugins: Vec<PluginInfo>,
    pub started_at: i64,
    pub state: RunState,
    pub finished_at: Option<i64>,
    pub detail: Option<String>,
    /// Every credential this run ever locked, in the order first locked.
    pub credentials: Vec<String>,
}

impl RunRecord {
    /// A just-created run's record.
    fn started(run: &NewRun) -> RunRecord {
        RunRecord {
            run_id: run.run_id.clone(),
            runbook_path: run.runbook_path.clone(),
            runbook_sha256: run.runbook_sha256.clone(),
            params: run.params.clone(),
            env: run.env.clone(),
            dry_run: run.dry_run,
            user: run.user.clone(),
            host: run.host.clone(),
            plugins: run.plugins.clone(),
            started_at: run.started_at,
            state: RunState::Running,
            finished_at: None,
            detail: None,
            credentials: Vec::new(),
        }
    }
}

/// A change request an approval gate records: what will change, and where.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewApproval {
    /// Unique: the run's id and the gate's id in the runbook.
    pub id: String,
    pub run_id: String,
    pub title: String,
    pub summary: String,
    pub environments: Vec<String>,
    /// Who may decide (users, or `group:NAME`), from the runbook and the
    /// config; empty means anyone but the requester.
    pub approvers: Vec<String>,
    pub requested_by: String,
    pub requested_host: String,
    pub requested_at: i64,
}

/// Where a change request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalState {
    Pending,
    Approved,
    Rejected,
}

impl ApprovalState {
    pub fn as_str(self) -> &'static str {
        match self {
            ApprovalState::Pending => "pending",
            ApprovalState::Approved => "approved",
            ApprovalState::Rejected => "rejected",
        }
    }

    pub fn parse(name: &str) -> Option<ApprovalState> {
        [
            ApprovalState::Pending,
            ApprovalState::Approved,
            ApprovalState::Rejected,
        ]
        .into_iter()
        .find(|s| s.as_str() == name)
    }
}

impl fmt::Display for ApprovalState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who decided a change request, where, when and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalDecision {
    pub approved: bool,
    pub by: String,
    pub host: String,
    pub at: i64,
    /// The approver's comment, or the reason for a rejection.
    pub comment: Option<String>,
}

/// A change request as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalRecord {
    #[serde(flatten)]
    pub request: NewApproval,
    pub state: ApprovalState,
    pub decided_by: Option<String>,
    pub decided_host: Option<String>,
    pub decided_at: Option<i64>,
    pub comment: Option<String>,
}

impl ApprovalRecord {
    fn requested(request: &NewApproval) -> ApprovalRecord {
        ApprovalRecord {
            request: request.clone(),
            state: ApprovalState::Pending,
            decided_by: None,
            decided_host: None,
            decided_at: None,
            comment: None,
        }
    }

    /// The record with `decision` applied, or why it cannot be.
    fn decided(
        mut self,
        db: &str,
        decision: &ApprovalDecision,
    ) -> Result<ApprovalRecord, StateError> {
        if self.state != ApprovalState::Pending {
            return Err(StateError::AlreadyDecided {
                db: db.to_owned(),
                id: self.request.id.clone(),
                state: self.state,
                by: self.decided_by.clone().unwrap_or_default(),
            });
        }
        self.state = if decision.approved {
            ApprovalState::Approved
        } else {
            ApprovalState::Rejected
        };
        self.decided_by = Some(decision.by.clone());
        self.decided_host = Some(decision.host.clone());
        self.decided_at = Some(decision.at);
        self.comment = decision.comment.clone();
        Ok(self)
    }
}

/// Which runs [`StateStore::list_runs`] returns. The default is all runs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunFilter {
    /// Only runs in state `Running` (live or interrupted).
    pub unfinished_only: bool,
    /// Only runs that locked this credential at some time, released or not.
    pub credential: Option<String>,
    /// At most this many, the newest.
    pub limit: Option<usize>,
    /// Only runs started at or after this time (Unix milliseconds).
    pub since: Option<i64>,
    /// Only runs in one of these states; empty means any state.
    pub states: Vec<RunState>,
}

/// One line of a run's audit history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunEvent {
    pub at: i64,
    /// A short machine-readable tag: `resumed`, `unlocked`, `note`, ….
    pub kind: String,
    pub message: String,
}

/// What a run is about to do, written before it does it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EffectIntent {
    pub seq: u64,
    /// `plugin`, `prompt`, `now`, `random`, `store_secret`, `lock`, `defer`.
    pub kind: String,
    /// What exactly: `gitlab.rotate_self`, `prompt:label`, ….
    pub name: String,
    /// Hex SHA-256 of the canonical request, to notice a replay that asks
    /// for something else than the original run did.
    pub request_fingerprint: String,
    /// The request with secrets redacted, for people reading the journal.
    pub request_summary: String,
    /// Whether the effect may change something outside keycycle.
    pub mutates: bool,
    pub started_at: i64,
}

/// How an effect ended, written before the run is told.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EffectOutcome {
    pub ok: bool,
    /// Opaque to the store. Secret parts must already be sealed.
    pub result: String,
    pub error_kind: Option<String>,
    pub error: Option<String>,
    pub finished_at: i64,
}

/// One journal entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EffectRecord {
    pub intent: EffectIntent,
    /// `None`: the effect was in flight when the run stopped.
    pub outcome: Option<EffectOutcome>,
}

/// A lock a run holds on a credential.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockRecord {
    pub credential: String,
    pub run_id: String,
    pub acquired_at: i64,
}

/// What [`StateStore::acquire_lock`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockAttempt {
    /// The lock was free and is now this run's.
    Acquired,
    /// This run held it already.
    AlreadyHeld,
    /// Another run holds it.
    HeldBy(LockRecord),
}

/// An action to carry out later, as scheduled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewDeferred {
    /// Empty to have one generated; the journaling layer passes a stable id
    /// (such as `d-<run_id>-<seq>`) so a replay schedules nothing new.
    pub id: String,
    pub run_id: String,
    pub credential: Option<String>,
    /// What it does, for people.
    pub description: String,
    pub plugin: String,
    pub operation: String,
    /// JSON; secret parts must already be sealed.
    pub input: String,
    pub due_at: i64,
}

/// Where a deferred action stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeferredState {
    /// Waiting for `next_attempt_at`.
    Pending,
    /// Claimed by a cleanup process until `lease_until`.
    Running,
    Done,
    /// Gave up; kept and reported until an operator retries it.
    Failed,
}

impl DeferredState {
    pub const ALL: [DeferredState; 4] = [
        DeferredState::Pending,
        DeferredState::Running,
        DeferredState::Done,
        DeferredState::Failed,
    ];

    /// The stable lower-case name stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            DeferredState::Pending => "pending",
            DeferredState::Running => "running",
            DeferredState::Done => "done",
            DeferredState::Failed => "failed",
        }
    }

    /// The state named by [`DeferredState::as_str`], if any.
    pub fn parse(name: &str) -> Option<DeferredState> {
        DeferredState::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

impl fmt::Display for DeferredState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A deferred action as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeferredRecord {
    pub id: String,
    pub run_id: String,
    pub credential: Option<String>,
    pub description: String,
    pub plugin: String,
    pub operation: String,
    pub input: String,
    pub due_at: i64,
    pub state: DeferredState,
    /// Claims so far, including the current one.
    pub attempts: u32,
    pub next_attempt_at: i64,
    /// Who claimed it last (kept once it is done or failed, for the record;
    /// cleared when a failed attempt puts it back to pending).
    pub claimed_by: Option<String>,
    /// Set while `Running`.
    pub lease_until: Option<i64>,
    pub last_error: Option<String>,
    pub created_at: i64,
    pub finished_at: Option<i64>,
    pub note: Option<String>,
}

impl DeferredRecord {
    fn scheduled(action: &NewDeferred, id: String, created_at: i64) -> DeferredRecord {
        DeferredRecord {
            id,
            run_id: action.run_id.clone(),
            credential: action.credential.clone(),
            description: action.description.clone(),
            plugin: action.plugin.clone(),
            operation: action.operation.clone(),
            input: action.input.clone(),
            due_at: action.due_at,
            state: DeferredState::Pending,
            attempts: 0,
            next_attempt_at: action.due_at,
            claimed_by: None,
            lease_until: None,
            last_error: None,
            created_at,
            finished_at: None,
            note: None,
        }
    }
}

/// Which actions [`StateStore::deferred`] returns. The default is all.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeferredFilter {
    /// Only actions in these states; empty for every state.
    pub states: Vec<DeferredState>,
    /// Only actions scheduled by this run.
    pub run_id: Option<String>,
}

impl DeferredFilter {
    fn wants(&self, record: &DeferredRecord) -> bool {
        (self.states.is_empty() || self.states.contains(&record.state))
            && self.run_id.as_ref().is_none_or(|r| *r == record.run_id)
    }
}

/// Checks the arguments both implementations refuse alike, so they fail
/// the same way.
fn require(db: &str, operation: &'static str, checks: &[(&str, bool)]) -> Result<(), StateError> {
    match checks.iter().find(|(_, ok)| !ok) {
        None => Ok(()),
        Some((problem, _)) => Err(StateError::Invalid {
            db: db.to_owned(),
            operation,
            problem: (*problem).to_owned(),
        }),
    }
}

/// The id a deferred action is stored under.
fn action_id(action: &NewDeferred) -> String {
    if action.id.is_empty() {
        format!("d-{}-{:016x}", action.run_id, rand::random::<u64>())
    } else {
        action.id.clone()
    }
}

/// Why a claimer may not finish an action, if it may not.
fn check_claim(
    db: &str,
    id: &str,
    claimer: &str,
    state: DeferredState,
    claimed_by: Option<&str>,
) -> Result<(), StateError> {
    if state == DeferredState::Running && claimed_by == Some(claimer) {
        Ok(())
    } else {
        Err(StateError::LostLease {
            db: db.to_owned(),
            id: id.to_owned(),
            claimer: claimer.to_owned(),
            holder: claimed_by
                .filter(|_| state == DeferredState::Running)
                .map(str::to_owned),
            state,
        })
    }
}

/// The message kept when a claimer's expired lease is taken over.
fn expired_lease_note(previous: Option<&str>, lease_until: Option<i64>) -> String {
    format!(
        "the lease of {} expired at {} ms before it finished; claimed again",
        previous.unwrap_or("an unknown claimer"),
        lease_until.map_or_else(|| "an unknown time".to_owned(), |t| t.to_string()),
    )
}
