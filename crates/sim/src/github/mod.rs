//! The GitHub simulator, following the provider reference's GitHub section:
//! personal access tokens (made only by a person on the settings page,
//! which the control API plays) checked with `GET /user`, and Actions
//! secrets of repositories, environments and organisations, sealed by the
//! client with each scope's own Curve25519 public key.
//!
//! Authentication: `Authorization: Bearer <token>` (or `token <token>`, the
//! older scheme GitHub still accepts); unknown, revoked or expired tokens get
//! 401 `{"message":"Bad credentials",...}`. Every response carries the
//! `x-ratelimit-*` headers; authenticated ones add `X-OAuth-Scopes` (classic
//! tokens) and `GitHub-Authentication-Token-Expiration` (expiring tokens).
//!
//! Access (see [`api`]): a classic token needs scope `repo` for repository
//! and environment secrets and `admin:org` for organisation secrets; a
//! fine-grained token needs the permission `secrets` (repository),
//! `environments` (environment) or `organization_secrets` (organisation),
//! `read` to read and `write` to change. Missing either is 403. The token's
//! user must also administer the repository or own the organisation, or
//! the resource does not exist for them (404).
//!
//! [`GitHubState`] is the in-process handle on the true state; the same is
//! served under `/_sim/` (see [`control`]).

mod api;
pub(crate) mod control;
mod model;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};

use axum::middleware::from_fn_with_state;
use axum::response::IntoResponse;
use axum::{Json, Router};
use keycycle_secret::SecretValue;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use time::{Date, OffsetDateTime};

use crate::SeededSecret;
use crate::clock::{date_string, parse_instant};
use crate::control::{Control, SimState, control_methods};
use crate::error::SimError;
use crate::values::{alnum_token, expose};
use model::{Db, Org, Repo, Token, User, Vault, VaultKey};

pub use model_api::*;

const PROVIDER: &str = "github";

/// The public seed and state types, kept together for the re-export.
mod model_api {
    use super::*;

    /// A user account to seed.
    #[derive(Clone, Debug, Default, Deserialize)]
    pub struct GitHubUserSeed {
        pub login: String,
        #[serde(default)]
        pub name: Option<String>,
    }

    impl GitHubUserSeed {
        pub fn new(login: &str) -> GitHubUserSeed {
            GitHubUserSeed {
                login: login.to_owned(),
                name: None,
            }
        }
    }

    /// An organisation to seed, with the logins of its owners.
    #[derive(Clone, Debug, Default, Deserialize)]
    pub struct GitHubOrgSeed {
        pub login: String,
        #[serde(default)]
        pub admins: Vec<String>,
    }

    /// A repository to seed. `owner` is a user or organisation login; the
    /// owning user (or the organisation's owners) administer it, and so do
    /// the logins in `admins`.
    #[derive(Clone, Debug, Default, Deserialize)]
    pub struct GitHubRepoSeed {
        pub owner: String,
        pub name: String,
        #[serde(default)]
        pub admins: Vec<String>,
        #[serde(default)]
        pub environments: Vec<String>,
    }

    /// A personal access token as the person would make it on the settings
    /// page (no API creates one: reference, "Manual").
    #[derive(Clone, Debug, Default, Deserialize)]
    pub struct GitHubTokenSeed {
        /// The user the token acts as.
        pub login: String,
        /// The "Note" field.
        #[serde(default)]
        pub note: String,
        /// Classic scopes, such as `repo` or `admin:org`.
        #[serde(default)]
        pub scopes: Vec<String>,
        /// A fine-grained token (`github_pat_`): no scopes, `permissions`
        /// instead.
        #[serde(default)]
        pub fine_grained: bool,
        /// Fine-grained permissions: `secrets`, `environments`,
        /// `organization_secrets` → `read` or `write`.
        #[serde(default)]
        pub permissions: BTreeMap<String, String>,
        /// When it expires (`YYYY-MM-DD` means midnight UTC, or RFC 3339);
        /// `None`: never.
        #[serde(default, deserialize_with = "instant_opt")]
        pub expires_at: Option<OffsetDateTime>,
        /// The value; `ghp_` + 36 characters (or `github_pat_` + 82) when
        /// absent.
        #[serde(default, deserialize_with = "expose::deserialize_opt")]
        pub token: Option<SecretValue>,
    }

    impl GitHubTokenSeed {
        /// A classic token of `login` with `scopes` that does not expire.
        pub fn classic(login: &str, scopes: &[&str]) -> GitHubTokenSeed {
            GitHubTokenSeed {
                login: login.to_owned(),
                scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
                ..GitHubTokenSeed::default()
            }
        }

        pub fn value(mut self, value: &str) -> GitHubTokenSeed {
            self.token = Some(SecretValue::new(value));
            self
        }

        pub fn expires(mut self, at: OffsetDateTime) -> GitHubTokenSeed {
            self.expires_at = Some(at);
            self
        }
    }

    fn instant_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<OffsetDateTime>, D::Error> {
        match Option::<String>::deserialize(d)? {
            None => Ok(None),
            Some(text) => parse_instant(&text).map(Some).ok_or_else(|| {
                serde::de::Error::custom("expected YYYY-MM-DD or an RFC 3339 date-time")
            }),
        }
    }

    /// Where Actions secrets live.
    #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(tag = "scope", rename_all = "snake_case")]
    pub enum SecretScope {
        Repo {
            owner: String,
            repo: String,
        },
        Environment {
            owner: String,
            repo: String,
            environment: String,
        },
        Org {
            org: String,
        },
    }

    impl SecretScope {
        pub fn repo(owner: &str, repo: &str) -> SecretScope {
            SecretScope::Repo {
                owner: owner.to_owned(),
                repo: repo.to_owned(),
            }
        }

        pub fn environment(owner: &str, repo: &str, environment: &str) -> SecretScope {
            SecretScope::Environment {
                owner: owner.to_owned(),
                repo: repo.to_owned(),
                environment: environment.to_owned(),
            }
        }

        pub fn org(org: &str) -> SecretScope {
            SecretScope::Org {
                org: org.to_owned(),
            }
        }
    }

    /// A scope's public key as GitHub serves it.
    #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
    pub struct PublicKeyState {
        pub key_id: String,
        /// base64 of the 32-byte Curve25519 public key.
        pub key: String,
    }

    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    pub struct GitHubUserState {
        pub id: u64,
        pub login: String,
    }

    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    pub struct GitHubOrgState {
        pub id: u64,
        pub login: String,
        pub admins: Vec<String>,
    }

    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    pub struct GitHubRepoState {
        pub id: u64,
        pub owner: String,
        pub name: String,
        pub environments: Vec<String>,
    }

    /// A personal access token as it truly is.
    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    pub struct GitHubTokenState {
        pub id: u64,
        pub login: String,
        pub note: String,
        /// `None` for a fine-grained token.
        pub scopes: Option<Vec<String>>,
        pub permissions: BTreeMap<String, String>,
        pub created_at: String,
        /// RFC 3339, or `None` when it never expires.
        pub expires_at: Option<String>,
        pub revoked: bool,
        /// Whether it authenticates now (not revoked, not expired).
        pub usable: bool,
        #[serde(
            serialize_with = "expose::serialize",
            deserialize_with = "expose::deserialize"
        )]
        pub value: SecretValue,
    }

    /// An Actions secret with the plaintext its sealed box opened to.
    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    pub struct ActionsSecretState {
        #[serde(flatten)]
        pub scope: SecretScope,
        pub name: String,
        #[serde(
            serialize_with = "expose::serialize",
            deserialize_with = "expose::deserialize"
        )]
        pub value: SecretValue,
        pub created_at: String,
        pub updated_at: String,
        pub visibility: Option<String>,
        pub selected_repository_ids: Vec<u64>,
    }

    /// The whole true state, as `GET /_sim/state` returns it.
    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    pub struct GitHubSnapshot {
        pub today: String,
        pub users: Vec<GitHubUserState>,
        pub orgs: Vec<GitHubOrgState>,
        pub repos: Vec<GitHubRepoState>,
        pub tokens: Vec<GitHubTokenState>,
        pub secrets: Vec<ActionsSecretState>,
    }
}

/// Handle on the GitHub simulator's true state; clones share it.
#[derive(Clone, Default)]
pub struct GitHubState {
    inner: Arc<Mutex<Db>>,
}

/// GitHub's error body: `{"message","documentation_url","status"}`, with
/// `status` a string (reference, "Error body").
pub(crate) fn github_error(status: axum::http::StatusCode, message: &str) -> Value {
    serde_json::json!({
        "message": message,
        "documentation_url": "https://docs.github.com/rest",
        "status": status.as_u16().to_string(),
    })
}

impl SimState for GitHubState {
    fn with_control<R>(&self, f: impl FnOnce(&mut Control) -> R) -> R {
        f(&mut self.lock().control)
    }

    fn error_body(status: axum::http::StatusCode, message: &str) -> Value {
        github_error(status, message)
    }
}

control_methods!(GitHubState);

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

/// GitHub logins: alphanumerics and single hyphens, at most 39 characters.
fn valid_login(login: &str) -> bool {
    !login.is_empty()
        && login.len() <= 39
        && login
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !login.starts_with('-')
        && !login.ends_with('-')
        && !login.contains("--")
}

impl GitHubState {
    pub fn new() -> GitHubState {
        GitHubState::default()
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Db> {
        // A panicking test thread must not wedge every later request.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn add_user(&self, seed: GitHubUserSeed) -> Result<u64, SimError> {
        let mut db = self.lock();
        if !valid_login(&seed.login) {
            return Err(invalid(format!("{:?} is not a GitHub login", seed.login)));
        }
        if db.login_taken(&seed.login) {
            return Err(invalid(format!("login {} is taken", seed.login)));
        }
        let id = db.next_id();
        let created_at = db.now();
        db.users.insert(
            id,
            User {
                id,
                login: seed.login,
                name: seed.name,
                created_at,
            },
        );
        Ok(id)
    }

    pub fn add_org(&self, seed: GitHubOrgSeed) -> Result<u64, SimError> {
        let mut db = self.lock();
        if !valid_login(&seed.login) {
            return Err(invalid(format!("{:?} is not a GitHub login", seed.login)));
        }
        if db.login_taken(&seed.login) {
            return Err(invalid(format!("login {} is taken", seed.login)));
        }
        let admins = user_ids(&db, &seed.admins)?;
        let id = db.next_id();
        db.orgs.insert(
            id,
            Org {
                id,
                login: seed.login,
                admins,
            },
        );
        Ok(id)
    }

    /// Adds a repository; returns its id.
    pub fn add_repo(&self, seed: GitHubRepoSeed) -> Result<u64, SimError> {
        let mut db = self.lock();
        let owner = match (db.user_by_login(&seed.owner), db.org_by_login(&seed.owner)) {
            (Some(u), _) => u.login.clone(),
            (None, Some(o)) => o.login.clone(),
            (None, None) => return Err(unknown("user or organisation", &seed.owner)),
        };
        if seed.name.is_empty()
            || !seed
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            return Err(invalid(format!("{:?} is not a repository name", seed.name)));
        }
        if db.repo(&owner, &seed.name).is_some() {
            return Err(invalid(format!("{owner}/{} exists", seed.name)));
        }
        let admins = user_ids(&db, &seed.admins)?;
        let id = db.next_id();
        db.repos.insert(
            id,
            Repo {
                id,
                owner,
                name: seed.name,
                admins,
                environments: seed.environments.into_iter().collect(),
            },
        );
        Ok(id)
    }

    pub fn add_environment(&self, owner: &str, repo: &str, name: &str) -> Result<(), SimError> {
        let mut db = self.lock();
        let id = db
            .repo(owner, repo)
            .map(|r| r.id)
            .ok_or_else(|| unknown("repository", format!("{owner}/{repo}")))?;
        if name.is_empty() || name.len() > 255 {
            return Err(invalid("an environment name has 1 to 255 characters"));
        }
        if let Some(repo) = db.repos.get_mut(&id) {
            repo.environments.insert(name.to_owned());
        }
        Ok(())
    }

    /// Stores a personal access token as the person would have made it;
    /// returns its id and value.
    pub fn add_token(&self, seed: GitHubTokenSeed) -> Result<SeededSecret, SimError> {
        let mut db = self.lock();
        let user_id = db
            .user_by_login(&seed.login)
            .map(|u| u.id)
            .ok_or_else(|| unknown("user", &seed.login))?;
        let value = match seed.token {
            Some(v) if v.expose().is_empty() => return Err(invalid("the token value is empty")),
            Some(v) if db.value_in_use(v.expose()) => {
                return Err(invalid("another token already has this value"));
            }
            Some(v) => v,
            // Classic `ghp_` + 36; fine-grained `github_pat_` + 22 + `_` + 59.
            None if seed.fine_grained => {
                let head = alnum_token("github_pat_", 22);
                let tail = alnum_token("", 59);
                SecretValue::new(format!("{}_{}", head.expose(), tail.expose()))
            }
            None => alnum_token("ghp_", 36),
        };
        let id = db.next_id();
        let created_at = db.now();
        db.tokens.insert(
            id,
            Token {
                id,
                user_id,
                note: seed.note,
                value: value.clone(),
                scopes: (!seed.fine_grained).then_some(seed.scopes),
                permissions: if seed.fine_grained {
                    seed.permissions
                } else {
                    BTreeMap::new()
                },
                expires_at: seed.expires_at,
                revoked: false,
                created_at,
            },
        );
        Ok(SeededSecret { id, value })
    }

    /// Revokes a token, as its owner would on the settings page.
    pub fn revoke_token(&self, id: u64) -> Result<(), SimError> {
        let mut db = self.lock();
        let token = db.tokens.get_mut(&id).ok_or_else(|| unknown("token", id))?;
        token.revoked = true;
        Ok(())
    }

    pub fn token(&self, id: u64) -> Option<GitHubTokenState> {
        self.snapshot().tokens.into_iter().find(|t| t.id == id)
    }

    /// Pins the simulated date (`None` follows the real clock again).
    pub fn set_today(&self, date: Option<Date>) {
        self.lock().clock.pin(date);
    }

    pub fn today(&self) -> Date {
        self.lock().clock.today()
    }

    /// Lowers (or with `None` restores) the hourly request budget of every
    /// user, so a test can exhaust GitHub's primary rate limit.
    pub fn set_hourly_limit(&self, limit: Option<u32>) {
        self.lock().rate.user_limit = limit;
    }

    /// The public key of `scope`, as `GET .../secrets/public-key` serves it.
    pub fn public_key(&self, scope: &SecretScope) -> Result<PublicKeyState, SimError> {
        let mut db = self.lock();
        let key = vault_key(&db, scope)?;
        Ok(api::public_key_of(db.vault(&key)))
    }

    /// Gives `scope` a new key pair, as GitHub does from time to time: the
    /// stored secrets stay, boxes sealed for the old key no longer open.
    pub fn rotate_public_key(&self, scope: &SecretScope) -> Result<PublicKeyState, SimError> {
        let mut db = self.lock();
        let key = vault_key(&db, scope)?;
        let vault = db.vault(&key);
        let fresh = Vault::new();
        vault.key_id = fresh.key_id;
        vault.key = fresh.key;
        Ok(api::public_key_of(vault))
    }

    /// One Actions secret with its plaintext.
    pub fn secret(&self, scope: &SecretScope, name: &str) -> Option<ActionsSecretState> {
        let name = name.to_ascii_uppercase();
        self.snapshot()
            .secrets
            .into_iter()
            .find(|s| s.name == name && same_scope(&s.scope, scope))
    }

    /// The whole true state, secrets' plaintext included.
    pub fn snapshot(&self) -> GitHubSnapshot {
        let db = self.lock();
        let login = |id: &u64| {
            db.users
                .get(id)
                .map(|u| u.login.clone())
                .unwrap_or_default()
        };
        let mut secrets = Vec::new();
        for (key, vault) in &db.vaults {
            let Some(scope) = public_scope(&db, key) else {
                continue;
            };
            for (name, s) in &vault.secrets {
                secrets.push(ActionsSecretState {
                    scope: scope.clone(),
                    name: name.clone(),
                    value: s.value.clone(),
                    created_at: api::iso(s.created_at),
                    updated_at: api::iso(s.updated_at),
                    visibility: s.visibility.clone(),
                    selected_repository_ids: s.selected_repository_ids.clone(),
                });
            }
        }
        GitHubSnapshot {
            today: date_string(db.clock.today()),
            users: db
                .users
                .values()
                .map(|u| GitHubUserState {
                    id: u.id,
                    login: u.login.clone(),
                })
                .collect(),
            orgs: db
                .orgs
                .values()
                .map(|o| GitHubOrgState {
                    id: o.id,
                    login: o.login.clone(),
                    admins: o.admins.iter().map(login).collect(),
                })
                .collect(),
            repos: db
                .repos
                .values()
                .map(|r| GitHubRepoState {
                    id: r.id,
                    owner: r.owner.clone(),
                    name: r.name.clone(),
                    environments: r.environments.iter().cloned().collect(),
                })
                .collect(),
            tokens: db
                .tokens
                .values()
                .map(|t| GitHubTokenState {
                    id: t.id,
                    login: login(&t.user_id),
                    note: t.note.clone(),
                    scopes: t.scopes.clone(),
                    permissions: t.permissions.clone(),
                    created_at: api::iso(t.created_at),
                    expires_at: t.expires_at.map(api::iso),
                    revoked: t.revoked,
                    usable: db.usable(t),
                    value: t.value.clone(),
                })
                .collect(),
            secrets,
        }
    }
}

fn user_ids(db: &Db, logins: &[String]) -> Result<BTreeSet<u64>, SimError> {
    logins
        .iter()
        .map(|l| {
            db.user_by_login(l)
                .map(|u| u.id)
                .ok_or_else(|| unknown("user", l))
        })
        .collect()
}

fn same_scope(a: &SecretScope, b: &SecretScope) -> bool {
    let lower = |s: &SecretScope| match s {
        SecretScope::Repo { owner, repo } => {
            SecretScope::repo(&owner.to_lowercase(), &repo.to_lowercase())
        }
        SecretScope::Environment {
            owner,
            repo,
            environment,
        } => SecretScope::environment(&owner.to_lowercase(), &repo.to_lowercase(), environment),
        SecretScope::Org { org } => SecretScope::org(&org.to_lowercase()),
    };
    lower(a) == lower(b)
}

/// The internal key of a seeded scope.
fn vault_key(db: &Db, scope: &SecretScope) -> Result<VaultKey, SimError> {
    match scope {
        SecretScope::Repo { owner, repo } => db
            .repo(owner, repo)
            .map(|r| VaultKey::Repo(r.id))
            .ok_or_else(|| unknown("repository", format!("{owner}/{repo}"))),
        SecretScope::Environment {
            owner,
            repo,
            environment,
        } => {
            let r = db
                .repo(owner, repo)
                .ok_or_else(|| unknown("repository", format!("{owner}/{repo}")))?;
            if !r.environments.contains(environment) {
                return Err(unknown("environment", environment));
            }
            Ok(VaultKey::Environment(r.id, environment.clone()))
        }
        SecretScope::Org { org } => db
            .org_by_login(org)
            .map(|o| VaultKey::Org(o.id))
            .ok_or_else(|| unknown("organisation", org)),
    }
}

fn public_scope(db: &Db, key: &VaultKey) -> Option<SecretScope> {
    match key {
        VaultKey::Repo(id) => db
            .repos
            .get(id)
            .map(|r| SecretScope::repo(&r.owner, &r.name)),
        VaultKey::Environment(id, env) => db
            .repos
            .get(id)
            .map(|r| SecretScope::environment(&r.owner, &r.name, env)),
        VaultKey::Org(id) => db.orgs.get(id).map(|o| SecretScope::org(&o.login)),
    }
}

/// The GitHub simulator's router, control API included.
pub(crate) fn router(state: GitHubState) -> Router {
    Router::new()
        .merge(api::routes())
        .merge(control::routes())
        .merge(crate::control::routes::<GitHubState>())
        .fallback(|| async {
            let status = axum::http::StatusCode::NOT_FOUND;
            (status, Json(github_error(status, "Not Found"))).into_response()
        })
        .layer(from_fn_with_state(
            state.clone(),
            crate::control::gate::<GitHubState>,
        ))
        .layer(from_fn_with_state(state.clone(), api::token_headers))
        .with_state(state)
}

#[cfg(test)]
mod tests;
