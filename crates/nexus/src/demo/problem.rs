//! The demo's problem, decided by the seed alone: find the minimum of a hidden function
//! over a few regions of integers. The search is split into Intents (one per chunk of a
//! region); a chunk wider than a leaf is resolved by a Fact that splits it in two
//! follow-up Intents, a leaf by a Fact with its minimum. Some regions are *cursed*:
//! every evaluation there fails, and the governance contract ([`CONTRACT`]) denies a
//! region after [`FAILURE_BUDGET`] failed runs. Some agents crash while holding a
//! chunk. Everything here is a pure function of the seed, so the summary is too.

use rand::seq::SliceRandom as _;
use rand::{Rng as _, SeedableRng as _};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// Points in each region.
pub const REGION_WIDTH: u64 = 1_024;
/// Initial Intents (chunks) per region.
pub const CHUNKS: u64 = 4;
/// A chunk at most this wide is evaluated point by point (a leaf).
pub const LEAF_WIDTH: u64 = 64;
/// Failed runs in one region within the contract's window that deny the region.
pub const FAILURE_BUDGET: u64 = 3;
/// Attempts at one chunk of a cursed region before its agent gives up on it.
pub const MAX_ATTEMPTS: u64 = 3;

/// The governance contract the demo deploys: a region whose runs keep failing is
/// denied, so no agent spends more work on it (`spec/contract.md`, `budget.nex`).
pub const CONTRACT: &str = r#"# nexus demo: a branch of the search that keeps failing is pruned.
contract = "nexus-demo-failure-budget"
description = "Deny a search region after 3 failed runs within 10 minutes"

[[rule]]
name = "failure-budget"
topic = "demo/**"
where = "has(fact.resolves) && fact.body.status == 'failed'"
group = "fact.topic"
threshold = 3
within = "10m"

[rule.emit]
effect = "deny"
topic = "${group}/**"
reason = "failure budget spent: ${size(facts)} failed runs under ${group}"
expires = "1h"
"#;

/// One piece of work: the points `lo..hi` of a region (an Intent's body).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    /// The region's index.
    pub region: u32,
    /// First point.
    pub lo: u64,
    /// One past the last point.
    pub hi: u64,
    /// 1 for a first try; a retry after a failure counts up.
    pub attempt: u64,
}

impl Job {
    /// Whether the job is evaluated point by point.
    pub fn is_leaf(&self) -> bool {
        self.hi - self.lo <= LEAF_WIDTH
    }

    /// The two halves of a job wider than a leaf.
    pub fn halves(&self) -> [Job; 2] {
        let mid = self.lo + (self.hi - self.lo) / 2;
        [
            Job {
                hi: mid,
                attempt: 1,
                ..*self
            },
            Job {
                lo: mid,
                attempt: 1,
                ..*self
            },
        ]
    }

    /// `r2[256..320)`, for people.
    pub fn label(&self) -> String {
        format!("r{}[{}..{})", self.region, self.lo, self.hi)
    }
}

/// A point and its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Best {
    /// The value (compared first).
    pub value: u64,
    /// The region.
    pub region: u32,
    /// The point.
    pub x: u64,
}

/// Everything the seed decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The seed.
    pub seed: u64,
    /// Number of regions.
    pub regions: u32,
    /// The cursed regions (ascending).
    pub cursed: Vec<u32>,
    /// `(agent index, job)`: each of these agents claims that job first and crashes
    /// holding it (its lease lapses; another agent takes the job over).
    pub crashes: Vec<(usize, Job)>,
}

impl Problem {
    /// The problem of `seed` for a swarm of `agents`: six regions, one or two cursed,
    /// and up to two crashing agents (never all of them).
    pub fn new(seed: u64, agents: usize) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let regions = 6u32;
        let mut all: Vec<u32> = (0..regions).collect();
        all.shuffle(&mut rng);
        let cursed_n = rng.gen_range(1..=2);
        let mut cursed: Vec<u32> = all[..cursed_n].to_vec();
        cursed.sort_unstable();
        let good: Vec<u32> = all[cursed_n..].to_vec();
        let crash_n = agents.saturating_sub(1).min(2);
        let mut agent_ids: Vec<usize> = (0..agents).collect();
        agent_ids.shuffle(&mut rng);
        let mut crashes: Vec<(usize, Job)> = agent_ids[..crash_n]
            .iter()
            .enumerate()
            .map(|(i, &agent)| {
                let region = good[i % good.len()];
                let chunk = rng.gen_range(0..CHUNKS);
                (agent, chunk_job(region, chunk))
            })
            .collect();
        crashes.sort_unstable_by_key(|(a, _)| *a);
        Problem {
            seed,
            regions,
            cursed,
            crashes,
        }
    }

    /// The Intents the planner proposes first: every chunk of every region.
    pub fn initial_jobs(&self) -> Vec<Job> {
        (0..self.regions)
            .flat_map(|r| (0..CHUNKS).map(move |c| chunk_job(r, c)))
            .collect()
    }

    /// Whether every evaluation in `region` fails.
    pub fn is_cursed(&self, region: u32) -> bool {
        self.cursed.contains(&region)
    }

    /// The hidden function: a value in `0..1_000_000` for each point of each region.
    pub fn value(&self, region: u32, x: u64) -> u64 {
        let mut input = [0u8; 20];
        input[..8].copy_from_slice(&self.seed.to_le_bytes());
        input[8..12].copy_from_slice(&region.to_le_bytes());
        input[12..].copy_from_slice(&x.to_le_bytes());
        let h = blake3::hash(&input);
        let mut first = [0u8; 8];
        first.copy_from_slice(&h.as_bytes()[..8]);
        u64::from_le_bytes(first) % 1_000_000
    }

    /// The minimum of a leaf job.
    pub fn evaluate(&self, job: &Job) -> Best {
        (job.lo..job.hi)
            .map(|x| Best {
                value: self.value(job.region, x),
                region: job.region,
                x,
            })
            .min()
            .unwrap_or(Best {
                value: u64::MAX,
                region: job.region,
                x: job.lo,
            })
    }

    /// The answer the search must find: the minimum over the regions that are not
    /// cursed (computed directly, to check the swarm's result).
    pub fn expected(&self) -> Option<Best> {
        (0..self.regions)
            .filter(|r| !self.is_cursed(*r))
            .map(|r| {
                self.evaluate(&Job {
                    region: r,
                    lo: 0,
                    hi: REGION_WIDTH,
                    attempt: 1,
                })
            })
            .min()
    }

    /// Intents the search resolves outside the cursed regions: each chunk is a binary
    /// tree down to leaves.
    pub fn search_intents(&self) -> u64 {
        let good = u64::from(self.regions) - self.cursed.len() as u64;
        let mut per_chunk = 0;
        let mut n = 1;
        let mut width = REGION_WIDTH / CHUNKS;
        loop {
            per_chunk += n;
            if width <= LEAF_WIDTH {
                break;
            }
            width /= 2;
            n *= 2;
        }
        good * CHUNKS * per_chunk
    }
}

fn chunk_job(region: u32, chunk: u64) -> Job {
    let w = REGION_WIDTH / CHUNKS;
    Job {
        region,
        lo: chunk * w,
        hi: (chunk + 1) * w,
        attempt: 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seed_decides_everything() {
        assert_eq!(Problem::new(7, 8), Problem::new(7, 8));
        let differ = (0..20).any(|s| Problem::new(s, 8).cursed != Problem::new(s + 1, 8).cursed);
        assert!(differ, "different seeds give different problems");
        let p = Problem::new(7, 8);
        assert!(!p.cursed.is_empty() && p.cursed.len() <= 2);
        assert_eq!(p.crashes.len(), 2);
        for (_, job) in &p.crashes {
            assert!(
                !p.is_cursed(job.region),
                "a crash is in a region that completes"
            );
        }
        assert_eq!(
            Problem::new(7, 1).crashes.len(),
            0,
            "one agent never crashes"
        );
    }

    #[test]
    fn halves_tile_a_chunk_down_to_leaves() {
        let p = Problem::new(3, 8);
        let mut leaves = 0;
        let mut nodes = 0;
        let mut todo = p.initial_jobs();
        todo.retain(|j| !p.is_cursed(j.region));
        let mut best: Option<Best> = None;
        while let Some(j) = todo.pop() {
            nodes += 1;
            if j.is_leaf() {
                leaves += j.hi - j.lo;
                let b = p.evaluate(&j);
                best = Some(best.map_or(b, |x| x.min(b)));
            } else {
                let [a, b] = j.halves();
                assert_eq!((a.lo, a.hi, b.lo, b.hi), (j.lo, b.lo, a.hi, j.hi));
                todo.extend([a, b]);
            }
        }
        let good = u64::from(p.regions) - p.cursed.len() as u64;
        assert_eq!(leaves, good * REGION_WIDTH);
        assert_eq!(nodes, p.search_intents());
        assert_eq!(best, p.expected());
    }

    #[test]
    fn the_contract_checks() {
        nexus_contract::Contract::parse("demo.nex", CONTRACT).expect("the demo contract checks");
        assert!(CONTRACT.contains(&format!("threshold = {FAILURE_BUDGET}")));
    }
}
