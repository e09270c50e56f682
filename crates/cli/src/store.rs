//! Access to the encrypted secrets store: finding the master key, opening
//! the store on first use, and registering every value it holds with the
//! redactor so no stored secret can reach an output.

use std::path::PathBuf;
use std::sync::Mutex;

use anyhow::{Context, Result, anyhow};
use keycycle_secret::SecretValue;
use keycycle_store::{MasterKey, SecretStore};

use crate::config::Config;
use crate::exit::Code;

pub const KEY_ENV: &str = "KEYCYCLE_MASTER_KEY";

pub struct StoreAccess {
    store_file: PathBuf,
    key_file: PathBuf,
    inner: Mutex<Option<SecretStore>>,
}

impl StoreAccess {
    pub fn new(config: &Config) -> StoreAccess {
        StoreAccess {
            store_file: config.store_file.clone(),
            key_file: config.key_file.clone(),
            inner: Mutex::new(None),
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

    /// Runs `f` on the open store, opening it first if needed.
    pub fn with<R>(&self, f: impl FnOnce(&mut SecretStore) -> Result<R>) -> Result<R> {
        let mut guard = self.inner.lock().unwrap_or_else(|p| p.into_inner());
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

    /// Opens the store now when it exists and a master key is at hand, so a
    /// wrong key is a configuration error before a run starts rather than a
    /// runbook failure at its first `secret()`.
    pub fn check_key(&self) -> Result<()> {
        if !self.store_file.exists() || self.master_key().is_err() {
            return Ok(());
        }
        self.with(|_| Ok(()))
    }

    pub fn get(&self, name: &str) -> Result<Option<SecretValue>> {
        self.with(|s| Ok(s.get(name)?))
    }
}

impl keycycle_engine::SecretStoreAccess for StoreAccess {
    fn get(&self, name: &str) -> Result<Option<SecretValue>, String> {
        StoreAccess::get(self, name).map_err(|e| format!("{e:#}"))
    }

    fn set(&self, name: &str, value: &SecretValue) -> Result<(), String> {
        self.with(|s| Ok(s.set(name, value)?))
            .map_err(|e| format!("{e:#}"))
    }
}

impl keycycle_host::SecretSource for StoreAccess {
    fn get(&self, store_name: &str) -> Result<Option<SecretValue>, String> {
        StoreAccess::get(self, store_name).map_err(|e| format!("{e:#}"))
    }
}
