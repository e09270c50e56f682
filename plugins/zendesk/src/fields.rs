//! Reading ids and values out of operation inputs, with errors that name
//! the field and never quote a value (it may be a secret).

use keycycle_plugin_sdk::{Error, Input, Value};

/// A numeric resource id (OAuth clients and tokens, app installations),
/// given as a number or a string of digits.
pub(crate) fn id(input: &Value, name: &str) -> Result<u64, Error> {
    match input.field(name) {
        Some(Value::String(s)) => s
            .trim()
            .parse::<u64>()
            .map_err(|_| Error::invalid_input(format!("input `{name}` must be a numeric id"))),
        _ => input.u64_field(name),
    }
}

/// A string input that must not be blank: an empty credential would clear
/// what a rotation means to replace.
pub(crate) fn non_blank<'a>(input: &'a Value, name: &str) -> Result<&'a str, Error> {
    let value = input.str_field(name)?;
    if value.trim().is_empty() {
        return Err(Error::invalid_input(format!("input `{name}` is empty")));
    }
    Ok(value)
}

/// A webhook id (a ULID), checked to be a plain path segment.
pub(crate) fn webhook_id<'a>(input: &'a Value, name: &str) -> Result<&'a str, Error> {
    let id = non_blank(input, name)?.trim();
    if !id.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(Error::invalid_input(format!(
            "input `{name}` must be a webhook id (letters and digits)"
        )));
    }
    Ok(id)
}

/// The object under `key` of a Zendesk answer, or the answer itself when
/// it has no such key. The reference does not give the wrapper of every
/// answer (client create and generate_secret, tokens/current.json); most
/// Zendesk answers wrap in the singular resource name, some do not.
pub(crate) fn unwrapped<'a>(answer: &'a Value, key: &str) -> &'a Value {
    match answer.get(key) {
        Some(inner) if inner.is_object() => inner,
        _ => answer,
    }
}

/// `value` keeping only the fields named in `keep`.
pub(crate) fn pick(value: &Value, keep: &[&str]) -> Value {
    let mut out = serde_json::Map::new();
    for key in keep {
        if let Some(v) = value.get(*key) {
            out.insert((*key).to_owned(), v.clone());
        }
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use keycycle_plugin_sdk::json;

    #[test]
    fn ids_and_values() {
        let v = json!({"a": 7, "b": "12", "c": "x7", "w": "01HZX", "bad": "../x", "e": " "});
        assert_eq!(id(&v, "a").unwrap(), 7);
        assert_eq!(id(&v, "b").unwrap(), 12);
        assert!(id(&v, "c").is_err());
        assert_eq!(webhook_id(&v, "w").unwrap(), "01HZX");
        assert!(webhook_id(&v, "bad").is_err());
        assert!(non_blank(&v, "e").is_err());
        assert_eq!(pick(&json!({"x": 1, "y": 2}), &["x", "z"]), json!({"x": 1}));
        let wrapped = json!({"client": {"id": 1}});
        assert_eq!(unwrapped(&wrapped, "client"), &json!({"id": 1}));
        let bare = json!({"id": 2, "secret": "s"});
        assert_eq!(unwrapped(&bare, "client"), &bare);
    }
}
