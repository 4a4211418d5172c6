//! A throughput model of N coordinator shards (issue 12): what sharding buys when
//! each Durable Object serves one call at a time.
//!
//! Local workerd runs every object in one process, so it cannot show scaling. The model
//! instead gives each shard object a fixed service time per call (one call at a time, in
//! arrival order, as a Durable Object's input gate serialises them) and a round trip
//! between a Worker and an object, and runs closed-loop clients that commit back to
//! back through the real [`CrossCommit`] over real [`MemoryStore`] shards, so the calls
//! counted are the protocol's own. A share of the commits are batches of two Intents
//! (a cross-shard commit whenever the two hashes fall on different shards); the rest
//! claim one Intent (one call). Time is simulated (integer microseconds): the run is
//! deterministic for its seed.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use nexus_shard::{CrossCommit, Lost, ShardMap, ShardStep};
use nexus_store::{CasOp, Commit, CommitOutcome, MemoryStore, ObjectStore};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// How one model run is set up.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ModelConfig {
    /// Coordinator shards.
    pub shards: usize,
    /// Service time of one call at a shard object, ms.
    pub service_ms: f64,
    /// Round trip between a Worker and an object, ms.
    pub rtt_ms: f64,
    /// Share of commits that are batches of two Intents.
    pub batch_share: f64,
    /// Closed-loop clients per shard.
    pub clients_per_shard: usize,
    /// Simulated time measured, ms (after the warm-up).
    pub duration_ms: f64,
    /// Simulated time before measuring, ms.
    pub warmup_ms: f64,
    /// Seed of the keys and of the batch choices.
    pub seed: u64,
}

impl Default for ModelConfig {
    /// 1 shard, 1 ms per call, 1 ms round trip, 10% batches, 16 clients per shard, 10 s
    /// measured after 1 s.
    fn default() -> Self {
        Self {
            shards: 1,
            service_ms: 1.0,
            rtt_ms: 1.0,
            batch_share: 0.1,
            clients_per_shard: 16,
            duration_ms: 10_000.0,
            warmup_ms: 1_000.0,
            seed: 12,
        }
    }
}

/// What one model run measured.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ModelResult {
    /// Shards.
    pub shards: usize,
    /// Commits finished in the measured window.
    pub commits: u64,
    /// Commits per second.
    pub per_second: f64,
    /// Commits decided on one shard, and their calls.
    pub single: (u64, u64),
    /// Commits over several shards, and their calls.
    pub cross: (u64, u64),
    /// Batches (two Intents) that fell on one shard.
    pub batches_on_one_shard: u64,
    /// Median and 99th percentile commit latency, ms.
    pub latency_ms: (f64, f64),
    /// Busy share of the busiest shard over the window.
    pub busiest: f64,
    /// Mean busy share of the shards over the window.
    pub mean_busy: f64,
}

struct Client {
    cc: Option<CrossCommit>,
    started: u64,
    answer: Option<(usize, CommitOutcome)>,
}

fn intent(rng: &mut ChaCha8Rng) -> String {
    let (a, b): (u128, u128) = (rng.r#gen(), rng.r#gen());
    format!("intent/{a:032x}{b:032x}")
}

fn new_commit(rng: &mut ChaCha8Rng, batch_share: f64) -> (Commit, bool) {
    let batch = rng.gen_bool(batch_share.clamp(0.0, 1.0));
    let ops = (0..if batch { 2 } else { 1 })
        .map(|_| CasOp {
            key: intent(rng),
            expected: None,
            new: Some(b"claimed".to_vec()),
        })
        .collect();
    (
        Commit::new(ops, vec![b"{\"type\":\"model\"}".to_vec()]),
        batch,
    )
}

/// Runs the model (see the module docs).
pub fn run_model(cfg: &ModelConfig) -> ModelResult {
    let us = |ms: f64| (ms * 1_000.0).round().max(0.0) as u64;
    let (service, half_rtt) = (us(cfg.service_ms).max(1), us(cfg.rtt_ms) / 2);
    let (warmup, end) = (us(cfg.warmup_ms), us(cfg.warmup_ms + cfg.duration_ms));
    let map = ShardMap::new(cfg.shards.max(1)).unwrap_or_default();
    let n = map.shards();
    let stores: Vec<MemoryStore> = (0..n).map(|_| MemoryStore::new()).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let mut busy_until = vec![0u64; n];
    let mut busy = vec![0u64; n];
    let mut heap = BinaryHeap::new();
    let mut clients: Vec<Client> = (0..cfg.clients_per_shard.max(1) * n)
        .map(|_| Client {
            cc: None,
            started: 0,
            answer: None,
        })
        .collect();
    for c in 0..clients.len() {
        heap.push(Reverse((c as u64, c)));
    }
    let mut out = ModelResult {
        shards: n,
        ..ModelResult::default()
    };
    let mut latencies = Vec::new();
    let mut nonce = 0u64;
    while let Some(Reverse((t, c))) = heap.pop() {
        if t > end {
            break;
        }
        let client = &mut clients[c];
        let cc = match client.cc.as_mut() {
            Some(cc) => cc,
            None => {
                let (commit, batch) = new_commit(&mut rng, cfg.batch_share);
                nonce += 1;
                let Ok(cc) = CrossCommit::new(&map, &commit, t / 1_000, nonce) else {
                    continue;
                };
                if batch && cc.split().is_single_shard() && t >= warmup {
                    out.batches_on_one_shard += 1;
                }
                client.started = t;
                client.cc.insert(cc)
            }
        };
        if let Some((shard, outcome)) = client.answer.take() {
            cc.feed(shard, Ok::<_, Lost>(outcome));
        }
        match cc.poll() {
            ShardStep::Call { shard, commit } => {
                let arrive = t + half_rtt;
                let start = arrive.max(busy_until[shard]);
                let outcome = stores[shard]
                    .commit(&commit)
                    .unwrap_or(CommitOutcome::Conflict(Vec::new()));
                busy_until[shard] = start + service;
                if start >= warmup && start < end {
                    busy[shard] += service;
                }
                client.answer = Some((shard, outcome));
                heap.push(Reverse((start + service + half_rtt, c)));
            }
            // The protocol's commits never read; nothing to model.
            ShardStep::Read { .. } => heap.push(Reverse((t + 1, c))),
            ShardStep::Done(_) => {
                if t >= warmup {
                    let calls = cc.stats().calls as u64;
                    if cc.split().is_single_shard() {
                        out.single.0 += 1;
                        out.single.1 += calls;
                    } else {
                        out.cross.0 += 1;
                        out.cross.1 += calls;
                    }
                    out.commits += 1;
                    latencies.push(t - client.started);
                }
                client.cc = None;
                heap.push(Reverse((t, c)));
            }
        }
    }
    latencies.sort_unstable();
    let pick = |q: f64| {
        latencies
            .get(((latencies.len() as f64 - 1.0) * q).round() as usize)
            .map_or(0.0, |&v| v as f64 / 1_000.0)
    };
    out.latency_ms = (pick(0.5), pick(0.99));
    let window = (end - warmup).max(1) as f64;
    out.per_second = out.commits as f64 / (window / 1e6);
    out.busiest = busy.iter().copied().max().unwrap_or(0) as f64 / window;
    out.mean_busy = busy.iter().sum::<u64>() as f64 / (window * n as f64);
    out
}

/// The model for each of `shards` with `base`'s other settings, as a Markdown table
/// (throughput, its ratio to the first row's × N, calls per commit, latency).
pub fn table(base: &ModelConfig, shards: &[usize]) -> String {
    let runs: Vec<ModelResult> = shards
        .iter()
        .map(|&n| run_model(&ModelConfig { shards: n, ..*base }))
        .collect();
    let one = runs.first().map_or(1.0, |r| r.per_second.max(1e-9));
    let mut s = String::from(
        "| N | commits/s | vs N × (N = 1) | single-shard commits (calls each) | cross-shard commits (calls each) | batches on one shard | p50 / p99 ms | shards busy (mean, busiest) |\n|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    let avg = |(k, calls): (u64, u64)| {
        if k == 0 {
            "—".to_owned()
        } else {
            format!("{:.2}", calls as f64 / k as f64)
        }
    };
    for r in &runs {
        s.push_str(&format!(
            "| {} | {:.0} | {:.2} | {} ({}) | {} ({}) | {} | {:.2} / {:.2} | {:.0}%, {:.0}% |\n",
            r.shards,
            r.per_second,
            r.per_second / (one * r.shards as f64),
            r.single.0,
            avg(r.single),
            r.cross.0,
            avg(r.cross),
            r.batches_on_one_shard,
            r.latency_ms.0,
            r.latency_ms.1,
            r.mean_busy * 100.0,
            r.busiest * 100.0
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_shard_serves_one_call_per_service_time_and_shards_scale() {
        let base = ModelConfig {
            duration_ms: 2_000.0,
            warmup_ms: 200.0,
            ..ModelConfig::default()
        };
        let one = run_model(&base);
        // 1 ms per call, every commit one call: about 1,000 commits/s, the object
        // always busy.
        assert!((950.0..=1_001.0).contains(&one.per_second), "{one:?}");
        assert_eq!(one.cross.0, 0);
        let four = run_model(&ModelConfig { shards: 4, ..base });
        assert!(four.cross.0 > 0);
        assert_eq!(four.cross.1, 3 * four.cross.0, "2-shard commits: 3 calls");
        assert!(four.per_second > 3.2 * one.per_second, "{four:?}");
        assert_eq!(run_model(&base), one, "deterministic");
    }
}
