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
//! Clones of a [`RedbStore`] share one [`redb::Database`]; the type is `Send + Sync`, so
//! one store serves every thread of a process. redb locks the file: a second process (or
//! a second [`RedbStore::open`] of the same path in this process) cannot open it while
//! the first has it open.
//!
//! [redb]: https://docs.rs/redb

use std::collections::BTreeMap;
use std::fmt::Display;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nexus_store::{
    BatchDelete, BlobStore, CasFailure, Commit, CommitOutcome, KeyValueStore, LOG_HEAD_KEY,
    ObjectStore, Snapshot, StoreError, StoreResult, StoreSnapshot, check_commit, check_key,
    check_writable_state_key, log_key, parse_head,
};
pub use nexus_store::{BatchPut, BatchWrite, PutPhase, Tier, WriteBatch};
use redb::{
    Database, ReadableDatabase, ReadableTable, Table, TableDefinition, TableHandle,
    WriteTransaction,
};

type TierTable = TableDefinition<'static, &'static str, &'static [u8]>;

/// The key-value tier.
const KV_TABLE: TierTable = TableDefinition::new("nexus_kv");
/// The blob tier.
const BLOB_TABLE: TierTable = TableDefinition::new("nexus_blobs");
/// The object tier (CAS states and the commit log).
const STATE_TABLE: TierTable = TableDefinition::new("nexus_states");

fn backend(context: impl Display, err: impl Display) -> StoreError {
    StoreError::Backend(format!("redb: {context}: {err}"))
}

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
/// Cloning is cheap and shares the same [`redb::Database`].
#[derive(Debug, Clone)]
pub struct RedbStore {
    db: Arc<Database>,
    path: Option<Arc<PathBuf>>,
}

impl RedbStore {
    /// Opens the database at `path`, creating the file (and the store's tables) if it does
    /// not exist yet. After a crash, redb repairs the file on open; the result holds every
    /// write whose call returned `Ok` and no part of any other.
    pub fn open(path: impl AsRef<Path>) -> StoreResult<Self> {
        let path = path.as_ref().to_path_buf();
        let db = Database::create(&path)
            .map_err(|e| backend(format_args!("opening {}", path.display()), e))?;
        let store = Self {
            db: Arc::new(db),
            path: Some(Arc::new(path)),
        };
        store.ensure_tables()?;
        Ok(store)
    }

    /// Wraps a database the caller configured with a [`redb::Builder`] (cache size, or
    /// another [`redb::StorageBackend`]), creating the store's tables if needed.
    ///
    /// The durability invariants hold only as far as the backend keeps them: with
    /// [`redb::backends::InMemoryBackend`] (handy in tests) nothing outlives the process.
    pub fn from_database(db: Database) -> StoreResult<Self> {
        let store = Self {
            db: Arc::new(db),
            path: None,
        };
        store.ensure_tables()?;
        Ok(store)
    }

    /// The path the database was opened at ([`None`] for [`RedbStore::from_database`]).
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref().map(PathBuf::as_path)
    }

    fn ensure_tables(&self) -> StoreResult<()> {
        let read = self
            .db
            .begin_read()
            .map_err(|e| backend("begin read transaction", e))?;
        let mut missing = false;
        for def in [KV_TABLE, BLOB_TABLE, STATE_TABLE] {
            match read.open_table(def) {
                Ok(_) => {}
                Err(redb::TableError::TableDoesNotExist(_)) => missing = true,
                Err(e) => return Err(backend(format_args!("open table {}", def.name()), e)),
            }
        }
        drop(read);
        if !missing {
            return Ok(());
        }
        self.write(|txn| {
            for def in [KV_TABLE, BLOB_TABLE, STATE_TABLE] {
                open_write_table(txn, def)?;
            }
            Ok(((), true))
        })
    }

    /// Runs `f` in one write transaction. `f` returns its result and whether it changed
    /// anything: if it did, the transaction is committed durably (one `fsync`), otherwise it
    /// is aborted. An error from `f` aborts the transaction.
    fn write<T>(
        &self,
        f: impl FnOnce(&WriteTransaction) -> StoreResult<(T, bool)>,
    ) -> StoreResult<T> {
        let txn = self
            .db
            .begin_write()
            .map_err(|e| backend("begin write transaction", e))?;
        match f(&txn) {
            Ok((value, true)) => {
                txn.commit()
                    .map_err(|e| backend("commit write transaction", e))?;
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
    }

    fn read_values(&self, def: TierTable, keys: &[&str]) -> StoreResult<Vec<Option<Vec<u8>>>> {
        for key in keys {
            check_key(key)?;
        }
        let txn = self
            .db
            .begin_read()
            .map_err(|e| backend("begin read transaction", e))?;
        let table = txn
            .open_table(def)
            .map_err(|e| backend(format_args!("open table {}", def.name()), e))?;
        keys.iter()
            .map(|key| {
                let guard = table
                    .get(*key)
                    .map_err(|e| backend(format_args!("read {}", def.name()), e))?;
                Ok(guard.map(|g| g.value().to_vec()))
            })
            .collect()
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
        let txn = self
            .db
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
    }

    fn put_value(&self, def: TierTable, key: &str, value: &[u8]) -> StoreResult<()> {
        check_key(key)?;
        self.write(|txn| {
            let mut table = open_write_table(txn, def)?;
            table
                .insert(key, value)
                .map_err(|e| backend(format_args!("write {}", def.name()), e))?;
            Ok(((), true))
        })
    }

    fn delete_value(&self, def: TierTable, key: &str) -> StoreResult<()> {
        check_key(key)?;
        self.write(|txn| {
            let mut table = open_write_table(txn, def)?;
            let removed = table
                .remove(key)
                .map_err(|e| backend(format_args!("delete from {}", def.name()), e))?
                .is_some();
            Ok(((), removed))
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
            let mut kv = open_write_table(txn, KV_TABLE)?;
            let mut blobs = open_write_table(txn, BLOB_TABLE)?;
            let mut states = open_write_table(txn, STATE_TABLE)?;
            let mut changed = false;
            let mut outcomes = Vec::with_capacity(items.len());
            for (puts, commit, deletes) in items {
                let outcome = apply_commit_in(&mut states, commit)?;
                let applied = matches!(outcome, CommitOutcome::Applied { .. });
                changed |= applied && !commit.is_empty();
                for put in puts.iter() {
                    if applied || put.phase == PutPhase::BeforeCommit {
                        let table = match put.tier {
                            Tier::Kv => &mut kv,
                            Tier::Blob => &mut blobs,
                        };
                        table
                            .insert(put.key.as_str(), put.value.as_slice())
                            .map_err(|e| {
                                backend(format_args!("write {}", tier_table(put.tier).name()), e)
                            })?;
                        changed = true;
                    }
                }
                if applied {
                    for delete in deletes.iter() {
                        let table = match delete.tier {
                            Tier::Kv => &mut kv,
                            Tier::Blob => &mut blobs,
                        };
                        let removed = table.remove(delete.key.as_str()).map_err(|e| {
                            backend(format_args!("delete {}", tier_table(delete.tier).name()), e)
                        })?;
                        changed |= removed.is_some();
                    }
                }
                outcomes.push(outcome);
            }
            Ok((outcomes, changed))
        })
    }
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

/// Evaluates one (already checked) commit against the object tier inside a write
/// transaction: either every expectation (ops' and read checks') holds and everything is
/// applied, or nothing is written and the failed keys come back in order (ops, then read
/// checks) with their current values.
fn apply_commit_in(
    states: &mut Table<'_, &'static str, &'static [u8]>,
    commit: &Commit,
) -> StoreResult<CommitOutcome> {
    let read_err = |e| backend("read nexus_states", e);
    let write_err = |e| backend("write nexus_states", e);
    let mut failed = Vec::new();
    for (key, expected) in commit.expectations() {
        let guard = states.get(key).map_err(read_err)?;
        let current = guard.as_ref().map(|g| g.value());
        if current != expected {
            failed.push(CasFailure {
                key: key.to_owned(),
                current: current.map(<[u8]>::to_vec),
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
                    .insert(op.key.as_str(), value.as_slice())
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
    let head = match states.get(LOG_HEAD_KEY).map_err(read_err)? {
        None => 0,
        Some(guard) => parse_head(guard.value())?,
    };
    let overflow = || StoreError::Corrupt {
        key: LOG_HEAD_KEY.to_owned(),
        reason: format!("log head {head} cannot grow by {}", commit.log.len()),
    };
    let new_head = u64::try_from(commit.log.len())
        .ok()
        .and_then(|n| head.checked_add(n))
        .ok_or_else(overflow)?;
    for (seq, entry) in (head + 1..=new_head).zip(&commit.log) {
        states
            .insert(log_key(seq).as_str(), entry.as_slice())
            .map_err(write_err)?;
    }
    states
        .insert(LOG_HEAD_KEY, new_head.to_string().as_bytes())
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
        self.put_value(KV_TABLE, key, value)
    }

    fn delete(&self, key: &str) -> StoreResult<()> {
        self.delete_value(KV_TABLE, key)
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
        self.put_value(BLOB_TABLE, key, bytes)
    }

    fn delete_blob(&self, key: &str) -> StoreResult<()> {
        self.delete_value(BLOB_TABLE, key)
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
            let matches = {
                let guard = states
                    .get(key)
                    .map_err(|e| backend("read nexus_states", e))?;
                guard.as_ref().map(|g| g.value()) == expected
            };
            if matches {
                states
                    .insert(key, new)
                    .map_err(|e| backend("write nexus_states", e))?;
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
        let txn = self
            .db
            .begin_read()
            .map_err(|e| backend("begin read transaction", e))?;
        let dump = |def: TierTable| -> StoreResult<BTreeMap<String, Vec<u8>>> {
            let context = || format!("snapshot {}", def.name());
            let table = txn.open_table(def).map_err(|e| backend(context(), e))?;
            let mut map = BTreeMap::new();
            for entry in table.iter().map_err(|e| backend(context(), e))? {
                let (key, value) = entry.map_err(|e| backend(context(), e))?;
                map.insert(key.value().to_owned(), value.value().to_vec());
            }
            Ok(map)
        };
        Ok(StoreSnapshot {
            kv: dump(KV_TABLE)?,
            blobs: dump(BLOB_TABLE)?,
            states: dump(STATE_TABLE)?,
        })
    }
}
