//! The agent allowlist of a data directory: `DATA/agents`, one author key (64 hex
//! digits) per line; `#` starts a comment. Beside it, `DATA/operators` in the same
//! format: operator keys, which may also write, and are the only keys (besides the
//! contract in force) that may post `deny`/`allow` Hints or retract others' Hints.
//! The server reads both at start.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use nexus_core::AuthorKey;

/// Which list of a data directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    /// `DATA/agents`: keys allowed to write.
    Agent,
    /// `DATA/operators`: operator keys.
    Operator,
}

impl Tier {
    fn name(self) -> &'static str {
        match self {
            Tier::Agent => "agents",
            Tier::Operator => "operators",
        }
    }
}

fn file(data: &Path, tier: Tier) -> PathBuf {
    data.join(tier.name())
}

/// The allowed keys (empty if the file does not exist).
pub fn load(data: &Path) -> Result<BTreeSet<AuthorKey>> {
    load_tier(data, Tier::Agent)
}

/// The keys of `tier` (empty if its file does not exist).
pub fn load_tier(data: &Path, tier: Tier) -> Result<BTreeSet<AuthorKey>> {
    let path = file(data, tier);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeSet::new()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let mut keys = BTreeSet::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let key: AuthorKey = line
            .parse()
            .with_context(|| format!("{}:{}: not an author key", path.display(), n + 1))?;
        keys.insert(key);
    }
    Ok(keys)
}

fn save(data: &Path, tier: Tier, keys: &BTreeSet<AuthorKey>) -> Result<()> {
    std::fs::create_dir_all(data)
        .with_context(|| format!("cannot create data directory {}", data.display()))?;
    let path = file(data, tier);
    let mut text = String::from(match tier {
        Tier::Agent => "# neXus agent allowlist: author keys allowed to write\n",
        Tier::Operator => {
            "# neXus operator keys: may write, post deny/allow Hints, retract Hints\n"
        }
    });
    for k in keys {
        text.push_str(&format!("{k}\n"));
    }
    // Write beside, then rename: a crash never leaves a half-written allowlist.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("cannot replace {}", path.display()))
}

/// Adds a key to `tier`; returns false if it was already there.
pub fn add(data: &Path, tier: Tier, key: AuthorKey) -> Result<bool> {
    let mut keys = load_tier(data, tier)?;
    let added = keys.insert(key);
    save(data, tier, &keys)?;
    Ok(added)
}

/// Removes a key from `tier`; fails if it was not there.
pub fn remove(data: &Path, tier: Tier, key: &AuthorKey) -> Result<()> {
    let mut keys = load_tier(data, tier)?;
    if !keys.remove(key) {
        bail!("{key} is not in {}", file(data, tier).display());
    }
    save(data, tier, &keys)
}

#[cfg(test)]
mod tests {
    use super::*;
    use nexus_core::SigningKey;

    #[test]
    fn add_list_remove_roundtrip() {
        let dir = std::env::temp_dir().join(format!("nexus-agents-{}", std::process::id()));
        let k = SigningKey::from_seed(&[1; 32]).author();
        assert!(load(&dir).expect("load").is_empty());
        assert!(add(&dir, Tier::Agent, k).expect("add"));
        assert!(!add(&dir, Tier::Agent, k).expect("add again"));
        assert!(load_tier(&dir, Tier::Operator).expect("load").is_empty());
        assert!(add(&dir, Tier::Operator, k).expect("add operator"));
        assert_eq!(load_tier(&dir, Tier::Operator).expect("load").len(), 1);
        assert_eq!(
            load(&dir).expect("load").into_iter().collect::<Vec<_>>(),
            vec![k]
        );
        remove(&dir, Tier::Agent, &k).expect("remove");
        assert!(remove(&dir, Tier::Agent, &k).is_err());
        std::fs::write(file(&dir, Tier::Agent), "not-a-key\n").expect("write");
        let err = load(&dir).expect_err("bad line");
        assert!(format!("{err:#}").contains(":1: not an author key"));
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
