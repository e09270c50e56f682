//! A well-behaved plugin except that it reads a file: using `std::fs`
//! makes the component import `wasi:filesystem`, which the host must refuse
//! when it loads the plugin, before any call.

use keycycle_plugin_sdk::prelude::*;

struct FsReader;

impl Plugin for FsReader {
    fn describe() -> Description {
        Description::new("fs-reader", env!("CARGO_PKG_VERSION"))
            .operation(Operation::new("read", "Read /etc/passwd"))
    }

    fn invoke(_ctx: &Context, operation: &str, _input: Value) -> Result<Value, Error> {
        match operation {
            "read" => match std::fs::read_to_string("/etc/passwd") {
                Ok(text) => Ok(json!({"len": text.len()})),
                Err(e) => Err(Error::denied(format!("reading /etc/passwd failed: {e}"))),
            },
            other => Err(Error::unknown_operation(other)),
        }
    }
}

keycycle_plugin_sdk::export_plugin!(FsReader);
