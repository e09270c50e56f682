//! `keycycle.toml`: where it is found, what it holds, and how per-environment
//! overlays combine with the base grants.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use keycycle_host::{Grants, Limits, Trust, parse_public_key};
use keycycle_inventory::CredentialSection;
use keycycle_policy::{FlowSection, PluginRules, Policy, PolicyConfig, RunbookRules, TeamSection};
use serde::Deserialize;

/// The config file as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// Journal, secrets store and master key live here.
    pub state_dir: Option<PathBuf>,
    /// The run state in PostgreSQL, shared by several runners:
    /// `postgres://USER@HOST:PORT/DB?sslmode=…` (libpq's URL, without a
    /// password). By default the run state is `STATE_DIR/state.db`.
    pub state: Option<String>,
    /// A file (0600) holding the PostgreSQL password, when neither
    /// KEYCYCLE_STATE_PASSWORD nor PGPASSWORD is set.
    pub state_password_file: Option<PathBuf>,
    /// Runbooks are looked up here, and imports may not leave it.
    pub runbooks_dir: Option<PathBuf>,
    /// Precompiled plugins are cached here.
    pub cache_dir: Option<PathBuf>,
    /// The key that authenticates cache entries; `STATE_DIR/cache.key` by
    /// default.
    pub cache_key_file: Option<PathBuf>,
    #[serde(default)]
    pub secrets: SecretsSection,
    #[serde(default)]
    pub trust: TrustSection,
    #[serde(default)]
    pub plugins: BTreeMap<String, PluginSection>,
    /// By the runbook's path inside the runbooks folder, without `.rhai`.
    #[serde(default)]
    pub runbooks: BTreeMap<String, RunbookSection>,
    #[serde(default)]
    pub approvals: ApprovalsSection,
    /// Teams on a shared runner: what each owns. Without any, the runner
    /// has one team and today's rules.
    #[serde(default)]
    pub teams: BTreeMap<String, TeamSection>,
    /// Where secrets may be sent, for every run.
    #[serde(default)]
    pub flows: Vec<FlowSection>,
    /// Allowed destinations by kind, for every runbook that pins none.
    #[serde(default)]
    pub destinations: BTreeMap<String, Vec<String>>,
    /// The inventory: every credential this runner looks after.
    #[serde(default)]
    pub credentials: BTreeMap<String, CredentialSection>,
    /// More inventory, in a file of `[credentials.ID]` sections (a team's
    /// list kept apart from the runner's settings).
    pub credentials_file: Option<PathBuf>,
}

/// A file of `[credentials.ID]` sections.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CredentialsFile {
    #[serde(default)]
    credentials: BTreeMap<String, CredentialSection>,
}

/// Who may approve approval gates (users, or `group:NAME`). The person who
/// started a run never approves its own request.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalsSection {
    /// For gates no runbook section names approvers for.
    #[serde(default)]
    pub approvers: Vec<String>,
    /// Per environment: a gate that names the environment needs one of
    /// these too.
    #[serde(default)]
    pub environments: BTreeMap<String, EnvironmentApprovers>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvironmentApprovers {
    pub approvers: Vec<String>,
}

/// Who may have signed the plugins, and whether a signature is required.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustSection {
    /// Team name → minisign public key: the base64 key line, or the path of
    /// the team's `.pub` file.
    #[serde(default)]
    pub keys: BTreeMap<String, String>,
    /// Refuse every plugin that is not signed by a trusted key (by its
    /// `signed_by` team's key when it names one).
    #[serde(default)]
    pub require_signed: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretsSection {
    /// The master key file; `KEYCYCLE_MASTER_KEY` takes precedence. The
    /// master key stays local whatever the backend: it seals the journal.
    pub key_file: Option<PathBuf>,
    /// The encrypted store file.
    pub store: Option<PathBuf>,
    /// Where secrets live: `local` (the encrypted file, the default), or
    /// `openbao` / `vault` (a KV v2 mount of OpenBao or HashiCorp Vault).
    pub backend: Option<String>,
    /// The server, `https://HOST:PORT` (backend `openbao`/`vault`).
    pub address: Option<String>,
    /// The KV v2 mount; `secret` by default.
    pub mount: Option<String>,
    /// Prepended to every secret name to make its KV path (`keycycle/`).
    pub prefix: Option<String>,
    /// A PEM file of CA certificates that replace the public roots.
    pub ca_cert: Option<PathBuf>,
    /// `token` (the default) or `approle`.
    pub auth: Option<String>,
    /// The token, when VAULT_TOKEN and BAO_TOKEN are not set.
    pub token_file: Option<PathBuf>,
    /// The AppRole role id, when VAULT_ROLE_ID and BAO_ROLE_ID are not set.
    pub role_id_file: Option<PathBuf>,
    /// The AppRole secret id, when VAULT_SECRET_ID and BAO_SECRET_ID are not
    /// set.
    pub secret_id_file: Option<PathBuf>,
    /// Where the AppRole auth method is mounted; `approle` by default.
    pub approle_mount: Option<String>,
}

/// Where the secrets live.
#[derive(Debug, Clone)]
pub enum SecretsBackend {
    /// The encrypted file `store_file`.
    Local,
    /// A KV v2 mount of OpenBao or Vault.
    Kv(Box<KvSettings>),
}

/// `[secrets]` of a KV backend, paths made absolute. Credentials from the
/// environment are looked up when the backend is first used.
#[derive(Debug, Clone)]
pub struct KvSettings {
    /// `openbao` or `vault`, as written: it names the server in messages.
    pub kind: String,
    pub address: String,
    pub mount: String,
    pub prefix: String,
    pub ca_cert: Option<PathBuf>,
    pub auth: KvAuth,
    pub token_file: Option<PathBuf>,
    pub role_id_file: Option<PathBuf>,
    pub secret_id_file: Option<PathBuf>,
    pub approle_mount: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvAuth {
    Token,
    AppRole,
}

impl SecretsSection {
    /// The backend this section chooses, checked: settings of one backend
    /// given to another are a mistake, not something to ignore.
    fn backend(&self, abs: &dyn Fn(&Path) -> PathBuf) -> Result<SecretsBackend> {
        let kind = self.backend.as_deref().unwrap_or("local");
        let kv_settings = [
            ("address", self.address.is_some()),
            ("mount", self.mount.is_some()),
            ("prefix", self.prefix.is_some()),
            ("ca_cert", self.ca_cert.is_some()),
            ("auth", self.auth.is_some()),
            ("token_file", self.token_file.is_some()),
            ("role_id_file", self.role_id_file.is_some()),
            ("secret_id_file", self.secret_id_file.is_some()),
            ("approle_mount", self.approle_mount.is_some()),
        ];
        match kind {
            "local" => {
                if let Some((name, _)) = kv_settings.iter().find(|(_, given)| *given) {
                    bail!(
                        "[secrets] {name} is a setting of backend \"openbao\" or \"vault\", and the \
                         backend is \"local\"; set backend = \"openbao\" or remove {name}"
                    );
                }
                Ok(SecretsBackend::Local)
            }
            "openbao" | "vault" => {
                if self.store.is_some() {
                    bail!(
                        "[secrets] store is the local store's file, and the backend is \"{kind}\"; \
                         remove store (the master key stays local: it seals the journal)"
                    );
                }
                let Some(address) = self.address.clone().filter(|a| !a.trim().is_empty()) else {
                    bail!(
                        "[secrets] backend = \"{kind}\" needs address = \"https://HOST:PORT\" (the \
                         address is never taken from the environment, so a stray VAULT_ADDR cannot \
                         send secrets elsewhere)"
                    );
                };
                let auth = match self.auth.as_deref().unwrap_or("token") {
                    "token" => KvAuth::Token,
                    "approle" => KvAuth::AppRole,
                    other => bail!(
                        "[secrets] auth = \"{other}\" is not known; use \"token\" or \"approle\""
                    ),
                };
                match auth {
                    KvAuth::Token
                        if self.role_id_file.is_some() || self.secret_id_file.is_some() =>
                    {
                        bail!(
                            "[secrets] role_id_file and secret_id_file are for auth = \"approle\", and \
                             auth is \"token\""
                        )
                    }
                    KvAuth::AppRole if self.token_file.is_some() => bail!(
                        "[secrets] token_file is for auth = \"token\", and auth is \"approle\""
                    ),
                    _ => {}
                }
                Ok(SecretsBackend::Kv(Box::new(KvSettings {
                    kind: kind.to_owned(),
                    address,
                    mount: self
                        .mount
                        .clone()
                        .unwrap_or_else(|| keycycle_vault::DEFAULT_MOUNT.to_owned()),
                    prefix: self.prefix.clone().unwrap_or_default(),
                    ca_cert: self.ca_cert.as_deref().map(abs),
                    auth,
                    token_file: self.token_file.as_deref().map(abs),
                    role_id_file: self.role_id_file.as_deref().map(abs),
                    secret_id_file: self.secret_id_file.as_deref().map(abs),
                    approle_mount: self
                        .approle_mount
                        .clone()
                        .unwrap_or_else(|| keycycle_vault::DEFAULT_APPROLE_MOUNT.to_owned()),
                })))
            }
            other => bail!(
                "[secrets] backend = \"{other}\" is not known; use \"local\" (the encrypted file), \
                 \"openbao\" or \"vault\""
            ),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginSection {
    /// The component file (`.wasm`).
    pub path: PathBuf,
    /// Pins the component file: its hex sha256 (`keycycle plugins hash`).
    pub sha256: Option<String>,
    /// The `[trust] keys` team whose signature (`FILE.minisig`) the file
    /// must carry.
    pub signed_by: Option<String>,
    /// Teams other than its owner whose runs may call this instance (`*`:
    /// every team).
    #[serde(default)]
    pub shared_with: Vec<String>,
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Secret name the plugin asks for → name in the store.
    #[serde(default)]
    pub secrets: BTreeMap<String, String>,
    #[serde(default)]
    pub config: BTreeMap<String, String>,
    /// A PEM file of CA certificates that replace the public roots for this
    /// plugin's HTTPS (a cluster's own CA, for instance).
    pub ca_cert: Option<PathBuf>,
    pub memory_mb: Option<usize>,
    pub timeout_secs: Option<u64>,
    pub max_output_kb: Option<usize>,
    /// Link the filesystem and socket interfaces that Python and JavaScript
    /// runtimes import, inert (see `keycycle_host::INERT_IMPORTS`).
    #[serde(default)]
    pub inert_wasi: bool,
    /// Overlays selected with `--env NAME`.
    #[serde(default)]
    pub envs: BTreeMap<String, PluginOverlay>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginOverlay {
    /// Replaces the base list when given.
    pub hosts: Option<Vec<String>>,
    /// Merged over the base, key by key.
    #[serde(default)]
    pub secrets: BTreeMap<String, String>,
    #[serde(default)]
    pub config: BTreeMap<String, String>,
    /// Replaces the base CA file when given.
    pub ca_cert: Option<PathBuf>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunbookSection {
    /// Store names the runbook may read with `secret()` and write with
    /// `store_secret()`.
    #[serde(default)]
    pub secrets: Vec<String>,
    /// Who may approve this runbook's gates; replaces `[approvals]
    /// approvers` and the runbook's own list.
    #[serde(default)]
    pub approvers: Option<Vec<String>>,
    /// The plugin instances it may call; every one its team may when not
    /// given.
    pub plugins: Option<Vec<String>>,
    /// Allowed destinations by kind (`gitlab_variable`, `store_as`, ...),
    /// checked by the runbook's `destination(kind, value)`.
    #[serde(default)]
    pub destinations: BTreeMap<String, Vec<String>>,
}

/// The config with every path made absolute.
#[derive(Debug)]
pub struct Config {
    pub file: Option<PathBuf>,
    pub found_by: FoundBy,
    /// Holds the master key, secrets store and run state by default.
    pub state_dir: PathBuf,
    /// Where the run state is: `STATE_DIR/state.db` or PostgreSQL.
    pub state: StateLocation,
    pub runbooks_dir: PathBuf,
    pub cache_dir: PathBuf,
    pub cache_key_file: PathBuf,
    pub key_file: PathBuf,
    pub store_file: PathBuf,
    /// Where secrets live: the file `store_file`, or OpenBao/Vault.
    pub secrets_backend: SecretsBackend,
    pub plugins: BTreeMap<String, PluginSection>,
    pub runbooks: BTreeMap<String, RunbookSection>,
    pub approvals: ApprovalsSection,
    /// `[trust] keys`, each key's text read (from its file when it named one).
    pub trust_keys: BTreeMap<String, String>,
    pub require_signed: bool,
    /// Who may use what: teams, flows, destinations, runbook grants.
    pub policy: std::sync::Arc<Policy>,
    /// The inventory's sections written in the config itself, by id.
    inline_credentials: BTreeMap<String, CredentialSection>,
    /// `credentials_file`, made absolute.
    credentials_file: Option<PathBuf>,
    /// The whole inventory, once a command asked for it.
    credentials: std::sync::OnceLock<BTreeMap<String, CredentialSection>>,
}

/// Where the run state (runs, journal, locks, deferred actions, approvals,
/// the inventory's records) is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateLocation {
    /// `STATE_DIR/state.db`, this runner's own.
    Local,
    /// A PostgreSQL database several runners share.
    Postgres {
        /// libpq's URL form, without a password (one is refused).
        url: String,
        /// Where the password is when the environment has none.
        password_file: Option<PathBuf>,
    },
}

/// The `state` setting, checked: a `postgres://` URL without a password.
fn state_location(state: Option<&str>, password_file: Option<PathBuf>) -> Result<StateLocation> {
    let Some(url) = state else {
        if password_file.is_some() {
            bail!(
                "state_password_file is set but state is not a postgres:// URL; the local \
                 state database needs no password"
            );
        }
        return Ok(StateLocation::Local);
    };
    if !keycycle_store::state::is_postgres_url(url) {
        bail!(
            "state = {:?} is not a postgres:// URL; for the local state database leave state \
             out and set state_dir instead",
            keycycle_store::state::mask_url(url)
        );
    }
    let masked = keycycle_store::state::mask_url(url);
    if masked != url || url.contains("password=") {
        bail!(
            "state = \"{}\" holds a password; take it out of the config and give it in \
             KEYCYCLE_STATE_PASSWORD or PGPASSWORD, or in a file named by state_password_file",
            if masked != url {
                masked
            } else {
                "postgres://…?password=***".to_owned()
            }
        );
    }
    Ok(StateLocation::Postgres {
        url: url.to_owned(),
        password_file,
    })
}

/// How the config file was found, for `-v` and `keycycle doctor`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FoundBy {
    Flag,
    Env,
    /// `keycycle.toml` in the current folder or the nearest parent that
    /// has one, the way cargo finds `Cargo.toml`.
    Search,
    /// No config file: every setting has its default.
    Defaults,
}

impl FoundBy {
    /// Where the config came from, in a word or two (`keycycle doctor`).
    pub fn describe(&self) -> &'static str {
        match self {
            FoundBy::Flag => "--config",
            FoundBy::Env => "KEYCYCLE_CONFIG",
            FoundBy::Search => "keycycle.toml found from the current folder",
            FoundBy::Defaults => "none (built-in defaults)",
        }
    }
}

impl std::fmt::Display for FoundBy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FoundBy::Flag => "given with --config",
            FoundBy::Env => "given with KEYCYCLE_CONFIG",
            FoundBy::Search => "found in the current folder or a parent",
            FoundBy::Defaults => "no keycycle.toml in the current folder or its parents",
        })
    }
}

fn explicit_file(p: &Path, how: &str) -> Result<PathBuf> {
    if p.is_dir() {
        let inside = p.join("keycycle.toml");
        bail!(
            "{} is a folder, and the config is a file ({how}); pass {}",
            p.display(),
            if inside.is_file() {
                format!("{} instead", inside.display())
            } else {
                "the path of a keycycle.toml".to_owned()
            }
        );
    }
    if !p.is_file() {
        bail!("config file {} does not exist ({how})", p.display());
    }
    Ok(p.to_owned())
}

/// `--config`, then `KEYCYCLE_CONFIG`, then `keycycle.toml` in the current
/// folder or its nearest parent. A path given explicitly must exist; the
/// default may be absent.
pub fn locate(explicit: Option<&Path>) -> Result<(Option<PathBuf>, FoundBy)> {
    if let Some(p) = explicit {
        return Ok((
            Some(explicit_file(p, "given with --config")?),
            FoundBy::Flag,
        ));
    }
    if let Some(p) = std::env::var_os("KEYCYCLE_CONFIG").filter(|v| !v.is_empty()) {
        let p = explicit_file(Path::new(&p), "given with KEYCYCLE_CONFIG")?;
        return Ok((Some(p), FoundBy::Env));
    }
    // An operator in `runbooks/` of a keycycle folder means that folder's
    // config, not the user's default state.
    let cwd = std::env::current_dir().context("cannot read the current folder")?;
    for dir in cwd.ancestors() {
        let candidate = dir.join("keycycle.toml");
        if candidate.is_file() {
            return Ok((Some(candidate), FoundBy::Search));
        }
    }
    Ok((None, FoundBy::Defaults))
}

pub fn load(explicit: Option<&Path>) -> Result<Config> {
    let (file, found_by) = locate(explicit)?;
    let (parsed, base) = match &file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read config file {}", path.display()))?;
            let parsed: ConfigFile = toml::from_str(&text)
                .map_err(|e| anyhow::anyhow!("{}: {}", path.display(), e.to_string().trim_end()))?;
            let base = path
                .canonicalize()
                .with_context(|| format!("cannot resolve {}", path.display()))?
                .parent()
                .map(Path::to_owned)
                .unwrap_or_else(|| PathBuf::from("."));
            (parsed, base)
        }
        None => (ConfigFile::default(), std::env::current_dir()?),
    };
    let abs = |p: &Path| {
        if p.is_absolute() {
            p.to_owned()
        } else {
            base.join(p)
        }
    };

    let state_dir = match &parsed.state_dir {
        Some(p) => abs(p),
        None => default_state_dir()?,
    };
    let cache_dir = match &parsed.cache_dir {
        Some(p) => abs(p),
        None => default_cache_dir().unwrap_or_else(|| state_dir.join("cache")),
    };
    let in_file = |e: anyhow::Error| match &file {
        Some(f) => anyhow::anyhow!("{}: {e:#}", f.display()),
        None => e,
    };
    let secrets_backend = parsed.secrets.backend(&abs).map_err(in_file)?;
    let state = state_location(
        parsed.state.as_deref(),
        parsed.state_password_file.as_deref().map(abs),
    )
    .map_err(in_file)?;
    let mut trust_keys = BTreeMap::new();
    for (team, value) in &parsed.trust.keys {
        let key = trust_key(team, value, &abs).map_err(in_file)?;
        trust_keys.insert(team.clone(), key);
    }
    let mut plugins = parsed.plugins;
    for (name, plugin) in plugins.iter_mut() {
        validate_name(name).with_context(|| format!("[plugins.{name}]"))?;
        if let Some(pin) = &plugin.sha256
            && (pin.len() != 64 || !pin.chars().all(|c| c.is_ascii_hexdigit()))
        {
            return Err(in_file(anyhow::anyhow!(
                "[plugins.{name}] sha256 = \"{pin}\" is not a sha256 (64 hex digits); \
                 `keycycle plugins hash FILE` prints a file's"
            )));
        }
        if let Some(team) = &plugin.signed_by
            && !trust_keys.contains_key(team)
        {
            return Err(in_file(anyhow::anyhow!(
                "[plugins.{name}] signed_by = \"{team}\" names no key in [trust] keys (known: {})",
                if trust_keys.is_empty() {
                    "none".to_owned()
                } else {
                    trust_keys.keys().cloned().collect::<Vec<_>>().join(", ")
                }
            )));
        }
        plugin.path = abs(&plugin.path);
        plugin.ca_cert = plugin.ca_cert.as_deref().map(abs);
        for overlay in plugin.envs.values_mut() {
            overlay.ca_cert = overlay.ca_cert.as_deref().map(abs);
        }
        // Every command checks the limits, not only those that load
        // plugins: a config that cannot run is wrong everywhere.
        if let Err(e) = plugin.limits(name) {
            match &file {
                Some(f) => bail!("{}: {e}", f.display()),
                None => return Err(e),
            }
        }
    }
    let credentials = parsed.credentials;
    for (id, section) in &credentials {
        validate_credential(id, section, &plugins).map_err(in_file)?;
    }
    let policy = Policy::new(&PolicyConfig {
        teams: parsed.teams,
        flows: parsed.flows,
        destinations: parsed.destinations,
        runbooks: parsed
            .runbooks
            .iter()
            .map(|(id, r)| {
                (
                    id.clone(),
                    RunbookRules {
                        secrets: r.secrets.clone(),
                        plugins: r.plugins.clone(),
                        destinations: r.destinations.clone(),
                    },
                )
            })
            .collect(),
        plugins: plugins
            .iter()
            .map(|(name, p)| {
                let mut store_names: Vec<String> = p.secrets.values().cloned().collect();
                for overlay in p.envs.values() {
                    store_names.extend(overlay.secrets.values().cloned());
                }
                (
                    name.clone(),
                    PluginRules {
                        shared_with: p.shared_with.clone(),
                        store_names,
                    },
                )
            })
            .collect(),
    })
    .map(std::sync::Arc::new)
    .map_err(|e| in_file(e.into()))?;
    Ok(Config {
        policy,
        inline_credentials: credentials,
        credentials_file: parsed.credentials_file.as_deref().map(abs),
        credentials: std::sync::OnceLock::new(),
        secrets_backend,
        runbooks_dir: parsed
            .runbooks_dir
            .as_deref()
            .map(abs)
            .unwrap_or_else(|| base.join("runbooks")),
        key_file: parsed
            .secrets
            .key_file
            .as_deref()
            .map(abs)
            .unwrap_or_else(|| state_dir.join("master.key")),
        store_file: parsed
            .secrets
            .store
            .as_deref()
            .map(abs)
            .unwrap_or_else(|| state_dir.join("secrets.json")),
        cache_key_file: parsed
            .cache_key_file
            .as_deref()
            .map(abs)
            .unwrap_or_else(|| state_dir.join("cache.key")),
        file,
        found_by,
        state_dir,
        state,
        cache_dir,
        trust_keys,
        require_signed: parsed.trust.require_signed,
        plugins,
        runbooks: parsed.runbooks,
        approvals: parsed.approvals,
    })
}

/// A `[trust] keys` value: a minisign public key, or the path of a file
/// holding one (relative to the config's folder).
fn trust_key(team: &str, value: &str, abs: &dyn Fn(&Path) -> PathBuf) -> Result<String> {
    validate_name(team).with_context(|| "[trust] keys".to_owned())?;
    if parse_public_key(value).is_ok() {
        return Ok(value.trim().to_owned());
    }
    let path = abs(Path::new(value.trim()));
    let text = std::fs::read_to_string(&path).map_err(|e| {
        anyhow::anyhow!(
            "[trust] keys.{team} is neither a minisign public key nor a readable key file \
             ({}: {e})",
            path.display()
        )
    })?;
    parse_public_key(&text)
        .map_err(|e| anyhow::anyhow!("[trust] keys.{team}: {}: {e}", path.display()))?;
    Ok(text)
}

fn validate_name(name: &str) -> Result<()> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        bail!("plugin name `{name}` must be letters, digits, `-` or `_`");
    }
    Ok(())
}

/// `$KEYCYCLE_STATE_DIR`, else `$XDG_STATE_HOME/keycycle`, else
/// `~/.local/state/keycycle`.
fn default_state_dir() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("KEYCYCLE_STATE_DIR").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    if let Some(p) = std::env::var_os("XDG_STATE_HOME").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(p).join("keycycle"));
    }
    match std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        Some(home) => Ok(PathBuf::from(home).join(".local/state/keycycle")),
        None => bail!(
            "cannot find a state directory: set state_dir in keycycle.toml or KEYCYCLE_STATE_DIR"
        ),
    }
}

fn default_cache_dir() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(p).join("keycycle/plugins"));
    }
    std::env::var_os("HOME")
        .filter(|v| !v.is_empty())
        .map(|home| PathBuf::from(home).join(".cache/keycycle/plugins"))
}

impl PluginSection {
    /// The plugin's limits, each checked: zero would make every call fail,
    /// and a huge value must not wrap around when turned into bytes.
    pub fn limits(&self, plugin: &str) -> Result<Limits> {
        let defaults = Limits::default();
        let check = |key: &str, value: Option<u64>, max: u64| -> Result<()> {
            match value {
                Some(0) => bail!("[plugins.{plugin}]: {key} must be above zero"),
                Some(v) if v > max => {
                    bail!("[plugins.{plugin}]: {key} = {v} is over the most keycycle allows, {max}")
                }
                _ => Ok(()),
            }
        };
        check("memory_mb", self.memory_mb.map(|v| v as u64), 16 * 1024)?;
        check("timeout_secs", self.timeout_secs, 24 * 3600)?;
        check(
            "max_output_kb",
            self.max_output_kb.map(|v| v as u64),
            1024 * 1024,
        )?;
        Ok(Limits {
            memory_bytes: self.memory_mb.map_or(defaults.memory_bytes, |mb| mb << 20),
            timeout: self
                .timeout_secs
                .map_or(defaults.timeout, Duration::from_secs),
            max_output_bytes: self
                .max_output_kb
                .map_or(defaults.max_output_bytes, |kb| kb << 10),
            ..defaults
        })
    }

    /// The grants for this plugin, with the `--env` overlay applied.
    pub fn grants(&self, plugin: &str, env: Option<&str>) -> Result<Grants> {
        let mut hosts = self.hosts.clone();
        let mut secrets = self.secrets.clone();
        let mut config = self.config.clone();
        let mut ca_cert = self.ca_cert.as_ref();
        if let Some(overlay) = env.and_then(|env| self.envs.get(env)) {
            if let Some(h) = &overlay.hosts {
                hosts = h.clone();
            }
            if let Some(ca) = &overlay.ca_cert {
                ca_cert = Some(ca);
            }
            secrets.extend(overlay.secrets.clone());
            config.extend(overlay.config.clone());
        }
        let limits = self.limits(plugin)?;
        let ca_pem = match ca_cert {
            Some(path) => Some(std::fs::read(path).with_context(|| {
                format!("[plugins.{plugin}] ca_cert: cannot read {}", path.display())
            })?),
            None => None,
        };
        Ok(Grants {
            hosts,
            secrets,
            config,
            ca_pem,
            limits,
            inert_wasi: self.inert_wasi,
        })
    }
}

/// The configured plugin instances as the engine loads them: each
/// section, its trust, and its grants worked out per environment on
/// demand (reading a `ca_cert` only for a plugin that is loaded).
pub struct ConfigCatalog {
    plugins: BTreeMap<String, (PluginSection, Trust)>,
}

impl keycycle_engine::Catalog for ConfigCatalog {
    fn names(&self) -> Vec<String> {
        self.plugins.keys().cloned().collect()
    }

    fn spec(&self, name: &str) -> Option<keycycle_engine::PluginSpec> {
        self.plugins
            .get(name)
            .map(|(section, trust)| keycycle_engine::PluginSpec {
                path: section.path.clone(),
                trust: trust.clone(),
            })
    }

    fn grants(&self, name: &str, env: Option<&str>) -> Result<Grants, String> {
        let (section, _) = self
            .plugins
            .get(name)
            .ok_or_else(|| format!("no plugin `{name}` is configured"))?;
        section.grants(name, env).map_err(|e| format!("{e:#}"))
    }
}

/// A credential's section is whole, and the plugin it reads its expiry
/// through is configured.
fn validate_credential(
    id: &str,
    section: &CredentialSection,
    plugins: &BTreeMap<String, PluginSection>,
) -> Result<()> {
    section.validate(id)?;
    if let Some(plugin) = section.expiry_plugin()
        && !plugins.contains_key(plugin)
    {
        bail!(
            "[credentials.{id}] reads its expiry through plugin `{plugin}`, which is not \
             configured"
        );
    }
    Ok(())
}

impl Config {
    /// The inventory: the config's own `[credentials.ID]` sections and
    /// those of `credentials_file`. That file is read and checked the first
    /// time a command asks, so the commands that do not use the inventory
    /// (`run`, `runs`, `show`, ...) do not pay for parsing a fleet's.
    pub fn credentials(&self) -> Result<&BTreeMap<String, CredentialSection>> {
        if let Some(all) = self.credentials.get() {
            return Ok(all);
        }
        let all = self.read_inventory()?;
        Ok(self.credentials.get_or_init(|| all))
    }

    fn read_inventory(&self) -> Result<BTreeMap<String, CredentialSection>> {
        let mut credentials = self.inline_credentials.clone();
        let Some(path) = &self.credentials_file else {
            return Ok(credentials);
        };
        let in_file = |e: anyhow::Error| match &self.file {
            Some(f) => anyhow::anyhow!("{}: {e:#}", f.display()),
            None => e,
        };
        let text = std::fs::read_to_string(path).map_err(|e| {
            in_file(anyhow::anyhow!(
                "credentials_file: cannot read {}: {e}; fix `credentials_file` in the config, \
                 or create the file (`keycycle doctor` checks it)",
                path.display()
            ))
        })?;
        let more: CredentialsFile = toml::from_str(&text)
            .map_err(|e| anyhow::anyhow!("{}: {}", path.display(), e.to_string().trim_end()))?;
        for (id, section) in more.credentials {
            if credentials.contains_key(&id) {
                return Err(in_file(anyhow::anyhow!(
                    "[credentials.{id}] is in both this file and {}; an id names one credential",
                    path.display()
                )));
            }
            validate_credential(&id, &section, &self.plugins)
                .map_err(|e| anyhow::anyhow!("{}: {e:#}", path.display()))?;
            credentials.insert(id, section);
        }
        Ok(credentials)
    }
}

impl Config {
    /// The plugin instances, for the engine's plugin pool.
    pub fn catalog(&self) -> ConfigCatalog {
        ConfigCatalog {
            plugins: self
                .plugins
                .iter()
                .map(|(name, section)| (name.clone(), (section.clone(), self.trust(name))))
                .collect(),
        }
    }

    /// What the operator trusts of a plugin's file: its pin, and the keys
    /// that may have signed it. A plugin that names `signed_by` must be
    /// signed by that team; under `require_signed`, one that names none
    /// must be signed by one of the trusted keys.
    pub fn trust(&self, plugin: &str) -> Trust {
        let section = &self.plugins[plugin];
        let signers = match &section.signed_by {
            Some(team) => vec![(team.clone(), self.trust_keys[team].clone())],
            None if self.require_signed => self
                .trust_keys
                .iter()
                .map(|(t, k)| (t.clone(), k.clone()))
                .collect(),
            None => Vec::new(),
        };
        Trust {
            sha256: section.sha256.clone(),
            signers,
            require_signed: self.require_signed || section.signed_by.is_some(),
        }
    }

    /// Whether any plugin defines the `--env` name; an unknown name is a
    /// typo that would silently run against the base config.
    pub fn check_env(&self, env: &str) -> Result<()> {
        let known: Vec<&str> = self
            .plugins
            .values()
            .flat_map(|p| p.envs.keys().map(String::as_str))
            .collect();
        if !known.contains(&env) {
            let mut known = known;
            known.sort_unstable();
            known.dedup();
            bail!(
                "environment `{env}` is not defined by any plugin (defined: {})",
                if known.is_empty() {
                    "none".to_owned()
                } else {
                    known.join(", ")
                }
            );
        }
        Ok(())
    }
}

impl Config {
    /// A runbook's identity: its path inside the runbooks folder, without
    /// `.rhai` and with `/` between folders (`payments/gitlab-token`).
    /// Grants and team ownership go by it, so a file of the same name
    /// elsewhere gets none: `None` for a runbook outside the folder (after
    /// links are resolved).
    pub fn runbook_identity(&self, canonical: &Path) -> Option<String> {
        let root = self.runbooks_dir.canonicalize().ok()?;
        let inside = canonical.strip_prefix(&root).ok()?;
        let inside = match inside.extension() {
            Some(ext) if ext == "rhai" => inside.with_extension(""),
            _ => inside.to_owned(),
        };
        let parts: Vec<String> = inside
            .components()
            .map(|c| match c {
                std::path::Component::Normal(s) => s.to_str().map(str::to_owned),
                _ => None,
            })
            .collect::<Option<_>>()?;
        (!parts.is_empty()).then(|| parts.join("/"))
    }
}
