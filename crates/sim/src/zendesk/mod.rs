//! The Zendesk simulator, following the provider reference's Zendesk
//! section: API tokens (listed only; created, deactivated and deleted by a
//! person in Admin Center, which the control API plays), OAuth clients and
//! tokens with the `/oauth/tokens` grant endpoint, app installations with
//! secure settings, and webhooks with write-only credentials.
//!
//! Authentication: `Authorization: Basic base64("{email}/token:{api_token}")`
//! or `Authorization: Bearer <oauth access token>`; anything else is 401
//! `{"error":"Couldn't authenticate you"}`. Responses carry `X-Rate-Limit`
//! and `X-Rate-Limit-Remaining`; list endpoints add `ratelimit-*`.
//!
//! OAuth scopes (see [`api::Scope`]): a `GET` needs `read` or
//! `<resource>:read`, anything else `write` or `<resource>:write`, where the
//! resource is `api_tokens`, `oauth` (clients and tokens), `apps`
//! (installations) or `webhooks`. `write` does not imply `read`: the
//! reference does not say it does, so the simulator refuses. API-token
//! callers are not scope-limited. Every endpoint except
//! `GET /api/v2/oauth/tokens/current.json` needs an admin.
//!
//! [`ZendeskState`] is the in-process handle on the true state; the same is
//! served under `/_sim/` (see [`control`]).

mod api;
pub(crate) mod control;
mod model;
mod webhooks;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::middleware::from_fn_with_state;
use axum::response::IntoResponse;
use axum::{Json, Router};
use keycycle_secret::SecretValue;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use time::{Date, OffsetDateTime, Time};

use crate::clock::{date_opt, date_string, timestamp};
use crate::control::{Control, SimState, control_methods};
use crate::error::SimError;
use crate::values::{expose, hex_token, url_safe_token};
use model::{ApiToken, Client, Db, Installation, User, Webhook};

pub use model_api::*;

const PROVIDER: &str = "zendesk";

/// The public seed and state types, kept together for the re-export.
mod model_api {
    use super::*;

    /// A user (agent or admin) to seed.
    #[derive(Clone, Debug, Default, Deserialize)]
    pub struct ZendeskUserSeed {
        pub email: String,
        #[serde(default)]
        pub name: Option<String>,
        /// Admins may use every endpoint the simulator serves.
        #[serde(default)]
        pub admin: bool,
    }

    impl ZendeskUserSeed {
        pub fn admin(email: &str) -> ZendeskUserSeed {
            ZendeskUserSeed {
                email: email.to_owned(),
                name: None,
                admin: true,
            }
        }

        pub fn agent(email: &str) -> ZendeskUserSeed {
            ZendeskUserSeed {
                email: email.to_owned(),
                name: None,
                admin: false,
            }
        }
    }

    /// An API token to seed, as an admin would create it in Admin Center.
    #[derive(Clone, Debug, Default, Deserialize)]
    pub struct ApiTokenSeed {
        /// The creator.
        pub user_id: u64,
        #[serde(default)]
        pub description: String,
        /// The value; 40 random characters when absent.
        #[serde(default, deserialize_with = "expose::deserialize_opt")]
        pub token: Option<SecretValue>,
        /// When it was last used (midnight UTC); `None`: never.
        #[serde(default, with = "date_opt")]
        pub last_used: Option<Date>,
        /// Creation date (midnight UTC); default now.
        #[serde(default, with = "date_opt")]
        pub created_at: Option<Date>,
        #[serde(default)]
        pub inactive: bool,
    }

    impl ApiTokenSeed {
        pub fn new(user_id: u64, description: &str) -> ApiTokenSeed {
            ApiTokenSeed {
                user_id,
                description: description.to_owned(),
                ..ApiTokenSeed::default()
            }
        }

        pub fn value(mut self, value: &str) -> ApiTokenSeed {
            self.token = Some(SecretValue::new(value));
            self
        }
    }

    /// An OAuth client to seed.
    #[derive(Clone, Debug, Default, Deserialize)]
    pub struct OauthClientSeed {
        pub name: String,
        /// The OAuth `client_id`.
        pub identifier: String,
        /// The owner; the user client_credentials tokens act as.
        pub user_id: u64,
        /// `confidential` (default) or `public`.
        #[serde(default)]
        pub kind: Option<String>,
        #[serde(default)]
        pub redirect_uri: Vec<String>,
        /// A fresh 64-hex secret when absent.
        #[serde(default, deserialize_with = "expose::deserialize_opt")]
        pub secret: Option<SecretValue>,
    }

    /// An OAuth access token to seed (no refresh token, no expiry unless set).
    #[derive(Clone, Debug, Default, Deserialize)]
    pub struct OauthTokenSeed {
        /// The client's resource id.
        pub client_id: u64,
        pub user_id: u64,
        #[serde(default)]
        pub scopes: Vec<String>,
        #[serde(default, deserialize_with = "expose::deserialize_opt")]
        pub token: Option<SecretValue>,
    }

    /// An app installation to seed.
    #[derive(Clone, Default, Deserialize)]
    pub struct InstallationSeed {
        pub app_id: u64,
        /// Default `support`.
        #[serde(default)]
        pub product: Option<String>,
        #[serde(default = "yes")]
        pub enabled: bool,
        #[serde(default)]
        pub settings: Map<String, Value>,
        /// Names of settings that are secure: never echoed by the API.
        #[serde(default)]
        pub secure: Vec<String>,
    }

    fn yes() -> bool {
        true
    }

    /// A webhook to seed: the body of `POST /api/v2/webhooks` without the
    /// `webhook` wrapper; method, format and status default to `POST`,
    /// `json` and `active`.
    #[derive(Clone, Default, Deserialize, Serialize)]
    pub struct WebhookSeed {
        pub name: String,
        pub endpoint: String,
        #[serde(default)]
        pub http_method: Option<String>,
        #[serde(default)]
        pub request_format: Option<String>,
        #[serde(default)]
        pub status: Option<String>,
        #[serde(default)]
        pub subscriptions: Vec<String>,
        #[serde(default)]
        pub authentication: Option<Value>,
        #[serde(default)]
        pub description: Option<String>,
    }

    /// What seeding a secret-bearing record created.
    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    pub struct SeededSecret {
        pub id: u64,
        #[serde(
            serialize_with = "expose::serialize",
            deserialize_with = "expose::deserialize"
        )]
        pub value: SecretValue,
    }

    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    pub struct ZendeskUserState {
        pub id: u64,
        pub email: String,
        pub name: String,
        pub admin: bool,
    }

    /// An API token as it truly is.
    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    pub struct ApiTokenState {
        pub id: u64,
        pub description: String,
        pub user_id: u64,
        /// The stored flag (idle deactivation applied).
        pub active: bool,
        /// Whether it authenticates today: active and before the cut-off.
        pub usable: bool,
        pub created_at: String,
        pub last_used: Option<String>,
        #[serde(
            serialize_with = "expose::serialize",
            deserialize_with = "expose::deserialize"
        )]
        pub value: SecretValue,
    }

    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    pub struct OauthClientState {
        pub id: u64,
        pub name: String,
        pub identifier: String,
        pub kind: String,
        pub user_id: u64,
        #[serde(
            serialize_with = "expose::serialize",
            deserialize_with = "expose::deserialize"
        )]
        pub secret: SecretValue,
    }

    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    pub struct OauthTokenState {
        pub id: u64,
        pub client_id: u64,
        pub user_id: u64,
        pub scopes: Vec<String>,
        pub revoked: bool,
        /// Not revoked, not expired, client still there.
        pub usable: bool,
        pub created_at: String,
        pub expires_at: Option<String>,
        pub used_at: Option<String>,
        #[serde(
            serialize_with = "expose::serialize",
            deserialize_with = "expose::deserialize"
        )]
        pub value: SecretValue,
        #[serde(
            serialize_with = "expose::opt::serialize",
            deserialize_with = "expose::deserialize_opt"
        )]
        pub refresh_token: Option<SecretValue>,
    }

    /// An installation with every setting, secure ones included.
    #[derive(Clone, PartialEq, Serialize, Deserialize)]
    pub struct InstallationState {
        pub id: u64,
        pub app_id: u64,
        pub enabled: bool,
        pub settings: Map<String, Value>,
        pub secure: Vec<String>,
    }

    /// A webhook with its true credentials and signing secret.
    #[derive(Clone, PartialEq, Serialize, Deserialize)]
    pub struct WebhookState {
        pub id: String,
        pub name: String,
        pub endpoint: String,
        pub http_method: String,
        pub request_format: String,
        pub status: String,
        pub subscriptions: Vec<String>,
        /// The whole `authentication` object, credentials in clear.
        pub authentication: Option<Value>,
        pub signing_secret: String,
    }

    /// A webhook test call the simulator received instead of making it.
    #[derive(Clone, PartialEq, Serialize, Deserialize)]
    pub struct WebhookTestState {
        pub webhook_id: Option<String>,
        pub endpoint: String,
        pub http_method: String,
        pub request_format: String,
        /// The credentials the call would have carried, in clear.
        pub authentication: Option<Value>,
        /// The status the endpoint answered (as set per URL; default 200).
        pub status: u16,
    }

    /// The whole true state, as `GET /_sim/state` returns it.
    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    pub struct ZendeskSnapshot {
        pub today: String,
        pub users: Vec<ZendeskUserState>,
        pub api_tokens: Vec<ApiTokenState>,
        pub oauth_clients: Vec<OauthClientState>,
        pub oauth_tokens: Vec<OauthTokenState>,
        pub installations: Vec<InstallationState>,
        pub webhooks: Vec<WebhookState>,
        pub webhook_tests: Vec<WebhookTestState>,
    }
}

/// Handle on the Zendesk simulator's true state; clones share it.
#[derive(Clone, Default)]
pub struct ZendeskState {
    inner: Arc<Mutex<Db>>,
}

impl SimState for ZendeskState {
    fn with_control<R>(&self, f: impl FnOnce(&mut Control) -> R) -> R {
        f(&mut self.lock().control)
    }

    /// Zendesk's `{"error", "description"}` shape (the reference lists it
    /// among the body shapes the plugin reads).
    fn error_body(status: axum::http::StatusCode, message: &str) -> Value {
        let error = match status.as_u16() {
            404 => "RecordNotFound",
            503 => "ServiceUnavailable",
            500..=599 => "InternalServerError",
            _ => "InvalidRequest",
        };
        serde_json::json!({ "error": error, "description": message })
    }
}

control_methods!(ZendeskState);

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

fn midnight(date: Date) -> OffsetDateTime {
    date.with_time(Time::MIDNIGHT).assume_utc()
}

impl ZendeskState {
    pub fn new() -> ZendeskState {
        ZendeskState::default()
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Db> {
        // A panicking test thread must not wedge every later request.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn add_user(&self, seed: ZendeskUserSeed) -> Result<u64, SimError> {
        let mut db = self.lock();
        if !seed.email.contains('@') {
            return Err(invalid("email must contain @"));
        }
        if db.user_by_email(&seed.email).is_some() {
            return Err(invalid(format!("email {} is taken", seed.email)));
        }
        let id = db.next_id();
        let name = seed.name.unwrap_or_else(|| seed.email.clone());
        db.users.insert(
            id,
            User {
                id,
                name,
                email: seed.email,
                admin: seed.admin,
            },
        );
        Ok(id)
    }

    /// Creates an API token as an admin would in Admin Center (the API
    /// cannot). Returns its id and value.
    pub fn add_api_token(&self, seed: ApiTokenSeed) -> Result<SeededSecret, SimError> {
        let mut db = self.lock();
        if !db.users.contains_key(&seed.user_id) {
            return Err(unknown("user", seed.user_id));
        }
        // Reference: "Up to 256".
        if db.api_tokens.len() >= 256 {
            return Err(invalid("an account holds at most 256 API tokens"));
        }
        let value = match seed.token {
            Some(v) if db.value_in_use(v.expose()) => {
                return Err(invalid("another token already has this value"));
            }
            Some(v) => v,
            None => url_safe_token("", 40),
        };
        let id = db.next_id();
        let now = db.now();
        let created_at = seed.created_at.map(midnight).unwrap_or(now);
        db.api_tokens.insert(
            id,
            ApiToken {
                id,
                description: seed.description,
                user_id: seed.user_id,
                value: value.clone(),
                active: !seed.inactive,
                created_at,
                updated_at: created_at,
                last_used: seed.last_used.map(midnight),
            },
        );
        Ok(SeededSecret { id, value })
    }

    /// Deactivates an API token, as the operator would in Admin Center.
    pub fn deactivate_api_token(&self, id: u64) -> Result<(), SimError> {
        let mut db = self.lock();
        let now = db.now();
        let token = db
            .api_tokens
            .get_mut(&id)
            .ok_or_else(|| unknown("API token", id))?;
        token.active = false;
        token.updated_at = now;
        Ok(())
    }

    /// Deletes an API token, as the operator would in Admin Center.
    pub fn delete_api_token(&self, id: u64) -> Result<(), SimError> {
        self.lock()
            .api_tokens
            .remove(&id)
            .map(|_| ())
            .ok_or_else(|| unknown("API token", id))
    }

    pub fn add_oauth_client(&self, seed: OauthClientSeed) -> Result<SeededSecret, SimError> {
        let mut db = self.lock();
        if !db.users.contains_key(&seed.user_id) {
            return Err(unknown("user", seed.user_id));
        }
        if seed.identifier.is_empty()
            || db.clients.values().any(|c| c.identifier == seed.identifier)
        {
            return Err(invalid("identifier is empty or taken"));
        }
        let secret = seed.secret.unwrap_or_else(|| hex_token("", 32));
        let id = db.next_id();
        let now = db.now();
        db.clients.insert(
            id,
            Client {
                id,
                name: seed.name,
                identifier: seed.identifier,
                kind: seed.kind.unwrap_or_else(|| "confidential".into()),
                redirect_uri: seed.redirect_uri,
                secret: secret.clone(),
                user_id: seed.user_id,
                created_at: now,
                updated_at: now,
            },
        );
        Ok(SeededSecret { id, value: secret })
    }

    pub fn add_oauth_token(&self, seed: OauthTokenSeed) -> Result<SeededSecret, SimError> {
        let mut db = self.lock();
        if !db.clients.contains_key(&seed.client_id) {
            return Err(unknown("OAuth client", seed.client_id));
        }
        if !db.users.contains_key(&seed.user_id) {
            return Err(unknown("user", seed.user_id));
        }
        if let Some(v) = &seed.token
            && db.value_in_use(v.expose())
        {
            return Err(invalid("another token already has this value"));
        }
        let value = api::insert_oauth_token(
            &mut db,
            seed.client_id,
            seed.user_id,
            seed.scopes,
            seed.token,
            None,
            None,
        );
        Ok(value)
    }

    pub fn add_installation(&self, seed: InstallationSeed) -> Result<u64, SimError> {
        let mut db = self.lock();
        let id = db.next_id();
        let now = db.now();
        db.installations.insert(
            id,
            Installation {
                id,
                app_id: seed.app_id,
                product: seed.product.unwrap_or_else(|| "support".into()),
                enabled: seed.enabled,
                settings: seed.settings,
                secure: seed.secure.into_iter().collect::<BTreeSet<_>>(),
                updated_at: now,
            },
        );
        Ok(id)
    }

    /// Stores a webhook as if an admin created it; returns its id.
    pub fn add_webhook(&self, created_by: u64, seed: WebhookSeed) -> Result<String, SimError> {
        let mut db = self.lock();
        if !db.users.contains_key(&created_by) {
            return Err(unknown("user", created_by));
        }
        // A seed may leave out what a person creating a webhook in Admin
        // Center would not have to choose.
        let seed = WebhookSeed {
            http_method: seed.http_method.or_else(|| Some("POST".into())),
            request_format: seed.request_format.or_else(|| Some("json".into())),
            status: seed.status.or_else(|| Some("active".into())),
            ..seed
        };
        let body = serde_json::to_value(&seed).map_err(|e| invalid(e.to_string()))?;
        webhooks::create(&mut db, created_by, &body).map_err(|e| invalid(e.detail()))
    }

    /// The status the webhook test call reports for `endpoint` (default 200).
    pub fn set_endpoint_status(&self, endpoint: &str, status: u16) {
        self.lock()
            .endpoint_status
            .insert(endpoint.to_owned(), status);
    }

    /// Pins the simulated date (`None` follows the real clock again).
    pub fn set_today(&self, date: Option<Date>) {
        let mut db = self.lock();
        db.clock.pin(date);
        db.sweep();
    }

    pub fn today(&self) -> Date {
        self.lock().clock.today()
    }

    pub fn api_token(&self, id: u64) -> Option<ApiTokenState> {
        self.snapshot().api_tokens.into_iter().find(|t| t.id == id)
    }

    pub fn installation_settings(&self, id: u64) -> Option<Map<String, Value>> {
        self.lock()
            .installations
            .get(&id)
            .map(|i| i.settings.clone())
    }

    pub fn webhook(&self, id: &str) -> Option<WebhookState> {
        self.snapshot().webhooks.into_iter().find(|w| w.id == id)
    }

    pub fn webhook_tests(&self) -> Vec<WebhookTestState> {
        self.snapshot().webhook_tests
    }

    /// The whole true state, secrets included.
    pub fn snapshot(&self) -> ZendeskSnapshot {
        let mut db = self.lock();
        db.sweep();
        let retired = db.api_tokens_retired();
        ZendeskSnapshot {
            today: date_string(db.clock.today()),
            users: db
                .users
                .values()
                .map(|u| ZendeskUserState {
                    id: u.id,
                    email: u.email.clone(),
                    name: u.name.clone(),
                    admin: u.admin,
                })
                .collect(),
            api_tokens: db
                .api_tokens
                .values()
                .map(|t| ApiTokenState {
                    id: t.id,
                    description: t.description.clone(),
                    user_id: t.user_id,
                    active: t.active,
                    usable: t.active && !retired,
                    created_at: timestamp(t.created_at),
                    last_used: t.last_used.map(timestamp),
                    value: t.value.clone(),
                })
                .collect(),
            oauth_clients: db
                .clients
                .values()
                .map(|c| OauthClientState {
                    id: c.id,
                    name: c.name.clone(),
                    identifier: c.identifier.clone(),
                    kind: c.kind.clone(),
                    user_id: c.user_id,
                    secret: c.secret.clone(),
                })
                .collect(),
            oauth_tokens: db
                .oauth_tokens
                .values()
                .map(|t| OauthTokenState {
                    id: t.id,
                    client_id: t.client_id,
                    user_id: t.user_id,
                    scopes: t.scopes.clone(),
                    revoked: t.revoked,
                    usable: db.oauth_usable(t),
                    created_at: timestamp(t.created_at),
                    expires_at: t.expires_at.map(timestamp),
                    used_at: t.used_at.map(timestamp),
                    value: t.value.clone(),
                    refresh_token: t.refresh.clone(),
                })
                .collect(),
            installations: db
                .installations
                .values()
                .map(|i| InstallationState {
                    id: i.id,
                    app_id: i.app_id,
                    enabled: i.enabled,
                    settings: i.settings.clone(),
                    secure: i.secure.iter().cloned().collect(),
                })
                .collect(),
            webhooks: db.webhooks.values().map(webhook_state).collect(),
            webhook_tests: db
                .webhook_tests
                .iter()
                .map(|t| WebhookTestState {
                    webhook_id: t.webhook_id.clone(),
                    endpoint: t.endpoint.clone(),
                    http_method: t.http_method.clone(),
                    request_format: t.request_format.clone(),
                    authentication: t.authentication.clone(),
                    status: t.status,
                })
                .collect(),
        }
    }
}

fn webhook_state(w: &Webhook) -> WebhookState {
    WebhookState {
        id: w.id.clone(),
        name: w.name.clone(),
        endpoint: w.endpoint.clone(),
        http_method: w.http_method.clone(),
        request_format: w.request_format.clone(),
        status: w.status.clone(),
        subscriptions: w.subscriptions.clone(),
        authentication: w.authentication.clone(),
        signing_secret: w.signing_secret.expose().to_owned(),
    }
}

/// The Zendesk simulator's router, control API included.
pub(crate) fn router(state: ZendeskState) -> Router {
    let api = api::routes().merge(webhooks::routes());
    Router::new()
        .merge(api)
        .merge(control::routes())
        .merge(crate::control::routes::<ZendeskState>())
        // Zendesk's usual answer for a path it does not route (observed,
        // not in the reference).
        .fallback(|| async {
            (
                axum::http::StatusCode::NOT_FOUND,
                Json(json!({ "error": "InvalidEndpoint", "description": "Not found" })),
            )
                .into_response()
        })
        .layer(from_fn_with_state(
            state.clone(),
            crate::control::gate::<ZendeskState>,
        ))
        .layer(from_fn_with_state(state.clone(), api::rate_headers))
        .with_state(state)
}

#[cfg(test)]
mod tests;

/// Debug output of the records that hold credentials in plain JSON (app
/// settings, webhook authentication, signing secrets): the shape is shown,
/// never a value, so a failing assertion or a log line cannot leak one.
mod debug {
    use std::fmt;

    use serde_json::{Map, Value};

    use super::{InstallationSeed, InstallationState, WebhookSeed, WebhookState, WebhookTestState};

    const HIDDEN: &str = "<hidden>";

    fn names(settings: &Map<String, Value>) -> Vec<&str> {
        settings.keys().map(String::as_str).collect()
    }

    fn auth_type(auth: &Option<Value>) -> Option<&str> {
        auth.as_ref().map(|a| a["type"].as_str().unwrap_or(HIDDEN))
    }

    impl fmt::Debug for InstallationSeed {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("InstallationSeed")
                .field("app_id", &self.app_id)
                .field("product", &self.product)
                .field("enabled", &self.enabled)
                .field("setting_names", &names(&self.settings))
                .field("secure", &self.secure)
                .finish()
        }
    }

    impl fmt::Debug for InstallationState {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("InstallationState")
                .field("id", &self.id)
                .field("app_id", &self.app_id)
                .field("enabled", &self.enabled)
                .field("setting_names", &names(&self.settings))
                .field("secure", &self.secure)
                .finish()
        }
    }

    impl fmt::Debug for WebhookSeed {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("WebhookSeed")
                .field("name", &self.name)
                .field("endpoint", &self.endpoint)
                .field("status", &self.status)
                .field("subscriptions", &self.subscriptions)
                .field("authentication", &auth_type(&self.authentication))
                .finish_non_exhaustive()
        }
    }

    impl fmt::Debug for WebhookState {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("WebhookState")
                .field("id", &self.id)
                .field("name", &self.name)
                .field("endpoint", &self.endpoint)
                .field("http_method", &self.http_method)
                .field("request_format", &self.request_format)
                .field("status", &self.status)
                .field("subscriptions", &self.subscriptions)
                .field("authentication", &auth_type(&self.authentication))
                .field("signing_secret", &HIDDEN)
                .finish()
        }
    }

    impl fmt::Debug for WebhookTestState {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("WebhookTestState")
                .field("webhook_id", &self.webhook_id)
                .field("endpoint", &self.endpoint)
                .field("http_method", &self.http_method)
                .field("request_format", &self.request_format)
                .field("authentication", &auth_type(&self.authentication))
                .field("status", &self.status)
                .finish()
        }
    }

    #[cfg(test)]
    mod tests {
        use serde_json::json;

        use super::super::*;

        #[test]
        fn debug_output_never_shows_a_credential() {
            let mut settings = Map::new();
            settings.insert("api_token".into(), json!("canary-setting-value"));
            let installation = InstallationState {
                id: 1,
                app_id: 2,
                enabled: true,
                settings,
                secure: vec!["api_token".into()],
            };
            let webhook = WebhookState {
                id: "01J".into(),
                name: "n".into(),
                endpoint: "https://e".into(),
                http_method: "POST".into(),
                request_format: "json".into(),
                status: "active".into(),
                subscriptions: vec![],
                authentication: Some(
                    json!({"type": "bearer_token", "data": {"token": "canary-auth-value"}}),
                ),
                signing_secret: "canary-signing-value".into(),
            };
            let text = format!("{installation:?} {webhook:?} {:?}", webhook.clone());
            for canary in [
                "canary-setting-value",
                "canary-auth-value",
                "canary-signing-value",
            ] {
                assert!(!text.contains(canary), "{canary} in {text}");
            }
            assert!(text.contains("api_token") && text.contains("bearer_token"));
        }
    }
}
