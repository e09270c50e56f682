//! The sandboxed Rhai engine: how it is configured, how a runbook and its
//! imports are compiled before anything runs, and how a run is driven and
//! its errors reported.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::EffectError;
use keycycle_contract::Value;
use keycycle_secret::redact;
use rhai::packages::{
    BasicArrayPackage, BasicMapPackage, BasicMathPackage, BitFieldPackage, CorePackage,
    LogicPackage, MoreStringPackage, Package,
};
use rhai::{AST, Dynamic, Engine, OptimizationLevel, Position, Scope};
use sha2::{Digest, Sha256};

use crate::api::{self, Host};
use crate::check::{self, CompileWarning, Findings, PromptSite};
use crate::effects::{Effects, LogLevel};
use crate::error::{ErrorContext, ErrorKind, RunbookError};
use crate::resolver::{self, CompiledModule, ConfinedResolver, ResolverState};
use crate::value::{Terminate, to_value};

/// Variables in scope at once. Not in [`Limits`]: the operation and size
/// limits already bound a runbook's memory; this only stops a runaway
/// `let` generator early.
pub const MAX_VARIABLES: usize = 10_000;
/// Functions a runbook (with its imports) may define.
pub const MAX_FUNCTIONS: usize = 1_000;
/// `import` statements executed in one run (a module imported inside a
/// function counts each time the function runs).
pub const MAX_MODULE_LOADS: usize = 1_000;
/// How many operations pass between two looks at the wall clock.
const CLOCK_EVERY_OPS: u64 = 64;

/// Resource limits for one runbook. Every Rhai limit is off by default;
/// these are all set on the engine.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Rhai operations in one run (roughly: expressions evaluated).
    pub max_operations: u64,
    /// Nested function calls.
    pub max_call_levels: usize,
    /// Nesting of one expression, checked at compile time.
    pub max_expr_depth: usize,
    /// Bytes in one string.
    pub max_string_size: usize,
    /// Items in one array (nested arrays count in full).
    pub max_array_size: usize,
    /// Entries in one object map (nested maps count in full).
    pub max_map_size: usize,
    /// Time from the start of `run` to its end, prompts included.
    pub wall_time: Duration,
    /// Memory the process may grow by while the runbook runs, as
    /// `memory_in_use` measures it. Rhai's size limits count strings, array
    /// items and map entries, but not map keys or the values captured in
    /// closures, so a loop adding 1 MiB keys would pass them all: this
    /// bounds what the runbook can build, however it builds it.
    pub max_memory_bytes: usize,
    /// The process's heap in use, in bytes (the host's allocator counts
    /// it); `None`: memory is not bounded.
    pub memory_in_use: Option<fn() -> usize>,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_operations: 5_000_000,
            max_call_levels: 32,
            max_expr_depth: 64,
            max_string_size: 1 << 20,
            max_array_size: 10_000,
            max_map_size: 10_000,
            wall_time: Duration::from_secs(30 * 60),
            max_memory_bytes: 512 << 20,
            memory_in_use: None,
        }
    }
}

/// The deadline of the run in progress, and the heap in use when it
/// started, read by the progress callback.
#[derive(Default)]
struct Clock {
    deadline: Mutex<Option<Instant>>,
    memory_at_start: Mutex<Option<usize>>,
}

impl Clock {
    fn set(&self, deadline: Option<Instant>) {
        *self.deadline.lock().unwrap_or_else(PoisonError::into_inner) = deadline;
    }

    fn set_memory_base(&self, base: Option<usize>) {
        *self
            .memory_at_start
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = base;
    }

    /// Whether the heap grew by more than `max` since the run started.
    fn over_memory(&self, limits: &Limits) -> bool {
        let (Some(in_use), Some(base)) = (
            limits.memory_in_use,
            *self
                .memory_at_start
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        ) else {
            return false;
        };
        in_use().saturating_sub(base) > limits.max_memory_bytes
    }

    fn passed(&self) -> bool {
        self.deadline
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some_and(|d| Instant::now() >= d)
    }
}

/// A compiled runbook: its source and every file it imports are parsed and
/// checked, and its plugins described; nothing has run yet.
pub struct Runbook {
    path: PathBuf,
    engine: Engine,
    ast: AST,
    params: rhai::Map,
    sha256: [u8; 32],
    limits: Limits,
    clock: Arc<Clock>,
    modules: Arc<ResolverState>,
    errors: ErrorContext,
    warnings: Vec<CompileWarning>,
    prompts: Vec<PromptSite>,
    plugins_used: BTreeSet<String>,
    /// Runs of one runbook share the clock and module cache, so they take
    /// turns.
    running: Mutex<()>,
}

impl std::fmt::Debug for Runbook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runbook")
            .field("path", &self.path)
            .field("sha256", &hex::encode(self.sha256))
            .field("imports", &self.errors.modules.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Runbook {
    /// Compiles the runbook at `path` and, before any side effect, every
    /// file it imports (found at compile time, confined to
    /// `runbooks_root`). Then describes every configured plugin, so their
    /// operations become methods. `params` are the `--set key=value` pairs.
    pub fn compile(
        path: &Path,
        runbooks_root: &Path,
        params: &BTreeMap<String, String>,
        effects: Arc<dyn Effects>,
        limits: Limits,
    ) -> Result<Runbook, RunbookError> {
        let mut errors = ErrorContext {
            main_file: path.to_path_buf(),
            modules: BTreeMap::new(),
            sources: BTreeMap::new(),
            limits: limits.clone(),
        };
        let source = read_source(path)?;
        let root_canonical = runbooks_root.canonicalize().map_err(|err| {
            RunbookError::new(
                ErrorKind::Import,
                format!(
                    "runbooks folder {} cannot be opened: {err}",
                    runbooks_root.display()
                ),
                path,
                Position::NONE,
            )
        })?;

        let clock = Arc::new(Clock::default());
        let mut engine = new_engine(&limits, &effects, &clock);
        let params_map: rhai::Map = params
            .iter()
            .map(|(k, v)| (k.into(), Dynamic::from(v.clone())))
            .collect();
        // At compile time `params` is an ordinary variable: that satisfies
        // strict variables without letting the optimizer fold the map into
        // the AST (Rhai panics on `params.x = ..` over a folded constant).
        // At run time it is a constant.
        let mut scope = Scope::new();
        scope.push("params", params_map.clone());

        let main_name = source_name(path);
        let (mut ast, facts) = parse(&engine, &scope, &source, &limits)
            .map_err(|err| errors.parse_error(&err, path))?;
        ast.set_source(main_name.as_str());
        let mut hasher = Sha256::new();
        hasher.update(source.as_bytes());
        errors.sources.insert(main_name, source);

        // Breadth-first over the import graph; `modules` doubles as the
        // visited set, so shared imports and cycles are compiled once.
        let mut modules: BTreeMap<String, CompiledModule> = BTreeMap::new();
        let mut pending: VecDeque<(PathBuf, Vec<resolver::ImportSite>)> = VecDeque::new();
        pending.push_back((path.to_path_buf(), resolver::imports_of(&ast)));
        while let Some((importer, sites)) = pending.pop_front() {
            for site in sites {
                let Some(import) = site.path else {
                    return Err(RunbookError::new(
                        ErrorKind::Import,
                        "import paths must be string literals, so every import is checked \
                         before the runbook runs",
                        &importer,
                        site.pos,
                    ));
                };
                if modules.contains_key(&import) {
                    continue;
                }
                let located =
                    resolver::locate(runbooks_root, &root_canonical, &import).map_err(|why| {
                        RunbookError::new(ErrorKind::Import, why, &importer, site.pos)
                    })?;
                let text = read_source(&located.canonical).map_err(|mut err| {
                    err.file.clone_from(&located.display);
                    err
                })?;
                let name = source_name(&located.display);
                let (mut module_ast, module_facts) = parse(&engine, &scope, &text, &limits)
                    .map_err(|err| errors.parse_error(&err, &located.display))?;
                module_ast.set_source(name.as_str());
                pending.push_back((located.display.clone(), resolver::imports_of(&module_ast)));
                errors
                    .modules
                    .insert(import.clone(), located.display.clone());
                errors.sources.insert(name, text);
                modules.insert(
                    import,
                    CompiledModule {
                        ast: module_ast,
                        facts: module_facts,
                    },
                );
            }
        }
        for (import, display) in &errors.modules {
            if let Some(text) = errors.sources.get(&source_name(display)) {
                hasher.update(b"\0import ");
                hasher.update(import.as_bytes());
                hasher.update(b"\0");
                hasher.update(text.as_bytes());
            }
        }

        // Describing a plugin loads it; a runbook that names its plugins
        // literally pays only for those.
        let named = check::literal_plugins(
            std::iter::once(&ast).chain(modules.values().map(|m| &m.ast)),
            params,
        );
        let plugins = effects
            .plugin_names()
            .into_iter()
            .map(|name| {
                let described = match &named {
                    Some(named) if !named.contains(&name) => Err(EffectError::Failed(format!(
                        "plugin `{name}` is not loaded: the runbook does not name it"
                    ))),
                    _ => effects.describe(&name),
                };
                (name, described)
            })
            .collect();
        let host = Arc::new(Host {
            effects,
            params: params.clone(),
            plugins,
            methods: check::method_names(
                std::iter::once(&ast).chain(modules.values().map(|m| &m.ast)),
            ),
        });
        api::register(&mut engine, &host);

        // Plugin calls and prompts are checked now that every function is
        // registered and every plugin described, before anything runs.
        let functions = check::non_plugin_functions(&engine);
        let mut findings = Findings::default();
        check::check_file(&ast, &facts, path, &host.plugins, functions, &mut findings);
        for (import, module) in &modules {
            let file = errors.modules.get(import).map_or(path, PathBuf::as_path);
            check::check_file(
                &module.ast,
                &module.facts,
                file,
                &host.plugins,
                functions,
                &mut findings,
            );
        }
        let mut found = findings.errors.into_iter();
        if let Some(mut first) = found.next() {
            let more = found.count();
            if more > 0 {
                let others = if more == 1 {
                    " (1 more call fails this check)".to_owned()
                } else {
                    format!(" ({more} more calls fail this check)")
                };
                first.message.push_str(&others);
            }
            return Err(first);
        }
        for warning in &findings.warnings {
            tracing::warn!("{warning}");
        }

        let module_state = Arc::new(ResolverState::new(modules, params_map.clone()));
        engine.set_module_resolver(ConfinedResolver::new(module_state.clone()));

        tracing::debug!(
            runbook = %path.display(),
            imports = errors.modules.len(),
            plugins = host.plugins.len(),
            "compiled runbook"
        );
        Ok(Runbook {
            path: path.to_path_buf(),
            engine,
            ast,
            params: params_map,
            sha256: hasher.finalize().into(),
            limits,
            clock,
            modules: module_state,
            errors,
            warnings: findings.warnings,
            prompts: findings.prompts,
            plugins_used: findings.plugins,
            running: Mutex::new(()),
        })
    }

    /// The runbook's path, as given to [`Runbook::compile`].
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// SHA-256 of the runbook's source. When it imports modules, each
    /// import (by its path, in sorted order) is hashed in after it, so the
    /// digest changes when any file the run would use changes. For a
    /// runbook without imports it equals `sha256sum` of the file.
    pub fn source_sha256(&self) -> [u8; 32] {
        self.sha256
    }

    /// [`Runbook::source_sha256`] as lowercase hex.
    pub fn source_sha256_hex(&self) -> String {
        hex::encode(self.sha256)
    }

    /// The import paths this runbook uses (directly or through other
    /// imports), with the file each names.
    pub fn imports(&self) -> &BTreeMap<String, PathBuf> {
        &self.errors.modules
    }

    /// What compile-time checking could not check: plugin calls whose
    /// plugin or operation is only known when the run gets there. Each was
    /// also logged (`tracing::warn!`) when the runbook compiled.
    pub fn warnings(&self) -> &[CompileWarning] {
        &self.warnings
    }

    /// Every prompt the runbook (with its imports) may ask, in the order
    /// they appear in the files; a run asks a subset, possibly some twice.
    /// The configured plugins the runbook names with `plugin("...")`, in
    /// the main file or an import: those it cannot run without.
    pub fn plugins_used(&self) -> &BTreeSet<String> {
        &self.plugins_used
    }

    pub fn prompts(&self) -> Vec<PromptSite> {
        self.prompts.clone()
    }

    /// Whether every prompt's input name is known before the run (written
    /// as a literal). When not, an `--input` that matches no
    /// [`Runbook::prompts`] name may still be asked for.
    pub fn prompt_names_known(&self) -> bool {
        self.prompts.iter().all(|p| p.name.is_some())
    }

    /// The limits the runbook runs under.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Runs the runbook and returns its final value (the value of its last
    /// statement, usually an object map) as a [`Value`].
    pub fn run(&self) -> Result<Value, RunbookError> {
        let _turn = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        self.modules.reset();
        self.clock
            .set(Instant::now().checked_add(self.limits.wall_time));
        self.clock
            .set_memory_base(self.limits.memory_in_use.map(|in_use| in_use()));
        let mut scope = params_scope(&self.params);
        // A panic in the engine or in an effect must not take the host down
        // halfway through a rotation: the caller still has a journal to
        // write. Nothing here is left half-updated by an unwind: the scope
        // is dropped and the next run resets the clock and module cache.
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| {
            self.engine
                .eval_ast_with_scope::<Dynamic>(&mut scope, &self.ast)
        }));
        self.clock.set(None);
        self.clock.set_memory_base(None);
        let result = result.map_err(|payload| {
            let what = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "no message".to_owned());
            RunbookError::new(
                ErrorKind::Failed,
                format!("the run panicked: {what}"),
                &self.path,
                Position::NONE,
            )
        })?;
        match result {
            Ok(value) => to_value(&value).map_err(|why| {
                RunbookError::new(
                    ErrorKind::Runtime,
                    format!("the runbook's final value cannot be returned: {why}"),
                    &self.path,
                    Position::NONE,
                )
            }),
            Err(err) => Err(self.errors.eval_error(err)),
        }
    }
}

/// Parsed files of this process, by what decides the AST: the text and
/// the expression depth limit. `keycycle rotate` compiles the same runbook
/// and imports once per credential; parsing them again each time was a
/// sixth of a rotation's CPU. The text is read and hashed every time, so an
/// edited file is parsed again; everything after parsing (plugin
/// descriptions, checks, the engine a run uses) is still per compile.
static PARSED: Mutex<Option<std::collections::HashMap<[u8; 32], Parsed>>> = Mutex::new(None);

/// A parsed file and what the checker needs of it.
type Parsed = (AST, Arc<check::FileFacts>);

/// Distinct files kept parsed; past this the cache starts over, which only
/// costs a parse.
const PARSED_MAX: usize = 256;

/// `text` compiled as [`new_engine`] with `params` in scope compiles it,
/// with its [`check::FileFacts`]. Only successes are kept: an error is
/// reported from a fresh parse.
fn parse(
    engine: &Engine,
    scope: &Scope<'_>,
    text: &str,
    limits: &Limits,
) -> Result<Parsed, rhai::ParseError> {
    let mut hasher = Sha256::new();
    hasher.update(limits.max_expr_depth.to_le_bytes());
    hasher.update(text.as_bytes());
    let key: [u8; 32] = hasher.finalize().into();
    if let Some(parsed) = PARSED
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .as_ref()
        .and_then(|parsed| parsed.get(&key))
    {
        return Ok(parsed.clone());
    }
    let ast = engine.compile_with_scope(scope, text)?;
    let facts = Arc::new(check::FileFacts::of(&ast));
    let mut parsed = PARSED.lock().unwrap_or_else(PoisonError::into_inner);
    let parsed = parsed.get_or_insert_with(Default::default);
    if parsed.len() >= PARSED_MAX {
        parsed.clear();
    }
    parsed.insert(key, (ast.clone(), facts.clone()));
    Ok((ast, facts))
}

fn read_source(path: &Path) -> Result<String, RunbookError> {
    std::fs::read_to_string(path).map_err(|err| {
        RunbookError::new(
            ErrorKind::Compile,
            format!("cannot read the runbook: {err}"),
            path,
            Position::NONE,
        )
    })
}

/// The name a file goes by inside Rhai (`source`), which error translation
/// turns back into the path.
fn source_name(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

fn params_scope(params: &rhai::Map) -> Scope<'static> {
    let mut scope = Scope::new();
    scope.push_constant("params", params.clone());
    scope
}

/// The standard packages runbooks get. They hold only pure functions and
/// no state, so one copy serves every engine of the process; building them
/// for each compile, and freeing them after each run, cost a rotation
/// about as much as parsing it.
fn packages() -> &'static [rhai::Shared<rhai::Module>] {
    static PACKAGES: std::sync::OnceLock<Vec<rhai::Shared<rhai::Module>>> =
        std::sync::OnceLock::new();
    PACKAGES.get_or_init(|| {
        vec![
            CorePackage::new().as_shared_module(),
            LogicPackage::new().as_shared_module(),
            BitFieldPackage::new().as_shared_module(),
            BasicMathPackage::new().as_shared_module(),
            BasicArrayPackage::new().as_shared_module(),
            BasicMapPackage::new().as_shared_module(),
            MoreStringPackage::new().as_shared_module(),
        ]
    })
}

/// A raw engine with only what runbooks need. `Engine::new()` would add a
/// file module resolver that reads any path, stdout printing, and the
/// clock-reading `timestamp()`.
fn new_engine(limits: &Limits, effects: &Arc<dyn Effects>, clock: &Arc<Clock>) -> Engine {
    let mut engine = Engine::new_raw();
    for package in packages() {
        engine.register_global_module(package.clone());
    }

    engine
        .disable_symbol("eval")
        .set_strict_variables(true)
        // `m.tokn` for a missing key raises instead of quietly giving `()`
        // that would flow into the next rotation step; `m.get("k")` and
        // `"k" in m` read optional keys.
        .set_fail_on_invalid_map_property(true)
        // `Full` would call registered functions with constant arguments at
        // compile time, which for `secret("x")` is a side effect.
        .set_optimization_level(OptimizationLevel::Simple)
        .set_max_operations(limits.max_operations)
        .set_max_call_levels(limits.max_call_levels)
        .set_max_expr_depths(limits.max_expr_depth, limits.max_expr_depth)
        .set_max_string_size(limits.max_string_size)
        .set_max_array_size(limits.max_array_size)
        .set_max_map_size(limits.max_map_size)
        .set_max_variables(MAX_VARIABLES)
        .set_max_functions(MAX_FUNCTIONS)
        .set_max_modules(MAX_MODULE_LOADS);

    let clock = clock.clone();
    let progress_limits = limits.clone();
    engine.on_progress(move |ops| {
        if ops % CLOCK_EVERY_OPS != 0 {
            return None;
        }
        if clock.passed() {
            return Some(Dynamic::from(Terminate::WallTime));
        }
        clock
            .over_memory(&progress_limits)
            .then(|| Dynamic::from(Terminate::Memory))
    });
    let fx = effects.clone();
    engine.on_print(move |text| fx.log(LogLevel::Info, &redact(text)));
    let fx = effects.clone();
    engine.on_debug(move |text, _source, _pos| fx.log(LogLevel::Info, &redact(text)));
    engine
}
