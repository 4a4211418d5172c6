//! `NexusCoordinatorDO`: the only place mutable state lives on Cloudflare (design §4).
//!
//! It keeps the object tier — Intent states, committed-record markers, active Hints,
//! the ordered commit log and its head — in one table of its SQLite-backed storage, and
//! implements [`ObjectStore`] over it **synchronously**: Durable Object SQL calls are
//! synchronous, so the store needs no buffer and no async runtime. A commit runs inside
//! one `transactionSync`: every compare-and-swap's expected value and every read check
//! of the commit ([`Commit::reads`], the states the request read) is checked, then
//! every op and log entry is written, and any failure part-way rolls the whole
//! transaction back. A commit whose read changed is refused naming that key, as on
//! every other backend (the store conformance cases run here too, see
//! `crate::testing`).
//!
//! It also keeps the **index** (the write-once entries under `x/` that list records by
//! topic, author and time; `nexus_core::storage::keys`), in a second table: a commit
//! carries its index entries and writes them in its own transaction, so a listing
//! sees exactly what is committed, and it starts at its cursor (`key > start_after`,
//! one indexed range read) however deep the cursor is. Workers KV, where the design
//! first put them, can only list a prefix from its start and is eventually
//! consistent: a listing past the 100,000th entry walked 100 KV list pages, and a
//! Fact just written could be missing from its topic's listing for a minute (README,
//! "Cloudflare Workers"). Records themselves stay in KV and R2.
//!
//! The Worker talks to it with two calls (see [`crate::protocol`]): `/read` (states,
//! state listings and index listings for hydration) and `/commit` (the commit point
//! of a request); and `/restore` for `POST /admin/restore`.
//!
//! Its alarm runs the index catch-up ([`crate::repair`]) and archives the commit log
//! to R2 window by window, with snapshots ([`crate::archive`]); it is armed after each
//! commit for when the next window is due. A coordinator whose storage holds no log
//! while the bucket holds archives restores itself from them before it answers (calls
//! meanwhile wait).

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use worker::{
    DurableObject, Env, Request, Response, Result as WorkerResult, SqlStorage, SqlStorageValue,
    State, durable_object, js_sys,
};

use nexus_store::{
    CasFailure, Commit, CommitOutcome, LOG_HEAD_KEY, ObjectStore, StoreError, StoreResult,
    check_commit, check_key, check_writable_state_key, log_key, parse_head, tree_writes,
};

use crate::protocol::{
    COMMIT_PATH, CommitReply, CommitRequest, Hex, READ_PATH, RESTORE_PATH, ReadReply, ReadRequest,
};

#[wasm_bindgen]
extern "C" {
    /// `ctx.storage`, for the one method the `worker` crate does not bind.
    #[derive(Debug, Clone)]
    type TransactionalStorage;

    /// `ctx.storage.transactionSync(fn)`: runs `fn` in one SQLite transaction, rolled
    /// back if it throws.
    #[wasm_bindgen(method, catch, js_name = transactionSync)]
    fn transaction_sync(
        this: &TransactionalStorage,
        body: &js_sys::Function,
    ) -> Result<JsValue, JsValue>;
}

/// Default delay of the index catch-up ([`crate::repair`]) after a commit that did not
/// carry its index entries, in milliseconds: the records it reads back were written to
/// KV and R2 before that commit.
pub const REPAIR_DELAY_MS: i64 = 1_000;

const SCHEMA: &str =
    "CREATE TABLE IF NOT EXISTS states (key TEXT PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID";
/// The index: keys only (every index entry's value is empty).
const INDEX_SCHEMA: &str = "CREATE TABLE IF NOT EXISTS idx (key TEXT PRIMARY KEY) WITHOUT ROWID";

/// State key of the index cursor: every log entry up to it has its index entries in
/// the index table. A commit that carries its entries moves it when it was at the
/// head; otherwise [`crate::repair`] catches up from the log.
pub const INDEX_CURSOR: &str = "idx/indexed";

fn backend(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(format!("{what}: {e}"))
}

/// The smallest string greater than every string that starts with `prefix` (`None`
/// when there is none, i.e. the prefix is empty or all `char::MAX`). SQLite compares
/// TEXT bytewise, and UTF-8 byte order is code point order.
fn prefix_end(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let mut next = last as u32 + 1;
        if (0xD800..=0xDFFF).contains(&next) {
            next = 0xE000;
        }
        if let Some(c) = char::from_u32(next) {
            chars.push(c);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

/// The object tier in Durable Object SQL storage: [`ObjectStore`], synchronously.
#[derive(Clone, Debug)]
pub struct SqlStates {
    sql: SqlStorage,
    storage: TransactionalStorage,
    #[cfg(feature = "test-hooks")]
    fail_after_ops: Rc<Cell<Option<usize>>>,
}

impl SqlStates {
    /// The store over a Durable Object's storage (creates its table if needed).
    pub fn open(state: &State) -> StoreResult<Self> {
        let storage = state.storage();
        let sql = storage.sql();
        sql.exec(SCHEMA, None)
            .map_err(|e| backend("create table", e))?;
        sql.exec(INDEX_SCHEMA, None)
            .map_err(|e| backend("create index table", e))?;
        Ok(Self {
            sql,
            storage: storage
                .as_raw()
                .unchecked_ref::<TransactionalStorage>()
                .clone(),
            #[cfg(feature = "test-hooks")]
            fail_after_ops: Rc::default(),
        })
    }

    /// Test-only: the next commit fails after writing `n` ops (inside its transaction).
    #[cfg(feature = "test-hooks")]
    pub fn fail_next_commit_after(&self, n: Option<usize>) {
        self.fail_after_ops.set(n);
    }

    /// [`ObjectStore::commit`] with its rules: every op's expected value and every
    /// read check ([`Commit::reads`]) must hold for anything to apply (see
    /// [`Commit::expectations`]); then every op and log entry is written in one
    /// transaction. Otherwise the outcome names each key that did not hold, ops first,
    /// with its current value, and nothing is written.
    fn apply(&self, commit: &Commit) -> StoreResult<CommitOutcome> {
        self.commit_indexed(commit, None)
            .map(|(outcome, _)| outcome)
    }

    /// [`apply`](Self::apply), and when the commit applies, also writes `index` (its
    /// index entries, `None` when the caller did not carry them) in the same
    /// transaction. Answers the outcome and whether the index is behind the log
    /// afterwards (then [`crate::repair::repair_batch`] should run).
    pub fn commit_indexed(
        &self,
        commit: &Commit,
        index: Option<Vec<String>>,
    ) -> StoreResult<(CommitOutcome, bool)> {
        check_commit(commit)?;
        if let Some(keys) = &index {
            for key in keys {
                check_index_key(key)?;
            }
        }
        #[cfg(feature = "test-hooks")]
        let fail_after_ops = self.fail_after_ops.take();
        #[cfg(not(feature = "test-hooks"))]
        let fail_after_ops = None;
        let commit = commit.clone();
        self.transaction(move |sql| {
            let head = log_head(sql)?;
            let outcome = apply_commit(sql, &commit, fail_after_ops)?;
            if !matches!(outcome, CommitOutcome::Applied { .. }) {
                return Ok((outcome, false));
            }
            let indexed = index_cursor(sql)?;
            let behind = match &index {
                Some(keys) => {
                    for key in keys {
                        insert_index(sql, key)?;
                    }
                    // Everything up to the old head was indexed, and this commit
                    // brought its own entries: so is everything up to the new head.
                    if indexed == head {
                        set_index_cursor(sql, log_head(sql)?)?;
                        false
                    } else {
                        true
                    }
                }
                None => log_head(sql)? > indexed,
            };
            Ok((outcome, behind))
        })
    }

    /// Index keys under `prefix`, ascending, strictly after `start_after`, at most
    /// `limit`: one range read of the index table.
    pub fn list_index(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<String>> {
        list_keys(&self.sql, "idx", prefix, start_after, limit)
    }

    /// Adds index entries that are missing (write-once: present ones stay) and moves
    /// the index cursor from `from` to `to` if it is still at `from`, in one
    /// transaction. Answers how many entries were missing.
    pub fn backfill_index(&self, keys: Vec<String>, from: u64, to: u64) -> StoreResult<usize> {
        for key in &keys {
            check_index_key(key)?;
        }
        self.transaction(move |sql| {
            let mut added = 0;
            for key in &keys {
                added += insert_index(sql, key)?;
            }
            if index_cursor(sql)? == from {
                set_index_cursor(sql, to)?;
            }
            Ok(added)
        })
    }

    /// The index cursor and the log head.
    pub fn index_progress(&self) -> StoreResult<(u64, u64)> {
        Ok((index_cursor(&self.sql)?, log_head(&self.sql)?))
    }

    /// Removes every state and index entry, in one transaction (a restore starts from
    /// this, and empties the storage again when it fails; each storage conformance case
    /// starts from it too).
    pub fn wipe(&self) -> StoreResult<()> {
        self.transaction(|sql| {
            exec(sql, "DELETE FROM idx", vec![])?;
            exec(sql, "DELETE FROM states", vec![]).map(drop)
        })
    }

    /// Runs `body` in one storage transaction: its writes apply together when it
    /// returns `Ok`, and none do when it returns `Err` (or the runtime fails).
    fn transaction<T: 'static>(
        &self,
        body: impl FnOnce(&SqlStorage) -> StoreResult<T> + 'static,
    ) -> StoreResult<T> {
        let sql = self.sql.clone();
        let out: Rc<RefCell<Option<StoreResult<T>>>> = Rc::default();
        let slot = Rc::clone(&out);
        let mut body = Some(body);
        let closure = Closure::<dyn FnMut() -> Result<JsValue, JsValue>>::new(move || {
            let body = body
                .take()
                .ok_or_else(|| JsValue::from_str("transaction body ran twice"))?;
            let result = body(&sql);
            let failed = result.is_err();
            *slot.borrow_mut() = Some(result);
            if failed {
                // Throwing is how transactionSync is told to roll back.
                Err(JsValue::from_str("neXus: transaction rolled back"))
            } else {
                Ok(JsValue::UNDEFINED)
            }
        });
        let called = self
            .storage
            .transaction_sync(closure.as_ref().unchecked_ref());
        drop(closure);
        let result = out.borrow_mut().take();
        match (called, result) {
            (Ok(_), Some(r)) => r,
            // The body failed: its own error says why.
            (Err(_), Some(Err(e))) => Err(e),
            (Err(e), _) => Err(backend("transaction", format!("{e:?}"))),
            (Ok(_), None) => Err(backend("transaction", "body did not run")),
        }
    }
}

fn exec(
    sql: &SqlStorage,
    query: &str,
    args: Vec<SqlStorageValue>,
) -> StoreResult<worker::SqlCursor> {
    sql.exec(query, args).map_err(|e| backend("sql", e))
}

fn read(sql: &SqlStorage, key: &str) -> StoreResult<Option<Vec<u8>>> {
    let cursor = exec(
        sql,
        "SELECT value FROM states WHERE key = ?",
        vec![key.into()],
    )?;
    let row = match cursor.raw().next() {
        None => return Ok(None),
        Some(row) => row.map_err(|e| backend("sql row", e))?,
    };
    match row.into_iter().next() {
        Some(SqlStorageValue::Blob(v)) => Ok(Some(v)),
        Some(SqlStorageValue::String(s)) => Ok(Some(s.into_bytes())),
        other => Err(StoreError::Corrupt {
            key: key.to_owned(),
            reason: format!("unexpected SQL value {other:?}"),
        }),
    }
}

fn write(sql: &SqlStorage, key: &str, value: Option<&[u8]>) -> StoreResult<()> {
    match value {
        Some(v) => exec(
            sql,
            "INSERT INTO states (key, value) VALUES (?, ?) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            vec![key.into(), v.to_vec().into()],
        ),
        None => exec(sql, "DELETE FROM states WHERE key = ?", vec![key.into()]),
    }
    .map(drop)
}

/// Keys of `table` (`states` or `idx`) under `prefix`, ascending, strictly after
/// `start_after`, at most `limit`.
fn list_keys(
    sql: &SqlStorage,
    table: &'static str,
    prefix: &str,
    start_after: Option<&str>,
    limit: usize,
) -> StoreResult<Vec<String>> {
    if limit == 0 {
        return Ok(vec![]);
    }
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let mut query = format!("SELECT key FROM {table} WHERE key >= ?");
    let mut args: Vec<SqlStorageValue> = vec![prefix.into()];
    if let Some(after) = start_after {
        query.push_str(" AND key > ?");
        args.push(after.into());
    }
    if let Some(end) = prefix_end(prefix) {
        query.push_str(" AND key < ?");
        args.push(end.into());
    }
    query.push_str(" ORDER BY key LIMIT ?");
    args.push(SqlStorageValue::Integer(limit));
    let cursor = exec(sql, &query, args)?;
    let mut keys = Vec::new();
    for row in cursor.raw() {
        let row = row.map_err(|e| backend("sql row", e))?;
        match row.into_iter().next() {
            Some(SqlStorageValue::String(k)) => keys.push(k),
            other => return Err(backend("sql list", format!("unexpected key {other:?}"))),
        }
    }
    Ok(keys)
}

/// Refuses a key that is not an index key (the index table holds nothing else).
fn check_index_key(key: &str) -> StoreResult<()> {
    check_key(key)?;
    if key.starts_with(nexus_core::storage::keys::INDEX_PREFIX) {
        Ok(())
    } else {
        Err(StoreError::InvalidKey {
            key: key.to_owned(),
            reason: "not an index key (x/...)".into(),
        })
    }
}

/// Adds one index entry; answers 1 if it was missing, 0 if it was there.
fn insert_index(sql: &SqlStorage, key: &str) -> StoreResult<usize> {
    let present = exec(sql, "SELECT 1 FROM idx WHERE key = ?", vec![key.into()])?
        .raw()
        .next()
        .is_some();
    if present {
        return Ok(0);
    }
    exec(sql, "INSERT INTO idx (key) VALUES (?)", vec![key.into()])?;
    Ok(1)
}

fn log_head(sql: &SqlStorage) -> StoreResult<u64> {
    match read(sql, LOG_HEAD_KEY)? {
        None => Ok(0),
        Some(v) => parse_head(&v),
    }
}

fn index_cursor(sql: &SqlStorage) -> StoreResult<u64> {
    match read(sql, INDEX_CURSOR)? {
        None => Ok(0),
        Some(v) => std::str::from_utf8(&v)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| StoreError::Corrupt {
                key: INDEX_CURSOR.to_owned(),
                reason: "not a decimal number".into(),
            }),
    }
}

fn set_index_cursor(sql: &SqlStorage, to: u64) -> StoreResult<()> {
    write(sql, INDEX_CURSOR, Some(to.to_string().as_bytes()))
}

/// Applies `commit` inside the transaction `sql` is in, as `nexus_store::apply_commit`
/// does over a map: the expectations first (a refused commit writes nothing), then the
/// ops, then the log entries after the current head.
fn apply_commit(
    sql: &SqlStorage,
    commit: &Commit,
    fail_after_ops: Option<usize>,
) -> StoreResult<CommitOutcome> {
    let mut failures = Vec::new();
    for (key, expected) in commit.expectations() {
        let current = read(sql, key)?;
        if current.as_deref() != expected {
            failures.push(CasFailure {
                key: key.to_owned(),
                current,
            });
        }
    }
    if !failures.is_empty() {
        return Ok(CommitOutcome::Conflict(failures));
    }
    for (i, op) in commit.ops.iter().enumerate() {
        if fail_after_ops == Some(i) {
            return Err(backend("commit", "injected failure part-way (test hook)"));
        }
        write(sql, &op.key, op.new.as_deref())?;
    }
    if commit.log.is_empty() {
        return Ok(CommitOutcome::Applied { first_seq: None });
    }
    let head = match read(sql, LOG_HEAD_KEY)? {
        None => 0,
        Some(v) => parse_head(&v)?,
    };
    let tree = tree_writes(head, &commit.log, |key| read(sql, key))?;
    for (i, entry) in commit.log.iter().enumerate() {
        write(sql, &log_key(head + 1 + i as u64), Some(entry))?;
    }
    for (key, value) in &tree {
        write(sql, key, value.as_deref())?;
    }
    let new_head = head + commit.log.len() as u64;
    write(sql, LOG_HEAD_KEY, Some(new_head.to_string().as_bytes()))?;
    if fail_after_ops.is_some_and(|n| n >= commit.ops.len()) {
        return Err(backend(
            "commit",
            "injected failure after the log (test hook)",
        ));
    }
    Ok(CommitOutcome::Applied {
        first_seq: Some(head + 1),
    })
}

impl ObjectStore for SqlStates {
    fn get_state(&self, key: &str) -> StoreResult<Option<Vec<u8>>> {
        check_key(key)?;
        read(&self.sql, key)
    }

    fn put_state(&self, key: &str, expected: Option<&[u8]>, new: &[u8]) -> StoreResult<bool> {
        check_writable_state_key(key)?;
        let (key, expected, new) = (key.to_owned(), expected.map(<[u8]>::to_vec), new.to_vec());
        self.transaction(move |sql| {
            if read(sql, &key)? != expected {
                return Ok(false);
            }
            write(sql, &key, Some(&new))?;
            Ok(true)
        })
    }

    fn list_states(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<String>> {
        list_keys(&self.sql, "states", prefix, start_after, limit)
    }

    fn commit(&self, commit: &Commit) -> StoreResult<CommitOutcome> {
        self.apply(commit)
    }
}

pub use class::NexusCoordinatorDO;

/// The class itself, in a module of its own: the `#[durable_object]` macro generates
/// undocumented public bindings.
#[allow(missing_docs)]
mod class {
    use super::*;

    use std::time::Duration;

    use nexus_api::restore::RestoreReport;

    use crate::archive::{self, ArchiveSettings};

    /// How long a call waits between looks at a restore under way.
    const RESTORE_POLL_MS: u64 = 50;

    /// The coordinator Durable Object (SQLite-backed: `new_sqlite_classes` in
    /// `wrangler.toml`). One instance (named `coordinator`) arbitrates every CAS.
    #[durable_object]
    pub struct NexusCoordinatorDO {
        state: State,
        env: Env,
        store: RefCell<Option<SqlStates>>,
        /// Whether the index is behind the log (found on opening the store, or after
        /// a commit that did not carry its index entries): the next call schedules
        /// the catch-up.
        index_behind: Cell<bool>,
        /// Whether the last call appended to the log: the alarm must be armed for
        /// its window.
        appended: Cell<bool>,
        /// Whether the last call stored a cross-shard part (a prewrite): the alarm
        /// must be armed to settle it if its transaction stalls.
        parts_held: Cell<bool>,
        /// The shard index the Worker's calls name ([`crate::shards::SHARD_HEADER`]),
        /// for when the object does not see its own name.
        shard_hint: Cell<Option<usize>>,
        /// When the alarm this instance set fires (ms since the epoch), if it did.
        alarm_at: Cell<Option<u64>>,
        /// Whether the store is being opened (and restored): other calls wait.
        opening: Cell<bool>,
        /// Why the last restore failed: calls are refused with it until
        /// `POST /admin/restore` tries again (or the instance restarts).
        restore_failed: RefCell<Option<String>>,
        /// What the last restore of this instance did.
        restored: RefCell<Option<RestoreReport>>,
    }

    fn now_ms() -> u64 {
        worker::Date::now().as_millis()
    }

    fn error_response(status: u16, body: serde_json::Value) -> WorkerResult<Response> {
        Ok(Response::from_json(&body)?.with_status(status))
    }

    impl NexusCoordinatorDO {
        /// The store [`ready`](Self::ready) opened; before that (the calls that never
        /// restore: the test hooks), one opened here and not kept, so that the next
        /// call that serves still looks at the archives first.
        fn store(&self) -> StoreResult<SqlStates> {
            if let Some(s) = self.store.borrow().as_ref() {
                return Ok(s.clone());
            }
            let s = SqlStates::open(&self.state)?;
            self.ensure_deployment(&s)?;
            Ok(s)
        }

        /// Keeps `s` as this instance's store: its deployment id and index progress.
        fn install(&self, s: &SqlStates) -> StoreResult<()> {
            self.ensure_deployment(s)?;
            let (indexed, head) = s.index_progress()?;
            self.index_behind.set(indexed < head);
            *self.store.borrow_mut() = Some(s.clone());
            Ok(())
        }

        /// The store, ready to serve: on first use, a storage with no log whose bucket
        /// holds archive windows is restored from them first (spec/archive.md, "On
        /// the Worker"). A call arriving while that runs waits for it; after a failed
        /// restore every call is refused with its reason.
        async fn ready(&self) -> Result<SqlStates, String> {
            loop {
                if let Some(s) = self.store.borrow().as_ref() {
                    return Ok(s.clone());
                }
                if let Some(why) = self.restore_failed.borrow().as_ref() {
                    return Err(why.clone());
                }
                if !self.opening.get() {
                    break;
                }
                worker::Delay::from(Duration::from_millis(RESTORE_POLL_MS)).await;
            }
            self.opening.set(true);
            let opened = self.open_or_restore().await;
            self.opening.set(false);
            if let Err(why) = &opened {
                *self.restore_failed.borrow_mut() = Some(why.clone());
            }
            opened
        }

        async fn open_or_restore(&self) -> Result<SqlStates, String> {
            let s = SqlStates::open(&self.state).map_err(|e| e.detail())?;
            let (_, head) = s.index_progress().map_err(|e| e.detail())?;
            // Archives are shard 0's log (spec/shards.md, "Not done here"): only it
            // restores from them.
            if head == 0 && self.archives() {
                let bucket = self
                    .env
                    .bucket(crate::R2_BINDING)
                    .map_err(|e| e.to_string())?;
                if archive::has_archives(&bucket)
                    .await
                    .map_err(|e| e.detail())?
                {
                    let kv = self.env.kv(crate::KV_BINDING).map_err(|e| e.to_string())?;
                    let report = archive::restore(&s, &kv, &bucket)
                        .await
                        .map_err(|e| format!("restore from the archives failed: {e}"))?;
                    worker::console_log!(
                        "restored {} entries from {} windows (snapshot {:?}, {} replayed)",
                        report.entries,
                        report.windows,
                        report.snapshot,
                        report.replayed
                    );
                    *self.restored.borrow_mut() = Some(report);
                    self.appended.set(true);
                }
            }
            self.install(&s).map_err(|e| e.detail())?;
            Ok(s)
        }

        /// Gives the store its deployment id on first use (a compare-and-swap from
        /// absent, so it never changes afterwards): `NEXUS_DEPLOYMENT` if set, else the
        /// first 32 hex digits of this Durable Object's id. Version 2 actions name it.
        fn ensure_deployment(&self, store: &SqlStates) -> StoreResult<()> {
            let configured = self
                .env
                .var("NEXUS_DEPLOYMENT")
                .ok()
                .map(|v| v.to_string())
                .filter(|v| !v.is_empty());
            let id = match configured {
                Some(v) => v,
                // Every shard names shard 0's id (`meta/deployment` is replicated).
                None if self.shard() > 0 => self
                    .env
                    .durable_object(crate::DO_BINDING)
                    .and_then(|ns| {
                        ns.id_from_name(crate::COORDINATOR_NAME)
                            .map(|id| id.to_string())
                    })
                    .map_err(|e| StoreError::Backend(format!("shard 0's id: {e}")))?
                    .chars()
                    .take(32)
                    .collect(),
                None => self.state.id().to_string().chars().take(32).collect(),
            };
            let id: nexus_core::Deployment = id.parse().map_err(|e| {
                StoreError::Backend(format!("NEXUS_DEPLOYMENT is not a deployment id: {e}"))
            })?;
            store.put_state(
                nexus_core::storage::keys::DEPLOYMENT,
                None,
                id.as_str().as_bytes(),
            )?;
            Ok(())
        }

        /// Which shard this object is (from its name; 0 for today's one coordinator).
        fn shard(&self) -> usize {
            match self.state.id().name() {
                Some(name) => crate::shards::shard_of_name(Some(&name)),
                None => self.shard_hint.get().unwrap_or(0),
            }
        }

        /// Whether this coordinator archives its log: one coordinator only (archives
        /// over N shards are not done: spec/shards.md, "Not done here").
        fn archives(&self) -> bool {
            self.shard() == 0
                && crate::shards::ShardConfig::from_env(&self.env).is_ok_and(|c| c.n() == 1)
        }

        /// Resolves the stale cross-shard parts this shard holds (`xpart/` rows), the
        /// resolver's calls to other shards through their stubs. Answers when the
        /// alarm must run again for the parts that remain (`None`: none remain).
        async fn sweep_parts(&self, store: &SqlStates) -> StoreResult<Option<u64>> {
            let rows = nexus_shard::part_rows(store)?;
            if rows.is_empty() {
                return Ok(None);
            }
            let config = crate::shards::ShardConfig::from_env(&self.env)
                .map_err(|e| StoreError::Backend(e.to_string()))?;
            // Its own calls go to its storage whatever its index.
            let me = crate::shards::THIS_SHARD;
            let now = now_ms();
            let plan = nexus_shard::sweep_ttl(me, &rows, now, config.lock_ttl_ms)
                .map_err(|e| StoreError::Backend(e.to_string()))?;
            // Alarms are at least once: re-arm before the work, so a sweep that dies
            // part-way runs again.
            if let Some(at) = plan.next_alarm {
                self.arm(at.saturating_sub(now))
                    .await
                    .map_err(|e| StoreError::Backend(e.to_string()))?;
            }
            let namespace = self
                .env
                .durable_object(crate::DO_BINDING)
                .map_err(|e| StoreError::Backend(e.to_string()))?;
            for r in plan.resolvers {
                let stub = |i: usize| config.stub(&namespace, i);
                match crate::shards::run_resolver(r, me, store, stub).await {
                    Ok(done) => worker::console_log!("stale cross-shard part settled: {done:?}"),
                    Err(e) => worker::console_warn!("stale cross-shard part not settled: {e}"),
                }
            }
            let rows = nexus_shard::part_rows(store)?;
            let left = nexus_shard::sweep_ttl(me, &rows, now_ms(), config.lock_ttl_ms)
                .map_err(|e| StoreError::Backend(e.to_string()))?;
            Ok(left.next_alarm.map(|at| at.saturating_sub(now_ms())))
        }

        /// Makes sure the alarm fires within `delay_ms` (an earlier one stays).
        async fn arm(&self, delay_ms: u64) -> WorkerResult<()> {
            let want = now_ms().saturating_add(delay_ms);
            if self.alarm_at.get().is_some_and(|at| at <= want) {
                return Ok(());
            }
            let storage = self.state.storage();
            if let Some(at) = storage.get_alarm().await?
                && u64::try_from(at).is_ok_and(|at| at <= want)
            {
                self.alarm_at.set(u64::try_from(at).ok());
                return Ok(());
            }
            storage
                .set_alarm(i64::try_from(delay_ms).unwrap_or(i64::MAX))
                .await?;
            self.alarm_at.set(Some(want));
            Ok(())
        }

        /// The index catch-up ([`crate::repair`]) after `NEXUS_INDEX_REPAIR_DELAY_MS`
        /// (default [`REPAIR_DELAY_MS`]).
        fn repair_delay(&self) -> u64 {
            self.env
                .var("NEXUS_INDEX_REPAIR_DELAY_MS")
                .ok()
                .and_then(|v| v.to_string().parse().ok())
                .unwrap_or(REPAIR_DELAY_MS as u64)
        }

        /// Answers one call; every error becomes a `500` whose body says what failed (a
        /// store's error without its type's prefix: the isolate wraps it as its own
        /// `StoreError::Backend`, and the API adds one prefix).
        fn answer(&self, path: &str, body: &[u8]) -> Result<Vec<u8>, String> {
            let store = self.store().map_err(|e| e.detail())?;
            let json = |v: serde_json::Result<Vec<u8>>| v.map_err(|e| format!("encode: {e}"));
            match path {
                READ_PATH => {
                    let req: ReadRequest = serde_json::from_slice(body)
                        .map_err(|e| format!("bad read request: {e}"))?;
                    let refs: Vec<&str> = req.keys.iter().map(String::as_str).collect();
                    let values = store.get_states(&refs).map_err(|e| e.detail())?;
                    let mut lists = Vec::with_capacity(req.lists.len());
                    for q in &req.lists {
                        lists.push(
                            store
                                .list_states(&q.prefix, q.start_after.as_deref(), q.limit)
                                .map_err(|e| e.detail())?,
                        );
                    }
                    let mut index_lists = Vec::with_capacity(req.index_lists.len());
                    for q in &req.index_lists {
                        index_lists.push(
                            store
                                .list_index(&q.prefix, q.start_after.as_deref(), q.limit)
                                .map_err(|e| e.detail())?,
                        );
                    }
                    json(serde_json::to_vec(&ReadReply {
                        values: values.into_iter().map(|v| v.map(Hex)).collect(),
                        lists,
                        index_lists,
                    }))
                }
                COMMIT_PATH => {
                    let mut req: CommitRequest = serde_json::from_slice(body)
                        .map_err(|e| format!("bad commit request: {e}"))?;
                    #[cfg(feature = "test-hooks")]
                    store.fail_next_commit_after(req.fail_after_ops);
                    let index = req.index.take();
                    let (outcome, behind) = store
                        .commit_indexed(&req.clone().commit(), index)
                        .map_err(|e| e.detail())?;
                    if behind {
                        self.index_behind.set(true);
                    }
                    if matches!(outcome, CommitOutcome::Applied { first_seq: Some(_) }) {
                        self.appended.set(true);
                    }
                    if matches!(outcome, CommitOutcome::Applied { .. })
                        && req.ops.iter().any(|op| {
                            op.new.is_some()
                                && op.key.starts_with(nexus_shard::protocol::XPART_PREFIX)
                        })
                    {
                        self.parts_held.set(true);
                    }
                    let reply = CommitReply::new(&outcome)
                        .ok_or_else(|| format!("unsupported commit outcome {outcome:?}"))?;
                    json(serde_json::to_vec(&reply))
                }
                #[cfg(feature = "test-hooks")]
                crate::protocol::ARCHIVE_STATUS_PATH => {
                    crate::testing::archive_status(&store).map_err(|e| e.detail())
                }
                #[cfg(feature = "test-hooks")]
                crate::protocol::CONFORMANCE_PATH => {
                    let report = crate::testing::run_conformance(&store);
                    // The cases start from an empty store: give it its id again.
                    self.ensure_deployment(&store).map_err(|e| e.detail())?;
                    json(serde_json::to_vec(&report))
                }
                other => Err(format!("no coordinator call {other}")),
            }
        }

        /// `/restore` (the Worker's `POST /admin/restore`): restores an empty storage
        /// from the archives now, also after a restore that failed. Answers what the
        /// restore did, `409` when the storage holds a log, `503` with the reason when
        /// it failed.
        async fn restore_call(&self) -> WorkerResult<Response> {
            if let Some(s) = self.store.borrow().as_ref() {
                let (_, head) = s
                    .index_progress()
                    .map_err(|e| worker::Error::RustError(e.detail()))?;
                if head > 0 {
                    return error_response(
                        409,
                        serde_json::json!({
                            "error": "not_empty",
                            "message": format!("the coordinator holds a log (head {head}): a restore needs empty storage"),
                            "log_head": head,
                        }),
                    );
                }
                *self.store.borrow_mut() = None;
            }
            self.restore_failed.borrow_mut().take();
            self.restored.borrow_mut().take();
            match self.ready().await {
                Ok(s) => {
                    let (_, head) = s
                        .index_progress()
                        .map_err(|e| worker::Error::RustError(e.detail()))?;
                    let report = self.restored.borrow().clone();
                    Response::from_json(&serde_json::json!({
                        "restored": report.is_some(),
                        "log_head": head,
                        "windows": report.as_ref().map(|r| r.windows),
                        "snapshot": report.as_ref().and_then(|r| r.snapshot),
                        "replayed": report.as_ref().map(|r| r.replayed),
                    }))
                }
                Err(why) => error_response(
                    503,
                    serde_json::json!({"error": "restore_failed", "message": why}),
                ),
            }
        }

        /// Test-only `/wipe`: empties this coordinator's storage and forgets its store,
        /// as if the Durable Object had lost its storage (the bucket and KV stay).
        #[cfg(feature = "test-hooks")]
        async fn wipe_call(&self) -> WorkerResult<Response> {
            let s =
                SqlStates::open(&self.state).map_err(|e| worker::Error::RustError(e.detail()))?;
            s.wipe().map_err(|e| worker::Error::RustError(e.detail()))?;
            self.state.storage().delete_alarm().await?;
            self.alarm_at.set(None);
            *self.store.borrow_mut() = None;
            self.restore_failed.borrow_mut().take();
            self.restored.borrow_mut().take();
            Response::ok("")
        }
    }

    impl DurableObject for NexusCoordinatorDO {
        fn new(state: State, env: Env) -> Self {
            Self {
                state,
                env,
                store: RefCell::new(None),
                index_behind: Cell::new(false),
                appended: Cell::new(false),
                parts_held: Cell::new(false),
                shard_hint: Cell::new(None),
                alarm_at: Cell::new(None),
                opening: Cell::new(false),
                restore_failed: RefCell::new(None),
                restored: RefCell::new(None),
            }
        }

        async fn fetch(&self, mut req: Request) -> WorkerResult<Response> {
            let path = req.path();
            if let Some(i) = req
                .headers()
                .get(crate::shards::SHARD_HEADER)
                .ok()
                .flatten()
                .and_then(|v| v.parse().ok())
            {
                self.shard_hint.set(Some(i));
            }
            let body = req.bytes().await?;
            match path.as_str() {
                RESTORE_PATH => return self.restore_call().await,
                #[cfg(feature = "test-hooks")]
                crate::protocol::WIPE_PATH => return self.wipe_call().await,
                READ_PATH | COMMIT_PATH => {
                    if let Err(why) = self.ready().await {
                        return Response::error(why, 503);
                    }
                }
                _ => {}
            }
            // The answer is computed synchronously: no other call interleaves.
            let answer = self.answer(&path, &body);
            // After the answer: awaiting here lets other calls in, which is fine.
            if self.index_behind.replace(false)
                && let Err(e) = self.arm(self.repair_delay()).await
            {
                self.index_behind.set(true);
                worker::console_warn!("index catch-up not scheduled: {e}");
            }
            if self.parts_held.replace(false) {
                let ttl = crate::shards::ShardConfig::from_env(&self.env)
                    .map_or(nexus_shard::LOCK_TTL_MS, |c| c.lock_ttl_ms);
                if let Err(e) = self.arm(ttl).await {
                    worker::console_warn!("sweep alarm not set: {e}");
                }
            }
            if self.appended.replace(false) && self.archives() {
                let settings = ArchiveSettings::from_env(&self.env);
                let due = self
                    .store()
                    .and_then(|s| archive::due_in(&s, &settings, now_ms()));
                let armed = match due {
                    Ok(Some(ms)) => self.arm(ms).await.map_err(|e| e.to_string()),
                    Ok(None) => Ok(()),
                    Err(e) => Err(e.to_string()),
                };
                if let Err(e) = armed {
                    self.appended.set(true);
                    worker::console_warn!("archive alarm not set: {e}");
                }
            }
            match answer {
                Ok(bytes) => Response::from_bytes(bytes),
                Err(message) => Response::error(message, 500),
            }
        }

        /// Index catch-up, then the archive windows that are due; armed again while
        /// either has work left (at once, at the next window's due time, or after a
        /// failure after [`REPAIR_DELAY_MS`]). A retried alarm redoes nothing that
        /// was done: the index catch-up and the archive resume from their cursors.
        async fn alarm(&self) -> WorkerResult<Response> {
            self.alarm_at.set(None);
            let store = match self.ready().await {
                Ok(s) => s,
                Err(why) => {
                    worker::console_warn!("coordinator not ready, alarm skipped: {why}");
                    return Response::ok("");
                }
            };
            let kv = self.env.kv(crate::KV_BINDING)?;
            let bucket = self.env.bucket(crate::R2_BINDING)?;
            let retry = REPAIR_DELAY_MS as u64;
            let mut next: Option<u64> = None;
            let mut soon = |ms: u64| next = Some(next.map_or(ms, |n| n.min(ms)));
            match crate::repair::repair_batch(&store, &kv, &bucket).await {
                Ok(done) => {
                    if done.written > 0 {
                        worker::console_log!(
                            "index catch-up: {} log entries read, {} index entries added",
                            done.entries,
                            done.written
                        );
                    }
                    if done.more {
                        soon(0);
                    }
                }
                // Records may not have reached this location's KV yet: try later.
                Err(e) => {
                    worker::console_warn!("index catch-up failed, retrying later: {e}");
                    soon(retry);
                }
            }
            match self.sweep_parts(&store).await {
                Ok(Some(ms)) => soon(ms),
                Ok(None) => {}
                Err(e) => {
                    worker::console_warn!("sweep failed, retrying later: {e}");
                    soon(retry);
                }
            }
            let settings = ArchiveSettings::from_env(&self.env);
            if self.archives() {
                match archive::archive_due(&store, &kv, &bucket, &settings, now_ms).await {
                    Ok(done) => {
                        for key in &done.snapshots {
                            worker::console_log!("snapshot written: {key}");
                        }
                        if let Some(ms) = done.due_in {
                            soon(ms);
                        }
                    }
                    Err(e) => {
                        worker::console_warn!("archive failed, retrying later: {e}");
                        soon(retry);
                    }
                }
            }
            if let Some(ms) = next {
                self.arm(ms).await?;
            }
            Response::ok("")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::prefix_end;

    #[test]
    fn prefix_end_bounds_the_prefix() {
        assert_eq!(prefix_end("intent/").as_deref(), Some("intent0"));
        assert_eq!(prefix_end(""), None);
        assert_eq!(prefix_end("a\u{D7FF}").as_deref(), Some("a\u{E000}"));
        assert_eq!(prefix_end("a\u{10FFFF}").as_deref(), Some("b"));
        assert_eq!(prefix_end("\u{10FFFF}"), None);
    }
}
