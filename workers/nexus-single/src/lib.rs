//! neXus on Cloudflare Workers (design §6 phases 1–2): the `/v1` API of `nexus-api`,
//! served over Workers KV (immutable records, write-once index entries), R2 (blobs) and
//! the [`NexusCoordinatorDO`] Durable Object (every mutable state, the commit log, the
//! commit point), through the IoBuffer bridge of [`bridge`]: each request's job runs
//! on the same sans-IO `nexus_iobuf::Driver` as on the native server, and the bridge
//! performs the KV, R2 and coordinator calls it asks for.
//!
//! Every answer carries the header [`METRICS_HEADER`]: wall time and the KV, R2 and
//! Durable Object operations the request made.
//!
//! Configuration (`[vars]` of `wrangler.toml`):
//! - `NEXUS_OPEN`: `"true"` accepts any valid author key (local work);
//! - `NEXUS_AUTHORS`: comma-separated hex author keys allowed to write otherwise;
//! - `NEXUS_DO_LOCATION`: optional location hint for the coordinator (`weur`, `enam`, …);
//! - `NEXUS_PUBLIC_STATUS`: `"true"` serves `/v1/health` and `/metrics` without the
//!   read token;
//! - `NEXUS_FLUSH_ENTRIES`, `NEXUS_FLUSH_SECS`, `NEXUS_SNAPSHOT_EVERY`: when the
//!   coordinator archives its log to R2 and snapshots its hot state ([`archive`]).
//!
//! Secrets (`wrangler secret put NAME`):
//! - `NEXUS_READ_TOKENS`: the bearer tokens reads need, one a line (unset: reads are
//!   public), checked with [`nexus_api::ReadAccess`] as on the native host;
//! - `NEXUS_LOG_KEY`: the log key that signs checkpoints (`GET /v1/checkpoint`,
//!   spec/tlog.md), its 32-byte Ed25519 seed as 64 hex digits (unset or malformed: that
//!   route answers `503 no_log_key`; proofs are served either way);
//! - `NEXUS_ADMIN_TOKENS` (one a line): the bearer tokens of `POST /admin/restore`,
//!   which restores an empty coordinator from the archives now (unset: the route does
//!   not exist).
//!
//! Binding [`AUTHOR_LIMIT_BINDING`] (`[[ratelimits]]`, optional): the per-author write
//! limit, through the platform's rate limiter.

#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![warn(clippy::unwrap_used)]

pub mod archive;
pub mod bridge;
pub mod coordinator;
pub mod events;
pub mod governance;
pub mod kv;
pub mod protocol;
pub mod r2;
pub mod repair;
pub mod shards;
#[cfg(feature = "test-hooks")]
pub mod testing;

use std::collections::BTreeSet;
use std::sync::OnceLock;

use worker::{Context, Date, Env, Headers, Request, Response, Result, event};

use nexus_api::{
    Api, ApiConfig, Governor, Prepared, ReadAccess, Route, body_too_large, route_for, served_route,
    storage_error,
};
use nexus_core::AuthorKey;

pub use bridge::{Counters, Faults, Host};
pub use coordinator::NexusCoordinatorDO;
pub use governance::NexusGovernanceDO;

/// The KV namespace binding.
pub const KV_BINDING: &str = "NEXUS_KV";
/// The R2 bucket binding.
pub const R2_BINDING: &str = "NEXUS_BLOBS";
/// The coordinator Durable Object namespace binding.
pub const DO_BINDING: &str = "COORDINATOR";
/// Name of the one coordinator instance (a single shard).
pub const COORDINATOR_NAME: &str = "coordinator";
/// Response header with the request's costs: `wall_ms=…;kv_reads=…;kv_lists=…;kv_writes=…;
/// r2_reads=…;r2_writes=…;do_calls=…;commits=…;conflicts=…;rounds=…;attempts=…;
/// gov_calls=…` (`gov_calls`: calls to the governance Durable Object).
pub const METRICS_HEADER: &str = "x-nexus-metrics";

/// The rate-limit binding that counts writes per author key (Workers Rate Limiting:
/// a fixed window per Cloudflare location, see `wrangler.toml`).
pub const AUTHOR_LIMIT_BINDING: &str = "NEXUS_AUTHOR_LIMIT";
/// `Retry-After` of a write over the author limit: the binding's window (its `period`
/// in `wrangler.toml`), since the binding does not say when the window resets.
pub const AUTHOR_LIMIT_RETRY_S: u64 = 10;

/// The API of this isolate (its `/metrics` counts what this isolate served).
static API: OnceLock<Api> = OnceLock::new();
/// Who may read, from the `NEXUS_READ_TOKENS` secret.
static READ_ACCESS: OnceLock<ReadAccess> = OnceLock::new();

/// The API of this isolate, configured from `env` on first use.
pub(crate) fn api(env: &Env) -> &'static Api {
    API.get_or_init(|| Api::new(config(env)))
}

fn read_access(env: &Env) -> ReadAccess {
    let tokens = env
        .secret("NEXUS_READ_TOKENS")
        .map(|s| s.to_string())
        .unwrap_or_default();
    let public_status = var(env, "NEXUS_PUBLIC_STATUS").is_some_and(|v| v.trim() == "true");
    ReadAccess::from_token_file(&tokens).with_public_status(public_status)
}

fn var(env: &Env, name: &str) -> Option<String> {
    env.var(name).ok().map(|v| v.to_string())
}

/// The API configuration from the Worker's variables. Unparsable author keys are
/// skipped with a log line (they could never sign anything).
fn config(env: &Env) -> ApiConfig {
    let open = var(env, "NEXUS_OPEN").is_some_and(|v| v.trim() == "true");
    let number = |name: &str, default: usize| match var(env, name) {
        None => default,
        Some(v) => v.trim().parse().unwrap_or_else(|e| {
            worker::console_warn!("{name}: {v:?} is not a number ({e}); using {default}");
            default
        }),
    };
    let defaults = ApiConfig::default();
    ApiConfig {
        open,
        allowed: keys(env, "NEXUS_AUTHORS"),
        operators: keys(env, "NEXUS_OPERATORS"),
        hint_quota: number("NEXUS_HINT_QUOTA", defaults.hint_quota),
        operator_hint_quota: number("NEXUS_OPERATOR_HINT_QUOTA", defaults.operator_hint_quota),
        log_key: log_key(env),
        ..defaults
    }
}

/// The log key from the `NEXUS_LOG_KEY` secret; a malformed one is reported and not
/// used (checkpoints then answer `503 no_log_key`, never a checkpoint by another key).
pub(crate) fn log_key(env: &Env) -> Option<nexus_tlog::LogKey> {
    let text = env.secret("NEXUS_LOG_KEY").ok()?.to_string();
    if text.trim().is_empty() {
        return None;
    }
    match text.parse() {
        Ok(key) => Some(key),
        Err(e) => {
            worker::console_error!("NEXUS_LOG_KEY: {e}; no checkpoint is signed");
            None
        }
    }
}

/// The author keys of the comma-separated variable `name`.
fn keys(env: &Env, name: &str) -> BTreeSet<AuthorKey> {
    let mut keys = BTreeSet::new();
    for key in var(env, name)
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|k| !k.is_empty())
    {
        match key.parse::<AuthorKey>() {
            Ok(k) => {
                keys.insert(k);
            }
            Err(e) => worker::console_warn!("{name}: skipping {key}: {e}"),
        }
    }
    keys
}

/// `POST path` to the coordinator instance `name`, its answer as it is.
pub(crate) async fn call_coordinator(env: &Env, name: &str, path: &str) -> Result<Response> {
    let stub = env.durable_object(DO_BINDING)?.get_by_name(name)?;
    let mut init = worker::RequestInit::new();
    init.with_method(worker::Method::Post);
    let req = Request::new_with_init(&format!("https://coordinator{path}"), &init)?;
    stub.fetch_with_request(req).await
}

/// `POST /admin/restore`: asks the coordinator to restore its empty storage from the
/// archives in the bucket now (spec/archive.md, "On the Worker"). Needs `Authorization:
/// Bearer <token>` with one of the `NEXUS_ADMIN_TOKENS` secret's tokens (one a line);
/// without that secret the route does not exist.
async fn admin_restore(req: &Request, env: &Env) -> Result<Response> {
    let tokens = env
        .secret("NEXUS_ADMIN_TOKENS")
        .map(|s| s.to_string())
        .unwrap_or_default();
    let access = ReadAccess::from_token_file(&tokens);
    let refuse = |e: nexus_api::ApiError, extra: &[(&str, &str)]| {
        into_worker_with(&e.to_response(), &Counters::default(), 0, extra)
    };
    if !access.requires_token() {
        return refuse(
            nexus_api::ApiError::new(
                nexus_api::ErrorCode::NoRoute,
                "no route POST /admin/restore (set the NEXUS_ADMIN_TOKENS secret to enable it)",
            ),
            &[],
        );
    }
    let authorization = req.headers().get("authorization").ok().flatten();
    if let Err(e) = access.check_bearer(authorization.as_deref().map(str::as_bytes)) {
        return refuse(e, &[("www-authenticate", "Bearer")]);
    }
    call_coordinator(env, COORDINATOR_NAME, protocol::RESTORE_PATH).await
}

pub(crate) fn host(env: &Env, faults: Faults) -> Result<Host> {
    let shards =
        shards::ShardConfig::from_env(env).map_err(|e| worker::Error::RustError(e.to_string()))?;
    Host::new(
        env.kv(KV_BINDING)?,
        env.bucket(R2_BINDING)?,
        shards.stubs(env)?,
        shards.lock_ttl_ms,
        faults,
    )
    .map_err(|e| worker::Error::RustError(e.to_string()))
}

#[cfg(feature = "test-hooks")]
fn faults(req: &Request) -> Faults {
    let header = |name: &str| req.headers().get(name).ok().flatten();
    Faults {
        fail_commit_after_ops: header("x-nexus-test-fail-commit-after")
            .and_then(|v| v.parse().ok()),
        drop_index_writes: header("x-nexus-test-drop-index").is_some(),
        kv_misses_records: header("x-nexus-test-kv-misses-records").is_some(),
        stall_after_prewrite: header("x-nexus-fault").as_deref() == Some("stall-after-prewrite"),
    }
}

#[cfg(not(feature = "test-hooks"))]
fn faults(_req: &Request) -> Faults {
    Faults::default()
}

fn into_worker(r: &nexus_api::Response, costs: &Counters, wall_ms: u64) -> Result<Response> {
    into_worker_with(r, costs, wall_ms, &[])
}

fn into_worker_with(
    r: &nexus_api::Response,
    costs: &Counters,
    wall_ms: u64,
    extra: &[(&str, &str)],
) -> Result<Response> {
    let headers = Headers::new();
    headers.set("content-type", r.content_type)?;
    for (name, value) in extra {
        headers.set(name, value)?;
    }
    headers.set(
        METRICS_HEADER,
        &format!(
            "wall_ms={wall_ms};kv_reads={};kv_lists={};kv_writes={};r2_reads={};r2_writes={};do_calls={};commits={};conflicts={};rounds={};attempts={};gov_calls={}",
            costs.kv_reads,
            costs.kv_lists,
            costs.kv_writes,
            costs.r2_reads,
            costs.r2_writes,
            costs.do_calls,
            costs.commits,
            costs.conflicts,
            costs.rounds,
            costs.attempts,
            costs.gov_calls
        ),
    )?;
    Ok(Response::from_bytes(r.body.clone())?
        .with_status(r.status)
        .with_headers(headers))
}

/// A static asset of the explorer, with its content type, security policy and caching.
fn explorer_asset(asset: nexus_explorer::Asset, head: bool) -> Result<Response> {
    let headers = Headers::new();
    headers.set("content-type", asset.content_type)?;
    headers.set(
        "content-security-policy",
        nexus_explorer::CONTENT_SECURITY_POLICY,
    )?;
    headers.set("cache-control", nexus_explorer::CACHE_CONTROL)?;
    headers.set("x-content-type-options", "nosniff")?;
    let body = if head {
        Vec::new()
    } else {
        asset.body.to_vec()
    };
    Ok(Response::from_bytes(body)?.with_headers(headers))
}

/// Whether a signed write's author is over the per-author limit of the
/// [`AUTHOR_LIMIT_BINDING`] binding. Without the binding, or when it fails, the write
/// is not limited (logged): the limit protects capacity, it does not decide anything.
///
/// The binding counts calls, not weights: a batch asks once for each distinct author of
/// its items (the native host takes one token per item).
async fn over_author_limit(env: &Env, job: &nexus_api::Job) -> bool {
    if !job.is_write() {
        return false;
    }
    let mut authors = job.authors();
    authors.sort_unstable();
    authors.dedup();
    if authors.is_empty() {
        return false;
    }
    let Ok(limiter) = env.rate_limiter(AUTHOR_LIMIT_BINDING) else {
        return false;
    };
    for author in authors {
        match limiter.limit(author.to_string()).await {
            Ok(outcome) if !outcome.success => return true,
            Ok(_) => {}
            Err(e) => worker::console_warn!("{AUTHOR_LIMIT_BINDING}: {e}"),
        }
    }
    false
}

/// Runs `job` through the bridge under the contract's governance
/// ([`governance`]): a proposal or claim fails closed (`503 governance_pending`) while
/// the contract's Hints are not committed; a committed write is shown to the
/// contract's evaluator before it is answered; health reports a governance failure.
async fn run_governed(
    env: &Env,
    api: &Api,
    host: &Host,
    job: &nexus_api::Job,
) -> nexus_api::Response {
    let route = job.route();
    if route == Route::DeployContract && host.shards() > 1 {
        // The governance object reads shard 0's log only: over N shards it would miss
        // the Facts committed elsewhere (spec/shards.md, "Not done here").
        return nexus_api::not_implemented(
            route,
            "contract governance over more than one coordinator shard is not implemented              yet: deploy contracts on a Worker with NEXUS_SHARDS = 1",
        );
    }
    if job.is_write()
        && Governor::is_gated(route)
        && let Err(e) = governance::gate(env, host, route).await
    {
        return e.to_response();
    }
    let r = host.run(api, job, Date::now().as_millis()).await;
    if job.is_write() && r.status / 100 == 2 {
        governance::after_write(env, host, route, job.record()).await;
        r
    } else if route == Route::Health {
        governance::health(env, host, r).await
    } else {
        r
    }
}

/// The Worker's entry point: every request, answered in the API's JSON shapes (a
/// binding failure is a `500 storage` error, never a bare 500).
#[event(fetch)]
pub async fn fetch(mut req: Request, env: Env, _ctx: Context) -> Result<Response> {
    let started = Date::now().as_millis();
    let api = api(&env);
    let url = req.url()?;
    let method = req.method().to_string();
    #[cfg(feature = "test-hooks")]
    match url.path() {
        "/__test/conformance" => return testing::conformance_route(&env).await,
        "/__test/tiers" => {
            return Response::from_json(&testing::run_tier_conformance(&env).await?);
        }
        "/__test/archive" => return testing::archive_route(&env, url.query()).await,
        "/__test/wipe" => return testing::wipe_route(&env, url.query()).await,
        "/__test/parts" => return testing::parts_route(&env, url.query()).await,
        "/__test/governance" => {
            // `?fail=1` makes every catch-up of the governance object fail, `?fail=0`
            // stops it.
            let fail = url.query().is_some_and(|q| q.contains("fail=1"));
            return match governance::set_failing(&env, fail).await {
                Ok(status) => Response::from_json(&status),
                Err(e) => Response::error(e, 500),
            };
        }
        "/__test/events" => {
            let read = events::READ_UPTO.load(std::sync::atomic::Ordering::Relaxed);
            return Response::from_json(&serde_json::json!({ "read_upto": read }));
        }
        _ => {}
    }
    if url.path() == "/admin/restore" && method == "POST" {
        return admin_restore(&req, &env).await;
    }
    // The explorer's page and assets (public: they hold no data; see nexus-explorer).
    if let Some(asset) = nexus_explorer::asset(&method, url.path()) {
        return explorer_asset(asset, method == "HEAD");
    }
    // Reads may need a bearer token: checked before the body is read.
    let access = READ_ACCESS.get_or_init(|| read_access(&env));
    let authorization = req.headers().get("authorization").ok().flatten();
    if let Err(e) = access.check(
        route_for(&method, url.path()),
        authorization.as_deref().map(str::as_bytes),
    ) {
        let r = e.to_response();
        let wall_ms = Date::now().as_millis().saturating_sub(started);
        api.metrics().observe_response(
            route_for(&method, url.path()),
            &r,
            wall_ms.saturating_mul(1_000),
        );
        return into_worker_with(
            &r,
            &Counters::default(),
            wall_ms,
            &[("www-authenticate", "Bearer")],
        );
    }
    // A body declared larger than the limit is refused before it is read (it would be
    // copied whole into the isolate's memory first): the same answer `prepare` gives
    // once it has the body, for a route that takes one.
    let limit = api.config().max_request_bytes;
    let declared = req
        .headers()
        .get("content-length")
        .ok()
        .flatten()
        .and_then(|v| v.trim().parse::<usize>().ok());
    if let (Some(size), Some(route)) = (declared, served_route(&method, url.path()))
        && size > limit
    {
        let r = body_too_large(size, limit).to_response();
        let wall_ms = Date::now().as_millis().saturating_sub(started);
        api.metrics()
            .observe_response(route, &r, wall_ms.saturating_mul(1_000));
        return into_worker(&r, &Counters::default(), wall_ms);
    }
    let body = match req.bytes().await {
        Ok(b) => b,
        Err(e) => {
            let r = storage_error(&format!("request body could not be read: {e}"));
            return into_worker(&r, &Counters::default(), 0);
        }
    };
    let request = nexus_api::Request {
        method,
        path: url.path().to_owned(),
        query: url.query().map(str::to_owned),
        body,
    };
    let (route, response, costs) = match api.prepare(&request) {
        Prepared::Respond(route, r) => (route, r, Counters::default()),
        Prepared::Events(_) => {
            // Again with the header, which the API's request does not carry.
            let last = req.headers().get("last-event-id").ok().flatten();
            return match nexus_api::EventsQuery::parse(url.query(), last.as_deref()) {
                Ok(q) => {
                    api.metrics().observe(Route::Events, 200, None, 0);
                    events::respond(env, api, q)
                }
                Err(e) => {
                    let r = e.to_response();
                    api.metrics().observe_response(Route::Events, &r, 0);
                    into_worker(&r, &Counters::default(), 0)
                }
            };
        }
        Prepared::Metrics => (
            Route::Metrics,
            api.metrics().response(),
            Counters::default(),
        ),
        Prepared::Job(job) if over_author_limit(&env, &job).await => {
            api.metrics().record_rate_limited("author");
            let r = nexus_api::rate_limited("author", AUTHOR_LIMIT_RETRY_S * 1_000).to_response();
            let wall_ms = Date::now().as_millis().saturating_sub(started);
            api.metrics()
                .observe_response(job.route(), &r, wall_ms.saturating_mul(1_000));
            let retry = AUTHOR_LIMIT_RETRY_S.to_string();
            return into_worker_with(
                &r,
                &Counters::default(),
                wall_ms,
                &[("retry-after", &retry)],
            );
        }
        Prepared::Job(job) => match host(&env, faults(&req)) {
            Ok(host) => {
                let mut r = run_governed(&env, api, &host, &job).await;
                if job.route() == Route::Health {
                    r = shards::with_shard_count(r, host.shards());
                }
                (job.route(), r, host.counters())
            }
            Err(e) => (
                job.route(),
                storage_error(&format!("bindings: {e}")),
                Counters::default(),
            ),
        },
    };
    // Commits and conflicts are counted by `Api::finish` (in `Host::run`).
    let wall_ms = Date::now().as_millis().saturating_sub(started);
    api.metrics()
        .observe_response(route, &response, wall_ms.saturating_mul(1_000));
    into_worker(&response, &costs, wall_ms)
}
