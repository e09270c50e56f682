//! The run state kept in memory: the same behaviour as the SQLite store,
//! without the disk, for tests and for measuring what durability costs.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use super::{
    ApprovalDecision, ApprovalRecord, ApprovalState, CheckOutcome, CredentialRecord,
    DeferredFilter, DeferredRecord, DeferredState, Durability, EffectIntent, EffectOutcome,
    EffectRecord, FIRST_SEQ, GiveWay, LeaseAttempt, LockAttempt, LockRecord, NewApproval,
    NewDeferred, NewRun, RotationClaim, RotationOutcome, RunEvent, RunFilter, RunLease, RunRecord,
    RunState, StateError, StateStore, action_id, check_claim, expired_lease_note, lease_lost,
    lease_stands, now_ms, require, rotation_claimable,
};

const LOCATION: &str = "in-memory state";

/// Run state that lives as long as the process. Clones share one state,
/// the way several handles on one database file do.
#[derive(Clone, Default)]
pub struct MemoryState {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Default)]
struct Inner {
    runs: BTreeMap<String, Run>,
    locks: BTreeMap<String, LockRecord>,
    deferred: BTreeMap<String, DeferredRecord>,
    approvals: Vec<ApprovalRecord>,
    credentials: BTreeMap<String, CredentialRecord>,
    leases: BTreeMap<String, RunLease>,
}

struct Run {
    record: RunRecord,
    events: Vec<RunEvent>,
    journal: Vec<EffectRecord>,
}

impl MemoryState {
    pub fn new() -> MemoryState {
        MemoryState::default()
    }

    /// Takes a run's lease unless the one that stands holds against
    /// `give_way`.
    fn take_lease(&self, lease: &RunLease, give_way: &GiveWay) -> Result<LeaseAttempt, StateError> {
        let mut inner = self.inner();
        if let Some(existing) = inner.leases.get(&lease.run_id)
            && lease_stands(existing, &lease.holder, give_way)
        {
            return Ok(LeaseAttempt::HeldBy(existing.clone()));
        }
        inner.leases.insert(lease.run_id.clone(), lease.clone());
        Ok(LeaseAttempt::Taken)
    }

    /// Changes one credential's record, creating it first if need be.
    fn update_credential(
        &self,
        id: &str,
        change: impl FnOnce(CredentialRecord) -> CredentialRecord,
    ) {
        let mut inner = self.inner();
        let record = inner
            .credentials
            .remove(id)
            .unwrap_or_else(|| CredentialRecord::new(id));
        inner.credentials.insert(id.to_owned(), change(record));
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        // Every change below is made in full or not at all, so a panic
        // elsewhere while the lock was held cannot leave half a change.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl std::fmt::Debug for MemoryState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let inner = self.inner();
        f.debug_struct("MemoryState")
            .field("runs", &inner.runs.len())
            .field("locks", &inner.locks.len())
            .field("deferred", &inner.deferred.len())
            .finish()
    }
}

impl Inner {
    fn run_mut(&mut self, run_id: &str) -> Result<&mut Run, StateError> {
        self.runs.get_mut(run_id).ok_or_else(|| not_found(run_id))
    }

    fn run(&self, run_id: &str) -> Result<&Run, StateError> {
        self.runs.get(run_id).ok_or_else(|| not_found(run_id))
    }

    fn action_mut(&mut self, id: &str) -> Result<&mut DeferredRecord, StateError> {
        self.deferred
            .get_mut(id)
            .ok_or_else(|| StateError::ActionNotFound {
                db: LOCATION.to_owned(),
                id: id.to_owned(),
            })
    }

    /// The action `id`, which `claimer` must hold.
    fn claimed_action_mut(
        &mut self,
        id: &str,
        claimer: &str,
    ) -> Result<&mut DeferredRecord, StateError> {
        let action = self.action_mut(id)?;
        check_claim(
            LOCATION,
            id,
            claimer,
            action.state,
            action.claimed_by.as_deref(),
        )?;
        Ok(action)
    }
}

fn not_found(run_id: &str) -> StateError {
    StateError::RunNotFound {
        db: LOCATION.to_owned(),
        run_id: run_id.to_owned(),
    }
}

impl StateStore for MemoryState {
    fn location(&self) -> String {
        LOCATION.to_owned()
    }

    fn create_run(&self, run: &NewRun) -> Result<(), StateError> {
        require(
            LOCATION,
            "create a run",
            &[("the run id is empty", !run.run_id.is_empty())],
        )?;
        let mut inner = self.inner();
        if inner.runs.contains_key(&run.run_id) {
            return Err(StateError::RunExists {
                db: LOCATION.to_owned(),
                run_id: run.run_id.clone(),
            });
        }
        inner.runs.insert(
            run.run_id.clone(),
            Run {
                record: RunRecord::started(run),
                events: Vec::new(),
                journal: Vec::new(),
            },
        );
        Ok(())
    }

    fn run(&self, run_id: &str) -> Result<Option<RunRecord>, StateError> {
        Ok(self.inner().runs.get(run_id).map(|r| r.record.clone()))
    }

    fn list_runs(&self, filter: &RunFilter) -> Result<Vec<RunRecord>, StateError> {
        let inner = self.inner();
        let mut runs: Vec<RunRecord> = inner
            .runs
            .values()
            .map(|r| &r.record)
            .filter(|r| !filter.unfinished_only || r.state == RunState::Running)
            .filter(|r| {
                filter
                    .credential
                    .as_ref()
                    .is_none_or(|c| r.credentials.contains(c))
            })
            .filter(|r| filter.since.is_none_or(|since| r.started_at >= since))
            .filter(|r| filter.states.is_empty() || filter.states.contains(&r.state))
            .cloned()
            .collect();
        runs.sort_by(|a, b| (b.started_at, &b.run_id).cmp(&(a.started_at, &a.run_id)));
        if let Some(limit) = filter.limit {
            runs.truncate(limit);
        }
        Ok(runs)
    }

    fn finish_run(
        &self,
        run_id: &str,
        state: RunState,
        detail: Option<&str>,
    ) -> Result<(), StateError> {
        let mut inner = self.inner();
        let record = &mut inner.run_mut(run_id)?.record;
        record.state = state;
        record.finished_at = state.is_finished().then(now_ms);
        record.detail = detail.map(str::to_owned);
        Ok(())
    }

    fn append_event(&self, run_id: &str, event: &RunEvent) -> Result<(), StateError> {
        self.inner().run_mut(run_id)?.events.push(event.clone());
        Ok(())
    }

    fn events(&self, run_id: &str) -> Result<Vec<RunEvent>, StateError> {
        Ok(self.inner().run(run_id)?.events.clone())
    }

    // Nothing here outlives the process, so every write is as durable as it
    // will ever be when it is made, and a barrier has nothing to wait for.
    fn begin_effect_with(
        &self,
        run_id: &str,
        intent: &EffectIntent,
        _durability: Durability,
    ) -> Result<(), StateError> {
        let mut inner = self.inner();
        let journal = &mut inner.run_mut(run_id)?.journal;
        let expected = journal.last().map_or(FIRST_SEQ, |e| e.intent.seq + 1);
        if intent.seq != expected {
            return Err(StateError::SeqOutOfOrder {
                db: LOCATION.to_owned(),
                run_id: run_id.to_owned(),
                expected,
                got: intent.seq,
            });
        }
        journal.push(EffectRecord {
            intent: intent.clone(),
            outcome: None,
        });
        Ok(())
    }

    fn finish_effect_with(
        &self,
        run_id: &str,
        seq: u64,
        outcome: &EffectOutcome,
        _durability: Durability,
    ) -> Result<(), StateError> {
        let mut inner = self.inner();
        let journal = &mut inner.run_mut(run_id)?.journal;
        // Sequence numbers are dense from FIRST_SEQ, so the entry's index
        // follows from its number.
        let index = seq
            .checked_sub(FIRST_SEQ)
            .and_then(|i| usize::try_from(i).ok());
        let Some(effect) = index.and_then(|i| journal.get_mut(i)) else {
            return Err(StateError::EffectNotFound {
                db: LOCATION.to_owned(),
                run_id: run_id.to_owned(),
                seq,
            });
        };
        if effect.outcome.is_some() {
            return Err(StateError::EffectFinished {
                db: LOCATION.to_owned(),
                run_id: run_id.to_owned(),
                seq,
            });
        }
        effect.outcome = Some(outcome.clone());
        Ok(())
    }

    fn sync(&self) -> Result<(), StateError> {
        Ok(())
    }

    fn effects(&self, run_id: &str) -> Result<Vec<EffectRecord>, StateError> {
        Ok(self.inner().run(run_id)?.journal.clone())
    }

    fn acquire_lock(&self, credential: &str, run_id: &str) -> Result<LockAttempt, StateError> {
        require(
            LOCATION,
            "acquire a lock",
            &[("the credential name is empty", !credential.is_empty())],
        )?;
        let mut inner = self.inner();
        inner.run(run_id)?;
        if let Some(held) = inner.locks.get(credential) {
            return Ok(if held.run_id == run_id {
                LockAttempt::AlreadyHeld
            } else {
                LockAttempt::HeldBy(held.clone())
            });
        }
        inner.locks.insert(
            credential.to_owned(),
            LockRecord {
                credential: credential.to_owned(),
                run_id: run_id.to_owned(),
                acquired_at: now_ms(),
            },
        );
        let credentials = &mut inner.run_mut(run_id)?.record.credentials;
        if !credentials.iter().any(|c| c == credential) {
            credentials.push(credential.to_owned());
        }
        Ok(LockAttempt::Acquired)
    }

    fn release_run_locks(&self, run_id: &str) -> Result<Vec<String>, StateError> {
        let mut inner = self.inner();
        inner.run(run_id)?;
        let released: Vec<String> = inner
            .locks
            .values()
            .filter(|l| l.run_id == run_id)
            .map(|l| l.credential.clone())
            .collect();
        for credential in &released {
            inner.locks.remove(credential);
        }
        Ok(released)
    }

    fn end_run(
        &self,
        run_id: &str,
        state: RunState,
        detail: Option<&str>,
    ) -> Result<Vec<String>, StateError> {
        // One lock on the whole state: both changes are seen together.
        let mut inner = self.inner();
        let record = &mut inner.run_mut(run_id)?.record;
        record.state = state;
        record.finished_at = state.is_finished().then(now_ms);
        record.detail = detail.map(str::to_owned);
        let mut released: Vec<String> = inner
            .locks
            .values()
            .filter(|l| l.run_id == run_id)
            .map(|l| l.credential.clone())
            .collect();
        released.sort();
        for credential in &released {
            inner.locks.remove(credential);
        }
        Ok(released)
    }

    fn release_lock(&self, credential: &str) -> Result<Option<LockRecord>, StateError> {
        Ok(self.inner().locks.remove(credential))
    }

    fn locks(&self) -> Result<Vec<LockRecord>, StateError> {
        Ok(self.inner().locks.values().cloned().collect())
    }

    fn schedule(&self, action: &NewDeferred) -> Result<String, StateError> {
        let mut inner = self.inner();
        inner.run(&action.run_id)?;
        let id = action_id(action);
        if !inner.deferred.contains_key(&id) {
            let record = DeferredRecord::scheduled(action, id.clone(), now_ms());
            inner.deferred.insert(id.clone(), record);
        }
        Ok(id)
    }

    fn deferred(&self, filter: &DeferredFilter) -> Result<Vec<DeferredRecord>, StateError> {
        let mut actions: Vec<DeferredRecord> = self
            .inner()
            .deferred
            .values()
            .filter(|a| filter.wants(a))
            .cloned()
            .collect();
        actions.sort_by(|a, b| (a.due_at, &a.id).cmp(&(b.due_at, &b.id)));
        Ok(actions)
    }

    fn claim_due(
        &self,
        now_ms: i64,
        claimer: &str,
        lease_ms: i64,
    ) -> Result<Option<DeferredRecord>, StateError> {
        require(
            LOCATION,
            "claim a deferred action",
            &[
                ("the claimer name is empty", !claimer.is_empty()),
                ("the lease is not positive", lease_ms > 0),
            ],
        )?;
        let mut inner = self.inner();
        let next = inner
            .deferred
            .values_mut()
            .filter(|a| match a.state {
                DeferredState::Pending => a.next_attempt_at <= now_ms,
                DeferredState::Running => a.lease_until.is_some_and(|t| t <= now_ms),
                DeferredState::Done | DeferredState::Failed => false,
            })
            .min_by(|a, b| {
                (a.next_attempt_at, a.created_at, &a.id).cmp(&(
                    b.next_attempt_at,
                    b.created_at,
                    &b.id,
                ))
            });
        let Some(action) = next else {
            return Ok(None);
        };
        if action.state == DeferredState::Running {
            action.last_error = Some(expired_lease_note(
                action.claimed_by.as_deref(),
                action.lease_until,
            ));
        }
        action.state = DeferredState::Running;
        action.claimed_by = Some(claimer.to_owned());
        action.lease_until = Some(now_ms.saturating_add(lease_ms));
        action.attempts = action.attempts.saturating_add(1);
        Ok(Some(action.clone()))
    }

    fn renew_claim(&self, id: &str, claimer: &str, lease_until: i64) -> Result<(), StateError> {
        let mut inner = self.inner();
        let action = inner.claimed_action_mut(id, claimer)?;
        action.lease_until = Some(lease_until);
        Ok(())
    }

    fn complete_action(
        &self,
        id: &str,
        claimer: &str,
        note: Option<&str>,
    ) -> Result<(), StateError> {
        let mut inner = self.inner();
        let action = inner.claimed_action_mut(id, claimer)?;
        action.state = DeferredState::Done;
        action.lease_until = None;
        action.finished_at = Some(now_ms());
        action.note = note.map(str::to_owned);
        Ok(())
    }

    fn fail_action(
        &self,
        id: &str,
        claimer: &str,
        error: &str,
        retry_at_ms: Option<i64>,
    ) -> Result<(), StateError> {
        let mut inner = self.inner();
        let action = inner.claimed_action_mut(id, claimer)?;
        action.last_error = Some(error.to_owned());
        action.lease_until = None;
        match retry_at_ms {
            Some(at) => {
                action.state = DeferredState::Pending;
                action.next_attempt_at = at;
                action.claimed_by = None;
            }
            None => {
                action.state = DeferredState::Failed;
                action.finished_at = Some(now_ms());
            }
        }
        Ok(())
    }

    fn retry_action(&self, id: &str) -> Result<(), StateError> {
        let mut inner = self.inner();
        let action = inner.action_mut(id)?;
        if action.state != DeferredState::Failed {
            return Err(StateError::NotFailed {
                db: LOCATION.to_owned(),
                id: id.to_owned(),
                state: action.state,
            });
        }
        action.state = DeferredState::Pending;
        action.claimed_by = None;
        action.finished_at = None;
        Ok(())
    }

    fn request_approval(&self, request: &NewApproval) -> Result<ApprovalRecord, StateError> {
        let mut inner = self.inner();
        if !inner.runs.contains_key(&request.run_id) {
            return Err(StateError::RunNotFound {
                db: LOCATION.to_owned(),
                run_id: request.run_id.clone(),
            });
        }
        if let Some(found) = inner.approvals.iter().find(|a| a.request.id == request.id) {
            return Ok(found.clone());
        }
        let record = ApprovalRecord::requested(request);
        inner.approvals.push(record.clone());
        Ok(record)
    }

    fn approval(&self, id: &str) -> Result<Option<ApprovalRecord>, StateError> {
        Ok(self
            .inner()
            .approvals
            .iter()
            .find(|a| a.request.id == id)
            .cloned())
    }

    fn approvals(&self, pending_only: bool) -> Result<Vec<ApprovalRecord>, StateError> {
        Ok(self
            .inner()
            .approvals
            .iter()
            .filter(|a| !pending_only || a.state == ApprovalState::Pending)
            .cloned()
            .collect())
    }

    fn decide_approval(
        &self,
        id: &str,
        decision: &ApprovalDecision,
    ) -> Result<ApprovalRecord, StateError> {
        let mut inner = self.inner();
        let slot = inner
            .approvals
            .iter_mut()
            .find(|a| a.request.id == id)
            .ok_or_else(|| StateError::ApprovalNotFound {
                db: LOCATION.to_owned(),
                id: id.to_owned(),
            })?;
        let decided = slot.clone().decided(LOCATION, decision)?;
        *slot = decided.clone();
        Ok(decided)
    }

    fn record_rotation(&self, id: &str, outcome: &RotationOutcome) -> Result<(), StateError> {
        self.update_credential(id, |r| r.rotated(outcome));
        Ok(())
    }

    fn claim_rotation(
        &self,
        id: &str,
        seen: Option<&str>,
        outcome: &RotationOutcome,
    ) -> Result<RotationClaim, StateError> {
        let mut inner = self.inner();
        let current = inner.credentials.get(id);
        if !rotation_claimable(current, seen) {
            return Ok(RotationClaim::Taken(Box::new(
                current
                    .cloned()
                    .unwrap_or_else(|| CredentialRecord::new(id)),
            )));
        }
        let record = current
            .cloned()
            .unwrap_or_else(|| CredentialRecord::new(id));
        inner
            .credentials
            .insert(id.to_owned(), record.rotated(outcome));
        Ok(RotationClaim::Claimed)
    }

    fn record_check(&self, id: &str, outcome: &CheckOutcome) -> Result<(), StateError> {
        self.update_credential(id, |r| r.checked(outcome));
        Ok(())
    }

    fn credential(&self, id: &str) -> Result<Option<CredentialRecord>, StateError> {
        Ok(self.inner().credentials.get(id).cloned())
    }

    fn credentials(&self) -> Result<Vec<CredentialRecord>, StateError> {
        Ok(self.inner().credentials.values().cloned().collect())
    }

    fn take_run_lease(&self, lease: &RunLease, now_ms: i64) -> Result<LeaseAttempt, StateError> {
        self.take_lease(lease, &GiveWay::Ended(now_ms))
    }

    fn take_over_run_lease(
        &self,
        lease: &RunLease,
        read: &RunLease,
    ) -> Result<LeaseAttempt, StateError> {
        self.take_lease(lease, &GiveWay::StillIs(read.clone()))
    }

    fn renew_run_lease(
        &self,
        run_id: &str,
        holder: &str,
        lease_until: i64,
    ) -> Result<(), StateError> {
        let mut inner = self.inner();
        match inner.leases.get_mut(run_id) {
            Some(lease) if lease.holder == holder => {
                lease.lease_until = lease_until;
                Ok(())
            }
            other => Err(lease_lost(LOCATION, run_id, holder, other.as_deref())),
        }
    }

    fn drop_run_lease(&self, run_id: &str, holder: &str) -> Result<(), StateError> {
        let mut inner = self.inner();
        if inner.leases.get(run_id).is_some_and(|l| l.holder == holder) {
            inner.leases.remove(run_id);
        }
        Ok(())
    }

    fn run_lease(&self, run_id: &str) -> Result<Option<RunLease>, StateError> {
        Ok(self.inner().leases.get(run_id).cloned())
    }
}
