//! Evaluator memory per retained Fact, and that the window bounds what it retains.
//!
//! `cargo run -p nexus-contract --release --example eval_memory` prints, for Facts
//! with bodies of about 60 KB and of about 100 bytes: the heap the evaluator holds per
//! Fact kept in an open run (counted by dhat's global allocator), and how many it
//! keeps after a flood far larger than its window.

use std::sync::Arc;

use nexus_contract::{Contract, Evaluator};
use nexus_core::{Fact, FihHash, SigningKey};
use serde_json::json;

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

/// Live heap bytes now.
fn live() -> usize {
    dhat::HeapStats::get().curr_bytes
}

const CONTRACT: &str = r#"
contract = "memory"

[[rule]]
name = "pairs"
topic = "lab/**"
group = "fact.body.g"
threshold = 2
within = "1h"
emit = { effect = "deny", topic = "lab/**", reason = "two under ${group}", expires = "1h" }
"#;

fn fact(author: &SigningKey, g: u64, pad: usize, at: u64) -> (FihHash, Fact) {
    let f = Fact {
        topic: "lab/x".parse().expect("topic"),
        body: json!({"g": g, "pad": "x".repeat(pad)}),
        parents: vec![],
        resolves: None,
        author: author.author(),
        time: at,
    };
    (FihHash(*blake3::hash(&at.to_le_bytes()).as_bytes()), f)
}

fn main() {
    let _heap = dhat::Profiler::builder().testing().build();
    let contract = Arc::new(Contract::parse("memory.nex", CONTRACT).expect("contract"));
    let author = SigningKey::from_seed(&[9; 32]);
    const T0: u64 = 1_764_000_000_000;
    for pad in [60_000usize, 100] {
        // Distinct groups, one Fact each: every Fact stays in its group's open run.
        let n = if pad > 1_000 { 1_000 } else { 20_000 };
        let facts: Vec<(FihHash, Fact)> = (0..n).map(|i| fact(&author, i, pad, T0 + i)).collect();
        let wire = serde_json::to_vec(&facts[0].1).expect("json").len();
        let before = live();
        let mut eval = Evaluator::new(Arc::clone(&contract));
        for (h, f) in &facts {
            eval.add_fact(*h, f, f.time);
        }
        let held = live() - before;
        let kept = eval.fact_count();
        println!(
            "body pad {pad:>6} B (Fact JSON {wire} B): {kept} Facts kept, {} B of heap per kept Fact ({:.2}× its JSON)",
            held / kept.max(1),
            held as f64 / kept as f64 / wire as f64
        );
        // A flood two hours long, one Fact a second: only the last hour's stay.
        let mut eval = Evaluator::new(Arc::clone(&contract));
        let flood = 7_200u64;
        for i in 0..flood {
            let (h, f) = fact(&author, 1_000_000 + i, 10, T0 + i * 1_000);
            eval.add_fact(h, &f, T0 + i * 1_000);
        }
        println!(
            "  flood of {flood} Facts 1 s apart in distinct groups (window 1 h): {} kept",
            eval.fact_count()
        );
    }
}
