//! Time in the sandbox: the wall clock for `restartedAt` (RFC 3339, the
//! way `kubectl rollout restart` writes it) and the monotonic clock and
//! sleeps for waits. Both are WASI clocks the host allows.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Now, as RFC 3339 in UTC with whole seconds: `2026-08-01T09:30:00Z`.
pub(crate) fn now_rfc3339() -> String {
    let seconds = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    rfc3339(seconds)
}

/// `seconds` since the Unix epoch as RFC 3339 in UTC.
pub(crate) fn rfc3339(seconds: u64) -> String {
    let days = i64::try_from(seconds / 86_400).unwrap_or(i64::MAX / 2);
    let of_day = seconds % 86_400;
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60
    )
}

/// The proleptic Gregorian date `days` after 1970-01-01 (Howard Hinnant's
/// `civil_from_days`), so no date library is needed for one timestamp.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11]
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32; // [1, 31]
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32; // [1, 12]
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// The most requests a wait sends. The host allows 100 per call, and a
/// wait also reads pods after a failure; a wait that ran out of requests
/// would end as `denied` instead of saying what it saw.
pub(crate) const MAX_POLLS: u64 = 90;

/// How long a wait lasts and how often it looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Pace {
    pub(crate) timeout: Duration,
    pub(crate) interval: Duration,
}

impl Pace {
    /// `timeout_secs` (default `default_timeout`) and `poll_secs` (default
    /// 2, at least 1), the interval stretched so that the whole wait fits
    /// in [`MAX_POLLS`] requests.
    pub(crate) fn new(
        timeout_secs: Option<u64>,
        poll_secs: Option<u64>,
        default_timeout: u64,
    ) -> Pace {
        let timeout = timeout_secs.unwrap_or(default_timeout);
        let poll = poll_secs.unwrap_or(2).max(1);
        let poll = poll.max(timeout.div_ceil(MAX_POLLS - 1));
        Pace {
            timeout: Duration::from_secs(timeout),
            interval: Duration::from_secs(poll),
        }
    }
}

/// Calls `look` until it returns `Some`, sleeping `pace.interval` between
/// looks, until `pace.timeout` has passed; `None` then. Errors from
/// `look` end the wait at once.
pub(crate) fn poll<T, E>(
    pace: Pace,
    mut look: impl FnMut() -> Result<Option<T>, E>,
) -> Result<Option<T>, E> {
    let started = Instant::now();
    loop {
        if let Some(done) = look()? {
            return Ok(Some(done));
        }
        let elapsed = started.elapsed();
        if elapsed >= pace.timeout {
            return Ok(None);
        }
        std::thread::sleep(pace.interval.min(pace.timeout - elapsed));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_from_unix_seconds() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_709_251_199), "2024-02-29T23:59:59Z");
        assert_eq!(rfc3339(1_785_578_400), "2026-08-01T10:00:00Z");
        assert_eq!(rfc3339(4_102_444_800), "2100-01-01T00:00:00Z");
        let now = now_rfc3339();
        assert_eq!(now.len(), 20, "{now}");
        assert!(now.ends_with('Z') && now.as_bytes()[10] == b'T', "{now}");
    }

    #[test]
    fn waits_fit_the_request_limit() {
        let pace = Pace::new(None, None, 300);
        assert_eq!(pace.timeout, Duration::from_secs(300));
        // 300 s at 2 s would be 150 requests.
        assert_eq!(pace.interval, Duration::from_secs(4));
        assert!(pace.timeout.as_secs() / pace.interval.as_secs() < MAX_POLLS);
        let pace = Pace::new(Some(60), Some(5), 300);
        assert_eq!(pace.interval, Duration::from_secs(5));
        assert_eq!(
            Pace::new(Some(10), Some(0), 300).interval,
            Duration::from_secs(1)
        );
    }

    #[test]
    fn poll_stops_when_done_or_late() {
        let mut seen = 0;
        let pace = Pace {
            timeout: Duration::from_secs(5),
            interval: Duration::from_millis(1),
        };
        let done: Result<Option<u32>, ()> = poll(pace, || {
            seen += 1;
            Ok((seen == 3).then_some(seen))
        });
        assert_eq!(done, Ok(Some(3)));
        let pace = Pace {
            timeout: Duration::from_millis(20),
            interval: Duration::from_millis(5),
        };
        let never: Result<Option<u32>, ()> = poll(pace, || Ok(None));
        assert_eq!(never, Ok(None));
        let failed: Result<Option<u32>, &str> = poll(pace, || Err("boom"));
        assert_eq!(failed, Err("boom"));
    }
}
