//! The JSON bodies the API sends, as types: serialised for responses and described in
//! the OpenAPI document. Records and actions travel in their wire form (see
//! `spec/README.md`); the `Wire*` types exist only to describe it.

#![allow(missing_docs)] // Field docs below feed the OpenAPI document as descriptions.

use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;

use nexus_core::{FihHash, IntentState, Record};

use crate::ErrorCode;

/// `201`/`200` answer to a record submission.
#[derive(Debug, Serialize, ToSchema)]
pub struct Created {
    /// The record's FihHash.
    #[schema(value_type = String, example = "9f0c…")]
    pub hash: FihHash,
    /// `intent`, `fact` or `hint`.
    #[schema(value_type = String)]
    pub kind: &'static str,
    /// True when the record was already committed (nothing changed; status 200).
    pub duplicate: bool,
    /// Commit log sequence number of this commit (`null` for a duplicate).
    pub seq: Option<u64>,
}

/// Answer to a claim or renewal.
#[derive(Debug, Serialize, ToSchema)]
pub struct LeaseBody {
    /// The Intent.
    #[schema(value_type = String)]
    pub intent: FihHash,
    /// Fencing token to present when renewing or resolving.
    pub token: u64,
    /// End of the lease, ms since the Unix epoch.
    pub lease_until: u64,
    /// True when the claim took the Intent over from a lapsed holder.
    pub takeover: bool,
}

/// Answer to a withdrawal.
#[derive(Debug, Serialize, ToSchema)]
pub struct WithdrawnBody {
    /// The Intent.
    #[schema(value_type = String)]
    pub intent: FihHash,
    /// Always `withdrawn`.
    #[schema(value_type = String)]
    pub state: &'static str,
}

/// One Intent of a listing.
#[derive(Debug, Serialize, ToSchema)]
pub struct IntentItem {
    /// The Intent record (wire form).
    #[schema(value_type = WireRecord)]
    pub record: Record,
    /// Its state.
    #[schema(value_type = WireIntentState)]
    pub state: IntentState,
    /// Sum of the active priority Hints selecting it.
    pub priority: i64,
}

/// `GET /v1/intents`.
#[derive(Debug, Serialize, ToSchema)]
pub struct IntentList {
    /// Matching Intents of this page, by priority (highest first), then time and hash.
    pub intents: Vec<IntentItem>,
    /// Cursor for the next page (`null`: no more).
    pub next: Option<String>,
}

/// `GET /v1/facts`.
#[derive(Debug, Serialize, ToSchema)]
pub struct FactList {
    /// Matching Facts, oldest first (per topic).
    #[schema(value_type = Vec<WireRecord>)]
    pub facts: Vec<Record>,
    /// Cursor for the next page (`null`: no more).
    pub next: Option<String>,
}

/// `GET /v1/records/{id}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct RecordBody {
    /// The record (wire form).
    #[schema(value_type = WireRecord)]
    pub record: Record,
    /// `intent`, `fact` or `hint`.
    #[schema(value_type = String)]
    pub kind: &'static str,
    /// Every link: parents, the resolved Intent, a Hint's source Facts.
    #[schema(value_type = Vec<String>)]
    pub parents: Vec<FihHash>,
}

/// `GET /v1/records/{id}/provenance`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProvenanceBody {
    /// The record asked about.
    #[schema(value_type = String)]
    pub root: FihHash,
    /// The root first, then its ancestors breadth first (each once).
    #[schema(value_type = Vec<WireRecord>)]
    pub records: Vec<Record>,
}

/// One active Hint.
#[derive(Debug, Serialize, ToSchema)]
pub struct HintItem {
    /// The Hint's hash.
    #[schema(value_type = String)]
    pub hash: FihHash,
    /// The Hint record (wire form).
    #[schema(value_type = WireRecord)]
    pub hint: Record,
}

/// `GET /v1/hints`.
#[derive(Debug, Serialize, ToSchema)]
pub struct HintList {
    /// Hints in force now, ordered by hash.
    pub hints: Vec<HintItem>,
}

/// `201`/`200` answer to `POST /v1/contract`.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeployedBody {
    /// The contract's hash (the new version in force).
    #[schema(value_type = String)]
    pub hash: FihHash,
    /// Its version number (1 for the first deployment).
    pub version: u64,
    /// Its `contract` name.
    pub name: String,
    /// The deployment Fact.
    #[schema(value_type = String)]
    pub deploy: FihHash,
    /// The version it replaced (`null` for the first).
    #[schema(value_type = Option<String>)]
    pub previous: Option<FihHash>,
    /// The approval Facts that made the upgrade quorum (empty without one).
    #[schema(value_type = Vec<String>)]
    pub approvals: Vec<FihHash>,
    /// True when this deployment had already been applied (status 200).
    pub duplicate: bool,
    /// Commit log sequence number (`null` for a duplicate).
    pub seq: Option<u64>,
}

/// One rule of the contract in force, as `GET /v1/contract` summarises it.
#[derive(Debug, Serialize, ToSchema)]
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
#[derive(Debug, Serialize, ToSchema)]
pub struct ContractBody {
    /// Version number.
    pub version: u64,
    /// The contract's hash.
    #[schema(value_type = String)]
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
    #[schema(value_type = Option<Object>)]
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
#[derive(Debug, Serialize, ToSchema)]
pub struct ContractHistoryBody {
    /// Every deployment, oldest first: `{version, hash, name, deployer, at, deploy,
    /// approvals, previous}`.
    #[schema(value_type = Vec<Object>)]
    pub versions: Vec<nexus_contract::governance::VersionEntry>,
}

/// One commit log entry with its record or action inlined.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum LogItem {
    /// A committed record.
    Record {
        /// Sequence number.
        seq: u64,
        /// Commit time, ms.
        at: u64,
        /// The record (wire form).
        #[schema(value_type = WireRecord)]
        record: Box<Record>,
    },
    /// An applied action.
    Action {
        /// Sequence number.
        seq: u64,
        /// Commit time, ms.
        at: u64,
        /// The action (wire form).
        #[schema(value_type = WireAction)]
        action: Value,
    },
}

/// `GET /v1/log`.
#[derive(Debug, Serialize, ToSchema)]
pub struct LogBody {
    /// Sequence number of the newest entry (0: empty log).
    pub head: u64,
    /// Entries from `from`, in order.
    pub entries: Vec<LogItem>,
}

/// `GET /v1/health`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// Always `ok`.
    #[schema(value_type = String)]
    pub status: &'static str,
    /// Sequence number of the newest commit log entry.
    pub log_head: u64,
}

/// Every error: one shape, a stable code, named details.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// The error object; detail fields depend on the code (e.g. `holder`, `lease_until`,
/// `token` for `already_claimed`; `hint`, `reason` for `inadmissible`; `parent` for
/// `unknown_parent`; `keys` for `conflict`).
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable machine-readable code.
    pub code: ErrorCode,
    /// For people.
    pub message: String,
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub details: Map<String, Value>,
}

// ---- Descriptions of the wire forms (not used at run time) ----

/// `resolves` of a Fact.
#[derive(ToSchema)]
#[schema(as = Resolves)]
pub struct WireResolves {
    /// The Intent answered (hex FihHash).
    pub intent: String,
    /// Fencing token of the resolver's claim.
    pub token: u64,
}

/// A Fact, Intent or Hint in wire form: the signed content plus `hash` and `sig`, in
/// normal form (optional members left out, never `null`; no other members).
#[derive(ToSchema)]
#[schema(as = Record)]
pub struct WireRecord {
    /// `fact`, `intent` or `hint`.
    #[schema(pattern = "^(fact|intent|hint)$")]
    pub kind: String,
    /// Fact and Intent: `/`-separated topic.
    pub topic: Option<String>,
    /// Fact and Intent: JSON body (integers only).
    #[schema(value_type = Object)]
    pub body: Option<Value>,
    /// Fact and Intent: hashes of the records it derives from.
    pub parents: Option<Vec<String>>,
    /// Fact: the Intent it resolves and the claim's fencing token.
    pub resolves: Option<WireResolves>,
    /// Hint: which Intents it applies to (`topic` glob, `body` members).
    #[schema(value_type = Object)]
    pub selector: Option<Value>,
    /// Hint: `deny`, `allow` or `{"priority": n}`.
    #[schema(value_type = Object)]
    pub effect: Option<Value>,
    /// Hint: why.
    pub reason: Option<String>,
    /// Hint: contract, rule and source Facts.
    #[schema(value_type = Object)]
    pub source: Option<Value>,
    /// Hint: when it stops applying, ms.
    pub expires: Option<u64>,
    /// Ed25519 public key of the author (hex).
    pub author: String,
    /// Author's time, ms since the Unix epoch.
    pub time: u64,
    /// FihHash of everything else (hex).
    pub hash: String,
    /// The author's signature over the hash (hex).
    pub sig: String,
}

/// A signed lifecycle action (`claim`, `renew` or `withdraw`) in wire form.
#[derive(ToSchema)]
#[schema(as = Action)]
pub struct WireAction {
    /// `claim`, `renew` or `withdraw`.
    #[schema(pattern = "^(claim|renew|withdraw)$")]
    pub kind: String,
    /// The Intent acted on (hex FihHash).
    pub intent: String,
    /// Claim and renew: requested lease, ms.
    pub lease_ms: Option<u64>,
    /// Renew: the holder's fencing token.
    pub token: Option<u64>,
    /// The actor's key (hex).
    pub author: String,
    /// Actor's time, ms (must be within the server's clock skew limit).
    pub time: u64,
    /// FihHash of everything else (hex).
    pub hash: String,
    /// Signature over the hash (hex).
    pub sig: String,
}

/// The state of an Intent.
#[derive(ToSchema)]
#[schema(as = IntentState)]
pub struct WireIntentState {
    /// `available`, `claimed`, `resolved` or `withdrawn`.
    #[schema(pattern = "^(available|claimed|resolved|withdrawn)$")]
    pub state: String,
    /// Fencing token of the latest claim.
    pub token: u64,
    /// Claimed: the holder's key.
    pub holder: Option<String>,
    /// Claimed: end of the lease, ms.
    pub lease_until: Option<u64>,
    /// Resolved: the resolving Fact.
    pub fact: Option<String>,
    /// Resolved: its author.
    pub by: Option<String>,
}
