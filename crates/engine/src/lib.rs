//! How a run happens, below the command line: the `Runner` that prepares,
//! starts and records each run, the plugin pool that loads a plugin when a
//! run first names it, the host's side of a
//! runbook's effects (`HostEffects`: plugin calls in the sandbox, granted
//! secrets, prompts, time, randomness, the dry run), the journal that makes
//! a run durable and resumable (`JournaledEffects`), the run's policy
//! (`PolicyEffects`), and the rate limits the runs of one process share
//! (`RateGate`). The CLI describes a run as a `RunSpec` and prints what
//! comes out; a batch of runs in one process shares one `Runner`.
//!
//! The engine reads no config file and prints nothing: what it needs from
//! the operator's side (the secrets store, answers to prompts, who may
//! approve) comes in through [`SecretStoreAccess`], [`Answers`] and
//! [`approvals::Rules`].

pub mod approvals;
pub mod debug;
mod effects;
pub mod journal;
pub mod liveness;
pub mod plugins;
mod policy;
mod ratelimit;
pub mod run;
pub mod who;

pub use effects::{Answers, HostEffects, LoadedPlugin, SecretStoreAccess, Step};
pub use journal::{Journal, JournaledEffects, now_ms, rfc3339};
pub use plugins::{Catalog, PluginPool, PluginSet, PluginSpec};
pub use policy::PolicyEffects;
pub use ratelimit::{MAX_HOLD, RateGate, invoke_through};
pub use run::{Durability, Prepared, Resume, RunEnd, RunError, RunSpec, Runner};
