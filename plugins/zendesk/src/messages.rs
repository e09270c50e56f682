//! Zendesk's error bodies turned into one line of text, kept in Zendesk's
//! own words so an operator can search for them.
//!
//! The shapes documented in the provider reference (Zendesk OAS `Errors`,
//! zendesk_api_client_rb `error.rb`):
//! - `{"error":"RecordNotFound","description":"Not found"}`;
//! - `{"error":"RecordInvalid","description":"...","details":{"field":[{"description","error"}]}}`;
//! - `{"error":{"title":"...","message":"..."}}`;
//! - JSON:API `{"errors":[{"code","title","detail"}]}`;
//! - 401 `{"error":"Couldn't authenticate you"}`;
//! - text/plain bodies (some 400s, and 429s from the rate limiter).
//!
//! The grant endpoint (`POST /oauth/tokens`) is an OAuth endpoint; should
//! it answer in the OAuth shape (`error_description`), that is kept too.

use serde_json::{Map, Value};

/// How much of a plain-text body to keep: an HTML page from a proxy says
/// little beyond its first lines.
const MAX_TEXT: usize = 300;

/// The message of an error answer with `status` and `body`.
pub(crate) fn from_body(status: u16, body: &[u8]) -> String {
    let message = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(fields)) => from_object(&fields),
        Ok(Value::String(text)) => text,
        Ok(other) if !other.is_null() => other.to_string(),
        Ok(_) => String::new(),
        Err(_) => plain_text(body),
    };
    if message.trim().is_empty() {
        format!("Zendesk answered HTTP {status} with no message")
    } else {
        message
    }
}

fn from_object(fields: &Map<String, Value>) -> String {
    if let Some(Value::Array(errors)) = fields.get("errors") {
        return errors
            .iter()
            .map(json_api_error)
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join("; ");
    }
    match fields.get("error") {
        // `{"error":{"title","message"}}`
        Some(Value::Object(inner)) => {
            join(text(inner.get("title")), text(inner.get("message")), ": ")
        }
        Some(Value::String(code)) => {
            let description = text(
                fields
                    .get("description")
                    .or_else(|| fields.get("error_description")),
            );
            let head = join(code.clone(), description, ": ");
            match fields.get("details").map(details) {
                Some(d) if !d.is_empty() => format!("{head} ({d})"),
                _ => head,
            }
        }
        _ => text(fields.get("description").or_else(|| fields.get("message"))),
    }
}

/// `title: detail [code]` of one JSON:API error.
fn json_api_error(error: &Value) -> String {
    let head = join(text(error.get("title")), text(error.get("detail")), ": ");
    match text(error.get("code")) {
        code if code.is_empty() || head.contains(&code) => head,
        code if head.is_empty() => code,
        code => format!("{head} [{code}]"),
    }
}

/// RecordInvalid's `details`: `field: description, description; field2: ...`.
fn details(value: &Value) -> String {
    let Value::Object(fields) = value else {
        return String::new();
    };
    fields
        .iter()
        .map(|(field, problems)| {
            let list = match problems {
                Value::Array(items) => items
                    .iter()
                    .map(|p| match p {
                        Value::Object(_) => {
                            let d = text(p.get("description"));
                            if d.is_empty() {
                                text(p.get("error"))
                            } else {
                                d
                            }
                        }
                        other => text(Some(other)),
                    })
                    .collect::<Vec<_>>()
                    .join(", "),
                other => text(Some(other)),
            };
            format!("{field}: {list}")
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn text(value: Option<&Value>) -> String {
    match value {
        Some(Value::String(s)) => s.trim().to_owned(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

fn join(a: String, b: String, separator: &str) -> String {
    match (a.is_empty(), b.is_empty()) {
        (false, false) => format!("{a}{separator}{b}"),
        (false, true) => a,
        _ => b,
    }
}

fn plain_text(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    let mut kept: String = text.chars().take(MAX_TEXT).collect();
    if kept.len() < text.len() {
        kept.push_str(" …");
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_errors_keep_code_and_description() {
        assert_eq!(
            from_body(
                404,
                br#"{"error":"RecordNotFound","description":"Not found"}"#
            ),
            "RecordNotFound: Not found"
        );
        let body = br#"{"error":"RecordInvalid","description":"Record validation errors","details":{"name":[{"description":"Name: is too short","error":"BlankValue"}],"endpoint":[{"error":"InvalidValue"}]}}"#;
        assert_eq!(
            from_body(422, body),
            "RecordInvalid: Record validation errors (endpoint: InvalidValue; name: Name: is too short)"
        );
    }

    #[test]
    fn title_and_message_object() {
        assert_eq!(
            from_body(
                403,
                br#"{"error":{"title":"Forbidden","message":"You do not have access to this page."}}"#
            ),
            "Forbidden: You do not have access to this page."
        );
    }

    #[test]
    fn json_api_errors_are_joined() {
        let body = br#"{"errors":[{"code":"WebhookNotFound","title":"Webhook not found","detail":"No webhook with id 01ABC"},{"code":"Other","title":"Second"}]}"#;
        assert_eq!(
            from_body(404, body),
            "Webhook not found: No webhook with id 01ABC [WebhookNotFound]; Second [Other]"
        );
        assert_eq!(from_body(400, br#"{"errors":[{"code":"Bad"}]}"#), "Bad");
    }

    #[test]
    fn unauthenticated_and_oauth_shapes() {
        assert_eq!(
            from_body(401, br#"{"error":"Couldn't authenticate you"}"#),
            "Couldn't authenticate you"
        );
        assert_eq!(
            from_body(
                400,
                br#"{"error":"invalid_grant","error_description":"The provided authorization grant is invalid"}"#
            ),
            "invalid_grant: The provided authorization grant is invalid"
        );
    }

    #[test]
    fn plain_text_and_empty_bodies() {
        assert_eq!(from_body(429, b"Too Many Requests\n"), "Too Many Requests");
        assert_eq!(
            from_body(400, b"Bad Request: invalid JSON"),
            "Bad Request: invalid JSON"
        );
        assert_eq!(
            from_body(502, b""),
            "Zendesk answered HTTP 502 with no message"
        );
        assert_eq!(
            from_body(500, br#"{"error":null}"#),
            "Zendesk answered HTTP 500 with no message"
        );
        let long = "x".repeat(1000);
        let kept = from_body(502, long.as_bytes());
        assert!(kept.len() < 400 && kept.ends_with('…'), "{kept}");
    }
}
