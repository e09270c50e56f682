//! The import allowlist. A component is refused at load time if it imports
//! anything beyond the host interface and the minimal WASI that a Rust std
//! guest links: clocks, random, and stdio that the host discards. Files,
//! sockets, `wasi:http` and anything unknown never reach instantiation.

use wasmtime::Engine;
use wasmtime::component::Component;

/// Interface names (without version) a plugin may import.
pub const ALLOWED_IMPORTS: &[&str] = &[
    "keycycle:plugin/host",
    "keycycle:plugin/types",
    // A std guest imports the environment even when it never reads it (the
    // panic path looks up RUST_BACKTRACE); the host gives it an empty one.
    "wasi:cli/environment",
    "wasi:cli/exit",
    "wasi:cli/stdin",
    "wasi:cli/stdout",
    "wasi:cli/stderr",
    "wasi:cli/terminal-input",
    "wasi:cli/terminal-output",
    "wasi:cli/terminal-stdin",
    "wasi:cli/terminal-stdout",
    "wasi:cli/terminal-stderr",
    "wasi:io/error",
    "wasi:io/poll",
    "wasi:io/streams",
    "wasi:clocks/monotonic-clock",
    "wasi:clocks/wall-clock",
    "wasi:random/random",
    "wasi:random/insecure",
    "wasi:random/insecure-seed",
];

/// Interfaces a plugin may import only when its grants say `inert_wasi`:
/// the interpreted runtimes (componentize-py's CPython, componentize-js's
/// StarlingMonkey) import them whether or not the plugin uses them. They
/// stay inert in the sandbox: the per-call WASI context preopens no
/// directory, so no file or directory can be named, and allows no TCP, no
/// UDP and no name lookup, so creating a socket or resolving a name fails
/// with `access-denied` before any socket exists (wasmtime-wasi checks
/// that before it asks the OS).
pub const INERT_IMPORTS: &[&str] = &[
    "wasi:filesystem/types",
    "wasi:filesystem/preopens",
    "wasi:sockets/network",
    "wasi:sockets/instance-network",
    "wasi:sockets/tcp",
    "wasi:sockets/tcp-create-socket",
    "wasi:sockets/udp",
    "wasi:sockets/udp-create-socket",
    "wasi:sockets/ip-name-lookup",
];

/// The only version of the host contract this host speaks.
const CONTRACT_VERSION: &str = "0.1";

/// Why a component's imports cannot be linked.
pub(crate) enum ImportProblem {
    /// An interface the sandbox does not provide.
    Forbidden(String),
    /// An interface linked inert, but only for a plugin granted
    /// `inert_wasi`.
    Inert(String),
    /// The host contract, at another version: (the import, its version).
    OtherContract(String, String),
}

/// The version of the host contract this host speaks, `MAJOR.MINOR`.
pub(crate) fn contract_version() -> &'static str {
    CONTRACT_VERSION
}

/// The first import that is not allowed, if any.
pub(crate) fn forbidden_import(
    engine: &Engine,
    component: &Component,
    inert_wasi: bool,
) -> Option<ImportProblem> {
    imports(engine, component)
        .into_iter()
        .find_map(|(_, problem)| match problem {
            Some(ImportProblem::Inert(_)) if inert_wasi => None,
            other => other,
        })
}

/// Every import of the component, each with why it is refused, if it is.
pub(crate) fn imports(
    engine: &Engine,
    component: &Component,
) -> Vec<(String, Option<ImportProblem>)> {
    let ty = component.component_type();
    ty.imports(engine)
        .map(|(name, _)| (name.to_owned(), import_problem(name)))
        .collect()
}

fn import_problem(name: &str) -> Option<ImportProblem> {
    let (interface, version) = match name.split_once('@') {
        Some((i, v)) => (i, Some(v)),
        None => (name, None),
    };
    if INERT_IMPORTS.contains(&interface) {
        return Some(ImportProblem::Inert(name.to_owned()));
    }
    if !ALLOWED_IMPORTS.contains(&interface) {
        return Some(ImportProblem::Forbidden(name.to_owned()));
    }
    if interface.starts_with("keycycle:plugin/")
        && !version.is_some_and(|v| {
            v == CONTRACT_VERSION || v.starts_with(&format!("{CONTRACT_VERSION}."))
        })
    {
        return Some(ImportProblem::OtherContract(
            name.to_owned(),
            version.unwrap_or("(none)").to_owned(),
        ));
    }
    None
}
