//! The transparency log through the real `nexus serve`: checkpoints signed by the
//! data directory's log key, inclusion and consistency proofs that verify against them.

mod common;

use common::Server;
use nexus_client::{KeyFile, builders};
use serde_json::{Value, json};

fn hashes(v: &Value) -> Vec<nexus_tlog::Hash> {
    v.as_array()
        .expect("proof array")
        .iter()
        .map(|h| nexus_tlog::hash_from_base64(h.as_str().expect("string")).expect("hash"))
        .collect()
}

fn hash(v: &Value) -> nexus_tlog::Hash {
    nexus_tlog::hash_from_base64(v.as_str().expect("string")).expect("hash")
}

#[test]
fn checkpoints_and_proofs_from_nexus_serve_verify_and_another_key_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), true);
    let c = server.client();
    let key = KeyFile::generate().expect("key");
    let checkpoint = |c: &nexus_client::Client| {
        let (status, cp) = c.get_json("/v1/checkpoint").expect("checkpoint");
        assert_eq!(status, 200, "{cp}");
        cp
    };
    let mut old = None;
    for n in 0..5u64 {
        let intent = builders::propose(key.key(), "tl/x", json!({"n": n}), &[]).expect("intent");
        c.submit_intent(&intent).expect("propose");
        if n == 1 {
            old = Some(checkpoint(&c));
        }
    }
    let cp = checkpoint(&c);
    let vkey = cp["log_key"].as_str().expect("log key");
    let verified = nexus_tlog::verify_checkpoint(cp["checkpoint"].as_str().expect("note"), vkey)
        .expect("the checkpoint verifies under the published key");
    assert_eq!(verified.size, 5);
    // Another key (same name) is refused.
    let other = nexus_tlog::LogKey::from_seed([9; 32])
        .signer(&verified.origin)
        .expect("signer")
        .verifier_key();
    assert!(
        nexus_tlog::verify_checkpoint(cp["checkpoint"].as_str().expect("note"), &other).is_err()
    );
    for seq in 1..=5u64 {
        let (status, p) = c
            .get_json(&format!("/v1/proof/inclusion?seq={seq}&size=5"))
            .expect("inclusion");
        assert_eq!(status, 200, "{p}");
        nexus_tlog::verify_inclusion(
            &hashes(&p["proof"]),
            5,
            verified.root,
            seq - 1,
            hash(&p["leaf_hash"]),
        )
        .expect("inclusion verifies");
        // The same proof for another leaf does not.
        let wrong = nexus_tlog::leaf_hash(b"not an entry");
        assert!(
            nexus_tlog::verify_inclusion(&hashes(&p["proof"]), 5, verified.root, seq - 1, wrong)
                .is_err()
        );
    }
    let old = old.expect("old checkpoint");
    let old = nexus_tlog::verify_checkpoint(old["checkpoint"].as_str().expect("note"), vkey)
        .expect("old");
    let (status, p) = c
        .get_json(&format!("/v1/proof/consistency?from={}&to=5", old.size))
        .expect("consistency");
    assert_eq!(status, 200, "{p}");
    nexus_tlog::verify_consistency(&hashes(&p["proof"]), old.size, old.root, 5, verified.root)
        .expect("the old checkpoint is a prefix of the new");
    let err = c
        .get_json("/v1/proof/inclusion?seq=6")
        .expect_err("seq 6 is past the tree");
    assert!(
        err.to_string().contains("not in a tree of 5 leaves"),
        "{err}"
    );
}
