//! Errors of the sandbox. Every message names the plugin, and for calls the
//! operation, so an operator can tell which of several plugins misbehaved.

use std::path::PathBuf;

use keycycle_contract::PluginError;

/// Loading a plugin failed.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("cannot read plugin `{plugin}` from {path}: {source}")]
    Read {
        plugin: String,
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file is not WebAssembly at all (a script, an HTML error page, a
    /// truncated download). `start` says what it starts with,
    /// escaped, or that it is empty.
    #[error(
        "plugin `{plugin}`: {path} is not a WebAssembly file ({start}); point \
         [plugins.{plugin}] path at the plugin's .wasm component"
    )]
    NotWasm {
        plugin: String,
        path: PathBuf,
        start: String,
    },
    /// A core module: what `cargo build --target wasm32-unknown-unknown` or
    /// wasm32-wasip1 produce, which the component model cannot load.
    #[error(
        "plugin `{plugin}`: {path} is a core WebAssembly module, not a component; build it for \
         the wasm32-wasip2 target (`cargo build --target wasm32-wasip2`), or wrap it with \
         `wasm-tools component new`"
    )]
    CoreModule { plugin: String, path: PathBuf },
    /// `message` is folded onto one line (wasmtime's own are multi-line).
    #[error("plugin `{plugin}` ({path}) is not a valid WebAssembly component: {message}")]
    Invalid {
        plugin: String,
        path: PathBuf,
        message: String,
    },
    #[error(
        "plugin `{plugin}` is refused: it imports {import}, which the sandbox does not provide \
         (plugins may import only keycycle:plugin/host, clocks, random and discarded stdio)"
    )]
    ForbiddenImport { plugin: String, import: String },
    #[error(
        "plugin `{plugin}` is refused: it imports {import}, which the sandbox links (inert: no \
         directory, no socket, no name lookup) only for a plugin whose [plugins.{plugin}] \
         section says `inert_wasi = true`; Python and JavaScript runtimes import it whether or \
         not they use it"
    )]
    InertImport { plugin: String, import: String },
    /// Not a capability question: the plugin was built for another
    /// version of the contract, and would not link.
    #[error(
        "plugin `{plugin}` was built against the plugin contract keycycle:plugin@{found} \
         ({import}), and this keycycle speaks keycycle:plugin@{speaks}.x; rebuild the plugin \
         with a keycycle-plugin-sdk for {speaks}.x, or run it with a keycycle that speaks {found}"
    )]
    ContractVersion {
        plugin: String,
        import: String,
        found: String,
        speaks: String,
    },
    #[error("plugin `{plugin}` failed to describe itself: {message}")]
    Describe { plugin: String, message: String },
    #[error("plugin `{plugin}`: {message}")]
    Grant { plugin: String, message: String },
    /// The file is not the one `[plugins.NAME] sha256` pins.
    #[error(
        "plugin `{plugin}`: {path} is not the pinned file: [plugins.{plugin}] sha256 expects \
         {expected}, and the file's sha256 is {actual}. If the new file is one you trust, run \
         `keycycle plugins hash {path}` and put its digest in sha256; otherwise restore the \
         pinned file"
    )]
    Pinned {
        plugin: String,
        path: PathBuf,
        expected: String,
        actual: String,
    },
    /// Unsigned, or not signed by a key the config trusts for it.
    #[error("plugin `{plugin}` is refused: {reason}")]
    Unsigned { plugin: String, reason: String },
    #[error("sandbox setup failed: {0}")]
    Setup(String),
    #[error("plugin cache {path}: {message}")]
    Cache { path: PathBuf, message: String },
}

impl HostError {
    /// True when the operator's grants or the sandbox rules refused the
    /// plugin, as opposed to the plugin being broken.
    pub fn is_denied(&self) -> bool {
        matches!(
            self,
            HostError::ForbiddenImport { .. }
                | HostError::InertImport { .. }
                | HostError::Unsigned { .. }
        )
    }
}

/// One operation call failed.
#[derive(Debug, thiserror::Error)]
pub enum InvokeError {
    /// The plugin ran and returned a typed error.
    #[error("plugin `{plugin}` operation `{operation}`: {error}")]
    Plugin {
        plugin: String,
        operation: String,
        error: PluginError,
    },
    /// The sandbox refused something the plugin tried.
    #[error("plugin `{plugin}` operation `{operation}` was denied: {what}")]
    Denied {
        plugin: String,
        operation: String,
        what: String,
    },
    /// The plugin trapped, ran out of time or memory, or broke a limit.
    #[error("plugin `{plugin}` operation `{operation}` failed: {reason}")]
    Aborted {
        plugin: String,
        operation: String,
        reason: String,
    },
    #[error("plugin `{plugin}` has no operation `{operation}`; it has: {known}")]
    UnknownOperation {
        plugin: String,
        operation: String,
        known: String,
    },
}
