//! Local storage for keycycle: the operator's secrets at rest, encrypted
//! under a master key the operator keeps outside the store, and the durable
//! state of runs ([`state`]): their journal, locks and deferred actions.
//!
//! ```no_run
//! use keycycle_secret::SecretValue;
//! use keycycle_store::{MasterKey, SecretStore};
//!
//! # fn main() -> Result<(), keycycle_store::StoreError> {
//! let key = MasterKey::load_file(".keycycle/master.key")?;
//! let mut store = SecretStore::open(".keycycle/secrets.json", &key)?;
//! store.set("gitlab/token", &SecretValue::new("glpat-..."))?;
//! let token = store.get("gitlab/token")?;
//! # let _ = token;
//! # Ok(())
//! # }
//! ```

mod error;
mod fs;
mod key;
#[cfg(any(test, feature = "test-server"))]
pub mod pg_test_server;
mod secrets;
pub mod state;

pub use error::{EntryDamage, KeyProblem, SealProblem, StoreError};
pub use key::{KEY_LEN, MASTER_KEY_ENV, MasterKey, SEALED_PREFIX};
pub use secrets::{FORMAT_VERSION, MAX_NAME_LEN, SecretInfo, SecretStore, validate_name};
pub use state::{
    CheckOutcome, CredentialRecord, DeferredFilter, DeferredRecord, DeferredState, Durability,
    EffectIntent, EffectOutcome, EffectRecord, LockAttempt, LockRecord, MemoryState, NewDeferred,
    NewRun, PluginInfo, RotationOutcome, RunEvent, RunFilter, RunRecord, RunState, SqliteState,
    StateError, StateStore,
};
