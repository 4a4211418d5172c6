//! The contract in the store: the versioned, CAS-moved pointer to the current
//! contract blob, its history, deployment under the current version's upgrade policy,
//! and committing the Hints an [`Evaluator`](crate::Evaluator) emits.
//!
//! # Key layout (beside the core's, see `nexus_core::storage`)
//!
//! | tier | key | value |
//! |---|---|---|
//! | Blob | `contract/blob/{hash}` | a contract's source bytes (content-addressed) |
//! | Object | `contract/current` | [`Current`]: the version number and hash in force |
//! | Object | `contract/v/{version:010}` | [`VersionEntry`]: who deployed which hash, when |
//!
//! A deployment is a signed Fact under [`DEPLOY_TOPIC`] whose body is
//! `{"source": "<contract.nex text>", "expected": "<current hash>" | null}`; it is
//! committed (and logged) in the same atomic commit that moves the pointer, so the
//! provenance DAG records who deployed what. Contract Hints live in the core's active
//! Hint list (`hints/active`) beside directly inserted ones, so admissibility and
//! priority need nothing new; each is also committed as a record (and logged), so it
//! can be fetched and explained by hash.

use std::collections::BTreeSet;

use nexus_core::storage::{
    decode_stored_record, encode_active_hints, is_contract_hint, keys as core_keys,
};
use nexus_core::{
    ActiveHint, AuthorKey, CompositeColdStorage, Content, CoreError, CoreResult, Fact, FihHash,
    Kind, LogEntry, Record, Topic,
};
use nexus_store::{BlobStore, CasOp, Commit, CommitOutcome, KeyValueStore, ObjectStore};
use serde::{Deserialize, Serialize};

use crate::syntax::Contract;
use crate::upgrade::UpgradeError;

/// Topic of deployment Facts.
pub const DEPLOY_TOPIC: &str = "nexus/contract";

/// Most Facts read per upgrade key when checking an upgrade quorum (a key that
/// posted more under the approvals topic can hide only its own approval).
pub const MAX_APPROVALS_SCANNED: usize = nexus_core::storage::MAX_SCAN;

/// Storage keys of the contract.
pub mod keys {
    use nexus_core::FihHash;

    /// The pointer to the version in force.
    pub const CURRENT: &str = "contract/current";
    /// Prefix of the version history.
    pub const VERSION_PREFIX: &str = "contract/v/";

    /// Object key of version `n`'s history entry.
    pub fn version(n: u64) -> String {
        format!("{VERSION_PREFIX}{n:010}")
    }

    /// Blob key of a contract's source.
    pub fn blob(h: &FihHash) -> String {
        format!("contract/blob/{h}")
    }
}

/// The pointer to the contract in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Current {
    /// Version number (1 for the first deployment).
    pub version: u64,
    /// The contract's hash.
    pub hash: FihHash,
}

/// One deployment in the history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionEntry {
    /// Version number.
    pub version: u64,
    /// The contract's hash.
    pub hash: FihHash,
    /// Its `contract` name.
    pub name: String,
    /// Who deployed it.
    pub deployer: AuthorKey,
    /// Host time of the deployment, ms.
    pub at: u64,
    /// The deployment Fact.
    pub deploy: FihHash,
    /// The approval Facts that made the quorum (empty without one).
    pub approvals: Vec<FihHash>,
    /// The version it replaced.
    pub previous: Option<FihHash>,
}

/// What a deployment Fact asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeployRequest {
    /// The contract's source text.
    pub source: String,
    /// The hash the caller expects to replace (`None`: no contract yet).
    pub expected: Option<FihHash>,
}

/// Reads a deployment Fact's request; the message says what is wrong.
pub fn deploy_request(fact: &Fact) -> Result<DeployRequest, String> {
    if fact.topic.as_str() != DEPLOY_TOPIC {
        return Err(format!(
            "a deployment Fact has topic {DEPLOY_TOPIC:?}, not {:?}",
            fact.topic.as_str()
        ));
    }
    if !fact.parents.is_empty() || fact.resolves.is_some() {
        return Err("a deployment Fact takes no parents and resolves nothing".into());
    }
    let obj = fact
        .body
        .as_object()
        .ok_or("a deployment Fact's body is an object")?;
    if let Some(k) = obj
        .keys()
        .find(|k| !matches!(k.as_str(), "source" | "expected"))
    {
        return Err(format!(
            "unknown member {k:?} in a deployment body (it has source, expected)"
        ));
    }
    let source = obj
        .get("source")
        .and_then(|s| s.as_str())
        .ok_or("a deployment body needs \"source\": the contract text")?
        .to_owned();
    let expected = match obj.get("expected") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(s)) => Some(
            s.parse::<FihHash>()
                .map_err(|e| format!("\"expected\" must be a contract hash or null: {e}"))?,
        ),
        Some(_) => return Err("\"expected\" must be a contract hash or null".into()),
    };
    Ok(DeployRequest { source, expected })
}

/// Why a deployment was refused.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    /// The caller expected another version to be in force (nothing changed).
    #[error("the contract in force is {}, not the expected {}", show(.current), show(.expected))]
    Stale {
        /// The version in force.
        current: Option<FihHash>,
        /// What the caller expected.
        expected: Option<FihHash>,
    },
    /// The current version's upgrade policy refuses it.
    #[error(transparent)]
    Refused(#[from] UpgradeError),
    /// The stored contract in force does not parse (a corrupt store).
    #[error("the stored contract {hash} is unreadable: {message}")]
    Unreadable {
        /// Its hash.
        hash: FihHash,
        /// Why.
        message: String,
    },
    /// Storage, or a lost race.
    #[error(transparent)]
    Core(#[from] CoreError),
}

impl From<nexus_store::StoreError> for DeployError {
    fn from(e: nexus_store::StoreError) -> Self {
        DeployError::Core(CoreError::Store(e))
    }
}

fn show(h: &Option<FihHash>) -> String {
    h.map_or_else(|| "none".to_owned(), |h| h.to_hex())
}

/// What a deployment did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deployed {
    /// The new version's entry.
    pub entry: VersionEntry,
    /// Sequence number of the commit's log entry, when the store knows it.
    pub seq: Option<u64>,
    /// True when this deployment Fact had already been applied (nothing changed).
    pub duplicate: bool,
}

fn corrupt(key: &str, reason: impl Into<String>) -> CoreError {
    CoreError::Store(nexus_store::StoreError::Corrupt {
        key: key.to_owned(),
        reason: reason.into(),
    })
}

fn decode<T: for<'de> Deserialize<'de>>(key: &str, bytes: &[u8]) -> CoreResult<T> {
    serde_json::from_slice(bytes).map_err(|e| corrupt(key, e.to_string()))
}

/// The version in force (`None`: no contract deployed).
pub fn current<K, B, O>(core: &CompositeColdStorage<K, B, O>) -> CoreResult<Option<Current>>
where
    K: KeyValueStore,
    B: BlobStore,
    O: ObjectStore,
{
    core.objects()
        .get_state(keys::CURRENT)?
        .map(|v| decode(keys::CURRENT, &v))
        .transpose()
}

/// A stored contract's source.
pub fn source<K, B, O>(core: &CompositeColdStorage<K, B, O>, h: &FihHash) -> CoreResult<String>
where
    K: KeyValueStore,
    B: BlobStore,
    O: ObjectStore,
{
    let key = keys::blob(h);
    let bytes = core
        .blobs()
        .get_blob(&key)?
        .ok_or_else(|| corrupt(&key, "contract blob missing"))?;
    String::from_utf8(bytes).map_err(|_| corrupt(&key, "contract blob is not UTF-8"))
}

/// Loads and parses a stored contract.
pub fn load<K, B, O>(
    core: &CompositeColdStorage<K, B, O>,
    h: &FihHash,
) -> Result<Contract, DeployError>
where
    K: KeyValueStore,
    B: BlobStore,
    O: ObjectStore,
{
    let src = source(core, h)?;
    let c = Contract::parse_with_limits("contract.nex", &src, core.limits()).map_err(|e| {
        DeployError::Unreadable {
            hash: *h,
            message: e.to_string(),
        }
    })?;
    if c.hash() != *h {
        return Err(DeployError::Unreadable {
            hash: *h,
            message: format!("its bytes hash to {}", c.hash()),
        });
    }
    Ok(c)
}

/// The version history, oldest first (at most `limit` entries from version `from`).
pub fn history<K, B, O>(
    core: &CompositeColdStorage<K, B, O>,
    from: u64,
    limit: usize,
) -> CoreResult<Vec<VersionEntry>>
where
    K: KeyValueStore,
    B: BlobStore,
    O: ObjectStore,
{
    let after = (from > 1).then(|| keys::version(from - 1));
    let found = core
        .objects()
        .list_states(keys::VERSION_PREFIX, after.as_deref(), limit)?;
    let refs: Vec<&str> = found.iter().map(String::as_str).collect();
    let values = core.objects().get_states(&refs)?;
    found
        .iter()
        .zip(values)
        .filter_map(|(k, v)| v.map(|v| decode(k, &v)))
        .collect()
}

/// The candidate approvals of an upgrade under `policy`'s quorum: for each upgrade
/// key, the first [`MAX_APPROVALS_SCANNED`] Facts it signed under the approvals topic
/// (or below), read from the core's author index. Facts of any other key are never
/// read, so no volume of them can hide an approval, and a key's own Facts can hide
/// only its own. Every key's listing is read before any record, so that a session
/// learns them all in the same rounds.
fn approvals<K, B, O>(
    core: &CompositeColdStorage<K, B, O>,
    keys: &BTreeSet<AuthorKey>,
    topic: &Topic,
) -> CoreResult<Vec<(FihHash, Fact)>>
where
    K: KeyValueStore,
    B: BlobStore,
    O: ObjectStore,
{
    let mut found = Vec::new();
    for key in keys {
        let page = core.facts_by_author(key, topic, None, MAX_APPROVALS_SCANNED)?;
        found.extend(page.items);
    }
    let rec_keys: Vec<String> = found.iter().map(core_keys::record).collect();
    let refs: Vec<&str> = rec_keys.iter().map(String::as_str).collect();
    let mut out = Vec::with_capacity(found.len());
    for ((h, k), bytes) in found.iter().zip(&rec_keys).zip(core.kv().get_many(&refs)?) {
        let bytes = bytes.ok_or_else(|| corrupt(k, "indexed record missing"))?;
        let rec = decode_stored_record(k, &bytes, core.limits())?;
        if let Content::Fact(f) = rec.content() {
            out.push((*h, f.clone()));
        }
    }
    Ok(out)
}

/// Deploys `contract` as requested by the signed deployment Fact `record` (whose
/// request is `req`), if the version in force is `req.expected` and its upgrade
/// policy allows it: one atomic commit stores the deployment Fact, moves the pointer
/// by compare-and-swap, appends the history entry, and withdraws every Hint the old
/// version emitted (the host then evaluates the new one over all Facts). The caller
/// checked the record's signature and the host's allowlist.
pub fn deploy<K, B, O>(
    core: &CompositeColdStorage<K, B, O>,
    record: &Record,
    contract: &Contract,
    expected: Option<FihHash>,
    now: u64,
) -> Result<Deployed, DeployError>
where
    K: KeyValueStore,
    B: BlobStore,
    O: ObjectStore,
{
    let Content::Fact(fact) = record.content() else {
        return Err(CoreError::WrongKind {
            hash: record.hash(),
            actual: record.content().kind(),
            expected: Kind::Fact,
        }
        .into());
    };
    let h = record.hash();
    let committed_key = core_keys::committed(&h);
    let [cur_raw, committed, hints_raw]: [Option<Vec<u8>>; 3] = core
        .objects()
        .get_states(&[keys::CURRENT, &committed_key, core_keys::HINTS])?
        .try_into()
        .map_err(|_| corrupt(keys::CURRENT, "bulk read returned a wrong count"))?;
    let cur: Option<Current> = cur_raw
        .as_deref()
        .map(|v| decode(keys::CURRENT, v))
        .transpose()?;
    if committed.is_some() {
        // This very deployment was applied before: answer as it did.
        if let Some(c) = cur
            && c.hash == contract.hash()
            && let Some(entry) = history(core, c.version, 1)?.into_iter().next()
            && entry.deploy == h
        {
            return Ok(Deployed {
                entry,
                seq: None,
                duplicate: true,
            });
        }
        return Err(DeployError::Stale {
            current: cur.map(|c| c.hash),
            expected,
        });
    }
    if cur.map(|c| c.hash) != expected {
        return Err(DeployError::Stale {
            current: cur.map(|c| c.hash),
            expected,
        });
    }
    let mut counted = Vec::new();
    if let Some(c) = cur {
        let old = load(core, &c.hash)?;
        let policy = old.upgrade();
        let found = match &policy.quorum {
            Some(q) => approvals(core, &policy.keys, &q.topic)?,
            None => Vec::new(),
        };
        counted = policy.authorize(&fact.author, &c.hash, &contract.hash(), &found)?;
    }
    let version = cur.map_or(1, |c| c.version + 1);
    let entry = VersionEntry {
        version,
        hash: contract.hash(),
        name: contract.name().to_owned(),
        deployer: fact.author,
        at: now,
        deploy: h,
        approvals: counted,
        previous: cur.map(|c| c.hash),
    };
    let new_current = Current {
        version,
        hash: contract.hash(),
    };
    let mut ops = vec![
        CasOp {
            key: keys::CURRENT.to_owned(),
            expected: cur_raw,
            new: Some(serde_json::to_vec(&new_current).unwrap_or_default()),
        },
        CasOp {
            key: keys::version(version),
            expected: None,
            new: Some(serde_json::to_vec(&entry).unwrap_or_default()),
        },
        CasOp {
            key: committed_key,
            expected: None,
            new: Some(Kind::Fact.as_str().as_bytes().to_vec()),
        },
    ];
    // The old version's Hints stop applying with it.
    if let Some(kept) = without_contract_hints(hints_raw.as_deref())? {
        ops.push(CasOp {
            key: core_keys::HINTS.to_owned(),
            expected: hints_raw.clone(),
            new: Some(kept),
        });
    }
    let log = vec![log_entry(h, Kind::Fact, now)];
    core.blobs()
        .put_blob(&keys::blob(&contract.hash()), contract.source().as_bytes())?;
    core.kv().set(&core_keys::record(&h), &record.to_json())?;
    let seq = commit(core, ops, log)?;
    write_indexes(core, record)?;
    Ok(Deployed {
        entry,
        seq,
        duplicate: false,
    })
}

/// The active Hint list without the Hints contracts emitted (`None`: it has none).
fn without_contract_hints(raw: Option<&[u8]>) -> CoreResult<Option<Vec<u8>>> {
    let hints: Vec<ActiveHint> = match raw {
        None => return Ok(None),
        Some(v) => decode(core_keys::HINTS, v)?,
    };
    let kept: Vec<&ActiveHint> = hints
        .iter()
        .filter(|a| a.hint.source.as_ref().is_none_or(|s| s.contract.is_none()))
        .collect();
    Ok((kept.len() != hints.len()).then(|| serde_json::to_vec(&kept).unwrap_or_default()))
}

/// For a replay of the commit log (`nexus verify --replay`): what a deployment's
/// commit did besides storing its Fact, when the replayed Fact `rec` is one — the
/// Hints of the version it replaced stop applying. Answers whether it was one.
pub fn replay_deployment<K, B, O>(
    core: &CompositeColdStorage<K, B, O>,
    rec: &Record,
) -> CoreResult<bool>
where
    K: KeyValueStore,
    B: BlobStore,
    O: ObjectStore,
{
    let Content::Fact(f) = rec.content() else {
        return Ok(false);
    };
    if f.topic.as_str() != DEPLOY_TOPIC {
        return Ok(false);
    }
    let raw = core.objects().get_state(core_keys::HINTS)?;
    if let Some(kept) = without_contract_hints(raw.as_deref())? {
        commit(
            core,
            vec![CasOp {
                key: core_keys::HINTS.to_owned(),
                expected: raw,
                new: Some(kept),
            }],
            Vec::new(),
        )?;
    }
    Ok(true)
}

fn log_entry(hash: FihHash, kind: Kind, at: u64) -> Vec<u8> {
    serde_json::to_vec(&LogEntry::Record { hash, kind, at }).unwrap_or_default()
}

fn commit<K, B, O>(
    core: &CompositeColdStorage<K, B, O>,
    ops: Vec<CasOp>,
    log: Vec<Vec<u8>>,
) -> CoreResult<Option<u64>>
where
    K: KeyValueStore,
    B: BlobStore,
    O: ObjectStore,
{
    match core.objects().commit(&Commit {
        reads: Vec::new(),
        ops,
        log,
    })? {
        CommitOutcome::Applied { first_seq } => Ok(first_seq),
        CommitOutcome::Conflict(failed) => Err(CoreError::Conflict {
            keys: failed.into_iter().map(|f| f.key).collect(),
        }),
        _ => Err(CoreError::Conflict { keys: vec![] }),
    }
}

/// The index entries the core writes after a record's commit
/// ([`core_keys::index_keys`]).
fn write_indexes<K, B, O>(core: &CompositeColdStorage<K, B, O>, rec: &Record) -> CoreResult<()>
where
    K: KeyValueStore,
    B: BlobStore,
    O: ObjectStore,
{
    for key in core_keys::index_keys(rec) {
        core.kv().set(&key, b"")?;
    }
    Ok(())
}

/// A change to the contract's Hints, computed by the host's evaluator.
#[derive(Debug, Clone, PartialEq)]
pub struct HintUpdate {
    /// The contract that emitted them: the update applies only while it is in force.
    pub contract: FihHash,
    /// Drop every contract Hint first (a full reconciliation after a deployment or a
    /// restart); otherwise only `remove`.
    pub replace_all: bool,
    /// Hints to withdraw.
    pub remove: Vec<FihHash>,
    /// Hints to add (signed with the contract key, sources committed).
    pub add: Vec<Record>,
    /// Most contract Hints that may be active once it applies (the contract's own
    /// room, apart from posted Hints; see [`nexus_core::storage::MAX_CONTRACT_HINTS`]).
    pub max_active: usize,
}

/// What [`apply_hints`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// Committed; the number of Hints now active.
    Committed {
        /// Active Hints after the commit (all sources).
        active: usize,
        /// Sequence number of the first log entry, when known.
        seq: Option<u64>,
    },
    /// Nothing to change.
    Unchanged,
    /// Another version is in force now: the update was dropped.
    Superseded,
}

/// Commits a [`HintUpdate`] in one atomic commit: the new Hint records (committed and
/// logged), and the active list, which also drops Hints that have expired.
pub fn apply_hints<K, B, O>(
    core: &CompositeColdStorage<K, B, O>,
    update: &HintUpdate,
    now: u64,
) -> CoreResult<Applied>
where
    K: KeyValueStore,
    B: BlobStore,
    O: ObjectStore,
{
    let mut keys_read = vec![keys::CURRENT.to_owned(), core_keys::HINTS.to_owned()];
    keys_read.extend(update.add.iter().map(|r| core_keys::committed(&r.hash())));
    let refs: Vec<&str> = keys_read.iter().map(String::as_str).collect();
    let mut values = core.objects().get_states(&refs)?.into_iter();
    let cur: Option<Current> = values
        .next()
        .flatten()
        .map(|v| decode(keys::CURRENT, &v))
        .transpose()?;
    if cur.map(|c| c.hash) != Some(update.contract) {
        return Ok(Applied::Superseded);
    }
    let hints_raw = values.next().flatten();
    let mut hints: Vec<ActiveHint> = match &hints_raw {
        None => Vec::new(),
        Some(v) => decode(core_keys::HINTS, v)?,
    };
    let before = hints.len();
    hints.retain(|a| {
        let ours = is_contract_hint(&a.hint);
        a.hint.active_at(now) && !(update.replace_all && ours) && !update.remove.contains(&a.hash)
    });
    let mut changed = hints.len() != before;
    let mut ops = Vec::new();
    let mut log = Vec::new();
    let mut new_records = Vec::new();
    for (rec, committed) in update.add.iter().zip(values) {
        let Content::Hint(hint) = rec.content() else {
            return Err(CoreError::WrongKind {
                hash: rec.hash(),
                actual: rec.content().kind(),
                expected: Kind::Hint,
            });
        };
        let h = rec.hash();
        if committed.is_none() {
            ops.push(CasOp {
                key: core_keys::committed(&h),
                expected: None,
                new: Some(Kind::Hint.as_str().as_bytes().to_vec()),
            });
            log.push(log_entry(h, Kind::Hint, now));
            new_records.push(rec);
        }
        if hint.active_at(now) && !hints.iter().any(|a| a.hash == h) {
            // The active list is read and decoded by every proposal and claim: it keeps
            // what admissibility and priority need, and the record (by hash) keeps the
            // triggering Facts, up to 64 hashes a Hint.
            let mut lean = hint.clone();
            if let Some(src) = &mut lean.source {
                src.facts.clear();
            }
            hints.push(ActiveHint {
                hash: h,
                hint: lean,
            });
            changed = true;
        }
    }
    if !changed && ops.is_empty() {
        return Ok(Applied::Unchanged);
    }
    hints.sort_by_key(|a| a.hash);
    // The contract's room is its own: posted Hints never take it.
    let ours = hints.iter().filter(|a| is_contract_hint(&a.hint)).count();
    if ours > update.max_active {
        return Err(CoreError::TooManyHints(ours));
    }
    let active = hints.len();
    if changed {
        ops.push(CasOp {
            key: core_keys::HINTS.to_owned(),
            expected: hints_raw,
            new: Some(encode_active_hints(&hints)),
        });
    }
    for rec in &new_records {
        core.kv()
            .set(&core_keys::record(&rec.hash()), &rec.to_json())?;
    }
    let seq = commit(core, ops, log)?;
    for rec in new_records {
        write_indexes(core, rec)?;
    }
    Ok(Applied::Committed { active, seq })
}
