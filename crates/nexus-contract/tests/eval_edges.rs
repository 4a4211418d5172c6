//! Evaluator edge cases: values records cannot hold, failing templates, budgets.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;

use common::{T0, fact, key, sign};
use nexus_contract::{Contract, Evaluator};
use nexus_core::{Content, Fact, FihHash, Record};
use serde_json::json;

fn contract(src: &str) -> Arc<Contract> {
    Arc::new(Contract::parse("edges.nex", src).unwrap_or_else(|e| panic!("{e}")))
}

fn hash_of(f: &Fact) -> FihHash {
    sign(Content::Fact(f.clone()), &key(1)).hash()
}

fn hint_bodies(eval: &Evaluator) -> Vec<serde_json::Value> {
    eval.hints()
        .map(|r: &Record| match r.content() {
            Content::Hint(h) => json!(h.selector.body),
            _ => panic!("not a hint"),
        })
        .collect()
}

/// `{1: …, '1': …}` would give JSON one key "1" twice; which value won followed a
/// hash map's per-process order, so evaluators disagreed on the signed Hint. Now
/// a key other than a string is an evaluation error, the same for every evaluator.
#[test]
fn map_keys_that_are_not_strings_are_refused_the_same_way_everywhere() {
    let c = contract(
        r#"
contract = "keys"

[[rule]]
name = "clash"
topic = "lab/**"
emit = { effect = "deny", reason = "r", body = { m = "${ {fact.body.n: 'int', '1': 'string', fact.body.b: 'bool'} }" } }

[[rule]]
name = "sorted"
topic = "lab/**"
emit = { effect = "deny", reason = "r", body = { m = "${ {'b': 2, 'a': 1, 'c': fact.body.n} }" } }
"#,
    );
    let f = fact(&key(1), "lab/x", json!({"n": 1, "b": true}), T0);
    let hash = hash_of(&f);
    let mut seen = BTreeSet::new();
    for _ in 0..16 {
        let mut eval = Evaluator::new(Arc::clone(&c));
        eval.add_fact(hash, &f, f.time);
        let errors: Vec<String> = eval.errors().map(|e| e.to_string()).collect();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].contains("rule `clash`"), "{errors:?}");
        assert!(errors[0].contains("map key must be a string"), "{errors:?}");
        assert_eq!(
            hint_bodies(&eval),
            vec![json!({"m": {"a": 1, "b": 2, "c": 1}})]
        );
        seen.insert(format!("{errors:?} {:?}", hint_bodies(&eval)));
    }
    assert_eq!(seen.len(), 1, "{seen:?}");
}

/// A later Fact fires the rule again, and the Hint for it cannot be built (its template
/// reads a member the Fact lacks): the old Hint must still be reported removed, as a
/// replay of the same log never holds it.
#[test]
fn a_replaced_hint_is_removed_even_when_its_successor_fails_to_build() {
    let c = contract(
        r#"
contract = "stale"

[[rule]]
name = "area"
topic = "lab/**"
emit = { effect = "deny", topic = "${fact.body.area}/**", reason = "r" }
"#,
    );
    let a = fact(&key(1), "lab/x", json!({"area": "chem"}), 100);
    let b = fact(&key(1), "lab/x", json!({}), 50);
    let mut eval = Evaluator::new(Arc::clone(&c));
    let first = eval.add_fact(hash_of(&a), &a, T0);
    assert_eq!(first.added.len(), 1);
    let old = first.added[0].hash();
    let second = eval.add_fact(hash_of(&b), &b, T0 + 1);
    assert_eq!(second.removed, vec![old], "the old Hint must be removed");
    assert!(second.added.is_empty());
    assert_eq!(eval.hints().count(), 0);
    assert_eq!(eval.errors().count(), 1);

    let mut replay = Evaluator::new(c);
    replay.add_fact(hash_of(&a), &a, T0);
    replay.add_fact(hash_of(&b), &b, T0 + 1);
    assert_eq!(replay.hints().count(), 0);
    assert_eq!(replay.errors().count(), 1);
}

/// A rule over its step budget refuses every Fact alike (its static bound is checked
/// before anything is kept): a replay gives the same Hints, for budgets below, at and
/// above it.
#[test]
fn a_step_budget_gives_the_same_hints_on_every_replay() {
    let c = contract(
        r#"
contract = "budget"

[[rule]]
name = "pair"
topic = "lab/**"
threshold = 2
within = "10s"
emit = { effect = "deny", reason = "two" }
"#,
    );
    let cost = c.rules()[0].cost();
    assert_eq!(cost, 8);
    let early = fact(&key(1), "lab/x", json!({"n": 0}), T0);
    let late = fact(&key(1), "lab/x", json!({"n": 1}), T0 + 5_000);
    for max in [3, cost - 1, cost, nexus_contract::DEFAULT_MAX_STEPS] {
        let run = || {
            let mut eval = Evaluator::new(Arc::clone(&c)).with_max_steps(max);
            for f in [&early, &late] {
                eval.add_fact(hash_of(f), f, f.time);
            }
            let hints: Vec<FihHash> = eval.hints().map(|r| r.hash()).collect();
            (hints, eval.fact_count(), eval.errors().count())
        };
        let first = run();
        assert_eq!(first, run(), "budget {max}");
        assert_eq!(first.0.len(), usize::from(max >= cost), "budget {max}");
        assert_eq!(first.2, if max >= cost { 0 } else { 2 }, "budget {max}");
    }
}
