//! The OpenAPI 3.1 document, generated from the types in [`crate::wire`] and the
//! operations below (which exist only to be described).

#![allow(dead_code)] // The operation stubs are read by the derive, never called.

use utoipa::openapi::schema::OneOfBuilder;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{
    ContentBuilder, HeaderBuilder, ObjectBuilder, Ref, RefOr, ResponseBuilder, Type,
};
use utoipa::{Modify, OpenApi};

use crate::wire::*;

/// The API description (`utoipa` derive); [`openapi_json`] renders it.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "neXus",
        version = "1",
        description = "A shared, verifiable blackboard for agents: signed, content-addressed \
                       Intents, Facts and Hints, and a compare-and-swap Intent lifecycle with \
                       leases and fencing tokens. See spec/api.md.",
        license(name = "Apache-2.0", identifier = "Apache-2.0")
    ),
    paths(
        propose_intent,
        submit_fact,
        submit_hint,
        claim,
        renew,
        withdraw,
        retract_hint,
        batch,
        list_intents,
        get_intent,
        list_facts,
        get_record,
        provenance,
        list_hints,
        log,
        events,
        health,
        metrics,
        openapi,
        deploy_contract,
        get_contract,
        contract_history,
        checkpoint,
        inclusion_proof,
        consistency_proof
    ),
    components(schemas(
        Created,
        LeaseBody,
        WithdrawnBody,
        RetractedBody,
        BatchResult,
        BatchBody,
        IntentItem,
        IntentList,
        FactList,
        RecordBody,
        ProvenanceBody,
        HintItem,
        HintList,
        DeployedBody,
        ContractRule,
        ContractBody,
        ContractHistoryBody,
        LogItem,
        LogBody,
        Health,
        ErrorBody,
        ErrorDetail,
        WireRecord,
        WireAction,
        WireIntentState,
        WireResolves,
        WireBatch,
        WireBatchItem
    )),
    modifiers(&HostLimits)
)]
pub struct ApiDoc;

/// The answers of a host's own limits, on every operation (`spec/api.md`, "Limits of
/// a host"): `429 rate_limited` with `Retry-After` and `503 too_many_connections`
/// everywhere, `408 request_timeout` where a body is sent, and `401 unauthorized`
/// (with the optional bearer scheme `read_token`) on every read; and
/// `507 insufficient_storage` on every write (every `POST`), when the host's storage is
/// full. An operation with a `503` of its own (`/v1/health`, degraded) answers either.
struct HostLimits;

impl Modify for HostLimits {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let error = |description: &str| {
            ResponseBuilder::new().description(description).content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("ErrorBody")))
                    .build(),
            )
        };
        let retry_after = |what: &str| {
            HeaderBuilder::new()
                .schema(Some(ObjectBuilder::new().schema_type(Type::Integer)))
                .description(Some(format!("Seconds to wait before {what}")))
                .build()
        };
        let limited = error(
            "rate_limited (names scope: author or address, and retry_after_ms): over the \
             host's rate limit",
        )
        .header("Retry-After", retry_after("the next request is allowed"))
        .build();
        let busy = error("too_many_connections (names limit): over the host's connection cap")
            .header("Retry-After", retry_after("retrying"))
            .build();
        let late =
            error("request_timeout (names limit_ms): the body did not arrive in time").build();
        let denied = error("unauthorized: this host needs a bearer token for reads").build();
        let full = error(
            "insufficient_storage: the host's storage is full; nothing was written (retry \
             once space is freed)",
        )
        .build();
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "read_token",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
        let anonymous = SecurityRequirement::default();
        let token = SecurityRequirement::new("read_token", Vec::<String>::new());
        for item in doc.paths.paths.values_mut() {
            if let Some(op) = item.post.as_mut() {
                let r = &mut op.responses.responses;
                r.insert("408".into(), late.clone().into());
                r.insert("429".into(), limited.clone().into());
                r.insert("503".into(), busy.clone().into());
                r.insert("507".into(), full.clone().into());
            }
            if let Some(op) = item.get.as_mut() {
                let r = &mut op.responses.responses;
                r.entry("401".into())
                    .or_insert_with(|| denied.clone().into());
                r.insert("429".into(), limited.clone().into());
                match r.get_mut("503") {
                    // The operation's own 503 (a degraded health): its body or the cap's.
                    Some(RefOr::T(own)) => {
                        own.description = format!("{}; or {}", busy.description, own.description);
                        for content in own.content.values_mut() {
                            if let RefOr::T(content) = content {
                                let mine = content.schema.take();
                                let mut either = OneOfBuilder::new();
                                if let Some(mine) = mine {
                                    either = either.item(mine);
                                }
                                content.schema =
                                    Some(either.item(Ref::from_schema_name("ErrorBody")).into());
                            }
                        }
                        own.headers.extend(busy.headers.clone());
                    }
                    _ => {
                        r.insert("503".into(), busy.clone().into());
                    }
                }
                op.security = Some(vec![anonymous.clone(), token.clone()]);
            }
        }
    }
}

/// The OpenAPI 3.1 document as pretty JSON (what `GET /v1/openapi.json` serves and
/// `spec/openapi.json` holds).
pub fn openapi_json() -> String {
    static DOC: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DOC.get_or_init(|| {
        let mut s = ApiDoc::openapi()
            .to_pretty_json()
            .unwrap_or_else(|_| "{}".to_owned());
        s.push('\n');
        s
    })
    .clone()
}

/// Propose an Intent.
///
/// The body is a signed Intent record. It must be admissible (no active deny Hint
/// selects it) and its parents must be committed.
#[utoipa::path(post, path = "/v1/intents", tag = "writes", request_body = WireRecord,
    responses(
        (status = 201, description = "Committed", body = Created),
        (status = 200, description = "Already committed (duplicate)", body = Created),
        (status = 400, description = "malformed_json, invalid_record, hash_mismatch, too_many_parents", body = ErrorBody),
        (status = 401, description = "bad_signature", body = ErrorBody),
        (status = 403, description = "inadmissible (names hint, reason), author_not_allowed", body = ErrorBody),
        (status = 413, description = "body_too_large", body = ErrorBody),
        (status = 422, description = "unknown_parent (names parent), wrong_kind", body = ErrorBody),
        (status = 503, description = "governance_pending: the contract's Hints are not committed", body = ErrorBody),
    ))]
fn propose_intent() {}

/// Submit a Fact.
///
/// With `resolves` it resolves its Intent in the same atomic commit; the author must
/// hold a live claim with that fencing token.
#[utoipa::path(post, path = "/v1/facts", tag = "writes", request_body = WireRecord,
    responses(
        (status = 201, description = "Committed", body = Created),
        (status = 200, description = "Already committed (duplicate)", body = Created),
        (status = 400, description = "malformed_json, invalid_record, hash_mismatch, too_many_parents", body = ErrorBody),
        (status = 401, description = "bad_signature", body = ErrorBody),
        (status = 403, description = "author_not_allowed", body = ErrorBody),
        (status = 409, description = "not_holder, stale_token, lease_expired, already_resolved, withdrawn, conflict", body = ErrorBody),
        (status = 413, description = "body_too_large", body = ErrorBody),
        (status = 422, description = "unknown_parent, wrong_kind", body = ErrorBody),
    ))]
fn submit_fact() {}

/// Submit a Hint (it becomes active).
///
/// `deny` and `allow` Hints need an operator key (an agent may post `priority` Hints);
/// each key has a quota of active Hints.
#[utoipa::path(post, path = "/v1/hints", tag = "writes", request_body = WireRecord,
    responses(
        (status = 201, description = "Committed", body = Created),
        (status = 200, description = "Already committed (duplicate)", body = Created),
        (status = 400, description = "malformed_json, invalid_record, hash_mismatch", body = ErrorBody),
        (status = 401, description = "bad_signature", body = ErrorBody),
        (status = 403, description = "author_not_allowed, hint_not_permitted", body = ErrorBody),
        (status = 409, description = "too_many_hints, conflict", body = ErrorBody),
        (status = 422, description = "unknown_parent, wrong_kind", body = ErrorBody),
        (status = 429, description = "hint_quota (names author, active, quota)", body = ErrorBody),
    ))]
fn submit_hint() {}

/// Retract a Hint: its author, or an operator key (never a contract's Hint).
#[utoipa::path(post, path = "/v1/hints/{id}/retract", tag = "writes", request_body = WireAction,
    params(("id" = String, Path, description = "Hint hash or a prefix of it (≥ 8 hex) that the action's `hint` starts with")),
    responses(
        (status = 200, description = "Retracted: no longer in force", body = RetractedBody),
        (status = 400, description = "clock_skew, bad_request", body = ErrorBody),
        (status = 401, description = "bad_signature", body = ErrorBody),
        (status = 403, description = "hint_not_permitted, author_not_allowed", body = ErrorBody),
        (status = 404, description = "not_found (no such Hint, or not in force)", body = ErrorBody),
        (status = 409, description = "conflict", body = ErrorBody),
        (status = 422, description = "wrong_kind", body = ErrorBody),
    ))]
fn retract_hint() {}

/// Commit several records and actions at once, all or nothing.
///
/// The items apply in order, each seeing what the ones before it did (propose an
/// Intent, then claim it; resolve an Intent and propose its follow-ups), checked as
/// their own routes check them, and commit in one atomic commit, their log entries
/// consecutive. If any item fails, nothing is stored and the error names the item
/// (`item`, from 0) with that item's own code and status.
#[utoipa::path(post, path = "/v1/batch", tag = "writes", request_body = WireBatch,
    responses(
        (status = 200, description = "Every item committed; one result per item, in order", body = BatchBody),
        (status = 400, description = "malformed_json, bad_request (not 1 to 64 items, or a malformed item), invalid_record, hash_mismatch, too_many_parents, selector_too_large, lease_out_of_range, clock_skew, legacy_action (each names the item)", body = ErrorBody),
        (status = 401, description = "bad_signature (names the item)", body = ErrorBody),
        (status = 403, description = "inadmissible, not_proposer, wrong_deployment, author_not_allowed, hint_not_permitted (each names the item)", body = ErrorBody),
        (status = 404, description = "not_found (names the item)", body = ErrorBody),
        (status = 409, description = "already_claimed, lease_expired, not_holder, stale_token, already_resolved, withdrawn, replayed, too_many_hints (each names the item), conflict", body = ErrorBody),
        (status = 413, description = "body_too_large", body = ErrorBody),
        (status = 422, description = "unknown_parent, wrong_kind (names the item)", body = ErrorBody),
        (status = 429, description = "hint_quota (names the item)", body = ErrorBody),
        (status = 503, description = "governance_pending: the contract's Hints are not committed", body = ErrorBody),
    ))]
fn batch() {}

/// Claim an Intent (or take it over once its lease lapsed).
#[utoipa::path(post, path = "/v1/intents/{id}/claim", tag = "writes", request_body = WireAction,
    params(("id" = String, Path, description = "Intent hash or unambiguous prefix (≥ 8 hex)")),
    responses(
        (status = 200, description = "Claimed; the fencing token grew by one", body = LeaseBody),
        (status = 400, description = "lease_out_of_range, clock_skew, ambiguous_id, bad_request", body = ErrorBody),
        (status = 401, description = "bad_signature", body = ErrorBody),
        (status = 403, description = "inadmissible, author_not_allowed", body = ErrorBody),
        (status = 404, description = "not_found", body = ErrorBody),
        (status = 409, description = "already_claimed (names holder, lease_until, token), already_resolved, withdrawn, conflict", body = ErrorBody),
        (status = 503, description = "governance_pending: the contract's Hints are not committed", body = ErrorBody),
    ))]
fn claim() {}

/// Renew a held claim (same fencing token, lease extended from now).
#[utoipa::path(post, path = "/v1/intents/{id}/renew", tag = "writes", request_body = WireAction,
    params(("id" = String, Path, description = "Intent hash or unambiguous prefix (≥ 8 hex)")),
    responses(
        (status = 200, description = "Renewed", body = LeaseBody),
        (status = 400, description = "lease_out_of_range, clock_skew, bad_request", body = ErrorBody),
        (status = 401, description = "bad_signature", body = ErrorBody),
        (status = 404, description = "not_found", body = ErrorBody),
        (status = 409, description = "not_holder, stale_token, lease_expired, already_resolved, withdrawn", body = ErrorBody),
    ))]
fn renew() {}

/// Withdraw an Intent (its proposer only).
#[utoipa::path(post, path = "/v1/intents/{id}/withdraw", tag = "writes", request_body = WireAction,
    params(("id" = String, Path, description = "Intent hash or unambiguous prefix (≥ 8 hex)")),
    responses(
        (status = 200, description = "Withdrawn", body = WithdrawnBody),
        (status = 400, description = "clock_skew, bad_request", body = ErrorBody),
        (status = 403, description = "not_proposer, author_not_allowed", body = ErrorBody),
        (status = 404, description = "not_found", body = ErrorBody),
        (status = 409, description = "already_resolved, withdrawn", body = ErrorBody),
    ))]
fn withdraw() {}

/// List Intents.
///
/// Ordered by Hint priority (highest first), then time and hash, across pages; beyond
/// 1,000 Intents the order holds within each window of 1,000 (in hash order), and the
/// windows follow one another. A lapsed claim counts as available.
#[utoipa::path(get, path = "/v1/intents", tag = "reads",
    params(
        ("state" = Option<String>, Query, description = "available, claimed, resolved or withdrawn"),
        ("topic" = Option<String>, Query, description = "Topic; subtopics included"),
        ("limit" = Option<u64>, Query, minimum = 1, maximum = 500, description = "Default 50"),
        ("cursor" = Option<String>, Query, description = "`next` of the previous page"),
    ),
    responses(
        (status = 200, description = "A page", body = IntentList),
        (status = 400, description = "bad_request", body = ErrorBody),
    ))]
fn list_intents() {}

/// One Intent and its state: claim holder, lease, fencing token, resolution (as
/// `GET /v1/intents` lists it; a lapsed claim counts as available).
#[utoipa::path(get, path = "/v1/intents/{id}", tag = "reads",
    params(("id" = String, Path, description = "Intent hash or unambiguous prefix (≥ 8 hex)")),
    responses(
        (status = 200, description = "The Intent, its state and priority", body = IntentItem),
        (status = 400, description = "ambiguous_id, bad_request", body = ErrorBody),
        (status = 404, description = "not_found", body = ErrorBody),
        (status = 422, description = "wrong_kind: the record is not an Intent", body = ErrorBody),
    ))]
fn get_intent() {}

/// List Facts, oldest first.
///
/// With `topic`, subtopics are included, in one order: oldest first across the topic
/// and all its subtopics.
#[utoipa::path(get, path = "/v1/facts", tag = "reads",
    params(
        ("topic" = Option<String>, Query, description = "Topic; subtopics included"),
        ("since" = Option<u64>, Query, description = "Inclusive lower bound on time, ms"),
        ("until" = Option<u64>, Query, description = "Exclusive upper bound on time, ms"),
        ("limit" = Option<u64>, Query, minimum = 1, maximum = 500, description = "Default 50"),
        ("cursor" = Option<String>, Query, description = "`next` of the previous page"),
    ),
    responses(
        (status = 200, description = "A page", body = FactList),
        (status = 400, description = "bad_request", body = ErrorBody),
    ))]
fn list_facts() {}

/// One record.
#[utoipa::path(get, path = "/v1/records/{id}", tag = "reads",
    params(("id" = String, Path, description = "Record hash or unambiguous prefix (≥ 8 hex)")),
    responses(
        (status = 200, description = "The record", body = RecordBody),
        (status = 400, description = "ambiguous_id, bad_request", body = ErrorBody),
        (status = 404, description = "not_found", body = ErrorBody),
    ))]
fn get_record() {}

/// The provenance DAG above a record, breadth first.
#[utoipa::path(get, path = "/v1/records/{id}/provenance", tag = "reads",
    params(
        ("id" = String, Path, description = "Record hash or unambiguous prefix (≥ 8 hex)"),
        ("depth" = Option<u64>, Query, minimum = 0, maximum = 64, description = "Levels, default 16; at most 1,000 records"),
    ),
    responses(
        (status = 200, description = "The DAG", body = ProvenanceBody),
        (status = 400, description = "ambiguous_id, bad_request", body = ErrorBody),
        (status = 404, description = "not_found", body = ErrorBody),
    ))]
fn provenance() {}

/// Deploys a contract version: the body is a signed Fact under `nexus/contract` whose
/// body is `{"source": "<contract.nex>", "expected": "<hash in force>" | null}`
/// (see spec/contract.md). The pointer moves by compare-and-swap from `expected`.
#[utoipa::path(post, path = "/v1/contract", tag = "writes", request_body = WireRecord,
    responses(
        (status = 201, description = "Deployed: the new version is in force", body = DeployedBody),
        (status = 200, description = "This deployment was already applied (duplicate)", body = DeployedBody),
        (status = 400, description = "invalid_contract (names errors: line, column, message), malformed_json, invalid_record, bad_request", body = ErrorBody),
        (status = 401, description = "bad_signature", body = ErrorBody),
        (status = 403, description = "upgrade_refused (the version in force does not allow this key, or lacks its approval quorum), author_not_allowed", body = ErrorBody),
        (status = 409, description = "stale_contract (names current and expected): nothing changed; conflict", body = ErrorBody),
        (status = 413, description = "body_too_large", body = ErrorBody),
    ))]
fn deploy_contract() {}

/// The contract in force.
#[utoipa::path(get, path = "/v1/contract", tag = "reads",
    responses(
        (status = 200, description = "The version in force, its source and rules", body = ContractBody),
        (status = 404, description = "not_found: no contract is deployed", body = ErrorBody),
    ))]
fn get_contract() {}

/// Every deployed version, oldest first.
#[utoipa::path(get, path = "/v1/contract/history", tag = "reads",
    responses((status = 200, description = "The version history", body = ContractHistoryBody)))]
fn contract_history() {}

/// The active Hints.
#[utoipa::path(get, path = "/v1/hints", tag = "reads",
    responses((status = 200, description = "Hints in force", body = HintList)))]
fn list_hints() {}

/// The signed checkpoint of the log's Merkle tree now (spec/tlog.md): `checkpoint` is
/// a C2SP tlog-checkpoint signed note, `log_key` the signed-note verifier key.
#[utoipa::path(get, path = "/v1/checkpoint", tag = "reads",
    responses(
        (status = 200, description = "{origin, size, root, log_key, checkpoint}", body = Object),
        (status = 503, description = "no_log_key", body = ErrorBody),
    ))]
fn checkpoint() {}

/// The RFC 6962 inclusion proof (audit path, base64 hashes) of log entry `seq` (leaf
/// `seq - 1`) in the tree of `size` leaves, with the entry's leaf hash and the root.
#[utoipa::path(get, path = "/v1/proof/inclusion", tag = "reads",
    params(
        ("seq" = u64, Query, minimum = 1, description = "Log entry"),
        ("size" = Option<u64>, Query, description = "Tree size, default the tree now"),
    ),
    responses(
        (status = 200, description = "{seq, size, leaf_hash, root, proof}", body = Object),
        (status = 400, description = "bad_request", body = ErrorBody),
    ))]
fn inclusion_proof() {}

/// The RFC 6962 consistency proof from the tree of `from` leaves to the tree of `to`.
#[utoipa::path(get, path = "/v1/proof/consistency", tag = "reads",
    params(
        ("from" = u64, Query, description = "Older tree size"),
        ("to" = Option<u64>, Query, description = "Newer tree size, default the tree now"),
    ),
    responses(
        (status = 200, description = "{from, to, from_root, to_root, proof}", body = Object),
        (status = 400, description = "bad_request", body = ErrorBody),
    ))]
fn consistency_proof() {}

/// The commit log in order, records inlined (what `nexus export` writes).
#[utoipa::path(get, path = "/v1/log", tag = "reads",
    params(
        ("from" = Option<u64>, Query, description = "First sequence number, default 1"),
        ("limit" = Option<u64>, Query, minimum = 1, maximum = 1000, description = "Default 100"),
    ),
    responses(
        (status = 200, description = "Entries", body = LogBody),
        (status = 400, description = "bad_request", body = ErrorBody),
    ))]
fn log() {}

/// The commit log live, as Server-Sent Events: one `entry` event per committed log
/// entry (its `seq` is the event id, its data the entry as `GET /v1/log` gives it),
/// from `from` on, then each entry as it commits; a `: heartbeat` comment every 15 s.
/// A reconnecting client sends `Last-Event-ID` and resumes after it. A slow reader
/// misses nothing: the stream reads the log at the reader's pace.
#[utoipa::path(get, path = "/v1/events", tag = "reads",
    params(
        ("from" = Option<u64>, Query, description = "First sequence number, default 1"),
        ("topic" = Option<String>, Query, description = "Topic glob: records under it, and actions on Intents under it"),
        ("Last-Event-ID" = Option<u64>, Header, description = "Resume after this seq (overrides from)"),
    ),
    responses(
        (status = 200, description = "The event stream", content_type = "text/event-stream", body = String),
        (status = 400, description = "bad_request", body = ErrorBody),
    ))]
fn events() {}

/// Liveness and the commit log head.
///
/// `503` with status `degraded` while the store cannot write (reads go on).
#[utoipa::path(get, path = "/v1/health", tag = "reads",
    responses(
        (status = 200, description = "Up: status ok", body = Health),
        (status = 503, description = "the store is degraded (a Health body: status degraded, reason storage_full: writes answer 507 until space is freed, reads go on; or storage_unavailable)", body = Health),
    ))]
fn health() {}

/// Prometheus metrics: requests by route and status, errors by code, commits, CAS
/// conflicts, a latency histogram.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format 0.0.4", content_type = "text/plain", body = String)))]
fn metrics() {}

/// This document.
#[utoipa::path(get, path = "/v1/openapi.json", tag = "operations",
    responses((status = 200, description = "OpenAPI 3.1", content_type = "application/json", body = Object)))]
fn openapi() {}
