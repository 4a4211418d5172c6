//! The messages between the Worker and [`NexusCoordinatorDO`](crate::NexusCoordinatorDO):
//! JSON bodies of `POST /read` and `POST /commit` to the coordinator's stub. Byte values
//! travel as lowercase hex strings.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use nexus_iobuf::ListQuery;
use nexus_store::{CasFailure, CasOp, Commit, CommitOutcome, ReadCheck};

/// Path of the read call.
pub const READ_PATH: &str = "/read";
/// Path of the commit call.
pub const COMMIT_PATH: &str = "/commit";
/// Path of the test-only storage conformance run (built with `test-hooks` only).
pub const CONFORMANCE_PATH: &str = "/conformance";
/// Path of the restore call (`POST /admin/restore`; spec/archive.md, "On the Worker").
pub const RESTORE_PATH: &str = "/restore";
/// Path of the test-only wipe of the coordinator's storage (built with `test-hooks`
/// only).
pub const WIPE_PATH: &str = "/wipe";
/// Path of the test-only archive status (log head and flush cursor; `test-hooks` only).
pub const ARCHIVE_STATUS_PATH: &str = "/archive-status";

/// Bytes carried as a hex string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hex(pub Vec<u8>);

impl Serialize for Hex {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for Hex {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        hex::decode(text.as_bytes())
            .map(Hex)
            .map_err(serde::de::Error::custom)
    }
}

fn hex_opt(v: Option<&Vec<u8>>) -> Option<Hex> {
    v.cloned().map(Hex)
}

/// One listing: keys under `prefix`, strictly after `start_after`, at most `limit`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ListSpec {
    /// Prefix.
    pub prefix: String,
    /// Exclusive lower bound.
    pub start_after: Option<String>,
    /// Most keys.
    pub limit: usize,
}

impl From<&ListQuery> for ListSpec {
    fn from(q: &ListQuery) -> Self {
        Self {
            prefix: q.prefix.clone(),
            start_after: q.start_after.clone(),
            limit: q.limit,
        }
    }
}

/// `POST /read`: states, state listings and index listings, answered from one
/// consistent view.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ReadRequest {
    /// State keys to read.
    pub keys: Vec<String>,
    /// State listings.
    pub lists: Vec<ListSpec>,
    /// Listings of the index (keys under `x/`, which the coordinator keeps: see
    /// `crate::coordinator`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub index_lists: Vec<ListSpec>,
}

/// The answer to [`ReadRequest`], in the request's order.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ReadReply {
    /// One value per key (`null`: absent).
    pub values: Vec<Option<Hex>>,
    /// One key list per listing.
    pub lists: Vec<Vec<String>>,
    /// One key list per index listing.
    #[serde(default)]
    pub index_lists: Vec<Vec<String>>,
}

/// One compare-and-swap on the wire.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WireOp {
    /// State key.
    pub key: String,
    /// Expected value (`null`: absent).
    pub expected: Option<Hex>,
    /// New value (`null`: delete).
    pub new: Option<Hex>,
}

/// `POST /commit`: one request's [`Commit`] — every CAS op, the read checks and the
/// log entries — applied all-or-nothing.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CommitRequest {
    /// The compare-and-swaps.
    pub ops: Vec<WireOp>,
    /// Log entries to append, in order.
    pub log: Vec<Hex>,
    /// The commit's read set ([`Commit::reads`]): each key must still hold this value
    /// (`null`: absent) for the commit to apply; a key that does not is refused like a
    /// failed op. This makes commits serializable, also when the Worker executed on
    /// states it had cached instead of reading them from the coordinator first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reads: Vec<WireRead>,
    /// The index entries of what the commit adds (keys under `x/`; their values are
    /// empty), written in the commit's transaction when it applies. `None` (a Worker
    /// from before the index moved to the coordinator, or the test fault that drops
    /// them): the coordinator indexes the commit's log entries itself, from the log
    /// (see `crate::repair`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<Vec<String>>,
    /// Test-only: fail the storage transaction after writing this many ops (ignored
    /// unless the Worker was built with the `test-hooks` feature).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fail_after_ops: Option<usize>,
}

impl CommitRequest {
    /// The wire form of `commit` (its ops, reads and log).
    pub fn new(commit: &Commit) -> Self {
        Self {
            ops: commit
                .ops
                .iter()
                .map(|op| WireOp {
                    key: op.key.clone(),
                    expected: hex_opt(op.expected.as_ref()),
                    new: hex_opt(op.new.as_ref()),
                })
                .collect(),
            log: commit.log.iter().cloned().map(Hex).collect(),
            reads: commit
                .reads
                .iter()
                .map(|r| WireRead {
                    key: r.key.clone(),
                    value: hex_opt(r.value.as_ref()),
                })
                .collect(),
            index: Some(Vec::new()),
            fail_after_ops: None,
        }
    }

    /// Back to a [`Commit`].
    pub fn commit(self) -> Commit {
        Commit {
            ops: self
                .ops
                .into_iter()
                .map(|op| CasOp {
                    key: op.key,
                    expected: op.expected.map(|h| h.0),
                    new: op.new.map(|h| h.0),
                })
                .collect(),
            reads: self
                .reads
                .into_iter()
                .map(|r| ReadCheck {
                    key: r.key,
                    value: r.value.map(|h| h.0),
                })
                .collect(),
            log: self.log.into_iter().map(|h| h.0).collect(),
        }
    }
}

/// One read check of a commit on the wire ([`ReadCheck`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireRead {
    /// State key.
    pub key: String,
    /// The value it must still hold (`null`: absent).
    pub value: Option<Hex>,
}

/// One refused key on the wire.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WireFailure {
    /// The key.
    pub key: String,
    /// Its current value.
    pub current: Option<Hex>,
}

/// The answer to [`CommitRequest`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum CommitReply {
    /// Everything applied.
    Applied {
        /// Sequence number of the first appended log entry.
        first_seq: Option<u64>,
    },
    /// Nothing applied; these keys did not hold their expected values.
    Conflict {
        /// The refused keys with their current values.
        failures: Vec<WireFailure>,
    },
}

impl CommitReply {
    /// The wire form of an outcome (`None` for an outcome this protocol does not know).
    pub fn new(outcome: &CommitOutcome) -> Option<Self> {
        match outcome {
            CommitOutcome::Applied { first_seq } => Some(Self::Applied {
                first_seq: *first_seq,
            }),
            CommitOutcome::Conflict(failures) => Some(Self::Conflict {
                failures: failures
                    .iter()
                    .map(|f| WireFailure {
                        key: f.key.clone(),
                        current: hex_opt(f.current.as_ref()),
                    })
                    .collect(),
            }),
            _ => None,
        }
    }

    /// Back to a [`CommitOutcome`].
    pub fn outcome(self) -> CommitOutcome {
        match self {
            Self::Applied { first_seq } => CommitOutcome::Applied { first_seq },
            Self::Conflict { failures } => CommitOutcome::Conflict(
                failures
                    .into_iter()
                    .map(|f| CasFailure {
                        key: f.key,
                        current: f.current.map(|h| h.0),
                    })
                    .collect(),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commits_and_outcomes_roundtrip_through_json() {
        let commit = Commit::new(
            vec![
                CasOp {
                    key: "intent/ab".into(),
                    expected: Some(vec![0, 255, 7]),
                    new: None,
                },
                CasOp {
                    key: "rec/ab".into(),
                    expected: None,
                    new: Some(b"fact".to_vec()),
                },
            ],
            vec![b"{\"a\":1}".to_vec()],
        )
        .with_read("hints/active", None)
        .with_read("contract", Some(vec![1, 2]));
        let json = serde_json::to_string(&CommitRequest::new(&commit)).expect("json");
        let back: CommitRequest = serde_json::from_str(&json).expect("parse");
        assert_eq!(back.commit(), commit);
        // A commit without reads leaves the field out.
        let bare = Commit::new(Vec::new(), vec![b"e".to_vec()]);
        let json = serde_json::to_string(&CommitRequest::new(&bare)).expect("json");
        assert!(!json.contains("reads"), "{json}");

        let conflict = CommitOutcome::Conflict(vec![CasFailure {
            key: "intent/ab".into(),
            current: Some(vec![1, 2]),
        }]);
        let json = serde_json::to_string(&CommitReply::new(&conflict)).expect("json");
        let back: CommitReply = serde_json::from_str(&json).expect("parse");
        assert_eq!(back.outcome(), conflict);
    }

    #[test]
    fn bad_hex_is_refused() {
        assert!(serde_json::from_str::<Hex>("\"zz\"").is_err());
        assert_eq!(
            serde_json::from_str::<Hex>("\"00ff\"").expect("hex").0,
            vec![0, 255]
        );
    }
}
