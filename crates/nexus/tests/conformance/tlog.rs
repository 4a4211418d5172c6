//! The transparency log of spec/tlog.md on any host with a log key: its checkpoint is
//! signed by the key it publishes for the origin `nexus/<deployment>`, every entry of
//! the log is the leaf at its position in the tree that checkpoint signs, and an older
//! checkpoint is a prefix of a newer one.

use nexus_client::Client;
use nexus_core::{LogEntry, Record};
use serde_json::Value;

/// A verified checkpoint and the verifier key it was verified with.
#[derive(Debug, Clone)]
pub struct Signed {
    /// What the note says.
    pub checkpoint: nexus_tlog::Checkpoint,
    /// The verifier key the host publishes.
    pub log_key: String,
}

/// `GET /v1/checkpoint`, verified under the key the host publishes, for the origin of
/// its deployment.
pub fn checkpoint(c: &Client) -> Signed {
    let (status, body) = c.get_json("/v1/checkpoint").expect("GET /v1/checkpoint");
    assert_eq!(
        status, 200,
        "a host with a log key signs checkpoints: {body}"
    );
    let log_key = body["log_key"].as_str().expect("log_key").to_owned();
    let note = body["checkpoint"].as_str().expect("checkpoint");
    let checkpoint = nexus_tlog::verify_checkpoint(note, &log_key)
        .unwrap_or_else(|e| panic!("the checkpoint verifies under {log_key}: {e}\n{note}"));
    let deployment = c.deployment().expect("deployment");
    assert_eq!(checkpoint.origin, nexus_tlog::origin(deployment.as_str()));
    assert_eq!(body["size"].as_u64(), Some(checkpoint.size), "{body}");
    assert_eq!(
        body["root"].as_str(),
        Some(checkpoint.root.to_string().as_str())
    );
    Signed {
        checkpoint,
        log_key,
    }
}

/// The leaf hash of an entry of `GET /v1/log` (spec/tlog.md, "Leaves"): of the stored
/// entry, rebuilt from what the log page shows.
fn leaf(entry: &Value) -> nexus_tlog::Hash {
    let at = entry["at"].as_u64().expect("at");
    let stored = if let Some(record) = entry.get("record") {
        let record = Record::from_value(record.clone(), &nexus_core::Limits::default())
            .expect("a record of the log verifies");
        LogEntry::of_record(&record, at)
    } else {
        LogEntry::Action {
            action: entry["action"].clone(),
            at,
        }
    };
    stored.leaf_hash()
}

fn hash(v: &Value) -> nexus_tlog::Hash {
    nexus_tlog::hash_from_base64(v.as_str().expect("a base64 hash")).expect("a hash")
}

fn hashes(v: &Value) -> Vec<nexus_tlog::Hash> {
    v.as_array().expect("a proof").iter().map(hash).collect()
}

/// Checks that `new` extends `old` and that each of the log's entries after `old`, up
/// to `new.size`, is its leaf in the tree `new` signs (so the host's tree is its log
/// there, nothing more or less; the work grows with what was written in between).
pub fn check(c: &Client, old: &Signed, new: &Signed) {
    assert_eq!(old.log_key, new.log_key, "the log key changed");
    let (from, to) = (old.checkpoint.size, new.checkpoint.size);
    assert!(from <= to, "checkpoints went back: {from} > {to}");
    let (status, p) = c
        .get_json(&format!("/v1/proof/consistency?from={from}&to={to}"))
        .expect("consistency proof");
    assert_eq!(status, 200, "{p}");
    nexus_tlog::verify_consistency(
        &hashes(&p["proof"]),
        from,
        old.checkpoint.root,
        to,
        new.checkpoint.root,
    )
    .unwrap_or_else(|e| panic!("the checkpoint of {from} is a prefix of {to}'s: {e:?}"));

    let mut seq = from;
    for page in c.log_pages(from + 1) {
        for entry in page.expect("GET /v1/log").entries {
            seq = entry["seq"].as_u64().expect("seq");
            if seq > to {
                return;
            }
            let (status, p) = c
                .get_json(&format!("/v1/proof/inclusion?seq={seq}&size={to}"))
                .expect("inclusion proof");
            assert_eq!(status, 200, "{p}");
            let leaf = leaf(&entry);
            assert_eq!(hash(&p["leaf_hash"]), leaf, "seq {seq}: {entry}");
            nexus_tlog::verify_inclusion(
                &hashes(&p["proof"]),
                to,
                new.checkpoint.root,
                seq - 1,
                leaf,
            )
            .unwrap_or_else(|e| panic!("seq {seq} is leaf {} of {to}: {e:?}", seq - 1));
        }
    }
    assert_eq!(seq, to, "the log ends before the checkpoint's size");
}
