//! `import` confined to the runbooks folder: the path rules, the compile-time
//! collection of every imported file, and the resolver that serves those
//! pre-compiled modules at run time.
//!
//! Rhai's own `FileModuleResolver` accepts absolute paths and `..`, and reads
//! files when the `import` statement runs. Here every import is found by
//! walking the AST at compile time, checked, read and compiled before the
//! runbook starts, so a bad import fails before any effect; at run time the
//! resolver only evaluates what was compiled then.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use rhai::{
    AST, ASTNode, Engine, EvalAltResult, Expr, GlobalRuntimeState, Module, ModuleResolver,
    Position, Scope, Shared, Stmt,
};

type SharedModule = Shared<Module>;

/// The extension appended to every import path.
pub const EXTENSION: &str = "rhai";

/// One `import` statement found in a compiled file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ImportSite {
    /// The literal path, or `None` when the path is computed.
    pub path: Option<String>,
    pub pos: Position,
}

/// Every `import` in `ast`, including those inside function bodies.
pub(crate) fn imports_of(ast: &AST) -> Vec<ImportSite> {
    let mut found = Vec::new();
    ast.walk(&mut |path: &[ASTNode]| {
        if let Some(ASTNode::Stmt(Stmt::Import(x, pos))) = path.last() {
            let path = match &x.0 {
                Expr::StringConstant(s, _) => Some(s.to_string()),
                _ => None,
            };
            found.push(ImportSite {
                path,
                pos: if pos.is_none() {
                    x.0.start_position()
                } else {
                    *pos
                },
            });
        }
        true
    });
    found
}

/// Where an import path points, once it passed the rules.
#[derive(Debug, Clone)]
pub(crate) struct Located {
    /// The file as shown in messages: the runbooks folder as given, joined
    /// with the import path and the extension.
    pub display: PathBuf,
    /// The canonical file, known to be inside the canonical root.
    pub canonical: PathBuf,
}

/// Checks `import` against the rules and finds its file. The error names
/// the import path and the rule it broke.
pub(crate) fn locate(
    root_given: &Path,
    root_canonical: &Path,
    import: &str,
) -> Result<Located, String> {
    if import.is_empty() {
        return Err("import path is empty".into());
    }
    let rel = Path::new(import);
    if rel.is_absolute() || import.starts_with('/') || import.starts_with('\\') {
        return Err(format!(
            "cannot import `{import}`: absolute paths are not allowed; \
             write the path relative to the runbooks folder"
        ));
    }
    for component in rel.components() {
        match component {
            Component::Normal(_) | Component::CurDir => {}
            Component::ParentDir => {
                return Err(format!(
                    "cannot import `{import}`: `..` is not allowed; \
                     imports stay inside the runbooks folder"
                ));
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(format!(
                    "cannot import `{import}`: absolute paths are not allowed; \
                     write the path relative to the runbooks folder"
                ));
            }
        }
    }
    let file_name = format!("{import}.{EXTENSION}");
    let display = root_given.join(&file_name);
    let canonical = match root_canonical.join(&file_name).canonicalize() {
        Ok(path) => path,
        Err(err) => {
            let hint = if import.ends_with(".rhai") {
                " (import paths leave out the `.rhai` extension)"
            } else {
                ""
            };
            return Err(format!(
                "cannot import `{import}`: {} ({err}){hint}",
                display.display()
            ));
        }
    };
    if !canonical.starts_with(root_canonical) {
        return Err(format!(
            "cannot import `{import}`: {} resolves to a file outside the runbooks folder \
             (through a symbolic link); imports stay inside the runbooks folder",
            display.display()
        ));
    }
    if !canonical.is_file() {
        return Err(format!(
            "cannot import `{import}`: {} is not a file",
            display.display()
        ));
    }
    Ok(Located { display, canonical })
}

/// A module compiled at compile time, waiting to be evaluated by `import`.
pub(crate) struct CompiledModule {
    pub ast: AST,
    pub facts: std::sync::Arc<crate::check::FileFacts>,
}

/// Serves the modules compiled at compile time. Each is evaluated once per
/// run, when its first `import` runs, so its top-level code runs in the
/// run's order and under the run's limits.
pub(crate) struct ConfinedResolver {
    state: Arc<ResolverState>,
}

pub(crate) struct ResolverState {
    modules: BTreeMap<String, CompiledModule>,
    /// Runbook parameters, in scope for module top-level code as well.
    params: rhai::Map,
    run: Mutex<RunModules>,
}

#[derive(Default)]
struct RunModules {
    loaded: BTreeMap<String, SharedModule>,
    /// Imports being evaluated now, outermost first, to refuse a cycle
    /// instead of recursing until the stack runs out.
    loading: Vec<String>,
}

impl ResolverState {
    pub(crate) fn new(
        modules: BTreeMap<String, CompiledModule>,
        params: rhai::Map,
    ) -> ResolverState {
        ResolverState {
            modules,
            params,
            run: Mutex::new(RunModules::default()),
        }
    }

    /// Forgets the modules evaluated by the previous run.
    pub(crate) fn reset(&self) {
        let mut run = self.run.lock().unwrap_or_else(PoisonError::into_inner);
        run.loaded.clear();
        run.loading.clear();
    }
}

impl ConfinedResolver {
    pub(crate) fn new(state: Arc<ResolverState>) -> ConfinedResolver {
        ConfinedResolver { state }
    }
}

impl ConfinedResolver {
    /// Evaluates the module compiled for `path` (once per run) with `eval`.
    fn load(
        &self,
        path: &str,
        pos: Position,
        eval: impl FnOnce(Scope<'static>, &AST) -> Result<Module, Box<EvalAltResult>>,
    ) -> Result<SharedModule, Box<EvalAltResult>> {
        let Some(compiled) = self.state.modules.get(path) else {
            // Every literal path was compiled; this one was computed at run
            // time, which compile-time checking refuses, or never existed.
            return Err(EvalAltResult::ErrorModuleNotFound(path.to_owned(), pos).into());
        };
        {
            let mut run = self
                .state
                .run
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if let Some(module) = run.loaded.get(path) {
                return Ok(module.clone());
            }
            if run.loading.iter().any(|p| p == path) {
                let mut cycle = run.loading.clone();
                cycle.push(path.to_owned());
                let cycle = cycle.join("` → `");
                return Err(EvalAltResult::ErrorRuntime(
                    crate::api::error_map("runtime", &format!("import cycle: `{cycle}`")),
                    pos,
                )
                .into());
            }
            run.loading.push(path.to_owned());
        }
        let mut scope = Scope::new();
        scope.push_constant("params", self.state.params.clone());
        let result = eval(scope, &compiled.ast);
        let mut run = self
            .state
            .run
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        run.loading.retain(|p| p != path);
        match result {
            Ok(mut module) => {
                module.build_index();
                let module: SharedModule = module.into();
                run.loaded.insert(path.to_owned(), module.clone());
                Ok(module)
            }
            // Limits and `fail` must stay uncatchable, and Rhai lets `catch`
            // take any `ErrorInModule`, so those pass through unwrapped.
            Err(err) if !err.is_catchable() => Err(err),
            Err(err) => Err(EvalAltResult::ErrorInModule(path.to_owned(), err, pos).into()),
        }
    }
}

impl ModuleResolver for ConfinedResolver {
    fn resolve(
        &self,
        engine: &Engine,
        _source: Option<&str>,
        path: &str,
        pos: Position,
    ) -> Result<SharedModule, Box<EvalAltResult>> {
        self.load(path, pos, |scope, ast| {
            Module::eval_ast_as_new(scope, ast, engine)
        })
    }

    fn resolve_raw(
        &self,
        engine: &Engine,
        global: &mut GlobalRuntimeState,
        _scope: &mut Scope,
        path: &str,
        pos: Position,
    ) -> Result<SharedModule, Box<EvalAltResult>> {
        // The caller's global state carries the run's operation count and
        // call depth into the module, so its top-level code is limited too.
        self.load(path, pos, |mut scope, ast| {
            Module::eval_ast_as_new_raw(engine, &mut scope, global, ast)
        })
    }
}
