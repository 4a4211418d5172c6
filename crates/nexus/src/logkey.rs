//! The log key of `nexus serve`: `log.key` in the data directory (32 bytes, the
//! Ed25519 seed as 64 hex digits and a newline), created with mode 0600 at first start.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result, bail};
use nexus_tlog::LogKey;

/// Name of the key file in the data directory.
pub const FILE: &str = "log.key";

/// Reads a log key file's text (64 hex digits).
fn parse(path: &Path, text: &str) -> Result<LogKey> {
    text.parse()
        .with_context(|| format!("{} is not a log key", path.display()))
}

/// Loads the log key file `path` (a data directory's `log.key`).
pub fn load(path: &Path) -> Result<LogKey> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    parse(path, &text)
}

/// Loads the data directory's log key, creating it on first start.
pub fn load_or_create(data: &Path) -> Result<LogKey> {
    let path = data.join(FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => parse(&path, &text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut seed = [0u8; 32];
            getrandom::getrandom(&mut seed).context("cannot draw a log key")?;
            let key = LogKey::from_seed(seed);
            create(data, &key)?;
            Ok(key)
        }
        Err(e) => bail!("cannot read {}: {e}", path.display()),
    }
}

/// Writes `key` as the data directory's new log key file (refused if one exists).
pub fn create(data: &Path, key: &LogKey) -> Result<()> {
    let path = data.join(FILE);
    let mut open = std::fs::OpenOptions::new();
    open.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut open, 0o600);
    let mut file = open
        .open(&path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    writeln!(file, "{}", hex::encode(key.seed()))
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))
}
