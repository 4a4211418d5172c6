//! A redb storage backend with injected failures: the file backend of redb, plus a
//! switch that makes the disk "full".
//!
//! [`DiskFaults`] is the switch, shared by every [`FaultyBackend`] it made (so a
//! database reopened after a failure meets the same disk). While it is set to
//! [`Fault::Full`], a write that would take bytes past the ones already written fails
//! with [`std::io::ErrorKind::StorageFull`] (`ENOSPC`), as on a real full file system:
//! rewriting bytes that are already on disk still works, growing the file with
//! `set_len` works (a sparse extension), writing into the new space does not.
//! [`Fault::AllWrites`] fails every write, even in place (a device that refuses all of
//! them), so that not even a repair on reopen can write.
//!
//! ```
//! use nexus_testkit::faults::{DiskFaults, Fault};
//! let dir = tempfile::tempdir().unwrap();
//! let disk = DiskFaults::new();
//! let db = disk.database(&dir.path().join("x.redb")).unwrap();
//! disk.set(Fault::Full);
//! let txn = db.begin_write().unwrap();
//! {
//!     let mut t = txn.open_table(redb::TableDefinition::<&str, &[u8]>::new("t")).unwrap();
//!     t.insert("k", &[7u8; 1 << 20][..]).unwrap();
//! }
//! assert!(txn.commit().is_err());
//! assert!(disk.failures() > 0);
//! ```

use std::fs::{File, OpenOptions};
use std::io;
use std::ops::Bound;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};

use redb::backends::FileBackend;
use redb::{BackendError, Database, DatabaseError, StorageBackend};

/// What the disk does to writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Every write works.
    None,
    /// Writes past the bytes already written fail with `StorageFull` (a full disk).
    Full,
    /// Every write fails with `StorageFull`, even in place.
    AllWrites,
}

#[derive(Debug)]
struct Shared {
    fault: AtomicU8,
    /// Whether a backend was made yet (the file's bytes then count as written).
    opened: AtomicBool,
    /// One past the last byte ever written (or present when the first backend opened);
    /// a sparse extension by `set_len` does not count.
    written: AtomicU64,
    failures: AtomicU64,
}

/// The switch of a simulated disk; clones share it.
#[derive(Debug, Clone)]
pub struct DiskFaults(Arc<Shared>);

impl Default for DiskFaults {
    fn default() -> Self {
        Self::new()
    }
}

impl DiskFaults {
    /// A disk with room (no fault).
    pub fn new() -> Self {
        Self(Arc::new(Shared {
            fault: AtomicU8::new(0),
            opened: AtomicBool::new(false),
            written: AtomicU64::new(0),
            failures: AtomicU64::new(0),
        }))
    }

    /// Sets what the disk does from now on.
    pub fn set(&self, fault: Fault) {
        let code = match fault {
            Fault::None => 0,
            Fault::Full => 1,
            Fault::AllWrites => 2,
        };
        self.0.fault.store(code, Ordering::SeqCst);
    }

    /// What the disk does now.
    pub fn fault(&self) -> Fault {
        match self.0.fault.load(Ordering::SeqCst) {
            0 => Fault::None,
            1 => Fault::Full,
            _ => Fault::AllWrites,
        }
    }

    /// Writes refused so far.
    pub fn failures(&self) -> u64 {
        self.0.failures.load(Ordering::SeqCst)
    }

    /// A backend over `file` that obeys this switch.
    pub fn backend(&self, file: File) -> io::Result<FaultyBackend> {
        if !self.0.opened.swap(true, Ordering::SeqCst) {
            let len = file.metadata()?.len();
            self.0.written.fetch_max(len, Ordering::SeqCst);
        }
        let inner = FileBackend::new(file).map_err(io::Error::other)?;
        Ok(FaultyBackend {
            inner,
            disk: self.clone(),
        })
    }

    /// Opens (or creates) the redb database at `path` on a backend of this switch.
    pub fn database(&self, path: &Path) -> Result<Database, DatabaseError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        let backend = self.backend(file)?;
        Database::builder().create_with_backend(backend)
    }

    fn refuse(&self) -> io::Error {
        self.0.failures.fetch_add(1, Ordering::SeqCst);
        // ENOSPC itself where there is one, so that messages read as on a real disk.
        #[cfg(unix)]
        return io::Error::from_raw_os_error(28);
        #[cfg(not(unix))]
        return io::Error::from(io::ErrorKind::StorageFull);
    }
}

/// redb's [`FileBackend`] behind a [`DiskFaults`] switch.
#[derive(Debug)]
pub struct FaultyBackend {
    inner: FileBackend,
    disk: DiskFaults,
}

impl StorageBackend for FaultyBackend {
    fn len(&self) -> Result<u64, io::Error> {
        self.inner.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), io::Error> {
        self.inner.read(offset, out)
    }

    fn set_len(&self, len: u64) -> Result<(), io::Error> {
        // Growing a file is a sparse extension: it takes no space until written.
        self.inner.set_len(len)
    }

    fn sync_data(&self) -> Result<(), io::Error> {
        self.inner.sync_data()
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
        let end = offset.saturating_add(data.len() as u64);
        match self.disk.fault() {
            Fault::None => {}
            Fault::Full if end <= self.disk.0.written.load(Ordering::SeqCst) => {}
            Fault::Full | Fault::AllWrites => return Err(self.disk.refuse()),
        }
        self.inner.write(offset, data)?;
        self.disk.0.written.fetch_max(end, Ordering::SeqCst);
        Ok(())
    }

    fn close(&self) -> Result<(), io::Error> {
        self.inner.close()
    }

    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.try_lock_range(start, end)
    }

    fn try_lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, BackendError> {
        self.inner.try_lock_shared_range(start, end)
    }

    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_range(start, end)
    }

    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_shared_range(start, end)
    }

    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.unlock_range(start, end)
    }

    fn query_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.query_lock_range(start, end)
    }
}
