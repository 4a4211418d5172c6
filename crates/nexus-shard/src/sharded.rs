//! [`ShardedObjects`]: one [`ObjectStore`] over N shard stores, running the protocol
//! synchronously — the reference host, and what the tests and the simulator use.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use nexus_store::{
    BlobStore, CasOp, Commit, CommitOutcome, KeyValueStore, LOG_HEAD_KEY, ObjectStore, StoreError,
    StoreResult, check_commit, check_writable_state_key, log_key, parse_head,
};

use crate::cross::{CrossError, Lost, ShardStep};
use crate::drive::{DriveCounts, ShardedCommit, ShardedRead, merge_listings};
use crate::map::{ShardError, ShardMap};
use crate::merge::merge_order;
use crate::resolve::{Resolution, Resolver, part_rows, sweep};

/// What the transport does to one call to a shard ([`ShardedObjects::set_faults`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The call applies and its answer arrives.
    Deliver,
    /// The call applies; its answer is lost (the object was reset after applying).
    LoseAnswer,
    /// The call does not apply; its answer is lost (reset before applying).
    LoseCall,
    /// The coordinator stops before the call (its isolate died): the commit fails with
    /// a backend error, leaving its transaction as it is for a resolver.
    Stall,
    /// The call applies, then the coordinator stops (as [`Fault::Stall`]).
    StallAfter,
}

/// Chooses the [`Fault`] of each call: `(shard, commit) -> Fault`.
pub type FaultHook = Box<dyn FnMut(usize, &Commit) -> Fault + Send>;

/// Counters of what a [`ShardedObjects`] did (coordinator calls per commit).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShardStats {
    /// Commits decided on one shard (the fast path).
    pub single_shard: u64,
    /// Calls those sent.
    pub single_shard_calls: u64,
    /// Commits decided over several shards.
    pub cross_shard: u64,
    /// Calls those sent (re-sends included).
    pub cross_shard_calls: u64,
    /// Answers lost.
    pub lost: u64,
    /// Stale transactions resolved (by commits, reads and sweeps).
    pub resolved: u64,
    /// Resolver calls and reads.
    pub resolver_calls: u64,
}

struct Inner<O> {
    shards: Vec<O>,
    map: ShardMap,
    now: AtomicU64,
    nonce: AtomicU64,
    hook: Mutex<Option<FaultHook>>,
    stats: Mutex<ShardStats>,
}

/// An [`ObjectStore`] over N shard stores (spec/shards.md): keys routed by the
/// [`ShardMap`], single-shard commits in one call, cross-shard commits by the
/// [`CrossCommit`] protocol run synchronously, stale locks resolved when a commit or a
/// read meets them (and by [`sweep_all`](Self::sweep_all)). Cloning shares the shards.
///
/// Its own clock ([`set_now`](Self::set_now)) times the locks: a host advances it.
///
/// The facade's view of per-shard keys (the log, the flush cursor) is shard 0's; each
/// shard's own log is [`shard_log`](Self::shard_log), their one order
/// [`merged_log`](Self::merged_log). The key-value and blob tiers are not sharded
/// (Workers KV and R2 are global): they are shard 0's store's.
///
/// With one shard it is the shard store itself: every call passes through unchanged.
pub struct ShardedObjects<O> {
    inner: Arc<Inner<O>>,
}

impl<O> Clone for ShardedObjects<O> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<O> std::fmt::Debug for ShardedObjects<O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardedObjects")
            .field("shards", &self.inner.map.shards())
            .field("now", &self.inner.now.load(Ordering::SeqCst))
            .finish_non_exhaustive()
    }
}

/// Most calls one commit or resolution may send (re-sends of lost answers included)
/// before the host gives up on it (its transaction is left to a resolver).
pub const MAX_CALLS: usize = 256;
/// Most times a commit that met stale locks resolves them and starts again.
pub const MAX_RESOLVE_ROUNDS: usize = 4;
/// Most steps one commit or read (with its resolutions) may take here.
const MAX_STEPS: usize = MAX_CALLS * (MAX_RESOLVE_ROUNDS + 1) * 4;

/// A sans-IO machine of this crate, as [`ShardedObjects`] drives it.
trait Machine {
    type Out;
    fn poll(&mut self) -> ShardStep<Result<Self::Out, CrossError>>;
    fn feed(&mut self, shard: usize, answer: Result<CommitOutcome, Lost>);
    fn feed_read(&mut self, shard: usize, values: Result<Vec<Option<Vec<u8>>>, Lost>);
}

macro_rules! machine {
    ($t:ty, $out:ty) => {
        impl Machine for $t {
            type Out = $out;
            fn poll(&mut self) -> ShardStep<Result<$out, CrossError>> {
                <$t>::poll(self)
            }
            fn feed(&mut self, shard: usize, answer: Result<CommitOutcome, Lost>) {
                <$t>::feed(self, shard, answer)
            }
            fn feed_read(&mut self, shard: usize, values: Result<Vec<Option<Vec<u8>>>, Lost>) {
                <$t>::feed_read(self, shard, values)
            }
        }
    };
}

machine!(ShardedCommit, CommitOutcome);
machine!(ShardedRead, Vec<Option<Vec<u8>>>);
machine!(Resolver, Resolution);

fn backend(e: CrossError) -> StoreError {
    match e {
        CrossError::Corrupt { key, reason, .. } => StoreError::Corrupt { key, reason },
        CrossError::Split(e) => e.into(),
        other => StoreError::Backend(other.to_string()),
    }
}

fn stalled() -> StoreError {
    StoreError::Backend("the coordinator stopped mid-commit (injected stall)".to_owned())
}

/// One shard's log entry in the merged order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergedEntry {
    /// The shard.
    pub shard: usize,
    /// Its seq in that shard's log.
    pub seq: u64,
    /// The entry.
    pub entry: Vec<u8>,
}

impl<O: ObjectStore> ShardedObjects<O> {
    /// A store over `shards` (1 to [`crate::MAX_SHARDS`] of them; shard `i` is
    /// `shards[i]`).
    pub fn new(shards: Vec<O>) -> Result<Self, ShardError> {
        let map = ShardMap::new(shards.len())?;
        Ok(Self {
            inner: Arc::new(Inner {
                shards,
                map,
                now: AtomicU64::new(0),
                nonce: AtomicU64::new(0),
                hook: Mutex::new(None),
                stats: Mutex::new(ShardStats::default()),
            }),
        })
    }

    /// The placement.
    pub fn map(&self) -> &ShardMap {
        &self.inner.map
    }

    /// Shard `i`'s store.
    pub fn shard(&self, i: usize) -> Option<&O> {
        self.inner.shards.get(i)
    }

    /// Every shard's store.
    pub fn shards(&self) -> &[O] {
        &self.inner.shards
    }

    /// The clock (ms) that times locks.
    pub fn now(&self) -> u64 {
        self.inner.now.load(Ordering::SeqCst)
    }

    /// Sets the clock (ms).
    pub fn set_now(&self, now: u64) {
        self.inner.now.store(now, Ordering::SeqCst);
    }

    /// Advances the clock by `ms`.
    pub fn advance(&self, ms: u64) {
        self.inner.now.fetch_add(ms, Ordering::SeqCst);
    }

    /// Injects faults: `hook` chooses what happens to each call to a shard (`None`:
    /// every call delivers).
    pub fn set_faults(&self, hook: Option<FaultHook>) {
        *self
            .inner
            .hook
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = hook;
    }

    /// What the store did so far.
    pub fn stats(&self) -> ShardStats {
        *self
            .inner
            .stats
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn count(&self, f: impl FnOnce(&mut ShardStats)) {
        f(&mut self
            .inner
            .stats
            .lock()
            .unwrap_or_else(PoisonError::into_inner));
    }

    fn store(&self, shard: usize) -> StoreResult<&O> {
        self.inner
            .shards
            .get(shard)
            .ok_or_else(|| StoreError::Backend(format!("no shard {shard}")))
    }

    /// One call to a shard, through the fault hook.
    fn call(&self, shard: usize, commit: &Commit) -> StoreResult<Result<CommitOutcome, Lost>> {
        let fault = match self
            .inner
            .hook
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_mut()
        {
            Some(hook) => hook(shard, commit),
            None => Fault::Deliver,
        };
        let store = self.store(shard)?;
        match fault {
            Fault::Deliver => Ok(Ok(store.commit(commit)?)),
            Fault::LoseAnswer => {
                store.commit(commit)?;
                self.count(|s| s.lost += 1);
                Ok(Err(Lost))
            }
            Fault::LoseCall => {
                self.count(|s| s.lost += 1);
                Ok(Err(Lost))
            }
            Fault::Stall => Err(stalled()),
            Fault::StallAfter => {
                store.commit(commit)?;
                Err(stalled())
            }
        }
    }

    /// Runs a sans-IO machine to its end, answering its steps from the shards.
    fn drive<M: Machine>(&self, m: &mut M) -> StoreResult<M::Out> {
        for _ in 0..MAX_STEPS {
            match m.poll() {
                ShardStep::Call { shard, commit } => {
                    let answer = self.call(shard, &commit)?;
                    m.feed(shard, answer);
                }
                ShardStep::Read { shard, keys } => {
                    let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
                    let values = self.store(shard)?.get_states(&refs)?;
                    m.feed_read(shard, Ok(values));
                }
                ShardStep::Done(r) => return r.map_err(backend),
            }
        }
        Err(StoreError::Backend(format!(
            "gave up after {MAX_STEPS} calls (answers kept being lost)"
        )))
    }

    fn add_counts(&self, c: DriveCounts) {
        self.count(|s| {
            s.single_shard += c.single_shard;
            s.single_shard_calls += c.single_shard_calls;
            s.cross_shard += c.cross_shard;
            s.cross_shard_calls += c.cross_shard_calls;
            s.resolved += c.resolved;
            s.resolver_calls += c.resolver_calls;
        });
    }

    /// Runs a resolver to its end.
    pub fn run_resolver(&self, mut r: Resolver) -> StoreResult<Resolution> {
        let before = r.calls();
        let result = self.drive(&mut r);
        let calls = (r.calls() - before) as u64;
        self.count(|s| {
            s.resolver_calls += calls;
            if matches!(
                result,
                Ok(Resolution::RolledForward | Resolution::RolledBack)
            ) {
                s.resolved += 1;
            }
        });
        result
    }

    /// A commit over the shards: [`ShardedCommit`] run synchronously.
    fn sharded_commit(&self, commit: &Commit) -> StoreResult<CommitOutcome> {
        let nonce = self
            .inner
            .nonce
            .fetch_add(MAX_RESOLVE_ROUNDS as u64 + 1, Ordering::SeqCst);
        let mut m = ShardedCommit::new(self.map(), commit, self.now(), nonce)?;
        let result = self.drive(&mut m);
        self.add_counts(m.counts());
        result
    }

    /// Reads `keys` at their homes, resolving the stale locks met: [`ShardedRead`] run
    /// synchronously.
    fn sharded_reads(&self, keys: &[&str]) -> StoreResult<Vec<Option<Vec<u8>>>> {
        let mut m = ShardedRead::new(self.map(), keys, self.now())?;
        let result = self.drive(&mut m);
        self.add_counts(m.counts());
        result
    }

    /// Resolves every stale part on every shard (what the shards' alarms do); returns
    /// the earliest time any shard's alarm must run again (`None`: no part remains).
    pub fn sweep_all(&self) -> StoreResult<Option<u64>> {
        let now = self.now();
        let mut next: Option<u64> = None;
        for s in 0..self.map().shards() {
            let rows = part_rows(self.store(s)?)?;
            let plan = sweep(s, &rows, now).map_err(backend)?;
            for r in plan.resolvers {
                self.run_resolver(r)?;
            }
            // Settled parts are gone; what remains decides the alarm.
            let rows = part_rows(self.store(s)?)?;
            let left = sweep(s, &rows, now).map_err(backend)?;
            if let Some(at) = left.next_alarm {
                next = Some(next.map_or(at, |n: u64| n.min(at)));
            }
        }
        Ok(next)
    }

    /// Shard `i`'s log, `(seq, entry)` from 1.
    pub fn shard_log(&self, i: usize) -> StoreResult<Vec<(u64, Vec<u8>)>> {
        let store = self.store(i)?;
        let head = match store.get_state(LOG_HEAD_KEY)? {
            None => 0,
            Some(v) => parse_head(&v)?,
        };
        let mut out = Vec::with_capacity(usize::try_from(head).unwrap_or(0));
        let mut seq = 1;
        while seq <= head {
            let last = head.min(seq + 99);
            let keys: Vec<String> = (seq..=last).map(log_key).collect();
            let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
            for (s, v) in (seq..=last).zip(store.get_states(&refs)?) {
                let v = v.ok_or_else(|| StoreError::Corrupt {
                    key: log_key(s),
                    reason: "log entry missing below the head".to_owned(),
                })?;
                out.push((s, v));
            }
            seq = last + 1;
        }
        Ok(out)
    }

    /// Every shard's log in the one order of [`merge_order`].
    pub fn merged_log(&self) -> StoreResult<Vec<MergedEntry>> {
        let logs: Vec<Vec<(u64, Vec<u8>)>> = (0..self.map().shards())
            .map(|i| self.shard_log(i))
            .collect::<StoreResult<_>>()?;
        let order = merge_order(&logs).map_err(|e| StoreError::Corrupt {
            key: LOG_HEAD_KEY.to_owned(),
            reason: e.to_string(),
        })?;
        Ok(order
            .into_iter()
            .map(|(shard, seq)| {
                let entry = usize::try_from(seq - 1)
                    .ok()
                    .and_then(|i| logs[shard].get(i))
                    .map(|(_, e)| e.clone())
                    .unwrap_or_default();
                MergedEntry { shard, seq, entry }
            })
            .collect())
    }
}

impl<O: ObjectStore> ObjectStore for ShardedObjects<O> {
    fn get_state(&self, key: &str) -> StoreResult<Option<Vec<u8>>> {
        if self.map().shards() == 1 {
            return self.store(0)?.get_state(key);
        }
        Ok(self.sharded_reads(&[key])?.pop().flatten())
    }

    fn get_states(&self, keys: &[&str]) -> StoreResult<Vec<Option<Vec<u8>>>> {
        if self.map().shards() == 1 {
            return self.store(0)?.get_states(keys);
        }
        self.sharded_reads(keys)
    }

    fn put_state(&self, key: &str, expected: Option<&[u8]>, new: &[u8]) -> StoreResult<bool> {
        if self.map().shards() == 1 {
            return self.store(0)?.put_state(key, expected, new);
        }
        check_writable_state_key(key)?;
        let commit = Commit::new(
            vec![CasOp {
                key: key.to_owned(),
                expected: expected.map(<[u8]>::to_vec),
                new: Some(new.to_vec()),
            }],
            vec![],
        );
        Ok(matches!(
            self.sharded_commit(&commit)?,
            CommitOutcome::Applied { .. }
        ))
    }

    fn list_states(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<String>> {
        let map = self.map();
        if map.shards() == 1 {
            return self.store(0)?.list_states(prefix, start_after, limit);
        }
        let mut answers = Vec::new();
        for s in map.list_shards(prefix) {
            let store = self.store(s)?;
            let mut after = start_after.map(str::to_owned);
            let mut kept = Vec::new();
            while kept.len() < limit {
                let page = store.list_states(prefix, after.as_deref(), limit)?;
                let full = page.len() == limit;
                after = page.last().cloned();
                kept.extend(page.into_iter().filter(|k| map.home(k) == s));
                if !full || after.is_none() {
                    break;
                }
            }
            answers.push(kept);
        }
        Ok(merge_listings(answers, start_after, limit))
    }

    fn commit(&self, commit: &Commit) -> StoreResult<CommitOutcome> {
        if self.map().shards() == 1 {
            return self.store(0)?.commit(commit);
        }
        check_commit(commit)?;
        self.sharded_commit(commit)
    }
}

/// The key-value tier is not sharded: shard 0's store's.
impl<O: ObjectStore + KeyValueStore> KeyValueStore for ShardedObjects<O> {
    fn get(&self, key: &str) -> StoreResult<Option<Vec<u8>>> {
        self.store(0)?.get(key)
    }
    fn get_many(&self, keys: &[&str]) -> StoreResult<Vec<Option<Vec<u8>>>> {
        self.store(0)?.get_many(keys)
    }
    fn set(&self, key: &str, value: &[u8]) -> StoreResult<()> {
        self.store(0)?.set(key, value)
    }
    fn delete(&self, key: &str) -> StoreResult<()> {
        self.store(0)?.delete(key)
    }
    fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<String>> {
        self.store(0)?.list(prefix, start_after, limit)
    }
}

/// The blob tier is not sharded: shard 0's store's.
impl<O: ObjectStore + BlobStore> BlobStore for ShardedObjects<O> {
    fn get_blob(&self, key: &str) -> StoreResult<Option<Vec<u8>>> {
        self.store(0)?.get_blob(key)
    }
    fn put_blob(&self, key: &str, bytes: &[u8]) -> StoreResult<()> {
        self.store(0)?.put_blob(key, bytes)
    }
    fn delete_blob(&self, key: &str) -> StoreResult<()> {
        self.store(0)?.delete_blob(key)
    }
    fn list_blobs(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<String>> {
        self.store(0)?.list_blobs(prefix, start_after, limit)
    }
}
