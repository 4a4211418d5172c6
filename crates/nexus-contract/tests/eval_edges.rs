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
        eval.add_fact(hash, &f);
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
