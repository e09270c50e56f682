//! `keycycle check`: every inventory credential's expiry, read through its
//! plugin (concurrently, read-only operations only) or taken from what
//! keycycle recorded, judged against its thresholds, recorded in the state
//! store, and printed as a table, JSON or Prometheus metrics.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result, anyhow, bail};
use keycycle_contract::{CallContext, Value};
use keycycle_inventory::{
    CredentialSection, ExpiryReading, ExpirySection, Metric, State, Status, evaluate, format_date,
};
use keycycle_store::state::{
    CheckOutcome, CredentialRecord, RotationClaim, RotationOutcome, RunState, StateStore, now_ms,
};
use serde_json::json;
use tracing::Instrument as _;

use crate::config::Config;
use crate::durable::open_state;
use crate::exit::Code;
use crate::run::load_plugins_cached;
use crate::store::StoreAccess;
use keycycle_engine::LoadedPlugin;

/// Which credentials a command works on.
pub struct Selection {
    pub ids: Vec<String>,
    pub team: Option<String>,
}

pub struct CheckArgs {
    pub selection: Selection,
    /// Reads at once.
    pub concurrency: usize,
    /// Write the metrics here (`-` for standard output).
    pub prometheus: Option<std::path::PathBuf>,
    pub json: bool,
}

/// A credential with everything a command needs to know of it.
pub struct Entry<'c> {
    pub id: &'c str,
    pub section: &'c CredentialSection,
    /// The team that owns its runbook, if any.
    pub team: Option<String>,
}

impl Entry<'_> {
    pub fn provider(&self) -> &str {
        self.section
            .provider
            .as_deref()
            .or(self.section.expiry_plugin())
            .unwrap_or("")
    }
}

/// The selected credentials, in id order: the named ones (each must
/// exist), else all, narrowed to `team`.
pub fn select<'c>(config: &'c Config, selection: &Selection) -> Result<Vec<Entry<'c>>> {
    let credentials = config.credentials().context(Code::Config)?;
    if credentials.is_empty() {
        bail!(
            "the inventory is empty: add [credentials.ID] sections to keycycle.toml (or a \
             credentials_file); see docs/operations.md"
        );
    }
    for id in &selection.ids {
        if !credentials.contains_key(id) {
            return Err(anyhow!(
                "no credential `{id}` in the inventory (known: {})",
                names(credentials.keys())
            ))
            .context(Code::Config);
        }
    }
    if let Some(team) = &selection.team
        && !config.policy.teams().any(|t| t == team)
    {
        return Err(anyhow!("no team `{team}` is declared in [teams]")).context(Code::Config);
    }
    Ok(credentials
        .iter()
        .filter(|(id, _)| selection.ids.is_empty() || selection.ids.contains(id))
        .map(|(id, section)| Entry {
            id,
            section,
            team: config
                .policy
                .team_of_runbook(&section.runbook)
                .map(str::to_owned),
        })
        .filter(|e| selection.team.is_none() || e.team == selection.team)
        .collect())
}

/// Every credential's record, by id.
fn records_by_id(state: &dyn StateStore) -> Result<BTreeMap<String, CredentialRecord>> {
    Ok(state
        .credentials()
        .context(Code::Config)?
        .into_iter()
        .map(|r| (r.id.clone(), r))
        .collect())
}

/// Names for a message: `a, b, c`, or `none`.
fn names<'a>(list: impl Iterator<Item = &'a String>) -> String {
    let all: Vec<&str> = list.map(String::as_str).collect();
    if all.is_empty() {
        "none".to_owned()
    } else {
        all.join(", ")
    }
}

/// Reads the expiry of every entry that has a plugin source, at most
/// `concurrency` at once. Plugins are loaded once per environment, and
/// only those the entries read through.
pub async fn read_expiries(
    config: &Config,
    pool: Option<&Arc<keycycle_engine::PluginPool>>,
    entries: &[Entry<'_>],
    records: &BTreeMap<String, CredentialRecord>,
    concurrency: usize,
) -> Result<BTreeMap<String, Result<ExpiryReading, String>>> {
    let mut by_env: BTreeMap<Option<String>, BTreeSet<String>> = BTreeMap::new();
    for e in entries {
        if let Some(plugin) = e.section.expiry_plugin() {
            by_env
                .entry(e.section.env.clone())
                .or_default()
                .insert(plugin.to_owned());
        }
    }
    let mut readings = BTreeMap::new();
    if by_env.is_empty() {
        return Ok(readings);
    }
    let pool = match pool {
        Some(pool) => pool.clone(),
        None => {
            let store = Arc::new(StoreAccess::new(config));
            store.check_key()?;
            crate::run::plugin_pool(config, store, Some(config.cache_dir.clone()))?
        }
    };
    let mut loaded = BTreeMap::new();
    for (env, names) in &by_env {
        let plugins = pool
            .all(env.as_deref(), None, Some(names))
            .await
            .context(Code::Config)?;
        loaded.insert(env.clone(), plugins);
    }
    let limit = Arc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    for e in entries {
        let Some(ExpirySection::Plugin {
            plugin, operation, ..
        }) = &e.section.expiry
        else {
            continue;
        };
        let id = e.id.to_owned();
        // The read acts for the credential's runbook, under its policy.
        if let Err(denied) = config
            .policy
            .for_run(Some(&e.section.runbook))
            .may_call(plugin)
        {
            readings.insert(id, Err(denied.0));
            continue;
        }
        let (loaded_plugin, gate) = match loaded[&e.section.env].get(plugin.as_str()) {
            Some(LoadedPlugin::Ready { plugin, gate, .. }) => (plugin.clone(), gate.clone()),
            Some(LoadedPlugin::Refused { message, .. }) => {
                readings.insert(
                    id,
                    Err(format!("plugin `{plugin}` did not load: {message}")),
                );
                continue;
            }
            None => {
                readings.insert(id, Err(format!("plugin `{plugin}` is not configured")));
                continue;
            }
        };
        match loaded_plugin.description().operation(operation) {
            None => {
                readings.insert(
                    id,
                    Err(format!(
                        "plugin `{plugin}` has no operation `{operation}`; `keycycle plugins \
                         inspect {plugin}` lists its operations, fix the expiry source"
                    )),
                );
                continue;
            }
            Some(spec) if spec.mutates => {
                readings.insert(
                    id,
                    Err(format!(
                        "{plugin}.{operation} changes things at the provider; an expiry is read \
                         with a read-only operation"
                    )),
                );
                continue;
            }
            Some(_) => {}
        }
        // The ids in the read follow the rotations (`follow`).
        let params = e.section.params(records.get(e.id));
        let input = Value::from_json(e.section.expiry_input(&params));
        let section = e.section.expiry.clone().expect("a plugin source");
        let (plugin, operation) = (plugin.clone(), operation.clone());
        let limit = limit.clone();
        tasks.spawn(async move {
            let _permit = limit.acquire_owned().await;
            let ctx = CallContext {
                run_id: format!("check-{id}"),
                idempotency_key: format!("check-{id}"),
            };
            // A 429 holds back every read through this instance, and the
            // read is asked again, as a runbook's reads are.
            let answer = keycycle_engine::invoke_through(
                &gate,
                &loaded_plugin,
                &plugin,
                &operation,
                &input,
                &ctx,
                3,
            )
            .await;
            let reading = match answer {
                Ok(answer) => ExpiryReading::from_answer(&section, &answer.to_redacted_json())
                    .map_err(|e| format!("{plugin}.{operation}: {e}")),
                Err(e) => Err(keycycle_host::one_line(&e.to_string())),
            };
            (id, reading)
        });
    }
    while let Some(done) = tasks.join_next().await {
        let (id, reading) = done.context("an expiry read stopped unexpectedly")?;
        readings.insert(id, reading);
    }
    Ok(readings)
}

/// One credential's verdict, with what it was judged on.
pub struct Verdict<'c> {
    pub entry: Entry<'c>,
    pub status: Status,
    pub record: Option<CredentialRecord>,
}

/// Judges every entry now, reading expiries as configured.
pub async fn judge<'c>(
    config: &Config,
    pool: Option<&Arc<keycycle_engine::PluginPool>>,
    state: &dyn StateStore,
    entries: Vec<Entry<'c>>,
    concurrency: usize,
) -> Result<Vec<Verdict<'c>>> {
    let records = records_by_id(state)?;
    let readings = read_expiries(config, pool, &entries, &records, concurrency).await?;
    let now = now_ms();
    Ok(entries
        .into_iter()
        .map(|entry| {
            let record = records.get(entry.id).cloned();
            let status = evaluate(entry.section, record.as_ref(), readings.get(entry.id), now);
            Verdict {
                entry,
                status,
                record,
            }
        })
        .collect())
}

pub async fn check(config: &Config, args: CheckArgs) -> Result<()> {
    let entries = select(config, &args.selection).context(Code::Config)?;
    let state = open_state(config)?;
    let checked_at = now_ms();
    let verdicts = judge(config, None, state.as_ref(), entries, args.concurrency).await?;
    record_checks(state.as_ref(), &verdicts, checked_at)?;
    let records = records_by_id(state.as_ref())?;
    if let Some(path) = &args.prometheus {
        let text = metrics_text(&verdicts, &records, checked_at);
        write_metrics(path, &text)?;
    }
    if args.json {
        let list: Vec<serde_json::Value> = verdicts.iter().map(verdict_json).collect();
        outln!("{}", serde_json::to_string_pretty(&list)?);
    } else if args.prometheus.as_deref() != Some(Path::new("-")) {
        print_table(&verdicts);
    }
    let count = |s: State| verdicts.iter().filter(|v| v.status.state == s).count();
    let (critical, errors) = (count(State::Critical), count(State::Error));
    note!(
        "check: {} credential(s): {} ok, {} due, {} warning, {critical} critical, {} unknown, {errors} unreadable",
        verdicts.len(),
        count(State::Ok),
        count(State::Due),
        count(State::Warning),
        count(State::Unknown),
    );
    if critical > 0 {
        return Err(anyhow!(
            "{critical} credential(s) critical: rotate them now (`keycycle rotate --due`)"
        ))
        .context(Code::Critical);
    }
    if errors > 0 {
        return Err(anyhow!(
            "{errors} credential(s) whose expiry could not be read; see the reasons above"
        ))
        .context(Code::RunbookFailed);
    }
    Ok(())
}

/// Records what a check found of each credential.
fn record_checks(state: &dyn StateStore, verdicts: &[Verdict<'_>], checked_at: i64) -> Result<()> {
    for v in verdicts {
        let source = match &v.entry.section.expiry {
            Some(ExpirySection::Plugin { .. }) => "provider",
            Some(ExpirySection::Manual { .. }) => "manual",
            _ => "rotation",
        };
        state
            .record_check(
                v.entry.id,
                &CheckOutcome {
                    at: checked_at,
                    state: v.status.state.as_str().to_owned(),
                    detail: Some(v.status.reason.clone()),
                    expires_at: v.status.expires_at.filter(|_| source != "rotation"),
                    expiry_source: Some(source.to_owned()),
                    last_used_at: None,
                },
            )
            .context(Code::Config)?;
    }
    Ok(())
}

fn verdict_json(v: &Verdict<'_>) -> serde_json::Value {
    json!({
        "id": v.entry.id,
        "team": v.entry.team,
        "provider": v.entry.provider(),
        "runbook": v.entry.section.runbook,
        "state": v.status.state,
        "expires_at": v.status.expires_at.map(format_date),
        "days_left": v.status.days_left,
        "idle_until": v.status.idle_until.map(format_date),
        "reason": v.status.reason,
        "last_rotated_at": v.record.as_ref().and_then(|r| r.last_rotated_at).map(format_date),
        "last_run_id": v.record.as_ref().and_then(|r| r.last_run_id.clone()),
        "last_run_state": v.record.as_ref().and_then(|r| r.last_run_state),
    })
}

fn print_table(verdicts: &[Verdict<'_>]) {
    let rows: Vec<[String; 6]> = verdicts
        .iter()
        .map(|v| {
            [
                v.entry.id.to_owned(),
                v.entry.team.clone().unwrap_or_else(|| "-".to_owned()),
                v.status.state.as_str().to_owned(),
                v.status
                    .expires_at
                    .map(format_date)
                    .unwrap_or_else(|| "-".to_owned()),
                v.status
                    .days_left
                    .map(|d| d.to_string())
                    .unwrap_or_else(|| "-".to_owned()),
                keycycle_host::one_line(&v.status.reason),
            ]
        })
        .collect();
    let head = ["CREDENTIAL", "TEAM", "STATE", "EXPIRES", "DAYS", "WHY"];
    let width = |i: usize| {
        rows.iter()
            .map(|r| r[i].chars().count())
            .chain([head[i].len()])
            .max()
            .unwrap_or(0)
    };
    let widths: Vec<usize> = (0..5).map(width).collect();
    let line = |cells: [&str; 6]| {
        let mut text = String::new();
        for (i, cell) in cells.iter().enumerate().take(5) {
            text.push_str(&format!("{cell:<w$}  ", w = widths[i]));
        }
        text.push_str(cells[5]);
        text
    };
    outln!("{}", line(head));
    for r in &rows {
        outln!("{}", line([&r[0], &r[1], &r[2], &r[3], &r[4], &r[5]]));
    }
}

fn metrics_text(
    verdicts: &[Verdict<'_>],
    records: &BTreeMap<String, CredentialRecord>,
    checked_at: i64,
) -> String {
    let metrics: Vec<Metric<'_>> = verdicts
        .iter()
        .map(|v| Metric {
            id: v.entry.id,
            provider: v.entry.provider(),
            team: v.entry.team.as_deref().unwrap_or(""),
            status: &v.status,
            record: records.get(v.entry.id),
        })
        .collect();
    keycycle_inventory::prometheus(&metrics, checked_at)
}

/// Writes the metrics whole: node_exporter's textfile collector may read
/// the file at any moment, so it is written beside and renamed into place.
fn write_metrics(path: &Path, text: &str) -> Result<()> {
    if path == Path::new("-") {
        out!("{text}");
        return Ok(());
    }
    let name = path
        .file_name()
        .ok_or_else(|| anyhow!("--prometheus {}: not a file name", path.display()))?;
    let temp = path.with_file_name(format!(".{}.tmp", name.to_string_lossy()));
    std::fs::write(&temp, text)
        .with_context(|| format!("cannot write {}", temp.display()))
        .context(Code::Config)?;
    std::fs::rename(&temp, path)
        .with_context(|| format!("cannot move the metrics into {}", path.display()))
        .context(Code::Config)?;
    Ok(())
}

pub struct RotateArgs {
    pub selection: Selection,
    /// Only the credentials `check` finds due, warning or critical.
    pub due: bool,
    /// Rotations at once.
    pub concurrency: usize,
    pub dry_run: bool,
    pub json: bool,
}

/// How one credential's rotation ended, for the summary.
#[derive(serde::Serialize)]
struct Rotated {
    id: String,
    /// `succeeded`, `failed`, `dry-run`, or the error kind of a run that
    /// stopped (`locked`, `needs-attention`, `waiting-for-approval`, ...).
    outcome: String,
    run_id: Option<String>,
    expires_at: Option<String>,
    error: Option<String>,
}

/// `keycycle rotate`: each selected credential is its own durable run
/// (its own journal, locks and resume), all in one process sharing one
/// sandbox and each plugin loaded once per environment, `concurrency` at
/// a time. A failure stays with its credential; the end is a summary.
pub async fn rotate(config: Config, args: RotateArgs) -> Result<()> {
    if args.selection.ids.is_empty() && args.selection.team.is_none() && !args.due {
        return Err(anyhow!(
            "say what to rotate: credential ids, --team TEAM, or --due (what `keycycle check` \
             finds due, warning or critical)"
        ))
        .context(Code::Config);
    }
    let config = Arc::new(config);
    let entries = select(&config, &args.selection).context(Code::Config)?;
    let state = open_state(&config)?;
    let store = Arc::new(StoreAccess::new(&config));
    store.check_key()?;
    let pool = Arc::new(crate::run::runner(&config, store, Some(state.clone()))?);
    // Each credential's last run as this batch found it: a rotation
    // starts only if no other runner or process started one since (see
    // `claim_rotation`), so runners that chose the same credential at
    // once rotate it once.
    let seen: BTreeMap<String, Option<String>> = state
        .credentials()
        .map_err(anyhow::Error::new)
        .context(Code::Config)?
        .into_iter()
        .map(|r| (r.id, r.last_run_id))
        .collect();
    let seen = Arc::new(seen);
    let chosen: Vec<(String, CredentialSection)> = if args.due {
        let verdicts = judge(
            &config,
            Some(&pool.plugins),
            state.as_ref(),
            entries,
            args.concurrency,
        )
        .await?;
        for v in verdicts.iter().filter(|v| v.status.state == State::Error) {
            tracing::warn!(target: "keycycle", "{}: not rotated, its expiry could not be read: {}", v.entry.id, v.status.reason);
        }
        verdicts
            .into_iter()
            .filter(|v| v.status.state.wants_rotation())
            .map(|v| {
                tracing::info!(target: "keycycle", "{} is {}: {}", v.entry.id, v.status.state, v.status.reason);
                (v.entry.id.to_owned(), v.entry.section.clone())
            })
            .collect()
    } else {
        entries
            .into_iter()
            .map(|e| (e.id.to_owned(), e.section.clone()))
            .collect()
    };
    let total = chosen.len();
    if total == 0 {
        note!("rotate: nothing to rotate");
        if args.json {
            outln!("[]");
        }
        return Ok(());
    }
    let progress = Progress::new(total);
    let limit = Arc::new(tokio::sync::Semaphore::new(args.concurrency.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    for (id, section) in chosen {
        let (config, pool, limit, state) =
            (config.clone(), pool.clone(), limit.clone(), state.clone());
        let seen = seen.get(&id).cloned().flatten();
        let dry_run = args.dry_run;
        // Runs go side by side: each log line says whose it is.
        let span = tracing::info_span!("credential", id = %id);
        tasks.spawn(
            async move {
                let _permit = limit.acquire_owned().await;
                let rotated = rotate_one(
                    &config,
                    &pool,
                    state.as_ref(),
                    (&id, seen.as_deref()),
                    &section,
                    dry_run,
                )
                .await;
                (id, rotated)
            }
            .instrument(span),
        );
    }
    let mut summary = Vec::new();
    while let Some(done) = tasks.join_next().await {
        let (id, rotated) = done.context("a rotation stopped unexpectedly")?;
        progress.done(&id, &rotated.outcome);
        summary.push(rotated);
    }
    progress.finish();
    summary.sort_by(|a, b| a.id.cmp(&b.id));
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        outln!("CREDENTIAL  OUTCOME  RUN  DETAIL");
        for r in &summary {
            outln!(
                "{}  {}  {}  {}",
                r.id,
                r.outcome,
                r.run_id.as_deref().unwrap_or("-"),
                r.error
                    .as_deref()
                    .map(keycycle_host::one_line)
                    .or_else(|| r.expires_at.as_ref().map(|e| format!("expires {e}")))
                    .unwrap_or_default()
            );
        }
    }
    let skipped = summary.iter().filter(|r| r.outcome == SKIPPED).count();
    let failed = summary
        .iter()
        .filter(|r| r.outcome != "succeeded" && r.outcome != "dry-run" && r.outcome != SKIPPED)
        .count();
    note!(
        "rotate: {} credential(s), {} rotated{}, {skipped} rotated meanwhile by another run, {failed} not",
        summary.len(),
        summary.len() - failed - skipped,
        if args.dry_run { " (dry run)" } else { "" }
    );
    if failed > 0 {
        return Err(anyhow!(
            "{failed} of {total} rotation(s) did not succeed; each is its own run: see \
             `keycycle runs`, and finish interrupted ones with `keycycle resume --all`"
        ))
        .context(Code::RunbookFailed);
    }
    Ok(())
}

/// The outcome of a credential another run started rotating after this
/// batch looked at it.
const SKIPPED: &str = "skipped";

async fn rotate_one(
    config: &Config,
    pool: &keycycle_engine::Runner,
    state: &dyn StateStore,
    (id, seen): (&str, Option<&str>),
    section: &CredentialSection,
    dry_run: bool,
) -> Rotated {
    let failed = |outcome: &str, run_id: Option<String>, e: &anyhow::Error| Rotated {
        id: id.to_owned(),
        outcome: outcome.to_owned(),
        run_id,
        expires_at: None,
        error: Some(keycycle_secret::redact(&crate::exit::causes(e).join(": ")).into_owned()),
    };
    let inputs: Vec<String> = section
        .inputs
        .iter()
        .map(|(name, source)| format!("{name}={source}"))
        .collect();
    let given = match crate::inputs::Given::parse(&inputs, &section.plain_inputs, &[]) {
        Ok(g) => g,
        Err(e) => return failed(Code::Config.word(), None, &e),
    };
    let record = state.credential(id).ok().flatten();
    // The run's id is chosen here and recorded before the run starts, so a
    // batch killed mid-rotation still knows which credential each
    // interrupted run rotates (`keycycle resume --all` finishes them).
    let run_id = (!dry_run).then(new_run_id);
    if let Some(run_id) = &run_id {
        let starting = RotationOutcome {
            run_id: run_id.clone(),
            state: RunState::Running,
            at: now_ms(),
            expires_at: None,
            expiry_source: None,
            params: BTreeMap::new(),
        };
        match state.claim_rotation(id, seen, &starting) {
            Ok(RotationClaim::Claimed) => {}
            Ok(RotationClaim::Taken(now)) => {
                let by = now.last_run_id.as_deref().unwrap_or("-");
                let how = now
                    .last_run_state
                    .map(|s| s.to_string())
                    .unwrap_or_default();
                tracing::info!(target: "keycycle", "{id}: not rotated: run {by} ({how}) is its latest");
                return Rotated {
                    id: id.to_owned(),
                    outcome: SKIPPED.to_owned(),
                    run_id: None,
                    expires_at: None,
                    error: Some(if now.last_run_state == Some(RunState::Running) {
                        format!(
                            "run {by} is rotating it, or was interrupted doing so; \
                             `keycycle resume {by}` finishes it if it is not running"
                        )
                    } else {
                        format!(
                            "run {by} ({how}) rotated it after this batch looked; \
                             `keycycle rotate {id}` rotates it once more"
                        )
                    }),
                };
            }
            Err(e) => return failed(Code::Config.word(), None, &anyhow::Error::new(e)),
        }
    }
    let request = crate::run::RunRequest {
        resume: None,
        runbook: std::path::PathBuf::from(&section.runbook),
        params: section.params(record.as_ref()),
        inputs: given,
        env: section.env.clone(),
        dry_run,
        json: false,
        quiet: true,
        run_id,
    };
    let started = now_ms();
    let summary = match crate::run::run(config, request, Some(pool)).await {
        Ok(s) => s,
        Err(e) => return failed(crate::exit::code_of(&e).word(), None, &e),
    };
    let rotated = settle(state, id, section, &summary, started, dry_run);
    Rotated {
        id: id.to_owned(),
        run_id: summary.run_id,
        ..rotated
    }
}

fn new_run_id() -> String {
    let mut id = [0u8; 8];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut id);
    hex::encode(id)
}

/// Records how a credential's run ended (its state as the run's own record
/// has it, the new expiry, the parameters that follow the new token) and
/// says it for the summary.
fn settle(
    state: &dyn StateStore,
    id: &str,
    section: &CredentialSection,
    summary: &crate::run::RunSummary,
    started: i64,
    dry_run: bool,
) -> Rotated {
    let mut followed = BTreeMap::new();
    let (outcome, run_state, expires, error) = match &summary.outcome {
        Ok(result) => {
            let expires = section.expiry_after_rotation(result, started);
            let outcome = if dry_run { "dry-run" } else { "succeeded" };
            followed = section.followed(result);
            (outcome.to_owned(), RunState::Succeeded, expires, None)
        }
        Err(e) => {
            let code = crate::exit::code_of(e);
            (
                code.word().to_owned(),
                RunState::Failed,
                None,
                Some(keycycle_secret::redact(&crate::exit::causes(e).join(": ")).into_owned()),
            )
        }
    };
    if let (Some(run_id), false) = (&summary.run_id, dry_run) {
        // What the run's own record says wins: a stopped run is not failed.
        let recorded = state
            .run(run_id)
            .ok()
            .flatten()
            .map(|r| r.state)
            .unwrap_or(run_state);
        let outcome = RotationOutcome {
            run_id: run_id.clone(),
            state: recorded,
            at: now_ms(),
            expires_at: expires.map(|(t, _)| t),
            expiry_source: expires.map(|(_, s)| s.to_owned()),
            params: followed,
        };
        if let Err(e) = state.record_rotation(id, &outcome) {
            tracing::warn!(target: "keycycle", "{id}: the rotation's record was not kept: {e}");
        }
    }
    Rotated {
        id: id.to_owned(),
        outcome,
        run_id: summary.run_id.clone(),
        expires_at: expires.map(|(t, _)| format_date(t)),
        error,
    }
}

/// After a resume: if the run rotates an inventory credential, record how
/// it ended.
pub fn after_resume(config: &Config, run_id: &str, summary: &crate::run::RunSummary) {
    let Ok(state) = open_state(config) else {
        return;
    };
    let Ok(records) = state.credentials() else {
        return;
    };
    for record in records {
        if record.last_run_id.as_deref() == Some(run_id)
            && let Ok(credentials) = config.credentials()
            && let Some(section) = credentials.get(&record.id)
        {
            let started = record.last_run_at.unwrap_or_else(now_ms);
            settle(state.as_ref(), &record.id, section, summary, started, false);
        }
    }
}

/// `keycycle resume --all`: finishes every interrupted run, one after the
/// other on one plugin pool (a killed `rotate` batch leaves several). A
/// run another process is still running is left to it.
pub async fn resume_all(
    config: &Config,
    given: crate::inputs::Given,
    force: bool,
    retry_in_flight: bool,
    json: bool,
) -> Result<()> {
    let state = open_state(config)?;
    let runs = state
        .list_runs(&keycycle_store::state::RunFilter {
            states: vec![RunState::Running, RunState::WaitingForApproval],
            ..Default::default()
        })
        .context(Code::Config)?;
    let mut report = Vec::new();
    if !runs.is_empty() {
        let store = Arc::new(StoreAccess::new(config));
        store.check_key()?;
        let pool = crate::run::runner(config, store, Some(state.clone()))?;
        // Oldest first: the order they were started in.
        for record in runs.iter().rev() {
            let request = crate::run::RunRequest {
                resume: Some(crate::run::Resume {
                    run_id: record.run_id.clone(),
                    force,
                    retry_in_flight,
                }),
                runbook: std::path::PathBuf::from(&record.runbook_path),
                params: record.params.clone(),
                inputs: given.clone(),
                env: record.env.clone(),
                dry_run: false,
                json: false,
                quiet: true,
                run_id: None,
            };
            let span = tracing::info_span!("run", id = %record.run_id);
            let (outcome, error) = match crate::run::run(config, request, Some(&pool))
                .instrument(span)
                .await
            {
                Ok(summary) => {
                    after_resume(config, &record.run_id, &summary);
                    match &summary.outcome {
                        Ok(_) => ("succeeded".to_owned(), None),
                        Err(e) => (
                            crate::exit::code_of(e).word().to_owned(),
                            Some(crate::exit::causes(e).join(": ")),
                        ),
                    }
                }
                Err(e) => (
                    crate::exit::code_of(&e).word().to_owned(),
                    Some(crate::exit::causes(&e).join(": ")),
                ),
            };
            note!("resume: {}: {outcome}", record.run_id);
            report.push(json!({
                "run_id": record.run_id,
                "runbook": record.runbook_path,
                "outcome": outcome,
                "error": error.map(|e| keycycle_secret::redact(&e).into_owned()),
            }));
        }
    }
    let unfinished = report
        .iter()
        .filter(|r| r["outcome"] != "succeeded")
        .count();
    if json {
        outln!("{}", serde_json::to_string_pretty(&report)?);
    } else if report.is_empty() {
        note!("resume: no interrupted run");
    } else {
        for r in &report {
            outln!(
                "{}  {}  {}",
                r["run_id"].as_str().unwrap_or_default(),
                r["outcome"].as_str().unwrap_or_default(),
                keycycle_host::one_line(r["error"].as_str().unwrap_or_default())
            );
        }
    }
    if unfinished > 0 {
        return Err(anyhow!(
            "{unfinished} of {} run(s) did not finish; see `keycycle runs`",
            report.len()
        ))
        .context(Code::RunbookFailed);
    }
    Ok(())
}

/// Progress of a batch: a bar on a terminal, a line per credential
/// otherwise (CI logs keep every line).
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    total: usize,
    done: std::sync::atomic::AtomicUsize,
}

impl Progress {
    fn new(total: usize) -> Progress {
        use std::io::IsTerminal;
        let bar = (std::io::stderr().is_terminal() && crate::out::notes_wanted()).then(|| {
            let bar = indicatif::ProgressBar::new(total as u64);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{spinner} rotating [{bar:30}] {pos}/{len} {msg}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            bar
        });
        Progress {
            bar,
            total,
            done: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    fn done(&self, id: &str, outcome: &str) {
        let n = self.done.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        match &self.bar {
            Some(bar) => {
                bar.inc(1);
                bar.set_message(format!("{id}: {outcome}"));
            }
            None => note!("rotate: [{n}/{}] {id}: {outcome}", self.total),
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

pub struct ExporterArgs {
    pub listen: std::net::SocketAddr,
    /// Seconds between two checks.
    pub interval: u64,
    pub concurrency: usize,
}

/// `keycycle exporter`: the metrics of `keycycle check` over HTTP, at
/// `/metrics`. The check runs at start and then every `interval` seconds,
/// not on each scrape: a Prometheus scraping every 15 s must not turn into
/// a request to every provider every 15 s.
pub async fn exporter(config: Config, args: ExporterArgs) -> Result<()> {
    let config = Arc::new(config);
    select(
        &config,
        &Selection {
            ids: Vec::new(),
            team: None,
        },
    )
    .context(Code::Config)?;
    let state = open_state(&config)?;
    // Loaded once and kept for every check: a scrape-driven process must
    // not recompile or re-describe its plugins each interval.
    let pool = if config
        .credentials()
        .context(Code::Config)?
        .values()
        .any(|c| c.expiry_plugin().is_some())
    {
        let store = Arc::new(StoreAccess::new(&config));
        store.check_key()?;
        Some(crate::run::plugin_pool(
            &config,
            store,
            Some(config.cache_dir.clone()),
        )?)
    } else {
        None
    };
    let text = Arc::new(tokio::sync::RwLock::new(String::new()));
    let refresh = {
        let (config, state, text, pool) = (config.clone(), state.clone(), text.clone(), pool);
        move || {
            let (config, state, text, pool) =
                (config.clone(), state.clone(), text.clone(), pool.clone());
            async move {
                match metrics_now(&config, pool.as_ref(), state.as_ref(), args.concurrency).await {
                    Ok(metrics) => *text.write().await = metrics,
                    Err(e) => {
                        tracing::error!(target: "keycycle", "the check failed: {}", crate::exit::causes(&e).join(": "));
                    }
                }
            }
        }
    };
    refresh().await;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))
        .context(Code::Config)?;
    let addr = listener.local_addr().context(Code::Internal)?;
    note!(
        "exporter: serving http://{addr}/metrics; checking every {} s",
        args.interval
    );
    let ticker = tokio::spawn(async move {
        let mut every = tokio::time::interval(std::time::Duration::from_secs(args.interval.max(1)));
        every.tick().await;
        loop {
            every.tick().await;
            refresh().await;
        }
    });
    let app = axum::Router::new()
        .route(
            "/metrics",
            axum::routing::get(move || {
                let text = text.clone();
                async move {
                    (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "text/plain; version=0.0.4; charset=utf-8",
                        )],
                        text.read().await.clone(),
                    )
                }
            }),
        )
        .route(
            "/",
            axum::routing::get(|| async { "keycycle exporter: see /metrics\n" }),
        );
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await;
    ticker.abort();
    served
        .context("the exporter stopped")
        .context(Code::Internal)
}

/// One check of every credential, recorded, as metrics.
async fn metrics_now(
    config: &Config,
    pool: Option<&Arc<keycycle_engine::PluginPool>>,
    state: &dyn StateStore,
    concurrency: usize,
) -> Result<String> {
    let entries = select(
        config,
        &Selection {
            ids: Vec::new(),
            team: None,
        },
    )?;
    let checked_at = now_ms();
    let verdicts = judge(config, pool, state, entries, concurrency).await?;
    record_checks(state, &verdicts, checked_at)?;
    let records = records_by_id(state)?;
    Ok(metrics_text(&verdicts, &records, checked_at))
}

pub struct DiscoverArgs {
    pub plugin: String,
    pub env: Option<String>,
    pub projects: Vec<String>,
    pub groups: Vec<String>,
    /// Also list what the inventory already covers.
    pub all: bool,
    /// Print inventory sections for what nothing covers.
    pub toml: bool,
    pub json: bool,
}

/// One credential the provider has.
#[derive(serde::Serialize)]
struct Found {
    kind: String,
    id: String,
    name: String,
    owner: String,
    expires_at: Option<String>,
    last_used_at: Option<String>,
    runbook: String,
    params: BTreeMap<String, String>,
    /// Inventory credentials that rotate it.
    covered_by: Vec<String>,
}

/// `keycycle discover PLUGIN`: the credentials a provider has that the
/// inventory does not cover, with their expiry: the tokens nobody rotates.
/// The plugin's read-only `discover` operation lists them, each with the
/// runbook and parameters that would rotate it; a credential is covered
/// when an inventory credential uses that runbook with those parameters.
pub async fn discover(config: &Config, args: DiscoverArgs) -> Result<()> {
    if !config.plugins.contains_key(&args.plugin) {
        return Err(anyhow!(
            "no plugin `{}` is configured (configured: {})",
            args.plugin,
            names(config.plugins.keys())
        ))
        .context(Code::Config);
    }
    if let Some(env) = &args.env {
        config.check_env(env).context(Code::Config)?;
    }
    let inventory = config.credentials().context(Code::Config)?;
    let store = Arc::new(StoreAccess::new(config));
    store.check_key()?;
    let only = BTreeSet::from([args.plugin.clone()]);
    let (_pool, plugins) = load_plugins_cached(
        config,
        args.env.as_deref(),
        store,
        Some(config.cache_dir.clone()),
        None,
        Some(&only),
    )
    .await?;
    let plugin = match plugins.get(&args.plugin) {
        Some(LoadedPlugin::Ready { plugin, .. }) => plugin.clone(),
        Some(LoadedPlugin::Refused { message, denied }) => {
            let code = if *denied { Code::Denied } else { Code::Config };
            return Err(anyhow!("plugin `{}` did not load: {message}", args.plugin)).context(code);
        }
        None => {
            return Err(anyhow!("plugin `{}` is not configured", args.plugin))
                .context(Code::Config);
        }
    };
    match plugin.description().operation("discover") {
        None => {
            return Err(anyhow!(
                "plugin `{}` ({}) has no `discover` operation, so it cannot list what its \
                 provider holds",
                args.plugin,
                keycycle_host::one_line(&plugin.description().name)
            ))
            .context(Code::Config);
        }
        Some(spec) if spec.mutates => {
            return Err(anyhow!(
                "{}.discover changes things at the provider; discovery only reads",
                args.plugin
            ))
            .context(Code::Config);
        }
        Some(_) => {}
    }
    let input = Value::from_json(json!({ "projects": args.projects, "groups": args.groups }));
    let ctx = CallContext {
        run_id: "discover".to_owned(),
        idempotency_key: "discover".to_owned(),
    };
    let answer = plugin
        .invoke("discover", &input, &ctx)
        .await
        .map_err(|e| anyhow!("{}", keycycle_host::one_line(&e.to_string())))
        .context(Code::RunbookFailed)?
        .to_redacted_json();
    let state = open_state(config)?;
    let records = records_by_id(state.as_ref())?;
    let text = |v: &serde_json::Value| match v {
        serde_json::Value::Null => None,
        serde_json::Value::String(s) => Some(keycycle_host::one_line(s)),
        other => Some(other.to_string()),
    };
    let mut found: Vec<Found> = Vec::new();
    for item in answer["credentials"].as_array().into_iter().flatten() {
        let params: BTreeMap<String, String> = item["params"]
            .as_object()
            .into_iter()
            .flatten()
            .filter_map(|(k, v)| text(v).map(|v| (k.clone(), v)))
            .collect();
        let runbook = text(&item["runbook"]).unwrap_or_default();
        let covered_by = inventory
            .iter()
            .filter(|(id, c)| {
                let have = c.params(records.get(*id));
                c.runbook == runbook
                    && !params.is_empty()
                    && params.iter().all(|(k, v)| have.get(k) == Some(v))
            })
            .map(|(id, _)| id.clone())
            .collect();
        found.push(Found {
            kind: text(&item["kind"]).unwrap_or_default(),
            id: text(&item["id"]).unwrap_or_default(),
            name: text(&item["name"]).unwrap_or_default(),
            owner: text(&item["owner"]).unwrap_or_default(),
            expires_at: text(&item["expires_at"]),
            last_used_at: text(&item["last_used_at"]),
            runbook,
            params,
            covered_by,
        });
    }
    let uncovered = found.iter().filter(|f| f.covered_by.is_empty()).count();
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&found)?);
    } else if args.toml {
        for f in found.iter().filter(|f| f.covered_by.is_empty()) {
            outln!("{}", inventory_section(&args.plugin, f));
        }
    } else {
        outln!("KIND  ID  NAME  OWNER  EXPIRES  LAST_USED  COVERED_BY");
        for f in found.iter().filter(|f| args.all || f.covered_by.is_empty()) {
            outln!(
                "{}  {}  {}  {}  {}  {}  {}",
                f.kind,
                f.id,
                f.name,
                f.owner,
                f.expires_at.as_deref().unwrap_or("never"),
                f.last_used_at.as_deref().unwrap_or("never"),
                if f.covered_by.is_empty() {
                    "-".to_owned()
                } else {
                    f.covered_by.join(",")
                }
            );
        }
    }
    note!(
        "discover: {} credential(s) at {}, {uncovered} not in the inventory{}",
        found.len(),
        args.plugin,
        if uncovered > 0 && !args.toml {
            " (`--toml` prints sections to add)"
        } else {
            ""
        }
    );
    Ok(())
}

/// A `[credentials.ID]` section that would rotate `f`.
fn inventory_section(plugin: &str, f: &Found) -> String {
    let id: String = format!("{plugin}-{}-{}", f.kind.replace('_', "-"), f.id)
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    let quote = |s: &str| toml::Value::String(s.to_owned()).to_string();
    let params = f
        .params
        .iter()
        .map(|(k, v)| format!("{k} = {}", quote(v)))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "# {} {} of {}, expires {}\n[credentials.{id}]\nrunbook = {}\nparams = {{ {params} }}\n",
        f.kind.replace('_', " "),
        quote(&f.name),
        if f.owner.is_empty() { "-" } else { &f.owner },
        f.expires_at.as_deref().unwrap_or("never"),
        quote(&f.runbook),
    )
}
