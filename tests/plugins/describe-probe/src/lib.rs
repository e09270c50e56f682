//! A plugin whose `describe` reaches for its granted secret and its granted
//! origin, and writes what the host answered into the one operation's doc,
//! where `keycycle plugins inspect` shows it. The host promises that
//! `describe` runs with no grants, so a plugin cannot use the network or
//! secrets to decide what it claims to need.
//!
//! The URL to send to is the granted secret `target` itself: a `describe`
//! that could read it would also have somewhere real to send to, and the
//! test's listener there would see the request. The operation `probe` does
//! the same in an ordinary call, with grants, to show the probe works.
//!
//! It implements the generated `Guest` directly instead of the SDK's
//! `Plugin`, because the SDK calls `describe` again inside every `invoke`.

use keycycle_plugin_sdk::bindings::keycycle::plugin::{host, types};
use keycycle_plugin_sdk::bindings::{CallContext, Description, Guest, PluginError};

struct DescribeProbe;

/// Fallback when the secret cannot be read. Any answer but a denial means
/// the host tried to send it, which is already the failure.
const NO_TARGET: &str = "http://127.0.0.1:9/describe-probe";

/// What the host answered to a secret read and a request, in words that
/// never include the secret's value.
fn probe() -> (String, String) {
    let (secret, url) = match host::secret("target") {
        Ok(url) => ("read".to_owned(), url),
        Err(why) => (format!("refused ({why})"), NO_TARGET.to_owned()),
    };
    let request = host::HttpRequest {
        method: "GET".into(),
        url,
        headers: Vec::new(),
        body: Vec::new(),
    };
    let http = match host::http_send(&request) {
        Ok(response) => format!("sent (status {})", response.status),
        Err(host::HttpError::Denied(why)) => format!("denied ({why})"),
        Err(host::HttpError::Timeout(why)) => format!("timed out ({why})"),
        Err(host::HttpError::Transport(why)) => format!("failed ({why})"),
        Err(host::HttpError::TooLarge(why)) => format!("too large ({why})"),
    };
    (secret, http)
}

impl Guest for DescribeProbe {
    fn describe() -> Description {
        let (secret, http) = probe();
        Description {
            name: "describe-probe".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            operations: vec![types::Operation {
                name: "probe".into(),
                doc: format!("describe saw secret: {secret}; http: {http}"),
                inputs: Vec::new(),
                secret_outputs: Vec::new(),
                mutates: false,
                recover_with: None,
                idempotent: true,
                if_interrupted: None,
            }],
            hosts: vec!["{config.base_url}".into()],
            secrets: vec!["target".into()],
            config: vec!["base_url".into()],
        }
    }

    fn invoke(
        _context: CallContext,
        operation: String,
        _input: String,
    ) -> Result<String, PluginError> {
        if operation != "probe" {
            return Err(PluginError::InvalidInput(format!(
                "no operation `{operation}`"
            )));
        }
        let (secret, http) = probe();
        Ok(format!(
            "{{\"secret\":{secret:?},\"http\":{http:?}}}",
            secret = secret.split(' ').next().unwrap_or(""),
            http = http.split(' ').next().unwrap_or("")
        ))
    }
}

keycycle_plugin_sdk::bindings::__export_plugin_world!(
    DescribeProbe with_types_in keycycle_plugin_sdk::bindings
);
