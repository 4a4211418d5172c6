//! The contract's evaluator, kept in step with the commit log by the host.
//!
//! A host calls [`Governor::catch_up`] after each write that committed (and once when
//! it starts). The governor asks which contract is in force, feeds the Facts committed
//! since its last call to its [`Evaluator`] (only the rules whose topics they touch
//! run), and commits what changed in the contract's Hints as one more write job
//! ([`Job::apply_hints`]). Everything it reads and writes goes through the host's own
//! job runner, so it works the same over any store and any host. Without a deployed
//! contract a call costs one small read.
//!
//! The Hints are derived state: after a restart or a new deployment the governor
//! evaluates every Fact in the log and replaces the contract's Hints wholesale, so a
//! crash between a Fact's commit and its Hints' commit is repaired by the next call.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use nexus_contract::governance::{Current, HintUpdate};
use nexus_contract::{Contract, Evaluator, HintDelta};
use nexus_core::{Content, FihHash, Limits, Record};
use serde_json::Value;

use crate::{ApiError, ErrorCode, Job, Response, Route};

/// Log entries read per page while catching up.
const PAGE: usize = 1_000;

/// See the module docs.
pub struct Governor {
    state: Mutex<State>,
    /// Held while Hint changes are committed, so that they commit in the order they
    /// were evaluated, without holding `state` (which [`Governor::observe`] takes for
    /// every write that commits) across the commit. Taken before `state`.
    flushing: Mutex<()>,
    /// The last poll found no contract: until a deployment through this host,
    /// [`after_write`](Governor::after_write) costs nothing.
    idle: AtomicBool,
    /// Most contract Hints active at once ([`HintUpdate::max_active`]).
    max_hints: usize,
    /// Why the contract's Hints are not up to date with the log (the last catch-up
    /// failed), until one succeeds: see [`Governor::gate`].
    failure: Mutex<Option<String>>,
    /// Catch-ups that failed, since the start.
    failures: AtomicU64,
}

impl Default for Governor {
    fn default() -> Self {
        Self {
            state: Mutex::default(),
            flushing: Mutex::default(),
            idle: AtomicBool::new(false),
            max_hints: nexus_core::storage::MAX_CONTRACT_HINTS,
            failure: Mutex::new(None),
            failures: AtomicU64::new(0),
        }
    }
}

/// What a host should do after [`Governor::observe`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Nothing.
    Nothing,
    /// Call [`Governor::catch_up`]: a Fact committed (the evaluator reads it back
    /// from the log), a deployment, or a failure to repair.
    CatchUp,
}

#[derive(Default)]
struct State {
    eval: Option<Evaluator>,
    current: Option<Current>,
    cursor: u64,
    /// The store's contract Hints must be replaced by the evaluator's (after a load).
    reconcile: bool,
}

impl std::fmt::Debug for Governor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Governor").finish_non_exhaustive()
    }
}

/// Why catching up stopped (the next call tries again).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("contract governance: {0}")]
pub struct GovernError(String);

fn ok_json(what: &str, r: &Response) -> Result<Value, GovernError> {
    if r.status / 100 != 2 {
        return Err(GovernError(format!(
            "{what} answered {}: {}",
            r.status,
            String::from_utf8_lossy(&r.body)
        )));
    }
    serde_json::from_slice(&r.body).map_err(|e| GovernError(format!("{what}: {e}")))
}

impl Governor {
    /// A governor that has read nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The same, bounding the contract's active Hints at `max` (its own room).
    pub fn with_max_hints(mut self, max: usize) -> Self {
        self.max_hints = max;
        self
    }

    /// Why the contract's Hints lag the commit log, while they do: the last catch-up
    /// failed (a Hint commit refused, a store error) and none has succeeded
    /// since. Hosts show it in `GET /v1/health` and log it at error level.
    pub fn failure(&self) -> Option<String> {
        self.failure.lock().ok().and_then(|f| f.clone())
    }

    /// Catch-ups that failed since the start (a metric).
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// Whether a write on `route` must wait for the contract's Hints: proposals and
    /// claims, whose admissibility they decide, and batches, which may hold either.
    pub fn is_gated(route: Route) -> bool {
        matches!(route, Route::ProposeIntent | Route::Claim | Route::Batch)
    }

    /// Fails closed: `503 governance_pending` for a write on a [gated](Self::is_gated)
    /// route while [`failure`](Self::failure) says the contract's Hints are not
    /// committed, so that nothing they would deny is admitted meanwhile. A host first
    /// tries [`catch_up`](Self::catch_up) once more, then asks this.
    pub fn gate(&self, route: Route) -> Result<(), ApiError> {
        if !Self::is_gated(route) {
            return Ok(());
        }
        match self.failure() {
            None => Ok(()),
            Some(why) => Err(ApiError::new(
                ErrorCode::GovernancePending,
                format!(
                    "the contract's Hints are not committed ({why}): proposals and claims \
                     are refused until they are"
                ),
            )
            .with("message", why)),
        }
    }

    /// Records how a catch-up ended.
    fn settle<T>(&self, result: Result<T, GovernError>) -> Result<T, GovernError> {
        let now = match &result {
            Ok(_) => None,
            Err(e) => {
                self.failures.fetch_add(1, Ordering::Relaxed);
                Some(e.0.clone())
            }
        };
        if let Ok(mut f) = self.failure.lock() {
            *f = now;
        }
        result
    }

    /// Why Hint `hash` exists, if the contract in force emitted it: the rule, the
    /// group and the triggering Facts (see [`nexus_contract::Explanation`]).
    pub fn explain(&self, hash: &FihHash) -> Option<nexus_contract::Explanation> {
        let state = self.state.lock().ok()?;
        state.eval.as_ref()?.explain(hash).cloned()
    }

    /// Rule failures of the contract in force so far (CEL errors, step budgets), as
    /// messages.
    pub fn errors(&self) -> Vec<String> {
        self.state
            .lock()
            .ok()
            .and_then(|s| {
                s.eval
                    .as_ref()
                    .map(|e| e.errors().map(|e| e.to_string()).collect())
            })
            .unwrap_or_default()
    }

    /// After a write on `route` committed, for a host that is the only writer of its
    /// store: [`observe`](Self::observe), then [`catch_up`](Self::catch_up) if it
    /// says so. `committed` is the record the write
    /// submitted, if any.
    pub fn after_write(
        &self,
        route: Route,
        committed: Option<&Record>,
        limits: &Limits,
        run: impl FnMut(Job) -> Response,
    ) -> Result<Option<Response>, GovernError> {
        match self.observe(route, committed)? {
            Next::Nothing => Ok(None),
            Next::CatchUp => self.catch_up(limits, run),
        }
    }

    /// Whether a committed write on `route` may need [`observe`](Self::observe): false
    /// while no contract is deployed, until a deployment passes through the host. One
    /// atomic load, for hosts that hand observing to a thread of its own.
    pub fn watches(&self, route: Route) -> bool {
        route == Route::DeployContract || !self.idle.load(Ordering::SeqCst)
    }

    /// The no-I/O half of [`after_write`](Self::after_write), for hosts that must not
    /// block where writes complete: while no contract is deployed this costs nothing
    /// until a deployment (`POST /v1/contract`) passes through the host. With one, a
    /// committed Fact asks for [`catch_up`](Self::catch_up), which reads it back from
    /// the log: the evaluator takes Facts in log order with their commit times, while
    /// concurrent writes hand theirs over here in any order.
    pub fn observe(&self, route: Route, committed: Option<&Record>) -> Result<Next, GovernError> {
        if route == Route::DeployContract {
            self.idle.store(false, Ordering::SeqCst);
            return Ok(Next::CatchUp);
        }
        if self.idle.load(Ordering::SeqCst) {
            return Ok(Next::Nothing);
        }
        if self.failure().is_some() {
            // Only a whole catch-up repairs a failure (it re-reads what was missed).
            return Ok(Next::CatchUp);
        }
        let Some(rec) = committed else {
            // A batch's records are not handed over: it may have committed Facts.
            return Ok(if matches!(route, Route::SubmitFact | Route::Batch) {
                Next::CatchUp
            } else {
                Next::Nothing
            });
        };
        if !matches!(rec.content(), Content::Fact(_)) {
            // Intents, claims and Hints change no Fact: nothing to evaluate.
            return Ok(Next::Nothing);
        }
        // The evaluator takes Facts in log order with their commit times, which the
        // log has: concurrent writes hand theirs over here in any order.
        Ok(Next::CatchUp)
    }

    /// Takes the commit-order lock (before `state`).
    fn order(&self) -> Result<std::sync::MutexGuard<'_, ()>, GovernError> {
        self.flushing
            .lock()
            .map_err(|_| GovernError("a previous commit panicked".into()))
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, State>, GovernError> {
        self.state
            .lock()
            .map_err(|_| GovernError("a previous catch-up panicked".into()))
    }

    /// Commits `delta` (or, when reconciling, every Hint of the evaluator); the caller
    /// holds `flushing`, not `state`.
    fn commit(
        &self,
        contract: FihHash,
        delta: HintDelta,
        run: &mut impl FnMut(Job) -> Response,
    ) -> Result<Option<Response>, GovernError> {
        let update = {
            let state = self.lock()?;
            if state.reconcile {
                HintUpdate {
                    contract,
                    replace_all: true,
                    max_active: self.max_hints,
                    remove: Vec::new(),
                    add: state
                        .eval
                        .as_ref()
                        .map(|e| e.hints().cloned().collect())
                        .unwrap_or_default(),
                }
            } else if delta.is_empty() {
                return Ok(None);
            } else {
                HintUpdate {
                    contract,
                    replace_all: false,
                    max_active: self.max_hints,
                    remove: delta.removed,
                    add: delta.added,
                }
            }
        };
        let replaced_all = update.replace_all;
        let r = run(Job::apply_hints(update));
        let mut state = self.lock()?;
        if r.status / 100 == 2 {
            if replaced_all {
                state.reconcile = false;
            }
            Ok(Some(r))
        } else {
            // Try again, wholesale, at the next call.
            state.reconcile = true;
            Err(GovernError(format!(
                "committing the contract's Hints answered {}: {}",
                r.status,
                String::from_utf8_lossy(&r.body)
            )))
        }
    }

    /// Brings the contract's Hints up to date with the commit log. `run` executes a
    /// job as the host does (reads against the store, writes through its write path)
    /// and answers its response. Answers the response of the Hint commit, if one was
    /// needed.
    pub fn catch_up(
        &self,
        limits: &Limits,
        run: impl FnMut(Job) -> Response,
    ) -> Result<Option<Response>, GovernError> {
        self.settle(self.catch_up_inner(limits, run))
    }

    fn catch_up_inner(
        &self,
        limits: &Limits,
        mut run: impl FnMut(Job) -> Response,
    ) -> Result<Option<Response>, GovernError> {
        let _order = self.order()?;
        let mut state = self.lock()?;
        let head = ok_json("contract head", &run(Job::contract_head()))?;
        let current: Option<Current> = serde_json::from_value(head["current"].clone())
            .map_err(|e| GovernError(format!("contract head: {e}")))?;
        let log_head = head["head"].as_u64().unwrap_or(0);
        if current != state.current {
            state.current = current;
            state.eval = None;
            state.cursor = 0;
            state.reconcile = true;
            if let Some(c) = current {
                let r = run(Job::get_contract());
                let body = ok_json("GET /v1/contract", &r)?;
                let source = body["source"].as_str().unwrap_or_default();
                let contract = Contract::parse_with_limits("contract.nex", source, limits)
                    .map_err(|e| GovernError(format!("stored contract {}: {e}", c.hash)))?;
                state.eval = Some(Evaluator::new(Arc::new(contract)));
            }
        }
        let Some(c) = current else {
            state.reconcile = false;
            self.idle.store(true, Ordering::SeqCst);
            return Ok(None);
        };
        self.idle.store(false, Ordering::SeqCst);
        let mut delta = HintDelta::default();
        while state.cursor < log_head {
            let page = ok_json("log", &run(Job::log(state.cursor + 1, PAGE)))?;
            let entries = page["entries"].as_array().cloned().unwrap_or_default();
            if entries.is_empty() {
                break;
            }
            for e in entries {
                let seq = e["seq"].as_u64().unwrap_or(state.cursor + 1);
                state.cursor = state.cursor.max(seq);
                let Some(rec) = e.get("record") else { continue };
                let at = e["at"].as_u64().unwrap_or(0);
                if rec["kind"] != "fact" {
                    continue;
                }
                let bytes = serde_json::to_vec(rec).unwrap_or_default();
                // The host's own log: hashes are rechecked, signatures were checked on
                // acceptance.
                let rec = Record::from_stored_json(&bytes, limits)
                    .map_err(|e| GovernError(format!("log entry {seq}: {e}")))?;
                if let (Content::Fact(f), Some(eval)) = (rec.content(), state.eval.as_mut()) {
                    delta.extend(eval.add_fact(rec.hash(), f, at));
                }
            }
        }
        drop(state);
        self.commit(c.hash, delta, &mut run)
    }
}
