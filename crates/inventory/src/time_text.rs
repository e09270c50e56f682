//! Times as providers and operators write them: a date (`2027-04-30`, the
//! start of that day in UTC), an RFC 3339 time, or Unix seconds.

use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{Date, OffsetDateTime};

/// Unix milliseconds of a date, an RFC 3339 time or Unix seconds.
pub fn parse_time(text: &str) -> Result<i64, String> {
    let text = text.trim();
    if let Ok(t) = OffsetDateTime::parse(text, &Rfc3339) {
        return Ok((t.unix_timestamp_nanos() / 1_000_000) as i64);
    }
    if let Ok(d) = Date::parse(text, format_description!("[year]-[month]-[day]")) {
        return Ok(d.midnight().assume_utc().unix_timestamp() * 1000);
    }
    if let Ok(secs) = text.parse::<i64>() {
        return Ok(secs * 1000);
    }
    Err(format!(
        "`{text}` is not a date (YYYY-MM-DD), an RFC 3339 time or Unix seconds"
    ))
}

/// `YYYY-MM-DD` of a Unix time in milliseconds, in UTC.
pub fn format_date(ms: i64) -> String {
    OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000))
        .map(|t| {
            let d = t.date();
            format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day())
        })
        .unwrap_or_else(|_| format!("{ms} ms"))
}
