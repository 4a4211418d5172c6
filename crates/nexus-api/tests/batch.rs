//! `POST /v1/batch` through `Api::run_sync` on a `MemoryStore`: items apply in order,
//! each seeing the ones before it, in one atomic commit; a failing item stores nothing
//! and is named; a batch is equivalent to its items one by one (property).

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use proptest::prelude::*;
use serde_json::{Value, json};

use nexus_core::{Action, Record, SigningKey};

fn rec(r: &Record) -> Value {
    json!({"record": r.to_value()})
}

fn act(a: &Action) -> Value {
    json!({"action": a.to_value()})
}

fn batch(h: &Harness, items: Vec<Value>, now: u64) -> Answer {
    h.post("/v1/batch", &json!({ "items": items }), now)
}

#[test]
fn propose_then_claim_in_one_commit_with_consecutive_seqs() {
    let h = Harness::open();
    let (alice, bob) = (key(1), key(2));
    let first = intent(&alice, "t/a", json!({"n": 1}));
    assert_eq!(h.submit(&first).status, 201);
    let i = intent(&alice, "t/b", json!({"n": 2}));
    let c = claim_at(&bob, i.hash(), LEASE, NOW);
    let commits = h.api.metrics().commits();
    let a = batch(&h, vec![rec(&i), act(&c)], NOW);
    assert_eq!(a.status, 200, "{}", a.json);
    assert_eq!(
        a.json,
        json!({"results": [
            {"record": {"hash": i.hash().to_string(), "kind": "intent", "duplicate": false, "seq": 2}},
            {"lease": {"intent": i.hash().to_string(), "token": 1, "lease_until": NOW + LEASE, "takeover": false}},
        ]})
    );
    // One commit for both items.
    assert_eq!(h.api.metrics().commits(), commits + 1);
    let log = h.get("/v1/log?from=2");
    assert_eq!(log.json["entries"][0]["record"], i.to_value());
    assert_eq!(log.json["entries"][1]["action"], c.to_value());
    let got = h.get(&format!("/v1/intents/{}", i.hash()));
    assert_eq!(got.json["state"]["state"], "claimed", "{}", got.json);
}

#[test]
fn resolve_and_propose_follow_ups_that_link_the_fact() {
    let h = Harness::open();
    let (alice, bob) = (key(1), key(2));
    let i = intent(&alice, "t/q", json!({}));
    assert_eq!(h.submit(&i).status, 201);
    assert_eq!(
        h.act(&claim_at(&bob, i.hash(), LEASE, NOW), NOW).status,
        200
    );
    let f = fact(
        &bob,
        "t/q",
        json!({"answer": 42}),
        vec![i.hash()],
        Some((i.hash(), 1)),
        NOW,
    );
    // Follow-ups derive from the Fact committed earlier in the same batch.
    let next1 = intent_at(&bob, "t/q/next", json!({"k": 1}), vec![f.hash()], NOW);
    let next2 = intent_at(&bob, "t/q/next", json!({"k": 2}), vec![f.hash()], NOW);
    let a = batch(&h, vec![rec(&f), rec(&next1), rec(&next2)], NOW);
    assert_eq!(a.status, 200, "{}", a.json);
    let seqs: Vec<u64> = (0..3)
        .map(|k| a.json["results"][k]["record"]["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, vec![3, 4, 5]);
    let got = h.get(&format!("/v1/intents/{}", i.hash()));
    assert_eq!(got.json["state"]["state"], "resolved");
    let avail = h.get("/v1/intents?state=available&topic=t/q/next");
    assert_eq!(avail.json["intents"].as_array().unwrap().len(), 2);
}

#[test]
fn a_failing_item_stores_nothing_and_is_named() {
    let h = Harness::open();
    let (alice, bob, carol) = (key(1), key(2), key(3));
    let i = intent(&alice, "t/x", json!({}));
    assert_eq!(h.submit(&i).status, 201);
    let other = intent(&alice, "t/y", json!({}));
    // Two claims of one Intent: the second finds it claimed by the first.
    let a = h.expect_error(409, "already_claimed", |h| {
        batch(
            h,
            vec![
                rec(&other),
                act(&claim_at(&bob, i.hash(), LEASE, NOW)),
                act(&claim_at(&carol, i.hash(), LEASE, NOW)),
            ],
            NOW,
        )
    });
    assert_eq!(a.json["error"]["item"], 2, "{}", a.json);
    // A record whose parent is unknown.
    let orphan = intent_at(&alice, "t/z", json!({}), vec![other.hash()], NOW);
    let a = h.expect_error(422, "unknown_parent", |h| batch(h, vec![rec(&orphan)], NOW));
    assert_eq!(a.json["error"]["item"], 0);
    // The same action twice: replayed, nothing stored.
    let c = claim_at(&bob, i.hash(), LEASE, NOW);
    let a = h.expect_error(409, "replayed", |h| batch(h, vec![act(&c), act(&c)], NOW));
    assert_eq!(a.json["error"]["item"], 1);
    // After all that, a plain claim still wins with token 1.
    let a = h.act(&c, NOW);
    assert_eq!((a.status, a.json["token"].clone()), (200, json!(1)));
}

#[test]
fn malformed_batches_are_refused_before_anything_runs() {
    let h = Harness::open();
    let alice = key(1);
    let i = intent(&alice, "t/x", json!({}));
    let e = |h: &Harness, body: Value| h.post("/v1/batch", &body, NOW);
    h.expect_error(400, "bad_request", |h| e(h, json!({"items": []})));
    h.expect_error(400, "bad_request", |h| e(h, json!([rec(&i)])));
    h.expect_error(400, "bad_request", |h| e(h, json!({"items": rec(&i)})));
    h.expect_error(400, "bad_request", |h| {
        e(h, json!({"items": [rec(&i)], "extra": 1}))
    });
    let a = h.expect_error(400, "bad_request", |h| {
        e(
            h,
            json!({"items": [rec(&i), {"record": i.to_value(), "action": {}}]}),
        )
    });
    assert_eq!(a.json["error"]["item"], 1);
    let a = h.expect_error(400, "bad_request", |h| {
        e(h, json!({"items": [{"thing": 1}]}))
    });
    assert_eq!(a.json["error"]["item"], 0);
    let many: Vec<Value> = (0..65)
        .map(|n| rec(&intent(&alice, "t/many", json!({ "n": n }))))
        .collect();
    let a = h.expect_error(400, "bad_request", |h| e(h, json!({ "items": many })));
    assert_eq!(a.json["error"]["limit"], 64);
    h.expect_error(400, "malformed_json", |h| {
        h.raw("POST", "/v1/batch", b"{\"items\": [".to_vec(), NOW)
    });
    // A tampered record: its item is named with the signature check's own code.
    let mut bad = i.to_value();
    bad["topic"] = json!("t/other");
    let a = h.expect_error(400, "hash_mismatch", |h| {
        e(h, json!({"items": [rec(&i), {"record": bad}]}))
    });
    assert_eq!(a.json["error"]["item"], 1);
    // A contract deployment is not a batch item; a deny Hint needs an operator.
    let d = fact(&alice, "nexus/contract", json!({}), vec![], None, NOW);
    let a = h.expect_error(400, "bad_request", |h| e(h, json!({"items": [rec(&d)]})));
    assert_eq!(a.json["error"]["item"], 0);
    h.expect_error(405, "method_not_allowed", |h| h.get("/v1/batch"));
}

#[test]
fn a_closed_server_refuses_a_batch_with_one_unlisted_author() {
    let (alice, mallory) = (key(1), key(9));
    let h = Harness::allowing(&[&alice]);
    let ok = intent(&alice, "t/a", json!({}));
    let bad = intent(&mallory, "t/b", json!({}));
    let a = h.expect_error(403, "author_not_allowed", |h| {
        batch(h, vec![rec(&ok), rec(&bad)], NOW)
    });
    assert_eq!(a.json["error"]["item"], 1);
}

#[test]
fn duplicates_in_a_batch_answer_duplicate_and_take_no_seq() {
    let h = Harness::open();
    let alice = key(1);
    let i = intent(&alice, "t/a", json!({}));
    let j = intent(&alice, "t/b", json!({}));
    let a = batch(&h, vec![rec(&i), rec(&i), rec(&j)], NOW);
    assert_eq!(a.status, 200, "{}", a.json);
    let r = &a.json["results"];
    assert_eq!(r[0]["record"]["seq"], 1);
    assert_eq!(r[1]["record"]["duplicate"], true);
    assert_eq!(r[1]["record"]["seq"], json!(null));
    assert_eq!(r[2]["record"]["seq"], 2);
    // A batch of only committed records commits nothing and says so.
    let before = h.snapshot();
    let a = batch(&h, vec![rec(&i), rec(&j)], NOW);
    assert_eq!(a.status, 200);
    assert_eq!(a.json["results"][0]["record"]["duplicate"], true);
    assert_eq!(h.snapshot(), before);
}

/// One step of a random workload over a few Intents and agents.
#[derive(Debug, Clone)]
enum Step {
    Propose(usize),
    Claim(usize, u8),
    Resolve(usize, u8),
    Withdraw(usize),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (0..3usize).prop_map(Step::Propose),
        (0..3usize, 2..4u8).prop_map(|(i, a)| Step::Claim(i, a)),
        (0..3usize, 2..4u8).prop_map(|(i, a)| Step::Resolve(i, a)),
        (0..3usize).prop_map(Step::Withdraw),
    ]
}

/// A batch item.
#[derive(Debug, Clone)]
enum Item {
    Rec(Record),
    Act(Action),
}

impl Item {
    fn value(&self) -> Value {
        match self {
            Item::Rec(r) => rec(r),
            Item::Act(a) => act(a),
        }
    }

    /// Through its own route.
    fn single(&self, h: &Harness) -> Answer {
        match self {
            Item::Rec(r) => h.submit(r),
            Item::Act(a) => h.act(a, NOW),
        }
    }
}

/// The items of `steps`: records and actions signed as an agent would, guessing the
/// fencing token from the claims before it (a wrong guess is a failing item).
fn items(steps: &[Step], salt: u64) -> Vec<Item> {
    let proposer = key(1);
    let intents: Vec<Record> = (0..3)
        .map(|n| intent(&proposer, "p/x", json!({ "n": n })))
        .collect();
    let mut claims = [0u64; 3];
    steps
        .iter()
        .enumerate()
        .map(|(n, s)| {
            let t = NOW + salt + n as u64;
            match *s {
                Step::Propose(i) => Item::Rec(intents[i].clone()),
                Step::Claim(i, a) => {
                    claims[i] += 1;
                    Item::Act(claim_at(&key(a), intents[i].hash(), LEASE, t))
                }
                Step::Resolve(i, a) => {
                    let k: SigningKey = key(a);
                    Item::Rec(fact(
                        &k,
                        "p/x",
                        json!({ "by": a, "n": n }),
                        vec![intents[i].hash()],
                        Some((intents[i].hash(), claims[i].max(1))),
                        t,
                    ))
                }
                Step::Withdraw(i) => Item::Act(withdraw_at(&proposer, intents[i].hash(), t)),
            }
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// A batch commits exactly what its items do one by one when all of them succeed,
    /// and otherwise fails at the first item that fails one by one, with its code,
    /// storing nothing.
    #[test]
    fn a_batch_is_its_items_one_by_one_or_nothing(
        prefix in proptest::collection::vec(step(), 0..4),
        steps in proptest::collection::vec(step(), 1..8),
    ) {
        let (one, all) = (Harness::open(), Harness::open());
        // A common history first, one by one on both.
        for item in items(&prefix, 0) {
            item.single(&one);
            item.single(&all);
        }
        let before = all.snapshot();
        let list = items(&steps, 100);
        let mut failed = None;
        for (n, item) in list.iter().enumerate() {
            let a = item.single(&one);
            if a.status / 100 != 2 {
                failed = Some((n, a.status, a.code().to_owned()));
                break;
            }
        }
        let a = batch(&all, list.iter().map(Item::value).collect(), NOW);
        match failed {
            None => {
                prop_assert_eq!(a.status, 200, "{}", a.json);
                prop_assert_eq!(all.snapshot(), one.snapshot());
            }
            Some((n, status, code)) => {
                prop_assert_eq!((a.status, a.code()), (status, code.as_str()), "{}", a.json);
                prop_assert_eq!(a.json["error"]["item"].as_u64(), Some(n as u64));
                prop_assert_eq!(all.snapshot(), before);
            }
        }
    }
}
