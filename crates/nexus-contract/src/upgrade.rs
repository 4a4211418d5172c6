//! Versioned upgrades: who may replace the current contract.

use std::collections::BTreeSet;

use nexus_core::{AuthorKey, Fact, FihHash};

use crate::syntax::UpgradePolicy;

/// Why an upgrade is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpgradeError {
    /// The deployer's key is not one of the current contract's upgrade keys.
    #[error("key {deployer} may not upgrade this contract (allowed: {allowed})")]
    NotAllowed {
        /// Who tried.
        deployer: AuthorKey,
        /// The allowed keys, comma-separated.
        allowed: String,
    },
    /// Not enough distinct allowed keys approved the new version.
    #[error(
        "upgrade to {new} needs approvals from {needed} distinct allowed keys under {topic}; found {found}"
    )]
    Quorum {
        /// The proposed version.
        new: FihHash,
        /// How many are needed.
        needed: usize,
        /// How many distinct allowed keys approved it.
        found: usize,
        /// Where approvals are expected.
        topic: String,
    },
}

impl UpgradePolicy {
    /// Checks that `deployer` may replace `current`, the contract governed by this
    /// policy, with version `new`. `approvals` are candidate approval Facts (hash and
    /// content): those under the quorum topic (or below it) from allowed keys whose
    /// body has `"contract": "<new as hex>"` and `"replaces": "<current as hex>"`
    /// count once per key (naming the version replaced keeps an approval from being
    /// used again later to roll back to `new` from another version). Returns the
    /// Facts that counted (empty without a quorum). Without `[upgrade]` anyone the
    /// host allows may upgrade; the host's allowlist applies in every case.
    pub fn authorize(
        &self,
        deployer: &AuthorKey,
        current: &FihHash,
        new: &FihHash,
        approvals: &[(FihHash, Fact)],
    ) -> Result<Vec<FihHash>, UpgradeError> {
        let Some(q) = &self.quorum else {
            if self.keys.is_empty() || self.keys.contains(deployer) {
                return Ok(Vec::new());
            }
            return Err(UpgradeError::NotAllowed {
                deployer: *deployer,
                allowed: self
                    .keys
                    .iter()
                    .map(|k| k.to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        };
        let want = new.to_hex();
        let replaces = current.to_hex();
        let mut by: BTreeSet<AuthorKey> = BTreeSet::new();
        let mut counted = Vec::new();
        let mut sorted: Vec<&(FihHash, Fact)> = approvals.iter().collect();
        sorted.sort_by_key(|(h, f)| (f.time, *h));
        for (h, f) in sorted {
            let approves = f.topic.starts_with(&q.topic)
                && self.keys.contains(&f.author)
                && f.body.get("contract").and_then(|c| c.as_str()) == Some(want.as_str())
                && f.body.get("replaces").and_then(|c| c.as_str()) == Some(replaces.as_str());
            if approves && by.insert(f.author) {
                counted.push(*h);
            }
        }
        if by.len() >= q.count {
            Ok(counted)
        } else {
            Err(UpgradeError::Quorum {
                new: *new,
                needed: q.count,
                found: by.len(),
                topic: q.topic.to_string(),
            })
        }
    }
}
