//! The runbook engine's effects, carried out by the host: plugin calls in
//! the sandbox, granted secrets from the store, prompts, time and
//! randomness. This is where the dry run holds back mutating operations.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use keycycle_contract::{CallContext, PluginDescription, Value};
use keycycle_host::{InvokeError, Plugin};
use keycycle_runbook::{Answer, EffectError, Effects, LogLevel, Prompt};
use keycycle_secret::SecretValue;
use rand::RngCore;
use serde::Serialize;
use tokio::runtime::Handle;

/// The operator's secrets store, as a run reads and writes it. The CLI's
/// store (a local encrypted file) implements it; so can a shared one.
pub trait SecretStoreAccess: Send + Sync {
    /// The value stored under `name`, if any.
    fn get(&self, name: &str) -> Result<Option<SecretValue>, String>;
    /// Stores `value` under `name`, durably, before it returns.
    fn set(&self, name: &str, value: &SecretValue) -> Result<(), String>;
}

/// Where answers to a runbook's prompts come from: `--input`, a terminal,
/// or nowhere (a [`EffectError::MissingInput`]).
pub trait Answers: Send + Sync {
    fn answer(&self, prompt: &Prompt) -> Result<Answer, EffectError>;
}

/// Retries of a non-mutating call that the plugin says may be retried.
const READ_RETRIES: u32 = 3;

/// A plugin as the run sees it: loaded, or the reason it is not.
#[derive(Clone)]
pub enum LoadedPlugin {
    Ready {
        plugin: Arc<Plugin>,
        description: Arc<PluginDescription>,
        /// Shared by every run of the process that uses this instance.
        gate: Arc<crate::ratelimit::RateGate>,
    },
    Refused {
        message: String,
        denied: bool,
    },
}

/// One plugin call, for the run report.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub seq: u64,
    pub plugin: String,
    pub operation: String,
    pub mutates: bool,
    /// True when a dry run held the call back.
    pub skipped: bool,
    /// The input with secrets shown as `***`.
    pub input: serde_json::Value,
    pub duration_ms: u64,
    /// `ok`, `error`, or `skipped` (held back by a dry run).
    pub outcome: &'static str,
    /// For an error: its kind (`provider`, `invalid-input`, `retryable`,
    /// `denied`, `failed`).
    pub error_kind: Option<String>,
}

pub struct HostEffects {
    pub rt: Handle,
    /// Loaded as the run names them.
    pub plugins: crate::PluginSet,
    pub store: Arc<dyn SecretStoreAccess>,
    /// Who may use what in this run; the store names it may read and
    /// write among them.
    pub policy: keycycle_policy::RunPolicy,
    /// Who may approve this runbook's gates, from the config.
    pub approval_rules: crate::approvals::Rules,
    pub inputs: Arc<dyn Answers>,
    pub dry_run: bool,
    pub run_id: String,
    pub seq: AtomicU64,
    pub steps: Mutex<Vec<Step>>,
}

impl HostEffects {
    fn record(&self, step: Step) {
        self.steps
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(step);
    }

    fn check_runbook_grant(&self, name: &str) -> Result<(), EffectError> {
        self.policy
            .may_use_secret(name)
            .map_err(|d| EffectError::Denied(d.0))
    }

    /// Runs one plugin call as step `seq` of the run; the idempotency key
    /// the plugin sees is derived from the run id and `seq`, so a resumed
    /// run sends the same key for the same step.
    pub fn call(
        &self,
        seq: u64,
        plugin_name: &str,
        operation: &str,
        input: Value,
    ) -> Result<Value, EffectError> {
        let (plugin, gate) = match self.plugins.get(plugin_name) {
            Some(LoadedPlugin::Ready { plugin, gate, .. }) => (plugin, gate),
            _ => {
                return Err(self.describe(plugin_name).err().unwrap_or_else(|| {
                    EffectError::Failed(format!("plugin `{plugin_name}` is not loaded"))
                }));
            }
        };
        let spec = plugin.description().operation(operation).cloned();
        let mutates = spec.as_ref().is_some_and(|s| s.mutates);
        let shown_input = input.to_redacted_json();
        let started = Instant::now();

        if self.dry_run && mutates {
            tracing::info!(target: "keycycle", "dry run: would call {plugin_name}.{operation} with {shown_input}");
            let secret_outputs = spec.map(|s| s.secret_outputs).unwrap_or_default();
            self.record(Step {
                seq,
                plugin: plugin_name.to_owned(),
                operation: operation.to_owned(),
                mutates,
                skipped: true,
                input: shown_input,
                duration_ms: 0,
                outcome: "skipped",
                error_kind: None,
            });
            return Ok(self.placeholder(plugin_name, operation, &secret_outputs));
        }

        let ctx = CallContext {
            run_id: self.run_id.clone(),
            idempotency_key: format!("{}-{seq}", self.run_id),
        };
        // A limit another run of this process met holds this call too;
        // a read is asked again after the wait, a change is not.
        let retries = if mutates { 0 } else { READ_RETRIES };
        let result = self.rt.block_on(crate::ratelimit::invoke_through(
            &gate,
            &plugin,
            plugin_name,
            operation,
            &input,
            &ctx,
            retries,
        ));
        let duration_ms = started.elapsed().as_millis() as u64;
        let error_kind = match &result {
            Ok(_) => None,
            Err(InvokeError::Plugin { error, .. }) => Some(error.kind().to_owned()),
            Err(InvokeError::Denied { .. }) => Some("denied".to_owned()),
            Err(_) => Some("failed".to_owned()),
        };
        let outcome = match &error_kind {
            None => "ok".to_owned(),
            Some(kind) => format!("error: {kind}"),
        };
        if mutates {
            tracing::info!(target: "keycycle", "{plugin_name}.{operation}: {outcome} ({duration_ms} ms)");
        } else {
            tracing::debug!(target: "keycycle", "{plugin_name}.{operation}: {outcome} ({duration_ms} ms)");
        }
        self.record(Step {
            seq,
            plugin: plugin_name.to_owned(),
            operation: operation.to_owned(),
            mutates,
            skipped: false,
            input: shown_input,
            duration_ms,
            outcome: if error_kind.is_some() { "error" } else { "ok" },
            error_kind,
        });
        result.map_err(to_effect_error)
    }

    fn placeholder(&self, plugin: &str, operation: &str, secret_outputs: &[String]) -> Value {
        let mut out = BTreeMap::new();
        out.insert("dry_run".to_owned(), Value::Bool(true));
        for field in secret_outputs {
            let value = SecretValue::new(format!(
                "dry-run-{plugin}-{operation}-{field}-{}",
                self.run_id
            ));
            out.insert(field.clone(), Value::Secret(value));
        }
        Value::Map(out)
    }
}

fn to_effect_error(e: InvokeError) -> EffectError {
    match e {
        InvokeError::Plugin {
            plugin,
            operation,
            error,
        } => EffectError::Plugin {
            plugin,
            operation,
            error,
        },
        denied @ InvokeError::Denied { .. } => EffectError::Denied(denied.to_string()),
        other => EffectError::Failed(other.to_string()),
    }
}

impl Effects for HostEffects {
    fn plugin_names(&self) -> Vec<String> {
        self.plugins.names()
    }

    fn describe(&self, plugin: &str) -> Result<Arc<PluginDescription>, EffectError> {
        match self.plugins.get(plugin) {
            Some(LoadedPlugin::Ready { description, .. }) => Ok(description),
            Some(LoadedPlugin::Refused {
                message,
                denied: true,
            }) => Err(EffectError::Denied(message)),
            Some(LoadedPlugin::Refused { message, .. }) => Err(EffectError::Failed(message)),
            None => Err(EffectError::Failed(format!(
                "no plugin `{plugin}` is configured (configured: {})",
                self.plugins.names().join(", ")
            ))),
        }
    }

    fn invoke(
        &self,
        plugin_name: &str,
        operation: &str,
        input: Value,
    ) -> Result<Value, EffectError> {
        let seq = self.seq.fetch_add(1, Ordering::SeqCst) + 1;
        self.call(seq, plugin_name, operation, input)
    }

    fn secret(&self, name: &str) -> Result<SecretValue, EffectError> {
        self.check_runbook_grant(name)?;
        match self.store.get(name) {
            Ok(Some(v)) => Ok(v),
            Ok(None) => Err(EffectError::Failed(format!(
                "secret `{name}` is not in the store; add it with `keycycle secrets set {name}`"
            ))),
            Err(e) => Err(EffectError::Failed(e)),
        }
    }

    fn store_secret(&self, name: &str, value: &SecretValue) -> Result<(), EffectError> {
        self.check_runbook_grant(name)?;
        if value.len() < keycycle_secret::MIN_MASKED_LEN {
            return Err(EffectError::Failed(format!(
                "cannot store secret `{name}`: its value is {} bytes, and a secret must be at \
                 least {} so that keycycle can mask it in output",
                value.len(),
                keycycle_secret::MIN_MASKED_LEN
            )));
        }
        if self.dry_run {
            tracing::info!(target: "keycycle", "dry run: would store a new value for secret `{name}`");
            return Ok(());
        }
        self.store
            .set(name, value)
            .map_err(|e| EffectError::Failed(format!("cannot store secret `{name}`: {e}")))?;
        tracing::info!(target: "keycycle", "stored a new value for secret `{name}`");
        Ok(())
    }

    fn prompt(&self, prompt: &Prompt) -> Result<Answer, EffectError> {
        self.inputs.answer(prompt)
    }

    fn now(&self) -> Result<i64, EffectError> {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .map_err(|e| EffectError::Failed(format!("system clock is before 1970: {e}")))
    }

    fn random_secret(&self, bytes: usize) -> Result<SecretValue, EffectError> {
        if bytes == 0 || bytes > 1024 {
            return Err(EffectError::Failed(format!(
                "random_secret({bytes}): size must be 1 to 1024 bytes"
            )));
        }
        let mut buf = zeroize::Zeroizing::new(vec![0u8; bytes]);
        rand::rng().fill_bytes(&mut buf);
        Ok(SecretValue::new(hex::encode(&*buf)))
    }

    fn is_dry_run(&self) -> bool {
        self.dry_run
    }

    // Durable runs go through the journal, which takes real locks and
    // schedules real actions; only a dry run reaches these two.
    fn lock(&self, credential: &str) -> Result<(), EffectError> {
        tracing::info!(target: "keycycle", "dry run: would lock {credential}");
        Ok(())
    }

    fn approval(&self, request: &keycycle_runbook::ApprovalRequest) -> Result<Value, EffectError> {
        tracing::info!(target: "keycycle", "dry run: would ask for approval `{}`: {} ({}){}; going on as if approved",
            request.id, request.title, crate::approvals::where_text(&request.environments),
            request.poll.as_ref().map(|p| format!(", asking {}.{} for the decision", p.plugin, p.operation)).unwrap_or_default());
        Ok(Value::Map(
            [
                ("approved".to_owned(), Value::Bool(true)),
                ("by".to_owned(), Value::String("(dry run)".to_owned())),
                ("dry_run".to_owned(), Value::Bool(true)),
            ]
            .into_iter()
            .collect(),
        ))
    }

    fn defer(
        &self,
        plugin: &str,
        operation: &str,
        input: Value,
        delay_secs: i64,
        description: &str,
    ) -> Result<String, EffectError> {
        tracing::info!(target: "keycycle", "dry run: would schedule {description} ({plugin}.{operation} with {}) in {delay_secs} s", input.to_redacted_json());
        Ok("dry-run".to_owned())
    }

    fn log(&self, level: LogLevel, message: &str) {
        // A runbook's message often quotes what a provider answered.
        let message = keycycle_host::one_line(message);
        match level {
            LogLevel::Info => tracing::info!(target: "runbook", "{message}"),
            LogLevel::Warn => tracing::warn!(target: "runbook", "{message}"),
        }
    }
}
