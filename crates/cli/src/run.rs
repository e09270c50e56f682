//! `keycycle run` and `keycycle resume`: find the runbook, work out whose
//! it is, check the operator's `--input`s against it, and print how the
//! engine's run went. The run itself is `keycycle_engine::Runner`'s.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, anyhow};
use keycycle_engine::liveness::LivenessError;
use keycycle_engine::{Durability, LoadedPlugin, RunError, RunSpec, Runner, Step};
use keycycle_host::SandboxConfig;
use keycycle_policy::RunPolicy;
use keycycle_runbook::{ErrorKind, Limits, PromptKind, Runbook, RunbookError};
use keycycle_store::state::StateStore;
use rand::RngCore;
use serde::Serialize;

use crate::config::Config;
use crate::durable;
use crate::exit::Code;
use crate::inputs::{Given, Inputs, Source};
use crate::store::StoreAccess;

pub use keycycle_engine::Resume;

pub struct RunRequest {
    pub resume: Option<Resume>,
    pub runbook: PathBuf,
    pub params: BTreeMap<String, String>,
    /// `--input` answers, and which `prompt()` answers are plain or secret.
    pub inputs: Given,
    pub env: Option<String>,
    pub dry_run: bool,
    pub json: bool,
    /// Print nothing on stdout (a run of a batch, which prints a summary).
    pub quiet: bool,
    /// The id of a new run, chosen by the caller (a batch records which
    /// credential a run rotates before it starts); a random one otherwise.
    pub run_id: Option<String>,
}

#[derive(Serialize)]
struct Report<'a> {
    ok: bool,
    /// Null for a dry run: dry runs are not kept, so there is nothing to
    /// `show` or `resume` under an id.
    run_id: Option<&'a str>,
    runbook: String,
    dry_run: bool,
    duration_ms: u64,
    steps: Vec<Step>,
    #[serde(skip_serializing_if = "Option::is_none")]
    result: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<ErrorReport>,
}

#[derive(Serialize)]
struct ErrorReport {
    kind: &'static str,
    exit_code: u8,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    line: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    column: Option<usize>,
    /// For a run stopped for want of an answer: the command that resumes
    /// it with that answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    resume_command: Option<String>,
}

/// Finds the runbook: a path as given, else `NAME` or `NAME.rhai` in the
/// runbooks folder.
pub fn resolve_runbook(config: &Config, given: &Path) -> Result<PathBuf> {
    if given.is_file() {
        return Ok(given.to_owned());
    }
    for candidate in [
        config.runbooks_dir.join(given),
        config.runbooks_dir.join(given).with_extension("rhai"),
    ] {
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    Err(anyhow!(
        "runbook {} not found (looked for it as a path and in {})",
        given.display(),
        config.runbooks_dir.display()
    ))
    .context(Code::Config)
}

/// Loads every configured plugin. A plugin that cannot be loaded does not
/// stop the command; the caller reports its error.
pub async fn load_plugins(
    config: &Config,
    env: Option<&str>,
    store: Arc<StoreAccess>,
) -> Result<(
    Arc<keycycle_engine::PluginPool>,
    BTreeMap<String, LoadedPlugin>,
)> {
    load_plugins_cached(
        config,
        env,
        store,
        Some(config.cache_dir.clone()),
        None,
        None,
    )
    .await
}

/// [`load_plugins`] with the compiled-plugin cache chosen by the caller
/// (`keycycle doctor` passes `None` when the cache folder does not exist,
/// so that it creates nothing), narrowed to what `policy` lets a run call
/// and to the plugins named in `only`.
pub async fn load_plugins_cached(
    config: &Config,
    env: Option<&str>,
    store: Arc<StoreAccess>,
    cache_dir: Option<PathBuf>,
    policy: Option<&RunPolicy>,
    only: Option<&std::collections::BTreeSet<String>>,
) -> Result<(
    Arc<keycycle_engine::PluginPool>,
    BTreeMap<String, LoadedPlugin>,
)> {
    let pool = plugin_pool(config, store, cache_dir)?;
    let plugins = pool.all(env, policy, only).await.context(Code::Config)?;
    Ok((pool, plugins))
}

/// One sandbox for the process, and the configured plugins, each loaded
/// when first asked for.
pub fn plugin_pool(
    config: &Config,
    store: Arc<StoreAccess>,
    cache_dir: Option<PathBuf>,
) -> Result<Arc<keycycle_engine::PluginPool>> {
    let pool = keycycle_engine::PluginPool::new(
        &SandboxConfig {
            cache_dir,
            cache_key_file: Some(config.cache_key_file.clone()),
            pooling: true,
        },
        Arc::new(config.catalog()),
        store,
    )
    .context(Code::Config)?;
    Ok(Arc::new(pool))
}

/// What the runs of this process share: the plugin pool, the secrets
/// store, and (for runs that are not dry runs) the state database.
pub fn runner(
    config: &Config,
    store: Arc<StoreAccess>,
    state: Option<Arc<dyn StateStore>>,
) -> Result<Runner> {
    store.check_key()?;
    let durable = match state {
        Some(state) => Some(Durability {
            state,
            key: store.master_key()?,
            run_files: durable::runs_dir(config),
        }),
        None => None,
    };
    Ok(Runner {
        plugins: plugin_pool(config, store.clone(), Some(config.cache_dir.clone()))?,
        store,
        durable,
        limits: Limits {
            memory_in_use: Some(crate::heap_in_use),
            ..Limits::default()
        },
    })
}

fn code_for(kind: &ErrorKind) -> Code {
    match kind {
        ErrorKind::Locked => Code::Locked,
        ErrorKind::Interrupted => Code::NeedsAttention,
        ErrorKind::Compile | ErrorKind::Import => Code::RunbookInvalid,
        ErrorKind::Denied => Code::Denied,
        ErrorKind::MissingInput => Code::InputRequired,
        ErrorKind::AwaitingApproval => Code::WaitingForApproval,
        ErrorKind::Rejected => Code::Rejected,
        _ => Code::RunbookFailed,
    }
}

/// Every `--input` source must be readable before the run starts: a typo
/// found at the prompt would stop a run that already holds its locks.
fn check_input_sources(inputs: &Given) -> Result<()> {
    for (name, source) in &inputs.sources {
        match source {
            Source::File(path) => {
                std::fs::File::open(path)
                    .with_context(|| {
                        format!(
                            "--input {name}=@{}: cannot read the file; fix the path and run the same command again",
                            path.display()
                        )
                    })
                    .context(Code::Config)?;
            }
            Source::Env(var) => {
                if std::env::var_os(var).is_none() {
                    return Err(anyhow!(
                        "--input {name}=env:{var}: the environment variable {var} is not set"
                    ))
                    .context(Code::Config);
                }
            }
            Source::Literal(_) => {}
        }
    }
    Ok(())
}

/// What can be known before the first effect, checked before the run is
/// recorded (the engine has checked that every plugin the runbook names
/// has loaded): every `--input` answers a prompt the runbook has, in a form that prompt
/// takes (a secret's form for a `prompt()` whose answer will be a secret),
/// and every `--plain-input` and `--secret-input` names a `prompt()` it has.
fn check_before_start(runbook: &Runbook, inputs: &Given) -> Result<()> {
    let prompts = runbook.prompts();
    let mut known: Vec<&str> = prompts.iter().filter_map(|p| p.name.as_deref()).collect();
    known.sort_unstable();
    known.dedup();
    let asked = |name: &str| -> Vec<&keycycle_runbook::PromptSite> {
        prompts
            .iter()
            .filter(|p| p.name.as_deref() == Some(name))
            .collect()
    };
    let at = |prompt: &keycycle_runbook::PromptSite| {
        format!(
            "{}{}",
            prompt.file.display(),
            prompt.line.map(|l| format!(":{l}")).unwrap_or_default()
        )
    };
    let named = inputs
        .sources
        .keys()
        .map(|name| (name, "--input"))
        .chain(inputs.declared.iter().map(|(name, d)| (name, d.flag())));
    for (name, flag) in named {
        let asked = asked(name);
        let Some(first) = asked.first() else {
            if runbook.prompt_names_known() {
                return Err(anyhow!(
                    "{flag} {name}: the runbook never asks for `{name}`{}",
                    if known.is_empty() {
                        "; it has no prompts".to_owned()
                    } else {
                        format!("; it asks for {}", known.join(", "))
                    }
                ))
                .context(Code::Config);
            }
            tracing::warn!(target: "keycycle", "{flag} {name}: no prompt of the runbook is known to ask for `{name}` (some prompt names are computed when it runs)");
            continue;
        };
        // A declaration that could not change anything is a mistake the
        // operator should hear about: a secret prompt is always a secret,
        // a yes/no never is.
        if flag != "--input" && !asked.iter().any(|p| p.kind == PromptKind::Text) {
            let what = match first.kind {
                PromptKind::Confirm => "a yes/no question (confirm)",
                _ => "a secret prompt (prompt_secret), whose answer is always a secret",
            };
            return Err(anyhow!(
                "{flag} {name}: `{name}` is {what} ({}); only a prompt()'s answer can be declared plain or secret",
                at(first)
            ))
            .context(Code::Config);
        }
    }
    for (name, source) in &inputs.sources {
        for prompt in asked(name) {
            let at = at(prompt);
            match (inputs.kind_of(name, prompt.kind, Some(source)), source) {
                (PromptKind::Secret, Source::Literal(_)) => {
                    let what = if prompt.kind == PromptKind::Secret {
                        format!("`{name}` is a secret ({at})")
                    } else {
                        format!("`{name}` is declared a secret with --secret-input ({at})")
                    };
                    return Err(anyhow!(
                        "--input {name}: {what}, and a secret on the command line is readable by every user of this machine; \
                         pass --input {name}=@FILE or --input {name}=env:VAR"
                    ))
                    .context(Code::Config);
                }
                // A secret prompt's value is only read when it is asked for.
                (PromptKind::Secret, _) if prompt.kind == PromptKind::Secret => {}
                (kind, source) => {
                    // It may be a secret now: wipe this copy after the check.
                    let text = zeroize::Zeroizing::new(match source {
                        Source::Literal(v) => v.clone(),
                        Source::File(path) => std::fs::read_to_string(path)
                            .with_context(|| format!("--input {name}=@{}", path.display()))
                            .context(Code::Config)?,
                        Source::Env(var) => std::env::var(var).unwrap_or_default(),
                    });
                    let text = text.trim_end_matches(['\n', '\r']);
                    kind.check_answer(text)
                        .map_err(|why| {
                            if inputs.secret_by_source(name, prompt.kind, source) {
                                anyhow!(
                                    "--input {name}: {why}; {} (asked at {at})",
                                    crate::inputs::plain_hint(name)
                                )
                            } else {
                                anyhow!("--input {name}: {why} (asked at {at})")
                            }
                        })
                        .context(Code::Config)?;
                }
            }
        }
    }
    Ok(())
}

/// How a run that started ended: its id (none for a dry run, which is not
/// kept) and its result or error. An error before the run started is the
/// `Err` of [`run`] itself.
pub struct RunSummary {
    pub run_id: Option<String>,
    pub outcome: Result<serde_json::Value>,
}

/// The exit code of a run that did not start.
fn code_for_run_error(e: &RunError) -> Code {
    match e {
        RunError::Runbook(e) => code_for(&e.kind),
        RunError::PluginNotLoaded { denied: true, .. } => Code::Denied,
        RunError::Liveness(LivenessError::Running(_)) => Code::Locked,
        RunError::Rejected { .. } => Code::Rejected,
        RunError::Thread => Code::Internal,
        _ => Code::Config,
    }
}

/// Runs (or resumes) a runbook. `runner` shares plugins and the state
/// database with the other runs of this process; without it the run
/// makes its own.
pub async fn run(config: &Config, req: RunRequest, runner: Option<&Runner>) -> Result<RunSummary> {
    check_input_sources(&req.inputs)?;
    if let Some(env) = &req.env {
        config.check_env(env).context(Code::Config)?;
    }
    let path = resolve_runbook(config, &req.runbook)?;
    let canonical = path
        .canonicalize()
        .with_context(|| format!("cannot resolve {}", path.display()))
        .context(Code::Config)?;
    // Imports stay inside the runbooks folder; a runbook kept elsewhere may
    // import only from its own folder.
    let root = match config.runbooks_dir.canonicalize() {
        Ok(dir) if canonical.starts_with(&dir) => dir,
        _ => canonical.parent().map(Path::to_owned).unwrap_or_default(),
    };
    let runbook_name = canonical
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    // Grants and team ownership go by the runbook's path inside the
    // runbooks folder; a runbook elsewhere gets none.
    let identity = config.runbook_identity(&canonical);
    let policy = config.policy.for_run(identity.as_deref());
    match (&identity, policy.team()) {
        (Some(id), Some(team)) => {
            tracing::debug!(target: "keycycle", "runbook {id} belongs to team {team}")
        }
        (None, _) => {
            tracing::info!(target: "keycycle", "{} is outside the runbooks folder ({}), so it gets no grants", path.display(), config.runbooks_dir.display())
        }
        _ => {}
    }

    let own_runner;
    let runner = match runner {
        Some(runner) => runner,
        None => {
            let store = Arc::new(StoreAccess::new(config));
            let state = match req.dry_run {
                true => None,
                false => Some(durable::open_state(config)?),
            };
            own_runner = self::runner(config, store, state)?;
            &own_runner
        }
    };

    let run_id = match (&req.resume, &req.run_id) {
        (Some(r), _) => r.run_id.clone(),
        (None, Some(id)) => id.clone(),
        (None, None) => {
            let mut id = [0u8; 8];
            rand::rng().fill_bytes(&mut id);
            hex::encode(id)
        }
    };
    let inputs = Arc::new(Inputs::new(req.inputs.clone()));
    if req.dry_run {
        tracing::info!(target: "keycycle", "dry run: operations that change anything will be shown, not sent");
    }
    let shown_path = path.display().to_string();
    let spec = RunSpec {
        run_id: run_id.clone(),
        resume: req.resume.clone(),
        path: path.clone(),
        canonical,
        import_root: root,
        params: req.params.clone(),
        env: req.env.clone(),
        dry_run: req.dry_run,
        policy,
        approval_rules: crate::approvals::rules_from_config(
            config,
            identity.as_deref().unwrap_or_default(),
        ),
        answers: inputs.clone(),
    };
    let not_started = |e: RunError| -> Result<anyhow::Error> {
        let code = code_for_run_error(&e);
        if req.json && !req.quiet {
            // Nothing ran, and no run was recorded: no run id, no steps.
            let error = match &e {
                RunError::Runbook(e) => serde_json::to_value(error_report(e, code))?,
                other => serde_json::json!({
                    "kind": code.word(),
                    "exit_code": code.exit_code(),
                    "message": other.to_string(),
                }),
            };
            print_json(&serde_json::json!({
                "ok": false,
                "runbook": shown_path,
                "dry_run": req.dry_run,
                "error": error,
            }))?;
        }
        Ok(anyhow::Error::new(e).context(code))
    };
    let prepared = match runner.prepare(spec).await {
        Ok(prepared) => prepared,
        Err(e) => return Err(not_started(e)?),
    };
    if let Err(e) = check_before_start(prepared.runbook(), &req.inputs) {
        if req.json && !req.quiet {
            let code = crate::exit::code_of(&e);
            print_json(&serde_json::json!({
                "ok": false,
                "runbook": shown_path,
                "dry_run": req.dry_run,
                "error": {
                    "kind": code.word(),
                    "exit_code": code.exit_code(),
                    "message": crate::exit::causes(&e).join(": "),
                },
            }))?;
        }
        return Err(e);
    }
    let end = match runner.start(prepared).await {
        Ok(end) => end,
        Err(e) => return Err(not_started(e)?),
    };

    let steps = end.steps;
    let changes = steps.iter().filter(|s| s.mutates && !s.skipped).count();
    let duration_ms = end.duration.as_millis() as u64;
    match end.outcome {
        Ok(value) => {
            let result = value.to_redacted_json();
            if req.quiet {
            } else if req.json {
                print_json(&Report {
                    ok: true,
                    run_id: (!req.dry_run).then_some(run_id.as_str()),
                    runbook: shown_path,
                    dry_run: req.dry_run,
                    duration_ms,
                    steps,
                    result: Some(result.clone()),
                    error: None,
                })?;
            } else {
                if !result.is_null() {
                    outln!(
                        "{}",
                        keycycle_secret::redact(&serde_json::to_string_pretty(&result)?)
                    );
                }
                note!(
                    "{}",
                    keycycle_secret::redact(&format!(
                        "runbook {runbook_name} finished: {} plugin calls, {changes} changes{} ({duration_ms} ms)",
                        steps.len(),
                        if req.dry_run { ", dry run" } else { "" },
                    ))
                );
            }
            Ok(RunSummary {
                run_id: (!req.dry_run).then_some(run_id),
                outcome: Ok(result),
            })
        }
        Err(e) => {
            let code = code_for(&e.kind);
            // A journaled run that stopped for an answer keeps its locks and
            // waits to be resumed; a new run would only hit those locks.
            // So the way on is the exact resume line, not "pass --input".
            let state = runner
                .durable
                .as_ref()
                .filter(|_| !req.dry_run)
                .map(|d| &d.state);
            let stranded = match (state, inputs.unanswered()) {
                (Some(state), Some(prompt)) if e.kind == ErrorKind::MissingInput => {
                    let locks: Vec<String> = state
                        .locks()
                        .unwrap_or_default()
                        .into_iter()
                        .filter(|l| l.run_id == run_id)
                        .map(|l| l.credential)
                        .collect();
                    let command =
                        format!("keycycle resume {run_id} --input {}", prompt.input_form());
                    let text = format!(
                        "run {run_id} stopped for want of an answer to `{}`; it holds its locks ({}) and waits to be resumed \
                         (a new run would find them taken). Give the answer to this run:\n  {command}\n  ({})",
                        prompt.name,
                        if locks.is_empty() {
                            "none".to_owned()
                        } else {
                            locks.join(", ")
                        },
                        prompt.alternatives()
                    );
                    Some((command, text))
                }
                _ => None,
            };
            if req.json && !req.quiet {
                print_json(&Report {
                    ok: false,
                    run_id: (!req.dry_run).then_some(run_id.as_str()),
                    runbook: shown_path,
                    dry_run: req.dry_run,
                    duration_ms,
                    steps,
                    result: None,
                    error: Some(ErrorReport {
                        resume_command: stranded.as_ref().map(|(c, _)| c.clone()),
                        ..error_report(&e, code)
                    }),
                })?;
            }
            let err = anyhow::Error::new(e);
            Ok(RunSummary {
                run_id: (!req.dry_run).then_some(run_id),
                outcome: Err(match stranded {
                    Some((_, text)) => err.context(text),
                    None => err,
                }
                .context(code)),
            })
        }
    }
}

fn error_report(e: &RunbookError, code: Code) -> ErrorReport {
    ErrorReport {
        kind: code.word(),
        exit_code: code.exit_code(),
        message: e.to_string(),
        file: Some(e.file.display().to_string()),
        line: e.line,
        column: e.column,
        resume_command: None,
    }
}

fn print_json(report: &impl Serialize) -> Result<()> {
    let text = serde_json::to_string_pretty(report)?;
    outln!("{}", keycycle_secret::redact(&text));
    Ok(())
}
