//! Session equivalence: running operations through IoBuffer sessions (hydrate →
//! execute → drain → flush) gives the same answers and leaves the same store as running
//! them directly; and a store built from one session per call passes the conformance
//! suite of `nexus-store`.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use nexus_iobuf::{FlushReport, IoBufferSession, StoreSession};
use nexus_store::conformance::{Op, Outcome, apply, run_sync_suite};
use nexus_store::{
    BlobStore, CasOp, Commit, CommitOutcome, KeyValueStore, LOG_HEAD_KEY, MemoryStore, ObjectStore,
    Snapshot, StoreError, StoreResult, log_key,
};
use proptest::prelude::*;

fn after_commit(key: &str) -> bool {
    key.starts_with("idx")
}

/// A store whose every call is one IoBuffer session over a `MemoryStore`: hydrate from
/// it, execute the call in the buffers, drain, flush back.
struct ThroughSessions {
    store: MemoryStore,
}

impl ThroughSessions {
    fn session<T>(
        &self,
        mut job: impl FnMut(&IoBufferSession) -> StoreResult<T>,
    ) -> StoreResult<(T, FlushReport)> {
        let mut driver = StoreSession::new();
        let (out, delta) = driver
            .run(&self.store, &mut job)
            .map_err(|e| StoreError::Backend(e.to_string()))?;
        let out = out?;
        let report = delta
            .flush(&self.store, after_commit)
            .map_err(|e| StoreError::Backend(e.to_string()))?;
        Ok((out, report))
    }

    fn call<T>(&self, job: impl FnMut(&IoBufferSession) -> StoreResult<T>) -> StoreResult<T> {
        self.session(job).map(|(out, _)| out)
    }
}

impl KeyValueStore for ThroughSessions {
    fn get(&self, key: &str) -> StoreResult<Option<Vec<u8>>> {
        self.call(|s| s.get(key))
    }
    fn get_many(&self, keys: &[&str]) -> StoreResult<Vec<Option<Vec<u8>>>> {
        self.call(|s| s.get_many(keys))
    }
    fn set(&self, key: &str, value: &[u8]) -> StoreResult<()> {
        self.call(|s| s.set(key, value))
    }
    fn delete(&self, key: &str) -> StoreResult<()> {
        self.call(|s| s.delete(key))
    }
    fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<String>> {
        self.call(|s| s.list(prefix, start_after, limit))
    }
}

impl BlobStore for ThroughSessions {
    fn get_blob(&self, key: &str) -> StoreResult<Option<Vec<u8>>> {
        self.call(|s| s.get_blob(key))
    }
    fn put_blob(&self, key: &str, bytes: &[u8]) -> StoreResult<()> {
        self.call(|s| s.put_blob(key, bytes))
    }
    fn delete_blob(&self, key: &str) -> StoreResult<()> {
        self.call(|s| s.delete_blob(key))
    }
    fn list_blobs(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<String>> {
        self.call(|s| s.list_blobs(prefix, start_after, limit))
    }
}

impl ObjectStore for ThroughSessions {
    fn get_state(&self, key: &str) -> StoreResult<Option<Vec<u8>>> {
        self.call(|s| s.get_state(key))
    }
    fn get_states(&self, keys: &[&str]) -> StoreResult<Vec<Option<Vec<u8>>>> {
        self.call(|s| s.get_states(keys))
    }
    fn put_state(&self, key: &str, expected: Option<&[u8]>, new: &[u8]) -> StoreResult<bool> {
        self.call(|s| s.put_state(key, expected, new))
    }
    fn list_states(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<String>> {
        self.call(|s| s.list_states(prefix, start_after, limit))
    }
    fn commit(&self, commit: &Commit) -> StoreResult<CommitOutcome> {
        let (outcome, report) = self.session(|s| s.commit(commit))?;
        match outcome {
            CommitOutcome::Applied { first_seq } => {
                // A prediction, when the buffer makes one, is the number the store gave.
                if first_seq.is_some() {
                    assert_eq!(first_seq, report.first_seq, "predicted log sequence");
                }
                Ok(CommitOutcome::Applied {
                    first_seq: report.first_seq,
                })
            }
            other => Ok(other),
        }
    }
}

#[test]
fn a_store_of_one_session_per_call_passes_the_conformance_suite() {
    run_sync_suite(|| ThroughSessions {
        store: MemoryStore::new(),
    });
}

// ---------------------------------------------------------------------------------
// Random operation sequences.

const KV_KEYS: &[&str] = &["a", "a/1", "a/2", "a/3", "a0", "b/1", "idx/1", "idx/2"];
const STATE_KEYS: &[&str] = &["s/1", "s/2", "s/3", "s0", "t", "log/head"];
const PREFIXES: &[&str] = &["", "a", "a/", "b", "s/", "log/", "idx/", "lo", "z"];
const CURSORS: &[&str] = &["0", "a/1", "a/2", "s/1", "s/2", "log/", "idx/1"];
const VALUES: &[&str] = &["", "x", "y", "zz"];

fn key(pool: &'static [&'static str]) -> impl Strategy<Value = String> {
    prop_oneof![
        20 => proptest::sample::select(pool).prop_map(str::to_owned),
        1 => Just(String::new()), // invalid: refused both ways
    ]
}

fn state_key() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => key(STATE_KEYS),
        1 => (1u64..4).prop_map(log_key),
    ]
}

fn value() -> impl Strategy<Value = Vec<u8>> {
    proptest::sample::select(VALUES).prop_map(|v| v.as_bytes().to_vec())
}

fn listing() -> impl Strategy<Value = (String, Option<String>, usize)> {
    (
        proptest::sample::select(PREFIXES).prop_map(str::to_owned),
        proptest::option::of(proptest::sample::select(CURSORS).prop_map(str::to_owned)),
        0usize..6,
    )
}

fn cas_op() -> impl Strategy<Value = CasOp> {
    (
        state_key(),
        proptest::option::of(value()),
        proptest::option::of(value()),
    )
        .prop_map(|(key, expected, new)| CasOp { key, expected, new })
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => key(KV_KEYS).prop_map(Op::KvGet),
        2 => proptest::collection::vec(key(KV_KEYS), 0..4).prop_map(Op::KvGetMany),
        6 => (key(KV_KEYS), value()).prop_map(|(k, v)| Op::KvSet(k, v)),
        3 => key(KV_KEYS).prop_map(Op::KvDelete),
        3 => listing().prop_map(|(prefix, start_after, limit)| Op::KvList { prefix, start_after, limit }),
        2 => key(KV_KEYS).prop_map(Op::BlobGet),
        4 => (key(KV_KEYS), value()).prop_map(|(k, v)| Op::BlobPut(k, v)),
        2 => key(KV_KEYS).prop_map(Op::BlobDelete),
        2 => listing().prop_map(|(prefix, start_after, limit)| Op::BlobList { prefix, start_after, limit }),
        3 => state_key().prop_map(Op::StateGet),
        2 => proptest::collection::vec(state_key(), 0..4).prop_map(Op::StateGetMany),
        6 => (state_key(), proptest::option::of(value()), value())
            .prop_map(|(key, expected, new)| Op::StatePut { key, expected, new }),
        3 => listing().prop_map(|(prefix, start_after, limit)| Op::StateList { prefix, start_after, limit }),
        5 => (
            proptest::collection::vec(cas_op(), 0..4),
            proptest::collection::vec(value(), 0..3),
        )
            .prop_map(|(ops, log)| Op::Commit(Commit { reads: Vec::new(),  ops, log })),
    ]
}

/// True if `op` can observe commit log keys, which a session shows only after draining.
fn reads_log(op: &Op) -> bool {
    let is_log = |k: &String| k.starts_with("log/");
    match op {
        Op::StateGet(k) => is_log(k),
        Op::StateGetMany(ks) => ks.iter().any(is_log),
        Op::StateList { prefix, .. } => {
            "log/".starts_with(prefix.as_str()) || prefix.starts_with("log/")
        }
        _ => false,
    }
}

fn appended_log(outcome: &Outcome) -> bool {
    matches!(
        outcome,
        Outcome::Committed(CommitOutcome::Applied { first_seq: Some(_) })
    )
}

/// Runs `group` as one session against `store` and the same ops directly against
/// `direct`, comparing answers (except log reads after an append in the same session).
fn run_group(store: &MemoryStore, direct: &MemoryStore, group: &[Op]) -> Result<(), TestCaseError> {
    let expected: Vec<Outcome> = group.iter().map(|op| apply(direct, op)).collect();
    let mut driver = StoreSession::with_max_rounds(4 * group.len() + 4);
    // Hydrate the log head up front, as a host does, so the session predicts the
    // sequence numbers its commits will get (checked below).
    let head = store.get_state(LOG_HEAD_KEY).unwrap();
    driver.session().object_buf().hydrate(LOG_HEAD_KEY, head);
    let (got, delta) = driver
        .run(store, |s| {
            group.iter().map(|op| apply(s, op)).collect::<Vec<_>>()
        })
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    let report = delta
        .flush(store, after_commit)
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    let mut appended = false;
    for (i, op) in group.iter().enumerate() {
        if !(appended && reads_log(op)) {
            prop_assert_eq!(&got[i], &expected[i], "op {} of the group: {:?}", i, op);
        }
        appended |= appended_log(&expected[i]);
    }
    // The first log sequence the session predicted is the one the store assigned.
    let predicted = got.iter().find_map(|o| match o {
        Outcome::Committed(CommitOutcome::Applied {
            first_seq: Some(seq),
        }) => Some(*seq),
        _ => None,
    });
    prop_assert_eq!(predicted, report.first_seq);
    prop_assert_eq!(store.snapshot().unwrap(), direct.snapshot().unwrap());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn one_session_per_operation_equals_direct_execution(
        ops in proptest::collection::vec(op(), 1..40),
    ) {
        let store = MemoryStore::new();
        let direct = MemoryStore::new();
        for op in &ops {
            run_group(&store, &direct, std::slice::from_ref(op))?;
        }
    }

    #[test]
    fn small_groups_per_session_equal_direct_execution(
        groups in proptest::collection::vec(proptest::collection::vec(op(), 1..6), 1..12),
    ) {
        let store = MemoryStore::new();
        let direct = MemoryStore::new();
        for group in &groups {
            run_group(&store, &direct, group)?;
        }
    }
}

// ---------------------------------------------------------------------------------
// Listing-heavy sessions over a populated store: truncated hydrated listings overlaid
// with the session's own writes and deletes.

const DENSE_KEYS: &[&str] = &[
    "a", "a/0", "a/1", "a/2", "a/3", "a/4", "a/5", "a/6", "a/7", "a0", "b/1", "b/2",
];
const DENSE_PREFIXES: &[&str] = &["", "a", "a/", "b/"];
const DENSE_CURSORS: &[&str] = &["0", "a/1", "a/3", "a/6", "b"];

#[derive(Debug, Clone)]
enum Dense {
    Write(String),
    Delete(String),
    List(String, Option<String>, usize),
}

fn dense() -> impl Strategy<Value = Dense> {
    let k = || proptest::sample::select(DENSE_KEYS).prop_map(str::to_owned);
    prop_oneof![
        2 => k().prop_map(Dense::Write),
        3 => k().prop_map(Dense::Delete),
        4 => (
            proptest::sample::select(DENSE_PREFIXES).prop_map(str::to_owned),
            proptest::option::of(proptest::sample::select(DENSE_CURSORS).prop_map(str::to_owned)),
            1usize..6,
        )
            .prop_map(|(p, c, l)| Dense::List(p, c, l)),
    ]
}

/// The dense op on tier 0 (kv), 1 (blobs) or 2 (states).
fn on_tier(tier: u8, op: &Dense) -> Op {
    match (tier, op.clone()) {
        (0, Dense::Write(k)) => Op::KvSet(k, b"w".to_vec()),
        (0, Dense::Delete(k)) => Op::KvDelete(k),
        (0, Dense::List(prefix, start_after, limit)) => Op::KvList {
            prefix,
            start_after,
            limit,
        },
        (1, Dense::Write(k)) => Op::BlobPut(k, b"w".to_vec()),
        (1, Dense::Delete(k)) => Op::BlobDelete(k),
        (1, Dense::List(prefix, start_after, limit)) => Op::BlobList {
            prefix,
            start_after,
            limit,
        },
        // States have no delete but a commit with `new: None`.
        (_, Dense::Write(k)) => Op::Commit(Commit {
            reads: Vec::new(),
            ops: vec![CasOp {
                key: k,
                expected: None,
                new: Some(b"w".to_vec()),
            }],
            log: vec![],
        }),
        (_, Dense::Delete(k)) => Op::Commit(Commit {
            reads: Vec::new(),
            ops: vec![CasOp {
                key: k,
                expected: Some(b"v".to_vec()),
                new: None,
            }],
            log: vec![],
        }),
        (_, Dense::List(prefix, start_after, limit)) => Op::StateList {
            prefix,
            start_after,
            limit,
        },
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn listing_sessions_over_a_populated_store_equal_direct_execution(
        tier in 0u8..3,
        present in proptest::collection::btree_set(proptest::sample::select(DENSE_KEYS), 0..12),
        sessions in proptest::collection::vec(proptest::collection::vec(dense(), 1..10), 1..4),
    ) {
        let store = MemoryStore::new();
        let direct = MemoryStore::new();
        for k in present {
            for s in [&store, &direct] {
                match tier {
                    0 => s.set(k, b"v").unwrap(),
                    1 => s.put_blob(k, b"v").unwrap(),
                    _ => prop_assert!(s.put_state(k, None, b"v").unwrap()),
                }
            }
        }
        for ops in &sessions {
            let group: Vec<Op> = ops.iter().map(|op| on_tier(tier, op)).collect();
            run_group(&store, &direct, &group)?;
        }
    }
}
