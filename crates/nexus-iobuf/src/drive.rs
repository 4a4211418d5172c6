//! [`Driver`]: the one sans-IO state machine that takes a job from hydration to its
//! answer — execute, hydrate misses, commit with read checks, retry on conflict — for
//! every host.
//!
//! The driver does no I/O. Like `quinn-proto`'s `Connection` or raft-rs's `RawNode`, it
//! is polled for what to do next ([`Step`]) and fed the results:
//!
//! ```text
//!            ┌──────────── poll() ────────────┐
//!            ▼                                │
//!   Step::Hydrate { misses, cache_ok } ── host loads them into session() ── hydrated(src)
//!   Step::Commit(batch)                ── host writes the batch ─────────── committed(r)
//!   Step::Done(result)                 ── host answers
//! ```
//!
//! Every rule that decides correctness lives here once, below all hosts:
//!
//! * the round bound (a job that still misses data after `max_rounds` rounds fails);
//! * the flush phases: [`DriveConfig::after_commit`] sorts the key-value puts into
//!   those written before the commit point (idempotent, content-addressed) and after it
//!   (write-once index entries), so hosts never re-derive the order;
//! * the read checks: the commit carries every state the job read (see
//!   [`IoBufferObject::drain_object_puts`](crate::IoBufferObject::drain_object_puts)), so
//!   a store applies it only if the job's view still holds — commits are serializable;
//! * conflicts: a refused commit restarts the job from hydration with the conflict's
//!   current values, up to `max_attempts`, then fails with every failed key;
//! * cached states: a host may serve states from a cache that can be stale
//!   ([`StateSource::Cache`]). A commit's read checks catch staleness, but an answer
//!   that commits nothing (an error, a duplicate) has no commit to check it, so such an
//!   answer is only given after an attempt that read no cached state: otherwise the
//!   driver starts a verifying attempt with `cache_ok: false`;
//! * an error from a store call after the commit point (an index entry lost) leaves
//!   the answer standing: the commit log lets a later flush repair the index.

use nexus_store::{CasFailure, CommitOutcome, PutPhase, StoreError, Tier, WriteBatch};

use crate::driver::{Executed, SessionError, StoreSession};
use crate::server::{JobError, JobOutput};
use crate::session::{Delta, FlushError, FlushReport, FlushStage, IoBufferSession, Misses};

/// How a [`Driver`] runs its job.
#[derive(Debug, Clone, Copy)]
pub struct DriveConfig {
    /// Most execution rounds per attempt (at least 1).
    pub max_rounds: usize,
    /// Most attempts (execute + commit) per job (at least 1).
    pub max_attempts: usize,
    /// Selects the key-value puts that depend on the commit (written after it, only if
    /// it applies); every other put is written before it.
    pub after_commit: fn(&str) -> bool,
    /// Whether the host may serve states from a cache that can be stale (see
    /// [`StateSource::Cache`]). Hosts that read states from the store itself leave it
    /// false.
    pub cache_ok: bool,
}

impl Default for DriveConfig {
    /// [`crate::DEFAULT_MAX_ROUNDS`] rounds, [`crate::DEFAULT_MAX_ATTEMPTS`] attempts,
    /// every put before the commit, no cache.
    fn default() -> Self {
        Self {
            max_rounds: crate::DEFAULT_MAX_ROUNDS,
            max_attempts: crate::DEFAULT_MAX_ATTEMPTS,
            after_commit: |_| false,
            cache_ok: false,
        }
    }
}

/// Where the host took the states of one hydration from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateSource {
    /// From the store (the coordinator, the database): current when read.
    Store,
    /// At least one state from a cache that may be stale.
    Cache,
}

/// What the host must do next for a [`Driver`].
#[derive(Debug)]
pub enum Step<T> {
    /// Load `misses` into [`Driver::session`] (e.g. with
    /// [`IoBufferSession::hydrate_from`], or the host's async bindings), then call
    /// [`Driver::hydrated`] — or [`Driver::hydrate_failed`] if the store failed. States
    /// may come from a cache only when `cache_ok`.
    Hydrate {
        /// What to load.
        misses: Misses,
        /// Whether states may come from a possibly stale cache.
        cache_ok: bool,
    },
    /// Write `batch` in its order — puts marked [`PutPhase::BeforeCommit`], then
    /// `batch.commit` (the commit point: ops, read checks and log entries, all or
    /// nothing), then, only if it applied, the [`PutPhase::AfterCommit`] puts and the
    /// deletes — and call [`Driver::committed`] with what happened
    /// ([`flush_batch`] does this over a sync store).
    Commit(WriteBatch),
    /// The job finished; the driver has nothing more to do.
    Done(Result<JobOutput<T>, JobError>),
}

/// What a driver did, over all attempts (for metrics and per-request counters).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DriveStats {
    /// Attempts started: 1, plus one per conflict retry and per verifying attempt.
    pub attempts: usize,
    /// Execution rounds over all attempts.
    pub rounds: usize,
    /// Commits refused because a state the job wrote or read had changed.
    pub conflicts: usize,
    /// Attempts started again on states read from the store because an answer that
    /// commits nothing had been decided on cached states.
    pub verifications: usize,
    /// Commits that applied (0 or 1).
    pub commits: usize,
}

enum State<T> {
    /// Waiting for the host to hydrate these.
    Hydrating(Misses),
    /// Hydrated: the next poll executes a round.
    Ready,
    /// Waiting for the outcome of this batch; `value` is the round's result.
    Committing { value: T, delta: Delta },
    /// Finished with this answer, not yet handed out.
    Finished(Result<JobOutput<T>, JobError>),
    /// The answer was handed out.
    Spent,
}

/// One job's way from hydration to its answer, as a sans-IO state machine (see the
/// module docs). `J` is the job: deterministic given what it reads, run from scratch
/// each round.
pub struct Driver<J, T> {
    job: J,
    config: DriveConfig,
    read_set: Misses,
    session: StoreSession,
    state: State<T>,
    /// Failed keys of the last conflict (their current values are already hydrated
    /// into the new attempt's session).
    failures: Vec<CasFailure>,
    /// Whether this attempt executed on a state served from a cache.
    cached: bool,
    cache_ok: bool,
    stats: DriveStats,
}

impl<J, T> std::fmt::Debug for Driver<J, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver")
            .field("config", &self.config)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl<J, T> Driver<J, T>
where
    J: FnMut(&IoBufferSession) -> T,
{
    /// A driver for `job`, which will first ask to hydrate `read_set` (what the job is
    /// known to read; an empty set costs one extra round).
    pub fn new(job: J, read_set: Misses, config: DriveConfig) -> Self {
        let config = DriveConfig {
            max_rounds: config.max_rounds.max(1),
            max_attempts: config.max_attempts.max(1),
            ..config
        };
        let mut driver = Self {
            job,
            config,
            read_set,
            session: StoreSession::with_max_rounds(config.max_rounds),
            state: State::Spent,
            failures: Vec::new(),
            cached: false,
            cache_ok: config.cache_ok,
            stats: DriveStats::default(),
        };
        driver.start_attempt();
        driver
    }

    /// The session to hydrate when [`Step::Hydrate`] asks.
    pub fn session(&self) -> &IoBufferSession {
        self.session.session()
    }

    /// What the driver did so far.
    pub fn stats(&self) -> DriveStats {
        self.stats
    }

    /// The configuration.
    pub fn config(&self) -> &DriveConfig {
        &self.config
    }

    /// Advances as far as it can without I/O and says what the host must do next.
    /// Polling again before feeding the asked-for result asks again; after
    /// [`Step::Done`] has been handed out, polling panics-free answers
    /// `Done(Err(JobError::ServerGone))`.
    pub fn poll(&mut self) -> Step<T> {
        loop {
            match std::mem::replace(&mut self.state, State::Spent) {
                State::Hydrating(misses) => {
                    self.state = State::Hydrating(misses.clone());
                    return Step::Hydrate {
                        misses,
                        cache_ok: self.cache_ok,
                    };
                }
                State::Ready => self.execute(),
                State::Committing { value, delta } => {
                    let batch = write_batch(&delta, self.config.after_commit);
                    self.state = State::Committing { value, delta };
                    return Step::Commit(batch);
                }
                State::Finished(result) => return Step::Done(result),
                State::Spent => return Step::Done(Err(JobError::ServerGone)),
            }
        }
    }

    /// The misses of the last [`Step::Hydrate`] are in the session, taken from
    /// `source`.
    pub fn hydrated(&mut self, source: StateSource) {
        if matches!(self.state, State::Hydrating(_)) {
            self.cached |= source == StateSource::Cache;
            self.state = State::Ready;
        }
    }

    /// Hydrating failed: the job fails with the store's error.
    pub fn hydrate_failed(&mut self, error: StoreError) {
        self.state = State::Finished(Err(JobError::Session(SessionError::Hydrate(error))));
    }

    /// What writing the batch of the last [`Step::Commit`] did: the store's outcome, or
    /// the error of the store call that failed and at which stage.
    pub fn committed(&mut self, result: Result<CommitOutcome, FlushError>) {
        let State::Committing { value, delta } = std::mem::replace(&mut self.state, State::Spent)
        else {
            return;
        };
        let failures = match result {
            Ok(CommitOutcome::Applied { first_seq }) => {
                return self.succeed(value, &delta, first_seq);
            }
            // After the commit point the answer stands (see the module docs).
            Err(FlushError::Store { stage, .. }) if stage.after_commit() => {
                return self.succeed(value, &delta, None);
            }
            Err(e @ FlushError::Store { .. }) => {
                self.state = State::Finished(Err(JobError::Flush(e)));
                return;
            }
            Ok(CommitOutcome::Conflict(failures)) | Err(FlushError::Conflict { failures }) => {
                failures
            }
            Ok(other) => {
                self.state = State::Finished(Err(JobError::Flush(FlushError::Store {
                    stage: FlushStage::Commit,
                    source: StoreError::Backend(format!("unsupported commit outcome {other:?}")),
                })));
                return;
            }
        };
        self.stats.conflicts += 1;
        if self.stats.attempts >= self.config.max_attempts {
            self.state = State::Finished(Err(JobError::Conflict {
                attempts: self.stats.attempts,
                failures,
            }));
            return;
        }
        self.failures = failures;
        self.start_attempt();
    }

    fn succeed(&mut self, value: T, delta: &Delta, first_seq: Option<u64>) {
        self.stats.commits += 1;
        let report = delta.report(self.config.after_commit, first_seq);
        self.finish_ok(value, report);
    }

    fn finish_ok(&mut self, value: T, report: FlushReport) {
        self.state = State::Finished(Ok(JobOutput {
            value,
            report,
            attempts: self.stats.attempts,
            rounds: self.stats.rounds,
            conflicts: self.stats.conflicts,
        }));
    }

    /// A fresh session with the last conflict's current values, asking for the rest
    /// of the read set.
    fn start_attempt(&mut self) {
        self.stats.attempts += 1;
        self.cached = false;
        self.session.restart(&self.failures);
        let mut misses = self.read_set.clone();
        misses
            .state_keys
            .retain(|k| !self.failures.iter().any(|f| &f.key == k));
        self.state = if misses.is_empty() {
            State::Ready
        } else {
            State::Hydrating(misses)
        };
    }

    fn execute(&mut self) {
        self.stats.rounds += 1;
        let job = &mut self.job;
        let step = match self.session.execute(|s| job(s)) {
            Ok(step) => step,
            Err(e) => {
                self.state = State::Finished(Err(JobError::Session(e)));
                return;
            }
        };
        match step {
            Executed::NeedsHydration(misses) => self.state = State::Hydrating(misses),
            Executed::Done(value, delta) if delta.is_empty() => {
                if self.cached {
                    // Nothing to commit, so nothing checks the cached states this
                    // answer rests on: decide again on states from the store.
                    self.stats.verifications += 1;
                    self.cache_ok = false;
                    self.failures.clear();
                    self.start_attempt();
                } else {
                    let report = delta.report(self.config.after_commit, None);
                    self.finish_ok(value, report);
                }
            }
            Executed::Done(value, delta) => {
                self.state = State::Committing { value, delta };
            }
        }
    }
}

/// The delta as one [`WriteBatch`] in flush order: blobs and the key-value puts that
/// `after_commit` does not select before the commit, the selected ones after it, then
/// the deletes.
pub fn write_batch(delta: &Delta, after_commit: impl Fn(&str) -> bool) -> WriteBatch {
    let mut batch = WriteBatch::new(delta.commit.clone());
    for (key, bytes) in &delta.blob_puts {
        batch.blob(PutPhase::BeforeCommit, key.clone(), bytes.clone());
    }
    for (key, value) in &delta.kv_puts {
        let phase = if after_commit(key) {
            PutPhase::AfterCommit
        } else {
            PutPhase::BeforeCommit
        };
        batch.kv(phase, key.clone(), value.clone());
    }
    for key in &delta.kv_deletes {
        batch.delete(Tier::Kv, key.clone());
    }
    for key in &delta.blob_deletes {
        batch.delete(Tier::Blob, key.clone());
    }
    batch
}

/// Writes `batch` to a sync store through the ordinary traits, in its order (puts
/// before the commit, the commit, then — only if it applied — puts after it and
/// deletes), naming the stage of a failed store call. For stores without a transaction
/// spanning the tiers; atomic as far as the commit is.
pub fn flush_batch<S>(target: &S, batch: &WriteBatch) -> Result<CommitOutcome, FlushError>
where
    S: nexus_store::KeyValueStore + nexus_store::BlobStore + nexus_store::ObjectStore + ?Sized,
{
    fn at<V>(stage: FlushStage, r: nexus_store::StoreResult<V>) -> Result<V, FlushError> {
        r.map_err(|source| FlushError::Store { stage, source })
    }
    for p in batch.puts_in(PutPhase::BeforeCommit) {
        match p.tier {
            Tier::Blob => at(FlushStage::BlobPuts, target.put_blob(&p.key, &p.value))?,
            Tier::Kv => at(FlushStage::KvPuts, target.set(&p.key, &p.value))?,
        }
    }
    let outcome = if batch.commit.is_empty() && batch.commit.reads.is_empty() {
        CommitOutcome::Applied { first_seq: None }
    } else {
        at(FlushStage::Commit, target.commit(&batch.commit))?
    };
    if !matches!(outcome, CommitOutcome::Applied { .. }) {
        return Ok(outcome);
    }
    for p in batch.puts_in(PutPhase::AfterCommit) {
        match p.tier {
            Tier::Blob => at(
                FlushStage::AfterCommitKvPuts,
                target.put_blob(&p.key, &p.value),
            )?,
            Tier::Kv => at(FlushStage::AfterCommitKvPuts, target.set(&p.key, &p.value))?,
        }
    }
    for d in &batch.deletes {
        match d.tier {
            Tier::Kv => at(FlushStage::Deletes, target.delete(&d.key))?,
            Tier::Blob => at(FlushStage::Deletes, target.delete_blob(&d.key))?,
        }
    }
    Ok(outcome)
}

/// Runs a driver to its answer against a sync store: hydrates from it and writes
/// batches with [`flush_batch`]. The reference host loop.
pub fn drive_sync<S, J, T>(store: &S, driver: &mut Driver<J, T>) -> Result<JobOutput<T>, JobError>
where
    S: nexus_store::KeyValueStore + nexus_store::BlobStore + nexus_store::ObjectStore + ?Sized,
    J: FnMut(&IoBufferSession) -> T,
{
    loop {
        match driver.poll() {
            Step::Hydrate { misses, .. } => match driver.session().hydrate_from(store, &misses) {
                Ok(()) => driver.hydrated(StateSource::Store),
                Err(e) => driver.hydrate_failed(e),
            },
            Step::Commit(batch) => {
                let result = flush_batch(store, &batch);
                driver.committed(result);
            }
            Step::Done(result) => return result,
        }
    }
}
