//! SessionServer: process_one, the threaded queue, conflict retries, failures.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use std::collections::BTreeSet;

use common::{Recording, b};
use nexus_iobuf::{IoBufferSession, JobError, SessionError, SessionServer};
use nexus_store::{
    Commit, CommitOutcome, KeyValueStore, LOG_HEAD_KEY, MemoryStore, ObjectStore, StoreError,
    StoreResult,
};

/// Increments the counter under `key` in one commit that also logs the new value;
/// returns the new value, or `None` if the commit lost a race.
fn increment(s: &IoBufferSession, key: &str) -> StoreResult<Option<(u64, u64)>> {
    // The job wants the sequence number of its log entry, so it reads the log head
    // (the buffer predicts numbers only from a hydrated head).
    let _ = s.get_states(&[key, LOG_HEAD_KEY])?;
    let raw = s.get_state(key)?;
    let n: u64 = raw
        .as_deref()
        .and_then(|v| std::str::from_utf8(v).ok()?.parse().ok())
        .unwrap_or(0);
    let outcome = s.commit(&Commit {
        reads: Vec::new(),
        ops: vec![nexus_store::CasOp {
            key: key.to_owned(),
            expected: raw,
            new: Some((n + 1).to_string().into_bytes()),
        }],
        log: vec![format!("{key}={}", n + 1).into_bytes()],
    })?;
    Ok(match outcome {
        CommitOutcome::Applied {
            first_seq: Some(seq),
        } => {
            s.set(
                &format!("idx/{key}/{}", n + 1),
                &seq.to_string().into_bytes(),
            )?;
            Some((n + 1, seq))
        }
        _ => None,
    })
}

#[test]
fn process_one_runs_queued_jobs_in_order() {
    let server = SessionServer::new(MemoryStore::new());
    assert!(!server.process_one(), "empty queue");
    let t1 = server.submit(|s: &IoBufferSession| increment(s, "c"));
    let t2 = server.submit(|s: &IoBufferSession| increment(s, "c"));
    assert_eq!(server.pending(), 2);
    assert!(t1.try_take().is_none(), "not run yet");
    assert!(server.process_one());
    assert!(t2.try_take().is_none());
    let out1 = t1.try_take().unwrap().unwrap();
    assert_eq!(out1.value.unwrap(), Some((1, 1)));
    assert_eq!(out1.attempts, 1);
    // Round 1 missed c and the log head at once; round 2 ran on hydrated data.
    assert_eq!(out1.rounds, 2);
    assert_eq!(out1.report.commits, 1);
    assert_eq!(out1.report.first_seq, Some(1));
    assert_eq!(out1.report.kv_puts_before_commit, 1);
    assert!(server.process_one());
    assert!(!server.process_one());
    let out2 = t2.try_take().unwrap().unwrap();
    assert_eq!(out2.value.unwrap(), Some((2, 2)));
    let store = server.store();
    assert_eq!(store.get_state("c").unwrap(), Some(b("2")));
    assert_eq!(store.get_state(LOG_HEAD_KEY).unwrap(), Some(b("2")));
    assert_eq!(store.get("idx/c/2").unwrap(), Some(b("2")));
}

#[test]
fn the_threaded_server_serves_many_threads_one_job_at_a_time() {
    let server = SessionServer::new(MemoryStore::new())
        .with_after_commit(|k| k.starts_with("idx/"))
        .spawn()
        .unwrap();
    let client = server.client();
    let workers: Vec<_> = (0..8)
        .map(|w| {
            let client = client.clone();
            std::thread::spawn(move || {
                let tickets: Vec<_> = (0..25)
                    .map(|i| {
                        let key = if (w + i) % 2 == 0 { "even" } else { "odd" };
                        client.submit(move |s: &IoBufferSession| increment(s, key))
                    })
                    .collect();
                tickets
                    .into_iter()
                    .map(|t| t.wait().unwrap().value.unwrap().unwrap().1)
                    .collect::<Vec<u64>>()
            })
        })
        .collect();
    let mut seqs = BTreeSet::new();
    for worker in workers {
        for seq in worker.join().unwrap() {
            assert!(seqs.insert(seq), "log sequence {seq} given twice");
        }
    }
    assert_eq!(seqs, (1..=200).collect());
    let server = server.shutdown().unwrap();
    let store = server.store();
    assert_eq!(store.get_state("even").unwrap(), Some(b("100")));
    assert_eq!(store.get_state("odd").unwrap(), Some(b("100")));
    assert_eq!(store.get_state(LOG_HEAD_KEY).unwrap(), Some(b("200")));
    assert_eq!(store.list("idx/", None, 1000).unwrap().len(), 200);
}

#[test]
fn dropping_the_thread_runs_the_queued_jobs_and_later_jobs_are_refused() {
    let store = MemoryStore::new();
    let thread = SessionServer::new(store.clone()).spawn().unwrap();
    let client = thread.client();
    let tickets: Vec<_> = (0..10)
        .map(|_| client.submit(|s: &IoBufferSession| increment(s, "n")))
        .collect();
    drop(thread);
    for t in tickets {
        assert!(t.wait().is_ok());
    }
    assert_eq!(store.get_state("n").unwrap(), Some(b("10")));
    let late = client.submit(|s: &IoBufferSession| increment(s, "n"));
    assert!(matches!(late.wait(), Err(JobError::ServerGone)));
    assert_eq!(client.pending(), 0);
}

#[test]
fn a_conflict_is_retried_from_hydration() {
    let target = Recording::new(MemoryStore::new());
    // A concurrent writer bumps the counter just before our first commit.
    target.interfere(|store| {
        assert!(store.put_state("c", None, b"41").unwrap());
    });
    let server = SessionServer::new(target.store());
    let ticket = server.submit(|s: &IoBufferSession| increment(s, "c"));
    assert!(server.process_one());
    let out = ticket.try_take().unwrap().unwrap();
    assert_eq!(out.attempts, 2);
    assert_eq!(out.value.unwrap(), Some((42, 1)));
    assert_eq!(
        server.store().inner().get_state("c").unwrap(),
        Some(b("42"))
    );
    // Index entries depending on the commit are written with the retry's values.
    assert_eq!(
        server.store().inner().get("idx/c/42").unwrap(),
        Some(b("1"))
    );
}

#[test]
fn conflicts_give_up_after_the_attempt_bound() {
    let target = Recording::new(MemoryStore::new());
    for i in 0..3 {
        target.interfere(move |store| {
            let cur = store.get_state("c").unwrap();
            let next = format!("rival-{i}");
            assert!(
                store
                    .put_state("c", cur.as_deref(), next.as_bytes())
                    .unwrap()
            );
        });
    }
    let server = SessionServer::new(target.store())
        .with_max_attempts(3)
        .with_after_commit(|k| k.starts_with("idx/"));
    let ticket = server.submit(|s: &IoBufferSession| increment(s, "c"));
    server.process_one();
    match ticket.try_take().unwrap() {
        Err(JobError::Conflict { attempts, failures }) => {
            assert_eq!(attempts, 3);
            assert_eq!(failures[0].current, Some(b("rival-2")));
        }
        other => panic!("unexpected {other:?}"),
    }
    // No after-commit entry of any failed attempt was written.
    let store = server.store().inner();
    assert!(store.list("idx/", None, 10).unwrap().is_empty());
}

#[test]
fn failures_reach_the_ticket_and_the_server_keeps_going() {
    let store = MemoryStore::new();
    for i in 0..10 {
        store
            .set(&format!("p{i}"), format!("p{}", i + 1).as_bytes())
            .unwrap();
    }
    let server = SessionServer::new(store).with_max_rounds(2);
    let chase = server.submit(|s: &IoBufferSession| -> StoreResult<()> {
        let mut key = "p0".to_owned();
        while let Some(next) = s.get(&key)? {
            key = String::from_utf8(next).unwrap_or_default();
        }
        Ok(())
    });
    let boom = server.submit(|s: &IoBufferSession| -> u8 {
        if s.get("p0").ok().flatten().is_some() {
            panic!("job panics once its data is hydrated");
        }
        0
    });
    let fine = server.submit(|s: &IoBufferSession| s.set("ok", b"1"));
    while server.process_one() {}
    assert!(matches!(
        chase.try_take().unwrap(),
        Err(JobError::Session(SessionError::TooManyRounds {
            rounds: 2,
            ..
        }))
    ));
    assert!(matches!(boom.try_take().unwrap(), Err(JobError::Panicked)));
    assert!(fine.try_take().unwrap().unwrap().value.is_ok());
    assert_eq!(server.store().get("ok").unwrap(), Some(b("1")));
}

#[test]
fn flush_failures_and_closing_are_reported() {
    let target = Recording::new(MemoryStore::new());
    target.fail_at("kv_set k");
    let server = SessionServer::new(target.store());
    let ticket = server.submit(|s: &IoBufferSession| s.set("k", b"v"));
    server.process_one();
    match ticket.try_take().unwrap() {
        Err(JobError::Flush(nexus_iobuf::FlushError::Store { source, .. })) => {
            assert!(matches!(source, StoreError::Backend(_)));
        }
        other => panic!("unexpected {other:?}"),
    }
    server.close();
    let late = server.submit(|s: &IoBufferSession| s.set("x", b"v"));
    assert!(!server.process_one());
    assert!(matches!(late.try_take(), Some(Err(JobError::ServerGone))));
    // Tickets can be dropped without harm.
    let server = SessionServer::new(MemoryStore::new());
    drop(server.submit(|s: &IoBufferSession| s.set("x", b"v")));
    assert!(server.process_one());
    assert_eq!(server.store().get("x").unwrap(), Some(b("v")));
}

#[test]
fn submit_with_answers_through_the_callback_after_the_commit() {
    let store = MemoryStore::new();
    // Every job of a group increments the same counter, so the last of a group of 8
    // runs 8 times: room for that.
    let thread = SessionServer::new(store.clone())
        .with_max_attempts(64)
        .spawn_grouped(8)
        .unwrap();
    let client = thread.client();
    let (tx, rx) = std::sync::mpsc::channel();
    for _ in 0..20 {
        let tx = tx.clone();
        let seen = store.clone();
        client.submit_with(
            |s: &IoBufferSession| increment(s, "n"),
            move |reply| {
                // Called once the job's write is in the store.
                let (n, _) = reply.unwrap().value.unwrap().unwrap();
                let stored: u64 = String::from_utf8(seen.get_state("n").unwrap().unwrap())
                    .unwrap()
                    .parse()
                    .unwrap();
                tx.send((n, stored >= n)).unwrap();
            },
        );
    }
    drop(tx);
    // A callback that panics is dropped; the server keeps serving.
    client.submit_with(
        |s: &IoBufferSession| increment(s, "m"),
        |_| panic!("callback"),
    );
    let mut answers: Vec<(u64, bool)> = rx.iter().take(20).collect();
    answers.sort_unstable();
    assert_eq!(answers, (1..=20).map(|n| (n, true)).collect::<Vec<_>>());
    drop(thread);
    let (tx, rx) = std::sync::mpsc::channel();
    client.submit_with(
        |s: &IoBufferSession| increment(s, "n"),
        move |reply| tx.send(matches!(reply, Err(JobError::ServerGone))).unwrap(),
    );
    assert_eq!(
        rx.try_recv(),
        Ok(true),
        "answered at once, on the caller's thread"
    );
    assert_eq!(store.get_state("n").unwrap(), Some(b("20")));
}
