//! `GET /v1/checkpoint`, `/v1/proof/inclusion`, `/v1/proof/consistency`: the commit
//! log's transparency-log answers (spec/tlog.md), the same on both hosts.

use nexus_core::CompositeColdStorage;
use nexus_store::{BlobStore, KeyValueStore, ObjectStore, StoreHashes, log_key, tree_size};
use nexus_tlog::{Hash, LogKey, TreeError};
use serde_json::json;

use crate::ErrorCode;
use crate::error::ApiError;

fn store_error(e: nexus_store::StoreError) -> ApiError {
    crate::error::core_error(&nexus_core::CoreError::Store(e))
}

fn tree_error(e: TreeError<nexus_store::StoreError>) -> ApiError {
    match e {
        TreeError::Source(e) => store_error(e),
        other => ApiError::bad_request(other.to_string()),
    }
}

fn b64(hashes: &[Hash]) -> Vec<String> {
    hashes.iter().map(ToString::to_string).collect()
}

/// The tree's size (the leaves the store's tree has: the log head, unless the tree
/// still catches up with an older log).
fn size<K: KeyValueStore, B: BlobStore, O: ObjectStore>(
    core: &CompositeColdStorage<K, B, O>,
) -> Result<u64, ApiError> {
    let objects = core.objects();
    let head = match objects
        .get_state(nexus_store::LOG_HEAD_KEY)
        .map_err(store_error)?
    {
        None => 0,
        Some(v) => nexus_store::parse_head(&v).map_err(store_error)?,
    };
    tree_size(head, &mut |k| objects.get_state(k)).map_err(store_error)
}

fn check_size(asked: Option<u64>, size: u64, name: &str) -> Result<u64, ApiError> {
    match asked {
        None => Ok(size),
        Some(n) if n <= size => Ok(n),
        Some(n) => Err(ApiError::bad_request(format!(
            "{name}={n} is past the tree, which has {size} leaves"
        ))
        .with("parameter", name.to_owned())
        .with("tree_size", size)),
    }
}

/// `GET /v1/checkpoint`: the signed checkpoint of the tree now.
pub fn checkpoint<K: KeyValueStore, B: BlobStore, O: ObjectStore>(
    core: &CompositeColdStorage<K, B, O>,
    key: Option<&LogKey>,
) -> Result<Vec<u8>, ApiError> {
    let Some(key) = key else {
        return Err(ApiError::new(
            ErrorCode::NoLogKey,
            "this host has no log key, so it signs no checkpoint (a Worker needs its \
             NEXUS_LOG_KEY secret)",
        ));
    };
    let deployment = core
        .deployment()
        .map_err(|e| crate::error::core_error(&e))?
        .ok_or_else(|| ApiError::new(ErrorCode::Storage, "the store has no deployment id"))?;
    let signer = key
        .signer(&nexus_tlog::origin(deployment.as_str()))
        .map_err(|e| ApiError::new(ErrorCode::Storage, e.to_string()))?;
    let size = size(core)?;
    let root = nexus_tlog::root(size, &StoreHashes(core.objects())).map_err(tree_error)?;
    Ok(
        serde_json::to_vec(&nexus_tlog::SignedCheckpoint::sign(&signer, size, &root))
            .unwrap_or_default(),
    )
}

/// `GET /v1/proof/inclusion?seq=N&size=M`: the audit path of log entry `seq`
/// (leaf `seq - 1`) in the tree of `size` leaves (default: the tree now).
pub fn inclusion<K: KeyValueStore, B: BlobStore, O: ObjectStore>(
    core: &CompositeColdStorage<K, B, O>,
    seq: u64,
    asked: Option<u64>,
) -> Result<Vec<u8>, ApiError> {
    let size = check_size(asked, size(core)?, "size")?;
    if seq == 0 || seq > size {
        return Err(ApiError::bad_request(format!(
            "seq={seq} is not in a tree of {size} leaves (entries 1..={size})"
        ))
        .with("parameter", "seq"));
    }
    let entry = core
        .objects()
        .get_state(&log_key(seq))
        .map_err(store_error)?
        .ok_or_else(|| ApiError::new(ErrorCode::Storage, format!("log entry {seq} is missing")))?;
    let hashes = StoreHashes(core.objects());
    let proof = nexus_tlog::prove_inclusion(size, seq - 1, &hashes).map_err(tree_error)?;
    let root = nexus_tlog::root(size, &hashes).map_err(tree_error)?;
    Ok(serde_json::to_vec(&json!({
        "seq": seq,
        "size": size,
        "leaf_hash": nexus_tlog::leaf_hash(&entry).to_string(),
        "root": root.to_string(),
        "proof": b64(&proof),
    }))
    .unwrap_or_default())
}

/// `GET /v1/proof/consistency?from=M&to=N`: the proof that the tree of `from` leaves
/// is a prefix of the tree of `to` leaves (default: the tree now).
pub fn consistency<K: KeyValueStore, B: BlobStore, O: ObjectStore>(
    core: &CompositeColdStorage<K, B, O>,
    from: u64,
    asked: Option<u64>,
) -> Result<Vec<u8>, ApiError> {
    let to = check_size(asked, size(core)?, "to")?;
    if from > to {
        return Err(
            ApiError::bad_request(format!("from={from} is past to={to}")).with("parameter", "from"),
        );
    }
    let hashes = StoreHashes(core.objects());
    let proof = nexus_tlog::prove_consistency(from, to, &hashes).map_err(tree_error)?;
    let from_root = nexus_tlog::root(from, &hashes).map_err(tree_error)?;
    let to_root = nexus_tlog::root(to, &hashes).map_err(tree_error)?;
    Ok(serde_json::to_vec(&json!({
        "from": from,
        "to": to,
        "from_root": from_root.to_string(),
        "to_root": to_root.to_string(),
        "proof": b64(&proof),
    }))
    .unwrap_or_default())
}
