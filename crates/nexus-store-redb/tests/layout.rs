//! The file's layout version, and the compact copy (`RedbStore::rebuild`).

use nexus_store::{KeyValueStore, ObjectStore, Snapshot};
use nexus_store_redb::{LAYOUT_VERSION, RedbStore};
use redb::{Database, ReadableDatabase, TableDefinition};

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("nexus_meta");

fn layout_of(path: &std::path::Path) -> Option<String> {
    let db = Database::open(path).expect("open");
    let read = db.begin_read().expect("read");
    let table = read.open_table(META).ok()?;
    let v = table.get("layout").expect("get")?;
    Some(String::from_utf8(v.value().to_vec()).expect("utf8"))
}

#[test]
fn a_new_file_is_given_the_layout_version() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("nexus.redb");
    drop(RedbStore::open(&path).expect("open"));
    assert_eq!(layout_of(&path), Some(LAYOUT_VERSION.to_string()));
}

#[test]
fn a_file_from_before_layout_versions_opens_and_keeps_its_data() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("nexus.redb");
    {
        // As the store wrote it before: its three tables and no metadata.
        let db = Database::create(&path).expect("create");
        let txn = db.begin_write().expect("write");
        for name in ["nexus_kv", "nexus_blobs", "nexus_states"] {
            let def: TableDefinition<&str, &[u8]> = TableDefinition::new(name);
            let mut t = txn.open_table(def).expect("table");
            if name == "nexus_kv" {
                t.insert("r/old", b"kept".as_slice()).expect("insert");
            }
        }
        txn.commit().expect("commit");
    }
    let store = RedbStore::open(&path).expect("opens");
    assert_eq!(store.get("r/old").expect("get"), Some(b"kept".to_vec()));
    drop(store);
    assert_eq!(layout_of(&path), Some(LAYOUT_VERSION.to_string()));
}

#[test]
fn a_file_of_another_layout_is_refused_with_both_versions_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("nexus.redb");
    drop(RedbStore::open(&path).expect("open"));
    {
        let db = Database::create(&path).expect("open");
        let txn = db.begin_write().expect("write");
        txn.open_table(META)
            .expect("meta")
            .insert("layout", b"7".as_slice())
            .expect("insert");
        txn.commit().expect("commit");
    }
    let err = RedbStore::open(&path).expect_err("refused").to_string();
    assert!(
        err.contains("layout 7") && err.contains(&format!("layout {LAYOUT_VERSION}")),
        "{err}"
    );
    // Refusing wrote nothing.
    assert_eq!(layout_of(&path).as_deref(), Some("7"));
}

/// 64 hex digits from `i` (keys in random order, as record hashes are).
fn hash(i: u64) -> String {
    let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xDEAD_BEEF;
    (0..4)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            format!("{x:016x}")
        })
        .collect()
}

#[test]
fn the_compact_copy_holds_the_same_data_in_fewer_bytes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("nexus.redb");
    let store = RedbStore::open(&src).expect("open");
    // Random-order keys in many small transactions, as a server writes them.
    for chunk in 0..40u64 {
        let batch: Vec<(String, Vec<u8>)> = (0..250)
            .map(|j| {
                let i = chunk * 250 + j;
                (format!("r/{}", hash(i)), vec![b'x'; 300])
            })
            .collect();
        for (k, v) in &batch {
            store.set(k, v).expect("set");
        }
        store
            .put_state(&format!("intent/{}", hash(chunk)), None, b"open")
            .expect("state");
    }
    let before = store.snapshot().expect("snapshot");
    drop(store);
    let dst = dir.path().join("nexus.redb.compact");
    let mut calls = Vec::new();
    let done = RedbStore::rebuild(&src, &dst, |copied, total| calls.push((copied, total)))
        .expect("rebuild");
    assert_eq!(done.entries, 10_000 + 40 + 1, "{done:?}"); // + the layout version
    assert_eq!(calls.last(), Some(&(done.entries, done.entries)));
    assert!(
        done.bytes_after < done.bytes_before,
        "the copy is smaller: {done:?}"
    );
    let copy = RedbStore::open(&dst).expect("the copy opens");
    assert_eq!(copy.snapshot().expect("snapshot"), before);
    // A second rebuild onto an existing file is refused.
    drop(copy);
    assert!(RedbStore::rebuild(&src, &dst, |_, _| {}).is_err());
}

#[test]
fn compacting_in_place_keeps_the_data_and_the_permissions_and_refuses_other_layouts() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("nexus.redb");
    let tmp = dir.path().join("nexus.redb.compacting");
    let store = RedbStore::open(&path).expect("open");
    for i in 0..2_000u64 {
        store.set(&format!("r/{}", hash(i)), b"value").expect("set");
    }
    let before = store.snapshot().expect("snapshot");
    drop(store);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    // A leftover of an interrupted run is replaced.
    std::fs::write(&tmp, b"half a copy").expect("leftover");
    RedbStore::compact_file(&path, &tmp, |_, _| {}).expect("compact");
    assert!(!tmp.exists());
    let mode = std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert_eq!(
        RedbStore::open(&path)
            .expect("open")
            .snapshot()
            .expect("snap"),
        before
    );

    // A file of another layout is not compacted.
    {
        let db = Database::create(&path).expect("open");
        let txn = db.begin_write().expect("write");
        txn.open_table(META)
            .expect("meta")
            .insert("layout", b"9".as_slice())
            .expect("insert");
        txn.commit().expect("commit");
    }
    let err = RedbStore::compact_file(&path, &tmp, |_, _| {}).expect_err("refused");
    assert!(err.to_string().contains("layout 9"), "{err}");
    assert!(!tmp.exists());
    assert_eq!(layout_of(&path).as_deref(), Some("9"));
}
