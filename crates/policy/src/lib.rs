//! Who may use what on a shared runner. Teams own runbooks (by folder),
//! plugin instances and secret names; a run belongs to the team that owns
//! its runbook, and its [`RunPolicy`] decides which plugin instances it may
//! call, which store names it may read and write, where each secret it holds
//! may be sent, and which destinations its runbook may hand a credential to.
//!
//! This crate decides; it enforces nothing. The CLI asks it before every
//! plugin load, secret access, plugin call and destination, so the rules
//! live in one place and can be tested without a sandbox.
//!
//! Without `[teams]` the policy is today's single-team one: every plugin may
//! be called (unless the runbook's section names its plugins), a runbook
//! reads and writes the store names its section grants, and secrets go
//! wherever the runbook sends them (unless a `[[flows]]` rule says
//! otherwise).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

use serde::Deserialize;

/// A `[teams.NAME]` section.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TeamSection {
    /// Folders inside the runbooks folder whose runbooks this team owns
    /// (`payments`, `payments/gitlab`).
    #[serde(default)]
    pub runbooks: Vec<String>,
    /// Plugin instances (`[plugins.NAME]`) the team owns.
    #[serde(default)]
    pub plugins: Vec<String>,
    /// Store names the team owns, as patterns (`payments/*`).
    #[serde(default)]
    pub secrets: Vec<String>,
    /// Where the team's secrets may go, beyond (or instead of) its own
    /// plugins.
    #[serde(default)]
    pub flows: Vec<FlowSection>,
    /// Allowed destinations for the team's runbooks, by kind.
    #[serde(default)]
    pub destinations: BTreeMap<String, Vec<String>>,
}

/// A `[[flows]]` rule: the secrets whose label matches `secrets` may be
/// sent only to plugin instances matching `to`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlowSection {
    /// Labels: a store name, `minted:PLUGIN`, `input:NAME` or `random`;
    /// `*` matches any run of characters.
    pub secrets: Vec<String>,
    /// Plugin instance names (patterns).
    pub to: Vec<String>,
}

/// What a runbook's `[runbooks."PATH"]` section grants.
#[derive(Debug, Clone, Default)]
pub struct RunbookRules {
    /// Store names it may read and write.
    pub secrets: Vec<String>,
    /// Plugin instances it may call; `None`: every one its team may.
    pub plugins: Option<Vec<String>>,
    /// Allowed destinations by kind; replaces the team's and the global
    /// list of the same kind.
    pub destinations: BTreeMap<String, Vec<String>>,
}

/// What the policy needs to know of a plugin instance.
#[derive(Debug, Clone, Default)]
pub struct PluginRules {
    /// Teams other than the owner whose runs may call it (`*`: all).
    pub shared_with: Vec<String>,
    /// The store names its `secrets` grant maps to (every overlay's too).
    pub store_names: Vec<String>,
}

/// Everything the policy is built from, as the config holds it.
#[derive(Debug, Clone, Default)]
pub struct PolicyConfig {
    pub teams: BTreeMap<String, TeamSection>,
    pub flows: Vec<FlowSection>,
    pub destinations: BTreeMap<String, Vec<String>>,
    /// By runbook identity (its path in the runbooks folder, without
    /// `.rhai`).
    pub runbooks: BTreeMap<String, RunbookRules>,
    pub plugins: BTreeMap<String, PluginRules>,
}

/// A policy that cannot be right: it names what is wrong and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(String);

/// A refusal. The message names what was asked, who asked, and the rule
/// that refused it, in words an operator can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Denial(pub String);

/// Where a secret a run holds came from. A secret may hold several labels
/// (the same value read from the store and answered at a prompt): every
/// label's rule must allow a send.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Label {
    /// Read from the store under this name.
    Stored(String),
    /// Returned by a call to this plugin instance.
    Minted(String),
    /// Answered to the prompt of this name.
    Input(String),
    /// Made by `random_secret`.
    Random,
}

impl fmt::Display for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Label::Stored(name) => f.write_str(name),
            Label::Minted(plugin) => write!(f, "minted:{plugin}"),
            Label::Input(name) => write!(f, "input:{name}"),
            Label::Random => f.write_str("random"),
        }
    }
}

/// Shell-style patterns, compiled once.
#[derive(Debug, Clone)]
struct Patterns(Vec<(String, glob::Pattern)>);

impl Patterns {
    fn new(list: &[String], what: &str) -> Result<Patterns, ConfigError> {
        list.iter()
            .map(|p| {
                glob::Pattern::new(p)
                    .map(|g| (p.clone(), g))
                    .map_err(|e| ConfigError(format!("{what}: `{p}` is not a pattern: {e}")))
            })
            .collect::<Result<_, _>>()
            .map(Patterns)
    }

    fn matches(&self, text: &str) -> bool {
        self.0.iter().any(|(_, p)| p.matches(text))
    }

    fn texts(&self) -> String {
        self.0
            .iter()
            .map(|(t, _)| format!("\"{t}\""))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[derive(Debug, Clone)]
struct Flow {
    /// Where it is written, for messages (`[[teams.payments.flows]] #1`).
    at: String,
    secrets: Patterns,
    to: Patterns,
}

#[derive(Debug, Clone)]
struct Team {
    runbooks: Vec<String>,
    secrets: Patterns,
    flows: Vec<Flow>,
    destinations: BTreeMap<String, Patterns>,
}

/// The whole policy, checked.
#[derive(Debug, Clone)]
pub struct Policy {
    teams: BTreeMap<String, Team>,
    flows: Vec<Flow>,
    destinations: BTreeMap<String, Patterns>,
    runbooks: BTreeMap<String, RunbookRules>,
    plugin_owner: BTreeMap<String, String>,
    plugins: BTreeMap<String, PluginRules>,
}

fn flows(list: &[FlowSection], at: &str) -> Result<Vec<Flow>, ConfigError> {
    list.iter()
        .enumerate()
        .map(|(i, f)| {
            let at = format!("{at} #{}", i + 1);
            if f.secrets.is_empty() {
                return Err(ConfigError(format!("{at}: `secrets` is empty")));
            }
            Ok(Flow {
                secrets: Patterns::new(&f.secrets, &at)?,
                to: Patterns::new(&f.to, &at)?,
                at,
            })
        })
        .collect()
}

fn destinations(
    map: &BTreeMap<String, Vec<String>>,
    at: &str,
) -> Result<BTreeMap<String, Patterns>, ConfigError> {
    map.iter()
        .map(|(kind, list)| Ok((kind.clone(), Patterns::new(list, &format!("{at} {kind}"))?)))
        .collect()
}

/// A team's runbook folder, as written, made a relative path of plain
/// segments (`payments/gitlab`).
fn folder(team: &str, text: &str) -> Result<String, ConfigError> {
    let trimmed = text.trim_matches('/');
    if trimmed.is_empty()
        || trimmed
            .split('/')
            .any(|s| s.is_empty() || s == "." || s == "..")
    {
        return Err(ConfigError(format!(
            "[teams.{team}] runbooks: `{text}` must be a folder inside the runbooks folder, \
             such as \"{team}\""
        )));
    }
    Ok(trimmed.to_owned())
}

impl Policy {
    pub fn new(config: &PolicyConfig) -> Result<Policy, ConfigError> {
        let mut teams = BTreeMap::new();
        let mut plugin_owner = BTreeMap::new();
        let mut folders: Vec<(String, String)> = Vec::new();
        for (name, section) in &config.teams {
            let at = format!("[teams.{name}]");
            for plugin in &section.plugins {
                if !config.plugins.contains_key(plugin) {
                    return Err(ConfigError(format!(
                        "{at} plugins: no plugin `{plugin}` is configured"
                    )));
                }
                if let Some(other) = plugin_owner.insert(plugin.clone(), name.clone()) {
                    return Err(ConfigError(format!(
                        "plugin `{plugin}` is owned by both team `{other}` and team `{name}`; \
                         a plugin instance acts with one team's token, so it has one owner \
                         (share it with `shared_with` in [plugins.{plugin}])"
                    )));
                }
            }
            let mut runbooks = Vec::new();
            for text in &section.runbooks {
                let dir = folder(name, text)?;
                for (other, theirs) in &folders {
                    let nested = |a: &str, b: &str| a == b || a.starts_with(&format!("{b}/"));
                    if nested(&dir, theirs) || nested(theirs, &dir) {
                        return Err(ConfigError(format!(
                            "runbook folder `{dir}` of team `{name}` overlaps `{theirs}` of team \
                             `{other}`; a runbook belongs to one team"
                        )));
                    }
                }
                folders.push((name.clone(), dir.clone()));
                runbooks.push(dir);
            }
            teams.insert(
                name.clone(),
                Team {
                    runbooks,
                    secrets: Patterns::new(&section.secrets, &format!("{at} secrets"))?,
                    flows: flows(&section.flows, &format!("[[teams.{name}.flows]]"))?,
                    destinations: destinations(
                        &section.destinations,
                        &format!("[teams.{name}.destinations]"),
                    )?,
                },
            );
        }
        for (plugin, rules) in &config.plugins {
            for team in &rules.shared_with {
                if team != "*" && !teams.contains_key(team) {
                    return Err(ConfigError(format!(
                        "[plugins.{plugin}] shared_with: no team `{team}` is declared in [teams]"
                    )));
                }
            }
            if teams.is_empty() {
                continue;
            }
            // A plugin acts with the secrets it is granted: a team's plugin
            // granted another team's store name would hand that team's
            // credential to whoever may call it.
            let owner = plugin_owner.get(plugin);
            for store_name in &rules.store_names {
                let owners: Vec<&String> = teams
                    .iter()
                    .filter(|(_, t)| t.secrets.matches(store_name))
                    .map(|(n, _)| n)
                    .collect();
                if owner.is_none_or(|o| !owners.contains(&o)) {
                    return Err(ConfigError(format!(
                        "[plugins.{plugin}] is granted store name `{store_name}`, which {} \
                         owns, but the plugin {}; grant a plugin only its own team's secrets",
                        match owners.as_slice() {
                            [] => "no team".to_owned(),
                            list => format!(
                                "team {}",
                                list.iter()
                                    .map(|t| format!("`{t}`"))
                                    .collect::<Vec<_>>()
                                    .join(" and ")
                            ),
                        },
                        match owner {
                            Some(o) => format!("belongs to team `{o}`"),
                            None => "belongs to no team".to_owned(),
                        }
                    )));
                }
            }
        }
        for (id, rules) in &config.runbooks {
            if id.split('/').any(|s| s.is_empty() || s == "." || s == "..") {
                return Err(ConfigError(format!(
                    "[runbooks.\"{id}\"]: a runbook is named by its path inside the runbooks \
                     folder, without `.rhai` (such as \"payments/gitlab-personal-token\")"
                )));
            }
            for plugin in rules.plugins.iter().flatten() {
                if !config.plugins.contains_key(plugin) {
                    return Err(ConfigError(format!(
                        "[runbooks.\"{id}\"] plugins: no plugin `{plugin}` is configured"
                    )));
                }
            }
            destinations(
                &rules.destinations,
                &format!("[runbooks.\"{id}\".destinations]"),
            )?;
        }
        Ok(Policy {
            teams,
            flows: flows(&config.flows, "[[flows]]")?,
            destinations: destinations(&config.destinations, "[destinations]")?,
            runbooks: config.runbooks.clone(),
            plugin_owner,
            plugins: config.plugins.clone(),
        })
    }

    /// Whether teams are declared; without them the policy is the
    /// single-team one.
    pub fn has_teams(&self) -> bool {
        !self.teams.is_empty()
    }

    /// The declared teams, by name.
    pub fn teams(&self) -> impl Iterator<Item = &str> {
        self.teams.keys().map(String::as_str)
    }

    /// The team that owns a runbook, by its identity.
    pub fn team_of_runbook(&self, identity: &str) -> Option<&str> {
        self.teams
            .iter()
            .find(|(_, t)| {
                t.runbooks
                    .iter()
                    .any(|dir| identity.starts_with(&format!("{dir}/")))
            })
            .map(|(n, _)| n.as_str())
    }

    /// The team that owns a plugin instance.
    pub fn team_of_plugin(&self, plugin: &str) -> Option<&str> {
        self.plugin_owner.get(plugin).map(String::as_str)
    }

    /// The policy of one run of the runbook `identity` (its path inside the
    /// runbooks folder, without `.rhai`); `None` for a runbook outside the
    /// folder, which gets no grants.
    pub fn for_run(self: &Arc<Self>, identity: Option<&str>) -> RunPolicy {
        let team = identity.and_then(|id| self.team_of_runbook(id));
        let rules = identity.and_then(|id| self.runbooks.get(id));
        RunPolicy {
            policy: self.clone(),
            identity: identity.map(str::to_owned),
            team: team.map(str::to_owned),
            rules: rules.cloned().unwrap_or_default(),
        }
    }
}

/// The rules of one run.
#[derive(Debug, Clone)]
pub struct RunPolicy {
    policy: Arc<Policy>,
    identity: Option<String>,
    team: Option<String>,
    rules: RunbookRules,
}

impl RunPolicy {
    pub fn team(&self) -> Option<&str> {
        self.team.as_deref()
    }

    /// The runbook as the messages name it.
    fn who(&self) -> String {
        let runbook = match &self.identity {
            Some(id) => format!("runbook `{id}`"),
            None => "a runbook outside the runbooks folder".to_owned(),
        };
        match (&self.team, self.policy.has_teams()) {
            (Some(team), _) => format!("{runbook} (team `{team}`)"),
            (None, true) => format!("{runbook}, which belongs to no team,"),
            (None, false) => runbook,
        }
    }

    fn section(&self) -> String {
        match &self.identity {
            Some(id) if id.contains('/') => format!("[runbooks.\"{id}\"]"),
            Some(id) => format!("[runbooks.{id}]"),
            None => "[runbooks]".to_owned(),
        }
    }

    /// Whether this run may call plugin instance `plugin` at all.
    pub fn may_call(&self, plugin: &str) -> Result<(), Denial> {
        if let Some(list) = &self.rules.plugins
            && !list.iter().any(|p| p == plugin)
        {
            return Err(Denial(format!(
                "{} may not call plugin `{plugin}`: {} plugins = [{}] does not name it",
                self.who(),
                self.section(),
                list.iter()
                    .map(|p| format!("\"{p}\""))
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        if !self.policy.has_teams() {
            return Ok(());
        }
        let owner = self.policy.team_of_plugin(plugin);
        let Some(team) = &self.team else {
            return Err(Denial(format!(
                "{} may not call plugin `{plugin}`: on a runner with teams, only a team's \
                 runbooks (in a folder of [teams.NAME] runbooks) call plugins",
                self.who()
            )));
        };
        if owner == Some(team.as_str()) {
            return Ok(());
        }
        let shared = self
            .policy
            .plugins
            .get(plugin)
            .is_some_and(|p| p.shared_with.iter().any(|t| t == "*" || t == team));
        if shared {
            return Ok(());
        }
        Err(Denial(format!(
            "{} may not call plugin `{plugin}`, which {}; add \"{team}\" to shared_with in \
             [plugins.{plugin}] to share it",
            self.who(),
            match owner {
                Some(o) => format!("belongs to team `{o}`"),
                None => "belongs to no team".to_owned(),
            }
        )))
    }

    /// Whether this run may read or write store name `name`.
    pub fn may_use_secret(&self, name: &str) -> Result<(), Denial> {
        if !self.rules.secrets.iter().any(|s| s == name) {
            return Err(Denial(match &self.identity {
                Some(id) => format!(
                    "runbook `{id}` is not granted secret `{name}`; grant it in keycycle.toml \
                     under {} secrets = [\"{name}\"]",
                    self.section()
                ),
                None => format!(
                    "{} is not granted secret `{name}`: grants go to runbooks by their path \
                     inside the runbooks folder; move it there and grant it under \
                     [runbooks.NAME] secrets",
                    self.who()
                ),
            }));
        }
        if !self.policy.has_teams() {
            return Ok(());
        }
        let owners = self.owners_of_name(name);
        match &self.team {
            Some(team) if owners.iter().any(|o| o == team) => Ok(()),
            _ => Err(Denial(format!(
                "{} may not use secret `{name}`, which {}; a team uses only the store names \
                 its [teams.NAME] secrets patterns cover",
                self.who(),
                describe_owners(&owners)
            ))),
        }
    }

    fn owners_of_name(&self, name: &str) -> Vec<String> {
        self.policy
            .teams
            .iter()
            .filter(|(_, t)| t.secrets.matches(name))
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// The teams a label belongs to.
    fn owners(&self, label: &Label) -> Vec<String> {
        match label {
            Label::Stored(name) => self.owners_of_name(name),
            Label::Minted(plugin) => self
                .policy
                .team_of_plugin(plugin)
                .map(|t| vec![t.to_owned()])
                .unwrap_or_default(),
            Label::Input(_) | Label::Random => self.team.iter().cloned().collect(),
        }
    }

    /// The flow rules that apply to this run: the global ones, then its
    /// team's.
    fn flows(&self) -> impl Iterator<Item = &Flow> {
        let team = self
            .team
            .as_ref()
            .and_then(|t| self.policy.teams.get(t))
            .map(|t| t.flows.as_slice())
            .unwrap_or_default();
        self.policy.flows.iter().chain(team)
    }

    /// Whether a secret with these labels may be sent to `plugin`. A
    /// secret no label is known for (built by the runbook from parts) is
    /// the run's own.
    pub fn may_send(&self, labels: &[Label], plugin: &str) -> Result<(), Denial> {
        for label in labels {
            self.may_send_one(label, plugin)?;
        }
        Ok(())
    }

    fn may_send_one(&self, label: &Label, plugin: &str) -> Result<(), Denial> {
        let text = label.to_string();
        let rules: Vec<&Flow> = self.flows().filter(|f| f.secrets.matches(&text)).collect();
        if !rules.is_empty() {
            if rules.iter().any(|f| f.to.matches(plugin)) {
                return Ok(());
            }
            return Err(Denial(format!(
                "secret `{text}` may not be sent to plugin `{plugin}` by {}: {}",
                self.who(),
                rules
                    .iter()
                    .map(|f| format!(
                        "{} (secrets = [{}]) sends it only to [{}]",
                        f.at,
                        f.secrets.texts(),
                        f.to.texts()
                    ))
                    .collect::<Vec<_>>()
                    .join("; ")
            )));
        }
        if !self.policy.has_teams() {
            return Ok(());
        }
        let owners = self.owners(label);
        let dest = self.policy.team_of_plugin(plugin);
        if dest.is_some_and(|d| owners.iter().any(|o| o == d)) {
            return Ok(());
        }
        let team = self.team.as_deref().unwrap_or("NAME");
        Err(Denial(format!(
            "secret `{text}` may not be sent to plugin `{plugin}` by {}: the secret {}, and \
             the plugin {}; a team's secrets go only to its own plugins unless a \
             [[teams.{team}.flows]] rule names `{text}` and `{plugin}`",
            self.who(),
            describe_owners(&owners),
            match dest {
                Some(d) => format!("belongs to team `{d}`"),
                None => "belongs to no team".to_owned(),
            }
        )))
    }

    /// Whether the runbook may hand a credential to `value`, a destination
    /// of `kind` (`gitlab_variable`, `store_as`, ...). A kind nobody pinned
    /// is allowed.
    pub fn destination(&self, kind: &str, value: &str) -> Result<(), Denial> {
        let team = self.team.as_ref().and_then(|t| self.policy.teams.get(t));
        let rules = if let Some(list) = self.rules.destinations.get(kind) {
            Some((
                format!(
                    "{}.destinations] {kind}",
                    self.section().trim_end_matches(']')
                ),
                Patterns::new(list, kind).map_err(|e| Denial(e.0))?,
            ))
        } else if let Some(p) = team.and_then(|t| t.destinations.get(kind)) {
            Some((
                format!(
                    "[teams.{}.destinations] {kind}",
                    self.team.as_deref().unwrap_or_default()
                ),
                p.clone(),
            ))
        } else {
            self.policy
                .destinations
                .get(kind)
                .map(|p| (format!("[destinations] {kind}"), p.clone()))
        };
        match rules {
            None => Ok(()),
            Some((_, patterns)) if patterns.matches(value) => Ok(()),
            Some((at, patterns)) => Err(Denial(format!(
                "{} may not send a credential to {kind} `{value}`: {at} = [{}] does not allow \
                 it; the destination came from the run's parameters, so check them, or ask \
                 the runner's operator to allow it",
                self.who(),
                patterns.texts()
            ))),
        }
    }
}

fn describe_owners(owners: &[String]) -> String {
    match owners {
        [] => "belongs to no team".to_owned(),
        [one] => format!("belongs to team `{one}`"),
        many => format!(
            "belongs to teams {}",
            many.iter()
                .map(|t| format!("`{t}`"))
                .collect::<Vec<_>>()
                .join(" and ")
        ),
    }
}

/// Plugin instances no run can call: with teams declared, a plugin no team
/// owns or is shared with is dead configuration (`keycycle doctor` says so).
pub fn unowned_plugins(policy: &Policy) -> BTreeSet<String> {
    policy
        .plugins
        .iter()
        .filter(|(name, rules)| {
            policy.has_teams()
                && !policy.plugin_owner.contains_key(*name)
                && rules.shared_with.is_empty()
        })
        .map(|(name, _)| name.clone())
        .collect()
}

#[cfg(test)]
mod tests;
