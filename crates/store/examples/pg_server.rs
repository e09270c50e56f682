//! A throwaway PostgreSQL server for benchmarks that run keycycle from
//! outside the test harness (`cargo xtask bench-fleet --postgres`): starts
//! one on 127.0.0.1 (as the tests do), creates a database, prints one JSON
//! line with its URL and password, and stops the server once its standard
//! input closes.

use std::io::{Read, Write};

use keycycle_store::pg_test_server::{PASSWORD, TestServer};

fn main() {
    let server = TestServer::start();
    let db = server.create_database();
    let line = serde_json::json!({ "url": server.url(&db), "password": PASSWORD });
    let mut out = std::io::stdout();
    writeln!(out, "{line}")
        .and_then(|()| out.flush())
        .expect("write to stdout");
    // Until the caller is done, or gone.
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
    drop(server);
}
