//! Faithful simulators of token providers that tests cannot reach: used as a
//! library by integration tests, and served by `keycycle sim <provider>` for
//! operators rehearsing a runbook.
//!
//! Each simulator binds 127.0.0.1 only and has two faces:
//!
//! * the provider API, behaving like the real one (auth, errors, status codes);
//! * a control API under `/_sim/` (no auth; tests and rehearsals only) that
//!   seeds state, reads the *true* state (token values included), injects
//!   failures and rate limits, and returns the request log.
//!
//! The same control is available in-process through the state handle
//! returned by `start_*` ([`DemoState`]), which is `Clone` and shares the
//! server's state.
//!
//! # Demo token service
//!
//! | Request | Answer |
//! | --- | --- |
//! | `GET /api/whoami` | 200 `{"user":"demo-admin","token_id":N,"token_name":"..."}` |
//! | `POST /api/tokens` `{"name"}` | 201 `{"id","name","token":"demo-<32 hex>","created_at"}` (value shown only here); 400 `{"message":"name is missing"}` |
//! | `GET /api/tokens[?name=exact]` | 200 `[{"id","name","active","created_at"}]` |
//! | `DELETE /api/tokens/:id` | 204; 404 `{"message":"404 Not found"}` |
//! | `GET /api/redirect?to=URL` | 302 `Location: URL` (no auth) |
//!
//! Every `/api` call except the redirect needs `Authorization: Bearer <token>`
//! and answers 401 `{"message":"401 Unauthorized"}` for unknown or revoked
//! tokens.
//!
//! Control: `POST /_sim/tokens {"name","token"}` → 201 `{"id"}`;
//! `GET /_sim/state` → `{"tokens":[{"id","name","active","created_at","value"}],"requests":[...]}`;
//! `POST /_sim/fail` [`FailRule`]; `DELETE /_sim/fail`;
//! `POST /_sim/rate_limit` [`RateLimit`]; `GET|DELETE /_sim/requests`.

// Parts of these modules serve the GitLab simulator, which follows.
#![allow(dead_code)]

mod clock;
mod control;
mod demo;
mod error;
mod fail;
mod server;
mod values;

use std::io;

pub use control::{CONTROL_PREFIX, RequestRecord};
pub use demo::{DEMO_USER, DemoState, DemoToken};
pub use error::SimError;
pub use fail::{FailRule, RateLimit};
pub use server::SimServer;

/// Starts the demo token service on 127.0.0.1:`port` (0 = any free port).
pub async fn start_demo(port: u16) -> io::Result<(SimServer, DemoState)> {
    let state = DemoState::new();
    let server = SimServer::spawn(demo::router(state.clone()), port)?;
    Ok((server, state))
}

/// Serves the demo token service on 127.0.0.1:`port` until Ctrl-C, printing
/// only the address it listens on.
pub async fn serve_demo_forever(port: u16) -> io::Result<()> {
    server::serve_forever(demo::router(DemoState::new()), port, "demo").await
}
