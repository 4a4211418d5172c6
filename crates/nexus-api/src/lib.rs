//! Host-agnostic neXus request handling: parse → run a session against the core →
//! respond, with no knowledge of HTTP servers, async runtimes or Workers, so that the
//! native server and the Cloudflare Worker are thin hosts around the same code and
//! serve the same API (`spec/api.md`) with the same errors.
//!
//! A request goes through three pieces a host can drive however its I/O works:
//!
//! 1. [`prepare`] (or [`Api::prepare`]) — pure CPU work on any thread: route matching,
//!    query validation, JSON parsing, hash and signature verification, the allowlist.
//!    It answers at once ([`Prepared::Respond`]: errors, the OpenAPI document) or yields
//!    a [`Job`].
//! 2. [`Job::read_set`] — what to hydrate first; [`Job::execute`] — the deterministic
//!    part, run against a [`SessionCore`] built over an
//!    [`IoBufferSession`] with [`session_core`] (re-executed from scratch while it
//!    misses data, see `nexus-iobuf`). It returns an [`Outcome`].
//!    [`Job::execute_session`] does both and empties the delta of a failed job.
//! 3. [`Job::driver`] packs 2 into the one sans-IO [`Driver`](nexus_iobuf::Driver)
//!    every host runs: it asks for hydrations and for one commit (with the read checks
//!    that make it serializable and the core's flush phases), retries a lost commit,
//!    and ends with the result that [`Api::finish`] turns into the answer (an error's
//!    writes are discarded: nothing partial is ever stored).
//!
//! [`Api::run_sync`] drives it over any sync store; the native server's group commit
//! and the Cloudflare Worker drive the same machine with their own I/O.
//! Hosts record every answer with [`Metrics::observe`], rendered at `GET /metrics`.
//!
//! ```
//! use nexus_api::{Api, ApiConfig, Request};
//! use nexus_core::{Content, Intent, Record, SigningKey};
//! use nexus_store::MemoryStore;
//!
//! let api = Api::new(ApiConfig { open: true, ..ApiConfig::default() });
//! let store = MemoryStore::new();
//! let now = 1_764_000_000_000;
//! let alice = SigningKey::from_seed(&[1; 32]);
//! let intent = Record::sign(
//!     Content::Intent(Intent {
//!         topic: "chem/solubility".parse()?,
//!         body: serde_json::json!({"compound": "NaCl"}),
//!         parents: vec![],
//!         author: alice.author(),
//!         time: now,
//!     }),
//!     &alice,
//!     &api.config().limits,
//! )?;
//! let created = api.run_sync(&store, &Request::new("POST", "/v1/intents", intent.to_json()), now);
//! assert_eq!(created.status, 201);
//! assert_eq!(created.json_body()["seq"], 1);
//!
//! let listed = api.run_sync(&store, &Request::new("GET", "/v1/intents?state=available", vec![]), now);
//! assert_eq!(listed.json_body()["intents"][0]["record"]["hash"], intent.hash().to_string());
//!
//! let again = api.run_sync(&store, &Request::new("POST", "/v1/intents", b"{".to_vec()), now);
//! assert_eq!((again.status, again.code), (400, Some(nexus_api::ErrorCode::MalformedJson)));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod access;
mod capped;
mod error;
mod events;
mod governor;
mod job;
mod metrics;
mod openapi;
mod query;
pub mod restore;
mod route;
mod tlog;
pub mod wire;

use std::collections::BTreeSet;

use serde::Serialize;

use nexus_core::{AuthorKey, CompositeColdStorage, Limits};
use nexus_iobuf::{
    FlushError, IoBufferBlob, IoBufferKv, IoBufferObject, IoBufferSession, JobError, JobOutput,
    SessionError, drive_sync,
};
use nexus_store::{BlobStore, CasFailure, KeyValueStore, ObjectStore, StoreError, StoreHealth};

pub use access::{
    ReadAccess, rate_limited, request_timeout, retry_after_secs, too_many_connections, unauthorized,
};
pub use capped::{RESPONSE_BYTES, record_bytes_bound};
pub use error::{ApiError, core_code, core_error, validation_error};
pub use events::{
    Concerns, EVENTS_PAGE, EventFilter, EventsQuery, HEARTBEAT_FRAME, HEARTBEAT_SECS, RETRY_FRAME,
    Verdict, answered_record, entry_frame, page_entries, record_request,
};
pub use governor::{CatchUp, CatchUpStep, GovernError, Governor, Next, governance_pending};
pub use job::{
    DEFAULT_ROUNDS, INTENT_SCAN, Job, LIST_LIMIT, LOG_LIMIT, MAX_BATCH_ITEMS, MAX_JOB_ROUNDS,
    Outcome, PROVENANCE_DEPTH, PROVENANCE_MAX_RECORDS, Prepared, body_too_large, prepare,
    served_route,
};
pub use metrics::{LATENCY_BUCKETS_US, Metrics};
pub use nexus_wire::ErrorCode;
pub use openapi::{ApiDoc, openapi_json};
pub use query::percent_decode;
pub use route::{PathMatch, Route, match_path, route_for};

/// An HTTP request, as plain data (hosts convert theirs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Request {
    /// `GET`, `POST`, … (case-insensitive).
    pub method: String,
    /// The path, without query string (`/v1/intents`).
    pub path: String,
    /// The raw query string after `?`, if any (percent-encoded).
    pub query: Option<String>,
    /// The body.
    pub body: Vec<u8>,
}

impl Request {
    /// A request from a method and a target (`/path?query`) and body.
    pub fn new(method: &str, target: &str, body: impl Into<Vec<u8>>) -> Self {
        let (path, query) = match target.split_once('?') {
            Some((p, q)) => (p, Some(q.to_owned())),
            None => (target, None),
        };
        Self {
            method: method.to_owned(),
            path: path.to_owned(),
            query,
            body: body.into(),
        }
    }
}

/// An HTTP response, as plain data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// `Content-Type` header value.
    pub content_type: &'static str,
    /// The body.
    pub body: Vec<u8>,
    /// The error code, when the response is an error (for metrics and logs).
    pub code: Option<ErrorCode>,
}

impl Response {
    /// A JSON response.
    pub fn json<T: Serialize + ?Sized>(status: u16, value: &T) -> Self {
        Self {
            status,
            content_type: "application/json",
            body: serde_json::to_vec(value).unwrap_or_default(),
            code: None,
        }
    }

    /// The body as JSON (`Null` if it is not JSON).
    pub fn json_body(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// Default cap on a request body: a record's largest body (64 KiB) plus room for its
/// envelope, parents and signature.
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 128 * 1024;

/// What a server accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiConfig {
    /// Limits records and actions are checked against.
    pub limits: Limits,
    /// Accept any valid author key (local work); otherwise only `allowed`.
    pub open: bool,
    /// Author keys allowed to write.
    pub allowed: BTreeSet<AuthorKey>,
    /// Operator keys: allowed to write, and the only keys besides the contract in
    /// force that may post `deny` and `allow` Hints or retract another key's Hint
    /// (see [`ApiConfig::is_operator`]).
    pub operators: BTreeSet<AuthorKey>,
    /// Most active Hints one agent (non-operator) key may have posted
    /// (`429 hint_quota` past it).
    pub hint_quota: usize,
    /// Most active Hints one operator key may have posted.
    pub operator_hint_quota: usize,
    /// Most Hints the contract in force may have active at once (its own room:
    /// posted Hints never take it). Past it the contract's Hint commit fails and the
    /// host refuses proposals and claims (`503 governance_pending`).
    pub max_contract_hints: usize,
    /// Largest request body, in bytes (`413 body_too_large` above it).
    pub max_request_bytes: usize,
    /// The key that signs checkpoints of the log (`GET /v1/checkpoint`); without it
    /// that route answers `503 no_log_key` (proofs are served either way).
    pub log_key: Option<nexus_tlog::LogKey>,
}

impl Default for ApiConfig {
    /// Default limits, closed, an empty allowlist, no operator.
    fn default() -> Self {
        Self {
            limits: Limits::default(),
            open: false,
            allowed: BTreeSet::new(),
            operators: BTreeSet::new(),
            hint_quota: nexus_core::storage::DEFAULT_HINT_QUOTA,
            operator_hint_quota: nexus_core::storage::MAX_ACTIVE_HINTS,
            max_contract_hints: nexus_core::storage::MAX_CONTRACT_HINTS,
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            log_key: None,
        }
    }
}

impl ApiConfig {
    /// Whether `author` has operator authority: it is one of [`operators`](Self::operators),
    /// or the server is open and names no operator (local work: anyone can make a
    /// key there, so tiers would protect nothing).
    pub fn is_operator(&self, author: &AuthorKey) -> bool {
        self.operators.contains(author) || (self.open && self.operators.is_empty())
    }

    /// Whether `author` may write at all: open, on the allowlist, or an operator.
    pub fn may_write(&self, author: &AuthorKey) -> bool {
        self.open || self.allowed.contains(author) || self.operators.contains(author)
    }

    /// The active-Hint quota of `author` (see [`hint_quota`](Self::hint_quota)).
    pub fn hint_quota_of(&self, author: &AuthorKey) -> usize {
        if self.is_operator(author) {
            self.operator_hint_quota
        } else {
            self.hint_quota
        }
    }
}

/// The core over one session's buffers.
pub type SessionCore = CompositeColdStorage<IoBufferKv, IoBufferBlob, IoBufferObject>;

/// Binds the core to a session's three buffers (which the returned value shares).
pub fn session_core(session: &IoBufferSession, limits: &Limits) -> SessionCore {
    CompositeColdStorage::new(
        session.kv_buf().clone(),
        session.blob_buf().clone(),
        session.object_buf().clone(),
        limits.clone(),
    )
}

/// Most attempts of one job on every host ([`Job::driver`]): a commit that loses its
/// race (a state it wrote or read changed) starts a new attempt, up to this many; then
/// `409 conflict`.
pub const MAX_ATTEMPTS: usize = 16;

/// The API: configuration plus metrics.
#[derive(Debug, Default)]
pub struct Api {
    config: ApiConfig,
    metrics: Metrics,
    governor: Governor,
}

impl Api {
    /// An API with fresh metrics.
    pub fn new(config: ApiConfig) -> Self {
        Self {
            metrics: Metrics::new(),
            governor: Governor::new().with_max_hints(config.max_contract_hints),
            config,
        }
    }

    /// The contract governor (see [`Governor`]): hosts call
    /// [`Governor::catch_up`] after each committed write.
    pub fn governor(&self) -> &Governor {
        &self.governor
    }

    /// The configuration.
    pub fn config(&self) -> &ApiConfig {
        &self.config
    }

    /// The metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The `GET /metrics` answer: the metrics with the governor's state
    /// (`nexus_governance_failures_total`, `nexus_governance_pending`).
    pub fn metrics_response(&self) -> Response {
        self.metrics
            .set_governance(self.governor.failures(), self.governor.failure().is_some());
        self.metrics.response()
    }

    /// The `GET /v1/health` answer given the health job's answer `ok`: `503 degraded`
    /// with `reason: governance` while the contract's Hints are not committed
    /// ([`Governor::failure`]), else `ok`.
    pub fn governed_health(&self, ok: Response) -> Response {
        governed_health(ok, self.governor.failure())
    }

    /// [`prepare`], answering `GET /metrics` from this API's metrics.
    pub fn prepare(&self, req: &Request) -> Prepared {
        match prepare(&self.config, req) {
            Prepared::Metrics => Prepared::Respond(Route::Metrics, self.metrics_response()),
            other => other,
        }
    }

    /// The reference driver over a sync store: prepare → a session with the read set
    /// hydrated → execute (hydrating misses, re-executing) → flush the delta (if the
    /// outcome commits) → on a commit conflict, start over with a fresh session, at
    /// most [`MAX_ATTEMPTS`] times (then `409 conflict`). A store failure, or a job
    /// that still misses data after its rounds, answers `500 storage`. Counts commits
    /// and conflicts in the metrics; the host adds [`Metrics::observe`] with the
    /// latency it measured.
    pub fn run_sync<S>(&self, store: &S, req: &Request, now: u64) -> Response
    where
        S: KeyValueStore + BlobStore + ObjectStore + ?Sized,
    {
        match self.prepare(req) {
            Prepared::Respond(_, r) => r,
            Prepared::Events(_) => not_implemented(
                Route::Events,
                "an event stream needs a host that streams its answer (nexus serve)",
            ),
            Prepared::Job(job) => {
                if job.is_write() && Governor::is_gated(job.route()) {
                    if self.governor.failure().is_some() {
                        let _ = self
                            .governor
                            .catch_up(&self.config.limits, |j| self.run_job(store, &j, now));
                    }
                    if let Err(e) = self.governor.gate(job.route()) {
                        return e.to_response();
                    }
                }
                let r = self.run_job(store, &job, now);
                if job.is_write() && r.status / 100 == 2 {
                    // Derived state: a failure here is retried by the next write.
                    let _ = self.governor.after_write(
                        job.route(),
                        job.record(),
                        &self.config.limits,
                        |j| self.run_job(store, &j, now),
                    );
                }
                r
            }
            Prepared::Metrics => self.metrics.response(),
        }
    }

    /// Runs a prepared job as [`run_sync`](Self::run_sync) does: its
    /// [`Job::driver`] driven against `store` ([`nexus_iobuf::drive_sync`]), answered
    /// with [`Api::finish`].
    pub fn run_job<S>(&self, store: &S, job: &Job, now: u64) -> Response
    where
        S: KeyValueStore + BlobStore + ObjectStore + ?Sized,
    {
        let mut driver = job.driver(&self.config.limits, now, false);
        self.finish(drive_sync(store, &mut driver))
    }

    /// The answer to a job's driver result, on every host: the outcome's answer with
    /// the commit's `first_seq`; `409 conflict` when every attempt lost its commit;
    /// `507 insufficient_storage` when the store is full; `500 storage` when a store
    /// call failed otherwise or the job still missed data after its rounds (a store's
    /// error is mapped by its type, see [`store_error`]). Counts commits and conflicts in the metrics (the host adds
    /// [`Metrics::observe`] with the latency it measured).
    pub fn finish(&self, result: Result<JobOutput<Outcome>, JobError>) -> Response {
        match result {
            Ok(out) => {
                for _ in 0..out.conflicts {
                    self.metrics.record_conflict();
                }
                if out.report.commits > 0 {
                    self.metrics.record_commit();
                }
                out.value.response(out.report.first_seq)
            }
            Err(JobError::Conflict { attempts, failures }) => {
                for _ in 0..attempts {
                    self.metrics.record_conflict();
                }
                conflict_error(&failures, attempts)
            }
            Err(JobError::Session(SessionError::Hydrate(source)))
            | Err(JobError::Flush(FlushError::Store { source, .. })) => store_error(&source),
            Err(e) => storage_error(&e.to_string()),
        }
    }
}

/// The answer to a failed store call: `507 insufficient_storage` when the storage is
/// full ([`StoreError::Full`]: nothing was written, writes resume by themselves once
/// space is freed, reads go on), else `500 storage` as [`storage_error`] gives it. The
/// message names the failure once, without the error type's own prefix.
pub fn store_error(e: &StoreError) -> Response {
    match e {
        StoreError::Full(detail) => ApiError::new(
            ErrorCode::InsufficientStorage,
            format!("storage is full: {detail}; writes resume once space is freed"),
        )
        .to_response(),
        other => storage_error(&other.detail()),
    }
}

/// The answer to `GET /v1/health` of a host whose store reports `health`, given the
/// answer of the health job (`ok` and the log head). A degraded store whose log head
/// could still be read answers `503 {"status":"degraded","reason","message","log_head"}`
/// (`reason`: [`StoreHealth::reason`]), so that a load balancer or a monitor sees it
/// while reads go on; a job that failed keeps its own error answer.
pub fn health_response(health: &StoreHealth, ok: Response) -> Response {
    if health.is_ok() {
        return ok;
    }
    degraded(ok, health.reason(), health.message().map(str::to_owned))
}

/// `503 degraded` for `reason`, keeping the log head of the health answer `ok` (which
/// is answered as it is when it is not a `200` naming the head).
/// The `GET /v1/health` answer given the health job's answer `ok` and the governor's
/// [`Governor::failure`] (which a host may hold elsewhere, as the Worker's governance
/// object does): `503 degraded` with `reason: governance` while there is one.
pub fn governed_health(ok: Response, failure: Option<String>) -> Response {
    match failure {
        Some(why) => degraded(ok, "governance", Some(why)),
        None => ok,
    }
}

fn degraded(ok: Response, reason: &str, message: Option<String>) -> Response {
    if ok.status != 200 {
        return ok;
    }
    let answer = ok.json_body();
    let Some(log_head) = answer["log_head"].as_u64() else {
        return ok;
    };
    let body = wire::Health {
        status: "degraded".to_owned(),
        reason: Some(reason.to_owned()),
        message,
        log_head,
        deployment: answer["deployment"].as_str().map(str::to_owned),
    };
    Response::json(503, &body)
}

/// The `500 storage` answer: a store call failed (`message` says which and why), or a
/// job still missed data after its rounds. For hosts that drive jobs themselves (the
/// Worker), so that their errors are byte-identical to [`Api::run_job`]'s.
pub fn storage_error(message: &str) -> Response {
    ApiError::new(ErrorCode::Storage, format!("storage failed: {message}")).to_response()
}

/// The `501 not_implemented` answer of a host that does not serve `route`, saying
/// `why` (the Cloudflare Worker and contract deployment, for now).
pub fn not_implemented(route: Route, why: &str) -> Response {
    let name = format!("{} {}", route.method(), route.template());
    ApiError::new(
        ErrorCode::NotImplemented,
        format!("{name} is not served by this host: {why}"),
    )
    .with("route", name)
    .to_response()
}

/// The `409 conflict` answer: each of `attempts` commits lost its race, the last one
/// on the keys of `failures`.
pub fn conflict_error(failures: &[CasFailure], attempts: usize) -> Response {
    let keys: Vec<&str> = failures.iter().map(|f| f.key.as_str()).collect();
    ApiError::new(
        ErrorCode::Conflict,
        format!(
            "lost the race on {} in each of {attempts} attempts",
            keys.join(", ")
        ),
    )
    .with("keys", keys)
    .to_response()
}
