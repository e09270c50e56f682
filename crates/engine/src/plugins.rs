//! The plugins of a process and of each run: one sandbox, each plugin
//! loaded once per environment, and loaded only when a run first needs it.
//!
//! Loading a plugin reads and hashes its file, checks its pin and
//! signature, maps its precompiled code and asks it to describe itself.
//! A runner configured with many plugins must not pay that for the ones a
//! runbook never calls, so a run's [`PluginSet`] loads a plugin the first
//! time the runbook names it (before the run starts, for the plugins its
//! source names literally; at the call, for a name computed at run time).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use keycycle_host::{Grants, HostError, Sandbox, SandboxConfig, SecretSource, Trust};
use keycycle_policy::RunPolicy;
use keycycle_store::state::PluginInfo;
use tokio::runtime::Handle;

use crate::LoadedPlugin;

/// What loading one configured plugin instance takes.
#[derive(Debug, Clone)]
pub struct PluginSpec {
    /// The component file.
    pub path: PathBuf,
    /// Its pin and the signatures it must carry.
    pub trust: Trust,
}

/// The configured plugin instances, as the operator's configuration
/// declares them. The CLI's config implements it.
pub trait Catalog: Send + Sync {
    /// Every configured instance, sorted.
    fn names(&self) -> Vec<String>;
    /// How to load `name`; `None` when no such instance is configured.
    fn spec(&self, name: &str) -> Option<PluginSpec>;
    /// What `name` is granted under `env` (the base grants without one).
    /// An error is the configuration's, said in its words.
    fn grants(&self, name: &str, env: Option<&str>) -> Result<Grants, String>;
}

/// A plugin's grants could not be worked out from the configuration.
#[derive(Debug, thiserror::Error)]
#[error("plugin `{plugin}`: {message}")]
pub struct GrantsError {
    pub plugin: String,
    pub message: String,
}

/// One sandbox, and each plugin loaded once per `--env`, for every run a
/// process makes: `keycycle rotate` runs many credentials on one wasmtime
/// engine and one compiled copy of each plugin.
pub struct PluginPool {
    sandbox: Sandbox,
    catalog: Arc<dyn Catalog>,
    secrets: Arc<dyn SecretSource>,
    loaded: tokio::sync::Mutex<BTreeMap<(String, Option<String>), LoadedPlugin>>,
}

impl PluginPool {
    pub fn new(
        config: &SandboxConfig,
        catalog: Arc<dyn Catalog>,
        secrets: Arc<dyn SecretSource>,
    ) -> Result<PluginPool, HostError> {
        Ok(PluginPool {
            sandbox: Sandbox::new(config)?,
            catalog,
            secrets,
            loaded: tokio::sync::Mutex::new(BTreeMap::new()),
        })
    }

    /// `name` as a run under `policy` sees it, loaded with the `env`
    /// overlay's grants the first time any run asks for it; `None` when
    /// no such plugin is configured. A plugin the policy does not let the
    /// run call is not loaded for it: it gets no grants, and the runbook
    /// meets the denial if it names it. A plugin that cannot be loaded is
    /// `Refused` with the reason; the runbook gets that if it uses it.
    pub async fn plugin(
        &self,
        name: &str,
        env: Option<&str>,
        policy: Option<&RunPolicy>,
    ) -> Result<Option<LoadedPlugin>, GrantsError> {
        let Some(spec) = self.catalog.spec(name) else {
            return Ok(None);
        };
        if let Some(Err(denied)) = policy.map(|p| p.may_call(name)) {
            return Ok(Some(LoadedPlugin::Refused {
                message: denied.0,
                denied: true,
            }));
        }
        let key = (name.to_owned(), env.map(str::to_owned));
        // Held across the load: two runs that want the same plugin at
        // once load it once.
        let mut loaded = self.loaded.lock().await;
        if let Some(plugin) = loaded.get(&key) {
            return Ok(Some(plugin.clone()));
        }
        let grants = self
            .catalog
            .grants(name, env)
            .map_err(|message| GrantsError {
                plugin: name.to_owned(),
                message,
            })?;
        let plugin = match self
            .sandbox
            .load_trusted(name, &spec.path, &grants, &spec.trust, self.secrets.clone())
            .await
        {
            Ok(plugin) => {
                let description = Arc::new(plugin.description().clone());
                LoadedPlugin::Ready {
                    plugin: Arc::new(plugin),
                    description,
                    gate: Arc::default(),
                }
            }
            Err(e) => {
                tracing::debug!(plugin = %name, "plugin not loaded: {e}");
                LoadedPlugin::Refused {
                    denied: e.is_denied(),
                    message: e.to_string(),
                }
            }
        };
        loaded.insert(key, plugin.clone());
        Ok(Some(plugin))
    }

    /// Every configured plugin (or each in `only`) as [`Self::plugin`]
    /// gives it: for the commands that look at all of them (`doctor`,
    /// `plugins`, `cleanup`, `check`), not for a run.
    pub async fn all(
        &self,
        env: Option<&str>,
        policy: Option<&RunPolicy>,
        only: Option<&std::collections::BTreeSet<String>>,
    ) -> Result<BTreeMap<String, LoadedPlugin>, GrantsError> {
        let mut plugins = BTreeMap::new();
        for name in self.catalog.names() {
            if only.is_some_and(|names| !names.contains(&name)) {
                continue;
            }
            if let Some(plugin) = self.plugin(&name, env, policy).await? {
                plugins.insert(name, plugin);
            }
        }
        Ok(plugins)
    }
}

/// The plugins of one run: each loaded from the pool the first time the
/// run names it, and then the same for the rest of the run.
pub struct PluginSet {
    pool: Arc<PluginPool>,
    env: Option<String>,
    policy: RunPolicy,
    rt: Handle,
    seen: Mutex<BTreeMap<String, LoadedPlugin>>,
}

impl PluginSet {
    pub fn new(pool: Arc<PluginPool>, env: Option<String>, policy: RunPolicy) -> PluginSet {
        PluginSet {
            pool,
            env,
            policy,
            rt: Handle::current(),
            seen: Mutex::new(BTreeMap::new()),
        }
    }

    /// Every configured instance's name, loaded or not.
    pub fn names(&self) -> Vec<String> {
        self.pool.catalog.names()
    }

    /// Loads `name` for this run, if it is not yet.
    pub async fn load(&self, name: &str) -> Result<Option<LoadedPlugin>, GrantsError> {
        if let Some(plugin) = self.seen().get(name) {
            return Ok(Some(plugin.clone()));
        }
        let plugin = self
            .pool
            .plugin(name, self.env.as_deref(), Some(&self.policy))
            .await?;
        if let Some(plugin) = &plugin {
            self.seen().insert(name.to_owned(), plugin.clone());
        }
        Ok(plugin)
    }

    /// [`Self::load`] from the runbook's thread, which is not one of the
    /// runtime's: a plugin named only at run time is loaded at its first
    /// call. A configuration error becomes a refusal the runbook meets.
    pub fn get(&self, name: &str) -> Option<LoadedPlugin> {
        if let Some(plugin) = self.seen().get(name) {
            return Some(plugin.clone());
        }
        match self.rt.block_on(self.load(name)) {
            Ok(plugin) => plugin,
            Err(e) => Some(LoadedPlugin::Refused {
                message: e.to_string(),
                denied: false,
            }),
        }
    }

    /// What the run has loaded so far, for its record: name, the plugin's
    /// own name and version, and the file's digest.
    pub fn loaded(&self) -> Vec<PluginInfo> {
        self.seen()
            .iter()
            .filter_map(|(name, p)| match p {
                LoadedPlugin::Ready {
                    plugin,
                    description,
                    ..
                } => Some(PluginInfo {
                    name: name.clone(),
                    plugin: description.name.clone(),
                    version: description.version.clone(),
                    sha256: plugin.sha256().to_owned(),
                }),
                LoadedPlugin::Refused { .. } => None,
            })
            .collect()
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, LoadedPlugin>> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner())
    }
}
