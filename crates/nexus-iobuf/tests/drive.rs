//! The sans-IO `Driver`: what it asks for, and what it does with each answer.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use nexus_iobuf::{
    DriveConfig, Driver, FlushError, FlushStage, IoBufferSession, JobError, Misses, SessionError,
    StateSource, Step, drive_sync,
};
use nexus_store::{
    CasFailure, CasOp, Commit, CommitOutcome, KeyValueStore, MemoryStore, ObjectStore, PutPhase,
    ReadCheck, StoreError, StoreResult,
};

fn b(s: &str) -> Vec<u8> {
    s.as_bytes().to_vec()
}

/// Claims `slot` unless `gate` says "closed": reads the gate, CASes the slot, writes a
/// record before the commit and an index entry after it. Answers whether it claimed.
fn claim(s: &IoBufferSession) -> StoreResult<bool> {
    if s.get_state("gate")?.as_deref() == Some(b"closed".as_slice()) {
        return Ok(false);
    }
    let current = s.get_state("slot")?;
    if current.is_some() {
        return Ok(false);
    }
    s.set("r/me", b"record")?;
    let outcome = s.commit(&Commit::new(
        vec![CasOp {
            key: "slot".into(),
            expected: None,
            new: Some(b("me")),
        }],
        vec![b("claimed")],
    ))?;
    s.set("x/me", b"")?;
    Ok(matches!(outcome, CommitOutcome::Applied { .. }))
}

fn config() -> DriveConfig {
    DriveConfig {
        max_attempts: 3,
        after_commit: |k| k.starts_with("x/"),
        ..DriveConfig::default()
    }
}

fn read_set() -> Misses {
    Misses {
        state_keys: vec!["gate".into(), "slot".into()],
        ..Misses::default()
    }
}

fn hydrate(
    d: &mut Driver<impl FnMut(&IoBufferSession) -> StoreResult<bool>, StoreResult<bool>>,
    store: &MemoryStore,
    source: StateSource,
) -> Misses {
    match d.poll() {
        Step::Hydrate { misses, .. } => {
            d.session().hydrate_from(store, &misses).unwrap();
            d.hydrated(source);
            misses
        }
        other => panic!("expected Hydrate, got {other:?}"),
    }
}

fn expect_commit<J: FnMut(&IoBufferSession) -> StoreResult<bool>>(
    d: &mut Driver<J, StoreResult<bool>>,
) -> nexus_store::WriteBatch {
    match d.poll() {
        Step::Commit(batch) => batch,
        other => panic!("expected Commit, got {other:?}"),
    }
}

#[test]
fn it_asks_for_the_read_set_then_commits_with_phases_and_read_checks() {
    let store = MemoryStore::new();
    store.put_state("gate", None, b"open").unwrap();
    let mut d = Driver::new(claim, read_set(), config());
    assert_eq!(hydrate(&mut d, &store, StateSource::Store), read_set());
    let batch = expect_commit(&mut d);
    // Polling again asks for the same thing.
    assert_eq!(expect_commit(&mut d), batch);
    assert_eq!(
        batch.commit.reads,
        vec![ReadCheck {
            key: "gate".into(),
            value: Some(b("open"))
        }]
    );
    assert_eq!(batch.commit.ops.len(), 1);
    let before: Vec<&str> = batch
        .puts_in(PutPhase::BeforeCommit)
        .map(|p| p.key.as_str())
        .collect();
    let after: Vec<&str> = batch
        .puts_in(PutPhase::AfterCommit)
        .map(|p| p.key.as_str())
        .collect();
    assert_eq!((before, after), (vec!["r/me"], vec!["x/me"]));
    d.committed(Ok(CommitOutcome::Applied { first_seq: Some(7) }));
    match d.poll() {
        Step::Done(Ok(out)) => {
            assert!(out.value.unwrap());
            assert_eq!((out.attempts, out.rounds, out.conflicts), (1, 1, 0));
            assert_eq!(out.report.first_seq, Some(7));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(d.stats().commits, 1);
}

#[test]
fn a_changed_read_restarts_with_the_current_value_and_decides_on_it() {
    let store = MemoryStore::new();
    store.put_state("gate", None, b"open").unwrap();
    let mut d = Driver::new(claim, read_set(), config());
    hydrate(&mut d, &store, StateSource::Store);
    let batch = expect_commit(&mut d);
    // Another writer closes the gate before the commit point: the store refuses it.
    store.put_state("gate", Some(b"open"), b"closed").unwrap();
    let outcome = store.commit(&batch.commit).unwrap();
    assert_eq!(
        outcome,
        CommitOutcome::Conflict(vec![CasFailure {
            key: "gate".into(),
            current: Some(b("closed"))
        }])
    );
    d.committed(Ok(outcome));
    // The new attempt already has the gate's current value: only the slot is asked for.
    let asked = hydrate(&mut d, &store, StateSource::Store);
    assert_eq!(asked.state_keys, vec!["slot".to_owned()]);
    match d.poll() {
        Step::Done(Ok(out)) => {
            assert!(!out.value.unwrap(), "decided on the closed gate");
            assert_eq!((out.attempts, out.conflicts), (2, 1));
            assert_eq!(out.report.commits, 0);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn conflicts_give_up_after_the_attempt_bound_naming_the_keys() {
    let store = MemoryStore::new();
    let mut d = Driver::new(claim, read_set(), config());
    for attempt in 1..=3 {
        if attempt == 1 {
            hydrate(&mut d, &store, StateSource::Store);
        } else {
            // The conflict's values of both keys are known: nothing to hydrate.
        }
        let _ = expect_commit(&mut d);
        d.committed(Ok(CommitOutcome::Conflict(vec![
            CasFailure {
                key: "gate".into(),
                current: None,
            },
            CasFailure {
                key: "slot".into(),
                current: None,
            },
        ])));
    }
    match d.poll() {
        Step::Done(Err(JobError::Conflict { attempts, failures })) => {
            assert_eq!(attempts, 3);
            assert_eq!(failures.len(), 2);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(d.stats().conflicts, 3);
}

#[test]
fn an_answer_without_commit_on_cached_states_is_verified_on_the_store() {
    let store = MemoryStore::new();
    let cfg = DriveConfig {
        cache_ok: true,
        ..config()
    };
    let mut d = Driver::new(claim, read_set(), cfg);
    // A stale cache says the gate is closed; the store says open.
    match d.poll() {
        Step::Hydrate { misses, cache_ok } => {
            assert!(cache_ok);
            let cached = MemoryStore::new();
            cached.put_state("gate", None, b"closed").unwrap();
            d.session().hydrate_from(&cached, &misses).unwrap();
            d.hydrated(StateSource::Cache);
        }
        other => panic!("{other:?}"),
    }
    // "Not claimed" would commit nothing: the driver asks again, from the store.
    match d.poll() {
        Step::Hydrate { cache_ok, .. } => assert!(!cache_ok),
        other => panic!("{other:?}"),
    }
    let out = drive_sync(&store, &mut d).unwrap();
    assert!(out.value.unwrap(), "claimed on the store's open gate");
    assert_eq!(d.stats().verifications, 1);
    assert_eq!(out.attempts, 2);
}

#[test]
fn a_commit_on_cached_states_needs_no_verification() {
    let store = MemoryStore::new();
    let cfg = DriveConfig {
        cache_ok: true,
        ..config()
    };
    let mut d = Driver::new(claim, read_set(), cfg);
    hydrate(&mut d, &store, StateSource::Cache);
    let batch = expect_commit(&mut d);
    d.committed(Ok(store.commit(&batch.commit).unwrap()));
    assert!(matches!(d.poll(), Step::Done(Ok(_))));
    assert_eq!(d.stats().verifications, 0);
}

#[test]
fn store_errors_before_the_commit_point_fail_after_it_the_answer_stands() {
    let store = MemoryStore::new();
    let fail = |stage| FlushError::Store {
        stage,
        source: StoreError::Backend("disk".into()),
    };
    for (stage, stands) in [
        (FlushStage::KvPuts, false),
        (FlushStage::Commit, false),
        (FlushStage::AfterCommitKvPuts, true),
        (FlushStage::Deletes, true),
    ] {
        let mut d = Driver::new(claim, read_set(), config());
        hydrate(&mut d, &store, StateSource::Store);
        let _ = expect_commit(&mut d);
        d.committed(Err(fail(stage)));
        match (d.poll(), stands) {
            (Step::Done(Ok(out)), true) => assert!(out.value.unwrap()),
            (Step::Done(Err(JobError::Flush(FlushError::Store { stage: s, .. }))), false) => {
                assert_eq!(s, stage)
            }
            (other, _) => panic!("{stage}: {other:?}"),
        }
    }
}

#[test]
fn a_failed_hydration_fails_the_job_and_a_spent_driver_says_so() {
    let mut d = Driver::new(claim, read_set(), config());
    assert!(matches!(d.poll(), Step::Hydrate { .. }));
    d.hydrate_failed(StoreError::Backend("unreachable".into()));
    assert!(matches!(
        d.poll(),
        Step::Done(Err(JobError::Session(SessionError::Hydrate(_))))
    ));
    assert!(matches!(d.poll(), Step::Done(Err(JobError::ServerGone))));
}

#[test]
fn the_round_bound_holds_across_hydrations() {
    // A job that reads a new key every round never completes.
    let mut n = 0;
    let job = move |s: &IoBufferSession| {
        n += 1;
        s.get(&format!("k{n}")).map(|_| true)
    };
    let cfg = DriveConfig {
        max_rounds: 3,
        ..config()
    };
    let mut d = Driver::new(job, Misses::default(), cfg);
    let result = drive_sync(&MemoryStore::new(), &mut d);
    assert!(matches!(
        result,
        Err(JobError::Session(SessionError::TooManyRounds {
            rounds: 3,
            ..
        }))
    ));
}
