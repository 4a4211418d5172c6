//! Test support: a store that records its write calls and can inject faults.

#![allow(dead_code)] // each test binary uses a different part
#![allow(clippy::unwrap_used)]

use std::sync::Mutex;

use nexus_store::{
    BlobStore, Commit, CommitOutcome, KeyValueStore, MemoryStore, ObjectStore, StoreError,
    StoreResult,
};

type Hook = Box<dyn FnOnce(&MemoryStore) + Send>;

/// A [`MemoryStore`] that logs every write call (`"blob_put k"`, `"kv_set k"`,
/// `"commit"`, `"kv_delete k"`, `"blob_delete k"`), fails the call whose event equals
/// `fail_at`, and runs `before_commit` (once) just before the next commit, to stand in
/// for a concurrent writer.
#[derive(Default)]
pub struct Recording {
    pub inner: MemoryStore,
    pub events: Mutex<Vec<String>>,
    pub fail_at: Mutex<Option<String>>,
    pub before_commit: Mutex<Vec<Hook>>,
}

impl Recording {
    pub fn new(inner: MemoryStore) -> Self {
        Self {
            inner,
            ..Self::default()
        }
    }

    pub fn fail_at(&self, event: &str) {
        *self.fail_at.lock().unwrap() = Some(event.to_owned());
    }

    /// Queues an interference run before one later commit (first queued, first run).
    pub fn interfere(&self, hook: impl FnOnce(&MemoryStore) + Send + 'static) {
        self.before_commit.lock().unwrap().push(Box::new(hook));
    }

    pub fn events(&self) -> Vec<String> {
        self.events.lock().unwrap().clone()
    }

    fn record(&self, event: String) -> StoreResult<()> {
        if self.fail_at.lock().unwrap().as_deref() == Some(event.as_str()) {
            return Err(StoreError::Backend(format!("injected failure at {event}")));
        }
        self.events.lock().unwrap().push(event);
        Ok(())
    }
}

impl KeyValueStore for Recording {
    fn get(&self, key: &str) -> StoreResult<Option<Vec<u8>>> {
        self.inner.get(key)
    }
    fn set(&self, key: &str, value: &[u8]) -> StoreResult<()> {
        self.record(format!("kv_set {key}"))?;
        self.inner.set(key, value)
    }
    fn delete(&self, key: &str) -> StoreResult<()> {
        self.record(format!("kv_delete {key}"))?;
        self.inner.delete(key)
    }
    fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<String>> {
        self.inner.list(prefix, start_after, limit)
    }
}

impl BlobStore for Recording {
    fn get_blob(&self, key: &str) -> StoreResult<Option<Vec<u8>>> {
        self.inner.get_blob(key)
    }
    fn put_blob(&self, key: &str, bytes: &[u8]) -> StoreResult<()> {
        self.record(format!("blob_put {key}"))?;
        self.inner.put_blob(key, bytes)
    }
    fn delete_blob(&self, key: &str) -> StoreResult<()> {
        self.record(format!("blob_delete {key}"))?;
        self.inner.delete_blob(key)
    }
    fn list_blobs(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<String>> {
        self.inner.list_blobs(prefix, start_after, limit)
    }
}

impl ObjectStore for Recording {
    fn get_state(&self, key: &str) -> StoreResult<Option<Vec<u8>>> {
        self.inner.get_state(key)
    }
    fn put_state(&self, key: &str, expected: Option<&[u8]>, new: &[u8]) -> StoreResult<bool> {
        self.record(format!("put_state {key}"))?;
        self.inner.put_state(key, expected, new)
    }
    fn list_states(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<String>> {
        self.inner.list_states(prefix, start_after, limit)
    }
    fn commit(&self, commit: &Commit) -> StoreResult<CommitOutcome> {
        let hook = {
            let mut hooks = self.before_commit.lock().unwrap();
            if hooks.is_empty() {
                None
            } else {
                Some(hooks.remove(0))
            }
        };
        if let Some(hook) = hook {
            hook(&self.inner);
        }
        self.record("commit".to_owned())?;
        self.inner.commit(commit)
    }
}

pub fn b(x: &str) -> Vec<u8> {
    x.as_bytes().to_vec()
}

pub fn s(x: &str) -> String {
    x.to_owned()
}
