//! The IoBuffer trio and the session: hydration, misses, listings, CAS, drains, rollback.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use nexus_iobuf::{IoBufferBlob, IoBufferKv, IoBufferObject, IoBufferSession, ListQuery, Misses};
use nexus_store::{
    BlobStore, CasFailure, CasOp, Commit, CommitOutcome, KeyValueStore, LOG_HEAD_KEY, ObjectStore,
    ReadCheck, StoreError, log_key,
};

fn b(x: &str) -> Vec<u8> {
    x.as_bytes().to_vec()
}

fn s(x: &str) -> String {
    x.to_owned()
}

fn cas(key: &str, expected: Option<&str>, new: Option<&str>) -> CasOp {
    CasOp {
        key: s(key),
        expected: expected.map(b),
        new: new.map(b),
    }
}

#[test]
fn unhydrated_reads_are_misses_answered_as_absent() {
    let kv = IoBufferKv::new();
    kv.hydrate_batch([(s("present"), Some(b("v"))), (s("absent"), None)]);
    assert_eq!(kv.get("present").unwrap(), Some(b("v")));
    assert_eq!(kv.get("absent").unwrap(), None);
    assert!(kv.misses().is_empty(), "hydrated keys are not misses");
    assert_eq!(kv.get("unknown").unwrap(), None);
    assert_eq!(kv.misses(), vec![s("unknown")]);
    // Written keys are known: no miss.
    kv.set("written", b"w").unwrap();
    kv.delete("gone").unwrap();
    assert_eq!(kv.get("written").unwrap(), Some(b("w")));
    assert_eq!(kv.get("gone").unwrap(), None);
    assert_eq!(kv.misses(), vec![s("unknown")]);
}

#[test]
fn bulk_reads_record_every_miss_at_once() {
    let session = IoBufferSession::new();
    session.kv_buf().hydrate(s("k1"), Some(b("1")));
    session.object_buf().hydrate(s("s1"), Some(b("x")));
    let got = session.get_many(&["k3", "k1", "k2", "k3"]).unwrap();
    assert_eq!(got, vec![None, Some(b("1")), None, None]);
    let got = session.get_states(&["s2", "s1", "s0"]).unwrap();
    assert_eq!(got, vec![None, Some(b("x")), None]);
    let misses = session.misses();
    assert_eq!(misses.kv_keys, vec![s("k2"), s("k3")]);
    assert_eq!(misses.state_keys, vec![s("s0"), s("s2")]);
    assert!(misses.blob_keys.is_empty());
    assert_eq!(misses.len(), 4);
    assert!(!misses.is_empty());
}

#[test]
fn invalid_keys_are_refused_without_recording_misses() {
    let session = IoBufferSession::new();
    assert!(matches!(
        session.get_many(&["ok", ""]),
        Err(StoreError::InvalidKey { .. })
    ));
    assert!(matches!(
        session.set("", b"v"),
        Err(StoreError::InvalidKey { .. })
    ));
    assert!(matches!(
        session.put_state(LOG_HEAD_KEY, None, b"9"),
        Err(StoreError::InvalidKey { .. })
    ));
    assert!(session.misses().is_empty());
    assert!(!session.is_dirty());
}

#[test]
fn unhydrated_listing_is_a_list_miss_answered_empty() {
    let blob = IoBufferBlob::new();
    blob.hydrate(s("a/1"), Some(b("x"))); // per-key hydration does not answer listings
    assert_eq!(
        blob.list_blobs("a/", None, 10).unwrap(),
        Vec::<String>::new()
    );
    assert_eq!(blob.list_misses(), vec![ListQuery::new("a/", None, 10)]);
    // A cursor before the prefix is the same query as no cursor.
    blob.list_blobs("a/", Some("0"), 20).unwrap();
    assert_eq!(blob.list_misses(), vec![ListQuery::new("a/", None, 20)]);
    // limit 0 needs no data.
    assert!(blob.list_blobs("z/", None, 0).unwrap().is_empty());
    assert_eq!(blob.list_misses().len(), 1);
}

#[test]
fn listings_overlay_the_sessions_writes_sorted_and_bounded() {
    let kv = IoBufferKv::new();
    let q = ListQuery::new("a/", None, 100);
    kv.hydrate_list(&q, vec![s("a/1"), s("a/3"), s("a/5")]);
    kv.set("a/4", b"new").unwrap();
    kv.set("b/1", b"other prefix").unwrap();
    kv.delete("a/3").unwrap();
    kv.set("a/0", b"new").unwrap();
    assert_eq!(
        kv.list("a/", None, 100).unwrap(),
        vec![s("a/0"), s("a/1"), s("a/4"), s("a/5")]
    );
    assert_eq!(kv.list("a/", None, 2).unwrap(), vec![s("a/0"), s("a/1")]);
    // Later cursors are answered from the same complete listing.
    assert_eq!(
        kv.list("a/", Some("a/1"), 100).unwrap(),
        vec![s("a/4"), s("a/5")]
    );
    assert_eq!(
        kv.list("a/", Some("a/5"), 100).unwrap(),
        Vec::<String>::new()
    );
    assert!(kv.list_misses().is_empty());
    // A different prefix was not hydrated; the miss asks for one more key than
    // wanted, to make up for the session's delete of a/3 under it.
    kv.list("a", None, 5).unwrap();
    assert_eq!(kv.list_misses(), vec![ListQuery::new("a", None, 6)]);
}

#[test]
fn a_truncated_listing_asks_for_more_when_deletes_leave_it_short() {
    let state = IoBufferObject::new();
    // The backing store has more keys than the 3 hydrated (answer == limit).
    let q = ListQuery::new("k/", None, 3);
    state.hydrate_list(&q, vec![s("k/1"), s("k/2"), s("k/3")]);
    state.hydrate_batch([(s("k/2"), Some(b("v")))]);
    // New keys beyond the last hydrated key are not enough to answer: the backing
    // store might hold keys between them.
    state.put_state("k/9", None, b"v").unwrap();
    assert_eq!(
        state.list_states("k/", None, 3).unwrap(),
        vec![s("k/1"), s("k/2"), s("k/3")]
    );
    assert_eq!(
        state.list_states("k/", None, 2).unwrap(),
        vec![s("k/1"), s("k/2")]
    );
    assert!(state.list_misses().is_empty());
    // Delete one hydrated key: the window now holds only 2 known keys.
    assert!(
        state
            .commit(&Commit {
                reads: Vec::new(),
                ops: vec![cas("k/2", Some("v"), None)],
                log: vec![],
            })
            .is_ok()
    );
    assert_eq!(
        state.list_states("k/", None, 2).unwrap(),
        vec![s("k/1"), s("k/3")]
    );
    assert_eq!(
        state.list_states("k/", None, 3).unwrap(),
        Vec::<String>::new()
    );
    // It asks for enough to cover the deleted key.
    assert_eq!(state.list_misses(), vec![ListQuery::new("k/", None, 4)]);
    // Hydrating the bigger listing answers it.
    state.rollback();
    state.hydrate_list(
        &ListQuery::new("k/", None, 4),
        vec![s("k/1"), s("k/2"), s("k/3"), s("k/7")],
    );
    state.put_state("k/2", Some(b"v"), b"w").unwrap();
    assert_eq!(
        state.list_states("k/", None, 3).unwrap(),
        vec![s("k/1"), s("k/2"), s("k/3")]
    );
    assert!(state.list_misses().is_empty());
}

#[test]
fn put_state_is_a_cas_against_the_buffer_view() {
    let obj = IoBufferObject::new();
    obj.hydrate_batch([(s("intent/1"), Some(b("available"))), (s("intent/2"), None)]);
    assert!(!obj.put_state("intent/1", None, b"x").unwrap());
    assert!(
        obj.put_state("intent/1", Some(b"available"), b"claimed")
            .unwrap()
    );
    assert!(
        !obj.put_state("intent/1", Some(b"available"), b"other")
            .unwrap()
    );
    assert_eq!(obj.get_state("intent/1").unwrap(), Some(b("claimed")));
    assert!(obj.put_state("intent/2", None, b"available").unwrap());
    assert!(obj.misses().is_empty());
    // A CAS on an unhydrated key is a miss (answered as absent).
    assert!(obj.put_state("intent/3", None, b"v").unwrap());
    assert_eq!(obj.misses(), vec![s("intent/3")]);
}

#[test]
fn commit_in_memory_is_all_or_nothing() {
    let obj = IoBufferObject::new();
    obj.hydrate_batch([
        (s("x"), Some(b("1"))),
        (s("y"), Some(b("1"))),
        (s("new"), None),
        (s(LOG_HEAD_KEY), Some(b("4"))),
    ]);
    let outcome = obj
        .commit(&Commit {
            reads: Vec::new(),
            ops: vec![
                cas("new", None, Some("n")),
                cas("x", Some("1"), Some("2")),
                cas("y", Some("0"), Some("2")),
                cas("z", Some("0"), None),
            ],
            log: vec![b("e")],
        })
        .unwrap();
    assert_eq!(
        outcome,
        CommitOutcome::Conflict(vec![
            CasFailure {
                key: s("y"),
                current: Some(b("1")),
            },
            CasFailure {
                key: s("z"),
                current: None,
            },
        ])
    );
    // Every op key was read at once: z is the one miss.
    assert_eq!(obj.misses(), vec![s("z")]);
    assert!(!obj.is_dirty());
    assert_eq!(obj.get_state("x").unwrap(), Some(b("1")));

    // Applied commits number their log entries from the hydrated head on.
    let c1 = Commit {
        reads: Vec::new(),
        ops: vec![cas("x", Some("1"), Some("2")), cas("y", Some("1"), None)],
        log: vec![b("e1"), b("e2")],
    };
    assert_eq!(
        obj.commit(&c1).unwrap(),
        CommitOutcome::Applied { first_seq: Some(5) }
    );
    let c2 = Commit {
        reads: Vec::new(),
        ops: vec![],
        log: vec![b("e3")],
    };
    assert_eq!(
        obj.commit(&c2).unwrap(),
        CommitOutcome::Applied { first_seq: Some(7) }
    );
    assert_eq!(obj.get_state("x").unwrap(), Some(b("2")));
    assert_eq!(obj.get_state("y").unwrap(), None);
    assert_eq!(obj.pending_log(), vec![b("e1"), b("e2"), b("e3")]);
    // Log entries are not readable until drained.
    assert_eq!(obj.get_state(LOG_HEAD_KEY).unwrap(), Some(b("4")));

    // Log keys and duplicate keys are refused, changing nothing.
    let forged = Commit {
        reads: Vec::new(),
        ops: vec![cas(&log_key(1), None, Some("forged"))],
        log: vec![],
    };
    assert!(matches!(
        obj.commit(&forged),
        Err(StoreError::InvalidKey { .. })
    ));
    let twice = Commit {
        reads: Vec::new(),
        ops: vec![cas("d", None, Some("1")), cas("d", None, Some("2"))],
        log: vec![],
    };
    assert!(matches!(
        obj.commit(&twice),
        Err(StoreError::InvalidKey { .. })
    ));
    assert_eq!(obj.pending_log().len(), 3);
}

#[test]
fn a_commit_with_log_entries_predicts_its_sequence_only_from_a_hydrated_head() {
    let obj = IoBufferObject::new();
    let c = Commit {
        reads: Vec::new(),
        ops: vec![],
        log: vec![b("e")],
    };
    // Unknown head: no prediction, and no miss (the store numbers entries at flush).
    assert_eq!(
        obj.commit(&c).unwrap(),
        CommitOutcome::Applied { first_seq: None }
    );
    assert!(obj.misses().is_empty());
    // A hydrated head gives a prediction that counts entries already queued.
    obj.rollback();
    obj.hydrate(LOG_HEAD_KEY, Some(b("4")));
    assert_eq!(
        obj.commit(&c).unwrap(),
        CommitOutcome::Applied { first_seq: Some(5) }
    );
    assert_eq!(
        obj.commit(&c).unwrap(),
        CommitOutcome::Applied { first_seq: Some(6) }
    );
    // A corrupt head is reported and nothing is queued.
    obj.rollback();
    obj.hydrate(LOG_HEAD_KEY, Some(b("not a number")));
    assert!(matches!(obj.commit(&c), Err(StoreError::Corrupt { .. })));
    assert!(obj.pending_log().is_empty());
}

#[test]
fn kv_and_blob_drains_hold_only_the_delta_sorted() {
    let kv = IoBufferKv::new();
    kv.hydrate_batch([
        (s("same"), Some(b("v"))),
        (s("changed"), Some(b("old"))),
        (s("absent"), None),
        (s("present"), Some(b("p"))),
    ]);
    kv.set("z-blind", b"1").unwrap(); // never hydrated
    kv.set("same", b"v").unwrap(); // equal to hydrated: no put
    kv.set("changed", b"new").unwrap();
    kv.set("a-new", b"2").unwrap();
    kv.delete("absent").unwrap(); // known absent: no delete
    kv.delete("present").unwrap();
    kv.delete("unknown").unwrap(); // not known absent: delete
    kv.set("restored", b"tmp").unwrap();
    kv.hydrate(s("restored"), Some(b("orig")));
    kv.set("restored", b"orig").unwrap(); // written then restored
    assert!(kv.is_dirty());
    assert_eq!(
        kv.drain_kv_puts(),
        vec![
            (s("a-new"), b("2")),
            (s("changed"), b("new")),
            (s("z-blind"), b("1")),
        ]
    );
    assert_eq!(kv.drain_kv_deletes(), vec![s("present"), s("unknown")]);
    assert!(!kv.is_dirty());
    // Drained writes became the hydrated view: still readable, not drained twice.
    assert_eq!(kv.get("changed").unwrap(), Some(b("new")));
    assert_eq!(kv.get("present").unwrap(), None);
    assert!(kv.misses().is_empty());
    assert!(kv.drain_kv_puts().is_empty());

    let blob = IoBufferBlob::new();
    blob.hydrate(s("blob/a"), None);
    blob.put_blob("blob/b", b"bb").unwrap();
    blob.put_blob("blob/a", b"aa").unwrap();
    blob.delete_blob("blob/c").unwrap();
    assert_eq!(
        blob.drain_blob_puts(),
        vec![(s("blob/a"), b("aa")), (s("blob/b"), b("bb"))]
    );
    assert_eq!(blob.drain_blob_deletes(), vec![s("blob/c")]);
}

#[test]
fn drained_writes_keep_hydrated_listings_current() {
    let kv = IoBufferKv::new();
    kv.hydrate_list(&ListQuery::new("i/", None, 10), vec![s("i/1"), s("i/2")]);
    kv.hydrate(s("i/1"), Some(b("v")));
    kv.set("i/3", b"v").unwrap();
    kv.delete("i/1").unwrap();
    let _ = kv.drain_kv_puts();
    let _ = kv.drain_kv_deletes();
    assert_eq!(kv.list("i/", None, 10).unwrap(), vec![s("i/2"), s("i/3")]);
}

#[test]
fn object_drain_is_a_commit_against_the_hydrated_values() {
    let obj = IoBufferObject::new();
    obj.hydrate_batch([
        (s("a"), Some(b("1"))),
        (s("b"), None),
        (s("c"), Some(b("keep"))),
        (s("d"), Some(b("del"))),
        (s(LOG_HEAD_KEY), None),
    ]);
    assert!(obj.put_state("b", None, b"2").unwrap());
    assert!(obj.put_state("a", Some(b"1"), b"x").unwrap());
    assert!(obj.put_state("a", Some(b"x"), b"y").unwrap());
    // Written, then restored to its hydrated value: not in the delta.
    assert!(obj.put_state("c", Some(b"keep"), b"tmp").unwrap());
    assert!(obj.put_state("c", Some(b"tmp"), b"keep").unwrap());
    obj.commit(&Commit {
        reads: Vec::new(),
        ops: vec![cas("d", Some("del"), None)],
        log: vec![b("first")],
    })
    .unwrap();
    obj.commit(&Commit {
        reads: Vec::new(),
        ops: vec![],
        log: vec![b("second")],
    })
    .unwrap();
    let commit = obj.drain_object_puts();
    assert_eq!(
        commit,
        Commit {
            // Read (then restored): its value must still hold at the commit point.
            reads: vec![ReadCheck {
                key: s("c"),
                value: Some(b("keep")),
            }],
            ops: vec![
                cas("a", Some("1"), Some("y")),
                cas("b", None, Some("2")),
                cas("d", Some("del"), None),
            ],
            log: vec![b("first"), b("second")],
        }
    );
    // After the drain the session sees its log (as the store will after the flush).
    assert_eq!(obj.get_state(LOG_HEAD_KEY).unwrap(), Some(b("2")));
    assert_eq!(obj.get_state(&log_key(2)).unwrap(), Some(b("second")));
    assert_eq!(obj.drain_object_puts(), Commit::default());
}

#[test]
fn every_state_read_from_the_hydrated_view_becomes_a_read_check() {
    let obj = IoBufferObject::new();
    obj.hydrate_batch([
        (s("hints"), Some(b("[]"))),
        (s("rec/p"), None),
        (s("intent/1"), Some(b("available"))),
        (s("unread"), Some(b("x"))),
        (s(LOG_HEAD_KEY), Some(b("7"))),
    ]);
    // A round that is rolled back leaves no read behind.
    assert_eq!(obj.get_state("unread").unwrap(), Some(b("x")));
    obj.rollback();
    assert_eq!(obj.get_state("hints").unwrap(), Some(b("[]")));
    assert_eq!(
        obj.get_states(&["rec/p", LOG_HEAD_KEY]).unwrap(),
        vec![None, Some(b("7"))]
    );
    // Read, then written: the op's expectation checks it, not a read check.
    assert!(
        obj.put_state("intent/1", Some(b"available"), b"claimed")
            .unwrap()
    );
    // A read of the session's own write is no read of the store.
    assert_eq!(obj.get_state("fresh").unwrap(), None);
    assert!(obj.put_state("fresh", None, b"1").unwrap());
    obj.commit(&Commit::new(vec![], vec![b("entry")])).unwrap();
    let commit = obj.drain_object_puts();
    assert_eq!(
        commit.reads,
        vec![
            ReadCheck {
                key: s("hints"),
                value: Some(b("[]")),
            },
            ReadCheck {
                key: s("rec/p"),
                value: None,
            },
        ],
        "log keys, written keys and unread keys carry no read check"
    );
    assert_eq!(commit.ops.len(), 2);
    // The misses of a round were recorded, not read checks.
    assert_eq!(obj.misses(), vec![s("fresh")]);
    assert!(
        obj.drain_object_puts().reads.is_empty(),
        "a drain takes the reads"
    );
}

#[test]
fn rollback_drops_writes_and_misses_but_keeps_the_hydrated_view() {
    let session = IoBufferSession::new();
    session.kv_buf().hydrate(s("k"), Some(b("v")));
    session
        .kv_buf()
        .hydrate_list(&ListQuery::new("", None, 10), vec![s("k")]);
    session.set("k", b"changed").unwrap();
    session.set("k2", b"new").unwrap();
    session.put_blob("blob", b"x").unwrap();
    session.get_state("missing").unwrap();
    session
        .commit(&Commit {
            reads: Vec::new(),
            ops: vec![],
            log: vec![b("e")],
        })
        .unwrap();
    assert!(session.is_dirty());
    session.rollback();
    assert!(!session.is_dirty());
    assert_eq!(session.misses(), Misses::default());
    assert_eq!(session.get("k").unwrap(), Some(b("v")));
    assert_eq!(session.list("", None, 10).unwrap(), vec![s("k")]);
    assert!(session.misses().is_empty());
    assert!(session.drain().is_empty());
    assert!(session.object_buf().pending_log().is_empty());
}

#[test]
fn clones_share_state() {
    let session = IoBufferSession::new();
    let other = session.clone();
    other.set("k", b"v").unwrap();
    assert_eq!(session.get("k").unwrap(), Some(b("v")));
    let kv = session.kv_buf().clone();
    kv.hydrate(s("h"), None);
    assert_eq!(other.get("h").unwrap(), None);
    assert!(other.misses().is_empty());
}

#[test]
fn hydrate_from_fills_every_kind_of_miss() {
    let source = nexus_store::MemoryStore::new();
    source.set("k/1", b"one").unwrap();
    source.put_blob("b/1", b"blob").unwrap();
    source.put_state("s/1", None, b"st").unwrap();
    let session = IoBufferSession::new();
    let read = |s: &IoBufferSession| {
        (
            s.get_many(&["k/1", "k/2"]).unwrap(),
            s.list("k/", None, 5).unwrap(),
            s.get_blob("b/1").unwrap(),
            s.list_blobs("b/", None, 5).unwrap(),
            s.get_state("s/1").unwrap(),
            s.list_states("s/", None, 5).unwrap(),
        )
    };
    let first = read(&session);
    assert_eq!(first.0, vec![None, None]);
    let misses = session.misses();
    assert_eq!(misses.len(), 7);
    session.rollback();
    session.hydrate_from(&source, &misses).unwrap();
    let second = read(&session);
    assert!(session.misses().is_empty());
    assert_eq!(
        second,
        (
            vec![Some(b("one")), None],
            vec![s("k/1")],
            Some(b("blob")),
            vec![s("b/1")],
            Some(b("st")),
            vec![s("s/1")],
        )
    );
}
