//! Access to the secrets, wherever `[secrets] backend` keeps them: the local
//! encrypted file (finding the master key, opening the store on first use,
//! registering every value it holds with the redactor), or a KV v2 mount of
//! OpenBao or Vault (`keycycle-vault`, every value registered as it is
//! read). Either way the engine and the sandbox see the same two traits.
//!
//! The master key is needed with both: it seals what the journal records
//! of secrets and keys its fingerprints, so it stays local even when the
//! secrets do not.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, anyhow};
use keycycle_secret::SecretValue;
use keycycle_store::{MasterKey, SecretStore, validate_name};
use keycycle_vault::{Auth, Credential, KvConfig, KvStore, MountKind, VaultError};

use crate::config::{Config, KvAuth, KvSettings, SecretsBackend};
use crate::exit::Code;

pub const KEY_ENV: &str = "KEYCYCLE_MASTER_KEY";

/// The environment variables a token is taken from, in this order: the
/// names the `vault` and `bao` programs read.
pub const TOKEN_ENV: [&str; 2] = ["VAULT_TOKEN", "BAO_TOKEN"];
pub const ROLE_ID_ENV: [&str; 2] = ["VAULT_ROLE_ID", "BAO_ROLE_ID"];
pub const SECRET_ID_ENV: [&str; 2] = ["VAULT_SECRET_ID", "BAO_SECRET_ID"];

pub struct StoreAccess {
    store_file: PathBuf,
    key_file: PathBuf,
    backend: Backend,
}

enum Backend {
    Local(Mutex<Option<SecretStore>>),
    Kv {
        settings: KvSettings,
        /// Started on first use, so commands that never touch a secret
        /// never need the server or its credentials.
        client: Mutex<Option<Arc<KvStore>>>,
    },
}

impl StoreAccess {
    pub fn new(config: &Config) -> StoreAccess {
        StoreAccess {
            store_file: config.store_file.clone(),
            key_file: config.key_file.clone(),
            backend: match &config.secrets_backend {
                SecretsBackend::Local => Backend::Local(Mutex::new(None)),
                SecretsBackend::Kv(settings) => Backend::Kv {
                    settings: (**settings).clone(),
                    client: Mutex::new(None),
                },
            },
        }
    }

    pub fn key_file(&self) -> &std::path::Path {
        &self.key_file
    }

    /// The master key: `KEYCYCLE_MASTER_KEY`, else the key file.
    pub fn master_key(&self) -> Result<MasterKey> {
        let from_env = crate::hardening::env_master_key()
            .map(str::to_owned)
            .or_else(|| {
                // Unit tests do not go through `main`.
                std::env::var(KEY_ENV).ok().filter(|v| !v.is_empty())
            });
        if let Some(value) = from_env {
            let value = zeroize::Zeroizing::new(value);
            return MasterKey::from_base64(&value)
                .with_context(|| format!("{KEY_ENV} is not a usable master key"))
                .context(Code::Config);
        }
        if !self.key_file.exists() {
            return Err(anyhow!(
                "no master key: set {KEY_ENV}, or create the key file {} with `keycycle secrets init`",
                self.key_file.display()
            ))
            .context(Code::Config);
        }
        MasterKey::load_file(&self.key_file).context(Code::Config)
    }

    /// The KV backend's settings, `None` for the local file.
    pub fn kv_settings(&self) -> Option<&KvSettings> {
        match &self.backend {
            Backend::Local(_) => None,
            Backend::Kv { settings, .. } => Some(settings),
        }
    }

    /// Where the secrets are, in words: for messages and `doctor`.
    pub fn describe(&self) -> String {
        match &self.backend {
            Backend::Local(_) => format!("the local store {}", self.store_file.display()),
            Backend::Kv { settings, .. } => describe_kv(settings),
        }
    }

    /// The KV client, started on first use; `None` for the local file.
    pub fn kv(&self) -> Result<Option<Arc<KvStore>>> {
        let Backend::Kv { settings, client } = &self.backend else {
            return Ok(None);
        };
        let mut guard = client.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(store) = &*guard {
            return Ok(Some(store.clone()));
        }
        let store = Arc::new(
            KvStore::new(kv_config(settings)?)
                .map_err(kv_error)
                .with_context(|| describe_kv(settings))?,
        );
        *guard = Some(store.clone());
        Ok(Some(store))
    }

    /// Runs `f` on the open local store, opening it first if needed. Only
    /// for the local backend (`secrets` commands check which it is).
    pub fn with<R>(&self, f: impl FnOnce(&mut SecretStore) -> Result<R>) -> Result<R> {
        let Backend::Local(inner) = &self.backend else {
            return Err(anyhow!(
                "the local secrets file is not in use: [secrets] backend is {}",
                self.describe()
            ))
            .context(Code::Internal);
        };
        let mut guard = inner.lock().unwrap_or_else(|p| p.into_inner());
        if guard.is_none() {
            let key = self.master_key()?;
            let store = SecretStore::open(&self.store_file, &key).context(Code::Config)?;
            // Values are registered for masking as they are decrypted. A
            // damaged entry has no value to mask and is skipped: it must not
            // make the other secrets unusable, and reading it fails by name.
            store.values().context(Code::Config)?;
            *guard = Some(store);
        }
        f(guard.as_mut().expect("opened above"))
    }

    /// Checks the secrets are usable before a run starts, so a wrong key
    /// or token is a configuration error then rather than a runbook
    /// failure at its first `secret()`. The local store is opened when it
    /// exists and a master key is at hand; a KV server is asked whether it
    /// takes the credentials and has KV v2 at the mount.
    pub fn check_key(&self) -> Result<()> {
        if let Some(kv) = self.kv()? {
            let status = kv
                .status()
                .map_err(kv_error)
                .with_context(|| self.describe())?;
            if let MountKind::Other(what) = status.mount {
                return Err(anyhow!(
                    "{}: the mount is {what}, not a KV version 2 mount; point [secrets] mount at \
                     one (`bao secrets enable -version=2 -path=NAME kv`)",
                    self.describe()
                ))
                .context(Code::Config);
            }
            return Ok(());
        }
        if !self.store_file.exists() || self.master_key().is_err() {
            return Ok(());
        }
        self.with(|_| Ok(()))
    }

    pub fn get(&self, name: &str) -> Result<Option<SecretValue>> {
        validate_name(name).context(Code::Config)?;
        match self.kv()? {
            Some(kv) => kv.get(name).map_err(kv_error),
            None => self.with(|s| Ok(s.get(name)?)),
        }
    }

    /// Stores `value` as `name`. In OpenBao/Vault this is a check-and-set
    /// write against the version this process read.
    pub fn set(&self, name: &str, value: &SecretValue) -> Result<()> {
        validate_name(name).context(Code::Config)?;
        match self.kv()? {
            Some(kv) => kv.set(name, value).map(|_| ()).map_err(kv_error),
            None => self.with(|s| s.set(name, value).context(Code::Config)),
        }
    }

    /// Removes `name` (in OpenBao/Vault with every version); whether there
    /// was one.
    pub fn remove(&self, name: &str) -> Result<bool> {
        validate_name(name).context(Code::Config)?;
        match self.kv()? {
            Some(kv) => kv.remove(name).map_err(kv_error),
            None => self.with(|s| s.remove(name).context(Code::Config)),
        }
    }
}

/// `OpenBao at https://...: mount secret, prefix keycycle/`.
fn describe_kv(settings: &KvSettings) -> String {
    let server = if settings.kind == "vault" {
        "Vault"
    } else {
        "OpenBao"
    };
    format!(
        "{server} at {}, KV v2 mount `{}`{}",
        settings.address,
        settings.mount,
        if settings.prefix.is_empty() {
            String::new()
        } else {
            format!(", prefix `{}`", settings.prefix)
        }
    )
}

/// A KV error as the CLI's: every failure of the backend is the
/// operator's to look at (a server down, a refused token, a policy, a
/// write another runner got in first), so all exit as configuration
/// errors. The message never holds a token or a value.
pub fn kv_error(e: VaultError) -> anyhow::Error {
    anyhow::Error::new(e).context(Code::Config)
}

/// The first of `vars` that is set and not empty, as a credential.
fn from_env(vars: &[&str]) -> Option<Credential> {
    vars.iter().find_map(|var| {
        crate::hardening::env_credential(var)
            .filter(|v| !v.trim().is_empty())
            .map(|v| Credential::Given {
                // Registered for masking before anything could print it.
                value: SecretValue::new(v.trim()),
                from: (*var).to_owned(),
            })
    })
}

/// One credential: from the environment, else the file, else an error
/// that says both ways to give it.
fn credential(
    vars: &[&str],
    file: Option<&PathBuf>,
    setting: &str,
    what: &str,
) -> Result<Credential> {
    if let Some(c) = from_env(vars) {
        return Ok(c);
    }
    match file {
        Some(path) => Ok(Credential::File(path.clone())),
        None => Err(anyhow!(
            "no {what} for the secrets backend: set {} (or {}), or [secrets] {setting} to a file \
             holding it",
            vars[0],
            vars[1]
        ))
        .context(Code::Config),
    }
}

fn kv_config(settings: &KvSettings) -> Result<KvConfig> {
    let auth = match settings.auth {
        KvAuth::Token => Auth::Token(credential(
            &TOKEN_ENV,
            settings.token_file.as_ref(),
            "token_file",
            "token",
        )?),
        KvAuth::AppRole => Auth::AppRole {
            mount: settings.approle_mount.clone(),
            role_id: credential(
                &ROLE_ID_ENV,
                settings.role_id_file.as_ref(),
                "role_id_file",
                "AppRole role id",
            )?,
            secret_id: credential(
                &SECRET_ID_ENV,
                settings.secret_id_file.as_ref(),
                "secret_id_file",
                "AppRole secret id",
            )?,
        },
    };
    let ca_pem = match &settings.ca_cert {
        Some(path) => Some(
            std::fs::read(path)
                .with_context(|| format!("[secrets] ca_cert: cannot read {}", path.display()))
                .context(Code::Config)?,
        ),
        None => None,
    };
    Ok(KvConfig {
        address: settings.address.clone(),
        mount: settings.mount.clone(),
        prefix: settings.prefix.clone(),
        ca_pem,
        auth,
        timeout: keycycle_vault::DEFAULT_TIMEOUT,
    })
}

impl keycycle_engine::SecretStoreAccess for StoreAccess {
    fn get(&self, name: &str) -> Result<Option<SecretValue>, String> {
        StoreAccess::get(self, name).map_err(|e| format!("{e:#}"))
    }

    fn set(&self, name: &str, value: &SecretValue) -> Result<(), String> {
        StoreAccess::set(self, name, value).map_err(|e| format!("{e:#}"))
    }
}

impl keycycle_host::SecretSource for StoreAccess {
    // The sandbox calls this from inside the tokio runtime (its host
    // functions are async); `KvStore` answers from its own thread, so no
    // runtime is blocked on from inside another.
    fn get(&self, store_name: &str) -> Result<Option<SecretValue>, String> {
        StoreAccess::get(self, store_name).map_err(|e| format!("{e:#}"))
    }
}
