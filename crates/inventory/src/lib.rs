//! The inventory: every credential an operator looks after, with the
//! runbook that rotates it, its rotation policy and where its expiry comes
//! from; how due each one is (`evaluate`); and the metrics a Prometheus
//! scrape or node_exporter's textfile collector reads (`prometheus`).
//!
//! This crate reads no provider and runs nothing: the CLI reads expiries
//! through plugins and hands them in as an [`ExpiryReading`], so the rules
//! here are plain functions of the config, the recorded state and a clock.

use std::collections::BTreeMap;
use std::fmt;
use std::fmt::Write as _;

use keycycle_store::state::{CredentialRecord, RunState};
use serde::{Deserialize, Serialize};

mod time_text;

pub use time_text::{format_date, parse_time};

/// Days under which a credential is `warning`, unless it says otherwise.
pub const DEFAULT_WARNING_DAYS: u32 = 60;
/// Days under which a credential is `critical` (Signon's own alert fires
/// under 14 days).
pub const DEFAULT_CRITICAL_DAYS: u32 = 14;

const DAY_MS: i64 = 86_400_000;

/// A `[credentials.ID]` section.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialSection {
    /// The runbook that rotates it, by its path in the runbooks folder.
    pub runbook: String,
    /// `--set` parameters of its rotation.
    #[serde(default)]
    pub params: BTreeMap<String, String>,
    /// `--env` of its rotation and of its expiry reads.
    pub env: Option<String>,
    /// Answers to the runbook's prompts, as `--input` takes them
    /// (`@FILE`, `env:VAR`).
    #[serde(default)]
    pub inputs: BTreeMap<String, String>,
    /// Answers from files or variables that are plain text, not secrets
    /// (`--plain-input`).
    #[serde(default)]
    pub plain_inputs: Vec<String>,
    /// The provider, for metrics labels (`gitlab`, `signon`).
    pub provider: Option<String>,
    pub description: Option<String>,
    /// Where the new token goes, for the operator's eyes.
    #[serde(default)]
    pub consumers: Vec<String>,
    /// Parameters that follow a successful rotation, from the runbook's
    /// result: `{ token_id = "new_id" }` makes the next rotation and the
    /// expiry reads (`input = { id = "${token_id}" }`) use the new token.
    #[serde(default)]
    pub follow: BTreeMap<String, String>,
    /// Rotate when the token is older than this.
    pub max_age_days: Option<u32>,
    /// Rotate this many days before it expires.
    pub rotate_before_days: Option<u32>,
    pub warning_days: Option<u32>,
    pub critical_days: Option<u32>,
    pub expiry: Option<ExpirySection>,
}

/// Where a credential's expiry comes from.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "from", rename_all = "snake_case", deny_unknown_fields)]
pub enum ExpirySection {
    /// Read through a plugin operation (GitLab's `expires_at`, GitHub's
    /// expiry header, Zendesk's last use).
    Plugin {
        plugin: String,
        operation: String,
        #[serde(default)]
        input: BTreeMap<String, serde_json::Value>,
        /// A dotted path in the answer to the expiry (a date, a time, or
        /// Unix seconds); none when the provider has no expiry.
        field: Option<String>,
        /// A dotted path to the last use, for idle deactivation.
        last_used_field: Option<String>,
        /// The provider deactivates a token unused this many days
        /// (Zendesk: 30).
        idle_days: Option<u32>,
        /// A date past which no token of this kind works (Zendesk API
        /// tokens: 2027-04-30).
        hard_end: Option<String>,
    },
    /// Recorded when keycycle rotates it: from the runbook's result, or
    /// the provider's fixed lifetime (Signon: 730 days).
    Rotation {
        lifetime_days: Option<u32>,
        /// The field of the runbook's result holding the new expiry.
        result_field: Option<String>,
    },
    /// Entered by hand.
    Manual { date: String },
}

/// A mistake in the inventory, with the credential it is in.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("[credentials.{id}]: {problem}")]
pub struct InventoryError {
    pub id: String,
    pub problem: String,
}

impl CredentialSection {
    /// Checks what can be checked without the rest of the config.
    pub fn validate(&self, id: &str) -> Result<(), InventoryError> {
        let bad = |problem: String| InventoryError {
            id: id.to_owned(),
            problem,
        };
        if id.is_empty()
            || !id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return Err(bad(
                "a credential id is letters, digits, `-`, `_` and `.`".to_owned()
            ));
        }
        if self.runbook.trim().is_empty() {
            return Err(bad("`runbook` is empty".to_owned()));
        }
        let (warning, critical) = (self.warning_days(), self.critical_days());
        if critical > warning {
            return Err(bad(format!(
                "critical_days = {critical} is over warning_days = {warning}; critical must \
                 come later than warning"
            )));
        }
        if self.max_age_days == Some(0) {
            return Err(bad("max_age_days must be above zero".to_owned()));
        }
        match &self.expiry {
            Some(ExpirySection::Manual { date }) => {
                parse_time(date).map_err(|e| bad(format!("expiry date: {e}")))?;
            }
            Some(ExpirySection::Plugin {
                hard_end: Some(date),
                ..
            }) => {
                parse_time(date).map_err(|e| bad(format!("expiry hard_end: {e}")))?;
            }
            Some(ExpirySection::Rotation {
                lifetime_days: None,
                result_field: None,
            }) => {
                return Err(bad(
                    "expiry from rotation needs lifetime_days or result_field".to_owned(),
                ));
            }
            _ => {}
        }
        Ok(())
    }

    pub fn warning_days(&self) -> u32 {
        self.warning_days.unwrap_or(DEFAULT_WARNING_DAYS)
    }

    pub fn critical_days(&self) -> u32 {
        self.critical_days.unwrap_or(DEFAULT_CRITICAL_DAYS)
    }

    /// The plugin its expiry is read through, if any.
    pub fn expiry_plugin(&self) -> Option<&str> {
        match &self.expiry {
            Some(ExpirySection::Plugin { plugin, .. }) => Some(plugin),
            _ => None,
        }
    }

    /// The expiry a successful rotation records, from the runbook's result
    /// and the rotation time.
    pub fn expiry_after_rotation(
        &self,
        result: &serde_json::Value,
        rotated_at: i64,
    ) -> Option<(i64, &'static str)> {
        match &self.expiry {
            Some(ExpirySection::Rotation {
                lifetime_days,
                result_field,
            }) => result_field
                .as_deref()
                .and_then(|f| field(result, f))
                .and_then(|v| time_of(v).ok())
                .map(|t| (t, "rotation"))
                .or_else(|| {
                    lifetime_days.map(|d| (rotated_at + i64::from(d) * DAY_MS, "rotation"))
                }),
            // A plugin read is the truth; the runbook's result is a good
            // first guess until the next check.
            Some(ExpirySection::Plugin { .. }) | None => ["expires_at", "new_expires_at"]
                .iter()
                .find_map(|f| field(result, f))
                .and_then(|v| time_of(v).ok())
                .map(|t| (t, "rotation")),
            Some(ExpirySection::Manual { .. }) => None,
        }
    }
}

impl CredentialSection {
    /// The parameters of its next rotation: its own, with what earlier
    /// rotations changed (`follow`) over them.
    pub fn params(&self, record: Option<&CredentialRecord>) -> BTreeMap<String, String> {
        let mut params = self.params.clone();
        if let Some(r) = record {
            params.extend(r.params.clone());
        }
        params
    }

    /// The parameters a successful rotation's result changes.
    pub fn followed(&self, result: &serde_json::Value) -> BTreeMap<String, String> {
        self.follow
            .iter()
            .filter_map(|(param, path)| {
                let value = match field(result, path)? {
                    serde_json::Value::String(s) => s.clone(),
                    serde_json::Value::Null => return None,
                    other => other.to_string(),
                };
                Some((param.clone(), value))
            })
            .collect()
    }

    /// The expiry read's input, with `"${NAME}"` replaced by parameter
    /// NAME (a number when it is one, as ids are).
    pub fn expiry_input(&self, params: &BTreeMap<String, String>) -> serde_json::Value {
        let Some(ExpirySection::Plugin { input, .. }) = &self.expiry else {
            return serde_json::json!({});
        };
        let fill = |v: &serde_json::Value| match v.as_str().and_then(|s| {
            s.strip_prefix("${")
                .and_then(|rest| rest.strip_suffix('}'))
                .and_then(|name| params.get(name))
        }) {
            Some(value) => value
                .parse::<i64>()
                .map(serde_json::Value::from)
                .unwrap_or_else(|_| serde_json::Value::String(value.clone())),
            None => v.clone(),
        };
        serde_json::Value::Object(input.iter().map(|(k, v)| (k.clone(), fill(v))).collect())
    }
}

/// What a plugin read told of a credential.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExpiryReading {
    pub expires_at: Option<i64>,
    pub last_used_at: Option<i64>,
}

impl ExpiryReading {
    /// Picks the configured fields out of a plugin's answer.
    pub fn from_answer(
        section: &ExpirySection,
        answer: &serde_json::Value,
    ) -> Result<Self, String> {
        let ExpirySection::Plugin {
            field: expiry,
            last_used_field,
            ..
        } = section
        else {
            return Ok(ExpiryReading::default());
        };
        let read = |path: &Option<String>, what: &str| -> Result<Option<i64>, String> {
            match path.as_deref().map(|p| (p, field(answer, p))) {
                None | Some((_, None)) | Some((_, Some(serde_json::Value::Null))) => Ok(None),
                Some((p, Some(v))) => time_of(v)
                    .map(Some)
                    .map_err(|e| format!("{what} `{p}` of the answer: {e}")),
            }
        };
        Ok(ExpiryReading {
            expires_at: read(expiry, "expiry field")?,
            last_used_at: read(last_used_field, "last-use field")?,
        })
    }
}

/// A dotted path into a JSON value: `token.expires_at`, `items.0.id`, or
/// `api_tokens[id=42].last_used` for the element of a list whose `id` is
/// 42 (a list operation answers for every token; the inventory wants one).
fn field<'a>(value: &'a serde_json::Value, path: &str) -> Option<&'a serde_json::Value> {
    path.split('.').try_fold(value, |v, part| {
        let (name, select) = match part.split_once('[') {
            Some((name, rest)) => (name, rest.strip_suffix(']')?.split_once('=')),
            None => (part, None),
        };
        let v = match v {
            serde_json::Value::Object(map) => map.get(name)?,
            serde_json::Value::Array(items) => items.get(name.parse::<usize>().ok()?)?,
            _ => return None,
        };
        match select {
            None => Some(v),
            Some((key, wanted)) => v.as_array()?.iter().find(|item| {
                item.get(key).is_some_and(|k| match k {
                    serde_json::Value::String(s) => s == wanted,
                    serde_json::Value::Number(n) => {
                        wanted.parse::<serde_json::Number>().ok().as_ref() == Some(n)
                    }
                    serde_json::Value::Bool(b) => wanted.parse::<bool>().ok() == Some(*b),
                    _ => false,
                })
            }),
        }
    })
}

fn time_of(value: &serde_json::Value) -> Result<i64, String> {
    match value {
        serde_json::Value::String(s) => parse_time(s),
        // Unix seconds, as most APIs give them.
        serde_json::Value::Number(n) => n
            .as_i64()
            .map(|s| s * 1000)
            .ok_or_else(|| format!("{n} is not a time")),
        other => Err(format!("{other} is not a time")),
    }
}

/// How a credential stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Ok,
    /// Its rotation policy says rotate now; not yet near expiry.
    Due,
    Warning,
    Critical,
    /// No expiry is known and no policy applies.
    Unknown,
    /// Its expiry could not be read.
    Error,
}

impl State {
    pub const ALL: [State; 6] = [
        State::Ok,
        State::Due,
        State::Warning,
        State::Critical,
        State::Unknown,
        State::Error,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            State::Ok => "ok",
            State::Due => "due",
            State::Warning => "warning",
            State::Critical => "critical",
            State::Unknown => "unknown",
            State::Error => "error",
        }
    }

    /// Whether `rotate --due` rotates it.
    pub fn wants_rotation(self) -> bool {
        matches!(self, State::Due | State::Warning | State::Critical)
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The verdict on one credential.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Status {
    pub state: State,
    /// The earliest time it stops working, all causes considered.
    pub expires_at: Option<i64>,
    /// Whole days from now to `expires_at` (negative once past).
    pub days_left: Option<i64>,
    /// When the provider deactivates it if it stays unused.
    pub idle_until: Option<i64>,
    /// Why, in words: which rule decided.
    pub reason: String,
}

/// Decides how due a credential is at `now` (Unix ms), from its section,
/// its recorded state and, when its expiry is read through a plugin, what
/// the read found (`Err`: why the read failed).
pub fn evaluate(
    section: &CredentialSection,
    record: Option<&CredentialRecord>,
    reading: Option<&Result<ExpiryReading, String>>,
    now: i64,
) -> Status {
    if let Some(Err(why)) = reading {
        return Status {
            state: State::Error,
            expires_at: record.and_then(|r| r.expires_at),
            days_left: None,
            idle_until: None,
            reason: format!("its expiry could not be read: {why}"),
        };
    }
    let read = reading.and_then(|r| r.as_ref().ok());
    // Every way it can stop working, the earliest first.
    let mut ends: Vec<(i64, String)> = Vec::new();
    let mut idle_until = None;
    let recorded = record.and_then(|r| r.expires_at);
    match &section.expiry {
        Some(ExpirySection::Manual { date }) => {
            if let Ok(t) = parse_time(date) {
                ends.push((t, "its expiry, entered by hand".to_owned()));
            }
        }
        Some(ExpirySection::Plugin {
            idle_days,
            hard_end,
            ..
        }) => {
            if let Some(t) = read.and_then(|r| r.expires_at).or(recorded) {
                ends.push((t, "its expiry at the provider".to_owned()));
            }
            if let Some(t) = hard_end.as_deref().and_then(|d| parse_time(d).ok()) {
                ends.push((t, "the end of every token of its kind".to_owned()));
            }
            if let Some(days) = idle_days {
                let used = read
                    .and_then(|r| r.last_used_at)
                    .or(record.and_then(|r| r.last_used_at))
                    .or(record.and_then(|r| r.last_rotated_at));
                if let Some(used) = used {
                    let until = used + i64::from(*days) * DAY_MS;
                    idle_until = Some(until);
                    // A token in use moves this date every day: it counts
                    // only once the token has sat unused so long that the
                    // deactivation is as near as the critical threshold.
                    if until - now < i64::from(section.critical_days()) * DAY_MS {
                        ends.push((until, format!("deactivation after {days} days unused")));
                    }
                }
            }
        }
        Some(ExpirySection::Rotation { .. }) | None => {
            if let Some(t) = recorded {
                ends.push((t, "its expiry, recorded at rotation".to_owned()));
            }
        }
    }
    ends.sort();
    let end = ends.first().cloned();
    let days_left = end.as_ref().map(|(t, _)| (t - now).div_euclid(DAY_MS));
    let age_days = record
        .and_then(|r| r.last_rotated_at)
        .map(|t| (now - t).div_euclid(DAY_MS));
    let status = |state, reason: String| Status {
        state,
        expires_at: end.as_ref().map(|(t, _)| *t),
        days_left,
        idle_until,
        reason,
    };
    if let (Some((t, why)), Some(days)) = (&end, days_left) {
        let when = format_date(*t);
        if *t <= now {
            return status(State::Critical, format!("expired on {when} ({why})"));
        }
        if days < i64::from(section.critical_days()) {
            return status(
                State::Critical,
                format!(
                    "{days} days left, until {when} ({why}); critical under {}",
                    section.critical_days()
                ),
            );
        }
        if days < i64::from(section.warning_days()) {
            return status(
                State::Warning,
                format!(
                    "{days} days left, until {when} ({why}); warning under {}",
                    section.warning_days()
                ),
            );
        }
        if let Some(before) = section.rotate_before_days
            && days <= i64::from(before)
        {
            return status(
                State::Due,
                format!("{days} days left, until {when}; rotated {before} days before expiry"),
            );
        }
    }
    if let Some(max) = section.max_age_days {
        match age_days {
            Some(age) if age >= i64::from(max) => {
                return status(
                    State::Due,
                    format!("rotated {age} days ago; rotated every {max} days"),
                );
            }
            // Never rotated by keycycle: its age is unknown, so it is due.
            None => {
                return status(
                    State::Due,
                    format!("never rotated by keycycle; rotated every {max} days"),
                );
            }
            Some(_) => {}
        }
    }
    match (&end, days_left) {
        (Some((t, why)), Some(days)) => status(
            State::Ok,
            format!("{days} days left, until {} ({why})", format_date(*t)),
        ),
        _ => status(
            State::Unknown,
            "no expiry is known and no max_age_days applies".to_owned(),
        ),
    }
}

/// One credential's line in the metrics.
#[derive(Debug, Clone)]
pub struct Metric<'a> {
    pub id: &'a str,
    pub provider: &'a str,
    pub team: &'a str,
    pub status: &'a Status,
    pub record: Option<&'a CredentialRecord>,
}

/// The metrics in the Prometheus text exposition format (version 0.0.4),
/// as the exporter serves them and node_exporter's textfile collector
/// reads them. `checked_at` is when the check ran (Unix ms).
pub fn prometheus(metrics: &[Metric<'_>], checked_at: i64) -> String {
    let mut out = String::new();
    let labels = |m: &Metric<'_>| {
        format!(
            "credential=\"{}\",provider=\"{}\",team=\"{}\"",
            escape(m.id),
            escape(m.provider),
            escape(m.team)
        )
    };
    let mut family = |name: &str, help: &str, kind: &str, rows: Vec<(String, f64)>| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (labels, value) in rows {
            if labels.is_empty() {
                let _ = writeln!(out, "{name} {value}");
            } else {
                let _ = writeln!(out, "{name}{{{labels}}} {value}");
            }
        }
    };
    let secs = |ms: i64| ms as f64 / 1000.0;
    family(
        "keycycle_credential_expiry_timestamp_seconds",
        "When the credential stops working (Unix time), all causes considered.",
        "gauge",
        metrics
            .iter()
            .filter_map(|m| m.status.expires_at.map(|t| (labels(m), secs(t))))
            .collect(),
    );
    family(
        "keycycle_credential_last_rotation_timestamp_seconds",
        "When keycycle last rotated the credential (Unix time).",
        "gauge",
        metrics
            .iter()
            .filter_map(|m| {
                m.record
                    .and_then(|r| r.last_rotated_at)
                    .map(|t| (labels(m), secs(t)))
            })
            .collect(),
    );
    family(
        "keycycle_credential_status",
        "1 for the state the last check found, 0 for the others.",
        "gauge",
        metrics
            .iter()
            .flat_map(|m| {
                State::ALL.iter().map(move |s| {
                    (
                        format!("{},state=\"{s}\"", labels(m)),
                        if *s == m.status.state { 1.0 } else { 0.0 },
                    )
                })
            })
            .collect(),
    );
    family(
        "keycycle_credential_last_run_success",
        "1 if the last rotation run succeeded, 0 if it did not.",
        "gauge",
        metrics
            .iter()
            .filter_map(|m| {
                m.record
                    .and_then(|r| r.last_run_state)
                    .map(|s| (labels(m), if s == RunState::Succeeded { 1.0 } else { 0.0 }))
            })
            .collect(),
    );
    family(
        "keycycle_check_timestamp_seconds",
        "When this check ran (Unix time).",
        "gauge",
        vec![(String::new(), secs(checked_at))],
    );
    out
}

/// A label value as the exposition format writes it.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests;
