//! GitLab's error bodies turned into one line of text, kept in GitLab's own
//! words so an operator can search for them.
//!
//! GitLab answers errors in four shapes (`doc/api/rest/troubleshooting.md`
//! and `lib/api/helpers.rb`):
//! - `{"message": "404 Project Not Found"}` from `render_api_error!`;
//! - `{"message": {"field": ["msg", ...]}}` from `render_validation_error!`;
//! - `{"error": "scopes is missing"}` from Grape's parameter validation;
//! - `{"error": "invalid_token", "error_description": "..."}` from the OAuth
//!   layer (`API::APIGuard`), for revoked, expired or under-scoped tokens.
//!
//! Rate limiters and proxies in front of GitLab answer in plain text
//! ("Retry later").

use serde_json::Value;

/// How much of a plain-text body to keep: an HTML error page from a proxy
/// says little beyond its first lines.
const MAX_TEXT: usize = 300;

/// The message of an error answer with `status` and `body`.
pub(crate) fn from_body(status: u16, body: &[u8]) -> String {
    let message = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(fields)) => from_object(&fields),
        Ok(other) => flatten(&other),
        Err(_) => plain_text(body),
    };
    if message.trim().is_empty() {
        format!("GitLab answered HTTP {status} with no message")
    } else {
        message
    }
}

fn from_object(fields: &serde_json::Map<String, Value>) -> String {
    if let Some(description) = fields.get("error_description").and_then(Value::as_str) {
        // The OAuth layer names the scope an under-scoped token lacks.
        return match fields.get("scope").and_then(Value::as_str) {
            Some(scope) if !scope.is_empty() => {
                format!("{description} (required scope: {scope})")
            }
            _ => description.to_owned(),
        };
    }
    if let Some(message) = fields.get("message") {
        return flatten(message);
    }
    if let Some(error) = fields.get("error") {
        return flatten(error);
    }
    flatten(&Value::Object(fields.clone()))
}

/// A message value as one line: a string as it is, a field map as
/// `field: msg, msg2; field2: msg`, a list joined with `; `.
pub(crate) fn flatten(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Null => String::new(),
        Value::Array(items) => items
            .iter()
            .map(flatten)
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join("; "),
        Value::Object(fields) => fields
            .iter()
            .map(|(field, messages)| {
                let text = match messages {
                    Value::Array(items) => items
                        .iter()
                        .map(flatten)
                        .filter(|s| !s.is_empty())
                        .collect::<Vec<_>>()
                        .join(", "),
                    other => flatten(other),
                };
                format!("{field}: {text}")
            })
            .collect::<Vec<_>>()
            .join("; "),
        other => other.to_string(),
    }
}

fn plain_text(body: &[u8]) -> String {
    limited(&String::from_utf8_lossy(body))
}

/// `text` trimmed and cut to its first few hundred characters: text that
/// comes from beyond GitLab (a webhook receiver's answer) can be anything.
pub(crate) fn limited(text: &str) -> String {
    let text = text.trim();
    let mut kept: String = text.chars().take(MAX_TEXT).collect();
    if kept.len() < text.len() {
        kept.push_str(" …");
    }
    kept
}

/// A 404 for the project itself (missing, or not visible to the plugin's
/// user) is not an object that is already gone. GitLab answers a missing
/// trigger or hook with "404 Not found" (`find` raising RecordNotFound), a
/// missing project with "404 Project Not Found".
pub(crate) fn project_missing(message: &str) -> bool {
    message.to_ascii_lowercase().contains("project not found")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_a_plain_message() {
        assert_eq!(
            from_body(404, br#"{"message":"404 Project Not Found"}"#),
            "404 Project Not Found"
        );
        assert_eq!(
            from_body(
                409,
                br#"{"message":"There are multiple variables with provided parameters. Please use 'filter[environment_scope]'"}"#
            ),
            "There are multiple variables with provided parameters. Please use 'filter[environment_scope]'"
        );
    }

    #[test]
    fn flattens_a_field_map() {
        let body = br#"{"message":{"key":["(API_KEY) has already been taken","is bad"],"value":["is invalid"]}}"#;
        assert_eq!(
            from_body(400, body),
            "key: (API_KEY) has already been taken, is bad; value: is invalid"
        );
    }

    #[test]
    fn takes_grape_and_oauth_errors() {
        assert_eq!(
            from_body(400, br#"{"error":"scopes is missing, name is missing"}"#),
            "scopes is missing, name is missing"
        );
        assert_eq!(
            from_body(
                401,
                br#"{"error":"invalid_token","error_description":"Token was revoked. You have to re-authorize from the user."}"#
            ),
            "Token was revoked. You have to re-authorize from the user."
        );
        assert_eq!(
            from_body(
                403,
                br#"{"error":"insufficient_scope","error_description":"The request requires higher privileges than provided by the access token.","scope":"api"}"#
            ),
            "The request requires higher privileges than provided by the access token. (required scope: api)"
        );
    }

    #[test]
    fn tells_a_missing_project_from_a_missing_object() {
        assert!(project_missing("404 Project Not Found"));
        assert!(!project_missing("404 Not found"));
        assert!(!project_missing("404 Trigger Not Found"));
    }

    #[test]
    fn plain_text_and_empty_bodies() {
        assert_eq!(from_body(429, b"Retry later\n"), "Retry later");
        assert_eq!(
            from_body(502, b""),
            "GitLab answered HTTP 502 with no message"
        );
        assert_eq!(
            from_body(500, br#"{"message":null}"#),
            "GitLab answered HTTP 500 with no message"
        );
        let long = "x".repeat(1000);
        let kept = from_body(502, long.as_bytes());
        assert!(kept.len() < 400 && kept.ends_with('…'), "{kept}");
        assert_eq!(from_body(400, br#"["a","b"]"#), "a; b");
    }
}
