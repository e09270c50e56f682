//! The account's API tokens, read only. No documented endpoint creates,
//! deactivates or deletes them (that is done in Admin Center), and Zendesk
//! is retiring them: from 2026-07-28 tokens unused for 30 days are
//! deactivated, and on 2027-04-30 all stop working.

use keycycle_plugin_sdk::{Error, Value, json};

use crate::api::Api;
use crate::fields;

/// What a listed API token may show. Deliberately a list of what to keep,
/// not of what to drop: the reference has not verified that `token` is
/// masked, and `visible_token` is part of a value.
const KEEP: [&str; 10] = [
    "id",
    "description",
    "active",
    "created_at",
    "updated_at",
    "last_used",
    "user_id",
    "assigned_user_id",
    "user_name",
    "user_email",
];

/// Days without use after which Zendesk deactivates an API token.
const IDLE_DAYS: i64 = 30;

/// The day every remaining API token stops working.
pub(crate) const STOPS_WORKING_ON: &str = "2027-04-30";

/// One listed token, without any part of its value, with the two dates
/// that end it: the idle deactivation (30 days after its last use, or
/// after its creation when never used) and the cut-off. Both are plain
/// dates, so a runbook compares them with `today()` as text.
pub(crate) fn item(value: &Value) -> Value {
    let mut out = fields::pick(value, &KEEP);
    let since = ["last_used", "created_at"]
        .iter()
        .find_map(|key| value.get(*key).and_then(Value::as_str))
        .and_then(|stamp| stamp.get(..10))
        .and_then(Day::parse);
    if let Some(since) = since {
        out["idle_since"] = json!(since.to_string());
        out["idle_deactivation_on"] = json!(since.plus_days(IDLE_DAYS).to_string());
    }
    out["stops_working_on"] = json!(STOPS_WORKING_ON);
    out
}

/// A calendar day, for the few sums the idle rule needs. Counting days
/// from the civil epoch keeps month lengths and leap years right without a
/// clock or a date crate in the plugin.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Day(i64);

impl Day {
    /// `YYYY-MM-DD`, checked.
    fn parse(text: &str) -> Option<Day> {
        let mut parts = text.split('-');
        let (y, m, d) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() || y.len() != 4 || m.len() != 2 || d.len() != 2 {
            return None;
        }
        let (y, m, d): (i64, i64, i64) = (y.parse().ok()?, m.parse().ok()?, d.parse().ok()?);
        if !(1..=12).contains(&m) || d < 1 || d > days_in_month(y, m) {
            return None;
        }
        // Days before 1 March of year y, so the leap day ends a year.
        let (y, m) = if m <= 2 { (y - 1, m + 9) } else { (y, m - 3) };
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let doy = (153 * m + 2) / 5 + d - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        Some(Day(era * 146_097 + doe))
    }

    fn plus_days(self, days: i64) -> Day {
        Day(self.0 + days)
    }
}

impl std::fmt::Display for Day {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let era = self.0.div_euclid(146_097);
        let doe = self.0 - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let d = doy - (153 * mp + 2) / 5 + 1;
        let m = if mp < 10 { mp + 3 } else { mp - 9 };
        let y = yoe + era * 400 + i64::from(m <= 2);
        write!(f, "{y:04}-{m:02}-{d:02}")
    }
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// `GET /api/v2/api_tokens.json?include_users=true` (not paginated). The
/// plugin has no trustworthy clock, so it returns dates, not ages: the
/// runbook compares them with `today()`.
pub(crate) fn list(api: &Api) -> Result<Value, Error> {
    let answer = match api.json(api.request("GET", "/api/v2/api_tokens.json?include_users=true")) {
        Err(Error::Provider {
            status: 404,
            message,
        }) => {
            return Err(Error::provider(
                404,
                format!("{message} (Zendesk answers 404 here when token access is turned off)"),
            ));
        }
        other => other?,
    };
    let tokens = answer
        .get("api_tokens")
        .and_then(Value::as_array)
        .map(|list| list.iter().map(item).collect::<Vec<_>>())
        .unwrap_or_default();
    Ok(json!({ "api_tokens": tokens }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_keep_no_part_of_the_value() {
        let v = item(
            &json!({"id": 1, "description": "ci", "active": true, "token": "abc",
                             "visible_token": "abc", "last_used": null,
                             "created_at": "2025-01-01T00:00:00Z", "user_email": "a@b"}),
        );
        assert_eq!(
            v,
            json!({"id": 1, "description": "ci", "active": true, "last_used": null,
                   "created_at": "2025-01-01T00:00:00Z", "user_email": "a@b",
                   "idle_since": "2025-01-01", "idle_deactivation_on": "2025-01-31",
                   "stops_working_on": "2027-04-30"})
        );
    }

    #[test]
    fn the_idle_deadline_counts_from_the_last_use() {
        let v = item(&json!({"id": 2, "created_at": "2024-01-01T00:00:00Z",
                             "last_used": "2028-02-10T17:03:00Z"}));
        assert_eq!(v["idle_since"], "2028-02-10");
        // 2028 is a leap year: 19 days of February are left, then 11 of March.
        assert_eq!(v["idle_deactivation_on"], "2028-03-11");
    }

    #[test]
    fn days_round_trip_across_months_years_and_leap_days() {
        for (from, days, to) in [
            ("2026-12-15", 30, "2027-01-14"),
            ("2027-02-28", 1, "2027-03-01"),
            ("2024-02-28", 1, "2024-02-29"),
            ("2000-02-28", 1, "2000-02-29"),
            ("2100-02-28", 1, "2100-03-01"),
            ("2026-10-27", 185, "2027-04-30"),
        ] {
            let day = Day::parse(from).unwrap();
            assert_eq!(day.to_string(), from);
            assert_eq!(day.plus_days(days).to_string(), to, "{from} + {days}");
        }
        for bad in [
            "2026-02-29",
            "2026-13-01",
            "2026-1-01",
            "26-01-01",
            "2026-01-01-01",
        ] {
            assert_eq!(Day::parse(bad), None, "{bad}");
        }
    }
}
