//! The SDK for keycycle rotation plugins: implement [`Plugin`] with the
//! operations your provider needs, call [`export_plugin!`], and build for
//! `wasm32-wasip2`. The SDK speaks the WIT contract (`wit/plugin.wit`) for you.
//!
//! ```no_run
//! use keycycle_plugin_sdk::prelude::*;
//!
//! struct Example;
//!
//! impl Plugin for Example {
//!     fn describe() -> Description {
//!         Description::new("example", "0.1.0")
//!             .host("{config.base_url}")
//!             .secret("token")
//!             .config("base_url")
//!             .operation(Operation::new("whoami", "Who the admin token belongs to"))
//!     }
//!
//!     fn invoke(ctx: &Context, operation: &str, _input: Value) -> Result<Value, Error> {
//!         match operation {
//!             "whoami" => {
//!                 let url = format!("{}/api/whoami", ctx.config("base_url")?);
//!                 let response = http::Request::get(url).bearer(&secret("token")?).send()?;
//!                 response.json()
//!             }
//!             other => Err(Error::unknown_operation(other)),
//!         }
//!     }
//! }
//!
//! keycycle_plugin_sdk::export_plugin!(Example);
//! ```
//!
//! A plugin runs in a sandbox: no files, no sockets, no environment. It
//! reaches its provider only through [`http`], reads only the secrets it
//! declared through [`secret`], and reports through [`log`].

mod context;
mod description;
mod error;
pub mod http;
mod input;
pub mod log;

pub use context::{Context, secret};
pub use description::{Description, Operation};
pub use error::Error;
pub use input::Input;
pub use serde_json::{self, Value, json};

/// Everything a plugin usually needs, for `use keycycle_plugin_sdk::prelude::*`.
pub mod prelude {
    pub use crate::{
        Context, Description, Error, Input, Operation, Plugin, Value, http, json, log, secret,
        serde_json,
    };
}

/// Generated bindings for the `plugin` world. Plugins do not use these
/// directly; [`export_plugin!`] wires a [`Plugin`] to them.
#[doc(hidden)]
#[allow(unsafe_code, missing_docs, clippy::all)]
pub mod bindings {
    wit_bindgen::generate!({
        world: "plugin",
        path: "wit",
        pub_export_macro: true,
        export_macro_name: "__export_plugin_world",
        default_bindings_module: "keycycle_plugin_sdk::bindings",
    });
}

/// A rotation plugin: what it declares and how it runs one operation.
///
/// Both functions are associated functions because the host instantiates a
/// fresh plugin for every call; there is no state to keep between calls.
pub trait Plugin {
    /// What the plugin is and what it needs. The host grants the
    /// intersection of this and what the operator grants.
    fn describe() -> Description;

    /// Run one operation. Before this is called the SDK has checked that
    /// `operation` is one [`Plugin::describe`] declares, that `input` is a
    /// JSON object, that every required input is present and not null, and
    /// that no undeclared input was passed. Return a JSON object.
    fn invoke(ctx: &Context, operation: &str, input: Value) -> Result<Value, Error>;
}

/// Export a [`Plugin`] as the component's `describe` and `invoke`.
///
/// Call it once, at the top level of the plugin crate (a `cdylib`):
///
/// ```ignore
/// keycycle_plugin_sdk::export_plugin!(MyPlugin);
/// ```
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ty) => {
        const _: () = {
            struct KeycyclePluginExport;

            impl $crate::bindings::Guest for KeycyclePluginExport {
                fn describe() -> $crate::bindings::Description {
                    $crate::glue::describe::<$plugin>()
                }

                fn invoke(
                    context: $crate::bindings::CallContext,
                    operation: ::std::string::String,
                    input: ::std::string::String,
                ) -> ::std::result::Result<::std::string::String, $crate::bindings::PluginError>
                {
                    $crate::glue::invoke::<$plugin>(context, operation, input)
                }
            }

            $crate::bindings::__export_plugin_world!(
                KeycyclePluginExport with_types_in $crate::bindings
            );
        };
    };
}

/// The code behind [`export_plugin!`]. Public only so that a crate which
/// generates its own world (one that adds imports to `plugin`) can reuse it.
#[doc(hidden)]
pub mod glue {
    use crate::bindings::{CallContext, Description as WitDescription, PluginError};
    use crate::{Context, Error, Plugin};

    /// The WIT `describe` export for plugin `P`.
    pub fn describe<P: Plugin>() -> WitDescription {
        P::describe().into()
    }

    /// The WIT `invoke` export for plugin `P`.
    pub fn invoke<P: Plugin>(
        context: CallContext,
        operation: String,
        input: String,
    ) -> Result<String, PluginError> {
        run::<P>(context, &operation, &input).map_err(PluginError::from)
    }

    fn run<P: Plugin>(context: CallContext, operation: &str, input: &str) -> Result<String, Error> {
        // A plugin's stderr goes nowhere, so without this a panic reaches
        // the operator only as a trap with no message.
        std::panic::set_hook(Box::new(|info| {
            crate::log::error(&format!("plugin panicked: {info}"));
        }));
        let description = P::describe();
        let spec = description.find(operation).ok_or_else(|| {
            Error::invalid_input(format!(
                "plugin `{}` has no operation `{operation}`; it has: {}",
                description.name(),
                description.operation_names().join(", ")
            ))
        })?;
        let input: serde_json::Value = serde_json::from_str(input).map_err(|e| {
            Error::invalid_input(format!(
                "the input of `{operation}` is not JSON ({})",
                crate::error::describe_json_error(&e)
            ))
        })?;
        spec.check_input(&input)?;
        let ctx = Context::from(context);
        let output = P::invoke(&ctx, operation, input)?;
        Ok(output.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::bindings::{CallContext, PluginError};
    use super::prelude::*;
    use super::*;

    struct Echo;

    impl Plugin for Echo {
        fn describe() -> Description {
            Description::new("echo", "1.0.0")
                .config("prefix")
                .operation(Operation::new("echo", "Echo a word").input("word", "the word", true))
                .operation(Operation::new("fail", "Always fails"))
                .operation(Operation::new("forgotten", "Declared, not implemented"))
        }

        fn invoke(ctx: &Context, operation: &str, input: Value) -> Result<Value, Error> {
            match operation {
                "echo" => Ok(json!({
                    "said": format!("{}{}", ctx.config("prefix")?, input.str_field("word")?),
                    "key": ctx.idempotency_key(),
                })),
                "fail" => Err(Error::retryable(1500, "busy")),
                other => Err(Error::unknown_operation(other)),
            }
        }
    }

    fn call(operation: &str, input: &str) -> Result<Value, PluginError> {
        let context = CallContext {
            run_id: "r".into(),
            idempotency_key: "k".into(),
            config: vec![("prefix".into(), ">".into())],
        };
        glue::invoke::<Echo>(context, operation.into(), input.into())
            .map(|s| serde_json::from_str(&s).unwrap())
    }

    fn invalid_input(result: Result<Value, PluginError>) -> String {
        match result {
            Err(PluginError::InvalidInput(m)) => m,
            Err(other) => panic!("expected invalid input, got {other:?}"),
            Ok(v) => panic!("expected invalid input, got {v}"),
        }
    }

    #[test]
    fn runs_a_declared_operation_with_context() {
        let out = call("echo", r#"{"word":"hi"}"#).unwrap();
        assert_eq!(out, json!({"said": ">hi", "key": "k"}));
    }

    #[test]
    fn refuses_what_the_description_does_not_allow() {
        let m = invalid_input(call("nope", "{}"));
        assert!(
            m.contains("`nope`") && m.contains("echo, fail, forgotten"),
            "{m}"
        );
        let m = invalid_input(call("echo", "{}"));
        assert!(m.contains("`word`"), "{m}");
        let m = invalid_input(call("echo", "{not json"));
        assert!(m.contains("not JSON"), "{m}");
        let m = invalid_input(call("forgotten", "{}"));
        assert!(m.contains("does not implement"), "{m}");
    }

    #[test]
    fn maps_errors_to_the_wit_variant() {
        match call("fail", "{}") {
            Err(PluginError::Retryable(r)) => {
                assert_eq!(r.delay_ms, 1500);
                assert_eq!(r.message, "busy");
            }
            other => panic!("expected retryable, got {other:?}"),
        }
        let describe = glue::describe::<Echo>();
        assert_eq!(describe.operations.len(), 3);
        assert_eq!(describe.config, ["prefix"]);
    }
}
