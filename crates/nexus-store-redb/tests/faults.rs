//! Storage faults: a full disk (injected with `nexus_testkit::faults`) refuses writes
//! with `StoreError::Full`, reads go on, health says so, and writes resume by
//! themselves once space returns, with nothing committed lost and nothing of the
//! failed writes kept.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::path::Path;
use std::time::Duration;

use nexus_store::{
    CasOp, Commit, CommitOutcome, Health, KeyValueStore, ObjectStore, Snapshot, StoreError,
    StoreHealth, log_key,
};
use nexus_store_redb::{RedbStore, Tier, WriteBatch};
use nexus_testkit::faults::{DiskFaults, Fault};
use tempfile::TempDir;

/// A store on a disk that `DiskFaults` controls, retrying every write (no back-off).
fn on_faulty_disk() -> (TempDir, DiskFaults, RedbStore) {
    let dir = tempfile::tempdir().expect("temp dir");
    let disk = DiskFaults::new();
    let store = open(&disk, &dir.path().join("store.redb"));
    store.set_full_retry_interval(Duration::ZERO);
    (dir, disk, store)
}

fn open(disk: &DiskFaults, path: &Path) -> RedbStore {
    let (disk, path) = (disk.clone(), path.to_path_buf());
    RedbStore::open_with(move || disk.database(&path)).expect("open store")
}

/// A commit that sets `key` to `value` (from absent) and logs `entry`.
fn put(key: &str, value: &[u8], entry: &str) -> Commit {
    Commit::new(
        vec![CasOp {
            key: key.to_owned(),
            expected: None,
            new: Some(value.to_vec()),
        }],
        vec![entry.as_bytes().to_vec()],
    )
}

/// More than any free space redb keeps in the file: it must grow to hold it (random
/// bytes, so that the store cannot compress them).
fn big() -> Vec<u8> {
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    (0..4 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn applied(seq: u64) -> CommitOutcome {
    CommitOutcome::Applied {
        first_seq: Some(seq),
    }
}

#[test]
fn a_full_disk_refuses_writes_reads_go_on_and_writes_resume() {
    let (dir, disk, store) = on_faulty_disk();
    assert_eq!(store.commit(&put("a", b"1", "a")).unwrap(), applied(1));
    store.set("kv/a", b"1").unwrap();
    let before = store.snapshot().unwrap();
    assert_eq!(store.health(), StoreHealth::Ok);

    disk.set(Fault::Full);
    for attempt in 0..3 {
        let err = store.commit(&put("b", &big(), "b")).unwrap_err();
        assert!(
            matches!(&err, StoreError::Full(m) if m.contains("redb: commit write transaction")),
            "attempt {attempt}: {err:?}"
        );
        // One clear message, no doubled prefixes.
        assert_eq!(
            err.to_string().matches("storage is full").count(),
            1,
            "{err}"
        );
        assert!(!err.to_string().contains("backend failed"), "{err}");
        assert!(matches!(store.health(), StoreHealth::Full { .. }));
        // Reads go on, on the reopened database, and see nothing of the failed write.
        assert_eq!(store.get_state("a").unwrap(), Some(b"1".to_vec()));
        assert_eq!(store.get_state("b").unwrap(), None);
        assert_eq!(store.snapshot().unwrap(), before);
    }
    let batch = WriteBatch {
        puts: vec![nexus_store::BatchPut {
            tier: Tier::Kv,
            key: "kv/big".into(),
            value: big(),
            phase: nexus_store::PutPhase::BeforeCommit,
        }],
        commit: put("c", b"3", "c"),
        deletes: Vec::new(),
    };
    assert!(store.write_batch(&batch).unwrap_err().is_full());
    assert!(disk.failures() > 0);

    // Space returns: the next write succeeds, numbered right after the last applied one.
    disk.set(Fault::None);
    assert_eq!(store.commit(&put("b", &big(), "b")).unwrap(), applied(2));
    assert_eq!(store.health(), StoreHealth::Ok);
    assert_eq!(store.write_batch(&batch).unwrap(), applied(3));
    assert_eq!(store.get_state(&log_key(3)).unwrap(), Some(b"c".to_vec()));
    assert_eq!(store.get_state(&log_key(4)).unwrap(), None);

    // The same on disk, read by a plain store after a restart.
    let expected = store.snapshot().unwrap();
    drop(store);
    let reopened = RedbStore::open(dir.path().join("store.redb")).unwrap();
    assert_eq!(reopened.snapshot().unwrap(), expected);
    assert_eq!(expected.kv.get("kv/a"), Some(&b"1".to_vec()));
}

#[test]
fn writes_fail_at_once_within_the_retry_interval() {
    let (_dir, disk, store) = on_faulty_disk();
    store.set_full_retry_interval(Duration::from_secs(3600));
    disk.set(Fault::Full);
    let first = store.commit(&put("b", &big(), "b")).unwrap_err();
    let refused = disk.failures();
    // Space is back, but the store does not try again before the interval...
    disk.set(Fault::None);
    let second = store.commit(&put("b", b"small", "b")).unwrap_err();
    assert_eq!(second, first);
    assert_eq!(disk.failures(), refused, "the file was not touched");
    assert!(matches!(store.health(), StoreHealth::Full { .. }));
    // ...reads are not held back...
    assert_eq!(store.get_state("b").unwrap(), None);
    // ...and once it has passed, writes try (and succeed) again.
    store.set_full_retry_interval(Duration::ZERO);
    assert_eq!(store.commit(&put("b", b"small", "b")).unwrap(), applied(1));
    assert_eq!(store.health(), StoreHealth::Ok);
}

#[test]
fn a_disk_that_refuses_even_the_repair_leaves_the_store_unavailable_until_it_recovers() {
    let (dir, disk, store) = on_faulty_disk();
    assert_eq!(store.commit(&put("a", b"1", "a")).unwrap(), applied(1));
    disk.set(Fault::AllWrites);
    assert!(store.commit(&put("b", &big(), "b")).unwrap_err().is_full());
    // The reopen's repair could not write its header: no database to read from.
    assert!(
        matches!(store.health(), StoreHealth::Unavailable { .. }),
        "{:?}",
        store.health()
    );
    assert!(store.get_state("a").is_err());

    disk.set(Fault::None);
    // The next call reopens the database.
    assert_eq!(store.get_state("a").unwrap(), Some(b"1".to_vec()));
    assert!(matches!(store.health(), StoreHealth::Full { .. }));
    assert_eq!(store.commit(&put("b", b"2", "b")).unwrap(), applied(2));
    assert_eq!(store.health(), StoreHealth::Ok);
    drop(store);
    let reopened = RedbStore::open(dir.path().join("store.redb")).unwrap();
    assert_eq!(reopened.get_state("b").unwrap(), Some(b"2".to_vec()));
}

#[test]
fn an_opened_database_without_an_opener_reports_unavailable_after_an_io_error() {
    let dir = tempfile::tempdir().unwrap();
    let disk = DiskFaults::new();
    let db = disk.database(&dir.path().join("store.redb")).unwrap();
    let store = RedbStore::from_database(db).unwrap();
    store.set_full_retry_interval(Duration::ZERO);
    disk.set(Fault::Full);
    assert!(store.commit(&put("b", &big(), "b")).unwrap_err().is_full());
    disk.set(Fault::None);
    // redb refuses the database from now on, and the store cannot open it again.
    let err = store.commit(&put("b", b"2", "b")).unwrap_err();
    assert!(err.to_string().contains("cannot be reopened"), "{err}");
    assert!(matches!(store.health(), StoreHealth::Unavailable { .. }));
}
