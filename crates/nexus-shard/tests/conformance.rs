//! The nexus-store conformance suite over [`ShardedObjects`] of 1, 4 and 8 shards.

use nexus_shard::ShardedObjects;
use nexus_store::MemoryStore;
use nexus_store::conformance::run_sync_suite;

fn sharded(n: usize) -> ShardedObjects<MemoryStore> {
    ShardedObjects::new((0..n).map(|_| MemoryStore::new()).collect()).expect("shards")
}

#[test]
fn one_shard_passes_the_conformance_suite() {
    run_sync_suite(|| sharded(1));
}

#[test]
fn four_shards_pass_the_conformance_suite() {
    run_sync_suite(|| sharded(4));
}

#[test]
fn eight_shards_pass_the_conformance_suite() {
    run_sync_suite(|| sharded(8));
}
