//! Same Facts → same Hints, whatever order the commit log allowed them in.
//!
//! Facts whose commits were concurrent can land in the log in any order, subject only
//! to provenance (a Fact's parents commit before it). For small sets every such order
//! is tried; for larger ones, random orders. Each must end with exactly the Hints (the
//! same records, byte for byte) of the evaluation in time order, and folding the
//! deltas the evaluator returned along the way must yield the same set (what a host
//! that stores the deltas ends up with).

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;

use common::{T0, key, sign};
use nexus_contract::{Contract, Evaluator};
use nexus_core::{Content, Fact, FihHash};
use proptest::prelude::*;
use serde_json::json;

const CONTRACT: &str = r#"
contract = "determinism"

[[rule]]
name = "window"
topic = "lab/**"
where = "fact.body.status == 'failed'"
group = "fact.topic"
threshold = 3
within = "10s"
emit = { effect = "deny", topic = "${group}/**", reason = "${size(facts)} failures, last by ${fact.author}", expires = "1m" }

[[rule]]
name = "first-two"
topic = "lab/a"
threshold = 2
emit = { effect = "priority", priority = 3, topic = "lab/a/**", reason = "first two: ${facts[0].hash} ${facts[1].hash}" }

[[rule]]
name = "each-ok"
topic = "lab/*"
where = "fact.body.status == 'ok' && size(fact.parents) > 0"
group = "fact.hash"
emit = { effect = "allow", body = { extends = "${fact.parents[0]}", n = "${fact.body.n}" }, reason = "ok at ${fact.time}" }

[[rule]]
name = "by-author"
topic = "**"
group = "fact.author"
threshold = 2
within = "5s"
emit = { effect = "priority", priority = -1, reason = "busy author ${group}" }
"#;

fn contract() -> Arc<Contract> {
    Arc::new(Contract::parse("determinism.nex", CONTRACT).unwrap_or_else(|e| panic!("{e}")))
}

/// (topic index, failed?, time offset in s, author, parent index or none)
type Spec = (usize, bool, u64, u8, Option<usize>);

fn facts_of(specs: &[Spec]) -> Vec<(FihHash, Fact)> {
    let topics = ["lab/a", "lab/b", "lab/b/c", "other"];
    let mut out: Vec<(FihHash, Fact)> = Vec::new();
    for (i, &(t, failed, dt, who, parent)) in specs.iter().enumerate() {
        let k = key(who);
        let parents = parent
            .filter(|&p| p < i)
            .map(|p| vec![out[p].0])
            .unwrap_or_default();
        let fact = Fact {
            topic: topics[t % topics.len()].parse().expect("topic"),
            body: json!({"status": if failed {"failed"} else {"ok"}, "n": i}),
            parents,
            resolves: None,
            author: k.author(),
            time: T0 + dt * 1_000,
        };
        let rec = sign(Content::Fact(fact.clone()), &k);
        out.push((rec.hash(), fact));
    }
    out
}

/// Evaluates in `order`; answers the final Hint records (canonical JSON) and checks
/// that the folded deltas agree with them.
fn run(facts: &[(FihHash, Fact)], order: &[usize]) -> BTreeSet<Vec<u8>> {
    let mut eval = Evaluator::new(contract());
    let mut folded: BTreeSet<FihHash> = BTreeSet::new();
    for &i in order {
        let (h, f) = &facts[i];
        let d = eval.add_fact(*h, f);
        for gone in &d.removed {
            assert!(folded.remove(gone), "removed a Hint that was not there");
        }
        for added in &d.added {
            assert!(folded.insert(added.hash()), "added a Hint twice");
        }
    }
    // Facts handed over again (a host catching up with a log it partly saw) change nothing.
    for &i in order {
        let (h, f) = &facts[i];
        assert!(
            eval.add_fact(*h, f).is_empty(),
            "a Fact added twice changed the Hints"
        );
    }
    let now: BTreeSet<FihHash> = eval.hints().map(|r| r.hash()).collect();
    assert_eq!(folded, now, "folded deltas disagree with the evaluator");
    assert_eq!(
        eval.errors().count(),
        0,
        "{:?}",
        eval.errors().collect::<Vec<_>>()
    );
    eval.hints().map(|r| r.to_json()).collect()
}

/// Whether `order` puts every Fact after its parents (what the log allows).
fn allowed(facts: &[(FihHash, Fact)], order: &[usize]) -> bool {
    let mut seen = BTreeSet::new();
    for &i in order {
        if facts[i].1.parents.iter().any(|p| !seen.contains(p)) {
            return false;
        }
        seen.insert(facts[i].0);
    }
    true
}

fn permutations(n: usize) -> Vec<Vec<usize>> {
    if n == 0 {
        return vec![vec![]];
    }
    let mut out = Vec::new();
    for p in permutations(n - 1) {
        for at in 0..=p.len() {
            let mut q = p.clone();
            q.insert(at, n - 1);
            out.push(q);
        }
    }
    out
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        0..4usize,
        any::<bool>(),
        0..20u64,
        1..4u8,
        proptest::option::of(0..40usize),
    )
}

/// Time order (then hash): the reference.
fn by_time(facts: &[(FihHash, Fact)]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..facts.len()).collect();
    order.sort_by_key(|&i| (facts[i].1.time, facts[i].0));
    // Parents first where a parent is later in time: a stable topological repair.
    let mut out = Vec::new();
    let mut placed = BTreeSet::new();
    while out.len() < order.len() {
        for &i in &order {
            if !placed.contains(&i)
                && facts[i].1.parents.iter().all(|p| {
                    facts
                        .iter()
                        .position(|(h, _)| h == p)
                        .is_some_and(|j| placed.contains(&j))
                })
            {
                placed.insert(i);
                out.push(i);
            }
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

    #[test]
    fn every_allowed_order_of_a_small_set_gives_the_same_hints(specs in proptest::collection::vec(spec(), 1..=6)) {
        let facts = facts_of(&specs);
        let reference = run(&facts, &by_time(&facts));
        let mut tried = 0;
        for order in permutations(facts.len()) {
            if allowed(&facts, &order) {
                tried += 1;
                prop_assert_eq!(&run(&facts, &order), &reference);
            }
        }
        prop_assert!(tried >= 1);
    }

    #[test]
    fn random_orders_of_larger_sets_give_the_same_hints(
        specs in proptest::collection::vec(spec(), 8..=40),
        seeds in proptest::collection::vec(any::<u64>(), 4),
    ) {
        let facts = facts_of(&specs);
        let reference = run(&facts, &by_time(&facts));
        for seed in seeds {
            // A random allowed order: repeatedly take a pseudo-random ready Fact.
            let mut state = seed | 1;
            let mut left: Vec<usize> = (0..facts.len()).collect();
            let mut order = Vec::new();
            let mut seen = BTreeSet::new();
            while !left.is_empty() {
                let ready: Vec<usize> = left
                    .iter()
                    .copied()
                    .filter(|&i| facts[i].1.parents.iter().all(|p| seen.contains(p)))
                    .collect();
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let pick = ready[(state % ready.len() as u64) as usize];
                left.retain(|&i| i != pick);
                seen.insert(facts[pick].0);
                order.push(pick);
            }
            prop_assert_eq!(&run(&facts, &order), &reference);
        }
    }
}

#[test]
fn hints_appear_for_these_facts() {
    // Guards the property tests against a contract that never fires: three failures
    // under lab/b within 10 s, two Facts under lab/a, an ok Fact with a parent.
    let specs: Vec<Spec> = vec![
        (1, true, 0, 1, None),
        (1, true, 4, 2, None),
        (1, true, 9, 3, None),
        (0, false, 1, 1, None),
        (0, false, 30, 2, Some(0)),
    ];
    let facts = facts_of(&specs);
    let hints = run(&facts, &by_time(&facts));
    let rules: BTreeSet<String> = hints
        .iter()
        .map(|j| {
            let v: serde_json::Value = serde_json::from_slice(j).expect("json");
            v["source"]["rule"].as_str().unwrap_or_default().to_owned()
        })
        .collect();
    let want: BTreeSet<String> = ["window", "first-two", "each-ok", "by-author"]
        .map(String::from)
        .into();
    assert_eq!(rules, want);
}
