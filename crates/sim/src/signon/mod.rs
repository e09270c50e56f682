//! The GOV.UK Signon simulator, following the provider reference's Signon
//! section: API users, applications with OAuth ids, and the Doorkeeper
//! access tokens API users hold for applications (two-year life, several
//! unrevoked ones per user and application, `revoked_at`).
//!
//! Signon has no API that creates or revokes an API user's token: a person
//! clicks "Create access token" (the value is shown once) and "Revoke". The
//! control API plays that person ([`SignonState::create_token`],
//! [`SignonState::revoke_token`]); the value is returned by that call and
//! afterwards only in the true state.
//!
//! Served to clients (see [`api`]):
//!
//! | Request | Answer |
//! | --- | --- |
//! | `GET /user.json?client_id=OAUTH_ID` with `Authorization: Bearer` | 200 `{"user":{"uid","name","email","permissions","organisation_slug","organisation_content_id","disabled"}}`; 401 with an empty body when the token is unknown, expired or revoked, when `client_id` is not the token's application, or when the user lacks `signin` on it |
//! | `GET /metrics` | the expiry gauge `signon_api_user_token_expiry_timestamp_seconds{api_user,application}` |
//!
//! Without `client_id` Signon still answers 200, as the reference notes.
//! [`SignonState`] is the in-process handle on the true state; the same is
//! served under `/_sim/` (see [`control`]), including what the
//! `kubernetes:sync_token_secrets` job would write ([`SignonState::sync`])
//! and Signon's own nightly renewal of internal users' tokens
//! ([`SignonState::renew_expiring_internal_tokens`]).

mod api;
mod app;
pub(crate) mod control;
pub use app::{GDS_SSO_CACHE, SignonAppCall, SignonAppServerState, start_signon_app};
mod model;

use std::sync::{Arc, Mutex, MutexGuard};

use axum::middleware::from_fn_with_state;
use axum::{Router, http::StatusCode};
use keycycle_secret::SecretValue;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::{Date, OffsetDateTime};

use crate::clock::{date_opt, timestamp};
use crate::control::{Control, SimState, control_methods};
use crate::error::SimError;
use crate::values::{expose, random_hex, url_safe_token};
use model::{AccessToken, ApiUser, Application, DEFAULT_TOKEN_LIFE_SECS, Db, SIGNIN};

pub(crate) use model::parameterize;

const PROVIDER: &str = "signon";

/// An API user to seed, as an admin would create one.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct SignonUserSeed {
    pub name: String,
    pub email: String,
    #[serde(default)]
    pub organisation_slug: Option<String>,
    #[serde(default)]
    pub organisation_content_id: Option<String>,
    #[serde(default)]
    pub suspended: bool,
}

impl SignonUserSeed {
    pub fn new(name: &str, email: &str) -> SignonUserSeed {
        SignonUserSeed {
            name: name.to_owned(),
            email: email.to_owned(),
            ..SignonUserSeed::default()
        }
    }
}

/// An application (an OAuth client of Signon) to seed.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct SignonAppSeed {
    pub name: String,
    /// Doorkeeper's `uid`, the `client_id` its users send; random when absent.
    #[serde(default)]
    pub oauth_id: Option<String>,
    /// Random when absent.
    #[serde(default, deserialize_with = "expose::deserialize_opt")]
    pub oauth_secret: Option<SecretValue>,
}

/// What the person creating an access token chooses, plus what a test
/// needs to plant an old token.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct SignonTokenSeed {
    pub api_user_id: u64,
    pub application_id: u64,
    /// The value; a fresh Doorkeeper-style value when absent.
    #[serde(default, deserialize_with = "expose::deserialize_opt")]
    pub token: Option<SecretValue>,
    /// The day it was created (its time of day is now's): a token created
    /// two years ago has expired. Default now.
    #[serde(default, with = "date_opt")]
    pub created_on: Option<Date>,
}

impl SignonTokenSeed {
    pub fn new(api_user_id: u64, application_id: u64) -> SignonTokenSeed {
        SignonTokenSeed {
            api_user_id,
            application_id,
            ..SignonTokenSeed::default()
        }
    }

    pub fn value(mut self, value: &str) -> SignonTokenSeed {
        self.token = Some(SecretValue::new(value));
        self
    }

    pub fn created_on(mut self, date: Date) -> SignonTokenSeed {
        self.created_on = Some(date);
        self
    }
}

/// A token as "Create access token" shows it: once.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SignonCreatedToken {
    pub id: u64,
    pub expires_at: String,
    #[serde(
        serialize_with = "expose::serialize",
        deserialize_with = "expose::deserialize"
    )]
    pub token: SecretValue,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SignonUserState {
    pub id: u64,
    pub uid: String,
    pub name: String,
    pub email: String,
    pub suspended: bool,
    /// Permission names per application id.
    pub permissions: std::collections::BTreeMap<u64, Vec<String>>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SignonAppState {
    pub id: u64,
    pub name: String,
    pub oauth_id: String,
    #[serde(
        serialize_with = "expose::serialize",
        deserialize_with = "expose::deserialize"
    )]
    pub oauth_secret: SecretValue,
}

/// An access token as it truly is.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SignonTokenState {
    pub id: u64,
    pub api_user_id: u64,
    pub application_id: u64,
    pub created_at: String,
    pub expires_at: String,
    pub revoked_at: Option<String>,
    /// Neither expired nor revoked now.
    pub accessible: bool,
    #[serde(
        serialize_with = "expose::serialize",
        deserialize_with = "expose::deserialize"
    )]
    pub value: SecretValue,
}

/// One Secret the token sync job would apply: `signon-token-<api user
/// name>-<application name>`, key `bearer_token`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SignonSyncedSecret {
    pub name: String,
    pub api_user_id: u64,
    pub application_id: u64,
    pub token_id: u64,
    /// Whether the chosen token has expired: the job does not look.
    pub expired: bool,
    #[serde(
        serialize_with = "expose::serialize",
        deserialize_with = "expose::deserialize"
    )]
    pub bearer_token: SecretValue,
}

/// The whole true state, as `GET /_sim/state` returns it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SignonSnapshot {
    pub now: String,
    pub api_users: Vec<SignonUserState>,
    pub applications: Vec<SignonAppState>,
    pub tokens: Vec<SignonTokenState>,
}

/// Handle on the Signon simulator's true state; clones share it.
#[derive(Clone, Default)]
pub struct SignonState {
    inner: Arc<Mutex<Db>>,
}

impl SimState for SignonState {
    fn with_control<R>(&self, f: impl FnOnce(&mut Control) -> R) -> R {
        f(&mut self.lock().control)
    }

    /// The reference documents no JSON error shape for `/user.json` (its
    /// refusals have empty bodies); Rails' `{"error"}` is used for
    /// injected faults, the shape Signon's former JSON API used.
    fn error_body(status: StatusCode, message: &str) -> Value {
        let _ = status;
        serde_json::json!({ "error": message })
    }
}

control_methods!(SignonState);

fn unknown(what: &'static str, id: impl ToString) -> SimError {
    SimError::Unknown {
        provider: PROVIDER,
        what,
        id: id.to_string(),
    }
}

fn invalid(reason: impl Into<String>) -> SimError {
    SimError::InvalidSeed {
        provider: PROVIDER,
        reason: reason.into(),
    }
}

/// A random version-4 UUID, as Signon gives users (`SecureRandom.uuid`).
fn uuid() -> String {
    let hex = random_hex(16).into_bytes();
    let mut hex = String::from_utf8(hex).unwrap_or_default();
    // Version 4, variant 10xx.
    hex.replace_range(12..13, "4");
    let variant = u8::from_str_radix(&hex[16..17], 16).unwrap_or(0) & 0x3 | 0x8;
    hex.replace_range(16..17, &format!("{variant:x}"));
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// A Doorkeeper token value: `SecureRandom.urlsafe_base64(32)`, 43
/// URL-safe characters.
fn doorkeeper_value() -> SecretValue {
    url_safe_token("", 43)
}

/// The task's email filter: `/@(alphagov\.co\.uk|publishing\.service\.gov\.uk)$/`.
fn internal_email(email: &str) -> bool {
    email.ends_with("@alphagov.co.uk") || email.ends_with("@publishing.service.gov.uk")
}

/// Rails' `1.month.from_now`: the same day of the next calendar month, the
/// last day of that month when it is shorter.
fn one_month_after(at: OffsetDateTime) -> OffsetDateTime {
    let date = at.date();
    let (year, month) = match date.month() {
        time::Month::December => (date.year() + 1, time::Month::January),
        m => (date.year(), m.next()),
    };
    let day = date.day().min(month.length(year));
    match Date::from_calendar_date(year, month, day) {
        Ok(next) => at.replace_date(next),
        Err(_) => at,
    }
}

impl SignonState {
    pub fn new() -> SignonState {
        SignonState::default()
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Db> {
        // A panicking test thread must not wedge every later request.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn add_api_user(&self, seed: SignonUserSeed) -> Result<u64, SimError> {
        let mut db = self.lock();
        if !seed.email.contains('@') || seed.name.trim().is_empty() {
            return Err(invalid("an API user needs a name and an email with @"));
        }
        if db.users.values().any(|u| u.email == seed.email) {
            return Err(invalid(format!("email {} is taken", seed.email)));
        }
        let id = db.next_id();
        db.users.insert(
            id,
            ApiUser {
                id,
                uid: uuid(),
                name: seed.name,
                email: seed.email,
                organisation_slug: seed.organisation_slug,
                organisation_content_id: seed.organisation_content_id,
                suspended: seed.suspended,
            },
        );
        Ok(id)
    }

    pub fn add_application(&self, seed: SignonAppSeed) -> Result<u64, SimError> {
        let mut db = self.lock();
        if seed.name.trim().is_empty() {
            return Err(invalid("an application needs a name"));
        }
        let oauth_id = seed
            .oauth_id
            .unwrap_or_else(|| doorkeeper_value().expose().to_owned());
        if db.applications.values().any(|a| a.oauth_id == oauth_id) {
            return Err(invalid("oauth_id is taken"));
        }
        let id = db.next_id();
        db.applications.insert(
            id,
            Application {
                id,
                name: seed.name,
                oauth_id,
                oauth_secret: seed.oauth_secret.unwrap_or_else(doorkeeper_value),
            },
        );
        Ok(id)
    }

    /// "Add application token" › application › "Create access token", as
    /// the person in Signon's UI: a two-year token, and `signin` on the
    /// application for the user. The value is in this answer and
    /// afterwards only in the true state.
    pub fn create_token(&self, seed: SignonTokenSeed) -> Result<SignonCreatedToken, SimError> {
        let mut db = self.lock();
        if !db.users.contains_key(&seed.api_user_id) {
            return Err(unknown("API user", seed.api_user_id));
        }
        if !db.applications.contains_key(&seed.application_id) {
            return Err(unknown("application", seed.application_id));
        }
        let value = match seed.token {
            Some(v) if v.expose().is_empty() => return Err(invalid("a token cannot be empty")),
            Some(v) if db.value_in_use(v.expose()) => {
                return Err(match db.token_by_value(v.expose()) {
                    Some(existing) => SimError::DuplicateTokenValue {
                        provider: PROVIDER,
                        existing_id: existing.id,
                    },
                    None => invalid("an application's OAuth secret has this value"),
                });
            }
            Some(v) => v,
            None => doorkeeper_value(),
        };
        let now = db.now();
        let created_at = match seed.created_on {
            Some(date) => now.replace_date(date),
            None => now,
        };
        let id = db.next_id();
        let token = AccessToken {
            id,
            user_id: seed.api_user_id,
            application_id: seed.application_id,
            value: value.clone(),
            created_at,
            expires_in_secs: DEFAULT_TOKEN_LIFE_SECS,
            revoked_at: None,
        };
        let expires_at = timestamp(token.expires_at());
        db.tokens.insert(id, token);
        db.permissions
            .entry((seed.api_user_id, seed.application_id))
            .or_default()
            .insert(SIGNIN.to_owned());
        Ok(SignonCreatedToken {
            id,
            expires_at,
            token: value,
        })
    }

    /// The "Revoke" link on Manage tokens, as the person clicking it: sets
    /// `revoked_at` now. A token already revoked keeps its first time.
    pub fn revoke_token(&self, id: u64) -> Result<(), SimError> {
        let mut db = self.lock();
        let now = db.now();
        let token = db.tokens.get_mut(&id).ok_or_else(|| unknown("token", id))?;
        token.revoked_at.get_or_insert(now);
        Ok(())
    }

    /// Signon's own `access_tokens:renew_expiring_internal_tokens` (the
    /// `auto-rotate-internal-tokens` CronJob): for every token expiring
    /// within a month (expired and revoked ones too: the task filters on
    /// expiry only) of an API user whose email is `@alphagov.co.uk` or
    /// `@publishing.service.gov.uk`, and with no token of the same user and
    /// application expiring later, a new two-year token and `signin`.
    /// Returns the new tokens' ids; their values are only in the true state.
    pub fn renew_expiring_internal_tokens(&self) -> Vec<u64> {
        let mut db = self.lock();
        let now = db.now();
        let horizon = one_month_after(now);
        let candidates: Vec<u64> = db
            .tokens
            .values()
            .filter(|t| t.expires_at() < horizon)
            .map(|t| t.id)
            .collect();
        let mut created = Vec::new();
        for id in candidates {
            let Some(token) = db.tokens.get(&id) else {
                continue;
            };
            let (user_id, app_id, expires_at) =
                (token.user_id, token.application_id, token.expires_at());
            let internal = db
                .users
                .get(&user_id)
                .is_some_and(|u| internal_email(&u.email));
            let newer = db.tokens.values().any(|t| {
                t.user_id == user_id && t.application_id == app_id && t.expires_at() > expires_at
            });
            if !internal || newer {
                continue;
            }
            let new_id = db.next_id();
            db.tokens.insert(
                new_id,
                AccessToken {
                    id: new_id,
                    user_id,
                    application_id: app_id,
                    value: doorkeeper_value(),
                    created_at: now,
                    expires_in_secs: DEFAULT_TOKEN_LIFE_SECS,
                    revoked_at: None,
                },
            );
            db.permissions
                .entry((user_id, app_id))
                .or_default()
                .insert(SIGNIN.to_owned());
            created.push(new_id);
        }
        created
    }

    /// Replaces the user's permissions on the application, as an admin
    /// editing them (an empty list takes `signin` away too).
    pub fn set_permissions(
        &self,
        api_user_id: u64,
        application_id: u64,
        permissions: &[&str],
    ) -> Result<(), SimError> {
        let mut db = self.lock();
        if !db.users.contains_key(&api_user_id) {
            return Err(unknown("API user", api_user_id));
        }
        if !db.applications.contains_key(&application_id) {
            return Err(unknown("application", application_id));
        }
        db.permissions.insert(
            (api_user_id, application_id),
            permissions.iter().map(|p| (*p).to_owned()).collect(),
        );
        Ok(())
    }

    /// Suspends or unsuspends an API user, as an admin would.
    pub fn set_suspended(&self, api_user_id: u64, suspended: bool) -> Result<(), SimError> {
        let mut db = self.lock();
        let user = db
            .users
            .get_mut(&api_user_id)
            .ok_or_else(|| unknown("API user", api_user_id))?;
        user.suspended = suspended;
        Ok(())
    }

    /// Pins the simulated date (`None` follows the real clock again).
    pub fn set_today(&self, date: Option<Date>) {
        self.lock().clock.pin(date);
    }

    pub fn today(&self) -> Date {
        self.lock().clock.today()
    }

    /// Forgets the cached expiry gauge, so `/metrics` computes it now
    /// rather than up to an hour later.
    pub fn clear_metrics_cache(&self) {
        self.lock().metrics_cache = None;
    }

    /// What `kubernetes:sync_token_secrets` would apply now: per
    /// unsuspended API user and application, the unrevoked token with the
    /// latest expiry, even one that has expired (the job filters on "not
    /// revoked" only). Ordered by Secret name.
    pub fn sync(&self) -> Vec<SignonSyncedSecret> {
        let db = self.lock();
        let now = db.now();
        let mut chosen: std::collections::BTreeMap<(u64, u64), &AccessToken> =
            std::collections::BTreeMap::new();
        for token in db.tokens.values().filter(|t| t.revoked_at.is_none()) {
            let Some(user) = db.users.get(&token.user_id) else {
                continue;
            };
            if user.suspended {
                continue;
            }
            let key = (token.user_id, token.application_id);
            let later = chosen
                .get(&key)
                .is_none_or(|best| token.expires_at() > best.expires_at());
            if later {
                chosen.insert(key, token);
            }
        }
        let mut secrets: Vec<SignonSyncedSecret> = chosen
            .into_iter()
            .filter_map(|((user_id, app_id), token)| {
                let user = db.users.get(&user_id)?;
                let app = db.applications.get(&app_id)?;
                Some(SignonSyncedSecret {
                    name: format!(
                        "signon-token-{}-{}",
                        parameterize(&user.name),
                        parameterize(&app.name)
                    ),
                    api_user_id: user_id,
                    application_id: app_id,
                    token_id: token.id,
                    expired: token.expires_at() <= now,
                    bearer_token: token.value.clone(),
                })
            })
            .collect();
        secrets.sort_by(|a, b| a.name.cmp(&b.name));
        secrets
    }

    pub fn token(&self, id: u64) -> Option<SignonTokenState> {
        self.snapshot().tokens.into_iter().find(|t| t.id == id)
    }

    /// The whole true state, secrets included.
    pub fn snapshot(&self) -> SignonSnapshot {
        let db = self.lock();
        let now = db.now();
        SignonSnapshot {
            now: timestamp(now),
            api_users: db
                .users
                .values()
                .map(|u| SignonUserState {
                    id: u.id,
                    uid: u.uid.clone(),
                    name: u.name.clone(),
                    email: u.email.clone(),
                    suspended: u.suspended,
                    permissions: db
                        .applications
                        .keys()
                        .filter(|app| db.permissions.contains_key(&(u.id, **app)))
                        .map(|app| (*app, db.permissions_of(u.id, *app)))
                        .collect(),
                })
                .collect(),
            applications: db
                .applications
                .values()
                .map(|a| SignonAppState {
                    id: a.id,
                    name: a.name.clone(),
                    oauth_id: a.oauth_id.clone(),
                    oauth_secret: a.oauth_secret.clone(),
                })
                .collect(),
            tokens: db
                .tokens
                .values()
                .map(|t| SignonTokenState {
                    id: t.id,
                    api_user_id: t.user_id,
                    application_id: t.application_id,
                    created_at: timestamp(t.created_at),
                    expires_at: timestamp(t.expires_at()),
                    revoked_at: t.revoked_at.map(timestamp),
                    accessible: t.accessible(now),
                    value: t.value.clone(),
                })
                .collect(),
        }
    }
}

/// The Signon simulator's router, control API included.
pub(crate) fn router(state: SignonState) -> Router {
    Router::new()
        .merge(api::routes())
        .merge(control::routes())
        .merge(crate::control::routes::<SignonState>())
        // Rails answers an unrouted path 404; its HTML page is of no use
        // to a client, so the body is left empty.
        .fallback(|| async { StatusCode::NOT_FOUND })
        .layer(from_fn_with_state(
            state.clone(),
            crate::control::gate::<SignonState>,
        ))
        .with_state(state)
}

#[cfg(test)]
mod tests;
