//! The one error type of the runbook engine, and the translation of Rhai's
//! errors into it: what kind of failure, which file, which line and column.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use keycycle_secret::redact;
use rhai::{Dynamic, EvalAltResult, ParseError, ParseErrorType, Position};

use crate::engine::Limits;
use crate::value::{PluginHandle, SecretHandle, Terminate, render};

/// What kind of failure ended a compile or a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The runbook or one of its imports is not valid Rhai, uses an unknown
    /// variable, or cannot be read.
    Compile,
    /// An `import` is refused (outside the runbooks folder, absolute, with
    /// `..`, not a literal) or its file is missing.
    Import,
    /// The runbook went wrong while running: a type error, an unknown
    /// function or property, an uncaught `throw`.
    Runtime,
    /// A resource limit stopped the runbook: operations, call depth,
    /// expression depth, string/array/map size, or wall time.
    Limit,
    /// A plugin reported an error (provider, invalid input, retryable).
    Plugin,
    /// The sandbox or the configuration refused a capability.
    Denied,
    /// An input or parameter the run needs was not given.
    MissingInput,
    /// The runbook called `fail(..)`, or an effect failed (a plugin trapped
    /// or could not be loaded, a secret is not in the store).
    Failed,
    /// Another run holds the lock on a credential this run rotates.
    Locked,
    /// An earlier attempt of this run died mid-call and the outcome of that
    /// call cannot be found out.
    Interrupted,
    /// The run reached an approval gate whose change request is not decided
    /// yet; it resumes once people approve.
    AwaitingApproval,
    /// An approval gate's change request was rejected.
    Rejected,
}

impl ErrorKind {
    /// A short stable word for the kind, for JSON output and exit codes.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Compile => "compile",
            ErrorKind::Import => "import",
            ErrorKind::Runtime => "runtime",
            ErrorKind::Limit => "limit",
            ErrorKind::Plugin => "plugin",
            ErrorKind::Denied => "denied",
            ErrorKind::MissingInput => "missing-input",
            ErrorKind::Failed => "failed",
            ErrorKind::Locked => "locked",
            ErrorKind::Interrupted => "interrupted",
            ErrorKind::AwaitingApproval => "awaiting-approval",
            ErrorKind::Rejected => "rejected",
        }
    }

    /// The kind for an error map's `kind` field (the words of
    /// [`crate::EffectError::kind`], plus `runtime` for the engine's own).
    pub(crate) fn from_map_kind(kind: &str) -> ErrorKind {
        match kind {
            "provider" | "invalid-input" | "retryable" => ErrorKind::Plugin,
            "denied" => ErrorKind::Denied,
            "missing-input" => ErrorKind::MissingInput,
            "failed" => ErrorKind::Failed,
            "locked" => ErrorKind::Locked,
            "interrupted" => ErrorKind::Interrupted,
            "awaiting-approval" => ErrorKind::AwaitingApproval,
            "rejected" => ErrorKind::Rejected,
            _ => ErrorKind::Runtime,
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A runbook failed to compile or to run. Displays as
/// `runbooks/x.rhai:12:5: message`; the message never holds a secret value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.render())]
pub struct RunbookError {
    pub kind: ErrorKind,
    pub message: String,
    /// The file the error is in, spelled as the runbook path or runbooks
    /// folder was given (not canonicalized).
    pub file: PathBuf,
    pub line: Option<usize>,
    pub column: Option<usize>,
}

impl RunbookError {
    /// An error at `pos` in `file`. The message is redacted here, so no
    /// caller can forget to.
    pub(crate) fn new(
        kind: ErrorKind,
        message: impl AsRef<str>,
        file: &Path,
        pos: Position,
    ) -> RunbookError {
        RunbookError {
            kind,
            message: redact(message.as_ref()).into_owned(),
            file: file.to_path_buf(),
            line: pos.line(),
            column: pos.position(),
        }
    }

    /// Whether the runbook stopped because it used a secret handle as text:
    /// joined it to a string, or called a string function on it. The CLI
    /// then says where the handle came from, which the engine cannot know
    /// (an answer from a file, say).
    pub fn secret_used_as_text(&self) -> bool {
        if self.kind != ErrorKind::Runtime {
            return false;
        }
        if self.message.contains(crate::api::SECRET_AS_TEXT) {
            return true;
        }
        // A function that does not take a Secret, as `function_not_found`
        // words it.
        self.message
            .split_once(NOT_DEFINED_FOR)
            .and_then(|(_, args)| args.split_once(')'))
            .is_some_and(|(args, _)| args.split(", ").any(|a| a == "Secret"))
    }

    fn render(&self) -> String {
        let file = self.file.display();
        match (self.line, self.column) {
            (Some(line), Some(column)) => format!("{file}:{line}:{column}: {}", self.message),
            (Some(line), None) => format!("{file}:{line}: {}", self.message),
            _ => format!("{file}: {}", self.message),
        }
    }
}

/// What error translation needs to know about a compiled runbook.
#[derive(Debug, Clone)]
pub(crate) struct ErrorContext {
    /// The runbook's path as given.
    pub main_file: PathBuf,
    /// Import path as written in `import "…"` → the file it names.
    pub modules: BTreeMap<String, PathBuf>,
    /// File (as its Rhai source name) → its text, to explain `params.x`.
    pub sources: BTreeMap<String, String>,
    pub limits: Limits,
}

impl ErrorContext {
    /// Translates a parse error in `file`.
    pub(crate) fn parse_error(&self, err: &ParseError, file: &Path) -> RunbookError {
        let ParseError(kind, pos) = err;
        match kind.as_ref() {
            ParseErrorType::ExprTooDeep => RunbookError::new(
                ErrorKind::Limit,
                format!(
                    "expression nested deeper than the limit of {} levels (max_expr_depth); \
                     split it up with `let`",
                    self.limits.max_expr_depth
                ),
                file,
                *pos,
            ),
            ParseErrorType::LiteralTooLarge(what, max) => RunbookError::new(
                ErrorKind::Limit,
                format!("{} exceeds the limit of {max}", what.to_lowercase()),
                file,
                *pos,
            ),
            ParseErrorType::Reserved(word) if word == "eval" => RunbookError::new(
                ErrorKind::Compile,
                "`eval` is disabled in runbooks: every line must be visible before the run",
                file,
                *pos,
            ),
            ParseErrorType::VariableUndefined(name) if name == "params" => RunbookError::new(
                ErrorKind::Compile,
                "`params` is not visible inside functions; call param(\"name\") there",
                file,
                *pos,
            ),
            other => RunbookError::new(ErrorKind::Compile, other.to_string(), file, *pos),
        }
    }

    /// Translates an error that ended a run.
    pub(crate) fn eval_error(&self, mut err: Box<EvalAltResult>) -> RunbookError {
        let (file, outer_pos, inner) = innermost(&mut err, self.main_file.clone(), self);
        let mut pos = inner.position();
        if pos.is_none() {
            pos = outer_pos;
        }
        inner.set_position(Position::NONE);
        let limits = &self.limits;
        let (kind, message) = match &*inner {
            EvalAltResult::ErrorTerminated(value, _) => {
                return self.terminated(value, &file, pos);
            }
            EvalAltResult::ErrorRuntime(value, _) => runtime_value(value),
            EvalAltResult::ErrorTooManyOperations(_) => (
                ErrorKind::Limit,
                format!(
                    "runbook exceeded its limit of {} operations (max_operations); \
                     is a loop missing its exit?",
                    limits.max_operations
                ),
            ),
            EvalAltResult::ErrorStackOverflow(_) => (
                ErrorKind::Limit,
                format!(
                    "runbook exceeded its limit of {} nested function calls (max_call_levels); \
                     is a recursion missing its base case?",
                    limits.max_call_levels
                ),
            ),
            EvalAltResult::ErrorDataTooLarge(what, _) => {
                (ErrorKind::Limit, size_limit(what, limits))
            }
            EvalAltResult::ErrorTooManyVariables(_) => (
                ErrorKind::Limit,
                format!(
                    "runbook exceeded its limit of {} variables in scope",
                    crate::engine::MAX_VARIABLES
                ),
            ),
            EvalAltResult::ErrorTooManyModules(_) => (
                ErrorKind::Limit,
                format!(
                    "runbook exceeded its limit of {} module imports in one run",
                    crate::engine::MAX_MODULE_LOADS
                ),
            ),
            EvalAltResult::ErrorPropertyNotFound(name, _) => {
                if self.reads_params(&file, pos) {
                    (
                        ErrorKind::MissingInput,
                        format!("missing parameter `{name}`: pass --set {name}=VALUE"),
                    )
                } else {
                    (
                        ErrorKind::Runtime,
                        format!(
                            "property `{name}` not found; use m.get(\"{name}\") or \
                             `\"{name}\" in m` for a property that may be absent"
                        ),
                    )
                }
            }
            EvalAltResult::ErrorFunctionNotFound(signature, _) => {
                (ErrorKind::Runtime, function_not_found(signature))
            }
            EvalAltResult::ErrorVariableNotFound(name, _) if name == "params" => (
                ErrorKind::Runtime,
                "`params` is not visible inside functions; call param(\"name\") there".to_owned(),
            ),
            EvalAltResult::ErrorModuleNotFound(path, _) => (
                ErrorKind::Import,
                format!("module `{path}` was not found under the runbooks folder"),
            ),
            EvalAltResult::ErrorParsing(kind, _) => (ErrorKind::Compile, kind.to_string()),
            other => (ErrorKind::Runtime, other.to_string()),
        };
        RunbookError::new(kind, runbook_type_names(&message), &file, pos)
    }

    fn terminated(&self, value: &Dynamic, file: &Path, pos: Position) -> RunbookError {
        match value.read_lock::<Terminate>().as_deref() {
            Some(Terminate::Fail {
                message,
                source,
                pos: fail_pos,
            }) => {
                let file = source
                    .as_ref()
                    .map_or_else(|| file.to_path_buf(), PathBuf::from);
                RunbookError::new(ErrorKind::Failed, message, &file, *fail_pos)
            }
            Some(Terminate::Gate {
                kind,
                message,
                source,
                pos: gate_pos,
            }) => {
                let file = source
                    .as_ref()
                    .map_or_else(|| file.to_path_buf(), PathBuf::from);
                RunbookError::new(*kind, message, &file, *gate_pos)
            }
            Some(Terminate::WallTime) => RunbookError::new(
                ErrorKind::Limit,
                format!(
                    "runbook exceeded its wall time of {} s",
                    self.limits.wall_time.as_secs_f64()
                ),
                file,
                pos,
            ),
            Some(Terminate::Memory) => RunbookError::new(
                ErrorKind::Limit,
                format!(
                    "runbook used more than {} MiB of memory (the strings, arrays and maps it \
                     built, keys included) and was stopped",
                    self.limits.max_memory_bytes >> 20
                ),
                file,
                pos,
            ),
            None => RunbookError::new(ErrorKind::Runtime, "runbook was terminated", file, pos),
        }
    }

    /// Whether the text at `pos` is a read of `params.NAME` or
    /// `params["NAME"]`, so a missing key can be explained as a missing
    /// `--set`.
    fn reads_params(&self, file: &Path, pos: Position) -> bool {
        let (Some(line), Some(column)) = (pos.line(), pos.position()) else {
            return false;
        };
        let Some(text) = self.sources.get(&file.to_string_lossy().into_owned()) else {
            return false;
        };
        let Some(line_text) = text.lines().nth(line - 1) else {
            return false;
        };
        let before: String = line_text.chars().take(column.saturating_sub(1)).collect();
        let before = before.trim_end();
        let before = before
            .strip_suffix('.')
            .or_else(|| before.strip_suffix('['))
            .unwrap_or(before)
            .trim_end();
        before.ends_with("params")
            && !before
                .strip_suffix("params")
                .and_then(|rest| rest.chars().last())
                .is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '.')
    }
}

/// Follows nested function-call and module errors to the innermost one,
/// tracking which file each position belongs to. Returns that file, the
/// position of the nearest enclosing call (for errors that carry none), and
/// the innermost error.
fn innermost<'e>(
    err: &'e mut EvalAltResult,
    file: PathBuf,
    cx: &ErrorContext,
) -> (PathBuf, Position, &'e mut EvalAltResult) {
    let (inner_file, pos) = match &*err {
        EvalAltResult::ErrorInFunctionCall(_, source, _, pos) => {
            let f = if source.is_empty() {
                file.clone()
            } else {
                PathBuf::from(source)
            };
            (f, *pos)
        }
        EvalAltResult::ErrorInModule(path, _, pos) => {
            let f = cx
                .modules
                .get(path)
                .cloned()
                .unwrap_or_else(|| file.clone());
            (f, *pos)
        }
        _ => return (file, Position::NONE, err),
    };
    let (EvalAltResult::ErrorInFunctionCall(_, _, inner, _)
    | EvalAltResult::ErrorInModule(_, inner, _)) = err
    else {
        unreachable!("matched above")
    };
    let (found_file, found_pos, found) = innermost(inner, inner_file, cx);
    if found.position().is_none() && found_pos.is_none() {
        // The innermost error has no position of its own: point at the
        // call in the enclosing file instead.
        (file, pos, found)
    } else {
        (found_file, found_pos, found)
    }
}

/// Some Rhai messages spell custom types by their Rust path; a runbook
/// author knows them as `Secret` and `Plugin`.
fn runbook_type_names(message: &str) -> String {
    message
        .replace(std::any::type_name::<SecretHandle>(), "Secret")
        .replace(std::any::type_name::<PluginHandle>(), "Plugin")
}

/// Kind and message of a value the runbook (or an effect) threw.
fn runtime_value(value: &Dynamic) -> (ErrorKind, String) {
    if let Some(map) = value.read_lock::<rhai::Map>() {
        let kind = map.get("kind").and_then(|k| {
            k.read_lock::<rhai::ImmutableString>()
                .map(|s| s.to_string())
        });
        if let Some(kind) = kind {
            let message = map.get("message").map_or_else(String::new, render);
            return (ErrorKind::from_map_kind(&kind), message);
        }
    }
    (
        ErrorKind::Runtime,
        format!("uncaught exception: {}", render(value)),
    )
}

fn size_limit(what: &str, limits: &Limits) -> String {
    if what.starts_with("Length of string") {
        format!(
            "a string grew past the limit of {} bytes (max_string_size)",
            limits.max_string_size
        )
    } else if what.starts_with("Size of array") {
        format!(
            "an array grew past the limit of {} items (max_array_size)",
            limits.max_array_size
        )
    } else if what.starts_with("Size of object map") {
        format!(
            "an object map grew past the limit of {} entries (max_map_size)",
            limits.max_map_size
        )
    } else {
        format!("{what} is over its limit")
    }
}

/// How [`function_not_found`] introduces the argument types it lists.
const NOT_DEFINED_FOR: &str = "is not defined for arguments (";

fn function_not_found(signature: &str) -> String {
    // Rhai spells it `name (Type1, Type2)`.
    let (name, args) = signature
        .split_once(" (")
        .map_or((signature, ""), |(n, a)| (n, a.trim_end_matches(')')));
    let args = args.replace("&str | ImmutableString | String", "string");
    if args.starts_with("Plugin") {
        format!(
            "no configured plugin has an operation `{name}`; \
             `keycycle plugins inspect NAME` lists a plugin's operations"
        )
    } else if args.is_empty() {
        format!("function `{name}` is not defined")
    } else {
        format!("function `{name}` {NOT_DEFINED_FOR}{args})")
    }
}
