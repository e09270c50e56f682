//! What durability costs: journaling one effect (its intent, then its
//! outcome) in the SQLite state database on disk against the in-memory
//! store, next to the cost of one fsync on the same disk, which bounds a
//! durable journal write from below (each is one commit and one fsync).
//! Grouped writes (`journal/sqlite_grouped`: a read's intent and result,
//! no barrier) show what group commit saves; `journal/sqlite_8_runs` is
//! eight runs journaling durably at once, sharing their fsyncs. The same
//! on PostgreSQL (`journal/postgres*`, with `--features test-server`: a
//! throwaway server on 127.0.0.1 started by the bench, its data on the
//! same disk): what a shared state costs a run.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::hint::black_box;
use std::io::{Seek, SeekFrom, Write};
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use keycycle_store::state::now_ms;
use keycycle_store::{
    Durability, EffectIntent, EffectOutcome, MasterKey, MemoryState, NewRun, SqliteState,
    StateStore,
};

/// The benchmark's files go under the build directory rather than the
/// system temporary directory, which may be a RAM disk where fsync is free.
fn scratch_dir() -> tempfile::TempDir {
    tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("create a scratch directory")
}

fn run(run_id: &str) -> NewRun {
    NewRun {
        run_id: run_id.to_owned(),
        runbook_path: "runbooks/gitlab-rotate.rhai".to_owned(),
        runbook_sha256: "ab".repeat(32),
        params: BTreeMap::from([("project".to_owned(), "group/app".to_owned())]),
        env: None,
        dry_run: false,
        user: "bench".to_owned(),
        host: "bench".to_owned(),
        plugins: Vec::new(),
        started_at: now_ms(),
    }
}

/// Journals effects one after another, each with a result the size of a
/// real plugin call's (a sealed token and a few fields).
fn journal_effects(c: &mut Criterion, name: &str, store: &dyn StateStore, how: Durability) {
    let key = MasterKey::generate();
    store.create_run(&run("bench")).expect("create the run");
    let sealed = key.seal("glpat-0123456789abcdefghij", "journal:bench:1:token");
    let result =
        format!(r#"{{"token":"{sealed}","id":4242,"expires_at":"2026-12-31","scopes":["api"]}}"#);
    let seq = Cell::new(0u64);
    c.bench_function(name, |b| {
        b.iter(|| {
            let next = seq.get() + 1;
            seq.set(next);
            black_box(journal_one(store, "bench", next, &result, how))
        })
    });
}

/// One effect's intent and outcome, each written as `how` says.
fn journal_one(store: &dyn StateStore, run: &str, seq: u64, result: &str, how: Durability) -> u64 {
    let intent = EffectIntent {
        seq,
        kind: "plugin".to_owned(),
        name: "gitlab.rotate_self".to_owned(),
        request_fingerprint: "0f".repeat(32),
        request_summary: r#"{"token":"***","expires_in_days":30}"#.to_owned(),
        mutates: true,
        started_at: 1,
    };
    store.begin_effect_with(run, &intent, how).expect("begin");
    let outcome = EffectOutcome {
        ok: true,
        result: result.to_owned(),
        error_kind: None,
        error: None,
        finished_at: 2,
    };
    store
        .finish_effect_with(run, seq, &outcome, how)
        .expect("finish");
    seq
}

fn journal_sqlite(c: &mut Criterion) {
    let dir = scratch_dir();
    let state = SqliteState::open_in_dir(dir.path()).expect("open the state database");
    journal_effects(c, "journal/sqlite_on_disk", &state, Durability::Durable);
}

fn journal_sqlite_grouped(c: &mut Criterion) {
    let dir = scratch_dir();
    let state = SqliteState::open_in_dir(dir.path()).expect("open the state database");
    journal_effects(c, "journal/sqlite_grouped", &state, Durability::Grouped);
}

/// Eight runs, each on its own handle as `keycycle rotate` opens them,
/// journal one durable effect each at the same time; one iteration is the
/// time until all eight are durable.
fn journal_sqlite_concurrent(c: &mut Criterion) {
    const RUNS: usize = 8;
    let dir = scratch_dir();
    let handles: Vec<SqliteState> = (0..RUNS)
        .map(|i| {
            let state = SqliteState::open_in_dir(dir.path()).expect("open the state database");
            state
                .create_run(&run(&format!("bench-{i}")))
                .expect("create the run");
            state
        })
        .collect();
    let seq = Cell::new(0u64);
    c.bench_function("journal/sqlite_8_runs", |b| {
        b.iter(|| {
            let next = seq.get() + 1;
            seq.set(next);
            std::thread::scope(|s| {
                for (i, state) in handles.iter().enumerate() {
                    s.spawn(move || {
                        journal_one(
                            state,
                            &format!("bench-{i}"),
                            next,
                            "{}",
                            Durability::Durable,
                        )
                    });
                }
            });
        })
    });
}

/// A throwaway server's database, and a handle on it.
#[cfg(feature = "test-server")]
fn postgres() -> (
    keycycle_store::pg_test_server::TestServer,
    keycycle_store::state::PostgresState,
) {
    use keycycle_store::pg_test_server::{PASSWORD, TestServer};
    use keycycle_store::state::{PgOptions, PostgresState};
    let server = TestServer::start();
    let db = server.create_database();
    let state = PostgresState::open(&PgOptions::new(&server.url(&db), Some(PASSWORD.to_owned())))
        .expect("open the PostgreSQL state");
    (server, state)
}

#[cfg(feature = "test-server")]
fn journal_postgres(c: &mut Criterion) {
    let (_server, state) = postgres();
    journal_effects(c, "journal/postgres", &state, Durability::Durable);
}

#[cfg(feature = "test-server")]
fn journal_postgres_grouped(c: &mut Criterion) {
    let (_server, state) = postgres();
    journal_effects(c, "journal/postgres_grouped", &state, Durability::Grouped);
}

fn journal_memory(c: &mut Criterion) {
    journal_effects(
        c,
        "journal/memory",
        &MemoryState::new(),
        Durability::Durable,
    );
}

/// One small overwrite made durable with `File::sync_all`, the floor under
/// any write that must survive a power cut; and one appended page, which
/// also changes the file's size as the database's log does.
fn fsync(c: &mut Criterion) {
    let dir = scratch_dir();
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(dir.path().join("fsync.bin"))
        .expect("create the fsync file");
    file.write_all(&[0u8; 4096]).expect("write");
    file.sync_all().expect("sync");
    let mut n = 0u8;
    c.bench_function("fsync/write_64_bytes_then_sync_all", |b| {
        b.iter(|| {
            n = n.wrapping_add(1);
            file.seek(SeekFrom::Start(0)).expect("seek");
            file.write_all(&[n; 64]).expect("write");
            file.sync_all().expect("sync");
        })
    });
    // What a WAL commit does: append a page, growing the file, then sync.
    let page = [7u8; 4096];
    file.seek(SeekFrom::End(0)).expect("seek");
    c.bench_function("fsync/append_4096_bytes_then_sync_all", |b| {
        b.iter(|| {
            file.write_all(&page).expect("write");
            file.sync_all().expect("sync");
        })
    });
}

fn config() -> Criterion {
    // Each disk iteration takes milliseconds; fewer, longer samples keep
    // the run short on a shared machine without losing the median.
    Criterion::default()
        .sample_size(40)
        .measurement_time(Duration::from_secs(8))
        .warm_up_time(Duration::from_secs(2))
}

criterion_group! {
    name = benches;
    config = config();
    targets = journal_sqlite, journal_sqlite_grouped, journal_sqlite_concurrent, journal_memory, fsync
}
#[cfg(feature = "test-server")]
criterion_group! {
    name = postgres_benches;
    config = config();
    targets = journal_postgres, journal_postgres_grouped
}
#[cfg(feature = "test-server")]
criterion_main!(benches, postgres_benches);
#[cfg(not(feature = "test-server"))]
criterion_main!(benches);
