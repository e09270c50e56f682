//! The run state in PostgreSQL, shared by several runners.
//!
//! Driver: `postgres`, the blocking client of `tokio-postgres`. Each
//! handle owns one connection on a thread of its own, which runs the
//! client (and the client's private runtime); callers send it jobs over a
//! channel and wait for the answer. So the synchronous [`StateStore`]
//! works alike from blocking threads and from inside tokio tasks, of
//! either runtime flavour: no runtime ever blocks on itself. One
//! connection per handle mirrors [`super::SqliteState`] (calls on a handle
//! run one at a time; `keycycle rotate` opens a handle per run), so there
//! is no pool. A broken connection is opened again at the next call.
//!
//! Concurrency: every change runs in one `SERIALIZABLE` transaction, and a
//! transaction the server aborts for a serialization failure or a deadlock
//! is run again from the start, for up to [`DEFAULT_BUSY_TIMEOUT`]. So a
//! read-then-write such as "is this lock free? then take it" or "which
//! action is due? claim it" has exactly one winner across every runner,
//! as under SQLite's `BEGIN IMMEDIATE`, without a table lock.
//!
//! Durability: a [`Durability::Grouped`] journal write commits with
//! `SET LOCAL synchronous_commit = off`: visible at once, on disk within
//! the WAL writer's delay. Every other change commits synchronously, and
//! [`StateStore::sync`] commits a tiny synchronous write when grouped
//! writes are pending. PostgreSQL's WAL is one sequence, and flushing it
//! up to a commit flushes every record before it, whichever session wrote
//! it; so a synchronous commit is a barrier for every earlier grouped one,
//! and a crash of the server loses at most a suffix of grouped writes,
//! the promise of [`Durability`].
//!
//! Schema: versioned migrations in the table `schema_version`, applied at
//! open inside one transaction under an advisory lock, so runners that
//! start together migrate once. A database whose schema is newer than
//! this keycycle is refused with [`StateError::NewerSchema`].
//!
//! Secrets: the password is never part of the URL (a URL that holds one
//! is refused); it comes separately and is never shown. Messages name the
//! database by its URL without the password.

pub mod tls;

use std::collections::HashMap;
use std::fmt;
use std::panic::AssertUnwindSafe;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use postgres::error::SqlState;
use postgres::types::ToSql;
use postgres::{Client, IsolationLevel, NoTls, Row, Transaction};

use super::{
    ApprovalDecision, ApprovalRecord, ApprovalState, CheckOutcome, CredentialRecord,
    DEFAULT_BUSY_TIMEOUT, DeferredFilter, DeferredRecord, DeferredState, Durability, EffectIntent,
    EffectOutcome, EffectRecord, FIRST_SEQ, GiveWay, LeaseAttempt, LockAttempt, LockRecord,
    NewApproval, NewDeferred, NewRun, PluginInfo, RotationClaim, RotationOutcome, RunEvent,
    RunFilter, RunLease, RunRecord, RunState, StateError, StateStore, action_id, check_claim,
    expired_lease_note, lease_lost, lease_stands, now_ms, require, rotation_claimable,
};
use tls::{RootCert, SslMode};

/// The newest schema version this keycycle writes in PostgreSQL (its own
/// sequence; SQLite's is [`super::SCHEMA_VERSION`]).
pub const PG_SCHEMA_VERSION: i64 = 2;

/// The advisory lock key migrations are applied under: "kcyc" in ASCII.
const MIGRATION_LOCK: i64 = 0x6b63_7963;

/// Every migration, in order: version `i + 1` is `MIGRATIONS[i]`.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE runs (
    run_id         TEXT PRIMARY KEY,
    runbook_path   TEXT NOT NULL,
    runbook_sha256 TEXT NOT NULL,
    params         TEXT NOT NULL,   -- JSON object of strings
    env            TEXT,
    dry_run        BOOLEAN NOT NULL,
    "user"         TEXT NOT NULL,
    host           TEXT NOT NULL,
    plugins        TEXT NOT NULL,   -- JSON array of PluginInfo
    started_at     BIGINT NOT NULL,
    state          TEXT NOT NULL,
    finished_at    BIGINT,
    detail         TEXT
);
CREATE INDEX runs_by_start ON runs (started_at DESC, run_id DESC);
CREATE INDEX runs_by_state ON runs (state);

CREATE TABLE run_events (
    id      BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id  TEXT NOT NULL REFERENCES runs (run_id),
    at      BIGINT NOT NULL,
    kind    TEXT NOT NULL,
    message TEXT NOT NULL
);
CREATE INDEX run_events_by_run ON run_events (run_id, id);

CREATE TABLE journal (
    run_id              TEXT NOT NULL REFERENCES runs (run_id),
    seq                 BIGINT NOT NULL,
    kind                TEXT NOT NULL,
    name                TEXT NOT NULL,
    request_fingerprint TEXT NOT NULL,
    request_summary     TEXT NOT NULL,
    mutates             BOOLEAN NOT NULL,
    started_at          BIGINT NOT NULL,
    ok                  BOOLEAN,
    result              TEXT,
    error_kind          TEXT,
    error               TEXT,
    finished_at         BIGINT,
    PRIMARY KEY (run_id, seq)
);

CREATE TABLE locks (
    credential  TEXT PRIMARY KEY,
    run_id      TEXT NOT NULL REFERENCES runs (run_id),
    acquired_at BIGINT NOT NULL
);
CREATE INDEX locks_by_run ON locks (run_id);

CREATE TABLE run_credentials (
    run_id          TEXT NOT NULL REFERENCES runs (run_id),
    credential      TEXT NOT NULL,
    first_locked_at BIGINT NOT NULL,
    PRIMARY KEY (run_id, credential)
);
CREATE INDEX run_credentials_by_credential ON run_credentials (credential);

CREATE TABLE deferred (
    id              TEXT PRIMARY KEY,
    run_id          TEXT NOT NULL REFERENCES runs (run_id),
    credential      TEXT,
    description     TEXT NOT NULL,
    plugin          TEXT NOT NULL,
    operation       TEXT NOT NULL,
    input           TEXT NOT NULL,
    due_at          BIGINT NOT NULL,
    state           TEXT NOT NULL,
    attempts        BIGINT NOT NULL,
    next_attempt_at BIGINT NOT NULL,
    claimed_by      TEXT,
    lease_until     BIGINT,
    last_error      TEXT,
    created_at      BIGINT NOT NULL,
    finished_at     BIGINT,
    note            TEXT
);
CREATE INDEX deferred_by_state ON deferred (state, next_attempt_at);
CREATE INDEX deferred_by_run ON deferred (run_id);

CREATE TABLE approvals (
    id             TEXT PRIMARY KEY,
    run_id         TEXT NOT NULL REFERENCES runs (run_id),
    title          TEXT NOT NULL,
    summary        TEXT NOT NULL,
    environments   TEXT NOT NULL,
    approvers      TEXT NOT NULL,
    requested_by   TEXT NOT NULL,
    requested_host TEXT NOT NULL,
    requested_at   BIGINT NOT NULL,
    state          TEXT NOT NULL,
    decided_by     TEXT,
    decided_host   TEXT,
    decided_at     BIGINT,
    comment        TEXT
);
CREATE INDEX approvals_by_state ON approvals (state, requested_at);

CREATE TABLE credentials (
    id     TEXT PRIMARY KEY,
    record TEXT NOT NULL            -- JSON CredentialRecord
);

-- One row per server session that ran a barrier: the synchronous write
-- that makes earlier grouped commits durable. Per session, so barriers of
-- different runners never wait for each other's row lock.
CREATE TABLE barriers (
    backend_pid INTEGER PRIMARY KEY,
    n           BIGINT NOT NULL
);
"#,
    // 2: run leases, so a runner on another host sees that a run is alive.
    r#"
CREATE TABLE run_leases (
    run_id      TEXT PRIMARY KEY,
    holder      TEXT NOT NULL,
    host        TEXT NOT NULL,
    pid         BIGINT NOT NULL,
    lease_until BIGINT NOT NULL
);
"#,
];

const RUN_COLUMNS: &str = "run_id, runbook_path, runbook_sha256, params, env, dry_run, \"user\", \
     host, plugins, started_at, state, finished_at, detail";

const DEFERRED_COLUMNS: &str = "id, run_id, credential, description, plugin, operation, input, \
     due_at, state, attempts, next_attempt_at, claimed_by, lease_until, last_error, created_at, \
     finished_at, note";

const APPROVAL_COLUMNS: &str = "id, run_id, title, summary, environments, approvers, \
     requested_by, requested_host, requested_at, state, decided_by, decided_host, decided_at, \
     comment";

/// Grouped commits made by this process's handles on one database, and
/// how many of them a barrier has covered: a barrier with nothing new to
/// cover costs nothing. Shared by the handles with the same URL (as
/// `keycycle rotate` opens one per run); a barrier on one database says
/// nothing of another's.
#[derive(Debug, Default)]
struct Counters {
    grouped: AtomicU64,
    synced: AtomicU64,
}

impl Counters {
    fn for_url(url: &str) -> Arc<Counters> {
        static ALL: OnceLock<Mutex<HashMap<String, Arc<Counters>>>> = OnceLock::new();
        let mut all = ALL
            .get_or_init(Mutex::default)
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        all.entry(url.to_owned()).or_default().clone()
    }
}

/// Where and how to connect: a libpq URL without a password, and the
/// password apart.
#[derive(Clone)]
pub struct PgOptions {
    url: String,
    password: Option<String>,
    /// How long a change retries after serialization failures, and how
    /// long it waits for a row lock, before [`StateError::Busy`].
    pub busy_timeout: Duration,
}

impl fmt::Debug for PgOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgOptions")
            .field("url", &mask_url(&self.url))
            .field("password", &self.password.as_ref().map(|_| "***"))
            .finish()
    }
}

impl PgOptions {
    /// `url`: `postgres://USER@HOST:PORT/DB?sslmode=…&sslrootcert=…`
    /// (libpq's URL form). `password`: from the environment or a file,
    /// never from the URL.
    pub fn new(url: &str, password: Option<String>) -> PgOptions {
        PgOptions {
            url: url.to_owned(),
            password,
            busy_timeout: DEFAULT_BUSY_TIMEOUT,
        }
    }

    /// The URL as shown in messages: the password, if any, masked.
    pub fn display(&self) -> String {
        mask_url(&self.url)
    }
}

/// Whether `state` names a PostgreSQL database rather than a folder.
pub fn is_postgres_url(state: &str) -> bool {
    state.starts_with("postgres://") || state.starts_with("postgresql://")
}

/// `url` with the password of its user info, if any, replaced by `***`.
pub fn mask_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}{tail}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

/// What the URL says, split into what the driver takes and the TLS
/// settings keycycle handles itself.
struct Target {
    config: postgres::Config,
    ssl: SslMode,
    root: Option<RootCert>,
}

fn parse_target(options: &PgOptions) -> Result<Target, String> {
    let masked = mask_url(&options.url);
    if masked != options.url {
        return Err(
            "the URL holds a password; take it out and give it in PGPASSWORD, \
             KEYCYCLE_STATE_PASSWORD or state_password_file instead"
                .to_owned(),
        );
    }
    let (base, query) = match options.url.split_once('?') {
        Some((base, query)) => (base, query),
        None => (options.url.as_str(), ""),
    };
    let mut ssl = SslMode::Prefer;
    let mut root = None;
    let mut rest = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "sslmode" => {
                ssl = SslMode::parse(value).ok_or_else(|| {
                    format!(
                        "unknown sslmode `{value}`: use disable, allow, prefer, require, \
                         verify-ca or verify-full"
                    )
                })?;
            }
            "sslrootcert" => {
                let value = percent_decode(value);
                root = Some(if value == "system" {
                    RootCert::System
                } else {
                    RootCert::File(value.into())
                });
            }
            "password" => {
                return Err(
                    "the URL holds a password; take it out and give it in PGPASSWORD, \
                     KEYCYCLE_STATE_PASSWORD or state_password_file instead"
                        .to_owned(),
                );
            }
            _ => rest.push(pair),
        }
    }
    let url = if rest.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", rest.join("&"))
    };
    let mut config =
        postgres::Config::from_str(&url).map_err(|e| format!("not a usable URL: {e}"))?;
    if let Some(password) = &options.password {
        config.password(password.as_bytes());
    }
    if config.get_application_name().is_none() {
        config.application_name("keycycle");
    }
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(10));
    }
    config.ssl_mode(match ssl {
        SslMode::Disable => postgres::config::SslMode::Disable,
        SslMode::Prefer => postgres::config::SslMode::Prefer,
        _ => postgres::config::SslMode::Require,
    });
    Ok(Target { config, ssl, root })
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// What every job knows: the database's name for messages and the limits,
/// and the statements prepared on the current connection.
struct Ctx {
    db: String,
    busy_timeout: Duration,
    /// By SQL text. A statement sent as text is parsed and described by
    /// the server before every run, one more round trip each time; a
    /// rotation runs a few dozen, so each is prepared once per connection.
    statements: Mutex<HashMap<String, postgres::Statement>>,
}

/// The query methods of a transaction, through [`Ctx::statements`].
trait Prepared {
    fn exec(&mut self, ctx: &Ctx, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Res<u64>;
    fn rows(&mut self, ctx: &Ctx, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Res<Vec<Row>>;
    fn row(&mut self, ctx: &Ctx, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Res<Row>;
    fn row_opt(&mut self, ctx: &Ctx, sql: &str, params: &[&(dyn ToSql + Sync)])
    -> Res<Option<Row>>;
}

impl Prepared for Transaction<'_> {
    fn exec(&mut self, ctx: &Ctx, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Res<u64> {
        let statement = ctx.statement(self, sql)?;
        Ok(self.execute(&statement, params)?)
    }

    fn rows(&mut self, ctx: &Ctx, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Res<Vec<Row>> {
        let statement = ctx.statement(self, sql)?;
        Ok(self.query(&statement, params)?)
    }

    fn row(&mut self, ctx: &Ctx, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Res<Row> {
        let statement = ctx.statement(self, sql)?;
        Ok(self.query_one(&statement, params)?)
    }

    fn row_opt(
        &mut self,
        ctx: &Ctx,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Res<Option<Row>> {
        let statement = ctx.statement(self, sql)?;
        Ok(self.query_opt(&statement, params)?)
    }
}

impl Ctx {
    /// `sql` prepared on this connection, once.
    fn statement(&self, tx: &mut Transaction<'_>, sql: &str) -> Res<postgres::Statement> {
        if let Some(s) = self.statements().get(sql) {
            return Ok(s.clone());
        }
        let prepared = tx.prepare(sql)?;
        self.statements().insert(sql.to_owned(), prepared.clone());
        Ok(prepared)
    }

    fn statements(&self) -> std::sync::MutexGuard<'_, HashMap<String, postgres::Statement>> {
        self.statements.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn not_ours(&self, problem: &str) -> StateError {
        StateError::NotStateDatabase {
            db: self.db.clone(),
            problem: problem.to_owned(),
        }
    }

    fn corrupt(&self, problem: String) -> StateError {
        StateError::Corrupt {
            db: self.db.clone(),
            problem,
        }
    }

    fn fail(&self, operation: &'static str, fail: Fail) -> StateError {
        match fail {
            Fail::State(e) => e,
            Fail::Pg(e) => pg_error(&self.db, operation, self.busy_timeout, e),
        }
    }

    fn run_exists(&self, tx: &mut Transaction<'_>, run_id: &str) -> Res<()> {
        if tx
            .row_opt(self, "SELECT 1 FROM runs WHERE run_id = $1", &[&run_id])?
            .is_some()
        {
            Ok(())
        } else {
            Err(StateError::RunNotFound {
                db: self.db.clone(),
                run_id: run_id.to_owned(),
            }
            .into())
        }
    }
}

/// A failure inside a job, before it is told which operation it was.
enum Fail {
    Pg(postgres::Error),
    State(StateError),
}

impl From<postgres::Error> for Fail {
    fn from(e: postgres::Error) -> Fail {
        Fail::Pg(e)
    }
}

impl From<StateError> for Fail {
    fn from(e: StateError) -> Fail {
        Fail::State(e)
    }
}

type Res<T> = Result<T, Fail>;

/// The connection thread's side: the connection, opened again when lost.
struct Conn {
    ctx: Ctx,
    target: Target,
    client: Option<Client>,
}

impl Conn {
    fn client(&mut self) -> Result<&mut Client, StateError> {
        Conn::connected(&self.ctx, &self.target, &mut self.client)
    }

    fn connected<'c>(
        ctx: &Ctx,
        target: &Target,
        slot: &'c mut Option<Client>,
    ) -> Result<&'c mut Client, StateError> {
        if slot.as_ref().is_none_or(Client::is_closed) {
            *slot = None;
            // Statements belong to the connection that prepared them.
            ctx.statements().clear();
            let client = connect(target).map_err(|e| match e {
                Fail::State(StateError::Invalid {
                    operation, problem, ..
                }) => StateError::Invalid {
                    db: ctx.db.clone(),
                    operation,
                    problem,
                },
                Fail::State(e) => e,
                Fail::Pg(e) => StateError::Backend {
                    db: ctx.db.clone(),
                    operation: "connect",
                    source: Box::new(e),
                },
            })?;
            *slot = Some(client);
        }
        Ok(slot.as_mut().expect("connected just above"))
    }

    /// Runs `work` in one transaction at `isolation`, again from the start
    /// after a serialization failure or deadlock, until the busy timeout.
    fn transaction<R>(
        &mut self,
        isolation: IsolationLevel,
        durability: Durability,
        operation: &'static str,
        work: &dyn Fn(&mut Transaction<'_>, &Ctx) -> Res<R>,
    ) -> Result<R, StateError> {
        let started = Instant::now();
        let mut pause = Duration::from_millis(2);
        loop {
            let busy = self.ctx.busy_timeout;
            let ctx = &self.ctx;
            let client = Conn::connected(ctx, &self.target, &mut self.client)?;
            let attempt = (|| -> Res<R> {
                let mut tx = client
                    .build_transaction()
                    .isolation_level(isolation)
                    .read_only(matches!(isolation, IsolationLevel::RepeatableRead))
                    .start()?;
                if durability == Durability::Grouped {
                    tx.batch_execute("SET LOCAL synchronous_commit = off")?;
                }
                let result = work(&mut tx, ctx)?;
                tx.commit()?;
                Ok(result)
            })();
            match attempt {
                Err(Fail::Pg(e)) if retryable(&e) && started.elapsed() < busy => {
                    // Another runner's transaction won this round; run ours
                    // again on what it left, after a short, growing pause
                    // with jitter so the losers do not collide again.
                    let jitter = Duration::from_micros(rand::random::<u64>() % 2_000);
                    std::thread::sleep(pause + jitter);
                    pause = (pause * 2).min(Duration::from_millis(100));
                }
                Err(Fail::Pg(e)) if retryable(&e) => {
                    return Err(StateError::Busy {
                        db: self.ctx.db.clone(),
                        operation,
                        waited_ms: u64::try_from(busy.as_millis()).unwrap_or(u64::MAX),
                    });
                }
                other => return other.map_err(|f| self.ctx.fail(operation, f)),
            }
        }
    }
}

fn retryable(e: &postgres::Error) -> bool {
    matches!(
        e.code(),
        Some(c) if *c == SqlState::T_R_SERIALIZATION_FAILURE || *c == SqlState::T_R_DEADLOCK_DETECTED
    )
}

fn connect(target: &Target) -> Res<Client> {
    match tls::client_config(target.ssl, target.root.as_ref()) {
        Err(problem) => Err(StateError::Invalid {
            db: String::new(),
            operation: "connect",
            problem,
        }
        .into()),
        Ok(None) => Ok(target.config.connect(NoTls)?),
        Ok(Some(tls)) => Ok(target
            .config
            .connect(tokio_postgres_rustls::MakeRustlsConnect::new(tls))?),
    }
}

type Job = Box<dyn FnOnce(&mut Conn) + Send>;

/// A handle on the run state in one PostgreSQL database. See the module
/// documentation for how concurrency and durability work.
pub struct PostgresState {
    db: String,
    counters: Arc<Counters>,
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
}

impl fmt::Debug for PostgresState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresState")
            .field("db", &self.db)
            .finish_non_exhaustive()
    }
}

impl Drop for PostgresState {
    fn drop(&mut self) {
        // Closing the channel ends the thread, which closes the connection.
        drop(self.jobs.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl PostgresState {
    /// Connects, and brings the schema to [`PG_SCHEMA_VERSION`] (or
    /// refuses a newer one).
    pub fn open(options: &PgOptions) -> Result<PostgresState, StateError> {
        let db = options.display();
        let target = parse_target(options).map_err(|problem| StateError::Invalid {
            db: db.clone(),
            operation: "open the state database",
            problem,
        })?;
        let (jobs, queue) = mpsc::channel::<Job>();
        let mut conn = Conn {
            ctx: Ctx {
                db: db.clone(),
                busy_timeout: options.busy_timeout,
                statements: Mutex::default(),
            },
            target,
            client: None,
        };
        let thread = std::thread::Builder::new()
            .name("keycycle-postgres".to_owned())
            .spawn(move || {
                for job in queue {
                    // A job that panics loses its answer (its caller gets
                    // an error); the connection serves the next one.
                    let _ = std::panic::catch_unwind(AssertUnwindSafe(|| job(&mut conn)));
                }
            })
            .map_err(|source| StateError::Io {
                db: db.clone(),
                action: "start its connection thread",
                source,
            })?;
        let state = PostgresState {
            counters: Counters::for_url(&options.url),
            db,
            jobs: Some(jobs),
            thread: Some(thread),
        };
        state.call(|conn| {
            conn.client()?;
            migrate(conn)
        })?;
        Ok(state)
    }

    /// Runs `job` on the connection thread and waits for its answer.
    fn call<R: Send + 'static>(
        &self,
        job: impl FnOnce(&mut Conn) -> Result<R, StateError> + Send + 'static,
    ) -> Result<R, StateError> {
        let (answer, wait) = mpsc::sync_channel(1);
        let lost = || StateError::Backend {
            db: self.db.clone(),
            operation: "reach its connection",
            source: "the connection's thread stopped".into(),
        };
        self.jobs
            .as_ref()
            .ok_or_else(lost)?
            .send(Box::new(move |conn: &mut Conn| {
                let _ = answer.send(job(conn));
            }))
            .map_err(|_| lost())?;
        wait.recv().map_err(|_| lost())?
    }

    fn write<R: Send + 'static>(
        &self,
        operation: &'static str,
        work: impl Fn(&mut Transaction<'_>, &Ctx) -> Res<R> + Send + 'static,
    ) -> Result<R, StateError> {
        self.write_with(Durability::Durable, operation, work)
    }

    fn write_with<R: Send + 'static>(
        &self,
        durability: Durability,
        operation: &'static str,
        work: impl Fn(&mut Transaction<'_>, &Ctx) -> Res<R> + Send + 'static,
    ) -> Result<R, StateError> {
        // Every grouped commit counted before this durable one is in the
        // WAL before it, so its synchronous commit covers them.
        let covers = self.counters.grouped.load(Ordering::SeqCst);
        let result = self.call(move |conn| {
            conn.transaction(IsolationLevel::Serializable, durability, operation, &work)
        })?;
        match durability {
            Durability::Grouped => {
                self.counters.grouped.fetch_add(1, Ordering::SeqCst);
            }
            Durability::Durable => {
                self.counters.synced.fetch_max(covers, Ordering::SeqCst);
            }
        }
        Ok(result)
    }

    fn read<R: Send + 'static>(
        &self,
        operation: &'static str,
        work: impl Fn(&mut Transaction<'_>, &Ctx) -> Res<R> + Send + 'static,
    ) -> Result<R, StateError> {
        // One snapshot for the whole read, so it sees one moment.
        self.call(move |conn| {
            conn.transaction(
                IsolationLevel::RepeatableRead,
                Durability::Durable,
                operation,
                &work,
            )
        })
    }

    /// Takes a run's lease unless the one that stands holds against
    /// `give_way`.
    fn take_lease(&self, lease: &RunLease, give_way: GiveWay) -> Result<LeaseAttempt, StateError> {
        let lease = lease.clone();
        self.write("take a run's lease", move |tx, ctx| {
            if let Some(existing) = load_lease(ctx, tx, &lease.run_id)?
                && lease_stands(&existing, &lease.holder, &give_way)
            {
                return Ok(LeaseAttempt::HeldBy(existing));
            }
            tx.exec(
                ctx,
                "INSERT INTO run_leases (run_id, holder, host, pid, lease_until) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (run_id) DO UPDATE SET \
                 holder = excluded.holder, host = excluded.host, pid = excluded.pid, \
                 lease_until = excluded.lease_until",
                &[
                    &lease.run_id,
                    &lease.holder,
                    &lease.host,
                    &i64::from(lease.pid),
                    &lease.lease_until,
                ],
            )?;
            Ok(LeaseAttempt::Taken)
        })
    }

    /// The schema version of the database, for `keycycle doctor`.
    pub fn schema_version(&self) -> Result<i64, StateError> {
        self.read("read the schema version", |tx, _| {
            Ok(tx
                .query_one("SELECT coalesce(max(version), 0) FROM schema_version", &[])?
                .get::<_, i64>(0))
        })
    }
}

/// Brings the schema to [`PG_SCHEMA_VERSION`], under an advisory lock so
/// runners starting together take turns.
fn migrate(conn: &mut Conn) -> Result<(), StateError> {
    let operation = "create or upgrade the schema";
    conn.transaction(
        IsolationLevel::ReadCommitted,
        Durability::Durable,
        operation,
        &|tx, ctx| {
            tx.exec(ctx, "SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
            let versioned: bool = tx
                .query_one("SELECT to_regclass('schema_version') IS NOT NULL", &[])?
                .get(0);
            let version: i64 = if versioned {
                tx.row(
                    ctx,
                    "SELECT coalesce(max(version), 0) FROM schema_version",
                    &[],
                )?
                .get(0)
            } else {
                let ours: bool = tx
                    .query_one("SELECT to_regclass('runs') IS NOT NULL", &[])?
                    .get(0);
                if ours {
                    return Err(ctx
                        .not_ours("it has a `runs` table but no keycycle schema_version")
                        .into());
                }
                tx.batch_execute(
                    "CREATE TABLE schema_version (\
                     version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)",
                )?;
                0
            };
            if version > PG_SCHEMA_VERSION {
                return Err(StateError::NewerSchema {
                    db: ctx.db.clone(),
                    found: version,
                    supported: PG_SCHEMA_VERSION,
                }
                .into());
            }
            for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
                tx.batch_execute(sql)?;
                tx.exec(
                    ctx,
                    "INSERT INTO schema_version (version, applied_at) VALUES ($1, $2)",
                    &[&(i as i64 + 1), &now_ms()],
                )?;
            }
            Ok(())
        },
    )
}

/// Turns a driver error into a [`StateError`] naming the database and the
/// operation; a lock wait that timed out becomes [`StateError::Busy`].
fn pg_error(
    db: &str,
    operation: &'static str,
    busy_timeout: Duration,
    e: postgres::Error,
) -> StateError {
    if e.code() == Some(&SqlState::LOCK_NOT_AVAILABLE) {
        return StateError::Busy {
            db: db.to_owned(),
            operation,
            waited_ms: u64::try_from(busy_timeout.as_millis()).unwrap_or(u64::MAX),
        };
    }
    StateError::Backend {
        db: db.to_owned(),
        operation,
        source: Box::new(e),
    }
}

fn run_record(ctx: &Ctx, tx: &mut Transaction<'_>, row: &Row) -> Res<RunRecord> {
    let run_id: String = row.try_get(0)?;
    let corrupt = |what: &str| ctx.corrupt(format!("run `{run_id}` has {what}"));
    let params = serde_json::from_str(&row.try_get::<_, String>(3)?)
        .map_err(|_| corrupt("parameters that are not a JSON object of strings"))?;
    let plugins: Vec<PluginInfo> = serde_json::from_str(&row.try_get::<_, String>(8)?)
        .map_err(|_| corrupt("a plugin list that is not valid JSON"))?;
    let state: String = row.try_get(10)?;
    let state =
        RunState::parse(&state).ok_or_else(|| corrupt(&format!("an unknown state `{state}`")))?;
    let credentials = tx
        .query(
            "SELECT credential FROM run_credentials WHERE run_id = $1 \
             ORDER BY first_locked_at, credential",
            &[&run_id],
        )?
        .iter()
        .map(|r| r.try_get(0))
        .collect::<Result<Vec<String>, _>>()?;
    Ok(RunRecord {
        runbook_path: row.try_get(1)?,
        runbook_sha256: row.try_get(2)?,
        params,
        env: row.try_get(4)?,
        dry_run: row.try_get(5)?,
        user: row.try_get(6)?,
        host: row.try_get(7)?,
        plugins,
        started_at: row.try_get(9)?,
        state,
        finished_at: row.try_get(11)?,
        detail: row.try_get(12)?,
        credentials,
        run_id,
    })
}

fn deferred_record(ctx: &Ctx, row: &Row) -> Res<DeferredRecord> {
    let id: String = row.try_get(0)?;
    let state: String = row.try_get(8)?;
    let state = DeferredState::parse(&state).ok_or_else(|| {
        ctx.corrupt(format!(
            "deferred action `{id}` has an unknown state `{state}`"
        ))
    })?;
    let attempts = u32::try_from(row.try_get::<_, i64>(9)?).map_err(|_| {
        ctx.corrupt(format!(
            "deferred action `{id}` has an impossible attempt count"
        ))
    })?;
    Ok(DeferredRecord {
        run_id: row.try_get(1)?,
        credential: row.try_get(2)?,
        description: row.try_get(3)?,
        plugin: row.try_get(4)?,
        operation: row.try_get(5)?,
        input: row.try_get(6)?,
        due_at: row.try_get(7)?,
        state,
        attempts,
        next_attempt_at: row.try_get(10)?,
        claimed_by: row.try_get(11)?,
        lease_until: row.try_get(12)?,
        last_error: row.try_get(13)?,
        created_at: row.try_get(14)?,
        finished_at: row.try_get(15)?,
        note: row.try_get(16)?,
        id,
    })
}

fn load_action(ctx: &Ctx, tx: &mut Transaction<'_>, id: &str) -> Res<DeferredRecord> {
    match tx.row_opt(
        ctx,
        &format!("SELECT {DEFERRED_COLUMNS} FROM deferred WHERE id = $1"),
        &[&id],
    )? {
        Some(row) => deferred_record(ctx, &row),
        None => Err(StateError::ActionNotFound {
            db: ctx.db.clone(),
            id: id.to_owned(),
        }
        .into()),
    }
}

fn claimed(ctx: &Ctx, tx: &mut Transaction<'_>, id: &str, claimer: &str) -> Res<DeferredRecord> {
    let action = load_action(ctx, tx, id)?;
    check_claim(
        &ctx.db,
        id,
        claimer,
        action.state,
        action.claimed_by.as_deref(),
    )?;
    Ok(action)
}

fn approval_record(ctx: &Ctx, row: &Row) -> Res<ApprovalRecord> {
    let list = |i: usize| -> Res<Vec<String>> {
        serde_json::from_str(&row.try_get::<_, String>(i)?)
            .map_err(|_| ctx.not_ours("a change request's list is not JSON").into())
    };
    let state: String = row.try_get(9)?;
    Ok(ApprovalRecord {
        request: NewApproval {
            id: row.try_get(0)?,
            run_id: row.try_get(1)?,
            title: row.try_get(2)?,
            summary: row.try_get(3)?,
            environments: list(4)?,
            approvers: list(5)?,
            requested_by: row.try_get(6)?,
            requested_host: row.try_get(7)?,
            requested_at: row.try_get(8)?,
        },
        state: ApprovalState::parse(&state)
            .ok_or_else(|| ctx.not_ours("a change request has an unknown state"))?,
        decided_by: row.try_get(10)?,
        decided_host: row.try_get(11)?,
        decided_at: row.try_get(12)?,
        comment: row.try_get(13)?,
    })
}

fn load_approval(ctx: &Ctx, tx: &mut Transaction<'_>, id: &str) -> Res<Option<ApprovalRecord>> {
    tx.row_opt(
        ctx,
        &format!("SELECT {APPROVAL_COLUMNS} FROM approvals WHERE id = $1"),
        &[&id],
    )?
    .map(|row| approval_record(ctx, &row))
    .transpose()
}

fn load_credential(ctx: &Ctx, tx: &mut Transaction<'_>, id: &str) -> Res<Option<CredentialRecord>> {
    tx.row_opt(ctx, "SELECT record FROM credentials WHERE id = $1", &[&id])?
        .map(|row| credential_record(ctx, &row.try_get::<_, String>(0)?))
        .transpose()
}

fn credential_record(ctx: &Ctx, text: &str) -> Res<CredentialRecord> {
    serde_json::from_str(text).map_err(|_| ctx.not_ours("a credential's record is not JSON").into())
}

fn save_credential(ctx: &Ctx, tx: &mut Transaction<'_>, record: &CredentialRecord) -> Res<()> {
    let text = serde_json::to_string(record)
        .map_err(|_| ctx.not_ours("a credential's record cannot be written as JSON"))?;
    tx.exec(
        ctx,
        "INSERT INTO credentials (id, record) VALUES ($1, $2) \
         ON CONFLICT (id) DO UPDATE SET record = excluded.record",
        &[&record.id, &text],
    )?;
    Ok(())
}

fn set_run_state(
    ctx: &Ctx,
    tx: &mut Transaction<'_>,
    run_id: &str,
    state: RunState,
    detail: Option<&str>,
) -> Res<()> {
    let changed = tx.exec(
        ctx,
        "UPDATE runs SET state = $2, finished_at = $3, detail = $4 WHERE run_id = $1",
        &[
            &run_id,
            &state.as_str(),
            &state.is_finished().then(now_ms),
            &detail,
        ],
    )?;
    if changed == 0 {
        return Err(StateError::RunNotFound {
            db: ctx.db.clone(),
            run_id: run_id.to_owned(),
        }
        .into());
    }
    Ok(())
}

fn release_locks_of(tx: &mut Transaction<'_>, run_id: &str) -> Res<Vec<String>> {
    let mut credentials = tx
        .query(
            "DELETE FROM locks WHERE run_id = $1 RETURNING credential",
            &[&run_id],
        )?
        .iter()
        .map(|r| r.try_get(0))
        .collect::<Result<Vec<String>, _>>()?;
    credentials.sort();
    Ok(credentials)
}

fn lock_held(tx: &mut Transaction<'_>, credential: &str) -> Res<Option<LockRecord>> {
    Ok(tx
        .query_opt(
            "SELECT run_id, acquired_at FROM locks WHERE credential = $1",
            &[&credential],
        )?
        .map(|r| -> Result<LockRecord, postgres::Error> {
            Ok(LockRecord {
                credential: credential.to_owned(),
                run_id: r.try_get(0)?,
                acquired_at: r.try_get(1)?,
            })
        })
        .transpose()?)
}

fn load_lease(ctx: &Ctx, tx: &mut Transaction<'_>, run_id: &str) -> Res<Option<RunLease>> {
    tx.row_opt(
        ctx,
        "SELECT holder, host, pid, lease_until FROM run_leases WHERE run_id = $1",
        &[&run_id],
    )?
    .map(|r| -> Res<RunLease> {
        Ok(RunLease {
            run_id: run_id.to_owned(),
            holder: r.try_get(0)?,
            host: r.try_get(1)?,
            pid: u32::try_from(r.try_get::<_, i64>(2)?).unwrap_or(0),
            lease_until: r.try_get(3)?,
        })
    })
    .transpose()
}

fn seq_param(ctx: &Ctx, operation: &'static str, seq: u64) -> Res<i64> {
    i64::try_from(seq).map_err(|_| {
        StateError::Invalid {
            db: ctx.db.clone(),
            operation,
            problem: format!("sequence number {seq} is beyond what the journal can hold"),
        }
        .into()
    })
}

fn seq_value(ctx: &Ctx, run_id: &str, seq: i64) -> Res<u64> {
    u64::try_from(seq).map_err(|_| {
        ctx.corrupt(format!(
            "run `{run_id}` has a negative effect sequence number {seq}"
        ))
        .into()
    })
}

fn to_json(ctx: &Ctx, list: &[String]) -> Res<String> {
    serde_json::to_string(list).map_err(|_| ctx.not_ours("a list cannot be written as JSON").into())
}

impl StateStore for PostgresState {
    fn location(&self) -> String {
        self.db.clone()
    }

    fn create_run(&self, run: &NewRun) -> Result<(), StateError> {
        let operation = "create a run";
        require(
            &self.db,
            operation,
            &[("the run id is empty", !run.run_id.is_empty())],
        )?;
        let params = serde_json::to_string(&run.params).map_err(|e| StateError::Invalid {
            db: self.db.clone(),
            operation,
            problem: format!("its parameters cannot be stored as JSON: {e}"),
        })?;
        let plugins = serde_json::to_string(&run.plugins).map_err(|e| StateError::Invalid {
            db: self.db.clone(),
            operation,
            problem: format!("its plugin list cannot be stored as JSON: {e}"),
        })?;
        let run = run.clone();
        self.write(operation, move |tx, ctx| {
            let inserted = tx.exec(
                ctx,
                &format!(
                    "INSERT INTO runs ({RUN_COLUMNS}) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, NULL, NULL) \
                     ON CONFLICT (run_id) DO NOTHING"
                ),
                &[
                    &run.run_id,
                    &run.runbook_path,
                    &run.runbook_sha256,
                    &params,
                    &run.env,
                    &run.dry_run,
                    &run.user,
                    &run.host,
                    &plugins,
                    &run.started_at,
                    &RunState::Running.as_str(),
                ],
            )?;
            if inserted == 0 {
                return Err(StateError::RunExists {
                    db: ctx.db.clone(),
                    run_id: run.run_id.clone(),
                }
                .into());
            }
            Ok(())
        })
    }

    fn run(&self, run_id: &str) -> Result<Option<RunRecord>, StateError> {
        let run_id = run_id.to_owned();
        self.read("read a run", move |tx, ctx| {
            match tx.row_opt(
                ctx,
                &format!("SELECT {RUN_COLUMNS} FROM runs WHERE run_id = $1"),
                &[&run_id],
            )? {
                Some(row) => run_record(ctx, tx, &row).map(Some),
                None => Ok(None),
            }
        })
    }

    fn list_runs(&self, filter: &RunFilter) -> Result<Vec<RunRecord>, StateError> {
        let filter = filter.clone();
        self.read("list runs", move |tx, ctx| {
            let mut sql = format!("SELECT {RUN_COLUMNS} FROM runs WHERE true");
            let mut args: Vec<Box<dyn ToSql + Sync>> = Vec::new();
            let mut bind = |sql: &mut String, clause: &str, value: Box<dyn ToSql + Sync>| {
                args.push(value);
                sql.push_str(&clause.replace('?', &format!("${}", args.len())));
            };
            if filter.unfinished_only {
                bind(
                    &mut sql,
                    " AND state = ?",
                    Box::new(RunState::Running.as_str()),
                );
            }
            if let Some(credential) = &filter.credential {
                bind(
                    &mut sql,
                    " AND run_id IN (SELECT run_id FROM run_credentials WHERE credential = ?)",
                    Box::new(credential.clone()),
                );
            }
            if let Some(since) = filter.since {
                bind(&mut sql, " AND started_at >= ?", Box::new(since));
            }
            if !filter.states.is_empty() {
                let states: Vec<String> = filter
                    .states
                    .iter()
                    .map(|s| s.as_str().to_owned())
                    .collect();
                bind(&mut sql, " AND state = ANY(?)", Box::new(states));
            }
            sql.push_str(" ORDER BY started_at DESC, run_id DESC");
            if let Some(limit) = filter.limit {
                let limit = i64::try_from(limit).unwrap_or(i64::MAX);
                bind(&mut sql, " LIMIT ?", Box::new(limit));
            }
            let refs: Vec<&(dyn ToSql + Sync)> = args.iter().map(|a| a.as_ref()).collect();
            let rows = tx.rows(ctx, &sql, &refs)?;
            rows.iter().map(|row| run_record(ctx, tx, row)).collect()
        })
    }

    fn finish_run(
        &self,
        run_id: &str,
        state: RunState,
        detail: Option<&str>,
    ) -> Result<(), StateError> {
        let (run_id, detail) = (run_id.to_owned(), detail.map(str::to_owned));
        self.write("finish a run", move |tx, ctx| {
            set_run_state(ctx, tx, &run_id, state, detail.as_deref())
        })
    }

    fn append_event(&self, run_id: &str, event: &RunEvent) -> Result<(), StateError> {
        let (run_id, event) = (run_id.to_owned(), event.clone());
        self.write("append a run event", move |tx, ctx| {
            ctx.run_exists(tx, &run_id)?;
            tx.exec(
                ctx,
                "INSERT INTO run_events (run_id, at, kind, message) VALUES ($1, $2, $3, $4)",
                &[&run_id, &event.at, &event.kind, &event.message],
            )?;
            Ok(())
        })
    }

    fn events(&self, run_id: &str) -> Result<Vec<RunEvent>, StateError> {
        let run_id = run_id.to_owned();
        self.read("read run events", move |tx, ctx| {
            ctx.run_exists(tx, &run_id)?;
            let rows = tx.rows(
                ctx,
                "SELECT at, kind, message FROM run_events WHERE run_id = $1 ORDER BY id",
                &[&run_id],
            )?;
            rows.iter()
                .map(|r| {
                    Ok(RunEvent {
                        at: r.try_get(0)?,
                        kind: r.try_get(1)?,
                        message: r.try_get(2)?,
                    })
                })
                .collect()
        })
    }

    fn begin_effect_with(
        &self,
        run_id: &str,
        intent: &EffectIntent,
        durability: Durability,
    ) -> Result<(), StateError> {
        let operation = "begin an effect";
        let (run_id, intent) = (run_id.to_owned(), intent.clone());
        self.write_with(durability, operation, move |tx, ctx| {
            ctx.run_exists(tx, &run_id)?;
            let last: Option<i64> = tx
                .query_one("SELECT max(seq) FROM journal WHERE run_id = $1", &[&run_id])?
                .try_get(0)?;
            let expected = match last {
                None => FIRST_SEQ,
                Some(last) => seq_value(ctx, &run_id, last)? + 1,
            };
            if intent.seq != expected {
                return Err(StateError::SeqOutOfOrder {
                    db: ctx.db.clone(),
                    run_id: run_id.clone(),
                    expected,
                    got: intent.seq,
                }
                .into());
            }
            tx.exec(
                ctx,
                "INSERT INTO journal (run_id, seq, kind, name, request_fingerprint, \
                 request_summary, mutates, started_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                &[
                    &run_id,
                    &seq_param(ctx, operation, intent.seq)?,
                    &intent.kind,
                    &intent.name,
                    &intent.request_fingerprint,
                    &intent.request_summary,
                    &intent.mutates,
                    &intent.started_at,
                ],
            )?;
            Ok(())
        })
    }

    fn finish_effect_with(
        &self,
        run_id: &str,
        seq: u64,
        outcome: &EffectOutcome,
        durability: Durability,
    ) -> Result<(), StateError> {
        let operation = "finish an effect";
        let (run_id, outcome) = (run_id.to_owned(), outcome.clone());
        self.write_with(durability, operation, move |tx, ctx| {
            let seq_param = seq_param(ctx, operation, seq)?;
            let open: Option<bool> = tx
                .query_opt(
                    "SELECT ok IS NULL FROM journal WHERE run_id = $1 AND seq = $2",
                    &[&run_id, &seq_param],
                )?
                .map(|r| r.try_get(0))
                .transpose()?;
            match open {
                None => {
                    ctx.run_exists(tx, &run_id)?;
                    Err(StateError::EffectNotFound {
                        db: ctx.db.clone(),
                        run_id: run_id.clone(),
                        seq,
                    }
                    .into())
                }
                Some(false) => Err(StateError::EffectFinished {
                    db: ctx.db.clone(),
                    run_id: run_id.clone(),
                    seq,
                }
                .into()),
                Some(true) => {
                    tx.exec(
                        ctx,
                        "UPDATE journal SET ok = $3, result = $4, error_kind = $5, error = $6, \
                         finished_at = $7 WHERE run_id = $1 AND seq = $2",
                        &[
                            &run_id,
                            &seq_param,
                            &outcome.ok,
                            &outcome.result,
                            &outcome.error_kind,
                            &outcome.error,
                            &outcome.finished_at,
                        ],
                    )?;
                    Ok(())
                }
            }
        })
    }

    fn sync(&self) -> Result<(), StateError> {
        let covers = self.counters.grouped.load(Ordering::SeqCst);
        if self.counters.synced.load(Ordering::SeqCst) >= covers {
            return Ok(());
        }
        // A synchronous commit that writes WAL: flushing the WAL up to it
        // flushes every grouped commit before it (see the module docs).
        self.write("make the journal durable", |tx, ctx| {
            tx.exec(
                ctx,
                "INSERT INTO barriers (backend_pid, n) VALUES (pg_backend_pid(), 1) \
                 ON CONFLICT (backend_pid) DO UPDATE SET n = barriers.n + 1",
                &[],
            )?;
            Ok(())
        })?;
        self.counters.synced.fetch_max(covers, Ordering::SeqCst);
        Ok(())
    }

    fn effects(&self, run_id: &str) -> Result<Vec<EffectRecord>, StateError> {
        let run_id = run_id.to_owned();
        self.read("read the journal", move |tx, ctx| {
            ctx.run_exists(tx, &run_id)?;
            let rows = tx.rows(
                ctx,
                "SELECT seq, kind, name, request_fingerprint, request_summary, mutates, \
                 started_at, ok, result, error_kind, error, finished_at \
                 FROM journal WHERE run_id = $1 ORDER BY seq",
                &[&run_id],
            )?;
            rows.iter()
                .map(|r| {
                    let intent = EffectIntent {
                        seq: seq_value(ctx, &run_id, r.try_get(0)?)?,
                        kind: r.try_get(1)?,
                        name: r.try_get(2)?,
                        request_fingerprint: r.try_get(3)?,
                        request_summary: r.try_get(4)?,
                        mutates: r.try_get(5)?,
                        started_at: r.try_get(6)?,
                    };
                    let ok: Option<bool> = r.try_get(7)?;
                    let finished_at: Option<i64> = r.try_get(11)?;
                    let outcome = match (ok, finished_at) {
                        (Some(ok), Some(finished_at)) => Some(EffectOutcome {
                            ok,
                            result: r.try_get::<_, Option<String>>(8)?.unwrap_or_default(),
                            error_kind: r.try_get(9)?,
                            error: r.try_get(10)?,
                            finished_at,
                        }),
                        _ => None,
                    };
                    Ok(EffectRecord { intent, outcome })
                })
                .collect()
        })
    }

    fn acquire_lock(&self, credential: &str, run_id: &str) -> Result<LockAttempt, StateError> {
        let operation = "acquire a lock";
        require(
            &self.db,
            operation,
            &[("the credential name is empty", !credential.is_empty())],
        )?;
        let (credential, run_id) = (credential.to_owned(), run_id.to_owned());
        self.write(operation, move |tx, ctx| {
            ctx.run_exists(tx, &run_id)?;
            if let Some(held) = lock_held(tx, &credential)? {
                return Ok(if held.run_id == run_id {
                    LockAttempt::AlreadyHeld
                } else {
                    LockAttempt::HeldBy(held)
                });
            }
            let now = now_ms();
            // Two runners that both found the lock free both insert; the
            // primary key and the serializable transaction let one commit,
            // and the other runs again and finds the lock held.
            tx.exec(
                ctx,
                "INSERT INTO locks (credential, run_id, acquired_at) VALUES ($1, $2, $3)",
                &[&credential, &run_id, &now],
            )?;
            tx.exec(
                ctx,
                "INSERT INTO run_credentials (run_id, credential, first_locked_at) \
                 VALUES ($1, $2, $3) ON CONFLICT (run_id, credential) DO NOTHING",
                &[&run_id, &credential, &now],
            )?;
            Ok(LockAttempt::Acquired)
        })
    }

    fn release_run_locks(&self, run_id: &str) -> Result<Vec<String>, StateError> {
        let run_id = run_id.to_owned();
        self.write("release a run's locks", move |tx, ctx| {
            ctx.run_exists(tx, &run_id)?;
            release_locks_of(tx, &run_id)
        })
    }

    fn end_run(
        &self,
        run_id: &str,
        state: RunState,
        detail: Option<&str>,
    ) -> Result<Vec<String>, StateError> {
        let (run_id, detail) = (run_id.to_owned(), detail.map(str::to_owned));
        self.write("end a run and release its locks", move |tx, ctx| {
            set_run_state(ctx, tx, &run_id, state, detail.as_deref())?;
            release_locks_of(tx, &run_id)
        })
    }

    fn release_lock(&self, credential: &str) -> Result<Option<LockRecord>, StateError> {
        let credential = credential.to_owned();
        self.write("release a lock", move |tx, ctx| {
            let held = lock_held(tx, &credential)?;
            if held.is_some() {
                tx.exec(
                    ctx,
                    "DELETE FROM locks WHERE credential = $1",
                    &[&credential],
                )?;
            }
            Ok(held)
        })
    }

    fn locks(&self) -> Result<Vec<LockRecord>, StateError> {
        self.read("list locks", |tx, ctx| {
            tx.rows(
                ctx,
                "SELECT credential, run_id, acquired_at FROM locks ORDER BY credential",
                &[],
            )?
            .iter()
            .map(|r| {
                Ok(LockRecord {
                    credential: r.try_get(0)?,
                    run_id: r.try_get(1)?,
                    acquired_at: r.try_get(2)?,
                })
            })
            .collect()
        })
    }

    fn schedule(&self, action: &NewDeferred) -> Result<String, StateError> {
        let id = action_id(action);
        let (action, id2) = (action.clone(), id.clone());
        self.write("schedule a deferred action", move |tx, ctx| {
            ctx.run_exists(tx, &action.run_id)?;
            tx.exec(
                ctx,
                &format!(
                    "INSERT INTO deferred ({DEFERRED_COLUMNS}) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 0, $8, NULL, NULL, NULL, $10, \
                     NULL, NULL) \
                     ON CONFLICT (id) DO NOTHING"
                ),
                &[
                    &id2,
                    &action.run_id,
                    &action.credential,
                    &action.description,
                    &action.plugin,
                    &action.operation,
                    &action.input,
                    &action.due_at,
                    &DeferredState::Pending.as_str(),
                    &now_ms(),
                ],
            )?;
            Ok(())
        })?;
        Ok(id)
    }

    fn deferred(&self, filter: &DeferredFilter) -> Result<Vec<DeferredRecord>, StateError> {
        let filter = filter.clone();
        self.read("list deferred actions", move |tx, ctx| {
            let rows = match &filter.run_id {
                Some(run_id) => tx.rows(
                    ctx,
                    &format!(
                        "SELECT {DEFERRED_COLUMNS} FROM deferred WHERE run_id = $1 \
                         ORDER BY due_at, id"
                    ),
                    &[run_id],
                )?,
                None => tx.rows(
                    ctx,
                    &format!("SELECT {DEFERRED_COLUMNS} FROM deferred ORDER BY due_at, id"),
                    &[],
                )?,
            };
            let mut actions = Vec::with_capacity(rows.len());
            for row in &rows {
                // Filtered here, not in SQL, so an unknown state is
                // reported rather than skipped.
                let action = deferred_record(ctx, row)?;
                if filter.wants(&action) {
                    actions.push(action);
                }
            }
            Ok(actions)
        })
    }

    fn claim_due(
        &self,
        now_ms: i64,
        claimer: &str,
        lease_ms: i64,
    ) -> Result<Option<DeferredRecord>, StateError> {
        let operation = "claim a deferred action";
        require(
            &self.db,
            operation,
            &[
                ("the claimer name is empty", !claimer.is_empty()),
                ("the lease is not positive", lease_ms > 0),
            ],
        )?;
        let claimer = claimer.to_owned();
        self.write(operation, move |tx, ctx| {
            // The row lock makes a second claimer of the same action wait
            // for the first's commit; SERIALIZABLE then sends it round
            // again, to find the action taken.
            let next: Option<String> = tx
                .query_opt(
                    "SELECT id FROM deferred \
                     WHERE (state = $2 AND next_attempt_at <= $1) \
                        OR (state = $3 AND lease_until <= $1) \
                     ORDER BY next_attempt_at, created_at, id LIMIT 1 FOR UPDATE",
                    &[
                        &now_ms,
                        &DeferredState::Pending.as_str(),
                        &DeferredState::Running.as_str(),
                    ],
                )?
                .map(|r| r.try_get(0))
                .transpose()?;
            let Some(id) = next else {
                return Ok(None);
            };
            let before = load_action(ctx, tx, &id)?;
            let last_error = if before.state == DeferredState::Running {
                Some(expired_lease_note(
                    before.claimed_by.as_deref(),
                    before.lease_until,
                ))
            } else {
                before.last_error.clone()
            };
            let attempts = i64::from(before.attempts.saturating_add(1));
            tx.exec(
                ctx,
                "UPDATE deferred SET state = $2, claimed_by = $3, lease_until = $4, \
                 attempts = $5, last_error = $6 WHERE id = $1",
                &[
                    &id,
                    &DeferredState::Running.as_str(),
                    &claimer,
                    &now_ms.saturating_add(lease_ms),
                    &attempts,
                    &last_error,
                ],
            )?;
            load_action(ctx, tx, &id).map(Some)
        })
    }

    fn renew_claim(&self, id: &str, claimer: &str, lease_until: i64) -> Result<(), StateError> {
        let (id, claimer) = (id.to_owned(), claimer.to_owned());
        self.write("renew a deferred action's claim", move |tx, ctx| {
            claimed(ctx, tx, &id, &claimer)?;
            tx.exec(
                ctx,
                "UPDATE deferred SET lease_until = $2 WHERE id = $1",
                &[&id, &lease_until],
            )?;
            Ok(())
        })
    }

    fn complete_action(
        &self,
        id: &str,
        claimer: &str,
        note: Option<&str>,
    ) -> Result<(), StateError> {
        let (id, claimer, note) = (id.to_owned(), claimer.to_owned(), note.map(str::to_owned));
        self.write("complete a deferred action", move |tx, ctx| {
            claimed(ctx, tx, &id, &claimer)?;
            tx.exec(
                ctx,
                "UPDATE deferred SET state = $2, lease_until = NULL, finished_at = $3, \
                 note = $4 WHERE id = $1",
                &[&id, &DeferredState::Done.as_str(), &now_ms(), &note],
            )?;
            Ok(())
        })
    }

    fn fail_action(
        &self,
        id: &str,
        claimer: &str,
        error: &str,
        retry_at_ms: Option<i64>,
    ) -> Result<(), StateError> {
        let (id, claimer, error) = (id.to_owned(), claimer.to_owned(), error.to_owned());
        self.write("record a failed deferred action", move |tx, ctx| {
            claimed(ctx, tx, &id, &claimer)?;
            match retry_at_ms {
                Some(at) => tx.exec(
                    ctx,
                    "UPDATE deferred SET state = $2, next_attempt_at = $3, claimed_by = NULL, \
                     lease_until = NULL, last_error = $4 WHERE id = $1",
                    &[&id, &DeferredState::Pending.as_str(), &at, &error],
                )?,
                None => tx.exec(
                    ctx,
                    "UPDATE deferred SET state = $2, lease_until = NULL, finished_at = $3, \
                     last_error = $4 WHERE id = $1",
                    &[&id, &DeferredState::Failed.as_str(), &now_ms(), &error],
                )?,
            };
            Ok(())
        })
    }

    fn retry_action(&self, id: &str) -> Result<(), StateError> {
        let id = id.to_owned();
        self.write("retry a deferred action", move |tx, ctx| {
            let action = load_action(ctx, tx, &id)?;
            if action.state != DeferredState::Failed {
                return Err(StateError::NotFailed {
                    db: ctx.db.clone(),
                    id: id.clone(),
                    state: action.state,
                }
                .into());
            }
            tx.exec(
                ctx,
                "UPDATE deferred SET state = $2, claimed_by = NULL, finished_at = NULL \
                 WHERE id = $1",
                &[&id, &DeferredState::Pending.as_str()],
            )?;
            Ok(())
        })
    }

    fn request_approval(&self, request: &NewApproval) -> Result<ApprovalRecord, StateError> {
        let request = request.clone();
        self.write("record a change request", move |tx, ctx| {
            ctx.run_exists(tx, &request.run_id)?;
            tx.exec(
                ctx,
                &format!(
                    "INSERT INTO approvals ({APPROVAL_COLUMNS}) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, NULL, NULL, NULL, NULL) \
                     ON CONFLICT (id) DO NOTHING"
                ),
                &[
                    &request.id,
                    &request.run_id,
                    &request.title,
                    &request.summary,
                    &to_json(ctx, &request.environments)?,
                    &to_json(ctx, &request.approvers)?,
                    &request.requested_by,
                    &request.requested_host,
                    &request.requested_at,
                    &ApprovalState::Pending.as_str(),
                ],
            )?;
            load_approval(ctx, tx, &request.id)?.ok_or_else(|| {
                ctx.not_ours("a change request vanished as it was written")
                    .into()
            })
        })
    }

    fn approval(&self, id: &str) -> Result<Option<ApprovalRecord>, StateError> {
        let id = id.to_owned();
        self.read("read a change request", move |tx, ctx| {
            load_approval(ctx, tx, &id)
        })
    }

    fn approvals(&self, pending_only: bool) -> Result<Vec<ApprovalRecord>, StateError> {
        self.read("list change requests", move |tx, ctx| {
            let mut sql = format!("SELECT {APPROVAL_COLUMNS} FROM approvals");
            if pending_only {
                sql.push_str(" WHERE state = 'pending'");
            }
            sql.push_str(" ORDER BY requested_at, id");
            tx.rows(ctx, &sql, &[])?
                .iter()
                .map(|row| approval_record(ctx, row))
                .collect()
        })
    }

    fn decide_approval(
        &self,
        id: &str,
        decision: &ApprovalDecision,
    ) -> Result<ApprovalRecord, StateError> {
        let (id, decision) = (id.to_owned(), decision.clone());
        self.write("decide a change request", move |tx, ctx| {
            let found =
                load_approval(ctx, tx, &id)?.ok_or_else(|| StateError::ApprovalNotFound {
                    db: ctx.db.clone(),
                    id: id.clone(),
                })?;
            let decided = found.decided(&ctx.db, &decision)?;
            tx.exec(
                ctx,
                "UPDATE approvals SET state = $2, decided_by = $3, decided_host = $4, \
                 decided_at = $5, comment = $6 WHERE id = $1 AND state = 'pending'",
                &[
                    &id,
                    &decided.state.as_str(),
                    &decided.decided_by,
                    &decided.decided_host,
                    &decided.decided_at,
                    &decided.comment,
                ],
            )?;
            Ok(decided)
        })
    }

    fn record_rotation(&self, id: &str, outcome: &RotationOutcome) -> Result<(), StateError> {
        let (id, outcome) = (id.to_owned(), outcome.clone());
        self.write("record a credential's rotation", move |tx, ctx| {
            let record =
                load_credential(ctx, tx, &id)?.unwrap_or_else(|| CredentialRecord::new(&id));
            save_credential(ctx, tx, &record.rotated(&outcome))
        })
    }

    fn claim_rotation(
        &self,
        id: &str,
        seen: Option<&str>,
        outcome: &RotationOutcome,
    ) -> Result<RotationClaim, StateError> {
        let (id, seen, outcome) = (id.to_owned(), seen.map(str::to_owned), outcome.clone());
        self.write("claim a credential's rotation", move |tx, ctx| {
            let record = load_credential(ctx, tx, &id)?;
            if !rotation_claimable(record.as_ref(), seen.as_deref()) {
                return Ok(RotationClaim::Taken(Box::new(
                    record.unwrap_or_else(|| CredentialRecord::new(&id)),
                )));
            }
            let record = record.unwrap_or_else(|| CredentialRecord::new(&id));
            save_credential(ctx, tx, &record.rotated(&outcome))?;
            Ok(RotationClaim::Claimed)
        })
    }

    fn record_check(&self, id: &str, outcome: &CheckOutcome) -> Result<(), StateError> {
        let (id, outcome) = (id.to_owned(), outcome.clone());
        self.write("record a credential's check", move |tx, ctx| {
            let record =
                load_credential(ctx, tx, &id)?.unwrap_or_else(|| CredentialRecord::new(&id));
            save_credential(ctx, tx, &record.checked(&outcome))
        })
    }

    fn credential(&self, id: &str) -> Result<Option<CredentialRecord>, StateError> {
        let id = id.to_owned();
        self.read("read a credential's record", move |tx, ctx| {
            load_credential(ctx, tx, &id)
        })
    }

    fn take_run_lease(&self, lease: &RunLease, now_ms: i64) -> Result<LeaseAttempt, StateError> {
        self.take_lease(lease, GiveWay::Ended(now_ms))
    }

    fn take_over_run_lease(
        &self,
        lease: &RunLease,
        read: &RunLease,
    ) -> Result<LeaseAttempt, StateError> {
        self.take_lease(lease, GiveWay::StillIs(read.clone()))
    }

    fn renew_run_lease(
        &self,
        run_id: &str,
        holder: &str,
        lease_until: i64,
    ) -> Result<(), StateError> {
        let (run_id, holder) = (run_id.to_owned(), holder.to_owned());
        self.write("renew a run's lease", move |tx, ctx| {
            let changed = tx.exec(
                ctx,
                "UPDATE run_leases SET lease_until = $3 WHERE run_id = $1 AND holder = $2",
                &[&run_id, &holder, &lease_until],
            )?;
            if changed == 0 {
                let now = load_lease(ctx, tx, &run_id)?;
                return Err(lease_lost(&ctx.db, &run_id, &holder, now.as_ref()).into());
            }
            Ok(())
        })
    }

    fn drop_run_lease(&self, run_id: &str, holder: &str) -> Result<(), StateError> {
        let (run_id, holder) = (run_id.to_owned(), holder.to_owned());
        self.write("give a run's lease up", move |tx, ctx| {
            tx.exec(
                ctx,
                "DELETE FROM run_leases WHERE run_id = $1 AND holder = $2",
                &[&run_id, &holder],
            )?;
            Ok(())
        })
    }

    fn run_lease(&self, run_id: &str) -> Result<Option<RunLease>, StateError> {
        let run_id = run_id.to_owned();
        self.read("read a run's lease", move |tx, ctx| {
            load_lease(ctx, tx, &run_id)
        })
    }

    fn credentials(&self) -> Result<Vec<CredentialRecord>, StateError> {
        self.read("list the credentials' records", |tx, ctx| {
            tx.rows(ctx, "SELECT record FROM credentials ORDER BY id", &[])?
                .iter()
                .map(|r| credential_record(ctx, &r.try_get::<_, String>(0)?))
                .collect()
        })
    }
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn passwords_in_urls_are_masked_and_refused() {
        assert_eq!(
            mask_url("postgres://ops:hunter2@db:5432/ks?sslmode=require"),
            "postgres://ops:***@db:5432/ks?sslmode=require"
        );
        assert_eq!(mask_url("postgres://ops@db/ks"), "postgres://ops@db/ks");
        let err = parse_target(&PgOptions::new("postgres://ops:hunter2@db/ks", None))
            .err()
            .unwrap();
        assert!(err.contains("holds a password"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
        let err = parse_target(&PgOptions::new("postgres://ops@db/ks?password=x", None))
            .err()
            .unwrap();
        assert!(err.contains("holds a password"), "{err}");
        let debug = format!(
            "{:?}",
            PgOptions::new("postgres://ops@db/ks", Some("s3cret".into()))
        );
        assert!(!debug.contains("s3cret"), "{debug}");
    }

    #[test]
    fn libpq_ssl_settings_are_understood() {
        let t = parse_target(&PgOptions::new(
            "postgres://ops@db:5433/ks?sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem&connect_timeout=3",
            None,
        ))
        .unwrap();
        assert_eq!(t.ssl, SslMode::VerifyFull);
        assert_eq!(t.root, Some(RootCert::File("/etc/ca.pem".into())));
        assert_eq!(t.config.get_ports(), &[5433]);
        assert_eq!(
            t.config.get_connect_timeout(),
            Some(&Duration::from_secs(3))
        );
        let t = parse_target(&PgOptions::new("postgres://ops@db/ks", None)).unwrap();
        assert_eq!(t.ssl, SslMode::Prefer, "libpq's default");
        let err = parse_target(&PgOptions::new("postgres://ops@db/ks?sslmode=maybe", None))
            .err()
            .unwrap();
        assert!(err.contains("unknown sslmode"), "{err}");
        let err = tls::client_config(SslMode::VerifyCa, None).err();
        assert!(
            err.is_none() || err.as_deref().unwrap().contains("sslrootcert"),
            "{err:?}"
        );
    }
}

#[cfg(test)]
mod server_tests {
    use super::*;
    use crate::pg_test_server::{PASSWORD, TestServer};
    use crate::state::tests::new_run;

    fn options(db: &str) -> PgOptions {
        PgOptions::new(&TestServer::shared().url(db), Some(PASSWORD.to_owned()))
    }

    #[test]
    fn a_newer_schema_is_refused_with_both_versions() {
        let server = TestServer::shared();
        let db = server.create_database();
        drop(PostgresState::open(&options(&db)).unwrap());
        server.psql(
            &db,
            &format!(
                "INSERT INTO schema_version VALUES ({}, 0)",
                PG_SCHEMA_VERSION + 1
            ),
        );
        let err = PostgresState::open(&options(&db)).unwrap_err();
        assert!(
            matches!(err, StateError::NewerSchema { found, supported, .. }
                if found == PG_SCHEMA_VERSION + 1 && supported == PG_SCHEMA_VERSION),
            "{err}"
        );
        assert!(err.to_string().contains(&db), "{err}");
    }

    #[test]
    fn another_programs_tables_are_not_taken_over() {
        let server = TestServer::shared();
        let db = server.create_database();
        server.psql(&db, "CREATE TABLE runs (id int)");
        let err = PostgresState::open(&options(&db)).unwrap_err();
        assert!(matches!(err, StateError::NotStateDatabase { .. }), "{err}");
    }

    #[test]
    fn runners_opening_a_new_database_together_migrate_once() {
        let db = TestServer::shared().create_database();
        std::thread::scope(|s| {
            let opens: Vec<_> = (0..6)
                .map(|_| s.spawn(|| PostgresState::open(&options(&db)).map(|_| ())))
                .collect();
            for open in opens {
                open.join().unwrap().unwrap();
            }
        });
        let state = PostgresState::open(&options(&db)).unwrap();
        assert_eq!(state.schema_version().unwrap(), PG_SCHEMA_VERSION);
        assert_eq!(
            TestServer::shared().psql(&db, "SELECT count(*) FROM schema_version"),
            PG_SCHEMA_VERSION.to_string()
        );
    }

    #[test]
    fn a_wrong_password_fails_without_showing_it() {
        let db = TestServer::shared().create_database();
        let wrong = "not-the-password-7f3a";
        let err = PostgresState::open(&PgOptions::new(
            &TestServer::shared().url(&db),
            Some(wrong.to_owned()),
        ))
        .unwrap_err();
        let shown = format!("{err} {err:?}");
        assert!(!shown.contains(wrong), "{shown}");
        assert!(shown.contains("password authentication failed"), "{shown}");
    }

    /// The trait is synchronous and called from tokio tasks as well as
    /// from blocking threads; both runtime flavours must work.
    #[test]
    fn calls_from_inside_tokio_runtimes_work() {
        let db = TestServer::shared().create_database();
        let state = std::sync::Arc::new(PostgresState::open(&options(&db)).unwrap());
        let current = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let s = state.clone();
        current.block_on(async move {
            s.create_run(&new_run("in-current", 1)).unwrap();
            assert!(s.run("in-current").unwrap().is_some());
        });
        let multi = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let s = state.clone();
        multi.block_on(async move {
            let task = tokio::spawn(async move {
                s.create_run(&new_run("in-task", 2)).unwrap();
                s.acquire_lock("c", "in-task").unwrap()
            });
            assert_eq!(task.await.unwrap(), LockAttempt::Acquired);
        });
        // Opening inside a runtime works too.
        let opened = current.block_on(async { PostgresState::open(&options(&db)) });
        assert_eq!(
            opened
                .unwrap()
                .list_runs(&RunFilter::default())
                .unwrap()
                .len(),
            2
        );
    }

    #[test]
    fn grouped_writes_become_durable_at_the_barrier() {
        let db = TestServer::shared().create_database();
        let state = PostgresState::open(&options(&db)).unwrap();
        state.create_run(&new_run("r1", 1)).unwrap();
        let intent = |seq| EffectIntent {
            seq,
            kind: "now".to_owned(),
            name: "now".to_owned(),
            request_fingerprint: String::new(),
            request_summary: String::new(),
            mutates: false,
            started_at: 1,
        };
        for seq in 1..=3 {
            state
                .begin_effect_with("r1", &intent(seq), Durability::Grouped)
                .unwrap();
        }
        // The database is this test's alone, so its counters are too.
        assert_eq!(state.counters.grouped.load(Ordering::SeqCst), 3);
        assert!(state.counters.synced.load(Ordering::SeqCst) < 3);
        state.sync().unwrap();
        assert_eq!(state.counters.synced.load(Ordering::SeqCst), 3);
        let barriers = TestServer::shared().psql(&db, "SELECT count(*) FROM barriers");
        assert_eq!(barriers, "1", "the barrier was one synchronous write");
        state.sync().unwrap();
        assert_eq!(
            TestServer::shared().psql(&db, "SELECT sum(n) FROM barriers"),
            "1",
            "nothing new to cover, no barrier"
        );
        assert_eq!(state.effects("r1").unwrap().len(), 3);
    }

    /// Whether `state`'s connection is encrypted, as the server sees it.
    fn encrypted(state: &PostgresState) -> bool {
        state
            .call(|conn| {
                let client = conn.client()?;
                Ok(client
                    .query_one(
                        "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                        &[],
                    )
                    .map(|r| r.get::<_, bool>(0))
                    .unwrap_or(false))
            })
            .unwrap()
    }

    /// libpq's sslmodes against a server with a certificate for
    /// 127.0.0.1 (not `localhost`) from a CA of its own.
    #[test]
    fn tls_follows_libpqs_sslmodes() {
        let (server, ca) = TestServer::start_tls();
        let db = server.create_database();
        let open = |host: &str, params: &str| {
            let url = format!(
                "postgres://{}@{host}:{}/{db}?hostaddr=127.0.0.1&{params}",
                crate::pg_test_server::USER,
                server.port
            );
            PostgresState::open(&PgOptions::new(&url, Some(PASSWORD.to_owned())))
        };
        let ca = ca.display().to_string();
        assert!(!encrypted(&open("127.0.0.1", "sslmode=disable").unwrap()));
        assert!(encrypted(&open("127.0.0.1", "sslmode=prefer").unwrap()));
        // require checks nothing without a root certificate, as in libpq.
        assert!(encrypted(&open("localhost", "sslmode=require").unwrap()));
        let full = format!("sslmode=verify-full&sslrootcert={ca}");
        assert!(encrypted(&open("127.0.0.1", &full).unwrap()));
        // The certificate does not name `localhost`: verify-full refuses,
        // verify-ca (the chain only) accepts.
        let err = open("localhost", &full).unwrap_err();
        assert!(matches!(err, StateError::Backend { .. }), "{err}");
        let ca_only = format!("sslmode=verify-ca&sslrootcert={ca}");
        assert!(encrypted(&open("localhost", &ca_only).unwrap()));
        // A CA that did not sign it: refused, whatever the name.
        let (_other, other_ca) = TestServer::start_tls();
        let wrong = format!("sslmode=verify-ca&sslrootcert={}", other_ca.display());
        assert!(open("127.0.0.1", &wrong).is_err());
    }
}
