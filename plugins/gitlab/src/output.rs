//! Shaping GitLab's answers into operation outputs, so that a token value
//! leaves the plugin only in an output field declared secret.

use keycycle_plugin_sdk::{Error, Value};

/// `value` without a `token` field. Reads never return token values, but
/// an output that is not declared secret must not carry one should GitLab
/// ever add it.
pub(crate) fn item(mut value: Value) -> Value {
    if let Value::Object(fields) = &mut value {
        fields.remove("token");
    }
    value
}

/// A created or rotated object, which must carry its new value in `token`
/// (declared secret by the operation). `what` names it in the error.
pub(crate) fn with_new_token(value: Value, what: &str) -> Result<Value, Error> {
    match value.get("token") {
        Some(Value::String(token)) if !token.is_empty() => Ok(value),
        _ => Err(Error::provider(
            200,
            format!(
                "GitLab's answer for {what} has no token value; it cannot be read back later, \
                 so revoke that token and start again"
            ),
        )),
    }
}

/// A 404 for the `find_*` operations, as the contract's `recover-with`
/// asks: "nothing was created".
pub(crate) fn not_found(message: impl Into<String>) -> Error {
    Error::provider(404, message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use keycycle_plugin_sdk::json;

    #[test]
    fn items_lose_their_token() {
        let v = item(json!({"id": 1, "token": "glpat-x", "name": "n"}));
        assert_eq!(v, json!({"id": 1, "name": "n"}));
        assert_eq!(item(json!([1])), json!([1]));
    }

    #[test]
    fn new_tokens_must_be_present() {
        assert!(with_new_token(json!({"id": 2, "token": "glpat-y"}), "x").is_ok());
        for v in [json!({"id": 2}), json!({"token": ""}), json!({"token": 5})] {
            let e = with_new_token(v, "the rotated token").unwrap_err();
            assert!(e.to_string().contains("the rotated token"), "{e}");
        }
    }
}
