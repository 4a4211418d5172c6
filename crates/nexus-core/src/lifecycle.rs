//! The Intent lifecycle: states, fencing tokens and the errors of each transition.
//!
//! ```text
//!             claim (token+1)            Fact with resolves{token}
//! available ───────────────▶ claimed ─────────────────────────────▶ resolved
//!     │                     │  ▲  │ renew (same token, lease extended)
//!     │ withdraw            │  └──┘ takeover once lease_until ≤ now (token+1)
//!     ▼                     ▼ withdraw (proposer)
//! withdrawn ◀───────────────┘
//! ```
//!
//! The state of Intent `h` lives in the ObjectStore under `intent/{h}` and changes only
//! by compare-and-swap inside an atomic commit. The fencing token counts changes of
//! holder: it is 0 while the Intent was never claimed and grows by one with every claim
//! or takeover. Renewals and resolutions present the token of the claim they act for;
//! a stale token (the holder was paused past its lease and someone took over) is refused.
//! Renew and resolve also require the lease to be live (`now < lease_until`).

use serde::{Deserialize, Serialize};

use crate::crypto::{AuthorKey, FihHash};
use crate::record::{Deployment, Kind, ValidationError};
use nexus_store::StoreError;

/// The state of one Intent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "lowercase", deny_unknown_fields)]
pub enum IntentState {
    /// Open for claiming.
    Available {
        /// Fencing token of the last claim (0: never claimed).
        token: u64,
    },
    /// Held by `holder` until `lease_until`; after that anyone may take it over.
    Claimed {
        /// The claimer.
        #[serde(with = "crate::crypto::stored_author")]
        holder: AuthorKey,
        /// End of the lease, in ms since the Unix epoch.
        lease_until: u64,
        /// Fencing token of this claim.
        token: u64,
    },
    /// Answered by a Fact.
    Resolved {
        /// The resolving Fact.
        fact: FihHash,
        /// Its author.
        #[serde(with = "crate::crypto::stored_author")]
        by: AuthorKey,
        /// Fencing token of the claim it resolved.
        token: u64,
    },
    /// Retracted by its proposer.
    Withdrawn {
        /// Fencing token of the last claim.
        token: u64,
    },
}

impl IntentState {
    /// The state's name: `available`, `claimed`, `resolved` or `withdrawn`.
    pub fn name(&self) -> &'static str {
        match self {
            IntentState::Available { .. } => "available",
            IntentState::Claimed { .. } => "claimed",
            IntentState::Resolved { .. } => "resolved",
            IntentState::Withdrawn { .. } => "withdrawn",
        }
    }

    /// The state as agents see it at `now`: a claim whose lease lapsed is `available`
    /// (anyone may take it over), otherwise [`name`](Self::name).
    pub fn effective_name(&self, now: u64) -> &'static str {
        match self {
            IntentState::Claimed { lease_until, .. } if *lease_until <= now => "available",
            other => other.name(),
        }
    }

    /// The fencing token of the latest claim.
    pub fn token(&self) -> u64 {
        match self {
            IntentState::Available { token }
            | IntentState::Claimed { token, .. }
            | IntentState::Resolved { token, .. }
            | IntentState::Withdrawn { token } => *token,
        }
    }

    /// Whether an agent may claim it at `now` (available, or claimed with a lapsed lease).
    pub fn claimable_at(&self, now: u64) -> bool {
        match self {
            IntentState::Available { .. } => true,
            IntentState::Claimed { lease_until, .. } => *lease_until <= now,
            _ => false,
        }
    }

    /// The stored encoding (deterministic JSON).
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Reads a stored encoding.
    pub fn decode(key: &str, bytes: &[u8]) -> Result<Self, StoreError> {
        serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
            key: key.to_owned(),
            reason: e.to_string(),
        })
    }
}

/// Everything that can go wrong in a core operation. Each variant has a stable
/// [`code`](CoreError::code) that hosts put in their error responses.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CoreError {
    /// The record or action is malformed, or its hash or signature does not verify.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// No committed record has this hash.
    #[error("no record {0}")]
    UnknownRecord(FihHash),
    /// No committed record's id starts with this prefix.
    #[error("no record with id prefix {0:?}")]
    UnknownPrefix(String),
    /// A short id matches several records.
    #[error("id prefix {0:?} is ambiguous")]
    AmbiguousId(String),
    /// A parent (or resolved Intent, or Hint source Fact) is not a committed record.
    #[error("parent {0} does not exist")]
    UnknownParent(FihHash),
    /// The record named must be of another kind.
    #[error("{hash} is a {actual}, not a {expected}")]
    WrongKind {
        /// The record.
        hash: FihHash,
        /// What it is.
        actual: Kind,
        /// What it had to be.
        expected: Kind,
    },
    /// An active deny Hint selects the Intent.
    #[error("intent is not admissible: hint {hint} denies it ({reason})")]
    Inadmissible {
        /// The denying Hint.
        hint: FihHash,
        /// Its reason.
        reason: String,
    },
    /// Someone else holds a live claim.
    #[error("intent is claimed by {holder} until {lease_until} (token {token})")]
    AlreadyClaimed {
        /// The holder.
        holder: AuthorKey,
        /// End of the holder's lease.
        lease_until: u64,
        /// The holder's fencing token.
        token: u64,
    },
    /// The caller's lease has lapsed.
    #[error("the lease of {holder} ended at {lease_until}")]
    LeaseExpired {
        /// The holder whose lease ended.
        holder: AuthorKey,
        /// When it ended.
        lease_until: u64,
    },
    /// The caller does not hold the claim (or the Intent is not claimed).
    #[error("not the holder of this intent (state {state}{})", holder.map(|h| format!(", held by {h}")).unwrap_or_default())]
    NotHolder {
        /// The current state's name.
        state: &'static str,
        /// The current holder, if claimed.
        holder: Option<AuthorKey>,
    },
    /// The fencing token is not the current claim's.
    #[error("stale fencing token {presented}: the current token is {current}")]
    StaleToken {
        /// What the caller presented.
        presented: u64,
        /// The current token.
        current: u64,
    },
    /// The Intent is already resolved.
    #[error("intent already resolved by fact {fact}")]
    AlreadyResolved {
        /// The resolving Fact.
        fact: FihHash,
    },
    /// The Intent was withdrawn.
    #[error("intent was withdrawn")]
    Withdrawn,
    /// Only the proposer may withdraw an Intent.
    #[error("only the proposer {proposer} may withdraw this intent")]
    NotProposer {
        /// The proposer.
        proposer: AuthorKey,
    },
    /// The requested lease is too short or too long.
    #[error("lease of {requested} ms is outside {min}..={max} ms")]
    LeaseOutOfRange {
        /// Requested lease.
        requested: u64,
        /// Shortest allowed.
        min: u64,
        /// Longest allowed.
        max: u64,
    },
    /// A record's or action's stated time is too far from the host's clock.
    #[error("stated time {time} is more than {max_skew_ms} ms from the server's clock {now}")]
    ClockSkew {
        /// Stated time.
        time: u64,
        /// Host time.
        now: u64,
        /// Allowed skew.
        max_skew_ms: u64,
    },
    /// A version 1 action (it names no deployment): only an old log may hold one.
    #[error(
        "the action names no deployment (wire format v1); sign it for this deployment \
         (`deployment` of GET /v1/health)"
    )]
    LegacyAction,
    /// The action was signed for another deployment (or this store has no id yet).
    #[error("the action is signed for deployment {signed}, not for this one ({})", ours.as_ref().map(Deployment::as_str).unwrap_or("none yet"))]
    WrongDeployment {
        /// The deployment the action names.
        signed: Deployment,
        /// This store's deployment, if it has one.
        ours: Option<Deployment>,
    },
    /// This very action (same hash) was already applied: an action takes effect once.
    #[error("action {action} was already applied")]
    Replayed {
        /// The action's hash.
        action: FihHash,
    },
    /// Too many Hints are active.
    #[error("{0} hints are active, the limit")]
    TooManyHints(usize),
    /// The author already has `quota` active Hints.
    #[error("{author} has {active} active hints, its quota is {quota}")]
    HintQuota {
        /// The Hint's author.
        author: AuthorKey,
        /// Its active Hints.
        active: usize,
        /// Most it may have.
        quota: usize,
    },
    /// No Hint with this hash is in force (it expired, was retracted or withdrawn).
    #[error("hint {0} is not active")]
    HintNotActive(FihHash),
    /// The author may not post (or retract) this Hint.
    #[error("{author} may not {what}")]
    HintNotPermitted {
        /// Who tried.
        author: AuthorKey,
        /// What it tried, for people.
        what: String,
    },
    /// The active Hints would take more bytes than the limit (stored as JSON).
    #[error("the active hints would take {bytes} bytes; the limit is {limit}")]
    HintListFull {
        /// Size of the list with the new Hint.
        bytes: usize,
        /// The limit.
        limit: usize,
    },
    /// A concurrent commit changed these keys first (the caller may retry).
    #[error("lost a race on {}", keys.join(", "))]
    Conflict {
        /// The keys whose expectations failed.
        keys: Vec<String>,
    },
    /// The storage backend failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl CoreError {
    /// A stable, machine-readable error code.
    pub fn code(&self) -> &'static str {
        match self {
            CoreError::Invalid(v) => match v {
                ValidationError::HashMismatch { .. } => "hash_mismatch",
                ValidationError::BadSignature { .. } => "bad_signature",
                ValidationError::BodyTooLarge { .. } => "body_too_large",
                ValidationError::TooManyParents { .. } => "too_many_parents",
                ValidationError::SelectorTooLarge { .. } => "selector_too_large",
                _ => "invalid_record",
            },
            CoreError::UnknownRecord(_) => "not_found",
            CoreError::UnknownPrefix(_) => "not_found",
            CoreError::AmbiguousId(_) => "ambiguous_id",
            CoreError::UnknownParent(_) => "unknown_parent",
            CoreError::WrongKind { .. } => "wrong_kind",
            CoreError::Inadmissible { .. } => "inadmissible",
            CoreError::AlreadyClaimed { .. } => "already_claimed",
            CoreError::LeaseExpired { .. } => "lease_expired",
            CoreError::NotHolder { .. } => "not_holder",
            CoreError::StaleToken { .. } => "stale_token",
            CoreError::AlreadyResolved { .. } => "already_resolved",
            CoreError::Withdrawn => "withdrawn",
            CoreError::NotProposer { .. } => "not_proposer",
            CoreError::LeaseOutOfRange { .. } => "lease_out_of_range",
            CoreError::ClockSkew { .. } => "clock_skew",
            CoreError::LegacyAction => "legacy_action",
            CoreError::WrongDeployment { .. } => "wrong_deployment",
            CoreError::Replayed { .. } => "replayed",
            CoreError::TooManyHints(_) | CoreError::HintListFull { .. } => "too_many_hints",
            CoreError::HintQuota { .. } => "hint_quota",
            CoreError::HintNotActive(_) => "not_found",
            CoreError::HintNotPermitted { .. } => "hint_not_permitted",
            CoreError::Conflict { .. } => "conflict",
            CoreError::Store(StoreError::Full(_)) => "insufficient_storage",
            CoreError::Store(_) => "storage",
        }
    }
}

/// Shorthand for core results.
pub type CoreResult<T> = Result<T, CoreError>;

/// The transition a claim or takeover makes, or why it may not.
pub fn claim_transition(
    state: &IntentState,
    claimer: AuthorKey,
    lease_ms: u64,
    now: u64,
) -> CoreResult<IntentState> {
    match state {
        IntentState::Resolved { fact, .. } => Err(CoreError::AlreadyResolved { fact: *fact }),
        IntentState::Withdrawn { .. } => Err(CoreError::Withdrawn),
        IntentState::Claimed {
            holder,
            lease_until,
            token,
        } if *lease_until > now => Err(CoreError::AlreadyClaimed {
            holder: *holder,
            lease_until: *lease_until,
            token: *token,
        }),
        IntentState::Available { token } | IntentState::Claimed { token, .. } => {
            Ok(IntentState::Claimed {
                holder: claimer,
                lease_until: now.saturating_add(lease_ms),
                token: token + 1,
            })
        }
    }
}

/// Checks that `actor` holds a live claim with fencing token `token`; returns the lease end.
pub fn check_holder(
    state: &IntentState,
    actor: &AuthorKey,
    token: u64,
    now: u64,
) -> CoreResult<u64> {
    match state {
        IntentState::Claimed {
            holder,
            lease_until,
            token: current,
        } => {
            if holder != actor {
                return Err(CoreError::NotHolder {
                    state: state.name(),
                    holder: Some(*holder),
                });
            }
            if token != *current {
                return Err(CoreError::StaleToken {
                    presented: token,
                    current: *current,
                });
            }
            if *lease_until <= now {
                return Err(CoreError::LeaseExpired {
                    holder: *holder,
                    lease_until: *lease_until,
                });
            }
            Ok(*lease_until)
        }
        IntentState::Resolved { fact, .. } => Err(CoreError::AlreadyResolved { fact: *fact }),
        IntentState::Withdrawn { .. } => Err(CoreError::Withdrawn),
        IntentState::Available { .. } => Err(CoreError::NotHolder {
            state: state.name(),
            holder: None,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::SigningKey;
    use proptest::prelude::*;

    fn who(n: u8) -> AuthorKey {
        SigningKey::from_seed(&[n; 32]).author()
    }

    #[test]
    fn claim_then_takeover_only_after_lapse() {
        let s0 = IntentState::Available { token: 0 };
        let s1 = claim_transition(&s0, who(1), 100, 1000).expect("claim");
        assert_eq!(
            s1,
            IntentState::Claimed {
                holder: who(1),
                lease_until: 1100,
                token: 1
            }
        );
        assert!(matches!(
            claim_transition(&s1, who(2), 100, 1099),
            Err(CoreError::AlreadyClaimed { token: 1, .. })
        ));
        let s2 = claim_transition(&s1, who(2), 100, 1100).expect("takeover");
        assert_eq!(s2.token(), 2);
        assert!(matches!(
            check_holder(&s2, &who(1), 1, 1101),
            Err(CoreError::NotHolder { .. })
        ));
        assert!(matches!(
            check_holder(&s2, &who(2), 1, 1101),
            Err(CoreError::StaleToken {
                presented: 1,
                current: 2
            })
        ));
        assert_eq!(check_holder(&s2, &who(2), 2, 1101).expect("holder"), 1200);
        assert!(matches!(
            check_holder(&s2, &who(2), 2, 1200),
            Err(CoreError::LeaseExpired { .. })
        ));
    }

    #[test]
    fn state_encoding_roundtrips() {
        for s in [
            IntentState::Available { token: 0 },
            IntentState::Claimed {
                holder: who(1),
                lease_until: 5,
                token: 1,
            },
            IntentState::Withdrawn { token: 3 },
        ] {
            assert_eq!(IntentState::decode("k", &s.encode()).expect("decode"), s);
        }
        assert!(IntentState::decode("k", b"{\"state\":\"gone\"}").is_err());
    }

    proptest! {
        /// Over any schedule of claims by several agents at non-decreasing times, a
        /// holder change happens only once the previous lease lapsed, tokens grow by
        /// exactly one per change, and only the current token's holder passes
        /// `check_holder`.
        #[test]
        fn takeover_only_after_expiry_and_tokens_fence(
            steps in prop::collection::vec((0u8..4, 0u64..50, 1u64..40), 1..60)
        ) {
            let mut state = IntentState::Available { token: 0 };
            let mut now = 0u64;
            let mut tokens_seen: Vec<(u8, u64)> = vec![];
            for (agent, dt, lease) in steps {
                now += dt;
                let before = state.clone();
                match claim_transition(&state, who(agent), lease, now) {
                    Ok(next) => {
                        if let IntentState::Claimed { lease_until, .. } = before {
                            prop_assert!(lease_until <= now, "takeover before expiry");
                        }
                        prop_assert_eq!(next.token(), before.token() + 1);
                        tokens_seen.push((agent, next.token()));
                        state = next;
                    }
                    Err(CoreError::AlreadyClaimed { lease_until, .. }) => {
                        prop_assert!(lease_until > now);
                        prop_assert_eq!(&state, &before);
                    }
                    Err(e) => prop_assert!(false, "unexpected {e}"),
                }
                // Every earlier (agent, token) pair except the current one is fenced off.
                for (a, t) in &tokens_seen {
                    let ok = check_holder(&state, &who(*a), *t, now).is_ok();
                    if ok {
                        prop_assert_eq!(*t, state.token());
                    }
                }
            }
        }
    }
}
