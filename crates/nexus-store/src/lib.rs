//! Pure-sync storage traits for neXus.
//!
//! neXus keeps its state in three tiers (design §4):
//!
//! | trait | holds | Cloudflare | native |
//! |---|---|---|---|
//! | [`ObjectStore`] | everything mutable: CAS states, the ordered commit log | Durable Object storage | embedded ACID store |
//! | [`KeyValueStore`] | immutable records by hash, write-once index entries | Workers KV | same embedded store |
//! | [`BlobStore`] | content-addressed blobs, archives, snapshots | R2 | same store |
//!
//! Every method is synchronous and takes `&self`: implementations use interior
//! mutability (a lock, a database handle, or an in-memory buffer), so one value can be
//! shared between the tiers and across threads. None of these traits knows anything of
//! neXus records; the same traits serve any deterministic library that wants to run over
//! async storage through `nexus-iobuf`.
//!
//! # Invariants every implementation keeps
//!
//! * `list` returns keys in ascending byte order, strictly after `start_after`, at most
//!   `limit` of them.
//! * [`ObjectStore::commit`] is all-or-nothing: either every [`CasOp`] matched its
//!   expected value and every [`ReadCheck`] its read value, and every op and log entry was
//!   applied in one atomic step, or nothing changed and the outcome names each key whose
//!   expectation failed (ops and read checks alike), with its current value.
//! * Commits are **serializable**: a commit's ops and read checks are evaluated at its
//!   commit point, against the effects of every commit applied before it, so the order of
//!   the commit log is a serial order of the commits (design §5).
//! * Log entries are numbered by the store, densely from 1, in commit order; they live
//!   under [`LOG_PREFIX`] and are readable with [`ObjectStore::get_state`] like any other
//!   state, and [`LOG_HEAD_KEY`] holds the number of the last entry (absent when the log
//!   is empty). Neither may be written with [`ObjectStore::put_state`] or a [`CasOp`].
//! * The log's Merkle tree (its stored hashes under [`TREE_PREFIX`], inside
//!   [`LOG_PREFIX`]) is written in the same atomic step as the entries it covers, by
//!   the writes [`tree_writes`] computes: every backend calls it from its commit.
//!
//! The [`conformance`] module states these invariants as data-driven cases that any
//! backend — sync or async — can run.

mod batch;
pub mod conformance;
mod memory;
mod tree;

pub use batch::{
    BatchDelete, BatchPut, BatchWrite, PutPhase, Tier, WriteBatch, write_batch_in_order,
};

pub use memory::{MemoryStore, apply_commit, parse_head};
pub use tree::{
    StoreHashes, TREE_CATCH_UP, TREE_PREFIX, TREE_SIZE_KEY, decode_tree_hash, tree_key, tree_size,
    tree_writes,
};

use std::collections::BTreeMap;

/// Errors a storage backend reports.
///
/// Cloneable, so that a host that fails many requests with one error (a group commit)
/// can hand each the same typed error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The backend itself failed (I/O, database, binding).
    #[error("storage backend failed: {0}")]
    Backend(String),
    /// The storage medium is full (no space left on the device, or a quota is spent):
    /// the write was refused and nothing of it applied. Reads go on; writes succeed
    /// again once space is freed. The text says what failed (no "storage is full"
    /// prefix of its own).
    #[error("storage is full: {0}")]
    Full(String),
    /// A stored value could not be understood.
    #[error("stored value under {key:?} is corrupt: {reason}")]
    Corrupt {
        /// The key whose value is corrupt.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The key is not acceptable to this store (empty, too long, or reserved).
    #[error("invalid key {key:?}: {reason}")]
    InvalidKey {
        /// The offending key.
        key: String,
        /// Why it was refused.
        reason: String,
    },
}

impl StoreError {
    /// True for [`StoreError::Full`].
    pub fn is_full(&self) -> bool {
        matches!(self, StoreError::Full(_))
    }

    /// What failed, without the variant's own prefix ("storage backend failed: ",
    /// "storage is full: "), for callers that add their own.
    pub fn detail(&self) -> String {
        match self {
            StoreError::Backend(m) | StoreError::Full(m) => m.clone(),
            other => other.to_string(),
        }
    }
}

/// The condition of a store as the store itself last saw it ([`Health::health`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreHealth {
    /// Reads and writes work (as far as the store knows: it last wrote successfully,
    /// or has not failed yet).
    #[default]
    Ok,
    /// The last write failed because the storage is full. Reads go on; the state
    /// clears by itself with the next write that succeeds.
    Full {
        /// The failure, as [`StoreError::detail`] gave it.
        message: String,
    },
    /// The backend failed otherwise (an I/O error) and could not recover yet: reads
    /// may fail as well. The store retries recovering with the next call.
    Unavailable {
        /// The failure, as [`StoreError::detail`] gave it.
        message: String,
    },
}

impl StoreHealth {
    /// True for [`StoreHealth::Ok`].
    pub fn is_ok(&self) -> bool {
        matches!(self, StoreHealth::Ok)
    }

    /// A stable name for the state: `ok`, `storage_full`, `storage_unavailable`.
    pub fn reason(&self) -> &'static str {
        match self {
            StoreHealth::Ok => "ok",
            StoreHealth::Full { .. } => "storage_full",
            StoreHealth::Unavailable { .. } => "storage_unavailable",
        }
    }

    /// The failure behind a degraded state ([`None`] when ok).
    pub fn message(&self) -> Option<&str> {
        match self {
            StoreHealth::Ok => None,
            StoreHealth::Full { message } | StoreHealth::Unavailable { message } => Some(message),
        }
    }
}

/// A store that can say whether it is degraded, for a host's health check; it costs
/// no I/O (the store remembers what its last calls met).
pub trait Health {
    /// The store's condition now.
    fn health(&self) -> StoreHealth;
}

/// Shorthand for results of storage operations.
pub type StoreResult<T> = Result<T, StoreError>;

/// Prefix under which the commit log's entries live in the [`ObjectStore`].
pub const LOG_PREFIX: &str = "log/";
/// Key holding the sequence number of the newest commit log entry.
pub const LOG_HEAD_KEY: &str = "log/head";
/// Longest key any store must accept, in bytes (Workers KV allows 512).
pub const MAX_KEY_LEN: usize = 512;

/// Key of log entry `seq` (zero-padded so that byte order is numeric order).
pub fn log_key(seq: u64) -> String {
    format!("{LOG_PREFIX}{seq:020}")
}

/// Parses a log entry key produced by [`log_key`].
pub fn parse_log_key(key: &str) -> Option<u64> {
    let digits = key.strip_prefix(LOG_PREFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Checks that `key` is acceptable to every store: non-empty, at most
/// [`MAX_KEY_LEN`] bytes, no NUL byte.
pub fn check_key(key: &str) -> StoreResult<()> {
    let reason = if key.is_empty() {
        "key is empty"
    } else if key.len() > MAX_KEY_LEN {
        "key is longer than 512 bytes"
    } else if key.contains('\0') {
        "key contains a NUL byte"
    } else {
        return Ok(());
    };
    Err(StoreError::InvalidKey {
        key: key.chars().take(64).collect(),
        reason: reason.to_owned(),
    })
}

/// Refuses keys that only [`ObjectStore::commit`] may write (the commit log).
pub fn check_writable_state_key(key: &str) -> StoreResult<()> {
    check_key(key)?;
    if key.starts_with(LOG_PREFIX) {
        return Err(StoreError::InvalidKey {
            key: key.to_owned(),
            reason: format!("keys under {LOG_PREFIX:?} are written only by commit log appends"),
        });
    }
    Ok(())
}

/// A string-keyed store of byte values (Workers KV, or a table of the embedded store).
///
/// neXus writes each KV key once (immutable records, write-once index entries); the
/// trait itself does not forbid overwrites.
pub trait KeyValueStore {
    /// Reads one value.
    fn get(&self, key: &str) -> StoreResult<Option<Vec<u8>>>;
    /// Reads many values at once, in the order of `keys` (Workers KV bulk get).
    fn get_many(&self, keys: &[&str]) -> StoreResult<Vec<Option<Vec<u8>>>> {
        keys.iter().map(|k| self.get(k)).collect()
    }
    /// Writes one value.
    fn set(&self, key: &str, value: &[u8]) -> StoreResult<()>;
    /// Removes one key; removing an absent key is not an error.
    fn delete(&self, key: &str) -> StoreResult<()>;
    /// Keys starting with `prefix`, ascending, strictly after `start_after`, at most `limit`.
    fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<String>>;
}

/// A store of byte blobs (R2, or a table/directory natively).
pub trait BlobStore {
    /// Reads one blob.
    fn get_blob(&self, key: &str) -> StoreResult<Option<Vec<u8>>>;
    /// Writes one blob.
    fn put_blob(&self, key: &str, bytes: &[u8]) -> StoreResult<()>;
    /// Removes one blob; removing an absent blob is not an error.
    fn delete_blob(&self, key: &str) -> StoreResult<()>;
    /// Blob keys starting with `prefix`, ascending, strictly after `start_after`, at most `limit`.
    fn list_blobs(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<String>>;
}

/// One compare-and-swap in an atomic [`Commit`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CasOp {
    /// The state key.
    pub key: String,
    /// The value the key must hold for the commit to apply (`None`: must be absent).
    pub expected: Option<Vec<u8>>,
    /// The value to store (`None`: delete the key).
    pub new: Option<Vec<u8>>,
}

/// One state a commit read without writing it: the commit applies only if the key
/// still holds `value` at the commit point (its read is still valid).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadCheck {
    /// The state key.
    pub key: String,
    /// The value the commit read (`None`: absent).
    pub value: Option<Vec<u8>>,
}

/// An all-or-nothing batch: compare-and-swaps, the checks of the states it read, and
/// commit log entries.
///
/// With `reads` holding every state the writer's decision depended on, a store that
/// applies commits one at a time makes them **serializable**: each applied commit saw
/// exactly the states of the moment it applied, so the commit log's order is a serial
/// order of the commits.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Commit {
    /// The compare-and-swaps; keys must be distinct.
    pub ops: Vec<CasOp>,
    /// The states read but not written, each with the value read; keys distinct and
    /// distinct from the ops' keys (an op's `expected` already checks its key).
    pub reads: Vec<ReadCheck>,
    /// Entries appended to the commit log, in order, if and only if every op applies.
    pub log: Vec<Vec<u8>>,
}

impl Commit {
    /// A commit of `ops` and `log` with no read checks.
    pub fn new(ops: Vec<CasOp>, log: Vec<Vec<u8>>) -> Self {
        Self {
            ops,
            reads: Vec::new(),
            log,
        }
    }

    /// Adds the check that `key` still holds `value`.
    pub fn with_read(mut self, key: impl Into<String>, value: Option<Vec<u8>>) -> Self {
        self.reads.push(ReadCheck {
            key: key.into(),
            value,
        });
        self
    }

    /// True when the commit would change nothing (read checks alone change nothing).
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty() && self.log.is_empty()
    }

    /// Every expectation the commit point checks: each op's key with its expected
    /// value, then each read check's key with the value read (`None`: absent).
    pub fn expectations(&self) -> impl Iterator<Item = (&str, Option<&[u8]>)> {
        self.ops
            .iter()
            .map(|op| (op.key.as_str(), op.expected.as_deref()))
            .chain(
                self.reads
                    .iter()
                    .map(|r| (r.key.as_str(), r.value.as_deref())),
            )
    }
}

/// Why one key of a commit was refused: a compare-and-swap's expected value or a read
/// check's value no longer held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CasFailure {
    /// The key whose expectation did not hold.
    pub key: String,
    /// What the key holds now (`None`: absent).
    pub current: Option<Vec<u8>>,
}

/// The result of [`ObjectStore::commit`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CommitOutcome {
    /// Everything applied. `first_seq` is the sequence number given to the first log
    /// entry (`None` when the commit carried no log entries).
    Applied {
        /// Sequence number of the first appended log entry.
        first_seq: Option<u64>,
    },
    /// Nothing applied; these keys (ops' and read checks') did not hold their
    /// expected values.
    Conflict(Vec<CasFailure>),
}

/// The strongly consistent, mutable tier: compare-and-swap over string keys, an
/// all-or-nothing batch commit and an ordered commit log (a Durable Object, or a table
/// of the embedded store).
pub trait ObjectStore {
    /// Reads one state.
    fn get_state(&self, key: &str) -> StoreResult<Option<Vec<u8>>>;
    /// Reads many states at once, in the order of `keys`.
    fn get_states(&self, keys: &[&str]) -> StoreResult<Vec<Option<Vec<u8>>>> {
        keys.iter().map(|k| self.get_state(k)).collect()
    }
    /// Atomically replaces the value of `key` with `new` if it currently equals
    /// `expected` (`None`: absent). Returns whether it did.
    fn put_state(&self, key: &str, expected: Option<&[u8]>, new: &[u8]) -> StoreResult<bool>;
    /// State keys starting with `prefix`, ascending, strictly after `start_after`, at most `limit`.
    fn list_states(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<String>>;
    /// Applies every op and appends every log entry atomically, or nothing.
    fn commit(&self, commit: &Commit) -> StoreResult<CommitOutcome>;
}

/// Every key and value of a store, per tier, for tests, backups and equivalence checks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreSnapshot {
    /// The key-value tier.
    pub kv: BTreeMap<String, Vec<u8>>,
    /// The blob tier.
    pub blobs: BTreeMap<String, Vec<u8>>,
    /// The object tier, commit log included.
    pub states: BTreeMap<String, Vec<u8>>,
}

/// A store that can produce a full [`StoreSnapshot`] of itself.
pub trait Snapshot {
    /// Copies every key and value of every tier.
    fn snapshot(&self) -> StoreResult<StoreSnapshot>;
}

/// Checks the keys of a commit (ops' keys valid and writable, read checks' keys valid,
/// all distinct) before it touches a store.
pub fn check_commit(commit: &Commit) -> StoreResult<()> {
    let mut seen = std::collections::BTreeSet::new();
    for op in &commit.ops {
        check_writable_state_key(&op.key)?;
        if !seen.insert(op.key.as_str()) {
            return Err(StoreError::InvalidKey {
                key: op.key.clone(),
                reason: "key appears twice in one commit".to_owned(),
            });
        }
    }
    for read in &commit.reads {
        check_key(&read.key)?;
        if !seen.insert(read.key.as_str()) {
            return Err(StoreError::InvalidKey {
                key: read.key.clone(),
                reason: "key appears twice in one commit (a read check repeats a key)".to_owned(),
            });
        }
    }
    Ok(())
}

/// Helper for implementations: applies `list` semantics to an ordered map.
pub fn list_range<'a, V: 'a>(
    map: &'a BTreeMap<String, V>,
    prefix: &str,
    start_after: Option<&str>,
    limit: usize,
) -> Vec<String> {
    use std::ops::Bound;
    let lower = match start_after {
        Some(after) if after >= prefix => Bound::Excluded(after.to_owned()),
        _ => Bound::Included(prefix.to_owned()),
    };
    map.range((lower, Bound::Unbounded))
        .map(|(k, _)| k)
        .take_while(|k| k.starts_with(prefix))
        .take(limit)
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_keys_roundtrip_and_sort_numerically() {
        assert_eq!(parse_log_key(&log_key(42)), Some(42));
        assert!(log_key(9) < log_key(10));
        assert_eq!(parse_log_key(LOG_HEAD_KEY), None);
        assert_eq!(parse_log_key("log/12"), None);
    }

    #[test]
    fn keys_are_checked() {
        assert!(check_key("").is_err());
        assert!(check_key(&"k".repeat(513)).is_err());
        assert!(check_key("a\0b").is_err());
        assert!(check_key("intent/abc").is_ok());
        assert!(check_writable_state_key("log/head").is_err());
    }

    #[test]
    fn duplicate_keys_in_a_commit_are_refused() {
        let op = CasOp {
            key: "k".into(),
            expected: None,
            new: Some(b"v".to_vec()),
        };
        let commit = Commit::new(vec![op.clone(), op.clone()], vec![]);
        assert!(check_commit(&commit).is_err());
        // A read check may not repeat an op's key, nor another read's.
        let read_of_op = Commit::new(vec![op.clone()], vec![]).with_read("k", None);
        assert!(check_commit(&read_of_op).is_err());
        let twice = Commit::default().with_read("r", None).with_read("r", None);
        assert!(check_commit(&twice).is_err());
        assert!(check_commit(&Commit::new(vec![op], vec![]).with_read("r", None)).is_ok());
    }
}
