//! A plugin built against the next contract version, `keycycle:plugin@0.2.0`
//! (`wit/plugin.wit` here is the real contract with only the version
//! changed). Everything else is a well-behaved plugin, so the only reason
//! for the host to refuse it is the version, and it must do so when it
//! loads the plugin, not halfway through a call.

#[allow(unsafe_code, missing_docs, clippy::all)]
mod bindings {
    wit_bindgen::generate!({ world: "plugin", path: "wit" });
}

use bindings::keycycle::plugin::{host, types};
use bindings::{CallContext, Description, Guest, PluginError};

struct ContractNext;

impl Guest for ContractNext {
    fn describe() -> Description {
        Description {
            name: "contract-next".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            operations: vec![types::Operation {
                name: "ok".into(),
                doc: "Behave".into(),
                inputs: Vec::new(),
                secret_outputs: Vec::new(),
                mutates: false,
                recover_with: None,
                idempotent: true,
                if_interrupted: None,
            }],
            hosts: Vec::new(),
            secrets: Vec::new(),
            config: Vec::new(),
        }
    }

    fn invoke(
        _context: CallContext,
        _operation: String,
        _input: String,
    ) -> Result<String, PluginError> {
        // Uses the host interface, so the component imports it at 0.2.0.
        host::log(host::Level::Info, "contract-next called");
        Ok("{\"ok\":true}".into())
    }
}

// The generated export glue is `unsafe` (it is the C ABI of the component);
// the SDK's own glue is allowed the same way.
#[allow(unsafe_code)]
mod exported {
    use super::ContractNext;
    crate::bindings::export!(ContractNext with_types_in crate::bindings);
}
