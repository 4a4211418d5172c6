//! The protocol's durable rows and log entries (spec/shards.md, "Protocol rows"), and
//! the single-shard commits every phase sends, built here once for the committer
//! ([`crate::CrossCommit`]) and the resolver ([`crate::Resolver`]) alike.
//!
//! Rows (each shard-local, JSON):
//!
//! | key | on | value |
//! |---|---|---|
//! | `lock/{key}` | a secondary | [`Lock`]: the txn holding `key` and its primary |
//! | `xpart/{txn}` | a secondary | [`XPart`]: the secondary's part of the txn, until released or dropped |
//! | `txn/{txn}` | the primary | [`TxnState`]: `"committed"` (the commit point) or `"aborted"` |
//!
//! Log entries ([`ProtocolEntry`], tagged by `type` like the core's `LogEntry`, and
//! decoded by [`ProtocolEntry::decode`]; the core's own enum is unchanged):
//! `prepared`, `commit`, `release`, `abort`, `after`.

use serde::{Deserialize, Serialize};

use nexus_store::{CasOp, Commit, ReadCheck};

/// Prefix of the lock rows: `lock/{key}` locks `key` on its shard.
pub const LOCK_PREFIX: &str = "lock/";
/// Prefix of a secondary's part rows: `xpart/{txn}`.
pub const XPART_PREFIX: &str = "xpart/";
/// Prefix of the primary's transaction rows: `txn/{txn}`.
pub const TXN_PREFIX: &str = "txn/";
/// Age (ms) past which a lock's transaction counts as stalled and may be resolved by
/// any reader, writer or alarm.
pub const LOCK_TTL_MS: u64 = 5_000;

/// Key of the lock row of `key`.
pub fn lock_key(key: &str) -> String {
    format!("{LOCK_PREFIX}{key}")
}

/// Key of the part row of `txn` on a secondary.
pub fn xpart_key(txn: &TxnId) -> String {
    format!("{XPART_PREFIX}{}", txn.0)
}

/// Key of the transaction row of `txn` on its primary.
pub fn txn_key(txn: &TxnId) -> String {
    format!("{TXN_PREFIX}{}", txn.0)
}

/// Whether `key` is a protocol row (`lock/`, `xpart/`, `txn/`), written only by the
/// protocol.
pub fn is_protocol_key(key: &str) -> bool {
    [LOCK_PREFIX, XPART_PREFIX, TXN_PREFIX]
        .iter()
        .any(|p| key.starts_with(p))
}

/// A cross-shard transaction's id: 32 lowercase hex digits (128 bits of a BLAKE3 hash
/// of the commit, the coordinator's clock and a nonce), unique per attempt. Every phase
/// is idempotent under it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TxnId(pub String);

impl TxnId {
    /// The id of one attempt at `commit`, begun at `now` with `nonce` (a counter or a
    /// random number of the coordinator: two attempts at the same commit differ).
    pub fn derive(commit: &Commit, now: u64, nonce: u64) -> Self {
        let mut h = blake3::Hasher::new();
        h.update(b"neXus shard txn v1\0");
        h.update(&now.to_be_bytes());
        h.update(&nonce.to_be_bytes());
        let mut put = |b: &[u8]| {
            h.update(&(b.len() as u64).to_be_bytes());
            h.update(b);
        };
        let opt = |v: Option<&[u8]>, put: &mut dyn FnMut(&[u8])| match v {
            None => put(b"-"),
            Some(v) => {
                put(b"+");
                put(v);
            }
        };
        for op in &commit.ops {
            put(op.key.as_bytes());
            opt(op.expected.as_deref(), &mut put);
            opt(op.new.as_deref(), &mut put);
        }
        put(b"reads");
        for r in &commit.reads {
            put(r.key.as_bytes());
            opt(r.value.as_deref(), &mut put);
        }
        put(b"log");
        for e in &commit.log {
            put(e);
        }
        let digest = h.finalize();
        Self(hex::encode(&digest.as_bytes()[..16]))
    }
}

impl std::fmt::Display for TxnId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The value of a `lock/{key}` row: `key` is held by `txn`, whose commit point is the
/// `txn/{txn}` row on shard `primary`; taken at `at` (ms, the coordinator's clock).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lock {
    /// The transaction holding the key.
    pub txn: TxnId,
    /// The shard of the transaction's commit point.
    pub primary: usize,
    /// When the lock was taken (ms).
    pub at: u64,
}

impl Lock {
    /// The stored JSON.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Reads a stored lock.
    pub fn decode(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    /// Whether the lock is older than [`LOCK_TTL_MS`] at `now`.
    pub fn is_stale(&self, now: u64) -> bool {
        self.is_stale_after(now, LOCK_TTL_MS)
    }

    /// Whether the lock is older than `ttl` (ms) at `now` (a host's configured TTL).
    pub fn is_stale_after(&self, now: u64, ttl: u64) -> bool {
        now >= self.at.saturating_add(ttl)
    }
}

/// One compare-and-swap of a secondary's part, kept in its [`XPart`] row until the
/// release applies it (values as lowercase hex; `None`: absent).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartOp {
    /// The state key.
    pub key: String,
    /// The value it held when prepared (and holds until released: it is locked).
    pub expected: Option<String>,
    /// The value the release writes.
    pub new: Option<String>,
}

/// The value of an `xpart/{txn}` row on a secondary: everything a release (by the
/// committer or any resolver) needs, so that no phase depends on a coordinator's memory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct XPart {
    /// The transaction.
    pub txn: TxnId,
    /// The shard of its commit point.
    pub primary: usize,
    /// Every participant of the transaction, ascending (the primary among them).
    pub participants: Vec<usize>,
    /// When it was prepared (ms): the time of every lock it holds.
    pub at: u64,
    /// The part's compare-and-swaps, applied by the release.
    pub ops: Vec<PartOp>,
    /// Every key the part locks (its ops' keys and its validated reads' keys).
    pub locked: Vec<String>,
}

fn hex_of(v: &Option<Vec<u8>>) -> Option<String> {
    v.as_ref().map(hex::encode)
}

fn bytes_of(v: &Option<String>) -> Result<Option<Vec<u8>>, hex::FromHexError> {
    v.as_ref().map(hex::decode).transpose()
}

impl XPart {
    /// The part of `txn` made of `ops` and `reads` on a secondary.
    pub fn new(
        txn: TxnId,
        primary: usize,
        participants: Vec<usize>,
        at: u64,
        ops: &[CasOp],
        reads: &[ReadCheck],
    ) -> Self {
        Self {
            txn,
            primary,
            participants,
            at,
            ops: ops
                .iter()
                .map(|op| PartOp {
                    key: op.key.clone(),
                    expected: hex_of(&op.expected),
                    new: hex_of(&op.new),
                })
                .collect(),
            locked: ops
                .iter()
                .map(|op| op.key.clone())
                .chain(reads.iter().map(|r| r.key.clone()))
                .collect(),
        }
    }

    /// The stored JSON.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Reads a stored part.
    pub fn decode(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    /// The lock row value every key of this part holds.
    pub fn lock(&self) -> Lock {
        Lock {
            txn: self.txn.clone(),
            primary: self.primary,
            at: self.at,
        }
    }

    /// The part's ops as compare-and-swaps (fails on a value that is not hex).
    pub fn cas_ops(&self) -> Result<Vec<CasOp>, hex::FromHexError> {
        self.ops
            .iter()
            .map(|op| {
                Ok(CasOp {
                    key: op.key.clone(),
                    expected: bytes_of(&op.expected)?,
                    new: bytes_of(&op.new)?,
                })
            })
            .collect()
    }

    /// Whether the part is older than [`LOCK_TTL_MS`] at `now`.
    pub fn is_stale(&self, now: u64) -> bool {
        self.is_stale_after(now, LOCK_TTL_MS)
    }

    /// Whether the part is older than `ttl` (ms) at `now`.
    pub fn is_stale_after(&self, now: u64, ttl: u64) -> bool {
        self.lock().is_stale_after(now, ttl)
    }
}

/// The value of a `txn/{txn}` row on the primary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TxnState {
    /// The primary's commit applied: the transaction committed (roll forward).
    Committed,
    /// The transaction can never commit (roll back).
    Aborted,
}

impl TxnState {
    /// The stored JSON (`"committed"` or `"aborted"`).
    pub fn encode(self) -> Vec<u8> {
        serde_json::to_vec(&self).unwrap_or_default()
    }

    /// Reads a stored state.
    pub fn decode(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

/// A log entry of the protocol. The merge of the shard logs ([`crate::merge_order`])
/// orders by them; `verify --replay` skips them (it replays the records and actions).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum ProtocolEntry {
    /// A secondary locked its part of `txn` (first phase).
    Prepared {
        /// The transaction.
        txn: TxnId,
    },
    /// The primary committed `txn` (the commit point); the transaction's own log
    /// entries (`entries` of them) follow this one in the primary's log.
    Commit {
        /// The transaction.
        txn: TxnId,
        /// The shards whose `prepared` entries must precede this one.
        secondaries: Vec<usize>,
        /// How many of the transaction's own entries follow.
        entries: usize,
        /// Write-once keys the transaction read on shards that took no part in it
        /// (their checks were dropped): the entries that created them precede this one.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        after: Vec<String>,
    },
    /// A secondary applied its part of the committed `txn` and dropped its locks.
    Release {
        /// The transaction.
        txn: TxnId,
        /// The shard whose `commit` entry precedes this one.
        primary: usize,
    },
    /// A secondary dropped its part of the aborted `txn`.
    Abort {
        /// The transaction.
        txn: TxnId,
    },
    /// The single-shard commit whose entries follow read write-once `keys` of other
    /// shards (their checks were dropped): the entries that created them precede this.
    After {
        /// The `rec/{hash}` keys read.
        keys: Vec<String>,
    },
}

/// The `type` values of [`ProtocolEntry`].
pub const PROTOCOL_TYPES: [&str; 5] = ["prepared", "commit", "release", "abort", "after"];

impl ProtocolEntry {
    /// The stored bytes (compact JSON).
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Reads a log entry: `Ok(None)` for an entry that is not the protocol's (a record
    /// or an action, or bytes that are not a JSON object), `Err` for an entry whose
    /// `type` is the protocol's but whose fields are not.
    pub fn decode(bytes: &[u8]) -> Result<Option<Self>, serde_json::Error> {
        #[derive(Deserialize)]
        struct Tag<'a> {
            #[serde(rename = "type", borrow)]
            kind: Option<std::borrow::Cow<'a, str>>,
        }
        match serde_json::from_slice::<Tag<'_>>(bytes) {
            Ok(Tag { kind: Some(k) }) if PROTOCOL_TYPES.contains(&k.as_ref()) => {
                serde_json::from_slice(bytes).map(Some)
            }
            _ => Ok(None),
        }
    }
}

/// The commit that prepares `part` on its secondary: the part's expectations and
/// reads checked, each of its keys unlocked (then locked), the part row created.
pub fn prewrite_commit(part: &XPart, ops: &[CasOp], reads: &[ReadCheck]) -> Commit {
    let lock = part.lock().encode();
    let mut commit = Commit::default();
    for key in &part.locked {
        commit.ops.push(CasOp {
            key: lock_key(key),
            expected: None,
            new: Some(lock.clone()),
        });
    }
    commit.ops.push(CasOp {
        key: xpart_key(&part.txn),
        expected: None,
        new: Some(part.encode()),
    });
    for op in ops {
        commit.reads.push(ReadCheck {
            key: op.key.clone(),
            value: op.expected.clone(),
        });
    }
    commit.reads.extend(reads.iter().cloned());
    commit.log.push(
        ProtocolEntry::Prepared {
            txn: part.txn.clone(),
        }
        .encode(),
    );
    commit
}

/// The commit that releases a committed `part` on its secondary: its ops applied, its
/// locks and row deleted. Fails when the row holds a value that is not hex.
pub fn release_commit(part: &XPart) -> Result<Commit, hex::FromHexError> {
    let mut commit = unlock_commit(part);
    let mut ops = part.cas_ops()?;
    ops.append(&mut commit.ops);
    commit.ops = ops;
    commit.log = vec![
        ProtocolEntry::Release {
            txn: part.txn.clone(),
            primary: part.primary,
        }
        .encode(),
    ];
    Ok(commit)
}

/// The commit that drops an aborted `part` on its secondary: locks and row deleted.
pub fn drop_commit(part: &XPart) -> Commit {
    let mut commit = unlock_commit(part);
    commit.log = vec![
        ProtocolEntry::Abort {
            txn: part.txn.clone(),
        }
        .encode(),
    ];
    commit
}

fn unlock_commit(part: &XPart) -> Commit {
    let lock = part.lock().encode();
    let mut commit = Commit::default();
    for key in &part.locked {
        commit.ops.push(CasOp {
            key: lock_key(key),
            expected: Some(lock.clone()),
            new: None,
        });
    }
    commit.ops.push(CasOp {
        key: xpart_key(&part.txn),
        expected: Some(part.encode()),
        new: None,
    });
    commit
}

/// The commit that marks `txn` aborted on its primary, if it is not decided yet.
pub fn abort_txn_commit(txn: &TxnId) -> Commit {
    Commit::new(
        vec![CasOp {
            key: txn_key(txn),
            expected: None,
            new: Some(TxnState::Aborted.encode()),
        }],
        vec![],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_entries_roundtrip_and_other_entries_are_not_theirs() {
        let txn = TxnId("00ff".into());
        let entries = [
            ProtocolEntry::Prepared { txn: txn.clone() },
            ProtocolEntry::Commit {
                txn: txn.clone(),
                secondaries: vec![0, 2],
                entries: 1,
                after: vec![],
            },
            ProtocolEntry::Release {
                txn: txn.clone(),
                primary: 3,
            },
            ProtocolEntry::Abort { txn },
            ProtocolEntry::After {
                keys: vec!["rec/ab".into()],
            },
        ];
        for e in &entries {
            assert_eq!(
                ProtocolEntry::decode(&e.encode()).expect("decode"),
                Some(e.clone())
            );
        }
        assert_eq!(
            String::from_utf8(entries[1].encode()).expect("utf8"),
            r#"{"type":"commit","txn":"00ff","secondaries":[0,2],"entries":1}"#
        );
        let record = br#"{"type":"record","hash":"ab","kind":"fact","at":1}"#;
        assert_eq!(ProtocolEntry::decode(record).expect("decode"), None);
        assert_eq!(ProtocolEntry::decode(b"not json").expect("decode"), None);
        assert!(ProtocolEntry::decode(br#"{"type":"commit","txn":1}"#).is_err());
    }

    #[test]
    fn txn_ids_differ_by_nonce_and_commit() {
        let c = Commit::new(vec![], vec![b"e".to_vec()]);
        let a = TxnId::derive(&c, 1, 1);
        assert_eq!(a.0.len(), 32);
        assert_ne!(a, TxnId::derive(&c, 1, 2));
        assert_ne!(a, TxnId::derive(&Commit::default(), 1, 1));
        assert_eq!(a, TxnId::derive(&c, 1, 1));
    }
}
