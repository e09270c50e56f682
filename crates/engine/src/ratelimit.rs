//! Rate limits shared by every run of a process that uses one plugin
//! instance: a provider's 429 (a plugin's retryable error with a delay)
//! holds back every call to that instance until the delay has passed, not
//! only the call that met it. Forty rotations against one GitLab must slow
//! down together, or the other thirty-nine keep hitting the limit.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use keycycle_contract::{CallContext, PluginError, Value};
use keycycle_host::{InvokeError, Plugin};

/// The longest hold a provider can ask for; a larger `Retry-After` is
/// taken as this (a run would rather fail than sleep for an hour).
pub const MAX_HOLD: Duration = Duration::from_secs(60);

/// The longest wait before a read is asked again.
const MAX_RETRY_WAIT: Duration = Duration::from_secs(30);

#[derive(Debug, Default)]
pub struct RateGate {
    until: Mutex<Option<Instant>>,
}

impl RateGate {
    /// No call goes out before `delay` from now.
    pub fn hold(&self, delay: Duration) {
        let at = Instant::now() + delay.min(MAX_HOLD);
        let mut until = self.until.lock().unwrap_or_else(|p| p.into_inner());
        if until.is_none_or(|u| u < at) {
            *until = Some(at);
        }
    }

    /// How long a call must still wait.
    pub fn remaining(&self) -> Option<Duration> {
        let until = *self.until.lock().unwrap_or_else(|p| p.into_inner());
        until
            .map(|u| u.saturating_duration_since(Instant::now()))
            .filter(|d| !d.is_zero())
    }

    /// Waits on this thread (a runbook's thread) until calls may go out.
    pub fn wait_blocking(&self) {
        while let Some(left) = self.remaining() {
            std::thread::sleep(left);
        }
    }

    /// Waits, in a task, until calls may go out.
    pub async fn wait(&self) {
        while let Some(left) = self.remaining() {
            tokio::time::sleep(left).await;
        }
    }
}

/// Calls `operation` of `plugin` (the instance `name`) through its gate:
/// waits out any hold first, and when the plugin answers that the call may
/// be retried (a 429, say), holds every caller of the instance for the
/// delay it asks and asks again, at most `retries` times. A mutating call
/// gets no retries: the hold still applies to everyone else.
pub async fn invoke_through(
    gate: &RateGate,
    plugin: &Plugin,
    name: &str,
    operation: &str,
    input: &Value,
    ctx: &CallContext,
    retries: u32,
) -> Result<Value, InvokeError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        gate.wait().await;
        let result = plugin.invoke(operation, input, ctx).await;
        let Err(InvokeError::Plugin {
            error: PluginError::Retryable { delay_ms, message },
            ..
        }) = &result
        else {
            return result;
        };
        let wait = Duration::from_millis(*delay_ms).min(MAX_RETRY_WAIT);
        gate.hold(wait);
        if attempt > retries {
            return result;
        }
        tracing::warn!(target: "keycycle", "{name}.{operation} asked to retry ({}); waiting {wait:?}, attempt {attempt} of {retries}", keycycle_host::one_line(message));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hold_only_ever_grows_and_is_capped() {
        let gate = RateGate::default();
        assert_eq!(gate.remaining(), None);
        gate.hold(Duration::from_secs(5));
        gate.hold(Duration::from_secs(1));
        assert!(gate.remaining().unwrap() > Duration::from_secs(4));
        gate.hold(Duration::from_secs(3600));
        assert!(gate.remaining().unwrap() <= MAX_HOLD);
    }
}
