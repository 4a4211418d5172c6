//! [`ShardMap`]: where each key lives, and how a [`Commit`] splits into per-shard parts.

use std::collections::{BTreeMap, BTreeSet};

use nexus_store::{CasOp, Commit, LOG_PREFIX, MAX_KEY_LEN, ReadCheck, StoreError};

use crate::protocol::{LOCK_PREFIX, is_protocol_key};

/// Most shards a map may have.
pub const MAX_SHARDS: usize = 1_024;

/// The keys stored on every shard (each write to them is a commit over all shards).
pub const REPLICATED: [&str; 2] = ["hints/active", "meta/deployment"];

/// The prefixes of the keys placed by the hash they carry (`{prefix}{64 hex digits}`).
pub const HASHED_PREFIXES: [&str; 3] = ["rec/", "intent/", "acts/"];

/// The prefix of the write-once keys whose present-value read checks may be dropped
/// on a shard that takes no part in a commit (`rec/{hash}`: a committed record).
pub const WRITE_ONCE_PREFIX: &str = "rec/";

/// Prefixes of the per-shard keys, never routed by key: the log (and its Merkle tree),
/// the flush cursor and the protocol rows.
pub const LOCAL_PREFIXES: [&str; 5] = [LOG_PREFIX, "flush/", "lock/", "xpart/", "txn/"];

/// Errors of the shard layer's configuration and of splitting a commit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ShardError {
    /// A map needs 1 to [`MAX_SHARDS`] shards.
    #[error("a shard map has 1 to {MAX_SHARDS} shards, not {0}")]
    BadShardCount(usize),
    /// The commit is not acceptable to a sharded store (the text says why).
    #[error("invalid key {key:?} for a sharded store: {reason}")]
    InvalidKey {
        /// The offending key (at most 64 characters of it).
        key: String,
        /// Why it was refused.
        reason: String,
    },
}

impl From<ShardError> for StoreError {
    fn from(e: ShardError) -> Self {
        match e {
            ShardError::InvalidKey { key, reason } => StoreError::InvalidKey { key, reason },
            other => StoreError::Backend(other.to_string()),
        }
    }
}

/// Where a key lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// On exactly this shard (a hashed key, or any other key: shard 0).
    Shard(usize),
    /// On every shard ([`REPLICATED`]).
    Replicated,
    /// Each shard has its own ([`LOCAL_PREFIXES`]); through a
    /// [`ShardedObjects`](crate::ShardedObjects) it means shard 0's.
    Local,
}

/// The placement of keys over `n` shards (spec/shards.md, "Placement").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardMap {
    n: usize,
}

impl Default for ShardMap {
    /// One shard: today's single coordinator.
    fn default() -> Self {
        Self { n: 1 }
    }
}

/// One shard's share of a commit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Part {
    /// The compare-and-swaps of keys on this shard (replicated keys included).
    pub ops: Vec<CasOp>,
    /// The read checks this shard validates.
    pub reads: Vec<ReadCheck>,
}

impl Part {
    /// Every key the part writes or validates, in order (ops first).
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.ops
            .iter()
            .map(|o| o.key.as_str())
            .chain(self.reads.iter().map(|r| r.key.as_str()))
    }
}

/// A commit split over the shards by [`ShardMap::split`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Split {
    /// The participants' parts, by shard (never empty).
    pub parts: BTreeMap<usize, Part>,
    /// The commit's log entries (they go to the primary's log, or the one shard's).
    pub log: Vec<Vec<u8>>,
    /// Write-once keys (`rec/{hash}`) read present on shards that take no part: their
    /// checks were dropped, and the merged order puts the commit after their creation.
    pub after: Vec<String>,
    /// The primary: the participant that takes the commit point ([`Split::primary`]).
    pub primary: usize,
}

impl Split {
    /// The participating shards, ascending.
    pub fn participants(&self) -> Vec<usize> {
        self.parts.keys().copied().collect()
    }

    /// The primary: the participant that takes the commit point of a cross-shard
    /// commit (the one shard of a single-shard one). It is chosen by a hash of the
    /// commit ([`choose_primary`]), not by shard index: a secondary takes two calls and
    /// the primary one, so always choosing the highest participant would load the low
    /// shards more.
    pub fn primary(&self) -> usize {
        self.primary
    }

    /// The secondaries: every participant but the primary, ascending.
    pub fn secondaries(&self) -> Vec<usize> {
        let p = self.primary();
        self.parts.keys().copied().filter(|&s| s != p).collect()
    }

    /// True when one shard takes the whole commit: one call, the fast path.
    pub fn is_single_shard(&self) -> bool {
        self.parts.len() <= 1
    }

    /// Coordinator calls the commit costs without faults: 1, or `2k − 1` over `k`
    /// shards (prewrite `k − 1`, primary 1, release `k − 1`).
    pub fn calls(&self) -> usize {
        (2 * self.parts.len()).saturating_sub(1).max(1)
    }
}

/// The primary of `commit` among `participants` (ascending, not empty): the one a
/// hash of the commit's content picks, so that commits spread their commit points
/// evenly over the shards they span (and the same commit always picks the same one).
pub fn choose_primary(commit: &Commit, participants: &[usize]) -> usize {
    let id = crate::protocol::TxnId::derive(commit, 0, 0);
    let h = u64::from_str_radix(id.0.get(..16).unwrap_or("0"), 16).unwrap_or(0);
    let k = participants.len().max(1) as u64;
    participants.get((h % k) as usize).copied().unwrap_or(0)
}

fn hashed_shard(key: &str, n: usize) -> Option<usize> {
    let rest = HASHED_PREFIXES.iter().find_map(|p| key.strip_prefix(p))?;
    if rest.len() != 64 || !rest.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let head = u64::from_str_radix(&rest[..16], 16).ok()?;
    Some((head % n as u64) as usize)
}

impl ShardMap {
    /// A map over `n` shards (1 to [`MAX_SHARDS`]).
    pub fn new(n: usize) -> Result<Self, ShardError> {
        if n == 0 || n > MAX_SHARDS {
            return Err(ShardError::BadShardCount(n));
        }
        Ok(Self { n })
    }

    /// The number of shards.
    pub fn shards(&self) -> usize {
        self.n
    }

    /// Where `key` lives: `rec/`, `intent/` and `acts/{h}` on shard
    /// `u64::from_be_bytes(h[..8]) % n`; [`REPLICATED`] keys on every shard;
    /// [`LOCAL_PREFIXES`] on each shard its own; anything else on shard 0.
    pub fn placement(&self, key: &str) -> Placement {
        if REPLICATED.contains(&key) {
            return Placement::Replicated;
        }
        if LOCAL_PREFIXES.iter().any(|p| key.starts_with(p)) {
            return Placement::Local;
        }
        Placement::Shard(hashed_shard(key, self.n).unwrap_or(0))
    }

    /// The shard a read of `key` goes to (a replicated or local key: shard 0's copy).
    pub fn home(&self, key: &str) -> usize {
        match self.placement(key) {
            Placement::Shard(s) => s,
            Placement::Replicated | Placement::Local => 0,
        }
    }

    /// Splits `commit` into per-shard parts (spec/shards.md, "Splitting a commit"):
    /// each op and read check on its key's shard; a replicated key's op on every shard;
    /// a write-once key read present on a shard that takes no part dropped (into
    /// [`Split::after`]); a commit with no participant at all goes to shard 0.
    ///
    /// A replicated key's read check goes to the primary alone ([`Split::primary`];
    /// the one shard of a single-shard commit): each write of that key is
    /// a commit over every shard, so at the primary's commit point the key there is
    /// either unlocked and equal to every replica, or locked by a write in flight (and
    /// the check of its lock refuses the commit). The secondaries need not lock it, so
    /// cross-shard commits that read the Hints do not hold up the proposals of their
    /// shards.
    ///
    /// The keys must already have passed [`nexus_store::check_commit`].
    ///
    /// With more than one shard, a commit may not name a protocol row, nor a key too
    /// long to be locked (`lock/{key}` must fit [`MAX_KEY_LEN`]).
    pub fn split(&self, commit: &Commit) -> Result<Split, ShardError> {
        if self.n > 1 {
            let keys = commit
                .ops
                .iter()
                .map(|o| &o.key)
                .chain(commit.reads.iter().map(|r| &r.key));
            for key in keys {
                let reason = if is_protocol_key(key) {
                    "lock/, xpart/ and txn/ rows are written only by the shard protocol"
                } else if key.len() + LOCK_PREFIX.len() > MAX_KEY_LEN {
                    "a sharded store's keys leave room for their lock row (at most 507 bytes)"
                } else {
                    continue;
                };
                return Err(ShardError::InvalidKey {
                    key: key.chars().take(64).collect(),
                    reason: reason.to_owned(),
                });
            }
        }
        let mut parts: BTreeMap<usize, Part> = BTreeMap::new();
        for op in &commit.ops {
            match self.placement(&op.key) {
                Placement::Replicated => {
                    for s in 0..self.n {
                        parts.entry(s).or_default().ops.push(op.clone());
                    }
                }
                p => {
                    let s = match p {
                        Placement::Shard(s) => s,
                        _ => 0,
                    };
                    parts.entry(s).or_default().ops.push(op.clone());
                }
            }
        }
        let droppable = |r: &ReadCheck| r.key.starts_with(WRITE_ONCE_PREFIX) && r.value.is_some();
        // Participants: the shards written, and the shards of reads that must be
        // validated where they live.
        let mut participants: BTreeSet<usize> = parts.keys().copied().collect();
        for r in &commit.reads {
            if self.placement(&r.key) != Placement::Replicated && !droppable(r) {
                participants.insert(self.home(&r.key));
            }
        }
        if participants.is_empty() {
            participants.insert(0);
        }
        for &s in &participants {
            parts.entry(s).or_default();
        }
        let mut after = Vec::new();
        let ordered: Vec<usize> = participants.iter().copied().collect();
        let primary = choose_primary(commit, &ordered);
        for r in &commit.reads {
            match self.placement(&r.key) {
                // Checked at the commit point only: every write of a replicated key
                // passes through every shard, the primary's too (see the method docs).
                Placement::Replicated => {
                    if let Some(part) = parts.get_mut(&primary) {
                        part.reads.push(r.clone());
                    }
                }
                _ => {
                    let s = self.home(&r.key);
                    match parts.get_mut(&s) {
                        Some(part) => part.reads.push(r.clone()),
                        None => after.push(r.key.clone()),
                    }
                }
            }
        }
        Ok(Split {
            parts,
            log: commit.log.clone(),
            after,
            primary,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(first: u64) -> String {
        format!("{first:016x}{}", "0".repeat(48))
    }

    fn cas(key: &str, expected: Option<&str>, new: Option<&str>) -> CasOp {
        CasOp {
            key: key.to_owned(),
            expected: expected.map(|v| v.as_bytes().to_vec()),
            new: new.map(|v| v.as_bytes().to_vec()),
        }
    }

    #[test]
    fn primaries_spread_over_the_participants() {
        let map = ShardMap::new(2).expect("map");
        let mut primaries = [0usize; 2];
        for j in 0..200u64 {
            let commit = Commit::new(
                vec![
                    cas(&format!("intent/{}", h(2 * j)), None, Some("a")),
                    cas(&format!("intent/{}", h(2 * j + 1)), None, Some("a")),
                ],
                vec![],
            );
            let split = map.split(&commit).expect("split");
            assert_eq!(split.participants(), vec![0, 1]);
            assert_eq!(
                split.primary(),
                map.split(&commit).expect("split").primary()
            );
            primaries[split.primary()] += 1;
        }
        assert!(primaries.iter().all(|&n| n > 70), "{primaries:?}");
    }

    #[test]
    fn keys_are_placed_by_their_hash_replicated_or_local() {
        let map = ShardMap::new(4).expect("map");
        assert_eq!(map.placement(&format!("rec/{}", h(6))), Placement::Shard(2));
        assert_eq!(
            map.placement(&format!("intent/{}", h(7))),
            Placement::Shard(3)
        );
        assert_eq!(
            map.placement(&format!("acts/{}", h(u64::MAX))),
            Placement::Shard(3)
        );
        assert_eq!(map.placement("hints/active"), Placement::Replicated);
        assert_eq!(map.placement("meta/deployment"), Placement::Replicated);
        assert_eq!(map.placement("log/head"), Placement::Local);
        assert_eq!(map.placement("flush/cursor"), Placement::Local);
        assert_eq!(map.placement("intent/1"), Placement::Shard(0));
        assert_eq!(map.placement("contract/current"), Placement::Shard(0));
        assert!(ShardMap::new(0).is_err());
        assert!(ShardMap::new(MAX_SHARDS + 1).is_err());
    }

    #[test]
    fn a_split_places_ops_and_reads_and_drops_present_write_once_reads_elsewhere() {
        let map = ShardMap::new(4).expect("map");
        let (f, i) = (format!("rec/{}", h(1)), format!("intent/{}", h(2)));
        let parent = format!("rec/{}", h(3));
        let absent = format!("rec/{}", h(0));
        let commit = Commit::new(
            vec![cas(&f, None, Some("fact")), cas(&i, Some("c"), Some("r"))],
            vec![b"e".to_vec()],
        )
        .with_read(&parent, Some(b"fact".to_vec()))
        .with_read("hints/active", Some(b"[]".to_vec()))
        .with_read(&absent, None);
        let split = map.split(&commit).expect("split");
        // Shards 1 and 2 write; shard 0 validates an absent read; shard 3's present
        // record read is dropped.
        assert_eq!(split.participants(), vec![0, 1, 2]);
        let p = split.primary();
        assert!(split.participants().contains(&p));
        let others: Vec<usize> = [0, 1, 2].into_iter().filter(|&s| s != p).collect();
        assert_eq!(split.secondaries(), others);
        assert_eq!(split.after, vec![parent]);
        assert_eq!(split.calls(), 5);
        // The replicated read is checked on the primary alone.
        let hint_reads = |s: usize| {
            split.parts[&s]
                .reads
                .iter()
                .filter(|r| r.key == "hints/active")
                .count()
        };
        for s in 0..3 {
            assert_eq!(hint_reads(s), usize::from(s == p), "shard {s}");
        }
        // Shard 0 validates its absent record (and the Hints if it is the primary).
        assert_eq!(split.parts[&0].reads.len(), 1 + usize::from(p == 0));
        // A write of a replicated key takes every shard.
        let hints = Commit::new(vec![cas("hints/active", Some("[]"), Some("[x]"))], vec![]);
        let split = map.split(&hints).expect("split");
        assert_eq!(split.participants(), vec![0, 1, 2, 3]);
        // A commit of nothing goes to shard 0.
        assert_eq!(
            map.split(&Commit::default()).expect("split").participants(),
            vec![0]
        );
        // Protocol rows and keys too long to lock are refused (with more than one shard).
        let forged = Commit::new(vec![cas("lock/x", None, Some("y"))], vec![]);
        assert!(map.split(&forged).is_err());
        assert!(ShardMap::default().split(&forged).is_ok());
        let long = Commit::default().with_read("k".repeat(508), None);
        assert!(map.split(&long).is_err());
    }
}
