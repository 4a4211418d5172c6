//! IoBuffer + StoreSession: run a deterministic, synchronous library over async storage.
//!
//! A library written against the pure-sync traits of [`nexus_store`]
//! ([`KeyValueStore`](nexus_store::KeyValueStore), [`BlobStore`](nexus_store::BlobStore),
//! [`ObjectStore`](nexus_store::ObjectStore)) cannot call async storage directly where
//! there is no thread to block (a Cloudflare Worker: no `block_on` in wasm). Instead of
//! making the traits async, this crate confines all I/O to two phases *around* the sync
//! code:
//!
//! 1. **hydrate** — load what the request needs into the in-memory buffers
//!    ([`IoBufferKv`], [`IoBufferBlob`], [`IoBufferObject`], together an
//!    [`IoBufferSession`]) with the host's (async) bindings;
//! 2. **execute** — run the sync library against the session, which implements all three
//!    traits. Writes land in memory and mark keys dirty; `put_state` and `commit` are
//!    compare-and-swaps against the buffer's view. A read of a key (or a listing) that
//!    was not hydrated is recorded as a **miss** and answered as absent (empty). If the
//!    round missed anything, its result and writes are thrown away, the misses are
//!    hydrated, and the job is **re-executed from scratch**: the library is
//!    deterministic, so the final round — the first one that saw everything it read —
//!    behaves exactly as it would have against the real store. Rounds are bounded
//!    ([`SessionError::TooManyRounds`]);
//! 3. **drain** — take only the delta ([`Delta`]): key-value and blob puts/deletes that
//!    change something, and one [`Commit`](nexus_store::Commit) of compare-and-swaps
//!    (each expecting the value as hydrated) plus the queued commit log entries;
//! 4. **flush** — write it back ([`Delta::flush`], or the host's own async version of
//!    the same order): idempotent, content-addressed puts first, then the one atomic
//!    commit (the commit point), then the key-value entries that depend on it, then
//!    deletes. A conflicting commit means another writer got there first: nothing after
//!    the commit point is written, and the job is retried from hydration or the
//!    conflict is reported.
//!
//! [`Driver`] takes one job through all four steps, conflict retries included, as a
//! sans-IO state machine: a host polls it ([`Step`]) and performs only the I/O it asks
//! for, so an async host (the Cloudflare Worker) awaits its bindings between steps and
//! [`drive_sync`] runs it against any sync store. [`StoreSession`] is its round loop
//! (steps 2–3: [`StoreSession::execute`] returns [`Executed::NeedsHydration`] or
//! [`Executed::Done`]). [`SessionServer`] is a sequential job queue over a sync store, on
//! its own thread natively or driven with [`SessionServer::process_one`].
//!
//! The crate has no async runtime and no knowledge of what the library stores; it builds
//! for `wasm32-unknown-unknown`.
//!
//! # Example
//!
//! A tiny "library" (a bank transfer) runs unchanged over a session; the host loop
//! below hydrates synchronously from a [`MemoryStore`](nexus_store::MemoryStore) where a
//! Worker would `.await` its KV / R2 / Durable Object bindings.
//!
//! ```
//! use nexus_iobuf::{Executed, StoreSession};
//! use nexus_store::{
//!     CasOp, Commit, CommitOutcome, KeyValueStore, LOG_HEAD_KEY, MemoryStore, ObjectStore,
//!     StoreResult,
//! };
//!
//! /// Moves `amount` from one balance to another in one atomic commit and files a
//! /// receipt. Knows nothing of buffers, sessions or async.
//! fn transfer<S: KeyValueStore + ObjectStore>(
//!     store: &S,
//!     from: &str,
//!     to: &str,
//!     amount: u64,
//! ) -> StoreResult<bool> {
//!     let balance = |key: &str| -> StoreResult<(Option<Vec<u8>>, u64)> {
//!         let raw = store.get_state(key)?;
//!         let n = raw
//!             .as_deref()
//!             .and_then(|b| std::str::from_utf8(b).ok()?.parse().ok())
//!             .unwrap_or(0);
//!         Ok((raw, n))
//!     };
//!     let ((from_raw, from_bal), (to_raw, to_bal)) = (balance(from)?, balance(to)?);
//!     // The receipt is keyed by the log sequence number, so read the log head: a
//!     // buffer numbers log entries only from a hydrated head.
//!     store.get_state(LOG_HEAD_KEY)?;
//!     if from_bal < amount {
//!         return Ok(false);
//!     }
//!     let set = |key: &str, expected, n: u64| CasOp {
//!         key: key.to_owned(),
//!         expected,
//!         new: Some(n.to_string().into_bytes()),
//!     };
//!     let commit = Commit { reads: Vec::new(),
//!         ops: vec![set(from, from_raw, from_bal - amount), set(to, to_raw, to_bal + amount)],
//!         log: vec![format!("{from}->{to}:{amount}").into_bytes()],
//!     };
//!     let CommitOutcome::Applied { first_seq: Some(seq) } = store.commit(&commit)? else {
//!         return Ok(false);
//!     };
//!     store.set(&format!("receipt/{seq}"), commit.log[0].as_slice())?;
//!     Ok(true)
//! }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let backing = MemoryStore::new();
//! backing.put_state("alice", None, b"100")?;
//!
//! let mut driver = StoreSession::new();
//! let (moved, delta) = loop {
//!     match driver.execute(|s| transfer(s, "alice", "bob", 30))? {
//!         Executed::Done(out, delta) => break (out?, delta),
//!         // An async host would `.await` its bindings here.
//!         Executed::NeedsHydration(misses) => driver.hydrate_from(&backing, &misses)?,
//!     }
//! };
//! assert!(moved);
//! // Round 1 missed both balances and the log head; round 2 ran on hydrated data.
//! assert_eq!(driver.rounds(), 2);
//! assert_eq!(delta.commit.ops.len(), 2);
//! assert_eq!(delta.kv_puts, vec![("receipt/1".to_owned(), b"alice->bob:30".to_vec())]);
//!
//! // Nothing reached the backing store yet; now flush. The receipt depends on the
//! // commit, so it is written after it.
//! assert_eq!(backing.get_state("bob")?, None);
//! let report = delta.flush(&backing, |key| key.starts_with("receipt/"))?;
//! assert_eq!(report.first_seq, Some(1));
//! assert_eq!(backing.get_state("alice")?, Some(b"70".to_vec()));
//! assert_eq!(backing.get_state("bob")?, Some(b"30".to_vec()));
//! assert_eq!(backing.get("receipt/1")?, Some(b"alice->bob:30".to_vec()));
//! # Ok(())
//! # }
//! ```

mod buffer;
mod drive;
mod driver;
mod server;
mod session;

pub use buffer::{IoBufferBlob, IoBufferKv, IoBufferObject, ListQuery};
pub use drive::{
    DriveConfig, DriveStats, Driver, StateSource, Step, drive_sync, flush_batch, write_batch,
};
pub use driver::{DEFAULT_MAX_ROUNDS, Executed, SessionError, StoreSession};
#[cfg(not(target_arch = "wasm32"))]
pub use server::ServerThread;
pub use server::{DEFAULT_MAX_ATTEMPTS, JobError, JobOutput, SessionClient, SessionServer, Ticket};
pub use session::{Delta, FlushError, FlushReport, FlushStage, IoBufferSession, KvPut, Misses};
