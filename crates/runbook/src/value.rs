//! Conversion between Rhai's `Dynamic` and the contract's [`Value`], and the
//! custom types a runbook holds: secret handles and plugin handles.

use std::collections::BTreeMap;

use keycycle_contract::Value;
use keycycle_secret::{MASK, SecretValue};
use rhai::{Array, Dynamic, ImmutableString, Map, Position};

/// A secret as a runbook holds it: an opaque handle that prints as `***`.
/// The clear value only leaves through [`Value::Secret`] into an effect.
#[derive(Clone)]
pub(crate) struct SecretHandle(pub SecretValue);

/// `plugin("name")`: the operations of a plugin are methods on this.
#[derive(Clone)]
pub(crate) struct PluginHandle {
    pub name: ImmutableString,
}

/// Why the engine stopped a run from the inside. Travels as the value of
/// `ErrorTerminated`, which `try`/`catch` cannot catch.
#[derive(Clone)]
pub(crate) enum Terminate {
    /// `fail(msg)`. The position is kept here because Rhai moves the
    /// position of a terminating error to the outermost call site.
    Fail {
        message: String,
        source: Option<String>,
        pos: Position,
    },
    /// The wall-time deadline passed.
    WallTime,
    /// The heap grew past `max_memory_bytes` while the runbook ran.
    Memory,
    /// An approval gate stopped the run: waiting for a decision, or
    /// rejected. Not catchable, or a `try` around the gate would walk past it.
    Gate {
        kind: crate::ErrorKind,
        message: String,
        source: Option<String>,
        pos: Position,
    },
}

/// Nesting deeper than this cannot be converted; it protects the host's
/// stack, and no plugin input is legitimately this deep.
const MAX_DEPTH: usize = 64;

/// A runbook value as a contract value. Fails, with a message saying what
/// could not be converted, for plugin handles, functions and other
/// engine-only types.
pub(crate) fn to_value(value: &Dynamic) -> Result<Value, String> {
    to_value_at(value, 0)
}

fn to_value_at(value: &Dynamic, depth: usize) -> Result<Value, String> {
    if depth > MAX_DEPTH {
        return Err(format!("value is nested deeper than {MAX_DEPTH} levels"));
    }
    if value.is_unit() {
        return Ok(Value::Null);
    }
    if let Ok(b) = value.as_bool() {
        return Ok(Value::Bool(b));
    }
    if let Ok(i) = value.as_int() {
        return Ok(Value::Int(i));
    }
    if let Ok(f) = value.as_float() {
        return Ok(Value::Float(f));
    }
    if let Ok(c) = value.as_char() {
        return Ok(Value::String(c.to_string()));
    }
    if let Some(s) = value.read_lock::<ImmutableString>() {
        return Ok(Value::String(s.to_string()));
    }
    if let Some(secret) = value.read_lock::<SecretHandle>() {
        return Ok(Value::Secret(secret.0.clone()));
    }
    if let Some(items) = value.read_lock::<Array>() {
        return items
            .iter()
            .map(|item| to_value_at(item, depth + 1))
            .collect::<Result<Vec<_>, _>>()
            .map(Value::Array);
    }
    if let Some(map) = value.read_lock::<Map>() {
        let mut out = BTreeMap::new();
        for (key, item) in map.iter() {
            out.insert(key.to_string(), to_value_at(item, depth + 1)?);
        }
        return Ok(Value::Map(out));
    }
    if value.is::<PluginHandle>() {
        return Err("a plugin handle cannot be passed as a value".into());
    }
    Err(format!(
        "a value of type `{}` cannot be passed to a plugin or returned",
        value.type_name()
    ))
}

/// A contract value as a runbook value; secrets become handles.
pub(crate) fn from_value(value: Value) -> Dynamic {
    match value {
        Value::Null => Dynamic::UNIT,
        Value::Bool(b) => b.into(),
        Value::Int(i) => i.into(),
        Value::Float(f) => f.into(),
        Value::String(s) => s.into(),
        Value::Array(items) => items.into_iter().map(from_value).collect::<Array>().into(),
        Value::Map(map) => map
            .into_iter()
            .map(|(k, v)| (k.into(), from_value(v)))
            .collect::<Map>()
            .into(),
        Value::Secret(s) => Dynamic::from(SecretHandle(s)),
    }
}

/// Text for people: strings as they are, secrets as `***`, containers as
/// JSON with secrets masked.
pub(crate) fn render(value: &Dynamic) -> String {
    if let Some(s) = value.read_lock::<ImmutableString>() {
        return s.to_string();
    }
    if let Some(p) = value.read_lock::<PluginHandle>() {
        return plugin_text(&p);
    }
    match to_value(value) {
        Ok(Value::String(s)) => s,
        Ok(Value::Secret(_)) => MASK.to_owned(),
        Ok(Value::Null) => "()".to_owned(),
        Ok(v) => v.to_redacted_json().to_string(),
        Err(_) => format!("<{}>", value.type_name()),
    }
}

pub(crate) fn plugin_text(p: &PluginHandle) -> String {
    format!("plugin(\"{}\")", p.name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_keeps_shape_and_secrets() {
        let mut map = BTreeMap::new();
        map.insert("id".to_owned(), Value::Int(7));
        map.insert("ok".to_owned(), Value::Bool(true));
        map.insert("ratio".to_owned(), Value::Float(0.5));
        map.insert("none".to_owned(), Value::Null);
        map.insert(
            "list".to_owned(),
            Value::Array(vec![Value::String("a".into())]),
        );
        map.insert(
            "token".to_owned(),
            Value::Secret(SecretValue::new("value-round-trip-canary")),
        );
        let original = Value::Map(map);
        let back = to_value(&from_value(original.clone())).unwrap();
        assert_eq!(back, original);
    }

    #[test]
    fn render_masks_secrets_inside_containers() {
        let v = from_value(Value::Array(vec![Value::Secret(SecretValue::new(
            "render-canary-value",
        ))]));
        let shown = render(&v);
        assert_eq!(shown, r#"["***"]"#);
    }

    #[test]
    fn plugin_handles_do_not_convert() {
        let p = Dynamic::from(PluginHandle { name: "gl".into() });
        assert!(to_value(&p).unwrap_err().contains("plugin handle"));
    }

    #[test]
    fn deep_nesting_is_refused() {
        let mut v = Dynamic::UNIT;
        for _ in 0..(MAX_DEPTH + 2) {
            v = vec![v].into();
        }
        assert!(to_value(&v).unwrap_err().contains("nested deeper"));
    }
}
