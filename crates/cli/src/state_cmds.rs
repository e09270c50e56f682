//! The commands over durable state: unfinished runs, locks, deferred
//! actions and the audit history.

use std::collections::BTreeMap;
use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use keycycle_contract::CallContext;
use keycycle_store::state::{
    DeferredFilter, DeferredRecord, DeferredState, LockRecord, RunEvent, RunFilter, RunRecord,
    RunState, StateError, StateStore,
};
use serde_json::json;

use crate::config::Config;
use crate::durable::{hold_run_file, host, open_existing_state, user};
use crate::exit::Code;
use crate::run::load_plugins;
use crate::store::StoreAccess;
use keycycle_engine::LoadedPlugin;
use keycycle_engine::journal::{now_ms, open_deferred_input, rfc3339};
use keycycle_engine::liveness::Periodic;

/// How long a cleanup process may hold an action before another may take
/// it over (it is assumed dead).
const LEASE: Duration = Duration::from_secs(600);
/// Attempts before an action is marked failed and left for an operator.
const MAX_ATTEMPTS: u32 = 8;

fn when(ms: i64) -> String {
    rfc3339(ms)
}

/// A run's state as shown in text and JSON: kebab-case, like the exit-code
/// words (`needs-attention`). The database keeps its own spelling.
pub fn state_name(state: RunState) -> &'static str {
    match state {
        RunState::Running => "running",
        RunState::Succeeded => "succeeded",
        RunState::Failed => "failed",
        RunState::NeedsAttention => "needs-attention",
        RunState::WaitingForApproval => "waiting-for-approval",
        RunState::Rejected => "rejected",
    }
}

/// Parses `--state`: the names [`state_name`] gives (the database's
/// `needs_attention` is accepted too).
pub fn parse_state(text: &str) -> Result<RunState, String> {
    RunState::ALL
        .into_iter()
        .find(|s| state_name(*s) == text || s.as_str() == text)
        .ok_or_else(|| {
            format!(
                "`{text}` is not a run state; use one of: {}",
                RunState::ALL.map(state_name).join(", ")
            )
        })
}

/// Parses `--since`: an RFC 3339 time (`2026-11-29T19:21:12Z`), a date
/// (`2026-11-29`, midnight UTC), or a duration back from now (`30m`,
/// `24h`, `7d`, `2w`). Returns Unix milliseconds.
pub fn parse_since(text: &str) -> Result<i64, String> {
    let usage = || {
        format!(
            "`{text}` is not a time; use an RFC 3339 time (2026-11-29T19:21:12Z), a date (2026-11-29), \
             or a duration back from now (30m, 24h, 7d, 2w)"
        )
    };
    // A duration is digits and one unit letter; anything else is a time.
    let unit_at = text.char_indices().last().map_or(0, |(i, _)| i);
    let (digits, unit) = text.split_at(unit_at);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        let count: i64 = digits.parse().map_err(|_| usage())?;
        let unit_ms: i64 = match unit {
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "w" => 7 * 86_400_000,
            _ => return Err(usage()),
        };
        return Ok(now_ms().saturating_sub(count.saturating_mul(unit_ms)));
    }
    use time::format_description::well_known::Rfc3339;
    if let Ok(t) = time::OffsetDateTime::parse(text, &Rfc3339) {
        return Ok((t.unix_timestamp_nanos() / 1_000_000) as i64);
    }
    let date_format = time::macros::format_description!("[year]-[month]-[day]");
    if let Ok(d) = time::Date::parse(text, date_format) {
        return Ok(d.midnight().assume_utc().unix_timestamp() * 1000);
    }
    Err(usage())
}

fn print_json(value: &serde_json::Value) -> Result<()> {
    outln!(
        "{}",
        keycycle_secret::redact(&serde_json::to_string_pretty(value)?)
    );
    Ok(())
}

/// A run as every JSON output shows it (see docs/json.md). `locks` are
/// the credentials it holds now; `credentials` every one it ever locked.
fn run_json(run: &RunRecord, locks: &[LockRecord]) -> serde_json::Value {
    json!({
        "run_id": run.run_id,
        "state": state_name(run.state),
        "runbook": run.runbook_path,
        "runbook_sha256": run.runbook_sha256,
        "params": run.params,
        "env": run.env,
        "user": run.user,
        "host": run.host,
        "plugins": run.plugins,
        "started_at": when(run.started_at),
        "finished_at": run.finished_at.map(when),
        "credentials": run.credentials,
        "locks": held_by(locks, &run.run_id),
        "detail": run.detail,
    })
}

fn held_by<'a>(locks: &'a [LockRecord], run_id: &str) -> Vec<&'a str> {
    locks
        .iter()
        .filter(|l| l.run_id == run_id)
        .map(|l| l.credential.as_str())
        .collect()
}

fn list_or_none(items: &[&str]) -> String {
    if items.is_empty() {
        "none".to_owned()
    } else {
        items.join(", ")
    }
}

/// What a listing prints when there is no state database yet: nothing,
/// said plainly, and no database created to say it.
fn nothing_yet(config: &Config, as_json: bool) -> Result<()> {
    if as_json {
        outln!("[]");
    } else {
        note!(
            "nothing has run with the state folder {} yet",
            config.state_dir.display()
        );
    }
    Ok(())
}

/// `keycycle runs`: runs that did not finish.
pub fn runs(config: &Config, as_json: bool) -> Result<()> {
    let Some(state) = open_existing_state(config)? else {
        return nothing_yet(config, as_json);
    };
    let runs = state
        .list_runs(&RunFilter {
            states: vec![
                RunState::Running,
                RunState::NeedsAttention,
                RunState::WaitingForApproval,
            ],
            ..RunFilter::default()
        })
        .context(Code::Config)?;
    let locks = state.locks().context(Code::Config)?;
    if as_json {
        return print_json(&json!(
            runs.iter().map(|r| run_json(r, &locks)).collect::<Vec<_>>()
        ));
    }
    if runs.is_empty() {
        note!("every run finished");
        return Ok(());
    }
    outln!("RUN_ID\tSTATE\tRUNBOOK\tSTARTED\tBY\tLOCKS");
    for r in runs {
        outln!(
            "{}\t{}\t{}\t{}\t{}@{}\t{}",
            r.run_id,
            state_name(r.state),
            r.runbook_path,
            when(r.started_at),
            r.user,
            r.host,
            list_or_none(&held_by(&locks, &r.run_id)),
        );
    }
    Ok(())
}

/// `keycycle unlock CREDENTIAL`: releases a lock after confirmation.
pub fn unlock(config: &Config, credential: &str, yes: bool) -> Result<()> {
    let Some(state) = open_existing_state(config)? else {
        return Err(anyhow!(
            "{credential} is not locked: there is no state database in {}, so nothing has run with this configuration yet (`keycycle -v` shows which config and state folder are in use)",
            config.state_dir.display()
        ))
        .context(Code::Config);
    };
    let Some(lock) = state
        .locks()
        .context(Code::Config)?
        .into_iter()
        .find(|l| l.credential == credential)
    else {
        return Err(anyhow!(
            "{credential} is not locked; `keycycle runs` lists the locks runs hold"
        ))
        .context(Code::Config);
    };
    // A live run is rotating the credential right now: releasing its lock
    // would let a second run rotate it at the same time. The run's lock
    // file tells, as it does for `resume`; holding it while releasing also
    // keeps the run from being resumed meanwhile.
    let _alive = hold_run_file(config, &lock.run_id).with_context(|| {
        format!("{credential} was not released, because the run holding it is alive")
    })?;
    let question = format!(
        "{credential} is locked by run {} since {}. If that run is still rotating it, releasing the lock allows a double rotation. Release it?",
        lock.run_id,
        when(lock.acquired_at)
    );
    if !confirmed(
        &question,
        yes,
        &format!("releasing the lock of run {} on {credential}", lock.run_id),
    )? {
        crate::out::done(
            json!({"ok": true, "released": null, "kept": credential, "run_id": lock.run_id}),
            format_args!("the lock was kept"),
        );
        return Ok(());
    }
    state.release_lock(credential).context(Code::Config)?;
    state
        .append_event(
            &lock.run_id,
            &RunEvent {
                at: now_ms(),
                kind: "unlocked".into(),
                message: format!("{credential} released by {}@{}", user(), host()),
            },
        )
        .context(Code::Config)?;
    crate::out::done(
        json!({"ok": true, "released": credential, "run_id": lock.run_id}),
        format_args!("released {credential} (it was held by run {})", lock.run_id),
    );
    Ok(())
}

/// Asks a yes/no question at the terminal; refuses without one.
fn confirmed(question: &str, yes: bool, without_terminal: &str) -> Result<bool> {
    if yes {
        return Ok(true);
    }
    if !std::io::stdin().is_terminal() {
        return Err(anyhow!(
            "{without_terminal} needs confirmation; pass --yes when there is no terminal"
        ))
        .context(Code::InputRequired);
    }
    err!("{question} [y/N] ");
    std::io::stderr().flush()?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(matches!(
        line.trim().to_ascii_lowercase().as_str(),
        "y" | "yes"
    ))
}

/// `keycycle abandon RUN_ID`: ends a run that will not be resumed, so it
/// leaves `keycycle runs` and frees its credentials.
pub fn abandon(config: &Config, run_id: &str, reason: &str, yes: bool) -> Result<()> {
    let Some(state) = open_existing_state(config)? else {
        return Err(anyhow!(
            "there is no run {run_id}: there is no state database in {}, so nothing has run with this configuration yet (`keycycle -v` shows which config and state folder are in use)",
            config.state_dir.display()
        ))
        .context(Code::Config);
    };
    let run = state
        .run(run_id)
        .context(Code::Config)?
        .ok_or_else(|| anyhow!("there is no run {run_id}"))
        .context(Code::Config)?;
    if matches!(
        run.state,
        keycycle_store::state::RunState::Succeeded
            | keycycle_store::state::RunState::Failed
            | keycycle_store::state::RunState::Rejected
    ) {
        return Err(anyhow!(
            "run {run_id} already ended ({}); `keycycle show {run_id}` shows how",
            state_name(run.state)
        ))
        .context(Code::Config);
    }
    // Refuse a run some process is still carrying out (waiting at a prompt,
    // or between calls): abandoning it would free its locks under it. Held
    // until the end, so the run cannot be resumed while it is abandoned.
    let _alive =
        hold_run_file(config, run_id).with_context(|| format!("run {run_id} was not abandoned"))?;
    let held: Vec<String> = state
        .locks()
        .context(Code::Config)?
        .into_iter()
        .filter(|l| l.run_id == run_id)
        .map(|l| l.credential)
        .collect();
    let question = format!(
        "Abandon run {run_id} ({}, {})? It will never be resumed, and its locks ({}) are released.",
        run.runbook_path,
        run.state,
        if held.is_empty() {
            "none".to_owned()
        } else {
            held.join(", ")
        }
    );
    if !confirmed(&question, yes, &format!("abandoning run {run_id}"))? {
        crate::out::done(
            json!({"ok": true, "abandoned": null, "run_id": run_id}),
            format_args!("run {run_id} was left as it is"),
        );
        return Ok(());
    }
    let by = format!("{reason} ({}@{})", user(), host());
    state
        .append_event(
            run_id,
            &RunEvent {
                at: now_ms(),
                kind: "abandoned".into(),
                message: by.clone(),
            },
        )
        .context(Code::Config)?;
    let released = state
        .end_run(run_id, keycycle_store::state::RunState::Failed, Some(&by))
        .context(Code::Config)?;
    crate::out::done(
        json!({"ok": true, "abandoned": run_id, "state": "failed", "released_locks": released}),
        format_args!(
            "abandoned run {run_id}; released {} lock(s)",
            released.len()
        ),
    );
    Ok(())
}

/// `keycycle retry ACTION_ID`: a failed deferred action goes back to the
/// queue, due at once. Each refusal says what to do instead.
pub fn retry(config: &Config, action_id: &str) -> Result<()> {
    let Some(state) = open_existing_state(config)? else {
        return Err(anyhow!(
            "there is no deferred action {action_id}; `keycycle pending` lists the actions that are not done, and there is no state database in {} yet, so nothing has run with this configuration (`keycycle -v` shows which config and state folder are in use)",
            config.state_dir.display()
        ))
        .context(Code::Config);
    };
    match state.retry_action(action_id) {
        Ok(()) => {
            crate::out::done(
                json!({"ok": true, "requeued": action_id, "state": "pending"}),
                format_args!("action {action_id} is due again; `keycycle cleanup` runs it"),
            );
            Ok(())
        }
        Err(StateError::ActionNotFound { .. }) => Err(anyhow!(
            "there is no deferred action {action_id}; `keycycle pending` lists the actions that are not done, \
             with their ids (RUN_ID-STEP)"
        ))
        .context(Code::Config),
        Err(StateError::NotFailed { state: s, .. }) => {
            let next = match s {
                DeferredState::Pending => {
                    "it is waiting in the queue already; `keycycle cleanup` runs it when it is due (`keycycle pending` shows when)"
                }
                DeferredState::Running => {
                    "a cleanup is running it right now; `keycycle pending` shows how it went once it is over"
                }
                DeferredState::Done => "it is done; there is nothing to retry",
                DeferredState::Failed => "try again",
            };
            Err(anyhow!(
                "action {action_id} is {s}, and only failed actions can be retried: {next}"
            ))
            .context(Code::Config)
        }
        Err(e) => Err(e)
            .with_context(|| {
                format!(
                    "cannot put action {action_id} back in the queue; fix the state database's problem, then run `keycycle retry {action_id}` again"
                )
            })
            .context(Code::Config),
    }
}

/// What `keycycle history` lists.
pub struct HistoryQuery<'a> {
    pub credential: Option<&'a str>,
    pub limit: usize,
    /// Unix milliseconds.
    pub since: Option<i64>,
    pub states: Vec<RunState>,
}

/// `keycycle history`: runs, newest first, filtered.
pub fn history(config: &Config, query: &HistoryQuery, as_json: bool) -> Result<()> {
    let Some(state) = open_existing_state(config)? else {
        return nothing_yet(config, as_json);
    };
    let runs = state
        .list_runs(&RunFilter {
            credential: query.credential.map(str::to_owned),
            limit: Some(query.limit),
            since: query.since,
            states: query.states.clone(),
            ..RunFilter::default()
        })
        .context(Code::Config)?;
    let locks = state.locks().context(Code::Config)?;
    if as_json {
        return print_json(&json!(
            runs.iter().map(|r| run_json(r, &locks)).collect::<Vec<_>>()
        ));
    }
    if runs.is_empty() {
        note!("no run matches");
        return Ok(());
    }
    outln!("STARTED\tRUN_ID\tSTATE\tBY\tRUNBOOK\tCREDENTIALS");
    for r in &runs {
        let credentials: Vec<&str> = r.credentials.iter().map(String::as_str).collect();
        outln!(
            "{}\t{}\t{}\t{}@{}\t{}\t{}",
            when(r.started_at),
            r.run_id,
            state_name(r.state),
            r.user,
            r.host,
            r.runbook_path,
            list_or_none(&credentials)
        );
    }
    if runs.len() == query.limit {
        errln!(
            "showing the newest {}; pass --limit for more, or --since to narrow",
            query.limit
        );
    }
    Ok(())
}

/// A journal step's request for JSON: the redacted input as JSON where it
/// is JSON (plugin calls), else its text (a prompt's text, a lock's
/// credential), or null when there is none (the clock).
fn request_json(summary: &str) -> serde_json::Value {
    if summary.is_empty() {
        return serde_json::Value::Null;
    }
    serde_json::from_str(summary).unwrap_or_else(|_| json!(summary))
}

/// `keycycle show RUN_ID`: the run's timeline.
pub fn show(config: &Config, run_id: &str, as_json: bool) -> Result<()> {
    let Some(state) = open_existing_state(config)? else {
        return Err(anyhow!(
            "there is no run {run_id}: there is no state database in {}, so nothing has run with this configuration yet (`keycycle -v` shows which config and state folder are in use)",
            config.state_dir.display()
        ))
        .context(Code::Config);
    };
    let run = state
        .run(run_id)
        .context(Code::Config)?
        .ok_or_else(|| {
            anyhow!(
                "there is no run {run_id}; `keycycle history` lists the runs (dry runs are not kept)"
            )
        })
        .context(Code::Config)?;
    let effects = state.effects(run_id).context(Code::Config)?;
    let events = state.events(run_id).context(Code::Config)?;
    let locks = state.locks().context(Code::Config)?;
    if as_json {
        let steps: Vec<serde_json::Value> = effects
            .iter()
            .map(|e| {
                let o = e.outcome.as_ref();
                json!({
                    "seq": e.intent.seq,
                    "kind": e.intent.kind,
                    "name": e.intent.name,
                    "request": request_json(&e.intent.request_summary),
                    "mutates": e.intent.mutates,
                    "started_at": when(e.intent.started_at),
                    "finished_at": o.map(|o| when(o.finished_at)),
                    "duration_ms": o.map(|o| o.finished_at - e.intent.started_at),
                    "outcome": match o {
                        None => "in-flight",
                        Some(o) if o.ok => "ok",
                        Some(_) => "error",
                    },
                    "error_kind": o.and_then(|o| o.error_kind.clone()),
                    "error": o.and_then(|o| o.error.clone()),
                })
            })
            .collect();
        let events: Vec<serde_json::Value> = events
            .iter()
            .map(|e| json!({"at": when(e.at), "kind": e.kind, "message": e.message}))
            .collect();
        let mut doc = run_json(&run, &locks);
        doc["steps"] = json!(steps);
        doc["events"] = json!(events);
        return print_json(&doc);
    }
    let mut out = String::new();
    out += &format!("run {} ({})\n", run.run_id, state_name(run.state));
    out += &format!(
        "runbook  {} (sha256 {})\n",
        run.runbook_path, run.runbook_sha256
    );
    out += &format!(
        "by       {}@{} at {}\n",
        run.user,
        run.host,
        when(run.started_at)
    );
    for p in &run.plugins {
        out += &format!(
            "plugin   {} = {} {} (sha256 {})\n",
            p.name, p.plugin, p.version, p.sha256
        );
    }
    if !run.credentials.is_empty() {
        out += &format!("locks    {}\n", run.credentials.join(", "));
    }
    for e in &effects {
        let outcome = match &e.outcome {
            None => "in flight when the run stopped".to_owned(),
            Some(o) if o.ok => "ok".to_owned(),
            Some(o) => format!(
                "error ({}): {}",
                o.error_kind.as_deref().unwrap_or("failed"),
                o.error.as_deref().unwrap_or("")
            ),
        };
        out += &format!(
            "  {:>3}  {}  {:<36} {}{}\n",
            e.intent.seq,
            when(e.intent.started_at),
            e.intent.name,
            outcome,
            e.outcome
                .as_ref()
                .map(|o| format!(" ({} ms)", o.finished_at - e.intent.started_at))
                .unwrap_or_default()
        );
    }
    for e in &events {
        out += &format!("  event {} {}: {}\n", when(e.at), e.kind, e.message);
    }
    if let Some(d) = &run.detail {
        out += &format!("final: {d}\n");
    }
    out!("{}", keycycle_secret::redact(&out));
    Ok(())
}

/// A deferred action as `keycycle pending` shows it in JSON.
fn action_json(a: &DeferredRecord) -> serde_json::Value {
    json!({
        "id": a.id,
        "run_id": a.run_id,
        "state": a.state.as_str(),
        "description": a.description,
        "call": format!("{}.{}", a.plugin, a.operation),
        "credential": a.credential,
        "created_at": when(a.created_at),
        "due_at": when(a.due_at),
        "next_attempt_at": when(a.next_attempt_at),
        "attempts": a.attempts,
        "claimed_by": a.claimed_by,
        "last_error": a.last_error,
    })
}

/// `keycycle pending`: actions not done yet, failed ones included.
pub fn pending(config: &Config, as_json: bool) -> Result<()> {
    let Some(state) = open_existing_state(config)? else {
        return nothing_yet(config, as_json);
    };
    let actions = state
        .deferred(&DeferredFilter {
            states: vec![
                DeferredState::Pending,
                DeferredState::Running,
                DeferredState::Failed,
            ],
            ..DeferredFilter::default()
        })
        .context(Code::Config)?;
    if as_json {
        return print_json(&json!(actions.iter().map(action_json).collect::<Vec<_>>()));
    }
    if actions.is_empty() {
        note!("nothing is pending");
        return Ok(());
    }
    outln!("ID\tSTATE\tCALL\tDESCRIPTION\tDUE\tATTEMPTS\tLAST_ERROR");
    for a in actions {
        outln!(
            "{}\t{}\t{}.{}\t{}\t{}\t{}\t{}",
            a.id,
            a.state,
            a.plugin,
            a.operation,
            a.description,
            when(a.next_attempt_at),
            a.attempts,
            // One line per action: an error's own line breaks would split it.
            a.last_error
                .as_deref()
                .unwrap_or("-")
                .replace(['\n', '\t'], " ")
        );
    }
    Ok(())
}

/// Renews a cleanup's claim of one action every third of its lease, until
/// dropped.
fn renew_claim(
    state: Arc<dyn StateStore>,
    id: &str,
    claimer: &str,
    lease: Duration,
) -> Result<Periodic> {
    let (id, claimer) = (id.to_owned(), claimer.to_owned());
    let lease_ms = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX);
    let renew = move || match state.renew_claim(&id, &claimer, now_ms().saturating_add(lease_ms)) {
        Ok(()) => Some(lease / 3),
        Err(e @ StateError::LostLease { .. }) => {
            tracing::error!(target: "keycycle", "{e}; its outcome will not be recorded by this cleanup");
            None
        }
        Err(e) => {
            tracing::warn!(target: "keycycle", "could not renew the claim of action {id}: {e}; trying again");
            Some(lease / 3)
        }
    };
    Periodic::start("keycycle-claim", lease / 3, renew)
        .context("cannot start the thread that renews a deferred action's claim")
        .context(Code::Config)
}

/// `keycycle cleanup`: runs the due actions, each claimed by this process
/// alone, with backoff on failure. Safe to run from several schedulers at
/// once: a claim is atomic, and a claimer that dies loses its lease.
pub async fn cleanup(config: &Config, as_json: bool) -> Result<()> {
    // The key first: a cleanup from cron with the wrong key must fail
    // loudly even on a runner where nothing is pending yet.
    let store = Arc::new(StoreAccess::new(config));
    let key = store.master_key()?;
    store.check_key()?;
    let Some(state) = open_existing_state(config)? else {
        return nothing_yet(config, as_json);
    };
    // Each action runs with the plugins of the environment (`--env`) its
    // run had: a staging run's deferred deletion must never reach
    // production. Loaded once per environment, when first needed.
    type Loaded = (
        Arc<keycycle_engine::PluginPool>,
        BTreeMap<String, LoadedPlugin>,
    );
    let mut loaded: BTreeMap<Option<String>, Loaded> = BTreeMap::new();
    let claimer = format!("{}@{}:{}", user(), host(), std::process::id());
    reclaim_from_dead_cleanups(state.as_ref())?;
    let mut report = Vec::new();
    let mut failures = 0;
    // The clock this cleanup goes by; debug builds let a test move it
    // (see `debug`), to reach later attempts without waiting for them.
    let now = || now_ms() + crate::debug::cleanup_clock_offset_ms();
    let lease = crate::debug::claim_lease(LEASE);
    let lease_ms = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX);
    while let Some(action) = state
        .claim_due(now(), &claimer, lease_ms)
        .context(Code::Config)?
    {
        // Renewed while the action runs: a plugin call may take longer
        // than a claim (`timeout_secs` goes up to a day), and an expired
        // claim would let another cleanup run the action a second time.
        let renewal = renew_claim(state.clone(), &action.id, &claimer, lease)?;
        crate::debug::abort_after(|| "cleanup:claimed".to_owned());
        let run = state.run(&action.run_id).context(Code::Config)?;
        let env = run.as_ref().and_then(|run| run.env.clone());
        // The action acts for the run that scheduled it, under today's
        // policy: a grant withdrawn since is not used.
        let identity = run
            .as_ref()
            .and_then(|r| config.runbook_identity(Path::new(&r.runbook_path)));
        let allowed = config
            .policy
            .for_run(identity.as_deref())
            .may_call(&action.plugin);
        let outcome = match allowed {
            Err(denied) => Err(format!("not run: {}", keycycle_host::one_line(&denied.0))),
            Ok(()) => {
                if !loaded.contains_key(&env) {
                    let plugins = load_plugins(config, env.as_deref(), store.clone()).await?;
                    loaded.insert(env.clone(), plugins);
                }
                run_action(&loaded[&env].1, &key, &action).await
            }
        };
        // Before the outcome is recorded, which ends the claim.
        drop(renewal);
        crate::debug::abort_after(|| "cleanup:ran".to_owned());
        match outcome {
            Ok(summary) => {
                state
                    .complete_action(&action.id, &claimer, Some(&summary))
                    .context(Code::Config)?;
                tracing::info!(target: "keycycle", "done: {} ({}.{})", action.description, action.plugin, action.operation);
                report.push(json!({
                    "id": action.id, "outcome": "done", "description": action.description,
                    "error": null, "retry_at": null,
                }));
            }
            Err(error) => {
                failures += 1;
                let error = keycycle_secret::redact(&error).into_owned();
                let retry_at = (action.attempts < MAX_ATTEMPTS).then(|| {
                    let backoff = 60_000i64 * 2i64.pow(action.attempts.saturating_sub(1).min(6));
                    now() + backoff.min(3_600_000)
                });
                state
                    .fail_action(&action.id, &claimer, &error, retry_at)
                    .context(Code::Config)?;
                match retry_at {
                    Some(at) => {
                        tracing::warn!(target: "keycycle", "failed (attempt {}): {}: {error}; retrying after {}", action.attempts, action.description, when(at))
                    }
                    None => {
                        tracing::error!(target: "keycycle", "gave up after {} attempts: {}: {error}; it stays listed in `keycycle pending`", action.attempts, action.description)
                    }
                }
                report.push(json!({
                    "id": action.id,
                    "outcome": if retry_at.is_some() { "retrying" } else { "failed" },
                    "description": action.description,
                    "error": error,
                    "retry_at": retry_at.map(when),
                }));
            }
        }
    }
    if as_json {
        print_json(&json!(report))?;
    } else {
        note!("cleanup: {} action(s) run, {failures} failed", report.len());
    }
    if failures > 0 {
        return Err(anyhow!(
            "{failures} deferred action(s) failed; see `keycycle pending`"
        ))
        .context(Code::RunbookFailed);
    }
    Ok(())
}

/// Puts back the actions whose cleanup process on this host has died, so
/// they need not wait out the lease. A claimer is `user@host:pid`; a dead
/// pid on this host means nobody is running the action any more. The
/// action is run again, which is why deferred actions must be safe to
/// repeat (deleting what may be gone already, revoking what may be
/// revoked).
fn reclaim_from_dead_cleanups(state: &dyn StateStore) -> Result<()> {
    let running = state
        .deferred(&DeferredFilter {
            states: vec![DeferredState::Running],
            ..DeferredFilter::default()
        })
        .context(Code::Config)?;
    let here = format!("@{}:", host());
    for action in running {
        let Some(claimer) = &action.claimed_by else {
            continue;
        };
        let Some((_, pid)) = claimer.rsplit_once(&here) else {
            continue;
        };
        let Ok(pid) = pid.parse::<i32>() else {
            continue;
        };
        let alive = rustix::process::Pid::from_raw(pid)
            // EPERM: it exists but belongs to someone else; still alive.
            .is_some_and(|p| {
                matches!(
                    rustix::process::test_kill_process(p),
                    Ok(()) | Err(rustix::io::Errno::PERM)
                )
            });
        if alive {
            continue;
        }
        tracing::warn!(target: "keycycle", "the cleanup process {pid} died while running action {} ({}); running it again", action.id, action.description);
        state
            .fail_action(
                &action.id,
                claimer,
                &format!("the cleanup process {pid} died while running it"),
                Some(now_ms()),
            )
            .context(Code::Config)?;
    }
    Ok(())
}

async fn run_action(
    plugins: &std::collections::BTreeMap<String, LoadedPlugin>,
    key: &keycycle_store::MasterKey,
    action: &DeferredRecord,
) -> Result<String, String> {
    let plugin = match plugins.get(&action.plugin) {
        Some(LoadedPlugin::Ready { plugin, .. }) => plugin.clone(),
        Some(LoadedPlugin::Refused { message, .. }) => return Err(message.clone()),
        None => {
            return Err(format!(
                "no plugin `{}` is configured; add it to keycycle.toml, then `keycycle retry {}` if the action has given up",
                action.plugin, action.id
            ));
        }
    };
    let input = open_deferred_input(key, action)?;
    let ctx = CallContext {
        run_id: action.run_id.clone(),
        idempotency_key: action.id.clone(),
    };
    plugin
        .invoke(&action.operation, &input, &ctx)
        .await
        .map(|out| out.to_redacted_json().to_string())
        .map_err(|e| e.to_string())
}
