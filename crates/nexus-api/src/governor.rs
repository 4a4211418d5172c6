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

/// The `503 governance_pending` refusal of [`Governor::gate`], for a host whose
/// governor runs elsewhere (the Worker's governance object): `why` is its
/// [`Governor::failure`].
pub fn governance_pending(why: String) -> ApiError {
    ApiError::new(
        ErrorCode::GovernancePending,
        format!(
            "the contract's Hints are not committed ({why}): proposals and claims \
             are refused until they are"
        ),
    )
    .with("message", why)
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
            Some(why) => Err(governance_pending(why)),
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
        // The evaluator takes Facts in log order with their commit times, which the
        // log has: concurrent writes hand theirs over here in any order.
        Ok(if Self::may_commit_facts(route, committed) {
            Next::CatchUp
        } else {
            Next::Nothing
        })
    }

    /// Whether a committed write on `route` (which submitted `committed`, if the host
    /// knows it) may have committed a Fact, so that the contract must evaluate: a
    /// Fact's submission, or a batch (its items are not handed over). Intents, claims
    /// and Hints change no Fact. The rule of [`observe`](Self::observe), for hosts
    /// whose governor runs elsewhere (the Worker's governance object).
    pub fn may_commit_facts(route: Route, committed: Option<&Record>) -> bool {
        match committed {
            Some(rec) => matches!(rec.content(), Content::Fact(_)),
            None => matches!(route, Route::SubmitFact | Route::Batch),
        }
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

    /// Brings the contract's Hints up to date with the commit log. `run` executes a
    /// job as the host does (reads against the store, writes through its write path)
    /// and answers its response. Answers the response of the Hint commit, if one was
    /// needed. A thin loop over [`CatchUp`], for hosts that may block.
    pub fn catch_up(
        &self,
        limits: &Limits,
        mut run: impl FnMut(Job) -> Response,
    ) -> Result<Option<Response>, GovernError> {
        let mut c = self.start(limits);
        loop {
            match c.poll() {
                CatchUpStep::Run(job) => c.feed(run(job)),
                CatchUpStep::Done(result) => return result,
            }
        }
    }

    /// The same catch-up as [`catch_up`](Self::catch_up), as a sans-IO state machine
    /// for hosts that cannot block (the Worker's governance object awaits each job):
    /// [`CatchUp::poll`] names the next job to run, [`CatchUp::feed`] takes its
    /// answer. It holds the governor's locks until it is done (or dropped), so a host
    /// runs one at a time.
    pub fn start<'g>(&'g self, limits: &Limits) -> CatchUp<'g> {
        let mut c = CatchUp {
            gov: self,
            limits: limits.clone(),
            order: None,
            state: None,
            phase: Phase::Head,
            delta: HintDelta::default(),
            result: None,
        };
        match self.order() {
            Ok(order) => c.order = Some(order),
            Err(e) => c.finish(Err(e)),
        }
        if c.result.is_none() {
            match self.lock() {
                Ok(state) => c.state = Some(state),
                Err(e) => c.finish(Err(e)),
            }
        }
        c
    }
}

/// What a [`CatchUp`] needs next.
#[derive(Debug)]
pub enum CatchUpStep {
    /// Run this job as the host runs its own (reads against the store, writes through
    /// its write path) and [`feed`](CatchUp::feed) its answer.
    Run(Job),
    /// Finished (recorded in [`Governor::failure`]): the response of the Hint commit,
    /// if one was needed, or why catching up stopped (the next catch-up tries again).
    Done(Result<Option<Response>, GovernError>),
}

/// Where a [`CatchUp`] is: which job's answer it waits for.
enum Phase {
    /// [`Job::contract_head`].
    Head,
    /// [`Job::get_contract`] of the contract `c`, the log then read up to `log_head`.
    Contract { c: Current, log_head: u64 },
    /// [`Job::log`] pages of the log up to `log_head`.
    Log { c: Current, log_head: u64 },
    /// [`Job::apply_hints`] of `job` (a full replacement when `replaced_all`).
    Commit { job: Job, replaced_all: bool },
    /// Nothing.
    Finished,
}

/// One catch-up of a [`Governor`] (see [`Governor::start`]): the evaluation rules of
/// [`Governor::catch_up`], with the host's I/O left out.
pub struct CatchUp<'g> {
    gov: &'g Governor,
    limits: Limits,
    /// The commit-order lock, held to the end.
    order: Option<std::sync::MutexGuard<'g, ()>>,
    /// The evaluator's state, held while the log is read (not across the Hint commit).
    state: Option<std::sync::MutexGuard<'g, State>>,
    phase: Phase,
    delta: HintDelta,
    result: Option<Result<Option<Response>, GovernError>>,
}

impl std::fmt::Debug for CatchUp<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CatchUp").finish_non_exhaustive()
    }
}

impl CatchUp<'_> {
    /// The next job to run, or the outcome. Once it answered [`CatchUpStep::Done`],
    /// it answers an error.
    pub fn poll(&mut self) -> CatchUpStep {
        if let Some(result) = self.result.take() {
            self.phase = Phase::Finished;
            return CatchUpStep::Done(result);
        }
        match &self.phase {
            Phase::Head => CatchUpStep::Run(Job::contract_head()),
            Phase::Contract { .. } => CatchUpStep::Run(Job::get_contract()),
            Phase::Log { .. } => {
                let cursor = self.state.as_ref().map_or(0, |s| s.cursor);
                CatchUpStep::Run(Job::log(cursor + 1, PAGE))
            }
            Phase::Commit { job, .. } => CatchUpStep::Run(job.clone()),
            Phase::Finished => {
                CatchUpStep::Done(Err(GovernError("the catch-up already finished".into())))
            }
        }
    }

    /// The answer of the job [`poll`](Self::poll) named.
    pub fn feed(&mut self, r: Response) {
        if self.result.is_some() {
            return;
        }
        let phase = std::mem::replace(&mut self.phase, Phase::Finished);
        let next = match phase {
            Phase::Head => self.head(&r),
            Phase::Contract { c, log_head } => self.contract(&r, c, log_head),
            Phase::Log { c, log_head } => self.page(&r, c, log_head),
            Phase::Commit { replaced_all, .. } => self.committed(r, replaced_all),
            Phase::Finished => return,
        };
        match next {
            Ok(phase) => self.phase = phase,
            Err(e) => self.finish(Err(e)),
        }
    }

    /// Releases the locks and records the outcome (the next [`poll`](Self::poll)
    /// answers it).
    fn finish(&mut self, result: Result<Option<Response>, GovernError>) {
        self.state = None;
        self.order = None;
        self.phase = Phase::Finished;
        self.result = Some(self.gov.settle(result));
    }

    fn state(&mut self) -> Result<&mut State, GovernError> {
        if self.state.is_none() {
            self.state = Some(self.gov.lock()?);
        }
        match self.state.as_deref_mut() {
            Some(s) => Ok(s),
            None => Err(GovernError("the evaluator's state is not held".into())),
        }
    }

    fn head(&mut self, r: &Response) -> Result<Phase, GovernError> {
        let head = ok_json("contract head", r)?;
        let current: Option<Current> = serde_json::from_value(head["current"].clone())
            .map_err(|e| GovernError(format!("contract head: {e}")))?;
        let log_head = head["head"].as_u64().unwrap_or(0);
        let state = self.state()?;
        if current != state.current {
            state.current = current;
            state.eval = None;
            state.cursor = 0;
            state.reconcile = true;
            if let Some(c) = current {
                return Ok(Phase::Contract { c, log_head });
            }
        }
        let Some(c) = current else {
            state.reconcile = false;
            self.gov.idle.store(true, Ordering::SeqCst);
            self.finish(Ok(None));
            return Ok(Phase::Finished);
        };
        self.read_log(c, log_head)
    }

    fn contract(&mut self, r: &Response, c: Current, log_head: u64) -> Result<Phase, GovernError> {
        let body = ok_json("GET /v1/contract", r)?;
        let source = body["source"].as_str().unwrap_or_default();
        let contract = Contract::parse_with_limits("contract.nex", source, &self.limits)
            .map_err(|e| GovernError(format!("stored contract {}: {e}", c.hash)))?;
        self.state()?.eval = Some(Evaluator::new(Arc::new(contract)));
        self.read_log(c, log_head)
    }

    /// The next log page while the cursor is short of `log_head`, else the commit.
    fn read_log(&mut self, c: Current, log_head: u64) -> Result<Phase, GovernError> {
        self.gov.idle.store(false, Ordering::SeqCst);
        if self.state()?.cursor < log_head {
            Ok(Phase::Log { c, log_head })
        } else {
            self.commit(c)
        }
    }

    fn page(&mut self, r: &Response, c: Current, log_head: u64) -> Result<Phase, GovernError> {
        let page = ok_json("log", r)?;
        let entries = page["entries"].as_array().cloned().unwrap_or_default();
        if entries.is_empty() {
            return self.commit(c);
        }
        let limits = self.limits.clone();
        let mut delta = HintDelta::default();
        let state = self.state()?;
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
            let rec = Record::from_stored_json(&bytes, &limits)
                .map_err(|e| GovernError(format!("log entry {seq}: {e}")))?;
            if let (Content::Fact(f), Some(eval)) = (rec.content(), state.eval.as_mut()) {
                delta.extend(eval.add_fact(rec.hash(), f, at));
            }
        }
        self.delta.extend(delta);
        self.read_log(c, log_head)
    }

    /// The commit of `delta` (or, when reconciling, of every Hint of the evaluator),
    /// without the evaluator's state held; done when there is nothing to commit.
    fn commit(&mut self, c: Current) -> Result<Phase, GovernError> {
        let max_active = self.gov.max_hints;
        let delta = std::mem::take(&mut self.delta);
        let state = self.state()?;
        let update = if state.reconcile {
            HintUpdate {
                contract: c.hash,
                replace_all: true,
                max_active,
                remove: Vec::new(),
                add: state
                    .eval
                    .as_ref()
                    .map(|e| e.hints().cloned().collect())
                    .unwrap_or_default(),
            }
        } else if delta.is_empty() {
            self.finish(Ok(None));
            return Ok(Phase::Finished);
        } else {
            HintUpdate {
                contract: c.hash,
                replace_all: false,
                max_active,
                remove: delta.removed,
                add: delta.added,
            }
        };
        self.state = None;
        Ok(Phase::Commit {
            replaced_all: update.replace_all,
            job: Job::apply_hints(update),
        })
    }

    fn committed(&mut self, r: Response, replaced_all: bool) -> Result<Phase, GovernError> {
        let state = self.state()?;
        if r.status / 100 == 2 {
            if replaced_all {
                state.reconcile = false;
            }
            self.finish(Ok(Some(r)));
            Ok(Phase::Finished)
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
}
