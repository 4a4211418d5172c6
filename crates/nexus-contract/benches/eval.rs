//! Criterion bench of contract evaluation (see `BENCHMARKS.md`):
//!
//! * `eval/add_fact_100_rules_100k_facts` — the cost of evaluating one newly committed
//!   Fact with a 100-rule contract whose evaluator already holds 100,000 Facts, on the
//!   in-memory evaluator (incremental: only the rules whose topic the Fact matches run).
//!   Every rule has a CEL `where`, a CEL `group`, a threshold and a time window, and
//!   emits a Hint through templates; a tenth of the Facts match `where`, so Hints are
//!   emitted (and replaced) during the run.
//! * `eval/rescan_one_rule` — for scale, what a non-incremental evaluator would pay
//!   for one rule alone: re-running its `where` over the 1,000 Facts under its topic.
//! * `eval/add_fact_at_the_contract_bound` — the worst a contract may cost on one Fact:
//!   as many rules as fit `MAX_CONTRACT_STEPS` that each walk the Fact's 30,000-item
//!   list (`fact.body.l.exists(x, x == 7)`, no match), the Fact reaching every rule.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use nexus_contract::{Contract, Evaluator};
use nexus_core::{Fact, FihHash, SigningKey};
use serde_json::json;

const RULES: usize = 100;
const FACTS: u64 = 100_000;
const T0: u64 = 1_764_000_000_000;

fn contract() -> Arc<Contract> {
    let mut src = String::from("contract = \"bench\"\n");
    for i in 0..RULES {
        src.push_str(&format!(
            r#"
[[rule]]
name = "budget-{i}"
topic = "area{i}/**"
where = "fact.body.status == 'failed' && fact.body.cost > 10"
group = "fact.topic"
threshold = 5
within = "6h"
emit = {{ effect = "deny", topic = "${{group}}/**", reason = "budget spent under ${{group}}: ${{size(facts)}} failures", expires = "1d" }}
"#
        ));
    }
    Arc::new(Contract::parse("bench.nex", &src).unwrap_or_else(|e| panic!("{e}")))
}

/// The n-th Fact: spread over the 100 areas and 10 subtopics each, one a second,
/// a tenth of them failed.
fn fact(n: u64, author: &SigningKey) -> (FihHash, Fact) {
    let area = n % RULES as u64;
    let sub = (n / RULES as u64) % 10;
    let failed = n % 10 == 3;
    let f = Fact {
        topic: format!("area{area}/exp{sub}").parse().expect("topic"),
        body: json!({"status": if failed {"failed"} else {"ok"}, "cost": 10 + n % 7, "n": n}),
        parents: vec![],
        resolves: None,
        author: author.author(),
        time: T0 + n * 1_000,
    };
    // The evaluator trusts the host for hashes (the core checked them); a unique
    // stand-in keeps signing out of the measurement.
    (FihHash(*blake3::hash(&n.to_le_bytes()).as_bytes()), f)
}

/// A contract of as many list-walking rules as fit the contract's budget, and how many.
fn at_the_bound() -> (Arc<Contract>, u64) {
    let rule = |i: u64| {
        format!(
            "\n[[rule]]\nname = \"walk-{i}\"\ntopic = \"lab/**\"\nwhere = \"fact.body.l.exists(x, x == 7)\"\nemit = {{ effect = \"deny\", reason = \"a seven\" }}\n"
        )
    };
    let one =
        Contract::parse("one.nex", &format!("contract = \"walk\"\n{}", rule(0))).expect("one rule");
    let n = nexus_contract::MAX_CONTRACT_STEPS / one.rules()[0].cost();
    let src: String = (0..n).map(rule).collect();
    let c =
        Contract::parse("walk.nex", &format!("contract = \"walk\"\n{src}")).expect("at the bound");
    (Arc::new(c), n)
}

fn bench(c: &mut Criterion) {
    let author = SigningKey::from_seed(&[7; 32]);
    let mut eval = Evaluator::new(contract());
    for n in 0..FACTS {
        let (h, f) = fact(n, &author);
        eval.add_fact(h, &f, f.time);
    }
    let hints_before = eval.hints().count();
    eprintln!(
        "setup: {} rules, {FACTS} Facts added ({} kept in open runs), {hints_before} Hints emitted, {} rule errors",
        RULES,
        eval.fact_count(),
        eval.errors().count()
    );
    assert!(hints_before > 0, "the bench contract must emit Hints");
    let mut next = FACTS;
    let mut g = c.benchmark_group("eval");
    g.measurement_time(Duration::from_secs(4));
    g.bench_function("add_fact_100_rules_100k_facts", |b| {
        b.iter_custom(|iters| {
            let batch: Vec<(FihHash, Fact)> =
                (next..next + iters).map(|n| fact(n, &author)).collect();
            next += iters;
            let start = Instant::now();
            for (h, f) in &batch {
                black_box(eval.add_fact(*h, f, f.time));
            }
            start.elapsed()
        })
    });
    // One rule's Facts re-evaluated from scratch: what a rescan would cost per rule.
    let one = contract();
    let under: Vec<(FihHash, Fact)> = (0..FACTS)
        .filter(|n| n % RULES as u64 == 0)
        .map(|n| fact(n, &author))
        .collect();
    g.bench_function("rescan_one_rule", |b| {
        b.iter(|| {
            let mut fresh = Evaluator::new(Arc::clone(&one));
            for (h, f) in &under {
                black_box(fresh.add_fact(*h, f, f.time));
            }
        })
    });
    let (at, rules) = at_the_bound();
    let mut walker = Evaluator::new(at);
    let body = json!({"l": vec![1; 30_000]});
    let mut n = 0u64;
    eprintln!("at the bound: {rules} walking rules");
    g.bench_function("add_fact_at_the_contract_bound", |b| {
        b.iter(|| {
            n += 1;
            let f = Fact {
                topic: "lab/walk".parse().expect("topic"),
                body: body.clone(),
                parents: vec![],
                resolves: None,
                author: author.author(),
                time: T0 + n,
            };
            let h = FihHash(*blake3::hash(&n.to_le_bytes()).as_bytes());
            black_box(walker.add_fact(h, &f, f.time))
        })
    });
    g.finish();
    eprintln!(
        "after: {} Facts kept, {} Hints",
        eval.fact_count(),
        eval.hints().count()
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
