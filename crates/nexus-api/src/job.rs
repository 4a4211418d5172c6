//! `prepare` (pure CPU work: routing, parsing, verification, allowlist) and `Job`
//! (the deterministic part that runs against storage).

use std::collections::BTreeSet;
use std::sync::Arc;

use serde::Serialize;
use serde_json::Value;

use nexus_core::storage::{MAX_SCAN, ReadSet as CoreReadSet, decode_stored_record, keys};
use nexus_core::{
    Action, ActionContent, Applied, ColdStorage, CompositeColdStorage, Content, CoreError,
    CoreResult, Effect, FihHash, IntentState, Kind, Limits, LogEntry, Record, Submitted, TimeRange,
    Topic,
};
use nexus_iobuf::{DriveConfig, Driver, IoBufferSession, ListQuery, Misses};
use nexus_store::{BlobStore, KeyValueStore, LOG_HEAD_KEY, ObjectStore, parse_head};

use nexus_contract::governance::{self, DeployError, HintUpdate};
use nexus_contract::{Contract, UpgradeError};

use crate::capped::{self, CappedArray, RESPONSE_BYTES, load_raw};
use crate::error::{ApiError, core_error, validation_error};
use crate::query::Query;
use crate::route::{Route, match_path};
use crate::wire::{
    BatchBody, BatchResult, ContractBody, ContractHistoryBody, Created, DeployedBody, Health,
    HintItem, HintList, IntentItem, LeaseBody, LogItem, RecordBody, RetractedBody, WithdrawnBody,
};
use crate::{ApiConfig, ErrorCode, Request, Response};

/// Default and largest `limit` of `GET /v1/intents` and `GET /v1/facts`.
pub const LIST_LIMIT: (u64, u64) = (50, 500);
/// Default and largest `limit` of `GET /v1/log`.
pub const LOG_LIMIT: (u64, u64) = (100, 1_000);
/// Default and largest `depth` of `GET /v1/records/{id}/provenance`.
pub const PROVENANCE_DEPTH: (u64, u64) = (16, 64);
/// Most records a provenance answer carries.
pub const PROVENANCE_MAX_RECORDS: usize = 1_000;
/// Intent states examined per `GET /v1/intents` page.
pub const INTENT_SCAN: usize = MAX_SCAN;
/// Session rounds allowed for writes and simple reads.
pub const DEFAULT_ROUNDS: usize = 8;
/// Rounds a listing may spend reading its records in batches
/// ([`load_raw`](crate::capped::load_raw): at most one per 50 or so records).
pub const LOAD_ROUNDS: usize = 24;
/// The most rounds any job needs ([`Job::max_rounds`]): a session server running every
/// kind of job should allow this many.
pub const MAX_JOB_ROUNDS: usize = PROVENANCE_DEPTH.1 as usize + DEFAULT_ROUNDS + LOAD_ROUNDS;

/// What [`prepare`] made of a request.
#[derive(Debug)]
pub enum Prepared {
    /// Answer at once (errors, the OpenAPI document); no storage needed.
    Respond(Route, Response),
    /// Run against storage.
    Job(Job),
    /// `GET /metrics`: the host renders its [`Metrics`](crate::Metrics)
    /// ([`Api::prepare`](crate::Api::prepare) does this itself).
    Metrics,
    /// `GET /v1/events`: the host streams the log from the query's `from` (after
    /// applying a `Last-Event-ID`, see [`EventsQuery::parse`](crate::EventsQuery::parse)).
    Events(crate::EventsQuery),
}

impl Prepared {
    /// The route template the request matched (for metrics).
    pub fn route(&self) -> Route {
        match self {
            Prepared::Respond(r, _) => *r,
            Prepared::Job(j) => j.route(),
            Prepared::Metrics => Route::Metrics,
            Prepared::Events(_) => Route::Events,
        }
    }
}

/// The state filter of `GET /v1/intents`.
const STATES: [&str; 4] = ["available", "claimed", "resolved", "withdrawn"];

#[derive(Debug, Clone)]
enum Op {
    /// A record, with its author's active-Hint quota.
    Submit(Box<Record>, usize),
    /// An action, and whether its author has operator authority.
    Act(Box<Action>, bool),
    /// `POST /v1/batch`: [`Op::Submit`]s and [`Op::Act`]s applied in order, all in one
    /// commit.
    Batch(Vec<Op>),
    ListIntents {
        state: Option<&'static str>,
        topic: Option<Topic>,
        limit: usize,
        cursor: IntentCursor,
    },
    ListFacts {
        topic: Option<Topic>,
        range: TimeRange,
        limit: usize,
        after: Option<String>,
    },
    GetRecord {
        id: String,
    },
    GetIntent {
        id: String,
    },
    Provenance {
        id: String,
        depth: usize,
    },
    Hints,
    Deploy {
        record: Box<Record>,
        contract: Arc<Contract>,
        expected: Option<FihHash>,
    },
    GetContract,
    ContractHistory,
    ApplyHints(Box<HintUpdate>),
    ContractHead,
    Log {
        from: u64,
        limit: usize,
    },
    Health,
    Checkpoint(Option<nexus_tlog::LogKey>),
    InclusionProof {
        seq: u64,
        size: Option<u64>,
    },
    ConsistencyProof {
        from: u64,
        to: Option<u64>,
    },
}

/// A prepared request that runs against storage: deterministic given the stores'
/// contents and `now`, so a session host may re-execute it from scratch.
#[derive(Debug, Clone)]
pub struct Job {
    route: Route,
    op: Op,
}

/// The `413 body_too_large` error of a `size`-byte body over `limit`.
pub fn body_too_large(size: usize, limit: usize) -> ApiError {
    ApiError::new(
        ErrorCode::BodyTooLarge,
        format!("request body is {size} bytes; the limit is {limit}"),
    )
    .with("size", size as u64)
    .with("limit", limit as u64)
}

/// The route `method` and `path` (without query) name, if any: the route a host may
/// answer before reading the body — for instance [`body_too_large`] from a declared
/// `Content-Length`, which is then exactly what [`prepare`] would answer with the body.
pub fn served_route(method: &str, path: &str) -> Option<Route> {
    let method = method.to_ascii_uppercase();
    match_path(path)?
        .routes
        .iter()
        .copied()
        .find(|r| r.method() == method)
}

/// Pure CPU work a host can do on any thread: route matching, query validation, JSON
/// parsing, hash and signature verification, the allowlist, id syntax.
pub fn prepare(cfg: &ApiConfig, req: &Request) -> Prepared {
    match prepare_inner(cfg, req) {
        Ok(p) => p,
        Err((route, e)) => Prepared::Respond(route, e.to_response()),
    }
}

type Prep<T> = Result<T, (Route, ApiError)>;

fn prepare_inner(cfg: &ApiConfig, req: &Request) -> Prep<Prepared> {
    let Some(m) = match_path(&req.path) else {
        return Err((
            Route::Unmatched,
            ApiError::new(ErrorCode::NoRoute, format!("no route for {}", req.path))
                .with("path", req.path.clone()),
        ));
    };
    let method = req.method.to_ascii_uppercase();
    let Some(route) = m.routes.iter().copied().find(|r| r.method() == method) else {
        let allow: Vec<&str> = m.routes.iter().map(|r| r.method()).collect();
        return Err((
            m.routes[0],
            ApiError::new(
                ErrorCode::MethodNotAllowed,
                format!("{method} is not allowed on {}", m.routes[0].template()),
            )
            .with("allow", allow),
        ));
    };
    let fail = |e: ApiError| (route, e);
    if req.body.len() > cfg.max_request_bytes {
        return Err(fail(body_too_large(req.body.len(), cfg.max_request_bytes)));
    }
    let id = match m.id {
        Some(raw) => Some(check_id(raw).map_err(fail)?),
        None => None,
    };
    let q = |allowed: &[&str]| Query::parse(req.query.as_deref(), allowed).map_err(fail);
    let op = match route {
        Route::Metrics => {
            q(&[])?;
            return Ok(Prepared::Metrics);
        }
        Route::Events => {
            let events = crate::EventsQuery::parse(req.query.as_deref(), None).map_err(fail)?;
            return Ok(Prepared::Events(events));
        }
        Route::OpenApi => {
            q(&[])?;
            return Ok(Prepared::Respond(
                route,
                Response {
                    status: 200,
                    content_type: "application/json",
                    body: crate::openapi_json().into_bytes(),
                    code: None,
                },
            ));
        }
        Route::ProposeIntent | Route::SubmitFact | Route::SubmitHint => {
            q(&[])?;
            let rec = parse_signed::<Content>(cfg, &req.body).map_err(fail)?;
            let want = match route {
                Route::ProposeIntent => Kind::Intent,
                Route::SubmitFact => Kind::Fact,
                _ => Kind::Hint,
            };
            let kind = rec.content().kind();
            if kind != want {
                return Err(fail(
                    ApiError::new(
                        ErrorCode::WrongKind,
                        format!(
                            "{} is a {kind}; {} takes a {want}",
                            rec.hash(),
                            route.template()
                        ),
                    )
                    .with("hash", rec.hash().to_string())
                    .with("actual", kind.as_str())
                    .with("expected", want.as_str()),
                ));
            }
            record_item(cfg, rec).map_err(fail)?
        }
        Route::Batch => {
            q(&[])?;
            Op::Batch(parse_batch(cfg, &req.body).map_err(fail)?)
        }
        Route::Claim | Route::Renew | Route::Withdraw | Route::RetractHint => {
            q(&[])?;
            let action = parse_signed::<ActionContent>(cfg, &req.body).map_err(fail)?;
            let have = action.content().kind();
            let want = route.template().rsplit('/').next().unwrap_or_default();
            if want != have {
                return Err(fail(ApiError::bad_request(format!(
                    "{} takes a {want} action, got a {have}",
                    route.template()
                ))));
            }
            let what = if route == Route::RetractHint {
                "hint"
            } else {
                "intent"
            };
            let target = action.content().target().to_hex();
            let path_id = id.unwrap_or_default();
            if !target.starts_with(&path_id) {
                return Err(fail(
                    ApiError::bad_request(format!(
                        "the path names {what} {path_id} but the action is for {target}"
                    ))
                    .with("path_id", path_id)
                    .with(what, target),
                ));
            }
            action_item(cfg, action)
        }
        Route::ListIntents => {
            let q = q(&["state", "topic", "limit", "cursor"])?;
            let state = match q.get("state") {
                None => None,
                Some(s) => Some(STATES.iter().copied().find(|x| *x == s).ok_or_else(|| {
                    fail(
                        ApiError::bad_request(format!(
                            "state must be one of {}, got {s:?}",
                            STATES.join(", ")
                        ))
                        .with("parameter", "state"),
                    )
                })?),
            };
            let topic = topic_param(&q).map_err(fail)?;
            let limit = q
                .int("limit", LIST_LIMIT.0, 1, LIST_LIMIT.1)
                .map_err(fail)? as usize;
            let cursor = match q.get("cursor") {
                None => IntentCursor::default(),
                Some(c) => IntentCursor::parse(c).ok_or_else(|| fail(bad_cursor()))?,
            };
            Op::ListIntents {
                state,
                topic,
                limit,
                cursor,
            }
        }
        Route::ListFacts => {
            let q = q(&["topic", "since", "until", "limit", "cursor"])?;
            let topic = topic_param(&q).map_err(fail)?;
            let range = TimeRange {
                since: q.opt_u64("since").map_err(fail)?,
                until: q.opt_u64("until").map_err(fail)?,
            };
            if let (Some(s), Some(u)) = (range.since, range.until)
                && s > u
            {
                return Err(fail(ApiError::bad_request(format!(
                    "since ({s}) is after until ({u})"
                ))));
            }
            let limit = q
                .int("limit", LIST_LIMIT.0, 1, LIST_LIMIT.1)
                .map_err(fail)? as usize;
            let prefix = facts_prefix(topic.as_ref());
            let after = match q.get("cursor") {
                None => None,
                Some(c) => {
                    let key = format!("{prefix}{c}");
                    if keys::parse_index(&key).is_none() {
                        return Err(fail(bad_cursor()));
                    }
                    Some(key)
                }
            };
            Op::ListFacts {
                topic,
                range,
                limit,
                after,
            }
        }
        Route::GetRecord => {
            q(&[])?;
            Op::GetRecord {
                id: id.unwrap_or_default(),
            }
        }
        Route::GetIntent => {
            q(&[])?;
            Op::GetIntent {
                id: id.unwrap_or_default(),
            }
        }
        Route::Provenance => {
            let q = q(&["depth"])?;
            let depth = q
                .int("depth", PROVENANCE_DEPTH.0, 0, PROVENANCE_DEPTH.1)
                .map_err(fail)? as usize;
            Op::Provenance {
                id: id.unwrap_or_default(),
                depth,
            }
        }
        Route::ListHints => {
            q(&[])?;
            Op::Hints
        }
        Route::DeployContract => {
            q(&[])?;
            let rec = parse_signed::<Content>(cfg, &req.body).map_err(fail)?;
            let Content::Fact(fact) = rec.content() else {
                return Err(fail(
                    ApiError::new(
                        ErrorCode::WrongKind,
                        format!(
                            "{} is a {}; POST /v1/contract takes a deployment fact",
                            rec.hash(),
                            rec.content().kind()
                        ),
                    )
                    .with("expected", "fact"),
                ));
            };
            let request =
                governance::deploy_request(fact).map_err(|m| fail(ApiError::bad_request(m)))?;
            let contract = Contract::parse_with_limits("contract.nex", &request.source, &cfg.limits)
                .map_err(|errs| {
                    let list: Vec<Value> = errs
                        .0
                        .iter()
                        .map(|e| {
                            serde_json::json!({"line": e.line, "column": e.column, "message": e.message})
                        })
                        .collect();
                    fail(ApiError::new(ErrorCode::InvalidContract, errs.to_string()).with("errors", list))
                })?;
            Op::Deploy {
                record: Box::new(rec),
                contract: Arc::new(contract),
                expected: request.expected,
            }
        }
        Route::GetContract => {
            q(&[])?;
            Op::GetContract
        }
        Route::ContractHistory => {
            q(&[])?;
            Op::ContractHistory
        }
        Route::Log => {
            let q = q(&["from", "limit"])?;
            let from = q.int("from", 1, 0, u64::MAX).map_err(fail)?.max(1);
            let limit = q.int("limit", LOG_LIMIT.0, 1, LOG_LIMIT.1).map_err(fail)? as usize;
            Op::Log { from, limit }
        }
        Route::Health => {
            q(&[])?;
            Op::Health
        }
        Route::Checkpoint => {
            q(&[])?;
            Op::Checkpoint(cfg.log_key.clone())
        }
        Route::InclusionProof => {
            let q = q(&["seq", "size"])?;
            let seq = q.int("seq", 0, 1, u64::MAX).map_err(fail)?;
            Op::InclusionProof {
                seq,
                size: q.opt_u64("size").map_err(fail)?,
            }
        }
        Route::ConsistencyProof => {
            let q = q(&["from", "to"])?;
            Op::ConsistencyProof {
                from: q.int("from", 0, 0, u64::MAX).map_err(fail)?,
                to: q.opt_u64("to").map_err(fail)?,
            }
        }
        Route::Unmatched => {
            return Err(fail(ApiError::new(ErrorCode::NoRoute, "no route")));
        }
    };
    Ok(Prepared::Job(Job { route, op }))
}

fn bad_cursor() -> ApiError {
    ApiError::bad_request("cursor is not one this query returned").with("parameter", "cursor")
}

fn topic_param(q: &Query) -> Result<Option<Topic>, ApiError> {
    q.get("topic")
        .map(|t| {
            t.parse::<Topic>().map_err(|e| {
                ApiError::bad_request(format!("topic: {e}")).with("parameter", "topic")
            })
        })
        .transpose()
}

fn facts_prefix(topic: Option<&Topic>) -> String {
    match topic {
        Some(t) => keys::topic_prefix(Kind::Fact, t),
        None => keys::time_prefix(Kind::Fact),
    }
}

/// A path id: 8 to 64 hex digits (lowercased).
fn check_id(raw: &str) -> Result<String, ApiError> {
    let id = raw.to_ascii_lowercase();
    if id.len() < 8 || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ApiError::bad_request(format!(
            "an id is a FihHash or a prefix of it: 8 to 64 hex digits, got {:?}",
            raw.chars().take(80).collect::<String>()
        ))
        .with("id", raw.chars().take(80).collect::<String>()));
    }
    Ok(id)
}

/// Most items one `POST /v1/batch` may carry.
pub const MAX_BATCH_ITEMS: usize = 64;

/// The checks every route that takes a record makes of it beyond its signature (who may
/// post what), as the job that submits it.
fn record_item(cfg: &ApiConfig, rec: Record) -> Result<Op, ApiError> {
    if let Content::Hint(h) = rec.content()
        && h.source.as_ref().is_some_and(|s| s.contract.is_some())
    {
        // Anyone can derive a contract's key: a Hint that names a contract is
        // accepted only from its evaluation, never from an agent.
        return Err(ApiError::bad_request(
            "a Hint whose source names a contract is emitted by that contract's \
                 evaluation, not submitted",
        ));
    }
    if let Content::Hint(h) = rec.content()
        && !matches!(h.effect, Effect::Priority(_))
        && !cfg.is_operator(&h.author)
    {
        return Err(core_error(&CoreError::HintNotPermitted {
            author: h.author,
            what: "post a deny or allow Hint: only an operator key or the contract in \
                       force may; an agent may post priority Hints"
                .to_owned(),
        }));
    }
    if let Content::Fact(f) = rec.content()
        && f.topic.as_str() == governance::DEPLOY_TOPIC
    {
        return Err(ApiError::bad_request(format!(
            "facts under {} are contract deployments: POST them to /v1/contract",
            governance::DEPLOY_TOPIC
        )));
    }
    let quota = cfg.hint_quota_of(rec.author());
    Ok(Op::Submit(Box::new(rec), quota))
}

/// The job that applies a verified action, with its author's authority.
fn action_item(cfg: &ApiConfig, action: Action) -> Op {
    let operator = cfg.is_operator(action.author());
    Op::Act(Box::new(action), operator)
}

/// Parses a `POST /v1/batch` body: `{"items": [...]}` with 1 to [`MAX_BATCH_ITEMS`]
/// items, each `{"record": <signed record>}` or `{"action": <signed action>}`, checked
/// as its own route would check it; an item's error names it (`item`, from 0).
fn parse_batch(cfg: &ApiConfig, body: &[u8]) -> Result<Vec<Op>, ApiError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::new(ErrorCode::MalformedJson, format!("request body: {e}")))?;
    let Value::Object(mut top) = value else {
        return Err(ApiError::bad_request(
            "a batch is an object {\"items\": [...]}",
        ));
    };
    if let Some(other) = top.keys().find(|k| *k != "items") {
        return Err(ApiError::bad_request(format!(
            "a batch has only \"items\", not {other:?}"
        )));
    }
    let Some(Value::Array(items)) = top.remove("items") else {
        return Err(ApiError::bad_request(
            "a batch's \"items\" is an array of {\"record\": ...} or {\"action\": ...}",
        ));
    };
    if items.is_empty() || items.len() > MAX_BATCH_ITEMS {
        return Err(ApiError::bad_request(format!(
            "a batch has 1 to {MAX_BATCH_ITEMS} items, got {}",
            items.len()
        ))
        .with("items", items.len() as u64)
        .with("limit", MAX_BATCH_ITEMS as u64));
    }
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| batch_item(cfg, item).map_err(|e| e.with("item", i as u64)))
        .collect()
}

/// One batch item as the job its own route would run.
fn batch_item(cfg: &ApiConfig, item: Value) -> Result<Op, ApiError> {
    let shape = || {
        ApiError::bad_request(
            "a batch item is {\"record\": <signed record>} or {\"action\": <signed action>}",
        )
    };
    let Value::Object(mut item) = item else {
        return Err(shape());
    };
    if item.len() != 1 {
        return Err(shape());
    }
    if let Some(v) = item.remove("record") {
        let rec = verify_signed::<Content>(cfg, v)?;
        record_item(cfg, rec)
    } else if let Some(v) = item.remove("action") {
        let action = verify_signed::<ActionContent>(cfg, v)?;
        Ok(action_item(cfg, action))
    } else {
        Err(shape())
    }
}

/// Parses JSON, verifies hash and signature, then the allowlist.
fn parse_signed<C: nexus_core::record::Signable>(
    cfg: &ApiConfig,
    body: &[u8],
) -> Result<nexus_core::Signed<C>, ApiError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::new(ErrorCode::MalformedJson, format!("request body: {e}")))?;
    verify_signed(cfg, value)
}

/// Verifies a parsed record or action (hash, signature), then the allowlist.
fn verify_signed<C: nexus_core::record::Signable>(
    cfg: &ApiConfig,
    value: Value,
) -> Result<nexus_core::Signed<C>, ApiError> {
    let signed = nexus_core::Signed::<C>::from_value(value, &cfg.limits)
        .map_err(|e| validation_error(&e))?;
    let author = *signed.author();
    if !cfg.may_write(&author) {
        return Err(ApiError::new(
            ErrorCode::AuthorNotAllowed,
            format!("author {author} is not on this server's allowlist"),
        )
        .with("author", author.to_string()));
    }
    Ok(signed)
}

/// What a job did, before its delta is flushed: the host flushes the delta only if
/// [`Outcome::commits`], then builds the answer with [`Outcome::response`].
#[derive(Debug)]
pub struct Outcome {
    route: Route,
    result: Result<Done, ApiError>,
}

#[derive(Debug)]
enum Done {
    Body(Vec<u8>),
    Submitted(Submitted),
    Leased(nexus_core::Lease),
    Withdrawn(FihHash),
    Retracted(FihHash),
    Deployed(Box<governance::Deployed>),
    /// Each item's result with the number of log entries the items before it queued
    /// (its entry's offset from the commit's first).
    Batch(Vec<(Done, u64)>),
}

impl Outcome {
    /// The route.
    pub fn route(&self) -> Route {
        self.route
    }

    /// True when the job failed: its delta must be discarded (nothing partial is
    /// ever stored).
    pub fn is_error(&self) -> bool {
        self.result.is_err()
    }

    /// True when the job succeeded and its delta (if any) is to be flushed.
    pub fn commits(&self) -> bool {
        self.result.is_ok()
    }

    /// The error, if the job failed.
    pub fn error(&self) -> Option<&ApiError> {
        self.result.as_ref().err()
    }

    /// The answer. `first_seq` is the sequence number the store gave the commit's first
    /// log entry ([`nexus_iobuf::FlushReport::first_seq`]); without it the session's
    /// prediction (exact when the log head was hydrated and no one else appended) is
    /// used.
    pub fn response(&self, first_seq: Option<u64>) -> Response {
        match &self.result {
            Err(e) => e.to_response(),
            Ok(Done::Body(b)) => Response {
                status: 200,
                content_type: "application/json",
                body: b.clone(),
                code: None,
            },
            Ok(Done::Submitted(s)) => {
                Response::json(if s.duplicate { 200 } else { 201 }, &created(s, first_seq))
            }
            Ok(Done::Batch(items)) => Response::json(
                200,
                &BatchBody {
                    results: items
                        .iter()
                        .filter_map(|(done, offset)| {
                            batch_result(done, first_seq.map(|f| f + offset))
                        })
                        .collect(),
                },
            ),
            Ok(Done::Leased(l)) => Response::json(200, &LeaseBody::from(l)),
            Ok(Done::Deployed(d)) => Response::json(
                if d.duplicate { 200 } else { 201 },
                &DeployedBody {
                    hash: d.entry.hash,
                    version: d.entry.version,
                    name: d.entry.name.clone(),
                    deploy: d.entry.deploy,
                    previous: d.entry.previous,
                    approvals: d.entry.approvals.clone(),
                    duplicate: d.duplicate,
                    seq: if d.duplicate {
                        None
                    } else {
                        first_seq.or(d.seq)
                    },
                },
            ),
            Ok(Done::Withdrawn(h)) => Response::json(
                200,
                &WithdrawnBody {
                    intent: *h,
                    state: "withdrawn".to_owned(),
                },
            ),
            Ok(Done::Retracted(h)) => Response::json(
                200,
                &RetractedBody {
                    hint: *h,
                    seq: first_seq,
                },
            ),
        }
    }
}

/// The answer to a record's submission; `first_seq`: the number the store gave its
/// commit's log entry.
fn created(s: &Submitted, first_seq: Option<u64>) -> Created {
    Created {
        hash: s.hash,
        kind: s.kind,
        duplicate: s.duplicate,
        seq: if s.duplicate {
            None
        } else {
            first_seq.or(s.seq)
        },
    }
}

/// A batch item's result; `seq`: the number the store gave its log entry.
fn batch_result(done: &Done, seq: Option<u64>) -> Option<BatchResult> {
    Some(match done {
        Done::Submitted(s) => BatchResult::Record(created(s, seq)),
        Done::Leased(l) => BatchResult::Lease(LeaseBody::from(l)),
        Done::Withdrawn(h) => BatchResult::Withdrawn(WithdrawnBody {
            intent: *h,
            state: "withdrawn".to_owned(),
        }),
        Done::Retracted(h) => BatchResult::Retracted(RetractedBody { hint: *h, seq }),
        // Not batch items.
        Done::Body(_) | Done::Deployed(_) | Done::Batch(_) => return None,
    })
}

/// Whether an item's result queued a log entry (a duplicate record queues none).
fn logs_entry(done: &Done) -> bool {
    !matches!(done, Done::Submitted(s) if s.duplicate)
}

fn body<T: Serialize>(v: &T) -> CoreResult<Done> {
    Ok(Done::Body(serde_json::to_vec(v).unwrap_or_default()))
}

fn refs(keys: &[String]) -> Vec<&str> {
    keys.iter().map(String::as_str).collect()
}

impl Job {
    /// The route.
    pub fn route(&self) -> Route {
        self.route
    }

    /// The record a submission job carries (`None` for other jobs).
    pub fn record(&self) -> Option<&Record> {
        match &self.op {
            Op::Submit(r, _) => Some(r),
            _ => None,
        }
    }

    /// Who signed the job's record or action (`None` for reads and for the host's own
    /// jobs): what a host's per-author rate limit counts.
    pub fn author(&self) -> Option<&nexus_core::AuthorKey> {
        match &self.op {
            Op::Submit(r, _) => Some(r.author()),
            Op::Act(a, _) => Some(a.author()),
            Op::Deploy { record, .. } => Some(record.author()),
            // A batch: its first item's author (see `authors` for all of them).
            Op::Batch(items) => items.first().and_then(|op| match op {
                Op::Submit(r, _) => Some(r.author()),
                Op::Act(a, _) => Some(a.author()),
                _ => None,
            }),
            _ => None,
        }
    }

    /// Every signer of the job's records and actions, one per item (a batch names
    /// each item's author, repeats included; other writes their one author; reads and
    /// the host's own jobs none): what a host's per-author rate limit takes a token
    /// from for each.
    pub fn authors(&self) -> Vec<&nexus_core::AuthorKey> {
        match &self.op {
            Op::Batch(items) => items
                .iter()
                .filter_map(|op| match op {
                    Op::Submit(r, _) => Some(r.author()),
                    Op::Act(a, _) => Some(a.author()),
                    _ => None,
                })
                .collect(),
            _ => self.author().into_iter().collect(),
        }
    }

    /// Whether the job changes state.
    pub fn is_write(&self) -> bool {
        matches!(
            self.op,
            Op::Submit(..) | Op::Act(..) | Op::Batch(_) | Op::Deploy { .. } | Op::ApplyHints(_)
        )
    }

    /// Session rounds the job may need (provenance walks one level per round).
    pub fn max_rounds(&self) -> usize {
        match &self.op {
            Op::Provenance { depth, .. } => {
                (depth + DEFAULT_ROUNDS + LOAD_ROUNDS).min(MAX_JOB_ROUNDS)
            }
            Op::ListFacts { .. } => DEFAULT_ROUNDS + MAX_SCAN / 256 + LOAD_ROUNDS,
            Op::Log { .. } | Op::ListIntents { .. } => DEFAULT_ROUNDS + LOAD_ROUNDS,
            // An upgrade check lists every upgrade key's approvals (up to MAX_SCAN
            // index entries each, all keys in the same rounds), then reads them.
            Op::Deploy { .. } => DEFAULT_ROUNDS + MAX_SCAN / 256 + 1,
            _ => DEFAULT_ROUNDS,
        }
    }

    /// What to hydrate before the first execution, so that most jobs complete in one
    /// or two rounds: the core's [`ReadSet`](nexus_core::storage::ReadSet) for writes
    /// (plus the log head, so that the answer's `seq` is known), and the keys and
    /// first listing of each read.
    pub fn read_set(&self) -> Misses {
        let mut m = Misses::default();
        let head = LOG_HEAD_KEY.to_owned();
        match &self.op {
            Op::Batch(items) => {
                for item in items {
                    let rs = match item {
                        Op::Submit(rec, _) => CoreReadSet::for_record(rec),
                        Op::Act(action, _) => CoreReadSet::for_action(action),
                        _ => continue,
                    };
                    m.kv_keys.extend(rs.kv);
                    m.state_keys.extend(rs.states);
                }
                m.state_keys.push(head);
            }
            Op::Submit(rec, _) => {
                let rs = CoreReadSet::for_record(rec);
                m.kv_keys = rs.kv;
                m.state_keys = rs.states;
                m.state_keys.push(head);
            }
            Op::Act(action, _) => {
                let rs = CoreReadSet::for_action(action);
                m.kv_keys = rs.kv;
                m.state_keys = rs.states;
                m.state_keys.push(head);
            }
            Op::GetRecord { id } | Op::Provenance { id, .. } | Op::GetIntent { id } => {
                match id.parse::<FihHash>() {
                    Ok(h) => {
                        m.state_keys.push(keys::committed(&h));
                        m.kv_keys.push(keys::record(&h));
                        if matches!(self.op, Op::GetIntent { .. }) {
                            m.state_keys
                                .extend([keys::intent(&h), keys::HINTS.to_owned()]);
                        }
                    }
                    Err(_) => m.state_lists.push(ListQuery::new(
                        format!("{}{id}", keys::COMMITTED_PREFIX),
                        None,
                        2,
                    )),
                }
            }
            Op::ListIntents { cursor, .. } => {
                m.state_keys.push(keys::HINTS.to_owned());
                m.state_lists.push(ListQuery::new(
                    keys::INTENT_PREFIX,
                    cursor.window_after().as_deref(),
                    INTENT_SCAN,
                ));
            }
            Op::ListFacts {
                topic,
                range,
                after,
                ..
            } => {
                let prefix = facts_prefix(topic.as_ref());
                let start = match (after, topic, range.since) {
                    (Some(a), _, _) => Some(a.clone()),
                    (None, None, Some(since)) if since > 0 => {
                        Some(format!("{prefix}{:016}", since - 1))
                    }
                    _ => None,
                };
                m.kv_lists
                    .push(ListQuery::new(prefix, start.as_deref(), MAX_SCAN.min(256)));
            }
            Op::Hints => m.state_keys.push(keys::HINTS.to_owned()),
            Op::Deploy { record, .. } => {
                m.state_keys.extend([
                    governance::keys::CURRENT.to_owned(),
                    keys::HINTS.to_owned(),
                    keys::committed(&record.hash()),
                    head,
                ]);
            }
            Op::GetContract => m.state_keys.push(governance::keys::CURRENT.to_owned()),
            Op::ContractHead => {
                m.state_keys
                    .extend([governance::keys::CURRENT.to_owned(), head]);
            }
            Op::ContractHistory => m.state_lists.push(ListQuery::new(
                governance::keys::VERSION_PREFIX,
                None,
                CONTRACT_HISTORY_LIMIT,
            )),
            Op::ApplyHints(u) => {
                m.state_keys.extend([
                    governance::keys::CURRENT.to_owned(),
                    keys::HINTS.to_owned(),
                    head,
                ]);
                m.state_keys
                    .extend(u.add.iter().map(|r| keys::committed(&r.hash())));
            }
            // The entries' keys are known only below the head: the second round reads
            // exactly those (no guessing past the head), the third their records.
            Op::Log { .. } => m.state_keys.push(head),
            Op::Health | Op::Checkpoint(_) => {
                m.state_keys.push(head);
                m.state_keys.push(keys::DEPLOYMENT.to_owned());
            }
            Op::InclusionProof { .. } | Op::ConsistencyProof { .. } => m.state_keys.push(head),
        }
        m.kv_keys.sort();
        m.kv_keys.dedup();
        m.state_keys.sort();
        m.state_keys.dedup();
        m
    }

    /// Runs the job against `core` at host time `now`. Reads change nothing; a write's
    /// changes land in `core`'s stores (for a session: its buffers, to be flushed only
    /// if the outcome [`commits`](Outcome::commits)).
    pub fn execute<K, B, O>(&self, core: &CompositeColdStorage<K, B, O>, now: u64) -> Outcome
    where
        K: KeyValueStore,
        B: BlobStore,
        O: ObjectStore,
    {
        let result = match &self.op {
            Op::Deploy {
                record,
                contract,
                expected,
            } => governance::deploy(core, record, contract, *expected, now)
                .map(|d| Done::Deployed(Box::new(d)))
                .map_err(|e| deploy_error(&e)),
            Op::GetContract => get_contract(core),
            Op::Batch(items) => run_batch(core, items, now),
            Op::Checkpoint(key) => crate::tlog::checkpoint(core, key.as_ref()).map(Done::Body),
            Op::InclusionProof { seq, size } => {
                crate::tlog::inclusion(core, *seq, *size).map(Done::Body)
            }
            Op::ConsistencyProof { from, to } => {
                crate::tlog::consistency(core, *from, *to).map(Done::Body)
            }
            _ => self.run(core, now).map_err(|e| core_error(&e)),
        };
        Outcome {
            route: self.route,
            result,
        }
    }

    /// The job's sans-IO [`Driver`]: it first asks to hydrate [`Job::read_set`], runs
    /// [`Job::execute_session`] at host time `now`, commits with the read checks and
    /// flush phases of the core ([`keys::is_after_commit`]) and retries a lost commit
    /// up to [`MAX_ATTEMPTS`](crate::MAX_ATTEMPTS) times. `cache_ok`: the host may
    /// serve states from a cache that can be stale (the Worker's isolate cache).
    /// Every host drives this same machine; [`Api::finish`](crate::Api::finish) turns
    /// its result into the answer.
    pub fn driver(
        &self,
        limits: &Limits,
        now: u64,
        cache_ok: bool,
    ) -> Driver<impl FnMut(&IoBufferSession) -> Outcome + Send + 'static, Outcome> {
        let job = self.clone();
        let limits = limits.clone();
        Driver::new(
            move |s: &IoBufferSession| job.execute_session(s, &limits, now),
            self.read_set(),
            DriveConfig {
                max_rounds: self.max_rounds(),
                max_attempts: crate::MAX_ATTEMPTS,
                after_commit: keys::is_after_commit,
                cache_ok,
            },
        )
    }

    /// [`execute`](Self::execute) over a session's buffers (see
    /// [`session_core`](crate::session_core)). When the job fails on data it had (no
    /// misses), its writes are rolled back, so the session's delta is empty: a host
    /// that flushes every job's delta (a `SessionServer`) stores nothing for an error.
    pub fn execute_session(&self, session: &IoBufferSession, limits: &Limits, now: u64) -> Outcome {
        let outcome = self.execute(&crate::session_core(session, limits), now);
        if outcome.is_error() && session.misses().is_empty() {
            session.rollback();
        }
        outcome
    }

    fn run<K, B, O>(&self, core: &CompositeColdStorage<K, B, O>, now: u64) -> CoreResult<Done>
    where
        K: KeyValueStore,
        B: BlobStore,
        O: ObjectStore,
    {
        match &self.op {
            op @ (Op::Submit(..) | Op::Act(..)) => write_item(core, op, now),
            Op::Batch(_) => unreachable!("batches run in execute"),
            Op::GetRecord { id } => {
                let h = core.resolve_id(id)?;
                let record = core.get_record(&h)?.ok_or(CoreError::UnknownRecord(h))?;
                body(&RecordBody {
                    kind: record.content().kind(),
                    parents: record.content().links(),
                    record,
                })
            }
            Op::GetIntent { id } => {
                let h = core.resolve_id(id)?;
                let record = core.get_record(&h)?.ok_or(CoreError::UnknownRecord(h))?;
                let Content::Intent(intent) = record.content() else {
                    return Err(CoreError::WrongKind {
                        hash: h,
                        actual: record.content().kind(),
                        expected: Kind::Intent,
                    });
                };
                let state = core.intent_state(&h)?.ok_or(CoreError::UnknownRecord(h))?;
                let hints = core.active_hints(now)?;
                let priority = CompositeColdStorage::<K, B, O>::priority_of(&hints, intent);
                body(&IntentItem {
                    record,
                    state,
                    priority,
                })
            }
            Op::Provenance { id, depth } => {
                let root = core.resolve_id(id)?;
                Pages(core).provenance(root, *depth).map(Done::Body)
            }
            Op::Hints => {
                let hints = core.active_hints(now)?;
                let hashes: Vec<FihHash> = hints.iter().map(|h| h.hash).collect();
                let records = load_records(core, &hashes)?;
                body(&HintList {
                    hints: records
                        .into_iter()
                        .map(|hint| HintItem {
                            hash: hint.hash(),
                            hint,
                        })
                        .collect(),
                })
            }
            Op::Deploy { .. } => unreachable!("deployments run in execute"),
            Op::GetContract => unreachable!("GET /v1/contract runs in execute"),
            Op::Checkpoint(_) | Op::InclusionProof { .. } | Op::ConsistencyProof { .. } => {
                unreachable!("the transparency-log routes run in execute")
            }
            Op::ContractHead => body(&serde_json::json!({
                "current": governance::current(core)?,
                "head": log_head(core)?,
            })),
            Op::ContractHistory => body(&ContractHistoryBody {
                versions: governance::history(core, 1, CONTRACT_HISTORY_LIMIT)?,
            }),
            Op::ApplyHints(update) => {
                let applied = governance::apply_hints(core, update, now)?;
                body(&serde_json::json!({"applied": format!("{applied:?}")}))
            }
            Op::Health => body(&Health::ok(
                log_head(core)?,
                core.deployment()?.map(|d| d.as_str().to_owned()),
            )),
            Op::Log { from, limit } => Pages(core).log(*from, *limit).map(Done::Body),
            Op::ListFacts {
                topic,
                range,
                limit,
                after,
            } => {
                let page = match topic {
                    Some(t) => core.by_topic(Kind::Fact, t, *range, after.as_deref(), *limit)?,
                    None => core.by_time(Kind::Fact, *range, after.as_deref(), *limit)?,
                };
                let prefix = facts_prefix(topic.as_ref());
                let raw = load_raw(core, &page.items, RESPONSE_BYTES)?;
                let mut facts = CappedArray::new("{\"facts\":[");
                let mut last = None;
                for (h, raw) in page.items.iter().zip(&raw) {
                    let fact = capped::decode(core.limits(), h, raw)?;
                    if !facts.push(&fact) {
                        break;
                    }
                    last = Some(fact);
                }
                // A page cut short by its bytes continues after its last Fact.
                let next = match last {
                    Some(f) if facts.len() < page.items.len() => {
                        let time = f.content().time();
                        Some(format!("{time:016}/{}", f.hash()))
                    }
                    _ => page
                        .next
                        .and_then(|k| k.strip_prefix(prefix.as_str()).map(str::to_owned)),
                };
                let next = serde_json::to_string(&next).unwrap_or_default();
                Ok(Done::Body(facts.finish(&format!(",\"next\":{next}}}"))))
            }
            Op::ListIntents {
                state,
                topic,
                limit,
                cursor,
            } => list_intents(core, *state, topic.as_ref(), *limit, cursor, now).map(Done::Body),
        }
    }
}

/// Runs a record's submission or an action.
fn write_item<K, B, O>(core: &CompositeColdStorage<K, B, O>, op: &Op, now: u64) -> CoreResult<Done>
where
    K: KeyValueStore,
    B: BlobStore,
    O: ObjectStore,
{
    match op {
        Op::Submit(rec, quota) => core.submit_within(rec, now, *quota).map(Done::Submitted),
        Op::Act(action, operator) => core.act_as(action, now, *operator).map(|a| match a {
            Applied::Leased(l) => Done::Leased(l),
            Applied::Withdrawn(h) => Done::Withdrawn(h),
            Applied::Retracted(h) => Done::Retracted(h),
        }),
        _ => Err(CoreError::Store(nexus_store::StoreError::Backend(
            "a batch item is a record or an action".into(),
        ))),
    }
}

/// Runs a batch's items in order against one store view: each sees what the ones before
/// it wrote, and all of them land in the one commit a session drains (a failing item
/// fails the batch, naming it, and the session discards every item's writes).
fn run_batch<K, B, O>(
    core: &CompositeColdStorage<K, B, O>,
    items: &[Op],
    now: u64,
) -> Result<Done, ApiError>
where
    K: KeyValueStore,
    B: BlobStore,
    O: ObjectStore,
{
    let mut results = Vec::with_capacity(items.len());
    let mut logged = 0u64;
    for (i, item) in items.iter().enumerate() {
        let done =
            write_item(core, item, now).map_err(|e| core_error(&e).with("item", i as u64))?;
        let offset = logged;
        if logs_entry(&done) {
            logged += 1;
        }
        results.push((done, offset));
    }
    Ok(Done::Batch(results))
}

/// Most versions `GET /v1/contract/history` lists.
pub const CONTRACT_HISTORY_LIMIT: usize = 1_000;

impl Job {
    /// The job that commits a contract Hint update computed by the host's
    /// [`Governor`](crate::Governor).
    pub fn apply_hints(update: HintUpdate) -> Job {
        Job {
            route: Route::SubmitHint,
            op: Op::ApplyHints(Box::new(update)),
        }
    }

    /// The read job that answers `{"current": {"version","hash"} | null, "head": n}`:
    /// which contract is in force and how far the commit log goes.
    pub fn contract_head() -> Job {
        Job {
            route: Route::GetContract,
            op: Op::ContractHead,
        }
    }

    /// The read job of `GET /v1/contract`.
    pub fn get_contract() -> Job {
        Job {
            route: Route::GetContract,
            op: Op::GetContract,
        }
    }

    /// The read job of `GET /v1/log?from={from}&limit={limit}`.
    pub fn log(from: u64, limit: usize) -> Job {
        Job {
            route: Route::Log,
            op: Op::Log {
                from: from.max(1),
                limit: limit.clamp(1, LOG_LIMIT.1 as usize),
            },
        }
    }
}

fn get_contract<K, B, O>(core: &CompositeColdStorage<K, B, O>) -> Result<Done, ApiError>
where
    K: KeyValueStore,
    B: BlobStore,
    O: ObjectStore,
{
    let cur = governance::current(core)
        .map_err(|e| core_error(&e))?
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound, "no contract is deployed"))?;
    let source = governance::source(core, &cur.hash).map_err(|e| core_error(&e))?;
    let parsed = Contract::parse_with_limits("contract.nex", &source, core.limits()).ok();
    body(&ContractBody::new(
        cur.version,
        cur.hash,
        source,
        parsed.as_ref(),
    ))
    .map_err(|e| core_error(&e))
}

fn deploy_error(e: &DeployError) -> ApiError {
    match e {
        DeployError::Stale { current, expected } => {
            ApiError::new(ErrorCode::StaleContract, e.to_string())
                .with("current", current.map(|h| h.to_hex()))
                .with("expected", expected.map(|h| h.to_hex()))
        }
        DeployError::Refused(u) => {
            let err = ApiError::new(ErrorCode::UpgradeRefused, e.to_string());
            match u {
                UpgradeError::NotAllowed { deployer, .. } => {
                    err.with("deployer", deployer.to_string())
                }
                UpgradeError::Quorum { needed, found, .. } => err
                    .with("needed", *needed as u64)
                    .with("found", *found as u64),
            }
        }
        DeployError::Unreadable { .. } => ApiError::new(ErrorCode::Storage, e.to_string()),
        DeployError::Core(c) => core_error(c),
    }
}

fn corrupt(key: &str, reason: &str) -> nexus_store::StoreError {
    nexus_store::StoreError::Corrupt {
        key: key.to_owned(),
        reason: reason.to_owned(),
    }
}

fn log_head<K, B, O>(core: &CompositeColdStorage<K, B, O>) -> CoreResult<u64>
where
    K: KeyValueStore,
    B: BlobStore,
    O: ObjectStore,
{
    Ok(match core.objects().get_state(LOG_HEAD_KEY)? {
        None => 0,
        Some(v) => parse_head(v.as_slice())?,
    })
}

/// Loads committed records by hash (one bulk read), in order.
fn load_records<K, B, O>(
    core: &CompositeColdStorage<K, B, O>,
    hashes: &[FihHash],
) -> CoreResult<Vec<Record>>
where
    K: KeyValueStore,
    B: BlobStore,
    O: ObjectStore,
{
    let keys: Vec<String> = hashes.iter().map(keys::record).collect();
    let values = core.kv().get_many(&refs(&keys))?;
    keys.iter()
        .zip(values)
        .map(|(key, v)| {
            let v = v.ok_or_else(|| {
                CoreError::Store(corrupt(key, "committed record content is missing"))
            })?;
            decode_stored_record(key, &v, core.limits())
        })
        .collect()
}

/// The byte-bounded answers of the log and of provenance over one core.
struct Pages<'a, K, B, O>(&'a CompositeColdStorage<K, B, O>);

impl<K: KeyValueStore, B: BlobStore, O: ObjectStore> Pages<'_, K, B, O> {
    /// The record and its ancestors, breadth first, each once, at most `depth` levels,
    /// [`PROVENANCE_MAX_RECORDS`] records and [`RESPONSE_BYTES`] of answer
    /// (`ProvenanceBody`'s JSON). Bulk reads per level (see [`load_raw`]).
    fn provenance(&self, root: FihHash, depth: usize) -> CoreResult<Vec<u8>> {
        let core = self.0;
        let first = core
            .get_record(&root)?
            .ok_or(CoreError::UnknownRecord(root))?;
        let mut seen: BTreeSet<FihHash> = BTreeSet::from([root]);
        let mut frontier = first.content().links();
        let mut out = CappedArray::new(&format!("{{\"root\":\"{root}\",\"records\":["));
        out.push(&first);
        let mut fetched = 0usize;
        'levels: for _ in 0..depth {
            let mut level = Vec::new();
            for h in frontier {
                if out.len() + level.len() >= PROVENANCE_MAX_RECORDS {
                    break;
                }
                if seen.insert(h) {
                    level.push(h);
                }
            }
            if level.is_empty() || fetched >= RESPONSE_BYTES {
                break;
            }
            let raw = load_raw(core, &level, RESPONSE_BYTES - fetched)?;
            frontier = Vec::new();
            for (h, raw) in level.iter().zip(&raw) {
                fetched += raw.len();
                let rec = capped::decode(core.limits(), h, raw)?;
                if !out.push(&rec) {
                    break 'levels;
                }
                frontier.extend(rec.content().links());
            }
            if raw.len() < level.len() {
                break;
            }
        }
        Ok(out.finish("}"))
    }

    /// One page of the commit log from `from`: at most `limit` entries and
    /// [`RESPONSE_BYTES`] of answer (`LogBody`'s JSON); a page cut short by its bytes
    /// ends at an entry's end, and the next page is asked from its last `seq` + 1.
    fn log(&self, from: u64, limit: usize) -> CoreResult<Vec<u8>> {
        let core = self.0;
        let head = log_head(core)?;
        let entries = core.log_entries(from, limit)?;
        let hashes: Vec<FihHash> = entries
            .iter()
            .filter_map(|(_, e)| match e {
                LogEntry::Record { hash, .. } => Some(*hash),
                LogEntry::Action { .. } => None,
            })
            .collect();
        let raw = load_raw(core, &hashes, RESPONSE_BYTES)?;
        let mut records = hashes.iter().zip(&raw);
        let mut out = CappedArray::new(&format!("{{\"head\":{head},\"entries\":["));
        for (seq, e) in entries {
            let item = match e {
                LogEntry::Record { at, .. } => {
                    // The records read stop at the byte budget: so does the page.
                    let Some((h, raw)) = records.next() else {
                        break;
                    };
                    LogItem::Record {
                        seq,
                        at,
                        record: Box::new(capped::decode(core.limits(), h, raw)?),
                    }
                }
                LogEntry::Action { action, at } => LogItem::Action { seq, at, action },
            };
            if !out.push(&item) {
                break;
            }
        }
        Ok(out.finish("}"))
    }
}

/// Where a `GET /v1/intents` page continues: the scan window (the Intent state keys
/// after `window`, at most [`INTENT_SCAN`] of them) and, within it, the sort position
/// `(priority, time, hash)` of the last Intent already returned.
///
/// Text form (opaque to clients): `{window}` or `{window}.{priority}.{time}.{hash}`,
/// where `window` is the hash of the Intent the window starts after, or `start`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct IntentCursor {
    window: Option<FihHash>,
    last: Option<(i64, u64, FihHash)>,
}

impl IntentCursor {
    fn parse(s: &str) -> Option<Self> {
        let mut parts = s.split('.');
        let window = match parts.next()? {
            "start" => None,
            h => Some(h.parse().ok()?),
        };
        let last = match (parts.next(), parts.next(), parts.next()) {
            (None, None, None) => None,
            (Some(p), Some(t), Some(h)) => {
                Some((p.parse().ok()?, t.parse().ok()?, h.parse().ok()?))
            }
            _ => return None,
        };
        if parts.next().is_some() {
            return None;
        }
        Some(Self { window, last })
    }

    fn render(&self) -> String {
        let window = self
            .window
            .map_or_else(|| "start".to_owned(), |h| h.to_string());
        match &self.last {
            None => window,
            Some((p, t, h)) => format!("{window}.{p}.{t}.{h}"),
        }
    }

    fn window_after(&self) -> Option<String> {
        self.window.as_ref().map(keys::intent)
    }
}

/// One page of Intents. The Intents are scanned in windows of at most [`INTENT_SCAN`]
/// state keys (key order); within a window the matches are ordered by priority
/// (highest first), then time and hash, and paged in that order; then the next window
/// follows. Up to [`INTENT_SCAN`] Intents the order is therefore global.
fn list_intents<K, B, O>(
    core: &CompositeColdStorage<K, B, O>,
    state: Option<&str>,
    topic: Option<&Topic>,
    limit: usize,
    cursor: &IntentCursor,
    now: u64,
) -> CoreResult<Vec<u8>>
where
    K: KeyValueStore,
    B: BlobStore,
    O: ObjectStore,
{
    let hints = core.active_hints(now)?;
    let window_after = cursor.window_after();
    let state_keys =
        core.objects()
            .list_states(keys::INTENT_PREFIX, window_after.as_deref(), INTENT_SCAN)?;
    let exhausted = state_keys.len() < INTENT_SCAN;
    let states = core.objects().get_states(&refs(&state_keys))?;
    let mut candidates: Vec<(FihHash, IntentState)> = Vec::new();
    for (key, st) in state_keys.iter().zip(states) {
        let Some(st) = st else { continue };
        let st = IntentState::decode(key, &st)?;
        if state.is_some_and(|want| st.effective_name(now) != want) {
            continue;
        }
        let Ok(h) = key[keys::INTENT_PREFIX.len()..].parse::<FihHash>() else {
            continue;
        };
        candidates.push((h, st));
    }
    let hashes: Vec<FihHash> = candidates.iter().map(|(h, _)| *h).collect();
    // The window ends where the records read reach the byte budget.
    let raw = load_raw(core, &hashes, RESPONSE_BYTES)?;
    let (exhausted, window_end) = match raw.len() < hashes.len() {
        true => (false, hashes.get(raw.len().wrapping_sub(1)).copied()),
        false => (
            exhausted,
            state_keys
                .last()
                .and_then(|k| k[keys::INTENT_PREFIX.len()..].parse().ok()),
        ),
    };
    let mut records = Vec::with_capacity(raw.len());
    for (h, raw) in hashes.iter().zip(&raw) {
        records.push(capped::decode(core.limits(), h, raw)?);
    }
    let sort_key = |item: &IntentItem| {
        (
            std::cmp::Reverse(item.priority),
            item.record.content().time(),
            item.record.hash(),
        )
    };
    let mut items: Vec<IntentItem> = Vec::new();
    for ((_, st), record) in candidates.into_iter().zip(records) {
        let Content::Intent(intent) = record.content() else {
            continue;
        };
        if topic.is_some_and(|t| !intent.topic.starts_with(t)) {
            continue;
        }
        let priority = CompositeColdStorage::<K, B, O>::priority_of(&hints, intent);
        items.push(IntentItem {
            record,
            state: st,
            priority,
        });
    }
    items.sort_by_key(sort_key);
    if let Some((p, t, h)) = cursor.last {
        let last = (std::cmp::Reverse(p), t, h);
        items.retain(|i| sort_key(i) > last);
    }
    items.truncate(limit + 1);
    let mut out = CappedArray::new("{\"intents\":[");
    let mut last = None;
    for item in &items {
        if out.len() == limit || !out.push(item) {
            break;
        }
        last = Some((
            item.priority,
            item.record.content().time(),
            item.record.hash(),
        ));
    }
    let more_in_window = items.len() > out.len();
    let next = if more_in_window {
        last.map(|last| IntentCursor {
            window: cursor.window,
            last: Some(last),
        })
    } else if !exhausted {
        window_end.map(|h| IntentCursor {
            window: Some(h),
            last: None,
        })
    } else {
        None
    };
    let next = serde_json::to_string(&next.map(|c| c.render())).unwrap_or_default();
    Ok(out.finish(&format!(",\"next\":{next}}}")))
}
