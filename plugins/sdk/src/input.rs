//! Reading typed fields out of an operation's JSON input, with errors that
//! name the field (and never quote its value, which may be a secret).

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::Error;
use crate::error::describe_json_error;

/// Typed access to the fields of an operation's input object:
///
/// ```ignore
/// let name = input.str_field("name")?;
/// let id = input.u64_field("id")?;
/// ```
///
/// A field that is absent or null counts as missing.
pub trait Input {
    /// The field `name`, unless it is absent or null.
    fn field(&self, name: &str) -> Option<&Value>;

    /// The string field `name`; an error if it is missing or not a string.
    fn str_field(&self, name: &str) -> Result<&str, Error> {
        self.opt_str_field(name)?.ok_or_else(|| missing(name))
    }

    /// The string field `name` if present; an error if it is not a string.
    fn opt_str_field(&self, name: &str) -> Result<Option<&str>, Error> {
        self.field(name)
            .map(|v| v.as_str().ok_or_else(|| wrong_type(name, "a string", v)))
            .transpose()
    }

    /// The non-negative integer field `name`.
    fn u64_field(&self, name: &str) -> Result<u64, Error> {
        let v = self.field(name).ok_or_else(|| missing(name))?;
        v.as_u64()
            .ok_or_else(|| wrong_type(name, "a non-negative integer", v))
    }

    /// The integer field `name`.
    fn i64_field(&self, name: &str) -> Result<i64, Error> {
        let v = self.field(name).ok_or_else(|| missing(name))?;
        v.as_i64().ok_or_else(|| wrong_type(name, "an integer", v))
    }

    /// The boolean field `name`.
    fn bool_field(&self, name: &str) -> Result<bool, Error> {
        self.opt_bool_field(name)?.ok_or_else(|| missing(name))
    }

    /// The boolean field `name` if present.
    fn opt_bool_field(&self, name: &str) -> Result<Option<bool>, Error> {
        self.field(name)
            .map(|v| {
                v.as_bool()
                    .ok_or_else(|| wrong_type(name, "true or false", v))
            })
            .transpose()
    }

    /// The field `name` decoded into `T`, for structured inputs.
    fn parse_field<T: DeserializeOwned>(&self, name: &str) -> Result<T, Error> {
        let v = self.field(name).ok_or_else(|| missing(name))?;
        T::deserialize(v).map_err(|e| {
            Error::invalid_input(format!(
                "input `{name}` does not have the expected shape ({})",
                describe_json_error(&e)
            ))
        })
    }
}

impl Input for Value {
    fn field(&self, name: &str) -> Option<&Value> {
        self.get(name).filter(|v| !v.is_null())
    }
}

fn missing(name: &str) -> Error {
    Error::invalid_input(format!("input `{name}` is missing"))
}

fn wrong_type(name: &str, expected: &str, got: &Value) -> Error {
    let kind = match got {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    };
    Error::invalid_input(format!("input `{name}` must be {expected}, not {kind}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn message(e: Error) -> String {
        match e {
            Error::InvalidInput(m) => m,
            other => panic!("expected invalid input, got {other}"),
        }
    }

    #[test]
    fn reads_typed_fields() {
        let v = json!({"s": "x", "n": 7, "neg": -2, "b": true, "nil": null, "list": [1, 2]});
        assert_eq!(v.str_field("s").unwrap(), "x");
        assert_eq!(v.opt_str_field("nil").unwrap(), None);
        assert_eq!(v.u64_field("n").unwrap(), 7);
        assert_eq!(v.i64_field("neg").unwrap(), -2);
        assert!(v.bool_field("b").unwrap());
        assert_eq!(v.opt_bool_field("absent").unwrap(), None);
        assert_eq!(v.parse_field::<Vec<u8>>("list").unwrap(), [1, 2]);
    }

    #[test]
    fn errors_name_the_field_but_not_the_value() {
        let v = json!({"token": "demo-0123", "n": "demo-0123"});
        let m = message(v.str_field("name").unwrap_err());
        assert_eq!(m, "input `name` is missing");
        let m = message(v.u64_field("n").unwrap_err());
        assert!(m.contains("`n`") && m.contains("not a string"), "{m}");
        let m = message(v.parse_field::<u64>("token").unwrap_err());
        assert!(m.contains("`token`"), "{m}");
        assert!(!m.contains("demo-0123"), "{m}");
        assert!(v.u64_field("neg").is_err());
    }
}
