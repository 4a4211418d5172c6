//! The async half of the IoBuffer bridge (design §5): drives a [`Job`] of `nexus-api`
//! over the Worker's bindings.
//!
//! 1. **hydrate** the job's read set: Workers KV bulk gets (≤ 100 keys a call), R2 gets,
//!    and ONE coordinator `/read` call for every state key and state listing — or, for
//!    a write, the states this isolate cached, validated by the commit (see
//!    [`Host::run`]), so that a write that commits costs one coordinator call;
//! 2. **execute** the sync core over the session; while it misses data, hydrate the
//!    misses and re-execute from scratch (at most [`Job::max_rounds`] rounds);
//! 3. **drain** the delta;
//! 4. **flush** in design order: R2 blobs and immutable KV records first (idempotent,
//!    content-addressed; a record's content also goes to R2, see [`r2::RECORD_PREFIX`]),
//!    then ONE coordinator `/commit` call carrying every CAS op and
//!    log entry and a check of every state the job read (the commit point), then the
//!    write-once KV index entries, then deletes. A conflicting commit restarts the job
//!    with the conflict's current values.
//!
//! No `block_on` and no executor: the only awaits are the bindings', between rounds.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet, HashMap};

use worker::{Bucket, KvStore, Method, Request, RequestInit, Stub};

use nexus_api::{Job, MAX_ATTEMPTS, Outcome, Response, conflict_error, storage_error};
use nexus_core::Limits;
use nexus_core::storage::keys;
use nexus_iobuf::{Delta, Executed, IoBufferSession, Misses, StoreSession};
use nexus_store::{CasFailure, CommitOutcome, LOG_HEAD_KEY, StoreError, StoreResult};

use crate::kv::{self, backend};
use crate::protocol::{
    COMMIT_PATH, CommitReply, CommitRequest, Hex, ListSpec, READ_PATH, ReadReply, ReadRequest,
    WireCheck,
};
use crate::r2::{self, RECORD_PREFIX};

/// What one request cost: the operations it made on each binding.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// KV read calls (a bulk get of up to 100 keys or a list page counts once).
    pub kv_reads: u32,
    /// KV writes.
    pub kv_writes: u32,
    /// R2 reads (gets and list pages).
    pub r2_reads: u32,
    /// R2 writes (puts and deletes).
    pub r2_writes: u32,
    /// Calls to the coordinator Durable Object.
    pub do_calls: u32,
    /// Session rounds executed, over all attempts.
    pub rounds: u32,
    /// Attempts: 1, plus one per retry (after a commit lost to a race, or to decide
    /// again on states read from the coordinator what cached states decided).
    pub attempts: u32,
    /// Commits applied (0 or 1).
    pub commits: u32,
    /// Commits refused because a state had changed (each followed by a retry).
    pub conflicts: u32,
}

/// Test-only faults a request may ask for (honoured only in a `test-hooks` build).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Faults {
    /// The coordinator fails the commit after writing this many ops (rolled back).
    pub fail_commit_after_ops: Option<usize>,
    /// The write-once index entries after the commit are not written (lost).
    pub drop_index_writes: bool,
    /// KV answers every record (`r/…`) as absent, as a location KV has not reached yet.
    pub kv_misses_records: bool,
}

/// The Worker's bindings, with per-request counters.
#[derive(Debug)]
pub struct Host {
    kv: KvStore,
    blobs: Bucket,
    coordinator: Stub,
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
    /// States this isolate last saw at the coordinator: the values optimistic writes
    /// execute on (every commit re-checks them, see [`Host::run`]).
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

/// The states one attempt of a job executed on.
struct Attempt {
    /// States come from the cache (else from the coordinator).
    optimistic: bool,
    /// Every state value the session was given.
    states: BTreeMap<String, Option<Vec<u8>>>,
    /// Whether any of them (the log head aside) came from the cache rather than from
    /// the coordinator during this attempt.
    unverified: bool,
}

impl Attempt {
    /// The reads a commit must validate: every state the job was given that its
    /// compare-and-swaps do not already check. The log head is left out: the
    /// coordinator numbers the entries itself.
    fn checks(&self, delta: &Delta) -> Vec<WireCheck> {
        let written: BTreeSet<&str> = delta.commit.ops.iter().map(|op| op.key.as_str()).collect();
        self.states
            .iter()
            .filter(|(k, _)| k.as_str() != LOG_HEAD_KEY && !written.contains(k.as_str()))
            .map(|(k, v)| WireCheck {
                key: k.clone(),
                value: v.clone().map(Hex),
            })
            .collect()
    }
}

/// Why an attempt stopped before its flush.
enum Failed {
    /// It needs a listing of states, which only the coordinator can answer.
    NeedsCoordinator,
    /// A binding failed.
    Storage(String),
}

/// Why a flush stopped.
enum FlushFailed {
    Conflict(Vec<CasFailure>),
    Store(StoreError),
}

impl Host {
    /// A host over the given bindings.
    pub fn new(kv: KvStore, blobs: Bucket, coordinator: Stub, faults: Faults) -> Self {
        Self {
            kv,
            blobs,
            coordinator,
            faults,
            counters: Cell::new(Counters::default()),
            written: RefCell::new(HashMap::new()),
        }
    }

    /// What the request cost so far.
    pub fn counters(&self) -> Counters {
        self.counters.get()
    }

    fn count(&self, f: impl FnOnce(&mut Counters)) {
        let mut c = self.counters.get();
        f(&mut c);
        self.counters.set(c);
    }

    /// Runs `job` at host time `now` as `Api::run_job` does natively: the same
    /// answers, the same errors.
    ///
    /// A write first runs **optimistically**: the states it reads come from this
    /// isolate's cache (a key never seen counts as absent), so that a commit that
    /// succeeds costs one coordinator call in all. Every commit carries, besides its
    /// compare-and-swaps, a check of each state the job read, so a stale cache can
    /// only make the commit conflict (then the conflict's current values are used)
    /// and never makes it wrong. An answer that commits nothing (an error, a
    /// duplicate) is only given on states read from the coordinator in that attempt.
    pub async fn run(&self, job: &Job, limits: &Limits, now: u64) -> Response {
        let mut failures: Vec<CasFailure> = Vec::new();
        let mut optimistic = job.is_write();
        for _ in 0..MAX_ATTEMPTS {
            self.count(|c| c.attempts += 1);
            let mut driver = StoreSession::with_max_rounds(job.max_rounds());
            driver.restart(&failures);
            let mut attempt = Attempt {
                optimistic,
                states: failures
                    .iter()
                    .map(|f| (f.key.clone(), f.current.clone()))
                    .collect(),
                unverified: false,
            };
            let (outcome, delta) = match self
                .execute(&mut driver, &mut attempt, job, limits, now)
                .await
            {
                Ok(done) => done,
                Err(Failed::NeedsCoordinator) => {
                    optimistic = false;
                    failures.clear();
                    continue;
                }
                Err(Failed::Storage(message)) => return storage_error(&message),
            };
            if !outcome.commits() || delta.is_empty() {
                if attempt.unverified {
                    // Decide again on states read from the coordinator now.
                    optimistic = false;
                    failures.clear();
                    continue;
                }
                return outcome.response(None);
            }
            let checks = attempt.checks(&delta);
            match self.flush(&delta, checks).await {
                Ok(first_seq) => return outcome.response(first_seq),
                Err(FlushFailed::Conflict(f)) => {
                    self.count(|c| c.conflicts += 1);
                    cache_put(f.iter().map(|f| (f.key.clone(), f.current.clone())));
                    failures = f;
                }
                Err(FlushFailed::Store(e)) => return storage_error(&e.to_string()),
            }
        }
        conflict_error(&failures, MAX_ATTEMPTS)
    }

    async fn execute(
        &self,
        driver: &mut StoreSession,
        attempt: &mut Attempt,
        job: &Job,
        limits: &Limits,
        now: u64,
    ) -> Result<(Outcome, Delta), Failed> {
        let mut misses = job.read_set();
        loop {
            self.hydrate_for(driver.session(), attempt, &misses).await?;
            self.count(|c| c.rounds += 1);
            let step = driver
                .execute(|s| job.execute_session(s, limits, now))
                .map_err(|e| Failed::Storage(e.to_string()))?;
            match step {
                Executed::Done(outcome, delta) => return Ok((outcome, delta)),
                Executed::NeedsHydration(m) => misses = m,
            }
        }
    }

    /// Hydrates `misses` for an attempt: states from the cache when it is optimistic
    /// (listings always need the coordinator), from the coordinator otherwise.
    async fn hydrate_for(
        &self,
        session: &IoBufferSession,
        attempt: &mut Attempt,
        misses: &Misses,
    ) -> Result<(), Failed> {
        let hydrate_failed = |e: StoreError| Failed::Storage(format!("hydration failed: {e}"));
        // States the attempt already has (a conflict's current values) stay as they are.
        let mut misses = misses.clone();
        misses
            .state_keys
            .retain(|k| !attempt.states.contains_key(k));
        if !attempt.optimistic {
            let read = self
                .hydrate(session, &misses)
                .await
                .map_err(hydrate_failed)?;
            attempt.states.extend(read);
            return Ok(());
        }
        if !misses.state_lists.is_empty() {
            return Err(Failed::NeedsCoordinator);
        }
        let state_keys = std::mem::take(&mut misses.state_keys);
        self.hydrate(session, &misses)
            .await
            .map_err(hydrate_failed)?;
        let served: Vec<(String, Option<Vec<u8>>)> = state_keys
            .into_iter()
            .map(|k| {
                let v = cache_get(&k).flatten();
                (k, v)
            })
            .collect();
        attempt.unverified |= served.iter().any(|(k, _)| k != LOG_HEAD_KEY);
        session.object_buf().hydrate_batch(served.iter().cloned());
        attempt.states.extend(served);
        Ok(())
    }

    /// Loads `misses` into the session: KV bulk gets, R2 gets and listings, and one
    /// coordinator call for all state keys and listings, the tiers concurrently.
    /// Answers the states read.
    pub async fn hydrate(
        &self,
        session: &IoBufferSession,
        misses: &Misses,
    ) -> StoreResult<Vec<(String, Option<Vec<u8>>)>> {
        let (tiers, states) = futures_util::future::join(
            self.hydrate_tiers(session, misses),
            self.hydrate_states(session, misses),
        )
        .await;
        tiers?;
        states
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
        for q in &misses.kv_lists {
            let (keys, calls) = kv::list(&self.kv, q).await?;
            self.count(|c| c.kv_reads += calls);
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

    async fn hydrate_states(
        &self,
        session: &IoBufferSession,
        misses: &Misses,
    ) -> StoreResult<Vec<(String, Option<Vec<u8>>)>> {
        if misses.state_keys.is_empty() && misses.state_lists.is_empty() {
            return Ok(Vec::new());
        }
        let req = ReadRequest {
            keys: misses.state_keys.clone(),
            lists: misses.state_lists.iter().map(ListSpec::from).collect(),
        };
        let reply: ReadReply = self.call(READ_PATH, &req).await?;
        if reply.values.len() != req.keys.len() || reply.lists.len() != req.lists.len() {
            return Err(backend(
                "coordinator read",
                "answer does not match the request",
            ));
        }
        let states: Vec<(String, Option<Vec<u8>>)> = req
            .keys
            .into_iter()
            .zip(reply.values)
            .map(|(k, v)| (k, v.map(|h| h.0)))
            .collect();
        cache_put(states.iter().cloned());
        session.object_buf().hydrate_batch(states.iter().cloned());
        for (q, keys) in misses.state_lists.iter().zip(reply.lists) {
            session.object_buf().hydrate_list(q, keys);
        }
        Ok(states)
    }

    async fn kv_put(&self, key: &str, value: &[u8]) -> StoreResult<()> {
        kv::put(&self.kv, key, value).await?;
        self.count(|c| c.kv_writes += 1);
        Ok(())
    }

    /// Flushes the delta in design order; answers the commit's `first_seq`.
    async fn flush(
        &self,
        delta: &Delta,
        checks: Vec<WireCheck>,
    ) -> Result<Option<u64>, FlushFailed> {
        let store = FlushFailed::Store;
        for (key, bytes) in &delta.blob_puts {
            r2::put(&self.blobs, key, bytes).await.map_err(store)?;
            self.count(|c| c.r2_writes += 1);
        }
        let (before, after) = delta.split_kv_puts(keys::is_after_commit);
        for (key, value) in before {
            if self.written.borrow().get(key).is_some_and(|v| v == value) {
                continue;
            }
            if key.starts_with(RECORD_PREFIX) {
                let (in_kv, in_r2) = futures_util::future::join(
                    self.kv_put(key, value),
                    r2::put(&self.blobs, key, value),
                )
                .await;
                in_kv.map_err(store)?;
                in_r2.map_err(store)?;
                self.count(|c| c.r2_writes += 1);
            } else {
                self.kv_put(key, value).await.map_err(store)?;
            }
            self.written
                .borrow_mut()
                .insert(key.to_owned(), value.to_vec());
        }
        let mut first_seq = None;
        if !delta.commit.is_empty() {
            let mut req = CommitRequest::new(&delta.commit);
            req.checks = checks;
            req.fail_after_ops = self.faults.fail_commit_after_ops;
            let reply: CommitReply = self.call(COMMIT_PATH, &req).await.map_err(store)?;
            match reply.outcome() {
                CommitOutcome::Applied { first_seq: s } => {
                    self.count(|c| c.commits += 1);
                    first_seq = s;
                    // What the commit read and wrote is what the coordinator now holds.
                    cache_put(
                        req.checks
                            .into_iter()
                            .map(|c| (c.key, c.value.map(|h| h.0)))
                            .chain(
                                delta
                                    .commit
                                    .ops
                                    .iter()
                                    .map(|op| (op.key.clone(), op.new.clone())),
                            ),
                    );
                }
                CommitOutcome::Conflict(failures) => return Err(FlushFailed::Conflict(failures)),
                other => {
                    return Err(store(backend(
                        "commit",
                        format!("unsupported outcome {other:?}"),
                    )));
                }
            }
        }
        // After the commit point the answer stands: an index entry lost here is
        // rewritten from the commit log (see `repair`), so errors are not fatal.
        // The index entries are independent of each other: written concurrently.
        if !self.faults.drop_index_writes {
            let writes = after.iter().map(|(key, value)| async move {
                if let Err(e) = self.kv_put(key, value).await {
                    worker::console_warn!("index entry {key} not written: {e}");
                }
            });
            futures_util::future::join_all(writes).await;
        }
        for key in &delta.kv_deletes {
            if kv::delete(&self.kv, key).await.is_ok() {
                self.count(|c| c.kv_writes += 1);
            }
        }
        for key in &delta.blob_deletes {
            if r2::delete(&self.blobs, key).await.is_ok() {
                self.count(|c| c.r2_writes += 1);
            }
        }
        Ok(first_seq)
    }

    /// One call to the coordinator.
    async fn call<Q: serde::Serialize, A: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        request: &Q,
    ) -> StoreResult<A> {
        let body = serde_json::to_string(request).map_err(|e| backend("coordinator", e))?;
        let mut init = RequestInit::new();
        init.with_method(Method::Post).with_body(Some(body.into()));
        let req = Request::new_with_init(&format!("https://coordinator{path}"), &init)
            .map_err(|e| backend("coordinator", e))?;
        self.count(|c| c.do_calls += 1);
        let mut resp = self
            .coordinator
            .fetch_with_request(req)
            .await
            .map_err(|e| backend("coordinator", e))?;
        let bytes = resp.bytes().await.map_err(|e| backend("coordinator", e))?;
        if resp.status_code() != 200 {
            return Err(backend(
                "coordinator",
                String::from_utf8_lossy(&bytes).into_owned(),
            ));
        }
        serde_json::from_slice(&bytes).map_err(|e| backend("coordinator answer", e))
    }
}
