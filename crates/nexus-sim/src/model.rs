//! The sequential specification of one Intent, written from the lifecycle of design §3
//! (not from the core's code): a register of (state, holder, token) plus the deny and
//! allow Hints that select it, with claim, renew, resolve, withdraw, propose and Hint
//! operations, each at its host's clock.

use nexus_core::FihHash;

use crate::wgl::Model;

/// What a Hint does to admissibility.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Gate {
    /// Denies what it selects.
    Deny,
    /// Admits what it selects, whatever denies it.
    Allow,
    /// Neither (a priority Hint).
    Neutral,
}

/// The lifecycle state.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum State {
    /// Not proposed (yet).
    Absent,
    /// Open for claims; `token` of the last claim.
    Available {
        /// The last fencing token.
        token: u64,
    },
    /// Held.
    Claimed {
        /// The holding agent.
        holder: usize,
        /// End of the lease, host time.
        lease_until: u64,
        /// The claim's fencing token.
        token: u64,
    },
    /// Resolved by `fact`.
    Resolved {
        /// The resolving Fact.
        fact: FihHash,
    },
    /// Withdrawn by its proposer.
    Withdrawn,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ActiveHint {
    hash: FihHash,
    gate: Gate,
    selects: bool,
    expires: Option<u64>,
}

impl ActiveHint {
    fn active_at(&self, now: u64) -> bool {
        self.expires.is_none_or(|e| now < e)
    }
}

/// One Intent, with the Hints that were active (as the store keeps them: pruned of
/// expired ones each time a Hint is added).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Register {
    state: StateBox,
    /// Active Hints that matter here, sorted by hash.
    hints: Vec<ActiveHint>,
    /// Every committed Hint (a second submission is a duplicate).
    committed: Vec<FihHash>,
    /// Every applied action, sorted (the same action again is `replayed`).
    acted: Vec<FihHash>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct StateBox(State);

impl Default for StateBox {
    fn default() -> Self {
        StateBox(State::Absent)
    }
}

/// An operation on one Intent.
#[derive(Debug, Clone)]
pub enum Op {
    /// Proposing the Intent.
    Propose {
        /// Host clock.
        now: u64,
    },
    /// Submitting a Hint (every Hint is an operation on every Intent: adding one
    /// prunes the expired ones).
    Hint {
        /// The Hint.
        hash: FihHash,
        /// Its effect on admissibility.
        gate: Gate,
        /// Whether it selects this Intent.
        selects: bool,
        /// When it expires.
        expires: Option<u64>,
        /// Host clock.
        now: u64,
    },
    /// A claim (or takeover).
    Claim {
        /// The signed action's hash.
        action: FihHash,
        /// The claiming agent.
        who: usize,
        /// Lease asked for.
        lease_ms: u64,
        /// Host clock.
        now: u64,
    },
    /// A renewal.
    Renew {
        /// The signed action's hash.
        action: FihHash,
        /// The renewing agent.
        who: usize,
        /// The token presented.
        token: u64,
        /// Lease asked for.
        lease_ms: u64,
        /// Host clock.
        now: u64,
    },
    /// A Fact resolving the Intent.
    Resolve {
        /// The Fact's author.
        who: usize,
        /// The token presented.
        token: u64,
        /// The Fact.
        fact: FihHash,
        /// Host clock.
        now: u64,
    },
    /// A withdrawal.
    Withdraw {
        /// The signed action's hash.
        action: FihHash,
        /// Whether the author is the proposer.
        by_proposer: bool,
    },
}

/// What an operation answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ret {
    /// `201`: committed.
    Created,
    /// `200` with `duplicate: true`: committed earlier.
    Duplicate,
    /// `200`: a lease.
    Leased {
        /// The fencing token.
        token: u64,
        /// End of the lease.
        lease_until: u64,
        /// Whether it took a lapsed claim over.
        takeover: bool,
    },
    /// `200`: withdrawn.
    Withdrawn,
    /// An error, by code.
    Refused(String),
}

fn refuse(code: &str) -> Ret {
    Ret::Refused(code.to_owned())
}

impl Register {
    fn admissible(&self, now: u64) -> bool {
        let selecting = || self.hints.iter().filter(|h| h.selects && h.active_at(now));
        selecting().any(|h| h.gate == Gate::Allow) || !selecting().any(|h| h.gate == Gate::Deny)
    }

    /// The holder check of renewals and resolutions.
    fn check_holder(&self, who: usize, token: u64, now: u64) -> Result<(), Ret> {
        match &self.state.0 {
            State::Claimed {
                holder,
                lease_until,
                token: current,
            } => {
                if *holder != who {
                    Err(refuse("not_holder"))
                } else if token != *current {
                    Err(refuse("stale_token"))
                } else if *lease_until <= now {
                    Err(refuse("lease_expired"))
                } else {
                    Ok(())
                }
            }
            State::Resolved { .. } => Err(refuse("already_resolved")),
            State::Withdrawn => Err(refuse("withdrawn")),
            State::Available { .. } | State::Absent => Err(refuse("not_holder")),
        }
    }

    fn with(&self, state: State) -> Self {
        Self {
            state: StateBox(state),
            ..self.clone()
        }
    }
}

impl Model for Register {
    type Op = Op;
    type Ret = Ret;

    fn step(&self, op: &Op) -> (Self, Ret) {
        // An action takes effect at most once: the same one again changes nothing.
        let action = match op {
            Op::Claim { action, .. } | Op::Renew { action, .. } | Op::Withdraw { action, .. } => {
                Some(*action)
            }
            _ => None,
        };
        let Some(action) = action else {
            return self.transition(op);
        };
        if self.acted.binary_search(&action).is_ok() {
            return (self.clone(), refuse("replayed"));
        }
        let (mut next, ret) = self.transition(op);
        if matches!(ret, Ret::Leased { .. } | Ret::Withdrawn)
            && let Err(at) = next.acted.binary_search(&action)
        {
            next.acted.insert(at, action);
        }
        (next, ret)
    }
}

impl Register {
    /// The operation's effect on the lifecycle, replays aside.
    fn transition(&self, op: &Op) -> (Self, Ret) {
        let same = |r: Ret| (self.clone(), r);
        let state = &self.state.0;
        match op {
            Op::Propose { now } => match state {
                State::Absent if !self.admissible(*now) => same(refuse("inadmissible")),
                State::Absent => (self.with(State::Available { token: 0 }), Ret::Created),
                _ => same(Ret::Duplicate),
            },
            Op::Hint {
                hash,
                gate,
                selects,
                expires,
                now,
            } => {
                if self.committed.contains(hash) {
                    return same(Ret::Duplicate);
                }
                let mut next = self.clone();
                next.committed.push(*hash);
                next.committed.sort();
                next.hints.retain(|h| h.active_at(*now));
                let hint = ActiveHint {
                    hash: *hash,
                    gate: *gate,
                    selects: *selects,
                    expires: *expires,
                };
                if hint.active_at(*now) && *selects && *gate != Gate::Neutral {
                    let at = next.hints.partition_point(|h| h.hash < *hash);
                    next.hints.insert(at, hint);
                }
                (next, Ret::Created)
            }
            Op::Claim {
                who, lease_ms, now, ..
            } => {
                let (token, takeover) = match state {
                    State::Absent => return same(refuse("not_found")),
                    State::Resolved { .. } => return same(refuse("already_resolved")),
                    State::Withdrawn => return same(refuse("withdrawn")),
                    State::Claimed { lease_until, .. } if *lease_until > *now => {
                        return same(refuse("already_claimed"));
                    }
                    State::Claimed { token, .. } => (*token, true),
                    State::Available { token } => (*token, false),
                };
                if !self.admissible(*now) {
                    return same(refuse("inadmissible"));
                }
                let lease_until = now.saturating_add(*lease_ms);
                let token = token + 1;
                let next = self.with(State::Claimed {
                    holder: *who,
                    lease_until,
                    token,
                });
                (
                    next,
                    Ret::Leased {
                        token,
                        lease_until,
                        takeover,
                    },
                )
            }
            Op::Renew {
                who,
                token,
                lease_ms,
                now,
                ..
            } => {
                if *state == State::Absent {
                    return same(refuse("not_found"));
                }
                if let Err(r) = self.check_holder(*who, *token, *now) {
                    return same(r);
                }
                let lease_until = now.saturating_add(*lease_ms);
                let next = self.with(State::Claimed {
                    holder: *who,
                    lease_until,
                    token: *token,
                });
                (
                    next,
                    Ret::Leased {
                        token: *token,
                        lease_until,
                        takeover: false,
                    },
                )
            }
            Op::Resolve {
                who,
                token,
                fact,
                now,
            } => {
                match state {
                    State::Resolved { fact: f } if f == fact => return same(Ret::Duplicate),
                    State::Absent => return same(refuse("unknown_parent")),
                    _ => {}
                }
                if let Err(r) = self.check_holder(*who, *token, *now) {
                    return same(r);
                }
                (self.with(State::Resolved { fact: *fact }), Ret::Created)
            }
            Op::Withdraw { by_proposer, .. } => match state {
                State::Absent => same(refuse("not_found")),
                _ if !by_proposer => same(refuse("not_proposer")),
                State::Resolved { .. } => same(refuse("already_resolved")),
                State::Withdrawn => same(refuse("withdrawn")),
                _ => (self.with(State::Withdrawn), Ret::Withdrawn),
            },
        }
    }
}
