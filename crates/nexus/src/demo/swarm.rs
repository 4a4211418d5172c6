//! The agents of `nexus demo`: each its own key and thread, looping claim → work →
//! resolve (→ follow-up Intents) against the server until the board is settled. What
//! they count is timing (who wins a race), shown live and kept out of the summary.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use nexus_client::builders::{self, now_ms};
use nexus_client::http::{IntentItem, IntentQuery};
use nexus_client::{Client, ClientError, ErrorCode};
use nexus_core::{Content, Deployment, FihHash, IntentState, Record, SigningKey};
use rand::{Rng as _, SeedableRng as _};
use rand_chacha::ChaCha8Rng;
use serde_json::json;

use super::problem::{Job, MAX_ATTEMPTS, Problem};

/// What the swarm did, counted as it happens (timing-dependent).
#[derive(Debug, Default)]
pub struct Stats {
    /// Claims won (takeovers included).
    pub claims: AtomicU64,
    /// Claims lost to another agent (`409`).
    pub conflicts: AtomicU64,
    /// Claims that took over a lapsed lease.
    pub takeovers: AtomicU64,
    /// Proposals and claims refused by a deny Hint (`403 inadmissible`).
    pub denials: AtomicU64,
    /// Resolutions refused because the lease had moved on (stale fencing token).
    pub fenced: AtomicU64,
    /// Facts committed.
    pub facts: AtomicU64,
    /// Intents proposed.
    pub proposed: AtomicU64,
    /// Requests refused for rate (`429`), retried.
    pub throttled: AtomicU64,
    /// Agents still running.
    pub alive: AtomicUsize,
    /// Set by the driver once the board is settled (or the run is abandoned).
    pub stop: AtomicBool,
}

/// One agent's identity and its view of the run.
pub struct Agent {
    /// Its index (0-based; shown as `agent N`).
    pub index: usize,
    /// Its key.
    pub key: SigningKey,
    /// Its connection to the server.
    pub client: Client,
    /// The server's deployment id (signed actions name it).
    pub deployment: Deployment,
    /// The run's topic prefix (`demo/<run>`).
    pub prefix: String,
    /// The problem.
    pub problem: Arc<Problem>,
    /// The shared counters.
    pub stats: Arc<Stats>,
    /// Lease length of every claim.
    pub lease_ms: u64,
    /// Simulated work per job.
    pub work: Duration,
}

/// An agent's key: derived from the seed, so a run's authors are too.
pub fn agent_key(seed: u64, index: usize) -> SigningKey {
    let mut input = Vec::with_capacity(32);
    input.extend_from_slice(b"nexus demo agent key");
    input.extend_from_slice(&seed.to_le_bytes());
    input.extend_from_slice(&(index as u64).to_le_bytes());
    SigningKey::from_seed(blake3::hash(&input).as_bytes())
}

/// The topic of a region's Intents and Facts.
pub fn region_topic(prefix: &str, region: u32) -> String {
    format!("{prefix}/r{region}")
}

/// The job an Intent's body holds, if it is one of the demo's.
pub fn job_of(record: &Record) -> Option<Job> {
    match record.content() {
        Content::Intent(i) => serde_json::from_value(i.body.clone()).ok(),
        _ => None,
    }
}

impl Agent {
    /// Proposes `job` with `parents`; `None` if a deny Hint refused it.
    pub fn propose(&self, job: &Job, parents: &[FihHash]) -> anyhow::Result<Option<FihHash>> {
        let topic = region_topic(&self.prefix, job.region);
        let rec = builders::propose(&self.key, &topic, json!(job), parents)?;
        match self.retrying(|| self.client.submit_intent(&rec)) {
            Ok(_) => {
                self.stats.proposed.fetch_add(1, Ordering::Relaxed);
                Ok(Some(rec.hash()))
            }
            Err(e) if e.error_code() == Some(ErrorCode::Inadmissible) => {
                self.stats.denials.fetch_add(1, Ordering::Relaxed);
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Claims `intent`: its fencing token and whether it was a takeover, or `None` if
    /// another agent won or a deny Hint refused it.
    pub fn claim(&self, intent: FihHash) -> anyhow::Result<Option<(u64, bool)>> {
        let action = builders::claim(&self.key, &self.deployment, intent, self.lease_ms)?;
        match self.retrying(|| self.client.claim(&action)) {
            Ok(l) => {
                self.stats.claims.fetch_add(1, Ordering::Relaxed);
                if l.takeover {
                    self.stats.takeovers.fetch_add(1, Ordering::Relaxed);
                }
                Ok(Some((l.token, l.takeover)))
            }
            Err(e) => match e.error_code() {
                Some(ErrorCode::Inadmissible) => {
                    self.stats.denials.fetch_add(1, Ordering::Relaxed);
                    Ok(None)
                }
                Some(
                    ErrorCode::AlreadyClaimed
                    | ErrorCode::Conflict
                    | ErrorCode::AlreadyResolved
                    | ErrorCode::Withdrawn,
                ) => {
                    self.stats.conflicts.fetch_add(1, Ordering::Relaxed);
                    Ok(None)
                }
                _ => Err(e.into()),
            },
        }
    }

    /// Runs until the driver says stop. An error (not a lost race) ends the agent.
    pub fn run(self) -> anyhow::Result<()> {
        let mut rng = ChaCha8Rng::seed_from_u64(self.problem.seed ^ (self.index as u64) << 32);
        let mut denied: HashSet<FihHash> = HashSet::new();
        let result = (|| {
            while !self.stats.stop.load(Ordering::Relaxed) {
                let candidates = self.candidates(&denied)?;
                if candidates.is_empty() {
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                }
                let pick = &candidates[rng.gen_range(0..candidates.len().min(8))];
                let hash = pick.record.hash();
                let Some(job) = job_of(&pick.record) else {
                    denied.insert(hash);
                    continue;
                };
                let denials = self.stats.denials.load(Ordering::Relaxed);
                match self.claim(hash)? {
                    Some((token, _)) => self.work(hash, token, &job)?,
                    None if self.stats.denials.load(Ordering::Relaxed) > denials => {
                        denied.insert(hash);
                    }
                    None => {}
                }
            }
            Ok(())
        })();
        self.stats.alive.fetch_sub(1, Ordering::Relaxed);
        result
    }

    /// Available Intents of the run, and claimed ones whose lease has lapsed.
    fn candidates(&self, denied: &HashSet<FihHash>) -> anyhow::Result<Vec<IntentItem>> {
        let q = |state: &str| IntentQuery {
            state: Some(state.into()),
            topic: Some(self.prefix.clone()),
            limit: Some(100),
            cursor: None,
        };
        let mut out: Vec<IntentItem> = self
            .retrying(|| self.client.intents(&q("available")))?
            .intents;
        if out.is_empty() {
            let now = now_ms();
            out = self
                .retrying(|| self.client.intents(&q("claimed")))?
                .intents
                .into_iter()
                .filter(|i| matches!(i.state, IntentState::Claimed { lease_until, .. } if lease_until < now))
                .collect();
        }
        out.retain(|i| !denied.contains(&i.record.hash()));
        Ok(out)
    }

    /// Does the job it holds and resolves it with a Fact, proposing what follows.
    fn work(&self, intent: FihHash, token: u64, job: &Job) -> anyhow::Result<()> {
        std::thread::sleep(self.work);
        let p = &self.problem;
        let (body, follow): (serde_json::Value, Vec<Job>) = if p.is_cursed(job.region) {
            let retry = (job.attempt < MAX_ATTEMPTS).then_some(Job {
                attempt: job.attempt + 1,
                ..*job
            });
            (
                json!({"status": "failed", "job": job, "error": "evaluation diverged"}),
                retry.into_iter().collect(),
            )
        } else if job.is_leaf() {
            let best = p.evaluate(job);
            (
                json!({"status": "ok", "job": job, "min": best.value, "x": best.x}),
                Vec::new(),
            )
        } else {
            (
                json!({"status": "split", "job": job}),
                job.halves().to_vec(),
            )
        };
        let topic = region_topic(&self.prefix, job.region);
        let fact = builders::fact(&self.key, &topic, body, &[intent], Some((intent, token)))?;
        match self.retrying(|| self.client.submit_fact(&fact)) {
            Ok(_) => {
                self.stats.facts.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => match e.error_code() {
                Some(
                    ErrorCode::StaleToken
                    | ErrorCode::LeaseExpired
                    | ErrorCode::NotHolder
                    | ErrorCode::AlreadyResolved,
                ) => {
                    // Our lease lapsed and the job moved on: its new holder does it.
                    self.stats.fenced.fetch_add(1, Ordering::Relaxed);
                    return Ok(());
                }
                _ => return Err(e.into()),
            },
        }
        for next in follow {
            self.propose(&next, &[fact.hash()])?;
        }
        Ok(())
    }

    /// Runs `op`, waiting and retrying while the server answers `429` or `503`.
    fn retrying<T>(
        &self,
        mut op: impl FnMut() -> Result<T, ClientError>,
    ) -> Result<T, ClientError> {
        let mut wait = Duration::from_millis(20);
        loop {
            match op() {
                Err(e)
                    if matches!(e.status(), Some(429 | 503))
                        && !self.stats.stop.load(Ordering::Relaxed) =>
                {
                    self.stats.throttled.fetch_add(1, Ordering::Relaxed);
                    std::thread::sleep(wait);
                    wait = (wait * 2).min(Duration::from_secs(1));
                }
                r => return r,
            }
        }
    }
}
