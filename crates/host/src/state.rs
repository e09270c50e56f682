//! The per-call store data: a fresh WASI context with nothing in it, the
//! memory limiter, and the host interface a plugin imports. Nothing here
//! outlives one call, so no state survives from one run or team to the next.

use std::collections::BTreeMap;
use std::sync::Arc;

use keycycle_secret::SecretValue;
use wasmtime::component::ResourceTable;
use wasmtime::{ResourceLimiter, StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::bindings::{host, types};
use crate::grants::{Limits, Origin, SecretSource};
use crate::http::{Failure, PluginHttp, Request};
use crate::text::{echo, one_line};

/// What a call may use: shared by all calls of one loaded plugin.
pub(crate) struct PluginEnv {
    pub name: String,
    pub http: Option<PluginHttp>,
    /// Plugin secret name → store name.
    pub secrets: BTreeMap<String, String>,
    pub source: Arc<dyn SecretSource>,
    pub limits: Limits,
}

/// Wraps [`StoreLimits`] to remember that it refused a memory grow, so the
/// resulting trap can be reported as what it is, and to bound the linear
/// memories of a call together: [`StoreLimits`] checks each memory on its
/// own, so a component with eight memories would get eight times the cap.
pub(crate) struct Limiter {
    inner: StoreLimits,
    pub memory_refused: bool,
    /// Bytes every linear memory of the call holds together.
    memory_total: usize,
    memory_cap: usize,
}

impl Limiter {
    pub(crate) fn new(memory_bytes: usize) -> Limiter {
        Limiter {
            memory_total: 0,
            memory_cap: memory_bytes,
            inner: StoreLimitsBuilder::new()
                .memory_size(memory_bytes)
                .table_elements(100_000)
                .instances(32)
                .tables(64)
                .memories(8)
                .trap_on_grow_failure(true)
                .build(),
            memory_refused: false,
        }
    }
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let growth = desired.saturating_sub(current);
        let total = self.memory_total.saturating_add(growth);
        if total > self.memory_cap {
            self.memory_refused = true;
            return Err(wasmtime::format_err!(
                "the plugin's linear memories would hold {total} bytes together, over the \
                 limit of {} bytes",
                self.memory_cap
            ));
        }
        let r = self.inner.memory_growing(current, desired, maximum);
        match r {
            Ok(true) => self.memory_total = total,
            _ => self.memory_refused = true,
        }
        r
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.inner.table_growing(current, desired, maximum)
    }

    fn instances(&self) -> usize {
        self.inner.instances()
    }

    fn tables(&self) -> usize {
        self.inner.tables()
    }

    fn memories(&self) -> usize {
        self.inner.memories()
    }
}

/// Why a host function stopped the guest.
#[derive(Debug)]
pub(crate) struct HostAbort(pub String);

impl std::fmt::Display for HostAbort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for HostAbort {}

pub(crate) struct CallState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub limiter: Limiter,
    env: Arc<PluginEnv>,
    pub operation: String,
    /// What the sandbox refused during this call. The host's record wins
    /// over whatever the plugin reports, so a plugin cannot hide a denial.
    pub denials: Vec<String>,
    /// Log lines are held until the call ends: a plugin may log a token it
    /// just minted before returning it, and the value is only known to be
    /// secret (and registered for masking) once the output is parsed.
    pub logs: Vec<(host::Level, String)>,
    log_lines: usize,
    log_bytes: usize,
    http_budget: usize,
}

impl CallState {
    pub fn new(env: Arc<PluginEnv>, operation: &str) -> CallState {
        // The default context: stdin closed, stdout and stderr discarded, no
        // environment, no arguments, no preopened directories, and (in
        // wasmtime 48) no TCP, no UDP, no name lookup.
        let wasi = WasiCtx::builder().build();
        let mut table = ResourceTable::new();
        table.set_max_capacity(1_000);
        CallState {
            wasi,
            table,
            limiter: Limiter::new(env.limits.memory_bytes),
            operation: operation.to_owned(),
            denials: Vec::new(),
            logs: Vec::new(),
            log_lines: 0,
            log_bytes: 0,
            http_budget: env.limits.max_http_requests,
            env,
        }
    }
}

impl WasiView for CallState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl types::Host for CallState {}

impl host::Host for CallState {
    async fn http_send(
        &mut self,
        request: host::HttpRequest,
    ) -> wasmtime::Result<Result<host::HttpResponse, host::HttpError>> {
        let Some(http) = &self.env.http else {
            let target = url::Url::parse(&request.url)
                .ok()
                .and_then(|u| Origin::of(&u))
                .map_or_else(|| "the URL".to_owned(), |o| format!("host {o}"));
            let what = format!(
                "{target} is not granted (no origin is both declared by the plugin and granted to it)"
            );
            self.denials.push(what.clone());
            return Ok(Err(host::HttpError::Denied(what)));
        };
        let req = Request {
            method: request.method,
            url: request.url,
            headers: request.headers,
            body: request.body,
        };
        let method = echo(&req.method);
        tracing::debug!(plugin = %self.env.name, operation = %self.operation, %method, "plugin HTTP request");
        let result = http
            .send(
                req,
                self.env.limits.max_response_bytes,
                &mut self.http_budget,
            )
            .await;
        Ok(match result {
            Ok(resp) => Ok(host::HttpResponse {
                status: resp.status,
                headers: resp.headers,
                body: resp.body,
            }),
            Err(Failure::Denied(what)) => {
                self.denials.push(what.clone());
                Err(host::HttpError::Denied(what))
            }
            Err(Failure::Timeout(m)) => Err(host::HttpError::Timeout(m)),
            Err(Failure::Transport(m)) => Err(host::HttpError::Transport(m)),
            Err(Failure::TooLarge(m)) => Err(host::HttpError::TooLarge(m)),
        })
    }

    async fn secret(&mut self, name: String) -> wasmtime::Result<Result<String, String>> {
        let Some(store_name) = self.env.secrets.get(&name) else {
            let granted: Vec<String> = self.env.secrets.keys().map(|k| echo(k)).collect();
            let what = format!(
                "secret `{}` is not granted (granted: {})",
                echo(&name),
                if granted.is_empty() {
                    "none".to_owned()
                } else {
                    granted.join(", ")
                }
            );
            self.denials.push(what.clone());
            return Ok(Err(what));
        };
        // The plugin learns only that the secret is unavailable: the store
        // name it maps to, and the store's own errors, are the operator's.
        let unavailable = || format!("the secret `{}` is unavailable", echo(&name));
        let plugin = self.env.name.as_str();
        let operation = self.operation.as_str();
        match self.env.source.get(store_name) {
            Ok(Some(value)) => Ok(Ok(expose_owned(&value))),
            Ok(None) => {
                tracing::warn!(
                    target: "keycycle",
                    plugin,
                    operation,
                    "plugin `{plugin}` asked for its secret `{}`, granted as `{store_name}`, but the store has no `{store_name}`; add it with `keycycle secrets set {store_name}`",
                    echo(&name)
                );
                Ok(Err(unavailable()))
            }
            Err(e) => {
                tracing::warn!(
                    target: "keycycle",
                    plugin,
                    operation,
                    "plugin `{plugin}` asked for its secret `{}`, granted as `{store_name}`, which could not be read: {}",
                    echo(&name),
                    one_line(&e.to_string())
                );
                Ok(Err(unavailable()))
            }
        }
    }

    async fn log(&mut self, level: host::Level, message: String) -> wasmtime::Result<()> {
        self.log_lines += 1;
        self.log_bytes += message.len();
        let limits = &self.env.limits;
        if self.log_lines > limits.max_log_lines || self.log_bytes > limits.max_log_bytes {
            return Err(wasmtime::Error::new(HostAbort(format!(
                "it logged more than the limit of {} lines or {} bytes in one call",
                limits.max_log_lines, limits.max_log_bytes
            ))));
        }
        self.logs.push((level, message));
        Ok(())
    }
}

impl CallState {
    /// Writes the held log lines; call after the output is parsed, so
    /// minted secrets are masked.
    pub fn flush_logs(&mut self) {
        let plugin = self.env.name.as_str();
        let operation = self.operation.as_str();
        for (level, message) in self.logs.drain(..) {
            // The tracing writer masks secret values in every line; the
            // plugin's own text is put on one escaped line first, so an
            // escape sequence or a forged second line cannot reach the
            // terminal or the log collector. It is led by the plugin and
            // operation, as the plugin's errors are, so no padding or
            // look-alike text can make it read as the host's.
            let message = format!("{plugin}.{operation}: {}", one_line(&message));
            match level {
                host::Level::Trace => {
                    tracing::trace!(target: "plugin", plugin, operation, "{message}")
                }
                host::Level::Debug => {
                    tracing::debug!(target: "plugin", plugin, operation, "{message}")
                }
                host::Level::Info => {
                    tracing::info!(target: "plugin", plugin, operation, "{message}")
                }
                host::Level::Warn => {
                    tracing::warn!(target: "plugin", plugin, operation, "{message}")
                }
                host::Level::Error => {
                    tracing::error!(target: "plugin", plugin, operation, "{message}")
                }
            }
        }
    }
}

/// The clear value, copied out for the guest. The guest's copy lives in its
/// linear memory, which is discarded with the store at the end of the call.
fn expose_owned(value: &SecretValue) -> String {
    value.expose().to_owned()
}

#[cfg(test)]
mod limiter_tests {
    use super::Limiter;
    use wasmtime::ResourceLimiter;

    #[test]
    fn every_memory_of_a_call_counts_against_one_cap() {
        let mut limiter = Limiter::new(64 << 20);
        // A first memory grows to 40 MiB: within the cap.
        assert!(limiter.memory_growing(0, 40 << 20, None).unwrap());
        // A second memory asks for 40 MiB more: alone it would fit the
        // per-memory check, together they are 80 MiB.
        assert!(limiter.memory_growing(0, 40 << 20, None).is_err());
        assert!(limiter.memory_refused);
        // What is left still fits.
        assert!(limiter.memory_growing(0, 24 << 20, None).unwrap());
    }
}
