//! The IoBuffer trio: in-memory implementations of the storage traits with hydration,
//! miss recording and dirty tracking.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use nexus_store::{
    BlobStore, CasFailure, CasOp, Commit, CommitOutcome, KeyValueStore, LOG_HEAD_KEY, LOG_PREFIX,
    ObjectStore, ReadCheck, StoreResult, check_commit, check_key, check_writable_state_key,
    log_key, parse_head,
};

/// A listing request (`list`, `list_blobs` or `list_states`): the unit in which listings
/// are recorded as misses and hydrated.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ListQuery {
    /// Keys must start with this.
    pub prefix: String,
    /// Keys must sort strictly after this (`None`: from the start of the prefix).
    pub start_after: Option<String>,
    /// At most this many keys.
    pub limit: usize,
}

impl ListQuery {
    /// A query for at most `limit` keys under `prefix`, strictly after `start_after`.
    pub fn new(prefix: impl Into<String>, start_after: Option<&str>, limit: usize) -> Self {
        Self {
            prefix: prefix.into(),
            start_after: start_after.map(str::to_owned),
            limit,
        }
    }
}

/// A cursor that sorts before the prefix means "from the start of the prefix" (the
/// `list` contract); normalising it lets equal queries share one hydrated answer.
fn normalize_after(prefix: &str, start_after: Option<&str>) -> Option<String> {
    start_after.filter(|a| *a >= prefix).map(str::to_owned)
}

/// `(prefix, normalised start_after)`.
type ListKey = (String, Option<String>);

/// What a hydrated listing tells us: every backing key under the prefix, after the
/// cursor, up to `upto` (inclusive; `None`: to the end of the prefix).
#[derive(Debug, Clone)]
struct Coverage {
    keys: BTreeSet<String>,
    upto: Option<String>,
}

impl Coverage {
    fn covers(&self, prefix: &str, after: Option<&str>, key: &str) -> bool {
        key.starts_with(prefix)
            && after.is_none_or(|a| key > a)
            && self.upto.as_deref().is_none_or(|u| key <= u)
    }
}

/// The state of one buffer. `base` is the hydrated view (plus drained writes), `dirty`
/// the writes of the current session (`None`: deleted).
#[derive(Debug, Default)]
struct Tier {
    base: BTreeMap<String, Option<Vec<u8>>>,
    lists: BTreeMap<ListKey, Coverage>,
    dirty: BTreeMap<String, Option<Vec<u8>>>,
    misses: BTreeSet<String>,
    list_misses: BTreeMap<ListKey, usize>,
    /// Commit log entries queued by in-memory commits (object tier only).
    pending_log: Vec<Vec<u8>>,
    /// Keys this round read from the hydrated view (not from its own writes), with the
    /// value read: the object tier's read checks.
    reads: BTreeMap<String, Option<Vec<u8>>>,
}

/// One drained change: key, value as hydrated (`None`: never hydrated; `Some(None)`:
/// known absent), final value (`None`: deleted).
type Change = (String, Option<Option<Vec<u8>>>, Option<Vec<u8>>);

impl Tier {
    fn read(&mut self, key: &str) -> Option<Vec<u8>> {
        if let Some(v) = self.dirty.get(key) {
            return v.clone();
        }
        if let Some(v) = self.base.get(key) {
            if !self.reads.contains_key(key) {
                self.reads.insert(key.to_owned(), v.clone());
            }
            return v.clone();
        }
        self.misses.insert(key.to_owned());
        None
    }

    fn write(&mut self, key: &str, value: Option<Vec<u8>>) {
        self.dirty.insert(key.to_owned(), value);
    }

    fn list(&mut self, prefix: &str, start_after: Option<&str>, limit: usize) -> Vec<String> {
        if limit == 0 {
            return Vec::new();
        }
        let after = normalize_after(prefix, start_after);
        let after = after.as_deref();
        for ((p, cov_after), cov) in &self.lists {
            if p != prefix || cov_after.as_deref() > after {
                continue;
            }
            let mut window: BTreeSet<&str> = cov
                .keys
                .iter()
                .map(String::as_str)
                .filter(|k| after.is_none_or(|a| *k > a))
                .collect();
            for (k, v) in &self.dirty {
                if cov.covers(prefix, after, k) {
                    if v.is_some() {
                        window.insert(k);
                    } else {
                        window.remove(k.as_str());
                    }
                }
            }
            if cov.upto.is_none() || window.len() >= limit {
                return window.into_iter().take(limit).map(str::to_owned).collect();
            }
        }
        // Not answerable: ask for enough keys that the session's own deletes cannot
        // leave the answer short again.
        let deleted = self
            .dirty
            .iter()
            .filter(|(k, v)| {
                v.is_none() && k.starts_with(prefix) && after.is_none_or(|a| k.as_str() > a)
            })
            .count();
        let want = limit.saturating_add(deleted);
        let slot = self
            .list_misses
            .entry((prefix.to_owned(), after.map(str::to_owned)))
            .or_insert(0);
        *slot = (*slot).max(want);
        Vec::new()
    }

    fn hydrate(&mut self, key: String, value: Option<Vec<u8>>) {
        self.base.insert(key, value);
    }

    fn hydrate_list(&mut self, query: &ListQuery, keys: Vec<String>) {
        if query.limit == 0 {
            return;
        }
        let after = normalize_after(&query.prefix, query.start_after.as_deref());
        let keys: BTreeSet<String> = keys
            .into_iter()
            .filter(|k| {
                k.starts_with(&query.prefix) && after.as_deref().is_none_or(|a| k.as_str() > a)
            })
            .collect();
        let upto = if keys.len() < query.limit {
            None
        } else {
            keys.last().cloned()
        };
        self.lists
            .insert((query.prefix.clone(), after), Coverage { keys, upto });
    }

    fn rollback(&mut self) {
        self.dirty.clear();
        self.misses.clear();
        self.list_misses.clear();
        self.pending_log.clear();
        self.reads.clear();
    }

    fn is_dirty(&self) -> bool {
        !self.dirty.is_empty() || !self.pending_log.is_empty()
    }

    /// Makes `value` the known value of `key`, keeping hydrated listings in step.
    fn fold(&mut self, key: &str, value: Option<Vec<u8>>) {
        for ((p, after), cov) in &mut self.lists {
            if cov.covers(p, after.as_deref(), key) {
                if value.is_some() {
                    cov.keys.insert(key.to_owned());
                } else {
                    cov.keys.remove(key);
                }
            }
        }
        self.base.insert(key.to_owned(), value);
    }

    /// Removes the dirty entries `select` picks, folds them into the base view, and
    /// returns those that differ from the value as hydrated, in key order.
    fn drain(&mut self, select: impl Fn(&Option<Vec<u8>>) -> bool) -> Vec<Change> {
        let keys: Vec<String> = self
            .dirty
            .iter()
            .filter(|(_, v)| select(v))
            .map(|(k, _)| k.clone())
            .collect();
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            let Some(value) = self.dirty.remove(&key) else {
                continue;
            };
            let before = self.base.get(&key).cloned();
            let changed = before.as_ref() != Some(&value);
            self.fold(&key, value.clone());
            if changed {
                out.push((key, before, value));
            }
        }
        out
    }

    fn miss_keys(&self) -> Vec<String> {
        self.misses.iter().cloned().collect()
    }

    fn miss_lists(&self) -> Vec<ListQuery> {
        self.list_misses
            .iter()
            .map(|((prefix, start_after), limit)| ListQuery {
                prefix: prefix.clone(),
                start_after: start_after.clone(),
                limit: *limit,
            })
            .collect()
    }
}

fn puts(changes: Vec<Change>) -> Vec<(String, Vec<u8>)> {
    changes
        .into_iter()
        .filter_map(|(k, _, v)| v.map(|v| (k, v)))
        .collect()
}

fn deletes(changes: Vec<Change>) -> Vec<String> {
    changes.into_iter().map(|(k, _, _)| k).collect()
}

/// Methods every buffer of the trio shares.
macro_rules! buffer_common {
    ($ty:ident, $what:literal) => {
        impl $ty {
            #[doc = concat!("An empty ", $what, " buffer: nothing hydrated, nothing dirty.")]
            pub fn new() -> Self {
                Self::default()
            }

            fn lock(&self) -> RwLockWriteGuard<'_, Tier> {
                // Locks are held only inside this module's non-panicking methods, so a
                // poisoned lock still guards consistent maps.
                self.inner.write().unwrap_or_else(PoisonError::into_inner)
            }

            fn peek(&self) -> RwLockReadGuard<'_, Tier> {
                self.inner.read().unwrap_or_else(PoisonError::into_inner)
            }

            /// Records the backing store's value of one key (`None`: known absent).
            /// Overrides an earlier hydration of the key; the session's own writes
            /// still take precedence when reading.
            pub fn hydrate(&self, key: impl Into<String>, value: Option<Vec<u8>>) {
                self.lock().hydrate(key.into(), value);
            }

            /// Records the backing store's values of many keys (`None`: known absent).
            pub fn hydrate_batch(
                &self,
                entries: impl IntoIterator<Item = (String, Option<Vec<u8>>)>,
            ) {
                let mut tier = self.lock();
                for (key, value) in entries {
                    tier.hydrate(key, value);
                }
            }

            /// Records the backing store's answer to a listing query. Listings with the
            /// same prefix and an equal or later cursor are answered from it too, as far
            /// as it reaches. An answer shorter than `query.limit` means the backing
            /// store has no further keys under the prefix.
            pub fn hydrate_list(&self, query: &ListQuery, keys: Vec<String>) {
                self.lock().hydrate_list(query, keys);
            }

            /// Keys read but neither hydrated nor written in this session, sorted.
            pub fn misses(&self) -> Vec<String> {
                self.peek().miss_keys()
            }

            /// Listing queries that could not be answered from hydrated listings,
            /// sorted; hydrating these answers them.
            pub fn list_misses(&self) -> Vec<ListQuery> {
                self.peek().miss_lists()
            }

            /// True when the session has written something not yet drained.
            pub fn is_dirty(&self) -> bool {
                self.peek().is_dirty()
            }

            /// Drops every undrained write and every recorded miss; the hydrated view
            /// is kept.
            pub fn rollback(&self) {
                self.lock().rollback();
            }
        }
    };
}

/// The key-value buffer: a [`KeyValueStore`] over hydrated, in-memory maps.
///
/// Clones share the same state. Reads of keys that were neither hydrated nor written in
/// the session are recorded as misses and answered as absent; listings that no
/// hydrated listing answers are recorded as list misses and answered empty.
#[derive(Debug, Clone, Default)]
pub struct IoBufferKv {
    inner: Arc<RwLock<Tier>>,
}

buffer_common!(IoBufferKv, "key-value");

impl IoBufferKv {
    /// Takes the session's `set`s whose value differs from the hydrated one, sorted by
    /// key. Drained writes become part of the hydrated view (the session assumes they
    /// will be flushed).
    pub fn drain_kv_puts(&self) -> Vec<(String, Vec<u8>)> {
        puts(self.lock().drain(Option::is_some))
    }

    /// Takes the session's deletes of keys not known to be absent, sorted.
    pub fn drain_kv_deletes(&self) -> Vec<String> {
        deletes(self.lock().drain(Option::is_none))
    }
}

impl KeyValueStore for IoBufferKv {
    fn get(&self, key: &str) -> StoreResult<Option<Vec<u8>>> {
        check_key(key)?;
        Ok(self.lock().read(key))
    }

    fn get_many(&self, keys: &[&str]) -> StoreResult<Vec<Option<Vec<u8>>>> {
        for key in keys {
            check_key(key)?;
        }
        let mut tier = self.lock();
        Ok(keys.iter().map(|k| tier.read(k)).collect())
    }

    fn set(&self, key: &str, value: &[u8]) -> StoreResult<()> {
        check_key(key)?;
        self.lock().write(key, Some(value.to_vec()));
        Ok(())
    }

    fn delete(&self, key: &str) -> StoreResult<()> {
        check_key(key)?;
        self.lock().write(key, None);
        Ok(())
    }

    fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<String>> {
        Ok(self.lock().list(prefix, start_after, limit))
    }
}

/// The blob buffer: a [`BlobStore`] over hydrated, in-memory maps.
///
/// Same miss and listing rules as [`IoBufferKv`].
#[derive(Debug, Clone, Default)]
pub struct IoBufferBlob {
    inner: Arc<RwLock<Tier>>,
}

buffer_common!(IoBufferBlob, "blob");

impl IoBufferBlob {
    /// Takes the session's blob puts whose bytes differ from the hydrated ones, sorted
    /// by key; they become part of the hydrated view.
    pub fn drain_blob_puts(&self) -> Vec<(String, Vec<u8>)> {
        puts(self.lock().drain(Option::is_some))
    }

    /// Takes the session's blob deletes of keys not known to be absent, sorted.
    pub fn drain_blob_deletes(&self) -> Vec<String> {
        deletes(self.lock().drain(Option::is_none))
    }
}

impl BlobStore for IoBufferBlob {
    fn get_blob(&self, key: &str) -> StoreResult<Option<Vec<u8>>> {
        check_key(key)?;
        Ok(self.lock().read(key))
    }

    fn put_blob(&self, key: &str, bytes: &[u8]) -> StoreResult<()> {
        check_key(key)?;
        self.lock().write(key, Some(bytes.to_vec()));
        Ok(())
    }

    fn delete_blob(&self, key: &str) -> StoreResult<()> {
        check_key(key)?;
        self.lock().write(key, None);
        Ok(())
    }

    fn list_blobs(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<String>> {
        Ok(self.lock().list(prefix, start_after, limit))
    }
}

/// The object (state) buffer: an [`ObjectStore`] whose compare-and-swaps and commits run
/// against the buffer's current view, in memory.
///
/// * `put_state` reads the key (a miss if it was not hydrated) and swaps in memory.
/// * `commit` is all-or-nothing in memory with the semantics of
///   [`nexus_store::apply_commit`]: it refuses log keys and duplicate keys, reads every
///   op's key (recording all misses at once), and on success applies the ops and queues
///   the log entries.
/// * **Log entries appended in a session are not readable until drained**: reads of
///   [`nexus_store::LOG_PREFIX`] keys and [`LOG_HEAD_KEY`] show the hydrated log. The
///   `first_seq` a commit reports is predicted from the hydrated [`LOG_HEAD_KEY`] plus
///   the entries already queued, and is `None` when the head was not hydrated (the head
///   is peeked, never recorded as a miss: the store numbers the entries at flush time,
///   so the prediction is not worth an extra round); it is exact when no
///   other writer appends to the log between hydration and flush (a sequential
///   [`crate::SessionServer`] or a Durable Object running its own sessions), and
///   [`crate::FlushReport::first_seq`] gives the number the store actually assigned.
#[derive(Debug, Clone, Default)]
pub struct IoBufferObject {
    inner: Arc<RwLock<Tier>>,
}

buffer_common!(IoBufferObject, "object");

impl IoBufferObject {
    /// Takes the session's state changes as one [`Commit`]: for every dirty key whose
    /// final value differs from the hydrated one, a [`CasOp`] expecting the hydrated
    /// value (`None` if known absent, or if never hydrated) and setting the final value
    /// (`None`: delete); then a [`ReadCheck`](nexus_store::ReadCheck) of every other
    /// state the session read from its hydrated view, with the value it read; then the
    /// queued log entries in order. Ops and reads are sorted by key.
    ///
    /// The read checks make the commit **serializable**: a store applies it only if
    /// every state the job's decision depended on still holds what the job saw (design
    /// §5). Keys under [`nexus_store::LOG_PREFIX`] are left out (log entries never
    /// change, and the store numbers new entries itself), and so are state listings:
    /// a job whose decision depends on which keys exist under a prefix must read those
    /// keys (a listing alone is not checked at the commit point).
    ///
    /// The drained changes and log entries become part of the hydrated view (the
    /// session assumes the commit will be flushed); after a failed flush, start a new
    /// session rather than reusing this one.
    pub fn drain_object_puts(&self) -> Commit {
        let mut tier = self.lock();
        let ops: Vec<CasOp> = tier
            .drain(|_| true)
            .into_iter()
            .map(|(key, before, new)| CasOp {
                key,
                expected: before.flatten(),
                new,
            })
            .collect();
        let reads: Vec<ReadCheck> = std::mem::take(&mut tier.reads)
            .into_iter()
            .filter(|(key, _)| {
                !key.starts_with(LOG_PREFIX) && !ops.iter().any(|op: &CasOp| op.key == *key)
            })
            .map(|(key, value)| ReadCheck { key, value })
            .collect();
        let log = std::mem::take(&mut tier.pending_log);
        if !log.is_empty() {
            // Advance the known log head, if we know it, as the store will.
            if let Some(head) = tier.base.get(LOG_HEAD_KEY).cloned() {
                let head = match head {
                    None => Some(0),
                    Some(v) => parse_head(&v).ok(),
                };
                if let Some(head) = head {
                    for (i, entry) in log.iter().enumerate() {
                        tier.fold(&log_key(head + 1 + i as u64), Some(entry.clone()));
                    }
                    let new_head = head + log.len() as u64;
                    tier.fold(LOG_HEAD_KEY, Some(new_head.to_string().into_bytes()));
                }
            }
        }
        Commit { ops, reads, log }
    }

    /// The log entries queued by this session's commits, in order.
    pub fn pending_log(&self) -> Vec<Vec<u8>> {
        self.peek().pending_log.clone()
    }
}

impl ObjectStore for IoBufferObject {
    fn get_state(&self, key: &str) -> StoreResult<Option<Vec<u8>>> {
        check_key(key)?;
        Ok(self.lock().read(key))
    }

    fn get_states(&self, keys: &[&str]) -> StoreResult<Vec<Option<Vec<u8>>>> {
        for key in keys {
            check_key(key)?;
        }
        let mut tier = self.lock();
        Ok(keys.iter().map(|k| tier.read(k)).collect())
    }

    fn put_state(&self, key: &str, expected: Option<&[u8]>, new: &[u8]) -> StoreResult<bool> {
        check_writable_state_key(key)?;
        let mut tier = self.lock();
        if tier.read(key).as_deref() != expected {
            return Ok(false);
        }
        tier.write(key, Some(new.to_vec()));
        Ok(true)
    }

    fn list_states(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<String>> {
        Ok(self.lock().list(prefix, start_after, limit))
    }

    fn commit(&self, commit: &Commit) -> StoreResult<CommitOutcome> {
        check_commit(commit)?;
        let mut tier = self.lock();
        // Read every key (so every miss is recorded in one round) before deciding.
        let mut failed = Vec::new();
        for (key, expected) in commit.expectations() {
            let current = tier.read(key);
            if current.as_deref() != expected {
                failed.push(CasFailure {
                    key: key.to_owned(),
                    current,
                });
            }
        }
        if !failed.is_empty() {
            return Ok(CommitOutcome::Conflict(failed));
        }
        // The store numbers log entries when the commit is flushed; predict the first
        // number only if the head was hydrated. Reading the head here would record a
        // miss, costing every logging session an extra round for a mere prediction.
        let first_seq = match (commit.log.is_empty(), tier.base.get(LOG_HEAD_KEY)) {
            (true, _) | (false, None) => None,
            (false, Some(None)) => Some(1 + tier.pending_log.len() as u64),
            (false, Some(Some(v))) => Some(parse_head(v)? + 1 + tier.pending_log.len() as u64),
        };
        for op in &commit.ops {
            tier.write(&op.key, op.new.clone());
        }
        tier.pending_log.extend(commit.log.iter().cloned());
        Ok(CommitOutcome::Applied { first_seq })
    }
}
