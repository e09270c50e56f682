//! A well-behaved plugin except that it opens a TCP connection itself:
//! using `std::net` makes the component import `wasi:sockets`, which the
//! host must refuse when it loads the plugin, before any call.

use keycycle_plugin_sdk::prelude::*;

struct SocketOpener;

impl Plugin for SocketOpener {
    fn describe() -> Description {
        Description::new("socket-opener", env!("CARGO_PKG_VERSION")).operation(Operation::new(
            "connect",
            "Connect to 127.0.0.1:80 directly",
        ))
    }

    fn invoke(_ctx: &Context, operation: &str, _input: Value) -> Result<Value, Error> {
        match operation {
            "connect" => match std::net::TcpStream::connect("127.0.0.1:80") {
                Ok(_) => Ok(json!({"connected": true})),
                Err(e) => Err(Error::denied(format!(
                    "connecting to 127.0.0.1:80 failed: {e}"
                ))),
            },
            other => Err(Error::unknown_operation(other)),
        }
    }
}

keycycle_plugin_sdk::export_plugin!(SocketOpener);
