//! [`SignedCheckpoint`]: a checkpoint as a host serves and keeps it (`GET
//! /v1/checkpoint`, a manifest's `checkpoint`, the file `nexus checkpoint` saves), and
//! [`MemoryTree`], the tree of leaves a verifier recomputes from an export.

use serde::{Deserialize, Serialize};
use tlog_tiles::Hash;

use crate::checkpoint::{Checkpoint, CheckpointError, LogSigner, verify_checkpoint};
use crate::tree::{HashSource, TreeError, append, root};

/// A signed checkpoint with its verifier key, as JSON: the signed note is what counts;
/// `origin`, `size` and `root` repeat its body for people and scripts (and must agree
/// with it), `log_key` names the key the host signs with (self-asserted: pin the key
/// you trust with `--log-key`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedCheckpoint {
    /// The log's origin (`nexus/<deployment id>`).
    pub origin: String,
    /// The tree size.
    pub size: u64,
    /// The root hash, standard base64.
    pub root: String,
    /// The signer's verifier key (`<origin>+<key id>+<base64 key>`).
    pub log_key: String,
    /// The C2SP signed note.
    pub checkpoint: String,
}

impl SignedCheckpoint {
    /// Signs the tree of `size` leaves with root `root`.
    pub fn sign(signer: &LogSigner, size: u64, root: &Hash) -> Self {
        Self {
            origin: signer.origin().to_owned(),
            size,
            root: root.to_string(),
            log_key: signer.verifier_key(),
            checkpoint: signer.sign(size, root),
        }
    }

    /// Verifies the note under `expected` (a pinned verifier key), or under its own
    /// `log_key` when `None`, and that the JSON fields say what the note says.
    pub fn verify(&self, expected: Option<&str>) -> Result<Checkpoint, CheckpointError> {
        let key = expected.unwrap_or(&self.log_key);
        let cp = verify_checkpoint(&self.checkpoint, key)?;
        if cp.origin != self.origin || cp.size != self.size || cp.root.to_string() != self.root {
            return Err(CheckpointError::BadBody(format!(
                "the fields (origin {}, size {}, root {}) differ from the signed note's \
                 (origin {}, size {}, root {})",
                self.origin, self.size, self.root, cp.origin, cp.size, cp.root
            )));
        }
        Ok(cp)
    }
}

/// A whole tree in memory (its stored hashes, about 64 bytes a leaf), grown leaf by
/// leaf: what a verifier rebuilds from an export to compare with a checkpoint.
#[derive(Debug, Clone, Default)]
pub struct MemoryTree {
    size: u64,
    hashes: Vec<Hash>,
}

impl HashSource for MemoryTree {
    type Error = std::convert::Infallible;
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Option<Hash>>, Self::Error> {
        Ok(indexes
            .iter()
            .map(|&i| {
                usize::try_from(i)
                    .ok()
                    .and_then(|i| self.hashes.get(i))
                    .copied()
            })
            .collect())
    }
}

impl MemoryTree {
    /// The number of leaves.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends leaf hash `leaf` (see [`leaf_hash`](crate::leaf_hash)).
    pub fn push(&mut self, leaf: Hash) {
        // The tree holds every stored hash of its size, so append cannot miss one.
        if let Ok(writes) = append(self.size, &[leaf], &*self) {
            self.hashes.extend(writes.into_iter().map(|(_, h)| h));
            self.size += 1;
        }
    }

    /// The root of the first `size` leaves (at most [`size`](Self::size)).
    pub fn root(&self, size: u64) -> Result<Hash, TreeError<std::convert::Infallible>> {
        if size > self.size {
            return Err(TreeError::Input(format!(
                "the tree has {} leaves, not {size}",
                self.size
            )));
        }
        root(size, self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::leaf_hash;

    #[test]
    fn memory_tree_roots_match_and_checkpoints_verify_only_as_signed() {
        let mut t = MemoryTree::default();
        let leaves: Vec<Hash> = (0..9)
            .map(|i| leaf_hash(format!("e{i}").as_bytes()))
            .collect();
        for l in &leaves {
            t.push(*l);
        }
        assert_eq!(t.size(), 9);
        let mut other = MemoryTree::default();
        for (i, l) in leaves.iter().enumerate() {
            assert_eq!(
                t.root(i as u64).expect("root"),
                other.root(i as u64).expect("root")
            );
            other.push(*l);
        }
        assert!(t.root(10).is_err());
        let signer = LogSigner::new("nexus/x", [3; 32]).expect("signer");
        let root = t.root(9).expect("root");
        let cp = SignedCheckpoint::sign(&signer, 9, &root);
        assert_eq!(cp.verify(None).expect("verifies").root, root);
        let other_key = LogSigner::new("nexus/x", [4; 32])
            .expect("signer")
            .verifier_key();
        assert!(matches!(
            cp.verify(Some(&other_key)),
            Err(CheckpointError::NotSigned(_))
        ));
        let lying = SignedCheckpoint {
            size: 8,
            ..cp.clone()
        };
        assert!(matches!(
            lying.verify(None),
            Err(CheckpointError::BadBody(_))
        ));
    }
}
