//! The two loops that decide correctness over the shards, as sans-IO state machines a
//! host drives (synchronously, as [`crate::ShardedObjects`] does, or with async calls,
//! as the Worker does): [`ShardedCommit`] (a [`CrossCommit`], resolving the stale locks
//! it met and trying again) and [`ShardedRead`] (reads at the keys' homes with their
//! `lock/` rows, stale locks resolved, read again). Also the listing helpers: which
//! shards a listing asks ([`ShardMap::list_shards`]) and how their answers merge
//! ([`merge_listings`], [`merge_state_listings`]).

use nexus_store::{CasFailure, Commit, CommitOutcome, MAX_KEY_LEN, StoreError, check_key};

use crate::cross::{CallKind, CrossCommit, CrossError, Lost, MetLock, ShardStep};
use crate::map::{HASHED_PREFIXES, Placement, ShardError, ShardMap};
use crate::protocol::{LOCK_PREFIX, LOCK_TTL_MS, Lock, is_protocol_key, lock_key};
use crate::resolve::{Resolution, Resolver};
use crate::sharded::MAX_RESOLVE_ROUNDS;

/// What a [`ShardedCommit`] or a [`ShardedRead`] sent, for a host's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DriveCounts {
    /// Attempts decided on one shard (the fast path).
    pub single_shard: u64,
    /// Calls those sent.
    pub single_shard_calls: u64,
    /// Attempts decided over several shards.
    pub cross_shard: u64,
    /// Calls those sent (re-sends included).
    pub cross_shard_calls: u64,
    /// Stale transactions resolved (rolled forward or back).
    pub resolved: u64,
    /// Resolver calls and reads.
    pub resolver_calls: u64,
}

impl DriveCounts {
    fn add_attempt(&mut self, cc: &CrossCommit) {
        let calls = cc.stats().calls as u64;
        if cc.split().is_single_shard() {
            self.single_shard += 1;
            self.single_shard_calls += calls;
        } else {
            self.cross_shard += 1;
            self.cross_shard_calls += calls;
        }
    }

    fn add_resolver(&mut self, r: &Resolver, done: Option<&Result<Resolution, CrossError>>) {
        self.resolver_calls += r.calls() as u64;
        if matches!(
            done,
            Some(Ok(Resolution::RolledForward | Resolution::RolledBack))
        ) {
            self.resolved += 1;
        }
    }
}

/// The stale locks met, resolved one after the other.
#[derive(Debug, Clone)]
struct Resolving<T> {
    /// What the host gets when resolving ends without a retry.
    fallback: T,
    /// Locks still to look at: `(shard, lock)`.
    left: Vec<(usize, Lock)>,
    current: Option<Resolver>,
    resolved: bool,
}

impl<T> Resolving<T> {
    fn new(fallback: T, mut left: Vec<(usize, Lock)>) -> Self {
        left.reverse();
        Self {
            fallback,
            left,
            current: None,
            resolved: false,
        }
    }

    /// The next step of the current resolver, starting the next stale one; `Ok(None)`
    /// once every lock was looked at.
    fn poll(
        &mut self,
        now: u64,
        ttl: u64,
        counts: &mut DriveCounts,
    ) -> Result<Option<ShardStep<()>>, CrossError> {
        loop {
            if let Some(r) = &mut self.current {
                match r.poll() {
                    ShardStep::Call { shard, commit } => {
                        return Ok(Some(ShardStep::Call { shard, commit }));
                    }
                    ShardStep::Read { shard, keys } => {
                        return Ok(Some(ShardStep::Read { shard, keys }));
                    }
                    ShardStep::Done(result) => {
                        counts.add_resolver(r, Some(&result));
                        self.current = None;
                        // Settled (or gone) unless young and undecided.
                        self.resolved |= !matches!(result?, Resolution::Young { .. });
                    }
                }
                continue;
            }
            let Some((shard, lock)) = self.left.pop() else {
                return Ok(None);
            };
            self.current = Some(Resolver::for_lock(shard, lock, now).with_ttl(ttl));
        }
    }

    fn feed(&mut self, shard: usize, answer: Result<CommitOutcome, Lost>) {
        if let Some(r) = &mut self.current {
            r.feed(shard, answer);
        }
    }

    fn feed_read(&mut self, shard: usize, values: Result<Vec<Option<Vec<u8>>>, Lost>) {
        if let Some(r) = &mut self.current {
            r.feed_read(shard, values);
        }
    }

    fn calls_in_flight(&self) -> u64 {
        self.current.as_ref().map_or(0, |r| r.calls() as u64)
    }
}

#[derive(Debug, Clone)]
enum CommitState {
    Commit,
    Resolve(Resolving<Vec<CasFailure>>),
    /// Out of rounds: the conflict's keys read again (a conflict names a locked key
    /// with the value under its lock, stale once that lock's transaction settled).
    Refresh(Box<ShardedRead>, Vec<CasFailure>),
    Finished(Result<CommitOutcome, CrossError>),
    Spent,
}

/// One commit over the shards to its end, as a sans-IO state machine: a
/// [`CrossCommit`]; when it is refused having met other transactions' locks, those
/// that can be settled (decided, or stale) are ([`Resolver`]) and the commit runs
/// again (at most [`MAX_RESOLVE_ROUNDS`] times, each attempt with a fresh txn id); only
/// young undecided locks, or still meeting locks after that, is the conflict.
///
/// [`poll`](Self::poll) says what to send ([`ShardStep::Call`]: one single-shard
/// commit; [`ShardStep::Read`]: one read, for a resolver), [`feed`](Self::feed) and
/// [`feed_read`](Self::feed_read) take the answers. Polling again before feeding asks
/// again. [`pending`](Self::pending) says which phase a call is (a host attaches what
/// must apply with the commit point to it, and test hosts stop at a phase).
#[derive(Debug, Clone)]
pub struct ShardedCommit {
    map: ShardMap,
    commit: Commit,
    now: u64,
    nonce: u64,
    ttl: u64,
    round: usize,
    cc: CrossCommit,
    /// Whether the current attempt's counts are in `counts` already.
    counted: bool,
    state: CommitState,
    counts: DriveCounts,
}

impl ShardedCommit {
    /// A commit of `commit` over `map`'s shards at `now` (ms: the time of its locks and
    /// of staleness), with txn ids from `nonce` (attempt `r` uses `nonce + r`: a host
    /// reserves [`MAX_RESOLVE_ROUNDS`]` + 1` nonces per commit). Locks older than
    /// [`LOCK_TTL_MS`] are stale ([`with_ttl`](Self::with_ttl) changes it). The keys
    /// must have passed [`nexus_store::check_commit`].
    pub fn new(map: &ShardMap, commit: &Commit, now: u64, nonce: u64) -> Result<Self, ShardError> {
        let cc = CrossCommit::new(map, commit, now, nonce)?;
        Ok(Self {
            map: *map,
            commit: commit.clone(),
            now,
            nonce,
            ttl: LOCK_TTL_MS,
            round: 0,
            cc,
            counted: false,
            state: CommitState::Commit,
            counts: DriveCounts::default(),
        })
    }

    /// The same commit with a lock TTL of `ttl` ms (set before the first poll).
    pub fn with_ttl(mut self, ttl: u64) -> Self {
        self.ttl = ttl;
        self
    }

    /// The current attempt.
    pub fn attempt(&self) -> &CrossCommit {
        &self.cc
    }

    /// The phase of the pending call, when it is the commit's own (`None` while a
    /// resolver's call is pending, or when finished).
    pub fn pending(&self) -> Option<CallKind> {
        match self.state {
            CommitState::Commit => self.cc.pending(),
            _ => None,
        }
    }

    /// What was sent so far (the attempt under way included).
    pub fn counts(&self) -> DriveCounts {
        let mut c = self.counts;
        match &self.state {
            CommitState::Commit if !self.counted => c.add_attempt(&self.cc),
            CommitState::Resolve(r) => c.resolver_calls += r.calls_in_flight(),
            _ => {}
        }
        c
    }

    /// What to do next.
    pub fn poll(&mut self) -> ShardStep<Result<CommitOutcome, CrossError>> {
        loop {
            match &mut self.state {
                CommitState::Commit => match self.cc.poll() {
                    ShardStep::Call { shard, commit } => {
                        return ShardStep::Call { shard, commit };
                    }
                    ShardStep::Read { shard, keys } => return ShardStep::Read { shard, keys },
                    ShardStep::Done(result) => {
                        self.counts.add_attempt(&self.cc);
                        self.counted = true;
                        self.state = match result {
                            Ok(CommitOutcome::Conflict(f)) if !self.cc.locks_met().is_empty() => {
                                let met = self
                                    .cc
                                    .locks_met()
                                    .iter()
                                    .map(|m: &MetLock| (m.shard, m.lock.clone()))
                                    .collect();
                                CommitState::Resolve(Resolving::new(f, met))
                            }
                            other => CommitState::Finished(other),
                        };
                    }
                },
                CommitState::Resolve(r) => match r.poll(self.now, self.ttl, &mut self.counts) {
                    Ok(Some(ShardStep::Call { shard, commit })) => {
                        return ShardStep::Call { shard, commit };
                    }
                    Ok(Some(ShardStep::Read { shard, keys })) => {
                        return ShardStep::Read { shard, keys };
                    }
                    Ok(Some(ShardStep::Done(()))) => {}
                    Err(e) => self.state = CommitState::Finished(Err(e)),
                    Ok(None) => {
                        if self.round >= MAX_RESOLVE_ROUNDS {
                            let f = std::mem::take(&mut r.fallback);
                            let keys: Vec<&str> = f.iter().map(|x| x.key.as_str()).collect();
                            self.state = match ShardedRead::new(&self.map, &keys, self.now) {
                                Ok(read) => {
                                    CommitState::Refresh(Box::new(read.with_ttl(self.ttl)), f)
                                }
                                Err(e) => CommitState::Finished(Err(CrossError::Corrupt {
                                    shard: self.cc.split().primary(),
                                    key: String::new(),
                                    reason: e.to_string(),
                                })),
                            };
                            continue;
                        }
                        if !r.resolved {
                            let f = std::mem::take(&mut r.fallback);
                            self.state = CommitState::Finished(Ok(CommitOutcome::Conflict(f)));
                            continue;
                        }
                        self.round += 1;
                        let nonce = self.nonce.wrapping_add(self.round as u64);
                        match CrossCommit::new(&self.map, &self.commit, self.now, nonce) {
                            Ok(cc) => {
                                self.cc = cc;
                                self.counted = false;
                                self.state = CommitState::Commit;
                            }
                            Err(e) => self.state = CommitState::Finished(Err(e.into())),
                        }
                    }
                },
                CommitState::Refresh(read, failures) => match read.poll() {
                    ShardStep::Call { shard, commit } => return ShardStep::Call { shard, commit },
                    ShardStep::Read { shard, keys } => return ShardStep::Read { shard, keys },
                    ShardStep::Done(values) => {
                        self.counts.resolver_calls += read.counts().resolver_calls;
                        self.state = CommitState::Finished(values.map(|values| {
                            CommitOutcome::Conflict(
                                failures
                                    .iter()
                                    .zip(values)
                                    .map(|(f, current)| CasFailure {
                                        key: f.key.clone(),
                                        current,
                                    })
                                    .collect(),
                            )
                        }));
                    }
                },
                CommitState::Finished(_) | CommitState::Spent => {
                    return match std::mem::replace(&mut self.state, CommitState::Spent) {
                        CommitState::Finished(r) => ShardStep::Done(r),
                        _ => ShardStep::Done(Err(CrossError::OutcomeUnknown {
                            shard: self.cc.split().primary(),
                        })),
                    };
                }
            }
        }
    }

    /// The answer of the last [`ShardStep::Call`].
    pub fn feed(&mut self, shard: usize, answer: Result<CommitOutcome, Lost>) {
        match &mut self.state {
            CommitState::Commit => self.cc.feed(shard, answer),
            CommitState::Resolve(r) => r.feed(shard, answer),
            CommitState::Refresh(read, _) => read.feed(shard, answer),
            _ => {}
        }
    }

    /// The values of the last [`ShardStep::Read`], in the order of its keys.
    pub fn feed_read(&mut self, shard: usize, values: Result<Vec<Option<Vec<u8>>>, Lost>) {
        match &mut self.state {
            CommitState::Resolve(r) => r.feed_read(shard, values),
            CommitState::Refresh(read, _) => read.feed_read(shard, values),
            _ => {}
        }
    }
}

/// Where one key's value and lock row are in the per-shard batches.
#[derive(Debug, Clone, Copy)]
struct At {
    shard: usize,
    value: usize,
    lock: Option<usize>,
}

#[derive(Debug, Clone)]
enum ReadState {
    Reading,
    Resolve(Resolving<Vec<Option<Vec<u8>>>>),
    Finished(Result<Vec<Option<Vec<u8>>>, CrossError>),
    Spent,
}

/// Reads of state keys over the shards, as a sans-IO state machine: each key at its
/// home shard, with its `lock/` row beside it when it can be locked (more than one
/// shard); the transaction of a lock met is settled first when it is decided or stale
/// ([`Resolver`]) and the keys read again (at most [`MAX_RESOLVE_ROUNDS`] rounds; then
/// read as the shards hold them), so a read never serves a value from before a commit
/// point. A lock of a young undecided transaction does not hold a read up: the value
/// read is the last committed one (a prepared part writes nothing before its release).
///
/// [`pending_reads`](Self::pending_reads) names every read of the current round (one
/// per shard involved: a host may send them concurrently); [`poll`](Self::poll) names
/// the first one not yet answered, or a resolver's call.
#[derive(Debug, Clone)]
pub struct ShardedRead {
    map: ShardMap,
    keys: Vec<String>,
    now: u64,
    ttl: u64,
    round: usize,
    batches: Vec<(usize, Vec<String>)>,
    answers: Vec<Option<Vec<Option<Vec<u8>>>>>,
    at: Vec<At>,
    state: ReadState,
    counts: DriveCounts,
}

impl ShardedRead {
    /// Reads of `keys` over `map`'s shards at `now` (ms: staleness of the locks met).
    pub fn new(map: &ShardMap, keys: &[&str], now: u64) -> Result<Self, StoreError> {
        for key in keys {
            check_key(key)?;
        }
        let mut r = Self {
            map: *map,
            keys: keys.iter().map(|k| (*k).to_owned()).collect(),
            now,
            ttl: LOCK_TTL_MS,
            round: 0,
            batches: Vec::new(),
            answers: Vec::new(),
            at: Vec::new(),
            state: ReadState::Reading,
            counts: DriveCounts::default(),
        };
        r.plan(true);
        Ok(r)
    }

    /// The same reads with a lock TTL of `ttl` ms (set before the first poll).
    pub fn with_ttl(mut self, ttl: u64) -> Self {
        self.ttl = ttl;
        self
    }

    /// What resolvers sent so far.
    pub fn counts(&self) -> DriveCounts {
        let mut c = self.counts;
        if let ReadState::Resolve(r) = &self.state {
            c.resolver_calls += r.calls_in_flight();
        }
        c
    }

    fn plan(&mut self, with_locks: bool) {
        let mut batches: Vec<Vec<String>> = vec![Vec::new(); self.map.shards()];
        self.at.clear();
        for key in &self.keys {
            let shard = self.map.home(key);
            let value = batches[shard].len();
            batches[shard].push(key.clone());
            let lockable = with_locks
                && self.map.shards() > 1
                && self.map.placement(key) != Placement::Local
                && !is_protocol_key(key)
                && key.len() + LOCK_PREFIX.len() <= MAX_KEY_LEN;
            let lock = lockable.then(|| {
                batches[shard].push(lock_key(key));
                batches[shard].len() - 1
            });
            self.at.push(At { shard, value, lock });
        }
        self.batches = batches
            .into_iter()
            .enumerate()
            .filter(|(_, b)| !b.is_empty())
            .collect();
        self.answers = vec![None; self.batches.len()];
    }

    /// Every read of the current round not answered yet: `(shard, keys)`, one per
    /// shard (empty while a resolver runs, or when finished).
    pub fn pending_reads(&self) -> Vec<(usize, Vec<String>)> {
        if !matches!(self.state, ReadState::Reading) {
            return Vec::new();
        }
        self.batches
            .iter()
            .zip(&self.answers)
            .filter(|(_, a)| a.is_none())
            .map(|(b, _)| b.clone())
            .collect()
    }

    fn batch_value(&self, shard: usize, i: usize) -> Option<Vec<u8>> {
        let b = self.batches.iter().position(|(s, _)| *s == shard)?;
        self.answers[b].as_ref()?.get(i).cloned().flatten()
    }

    /// Every answer of the round is in: the values, or the locks to settle first.
    fn settle(&mut self) -> ReadState {
        let mut met = Vec::new();
        for (key, at) in self.keys.iter().zip(&self.at) {
            let Some(bytes) = at.lock.and_then(|i| self.batch_value(at.shard, i)) else {
                continue;
            };
            match Lock::decode(&bytes) {
                Ok(lock) => met.push((at.shard, lock)),
                Err(e) => {
                    return ReadState::Finished(Err(CrossError::Corrupt {
                        shard: at.shard,
                        key: lock_key(key),
                        reason: e.to_string(),
                    }));
                }
            }
        }
        let values: Vec<Option<Vec<u8>>> = self
            .at
            .iter()
            .map(|at| self.batch_value(at.shard, at.value))
            .collect();
        if met.is_empty() {
            return ReadState::Finished(Ok(values));
        }
        ReadState::Resolve(Resolving::new(values, met))
    }

    /// What to do next.
    pub fn poll(&mut self) -> ShardStep<Result<Vec<Option<Vec<u8>>>, CrossError>> {
        loop {
            match &mut self.state {
                ReadState::Reading => {
                    if let Some((shard, keys)) = self.pending_reads().into_iter().next() {
                        return ShardStep::Read { shard, keys };
                    }
                    self.state = self.settle();
                }
                ReadState::Resolve(r) => match r.poll(self.now, self.ttl, &mut self.counts) {
                    Ok(Some(ShardStep::Call { shard, commit })) => {
                        return ShardStep::Call { shard, commit };
                    }
                    Ok(Some(ShardStep::Read { shard, keys })) => {
                        return ShardStep::Read { shard, keys };
                    }
                    Ok(Some(ShardStep::Done(()))) => {}
                    Err(e) => self.state = ReadState::Finished(Err(e)),
                    Ok(None) if !r.resolved => {
                        // Only young undecided transactions: what was read stands.
                        let values = std::mem::take(&mut r.fallback);
                        self.state = ReadState::Finished(Ok(values));
                    }
                    Ok(None) => {
                        self.round += 1;
                        // Still meeting locks: read as the shards hold it.
                        let with_locks = self.round < MAX_RESOLVE_ROUNDS;
                        self.plan(with_locks);
                        self.state = ReadState::Reading;
                    }
                },
                ReadState::Finished(_) | ReadState::Spent => {
                    return match std::mem::replace(&mut self.state, ReadState::Spent) {
                        ReadState::Finished(r) => ShardStep::Done(r),
                        _ => ShardStep::Done(Ok(Vec::new())),
                    };
                }
            }
        }
    }

    /// The values read on `shard` (one of [`pending_reads`](Self::pending_reads), or a
    /// resolver's read), in the order of its keys. A [`Lost`] read is asked again.
    pub fn feed_read(&mut self, shard: usize, values: Result<Vec<Option<Vec<u8>>>, Lost>) {
        match &mut self.state {
            ReadState::Reading => {
                let Some(b) = self.batches.iter().position(|(s, _)| *s == shard) else {
                    return;
                };
                let Ok(values) = values else { return };
                if values.len() != self.batches[b].1.len() {
                    self.state = ReadState::Finished(Err(CrossError::Corrupt {
                        shard,
                        key: self.batches[b].1.first().cloned().unwrap_or_default(),
                        reason: format!(
                            "{} values read for {} keys",
                            values.len(),
                            self.batches[b].1.len()
                        ),
                    }));
                    return;
                }
                self.answers[b] = Some(values);
            }
            ReadState::Resolve(r) => r.feed_read(shard, values),
            _ => {}
        }
    }

    /// The answer of a resolver's [`ShardStep::Call`].
    pub fn feed(&mut self, shard: usize, answer: Result<CommitOutcome, Lost>) {
        if let ReadState::Resolve(r) = &mut self.state {
            r.feed(shard, answer);
        }
    }
}

impl ShardMap {
    /// The shards a state or index listing of `prefix` must ask: every shard when the
    /// prefix can cover keys placed by hash (`intent/`, `rec/`, `acts/` with fewer than
    /// 16 hex digits of hash, or a prefix of those prefixes such as `""`); the home
    /// shard of the hash's first 16 digits when it names them (and shard 0, for
    /// malformed keys under it); shard 0 otherwise (`contract/…`,
    /// a replicated key, and per-shard rows, which through this facade mean shard 0's).
    pub fn list_shards(&self, prefix: &str) -> Vec<usize> {
        if self.shards() == 1 {
            return vec![0];
        }
        for p in HASHED_PREFIXES {
            if let Some(rest) = prefix.strip_prefix(p) {
                if rest.len() < 16 {
                    return (0..self.shards()).collect();
                }
                // Keys under it: well-formed ones on the hash's shard, malformed ones
                // (not 64 hex digits) on shard 0.
                let home = rest
                    .get(..16)
                    .filter(|h| h.bytes().all(|b| b.is_ascii_hexdigit()))
                    .and_then(|h| u64::from_str_radix(h, 16).ok())
                    .map_or(0, |h| (h % self.shards() as u64) as usize);
                return if home == 0 { vec![0] } else { vec![0, home] };
            }
            if p.starts_with(prefix) {
                return (0..self.shards()).collect();
            }
        }
        vec![0]
    }

    /// Merges the state listings `(shard, keys)` of one prefix (each shard's answer to
    /// the same `start_after` and `limit`, from [`list_shards`](Self::list_shards)):
    /// each shard's keys kept only where it is their home (a replicated key once, from
    /// shard 0), then as [`merge_listings`].
    ///
    /// Keys a shard holds but does not own (replicas, its own per-shard rows) take
    /// room in its answer: a prefix that covers them (only prefixes of `hints/`,
    /// `meta/`, `log/`, … with `""`) may come back short of `limit` although more
    /// keys exist. The core lists `intent/` and below only.
    pub fn merge_state_listings(
        &self,
        answers: impl IntoIterator<Item = (usize, Vec<String>)>,
        start_after: Option<&str>,
        limit: usize,
    ) -> Vec<String> {
        merge_listings(
            answers.into_iter().map(|(s, keys)| {
                keys.into_iter()
                    .filter(|k| self.home(k) == s)
                    .collect::<Vec<_>>()
            }),
            start_after,
            limit,
        )
    }
}

/// Merges listing answers of one prefix from several shards (index listings, whose
/// entries may sit on any shard, or filtered state listings): every key once, in
/// ascending order, strictly after `start_after`, at most `limit`. Each answer must be
/// that shard's first `limit` keys after `start_after`; then the merge is exactly the
/// first `limit` keys of their union.
pub fn merge_listings(
    answers: impl IntoIterator<Item = Vec<String>>,
    start_after: Option<&str>,
    limit: usize,
) -> Vec<String> {
    let mut out: Vec<String> = answers
        .into_iter()
        .flatten()
        .filter(|k| start_after.is_none_or(|a| k.as_str() > a))
        .collect();
    out.sort();
    out.dedup();
    out.truncate(limit);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    use nexus_store::{CasOp, MemoryStore, ObjectStore};

    fn key(first: u64) -> String {
        format!("intent/{first:016x}{}", "0".repeat(48))
    }

    #[test]
    fn a_cross_shard_commit_names_its_phases_and_reads_go_one_per_shard() {
        let map = ShardMap::new(4).expect("map");
        let stores: Vec<MemoryStore> = (0..4).map(|_| MemoryStore::new()).collect();
        let claim = |k: String| CasOp {
            key: k,
            expected: None,
            new: Some(b"claimed".to_vec()),
        };
        let commit = Commit::new(vec![claim(key(1)), claim(key(2))], vec![b"e".to_vec()]);
        let mut m = ShardedCommit::new(&map, &commit, 1_000, 7).expect("commit");
        let mut kinds = Vec::new();
        let outcome = loop {
            match m.poll() {
                ShardStep::Call { shard, commit } => {
                    kinds.push(m.pending().expect("a commit's own call"));
                    let answer = stores[shard].commit(&commit).expect("commit");
                    m.feed(shard, Ok(answer));
                }
                ShardStep::Read { .. } => panic!("no lock to resolve"),
                ShardStep::Done(r) => break r.expect("outcome"),
            }
        };
        assert!(
            matches!(outcome, CommitOutcome::Applied { .. }),
            "{outcome:?}"
        );
        assert_eq!(
            kinds,
            vec![CallKind::Prewrite, CallKind::Primary, CallKind::Release]
        );
        assert_eq!(m.counts().cross_shard_calls, 3);

        let (k1, k2, k3) = (key(1), key(2), key(3));
        let mut r = ShardedRead::new(&map, &[&k1, &k2, &k3, "contract/head"], 2_000).expect("read");
        let reads = r.pending_reads();
        let shards: Vec<usize> = reads.iter().map(|(s, _)| *s).collect();
        assert_eq!(shards, vec![0, 1, 2, 3], "one read per shard involved");
        assert_eq!(
            reads[1].1,
            vec![k1.clone(), lock_key(&k1)],
            "with the lock row"
        );
        // Answered in any order (a host sends them concurrently).
        for (shard, keys) in reads.into_iter().rev() {
            let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
            r.feed_read(shard, Ok(stores[shard].get_states(&refs).expect("read")));
        }
        let ShardStep::Done(values) = r.poll() else {
            panic!("every read answered, no lock met")
        };
        let claimed = Some(b"claimed".to_vec());
        assert_eq!(
            values.expect("values"),
            vec![claimed.clone(), claimed, None, None]
        );
    }

    #[test]
    fn listings_ask_the_shards_that_can_hold_the_prefix() {
        let map = ShardMap::new(4).expect("map");
        assert_eq!(map.list_shards("intent/"), vec![0, 1, 2, 3]);
        assert_eq!(map.list_shards(""), vec![0, 1, 2, 3]);
        assert_eq!(map.list_shards("in"), vec![0, 1, 2, 3]);
        assert_eq!(map.list_shards("contract/"), vec![0]);
        assert_eq!(map.list_shards("hints/active"), vec![0]);
        let h = format!("{:016x}{}", 3u64, "0".repeat(48));
        assert_eq!(map.list_shards(&format!("rec/{h}")), vec![0, 3]);
        assert_eq!(
            map.list_shards(&format!("rec/{}", &h[..10])),
            vec![0, 1, 2, 3]
        );
        assert_eq!(
            ShardMap::new(1).expect("map").list_shards("intent/"),
            vec![0]
        );
    }

    #[test]
    fn listings_merge_sorted_unique_after_the_cursor() {
        let merged = merge_listings(
            vec![
                vec!["b".into(), "d".into()],
                vec!["a".into(), "b".into(), "e".into()],
            ],
            Some("a"),
            3,
        );
        assert_eq!(merged, vec!["b", "d", "e"]);
        let map = ShardMap::new(2).expect("map");
        let key = |first: u64| format!("intent/{first:016x}{}", "0".repeat(48));
        let merged = map.merge_state_listings(
            vec![
                (0, vec![key(2), "hints/active".into()]),
                (1, vec![key(1), key(2), "hints/active".into()]),
            ],
            None,
            10,
        );
        assert_eq!(merged, vec!["hints/active".to_owned(), key(1), key(2)]);
    }
}
