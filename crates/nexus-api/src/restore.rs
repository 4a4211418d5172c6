//! [`from_snapshot_with_cold`]: rebuilds a coordinator's stores from the cold tier
//! (spec/archive.md, "Restore"), the same code on every host: the host hands it the
//! blob tier that holds the archives and an empty store to fill, and serves once it
//! returned `Ok`.
//!
//! 1. Read every window manifest in key (= log) order and check the chain: window
//!    numbers 1, 2, 3, …, each window starting right after the previous one, each
//!    naming the previous manifest's BLAKE3 ([`Chain::push`]).
//! 2. Pick the latest snapshot whose head the archives cover, and check its chunks.
//! 3. For each window: check its archive against its manifest (one line per seq, in
//!    order, then length and BLAKE3); parse each line with the core's own parsers (hash
//!    and signature verified). Entries up to the snapshot's head are stored as they
//!    were committed ([`CompositeColdStorage::load_archived`]); the snapshot's hot state
//!    is then installed; every later entry is replayed through the core's lifecycle at
//!    its own commit time, exactly as `nexus verify --replay` does, and must get its seq.
//! 4. The flush cursor is set to the chain's end (the next window continues the chain)
//!    and [`check_restored`] runs; then the last window's checkpoint that has one must
//!    verify (signed by the pinned key, else by the key it names) and its root be the
//!    rebuilt Merkle tree's at its size ([`check_tree`]).

use nexus_contract::{Contract, governance};
use nexus_core::archive::{
    self, ArchiveError, Chain, FlushCursor, HotState, Manifest, archive_lines, check_archive_bytes,
    check_restored,
};
use nexus_core::{
    Action, Archived, CompositeColdStorage, Content, CoreError, FihHash, Limits, Record,
};
use nexus_store::{BlobStore, KeyValueStore, LOG_HEAD_KEY, ObjectStore, StoreError, parse_head};
use serde_json::Value;

/// Blob keys listed per call.
const LIST_PAGE: usize = 1_000;
/// Entries stored per commit while loading what a snapshot covers.
const LOAD_BATCH: usize = 1_000;

/// Why a restore stopped (nothing is served from a store a restore did not finish).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RestoreError {
    /// The target store already holds a log.
    #[error("the target store is not empty (its log head is {0})")]
    NotEmpty(u64),
    /// The cold tier holds no archive.
    #[error("the blob tier holds no archive window")]
    NoArchives,
    /// A manifest, archive or snapshot is refused.
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    /// A line does not verify or does not replay.
    #[error("{key} line {line} (seq {seq}): {problem}")]
    Entry {
        /// The archive.
        key: String,
        /// 1-based line within it.
        line: u64,
        /// The entry's seq.
        seq: u64,
        /// What is wrong.
        problem: String,
    },
    /// A store failed.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// The core refused a write to the target.
    #[error("restoring: {0}")]
    Core(#[from] CoreError),
}

/// What a restore did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RestoreReport {
    /// Windows read.
    pub windows: u64,
    /// Log entries restored (the new log head).
    pub entries: u64,
    /// The head of the snapshot used, if one was.
    pub snapshot: Option<u64>,
    /// Entries replayed through the lifecycle (those after the snapshot).
    pub replayed: u64,
}

/// Reads the chain of window manifests from `cold` and checks it.
pub fn read_chain(cold: &impl BlobStore) -> Result<Chain, RestoreError> {
    let mut chain = Chain::default();
    for key in list_all(cold, archive::keys::MANIFEST_PREFIX)? {
        let bytes = cold
            .get_blob(&key)?
            .ok_or_else(|| ArchiveError::Missing { key: key.clone() })?;
        chain.push(&key, &bytes)?;
    }
    Ok(chain)
}

/// Rebuilds `target` (which must be empty) from the archives and the latest usable
/// snapshot in `cold`, calling `progress(entries done, entries in all)` after each
/// window. See the module docs for what is checked.
pub fn from_snapshot_with_cold<C, K, B, O>(
    cold: &C,
    target: &CompositeColdStorage<K, B, O>,
    progress: impl FnMut(u64, u64),
) -> Result<RestoreReport, RestoreError>
where
    C: BlobStore,
    K: KeyValueStore,
    B: BlobStore,
    O: ObjectStore,
{
    from_snapshot_with_cold_pinned(cold, target, None, progress)
}

/// [`from_snapshot_with_cold`], refusing a last checkpoint not signed by verifier key
/// `log_key` (when given).
pub fn from_snapshot_with_cold_pinned<C, K, B, O>(
    cold: &C,
    target: &CompositeColdStorage<K, B, O>,
    log_key: Option<&str>,
    mut progress: impl FnMut(u64, u64),
) -> Result<RestoreReport, RestoreError>
where
    C: BlobStore,
    K: KeyValueStore,
    B: BlobStore,
    O: ObjectStore,
{
    let head = log_head(target)?;
    if head != 0 {
        return Err(RestoreError::NotEmpty(head));
    }
    let chain = read_chain(cold)?;
    if chain.windows.is_empty() {
        return Err(RestoreError::NoArchives);
    }
    let total = chain.last_seq();
    let mut snapshot = latest_snapshot(cold, total)?;
    let mut report = RestoreReport {
        snapshot: snapshot.as_ref().map(|s| s.head),
        ..RestoreReport::default()
    };
    let limits = target.limits().clone();
    for m in &chain.windows {
        let bytes = cold
            .get_blob(&m.archive)?
            .ok_or_else(|| ArchiveError::Missing {
                key: m.archive.clone(),
            })?;
        // Every line is parsed (hash and signature verified) before the archive's
        // BLAKE3 is compared, so that an altered entry is named by its line.
        let lines = archive_lines(m, &bytes)?;
        let mut parsed = Vec::with_capacity(lines.len());
        for (i, line) in lines.iter().enumerate() {
            let seq = m.first + i as u64;
            let (at, item) = parse_line(line, &limits).map_err(|p| entry(m, i, p))?;
            parsed.push((seq, at, item));
        }
        check_archive_bytes(m, &bytes)?;
        let mut batch = Vec::new();
        for (i, (seq, at, item)) in parsed.into_iter().enumerate() {
            match &snapshot {
                Some(s) if seq <= s.head => {
                    batch.push((seq, at, item));
                    if batch.len() == LOAD_BATCH || seq == s.head {
                        load(target, &batch).map_err(|p| entry(m, i, p))?;
                        batch.clear();
                    }
                    if seq == s.head {
                        target.install_hot_state(s, &FlushCursor::default())?;
                        snapshot = None;
                    }
                }
                _ => {
                    replay(target, seq, at, &item).map_err(|p| entry(m, i, p))?;
                    report.replayed += 1;
                }
            }
        }
        if !batch.is_empty() {
            load(target, &batch).map_err(|p| entry(m, lines.len() - 1, p))?;
        }
        report.windows += 1;
        report.entries = m.last;
        progress(m.last, total);
    }
    target.set_flush_cursor(&FlushCursor {
        seq: total,
        windows: chain.windows.len() as u64,
        manifest: chain.head_hash.clone(),
        pending: None,
    })?;
    check_restored(&chain, report.snapshot, log_head(target)?)?;
    check_tree(&chain, target, log_key)?;
    Ok(report)
}

/// Checks the last checkpoint of `chain` (the last window that has one) against the
/// Merkle tree of `target`'s log: signed by `log_key` (else by the key it names), and
/// its root the tree's at its size. Answers the size checked (`None`: no checkpoint).
pub fn check_tree<K, B, O>(
    chain: &Chain,
    target: &CompositeColdStorage<K, B, O>,
    log_key: Option<&str>,
) -> Result<Option<u64>, RestoreError>
where
    K: KeyValueStore,
    B: BlobStore,
    O: ObjectStore,
{
    let Some(m) = chain.windows.iter().rev().find(|m| m.checkpoint.is_some()) else {
        return Ok(None);
    };
    let Some((_, cp)) = m.verified_checkpoint(log_key)? else {
        return Ok(None);
    };
    let refused = |reason: String| ArchiveError::Checkpoint {
        key: archive::keys::manifest(m.first),
        reason,
    };
    let root =
        nexus_tlog::root(cp.size, &nexus_store::StoreHashes(target.objects())).map_err(|e| {
            refused(format!(
                "the rebuilt tree has no root at size {}: {e}",
                cp.size
            ))
        })?;
    if root != cp.root {
        return Err(refused(format!(
            "the rebuilt log's Merkle root at size {} is {root}, the checkpoint's is {}",
            cp.size, cp.root
        ))
        .into());
    }
    Ok(Some(cp.size))
}

/// The error of line `i` (0-based) of `m`'s archive.
fn entry(m: &Manifest, i: usize, problem: String) -> RestoreError {
    RestoreError::Entry {
        key: m.archive.clone(),
        line: i as u64 + 1,
        seq: m.first + i as u64,
        problem,
    }
}

/// Stores entries a snapshot covers as they were committed.
fn load<K, B, O>(
    core: &CompositeColdStorage<K, B, O>,
    batch: &[(u64, u64, Archived)],
) -> Result<(), String>
where
    K: KeyValueStore,
    B: BlobStore,
    O: ObjectStore,
{
    core.load_archived(batch).map_err(|e| e.to_string())?;
    store_contract_sources(core, batch)
}

/// The latest snapshot covered by archives up to `archived`, read and checked.
fn latest_snapshot(cold: &impl BlobStore, archived: u64) -> Result<Option<HotState>, RestoreError> {
    let best = list_all(cold, archive::keys::SNAPSHOT_PREFIX)?
        .into_iter()
        .filter_map(|k| archive::keys::parse_snapshot(&k).map(|h| (h, k)))
        .filter(|(h, _)| *h <= archived && *h > 0)
        .max();
    let Some((_, key)) = best else {
        return Ok(None);
    };
    let manifest = cold
        .get_blob(&key)?
        .ok_or_else(|| ArchiveError::Missing { key: key.clone() })?;
    let (_, state) = HotState::from_blobs(&key, &manifest, |k| cold.get_blob(k).ok().flatten())?;
    Ok(Some(state))
}

/// Parses an archive line (an export line): its commit time and its record or action,
/// verified (hash and signature).
pub fn parse_line(line: &[u8], limits: &Limits) -> Result<(u64, Archived), String> {
    let mut v: Value = serde_json::from_slice(line).map_err(|e| format!("malformed JSON: {e}"))?;
    let at = v.get("at").and_then(Value::as_u64).ok_or("missing `at`")?;
    if let Some(rec) = v.get_mut("record").map(Value::take) {
        let rec = Record::from_value(rec, limits).map_err(|e| format!("record: {e}"))?;
        return Ok((at, Archived::Record(Box::new(rec))));
    }
    let action = v
        .get_mut("action")
        .map(Value::take)
        .ok_or("neither `record` nor `action`")?;
    Action::from_value(action.clone(), limits).map_err(|e| format!("action: {e}"))?;
    Ok((at, Archived::Action(action)))
}

/// Replays one entry through the lifecycle at its commit time; it must commit as `seq`.
fn replay<K, B, O>(
    core: &CompositeColdStorage<K, B, O>,
    seq: u64,
    at: u64,
    item: &Archived,
) -> Result<(), String>
where
    K: KeyValueStore,
    B: BlobStore,
    O: ObjectStore,
{
    let refused = |e: CoreError| format!("replay refused it: {} ({})", e, e.code());
    match item {
        Archived::Record(rec) => {
            // A deployment commits as the host committed it: through the governance's
            // deploy (version history, upgrade policy, the old version's Hints).
            if let Some(deploy) = deployment(rec, core.limits()) {
                let (contract, expected) = deploy?;
                let d = governance::deploy(core, rec, &contract, expected, at)
                    .map_err(|e| format!("replay refused the deployment: {e}"))?;
                if d.duplicate || d.seq.is_some_and(|n| n != seq) {
                    return Err(format!("deployment replayed as seq {:?}", d.seq));
                }
                return Ok(());
            }
            // A contract's Hint commits as the governance committed it (the active list
            // keeps it without its source Facts).
            if let Content::Hint(hint) = rec.content()
                && let Some(contract) = hint.source.as_ref().and_then(|s| s.contract)
            {
                let update = governance::HintUpdate {
                    contract,
                    replace_all: false,
                    remove: Vec::new(),
                    add: vec![(**rec).clone()],
                    max_active: usize::MAX,
                };
                return match governance::apply_hints(core, &update, at).map_err(refused)? {
                    governance::Applied::Committed { seq: s, .. } if s.is_none_or(|n| n == seq) => {
                        Ok(())
                    }
                    other => Err(format!("the contract's Hint replayed as {other:?}")),
                };
            }
            let s = core.submit(rec, at).map_err(refused)?;
            if s.duplicate || s.seq.is_some_and(|n| n != seq) {
                return Err(format!(
                    "replayed as seq {:?} (duplicate: {})",
                    s.seq, s.duplicate
                ));
            }
        }
        Archived::Action(value) => {
            let action =
                Action::from_value(value.clone(), core.limits()).map_err(|e| e.to_string())?;
            if let Some(d) = action.content().deployment() {
                core.init_deployment(d).map_err(refused)?;
            }
            core.replay_action(&action, at).map_err(refused)?;
            if log_head(core).map_err(|e| e.to_string())? != seq {
                return Err("replayed at another seq".into());
            }
        }
    }
    Ok(())
}

/// The contract a deployment Fact deploys and the version it expects to replace;
/// `None` for any other record.
fn deployment(
    rec: &Record,
    limits: &Limits,
) -> Option<Result<(Contract, Option<FihHash>), String>> {
    let Content::Fact(f) = rec.content() else {
        return None;
    };
    if f.topic.as_str() != governance::DEPLOY_TOPIC {
        return None;
    }
    Some(governance::deploy_request(f).and_then(|r| {
        Contract::parse_with_limits("contract.nex", &r.source, limits)
            .map(|c| (c, r.expected))
            .map_err(|e| format!("deployed contract does not parse: {e}"))
    }))
}

/// Stores the source of the contracts deployed by `entries` (a loaded deployment's
/// version history comes with the snapshot; its source is the blob the host reads).
fn store_contract_sources<K, B, O>(
    core: &CompositeColdStorage<K, B, O>,
    entries: &[(u64, u64, Archived)],
) -> Result<(), String>
where
    K: KeyValueStore,
    B: BlobStore,
    O: ObjectStore,
{
    for (_, _, item) in entries {
        if let Archived::Record(rec) = item
            && let Some(deploy) = deployment(rec, core.limits())
        {
            let (contract, _) = deploy?;
            core.blobs()
                .put_blob(
                    &governance::keys::blob(&contract.hash()),
                    contract.source().as_bytes(),
                )
                .map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

fn log_head<K, B, O>(core: &CompositeColdStorage<K, B, O>) -> Result<u64, StoreError>
where
    K: KeyValueStore,
    B: BlobStore,
    O: ObjectStore,
{
    match core.objects().get_state(LOG_HEAD_KEY)? {
        None => Ok(0),
        Some(v) => parse_head(&v),
    }
}

/// Every key under `prefix`, in order.
fn list_all(cold: &impl BlobStore, prefix: &str) -> Result<Vec<String>, StoreError> {
    let mut out: Vec<String> = Vec::new();
    loop {
        let page = cold.list_blobs(prefix, out.last().map(String::as_str), LIST_PAGE)?;
        let done = page.len() < LIST_PAGE;
        out.extend(page);
        if done {
            return Ok(out);
        }
    }
}
