//! The workload: agents that propose Intents, post Hints, claim, renew, resolve and
//! withdraw, retry after a 5xx with the very same signed request, and now and then
//! send an acknowledged request again.

use std::collections::BTreeMap;
use std::rc::Rc;

use nexus_client::builders::{
    claim_at, fact_at, hint_at, propose_at, renew_at, selector, withdraw_at,
};
use nexus_core::{Content, Effect, FihHash, SigningKey};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde_json::json;

use crate::history::{IntentInfo, ReqKind, SignedRequest};

/// Topics Intents are proposed under.
const TOPICS: [&str; 3] = ["sim/a/x", "sim/a/y", "sim/b/x"];
/// Topic globs Hints select.
const GLOBS: [&str; 4] = ["sim/a/**", "sim/b/**", "sim/**", "sim/a/x"];
/// Values of the `tag` body member (Hints may select on it).
const TAGS: [&str; 2] = ["red", "blue"];

/// A claim the agent was granted (its token and lease).
#[derive(Debug, Clone, Copy)]
pub struct Hold {
    /// The fencing token.
    pub token: u64,
    /// End of the lease, host time.
    pub lease_until: u64,
}

/// One agent (one key): at most one request in flight.
#[derive(Debug)]
pub struct Agent {
    /// Its key.
    pub key: SigningKey,
    /// Offset of its clock from global time, ms.
    pub skew: i64,
    /// Whether a request of it is in flight.
    pub busy: bool,
    /// The request to send again after a 5xx or a lost answer, and how often it was
    /// sent already.
    pub retry: Option<(Rc<SignedRequest>, u32)>,
    /// Claims it was granted, by Intent (a lapsed one stays: the agent may not know).
    pub holds: BTreeMap<FihHash, Hold>,
    /// Requests it had acknowledged (to send again as duplicates).
    pub acked: Vec<Rc<SignedRequest>>,
    /// Requests it still may start (retries not counted).
    pub budget: usize,
}

/// Every agent plus what they know together (clients talk out of band).
#[derive(Debug)]
pub struct Workload {
    /// The agents.
    pub agents: Vec<Agent>,
    /// Every Intent proposed so far, in order, answered or not.
    pub intents: Vec<FihHash>,
    /// Their content and proposer.
    pub info: BTreeMap<FihHash, IntentInfo>,
    counter: u64,
}

/// The deployment id of the simulated coordinator, which every action is signed for.
pub const DEPLOYMENT: &str = "sim";

/// [`DEPLOYMENT`] as a deployment id.
pub fn deployment() -> nexus_core::Deployment {
    DEPLOYMENT.parse().expect("a valid deployment id")
}

/// Most sends of one signed request (the first and its retries).
pub const MAX_SENDS: u32 = 5;

impl Workload {
    /// `agents` agents sharing `budget` requests, keys and clock skews (within
    /// `skew_ms`) drawn from `rng`.
    pub fn new(rng: &mut ChaCha8Rng, agents: usize, budget: usize, skew_ms: u64) -> Self {
        let per = budget.div_ceil(agents.max(1));
        let agents = (0..agents)
            .map(|_| Agent {
                key: SigningKey::from_seed(&rng.r#gen()),
                skew: skew(rng, skew_ms),
                busy: false,
                retry: None,
                holds: BTreeMap::new(),
                acked: Vec::new(),
                budget: per,
            })
            .collect();
        Self {
            agents,
            intents: Vec::new(),
            info: BTreeMap::new(),
            counter: 0,
        }
    }

    /// Agents that could send a request now.
    pub fn ready(&self) -> impl Iterator<Item = usize> + '_ {
        self.agents
            .iter()
            .enumerate()
            .filter(|(_, a)| !a.busy && (a.budget > 0 || a.retry.is_some()))
            .map(|(i, _)| i)
    }

    /// The next request of agent `a` at global time `global`, with how many times it
    /// was sent before: its pending retry (mostly), or a new one.
    pub fn next(
        &mut self,
        rng: &mut ChaCha8Rng,
        a: usize,
        global: u64,
    ) -> (Rc<SignedRequest>, u32) {
        if let Some((req, sends)) = self.agents[a].retry.take()
            && rng.gen_bool(0.85)
        {
            return (req, sends);
        }
        self.agents[a].budget = self.agents[a].budget.saturating_sub(1);
        let now = global.saturating_add_signed(self.agents[a].skew);
        loop {
            if let Some(r) = self.pick(rng, a, now) {
                return (Rc::new(r), 0);
            }
        }
    }

    fn pick(&mut self, rng: &mut ChaCha8Rng, a: usize, now: u64) -> Option<SignedRequest> {
        let roll = if self.intents.len() < 2 {
            0
        } else {
            rng.gen_range(0..100)
        };
        let agent = &self.agents[a];
        let key = agent.key.clone();
        let lease_ms = rng.gen_range(1_000..=4_000);
        match roll {
            0..=14 => {
                self.counter += 1;
                let topic = TOPICS[rng.gen_range(0..TOPICS.len())];
                let tag = TAGS[rng.gen_range(0..TAGS.len())];
                let rec = propose_at(
                    &key,
                    topic,
                    json!({"n": self.counter, "tag": tag}),
                    &[],
                    now,
                )
                .expect("a simulated Intent is valid");
                let Content::Intent(intent) = rec.content().clone() else {
                    unreachable!("propose_at builds an Intent");
                };
                let h = rec.hash();
                self.intents.push(h);
                self.info.insert(
                    h,
                    IntentInfo {
                        intent,
                        proposer: a,
                    },
                );
                Some(submit(
                    ReqKind::Propose { intent: h },
                    "/v1/intents",
                    rec,
                    a,
                ))
            }
            15..=49 => {
                let intent = self.intents[rng.gen_range(0..self.intents.len())];
                let act =
                    claim_at(&key, &deployment(), intent, lease_ms, now).expect("a valid claim");
                Some(action(ReqKind::Claim { intent, lease_ms }, "claim", act, a))
            }
            50..=61 => {
                let (intent, hold) = pick_hold(rng, agent)?;
                let act = renew_at(&key, &deployment(), intent, hold.token, lease_ms, now)
                    .expect("a valid renewal");
                let kind = ReqKind::Renew {
                    intent,
                    token: hold.token,
                    lease_ms,
                };
                Some(action(kind, "renew", act, a))
            }
            62..=75 => {
                let (intent, hold) = pick_hold(rng, agent)?;
                let topic = self.info[&intent].intent.topic.to_string();
                self.counter += 1;
                let rec = fact_at(
                    &key,
                    &topic,
                    json!({"result": self.counter}),
                    &[intent],
                    Some((intent, hold.token)),
                    now,
                )
                .expect("a valid Fact");
                let kind = ReqKind::Resolve {
                    intent,
                    token: hold.token,
                    fact: rec.hash(),
                };
                Some(submit(kind, "/v1/facts", rec, a))
            }
            76..=81 => {
                // Mostly the proposer's own Intents; now and then someone else's.
                let own: Vec<FihHash> = self
                    .intents
                    .iter()
                    .copied()
                    .filter(|h| self.info[h].proposer == a)
                    .collect();
                let intent = if own.is_empty() || rng.gen_bool(0.15) {
                    self.intents[rng.gen_range(0..self.intents.len())]
                } else {
                    own[rng.gen_range(0..own.len())]
                };
                let act =
                    withdraw_at(&key, &deployment(), intent, now).expect("a valid withdrawal");
                Some(action(ReqKind::Withdraw { intent }, "withdraw", act, a))
            }
            82..=93 => {
                let effect = match rng.gen_range(0..4) {
                    0 | 1 => Effect::Deny,
                    2 => Effect::Allow,
                    _ => Effect::Priority(rng.gen_range(-3..=3)),
                };
                let sel = if rng.gen_bool(0.8) {
                    selector(Some(GLOBS[rng.gen_range(0..GLOBS.len())]), None)
                } else {
                    selector(
                        None,
                        Some(json!({"tag": TAGS[rng.gen_range(0..TAGS.len())]})),
                    )
                }
                .expect("a valid selector");
                // Deny Hints always expire (soon), so that the Intents they select
                // come back into play; others may stay.
                let expires = (effect == Effect::Deny || rng.gen_bool(0.6))
                    .then(|| now + rng.gen_range(500..=4_000));
                self.counter += 1;
                let reason = format!("sim {}", self.counter);
                let rec = hint_at(&key, sel.clone(), effect, &reason, None, expires, now)
                    .expect("a valid Hint");
                let kind = ReqKind::Hint {
                    hint: rec.hash(),
                    effect,
                    selector: sel,
                    expires,
                };
                Some(submit(kind, "/v1/hints", rec, a))
            }
            _ => {
                let acked = &self.agents[a].acked;
                if acked.is_empty() {
                    return None;
                }
                let again = &acked[rng.gen_range(0..acked.len())];
                Some(SignedRequest {
                    kind: again.kind.clone(),
                    method: again.method,
                    target: again.target.clone(),
                    body: again.body.clone(),
                    hash: again.hash,
                    time: again.time,
                    agent: a,
                })
            }
        }
    }
}

/// A clock offset within `±bound` ms.
pub fn skew(rng: &mut ChaCha8Rng, bound: u64) -> i64 {
    let bound = i64::try_from(bound).unwrap_or(i64::MAX);
    if bound == 0 {
        0
    } else {
        rng.gen_range(-bound..=bound)
    }
}

/// A hold of the agent's: mostly its newest, sometimes an older one (stale tokens).
fn pick_hold(rng: &mut ChaCha8Rng, agent: &Agent) -> Option<(FihHash, Hold)> {
    if agent.holds.is_empty() {
        return None;
    }
    let i = rng.gen_range(0..agent.holds.len());
    agent.holds.iter().nth(i).map(|(h, hold)| (*h, *hold))
}

fn submit(kind: ReqKind, target: &str, rec: nexus_core::Record, agent: usize) -> SignedRequest {
    SignedRequest {
        kind,
        method: "POST",
        target: target.to_owned(),
        body: rec.to_json(),
        hash: rec.hash(),
        time: rec.content().time(),
        agent,
    }
}

fn action(kind: ReqKind, verb: &str, act: nexus_core::Action, agent: usize) -> SignedRequest {
    let intent = kind.intent().expect("an action names an Intent");
    SignedRequest {
        kind,
        method: "POST",
        target: format!("/v1/intents/{intent}/{verb}"),
        body: act.to_json(),
        hash: act.hash(),
        time: act.content().time(),
        agent,
    }
}
