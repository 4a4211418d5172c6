//! Helpers shared by the crate's integration tests.
#![allow(dead_code)]

use nexus_shard::{CrossCommit, CrossError, Fault, Resolution, Resolver, ShardStep};
use nexus_store::{CasOp, Commit, CommitOutcome, MemoryStore, ObjectStore, Snapshot};

/// A key `{prefix}{h}` whose hash falls on `shard` of `n` (`j` tells keys apart).
pub fn key(prefix: &str, n: usize, shard: usize, j: usize) -> String {
    format!("{prefix}{:016x}{}", (shard + n * j) as u64, "0".repeat(48))
}

/// `n` empty shard stores.
pub fn stores(n: usize) -> Vec<MemoryStore> {
    (0..n).map(|_| MemoryStore::new()).collect()
}

/// A compare-and-swap of strings.
pub fn cas(key: &str, expected: Option<&str>, new: Option<&str>) -> CasOp {
    CasOp {
        key: key.to_owned(),
        expected: expected.map(|v| v.as_bytes().to_vec()),
        new: new.map(|v| v.as_bytes().to_vec()),
    }
}

/// Sets `key` on `store` (no lock, no log).
pub fn put(store: &MemoryStore, key: &str, value: &str) {
    let current = store.get_state(key).expect("read");
    assert!(
        store
            .put_state(key, current.as_deref(), value.as_bytes())
            .expect("put")
    );
}

/// What a shard holds under `key`, as a string.
pub fn get(store: &MemoryStore, key: &str) -> Option<String> {
    store
        .get_state(key)
        .expect("read")
        .map(|v| String::from_utf8_lossy(&v).into_owned())
}

/// The protocol rows (`lock/`, `xpart/`) a shard still holds.
pub fn pending_rows(store: &MemoryStore) -> Vec<String> {
    let snap = store.snapshot().expect("snapshot");
    snap.states
        .keys()
        .filter(|k| k.starts_with("lock/") || k.starts_with("xpart/"))
        .cloned()
        .collect()
}

/// Applies one call to a store as `fault` says; `None`: the coordinator stopped.
pub fn call(
    store: &MemoryStore,
    commit: &Commit,
    fault: Fault,
) -> Option<Result<CommitOutcome, nexus_shard::Lost>> {
    match fault {
        Fault::Deliver => Some(Ok(store.commit(commit).expect("commit"))),
        Fault::LoseAnswer => {
            store.commit(commit).expect("commit");
            Some(Err(nexus_shard::Lost))
        }
        Fault::LoseCall => Some(Err(nexus_shard::Lost)),
        Fault::Stall => None,
        Fault::StallAfter => {
            store.commit(commit).expect("commit");
            None
        }
    }
}

/// Drives `cc` over `stores`; `fault(i)` says what happens to call `i` (from 0).
/// `None`: the coordinator stopped (a stall) before finishing.
pub fn drive(
    cc: &mut CrossCommit,
    stores: &[MemoryStore],
    mut fault: impl FnMut(usize) -> Fault,
) -> Option<Result<CommitOutcome, CrossError>> {
    for i in 0..100 {
        match cc.poll() {
            ShardStep::Call { shard, commit } => {
                let answer = call(&stores[shard], &commit, fault(i))?;
                cc.feed(shard, answer);
            }
            ShardStep::Read { .. } => panic!("a commit never reads"),
            ShardStep::Done(r) => return Some(r),
        }
    }
    panic!("commit did not finish in 100 calls")
}

/// Drives a resolver over `stores` with every answer delivered but the ones `lose`
/// picks (by call number), which are lost after applying.
pub fn resolve(
    mut r: Resolver,
    stores: &[MemoryStore],
    mut lose: impl FnMut(usize) -> bool,
) -> Resolution {
    for i in 0..100 {
        match r.poll() {
            ShardStep::Read { shard, keys } => {
                let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
                let values = stores[shard].get_states(&refs).expect("read");
                r.feed_read(shard, Ok(values));
            }
            ShardStep::Call { shard, commit } => {
                let fault = if lose(i) {
                    Fault::LoseAnswer
                } else {
                    Fault::Deliver
                };
                let answer = call(&stores[shard], &commit, fault).expect("no stall");
                r.feed(shard, answer);
            }
            ShardStep::Done(r) => return r.expect("resolved"),
        }
    }
    panic!("resolver did not finish")
}
