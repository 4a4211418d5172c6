//! The driver (rounds, re-execution, the bound) and the flush (order, conflicts, faults).

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use std::cell::Cell;

use common::{Recording, b, s};
use nexus_iobuf::{
    Delta, Executed, FlushError, FlushStage, IoBufferSession, SessionError, StoreSession,
};
use nexus_store::{
    BlobStore, CasFailure, CasOp, Commit, CommitOutcome, KeyValueStore, MemoryStore, ObjectStore,
    PutPhase, Snapshot, StoreResult,
};

/// Follows a chain of KV pointers `start -> ... -> "end"`; each hop is a new miss.
fn follow(s: &IoBufferSession, start: &str) -> StoreResult<usize> {
    let mut key = start.to_owned();
    let mut hops = 0;
    while let Some(next) = s.get(&key)? {
        hops += 1;
        key = String::from_utf8(next).unwrap_or_default();
    }
    Ok(hops)
}

fn chain(store: &MemoryStore, len: usize) {
    for i in 0..len {
        store
            .set(&format!("p{i}"), format!("p{}", i + 1).as_bytes())
            .unwrap();
    }
}

#[test]
fn misses_are_hydrated_and_the_job_reexecuted_from_scratch() {
    let source = MemoryStore::new();
    chain(&source, 3);
    let runs = Cell::new(0);
    let mut driver = StoreSession::new();
    let (hops, delta) = driver
        .run(&source, |s| {
            runs.set(runs.get() + 1);
            // A write that differs per round: only the final round's may survive.
            s.set(&format!("written-in-round-{}", runs.get()), b"x")
                .unwrap();
            follow(s, "p0")
        })
        .unwrap();
    assert_eq!(hops.unwrap(), 3);
    // p0, p1, p2 and p3 (absent) were each discovered one round after the previous.
    assert_eq!(driver.rounds(), 5);
    assert_eq!(runs.get(), 5);
    assert_eq!(delta.kv_puts, vec![(s("written-in-round-5"), b("x"))]);
    // The driver wrote nothing to the source.
    assert_eq!(source.snapshot().unwrap().kv.len(), 3);
}

#[test]
fn rounds_are_bounded() {
    let source = MemoryStore::new();
    chain(&source, 10);
    let mut driver = StoreSession::with_max_rounds(3);
    let err = driver.run(&source, |s| follow(s, "p0")).unwrap_err();
    match &err {
        SessionError::TooManyRounds { rounds, misses } => {
            assert_eq!(*rounds, 3);
            // Round 1 missed p0, round 2 p1, round 3 p2.
            assert_eq!(misses.kv_keys, vec![s("p2")]);
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(err.to_string().contains("after 3 round"));
    // Further steps keep refusing.
    assert!(matches!(
        driver.execute(|s| follow(s, "p0")),
        Err(SessionError::TooManyRounds { rounds: 3, .. })
    ));
    // A single round is enough for a job that needs nothing.
    let mut one = StoreSession::with_max_rounds(0);
    assert_eq!(one.max_rounds(), 1);
    assert!(one.run(&source, |_| 7).is_ok());
}

#[test]
fn the_step_api_lets_the_host_hydrate_between_rounds() {
    let mut driver = StoreSession::new();
    // Pre-hydrate what the request names.
    driver
        .session()
        .object_buf()
        .hydrate(s("intent/1"), Some(b("available")));
    let claim = |s: &IoBufferSession| -> StoreResult<bool> {
        let claimed = s.put_state("intent/1", Some(b"available"), b"claimed")?;
        let n = s.get("count")?.map_or(0, |v| v.len());
        s.set("count", &vec![b'x'; n + 1])?;
        Ok(claimed)
    };
    let misses = match driver.execute(claim).unwrap() {
        Executed::NeedsHydration(m) => m,
        Executed::Done(..) => panic!("count was not hydrated"),
    };
    assert_eq!(misses.kv_keys, vec![s("count")]);
    assert!(misses.state_keys.is_empty());
    // The round's writes were discarded.
    assert!(!driver.session().is_dirty());
    // The host hydrates by itself (say, after awaiting a KV binding).
    driver
        .session()
        .kv_buf()
        .hydrate_batch([(s("count"), Some(b("xx")))]);
    let Executed::Done(claimed, delta) = driver.execute(claim).unwrap() else {
        panic!("everything was hydrated");
    };
    assert!(claimed.unwrap());
    assert_eq!(delta.kv_puts, vec![(s("count"), b("xxx"))]);
    assert_eq!(
        delta.commit.ops,
        vec![CasOp {
            key: s("intent/1"),
            expected: Some(b("available")),
            new: Some(b("claimed")),
        }]
    );
}

fn sample_delta() -> Delta {
    Delta {
        kv_puts: vec![
            (s("idx/a"), b("1")),
            (s("rec/a"), b("r")),
            (s("rec/b"), b("r")),
        ],
        kv_deletes: vec![s("old")],
        blob_puts: vec![(s("blob/x"), b("x"))],
        blob_deletes: vec![s("blob/old")],
        commit: Commit {
            reads: Vec::new(),
            ops: vec![CasOp {
                key: s("intent/1"),
                expected: Some(b("available")),
                new: Some(b("claimed")),
            }],
            log: vec![b("claimed intent/1")],
        },
    }
}

fn backing() -> MemoryStore {
    let store = MemoryStore::new();
    store.put_state("intent/1", None, b"available").unwrap();
    store.set("old", b"o").unwrap();
    store.put_blob("blob/old", b"o").unwrap();
    store
}

fn after_commit(key: &str) -> bool {
    key.starts_with("idx/")
}

#[test]
fn flush_writes_in_the_design_order() {
    let target = Recording::new(backing());
    let report = sample_delta().flush(&*target, after_commit).unwrap();
    assert_eq!(
        target.events(),
        vec![
            "blob_put blob/x",
            "kv_set rec/a",
            "kv_set rec/b",
            "commit",
            "kv_set idx/a",
            "kv_delete old",
            "blob_delete blob/old",
        ]
    );
    assert_eq!(report.blob_puts, 1);
    assert_eq!(report.kv_puts_before_commit, 2);
    assert_eq!(report.commits, 1);
    assert_eq!(report.commit_ops, 1);
    assert_eq!(report.log_entries, 1);
    assert_eq!(report.first_seq, Some(1));
    assert_eq!(report.kv_puts_after_commit, 1);
    assert_eq!(report.kv_deletes, 1);
    assert_eq!(report.blob_deletes, 1);
    let snap = target.inner.snapshot().unwrap();
    assert_eq!(snap.states.get("intent/1"), Some(&b("claimed")));
    assert!(!snap.kv.contains_key("old"));
    assert!(!snap.blobs.contains_key("blob/old"));
    assert_eq!(snap.kv.get("idx/a"), Some(&b("1")));
}

#[test]
fn a_conflicting_commit_skips_everything_after_the_commit_point() {
    let target = Recording::new(backing());
    target.interfere(|store| {
        assert!(
            store
                .put_state("intent/1", Some(b"available"), b"taken")
                .unwrap()
        );
    });
    let err = sample_delta().flush(&*target, after_commit).unwrap_err();
    match &err {
        FlushError::Conflict { failures } => assert_eq!(
            failures,
            &vec![CasFailure {
                key: s("intent/1"),
                current: Some(b("taken")),
            }]
        ),
        other => panic!("unexpected {other:?}"),
    }
    assert!(err.to_string().contains("1 key(s)"));
    assert_eq!(
        target.events(),
        vec!["blob_put blob/x", "kv_set rec/a", "kv_set rec/b", "commit"]
    );
    let snap = target.inner.snapshot().unwrap();
    assert!(!snap.kv.contains_key("idx/a"));
    assert!(snap.kv.contains_key("old"));
    assert!(snap.blobs.contains_key("blob/old"));
    assert!(!snap.states.contains_key(nexus_store::LOG_HEAD_KEY));
}

#[test]
fn store_failures_name_the_stage() {
    for (event, stage) in [
        ("blob_put blob/x", FlushStage::BlobPuts),
        ("kv_set rec/b", FlushStage::KvPuts),
        ("commit", FlushStage::Commit),
        ("kv_set idx/a", FlushStage::AfterCommitKvPuts),
        ("blob_delete blob/old", FlushStage::Deletes),
    ] {
        let target = Recording::new(backing());
        target.fail_at(event);
        let err = sample_delta().flush(&*target, after_commit).unwrap_err();
        match err {
            FlushError::Store { stage: got, .. } => {
                assert_eq!(got, stage, "failing {event}");
                let committed = target.events().iter().any(|e| e == "commit");
                assert_eq!(got.after_commit(), committed, "failing {event}");
            }
            other => panic!("unexpected {other:?}"),
        }
        // Nothing after the failing call was attempted.
        assert!(!target.events().iter().any(|e| e == event));
    }
}

#[test]
fn an_empty_commit_is_not_sent() {
    let target = Recording::new(MemoryStore::new());
    let delta = Delta {
        kv_puts: vec![(s("k"), b("v"))],
        ..Delta::default()
    };
    assert!(!delta.is_empty());
    let report = delta.flush(&*target, |_| true).unwrap();
    assert_eq!(target.events(), vec!["kv_set k"]);
    assert_eq!(report.commits, 0);
    assert_eq!(report.kv_puts_after_commit, 1);
    assert!(Delta::default().is_empty());
    let sample = sample_delta();
    let batch = nexus_iobuf::write_batch(&sample, after_commit);
    let before: Vec<_> = batch.puts_in(PutPhase::BeforeCommit).collect();
    let after: Vec<_> = batch
        .puts_in(PutPhase::AfterCommit)
        .map(|p| (p.key.clone(), p.value.clone()))
        .collect();
    assert_eq!(before.len(), 3, "two key-value puts and a blob");
    assert_eq!(after, vec![(s("idx/a"), b("1"))]);
}

/// Claims an intent with the lease value `me`, reporting whether it won.
fn claim(s: &IoBufferSession, me: &str) -> StoreResult<bool> {
    let current = s.get_state("intent/1")?;
    if current.as_deref() != Some(b"available".as_slice()) {
        return Ok(false);
    }
    let outcome = s.commit(&Commit {
        reads: Vec::new(),
        ops: vec![CasOp {
            key: s_("intent/1"),
            expected: current,
            new: Some(me.as_bytes().to_vec()),
        }],
        log: vec![],
    })?;
    s.set(&format!("idx/claimed-by/{me}"), b"1")?;
    Ok(matches!(outcome, CommitOutcome::Applied { .. }))
}

fn s_(x: &str) -> String {
    x.to_owned()
}

#[test]
fn after_a_conflict_the_job_is_retried_against_current_values() {
    let target = Recording::new(backing());
    target.interfere(|store| {
        store
            .put_state("intent/1", Some(b"available"), b"rival")
            .unwrap();
        store
            .put_state("intent/1", Some(b"rival"), b"available")
            .unwrap();
        store
            .put_state("intent/1", Some(b"available"), b"rival")
            .unwrap();
    });
    let mut driver = StoreSession::new();
    let (won, delta) = driver.run(&*target, |s| claim(s, "me")).unwrap();
    assert!(won.unwrap(), "the session saw the intent available");
    let err = delta.flush(&*target, after_commit).unwrap_err();
    let FlushError::Conflict { failures } = err else {
        panic!("expected a conflict");
    };
    // Nothing depending on the commit was written.
    assert_eq!(target.inner.get("idx/claimed-by/me").unwrap(), None);
    driver.restart(&failures);
    assert_eq!(driver.rounds(), 0);
    let (won, delta) = driver.run(&*target, |s| claim(s, "me")).unwrap();
    // The retry sees the rival's claim without a round to re-read it.
    assert_eq!(driver.rounds(), 1);
    assert!(!won.unwrap());
    assert!(delta.commit.is_empty());
    delta.flush(&*target, after_commit).unwrap();
    assert_eq!(
        target.inner.get_state("intent/1").unwrap(),
        Some(b("rival"))
    );
}
