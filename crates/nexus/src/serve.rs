//! `nexus serve`: the HTTP host around `nexus-api` on the embedded redb store.
//!
//! Connections are accepted by [`crate::net`] (connection cap, TLS, header timeout).
//!
//! Request path:
//! 0. the client address's rate limit, then read access (a bearer token, when reads
//!    need one), both before the body is read ([`crate::limits`]);
//! 1. the body is read up to the API's limit, within the body timeout (`408`), (413 in the API's own error shape above it,
//!    after reading and dropping the rest so that the client can read the answer);
//! 2. [`Api::prepare`] parses and verifies (hash, Ed25519, allowlist) right on the
//!    runtime's worker threads (tens of microseconds; a hand-off would cost more);
//!    a write then takes a token of its author's rate limit;
//! 3. reads run on a blocking thread directly against the store (redb reads are MVCC
//!    snapshots);
//! 4. writes go to one [`SessionServer`] thread that executes queued jobs in groups and
//!    writes each group with ONE durable redb transaction (group commit): a write is
//!    acknowledged only after the transaction holding it is durable. The request's task
//!    awaits the answer ([`nexus_iobuf::SessionClient::submit_with`] completes a
//!    oneshot channel), so no thread waits per request;
//! 5. with a contract deployed, a committed write is handed to one governance thread
//!    that evaluates it and commits the contract's Hints ([`nexus_api::Governor`]);
//!    the write is answered once that is done, so its Hints are in force when its
//!    client hears of it. The contract never runs on the runtime's workers, so health
//!    and reads answer while it evaluates, and a catch-up holds no worker either.
//!
//! A full disk: writes answer `507 insufficient_storage`, reads go on, and
//! `GET /v1/health` answers `503 degraded` (`reason: storage_full`) until a write
//! succeeds again; the store reopens its database after the I/O error by itself (see
//! `nexus_store_redb`), so writes resume once space is freed, with no restart.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use axum::body::{Body, HttpBody as _};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response as AxumResponse;
use nexus_api::{
    Api, ApiConfig, ApiError, ErrorCode, Job, Metrics, Next, Prepared, ReadAccess, Request,
    Response, Route,
};
use nexus_core::{CompositeColdStorage, Deployment, Limits};
use nexus_iobuf::{ServerThread, SessionClient, SessionServer};
use nexus_store::Health as _;
use nexus_store_redb::RedbStore;

use crate::agents;
use crate::limits::{Rate, RateLimits};
use crate::net::{self, NetConfig};

/// Most write jobs written together in one durable transaction.
pub const GROUP_SIZE: usize = 256;

/// Settings of `nexus serve`.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Data directory (the redb file and the agent allowlist live here).
    pub data: PathBuf,
    /// Address to listen on.
    pub addr: SocketAddr,
    /// Accept any valid author key.
    pub open: bool,
    /// The store's page cache in bytes.
    pub cache_bytes: usize,
    /// Timeouts, connection and rate limits, read access, TLS.
    pub guard: Guard,
    /// Hint quotas and the contract's room.
    pub hints: HintArgs,
    /// The deployment id a new store gets (else 32 random hex digits); an existing
    /// store keeps its own, and must have this one if it is given.
    pub deployment: Option<Deployment>,
    /// The archive flusher (`None`: `--no-archive`).
    pub archive: Option<crate::archive::FlushOptions>,
}

/// The archive flags of `nexus serve` (spec/archive.md).
#[derive(Debug, Clone, clap::Args)]
pub struct ArchiveArgs {
    /// Where the commit log is archived, window by window, with snapshots (default:
    /// DATA/archive). Put it on another disk to survive losing the data directory;
    /// `nexus restore --from DIR` rebuilds a data directory from it.
    #[arg(long, value_name = "DIR")]
    pub archive_dir: Option<PathBuf>,
    /// A window closes after this many entries…
    #[arg(long, value_name = "N", default_value_t = nexus_core::archive::DEFAULT_WINDOW_ENTRIES,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub flush_entries: u64,
    /// …or once its first entry is this old, whichever comes first (`10s`, `500ms`).
    #[arg(long, value_name = "T", default_value = "10s", value_parser = crate::cli::parse_duration)]
    pub flush_secs: u64,
    /// Write a snapshot of the hot state after every this many windows (0: never).
    #[arg(long, value_name = "W", default_value_t = 16)]
    pub snapshot_every: u64,
    /// Do not archive.
    #[arg(long, conflicts_with = "archive_dir")]
    pub no_archive: bool,
}

impl ArchiveArgs {
    /// The flusher's settings for data directory `data`.
    pub fn options(&self, data: &Path) -> Result<Option<crate::archive::FlushOptions>> {
        if self.no_archive {
            return Ok(None);
        }
        Ok(Some(crate::archive::FlushOptions {
            dir: self
                .archive_dir
                .clone()
                .unwrap_or_else(|| data.join("archive")),
            policy: nexus_core::archive::WindowPolicy {
                max_entries: self.flush_entries,
                max_age_ms: self.flush_secs,
            },
            snapshot_every: self.snapshot_every,
        }))
    }
}

/// The Hint limits of `nexus serve`.
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct HintArgs {
    /// Most active Hints one agent key may have posted (`429 hint_quota` above it).
    #[arg(long, default_value_t = nexus_core::storage::DEFAULT_HINT_QUOTA, value_name = "N")]
    pub hint_quota: usize,
    /// Most active Hints one operator key may have posted.
    #[arg(long, default_value_t = nexus_core::storage::MAX_ACTIVE_HINTS, value_name = "N")]
    pub operator_hint_quota: usize,
    /// Most Hints the contract in force may have active at once (its own room, apart
    /// from posted Hints). Past it the contract's Hints cannot be committed: the error
    /// is logged, `/v1/health` answers `503 degraded` (`reason: governance`) and
    /// proposals and claims answer `503 governance_pending` until they are.
    #[arg(long, default_value_t = nexus_core::storage::MAX_CONTRACT_HINTS, value_name = "N")]
    pub max_contract_hints: usize,
}

/// What protects `nexus serve` from its clients (the flags of
/// [`crate::limits::GuardArgs`]).
#[derive(Debug, Clone)]
pub struct Guard {
    /// Time to receive a request's headers; also the idle keep-alive timeout and the
    /// TLS handshake's (see [`crate::net`]).
    pub header_timeout: Duration,
    /// Time to receive a request's body once its headers are in (`408` after it).
    pub body_timeout: Duration,
    /// Most connections served at once (`503` above it).
    pub max_connections: usize,
    /// Writes per author key.
    pub author_rate: Rate,
    /// Requests per client address.
    pub address_rate: Rate,
    /// Who may read.
    pub read_access: ReadAccess,
    /// Serve reads to anyone on a non-loopback address (must be said explicitly).
    pub public_reads: bool,
    /// TLS certificate chain and private key (PEM files).
    pub tls: Option<(PathBuf, PathBuf)>,
}

pub(crate) struct AppState {
    pub(crate) api: Api,
    pub(crate) store: RedbStore,
    /// What the event streams share ([`crate::events`]).
    pub(crate) streams: crate::events::Streams,
    writes: SessionClient,
    limits: RateLimits,
    read_access: ReadAccess,
    body_timeout: Duration,
    /// The governance thread's queue ([`governance_loop`]).
    governance: Sender<GovernTask>,
}

/// A committed write handed to the governance thread; `done` completes once the
/// contract's Hints it changed are committed (or the attempt failed and was logged).
struct GovernTask {
    route: Route,
    fact: Option<nexus_core::Record>,
    done: tokio::sync::oneshot::Sender<()>,
}

/// Milliseconds since the Unix epoch: the `now` every transition uses.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Opens the store and serves until SIGINT or SIGTERM, then finishes queued writes.
pub fn run(opts: ServeOptions) -> Result<()> {
    let guard = &opts.guard;
    if !opts.addr.ip().is_loopback() && !guard.read_access.requires_token() && !guard.public_reads {
        anyhow::bail!(
            "{} is not a loopback address: every read would be served to anyone who can reach \
             it. Give --read-token-file PATH to require a bearer token, or --public-reads to \
             serve reads publicly on purpose",
            opts.addr
        );
    }
    // Load TLS before anything else touches the data directory: a bad file is a
    // startup error with its name.
    let tls = match &guard.tls {
        Some((cert, key)) => Some(net::tls_acceptor(cert, key)?),
        None => None,
    };
    let max_connections = crate::limits::fit_connections(guard.max_connections);
    std::fs::create_dir_all(&opts.data)
        .with_context(|| format!("cannot create data directory {}", opts.data.display()))?;
    let store = open_store_with_cache(&opts.data, opts.cache_bytes)?;
    let deployment = ensure_deployment(&store, opts.deployment.as_ref())?;
    let allowed = agents::load(&opts.data)?;
    let operators = agents::load_tier(&opts.data, agents::Tier::Operator)?;
    if !opts.open && allowed.is_empty() && operators.is_empty() {
        tracing::warn!(
            "no agent is allowed to write: add keys with `nexus agents add` or serve with --open"
        );
    }
    let log_key = crate::logkey::load_or_create(&opts.data)?;
    let log_signer = log_key
        .signer(&nexus_tlog::origin(deployment.as_str()))
        .context("the deployment id makes no checkpoint origin")?;
    let log_verifier = log_signer.verifier_key();
    let config = ApiConfig {
        log_key: Some(log_key),
        open: opts.open,
        allowed,
        operators,
        hint_quota: opts.hints.hint_quota,
        operator_hint_quota: opts.hints.operator_hint_quota,
        max_contract_hints: opts.hints.max_contract_hints,
        ..ApiConfig::default()
    };
    let limits = config.limits.clone();
    let (state, server) = start(store.clone(), config, guard)?;
    let stop_flusher = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flusher = match &opts.archive {
        Some(a) => {
            tracing::info!(dir = %a.dir.display(), entries = a.policy.max_entries,
                           age_ms = a.policy.max_age_ms, "archiving the commit log");
            Some(crate::archive::spawn_flusher(
                store,
                limits,
                log_signer,
                a.clone(),
                Arc::clone(&stop_flusher),
            )?)
        }
        None => None,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(opts.addr)
            .await
            .with_context(|| format!("cannot listen on {}", opts.addr))?;
        let local = listener.local_addr().context("listener has no address")?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        tracing::info!(
            addr = %local,
            data = %opts.data.display(),
            open = opts.open,
            tls = tls.is_some(),
            read_token = guard.read_access.requires_token(),
            max_connections,
            deployment = %deployment,
            log_key = %log_verifier,
            "neXus serving"
        );
        // A line on stdout that scripts and tests wait for.
        println!("nexus listening on {scheme}://{local}");
        let forget = tokio::spawn(forget_idle_buckets(Arc::clone(&state)));
        let tail = tokio::spawn(crate::events::tail(Arc::clone(&state)));
        let config = NetConfig {
            header_timeout: guard.header_timeout,
            max_connections,
            tls,
        };
        let closing = Arc::clone(&state);
        let shutdown = async move {
            shutdown_signal().await;
            // Event streams end, so that their connections can finish.
            closing.streams.closing.send_replace(true);
        };
        let served = net::serve(listener, config, Arc::clone(&state), shutdown).await;
        forget.abort();
        tail.abort();
        served
    })?;
    drop(state);
    server
        .shutdown()
        .map_err(|_| anyhow::anyhow!("the session server thread panicked"))?;
    stop_flusher.store(true, std::sync::atomic::Ordering::SeqCst);
    if let Some(f) = flusher
        && f.join().is_err()
    {
        tracing::error!("the archive thread panicked");
    }
    tracing::info!("stopped; every acknowledged write is durable");
    Ok(())
}

/// The write thread and the shared state of a server on `store` with `guard`'s rate
/// limits, read access and body timeout, the contract's Hints brought up to date from
/// the log.
fn start(
    store: RedbStore,
    config: ApiConfig,
    guard: &Guard,
) -> Result<(Arc<AppState>, ServerThread<RedbStore>)> {
    ensure_deployment(&store, None)?;
    // Every write brings its own driver (Job::driver): rounds, attempts and flush
    // phases are the API's, not this host's.
    let server = SessionServer::new(store.clone())
        .spawn_grouped(GROUP_SIZE)
        .context("cannot start the session server thread")?;
    let (governance, tasks) = std::sync::mpsc::channel();
    let state = Arc::new(AppState {
        api: Api::new(config),
        store,
        writes: server.client(),
        limits: RateLimits::new(guard.author_rate, guard.address_rate),
        read_access: guard.read_access.clone(),
        body_timeout: guard.body_timeout,
        governance,
        streams: crate::events::Streams::default(),
    });
    // Contract Hints are derived from the log: bring them up to date before serving.
    govern_blocking(&state, Next::CatchUp);
    let weak = Arc::downgrade(&state);
    std::thread::Builder::new()
        .name("nexus-governance".into())
        .spawn(move || governance_loop(&weak, &tasks))
        .context("cannot start the governance thread")?;
    Ok((state, server))
}

/// The store's deployment id: the one it has (which must be `wanted`, if given), or
/// else `wanted` or 32 random hex digits, written now. Signed actions name it, and are
/// refused by every other deployment.
pub fn ensure_deployment(store: &RedbStore, wanted: Option<&Deployment>) -> Result<Deployment> {
    let core = CompositeColdStorage::unified(store.clone(), Limits::default());
    let candidate = match wanted {
        Some(d) => d.clone(),
        None => {
            let mut bytes = [0u8; 16];
            getrandom::getrandom(&mut bytes).map_err(|e| {
                anyhow::anyhow!("cannot read OS randomness for a deployment id: {e}")
            })?;
            Deployment::from_bytes(bytes)
        }
    };
    let have = core
        .init_deployment(&candidate)
        .context("cannot read or write the store's deployment id")?;
    if let Some(w) = wanted
        && *w != have
    {
        anyhow::bail!("the store's deployment id is {have}, not {w}: it never changes");
    }
    Ok(have)
}

/// Opens (or creates) the redb store of a data directory with a page cache of
/// `cache_bytes`.
pub fn open_store_with_cache(data: &Path, cache_bytes: usize) -> Result<RedbStore> {
    let path = data.join(STORE_FILE);
    RedbStore::open_with_cache(&path, cache_bytes)
        .with_context(|| format!("cannot open the store {}", path.display()))
}

/// The store's file in a data directory.
pub const STORE_FILE: &str = "nexus.redb";

/// `nexus compact --data DIR`: writes a compact copy of the store beside it and
/// renames it over the store once complete and synced (the store stays locked until
/// then), with progress on stderr.
pub fn compact(data: &Path) -> Result<()> {
    let path = data.join(STORE_FILE);
    if !path.exists() {
        anyhow::bail!("{} does not exist: no store to compact", path.display());
    }
    let tmp = data.join(format!("{STORE_FILE}.compacting"));
    let mut bar: Option<indicatif::ProgressBar> = None;
    let done = RedbStore::compact_file(&path, &tmp, |copied, total| {
        let bar = bar.get_or_insert_with(|| {
            let bar = indicatif::ProgressBar::with_draw_target(
                Some(total),
                indicatif::ProgressDrawTarget::stderr(),
            );
            if let Ok(style) = indicatif::ProgressStyle::with_template(
                "compacting [{bar:40}] {pos}/{len} entries ({eta})",
            ) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar
        });
        bar.set_position(copied);
    });
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    let done = done.map_err(|e| {
        let hint = if e.to_string().contains("already open") || e.to_string().contains("lock") {
            " (is a server running on it? stop it first)"
        } else {
            ""
        };
        anyhow::Error::new(e).context(format!("cannot compact {}{hint}", path.display()))
    })?;
    let mb = |b: u64| b as f64 / (1 << 20) as f64;
    eprintln!(
        "compacted {}: {} entries, {:.1} MiB -> {:.1} MiB",
        path.display(),
        done.entries,
        mb(done.bytes_before),
        mb(done.bytes_after)
    );
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down: finishing queued writes");
}

/// Every minute, forgets the rate buckets that are full again.
async fn forget_idle_buckets(state: Arc<AppState>) {
    let mut tick = tokio::time::interval(crate::limits::FORGET_AFTER);
    loop {
        tick.tick().await;
        state.limits.forget_idle();
    }
}

impl net::Host for AppState {
    async fn call(
        self: Arc<Self>,
        peer: SocketAddr,
        req: hyper::Request<hyper::body::Incoming>,
    ) -> AxumResponse {
        handle(self, peer, req.map(Body::new)).await
    }

    fn refusal(&self, limit: usize) -> AxumResponse {
        let r = nexus_api::too_many_connections(limit).to_response();
        self.api.metrics().observe_response(Route::Unmatched, &r, 0);
        let mut resp = into_axum(r);
        set(&mut resp, header::RETRY_AFTER, "1");
        set(&mut resp, header::CONNECTION, "close");
        resp
    }

    fn metrics(&self) -> &Metrics {
        self.api.metrics()
    }
}

/// Sets a header whose value is known to be valid.
fn set(resp: &mut AxumResponse, name: header::HeaderName, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        resp.headers_mut().insert(name, v);
    }
}

/// A static asset of the explorer, with its content type, security policy and caching.
fn explorer_asset(asset: nexus_explorer::Asset, head: bool) -> AxumResponse {
    let body = if head {
        Body::empty()
    } else {
        Body::from(asset.body)
    };
    let mut resp = AxumResponse::new(body);
    set(&mut resp, header::CONTENT_TYPE, asset.content_type);
    set(
        &mut resp,
        header::CONTENT_SECURITY_POLICY,
        nexus_explorer::CONTENT_SECURITY_POLICY,
    );
    set(
        &mut resp,
        header::CACHE_CONTROL,
        nexus_explorer::CACHE_CONTROL,
    );
    set(&mut resp, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    resp
}

/// An answer the host gives before (or instead of) the API: counted like every other
/// one (requests by route, errors by code, latency).
fn early(state: &AppState, route: Route, e: &ApiError, started: Instant) -> AxumResponse {
    let r = e.to_response();
    let micros = started.elapsed().as_micros() as u64;
    state.api.metrics().observe_response(route, &r, micros);
    into_axum(r)
}

/// `429 rate_limited` with `Retry-After`, counted under `scope`.
fn limited(
    state: &AppState,
    route: Route,
    scope: &'static str,
    wait_ms: u64,
    started: Instant,
) -> AxumResponse {
    state.api.metrics().record_rate_limited(scope);
    let e = nexus_api::rate_limited(scope, wait_ms);
    let mut resp = early(state, route, &e, started);
    let secs = nexus_api::retry_after_secs(wait_ms).to_string();
    set(&mut resp, header::RETRY_AFTER, &secs);
    resp
}

async fn handle(
    state: Arc<AppState>,
    peer: SocketAddr,
    req: axum::http::Request<Body>,
) -> AxumResponse {
    let started = Instant::now();
    let method = req.method().as_str().to_owned();
    let target = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "/".to_owned());
    let path = target.split('?').next().unwrap_or("/");
    let early_route = nexus_api::route_for(&method, path);
    if let Err(wait_ms) = state.limits.check_address(peer.ip()) {
        return limited(&state, early_route, "address", wait_ms, started);
    }
    // The explorer's page and assets (public: they hold no data; see nexus-explorer).
    if let Some(asset) = nexus_explorer::asset(&method, path) {
        return explorer_asset(asset, method == "HEAD");
    }
    let authorization = req
        .headers()
        .get(header::AUTHORIZATION)
        .map(HeaderValue::as_bytes);
    if let Err(e) = state.read_access.check(early_route, authorization) {
        let mut resp = early(&state, early_route, &e, started);
        set(&mut resp, header::WWW_AUTHENTICATE, "Bearer");
        return resp;
    }
    let last_event_id = req
        .headers()
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let limit = state.api.config().max_request_bytes;
    let body =
        match tokio::time::timeout(state.body_timeout, read_body(req.into_body(), limit)).await {
            Ok(Ok(b)) => b,
            Ok(Err(seen)) => {
                let e = match seen {
                    Some(size) => nexus_api::body_too_large(size, limit),
                    None => ApiError::new(
                        ErrorCode::BodyTooLarge,
                        format!("request body is larger than {limit} bytes (or could not be read)"),
                    )
                    .with("limit", limit as u64),
                };
                return early(&state, early_route, &e, started);
            }
            Err(_) => {
                // The rest of the body may never come: answer and close the connection.
                state.api.metrics().record_timeout("body");
                let ms = state.body_timeout.as_millis() as u64;
                let mut resp = early(
                    &state,
                    early_route,
                    &nexus_api::request_timeout(ms),
                    started,
                );
                set(&mut resp, header::CONNECTION, "close");
                return resp;
            }
        };
    let request = Request::new(&method, &target, body);
    // Parsing and verifying (hash, one Ed25519 check) take tens of microseconds: they
    // run right here on the runtime's worker rather than paying two thread hand-offs.
    let (route, response) = match state.api.prepare(&request) {
        Prepared::Respond(route, r) => (route, r),
        Prepared::Metrics => (nexus_api::Route::Metrics, state.api.metrics_response()),
        Prepared::Events(_) => {
            // Again with the header, which the API's request does not carry.
            let query = target.split_once('?').map(|(_, q)| q);
            match nexus_api::EventsQuery::parse(query, last_event_id.as_deref()) {
                Ok(q) => match crate::events::respond(Arc::clone(&state), q) {
                    Ok(resp) => {
                        let micros = started.elapsed().as_micros() as u64;
                        state
                            .api
                            .metrics()
                            .observe(Route::Events, 200, None, micros);
                        return resp;
                    }
                    Err(e) => {
                        let mut resp = early(&state, Route::Events, &e, started);
                        set(&mut resp, header::RETRY_AFTER, "5");
                        return resp;
                    }
                },
                Err(e) => return early(&state, Route::Events, &e, started),
            }
        }
        Prepared::Job(job) if job.is_write() => {
            let route = job.route();
            // One token per signed item (a batch takes one per item).
            if let Err(wait_ms) = state.limits.check_authors(&job.authors()) {
                return limited(&state, route, "author", wait_ms, started);
            }
            if let Err(e) = gate(&state, route).await {
                return early(&state, route, &e, started);
            }
            // A committed Fact is handed to the contract's evaluator.
            let fact = job
                .record()
                .filter(|r| r.content().kind() == nexus_core::Kind::Fact)
                .cloned();
            let response = write(&state, job).await;
            if response.status / 100 == 2 {
                state.streams.committed();
                govern(&state, route, fact).await;
            }
            (route, response)
        }
        Prepared::Job(job) => {
            // Reads may scan many entries: on a blocking thread, straight against redb.
            let route = job.route();
            let st = Arc::clone(&state);
            let read =
                tokio::task::spawn_blocking(move || st.api.run_job(&st.store, &job, now_ms()));
            let response = read.await.unwrap_or_else(|_| {
                ApiError::new(ErrorCode::Storage, "request handler panicked").to_response()
            });
            // A store that cannot write (a full disk) is not healthy, reads or not.
            let response = match route {
                Route::Health => state
                    .api
                    .governed_health(nexus_api::health_response(&state.store.health(), response)),
                _ => response,
            };
            (route, response)
        }
    };
    let micros = started.elapsed().as_micros() as u64;
    state
        .api
        .metrics()
        .observe_response(route, &response, micros);
    into_axum(response)
}

/// Most bytes of an oversize request body read (and dropped) before answering 413, so
/// that a client that sends its whole body before reading can read the answer; beyond
/// it the connection is cut.
pub const MAX_DRAIN_BYTES: usize = 64 << 20;

/// Reads a request body of at most `limit` bytes. Above it, the rest is read and
/// dropped (up to [`MAX_DRAIN_BYTES`]) and the answer is `Err(Some(size))`;
/// `Err(None)` when the body could not be read to its end.
async fn read_body(mut body: Body, limit: usize) -> Result<Vec<u8>, Option<usize>> {
    let mut data = Vec::new();
    let mut size = 0usize;
    loop {
        let frame = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await;
        match frame {
            None => break,
            Some(Err(_)) => return Err(None),
            Some(Ok(frame)) => {
                let Ok(chunk) = frame.into_data() else {
                    continue; // trailers
                };
                size = size.saturating_add(chunk.len());
                if size <= limit {
                    data.extend_from_slice(&chunk);
                } else if size > MAX_DRAIN_BYTES {
                    return Err(None);
                } else {
                    data = Vec::new();
                }
            }
        }
    }
    if size > limit {
        Err(Some(size))
    } else {
        Ok(data)
    }
}

/// Queues a write job on the group-commit thread and awaits its durable answer; no
/// thread blocks while the group is written.
async fn write(state: &AppState, job: Job) -> Response {
    let (done, answer) = tokio::sync::oneshot::channel();
    let driver = job.driver(&state.api.config().limits, now_ms(), false);
    state.writes.submit_driver(driver, move |reply| {
        // The client may have gone away; its answer is then dropped.
        let _ = done.send(reply);
    });
    let reply = answer
        .await
        .unwrap_or(Err(nexus_iobuf::JobError::ServerGone));
    state.api.finish(reply)
}

/// Contract governance after a committed write (see [`nexus_api::Governor`]): without
/// a contract this costs one atomic load; with one, the write is handed to the
/// governance thread and this task awaits its turn, holding no thread. This server is
/// its store's only writer. A failure is logged and repaired at the next write.
async fn govern(state: &AppState, route: Route, fact: Option<nexus_core::Record>) {
    if !state.api.governor().watches(route) {
        return;
    }
    let (done, finished) = tokio::sync::oneshot::channel();
    let task = GovernTask { route, fact, done };
    if state.governance.send(task).is_err() || finished.await.is_err() {
        tracing::warn!("the governance thread is gone: contract Hints were not updated");
    }
}

/// The governance thread: evaluates queued writes in order (every write queued while it
/// was busy in one batch), then catches up once for the batch if any of them asks for
/// it, and only then lets the batch's writes answer. Ends with the server's state.
fn governance_loop(state: &Weak<AppState>, tasks: &Receiver<GovernTask>) {
    while let Ok(first) = tasks.recv() {
        let Some(state) = state.upgrade() else { return };
        let batch: Vec<GovernTask> = std::iter::once(first).chain(tasks.try_iter()).collect();
        let run = std::panic::AssertUnwindSafe(|| {
            let governor = state.api.governor();
            let mut next = Next::Nothing;
            for t in &batch {
                match governor.observe(t.route, t.fact.as_ref()) {
                    Ok(Next::CatchUp) => next = Next::CatchUp,
                    Ok(Next::Nothing) => {}
                    Err(e) => tracing::error!("{e}"),
                }
            }
            govern_blocking(&state, next);
        });
        if std::panic::catch_unwind(run).is_err() {
            tracing::warn!("contract governance panicked");
        }
        for t in batch {
            // The client may have gone away.
            let _ = t.done.send(());
        }
    }
}

/// Fails closed while the contract's Hints are not committed (see
/// [`nexus_api::Governor::gate`]): a proposal or claim first has the governance thread
/// retry the catch-up (a failure makes it ask for one), then is refused with `503
/// governance_pending` if it still fails.
async fn gate(state: &AppState, route: Route) -> Result<(), ApiError> {
    let governor = state.api.governor();
    if !nexus_api::Governor::is_gated(route) || governor.failure().is_none() {
        return Ok(());
    }
    let (done, finished) = tokio::sync::oneshot::channel();
    let task = GovernTask {
        route,
        fact: None,
        done,
    };
    if state.governance.send(task).is_err() || finished.await.is_err() {
        tracing::error!("the governance thread is gone: contract Hints cannot be repaired");
    }
    governor.gate(route)
}

/// Catches up (if `next` says so), on a thread that may block.
fn govern_blocking(state: &AppState, next: Next) {
    let run = |job: Job| {
        if job.is_write() {
            let (done, answer) = std::sync::mpsc::channel();
            let driver = job.driver(&state.api.config().limits, now_ms(), false);
            state.writes.submit_driver(driver, move |reply| {
                let _ = done.send(reply);
            });
            let reply = answer
                .recv()
                .unwrap_or(Err(nexus_iobuf::JobError::ServerGone));
            state.api.finish(reply)
        } else {
            state.api.run_job(&state.store, &job, now_ms())
        }
    };
    let governor = state.api.governor();
    let result = match next {
        Next::Nothing => Ok(None),
        Next::CatchUp => governor.catch_up(&state.api.config().limits, run),
    };
    if let Err(e) = result {
        // The operator must see it: until it is repaired, proposals and claims are
        // refused (`503 governance_pending`) and /v1/health answers degraded.
        tracing::error!("{e}; proposals and claims are refused until the contract's Hints commit");
    }
}

fn into_axum(r: Response) -> AxumResponse {
    let mut resp = AxumResponse::new(Body::from(r.body));
    *resp.status_mut() =
        StatusCode::from_u16(r.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(r.content_type),
    );
    resp
}

#[cfg(test)]
mod tests;
