//! Properties: random commits over random keys on N shards with random faults behave
//! as the same commits on one store — each all or nothing, no lock left after a sweep,
//! and the merged order of the shard logs replays to the same final state.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use nexus_shard::{
    Fault, LOCK_TTL_MS, Placement, ProtocolEntry, ShardMap, ShardedObjects, merge_order,
};
use nexus_store::{
    CasOp, Commit, CommitOutcome, LOG_PREFIX, MemoryStore, ObjectStore, ReadCheck, Snapshot,
    apply_commit,
};

/// A tiny deterministic generator (xorshift64*), so a case replays from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// The keys a case draws from: Intent states and ledgers, records (write-once), the
/// replicated Hint list, and a key of shard 0.
fn key_pool(seed: u64) -> Vec<String> {
    let mut rng = Rng(seed | 1);
    let mut keys = Vec::new();
    for _ in 0..5 {
        let h = format!("{:016x}{:048x}", rng.next(), 0u8);
        keys.push(format!("intent/{h}"));
        keys.push(format!("acts/{h}"));
    }
    for _ in 0..5 {
        keys.push(format!("rec/{:016x}{:048x}", rng.next(), 0u8));
    }
    keys.push("hints/active".to_owned());
    keys.push("contract/current".to_owned());
    keys
}

/// One element of a drawn commit: a key (index into the pool), and what to do.
#[derive(Debug, Clone)]
struct Touch {
    key: usize,
    write: bool,
    /// Expect the value the writer saw (true) or a stale one.
    fresh: bool,
    /// The value written (`None`: delete).
    value: Option<u8>,
}

fn touches() -> impl Strategy<Value = Vec<Touch>> {
    prop::collection::vec(
        (
            0usize..17,
            any::<bool>(),
            prop::bool::weighted(0.85),
            prop::option::weighted(0.85, 0u8..4),
        )
            .prop_map(|(key, write, fresh, value)| Touch {
                key,
                write,
                fresh,
                value,
            }),
        1..5,
    )
}

/// The commit of `touches` as a writer who read `view` would make it; its test log
/// entry carries the commit itself (so a replay can re-apply it), and each record it
/// creates gets a core-style `record` entry.
fn build(
    id: usize,
    keys: &[String],
    touches: &[Touch],
    view: &dyn Fn(&str) -> Option<Vec<u8>>,
) -> Commit {
    let mut seen = BTreeSet::new();
    let mut commit = Commit::default();
    let mut records = Vec::new();
    for t in touches {
        let key = &keys[t.key % keys.len()];
        if !seen.insert(key.clone()) {
            continue;
        }
        let current = view(key);
        let stale = |v: Option<Vec<u8>>| match v {
            Some(_) => None,
            None => Some(b"stale".to_vec()),
        };
        let write_once = key.starts_with("rec/");
        // A record seen committed stays committed: nobody can have read one present
        // that is absent now (a stale read of a record is one of it absent).
        let expected = if t.fresh || (write_once && current.is_none()) {
            current.clone()
        } else {
            stale(current.clone())
        };
        if t.write && !(write_once && current.is_some()) {
            let new = if write_once {
                records.push(key.trim_start_matches("rec/").to_owned());
                Some(b"fact".to_vec())
            } else {
                t.value.map(|v| format!("v{v}").into_bytes())
            };
            commit.ops.push(CasOp {
                key: key.clone(),
                expected,
                new,
            });
        } else {
            commit.reads.push(ReadCheck {
                key: key.clone(),
                value: expected,
            });
        }
    }
    let enc = |v: &Option<Vec<u8>>| v.as_ref().map(|b| String::from_utf8_lossy(b).into_owned());
    let entry = serde_json::json!({
        "type": "test",
        "id": id,
        "ops": commit.ops.iter().map(|o| (o.key.clone(), enc(&o.expected), enc(&o.new))).collect::<Vec<_>>(),
        "reads": commit.reads.iter().map(|r| (r.key.clone(), enc(&r.value))).collect::<Vec<_>>(),
    });
    commit.log.push(serde_json::to_vec(&entry).expect("json"));
    for h in records {
        commit
            .log
            .push(format!(r#"{{"type":"record","hash":"{h}","kind":"fact","at":0}}"#).into_bytes());
    }
    commit
}

/// The commit a test entry carries, and its id.
fn parse_test_entry(entry: &[u8]) -> Option<(usize, Commit)> {
    let v: serde_json::Value = serde_json::from_slice(entry).ok()?;
    if v["type"] != "test" {
        return None;
    }
    let val = |x: &serde_json::Value| x.as_str().map(|s| s.as_bytes().to_vec());
    let ops = v["ops"]
        .as_array()?
        .iter()
        .map(|o| CasOp {
            key: o[0].as_str().unwrap_or_default().to_owned(),
            expected: val(&o[1]),
            new: val(&o[2]),
        })
        .collect();
    let reads = v["reads"]
        .as_array()?
        .iter()
        .map(|r| ReadCheck {
            key: r[0].as_str().unwrap_or_default().to_owned(),
            value: val(&r[1]),
        })
        .collect();
    Some((
        v["id"].as_u64()? as usize,
        Commit {
            ops,
            reads,
            log: vec![],
        },
    ))
}

/// The data (every key but the log's and the protocol's) a sharded store holds, each
/// key from its home; checks that no key lives off its home and that every shard's
/// replica of a replicated key is the same.
fn sharded_data(store: &ShardedObjects<MemoryStore>) -> BTreeMap<String, Vec<u8>> {
    let map = store.map();
    let mut data = BTreeMap::new();
    let snaps: Vec<_> = store
        .shards()
        .iter()
        .map(|s| s.snapshot().expect("snap").states)
        .collect();
    for (s, states) in snaps.iter().enumerate() {
        for (k, v) in states {
            match map.placement(k) {
                Placement::Local => {}
                Placement::Shard(home) => {
                    assert_eq!(home, s, "{k} lives off its home shard");
                    data.insert(k.clone(), v.clone());
                }
                Placement::Replicated => {
                    assert_eq!(snaps[0].get(k), Some(v), "replicas of {k} differ");
                    data.insert(k.clone(), v.clone());
                }
            }
        }
    }
    data
}

fn data_of(states: &BTreeMap<String, Vec<u8>>) -> BTreeMap<String, Vec<u8>> {
    states
        .iter()
        .filter(|(k, _)| !k.starts_with(LOG_PREFIX))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// No lock or part row on any shard.
fn assert_no_pending(store: &ShardedObjects<MemoryStore>) {
    for (s, shard) in store.shards().iter().enumerate() {
        let rows = common::pending_rows(shard);
        assert!(rows.is_empty(), "shard {s} still holds {rows:?}");
    }
}

/// Replays the merged order's test entries on one empty map: each must apply (its
/// expectations hold in that order); returns the final data and the ids in order.
fn replay(store: &ShardedObjects<MemoryStore>) -> (BTreeMap<String, Vec<u8>>, Vec<usize>) {
    let logs: Vec<_> = (0..store.map().shards())
        .map(|i| store.shard_log(i).expect("log"))
        .collect();
    let order = merge_order(&logs).expect("the shard logs merge");
    let mut states = BTreeMap::new();
    let mut ids = Vec::new();
    for (s, seq) in order {
        let entry = &logs[s][(seq - 1) as usize].1;
        if ProtocolEntry::decode(entry).expect("entry").is_some() {
            continue;
        }
        if let Some((id, commit)) = parse_test_entry(entry) {
            let outcome = apply_commit(&mut states, &commit).expect("apply");
            assert!(
                matches!(outcome, CommitOutcome::Applied { .. }),
                "commit {id} does not replay in the merged order: {outcome:?}"
            );
            ids.push(id);
        }
    }
    (data_of(&states), ids)
}

fn fault_hook(seed: u64, lose: u64, stall: u64) -> nexus_shard::FaultHook {
    let mut rng = Rng(seed | 1);
    Box::new(move |_, _| {
        let r = rng.below(1000);
        if r < lose {
            Fault::LoseAnswer
        } else if r < 2 * lose {
            Fault::LoseCall
        } else if r < 2 * lose + stall {
            Fault::Stall
        } else if r < 2 * lose + 2 * stall {
            Fault::StallAfter
        } else {
            Fault::Deliver
        }
    })
}

fn sharded(n: usize) -> ShardedObjects<MemoryStore> {
    ShardedObjects::new(common::stores(n)).expect("shards")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    /// With lost answers (and no stalls) every commit decides as on one store.
    #[test]
    fn sharded_commits_with_lost_answers_equal_one_store(
        n in prop::sample::select(vec![1usize, 2, 4, 8]),
        seed in any::<u64>(),
        lose in 0u64..150,
        commits in prop::collection::vec(touches(), 1..40),
    ) {
        let keys = key_pool(seed);
        let store = sharded(n);
        store.set_faults(Some(fault_hook(seed, lose, 0)));
        let reference = MemoryStore::new();
        let mut unknown = Vec::new();
        for (id, t) in commits.iter().enumerate() {
            let view = |k: &str| reference.get_state(k).expect("read");
            let commit = build(id, &keys, t, &view);
            let expect = reference.snapshot().expect("snap");
            match store.commit(&commit) {
                Ok(CommitOutcome::Applied { .. }) => {
                    let r = reference.commit(&commit).expect("commit");
                    prop_assert!(matches!(r, CommitOutcome::Applied { .. }), "commit {id}: {r:?}");
                }
                Ok(CommitOutcome::Conflict(_)) => {
                    let r = reference.commit(&commit).expect("commit");
                    prop_assert!(matches!(r, CommitOutcome::Conflict(_)), "commit {id}: {r:?}");
                }
                Ok(other) => prop_assert!(false, "{other:?}"),
                Err(_) => {
                    // A lost single-shard answer: applied or not, all or nothing. Which
                    // one shows in the data: it equals the reference's before or after.
                    let data = sharded_data(&store);
                    if data == data_of(&expect.states) {
                        unknown.push(id);
                    } else {
                        let r = reference.commit(&commit).expect("commit");
                        let applied = matches!(r, CommitOutcome::Applied { .. });
                        prop_assert!(applied, "commit {}: {:?}", id, r);
                    }
                }
            }
            prop_assert_eq!(sharded_data(&store), data_of(&reference.snapshot().expect("snap").states));
        }
        assert_no_pending(&store);
        let (replayed, _) = replay(&store);
        prop_assert_eq!(replayed, sharded_data(&store));
        let stats = store.stats();
        prop_assert_eq!(stats.resolved, 0);
        let _ = unknown;
    }

    /// With stalled coordinators too (and the clock moving, resolvers and sweeps
    /// settling what they left), every commit is all or nothing, an applied one is in
    /// the merged log once and a refused one not at all, no lock outlives a sweep, and
    /// the merged order replays to the final state.
    #[test]
    fn stalled_transactions_are_settled_and_the_merged_order_replays(
        n in prop::sample::select(vec![2usize, 4, 8]),
        seed in any::<u64>(),
        lose in 0u64..100,
        stall in 0u64..60,
        commits in prop::collection::vec((touches(), 0u64..3_000, prop::bool::weighted(0.1)), 1..40),
    ) {
        let keys = key_pool(seed);
        let store = sharded(n);
        store.set_faults(Some(fault_hook(seed, lose, stall)));
        let mut outcomes: BTreeMap<usize, Option<bool>> = BTreeMap::new();
        for (id, (t, dt, sweep)) in commits.iter().enumerate() {
            store.advance(*dt);
            if *sweep {
                let _ = store.sweep_all();
            }
            let view = |k: &str| {
                let mut v = store.get_state(k).ok().flatten();
                // A read that stalled in a resolver falls back to the shard's value.
                if v.is_none() {
                    v = store.shard(store.map().home(k)).and_then(|s| s.get_state(k).ok().flatten());
                }
                v
            };
            let commit = build(id, &keys, t, &view);
            let outcome = match store.commit(&commit) {
                Ok(CommitOutcome::Applied { .. }) => Some(true),
                Ok(_) => Some(false),
                Err(_) => None,
            };
            outcomes.insert(id, outcome);
        }
        store.set_faults(None);
        store.advance(LOCK_TTL_MS);
        prop_assert_eq!(store.sweep_all().expect("sweep"), None);
        assert_no_pending(&store);
        let (replayed, ids) = replay(&store);
        prop_assert_eq!(&replayed, &sharded_data(&store));
        let mut count: BTreeMap<usize, usize> = BTreeMap::new();
        for id in ids {
            *count.entry(id).or_default() += 1;
        }
        for (id, outcome) in outcomes {
            let c = count.get(&id).copied().unwrap_or(0);
            match outcome {
                Some(true) => prop_assert_eq!(c, 1, "applied commit {} in the log {} times", id, c),
                Some(false) => prop_assert_eq!(c, 0, "refused commit {} in the log", id),
                None => prop_assert!(c <= 1, "commit {} in the log {} times", id, c),
            }
        }
    }
}

#[test]
fn one_shard_is_the_store_itself() {
    let store = sharded(1);
    let direct = MemoryStore::new();
    let keys = key_pool(7);
    let mut rng = Rng(99);
    for id in 0..200 {
        let t: Vec<Touch> = (0..3)
            .map(|_| Touch {
                key: rng.below(17) as usize,
                write: rng.below(2) == 0,
                fresh: rng.below(10) > 0,
                value: Some(rng.below(4) as u8),
            })
            .collect();
        let view = |k: &str| direct.get_state(k).expect("read");
        let commit = build(id, &keys, &t, &view);
        assert_eq!(
            store.commit(&commit).expect("commit"),
            direct.commit(&commit).expect("commit")
        );
    }
    assert_eq!(
        store.shards()[0].snapshot().expect("snap"),
        direct.snapshot().expect("snap")
    );
    assert_eq!(ShardMap::default().shards(), 1);
}
