//! The tree: appending leaves, roots, proofs and their verification, over stored hashes.

use std::cell::RefCell;
use std::collections::BTreeMap;

use tlog_tiles::{Hash, HashReader};

/// Where the tree's stored hashes come from (a store's node keys, a map in a test, the
/// leaves of an export).
pub trait HashSource {
    /// What reading can fail with.
    type Error;
    /// The stored hashes at `indexes` (see [`stored_hash_index`](crate::stored_hash_index)),
    /// in the order asked, `None` where a hash is not stored. Callers ask for all the
    /// hashes one step needs in one call (sorted, increasing), so that a host can read
    /// them in one batch.
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Option<Hash>>, Self::Error>;
}

/// Why a tree operation failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TreeError<E> {
    /// Reading stored hashes failed.
    #[error("reading the tree's stored hashes failed: {0}")]
    Source(E),
    /// A stored hash the operation needs is absent: the store's tree does not cover
    /// the size asked for (or it is damaged).
    #[error("stored hash {0} of the tree is missing")]
    Missing(u64),
    /// The arguments name no proof (a leaf at or past the size, a size past the other).
    #[error("{0}")]
    Input(String),
    /// A proof did not verify.
    #[error("the proof does not verify")]
    InvalidProof,
}

/// Adapts a [`HashSource`] to `tlog_tiles`' reader, keeping its error or the first
/// missing index aside (the library's error type cannot carry either).
struct Reader<'a, S: HashSource> {
    source: &'a S,
    failure: RefCell<Option<TreeError<S::Error>>>,
}

impl<S: HashSource> HashReader for Reader<'_, S> {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, tlog_tiles::Error> {
        let fail = |e| {
            *self.failure.borrow_mut() = Some(e);
            tlog_tiles::Error::IndexesNotInTree
        };
        let read = self
            .source
            .read_hashes(indexes)
            .map_err(|e| fail(TreeError::Source(e)))?;
        if read.len() != indexes.len() {
            return Err(fail(TreeError::Input(format!(
                "a hash source answered {} hashes for {} indexes",
                read.len(),
                indexes.len()
            ))));
        }
        indexes
            .iter()
            .zip(read)
            .map(|(&i, h)| h.ok_or_else(|| fail(TreeError::Missing(i))))
            .collect()
    }
}

fn with_reader<S: HashSource, T>(
    source: &S,
    run: impl FnOnce(&Reader<'_, S>) -> Result<T, tlog_tiles::Error>,
) -> Result<T, TreeError<S::Error>> {
    let reader = Reader {
        source,
        failure: RefCell::new(None),
    };
    run(&reader).map_err(|e| {
        reader
            .failure
            .into_inner()
            .unwrap_or_else(|| TreeError::Input(e.to_string()))
    })
}

/// The stored hashes this batch has computed, in front of the source's.
struct Overlay<'a, S> {
    source: &'a S,
    fresh: BTreeMap<u64, Hash>,
}

impl<S: HashSource> HashSource for Overlay<'_, S> {
    type Error = S::Error;
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Option<Hash>>, S::Error> {
        let old: Vec<u64> = indexes
            .iter()
            .copied()
            .filter(|i| !self.fresh.contains_key(i))
            .collect();
        let mut read = self.source.read_hashes(&old)?.into_iter();
        Ok(indexes
            .iter()
            .map(|i| match self.fresh.get(i) {
                Some(h) => Some(*h),
                None => read.next().flatten(),
            })
            .collect())
    }
}

/// Appends `leaves` (leaf hashes, see [`leaf_hash`](crate::leaf_hash)) to a tree of
/// `size` leaves whose stored hashes `source` holds: the stored hashes to write, as
/// `(index, hash)` in increasing index order (they are exactly the indexes
/// `stored_hash_count(size)..stored_hash_count(size + leaves.len())`). Reads at most
/// `log₂` of the old size hashes per leaf (on average under one).
pub fn append<S: HashSource>(
    size: u64,
    leaves: &[Hash],
    source: &S,
) -> Result<Vec<(u64, Hash)>, TreeError<S::Error>> {
    let mut overlay = Overlay {
        source,
        fresh: BTreeMap::new(),
    };
    for (i, leaf) in leaves.iter().enumerate() {
        let n = size
            .checked_add(i as u64)
            .ok_or_else(|| TreeError::Input("the tree cannot grow past 2^64 leaves".into()))?;
        let hashes = with_reader(&overlay, |r| {
            tlog_tiles::stored_hashes_for_record_hash(n, *leaf, r)
        })?;
        let first = tlog_tiles::stored_hash_index(0, n);
        overlay.fresh.extend((first..).zip(hashes));
    }
    Ok(overlay.fresh.into_iter().collect())
}

/// The root hash of the tree of `size` leaves (RFC 6962 `MTH`; the empty tree's is
/// [`EMPTY_HASH`](crate::EMPTY_HASH)); reads at most `1 + log₂ size` stored hashes.
pub fn root<S: HashSource>(size: u64, source: &S) -> Result<Hash, TreeError<S::Error>> {
    with_reader(source, |r| tlog_tiles::tree_hash(size, r))
}

/// The RFC 6962 audit path of leaf `index` in the tree of `size` leaves (leaf side
/// first, as RFC 9162 §2.1.3 orders it).
pub fn prove_inclusion<S: HashSource>(
    size: u64,
    index: u64,
    source: &S,
) -> Result<Vec<Hash>, TreeError<S::Error>> {
    if index >= size {
        return Err(TreeError::Input(format!(
            "leaf {index} is not in a tree of {size} leaves"
        )));
    }
    with_reader(source, |r| tlog_tiles::prove_record(size, index, r))
}

/// The RFC 6962 consistency proof from the tree of `old` leaves to the tree of `new`
/// leaves (empty when `old` is 0 or equals `new`).
pub fn prove_consistency<S: HashSource>(
    old: u64,
    new: u64,
    source: &S,
) -> Result<Vec<Hash>, TreeError<S::Error>> {
    if old > new {
        return Err(TreeError::Input(format!(
            "a tree of {old} leaves is not a prefix of one of {new}"
        )));
    }
    if old == 0 {
        return Ok(Vec::new());
    }
    with_reader(source, |r| tlog_tiles::prove_tree(new, old, r))
}

/// Checks that `proof` shows leaf hash `leaf` at `index` in the tree of `size` leaves
/// with root `root`.
pub fn verify_inclusion(
    proof: &[Hash],
    size: u64,
    root: Hash,
    index: u64,
    leaf: Hash,
) -> Result<(), TreeError<std::convert::Infallible>> {
    if index >= size {
        return Err(TreeError::Input(format!(
            "leaf {index} is not in a tree of {size} leaves"
        )));
    }
    tlog_tiles::check_record(&proof.to_vec(), size, root, index, leaf)
        .map_err(|_| TreeError::InvalidProof)
}

/// Checks that `proof` shows the tree of `old` leaves with root `old_root` to be a
/// prefix of the tree of `new` leaves with root `new_root`.
pub fn verify_consistency(
    proof: &[Hash],
    old: u64,
    old_root: Hash,
    new: u64,
    new_root: Hash,
) -> Result<(), TreeError<std::convert::Infallible>> {
    if old > new {
        return Err(TreeError::Input(format!(
            "a tree of {old} leaves is not a prefix of one of {new}"
        )));
    }
    if old == 0 {
        // Every tree extends the empty one; the proof must be empty.
        return if proof.is_empty() && old_root == tlog_tiles::EMPTY_HASH {
            Ok(())
        } else {
            Err(TreeError::InvalidProof)
        };
    }
    tlog_tiles::check_tree(&proof.to_vec(), new, new_root, old, old_root)
        .map_err(|_| TreeError::InvalidProof)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{leaf_hash, node_hash};
    use std::collections::BTreeMap;

    #[derive(Default)]
    struct Map(BTreeMap<u64, Hash>);

    impl HashSource for Map {
        type Error = std::convert::Infallible;
        fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Option<Hash>>, Self::Error> {
            Ok(indexes.iter().map(|i| self.0.get(i).copied()).collect())
        }
    }

    /// RFC 6962 `MTH` straight from its definition, to check the stored-hash tree against.
    fn mth(leaves: &[Hash]) -> Hash {
        match leaves.len() {
            0 => crate::EMPTY_HASH,
            1 => leaves[0],
            n => {
                let k = 1usize << (n - 1).ilog2();
                node_hash(mth(&leaves[..k]), mth(&leaves[k..]))
            }
        }
    }

    fn build(n: u64, batch: usize) -> (Map, Vec<Hash>) {
        let leaves: Vec<Hash> = (0..n)
            .map(|i| leaf_hash(format!("entry {i}").as_bytes()))
            .collect();
        let mut map = Map::default();
        let mut size = 0u64;
        for chunk in leaves.chunks(batch) {
            let writes = append(size, chunk, &map).expect("append");
            let from = crate::stored_hash_count(size);
            let to = crate::stored_hash_count(size + chunk.len() as u64);
            assert_eq!(
                writes.iter().map(|w| w.0).collect::<Vec<_>>(),
                (from..to).collect::<Vec<_>>()
            );
            map.0.extend(writes);
            size += chunk.len() as u64;
        }
        (map, leaves)
    }

    #[test]
    fn roots_match_the_rfc_definition_for_every_size_and_batching() {
        for batch in [1, 3, 8] {
            let (map, leaves) = build(40, batch);
            for size in 0..=40u64 {
                assert_eq!(
                    root(size, &map).expect("root"),
                    mth(&leaves[..size as usize]),
                    "size {size}"
                );
            }
        }
    }

    #[test]
    fn inclusion_and_consistency_proofs_verify_and_tampering_fails() {
        let (map, leaves) = build(21, 4);
        for size in 1..=21u64 {
            let r = root(size, &map).expect("root");
            for i in 0..size {
                let p = prove_inclusion(size, i, &map).expect("prove");
                verify_inclusion(&p, size, r, i, leaves[i as usize]).expect("verifies");
                let other = leaf_hash(b"other");
                assert_eq!(
                    verify_inclusion(&p, size, r, i, other),
                    Err(TreeError::InvalidProof)
                );
                if size > 1 {
                    assert!(
                        verify_inclusion(&p, size, r, (i + 1) % size, leaves[i as usize]).is_err()
                    );
                }
            }
            for old in 0..=size {
                let p = prove_consistency(old, size, &map).expect("prove");
                let old_root = root(old, &map).expect("root");
                verify_consistency(&p, old, old_root, size, r).expect("consistent");
                if old > 0 && old < size {
                    let forged = leaf_hash(b"forged");
                    assert!(verify_consistency(&p, old, forged, size, r).is_err());
                }
            }
        }
    }

    #[test]
    fn a_missing_stored_hash_is_named_and_bad_arguments_are_refused() {
        let (mut map, _) = build(8, 8);
        assert!(matches!(
            prove_inclusion(8, 8, &map),
            Err(TreeError::Input(_))
        ));
        assert!(matches!(
            prove_consistency(9, 8, &map),
            Err(TreeError::Input(_))
        ));
        map.0.remove(&crate::stored_hash_index(3, 0));
        assert_eq!(
            root(8, &map),
            Err(TreeError::Missing(crate::stored_hash_index(3, 0)))
        );
    }
}
