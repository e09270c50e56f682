//! The run journal: every effect a runbook has gets a sequence number, its
//! intent is written before it happens and its result after, both in the
//! state store before the runbook sees the result. A resumed run replays
//! journaled results instead of sending anything again, and an effect that
//! was in flight when the run died is settled through the plugin's own way
//! of finding out, or reported to the operator in plain words.
//!
//! # Group commit: when a journal write is on disk
//!
//! Every write is in the store, and survives the death of the process,
//! before the run goes on. Not every write is fsynced at once: an fsync
//! costs milliseconds, and most effects are seen by nobody outside the
//! process. The rule:
//!
//! - **A barrier comes before every externally visible effect.** Before a
//!   plugin call that may change the provider (its operation `mutates`, or
//!   the plugin does not describe it), a write to the secrets store, and a
//!   prompt, the effect's intent is written and the store's barrier
//!   ([`StateStore::sync`]) makes it durable together with every record
//!   before it. The end of a run is recorded by a durable write of the
//!   store (`end_run`, `finish_run`, `append_event`), which is a barrier
//!   too; dropping the journal asks for one more, which costs nothing when
//!   that is done.
//! - **A minted value is durable before the runbook continues.** The result
//!   of a plugin call that holds a secret (a new token, a secret read) is
//!   made durable before the runbook sees it: nothing could make that value
//!   again. So is the result of a call that changes the provider and is not
//!   `idempotent` (a resume could not simply send it again to find out how
//!   it went), and a prompt's answer (a person would have to give it again).
//! - **A resume makes what it found durable before it acts on it.** An
//!   attempt killed between a write and its barrier leaves a record that is
//!   in the store but not on disk; the first step a resume takes from the
//!   journal (replayed or in flight) is preceded by a barrier.
//! - **Everything else is grouped** ([`Durability::Grouped`]): the intents
//!   and results of read-only calls, secrets read from the store, the time,
//!   randomness, and the results of idempotent changes and secret writes;
//!   and the records of locks, deferred actions and approval gates, whose
//!   own changes in the store are durable writes, which are barriers.
//!
//! Why this loses nothing: the store makes writes durable in order, so a
//! power cut loses at most the grouped writes since the last barrier. None
//! of them was followed by anything visible outside the process (that
//! would have been preceded by a barrier), so a resume that does those
//! steps again is a run that got there a little later: it sends reads
//! again, which is safe, draws a new random value nobody saw, and finds an
//! idempotent change or a secret write in flight and does it again, which
//! is the same as once. The steps a resume could not do again (a minted
//! value, a change it could not settle, an answer) are durable before the
//! runbook goes on. Concurrent runs of one process share their fsyncs
//! (`keycycle_store::state`'s group commit).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use keycycle_contract::{PluginDescription, PluginError, Value};
use keycycle_runbook::{
    Answer, ApprovalRequest, EffectError, Effects, LogLevel, Prompt, PromptKind,
};
use keycycle_secret::SecretValue;
use keycycle_store::MasterKey;
use keycycle_store::state::{
    ApprovalState, DeferredRecord, Durability, EffectIntent, EffectOutcome, EffectRecord,
    LockAttempt, NewApproval, NewDeferred, StateStore,
};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::effects::HostEffects;

/// Marks a sealed secret inside a journaled JSON result.
const SEALED: &str = "$keycycle_sealed";
/// Marks sealed plain text: a string that holds a known secret value
/// although the plugin did not declare the field secret. It is sealed so
/// the journal stays clean, and replays as the same plain text.
const SEALED_TEXT: &str = "$keycycle_sealed_text";

pub struct Journal {
    pub state: Arc<dyn StateStore>,
    pub key: MasterKey,
    pub run_id: String,
    /// The journal of the attempts before this one, by sequence number.
    prior: Vec<EffectRecord>,
    /// Send again a mutating call that was in flight when the run died,
    /// after the operator checked that it did not happen.
    retry_in_flight: bool,
    next: Mutex<u64>,
    /// Whether the records of the attempts before this one are known to be
    /// durable. An attempt killed before a barrier leaves records that are
    /// written but not yet on disk; a resume makes them durable before it
    /// acts on any of them (sends an in-flight change again, or goes on
    /// with a replayed minted value).
    prior_durable: std::sync::atomic::AtomicBool,
}

/// How one effect goes, given the journal.
enum Step {
    /// Journaled with its result: hand the result back, send nothing.
    Replay(EffectOutcome),
    /// Journaled without a result: the run died while it was under way.
    InFlight,
    /// New: its intent is on disk; carry it out and record the result.
    Fresh,
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A time as keycycle shows it everywhere, in text and JSON alike: RFC 3339
/// in UTC with exactly three fractional digits
/// (`2026-11-29T19:21:12.000Z`), so the same instant always prints the same
/// string and scripts can compare them as text.
pub fn rfc3339(ms: i64) -> String {
    const FORMAT: &[time::format_description::FormatItem<'static>] = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(FORMAT).ok())
        .unwrap_or_else(|| ms.to_string())
}

fn storage(e: impl std::fmt::Display) -> EffectError {
    EffectError::Failed(format!(
        "the run journal could not be written, so nothing more was sent: {e}. Fix the cause, then finish the run with `keycycle resume` (see `keycycle runs`)"
    ))
}

impl Journal {
    pub fn new(
        state: Arc<dyn StateStore>,
        key: MasterKey,
        run_id: String,
        prior: Vec<EffectRecord>,
        retry_in_flight: bool,
    ) -> Journal {
        let prior_durable = std::sync::atomic::AtomicBool::new(prior.is_empty());
        Journal {
            state,
            key,
            run_id,
            prior,
            retry_in_flight,
            next: Mutex::new(0),
            prior_durable,
        }
    }

    /// Fingerprint of a request, keyed with the master key so the journal
    /// does not hold a guessable hash of a secret input.
    fn fingerprint(&self, kind: &str, name: &str, request: &str) -> String {
        let mut h = Sha256::new();
        h.update(self.key.fingerprint_key());
        h.update(kind.as_bytes());
        h.update([0]);
        h.update(name.as_bytes());
        h.update([0]);
        h.update(request.as_bytes());
        hex::encode(h.finalize())
    }

    /// Journals an effect's intent, `durability` saying whether it is a
    /// barrier (see the module docs), unless an earlier attempt did.
    fn begin(
        &self,
        kind: &str,
        name: &str,
        request: &str,
        summary: String,
        mutates: bool,
        durability: Durability,
    ) -> Result<(u64, Step), EffectError> {
        let seq = {
            let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
            *next += 1;
            *next
        };
        let fingerprint = self.fingerprint(kind, name, request);
        if let Some(record) = self.prior.get(seq as usize - 1) {
            let was = &record.intent;
            if was.kind != kind || was.name != name || was.request_fingerprint != fingerprint {
                let what = if was.kind == kind && was.name == name {
                    format!("the same {name} with different input")
                } else {
                    name.to_owned()
                };
                return Err(EffectError::Failed(format!(
                    "runbook is not deterministic: step {seq} of run {} was {} (input {}), but this time the runbook asks for {what}. \
                     The runbook, its parameters or its imports changed, or it branches on something outside the journal. \
                     Nothing more was sent; inspect the run with `keycycle show {}`",
                    self.run_id, was.name, was.request_summary, self.run_id
                )));
            }
            self.make_prior_durable()?;
            return Ok(match &record.outcome {
                Some(outcome) => (seq, Step::Replay(outcome.clone())),
                None => (seq, Step::InFlight),
            });
        }
        if durability == Durability::Durable {
            // Not one externally visible effect once the run may be
            // another runner's.
            crate::liveness::fence(&self.run_id);
        }
        let intent = EffectIntent {
            seq,
            kind: kind.to_owned(),
            name: name.to_owned(),
            request_fingerprint: fingerprint,
            request_summary: keycycle_secret::redact(&summary).into_owned(),
            mutates,
            started_at: now_ms(),
        };
        self.state
            .begin_effect_with(&self.run_id, &intent, Durability::Grouped)
            .map_err(storage)?;
        crate::debug::abort_after(|| format!("{seq}:unsynced"));
        self.barrier_if(durability)?;
        crate::debug::abort_after(|| seq.to_string());
        Ok((seq, Step::Fresh))
    }

    /// One barrier before the first step a resume takes from the journal
    /// of an earlier attempt (see `prior_durable`).
    fn make_prior_durable(&self) -> Result<(), EffectError> {
        use std::sync::atomic::Ordering;
        if !self.prior_durable.load(Ordering::Acquire) {
            self.state.sync().map_err(storage)?;
            self.prior_durable.store(true, Ordering::Release);
        }
        Ok(())
    }

    /// The store's barrier, when `durability` asks for one. A write and its
    /// barrier are two calls rather than one durable write so that a test
    /// can stop the process between them (the `N:unsynced` points).
    fn barrier_if(&self, durability: Durability) -> Result<(), EffectError> {
        match durability {
            Durability::Durable => self.state.sync().map_err(storage),
            Durability::Grouped => Ok(()),
        }
    }

    /// Journals an effect's outcome, `durability` saying whether it must
    /// be durable before the runbook sees it (see the module docs).
    fn finish(
        &self,
        seq: u64,
        result: &Result<Value, EffectError>,
        durability: Durability,
    ) -> Result<(), EffectError> {
        let outcome = match result {
            Ok(value) => EffectOutcome {
                ok: true,
                result: self.seal(value, seq, "").to_string(),
                error_kind: None,
                error: None,
                finished_at: now_ms(),
            },
            Err(e) => EffectOutcome {
                ok: false,
                result: error_detail(e).to_string(),
                error_kind: Some(e.kind().to_owned()),
                error: Some(keycycle_secret::redact(&e.to_string()).into_owned()),
                finished_at: now_ms(),
            },
        };
        self.state
            .finish_effect_with(&self.run_id, seq, &outcome, Durability::Grouped)
            .map_err(storage)?;
        crate::debug::abort_after(|| format!("{seq}:result:unsynced"));
        self.barrier_if(durability)?;
        crate::debug::abort_after(|| format!("{seq}:result"));
        Ok(())
    }

    fn seal(&self, value: &Value, seq: u64, path: &str) -> serde_json::Value {
        seal_value(&self.key, &self.run_id, value, seq, path)
    }

    fn open(&self, json: &serde_json::Value, seq: u64, path: &str) -> Result<Value, EffectError> {
        open_value(&self.key, &self.run_id, json, seq, path)
    }

    /// The recorded result of a replayed step, error included.
    fn replay(&self, seq: u64, outcome: &EffectOutcome) -> Result<Value, EffectError> {
        let json: serde_json::Value = serde_json::from_str(&outcome.result)
            .map_err(|e| EffectError::Failed(format!("journal step {seq} is unreadable: {e}")))?;
        if outcome.ok {
            return self.open(&json, seq, "");
        }
        Err(error_from_detail(&json, outcome))
    }
}

impl Drop for Journal {
    /// The end of a run is a barrier. The write that records the end is
    /// one already; this covers a run whose end could not be recorded, and
    /// costs nothing when everything is durable.
    fn drop(&mut self) {
        if let Err(e) = self.state.sync() {
            tracing::warn!(target: "keycycle", "the journal of run {} may not be on disk: {e}", self.run_id);
        }
    }
}

/// A barrier when `barrier` holds.
fn barrier_when(barrier: bool) -> Durability {
    if barrier {
        Durability::Durable
    } else {
        Durability::Grouped
    }
}

/// Whether a value holds a secret anywhere: a secret, or text with a known
/// secret in it (which the journal seals as well).
fn holds_secret(value: &Value) -> bool {
    match value {
        Value::Secret(_) => true,
        Value::String(text) => keycycle_secret::redact(text) != text.as_str(),
        Value::Map(m) => m.values().any(holds_secret),
        Value::Array(items) => items.iter().any(holds_secret),
        _ => false,
    }
}

/// How durable a plugin call's outcome must be before the runbook sees
/// it: a barrier when it holds a secret (a minted value), or when the
/// call changes the provider and is not idempotent, so a resume that lost
/// the outcome could not send it again; and when the operation is not
/// described, since then nothing is known.
fn call_outcome_durability(
    spec: Option<&keycycle_contract::OperationSpec>,
    result: &Result<Value, EffectError>,
) -> Durability {
    let unsettled = spec.is_none_or(|s| s.mutates && !s.idempotent);
    let minted = matches!(result, Ok(value) if holds_secret(value));
    barrier_when(unsettled || minted)
}

/// Enough of an error to give the runbook the same error on replay.
fn error_detail(e: &EffectError) -> serde_json::Value {
    match e {
        EffectError::Plugin {
            plugin,
            operation,
            error,
        } => {
            let (status, delay_ms, message) = match error {
                PluginError::Provider { status, message } => (Some(*status), None, message.clone()),
                PluginError::Retryable { delay_ms, message } => {
                    (None, Some(*delay_ms), message.clone())
                }
                PluginError::Denied(m) | PluginError::InvalidInput(m) => (None, None, m.clone()),
            };
            json!({"plugin": plugin, "operation": operation, "kind": error.kind(), "status": status,
                   "delay_ms": delay_ms, "message": keycycle_secret::redact(&message)})
        }
        EffectError::MissingInput { name, hint } => json!({"name": name, "hint": hint}),
        _ => json!({}),
    }
}

fn error_from_detail(json: &serde_json::Value, outcome: &EffectOutcome) -> EffectError {
    let message = outcome.error.clone().unwrap_or_default();
    let text = |k: &str| json[k].as_str().unwrap_or_default().to_owned();
    match outcome.error_kind.as_deref().unwrap_or("failed") {
        "provider" | "invalid-input" | "retryable" | "denied" if json.get("plugin").is_some() => {
            let m = text("message");
            let error = match text("kind").as_str() {
                "provider" => PluginError::Provider {
                    status: json["status"].as_u64().unwrap_or(0) as u16,
                    message: m,
                },
                "retryable" => PluginError::Retryable {
                    delay_ms: json["delay_ms"].as_u64().unwrap_or(0),
                    message: m,
                },
                "denied" => PluginError::Denied(m),
                _ => PluginError::InvalidInput(m),
            };
            EffectError::Plugin {
                plugin: text("plugin"),
                operation: text("operation"),
                error,
            }
        }
        "denied" => EffectError::Denied(message),
        "missing-input" => EffectError::MissingInput {
            name: text("name"),
            hint: text("hint"),
        },
        "locked" => EffectError::Locked(message),
        "interrupted" => EffectError::Interrupted(message),
        "rejected" => EffectError::Rejected(message),
        _ => EffectError::Failed(message),
    }
}

/// The host's effects, journaled.
pub struct JournaledEffects {
    pub inner: Arc<HostEffects>,
    pub journal: Journal,
}

impl JournaledEffects {
    fn spec(&self, plugin: &str, operation: &str) -> Option<keycycle_contract::OperationSpec> {
        self.inner
            .describe(plugin)
            .ok()
            .and_then(|d| d.operation(operation).cloned())
    }

    /// Settles a plugin call that was in flight when an earlier attempt
    /// died: send it again when that is safe, look up what it did when the
    /// plugin can, and otherwise stop and tell the operator what may have
    /// happened.
    fn settle_in_flight(
        &self,
        seq: u64,
        plugin: &str,
        operation: &str,
        input: Value,
    ) -> Result<Value, EffectError> {
        let spec = self.spec(plugin, operation);
        let mutates = spec.as_ref().is_none_or(|s| s.mutates);
        let idempotent = spec.as_ref().is_some_and(|s| s.idempotent);
        let call = format!("{plugin}.{operation}");
        let run = &self.journal.run_id;
        if !mutates || idempotent {
            tracing::warn!(target: "keycycle", "step {seq} ({call}) was under way when the run stopped; it is safe to send again, so it is being sent again");
            return self.inner.call(seq, plugin, operation, input);
        }
        if self.journal.retry_in_flight {
            // The operator vouched for it; say so, not that it is safe.
            tracing::warn!(target: "keycycle", "step {seq} ({call}) was under way when the run stopped; it changes the provider and is not safe to send twice, but --retry-in-flight says it did not happen, so it is being sent again");
            return self.inner.call(seq, plugin, operation, input);
        }
        if let Some(finder) = spec.as_ref().and_then(|s| s.recover_with.clone()) {
            tracing::warn!(target: "keycycle", "step {seq} ({call}) was under way when the run stopped; looking for what it did with {plugin}.{finder}");
            match self.look_up(seq, plugin, operation, &finder, &input) {
                Lookup::Whole(found) => {
                    tracing::info!(target: "keycycle", "step {seq} ({call}) had succeeded before the run stopped; adopting what it made");
                    return Ok(found);
                }
                Lookup::WithoutSecret(found) => {
                    return Err(EffectError::Interrupted(format!(
                        "step {seq} ({call}) was interrupted after it succeeded at the provider: {plugin}.{finder} found what it made ({}), \
                         but its secret value was shown only in the lost response. Remove or revoke that object at the provider, then run \
                         `keycycle resume {run} --retry-in-flight` to make a new one.",
                        found.to_redacted_json()
                    )));
                }
                Lookup::Nothing => {
                    tracing::info!(target: "keycycle", "step {seq} ({call}) never reached the provider; sending it now");
                    return self.inner.call(seq, plugin, operation, input);
                }
                Lookup::Failed(e) => {
                    return Err(EffectError::Interrupted(format!(
                        "step {seq} ({call}) was interrupted, and looking up what it did with {plugin}.{finder} failed: {e}. \
                         Run `keycycle resume {run}` again once the provider answers."
                    )));
                }
            }
        }
        let advice = spec
            .and_then(|s| s.if_interrupted)
            .map(|advice| {
                keycycle_host::bounded(&with_run_id(&advice, run), keycycle_host::MESSAGE_CHARS)
            })
            .unwrap_or_else(|| "check at the provider whether it happened".to_owned());
        Err(EffectError::Interrupted(format!(
            "step {seq} ({call} with {}) was under way when run {run} stopped, and its outcome is unknown: it changes the provider, \
             is not safe to send twice, and the plugin has no way to look up what it did. {advice} \
             If you are sure it did not happen, `keycycle resume {run} --retry-in-flight` sends it again.",
            input.to_redacted_json()
        )))
    }
}

impl JournaledEffects {
    /// Turns a server error or a missing answer from a call that changes
    /// the provider, may not be sent twice and cannot be looked up into an
    /// interrupted step: the provider may have carried it out before the
    /// error (a proxy's 502 after GitLab rotated a token), exactly as when
    /// the answer is lost to a crash. The step stays in flight, the run
    /// keeps its locks and ends needing attention with the plugin's advice,
    /// instead of failing as if nothing had happened.
    fn unknown_outcome(
        &self,
        seq: u64,
        plugin: &str,
        operation: &str,
        input: &Value,
        result: Result<Value, EffectError>,
    ) -> Result<Value, EffectError> {
        let Err(EffectError::Plugin {
            error: PluginError::Provider { status, message },
            ..
        }) = &result
        else {
            return result;
        };
        // 0 is the plugin's "no answer came"; 5xx may come after the work.
        if !(*status == 0 || (500..=599).contains(status)) {
            return result;
        }
        let Some(spec) = self.spec(plugin, operation) else {
            return result;
        };
        if !spec.mutates || spec.idempotent {
            return result;
        }
        let run = &self.journal.run_id;
        let call = format!("{plugin}.{operation}");
        let answer = if *status == 0 {
            "no answer".to_owned()
        } else {
            format!("HTTP {status}")
        };
        if let Some(finder) = spec.recover_with.clone() {
            return self.look_up_after(seq, plugin, operation, &finder, input, &answer, result);
        }
        let advice = spec
            .if_interrupted
            .map(|advice| {
                keycycle_host::bounded(&with_run_id(&advice, run), keycycle_host::MESSAGE_CHARS)
            })
            .unwrap_or_else(|| "Check at the provider whether it happened.".to_owned());
        Err(EffectError::Interrupted(format!(
            "step {seq} ({call} with {}) got {answer} ({}), so its outcome is unknown: it changes the provider and is not \
             safe to send twice, and the provider may have carried it out before failing. Run {run} keeps its locks. {advice} \
             If you are sure it did not happen, `keycycle resume {run} --retry-in-flight` sends it again.",
            input.to_redacted_json(),
            keycycle_secret::redact(message),
        )))
    }
}

impl JournaledEffects {
    /// A change that has a lookup got a server error or no answer: the
    /// provider may still have made it (a proxy's 502 after the work), and
    /// failing the run would leave what it made behind, unrecorded. So ask
    /// the lookup, as a resume would: adopt what it finds; on its 404
    /// nothing was made and the error stands; otherwise the step stays in
    /// flight and the run needs attention.
    #[allow(clippy::too_many_arguments)]
    fn look_up_after(
        &self,
        seq: u64,
        plugin: &str,
        operation: &str,
        finder: &str,
        input: &Value,
        answer: &str,
        result: Result<Value, EffectError>,
    ) -> Result<Value, EffectError> {
        let run = &self.journal.run_id;
        let call = format!("{plugin}.{operation}");
        tracing::warn!(target: "keycycle", "step {seq} ({call}) got {answer}; the provider may have carried it out, so looking for what it did with {plugin}.{finder}");
        match self.look_up(seq, plugin, operation, finder, input) {
            Lookup::Whole(found) => {
                tracing::info!(target: "keycycle", "step {seq} ({call}) had succeeded despite {answer}; adopting what it made");
                Ok(found)
            }
            Lookup::WithoutSecret(found) => Err(EffectError::Interrupted(format!(
                "step {seq} ({call}) got {answer}, but the provider carried it out: {plugin}.{finder} found what it made ({}), \
                 and its secret value was only in the lost response. Run {run} keeps its locks. Remove or revoke that object at \
                 the provider, then run `keycycle resume {run} --retry-in-flight` to make a new one.",
                found.to_redacted_json()
            ))),
            Lookup::Nothing => {
                tracing::info!(target: "keycycle", "step {seq} ({call}) made nothing at the provider");
                result
            }
            Lookup::Failed(e) => Err(EffectError::Interrupted(format!(
                "step {seq} ({call}) got {answer}, and looking up what it did with {plugin}.{finder} failed: {e}. Run {run} keeps \
                 its locks; run `keycycle resume {run}` once the provider answers."
            ))),
        }
    }
}

impl JournaledEffects {
    /// Asks an external system (a change-management API, through a plugin)
    /// for the decision on a pending request: every `every_secs` for up to
    /// `wait_secs` in this attempt, and rejects the request once
    /// `deadline_secs` have passed since it was made. The questions are not
    /// journaled steps (how many are asked differs from one attempt to the
    /// next); the decision is, through the request's record, so a resume
    /// neither asks again nor restarts the deadline.
    fn poll_gate(
        &self,
        id: &str,
        poll: &keycycle_runbook::ApprovalPoll,
        mut record: keycycle_store::state::ApprovalRecord,
    ) -> Result<keycycle_store::state::ApprovalRecord, EffectError> {
        let call = format!("{}.{}", poll.plugin, poll.operation);
        let started = std::time::Instant::now();
        loop {
            let answer = self
                .inner
                .invoke(&poll.plugin, &poll.operation, poll.input.clone());
            // The change system's words reach logs, the audit trail and
            // `keycycle approvals`: one line each, controls escaped, bounded.
            let text = |v: &Value, key: &str| match v.get(key) {
                Some(Value::String(s)) => Some(
                    keycycle_host::one_line(s)
                        .chars()
                        .take(MAX_POLL_TEXT)
                        .collect::<String>(),
                ),
                _ => None,
            };
            let (state, by, comment) = match &answer {
                Ok(v) => (
                    text(v, "state").unwrap_or_default().to_ascii_lowercase(),
                    text(v, "by"),
                    text(v, "comment"),
                ),
                Err(e) => {
                    tracing::warn!(target: "keycycle", "asking {call} about change request {id} failed: {}; it stays pending", keycycle_host::one_line(&e.to_string()));
                    (String::new(), None, None)
                }
            };
            let overdue =
                now_ms() - record.request.requested_at > (poll.deadline_secs as i64) * 1000;
            let decision = match state.as_str() {
                "approved" | "rejected" => Some(keycycle_store::state::ApprovalDecision {
                    approved: state == "approved",
                    by: match by {
                        Some(who) => format!("{who} (through {call})"),
                        None => call.clone(),
                    },
                    host: crate::who::host(),
                    at: now_ms(),
                    comment,
                }),
                _ if overdue => Some(keycycle_store::state::ApprovalDecision {
                    approved: false,
                    by: "the deadline".to_owned(),
                    host: crate::who::host(),
                    at: now_ms(),
                    comment: Some(format!(
                        "{call} gave no decision within {} s of the request",
                        poll.deadline_secs
                    )),
                }),
                _ => None,
            };
            if let Some(decision) = decision {
                let decided = match self.journal.state.decide_approval(id, &decision) {
                    Ok(decided) => {
                        let verb = if decision.approved {
                            "approved"
                        } else {
                            "rejected"
                        };
                        let _ = self.journal.state.append_event(
                            &self.journal.run_id,
                            &keycycle_store::state::RunEvent {
                                at: decision.at,
                                kind: verb.to_owned(),
                                message: format!(
                                    "change request {id} {verb} by {}{}",
                                    decision.by,
                                    decision
                                        .comment
                                        .as_deref()
                                        .map(|c| format!(": {c}"))
                                        .unwrap_or_default()
                                ),
                            },
                        );
                        decided
                    }
                    // A person decided in the meantime: theirs stands.
                    Err(keycycle_store::state::StateError::AlreadyDecided { .. }) => self
                        .journal
                        .state
                        .approval(id)
                        .map_err(storage)?
                        .unwrap_or(record),
                    Err(e) => return Err(storage(e)),
                };
                return Ok(decided);
            }
            tracing::info!(target: "keycycle", "{call} says change request {id} is {}", if state.is_empty() { "not decided" } else { &state });
            if started.elapsed() >= std::time::Duration::from_secs(poll.wait_secs) {
                // A person may have decided while the system said nothing.
                record = self
                    .journal
                    .state
                    .approval(id)
                    .map_err(storage)?
                    .unwrap_or(record);
                return Ok(record);
            }
            std::thread::sleep(std::time::Duration::from_secs(poll.every_secs));
        }
    }
}

/// The most of a change system's `state`, `by` or `comment` kept.
const MAX_POLL_TEXT: usize = 300;

/// What a `recover_with` lookup found out about a change whose answer was
/// lost.
enum Lookup {
    /// What the change made, with every secret output: adopt it.
    Whole(Value),
    /// What it made, but a secret was only in the lost answer.
    WithoutSecret(Value),
    /// The lookup's 404: the change made nothing.
    Nothing,
    /// The lookup itself failed; nothing is known.
    Failed(EffectError),
}

impl JournaledEffects {
    /// Asks `finder` (the operation's `recover_with`) what `operation` made
    /// in step `seq`: the one lookup both a resume and a live run that got
    /// a server error use.
    fn look_up(
        &self,
        seq: u64,
        plugin: &str,
        operation: &str,
        finder: &str,
        input: &Value,
    ) -> Lookup {
        match self.inner.call(seq, plugin, finder, input.clone()) {
            Ok(found) => {
                let outputs = self
                    .spec(plugin, operation)
                    .map(|s| s.secret_outputs)
                    .unwrap_or_default();
                if recovered_whole(&found, &outputs) {
                    Lookup::Whole(found)
                } else {
                    Lookup::WithoutSecret(found)
                }
            }
            Err(EffectError::Plugin {
                error: PluginError::Provider { status: 404, .. },
                ..
            }) => Lookup::Nothing,
            Err(e) => Lookup::Failed(e),
        }
    }
}

/// Whether a lookup found everything the lost answer held: each declared
/// secret output is there as a secret, or there as null when it does not
/// apply to what was made (a secret type without a password, say). A field
/// left out means the finder could not see the value: it was only in the
/// lost answer.
fn recovered_whole(found: &Value, secret_outputs: &[String]) -> bool {
    secret_outputs
        .iter()
        .all(|f| matches!(found.get(f), Some(Value::Secret(_) | Value::Null)))
}

/// A plugin's advice with the placeholder `RUN_ID` replaced by the run's
/// id: plugins write their advice before any run exists, and an operator
/// should be able to copy the command it gives as it stands. Only the
/// whole word is replaced, so a name such as `OLD_RUN_ID` stays as it is.
fn with_run_id(advice: &str, run_id: &str) -> String {
    const PLACEHOLDER: &str = "RUN_ID";
    let word = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
    let mut out = String::with_capacity(advice.len());
    let mut rest = advice;
    while let Some(at) = rest.find(PLACEHOLDER) {
        let before = rest[..at].chars().next_back().or(out.chars().next_back());
        let after = rest[at + PLACEHOLDER.len()..].chars().next();
        out.push_str(&rest[..at]);
        out.push_str(if word(before) || word(after) {
            PLACEHOLDER
        } else {
            run_id
        });
        rest = &rest[at + PLACEHOLDER.len()..];
    }
    out.push_str(rest);
    out
}

impl Effects for JournaledEffects {
    fn plugin_names(&self) -> Vec<String> {
        self.inner.plugin_names()
    }

    fn describe(&self, plugin: &str) -> Result<Arc<PluginDescription>, EffectError> {
        self.inner.describe(plugin)
    }

    fn invoke(&self, plugin: &str, operation: &str, input: Value) -> Result<Value, EffectError> {
        let spec = self.spec(plugin, operation);
        let mutates = spec.as_ref().is_none_or(|s| s.mutates);
        let name = format!("{plugin}.{operation}");
        // A call that may change the provider is externally visible: its
        // intent, and everything before it, is durable before it is sent.
        let (seq, step) = self.journal.begin(
            "plugin",
            &name,
            &input.to_plugin_json(),
            input.to_redacted_json().to_string(),
            mutates,
            barrier_when(mutates),
        )?;
        let result = match step {
            Step::Replay(outcome) => return self.journal.replay(seq, &outcome),
            Step::Fresh => {
                let result = self.inner.call(seq, plugin, operation, input.clone());
                self.unknown_outcome(seq, plugin, operation, &input, result)
            }
            Step::InFlight => self.settle_in_flight(seq, plugin, operation, input),
        };
        // An interrupted step stays in flight in the journal: the next
        // resume must face the same question.
        if !matches!(result, Err(EffectError::Interrupted(_))) {
            let durability = call_outcome_durability(spec.as_ref(), &result);
            self.journal.finish(seq, &result, durability)?;
        }
        result
    }

    fn secret(&self, name: &str) -> Result<SecretValue, EffectError> {
        let (seq, step) = self.journal.begin(
            "secret",
            &format!("secret:{name}"),
            name,
            name.to_owned(),
            false,
            // A read of the local store: seen by nobody, and a resume that
            // lost it reads it again.
            Durability::Grouped,
        )?;
        let result = match step {
            Step::Replay(outcome) => self.journal.replay(seq, &outcome),
            Step::Fresh | Step::InFlight => {
                let r = self.inner.secret(name).map(Value::Secret);
                self.journal.finish(seq, &r, Durability::Grouped)?;
                r
            }
        };
        match result? {
            Value::Secret(s) => Ok(s),
            _ => Err(EffectError::Failed(format!(
                "journal step {seq} does not hold a secret"
            ))),
        }
    }

    fn store_secret(&self, name: &str, value: &SecretValue) -> Result<(), EffectError> {
        // The value only feeds the keyed fingerprint; wipe this copy after.
        let request = zeroize::Zeroizing::new(format!("{name}\0{}", value.expose()));
        let (seq, step) = self.journal.begin(
            "store_secret",
            &format!("store_secret:{name}"),
            &request,
            name.to_owned(),
            true,
            // A secret write is externally visible.
            Durability::Durable,
        )?;
        match step {
            Step::Replay(outcome) => self.journal.replay(seq, &outcome).map(|_| ()),
            // Writing the same value again is harmless.
            Step::Fresh | Step::InFlight => {
                let r = self.inner.store_secret(name, value).map(|()| Value::Null);
                // Lost, the step is in flight on resume and the same value
                // is written again.
                self.journal.finish(seq, &r, Durability::Grouped)?;
                r.map(|_| ())
            }
        }
    }

    fn prompt(&self, prompt: &Prompt) -> Result<Answer, EffectError> {
        let kind = match prompt.kind {
            PromptKind::Text => "text",
            PromptKind::Secret => "secret",
            PromptKind::Confirm => "confirm",
        };
        let (seq, step) = self.journal.begin(
            "prompt",
            &format!("prompt:{}", prompt.name),
            &format!("{kind}\0{}", prompt.text),
            prompt.text.clone(),
            false,
            // A person sees the prompt and may act on it.
            Durability::Durable,
        )?;
        let value = match step {
            Step::Replay(outcome) => self.journal.replay(seq, &outcome)?,
            Step::Fresh | Step::InFlight => {
                let r = self.inner.prompt(prompt).map(|a| match a {
                    Answer::Text(t) => Value::String(t),
                    Answer::Secret(s) => Value::Secret(s),
                    Answer::Confirm(b) => Value::Bool(b),
                });
                // A missing answer is not recorded: the resume may bring it.
                // A given one is durable at once: the person (or what they
                // pasted: a token they made) cannot be asked twice.
                if !matches!(r, Err(EffectError::MissingInput { .. })) {
                    self.journal.finish(seq, &r, Durability::Durable)?;
                }
                r?
            }
        };
        Ok(match value {
            Value::Secret(s) => Answer::Secret(s),
            Value::Bool(b) => Answer::Confirm(b),
            Value::String(t) => Answer::Text(t),
            other => Answer::Text(other.to_redacted_json().to_string()),
        })
    }

    fn now(&self) -> Result<i64, EffectError> {
        let (seq, step) =
            self.journal
                .begin("now", "now", "", String::new(), false, Durability::Grouped)?;
        let value = match step {
            Step::Replay(outcome) => self.journal.replay(seq, &outcome)?,
            Step::Fresh | Step::InFlight => {
                let r = self.inner.now().map(Value::Int);
                self.journal.finish(seq, &r, Durability::Grouped)?;
                r?
            }
        };
        match value {
            Value::Int(t) => Ok(t),
            _ => Err(EffectError::Failed(format!(
                "journal step {seq} does not hold a time"
            ))),
        }
    }

    fn random_secret(&self, bytes: usize) -> Result<SecretValue, EffectError> {
        let (seq, step) = self.journal.begin(
            "random",
            "random",
            &bytes.to_string(),
            bytes.to_string(),
            false,
            Durability::Grouped,
        )?;
        let value = match step {
            Step::Replay(outcome) => self.journal.replay(seq, &outcome)?,
            Step::Fresh | Step::InFlight => {
                let r = self.inner.random_secret(bytes).map(Value::Secret);
                // Grouped: nobody has seen the value yet, and whatever
                // shows it (a change, a secret write) is a barrier first. A
                // resume that lost it draws another.
                self.journal.finish(seq, &r, Durability::Grouped)?;
                r?
            }
        };
        match value {
            Value::Secret(s) => Ok(s),
            _ => Err(EffectError::Failed(format!(
                "journal step {seq} does not hold a random value"
            ))),
        }
    }

    fn log(&self, level: LogLevel, message: &str) {
        self.inner.log(level, message)
    }

    fn is_dry_run(&self) -> bool {
        false
    }

    fn lock(&self, credential: &str) -> Result<(), EffectError> {
        let (seq, step) = self.journal.begin(
            "lock",
            &format!("lock:{credential}"),
            credential,
            credential.to_owned(),
            false,
            // Taking the lock is a durable write of its own.
            Durability::Grouped,
        )?;
        // Replayed or not, the lock is taken again: a crashed run keeps its
        // locks until it is resumed, so the resume finds them its own.
        let run = &self.journal.run_id;
        let result = match self.journal.state.acquire_lock(credential, run) {
            Ok(LockAttempt::Acquired) => {
                tracing::info!(target: "keycycle", "locked {credential} for run {run}");
                Ok(Value::Null)
            }
            Ok(LockAttempt::AlreadyHeld) => Ok(Value::Null),
            Ok(LockAttempt::HeldBy(holder)) => {
                let who = self
                    .journal
                    .state
                    .run(&holder.run_id)
                    .ok()
                    .flatten()
                    .map(|r| {
                        format!(
                            ", started by {}@{} running {}",
                            r.user, r.host, r.runbook_path
                        )
                    })
                    .unwrap_or_default();
                Err(EffectError::Locked(format!(
                    "{credential} is locked by run {}{who}; nothing was changed. Wait for it to finish, resume it with \
                     `keycycle resume {}`, or, if it will never finish, release it with `keycycle unlock {credential}`",
                    holder.run_id, holder.run_id
                )))
            }
            Err(e) => Err(storage(e)),
        };
        if !matches!(step, Step::Replay(_)) {
            self.journal.finish(seq, &result, Durability::Grouped)?;
        }
        result.map(|_| ())
    }

    fn approval(&self, request: &ApprovalRequest) -> Result<Value, EffectError> {
        let run = self.journal.run_id.clone();
        let id = format!("{run}:{}", request.id);
        let place = crate::approvals::where_text(&request.environments);
        let (seq, step) = self.journal.begin(
            "approval",
            &format!("approval:{}", request.id),
            &format!(
                "{}\0{}\0{}\0{}",
                request.title,
                request.summary,
                request.environments.join(","),
                request.approvers.join(",")
            ),
            format!("{}, {place}", request.title),
            false,
            // The change request and its decision are durable writes of
            // their own; a resume that lost this step asks for the same
            // request and finds its decision.
            Durability::Grouped,
        )?;
        if let Step::Replay(outcome) = &step {
            return self.journal.replay(seq, outcome);
        }
        let requester = self
            .journal
            .state
            .run(&run)
            .map_err(storage)?
            .map(|r| r.user)
            .unwrap_or_else(crate::who::user);
        let new = NewApproval {
            id: id.clone(),
            run_id: run.clone(),
            title: request.title.clone(),
            summary: request.summary.clone(),
            environments: request.environments.clone(),
            approvers: self
                .inner
                .approval_rules
                .requirements(&request.approvers, &request.environments),
            requested_by: requester,
            requested_host: crate::who::host(),
            requested_at: now_ms(),
        };
        let mut record = self.journal.state.request_approval(&new).map_err(storage)?;
        if let (ApprovalState::Pending, Some(poll)) = (record.state, &request.poll) {
            record = self.poll_gate(&id, poll, record)?;
        }
        let by = record.decided_by.clone().unwrap_or_default();
        let comment = record.comment.clone().unwrap_or_default();
        match record.state {
            ApprovalState::Pending => {
                let needs = if record.request.approvers.is_empty() {
                    format!("anyone but {}", record.request.requested_by)
                } else {
                    format!(
                        "one of {}, and not {}",
                        record
                            .request
                            .approvers
                            .join("; and one of ")
                            .replace('|', ", "),
                        record.request.requested_by
                    )
                };
                // Not finished in the journal: the resume asks again, and
                // finds the decision.
                Err(EffectError::AwaitingApproval(format!(
                    "run {run} waits for approval of change request {id}: {} ({place}). It keeps its locks. \
                     It needs {needs}: `keycycle approve {id}` (or `keycycle reject {id} --reason TEXT`), \
                     then `keycycle resume {run}` goes on",
                    record.request.title
                )))
            }
            ApprovalState::Approved => {
                // Whoever decided typed these words; a log line stays one line.
                tracing::info!(target: "keycycle", "change request {id} was approved by {}{}", keycycle_host::one_line(&by), if comment.is_empty() { String::new() } else { format!(": {}", keycycle_host::one_line(&comment)) });
                let decision = Value::Map(
                    [
                        ("approved".to_owned(), Value::Bool(true)),
                        ("request".to_owned(), Value::String(id)),
                        ("by".to_owned(), Value::String(by)),
                        (
                            "at".to_owned(),
                            Value::Int(record.decided_at.unwrap_or_default()),
                        ),
                        ("comment".to_owned(), Value::String(comment)),
                    ]
                    .into_iter()
                    .collect(),
                );
                let result = Ok(decision);
                self.journal.finish(seq, &result, Durability::Grouped)?;
                result
            }
            ApprovalState::Rejected => {
                let result = Err(EffectError::Rejected(format!(
                    "change request {id} was rejected by {by}{}; run {run} ends here: nothing more is sent, and its locks are released",
                    if comment.is_empty() {
                        String::new()
                    } else {
                        format!(": {comment}")
                    }
                )));
                self.journal.finish(seq, &result, Durability::Grouped)?;
                result
            }
        }
    }

    fn defer(
        &self,
        plugin: &str,
        operation: &str,
        input: Value,
        delay_secs: i64,
        description: &str,
    ) -> Result<String, EffectError> {
        let name = format!("defer:{plugin}.{operation}");
        let (seq, step) = self.journal.begin(
            "defer",
            &name,
            &format!("{}\0{delay_secs}\0{description}", input.to_plugin_json()),
            format!(
                "{description} in {delay_secs} s: {}",
                input.to_redacted_json()
            ),
            true,
            // Scheduling is a durable write of its own, and idempotent on
            // the action's id, which the step's number names.
            Durability::Grouped,
        )?;
        let id = deferred_action_id(&self.journal.run_id, seq);
        if let Step::Replay(outcome) = &step {
            self.journal.replay(seq, outcome)?;
            return Ok(id);
        }
        let action = NewDeferred {
            id: id.clone(),
            run_id: self.journal.run_id.clone(),
            credential: None,
            description: description.to_owned(),
            plugin: plugin.to_owned(),
            operation: operation.to_owned(),
            input: self.journal.seal(&input, seq, DEFERRED_INPUT).to_string(),
            due_at: now_ms() + delay_secs * 1000,
        };
        // Scheduling is idempotent on the id, so a replayed in-flight step
        // cannot schedule twice.
        let result = self
            .journal
            .state
            .schedule(&action)
            .map(|_| Value::String(id.clone()))
            .map_err(storage);
        self.journal.finish(seq, &result, Durability::Grouped)?;
        tracing::info!(target: "keycycle", "scheduled {description} ({plugin}.{operation}) to run in {delay_secs} s as action {id}");
        result.map(|_| id)
    }
}

/// Where in a step's sealing context a deferred action's input lives.
const DEFERRED_INPUT: &str = "deferred";

/// A deferred action is named after the run and the journal step that
/// scheduled it: the same step of a resumed run schedules the same action,
/// and its sealed input is bound to that step.
fn deferred_action_id(run_id: &str, seq: u64) -> String {
    format!("{run_id}-{seq}")
}

/// The input of an action scheduled by [`JournaledEffects::defer`], with
/// its secrets unsealed.
pub fn open_deferred_input(key: &MasterKey, action: &DeferredRecord) -> Result<Value, String> {
    let seq = action
        .id
        .strip_prefix(&action.run_id)
        .and_then(|rest| rest.strip_prefix('-'))
        .and_then(|seq| seq.parse::<u64>().ok())
        .ok_or_else(|| {
            format!(
                "action {} was not scheduled by a runbook of run {}, so its input cannot be opened",
                action.id, action.run_id
            )
        })?;
    let json: serde_json::Value = serde_json::from_str(&action.input)
        .map_err(|e| format!("the stored input of action {} is not JSON: {e}", action.id))?;
    open_value(key, &action.run_id, &json, seq, DEFERRED_INPUT).map_err(|e| e.to_string())
}

fn context(run_id: &str, seq: u64, path: &str) -> String {
    format!("journal:{run_id}:{seq}:{path}")
}

/// The JSON a value is journaled as: secrets sealed with the master key,
/// bound to the run, step and field they belong to, so a sealed value
/// cannot be moved to another place in the journal.
pub fn seal_value(
    key: &MasterKey,
    run_id: &str,
    value: &Value,
    seq: u64,
    path: &str,
) -> serde_json::Value {
    match value {
        Value::Secret(s) => json!({ SEALED: key.seal(s.expose(), &context(run_id, seq, path)) }),
        Value::String(text) if keycycle_secret::redact(text) != text.as_str() => {
            json!({ SEALED_TEXT: key.seal(text, &context(run_id, seq, path)) })
        }
        Value::Map(m) => serde_json::Value::Object(
            m.iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        seal_value(key, run_id, v, seq, &format!("{path}.{k}")),
                    )
                })
                .collect(),
        ),
        Value::Array(items) => serde_json::Value::Array(
            items
                .iter()
                .enumerate()
                .map(|(i, v)| seal_value(key, run_id, v, seq, &format!("{path}[{i}]")))
                .collect(),
        ),
        other => other.to_redacted_json(),
    }
}

pub fn open_value(
    key: &MasterKey,
    run_id: &str,
    json: &serde_json::Value,
    seq: u64,
    path: &str,
) -> Result<Value, EffectError> {
    use serde_json::Value as J;
    Ok(match json {
        J::Object(m) if m.len() == 1 && m.contains_key(SEALED) => {
            let sealed = m[SEALED].as_str().unwrap_or_default();
            let value = key.open(sealed, &context(run_id, seq, path)).map_err(|e| {
                EffectError::Failed(format!("journal step {seq} of run {run_id}: {e}"))
            })?;
            Value::Secret(value)
        }
        J::Object(m) if m.len() == 1 && m.contains_key(SEALED_TEXT) => {
            let sealed = m[SEALED_TEXT].as_str().unwrap_or_default();
            let value = key.open(sealed, &context(run_id, seq, path)).map_err(|e| {
                EffectError::Failed(format!("journal step {seq} of run {run_id}: {e}"))
            })?;
            Value::String(value.expose().to_owned())
        }
        J::Object(m) => Value::Map(
            m.iter()
                .map(|(k, v)| {
                    Ok((
                        k.clone(),
                        open_value(key, run_id, v, seq, &format!("{path}.{k}"))?,
                    ))
                })
                .collect::<Result<BTreeMap<_, _>, EffectError>>()?,
        ),
        J::Array(items) => Value::Array(
            items
                .iter()
                .enumerate()
                .map(|(i, v)| open_value(key, run_id, v, seq, &format!("{path}[{i}]")))
                .collect::<Result<_, _>>()?,
        ),
        other => Value::from_json(other.clone()),
    })
}

#[cfg(test)]
mod tests {
    use super::{Durability, EffectError, Value, call_outcome_durability, with_run_id};
    use keycycle_contract::OperationSpec;
    use keycycle_secret::SecretValue;

    fn spec(mutates: bool, idempotent: bool) -> OperationSpec {
        OperationSpec {
            name: "op".to_owned(),
            doc: String::new(),
            inputs: Vec::new(),
            secret_outputs: Vec::new(),
            mutates,
            recover_with: None,
            idempotent,
            if_interrupted: None,
        }
    }

    #[test]
    fn a_call_outcome_is_a_barrier_when_minted_unsettled_or_unknown() {
        let plain = Ok(Value::Map(
            [("id".to_owned(), Value::Int(7))].into_iter().collect(),
        ));
        let minted = Ok(Value::Map(
            [(
                "token".to_owned(),
                Value::Secret(SecretValue::new("glpat-minted-0123456789")),
            )]
            .into_iter()
            .collect(),
        ));
        let failed = Err(EffectError::Failed("no".to_owned()));
        let read = spec(false, false);
        let idempotent = spec(true, true);
        let change = spec(true, false);
        assert_eq!(
            call_outcome_durability(Some(&read), &plain),
            Durability::Grouped
        );
        assert_eq!(
            call_outcome_durability(Some(&read), &failed),
            Durability::Grouped
        );
        assert_eq!(
            call_outcome_durability(Some(&idempotent), &plain),
            Durability::Grouped
        );
        // A secret in the answer: nothing could make it again.
        assert_eq!(
            call_outcome_durability(Some(&read), &minted),
            Durability::Durable
        );
        assert_eq!(
            call_outcome_durability(Some(&idempotent), &minted),
            Durability::Durable
        );
        // A change a resume could not send again, whatever its answer.
        assert_eq!(
            call_outcome_durability(Some(&change), &plain),
            Durability::Durable
        );
        assert_eq!(
            call_outcome_durability(Some(&change), &failed),
            Durability::Durable
        );
        // Nothing known of the operation: conservative.
        assert_eq!(call_outcome_durability(None, &plain), Durability::Durable);
    }

    #[test]
    fn advice_gets_the_run_id_in_place_of_the_placeholder() {
        assert_eq!(
            with_run_id("run `keycycle resume RUN_ID --retry-in-flight`.", "3f2a"),
            "run `keycycle resume 3f2a --retry-in-flight`."
        );
        assert_eq!(with_run_id("RUN_ID", "3f2a"), "3f2a");
        assert_eq!(
            with_run_id("OLD_RUN_ID and RUN_IDS", "3f2a"),
            "OLD_RUN_ID and RUN_IDS"
        );
        assert_eq!(with_run_id("no placeholder", "3f2a"), "no placeholder");
    }
}
