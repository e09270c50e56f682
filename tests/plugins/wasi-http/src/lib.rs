//! A plugin that sends a request through `wasi:http/outgoing-handler`, as a
//! plugin would that tried to reach the network around the host's
//! `http-send`. The component imports `wasi:http/*` next to the keycycle
//! contract, and the host must refuse it when it loads the plugin.
//!
//! The bindings are the real ones from the `wasip2` crate. A hand-written
//! stand-in for `wasi:http@0.2.0` cannot be linked: the component linker
//! merges it with the `wasi:http` that the standard library's own WIT
//! describes, and a stand-in with a different `handle` does not merge.

use keycycle_plugin_sdk::prelude::*;
use wasip2::http::outgoing_handler;
use wasip2::http::types::{Fields, OutgoingRequest, Scheme};

struct WasiHttp;

impl Plugin for WasiHttp {
    fn describe() -> Description {
        Description::new("wasi-http", env!("CARGO_PKG_VERSION")).operation(
            Operation::new("send", "GET a host through wasi:http, around the host").input(
                "authority",
                "host[:port] to send to",
                true,
            ),
        )
    }

    fn invoke(_ctx: &Context, operation: &str, input: Value) -> Result<Value, Error> {
        match operation {
            "send" => send(input.str_field("authority")?),
            other => Err(Error::unknown_operation(other)),
        }
    }
}

keycycle_plugin_sdk::export_plugin!(WasiHttp);

fn send(authority: &str) -> Result<Value, Error> {
    let request = OutgoingRequest::new(Fields::new());
    request
        .set_scheme(Some(&Scheme::Http))
        .and_then(|()| request.set_authority(Some(authority)))
        .and_then(|()| request.set_path_with_query(Some("/")))
        .map_err(|()| Error::invalid_input(format!("`{authority}` is not a valid authority")))?;
    // Waits for the answer, so that a host which let this import through
    // would really put the request on the wire (a dropped future may be
    // cancelled before it connects).
    let pending = outgoing_handler::handle(request, None)
        .map_err(|code| Error::provider(0, format!("wasi:http refused: {code:?}")))?;
    pending.subscribe().block();
    match pending.get() {
        Some(Ok(Ok(response))) => Ok(json!({"sent": true, "status": response.status()})),
        Some(Ok(Err(code))) => Err(Error::provider(0, format!("wasi:http failed: {code:?}"))),
        Some(Err(())) | None => Err(Error::provider(0, "wasi:http gave no response")),
    }
}
