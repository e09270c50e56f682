//! The KV version 2 secrets engine of OpenBao or HashiCorp Vault as
//! keycycle's secrets backend, beside the local encrypted file.
//!
//! Each keycycle secret name (`gitlab/ci-bot`) is a KV path below a prefix
//! in a mount (`secret/data/keycycle/gitlab/ci-bot`) holding
//! `{"value": "..."}`. Reads give [`SecretValue`]s, so every value read is
//! registered with the redactor before anything else sees it. Writes use
//! check-and-set against the version this process read: two runners that
//! rotate the same secret can never silently overwrite each other's new
//! value; the second gets [`VaultError::Conflict`]. Deleting removes the
//! key's metadata with every version.
//!
//! The store traits keycycle calls are synchronous, and they are called
//! both from plain threads (a runbook's) and from inside the tokio runtime
//! (the sandbox's async host functions). Blocking on a runtime from inside
//! another panics, and a blocking HTTP client does exactly that. So the
//! client lives on a thread of its own with its own current-thread runtime,
//! and [`KvStore`]'s methods send it a job over a channel and wait for the
//! answer; on a worker of a multi-thread runtime the wait is announced with
//! `block_in_place`, so the runtime's other tasks move on meanwhile.

mod client;
mod config;
mod error;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::mpsc;

pub use client::{KeyInfo, MountKind, Status};
pub use config::{
    Auth, Credential, DEFAULT_APPROLE_MOUNT, DEFAULT_MOUNT, DEFAULT_TIMEOUT, KvConfig,
};
pub use error::{ErrorClass, ServerSummary, VaultError};
use keycycle_secret::SecretValue;

use client::Core;
use config::Location;

/// One piece of work for the client's thread.
type Job = Box<dyn FnOnce(Arc<Core>) -> Pin<Box<dyn Future<Output = ()>>> + Send>;

/// A KV v2 secrets backend. Cheap to share (`Send + Sync`); the requests of
/// all its users go one at a time through its thread.
pub struct KvStore {
    jobs: mpsc::Sender<Job>,
    address: String,
}

impl std::fmt::Debug for KvStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvStore")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

impl KvStore {
    /// Checks the settings and starts the client's thread. Sends nothing:
    /// the first request logs in or reads the token.
    pub fn new(config: KvConfig) -> Result<KvStore, VaultError> {
        let loc = Location::new(&config)?;
        let http = http_client(&config)?;
        let address = loc.address.clone();
        let core = Core::new(loc, http, config.auth);
        let (jobs, queue) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("keycycle-vault".to_owned())
            .spawn(move || {
                // Without a runtime every job is dropped unanswered, which
                // its caller sees as `Stopped`.
                let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                else {
                    return;
                };
                let core = Arc::new(core);
                // Ends when the last `KvStore` handle is dropped.
                while let Ok(job) = queue.recv() {
                    runtime.block_on(job(core.clone()));
                }
            })
            .map_err(|e| VaultError::Setting {
                setting: "backend",
                problem: format!("cannot start the client's thread: {e}"),
            })?;
        Ok(KvStore { jobs, address })
    }

    /// The server's address, as configured.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Runs `f` on the client's thread and waits for its result.
    fn call<R, F, Fut>(&self, f: F) -> Result<R, VaultError>
    where
        R: Send + 'static,
        F: FnOnce(Arc<Core>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<R, VaultError>> + 'static,
    {
        let (reply, answer) = mpsc::sync_channel(1);
        let job: Job = Box::new(move |core| {
            Box::pin(async move {
                let _ = reply.send(f(core).await);
            })
        });
        self.jobs.send(job).map_err(|_| VaultError::Stopped)?;
        wait(move || answer.recv()).map_err(|_| VaultError::Stopped)?
    }

    /// The value of secret `name`, or `None` when there is none (or its
    /// current version was deleted). The first version this process reads
    /// of `name` is remembered as the check-and-set version of its next
    /// write of `name`; later reads do not move it (see `Core::remember`).
    pub fn get(&self, name: &str) -> Result<Option<SecretValue>, VaultError> {
        let name = name.to_owned();
        self.call(move |core| async move { core.get(&name).await })
    }

    /// Writes `value` as secret `name` with check-and-set: against the
    /// version this process last read or wrote, or for a key it has not
    /// read, the version there is now (which only narrows the window to
    /// these two requests). Returns the new version.
    pub fn set(&self, name: &str, value: &SecretValue) -> Result<u64, VaultError> {
        let (name, value) = (name.to_owned(), value.clone());
        self.call(move |core| async move { core.put(&name, &value).await })
    }

    /// Writes `value` as secret `name` only if its current version is
    /// `cas` (0: only if there is none).
    pub fn set_cas(&self, name: &str, value: &SecretValue, cas: u64) -> Result<u64, VaultError> {
        let (name, value) = (name.to_owned(), value.clone());
        self.call(move |core| async move { core.put_cas(&name, &value, cas).await })
    }

    /// What the server keeps about secret `name` besides its value.
    pub fn info(&self, name: &str) -> Result<Option<KeyInfo>, VaultError> {
        let name = name.to_owned();
        self.call(move |core| async move { core.info(&name).await })
    }

    /// Every secret name below the prefix, sorted.
    pub fn list(&self) -> Result<Vec<String>, VaultError> {
        self.call(|core| async move { core.list().await })
    }

    /// Deletes secret `name`, every version and its metadata; whether there
    /// was one.
    pub fn remove(&self, name: &str) -> Result<bool, VaultError> {
        let name = name.to_owned();
        self.call(move |core| async move { core.remove(&name).await })
    }

    /// Whether the server answers, takes the credentials, and has KV v2 at
    /// the mount.
    pub fn status(&self) -> Result<Status, VaultError> {
        self.call(|core| async move { core.status().await })
    }
}

/// Waits for a reply. On a worker thread of a multi-thread runtime, the
/// wait is announced with `block_in_place` so the worker's other tasks move
/// to another thread; elsewhere (a plain thread, a current-thread runtime)
/// the thread simply blocks. Nothing here needs the caller's runtime, so
/// either way the reply comes.
fn wait<T>(recv: impl FnOnce() -> T) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(recv)
        }
        _ => recv(),
    }
}

fn http_client(config: &KvConfig) -> Result<reqwest::Client, VaultError> {
    let mut builder = reqwest::Client::builder();
    if let Some(pem) = &config.ca_pem {
        let bad = |problem: String| VaultError::Setting {
            setting: "ca_cert",
            problem,
        };
        let roots = reqwest::Certificate::from_pem_bundle(pem).map_err(|e| {
            bad(format!(
                "the file is not PEM ({e}); point ca_cert at the CA certificate in PEM form"
            ))
        })?;
        if roots.is_empty() {
            return Err(bad("the file holds no certificate".to_owned()));
        }
        // Only the configured CA: a server with a private CA must not be
        // impersonated by anyone a public CA vouches for.
        builder = builder.tls_built_in_root_certs(false);
        for root in roots {
            builder = builder.add_root_certificate(root);
        }
    }
    builder
        // A redirect would carry the token header to wherever it points.
        .redirect(reqwest::redirect::Policy::none())
        // The token goes straight to the configured server, not through
        // whatever proxy the environment names.
        .no_proxy()
        .timeout(config.timeout)
        .connect_timeout(config.timeout.min(std::time::Duration::from_secs(10)))
        .user_agent(concat!("keycycle/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| VaultError::Setting {
            setting: "backend",
            problem: format!("cannot build the HTTP client: {e}"),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store aimed at a port nobody listens on: every call fails with
    /// `Unreachable`, which is enough to prove the calls come back.
    fn store_without_server() -> KvStore {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        KvStore::new(KvConfig {
            address: format!("http://127.0.0.1:{port}"),
            mount: DEFAULT_MOUNT.to_owned(),
            prefix: "keycycle/".to_owned(),
            ca_pem: None,
            auth: Auth::Token(Credential::Given {
                value: SecretValue::new("s.unit-test-token"),
                from: "a test".to_owned(),
            }),
            timeout: std::time::Duration::from_secs(5),
        })
        .unwrap()
    }

    fn assert_unreachable(result: Result<Option<SecretValue>, VaultError>) {
        match result {
            Err(VaultError::Unreachable { .. }) => {}
            other => panic!("expected Unreachable, got {other:?}"),
        }
    }

    #[test]
    fn calls_work_from_a_plain_thread() {
        assert_unreachable(store_without_server().get("a/b"));
    }

    #[test]
    fn calls_work_from_inside_a_multi_thread_runtime_and_the_store_drops_there() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            // On the runtime's worker, as the sandbox's host functions run.
            tokio::spawn(async {
                let store = store_without_server();
                assert_unreachable(store.get("a/b"));
                drop(store);
            })
            .await
            .unwrap();
            // And in `block_on` itself, as `keycycle doctor` runs.
            assert_unreachable(store_without_server().get("a/b"));
        });
    }

    #[test]
    fn calls_work_from_inside_a_current_thread_runtime() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async { assert_unreachable(store_without_server().get("a/b")) });
    }

    #[test]
    fn errors_never_show_the_token() {
        let e = store_without_server().get("a/b").unwrap_err().to_string();
        assert!(!e.contains("unit-test-token"), "{e}");
        assert!(e.contains("reading secret `a/b`"), "{e}");
    }
}
