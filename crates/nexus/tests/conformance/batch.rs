//! `POST /v1/batch` (spec/api.md, "Batches"): several writes in one atomic commit, on
//! any host.

use nexus_client::http::{BatchItem, BatchResult, IntentQuery};
use nexus_client::{Client, KeyFile, builders};
use nexus_core::IntentState;
use serde_json::json;

use super::{expect_error, snapshot};

/// Proposals and their claims in one batch; a Fact that resolves an Intent with its
/// follow-ups (which derive from it) in another; a failing item stores nothing and is
/// named; malformed batches are refused.
pub fn check(c: &Client, tag: &str, alice: &KeyFile, bob: &KeyFile, carol: &KeyFile) {
    let topic = format!("{tag}/batch");
    let dep = c.deployment().expect("deployment");
    let start = snapshot(c).log_head;

    // Propose two Intents and claim the first, all in one commit.
    let a = builders::propose(alice.key(), &topic, json!({"n": 1}), &[]).expect("intent");
    let b = builders::propose(alice.key(), &topic, json!({"n": 2}), &[]).expect("intent");
    let claim = builders::claim(bob.key(), &dep, a.hash(), 30_000).expect("claim");
    let results = c
        .batch(&[
            BatchItem::Record(a.clone()),
            BatchItem::Record(b.clone()),
            BatchItem::Action(claim.clone()),
        ])
        .expect("batch");
    assert_eq!(results.len(), 3);
    let seqs: Vec<Option<u64>> = results[..2]
        .iter()
        .map(|r| match r {
            BatchResult::Record(created) => created.seq,
            other => panic!("a record's result: {other:?}"),
        })
        .collect();
    if super::one_log() {
        assert_eq!(seqs, vec![Some(start + 1), Some(start + 2)]);
    }
    match &results[2] {
        BatchResult::Lease(l) => assert_eq!((l.intent, l.token), (a.hash(), 1)),
        other => panic!("a claim's result: {other:?}"),
    }
    if super::one_log() {
        let page = c.log(start + 1, Some(10)).expect("log");
        assert_eq!(page.head, start + 3, "one entry per item");
        assert_eq!(page.entries[0]["record"]["hash"], a.hash().to_string());
        assert_eq!(page.entries[1]["record"]["hash"], b.hash().to_string());
        assert_eq!(page.entries[2]["action"], claim.to_value());
    }

    // Resolve `a` and propose two follow-ups that derive from the resolving Fact.
    let f = builders::fact(
        bob.key(),
        &topic,
        json!({"answer": 42}),
        &[a.hash()],
        Some((a.hash(), 1)),
    )
    .expect("fact");
    let next: Vec<_> = (0..2)
        .map(|n| {
            builders::propose(
                bob.key(),
                &format!("{topic}/next"),
                json!({ "n": n }),
                &[f.hash()],
            )
            .expect("follow-up")
        })
        .collect();
    let mut items = vec![BatchItem::Record(f.clone())];
    items.extend(next.iter().cloned().map(BatchItem::Record));
    let results = c.batch(&items).expect("resolve and follow up");
    assert_eq!(results.len(), 3);
    let state = c.intent(&a.hash().to_string()).expect("intent").state;
    assert!(
        matches!(state, IntentState::Resolved { fact, .. } if fact == f.hash()),
        "{state:?}"
    );
    let follow_ups = c
        .intents(&IntentQuery {
            state: Some("available".into()),
            topic: Some(format!("{topic}/next")),
            ..IntentQuery::default()
        })
        .expect("follow-ups");
    assert_eq!(follow_ups.intents.len(), 2);

    // Item 2 fails (`b` is claimed by item 1): nothing of the batch is stored.
    let fresh = builders::propose(alice.key(), &topic, json!({"n": 3}), &[]).expect("intent");
    let e = expect_error(
        c,
        "a batch whose third item fails",
        409,
        "already_claimed",
        || {
            c.batch(&[
                BatchItem::Record(fresh.clone()),
                BatchItem::Action(
                    builders::claim(bob.key(), &dep, b.hash(), 30_000).expect("claim"),
                ),
                BatchItem::Action(
                    builders::claim(carol.key(), &dep, b.hash(), 30_000).expect("claim"),
                ),
            ])
        },
    );
    assert_eq!(e.detail("item"), Some(&json!(2)), "{e}");
    assert!(
        c.record(&fresh.hash().to_string()).is_err(),
        "item 0 was not stored"
    );
    // An unknown parent names its item too.
    let orphan =
        builders::propose(alice.key(), &topic, json!({"n": 4}), &[fresh.hash()]).expect("intent");
    let e = expect_error(c, "an unknown parent", 422, "unknown_parent", || {
        c.batch(&[BatchItem::Record(orphan.clone())])
    });
    assert_eq!(e.detail("item"), Some(&json!(0)));

    // Malformed batches.
    for (what, body) in [
        ("no items", json!({"items": []})),
        ("not an object", json!([])),
        ("an unknown member", json!({"items": [], "more": true})),
        (
            "an item of neither kind",
            json!({"items": [{"intent": {}}]}),
        ),
    ] {
        expect_error(c, what, 400, "bad_request", || {
            c.post_json("/v1/batch", &serde_json::to_vec(&body).expect("json"))
        });
    }
    let many: Vec<BatchItem> = (0..65)
        .map(|n| {
            BatchItem::Record(
                builders::propose(alice.key(), &topic, json!({ "many": n }), &[]).expect("intent"),
            )
        })
        .collect();
    let e = expect_error(c, "65 items", 400, "bad_request", || c.batch(&many));
    assert_eq!(e.detail("limit"), Some(&json!(64)));
}
