//! Test-only hooks (the `test-hooks` feature; never in a deployed build): the storage
//! conformance cases of `nexus_store::conformance` run against the coordinator's
//! SQL-backed [`ObjectStore`], inside the Durable Object, and
//! against the Worker's KV namespace and R2 bucket through the bridge's adapters.

use serde::Serialize;
use worker::{Bucket, Env, KvStore, Response, Result};

use nexus_iobuf::ListQuery;

use nexus_store::conformance::{Op, Outcome, apply, cases};
use nexus_store::{
    BlobStore, Commit, CommitOutcome, KeyValueStore, ObjectStore, StoreError, StoreResult,
};

use crate::coordinator::SqlStates;
use crate::protocol::{ARCHIVE_STATUS_PATH, CONFORMANCE_PATH};
use crate::{kv, r2};

/// What the conformance run found.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    /// Cases run (those made only of the tiers under test).
    pub cases: usize,
    /// Their names, in order.
    pub ran: Vec<&'static str>,
    /// Steps run.
    pub steps: usize,
    /// Each divergence: case, step, op, expected and actual outcome.
    pub failures: Vec<String>,
}

/// The object tier alone: the key-value and blob tiers are not the coordinator's, and
/// the cases that touch them are not run here.
struct StatesOnly<'a>(&'a SqlStates);

fn not_here() -> StoreError {
    StoreError::Backend("the coordinator holds only the object tier".into())
}

impl KeyValueStore for StatesOnly<'_> {
    fn get(&self, _: &str) -> StoreResult<Option<Vec<u8>>> {
        Err(not_here())
    }
    fn set(&self, _: &str, _: &[u8]) -> StoreResult<()> {
        Err(not_here())
    }
    fn delete(&self, _: &str) -> StoreResult<()> {
        Err(not_here())
    }
    fn list(&self, _: &str, _: Option<&str>, _: usize) -> StoreResult<Vec<String>> {
        Err(not_here())
    }
}

impl BlobStore for StatesOnly<'_> {
    fn get_blob(&self, _: &str) -> StoreResult<Option<Vec<u8>>> {
        Err(not_here())
    }
    fn put_blob(&self, _: &str, _: &[u8]) -> StoreResult<()> {
        Err(not_here())
    }
    fn delete_blob(&self, _: &str) -> StoreResult<()> {
        Err(not_here())
    }
    fn list_blobs(&self, _: &str, _: Option<&str>, _: usize) -> StoreResult<Vec<String>> {
        Err(not_here())
    }
}

impl ObjectStore for StatesOnly<'_> {
    fn get_state(&self, key: &str) -> StoreResult<Option<Vec<u8>>> {
        self.0.get_state(key)
    }
    fn get_states(&self, keys: &[&str]) -> StoreResult<Vec<Option<Vec<u8>>>> {
        self.0.get_states(keys)
    }
    fn put_state(&self, key: &str, expected: Option<&[u8]>, new: &[u8]) -> StoreResult<bool> {
        self.0.put_state(key, expected, new)
    }
    fn list_states(&self, p: &str, after: Option<&str>, limit: usize) -> StoreResult<Vec<String>> {
        self.0.list_states(p, after, limit)
    }
    fn commit(&self, commit: &Commit) -> StoreResult<CommitOutcome> {
        self.0.commit(commit)
    }
}

fn object_tier(op: &Op) -> bool {
    matches!(
        op,
        Op::StateGet(_)
            | Op::StateGetMany(_)
            | Op::StatePut { .. }
            | Op::StateList { .. }
            | Op::Commit(_)
    )
}

/// Runs every object-tier conformance case, each on an emptied store.
pub fn run_conformance(store: &SqlStates) -> Report {
    let mut report = Report::default();
    for case in cases() {
        if !case.steps.iter().all(|s| object_tier(&s.op)) {
            continue;
        }
        report.cases += 1;
        report.ran.push(case.name);
        if let Err(e) = store.wipe() {
            report.failures.push(format!("{}: clear: {e}", case.name));
            continue;
        }
        for (i, step) in case.steps.iter().enumerate() {
            report.steps += 1;
            let got: Outcome = apply(&StatesOnly(store), &step.op);
            if got != step.expect {
                report.failures.push(format!(
                    "case {:?}, step {i}: {:?}: expected {:?}, got {got:?}",
                    case.name, step.op, step.expect
                ));
            }
        }
    }
    report
}

/// `POST /__test/conformance`: runs [`run_conformance`] in a coordinator instance of
/// its own (named `conformance`), so the real one is untouched.
pub async fn conformance_route(env: &Env) -> Result<Response> {
    crate::call_coordinator(env, "conformance", CONFORMANCE_PATH).await
}

fn tier_op(op: &Op) -> bool {
    matches!(
        op,
        Op::KvGet(_)
            | Op::KvGetMany(_)
            | Op::KvSet(..)
            | Op::KvDelete(_)
            | Op::KvList { .. }
            | Op::BlobGet(_)
            | Op::BlobPut(..)
            | Op::BlobDelete(_)
            | Op::BlobList { .. }
    )
}

fn outcome<T>(r: StoreResult<T>, f: impl FnOnce(T) -> Outcome) -> Outcome {
    match r {
        Ok(v) => f(v),
        Err(e) => nexus_store::conformance::error_outcome(&e),
    }
}

/// Runs one key-value or blob op through the adapters the bridge uses.
async fn apply_to_bindings(kv: &KvStore, bucket: &Bucket, op: &Op) -> Outcome {
    let query = |prefix: &str, after: &Option<String>, limit: usize| {
        ListQuery::new(prefix, after.as_deref(), limit)
    };
    match op {
        Op::KvGet(k) => outcome(kv::get_many(kv, std::slice::from_ref(k)).await, |(v, _)| {
            Outcome::Value(v.into_iter().next().flatten())
        }),
        Op::KvGetMany(ks) => outcome(kv::get_many(kv, ks).await, |(v, _)| Outcome::Values(v)),
        Op::KvSet(k, v) => outcome(kv::put(kv, k, v).await, |_| Outcome::Done),
        Op::KvDelete(k) => outcome(kv::delete(kv, k).await, |_| Outcome::Done),
        Op::KvList {
            prefix,
            start_after,
            limit,
        } => outcome(
            kv::list(kv, &query(prefix, start_after, *limit)).await,
            |(keys, _)| Outcome::Keys(keys),
        ),
        Op::BlobGet(k) => outcome(r2::get(bucket, k).await, Outcome::Value),
        Op::BlobPut(k, v) => outcome(r2::put(bucket, k, v).await, |_| Outcome::Done),
        Op::BlobDelete(k) => outcome(r2::delete(bucket, k).await, |_| Outcome::Done),
        Op::BlobList {
            prefix,
            start_after,
            limit,
        } => outcome(
            r2::list(bucket, &query(prefix, start_after, *limit)).await,
            |(keys, _)| Outcome::Keys(keys),
        ),
        other => Outcome::Failed(format!("not a key-value or blob op: {other:?}")),
    }
}

/// Empties the KV namespace and the bucket (test instances only).
async fn clear(kv: &KvStore, bucket: &Bucket) -> StoreResult<()> {
    let all = ListQuery::new("", None, usize::MAX);
    for key in kv::list(kv, &all).await?.0 {
        kv::delete(kv, &key).await?;
    }
    for key in r2::list(bucket, &all).await?.0 {
        r2::delete(bucket, &key).await?;
    }
    Ok(())
}

/// Runs every key-value and blob conformance case against the Worker's own KV
/// namespace and R2 bucket, through the bridge's adapters, each on emptied storage.
pub async fn run_tier_conformance(env: &Env) -> Result<Report> {
    let kv = env.kv(crate::KV_BINDING)?;
    let bucket = env.bucket(crate::R2_BINDING)?;
    let mut report = Report::default();
    for case in cases() {
        if !case.steps.iter().all(|s| tier_op(&s.op)) {
            continue;
        }
        report.cases += 1;
        report.ran.push(case.name);
        if let Err(e) = clear(&kv, &bucket).await {
            report.failures.push(format!("{}: clear: {e}", case.name));
            continue;
        }
        for (i, step) in case.steps.iter().enumerate() {
            report.steps += 1;
            let got = apply_to_bindings(&kv, &bucket, &step.op).await;
            if got != step.expect {
                report.failures.push(format!(
                    "case {:?}, step {i}: {:?}: expected {:?}, got {got:?}",
                    case.name, step.op, step.expect
                ));
            }
        }
    }
    Ok(report)
}

/// The coordinator's log head and flush cursor, as JSON bytes (the `/archive-status`
/// call).
pub fn archive_status(store: &SqlStates) -> StoreResult<Vec<u8>> {
    let (_, head) = store.index_progress()?;
    let cursor = nexus_core::archive::FlushCursor::decode(
        nexus_core::storage::keys::FLUSH_CURSOR,
        store
            .get_state(nexus_core::storage::keys::FLUSH_CURSOR)?
            .as_deref(),
    )
    .map_err(|e| StoreError::Backend(e.to_string()))?;
    serde_json::to_vec(&serde_json::json!({ "head": head, "cursor": cursor }))
        .map_err(|e| StoreError::Backend(e.to_string()))
}

/// `GET /__test/archive`: the coordinator's [`archive_status`], with the window
/// manifests, archives and snapshot manifests the bucket holds (`manifests`,
/// `archives`, `snapshots`); with the query `blobs`, also every one of those blobs and
/// the snapshot chunks, by key, in hex (`blobs`).
pub async fn archive_route(env: &Env, query: Option<&str>) -> Result<Response> {
    let mut answer =
        crate::call_coordinator(env, crate::COORDINATOR_NAME, ARCHIVE_STATUS_PATH).await?;
    if answer.status_code() != 200 {
        return Ok(answer);
    }
    let mut status: serde_json::Value = answer.json().await?;
    let bucket = env.bucket(crate::R2_BINDING)?;
    let all = |prefix: &str| ListQuery::new(prefix, None, usize::MAX);
    let failed = |e: StoreError| worker::Error::RustError(e.to_string());
    let (manifests, _) = r2::list(&bucket, &all(nexus_core::archive::keys::MANIFEST_PREFIX))
        .await
        .map_err(failed)?;
    let (archives, _) = r2::list(&bucket, &all(nexus_core::archive::keys::ARCHIVE_PREFIX))
        .await
        .map_err(failed)?;
    let (snapshots, _) = r2::list(&bucket, &all(nexus_core::archive::keys::SNAPSHOT_PREFIX))
        .await
        .map_err(failed)?;
    if query.is_some_and(|q| q.split('&').any(|p| p == "blobs")) {
        let mut blobs = serde_json::Map::new();
        for key in manifests.iter().chain(&archives).chain(&snapshots) {
            if let Some(v) = r2::get(&bucket, key).await.map_err(failed)? {
                blobs.insert(key.clone(), hex::encode(v).into());
            }
        }
        status["blobs"] = blobs.into();
    }
    let snapshots: Vec<String> = snapshots
        .into_iter()
        .filter(|k| k.ends_with(".json"))
        .collect();
    status["manifests"] = serde_json::json!(manifests);
    status["archives"] = serde_json::json!(archives);
    status["snapshots"] = serde_json::json!(snapshots);
    Response::from_json(&status)
}

/// `POST /__test/wipe`: empties the coordinator's storage (the bucket and KV stay);
/// with the query `records`, the bucket's record copies (`r/…`) are deleted first, as
/// if the restore went to a bucket that holds only the archives.
pub async fn wipe_route(env: &Env, query: Option<&str>) -> Result<Response> {
    if query.is_some_and(|q| q.split('&').any(|p| p == "records")) {
        let bucket = env.bucket(crate::R2_BINDING)?;
        let failed = |e: StoreError| worker::Error::RustError(e.to_string());
        let q = ListQuery::new(crate::r2::RECORD_PREFIX, None, usize::MAX);
        for key in r2::list(&bucket, &q).await.map_err(failed)?.0 {
            r2::delete(&bucket, &key).await.map_err(failed)?;
        }
    }
    crate::call_coordinator(env, crate::COORDINATOR_NAME, crate::protocol::WIPE_PATH).await
}

/// `GET /__test/parts?shard=i`: the `xpart/` rows (cross-shard parts awaiting their
/// release or resolution) that shard `i` holds, `{"parts": [key…]}`.
pub async fn parts_route(env: &Env, query: Option<&str>) -> Result<Response> {
    let shard = query
        .and_then(|q| q.split('&').find_map(|p| p.strip_prefix("shard=")))
        .and_then(|i| i.parse().ok())
        .unwrap_or(0);
    let config = crate::shards::ShardConfig::from_env(env)
        .map_err(|e| worker::Error::RustError(e.to_string()))?;
    let stub = config.stub(&env.durable_object(crate::DO_BINDING)?, shard)?;
    let req = crate::protocol::ReadRequest {
        lists: vec![crate::protocol::ListSpec {
            prefix: nexus_shard::protocol::XPART_PREFIX.to_owned(),
            start_after: None,
            limit: 1_000,
        }],
        ..Default::default()
    };
    let reply: crate::protocol::ReadReply =
        crate::shards::call_stub(&stub, shard, crate::protocol::READ_PATH, &req)
            .await
            .map_err(|e| worker::Error::RustError(e.to_string()))?;
    Response::from_json(&serde_json::json!({ "parts": reply.lists.concat() }))
}
