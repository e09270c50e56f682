//! Hardening of the keycycle process itself, applied first thing in
//! `main`: no core dumps and no ptrace by other processes of the same
//! user, and the master key, the secrets backend's credentials
//! (`VAULT_TOKEN`, `VAULT_SECRET_ID`, ...) and the state database's
//! password (`KEYCYCLE_STATE_PASSWORD`, `PGPASSWORD`) taken out of the environment,
//! so no child process or later reader of the environment sees them.
//!
//! What stays exposed (docs/operations.md, "Shared runners"): root can
//! still read the process's memory; `/proc/PID/environ` shows the
//! environment as the process started with it, which the kernel keeps and
//! only root can read once the process is not dumpable; and the key is in
//! the memory of the process that started keycycle (a shell, a CI agent).

use std::collections::BTreeMap;
use std::sync::OnceLock;

use zeroize::Zeroizing;

use crate::durable::STATE_PASSWORD_ENV;
use crate::store::{KEY_ENV, ROLE_ID_ENV, SECRET_ID_ENV, TOKEN_ENV};

/// What [`apply`] achieved, for `keycycle doctor`.
#[derive(Debug, Clone, Copy)]
pub struct Hardening {
    /// `PR_SET_DUMPABLE` is off: no core file, and other processes of the
    /// same user can neither ptrace this one nor read its `/proc` files.
    pub not_dumpable: bool,
    /// The master key came from `KEYCYCLE_MASTER_KEY` and was removed
    /// from the environment.
    pub key_taken_from_env: bool,
}

static APPLIED: OnceLock<Hardening> = OnceLock::new();
static ENV_KEY: OnceLock<Option<Zeroizing<String>>> = OnceLock::new();
/// The secrets backend's credentials and the state database's password,
/// as the environment gave them.
static ENV_CREDENTIALS: OnceLock<BTreeMap<&'static str, Zeroizing<String>>> = OnceLock::new();

/// Hardens the process. Call it before any other thread starts: removing
/// an environment variable is sound only while no thread reads the
/// environment.
pub fn apply() {
    let not_dumpable =
        rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable)
            .is_ok();
    let key = std::env::var_os(KEY_ENV).filter(|v| !v.is_empty());
    let key_taken_from_env = key.is_some();
    if key_taken_from_env {
        // SAFETY: `main` calls this before it builds the tokio runtime or
        // starts any thread, so nothing reads the environment concurrently.
        #[allow(unsafe_code)]
        unsafe {
            std::env::remove_var(KEY_ENV);
        }
    }
    let _ = ENV_KEY.set(key.map(|k| Zeroizing::new(k.to_string_lossy().into_owned())));
    let mut credentials = BTreeMap::new();
    for var in TOKEN_ENV
        .iter()
        .chain(&ROLE_ID_ENV)
        .chain(&SECRET_ID_ENV)
        .chain(&STATE_PASSWORD_ENV)
    {
        if let Some(value) = std::env::var_os(var) {
            credentials.insert(*var, Zeroizing::new(value.to_string_lossy().into_owned()));
            // SAFETY: as above, no other thread exists yet.
            #[allow(unsafe_code)]
            unsafe {
                std::env::remove_var(var);
            }
        }
    }
    let _ = ENV_CREDENTIALS.set(credentials);
    let _ = APPLIED.set(Hardening {
        not_dumpable,
        key_taken_from_env,
    });
}

/// The master key as `KEYCYCLE_MASTER_KEY` gave it when the process
/// started, if it did.
pub fn env_master_key() -> Option<&'static str> {
    ENV_KEY.get().and_then(|k| k.as_deref().map(String::as_str))
}

/// A secrets-backend credential the environment gave when the process
/// started (`VAULT_TOKEN`, say): taken out of the environment by
/// [`apply`]; read from it directly before `apply` ran (unit tests).
pub fn env_credential(var: &str) -> Option<Zeroizing<String>> {
    match ENV_CREDENTIALS.get() {
        Some(taken) => taken.get(var).cloned(),
        None => std::env::var(var).ok().map(Zeroizing::new),
    }
}

/// What [`apply`] achieved; `None` before it ran (unit tests).
pub fn applied() -> Option<Hardening> {
    APPLIED.get().copied()
}
