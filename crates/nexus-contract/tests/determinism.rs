//! Same log → same Hints; the times authors state decide nothing; state stays bounded.
//!
//! The evaluator takes a log: Facts in commit order, each with its commit time. These
//! properties hold for random logs: replaying a log gives the same Hint records byte for
//! byte; folding the deltas gives what the evaluator holds (up to Hints that expired and
//! were swept); rewriting every Fact's stated `time` changes no Hint's effect, selector,
//! time or expiry; the window rule matches a plain reference fold written from
//! spec/contract.md §4; and the evaluator keeps fewer than `threshold` Facts per group,
//! each within its rule's window of the newest commit time.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use common::{T0, key, sign};
use nexus_contract::{Contract, Evaluator};
use nexus_core::{Content, Fact, FihHash, Hint};
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
emit = { effect = "priority", priority = 3, topic = "lab/a/**", reason = "two: ${facts[0].hash} ${facts[1].hash}" }

[[rule]]
name = "each-ok"
topic = "lab/*"
where = "fact.body.status == 'ok'"
group = "fact.body.n"
emit = { effect = "allow", body = { n = "${fact.body.n}" }, reason = "ok at ${fact.at}" }

[[rule]]
name = "by-author"
topic = "**"
group = "fact.author"
threshold = 2
within = "5s"
emit = { effect = "priority", priority = -1, reason = "busy author ${group}", expires = "30s" }
"#;

const WINDOW_MS: u64 = 10_000;

fn contract() -> Arc<Contract> {
    Arc::new(Contract::parse("determinism.nex", CONTRACT).unwrap_or_else(|e| panic!("{e}")))
}

/// (topic index, failed?, commit-time step in ms, author, stated time offset in s)
type Spec = (usize, bool, u64, u8, u64);

/// One log entry: the Fact's hash, the Fact, its commit time.
type Entry = (FihHash, Fact, u64);

const TOPICS: [&str; 4] = ["lab/a", "lab/b", "lab/b/c", "other"];

/// A log from `specs`: commit times grow by each spec's step (a step of 0 is two
/// commits in the same millisecond); `stated` maps a spec to the time its author
/// writes in the Fact, which must not matter.
fn log_of(specs: &[Spec], stated: impl Fn(usize, &Spec) -> u64) -> Vec<Entry> {
    let mut at = T0;
    specs
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let &(t, failed, step, who, _) = s;
            at += step;
            let k = key(who);
            let fact = Fact {
                topic: TOPICS[t % TOPICS.len()].parse().expect("topic"),
                body: json!({"status": if failed {"failed"} else {"ok"}, "n": i}),
                parents: vec![],
                resolves: None,
                author: k.author(),
                time: stated(i, s),
            };
            (sign(Content::Fact(fact.clone()), &k).hash(), fact, at)
        })
        .collect()
}

/// What one evaluation of a log ends with.
struct Outcome {
    /// The evaluator's Hint records (canonical JSON).
    records: BTreeSet<Vec<u8>>,
    hints: Vec<Hint>,
}

fn run(log: &[Entry]) -> Outcome {
    let mut eval = Evaluator::new(contract());
    let mut folded: BTreeMap<FihHash, Hint> = BTreeMap::new();
    for (h, f, at) in log {
        let d = eval.add_fact(*h, f, *at);
        for gone in &d.removed {
            assert!(
                folded.remove(gone).is_some(),
                "removed a Hint that was not there"
            );
        }
        for added in &d.added {
            let Content::Hint(hint) = added.content() else {
                panic!("not a hint")
            };
            assert!(
                folded.insert(added.hash(), hint.clone()).is_none(),
                "added twice"
            );
        }
        check_bounded(&eval);
    }
    // What the host holds (the folded deltas) is what the evaluator holds, once the
    // Hints that expired by the newest commit time are set aside (the sweep forgets
    // them; they do nothing).
    let live = |h: &Hint| h.expires.is_none_or(|e| e >= eval.watermark());
    let held: BTreeSet<FihHash> = eval
        .hints()
        .filter(|r| matches!(r.content(), Content::Hint(h) if live(h)))
        .map(|r| r.hash())
        .collect();
    let folded_live: BTreeSet<FihHash> = folded
        .iter()
        .filter(|(_, h)| live(h))
        .map(|(k, _)| *k)
        .collect();
    assert_eq!(
        held, folded_live,
        "folded deltas disagree with the evaluator"
    );
    assert_eq!(
        eval.errors().count(),
        0,
        "{:?}",
        eval.errors().collect::<Vec<_>>()
    );
    Outcome {
        records: eval.hints().map(|r| r.to_json()).collect(),
        hints: eval
            .hints()
            .filter_map(|r| match r.content() {
                Content::Hint(h) => Some(h.clone()),
                _ => None,
            })
            .collect(),
    }
}

/// Fewer than `threshold` Facts per group, checked through the count: the runs of the 4
/// rules hold at most 2 (per topic), 1, 0 and 1 (per author) Facts, and there are at
/// most 4 topics and 3 authors.
fn check_bounded(eval: &Evaluator) {
    assert!(
        eval.fact_count() <= 2 * TOPICS.len() + 1 + 3,
        "{} Facts kept",
        eval.fact_count()
    );
}

/// What a Hint decides, whoever's Facts triggered it.
fn effect_of(h: &Hint) -> String {
    format!(
        "{:?} {:?} {:?} {:?} {:?}",
        h.selector,
        h.effect,
        h.expires,
        h.time,
        h.source.as_ref().and_then(|s| s.rule.clone())
    )
}

/// The window rule as spec/contract.md §4 states it, folded from scratch: per group, the
/// open run since the last trigger, window reckoned from the newest commit time seen.
fn reference_window(log: &[Entry]) -> BTreeSet<Vec<FihHash>> {
    let mut newest = 0;
    let mut runs: BTreeMap<String, Vec<(u64, FihHash)>> = BTreeMap::new();
    let mut last: BTreeMap<String, Vec<FihHash>> = BTreeMap::new();
    for (h, f, at) in log {
        newest = newest.max(*at);
        if !f.topic.as_str().starts_with("lab/") || f.body["status"] != "failed" {
            continue;
        }
        let run = runs.entry(f.topic.as_str().to_owned()).or_default();
        run.push((*at, *h));
        run.retain(|(t, _)| t + WINDOW_MS >= newest);
        if run.len() == 3 {
            last.insert(
                f.topic.as_str().to_owned(),
                run.drain(..).map(|(_, h)| h).collect(),
            );
        }
    }
    // The rule's Hints expire 1 min after their trigger; those still live at the end.
    last.into_values()
        .filter(|facts| {
            let at = log
                .iter()
                .find(|(h, _, _)| Some(h) == facts.last())
                .map(|e| e.2);
            at.is_some_and(|a| a + 60_000 >= newest)
        })
        .collect()
}

fn spec() -> impl Strategy<Value = Spec> {
    (0..4usize, any::<bool>(), 0..6_000u64, 1..4u8, 0..100_000u64)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn a_log_replays_to_the_same_hints(specs in proptest::collection::vec(spec(), 1..=60)) {
        let log = log_of(&specs, |_, s| T0 + s.4);
        prop_assert_eq!(run(&log).records, run(&log).records);
    }

    #[test]
    fn stated_times_decide_nothing(specs in proptest::collection::vec(spec(), 1..=60)) {
        let honest = log_of(&specs, |i, _| T0 + i as u64);
        // Backdated to 1970 and dated decades ahead, alternately.
        let lying = log_of(&specs, |i, s| if i % 2 == 0 { 1_000 + s.4 } else { 9_007_199_254_740_991 - s.4 });
        let a: Vec<String> = run(&honest).hints.iter().map(effect_of).collect();
        let b: Vec<String> = run(&lying).hints.iter().map(effect_of).collect();
        let (mut a, mut b) = (a, b);
        a.sort();
        b.sort();
        prop_assert_eq!(a, b);
    }

    #[test]
    fn the_window_rule_is_the_reference_fold(specs in proptest::collection::vec(spec(), 1..=80)) {
        let log = log_of(&specs, |_, s| s.4);
        let got: BTreeSet<Vec<FihHash>> = run(&log)
            .hints
            .iter()
            .filter(|h| h.source.as_ref().and_then(|s| s.rule.as_deref()) == Some("window"))
            .filter(|h| h.expires.is_some_and(|e| e >= log.last().map_or(0, |l| l.2)))
            .filter_map(|h| h.source.as_ref().map(|s| s.facts.clone()))
            .collect();
        prop_assert_eq!(got, reference_window(&log));
    }
}

#[test]
fn hints_appear_for_these_facts() {
    // Guards the property tests against a contract that never fires: three failures
    // under lab/b within 10 s, two Facts under lab/a, an ok Fact, one author twice in 5 s.
    let specs: Vec<Spec> = vec![
        (1, true, 0, 1, 0),
        (1, true, 4_000, 2, 0),
        (1, true, 5_000, 3, 0),
        (0, false, 1_000, 1, 0),
        (0, false, 1_000, 1, 0),
    ];
    let log = log_of(&specs, |_, s| s.4);
    let rules: BTreeSet<String> = run(&log)
        .hints
        .iter()
        .filter_map(|h| h.source.as_ref().and_then(|s| s.rule.clone()))
        .collect();
    let want: BTreeSet<String> = ["window", "first-two", "each-ok", "by-author"]
        .map(String::from)
        .into();
    assert_eq!(rules, want);
}

#[test]
fn a_group_re_arms_after_its_trigger() {
    // Six failures under lab/b, 1 s apart: two triggers; the second Hint replaces the
    // first and is dated (and expires) from the sixth Fact's commit time.
    let specs: Vec<Spec> = (0..6).map(|_| (1, true, 1_000, 1, 0)).collect();
    let log = log_of(&specs, |_, _| 0);
    let window: Vec<Hint> = run(&log)
        .hints
        .into_iter()
        .filter(|h| h.source.as_ref().and_then(|s| s.rule.as_deref()) == Some("window"))
        .collect();
    assert_eq!(window.len(), 1, "{window:?}");
    let sixth = log[5].2;
    assert_eq!(window[0].time, sixth);
    assert_eq!(window[0].expires, Some(sixth + 60_000));
    let facts = window[0].source.as_ref().map(|s| s.facts.clone());
    assert_eq!(facts, Some(vec![log[3].0, log[4].0, log[5].0]));
}
