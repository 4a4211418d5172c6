//! The Worker's cold tier (spec/archive.md, "On the Worker"): the coordinator's alarm
//! archives the commit log to R2 window by window and writes snapshots, and a
//! coordinator whose storage is empty restores itself from R2. The rules are the
//! core's (`CompositeColdStorage::fix_window`, `archive_pending`, `capture_hot_state`,
//! `write_snapshot`, `nexus_api::restore::from_snapshot_with_cold`); this module only
//! moves bytes between them and the bindings:
//!
//! - **a window**: the core fixes it in the flush cursor directly in the coordinator's
//!   SQL storage (durable before any blob is written), then archives it over a session
//!   ([`run_session`]); the host writes the session's blobs to R2, the manifest last,
//!   and then commits the cursor's move together with the window's index entries in
//!   one transaction. An alarm that fails or is retried anywhere in between finds the
//!   window still pending and writes the same bytes under the same keys again;
//! - **a snapshot** (after every `NEXUS_SNAPSHOT_EVERY`-th window): the hot state read
//!   synchronously from the SQL storage (so it is of one log head), its chunks written
//!   to R2, then its manifest;
//! - **a restore**: the archives and snapshots are read from R2 into memory, the core's
//!   restore rebuilds the SQL storage from them (the records and index entries it
//!   writes go to memory first), then the records the bucket lacks go to KV and R2,
//!   deployed contract sources to R2, and the index entries into the index table.

use nexus_api::restore::{RestoreReport, from_snapshot_with_cold};
use nexus_core::archive::{self, WindowPolicy};
use nexus_core::storage::keys::INDEX_PREFIX;
use nexus_core::{CompositeColdStorage, Limits};
use nexus_iobuf::{
    Delta, Executed, IoBufferBlob, IoBufferKv, IoBufferSession, ListQuery, Misses, StoreSession,
};
use nexus_store::{
    BlobStore, CommitOutcome, MemoryStore, ObjectStore, Snapshot, StoreError, StoreResult,
};
use worker::{Bucket, Env, KvStore};

use crate::coordinator::SqlStates;
use crate::r2::RECORD_PREFIX;
use crate::repair::core_error;
use crate::{kv, r2};

/// Default of `NEXUS_SNAPSHOT_EVERY`: a snapshot after every this many windows (as
/// `nexus serve --snapshot-every`).
pub const DEFAULT_SNAPSHOT_EVERY: u64 = 16;
/// Most windows one alarm archives (the alarm is set again at once when more are due).
pub const WINDOWS_PER_ALARM: usize = 8;
/// Session rounds one archive step may take: entries and records are read in bulk
/// (about four rounds), and the checkpoint its manifest ends at reads the tree's size,
/// then the stored hashes of its root (two more).
const ROUNDS: usize = 10;
/// Blobs fetched or written concurrently.
const CONCURRENCY: usize = 16;
/// Attempts at capturing the hot state of one log head (the capture is synchronous at
/// the coordinator, so the first one holds).
const CAPTURE_ATTEMPTS: usize = 2;

/// When windows close and how often snapshots are written, from the Worker's vars.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveSettings {
    /// `NEXUS_FLUSH_ENTRIES` (default 1,000) and `NEXUS_FLUSH_SECS` (default 10, may
    /// be fractional).
    pub policy: WindowPolicy,
    /// `NEXUS_SNAPSHOT_EVERY` (default [`DEFAULT_SNAPSHOT_EVERY`]; 0: no snapshots).
    pub snapshot_every: u64,
    /// The `NEXUS_LOG_KEY` secret, which signs the checkpoint each manifest ends at
    /// (none: manifests carry `checkpoint: null`).
    pub log_key: Option<nexus_tlog::LogKey>,
    /// Test-only `NEXUS_TEST_ARCHIVE_FAULTS` (see `faults`).
    #[cfg(feature = "test-hooks")]
    pub test_faults: u32,
}

impl Default for ArchiveSettings {
    fn default() -> Self {
        Self {
            policy: WindowPolicy::default(),
            snapshot_every: DEFAULT_SNAPSHOT_EVERY,
            log_key: None,
            #[cfg(feature = "test-hooks")]
            test_faults: 0,
        }
    }
}

impl ArchiveSettings {
    /// The settings of `env`'s vars; an unparsable one is logged and its default used.
    pub fn from_env(env: &Env) -> Self {
        let var = |name: &str| env.var(name).ok().map(|v| v.to_string());
        let mut s = Self {
            log_key: crate::log_key(env),
            ..Self::default()
        };
        if let Some(v) = var("NEXUS_FLUSH_ENTRIES") {
            match v.trim().parse::<u64>() {
                Ok(n) if n > 0 => s.policy.max_entries = n,
                _ => worker::console_warn!("NEXUS_FLUSH_ENTRIES: {v:?} is not a positive number"),
            }
        }
        if let Some(v) = var("NEXUS_FLUSH_SECS") {
            match v.trim().parse::<f64>() {
                Ok(t) if t.is_finite() && t >= 0.0 => s.policy.max_age_ms = (t * 1_000.0) as u64,
                _ => worker::console_warn!("NEXUS_FLUSH_SECS: {v:?} is not a number of seconds"),
            }
        }
        if let Some(v) = var("NEXUS_SNAPSHOT_EVERY") {
            match v.trim().parse::<u64>() {
                Ok(n) => s.snapshot_every = n,
                Err(_) => worker::console_warn!("NEXUS_SNAPSHOT_EVERY: {v:?} is not a number"),
            }
        }
        #[cfg(feature = "test-hooks")]
        if let Some(v) = var("NEXUS_TEST_ARCHIVE_FAULTS") {
            s.test_faults = v.trim().parse().unwrap_or(0);
        }
        s
    }
}

/// The core over a session's buffers, except the object tier: `objects`.
fn core_over<O: ObjectStore>(
    s: &IoBufferSession,
    objects: O,
) -> CompositeColdStorage<IoBufferKv, IoBufferBlob, O> {
    CompositeColdStorage::new(
        s.kv_buf().clone(),
        s.blob_buf().clone(),
        objects,
        Limits::default(),
    )
}

/// `core`, signing its manifests' checkpoints with `signer` when there is one.
fn signing<K, B, O>(
    core: CompositeColdStorage<K, B, O>,
    signer: Option<&nexus_tlog::LogSigner>,
) -> CompositeColdStorage<K, B, O>
where
    K: nexus_store::KeyValueStore,
    B: nexus_store::BlobStore,
    O: ObjectStore,
{
    match signer {
        Some(s) => core.with_log_signer(s.clone()),
        None => core,
    }
}

/// The signer of this log's checkpoints: the log key named by the origin of the
/// coordinator's deployment (`None` without a key, or before the deployment exists).
fn log_signer(
    states: &SqlStates,
    settings: &ArchiveSettings,
) -> StoreResult<Option<nexus_tlog::LogSigner>> {
    let Some(key) = &settings.log_key else {
        return Ok(None);
    };
    let Some(deployment) = core_direct(states).deployment().map_err(core_error)? else {
        return Ok(None);
    };
    key.signer(&nexus_tlog::origin(deployment.as_str()))
        .map(Some)
        .map_err(|e| StoreError::Backend(format!("the log key: {e}")))
}

/// The core directly over the coordinator's SQL storage, for calls that touch only
/// the object tier (their key-value and blob tiers are empty buffers).
fn core_direct(states: &SqlStates) -> CompositeColdStorage<IoBufferKv, IoBufferBlob, SqlStates> {
    CompositeColdStorage::new(
        IoBufferKv::default(),
        IoBufferBlob::default(),
        states.clone(),
        Limits::default(),
    )
}

/// Runs the synchronous `job` over a session to completion at the coordinator: each
/// round that misses something is thrown away, the misses are hydrated, and the job
/// runs again (bounded rounds). States come from `states` (synchronously), key-value
/// keys from KV (records from R2 where KV has not got them), index listings from the
/// index table, blobs from R2. Answers the job's result and the session's delta.
pub async fn run_session<T>(
    states: &SqlStates,
    kv: &KvStore,
    bucket: &Bucket,
    rounds: usize,
    job: impl Fn(&IoBufferSession) -> T,
) -> StoreResult<(T, Delta)> {
    let mut driver = StoreSession::with_max_rounds(rounds);
    loop {
        match driver
            .execute(&job)
            .map_err(|e| StoreError::Backend(format!("session: {e}")))?
        {
            Executed::Done(out, delta) => return Ok((out, delta)),
            Executed::NeedsHydration(misses) => {
                hydrate(driver.session(), &misses, states, kv, bucket).await?;
            }
        }
    }
}

async fn hydrate(
    session: &IoBufferSession,
    misses: &Misses,
    states: &SqlStates,
    kv: &KvStore,
    bucket: &Bucket,
) -> StoreResult<()> {
    if !misses.state_keys.is_empty() {
        let refs: Vec<&str> = misses.state_keys.iter().map(String::as_str).collect();
        let values = states.get_states(&refs)?;
        session
            .object_buf()
            .hydrate_batch(misses.state_keys.iter().cloned().zip(values));
    }
    for q in &misses.state_lists {
        let keys = states.list_states(&q.prefix, q.start_after.as_deref(), q.limit)?;
        session.object_buf().hydrate_list(q, keys);
    }
    if !misses.kv_keys.is_empty() {
        let (mut values, _) = kv::get_many(kv, &misses.kv_keys).await?;
        r2::fill_missing_records(bucket, &misses.kv_keys, &mut values).await?;
        session
            .kv_buf()
            .hydrate_batch(misses.kv_keys.iter().cloned().zip(values));
    }
    for q in &misses.kv_lists {
        let keys = if q.prefix.starts_with(INDEX_PREFIX) {
            states.list_index(&q.prefix, q.start_after.as_deref(), q.limit)?
        } else {
            kv::list(kv, q).await?.0
        };
        session.kv_buf().hydrate_list(q, keys);
    }
    for key in &misses.blob_keys {
        session
            .blob_buf()
            .hydrate(key.clone(), r2::get(bucket, key).await?);
    }
    for q in &misses.blob_lists {
        session
            .blob_buf()
            .hydrate_list(q, r2::list(bucket, q).await?.0);
    }
    Ok(())
}

/// Writes `puts` to R2, concurrently.
async fn put_all(bucket: &Bucket, puts: &[&(String, Vec<u8>)]) -> StoreResult<()> {
    for group in puts.chunks(CONCURRENCY) {
        let writes = group.iter().map(|(k, v)| r2::put(bucket, k, v));
        for w in futures_util::future::join_all(writes).await {
            w?;
        }
    }
    Ok(())
}

/// Writes `puts` to R2, concurrently, except `last`, which is written after all the
/// others are (a manifest: what it names exists once it does); `between` runs before
/// `last` is written.
async fn put_blobs(
    bucket: &Bucket,
    puts: &[(String, Vec<u8>)],
    last: &str,
    between: impl FnOnce() -> StoreResult<()>,
) -> StoreResult<()> {
    let (tail, rest): (Vec<_>, Vec<_>) = puts.iter().partition(|(k, _)| k == last);
    put_all(bucket, &rest).await?;
    between()?;
    put_all(bucket, &tail).await
}

/// Test-only faults of the archive (`test-hooks` builds): with the var
/// `NEXUS_TEST_ARCHIVE_FAULTS = N`, fault `n` (`n < N`) of this isolate makes the
/// archive step fail at point `n % 3`, the first time a window reaches it: 0 right
/// after the window is fixed, 1 after its archive blob, 2 after its manifest (before
/// the cursor moves). The alarm then retries, as after a crash at that point.
#[cfg(feature = "test-hooks")]
mod faults {
    use std::cell::Cell;

    use nexus_store::{StoreError, StoreResult};

    thread_local! {
        /// Faults injected so far.
        static INJECTED: Cell<u32> = const { Cell::new(0) };
    }

    /// Fails at `point` if the next fault (of `budget`) is due there.
    pub fn check(budget: u32, point: u32) -> StoreResult<()> {
        let n = INJECTED.with(Cell::get);
        if n >= budget || n % 3 != point {
            return Ok(());
        }
        INJECTED.with(|c| c.set(n + 1));
        Err(StoreError::Backend(format!(
            "injected archive fault {n} at point {point} (test hook)"
        )))
    }
}

/// Fails as `faults::check` says in a test build; never otherwise.
fn fault(settings: &ArchiveSettings, point: u32) -> StoreResult<()> {
    #[cfg(feature = "test-hooks")]
    return faults::check(settings.test_faults, point);
    #[cfg(not(feature = "test-hooks"))]
    {
        let _ = (settings, point);
        Ok(())
    }
}

/// What one [`archive_due`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Archived {
    /// Windows archived.
    pub windows: u64,
    /// The manifest keys of the snapshots written.
    pub snapshots: Vec<String>,
    /// When the next window is due, in ms from the end of the run (0: now); `None`
    /// when every log entry is archived.
    pub due_in: Option<u64>,
}

/// Archives the windows due at `now()` (at most [`WINDOWS_PER_ALARM`]) and writes a
/// snapshot after every `snapshot_every`-th; answers what it did and when the next
/// window is due. A failure part-way leaves the window pending: the next call
/// finishes it with the same bytes.
pub async fn archive_due(
    states: &SqlStates,
    kv: &KvStore,
    bucket: &Bucket,
    settings: &ArchiveSettings,
    now: impl Fn() -> u64,
) -> StoreResult<Archived> {
    let direct = core_direct(states);
    let signer = log_signer(states, settings)?;
    let mut done = Archived::default();
    for _ in 0..WINDOWS_PER_ALARM {
        // Fixed in the SQL storage, durably, before any blob is written.
        let cursor = direct
            .fix_window(&settings.policy, now())
            .map_err(core_error)?;
        if cursor.pending.is_none() {
            break;
        }
        let (report, delta) = run_session(states, kv, bucket, ROUNDS, |s| {
            signing(core_over(s, s.object_buf().clone()), signer.as_ref()).archive_pending()
        })
        .await?;
        let manifest = report
            .map_err(core_error)?
            .window
            .ok_or_else(|| StoreError::Backend("archive: the pending window vanished".into()))?;
        fault(settings, 0)?;
        put_blobs(
            bucket,
            &delta.blob_puts,
            &archive::keys::manifest(manifest.first),
            || fault(settings, 1),
        )
        .await?;
        fault(settings, 2)?;
        // The cursor moves past the window with its index entries, in one transaction.
        let index: Vec<String> = delta
            .kv_puts
            .into_iter()
            .map(|(k, _)| k)
            .filter(|k| k.starts_with(INDEX_PREFIX))
            .collect();
        match states.commit_indexed(&delta.commit, Some(index))?.0 {
            CommitOutcome::Applied { .. } => {}
            other => {
                return Err(StoreError::Backend(format!(
                    "archive: the flush cursor changed meanwhile ({other:?})"
                )));
            }
        }
        done.windows += 1;
        let every = settings.snapshot_every;
        if every > 0
            && manifest.window.is_multiple_of(every)
            && let Some(key) = snapshot(states, bucket, settings, now()).await?
        {
            done.snapshots.push(key);
        }
    }
    done.due_in = due_in(states, settings, now())?;
    Ok(done)
}

/// When the next window is due, in ms from `now` (0: now); `None` when every log
/// entry is archived: what the alarm is armed for after a commit.
pub fn due_in(
    states: &SqlStates,
    settings: &ArchiveSettings,
    now: u64,
) -> StoreResult<Option<u64>> {
    core_direct(states)
        .window_due_in(&settings.policy, now)
        .map_err(core_error)
}

/// Writes a snapshot of the hot state at `now`; answers its manifest key (`None` if
/// the log never stood still, which the synchronous capture rules out).
pub async fn snapshot(
    states: &SqlStates,
    bucket: &Bucket,
    settings: &ArchiveSettings,
    now: u64,
) -> StoreResult<Option<String>> {
    let direct = core_direct(states);
    let Some(state) = direct
        .capture_hot_state(CAPTURE_ATTEMPTS)
        .map_err(core_error)?
    else {
        return Ok(None);
    };
    let blobs = IoBufferBlob::default();
    let core = CompositeColdStorage::new(
        IoBufferKv::default(),
        blobs.clone(),
        states.clone(),
        Limits::default(),
    );
    let key = signing(core, log_signer(states, settings)?.as_ref())
        .write_snapshot(&state, now)
        .map_err(core_error)?;
    put_blobs(bucket, &blobs.drain_blob_puts(), &key, || Ok(())).await?;
    Ok(Some(key))
}

/// Whether the bucket holds at least one archive window.
pub async fn has_archives(bucket: &Bucket) -> StoreResult<bool> {
    let q = ListQuery::new(archive::keys::MANIFEST_PREFIX, None, 1);
    Ok(!r2::list(bucket, &q).await?.0.is_empty())
}

/// Every blob under `prefix`, read into `into`.
async fn fetch_all(bucket: &Bucket, prefix: &str, into: &MemoryStore) -> StoreResult<()> {
    let (keys, _) = r2::list(bucket, &ListQuery::new(prefix, None, usize::MAX)).await?;
    for group in keys.chunks(CONCURRENCY) {
        let reads = group.iter().map(|k| r2::get(bucket, k));
        for (key, value) in group
            .iter()
            .zip(futures_util::future::join_all(reads).await)
        {
            if let Some(v) = value? {
                into.put_blob(key, &v)?;
            }
        }
    }
    Ok(())
}

/// Why a restore did not complete.
#[derive(Debug, thiserror::Error)]
pub enum RestoreFailed {
    /// The core's restore refused the archives.
    #[error(transparent)]
    Refused(#[from] nexus_api::restore::RestoreError),
    /// A binding or the coordinator's storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Rebuilds the coordinator's storage (which must hold no log: every state and index
/// entry in it is removed first) from the archives and the latest usable snapshot in
/// the bucket. On failure the storage is emptied again. The archives and snapshots are
/// held in the isolate's memory while it runs (spec/archive.md, "Known limits").
pub async fn restore(
    states: &SqlStates,
    kv: &KvStore,
    bucket: &Bucket,
) -> Result<RestoreReport, RestoreFailed> {
    let (_, head) = states.index_progress()?;
    if head != 0 {
        return Err(nexus_api::restore::RestoreError::NotEmpty(head).into());
    }
    let cold = MemoryStore::new();
    for prefix in [
        archive::keys::MANIFEST_PREFIX,
        archive::keys::ARCHIVE_PREFIX,
        archive::keys::SNAPSHOT_PREFIX,
    ] {
        fetch_all(bucket, prefix, &cold).await?;
    }
    states.wipe()?;
    let written = MemoryStore::new();
    let target = CompositeColdStorage::new(
        written.clone(),
        written.clone(),
        states.clone(),
        Limits::default(),
    );
    let report = match from_snapshot_with_cold(&cold, &target, |_, _| {}) {
        Ok(r) => r,
        Err(e) => {
            states.wipe()?;
            return Err(e.into());
        }
    };
    let out = written.snapshot()?;
    let mut index = Vec::new();
    let mut records = Vec::new();
    for (key, value) in out.kv {
        if key.starts_with(INDEX_PREFIX) {
            index.push(key);
        } else {
            records.push((key, value));
        }
    }
    // Records before the index that lists them. A record the bucket has (every commit
    // wrote its copy there before its commit point) is not written again: the API reads
    // a record from KV, or from R2 where KV has not got it.
    let (present, _) = r2::list(bucket, &ListQuery::new(RECORD_PREFIX, None, usize::MAX)).await?;
    let present: std::collections::BTreeSet<String> = present.into_iter().collect();
    records.retain(|(k, _)| !present.contains(k));
    for group in records.chunks(CONCURRENCY) {
        let writes = group.iter().map(|(k, v)| async move {
            let (in_kv, in_r2) =
                futures_util::future::join(kv::put(kv, k, v), r2::put(bucket, k, v)).await;
            in_kv.and(in_r2)
        });
        for w in futures_util::future::join_all(writes).await {
            w?;
        }
    }
    let blobs: Vec<(String, Vec<u8>)> = out.blobs.into_iter().collect();
    put_blobs(bucket, &blobs, "", || Ok(())).await?;
    let (cursor, head) = states.index_progress()?;
    states.backfill_index(index, cursor, head)?;
    Ok(report)
}
