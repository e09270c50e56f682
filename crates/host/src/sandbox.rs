//! The engine, the linker, and loaded plugins. One [`Sandbox`] serves a whole
//! process; each [`Plugin::invoke`] gets a fresh `Store` with its own memory
//! cap, epoch deadline and outer timeout, so a plugin that misbehaves fails
//! that one call and the host goes on.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use keycycle_contract::{
    CallContext, FieldSpec, OperationSpec, PluginDescription, PluginError, Value,
};
use sha2::{Digest, Sha256};
use wasmtime::component::{HasSelf, Linker};
use wasmtime::{
    Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, Trap,
};

use crate::bindings::{self, PluginPre, types};
use crate::cache::Cache;
use crate::error::{HostError, InvokeError};
use crate::grants::{Effective, Grants, SecretSource};
use crate::http::{HostProblem, PluginHttp, check_origin};
use crate::imports;
use crate::state::{CallState, HostAbort, PluginEnv};
use crate::text;
use crate::trust::{Trust, TrustProblem};

/// How often the epoch ticks; deadlines are counted in ticks.
const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Grace beyond a call's own timeout before the outer tokio timeout fires.
/// Epochs stop guest code; the outer timeout stops a call stuck in a host
/// function, which epochs cannot interrupt.
const OUTER_GRACE: Duration = Duration::from_millis(500);

/// Bytes of a pooled table reset with memset rather than madvise (8192
/// funcref elements).
const TABLE_KEEP_RESIDENT: usize = 64 << 10;

/// Bytes at the top of a pooled fiber stack (where a call's frames are)
/// zeroed with memset when its call ends; the rest of the 2 MiB stack is
/// zeroed with madvise, which is cheap for pages a call never touched. A
/// memset of the whole stack would cost more than the call itself, and
/// madvise alone would make every call fault its frames in again. A memset
/// costs about a microsecond per 64 KiB here, and a trivial call's frames
/// fit in 8 KiB (keeping 8 KiB resident adds no page fault to keeping the
/// whole stack); a call deep enough to pass 16 KiB is one that waits on the
/// network, next to which faulting in its deeper pages again is nothing.
const STACK_KEEP_RESIDENT: usize = 16 << 10;

/// Freed pool slots reset together (see `engine_config`). Well under the
/// pool's 64 instances even with a queue per core, so a slot is always free.
const DECOMMIT_BATCH: usize = 8;

#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// Where precompiled components are kept. `None` compiles every time.
    pub cache_dir: Option<PathBuf>,
    /// The key that authenticates cache entries (32 random bytes, created
    /// 0600 when missing). `None` puts it beside the cache folder, as
    /// `CACHE_DIR.key`; keycycle keeps it in the state folder.
    pub cache_key_file: Option<PathBuf>,
    /// Use the pooling instance allocator (fast instantiation). Falls back
    /// to on-demand allocation if the machine cannot reserve the pool.
    pub pooling: bool,
}

impl Default for SandboxConfig {
    fn default() -> SandboxConfig {
        SandboxConfig {
            cache_dir: None,
            cache_key_file: None,
            pooling: true,
        }
    }
}

pub struct Sandbox {
    engine: Engine,
    linker: Linker<CallState>,
    cache: Option<Cache>,
    ticker: Ticker,
}

struct Ticker {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn engine_config(pooling: bool) -> Config {
    let mut config = Config::new();
    config.wasm_component_model(true);
    // The contract is synchronous: a plugin's exports and the host's imports
    // are plain component functions, which the sandbox calls on a fiber
    // (`call_async`) so host functions can wait on the network. Wasmtime's
    // support for the component model's own concurrency (async lifts and
    // lowers, streams, futures, `run_concurrent`) is not used, and with it
    // on, every call went through its task machinery: a worker fiber per
    // store, disposed of (an error built, a backtrace walked when
    // RUST_BACKTRACE is set) when the store drops. Off, it costs nothing
    // per call, and a component that uses those features is refused at load.
    config.concurrency_support(false);
    config.epoch_interruption(true);
    config.max_wasm_stack(512 << 10);
    // A pooled fiber stack goes from one call to the next, whichever
    // plugin, and whichever team, that next call belongs to, and wasmtime
    // does not clear it by default: compiled wasm never reads a stack slot
    // it has not written, so only a wasmtime or Cranelift bug could show a
    // guest the frames left there. But the host's code runs on that stack
    // too (the `secret` import, an HTTP response, the lowering of what the
    // guest is handed), so such a bug would hand one call's secrets to the
    // next. Zeroing every stack before its slot is reused rules that out
    // whatever the compiler does. On-demand stacks are fresh mappings, zero
    // already. See `STACK_KEEP_RESIDENT` for what it costs.
    config.async_stack_zeroing(true);
    if pooling {
        let mut pool = PoolingAllocationConfig::default();
        // A CLI runs a handful of calls at once; keep the reservation small.
        pool.total_component_instances(64);
        pool.total_core_instances(256);
        pool.total_memories(64);
        pool.total_tables(128);
        pool.max_memories_per_component(4);
        pool.max_tables_per_component(8);
        pool.max_core_instances_per_component(32);
        // One fiber stack per call in flight, as many as component
        // instances. Wasmtime's default (1000) reserved 2 GiB of stacks and
        // took 1000 mprotects, about 3 ms of every process's start.
        pool.total_stacks(64);
        // A slot's table is reset when its store drops: by default with
        // madvise, which drops the pages, so the next call faults them in
        // again (a page fault in a VM is microseconds). Resetting with a
        // memset of up to this many bytes of the table's current size does
        // the same job without either; a plugin's tables are a few KiB, so
        // the whole table is memset. What lies past it is still reset with
        // madvise: either way nothing survives from one call to the next.
        pool.table_keep_resident(TABLE_KEEP_RESIDENT);
        pool.async_stack_keep_resident(STACK_KEEP_RESIDENT);
        // Linear memories are reset with madvise (wasmtime's default), and
        // kept off the two faster ways. A memset of the first N bytes
        // (`linear_memory_keep_resident`) costs more than it saves: a Rust
        // plugin's memory starts with its 1 MiB shadow stack, used from the
        // top, so the pages a call dirties lie past the first megabyte.
        // PAGEMAP_SCAN (`pagemap_scan`) would reset only the dirtied pages
        // and keep the image's pages mapped, but in wasmtime 48 it skips a
        // dirtied page that is not present when the scan runs (swapped out,
        // or mid-migration) without dropping it either, so the next call in
        // the slot could read it: an open bug (wasmtime#14357), and one call
        // reading another's memory is what this sandbox exists to prevent.
        pool.pagemap_scan(Enabled::No);
        // Slots are reset in batches: a batch's pages are dropped together,
        // and none of its slots is handed out before that (a call that finds
        // no free slot flushes the queue first). Each madvise on a process
        // with threads on other cores costs a TLB shootdown; one per call was
        // a tenth of a fleet's CPU.
        pool.decommit_batch_size(DECOMMIT_BATCH);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    }
    config
}

impl Sandbox {
    pub fn new(config: &SandboxConfig) -> Result<Sandbox, HostError> {
        let engine = match Engine::new(&engine_config(config.pooling)) {
            Ok(e) => e,
            Err(e) if config.pooling => {
                tracing::debug!(error = %e, "pooling allocator unavailable; using on-demand allocation");
                Engine::new(&engine_config(false)).map_err(|e| HostError::Setup(e.to_string()))?
            }
            Err(e) => return Err(HostError::Setup(e.to_string())),
        };
        let mut linker = Linker::<CallState>::new(&engine);
        // Links all of WASI p2 so that std's imports resolve; the import
        // check refuses any component that asks for more than the
        // allowlist before it reaches this linker, and the per-call
        // `WasiCtx` grants no files, environment or sockets.
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .map_err(|e| HostError::Setup(e.to_string()))?;
        bindings::Plugin::add_to_linker::<CallState, HasSelf<CallState>>(&mut linker, |s| s)
            .map_err(|e| HostError::Setup(e.to_string()))?;

        let cache = match &config.cache_dir {
            Some(dir) => {
                let key_file = config.cache_key_file.clone().unwrap_or_else(|| {
                    let mut name = dir.as_os_str().to_owned();
                    name.push(".key");
                    PathBuf::from(name)
                });
                Some(Cache::open(dir, &key_file, &engine)?)
            }
            None => None,
        };

        let stop = Arc::new(AtomicBool::new(false));
        let handle = {
            let engine = engine.clone();
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("keycycle-epoch".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(EPOCH_TICK);
                        engine.increment_epoch();
                    }
                })
                .map_err(|e| HostError::Setup(format!("cannot start epoch thread: {e}")))?
        };
        Ok(Sandbox {
            engine,
            linker,
            cache,
            ticker: Ticker {
                stop,
                handle: Some(handle),
            },
        })
    }

    /// The engine every plugin of this sandbox runs on. For the invoke
    /// bench's floor, which calls a component on this same engine with
    /// nothing of the sandbox around it; not for plugins, which go through
    /// [`Sandbox::load`] and its checks.
    #[doc(hidden)]
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Reads, checks, compiles (or loads from the cache) and describes a
    /// plugin, then computes its effective grants.
    pub async fn load(
        &self,
        name: &str,
        path: &Path,
        grants: &Grants,
        secrets: Arc<dyn SecretSource>,
    ) -> Result<Plugin, HostError> {
        self.load_trusted(name, path, grants, &Trust::default(), secrets)
            .await
    }

    /// The component in `wasm` (whose sha256 is `sha256`), from the cache
    /// when an authentic entry is there, else compiled; true when it was
    /// compiled now. A file that is not a component is refused before
    /// wasmtime parses it.
    fn compile(
        &self,
        name: &str,
        path: &Path,
        wasm: &[u8],
        sha256: &str,
    ) -> Result<(wasmtime::component::Component, bool), HostError> {
        check_header(name, path, wasm)?;
        match &self.cache {
            Some(cache) => cache.load_or_compile(&self.engine, sha256, wasm),
            None => {
                wasmtime::component::Component::from_binary(&self.engine, wasm).map(|c| (c, true))
            }
        }
        .map_err(|e| invalid(name, path, &e))
    }

    /// What `keycycle plugins check` reports on a component file before
    /// anyone grants it: every import (and why one is refused), and, when
    /// they all link, its self-description, asked for with no grants at
    /// all. An unreadable file or one that is not a component is an error.
    pub async fn check_file(&self, path: &Path) -> Result<FileCheck, HostError> {
        // Errors name the file: nobody has named the plugin yet.
        let name = &path.file_name().map_or_else(
            || path.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        let (wasm, sha256) = read_component(name, path)?;
        let (component, _) = self.compile(name, path, &wasm, &sha256)?;
        let invalid = |e: wasmtime::Error| invalid(name, path, &e);
        let imports: Vec<ImportCheck> = imports::imports(&self.engine, &component)
            .into_iter()
            .map(|(import, problem)| {
                let inert = matches!(problem, Some(imports::ImportProblem::Inert(_)));
                let problem = problem.map(|p| match p {
                    imports::ImportProblem::Inert(_) => {
                        "linked inert (no directory, no socket, no name lookup), and only \
                         when the plugin's section says `inert_wasi = true`"
                            .to_owned()
                    }
                    imports::ImportProblem::Forbidden(_) => {
                        "the sandbox does not provide it (plugins may import only \
                         keycycle:plugin/host, clocks, random and discarded stdio)"
                            .to_owned()
                    }
                    imports::ImportProblem::OtherContract(_, found) => format!(
                        "built against keycycle:plugin@{found}; this keycycle speaks {}.x",
                        imports::contract_version()
                    ),
                });
                ImportCheck {
                    name: text::echo(&import),
                    problem,
                    inert,
                }
            })
            .collect();
        // Inert imports link (the linker has all of WASI); the others not.
        let description = if imports.iter().any(|i| i.problem.is_some() && !i.inert) {
            Err("not asked: the component would not link".to_owned())
        } else {
            let pre = self
                .linker
                .instantiate_pre(&component)
                .and_then(PluginPre::new)
                .map_err(invalid)?;
            let env = Arc::new(PluginEnv {
                name: name.to_owned(),
                http: None,
                secrets: Default::default(),
                source: Arc::new(NoSecrets),
                limits: crate::grants::Limits::default(),
            });
            describe(&self.engine, &pre, env)
                .await
                .map_err(|message| text::fold(&message))
        };
        Ok(FileCheck {
            sha256,
            size: wasm.len() as u64,
            imports,
            description,
        })
    }

    /// [`Sandbox::load`], refusing a file that is not pinned or signed as
    /// `trust` asks. The bytes checked are the bytes compiled.
    pub async fn load_trusted(
        &self,
        name: &str,
        path: &Path,
        grants: &Grants,
        trust: &Trust,
        secrets: Arc<dyn SecretSource>,
    ) -> Result<Plugin, HostError> {
        let _ = &self.ticker;
        let (wasm, sha256) = read_component(name, path)?;
        // Before anything parses the file: an untrusted file is not even
        // looked at.
        trust
            .check(path, &wasm, &sha256)
            .map_err(|problem| match problem {
                TrustProblem::Pin { expected, actual } => HostError::Pinned {
                    plugin: name.to_owned(),
                    path: path.to_owned(),
                    expected,
                    actual,
                },
                TrustProblem::Signature(reason) => HostError::Unsigned {
                    plugin: name.to_owned(),
                    reason,
                },
            })?;
        let (component, compiled) = self.compile(name, path, &wasm, &sha256)?;
        let invalid = |e: wasmtime::Error| invalid(name, path, &e);
        match imports::forbidden_import(&self.engine, &component, grants.inert_wasi) {
            Some(imports::ImportProblem::Forbidden(import)) => {
                return Err(HostError::ForbiddenImport {
                    plugin: name.to_owned(),
                    import,
                });
            }
            Some(imports::ImportProblem::Inert(import)) => {
                return Err(HostError::InertImport {
                    plugin: name.to_owned(),
                    import,
                });
            }
            Some(imports::ImportProblem::OtherContract(import, found)) => {
                return Err(HostError::ContractVersion {
                    plugin: name.to_owned(),
                    import,
                    found,
                    speaks: imports::contract_version().to_owned(),
                });
            }
            None => {}
        }
        tracing::debug!(plugin = name, %sha256, compiled, "plugin loaded");
        let instance_pre = self.linker.instantiate_pre(&component).map_err(invalid)?;
        let pre = PluginPre::new(instance_pre).map_err(invalid)?;

        // Describe runs with no grants at all: a plugin cannot use the
        // network or secrets to decide what it claims to need.
        let describe_env = Arc::new(PluginEnv {
            name: name.to_owned(),
            http: None,
            secrets: Default::default(),
            source: secrets.clone(),
            limits: grants.limits.clone(),
        });
        let description = describe(&self.engine, &pre, describe_env)
            .await
            .map_err(|message| HostError::Describe {
                plugin: name.to_owned(),
                // A trap's text can carry the plugin's own words.
                message: text::fold(&message),
            })?;

        let effective =
            Effective::compute(&description, grants).map_err(|message| HostError::Grant {
                plugin: name.to_owned(),
                message,
            })?;
        for gap in &effective.unmatched {
            tracing::debug!(plugin = name, "{gap}");
        }
        let http = if effective.origins.is_empty() {
            None
        } else {
            let http = PluginHttp::new(&effective, grants.limits.timeout, grants.ca_pem.as_deref())
                .map_err(|message| HostError::Grant {
                    plugin: name.to_owned(),
                    message,
                })?;
            Some(http)
        };
        let env = Arc::new(PluginEnv {
            name: name.to_owned(),
            http,
            secrets: effective.secrets.clone(),
            source: secrets,
            limits: grants.limits.clone(),
        });
        Ok(Plugin {
            name: name.to_owned(),
            path: path.to_owned(),
            sha256,
            compiled,
            description,
            effective,
            engine: self.engine.clone(),
            pre,
            env,
        })
    }
}

/// A loaded, checked plugin, ready to be invoked any number of times.
pub struct Plugin {
    name: String,
    path: PathBuf,
    sha256: String,
    compiled: bool,
    description: PluginDescription,
    effective: Effective,
    engine: Engine,
    pre: PluginPre<CallState>,
    env: Arc<PluginEnv>,
}

impl Plugin {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Hex sha256 of the component file.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// True when this load compiled the component (a cache miss).
    pub fn was_compiled(&self) -> bool {
        self.compiled
    }

    pub fn description(&self) -> &PluginDescription {
        &self.description
    }

    /// Effective origins, as `scheme://host:port`.
    pub fn effective_hosts(&self) -> Vec<String> {
        self.effective
            .origins
            .iter()
            .map(|o| o.to_string())
            .collect()
    }

    /// Effective secrets: plugin name → store name.
    pub fn effective_secrets(&self) -> Vec<(String, String)> {
        self.effective
            .secrets
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// Effective origins whose calls will fail at the resolver, each with
    /// why: a name that resolves only to non-public addresses (which only
    /// a granted IP-literal origin reaches), or a name that does not
    /// resolve. Resolves every named host, so it waits on DNS.
    pub async fn host_problems(&self) -> Vec<(String, HostProblem)> {
        let mut out = Vec::new();
        for origin in &self.effective.origins {
            if let Some(problem) = check_origin(origin).await {
                out.push((origin.to_string(), problem));
            }
        }
        out
    }

    pub fn effective_config_keys(&self) -> Vec<String> {
        self.effective.config.keys().cloned().collect()
    }

    /// Declared rights that were not granted, and grants the plugin does
    /// not declare.
    pub fn unmatched(&self) -> &[String] {
        &self.effective.unmatched
    }

    /// Runs one operation in a fresh store.
    pub async fn invoke(
        &self,
        operation: &str,
        input: &Value,
        ctx: &CallContext,
    ) -> Result<Value, InvokeError> {
        let Some(spec) = self.description.operation(operation) else {
            return Err(InvokeError::UnknownOperation {
                plugin: self.name.clone(),
                operation: text::echo(operation),
                // The names are the plugin's own text.
                known: self
                    .description
                    .operations
                    .iter()
                    .map(|o| text::echo(&o.name))
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        };
        let limits = &self.env.limits;
        let mut store = new_store(&self.engine, self.env.clone(), operation, limits.timeout);
        let wit_ctx = types::CallContext {
            run_id: ctx.run_id.clone(),
            idempotency_key: ctx.idempotency_key.clone(),
            config: self
                .effective
                .config
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        };
        let input_json = input.to_plugin_json();
        let call = async {
            let instance = self.pre.instantiate_async(&mut store).await?;
            instance
                .call_invoke(&mut store, &wit_ctx, operation, &input_json)
                .await
        };
        let outcome = tokio::time::timeout(limits.timeout + OUTER_GRACE, call).await;
        let result = self.settle(operation, spec, outcome, store.data());
        // Only now are the call's minted secrets registered for masking.
        store.data_mut().flush_logs();
        result
    }

    fn settle(
        &self,
        operation: &str,
        spec: &OperationSpec,
        outcome: Result<
            wasmtime::Result<Result<String, types::PluginError>>,
            tokio::time::error::Elapsed,
        >,
        state: &CallState,
    ) -> Result<Value, InvokeError> {
        let limits = &self.env.limits;
        let aborted = |reason: String| InvokeError::Aborted {
            plugin: self.name.clone(),
            operation: operation.to_owned(),
            reason,
        };
        if let Some(what) = state.denials.first() {
            return Err(InvokeError::Denied {
                plugin: self.name.clone(),
                operation: operation.to_owned(),
                what: what.clone(),
            });
        }
        let result = match outcome {
            Err(_) => return Err(aborted(timeout_text(limits.timeout))),
            Ok(Err(trap)) => return Err(aborted(explain_trap(&trap, state, limits))),
            Ok(Ok(result)) => result,
        };
        match result {
            Ok(output) => {
                if output.len() > limits.max_output_bytes {
                    return Err(aborted(format!(
                        "it returned {} bytes of output, over the limit of {} bytes",
                        output.len(),
                        limits.max_output_bytes
                    )));
                }
                Value::from_plugin_json(&output, &spec.secret_outputs)
                    .map_err(|e| aborted(text::echo(&e.to_string())))
            }
            Err(e) => Err(InvokeError::Plugin {
                plugin: self.name.clone(),
                operation: operation.to_owned(),
                error: plugin_error(e),
            }),
        }
    }
}

/// Every WebAssembly binary starts with this magic.
const WASM_MAGIC: &[u8] = b"\0asm";
/// The version field of a core module (1); a component has 0x0d and layer 1.
const CORE_MODULE_VERSION: &[u8] = &[1, 0, 0, 0];

/// Tells a file that is not WebAssembly, or is a core module, from a
/// component before wasmtime parses it: its errors for those are a
/// multi-line dump of the expected and found bytes that says nothing about
/// what to do.
/// The bytes of the component file at `path`, and their sha256.
fn read_component(name: &str, path: &Path) -> Result<(Vec<u8>, String), HostError> {
    let wasm = std::fs::read(path).map_err(|source| HostError::Read {
        plugin: name.to_owned(),
        path: path.to_owned(),
        source,
    })?;
    let sha256 = hex::encode(Sha256::digest(&wasm));
    Ok((wasm, sha256))
}

/// wasmtime's refusal of plugin `name`'s component, folded onto one line.
fn invalid(name: &str, path: &Path, e: &wasmtime::Error) -> HostError {
    HostError::Invalid {
        plugin: name.to_owned(),
        path: path.to_owned(),
        message: text::fold(&format!("{e:#}")),
    }
}

/// What [`Sandbox::check_file`] found.
#[derive(Debug)]
pub struct FileCheck {
    pub sha256: String,
    pub size: u64,
    /// Every import, with its verdict.
    pub imports: Vec<ImportCheck>,
    /// The plugin's self-description, or why there is none.
    pub description: Result<PluginDescription, String>,
}

/// One import of a checked component.
#[derive(Debug)]
pub struct ImportCheck {
    /// The import's name, escaped.
    pub name: String,
    /// Why it is refused, or linked only on a grant; `None` when allowed.
    pub problem: Option<String>,
    /// Linked inert when the plugin is granted `inert_wasi`.
    pub inert: bool,
}

/// The secrets of a check: none, as at load time.
struct NoSecrets;

impl SecretSource for NoSecrets {
    fn get(&self, _store_name: &str) -> Result<Option<keycycle_secret::SecretValue>, String> {
        Ok(None)
    }
}

fn check_header(name: &str, path: &Path, wasm: &[u8]) -> Result<(), HostError> {
    if !wasm.starts_with(WASM_MAGIC) {
        let start = if wasm.is_empty() {
            "it is empty".to_owned()
        } else {
            let shown = text::byte_prefix(wasm, 5);
            let more = if wasm.len() > 5 { "…" } else { "" };
            format!("it starts with `{shown}`{more}")
        };
        return Err(HostError::NotWasm {
            plugin: name.to_owned(),
            path: path.to_owned(),
            start,
        });
    }
    if wasm.get(4..8) == Some(CORE_MODULE_VERSION) {
        return Err(HostError::CoreModule {
            plugin: name.to_owned(),
            path: path.to_owned(),
        });
    }
    Ok(())
}

fn new_store(
    engine: &Engine,
    env: Arc<PluginEnv>,
    operation: &str,
    timeout: Duration,
) -> Store<CallState> {
    let mut store = Store::new(engine, CallState::new(env, operation));
    store.limiter(|s| &mut s.limiter);
    let ticks = (timeout.as_millis() / EPOCH_TICK.as_millis()).max(1) as u64;
    store.set_epoch_deadline(ticks);
    store.epoch_deadline_trap();
    store
}

async fn describe(
    engine: &Engine,
    pre: &PluginPre<CallState>,
    env: Arc<PluginEnv>,
) -> Result<PluginDescription, String> {
    let limits = env.limits.clone();
    let mut store = new_store(engine, env, "describe", limits.timeout);
    let call = async {
        let instance = pre.instantiate_async(&mut store).await?;
        instance.call_describe(&mut store).await
    };
    let outcome = tokio::time::timeout(limits.timeout + OUTER_GRACE, call).await;
    let result = match outcome {
        Err(_) => Err(timeout_text(limits.timeout)),
        Ok(Err(trap)) => Err(explain_trap(&trap, store.data(), &limits)),
        Ok(Ok(d)) => Ok(convert_description(d)),
    };
    store.data_mut().flush_logs();
    result
}

fn convert_description(d: types::Description) -> PluginDescription {
    PluginDescription {
        name: d.name,
        version: d.version,
        operations: d
            .operations
            .into_iter()
            .map(|op| OperationSpec {
                name: op.name,
                doc: op.doc,
                inputs: op
                    .inputs
                    .into_iter()
                    .map(|f| FieldSpec {
                        name: f.name,
                        doc: f.doc,
                        required: f.required,
                    })
                    .collect(),
                secret_outputs: op.secret_outputs,
                mutates: op.mutates,
                recover_with: op.recover_with,
                idempotent: op.idempotent,
                if_interrupted: op.if_interrupted,
            })
            .collect(),
        hosts: d.hosts,
        secrets: d.secrets,
        config: d.config,
    }
}

/// The plugin's error, its messages made one escaped, bounded line: they
/// are the plugin's (or its provider's) words, and reach the operator's
/// terminal, the journal and the audit trail from here.
fn plugin_error(e: types::PluginError) -> PluginError {
    let m = |message: &str| text::bounded(message, text::MESSAGE_CHARS);
    match e {
        types::PluginError::Provider(p) => PluginError::Provider {
            status: p.status,
            message: m(&p.message),
        },
        types::PluginError::Denied(message) => PluginError::Denied(m(&message)),
        types::PluginError::InvalidInput(message) => PluginError::InvalidInput(m(&message)),
        types::PluginError::Retryable(r) => PluginError::Retryable {
            delay_ms: r.delay_ms,
            message: m(&r.message),
        },
    }
}

fn timeout_text(timeout: Duration) -> String {
    format!(
        "it ran longer than its time limit of {:?} and was stopped",
        timeout
    )
}

/// An operator-facing reason for a trap, rather than wasmtime's backtrace.
fn explain_trap(
    err: &wasmtime::Error,
    state: &CallState,
    limits: &crate::grants::Limits,
) -> String {
    if let Some(abort) = err.downcast_ref::<HostAbort>() {
        return abort.0.clone();
    }
    if state.limiter.memory_refused {
        return format!(
            "it tried to use more than its memory limit of {} MiB and was stopped",
            limits.memory_bytes >> 20
        );
    }
    match err.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => timeout_text(limits.timeout),
        Some(Trap::StackOverflow) => "it overflowed its stack and was stopped".to_owned(),
        Some(Trap::UnreachableCodeReached) => {
            "it panicked (the WebAssembly `unreachable` instruction was reached)".to_owned()
        }
        Some(trap) => format!("it trapped: {trap}"),
        None => {
            // The cause, not the "error while executing at wasm backtrace"
            // context wasmtime wraps around it.
            let cause = err.root_cause().to_string();
            let cause = text::fold(&cause);
            if let Some(level) = cause.strip_prefix("unexpected discriminant: ")
                && err.downcast_ref::<wasmtime::WasmBacktrace>().is_some()
            {
                // A discriminant is lifted from the guest while it runs only
                // for an enum or variant argument of a host import, and the
                // only one is `log`'s level (a bad discriminant in what the
                // guest returns comes after it has returned, with no wasm
                // frames to show).
                return format!(
                    "invalid log level: it called the host's `log` with level {}, which the \
                     contract's `level` enum (trace, debug, info, warn, error) does not have",
                    text::echo(level)
                );
            }
            if cause.is_empty() {
                "it failed for an unknown reason".to_owned()
            } else {
                format!("it failed: {}", text::bounded(&cause, text::MESSAGE_CHARS))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a call sees of the call before it in a pooled slot is decided
    /// by the engine's configuration: these settings keep it to nothing.
    #[test]
    fn pooled_slots_are_cleared_for_the_next_call() {
        let engine = Engine::new(&engine_config(true)).expect("a pooling engine");
        assert!(engine.get_async_stack_zeroing(), "fiber stacks are zeroed");
        let pool = engine.get_pooling_config().expect("the pooling allocator");
        assert_eq!(
            pool.get_pagemap_scan(),
            Enabled::No,
            "PAGEMAP_SCAN can leave a dirtied page in place (wasmtime#14357)"
        );
    }
}
