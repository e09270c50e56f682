//! The HTTP shell shared by every simulator: binds a loopback port, serves a
//! router on a thread of its own, and stops when told or when dropped.
//!
//! The server runs on its own thread and runtime rather than on the caller's
//! runtime. Tests often block their thread while the real `keycycle` binary
//! runs as a subprocess; a simulator living on that same (possibly
//! single-threaded) runtime would then never answer and the test would hang.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::thread::JoinHandle;
use std::time::Duration;

use axum::Router;
use tokio::sync::oneshot;

/// How long a stopping server waits for requests in flight before it drops them.
const GRACE: Duration = Duration::from_secs(2);

/// A running simulator. It stops when [`SimServer::shutdown`] is awaited or
/// when the value is dropped.
#[derive(Debug)]
pub struct SimServer {
    /// The bound address, always on 127.0.0.1.
    pub addr: SocketAddr,
    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub base_url: String,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl SimServer {
    /// Binds 127.0.0.1:`port` (0 picks a free port) and serves `router` on a
    /// background thread.
    pub(crate) fn spawn(router: Router, port: u16) -> io::Result<SimServer> {
        let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, port))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(format!("keycycle-sim-{}", addr.port()))
            .spawn(move || runtime.block_on(serve_until(listener, router, stopped)))?;
        Ok(SimServer {
            addr,
            base_url: format!("http://{addr}"),
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// `base_url` joined with `path` (which should start with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base_url, path)
    }

    /// Stops the server and waits until the port is released.
    pub async fn shutdown(mut self) {
        self.signal_stop();
        if let Some(thread) = self.thread.take() {
            // Joining blocks; keep it off the caller's async worker.
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }

    fn signal_stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl Drop for SimServer {
    fn drop(&mut self) {
        // Not joined here: a drop inside an async test must not block a
        // worker. The thread ends on its own within GRACE.
        self.signal_stop();
    }
}

async fn serve_until(
    listener: std::net::TcpListener,
    router: Router,
    stopped: oneshot::Receiver<()>,
) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(listener) => listener,
        Err(_) => return,
    };
    let (graceful, graceful_rx) = oneshot::channel::<()>();
    let serving = tokio::spawn(async move {
        let _ = axum::serve(listener, router)
            .with_graceful_shutdown(async {
                let _ = graceful_rx.await;
            })
            .await;
    });
    // A dropped sender (the SimServer went away) also means stop.
    let _ = stopped.await;
    let _ = graceful.send(());
    let _ = tokio::time::timeout(GRACE, serving).await;
}

/// Serves `router` on 127.0.0.1:`port` in the current runtime until Ctrl-C.
/// Prints one line naming the address; never anything secret.
pub(crate) async fn serve_forever(router: Router, port: u16, provider: &str) -> io::Result<()> {
    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, port)).await?;
    let addr = listener.local_addr()?;
    println!("keycycle sim {provider}: listening on http://{addr} (control API under /_sim/)");
    axum::serve(listener, router)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
}
