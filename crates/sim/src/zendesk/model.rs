//! The Zendesk simulator's true state: users, API tokens (with their idle
//! deactivation and the 2027-04-30 cut-off), OAuth clients and tokens, app
//! installations (secure settings included) and webhooks (credentials and
//! signing secrets included), plus the webhook test calls it recorded.

use std::collections::{BTreeMap, BTreeSet};

use keycycle_secret::SecretValue;
use serde_json::{Map, Value};
use time::macros::date;
use time::{Date, Duration, OffsetDateTime};

use crate::clock::Clock;
use crate::control::Control;

/// Migration guide: "on 2027-04-30 all [API tokens] stop working".
pub(crate) const API_TOKEN_CUTOFF: Date = date!(2027 - 04 - 30);
/// Migration guide: tokens unused for 30 days are deactivated.
pub(crate) const API_TOKEN_IDLE_DAYS: i64 = 30;

#[derive(Clone, Debug)]
pub(crate) struct User {
    pub(crate) id: u64,
    pub(crate) name: String,
    pub(crate) email: String,
    pub(crate) admin: bool,
}

#[derive(Clone, Debug)]
pub(crate) struct ApiToken {
    pub(crate) id: u64,
    pub(crate) description: String,
    pub(crate) user_id: u64,
    pub(crate) value: SecretValue,
    pub(crate) active: bool,
    pub(crate) created_at: OffsetDateTime,
    pub(crate) updated_at: OffsetDateTime,
    pub(crate) last_used: Option<OffsetDateTime>,
}

#[derive(Clone, Debug)]
pub(crate) struct Client {
    pub(crate) id: u64,
    pub(crate) name: String,
    pub(crate) identifier: String,
    pub(crate) kind: String,
    pub(crate) redirect_uri: Vec<String>,
    pub(crate) secret: SecretValue,
    pub(crate) user_id: u64,
    pub(crate) created_at: OffsetDateTime,
    pub(crate) updated_at: OffsetDateTime,
}

#[derive(Clone, Debug)]
pub(crate) struct OauthToken {
    pub(crate) id: u64,
    pub(crate) client_id: u64,
    pub(crate) user_id: u64,
    pub(crate) scopes: Vec<String>,
    pub(crate) value: SecretValue,
    pub(crate) refresh: Option<SecretValue>,
    pub(crate) created_at: OffsetDateTime,
    pub(crate) expires_at: Option<OffsetDateTime>,
    pub(crate) refresh_expires_at: Option<OffsetDateTime>,
    pub(crate) used_at: Option<OffsetDateTime>,
    pub(crate) revoked: bool,
}

#[derive(Clone, Debug)]
pub(crate) struct Installation {
    pub(crate) id: u64,
    pub(crate) app_id: u64,
    pub(crate) product: String,
    pub(crate) enabled: bool,
    pub(crate) settings: Map<String, Value>,
    /// Names of the settings declared secure: stored, never echoed.
    pub(crate) secure: BTreeSet<String>,
    pub(crate) updated_at: OffsetDateTime,
}

#[derive(Clone, Debug)]
pub(crate) struct Webhook {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) description: Option<String>,
    pub(crate) endpoint: String,
    pub(crate) http_method: String,
    pub(crate) request_format: String,
    pub(crate) status: String,
    pub(crate) subscriptions: Vec<String>,
    /// The whole `authentication` object, credentials included.
    pub(crate) authentication: Option<Value>,
    pub(crate) custom_headers: Option<Value>,
    pub(crate) signing_secret: SecretValue,
    pub(crate) created_at: OffsetDateTime,
    pub(crate) updated_at: OffsetDateTime,
    pub(crate) created_by: u64,
    pub(crate) updated_by: u64,
}

/// A `POST /api/v2/webhooks/test` call, as the endpoint would have received it.
#[derive(Clone, Debug)]
pub(crate) struct WebhookTest {
    pub(crate) webhook_id: Option<String>,
    pub(crate) endpoint: String,
    pub(crate) http_method: String,
    pub(crate) request_format: String,
    pub(crate) authentication: Option<Value>,
    pub(crate) status: u16,
}

/// Requests seen in the current minute, for the rate-limit headers.
#[derive(Debug, Default)]
pub(crate) struct Rate {
    pub(crate) minute: i64,
    pub(crate) observed: u32,
}

#[derive(Debug, Default)]
pub(crate) struct Db {
    pub(crate) control: Control,
    pub(crate) clock: Clock,
    last_id: u64,
    last_webhook: u64,
    pub(crate) users: BTreeMap<u64, User>,
    pub(crate) api_tokens: BTreeMap<u64, ApiToken>,
    pub(crate) clients: BTreeMap<u64, Client>,
    pub(crate) oauth_tokens: BTreeMap<u64, OauthToken>,
    pub(crate) installations: BTreeMap<u64, Installation>,
    /// Keyed by id; ids sort in creation order, like ULIDs.
    pub(crate) webhooks: BTreeMap<String, Webhook>,
    pub(crate) webhook_tests: Vec<WebhookTest>,
    /// Status the test call reports per endpoint URL (default 200).
    pub(crate) endpoint_status: BTreeMap<String, u16>,
    pub(crate) rate: Rate,
}

const CROCKFORD: &[u8] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

impl Db {
    pub(crate) fn now(&self) -> OffsetDateTime {
        self.clock.now()
    }

    /// One id sequence for every numeric resource, like Zendesk's large ids:
    /// an id never names two things, which catches clients mixing them up.
    pub(crate) fn next_id(&mut self) -> u64 {
        self.last_id += 1;
        // Zendesk ids are large numbers; start far from 1 so that an id
        // mistaken for a count or an index shows.
        360_000_000_000 + self.last_id
    }

    /// A 26-character Crockford base32 id like a ULID (`01H...`): a counter
    /// in the time part keeps creation order, random bits fill the rest.
    pub(crate) fn next_webhook_id(&mut self) -> String {
        use rand::Rng;
        self.last_webhook += 1;
        let mut id = String::from("01J");
        let mut n = self.last_webhook;
        let mut time_part = [b'0'; 7];
        for slot in time_part.iter_mut().rev() {
            *slot = CROCKFORD[(n % 32) as usize];
            n /= 32;
        }
        id.push_str(std::str::from_utf8(&time_part).unwrap_or("0000000"));
        let mut rng = rand::rng();
        for _ in 0..16 {
            id.push(char::from(CROCKFORD[rng.random_range(0..32)]));
        }
        id
    }

    /// Applies the idle rule to every API token: one unused for 30 days
    /// (counted from creation when never used) is deactivated for good, so
    /// moving the clock back later does not revive it.
    pub(crate) fn sweep(&mut self) {
        let today = self.clock.today();
        for token in self.api_tokens.values_mut() {
            let since = token.last_used.unwrap_or(token.created_at).date();
            if token.active && today - since >= Duration::days(API_TOKEN_IDLE_DAYS) {
                token.active = false;
                token.updated_at = self.clock.now();
            }
        }
    }

    /// Whether API token authentication works at all today.
    pub(crate) fn api_tokens_retired(&self) -> bool {
        self.clock.today() >= API_TOKEN_CUTOFF
    }

    pub(crate) fn user_by_email(&self, email: &str) -> Option<&User> {
        self.users
            .values()
            .find(|u| u.email.eq_ignore_ascii_case(email))
    }

    pub(crate) fn value_in_use(&self, value: &str) -> bool {
        self.api_tokens.values().any(|t| t.value.expose() == value)
            || self.oauth_tokens.values().any(|t| {
                t.value.expose() == value || t.refresh.as_ref().is_some_and(|r| r.expose() == value)
            })
    }

    /// Whether an OAuth token can still be used now.
    pub(crate) fn oauth_usable(&self, token: &OauthToken) -> bool {
        !token.revoked
            && self.clients.contains_key(&token.client_id)
            && token.expires_at.is_none_or(|at| at > self.now())
    }
}
