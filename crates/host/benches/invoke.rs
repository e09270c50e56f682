//! The sandbox's fixed costs, which every plugin call and every run pays:
//! invoking a trivial operation (a fresh `Store` and instance each time),
//! with the pooling allocator and without, and loading a plugin with a warm
//! precompile cache versus compiling it.
//!
//! Beside the invoke figures is wasmtime's floor for the same work: the same
//! component instantiated and called through wasmtime alone (its imports
//! defined as traps, a `Store<()>`, no limiter, timeout or WASI context), on
//! the sandbox's own engine, so what keycycle adds per call can be read off,
//! and on an engine with wasmtime's defaults, for what the engine's
//! configuration buys.
//!
//! `RUST_BACKTRACE` matters: wasmtime builds an error for each fiber it
//! disposes of, and with backtraces on, each such error walks the stack.
//!
//! Needs the plugins built: `cargo xtask plugins`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, SamplingMode, criterion_group, criterion_main};
use keycycle_contract::{CallContext, Value};
use keycycle_host::{Grants, Plugin, Sandbox, SandboxConfig, SecretSource};
use keycycle_secret::SecretValue;
use tokio::runtime::Runtime;
use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, Store};

/// The operation measured: no input, no network, no secrets.
const PING: &str = "ping";

/// No secrets: the measured operations read none.
struct NoSecrets;

impl SecretSource for NoSecrets {
    fn get(&self, _store_name: &str) -> Result<Option<SecretValue>, String> {
        Ok(None)
    }
}

fn wasm(name: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../target/wasm32-wasip2/release")
        .join(format!("{name}.wasm"));
    if !path.is_file() {
        eprintln!(
            "{} is missing: build the plugins first with `cargo xtask plugins`",
            path.display()
        );
        std::process::exit(2);
    }
    path
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime for the benchmarks")
}

fn sandbox(pooling: bool, cache_dir: Option<&Path>) -> Sandbox {
    Sandbox::new(&SandboxConfig {
        cache_dir: cache_dir.map(Path::to_owned),
        cache_key_file: None,
        pooling,
    })
    .expect("the sandbox starts")
}

fn load(rt: &Runtime, sandbox: &Sandbox, name: &str) -> Plugin {
    rt.block_on(sandbox.load(name, &wasm(name), &Grants::default(), Arc::new(NoSecrets)))
        .unwrap_or_else(|e| panic!("loading {name}: {e}"))
}

/// The example plugin, checked to have `ping`.
fn example_with_ping(rt: &Runtime, sandbox: &Sandbox) -> Plugin {
    let example = load(rt, sandbox, "example");
    if example.description().operation(PING).is_none() {
        eprintln!("example.wasm has no `{PING}` operation; rebuild it with `cargo xtask plugins`");
        std::process::exit(2);
    }
    example
}

fn invoke(c: &mut Criterion) {
    let rt = runtime();
    let input = Value::Map(BTreeMap::new());
    let ctx = CallContext {
        run_id: "bench".to_owned(),
        idempotency_key: "bench-1".to_owned(),
    };
    let mut group = c.benchmark_group("invoke");
    for (label, pooling) in [("pooling", true), ("on-demand", false)] {
        let sandbox = sandbox(pooling, None);
        let plugin = example_with_ping(&rt, &sandbox);
        // A failing call would measure the error path; check once first.
        let pong = rt
            .block_on(plugin.invoke(PING, &input, &ctx))
            .unwrap_or_else(|e| panic!("example.{PING}: {e}"));
        assert!(
            pong.get("pong").is_some(),
            "example.{PING} answered {pong:?}"
        );
        group.bench_function(format!("example.{PING}, {label}"), |b| {
            b.iter(|| {
                rt.block_on(plugin.invoke(PING, &input, &ctx))
                    .expect("the call succeeds")
            });
        });
    }
    group.finish();
}

/// Bindings of the same world, generated here so that nothing of
/// keycycle-host is on the floor's path.
mod floor_bindings {
    wasmtime::component::bindgen!({
        world: "plugin",
        path: "../../wit",
        exports: { default: async },
    });
}

/// The floor: a bare `Store<()>`, instantiate and call `ping` (async, as the
/// sandbox calls), on the sandbox's own engine and on an engine with
/// wasmtime's defaults and its default pool.
fn floor(c: &mut Criterion) {
    let rt = runtime();
    let path = wasm("example");
    let ctx = floor_bindings::keycycle::plugin::types::CallContext {
        run_id: "bench".to_owned(),
        idempotency_key: "bench-1".to_owned(),
        config: Vec::new(),
    };
    let mut defaults = Config::new();
    defaults.allocation_strategy(InstanceAllocationStrategy::pooling());
    let engines = [
        ("pooling", sandbox(true, None).engine().clone()),
        ("on-demand", sandbox(false, None).engine().clone()),
        (
            "wasmtime defaults",
            Engine::new(&defaults).expect("an engine with wasmtime's defaults"),
        ),
    ];
    let mut group = c.benchmark_group("floor");
    for (label, engine) in engines {
        let component = Component::from_file(&engine, &path).expect("example.wasm compiles");
        let mut linker = Linker::<()>::new(&engine);
        // `ping` calls no import: a trap would fail the check below.
        linker
            .define_unknown_imports_as_traps(&component)
            .expect("the imports are defined");
        let pre = linker
            .instantiate_pre(&component)
            .and_then(floor_bindings::PluginPre::new)
            .expect("the component has the world's exports");
        let call = || async {
            let mut store = Store::new(&engine, ());
            // The sandbox's engine counts epochs, and a store's deadline
            // starts at zero; a far one keeps the floor free of traps.
            store.set_epoch_deadline(1 << 40);
            let instance = pre.instantiate_async(&mut store).await?;
            instance.call_invoke(&mut store, &ctx, PING, "{}").await
        };
        let pong = rt.block_on(call()).expect("the call succeeds");
        assert!(
            pong.as_ref().is_ok_and(|p| p.contains("pong")),
            "example.{PING} answered {pong:?}"
        );
        group.bench_function(format!("example.{PING}, {label}"), |b| {
            b.iter(|| rt.block_on(call()).expect("the call succeeds"));
        });
    }
    group.finish();
}

fn load_plugin(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("load example");
    // A compile takes long enough that criterion's default ramp of
    // iterations would take minutes.
    group.sampling_mode(SamplingMode::Flat);
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(10));

    let cache = tempfile::tempdir().expect("a temporary cache folder");
    let warm = sandbox(true, Some(cache.path()));
    let first = load(&rt, &warm, "example");
    assert!(
        first.was_compiled(),
        "the first load into an empty cache compiles"
    );
    group.bench_function("warm cache", |b| {
        b.iter(|| {
            let plugin = load(&rt, &warm, "example");
            assert!(!plugin.was_compiled(), "a warm load must not compile");
        });
    });

    let cold = sandbox(true, None);
    group.bench_function("cold (compile)", |b| {
        b.iter(|| {
            let plugin = load(&rt, &cold, "example");
            assert!(plugin.was_compiled());
        });
    });
    group.finish();
}

criterion_group!(benches, invoke, floor, load_plugin);
criterion_main!(benches);
