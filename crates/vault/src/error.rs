//! The errors of the KV backend. Each names the key, file or server
//! involved and says what the operator can do; none ever holds a token, a
//! secret id or a secret value, and what the server said is summarized
//! (status and its `errors` array, escaped and bounded), never dumped.

use std::fmt;
use std::path::PathBuf;

/// Whether an error is the operator's to fix in the configuration or
/// credentials, or a failure of the server or the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// The config, a credential file, a refused token or a refused path:
    /// nothing changes until the operator changes something.
    Config,
    /// Another writer changed the key since it was read.
    Conflict,
    /// The server could not be reached, or answered with a server error.
    Unavailable,
}

/// Something went wrong talking to OpenBao or Vault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VaultError {
    /// A setting cannot work (bad address, empty mount, unusable CA file).
    #[error("[secrets] {setting}: {problem}")]
    Setting {
        setting: &'static str,
        problem: String,
    },

    /// A credential file cannot be used.
    #[error("{what} file {path}: {problem}", path = path.display())]
    CredentialFile {
        what: &'static str,
        path: PathBuf,
        problem: String,
    },

    /// A key name that would not stay one KV path below the prefix.
    #[error("secret name `{name}` cannot be a KV path: {problem}")]
    InvalidName { name: String, problem: &'static str },

    /// The server did not answer (connection refused, TLS, timeout).
    #[error(
        "cannot reach {address} ({doing}): {cause}; check [secrets] address, ca_cert and that \
         the server is running"
    )]
    Unreachable {
        address: String,
        doing: String,
        cause: String,
    },

    /// The server refused the credentials: login failed, or the token is
    /// wrong, expired or revoked.
    #[error(
        "{address} refused the {credential} ({summary}): it is wrong, expired or revoked; \
         give a valid one (see `keycycle doctor`)"
    )]
    AuthRefused {
        address: String,
        /// Where the credential came from (`token from VAULT_TOKEN`), never
        /// its value.
        credential: String,
        summary: ServerSummary,
    },

    /// The token is valid but may not do this to this key.
    #[error(
        "{address} denied {doing} ({summary}); the token's policy must allow it on {path} \
         (see docs/operations.md, \"Secrets in OpenBao or Vault\")"
    )]
    Denied {
        address: String,
        doing: String,
        path: String,
        summary: ServerSummary,
    },

    /// Check-and-set refused the write: another writer changed the key.
    #[error(
        "secret `{name}` was changed by another writer since keycycle read it (check-and-set \
         expected version {expected}); nothing was written and the other writer's value stays. \
         Find out who rotated it before running again"
    )]
    Conflict { name: String, expected: u64 },

    /// Any other answer that is not a success.
    #[error("{address} failed {doing} ({summary})")]
    Server {
        address: String,
        doing: String,
        summary: ServerSummary,
    },

    /// A success whose body is not what the KV v2 API returns.
    #[error(
        "{address} answered {doing} with something that is not a KV v2 answer ({problem}); is \
         [secrets] mount = \"{mount}\" a KV version 2 mount?"
    )]
    Unexpected {
        address: String,
        doing: String,
        mount: String,
        problem: String,
    },

    /// The client's thread is gone (it panicked, or the process is ending).
    #[error("the OpenBao/Vault client stopped")]
    Stopped,
}

impl VaultError {
    pub fn class(&self) -> ErrorClass {
        match self {
            VaultError::Setting { .. }
            | VaultError::CredentialFile { .. }
            | VaultError::InvalidName { .. }
            | VaultError::AuthRefused { .. }
            | VaultError::Denied { .. }
            | VaultError::Unexpected { .. } => ErrorClass::Config,
            VaultError::Conflict { .. } => ErrorClass::Conflict,
            VaultError::Unreachable { .. } | VaultError::Server { .. } | VaultError::Stopped => {
                ErrorClass::Unavailable
            }
        }
    }
}

/// What a server said about a failure: the HTTP status and the entries of
/// its `errors` array, each escaped onto one line and cut short. The rest
/// of the body is never shown: a proxy's HTML page or an echo of the
/// request has no place in an error message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerSummary {
    pub status: u16,
    pub errors: Vec<String>,
}

/// At most this many of the server's messages are shown...
const MAX_ERRORS: usize = 3;
/// ...each cut to this many characters.
const MAX_ERROR_CHARS: usize = 200;

impl ServerSummary {
    /// Reads `body` as a JSON object with an `errors` array of strings.
    pub fn new(status: u16, body: &[u8]) -> ServerSummary {
        let errors = serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v.get("errors").and_then(|e| e.as_array()).cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|e| e.as_str())
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .take(MAX_ERRORS)
            .map(one_line)
            .collect();
        ServerSummary { status, errors }
    }

    /// Whether one of the messages contains `needle`.
    pub fn mentions(&self, needle: &str) -> bool {
        self.errors.iter().any(|e| e.contains(needle))
    }
}

impl fmt::Display for ServerSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "status {}", self.status)?;
        if self.errors.is_empty() {
            f.write_str(", no error message")
        } else {
            write!(f, ": {}", self.errors.join("; "))
        }
    }
}

/// `text` on one line: control and bidirectional characters as visible
/// escapes (a server's message must not move a terminal's cursor or hide
/// text), cut to [`MAX_ERROR_CHARS`].
pub(crate) fn one_line(text: &str) -> String {
    let mut out = String::new();
    for (i, c) in text.chars().enumerate() {
        if i == MAX_ERROR_CHARS {
            out.push('…');
            break;
        }
        let bidi = matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
        if c.is_control() || bidi {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_summary_keeps_only_the_errors_array_escaped_and_bounded() {
        let body = serde_json::json!({
            "errors": ["permission denied\n\u{1b}[2Jfake prompt", "", "b", "c", "d"],
            "data": {"value": "must-never-show"},
        });
        let s = ServerSummary::new(403, body.to_string().as_bytes());
        let shown = s.to_string();
        assert_eq!(
            shown,
            "status 403: permission denied\\n\\u{1b}[2Jfake prompt; b; c"
        );
        assert!(!shown.contains("must-never-show"));
    }

    #[test]
    fn a_body_that_is_not_json_is_summarized_by_its_status() {
        let s = ServerSummary::new(502, b"<html>proxy error: token=abc</html>");
        assert_eq!(s.to_string(), "status 502, no error message");
    }

    #[test]
    fn long_messages_are_cut() {
        let long = "x".repeat(1000);
        let body = serde_json::json!({ "errors": [long] });
        let s = ServerSummary::new(400, body.to_string().as_bytes());
        assert_eq!(s.errors[0].chars().count(), MAX_ERROR_CHARS + 1);
    }

    #[test]
    fn bidirectional_overrides_are_escaped() {
        assert_eq!(one_line("a\u{202e}b"), "a\\u{202e}b");
    }
}
