//! The async half of the IoBuffer bridge (design §5): performs the I/O that a job's
//! [`Driver`](nexus_iobuf::Driver) asks for, over the Worker's bindings.
//!
//! [`Host::run`] is a thin loop around [`Job::driver`]; the driver decides everything
//! that makes the answer right (rounds, attempts, conflict restarts, when cached states
//! must be verified, the flush phases). The host only answers its steps:
//!
//! - **`Step::Hydrate`**: Workers KV bulk gets (≤ 100 keys a call), R2 gets, and the
//!   states — from this isolate's cache when the driver allows it (`cache_ok`, asked
//!   for writes) and no state or index listing is needed, so that a write that
//!   commits costs one coordinator call; else ONE coordinator `/read` for every state
//!   key, state listing and index listing (the coordinator keeps the index, see
//!   [`crate::coordinator`]; KV could only list it from the start of a prefix);
//! - **`Step::Commit`**: the batch in its order: R2 blobs and immutable KV records first
//!   (idempotent, content-addressed; a record's content also goes to R2, see
//!   [`r2::RECORD_PREFIX`]), then ONE coordinator `/commit` carrying the commit's ops,
//!   read checks, log entries and index entries (the commit point: a stale cached
//!   read only makes it conflict), then deletes;
//! - **`Step::Done`**: the answer, through [`Api::finish`].
//!
//! No `block_on` and no executor: the only awaits are the bindings', between steps.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;

use worker::{Bucket, KvStore, Stub};

use nexus_api::{Api, Job, Response};
use nexus_core::storage::keys::INDEX_PREFIX;
use nexus_iobuf::{
    DriveStats, FlushError, FlushStage, IoBufferSession, ListQuery, Misses, StateSource, Step,
};
use nexus_store::{BatchPut, CommitOutcome, PutPhase, StoreError, StoreResult, Tier, WriteBatch};

use nexus_shard::{
    CallKind, CrossError, Lost, ShardMap, ShardStep, ShardedCommit, ShardedRead, merge_listings,
};

use crate::kv::{self, backend};
use crate::protocol::{
    COMMIT_PATH, CommitReply, CommitRequest, ListSpec, READ_PATH, ReadReply, ReadRequest,
};
use crate::r2::{self, RECORD_PREFIX};
use crate::shards;

/// Whether a key-value listing is of the index, which the coordinator keeps (see
/// `crate::coordinator`): its prefix lies inside `x/`.
fn is_index_list(q: &ListQuery) -> bool {
    q.prefix.starts_with(INDEX_PREFIX)
}

/// Whether an after-commit put is an index entry (the coordinator writes it).
fn is_index_put(p: &&BatchPut) -> bool {
    p.tier == Tier::Kv && p.key.starts_with(INDEX_PREFIX)
}

/// What one request cost: the operations it made on each binding.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// KV read calls (a bulk get of up to 100 keys or a list page counts once).
    pub kv_reads: u32,
    /// Of [`kv_reads`](Self::kv_reads), the list pages (none for index listings,
    /// which the coordinator answers).
    pub kv_lists: u32,
    /// KV writes.
    pub kv_writes: u32,
    /// R2 reads (gets and list pages).
    pub r2_reads: u32,
    /// R2 writes (puts and deletes).
    pub r2_writes: u32,
    /// Calls to the coordinator Durable Object.
    pub do_calls: u32,
    /// Session rounds executed, over all attempts ([`DriveStats::rounds`]).
    pub rounds: u32,
    /// Attempts: 1, plus one per retry (after a commit lost to a race, or to decide
    /// again on states read from the coordinator what cached states decided)
    /// ([`DriveStats::attempts`]).
    pub attempts: u32,
    /// Commits applied, 0 or 1 ([`DriveStats::commits`]).
    pub commits: u32,
    /// Commits refused because a state had changed ([`DriveStats::conflicts`]).
    pub conflicts: u32,
    /// Calls to the governance Durable Object (`crate::governance`).
    pub gov_calls: u32,
}

/// Test-only faults a request may ask for (honoured only in a `test-hooks` build).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Faults {
    /// The coordinator fails the commit after writing this many ops (rolled back).
    pub fail_commit_after_ops: Option<usize>,
    /// The commit does not carry its index entries (as from a Worker of an earlier
    /// version): the coordinator indexes it later, from its log.
    pub drop_index_writes: bool,
    /// KV answers every record (`r/…`) as absent, as a location KV has not reached yet.
    pub kv_misses_records: bool,
    /// A cross-shard commit stops after its prewrites (header
    /// `x-nexus-fault: stall-after-prewrite`), as if the Worker died there: its locks
    /// stay for a reader, a later commit or the shard's alarm to resolve.
    pub stall_after_prewrite: bool,
}

/// The Worker's bindings, with per-request counters (the binding calls are counted
/// here; rounds, attempts, commits and conflicts come from the job's driver).
#[derive(Debug)]
pub struct Host {
    kv: KvStore,
    blobs: Bucket,
    /// Shard `i`'s coordinator stub (one: today's single coordinator).
    shards: Vec<Stub>,
    map: ShardMap,
    lock_ttl_ms: u64,
    /// The request's host time (ms): the time of its locks.
    now: Cell<u64>,
    faults: Faults,
    counters: Cell<Counters>,
    /// Puts before the commit that an earlier attempt of this request already made,
    /// with their values: a retry after a conflict does not write them again (KV
    /// refuses a second write to one key within a second).
    written: RefCell<HashMap<String, Vec<u8>>>,
}

/// Most states one isolate caches; past it the cache starts afresh.
pub const CACHE_MAX_ENTRIES: usize = 20_000;

thread_local! {
    /// States this isolate last saw at the coordinator: what writes execute on when the
    /// driver allows cached states (every commit checks them, see [`Host::run`]).
    static CACHE: RefCell<HashMap<String, Option<Vec<u8>>>> = RefCell::new(HashMap::new());
}

fn cache_get(key: &str) -> Option<Option<Vec<u8>>> {
    CACHE.with(|c| c.borrow().get(key).cloned())
}

fn cache_put(entries: impl IntoIterator<Item = (String, Option<Vec<u8>>)>) {
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        for (k, v) in entries {
            if c.len() >= CACHE_MAX_ENTRIES {
                c.clear();
            }
            c.insert(k, v);
        }
    });
}

impl Host {
    /// A host over the given bindings: `shards[i]` is shard `i`'s coordinator stub (at
    /// least one), locks older than `lock_ttl_ms` count as stalled.
    pub fn new(
        kv: KvStore,
        blobs: Bucket,
        shards: Vec<Stub>,
        lock_ttl_ms: u64,
        faults: Faults,
    ) -> StoreResult<Self> {
        let map = ShardMap::new(shards.len()).map_err(|e| backend("shards", e))?;
        Ok(Self {
            kv,
            blobs,
            shards,
            map,
            lock_ttl_ms,
            now: Cell::new(0),
            faults,
            counters: Cell::new(Counters::default()),
            written: RefCell::new(HashMap::new()),
        })
    }

    /// The number of coordinator shards.
    pub fn shards(&self) -> usize {
        self.map.shards()
    }

    /// What the request cost so far.
    pub fn counters(&self) -> Counters {
        self.counters.get()
    }

    /// Counts one call to the governance Durable Object for this request.
    pub fn count_governance_call(&self) {
        self.count(|c| c.gov_calls += 1);
    }

    fn count(&self, f: impl FnOnce(&mut Counters)) {
        let mut c = self.counters.get();
        f(&mut c);
        self.counters.set(c);
    }

    /// Runs `job` at host time `now` with `api`'s limits and answers through
    /// [`Api::finish`], as `Api::run_job` does natively: the same answers, the same
    /// errors, the same commit and conflict metrics.
    ///
    /// A write is driven with cached states allowed: the states it reads come from
    /// this isolate's cache (a key never seen counts as absent), so that a commit that
    /// succeeds costs one coordinator call in all. The commit carries a check of each
    /// state the job read, so a stale cache can only make it conflict (the driver
    /// then retries on the conflict's current values) and never makes it wrong; an
    /// answer that commits nothing is only given on states read from the coordinator
    /// (the driver asks again with `cache_ok: false`).
    pub async fn run(&self, api: &Api, job: &Job, now: u64) -> Response {
        self.now.set(now);
        let mut driver = job.driver(&api.config().limits, now, job.is_write());
        let result = loop {
            match driver.poll() {
                Step::Hydrate { misses, cache_ok } => {
                    match self.hydrate_step(driver.session(), &misses, cache_ok).await {
                        Ok(source) => driver.hydrated(source),
                        Err(e) => driver.hydrate_failed(e),
                    }
                }
                Step::Commit(batch) => {
                    let outcome = self.flush(&batch).await;
                    driver.committed(outcome);
                }
                Step::Done(result) => break result,
            }
        };
        self.record(driver.stats());
        api.finish(result)
    }

    /// Copies the driver's counts into the request's counters.
    fn record(&self, stats: DriveStats) {
        let n = |v: usize| u32::try_from(v).unwrap_or(u32::MAX);
        self.count(|c| {
            c.attempts = n(stats.attempts);
            c.rounds = n(stats.rounds);
            c.commits = n(stats.commits);
            c.conflicts = n(stats.conflicts);
        });
    }

    /// Hydrates what one `Step::Hydrate` asks for and says where the states came from:
    /// from the isolate's cache when `cache_ok` and no state listing is needed
    /// (listings only the coordinator can answer), from the coordinator otherwise.
    async fn hydrate_step(
        &self,
        session: &IoBufferSession,
        misses: &Misses,
        cache_ok: bool,
    ) -> StoreResult<StateSource> {
        if !cache_ok
            || !misses.state_lists.is_empty()
            || misses.state_keys.is_empty()
            || misses.kv_lists.iter().any(is_index_list)
        {
            self.hydrate(session, misses).await?;
            return Ok(StateSource::Store);
        }
        let mut tiers = misses.clone();
        let state_keys = std::mem::take(&mut tiers.state_keys);
        self.hydrate(session, &tiers).await?;
        session
            .object_buf()
            .hydrate_batch(state_keys.into_iter().map(|k| {
                let v = cache_get(&k).flatten();
                (k, v)
            }));
        Ok(StateSource::Cache)
    }

    /// Loads `misses` into the session: KV bulk gets, R2 gets and listings, and one
    /// coordinator call for all state keys, state listings and index listings (none
    /// when there are none), the tiers concurrently. The states read refresh the isolate's cache.
    pub async fn hydrate(&self, session: &IoBufferSession, misses: &Misses) -> StoreResult<()> {
        let (tiers, states) = futures_util::future::join(
            self.hydrate_tiers(session, misses),
            self.hydrate_states(session, misses),
        )
        .await;
        tiers.and(states)
    }

    async fn hydrate_tiers(&self, session: &IoBufferSession, misses: &Misses) -> StoreResult<()> {
        if !misses.kv_keys.is_empty() {
            let (mut values, calls) = kv::get_many(&self.kv, &misses.kv_keys).await?;
            self.count(|c| c.kv_reads += calls);
            if self.faults.kv_misses_records {
                for (k, v) in misses.kv_keys.iter().zip(values.iter_mut()) {
                    if k.starts_with(RECORD_PREFIX) {
                        *v = None;
                    }
                }
            }
            let r2_reads =
                r2::fill_missing_records(&self.blobs, &misses.kv_keys, &mut values).await?;
            self.count(|c| c.r2_reads += r2_reads);
            session
                .kv_buf()
                .hydrate_batch(misses.kv_keys.iter().cloned().zip(values));
        }
        for q in misses.kv_lists.iter().filter(|q| !is_index_list(q)) {
            let (keys, calls) = kv::list(&self.kv, q).await?;
            self.count(|c| {
                c.kv_reads += calls;
                c.kv_lists += calls;
            });
            session.kv_buf().hydrate_list(q, keys);
        }
        for key in &misses.blob_keys {
            let value = r2::get(&self.blobs, key).await?;
            self.count(|c| c.r2_reads += 1);
            session.blob_buf().hydrate(key.clone(), value);
        }
        for q in &misses.blob_lists {
            let (keys, calls) = r2::list(&self.blobs, q).await?;
            self.count(|c| c.r2_reads += calls);
            session.blob_buf().hydrate_list(q, keys);
        }
        Ok(())
    }

    async fn hydrate_states(&self, session: &IoBufferSession, misses: &Misses) -> StoreResult<()> {
        let index_lists: Vec<&ListQuery> = misses
            .kv_lists
            .iter()
            .filter(|q| is_index_list(q))
            .collect();
        if misses.state_keys.is_empty() && misses.state_lists.is_empty() && index_lists.is_empty() {
            return Ok(());
        }
        if self.map.shards() > 1 {
            return self.hydrate_sharded(session, misses, &index_lists).await;
        }
        let req = ReadRequest {
            keys: misses.state_keys.clone(),
            lists: misses.state_lists.iter().map(ListSpec::from).collect(),
            index_lists: index_lists.iter().copied().map(ListSpec::from).collect(),
        };
        let reply = self.read_call(0, &req).await?;
        let states: Vec<(String, Option<Vec<u8>>)> = req
            .keys
            .into_iter()
            .zip(reply.values)
            .map(|(k, v)| (k, v.map(|h| h.0)))
            .collect();
        cache_put(states.iter().cloned());
        session.object_buf().hydrate_batch(states);
        for (q, keys) in misses.state_lists.iter().zip(reply.lists) {
            session.object_buf().hydrate_list(q, keys);
        }
        for (q, keys) in index_lists.into_iter().zip(reply.index_lists) {
            session.kv_buf().hydrate_list(q, keys);
        }
        Ok(())
    }

    /// [`hydrate_states`](Self::hydrate_states) over N shards: the state keys through
    /// a [`ShardedRead`] (each key at its home with its `lock/` row; stale locks
    /// resolved and read again), the listings fanned out to the shards that can hold
    /// them and merged. The first round is one `/read` per shard involved, all
    /// concurrently, each carrying that shard's keys and listings.
    async fn hydrate_sharded(
        &self,
        session: &IoBufferSession,
        misses: &Misses,
        index_lists: &[&ListQuery],
    ) -> StoreResult<()> {
        let keys: Vec<&str> = misses.state_keys.iter().map(String::as_str).collect();
        let mut reads =
            ShardedRead::new(&self.map, &keys, self.now.get())?.with_ttl(self.lock_ttl_ms);
        let n = self.map.shards();
        let mut requests: Vec<ReadRequest> = vec![ReadRequest::default(); n];
        for (shard, keys) in reads.pending_reads() {
            requests[shard].keys = keys;
        }
        // Where each listing's answers are: (shard, index in that shard's request).
        let mut state_at: Vec<Vec<(usize, usize)>> = Vec::new();
        for q in &misses.state_lists {
            let mut at = Vec::new();
            for shard in self.map.list_shards(&q.prefix) {
                at.push((shard, requests[shard].lists.len()));
                requests[shard].lists.push(ListSpec::from(q));
            }
            state_at.push(at);
        }
        let mut index_at: Vec<Vec<(usize, usize)>> = Vec::new();
        for q in index_lists {
            // Index entries sit with the commit that wrote them: any shard.
            let at = (0..n)
                .map(|shard| {
                    requests[shard].index_lists.push(ListSpec::from(*q));
                    (shard, requests[shard].index_lists.len() - 1)
                })
                .collect();
            index_at.push(at);
        }
        let calls = requests.iter().enumerate().filter(|(_, r)| {
            !(r.keys.is_empty() && r.lists.is_empty() && r.index_lists.is_empty())
        });
        let replies = futures_util::future::join_all(
            calls.map(|(shard, req)| async move { (shard, self.read_call(shard, req).await) }),
        )
        .await;
        let mut answers: Vec<Option<ReadReply>> = vec![None; n];
        for (shard, reply) in replies {
            let reply = reply?;
            let req = &requests[shard];
            if !req.keys.is_empty() {
                let values = reply
                    .values
                    .iter()
                    .map(|v| v.clone().map(|h| h.0))
                    .collect();
                reads.feed_read(shard, Ok(values));
            }
            answers[shard] = Some(reply);
        }
        let values = self.finish_reads(&mut reads).await?;
        let states: Vec<(String, Option<Vec<u8>>)> =
            misses.state_keys.iter().cloned().zip(values).collect();
        cache_put(states.iter().cloned());
        session.object_buf().hydrate_batch(states);
        let take = |at: &[(usize, usize)], index: bool| {
            at.iter()
                .map(|&(shard, i)| {
                    let reply = answers[shard].as_ref();
                    let list = reply.and_then(|r| {
                        if index {
                            r.index_lists.get(i)
                        } else {
                            r.lists.get(i)
                        }
                    });
                    (shard, list.cloned().unwrap_or_default())
                })
                .collect::<Vec<_>>()
        };
        for (q, at) in misses.state_lists.iter().zip(&state_at) {
            let keys =
                self.map
                    .merge_state_listings(take(at, false), q.start_after.as_deref(), q.limit);
            session.object_buf().hydrate_list(q, keys);
        }
        for (q, at) in index_lists.iter().zip(&index_at) {
            let answers = take(at, true).into_iter().map(|(_, keys)| keys);
            let keys = merge_listings(answers, q.start_after.as_deref(), q.limit);
            session.kv_buf().hydrate_list(q, keys);
        }
        Ok(())
    }

    /// Runs a [`ShardedRead`] on from where its first round was fed: reads not
    /// answered, resolutions of stale locks, reads again.
    async fn finish_reads(&self, reads: &mut ShardedRead) -> StoreResult<Vec<Option<Vec<u8>>>> {
        for _ in 0..shards::MAX_SHARD_STEPS {
            match reads.poll() {
                ShardStep::Done(r) => return r.map_err(|e| backend("sharded read", e)),
                ShardStep::Read { shard, keys } => {
                    let values = self.read_on(shard, keys).await;
                    reads.feed_read(shard, values.map_err(|_| Lost));
                }
                ShardStep::Call { shard, commit } => {
                    let answer = self.commit_on(shard, CommitRequest::new(&commit)).await;
                    reads.feed(shard, answer.map_err(|_| Lost));
                }
            }
        }
        Err(backend("sharded read", "gave up (calls kept failing)"))
    }

    /// `/read` of state keys on one shard.
    async fn read_on(&self, shard: usize, keys: Vec<String>) -> StoreResult<Vec<Option<Vec<u8>>>> {
        let req = ReadRequest {
            keys,
            ..ReadRequest::default()
        };
        let reply = self.read_call(shard, &req).await?;
        Ok(reply.values.into_iter().map(|v| v.map(|h| h.0)).collect())
    }

    /// One `/read` on one shard, its answer checked against the request's shape.
    async fn read_call(&self, shard: usize, req: &ReadRequest) -> StoreResult<ReadReply> {
        let reply: ReadReply = self.call(shard, READ_PATH, req).await?;
        if reply.values.len() != req.keys.len()
            || reply.lists.len() != req.lists.len()
            || reply.index_lists.len() != req.index_lists.len()
        {
            return Err(backend(
                "coordinator read",
                "answer does not match the request",
            ));
        }
        Ok(reply)
    }

    /// `/commit` on one shard.
    async fn commit_on(&self, shard: usize, req: CommitRequest) -> StoreResult<CommitOutcome> {
        let reply: CommitReply = self.call(shard, COMMIT_PATH, &req).await?;
        Ok(reply.outcome())
    }

    /// The commit over N shards: a [`ShardedCommit`] driven over the stubs, one
    /// `/commit` per call. The index entries travel with the commit point (the fast
    /// path's one call, or the primary's commit): they are written in the transaction
    /// that makes the records committed, on the shard whose log holds the records'
    /// entries (so that shard's index catch-up can restore them). A failed call is
    /// [`Lost`]: sent again where the phase is idempotent, else the commit's outcome
    /// is unknown and the call's error is the answer (as with one coordinator).
    async fn commit_sharded(
        &self,
        commit: &nexus_store::Commit,
        index: Vec<String>,
    ) -> StoreResult<CommitOutcome> {
        let nonce = (worker::js_sys::Math::random() * 9_007_199_254_740_992.0) as u64;
        let mut m = ShardedCommit::new(&self.map, commit, self.now.get(), nonce)
            .map_err(|e| backend("commit", e))?
            .with_ttl(self.lock_ttl_ms);
        let mut last_error: Option<StoreError> = None;
        for _ in 0..shards::MAX_SHARD_STEPS {
            let step = m.poll();
            // After a poll that asks for a call, the phase of that call.
            let kind = m.pending();
            match step {
                ShardStep::Done(Ok(outcome)) => return Ok(outcome),
                ShardStep::Done(Err(CrossError::OutcomeUnknown { .. })) => {
                    return Err(
                        last_error.unwrap_or_else(|| backend("commit", "the outcome is unknown"))
                    );
                }
                ShardStep::Done(Err(e)) => return Err(backend("commit", e)),
                ShardStep::Read { shard, keys } => {
                    let values = self.read_on(shard, keys).await;
                    m.feed_read(shard, values.map_err(|_| Lost));
                }
                ShardStep::Call { shard, commit } => {
                    let mut req = CommitRequest::new(&commit);
                    if kind.is_some_and(CallKind::is_commit_point) {
                        req.index = (!self.faults.drop_index_writes).then(|| index.clone());
                        req.fail_after_ops = self.faults.fail_commit_after_ops;
                    }
                    let answer = self.commit_on(shard, req).await;
                    let answer = answer.map_err(|e| {
                        last_error = Some(e);
                        Lost
                    });
                    m.feed(shard, answer);
                    if self.faults.stall_after_prewrite
                        && kind == Some(CallKind::Prewrite)
                        && m.pending() != Some(CallKind::Prewrite)
                    {
                        return Err(backend(
                            "commit",
                            "the Worker stopped after the prewrites (test fault)",
                        ));
                    }
                }
            }
        }
        Err(last_error.unwrap_or_else(|| backend("commit", "gave up (calls kept failing)")))
    }

    async fn kv_put(&self, key: &str, value: &[u8]) -> StoreResult<()> {
        kv::put(&self.kv, key, value).await?;
        self.count(|c| c.kv_writes += 1);
        Ok(())
    }

    /// Writes `batch` in its order (the driver's `Step::Commit`) and says what the
    /// commit did, or which stage failed.
    ///
    /// Before-commit puts that an earlier attempt of this request already wrote with
    /// the same value are not written again (KV refuses a second write to one key
    /// within a second). The commit is ONE coordinator call carrying the ops, the read
    /// checks, the log entries and the index entries (the after-commit puts under
    /// `x/`, which the coordinator keeps and writes in the commit's transaction); a
    /// batch with none of them makes no call. After the commit point the answer
    /// stands: any other after-commit put or a delete that fails is logged, not
    /// returned, and the commit's `first_seq` is kept.
    async fn flush(&self, batch: &WriteBatch) -> Result<CommitOutcome, FlushError> {
        let at = |stage: FlushStage| move |source: StoreError| FlushError::Store { stage, source };
        for put in batch.puts_in(PutPhase::BeforeCommit) {
            let (key, value) = (put.key.as_str(), put.value.as_slice());
            if put.tier == Tier::Blob {
                r2::put(&self.blobs, key, value)
                    .await
                    .map_err(at(FlushStage::BlobPuts))?;
                self.count(|c| c.r2_writes += 1);
                continue;
            }
            if self.written.borrow().get(key).is_some_and(|v| v == value) {
                continue;
            }
            if key.starts_with(RECORD_PREFIX) {
                let (in_kv, in_r2) = futures_util::future::join(
                    self.kv_put(key, value),
                    r2::put(&self.blobs, key, value),
                )
                .await;
                in_kv.and(in_r2).map_err(at(FlushStage::KvPuts))?;
                self.count(|c| c.r2_writes += 1);
            } else {
                self.kv_put(key, value)
                    .await
                    .map_err(at(FlushStage::KvPuts))?;
            }
            self.written
                .borrow_mut()
                .insert(key.to_owned(), value.to_vec());
        }
        let commit = &batch.commit;
        let index: Vec<String> = batch
            .puts_in(PutPhase::AfterCommit)
            .filter(is_index_put)
            .map(|p| p.key.clone())
            .collect();
        let outcome = if commit.is_empty() && commit.reads.is_empty() && index.is_empty() {
            CommitOutcome::Applied { first_seq: None }
        } else if self.map.shards() > 1 {
            self.commit_sharded(commit, index)
                .await
                .map_err(at(FlushStage::Commit))?
        } else {
            let mut req = CommitRequest::new(commit);
            req.index = (!self.faults.drop_index_writes).then_some(index);
            req.fail_after_ops = self.faults.fail_commit_after_ops;
            let reply: CommitReply = self
                .call(0, COMMIT_PATH, &req)
                .await
                .map_err(at(FlushStage::Commit))?;
            reply.outcome()
        };
        match &outcome {
            // What the commit read and wrote is what the coordinator now holds.
            CommitOutcome::Applied { .. } => cache_put(
                commit
                    .reads
                    .iter()
                    .map(|r| (r.key.clone(), r.value.clone()))
                    .chain(commit.ops.iter().map(|op| (op.key.clone(), op.new.clone()))),
            ),
            // The driver retries on these values; later requests start from them too.
            CommitOutcome::Conflict(failures) => {
                cache_put(failures.iter().map(|f| (f.key.clone(), f.current.clone())));
                return Ok(outcome);
            }
            _ => return Ok(outcome),
        }
        // Other after-commit puts (the core makes none today) are independent of each
        // other: written concurrently.
        let writes = batch
            .puts_in(PutPhase::AfterCommit)
            .filter(|p| !is_index_put(p))
            .map(|put| async move {
                let written = match put.tier {
                    Tier::Kv => self.kv_put(&put.key, &put.value).await,
                    Tier::Blob => r2::put(&self.blobs, &put.key, &put.value)
                        .await
                        .map(|()| self.count(|c| c.r2_writes += 1)),
                };
                if let Err(e) = written {
                    worker::console_warn!("{} not written after the commit: {e}", put.key);
                }
            });
        futures_util::future::join_all(writes).await;
        for delete in &batch.deletes {
            let key = delete.key.as_str();
            let deleted = match delete.tier {
                Tier::Kv => kv::delete(&self.kv, key)
                    .await
                    .map(|()| self.count(|c| c.kv_writes += 1)),
                Tier::Blob => r2::delete(&self.blobs, key)
                    .await
                    .map(|()| self.count(|c| c.r2_writes += 1)),
            };
            if let Err(e) = deleted {
                worker::console_warn!("{key} not deleted: {e}");
            }
        }
        Ok(outcome)
    }

    /// One call to shard `shard`'s coordinator.
    async fn call<Q: serde::Serialize, A: serde::de::DeserializeOwned>(
        &self,
        shard: usize,
        path: &str,
        request: &Q,
    ) -> StoreResult<A> {
        let stub = self
            .shards
            .get(shard)
            .ok_or_else(|| backend("coordinator", format!("no shard {shard}")))?;
        self.count(|c| c.do_calls += 1);
        shards::call_stub(stub, shard, path, request).await
    }
}
