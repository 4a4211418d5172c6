//! Contract governance on the Worker (spec/contract.md, "On the Worker"): the
//! [`NexusGovernanceDO`] Durable Object owns the deployment's one
//! [`nexus_api::Governor`] and runs its catch-up ([`nexus_api::CatchUp`]) through the
//! same bridge as every request ([`crate::host`], [`crate::Host::run`]), so each Hint
//! commit goes through the coordinator's serializable commit like any write. Its
//! durable state is what the coordinator stores (the contract, `hints/active`); the
//! evaluator is memory, rebuilt from the log after a restart.
//!
//! The fetch handler's half ([`after_write`], [`gate`], [`health`]) talks to the one
//! instance (`idFromName("governance")`):
//! - after a committed `POST /v1/contract`, a committed Fact, or any write while the
//!   object last reported a failure, it pokes the object and awaits the catch-up (so a
//!   Fact is answered after its Hints commit, as on the native host);
//! - before a proposal or claim ([`nexus_api::Governor::is_gated`]) it asks the object,
//!   every time (one call, no storage I/O in the object while nothing fails; a failing
//!   object first retries the catch-up): fail closed, `503 governance_pending`, while
//!   it reports a failure or does not answer. No "ok" is cached: a cached "ok" would
//!   admit claims for its lifetime after the object began failing;
//! - `GET /v1/health` asks it too and answers `503 degraded`, `reason: governance`.
//!
//! What an isolate does cache: "no contract is deployed", for [`NO_CONTRACT_TTL_MS`]
//! after the object said so. Meanwhile writes poke nothing and the gate asks nothing.
//! A deployment through any isolate pokes the object itself, so the object sees it at
//! once; a Fact committed through another isolate within its cache's lifetime is
//! evaluated at the next poke or by the object's alarm, which a poke arms.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use worker::{Date, Env, Method, Request, RequestInit};

use nexus_api::{ApiError, Governor, Route};
use nexus_core::Record;

use crate::Host;

pub use class::NexusGovernanceDO;

/// The governance Durable Object namespace binding.
pub const GOVERNANCE_BINDING: &str = "GOVERNANCE";
/// Name of the one governance instance.
pub const GOVERNANCE_NAME: &str = "governance";
/// Path of the poke (`POST`, a [`Poke`] body): catch up, answer the [`Status`].
pub const POKE_PATH: &str = "/poke";
/// Path of the gate (`POST`): the [`Status`], after one more catch-up if it failed.
pub const GATE_PATH: &str = "/gate";
/// Path of the status (`POST`): the [`Status`], without I/O.
pub const STATUS_PATH: &str = "/status";
/// Path of the test-only fault switch (`POST`, body `{"fail": bool}`; `test-hooks`
/// only): while on, every catch-up fails at its first job.
pub const FAIL_PATH: &str = "/fail";

/// How long an isolate trusts "no contract is deployed" (ms).
pub const NO_CONTRACT_TTL_MS: u64 = 1_000;
/// How long the object trusts its own "no contract" before reading the contract head
/// again on a poke that is not a deployment (ms): a deployment whose poke was lost
/// (its isolate died between the commit and the poke) is seen within this time.
pub const IDLE_RECHECK_MS: u64 = 10_000;
/// When the alarm fires after a failed catch-up, and the safety net a catch-up arms
/// before it starts (ms).
pub const RETRY_MS: u64 = 1_000;

/// A poke's body.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct Poke {
    /// A `POST /v1/contract` committed: catch up whatever the object believes.
    pub deployed: bool,
}

/// The object's answer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// [`Governor::failure`]: why the contract's Hints lag the log, while they do.
    pub failure: Option<String>,
    /// Whether a contract is in force (as of the object's last catch-up).
    pub contract: bool,
}

/// Until when (ms) this isolate believes no contract is deployed.
static NO_CONTRACT_UNTIL: AtomicU64 = AtomicU64::new(0);
/// Whether the object's last answer to this isolate reported a failure.
static FAILING: AtomicBool = AtomicBool::new(false);

fn now_ms() -> u64 {
    Date::now().as_millis()
}

fn no_contract() -> bool {
    now_ms() < NO_CONTRACT_UNTIL.load(Ordering::Relaxed)
}

/// Notes the object's answer in this isolate.
fn remember(s: &Status) {
    FAILING.store(s.failure.is_some(), Ordering::Relaxed);
    let until = if s.contract || s.failure.is_some() {
        0
    } else {
        now_ms().saturating_add(NO_CONTRACT_TTL_MS)
    };
    NO_CONTRACT_UNTIL.store(until, Ordering::Relaxed);
}

/// Calls the governance object at `path` with `body`.
async fn call(
    env: &Env,
    host: Option<&Host>,
    path: &str,
    body: &impl Serialize,
) -> Result<Status, String> {
    if let Some(h) = host {
        h.count_governance_call();
    }
    let run = async {
        let stub = env
            .durable_object(GOVERNANCE_BINDING)?
            .get_by_name(GOVERNANCE_NAME)?;
        let body =
            serde_json::to_string(body).map_err(|e| worker::Error::RustError(e.to_string()))?;
        let mut init = RequestInit::new();
        init.with_method(Method::Post).with_body(Some(body.into()));
        let req = Request::new_with_init(&format!("https://governance{path}"), &init)?;
        let mut resp = stub.fetch_with_request(req).await?;
        if resp.status_code() != 200 {
            let text = resp.text().await.unwrap_or_default();
            return Err(worker::Error::RustError(format!(
                "answered {}: {text}",
                resp.status_code()
            )));
        }
        resp.json::<Status>().await
    };
    let status = run
        .await
        .map_err(|e| format!("the governance object did not answer: {e}"))?;
    remember(&status);
    Ok(status)
}

/// After a write on `route` committed (`record` is what it submitted, if anything):
/// pokes the governance object when the governor must see it (a deployment, a Fact,
/// anything while it reported a failure, as [`Governor::observe`] decides on the
/// native host) and awaits its catch-up. A failure is the object's to report (health,
/// gate); here it is only logged.
pub async fn after_write(env: &Env, host: &Host, route: Route, record: Option<&Record>) {
    let deployed = route == Route::DeployContract;
    if !deployed && no_contract() {
        return;
    }
    let fact = Governor::may_commit_facts(route, record);
    if !(deployed || fact || FAILING.load(Ordering::Relaxed)) {
        return;
    }
    if deployed {
        NO_CONTRACT_UNTIL.store(0, Ordering::Relaxed);
    }
    match call(env, Some(host), POKE_PATH, &Poke { deployed }).await {
        Ok(Status {
            failure: Some(why), ..
        }) => worker::console_error!(
            "contract governance: {why}; proposals and claims are refused until the contract's Hints commit"
        ),
        Ok(_) => {}
        Err(e) => worker::console_error!("contract governance: {e}"),
    }
}

/// Fails closed before a write on `route` ([`Governor::gate`] on the native host):
/// `503 governance_pending` for a proposal or claim while the governance object
/// reports a failure after one more catch-up, or does not answer.
pub async fn gate(env: &Env, host: &Host, route: Route) -> Result<(), ApiError> {
    if !Governor::is_gated(route) || no_contract() {
        return Ok(());
    }
    match call(env, Some(host), GATE_PATH, &()).await {
        Ok(Status { failure: None, .. }) => Ok(()),
        Ok(Status {
            failure: Some(why), ..
        })
        | Err(why) => Err(nexus_api::governance_pending(why)),
    }
}

/// The `GET /v1/health` answer given the health job's answer `ok`: degraded while the
/// governance object reports a failure ([`nexus_api::governed_health`]).
pub async fn health(env: &Env, host: &Host, ok: nexus_api::Response) -> nexus_api::Response {
    if no_contract() {
        return ok;
    }
    let failure = match call(env, Some(host), STATUS_PATH, &()).await {
        Ok(s) => s.failure,
        Err(why) => Some(why),
    };
    nexus_api::governed_health(ok, failure)
}

/// Test hook: while `fail`, every catch-up of the governance object fails.
#[cfg(feature = "test-hooks")]
pub async fn set_failing(env: &Env, fail: bool) -> Result<Status, String> {
    NO_CONTRACT_UNTIL.store(0, Ordering::Relaxed);
    call(env, None, FAIL_PATH, &serde_json::json!({ "fail": fail })).await
}

/// The class itself, in a module of its own: the `#[durable_object]` macro generates
/// undocumented public bindings.
#[allow(missing_docs)]
mod class {
    use super::*;

    use std::cell::{Cell, RefCell};
    use std::task::{Poll, Waker};

    use nexus_api::CatchUpStep;
    use worker::{DurableObject, Response, Result as WorkerResult, State, durable_object};

    /// The governance Durable Object (SQLite-backed: `new_sqlite_classes` in
    /// `wrangler.toml`; it stores nothing but its alarm). One instance (named
    /// [`GOVERNANCE_NAME`]) evaluates the contract for the whole deployment.
    #[durable_object]
    pub struct NexusGovernanceDO {
        state: State,
        env: Env,
        governor: Governor,
        /// Catch-ups asked for (a ticket each) and the last ticket a finished
        /// catch-up covered: a caller waits for one that started after it asked.
        asked: Cell<u64>,
        done: Cell<u64>,
        /// Whether a catch-up is running (calls interleave at its awaits).
        running: Cell<bool>,
        /// Callers waiting for `done` to reach their ticket.
        waiters: RefCell<Vec<Waker>>,
        /// When the last catch-up found no contract in force (ms), while none is.
        idle_at: Cell<Option<u64>>,
        /// When the alarm this instance set fires (ms), if it did.
        alarm_at: Cell<Option<u64>>,
        /// Test hook: every catch-up fails while set (only the test build's
        /// [`FAIL_PATH`] sets it).
        fail: Cell<bool>,
    }

    /// Marks the running catch-up over (also when its call is dropped) and wakes
    /// the waiters.
    struct Running<'a>(&'a NexusGovernanceDO);

    impl Drop for Running<'_> {
        fn drop(&mut self) {
            self.0.running.set(false);
            for w in self.0.waiters.borrow_mut().drain(..) {
                w.wake();
            }
        }
    }

    impl NexusGovernanceDO {
        fn status(&self) -> Status {
            Status {
                failure: self.governor.failure(),
                contract: self.governor.watches(Route::SubmitFact),
            }
        }

        /// Runs a catch-up that starts after this call (one at a time; callers that
        /// ask while one runs share the next).
        async fn catch_up(&self) {
            let ticket = self.asked.get() + 1;
            self.asked.set(ticket);
            if self.running.get() {
                std::future::poll_fn(|cx| {
                    if self.done.get() >= ticket || !self.running.get() {
                        Poll::Ready(())
                    } else {
                        self.waiters.borrow_mut().push(cx.waker().clone());
                        Poll::Pending
                    }
                })
                .await;
                if self.done.get() >= ticket {
                    return;
                }
            }
            self.running.set(true);
            let _running = Running(self);
            while self.done.get() < self.asked.get() {
                let target = self.asked.get();
                self.run_once().await;
                self.done.set(target);
                for w in self.waiters.borrow_mut().drain(..) {
                    w.wake();
                }
            }
        }

        /// One catch-up: the governor's jobs through the bridge. Arms the alarm
        /// first while a contract may be in force (a reset mid-way is repaired by
        /// it), and soon again after a failure.
        async fn run_once(&self) {
            if self.governor.watches(Route::SubmitFact) {
                self.arm(RETRY_MS.saturating_mul(10)).await;
            }
            let api = crate::api(&self.env);
            let host = crate::host(&self.env, crate::Faults::default());
            let mut fail = self.fail.get();
            let mut c = self.governor.start(&api.config().limits);
            let result = loop {
                let job = match c.poll() {
                    CatchUpStep::Run(job) => job,
                    CatchUpStep::Done(result) => break result,
                };
                if std::mem::take(&mut fail) {
                    c.feed(nexus_api::storage_error("test hook: the catch-up fails"));
                    continue;
                }
                let r = match &host {
                    Ok(h) => h.run(api, &job, now_ms()).await,
                    Err(e) => nexus_api::storage_error(&format!("bindings: {e}")),
                };
                c.feed(r);
            };
            drop(c);
            match result {
                Ok(_) => {
                    let idle = !self.governor.watches(Route::SubmitFact);
                    self.idle_at.set(idle.then(now_ms));
                }
                Err(e) => {
                    self.idle_at.set(None);
                    worker::console_error!(
                        "{e}; proposals and claims are refused until the contract's Hints commit"
                    );
                    self.arm(RETRY_MS).await;
                }
            }
        }

        /// Makes sure the alarm fires within `delay_ms` (an earlier one stays).
        async fn arm(&self, delay_ms: u64) {
            let want = now_ms().saturating_add(delay_ms);
            if self.alarm_at.get().is_some_and(|at| at <= want) {
                return;
            }
            let delay = i64::try_from(delay_ms).unwrap_or(i64::MAX);
            match self.state.storage().set_alarm(delay).await {
                Ok(()) => self.alarm_at.set(Some(want)),
                Err(e) => worker::console_warn!("governance alarm not set: {e}"),
            }
        }

        /// Whether a poke that is not a deployment may skip the catch-up: the last
        /// one found no contract, recently, and nothing failed since.
        fn idle(&self) -> bool {
            self.governor.failure().is_none()
                && self
                    .idle_at
                    .get()
                    .is_some_and(|at| now_ms().saturating_sub(at) < IDLE_RECHECK_MS)
        }
    }

    impl DurableObject for NexusGovernanceDO {
        fn new(state: State, env: Env) -> Self {
            let max = crate::api(&env).config().max_contract_hints;
            Self {
                state,
                env,
                governor: Governor::new().with_max_hints(max),
                asked: Cell::new(0),
                done: Cell::new(0),
                running: Cell::new(false),
                waiters: RefCell::new(Vec::new()),
                idle_at: Cell::new(None),
                alarm_at: Cell::new(None),
                fail: Cell::new(false),
            }
        }

        async fn fetch(&self, mut req: Request) -> WorkerResult<Response> {
            let path = req.path();
            match path.as_str() {
                POKE_PATH => {
                    let poke: Poke = req.json().await.unwrap_or_default();
                    if poke.deployed || !self.idle() {
                        self.catch_up().await;
                    }
                }
                GATE_PATH => {
                    if self.governor.failure().is_some() {
                        self.catch_up().await;
                    }
                }
                STATUS_PATH => {}
                #[cfg(feature = "test-hooks")]
                FAIL_PATH => {
                    let body: serde_json::Value = req.json().await.unwrap_or_default();
                    self.fail.set(body["fail"].as_bool().unwrap_or(false));
                }
                other => return Response::error(format!("no governance call {other}"), 404),
            }
            Response::from_json(&self.status())
        }

        /// Re-arms first (alarms are retried a few times only), then catches up;
        /// disarms once a catch-up succeeded.
        async fn alarm(&self) -> WorkerResult<Response> {
            self.alarm_at.set(None);
            self.arm(RETRY_MS).await;
            self.catch_up().await;
            if self.governor.failure().is_none() {
                self.state.storage().delete_alarm().await?;
                self.alarm_at.set(None);
            }
            Response::ok("")
        }
    }
}
