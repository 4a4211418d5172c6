//! The agent allowlist of a data directory: `DATA/agents`, one author key (64 hex
//! digits) per line; `#` starts a comment. The server reads it at start.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use nexus_core::AuthorKey;

fn file(data: &Path) -> PathBuf {
    data.join("agents")
}

/// The allowed keys (empty if the file does not exist).
pub fn load(data: &Path) -> Result<BTreeSet<AuthorKey>> {
    let path = file(data);
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

fn save(data: &Path, keys: &BTreeSet<AuthorKey>) -> Result<()> {
    std::fs::create_dir_all(data)
        .with_context(|| format!("cannot create data directory {}", data.display()))?;
    let path = file(data);
    let mut text = String::from("# neXus agent allowlist: author keys allowed to write\n");
    for k in keys {
        text.push_str(&format!("{k}\n"));
    }
    // Write beside, then rename: a crash never leaves a half-written allowlist.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("cannot replace {}", path.display()))
}

/// Adds a key; returns false if it was already there.
pub fn add(data: &Path, key: AuthorKey) -> Result<bool> {
    let mut keys = load(data)?;
    let added = keys.insert(key);
    save(data, &keys)?;
    Ok(added)
}

/// Removes a key; fails if it was not there.
pub fn remove(data: &Path, key: &AuthorKey) -> Result<()> {
    let mut keys = load(data)?;
    if !keys.remove(key) {
        bail!("{key} is not on the allowlist of {}", data.display());
    }
    save(data, &keys)
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
        assert!(add(&dir, k).expect("add"));
        assert!(!add(&dir, k).expect("add again"));
        assert_eq!(
            load(&dir).expect("load").into_iter().collect::<Vec<_>>(),
            vec![k]
        );
        remove(&dir, &k).expect("remove");
        assert!(remove(&dir, &k).is_err());
        std::fs::write(file(&dir), "not-a-key\n").expect("write");
        let err = load(&dir).expect_err("bad line");
        assert!(format!("{err:#}").contains(":1: not an author key"));
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
