//! IBM's error bodies turned into one line, in the order IBM's Go SDK core
//! reads them (`getErrorMessage`): `errors[0].message`, then `error`,
//! `message`, `errorMessage` (IAM's shape). Anything else keeps the start
//! of the plain text.

use serde_json::Value;

/// How much of a plain-text body to keep.
const MAX_TEXT: usize = 300;

/// The message of an error answer with `status` and `body`.
pub(crate) fn from_body(status: u16, body: &[u8]) -> String {
    let message = match serde_json::from_slice::<Value>(body) {
        Ok(value @ Value::Object(_)) => from_object(&value),
        Ok(Value::String(text)) => text,
        Ok(_) => String::new(),
        Err(_) => plain_text(body),
    };
    if message.trim().is_empty() {
        format!("IBM Cloud answered HTTP {status} with no message")
    } else {
        message
    }
}

fn from_object(body: &Value) -> String {
    let text = |v: &Value| v.as_str().map(str::trim).unwrap_or_default().to_owned();
    let candidates = [
        &body["errors"][0]["message"],
        &body["error"],
        &body["message"],
        &body["errorMessage"],
    ];
    let message = candidates
        .iter()
        .map(|v| text(v))
        .find(|s| !s.is_empty())
        .unwrap_or_default();
    // IAM puts its code beside the message; an operator searches for it.
    match body["errorCode"].as_str() {
        Some(code) if !message.is_empty() && !message.contains(code) => {
            format!("{message} [{code}]")
        }
        _ => message,
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
    fn the_sdk_order_is_kept() {
        let both = br#"{"errors":[{"code":"not_found","message":"Secret not found"}],"message":"other","status_code":404}"#;
        assert_eq!(from_body(404, both), "Secret not found");
        assert_eq!(from_body(500, br#"{"error":"boom","message":"m"}"#), "boom");
        assert_eq!(
            from_body(500, br#"{"message":"m","errorMessage":"e"}"#),
            "m"
        );
        assert_eq!(
            from_body(
                400,
                br#"{"errorCode":"BXNIM0415E","errorMessage":"Provided API key could not be found."}"#
            ),
            "Provided API key could not be found. [BXNIM0415E]"
        );
    }

    #[test]
    fn empty_and_plain_bodies() {
        assert_eq!(from_body(429, b"Retry later"), "Retry later");
        assert_eq!(
            from_body(502, b""),
            "IBM Cloud answered HTTP 502 with no message"
        );
        assert_eq!(
            from_body(500, br#"{"errors":[]}"#),
            "IBM Cloud answered HTTP 500 with no message"
        );
        let long = "x".repeat(1000);
        assert!(from_body(502, long.as_bytes()).ends_with('…'));
    }
}
