//! The runbook engine's only window on the world. Everything a runbook does
//! that is not pure computation goes through [`Effects`], which is what keeps
//! this crate ignorant of wasmtime, of the secrets store and of the terminal,
//! and what lets a journal record and replay every effect.

use std::sync::Arc;

use keycycle_contract::{PluginDescription, PluginError, Value};
use keycycle_secret::SecretValue;

/// A question a runbook asks its operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prompt {
    /// The name an answer is given under with `--input NAME=SRC`.
    pub name: String,
    /// What the operator is shown.
    pub text: String,
    pub kind: PromptKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PromptKind {
    /// Free text, echoed.
    Text,
    /// A secret, not echoed; the answer comes back as a secret handle.
    Secret,
    /// Yes or no.
    Confirm,
}

impl PromptKind {
    /// The answer `text` gives to a prompt of this kind, or why it is not
    /// one: a secret must not be empty or shorter than
    /// [`keycycle_secret::MIN_MASKED_LEN`], a confirmation is `y`/`yes`/`true`
    /// or `n`/`no`/`false` (any case, surrounding spaces ignored). Pure: the
    /// CLI checks `--input` values with it before a run starts.
    pub fn parse_answer(self, text: &str) -> Result<Answer, String> {
        match self {
            PromptKind::Text => Ok(Answer::Text(text.to_owned())),
            PromptKind::Secret if text.is_empty() => Err("the secret answer is empty".into()),
            // Shorter values are not masked in output (masking every "ab"
            // would destroy it), so they are not accepted as secrets.
            PromptKind::Secret if text.len() < keycycle_secret::MIN_MASKED_LEN => Err(format!(
                "the secret answer is {} bytes; a secret must be at least {} so that keycycle \
                 can mask it in output",
                text.len(),
                keycycle_secret::MIN_MASKED_LEN
            )),
            PromptKind::Secret => Ok(Answer::Secret(SecretValue::new(text))),
            PromptKind::Confirm => match text.trim().to_ascii_lowercase().as_str() {
                "y" | "yes" | "true" => Ok(Answer::Confirm(true)),
                "n" | "no" | "false" => Ok(Answer::Confirm(false)),
                other => Err(format!(
                    "answer `{other}` is not yes or no; answer yes, no, y, n, true or false"
                )),
            },
        }
    }

    /// Whether `text` is a valid answer for this kind; the error says why
    /// not. [`PromptKind::parse_answer`] without keeping the answer.
    pub fn check_answer(self, text: &str) -> Result<(), String> {
        self.parse_answer(text).map(drop)
    }
}

/// A change request an approval gate makes: what will change, and where.
#[derive(Debug, Clone, PartialEq)]
pub struct ApprovalRequest {
    /// The gate's id in the runbook (letters, digits, `-`, `_`, `.`).
    pub id: String,
    pub title: String,
    pub summary: String,
    pub environments: Vec<String>,
    /// Who may decide, as the runbook names them (users or `group:NAME`).
    pub approvers: Vec<String>,
    /// An external system that decides too, asked while the request waits.
    pub poll: Option<ApprovalPoll>,
}

/// How an approval gate asks an external system (a change-management API)
/// for the decision: `plugin.operation(input)` answers a map whose
/// `state` is `approved`, `rejected`, or anything else for "not yet".
#[derive(Debug, Clone, PartialEq)]
pub struct ApprovalPoll {
    pub plugin: String,
    pub operation: String,
    pub input: Value,
    /// Seconds between two questions while the run waits.
    pub every_secs: u64,
    /// How long one attempt of the run waits before it stops at the gate
    /// (exit 10); a later `keycycle resume` asks again. 0: ask once.
    pub wait_secs: u64,
    /// Counted from the request: past it, the request is rejected.
    pub deadline_secs: u64,
}

/// An operator's answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    Text(String),
    Secret(SecretValue),
    Confirm(bool),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    Info,
    Warn,
}

/// Why an effect failed. The engine turns these into runbook errors that keep
/// the kind, so the CLI can tell a denied capability from a provider error.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EffectError {
    /// The plugin ran and reported a typed error.
    #[error("{plugin}.{operation}: {error}")]
    Plugin {
        plugin: String,
        operation: String,
        error: PluginError,
    },
    /// The sandbox refused a capability (host, secret, import).
    #[error("{0}")]
    Denied(String),
    /// An answer the run needs was not given.
    #[error("missing input `{name}`: {hint}")]
    MissingInput { name: String, hint: String },
    /// Anything else: a plugin trapped, timed out, hit a limit, or could not
    /// be loaded; a secret is not in the store.
    #[error("{0}")]
    Failed(String),
    /// Another run holds the lock on a credential this run rotates.
    #[error("{0}")]
    Locked(String),
    /// A call was interrupted when an earlier attempt of this run died, and
    /// its outcome cannot be found out: the operator must look.
    #[error("{0}")]
    Interrupted(String),
    /// An approval gate's change request is not decided yet.
    #[error("{0}")]
    AwaitingApproval(String),
    /// An approval gate's change request was rejected.
    #[error("{0}")]
    Rejected(String),
}

impl EffectError {
    pub fn kind(&self) -> &'static str {
        match self {
            EffectError::Plugin { error, .. } => error.kind(),
            EffectError::Denied(_) => "denied",
            EffectError::MissingInput { .. } => "missing-input",
            EffectError::Failed(_) => "failed",
            EffectError::Locked(_) => "locked",
            EffectError::Interrupted(_) => "interrupted",
            EffectError::AwaitingApproval(_) => "awaiting-approval",
            EffectError::Rejected(_) => "rejected",
        }
    }
}

/// The capabilities the host gives a runbook. Implementations must be safe
/// to call from the engine's thread; they may block.
pub trait Effects: Send + Sync {
    /// Names of the plugins the configuration knows. Their operations are
    /// registered as methods before the runbook is compiled.
    fn plugin_names(&self) -> Vec<String>;

    /// What a configured plugin offers. Errors when it cannot be loaded.
    fn describe(&self, plugin: &str) -> Result<Arc<PluginDescription>, EffectError>;

    /// Runs one plugin operation. `input` may hold secret handles; the
    /// implementation hands their values to the plugin and nowhere else.
    fn invoke(&self, plugin: &str, operation: &str, input: Value) -> Result<Value, EffectError>;

    /// A secret from the store, by the name the runbook was granted.
    fn secret(&self, name: &str) -> Result<SecretValue, EffectError>;

    /// Writes a secret to the store, under a name the runbook was granted.
    fn store_secret(&self, name: &str, value: &SecretValue) -> Result<(), EffectError>;

    /// Asks the operator, or reads the answer given with `--input`.
    fn prompt(&self, prompt: &Prompt) -> Result<Answer, EffectError>;

    /// Seconds since the Unix epoch.
    fn now(&self) -> Result<i64, EffectError>;

    /// `bytes` random bytes, hex-encoded, as a secret.
    fn random_secret(&self, bytes: usize) -> Result<SecretValue, EffectError>;

    /// A line from the runbook (`info`, `warn`, `print`).
    fn log(&self, level: LogLevel, message: &str);

    /// True when mutating operations are shown rather than sent. Runbooks
    /// read it with `dry_run()` to skip checks that need a real result,
    /// such as verifying a token a dry run never minted.
    fn is_dry_run(&self) -> bool {
        false
    }

    /// Whether the runbook may hand a credential to `value`, a destination
    /// of `kind` (`gitlab_variable`, `store_as`, ...) that usually came
    /// from the run's parameters. The host's policy pins them; a host
    /// without one allows every destination.
    fn destination(&self, kind: &str, value: &str) -> Result<(), EffectError> {
        let _ = (kind, value);
        Ok(())
    }

    /// Takes the run's lock on `credential` (such as
    /// `gitlab:project/42/token/7`), so no other run rotates it at the same
    /// time. Held until the run ends or an operator releases it.
    fn lock(&self, credential: &str) -> Result<(), EffectError> {
        Err(EffectError::Failed(format!(
            "cannot lock `{credential}`: this host keeps no run state"
        )))
    }

    /// Records the change request of an approval gate, or finds it, and
    /// returns the decision: a map with `approved: true`, `by`, `at` and
    /// `comment` once approved; [`EffectError::AwaitingApproval`] while
    /// undecided; [`EffectError::Rejected`] once rejected. A dry run goes on
    /// as if approved and says so.
    fn approval(&self, request: &ApprovalRequest) -> Result<Value, EffectError> {
        Err(EffectError::Failed(format!(
            "cannot ask for approval `{}`: this host keeps no run state",
            request.id
        )))
    }

    /// Schedules `plugin.operation(input)` to run `delay_secs` from now,
    /// through `keycycle cleanup`. Returns the action's id.
    fn defer(
        &self,
        plugin: &str,
        operation: &str,
        input: Value,
        delay_secs: i64,
        description: &str,
    ) -> Result<String, EffectError> {
        let _ = (input, delay_secs, description);
        Err(EffectError::Failed(format!(
            "cannot schedule {plugin}.{operation}: this host keeps no run state"
        )))
    }
}
