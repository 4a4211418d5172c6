//! What contract governance adds to a committed Fact, through the API's reference
//! driver (`Api::run_sync`) on the in-memory store (see `BENCHMARKS.md` §3):
//!
//! * `governance/fact_no_contract` — `POST /v1/facts` with no contract deployed;
//! * `governance/fact_100_rules` — the same with a 100-rule contract in force and
//!   10,000 Facts already evaluated: the request plus the governor's catch-up (which
//!   contract is in force, the new log entries, evaluating the rules the Fact's topic
//!   touches, committing any Hint change).
//!
//! The Facts are signed in setup (outside the timed region); a tenth of them are
//! failures that count towards their rule's budget, so Hints are emitted during the run.

use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use nexus_api::{Api, ApiConfig, Request};
use nexus_core::{Content, Fact, Limits, Record, SigningKey};
use nexus_store::MemoryStore;
use serde_json::json;

const NOW: u64 = 1_764_000_000_000;
const RULES: usize = 100;
const PRELOAD: u64 = 10_000;

fn contract_source() -> String {
    let mut src = String::from("contract = \"bench\"\n");
    for i in 0..RULES {
        src.push_str(&format!(
            r#"
[[rule]]
name = "budget-{i}"
topic = "area{i}/**"
where = "fact.body.status == 'failed'"
group = "fact.topic"
threshold = 5
within = "6h"
emit = {{ effect = "deny", topic = "${{group}}/**", reason = "budget spent under ${{group}}" }}
"#
        ));
    }
    src
}

fn fact(key: &SigningKey, n: u64) -> Record {
    let f = Fact {
        topic: format!("area{}/exp{}", n % RULES as u64, (n / RULES as u64) % 10)
            .parse()
            .expect("topic"),
        body: json!({"status": if n % 10 == 3 {"failed"} else {"ok"}, "n": n}),
        parents: vec![],
        resolves: None,
        author: key.author(),
        time: NOW + n * 1_000,
    };
    Record::sign(Content::Fact(f), key, &Limits::default()).expect("fact")
}

fn post(api: &Api, store: &MemoryStore, path: &str, rec: &Record) {
    let r = api.run_sync(store, &Request::new("POST", path, rec.to_json()), NOW);
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
}

fn bench(c: &mut Criterion) {
    let key = SigningKey::from_seed(&[9; 32]);
    let mut g = c.benchmark_group("governance");
    g.measurement_time(Duration::from_secs(4)).sample_size(30);
    for with_contract in [false, true] {
        let api = Api::new(ApiConfig {
            open: true,
            ..ApiConfig::default()
        });
        let store = MemoryStore::new();
        if with_contract {
            let deploy = Record::sign(
                Content::Fact(Fact {
                    topic: "nexus/contract".parse().expect("topic"),
                    body: json!({"source": contract_source(), "expected": null}),
                    parents: vec![],
                    resolves: None,
                    author: key.author(),
                    time: NOW,
                }),
                &key,
                &Limits::default(),
            )
            .expect("deploy");
            post(&api, &store, "/v1/contract", &deploy);
        }
        for n in 0..PRELOAD {
            post(&api, &store, "/v1/facts", &fact(&key, n));
        }
        let hints = api
            .run_sync(&store, &Request::new("GET", "/v1/hints", vec![]), NOW)
            .json_body()["hints"]
            .as_array()
            .map_or(0, Vec::len);
        eprintln!("setup: contract {with_contract}, {PRELOAD} Facts, {hints} Hints active");
        assert_eq!(hints > 0, with_contract, "the contract must emit Hints");
        let mut next = PRELOAD;
        let name = if with_contract {
            "fact_100_rules"
        } else {
            "fact_no_contract"
        };
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let batch: Vec<Record> = (next..next + iters).map(|n| fact(&key, n)).collect();
                next += iters;
                let start = Instant::now();
                for rec in &batch {
                    post(&api, &store, "/v1/facts", rec);
                }
                start.elapsed()
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
