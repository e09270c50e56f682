//! The host-side vocabulary of the plugin contract (`wit/plugin.wit`): what a
//! plugin declares, the values that flow in and out of operations, and the
//! typed errors an operation can end with.
//!
//! Both the sandbox (`keycycle-host`) and the runbook engine
//! (`keycycle-runbook`) speak these types, which is what lets the two stay
//! ignorant of each other.

use std::collections::BTreeMap;
use std::fmt;

use keycycle_secret::{MASK, SecretValue};
use serde::{Deserialize, Serialize};

/// What a plugin says about itself (`describe` in the WIT world).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginDescription {
    pub name: String,
    pub version: String,
    pub operations: Vec<OperationSpec>,
    /// Origins the plugin needs, `scheme://host[:port]` or `{config.KEY}`.
    pub hosts: Vec<String>,
    /// Secret names the plugin reads.
    pub secrets: Vec<String>,
    /// Config keys the plugin reads.
    pub config: Vec<String>,
}

impl PluginDescription {
    pub fn operation(&self, name: &str) -> Option<&OperationSpec> {
        self.operations.iter().find(|op| op.name == name)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperationSpec {
    pub name: String,
    pub doc: String,
    pub inputs: Vec<FieldSpec>,
    pub secret_outputs: Vec<String>,
    pub mutates: bool,
    pub recover_with: Option<String>,
    /// Sending the same call twice has the effect of sending it once.
    #[serde(default)]
    pub idempotent: bool,
    /// Advice for the operator when a call was interrupted mid-flight. The
    /// word `RUN_ID` in it is replaced by the run's id when it is shown.
    #[serde(default)]
    pub if_interrupted: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldSpec {
    pub name: String,
    pub doc: String,
    pub required: bool,
}

/// Facts the host passes along with every call.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallContext {
    pub run_id: String,
    pub idempotency_key: String,
}

/// How an operation can fail, as the plugin reports it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PluginError {
    #[error("provider answered {status}: {message}")]
    Provider { status: u16, message: String },
    #[error("denied: {0}")]
    Denied(String),
    #[error("invalid input: {0}")]
    InvalidInput(String),
    #[error("retryable after {delay_ms} ms: {message}")]
    Retryable { delay_ms: u64, message: String },
}

impl PluginError {
    /// A short stable word for the kind of error, for runbooks and JSON.
    pub fn kind(&self) -> &'static str {
        match self {
            PluginError::Provider { .. } => "provider",
            PluginError::Denied(_) => "denied",
            PluginError::InvalidInput(_) => "invalid-input",
            PluginError::Retryable { .. } => "retryable",
        }
    }
}

/// A value that flows between runbooks and plugins: JSON, plus secrets.
#[derive(Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    String(String),
    Array(Vec<Value>),
    Map(BTreeMap<String, Value>),
    Secret(SecretValue),
}

/// A plugin produced text that is not the JSON object the contract requires.
#[derive(Debug, thiserror::Error)]
#[error("plugin output is not a JSON object: {0}")]
pub struct OutputError(String);

impl Value {
    pub fn map() -> Value {
        Value::Map(BTreeMap::new())
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Map(m) => m.get(key),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// The JSON a plugin receives. This is the one place secret values are
    /// written out in clear, and its only caller is the sandbox boundary.
    pub fn to_plugin_json(&self) -> String {
        self.to_json(true).to_string()
    }

    /// JSON for people and files: secrets appear as `***`.
    pub fn to_redacted_json(&self) -> serde_json::Value {
        self.to_json(false)
    }

    fn to_json(&self, expose: bool) -> serde_json::Value {
        use serde_json::Value as J;
        match self {
            Value::Null => J::Null,
            Value::Bool(b) => J::Bool(*b),
            Value::Int(i) => J::from(*i),
            Value::Float(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
            Value::String(s) => J::String(s.clone()),
            Value::Array(items) => J::Array(items.iter().map(|v| v.to_json(expose)).collect()),
            Value::Map(m) => J::Object(
                m.iter()
                    .map(|(k, v)| (k.clone(), v.to_json(expose)))
                    .collect(),
            ),
            Value::Secret(s) if expose => J::String(s.expose().to_owned()),
            Value::Secret(_) => J::String(MASK.to_owned()),
        }
    }

    /// Parses a plugin's output. Top-level fields named in `secret_fields`
    /// become [`Value::Secret`], which also registers them for redaction.
    pub fn from_plugin_json(text: &str, secret_fields: &[String]) -> Result<Value, OutputError> {
        let json: serde_json::Value =
            serde_json::from_str(text).map_err(|e| OutputError(e.to_string()))?;
        let serde_json::Value::Object(obj) = json else {
            return Err(OutputError("expected an object".into()));
        };
        let mut out = BTreeMap::new();
        for (key, value) in obj {
            let value = if secret_fields.iter().any(|f| f == &key) {
                match value {
                    serde_json::Value::String(s) => Value::Secret(SecretValue::new(s)),
                    serde_json::Value::Null => Value::Null,
                    other => Value::Secret(SecretValue::new(other.to_string())),
                }
            } else {
                Value::from_json(value)
            };
            out.insert(key, value);
        }
        Ok(Value::Map(out))
    }

    pub fn from_json(json: serde_json::Value) -> Value {
        use serde_json::Value as J;
        match json {
            J::Null => Value::Null,
            J::Bool(b) => Value::Bool(b),
            J::Number(n) => match n.as_i64() {
                Some(i) => Value::Int(i),
                None => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
            },
            J::String(s) => Value::String(s),
            J::Array(items) => Value::Array(items.into_iter().map(Value::from_json).collect()),
            J::Object(m) => Value::Map(
                m.into_iter()
                    .map(|(k, v)| (k, Value::from_json(v)))
                    .collect(),
            ),
        }
    }
}

impl fmt::Debug for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.to_redacted_json())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_fields_become_handles_and_never_print() {
        let v = Value::from_plugin_json(
            r#"{"id": 7, "token": "glpat-contract-canary-xyz"}"#,
            &["token".into()],
        )
        .unwrap();
        assert!(matches!(v.get("token"), Some(Value::Secret(_))));
        let shown = format!("{v:?}");
        assert!(!shown.contains("canary"), "{shown}");
        assert!(v.to_plugin_json().contains("glpat-contract-canary-xyz"));
    }

    #[test]
    fn non_object_output_is_rejected() {
        assert!(Value::from_plugin_json("[1,2]", &[]).is_err());
        assert!(Value::from_plugin_json("nope", &[]).is_err());
    }
}
