//! [`Hooked`]: a store that forwards every call to an inner store, with hooks on the
//! calls that tests need to intercept (a rival writer before a commit, an injected
//! failure, a broken commit that ignores its read checks, a count of calls).

use std::fmt;
use std::sync::Arc;

use nexus_store::{
    BatchWrite, BlobStore, Commit, CommitOutcome, KeyValueStore, MemoryStore, ObjectStore,
    Snapshot, StoreResult, StoreSnapshot, WriteBatch,
};

/// A store call, as the [`Hooks::before`] hook sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call<'a> {
    /// `KeyValueStore::get` / `get_many` (one per key).
    KvGet(&'a str),
    /// `KeyValueStore::set`: key and value.
    KvSet(&'a str, &'a [u8]),
    /// `KeyValueStore::delete`.
    KvDelete(&'a str),
    /// `KeyValueStore::list` (the prefix).
    KvList(&'a str),
    /// `BlobStore::get_blob`.
    BlobGet(&'a str),
    /// `BlobStore::put_blob`: key and bytes.
    BlobPut(&'a str, &'a [u8]),
    /// `BlobStore::delete_blob`.
    BlobDelete(&'a str),
    /// `BlobStore::list_blobs` (the prefix).
    BlobList(&'a str),
    /// `ObjectStore::get_state` / `get_states` (one per key).
    StateGet(&'a str),
    /// `ObjectStore::put_state`: key and new value.
    StatePut(&'a str, &'a [u8]),
    /// `ObjectStore::list_states` (the prefix).
    StateList(&'a str),
    /// `ObjectStore::commit`.
    Commit(&'a Commit),
    /// `BatchWrite::write_batch_group`.
    BatchGroup(&'a [WriteBatch]),
}

impl Call<'_> {
    /// The call as a short event (`"kv_set k"`, `"commit"`, …) for tests that record
    /// the order of writes; reads answer `None`.
    pub fn write_event(&self) -> Option<String> {
        Some(match self {
            Call::KvSet(k, _) => format!("kv_set {k}"),
            Call::KvDelete(k) => format!("kv_delete {k}"),
            Call::BlobPut(k, _) => format!("blob_put {k}"),
            Call::BlobDelete(k) => format!("blob_delete {k}"),
            Call::StatePut(k, _) => format!("put_state {k}"),
            Call::Commit(_) => "commit".to_owned(),
            Call::BatchGroup(_) => "batch_group".to_owned(),
            _ => return None,
        })
    }
}

type Before<S> = dyn Fn(&S, Call<'_>) -> StoreResult<()> + Send + Sync;
type OnCommit<S> = dyn Fn(&S, &Commit) -> Option<StoreResult<CommitOutcome>> + Send + Sync;
type OnGroup<S> =
    dyn Fn(&S, &[WriteBatch]) -> Option<StoreResult<Vec<CommitOutcome>>> + Send + Sync;

/// The hooks of a [`Hooked`] store; each is optional.
pub struct Hooks<S> {
    /// Runs before every call with the inner store (to interleave a rival writer, count
    /// or record calls); an error is returned instead of making the call.
    pub before: Option<Box<Before<S>>>,
    /// Answers a `commit` instead of the inner store when it returns `Some`.
    pub commit: Option<Box<OnCommit<S>>>,
    /// Answers a `write_batch_group` instead of the inner store when it returns `Some`.
    pub group: Option<Box<OnGroup<S>>>,
}

impl<S> Default for Hooks<S> {
    fn default() -> Self {
        Self {
            before: None,
            commit: None,
            group: None,
        }
    }
}

/// A store forwarding every call to `inner` (by default a [`MemoryStore`]) through
/// [`Hooks`]. Clones share the inner store and the hooks.
pub struct Hooked<S = MemoryStore> {
    inner: S,
    hooks: Arc<Hooks<S>>,
}

impl<S: Clone> Clone for Hooked<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            hooks: Arc::clone(&self.hooks),
        }
    }
}

impl<S> fmt::Debug for Hooked<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hooked").finish_non_exhaustive()
    }
}

impl<S> Hooked<S> {
    /// Wraps `inner` with no hooks (see the `with_*` builders).
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            hooks: Arc::new(Hooks::default()),
        }
    }

    /// Wraps `inner` with `hooks`.
    pub fn with_hooks(inner: S, hooks: Hooks<S>) -> Self {
        Self {
            inner,
            hooks: Arc::new(hooks),
        }
    }

    /// The inner store.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    fn hooks_mut(&mut self) -> &mut Hooks<S> {
        Arc::get_mut(&mut self.hooks).expect("set hooks before cloning a Hooked store")
    }

    /// Sets the hook run before every call.
    pub fn with_before(
        mut self,
        f: impl Fn(&S, Call<'_>) -> StoreResult<()> + Send + Sync + 'static,
    ) -> Self {
        self.hooks_mut().before = Some(Box::new(f));
        self
    }

    /// Sets the hook that may answer a `commit`.
    pub fn with_commit(
        mut self,
        f: impl Fn(&S, &Commit) -> Option<StoreResult<CommitOutcome>> + Send + Sync + 'static,
    ) -> Self {
        self.hooks_mut().commit = Some(Box::new(f));
        self
    }

    /// Sets the hook that may answer a `write_batch_group`.
    pub fn with_group(
        mut self,
        f: impl Fn(&S, &[WriteBatch]) -> Option<StoreResult<Vec<CommitOutcome>>> + Send + Sync + 'static,
    ) -> Self {
        self.hooks_mut().group = Some(Box::new(f));
        self
    }

    fn before(&self, call: Call<'_>) -> StoreResult<()> {
        match &self.hooks.before {
            Some(f) => f(&self.inner, call),
            None => Ok(()),
        }
    }
}

/// A commit with its read checks dropped: what a store that does not validate reads
/// would apply (for tests that show a checker catches it).
pub fn without_reads(commit: &Commit) -> Commit {
    Commit {
        reads: Vec::new(),
        ..commit.clone()
    }
}

impl<S: KeyValueStore> KeyValueStore for Hooked<S> {
    fn get(&self, key: &str) -> StoreResult<Option<Vec<u8>>> {
        self.before(Call::KvGet(key))?;
        self.inner.get(key)
    }
    fn get_many(&self, keys: &[&str]) -> StoreResult<Vec<Option<Vec<u8>>>> {
        for key in keys {
            self.before(Call::KvGet(key))?;
        }
        self.inner.get_many(keys)
    }
    fn set(&self, key: &str, value: &[u8]) -> StoreResult<()> {
        self.before(Call::KvSet(key, value))?;
        self.inner.set(key, value)
    }
    fn delete(&self, key: &str) -> StoreResult<()> {
        self.before(Call::KvDelete(key))?;
        self.inner.delete(key)
    }
    fn list(&self, prefix: &str, after: Option<&str>, limit: usize) -> StoreResult<Vec<String>> {
        self.before(Call::KvList(prefix))?;
        self.inner.list(prefix, after, limit)
    }
}

impl<S: BlobStore> BlobStore for Hooked<S> {
    fn get_blob(&self, key: &str) -> StoreResult<Option<Vec<u8>>> {
        self.before(Call::BlobGet(key))?;
        self.inner.get_blob(key)
    }
    fn put_blob(&self, key: &str, bytes: &[u8]) -> StoreResult<()> {
        self.before(Call::BlobPut(key, bytes))?;
        self.inner.put_blob(key, bytes)
    }
    fn delete_blob(&self, key: &str) -> StoreResult<()> {
        self.before(Call::BlobDelete(key))?;
        self.inner.delete_blob(key)
    }
    fn list_blobs(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<String>> {
        self.before(Call::BlobList(prefix))?;
        self.inner.list_blobs(prefix, after, limit)
    }
}

impl<S: ObjectStore> ObjectStore for Hooked<S> {
    fn get_state(&self, key: &str) -> StoreResult<Option<Vec<u8>>> {
        self.before(Call::StateGet(key))?;
        self.inner.get_state(key)
    }
    fn get_states(&self, keys: &[&str]) -> StoreResult<Vec<Option<Vec<u8>>>> {
        for key in keys {
            self.before(Call::StateGet(key))?;
        }
        self.inner.get_states(keys)
    }
    fn put_state(&self, key: &str, expected: Option<&[u8]>, new: &[u8]) -> StoreResult<bool> {
        self.before(Call::StatePut(key, new))?;
        self.inner.put_state(key, expected, new)
    }
    fn list_states(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<String>> {
        self.before(Call::StateList(prefix))?;
        self.inner.list_states(prefix, after, limit)
    }
    fn commit(&self, commit: &Commit) -> StoreResult<CommitOutcome> {
        self.before(Call::Commit(commit))?;
        if let Some(answer) = self
            .hooks
            .commit
            .as_ref()
            .and_then(|f| f(&self.inner, commit))
        {
            return answer;
        }
        self.inner.commit(commit)
    }
}

impl<S: BatchWrite> BatchWrite for Hooked<S> {
    fn write_batch_group(&self, batches: &[WriteBatch]) -> StoreResult<Vec<CommitOutcome>> {
        self.before(Call::BatchGroup(batches))?;
        if let Some(answer) = self
            .hooks
            .group
            .as_ref()
            .and_then(|f| f(&self.inner, batches))
        {
            return answer;
        }
        self.inner.write_batch_group(batches)
    }
}

impl<S: Snapshot> Snapshot for Hooked<S> {
    fn snapshot(&self) -> StoreResult<StoreSnapshot> {
        self.inner.snapshot()
    }
}
