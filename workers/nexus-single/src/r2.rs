//! R2 as the blob tier: gets, puts, deletes and listings with `start_after`, each
//! answering how many R2 calls it made.

use worker::Bucket;

use nexus_iobuf::ListQuery;
use nexus_store::{StoreResult, check_key};

use crate::kv::backend;

/// Prefix of the KV keys of record contents (`nexus_core::storage::keys::record`).
/// Their content is also kept in R2 under the same key: KV takes up to a minute to
/// reach other locations (and caches a miss as long), so a Worker in another location
/// can find a record's commit marker at the coordinator before KV has its content; R2
/// is strongly consistent and answers then.
pub const RECORD_PREFIX: &str = "r/";

/// Fills in, from their R2 copies and concurrently, the records (keys under
/// [`RECORD_PREFIX`]) that a KV read of `keys` answered as absent; answers the number
/// of R2 reads made.
pub async fn fill_missing_records(
    bucket: &Bucket,
    keys: &[String],
    values: &mut [Option<Vec<u8>>],
) -> StoreResult<u32> {
    let reads = keys
        .iter()
        .zip(values.iter_mut())
        .filter(|(k, v)| v.is_none() && k.starts_with(RECORD_PREFIX))
        .map(|(k, v)| async move {
            *v = get(bucket, k).await?;
            StoreResult::Ok(())
        });
    let mut n = 0;
    for r in futures_util::future::join_all(reads).await {
        r?;
        n += 1;
    }
    Ok(n)
}

/// Most keys of one R2 list call.
pub const R2_LIST_PAGE: usize = 1_000;

/// Reads one blob.
pub async fn get(bucket: &Bucket, key: &str) -> StoreResult<Option<Vec<u8>>> {
    check_key(key)?;
    let object = bucket
        .get(key)
        .execute()
        .await
        .map_err(|e| backend("R2 get", e))?;
    match object.as_ref().and_then(|o| o.body()) {
        None => Ok(None),
        Some(body) => Ok(Some(body.bytes().await.map_err(|e| backend("R2 body", e))?)),
    }
}

/// Writes one blob.
pub async fn put(bucket: &Bucket, key: &str, bytes: &[u8]) -> StoreResult<()> {
    check_key(key)?;
    bucket
        .put(key, bytes.to_vec())
        .execute()
        .await
        .map(drop)
        .map_err(|e| backend("R2 put", e))
}

/// Removes one blob (absent ones too).
pub async fn delete(bucket: &Bucket, key: &str) -> StoreResult<()> {
    check_key(key)?;
    bucket
        .delete(key)
        .await
        .map_err(|e| backend("R2 delete", e))
}

/// Keys under the prefix, strictly after `start_after`, at most `limit`; answers the
/// keys and the number of list calls made.
pub async fn list(bucket: &Bucket, q: &ListQuery) -> StoreResult<(Vec<String>, u32)> {
    let mut keys: Vec<String> = Vec::new();
    let mut calls = 0;
    let mut cursor: Option<String> = None;
    while keys.len() < q.limit {
        let want = (q.limit - keys.len()).min(R2_LIST_PAGE);
        let mut call = bucket
            .list()
            .prefix(q.prefix.clone())
            .limit(u32::try_from(want).unwrap_or(1_000));
        match (cursor.take(), &q.start_after) {
            (Some(c), _) => call = call.cursor(c),
            // A cursor before the prefix means "from the start of the prefix".
            (None, Some(a)) if a.as_str() >= q.prefix.as_str() => {
                call = call.start_after(a.clone());
            }
            (None, _) => {}
        }
        let page = call.execute().await.map_err(|e| backend("R2 list", e))?;
        calls += 1;
        keys.extend(page.objects().into_iter().map(|o| o.key()));
        match page.cursor() {
            Some(c) if page.truncated() => cursor = Some(c),
            _ => break,
        }
    }
    keys.truncate(q.limit);
    Ok((keys, calls))
}
