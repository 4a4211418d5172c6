//! Each phase of the cross-shard protocol, with lost answers, resets between phases,
//! conflicts, stalls and their resolution.

mod common;

use common::*;
use nexus_shard::{
    CrossCommit, CrossError, Fault, LOCK_TTL_MS, Lock, ProtocolEntry, Resolution, Resolver,
    ShardMap, TxnState, merge_order, part_rows, protocol, sweep,
};
use nexus_store::{Commit, CommitOutcome, ObjectStore};

const N: usize = 2;

/// A commit over shards 0 and 1: claims an Intent on each. Of the candidates (which
/// differ in their Intents only) it is the first whose primary is shard 1, so that the
/// tests below can name the secondary (0) and the primary (1).
fn two_shard_commit() -> (Commit, String, String) {
    let map = ShardMap::new(N).expect("map");
    (0..)
        .map(|j| {
            let (a, b) = (key("intent/", N, 0, j), key("intent/", N, 1, j));
            let commit = Commit::new(
                vec![
                    cas(&a, Some("available"), Some("claimed")),
                    cas(&b, Some("available"), Some("claimed")),
                ],
                vec![b"entry".to_vec()],
            );
            (commit, a, b)
        })
        .find(|(c, _, _)| map.split(c).expect("split").primary() == 1)
        .expect("some commit has primary 1")
}

fn setup() -> (Vec<nexus_store::MemoryStore>, Commit, String, String) {
    let s = stores(N);
    let (commit, a, b) = two_shard_commit();
    put(&s[0], &a, "available");
    put(&s[1], &b, "available");
    (s, commit, a, b)
}

fn log(store: &nexus_store::MemoryStore) -> Vec<(u64, Vec<u8>)> {
    let head: u64 = get(store, nexus_store::LOG_HEAD_KEY).map_or(0, |h| h.parse().expect("head"));
    (1..=head)
        .map(|seq| {
            let v = store
                .get_state(&nexus_store::log_key(seq))
                .expect("read")
                .expect("entry");
            (seq, v)
        })
        .collect()
}

fn types(store: &nexus_store::MemoryStore) -> Vec<String> {
    log(store)
        .into_iter()
        .map(|(_, e)| match ProtocolEntry::decode(&e).expect("decode") {
            Some(p) => serde_json::to_value(&p).expect("json")["type"]
                .as_str()
                .expect("type")
                .to_owned(),
            None => String::from_utf8_lossy(&e).into_owned(),
        })
        .collect()
}

fn assert_committed(s: &[nexus_store::MemoryStore], a: &str, b: &str) {
    assert_eq!(get(&s[0], a).as_deref(), Some("claimed"));
    assert_eq!(get(&s[1], b).as_deref(), Some("claimed"));
    assert!(pending_rows(&s[0]).is_empty() && pending_rows(&s[1]).is_empty());
    let order = merge_order(&[log(&s[0]), log(&s[1])]).expect("merge");
    assert_eq!(order.len(), 4);
}

fn assert_untouched(s: &[nexus_store::MemoryStore], a: &str, b: &str) {
    assert_eq!(get(&s[0], a).as_deref(), Some("available"));
    assert_eq!(get(&s[1], b).as_deref(), Some("available"));
    assert!(pending_rows(&s[0]).is_empty() && pending_rows(&s[1]).is_empty());
}

#[test]
fn a_two_shard_commit_is_prewrite_primary_release_in_three_calls() {
    let (s, commit, a, b) = setup();
    let map = ShardMap::new(N).expect("map");
    let mut cc = CrossCommit::new(&map, &commit, 1_000, 0).expect("split");
    assert_eq!(cc.split().calls(), 3);
    let r = drive(&mut cc, &s, |_| Fault::Deliver).expect("finished");
    // Shard 1 (the primary) logged: commit, entry; the entry is seq 2.
    assert_eq!(r, Ok(CommitOutcome::Applied { first_seq: Some(2) }));
    assert_eq!(cc.stats().calls, 3);
    assert_committed(&s, &a, &b);
    assert_eq!(types(&s[0]), ["prepared", "release"]);
    assert_eq!(types(&s[1]), ["commit", "entry"]);
    // The merged order: prepared, commit + entry, release.
    let order = merge_order(&[log(&s[0]), log(&s[1])]).expect("merge");
    assert_eq!(order, vec![(0, 1), (1, 1), (1, 2), (0, 2)]);
    // The commit point stays on the primary.
    let txn = protocol::txn_key(cc.txn());
    assert_eq!(
        s[1].get_state(&txn).expect("read"),
        Some(TxnState::Committed.encode())
    );
}

#[test]
fn every_phase_survives_a_lost_answer_after_or_before_applying() {
    for lost_call in 0..3 {
        for fault in [Fault::LoseAnswer, Fault::LoseCall] {
            let (s, commit, a, b) = setup();
            let map = ShardMap::new(N).expect("map");
            let mut cc = CrossCommit::new(&map, &commit, 1_000, 0).expect("split");
            let r = drive(&mut cc, &s, |i| {
                if i == lost_call {
                    fault
                } else {
                    Fault::Deliver
                }
            })
            .expect("finished");
            assert!(
                matches!(r, Ok(CommitOutcome::Applied { .. })),
                "call {lost_call} {fault:?}: {r:?}"
            );
            assert_eq!(cc.stats().calls, 4, "one re-send");
            assert_committed(&s, &a, &b);
            // A primary whose first answer was lost after applying no longer knows the
            // seq; every other case does.
            if lost_call == 1 && fault == Fault::LoseAnswer {
                assert_eq!(r, Ok(CommitOutcome::Applied { first_seq: None }));
            } else {
                assert_eq!(r, Ok(CommitOutcome::Applied { first_seq: Some(2) }));
            }
        }
    }
}

#[test]
fn a_conflict_in_the_prewrite_aborts_and_names_the_key() {
    let (s, commit, a, b) = setup();
    put(&s[0], &a, "withdrawn");
    let map = ShardMap::new(N).expect("map");
    let mut cc = CrossCommit::new(&map, &commit, 1_000, 0).expect("split");
    let r = drive(&mut cc, &s, |_| Fault::Deliver).expect("finished");
    let Ok(CommitOutcome::Conflict(f)) = r else {
        panic!("{r:?}")
    };
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].key, a);
    assert_eq!(f[0].current.as_deref(), Some(&b"withdrawn"[..]));
    assert_eq!(get(&s[1], &b).as_deref(), Some("available"));
    assert!(pending_rows(&s[0]).is_empty());
    // The txn is marked aborted on the primary: a late primary commit cannot apply.
    let txn = protocol::txn_key(cc.txn());
    assert_eq!(
        s[1].get_state(&txn).expect("read"),
        Some(TxnState::Aborted.encode())
    );
}

#[test]
fn a_conflict_on_the_primary_drops_the_prepared_secondaries() {
    for lost in [None, Some(Fault::LoseAnswer), Some(Fault::LoseCall)] {
        let (s, commit, a, b) = setup();
        put(&s[1], &b, "withdrawn");
        let map = ShardMap::new(N).expect("map");
        let mut cc = CrossCommit::new(&map, &commit, 1_000, 0).expect("split");
        // Call 3 is the drop of shard 0's part (0 prewrite, 1 primary, 2 abort txn).
        let r = drive(&mut cc, &s, |i| match (i, lost) {
            (3, Some(f)) => f,
            _ => Fault::Deliver,
        })
        .expect("finished");
        let Ok(CommitOutcome::Conflict(f)) = r else {
            panic!("{r:?}")
        };
        assert_eq!(f[0].key, b);
        assert_eq!(get(&s[0], &a).as_deref(), Some("available"));
        assert!(pending_rows(&s[0]).is_empty(), "{lost:?}");
        assert_eq!(types(&s[0]), ["prepared", "abort"]);
        assert!(merge_order(&[log(&s[0]), log(&s[1])]).is_ok());
    }
}

#[test]
fn a_locked_key_refuses_other_commits_until_a_stale_lock_is_rolled_back() {
    let (s, commit, a, b) = setup();
    let map = ShardMap::new(N).expect("map");
    let mut cc = CrossCommit::new(&map, &commit, 1_000, 0).expect("split");
    // The coordinator stops right after the prewrite applied (its isolate died).
    assert!(
        drive(&mut cc, &s, |i| if i == 0 {
            Fault::StallAfter
        } else {
            Fault::Deliver
        })
        .is_none()
    );
    assert_eq!(pending_rows(&s[0]).len(), 2, "lock and part row");
    // Another writer of the locked key meets the lock: a conflict naming the key.
    let other = Commit::new(vec![cas(&a, Some("available"), Some("withdrawn"))], vec![]);
    let mut w = CrossCommit::new(&map, &other, 2_000, 1).expect("split");
    let r = drive(&mut w, &s, |_| Fault::Deliver).expect("finished");
    let Ok(CommitOutcome::Conflict(f)) = r else {
        panic!("{r:?}")
    };
    assert_eq!(f[0].key, a);
    assert_eq!(f[0].current.as_deref(), Some(&b"available"[..]));
    let met = w.locks_met()[0].clone();
    assert_eq!((met.shard, met.key.as_str()), (0, a.as_str()));
    // Young: left alone.
    let young = Resolver::for_lock(0, met.lock.clone(), 2_000);
    assert_eq!(
        resolve(young, &s, |_| false),
        Resolution::Young {
            until: 1_000 + LOCK_TTL_MS
        }
    );
    // Stale: the primary never committed, so it is aborted and the part dropped, even
    // with each answer lost once.
    let stale = Resolver::for_lock(0, met.lock, 1_000 + LOCK_TTL_MS);
    let mut lost_once = [false; 8];
    let r = resolve(stale, &s, |i| {
        !std::mem::replace(&mut lost_once[i % 8], true)
    });
    assert_eq!(r, Resolution::RolledBack);
    assert_untouched(&s, &a, &b);
    // The stalled coordinator comes back: its primary commit finds the txn aborted.
    let r = drive(&mut cc, &s, |_| Fault::Deliver).expect("finished");
    assert!(matches!(r, Ok(CommitOutcome::Conflict(_))), "{r:?}");
    assert_untouched(&s, &a, &b);
    assert!(merge_order(&[log(&s[0]), log(&s[1])]).is_ok());
}

#[test]
fn a_stall_after_the_commit_point_is_rolled_forward() {
    let (s, commit, a, b) = setup();
    let map = ShardMap::new(N).expect("map");
    let mut cc = CrossCommit::new(&map, &commit, 1_000, 0).expect("split");
    // The primary commit applies, then the coordinator stops.
    assert!(
        drive(&mut cc, &s, |i| if i == 1 {
            Fault::StallAfter
        } else {
            Fault::Deliver
        })
        .is_none()
    );
    assert!(cc.is_committed() || get(&s[1], &b).as_deref() == Some("claimed"));
    // The alarm of shard 0: nothing stale yet, re-armed for when the part goes stale.
    let rows = part_rows(&s[0]).expect("rows");
    let plan = sweep(0, &rows, 2_000).expect("sweep");
    assert!(plan.resolvers.is_empty());
    assert_eq!(plan.next_alarm, Some(1_000 + LOCK_TTL_MS));
    // Later: the part is stale; its primary committed, so it is released.
    let plan = sweep(0, &rows, 1_000 + LOCK_TTL_MS).expect("sweep");
    assert_eq!(plan.resolvers.len(), 1);
    for r in plan.resolvers {
        assert_eq!(resolve(r, &s, |i| i == 1), Resolution::RolledForward);
    }
    assert_committed(&s, &a, &b);
    let rows = part_rows(&s[0]).expect("rows");
    assert_eq!(sweep(0, &rows, 99_999).expect("sweep").next_alarm, None);
    // The coordinator comes back: its release finds the part gone, and it answers.
    let r = drive(&mut cc, &s, |_| Fault::Deliver).expect("finished");
    assert!(matches!(r, Ok(CommitOutcome::Applied { .. })), "{r:?}");
    assert_eq!(types(&s[0]), ["prepared", "release"]);
}

#[test]
fn a_late_primary_commit_after_an_abort_cannot_apply() {
    let (s, commit, a, b) = setup();
    let map = ShardMap::new(N).expect("map");
    let mut cc = CrossCommit::new(&map, &commit, 1_000, 0).expect("split");
    // The prewrite applies; the primary call is sent but stalls before applying.
    let mut primary = None;
    for _ in 0..2 {
        match cc.poll() {
            nexus_shard::ShardStep::Call { shard: 1, commit } => {
                primary = Some(commit);
                break;
            }
            nexus_shard::ShardStep::Call { shard, commit } => {
                let answer = call(&s[shard], &commit, Fault::Deliver).expect("answer");
                cc.feed(shard, answer);
            }
            other => panic!("{other:?}"),
        }
    }
    let lock = Lock::decode(
        &s[0]
            .get_state(&protocol::lock_key(&a))
            .expect("read")
            .expect("locked"),
    )
    .expect("lock");
    let r = Resolver::for_lock(0, lock, 1_000 + LOCK_TTL_MS);
    assert_eq!(resolve(r, &s, |_| false), Resolution::RolledBack);
    // The delayed primary commit arrives now: refused (the txn row says aborted).
    let late = s[1]
        .commit(&primary.expect("primary call"))
        .expect("commit");
    assert!(matches!(late, CommitOutcome::Conflict(_)));
    assert_untouched(&s, &a, &b);
}

#[test]
fn a_single_shard_commit_is_one_call_and_its_lost_answer_is_unknown() {
    let s = stores(N);
    let k = key("intent/", N, 1, 3);
    let map = ShardMap::new(N).expect("map");
    let commit = Commit::new(vec![cas(&k, None, Some("available"))], vec![b"e".to_vec()]);
    let mut cc = CrossCommit::new(&map, &commit, 0, 0).expect("split");
    assert!(cc.split().is_single_shard());
    let r = drive(&mut cc, &s, |_| Fault::Deliver).expect("finished");
    assert_eq!(r, Ok(CommitOutcome::Applied { first_seq: Some(1) }));
    assert_eq!(cc.stats().calls, 1);
    // Lost: it may or may not have applied (it did here); the answer says so.
    let again = Commit::new(vec![cas(&k, Some("available"), Some("claimed"))], vec![]);
    let mut cc = CrossCommit::new(&map, &again, 0, 1).expect("split");
    let r = drive(&mut cc, &s, |_| Fault::LoseAnswer).expect("finished");
    assert_eq!(r, Err(CrossError::OutcomeUnknown { shard: 1 }));
    assert_eq!(get(&s[1], &k).as_deref(), Some("claimed"));
}

#[test]
fn a_single_shard_commit_that_read_another_shards_record_logs_what_it_follows() {
    let s = stores(N);
    let map = ShardMap::new(N).expect("map");
    let parent = key("rec/", N, 0, 0);
    let child = key("rec/", N, 1, 0);
    let hash = |k: &str| k.trim_start_matches("rec/").to_owned();
    let record = |k: &str| {
        format!(
            r#"{{"type":"record","hash":"{}","kind":"fact","at":0}}"#,
            hash(k)
        )
        .into_bytes()
    };
    let first = Commit::new(
        vec![cas(&parent, None, Some("fact"))],
        vec![record(&parent)],
    );
    let mut cc = CrossCommit::new(&map, &first, 0, 0).expect("split");
    drive(&mut cc, &s, |_| Fault::Deliver)
        .expect("finished")
        .expect("applied");
    // The child reads its parent (present, write-once, on shard 0): the check is
    // dropped, and an `after` entry precedes the child's own.
    let second = Commit::new(vec![cas(&child, None, Some("fact"))], vec![record(&child)])
        .with_read(&parent, Some(b"fact".to_vec()));
    let mut cc = CrossCommit::new(&map, &second, 0, 1).expect("split");
    assert!(cc.split().is_single_shard());
    let r = drive(&mut cc, &s, |_| Fault::Deliver).expect("finished");
    assert_eq!(r, Ok(CommitOutcome::Applied { first_seq: Some(2) }));
    assert_eq!(types(&s[1])[0], "after");
    // The merge puts the parent first; with the shards' roles swapped it still does
    // (the rule, not the shard index, orders them).
    let order = merge_order(&[log(&s[0]), log(&s[1])]).expect("merge");
    assert_eq!(order, vec![(0, 1), (1, 1), (1, 2)]);
    let order = merge_order(&[log(&s[1]), log(&s[0])]).expect("merge");
    assert_eq!(order, vec![(1, 1), (0, 1), (0, 2)]);
}

#[test]
fn a_write_of_a_replicated_key_spans_every_shard_and_a_read_of_it_stays_local() {
    let n = 4;
    let s = stores(n);
    let map = ShardMap::new(n).expect("map");
    let hints = Commit::new(
        vec![cas("hints/active", None, Some("[h]"))],
        vec![b"hint".to_vec()],
    );
    let mut cc = CrossCommit::new(&map, &hints, 0, 0).expect("split");
    assert_eq!(cc.split().participants(), vec![0, 1, 2, 3]);
    drive(&mut cc, &s, |_| Fault::Deliver)
        .expect("finished")
        .expect("applied");
    assert_eq!(cc.stats().calls, 7);
    for store in &s {
        assert_eq!(get(store, "hints/active").as_deref(), Some("[h]"));
        assert!(pending_rows(store).is_empty());
    }
    let k = key("intent/", n, 2, 0);
    let propose = Commit::new(vec![cas(&k, None, Some("available"))], vec![b"i".to_vec()])
        .with_read("hints/active", Some(b"[h]".to_vec()));
    let mut cc = CrossCommit::new(&map, &propose, 0, 1).expect("split");
    assert!(cc.split().is_single_shard());
    drive(&mut cc, &s, |_| Fault::Deliver)
        .expect("finished")
        .expect("applied");
}

/// A [`ShardedObjects`] over two shards whose `stall_at`-th call (from 0) stalls as
/// `fault` says.
fn stalling(
    stall_at: usize,
    fault: Fault,
) -> nexus_shard::ShardedObjects<nexus_store::MemoryStore> {
    let store = nexus_shard::ShardedObjects::new(stores(N)).expect("shards");
    let mut calls = 0;
    store.set_faults(Some(Box::new(move |_, _| {
        calls += 1;
        if calls - 1 == stall_at {
            fault
        } else {
            Fault::Deliver
        }
    })));
    store
}

#[test]
fn a_read_that_meets_a_lock_of_a_committed_txn_rolls_it_forward_at_once() {
    let (_, commit, a, b) = setup();
    // Calls 0 and 1 are the puts; the commit's prewrite is call 2, its primary 3,
    // which applies before the coordinator stops.
    let store = stalling(3, Fault::StallAfter);
    for k in [&a, &b] {
        assert!(store.put_state(k, None, b"available").expect("put"));
    }
    assert!(store.commit(&commit).is_err(), "the coordinator stalled");
    store.set_faults(None);
    // The primary committed; shard 0's part is still locked, well within its TTL. A
    // read does not serve the value from before the commit point: it applies the part.
    assert_eq!(
        store.get_state(&a).expect("read").as_deref(),
        Some(&b"claimed"[..])
    );
    assert!(pending_rows(&store.shards()[0]).is_empty());
    assert_eq!(store.stats().resolved, 1);
}

#[test]
fn a_read_that_meets_a_lock_of_an_undecided_young_txn_serves_the_value_before_it() {
    let (_, commit, a, b) = setup();
    let store = stalling(3, Fault::Stall);
    for k in [&a, &b] {
        assert!(store.put_state(k, None, b"available").expect("put"));
    }
    // Call 2 prewrote shard 0; call 3 (the primary) never went out.
    assert!(store.commit(&commit).is_err());
    store.set_faults(None);
    assert_eq!(
        store.get_state(&a).expect("read").as_deref(),
        Some(&b"available"[..])
    );
    assert_eq!(pending_rows(&store.shards()[0]).len(), 2, "still locked");
    // A writer of the locked key is refused while the lock is young...
    let other = Commit::new(vec![cas(&a, Some("available"), Some("withdrawn"))], vec![]);
    assert!(matches!(
        store.commit(&other).expect("commit"),
        CommitOutcome::Conflict(_)
    ));
    // ...and goes through once it is stale (the txn is aborted on the way).
    store.advance(LOCK_TTL_MS + 1);
    assert!(matches!(
        store.commit(&other).expect("commit"),
        CommitOutcome::Applied { .. }
    ));
    assert!(pending_rows(&store.shards()[0]).is_empty());
    assert_eq!(
        store.get_state(&b).expect("read").as_deref(),
        Some(&b"available"[..])
    );
}
