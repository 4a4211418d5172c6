//! Workers KV as the key-value tier: bulk gets (≤ 100 keys a call) and UTF-8 puts,
//! shared by the request bridge and the coordinator's index repair.

use worker::KvStore;

use nexus_store::{StoreError, StoreResult};

/// Most keys of one Workers KV bulk get.
pub const KV_BULK_GET: usize = 100;

pub(crate) fn backend(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(format!("{what}: {e}"))
}

/// Reads `keys` with one bulk get per 100 keys; answers the values in order and the
/// number of KV calls made.
pub async fn get_many(kv: &KvStore, keys: &[String]) -> StoreResult<(Vec<Option<Vec<u8>>>, u32)> {
    let mut out = Vec::with_capacity(keys.len());
    let mut calls = 0;
    for chunk in keys.chunks(KV_BULK_GET) {
        let mut values = kv
            .get_bulk(chunk)
            .text()
            .await
            .map_err(|e| backend("KV bulk get", e))?;
        calls += 1;
        out.extend(
            chunk
                .iter()
                .map(|k| values.remove(k).flatten().map(String::into_bytes)),
        );
    }
    Ok((out, calls))
}

/// Writes one value. Bulk gets return text: every value neXus writes to KV is UTF-8
/// (JSON records, empty index entries), and anything else is refused rather than
/// corrupted.
pub async fn put(kv: &KvStore, key: &str, value: &[u8]) -> StoreResult<()> {
    let text = std::str::from_utf8(value)
        .map_err(|_| backend("KV put", format!("value of {key} is not UTF-8")))?;
    kv.put(key, text)
        .map_err(|e| backend("KV put", e))?
        .execute()
        .await
        .map_err(|e| backend("KV put", e))
}
