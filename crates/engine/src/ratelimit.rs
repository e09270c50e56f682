//! Rate limits shared by every run of a process that uses one plugin
//! instance: a provider's 429 (a plugin's retryable error with a delay)
//! holds back every call to that instance until the delay has passed, not
//! only the call that met it. Forty rotations against one GitLab must slow
//! down together, or the other thirty-nine keep hitting the limit.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The longest hold a provider can ask for; a larger `Retry-After` is
/// taken as this (a run would rather fail than sleep for an hour).
pub const MAX_HOLD: Duration = Duration::from_secs(60);

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
