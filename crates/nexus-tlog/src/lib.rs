//! The neXus commit log as a transparency log (`spec/tlog.md`).
//!
//! Leaf *i* of the tree is log entry `seq = i + 1`: its leaf hash is the RFC 6962
//! `SHA-256(0x00 || entry)` of the entry's stored bytes ([`leaf_hash`]). The tree is
//! the RFC 6962 / RFC 9162 Merkle tree over those leaves, kept as its *stored
//! hashes*: the hash of every complete subtree, numbered densely in the order the
//! leaves complete them ([`stored_hash_index`], the layout of Go's `sumdb/tlog` and of
//! Cloudflare's `tlog_tiles`). Appending leaf *i* stores `1 + trailing_ones(i)` new
//! hashes (just under two per leaf on average) and reads `trailing_ones(i)` old ones
//! ([`append`]); the root of any size and every proof are computed from at most
//! `O(log² n)` stored hashes in one batch per level of the computation ([`root`],
//! [`prove_inclusion`], [`prove_consistency`]).
//!
//! Invariants a store keeps (and [`append`] relies on):
//! - the stored hashes of a tree of size `n` are exactly those with indexes
//!   `0..stored_hash_count(n)`, and they are written in the same atomic step as the
//!   log entries they cover, so the tree never disagrees with the log;
//! - a stored hash is written once and never changes.
//!
//! Checkpoints are C2SP `tlog-checkpoint` bodies in a C2SP `signed-note`, signed with
//! Ed25519 ([`LogSigner`], [`verify_checkpoint`]). Nothing here does I/O: the caller
//! supplies stored hashes through a [`HashSource`] and writes what [`append`] returns.

mod checkpoint;
mod signed;
mod tree;

pub use checkpoint::{
    Checkpoint, CheckpointError, LogKey, LogSigner, parse_verifier_key, verify_checkpoint,
};
pub use signed::{MemoryTree, SignedCheckpoint};
pub use tlog_tiles::{EMPTY_HASH, Hash, stored_hash_count, stored_hash_index};
pub use tree::{
    HashSource, TreeError, append, prove_consistency, prove_inclusion, root, verify_consistency,
    verify_inclusion,
};

/// The RFC 6962 leaf hash of a log entry's bytes: `SHA-256(0x00 || entry)`.
pub fn leaf_hash(entry: &[u8]) -> Hash {
    tlog_tiles::record_hash(entry)
}

/// The RFC 6962 interior node hash: `SHA-256(0x01 || left || right)`.
pub fn node_hash(left: Hash, right: Hash) -> Hash {
    tlog_tiles::node_hash(left, right)
}

/// A hash as standard base64 with padding (the form of checkpoints and proofs).
pub fn hash_to_base64(h: &Hash) -> String {
    h.to_string()
}

/// Parses a standard base64 hash of 32 bytes.
pub fn hash_from_base64(s: &str) -> Option<Hash> {
    Hash::parse_hash(s).ok()
}

/// The checkpoint origin of the log of deployment `deployment` (its id, as
/// `GET /v1/health` gives it): `nexus/<id>`.
pub fn origin(deployment: &str) -> String {
    format!("nexus/{deployment}")
}
