//! # nexus-store-redb
//!
//! The native default backend of neXus: every storage tier of [`nexus_store`] in one
//! embedded, ACID [redb] database file.
//!
//! [`RedbStore`] implements [`KeyValueStore`], [`BlobStore`], [`ObjectStore`] and
//! [`Snapshot`] with the semantics of the reference [`nexus_store::MemoryStore`] (it passes
//! the same conformance suite). The three tiers live in three tables of one database, so
//! a single write transaction can span them.
//!
//! ```
//! use nexus_store::{CasOp, Commit, CommitOutcome, ObjectStore};
//! use nexus_store_redb::RedbStore;
//!
//! # fn main() -> nexus_store::StoreResult<()> {
//! # let dir = tempfile::tempdir().map_err(|e| nexus_store::StoreError::Backend(e.to_string()))?;
//! let store = RedbStore::open(dir.path().join("nexus.redb"))?;
//! let outcome = store.commit(&Commit { reads: Vec::new(),
//!     ops: vec![CasOp { key: "intent/1".into(), expected: None, new: Some(b"open".to_vec()) }],
//!     log: vec![b"intent/1 proposed".to_vec()],
//! })?;
//! assert_eq!(outcome, CommitOutcome::Applied { first_seq: Some(1) });
//! # Ok(())
//! # }
//! ```
//!
//! # Invariants
//!
//! - **Durability**: every write (`set`, `put_blob`, `put_state`, `commit`, the deletes,
//!   [`RedbStore::commit_group`], [`RedbStore::write_batch`]) is persistent when the call
//!   returns `Ok`. Each runs as one redb write transaction committed with
//!   [`redb::Durability::Immediate`] (redb's default; this crate never lowers it), whose
//!   commit ends with an `fsync`. A call that changes nothing (a failed compare-and-swap, a
//!   conflicting commit, deleting an absent key) aborts its transaction and costs no
//!   `fsync`.
//! - **Atomicity of commit**: [`ObjectStore::commit`] evaluates every expectation and, if
//!   all hold, applies every op and appends every log entry, all inside ONE write
//!   transaction. After a crash, the database holds either all of it or none of it; redb's
//!   commit slots are checksummed and recovery picks the newest valid one.
//! - **Log numbering**: log entries live in the object tier under
//!   [`nexus_store::log_key`]`(seq)`, numbered densely from 1 in commit order, and
//!   [`LOG_HEAD_KEY`] holds the newest number as decimal text, exactly as in the memory
//!   store. Writers are serialised by redb (one write transaction at a time), so numbering
//!   never races.
//! - **One `fsync` per group**: [`RedbStore::commit_group`] and
//!   [`RedbStore::write_batch_group`] evaluate many commits in order inside one write
//!   transaction and make them durable with a single `fsync`. Each commit of a group is
//!   still all-or-nothing on its own: a conflicting one changes nothing and the ones after
//!   it see the effects of the applied ones before it. (When a transaction makes redb
//!   grow the file, redb also syncs the new length before the commit, so that no commit
//!   can ever point past the end of the file; that is the only other `fsync`.)
//! - **Isolation**: reads run on MVCC snapshots and never block writers; bulk reads
//!   ([`KeyValueStore::get_many`], [`ObjectStore::get_states`], [`Snapshot::snapshot`]) see
//!   one consistent snapshot.
//!
//! # Layout on disk (version 2)
//!
//! Keys are the tiers' string keys, one table per tier. Values are stored by
//! `values`: empty as empty, short ones raw behind a header byte, the rest as zstd
//! frames, with a dictionary each file trains on its own first values (JSON documents
//! that repeat their structure from value to value, not inside one). The key-value
//! tier's values (the records, written once, keyed by hash and so in random order) are
//! kept in a heap table numbered in the order they were written, the tier's table
//! holding a 9-byte reference: the big values fill pages in append order, and only
//! the small references are scattered by hash. The file names its layout in
//! `nexus_meta`; a file of layout 1 is refused with the command that migrates it
//! ([`RedbStore::compact_file`], `nexus compact`), which writes a new file beside it
//! and renames it over the old one once complete. BENCHMARKS.md §9 has the figures.
//!
//! # Storage faults (a full disk)
//!
//! redb stops using a [`redb::Database`] after any I/O error: every later call answers
//! "Previous I/O error occurred. Please close and re-open the database." So the store
//! does exactly that. When a call fails with an I/O error, the store closes the
//! database and opens it again (redb repairs it on open; the repair reads the whole
//! file), and a call that only met the previous error is run once more on the new
//! database. Nothing committed is lost and nothing of the failed write is kept: redb's
//! commit is atomic, and the failed transaction never became the committed one.
//!
//! A write refused for want of space (`ENOSPC`, a spent quota: [`io::ErrorKind::StorageFull`]
//! and [`io::ErrorKind::QuotaExceeded`]) fails with [`StoreError::Full`], and the store
//! reports [`StoreHealth::Full`] from [`Health::health`] until a write succeeds again.
//! Reads go on meanwhile. So that each failing write does not cost a repair, writes
//! within [`RedbStore::set_full_retry_interval`] (1 s by default) of the last one
//! refused for space fail at once with the same error, without touching the file; the
//! first write after it tries for real, and writes resume by themselves once there is
//! room. If the database cannot be reopened (the disk refuses even the repair), every
//! call fails and the health is [`StoreHealth::Unavailable`]; the store tries to
//! reopen it again at most once per retry interval. A store made with
//! [`RedbStore::from_database`] cannot reopen its database (it has no way to open it):
//! after an I/O error it stays unavailable; use [`RedbStore::open_with`] instead.
//!
//! Clones of a [`RedbStore`] share one [`redb::Database`]; the type is `Send + Sync`, so
//! one store serves every thread of a process. redb locks the file: a second process (or
//! a second [`RedbStore::open`] of the same path in this process) cannot open it while
//! the first has it open.
//!
//! [redb]: https://docs.rs/redb

use std::collections::BTreeMap;
use std::fmt::{self, Display};
use std::io;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

use nexus_store::{
    BatchDelete, BlobStore, CasFailure, Commit, CommitOutcome, Health, KeyValueStore, LOG_HEAD_KEY,
    ObjectStore, Snapshot, StoreError, StoreHealth, StoreResult, StoreSnapshot, check_commit,
    check_key, check_writable_state_key, log_key, parse_head, tree_writes,
};
pub use nexus_store::{BatchPut, BatchWrite, PutPhase, Tier, WriteBatch};
use redb::{
    Database, DatabaseError, ReadableDatabase, ReadableTable, ReadableTableMetadata, StorageError,
    Table, TableDefinition, TableHandle, TransactionError, WriteTransaction,
};

mod values;

use values::{Codec, Stored, heap_ref};

type TierTable = TableDefinition<'static, &'static str, &'static [u8]>;
type HeapTable = TableDefinition<'static, u64, &'static [u8]>;

/// The key-value tier (values of at least [`HEAP_MIN`] encoded bytes are in
/// [`HEAP_TABLE`], referenced from here).
const KV_TABLE: TierTable = TableDefinition::new("nexus2_kv");
/// The blob tier.
const BLOB_TABLE: TierTable = TableDefinition::new("nexus2_blobs");
/// The object tier (CAS states and the commit log).
const STATE_TABLE: TierTable = TableDefinition::new("nexus2_states");
/// The key-value tier's values, in the order they were written (numbered from 1), so
/// that its biggest values fill pages in append order whatever the order of their keys.
const HEAP_TABLE: HeapTable = TableDefinition::new("nexus2_heap");
/// The store's own metadata: [`LAYOUT_KEY`], [`DICT_KEY`].
const META_TABLE: TierTable = TableDefinition::new("nexus_meta");
/// Key in [`META_TABLE`] of the layout version, as decimal text.
const LAYOUT_KEY: &str = "layout";
/// Key in [`META_TABLE`] of the file's zstd dictionary (see [`values`]).
const DICT_KEY: &str = "zstd_dict";
/// Encoded key-value values at least this long go to [`HEAP_TABLE`] (a reference costs
/// 9 bytes).
const HEAP_MIN: usize = 32;
/// The layout of the tables this version reads and writes: string keys, values
/// encoded by [`values`], the key-value tier's values in [`HEAP_TABLE`]. A file of
/// layout 1 (or without a version, written before there was one) is refused with the
/// command that migrates it (`nexus compact`, [`RedbStore::compact_file`]); a file of
/// another version is refused, naming both.
pub const LAYOUT_VERSION: u64 = 2;

/// Layout 1 (until this version): three tables of string keys and raw values.
mod v1 {
    use super::TierTable;
    use redb::TableDefinition;
    pub(crate) const KV: TierTable = TableDefinition::new("nexus_kv");
    pub(crate) const BLOBS: TierTable = TableDefinition::new("nexus_blobs");
    pub(crate) const STATES: TierTable = TableDefinition::new("nexus_states");
}
/// A [`RedbStore::scratch`] store syncs one commit in this many.
const SCRATCH_SYNC_EVERY: u64 = 1024;

/// Entries per write transaction of [`RedbStore::rebuild`].
const REBUILD_BATCH: usize = 50_000;
/// Page cache of each file [`RedbStore::rebuild`] opens.
const REBUILD_CACHE_BYTES: usize = 32 << 20;

/// What [`RedbStore::rebuild`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rebuilt {
    /// Entries copied (every table's).
    pub entries: u64,
    /// Size of the source file.
    pub bytes_before: u64,
    /// Size of the copy.
    pub bytes_after: u64,
}

/// redb's page cache when none is given: what [`RedbStore::open`] uses.
pub const DEFAULT_CACHE_BYTES: usize = 256 << 20;

/// Maps a redb error: out of space is [`StoreError::Full`], anything else
/// [`StoreError::Backend`].
fn backend(context: impl Display, err: impl Into<redb::Error>) -> StoreError {
    match err.into() {
        redb::Error::Io(e) if is_out_of_space(&e) => {
            StoreError::Full(format!("redb: {context}: {e}"))
        }
        other => StoreError::Backend(format!("redb: {context}: {other}")),
    }
}

/// True for the I/O errors of a full disk or a spent quota.
fn is_out_of_space(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    )
}

/// True when `db` refuses every call since an I/O error (redb's "previous I/O error").
/// Costs no I/O: the check comes before redb takes the write slot, and a transaction it
/// does begin is aborted untouched.
fn latched(db: &Database) -> bool {
    match db.try_begin_write() {
        Err(TransactionError::Storage(StorageError::PreviousIo | StorageError::DatabaseClosed)) => {
            true
        }
        Ok(txn) => {
            let _ = txn.abort();
            false
        }
        Err(_) => false,
    }
}

/// How the store opens its database again after an I/O error.
type Opener = dyn Fn() -> Result<Database, DatabaseError> + Send + Sync;

/// Default of [`RedbStore::set_full_retry_interval`].
pub const DEFAULT_FULL_RETRY: Duration = Duration::from_secs(1);

fn tier_table(tier: Tier) -> TierTable {
    match tier {
        Tier::Kv => KV_TABLE,
        Tier::Blob => BLOB_TABLE,
    }
}

impl BatchWrite for RedbStore {
    /// One durable write transaction (one `fsync`) for the whole group; see
    /// [`RedbStore::write_batch_group`].
    fn write_batch_group(&self, batches: &[WriteBatch]) -> StoreResult<Vec<CommitOutcome>> {
        RedbStore::write_batch_group(self, batches)
    }
}

/// Every tier of neXus in one redb database file.
///
/// Cloning is cheap and shares the same [`redb::Database`] (and its recovery after I/O
/// errors, see the crate docs).
#[derive(Clone)]
pub struct RedbStore {
    inner: Arc<Inner>,
}

struct Inner {
    path: Option<PathBuf>,
    /// [`None`] for [`RedbStore::from_database`]: that database cannot be reopened.
    opener: Option<Box<Opener>>,
    /// The database; every call holds the read lock while it uses it, a reopen the
    /// write lock (so the old database is closed before the new one opens).
    slot: RwLock<Slot>,
    faults: Mutex<Faults>,
    full_retry_ms: AtomicU64,
    /// [`RedbStore::scratch`]: commits are not synced.
    scratch: bool,
    /// Write transactions committed (a scratch store syncs every [`SCRATCH_SYNC_EVERY`]th).
    commits: AtomicU64,
    /// How values are stored (with the file's dictionary once it has one).
    codec: Codec,
}

struct Slot {
    /// [`None`] after a failed reopen.
    db: Option<Database>,
    /// Grows with each reopen, so that callers that failed on one database reopen it once.
    generation: u64,
}

/// What the store's last calls met.
#[derive(Default)]
struct Faults {
    /// The last write failed for want of space (and when); cleared by a successful write.
    full: Option<(StoreError, Instant)>,
    /// The database could not be reopened (and when it was last tried).
    unavailable: Option<(StoreError, Instant)>,
}

impl fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedbStore")
            .field("path", &self.inner.path)
            .field("health", &self.health())
            .finish_non_exhaustive()
    }
}

/// Whether a call writes (writes are refused at once while the disk is known full).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Access {
    Read,
    Write,
}

impl RedbStore {
    /// Opens the database at `path`, creating the file (and the store's tables) if it does
    /// not exist yet. After a crash, redb repairs the file on open; the result holds every
    /// write whose call returned `Ok` and no part of any other.
    pub fn open(path: impl AsRef<Path>) -> StoreResult<Self> {
        Self::open_with_cache(path, DEFAULT_CACHE_BYTES)
    }

    /// [`RedbStore::open`] with a page cache of `cache_bytes` (redb's cache of file
    /// pages, most of the store's resident memory on a large file; what it does not
    /// hold is read from the file, i.e. the OS page cache).
    pub fn open_with_cache(path: impl AsRef<Path>, cache_bytes: usize) -> StoreResult<Self> {
        let path = path.as_ref().to_path_buf();
        let at = path.clone();
        Self::build(
            Some(path),
            Some(Box::new(move || {
                Database::builder().set_cache_size(cache_bytes).create(&at)
            })),
        )
    }

    /// A throwaway store at `path` (e.g. the state a `nexus verify --replay` rebuilds):
    /// [`RedbStore::open_with_cache`], except that commits are not made durable
    /// ([`redb::Durability::None`]; every 1,024th is, so that redb can reuse the pages
    /// earlier commits freed). Everything else holds, but after a crash the file may
    /// have lost any number of recent commits: never keep data in it.
    pub fn scratch(path: impl AsRef<Path>, cache_bytes: usize) -> StoreResult<Self> {
        let store = Self::open_with_cache(path, cache_bytes)?;
        let inner = Arc::into_inner(store.inner)
            .ok_or_else(|| StoreError::Backend("redb: the new store is shared already".into()))?;
        Ok(Self {
            inner: Arc::new(Inner {
                scratch: true,
                ..inner
            }),
        })
    }

    /// Opens the database with `opener`, and calls it again to reopen the database after
    /// an I/O error (see the crate docs): for a database on another
    /// [`redb::StorageBackend`] (`Database::builder().create_with_backend(…)`) or with
    /// other settings, that must still recover by itself.
    pub fn open_with(
        opener: impl Fn() -> Result<Database, DatabaseError> + Send + Sync + 'static,
    ) -> StoreResult<Self> {
        Self::build(None, Some(Box::new(opener)))
    }

    /// Wraps a database the caller configured with a [`redb::Builder`] (cache size, or
    /// another [`redb::StorageBackend`]), creating the store's tables if needed.
    ///
    /// The durability invariants hold only as far as the backend keeps them: with
    /// [`redb::backends::InMemoryBackend`] (handy in tests) nothing outlives the process.
    /// The store cannot reopen this database after an I/O error; [`RedbStore::open_with`]
    /// can.
    pub fn from_database(db: Database) -> StoreResult<Self> {
        Self::with_slot(None, None, Some(db))
    }

    fn build(path: Option<PathBuf>, opener: Option<Box<Opener>>) -> StoreResult<Self> {
        let db = match &opener {
            Some(open) => open().map_err(|e| match &path {
                Some(p) => backend(format_args!("opening {}", p.display()), e),
                None => backend("opening the database", e),
            })?,
            None => return Err(StoreError::Backend("redb: no database to open".into())),
        };
        Self::with_slot(path, opener, Some(db))
    }

    fn with_slot(
        path: Option<PathBuf>,
        opener: Option<Box<Opener>>,
        db: Option<Database>,
    ) -> StoreResult<Self> {
        let store = Self {
            inner: Arc::new(Inner {
                path,
                opener,
                slot: RwLock::new(Slot { db, generation: 0 }),
                faults: Mutex::new(Faults::default()),
                full_retry_ms: AtomicU64::new(DEFAULT_FULL_RETRY.as_millis() as u64),
                scratch: false,
                commits: AtomicU64::new(0),
                codec: Codec::new(None).map_err(StoreError::Backend)?,
            }),
        };
        store.ensure_tables()?;
        Ok(store)
    }

    /// The path the database was opened at ([`None`] unless opened with [`RedbStore::open`]).
    pub fn path(&self) -> Option<&Path> {
        self.inner.path.as_deref()
    }

    /// How long after a write refused for want of space further writes fail at once
    /// with the same [`StoreError::Full`], without touching the file (and how often a
    /// database that could not be reopened is tried again). Zero: every write tries.
    pub fn set_full_retry_interval(&self, interval: Duration) {
        let ms = u64::try_from(interval.as_millis()).unwrap_or(u64::MAX);
        self.inner.full_retry_ms.store(ms, Ordering::Relaxed);
    }

    fn retry_interval(&self) -> Duration {
        Duration::from_millis(self.inner.full_retry_ms.load(Ordering::Relaxed))
    }

    fn faults(&self) -> MutexGuard<'_, Faults> {
        // The state is a pair of options, consistent after any panic.
        self.inner
            .faults
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The fault `which` picks, if it happened within the retry interval.
    fn recent(
        &self,
        which: impl Fn(&Faults) -> &Option<(StoreError, Instant)>,
    ) -> Option<StoreError> {
        let faults = self.faults();
        let (err, at) = which(&faults).as_ref()?;
        (at.elapsed() < self.retry_interval()).then(|| err.clone())
    }

    fn slot(&self) -> RwLockReadGuard<'_, Slot> {
        self.inner
            .slot
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Runs `op` on the database, reopening it after an I/O error (see the crate docs):
    /// an op that failed with an I/O error of its own is not repeated; one that only met
    /// redb's latched earlier error runs once more on the reopened database.
    fn run<T>(&self, access: Access, op: impl Fn(&Database) -> StoreResult<T>) -> StoreResult<T> {
        if access == Access::Write
            && let Some(err) = self.recent(|f| &f.full)
        {
            return Err(err);
        }
        let mut reopened = false;
        loop {
            let (generation, err, latched) = {
                let slot = self.slot();
                let generation = slot.generation;
                let Some(db) = slot.db.as_ref() else {
                    drop(slot);
                    self.reopen(generation)?;
                    continue;
                };
                match op(db) {
                    Ok(value) => {
                        if access == Access::Write {
                            self.faults().full = None;
                        }
                        return Ok(value);
                    }
                    Err(err @ (StoreError::Backend(_) | StoreError::Full(_))) => {
                        let latched = latched(db);
                        (generation, err, latched)
                    }
                    Err(err) => return Err(err),
                }
            };
            if err.is_full() {
                self.faults().full = Some((err.clone(), Instant::now()));
            }
            if !latched {
                return Err(err);
            }
            // Reopen now, so that reads go on (a failure is remembered for health).
            let again = self.reopen(generation);
            if err.is_full() || reopened {
                return Err(err);
            }
            again?;
            reopened = true;
        }
    }

    /// Closes the database of `generation` (if it is still the current one) and opens it
    /// again. At most once per retry interval while it keeps failing.
    fn reopen(&self, generation: u64) -> StoreResult<()> {
        let Some(opener) = &self.inner.opener else {
            let err = StoreError::Backend(
                "redb: the database failed with an I/O error and cannot be reopened \
                 (it was not opened by this store)"
                    .into(),
            );
            self.faults().unavailable = Some((err.clone(), Instant::now()));
            return Err(err);
        };
        let mut slot = self
            .inner
            .slot
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if slot.generation != generation {
            return Ok(()); // another caller reopened it meanwhile
        }
        if slot.db.is_none()
            && let Some(err) = self.recent(|f| &f.unavailable)
        {
            return Err(err);
        }
        // Close first: redb locks the file, and the repair needs it to itself.
        slot.db = None;
        slot.generation += 1;
        match opener() {
            Ok(db) => {
                slot.db = Some(db);
                self.faults().unavailable = None;
                Ok(())
            }
            Err(e) => {
                let err = backend("reopening the database after an I/O error", e);
                self.faults().unavailable = Some((err.clone(), Instant::now()));
                Err(err)
            }
        }
    }

    /// Creates the tables of a new file, or checks the layout version of an existing
    /// one (refusing layout 1 with the command that migrates it), and loads the file's
    /// dictionary.
    fn ensure_tables(&self) -> StoreResult<()> {
        let (layout, dict) = self.run(Access::Read, |db| {
            let read = db
                .begin_read()
                .map_err(|e| backend("begin read transaction", e))?;
            read_layout(&read)
        })?;
        match layout {
            Layout::Current { missing: false } => {
                if let Some(dict) = dict {
                    self.inner
                        .codec
                        .install(&dict)
                        .map_err(|reason| StoreError::Corrupt {
                            key: DICT_KEY.into(),
                            reason,
                        })?;
                }
                Ok(())
            }
            Layout::Current { missing: true } => Err(StoreError::Corrupt {
                key: LAYOUT_KEY.into(),
                reason: "the file names its layout but lacks its tables".into(),
            }),
            Layout::V1 => Err(StoreError::Backend(format!(
                "redb: the file has storage layout 1; this nexus reads layout \
                 {LAYOUT_VERSION}. Migrate it with `nexus compact --data DIR` (with the \
                 server stopped): it writes the new file beside the old one and renames \
                 it over the old one only once complete, so nothing is lost if it is \
                 interrupted"
            ))),
            Layout::Other(n) => Err(StoreError::Backend(format!(
                "redb: the file has storage layout {n}; this nexus reads layout \
                 {LAYOUT_VERSION} only. Open it with the nexus version that wrote it \
                 (`nexus export` there, then start afresh here)"
            ))),
            Layout::Unreadable(v) => Err(StoreError::Corrupt {
                key: LAYOUT_KEY.into(),
                reason: format!("not a layout version: {:?}", String::from_utf8_lossy(&v)),
            }),
            Layout::New => self.write(|txn| {
                for def in [KV_TABLE, BLOB_TABLE, STATE_TABLE] {
                    open_write_table(txn, def)?;
                }
                open_heap(txn)?;
                open_write_table(txn, META_TABLE)?
                    .insert(LAYOUT_KEY, LAYOUT_VERSION.to_string().as_bytes())
                    .map_err(|e| backend("write the layout version", e))?;
                Ok(((), true))
            }),
        }
    }

    /// Writes a compact copy of the database file `src` to `dst` (which must not
    /// exist): every table copied in key order, then redb's compaction. A B-tree filled
    /// by keys in random order (records and states are keyed by hash) keeps its pages
    /// about half full; one filled in key order packs them, so the copy is smaller
    /// (BENCHMARKS.md §9). Holds `src` open (and so locked: it fails while a server has
    /// it) until it returns. `progress(copied, total)` is called as entries are copied.
    /// Nothing is written to `src`; an error may leave a partial `dst` behind, which
    /// the caller removes.
    pub fn rebuild(src: &Path, dst: &Path, progress: impl FnMut(u64, u64)) -> StoreResult<Rebuilt> {
        Self::rebuild_then(src, dst, progress, |_| Ok(()))
    }

    /// Compacts the database file at `path` in place: [`RedbStore::rebuild`] into
    /// `tmp` (removed first if an interrupted run left it), then `tmp` synced, given
    /// `path`'s permissions and renamed over `path`, all while `path` is still open
    /// and so locked: no server can open the old file and acknowledge writes the copy
    /// would not hold. On an error `path` is untouched and `tmp` removed.
    pub fn compact_file(
        path: &Path,
        tmp: &Path,
        progress: impl FnMut(u64, u64),
    ) -> StoreResult<Rebuilt> {
        let io = |what: &str, p: &Path, e: io::Error| {
            StoreError::Backend(format!("{what} {}: {e}", p.display()))
        };
        if tmp.exists() {
            std::fs::remove_file(tmp).map_err(|e| io("removing the leftover", tmp, e))?;
        }
        let done = Self::rebuild_then(path, tmp, progress, |tmp| {
            let perms = std::fs::metadata(path)
                .map_err(|e| io("reading", path, e))?
                .permissions();
            std::fs::set_permissions(tmp, perms)
                .map_err(|e| io("setting permissions of", tmp, e))?;
            std::fs::File::open(tmp)
                .and_then(|f| f.sync_all())
                .map_err(|e| io("syncing", tmp, e))?;
            std::fs::rename(tmp, path).map_err(|e| io("replacing the store with", tmp, e))?;
            if let Some(dir) = path.parent()
                && let Ok(d) = std::fs::File::open(dir)
            {
                let _ = d.sync_all();
            }
            Ok(())
        });
        if done.is_err() {
            let _ = std::fs::remove_file(tmp);
        }
        done
    }

    /// [`RedbStore::rebuild`], then `finish(dst)` while `src` is still open.
    fn rebuild_then(
        src: &Path,
        dst: &Path,
        mut progress: impl FnMut(u64, u64),
        finish: impl FnOnce(&Path) -> StoreResult<()>,
    ) -> StoreResult<Rebuilt> {
        if dst.exists() {
            return Err(StoreError::Backend(format!(
                "redb: {} exists already",
                dst.display()
            )));
        }
        // Small caches: every page is read once and written once.
        let from = Database::builder()
            .set_cache_size(REBUILD_CACHE_BYTES)
            .open(src)
            .map_err(|e| backend(format_args!("opening {}", src.display()), e))?;
        let read = from
            .begin_read()
            .map_err(|e| backend("begin read transaction", e))?;
        let source = Source::of(&read, src)?;
        let total = source.count(&read)?;
        let to = RedbStore::open_with_cache(dst, REBUILD_CACHE_BYTES)?;
        // Trained on values from all over the source, not on its first table's.
        let samples = source.samples(&read, values::TRAIN_SAMPLES)?;
        to.inner.codec.give_up_training();
        if let Ok(dict) = Codec::train(&samples) {
            to.set_dictionary(&dict)?;
        }
        let mut copied = 0;
        progress(0, total);
        for (def, dest) in source.tables() {
            let mut batch = Vec::new();
            let mut flush = |batch: &mut Vec<(String, Vec<u8>)>| -> StoreResult<()> {
                to.import(dest, batch)?;
                copied += batch.len() as u64;
                batch.clear();
                progress(copied, total);
                Ok(())
            };
            // Transactions of a bounded size: the copy's memory does not grow with
            // the file.
            source.each(&read, def, |key, value| {
                batch.push((key.to_owned(), value));
                if batch.len() == REBUILD_BATCH {
                    flush(&mut batch)?;
                }
                Ok(())
            })?;
            flush(&mut batch)?;
        }
        drop(read);
        drop(to);
        let mut compacted = Database::builder()
            .set_cache_size(REBUILD_CACHE_BYTES)
            .open(dst)
            .map_err(|e| backend(format_args!("reopening {}", dst.display()), e))?;
        compacted
            .compact()
            .map_err(|e| StoreError::Backend(format!("redb: compacting {}: {e}", dst.display())))?;
        drop(compacted);
        let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        let done = Rebuilt {
            entries: copied,
            bytes_before: size(src),
            bytes_after: size(dst),
        };
        finish(dst)?;
        // Only now: the old file stayed locked until the copy replaced it.
        drop(from);
        Ok(done)
    }

    /// Writes `entries` into one tier of a new file being rebuilt, in one transaction
    /// (state keys of the commit log included: they are copied, not appended).
    fn import(&self, dest: Dest, entries: &[(String, Vec<u8>)]) -> StoreResult<()> {
        if entries.is_empty() {
            return Ok(());
        }
        self.write(|txn| {
            match dest {
                Dest::Tier(tier) => {
                    let mut tables = TierTables::open(txn, &self.inner.codec)?;
                    for (key, value) in entries {
                        tables.put(tier, key, value)?;
                    }
                }
                Dest::States => {
                    let mut states = open_write_table(txn, STATE_TABLE)?;
                    for (key, value) in entries {
                        states
                            .insert(key.as_str(), self.inner.codec.encode(value).as_slice())
                            .map_err(|e| backend("write nexus2_states", e))?;
                    }
                }
            }
            Ok(((), true))
        })
    }

    /// Runs `f` in one write transaction. `f` returns its result and whether it changed
    /// anything: if it did, the transaction is committed durably (one `fsync`), otherwise it
    /// is aborted. An error from `f` aborts the transaction.
    fn write<T>(&self, f: impl Fn(&WriteTransaction) -> StoreResult<(T, bool)>) -> StoreResult<T> {
        if let Some(samples) = self.inner.codec.take_samples() {
            match Codec::train(&samples) {
                Ok(dict) => {
                    if let Err(err) = self.set_dictionary(&dict) {
                        self.inner.codec.return_samples(samples);
                        return Err(err);
                    }
                }
                // Values too alike or too few to train on: stay with zstd alone.
                Err(_) => self.inner.codec.give_up_training(),
            }
        }
        self.write_txn(f)
    }

    /// Commits `dict` as the file's dictionary, then encodes with it.
    fn set_dictionary(&self, dict: &[u8]) -> StoreResult<()> {
        self.write_txn(|txn| {
            open_write_table(txn, META_TABLE)?
                .insert(DICT_KEY, dict)
                .map_err(|e| backend("write the dictionary", e))?;
            Ok(((), true))
        })?;
        self.inner.codec.install(dict).map_err(StoreError::Backend)
    }

    /// [`RedbStore::write`] without training the dictionary first.
    fn write_txn<T>(
        &self,
        f: impl Fn(&WriteTransaction) -> StoreResult<(T, bool)>,
    ) -> StoreResult<T> {
        self.run(Access::Write, |db| {
            let mut txn = db
                .begin_write()
                .map_err(|e| backend("begin write transaction", e))?;
            if self.inner.scratch
                && !(self.inner.commits.load(Ordering::Relaxed) + 1)
                    .is_multiple_of(SCRATCH_SYNC_EVERY)
            {
                txn.set_durability(redb::Durability::None)
                    .map_err(|e| StoreError::Backend(format!("redb: set durability: {e}")))?;
            }
            match f(&txn) {
                Ok((value, true)) => {
                    txn.commit()
                        .map_err(|e| backend("commit write transaction", e))?;
                    self.inner.commits.fetch_add(1, Ordering::Relaxed);
                    Ok(value)
                }
                Ok((value, false)) => {
                    txn.abort()
                        .map_err(|e| backend("abort write transaction", e))?;
                    Ok(value)
                }
                Err(err) => {
                    // The first error is the one worth reporting; dropping would abort too.
                    let _ = txn.abort();
                    Err(err)
                }
            }
        })
    }

    fn read_values(&self, def: TierTable, keys: &[&str]) -> StoreResult<Vec<Option<Vec<u8>>>> {
        for key in keys {
            check_key(key)?;
        }
        self.run(Access::Read, |db| {
            let txn = db
                .begin_read()
                .map_err(|e| backend("begin read transaction", e))?;
            let table = txn
                .open_table(def)
                .map_err(|e| backend(format_args!("open table {}", def.name()), e))?;
            let heap = if def.name() == KV_TABLE.name() {
                Some(
                    txn.open_table(HEAP_TABLE)
                        .map_err(|e| backend("open table nexus2_heap", e))?,
                )
            } else {
                None
            };
            keys.iter()
                .map(|key| {
                    let guard = table
                        .get(*key)
                        .map_err(|e| backend(format_args!("read {}", def.name()), e))?;
                    guard
                        .map(|g| load(&self.inner.codec, heap.as_ref(), key, g.value()))
                        .transpose()
                })
                .collect()
        })
    }

    fn read_value(&self, def: TierTable, key: &str) -> StoreResult<Option<Vec<u8>>> {
        let mut values = self.read_values(def, &[key])?;
        Ok(values.pop().flatten())
    }

    fn list_keys(
        &self,
        def: TierTable,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<String>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let context = || format!("list {}", def.name());
        self.run(Access::Read, |db| {
            let txn = db
                .begin_read()
                .map_err(|e| backend("begin read transaction", e))?;
            let table = txn.open_table(def).map_err(|e| backend(context(), e))?;
            let lower = match start_after {
                Some(after) if after >= prefix => Bound::Excluded(after),
                _ => Bound::Included(prefix),
            };
            let range = table
                .range::<&str>((lower, Bound::Unbounded))
                .map_err(|e| backend(context(), e))?;
            let mut keys = Vec::new();
            for entry in range {
                let (key, _) = entry.map_err(|e| backend(context(), e))?;
                let key = key.value();
                if !key.starts_with(prefix) {
                    break;
                }
                keys.push(key.to_owned());
                if keys.len() == limit {
                    break;
                }
            }
            Ok(keys)
        })
    }

    fn put_value(&self, tier: Tier, key: &str, value: &[u8]) -> StoreResult<()> {
        check_key(key)?;
        self.write(|txn| {
            let mut tables = TierTables::open(txn, &self.inner.codec)?;
            Ok(((), tables.put(tier, key, value)?))
        })
    }

    fn delete_value(&self, tier: Tier, key: &str) -> StoreResult<()> {
        check_key(key)?;
        self.write(|txn| {
            let mut tables = TierTables::open(txn, &self.inner.codec)?;
            Ok(((), tables.delete(tier, key)?))
        })
    }

    /// Evaluates `commits` in order inside ONE durable write transaction (one `fsync` for
    /// the whole group, none if nothing applies).
    ///
    /// Each commit is all-or-nothing on its own, exactly as [`ObjectStore::commit`]: a
    /// conflicting one changes nothing, and later ones see the effects of the earlier
    /// applied ones. The outcomes are in the order of `commits`.
    ///
    /// Every commit is checked with [`check_commit`] before the transaction starts; if one
    /// is invalid the whole group is refused with [`StoreError::InvalidKey`] and nothing
    /// applies, so a caller grouping independent requests should check each one first.
    pub fn commit_group(&self, commits: &[Commit]) -> StoreResult<Vec<CommitOutcome>> {
        for commit in commits {
            check_commit(commit)?;
        }
        let items: Vec<GroupItem<'_>> = commits.iter().map(|c| (&[][..], c, &[][..])).collect();
        self.apply_group(&items)
    }

    /// Writes `batch` (key-value entries, blobs and a commit) in one durable write
    /// transaction, with at most one `fsync`, and returns the outcome of its commit.
    ///
    /// When the commit applies, every put applies too. When it conflicts, only the puts
    /// marked [`PutPhase::BeforeCommit`] are written. Keys are checked first; an invalid
    /// key refuses the whole batch and nothing applies.
    pub fn write_batch(&self, batch: &WriteBatch) -> StoreResult<CommitOutcome> {
        batch.check()?;
        let mut outcomes = self.apply_group(&[(&batch.puts, &batch.commit, &batch.deletes)])?;
        outcomes
            .pop()
            .ok_or_else(|| StoreError::Backend("redb: write batch produced no outcome".into()))
    }

    /// Writes many [`WriteBatch`]es in order inside ONE durable write transaction (one
    /// `fsync`), each with the semantics of [`RedbStore::write_batch`] and each commit
    /// all-or-nothing on its own, like [`RedbStore::commit_group`]. If any batch has an
    /// invalid key the whole group is refused and nothing applies.
    pub fn write_batch_group(&self, batches: &[WriteBatch]) -> StoreResult<Vec<CommitOutcome>> {
        for batch in batches {
            batch.check()?;
        }
        let items: Vec<GroupItem<'_>> = batches
            .iter()
            .map(|b| (b.puts.as_slice(), &b.commit, b.deletes.as_slice()))
            .collect();
        self.apply_group(&items)
    }

    /// Applies already-checked (puts, commit) pairs in one write transaction.
    fn apply_group(&self, items: &[GroupItem<'_>]) -> StoreResult<Vec<CommitOutcome>> {
        if items.iter().all(|(puts, commit, deletes)| {
            puts.is_empty() && commit.is_empty() && deletes.is_empty()
        }) {
            // Nothing to write: every empty commit applies trivially.
            return Ok(items
                .iter()
                .map(|_| CommitOutcome::Applied { first_seq: None })
                .collect());
        }
        self.write(|txn| {
            let mut tables = TierTables::open(txn, &self.inner.codec)?;
            let mut states = open_write_table(txn, STATE_TABLE)?;
            let mut changed = false;
            let mut outcomes = Vec::with_capacity(items.len());
            for (puts, commit, deletes) in items {
                let outcome = apply_commit_in(&mut states, &self.inner.codec, commit)?;
                let applied = matches!(outcome, CommitOutcome::Applied { .. });
                changed |= applied && !commit.is_empty();
                for put in puts.iter() {
                    if applied || put.phase == PutPhase::BeforeCommit {
                        changed |= tables.put(put.tier, &put.key, &put.value)?;
                    }
                }
                if applied {
                    for delete in deletes.iter() {
                        changed |= tables.delete(delete.tier, &delete.key)?;
                    }
                }
                outcomes.push(outcome);
            }
            Ok((outcomes, changed))
        })
    }
}

/// Where [`RedbStore::rebuild`] writes a source table.
#[derive(Clone, Copy)]
enum Dest {
    Tier(Tier),
    States,
}

/// The file [`RedbStore::rebuild`] copies, by layout.
enum Source {
    /// Layout 1: raw values in string-keyed tables.
    V1,
    /// This layout, with the file's codec.
    Current(Codec),
    /// A new file: nothing to copy.
    Empty,
}

impl Source {
    fn of(read: &redb::ReadTransaction, path: &Path) -> StoreResult<Self> {
        let (layout, dict) = read_layout(read)?;
        match layout {
            Layout::V1 => Ok(Source::V1),
            Layout::New => Ok(Source::Empty),
            Layout::Current { missing: false } => Ok(Source::Current(
                Codec::new(dict.as_deref()).map_err(|reason| StoreError::Corrupt {
                    key: DICT_KEY.into(),
                    reason,
                })?,
            )),
            Layout::Current { missing: true } => Err(StoreError::Corrupt {
                key: LAYOUT_KEY.into(),
                reason: "the file names its layout but lacks its tables".into(),
            }),
            Layout::Other(n) => Err(StoreError::Backend(format!(
                "redb: {} has storage layout {n}; this nexus compacts layouts 1 and \
                 {LAYOUT_VERSION} only",
                path.display()
            ))),
            Layout::Unreadable(v) => Err(StoreError::Backend(format!(
                "redb: {} has storage layout {}; this nexus compacts layouts 1 and \
                 {LAYOUT_VERSION} only",
                path.display(),
                String::from_utf8_lossy(&v)
            ))),
        }
    }

    /// The source's tables and where each goes.
    fn tables(&self) -> Vec<(TierTable, Dest)> {
        match self {
            Source::V1 => vec![
                (v1::KV, Dest::Tier(Tier::Kv)),
                (v1::BLOBS, Dest::Tier(Tier::Blob)),
                (v1::STATES, Dest::States),
            ],
            Source::Current(_) => vec![
                (KV_TABLE, Dest::Tier(Tier::Kv)),
                (BLOB_TABLE, Dest::Tier(Tier::Blob)),
                (STATE_TABLE, Dest::States),
            ],
            Source::Empty => Vec::new(),
        }
    }

    /// Entries of every table.
    fn count(&self, read: &redb::ReadTransaction) -> StoreResult<u64> {
        let mut total = 0;
        for (def, _) in self.tables() {
            match read.open_table(def) {
                Ok(t) => total += t.len().map_err(|e| backend("count entries", e))?,
                Err(redb::TableError::TableDoesNotExist(_)) => {}
                Err(e) => return Err(backend(format_args!("open table {}", def.name()), e)),
            }
        }
        Ok(total)
    }

    /// Calls `f` with every key of `def` and its value, in key order.
    fn each(
        &self,
        read: &redb::ReadTransaction,
        def: TierTable,
        f: impl FnMut(&str, Vec<u8>) -> StoreResult<()>,
    ) -> StoreResult<()> {
        match self {
            Source::V1 => match read.open_table(def) {
                Ok(_) => each_entry(read, def, |_, stored| Ok(stored.to_vec()), f),
                Err(redb::TableError::TableDoesNotExist(_)) => Ok(()),
                Err(e) => Err(backend(format_args!("open table {}", def.name()), e)),
            },
            Source::Current(codec) => {
                let heap = read
                    .open_table(HEAP_TABLE)
                    .map_err(|e| backend("open table nexus2_heap", e))?;
                let heap = (def.name() == KV_TABLE.name()).then_some(&heap);
                each_entry(read, def, |key, stored| load(codec, heap, key, stored), f)
            }
            Source::Empty => Ok(()),
        }
    }

    /// About `n` values of at least [`values::MIN_COMPRESS`] bytes, spread evenly over
    /// every table (the samples of the copy's dictionary).
    fn samples(&self, read: &redb::ReadTransaction, n: usize) -> StoreResult<Vec<Vec<u8>>> {
        let total = self.count(read)?.max(1);
        let every = (total / n as u64).max(1);
        let mut samples = Vec::with_capacity(n);
        let mut i = 0u64;
        for (def, _) in self.tables() {
            self.each(read, def, |_, value| {
                if value.len() >= values::MIN_COMPRESS {
                    i += 1;
                    if i.is_multiple_of(every) {
                        samples.push(value);
                    }
                }
                Ok(())
            })?;
        }
        Ok(samples)
    }
}

/// What a file's tables and metadata say its layout is.
enum Layout {
    /// No table of any layout: a new file.
    New,
    /// Layout 1, named or (from before versions) recognised by its tables.
    V1,
    /// This version's layout; `missing` if a table of it is absent.
    Current { missing: bool },
    /// Another version.
    Other(u64),
    /// A version that is not a number.
    Unreadable(Vec<u8>),
}

/// Reads the layout of the file `read` is a transaction of, and its dictionary.
fn read_layout(read: &redb::ReadTransaction) -> StoreResult<(Layout, Option<Vec<u8>>)> {
    let exists = |name: &str| -> StoreResult<bool> {
        Ok(read
            .list_tables()
            .map_err(|e| backend("list tables", e))?
            .any(|t| t.name() == name))
    };
    let (version, dict) = match read.open_table(META_TABLE) {
        Ok(t) => {
            let get = |k: &str| -> StoreResult<Option<Vec<u8>>> {
                Ok(t.get(k)
                    .map_err(|e| backend("read the file's metadata", e))?
                    .map(|v| v.value().to_vec()))
            };
            (get(LAYOUT_KEY)?, get(DICT_KEY)?)
        }
        Err(redb::TableError::TableDoesNotExist(_)) => (None, None),
        Err(e) => return Err(backend("open table nexus_meta", e)),
    };
    let layout = match version {
        None if [v1::KV, v1::BLOBS, v1::STATES]
            .iter()
            .try_fold(false, |any, d| {
                Ok::<_, StoreError>(any || exists(d.name())?)
            })? =>
        {
            Layout::V1
        }
        None => Layout::New,
        Some(v) => match std::str::from_utf8(&v)
            .ok()
            .and_then(|t| t.parse::<u64>().ok())
        {
            Some(1) => Layout::V1,
            Some(LAYOUT_VERSION) => {
                let mut missing = !exists(HEAP_TABLE.name())?;
                for def in [KV_TABLE, BLOB_TABLE, STATE_TABLE] {
                    missing |= !exists(def.name())?;
                }
                Layout::Current { missing }
            }
            Some(n) => Layout::Other(n),
            None => Layout::Unreadable(v),
        },
    };
    Ok((layout, dict))
}

/// One batch of a group: its puts, its commit and its deletes.
type GroupItem<'a> = (&'a [BatchPut], &'a Commit, &'a [BatchDelete]);

fn open_write_table<'txn>(
    txn: &'txn WriteTransaction,
    def: TierTable,
) -> StoreResult<Table<'txn, &'static str, &'static [u8]>> {
    txn.open_table(def)
        .map_err(|e| backend(format_args!("open table {}", def.name()), e))
}

fn open_heap(txn: &WriteTransaction) -> StoreResult<Table<'_, u64, &'static [u8]>> {
    txn.open_table(HEAP_TABLE)
        .map_err(|e| backend("open table nexus2_heap", e))
}

/// The value `stored` stands for (read from `key`'s table): decoded, and for the
/// key-value tier fetched from `heap` when it is there.
fn load<H: ReadableTable<u64, &'static [u8]>>(
    codec: &Codec,
    heap: Option<&H>,
    key: &str,
    stored: &[u8],
) -> StoreResult<Vec<u8>> {
    let corrupt = |reason: String| StoreError::Corrupt {
        key: key.to_owned(),
        reason,
    };
    match Stored::of(stored).map_err(corrupt)? {
        Stored::Inline(bytes) => codec.decode(bytes).map_err(corrupt),
        Stored::Heap(id) => {
            let heap =
                heap.ok_or_else(|| corrupt("a heap reference outside the key-value tier".into()))?;
            let entry = heap
                .get(id)
                .map_err(|e| backend("read nexus2_heap", e))?
                .ok_or_else(|| corrupt(format!("its heap entry {id} is missing")))?;
            codec.decode(entry.value()).map_err(corrupt)
        }
    }
}

/// The current value of state `key`.
fn read_state(
    states: &Table<'_, &'static str, &'static [u8]>,
    codec: &Codec,
    key: &str,
) -> StoreResult<Option<Vec<u8>>> {
    let guard = states
        .get(key)
        .map_err(|e| backend("read nexus2_states", e))?;
    guard
        .map(|g| load::<redb::ReadOnlyTable<u64, &[u8]>>(codec, None, key, g.value()))
        .transpose()
}

/// Calls `f` with every key of `def` and its value (`decode`d from what is stored),
/// in key order.
fn each_entry(
    txn: &redb::ReadTransaction,
    def: TierTable,
    decode: impl Fn(&str, &[u8]) -> StoreResult<Vec<u8>>,
    mut f: impl FnMut(&str, Vec<u8>) -> StoreResult<()>,
) -> StoreResult<()> {
    let context = || format!("read {}", def.name());
    let table = txn.open_table(def).map_err(|e| backend(context(), e))?;
    for entry in table.iter().map_err(|e| backend(context(), e))? {
        let (key, value) = entry.map_err(|e| backend(context(), e))?;
        let key = key.value();
        f(key, decode(key, value.value())?)?;
    }
    Ok(())
}

/// The key-value and blob tiers' tables of one write transaction.
struct TierTables<'txn, 'c> {
    codec: &'c Codec,
    kv: Table<'txn, &'static str, &'static [u8]>,
    heap: Table<'txn, u64, &'static [u8]>,
    blobs: Table<'txn, &'static str, &'static [u8]>,
}

impl<'txn, 'c> TierTables<'txn, 'c> {
    fn open(txn: &'txn WriteTransaction, codec: &'c Codec) -> StoreResult<Self> {
        Ok(Self {
            codec,
            kv: open_write_table(txn, KV_TABLE)?,
            heap: open_heap(txn)?,
            blobs: open_write_table(txn, BLOB_TABLE)?,
        })
    }

    /// Writes `value` under `key`; false when the key held that value already (a
    /// record written again is not stored twice).
    fn put(&mut self, tier: Tier, key: &str, value: &[u8]) -> StoreResult<bool> {
        let def = tier_table(tier);
        let name = def.name();
        let write_err = |e| backend(format_args!("write {name}"), e);
        let encoded = self.codec.encode(value);
        if tier == Tier::Blob {
            self.blobs
                .insert(key, encoded.as_slice())
                .map_err(write_err)?;
            return Ok(true);
        }
        let old = self
            .kv
            .get(key)
            .map_err(|e| backend("read nexus2_kv", e))?
            .map(|g| g.value().to_vec());
        if let Some(old) = old {
            if load(self.codec, Some(&self.heap), key, &old)
                .ok()
                .as_deref()
                == Some(value)
            {
                return Ok(false);
            }
            self.free(&old)?;
        }
        if encoded.len() >= HEAP_MIN {
            let id = match self
                .heap
                .last()
                .map_err(|e| backend("read nexus2_heap", e))?
            {
                Some((last, _)) => {
                    last.value()
                        .checked_add(1)
                        .ok_or_else(|| StoreError::Corrupt {
                            key: key.to_owned(),
                            reason: "the heap table's numbers are spent".into(),
                        })?
                }
                None => 1,
            };
            self.heap
                .insert(id, encoded.as_slice())
                .map_err(|e| backend("write nexus2_heap", e))?;
            self.kv
                .insert(key, heap_ref(id).as_slice())
                .map_err(write_err)?;
        } else {
            self.kv.insert(key, encoded.as_slice()).map_err(write_err)?;
        }
        Ok(true)
    }

    /// Removes `key`; false when it was absent.
    fn delete(&mut self, tier: Tier, key: &str) -> StoreResult<bool> {
        let def = tier_table(tier);
        let name = def.name();
        let table = match tier {
            Tier::Kv => &mut self.kv,
            Tier::Blob => &mut self.blobs,
        };
        let removed = table
            .remove(key)
            .map_err(|e| backend(format_args!("delete from {name}"), e))?
            .map(|g| g.value().to_vec());
        match removed {
            Some(old) => {
                if tier == Tier::Kv {
                    self.free(&old)?;
                }
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Removes the heap entry a key-value value refers to, if it does.
    fn free(&mut self, stored: &[u8]) -> StoreResult<()> {
        if let Ok(Stored::Heap(id)) = Stored::of(stored) {
            self.heap
                .remove(id)
                .map_err(|e| backend("delete from nexus2_heap", e))?;
        }
        Ok(())
    }
}

/// Evaluates one (already checked) commit against the object tier inside a write
/// transaction: either every expectation (ops' and read checks') holds and everything is
/// applied, or nothing is written and the failed keys come back in order (ops, then read
/// checks) with their current values.
fn apply_commit_in(
    states: &mut Table<'_, &'static str, &'static [u8]>,
    codec: &Codec,
    commit: &Commit,
) -> StoreResult<CommitOutcome> {
    let write_err = |e| backend("write nexus2_states", e);
    let mut failed = Vec::new();
    for (key, expected) in commit.expectations() {
        let current = read_state(states, codec, key)?;
        if current.as_deref() != expected {
            failed.push(CasFailure {
                key: key.to_owned(),
                current,
            });
        }
    }
    if !failed.is_empty() {
        return Ok(CommitOutcome::Conflict(failed));
    }
    for op in &commit.ops {
        match &op.new {
            Some(value) => {
                states
                    .insert(op.key.as_str(), codec.encode(value).as_slice())
                    .map_err(write_err)?;
            }
            None => {
                states.remove(op.key.as_str()).map_err(write_err)?;
            }
        }
    }
    if commit.log.is_empty() {
        return Ok(CommitOutcome::Applied { first_seq: None });
    }
    let head = match read_state(states, codec, LOG_HEAD_KEY)? {
        None => 0,
        Some(head) => parse_head(&head)?,
    };
    let overflow = || StoreError::Corrupt {
        key: LOG_HEAD_KEY.to_owned(),
        reason: format!("log head {head} cannot grow by {}", commit.log.len()),
    };
    let new_head = u64::try_from(commit.log.len())
        .ok()
        .and_then(|n| head.checked_add(n))
        .ok_or_else(overflow)?;
    let tree = tree_writes(head, &commit.log, |key| read_state(states, codec, key))?;
    for (seq, entry) in (head + 1..=new_head).zip(&commit.log) {
        states
            .insert(log_key(seq).as_str(), codec.encode(entry).as_slice())
            .map_err(write_err)?;
    }
    for (key, value) in &tree {
        match value {
            Some(v) => states
                .insert(key.as_str(), codec.encode(v).as_slice())
                .map(drop),
            None => states.remove(key.as_str()).map(drop),
        }
        .map_err(write_err)?;
    }
    states
        .insert(
            LOG_HEAD_KEY,
            codec.encode(new_head.to_string().as_bytes()).as_slice(),
        )
        .map_err(write_err)?;
    Ok(CommitOutcome::Applied {
        first_seq: Some(head + 1),
    })
}

impl KeyValueStore for RedbStore {
    fn get(&self, key: &str) -> StoreResult<Option<Vec<u8>>> {
        self.read_value(KV_TABLE, key)
    }

    fn get_many(&self, keys: &[&str]) -> StoreResult<Vec<Option<Vec<u8>>>> {
        self.read_values(KV_TABLE, keys)
    }

    fn set(&self, key: &str, value: &[u8]) -> StoreResult<()> {
        self.put_value(Tier::Kv, key, value)
    }

    fn delete(&self, key: &str) -> StoreResult<()> {
        self.delete_value(Tier::Kv, key)
    }

    fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<String>> {
        self.list_keys(KV_TABLE, prefix, start_after, limit)
    }
}

impl BlobStore for RedbStore {
    fn get_blob(&self, key: &str) -> StoreResult<Option<Vec<u8>>> {
        self.read_value(BLOB_TABLE, key)
    }

    fn put_blob(&self, key: &str, bytes: &[u8]) -> StoreResult<()> {
        self.put_value(Tier::Blob, key, bytes)
    }

    fn delete_blob(&self, key: &str) -> StoreResult<()> {
        self.delete_value(Tier::Blob, key)
    }

    fn list_blobs(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<String>> {
        self.list_keys(BLOB_TABLE, prefix, start_after, limit)
    }
}

impl ObjectStore for RedbStore {
    fn get_state(&self, key: &str) -> StoreResult<Option<Vec<u8>>> {
        self.read_value(STATE_TABLE, key)
    }

    fn get_states(&self, keys: &[&str]) -> StoreResult<Vec<Option<Vec<u8>>>> {
        self.read_values(STATE_TABLE, keys)
    }

    fn put_state(&self, key: &str, expected: Option<&[u8]>, new: &[u8]) -> StoreResult<bool> {
        check_writable_state_key(key)?;
        self.write(|txn| {
            let mut states = open_write_table(txn, STATE_TABLE)?;
            let matches = read_state(&states, &self.inner.codec, key)?.as_deref() == expected;
            if matches {
                states
                    .insert(key, self.inner.codec.encode(new).as_slice())
                    .map_err(|e| backend("write nexus2_states", e))?;
            }
            Ok((matches, matches))
        })
    }

    fn list_states(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<String>> {
        self.list_keys(STATE_TABLE, prefix, start_after, limit)
    }

    fn commit(&self, commit: &Commit) -> StoreResult<CommitOutcome> {
        check_commit(commit)?;
        let mut outcomes = self.apply_group(&[(&[], commit, &[])])?;
        outcomes
            .pop()
            .ok_or_else(|| StoreError::Backend("redb: commit produced no outcome".into()))
    }
}

impl Snapshot for RedbStore {
    fn snapshot(&self) -> StoreResult<StoreSnapshot> {
        self.run(Access::Read, |db| {
            let txn = db
                .begin_read()
                .map_err(|e| backend("begin read transaction", e))?;
            let heap = txn
                .open_table(HEAP_TABLE)
                .map_err(|e| backend("open table nexus2_heap", e))?;
            let dump = |def: TierTable| -> StoreResult<BTreeMap<String, Vec<u8>>> {
                let mut map = BTreeMap::new();
                let heap = (def.name() == KV_TABLE.name()).then_some(&heap);
                let codec = &self.inner.codec;
                each_entry(
                    &txn,
                    def,
                    |key, stored| load(codec, heap, key, stored),
                    |key, value| {
                        map.insert(key.to_owned(), value);
                        Ok(())
                    },
                )?;
                Ok(map)
            };
            Ok(StoreSnapshot {
                kv: dump(KV_TABLE)?,
                blobs: dump(BLOB_TABLE)?,
                states: dump(STATE_TABLE)?,
            })
        })
    }
}

impl Health for RedbStore {
    /// [`StoreHealth::Unavailable`] while the database could not be reopened,
    /// [`StoreHealth::Full`] from a write refused for want of space until a write
    /// succeeds, else [`StoreHealth::Ok`].
    fn health(&self) -> StoreHealth {
        let faults = self.faults();
        if let Some((err, _)) = &faults.unavailable {
            StoreHealth::Unavailable {
                message: err.detail(),
            }
        } else if let Some((err, _)) = &faults.full {
            StoreHealth::Full {
                message: err.detail(),
            }
        } else {
            StoreHealth::Ok
        }
    }
}
