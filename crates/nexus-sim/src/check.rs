//! The checker: judges a [`History`].
//!
//! 1. The committed log, exported through the API's own `GET /v1/log` over the final
//!    fabric, replays with `nexus verify --replay`'s verifier
//!    ([`nexus_client::verify_export_with`]).
//! 2. Claims are linearizable per Intent against [`crate::model`] (checked with
//!    [`crate::wgl`]); an answer the caller did not get (lost, 5xx) is "maybe applied".
//! 3. No double claim: no two holders answered the same token of one Intent, and no
//!    claim was granted before an acknowledged lease of an older token had ended.
//! 4. No acknowledged write lost: every record or action a 2xx answered is in the log.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use nexus_api::{Api, ApiConfig, Request};
use nexus_client::{VerifyOptions, verify_export_with};
use nexus_core::{Action, Effect, FihHash, Limits};
use nexus_shard::protocol::{LOCK_PREFIX, XPART_PREFIX};
use nexus_shard::{Placement, ProtocolEntry, ShardMap, merge_order};
use nexus_store::{
    Commit, LOG_HEAD_KEY, MemoryStore, ObjectStore, Snapshot, StoreSnapshot, log_key, parse_head,
};
use serde_json::Value;

use crate::history::{Answer, Call, History, ReqKind};
use crate::model::{Gate, Op, Register, Ret};
use crate::sim::{T0, describe};
use crate::wgl::{Entry, linearize};

/// What the checker found wrong with a history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Violation {
    /// The log could not be exported through the API.
    Export(String),
    /// The exported log does not pass `verify --replay`.
    Replay(String),
    /// One Intent's calls have no linearization.
    NotLinearizable {
        /// The Intent.
        intent: FihHash,
        /// Its calls, one line each.
        calls: Vec<String>,
    },
    /// Two holders with one token, or a claim granted during another's lease.
    DoubleClaim(String),
    /// A write answered 2xx is not in the log.
    LostWrite(String),
    /// The shards do not add up to one deployment: their logs do not merge, a key
    /// lives off its home shard, the replicas of a replicated key differ, or a lock
    /// outlived the final sweep.
    Shards(String),
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::Export(e) => write!(f, "export failed: {e}"),
            Violation::Replay(e) => write!(f, "the log does not replay: {e}"),
            Violation::NotLinearizable { intent, calls } => {
                write!(f, "intent {intent}: no linearization of its calls:")?;
                for c in calls {
                    write!(f, "\n    {c}")?;
                }
                Ok(())
            }
            Violation::DoubleClaim(e) => write!(f, "double claim: {e}"),
            Violation::LostWrite(e) => write!(f, "acknowledged write lost: {e}"),
            Violation::Shards(e) => write!(f, "sharded state is wrong: {e}"),
        }
    }
}

/// The checker's verdict on one history.
#[derive(Debug, Clone)]
pub struct Verdict {
    /// Everything found wrong (empty: the history is fine).
    pub violations: Vec<Violation>,
    /// The exported log (JSON lines, as `nexus export` writes it).
    pub export: String,
    /// Entries in the log.
    pub log_entries: u64,
}

/// Judges `history` (see the module docs).
pub fn check(history: &History) -> Verdict {
    let mut violations = Vec::new();
    let states = match merged_states(history) {
        Ok(states) => states,
        Err(v) => {
            violations.extend(v);
            history.states.clone()
        }
    };
    let (export, entries) = match export(history, states) {
        Ok(e) => e,
        Err(e) => {
            violations.push(Violation::Export(e));
            (String::new(), Vec::new())
        }
    };
    let options = VerifyOptions {
        limits: Limits::default(),
        replay: true,
        ..VerifyOptions::default()
    };
    if let Err(e) = verify_export_with(export.as_bytes(), &options, |_| {}) {
        violations.push(Violation::Replay(e.to_string()));
    }
    lost_writes(history, &entries, &mut violations);
    double_claims(history, &mut violations);
    for intent in history.intents.keys() {
        if let Some(v) = linearizable(history, intent) {
            violations.push(v);
        }
    }
    Verdict {
        violations,
        log_entries: entries.len() as u64,
        export,
    }
}

/// The deployment's states as one store: with one coordinator its own; with several,
/// one log holding the shard logs in their merged order ([`merge_order`], protocol
/// entries left out, as an export of a sharded deployment carries them) and every
/// other key from its home shard. Checks on the way that the shards add up.
fn merged_states(history: &History) -> Result<BTreeMap<String, Vec<u8>>, Vec<Violation>> {
    if history.other_shards.is_empty() {
        return Ok(history.states.clone());
    }
    let shards: Vec<&BTreeMap<String, Vec<u8>>> = std::iter::once(&history.states)
        .chain(&history.other_shards)
        .collect();
    let fail = |e: String| vec![Violation::Shards(e)];
    let map = ShardMap::new(shards.len()).map_err(|e| fail(e.to_string()))?;
    let mut logs = Vec::with_capacity(shards.len());
    for states in &shards {
        let head = states
            .get(LOG_HEAD_KEY)
            .map_or(Ok(0), |v| parse_head(v))
            .map_err(|e| fail(e.to_string()))?;
        let log: Vec<(u64, Vec<u8>)> = (1..=head)
            .map(|seq| (seq, states.get(&log_key(seq)).cloned().unwrap_or_default()))
            .collect();
        logs.push(log);
    }
    let order = merge_order(&logs).map_err(|e| fail(e.to_string()))?;
    let store = MemoryStore::new();
    for (s, seq) in order {
        let entry = &logs[s][(seq - 1) as usize].1;
        match ProtocolEntry::decode(entry) {
            Ok(Some(_)) => continue,
            Ok(None) => {}
            Err(e) => return Err(fail(format!("shard {s} seq {seq}: {e}"))),
        }
        store
            .commit(&Commit::new(vec![], vec![entry.clone()]))
            .map_err(|e| fail(e.to_string()))?;
    }
    let mut states = store.snapshot().map_err(|e| fail(e.to_string()))?.states;
    let mut problems = Vec::new();
    for (s, shard) in shards.iter().enumerate() {
        for (k, v) in *shard {
            match map.placement(k) {
                Placement::Local => {
                    if k.starts_with(LOCK_PREFIX) || k.starts_with(XPART_PREFIX) {
                        problems.push(format!("shard {s} still holds {k} after the final sweep"));
                    }
                }
                Placement::Shard(home) if home == s => {
                    states.insert(k.clone(), v.clone());
                }
                Placement::Shard(home) => {
                    problems.push(format!("{k} is on shard {s}, its home is {home}"));
                }
                Placement::Replicated => {
                    if shards[0].get(k) != Some(v) {
                        problems.push(format!("the replicas of {k} on shards 0 and {s} differ"));
                    }
                    states.insert(k.clone(), v.clone());
                }
            }
        }
    }
    if problems.is_empty() {
        Ok(states)
    } else {
        Err(problems.into_iter().map(Violation::Shards).collect())
    }
}

/// The log through `GET /v1/log` over the final fabric (KV converged) with object
/// states `states`, as lines of an export and as values.
fn export(
    history: &History,
    states: BTreeMap<String, Vec<u8>>,
) -> Result<(String, Vec<Value>), String> {
    let store = MemoryStore::from_snapshot(StoreSnapshot {
        kv: history.kv.clone(),
        blobs: history.blobs.clone(),
        states,
    });
    let api = Api::new(ApiConfig {
        open: true,
        ..ApiConfig::default()
    });
    let mut lines = String::new();
    let mut entries = Vec::new();
    let mut from = 1;
    loop {
        let target = format!("/v1/log?from={from}&limit=1000");
        let r = api.run_sync(&store, &Request::new("GET", &target, Vec::new()), T0);
        if r.status != 200 {
            return Err(format!(
                "GET {target}: {} {}",
                r.status,
                String::from_utf8_lossy(&r.body)
            ));
        }
        let body = r.json_body();
        let page = body["entries"].as_array().cloned().unwrap_or_default();
        if page.is_empty() {
            break;
        }
        for e in page {
            lines.push_str(&e.to_string());
            lines.push('\n');
            entries.push(e);
            from += 1;
        }
        if body["head"].as_u64().is_some_and(|h| from > h) {
            break;
        }
    }
    Ok((lines, entries))
}

fn lost_writes(history: &History, entries: &[Value], out: &mut Vec<Violation>) {
    let limits = Limits::default();
    let mut logged: BTreeSet<FihHash> = BTreeSet::new();
    for e in entries {
        if let Some(h) = e["record"]["hash"].as_str().and_then(|s| s.parse().ok()) {
            logged.insert(h);
        } else if let Ok(a) = Action::from_value(e["action"].clone(), &limits) {
            logged.insert(a.hash());
        }
    }
    for c in history.calls.iter().filter(|c| c.answer.acknowledged()) {
        if !logged.contains(&c.request.hash) {
            out.push(Violation::LostWrite(format!(
                "#{} ({}) was answered {:?} but is not in the log",
                c.id,
                describe(&c.request.kind),
                c.answer
            )));
        }
    }
}

/// A lease some answer granted.
struct Granted {
    call: usize,
    holder: usize,
    token: u64,
    /// The host time the lease was granted at.
    at: u64,
    lease_until: u64,
    claim: bool,
    /// The scheduler step its answer arrived.
    answered: u64,
}

fn leased(c: &Call) -> Option<Granted> {
    let Answer::Http {
        status: 200, body, ..
    } = &c.answer
    else {
        return None;
    };
    let (lease_ms, claim) = match &c.request.kind {
        ReqKind::Claim { lease_ms, .. } => (*lease_ms, true),
        ReqKind::Renew { lease_ms, .. } => (*lease_ms, false),
        _ => return None,
    };
    let token = body["token"].as_u64()?;
    let lease_until = body["lease_until"].as_u64()?;
    Some(Granted {
        call: c.id,
        holder: c.request.agent,
        token,
        at: lease_until.saturating_sub(lease_ms),
        lease_until,
        claim,
        answered: c.answered,
    })
}

fn double_claims(history: &History, out: &mut Vec<Violation>) {
    let mut by_intent: BTreeMap<FihHash, Vec<Granted>> = BTreeMap::new();
    // Renewals that may have applied: (token, call, sent) by Intent.
    let mut renewals: BTreeMap<FihHash, Vec<(u64, usize, u64)>> = BTreeMap::new();
    for c in &history.calls {
        if let ReqKind::Renew { intent, token, .. } = &c.request.kind
            && (c.answer.acknowledged() || c.answer.unknown())
        {
            renewals
                .entry(*intent)
                .or_default()
                .push((*token, c.id, c.sent));
        }
    }
    for c in &history.calls {
        if let (Some(intent), Some(g)) = (c.request.kind.intent(), leased(c)) {
            by_intent.entry(intent).or_default().push(g);
        }
    }
    for (intent, grants) in by_intent {
        let mut holders: BTreeMap<u64, (usize, usize)> = BTreeMap::new();
        for g in &grants {
            match holders.get(&g.token) {
                Some((holder, call)) if *holder != g.holder => {
                    out.push(Violation::DoubleClaim(format!(
                        "intent {intent}: token {} granted to agent {holder} (#{call}) and to \
                         agent {} (#{})",
                        g.token, g.holder, g.call
                    )));
                }
                Some(_) => {}
                None => {
                    holders.insert(g.token, (g.holder, g.call));
                }
            }
        }
        for newer in grants.iter().filter(|g| g.claim) {
            for older in grants.iter().filter(|g| g.token < newer.token) {
                // A later renewal of the older token may have shortened its lease
                // (a renewal runs from its own host clock): then the takeover may be
                // right, and the replay judges it.
                let superseded = renewals.get(&intent).is_some_and(|rs| {
                    rs.iter().any(|(token, call, sent)| {
                        *token == older.token && *call != older.call && *sent < newer.answered
                    })
                });
                if !superseded && newer.at < older.lease_until {
                    out.push(Violation::DoubleClaim(format!(
                        "intent {intent}: #{} claimed token {} at {} while #{}'s lease of token \
                         {} ran until {}",
                        newer.call,
                        newer.token,
                        newer.at,
                        older.call,
                        older.token,
                        older.lease_until
                    )));
                }
            }
        }
    }
}

/// What the model expects a call to answer, from what its caller saw.
fn ret_of(c: &Call) -> Option<Ret> {
    let Answer::Http {
        status, code, body, ..
    } = &c.answer
    else {
        return None;
    };
    Some(match status {
        201 => Ret::Created,
        200 if body["duplicate"] == Value::Bool(true) => Ret::Duplicate,
        200 if body["state"] == "withdrawn" => Ret::Withdrawn,
        200 if body["token"].is_u64() => Ret::Leased {
            token: body["token"].as_u64().unwrap_or_default(),
            lease_until: body["lease_until"].as_u64().unwrap_or_default(),
            takeover: body["takeover"] == Value::Bool(true),
        },
        200 => Ret::Created,
        _ => Ret::Refused(code.clone().unwrap_or_default()),
    })
}

/// The model's operation for call `c` on `intent`, if the call concerns it.
fn op_of(history: &History, intent: &FihHash, c: &Call) -> Option<Op> {
    let who = c.request.agent;
    let now = c.now;
    let on = |i: &FihHash| i == intent;
    Some(match &c.request.kind {
        ReqKind::Propose { intent: i } if on(i) => Op::Propose { now },
        ReqKind::Hint {
            hint,
            effect,
            selector,
            expires,
        } => Op::Hint {
            hash: *hint,
            gate: match effect {
                Effect::Deny => Gate::Deny,
                Effect::Allow => Gate::Allow,
                Effect::Priority(_) => Gate::Neutral,
            },
            selects: history
                .intents
                .get(intent)
                .is_some_and(|i| selector.selects(&i.intent)),
            expires: *expires,
            now,
        },
        ReqKind::Claim {
            intent: i,
            lease_ms,
        } if on(i) => Op::Claim {
            action: c.request.hash,
            who,
            lease_ms: *lease_ms,
            now,
        },
        ReqKind::Renew {
            intent: i,
            token,
            lease_ms,
        } if on(i) => Op::Renew {
            action: c.request.hash,
            who,
            token: *token,
            lease_ms: *lease_ms,
            now,
        },
        ReqKind::Resolve {
            intent: i,
            token,
            fact,
        } if on(i) => Op::Resolve {
            who,
            token: *token,
            fact: *fact,
            now,
        },
        ReqKind::Withdraw { intent: i } if on(i) => Op::Withdraw {
            action: c.request.hash,
            by_proposer: history.intents.get(i).is_some_and(|p| p.proposer == who),
        },
        _ => return None,
    })
}

fn linearizable(history: &History, intent: &FihHash) -> Option<Violation> {
    let mut calls = Vec::new();
    let mut entries = Vec::new();
    for c in &history.calls {
        // A request that lost every attempt's race changed nothing and tells nothing.
        if matches!(&c.answer, Answer::Http { code: Some(code), .. } if code == "conflict") {
            continue;
        }
        let Some(op) = op_of(history, intent, c) else {
            continue;
        };
        let ret = if c.answer.unknown() {
            None
        } else {
            ret_of(c).map(|r| (c.answered, r))
        };
        calls.push(c);
        entries.push(Entry {
            call: c.sent,
            ret,
            op,
        });
    }
    if linearize(&Register::default(), &entries).is_some() {
        return None;
    }
    Some(Violation::NotLinearizable {
        intent: *intent,
        calls: calls
            .iter()
            .zip(&entries)
            .map(|(c, e)| {
                format!(
                    "#{} a{} steps {}..{} now {:+}: {} → {}",
                    c.id,
                    c.request.agent,
                    c.sent,
                    c.answered,
                    i128::from(c.now) - i128::from(T0),
                    describe(&c.request.kind),
                    match &e.ret {
                        Some((_, r)) => format!("{r:?}"),
                        None => format!("unknown ({:?})", c.answer),
                    }
                )
            })
            .collect(),
    })
}
