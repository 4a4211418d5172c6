//! SessionServer group commit: many jobs, one batched write per pass.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use nexus_iobuf::{IoBufferSession, JobError, SessionServer};
use nexus_store::{
    CasOp, Commit, KeyValueStore, LOG_HEAD_KEY, MemoryStore, ObjectStore, Snapshot, StoreResult,
};
use nexus_testkit::{Call, Hooked};

/// A MemoryStore that counts batched writes and refuses single commits, so that every
/// commit provably goes through `write_batch_group`.
#[derive(Clone)]
struct Counting {
    store: Hooked<MemoryStore>,
    groups: Arc<AtomicUsize>,
    batches: Arc<AtomicUsize>,
}

impl Default for Counting {
    fn default() -> Self {
        let (groups, batches) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (g, n) = (Arc::clone(&groups), Arc::clone(&batches));
        let store = Hooked::new(MemoryStore::new()).with_before(move |_: &MemoryStore, call| {
            match call {
                Call::Commit(_) => {
                    panic!("a grouped server must not commit outside write_batch_group")
                }
                Call::BatchGroup(batches) => {
                    g.fetch_add(1, Ordering::SeqCst);
                    n.fetch_add(batches.len(), Ordering::SeqCst);
                }
                _ => {}
            }
            Ok(())
        });
        Self {
            store,
            groups,
            batches,
        }
    }
}

/// Claims `key` for `who` if nobody holds it; answers the holder.
fn claim(s: &IoBufferSession, key: &str, who: &str) -> StoreResult<String> {
    if let Some(holder) = s.get_state(key)? {
        return Ok(String::from_utf8_lossy(&holder).into_owned());
    }
    s.set(&format!("r/{who}"), who.as_bytes())?;
    s.commit(&Commit {
        reads: Vec::new(),
        ops: vec![CasOp {
            key: key.into(),
            expected: None,
            new: Some(who.as_bytes().to_vec()),
        }],
        log: vec![who.as_bytes().to_vec()],
    })?;
    s.set(&format!("x/{who}"), b"")?;
    Ok(who.to_owned())
}

#[test]
fn a_group_writes_once_and_exactly_one_racing_claim_wins() {
    let store = Counting::default();
    let server = SessionServer::new(store.store.clone()).with_after_commit(|k| k.starts_with("x/"));
    let tickets: Vec<_> = (0..10)
        .map(|i| {
            let who = format!("agent{i}");
            server.submit(move |s: &IoBufferSession| claim(s, "intent/1", &who))
        })
        .collect();
    assert_eq!(server.process_group(64), 10);
    let answers: Vec<_> = tickets
        .into_iter()
        .map(|t| t.try_take().unwrap().unwrap())
        .collect();
    // Everybody ran against the empty state in pass 1; the first batch won, the nine
    // others conflicted and re-ran (pass 2) into the winner's state, changing nothing.
    assert!(
        answers
            .iter()
            .all(|a| a.value.as_ref().unwrap() == "agent0")
    );
    assert_eq!(answers[0].attempts, 1);
    assert!(
        answers[1..]
            .iter()
            .all(|a| a.attempts == 2 && a.report.commits == 0)
    );
    assert_eq!(store.groups.load(Ordering::SeqCst), 1, "one batched write");
    assert_eq!(store.batches.load(Ordering::SeqCst), 10);
    let snap = store.store.inner().snapshot().unwrap();
    assert_eq!(snap.states.get(LOG_HEAD_KEY), Some(&b"1".to_vec()));
    assert!(snap.kv.contains_key("x/agent0"));
    assert!(
        !snap.kv.contains_key("x/agent1"),
        "a loser's index entry is not written"
    );
}

#[test]
fn independent_jobs_share_one_write_and_number_the_log_in_queue_order() {
    let store = Counting::default();
    let server = SessionServer::new(store.store.clone()).with_after_commit(|k| k.starts_with("x/"));
    let tickets: Vec<_> = (0..20)
        .map(|i| {
            server.submit(move |s: &IoBufferSession| {
                claim(s, &format!("intent/{i}"), &format!("a{i}"))
            })
        })
        .collect();
    assert_eq!(server.process_group(8), 8);
    assert_eq!(server.process_group(8), 8);
    assert_eq!(server.process_group(8), 4);
    assert_eq!(server.process_group(8), 0);
    for (i, t) in tickets.into_iter().enumerate() {
        let out = t.try_take().unwrap().unwrap();
        assert_eq!(out.value.unwrap(), format!("a{i}"));
        assert_eq!(out.report.first_seq, Some(i as u64 + 1));
        assert_eq!(
            (out.report.commits, out.report.kv_puts_after_commit),
            (1, 1)
        );
    }
    assert_eq!(store.groups.load(Ordering::SeqCst), 3);
}

#[test]
fn conflicts_in_a_group_give_up_after_the_attempt_bound_and_panics_stay_contained() {
    let store = Counting::default();
    let server = SessionServer::new(store.store.clone()).with_max_attempts(1);
    let ok = server.submit(|s: &IoBufferSession| claim(s, "k", "first"));
    let lost = server.submit(|s: &IoBufferSession| claim(s, "k", "second"));
    let boom = server.submit(|_: &IoBufferSession| -> u8 { panic!("job bug") });
    assert_eq!(server.process_group(8), 3);
    assert_eq!(ok.try_take().unwrap().unwrap().value.unwrap(), "first");
    assert!(matches!(
        lost.try_take().unwrap(),
        Err(JobError::Conflict { attempts: 1, .. })
    ));
    assert!(matches!(boom.try_take().unwrap(), Err(JobError::Panicked)));
}

#[test]
fn the_grouped_thread_serves_many_threads_correctly() {
    let store = Counting::default();
    let server = SessionServer::new(store.store.clone())
        .with_max_attempts(64)
        .spawn_grouped(16)
        .unwrap();
    let client = server.client();
    let workers: Vec<_> = (0..8)
        .map(|w| {
            let client = client.clone();
            std::thread::spawn(move || {
                (0..25)
                    .map(|i| {
                        let (key, who) =
                            (format!("intent/{}", (w * 25 + i) % 50), format!("w{w}-{i}"));
                        client.submit(move |s: &IoBufferSession| claim(s, &key, &who))
                    })
                    .collect::<Vec<_>>()
                    .into_iter()
                    .map(|t| t.wait().unwrap().value.unwrap())
                    .filter(|holder| holder.starts_with('w'))
                    .count()
            })
        })
        .collect();
    let answered: usize = workers.into_iter().map(|w| w.join().unwrap()).sum();
    assert_eq!(answered, 200);
    server.shutdown().unwrap();
    // 50 keys, each claimed exactly once, one log entry each.
    let snap = store.store.inner().snapshot().unwrap();
    assert_eq!(
        snap.states
            .keys()
            .filter(|k| k.starts_with("intent/"))
            .count(),
        50
    );
    assert_eq!(snap.states.get(LOG_HEAD_KEY), Some(&b"50".to_vec()));
    assert!(store.groups.load(Ordering::SeqCst) >= 1);
}
