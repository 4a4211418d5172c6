//! What a simulated run leaves behind for the checker: every request with the time
//! it was sent and answered and what its caller saw, the final fabric, and a trace.

use std::collections::BTreeMap;
use std::rc::Rc;

use nexus_core::{Effect, FihHash, Intent, Selector};
use serde_json::Value;

/// What a request asks for, as the checker models it.
#[derive(Debug, Clone)]
pub enum ReqKind {
    /// `POST /v1/intents`.
    Propose {
        /// The Intent's hash.
        intent: FihHash,
    },
    /// `POST /v1/hints`.
    Hint {
        /// The Hint's hash.
        hint: FihHash,
        /// What it does.
        effect: Effect,
        /// Which Intents it selects.
        selector: Selector,
        /// When it stops being active.
        expires: Option<u64>,
    },
    /// `POST /v1/intents/{id}/claim`.
    Claim {
        /// The Intent.
        intent: FihHash,
        /// The lease asked for.
        lease_ms: u64,
    },
    /// `POST /v1/intents/{id}/renew`.
    Renew {
        /// The Intent.
        intent: FihHash,
        /// The fencing token presented.
        token: u64,
        /// The lease asked for.
        lease_ms: u64,
    },
    /// `POST /v1/facts` with `resolves`.
    Resolve {
        /// The Intent resolved.
        intent: FihHash,
        /// The fencing token presented.
        token: u64,
        /// The Fact's hash.
        fact: FihHash,
    },
    /// `POST /v1/intents/{id}/withdraw`.
    Withdraw {
        /// The Intent.
        intent: FihHash,
    },
}

impl ReqKind {
    /// The request's verb: `propose`, `hint`, `claim`, `renew`, `resolve`, `withdraw`.
    pub fn verb(&self) -> &'static str {
        match self {
            ReqKind::Propose { .. } => "propose",
            ReqKind::Hint { .. } => "hint",
            ReqKind::Claim { .. } => "claim",
            ReqKind::Renew { .. } => "renew",
            ReqKind::Resolve { .. } => "resolve",
            ReqKind::Withdraw { .. } => "withdraw",
        }
    }

    /// The Intent the request acts on (`None` for a Hint).
    pub fn intent(&self) -> Option<FihHash> {
        match self {
            ReqKind::Propose { intent }
            | ReqKind::Claim { intent, .. }
            | ReqKind::Renew { intent, .. }
            | ReqKind::Resolve { intent, .. }
            | ReqKind::Withdraw { intent } => Some(*intent),
            ReqKind::Hint { .. } => None,
        }
    }
}

/// One signed request; a retry sends the very same bytes again.
#[derive(Debug)]
pub struct SignedRequest {
    /// What it asks for.
    pub kind: ReqKind,
    /// `POST`.
    pub method: &'static str,
    /// The path.
    pub target: String,
    /// The signed record or action (wire JSON).
    pub body: Vec<u8>,
    /// The hash of that record or action.
    pub hash: FihHash,
    /// The signed `time` member.
    pub time: u64,
    /// The agent that signed it.
    pub agent: usize,
}

/// What the caller of a request saw.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// An HTTP answer.
    Http {
        /// The status.
        status: u16,
        /// The error code, for an error.
        code: Option<String>,
        /// The body.
        body: Value,
    },
    /// No answer (the connection dropped after the host finished); the caller cannot
    /// tell whether the write applied. `real` is what the host had answered.
    Lost {
        /// The status the host had answered.
        real: u16,
    },
}

impl Answer {
    /// `201`, `409 already_claimed`, `lost`…: for tallies.
    pub fn label(&self) -> String {
        match self {
            Answer::Http {
                status,
                code: Some(code),
                ..
            } => format!("{status} {code}"),
            Answer::Http { status, .. } => status.to_string(),
            Answer::Lost { .. } => "lost".to_owned(),
        }
    }

    /// True for a 2xx answer the caller received.
    pub fn acknowledged(&self) -> bool {
        matches!(self, Answer::Http { status, .. } if (200..300).contains(status))
    }

    /// True when the caller cannot tell whether the request applied (a lost answer or
    /// a 5xx).
    pub fn unknown(&self) -> bool {
        match self {
            Answer::Lost { .. } => true,
            Answer::Http { status, .. } => *status >= 500,
        }
    }
}

/// One request as sent and answered.
#[derive(Debug, Clone)]
pub struct Call {
    /// Its number in the history.
    pub id: usize,
    /// What was sent.
    pub request: Rc<SignedRequest>,
    /// The isolate that served it.
    pub isolate: usize,
    /// The host's clock for the request (the isolate's, skew included).
    pub now: u64,
    /// Scheduler step at which it was sent.
    pub sent: u64,
    /// Scheduler step at which its answer arrived.
    pub answered: u64,
    /// What the caller saw.
    pub answer: Answer,
}

/// The Intents of a history, with their content (for selectors) and proposer.
#[derive(Debug, Clone)]
pub struct IntentInfo {
    /// The Intent's content.
    pub intent: Intent,
    /// The proposing agent.
    pub proposer: usize,
}

/// A finished simulated run.
#[derive(Debug)]
pub struct History {
    /// The seed it ran from.
    pub seed: u64,
    /// Every request, in the order they were answered.
    pub calls: Vec<Call>,
    /// Every Intent proposed (answered or not), by hash.
    pub intents: BTreeMap<FihHash, IntentInfo>,
    /// The coordinator's states at the end (commit log included); with several
    /// shards, shard 0's.
    pub states: BTreeMap<String, Vec<u8>>,
    /// The states of shards 1.. at the end (empty with one coordinator).
    pub other_shards: Vec<BTreeMap<String, Vec<u8>>>,
    /// KV once converged.
    pub kv: BTreeMap<String, Vec<u8>>,
    /// R2 at the end.
    pub blobs: BTreeMap<String, Vec<u8>>,
    /// One line per event, in order.
    pub trace: Vec<String>,
    /// Scheduler steps taken.
    pub steps: u64,
    /// Faults injected, by name.
    pub injected: BTreeMap<&'static str, u64>,
}
