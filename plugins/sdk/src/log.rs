//! Log lines through the host, which masks secret values it knows and
//! attaches the plugin and operation. A plugin has no stdout or stderr.

use crate::bindings::keycycle::plugin::host::{self, Level};

/// Log at trace level.
pub fn trace(message: &str) {
    host::log(Level::Trace, message);
}

/// Log at debug level.
pub fn debug(message: &str) {
    host::log(Level::Debug, message);
}

/// Log at info level.
pub fn info(message: &str) {
    host::log(Level::Info, message);
}

/// Log at warn level.
pub fn warn(message: &str) {
    host::log(Level::Warn, message);
}

/// Log at error level.
pub fn error(message: &str) {
    host::log(Level::Error, message);
}
