//! Engine tests against a fake [`Effects`] that records every call.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use keycycle_contract::{OperationSpec, PluginDescription, PluginError, Value};
use keycycle_secret::SecretValue;

use crate::{
    Answer, EffectError, Effects, ErrorKind, Limits, LogLevel, Prompt, PromptKind, Runbook,
    RunbookError, input_name,
};

const CANARY: &str = "canary-secret-7f3a9c1e5b";
const NOW: i64 = 1_700_000_000; // 2023-11-14T22:13:20Z

type InvokeFn = dyn Fn(&str, &str, &Value) -> Result<Value, EffectError> + Send + Sync;

/// Records every call; answers from fixed tables.
struct Fake {
    plugins: BTreeMap<String, Result<Arc<PluginDescription>, EffectError>>,
    answers: BTreeMap<String, Answer>,
    invoke: Box<InvokeFn>,
    /// Side effects, in order: everything but `plugin_names`/`describe`.
    calls: Mutex<Vec<String>>,
    describes: Mutex<usize>,
    logs: Mutex<Vec<(LogLevel, String)>>,
    inputs: Mutex<Vec<Value>>,
    prompts: Mutex<Vec<Prompt>>,
    stored: Mutex<Vec<(String, SecretValue)>>,
}

fn description(name: &str, ops: &[&str]) -> Arc<PluginDescription> {
    Arc::new(PluginDescription {
        name: name.into(),
        version: "1.0.0".into(),
        operations: ops
            .iter()
            .map(|op| OperationSpec {
                name: (*op).into(),
                doc: String::new(),
                inputs: vec![],
                secret_outputs: vec![],
                mutates: false,
                recover_with: None,
                idempotent: false,
                if_interrupted: None,
            })
            .collect(),
        hosts: vec![],
        secrets: vec![],
        config: vec![],
    })
}

impl Fake {
    fn new() -> Fake {
        let mut plugins = BTreeMap::new();
        plugins.insert(
            "gl".to_owned(),
            Ok(description("gl", &["whoami", "rotate", "revoke", "echo"])),
        );
        plugins.insert("gh".to_owned(), Ok(description("gh", &["list"])));
        plugins.insert(
            "evil".to_owned(),
            Err(EffectError::Denied(
                "plugin `evil` imports wasi:sockets, which is not granted".into(),
            )),
        );
        Fake {
            plugins,
            answers: BTreeMap::new(),
            invoke: Box::new(default_invoke),
            calls: Mutex::default(),
            describes: Mutex::default(),
            logs: Mutex::default(),
            inputs: Mutex::default(),
            prompts: Mutex::default(),
            stored: Mutex::default(),
        }
    }

    fn with_invoke(
        mut self,
        f: impl Fn(&str, &str, &Value) -> Result<Value, EffectError> + Send + Sync + 'static,
    ) -> Fake {
        self.invoke = Box::new(f);
        self
    }

    fn answer(mut self, name: &str, answer: Answer) -> Fake {
        self.answers.insert(name.into(), answer);
        self
    }

    fn record(&self, call: String) {
        self.calls.lock().unwrap().push(call);
    }

    fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }

    fn log_text(&self) -> String {
        self.logs
            .lock()
            .unwrap()
            .iter()
            .map(|(_, line)| format!("{line}\n"))
            .collect()
    }
}

fn default_invoke(plugin: &str, op: &str, input: &Value) -> Result<Value, EffectError> {
    let mut out = BTreeMap::new();
    match (plugin, op) {
        ("gl", "whoami") => {
            out.insert("username".into(), Value::String("ada".into()));
        }
        ("gl", "rotate") => {
            out.insert("id".into(), input.get("id").cloned().unwrap_or(Value::Null));
            out.insert("token".into(), Value::Secret(SecretValue::new(CANARY)));
        }
        ("gl", "revoke") => {
            return Err(EffectError::Plugin {
                plugin: plugin.into(),
                operation: op.into(),
                error: PluginError::Provider {
                    status: 404,
                    message: "404 Not Found".into(),
                },
            });
        }
        ("gl", "echo") => return Ok(input.clone()),
        _ => return Err(EffectError::Failed(format!("fake has no {plugin}.{op}"))),
    }
    Ok(Value::Map(out))
}

impl Effects for Fake {
    fn plugin_names(&self) -> Vec<String> {
        self.plugins.keys().cloned().collect()
    }

    fn describe(&self, plugin: &str) -> Result<Arc<PluginDescription>, EffectError> {
        *self.describes.lock().unwrap() += 1;
        self.plugins
            .get(plugin)
            .cloned()
            .unwrap_or_else(|| Err(EffectError::Failed(format!("no plugin {plugin}"))))
    }

    fn invoke(&self, plugin: &str, operation: &str, input: Value) -> Result<Value, EffectError> {
        self.record(format!("invoke {plugin}.{operation} {input:?}"));
        self.inputs.lock().unwrap().push(input.clone());
        (self.invoke)(plugin, operation, &input)
    }

    fn secret(&self, name: &str) -> Result<SecretValue, EffectError> {
        self.record(format!("secret {name}"));
        match name {
            "db" => Ok(SecretValue::new(CANARY)),
            _ => Err(EffectError::Denied(format!(
                "secret `{name}` is not granted to this runbook"
            ))),
        }
    }

    fn store_secret(&self, name: &str, value: &SecretValue) -> Result<(), EffectError> {
        self.record(format!("store_secret {name}"));
        self.stored
            .lock()
            .unwrap()
            .push((name.to_owned(), value.clone()));
        Ok(())
    }

    fn prompt(&self, prompt: &Prompt) -> Result<Answer, EffectError> {
        self.record(format!("prompt {}", prompt.name));
        self.prompts.lock().unwrap().push(prompt.clone());
        self.answers
            .get(&prompt.name)
            .cloned()
            .ok_or_else(|| EffectError::MissingInput {
                name: prompt.name.clone(),
                hint: format!("pass --input {}=VALUE", prompt.name),
            })
    }

    fn now(&self) -> Result<i64, EffectError> {
        self.record("now".into());
        Ok(NOW)
    }

    fn random_secret(&self, bytes: usize) -> Result<SecretValue, EffectError> {
        self.record(format!("random_secret {bytes}"));
        Ok(SecretValue::new("ab".repeat(bytes)))
    }

    fn log(&self, level: LogLevel, message: &str) {
        self.record(format!("log {message}"));
        self.logs.lock().unwrap().push((level, message.to_owned()));
    }
}

/// A runbooks folder in a temporary directory.
struct Dir {
    tmp: tempfile::TempDir,
}

impl Dir {
    fn new() -> Dir {
        Dir {
            tmp: tempfile::tempdir().unwrap(),
        }
    }

    fn root(&self) -> PathBuf {
        self.tmp.path().join("runbooks")
    }

    fn write(&self, rel: &str, text: &str) -> PathBuf {
        let path = self.root().join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, text).unwrap();
        path
    }
}

fn small_limits() -> Limits {
    Limits {
        max_operations: 200_000,
        ..Limits::default()
    }
}

fn compile_with(
    dir: &Dir,
    file: &str,
    fake: &Arc<Fake>,
    params: &[(&str, &str)],
    limits: Limits,
) -> Result<Runbook, RunbookError> {
    let params = params
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    Runbook::compile(
        &dir.root().join(file),
        &dir.root(),
        &params,
        fake.clone(),
        limits,
    )
}

/// Compiles and runs `source` as `main.rhai` in a fresh folder.
fn run_with(
    fake: Fake,
    source: &str,
    params: &[(&str, &str)],
) -> (Result<Value, RunbookError>, Arc<Fake>) {
    let dir = Dir::new();
    dir.write("main.rhai", source);
    let fake = Arc::new(fake);
    let result =
        compile_with(&dir, "main.rhai", &fake, params, small_limits()).and_then(|rb| rb.run());
    (result, fake)
}

fn run(source: &str) -> (Result<Value, RunbookError>, Arc<Fake>) {
    run_with(Fake::new(), source, &[])
}

fn run_err(source: &str) -> (RunbookError, Arc<Fake>) {
    let (result, fake) = run(source);
    match result {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(err) => (err, fake),
    }
}

fn ok(source: &str) -> Value {
    match run(source).0 {
        Ok(v) => v,
        Err(err) => panic!("{err}"),
    }
}

fn s(v: &str) -> Value {
    Value::String(v.into())
}

// ---- compile time -------------------------------------------------------

#[test]
fn compile_error_has_line_and_column_and_calls_nothing() {
    let dir = Dir::new();
    dir.write("main.rhai", "info(\"start\");\nlet x = ;\n");
    let fake = Arc::new(Fake::new());
    let err = compile_with(&dir, "main.rhai", &fake, &[], small_limits()).unwrap_err();
    assert_eq!(err.kind, ErrorKind::Compile);
    assert_eq!(err.line, Some(2));
    assert!(err.column.is_some());
    assert_eq!(err.file, dir.root().join("main.rhai"));
    let shown = err.to_string();
    assert!(
        shown.starts_with(&format!("{}:2:", dir.root().join("main.rhai").display())),
        "{shown}"
    );
    assert!(fake.calls().is_empty(), "{:?}", fake.calls());
    assert_eq!(
        *fake.describes.lock().unwrap(),
        0,
        "no plugin loaded for a broken runbook"
    );
}

#[test]
fn compile_describes_the_plugins_it_names_but_runs_nothing() {
    let dir = Dir::new();
    dir.write("main.rhai", "info(\"hello\");\nplugin(\"gl\").whoami();\n");
    let fake = Arc::new(Fake::new());
    let rb = compile_with(&dir, "main.rhai", &fake, &[], small_limits()).unwrap();
    // Only `gl`: describing loads a plugin, and the others are not named.
    assert_eq!(*fake.describes.lock().unwrap(), 1);
    assert!(fake.calls().is_empty());
    rb.run().unwrap();
    assert_eq!(fake.calls()[0], "log hello");
    assert!(fake.calls()[1].starts_with("invoke gl.whoami"));
}

#[test]
fn eval_is_disabled() {
    let (err, fake) = run_err("let x = 1;\neval(\"x + 1\")");
    assert_eq!(err.kind, ErrorKind::Compile);
    assert_eq!(err.line, Some(2));
    assert!(err.message.contains("eval"), "{err}");
    assert!(fake.calls().is_empty());
}

#[test]
fn eval_is_not_reachable_through_a_function_pointer() {
    let (result, _) = run("let f = Fn(\"eval\");\nf.call(\"40 + 2\")");
    assert!(result.is_err(), "{result:?}");
}

#[test]
fn strict_variables_reject_undeclared_names() {
    let (err, fake) = run_err("info(\"a\");\nlet total = count + 1;\n");
    assert_eq!(err.kind, ErrorKind::Compile);
    assert_eq!(err.line, Some(2));
    assert!(err.message.contains("count"), "{err}");
    assert!(fake.calls().is_empty());
}

#[test]
fn params_inside_functions_is_explained() {
    let (err, _) = run_with(
        Fake::new(),
        "fn region() {\n  params.region\n}\nregion()",
        &[("region", "eu")],
    );
    let err = err.unwrap_err();
    assert_eq!(err.line, Some(2));
    assert!(err.message.contains("param(\"name\")"), "{err}");
}

#[test]
fn expression_depth_is_a_limit_at_compile_time() {
    let deep = format!("{}1{}", "(".repeat(200), ")".repeat(200));
    let (err, fake) = run_err(&format!("info(\"x\");\nlet v = {deep};"));
    assert_eq!(err.kind, ErrorKind::Limit);
    assert!(err.message.contains("64"), "{err}");
    assert!(fake.calls().is_empty());
}

// ---- imports ------------------------------------------------------------

#[test]
fn import_with_parent_dir_is_refused_at_compile_time() {
    let (err, fake) = run_err("info(\"x\");\nimport \"../../etc/passwd\" as p;\n");
    assert_eq!(err.kind, ErrorKind::Import);
    assert_eq!(err.line, Some(2));
    assert!(err.message.contains("../../etc/passwd"), "{err}");
    assert!(err.message.contains("`..` is not allowed"), "{err}");
    assert!(fake.calls().is_empty());
}

#[test]
fn import_of_absolute_path_is_refused() {
    let (err, fake) = run_err("import \"/etc/passwd\" as p;\n");
    assert_eq!(err.kind, ErrorKind::Import);
    assert_eq!(err.line, Some(1));
    assert!(
        err.message.contains("absolute paths are not allowed"),
        "{err}"
    );
    assert!(fake.calls().is_empty());
}

#[test]
fn import_in_a_function_body_is_checked_too() {
    let (err, _) = run_err("fn f() {\n  import \"../x\" as x;\n}\n1");
    assert_eq!(err.kind, ErrorKind::Import);
    assert_eq!(err.line, Some(2));
}

#[test]
fn computed_import_path_is_refused() {
    let (err, _) = run_err("let p = \"lib\";\nimport p as x;\n");
    assert_eq!(err.kind, ErrorKind::Import);
    assert_eq!(err.line, Some(2));
    assert!(err.message.contains("string literals"), "{err}");
}

#[cfg(unix)]
#[test]
fn import_through_a_symlink_out_of_the_root_is_refused() {
    let dir = Dir::new();
    let outside = dir.tmp.path().join("outside.rhai");
    std::fs::write(&outside, "fn stolen() { 1 }").unwrap();
    std::fs::create_dir_all(dir.root()).unwrap();
    std::os::unix::fs::symlink(&outside, dir.root().join("evil.rhai")).unwrap();
    dir.write("main.rhai", "import \"evil\" as e;\ne::stolen()");
    let fake = Arc::new(Fake::new());
    let err = compile_with(&dir, "main.rhai", &fake, &[], small_limits()).unwrap_err();
    assert_eq!(err.kind, ErrorKind::Import);
    assert_eq!(err.line, Some(1));
    assert!(err.message.contains("outside the runbooks folder"), "{err}");
}

#[test]
fn missing_import_names_the_file() {
    let (err, _) = run_err("import \"lib/nope.rhai\" as n;");
    assert_eq!(err.kind, ErrorKind::Import);
    assert!(err.message.contains("lib/nope.rhai.rhai"), "{err}");
    assert!(err.message.contains("leave out the `.rhai`"), "{err}");
}

#[test]
fn legitimate_imports_work_and_nest() {
    let dir = Dir::new();
    dir.write("lib/math.rhai", "fn double(x) { x * 2 }\n");
    dir.write(
        "lib/util.rhai",
        "import \"lib/math\" as m;\nexport const GREETING = \"hi\";\nfn quad(x) { m::double(m::double(x)) }\n",
    );
    dir.write(
        "main.rhai",
        "import \"lib/util\" as u;\n#{ v: u::quad(5), g: u::GREETING }",
    );
    let fake = Arc::new(Fake::new());
    let rb = compile_with(&dir, "main.rhai", &fake, &[], small_limits()).unwrap();
    assert_eq!(
        rb.imports().keys().collect::<Vec<_>>(),
        vec!["lib/math", "lib/util"]
    );
    let v = rb.run().unwrap();
    assert_eq!(v.get("v"), Some(&Value::Int(20)));
    assert_eq!(v.get("g"), Some(&s("hi")));
}

#[test]
fn syntax_error_in_an_import_names_the_module_file() {
    let dir = Dir::new();
    dir.write("lib/bad.rhai", "fn ok() { 1 }\nfn broken( { }\n");
    dir.write("main.rhai", "import \"lib/bad\" as b;\nb::ok()");
    let fake = Arc::new(Fake::new());
    let err = compile_with(&dir, "main.rhai", &fake, &[], small_limits()).unwrap_err();
    assert_eq!(err.kind, ErrorKind::Compile);
    assert_eq!(err.file, dir.root().join("lib/bad.rhai"));
    assert_eq!(err.line, Some(2));
    assert!(fake.calls().is_empty());
}

#[test]
fn error_inside_an_imported_function_reports_the_module_file() {
    let dir = Dir::new();
    dir.write(
        "lib/gl.rhai",
        "fn drop_old(id) {\n  let gl = plugin(\"gl\");\n  gl.revoke(#{ id: id })\n}\n",
    );
    dir.write("main.rhai", "import \"lib/gl\" as g;\n\ng::drop_old(7)");
    let fake = Arc::new(Fake::new());
    let rb = compile_with(&dir, "main.rhai", &fake, &[], small_limits()).unwrap();
    let err = rb.run().unwrap_err();
    assert_eq!(err.kind, ErrorKind::Plugin);
    assert_eq!(err.file, dir.root().join("lib/gl.rhai"));
    assert_eq!(err.line, Some(3));
    assert_eq!(err.column, Some(6));
}

#[test]
fn import_cycle_is_reported_not_recursed() {
    let dir = Dir::new();
    dir.write("a.rhai", "import \"b\" as b;\n");
    dir.write("b.rhai", "import \"a\" as a;\n");
    dir.write("main.rhai", "import \"a\" as a;\n1");
    let fake = Arc::new(Fake::new());
    let rb = compile_with(&dir, "main.rhai", &fake, &[], small_limits()).unwrap();
    let err = rb.run().unwrap_err();
    assert!(err.message.contains("import cycle"), "{err}");
}

#[test]
fn source_hash_is_the_file_hash_and_follows_imports() {
    use sha2::Digest;
    let dir = Dir::new();
    let main = dir.write("solo.rhai", "1 + 1");
    let fake = Arc::new(Fake::new());
    let rb = compile_with(&dir, "solo.rhai", &fake, &[], small_limits()).unwrap();
    let expected: [u8; 32] = sha2::Sha256::digest(std::fs::read(&main).unwrap()).into();
    assert_eq!(rb.source_sha256(), expected);
    assert_eq!(rb.source_sha256_hex(), hex::encode(expected));

    dir.write("lib.rhai", "fn one() { 1 }");
    dir.write("main.rhai", "import \"lib\" as l;\nl::one()");
    let before = compile_with(&dir, "main.rhai", &fake, &[], small_limits())
        .unwrap()
        .source_sha256();
    dir.write("lib.rhai", "fn one() { 2 }");
    let after = compile_with(&dir, "main.rhai", &fake, &[], small_limits())
        .unwrap()
        .source_sha256();
    assert_ne!(before, after, "a changed import changes the digest");
}

// ---- limits -------------------------------------------------------------

#[test]
fn infinite_loop_hits_the_operation_limit_with_its_line() {
    let (err, _) = run_err("let i = 0;\nloop {\n  i += 1;\n}\n");
    assert_eq!(err.kind, ErrorKind::Limit);
    assert!(err.message.contains("200000 operations"), "{err}");
    assert!(matches!(err.line, Some(2..=3)), "{err}");
}

#[test]
fn unbounded_recursion_hits_the_call_depth_limit() {
    let (err, _) = run_err("fn down(n) { down(n + 1) }\ndown(0)");
    assert_eq!(err.kind, ErrorKind::Limit);
    assert!(err.message.contains("32 nested function calls"), "{err}");
    assert_eq!(err.line, Some(2));
}

#[test]
fn huge_string_hits_the_size_limit() {
    let (err, _) = run_err("let s = \"xxxxxxxx\";\nloop { s += s; }");
    assert_eq!(err.kind, ErrorKind::Limit);
    assert!(err.message.contains("1048576 bytes"), "{err}");
    assert_eq!(err.line, Some(2));
}

#[test]
fn huge_array_hits_the_size_limit() {
    let (err, _) = run_err("let a = [];\nloop { a.push(1); }");
    assert_eq!(err.kind, ErrorKind::Limit);
    assert!(err.message.contains("10000 items"), "{err}");
}

#[test]
fn wall_time_stops_a_run() {
    let dir = Dir::new();
    dir.write("main.rhai", "let n = 0;\nloop { n += 1; }");
    let fake = Arc::new(Fake::new());
    let limits = Limits {
        max_operations: 0, // unlimited: only the clock stops this loop
        wall_time: Duration::from_millis(50),
        ..Limits::default()
    };
    let rb = compile_with(&dir, "main.rhai", &fake, &[], limits).unwrap();
    let started = std::time::Instant::now();
    let err = rb.run().unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(err.kind, ErrorKind::Limit);
    assert!(err.message.contains("wall time of 0.05 s"), "{err}");
    assert_eq!(err.line, Some(2));
}

#[test]
fn limits_cannot_be_caught() {
    let (err, _) = run_err("try {\n  loop { }\n} catch (e) {\n  1\n}");
    assert_eq!(err.kind, ErrorKind::Limit);
}

#[test]
fn sleep_is_refused() {
    let (err, _) = run_err("sleep(100)");
    assert!(err.message.contains("sleep is not available"), "{err}");
}

// ---- plugins ------------------------------------------------------------

#[test]
fn plugin_methods_dispatch_with_maps_in_and_out() {
    let v = ok(r#"
        let gl = plugin("gl");
        let me = gl.whoami();
        let echoed = gl.echo(#{ id: 7, tags: ["a", "b"], nested: #{ on: true, ratio: 0.5 }, none: () });
        #{ user: me.username, echoed: echoed }
    "#);
    assert_eq!(v.get("user"), Some(&s("ada")));
    let echoed = v.get("echoed").unwrap();
    assert_eq!(echoed.get("id"), Some(&Value::Int(7)));
    assert_eq!(
        echoed.get("tags"),
        Some(&Value::Array(vec![s("a"), s("b")]))
    );
    assert_eq!(
        echoed.get("nested").and_then(|n| n.get("on")),
        Some(&Value::Bool(true))
    );
    assert_eq!(echoed.get("none"), Some(&Value::Null));
}

#[test]
fn plugin_call_without_input_sends_an_empty_map() {
    let (result, fake) = run("plugin(\"gl\").whoami()");
    result.unwrap();
    assert_eq!(fake.inputs.lock().unwrap()[0], Value::map());
}

#[test]
fn invoke_reaches_any_operation_name() {
    let v = ok("invoke(plugin(\"gl\"), \"echo\", #{ x: 1 })");
    assert_eq!(v.get("x"), Some(&Value::Int(1)));
}

#[test]
fn operation_of_another_plugin_lists_what_this_one_has() {
    // Through a function parameter the plugin is only known at run time,
    // where the engine's own check still names what the plugin has.
    let (err, fake) = run_err("fn who(p) {\n  p.whoami()\n}\nwho(plugin(\"gh\"))");
    assert_eq!(err.kind, ErrorKind::Runtime);
    assert_eq!(err.line, Some(2));
    assert!(
        err.message
            .contains("plugin `gh` has no operation `whoami`; it has: list"),
        "{err}"
    );
    assert!(!fake.calls().iter().any(|c| c.starts_with("invoke")));
}

#[test]
fn operation_no_plugin_has_is_explained() {
    let (err, _) = run_err("fn f(p) { p.frobnicate() }\nf(plugin(\"gl\"))");
    assert!(
        err.message
            .contains("plugin `gl` has no operation `frobnicate`; it has: whoami"),
        "{err}"
    );
}

#[test]
fn a_computed_plugin_name_describes_every_plugin() {
    let dir = Dir::new();
    dir.write("main.rhai", "let n = \"g\" + \"l\";\nplugin(n).whoami();\n");
    let fake = Arc::new(Fake::new());
    compile_with(&dir, "main.rhai", &fake, &[], small_limits()).unwrap();
    assert_eq!(*fake.describes.lock().unwrap(), 3);
}

/// The plugins a compile described, by name.
fn described_with(source: &str, params: &[(&str, &str)]) -> usize {
    let dir = Dir::new();
    dir.write("main.rhai", source);
    let fake = Arc::new(Fake::new());
    compile_with(&dir, "main.rhai", &fake, params, small_limits()).unwrap();
    *fake.describes.lock().unwrap()
}

#[test]
fn a_plugin_named_by_a_parameter_describes_only_that_plugin() {
    let source = "plugin(param(\"plugin\", \"gl\")).whoami();\n";
    assert_eq!(
        described_with(source, &[]),
        1,
        "the default names one plugin"
    );
    assert_eq!(described_with(source, &[("plugin", "gl")]), 1);
    // `param("p")` with the parameter given names that plugin alone.
    assert_eq!(
        described_with("plugin(param(\"p\")).whoami();\n", &[("p", "gl")]),
        1
    );
    // Missing without a default: the run stops at the call, nothing loads.
    assert_eq!(described_with("plugin(param(\"p\")).whoami();\n", &[]), 0);
    // A computed parameter name, and a script's own `param`, are not known
    // before the run: every plugin is described.
    assert_eq!(
        described_with("let k = \"p\";\nplugin(param(k, \"gl\")).whoami();\n", &[]),
        3
    );
    assert_eq!(
        described_with(
            "fn param(a, b) { \"gl\" }\nplugin(param(\"p\", \"x\")).whoami();\n",
            &[]
        ),
        3
    );
}

#[test]
fn a_parameter_named_plugin_is_the_one_called() {
    let (result, fake) = run_with(
        Fake::new(),
        "plugin(param(\"plugin\", \"nope\")).whoami()",
        &[("plugin", "gl")],
    );
    result.unwrap();
    assert_eq!(fake.calls().len(), 1, "{:?}", fake.calls());
}

#[test]
fn unknown_plugin_names_the_known_ones() {
    let (err, _) = run_err("let name = \"gitlab\";\nplugin(name)");
    assert_eq!(err.kind, ErrorKind::Runtime);
    assert!(
        err.message
            .contains("unknown plugin `gitlab`; configured plugins: evil, gh, gl"),
        "{err}"
    );
}

#[test]
fn plugin_that_failed_to_load_raises_its_load_error() {
    let (err, _) = run_err("info(1);\nplugin(\"evil\")");
    assert_eq!(err.kind, ErrorKind::Denied);
    assert_eq!(err.line, Some(2));
    assert!(err.message.contains("wasi:sockets"), "{err}");
}

#[test]
fn plugin_input_must_be_a_map() {
    let (err, fake) = run_err("plugin(\"gl\").rotate(7)");
    assert!(err.message.contains("takes an object map"), "{err}");
    assert!(fake.calls().is_empty());
}

#[test]
fn plugin_handle_cannot_be_sent_or_returned() {
    let (err, _) = run_err("let gl = plugin(\"gl\");\ngl.echo(#{ p: gl })");
    assert!(err.message.contains("plugin handle"), "{err}");
    let (err, _) = run_err("plugin(\"gl\")");
    assert!(err.message.contains("final value"), "{err}");
}

// ---- effect errors ------------------------------------------------------

#[test]
fn provider_error_can_be_caught_with_its_status() {
    let v = ok(r#"
        let gl = plugin("gl");
        let outcome = "";
        try {
            gl.revoke(#{ id: 1 });
            outcome = "revoked";
        } catch (e) {
            if e.kind == "provider" && e.status == 404 {
                outcome = `gone: ${e.plugin}.${e.operation}`;
            } else {
                outcome = "other";
            }
        }
        outcome
    "#);
    assert_eq!(v, s("gone: gl.revoke"));
}

#[test]
fn uncaught_provider_error_has_kind_and_position() {
    let (err, _) =
        run_err("let gl = plugin(\"gl\");\nlet x = 1;\nlet r =   gl.revoke(#{ id: 1 });");
    assert_eq!(err.kind, ErrorKind::Plugin);
    assert_eq!((err.line, err.column), (Some(3), Some(14)));
    assert!(err.message.contains("404"), "{err}");
}

#[test]
fn effect_error_kinds_map_to_error_kinds() {
    let cases: Vec<(EffectError, ErrorKind)> = vec![
        (
            EffectError::Denied("host not granted".into()),
            ErrorKind::Denied,
        ),
        (
            EffectError::MissingInput {
                name: "otp".into(),
                hint: "pass --input otp=…".into(),
            },
            ErrorKind::MissingInput,
        ),
        (
            EffectError::Failed("plugin trapped".into()),
            ErrorKind::Failed,
        ),
        (
            EffectError::Plugin {
                plugin: "gl".into(),
                operation: "rotate".into(),
                error: PluginError::InvalidInput("id must be a number".into()),
            },
            ErrorKind::Plugin,
        ),
        (
            EffectError::Plugin {
                plugin: "gl".into(),
                operation: "rotate".into(),
                error: PluginError::Retryable {
                    delay_ms: 500,
                    message: "rate limited".into(),
                },
            },
            ErrorKind::Plugin,
        ),
    ];
    for (effect_error, kind) in cases {
        let expected_text = effect_error.to_string();
        let fake = Fake::new().with_invoke(move |_, _, _| Err(effect_error.clone()));
        let (result, _) = run_with(fake, "\nplugin(\"gl\").rotate(#{})", &[]);
        let err = result.unwrap_err();
        assert_eq!(err.kind, kind, "{err}");
        assert_eq!(err.line, Some(2));
        let core = expected_text.rsplit(": ").next().unwrap();
        assert!(err.message.contains(core), "{err} vs {expected_text}");
    }
}

#[test]
fn retryable_error_carries_its_delay() {
    let fake = Fake::new().with_invoke(|p, o, _| {
        Err(EffectError::Plugin {
            plugin: p.into(),
            operation: o.into(),
            error: PluginError::Retryable {
                delay_ms: 1500,
                message: "slow down".into(),
            },
        })
    });
    let (result, _) = run_with(
        fake,
        "let r = ();\ntry { plugin(\"gl\").rotate(); } catch (e) { r = #{ k: e.kind, d: e.delay_ms, s: e.status }; }\nr",
        &[],
    );
    let v = result.unwrap();
    assert_eq!(v.get("k"), Some(&s("retryable")));
    assert_eq!(v.get("d"), Some(&Value::Int(1500)));
    assert_eq!(v.get("s"), Some(&Value::Null));
}

#[test]
fn secret_lookup_denied_is_catchable_and_kind_denied_when_not() {
    let v = ok("let k = \"none\";\ntry { secret(\"other\"); } catch (e) { k = e.kind; }\nk");
    assert_eq!(v, s("denied"));
    let (err, _) = run_err("secret(\"other\")");
    assert_eq!(err.kind, ErrorKind::Denied);
    assert!(err.message.contains("not granted"), "{err}");
}

#[test]
fn fail_ends_the_run_with_its_line_even_inside_try() {
    let (err, _) = run_err("let x = 1;\ntry {\n  fail(\"token still valid\");\n} catch (e) { }\n2");
    assert_eq!(err.kind, ErrorKind::Failed);
    assert_eq!(err.line, Some(3));
    assert_eq!(err.message, "token still valid");
}

#[test]
fn fail_inside_a_function_reports_the_fail_line() {
    let (err, _) = run_err(
        "fn check(ok) {\n  if !ok {\n    fail(\"check failed\");\n  }\n}\ncheck(true);\ncheck(false);",
    );
    assert_eq!(err.kind, ErrorKind::Failed);
    assert_eq!(err.line, Some(3));
}

#[test]
fn thrown_value_is_a_runtime_error() {
    let (err, _) = run_err("\nthrow \"bad state\";");
    assert_eq!(err.kind, ErrorKind::Runtime);
    assert_eq!(err.line, Some(2));
    assert!(err.message.contains("bad state"), "{err}");
}

#[test]
fn error_messages_are_redacted() {
    let _registered = SecretValue::new(CANARY);
    let fake = Fake::new().with_invoke(|_, _, _| {
        Err(EffectError::Failed(format!(
            "provider echoed {CANARY} back"
        )))
    });
    let (result, _) = run_with(fake, "plugin(\"gl\").rotate()", &[]);
    let err = result.unwrap_err();
    assert!(!err.to_string().contains(CANARY), "{err}");
    assert!(!format!("{err:?}").contains(CANARY));
    assert!(err.message.contains("***"), "{err}");
}

// ---- secrets ------------------------------------------------------------

#[test]
fn secret_values_never_reach_logs_or_output() {
    let (result, fake) = run(r#"
        let s = secret("db");
        print(s);
        debug(s);
        info(s);
        warn(`interpolated: ${s}`);
        info(#{ token: s });
        print([s, 1]);
        print(#{ token: s });
        info(to_json(#{ token: s }));
        info(#{ token: s }.to_json());
        info(s.to_string());
        info(type_of(s));
        let rotated = plugin("gl").rotate(#{ id: 1, old: s });
        print(rotated);
        #{ interpolated: `${s}`, is_secret: is_secret(s), plain: is_secret("x"), token: rotated.token }
    "#);
    let v = result.unwrap();
    let logs = fake.log_text();
    assert!(!logs.contains(CANARY), "{logs}");
    assert!(logs.contains("***"), "{logs}");
    assert!(logs.contains("Secret"), "type_of names the type: {logs}");
    assert_eq!(v.get("interpolated"), Some(&s("***")));
    assert_eq!(v.get("is_secret"), Some(&Value::Bool(true)));
    assert_eq!(v.get("plain"), Some(&Value::Bool(false)));
    // The plugin got the real value, and the result keeps a handle.
    let input = fake.inputs.lock().unwrap()[0].clone();
    match input.get("old") {
        Some(Value::Secret(secret)) => assert_eq!(secret.expose(), CANARY),
        other => panic!("expected a secret input, got {other:?}"),
    }
    assert!(matches!(v.get("token"), Some(Value::Secret(_))));
    assert!(!format!("{v:?}").contains(CANARY));
}

#[test]
fn concatenating_a_secret_is_an_error_with_its_line() {
    for (n, source) in [
        "let s = secret(\"db\");\nlet t = \"Bearer \" + s;",
        "let s = secret(\"db\");\nlet t = s + \"!\";",
        "let s = secret(\"db\");\nlet t = \"x\";\nt += s;",
        "let s = secret(\"db\");\nlet t = \"x\";\nt.append(s);",
        "let s = secret(\"db\");\nlet t = s + s;",
        "let s = secret(\"db\");\nif s == \"prod\" { 1 } else { 2 }",
        "let s = secret(\"db\");\nif \"prod\" != s { 1 } else { 2 }",
        "let s = secret(\"db\");\ns == s",
    ]
    .iter()
    .enumerate()
    {
        let (err, fake) = run_err(source);
        assert_eq!(err.kind, ErrorKind::Runtime, "case {n}: {err}");
        assert!(
            err.message.contains(
                "secret values cannot be turned into text; pass the handle to a plugin instead"
            ),
            "case {n}: {err}"
        );
        assert_eq!(err.line, Some(source.lines().count()), "case {n}: {err}");
        assert!(err.secret_used_as_text(), "case {n}: {err}");
        assert!(!err.to_string().contains(CANARY));
        assert!(!fake.log_text().contains(CANARY));
    }
}

#[test]
fn string_functions_on_a_secret_are_told_apart_from_other_errors() {
    for source in [
        "let s = secret(\"db\");\ns.len()",
        "let s = secret(\"db\");\ns.split(\",\")",
        "let s = secret(\"db\");\nparse_int(s)",
    ] {
        let (err, _) = run_err(source);
        assert!(err.message.contains("(Secret"), "{err}");
        assert!(err.secret_used_as_text(), "{source}: {err}");
    }
    for source in [
        "fail(\"secret values cannot be turned into text\")",
        "let s = \"x\";\ns.no_such_function()",
    ] {
        let (err, _) = run_err(source);
        assert!(!err.secret_used_as_text(), "{source}: {err}");
    }
}

#[test]
fn store_secret_takes_handles_only() {
    let (result, fake) = run("store_secret(\"next\", random_secret(16));\n1");
    result.unwrap();
    let stored = fake.stored.lock().unwrap();
    assert_eq!(stored[0].0, "next");
    assert_eq!(stored[0].1.expose(), "ab".repeat(16));
    drop(stored);

    let (err, fake) = run_err("\nstore_secret(\"next\", \"plain text\")");
    assert!(err.message.contains("takes a secret handle"), "{err}");
    assert_eq!(err.line, Some(2));
    assert!(fake.stored.lock().unwrap().is_empty());
}

#[test]
fn random_secret_size_is_bounded() {
    let (err, fake) = run_err("random_secret(0)");
    assert!(err.message.contains("1 to 1024"), "{err}");
    assert!(fake.calls().is_empty());
}

// ---- params, prompts, time ----------------------------------------------

#[test]
fn params_are_readable_and_constant() {
    let (result, _) = run_with(
        Fake::new(),
        "#{ a: params.region, b: param(\"region\"), c: param(\"zone\", \"z1\") }",
        &[("region", "eu")],
    );
    let v = result.unwrap();
    assert_eq!(v.get("a"), Some(&s("eu")));
    assert_eq!(v.get("b"), Some(&s("eu")));
    assert_eq!(v.get("c"), Some(&s("z1")));

    let (result, _) = run_with(Fake::new(), "params.region = \"us\";", &[("region", "eu")]);
    assert!(result.is_err());
}

#[test]
fn missing_param_says_how_to_pass_it() {
    let (err, _) = run_err("let a = 1;\nlet r = params.region;");
    assert_eq!(err.kind, ErrorKind::MissingInput);
    assert_eq!(err.line, Some(2));
    assert_eq!(
        err.message,
        "missing parameter `region`: pass --set region=VALUE"
    );

    let (err, _) = run_err("\nparam(\"region\")");
    assert_eq!(err.kind, ErrorKind::MissingInput);
    assert_eq!(err.line, Some(2));
    assert_eq!(
        err.message,
        "missing parameter `region`: pass --set region=VALUE"
    );
}

#[test]
fn missing_map_property_is_an_error() {
    let (err, _) = run_err("let m = #{ token: 1 };\nm.tokn");
    assert_eq!(err.kind, ErrorKind::Runtime);
    assert!(err.message.contains("property `tokn` not found"), "{err}");
    assert_eq!(ok("let m = #{ a: 1 };\nm.get(\"b\")"), Value::Null);
}

#[test]
fn prompt_names_are_slugged_from_the_text() {
    assert_eq!(input_name("New GitLab token?"), "new_gitlab_token");
    assert_eq!(input_name("  --Hello,   World!! "), "hello_world");
    assert_eq!(input_name("Café OTP"), "caf_otp");
    assert_eq!(input_name("???"), "input");
    let long = input_name(&"word ".repeat(20));
    assert!(long.len() <= 40 && !long.ends_with('_'), "{long}");
    assert_eq!(long, "word_word_word_word_word_word_word_word");

    let fake = Fake::new()
        .answer("new_gitlab_token", Answer::Secret(SecretValue::new(CANARY)))
        .answer("team", Answer::Text("core".into()))
        .answer("proceed_with_rotation", Answer::Confirm(true));
    let (result, fake) = run_with(
        fake,
        r#"
        let t = prompt_secret("New GitLab token?");
        let team = prompt("team", "Which team owns it?");
        let proceed = confirm("Proceed with rotation?");
        #{ secret: is_secret(t), team: team, proceed: proceed }
        "#,
        &[],
    );
    let v = result.unwrap();
    assert_eq!(v.get("secret"), Some(&Value::Bool(true)));
    assert_eq!(v.get("team"), Some(&s("core")));
    assert_eq!(v.get("proceed"), Some(&Value::Bool(true)));
    let prompts = fake.prompts.lock().unwrap();
    assert_eq!(prompts[0].name, "new_gitlab_token");
    assert_eq!(prompts[0].kind, PromptKind::Secret);
    assert_eq!(prompts[1].name, "team");
    assert_eq!(prompts[1].text, "Which team owns it?");
    assert_eq!(prompts[2].kind, PromptKind::Confirm);
}

#[test]
fn unanswered_prompt_is_missing_input() {
    let (err, _) = run_err("\nprompt(\"One-time code\")");
    assert_eq!(err.kind, ErrorKind::MissingInput);
    assert_eq!(err.line, Some(2));
    assert!(err.message.contains("one_time_code"), "{err}");
}

#[test]
fn dates_come_from_the_effects_clock() {
    let v =
        ok("#{ now: now(), today: today(), later: date_in_days(30), before: date_in_days(-14) }");
    assert_eq!(v.get("now"), Some(&Value::Int(NOW)));
    assert_eq!(v.get("today"), Some(&s("2023-11-14")));
    assert_eq!(v.get("later"), Some(&s("2023-12-14")));
    assert_eq!(v.get("before"), Some(&s("2023-10-31")));
    let (err, _) = run_err("date_in_days(9223372036854775807)");
    assert!(err.message.contains("not a date"), "{err}");
}

#[test]
fn no_clock_reading_builtin() {
    let (result, _) = run("timestamp()");
    assert!(result.is_err());
}

#[test]
fn a_compiled_runbook_runs_again_from_scratch() {
    let dir = Dir::new();
    dir.write(
        "counter.rhai",
        "info(\"module loaded\");\nexport const N = 1;\n",
    );
    dir.write(
        "main.rhai",
        "import \"counter\" as c;\nimport \"counter\" as d;\nc::N + d::N",
    );
    let fake = Arc::new(Fake::new());
    let rb = compile_with(&dir, "main.rhai", &fake, &[], small_limits()).unwrap();
    assert_eq!(rb.run().unwrap(), Value::Int(2));
    assert_eq!(rb.run().unwrap(), Value::Int(2));
    let loads = fake
        .calls()
        .iter()
        .filter(|c| c.as_str() == "log module loaded")
        .count();
    assert_eq!(loads, 2, "once per run: {:?}", fake.calls());
}

#[test]
fn display_without_line_shows_just_the_file() {
    let err = RunbookError::new(
        ErrorKind::Compile,
        "boom",
        Path::new("runbooks/x.rhai"),
        rhai::Position::NONE,
    );
    assert_eq!(err.to_string(), "runbooks/x.rhai: boom");
    let err = RunbookError::new(
        ErrorKind::Compile,
        "boom",
        Path::new("runbooks/x.rhai"),
        rhai::Position::new(12, 5),
    );
    assert_eq!(err.to_string(), "runbooks/x.rhai:12:5: boom");
}

#[test]
fn a_panic_during_the_run_becomes_an_error() {
    let fake = Fake::new().with_invoke(|_, _, _| panic!("effects broke"));
    let (result, _) = run_with(fake, "plugin(\"gl\").whoami()", &[]);
    let err = result.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Failed);
    assert!(err.message.contains("effects broke"), "{err}");
}

#[test]
fn fail_inside_an_imported_function_reports_the_module_file() {
    let dir = Dir::new();
    dir.write(
        "lib/checks.rhai",
        "fn must(ok) {\n  if !ok { fail(\"precondition\"); }\n}\n",
    );
    dir.write("main.rhai", "import \"lib/checks\" as c;\nc::must(false);");
    let fake = Arc::new(Fake::new());
    let rb = compile_with(&dir, "main.rhai", &fake, &[], small_limits()).unwrap();
    let err = rb.run().unwrap_err();
    assert_eq!(err.kind, ErrorKind::Failed);
    assert_eq!(err.file, dir.root().join("lib/checks.rhai"));
    assert_eq!(err.line, Some(2));
}

#[test]
fn type_errors_name_engine_types_by_their_runbook_names() {
    let (err, _) = run_err("let s = secret(\"db\");\nlet a = [1];\na[s]");
    assert!(err.message.contains("Secret"), "{err}");
    assert!(!err.message.contains("keycycle_runbook"), "{err}");
}

#[test]
fn runbook_and_its_error_can_cross_threads() {
    fn send_sync<T: Send + Sync + 'static>() {}
    send_sync::<Runbook>();
    send_sync::<RunbookError>();
    let dir = Dir::new();
    dir.write("main.rhai", "40 + 2");
    let fake = Arc::new(Fake::new());
    let rb = compile_with(&dir, "main.rhai", &fake, &[], small_limits()).unwrap();
    let v = std::thread::spawn(move || rb.run())
        .join()
        .unwrap()
        .unwrap();
    assert_eq!(v, Value::Int(42));
}

// ---- compile-time checks of plugin calls and prompts ---------------------

/// Compiles `source` as `main.rhai` (with `files` beside it); runs nothing.
fn compile_files(
    source: &str,
    files: &[(&str, &str)],
) -> (Result<Runbook, RunbookError>, Arc<Fake>, Dir) {
    let dir = Dir::new();
    for (rel, text) in files {
        dir.write(rel, text);
    }
    dir.write("main.rhai", source);
    let fake = Arc::new(Fake::new());
    let result = compile_with(&dir, "main.rhai", &fake, &[], small_limits());
    (result, fake, dir)
}

fn compile_err(source: &str) -> (RunbookError, Arc<Fake>, Dir) {
    let (result, fake, dir) = compile_files(source, &[]);
    match result {
        Ok(_) => panic!("expected a compile error for:\n{source}"),
        Err(err) => (err, fake, dir),
    }
}

fn compile_ok(source: &str) -> Runbook {
    match compile_files(source, &[]).0 {
        Ok(rb) => rb,
        Err(err) => panic!("{err}"),
    }
}

#[test]
fn misspelt_operation_fails_at_compile_time_with_a_suggestion() {
    let (err, fake, dir) = compile_err(
        "let gl = plugin(\"gl\");\ngl.rotate(#{ id: 1 });\nlet r =   gl.revok(#{ id: 1 });\n",
    );
    assert_eq!(err.kind, ErrorKind::Compile);
    assert_eq!(err.file, dir.root().join("main.rhai"));
    assert_eq!((err.line, err.column), (Some(3), Some(14)));
    assert!(
        err.message.contains(
            "plugin `gl` has no operation `revok` (did you mean `revoke`?); \
             it has: whoami, rotate, revoke, echo"
        ),
        "{err}"
    );
    // The earlier, valid `rotate` never ran.
    assert!(fake.calls().is_empty(), "{:?}", fake.calls());
}

#[test]
fn misspelt_operation_in_every_call_form_is_found() {
    for (source, line, wrong) in [
        ("plugin(\"gl\").whoam()", 1, "whoam"),
        ("const GL = plugin(\"gl\");\nGL.whoam()", 2, "whoam"),
        ("let x = plugin(\"gl\").rotat(#{}).id;", 1, "rotat"),
        (
            "let gl = plugin(\"gl\");\nlet u = gl.whoam().username;",
            2,
            "whoam",
        ),
        ("let gl = plugin(\"gl\");\nwhoam(gl)", 2, "whoam"),
        (
            "let gl = plugin(\"gl\");\nif true {\n  gl.whoam();\n}",
            3,
            "whoam",
        ),
        (
            "fn f() {\n  let g = plugin(\"gl\");\n  g.whoam()\n}\n1",
            3,
            "whoam",
        ),
        ("let f = || plugin(\"gl\").whoam();\n1", 1, "whoam"),
    ] {
        let (err, _, _) = compile_err(source);
        assert_eq!(err.kind, ErrorKind::Compile, "{source}: {err}");
        assert_eq!(err.line, Some(line), "{source}: {err}");
        assert!(
            err.message.contains(&format!(
                "plugin `gl` has no operation `{wrong}` (did you mean `"
            )),
            "{source}: {err}"
        );
    }
}

#[test]
fn misspelt_operation_in_an_imported_module_names_the_module_file() {
    let (result, fake, dir) = compile_files(
        "import \"lib/ops\" as o;\no::run()",
        &[(
            "lib/ops.rhai",
            "fn run() {\n  let p = plugin(\"gl\");\n  p.whoami();\n  p.whoiam()\n}\n",
        )],
    );
    let err = result.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Compile);
    assert_eq!(err.file, dir.root().join("lib/ops.rhai"));
    assert_eq!(err.line, Some(4));
    assert!(err.message.contains("did you mean `whoami`?"), "{err}");
    assert!(fake.calls().is_empty());
}

#[test]
fn misspelt_operation_given_by_name_to_invoke_or_defer_is_found() {
    let (err, _, _) = compile_err("let g = plugin(\"gl\");\ninvoke(g,   \"rotat\", #{ id: 1 })");
    assert_eq!((err.line, err.column), (Some(2), Some(13)));
    assert!(
        err.message
            .contains("plugin `gl` has no operation `rotat` (did you mean `rotate`?)"),
        "{err}"
    );
    let (err, _, _) = compile_err("let g = plugin(\"gl\");\ng.invoke(\"ech\")");
    assert_eq!(err.line, Some(2));
    assert!(err.message.contains("did you mean `echo`?"), "{err}");
    let (err, _, _) = compile_err("defer(plugin(\"gl\"), \"revoek\", #{ id: 1 }, 60)");
    assert!(err.message.contains("did you mean `revoke`?"), "{err}");
    // `invoke` reaches any operation, reserved names included; a real one
    // passes.
    compile_ok("let g = plugin(\"gl\");\ninvoke(g, \"echo\", #{});\ng.defer(\"revoke\", #{}, 5);");
}

#[test]
fn unknown_plugin_literal_is_a_compile_error() {
    let (err, fake, _) = compile_err("info(\"start\");\nlet p = plugin(\"gll\");\n");
    assert_eq!(err.kind, ErrorKind::Compile);
    assert_eq!(err.line, Some(2));
    assert!(
        err.message.contains(
            "unknown plugin `gll` (did you mean `gl`?); configured plugins: evil, gh, gl"
        ),
        "{err}"
    );
    assert!(fake.calls().is_empty());
}

#[test]
fn several_misspellings_report_the_first_and_count_the_rest() {
    let (err, _, _) = compile_err("let g = plugin(\"gl\");\ng.whoam();\ng.rotat();\ng.ech();");
    assert_eq!(err.line, Some(2));
    assert!(
        err.message.ends_with("(2 more calls fail this check)"),
        "{err}"
    );
}

#[test]
fn methods_of_other_values_are_not_flagged() {
    let rb = compile_ok(
        r#"
        let s = "abc";
        let n = s.len();
        let m = #{ a: 1 };
        let k = m.keys();
        let a = [1, 2];
        let has = a.contains(1) && s.contains("b");
        let gl = plugin("gl");
        let me = gl.whoami();
        let short = me.username.len() + me.get("x").to_string().len();
        let t = gl.to_string() + gl.type_of();
        let j = m.to_json();
        fn helper(x) { x.len() + x.index_of("a") }
        fn label() { this.to_upper() }
        let h = helper("ab") + "x".label().len();
        // A function of the runbook called on a plugin is not an operation.
        fn shown() { this.to_string() }
        let shown = gl.shown();
        // A plugin that failed to load cannot be checked; running it fails.
        let e = plugin("evil");
        e.anything();
        try { gl.revoke(#{ id: 1 }); } catch (err) { let w = err.message.len(); }
        for item in a { let q = item.to_string(); }
        1
        "#,
    );
    assert_eq!(rb.warnings(), &[], "{:?}", rb.warnings());
}

#[test]
fn shadowing_and_scopes_do_not_cause_false_errors() {
    // Each block's `p` is its own; the outer one is `gl` again after it.
    let rb = compile_ok(
        "let p = plugin(\"gl\");\n{\n  let p = plugin(\"gh\");\n  p.list();\n}\np.whoami();\n\
         if true { let p = plugin(\"gh\"); p.list(); } else { p.whoami(); }\n\
         let r = { let p = plugin(\"gh\"); p.list() };\np.whoami();\n\
         fn a() { let p = plugin(\"gh\"); p.list() }\nfn b(p) { p.whoami() }\n\
         let q = plugin(\"gh\");\nq = plugin(\"gl\");\nq.whoamy();\n1",
    );
    // `b`'s `p` is a parameter and `q` is reassigned: unchecked. `b`'s call
    // is quiet (a plugin has `whoami`); `q`'s typo is not.
    let lines: Vec<_> = rb.warnings().iter().map(|w| w.line).collect();
    assert_eq!(lines, vec![Some(14)], "{:?}", rb.warnings());
}

#[test]
fn calls_that_cannot_be_checked_are_warnings_with_their_line() {
    let rb = compile_ok(
        "fn rot(h) {\n  h.rotat(#{ id: 1 })\n}\nlet n = \"gl\";\nlet p = plugin(n);\n\
         p.whoamy();\ninvoke(plugin(\"gl\"), n);\nlet m = #{ p: plugin(\"gl\") };\nm.p.revok();\n1",
    );
    let warnings: Vec<String> = rb.warnings().iter().map(ToString::to_string).collect();
    let main = rb.path().display().to_string();
    assert_eq!(
        warnings,
        vec![
            format!(
                "{main}:6: cannot check `p.whoamy(...)` before the run: its plugin name is \
                 computed when it runs; write `plugin(\"name\")` with a literal name to have \
                 it checked, and no configured plugin has an operation `whoamy` (did you mean \
                 `whoami`?)"
            ),
            format!(
                "{main}:7: cannot check `….invoke(...)` before the run: the operation name is \
                 computed when it runs; write it as a string literal to have it checked"
            ),
            format!(
                "{main}:9: cannot check `p.revok(...)` before the run: the plugin of `p` is not \
                 known until it runs, and no configured plugin has an operation `revok` (did \
                 you mean `revoke`?)"
            ),
            format!(
                "{main}:2: cannot check `h.rotat(...)` before the run: the plugin of `h` is not \
                 known until it runs, and no configured plugin has an operation `rotat` (did \
                 you mean `rotate`?)"
            ),
        ]
    );
}

#[test]
fn calls_on_an_unknown_plugin_that_some_plugin_answers_are_quiet() {
    // A library helper's parameter, and a plugin named by a parameter: both
    // are common in shared runbooks, and warning on every run of them
    // teaches operators to ignore warnings.
    let rb = compile_ok(
        "fn rot(h) {\n  h.rotate(#{ id: 1 })\n}\nlet p = plugin(param(\"plugin\", \"gl\"));\n\
         p.whoami();\nrot(p);\ninvoke(p, \"whoami\");\nfn d(h) { invoke(h, \"revoke\", #{}) }\n1",
    );
    assert_eq!(rb.warnings(), &[], "{:?}", rb.warnings());
}

#[test]
fn prompts_are_listed_before_the_run() {
    let (result, fake, dir) = compile_files(
        "import \"lib/ask\" as ask;\n\
         let a = prompt(\"New GitLab token?\");\n\
         let b = prompt_secret(\"db_password\", \"Database password\");\n\
         if confirm(\"go\", \"Proceed?\") { ask::more(); }\n1",
        &[("lib/ask.rhai", "fn more() {\n  \"Region?\".prompt()\n}\n")],
    );
    let rb = result.unwrap();
    assert!(fake.calls().is_empty());
    let main = dir.root().join("main.rhai");
    let lib = dir.root().join("lib/ask.rhai");
    let site = |name: &str, kind, text: &str, file: &PathBuf, line| crate::PromptSite {
        name: Some(name.to_owned()),
        kind,
        text: Some(text.to_owned()),
        file: file.clone(),
        line: Some(line),
    };
    assert_eq!(
        rb.prompts(),
        vec![
            site(
                "new_gitlab_token",
                PromptKind::Text,
                "New GitLab token?",
                &main,
                2
            ),
            site(
                "db_password",
                PromptKind::Secret,
                "Database password",
                &main,
                3
            ),
            site("go", PromptKind::Confirm, "Proceed?", &main, 4),
            site("region", PromptKind::Text, "Region?", &lib, 2),
        ]
    );
    assert!(rb.prompt_names_known());

    let rb = compile_ok("let n = \"x\";\nlet v = prompt(n, \"Value?\");\nconfirm(`${n}?`)");
    let prompts = rb.prompts();
    assert_eq!(prompts.len(), 2);
    assert_eq!(prompts[0].name, None);
    assert_eq!(prompts[0].text.as_deref(), Some("Value?"));
    assert_eq!(
        (prompts[1].name.clone(), prompts[1].kind),
        (None, PromptKind::Confirm)
    );
    assert!(!rb.prompt_names_known());
}

#[test]
fn answers_are_checked_for_their_kind() {
    assert_eq!(PromptKind::Text.check_answer(""), Ok(()));
    assert_eq!(PromptKind::Secret.check_answer("s3cret"), Ok(()));
    assert!(PromptKind::Secret.check_answer("").is_err());
    for yes in ["y", "YES", " true "] {
        assert_eq!(
            PromptKind::Confirm.parse_answer(yes),
            Ok(Answer::Confirm(true))
        );
    }
    assert_eq!(
        PromptKind::Confirm.parse_answer("No"),
        Ok(Answer::Confirm(false))
    );
    let err = PromptKind::Confirm.check_answer("maybe").unwrap_err();
    assert!(err.contains("`maybe` is not yes or no"), "{err}");
}

#[test]
fn a_secret_can_still_be_tested_for_none() {
    let value = ok("let s = secret(\"db\");\nif s != () { \"held\" } else { \"none\" }");
    assert_eq!(value, Value::String("held".into()));
}
