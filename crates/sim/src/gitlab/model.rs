//! The GitLab simulator's true state: users, groups, projects, tokens and
//! their rotation families, trigger tokens, CI/CD variables and webhooks,
//! plus the rules that change it (rotation, reuse detection, expiry).

use std::collections::BTreeMap;

use keycycle_secret::SecretValue;
use serde::{Deserialize, Serialize};
use time::{Date, OffsetDateTime};

use crate::clock::Clock;
use crate::control::Control;

pub(crate) const MAINTAINER: u8 = 40;
pub(crate) const OWNER: u8 = 50;
/// Guest, Planner, Reporter, Developer, Maintainer, Owner.
pub(crate) const ACCESS_LEVELS: [u8; 6] = [10, 15, 20, 30, 40, 50];

/// Scopes a project or group access token may carry
/// (`Gitlab::Auth.resource_bot_scopes`).
pub(crate) const RESOURCE_BOT_SCOPES: [&str; 13] = [
    "api",
    "read_api",
    "read_repository",
    "write_repository",
    "read_registry",
    "write_registry",
    "create_runner",
    "manage_runner",
    "ai_features",
    "k8s_proxy",
    "self_rotate",
    "read_observability",
    "write_observability",
];

/// What a bot user (and so its access token) belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "id", rename_all = "lowercase")]
pub enum Resource {
    Project(u64),
    Group(u64),
}

/// When a revoked token is presented, which requests revoke its family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReuseDetection {
    /// Any API request, as the provider reference and the original feature
    /// (gitlab-org/gitlab MR 125270) describe: even a read with the old token
    /// kills the new one.
    AnyRequest,
    /// Only requests to `.../access_tokens/(id|self)/rotate`, as
    /// `Gitlab::Auth::AuthFinders#access_token_rotation_request?` does since
    /// gitlab-org/gitlab issue 418769.
    RotationRequests,
}

/// The body of a 401 for a revoked or expired token.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthErrorStyle {
    /// `{"message":"401 Unauthorized"}`.
    Message,
    /// `{"error":"invalid_token","error_description":"Token was revoked. ..."}`
    /// as `API::APIGuard#oauth2_bearer_token_error_handler` answers.
    Oauth,
}

/// Behaviour switches of the GitLab simulator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GitLabSettings {
    pub reuse_detection: ReuseDetection,
    pub auth_error_style: AuthErrorStyle,
    /// Requests per minute before the simulator throttles on its own (429).
    pub rate_limit_per_minute: u32,
    /// Expiry of a rotated token when the request names none (GitLab: one
    /// week when expiry is enforced).
    pub rotation_default_days: i64,
    /// The furthest expiry a token may get (GitLab's default maximum
    /// lifetime: 365 days).
    pub max_lifetime_days: i64,
}

impl Default for GitLabSettings {
    fn default() -> GitLabSettings {
        GitLabSettings {
            reuse_detection: ReuseDetection::AnyRequest,
            auth_error_style: AuthErrorStyle::Message,
            rate_limit_per_minute: 2000,
            rotation_default_days: 7,
            max_lifetime_days: 365,
        }
    }
}

pub(crate) struct User {
    pub(crate) id: u64,
    pub(crate) username: String,
    pub(crate) name: String,
    pub(crate) admin: bool,
    pub(crate) bot_of: Option<Resource>,
}

pub(crate) struct Group {
    pub(crate) id: u64,
    pub(crate) path: String,
    pub(crate) name: String,
    pub(crate) members: BTreeMap<u64, u8>,
}

pub(crate) struct Project {
    pub(crate) id: u64,
    pub(crate) path: String,
    pub(crate) name: String,
    pub(crate) group_id: Option<u64>,
    pub(crate) members: BTreeMap<u64, u8>,
}

/// A personal, project or group access token (GitLab stores all three as
/// personal access tokens; project and group ones belong to a bot user).
pub(crate) struct Token {
    pub(crate) id: u64,
    /// The id of the first token of the rotation chain.
    pub(crate) family_id: u64,
    /// The token this one replaced by rotation.
    pub(crate) previous_id: Option<u64>,
    pub(crate) user_id: u64,
    pub(crate) name: String,
    pub(crate) description: Option<String>,
    pub(crate) scopes: Vec<String>,
    pub(crate) created_at: OffsetDateTime,
    pub(crate) last_used_at: Option<OffsetDateTime>,
    pub(crate) expires_at: Option<Date>,
    pub(crate) revoked: bool,
    pub(crate) value: SecretValue,
}

pub(crate) struct Trigger {
    pub(crate) id: u64,
    pub(crate) project_id: u64,
    pub(crate) description: String,
    pub(crate) owner_id: u64,
    pub(crate) token: SecretValue,
    pub(crate) created_at: OffsetDateTime,
    pub(crate) updated_at: OffsetDateTime,
    pub(crate) last_used: Option<OffsetDateTime>,
}

pub(crate) struct Variable {
    pub(crate) project_id: u64,
    pub(crate) key: String,
    pub(crate) value: SecretValue,
    pub(crate) masked: bool,
    pub(crate) protected: bool,
    pub(crate) raw: bool,
    pub(crate) hidden: bool,
    pub(crate) variable_type: String,
    pub(crate) environment_scope: String,
    pub(crate) description: Option<String>,
}

/// Boolean webhook attributes and their defaults when a hook is created.
pub(crate) const HOOK_FLAGS: [(&str, bool); 17] = [
    ("push_events", true),
    ("issues_events", false),
    ("confidential_issues_events", false),
    ("merge_requests_events", false),
    ("tag_push_events", false),
    ("note_events", false),
    ("confidential_note_events", false),
    ("job_events", false),
    ("pipeline_events", false),
    ("wiki_page_events", false),
    ("deployment_events", false),
    ("releases_events", false),
    ("feature_flag_events", false),
    ("repository_update_events", false),
    ("resource_access_token_events", false),
    ("emoji_events", false),
    ("enable_ssl_verification", true),
];

/// The events `POST /projects/:id/hooks/:hook_id/test/:trigger` can send
/// (`API::Hooks::TestHooks`, `TestHooks::ProjectService`).
pub(crate) const HOOK_TEST_TRIGGERS: [&str; 14] = [
    "push_events",
    "tag_push_events",
    "issues_events",
    "confidential_issues_events",
    "note_events",
    "merge_requests_events",
    "job_events",
    "pipeline_events",
    "wiki_page_events",
    "deployment_events",
    "feature_flag_events",
    "releases_events",
    "emoji_events",
    "resource_access_token_events",
];

/// Test calls GitLab allows per hook and minute (`project_testing_hook` in
/// `Gitlab::ApplicationRateLimiter`, scoped to the hook).
pub(crate) const HOOK_TESTS_PER_MINUTE: usize = 5;

#[derive(Clone)]
pub(crate) struct Hook {
    pub(crate) id: u64,
    pub(crate) project_id: u64,
    pub(crate) url: String,
    /// The secret token sent as `X-Gitlab-Token`; `None` when unset.
    pub(crate) token: Option<SecretValue>,
    pub(crate) name: Option<String>,
    pub(crate) description: Option<String>,
    pub(crate) flags: BTreeMap<String, bool>,
    pub(crate) push_events_branch_filter: Option<String>,
    pub(crate) branch_filter_strategy: String,
    pub(crate) custom_webhook_template: Option<String>,
    /// Masked parts of the URL (`{name}` in `url`): GitLab returns only the
    /// keys, so a copy of the hook cannot carry the values.
    pub(crate) url_variables: BTreeMap<String, SecretValue>,
    /// Extra request headers: GitLab returns only the keys.
    pub(crate) custom_headers: BTreeMap<String, SecretValue>,
    pub(crate) created_at: OffsetDateTime,
}

/// A test delivery GitLab would have made, recorded instead of sent.
#[derive(Clone)]
pub(crate) struct HookTest {
    pub(crate) hook_id: u64,
    pub(crate) project_id: u64,
    pub(crate) url: String,
    pub(crate) trigger: String,
    /// The `X-Gitlab-Token` the delivery would carry.
    pub(crate) token: Option<SecretValue>,
    /// What the receiving endpoint answered (set per URL; default 200).
    pub(crate) status: u16,
    pub(crate) at: OffsetDateTime,
}

/// What a receiving endpoint answers to a delivery.
#[derive(Clone)]
pub(crate) struct EndpointAnswer {
    /// 0 means nothing answered (connection refused).
    pub(crate) status: u16,
    pub(crate) body: String,
}

pub(crate) struct Pipeline {
    pub(crate) id: u64,
    pub(crate) project_id: u64,
    pub(crate) trigger_id: u64,
    pub(crate) ref_name: String,
    pub(crate) created_at: OffsetDateTime,
}

/// Where a rotated token comes from.
#[derive(Clone, Copy)]
pub(crate) struct Lineage {
    pub(crate) previous_id: u64,
    pub(crate) family_id: u64,
}

/// Last id handed out, per table (GitLab numbers each table on its own).
#[derive(Default)]
pub(crate) struct Ids {
    user: u64,
    group: u64,
    project: u64,
    token: u64,
    trigger: u64,
    hook: u64,
    pipeline: u64,
}

macro_rules! next_id {
    ($($field:ident),*) => {
        impl Ids {
            $(pub(crate) fn $field(&mut self) -> u64 {
                self.$field += 1;
                self.$field
            })*
        }
    };
}
next_id!(user, group, project, token, trigger, hook, pipeline);

/// Requests counted in the current minute, for the RateLimit-* headers.
#[derive(Default)]
pub(crate) struct RateWindow {
    pub(crate) minute: i64,
    pub(crate) observed: u32,
}

#[derive(Default)]
pub(crate) struct Db {
    pub(crate) users: BTreeMap<u64, User>,
    pub(crate) groups: BTreeMap<u64, Group>,
    pub(crate) projects: BTreeMap<u64, Project>,
    pub(crate) tokens: BTreeMap<u64, Token>,
    pub(crate) triggers: BTreeMap<u64, Trigger>,
    pub(crate) variables: Vec<Variable>,
    pub(crate) hooks: BTreeMap<u64, Hook>,
    pub(crate) hook_tests: Vec<HookTest>,
    /// What each receiving URL answers to a test delivery (default 200).
    pub(crate) endpoints: BTreeMap<String, EndpointAnswer>,
    pub(crate) pipelines: Vec<Pipeline>,
    pub(crate) ids: Ids,
    pub(crate) clock: Clock,
    pub(crate) settings: GitLabSettings,
    pub(crate) rate: RateWindow,
    pub(crate) control: Control,
}

impl Db {
    pub(crate) fn now(&self) -> OffsetDateTime {
        self.clock.now()
    }

    pub(crate) fn today(&self) -> Date {
        self.clock.today()
    }

    /// Tokens expire at 00:00 UTC on their `expires_at` date.
    pub(crate) fn expired(&self, token: &Token) -> bool {
        token.expires_at.is_some_and(|d| d <= self.today())
    }

    pub(crate) fn active(&self, token: &Token) -> bool {
        !token.revoked && !self.expired(token)
    }

    pub(crate) fn token_by_value(&self, value: &str) -> Option<u64> {
        self.tokens
            .values()
            .find(|t| t.value.expose() == value)
            .map(|t| t.id)
    }

    /// Whether any token or trigger already has this value.
    pub(crate) fn value_in_use(&self, value: &str) -> bool {
        self.token_by_value(value).is_some()
            || self.triggers.values().any(|t| t.token.expose() == value)
    }

    /// The bot resource behind token `id`, if it is a project or group token.
    pub(crate) fn resource_of(&self, token: &Token) -> Option<Resource> {
        self.users.get(&token.user_id).and_then(|u| u.bot_of)
    }

    /// A bot token's access level: its bot user's membership level.
    pub(crate) fn token_access_level(&self, token: &Token) -> Option<u8> {
        match self.resource_of(token)? {
            Resource::Project(pid) => self
                .projects
                .get(&pid)?
                .members
                .get(&token.user_id)
                .copied(),
            Resource::Group(gid) => self.groups.get(&gid)?.members.get(&token.user_id).copied(),
        }
    }

    /// The user's effective level in a project: direct membership or
    /// membership of the project's group, whichever is higher. Admins act
    /// as owners.
    pub(crate) fn project_level(&self, user_id: u64, project_id: u64) -> Option<u8> {
        let user = self.users.get(&user_id)?;
        let project = self.projects.get(&project_id)?;
        if user.admin {
            return Some(OWNER);
        }
        let direct = project.members.get(&user_id).copied();
        let inherited = project
            .group_id
            .and_then(|g| self.groups.get(&g))
            .and_then(|g| g.members.get(&user_id).copied());
        direct.max(inherited)
    }

    pub(crate) fn group_level(&self, user_id: u64, group_id: u64) -> Option<u8> {
        let user = self.users.get(&user_id)?;
        let group = self.groups.get(&group_id)?;
        if user.admin {
            return Some(OWNER);
        }
        group.members.get(&user_id).copied()
    }

    pub(crate) fn resource_level(&self, user_id: u64, resource: Resource) -> Option<u8> {
        match resource {
            Resource::Project(pid) => self.project_level(user_id, pid),
            Resource::Group(gid) => self.group_level(user_id, gid),
        }
    }

    /// Revokes every active token rotated, directly or not, from token `id`.
    /// This is GitLab's reuse detection (`PersonalAccessTokens::
    /// RevokeTokenFamilyService`, which walks `previous_personal_access_token_id`).
    pub(crate) fn revoke_descendants(&mut self, id: u64) {
        let mut frontier = vec![id];
        while let Some(parent) = frontier.pop() {
            let children: Vec<u64> = self
                .tokens
                .values()
                .filter(|t| t.previous_id == Some(parent))
                .map(|t| t.id)
                .collect();
            for child in children {
                if let Some(token) = self.tokens.get_mut(&child) {
                    token.revoked = true;
                }
                frontier.push(child);
            }
        }
    }

    /// Stores a new token and returns its id.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn insert_token(
        &mut self,
        user_id: u64,
        name: String,
        description: Option<String>,
        scopes: Vec<String>,
        expires_at: Option<Date>,
        value: SecretValue,
        previous: Option<Lineage>,
    ) -> u64 {
        let id = self.ids.token();
        let token = Token {
            id,
            family_id: previous.map_or(id, |p| p.family_id),
            previous_id: previous.map(|p| p.previous_id),
            user_id,
            name,
            description,
            scopes,
            created_at: self.now(),
            last_used_at: None,
            expires_at,
            revoked: false,
            value,
        };
        self.tokens.insert(id, token);
        id
    }

    /// Rotates token `id`: revokes it at once and issues a token with a new
    /// id and value in the same family (`PersonalAccessTokens::RotateService`).
    /// The caller has checked that `id` exists and is not revoked.
    pub(crate) fn rotate(&mut self, id: u64, expires_at: Date, value: SecretValue) -> u64 {
        let Some(old) = self.tokens.get_mut(&id) else {
            return id;
        };
        old.revoked = true;
        let lineage = Lineage {
            previous_id: old.id,
            family_id: old.family_id,
        };
        let (user_id, name, description, scopes) = (
            old.user_id,
            old.name.clone(),
            old.description.clone(),
            old.scopes.clone(),
        );
        self.insert_token(
            user_id,
            name,
            description,
            scopes,
            Some(expires_at),
            value,
            Some(lineage),
        )
    }

    /// Finds a project by numeric id or by full path (case-insensitive), as
    /// GitLab's `:id` accepts both.
    pub(crate) fn project_by_ref(&self, reference: &str) -> Option<u64> {
        if let Ok(id) = reference.parse::<u64>() {
            return self.projects.contains_key(&id).then_some(id);
        }
        self.projects
            .values()
            .find(|p| p.path.eq_ignore_ascii_case(reference))
            .map(|p| p.id)
    }

    pub(crate) fn group_by_ref(&self, reference: &str) -> Option<u64> {
        if let Ok(id) = reference.parse::<u64>() {
            return self.groups.contains_key(&id).then_some(id);
        }
        self.groups
            .values()
            .find(|g| g.path.eq_ignore_ascii_case(reference))
            .map(|g| g.id)
    }
}

/// GitLab's masked-variable rule (`Ci::Maskable::REGEX`,
/// `\A[a-zA-Z0-9_+=/@:.~-]{8,}\z`): at least 8 characters from the Base64
/// alphabet (RFC 4648, both variants) plus `@ : . ~`.
pub(crate) fn maskable(value: &str) -> bool {
    value.chars().count() >= 8
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_+=/@:.~-".contains(c))
}

/// GitLab's variable key rule: letters, digits and `_`, at most 255.
pub(crate) fn valid_variable_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 255
        && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mask_rule_matches_gitlab() {
        assert!(maskable("abcdEFGH"));
        assert!(maskable("glpat-abc_DEF+/=@:.~"));
        assert!(!maskable("short7c"));
        assert!(!maskable("has space in it"));
        assert!(!maskable("newline\nvalue"));
        assert!(!maskable("dollar$value"));
    }

    #[test]
    fn key_rule_matches_gitlab() {
        assert!(valid_variable_key("DEPLOY_TOKEN_2"));
        assert!(!valid_variable_key("DEPLOY-TOKEN"));
        assert!(!valid_variable_key(""));
        assert!(!valid_variable_key(&"K".repeat(256)));
    }

    fn token(db: &mut Db, previous: Option<u64>) -> u64 {
        let lineage = previous.map(|p| Lineage {
            previous_id: p,
            family_id: db.tokens[&p].family_id,
        });
        let value = SecretValue::new(format!("glpat-test-{}", db.tokens.len()));
        db.insert_token(1, "t".into(), None, vec![], None, value, lineage)
    }

    #[test]
    fn family_revocation_follows_the_rotation_chain_only() {
        let mut db = Db::default();
        let a = token(&mut db, None);
        let b = token(&mut db, Some(a));
        let c = token(&mut db, Some(b));
        let unrelated = token(&mut db, None);
        db.tokens.get_mut(&a).unwrap().revoked = true;
        db.tokens.get_mut(&b).unwrap().revoked = true;
        assert_eq!(db.tokens[&c].family_id, a);
        db.revoke_descendants(a);
        assert!(db.tokens[&c].revoked);
        assert!(!db.tokens[&unrelated].revoked);
    }

    #[test]
    fn rotation_revokes_old_and_keeps_family() {
        let mut db = Db::default();
        let a = token(&mut db, None);
        let expiry = db.clock.days_from_today(7);
        let b = db.rotate(a, expiry, SecretValue::new("glpat-next-value-000"));
        assert_ne!(a, b);
        assert!(db.tokens[&a].revoked);
        assert!(!db.tokens[&b].revoked);
        assert_eq!(db.tokens[&b].family_id, a);
        assert_eq!(db.tokens[&b].previous_id, Some(a));
        assert_eq!(db.tokens[&b].expires_at, Some(expiry));
    }
}
