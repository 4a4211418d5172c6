//! [`CrossCommit`]: one commit over the shards as a sans-IO state machine — the fast
//! path (one call) or the cross-shard protocol (prewrite, primary, release; abort).

use std::collections::BTreeMap;

use nexus_store::{CasFailure, CasOp, Commit, CommitOutcome, ReadCheck};

use crate::map::{Part, ShardError, ShardMap, Split};
use crate::protocol::{
    Lock, ProtocolEntry, TxnId, TxnState, XPart, abort_txn_commit, drop_commit, lock_key,
    prewrite_commit, release_commit, txn_key, xpart_key,
};

/// The answer of a call to a shard was lost: the object may or may not have applied
/// it (it was reset, the connection broke). Every phase of a cross-shard commit may be
/// sent again; a single-shard commit's outcome is then unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lost;

/// What the host must do next for a [`CrossCommit`] or a [`crate::Resolver`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShardStep<T> {
    /// Send `commit` to shard `shard` as ONE `ObjectStore::commit`, then feed its
    /// outcome (or [`Lost`]).
    Call {
        /// The shard.
        shard: usize,
        /// The single-shard commit.
        commit: Commit,
    },
    /// Read `keys` on shard `shard` (one `get_states`), then feed the values.
    Read {
        /// The shard.
        shard: usize,
        /// The state keys.
        keys: Vec<String>,
    },
    /// Finished: nothing more to send.
    Done(T),
}

/// Why a commit over the shards failed without an outcome.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CrossError {
    /// The answer of a single-shard commit was lost: it may or may not have applied
    /// (as with one coordinator; the caller retries at its own level).
    #[error("the answer of shard {shard}'s commit was lost: it may or may not have applied")]
    OutcomeUnknown {
        /// The shard called.
        shard: usize,
    },
    /// A protocol row or answer could not be understood.
    #[error("shard {shard}: protocol row {key:?} is corrupt: {reason}")]
    Corrupt {
        /// The shard.
        shard: usize,
        /// The row.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// A secondary refused to release a part of a committed transaction while still
    /// holding it: its locked keys changed under their locks (a broken invariant).
    #[error(
        "shard {shard} refused the release of committed txn {txn}: {keys:?} changed under their locks"
    )]
    Release {
        /// The shard.
        shard: usize,
        /// The transaction.
        txn: TxnId,
        /// The keys that failed.
        keys: Vec<String>,
    },
    /// The commit cannot be split (see [`ShardError`]).
    #[error(transparent)]
    Split(#[from] ShardError),
}

/// A lock a commit met: `key` on `shard` is held by another transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetLock {
    /// The shard of the key.
    pub shard: usize,
    /// The locked key.
    pub key: String,
    /// The lock.
    pub lock: Lock,
}

/// What a finished commit did besides its outcome, for metrics and resolution.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CrossStats {
    /// Calls sent (each re-send counts).
    pub calls: usize,
    /// Answers lost.
    pub lost: usize,
    /// Participants.
    pub shards: usize,
}

/// Which phase the call a [`CrossCommit`] asks for belongs to ([`CrossCommit::pending`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallKind {
    /// The one call of a single-shard commit (its commit point).
    Fast,
    /// A secondary's prewrite.
    Prewrite,
    /// The primary's commit (the commit point of a cross-shard commit).
    Primary,
    /// A secondary's release, after the commit point.
    Release,
    /// The `aborted` mark on the primary.
    AbortTxn,
    /// A prepared secondary's part dropped.
    Drop,
}

impl CallKind {
    /// Whether this call is the commit's commit point (the one call whose applying
    /// makes the commit applied).
    pub fn is_commit_point(self) -> bool {
        matches!(self, Self::Fast | Self::Primary)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    Fast,
    Prewrite(usize),
    Primary,
    Release(usize),
    AbortTxn,
    Drop(usize),
    Finished(Result<CommitOutcome, CrossError>),
    Spent,
}

/// One commit over the shards, as a sans-IO state machine like the iobuf `Driver`:
/// [`poll`](Self::poll) says what to send ([`ShardStep::Call`]), [`feed`](Self::feed)
/// takes the answer.
///
/// * One participant: the **fast path**, one call carrying the commit (and, with more
///   than one shard, the check that none of its keys is locked).
/// * More: the **cross-shard protocol** (spec/shards.md): prewrite each secondary in
///   ascending order, commit the primary ([`Split::primary`]; the commit point),
///   release each secondary. A conflict in a prewrite or the primary aborts: the
///   primary's `txn/{txn}` row is set `aborted`, the prepared secondaries dropped.
///   Each phase is idempotent under the txn id, so a [`Lost`] answer is sent again.
///
/// A commit that met another transaction's lock reports it in
/// [`locks_met`](Self::locks_met): a host resolves the stale ones ([`crate::Resolver`])
/// and tries again.
#[derive(Debug, Clone)]
pub struct CrossCommit {
    txn: TxnId,
    n: usize,
    split: Split,
    primary: usize,
    secondaries: Vec<usize>,
    xparts: BTreeMap<usize, XPart>,
    /// Each user key's expected or read value, to report a lock as that key's conflict.
    expected: BTreeMap<String, Option<Vec<u8>>>,
    phase: Phase,
    failures: Vec<CasFailure>,
    locks: Vec<MetLock>,
    prepared: Vec<usize>,
    first_seq: Option<u64>,
    committed: bool,
    stats: CrossStats,
}

impl CrossCommit {
    /// A commit of `commit` over the shards of `map`, begun at `now` (ms, the
    /// coordinator's clock: the time of its locks) with `nonce` (unique per attempt
    /// of this coordinator). The keys must have passed [`nexus_store::check_commit`].
    pub fn new(map: &ShardMap, commit: &Commit, now: u64, nonce: u64) -> Result<Self, ShardError> {
        let split = map.split(commit)?;
        let txn = TxnId::derive(commit, now, nonce);
        let primary = split.primary();
        let secondaries = split.secondaries();
        let participants = split.participants();
        let xparts = secondaries
            .iter()
            .map(|&s| {
                let part = &split.parts[&s];
                let x = XPart::new(
                    txn.clone(),
                    primary,
                    participants.clone(),
                    now,
                    &part.ops,
                    &part.reads,
                );
                (s, x)
            })
            .collect();
        let expected = commit
            .expectations()
            .map(|(k, v)| (k.to_owned(), v.map(<[u8]>::to_vec)))
            .collect();
        let phase = if split.is_single_shard() {
            Phase::Fast
        } else {
            Phase::Prewrite(0)
        };
        Ok(Self {
            txn,
            n: map.shards(),
            stats: CrossStats {
                shards: participants.len(),
                ..CrossStats::default()
            },
            split,
            primary,
            secondaries,
            xparts,
            expected,
            phase,
            failures: Vec::new(),
            locks: Vec::new(),
            prepared: Vec::new(),
            first_seq: None,
            committed: false,
        })
    }

    /// The transaction id.
    pub fn txn(&self) -> &TxnId {
        &self.txn
    }

    /// The split the commit runs over.
    pub fn split(&self) -> &Split {
        &self.split
    }

    /// Locks of other transactions this commit met (its conflicts, if any, name their
    /// keys, with the values under the locks: a host that settles a lock's transaction
    /// must read those keys again before it uses their values).
    pub fn locks_met(&self) -> &[MetLock] {
        &self.locks
    }

    /// Calls sent and answers lost so far.
    pub fn stats(&self) -> &CrossStats {
        &self.stats
    }

    /// Whether the commit point has passed (the primary's commit applied): the commit
    /// will be [`Applied`](CommitOutcome::Applied) whatever happens next.
    pub fn is_committed(&self) -> bool {
        self.committed
    }

    /// What to do next. Polling again before feeding asks again (the same call).
    pub fn poll(&mut self) -> ShardStep<Result<CommitOutcome, CrossError>> {
        if matches!(self.phase, Phase::Finished(_) | Phase::Spent) {
            return match std::mem::replace(&mut self.phase, Phase::Spent) {
                Phase::Finished(r) => ShardStep::Done(r),
                _ => ShardStep::Done(Err(CrossError::OutcomeUnknown {
                    shard: self.primary,
                })),
            };
        }
        let (shard, commit) = match &self.phase {
            Phase::Fast => {
                let s = self.primary;
                (s, self.fast_commit(s))
            }
            Phase::Prewrite(i) => {
                let s = self.secondaries[*i];
                let part = &self.split.parts[&s];
                (s, prewrite_commit(&self.xparts[&s], &part.ops, &part.reads))
            }
            Phase::Primary => (self.primary, self.primary_commit()),
            Phase::Release(i) => {
                let s = self.prepared[*i];
                match release_commit(&self.xparts[&s]) {
                    Ok(c) => (s, c),
                    Err(e) => {
                        return self.finish(Err(CrossError::Corrupt {
                            shard: s,
                            key: xpart_key(&self.txn),
                            reason: e.to_string(),
                        }));
                    }
                }
            }
            Phase::AbortTxn => (self.primary, abort_txn_commit(&self.txn)),
            Phase::Drop(i) => {
                let s = self.prepared[*i];
                (s, drop_commit(&self.xparts[&s]))
            }
            Phase::Finished(_) | Phase::Spent => {
                return ShardStep::Done(Err(CrossError::OutcomeUnknown {
                    shard: self.primary,
                }));
            }
        };
        ShardStep::Call { shard, commit }
    }

    fn finish(
        &mut self,
        r: Result<CommitOutcome, CrossError>,
    ) -> ShardStep<Result<CommitOutcome, CrossError>> {
        self.phase = Phase::Spent;
        ShardStep::Done(r)
    }

    /// The phase of the call [`poll`](Self::poll) asks for (`None` when finished).
    pub fn pending(&self) -> Option<CallKind> {
        Some(match &self.phase {
            Phase::Fast => CallKind::Fast,
            Phase::Prewrite(_) => CallKind::Prewrite,
            Phase::Primary => CallKind::Primary,
            Phase::Release(_) => CallKind::Release,
            Phase::AbortTxn => CallKind::AbortTxn,
            Phase::Drop(_) => CallKind::Drop,
            Phase::Finished(_) | Phase::Spent => return None,
        })
    }

    /// The shard the pending call goes to (`None` when finished).
    fn pending_shard(&self) -> Option<usize> {
        match &self.phase {
            Phase::Fast | Phase::Primary | Phase::AbortTxn => Some(self.primary),
            Phase::Prewrite(i) => Some(self.secondaries[*i]),
            Phase::Release(i) | Phase::Drop(i) => Some(self.prepared[*i]),
            Phase::Finished(_) | Phase::Spent => None,
        }
    }

    /// The answer of the call [`poll`](Self::poll) asked for, from `shard` (an answer
    /// from another shard than the pending call's is ignored).
    pub fn feed(&mut self, shard: usize, answer: Result<CommitOutcome, Lost>) {
        if self.pending_shard() != Some(shard) {
            return;
        }
        self.stats.calls += 1;
        let outcome = match answer {
            Ok(o) => o,
            Err(Lost) => {
                self.stats.lost += 1;
                if self.phase == Phase::Fast {
                    self.phase = Phase::Finished(Err(CrossError::OutcomeUnknown { shard }));
                }
                // Every other phase is idempotent: the next poll sends it again.
                return;
            }
        };
        let failures = match outcome {
            CommitOutcome::Applied { first_seq } => {
                self.applied(shard, first_seq);
                return;
            }
            CommitOutcome::Conflict(f) => f,
            // Non-exhaustive: anything else did not apply.
            _ => Vec::new(),
        };
        self.conflicted(shard, failures);
    }

    fn applied(&mut self, shard: usize, first_seq: Option<u64>) {
        self.phase = match std::mem::replace(&mut self.phase, Phase::Spent) {
            Phase::Fast => {
                let skip = u64::from(self.fast_after_entry());
                let first_seq = first_seq
                    .map(|s| s + skip)
                    .filter(|_| !self.split.log.is_empty());
                Phase::Finished(Ok(CommitOutcome::Applied { first_seq }))
            }
            Phase::Prewrite(i) => {
                self.prepared.push(shard);
                self.next_prewrite(i)
            }
            Phase::Primary => {
                self.committed = true;
                self.first_seq = first_seq
                    .map(|s| s + 1)
                    .filter(|_| !self.split.log.is_empty());
                Phase::Release(0)
            }
            Phase::Release(i) => self.next_release(i),
            Phase::AbortTxn => self.next_drop(None),
            Phase::Drop(i) => self.next_drop(Some(i)),
            done => done,
        };
    }

    fn next_prewrite(&self, i: usize) -> Phase {
        if i + 1 < self.secondaries.len() {
            Phase::Prewrite(i + 1)
        } else {
            Phase::Primary
        }
    }

    fn next_release(&self, i: usize) -> Phase {
        if i + 1 < self.prepared.len() {
            Phase::Release(i + 1)
        } else {
            Phase::Finished(Ok(CommitOutcome::Applied {
                first_seq: self.first_seq,
            }))
        }
    }

    fn next_drop(&self, i: Option<usize>) -> Phase {
        let next = i.map_or(0, |i| i + 1);
        if next < self.prepared.len() {
            Phase::Drop(next)
        } else {
            Phase::Finished(Ok(CommitOutcome::Conflict(self.failures.clone())))
        }
    }

    fn conflicted(&mut self, shard: usize, failures: Vec<CasFailure>) {
        let txn_row = txn_key(&self.txn);
        let part_row = xpart_key(&self.txn);
        let row = |key: &str| {
            failures
                .iter()
                .find(|f| f.key == key)
                .map(|f| f.current.clone())
        };
        self.phase = match std::mem::replace(&mut self.phase, Phase::Spent) {
            Phase::Fast => {
                self.record_failures(shard, &failures);
                Phase::Finished(Ok(CommitOutcome::Conflict(self.failures.clone())))
            }
            Phase::Prewrite(i) => {
                if matches!(row(&part_row), Some(Some(_))) {
                    // A re-sent prewrite whose first copy applied.
                    self.prepared.push(shard);
                    self.next_prewrite(i)
                } else {
                    self.record_failures(shard, &failures);
                    Phase::AbortTxn
                }
            }
            Phase::Primary => match row(&txn_row) {
                Some(Some(v)) => match TxnState::decode(&v) {
                    // A re-sent primary whose first copy applied (its seq is lost).
                    Ok(TxnState::Committed) => {
                        self.committed = true;
                        Phase::Release(0)
                    }
                    // A resolver found the transaction stalled and aborted it.
                    Ok(TxnState::Aborted) => {
                        self.record_failures(shard, &failures);
                        self.next_drop(None)
                    }
                    Err(e) => Phase::Finished(Err(CrossError::Corrupt {
                        shard,
                        key: txn_row,
                        reason: e.to_string(),
                    })),
                },
                _ => {
                    self.record_failures(shard, &failures);
                    Phase::AbortTxn
                }
            },
            Phase::Release(i) => {
                if matches!(row(&part_row), Some(None)) {
                    // Released already (a re-send, or a resolver rolled it forward).
                    self.next_release(i)
                } else {
                    Phase::Finished(Err(CrossError::Release {
                        shard,
                        txn: self.txn.clone(),
                        keys: failures.into_iter().map(|f| f.key).collect(),
                    }))
                }
            }
            Phase::AbortTxn => match row(&txn_row) {
                Some(Some(v)) => match TxnState::decode(&v) {
                    Ok(TxnState::Aborted) => self.next_drop(None),
                    // The primary's commit applied after all (a late copy): roll forward.
                    Ok(TxnState::Committed) => {
                        self.committed = true;
                        self.first_seq = None;
                        self.failures.clear();
                        Phase::Release(0)
                    }
                    Err(e) => Phase::Finished(Err(CrossError::Corrupt {
                        shard,
                        key: txn_row,
                        reason: e.to_string(),
                    })),
                },
                _ => self.next_drop(None),
            },
            // Dropped already (a re-send, or a resolver rolled it back); or the part
            // row changed, which only a resolver's drop can do: either way it is gone.
            Phase::Drop(i) => self.next_drop(Some(i)),
            done => done,
        };
    }

    /// Records a conflict's failures as the caller's keys: a lock row names its key
    /// (with the value the commit expected, which still held), protocol rows are
    /// dropped, each key once.
    fn record_failures(&mut self, shard: usize, failures: &[CasFailure]) {
        for f in failures {
            let failure = if let Some(key) = f.key.strip_prefix(crate::protocol::LOCK_PREFIX) {
                if let Some(lock) = f.current.as_deref().and_then(|v| Lock::decode(v).ok()) {
                    self.locks.push(MetLock {
                        shard,
                        key: key.to_owned(),
                        lock,
                    });
                }
                CasFailure {
                    key: key.to_owned(),
                    current: self.expected.get(key).cloned().flatten(),
                }
            } else if crate::protocol::is_protocol_key(&f.key) {
                continue;
            } else {
                f.clone()
            };
            if !self.failures.iter().any(|g| g.key == failure.key) {
                self.failures.push(failure);
            }
        }
    }

    fn fast_after_entry(&self) -> bool {
        !self.split.after.is_empty() && !self.split.log.is_empty()
    }

    fn lock_checks(part: &Part) -> impl Iterator<Item = ReadCheck> + '_ {
        part.keys().map(|k| ReadCheck {
            key: lock_key(k),
            value: None,
        })
    }

    fn fast_commit(&self, s: usize) -> Commit {
        let part = &self.split.parts[&s];
        let mut commit = Commit {
            ops: part.ops.clone(),
            reads: part.reads.clone(),
            log: Vec::with_capacity(self.split.log.len() + 1),
        };
        if self.n > 1 {
            commit.reads.extend(Self::lock_checks(part));
        }
        if self.fast_after_entry() {
            commit.log.push(
                ProtocolEntry::After {
                    keys: self.split.after.clone(),
                }
                .encode(),
            );
        }
        commit.log.extend(self.split.log.iter().cloned());
        commit
    }

    fn primary_commit(&self) -> Commit {
        let part = &self.split.parts[&self.primary];
        let mut ops: Vec<CasOp> = part.ops.clone();
        ops.push(CasOp {
            key: txn_key(&self.txn),
            expected: None,
            new: Some(TxnState::Committed.encode()),
        });
        let mut reads = part.reads.clone();
        reads.extend(Self::lock_checks(part));
        let mut log = vec![
            ProtocolEntry::Commit {
                txn: self.txn.clone(),
                secondaries: self.secondaries.clone(),
                entries: self.split.log.len(),
                after: self.split.after.clone(),
            }
            .encode(),
        ];
        log.extend(self.split.log.iter().cloned());
        Commit { ops, reads, log }
    }
}
