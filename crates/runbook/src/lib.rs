//! Runs a Rhai runbook — one rotation sequence — in a sandboxed engine.
//!
//! The crate knows nothing about wasmtime, the secrets store or the
//! terminal: every side effect a runbook has goes through [`Effects`], which
//! the host implements (and a journal can record and replay).
//!
//! ```no_run
//! # use std::{collections::BTreeMap, path::Path, sync::Arc};
//! # use keycycle_runbook::{Effects, Limits, Runbook};
//! # fn demo(effects: Arc<dyn Effects>) -> Result<(), keycycle_runbook::RunbookError> {
//! let params = BTreeMap::from([("project".to_owned(), "42".to_owned())]);
//! let runbook = Runbook::compile(
//!     Path::new("runbooks/gitlab.rhai"),
//!     Path::new("runbooks"),
//!     &params,
//!     effects,
//!     Limits::default(),
//! )?;
//! let result = runbook.run()?; // the runbook's last value, e.g. a map
//! # let _ = result; Ok(()) }
//! ```
//!
//! # Writing runbooks
//!
//! A runbook is a Rhai script. Its last value is the run's result:
//!
//! ```rhai
//! let gl = plugin("gitlab");
//! let me = gl.whoami();
//! info(`rotating the token of ${me.username}`);
//! let fresh = gl.rotate(#{ id: param("token_id").parse_int() });
//! store_secret("gitlab_token", fresh.token);
//! #{ id: fresh.id, expires_at: fresh.expires_at }
//! ```
//!
//! ## Language rules
//!
//! - **Compiled first.** The runbook and every file it imports are parsed
//!   and checked before anything runs: a syntax error, an unknown variable or
//!   a refused import fails the run before its first effect.
//! - **Plugin calls checked first.** A call on a plugin known from the text
//!   (`let p = plugin("x")`, `plugin("x").op()`, `invoke(p, "op")`,
//!   `defer(p, "op", ..)`) to an operation the plugin lacks, and
//!   `plugin("x")` for an unconfigured name, are compile errors with a
//!   "did you mean" suggestion. Calls that can only be resolved when they
//!   run become [`Runbook::warnings`].
//! - **Strict variables.** Using a variable that was never declared is a
//!   compile error.
//! - **No `eval`.** The keyword is disabled; every line that runs is visible
//!   before the run.
//! - **Missing map keys raise.** `m.key` and `m["key"]` fail when `key` is
//!   absent, so a misspelt output field cannot quietly become `()`. Read
//!   an optional key with `m.get("key")` (which gives `()`), or test with
//!   `"key" in m`.
//! - **Engine packages.** Arithmetic, logic, bit fields, math, strings,
//!   arrays, maps and the core language. There is no clock-reading
//!   `timestamp()` (use `now()`), no `sleep` (it raises), no
//!   `print` to stdout (`print` and `debug` become `info` log lines).
//!
//! ## Parameters
//!
//! | call | result |
//! | --- | --- |
//! | `params` | a constant object map of the `--set key=value` pairs (all strings); only at top level, not inside functions |
//! | `params.name` | the value; when absent, the run fails with kind `missing-input`: "missing parameter `name`: pass --set name=VALUE" |
//! | `param("name")` | the same, callable anywhere (also inside functions) |
//! | `param("name", default)` | the value, or `default` when it was not set |
//!
//! ## Plugins
//!
//! | call | result |
//! | --- | --- |
//! | `plugin("name")` | a `Plugin` handle. An unknown name raises an error that lists the configured plugins; a plugin that failed to load raises its load error |
//! | `p.op()` | runs operation `op` with an empty input map |
//! | `p.op(#{ k: v })` | runs `op` with that input; returns the output map. Output fields the plugin declares secret are secret handles |
//! | `invoke(p, "op")`, `invoke(p, "op", #{..})` | the same, for operation names that are not identifiers (or are `to_string`, `to_debug`, `invoke`) |
//!
//! Every operation of every configured plugin is a method on `Plugin`;
//! calling one on a plugin that lacks it raises "plugin `x` has no
//! operation `y`; it has: a, b, c".
//!
//! ## Secrets
//!
//! Secrets are opaque handles of type `Secret`. They print as `***` (in
//! `print`, `debug`, `info`, `${}` interpolation, `to_string`, `to_json`)
//! and their value only ever leaves the engine inside a plugin's input or
//! `store_secret`. Concatenating a handle with a string (`"a" + s`,
//! `s + "a"`, `x += s`) raises "secret values cannot be turned into text;
//! pass the handle to a plugin instead". Handles have no length and no
//! comparison with text.
//!
//! | call | result |
//! | --- | --- |
//! | `secret("name")` | the stored secret granted to this runbook under `name` |
//! | `store_secret("name", handle)` | writes a handle to the store (a plain string is refused) |
//! | `random_secret(bytes)` | `bytes` (1 to 1024) random bytes, hex-encoded, as a handle |
//! | `is_secret(x)` | whether `x` is a secret handle |
//!
//! ## Operator input
//!
//! | call | result |
//! | --- | --- |
//! | `prompt(text)`, `prompt(name, text)` | a string the operator types (or gave with `--input name=…`) |
//! | `prompt_secret(text)`, `prompt_secret(name, text)` | a secret handle, not echoed |
//! | `confirm(text)`, `confirm(name, text)` | `true` or `false` |
//!
//! The one-argument forms derive the input name from the text (see
//! [`input_name`]): ASCII letters and digits lowercased, every other run of
//! characters turned into one `_`, no `_` at either end, at most 40
//! characters, `input` if nothing is left. `prompt("New GitLab token?")` is
//! answered with `--input new_gitlab_token=…`.
//!
//! ## Output, failure, time, JSON
//!
//! | call | result |
//! | --- | --- |
//! | `info(x)`, `warn(x)` | a log line (`print(x)` and `debug(x)` log at info) |
//! | `fail(message)` | ends the run with kind `failed` at this line; `try`/`catch` does not catch it |
//! | `approval(#{ id, title, summary, environments, approvers, poll })` | an approval gate: records a change request and stops the run (exit 10, locks kept) until someone else approves it; then a map `#{ approved, request, by, at, comment }`. A rejection ends the run. Neither stop can be caught |
//! | `lock(credential)` | takes this run's lock on a credential (e.g. `"gitlab:pat/42"`); a second run on it fails fast naming the holder; held until the run ends or `keycycle unlock` |
//! | `defer(p, "op", #{..}, delay_secs)`, `defer(p, "op", #{..}, delay_secs, description)` | schedules `p.op(input)` for `keycycle cleanup` to run after the delay; returns the action id |
//! | `dry_run()` | `true` in a `--dry-run`: mutating calls return placeholders, so skip checks of their results |
//! | `now()` | seconds since the Unix epoch, from the host's clock |
//! | `today()` | the date in UTC, `"YYYY-MM-DD"` |
//! | `date_in_days(n)` | the UTC date `n` days from today (negative for the past), `"YYYY-MM-DD"` |
//! | `to_json(x)`, `x.to_json()` | JSON text, with secrets as `"***"` |
//!
//! ## Imports
//!
//! `import "lib/gitlab" as gl;` loads `lib/gitlab.rhai` under the runbooks
//! folder. Paths are always relative to that folder (not to the importing
//! file); absolute paths, `..` and symbolic links leading out of the folder
//! are refused at compile time, with the file and line of the `import`.
//! The path must be a string literal. A module's top-level code runs when
//! its first `import` runs, once per run; `params` is visible at its top
//! level too. An import cycle that would run raises an error.
//!
//! ## Errors a runbook can catch
//!
//! Failed effects raise an object map:
//!
//! | field | value |
//! | --- | --- |
//! | `kind` | `provider`, `invalid-input`, `retryable`, `denied`, `missing-input`, `failed`, or `runtime` for misuse of a function |
//! | `message` | what went wrong, secrets masked |
//! | `plugin`, `operation` | the call that failed, or `()` |
//! | `status` | the provider's HTTP status for `provider` errors (0 for no response), else `()` |
//! | `delay_ms` | for `retryable`, how long to wait, else `()` |
//!
//! ```rhai
//! try {
//!     gl.revoke(#{ id: old_id });
//! } catch (e) {
//!     if e.kind == "provider" && e.status == 404 { warn("already revoked"); } else { throw e; }
//! }
//! ```
//!
//! Errors of the language itself (type mismatches and the like) arrive in
//! `catch` as a map with `message` (and `line`, `position`) but no `kind`:
//! read it with `e.get("kind")` when a `catch` may see both. Limits and
//! `fail` cannot be caught.
//!
//! When an error is not caught, [`Runbook::run`] returns a [`RunbookError`]
//! with the [`ErrorKind`] (`denied` → `Denied`, `missing-input` →
//! `MissingInput`, `provider`/`invalid-input`/`retryable` → `Plugin`,
//! `failed` → `Failed`) and the file, line and column of the call; inside
//! an imported module, the module's file.
//!
//! ## Limits
//!
//! [`Limits`] caps operations, call depth, expression depth, string,
//! array and map sizes and wall time; going over one ends the run with kind
//! `Limit` and a message naming the limit and its value. Fixed caps: at
//! most 10,000 variables in scope, 1,000 functions, 1,000 `import`s
//! executed per run.

mod api;
mod check;
pub mod effects;
mod engine;
mod error;
mod resolver;
mod value;

pub use api::{MAX_INPUT_NAME_LEN, MAX_RANDOM_BYTES, input_name};
pub use check::{CompileWarning, PromptSite};
pub use effects::{
    Answer, ApprovalPoll, ApprovalRequest, EffectError, Effects, LogLevel, Prompt, PromptKind,
};
pub use engine::{Limits, MAX_FUNCTIONS, MAX_MODULE_LOADS, MAX_VARIABLES, Runbook};
pub use error::{ErrorKind, RunbookError};

#[cfg(test)]
mod tests;
