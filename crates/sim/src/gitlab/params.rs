//! Request parameters the way GitLab's Grape API takes them: from the query
//! string, a JSON body, a form body or a multipart form, all at once, with
//! Rails-style `scopes[]=a&scopes[]=b` arrays and `filter[environment_scope]=x`
//! hashes.
//!
//! Deliberately has no `Debug`: parameters carry variable values and hook
//! secrets.

use serde_json::{Map, Value};
use time::Date;

use super::api::ApiError;
use crate::clock::parse_date;

#[derive(Default)]
pub(crate) struct Params(Map<String, Value>);

impl Params {
    /// Adds `a=1&b[]=2&c[d]=3` pairs; later pairs win over earlier ones.
    pub(crate) fn merge_form(&mut self, encoded: &[u8]) {
        for (key, value) in url::form_urlencoded::parse(encoded) {
            self.insert_pair(&key, value.into_owned());
        }
    }

    pub(crate) fn insert_pair(&mut self, key: &str, value: String) {
        if let Some(base) = key.strip_suffix("[]") {
            match self.0.get_mut(base) {
                Some(Value::Array(items)) => items.push(Value::String(value)),
                _ => {
                    self.0
                        .insert(base.to_owned(), Value::Array(vec![Value::String(value)]));
                }
            }
            return;
        }
        if let Some((outer, inner)) = split_hash_key(key) {
            let entry = self
                .0
                .entry(outer.to_owned())
                .or_insert_with(|| Value::Object(Map::new()));
            if !entry.is_object() {
                *entry = Value::Object(Map::new());
            }
            if let Value::Object(map) = entry {
                map.insert(inner.to_owned(), Value::String(value));
            }
            return;
        }
        self.0.insert(key.to_owned(), Value::String(value));
    }

    /// Adds the members of a JSON object body.
    pub(crate) fn merge_json(&mut self, body: &[u8]) -> Result<(), ApiError> {
        match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(map)) => {
                self.0.extend(map);
                Ok(())
            }
            // Grape answers a body it cannot parse with a bare 400.
            _ => Err(ApiError::bad_request(None)),
        }
    }

    fn raw(&self, key: &str) -> Option<&Value> {
        self.0.get(key).filter(|v| !v.is_null())
    }

    /// A scalar parameter as text.
    pub(crate) fn str(&self, key: &str) -> Option<String> {
        scalar_text(self.raw(key)?)
    }

    /// A parameter Grape `requires`: "KEY is missing" when absent, "KEY is
    /// empty" when blank.
    pub(crate) fn required(&self, key: &str) -> Result<String, ApiError> {
        match self.str(key) {
            None => Err(ApiError::missing(key)),
            Some(text) if text.trim().is_empty() => Err(ApiError::grape(format!("{key} is empty"))),
            Some(text) => Ok(text),
        }
    }

    pub(crate) fn bool(&self, key: &str) -> Result<Option<bool>, ApiError> {
        let Some(value) = self.raw(key) else {
            return Ok(None);
        };
        let parsed = match value {
            Value::Bool(b) => Some(*b),
            Value::Number(n) => match n.as_i64() {
                Some(1) => Some(true),
                Some(0) => Some(false),
                _ => None,
            },
            Value::String(s) => match s.to_ascii_lowercase().as_str() {
                "true" | "1" | "t" | "yes" => Some(true),
                "false" | "0" | "f" | "no" => Some(false),
                _ => None,
            },
            _ => None,
        };
        parsed.map(Some).ok_or_else(|| ApiError::invalid(key))
    }

    pub(crate) fn int(&self, key: &str) -> Result<Option<i64>, ApiError> {
        let Some(value) = self.raw(key) else {
            return Ok(None);
        };
        let parsed = match value {
            Value::Number(n) => n.as_i64(),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        };
        parsed.map(Some).ok_or_else(|| ApiError::invalid(key))
    }

    pub(crate) fn date(&self, key: &str) -> Result<Option<Date>, ApiError> {
        match self.str(key) {
            None => Ok(None),
            Some(text) => parse_date(&text)
                .map(Some)
                .ok_or_else(|| ApiError::invalid(key)),
        }
    }

    /// An array parameter; a lone scalar counts as a one-item array.
    pub(crate) fn list(&self, key: &str) -> Option<Vec<String>> {
        match self.raw(key)? {
            Value::Array(items) => Some(items.iter().filter_map(scalar_text).collect()),
            other => scalar_text(other).map(|s| vec![s]),
        }
    }

    /// An array of objects (`url_variables: [{key, value}]`), as JSON bodies
    /// send it; anything else under that name is invalid.
    pub(crate) fn objects(&self, key: &str) -> Result<Option<Vec<Map<String, Value>>>, ApiError> {
        match self.raw(key) {
            None => Ok(None),
            Some(Value::Array(items)) => items
                .iter()
                .map(|item| {
                    item.as_object()
                        .cloned()
                        .ok_or_else(|| ApiError::invalid(key))
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(_) => Err(ApiError::invalid(key)),
        }
    }

    /// `outer[inner]`, whether it came as a form key or a JSON object.
    pub(crate) fn nested(&self, outer: &str, inner: &str) -> Option<String> {
        match self.raw(outer)? {
            Value::Object(map) => map.get(inner).and_then(scalar_text),
            _ => None,
        }
    }
}

fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// `filter[environment_scope]` → (`filter`, `environment_scope`).
fn split_hash_key(key: &str) -> Option<(&str, &str)> {
    let open = key.find('[')?;
    let inner = key[open + 1..].strip_suffix(']')?;
    (open > 0 && !inner.is_empty() && !inner.contains('[')).then(|| (&key[..open], inner))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_arrays_and_hashes() {
        let mut params = Params::default();
        params.merge_form(
            b"name=ci&scopes[]=api&scopes[]=read_api&filter%5Benvironment_scope%5D=prod",
        );
        assert_eq!(params.str("name").as_deref(), Some("ci"));
        assert_eq!(
            params.list("scopes"),
            Some(vec!["api".to_owned(), "read_api".to_owned()])
        );
        assert_eq!(
            params.nested("filter", "environment_scope").as_deref(),
            Some("prod")
        );
    }

    #[test]
    fn json_body_overrides_query() {
        let mut params = Params::default();
        params.merge_form(b"expires_at=2030-01-01&masked=true");
        params
            .merge_json(br#"{"expires_at":"2031-02-03","access_level":30,"scopes":"api"}"#)
            .unwrap();
        assert_eq!(
            params.date("expires_at").unwrap(),
            Some(time::macros::date!(2031 - 02 - 03))
        );
        assert_eq!(params.int("access_level").unwrap(), Some(30));
        assert_eq!(params.bool("masked").unwrap(), Some(true));
        assert_eq!(params.list("scopes"), Some(vec!["api".to_owned()]));
    }

    #[test]
    fn bad_values_are_grape_errors() {
        let mut params = Params::default();
        params.merge_form(b"masked=maybe&expires_at=next-week&name=");
        assert_eq!(
            params.bool("masked").unwrap_err().body(),
            serde_json::json!({"error": "masked is invalid"})
        );
        assert_eq!(
            params.date("expires_at").unwrap_err().body(),
            serde_json::json!({"error": "expires_at is invalid"})
        );
        assert_eq!(
            params.required("description").unwrap_err().body(),
            serde_json::json!({"error": "description is missing"})
        );
        assert_eq!(
            params.required("name").unwrap_err().body(),
            serde_json::json!({"error": "name is empty"})
        );
        assert!(params.merge_json(b"[1,2]").is_err());
    }
}
