//! The IBM Cloud Secrets Manager simulator's true state: the IAM side shared
//! by every instance of an account (API keys, access tokens, the clock) and
//! one instance's secret groups, secrets, versions and locks.

use std::collections::BTreeMap;

use keycycle_secret::SecretValue;
use serde_json::{Map, Value};
use time::{Duration, OffsetDateTime};

use crate::control::Control;
use crate::server::SimServer;

/// IAM access tokens last at most an hour (IAM docs: `expires_in: 3600`).
pub(crate) const DEFAULT_TOKEN_LIFETIME: i64 = 3600;

/// An API key IAM accepts, bound to the identity it acts as.
#[derive(Debug)]
pub(crate) struct ApiKey {
    pub(crate) value: SecretValue,
    pub(crate) iam_id: String,
    pub(crate) account_id: String,
}

/// An access token IAM issued.
#[derive(Debug)]
pub(crate) struct AccessToken {
    pub(crate) value: SecretValue,
    pub(crate) refresh: SecretValue,
    pub(crate) iam_id: String,
    pub(crate) account_id: String,
    pub(crate) expires_at: OffsetDateTime,
}

/// An instance started through the control API, kept serving as long as
/// the account state lives.
#[derive(Debug)]
pub(crate) struct Spawned {
    pub(crate) name: String,
    pub(crate) server: SimServer,
}

/// IAM and the simulated clock, shared by every instance of the account
/// (one IAM serves all Secrets Manager instances, as in IBM Cloud).
#[derive(Debug)]
pub(crate) struct Iam {
    pub(crate) api_keys: Vec<ApiKey>,
    pub(crate) tokens: Vec<AccessToken>,
    /// Added to the real clock: tests move time forward to expire tokens.
    pub(crate) offset: Duration,
    pub(crate) token_lifetime: i64,
    pub(crate) spawned: Vec<Spawned>,
    last_key: u64,
}

impl Default for Iam {
    fn default() -> Iam {
        Iam {
            api_keys: Vec::new(),
            tokens: Vec::new(),
            offset: Duration::ZERO,
            token_lifetime: DEFAULT_TOKEN_LIFETIME,
            spawned: Vec::new(),
            last_key: 0,
        }
    }
}

impl Iam {
    pub(crate) fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc() + self.offset
    }

    pub(crate) fn next_key_number(&mut self) -> u64 {
        self.last_key += 1;
        self.last_key
    }

    /// The identity behind a bearer token that is known and not expired.
    pub(crate) fn caller(&self, bearer: &str) -> Option<(String, String)> {
        let now = self.now();
        self.tokens
            .iter()
            .find(|t| t.value.expose() == bearer)
            .filter(|t| t.expires_at > now)
            .map(|t| (t.iam_id.clone(), t.account_id.clone()))
    }
}

#[derive(Clone, Debug)]
pub(crate) struct Group {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) description: String,
    pub(crate) created_at: OffsetDateTime,
    pub(crate) updated_at: OffsetDateTime,
}

/// What a version holds: an arbitrary payload, or a username_password pair
/// (the username belongs to the secret, the password to the version).
#[derive(Clone, Debug)]
pub(crate) enum Payload {
    Arbitrary(SecretValue),
    Password(SecretValue),
}

impl Payload {
    pub(crate) fn value(&self) -> &SecretValue {
        match self {
            Payload::Arbitrary(v) | Payload::Password(v) => v,
        }
    }
}

#[derive(Clone, Debug)]
pub(crate) struct Lock {
    pub(crate) name: String,
    pub(crate) description: String,
    pub(crate) attributes: Map<String, Value>,
    pub(crate) created_at: OffsetDateTime,
    pub(crate) created_by: String,
}

#[derive(Clone, Debug)]
pub(crate) struct Version {
    pub(crate) id: String,
    pub(crate) created_at: OffsetDateTime,
    pub(crate) created_by: String,
    pub(crate) payload: Payload,
    pub(crate) downloaded: bool,
    pub(crate) custom_metadata: Map<String, Value>,
    pub(crate) locks: Vec<Lock>,
}

#[derive(Clone, Debug)]
pub(crate) struct Secret {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) secret_type: String,
    pub(crate) secret_group_id: String,
    pub(crate) description: String,
    pub(crate) labels: Vec<String>,
    pub(crate) custom_metadata: Map<String, Value>,
    pub(crate) username: Option<String>,
    pub(crate) expiration_date: Option<String>,
    pub(crate) created_by: String,
    pub(crate) created_at: OffsetDateTime,
    pub(crate) updated_at: OffsetDateTime,
    pub(crate) retrieved_at: Option<OffsetDateTime>,
    /// Oldest first: the last is `current`, the one before `previous`.
    pub(crate) versions: Vec<Version>,
}

impl Secret {
    pub(crate) fn locks_total(&self) -> usize {
        self.versions.iter().map(|v| v.locks.len()).sum()
    }

    /// The version an id or alias (`current`, `previous`) names.
    pub(crate) fn version_index(&self, which: &str) -> Option<usize> {
        let n = self.versions.len();
        match which {
            "current" => n.checked_sub(1),
            "previous" => n.checked_sub(2),
            id => self.versions.iter().position(|v| v.id == id),
        }
    }

    /// `current`, `previous` or nothing, as the API names older versions.
    pub(crate) fn alias(&self, index: usize) -> Option<&'static str> {
        let n = self.versions.len();
        if index + 1 == n {
            Some("current")
        } else if index + 2 == n {
            Some("previous")
        } else {
            None
        }
    }
}

/// One Secrets Manager instance.
#[derive(Debug)]
pub(crate) struct Db {
    pub(crate) control: Control,
    pub(crate) instance_id: String,
    pub(crate) region: String,
    /// The account the instance belongs to; tokens of other accounts get 403.
    pub(crate) account_id: String,
    pub(crate) groups: BTreeMap<String, Group>,
    /// Keyed by id.
    pub(crate) secrets: BTreeMap<String, Secret>,
}

impl Db {
    pub(crate) fn new(instance_id: String, account_id: String) -> Db {
        Db {
            control: Control::default(),
            instance_id,
            region: "us-south".into(),
            account_id,
            groups: BTreeMap::new(),
            secrets: BTreeMap::new(),
        }
    }

    pub(crate) fn crn(&self, kind: &str, id: &str) -> String {
        format!(
            "crn:v1:bluemix:public:secrets-manager:{}:a/{}:{}:{kind}:{id}",
            self.region, self.account_id, self.instance_id
        )
    }

    /// Whether `id` names a group: `default` always does.
    pub(crate) fn group_exists(&self, id: &str) -> bool {
        id == "default" || self.groups.contains_key(id)
    }

    /// The id of the group named `name` (`default` for the default group).
    pub(crate) fn group_id_by_name(&self, name: &str) -> Option<String> {
        if name == "default" {
            return Some("default".into());
        }
        self.groups
            .values()
            .find(|g| g.name == name)
            .map(|g| g.id.clone())
    }

    /// The secret with `name` in group `group_id` of `secret_type`.
    pub(crate) fn by_name(&self, group_id: &str, secret_type: &str, name: &str) -> Option<&Secret> {
        self.secrets.values().find(|s| {
            s.secret_group_id == group_id && s.secret_type == secret_type && s.name == name
        })
    }
}

/// A random version 4 UUID, the form Secrets Manager's ids take.
pub(crate) fn uuid() -> String {
    let hex = crate::values::random_hex(16);
    let mut chars: Vec<char> = hex.chars().collect();
    chars[12] = '4';
    chars[16] = ['8', '9', 'a', 'b'][usize::from(chars[16] as u8 % 4)];
    let s: String = chars.into_iter().collect();
    format!(
        "{}-{}-{}-{}-{}",
        &s[0..8],
        &s[8..12],
        &s[12..16],
        &s[16..20],
        &s[20..32]
    )
}
