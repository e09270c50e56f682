//! The capability sandbox: loads rotation plugins (WebAssembly components),
//! checks what they import, and runs their operations with only the network
//! origins, secrets and config the operator granted.
//!
//! Invariant: this crate knows nothing about Rhai or runbooks. It offers
//! [`Sandbox::load`] and [`Plugin::invoke`]; who calls them, and why, is not
//! its business.

mod bindings;
mod cache;
mod check;
mod error;
mod grants;
mod http;
mod imports;
mod sandbox;
mod state;
mod text;
mod trust;

pub use check::{Finding, Severity, check_description};
pub use error::{HostError, InvokeError};
pub use grants::{Grants, Limits, SecretSource};
pub use http::HostProblem;
pub use imports::{ALLOWED_IMPORTS, INERT_IMPORTS};
pub use sandbox::{FileCheck, ImportCheck, Plugin, Sandbox, SandboxConfig};
pub use text::{MESSAGE_CHARS, bounded, echo, is_hidden, one_line};
pub use trust::{
    Trust, TrustProblem, parse_public_key, sha256_hex, signature_path, verify_signature,
};
