//! The commands over durable state: unfinished runs, locks, deferred
//! actions and the audit history.

use std::io::{BufRead, IsTerminal, Write};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use keycycle_contract::CallContext;
use keycycle_store::state::{
    DeferredFilter, DeferredRecord, DeferredState, RunEvent, RunFilter, RunRecord, StateStore,
};
use serde_json::json;

use crate::config::Config;
use crate::durable::{host, open_state, user};
use crate::effects::LoadedPlugin;
use crate::exit::Code;
use crate::journal::{now_ms, open_deferred_input};
use crate::run::load_plugins;
use crate::store::StoreAccess;

/// How long a cleanup process may hold an action before another may take
/// it over (it is assumed dead).
const LEASE: Duration = Duration::from_secs(600);
/// Attempts before an action is marked failed and left for an operator.
const MAX_ATTEMPTS: u32 = 8;

fn when(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| ms.to_string())
}

fn print_json(value: &serde_json::Value) -> Result<()> {
    outln!(
        "{}",
        keycycle_secret::redact(&serde_json::to_string_pretty(value)?)
    );
    Ok(())
}

fn run_json(run: &RunRecord) -> serde_json::Value {
    json!({
        "run_id": run.run_id,
        "state": run.state.as_str(),
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
        "detail": run.detail,
    })
}

/// `keycycle runs`: runs that did not finish.
pub fn runs(config: &Config, as_json: bool) -> Result<()> {
    let state = open_state(config)?;
    let mut runs = state
        .list_runs(&RunFilter {
            unfinished_only: true,
            ..RunFilter::default()
        })
        .context(Code::Config)?;
    runs.extend(
        state
            .list_runs(&RunFilter::default())
            .context(Code::Config)?
            .into_iter()
            .filter(|r| r.state == keycycle_store::state::RunState::NeedsAttention),
    );
    if as_json {
        return print_json(&json!(runs.iter().map(run_json).collect::<Vec<_>>()));
    }
    if runs.is_empty() {
        note!("every run finished");
    }
    let locks = state.locks().context(Code::Config)?;
    for r in runs {
        let held: Vec<&str> = locks
            .iter()
            .filter(|l| l.run_id == r.run_id)
            .map(|l| l.credential.as_str())
            .collect();
        outln!(
            "{}\t{}\t{}\tstarted {} by {}@{}\tlocks: {}",
            r.run_id,
            r.state,
            r.runbook_path,
            when(r.started_at),
            r.user,
            r.host,
            if held.is_empty() {
                "none".to_owned()
            } else {
                held.join(", ")
            }
        );
    }
    Ok(())
}

/// `keycycle unlock CREDENTIAL`: releases a lock after confirmation.
pub fn unlock(config: &Config, credential: &str, yes: bool) -> Result<()> {
    let state = open_state(config)?;
    let Some(lock) = state
        .locks()
        .context(Code::Config)?
        .into_iter()
        .find(|l| l.credential == credential)
    else {
        return Err(anyhow!("{credential} is not locked")).context(Code::Config);
    };
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
        errln!("the lock was kept");
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
    note!("released {credential} (it was held by run {})", lock.run_id);
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
    let state = open_state(config)?;
    let run = state
        .run(run_id)
        .context(Code::Config)?
        .ok_or_else(|| anyhow!("there is no run {run_id}"))
        .context(Code::Config)?;
    if matches!(
        run.state,
        keycycle_store::state::RunState::Succeeded | keycycle_store::state::RunState::Failed
    ) {
        return Err(anyhow!("run {run_id} already ended ({})", run.state)).context(Code::Config);
    }
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
        errln!("run {run_id} was left as it is");
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
    state
        .finish_run(run_id, keycycle_store::state::RunState::Failed, Some(&by))
        .context(Code::Config)?;
    let released = state.release_run_locks(run_id).context(Code::Config)?;
    note!(
        "abandoned run {run_id}; released {} lock(s)",
        released.len()
    );
    Ok(())
}

/// `keycycle retry ACTION_ID`: a failed deferred action goes back to the
/// queue, due at once.
pub fn retry(config: &Config, action_id: &str) -> Result<()> {
    let state = open_state(config)?;
    state
        .retry_action(action_id)
        .with_context(|| format!("cannot put action {action_id} back in the queue"))
        .context(Code::Config)?;
    note!("action {action_id} is due again; `keycycle cleanup` runs it");
    Ok(())
}

/// `keycycle history [--credential C]`.
pub fn history(config: &Config, credential: Option<&str>, as_json: bool) -> Result<()> {
    let state = open_state(config)?;
    let runs = state
        .list_runs(&RunFilter {
            credential: credential.map(str::to_owned),
            limit: Some(100),
            ..RunFilter::default()
        })
        .context(Code::Config)?;
    if as_json {
        return print_json(&json!(runs.iter().map(run_json).collect::<Vec<_>>()));
    }
    for r in runs {
        outln!(
            "{}\t{}\t{}\t{}@{}\t{}\t{}",
            when(r.started_at),
            r.run_id,
            r.state,
            r.user,
            r.host,
            r.runbook_path,
            r.credentials.join(", ")
        );
    }
    Ok(())
}

/// `keycycle show RUN_ID`: the run's timeline.
pub fn show(config: &Config, run_id: &str, as_json: bool) -> Result<()> {
    let state = open_state(config)?;
    let run = state
        .run(run_id)
        .context(Code::Config)?
        .ok_or_else(|| anyhow!("there is no run {run_id}"))
        .context(Code::Config)?;
    let effects = state.effects(run_id).context(Code::Config)?;
    let events = state.events(run_id).context(Code::Config)?;
    let steps: Vec<serde_json::Value> = effects
        .iter()
        .map(|e| {
            json!({
                "seq": e.intent.seq,
                "kind": e.intent.kind,
                "name": e.intent.name,
                "request": e.intent.request_summary,
                "mutates": e.intent.mutates,
                "started_at": when(e.intent.started_at),
                "duration_ms": e.outcome.as_ref().map(|o| o.finished_at - e.intent.started_at),
                "outcome": match &e.outcome {
                    None => "in flight when the run stopped".to_owned(),
                    Some(o) if o.ok => "ok".to_owned(),
                    Some(o) => format!("error ({}): {}", o.error_kind.as_deref().unwrap_or("failed"), o.error.as_deref().unwrap_or("")),
                },
            })
        })
        .collect();
    if as_json {
        let mut doc = run_json(&run);
        doc["steps"] = json!(steps);
        doc["events"] = json!(events);
        return print_json(&doc);
    }
    let mut out = String::new();
    out += &format!("run {} ({})\n", run.run_id, run.state);
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
    for s in &steps {
        out += &format!(
            "  {:>3}  {}  {:<36} {}{}\n",
            s["seq"],
            s["started_at"].as_str().unwrap_or(""),
            s["name"].as_str().unwrap_or(""),
            s["outcome"].as_str().unwrap_or(""),
            s["duration_ms"]
                .as_i64()
                .map(|d| format!(" ({d} ms)"))
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

fn action_json(a: &DeferredRecord) -> serde_json::Value {
    json!({
        "id": a.id, "run_id": a.run_id, "state": a.state.as_str(), "description": a.description,
        "call": format!("{}.{}", a.plugin, a.operation), "due_at": when(a.due_at),
        "next_attempt_at": when(a.next_attempt_at), "attempts": a.attempts, "last_error": a.last_error,
    })
}

/// `keycycle pending`: actions not done yet, failed ones included.
pub fn pending(config: &Config, as_json: bool) -> Result<()> {
    let state = open_state(config)?;
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
    }
    for a in actions {
        outln!(
            "{}\t{}\t{}.{}\t{}\tdue {}\tattempts {}{}",
            a.id,
            a.state,
            a.plugin,
            a.operation,
            a.description,
            when(a.next_attempt_at),
            a.attempts,
            a.last_error
                .map(|e| format!("\tlast error: {e}"))
                .unwrap_or_default()
        );
    }
    Ok(())
}

/// `keycycle cleanup`: runs the due actions, each claimed by this process
/// alone, with backoff on failure. Safe to run from several schedulers at
/// once: a claim is atomic, and a claimer that dies loses its lease.
pub async fn cleanup(config: &Config, as_json: bool) -> Result<()> {
    let state = open_state(config)?;
    let store = Arc::new(StoreAccess::new(config));
    let key = store.master_key()?;
    store.check_key()?;
    let (_sandbox, plugins) = load_plugins(config, None, store.clone()).await?;
    let claimer = format!("{}@{}:{}", user(), host(), std::process::id());
    reclaim_from_dead_cleanups(state.as_ref())?;
    let mut report = Vec::new();
    let mut failures = 0;
    while let Some(action) = state
        .claim_due(now_ms(), &claimer, LEASE.as_millis() as i64)
        .context(Code::Config)?
    {
        let outcome = run_action(&plugins, &key, &action).await;
        match outcome {
            Ok(summary) => {
                state
                    .complete_action(&action.id, &claimer, Some(&summary))
                    .context(Code::Config)?;
                tracing::info!(target: "keycycle", "done: {} ({}.{})", action.description, action.plugin, action.operation);
                report.push(
                    json!({"id": action.id, "outcome": "done", "description": action.description}),
                );
            }
            Err(error) => {
                failures += 1;
                let error = keycycle_secret::redact(&error).into_owned();
                let retry_at = (action.attempts < MAX_ATTEMPTS).then(|| {
                    let backoff = 60_000i64 * 2i64.pow(action.attempts.saturating_sub(1).min(6));
                    now_ms() + backoff.min(3_600_000)
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
                report.push(json!({"id": action.id, "outcome": if retry_at.is_some() { "retrying" } else { "failed" }, "description": action.description, "error": error}));
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
