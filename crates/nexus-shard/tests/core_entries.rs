//! The core skips the sharding protocol's log entries when it reads a log
//! (`nexus_core::storage::is_shard_protocol_entry`): its list of their types must be
//! this crate's, and every entry this crate logs must be one the core skips.

use nexus_shard::protocol::PROTOCOL_TYPES;
use nexus_shard::{ProtocolEntry, TxnId};

#[test]
fn the_core_knows_every_protocol_entry_type() {
    assert_eq!(nexus_core::storage::SHARD_PROTOCOL_TYPES, PROTOCOL_TYPES);
}

#[test]
fn every_protocol_entry_is_skipped_by_the_core() {
    let txn = TxnId("0123456789abcdef0123456789abcdef".to_owned());
    let entries = [
        ProtocolEntry::Prepared { txn: txn.clone() },
        ProtocolEntry::Release {
            txn: txn.clone(),
            primary: 1,
        },
        ProtocolEntry::Abort { txn },
    ];
    for e in entries {
        let bytes = e.encode();
        assert!(
            nexus_core::storage::is_shard_protocol_entry(&bytes),
            "{}",
            String::from_utf8_lossy(&bytes)
        );
    }
    let record = br#"{"type":"record","hash":"00","kind":"fact","at":1}"#;
    assert!(!nexus_core::storage::is_shard_protocol_entry(record));
}
