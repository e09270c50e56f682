//! The IBM Cloud Secrets Manager v2 simulator, following the provider
//! reference's "IBM Cloud Secrets Manager v2" section: IAM's API key grant,
//! secrets of type `arbitrary` and `username_password` in secret groups,
//! versions with the `current` and `previous` aliases, renames through a
//! merge-patch of the metadata, locks that make a deletion fail with 412,
//! and IBM's error shape.
//!
//! # One server per instance
//!
//! A real instance lives at its own origin,
//! `https://{instance_id}.{region}.secrets-manager.appdomain.cloud`, and
//! one IAM (`https://iam.cloud.ibm.com`) serves every instance of an
//! account. The simulator does the same: each instance is a server of its
//! own (its own port, so its own origin), and instances started from one
//! another share one [`Iam`](model::Iam): API keys, access tokens and the
//! simulated clock. Every server also answers IAM's `POST /identity/token`,
//! so any of them can be given to a client as its `iam_url`.
//! [`IbmSmState::start_instance`] (and `POST /_sim/instances`) starts
//! another instance of the same account.
//!
//! Authentication: `Authorization: Bearer <IAM access token>`; a missing,
//! unknown or expired token gets 401, a token of another account 403.
//!
//! [`IbmSmState`] is the in-process handle on the true state; the same is
//! served under `/_sim/` (see [`control`]).

mod api;
pub(crate) mod control;
mod iam;
mod model;

use std::io;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::Router;
use axum::middleware::from_fn_with_state;
use keycycle_secret::SecretValue;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use time::Duration;

use crate::clock::timestamp;
use crate::control::{Control, SimState, control_methods};
use crate::error::SimError;
use crate::server::SimServer;
use crate::values::{expose, url_safe_token};
use model::{ApiKey, Db, Group, Iam, Lock, Secret, Spawned, Version, uuid};

pub use model_api::*;

const PROVIDER: &str = "ibm-sm";

/// The account every simulated instance and API key belongs to unless a
/// seed names another.
pub const IBM_DEFAULT_ACCOUNT: &str = "5c1e0f2a9b8d4e7fa6b3c2d1e0f9a8b7";

/// The public seed and state types, kept together for the re-export.
mod model_api {
    use super::*;

    /// An API key IAM accepts.
    #[derive(Clone, Debug, Deserialize)]
    pub struct IbmApiKeySeed {
        #[serde(deserialize_with = "expose::deserialize")]
        pub apikey: SecretValue,
        /// Default [`IBM_DEFAULT_ACCOUNT`].
        #[serde(default)]
        pub account_id: Option<String>,
        /// The identity the key acts as; a `ServiceId-...` id when absent.
        #[serde(default)]
        pub iam_id: Option<String>,
    }

    impl IbmApiKeySeed {
        pub fn new(value: &str) -> IbmApiKeySeed {
            IbmApiKeySeed {
                apikey: SecretValue::new(value),
                account_id: None,
                iam_id: None,
            }
        }
    }

    /// A secret group to seed.
    #[derive(Clone, Debug, Default, Deserialize)]
    pub struct IbmGroupSeed {
        pub name: String,
        #[serde(default)]
        pub description: String,
    }

    /// A secret to seed, as `POST /api/v2/secrets` would create it.
    #[derive(Clone, Debug, Default, Deserialize)]
    pub struct IbmSecretSeed {
        /// `arbitrary` (the default) or `username_password`.
        #[serde(default)]
        pub secret_type: Option<String>,
        pub name: String,
        /// A group id, or `default` (the default).
        #[serde(default)]
        pub secret_group_id: Option<String>,
        #[serde(default)]
        pub description: String,
        #[serde(default)]
        pub labels: Vec<String>,
        /// The arbitrary secret's value.
        #[serde(default, deserialize_with = "expose::deserialize_opt")]
        pub payload: Option<SecretValue>,
        #[serde(default)]
        pub username: Option<String>,
        /// Generated when a username_password secret has none.
        #[serde(default, deserialize_with = "expose::deserialize_opt")]
        pub password: Option<SecretValue>,
    }

    impl IbmSecretSeed {
        /// An arbitrary secret in the default group.
        pub fn arbitrary(name: &str, payload: &str) -> IbmSecretSeed {
            IbmSecretSeed {
                name: name.to_owned(),
                payload: Some(SecretValue::new(payload)),
                ..IbmSecretSeed::default()
            }
        }
    }

    /// A lock as it truly is.
    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    pub struct IbmLockState {
        pub name: String,
        pub description: String,
    }

    /// A version with its value.
    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    pub struct IbmVersionState {
        pub id: String,
        /// `current`, `previous` or null.
        pub alias: Option<String>,
        pub created_at: String,
        pub downloaded: bool,
        #[serde(
            serialize_with = "expose::serialize",
            deserialize_with = "expose::deserialize"
        )]
        pub value: SecretValue,
        pub locks: Vec<IbmLockState>,
    }

    /// A secret as it truly is, every version's value included.
    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    pub struct IbmSecretState {
        pub id: String,
        pub name: String,
        pub secret_type: String,
        pub secret_group_id: String,
        pub description: String,
        pub labels: Vec<String>,
        pub custom_metadata: Map<String, Value>,
        pub username: Option<String>,
        pub retrieved_at: Option<String>,
        /// Oldest first.
        pub versions: Vec<IbmVersionState>,
    }

    impl IbmSecretState {
        /// The value of the current version.
        pub fn current_value(&self) -> Option<&SecretValue> {
            self.versions.last().map(|v| &v.value)
        }
    }

    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    pub struct IbmGroupState {
        pub id: String,
        pub name: String,
        pub description: String,
    }

    /// An access token IAM issued.
    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    pub struct IbmTokenState {
        pub iam_id: String,
        pub account_id: String,
        pub expires_at: String,
        pub expired: bool,
        #[serde(
            serialize_with = "expose::serialize",
            deserialize_with = "expose::deserialize"
        )]
        pub value: SecretValue,
        #[serde(
            serialize_with = "expose::serialize",
            deserialize_with = "expose::deserialize"
        )]
        pub refresh_token: SecretValue,
    }

    /// The whole true state of one instance (and of the shared IAM), as
    /// `GET /_sim/state` returns it.
    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    pub struct IbmSmSnapshot {
        pub instance_id: String,
        pub account_id: String,
        pub now: String,
        pub groups: Vec<IbmGroupState>,
        pub secrets: Vec<IbmSecretState>,
        pub tokens: Vec<IbmTokenState>,
    }
}

/// Handle on one simulated instance and its account's IAM; clones share it.
#[derive(Clone)]
pub struct IbmSmState {
    inner: Arc<Mutex<Db>>,
    iam: Arc<Mutex<Iam>>,
}

impl std::fmt::Debug for IbmSmState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IbmSmState")
            .field("instance_id", &self.instance_id())
            .finish_non_exhaustive()
    }
}

impl Default for IbmSmState {
    fn default() -> IbmSmState {
        IbmSmState::new()
    }
}

/// IBM's error body for an injected fault: the API convention the
/// reference gives, `{"errors":[{"code","message","more_info"}],"trace","status_code"}`.
impl SimState for IbmSmState {
    fn with_control<R>(&self, f: impl FnOnce(&mut Control) -> R) -> R {
        f(&mut self.lock().control)
    }

    fn error_body(status: axum::http::StatusCode, message: &str) -> Value {
        api::error_body(status, api::code_for(status), message)
    }
}

control_methods!(IbmSmState);

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

impl IbmSmState {
    /// A new account with one empty instance.
    pub fn new() -> IbmSmState {
        IbmSmState {
            inner: Arc::new(Mutex::new(Db::new(uuid(), IBM_DEFAULT_ACCOUNT.into()))),
            iam: Arc::new(Mutex::new(Iam::default())),
        }
    }

    /// Another empty instance of the same account, sharing IAM and clock.
    pub fn sibling(&self) -> IbmSmState {
        let account = self.lock().account_id.clone();
        IbmSmState {
            inner: Arc::new(Mutex::new(Db::new(uuid(), account))),
            iam: Arc::clone(&self.iam),
        }
    }

    /// Starts another instance of this account on 127.0.0.1:`port` (0 =
    /// any free port).
    pub fn start_instance(&self, port: u16) -> io::Result<(SimServer, IbmSmState)> {
        let state = self.sibling();
        let server = SimServer::spawn(router(state.clone()), port)?;
        Ok((server, state))
    }

    /// Starts another instance that lives as long as the account: what
    /// `POST /_sim/instances` does for a simulator served by `keycycle sim`.
    /// Returns its base URL and instance id.
    pub fn spawn_instance(&self, name: &str) -> io::Result<(String, String)> {
        let (server, state) = self.start_instance(0)?;
        let url = server.base_url.clone();
        let id = state.instance_id();
        self.iam().spawned.push(Spawned {
            name: name.to_owned(),
            server,
        });
        Ok((url, id))
    }

    /// The instances started with [`IbmSmState::spawn_instance`]: name and
    /// base URL.
    pub fn spawned_instances(&self) -> Vec<(String, String)> {
        self.iam()
            .spawned
            .iter()
            .map(|s| (s.name.clone(), s.server.base_url.clone()))
            .collect()
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Db> {
        // A panicking test thread must not wedge every later request.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Never taken while [`IbmSmState::lock`] is held, so the two cannot
    /// deadlock.
    pub(crate) fn iam(&self) -> MutexGuard<'_, Iam> {
        self.iam.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn instance_id(&self) -> String {
        self.lock().instance_id.clone()
    }

    pub(crate) fn now(&self) -> time::OffsetDateTime {
        self.iam().now()
    }

    /// Registers an API key with IAM; returns the IAM id it acts as.
    pub fn add_api_key(&self, seed: IbmApiKeySeed) -> Result<String, SimError> {
        let default_account = self.lock().account_id.clone();
        let mut iam = self.iam();
        if seed.apikey.is_empty() {
            return Err(invalid("an API key cannot be empty"));
        }
        if iam
            .api_keys
            .iter()
            .any(|k| k.value.expose() == seed.apikey.expose())
        {
            return Err(invalid("this API key is already registered"));
        }
        let n = iam.next_key_number();
        let iam_id = seed
            .iam_id
            .unwrap_or_else(|| format!("iam-ServiceId-{:08x}-0000-4000-8000-{n:012x}", n));
        iam.api_keys.push(ApiKey {
            value: seed.apikey,
            iam_id: iam_id.clone(),
            account_id: seed.account_id.unwrap_or(default_account),
        });
        Ok(iam_id)
    }

    /// Creates a secret group; returns its id.
    pub fn add_group(&self, seed: IbmGroupSeed) -> Result<String, SimError> {
        let now = self.now();
        let mut db = self.lock();
        if seed.name.trim().is_empty() || seed.name == "default" {
            return Err(invalid("a group needs a name other than `default`"));
        }
        if db.group_id_by_name(&seed.name).is_some() {
            return Err(invalid(format!("a group named {} exists", seed.name)));
        }
        let id = uuid();
        db.groups.insert(
            id.clone(),
            Group {
                id: id.clone(),
                name: seed.name,
                description: seed.description,
                created_at: now,
                updated_at: now,
            },
        );
        Ok(id)
    }

    /// Stores a secret as if it had been created through the API; returns
    /// its id.
    pub fn add_secret(&self, seed: IbmSecretSeed) -> Result<String, SimError> {
        let now = self.now();
        let mut db = self.lock();
        let fields = api::NewSecret {
            secret_type: seed.secret_type.unwrap_or_else(|| "arbitrary".into()),
            name: seed.name,
            secret_group_id: seed.secret_group_id.unwrap_or_else(|| "default".into()),
            description: seed.description,
            labels: seed.labels,
            custom_metadata: Map::new(),
            version_custom_metadata: Map::new(),
            expiration_date: None,
            payload: seed.payload,
            username: seed.username,
            password: seed.password,
        };
        api::insert_secret(&mut db, fields, "iam-seeded", now)
            .map(|s| s.id.clone())
            .map_err(|e| invalid(e.message))
    }

    /// Puts a lock on a version (`None`: the current one) of a secret, as
    /// an application that uses it would.
    pub fn add_lock(
        &self,
        secret_id: &str,
        version: Option<&str>,
        name: &str,
    ) -> Result<(), SimError> {
        let now = self.now();
        let mut db = self.lock();
        let secret = db
            .secrets
            .get_mut(secret_id)
            .ok_or_else(|| unknown("secret", secret_id))?;
        let index = secret
            .version_index(version.unwrap_or("current"))
            .ok_or_else(|| unknown("secret version", version.unwrap_or("current")))?;
        let locks = &mut secret.versions[index].locks;
        locks.retain(|l| l.name != name);
        locks.push(Lock {
            name: name.to_owned(),
            description: String::new(),
            attributes: Map::new(),
            created_at: now,
            created_by: "iam-seeded".into(),
        });
        Ok(())
    }

    /// Removes every lock of a secret.
    pub fn clear_locks(&self, secret_id: &str) -> Result<(), SimError> {
        let mut db = self.lock();
        let secret = db
            .secrets
            .get_mut(secret_id)
            .ok_or_else(|| unknown("secret", secret_id))?;
        for version in &mut secret.versions {
            version.locks.clear();
        }
        Ok(())
    }

    /// Moves the simulated clock (shared by the account's instances) by
    /// `seconds`, which may be negative.
    pub fn advance_clock(&self, seconds: i64) {
        let mut iam = self.iam();
        iam.offset += Duration::seconds(seconds);
    }

    /// How long access tokens issued from now on last (IAM: 3600 s).
    pub fn set_token_lifetime(&self, seconds: i64) {
        self.iam().token_lifetime = seconds.max(0);
    }

    /// Mints an access token for `apikey` as IAM would; for tests that
    /// call the API without going through IAM.
    pub fn access_token(&self, apikey: &str) -> Option<String> {
        iam::issue(&mut self.iam(), apikey).map(|t| t.0.expose().to_owned())
    }

    pub fn secret(&self, id: &str) -> Option<IbmSecretState> {
        self.snapshot().secrets.into_iter().find(|s| s.id == id)
    }

    /// The secret named `name` of any type and group.
    pub fn secret_named(&self, name: &str) -> Option<IbmSecretState> {
        self.snapshot().secrets.into_iter().find(|s| s.name == name)
    }

    /// The whole true state, values included.
    pub fn snapshot(&self) -> IbmSmSnapshot {
        let (now, tokens) = {
            let iam = self.iam();
            let now = iam.now();
            let tokens = iam
                .tokens
                .iter()
                .map(|t| IbmTokenState {
                    iam_id: t.iam_id.clone(),
                    account_id: t.account_id.clone(),
                    expires_at: timestamp(t.expires_at),
                    expired: t.expires_at <= now,
                    value: t.value.clone(),
                    refresh_token: t.refresh.clone(),
                })
                .collect();
            (now, tokens)
        };
        let db = self.lock();
        IbmSmSnapshot {
            instance_id: db.instance_id.clone(),
            account_id: db.account_id.clone(),
            now: timestamp(now),
            groups: db
                .groups
                .values()
                .map(|g| IbmGroupState {
                    id: g.id.clone(),
                    name: g.name.clone(),
                    description: g.description.clone(),
                })
                .collect(),
            secrets: db.secrets.values().map(secret_state).collect(),
            tokens,
        }
    }
}

fn secret_state(s: &Secret) -> IbmSecretState {
    IbmSecretState {
        id: s.id.clone(),
        name: s.name.clone(),
        secret_type: s.secret_type.clone(),
        secret_group_id: s.secret_group_id.clone(),
        description: s.description.clone(),
        labels: s.labels.clone(),
        custom_metadata: s.custom_metadata.clone(),
        username: s.username.clone(),
        retrieved_at: s.retrieved_at.map(timestamp),
        versions: s
            .versions
            .iter()
            .enumerate()
            .map(|(i, v)| version_state(s, i, v))
            .collect(),
    }
}

fn version_state(s: &Secret, index: usize, v: &Version) -> IbmVersionState {
    IbmVersionState {
        id: v.id.clone(),
        alias: s.alias(index).map(str::to_owned),
        created_at: timestamp(v.created_at),
        downloaded: v.downloaded,
        value: v.payload.value().clone(),
        locks: v
            .locks
            .iter()
            .map(|l| IbmLockState {
                name: l.name.clone(),
                description: l.description.clone(),
            })
            .collect(),
    }
}

/// A generated password: IBM's default policy is 32 characters.
fn generated_password() -> SecretValue {
    url_safe_token("", 32)
}

/// The simulator's router for one instance, IAM and control API included.
pub(crate) fn router(state: IbmSmState) -> Router {
    Router::new()
        .merge(api::routes())
        .merge(iam::routes())
        .merge(control::routes())
        .merge(crate::control::routes::<IbmSmState>())
        .fallback(api::no_route)
        .layer(from_fn_with_state(
            state.clone(),
            crate::control::gate::<IbmSmState>,
        ))
        .with_state(state)
}

#[cfg(test)]
mod tests;
