//! Sharded coordinators for neXus (issue 12; spec/shards.md).
//!
//! One coordinator Durable Object is single-threaded and caps the deployment near
//! 1,000 requests/s. This crate spreads the object tier over N shards — pure sync, no
//! platform code, the same on every host:
//!
//! * [`ShardMap`]: where a key lives (`rec/`, `intent/`, `acts/{h}` by the hash they
//!   carry; `hints/active` and `meta/deployment` on every shard; the log and the
//!   protocol rows per shard; anything else on shard 0), and how a [`Commit`] splits
//!   into per-shard parts ([`ShardMap::split`]).
//! * [`CrossCommit`]: one commit over the shards as a sans-IO state machine. A commit
//!   on one shard is one call (the fast path); one over `k` shards is Percolator on
//!   plain single-shard commits: prewrite `k − 1` secondaries (lock their keys, store
//!   the part), commit the primary (the commit point), release the secondaries —
//!   `2k − 1` calls, every one idempotent under the transaction id.
//! * [`Resolver`] and [`sweep`]: a stalled transaction's locks are settled by the next
//!   commit or read that meets them, or by the shard's alarm, once older than
//!   [`LOCK_TTL_MS`]: rolled forward if its primary committed, else aborted.
//! * [`merge_order`]: the shard logs merged into one order for the whole deployment,
//!   which `verify --replay` replays.
//! * [`ShardedObjects`]: an [`nexus_store::ObjectStore`] over N stores that runs all of
//!   it synchronously — the reference host, the tests' and the simulator's.
//!
//! ```
//! use nexus_shard::ShardedObjects;
//! use nexus_store::{CasOp, Commit, CommitOutcome, MemoryStore, ObjectStore};
//!
//! let store = ShardedObjects::new((0..4).map(|_| MemoryStore::new()).collect()).unwrap();
//! // Two Intents whose hashes fall on shards 1 and 2, claimed in one atomic commit.
//! let key = |first: u64| format!("intent/{first:016x}{}", "0".repeat(48));
//! let claim = |k: String| CasOp { key: k, expected: None, new: Some(b"claimed".to_vec()) };
//! let commit = Commit::new(vec![claim(key(1)), claim(key(2))], vec![b"entry".to_vec()]);
//! assert!(matches!(store.commit(&commit).unwrap(), CommitOutcome::Applied { .. }));
//! assert_eq!(store.stats().cross_shard_calls, 3); // prewrite, primary, release
//! assert_eq!(store.get_state(&key(1)).unwrap(), Some(b"claimed".to_vec()));
//! ```

mod cross;
mod drive;
mod map;
mod merge;
pub mod protocol;
mod resolve;
mod sharded;

pub use cross::{CallKind, CrossCommit, CrossError, CrossStats, Lost, MetLock, ShardStep};
pub use drive::{DriveCounts, ShardedCommit, ShardedRead, merge_listings};
pub use map::{
    HASHED_PREFIXES, LOCAL_PREFIXES, MAX_SHARDS, Part, Placement, REPLICATED, ShardError, ShardMap,
    Split, WRITE_ONCE_PREFIX,
};
pub use merge::{MergeError, merge_order};
pub use protocol::{LOCK_TTL_MS, Lock, ProtocolEntry, TxnId, TxnState, XPart};
pub use resolve::{Resolution, Resolver, Sweep, part_rows, sweep, sweep_ttl};
pub use sharded::{
    Fault, FaultHook, MAX_CALLS, MAX_RESOLVE_ROUNDS, MergedEntry, ShardStats, ShardedObjects,
};

#[cfg(doc)]
use nexus_store::Commit;
