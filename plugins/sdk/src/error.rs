//! How an operation fails, one variant per case of the WIT `plugin-error`.

use crate::bindings::keycycle::plugin::types as wit;

/// How an operation failed. Each variant maps 1:1 to the WIT `plugin-error`,
/// and the host tells the runbook which one it was.
///
/// Messages travel to logs and to the operator: never put a secret in one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The provider answered with an error. `status` is its HTTP status, or
    /// 0 when no answer came (timeout, connection failure); `message` is the
    /// provider's own message, kept as the provider said it.
    #[error("provider answered {status}: {message}")]
    Provider {
        /// The provider's HTTP status, or 0 when there was no response.
        status: u16,
        /// The provider's message.
        message: String,
    },
    /// The sandbox or the provider refused a capability.
    #[error("denied: {0}")]
    Denied(String),
    /// The input does not fit the operation.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// Worth trying again after `delay_ms` milliseconds.
    #[error("retryable after {delay_ms} ms: {message}")]
    Retryable {
        /// How long to wait before trying again.
        delay_ms: u64,
        /// Why the call should be tried again.
        message: String,
    },
}

impl Error {
    /// The provider answered `status` with `message`.
    pub fn provider(status: u16, message: impl Into<String>) -> Self {
        Error::Provider {
            status,
            message: message.into(),
        }
    }

    /// A capability was refused.
    pub fn denied(message: impl Into<String>) -> Self {
        Error::Denied(message.into())
    }

    /// The input does not fit the operation.
    pub fn invalid_input(message: impl Into<String>) -> Self {
        Error::InvalidInput(message.into())
    }

    /// Try again after `delay_ms` milliseconds.
    pub fn retryable(delay_ms: u64, message: impl Into<String>) -> Self {
        Error::Retryable {
            delay_ms,
            message: message.into(),
        }
    }

    /// The plugin was asked for an operation its `invoke` does not handle.
    /// The SDK already refuses undeclared operations, so reaching this means
    /// `describe` and `invoke` disagree.
    pub fn unknown_operation(operation: &str) -> Self {
        Error::InvalidInput(format!(
            "operation `{operation}` is declared but this plugin does not implement it"
        ))
    }
}

impl From<Error> for wit::PluginError {
    fn from(error: Error) -> Self {
        match error {
            Error::Provider { status, message } => {
                wit::PluginError::Provider(wit::ProviderError { status, message })
            }
            Error::Denied(message) => wit::PluginError::Denied(message),
            Error::InvalidInput(message) => wit::PluginError::InvalidInput(message),
            Error::Retryable { delay_ms, message } => {
                wit::PluginError::Retryable(wit::RetryLater { delay_ms, message })
            }
        }
    }
}

/// Where and what kind of JSON error this is, without serde_json's own
/// message: that message quotes unexpected values ("invalid type: string
/// \"...\""), and the value may be a secret.
pub(crate) fn describe_json_error(error: &serde_json::Error) -> String {
    use serde_json::error::Category;
    let kind = match error.classify() {
        Category::Io => "read error",
        Category::Syntax => "syntax error",
        Category::Data => "value of the wrong type or shape",
        Category::Eof => "unexpected end",
    };
    if error.line() == 0 {
        kind.to_owned()
    } else {
        format!("{kind} at line {} column {}", error.line(), error.column())
    }
}
