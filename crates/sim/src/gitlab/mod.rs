//! The GitLab simulator: the REST API under `/api/v4` for personal, project
//! and group access tokens, pipeline trigger tokens, project CI/CD variables
//! and project webhooks, following the provider reference's GitLab section.
//!
//! Authentication takes `PRIVATE-TOKEN: <token>`, `Authorization: Bearer
//! <token>` or a `private_token` parameter. Every `/api` response carries
//! GitLab's RateLimit-* headers. Lists paginate with `page` and `per_page`.
//!
//! [`GitLabState`] is the in-process handle on the true state; the same
//! operations are served under `/_sim/` (see [`control`]).

mod api;
pub(crate) mod control;
mod hooks;
mod model;
mod params;
mod projects;
mod tokens;
mod triggers;
mod variables;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::middleware::{from_fn, from_fn_with_state};
use axum::response::IntoResponse;
use axum::{Json, Router};
use keycycle_secret::SecretValue;
use serde::{Deserialize, Serialize};
use serde_json::json;
use time::Date;

pub use model::{AuthErrorStyle, GitLabSettings, Resource, ReuseDetection};

use crate::clock::{date_opt, date_string, timestamp};
use crate::control::{Control, SimState, control_methods};
use crate::error::SimError;
use crate::values::{expose, url_safe_token};
use model::{ACCESS_LEVELS, Db, Group, Hook, MAINTAINER, Project, Trigger, User, Variable};

const PROVIDER: &str = "gitlab";

/// A user to seed.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct UserSeed {
    pub username: String,
    /// Display name; defaults to the username.
    #[serde(default)]
    pub name: Option<String>,
    /// Administrators see and manage everything.
    #[serde(default)]
    pub admin: bool,
}

impl UserSeed {
    pub fn new(username: &str) -> UserSeed {
        UserSeed {
            username: username.to_owned(),
            ..UserSeed::default()
        }
    }

    pub fn admin(mut self) -> UserSeed {
        self.admin = true;
        self
    }
}

/// A group to seed.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct GroupSeed {
    /// Full path, e.g. `acme`.
    pub path: String,
    #[serde(default)]
    pub name: Option<String>,
}

/// A project to seed.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct ProjectSeed {
    /// Full path, e.g. `acme/api`; usable URL-encoded as `:id`.
    pub path: String,
    #[serde(default)]
    pub name: Option<String>,
    /// The group whose members inherit access to the project.
    #[serde(default)]
    pub group_id: Option<u64>,
}

/// A membership to seed: `access_level` is 10, 15, 20, 30, 40 or 50.
#[derive(Clone, Copy, Debug, Deserialize)]
pub struct MemberSeed {
    pub user_id: u64,
    pub access_level: u8,
}

/// A token to seed. Exactly one of `user_id` (personal token), `project_id`
/// or `group_id` (access token of a new bot user) must be set.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct TokenSeed {
    #[serde(default)]
    pub user_id: Option<u64>,
    #[serde(default)]
    pub project_id: Option<u64>,
    #[serde(default)]
    pub group_id: Option<u64>,
    pub name: String,
    /// The value; a fresh `glpat-` value when absent.
    #[serde(default, deserialize_with = "expose::deserialize_opt")]
    pub token: Option<SecretValue>,
    /// Defaults to `["api"]`.
    #[serde(default)]
    pub scopes: Vec<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default, with = "date_opt")]
    pub expires_at: Option<Date>,
    /// For project and group tokens; default 40 (Maintainer).
    #[serde(default)]
    pub access_level: Option<u8>,
    /// Seed it already revoked.
    #[serde(default)]
    pub revoked: bool,
}

impl TokenSeed {
    pub fn personal(user_id: u64, name: &str) -> TokenSeed {
        TokenSeed {
            user_id: Some(user_id),
            name: name.to_owned(),
            ..TokenSeed::default()
        }
    }

    pub fn project(project_id: u64, name: &str) -> TokenSeed {
        TokenSeed {
            project_id: Some(project_id),
            name: name.to_owned(),
            ..TokenSeed::default()
        }
    }

    pub fn group(group_id: u64, name: &str) -> TokenSeed {
        TokenSeed {
            group_id: Some(group_id),
            name: name.to_owned(),
            ..TokenSeed::default()
        }
    }

    pub fn value(mut self, value: &str) -> TokenSeed {
        self.token = Some(SecretValue::new(value));
        self
    }

    pub fn scopes(mut self, scopes: &[&str]) -> TokenSeed {
        self.scopes = scopes.iter().map(|s| (*s).to_owned()).collect();
        self
    }

    pub fn expires_at(mut self, date: Date) -> TokenSeed {
        self.expires_at = Some(date);
        self
    }

    pub fn access_level(mut self, level: u8) -> TokenSeed {
        self.access_level = Some(level);
        self
    }

    pub fn revoked(mut self) -> TokenSeed {
        self.revoked = true;
        self
    }
}

/// What seeding a token created.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SeededToken {
    pub id: u64,
    /// The owner: the person, or the new bot user of a project/group token.
    pub user_id: u64,
    pub family_id: u64,
    #[serde(
        serialize_with = "expose::serialize",
        deserialize_with = "expose::deserialize"
    )]
    pub token: SecretValue,
}

/// A project CI/CD variable to seed (stored as given, without validation
/// other than key uniqueness per environment scope).
#[derive(Clone, Debug, Deserialize)]
pub struct VariableSeed {
    pub key: String,
    #[serde(deserialize_with = "expose::deserialize")]
    pub value: SecretValue,
    #[serde(default)]
    pub masked: bool,
    #[serde(default)]
    pub protected: bool,
    #[serde(default)]
    pub raw: bool,
    #[serde(default)]
    pub hidden: bool,
    /// `env_var` (default) or `file`.
    #[serde(default)]
    pub variable_type: Option<String>,
    /// Default `*`.
    #[serde(default)]
    pub environment_scope: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
}

impl VariableSeed {
    pub fn new(key: &str, value: &str) -> VariableSeed {
        VariableSeed {
            key: key.to_owned(),
            value: SecretValue::new(value),
            masked: false,
            protected: false,
            raw: false,
            hidden: false,
            variable_type: None,
            environment_scope: None,
            description: None,
        }
    }

    pub fn scope(mut self, environment_scope: &str) -> VariableSeed {
        self.environment_scope = Some(environment_scope.to_owned());
        self
    }

    pub fn masked(mut self) -> VariableSeed {
        self.masked = true;
        self
    }
}

/// A project webhook to seed.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct HookSeed {
    pub url: String,
    /// The secret token GitLab sends as `X-Gitlab-Token`.
    #[serde(default, deserialize_with = "expose::deserialize_opt")]
    pub token: Option<SecretValue>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    /// Event switches (`push_events`, `pipeline_events`, ...) and
    /// `enable_ssl_verification` to override.
    #[serde(default)]
    pub events: BTreeMap<String, bool>,
    #[serde(default)]
    pub push_events_branch_filter: Option<String>,
    /// `wildcard` (default), `regex` or `all_branches`.
    #[serde(default)]
    pub branch_filter_strategy: Option<String>,
    #[serde(default)]
    pub custom_webhook_template: Option<String>,
    /// Masked parts of the URL, by key (`{key}` in `url`).
    #[serde(default, deserialize_with = "expose::deserialize_map")]
    pub url_variables: BTreeMap<String, SecretValue>,
    /// Extra headers of each delivery, by name.
    #[serde(default, deserialize_with = "expose::deserialize_map")]
    pub custom_headers: BTreeMap<String, SecretValue>,
}

impl HookSeed {
    pub fn new(url: &str) -> HookSeed {
        HookSeed {
            url: url.to_owned(),
            ..HookSeed::default()
        }
    }

    pub fn token(mut self, token: &str) -> HookSeed {
        self.token = Some(SecretValue::new(token));
        self
    }

    pub fn name(mut self, name: &str) -> HookSeed {
        self.name = Some(name.to_owned());
        self
    }

    pub fn description(mut self, description: &str) -> HookSeed {
        self.description = Some(description.to_owned());
        self
    }

    /// Switches an event (or `enable_ssl_verification`) on or off.
    pub fn event(mut self, event: &str, on: bool) -> HookSeed {
        self.events.insert(event.to_owned(), on);
        self
    }

    pub fn branch_filter(mut self, filter: &str, strategy: &str) -> HookSeed {
        self.push_events_branch_filter = Some(filter.to_owned());
        self.branch_filter_strategy = Some(strategy.to_owned());
        self
    }

    pub fn template(mut self, template: &str) -> HookSeed {
        self.custom_webhook_template = Some(template.to_owned());
        self
    }

    pub fn url_variable(mut self, key: &str, value: &str) -> HookSeed {
        self.url_variables
            .insert(key.to_owned(), SecretValue::new(value));
        self
    }

    pub fn custom_header(mut self, key: &str, value: &str) -> HookSeed {
        self.custom_headers
            .insert(key.to_owned(), SecretValue::new(value));
        self
    }
}

/// A pipeline trigger token to seed.
#[derive(Clone, Debug, Deserialize)]
pub struct TriggerSeed {
    pub owner_id: u64,
    pub description: String,
    /// The value; a fresh `glptt-` value when absent.
    #[serde(default, deserialize_with = "expose::deserialize_opt")]
    pub token: Option<SecretValue>,
}

/// What seeding a trigger created.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SeededTrigger {
    pub id: u64,
    #[serde(
        serialize_with = "expose::serialize",
        deserialize_with = "expose::deserialize"
    )]
    pub token: SecretValue,
}

/// A member of a project or group.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub user_id: u64,
    pub access_level: u8,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UserState {
    pub id: u64,
    pub username: String,
    pub name: String,
    pub admin: bool,
    /// Set for the bot user of a project or group access token.
    pub bot_of: Option<Resource>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GroupState {
    pub id: u64,
    pub path: String,
    pub name: String,
    pub members: Vec<Member>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProjectState {
    pub id: u64,
    pub path: String,
    pub name: String,
    pub group_id: Option<u64>,
    pub members: Vec<Member>,
}

/// A token as it truly is, value included.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TokenState {
    pub id: u64,
    /// The first token of its rotation chain.
    pub family_id: u64,
    /// The token it replaced by rotation.
    pub previous_id: Option<u64>,
    pub user_id: u64,
    pub name: String,
    pub description: Option<String>,
    pub scopes: Vec<String>,
    pub created_at: String,
    pub last_used_at: Option<String>,
    #[serde(with = "date_opt")]
    pub expires_at: Option<Date>,
    pub revoked: bool,
    /// Neither revoked nor expired.
    pub active: bool,
    /// Set for project and group access tokens.
    pub resource: Option<Resource>,
    pub access_level: Option<u8>,
    #[serde(
        serialize_with = "expose::serialize",
        deserialize_with = "expose::deserialize"
    )]
    pub value: SecretValue,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VariableState {
    pub project_id: u64,
    pub key: String,
    #[serde(
        serialize_with = "expose::serialize",
        deserialize_with = "expose::deserialize"
    )]
    pub value: SecretValue,
    pub masked: bool,
    pub protected: bool,
    pub raw: bool,
    pub hidden: bool,
    pub variable_type: String,
    pub environment_scope: String,
    pub description: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HookState {
    pub id: u64,
    pub project_id: u64,
    pub url: String,
    /// The secret token; `None` when unset or reset.
    #[serde(
        serialize_with = "expose::opt::serialize",
        deserialize_with = "expose::deserialize_opt"
    )]
    pub token: Option<SecretValue>,
    pub name: Option<String>,
    pub description: Option<String>,
    /// Every boolean attribute: the event switches and
    /// `enable_ssl_verification`.
    pub events: BTreeMap<String, bool>,
    pub push_events_branch_filter: Option<String>,
    pub branch_filter_strategy: String,
    pub custom_webhook_template: Option<String>,
    /// The URL variables, values in clear (control API only).
    #[serde(
        serialize_with = "expose::map::serialize",
        deserialize_with = "expose::deserialize_map"
    )]
    pub url_variables: BTreeMap<String, SecretValue>,
    /// The custom headers, values in clear (control API only).
    #[serde(
        serialize_with = "expose::map::serialize",
        deserialize_with = "expose::deserialize_map"
    )]
    pub custom_headers: BTreeMap<String, SecretValue>,
    pub created_at: String,
}

/// Everything about a hook that a copy of it must repeat: all but its id,
/// its project, its creation time and its secret token.
#[derive(Clone, Debug, PartialEq)]
pub struct HookSettings {
    pub url: String,
    pub name: Option<String>,
    pub description: Option<String>,
    pub events: BTreeMap<String, bool>,
    pub push_events_branch_filter: Option<String>,
    pub branch_filter_strategy: String,
    pub custom_webhook_template: Option<String>,
    pub url_variables: BTreeMap<String, SecretValue>,
    pub custom_headers: BTreeMap<String, SecretValue>,
    /// Whether a secret token is set.
    pub has_token: bool,
}

impl HookState {
    pub fn settings(&self) -> HookSettings {
        HookSettings {
            url: self.url.clone(),
            name: self.name.clone(),
            description: self.description.clone(),
            events: self.events.clone(),
            push_events_branch_filter: self.push_events_branch_filter.clone(),
            branch_filter_strategy: self.branch_filter_strategy.clone(),
            custom_webhook_template: self.custom_webhook_template.clone(),
            url_variables: self.url_variables.clone(),
            custom_headers: self.custom_headers.clone(),
            has_token: self.token.is_some(),
        }
    }
}

/// A test delivery the simulator recorded instead of making it. Debug
/// shows the token as `***`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HookTestState {
    pub hook_id: u64,
    pub project_id: u64,
    /// The URL as stored (URL variables not substituted).
    pub url: String,
    pub trigger: String,
    /// The `X-Gitlab-Token` the delivery would have carried; in clear in
    /// the control API only.
    #[serde(
        serialize_with = "expose::opt::serialize",
        deserialize_with = "expose::deserialize_opt"
    )]
    pub token: Option<SecretValue>,
    /// What the receiving endpoint answered.
    pub status: u16,
    pub at: String,
}

impl HookTestState {
    /// Whether the delivery carried `X-Gitlab-Token: value`.
    pub fn sent_token(&self, value: &str) -> bool {
        self.token.as_ref().is_some_and(|t| t.expose() == value)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TriggerState {
    pub id: u64,
    pub project_id: u64,
    pub description: String,
    pub owner_id: u64,
    #[serde(
        serialize_with = "expose::serialize",
        deserialize_with = "expose::deserialize"
    )]
    pub token: SecretValue,
    pub created_at: String,
    pub last_used: Option<String>,
}

/// A pipeline started through a trigger token.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PipelineState {
    pub id: u64,
    pub project_id: u64,
    pub trigger_id: u64,
    #[serde(rename = "ref")]
    pub ref_name: String,
    pub created_at: String,
}

/// The whole true state, as `GET /_sim/state` returns it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GitLabSnapshot {
    /// The simulated date, `YYYY-MM-DD`.
    pub today: String,
    pub settings: GitLabSettings,
    pub users: Vec<UserState>,
    pub groups: Vec<GroupState>,
    pub projects: Vec<ProjectState>,
    pub tokens: Vec<TokenState>,
    pub variables: Vec<VariableState>,
    pub hooks: Vec<HookState>,
    pub hook_tests: Vec<HookTestState>,
    pub triggers: Vec<TriggerState>,
    pub pipelines: Vec<PipelineState>,
}

impl GitLabSnapshot {
    pub fn token(&self, id: u64) -> Option<&TokenState> {
        self.tokens.iter().find(|t| t.id == id)
    }

    pub fn token_by_value(&self, value: &str) -> Option<&TokenState> {
        self.tokens.iter().find(|t| t.value.expose() == value)
    }

    /// Every token of a rotation family, oldest first.
    pub fn family(&self, family_id: u64) -> Vec<&TokenState> {
        self.tokens
            .iter()
            .filter(|t| t.family_id == family_id)
            .collect()
    }

    pub fn variable(&self, project_id: u64, key: &str, scope: &str) -> Option<&VariableState> {
        self.variables
            .iter()
            .find(|v| v.project_id == project_id && v.key == key && v.environment_scope == scope)
    }

    pub fn hook(&self, id: u64) -> Option<&HookState> {
        self.hooks.iter().find(|h| h.id == id)
    }

    /// The hooks of a project, by id.
    pub fn project_hooks(&self, project_id: u64) -> Vec<&HookState> {
        self.hooks
            .iter()
            .filter(|h| h.project_id == project_id)
            .collect()
    }

    pub fn trigger(&self, id: u64) -> Option<&TriggerState> {
        self.triggers.iter().find(|t| t.id == id)
    }
}

/// Handle on the GitLab simulator's true state; clones share it.
#[derive(Clone, Default)]
pub struct GitLabState {
    inner: Arc<Mutex<Db>>,
}

impl SimState for GitLabState {
    fn with_control<R>(&self, f: impl FnOnce(&mut Control) -> R) -> R {
        f(&mut self.lock().control)
    }
}

control_methods!(GitLabState);

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

fn check_level(level: u8) -> Result<u8, SimError> {
    if ACCESS_LEVELS.contains(&level) {
        Ok(level)
    } else {
        Err(invalid(format!(
            "access level {level} is not one of 10, 15, 20, 30, 40, 50"
        )))
    }
}

impl GitLabState {
    pub fn new() -> GitLabState {
        GitLabState::default()
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Db> {
        // A panicking test thread must not wedge every later request.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn add_user(&self, seed: UserSeed) -> Result<u64, SimError> {
        let mut db = self.lock();
        if seed.username.trim().is_empty() {
            return Err(invalid("username is empty"));
        }
        if db.users.values().any(|u| u.username == seed.username) {
            return Err(invalid(format!("username {} is taken", seed.username)));
        }
        let id = db.ids.user();
        db.users.insert(
            id,
            User {
                id,
                name: seed.name.unwrap_or_else(|| seed.username.clone()),
                username: seed.username,
                admin: seed.admin,
                bot_of: None,
            },
        );
        Ok(id)
    }

    pub fn add_group(&self, seed: GroupSeed) -> Result<u64, SimError> {
        let mut db = self.lock();
        if seed.path.trim().is_empty() {
            return Err(invalid("group path is empty"));
        }
        if db.group_by_ref(&seed.path).is_some() {
            return Err(invalid(format!("group path {} is taken", seed.path)));
        }
        let id = db.ids.group();
        db.groups.insert(
            id,
            Group {
                id,
                name: seed.name.unwrap_or_else(|| last_segment(&seed.path)),
                path: seed.path,
                members: BTreeMap::new(),
            },
        );
        Ok(id)
    }

    pub fn add_project(&self, seed: ProjectSeed) -> Result<u64, SimError> {
        let mut db = self.lock();
        if seed.path.trim().is_empty() {
            return Err(invalid("project path is empty"));
        }
        if seed.path.parse::<u64>().is_ok() {
            return Err(invalid("a project path must not be a bare number"));
        }
        if db.project_by_ref(&seed.path).is_some() {
            return Err(invalid(format!("project path {} is taken", seed.path)));
        }
        if let Some(gid) = seed.group_id
            && !db.groups.contains_key(&gid)
        {
            return Err(unknown("group", gid));
        }
        let id = db.ids.project();
        db.projects.insert(
            id,
            Project {
                id,
                name: seed.name.unwrap_or_else(|| last_segment(&seed.path)),
                path: seed.path,
                group_id: seed.group_id,
                members: BTreeMap::new(),
            },
        );
        Ok(id)
    }

    /// Adds (or changes) a project membership.
    pub fn add_project_member(
        &self,
        project_id: u64,
        user_id: u64,
        access_level: u8,
    ) -> Result<(), SimError> {
        let level = check_level(access_level)?;
        let mut db = self.lock();
        if !db.users.contains_key(&user_id) {
            return Err(unknown("user", user_id));
        }
        let project = db
            .projects
            .get_mut(&project_id)
            .ok_or_else(|| unknown("project", project_id))?;
        project.members.insert(user_id, level);
        Ok(())
    }

    /// Adds (or changes) a group membership.
    pub fn add_group_member(
        &self,
        group_id: u64,
        user_id: u64,
        access_level: u8,
    ) -> Result<(), SimError> {
        let level = check_level(access_level)?;
        let mut db = self.lock();
        if !db.users.contains_key(&user_id) {
            return Err(unknown("user", user_id));
        }
        let group = db
            .groups
            .get_mut(&group_id)
            .ok_or_else(|| unknown("group", group_id))?;
        group.members.insert(user_id, level);
        Ok(())
    }

    /// Stores a token (personal, or project/group with a new bot user).
    pub fn add_token(&self, seed: TokenSeed) -> Result<SeededToken, SimError> {
        let mut db = self.lock();
        let owner = match (seed.user_id, seed.project_id, seed.group_id) {
            (Some(uid), None, None) => {
                if !db.users.contains_key(&uid) {
                    return Err(unknown("user", uid));
                }
                None
            }
            (None, Some(pid), None) => {
                if !db.projects.contains_key(&pid) {
                    return Err(unknown("project", pid));
                }
                Some(Resource::Project(pid))
            }
            (None, None, Some(gid)) => {
                if !db.groups.contains_key(&gid) {
                    return Err(unknown("group", gid));
                }
                Some(Resource::Group(gid))
            }
            _ => {
                return Err(invalid(
                    "set exactly one of user_id, project_id and group_id",
                ));
            }
        };
        if seed.name.trim().is_empty() {
            return Err(invalid("token name is empty"));
        }
        let level = check_level(seed.access_level.unwrap_or(MAINTAINER))?;
        let value = match seed.token {
            Some(value) => {
                if let Some(existing) = db.token_by_value(value.expose()) {
                    return Err(SimError::DuplicateTokenValue {
                        provider: PROVIDER,
                        existing_id: existing,
                    });
                }
                if db.value_in_use(value.expose()) {
                    return Err(invalid("a trigger already has this value"));
                }
                value
            }
            None => loop {
                let value = url_safe_token("glpat-", 20);
                if !db.value_in_use(value.expose()) {
                    break value;
                }
            },
        };
        let user_id = match owner {
            None => seed.user_id.unwrap_or_default(),
            Some(resource) => tokens::create_bot(&mut db, resource, &seed.name, level),
        };
        let scopes = if seed.scopes.is_empty() {
            vec!["api".to_owned()]
        } else {
            seed.scopes
        };
        let id = db.insert_token(
            user_id,
            seed.name,
            seed.description,
            scopes,
            seed.expires_at,
            value.clone(),
            None,
        );
        if let Some(token) = db.tokens.get_mut(&id) {
            token.revoked = seed.revoked;
        }
        Ok(SeededToken {
            id,
            user_id,
            family_id: id,
            token: value,
        })
    }

    /// Revokes token `id` directly (no reuse detection, as an admin would).
    pub fn revoke_token(&self, id: u64) -> Result<(), SimError> {
        let mut db = self.lock();
        let token = db.tokens.get_mut(&id).ok_or_else(|| unknown("token", id))?;
        token.revoked = true;
        Ok(())
    }

    pub fn add_variable(&self, project_id: u64, seed: VariableSeed) -> Result<(), SimError> {
        let mut db = self.lock();
        if !db.projects.contains_key(&project_id) {
            return Err(unknown("project", project_id));
        }
        let environment_scope = seed.environment_scope.unwrap_or_else(|| "*".into());
        let taken = db.variables.iter().any(|v| {
            v.project_id == project_id
                && v.key == seed.key
                && v.environment_scope == environment_scope
        });
        if taken {
            return Err(invalid(format!(
                "variable {} with scope {environment_scope} already exists",
                seed.key
            )));
        }
        db.variables.push(Variable {
            project_id,
            key: seed.key,
            value: seed.value,
            masked: seed.masked,
            protected: seed.protected,
            raw: seed.raw,
            hidden: seed.hidden,
            variable_type: seed.variable_type.unwrap_or_else(|| "env_var".into()),
            environment_scope,
            description: seed.description,
        });
        Ok(())
    }

    pub fn add_hook(&self, project_id: u64, seed: HookSeed) -> Result<u64, SimError> {
        let mut db = self.lock();
        if !db.projects.contains_key(&project_id) {
            return Err(unknown("project", project_id));
        }
        let mut flags = hooks::default_flags();
        for (event, on) in seed.events {
            if !flags.contains_key(&event) {
                return Err(invalid(format!("unknown webhook event {event}")));
            }
            flags.insert(event, on);
        }
        let branch_filter_strategy = seed
            .branch_filter_strategy
            .unwrap_or_else(|| "wildcard".into());
        if !["wildcard", "regex", "all_branches"].contains(&branch_filter_strategy.as_str()) {
            return Err(invalid(format!(
                "branch_filter_strategy {branch_filter_strategy} is not wildcard, regex or all_branches"
            )));
        }
        let id = db.ids.hook();
        let created_at = db.now();
        db.hooks.insert(
            id,
            Hook {
                id,
                project_id,
                url: seed.url,
                token: seed.token.filter(|t| !t.is_empty()),
                name: seed.name,
                description: seed.description,
                flags,
                push_events_branch_filter: seed.push_events_branch_filter,
                branch_filter_strategy,
                custom_webhook_template: seed.custom_webhook_template,
                url_variables: seed.url_variables,
                custom_headers: seed.custom_headers,
                created_at,
            },
        );
        Ok(id)
    }

    /// What the receiving endpoint at `url` answers to test deliveries
    /// (default 200); 0 stands for a connection that fails.
    pub fn set_endpoint_status(&self, url: &str, status: u16) {
        self.set_endpoint_response(url, status, "");
    }

    /// [`GitLabState::set_endpoint_status`] with the body the endpoint
    /// answers, which GitLab quotes when the status is not 2xx.
    pub fn set_endpoint_response(&self, url: &str, status: u16, body: &str) {
        self.lock().endpoints.insert(
            url.to_owned(),
            model::EndpointAnswer {
                status,
                body: body.to_owned(),
            },
        );
    }

    /// Every test delivery recorded, oldest first.
    pub fn hook_tests(&self) -> Vec<HookTestState> {
        self.snapshot().hook_tests
    }

    pub fn add_trigger(
        &self,
        project_id: u64,
        seed: TriggerSeed,
    ) -> Result<SeededTrigger, SimError> {
        let mut db = self.lock();
        if !db.projects.contains_key(&project_id) {
            return Err(unknown("project", project_id));
        }
        if !db.users.contains_key(&seed.owner_id) {
            return Err(unknown("user", seed.owner_id));
        }
        let token = match seed.token {
            Some(value) if db.value_in_use(value.expose()) => {
                return Err(invalid("another token already has this value"));
            }
            Some(value) => value,
            None => triggers::fresh_trigger_value(&db),
        };
        let id = db.ids.trigger();
        let now = db.now();
        db.triggers.insert(
            id,
            Trigger {
                id,
                project_id,
                description: seed.description,
                owner_id: seed.owner_id,
                token: token.clone(),
                created_at: now,
                updated_at: now,
                last_used: None,
            },
        );
        Ok(SeededTrigger { id, token })
    }

    /// Pins the simulated date (`None` follows the real clock again).
    /// Tokens whose `expires_at` is on or before it stop working.
    pub fn set_today(&self, date: Option<Date>) {
        self.lock().clock.pin(date);
    }

    pub fn today(&self) -> Date {
        self.lock().today()
    }

    pub fn settings(&self) -> GitLabSettings {
        self.lock().settings
    }

    pub fn set_settings(&self, settings: GitLabSettings) {
        self.lock().settings = settings;
    }

    pub fn token(&self, id: u64) -> Option<TokenState> {
        let db = self.lock();
        db.tokens.get(&id).map(|t| token_state(&db, t))
    }

    /// The whole true state.
    pub fn snapshot(&self) -> GitLabSnapshot {
        let db = self.lock();
        let members = |m: &BTreeMap<u64, u8>| {
            m.iter()
                .map(|(user_id, access_level)| Member {
                    user_id: *user_id,
                    access_level: *access_level,
                })
                .collect()
        };
        GitLabSnapshot {
            today: date_string(db.today()),
            settings: db.settings,
            users: db
                .users
                .values()
                .map(|u| UserState {
                    id: u.id,
                    username: u.username.clone(),
                    name: u.name.clone(),
                    admin: u.admin,
                    bot_of: u.bot_of,
                })
                .collect(),
            groups: db
                .groups
                .values()
                .map(|g| GroupState {
                    id: g.id,
                    path: g.path.clone(),
                    name: g.name.clone(),
                    members: members(&g.members),
                })
                .collect(),
            projects: db
                .projects
                .values()
                .map(|p| ProjectState {
                    id: p.id,
                    path: p.path.clone(),
                    name: p.name.clone(),
                    group_id: p.group_id,
                    members: members(&p.members),
                })
                .collect(),
            tokens: db.tokens.values().map(|t| token_state(&db, t)).collect(),
            variables: db
                .variables
                .iter()
                .map(|v| VariableState {
                    project_id: v.project_id,
                    key: v.key.clone(),
                    value: v.value.clone(),
                    masked: v.masked,
                    protected: v.protected,
                    raw: v.raw,
                    hidden: v.hidden,
                    variable_type: v.variable_type.clone(),
                    environment_scope: v.environment_scope.clone(),
                    description: v.description.clone(),
                })
                .collect(),
            hooks: db
                .hooks
                .values()
                .map(|h| HookState {
                    id: h.id,
                    project_id: h.project_id,
                    url: h.url.clone(),
                    token: h.token.clone(),
                    name: h.name.clone(),
                    description: h.description.clone(),
                    events: h.flags.clone(),
                    push_events_branch_filter: h.push_events_branch_filter.clone(),
                    branch_filter_strategy: h.branch_filter_strategy.clone(),
                    custom_webhook_template: h.custom_webhook_template.clone(),
                    url_variables: h.url_variables.clone(),
                    custom_headers: h.custom_headers.clone(),
                    created_at: timestamp(h.created_at),
                })
                .collect(),
            hook_tests: db
                .hook_tests
                .iter()
                .map(|t| HookTestState {
                    hook_id: t.hook_id,
                    project_id: t.project_id,
                    url: t.url.clone(),
                    trigger: t.trigger.clone(),
                    token: t.token.clone(),
                    status: t.status,
                    at: timestamp(t.at),
                })
                .collect(),
            triggers: db
                .triggers
                .values()
                .map(|t| TriggerState {
                    id: t.id,
                    project_id: t.project_id,
                    description: t.description.clone(),
                    owner_id: t.owner_id,
                    token: t.token.clone(),
                    created_at: timestamp(t.created_at),
                    last_used: t.last_used.map(timestamp),
                })
                .collect(),
            pipelines: db
                .pipelines
                .iter()
                .map(|p| PipelineState {
                    id: p.id,
                    project_id: p.project_id,
                    trigger_id: p.trigger_id,
                    ref_name: p.ref_name.clone(),
                    created_at: timestamp(p.created_at),
                })
                .collect(),
        }
    }
}

fn token_state(db: &Db, t: &model::Token) -> TokenState {
    TokenState {
        id: t.id,
        family_id: t.family_id,
        previous_id: t.previous_id,
        user_id: t.user_id,
        name: t.name.clone(),
        description: t.description.clone(),
        scopes: t.scopes.clone(),
        created_at: timestamp(t.created_at),
        last_used_at: t.last_used_at.map(timestamp),
        expires_at: t.expires_at,
        revoked: t.revoked,
        active: db.active(t),
        resource: db.resource_of(t),
        access_level: db.token_access_level(t),
        value: t.value.clone(),
    }
}

fn last_segment(path: &str) -> String {
    path.rsplit('/').next().unwrap_or(path).to_owned()
}

/// The GitLab simulator's router, control API included.
pub(crate) fn router(state: GitLabState) -> Router {
    let api = Router::new()
        .merge(tokens::routes())
        .merge(triggers::routes())
        .merge(variables::routes())
        .merge(hooks::routes())
        .merge(projects::routes())
        // Grape's answer for a route it does not know.
        .fallback(|| async {
            (
                axum::http::StatusCode::NOT_FOUND,
                Json(json!({ "error": "404 Not Found" })),
            )
                .into_response()
        });
    Router::new()
        .nest("/api/v4", api)
        .merge(control::routes())
        .merge(crate::control::routes::<GitLabState>())
        .fallback(|| async {
            (
                axum::http::StatusCode::NOT_FOUND,
                Json(json!({ "message": "404 Not Found" })),
            )
                .into_response()
        })
        .layer(from_fn(api::throttle))
        .layer(from_fn_with_state(
            state.clone(),
            crate::control::gate::<GitLabState>,
        ))
        .layer(from_fn_with_state(state.clone(), api::rate_headers))
        .with_state(state)
}

#[cfg(test)]
mod tests;
