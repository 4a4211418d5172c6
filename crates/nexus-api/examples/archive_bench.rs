//! BENCHMARKS.md §11: archive throughput and restore time on memory stores.
//!
//! `cargo run --release -p nexus-api --example archive_bench -- 100000`
//!
//! Writes N log entries (rounds of propose → claim → resolve) through the core, then
//! times (a) archiving them in windows of 1,000 entries (`FlushCapable::flush`: read the
//! log, encode the lines, hash, write archive + manifest, re-write the index entries,
//! move the cursor), and (b) `from_snapshot_with_cold` into an empty store, once with
//! no snapshot (every entry replayed) and once with a snapshot at the end (every entry
//! loaded as committed).

#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::time::Instant;

use nexus_api::restore::from_snapshot_with_cold;
use nexus_core::archive::{WindowPolicy, keys};
use nexus_core::{
    Action, ActionContent, CompositeColdStorage, Content, Fact, FlushCapable, Intent, Limits,
    Record, Resolves, SigningKey,
};
use nexus_store::{BlobStore, MemoryStore};
use serde_json::json;

const T0: u64 = 1_764_000_000_000;

fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(100_000);
    let limits = Limits::default();
    let store = MemoryStore::new();
    let core = CompositeColdStorage::unified(store.clone(), limits.clone());
    let dep = "bench".parse().unwrap();
    core.init_deployment(&dep).unwrap();
    let k = SigningKey::from_seed(&[3; 32]);
    let mut written = 0;
    let mut i = 0u64;
    while written < n {
        let t = T0 + i;
        let topic = format!("bench/{}", i % 16).parse().unwrap();
        let intent = Record::sign(
            Content::Intent(Intent {
                topic: format!("bench/{}", i % 16).parse().unwrap(),
                body: json!({"i": i}),
                parents: vec![],
                author: k.author(),
                time: t,
            }),
            &k,
            &limits,
        )
        .unwrap();
        core.submit(&intent, t).unwrap();
        let claim = Action::sign(
            ActionContent::Claim {
                intent: intent.hash(),
                lease_ms: 30_000,
                author: k.author(),
                deployment: Some(dep.clone()),
                time: t,
            },
            &k,
            &limits,
        )
        .unwrap();
        core.act(&claim, t).unwrap();
        let fact = Record::sign(
            Content::Fact(Fact {
                topic,
                body: json!({"done": i}),
                parents: vec![intent.hash()],
                resolves: Some(Resolves {
                    intent: intent.hash(),
                    token: 1,
                }),
                author: k.author(),
                time: t,
            }),
            &k,
            &limits,
        )
        .unwrap();
        core.submit(&fact, t).unwrap();
        written += 3;
        i += 1;
    }
    let policy = WindowPolicy {
        max_entries: 1_000,
        max_age_ms: 0,
    };
    let start = Instant::now();
    let mut windows = 0;
    while core.flush(&policy, T0 + i).unwrap().window.is_some() {
        windows += 1;
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "archive: {written} entries in {windows} windows, {secs:.2} s = {:.0} entries/s",
        written as f64 / secs
    );

    let restore = |label: &str| {
        let target = CompositeColdStorage::unified(MemoryStore::new(), limits.clone());
        let start = Instant::now();
        let r = from_snapshot_with_cold(&store, &target, |_, _| {}).unwrap();
        let secs = start.elapsed().as_secs_f64();
        println!(
            "restore ({label}): {} entries, {} replayed, {secs:.2} s = {:.0} entries/s",
            r.entries,
            r.replayed,
            r.entries as f64 / secs
        );
    };
    restore("no snapshot");
    let state = core.capture_hot_state(1).unwrap().unwrap();
    core.write_snapshot(&state, T0 + i).unwrap();
    let chunks = store
        .list_blobs(keys::SNAPSHOT_PREFIX, None, 10_000)
        .unwrap()
        .len()
        - 1;
    println!("snapshot: head {}, {chunks} chunks", state.head);
    restore("snapshot at the head");
}
