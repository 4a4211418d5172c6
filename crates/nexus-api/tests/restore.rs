//! `from_snapshot_with_cold` on memory stores: a log written through the API (records,
//! claims, renewals, withdrawals, a contract and the Hints it emits), archived window by
//! window with a snapshot in between, restores to stores equal to the original, with or
//! without the snapshot; a damaged cold tier is refused, naming what is wrong.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use nexus_api::restore::{RestoreError, from_snapshot_with_cold};
use nexus_core::archive::{self, WindowPolicy, keys};
use nexus_core::{CompositeColdStorage, FlushCapable};
use nexus_store::{BlobStore, MemoryStore, Snapshot, StoreSnapshot};
use serde_json::json;

const POLICY: WindowPolicy = WindowPolicy {
    max_entries: 7,
    max_age_ms: u64::MAX,
};

const CONTRACT: &str = r#"contract = "restore"

[[rule]]
name = "failures"
topic = "lab/**"
where = "has(fact.resolves) && fact.body.status == 'failed'"
group = "fact.topic"
threshold = 2
emit = { effect = "deny", topic = "${group}/**", reason = "too many failures under ${group}" }
"#;

/// Flushes every due window.
fn flush_all(core: &CompositeColdStorage<MemoryStore, MemoryStore, MemoryStore>, now: u64) {
    while core.flush(&POLICY, now).unwrap().window.is_some() {}
}

/// A log of every kind of entry, archived with a snapshot taken halfway; answers the
/// store (which is also its own blob tier) and the snapshot's head.
fn archived_log() -> (MemoryStore, u64) {
    let h = Harness::open();
    let core = CompositeColdStorage::unified(h.store.clone(), limits());
    let (a, b) = (key(1), key(2));
    let deploy = fact(
        &a,
        "nexus/contract",
        json!({"source": CONTRACT, "expected": null}),
        vec![],
        None,
        NOW,
    );
    assert_eq!(h.post("/v1/contract", &deploy, NOW).status, 201);
    let mut snapshot = 0;
    for n in 0..12u64 {
        let t = NOW + n;
        let topic = format!("lab/{}", n % 3);
        let i = intent_at(&a, &topic, json!({"n": n}), vec![], t);
        // The contract denies a topic after two failures under it.
        let proposed = h.submit(&i);
        if proposed.code() == "inadmissible" {
            continue;
        }
        assert_eq!(proposed.status, 201, "intent {n}: {}", proposed.json);
        let c = h.act(&claim_at(&b, i.hash(), LEASE, t), t);
        assert_eq!(c.status, 200, "{}", c.json);
        let token = c.json["token"].as_u64().unwrap();
        match n % 4 {
            0 => assert_eq!(
                h.act(&renew_at(&b, i.hash(), token, LEASE, t), t).status,
                200
            ),
            1 => assert_eq!(h.act(&withdraw_at(&a, i.hash(), t), t).status, 200),
            _ => {
                let f = fact(
                    &b,
                    &topic,
                    json!({"status": "failed", "n": n}),
                    vec![i.hash()],
                    Some((i.hash(), token)),
                    t,
                );
                assert_eq!(h.submit(&f).status, 201, "fact {n}");
            }
        }
        flush_all(&core, t);
        if n == 6 {
            let state = core.capture_hot_state(3).unwrap().expect("quiet store");
            snapshot = state.head;
            core.write_snapshot(&state, t).unwrap();
        }
    }
    let hints = h.get("/v1/hints").json;
    assert!(
        hints.to_string().contains("too many failures"),
        "the contract emitted Hints: {hints}"
    );
    // The last partial window closes once old enough.
    core.flush(&POLICY.with_age(0), NOW + 1_000_000).unwrap();
    assert_eq!(core.flush_cursor().unwrap().pending, None);
    (h.store, snapshot)
}

trait WithAge {
    fn with_age(self, ms: u64) -> Self;
}
impl WithAge for WindowPolicy {
    fn with_age(mut self, ms: u64) -> Self {
        self.max_age_ms = ms;
        self
    }
}

fn restore(
    cold: &MemoryStore,
) -> Result<(StoreSnapshot, nexus_api::restore::RestoreReport), RestoreError> {
    let target = MemoryStore::new();
    let core = CompositeColdStorage::unified(target.clone(), limits());
    let mut calls = 0;
    let report = from_snapshot_with_cold(cold, &core, |done, total| {
        calls += 1;
        assert!(done <= total);
    })?;
    assert_eq!(calls, report.windows, "progress after every window");
    Ok((target.snapshot().unwrap(), report))
}

/// What a restore must reproduce: the records and indexes, and every object state.
fn assert_same(original: &StoreSnapshot, restored: &StoreSnapshot) {
    assert_eq!(original.kv, restored.kv, "records and index entries");
    let diff: Vec<&String> = original
        .states
        .keys()
        .chain(restored.states.keys())
        .filter(|k| original.states.get(*k) != restored.states.get(*k))
        .collect();
    for k in &diff {
        let show = |s: &StoreSnapshot| {
            s.states
                .get(*k)
                .map(|v| String::from_utf8_lossy(v).into_owned())
        };
        eprintln!(
            "{k}:\n  original {:?}\n  restored {:?}",
            show(original),
            show(restored)
        );
    }
    assert!(diff.is_empty(), "object states differ at {diff:?}");
    for (k, v) in &original.blobs {
        if k.starts_with("contract/") {
            assert_eq!(restored.blobs.get(k), Some(v), "{k}");
        }
    }
}

#[test]
fn a_restore_with_or_without_the_snapshot_equals_the_original() {
    let (cold, snapshot) = archived_log();
    assert!(snapshot > 0);
    let original = cold.snapshot().unwrap();
    let (restored, report) = restore(&cold).unwrap();
    assert_eq!(report.snapshot, Some(snapshot));
    assert!(
        report.replayed > 0 && report.replayed < report.entries,
        "{report:?}"
    );
    assert_same(&original, &restored);

    for k in cold.list_blobs(keys::SNAPSHOT_PREFIX, None, 100).unwrap() {
        cold.delete_blob(&k).unwrap();
    }
    let (replayed, report) = restore(&cold).unwrap();
    assert_eq!((report.snapshot, report.replayed), (None, report.entries));
    assert_same(&original, &replayed);
}

#[test]
fn a_restore_refuses_a_non_empty_target() {
    let (cold, _) = archived_log();
    let core = CompositeColdStorage::unified(cold.clone(), limits());
    let e = from_snapshot_with_cold(&cold, &core, |_, _| {}).unwrap_err();
    assert!(matches!(e, RestoreError::NotEmpty(_)), "{e}");
}

/// The second window's archive, its manifest, and the store.
fn second_window() -> (MemoryStore, archive::Manifest, Vec<Vec<u8>>) {
    let (cold, _) = archived_log();
    let key = keys::manifest(POLICY.max_entries + 1);
    let m = archive::Manifest::decode(&key, &cold.get_blob(&key).unwrap().unwrap()).unwrap();
    let bytes = cold.get_blob(&m.archive).unwrap().unwrap();
    let lines = bytes
        .split_inclusive(|b| *b == b'\n')
        .map(<[u8]>::to_vec)
        .collect();
    (cold, m, lines)
}

#[test]
fn a_damaged_cold_tier_is_refused_with_where_and_what() {
    let refused = |cold: &MemoryStore| restore(cold).unwrap_err().to_string();
    // A line dropped.
    let (cold, m, mut lines) = second_window();
    lines.remove(2);
    cold.put_blob(&m.archive, &lines.concat()).unwrap();
    let e = refused(&cold);
    assert!(e.contains("line 3") && e.contains("expected seq 10"), "{e}");
    // Two lines swapped.
    let (cold, m, mut lines) = second_window();
    lines.swap(0, 1);
    cold.put_blob(&m.archive, &lines.concat()).unwrap();
    let e = refused(&cold);
    assert!(e.contains("line 1") && e.contains("expected seq 8"), "{e}");
    // A body changed, its manifest left alone.
    let (cold, m, mut lines) = second_window();
    lines[3] = String::from_utf8(lines[3].clone())
        .unwrap()
        .replacen("\"n\":", "\"n\":1", 1)
        .into_bytes();
    cold.put_blob(&m.archive, &lines.concat()).unwrap();
    let e = refused(&cold);
    assert!(e.contains("line 4") && e.contains("hash"), "{e}");
    // Bytes changed where no entry's hash sees them.
    let (cold, m, mut lines) = second_window();
    lines[3].insert(1, b' ');
    cold.put_blob(&m.archive, &lines.concat()).unwrap();
    let e = refused(&cold);
    assert!(e.contains(&m.archive) && e.contains("length"), "{e}");
    // A whole window dropped.
    let (cold, m, _) = second_window();
    cold.delete_blob(&keys::manifest(m.first)).unwrap();
    let e = refused(&cold);
    assert!(e.contains("expected it to start at seq 8"), "{e}");
}
