//! Compile-time checks of plugin calls, and the list of prompts a runbook
//! may ask: both read off the AST of the runbook and of every import before
//! anything runs.
//!
//! Plugin operations are methods registered on `Plugin` for every plugin at
//! once, so Rhai itself only finds a misspelt operation when the call runs,
//! possibly after earlier calls already changed something. Here every call
//! whose plugin is known from the text (`let p = plugin("x")`,
//! `plugin("x").op()`, `invoke(p, "op")`) is checked against that plugin's
//! description. Calls that cannot be tied to one plugin become warnings, not
//! errors: a false alarm would block a correct runbook.

use std::any::TypeId;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use keycycle_contract::PluginDescription;
use rhai::{AST, ASTNode, Engine, Expr, FnCallExpr, Position, Stmt};

use crate::api::{RESERVED_METHODS, input_name};
use crate::effects::{EffectError, PromptKind};
use crate::error::{ErrorKind, RunbookError};
use crate::value::PluginHandle;

/// Something compile-time checking could not check. The run may still go
/// wrong there; the operator sees these before it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompileWarning {
    /// The file, spelled as the runbook path or runbooks folder was given.
    pub file: PathBuf,
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub message: String,
}

impl fmt::Display for CompileWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{line}: {}", self.file.display(), self.message),
            None => write!(f, "{}: {}", self.file.display(), self.message),
        }
    }
}

/// A call to `prompt`, `prompt_secret` or `confirm` in a runbook or one of
/// its imports: a question the run may ask (it may also never reach it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromptSite {
    /// The input name it is answered under (`--input NAME=…`), or `None`
    /// when the runbook computes the name (or the text it is derived from)
    /// at run time.
    pub name: Option<String>,
    pub kind: PromptKind,
    /// The question's text, when it is a string literal.
    pub text: Option<String>,
    pub file: PathBuf,
    pub line: Option<usize>,
}

/// Plugins as described at compile time, or their load error.
pub(crate) type Described = BTreeMap<String, Result<Arc<PluginDescription>, EffectError>>;

/// What the checks found in all files.
#[derive(Debug, Default)]
pub(crate) struct Findings {
    pub errors: Vec<RunbookError>,
    pub warnings: Vec<CompileWarning>,
    pub prompts: Vec<PromptSite>,
    /// Plugin names given as literals to `plugin(...)`: the plugins the
    /// runbook is known to use.
    pub plugins: BTreeSet<String>,
}

/// Functions known to the engine on values other than plugin handles, so a
/// method call by one of these names on an unknown value is most likely not
/// a plugin call. `engine` must have every runbook function registered.
///
/// Every run's engine registers the same functions but for the methods of
/// plugin handles, which this leaves out, so the set is built once per
/// process: walking every registered function cost more than the checks.
pub(crate) fn non_plugin_functions(engine: &Engine) -> &'static BTreeSet<String> {
    static FUNCTIONS: OnceLock<BTreeSet<String>> = OnceLock::new();
    let functions = FUNCTIONS.get_or_init(|| collect_non_plugin_functions(engine));
    debug_assert_eq!(
        functions,
        &collect_non_plugin_functions(engine),
        "a run's engine registered other functions than the first run's"
    );
    functions
}

fn collect_non_plugin_functions(engine: &Engine) -> BTreeSet<String> {
    let plugin = TypeId::of::<PluginHandle>();
    let mut names: BTreeSet<String> = engine
        .collect_fn_metadata(
            None,
            move |info| {
                (info.metadata.param_types.first() != Some(&plugin))
                    .then(|| info.metadata.name.to_string())
            },
            true,
        )
        .into_iter()
        .collect();
    // Keywords Rhai handles itself, callable in method style.
    for keyword in [
        "call",
        "curry",
        "type_of",
        "is_shared",
        "is_def_fn",
        "is_def_var",
        "print",
        "debug",
    ] {
        names.insert(keyword.to_owned());
    }
    names
}

/// What the checker needs of a file besides its statements, worked out
/// once per parsed file: the parse cache keeps it beside the AST, so the
/// runs of a batch do not each walk (and copy) every function body again.
#[derive(Debug)]
pub(crate) struct FileFacts {
    /// The file's own script functions.
    own_functions: BTreeSet<String>,
    /// See [`assigned_names`].
    assigned: BTreeSet<String>,
    /// See [`function_bodies`].
    bodies: Vec<Vec<Stmt>>,
}

impl FileFacts {
    pub(crate) fn of(ast: &AST) -> FileFacts {
        FileFacts {
            own_functions: ast.iter_functions().map(|f| f.name.to_owned()).collect(),
            assigned: assigned_names(ast),
            bodies: function_bodies(ast),
        }
    }
}

/// Checks one compiled file (`ast`, shown as `file`, whose [`FileFacts`]
/// are `facts`), adding what it finds to `findings`. `functions` are the
/// names [`non_plugin_functions`] gives.
pub(crate) fn check_file(
    ast: &AST,
    facts: &FileFacts,
    file: &Path,
    plugins: &Described,
    functions: &BTreeSet<String>,
    findings: &mut Findings,
) {
    let mut checker = Checker {
        plugins,
        functions,
        own_functions: &facts.own_functions,
        file,
        assigned: &facts.assigned,
        scopes: Vec::new(),
        findings,
    };
    checker.block(ast.statements());
    for body in &facts.bodies {
        // A function sees none of the caller's variables: a fresh scope,
        // where its parameters (not declared here) resolve to unknown.
        checker.scopes.clear();
        checker.block(body);
    }
}

/// The plugins the files name with `plugin("...")`, or `None` when one
/// computes the name (or could, through a function pointer): then any
/// configured plugin may be asked for. Only the named ones need to be
/// loaded and described before the run.
pub(crate) fn literal_plugins<'a>(
    asts: impl IntoIterator<Item = &'a AST> + Clone,
    params: &BTreeMap<String, String>,
) -> Option<BTreeSet<String>> {
    // A script's own `param` would shadow the host's, so its result is not
    // known before the run.
    let own_param = asts
        .clone()
        .into_iter()
        .any(|ast| ast.iter_functions().any(|f| f.name == "param"));
    let mut names = BTreeSet::new();
    let mut computed = false;
    for ast in asts {
        ast.walk(&mut |path: &[ASTNode]| {
            // A call is an expression, or a statement of its own.
            let call = match path.last() {
                Some(ASTNode::Expr(Expr::FnCall(call, _) | Expr::MethodCall(call, _)))
                | Some(ASTNode::Stmt(Stmt::FnCall(call, _))) => call,
                _ => return true,
            };
            let method = matches!(path.last(), Some(ASTNode::Expr(Expr::MethodCall(..))));
            match call.name.as_str() {
                "plugin" if !method && call.namespace.is_empty() => match call.args.as_slice() {
                    [Expr::StringConstant(name, _)] => {
                        names.insert(name.to_string());
                    }
                    // `plugin(param("p", "gitlab"))`: a run's parameters
                    // are fixed before it compiles, so the name is known.
                    [Expr::FnCall(inner, _)] if !own_param => match param_value(inner, params) {
                        Some(Some(name)) => {
                            names.insert(name);
                        }
                        // A missing parameter without a default stops the
                        // run at that call: no plugin is named.
                        Some(None) => {}
                        None => computed = true,
                    },
                    _ => computed = true,
                },
                // `x.plugin()`, a namespaced one, and `Fn("plugin")` or any
                // pointer whose target is computed.
                "plugin" | "Fn" => computed = true,
                _ => {}
            }
            true
        });
    }
    (!computed).then_some(names)
}

/// The value of `param("name")` or `param("name", "default")` with literal
/// arguments under `params`: `Some(None)` when the parameter is missing and
/// has no default, `None` when the call is anything else.
fn param_value(call: &FnCallExpr, params: &BTreeMap<String, String>) -> Option<Option<String>> {
    if call.name != "param" || !call.namespace.is_empty() {
        return None;
    }
    match call.args.as_slice() {
        [Expr::StringConstant(name, _)] => Some(params.get(name.as_str()).cloned()),
        [
            Expr::StringConstant(name, _),
            Expr::StringConstant(default, _),
        ] => Some(Some(
            params
                .get(name.as_str())
                .cloned()
                .unwrap_or_else(|| default.to_string()),
        )),
        _ => None,
    }
}

/// Every method name the files call (`x.name(...)`).
pub(crate) fn method_names<'a>(asts: impl IntoIterator<Item = &'a AST>) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for ast in asts {
        ast.walk(&mut |path: &[ASTNode]| {
            if let Some(ASTNode::Expr(Expr::MethodCall(call, _))) = path.last() {
                names.insert(call.name.to_string());
            }
            true
        });
    }
    names
}

/// Every name assigned to anywhere in the file (`x = …`, `x += …`). A
/// variable that is reassigned may hold another plugin by the time a call
/// runs (a loop, a closure), so calls on it are not checked.
fn assigned_names(ast: &AST) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    ast.walk(&mut |path: &[ASTNode]| {
        if let Some(ASTNode::Stmt(Stmt::Assignment(x))) = path.last()
            && let Expr::Variable(v, ..) = &x.1.lhs
        {
            names.insert(v.1.to_string());
        }
        true
    });
    names
}

/// The statements of each script function (closures included), one list per
/// function. Rhai does not export the type of a function's body, but walks
/// it: its top-level statements follow the main statements, function after
/// function, and each lies inside its function's braces.
fn function_bodies(ast: &AST) -> Vec<Vec<Stmt>> {
    // (start, end) of each body; a one-expression closure has no end.
    let spans: Vec<(Position, Position)> = ast
        .iter_fn_def()
        .map(|f| (f.body.start_position(), f.body.end_position()))
        .collect();
    let main = ast.statements().len();
    let mut seen = 0usize;
    let mut bodies: Vec<Vec<Stmt>> = Vec::new();
    let mut current: Option<usize> = None;
    ast.walk(&mut |path: &[ASTNode]| {
        let [ASTNode::Stmt(stmt)] = path else {
            return true;
        };
        seen += 1;
        if seen <= main {
            return true;
        }
        let pos = stmt.position();
        // The innermost body holding the statement (a closure's body lies
        // inside its enclosing function's).
        let owner = spans
            .iter()
            .enumerate()
            .filter(|(_, (start, end))| {
                if end.is_none() {
                    pos == *start
                } else {
                    *start <= pos && pos <= *end
                }
            })
            .max_by_key(|(_, (start, _))| *start)
            .map(|(i, _)| i);
        match (owner, current) {
            (Some(o), Some(c)) if o == c => {
                if let Some(body) = bodies.last_mut() {
                    body.push((*stmt).clone());
                }
            }
            _ => {
                // A new function starts, or the statement cannot be placed:
                // then it is checked on its own, with nothing in scope.
                bodies.push(vec![(*stmt).clone()]);
                current = owner;
            }
        }
        true
    });
    bodies
}

/// What a receiver is known to be.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Recv {
    /// `plugin("x")` for a plugin that was described.
    Plugin(String),
    /// `plugin("x")` for a plugin that failed to load (or is unknown, which
    /// is reported where `plugin` is called): the run fails at `plugin`.
    Unchecked,
    /// `plugin(name)` with a name computed at run time.
    AnyPlugin,
    /// A literal value or a plugin's output: never a plugin handle.
    NotPlugin,
    /// Anything else: a parameter, a map field, a function's result.
    Unknown,
}

struct Checker<'a> {
    plugins: &'a Described,
    functions: &'a BTreeSet<String>,
    /// The file's own script functions. Kept apart from `functions`, which
    /// every file of every run shares: copying that set per file cost more
    /// than checking the file.
    own_functions: &'a BTreeSet<String>,
    file: &'a Path,
    assigned: &'a BTreeSet<String>,
    /// Innermost last; each holds the `let`s and `const`s of one block.
    scopes: Vec<Vec<(String, Recv)>>,
    findings: &'a mut Findings,
}

impl Checker<'_> {
    /// Whether `name` is a function other than a plugin operation: the
    /// engine's, or one the file defines.
    fn is_function(&self, name: &str) -> bool {
        self.functions.contains(name) || self.own_functions.contains(name)
    }

    fn block(&mut self, stmts: &[Stmt]) {
        self.scopes.push(Vec::new());
        for stmt in stmts {
            self.stmt(stmt);
        }
        self.scopes.pop();
    }

    fn declare(&mut self, name: &str, recv: Recv) {
        if self.scopes.is_empty() {
            self.scopes.push(Vec::new());
        }
        if let Some(scope) = self.scopes.last_mut() {
            scope.push((name.to_owned(), recv));
        }
    }

    fn lookup(&self, name: &str) -> Recv {
        if self.assigned.contains(name) {
            return Recv::Unknown;
        }
        self.scopes
            .iter()
            .rev()
            .flat_map(|scope| scope.iter().rev())
            .find(|(n, _)| n == name)
            .map_or(Recv::Unknown, |(_, recv)| recv.clone())
    }

    fn stmt(&mut self, stmt: &Stmt) {
        match stmt {
            Stmt::If(x, _) => {
                self.expr(&x.expr);
                self.block(x.body.statements());
                self.block(x.branch.statements());
            }
            Stmt::Switch(x, _) => {
                self.expr(&x.0);
                for case in &x.1.expressions {
                    self.expr(&case.lhs);
                    self.expr(&case.rhs);
                }
            }
            Stmt::While(x, _) | Stmt::Do(x, ..) => {
                self.expr(&x.expr);
                self.block(x.body.statements());
            }
            Stmt::For(x, _) => {
                self.expr(&x.2.expr);
                self.scopes.push(Vec::new());
                self.declare(&x.0.name, Recv::Unknown);
                if let Some(counter) = &x.1 {
                    self.declare(&counter.name, Recv::NotPlugin);
                }
                self.block(x.2.body.statements());
                self.scopes.pop();
            }
            Stmt::Var(x, ..) => {
                self.expr(&x.1);
                let recv = self.classify(&x.1);
                self.declare(&x.0.name, recv);
            }
            Stmt::Assignment(x) => {
                self.expr(&x.1.lhs);
                self.expr(&x.1.rhs);
            }
            Stmt::FnCall(call, pos) => self.call(call, *pos),
            Stmt::Block(block) => self.block(block.statements()),
            Stmt::TryCatch(x, _) => {
                self.block(x.body.statements());
                self.scopes.push(Vec::new());
                if let Expr::Variable(v, ..) = &x.expr {
                    self.declare(&v.1, Recv::NotPlugin);
                }
                self.block(x.branch.statements());
                self.scopes.pop();
            }
            Stmt::Expr(expr) => self.expr(expr),
            Stmt::BreakLoop(Some(expr), ..) | Stmt::Return(Some(expr), ..) => self.expr(expr),
            Stmt::Import(x, _) => self.expr(&x.0),
            _ => {}
        }
    }

    fn expr(&mut self, expr: &Expr) {
        match expr {
            Expr::FnCall(call, pos) => self.call(call, *pos),
            Expr::MethodCall(call, pos) => self.method(&Recv::Unknown, None, call, *pos),
            Expr::Dot(x, ..) => {
                self.expr(&x.lhs);
                let recv = self.classify(&x.lhs);
                self.chain(&recv, &x.lhs, &x.rhs);
            }
            Expr::Index(x, ..) => {
                self.expr(&x.lhs);
                self.expr(&x.rhs);
            }
            Expr::Stmt(block) => self.block(block.statements()),
            Expr::InterpolatedString(items, _) | Expr::Array(items, _) => {
                for item in items {
                    self.expr(item);
                }
            }
            Expr::Map(x, _) => {
                for (_, value) in &x.0 {
                    self.expr(value);
                }
            }
            Expr::And(items, _) | Expr::Or(items, _) | Expr::Coalesce(items, _) => {
                for item in items.iter() {
                    self.expr(item);
                }
            }
            _ => {}
        }
    }

    /// The rest of a dot chain, `rhs`, applied to a receiver `recv` (whose
    /// expression is `receiver`).
    fn chain(&mut self, recv: &Recv, receiver: &Expr, rhs: &Expr) {
        match rhs {
            Expr::MethodCall(call, pos) => self.method(recv, Some(receiver), call, *pos),
            Expr::Dot(x, ..) => {
                self.chain(recv, receiver, &x.lhs);
                // What a segment gives is never a plugin handle when it is a
                // plugin's output; otherwise it is not known.
                let next = match recv {
                    Recv::Plugin(_) | Recv::AnyPlugin => Recv::NotPlugin,
                    _ => Recv::Unknown,
                };
                self.chain(&next, &x.lhs, &x.rhs);
            }
            Expr::Index(x, ..) => {
                self.chain(recv, receiver, &x.lhs);
                self.chain(&Recv::Unknown, &x.lhs, &x.rhs);
            }
            Expr::Property(..) => {}
            other => self.expr(other),
        }
    }

    /// What the value of `expr` is known to be.
    fn classify(&self, expr: &Expr) -> Recv {
        match expr {
            Expr::Variable(v, ..) if v.2.is_empty() => self.lookup(&v.1),
            Expr::FnCall(call, _) if call.namespace.is_empty() && call.name == "plugin" => {
                match call.args.as_slice() {
                    [Expr::StringConstant(name, _)] => match self.plugins.get(name.as_str()) {
                        Some(Ok(_)) => Recv::Plugin(name.to_string()),
                        _ => Recv::Unchecked,
                    },
                    [_] => Recv::AnyPlugin,
                    _ => Recv::Unknown,
                }
            }
            Expr::StringConstant(..)
            | Expr::InterpolatedString(..)
            | Expr::Array(..)
            | Expr::Map(..)
            | Expr::IntegerConstant(..)
            | Expr::FloatConstant(..)
            | Expr::BoolConstant(..)
            | Expr::CharConstant(..)
            | Expr::Unit(..) => Recv::NotPlugin,
            _ => Recv::Unknown,
        }
    }

    /// A call in function style: `name(args…)`.
    fn call(&mut self, call: &FnCallExpr, pos: Position) {
        for arg in &call.args {
            self.expr(arg);
        }
        if !call.namespace.is_empty() {
            return;
        }
        let args: Vec<&Expr> = call.args.iter().collect();
        self.builtin(&call.name, &args, pos);
        // `op(p, …)` is the same call as `p.op(…)`; only a name that is no
        // other function can mean an operation here. `invoke` and `defer`
        // take a plugin first whatever it is.
        if let Some((first, rest)) = args.split_first() {
            let recv = self.classify(first);
            let by_name = matches!(call.name.as_str(), "invoke" | "defer");
            if by_name || (matches!(recv, Recv::Plugin(_)) && !self.is_function(call.name.as_str()))
            {
                let call = Call {
                    receiver: first,
                    method: &call.name,
                    args: rest,
                    pos,
                };
                self.plugin_call(&recv, &call);
            }
        }
    }

    /// A call in method style: `receiver.name(args…)`.
    fn method(&mut self, recv: &Recv, receiver: Option<&Expr>, call: &FnCallExpr, pos: Position) {
        for arg in &call.args {
            self.expr(arg);
        }
        let rest: Vec<&Expr> = call.args.iter().collect();
        if let Some(receiver) = receiver {
            let mut all = vec![receiver];
            all.extend(rest.iter().copied());
            self.builtin(&call.name, &all, pos);
        }
        let call = Call {
            receiver: receiver.unwrap_or(&Expr::Unit(Position::NONE)),
            method: &call.name,
            args: &rest,
            pos,
        };
        self.plugin_call(recv, &call);
    }

    /// `plugin("…")` and the prompts, in whichever style they are called.
    fn builtin(&mut self, name: &str, args: &[&Expr], pos: Position) {
        let kind = match name {
            "plugin" => {
                if let [Expr::StringConstant(plugin, at)] = args {
                    self.known_plugin(plugin, *at);
                }
                return;
            }
            "prompt" => PromptKind::Text,
            "prompt_secret" => PromptKind::Secret,
            "confirm" => PromptKind::Confirm,
            _ => return,
        };
        let literal = |e: &Expr| match e {
            Expr::StringConstant(s, _) => Some(s.to_string()),
            _ => None,
        };
        let (name, text) = match args {
            [text] => {
                let text = literal(text);
                (text.as_deref().map(input_name), text)
            }
            [name, text] => (literal(name), literal(text)),
            _ => return,
        };
        self.findings.prompts.push(PromptSite {
            name,
            kind,
            text,
            file: self.file.to_path_buf(),
            line: pos.line(),
        });
    }

    fn known_plugin(&mut self, name: &str, pos: Position) {
        if self.plugins.contains_key(name) {
            self.findings.plugins.insert(name.to_owned());
            return;
        }
        let known: Vec<&str> = self.plugins.keys().map(String::as_str).collect();
        let message = if known.is_empty() {
            format!(
                "unknown plugin `{name}`: no plugins are configured; \
                 add it to the configuration's plugins"
            )
        } else {
            format!(
                "unknown plugin `{name}`{}; configured plugins: {}",
                did_you_mean(name, known.iter().copied()),
                known.join(", ")
            )
        };
        self.error(message, pos);
    }

    /// Checks one call on a receiver, when it may be a plugin call.
    fn plugin_call(&mut self, recv: &Recv, call: &Call<'_>) {
        let by_name = matches!(call.method, "invoke" | "defer");
        if !by_name && RESERVED_METHODS.contains(&call.method) {
            return;
        }
        match recv {
            Recv::NotPlugin | Recv::Unchecked => {}
            Recv::Plugin(plugin) => {
                // A function for any value (`type_of`, a script function
                // using `this`) is not an operation, unless some plugin has
                // an operation by that name, which takes precedence.
                if !by_name && self.is_function(call.method) && !self.is_operation(call.method) {
                    return;
                }
                if !by_name {
                    self.operation(plugin, call.method, call.pos);
                    return;
                }
                match call.args.first() {
                    Some(Expr::StringConstant(op, at)) => self.operation(plugin, op, *at),
                    Some(_) => self.warn(
                        format!(
                            "cannot check `{}` before the run: the operation name is computed \
                             when it runs; write it as a string literal to have it checked",
                            call.shown()
                        ),
                        call.pos,
                    ),
                    None => {}
                }
            }
            Recv::AnyPlugin => {
                if !self.any_plugin_has_op(call, by_name) {
                    self.warn(
                        format!(
                            "cannot check `{}` before the run: its plugin name is computed when \
                             it runs; write `plugin(\"name\")` with a literal name to have it \
                             checked{}",
                            call.shown(),
                            self.nowhere_op(call, by_name)
                        ),
                        call.pos,
                    );
                }
            }
            Recv::Unknown => {
                // Most method calls are on strings, maps and arrays; only a
                // name no other function has can only be a plugin call. A
                // call whose plugin is not known (a helper's parameter, say)
                // is quiet when some configured plugin has the operation:
                // a warning on every run of a shared library teaches
                // operators to ignore warnings.
                if (by_name || !self.is_function(call.method))
                    && !self.any_plugin_has_op(call, by_name)
                {
                    let who = call.receiver_name();
                    self.warn(
                        format!(
                            "cannot check `{}` before the run: the plugin of `{who}` is not \
                             known until it runs{}",
                            call.shown(),
                            self.nowhere_op(call, by_name)
                        ),
                        call.pos,
                    );
                }
            }
        }
    }

    /// The operation a call names: its method, or for `invoke`/`defer` its
    /// first argument when that is a string literal.
    fn named_op<'c>(call: &'c Call<'_>, by_name: bool) -> Option<&'c str> {
        if !by_name {
            return Some(call.method);
        }
        match call.args.first() {
            Some(Expr::StringConstant(op, _)) => Some(op.as_str()),
            _ => None,
        }
    }

    fn any_plugin_has_op(&self, call: &Call<'_>, by_name: bool) -> bool {
        Self::named_op(call, by_name).is_some_and(|op| self.any_plugin_has(op))
    }

    fn nowhere_op(&self, call: &Call<'_>, by_name: bool) -> String {
        Self::named_op(call, by_name).map_or_else(String::new, |op| self.nowhere(op, false))
    }

    /// Whether a described plugin has an operation named `name`. A plugin
    /// that could not be described cannot be called either: `plugin()`
    /// raises its load error first.
    fn any_plugin_has(&self, name: &str) -> bool {
        self.is_operation(name)
    }

    /// The end of a warning for a call no described plugin can answer.
    fn nowhere(&self, name: &str, by_name: bool) -> String {
        if by_name || !self.plugins.values().any(Result::is_ok) {
            return String::new();
        }
        let ops = self
            .plugins
            .values()
            .filter_map(|d| d.as_ref().ok())
            .flat_map(|d| d.operations.iter().map(|o| o.name.as_str()));
        format!(
            ", and no configured plugin has an operation `{name}`{}",
            did_you_mean(name, ops)
        )
    }

    /// Whether any described plugin has an operation named `name`.
    fn is_operation(&self, name: &str) -> bool {
        self.plugins
            .values()
            .filter_map(|d| d.as_ref().ok())
            .any(|d| d.operation(name).is_some())
    }

    /// Checks that `plugin` has `operation`.
    fn operation(&mut self, plugin: &str, operation: &str, pos: Position) {
        let Some(Ok(description)) = self.plugins.get(plugin) else {
            return;
        };
        if description.operation(operation).is_some() {
            return;
        }
        let ops: Vec<&str> = description
            .operations
            .iter()
            .map(|o| o.name.as_str())
            .collect();
        let message = if ops.is_empty() {
            format!("plugin `{plugin}` has no operation `{operation}`; it has no operations")
        } else {
            format!(
                "plugin `{plugin}` has no operation `{operation}`{}; it has: {} \
                 (`keycycle plugins inspect {plugin}` describes them)",
                did_you_mean(operation, ops.iter().copied()),
                ops.join(", ")
            )
        };
        self.error(message, pos);
    }

    fn error(&mut self, message: String, pos: Position) {
        self.findings.errors.push(RunbookError::new(
            ErrorKind::Compile,
            message,
            self.file,
            pos,
        ));
    }

    fn warn(&mut self, message: String, pos: Position) {
        let warning = CompileWarning {
            file: self.file.to_path_buf(),
            line: pos.line(),
            column: pos.position(),
            message,
        };
        if !self.findings.warnings.contains(&warning) {
            self.findings.warnings.push(warning);
        }
    }
}

/// One call that may be a plugin call, for checks and messages.
struct Call<'a> {
    receiver: &'a Expr,
    method: &'a str,
    /// The arguments after the receiver.
    args: &'a [&'a Expr],
    pos: Position,
}

impl Call<'_> {
    fn receiver_name(&self) -> String {
        match self.receiver {
            Expr::Variable(v, ..) => v.1.to_string(),
            Expr::ThisPtr(_) => "this".to_owned(),
            Expr::Property(p, _) => p.2.to_string(),
            _ => "the value".to_owned(),
        }
    }

    /// `h.op(...)` as the author wrote it, near enough.
    fn shown(&self) -> String {
        let receiver = match self.receiver {
            Expr::Variable(..) | Expr::ThisPtr(_) | Expr::Property(..) => self.receiver_name(),
            _ => "…".to_owned(),
        };
        match self.args.first() {
            Some(Expr::StringConstant(op, _)) if matches!(self.method, "invoke" | "defer") => {
                format!("{receiver}.{}(\"{op}\", ...)", self.method)
            }
            _ => format!("{receiver}.{}(...)", self.method),
        }
    }
}

/// `" (did you mean `x`?)"` for the closest of `candidates`, when one is
/// close enough to be a likely typo; otherwise empty.
pub(crate) fn did_you_mean<'a>(
    wrong: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> String {
    // Up to a third of the name may be wrong: catches dropped, doubled and
    // swapped letters without suggesting unrelated short names.
    let limit = (wrong.chars().count() / 3).max(1);
    candidates
        .into_iter()
        .map(|c| (strsim::osa_distance(wrong, c), c))
        .filter(|(d, _)| *d <= limit)
        .min()
        .map_or_else(String::new, |(_, c)| format!(" (did you mean `{c}`?)"))
}
