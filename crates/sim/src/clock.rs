//! Time as the simulators report it: timestamps in the providers' format, and
//! a clock whose date tests can move to make tokens expire.

use serde::{Deserialize, Deserializer, Serializer};
use time::macros::format_description;
use time::{Date, Duration, OffsetDateTime, Time};

/// `2015-12-24T15:51:21.880Z`: UTC with milliseconds, as GitLab prints it.
pub(crate) fn timestamp(at: OffsetDateTime) -> String {
    let format =
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
    at.format(&format)
        .unwrap_or_else(|_| at.unix_timestamp().to_string())
}

/// `YYYY-MM-DD`.
pub(crate) fn date_string(date: Date) -> String {
    let format = format_description!("[year]-[month]-[day]");
    date.format(&format).unwrap_or_else(|_| date.to_string())
}

/// Parses `YYYY-MM-DD`; `None` when it is not a real date.
pub(crate) fn parse_date(text: &str) -> Option<Date> {
    let format = format_description!("[year]-[month]-[day]");
    Date::parse(text.trim(), &format).ok()
}

/// Parses a date or an RFC 3339 date-time, as GitLab's `created_after` and
/// friends accept, into a UTC instant (a bare date means its midnight).
pub(crate) fn parse_instant(text: &str) -> Option<OffsetDateTime> {
    if let Some(date) = parse_date(text) {
        return Some(date.with_time(Time::MIDNIGHT).assume_utc());
    }
    OffsetDateTime::parse(text.trim(), &time::format_description::well_known::Rfc3339).ok()
}

/// The HTTP date of `at`: `Sun, 06 Nov 1994 08:49:37 GMT`.
pub(crate) fn http_date(at: OffsetDateTime) -> String {
    let format = format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    at.format(&format)
        .unwrap_or_else(|_| at.unix_timestamp().to_string())
}

/// A clock that runs in real time but whose date a test may pin. With a date
/// pinned, the time of day is still the real one, so ordering by creation
/// time keeps working.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Clock {
    pinned_date: Option<Date>,
}

impl Clock {
    pub(crate) fn now(&self) -> OffsetDateTime {
        let real = OffsetDateTime::now_utc();
        match self.pinned_date {
            Some(date) => real.replace_date(date),
            None => real,
        }
    }

    pub(crate) fn today(&self) -> Date {
        self.now().date()
    }

    pub(crate) fn pin(&mut self, date: Option<Date>) {
        self.pinned_date = date;
    }

    pub(crate) fn days_from_today(&self, days: i64) -> Date {
        self.today()
            .checked_add(Duration::days(days))
            .unwrap_or(Date::MAX)
    }
}

/// serde for `Option<Date>` as `"YYYY-MM-DD"` or null.
pub mod date_opt {
    use super::*;

    pub fn serialize<S: Serializer>(date: &Option<Date>, s: S) -> Result<S::Ok, S::Error> {
        match date {
            Some(date) => s.serialize_str(&date_string(*date)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Date>, D::Error> {
        match Option::<String>::deserialize(d)? {
            None => Ok(None),
            Some(text) => parse_date(&text)
                .map(Some)
                .ok_or_else(|| serde::de::Error::custom("expected a date as YYYY-MM-DD")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::{date, datetime};

    #[test]
    fn formats_match_the_providers() {
        assert_eq!(
            timestamp(datetime!(2015-12-24 15:51:21.880 UTC)),
            "2015-12-24T15:51:21.880Z"
        );
        assert_eq!(date_string(date!(2024 - 03 - 05)), "2024-03-05");
        assert_eq!(
            http_date(datetime!(1994-11-06 08:49:37 UTC)),
            "Sun, 06 Nov 1994 08:49:37 GMT"
        );
    }

    #[test]
    fn parses_dates_and_rejects_nonsense() {
        assert_eq!(parse_date("2024-02-29"), Some(date!(2024 - 02 - 29)));
        assert_eq!(parse_date("2023-02-29"), None);
        assert_eq!(parse_date("tomorrow"), None);
        assert_eq!(
            parse_instant("2024-01-02T03:04:05Z"),
            Some(datetime!(2024-01-02 03:04:05 UTC))
        );
    }

    #[test]
    fn pinned_clock_reports_the_pinned_date() {
        let mut clock = Clock::default();
        clock.pin(Some(date!(2030 - 01 - 31)));
        assert_eq!(clock.today(), date!(2030 - 01 - 31));
        assert_eq!(clock.days_from_today(1), date!(2030 - 02 - 01));
        clock.pin(None);
        assert_eq!(clock.today(), OffsetDateTime::now_utc().date());
    }
}
