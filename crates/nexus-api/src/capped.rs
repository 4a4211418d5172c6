//! Answers bounded in bytes: listings read their records in bulk batches sized so that
//! what one request holds stays near [`RESPONSE_BYTES`], and write their JSON item by
//! item, stopping before the item that would pass it.

use serde::Serialize;

use nexus_core::storage::{decode_stored_record, keys};
use nexus_core::{CompositeColdStorage, CoreError, CoreResult, FihHash, Limits, Record};
use nexus_store::{BlobStore, KeyValueStore, ObjectStore};

/// Most bytes of the answer of a listing (`GET /v1/log`, `/v1/facts`, `/v1/intents`,
/// `/v1/records/{id}/provenance`): a page ends before the entry that would pass it
/// (with a cursor, or for the log at the last `seq` returned). A page always carries
/// its first entry, and one record of the largest allowed size is far below this.
pub const RESPONSE_BYTES: usize = 4 << 20;

/// Room kept for what follows a listing's array (`],"next":"…"}`).
const TAIL_BYTES: usize = 256;

/// An upper bound on the stored (wire JSON) size of one record under `limits`: its
/// body or selector, reason, parents or source Facts, topic, keys and signature.
pub fn record_bytes_bound(limits: &Limits) -> usize {
    limits.max_body_bytes
        + limits.max_selector_bytes
        + limits.max_reason_bytes
        + limits.max_parents * 2 * 70
        + nexus_core::record::MAX_TOPIC_BYTES
        + 1024
}

/// The stored records `hashes` name, in order, read in bulk batches: stops after the
/// record that brings their stored bytes to `budget` (so a non-empty answer has at least
/// one record). Each batch is as large as keeps what was fetched under about twice
/// `budget` even if every record were as large as allowed, so a session needs one round
/// per batch and never holds much more than `2 × budget`. A record missing from the store
/// (or not yet hydrated in a session) is an error.
pub fn load_raw<K, B, O>(
    core: &CompositeColdStorage<K, B, O>,
    hashes: &[FihHash],
    budget: usize,
) -> CoreResult<Vec<Vec<u8>>>
where
    K: KeyValueStore,
    B: BlobStore,
    O: ObjectStore,
{
    let bound = record_bytes_bound(core.limits());
    let mut out = Vec::new();
    let mut fetched = 0usize;
    let mut rest = hashes;
    while !rest.is_empty() && fetched < budget {
        let batch = ((2 * budget).saturating_sub(fetched) / bound).clamp(1, rest.len());
        let (now, later) = rest.split_at(batch);
        rest = later;
        let keys: Vec<String> = now.iter().map(keys::record).collect();
        let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
        let values = core.kv().get_many(&refs)?;
        // Every miss of the batch is asked for at once: a session learns them together.
        if let Some(i) = values.iter().position(Option::is_none) {
            return Err(CoreError::Store(nexus_store::StoreError::Corrupt {
                key: keys[i].clone(),
                reason: "committed record content is missing".to_owned(),
            }));
        }
        for v in values.into_iter().flatten() {
            if fetched >= budget {
                break;
            }
            fetched += v.len();
            out.push(v);
        }
    }
    Ok(out)
}

/// Decodes a record [`load_raw`] read (its hash is recomputed: a damaged value is
/// reported as corrupt, never served).
pub fn decode(limits: &Limits, hash: &FihHash, raw: &[u8]) -> CoreResult<Record> {
    decode_stored_record(&keys::record(hash), raw, limits)
}

/// A JSON answer whose one array is written item by item and closed before the item
/// that would bring the answer past [`RESPONSE_BYTES`] (the first item always goes in).
pub struct CappedArray {
    out: Vec<u8>,
    items: usize,
    cap: usize,
}

impl CappedArray {
    /// Starts the answer with `head` (the JSON up to the array's `[`, included).
    pub fn new(head: &str) -> Self {
        Self::with_cap(head, RESPONSE_BYTES)
    }

    /// As [`new`](Self::new), with another cap (tests).
    pub fn with_cap(head: &str, cap: usize) -> Self {
        Self {
            out: head.as_bytes().to_vec(),
            items: 0,
            cap,
        }
    }

    /// Appends `item` unless it would not fit: `false` then (and nothing is written).
    pub fn push<T: Serialize>(&mut self, item: &T) -> bool {
        let bytes = serde_json::to_vec(item).unwrap_or_default();
        let sep = usize::from(self.items > 0);
        if self.items > 0 && self.out.len() + sep + bytes.len() + TAIL_BYTES > self.cap {
            return false;
        }
        if sep == 1 {
            self.out.push(b',');
        }
        self.out.extend_from_slice(&bytes);
        self.items += 1;
        true
    }

    /// Items written.
    pub fn len(&self) -> usize {
        self.items
    }

    /// Closes the array and the answer with `tail` (the JSON after the array's `]`,
    /// excluded, e.g. `}` or `,"next":null}`).
    pub fn finish(mut self, tail: &str) -> Vec<u8> {
        self.out.push(b']');
        self.out.extend_from_slice(tail.as_bytes());
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::CappedArray;

    #[test]
    fn an_array_stops_before_the_item_that_would_pass_the_cap() {
        let mut a = CappedArray::with_cap("{\"x\":[", 300);
        assert!(a.push(&"a".repeat(100)));
        assert!(!a.push(&"b".repeat(100)));
        assert_eq!(a.len(), 1);
        let body = a.finish("}");
        let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(v["x"].as_array().map(Vec::len), Some(1));
        // The first item goes in whatever its size.
        let mut a = CappedArray::with_cap("[", 10);
        assert!(a.push(&"c".repeat(100)));
        assert_eq!(a.len(), 1);
    }
}
