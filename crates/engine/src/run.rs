//! One run of a runbook, from its compiled source to its recorded end:
//! the effects stacked under the runbook (host, journal, policy), the
//! run's record and lock file, resume checks, and how the end is written.
//!
//! A [`Runner`] holds what the runs of a process share (the plugin pool,
//! the secrets store, the state store and its journal key); each run is a
//! [`RunSpec`], prepared (compiled, its plugins loaded and checked) and
//! then started. Between the two the caller may check what only it knows
//! (the CLI checks `--input` against the runbook's prompts), and nothing
//! has been recorded yet, so a refusal there leaves no trace.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use keycycle_contract::Value;
use keycycle_policy::RunPolicy;
use keycycle_runbook::{Effects, ErrorKind, Limits, Runbook, RunbookError};
use keycycle_store::MasterKey;
use keycycle_store::state::{NewRun, RunEvent, RunState, StateError, StateStore};

use crate::liveness::{LivenessError, RunFile, hold_run_file};
use crate::plugins::{GrantsError, PluginPool, PluginSet};
use crate::{Answers, HostEffects, Journal, JournaledEffects, LoadedPlugin, PolicyEffects};
use crate::{SecretStoreAccess, Step, approvals, now_ms, who};

/// Resuming an earlier run instead of starting a new one.
#[derive(Debug, Clone)]
pub struct Resume {
    pub run_id: String,
    /// Run even though the runbook changed since the run started.
    pub force: bool,
    /// Send again a mutating call that was in flight when the run died.
    pub retry_in_flight: bool,
}

/// Where runs are made durable: the state store, the key that seals what
/// the journal keeps of secrets, and the folder of the runs' lock files.
pub struct Durability {
    pub state: Arc<dyn StateStore>,
    pub key: MasterKey,
    pub run_files: PathBuf,
}

/// What the runs of one process share.
pub struct Runner {
    pub plugins: Arc<PluginPool>,
    pub store: Arc<dyn SecretStoreAccess>,
    /// `None` in a process that only makes dry runs.
    pub durable: Option<Durability>,
    pub limits: Limits,
}

/// One run to make.
pub struct RunSpec {
    pub run_id: String,
    pub resume: Option<Resume>,
    /// The runbook file as found, and as resolved (links followed): the
    /// record keeps the resolved path.
    pub path: PathBuf,
    pub canonical: PathBuf,
    /// The folder its imports may come from.
    pub import_root: PathBuf,
    /// The parameters as given; the run's `env` is added for the runbook.
    pub params: BTreeMap<String, String>,
    pub env: Option<String>,
    pub dry_run: bool,
    pub policy: RunPolicy,
    pub approval_rules: approvals::Rules,
    pub answers: Arc<dyn Answers>,
}

/// Why a run did not start. Nothing of it was recorded.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The runbook does not compile or import.
    #[error(transparent)]
    Runbook(Box<RunbookError>),
    #[error(
        "the runbook uses plugin `{plugin}`, which did not load: {message}; \
         `keycycle doctor` checks every plugin"
    )]
    PluginNotLoaded {
        plugin: String,
        message: String,
        /// Refused by the policy or the plugin trust rules, rather than
        /// failed.
        denied: bool,
    },
    #[error(transparent)]
    Grants(#[from] GrantsError),
    #[error(transparent)]
    Liveness(#[from] LivenessError),
    #[error("the state database: {0}; `keycycle doctor` checks it")]
    State(#[from] StateError),
    #[error("there is no run {0}; list unfinished runs with `keycycle runs`")]
    NoSuchRun(String),
    #[error("run {0} already succeeded; there is nothing to resume")]
    AlreadySucceeded(String),
    #[error(
        "run {run_id} ended at a rejected change request ({detail}); a decision is final, \
         so start a new run for a new request"
    )]
    Rejected { run_id: String, detail: String },
    #[error(
        "the runbook {path} changed since run {run_id} started, so replaying its journal could do \
         something else than the run began; check the change, then pass --force to resume anyway"
    )]
    RunbookChanged { path: String, run_id: String },
    #[error("a run that is not a dry run needs the state database, and this process has none")]
    NotDurable,
    #[error("the runbook thread stopped unexpectedly")]
    Thread,
}

/// A run compiled, with its plugins loaded and its lock file held, not
/// yet recorded.
pub struct Prepared {
    spec: RunSpec,
    started: Instant,
    runbook: Runbook,
    host: Arc<HostEffects>,
    journal: Option<RunFile>,
}

impl Prepared {
    pub fn runbook(&self) -> &Runbook {
        &self.runbook
    }
}

/// How a started run ended.
pub struct RunEnd {
    pub run_id: String,
    pub steps: Vec<Step>,
    /// Its result, or why it stopped (one escaped line of message).
    pub outcome: Result<Value, RunbookError>,
    pub duration: Duration,
}

impl Runner {
    /// Builds the run's effects, compiles the runbook, and loads the
    /// plugins its source names, each of which must load. A resumed run
    /// reads its journal and takes its lock file here.
    pub async fn prepare(&self, spec: RunSpec) -> Result<Prepared, RunError> {
        let started = Instant::now();
        let mut params = spec.params.clone();
        if let Some(env) = &spec.env {
            params
                .entry("env".to_owned())
                .or_insert_with(|| env.clone());
        }
        let host = Arc::new(HostEffects {
            rt: tokio::runtime::Handle::current(),
            plugins: PluginSet::new(self.plugins.clone(), spec.env.clone(), spec.policy.clone()),
            store: self.store.clone(),
            policy: spec.policy.clone(),
            approval_rules: spec.approval_rules.clone(),
            inputs: spec.answers.clone(),
            dry_run: spec.dry_run,
            run_id: spec.run_id.clone(),
            seq: AtomicU64::new(0),
            steps: Mutex::new(Vec::new()),
        });

        // Dry runs change nothing, so they are not journaled; every other
        // run is, and holds a lock file so a resume can tell it is alive.
        let (effects, run_file): (Arc<dyn Effects>, _) = if spec.dry_run {
            (host.clone(), None)
        } else {
            let durable = self.durable.as_ref().ok_or(RunError::NotDurable)?;
            let prior = match &spec.resume {
                Some(_) => durable.state.effects(&spec.run_id)?,
                None => Vec::new(),
            };
            let run_file = hold_run_file(&durable.run_files, &spec.run_id)?;
            let journal = Journal::new(
                durable.state.clone(),
                durable.key.clone(),
                spec.run_id.clone(),
                prior,
                spec.resume.as_ref().is_some_and(|r| r.retry_in_flight),
            );
            let journaled = Arc::new(JournaledEffects {
                inner: host.clone(),
                journal,
            });
            (journaled, Some(run_file))
        };
        // The policy sits above the journal: a resumed run meets every
        // rule again, under today's config, as it replays.
        let effects: Arc<dyn Effects> = Arc::new(PolicyEffects::new(effects, spec.policy.clone()));

        let runbook = {
            let path = spec.path.clone();
            let root = spec.import_root.clone();
            let limits = self.limits.clone();
            // The runbook's thread logs in the caller's span (a batch
            // names the credential).
            let span = tracing::Span::current();
            tokio::task::spawn_blocking(move || {
                let _in = span.enter();
                Runbook::compile(&path, &root, &params, effects, limits)
            })
            .await
            .map_err(|_| RunError::Thread)?
            .map_err(|e| RunError::Runbook(Box::new(e)))?
        };
        // Loaded before the run starts, so that a plugin that will not
        // load stops it before its first effect, and the run's record
        // names the plugins it uses. The others stay unloaded.
        let used: Vec<String> = runbook.plugins_used().iter().cloned().collect();
        for name in used {
            if let Some(LoadedPlugin::Refused { message, denied }) =
                host.plugins.load(&name).await?
            {
                return Err(RunError::PluginNotLoaded {
                    plugin: name,
                    message,
                    denied,
                });
            }
        }
        Ok(Prepared {
            spec,
            started,
            runbook,
            host,
            journal: run_file,
        })
    }

    /// Records the run (or checks that it may be resumed), runs it to its
    /// end, and records how it ended.
    pub async fn start(&self, prepared: Prepared) -> Result<RunEnd, RunError> {
        let Prepared {
            spec,
            started,
            runbook,
            host,
            journal: run_file,
        } = prepared;
        let durable = match (&run_file, &self.durable) {
            (Some(_), Some(durable)) => Some(durable),
            _ => None,
        };
        if let Some(durable) = durable {
            let hash = runbook.source_sha256_hex();
            match &spec.resume {
                Some(resume) => check_resumable(durable.state.as_ref(), resume, &hash)?,
                None => {
                    durable.state.create_run(&NewRun {
                        run_id: spec.run_id.clone(),
                        runbook_path: spec.canonical.display().to_string(),
                        runbook_sha256: hash,
                        params: spec.params.clone(),
                        env: spec.env.clone(),
                        dry_run: false,
                        user: who::user(),
                        host: who::host(),
                        plugins: host.plugins.loaded(),
                        started_at: now_ms(),
                    })?;
                    tracing::info!(target: "keycycle", "run {} started; if it is interrupted, finish it with `keycycle resume {}`", spec.run_id, spec.run_id);
                }
            }
        }
        let span = tracing::Span::current();
        let outcome = tokio::task::spawn_blocking(move || {
            let _in = span.enter();
            runbook.run()
        })
        .await
        .map_err(|_| RunError::Thread)?;
        // A runbook's error can quote what a plugin or provider said (a
        // pod's termination message in `fail(...)`, say): one escaped
        // line, so it cannot forge a line of keycycle's own on the
        // terminal or in the log.
        let outcome = outcome.map_err(|mut e| {
            e.message = keycycle_host::one_line(&e.message);
            e
        });
        if let Some(durable) = durable {
            record_end(durable.state.as_ref(), &spec.run_id, &outcome);
        }
        drop(run_file);
        let steps = host.steps.lock().unwrap_or_else(|p| p.into_inner()).clone();
        Ok(RunEnd {
            run_id: spec.run_id,
            steps,
            outcome,
            duration: started.elapsed(),
        })
    }
}

/// A run may be resumed if it did not finish well and its runbook is the
/// one it started with (unless forced).
pub fn check_resumable(
    state: &dyn StateStore,
    resume: &Resume,
    hash: &str,
) -> Result<(), RunError> {
    let run = state
        .run(&resume.run_id)?
        .ok_or_else(|| RunError::NoSuchRun(resume.run_id.clone()))?;
    if run.state == RunState::Succeeded {
        return Err(RunError::AlreadySucceeded(run.run_id));
    }
    if run.state == RunState::Rejected {
        return Err(RunError::Rejected {
            detail: run
                .detail
                .unwrap_or_else(|| "no reason recorded".to_owned()),
            run_id: run.run_id,
        });
    }
    if run.runbook_sha256 != hash {
        if !resume.force {
            return Err(RunError::RunbookChanged {
                path: run.runbook_path,
                run_id: run.run_id,
            });
        }
        tracing::warn!(target: "keycycle", "resuming run {} although its runbook changed (--force)", run.run_id);
    }
    if run.state.is_finished() {
        // A run that stopped for an operator, or failed, is running again.
        state.finish_run(&run.run_id, RunState::Running, None)?;
    }
    let _ = state.append_event(
        &run.run_id,
        &RunEvent {
            at: now_ms(),
            kind: "resumed".into(),
            message: format!(
                "resumed by {}@{}{}{}",
                who::user(),
                who::host(),
                if resume.force {
                    ", forced past a changed runbook"
                } else {
                    ""
                },
                if resume.retry_in_flight {
                    ", retrying the call in flight"
                } else {
                    ""
                }
            ),
        },
    );
    Ok(())
}

/// Records how the run ended and releases its locks, except when the run
/// must be resumed: a run that stopped for an answer or for an operator
/// keeps its locks, because a double rotation is worse than a wait.
pub fn record_end(state: &dyn StateStore, run_id: &str, outcome: &Result<Value, RunbookError>) {
    let (run_state, detail, release) = match outcome {
        Ok(_) => (Some(RunState::Succeeded), None, true),
        Err(e) if e.kind == ErrorKind::Interrupted => {
            (Some(RunState::NeedsAttention), Some(e.to_string()), false)
        }
        // Still resumable: the answer can be given to `keycycle resume`.
        Err(e) if e.kind == ErrorKind::MissingInput => (None, Some(e.to_string()), false),
        // Waits for people, holding its locks; resumable once decided.
        Err(e) if e.kind == ErrorKind::AwaitingApproval => (
            Some(RunState::WaitingForApproval),
            Some(e.to_string()),
            false,
        ),
        Err(e) if e.kind == ErrorKind::Rejected => {
            (Some(RunState::Rejected), Some(e.to_string()), true)
        }
        Err(e) => (Some(RunState::Failed), Some(e.to_string()), true),
    };
    let result = (|| -> Result<(), StateError> {
        crate::debug::abort_after(|| "end".to_owned());
        match (run_state, release) {
            // One write: a crash can leave neither a finished run holding
            // its locks (nothing would ever release them) nor a running
            // one without them.
            (Some(s), true) => {
                state.end_run(run_id, s, detail.as_deref())?;
            }
            (Some(s), false) => state.finish_run(run_id, s, detail.as_deref())?,
            (None, _) => {
                if let Some(d) = &detail {
                    state.append_event(
                        run_id,
                        &RunEvent {
                            at: now_ms(),
                            kind: "stopped".into(),
                            message: d.clone(),
                        },
                    )?;
                }
            }
        }
        Ok(())
    })();
    if let Err(e) = result {
        tracing::error!(target: "keycycle", "could not record the end of run {run_id}: {e}");
    }
}
