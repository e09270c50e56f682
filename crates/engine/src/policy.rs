//! The run's policy, enforced: the outermost layer of the runbook's
//! effects. It learns where every secret the run holds came from (the
//! store, a plugin's answer, a prompt, `random_secret`), and refuses a
//! plugin call, deferred action or approval poll that would send a secret
//! where the policy does not let it go, or a destination the operator did
//! not allow. It sits above the journal, so a resumed run meets every rule
//! again as it replays, under the config of the day it resumes.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use keycycle_contract::{PluginDescription, Value};
use keycycle_policy::{Label, RunPolicy};
use keycycle_runbook::{Answer, ApprovalRequest, EffectError, Effects, LogLevel, Prompt};
use keycycle_secret::SecretValue;
use rand::RngCore;
use sha2::{Digest, Sha256};

pub struct PolicyEffects {
    pub inner: Arc<dyn Effects>,
    pub policy: RunPolicy,
    /// Where each secret came from, by a salted digest of its value: the
    /// value itself is not kept twice, and the salt lives only in this
    /// process.
    labels: Mutex<HashMap<[u8; 32], BTreeSet<Label>>>,
    salt: [u8; 32],
}

impl PolicyEffects {
    pub fn new(inner: Arc<dyn Effects>, policy: RunPolicy) -> PolicyEffects {
        let mut salt = [0u8; 32];
        rand::rng().fill_bytes(&mut salt);
        PolicyEffects {
            inner,
            policy,
            labels: Mutex::new(HashMap::new()),
            salt,
        }
    }

    fn digest(&self, secret: &SecretValue) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.salt);
        h.update(secret.expose().as_bytes());
        h.finalize().into()
    }

    fn learn(&self, secret: &SecretValue, label: Label) {
        let key = self.digest(secret);
        self.labels
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(key)
            .or_default()
            .insert(label);
    }

    /// Labels every secret in a plugin's answer that the run did not hold
    /// already as minted by that plugin.
    fn learn_minted(&self, value: &Value, plugin: &str) {
        for_each_secret(value, &mut |s| {
            let key = self.digest(s);
            let mut labels = self.labels.lock().unwrap_or_else(|p| p.into_inner());
            labels
                .entry(key)
                .or_insert_with(|| [Label::Minted(plugin.to_owned())].into());
        });
    }

    /// Refuses `input` when a secret in it may not go to `plugin`.
    fn check_send(&self, plugin: &str, operation: &str, input: &Value) -> Result<(), EffectError> {
        self.policy
            .may_call(plugin)
            .map_err(|d| EffectError::Denied(d.0))?;
        let mut result = Ok(());
        for_each_secret(input, &mut |s| {
            if result.is_err() {
                return;
            }
            let labels: Vec<Label> = self
                .labels
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&self.digest(s))
                .map(|l| l.iter().cloned().collect())
                // A secret nobody handed the run (built from parts) is the
                // run's own, like an answer.
                .unwrap_or_else(|| vec![Label::Input("(built by the runbook)".to_owned())]);
            if let Err(denied) = self.policy.may_send(&labels, plugin) {
                tracing::warn!(target: "keycycle", "denied {plugin}.{operation}: {denied}");
                result = Err(EffectError::Denied(format!(
                    "{plugin}.{operation}: {denied}"
                )));
            }
        });
        result
    }
}

fn for_each_secret(value: &Value, f: &mut dyn FnMut(&SecretValue)) {
    match value {
        Value::Secret(s) => f(s),
        Value::Array(items) => items.iter().for_each(|v| for_each_secret(v, f)),
        Value::Map(map) => map.values().for_each(|v| for_each_secret(v, f)),
        _ => {}
    }
}

impl Effects for PolicyEffects {
    fn plugin_names(&self) -> Vec<String> {
        self.inner.plugin_names()
    }

    fn describe(&self, plugin: &str) -> Result<Arc<PluginDescription>, EffectError> {
        self.inner.describe(plugin)
    }

    fn invoke(&self, plugin: &str, operation: &str, input: Value) -> Result<Value, EffectError> {
        self.check_send(plugin, operation, &input)?;
        let output = self.inner.invoke(plugin, operation, input)?;
        self.learn_minted(&output, plugin);
        Ok(output)
    }

    fn secret(&self, name: &str) -> Result<SecretValue, EffectError> {
        self.policy
            .may_use_secret(name)
            .map_err(|d| EffectError::Denied(d.0))?;
        let value = self.inner.secret(name)?;
        self.learn(&value, Label::Stored(name.to_owned()));
        Ok(value)
    }

    fn store_secret(&self, name: &str, value: &SecretValue) -> Result<(), EffectError> {
        self.policy
            .may_use_secret(name)
            .map_err(|d| EffectError::Denied(d.0))?;
        self.inner.store_secret(name, value)
    }

    fn prompt(&self, prompt: &Prompt) -> Result<Answer, EffectError> {
        let answer = self.inner.prompt(prompt)?;
        if let Answer::Secret(s) = &answer {
            self.learn(s, Label::Input(prompt.name.clone()));
        }
        Ok(answer)
    }

    fn now(&self) -> Result<i64, EffectError> {
        self.inner.now()
    }

    fn random_secret(&self, bytes: usize) -> Result<SecretValue, EffectError> {
        let value = self.inner.random_secret(bytes)?;
        self.learn(&value, Label::Random);
        Ok(value)
    }

    fn log(&self, level: LogLevel, message: &str) {
        self.inner.log(level, message)
    }

    fn is_dry_run(&self) -> bool {
        self.inner.is_dry_run()
    }

    fn destination(&self, kind: &str, value: &str) -> Result<(), EffectError> {
        self.policy
            .destination(kind, value)
            .map_err(|d| EffectError::Denied(keycycle_host::one_line(&d.0)))
    }

    fn lock(&self, credential: &str) -> Result<(), EffectError> {
        self.inner.lock(credential)
    }

    fn approval(&self, request: &ApprovalRequest) -> Result<Value, EffectError> {
        if let Some(poll) = &request.poll {
            self.check_send(&poll.plugin, &poll.operation, &poll.input)?;
        }
        self.inner.approval(request)
    }

    fn defer(
        &self,
        plugin: &str,
        operation: &str,
        input: Value,
        delay_secs: i64,
        description: &str,
    ) -> Result<String, EffectError> {
        self.check_send(plugin, operation, &input)?;
        self.inner
            .defer(plugin, operation, input, delay_secs, description)
    }
}
