//! The HTTP shell shared by every simulator: binds a loopback port, serves a
//! router on a thread of its own (over plain http, or over https with a
//! certificate from a CA generated at start-up), and stops when told or when
//! dropped.
//!
//! The server runs on its own thread and runtime rather than on the caller's
//! runtime. Tests often block their thread while the real `keycycle` binary
//! runs as a subprocess; a simulator living on that same (possibly
//! single-threaded) runtime would then never answer and the test would hang.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::thread::JoinHandle;
use std::time::Duration;

use std::future::Future;
use std::path::Path;
use std::sync::Arc;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::sync::oneshot;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;

/// How long a stopping server waits for requests in flight before it drops them.
const GRACE: Duration = Duration::from_secs(2);

/// A running simulator. It stops when [`SimServer::shutdown`] is awaited or
/// when the value is dropped.
#[derive(Debug)]
pub struct SimServer {
    /// The bound address, always on 127.0.0.1.
    pub addr: SocketAddr,
    /// `http://127.0.0.1:PORT` (`https://` when served over TLS), without a
    /// trailing slash.
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

    /// Like [`SimServer::spawn`], over https: generates a CA and a leaf
    /// certificate it signed for `127.0.0.1` (IP SAN) and `localhost`, and
    /// returns the CA's certificate in PEM for clients to trust. Nothing is
    /// written to disk; each server has a CA of its own.
    pub(crate) fn spawn_tls(router: Router, port: u16) -> io::Result<(SimServer, String)> {
        let (acceptor, ca_pem) = tls_acceptor()?;
        let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, port))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(format!("keycycle-sim-{}", addr.port()))
            .spawn(move || {
                runtime.block_on(async move {
                    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                        return;
                    };
                    serve_tls(listener, router, acceptor, async {
                        let _ = stopped.await;
                    })
                    .await;
                })
            })?;
        Ok((
            SimServer {
                addr,
                base_url: format!("https://{addr}"),
                stop: Some(stop),
                thread: Some(thread),
            },
            ca_pem,
        ))
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

/// Serves `router` over https on 127.0.0.1:`port` in the current runtime
/// until Ctrl-C, with a certificate from a CA generated now. The CA's
/// certificate (PEM) is written to `ca_file` before the one line naming
/// the address is printed, so a caller that waits for that line can read it.
pub(crate) async fn serve_forever_tls(
    router: Router,
    port: u16,
    provider: &str,
    ca_file: &Path,
) -> io::Result<()> {
    let (acceptor, ca_pem) = tls_acceptor()?;
    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, port)).await?;
    let addr = listener.local_addr()?;
    // Written whole or not at all: a caller may read the file as soon as it
    // appears.
    let mut partial = ca_file.as_os_str().to_owned();
    partial.push(".partial");
    std::fs::write(&partial, ca_pem)
        .and_then(|()| std::fs::rename(&partial, ca_file))
        .map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "cannot write the CA certificate to {}: {e}",
                    ca_file.display()
                ),
            )
        })?;
    println!(
        "keycycle sim {provider}: listening on https://{addr} (control API under /_sim/; CA certificate in {})",
        ca_file.display()
    );
    serve_tls(listener, router, acceptor, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await;
    Ok(())
}

/// A CA made now, and a TLS acceptor with a leaf certificate it signed for
/// 127.0.0.1 and localhost; returns the acceptor and the CA's PEM.
fn tls_acceptor() -> io::Result<(TlsAcceptor, String)> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    let failed = |e: rcgen::Error| io::Error::other(format!("cannot make a certificate: {e}"));
    let ca_key = KeyPair::generate().map_err(failed)?;
    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(failed)?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.distinguished_name
        .push(DnType::CommonName, "keycycle simulator CA");
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca.self_signed(&ca_key).map_err(failed)?;
    let ca_pem = ca_cert.pem();
    let issuer = Issuer::new(ca, ca_key);
    let leaf_key = KeyPair::generate().map_err(failed)?;
    // "127.0.0.1" parses as an IP address, so it becomes an IP SAN.
    let mut leaf = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
        .map_err(failed)?;
    leaf.distinguished_name
        .push(DnType::CommonName, "keycycle simulator");
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    let leaf_cert = leaf.signed_by(&leaf_key, &issuer).map_err(failed)?;
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| io::Error::other(format!("cannot set up TLS: {e}")))?
        .with_no_client_auth()
        .with_single_cert(vec![leaf_cert.der().clone(), ca_cert.der().clone()], key)
        .map_err(|e| io::Error::other(format!("cannot set up TLS: {e}")))?;
    // HTTP/1.1 only, as the plain listener serves; clients offering h2
    // (kubectl does) fall back to it.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok((TlsAcceptor::from(Arc::new(config)), ca_pem))
}

/// Accepts connections, completes each TLS handshake and serves `router` on
/// it, until `stop` resolves; then lets requests in flight finish for up to
/// [`GRACE`].
async fn serve_tls(
    listener: tokio::net::TcpListener,
    router: Router,
    acceptor: TlsAcceptor,
    stop: impl Future<Output = ()>,
) {
    // Each connection ends gracefully (the request in flight is answered,
    // then the connection closes) once `closing` turns true.
    let (closing, closed) = tokio::sync::watch::channel(false);
    let mut connections = tokio::task::JoinSet::new();
    tokio::pin!(stop);
    loop {
        let (tcp, _) = tokio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                // A failed accept (out of descriptors, a reset connection)
                // must not end the server.
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        // Finished connections leave the set as new ones come.
        while connections.try_join_next().is_some() {}
        let acceptor = acceptor.clone();
        let service = TowerToHyperService::new(router.clone());
        let mut closed = closed.clone();
        connections.spawn(async move {
            // A client that does not trust the CA ends the handshake; that
            // is its business, not the server's.
            let Ok(stream) = acceptor.accept(tcp).await else {
                return;
            };
            let builder = auto::Builder::new(TokioExecutor::new());
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => {}
                _ = async { closed.wait_for(|closing| *closing).await.is_ok() } => {
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
            }
        });
    }
    let _ = closing.send(true);
    let _ = tokio::time::timeout(GRACE, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    // Whatever is still open (a watch streaming forever) is dropped with
    // the set.
}
