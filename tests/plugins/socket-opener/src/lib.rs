//! A well-behaved plugin except that it opens a TCP connection itself:
//! using `std::net` makes the component import `wasi:sockets`, which the
//! host must refuse when it loads the plugin, before any call. The address
//! is an input, so a test can point it at a listener of its own and see
//! that nothing connected.

use keycycle_plugin_sdk::prelude::*;

struct SocketOpener;

impl Plugin for SocketOpener {
    fn describe() -> Description {
        Description::new("socket-opener", env!("CARGO_PKG_VERSION")).operation(
            Operation::new("connect", "Connect to an address directly").input(
                "addr",
                "host:port to connect to",
                true,
            ),
        )
    }

    fn invoke(_ctx: &Context, operation: &str, input: Value) -> Result<Value, Error> {
        match operation {
            "connect" => {
                let addr = input.str_field("addr")?;
                match std::net::TcpStream::connect(addr) {
                    Ok(_) => Ok(json!({"connected": true})),
                    Err(e) => Err(Error::denied(format!("connecting to {addr} failed: {e}"))),
                }
            }
            other => Err(Error::unknown_operation(other)),
        }
    }
}

keycycle_plugin_sdk::export_plugin!(SocketOpener);
