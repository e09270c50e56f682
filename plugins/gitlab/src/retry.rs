//! When to wait and try a request again: after a 429 from GitLab's rate
//! limiter, and after a 5xx or a lost connection for requests that are safe
//! to send twice.
//!
//! Retrying after a 429 is safe even for rotate and create: GitLab's rate
//! limits are enforced before the request is processed. Rack::Attack
//! throttles in middleware, before the request reaches the API, and the
//! application limiter (`check_rate_limit!`) runs first thing in an
//! endpoint (`doc/security/rate_limits.md`,
//! `doc/administration/settings/user_and_ip_rate_limits.md`). So a 429
//! means nothing happened. A 5xx gives no such promise: the request may
//! have been carried out before the failure.

use std::time::Duration;

/// At most this many waits on 429 in one call.
pub(crate) const MAX_RATE_LIMIT_WAITS: u32 = 3;

/// The longest single wait on a 429; a longer one is handed back to the
/// runbook as retryable.
pub(crate) const MAX_RATE_LIMIT_WAIT: Duration = Duration::from_secs(30);

/// All waiting in one call stays under this. The host stops a call after
/// its time limit (30 s by default) and reports it as aborted, which tells
/// the runbook less than a retryable error with a delay would.
pub(crate) const CALL_WAIT_BUDGET: Duration = Duration::from_secs(20);

/// The wait after a 429 that says nothing usable.
pub(crate) const DEFAULT_RATE_LIMIT_WAIT: Duration = Duration::from_secs(1);

/// Extra tries after a 5xx or a transport failure, for repeatable requests.
pub(crate) const MAX_SERVER_ERROR_RETRIES: u32 = 2;

/// The pause before such a retry.
pub(crate) const SERVER_ERROR_PAUSE: Duration = Duration::from_secs(1);

/// How long a 429 asks us to wait: `Retry-After` in seconds, else until
/// `RateLimit-Reset` (Unix time), else a second. GitLab does not always
/// send `Retry-After` (gitlab-org/gitlab issues 287602 and 365728), hence
/// the fallbacks. A wait is never under a second, so a `Retry-After: 0`
/// does not turn into a burst of requests.
pub(crate) fn rate_limit_wait(
    retry_after: Option<&str>,
    ratelimit_reset: Option<&str>,
    now_unix: u64,
) -> Duration {
    let seconds = retry_after
        .and_then(|v| v.trim().parse::<u64>().ok())
        .or_else(|| {
            ratelimit_reset
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(|reset| reset.saturating_sub(now_unix))
        });
    match seconds {
        Some(s) => Duration::from_secs(s).max(DEFAULT_RATE_LIMIT_WAIT),
        None => DEFAULT_RATE_LIMIT_WAIT,
    }
}

/// What to do about a 429.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RateLimitStep {
    /// Sleep this long, then send the request again.
    Wait(Duration),
    /// Stop, and tell the caller to try again after this long.
    GiveUp(Duration),
}

/// Whether to wait out a 429 that asks for `wait`, after `waits_so_far`
/// earlier waits and `elapsed` time spent in this call.
pub(crate) fn after_rate_limit(
    wait: Duration,
    waits_so_far: u32,
    elapsed: Duration,
) -> RateLimitStep {
    if waits_so_far >= MAX_RATE_LIMIT_WAITS
        || wait > MAX_RATE_LIMIT_WAIT
        || elapsed.saturating_add(wait) > CALL_WAIT_BUDGET
    {
        RateLimitStep::GiveUp(wait)
    } else {
        RateLimitStep::Wait(wait)
    }
}

/// Whether a repeatable request that failed with a 5xx or a transport error
/// gets another try.
pub(crate) fn retry_server_error(retries_so_far: u32, elapsed: Duration) -> bool {
    retries_so_far < MAX_SERVER_ERROR_RETRIES
        && elapsed.saturating_add(SERVER_ERROR_PAUSE) <= CALL_WAIT_BUDGET
}

/// Whole seconds for a log line, rounded up so "0 s" never appears.
pub(crate) fn seconds(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// Milliseconds for `Error::Retryable`.
pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_wins_then_reset_then_a_second() {
        assert_eq!(
            rate_limit_wait(Some(" 7 "), Some("1000"), 990),
            Duration::from_secs(7)
        );
        assert_eq!(
            rate_limit_wait(None, Some("1000"), 988),
            Duration::from_secs(12)
        );
        // An HTTP date is not seconds: fall through to the reset time.
        assert_eq!(
            rate_limit_wait(Some("Wed, 21 Oct 2015 07:28:00 GMT"), Some("1005"), 1000),
            Duration::from_secs(5)
        );
        assert_eq!(rate_limit_wait(None, None, 5), DEFAULT_RATE_LIMIT_WAIT);
        assert_eq!(rate_limit_wait(Some("0"), None, 5), DEFAULT_RATE_LIMIT_WAIT);
        // A reset time already past still waits the minimum.
        assert_eq!(
            rate_limit_wait(None, Some("900"), 1000),
            DEFAULT_RATE_LIMIT_WAIT
        );
    }

    #[test]
    fn waits_are_bounded_in_count_length_and_budget() {
        let five = Duration::from_secs(5);
        assert_eq!(
            after_rate_limit(five, 0, Duration::ZERO),
            RateLimitStep::Wait(five)
        );
        assert_eq!(
            after_rate_limit(five, 2, Duration::from_secs(10)),
            RateLimitStep::Wait(five)
        );
        assert_eq!(
            after_rate_limit(five, 3, Duration::ZERO),
            RateLimitStep::GiveUp(five)
        );
        let long = Duration::from_secs(31);
        assert_eq!(
            after_rate_limit(long, 0, Duration::ZERO),
            RateLimitStep::GiveUp(long)
        );
        assert_eq!(
            after_rate_limit(five, 1, Duration::from_secs(16)),
            RateLimitStep::GiveUp(five)
        );
    }

    #[test]
    fn server_errors_get_two_retries() {
        assert!(retry_server_error(0, Duration::ZERO));
        assert!(retry_server_error(1, Duration::from_secs(3)));
        assert!(!retry_server_error(2, Duration::ZERO));
        assert!(!retry_server_error(0, Duration::from_secs(20)));
    }

    #[test]
    fn rounding_for_messages() {
        assert_eq!(seconds(Duration::from_millis(1500)), 2);
        assert_eq!(seconds(Duration::from_secs(3)), 3);
        assert_eq!(millis(Duration::from_secs(3)), 3000);
    }
}
