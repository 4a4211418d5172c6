//! Each example contract in `examples/contracts/`, played against a real store.

mod common;

use common::*;
use nexus_core::{CoreError, Effect, IntentState};
use serde_json::json;

#[test]
fn budget_denies_a_topic_after_three_failures_within_a_day() {
    let mut lab = Lab::new(example("budget.nex"));
    let (alice, bob) = (key(1), key(2));
    let topic = "lab/chem/solubility";
    // Two failures and a success: under budget.
    lab.run(&alice, topic, json!({"status": "failed"}), T0);
    lab.run(&bob, topic, json!({"status": "ok"}), T0 + HOUR);
    lab.run(&bob, topic, json!({"status": "failed"}), T0 + 2 * HOUR);
    // A failure under another topic counts for that topic only.
    lab.run(
        &bob,
        "lab/bio/growth",
        json!({"status": "failed"}),
        T0 + 2 * HOUR,
    );
    // A failed Fact that resolves nothing is not a failed run.
    lab.submit_fact(
        &alice,
        fact(&alice, topic, json!({"status": "failed"}), T0 + 3 * HOUR),
    );
    assert!(lab.play(T0 + 3 * HOUR).is_empty());
    assert!(lab.hints().is_empty());
    // The third failed run, 25 h after the first: only two lie within 24 h.
    let late = T0 + 25 * HOUR;
    lab.run(&alice, topic, json!({"status": "failed"}), late);
    assert!(lab.play(late).is_empty());
    // A fourth within 24 h of the two before it spends the budget.
    let third = lab.run(&alice, topic, json!({"status": "failed"}), late + HOUR);
    let emitted = lab.play(late + HOUR);
    assert_eq!(emitted.len(), 1);
    let hints = lab.hints();
    let h = &hints[0];
    assert_eq!(h.effect, Effect::Deny);
    assert_eq!(
        h.selector.topic.as_ref().map(|t| t.as_str()),
        Some("lab/chem/solubility/**")
    );
    assert_eq!(
        h.reason,
        "failure budget spent: 3 failed runs under lab/chem/solubility within 24h"
    );
    assert_eq!(h.expires, Some(late + HOUR + 1 + 7 * 24 * HOUR));
    let source = h.source.as_ref().expect("source");
    assert_eq!(source.rule.as_deref(), Some("failure-budget"));
    assert_eq!(source.contract, Some(lab.eval.contract().hash()));
    assert_eq!(source.facts.len(), 3);
    assert_eq!(source.facts.last(), Some(&third));
    // The store now refuses new work under the topic, naming the Hint and reason…
    let hint_hash = emitted[0].hash();
    match lab.propose(&bob, "lab/chem/solubility/hot", json!({}), late + 2 * HOUR) {
        Err(CoreError::Inadmissible { hint, reason }) => {
            assert_eq!(hint, hint_hash);
            assert!(reason.starts_with("failure budget spent"), "{reason}");
        }
        other => panic!("expected inadmissible, got {other:?}"),
    }
    // …but not elsewhere, and not once the Hint expired.
    lab.propose(&bob, "lab/bio/growth", json!({}), late + 2 * HOUR)
        .expect("other topic");
    let after = late + HOUR + 1 + 7 * 24 * HOUR;
    lab.propose(&bob, topic, json!({"again": true}), after)
        .expect("expired");
}

#[test]
fn priority_ranks_intents_extending_confirmed_facts() {
    let mut lab = Lab::new(example("priority.nex"));
    let (alice, bob, carol) = (key(1), key(2), key(3));
    let claim = lab.submit_fact(
        &alice,
        fact(&alice, "chem/solubility", json!({"g_per_l": 360}), T0),
    );
    let other = lab.submit_fact(
        &alice,
        fact(&alice, "chem/solubility", json!({"g_per_l": 1}), T0),
    );
    let extend = lab
        .propose(
            &carol,
            "chem/solubility/hot",
            json!({"extends": claim.to_hex()}),
            T0,
        )
        .expect("ok");
    let plain = lab
        .propose(&carol, "chem/solubility/cold", json!({}), T0)
        .expect("ok");
    let doubtful = lab
        .propose(
            &carol,
            "chem/solubility/odd",
            json!({"extends": other.to_hex()}),
            T0,
        )
        .expect("ok");
    let review = |who, c: &nexus_core::FihHash, verdict: &str, t| {
        fact(
            who,
            "review/confirm",
            json!({"confirms": c.to_hex(), "verdict": verdict}),
            t,
        )
    };
    // One review is not a confirmation.
    lab.submit_fact(&bob, review(&bob, &claim, "holds", T0 + 1));
    assert!(lab.play(T0 + 1).is_empty());
    lab.submit_fact(&carol, review(&carol, &claim, "holds", T0 + 2));
    lab.submit_fact(&bob, review(&bob, &other, "refuted", T0 + 3));
    // A malformed review (no hash) is ignored.
    lab.submit_fact(
        &bob,
        fact(
            &bob,
            "review/confirm",
            json!({"confirms": 7, "verdict": "holds"}),
            T0 + 4,
        ),
    );
    let emitted = lab.play(T0 + 4);
    assert_eq!(emitted.len(), 2);
    let listed = lab
        .store
        .list_intents(Some("available"), None, T0 + 5, 100)
        .expect("list");
    let order: Vec<(nexus_core::FihHash, i64)> = listed
        .iter()
        .map(|l| (l.record.hash(), l.priority))
        .collect();
    assert_eq!(order[0], (extend, 10));
    assert_eq!(order[order.len() - 1], (doubtful, -5));
    assert!(order.contains(&(plain, 0)));
    let hints = lab.hints();
    let confirmed = hints
        .iter()
        .find(|h| h.effect == Effect::Priority(10))
        .expect("priority hint");
    assert_eq!(
        confirmed.reason,
        format!("extends fact {}, confirmed by 2 reviews", claim.to_hex())
    );
    assert!(matches!(
        lab.store.intent_state(&extend).expect("state"),
        Some(IntentState::Available { .. })
    ));
}

#[test]
fn quorum_governs_upgrades_and_freezes() {
    let mut lab = Lab::new(example("quorum.nex"));
    let contract = lab.eval.contract().clone();
    let (s1, s2, s3, outsider) = (key(1), key(2), key(3), key(4));
    let next = nexus_contract::contract_hash(b"contract = \"v2\"\n");
    let current = contract.hash().to_hex();
    let approve_body = |who: &nexus_core::SigningKey, body, t| {
        let f = fact(who, "governance/upgrade", body, t);
        let rec = sign(nexus_core::Content::Fact(f.clone()), who);
        (rec.hash(), f)
    };
    let approve = |who, c: &nexus_core::FihHash, t| {
        approve_body(who, json!({"contract": c.to_hex(), "replaces": current}), t)
    };
    let policy = contract.upgrade();
    // One steward, plus the outsider, plus a second approval by the same steward, plus
    // an approval of another version, plus approvals of this one that do not name the
    // version they replace, or name another (an old approval, replayed to roll back
    // to `next` later): not a quorum.
    let other = nexus_contract::contract_hash(b"other");
    let some = vec![
        approve(&s1, &next, T0),
        approve(&outsider, &next, T0),
        approve(&s1, &next, T0 + 1),
        approve(&s2, &other, T0),
        approve_body(&s2, json!({"contract": next.to_hex()}), T0),
        approve_body(
            &s3,
            json!({"contract": next.to_hex(), "replaces": other.to_hex()}),
            T0,
        ),
    ];
    let err = policy
        .authorize(&s1.author(), &contract.hash(), &next, &some)
        .expect_err("no quorum");
    assert_eq!(
        err.to_string(),
        format!(
            "upgrade to {next} needs approvals from 2 distinct allowed keys under governance/upgrade; found 1"
        )
    );
    let mut enough = some.clone();
    enough.push(approve(&s3, &next, T0 + 2));
    let counted = policy
        .authorize(&outsider.author(), &contract.hash(), &next, &enough)
        .expect("quorum");
    assert_eq!(counted, vec![enough[0].0, enough[6].0]);

    // A steward freezes a topic; an outsider's freeze does nothing.
    lab.submit_fact(
        &outsider,
        fact(&outsider, "governance/freeze", json!({"topic": "chem"}), T0),
    );
    assert!(lab.play(T0).is_empty());
    lab.submit_fact(
        &s2,
        fact(
            &s2,
            "governance/freeze",
            json!({"topic": "chem/toxicity"}),
            T0 + 1,
        ),
    );
    assert_eq!(lab.play(T0 + 1).len(), 1);
    assert!(matches!(
        lab.propose(&outsider, "chem/toxicity/lead", json!({}), T0 + 2),
        Err(CoreError::Inadmissible { .. })
    ));
    lab.propose(&outsider, "chem/solubility", json!({}), T0 + 2)
        .expect("not frozen");
}
