//! The Signon simulator's true state: API users, applications with their
//! OAuth ids, per-application permissions, and Doorkeeper access tokens
//! (value, owner, application, life, `revoked_at`), against a clock whose
//! date tests pin.

use std::collections::{BTreeMap, BTreeSet};

use keycycle_secret::SecretValue;
use time::{Duration, OffsetDateTime};

use crate::clock::Clock;
use crate::control::Control;

/// `ApiUser::DEFAULT_TOKEN_LIFE` is `2.years`; ActiveSupport counts a year
/// as 365.2425 days, so Doorkeeper stores `expires_in` = 63 113 904 s.
pub(crate) const DEFAULT_TOKEN_LIFE_SECS: i64 = 63_113_904;

/// The permission gds-sso needs before it lets a token in.
pub(crate) const SIGNIN: &str = "signin";

/// The expiry gauge is computed at most once an hour (`Rails.cache.fetch
/// ... expires_in: 1.hour` in the collector).
pub(crate) const METRICS_CACHE: Duration = Duration::hours(1);

#[derive(Clone, Debug)]
pub(crate) struct ApiUser {
    pub(crate) id: u64,
    /// A UUID, what `/user.json` calls `uid`.
    pub(crate) uid: String,
    pub(crate) name: String,
    pub(crate) email: String,
    pub(crate) organisation_slug: Option<String>,
    pub(crate) organisation_content_id: Option<String>,
    pub(crate) suspended: bool,
}

#[derive(Clone, Debug)]
pub(crate) struct Application {
    pub(crate) id: u64,
    pub(crate) name: String,
    /// Doorkeeper's `uid`: the `client_id` consuming apps send.
    pub(crate) oauth_id: String,
    pub(crate) oauth_secret: SecretValue,
}

/// A Doorkeeper access token. `Debug` shows `***` for the value.
#[derive(Clone, Debug)]
pub(crate) struct AccessToken {
    pub(crate) id: u64,
    pub(crate) user_id: u64,
    pub(crate) application_id: u64,
    pub(crate) value: SecretValue,
    pub(crate) created_at: OffsetDateTime,
    pub(crate) expires_in_secs: i64,
    pub(crate) revoked_at: Option<OffsetDateTime>,
}

impl AccessToken {
    pub(crate) fn expires_at(&self) -> OffsetDateTime {
        self.created_at + Duration::seconds(self.expires_in_secs)
    }

    /// Doorkeeper's `accessible?`: neither expired nor revoked.
    pub(crate) fn accessible(&self, now: OffsetDateTime) -> bool {
        self.revoked_at.is_none_or(|at| at > now) && self.expires_at() > now
    }
}

#[derive(Debug, Default)]
pub(crate) struct Db {
    pub(crate) control: Control,
    pub(crate) clock: Clock,
    last_id: u64,
    pub(crate) users: BTreeMap<u64, ApiUser>,
    pub(crate) applications: BTreeMap<u64, Application>,
    /// Permission names per (user, application).
    pub(crate) permissions: BTreeMap<(u64, u64), BTreeSet<String>>,
    pub(crate) tokens: BTreeMap<u64, AccessToken>,
    /// The last gauge text and when it was computed.
    pub(crate) metrics_cache: Option<(OffsetDateTime, String)>,
    /// Server applications started through the control API; they live as
    /// long as Signon does.
    pub(crate) server_apps: Vec<crate::SimServer>,
}

impl Db {
    pub(crate) fn now(&self) -> OffsetDateTime {
        self.clock.now()
    }

    /// One id sequence for users, applications and tokens, so an id mixed
    /// up between them names nothing rather than the wrong thing.
    pub(crate) fn next_id(&mut self) -> u64 {
        self.last_id += 1;
        self.last_id
    }

    pub(crate) fn value_in_use(&self, value: &str) -> bool {
        self.tokens.values().any(|t| t.value.expose() == value)
            || self
                .applications
                .values()
                .any(|a| a.oauth_secret.expose() == value)
    }

    pub(crate) fn token_by_value(&self, value: &str) -> Option<&AccessToken> {
        self.tokens.values().find(|t| t.value.expose() == value)
    }

    pub(crate) fn permissions_of(&self, user: u64, app: u64) -> Vec<String> {
        self.permissions
            .get(&(user, app))
            .map(|p| p.iter().cloned().collect())
            .unwrap_or_default()
    }
}

/// Rails' `String#parameterize` for the ASCII names Signon holds:
/// lowercase, every run of other characters one `-`, none at either end.
pub(crate) fn parameterize(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut pending_dash = false;
    for c in name.chars() {
        if c.is_ascii_alphanumeric() || c == '_' {
            if pending_dash && !out.is_empty() {
                out.push('-');
            }
            pending_dash = false;
            out.push(c.to_ascii_lowercase());
        } else {
            pending_dash = true;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameterize_matches_rails_for_signon_names() {
        assert_eq!(parameterize("Publishing API"), "publishing-api");
        assert_eq!(parameterize("Short URL manager"), "short-url-manager");
        assert_eq!(parameterize("  Content  Store!! "), "content-store");
        assert_eq!(parameterize("a_b.c"), "a_b-c");
    }

    #[test]
    fn two_years_is_activesupports_year() {
        assert_eq!(
            DEFAULT_TOKEN_LIFE_SECS,
            (2.0f64 * 365.2425 * 86_400.0) as i64
        );
    }
}
