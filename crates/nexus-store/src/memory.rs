//! The in-memory reference store.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::{
    BatchPut, BatchWrite, BlobStore, CasFailure, Commit, CommitOutcome, Health, KeyValueStore,
    LOG_HEAD_KEY, ObjectStore, PutPhase, Snapshot, StoreError, StoreHealth, StoreResult,
    StoreSnapshot, Tier, WriteBatch, check_commit, check_key, check_writable_state_key, list_range,
    log_key,
};

/// An in-memory store implementing every tier; the reference the other backends are
/// tested against. Cloning shares the same data.
#[derive(Debug, Clone, Default)]
pub struct MemoryStore {
    inner: Arc<RwLock<StoreSnapshot>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// A store holding exactly `snapshot`.
    pub fn from_snapshot(snapshot: StoreSnapshot) -> Self {
        Self {
            inner: Arc::new(RwLock::new(snapshot)),
        }
    }

    fn read(&self) -> StoreResult<RwLockReadGuard<'_, StoreSnapshot>> {
        self.inner
            .read()
            .map_err(|_| StoreError::Backend("memory store lock poisoned".into()))
    }

    fn write(&self) -> StoreResult<RwLockWriteGuard<'_, StoreSnapshot>> {
        self.inner
            .write()
            .map_err(|_| StoreError::Backend("memory store lock poisoned".into()))
    }
}

/// Applies a commit to an in-memory map of states; shared by [`MemoryStore`] and any
/// other backend that keeps its object tier in a `BTreeMap`.
pub fn apply_commit(
    states: &mut BTreeMap<String, Vec<u8>>,
    commit: &Commit,
) -> StoreResult<CommitOutcome> {
    check_commit(commit)?;
    let failed: Vec<CasFailure> = commit
        .expectations()
        .filter(|(key, expected)| states.get(*key).map(Vec::as_slice) != *expected)
        .map(|(key, _)| CasFailure {
            key: key.to_owned(),
            current: states.get(key).cloned(),
        })
        .collect();
    if !failed.is_empty() {
        return Ok(CommitOutcome::Conflict(failed));
    }
    for op in &commit.ops {
        match &op.new {
            Some(v) => states.insert(op.key.clone(), v.clone()),
            None => states.remove(&op.key),
        };
    }
    let first_seq = append_log(states, &commit.log)?;
    Ok(CommitOutcome::Applied { first_seq })
}

fn append_log(
    states: &mut BTreeMap<String, Vec<u8>>,
    entries: &[Vec<u8>],
) -> StoreResult<Option<u64>> {
    if entries.is_empty() {
        return Ok(None);
    }
    let head = match states.get(LOG_HEAD_KEY) {
        None => 0,
        Some(v) => parse_head(v)?,
    };
    let tree = crate::tree_writes(head, entries, |k| Ok(states.get(k).cloned()))?;
    for (i, entry) in entries.iter().enumerate() {
        states.insert(log_key(head + 1 + i as u64), entry.clone());
    }
    for (key, value) in tree {
        match value {
            Some(v) => states.insert(key, v),
            None => states.remove(&key),
        };
    }
    let new_head = head + entries.len() as u64;
    states.insert(LOG_HEAD_KEY.to_owned(), new_head.to_string().into_bytes());
    Ok(Some(head + 1))
}

/// Parses the value stored under [`LOG_HEAD_KEY`].
pub fn parse_head(value: &[u8]) -> StoreResult<u64> {
    std::str::from_utf8(value)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| StoreError::Corrupt {
            key: LOG_HEAD_KEY.to_owned(),
            reason: "log head is not a decimal number".to_owned(),
        })
}

impl KeyValueStore for MemoryStore {
    fn get(&self, key: &str) -> StoreResult<Option<Vec<u8>>> {
        check_key(key)?;
        Ok(self.read()?.kv.get(key).cloned())
    }

    fn set(&self, key: &str, value: &[u8]) -> StoreResult<()> {
        check_key(key)?;
        self.write()?.kv.insert(key.to_owned(), value.to_vec());
        Ok(())
    }

    fn delete(&self, key: &str) -> StoreResult<()> {
        check_key(key)?;
        self.write()?.kv.remove(key);
        Ok(())
    }

    fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<String>> {
        Ok(list_range(&self.read()?.kv, prefix, start_after, limit))
    }
}

impl BlobStore for MemoryStore {
    fn get_blob(&self, key: &str) -> StoreResult<Option<Vec<u8>>> {
        check_key(key)?;
        Ok(self.read()?.blobs.get(key).cloned())
    }

    fn put_blob(&self, key: &str, bytes: &[u8]) -> StoreResult<()> {
        check_key(key)?;
        self.write()?.blobs.insert(key.to_owned(), bytes.to_vec());
        Ok(())
    }

    fn delete_blob(&self, key: &str) -> StoreResult<()> {
        check_key(key)?;
        self.write()?.blobs.remove(key);
        Ok(())
    }

    fn list_blobs(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<String>> {
        Ok(list_range(&self.read()?.blobs, prefix, start_after, limit))
    }
}

impl ObjectStore for MemoryStore {
    fn get_state(&self, key: &str) -> StoreResult<Option<Vec<u8>>> {
        check_key(key)?;
        Ok(self.read()?.states.get(key).cloned())
    }

    fn put_state(&self, key: &str, expected: Option<&[u8]>, new: &[u8]) -> StoreResult<bool> {
        check_writable_state_key(key)?;
        let mut guard = self.write()?;
        if guard.states.get(key).map(Vec::as_slice) != expected {
            return Ok(false);
        }
        guard.states.insert(key.to_owned(), new.to_vec());
        Ok(true)
    }

    fn list_states(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<String>> {
        Ok(list_range(&self.read()?.states, prefix, start_after, limit))
    }

    fn commit(&self, commit: &Commit) -> StoreResult<CommitOutcome> {
        apply_commit(&mut self.write()?.states, commit)
    }
}

impl BatchWrite for MemoryStore {
    /// Applies the whole group under one lock: no reader sees part of it.
    fn write_batch_group(&self, batches: &[WriteBatch]) -> StoreResult<Vec<CommitOutcome>> {
        for batch in batches {
            batch.check()?;
        }
        let mut guard = self.write()?;
        let data = &mut *guard;
        let mut outcomes = Vec::with_capacity(batches.len());
        for batch in batches {
            let mut put = |p: &BatchPut| {
                let tier = match p.tier {
                    Tier::Kv => &mut data.kv,
                    Tier::Blob => &mut data.blobs,
                };
                tier.insert(p.key.clone(), p.value.clone());
            };
            for p in batch
                .puts
                .iter()
                .filter(|p| p.phase == PutPhase::BeforeCommit)
            {
                put(p);
            }
            let outcome = apply_commit(&mut data.states, &batch.commit)?;
            if matches!(outcome, CommitOutcome::Applied { .. }) {
                for p in batch
                    .puts
                    .iter()
                    .filter(|p| p.phase == PutPhase::AfterCommit)
                {
                    put(p);
                }
                for d in &batch.deletes {
                    match d.tier {
                        Tier::Kv => data.kv.remove(&d.key),
                        Tier::Blob => data.blobs.remove(&d.key),
                    };
                }
            }
            outcomes.push(outcome);
        }
        Ok(outcomes)
    }
}

impl Snapshot for MemoryStore {
    fn snapshot(&self) -> StoreResult<StoreSnapshot> {
        Ok(self.read()?.clone())
    }
}

impl Health for MemoryStore {
    /// Memory does not fill up in a way the store can see: always ok.
    fn health(&self) -> StoreHealth {
        StoreHealth::Ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_groups_apply_in_order_and_keep_only_idempotent_puts_of_a_conflict() {
        let store = MemoryStore::new();
        let claim = |who: &str| {
            let mut b = WriteBatch::new(Commit {
                reads: Vec::new(),
                ops: vec![crate::CasOp {
                    key: "intent/1".into(),
                    expected: None,
                    new: Some(who.as_bytes().to_vec()),
                }],
                log: vec![who.as_bytes().to_vec()],
            });
            b.kv(PutPhase::BeforeCommit, format!("r/{who}"), b"rec".to_vec())
                .kv(PutPhase::AfterCommit, format!("x/{who}"), b"".to_vec());
            b
        };
        let outcomes = store
            .write_batch_group(&[claim("a"), claim("b")])
            .expect("group");
        assert_eq!(outcomes[0], CommitOutcome::Applied { first_seq: Some(1) });
        assert!(matches!(outcomes[1], CommitOutcome::Conflict(_)));
        let snap = store.snapshot().expect("snapshot");
        assert_eq!(snap.states.get("intent/1"), Some(&b"a".to_vec()));
        assert!(snap.kv.contains_key("r/b"), "idempotent put kept");
        assert!(!snap.kv.contains_key("x/b"), "after-commit put dropped");
        assert!(snap.kv.contains_key("x/a"));
        // An invalid key refuses the whole group.
        let mut bad = claim("c");
        bad.kv(PutPhase::BeforeCommit, "", b"".to_vec());
        assert!(store.write_batch_group(&[claim("d"), bad]).is_err());
        assert!(!store.snapshot().expect("snapshot").kv.contains_key("r/d"));
    }

    #[test]
    fn memory_store_passes_the_conformance_suite() {
        crate::conformance::run_sync_suite(MemoryStore::new);
    }
}
