//! Test-only switches, compiled into debug builds alone: release builds
//! have none of them, so no environment variable can make a real rotation
//! stop half-way or run its cleanup at another time.
//!
//! - `KEYCYCLE_DEBUG_ABORT_AFTER=POINT` makes the process
//!   `std::process::abort()` right after the durable write named `POINT`,
//!   so a crash test can stop a run at every journaled step
//!   deterministically instead of racing a `kill`. The points:
//!   - `N:unsynced`: the intent of journal step `N` is written, and not
//!     yet made durable by the barrier it may need (group commit);
//!   - `N`: the intent of journal step `N` is written, and on disk if the
//!     step is a barrier; nothing of the step has been carried out yet;
//!   - `N:result:unsynced`, `N:result`: the same for step `N`'s result,
//!     once the step was carried out;
//!   - `end`: the run is about to end (one write ends it and releases its locks);
//!   - `cleanup:claimed`: `keycycle cleanup` claimed a due action and has
//!     not run it yet;
//!   - `cleanup:ran`: the action ran and its outcome is not recorded yet.
//! - `KEYCYCLE_DEBUG_POWER_CUT=1` makes the state database emulate what
//!   a power cut could lose: it never checkpoints by itself, and after
//!   each barrier records in `state.db-wal.synced` how much of its log is
//!   on disk, so a crash test can cut the log back to that after an abort.
//! - `KEYCYCLE_DEBUG_NOW_OFFSET_SECS=S` moves the clock `keycycle cleanup`
//!   reads S seconds ahead (or back, when negative), so a test can reach
//!   an action's eighth attempt without waiting out its backoff.
//! - `KEYCYCLE_DEBUG_CLAIM_LEASE_MS=MS` makes a `keycycle cleanup`
//!   claim last MS instead of 10 minutes (renewed every third of that), so
//!   a test can outlast a claim without waiting 10 minutes.
//! - `KEYCYCLE_DEBUG_USER=NAME` is who keycycle takes the user to be, in
//!   place of the operating system's user, so a test (or the demo) can play
//!   the requester and the approver of a change from one account. Release
//!   builds always ask the operating system.
//! - `KEYCYCLE_DEBUG_PANIC=1` panics at start, and
//!   `KEYCYCLE_DEBUG_PANIC=secret:NAME` panics with the stored secret NAME
//!   in the message, as a bug that formats a secret would: tests prove a
//!   bug ends as exit 1 with the secret masked.

// The switches a run itself reads live in the engine.
pub use keycycle_engine::debug::abort_after;
#[cfg(debug_assertions)]
pub const NOW_OFFSET_ENV: &str = "KEYCYCLE_DEBUG_NOW_OFFSET_SECS";

/// How long a `keycycle cleanup` claim lasts without renewal.
#[cfg(debug_assertions)]
pub fn claim_lease(default: std::time::Duration) -> std::time::Duration {
    std::env::var("KEYCYCLE_DEBUG_CLAIM_LEASE_MS")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(default, std::time::Duration::from_millis)
}

#[cfg(not(debug_assertions))]
#[inline(always)]
pub fn claim_lease(default: std::time::Duration) -> std::time::Duration {
    default
}

/// Milliseconds to add to the time `keycycle cleanup` goes by.
#[cfg(debug_assertions)]
pub fn cleanup_clock_offset_ms() -> i64 {
    std::env::var(NOW_OFFSET_ENV)
        .ok()
        .and_then(|v| v.trim().parse::<i64>().ok())
        .map_or(0, |s| s.saturating_mul(1000))
}

#[cfg(not(debug_assertions))]
#[inline(always)]
pub fn cleanup_clock_offset_ms() -> i64 {
    0
}

/// See `KEYCYCLE_DEBUG_PANIC` above.
#[cfg(debug_assertions)]
pub fn panic_if_asked() {
    let Some(switch) = std::env::var_os("KEYCYCLE_DEBUG_PANIC") else {
        return;
    };
    if let Some(name) = switch.to_str().and_then(|s| s.strip_prefix("secret:")) {
        let config = crate::config::load(None).expect("KEYCYCLE_DEBUG_PANIC: load the config");
        let value = crate::store::StoreAccess::new(&config)
            .get(name)
            .expect("KEYCYCLE_DEBUG_PANIC: read the secrets store")
            .unwrap_or_else(|| panic!("KEYCYCLE_DEBUG_PANIC: no secret `{name}`"));
        panic!(
            "KEYCYCLE_DEBUG_PANIC: secret `{name}` is <{}>",
            value.expose()
        );
    }
    panic!("KEYCYCLE_DEBUG_PANIC is set");
}

#[cfg(not(debug_assertions))]
#[inline(always)]
pub fn panic_if_asked() {}
