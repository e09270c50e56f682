//! One test suite, run against every [`StateStore`] implementation, so the
//! in-memory store stays a faithful stand-in for the database.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Barrier;

use super::*;
use crate::MasterKey;

pub(super) fn new_run(run_id: &str, started_at: i64) -> NewRun {
    NewRun {
        run_id: run_id.to_owned(),
        runbook_path: "runbooks/gitlab-rotate.rhai".to_owned(),
        runbook_sha256: "ab".repeat(32),
        params: BTreeMap::from([("project".to_owned(), "group/app".to_owned())]),
        env: Some("prod".to_owned()),
        dry_run: false,
        user: "ops".to_owned(),
        host: "build-1".to_owned(),
        plugins: vec![PluginInfo {
            name: "gitlab".to_owned(),
            plugin: "keycycle-gitlab".to_owned(),
            version: "0.1.0".to_owned(),
            sha256: "cd".repeat(32),
        }],
        started_at,
    }
}

fn intent(seq: u64, mutates: bool) -> EffectIntent {
    EffectIntent {
        seq,
        kind: "plugin".to_owned(),
        name: "gitlab.rotate_self".to_owned(),
        request_fingerprint: format!("{seq:064x}"),
        request_summary: r#"{"token":"***"}"#.to_owned(),
        mutates,
        started_at: 1_000 + i64::try_from(seq).unwrap(),
    }
}

fn outcome(result: &str) -> EffectOutcome {
    EffectOutcome {
        ok: true,
        result: result.to_owned(),
        error_kind: None,
        error: None,
        finished_at: 2_000,
    }
}

fn action(id: &str, run_id: &str, due_at: i64) -> NewDeferred {
    NewDeferred {
        id: id.to_owned(),
        run_id: run_id.to_owned(),
        credential: Some("gitlab/deploy".to_owned()),
        description: "revoke the previous token".to_owned(),
        plugin: "gitlab".to_owned(),
        operation: "revoke".to_owned(),
        input: r#"{"token_id":42}"#.to_owned(),
        due_at,
    }
}

fn states(states: &[DeferredState]) -> DeferredFilter {
    DeferredFilter {
        states: states.to_vec(),
        run_id: None,
    }
}

fn one(store: &dyn StateStore, id: &str) -> DeferredRecord {
    store
        .deferred(&DeferredFilter::default())
        .unwrap()
        .into_iter()
        .find(|a| a.id == id)
        .unwrap_or_else(|| panic!("action {id} is not listed"))
}

fn runs_create_list_finish(store: &dyn StateStore) {
    store.create_run(&new_run("r1", 100)).unwrap();
    store.create_run(&new_run("r2", 300)).unwrap();
    store.create_run(&new_run("r3", 200)).unwrap();

    let err = store.create_run(&new_run("r1", 999)).unwrap_err();
    assert!(matches!(err, StateError::RunExists { .. }), "{err}");
    assert_eq!(store.run("r1").unwrap().unwrap().started_at, 100);
    assert!(store.run("absent").unwrap().is_none());
    assert!(matches!(
        store.create_run(&new_run("", 1)),
        Err(StateError::Invalid { .. })
    ));

    let r1 = store.run("r1").unwrap().unwrap();
    let expected = new_run("r1", 100);
    assert_eq!(r1.runbook_path, expected.runbook_path);
    assert_eq!(r1.runbook_sha256, expected.runbook_sha256);
    assert_eq!(r1.params, expected.params);
    assert_eq!(r1.env, expected.env);
    assert_eq!(r1.plugins, expected.plugins);
    assert_eq!((r1.user.as_str(), r1.host.as_str()), ("ops", "build-1"));
    assert_eq!(r1.state, RunState::Running);
    assert_eq!(r1.finished_at, None);
    assert!(r1.credentials.is_empty());

    let ids = |runs: Vec<RunRecord>| runs.into_iter().map(|r| r.run_id).collect::<Vec<_>>();
    assert_eq!(
        ids(store.list_runs(&RunFilter::default()).unwrap()),
        ["r2", "r3", "r1"]
    );
    let limited = RunFilter {
        limit: Some(2),
        ..RunFilter::default()
    };
    assert_eq!(ids(store.list_runs(&limited).unwrap()), ["r2", "r3"]);

    store
        .finish_run("r3", RunState::Succeeded, Some("rotated"))
        .unwrap();
    store
        .finish_run("r2", RunState::NeedsAttention, None)
        .unwrap();
    let r3 = store.run("r3").unwrap().unwrap();
    assert_eq!(r3.state, RunState::Succeeded);
    assert_eq!(r3.detail.as_deref(), Some("rotated"));
    assert!(r3.finished_at.is_some());
    let unfinished = RunFilter {
        unfinished_only: true,
        ..RunFilter::default()
    };
    assert_eq!(ids(store.list_runs(&unfinished).unwrap()), ["r1"]);
    // Since a time (inclusive), in some states, and both with a limit.
    let since = RunFilter {
        since: Some(200),
        ..RunFilter::default()
    };
    assert_eq!(ids(store.list_runs(&since).unwrap()), ["r2", "r3"]);
    let in_states = RunFilter {
        states: vec![RunState::Running, RunState::NeedsAttention],
        ..RunFilter::default()
    };
    assert_eq!(ids(store.list_runs(&in_states).unwrap()), ["r2", "r1"]);
    let all = RunFilter {
        since: Some(100),
        states: vec![RunState::Running, RunState::NeedsAttention],
        limit: Some(1),
        ..RunFilter::default()
    };
    assert_eq!(ids(store.list_runs(&all).unwrap()), ["r2"]);

    // Resuming reopens a run.
    store.finish_run("r2", RunState::Running, None).unwrap();
    let r2 = store.run("r2").unwrap().unwrap();
    assert_eq!((r2.state, r2.finished_at), (RunState::Running, None));
    assert_eq!(ids(store.list_runs(&unfinished).unwrap()), ["r2", "r1"]);

    let err = store
        .finish_run("absent", RunState::Failed, None)
        .unwrap_err();
    assert!(matches!(err, StateError::RunNotFound { .. }), "{err}");
    assert!(err.to_string().contains("absent"), "{err}");
    assert!(err.to_string().contains(&store.location()), "{err}");
}

fn events_in_order(store: &dyn StateStore) {
    store.create_run(&new_run("r1", 1)).unwrap();
    store.create_run(&new_run("r2", 2)).unwrap();
    assert!(store.events("r1").unwrap().is_empty());
    let event = |at, kind: &str, message: &str| RunEvent {
        at,
        kind: kind.to_owned(),
        message: message.to_owned(),
    };
    // Appended out of time order on purpose: append order wins.
    let r1 = [
        event(30, "note", "first"),
        event(10, "resumed", "resumed by ops@build-2"),
        event(20, "unlocked", "gitlab/deploy unlocked by ops"),
    ];
    for (i, e) in r1.iter().enumerate() {
        store.append_event("r1", e).unwrap();
        store
            .append_event("r2", &event(i as i64, "note", "other run"))
            .unwrap();
    }
    assert_eq!(store.events("r1").unwrap(), r1);
    assert_eq!(store.events("r2").unwrap().len(), 3);
    assert!(matches!(
        store.append_event("absent", &r1[0]),
        Err(StateError::RunNotFound { .. })
    ));
    assert!(matches!(
        store.events("absent"),
        Err(StateError::RunNotFound { .. })
    ));
}

fn journal_order_and_seq_checks(store: &dyn StateStore) {
    store.create_run(&new_run("r1", 1)).unwrap();
    store.create_run(&new_run("r2", 2)).unwrap();
    assert!(store.effects("r1").unwrap().is_empty());

    // The first effect must be FIRST_SEQ.
    let err = store
        .begin_effect("r1", &intent(FIRST_SEQ + 1, false))
        .unwrap_err();
    assert!(
        matches!(err, StateError::SeqOutOfOrder { expected: FIRST_SEQ, got, .. } if got == FIRST_SEQ + 1),
        "{err}"
    );
    store.begin_effect("r1", &intent(1, false)).unwrap();
    store.finish_effect("r1", 1, &outcome("1")).unwrap();
    store.begin_effect("r1", &intent(2, true)).unwrap();

    // A gap, and a repeat, are refused.
    assert!(matches!(
        store.begin_effect("r1", &intent(4, false)),
        Err(StateError::SeqOutOfOrder {
            expected: 3,
            got: 4,
            ..
        })
    ));
    assert!(matches!(
        store.begin_effect("r1", &intent(2, false)),
        Err(StateError::SeqOutOfOrder {
            expected: 3,
            got: 2,
            ..
        })
    ));
    // Runs have their own sequences.
    store.begin_effect("r2", &intent(1, false)).unwrap();

    let failed = EffectOutcome {
        ok: false,
        result: String::new(),
        error_kind: Some("provider".to_owned()),
        error: Some("403 Forbidden".to_owned()),
        finished_at: 3_000,
    };
    store.finish_effect("r1", 2, &failed).unwrap();

    let err = store.finish_effect("r1", 2, &outcome("again")).unwrap_err();
    assert!(
        matches!(err, StateError::EffectFinished { seq: 2, .. }),
        "{err}"
    );
    let err = store.finish_effect("r1", 3, &outcome("x")).unwrap_err();
    assert!(
        matches!(err, StateError::EffectNotFound { seq: 3, .. }),
        "{err}"
    );
    assert!(matches!(
        store.finish_effect("absent", 1, &outcome("x")),
        Err(StateError::RunNotFound { .. })
    ));
    assert!(matches!(
        store.begin_effect("absent", &intent(1, false)),
        Err(StateError::RunNotFound { .. })
    ));

    let journal = store.effects("r1").unwrap();
    assert_eq!(
        journal,
        [
            EffectRecord {
                intent: intent(1, false),
                outcome: Some(outcome("1")),
            },
            EffectRecord {
                intent: intent(2, true),
                outcome: Some(failed),
            },
        ]
    );
    // The first outcome was not replaced by the refused second one.
    assert_eq!(journal[1].outcome.as_ref().unwrap().result, "");
}

fn in_flight_effect_has_no_outcome(store: &dyn StateStore) {
    store.create_run(&new_run("r1", 1)).unwrap();
    store.begin_effect("r1", &intent(1, false)).unwrap();
    store.finish_effect("r1", 1, &outcome("a")).unwrap();
    store.begin_effect("r1", &intent(2, true)).unwrap();
    let journal = store.effects("r1").unwrap();
    assert_eq!(journal.len(), 2);
    assert!(journal[0].outcome.is_some());
    assert_eq!(journal[1].intent, intent(2, true));
    assert_eq!(journal[1].outcome, None);

    // The next effect may begin while one is open (a resume finishes the
    // open one as it sees fit), and the open one can still be finished.
    store.begin_effect("r1", &intent(3, false)).unwrap();
    store.finish_effect("r1", 2, &outcome("late")).unwrap();
    let journal = store.effects("r1").unwrap();
    assert_eq!(
        journal[1].outcome.as_ref().map(|o| o.result.as_str()),
        Some("late")
    );
    assert_eq!(journal[2].outcome, None);
}

fn locks_acquire_and_release(store: &dyn StateStore) {
    store.create_run(&new_run("r1", 1)).unwrap();
    store.create_run(&new_run("r2", 2)).unwrap();
    store.create_run(&new_run("r3", 3)).unwrap();

    assert_eq!(
        store.acquire_lock("gitlab/deploy", "r1").unwrap(),
        LockAttempt::Acquired
    );
    assert_eq!(
        store.acquire_lock("gitlab/deploy", "r1").unwrap(),
        LockAttempt::AlreadyHeld
    );
    let LockAttempt::HeldBy(held) = store.acquire_lock("gitlab/deploy", "r2").unwrap() else {
        panic!("another run's lock must be reported as held");
    };
    assert_eq!(held.credential, "gitlab/deploy");
    assert_eq!(held.run_id, "r1");
    assert!(held.acquired_at > 0);
    assert_eq!(
        store.acquire_lock("gitlab/trigger", "r1").unwrap(),
        LockAttempt::Acquired
    );
    assert_eq!(
        store.acquire_lock("github/app", "r2").unwrap(),
        LockAttempt::Acquired
    );
    assert!(matches!(
        store.acquire_lock("x", "absent"),
        Err(StateError::RunNotFound { .. })
    ));
    assert!(matches!(
        store.acquire_lock("", "r1"),
        Err(StateError::Invalid { .. })
    ));

    let held: Vec<(String, String)> = store
        .locks()
        .unwrap()
        .into_iter()
        .map(|l| (l.credential, l.run_id))
        .collect();
    assert_eq!(
        held,
        [
            ("github/app".to_owned(), "r2".to_owned()),
            ("gitlab/deploy".to_owned(), "r1".to_owned()),
            ("gitlab/trigger".to_owned(), "r1".to_owned()),
        ]
    );

    assert_eq!(
        store.release_run_locks("r1").unwrap(),
        ["gitlab/deploy", "gitlab/trigger"]
    );
    assert!(store.release_run_locks("r1").unwrap().is_empty());
    assert_eq!(
        store.acquire_lock("gitlab/deploy", "r2").unwrap(),
        LockAttempt::Acquired
    );

    // An operator's unlock.
    let released = store.release_lock("gitlab/deploy").unwrap().unwrap();
    assert_eq!(released.run_id, "r2");
    assert_eq!(store.release_lock("gitlab/deploy").unwrap(), None);
    assert_eq!(store.locks().unwrap().len(), 1);

    // The history outlives the locks.
    assert_eq!(
        store.run("r1").unwrap().unwrap().credentials,
        ["gitlab/deploy", "gitlab/trigger"]
    );
    let mut r2_credentials = store.run("r2").unwrap().unwrap().credentials;
    r2_credentials.sort();
    assert_eq!(r2_credentials, ["github/app", "gitlab/deploy"]);
    let by_credential = |c: &str| {
        store
            .list_runs(&RunFilter {
                credential: Some(c.to_owned()),
                ..RunFilter::default()
            })
            .unwrap()
            .into_iter()
            .map(|r| r.run_id)
            .collect::<Vec<_>>()
    };
    assert_eq!(by_credential("gitlab/deploy"), ["r2", "r1"]);
    assert_eq!(by_credential("gitlab/trigger"), ["r1"]);
    assert!(by_credential("never/locked").is_empty());
}

fn schedule_is_idempotent(store: &dyn StateStore) {
    store.create_run(&new_run("r1", 1)).unwrap();
    assert_eq!(
        store.schedule(&action("d-r1-4", "r1", 500)).unwrap(),
        "d-r1-4"
    );
    let mut changed = action("d-r1-4", "r1", 900);
    changed.description = "something else".to_owned();
    assert_eq!(store.schedule(&changed).unwrap(), "d-r1-4");
    let all = store.deferred(&DeferredFilter::default()).unwrap();
    assert_eq!(all.len(), 1);
    let a = &all[0];
    assert_eq!(a.due_at, 500);
    assert_eq!(a.next_attempt_at, 500);
    assert_eq!(a.description, "revoke the previous token");
    assert_eq!(a.state, DeferredState::Pending);
    assert_eq!(a.attempts, 0);
    assert_eq!(a.credential.as_deref(), Some("gitlab/deploy"));
    assert_eq!(a.input, r#"{"token_id":42}"#);
    assert!(a.created_at > 0);
    assert_eq!(
        (&a.claimed_by, a.lease_until, &a.finished_at),
        (&None, None, &None)
    );

    let generated = store.schedule(&action("", "r1", 600)).unwrap();
    assert!(generated.starts_with("d-r1-"), "{generated}");
    let other = store.schedule(&action("", "r1", 600)).unwrap();
    assert_ne!(generated, other);
    assert_eq!(store.deferred(&DeferredFilter::default()).unwrap().len(), 3);

    assert!(matches!(
        store.schedule(&action("d-x", "absent", 1)),
        Err(StateError::RunNotFound { .. })
    ));

    store.create_run(&new_run("r2", 2)).unwrap();
    store.schedule(&action("d-r2-1", "r2", 50)).unwrap();
    let ids = |filter: &DeferredFilter| {
        store
            .deferred(filter)
            .unwrap()
            .into_iter()
            .map(|a| a.id)
            .collect::<Vec<_>>()
    };
    let by_run = DeferredFilter {
        states: Vec::new(),
        run_id: Some("r2".to_owned()),
    };
    assert_eq!(ids(&by_run), ["d-r2-1"]);
    // Ordered by due time.
    assert_eq!(ids(&DeferredFilter::default())[..2], ["d-r2-1", "d-r1-4"]);
}

fn claims_leases_and_completion(store: &dyn StateStore) {
    store.create_run(&new_run("r1", 1)).unwrap();
    store.schedule(&action("late", "r1", 300)).unwrap();
    store.schedule(&action("early", "r1", 100)).unwrap();

    assert_eq!(store.claim_due(99, "c1", 50).unwrap(), None);
    let claimed = store.claim_due(1_000, "c1", 50).unwrap().unwrap();
    assert_eq!(claimed.id, "early");
    assert_eq!(claimed.state, DeferredState::Running);
    assert_eq!(claimed.claimed_by.as_deref(), Some("c1"));
    assert_eq!(claimed.lease_until, Some(1_050));
    assert_eq!(claimed.attempts, 1);
    assert_eq!(one(store, "early"), claimed);

    // Within the lease, nobody else gets it.
    let second = store.claim_due(1_049, "c2", 50).unwrap().unwrap();
    assert_eq!(second.id, "late");
    assert_eq!(store.claim_due(1_049, "c2", 50).unwrap(), None);

    // A claimer renews its claim while the action runs: past the first
    // lease, nobody takes it over.
    store.renew_claim("early", "c1", 1_080).unwrap();
    assert_eq!(one(store, "early").lease_until, Some(1_080));
    assert_eq!(store.claim_due(1_060, "c2", 50).unwrap(), None);
    assert!(matches!(
        store.renew_claim("early", "c2", 9_999),
        Err(StateError::LostLease { .. })
    ));
    assert!(matches!(
        store.renew_claim("late", "c1", 9_999),
        Err(StateError::LostLease { .. })
    ));

    // Once the lease ends, another claimer takes it over.
    let taken = store.claim_due(1_080, "c2", 50).unwrap().unwrap();
    assert_eq!(taken.id, "early");
    assert_eq!(taken.claimed_by.as_deref(), Some("c2"));
    assert_eq!(taken.attempts, 2);
    assert_eq!(taken.lease_until, Some(1_130));
    let note = taken.last_error.unwrap();
    assert!(note.contains("c1") && note.contains("expired"), "{note}");

    // The first claimer lost it.
    let err = store.complete_action("early", "c1", None).unwrap_err();
    assert!(
        matches!(&err, StateError::LostLease { holder: Some(h), state: DeferredState::Running, .. } if h == "c2"),
        "{err}"
    );
    assert!(err.to_string().contains("early"), "{err}");
    assert!(matches!(
        store.fail_action("early", "c1", "boom", None),
        Err(StateError::LostLease { .. })
    ));

    store
        .complete_action("early", "c2", Some("revoked token 42"))
        .unwrap();
    let done = one(store, "early");
    assert_eq!(done.state, DeferredState::Done);
    assert_eq!(done.note.as_deref(), Some("revoked token 42"));
    assert_eq!(done.claimed_by.as_deref(), Some("c2"));
    assert_eq!(done.lease_until, None);
    assert!(done.finished_at.is_some());
    // Done is final: no completing twice, no claiming again.
    assert!(matches!(
        store.complete_action("early", "c2", None),
        Err(StateError::LostLease {
            state: DeferredState::Done,
            holder: None,
            ..
        })
    ));
    let late = store.claim_due(10_000, "c3", 50).unwrap().unwrap();
    assert_eq!((late.id.as_str(), late.attempts), ("late", 2));
    assert_eq!(store.claim_due(10_000, "c4", 50).unwrap(), None);

    // A claimer whose lease ran out, but was not taken over, still finishes.
    assert_eq!(store.claim_due(10_049, "c4", 50).unwrap(), None);
    store.complete_action("late", "c3", None).unwrap();
    assert_eq!(one(store, "late").state, DeferredState::Done);

    assert!(matches!(
        store.complete_action("absent", "c1", None),
        Err(StateError::ActionNotFound { .. })
    ));
    assert!(matches!(
        store.claim_due(0, "", 50),
        Err(StateError::Invalid { .. })
    ));
    assert!(matches!(
        store.claim_due(0, "c1", 0),
        Err(StateError::Invalid { .. })
    ));
}

fn failures_retry_or_stay_failed(store: &dyn StateStore) {
    store.create_run(&new_run("r1", 1)).unwrap();
    store.schedule(&action("a", "r1", 100)).unwrap();

    let claimed = store.claim_due(100, "c1", 1_000).unwrap().unwrap();
    assert_eq!(claimed.id, "a");
    store
        .fail_action("a", "c1", "503 from provider", Some(5_000))
        .unwrap();
    let pending = one(store, "a");
    assert_eq!(pending.state, DeferredState::Pending);
    assert_eq!(pending.next_attempt_at, 5_000);
    assert_eq!(pending.last_error.as_deref(), Some("503 from provider"));
    assert_eq!((pending.claimed_by, pending.lease_until), (None, None));
    assert_eq!(pending.attempts, 1);
    assert_eq!(
        store
            .deferred(&states(&[DeferredState::Pending]))
            .unwrap()
            .len(),
        1
    );

    // Not before the retry time.
    assert_eq!(store.claim_due(4_999, "c2", 1_000).unwrap(), None);
    let again = store.claim_due(5_000, "c2", 1_000).unwrap().unwrap();
    assert_eq!(again.attempts, 2);
    assert!(matches!(
        store.retry_action("a"),
        Err(StateError::NotFailed {
            state: DeferredState::Running,
            ..
        })
    ));

    store
        .fail_action("a", "c2", "token already revoked elsewhere", None)
        .unwrap();
    let failed = one(store, "a");
    assert_eq!(failed.state, DeferredState::Failed);
    assert_eq!(
        failed.last_error.as_deref(),
        Some("token already revoked elsewhere")
    );
    assert!(failed.finished_at.is_some());
    // Failed actions are never claimed and never dropped.
    assert_eq!(store.claim_due(i64::MAX, "c3", 1_000).unwrap(), None);
    let listed = store.deferred(&states(&[DeferredState::Failed])).unwrap();
    assert_eq!(listed, std::slice::from_ref(&failed));
    assert!(
        store
            .deferred(&states(&[DeferredState::Pending, DeferredState::Running]))
            .unwrap()
            .is_empty()
    );

    // The operator retries it; it is due at once.
    store.retry_action("a").unwrap();
    let retried = one(store, "a");
    assert_eq!(retried.state, DeferredState::Pending);
    assert_eq!(retried.finished_at, None);
    assert_eq!(retried.attempts, 2);
    let third = store.claim_due(5_000, "c3", 1_000).unwrap().unwrap();
    assert_eq!((third.id.as_str(), third.attempts), ("a", 3));
    assert!(matches!(
        store.retry_action("absent"),
        Err(StateError::ActionNotFound { .. })
    ));
}

/// N handles (separate database connections for SQLite, as separate
/// processes would have) race for one credential: exactly one wins.
fn lock_race(handles: Vec<Box<dyn StateStore>>) {
    let n = handles.len();
    for i in 0..n {
        handles[0]
            .create_run(&new_run(&format!("race-{i}"), i as i64))
            .unwrap();
    }
    let barrier = Barrier::new(n);
    let results: Vec<(String, LockAttempt)> = std::thread::scope(|s| {
        let threads: Vec<_> = handles
            .iter()
            .enumerate()
            .map(|(i, store)| {
                let barrier = &barrier;
                s.spawn(move || {
                    let run_id = format!("race-{i}");
                    barrier.wait();
                    let attempt = store.acquire_lock("shared/credential", &run_id).unwrap();
                    (run_id, attempt)
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    });
    let winners: Vec<&String> = results
        .iter()
        .filter(|(_, a)| *a == LockAttempt::Acquired)
        .map(|(r, _)| r)
        .collect();
    assert_eq!(winners.len(), 1, "{results:?}");
    for (run_id, attempt) in &results {
        if run_id != winners[0] {
            assert!(
                matches!(attempt, LockAttempt::HeldBy(l) if l.run_id == *winners[0]),
                "{run_id}: {attempt:?}"
            );
        }
    }
    let locks = handles[0].locks().unwrap();
    assert_eq!(locks.len(), 1);
    assert_eq!(&locks[0].run_id, winners[0]);
}

/// Four cleanup workers with their own handles drain 20 due actions: each
/// is claimed, and completed, exactly once.
fn claim_race(handles: Vec<Box<dyn StateStore>>) {
    const ACTIONS: usize = 20;
    handles[0].create_run(&new_run("r1", 1)).unwrap();
    for i in 0..ACTIONS {
        handles[0]
            .schedule(&action(&format!("a{i:02}"), "r1", i as i64))
            .unwrap();
    }
    let barrier = Barrier::new(handles.len());
    let claims: Vec<Vec<String>> = std::thread::scope(|s| {
        let threads: Vec<_> = handles
            .iter()
            .enumerate()
            .map(|(w, store)| {
                let barrier = &barrier;
                s.spawn(move || {
                    let claimer = format!("worker-{w}");
                    let mut mine = Vec::new();
                    barrier.wait();
                    while let Some(a) = store.claim_due(1_000, &claimer, 60_000).unwrap() {
                        assert_eq!(a.claimed_by.as_deref(), Some(claimer.as_str()));
                        store.complete_action(&a.id, &claimer, None).unwrap();
                        mine.push(a.id);
                    }
                    mine
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    });
    let all: Vec<&String> = claims.iter().flatten().collect();
    let distinct: BTreeSet<&String> = all.iter().copied().collect();
    assert_eq!(all.len(), ACTIONS, "{claims:?}");
    assert_eq!(distinct.len(), ACTIONS, "{claims:?}");
    let records = handles[0].deferred(&DeferredFilter::default()).unwrap();
    assert_eq!(records.len(), ACTIONS);
    for record in records {
        assert_eq!(record.state, DeferredState::Done, "{}", record.id);
        assert_eq!(record.attempts, 1, "{}", record.id);
    }
}

/// A sealed secret in a journaled result is stored sealed: the database
/// files never hold its plaintext.
fn sealed_secret_never_reaches_disk(store: &SqliteState) {
    let key = MasterKey::generate();
    let canary = format!("glpat-canary-{:016x}", rand::random::<u64>());
    let context = "journal:r1:1:token";
    let sealed = key.seal(&canary, context);
    store.create_run(&new_run("r1", 1)).unwrap();
    store.begin_effect("r1", &intent(1, true)).unwrap();
    let result = serde_json::json!({ "token": sealed, "id": 42 }).to_string();
    store.finish_effect("r1", 1, &outcome(&result)).unwrap();

    let mut bytes = Vec::new();
    let dir = store.path().parent().unwrap();
    for entry in std::fs::read_dir(dir).unwrap() {
        bytes.extend(std::fs::read(entry.unwrap().path()).unwrap());
    }
    let contains = |needle: &str| bytes.windows(needle.len()).any(|w| w == needle.as_bytes());
    // The scan does see what was written...
    assert!(contains(&sealed), "the sealed value should be in the files");
    // ...and the plaintext is not among it.
    assert!(
        !contains(&canary),
        "the plaintext reached the database files"
    );

    let stored = &store.effects("r1").unwrap()[0];
    let json: serde_json::Value =
        serde_json::from_str(&stored.outcome.as_ref().unwrap().result).unwrap();
    let opened = key.open(json["token"].as_str().unwrap(), context).unwrap();
    assert_eq!(opened.expose(), canary);
}

fn credential_records_follow_rotations_and_checks(store: &dyn StateStore) {
    assert_eq!(store.credential("gl-deploy").unwrap(), None);
    let check = CheckOutcome {
        at: 100,
        state: "warning".to_owned(),
        detail: Some("expires in 30 days".to_owned()),
        expires_at: Some(5_000),
        expiry_source: Some("provider".to_owned()),
        last_used_at: Some(90),
    };
    store.record_check("gl-deploy", &check).unwrap();
    let r = store.credential("gl-deploy").unwrap().unwrap();
    assert_eq!(r.last_check.as_deref(), Some("warning"));
    assert_eq!((r.expires_at, r.last_used_at), (Some(5_000), Some(90)));
    assert_eq!(r.last_rotated_at, None);

    // A failed rotation is recorded, and changes nothing else.
    let failed = RotationOutcome {
        run_id: "r1".to_owned(),
        state: RunState::Failed,
        at: 200,
        expires_at: Some(9_000),
        expiry_source: Some("rotation".to_owned()),
        params: BTreeMap::from([("token_id".to_owned(), "8".to_owned())]),
    };
    store.record_rotation("gl-deploy", &failed).unwrap();
    let r = store.credential("gl-deploy").unwrap().unwrap();
    assert_eq!(r.last_run_state, Some(RunState::Failed));
    assert_eq!((r.expires_at, r.last_rotated_at), (Some(5_000), None));
    assert!(
        r.params.is_empty(),
        "a failed rotation changes no parameter"
    );

    // A success replaces the expiry, and forgets the old token's last use.
    let ok = RotationOutcome {
        run_id: "r2".to_owned(),
        state: RunState::Succeeded,
        ..failed
    };
    store.record_rotation("gl-deploy", &ok).unwrap();
    let r = store.credential("gl-deploy").unwrap().unwrap();
    assert_eq!(r.last_run_id.as_deref(), Some("r2"));
    assert_eq!(r.last_rotated_at, Some(200));
    assert_eq!(r.expires_at, Some(9_000));
    assert_eq!(r.expiry_source.as_deref(), Some("rotation"));
    assert_eq!(r.last_used_at, None);
    assert_eq!(r.params["token_id"], "8", "the new token's id is followed");
    // A success with no known expiry drops the old one.
    let unknown = RotationOutcome {
        expires_at: None,
        at: 300,
        ..ok.clone()
    };
    store.record_rotation("gl-deploy", &unknown).unwrap();
    let r = store.credential("gl-deploy").unwrap().unwrap();
    assert_eq!((r.expires_at, r.expiry_source), (None, None));
    // A check that reads no expiry keeps the recorded one.
    store.record_rotation("gl-deploy", &ok).unwrap();
    let blind = CheckOutcome {
        expires_at: None,
        last_used_at: None,
        state: "ok".to_owned(),
        ..check
    };
    store.record_check("gl-deploy", &blind).unwrap();
    assert_eq!(
        store.credential("gl-deploy").unwrap().unwrap().expires_at,
        Some(9_000)
    );
    store.record_check("zd-api", &blind).unwrap();
    let ids: Vec<String> = store
        .credentials()
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(ids, ["gl-deploy", "zd-api"]);
}

/// A grouped journal write is a write like any other to every reader: the
/// same checks, the same records, at once; only its fsync waits.
fn grouped_writes_read_back_at_once(store: &dyn StateStore) {
    store.create_run(&new_run("r1", 1)).unwrap();
    store
        .begin_effect_with("r1", &intent(1, false), Durability::Grouped)
        .unwrap();
    store
        .finish_effect_with("r1", 1, &outcome("read"), Durability::Grouped)
        .unwrap();
    store
        .begin_effect_with("r1", &intent(2, true), Durability::Durable)
        .unwrap();
    assert!(matches!(
        store.begin_effect_with("r1", &intent(4, false), Durability::Grouped),
        Err(StateError::SeqOutOfOrder { expected: 3, .. })
    ));
    assert!(matches!(
        store.finish_effect_with("r1", 1, &outcome("again"), Durability::Grouped),
        Err(StateError::EffectFinished { seq: 1, .. })
    ));
    store.sync().unwrap();
    // A barrier with nothing new to cover is fine too.
    store.sync().unwrap();
    let journal = store.effects("r1").unwrap();
    assert_eq!(journal.len(), 2);
    assert_eq!(journal[0].outcome, Some(outcome("read")));
    assert_eq!(journal[1].outcome, None, "step 2 is in flight");
}

macro_rules! suite {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $(
                #[test]
                fn $name() {
                    super::$name(&super::MemoryState::new());
                }
            )*

            #[test]
            fn lock_race() {
                let shared = super::MemoryState::new();
                super::lock_race(
                    (0..8).map(|_| Box::new(shared.clone()) as Box<dyn super::StateStore>).collect(),
                );
            }

            #[test]
            fn lease_race() {
                let shared = super::MemoryState::new();
                super::lease_race(
                    (0..8).map(|_| Box::new(shared.clone()) as Box<dyn super::StateStore>).collect(),
                );
            }

            #[test]
            fn claim_race() {
                let shared = super::MemoryState::new();
                super::claim_race(
                    (0..4).map(|_| Box::new(shared.clone()) as Box<dyn super::StateStore>).collect(),
                );
            }

            #[test]
            fn rotation_claim_race() {
                let shared = super::MemoryState::new();
                super::rotation_claim_race(
                    (0..6).map(|_| Box::new(shared.clone()) as Box<dyn super::StateStore>).collect(),
                );
            }
        }

        mod postgres {
            use super::{PgOptions, PostgresState};
            use crate::pg_test_server::{PASSWORD, TestServer};

            /// A handle on a new database of the shared test server: each
            /// test has a database of its own.
            fn open_db(db: &str) -> PostgresState {
                let server = TestServer::shared();
                PostgresState::open(&PgOptions::new(&server.url(db), Some(PASSWORD.to_owned())))
                    .unwrap()
            }

            fn open() -> PostgresState {
                open_db(&TestServer::shared().create_database())
            }

            fn handles(n: usize) -> Vec<Box<dyn super::StateStore>> {
                let db = TestServer::shared().create_database();
                (0..n).map(|_| Box::new(open_db(&db)) as Box<dyn super::StateStore>).collect()
            }

            $(
                #[test]
                fn $name() {
                    super::$name(&open());
                }
            )*

            #[test]
            fn lock_race() {
                super::lock_race(handles(8));
            }

            #[test]
            fn claim_race() {
                super::claim_race(handles(4));
            }

            #[test]
            fn lease_race() {
                super::lease_race(handles(6));
            }

            #[test]
            fn rotation_claim_race() {
                super::rotation_claim_race(handles(6));
            }
        }

        mod sqlite {
            use super::SqliteState;

            fn open() -> (tempfile::TempDir, SqliteState) {
                let dir = tempfile::tempdir().unwrap();
                let state = SqliteState::open_in_dir(dir.path()).unwrap();
                (dir, state)
            }

            fn handles(n: usize) -> (tempfile::TempDir, Vec<Box<dyn super::StateStore>>) {
                let dir = tempfile::tempdir().unwrap();
                let handles = (0..n)
                    .map(|_| {
                        Box::new(SqliteState::open_in_dir(dir.path()).unwrap())
                            as Box<dyn super::StateStore>
                    })
                    .collect();
                (dir, handles)
            }

            $(
                #[test]
                fn $name() {
                    let (_dir, state) = open();
                    super::$name(&state);
                }
            )*

            #[test]
            fn lock_race() {
                let (_dir, handles) = handles(8);
                super::lock_race(handles);
            }

            #[test]
            fn claim_race() {
                let (_dir, handles) = handles(4);
                super::claim_race(handles);
            }

            #[test]
            fn lease_race() {
                let (_dir, handles) = handles(6);
                super::lease_race(handles);
            }

            #[test]
            fn rotation_claim_race() {
                let (_dir, handles) = handles(6);
                super::rotation_claim_race(handles);
            }

            #[test]
            fn sealed_secret_never_reaches_disk() {
                let (_dir, state) = open();
                super::sealed_secret_never_reaches_disk(&state);
            }
        }
    };
}

/// Ending a run and releasing its locks is one change: the run is finished
/// and its locks (only its own) are free, and a missing run changes nothing.
fn end_run_finishes_and_releases_together(store: &dyn StateStore) {
    store.create_run(&new_run("r1", 1)).unwrap();
    store.create_run(&new_run("r2", 2)).unwrap();
    store.acquire_lock("b/cred", "r1").unwrap();
    store.acquire_lock("a/cred", "r1").unwrap();
    store.acquire_lock("c/cred", "r2").unwrap();
    let released = store
        .end_run("r1", RunState::Succeeded, Some("done"))
        .unwrap();
    assert_eq!(released, ["a/cred", "b/cred"]);
    let run = store.run("r1").unwrap().unwrap();
    assert_eq!(run.state, RunState::Succeeded);
    assert!(run.finished_at.is_some());
    assert_eq!(run.detail.as_deref(), Some("done"));
    let locks: Vec<String> = store
        .locks()
        .unwrap()
        .into_iter()
        .map(|l| l.credential)
        .collect();
    assert_eq!(locks, ["c/cred"], "only the ended run's locks are released");
    assert!(matches!(
        store.end_run("absent", RunState::Failed, None),
        Err(StateError::RunNotFound { .. })
    ));
    assert_eq!(store.locks().unwrap().len(), 1);
}

/// A change request is recorded once, decided once, and listed while it
/// waits.
fn approvals_are_requested_once_and_decided_once(store: &dyn StateStore) {
    store.create_run(&new_run("r1", 1)).unwrap();
    let request = NewApproval {
        id: "r1:stage-prod".to_owned(),
        run_id: "r1".to_owned(),
        title: "Rotate the token in stage and prod".to_owned(),
        summary: "new PAT in 2 environments".to_owned(),
        environments: vec!["stage".to_owned(), "prod".to_owned()],
        approvers: vec!["group:sre".to_owned()],
        requested_by: "ops".to_owned(),
        requested_host: "build-1".to_owned(),
        requested_at: 5,
    };
    let first = store.request_approval(&request).unwrap();
    assert_eq!(first.state, ApprovalState::Pending);
    assert_eq!(first.request, request);
    // Asking again (a resumed run) returns the first request unchanged.
    let mut again = request.clone();
    again.summary = "changed".to_owned();
    assert_eq!(store.request_approval(&again).unwrap(), first);
    assert_eq!(store.approvals(true).unwrap(), vec![first.clone()]);

    let decision = ApprovalDecision {
        approved: true,
        by: "alice".to_owned(),
        host: "laptop".to_owned(),
        at: 9,
        comment: Some("CHG0042 approved".to_owned()),
    };
    let decided = store.decide_approval("r1:stage-prod", &decision).unwrap();
    assert_eq!(decided.state, ApprovalState::Approved);
    assert_eq!(decided.decided_by.as_deref(), Some("alice"));
    assert_eq!(
        store.approval("r1:stage-prod").unwrap(),
        Some(decided.clone())
    );
    assert!(store.approvals(true).unwrap().is_empty());
    assert_eq!(store.approvals(false).unwrap(), vec![decided]);

    let reject = ApprovalDecision {
        approved: false,
        ..decision
    };
    assert!(matches!(
        store.decide_approval("r1:stage-prod", &reject),
        Err(StateError::AlreadyDecided {
            state: ApprovalState::Approved,
            ..
        })
    ));
    assert!(matches!(
        store.decide_approval("nope", &reject),
        Err(StateError::ApprovalNotFound { .. })
    ));
    let orphan = NewApproval {
        run_id: "missing".to_owned(),
        ..request
    };
    assert!(matches!(
        store.request_approval(&orphan),
        Err(StateError::RunNotFound { .. })
    ));
}

/// A run's lease has one holder until it expires; then anyone may take
/// it over, and the old holder's renewals fail.
fn run_leases_expire_and_are_taken_over(store: &dyn StateStore) {
    let lease = |holder: &str, until: i64| RunLease {
        run_id: "r1".to_owned(),
        holder: holder.to_owned(),
        host: format!("{holder}-host"),
        pid: 42,
        lease_until: until,
    };
    assert_eq!(store.run_lease("r1").unwrap(), None);
    assert_eq!(
        store.take_run_lease(&lease("a", 1_000), 0).unwrap(),
        LeaseAttempt::Taken
    );
    // Taking it again is a renewal.
    assert_eq!(
        store.take_run_lease(&lease("a", 1_500), 10).unwrap(),
        LeaseAttempt::Taken
    );
    assert_eq!(
        store.take_run_lease(&lease("b", 2_000), 1_499).unwrap(),
        LeaseAttempt::HeldBy(lease("a", 1_500))
    );
    store.renew_run_lease("r1", "a", 3_000).unwrap();
    assert!(matches!(
        store.renew_run_lease("r1", "b", 3_000),
        Err(StateError::RunLeaseLost { .. })
    ));
    // Expired: b takes it over, and a has lost it.
    assert_eq!(
        store.take_run_lease(&lease("b", 9_000), 3_000).unwrap(),
        LeaseAttempt::Taken
    );
    let err = store.renew_run_lease("r1", "a", 10_000).unwrap_err();
    assert!(
        matches!(&err, StateError::RunLeaseLost { by: Some(b), .. } if b == "b"),
        "{err}"
    );
    // Giving up a lease one does not hold changes nothing.
    store.drop_run_lease("r1", "a").unwrap();
    assert_eq!(store.run_lease("r1").unwrap(), Some(lease("b", 9_000)));
    store.drop_run_lease("r1", "b").unwrap();
    assert_eq!(store.run_lease("r1").unwrap(), None);
}

/// Runners on several handles race for one run's lease: one takes it.
fn lease_race(handles: Vec<Box<dyn StateStore>>) {
    let barrier = Barrier::new(handles.len());
    let taken: usize = std::thread::scope(|s| {
        let threads: Vec<_> = handles
            .iter()
            .enumerate()
            .map(|(i, store)| {
                let barrier = &barrier;
                s.spawn(move || {
                    barrier.wait();
                    let lease = RunLease {
                        run_id: "raced".to_owned(),
                        holder: format!("h{i}"),
                        host: "h".to_owned(),
                        pid: i as u32,
                        lease_until: 60_000,
                    };
                    matches!(store.take_run_lease(&lease, 1), Ok(LeaseAttempt::Taken))
                })
            })
            .collect();
        threads
            .into_iter()
            .map(|t| usize::from(t.join().unwrap()))
            .sum()
    });
    assert_eq!(taken, 1);
}

/// A starting rotation of `id` by run `run_id`.
fn starting(run_id: &str) -> RotationOutcome {
    RotationOutcome {
        run_id: run_id.to_owned(),
        state: RunState::Running,
        at: 100,
        expires_at: None,
        expiry_source: None,
        params: BTreeMap::new(),
    }
}

/// A claim holds only against the last run the claimer saw.
fn rotation_claims_follow_what_was_seen(store: &dyn StateStore) {
    // Never rotated: claimed by whoever saw no run.
    assert_eq!(
        store.claim_rotation("c1", None, &starting("r1")).unwrap(),
        RotationClaim::Claimed
    );
    // Another that also saw no run comes too late, and learns whose it is.
    match store.claim_rotation("c1", None, &starting("r2")).unwrap() {
        RotationClaim::Taken(record) => {
            assert_eq!(record.last_run_id.as_deref(), Some("r1"));
            assert_eq!(record.last_run_state, Some(RunState::Running));
        }
        other => panic!("claimed twice: {other:?}"),
    }
    // Not while r1 is unfinished: it is resumed, not rotated over.
    assert!(matches!(
        store
            .claim_rotation("c1", Some("r1"), &starting("r3"))
            .unwrap(),
        RotationClaim::Taken(_)
    ));
    // Once it ended, whoever saw r1 may rotate it again.
    let ended = RotationOutcome {
        state: RunState::Succeeded,
        ..starting("r1")
    };
    store.record_rotation("c1", &ended).unwrap();
    assert_eq!(
        store
            .claim_rotation("c1", Some("r1"), &starting("r3"))
            .unwrap(),
        RotationClaim::Claimed
    );
    assert_eq!(
        store
            .credential("c1")
            .unwrap()
            .unwrap()
            .last_run_id
            .as_deref(),
        Some("r3")
    );
    assert!(matches!(
        store
            .claim_rotation("c2", Some("r9"), &starting("r4"))
            .unwrap(),
        RotationClaim::Taken(_)
    ));
}

/// Runners that all saw the same record race to claim it: one wins.
fn rotation_claim_race(handles: Vec<Box<dyn StateStore>>) {
    let barrier = Barrier::new(handles.len());
    let claimed: usize = std::thread::scope(|s| {
        let threads: Vec<_> = handles
            .iter()
            .enumerate()
            .map(|(i, store)| {
                let barrier = &barrier;
                s.spawn(move || {
                    barrier.wait();
                    matches!(
                        store.claim_rotation("raced", None, &starting(&format!("r{i}"))),
                        Ok(RotationClaim::Claimed)
                    )
                })
            })
            .collect();
        threads
            .into_iter()
            .map(|t| usize::from(t.join().unwrap()))
            .sum()
    });
    assert_eq!(claimed, 1);
}

/// A dead holder's lease is taken over before it ends only as it was read:
/// once renewed or taken by someone else, it stands.
fn run_leases_are_taken_over_only_as_read(store: &dyn StateStore) {
    let lease = |holder: &str, until: i64| RunLease {
        run_id: "r1".to_owned(),
        holder: holder.to_owned(),
        host: "h".to_owned(),
        pid: 1,
        lease_until: until,
    };
    assert_eq!(
        store.take_run_lease(&lease("dead", 60_000), 1).unwrap(),
        LeaseAttempt::Taken
    );
    let read = store.run_lease("r1").unwrap().unwrap();
    // Renewed since it was read: it stands.
    store.renew_run_lease("r1", "dead", 70_000).unwrap();
    assert_eq!(
        store
            .take_over_run_lease(&lease("b", 90_000), &read)
            .unwrap(),
        LeaseAttempt::HeldBy(lease("dead", 70_000))
    );
    // As read now: taken, long before it ends; and a second taker that read
    // the same lease comes too late.
    let read = store.run_lease("r1").unwrap().unwrap();
    assert_eq!(
        store
            .take_over_run_lease(&lease("b", 90_000), &read)
            .unwrap(),
        LeaseAttempt::Taken
    );
    assert_eq!(
        store
            .take_over_run_lease(&lease("c", 95_000), &read)
            .unwrap(),
        LeaseAttempt::HeldBy(lease("b", 90_000))
    );
}

suite!(
    run_leases_are_taken_over_only_as_read,
    rotation_claims_follow_what_was_seen,
    run_leases_expire_and_are_taken_over,
    grouped_writes_read_back_at_once,
    credential_records_follow_rotations_and_checks,
    approvals_are_requested_once_and_decided_once,
    end_run_finishes_and_releases_together,
    runs_create_list_finish,
    events_in_order,
    journal_order_and_seq_checks,
    in_flight_effect_has_no_outcome,
    locks_acquire_and_release,
    schedule_is_idempotent,
    claims_leases_and_completion,
    failures_retry_or_stay_failed,
);
