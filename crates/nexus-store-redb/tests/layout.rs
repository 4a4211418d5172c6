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

/// Writes a layout-1 store as the store of version 1 wrote it (string-keyed tables of
/// raw values, a commit log under `log/`), with `version` in its metadata (or none, as
/// before layouts had versions), and returns what it holds.
fn write_v1(path: &std::path::Path, version: Option<&str>, n: u64) -> nexus_store::StoreSnapshot {
    let mut snap = nexus_store::StoreSnapshot::default();
    let db = Database::create(path).expect("create");
    let txn = db.begin_write().expect("write");
    {
        let def = |name| TableDefinition::<&str, &[u8]>::new(name);
        let mut kv = txn.open_table(def("nexus_kv")).expect("kv");
        let mut blobs = txn.open_table(def("nexus_blobs")).expect("blobs");
        let mut states = txn.open_table(def("nexus_states")).expect("states");
        for i in 0..n {
            let h = hash(i);
            let record = format!(
                r#"{{"kind":"fact","topic":"t/{}","n":{i},"hash":"{h}"}}"#,
                i % 5
            );
            for (k, v) in [
                (format!("r/{h}"), record.into_bytes()),
                (format!("x/m/fact/{:016}/{h}", 1_000 + i), Vec::new()),
            ] {
                kv.insert(k.as_str(), v.as_slice()).expect("kv");
                snap.kv.insert(k, v);
            }
            for (k, v) in [
                (format!("rec/{h}"), b"fact".to_vec()),
                (
                    nexus_store::log_key(i + 1),
                    format!(r#"{{"type":"record","hash":"{h}","kind":"fact"}}"#).into_bytes(),
                ),
            ] {
                states.insert(k.as_str(), v.as_slice()).expect("state");
                snap.states.insert(k, v);
            }
        }
        let head = n.to_string().into_bytes();
        states.insert("log/head", head.as_slice()).expect("head");
        snap.states.insert("log/head".into(), head);
        blobs.insert("archive/a", b"blob".as_slice()).expect("blob");
        snap.blobs.insert("archive/a".into(), b"blob".to_vec());
        if let Some(v) = version {
            txn.open_table(META)
                .expect("meta")
                .insert("layout", v.as_bytes())
                .expect("layout");
        }
    }
    txn.commit().expect("commit");
    snap
}

#[test]
fn a_layout_1_file_is_refused_with_the_command_that_migrates_it() {
    for version in [Some("1"), None] {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("nexus.redb");
        write_v1(&path, version, 3);
        let err = RedbStore::open(&path).expect_err("refused").to_string();
        assert!(
            err.contains("layout 1") && err.contains("nexus compact --data"),
            "{version:?}: {err}"
        );
        // Refusing wrote nothing.
        assert_eq!(layout_of(&path).as_deref(), version);
    }
}

#[test]
fn compacting_migrates_a_layout_1_file_to_the_same_data() {
    for version in [Some("1"), None] {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("nexus.redb");
        let tmp = dir.path().join("nexus.redb.compacting");
        // More values than the dictionary trains on, so that the copy has one.
        let before = write_v1(&path, version, 3_000);
        let done = RedbStore::compact_file(&path, &tmp, |_, _| {}).expect("migrate");
        assert_eq!(done.entries, 4 * 3_000 + 2, "{done:?}");
        assert!(!tmp.exists());
        assert_eq!(layout_of(&path), Some(LAYOUT_VERSION.to_string()));
        let store = RedbStore::open(&path).expect("the migrated file opens");
        assert_eq!(store.snapshot().expect("snapshot"), before);
        // It goes on where the log ended.
        let outcome = store
            .commit(&nexus_store::Commit::new(vec![], vec![b"next".to_vec()]))
            .expect("commit");
        assert_eq!(
            outcome,
            nexus_store::CommitOutcome::Applied {
                first_seq: Some(3_001)
            }
        );
        // That commit also caught the log's Merkle tree up over the migrated entries:
        // its stored hashes (and its size) are states of their own.
        let mut tree_keys = 0;
        let mut after: Option<String> = None;
        loop {
            let page = store
                .list_states(nexus_store::TREE_PREFIX, after.as_deref(), 1_000)
                .expect("list");
            let Some(last) = page.last() else { break };
            tree_keys += page.len();
            after = Some(last.clone());
        }
        assert!(tree_keys > 3_001, "{tree_keys}");
        drop(store);
        // A second compaction (layout 2 to layout 2) keeps it all too: the new entry and
        // the tree's keys.
        let again = RedbStore::compact_file(&path, &tmp, |_, _| {}).expect("compact");
        assert_eq!(again.entries, done.entries + 1 + tree_keys as u64);
    }
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
    assert_eq!(done.entries, 10_000 + 40, "{done:?}");
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

/// The child process of the kill test: migrates the store in the directory it is given.
const CHILD_ENV: &str = "NEXUS_TEST_MIGRATE_DIR";
const KILL_TEST: &str = "a_migration_killed_at_any_point_leaves_the_old_or_the_new_file_complete";

#[test]
fn a_migration_killed_at_any_point_leaves_the_old_or_the_new_file_complete() {
    if let Some(dir) = std::env::var_os(CHILD_ENV) {
        let dir = std::path::PathBuf::from(dir);
        RedbStore::compact_file(
            &dir.join("nexus.redb"),
            &dir.join("nexus.redb.compacting"),
            |_, _| {},
        )
        .expect("migrate");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("nexus.redb");
    let tmp = dir.path().join("nexus.redb.compacting");
    let fixture = dir.path().join("v1.redb");
    let before = write_v1(&fixture, Some("1"), 20_000);
    let migrate = || {
        std::process::Command::new(std::env::current_exe().expect("exe"))
            .args(["--exact", KILL_TEST, "--nocapture"])
            .env(CHILD_ENV, dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn")
    };
    // How long a whole migration takes, then kills at every tenth of it (and past it).
    std::fs::copy(&fixture, &path).expect("copy");
    let t0 = std::time::Instant::now();
    assert!(migrate().wait().expect("wait").success());
    let whole = t0.elapsed();
    let (mut old, mut new) = (0, 0);
    for tenth in 0..12u32 {
        std::fs::copy(&fixture, &path).expect("copy");
        let mut child = migrate();
        std::thread::sleep(whole * tenth / 10);
        let _ = child.kill();
        child.wait().expect("wait");
        match layout_of(&path).as_deref() {
            // The old file, complete: it migrates now, to the same data.
            Some("1") => {
                old += 1;
                RedbStore::compact_file(&path, &tmp, |_, _| {}).expect("migrate again");
            }
            Some("2") => new += 1,
            other => panic!("after a kill at {tenth}/10: layout {other:?}"),
        }
        let store = RedbStore::open(&path).expect("opens");
        assert_eq!(
            store.snapshot().expect("snapshot"),
            before,
            "kill at {tenth}/10"
        );
    }
    assert!(
        old > 0 && new > 0,
        "kills met both sides: {old} old, {new} new"
    );
}
