//! The run state in a local SQLite database, `state.db`.
//!
//! Durability: the database runs in WAL mode with `synchronous=NORMAL`:
//! a commit appends its pages to the write-ahead log (`state.db-wal`) and
//! does not fsync it; checkpoints, which copy the log into the database,
//! fsync both. Durability comes from the barrier ([`StateStore::sync`]),
//! which fsyncs the log: since the log is one file appended in commit
//! order, one fsync makes every commit before it durable, whoever made it,
//! and a power cut keeps a prefix of the commits (SQLite's recovery stops
//! at the first frame whose checksum fails). Every change but a grouped
//! journal write ([`Durability::Grouped`]) is followed by a barrier before
//! its call returns, so it is as durable as under `synchronous=FULL`, and
//! the barriers of all the handles of this process on one file share
//! their fsyncs (`group.rs`).
//!
//! Concurrency: each handle owns one connection behind a mutex, so calls on
//! one handle run one at a time (a connection cannot run two transactions
//! at once anyway). Every change runs in a `BEGIN IMMEDIATE` transaction,
//! which takes the database's write lock up front: a read-then-write such
//! as "is this lock free? then take it" cannot interleave with another
//! process's, so exactly one contender wins. A writer that finds the lock
//! taken waits up to the busy timeout, then fails with
//! [`StateError::Busy`].

use std::fmt;
use std::fs::{DirBuilder, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::{
    Connection, ErrorCode, OpenFlags, OptionalExtension, Row, TransactionBehavior, params,
};

use super::group::GroupCommit;
use super::{
    ApprovalDecision, ApprovalRecord, ApprovalState, CheckOutcome, CredentialRecord,
    DeferredFilter, DeferredRecord, DeferredState, Durability, EffectIntent, EffectOutcome,
    EffectRecord, FIRST_SEQ, GiveWay, LeaseAttempt, LockAttempt, LockRecord, NewApproval,
    NewDeferred, NewRun, PluginInfo, RotationClaim, RotationOutcome, RunEvent, RunFilter, RunLease,
    RunRecord, RunState, StateError, StateStore, action_id, check_claim, expired_lease_note,
    lease_lost, lease_stands, now_ms, require, rotation_claimable,
};
use crate::fs::{parent_dir, private_file_options};

/// The state database's usual file name, in the keycycle state directory.
pub const STATE_FILE_NAME: &str = "state.db";

/// The schema version this keycycle writes (SQLite's `user_version`).
pub const SCHEMA_VERSION: i64 = 4;

/// How long a change waits for another process's transaction to end.
pub const DEFAULT_BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Marks the file as keycycle's (SQLite's `application_id`): "kcyc".
const APPLICATION_ID: i64 = 0x6b63_7963;

/// Debug builds only: with this set, the database emulates what a power
/// cut could lose. It never checkpoints on its own (so the log only grows
/// while the process runs), and after each barrier it writes how long the
/// log was when the barrier's fsync started to `state.db-wal` +
/// [`SYNCED_SUFFIX`]. A test that kills keycycle truncates the log to that
/// length: everything not yet made durable is gone, the worst a power cut
/// can do.
#[cfg(debug_assertions)]
pub const POWER_CUT_ENV: &str = "KEYCYCLE_DEBUG_POWER_CUT";

/// See [`POWER_CUT_ENV`].
#[cfg(debug_assertions)]
pub const SYNCED_SUFFIX: &str = ".synced";

/// What version 2 adds: the change requests of approval gates.
const APPROVALS_SCHEMA: &str = r#"
CREATE TABLE approvals (
    id             TEXT PRIMARY KEY NOT NULL,
    run_id         TEXT NOT NULL REFERENCES runs (run_id),
    title          TEXT NOT NULL,
    summary        TEXT NOT NULL,
    environments   TEXT NOT NULL,   -- JSON array of strings
    approvers      TEXT NOT NULL,   -- JSON array of strings
    requested_by   TEXT NOT NULL,
    requested_host TEXT NOT NULL,
    requested_at   INTEGER NOT NULL,
    state          TEXT NOT NULL,
    decided_by     TEXT,
    decided_host   TEXT,
    decided_at     INTEGER,
    comment        TEXT
) STRICT;
CREATE INDEX approvals_by_state ON approvals (state, requested_at);
"#;

/// What version 3 adds: the inventory's record of each credential, one
/// JSON document per credential (its fields grow with the inventory; a
/// column each would need a migration each).
const CREDENTIALS_SCHEMA: &str = r#"
CREATE TABLE credentials (
    id     TEXT PRIMARY KEY NOT NULL,
    record TEXT NOT NULL            -- JSON CredentialRecord
) STRICT;
"#;

/// What version 4 adds: run leases, which runners sharing a database
/// need and a local database keeps for the same behaviour.
const LEASES_SCHEMA: &str = r#"
CREATE TABLE run_leases (
    run_id      TEXT PRIMARY KEY NOT NULL,
    holder      TEXT NOT NULL,
    host        TEXT NOT NULL,
    pid         INTEGER NOT NULL,
    lease_until INTEGER NOT NULL
) STRICT;
"#;

const APPROVAL_COLUMNS: &str = "id, run_id, title, summary, environments, approvers, \
     requested_by, requested_host, requested_at, state, decided_by, decided_host, decided_at, \
     comment";

const SCHEMA: &str = r#"
CREATE TABLE runs (
    run_id         TEXT PRIMARY KEY NOT NULL,
    runbook_path   TEXT NOT NULL,
    runbook_sha256 TEXT NOT NULL,
    params         TEXT NOT NULL,   -- JSON object of strings
    env            TEXT,
    dry_run        INTEGER NOT NULL,
    user           TEXT NOT NULL,
    host           TEXT NOT NULL,
    plugins        TEXT NOT NULL,   -- JSON array of PluginInfo
    started_at     INTEGER NOT NULL,
    state          TEXT NOT NULL,
    finished_at    INTEGER,
    detail         TEXT
) STRICT;
CREATE INDEX runs_by_start ON runs (started_at DESC, run_id DESC);
CREATE INDEX runs_by_state ON runs (state);

CREATE TABLE run_events (
    id      INTEGER PRIMARY KEY,    -- keeps append order
    run_id  TEXT NOT NULL REFERENCES runs (run_id),
    at      INTEGER NOT NULL,
    kind    TEXT NOT NULL,
    message TEXT NOT NULL
) STRICT;
CREATE INDEX run_events_by_run ON run_events (run_id, id);

CREATE TABLE journal (
    run_id              TEXT NOT NULL REFERENCES runs (run_id),
    seq                 INTEGER NOT NULL,
    kind                TEXT NOT NULL,
    name                TEXT NOT NULL,
    request_fingerprint TEXT NOT NULL,
    request_summary     TEXT NOT NULL,
    mutates             INTEGER NOT NULL,
    started_at          INTEGER NOT NULL,
    -- The outcome: all NULL while the effect is in flight.
    ok                  INTEGER,
    result              TEXT,
    error_kind          TEXT,
    error               TEXT,
    finished_at         INTEGER,
    PRIMARY KEY (run_id, seq)
) STRICT, WITHOUT ROWID;

CREATE TABLE locks (
    credential  TEXT PRIMARY KEY NOT NULL,
    run_id      TEXT NOT NULL REFERENCES runs (run_id),
    acquired_at INTEGER NOT NULL
) STRICT;
CREATE INDEX locks_by_run ON locks (run_id);

-- Every credential a run ever locked, kept after the lock is released.
CREATE TABLE run_credentials (
    run_id           TEXT NOT NULL REFERENCES runs (run_id),
    credential       TEXT NOT NULL,
    first_locked_at  INTEGER NOT NULL,
    PRIMARY KEY (run_id, credential)
) STRICT, WITHOUT ROWID;
CREATE INDEX run_credentials_by_credential ON run_credentials (credential);

CREATE TABLE deferred (
    id              TEXT PRIMARY KEY NOT NULL,
    run_id          TEXT NOT NULL REFERENCES runs (run_id),
    credential      TEXT,
    description     TEXT NOT NULL,
    plugin          TEXT NOT NULL,
    operation       TEXT NOT NULL,
    input           TEXT NOT NULL,
    due_at          INTEGER NOT NULL,
    state           TEXT NOT NULL,
    attempts        INTEGER NOT NULL,
    next_attempt_at INTEGER NOT NULL,
    claimed_by      TEXT,
    lease_until     INTEGER,
    last_error      TEXT,
    created_at      INTEGER NOT NULL,
    finished_at     INTEGER,
    note            TEXT
) STRICT;
CREATE INDEX deferred_by_state ON deferred (state, next_attempt_at);
CREATE INDEX deferred_by_run ON deferred (run_id);
"#;

const RUN_COLUMNS: &str = "run_id, runbook_path, runbook_sha256, params, env, dry_run, user, \
     host, plugins, started_at, state, finished_at, detail";

const DEFERRED_COLUMNS: &str = "id, run_id, credential, description, plugin, operation, input, \
     due_at, state, attempts, next_attempt_at, claimed_by, lease_until, last_error, created_at, \
     finished_at, note";

const EFFECT_COLUMNS: &str = "seq, kind, name, request_fingerprint, request_summary, mutates, \
     started_at, ok, result, error_kind, error, finished_at";

/// A handle on a state database file. See the module documentation for
/// how durability and concurrency work.
pub struct SqliteState {
    path: PathBuf,
    /// The path as shown in messages.
    db: String,
    busy_timeout: Duration,
    conn: Mutex<Connection>,
    /// The write-ahead log, which the barrier fsyncs.
    wal: PathBuf,
    /// Shared by every handle of this process on the same file.
    group: Arc<GroupCommit>,
}

impl fmt::Debug for SqliteState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteState")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// A failure inside an operation, before it is told which operation it
/// was; lets the operations use `?` on both kinds.
enum Fail {
    Sql(rusqlite::Error),
    State(StateError),
}

impl From<rusqlite::Error> for Fail {
    fn from(e: rusqlite::Error) -> Fail {
        Fail::Sql(e)
    }
}

impl From<StateError> for Fail {
    fn from(e: StateError) -> Fail {
        Fail::State(e)
    }
}

type Res<T> = Result<T, Fail>;

impl SqliteState {
    /// Opens the state database at `path`, creating it (mode 0600, missing
    /// parent directories 0700) and its schema if need be. Waits up to
    /// [`DEFAULT_BUSY_TIMEOUT`] for other processes' transactions.
    pub fn open(path: impl AsRef<Path>) -> Result<SqliteState, StateError> {
        SqliteState::open_with_busy_timeout(path, DEFAULT_BUSY_TIMEOUT)
    }

    /// Opens `dir`/[`STATE_FILE_NAME`].
    pub fn open_in_dir(dir: impl AsRef<Path>) -> Result<SqliteState, StateError> {
        SqliteState::open(dir.as_ref().join(STATE_FILE_NAME))
    }

    /// [`SqliteState::open`] with another busy timeout.
    pub fn open_with_busy_timeout(
        path: impl AsRef<Path>,
        busy_timeout: Duration,
    ) -> Result<SqliteState, StateError> {
        let path = path.as_ref().to_path_buf();
        let db = path.display().to_string();
        let io = |action| {
            let db = db.clone();
            move |source| StateError::Io { db, action, source }
        };

        let mut dirs = DirBuilder::new();
        dirs.recursive(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt;
            dirs.mode(0o700);
        }
        dirs.create(parent_dir(&path))
            .map_err(io("create its directory"))?;
        // Created here rather than by SQLite so it is private from the
        // start; SQLite gives its -wal and -shm files the same mode.
        let file = private_file_options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io("create or open the file"))?;
        let group = GroupCommit::for_file(&file).map_err(io("read the file's metadata"))?;
        drop(file);
        let mut wal = path.clone().into_os_string();
        wal.push("-wal");

        let conn = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| sql_error(&db, "open", busy_timeout, e))?;
        // Switching a new file to WAL and creating the schema need locks
        // that SQLite's busy handler does not always wait for; processes
        // opening the database at the same moment take turns here instead.
        let mut setup_lock = path.clone().into_os_string();
        setup_lock.push(".setup-lock");
        let setup_lock = private_file_options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&setup_lock)
            .map_err(io("create its setup lock file"))?;
        setup_lock.lock().map_err(io("lock its setup lock file"))?;
        let state = SqliteState {
            path,
            db,
            busy_timeout,
            conn: Mutex::new(conn),
            wal: wal.into(),
            group,
        };
        state.prepare()?;
        drop(setup_lock);
        Ok(state)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Sets the connection up and brings the schema to [`SCHEMA_VERSION`].
    fn prepare(&self) -> Result<(), StateError> {
        let operation = "set up the database";
        let mut conn = self.conn();
        let setup = |conn: &mut Connection| -> Res<()> {
            conn.busy_timeout(self.busy_timeout)?;
            // Every statement is prepared once per connection: a rotation
            // runs a few dozen, and parsing them again cost more than
            // running them.
            conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
            // The first read of the file: a file that is not SQLite fails
            // here, with NOTADB.
            let app: i64 = conn.pragma_query_value(None, "application_id", |r| r.get(0))?;
            if app != 0 && app != APPLICATION_ID {
                return Err(self.not_ours("it belongs to another program").into());
            }
            let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
            if !mode.eq_ignore_ascii_case("wal") {
                return Err(StateError::Invalid {
                    db: self.db.clone(),
                    operation,
                    problem: format!(
                        "SQLite kept journal mode {mode} instead of WAL; the file system may \
                         not support it (network file systems often do not)"
                    ),
                }
                .into());
            }
            // Commits do not fsync; barriers do (see the module docs).
            conn.pragma_update(None, "synchronous", "NORMAL")?;
            conn.pragma_update(None, "foreign_keys", "ON")?;
            #[cfg(debug_assertions)]
            if std::env::var_os(POWER_CUT_ENV).is_some() {
                conn.pragma_update(None, "wal_autocheckpoint", 0)?;
            }
            Ok(())
        };
        setup(&mut conn).map_err(|f| self.fail(operation, f))?;

        let migrate = |tx: &Connection| -> Res<()> {
            let version: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
            if version > SCHEMA_VERSION {
                return Err(StateError::NewerSchema {
                    db: self.db.clone(),
                    found: version,
                    supported: SCHEMA_VERSION,
                }
                .into());
            }
            if version == SCHEMA_VERSION {
                return Ok(());
            }
            // Version 1 had everything but approval gates, version 2
            // everything but the inventory's records, version 3 all but
            // run leases.
            if (1..=3).contains(&version) {
                if version == 1 {
                    tx.execute_batch(APPROVALS_SCHEMA)?;
                }
                if version <= 2 {
                    tx.execute_batch(CREDENTIALS_SCHEMA)?;
                }
                tx.execute_batch(LEASES_SCHEMA)?;
                tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
                return Ok(());
            }
            // Version 0: nothing of ours yet. Another program's tables
            // must not be mixed with ours.
            let tables: i64 = query_one(
                tx,
                "SELECT count(*) FROM sqlite_schema WHERE name NOT LIKE 'sqlite_%'",
                [],
                |r| r.get(0),
            )?;
            if tables != 0 {
                return Err(self
                    .not_ours("it holds tables but no keycycle schema version")
                    .into());
            }
            tx.execute_batch(SCHEMA)?;
            tx.execute_batch(APPROVALS_SCHEMA)?;
            tx.execute_batch(CREDENTIALS_SCHEMA)?;
            tx.execute_batch(LEASES_SCHEMA)?;
            tx.pragma_update(None, "application_id", APPLICATION_ID)?;
            tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
            Ok(())
        };
        // Two processes opening a new file at once both get here; the
        // immediate transaction lets one create the schema and the other
        // then find it.
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| self.fail("create the schema", e.into()))?;
        migrate(&tx)
            .and_then(|()| tx.commit().map_err(Fail::from))
            .map_err(|f| self.fail("create the schema", f))?;
        drop(conn);
        // A new schema is durable before anything is recorded in it, and
        // the power-cut emulation learns where this process starts.
        let ticket = self.group.committed();
        self.barrier(ticket)
    }

    /// Returns once every commit counted up to `ticket` is durable (see
    /// [`GroupCommit::sync_through`]).
    fn barrier(&self, ticket: u64) -> Result<(), StateError> {
        self.group.sync_through(ticket, || self.fsync_log())
    }

    /// The fsync itself: the write-ahead log, where every commit since the
    /// last checkpoint lies. It is opened for each fsync rather than kept
    /// open, so it is always the file SQLite writes now, whatever replaced
    /// or removed it in between; opening costs microseconds, the fsync
    /// milliseconds. Without a log, the last connection to close folded
    /// it into the database file (fsyncing both) and removed it: the
    /// database file is synced then, which costs nothing if that is so.
    fn fsync_log(&self) -> Result<(), StateError> {
        let io = |action| {
            let db = self.db.clone();
            move |source| StateError::Io { db, action, source }
        };
        match OpenOptions::new().write(true).open(&self.wal) {
            Ok(log) => {
                #[cfg(debug_assertions)]
                let length = log.metadata().map(|m| m.len());
                log.sync_data()
                    .map_err(io("make its write-ahead log durable (fsync)"))?;
                #[cfg(debug_assertions)]
                self.note_synced(length.map_err(io("read its write-ahead log's length"))?);
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => File::open(&self.path)
                .and_then(|f| f.sync_all())
                .map_err(io("make the database file durable (fsync)")),
            Err(e) => Err(io("open its write-ahead log to make it durable")(e)),
        }
    }

    /// Under [`POWER_CUT_ENV`], records how much of the log the last
    /// fsync covered. The length was read before the fsync started, so
    /// all of it was in the file by then and is on disk now.
    #[cfg(debug_assertions)]
    fn note_synced(&self, length: u64) {
        if std::env::var_os(POWER_CUT_ENV).is_none() {
            return;
        }
        let mut record = self.wal.clone().into_os_string();
        record.push(SYNCED_SUFFIX);
        // Barriers run one at a time, so the last one written wins; a
        // failure only spoils the emulation, which its test will notice.
        let _ = std::fs::write(record, length.to_string());
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while the connection was held leaves at worst an open
        // transaction, which the next `transaction` rolls back.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn not_ours(&self, problem: &str) -> StateError {
        StateError::NotStateDatabase {
            db: self.db.clone(),
            problem: problem.to_owned(),
        }
    }

    fn fail(&self, operation: &'static str, fail: Fail) -> StateError {
        match fail {
            Fail::State(e) => e,
            Fail::Sql(e) => sql_error(&self.db, operation, self.busy_timeout, e),
        }
    }

    /// Runs `work` in one `BEGIN IMMEDIATE` transaction and commits it; on
    /// any error the transaction is rolled back.
    fn write<R>(
        &self,
        operation: &'static str,
        work: impl FnOnce(&Connection) -> Res<R>,
    ) -> Result<R, StateError> {
        self.write_with(Durability::Durable, operation, work)
    }

    /// [`SqliteState::write`], followed by a barrier unless `durability`
    /// is [`Durability::Grouped`]. The barrier runs after the connection is
    /// released, so other runs' writes go on while this one waits for its
    /// fsync, and share it.
    fn write_with<R>(
        &self,
        durability: Durability,
        operation: &'static str,
        work: impl FnOnce(&Connection) -> Res<R>,
    ) -> Result<R, StateError> {
        let result = self.transaction(TransactionBehavior::Immediate, operation, work)?;
        let ticket = self.group.committed();
        if durability == Durability::Durable {
            self.barrier(ticket)?;
        }
        Ok(result)
    }

    /// Runs `work` in one read transaction, so it sees one moment.
    fn read<R>(
        &self,
        operation: &'static str,
        work: impl FnOnce(&Connection) -> Res<R>,
    ) -> Result<R, StateError> {
        self.transaction(TransactionBehavior::Deferred, operation, work)
    }

    fn transaction<R>(
        &self,
        behavior: TransactionBehavior,
        operation: &'static str,
        work: impl FnOnce(&Connection) -> Res<R>,
    ) -> Result<R, StateError> {
        let conn = self.conn();
        // BEGIN, COMMIT and ROLLBACK go through the statement cache:
        // rusqlite's `Transaction` parses them again every time, which was
        // a tenth of the journal's CPU.
        let statement = |sql: &str| -> rusqlite::Result<()> {
            conn.prepare_cached(sql)?.execute([])?;
            Ok(())
        };
        if !conn.is_autocommit() {
            // A panic inside `work` left its transaction open.
            statement("ROLLBACK").map_err(|e| self.fail(operation, e.into()))?;
        }
        let begin = match behavior {
            TransactionBehavior::Immediate => "BEGIN IMMEDIATE",
            TransactionBehavior::Exclusive => "BEGIN EXCLUSIVE",
            _ => "BEGIN DEFERRED",
        };
        statement(begin).map_err(|e| self.fail(operation, e.into()))?;
        let done = work(&conn).and_then(|result| {
            statement("COMMIT")?;
            Ok(result)
        });
        if done.is_err() && !conn.is_autocommit() {
            // What failed is the error to report; a failed rollback leaves
            // the transaction open, and the next one rolls it back.
            let _ = statement("ROLLBACK");
        }
        done.map_err(|f| self.fail(operation, f))
    }

    fn run_exists(&self, tx: &Connection, run_id: &str) -> Res<()> {
        let found = query_one(tx, "SELECT 1 FROM runs WHERE run_id = ?1", [run_id], |_| {
            Ok(())
        })
        .optional()?;
        match found {
            Some(()) => Ok(()),
            None => Err(StateError::RunNotFound {
                db: self.db.clone(),
                run_id: run_id.to_owned(),
            }
            .into()),
        }
    }

    fn load_run(&self, tx: &Connection, run_id: &str) -> Res<Option<RunRecord>> {
        let row = query_one(
            tx,
            &format!("SELECT {RUN_COLUMNS} FROM runs WHERE run_id = ?1"),
            [run_id],
            raw_run,
        )
        .optional()?;
        match row {
            None => Ok(None),
            Some(raw) => self.finish_run_record(tx, raw).map(Some),
        }
    }

    /// Sets a run's state (and `finished_at` when it is a finished state).
    fn set_run_state(
        &self,
        tx: &Connection,
        run_id: &str,
        state: RunState,
        detail: Option<&str>,
    ) -> Res<()> {
        let changed = exec(
            tx,
            "UPDATE runs SET state = ?2, finished_at = ?3, detail = ?4 WHERE run_id = ?1",
            params![
                run_id,
                state.as_str(),
                state.is_finished().then(now_ms),
                detail
            ],
        )?;
        if changed == 0 {
            return Err(StateError::RunNotFound {
                db: self.db.clone(),
                run_id: run_id.to_owned(),
            }
            .into());
        }
        Ok(())
    }

    /// Deletes the locks `run_id` holds; returns their credentials, sorted.
    fn release_locks_of(tx: &Connection, run_id: &str) -> Res<Vec<String>> {
        let credentials = tx
            .prepare_cached("SELECT credential FROM locks WHERE run_id = ?1 ORDER BY credential")?
            .query_map([run_id], |r| r.get(0))?
            .collect::<Result<Vec<String>, _>>()?;
        exec(tx, "DELETE FROM locks WHERE run_id = ?1", [run_id])?;
        Ok(credentials)
    }

    fn finish_run_record(&self, tx: &Connection, raw: RawRun) -> Res<RunRecord> {
        let corrupt = |what: &str| StateError::Corrupt {
            db: self.db.clone(),
            problem: format!("run `{}` has {what}", raw.run_id),
        };
        let params = serde_json::from_str(&raw.params)
            .map_err(|_| corrupt("parameters that are not a JSON object of strings"))?;
        let plugins: Vec<PluginInfo> = serde_json::from_str(&raw.plugins)
            .map_err(|_| corrupt("a plugin list that is not valid JSON"))?;
        let state = RunState::parse(&raw.state)
            .ok_or_else(|| corrupt(&format!("an unknown state `{}`", raw.state)))?;
        let mut stmt = tx.prepare_cached(
            "SELECT credential FROM run_credentials WHERE run_id = ?1 \
             ORDER BY first_locked_at, credential",
        )?;
        let credentials = stmt
            .query_map([&raw.run_id], |r| r.get(0))?
            .collect::<Result<Vec<String>, _>>()?;
        Ok(RunRecord {
            run_id: raw.run_id,
            runbook_path: raw.runbook_path,
            runbook_sha256: raw.runbook_sha256,
            params,
            env: raw.env,
            dry_run: raw.dry_run,
            user: raw.user,
            host: raw.host,
            plugins,
            started_at: raw.started_at,
            state,
            finished_at: raw.finished_at,
            detail: raw.detail,
            credentials,
        })
    }

    fn load_action(&self, tx: &Connection, id: &str) -> Res<DeferredRecord> {
        let raw = query_one(
            tx,
            &format!("SELECT {DEFERRED_COLUMNS} FROM deferred WHERE id = ?1"),
            [id],
            raw_deferred,
        )
        .optional()?;
        match raw {
            Some(raw) => self.deferred_record(raw),
            None => Err(StateError::ActionNotFound {
                db: self.db.clone(),
                id: id.to_owned(),
            }
            .into()),
        }
    }

    fn deferred_record(&self, raw: RawDeferred) -> Res<DeferredRecord> {
        let state = DeferredState::parse(&raw.state).ok_or_else(|| StateError::Corrupt {
            db: self.db.clone(),
            problem: format!(
                "deferred action `{}` has an unknown state `{}`",
                raw.id, raw.state
            ),
        })?;
        let attempts = u32::try_from(raw.attempts).map_err(|_| StateError::Corrupt {
            db: self.db.clone(),
            problem: format!(
                "deferred action `{}` has an impossible attempt count",
                raw.id
            ),
        })?;
        Ok(DeferredRecord {
            id: raw.id,
            run_id: raw.run_id,
            credential: raw.credential,
            description: raw.description,
            plugin: raw.plugin,
            operation: raw.operation,
            input: raw.input,
            due_at: raw.due_at,
            state,
            attempts,
            next_attempt_at: raw.next_attempt_at,
            claimed_by: raw.claimed_by,
            lease_until: raw.lease_until,
            last_error: raw.last_error,
            created_at: raw.created_at,
            finished_at: raw.finished_at,
            note: raw.note,
        })
    }

    fn seq_param(&self, operation: &'static str, seq: u64) -> Res<i64> {
        i64::try_from(seq).map_err(|_| {
            StateError::Invalid {
                db: self.db.clone(),
                operation,
                problem: format!("sequence number {seq} is beyond what the journal can hold"),
            }
            .into()
        })
    }

    fn seq_value(&self, run_id: &str, seq: i64) -> Res<u64> {
        u64::try_from(seq).map_err(|_| {
            StateError::Corrupt {
                db: self.db.clone(),
                problem: format!("run `{run_id}` has a negative effect sequence number {seq}"),
            }
            .into()
        })
    }

    /// Checks that `claimer` holds action `id` and returns it.
    fn claimed(&self, tx: &Connection, id: &str, claimer: &str) -> Res<DeferredRecord> {
        let action = self.load_action(tx, id)?;
        check_claim(
            &self.db,
            id,
            claimer,
            action.state,
            action.claimed_by.as_deref(),
        )?;
        Ok(action)
    }
}

/// Turns an SQLite error into a [`StateError`] naming the database and the
/// operation; a timed-out wait for another process becomes
/// [`StateError::Busy`].
/// Distinct statements the connection keeps prepared.
const STATEMENT_CACHE: usize = 128;

/// `execute` through the connection's statement cache.
fn exec<P: rusqlite::Params>(conn: &Connection, sql: &str, params: P) -> Res<usize> {
    Ok(conn.prepare_cached(sql)?.execute(params)?)
}

/// `query_row` through the connection's statement cache.
fn query_one<P, T, F>(conn: &Connection, sql: &str, params: P, f: F) -> rusqlite::Result<T>
where
    P: rusqlite::Params,
    F: FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
{
    conn.prepare_cached(sql)?.query_row(params, f)
}

fn sql_error(
    db: &str,
    operation: &'static str,
    busy_timeout: Duration,
    e: rusqlite::Error,
) -> StateError {
    match e.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => StateError::Busy {
            db: db.to_owned(),
            operation,
            waited_ms: u64::try_from(busy_timeout.as_millis()).unwrap_or(u64::MAX),
        },
        Some(ErrorCode::NotADatabase) => StateError::NotStateDatabase {
            db: db.to_owned(),
            problem: "it is not an SQLite database".to_owned(),
        },
        _ => StateError::Backend {
            db: db.to_owned(),
            operation,
            source: Box::new(e),
        },
    }
}

struct RawRun {
    run_id: String,
    runbook_path: String,
    runbook_sha256: String,
    params: String,
    env: Option<String>,
    dry_run: bool,
    user: String,
    host: String,
    plugins: String,
    started_at: i64,
    state: String,
    finished_at: Option<i64>,
    detail: Option<String>,
}

fn raw_run(r: &Row<'_>) -> rusqlite::Result<RawRun> {
    Ok(RawRun {
        run_id: r.get(0)?,
        runbook_path: r.get(1)?,
        runbook_sha256: r.get(2)?,
        params: r.get(3)?,
        env: r.get(4)?,
        dry_run: r.get(5)?,
        user: r.get(6)?,
        host: r.get(7)?,
        plugins: r.get(8)?,
        started_at: r.get(9)?,
        state: r.get(10)?,
        finished_at: r.get(11)?,
        detail: r.get(12)?,
    })
}

struct RawDeferred {
    id: String,
    run_id: String,
    credential: Option<String>,
    description: String,
    plugin: String,
    operation: String,
    input: String,
    due_at: i64,
    state: String,
    attempts: i64,
    next_attempt_at: i64,
    claimed_by: Option<String>,
    lease_until: Option<i64>,
    last_error: Option<String>,
    created_at: i64,
    finished_at: Option<i64>,
    note: Option<String>,
}

fn raw_deferred(r: &Row<'_>) -> rusqlite::Result<RawDeferred> {
    Ok(RawDeferred {
        id: r.get(0)?,
        run_id: r.get(1)?,
        credential: r.get(2)?,
        description: r.get(3)?,
        plugin: r.get(4)?,
        operation: r.get(5)?,
        input: r.get(6)?,
        due_at: r.get(7)?,
        state: r.get(8)?,
        attempts: r.get(9)?,
        next_attempt_at: r.get(10)?,
        claimed_by: r.get(11)?,
        lease_until: r.get(12)?,
        last_error: r.get(13)?,
        created_at: r.get(14)?,
        finished_at: r.get(15)?,
        note: r.get(16)?,
    })
}

struct RawEffect {
    seq: i64,
    intent: EffectIntent,
    ok: Option<bool>,
    result: Option<String>,
    error_kind: Option<String>,
    error: Option<String>,
    finished_at: Option<i64>,
}

fn raw_effect(r: &Row<'_>) -> rusqlite::Result<RawEffect> {
    Ok(RawEffect {
        seq: r.get(0)?,
        intent: EffectIntent {
            seq: 0,
            kind: r.get(1)?,
            name: r.get(2)?,
            request_fingerprint: r.get(3)?,
            request_summary: r.get(4)?,
            mutates: r.get(5)?,
            started_at: r.get(6)?,
        },
        ok: r.get(7)?,
        result: r.get(8)?,
        error_kind: r.get(9)?,
        error: r.get(10)?,
        finished_at: r.get(11)?,
    })
}

impl StateStore for SqliteState {
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
        self.write(operation, |tx| {
            let exists = query_one(
                tx,
                "SELECT 1 FROM runs WHERE run_id = ?1",
                [&run.run_id],
                |_| Ok(()),
            )
            .optional()?;
            if exists.is_some() {
                return Err(StateError::RunExists {
                    db: self.db.clone(),
                    run_id: run.run_id.clone(),
                }
                .into());
            }
            exec(
                tx,
                &format!(
                    "INSERT INTO runs ({RUN_COLUMNS}) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, NULL, NULL)"
                ),
                params![
                    run.run_id,
                    run.runbook_path,
                    run.runbook_sha256,
                    params,
                    run.env,
                    run.dry_run,
                    run.user,
                    run.host,
                    plugins,
                    run.started_at,
                    RunState::Running.as_str(),
                ],
            )?;
            Ok(())
        })
    }

    fn run(&self, run_id: &str) -> Result<Option<RunRecord>, StateError> {
        self.read("read a run", |tx| self.load_run(tx, run_id))
    }

    fn list_runs(&self, filter: &RunFilter) -> Result<Vec<RunRecord>, StateError> {
        self.read("list runs", |tx| {
            let mut sql = format!("SELECT {RUN_COLUMNS} FROM runs WHERE 1 = 1");
            if filter.unfinished_only {
                sql.push_str(" AND state = :running");
            }
            if filter.credential.is_some() {
                sql.push_str(
                    " AND run_id IN \
                     (SELECT run_id FROM run_credentials WHERE credential = :credential)",
                );
            }
            if filter.since.is_some() {
                sql.push_str(" AND started_at >= :since");
            }
            // One named parameter per state; the names are fixed, the
            // values bound, so nothing of the filter is spliced into SQL.
            let state_names: Vec<String> = (0..filter.states.len())
                .map(|i| format!(":state{i}"))
                .collect();
            if !state_names.is_empty() {
                sql.push_str(&format!(" AND state IN ({})", state_names.join(", ")));
            }
            sql.push_str(" ORDER BY started_at DESC, run_id DESC");
            if filter.limit.is_some() {
                sql.push_str(" LIMIT :limit");
            }
            let limit = filter.limit.map(|l| i64::try_from(l).unwrap_or(i64::MAX));
            let mut named: Vec<(&str, &dyn rusqlite::ToSql)> = Vec::new();
            let running = RunState::Running.as_str();
            if filter.unfinished_only {
                named.push((":running", &running));
            }
            if let Some(credential) = &filter.credential {
                named.push((":credential", credential));
            }
            if let Some(limit) = &limit {
                named.push((":limit", limit));
            }
            if let Some(since) = &filter.since {
                named.push((":since", since));
            }
            let states: Vec<&str> = filter.states.iter().map(|s| s.as_str()).collect();
            for (name, state) in state_names.iter().zip(&states) {
                named.push((name.as_str(), state));
            }
            let mut stmt = tx.prepare(&sql)?;
            let raws = stmt
                .query_map(named.as_slice(), raw_run)?
                .collect::<Result<Vec<_>, _>>()?;
            raws.into_iter()
                .map(|raw| self.finish_run_record(tx, raw))
                .collect()
        })
    }

    fn finish_run(
        &self,
        run_id: &str,
        state: RunState,
        detail: Option<&str>,
    ) -> Result<(), StateError> {
        self.write("finish a run", |tx| {
            self.set_run_state(tx, run_id, state, detail)
        })
    }

    fn append_event(&self, run_id: &str, event: &RunEvent) -> Result<(), StateError> {
        self.write("append a run event", |tx| {
            self.run_exists(tx, run_id)?;
            exec(
                tx,
                "INSERT INTO run_events (run_id, at, kind, message) VALUES (?1, ?2, ?3, ?4)",
                params![run_id, event.at, event.kind, event.message],
            )?;
            Ok(())
        })
    }

    fn events(&self, run_id: &str) -> Result<Vec<RunEvent>, StateError> {
        self.read("read run events", |tx| {
            self.run_exists(tx, run_id)?;
            let mut stmt = tx.prepare_cached(
                "SELECT at, kind, message FROM run_events WHERE run_id = ?1 ORDER BY id",
            )?;
            let events = stmt
                .query_map([run_id], |r| {
                    Ok(RunEvent {
                        at: r.get(0)?,
                        kind: r.get(1)?,
                        message: r.get(2)?,
                    })
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(events)
        })
    }

    fn begin_effect_with(
        &self,
        run_id: &str,
        intent: &EffectIntent,
        durability: Durability,
    ) -> Result<(), StateError> {
        let operation = "begin an effect";
        self.write_with(durability, operation, |tx| {
            self.run_exists(tx, run_id)?;
            // This is the journal's only insert, and it only appends the
            // step after the last, so a run's steps run from FIRST_SEQ
            // without a gap: `seq` is next exactly when the step before it
            // is there and `seq` is not. Both are asked by the whole key.
            // `max(seq)` (or any range over the key) made SQLite prepare
            // its statement again on every call, a sixth of the journal's
            // CPU: with STAT4 the plan may depend on the bound run id.
            let seq = self.seq_param(operation, intent.seq)?;
            let has = |seq: i64| -> Res<bool> {
                Ok(tx
                    .prepare_cached("SELECT 1 FROM journal WHERE run_id = ?1 AND seq = ?2")?
                    .query_row(params![run_id, seq], |_| Ok(()))
                    .optional()?
                    .is_some())
            };
            let follows = intent.seq == FIRST_SEQ || (intent.seq > FIRST_SEQ && has(seq - 1)?);
            if !follows || has(seq)? {
                let last: Option<i64> = tx
                    .prepare_cached("SELECT max(seq) FROM journal WHERE run_id = ?1")?
                    .query_row([run_id], |r| r.get(0))?;
                let expected = match last {
                    None => FIRST_SEQ,
                    Some(last) => self.seq_value(run_id, last)? + 1,
                };
                return Err(StateError::SeqOutOfOrder {
                    db: self.db.clone(),
                    run_id: run_id.to_owned(),
                    expected,
                    got: intent.seq,
                }
                .into());
            }
            tx.prepare_cached(
                "INSERT INTO journal (run_id, seq, kind, name, request_fingerprint, \
                 request_summary, mutates, started_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?
            .execute(params![
                run_id,
                seq,
                intent.kind,
                intent.name,
                intent.request_fingerprint,
                intent.request_summary,
                intent.mutates,
                intent.started_at,
            ])?;
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
        self.write_with(durability, operation, |tx| {
            let seq_param = self.seq_param(operation, seq)?;
            let open: Option<bool> = tx
                .prepare_cached("SELECT ok IS NULL FROM journal WHERE run_id = ?1 AND seq = ?2")?
                .query_row(params![run_id, seq_param], |r| r.get(0))
                .optional()?;
            match open {
                None => {
                    self.run_exists(tx, run_id)?;
                    Err(StateError::EffectNotFound {
                        db: self.db.clone(),
                        run_id: run_id.to_owned(),
                        seq,
                    }
                    .into())
                }
                Some(false) => Err(StateError::EffectFinished {
                    db: self.db.clone(),
                    run_id: run_id.to_owned(),
                    seq,
                }
                .into()),
                Some(true) => {
                    tx.prepare_cached(
                        "UPDATE journal SET ok = ?3, result = ?4, error_kind = ?5, error = ?6, \
                         finished_at = ?7 WHERE run_id = ?1 AND seq = ?2",
                    )?
                    .execute(params![
                        run_id,
                        seq_param,
                        outcome.ok,
                        outcome.result,
                        outcome.error_kind,
                        outcome.error,
                        outcome.finished_at,
                    ])?;
                    Ok(())
                }
            }
        })
    }

    fn sync(&self) -> Result<(), StateError> {
        self.barrier(self.group.current())
    }

    fn effects(&self, run_id: &str) -> Result<Vec<EffectRecord>, StateError> {
        self.read("read the journal", |tx| {
            self.run_exists(tx, run_id)?;
            let mut stmt = tx.prepare_cached(&format!(
                "SELECT {EFFECT_COLUMNS} FROM journal WHERE run_id = ?1 ORDER BY seq"
            ))?;
            let raws = stmt
                .query_map([run_id], raw_effect)?
                .collect::<Result<Vec<_>, _>>()?;
            raws.into_iter()
                .map(|raw| {
                    let mut intent = raw.intent;
                    intent.seq = self.seq_value(run_id, raw.seq)?;
                    let outcome = match (raw.ok, raw.finished_at) {
                        (Some(ok), Some(finished_at)) => Some(EffectOutcome {
                            ok,
                            result: raw.result.unwrap_or_default(),
                            error_kind: raw.error_kind,
                            error: raw.error,
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
        self.write(operation, |tx| {
            self.run_exists(tx, run_id)?;
            let held = query_one(
                tx,
                "SELECT run_id, acquired_at FROM locks WHERE credential = ?1",
                [credential],
                |r| {
                    Ok(LockRecord {
                        credential: credential.to_owned(),
                        run_id: r.get(0)?,
                        acquired_at: r.get(1)?,
                    })
                },
            )
            .optional()?;
            if let Some(held) = held {
                return Ok(if held.run_id == run_id {
                    LockAttempt::AlreadyHeld
                } else {
                    LockAttempt::HeldBy(held)
                });
            }
            let now = now_ms();
            exec(
                tx,
                "INSERT INTO locks (credential, run_id, acquired_at) VALUES (?1, ?2, ?3)",
                params![credential, run_id, now],
            )?;
            exec(
                tx,
                "INSERT INTO run_credentials (run_id, credential, first_locked_at) \
                 VALUES (?1, ?2, ?3) ON CONFLICT (run_id, credential) DO NOTHING",
                params![run_id, credential, now],
            )?;
            Ok(LockAttempt::Acquired)
        })
    }

    fn release_run_locks(&self, run_id: &str) -> Result<Vec<String>, StateError> {
        self.write("release a run's locks", |tx| {
            self.run_exists(tx, run_id)?;
            Self::release_locks_of(tx, run_id)
        })
    }

    fn end_run(
        &self,
        run_id: &str,
        state: RunState,
        detail: Option<&str>,
    ) -> Result<Vec<String>, StateError> {
        self.write("end a run and release its locks", |tx| {
            self.set_run_state(tx, run_id, state, detail)?;
            Self::release_locks_of(tx, run_id)
        })
    }

    fn release_lock(&self, credential: &str) -> Result<Option<LockRecord>, StateError> {
        self.write("release a lock", |tx| {
            let held = query_one(
                tx,
                "SELECT run_id, acquired_at FROM locks WHERE credential = ?1",
                [credential],
                |r| {
                    Ok(LockRecord {
                        credential: credential.to_owned(),
                        run_id: r.get(0)?,
                        acquired_at: r.get(1)?,
                    })
                },
            )
            .optional()?;
            if held.is_some() {
                exec(tx, "DELETE FROM locks WHERE credential = ?1", [credential])?;
            }
            Ok(held)
        })
    }

    fn locks(&self) -> Result<Vec<LockRecord>, StateError> {
        self.read("list locks", |tx| {
            let locks = tx
                .prepare("SELECT credential, run_id, acquired_at FROM locks ORDER BY credential")?
                .query_map([], |r| {
                    Ok(LockRecord {
                        credential: r.get(0)?,
                        run_id: r.get(1)?,
                        acquired_at: r.get(2)?,
                    })
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(locks)
        })
    }

    fn schedule(&self, action: &NewDeferred) -> Result<String, StateError> {
        let id = action_id(action);
        self.write("schedule a deferred action", |tx| {
            self.run_exists(tx, &action.run_id)?;
            exec(
                tx,
                &format!(
                    "INSERT INTO deferred ({DEFERRED_COLUMNS}) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 0, ?8, NULL, NULL, NULL, ?10, \
                     NULL, NULL) \
                     ON CONFLICT (id) DO NOTHING"
                ),
                params![
                    id,
                    action.run_id,
                    action.credential,
                    action.description,
                    action.plugin,
                    action.operation,
                    action.input,
                    action.due_at,
                    DeferredState::Pending.as_str(),
                    now_ms(),
                ],
            )?;
            Ok(())
        })?;
        Ok(id)
    }

    fn deferred(&self, filter: &DeferredFilter) -> Result<Vec<DeferredRecord>, StateError> {
        self.read("list deferred actions", |tx| {
            let mut sql = format!("SELECT {DEFERRED_COLUMNS} FROM deferred");
            if filter.run_id.is_some() {
                sql.push_str(" WHERE run_id = ?1");
            }
            sql.push_str(" ORDER BY due_at, id");
            let mut stmt = tx.prepare(&sql)?;
            let raws = match &filter.run_id {
                Some(run_id) => stmt.query_map([run_id], raw_deferred)?,
                None => stmt.query_map([], raw_deferred)?,
            }
            .collect::<Result<Vec<_>, _>>()?;
            let mut actions = Vec::with_capacity(raws.len());
            for raw in raws {
                let action = self.deferred_record(raw)?;
                // The state filter is applied here rather than in SQL so a
                // row with an unknown state is reported, not skipped.
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
        self.write(operation, |tx| {
            let next: Option<String> = tx
                .prepare_cached(
                    "SELECT id FROM deferred \
                     WHERE (state = ?2 AND next_attempt_at <= ?1) \
                        OR (state = ?3 AND lease_until <= ?1) \
                     ORDER BY next_attempt_at, created_at, id LIMIT 1",
                )?
                .query_row(
                    params![
                        now_ms,
                        DeferredState::Pending.as_str(),
                        DeferredState::Running.as_str()
                    ],
                    |r| r.get(0),
                )
                .optional()?;
            let Some(id) = next else {
                return Ok(None);
            };
            let before = self.load_action(tx, &id)?;
            let last_error = if before.state == DeferredState::Running {
                Some(expired_lease_note(
                    before.claimed_by.as_deref(),
                    before.lease_until,
                ))
            } else {
                before.last_error.clone()
            };
            let attempts = before.attempts.saturating_add(1);
            exec(
                tx,
                "UPDATE deferred SET state = ?2, claimed_by = ?3, lease_until = ?4, \
                 attempts = ?5, last_error = ?6 WHERE id = ?1",
                params![
                    id,
                    DeferredState::Running.as_str(),
                    claimer,
                    now_ms.saturating_add(lease_ms),
                    attempts,
                    last_error,
                ],
            )?;
            self.load_action(tx, &id).map(Some)
        })
    }

    fn renew_claim(&self, id: &str, claimer: &str, lease_until: i64) -> Result<(), StateError> {
        self.write("renew a deferred action's claim", |tx| {
            self.claimed(tx, id, claimer)?;
            exec(
                tx,
                "UPDATE deferred SET lease_until = ?2 WHERE id = ?1",
                params![id, lease_until],
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
        self.write("complete a deferred action", |tx| {
            self.claimed(tx, id, claimer)?;
            exec(
                tx,
                "UPDATE deferred SET state = ?2, lease_until = NULL, finished_at = ?3, \
                 note = ?4 WHERE id = ?1",
                params![id, DeferredState::Done.as_str(), now_ms(), note],
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
        self.write("record a failed deferred action", |tx| {
            self.claimed(tx, id, claimer)?;
            match retry_at_ms {
                Some(at) => exec(
                    tx,
                    "UPDATE deferred SET state = ?2, next_attempt_at = ?3, claimed_by = NULL, \
                     lease_until = NULL, last_error = ?4 WHERE id = ?1",
                    params![id, DeferredState::Pending.as_str(), at, error],
                )?,
                None => exec(
                    tx,
                    "UPDATE deferred SET state = ?2, lease_until = NULL, finished_at = ?3, \
                     last_error = ?4 WHERE id = ?1",
                    params![id, DeferredState::Failed.as_str(), now_ms(), error],
                )?,
            };
            Ok(())
        })
    }

    fn retry_action(&self, id: &str) -> Result<(), StateError> {
        self.write("retry a deferred action", |tx| {
            let action = self.load_action(tx, id)?;
            if action.state != DeferredState::Failed {
                return Err(StateError::NotFailed {
                    db: self.db.clone(),
                    id: id.to_owned(),
                    state: action.state,
                }
                .into());
            }
            exec(
                tx,
                "UPDATE deferred SET state = ?2, claimed_by = NULL, finished_at = NULL \
                 WHERE id = ?1",
                params![id, DeferredState::Pending.as_str()],
            )?;
            Ok(())
        })
    }

    fn request_approval(&self, request: &NewApproval) -> Result<ApprovalRecord, StateError> {
        self.write("record a change request", |tx| {
            self.run_exists(tx, &request.run_id)?;
            exec(
                tx,
                &format!(
                    "INSERT INTO approvals ({APPROVAL_COLUMNS}) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, NULL, NULL, NULL, NULL) \
                     ON CONFLICT (id) DO NOTHING"
                ),
                params![
                    request.id,
                    request.run_id,
                    request.title,
                    request.summary,
                    to_json(&request.environments)?,
                    to_json(&request.approvers)?,
                    request.requested_by,
                    request.requested_host,
                    request.requested_at,
                    ApprovalState::Pending.as_str(),
                ],
            )?;
            self.load_approval(tx, &request.id)?.ok_or_else(|| {
                self.not_ours("a change request vanished as it was written")
                    .into()
            })
        })
    }

    fn approval(&self, id: &str) -> Result<Option<ApprovalRecord>, StateError> {
        self.read("read a change request", |tx| self.load_approval(tx, id))
    }

    fn record_rotation(&self, id: &str, outcome: &RotationOutcome) -> Result<(), StateError> {
        self.write("record a credential's rotation", |tx| {
            let record = self.load_credential(tx, id)?;
            let record = record.unwrap_or_else(|| CredentialRecord::new(id));
            self.save_credential(tx, &record.rotated(outcome))
        })
    }

    fn claim_rotation(
        &self,
        id: &str,
        seen: Option<&str>,
        outcome: &RotationOutcome,
    ) -> Result<RotationClaim, StateError> {
        self.write("claim a credential's rotation", |tx| {
            let record = self.load_credential(tx, id)?;
            if !rotation_claimable(record.as_ref(), seen) {
                return Ok(RotationClaim::Taken(Box::new(
                    record.unwrap_or_else(|| CredentialRecord::new(id)),
                )));
            }
            let record = record.unwrap_or_else(|| CredentialRecord::new(id));
            self.save_credential(tx, &record.rotated(outcome))?;
            Ok(RotationClaim::Claimed)
        })
    }

    fn record_check(&self, id: &str, outcome: &CheckOutcome) -> Result<(), StateError> {
        self.write("record a credential's check", |tx| {
            let record = self.load_credential(tx, id)?;
            let record = record.unwrap_or_else(|| CredentialRecord::new(id));
            self.save_credential(tx, &record.checked(outcome))
        })
    }

    fn credential(&self, id: &str) -> Result<Option<CredentialRecord>, StateError> {
        self.read("read a credential's record", |tx| {
            self.load_credential(tx, id)
        })
    }

    fn credentials(&self) -> Result<Vec<CredentialRecord>, StateError> {
        self.read("list the credentials' records", |tx| {
            let mut stmt = tx.prepare("SELECT record FROM credentials ORDER BY id")?;
            let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
            let mut out = Vec::new();
            for text in rows {
                out.push(self.credential_record(&text?)?);
            }
            Ok(out)
        })
    }

    fn take_run_lease(&self, lease: &RunLease, now_ms: i64) -> Result<LeaseAttempt, StateError> {
        self.take_run_lease_impl(lease, &GiveWay::Ended(now_ms))
    }

    fn take_over_run_lease(
        &self,
        lease: &RunLease,
        read: &RunLease,
    ) -> Result<LeaseAttempt, StateError> {
        self.take_run_lease_impl(lease, &GiveWay::StillIs(read.clone()))
    }

    fn renew_run_lease(
        &self,
        run_id: &str,
        holder: &str,
        lease_until: i64,
    ) -> Result<(), StateError> {
        self.renew_run_lease_impl(run_id, holder, lease_until)
    }

    fn drop_run_lease(&self, run_id: &str, holder: &str) -> Result<(), StateError> {
        self.write("give a run's lease up", |tx| {
            exec(
                tx,
                "DELETE FROM run_leases WHERE run_id = ?1 AND holder = ?2",
                params![run_id, holder],
            )?;
            Ok(())
        })
    }

    fn run_lease(&self, run_id: &str) -> Result<Option<RunLease>, StateError> {
        self.read("read a run's lease", |tx| Self::load_lease(tx, run_id))
    }

    fn approvals(&self, pending_only: bool) -> Result<Vec<ApprovalRecord>, StateError> {
        self.read("list change requests", |tx| {
            let mut sql = format!("SELECT {APPROVAL_COLUMNS} FROM approvals");
            if pending_only {
                sql.push_str(" WHERE state = 'pending'");
            }
            sql.push_str(" ORDER BY requested_at, id");
            let mut stmt = tx.prepare(&sql)?;
            let rows = stmt.query_map([], raw_approval)?;
            let mut out = Vec::new();
            for row in rows {
                out.push(self.approval_record(row?)?);
            }
            Ok(out)
        })
    }

    fn decide_approval(
        &self,
        id: &str,
        decision: &ApprovalDecision,
    ) -> Result<ApprovalRecord, StateError> {
        self.write("decide a change request", |tx| {
            let found =
                self.load_approval(tx, id)?
                    .ok_or_else(|| StateError::ApprovalNotFound {
                        db: self.db.clone(),
                        id: id.to_owned(),
                    })?;
            let decided = found.decided(&self.db, decision)?;
            exec(
                tx,
                "UPDATE approvals SET state = ?2, decided_by = ?3, decided_host = ?4, \
                 decided_at = ?5, comment = ?6 WHERE id = ?1 AND state = 'pending'",
                params![
                    id,
                    decided.state.as_str(),
                    decided.decided_by,
                    decided.decided_host,
                    decided.decided_at,
                    decided.comment,
                ],
            )?;
            Ok(decided)
        })
    }
}

impl SqliteState {
    fn load_lease(tx: &Connection, run_id: &str) -> Res<Option<RunLease>> {
        Ok(query_one(
            tx,
            "SELECT holder, host, pid, lease_until FROM run_leases WHERE run_id = ?1",
            [run_id],
            |r| {
                Ok(RunLease {
                    run_id: run_id.to_owned(),
                    holder: r.get(0)?,
                    host: r.get(1)?,
                    pid: r.get(2)?,
                    lease_until: r.get(3)?,
                })
            },
        )
        .optional()?)
    }

    fn take_run_lease_impl(
        &self,
        lease: &RunLease,
        give_way: &GiveWay,
    ) -> Result<LeaseAttempt, StateError> {
        self.write("take a run's lease", |tx| {
            if let Some(existing) = Self::load_lease(tx, &lease.run_id)?
                && lease_stands(&existing, &lease.holder, give_way)
            {
                return Ok(LeaseAttempt::HeldBy(existing));
            }
            exec(
                tx,
                "INSERT INTO run_leases (run_id, holder, host, pid, lease_until) \
                 VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (run_id) DO UPDATE SET \
                 holder = excluded.holder, host = excluded.host, pid = excluded.pid, \
                 lease_until = excluded.lease_until",
                params![
                    lease.run_id,
                    lease.holder,
                    lease.host,
                    lease.pid,
                    lease.lease_until
                ],
            )?;
            Ok(LeaseAttempt::Taken)
        })
    }

    fn renew_run_lease_impl(
        &self,
        run_id: &str,
        holder: &str,
        lease_until: i64,
    ) -> Result<(), StateError> {
        self.write("renew a run's lease", |tx| {
            let changed = exec(
                tx,
                "UPDATE run_leases SET lease_until = ?3 WHERE run_id = ?1 AND holder = ?2",
                params![run_id, holder, lease_until],
            )?;
            if changed == 0 {
                let now = Self::load_lease(tx, run_id)?;
                return Err(lease_lost(&self.db, run_id, holder, now.as_ref()).into());
            }
            Ok(())
        })
    }
}

/// A list as a JSON column.
fn to_json(list: &[String]) -> Res<String> {
    serde_json::to_string(list)
        .map_err(|e| Fail::Sql(rusqlite::Error::ToSqlConversionFailure(Box::new(e))))
}

/// An approvals row before its JSON columns are parsed.
type RawApproval = (
    String,
    String,
    String,
    String,
    String,
    String,
    String,
    String,
    i64,
    String,
    Option<String>,
    Option<String>,
    Option<i64>,
    Option<String>,
);

fn raw_approval(row: &Row<'_>) -> rusqlite::Result<RawApproval> {
    Ok((
        row.get(0)?,
        row.get(1)?,
        row.get(2)?,
        row.get(3)?,
        row.get(4)?,
        row.get(5)?,
        row.get(6)?,
        row.get(7)?,
        row.get(8)?,
        row.get(9)?,
        row.get(10)?,
        row.get(11)?,
        row.get(12)?,
        row.get(13)?,
    ))
}

impl SqliteState {
    fn load_credential(&self, tx: &Connection, id: &str) -> Res<Option<CredentialRecord>> {
        let text: Option<String> = query_one(
            tx,
            "SELECT record FROM credentials WHERE id = ?1",
            [id],
            |r| r.get(0),
        )
        .optional()?;
        text.map(|t| self.credential_record(&t)).transpose()
    }

    fn credential_record(&self, text: &str) -> Res<CredentialRecord> {
        serde_json::from_str(text)
            .map_err(|_| self.not_ours("a credential's record is not JSON").into())
    }

    fn save_credential(&self, tx: &Connection, record: &CredentialRecord) -> Res<()> {
        exec(
            tx,
            "INSERT INTO credentials (id, record) VALUES (?1, ?2) \
             ON CONFLICT (id) DO UPDATE SET record = excluded.record",
            params![
                record.id,
                serde_json::to_string(record)
                    .map_err(|_| self.not_ours("a credential's record cannot be written as JSON"))?
            ],
        )?;
        Ok(())
    }

    fn load_approval(&self, tx: &Connection, id: &str) -> Res<Option<ApprovalRecord>> {
        let raw = query_one(
            tx,
            &format!("SELECT {APPROVAL_COLUMNS} FROM approvals WHERE id = ?1"),
            [id],
            raw_approval,
        )
        .optional()?;
        raw.map(|r| self.approval_record(r)).transpose()
    }

    fn approval_record(&self, raw: RawApproval) -> Res<ApprovalRecord> {
        let (
            id,
            run_id,
            title,
            summary,
            envs,
            approvers,
            by,
            host,
            at,
            state,
            dby,
            dhost,
            dat,
            comment,
        ) = raw;
        let list = |text: &str| -> Res<Vec<String>> {
            serde_json::from_str(text)
                .map_err(|_| self.not_ours("a change request's list is not JSON").into())
        };
        Ok(ApprovalRecord {
            request: NewApproval {
                id,
                run_id,
                title,
                summary,
                environments: list(&envs)?,
                approvers: list(&approvers)?,
                requested_by: by,
                requested_host: host,
                requested_at: at,
            },
            state: ApprovalState::parse(&state)
                .ok_or_else(|| self.not_ours("a change request has an unknown state"))?,
            decided_by: dby,
            decided_host: dhost,
            decided_at: dat,
            comment,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_db() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state").join(STATE_FILE_NAME);
        (dir, path)
    }

    #[test]
    fn connection_is_wal_with_foreign_keys_and_leaves_fsyncs_to_the_barrier() {
        let (_dir, path) = temp_db();
        let state = SqliteState::open(&path).unwrap();
        let conn = state.conn();
        // NORMAL: commits do not fsync, barriers do. OFF would also skip
        // the fsyncs of checkpoints, which the barrier does not replace.
        let sync: i64 = conn
            .pragma_query_value(None, "synchronous", |r| r.get(0))
            .unwrap();
        assert_eq!(sync, 1, "synchronous must be NORMAL");
        let mode: String = conn
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        let fk: i64 = conn
            .pragma_query_value(None, "foreign_keys", |r| r.get(0))
            .unwrap();
        assert_eq!(fk, 1);
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
    }

    fn started(path: &Path) -> SqliteState {
        let state = SqliteState::open(path).unwrap();
        state
            .create_run(&super::super::tests::new_run("r1", 1))
            .unwrap();
        state
    }

    fn intent(seq: u64) -> EffectIntent {
        EffectIntent {
            seq,
            kind: "plugin".to_owned(),
            name: "gitlab.get_self_token".to_owned(),
            request_fingerprint: "0f".repeat(32),
            request_summary: "{}".to_owned(),
            mutates: false,
            started_at: 1,
        }
    }

    #[test]
    fn grouped_writes_wait_for_a_barrier_and_durable_ones_are_barriers() {
        let (_dir, path) = temp_db();
        let state = started(&path);
        let before = state.group.fsyncs();
        for seq in 1..=5 {
            state
                .begin_effect_with("r1", &intent(seq), Durability::Grouped)
                .unwrap();
        }
        assert_eq!(state.group.fsyncs(), before, "grouped writes do not fsync");
        // Another connection, as another process would, sees them now.
        let other = Connection::open(&path).unwrap();
        let seen: i64 = other
            .query_row("SELECT count(*) FROM journal", [], |r| r.get(0))
            .unwrap();
        assert_eq!(seen, 5);
        assert_eq!(state.group.fsyncs(), before, "reading fsyncs nothing");
        let before = state.group.fsyncs();
        state.sync().unwrap();
        assert_eq!(
            state.group.fsyncs(),
            before + 1,
            "one fsync covers all five"
        );
        state.sync().unwrap();
        assert_eq!(state.group.fsyncs(), before + 1, "nothing new to cover");
        state.begin_effect("r1", &intent(6)).unwrap();
        assert_eq!(state.group.fsyncs(), before + 2, "a durable write fsyncs");
        state
            .append_event(
                "r1",
                &RunEvent {
                    at: 1,
                    kind: "note".to_owned(),
                    message: "so does every other change".to_owned(),
                },
            )
            .unwrap();
        assert_eq!(state.group.fsyncs(), before + 3);
    }

    #[test]
    fn concurrent_runs_share_fsyncs() {
        const RUNS: usize = 8;
        const STEPS: u64 = 10;
        let (_dir, path) = temp_db();
        // One handle per run, as `keycycle rotate` opens them: the handles
        // share one group commit.
        let handles: Vec<SqliteState> = (0..RUNS)
            .map(|i| {
                let state = SqliteState::open(&path).unwrap();
                state
                    .create_run(&super::super::tests::new_run(&format!("r{i}"), 1))
                    .unwrap();
                state
            })
            .collect();
        assert!(Arc::ptr_eq(&handles[0].group, &handles[RUNS - 1].group));
        let before = handles[0].group.fsyncs();
        std::thread::scope(|s| {
            for (i, state) in handles.iter().enumerate() {
                s.spawn(move || {
                    let run = format!("r{i}");
                    for seq in 1..=STEPS {
                        state.begin_effect(&run, &intent(seq)).unwrap();
                    }
                });
            }
        });
        let fsyncs = handles[0].group.fsyncs() - before;
        let writes = RUNS as u64 * STEPS;
        eprintln!("{writes} durable writes by {RUNS} runs took {fsyncs} fsyncs");
        assert!(fsyncs <= writes, "never more than one fsync a write");
        for (i, state) in handles.iter().enumerate() {
            assert_eq!(
                state.effects(&format!("r{i}")).unwrap().len(),
                STEPS as usize
            );
        }
    }

    #[cfg(unix)]
    #[test]
    fn database_and_directory_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let (_dir, path) = temp_db();
        let state = SqliteState::open(&path).unwrap();
        // A write makes SQLite create the -wal file.
        state
            .create_run(&super::super::tests::new_run("r-private", 1))
            .unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
        let wal = path.with_file_name(format!("{STATE_FILE_NAME}-wal"));
        assert_eq!(mode(&wal), 0o600);
    }

    #[test]
    fn data_survives_reopening() {
        let (_dir, path) = temp_db();
        {
            let state = SqliteState::open(&path).unwrap();
            state
                .create_run(&super::super::tests::new_run("r-reopen", 5))
                .unwrap();
        }
        let state = SqliteState::open(&path).unwrap();
        let run = state.run("r-reopen").unwrap().unwrap();
        assert_eq!(run.started_at, 5);
        assert_eq!(run.state, RunState::Running);
    }

    #[test]
    fn newer_schema_is_refused() {
        let (_dir, path) = temp_db();
        drop(SqliteState::open(&path).unwrap());
        Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
        let err = SqliteState::open(&path).unwrap_err();
        assert!(
            matches!(err, StateError::NewerSchema { found, .. } if found == SCHEMA_VERSION + 1),
            "{err}"
        );
        let msg = err.to_string();
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        assert!(
            msg.contains(&format!("only version {SCHEMA_VERSION}")),
            "{msg}"
        );
    }

    #[test]
    fn a_version_2_database_gains_credential_records_and_keeps_its_runs() {
        use std::collections::BTreeMap;
        let (_dir, path) = temp_db();
        {
            let state = SqliteState::open(&path).unwrap();
            state
                .create_run(&super::super::tests::new_run("old", 1))
                .unwrap();
        }
        // What the previous release wrote: no credentials table, version 2.
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch("DROP TABLE credentials; DROP TABLE run_leases;")
            .unwrap();
        conn.pragma_update(None, "user_version", 2).unwrap();
        drop(conn);
        let state = SqliteState::open(&path).unwrap();
        assert!(state.run("old").unwrap().is_some(), "the run survived");
        let outcome = RotationOutcome {
            run_id: "old".to_owned(),
            state: RunState::Succeeded,
            at: 3,
            expires_at: None,
            expiry_source: None,
            params: BTreeMap::new(),
        };
        state.record_rotation("c", &outcome).unwrap();
        assert_eq!(
            state.credential("c").unwrap().unwrap().last_rotated_at,
            Some(3)
        );
    }

    #[test]
    fn a_version_1_database_gains_approvals_and_keeps_its_runs() {
        let (_dir, path) = temp_db();
        {
            let state = SqliteState::open(&path).unwrap();
            state
                .create_run(&super::super::tests::new_run("old", 1))
                .unwrap();
        }
        // What the previous release wrote: no approvals table, version 1.
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch("DROP TABLE approvals; DROP TABLE credentials; DROP TABLE run_leases;")
            .unwrap();
        conn.pragma_update(None, "user_version", 1).unwrap();
        drop(conn);
        let state = SqliteState::open(&path).unwrap();
        assert!(state.run("old").unwrap().is_some(), "the run survived");
        let request = NewApproval {
            id: "old:gate".to_owned(),
            run_id: "old".to_owned(),
            title: "t".to_owned(),
            summary: String::new(),
            environments: Vec::new(),
            approvers: Vec::new(),
            requested_by: "ops".to_owned(),
            requested_host: "h".to_owned(),
            requested_at: 2,
        };
        assert_eq!(
            state.request_approval(&request).unwrap().state,
            ApprovalState::Pending
        );
        let version: i64 = Connection::open(&path)
            .unwrap()
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
    }

    #[test]
    fn other_files_are_refused() {
        let (_dir, path) = temp_db();
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, b"this is not a database, it is some notes ...").unwrap();
        let err = SqliteState::open(&path).unwrap_err();
        assert!(matches!(err, StateError::NotStateDatabase { .. }), "{err}");
        assert!(err.to_string().contains("not an SQLite database"), "{err}");

        let other = path.with_file_name("other.db");
        Connection::open(&other)
            .unwrap()
            .execute_batch("CREATE TABLE notes (body TEXT);")
            .unwrap();
        let err = SqliteState::open(&other).unwrap_err();
        assert!(matches!(err, StateError::NotStateDatabase { .. }), "{err}");
    }

    #[test]
    fn busy_database_gives_a_clear_error() {
        let (_dir, path) = temp_db();
        let state = SqliteState::open_with_busy_timeout(&path, Duration::from_millis(100)).unwrap();
        state
            .create_run(&super::super::tests::new_run("r-busy", 1))
            .unwrap();
        let mut other = Connection::open(&path).unwrap();
        let blocker = other
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .unwrap();
        let started = std::time::Instant::now();
        let err = state.acquire_lock("cred", "r-busy").unwrap_err();
        assert!(started.elapsed() >= Duration::from_millis(100));
        assert!(
            matches!(
                err,
                StateError::Busy {
                    operation: "acquire a lock",
                    waited_ms: 100,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("is busy"), "{err}");
        // Reads still work while another process writes (WAL).
        assert!(state.run("r-busy").unwrap().is_some());
        drop(blocker);
        assert_eq!(
            state.acquire_lock("cred", "r-busy").unwrap(),
            LockAttempt::Acquired
        );
    }

    #[test]
    fn corrupt_rows_are_reported_not_skipped() {
        let (_dir, path) = temp_db();
        let state = SqliteState::open(&path).unwrap();
        state
            .create_run(&super::super::tests::new_run("r-corrupt", 1))
            .unwrap();
        Connection::open(&path)
            .unwrap()
            .execute("UPDATE runs SET state = 'paused'", [])
            .unwrap();
        let err = state.run("r-corrupt").unwrap_err();
        assert!(matches!(err, StateError::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains("paused"), "{err}");
    }

    #[test]
    fn concurrent_first_opens_create_one_schema() {
        let (_dir, path) = temp_db();
        let barrier = std::sync::Barrier::new(4);
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|_| {
                    s.spawn(|| {
                        barrier.wait();
                        SqliteState::open(&path).map(|_| ())
                    })
                })
                .collect();
            for h in handles {
                h.join().unwrap().unwrap();
            }
        });
        let state = SqliteState::open(&path).unwrap();
        assert!(state.locks().unwrap().is_empty());
    }
}
