//! The native cold tier (spec/archive.md): a directory of blobs, the background flusher
//! of `nexus serve`, and `nexus restore`. The rules (when a window closes, the order of
//! writes, snapshots, what a restore checks) are `nexus_core::archive` and
//! `nexus_api::restore`; this module only does the I/O.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use nexus_core::archive::WindowPolicy;
use nexus_core::{CompositeColdStorage, FlushCapable, Limits};
use nexus_store::{BlobStore, StoreError, StoreResult};
use nexus_store_redb::RedbStore;

/// A blob store on a directory: key `a/b/c` is the file `DIR/a/b/c`. A put is durable
/// when it returns (written beside, synced, renamed over, directory synced), which is
/// what lets the flush cursor move after it.
#[derive(Debug, Clone)]
pub struct DirBlobs {
    root: PathBuf,
}

impl DirBlobs {
    /// Blobs under `root` (created when first written).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    fn path(&self, key: &str) -> StoreResult<PathBuf> {
        // Keys are the cold tier's own (`archive/…`, `snapshot/…`, `contract/blob/…`):
        // refuse anything that could leave the directory.
        let bad = key.is_empty()
            || key.starts_with('/')
            || key
                .split('/')
                .any(|p| p.is_empty() || p == "." || p == "..")
            || key.contains('\\');
        if bad {
            return Err(StoreError::InvalidKey {
                key: key.to_owned(),
                reason: "not a relative path of plain names".into(),
            });
        }
        Ok(self.root.join(key))
    }
}

fn io(path: &Path, e: std::io::Error) -> StoreError {
    if e.raw_os_error() == Some(28) {
        StoreError::Full(format!("{}: {e}", path.display()))
    } else {
        StoreError::Backend(format!("{}: {e}", path.display()))
    }
}

impl BlobStore for DirBlobs {
    fn get_blob(&self, key: &str) -> StoreResult<Option<Vec<u8>>> {
        let path = self.path(key)?;
        match fs::read(&path) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(&path, e)),
        }
    }

    fn put_blob(&self, key: &str, bytes: &[u8]) -> StoreResult<()> {
        let path = self.path(key)?;
        let dir = path.parent().unwrap_or(&self.root).to_path_buf();
        fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
        let tmp = path.with_extension("partial");
        let mut f = File::create(&tmp).map_err(|e| io(&tmp, e))?;
        f.write_all(bytes).map_err(|e| io(&tmp, e))?;
        f.sync_all().map_err(|e| io(&tmp, e))?;
        fs::rename(&tmp, &path).map_err(|e| io(&path, e))?;
        File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io(&dir, e))
    }

    fn delete_blob(&self, key: &str) -> StoreResult<()> {
        let path = self.path(key)?;
        match fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(&path, e)),
            _ => Ok(()),
        }
    }

    /// Lists one directory: every key of the cold tier is flat under its prefix's
    /// directory (spec/archive.md), so `prefix` is a directory plus a name prefix.
    fn list_blobs(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<String>> {
        let (dir, name) = prefix.rsplit_once('/').unwrap_or(("", prefix));
        let path = if dir.is_empty() {
            self.root.clone()
        } else {
            self.path(dir)?
        };
        let entries = match fs::read_dir(&path) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
            Err(e) => return Err(io(&path, e)),
        };
        let mut keys = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| io(&path, e))?;
            let Some(file) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if !file.starts_with(name) || file.ends_with(".partial") {
                continue;
            }
            let key = if dir.is_empty() {
                file
            } else {
                format!("{dir}/{file}")
            };
            if start_after.is_none_or(|s| key.as_str() > s) {
                keys.push(key);
            }
        }
        keys.sort();
        keys.truncate(limit);
        Ok(keys)
    }
}

/// Settings of the background flusher.
#[derive(Debug, Clone)]
pub struct FlushOptions {
    /// The archive directory.
    pub dir: PathBuf,
    /// When a window closes.
    pub policy: WindowPolicy,
    /// A snapshot after every this many windows (0: none).
    pub snapshot_every: u64,
}

/// Runs the flusher on its own thread until `stop` is set: every poll (a tenth of the
/// window's age, between 50 ms and 1 s) it archives every due window, and after every
/// `snapshot_every` windows writes a snapshot. A failed flush is logged and retried at
/// the next poll (it resumes the window it fixed).
pub fn spawn_flusher(
    store: RedbStore,
    limits: Limits,
    signer: nexus_tlog::LogSigner,
    opts: FlushOptions,
    stop: Arc<AtomicBool>,
) -> Result<std::thread::JoinHandle<()>> {
    let poll = Duration::from_millis((opts.policy.max_age_ms / 10).clamp(50, 1_000));
    std::thread::Builder::new()
        .name("nexus-flush".into())
        .spawn(move || {
            let core =
                CompositeColdStorage::new(store.clone(), DirBlobs::new(&opts.dir), store, limits)
                    .with_log_signer(signer);
            while !stop.load(Ordering::SeqCst) {
                if let Err(e) = flush_due(&core, &opts) {
                    tracing::warn!(error = %e, dir = %opts.dir.display(), "archive flush failed; retrying");
                }
                std::thread::sleep(poll);
            }
        })
        .context("cannot start the archive thread")
}

/// Archives every window due now; answers how many.
pub fn flush_due(
    core: &CompositeColdStorage<RedbStore, DirBlobs, RedbStore>,
    opts: &FlushOptions,
) -> Result<u64> {
    let mut n = 0;
    while let Some(w) = core.flush(&opts.policy, crate::serve::now_ms())?.window {
        n += 1;
        tracing::debug!(
            window = w.window,
            first = w.first,
            last = w.last,
            "archived"
        );
        if opts.snapshot_every > 0 && w.window.is_multiple_of(opts.snapshot_every) {
            match core.capture_hot_state(8)? {
                Some(state) => {
                    let key = core.write_snapshot(&state, crate::serve::now_ms())?;
                    tracing::info!(%key, head = state.head, "snapshot written");
                }
                None => tracing::debug!("log busy: snapshot skipped"),
            }
        }
    }
    Ok(n)
}

/// `nexus restore --from DIR --data NEW_DIR [--log-key VKEY]`.
pub fn restore(from: &Path, data: &Path, log_key: Option<&str>) -> Result<()> {
    if !from.is_dir() {
        bail!("{} is not an archive directory", from.display());
    }
    if data.exists()
        && fs::read_dir(data)
            .with_context(|| format!("cannot read {}", data.display()))?
            .next()
            .is_some()
    {
        bail!(
            "{} is not empty: restore into a new or empty directory",
            data.display()
        );
    }
    // The key the last checkpoint must be signed by: its origin names a key file's key.
    let cold = DirBlobs::new(from);
    let chain = nexus_api::restore::read_chain(&cold)
        .with_context(|| format!("cannot restore from {}", from.display()))?;
    let origin = chain
        .windows
        .iter()
        .rev()
        .find_map(|m| m.checkpoint.as_ref()?.get("origin")?.as_str());
    // Default: the log key of the data directory the archives lie in, if it is there.
    let found = crate::tlog_cmd::archive_key_file(from);
    let log_key = log_key.or(found.as_deref());
    let log_key_file = log_key.map(Path::new).filter(|p| p.is_file());
    let log_key = match (origin, log_key) {
        (Some(o), key) => crate::tlog_cmd::pinned_key(key, o)?,
        (None, Some(_)) => bail!(
            "{} holds no checkpoint to check --log-key against",
            from.display()
        ),
        (None, None) => None,
    };
    fs::create_dir_all(data).with_context(|| format!("cannot create {}", data.display()))?;
    // Rebuilt on a scratch store (commits not synced one by one), then copied compactly
    // into the data directory and synced: an interrupted restore leaves no store.
    let scratch = data.join("restore.scratch");
    let result = (|| {
        let store = RedbStore::scratch(&scratch, 256 << 20)
            .context("cannot create the restore's scratch store")?;
        let core = CompositeColdStorage::unified(store, Limits::default());
        let mut progress: Option<crate::export::Progress> = None;
        let report = nexus_api::restore::from_snapshot_with_cold_pinned(
            &cold,
            &core,
            log_key.as_deref(),
            |done, total| {
                progress
                    .get_or_insert_with(|| {
                        crate::export::Progress::new(
                            total,
                            total >= crate::export::LONG,
                            "restoring",
                            false,
                        )
                    })
                    .set(done);
            },
        )
        .with_context(|| format!("cannot restore from {}", from.display()))?;
        if let Some(p) = &progress {
            p.finish();
        }
        drop(core);
        RedbStore::rebuild(&scratch, &data.join(crate::serve::STORE_FILE), |_, _| {})
            .context("cannot write the restored store")?;
        Ok::<_, anyhow::Error>(report)
    })();
    let _ = fs::remove_file(&scratch);
    // Restored with the old data directory's key file: the new one signs with it, so
    // checkpoints kept from the old server stay checkable against the new one.
    let result = result.and_then(|r| {
        if let Some(path) = log_key_file {
            crate::logkey::create(data, &crate::logkey::load(path)?)?;
        }
        Ok(r)
    });
    let report = match result {
        Ok(r) => r,
        Err(e) => {
            let _ = fs::remove_dir_all(data);
            return Err(e);
        }
    };
    say!(
        "restored {} entries from {} windows{} into {}",
        report.entries,
        report.windows,
        report
            .snapshot
            .map(|h| format!(" (snapshot of seq {h}, {} replayed)", report.replayed))
            .unwrap_or_else(|| " (no snapshot: all replayed)".into()),
        data.display()
    );
    eprintln!(
        "the agent allowlists are not archived: copy `agents` and `operators` into {}",
        data.display()
    );
    if log_key_file.is_none() {
        eprintln!(
            "the log key is not archived: a server on {} signs with a new one unless you \
             copy the old `log.key` into it first (or restore with --log-key OLD/log.key)",
            data.display()
        );
    }
    Ok(())
}
