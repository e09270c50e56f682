//! The GitHub simulator's true state: users, organisations, repositories
//! with their environments, personal access tokens, and the Actions
//! secrets of every scope with the Curve25519 key pair that scope seals
//! with and the plaintext each secret opened to.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crypto_box::aead::OsRng;
use keycycle_secret::SecretValue;
use rand::Rng;
use time::OffsetDateTime;

use crate::clock::Clock;
use crate::control::Control;

/// Core requests per hour for a personal access token (rate-limits doc).
pub(crate) const USER_RATE_LIMIT: u32 = 5_000;
/// Requests per hour without (valid) credentials (rate-limits doc).
pub(crate) const ANONYMOUS_RATE_LIMIT: u32 = 60;

#[derive(Clone, Debug)]
pub(crate) struct User {
    pub(crate) id: u64,
    pub(crate) login: String,
    pub(crate) name: Option<String>,
    pub(crate) created_at: OffsetDateTime,
}

#[derive(Clone, Debug)]
pub(crate) struct Org {
    pub(crate) id: u64,
    pub(crate) login: String,
    /// Users who own the organisation: they administer it and its repos.
    pub(crate) admins: BTreeSet<u64>,
}

#[derive(Clone, Debug)]
pub(crate) struct Repo {
    pub(crate) id: u64,
    /// Login of the owning user or organisation.
    pub(crate) owner: String,
    pub(crate) name: String,
    /// Users with admin access besides the owner (and the org's owners).
    pub(crate) admins: BTreeSet<u64>,
    pub(crate) environments: BTreeSet<String>,
}

/// A personal access token as the person made it on the settings page.
#[derive(Clone, Debug)]
pub(crate) struct Token {
    pub(crate) id: u64,
    pub(crate) user_id: u64,
    pub(crate) note: String,
    pub(crate) value: SecretValue,
    /// Classic tokens' scopes; `None` for a fine-grained token.
    pub(crate) scopes: Option<Vec<String>>,
    /// Fine-grained tokens' permissions (`secrets` → `write`, ...).
    pub(crate) permissions: BTreeMap<String, String>,
    pub(crate) expires_at: Option<OffsetDateTime>,
    pub(crate) revoked: bool,
    pub(crate) created_at: OffsetDateTime,
}

/// Where a set of Actions secrets lives, by id: a repository, one of its
/// environments (by name as stored) or an organisation.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum VaultKey {
    Repo(u64),
    Environment(u64, String),
    Org(u64),
}

/// One Actions secret: what the sealed box opened to, and its metadata.
#[derive(Clone, Debug)]
pub(crate) struct Secret {
    pub(crate) value: SecretValue,
    pub(crate) created_at: OffsetDateTime,
    pub(crate) updated_at: OffsetDateTime,
    /// Organisation secrets only: `all`, `private` or `selected`.
    pub(crate) visibility: Option<String>,
    pub(crate) selected_repository_ids: Vec<u64>,
}

/// The key pair of one secrets scope and the secrets stored in it. Each
/// scope has its own key (reference: "Each scope has its own key").
pub(crate) struct Vault {
    pub(crate) key_id: String,
    pub(crate) key: crypto_box::SecretKey,
    /// Keyed by the upper-cased name, as GitHub stores secret names.
    pub(crate) secrets: BTreeMap<String, Secret>,
}

impl fmt::Debug for Vault {
    // The private key never appears, not even masked.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Vault")
            .field("key_id", &self.key_id)
            .field("secrets", &self.secrets)
            .finish_non_exhaustive()
    }
}

impl Vault {
    pub(crate) fn new() -> Vault {
        let mut rng = rand::rng();
        // GitHub's key ids are long decimal strings ("568250167242549743").
        let key_id = format!("{}", rng.random_range(100_000_000_000_000_000u64..u64::MAX));
        Vault {
            key_id,
            key: crypto_box::SecretKey::generate(&mut OsRng),
            secrets: BTreeMap::new(),
        }
    }

    /// The public half, as the 32 raw bytes GitHub serves in base64.
    pub(crate) fn public_key(&self) -> [u8; 32] {
        *self.key.public_key().as_bytes()
    }

    /// Opens a `crypto_box_seal` box made for this scope's public key.
    pub(crate) fn open(&self, sealed: &[u8]) -> Option<Vec<u8>> {
        self.key.unseal(sealed).ok()
    }
}

/// Requests counted in the current hour, per user (`None`: anonymous).
#[derive(Debug, Default)]
pub(crate) struct Rate {
    pub(crate) hour: i64,
    pub(crate) used: BTreeMap<Option<u64>, u32>,
    /// The hourly limit for users, when a test lowered it.
    pub(crate) user_limit: Option<u32>,
}

impl Rate {
    /// Starts a new window when the real clock crossed the hour.
    pub(crate) fn roll(&mut self, now: i64) {
        let hour = now.div_euclid(3600);
        if hour != self.hour {
            self.hour = hour;
            self.used.clear();
        }
    }

    pub(crate) fn limit(&self, user: Option<u64>) -> u32 {
        match user {
            Some(_) => self.user_limit.unwrap_or(USER_RATE_LIMIT),
            None => ANONYMOUS_RATE_LIMIT,
        }
    }

    pub(crate) fn used(&self, user: Option<u64>) -> u32 {
        self.used.get(&user).copied().unwrap_or(0)
    }

    /// Epoch seconds when the current window ends.
    pub(crate) fn reset(&self) -> i64 {
        (self.hour + 1) * 3600
    }
}

#[derive(Debug, Default)]
pub(crate) struct Db {
    pub(crate) control: Control,
    pub(crate) clock: Clock,
    last_id: u64,
    pub(crate) users: BTreeMap<u64, User>,
    pub(crate) orgs: BTreeMap<u64, Org>,
    pub(crate) repos: BTreeMap<u64, Repo>,
    pub(crate) tokens: BTreeMap<u64, Token>,
    pub(crate) vaults: BTreeMap<VaultKey, Vault>,
    pub(crate) rate: Rate,
}

impl Db {
    pub(crate) fn now(&self) -> OffsetDateTime {
        self.clock.now()
    }

    /// One id sequence for users, organisations, repositories and tokens, so
    /// that an id never names two things.
    pub(crate) fn next_id(&mut self) -> u64 {
        self.last_id += 1;
        // Far from 1, so that an id mistaken for a count shows.
        1_000_000 + self.last_id
    }

    pub(crate) fn user_by_login(&self, login: &str) -> Option<&User> {
        self.users
            .values()
            .find(|u| u.login.eq_ignore_ascii_case(login))
    }

    pub(crate) fn org_by_login(&self, login: &str) -> Option<&Org> {
        self.orgs
            .values()
            .find(|o| o.login.eq_ignore_ascii_case(login))
    }

    pub(crate) fn repo(&self, owner: &str, name: &str) -> Option<&Repo> {
        self.repos
            .values()
            .find(|r| r.owner.eq_ignore_ascii_case(owner) && r.name.eq_ignore_ascii_case(name))
    }

    pub(crate) fn login_taken(&self, login: &str) -> bool {
        self.user_by_login(login).is_some() || self.org_by_login(login).is_some()
    }

    /// Whether the token authenticates now: not revoked, not expired.
    pub(crate) fn usable(&self, token: &Token) -> bool {
        !token.revoked && token.expires_at.is_none_or(|at| at > self.now())
    }

    /// The usable token with this value.
    pub(crate) fn token_by_value(&self, value: &str) -> Option<&Token> {
        self.tokens
            .values()
            .find(|t| t.value.expose() == value)
            .filter(|t| self.usable(t))
    }

    pub(crate) fn value_in_use(&self, value: &str) -> bool {
        self.tokens.values().any(|t| t.value.expose() == value)
    }

    /// Whether `user` administers `repo`: its owner, an owner of the
    /// organisation that owns it, or a collaborator with admin access.
    pub(crate) fn repo_admin(&self, user: u64, repo: &Repo) -> bool {
        let owner_user = self
            .user_by_login(&repo.owner)
            .is_some_and(|u| u.id == user);
        let org_owner = self
            .org_by_login(&repo.owner)
            .is_some_and(|o| o.admins.contains(&user));
        owner_user || org_owner || repo.admins.contains(&user)
    }

    /// The vault of `scope`, made with a fresh key pair on first use.
    pub(crate) fn vault(&mut self, key: &VaultKey) -> &mut Vault {
        self.vaults.entry(key.clone()).or_insert_with(Vault::new)
    }
}
