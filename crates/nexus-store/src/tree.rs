//! The commit log's Merkle tree (`spec/tlog.md`): its keys, and the writes that go
//! with every log append, computed here once for every backend.
//!
//! The tree's stored hashes live in the object tier beside the log, under
//! [`TREE_PREFIX`] (`log/tree/{index:020}`, 32 raw bytes each, see
//! [`nexus_tlog::stored_hash_index`]); like the log they are written only by
//! [`ObjectStore::commit`](crate::ObjectStore::commit), in the same atomic step as the
//! entries they cover. A backend calls [`tree_writes`] after computing the new log
//! head and applies the writes it returns with its log entries.
//!
//! A store written before the tree existed has log entries and no tree. Its tree then
//! *lags*: [`TREE_SIZE_KEY`] holds how many leaves it has, and each commit first adds
//! up to [`TREE_CATCH_UP`] of the old entries (read from the log in the same step),
//! adding its own entries only once the tree has caught up; when it has, the key is
//! removed. A caught-up tree of a log of `head` entries has exactly `head` leaves.

use std::cell::RefCell;

use nexus_tlog::{Hash, HashSource, TreeError, leaf_hash, stored_hash_index};

use crate::{LOG_PREFIX, StoreError, StoreResult, log_key};

/// Prefix of the tree's keys (inside [`LOG_PREFIX`], so no op may write them).
pub const TREE_PREFIX: &str = "log/tree/";
/// Leaves of a tree that lags its log (absent once it has caught up).
pub const TREE_SIZE_KEY: &str = "log/tree/size";
/// Most old entries one commit adds to a lagging tree.
pub const TREE_CATCH_UP: u64 = 4_096;

const _: () = assert!(TREE_PREFIX.len() > LOG_PREFIX.len());

/// Key of stored hash `index`.
pub fn tree_key(index: u64) -> String {
    format!("{TREE_PREFIX}{index:020}")
}

/// Decodes a stored hash read from `key`.
pub fn decode_tree_hash(key: &str, value: &[u8]) -> StoreResult<Hash> {
    value.try_into().map(Hash).map_err(|_| StoreError::Corrupt {
        key: key.to_owned(),
        reason: format!("a stored tree hash is 32 bytes, found {}", value.len()),
    })
}

/// The stored hashes, read through a backend's state reader.
struct Reader<F>(RefCell<F>);

impl<F: FnMut(&str) -> StoreResult<Option<Vec<u8>>>> HashSource for Reader<F> {
    type Error = StoreError;
    fn read_hashes(&self, indexes: &[u64]) -> StoreResult<Vec<Option<Hash>>> {
        let mut read = self.0.borrow_mut();
        indexes
            .iter()
            .map(|&i| {
                let key = tree_key(i);
                read(&key)?.map(|v| decode_tree_hash(&key, &v)).transpose()
            })
            .collect()
    }
}

fn tree_error(e: TreeError<StoreError>) -> StoreError {
    match e {
        TreeError::Source(e) => e,
        other => StoreError::Corrupt {
            key: TREE_PREFIX.to_owned(),
            reason: other.to_string(),
        },
    }
}

/// The number of leaves of the tree of a log of `head` entries, read through `read`.
pub fn tree_size(
    head: u64,
    read: &mut impl FnMut(&str) -> StoreResult<Option<Vec<u8>>>,
) -> StoreResult<u64> {
    if head == 0 || read(&tree_key(stored_hash_index(0, head - 1)))?.is_some() {
        return Ok(head);
    }
    match read(TREE_SIZE_KEY)? {
        None => Ok(0),
        Some(v) => std::str::from_utf8(&v)
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
            .filter(|&n| n < head)
            .ok_or_else(|| StoreError::Corrupt {
                key: TREE_SIZE_KEY.to_owned(),
                reason: "not a decimal number below the log head".to_owned(),
            }),
    }
}

/// The tree writes of appending `entries` to a log of `head` entries (before the
/// append), reading states through `read`: `(key, Some(value))` to store,
/// `(key, None)` to remove. Apply them in the same atomic step as the entries.
pub fn tree_writes(
    head: u64,
    entries: &[Vec<u8>],
    mut read: impl FnMut(&str) -> StoreResult<Option<Vec<u8>>>,
) -> StoreResult<Vec<(String, Option<Vec<u8>>)>> {
    let size = tree_size(head, &mut read)?;
    let mut leaves = Vec::new();
    let caught_up = head.min(size.saturating_add(TREE_CATCH_UP));
    for seq in size + 1..=caught_up {
        let key = log_key(seq);
        let entry = read(&key)?.ok_or_else(|| StoreError::Corrupt {
            key,
            reason: "log entry missing below the head".to_owned(),
        })?;
        leaves.push(leaf_hash(&entry));
    }
    let lagging = caught_up < head;
    if !lagging {
        leaves.extend(entries.iter().map(|e| leaf_hash(e)));
    }
    let new_size = size + leaves.len() as u64;
    let reader = Reader(RefCell::new(read));
    let mut writes: Vec<(String, Option<Vec<u8>>)> = nexus_tlog::append(size, &leaves, &reader)
        .map_err(tree_error)?
        .into_iter()
        .map(|(i, h)| (tree_key(i), Some(h.0.to_vec())))
        .collect();
    if lagging {
        writes.push((
            TREE_SIZE_KEY.to_owned(),
            Some(new_size.to_string().into_bytes()),
        ));
    } else if size < head {
        writes.push((TREE_SIZE_KEY.to_owned(), None));
    }
    Ok(writes)
}

/// The stored hashes of a store's tree, read through an [`ObjectStore`](crate::ObjectStore)
/// in one batch per call: what serves roots and proofs.
pub struct StoreHashes<'a, O: ?Sized>(pub &'a O);

impl<O: crate::ObjectStore + ?Sized> HashSource for StoreHashes<'_, O> {
    type Error = StoreError;
    fn read_hashes(&self, indexes: &[u64]) -> StoreResult<Vec<Option<Hash>>> {
        let keys: Vec<String> = indexes.iter().map(|&i| tree_key(i)).collect();
        let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
        self.0
            .get_states(&refs)?
            .into_iter()
            .zip(&keys)
            .map(|(v, key)| v.map(|v| decode_tree_hash(key, &v)).transpose())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::{Commit, LOG_HEAD_KEY, apply_commit};

    /// A map holding `n` log entries and no tree: a store from before the tree.
    fn old_store(n: u64) -> BTreeMap<String, Vec<u8>> {
        let mut states: BTreeMap<String, Vec<u8>> = (1..=n)
            .map(|seq| (log_key(seq), format!("entry {seq}").into_bytes()))
            .collect();
        states.insert(LOG_HEAD_KEY.to_owned(), n.to_string().into_bytes());
        states
    }

    /// The root of the tree stored in `states`.
    fn root_of(states: &BTreeMap<String, Vec<u8>>, size: u64) -> Hash {
        let reader = Reader(RefCell::new(|k: &str| Ok(states.get(k).cloned())));
        nexus_tlog::root(size, &reader).expect("root")
    }

    #[test]
    fn a_tree_that_lags_its_log_catches_up_over_commits_then_grows_with_them() {
        let old = TREE_CATCH_UP + 10;
        let mut states = old_store(old);
        let mut read = |k: &str| Ok(states.get(k).cloned());
        assert_eq!(tree_size(old, &mut read).expect("size"), 0);
        let commit = Commit::new(vec![], vec![b"new 1".to_vec()]);
        apply_commit(&mut states, &commit).expect("commit");
        // The first commit adds TREE_CATCH_UP old entries, not its own.
        assert_eq!(
            states.get(TREE_SIZE_KEY),
            Some(&TREE_CATCH_UP.to_string().into_bytes())
        );
        let mut read = |k: &str| Ok(states.get(k).cloned());
        assert_eq!(tree_size(old + 1, &mut read).expect("size"), TREE_CATCH_UP);
        apply_commit(&mut states, &Commit::new(vec![], vec![b"new 2".to_vec()])).expect("commit");
        // The second catches up and adds both new entries; the lag marker is gone.
        assert_eq!(states.get(TREE_SIZE_KEY), None);
        let mut read = |k: &str| Ok(states.get(k).cloned());
        assert_eq!(tree_size(old + 2, &mut read).expect("size"), old + 2);
        let leaves: Vec<Hash> = (1..=old + 2)
            .map(|seq| nexus_tlog::leaf_hash(&states[&log_key(seq)]))
            .collect();
        let mut fresh = BTreeMap::new();
        let writes = nexus_tlog::append(0, &leaves, &MapHashes(&BTreeMap::new())).expect("append");
        fresh.extend(writes);
        assert_eq!(
            root_of(&states, old + 2),
            nexus_tlog::root(old + 2, &MapHashes(&fresh)).expect("root")
        );
    }

    struct MapHashes<'a>(&'a BTreeMap<u64, Hash>);

    impl HashSource for MapHashes<'_> {
        type Error = StoreError;
        fn read_hashes(&self, indexes: &[u64]) -> StoreResult<Vec<Option<Hash>>> {
            Ok(indexes.iter().map(|i| self.0.get(i).copied()).collect())
        }
    }
}
