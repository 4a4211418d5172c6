//! The session (the trio behind one value), its misses, its delta and the flush.

use std::fmt;

use nexus_store::{
    BlobStore, CasFailure, Commit, CommitOutcome, KeyValueStore, ObjectStore, StoreError,
    StoreResult,
};

use crate::buffer::{IoBufferBlob, IoBufferKv, IoBufferObject, ListQuery};

/// The three buffers of one request, behind one value that implements all three storage
/// traits, so a library generic over `S: KeyValueStore + BlobStore + ObjectStore` runs
/// on it unchanged. Clones share the same buffers.
#[derive(Debug, Clone, Default)]
pub struct IoBufferSession {
    kv: IoBufferKv,
    blob: IoBufferBlob,
    object: IoBufferObject,
}

/// Everything a session read that it did not have: what to hydrate before re-executing.
/// Every list is sorted and free of duplicates.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Misses {
    /// Key-value keys.
    pub kv_keys: Vec<String>,
    /// Key-value listings.
    pub kv_lists: Vec<ListQuery>,
    /// Blob keys.
    pub blob_keys: Vec<String>,
    /// Blob listings.
    pub blob_lists: Vec<ListQuery>,
    /// State keys.
    pub state_keys: Vec<String>,
    /// State listings.
    pub state_lists: Vec<ListQuery>,
}

impl Misses {
    /// True when nothing was missed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many keys and listings were missed in all.
    pub fn len(&self) -> usize {
        self.kv_keys.len()
            + self.kv_lists.len()
            + self.blob_keys.len()
            + self.blob_lists.len()
            + self.state_keys.len()
            + self.state_lists.len()
    }
}

impl IoBufferSession {
    /// A session with three empty buffers.
    pub fn new() -> Self {
        Self::default()
    }

    /// The key-value buffer (hydrate it, drain it).
    pub fn kv_buf(&self) -> &IoBufferKv {
        &self.kv
    }

    /// The blob buffer.
    pub fn blob_buf(&self) -> &IoBufferBlob {
        &self.blob
    }

    /// The object (state) buffer.
    pub fn object_buf(&self) -> &IoBufferObject {
        &self.object
    }

    /// Every miss recorded since the last rollback.
    pub fn misses(&self) -> Misses {
        Misses {
            kv_keys: self.kv.misses(),
            kv_lists: self.kv.list_misses(),
            blob_keys: self.blob.misses(),
            blob_lists: self.blob.list_misses(),
            state_keys: self.object.misses(),
            state_lists: self.object.list_misses(),
        }
    }

    /// True when any buffer holds undrained writes.
    pub fn is_dirty(&self) -> bool {
        self.kv.is_dirty() || self.blob.is_dirty() || self.object.is_dirty()
    }

    /// Drops every undrained write and recorded miss of all three buffers, keeping what
    /// was hydrated.
    pub fn rollback(&self) {
        self.kv.rollback();
        self.blob.rollback();
        self.object.rollback();
    }

    /// Takes the whole delta of the session (see the buffers' `drain_*` methods).
    pub fn drain(&self) -> Delta {
        Delta {
            kv_puts: self.kv.drain_kv_puts(),
            kv_deletes: self.kv.drain_kv_deletes(),
            blob_puts: self.blob.drain_blob_puts(),
            blob_deletes: self.blob.drain_blob_deletes(),
            commit: self.object.drain_object_puts(),
        }
    }

    /// Hydrates `misses` from a sync store: one bulk get per tier that has bulk gets,
    /// one call per blob and per listing.
    pub fn hydrate_from<S>(&self, source: &S, misses: &Misses) -> StoreResult<()>
    where
        S: KeyValueStore + BlobStore + ObjectStore + ?Sized,
    {
        fn refs(keys: &[String]) -> Vec<&str> {
            keys.iter().map(String::as_str).collect()
        }
        if !misses.kv_keys.is_empty() {
            let values = source.get_many(&refs(&misses.kv_keys))?;
            self.kv
                .hydrate_batch(misses.kv_keys.iter().cloned().zip(values));
        }
        for q in &misses.kv_lists {
            let keys = source.list(&q.prefix, q.start_after.as_deref(), q.limit)?;
            self.kv.hydrate_list(q, keys);
        }
        for key in &misses.blob_keys {
            self.blob.hydrate(key.clone(), source.get_blob(key)?);
        }
        for q in &misses.blob_lists {
            let keys = source.list_blobs(&q.prefix, q.start_after.as_deref(), q.limit)?;
            self.blob.hydrate_list(q, keys);
        }
        if !misses.state_keys.is_empty() {
            let values = source.get_states(&refs(&misses.state_keys))?;
            self.object
                .hydrate_batch(misses.state_keys.iter().cloned().zip(values));
        }
        for q in &misses.state_lists {
            let keys = source.list_states(&q.prefix, q.start_after.as_deref(), q.limit)?;
            self.object.hydrate_list(q, keys);
        }
        Ok(())
    }
}

impl KeyValueStore for IoBufferSession {
    fn get(&self, key: &str) -> StoreResult<Option<Vec<u8>>> {
        self.kv.get(key)
    }
    fn get_many(&self, keys: &[&str]) -> StoreResult<Vec<Option<Vec<u8>>>> {
        self.kv.get_many(keys)
    }
    fn set(&self, key: &str, value: &[u8]) -> StoreResult<()> {
        self.kv.set(key, value)
    }
    fn delete(&self, key: &str) -> StoreResult<()> {
        self.kv.delete(key)
    }
    fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<String>> {
        self.kv.list(prefix, start_after, limit)
    }
}

impl BlobStore for IoBufferSession {
    fn get_blob(&self, key: &str) -> StoreResult<Option<Vec<u8>>> {
        self.blob.get_blob(key)
    }
    fn put_blob(&self, key: &str, bytes: &[u8]) -> StoreResult<()> {
        self.blob.put_blob(key, bytes)
    }
    fn delete_blob(&self, key: &str) -> StoreResult<()> {
        self.blob.delete_blob(key)
    }
    fn list_blobs(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<String>> {
        self.blob.list_blobs(prefix, start_after, limit)
    }
}

impl ObjectStore for IoBufferSession {
    fn get_state(&self, key: &str) -> StoreResult<Option<Vec<u8>>> {
        self.object.get_state(key)
    }
    fn get_states(&self, keys: &[&str]) -> StoreResult<Vec<Option<Vec<u8>>>> {
        self.object.get_states(keys)
    }
    fn put_state(&self, key: &str, expected: Option<&[u8]>, new: &[u8]) -> StoreResult<bool> {
        self.object.put_state(key, expected, new)
    }
    fn list_states(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<String>> {
        self.object.list_states(prefix, start_after, limit)
    }
    fn commit(&self, commit: &Commit) -> StoreResult<CommitOutcome> {
        self.object.commit(commit)
    }
}

/// One key-value or blob write: key and value.
pub type KvPut = (String, Vec<u8>);

/// The changes of one session, ready to flush. Every list is sorted by key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Delta {
    /// Key-value writes.
    pub kv_puts: Vec<KvPut>,
    /// Key-value deletes.
    pub kv_deletes: Vec<String>,
    /// Blob writes.
    pub blob_puts: Vec<KvPut>,
    /// Blob deletes.
    pub blob_deletes: Vec<String>,
    /// Every state change as a compare-and-swap against the hydrated value, plus the
    /// queued log entries: the commit point.
    pub commit: Commit,
}

/// The step of a flush at which a store call failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushStage {
    /// Writing blobs (before the commit).
    BlobPuts,
    /// Writing key-value entries that do not depend on the commit (before it).
    KvPuts,
    /// The commit itself. Whether it applied is unknown to the flush: a backend error
    /// here may or may not have reached the store.
    Commit,
    /// Writing key-value entries that depend on the commit (after it applied).
    AfterCommitKvPuts,
    /// Deleting key-value entries and blobs (after the commit applied).
    Deletes,
}

impl FlushStage {
    /// True when the stage comes after the commit point, i.e. the commit applied.
    pub fn after_commit(self) -> bool {
        matches!(self, Self::AfterCommitKvPuts | Self::Deletes)
    }
}

impl fmt::Display for FlushStage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::BlobPuts => "blob puts",
            Self::KvPuts => "key-value puts",
            Self::Commit => "commit",
            Self::AfterCommitKvPuts => "after-commit key-value puts",
            Self::Deletes => "deletes",
        })
    }
}

/// Why a flush did not complete.
#[derive(Debug, thiserror::Error)]
pub enum FlushError {
    /// The commit was refused: these keys no longer held the values the session
    /// hydrated. Nothing after the commit point was written; the writes before it
    /// (blobs, commit-independent key-value entries) are idempotent and harmless.
    /// Roll back and retry the job from hydration, or report the conflict.
    #[error("commit refused: {} key(s) changed since they were hydrated", failures.len())]
    Conflict {
        /// Each failed key with its current value.
        failures: Vec<CasFailure>,
    },
    /// A store call failed.
    #[error("flush failed during {stage}: {source}")]
    Store {
        /// Where the flush stopped.
        stage: FlushStage,
        /// The store's error.
        #[source]
        source: StoreError,
    },
}

/// What a successful flush did: counts of store calls per kind (for metrics) and the
/// sequence number the store gave to the first log entry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlushReport {
    /// Blobs written.
    pub blob_puts: usize,
    /// Key-value entries written before the commit.
    pub kv_puts_before_commit: usize,
    /// 1 if a commit was sent, 0 if the session changed no state.
    pub commits: usize,
    /// State ops in the commit.
    pub commit_ops: usize,
    /// Log entries in the commit.
    pub log_entries: usize,
    /// Sequence number of the first appended log entry, as assigned by the store.
    pub first_seq: Option<u64>,
    /// Key-value entries written after the commit.
    pub kv_puts_after_commit: usize,
    /// Key-value entries deleted.
    pub kv_deletes: usize,
    /// Blobs deleted.
    pub blob_deletes: usize,
}

impl Delta {
    /// True when flushing would do nothing.
    pub fn is_empty(&self) -> bool {
        self.kv_puts.is_empty()
            && self.kv_deletes.is_empty()
            && self.blob_puts.is_empty()
            && self.blob_deletes.is_empty()
            && self.commit.is_empty()
    }

    /// What flushing this delta writes, as a [`FlushReport`] for a commit that applied
    /// with `first_seq`.
    pub fn report(
        &self,
        after_commit: impl Fn(&str) -> bool,
        first_seq: Option<u64>,
    ) -> FlushReport {
        let after = self.kv_puts.iter().filter(|(k, _)| after_commit(k)).count();
        let committed = !self.commit.is_empty();
        FlushReport {
            blob_puts: self.blob_puts.len(),
            kv_puts_before_commit: self.kv_puts.len() - after,
            commits: usize::from(committed),
            commit_ops: if committed { self.commit.ops.len() } else { 0 },
            log_entries: if committed { self.commit.log.len() } else { 0 },
            first_seq,
            kv_puts_after_commit: after,
            kv_deletes: self.kv_deletes.len(),
            blob_deletes: self.blob_deletes.len(),
        }
    }

    /// Writes the delta to `target` in the order of design §5 (the batch of
    /// [`crate::write_batch`], written by [`crate::flush_batch`]):
    ///
    /// 1. blob puts, then the key-value puts **not** selected by `after_commit`
    ///    (immutable, content-addressed: idempotent, safe to repeat);
    /// 2. **one** `target.commit(&self.commit)` — the commit point, with the read
    ///    checks (skipped when the session changed and checked no state);
    /// 3. the key-value puts selected by `after_commit` (write-once index entries that
    ///    depend on the commit);
    /// 4. key-value deletes, then blob deletes.
    ///
    /// If the commit reports a conflict, steps 3 and 4 are skipped and the failed keys
    /// are returned as [`FlushError::Conflict`].
    pub fn flush<S>(
        &self,
        target: &S,
        after_commit: impl Fn(&str) -> bool,
    ) -> Result<FlushReport, FlushError>
    where
        S: KeyValueStore + BlobStore + ObjectStore + ?Sized,
    {
        let batch = crate::write_batch(self, &after_commit);
        match crate::flush_batch(target, &batch)? {
            CommitOutcome::Applied { first_seq } => Ok(self.report(after_commit, first_seq)),
            CommitOutcome::Conflict(failures) => Err(FlushError::Conflict { failures }),
            other => Err(FlushError::Store {
                stage: FlushStage::Commit,
                source: StoreError::Backend(format!("unsupported commit outcome {other:?}")),
            }),
        }
    }
}
