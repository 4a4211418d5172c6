//! Index repair from the commit log (design §5): the write-once KV index entries of a
//! request are written by the Worker *after* the commit point, so they can be lost (the
//! isolate dies, a KV write fails). The coordinator's alarm walks the commit log behind
//! a cursor, recomputes each committed record's index entries with the core's own
//! [`repair_indexes`](nexus_core::CompositeColdStorage::repair_indexes), and writes
//! those KV does not have.

use nexus_core::{ColdStorage, CompositeColdStorage, Limits};
use nexus_iobuf::{Executed, IoBufferBlob, IoBufferKv, StoreSession};
use nexus_store::{LOG_HEAD_KEY, ObjectStore, StoreError, StoreResult, parse_head};
use worker::{Bucket, KvStore};

use crate::coordinator::SqlStates;
use crate::{kv, r2};

/// State key of the repair cursor: the last log entry whose index entries are known
/// to be in KV.
pub const INDEX_CURSOR: &str = "idx/cursor";
/// Log entries examined per alarm run.
pub const REPAIR_BATCH: usize = 100;
/// Session rounds one batch may take (records are read in one bulk round).
const ROUNDS: usize = 4;

/// What one repair run did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Repaired {
    /// Log entries examined.
    pub entries: usize,
    /// Index entries that were missing and were written.
    pub written: usize,
    /// Whether log entries remain behind the cursor.
    pub more: bool,
}

fn number(key: &str, value: Option<Vec<u8>>) -> StoreResult<u64> {
    match value {
        None => Ok(0),
        Some(v) if key == LOG_HEAD_KEY => parse_head(&v),
        Some(v) => std::str::from_utf8(&v)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| StoreError::Corrupt {
                key: key.to_owned(),
                reason: "not a decimal number".into(),
            }),
    }
}

fn core_error(e: nexus_core::CoreError) -> StoreError {
    match e {
        nexus_core::CoreError::Store(s) => s,
        other => StoreError::Backend(format!("index repair: {other}")),
    }
}

/// Repairs the index entries of up to [`REPAIR_BATCH`] log entries after the cursor
/// and moves the cursor past them.
pub async fn repair_batch(
    states: &SqlStates,
    kv: &KvStore,
    bucket: &Bucket,
) -> StoreResult<Repaired> {
    let limits = Limits::default();
    let cursor_value = states.get_state(INDEX_CURSOR)?;
    let cursor = number(INDEX_CURSOR, cursor_value.clone())?;
    let head = number(LOG_HEAD_KEY, states.get_state(LOG_HEAD_KEY)?)?;
    if cursor >= head {
        return Ok(Repaired::default());
    }
    let log = CompositeColdStorage::new(
        IoBufferKv::default(),
        IoBufferBlob::default(),
        states.clone(),
        limits.clone(),
    );
    let entries = log
        .log_entries(cursor + 1, REPAIR_BATCH)
        .map_err(core_error)?;
    let Some(last) = entries.last().map(|(seq, _)| *seq) else {
        return Ok(Repaired::default());
    };
    // The core computes the entries from the records, read from KV through a session.
    let mut driver = StoreSession::with_max_rounds(ROUNDS);
    let delta = loop {
        let step = driver
            .execute(|s| {
                CompositeColdStorage::new(
                    s.kv_buf().clone(),
                    s.blob_buf().clone(),
                    states.clone(),
                    limits.clone(),
                )
                .repair_indexes(&entries)
            })
            .map_err(|e| StoreError::Backend(format!("index repair: {e}")))?;
        match step {
            Executed::Done(result, delta) => {
                result.map_err(core_error)?;
                break delta;
            }
            Executed::NeedsHydration(misses) => {
                let (mut values, _) = kv::get_many(kv, &misses.kv_keys).await?;
                r2::fill_missing_records(bucket, &misses.kv_keys, &mut values).await?;
                driver
                    .session()
                    .kv_buf()
                    .hydrate_batch(misses.kv_keys.iter().cloned().zip(values));
            }
        }
    };
    let keys: Vec<String> = delta.kv_puts.iter().map(|(k, _)| k.clone()).collect();
    let (present, _) = kv::get_many(kv, &keys).await?;
    let mut written = 0;
    for ((key, value), have) in delta.kv_puts.iter().zip(present) {
        if have.is_none() {
            kv::put(kv, key, value).await?;
            written += 1;
        }
    }
    // Only the alarm writes the cursor, and alarms do not overlap.
    states.put_state(
        INDEX_CURSOR,
        cursor_value.as_deref(),
        last.to_string().as_bytes(),
    )?;
    Ok(Repaired {
        entries: entries.len(),
        written,
        more: last < head,
    })
}
