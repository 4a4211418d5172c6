//! The JSON bodies the API sends, as types: the server serialises them, the client
//! reads them, and with the `openapi` feature they describe themselves in the OpenAPI
//! document. Records and actions travel in their wire form (see `spec/README.md`).
//!
//! The bodies that carry records are generic over the record's type: the server sends
//! [`Record`]s (the default), a client reads each one as a JSON [`Value`] first and
//! verifies it against its own limits ([`Record::from_value`]) before it keeps it.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use nexus_core::{Content, FihHash, Hint, IntentState, Kind, Lease, Record};

use crate::ErrorCode;
#[cfg(feature = "openapi")]
use crate::schema::{WireAction, WireIntentState, WireRecord};

/// `201`/`200` answer to a record submission.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Created {
    /// The record's FihHash.
    #[cfg_attr(feature = "openapi", schema(value_type = String, example = "9f0c…"))]
    pub hash: FihHash,
    /// `intent`, `fact` or `hint`.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub kind: Kind,
    /// True when the record was already committed (nothing changed; status 200).
    pub duplicate: bool,
    /// Commit log sequence number of this commit (`null` for a duplicate).
    pub seq: Option<u64>,
}

/// Answer to a claim or renewal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LeaseBody {
    /// The Intent.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub intent: FihHash,
    /// Fencing token to present when renewing or resolving.
    pub token: u64,
    /// End of the lease, ms since the Unix epoch.
    pub lease_until: u64,
    /// True when the claim took the Intent over from a lapsed holder.
    pub takeover: bool,
}

/// Answer to a withdrawal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WithdrawnBody {
    /// The Intent.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub intent: FihHash,
    /// Always `withdrawn`.
    pub state: String,
}

/// Answer to a Hint's retraction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RetractedBody {
    /// The Hint, no longer in force.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub hint: FihHash,
    /// The sequence number of the retraction's log entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
}

/// What one item of a `POST /v1/batch` did: the body its own route would have answered,
/// under the name of what it was.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum BatchResult {
    /// A record (`POST /v1/intents`, `/v1/facts`, `/v1/hints`).
    Record(Created),
    /// A claim or renewal.
    Lease(LeaseBody),
    /// A withdrawal.
    Withdrawn(WithdrawnBody),
    /// A Hint's retraction.
    Retracted(RetractedBody),
}

/// `200` answer to `POST /v1/batch`: every item committed, all in one atomic commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BatchBody {
    /// One result per item, in the items' order.
    pub results: Vec<BatchResult>,
}

/// One Intent of a listing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(bound = ""))]
pub struct IntentItem<R = Record> {
    /// The Intent record (wire form).
    #[cfg_attr(feature = "openapi", schema(value_type = WireRecord))]
    pub record: R,
    /// Its state.
    #[cfg_attr(feature = "openapi", schema(value_type = WireIntentState))]
    pub state: IntentState,
    /// Sum of the active priority Hints selecting it.
    pub priority: i64,
}

/// `GET /v1/intents`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(bound = ""))]
pub struct IntentList<R = Record> {
    /// Matching Intents of this page, by priority (highest first), then time and hash.
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<IntentItem>))]
    pub intents: Vec<IntentItem<R>>,
    /// Cursor for the next page (`null`: no more).
    pub next: Option<String>,
}

/// `GET /v1/facts`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(bound = ""))]
pub struct FactList<R = Record> {
    /// Matching Facts, oldest first (per topic).
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<WireRecord>))]
    pub facts: Vec<R>,
    /// Cursor for the next page (`null`: no more).
    pub next: Option<String>,
}

/// `GET /v1/records/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(bound = ""))]
pub struct RecordBody<R = Record> {
    /// The record (wire form).
    #[cfg_attr(feature = "openapi", schema(value_type = WireRecord))]
    pub record: R,
    /// `intent`, `fact` or `hint`.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub kind: Kind,
    /// Every link: parents, the resolved Intent, a Hint's source Facts.
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<String>))]
    pub parents: Vec<FihHash>,
}

/// `GET /v1/records/{id}/provenance`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(bound = ""))]
pub struct ProvenanceBody<R = Record> {
    /// The record asked about.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub root: FihHash,
    /// The root first, then its ancestors breadth first (each once).
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<WireRecord>))]
    pub records: Vec<R>,
}

/// One active Hint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(bound = ""))]
pub struct HintItem<R = Record> {
    /// The Hint's hash.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub hash: FihHash,
    /// The Hint record (wire form).
    #[cfg_attr(feature = "openapi", schema(value_type = WireRecord))]
    pub hint: R,
}

/// `GET /v1/hints`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(bound = ""))]
pub struct HintList<R = Record> {
    /// Hints in force now, ordered by hash.
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<HintItem>))]
    pub hints: Vec<HintItem<R>>,
}

/// `201`/`200` answer to `POST /v1/contract`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeployedBody {
    /// The contract's hash (the new version in force).
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub hash: FihHash,
    /// Its version number (1 for the first deployment).
    pub version: u64,
    /// Its `contract` name.
    pub name: String,
    /// The deployment Fact.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub deploy: FihHash,
    /// The version it replaced (`null` for the first).
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub previous: Option<FihHash>,
    /// The approval Facts that made the upgrade quorum (empty without one).
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<String>))]
    pub approvals: Vec<FihHash>,
    /// True when this deployment had already been applied (status 200).
    pub duplicate: bool,
    /// Commit log sequence number (`null` for a duplicate).
    pub seq: Option<u64>,
}

/// One rule of the contract in force, as `GET /v1/contract` summarises it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ContractRule {
    /// The rule's name.
    pub name: String,
    /// The topic glob of the Facts it reads.
    pub topic: String,
    /// How many matching Facts trigger it.
    pub threshold: usize,
    /// Its window over Fact times, ms (`null`: unbounded).
    pub within_ms: Option<u64>,
}

/// `GET /v1/contract`: the version in force.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ContractBody {
    /// Version number.
    pub version: u64,
    /// The contract's hash.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub hash: FihHash,
    /// Its `contract` name.
    pub name: String,
    /// Its source (`contract.nex`).
    pub source: String,
    /// Its rules.
    pub rules: Vec<ContractRule>,
    /// Keys allowed to upgrade it (empty: any key the server allows).
    pub upgrade_keys: Vec<String>,
    /// Approvals an upgrade needs, and where (`null`: none).
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub upgrade_quorum: Option<Value>,
}

impl ContractBody {
    /// The answer for version `version` with hash `hash` and `source`, parsed as
    /// `parsed`.
    pub fn new(
        version: u64,
        hash: FihHash,
        source: String,
        parsed: Option<&nexus_contract::Contract>,
    ) -> Self {
        Self {
            version,
            hash,
            name: parsed.map(|c| c.name().to_owned()).unwrap_or_default(),
            source,
            rules: parsed
                .map(|c| {
                    c.rules()
                        .iter()
                        .map(|r| ContractRule {
                            name: r.name.clone(),
                            topic: r.topic.to_string(),
                            threshold: r.threshold,
                            within_ms: r.within_ms,
                        })
                        .collect()
                })
                .unwrap_or_default(),
            upgrade_keys: parsed
                .map(|c| c.upgrade().keys.iter().map(|k| k.to_string()).collect())
                .unwrap_or_default(),
            upgrade_quorum: parsed.and_then(|c| {
                c.upgrade()
                    .quorum
                    .as_ref()
                    .map(|q| serde_json::json!({"count": q.count, "topic": q.topic.as_str()}))
            }),
        }
    }
}

/// `GET /v1/contract/history`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ContractHistoryBody {
    /// Every deployment, oldest first: `{version, hash, name, deployer, at, deploy,
    /// approvals, previous}`.
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<Object>))]
    pub versions: Vec<nexus_contract::governance::VersionEntry>,
}

/// One commit log entry with its record or action inlined.
// Serialised only: a client keeps the entries as JSON values (`LogBody<Value>`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(untagged)]
pub enum LogItem {
    /// A committed record.
    Record {
        /// Sequence number.
        seq: u64,
        /// Commit time, ms.
        at: u64,
        /// The record (wire form).
        #[cfg_attr(feature = "openapi", schema(value_type = WireRecord))]
        record: Box<Record>,
    },
    /// An applied action.
    Action {
        /// Sequence number.
        seq: u64,
        /// Commit time, ms.
        at: u64,
        /// The action (wire form).
        #[cfg_attr(feature = "openapi", schema(value_type = WireAction))]
        action: Value,
    },
}

/// `GET /v1/log`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(bound = ""))]
pub struct LogBody<E = LogItem> {
    /// Sequence number of the newest entry (0: empty log).
    pub head: u64,
    /// Entries from `from`, in order.
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<LogItem>))]
    pub entries: Vec<E>,
}

/// `GET /v1/health`: `200` with `status` `ok`, or `503` with `status` `degraded`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Health {
    /// `ok`, or `degraded`: the store cannot write (`storage_full`: its disk is full,
    /// reads go on, writes answer `507 insufficient_storage` and resume by themselves
    /// once space is freed) or failed otherwise (`storage_unavailable`), or the
    /// contract's Hints could not be committed (`governance`: proposals and claims
    /// answer `503 governance_pending`).
    pub status: String,
    /// Why it is degraded: `storage_full`, `storage_unavailable` or `governance`
    /// (absent when ok).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The store's failure, for people (absent when ok).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Sequence number of the newest commit log entry.
    pub log_head: u64,
    /// The deployment id of this host's store: what a version 2 action must name to be
    /// applied here (absent from a server older than wire format v2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment: Option<String>,
}

impl Health {
    /// The answer of a healthy host whose log head is `log_head`, of deployment
    /// `deployment`.
    pub fn ok(log_head: u64, deployment: Option<String>) -> Self {
        Self {
            status: "ok".to_owned(),
            reason: None,
            message: None,
            log_head,
            deployment,
        }
    }

    /// True when `status` is `ok`.
    pub fn is_ok(&self) -> bool {
        self.status == "ok"
    }
}

/// Every error: one shape, a stable code, named details.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(bound = ""))]
pub struct ErrorBody<C = ErrorCode> {
    // The error object (no doc comment: it would become the schema's description).
    #[allow(missing_docs)]
    #[cfg_attr(feature = "openapi", schema(value_type = ErrorDetail))]
    pub error: ErrorDetail<C>,
}

/// The error object; detail fields depend on the code (e.g. `holder`, `lease_until`,
/// `token` for `already_claimed`; `hint`, `reason` for `inadmissible`; `parent` for
/// `unknown_parent`; `keys` for `conflict`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(bound = ""))]
pub struct ErrorDetail<C = ErrorCode> {
    /// Stable machine-readable code.
    #[cfg_attr(feature = "openapi", schema(value_type = ErrorCode))]
    pub code: C,
    /// For people.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub message: String,
    // The other members, the named details (no doc comment, as for `error`).
    #[allow(missing_docs)]
    #[serde(flatten)]
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub details: Map<String, Value>,
}

impl From<LeaseBody> for Lease {
    fn from(l: LeaseBody) -> Self {
        Lease {
            intent: l.intent,
            token: l.token,
            lease_until: l.lease_until,
            takeover: l.takeover,
        }
    }
}

impl From<&Lease> for LeaseBody {
    fn from(l: &Lease) -> Self {
        LeaseBody {
            intent: l.intent,
            token: l.token,
            lease_until: l.lease_until,
            takeover: l.takeover,
        }
    }
}

impl HintItem<Record> {
    /// The Hint's content (`None` if the record is not a Hint).
    pub fn content(&self) -> Option<&Hint> {
        match self.hint.content() {
            Content::Hint(h) => Some(h),
            _ => None,
        }
    }
}
