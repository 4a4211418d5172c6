//! Semantics of `RedbStore`: the shared conformance suite, equivalence with the memory
//! store, persistence across reopen, `commit_group`, `write_batch` and fsync counts.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use nexus_store::conformance::{Op, apply};
use nexus_store::{
    BlobStore, CasFailure, CasOp, Commit, CommitOutcome, KeyValueStore, LOG_HEAD_KEY, MemoryStore,
    ObjectStore, Snapshot, StoreError, log_key,
};
use nexus_store_redb::{PutPhase, RedbStore, Tier, WriteBatch};
use proptest::prelude::*;
use redb::StorageBackend;
use tempfile::TempDir;

fn fresh() -> (TempDir, RedbStore) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = RedbStore::open(dir.path().join("store.redb")).expect("open store");
    (dir, store)
}

fn cas(key: &str, expected: Option<&str>, new: Option<&str>) -> CasOp {
    CasOp {
        key: key.to_owned(),
        expected: expected.map(|v| v.as_bytes().to_vec()),
        new: new.map(|v| v.as_bytes().to_vec()),
    }
}

fn commit(ops: Vec<CasOp>, log: &[&str]) -> Commit {
    Commit {
        reads: Vec::new(),
        ops,
        log: log.iter().map(|e| e.as_bytes().to_vec()).collect(),
    }
}

fn applied(first_seq: Option<u64>) -> CommitOutcome {
    CommitOutcome::Applied { first_seq }
}

fn state(store: &RedbStore, key: &str) -> Option<String> {
    store
        .get_state(key)
        .expect("get_state")
        .map(|v| String::from_utf8(v).expect("utf-8 state"))
}

#[test]
fn passes_the_conformance_suite() {
    let dir = tempfile::tempdir().expect("temp dir");
    let n = AtomicUsize::new(0);
    nexus_store::conformance::run_sync_suite(|| {
        let i = n.fetch_add(1, Ordering::Relaxed);
        RedbStore::open(dir.path().join(format!("case-{i}.redb"))).expect("open store")
    });
    assert!(n.load(Ordering::Relaxed) >= 10, "the suite ran its cases");
}

#[test]
fn everything_survives_drop_and_reopen() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("persist.redb");
    let before = {
        let store = RedbStore::open(&path).expect("open");
        let clone = store.clone();
        store.set("rec/1", b"record one").expect("set");
        clone.set("rec/2", &[0, 255, 7]).expect("set via clone");
        store.delete("rec/2").expect("delete");
        store
            .put_blob("blob/a", &vec![9u8; 100_000])
            .expect("put_blob");
        assert!(
            store
                .put_state("intent/1", None, b"open")
                .expect("put_state")
        );
        let outcome = clone
            .commit(&commit(
                vec![cas("intent/1", Some("open"), Some("claimed"))],
                &["claimed intent/1", "second entry"],
            ))
            .expect("commit");
        assert_eq!(outcome, applied(Some(1)));
        store.snapshot().expect("snapshot")
    };
    let store = RedbStore::open(&path).expect("reopen");
    assert_eq!(store.path(), Some(path.as_path()));
    assert_eq!(store.snapshot().expect("snapshot"), before);
    assert_eq!(
        store.get("rec/1").expect("get"),
        Some(b"record one".to_vec())
    );
    assert_eq!(store.get("rec/2").expect("get"), None);
    assert_eq!(
        store.get_blob("blob/a").expect("get_blob"),
        Some(vec![9u8; 100_000])
    );
    assert_eq!(state(&store, "intent/1").as_deref(), Some("claimed"));
    assert_eq!(state(&store, &log_key(2)).as_deref(), Some("second entry"));
    assert_eq!(state(&store, LOG_HEAD_KEY).as_deref(), Some("2"));
    // numbering continues after reopen
    let outcome = store
        .commit(&commit(vec![], &["third"]))
        .expect("commit after reopen");
    assert_eq!(outcome, applied(Some(3)));
}

#[test]
fn a_second_open_of_an_open_file_is_an_error_not_a_panic() {
    let (dir, _store) = fresh();
    let err = RedbStore::open(dir.path().join("store.redb")).expect_err("file is locked");
    assert!(matches!(err, StoreError::Backend(_)), "{err:?}");
    assert!(err.to_string().contains("store.redb"), "{err}");
}

#[test]
fn commit_group_applies_each_commit_on_its_own_in_order() {
    let (_dir, store) = fresh();
    let outcomes = store
        .commit_group(&[
            commit(vec![cas("x", None, Some("1"))], &["a"]),
            // sees x = 1 from the first commit: conflicts, changes nothing
            commit(
                vec![cas("y", None, Some("y")), cas("x", None, Some("2"))],
                &["b"],
            ),
            // sees the first commit's effect
            commit(vec![cas("x", Some("1"), Some("3"))], &["c", "d"]),
            Commit::default(),
            commit(vec![cas("z", None, Some("z"))], &[]),
        ])
        .expect("group");
    assert_eq!(
        outcomes,
        vec![
            applied(Some(1)),
            CommitOutcome::Conflict(vec![CasFailure {
                key: "x".into(),
                current: Some(b"1".to_vec()),
            }]),
            applied(Some(2)),
            applied(None),
            applied(None),
        ]
    );
    assert_eq!(state(&store, "x").as_deref(), Some("3"));
    assert_eq!(state(&store, "y"), None);
    assert_eq!(state(&store, "z").as_deref(), Some("z"));
    assert_eq!(state(&store, &log_key(1)).as_deref(), Some("a"));
    assert_eq!(state(&store, &log_key(2)).as_deref(), Some("c"));
    assert_eq!(state(&store, &log_key(3)).as_deref(), Some("d"));
    assert_eq!(state(&store, &log_key(4)), None);
    assert_eq!(state(&store, LOG_HEAD_KEY).as_deref(), Some("3"));
    assert_eq!(store.commit_group(&[]).expect("empty group"), vec![]);
}

#[test]
fn commit_group_with_an_invalid_commit_applies_nothing() {
    let (_dir, store) = fresh();
    let before = store.snapshot().expect("snapshot");
    let err = store
        .commit_group(&[
            commit(vec![cas("ok", None, Some("1"))], &["e"]),
            commit(vec![cas(LOG_HEAD_KEY, None, Some("9"))], &[]),
        ])
        .expect_err("invalid key");
    assert!(matches!(err, StoreError::InvalidKey { .. }), "{err:?}");
    assert_eq!(store.snapshot().expect("snapshot"), before);
}

#[test]
fn write_batch_that_applies_writes_everything() {
    let (_dir, store) = fresh();
    let mut batch = WriteBatch::new(commit(vec![cas("intent/1", None, Some("open"))], &["p"]));
    batch
        .kv(PutPhase::BeforeCommit, "rec/abc", b"record".to_vec())
        .blob(PutPhase::BeforeCommit, "blob/abc", b"blob".to_vec())
        .kv(PutPhase::AfterCommit, "idx/topic/abc", b"".to_vec())
        .blob(PutPhase::AfterCommit, "archive/1", b"line\n".to_vec());
    assert_eq!(batch.puts[0].tier, Tier::Kv);
    assert_eq!(store.write_batch(&batch).expect("batch"), applied(Some(1)));
    assert_eq!(store.get("rec/abc").expect("get"), Some(b"record".to_vec()));
    assert_eq!(store.get("idx/topic/abc").expect("get"), Some(vec![]));
    assert_eq!(
        store.get_blob("blob/abc").expect("get_blob"),
        Some(b"blob".to_vec())
    );
    assert_eq!(
        store.get_blob("archive/1").expect("get_blob"),
        Some(b"line\n".to_vec())
    );
    assert_eq!(state(&store, "intent/1").as_deref(), Some("open"));
    assert_eq!(state(&store, &log_key(1)).as_deref(), Some("p"));
}

#[test]
fn write_batch_that_conflicts_keeps_only_before_commit_puts() {
    let (_dir, store) = fresh();
    assert!(store.put_state("intent/1", None, b"claimed").expect("put"));
    let mut batch = WriteBatch::new(commit(
        vec![
            cas("other", None, Some("x")),
            cas("intent/1", Some("open"), Some("claimed")),
        ],
        &["never"],
    ));
    batch
        .kv(PutPhase::BeforeCommit, "rec/abc", b"record".to_vec())
        .blob(PutPhase::BeforeCommit, "blob/abc", b"blob".to_vec())
        .kv(PutPhase::AfterCommit, "idx/topic/abc", b"".to_vec())
        .blob(PutPhase::AfterCommit, "archive/1", b"line\n".to_vec());
    assert_eq!(
        store.write_batch(&batch).expect("batch"),
        CommitOutcome::Conflict(vec![CasFailure {
            key: "intent/1".into(),
            current: Some(b"claimed".to_vec()),
        }])
    );
    assert_eq!(store.get("rec/abc").expect("get"), Some(b"record".to_vec()));
    assert_eq!(
        store.get_blob("blob/abc").expect("get_blob"),
        Some(b"blob".to_vec())
    );
    assert_eq!(store.get("idx/topic/abc").expect("get"), None);
    assert_eq!(store.get_blob("archive/1").expect("get_blob"), None);
    assert_eq!(state(&store, "other"), None);
    assert_eq!(state(&store, LOG_HEAD_KEY), None);
}

#[test]
fn write_batch_with_an_invalid_key_writes_nothing() {
    let (_dir, store) = fresh();
    let before = store.snapshot().expect("snapshot");
    let mut batch = WriteBatch::new(commit(vec![cas("k", None, Some("v"))], &["e"]));
    batch
        .kv(PutPhase::BeforeCommit, "rec/ok", b"ok".to_vec())
        .blob(PutPhase::BeforeCommit, "", b"empty key".to_vec());
    let err = store.write_batch(&batch).expect_err("invalid key");
    assert!(matches!(err, StoreError::InvalidKey { .. }), "{err:?}");
    assert_eq!(store.snapshot().expect("snapshot"), before);
}

#[test]
fn write_batch_group_later_batches_see_earlier_ones() {
    let (_dir, store) = fresh();
    let mut first = WriteBatch::new(commit(vec![cas("intent/1", None, Some("a"))], &["1"]));
    first.kv(PutPhase::AfterCommit, "idx/a", b"a".to_vec());
    let mut second = WriteBatch::new(commit(vec![cas("intent/1", None, Some("b"))], &["2"]));
    second
        .kv(PutPhase::BeforeCommit, "rec/b", b"b".to_vec())
        .kv(PutPhase::AfterCommit, "idx/b", b"b".to_vec());
    let mut third = WriteBatch::new(commit(vec![cas("intent/1", Some("a"), Some("c"))], &["3"]));
    third.kv(PutPhase::AfterCommit, "idx/c", b"c".to_vec());
    let outcomes = store
        .write_batch_group(&[first, second, third])
        .expect("group");
    assert_eq!(outcomes[0], applied(Some(1)));
    assert!(matches!(outcomes[1], CommitOutcome::Conflict(_)));
    assert_eq!(outcomes[2], applied(Some(2)));
    assert_eq!(
        store.list("", None, 10).expect("list"),
        vec!["idx/a", "idx/c", "rec/b"]
    );
    assert_eq!(state(&store, "intent/1").as_deref(), Some("c"));
    assert_eq!(state(&store, &log_key(2)).as_deref(), Some("3"));
}

/// An in-memory redb backend that counts `sync_data` calls (the fsyncs).
#[derive(Debug)]
struct CountingBackend {
    inner: redb::backends::InMemoryBackend,
    syncs: Arc<AtomicU64>,
}

impl StorageBackend for CountingBackend {
    fn len(&self) -> Result<u64, std::io::Error> {
        self.inner.len()
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), std::io::Error> {
        self.inner.read(offset, out)
    }
    fn set_len(&self, len: u64) -> Result<(), std::io::Error> {
        self.inner.set_len(len)
    }
    fn sync_data(&self) -> Result<(), std::io::Error> {
        self.syncs.fetch_add(1, Ordering::SeqCst);
        self.inner.sync_data()
    }
    fn write(&self, offset: u64, data: &[u8]) -> Result<(), std::io::Error> {
        self.inner.write(offset, data)
    }
}

#[test]
fn fsyncs_one_per_write_one_per_group_none_when_nothing_changes() {
    let syncs = Arc::new(AtomicU64::new(0));
    let backend = CountingBackend {
        inner: redb::backends::InMemoryBackend::new(),
        syncs: Arc::clone(&syncs),
    };
    let db = redb::Database::builder()
        .create_with_backend(backend)
        .expect("create db");
    let store = RedbStore::from_database(db).expect("wrap db");
    assert_eq!(store.path(), None);
    let count = || syncs.load(Ordering::SeqCst);
    let delta = |f: &dyn Fn()| {
        let before = count();
        f();
        count() - before
    };

    assert_eq!(delta(&|| store.set("k", b"v").expect("set")), 1);
    assert_eq!(
        delta(&|| assert!(store.put_state("s", None, b"1").expect("put"))),
        1
    );
    // a failed compare-and-swap and a no-op delete write nothing
    assert_eq!(
        delta(&|| assert!(!store.put_state("s", None, b"2").expect("put"))),
        0
    );
    assert_eq!(delta(&|| store.delete("absent").expect("delete")), 0);
    // ten commits in one group: one fsync
    let group: Vec<Commit> = (0..10)
        .map(|i| commit(vec![cas(&format!("g/{i}"), None, Some("x"))], &["e"]))
        .collect();
    assert_eq!(
        delta(&|| {
            let outcomes = store.commit_group(&group).expect("group");
            assert!(
                outcomes
                    .iter()
                    .all(|o| matches!(o, CommitOutcome::Applied { .. }))
            );
        }),
        1
    );
    // the same group again: every commit conflicts, nothing is written
    assert_eq!(
        delta(&|| {
            let outcomes = store.commit_group(&group).expect("group");
            assert!(
                outcomes
                    .iter()
                    .all(|o| matches!(o, CommitOutcome::Conflict(_)))
            );
        }),
        0
    );
    // a batch with records, blobs and a commit: one fsync (values small enough not to
    // make redb grow the file, which costs an extra sync of its own)
    let mut batch = WriteBatch::new(commit(vec![cas("b", None, Some("1"))], &["b"]));
    batch
        .kv(PutPhase::BeforeCommit, "rec/1", vec![1u8; 1_000])
        .blob(PutPhase::BeforeCommit, "blob/1", vec![2u8; 1_000])
        .kv(PutPhase::AfterCommit, "idx/1", b"".to_vec());
    assert_eq!(
        delta(&|| assert_eq!(store.write_batch(&batch).expect("batch"), applied(Some(11)))),
        1
    );
    assert_eq!(
        store.snapshot().expect("snapshot").states.len(),
        // ... and the log's Merkle tree: 19 stored hashes for 11 entries
        // (leaf n adds 1 + its trailing one bits)
        10 + 1 + 1 + 12 + 19
    );
}

fn key_strategy() -> impl Strategy<Value = String> + Clone {
    // a small key space so that conflicts, hits and overwrites are frequent; `log/head`
    // checks that the reserved key is refused the same way
    prop::sample::select(vec!["a", "a/1", "a/2", "b", "log/head"]).prop_map(String::from)
}

fn value_strategy() -> impl Strategy<Value = Option<Vec<u8>>> + Clone {
    prop::option::of(prop::sample::select(vec!["", "1", "2"]))
        .prop_map(|v| v.map(|v| v.as_bytes().to_vec()))
}

fn commit_strategy() -> impl Strategy<Value = Commit> {
    let cas_op = (key_strategy(), value_strategy(), value_strategy())
        .prop_map(|(key, expected, new)| CasOp { key, expected, new });
    (
        prop::collection::vec(cas_op, 0..3),
        prop::collection::vec(value_strategy(), 0..3),
    )
        .prop_map(|(ops, log)| Commit {
            reads: Vec::new(),
            ops,
            log: log.into_iter().map(Option::unwrap_or_default).collect(),
        })
}

fn op_strategy() -> impl Strategy<Value = Op> {
    let key = key_strategy();
    let value = value_strategy();
    let list = (prop::sample::select(vec!["", "a", "a/", "log/"]), 0usize..4);
    prop_oneof![
        (key.clone(), value.clone()).prop_map(|(k, v)| Op::KvSet(k, v.unwrap_or_default())),
        key.clone().prop_map(Op::KvDelete),
        key.clone().prop_map(Op::KvGet),
        (key.clone(), value.clone()).prop_map(|(k, v)| Op::BlobPut(k, v.unwrap_or_default())),
        key.clone().prop_map(Op::BlobDelete),
        (key.clone(), value.clone(), value).prop_map(|(key, expected, new)| {
            Op::StatePut {
                key,
                expected,
                new: new.unwrap_or_default(),
            }
        }),
        commit_strategy().prop_map(Op::Commit),
        list.clone().prop_map(|(p, l)| Op::KvList {
            prefix: p.into(),
            start_after: None,
            limit: l,
        }),
        list.prop_map(|(p, l)| Op::StateList {
            prefix: p.into(),
            start_after: Some("a".into()),
            limit: l,
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, failure_persistence: None, ..ProptestConfig::default() })]

    /// Any sequence of operations gives the same outcomes and the same final contents on
    /// redb as on the reference memory store.
    #[test]
    fn behaves_like_the_memory_store(ops in prop::collection::vec(op_strategy(), 1..40)) {
        let (_dir, store) = fresh();
        let reference = MemoryStore::new();
        for op in &ops {
            prop_assert_eq!(apply(&store, op), apply(&reference, op), "op {:?}", op);
        }
        prop_assert_eq!(store.snapshot().expect("snapshot"), reference.snapshot().expect("snapshot"));
    }

    /// A group of commits behaves exactly like the same commits applied one by one.
    #[test]
    fn commit_group_equals_sequential_commits(
        commits in prop::collection::vec(commit_strategy(), 1..12)
    ) {
        let commits: Vec<Commit> = commits
            .into_iter()
            .filter(|c| nexus_store::check_commit(c).is_ok())
            .collect();
        let (_dir, store) = fresh();
        let reference = MemoryStore::new();
        let expected: Vec<CommitOutcome> = commits
            .iter()
            .map(|c| reference.commit(c).expect("memory commit"))
            .collect();
        prop_assert_eq!(store.commit_group(&commits).expect("group"), expected);
        prop_assert_eq!(store.snapshot().expect("snapshot"), reference.snapshot().expect("snapshot"));
    }
}
