//! What a plugin knows about the call it is serving, and the secrets the
//! host lends it.

use crate::Error;
use crate::bindings::CallContext;
use crate::bindings::keycycle::plugin::host;

/// Facts about one call, from the host.
#[derive(Debug, Clone, Default)]
pub struct Context {
    run_id: String,
    idempotency_key: String,
    config: Vec<(String, String)>,
}

impl Context {
    /// A context built by hand, for exercising a plugin's logic in tests.
    pub fn new(
        run_id: impl Into<String>,
        idempotency_key: impl Into<String>,
        config: Vec<(String, String)>,
    ) -> Self {
        Context {
            run_id: run_id.into(),
            idempotency_key: idempotency_key.into(),
            config,
        }
    }

    /// The run this call belongs to.
    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// Stable across retries and resumes of the same step; empty when the
    /// host has none. Put it in the name or description of what a mutating
    /// operation creates, so that an interrupted creation can be found again.
    pub fn idempotency_key(&self) -> &str {
        &self.idempotency_key
    }

    /// The operator-granted config value `key`, or an invalid-input error
    /// naming the key when the operator did not set it.
    pub fn config(&self, key: &str) -> Result<&str, Error> {
        self.config_opt(key).ok_or_else(|| {
            Error::invalid_input(format!(
                "config value `{key}` is not set; set it in this plugin's config"
            ))
        })
    }

    /// The operator-granted config value `key`, if set.
    pub fn config_opt(&self, key: &str) -> Option<&str> {
        self.config
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

impl From<CallContext> for Context {
    fn from(context: CallContext) -> Self {
        Context {
            run_id: context.run_id,
            idempotency_key: context.idempotency_key,
            config: context.config,
        }
    }
}

/// Read the secret `name`, which the plugin must declare with
/// [`Description::secret`](crate::Description::secret). A refusal by the
/// host becomes [`Error::Denied`] carrying the host's reason as it is (the
/// host's reason already names the secret).
///
/// Keep the value out of logs and errors: the host masks values it knows,
/// but a value changed by the plugin (encoded, sliced) escapes the mask.
pub fn secret(name: &str) -> Result<String, Error> {
    host::secret(name).map_err(Error::Denied)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_lookup_names_a_missing_key() {
        let ctx = Context::new(
            "run-1",
            "key-1",
            vec![("base_url".into(), "http://x".into())],
        );
        assert_eq!(ctx.run_id(), "run-1");
        assert_eq!(ctx.idempotency_key(), "key-1");
        assert_eq!(ctx.config("base_url").unwrap(), "http://x");
        let err = ctx.config("region").unwrap_err();
        assert!(
            matches!(&err, Error::InvalidInput(m) if m.contains("`region`")),
            "{err}"
        );
    }
}
