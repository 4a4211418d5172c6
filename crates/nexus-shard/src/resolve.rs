//! [`Resolver`]: settles a stalled transaction's part on one secondary, and
//! [`sweep`]: what a shard's alarm resolves.

use nexus_store::{CommitOutcome, StoreResult};

use crate::cross::{CrossError, Lost, ShardStep};
use crate::protocol::{
    LOCK_TTL_MS, Lock, TxnState, XPART_PREFIX, XPart, abort_txn_commit, drop_commit,
    release_commit, txn_key, xpart_key,
};

/// How a [`Resolver`] settled a part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    /// The transaction is undecided (its primary has no `txn/{txn}` row) and younger
    /// than [`LOCK_TTL_MS`]: its coordinator may still be running. It has not reached
    /// its commit point, so what the shard holds under its locks is current: a reader
    /// may use it; a writer must wait. Try again after `until` (ms).
    Young {
        /// When the lock becomes stale.
        until: u64,
    },
    /// The transaction had committed: the part is applied and its locks dropped (by
    /// this resolver, or by whoever settled it first).
    RolledForward,
    /// The transaction had not committed: it is aborted, the part dropped.
    RolledBack,
    /// The part row was gone when the resolver read it (settled already).
    Gone,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    /// Read the part row.
    ReadPart(Lock),
    /// Read the primary's `txn/{txn}` row (a young part: settle it if decided).
    Peek,
    /// Ask (and if undecided, decide) the primary's `txn/{txn}` row (a stale part).
    Decide,
    /// Apply the committed part.
    Forward,
    /// Drop the aborted part.
    Back,
    Finished(Result<Resolution, CrossError>),
}

/// Settles the part of a stalled transaction on one secondary, as a sans-IO state
/// machine (the same step style as [`crate::CrossCommit`]):
///
/// 1. (from a lock) read the secondary's `xpart/{txn}` row: gone → [`Resolution::Gone`];
/// 2. on the primary, `txn/{txn}`: if the part is older than [`LOCK_TTL_MS`], absent →
///    `aborted` by compare-and-swap (so the stalled coordinator's primary commit can
///    never apply); if younger, only read it: absent → [`Resolution::Young`];
/// 3. committed → release the part (roll forward); aborted → drop it (roll back).
///
/// So a reader that meets a lock of a transaction that already committed applies it
/// at once (it never serves the value from before a commit point it could see), and
/// only an undecided transaction past its TTL is aborted.
///
/// Every call is idempotent; a [`Lost`] answer is sent again.
#[derive(Debug, Clone)]
pub struct Resolver {
    shard: usize,
    now: u64,
    ttl: u64,
    part: Option<XPart>,
    phase: Phase,
    calls: usize,
}

impl Resolver {
    /// Resolves the transaction holding `lock`, met on `shard`, at `now`.
    pub fn for_lock(shard: usize, lock: Lock, now: u64) -> Self {
        Self {
            shard,
            now,
            ttl: LOCK_TTL_MS,
            part: None,
            phase: Phase::ReadPart(lock),
            calls: 0,
        }
    }

    /// Resolves `part`, read from `shard`'s `xpart/` rows, at `now`.
    pub fn for_part(shard: usize, part: XPart, now: u64) -> Self {
        Self::for_part_ttl(shard, part, now, LOCK_TTL_MS)
    }

    /// [`for_part`](Self::for_part) with a lock TTL of `ttl` ms instead of
    /// [`LOCK_TTL_MS`].
    pub fn for_part_ttl(shard: usize, part: XPart, now: u64, ttl: u64) -> Self {
        let mut r = Self {
            shard,
            now,
            ttl,
            part: None,
            phase: Phase::Decide,
            calls: 0,
        };
        r.phase = r.check_age(part);
        r
    }

    /// The same resolver with a lock TTL of `ttl` ms instead of [`LOCK_TTL_MS`] (a
    /// host's configured TTL; set before the first poll).
    pub fn with_ttl(mut self, ttl: u64) -> Self {
        self.ttl = ttl;
        self
    }

    /// Calls and reads sent so far (re-sends count).
    pub fn calls(&self) -> usize {
        self.calls
    }

    fn check_age(&mut self, part: XPart) -> Phase {
        let phase = if part.is_stale_after(self.now, self.ttl) {
            Phase::Decide
        } else {
            Phase::Peek
        };
        self.part = Some(part);
        phase
    }

    fn corrupt(&self, shard: usize, key: String, reason: String) -> Phase {
        Phase::Finished(Err(CrossError::Corrupt { shard, key, reason }))
    }

    /// What to do next. Polling again before feeding asks again.
    pub fn poll(&mut self) -> ShardStep<Result<Resolution, CrossError>> {
        let part = self.part.clone();
        match (&self.phase, &part) {
            (Phase::Finished(r), _) => ShardStep::Done(r.clone()),
            (Phase::ReadPart(lock), _) => ShardStep::Read {
                shard: self.shard,
                keys: vec![xpart_key(&lock.txn)],
            },
            (Phase::Peek, Some(part)) => ShardStep::Read {
                shard: part.primary,
                keys: vec![txn_key(&part.txn)],
            },
            (Phase::Decide, Some(part)) => ShardStep::Call {
                shard: part.primary,
                commit: abort_txn_commit(&part.txn),
            },
            (Phase::Forward, Some(part)) => match release_commit(part) {
                Ok(commit) => ShardStep::Call {
                    shard: self.shard,
                    commit,
                },
                Err(e) => {
                    let key = xpart_key(&part.txn);
                    self.phase = self.corrupt(self.shard, key, e.to_string());
                    self.poll()
                }
            },
            (Phase::Back, Some(part)) => ShardStep::Call {
                shard: self.shard,
                commit: drop_commit(part),
            },
            (_, None) => ShardStep::Done(Ok(Resolution::Gone)),
        }
    }

    /// The values of the last [`ShardStep::Read`], in the order of its keys.
    pub fn feed_read(&mut self, shard: usize, values: Result<Vec<Option<Vec<u8>>>, Lost>) {
        if self.phase == Phase::Peek {
            return self.peeked(shard, values);
        }
        let Phase::ReadPart(lock) = &self.phase else {
            return;
        };
        if shard != self.shard {
            return;
        }
        self.calls += 1;
        let Ok(values) = values else { return };
        let key = xpart_key(&lock.txn);
        self.phase = match values.into_iter().next().flatten() {
            None => Phase::Finished(Ok(Resolution::Gone)),
            Some(bytes) => match XPart::decode(&bytes) {
                Ok(part) if part.txn == lock.txn => self.check_age(part),
                Ok(_) => self.corrupt(shard, key, "the row names another txn".into()),
                Err(e) => self.corrupt(shard, key, e.to_string()),
            },
        };
    }

    fn peeked(&mut self, shard: usize, values: Result<Vec<Option<Vec<u8>>>, Lost>) {
        let Some(part) = &self.part else { return };
        if shard != part.primary {
            return;
        }
        self.calls += 1;
        let Ok(values) = values else { return };
        let txn_row = txn_key(&part.txn);
        self.phase = match values.into_iter().next().flatten() {
            None => Phase::Finished(Ok(Resolution::Young {
                until: part.at.saturating_add(self.ttl),
            })),
            Some(v) => match TxnState::decode(&v) {
                Ok(TxnState::Committed) => Phase::Forward,
                Ok(TxnState::Aborted) => Phase::Back,
                Err(e) => self.corrupt(shard, txn_row, e.to_string()),
            },
        };
    }

    /// The answer of the last [`ShardStep::Call`].
    pub fn feed(&mut self, shard: usize, answer: Result<CommitOutcome, Lost>) {
        let Some(part) = &self.part else { return };
        let expected_shard = match self.phase {
            Phase::Decide => part.primary,
            Phase::Forward | Phase::Back => self.shard,
            _ => return,
        };
        if shard != expected_shard {
            return;
        }
        self.calls += 1;
        let Ok(outcome) = answer else { return };
        let txn_row = txn_key(&part.txn);
        let part_row = xpart_key(&part.txn);
        let failures = match outcome {
            CommitOutcome::Applied { .. } => Vec::new(),
            CommitOutcome::Conflict(f) => f,
            _ => Vec::new(),
        };
        let applied = failures.is_empty();
        self.phase = match self.phase {
            Phase::Decide if applied => Phase::Back,
            Phase::Decide => match failures.iter().find(|f| f.key == txn_row) {
                Some(f) => match f.current.as_deref().map(TxnState::decode) {
                    Some(Ok(TxnState::Committed)) => Phase::Forward,
                    Some(Ok(TxnState::Aborted)) => Phase::Back,
                    Some(Err(e)) => self.corrupt(shard, txn_row, e.to_string()),
                    None => self.corrupt(shard, txn_row, "refused while absent".into()),
                },
                None => self.corrupt(shard, txn_row, "refused without naming the row".into()),
            },
            Phase::Forward if applied => Phase::Finished(Ok(Resolution::RolledForward)),
            Phase::Back if applied => Phase::Finished(Ok(Resolution::RolledBack)),
            // The part row is gone: settled already (by a lost copy of this call, the
            // coordinator or another resolver), the same way, as the txn is decided.
            Phase::Forward | Phase::Back => {
                if failures.iter().any(|f| f.key == part_row) {
                    Phase::Finished(Ok(match self.phase {
                        Phase::Forward => Resolution::RolledForward,
                        _ => Resolution::RolledBack,
                    }))
                } else {
                    Phase::Finished(Err(CrossError::Release {
                        shard,
                        txn: part.txn.clone(),
                        keys: failures.into_iter().map(|f| f.key).collect(),
                    }))
                }
            }
            _ => return,
        };
    }
}

/// What one alarm of a shard should do ([`sweep`]).
#[derive(Debug, Clone, Default)]
pub struct Sweep {
    /// A resolver per stale part.
    pub resolvers: Vec<Resolver>,
    /// When to run the alarm again (`None`: no part remains). Alarms are at least once
    /// with limited retries, so a shard re-arms while it holds any part.
    pub next_alarm: Option<u64>,
}

/// What shard `shard`'s alarm does at `now`, given its `xpart/` rows (key, value), as
/// listed and read by the host: a resolver for each part older than [`LOCK_TTL_MS`],
/// and the next alarm while any part remains (the earliest time a young part goes
/// stale; `now + LOCK_TTL_MS` to check again on the stale ones).
pub fn sweep(shard: usize, rows: &[(String, Vec<u8>)], now: u64) -> Result<Sweep, CrossError> {
    sweep_ttl(shard, rows, now, LOCK_TTL_MS)
}

/// [`sweep`] with a lock TTL of `ttl` ms instead of [`LOCK_TTL_MS`].
pub fn sweep_ttl(
    shard: usize,
    rows: &[(String, Vec<u8>)],
    now: u64,
    ttl: u64,
) -> Result<Sweep, CrossError> {
    let mut out = Sweep::default();
    for (key, value) in rows {
        if !key.starts_with(XPART_PREFIX) {
            continue;
        }
        let part = XPart::decode(value).map_err(|e| CrossError::Corrupt {
            shard,
            key: key.clone(),
            reason: e.to_string(),
        })?;
        let at = if part.is_stale_after(now, ttl) {
            out.resolvers
                .push(Resolver::for_part_ttl(shard, part, now, ttl));
            now.saturating_add(ttl)
        } else {
            part.at.saturating_add(ttl)
        };
        out.next_alarm = Some(out.next_alarm.map_or(at, |a: u64| a.min(at)));
    }
    Ok(out)
}

/// Lists and reads every `xpart/` row of one shard's store (for [`sweep`]).
pub fn part_rows<O: nexus_store::ObjectStore + ?Sized>(
    store: &O,
) -> StoreResult<Vec<(String, Vec<u8>)>> {
    let mut rows = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let keys = store.list_states(XPART_PREFIX, after.as_deref(), 100)?;
        let Some(last) = keys.last().cloned() else {
            return Ok(rows);
        };
        let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
        for (k, v) in keys.iter().zip(store.get_states(&refs)?) {
            if let Some(v) = v {
                rows.push((k.clone(), v));
            }
        }
        after = Some(last);
    }
}
