//! Workers KV as the key-value tier, shared by the request bridge, the coordinator's
//! index repair and the test hooks: bulk gets (≤ 100 keys a call), listings with a
//! `start_after`, and binary-safe values.
//!
//! KV bulk gets return text, so values are stored as text: a value that is UTF-8 and
//! does not start with NUL (every value neXus writes: JSON records, empty index
//! entries) is stored as it is; any other is stored as NUL followed by its hex.

use worker::KvStore;

use nexus_iobuf::ListQuery;
use nexus_store::{StoreError, StoreResult, check_key};

/// Most keys of one Workers KV bulk get.
pub const KV_BULK_GET: usize = 100;
/// Most keys of one Workers KV list call.
pub const KV_LIST_PAGE: u64 = 1_000;

pub(crate) fn backend(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(format!("{what}: {e}"))
}

/// The text a value is stored as.
pub fn encode(value: &[u8]) -> String {
    match std::str::from_utf8(value) {
        Ok(text) if !text.starts_with('\0') => text.to_owned(),
        _ => format!("\0{}", hex::encode(value)),
    }
}

/// The value a stored text stands for.
pub fn decode(key: &str, text: String) -> StoreResult<Vec<u8>> {
    match text.strip_prefix('\0') {
        None => Ok(text.into_bytes()),
        Some(h) => hex::decode(h).map_err(|e| StoreError::Corrupt {
            key: key.to_owned(),
            reason: format!("bad binary KV value: {e}"),
        }),
    }
}

/// Reads `keys` with one bulk get per 100 keys; answers the values in order and the
/// number of KV calls made.
pub async fn get_many(kv: &KvStore, keys: &[String]) -> StoreResult<(Vec<Option<Vec<u8>>>, u32)> {
    for key in keys {
        check_key(key)?;
    }
    let mut out = Vec::with_capacity(keys.len());
    let mut calls = 0;
    for chunk in keys.chunks(KV_BULK_GET) {
        let mut values = kv
            .get_bulk(chunk)
            .text()
            .await
            .map_err(|e| backend("KV bulk get", e))?;
        calls += 1;
        for k in chunk {
            // A key asked twice is answered once: clone, do not take.
            out.push(match values.get(k).cloned().flatten() {
                None => None,
                Some(text) => Some(decode(k, text)?),
            });
        }
        values.clear();
    }
    Ok((out, calls))
}

/// Writes one value.
pub async fn put(kv: &KvStore, key: &str, value: &[u8]) -> StoreResult<()> {
    check_key(key)?;
    kv.put(key, encode(value))
        .map_err(|e| backend("KV put", e))?
        .execute()
        .await
        .map_err(|e| backend("KV put", e))
}

/// Removes one key (absent keys too).
pub async fn delete(kv: &KvStore, key: &str) -> StoreResult<()> {
    check_key(key)?;
    kv.delete(key).await.map_err(|e| backend("KV delete", e))
}

/// A listing with `start_after`: KV lists only by prefix and cursor, so the pages are
/// walked from the start of the prefix and the keys up to `start_after` skipped.
/// Answers the keys and the number of KV calls made.
pub async fn list(kv: &KvStore, q: &ListQuery) -> StoreResult<(Vec<String>, u32)> {
    let mut keys = Vec::new();
    let mut calls = 0;
    let mut cursor: Option<String> = None;
    while keys.len() < q.limit {
        let mut call = kv.list().prefix(q.prefix.clone()).limit(KV_LIST_PAGE);
        if let Some(c) = cursor.take() {
            call = call.cursor(c);
        }
        let page = call.execute().await.map_err(|e| backend("KV list", e))?;
        calls += 1;
        let after = q.start_after.as_deref();
        keys.extend(
            page.keys
                .into_iter()
                .map(|k| k.name)
                .filter(|k| after.is_none_or(|a| k.as_str() > a)),
        );
        match page.cursor {
            Some(c) if !page.list_complete && !c.is_empty() => cursor = Some(c),
            _ => break,
        }
    }
    keys.truncate(q.limit);
    Ok((keys, calls))
}

#[cfg(test)]
mod tests {
    use super::{decode, encode};

    #[test]
    fn values_roundtrip_through_their_text() {
        for v in [
            b"{\"a\":1}".to_vec(),
            vec![],
            vec![0, 255, 1, 254, b'\n'],
            b"\0starts with NUL".to_vec(),
        ] {
            assert_eq!(decode("k", encode(&v)).expect("decode"), v);
        }
        assert_eq!(encode(b"{\"a\":1}"), "{\"a\":1}");
        assert!(decode("k", "\0zz".to_owned()).is_err());
    }
}
