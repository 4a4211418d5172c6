//! The Intent lifecycle, admissibility, queries and flush on the in-memory store.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use common::*;
use nexus_core::storage::keys;
use nexus_core::*;
use nexus_store::{KeyValueStore, MemoryStore, Snapshot};
use serde_json::json;

#[test]
fn propose_claim_renew_resolve() {
    let (_, s) = mem();
    let (alice, bob) = (key(1), key(2));
    let i = intent(&alice, "chem/nacl", body(1), vec![], T0);
    let sub = s.submit(&i, T0).expect("propose");
    assert!(!sub.duplicate);
    assert_eq!(sub.seq, Some(1));
    assert_eq!(
        s.intent_state(&i.hash()).expect("state"),
        Some(IntentState::Available { token: 0 })
    );

    let lease = leased(
        s.act(&claim(&bob, i.hash(), 10_000, T0), T0)
            .expect("claim"),
    );
    assert_eq!(
        (lease.token, lease.lease_until, lease.takeover),
        (1, T0 + 10_000, false)
    );

    let renewed = leased(
        s.act(&renew(&bob, i.hash(), 1, 20_000, T0 + 5_000), T0 + 5_000)
            .expect("renew"),
    );
    assert_eq!(renewed.lease_until, T0 + 25_000);

    let f = fact(
        &bob,
        "chem/nacl",
        json!({"ok": true}),
        vec![i.hash()],
        Some((i.hash(), 1)),
        T0 + 6_000,
    );
    s.submit(&f, T0 + 6_000).expect("resolve");
    assert_eq!(
        s.intent_state(&i.hash()).expect("state"),
        Some(IntentState::Resolved {
            fact: f.hash(),
            by: bob.author(),
            token: 1
        })
    );
    assert!(matches!(
        s.act(&claim(&alice, i.hash(), 10_000, T0 + 7_000), T0 + 7_000),
        Err(CoreError::AlreadyResolved { .. })
    ));
    let log = s.log_entries(1, 100).expect("log");
    assert_eq!(log.len(), 4, "propose, claim, renew, resolve");
    assert!(
        matches!(&log[3].1, LogEntry::Record { hash, kind: Kind::Fact, .. } if *hash == f.hash())
    );
    assert_eq!(s.get_record(&f.hash()).expect("get"), Some(f));
}

#[test]
fn claims_conflict_then_take_over_after_the_lease_with_a_new_token() {
    let (_, s) = mem();
    let (alice, bob, carol) = (key(1), key(2), key(3));
    let i = intent(&alice, "t", body(1), vec![], T0);
    s.submit(&i, T0).expect("propose");
    leased(s.act(&claim(&bob, i.hash(), 1_000, T0), T0).expect("claim"));
    match s.act(&claim(&carol, i.hash(), 1_000, T0 + 999), T0 + 999) {
        Err(CoreError::AlreadyClaimed {
            holder,
            lease_until,
            token,
        }) => {
            assert_eq!((holder, lease_until, token), (bob.author(), T0 + 1_000, 1));
        }
        other => panic!("expected AlreadyClaimed, got {other:?}"),
    }
    let take = leased(
        s.act(&claim(&carol, i.hash(), 1_000, T0 + 1_000), T0 + 1_000)
            .expect("takeover"),
    );
    assert_eq!((take.token, take.takeover), (2, true));

    // Bob was paused past his lease: renewal and resolution both fail.
    assert!(matches!(
        s.act(&renew(&bob, i.hash(), 1, 1_000, T0 + 1_001), T0 + 1_001),
        Err(CoreError::NotHolder { .. })
    ));
    let stale = fact(&bob, "t", body(2), vec![], Some((i.hash(), 1)), T0 + 1_001);
    let before = s.objects().snapshot().expect("snapshot");
    assert!(matches!(
        s.submit(&stale, T0 + 1_001),
        Err(CoreError::NotHolder { .. })
    ));
    assert_eq!(
        s.objects().snapshot().expect("snapshot").states,
        before.states
    );
    // Carol with a wrong token is fenced too.
    let wrong = fact(
        &carol,
        "t",
        body(3),
        vec![],
        Some((i.hash(), 1)),
        T0 + 1_002,
    );
    assert!(matches!(
        s.submit(&wrong, T0 + 1_002),
        Err(CoreError::StaleToken {
            presented: 1,
            current: 2
        })
    ));
    // And after her lease lapses she cannot resolve either.
    let late = fact(
        &carol,
        "t",
        body(4),
        vec![],
        Some((i.hash(), 2)),
        T0 + 2_000,
    );
    assert!(matches!(
        s.submit(&late, T0 + 2_000),
        Err(CoreError::LeaseExpired { .. })
    ));
}

#[test]
fn leases_and_clock_skew_are_bounded() {
    let (_, s) = mem();
    let a = key(1);
    let i = intent(&a, "t", body(1), vec![], T0);
    s.submit(&i, T0).expect("propose");
    assert!(matches!(
        s.act(&claim(&a, i.hash(), 10, T0), T0),
        Err(CoreError::LeaseOutOfRange { .. })
    ));
    assert!(matches!(
        s.act(&claim(&a, i.hash(), 3_600_001, T0), T0),
        Err(CoreError::LeaseOutOfRange { .. })
    ));
    assert!(matches!(
        s.act(&claim(&a, i.hash(), 5_000, T0), T0 + 300_001),
        Err(CoreError::ClockSkew { .. })
    ));
}

#[test]
fn only_the_proposer_withdraws_and_withdrawn_intents_cannot_be_claimed() {
    let (_, s) = mem();
    let (alice, bob) = (key(1), key(2));
    let i = intent(&alice, "t", body(1), vec![], T0);
    s.submit(&i, T0).expect("propose");
    assert!(matches!(
        s.act(&withdraw(&bob, i.hash(), T0), T0),
        Err(CoreError::NotProposer { .. })
    ));
    s.act(&withdraw(&alice, i.hash(), T0), T0)
        .expect("withdraw");
    assert!(matches!(
        s.act(&claim(&bob, i.hash(), 5_000, T0), T0),
        Err(CoreError::Withdrawn)
    ));
    assert!(matches!(
        s.act(&withdraw(&alice, i.hash(), T0 + 1), T0),
        Err(CoreError::Withdrawn)
    ));
    // The very same withdrawal again is a replay: refused before the state is read.
    assert!(matches!(
        s.act(&withdraw(&alice, i.hash(), T0), T0),
        Err(CoreError::Replayed { .. })
    ));
}

#[test]
fn unknown_parents_and_wrong_kinds_store_nothing() {
    let (store, s) = mem();
    let a = key(1);
    let ghost = FihHash::of_canonical(b"ghost");
    let before = store.snapshot().expect("snapshot");
    let orphan = fact(&a, "t", body(1), vec![ghost], None, T0);
    assert!(matches!(s.submit(&orphan, T0), Err(CoreError::UnknownParent(p)) if p == ghost));
    let bad = fact(&a, "t", body(1), vec![], Some((ghost, 1)), T0);
    assert!(matches!(
        s.submit(&bad, T0),
        Err(CoreError::UnknownParent(_))
    ));
    assert_eq!(store.snapshot().expect("snapshot"), before);

    // A fact can't resolve a fact; claiming a fact is a kind error.
    let f = fact(&a, "t", body(1), vec![], None, T0);
    s.submit(&f, T0).expect("fact");
    let r = fact(&a, "t", body(2), vec![], Some((f.hash(), 1)), T0);
    assert!(matches!(s.submit(&r, T0), Err(CoreError::WrongKind { .. })));
    assert!(matches!(
        s.act(&claim(&a, f.hash(), 5_000, T0), T0),
        Err(CoreError::WrongKind { .. })
    ));
    assert!(matches!(
        s.act(&claim(&a, ghost, 5_000, T0), T0),
        Err(CoreError::UnknownRecord(_))
    ));
}

#[test]
fn duplicates_change_nothing() {
    let (store, s) = mem();
    let a = key(1);
    let i = intent(&a, "t", body(1), vec![], T0);
    s.submit(&i, T0).expect("first");
    let before = store.snapshot().expect("snapshot");
    let again = s.submit(&i, T0 + 1).expect("again");
    assert!(again.duplicate);
    assert_eq!(store.snapshot().expect("snapshot"), before);
}

#[test]
fn deny_hints_refuse_proposals_and_claims_allow_hints_override() {
    let (_, s) = mem();
    let (a, gov) = (key(1), key(9));
    let open = intent(&a, "chem/x", body(1), vec![], T0);
    s.submit(&open, T0).expect("propose before the hint");
    let deny = hint(
        &gov,
        topic_selector("chem/**"),
        Effect::Deny,
        "budget exhausted",
        Some(T0 + 10_000),
    );
    s.submit(&deny, T0).expect("hint");

    let blocked = intent(&a, "chem/y", body(2), vec![], T0);
    match s.submit(&blocked, T0 + 1) {
        Err(CoreError::Inadmissible { hint, reason }) => {
            assert_eq!(hint, deny.hash());
            assert_eq!(reason, "budget exhausted");
        }
        other => panic!("expected Inadmissible, got {other:?}"),
    }
    assert!(matches!(
        s.act(&claim(&a, open.hash(), 5_000, T0 + 1), T0 + 1),
        Err(CoreError::Inadmissible { .. })
    ));
    // Other topics are unaffected.
    s.submit(&intent(&a, "bio/y", body(2), vec![], T0), T0 + 1)
        .expect("other topic");
    // An allow Hint selecting by body makes an exception.
    let allow = hint(
        &gov,
        Selector {
            topic: None,
            body: json!({"n": 2}).as_object().cloned(),
        },
        Effect::Allow,
        "approved",
        None,
    );
    s.submit(&allow, T0 + 2).expect("allow");
    s.submit(&blocked, T0 + 3).expect("allowed by exception");
    // After expiry the deny no longer applies.
    leased(
        s.act(&claim(&a, open.hash(), 5_000, T0 + 10_000), T0 + 10_000)
            .expect("claim after expiry"),
    );
    assert_eq!(s.active_hints(T0 + 10_000).expect("hints").len(), 1);
}

#[test]
fn priority_hints_order_the_available_listing() {
    let (_, s) = mem();
    let (a, gov) = (key(1), key(9));
    let low = intent(&a, "t/low", body(1), vec![], T0);
    let high = intent(&a, "t/high", body(2), vec![], T0 + 1);
    let taken = intent(&a, "t/high", body(3), vec![], T0 + 2);
    for r in [&low, &high, &taken] {
        s.submit(r, T0).expect("propose");
    }
    s.submit(
        &hint(
            &gov,
            topic_selector("t/high"),
            Effect::Priority(5),
            "focus",
            None,
        ),
        T0,
    )
    .expect("hint");
    leased(
        s.act(&claim(&a, taken.hash(), 5_000, T0), T0)
            .expect("claim"),
    );
    let listed = s
        .list_intents(Some("available"), None, T0, 100)
        .expect("list");
    let hashes: Vec<FihHash> = listed.iter().map(|l| l.record.hash()).collect();
    assert_eq!(hashes, vec![high.hash(), low.hash()]);
    assert_eq!(listed[0].priority, 5);
    // Once the claim lapses it is available again.
    let later = s
        .list_intents(Some("available"), None, T0 + 5_000, 100)
        .expect("list");
    assert_eq!(later.len(), 3);
    let lapsed = s
        .list_intents(Some("claimed"), None, T0 + 5_000, 100)
        .expect("list");
    assert!(
        lapsed.is_empty(),
        "a lapsed claim is listed as available only"
    );
    let claimed = s
        .list_intents(Some("claimed"), None, T0, 100)
        .expect("list");
    assert_eq!(claimed.len(), 1);
    let by_topic = s
        .list_intents(None, Some(&topic("t/low")), T0, 100)
        .expect("list");
    assert_eq!(by_topic.len(), 1);
}

#[test]
fn ids_resolve_by_unambiguous_prefix() {
    let (_, s) = mem();
    let a = key(1);
    let i = intent(&a, "t", body(1), vec![], T0);
    s.submit(&i, T0).expect("propose");
    let hex = i.hash().to_string();
    assert_eq!(s.resolve_id(&hex[..8]).expect("prefix"), i.hash());
    assert_eq!(s.resolve_id(&hex).expect("full"), i.hash());
    assert!(matches!(
        s.resolve_id(&hex[..7]),
        Err(CoreError::Invalid(_))
    ));
    assert!(matches!(
        s.resolve_id("00000000"),
        Err(CoreError::UnknownPrefix(_))
    ));
}

/// The items of every page of a query, following `next` from the first page.
fn every_page(mut query: impl FnMut(Option<&str>) -> CoreResult<Page>) -> Vec<FihHash> {
    let mut got = vec![];
    let mut after: Option<String> = None;
    loop {
        let page = query(after.as_deref()).expect("page");
        got.extend(page.items);
        match page.next {
            Some(next) => after = Some(next),
            None => return got,
        }
    }
}

#[test]
fn topic_and_time_queries_page_through_the_indexes() {
    let (_, s) = mem();
    let a = key(1);
    let mut facts = vec![];
    for n in 0..10 {
        let t = if n % 2 == 0 { "lab/a" } else { "lab/a/sub" };
        let f = fact(&a, t, body(n), vec![], None, T0 + n as u64);
        s.submit(&f, T0).expect("fact");
        facts.push(f);
    }
    s.submit(&fact(&a, "lab/ab", body(99), vec![], None, T0), T0)
        .expect("sibling topic");
    let all = s
        .by_topic(Kind::Fact, &topic("lab/a"), TimeRange::default(), None, 100)
        .expect("query");
    assert_eq!(
        all.items.len(),
        10,
        "subtopics included, sibling lab/ab excluded"
    );
    assert_eq!(all.next, None);
    // One time order across the topic and its subtopics (facts alternate between
    // them in time), also when paged through a time window.
    let in_time_order: Vec<_> = facts.iter().map(|f| f.hash()).collect();
    assert_eq!(all.items, in_time_order);
    let window = TimeRange {
        since: Some(T0 + 3),
        until: Some(T0 + 8),
    };
    let got = every_page(|after| s.by_topic(Kind::Fact, &topic("lab/a"), window, after, 2));
    assert_eq!(got, in_time_order[3..8]);
    let sub = s
        .by_topic(
            Kind::Fact,
            &topic("lab/a/sub"),
            TimeRange::default(),
            None,
            100,
        )
        .expect("subtopic alone");
    let odd: Vec<_> = in_time_order.iter().skip(1).step_by(2).copied().collect();
    assert_eq!(sub.items, odd, "a subtopic lists only its own facts");
    let top = s
        .by_topic(Kind::Fact, &topic("lab"), TimeRange::default(), None, 100)
        .expect("top level");
    assert_eq!(top.items.len(), 11, "lab/a, lab/a/sub and lab/ab");

    let window = TimeRange {
        since: Some(T0 + 2),
        until: Some(T0 + 6),
    };
    let got = every_page(|after| s.by_time(Kind::Fact, window, after, 2));
    let want: Vec<FihHash> = facts[2..6].iter().map(|f| f.hash()).collect();
    assert_eq!(got, want);
}

#[test]
fn flush_archives_every_entry_moves_the_cursor_and_repairs_lost_indexes() {
    let (store, s) = mem();
    let a = key(1);
    let f1 = fact(&a, "t", body(1), vec![], None, T0);
    let i = intent(&a, "t", body(2), vec![], T0);
    let f2 = fact(&a, "t", body(3), vec![], None, T0 + 1);
    for r in [&f1, &i, &f2] {
        s.submit(r, T0).expect("submit");
    }
    s.act(&claim(&a, i.hash(), 10_000, T0), T0).expect("claim");
    // Simulate index entries lost after their commit.
    let lost = keys::topic_index(Kind::Fact, &topic("t"), T0 + 1, &f2.hash());
    store.delete(&lost).expect("delete");
    assert_eq!(store.get(&lost).expect("get"), None);

    let policy = archive::WindowPolicy {
        max_entries: 3,
        max_age_ms: 60_000,
    };
    let report = s.flush(&policy, T0).expect("flush");
    let w1 = report.window.expect("a full window closes");
    assert_eq!((w1.window, w1.first, w1.last, report.cursor), (1, 1, 3, 3));
    assert_eq!(w1.checkpoint, None, "no log signer, no checkpoint");
    let blob = nexus_store::BlobStore::get_blob(&store, &w1.archive)
        .expect("blob")
        .expect("present");
    let lines = archive::check_archive(&w1, &blob).expect("archive matches its manifest");
    let recs: Vec<Record> = lines
        .iter()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_slice(l).expect("json");
            Record::from_value(v["record"].clone(), &Limits::default()).expect("verifies")
        })
        .collect();
    assert_eq!(recs, vec![f1, i, f2], "records and Intents alike");
    assert_eq!(
        store.get(&lost).expect("get"),
        Some(vec![]),
        "index repaired"
    );
    // The claim alone is young and not a full window: nothing is due…
    let idle = s.flush(&policy, T0 + 1).expect("flush");
    assert_eq!((idle.window, idle.cursor), (None, 3));
    // …until it is old enough.
    let w2 = s
        .flush(&policy, T0 + 60_000)
        .expect("flush")
        .window
        .expect("due");
    assert_eq!((w2.window, w2.first, w2.last), (2, 4, 4));
    let m1 = nexus_store::BlobStore::get_blob(&store, &archive::keys::manifest(1))
        .expect("read")
        .expect("manifest 1");
    assert_eq!(w2.prev, Some(archive::blake3_hex(&m1)), "chained");
    let cursor = s.flush_cursor().expect("cursor");
    assert_eq!((cursor.seq, cursor.windows, cursor.pending), (4, 2, None));
}

/// The two halves of a flush, as an asynchronous host runs them: `fix_window` writes
/// the pending window into the cursor and nothing else; `archive_pending` then archives
/// exactly that window however many entries arrived meanwhile, and without a pending
/// window writes nothing.
#[test]
fn fix_window_then_archive_pending_is_one_flush() {
    let (store, s) = mem();
    let a = key(1);
    for n in 0..3 {
        s.submit(&fact(&a, "t", body(n), vec![], None, T0), T0)
            .expect("submit");
    }
    let policy = archive::WindowPolicy {
        max_entries: 100,
        max_age_ms: 1_000,
    };
    assert_eq!(s.window_due_in(&policy, T0 + 400).expect("due"), Some(600));
    let idle = s.archive_pending().expect("nothing pending");
    assert_eq!((idle.window, idle.cursor), (None, 0));
    assert_eq!(
        s.fix_window(&policy, T0 + 400).expect("young").pending,
        None
    );
    let fixed = s.fix_window(&policy, T0 + 1_000).expect("fix").pending;
    let want = archive::Pending {
        first: 1,
        last: 3,
        closed_at: T0 + 1_000,
    };
    assert_eq!(fixed, Some(want));
    assert_eq!(
        nexus_store::BlobStore::list_blobs(&store, "archive/", None, 10).expect("list"),
        Vec::<String>::new(),
        "fixing writes no blob"
    );
    assert_eq!(
        s.window_due_in(&policy, T0).expect("due"),
        Some(0),
        "pending"
    );
    // Fixing again keeps the window; an entry arriving now is not in it.
    s.submit(&fact(&a, "t", body(9), vec![], None, T0), T0)
        .expect("submit");
    assert_eq!(
        s.fix_window(&policy, T0 + 5_000).expect("again").pending,
        Some(want)
    );
    let w1 = s
        .archive_pending()
        .expect("archive")
        .window
        .expect("window");
    assert_eq!(
        (w1.window, w1.first, w1.last, w1.closed_at),
        (1, 1, 3, T0 + 1_000)
    );
    assert_eq!(s.flush_cursor().expect("cursor").pending, None);
    assert_eq!(s.window_due_in(&policy, T0).expect("due"), Some(1_000));
    let w2 = s
        .flush(&policy, T0 + 1_000)
        .expect("flush")
        .window
        .expect("w2");
    assert_eq!((w2.window, w2.first, w2.last), (2, 4, 4));
    assert_eq!(
        s.window_due_in(&policy, T0).expect("due"),
        None,
        "all archived"
    );
}

/// A flush that fails at any of its writes (a kill at that point) and is retried
/// archives the same window with the same bytes under the same keys, and the chain
/// after it has no gap and no overlap, even though more entries arrived meanwhile.
#[test]
fn a_flush_interrupted_at_any_write_is_finished_with_the_same_bytes() {
    let policy = archive::WindowPolicy {
        max_entries: 100,
        max_age_ms: 0,
    };
    // The writes of one flush: fix the window (commit), archive, manifest, index
    // entries, move the cursor (commit); `None` counts them.
    let mut total = None;
    let mut fail_at = 0;
    while total.is_none_or(|t| fail_at < t) {
        let store = MemoryStore::new();
        let writes = Arc::new(AtomicUsize::new(usize::MAX));
        let seen = Arc::new(AtomicUsize::new(0));
        let puts = Arc::new(Mutex::new(Vec::<(String, Vec<u8>)>::new()));
        let (w, n, p) = (Arc::clone(&writes), Arc::clone(&seen), Arc::clone(&puts));
        let hooked = nexus_testkit::Hooked::with_hooks(
            store.clone(),
            nexus_testkit::Hooks {
                before: Some(Box::new(move |_, call| {
                    if let nexus_testkit::Call::BlobPut(k, b) = call {
                        p.lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .push((k.to_owned(), b.to_vec()));
                    }
                    if call.write_event().is_some() {
                        n.fetch_add(1, Ordering::SeqCst);
                        if w.fetch_sub(1, Ordering::SeqCst) == 0 {
                            return Err(nexus_store::StoreError::Backend("killed".into()));
                        }
                    }
                    Ok(())
                })),
                ..Default::default()
            },
        );
        let s = CompositeColdStorage::unified(hooked, Limits::default());
        let plain = CompositeColdStorage::unified(store.clone(), Limits::default());
        plain.init_deployment(&dep()).expect("deployment");
        let a = key(1);
        for n in 0..3 {
            plain
                .submit(&fact(&a, "t", body(n), vec![], None, T0), T0)
                .expect("submit");
        }
        if total.is_none() {
            s.flush(&policy, T0).expect("clean flush");
            total = Some(seen.load(Ordering::SeqCst));
            continue;
        }
        writes.store(fail_at, Ordering::SeqCst);
        assert!(s.flush(&policy, T0).is_err(), "write {fail_at} failed");
        writes.store(usize::MAX, Ordering::SeqCst);
        // Entries arrive between the kill and the retry.
        plain
            .submit(&fact(&a, "t", body(9), vec![], None, T0), T0)
            .expect("submit");
        let w1 = s.flush(&policy, T0).expect("retry").window;
        let w1 = w1.unwrap_or_else(|| panic!("fail_at {fail_at}: the retry archived nothing"));
        // Killed before the window was fixed: nothing was written, the retry closes a
        // window over all that is there. Killed after: the retry finishes that window.
        let fixed = fail_at > 0;
        let last = if fixed { 3 } else { 4 };
        assert_eq!(
            (w1.window, w1.first, w1.last),
            (1, 1, last),
            "fail_at {fail_at}"
        );
        if fixed {
            let w2 = s
                .flush(&policy, T0)
                .expect("next")
                .window
                .expect("window 2");
            assert_eq!(
                (w2.window, w2.first, w2.last),
                (2, 4, 4),
                "fail_at {fail_at}"
            );
        }
        // Every put of a key wrote the bytes the key holds now.
        for (k, b) in puts.lock().unwrap_or_else(PoisonError::into_inner).iter() {
            let now = nexus_store::BlobStore::get_blob(&store, k)
                .expect("get")
                .expect("kept");
            assert_eq!(&now, b, "fail_at {fail_at}: {k} rewritten with other bytes");
        }
        let mut chain = archive::Chain::default();
        for first in if fixed { vec![1, 4] } else { vec![1] } {
            let key = archive::keys::manifest(first);
            let m = nexus_store::BlobStore::get_blob(&store, &key)
                .expect("get")
                .expect("manifest");
            chain.push(&key, &m).expect("chain");
        }
        assert_eq!(chain.last_seq(), 4);
        fail_at += 1;
    }
    assert!(total.is_some_and(|t| t >= 5), "{total:?} writes");
}

/// With a log signer, every window's manifest and every snapshot's ends at the signed
/// checkpoint of the tree at its last seq, whose root is that of the stored entries.
#[test]
fn manifests_end_at_signed_checkpoints_of_the_stored_log() {
    let (store, s) = mem();
    let signer = nexus_tlog::LogSigner::new("nexus/flush-test", [4; 32]).expect("signer");
    let s = s.with_log_signer(signer.clone());
    let a = key(1);
    for n in 0..5 {
        s.submit(&fact(&a, "t", body(n), vec![], None, T0), T0)
            .expect("submit");
    }
    let policy = archive::WindowPolicy {
        max_entries: 2,
        max_age_ms: 60_000,
    };
    let mut tree = nexus_tlog::MemoryTree::default();
    for (_, e) in s.log_entries(1, 10).expect("log") {
        tree.push(e.leaf_hash());
    }
    // The deployment's init is no log entry: five facts, five leaves.
    assert_eq!(tree.size(), 5);
    for last in [2, 4] {
        let w = s.flush(&policy, T0).expect("flush").window.expect("due");
        assert_eq!(w.last, last);
        let (signed, cp) = w
            .verified_checkpoint(Some(&signer.verifier_key()))
            .expect("verifies")
            .expect("present");
        assert_eq!(signed.log_key, signer.verifier_key());
        assert_eq!((cp.size, cp.root), (last, tree.root(last).expect("root")));
        let other = nexus_tlog::LogSigner::new("nexus/flush-test", [5; 32]).expect("signer");
        assert!(w.verified_checkpoint(Some(&other.verifier_key())).is_err());
    }
    let state = s.capture_hot_state(3).expect("capture").expect("still");
    let key = s.write_snapshot(&state, T0).expect("snapshot");
    let bytes = nexus_store::BlobStore::get_blob(&store, &key)
        .expect("read")
        .expect("manifest");
    let (m, _) = archive::HotState::from_blobs(&key, &bytes, |k| {
        nexus_store::BlobStore::get_blob(&store, k).ok().flatten()
    })
    .expect("snapshot");
    let (_, cp) = archive::verify_manifest_checkpoint(&key, m.checkpoint.as_ref(), 5, None)
        .expect("verifies")
        .expect("present");
    assert_eq!(cp.root, tree.root(5).expect("root"));
}
