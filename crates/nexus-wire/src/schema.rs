//! Descriptions of the wire forms of records, actions and Intent states for the
//! OpenAPI document (never built at run time: these travel as `nexus_core` types).

#![allow(dead_code)] // Read by the derive only.

use serde_json::Value;

/// `resolves` of a Fact.
#[derive(utoipa::ToSchema)]
#[schema(as = Resolves)]
pub struct WireResolves {
    /// The Intent answered (hex FihHash).
    pub intent: String,
    /// Fencing token of the resolver's claim.
    pub token: u64,
}

/// A Fact, Intent or Hint in wire form: the signed content plus `hash` and `sig`, in
/// normal form (optional members left out, never `null`; no other members).
#[derive(utoipa::ToSchema)]
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
#[derive(utoipa::ToSchema)]
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
#[derive(utoipa::ToSchema)]
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

/// One item of a `POST /v1/batch` request: a signed record or a signed action.
#[derive(utoipa::ToSchema)]
#[schema(as = BatchItem)]
pub enum WireBatchItem {
    /// A Fact, Intent or Hint, as its own route takes it.
    #[schema(rename = "record")]
    Record(WireRecord),
    /// A claim, renewal, withdrawal or retraction, as its own route takes it.
    #[schema(rename = "action")]
    Action(WireAction),
}

/// The body of `POST /v1/batch`.
#[derive(utoipa::ToSchema)]
#[schema(as = Batch)]
pub struct WireBatch {
    /// 1 to 64 items, applied in order, all or nothing.
    pub items: Vec<WireBatchItem>,
}
