//! Index catch-up from the commit log (design §5: "if they are lost, the DO's commit
//! log lets a later flush repair them"). A commit normally carries its own index
//! entries and the coordinator writes them in the commit's transaction
//! ([`SqlStates::commit_indexed`]); one that did not — from a Worker of an earlier
//! version, which wrote them to KV, or the test fault that drops them — leaves the
//! index behind the log. So does a coordinator whose storage predates the index table.
//! The coordinator's alarm then walks the commit log behind the index cursor
//! ([`INDEX_CURSOR`]), recomputes each committed record's index entries with the core's
//! own [`repair_indexes`](nexus_core::CompositeColdStorage::repair_indexes) (the records
//! read from KV, or R2 where KV has not got them), and adds the missing ones.

use nexus_core::{ColdStorage, CompositeColdStorage, Limits};
use nexus_iobuf::{IoBufferBlob, IoBufferKv};
use nexus_store::{StoreError, StoreResult};
use worker::{Bucket, KvStore};

pub use crate::coordinator::INDEX_CURSOR;
use crate::coordinator::SqlStates;

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

/// A core error as the store error it carries (or a backend error naming it).
pub(crate) fn core_error(e: nexus_core::CoreError) -> StoreError {
    match e {
        nexus_core::CoreError::Store(s) => s,
        other => StoreError::Backend(other.to_string()),
    }
}

/// Indexes up to [`REPAIR_BATCH`] log entries after the index cursor and moves the
/// cursor past them (unless a commit moved it meanwhile: the next run goes on).
pub async fn repair_batch(
    states: &SqlStates,
    kv: &KvStore,
    bucket: &Bucket,
) -> StoreResult<Repaired> {
    let limits = Limits::default();
    let (cursor, head) = states.index_progress()?;
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
    let (result, delta) = crate::archive::run_session(states, kv, bucket, ROUNDS, |s| {
        CompositeColdStorage::new(
            s.kv_buf().clone(),
            s.blob_buf().clone(),
            states.clone(),
            limits.clone(),
        )
        .repair_indexes(&entries)
    })
    .await?;
    result.map_err(core_error)?;
    // Awaiting KV above let commits in; the index table only gains entries, and the
    // cursor moves only if it is still where this run started.
    let keys: Vec<String> = delta.kv_puts.into_iter().map(|(k, _)| k).collect();
    let written = states.backfill_index(keys, cursor, last)?;
    let (cursor, head) = states.index_progress()?;
    Ok(Repaired {
        entries: entries.len(),
        written,
        more: cursor < head,
    })
}
