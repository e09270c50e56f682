//! Test-only switches of the engine, compiled into debug builds alone:
//! release builds have none, so no environment variable can make a real
//! rotation stop half-way. The CLI documents every switch (its `debug`
//! module); these are the ones a run itself reads.
//!
//! - `KEYCYCLE_DEBUG_ABORT_AFTER=POINT` aborts the process right after the
//!   journal write named `POINT` (`N:unsynced`, `N`, `N:result:unsynced`,
//!   `N:result`, `end`, ...; `:unsynced` is before the write's barrier).
//! - `KEYCYCLE_DEBUG_USER=NAME` is who keycycle takes the user to be.

#[cfg(debug_assertions)]
pub const ABORT_AFTER_ENV: &str = "KEYCYCLE_DEBUG_ABORT_AFTER";

/// Aborts the process when [`ABORT_AFTER_ENV`] names `point`. The name is
/// built only when the switch is set.
#[cfg(debug_assertions)]
pub fn abort_after(point: impl FnOnce() -> String) {
    let Some(wanted) = std::env::var_os(ABORT_AFTER_ENV) else {
        return;
    };
    if wanted.to_str() != Some(point().as_str()) {
        return;
    }
    // No core file: it would hold the process's memory, secrets included,
    // in the operator's (or the test's) folder.
    let _ = rustix::process::setrlimit(
        rustix::process::Resource::Core,
        rustix::process::Rlimit {
            current: Some(0),
            maximum: Some(0),
        },
    );
    std::process::abort();
}

#[cfg(not(debug_assertions))]
#[inline(always)]
pub fn abort_after(_point: impl FnOnce() -> String) {}

/// The user [`USER_ENV`] names, in debug builds.
#[cfg(debug_assertions)]
pub const USER_ENV: &str = "KEYCYCLE_DEBUG_USER";

#[cfg(debug_assertions)]
pub fn user_override() -> Option<String> {
    std::env::var(USER_ENV).ok().filter(|u| !u.is_empty())
}

#[cfg(not(debug_assertions))]
#[inline(always)]
pub fn user_override() -> Option<String> {
    None
}
