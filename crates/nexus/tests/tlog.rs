//! The transparency log through the real `nexus serve`: checkpoints signed by the
//! data directory's log key, inclusion and consistency proofs that verify against them.

mod common;

use common::{Server, nexus_fails, nexus_ok};
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

/// Proposes `n` Intents (under their own topics, independent of each other) and claims
/// the first: records and an action.
fn write_some(c: &nexus_client::Client, key: &KeyFile, from: u64, n: u64) {
    let d = c.deployment().expect("deployment");
    for i in from..from + n {
        let intent =
            builders::propose(key.key(), &format!("cp/{i}"), json!({"i": i}), &[]).expect("intent");
        c.submit_intent(&intent).expect("propose");
        if i == from {
            c.claim(&builders::claim(key.key(), &d, intent.hash(), 30_000).expect("claim"))
                .expect("claim");
        }
    }
}

fn path(p: &std::path::Path) -> String {
    p.to_string_lossy().into_owned()
}

/// The export's lines as JSON, and back.
fn lines(file: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(file)
        .expect("export")
        .lines()
        .map(|l| serde_json::from_str(l).expect("line"))
        .collect()
}

fn write_lines(file: &std::path::Path, lines: &[Value]) {
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(file, text).expect("write");
}

/// The server's own log key (its data directory's `log.key`) named by `origin`.
fn server_signer(data: &std::path::Path, origin: &str) -> nexus_tlog::LogSigner {
    let text = std::fs::read_to_string(data.join("log.key")).expect("log.key");
    let seed: [u8; 32] = hex::decode(text.trim())
        .expect("hex")
        .try_into()
        .expect("32");
    nexus_tlog::LogKey::from_seed(seed)
        .signer(origin)
        .expect("signer")
}

#[test]
fn verify_against_a_checkpoint_refuses_a_dropped_reordered_added_or_changed_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(&dir.path().join("data"), true);
    let c = server.client();
    let key = KeyFile::generate().expect("key");
    write_some(&c, &key, 0, 6);
    let cp = dir.path().join("cp.json");
    let (url, cpf) = (server.url.as_str(), path(&cp));
    nexus_ok(&["--server", url, "checkpoint", "--out", &cpf], &[]);
    let saved: nexus_tlog::SignedCheckpoint =
        serde_json::from_str(&std::fs::read_to_string(&cp).expect("cp")).expect("checkpoint file");
    assert_eq!(saved.size, 7);
    let export = dir.path().join("log.jsonl");
    nexus_ok(&["--server", url, "export", "--out", &path(&export)], &[]);
    // More entries after the checkpoint: the log extends it, still verifies.
    write_some(&c, &key, 6, 2);
    let said = nexus_ok(&["verify", &path(&export), "--checkpoint", &cpf], &[]);
    assert!(
        said.contains("matches the checkpoint") && said.contains("size 7"),
        "{said}"
    );
    let said = nexus_ok(
        &[
            "verify",
            url,
            "--checkpoint",
            &cpf,
            "--log-key",
            &saved.log_key,
        ],
        &[],
    );
    assert!(said.contains("matches the checkpoint"), "{said}");

    let all = lines(&export);
    let bad = dir.path().join("bad.jsonl");
    let refused = |lines: &[Value], needle: &str| {
        write_lines(&bad, lines);
        let (_, err) = nexus_fails(&["verify", &path(&bad), "--checkpoint", &cpf], &[]);
        assert!(err.contains(needle), "expected {needle:?} in: {err}");
        err
    };
    let renumber = |mut l: Vec<Value>| {
        for (i, v) in l.iter_mut().enumerate() {
            v["seq"] = json!(i + 1);
        }
        l
    };
    // Dropped: the last line (the export ends early) or one inside (renumbered or not).
    refused(&all[..6], "entries 7..=7 are missing");
    let mut dropped = all.clone();
    dropped.remove(4);
    refused(&dropped, "line 5 (seq 6): gap in seq: expected 5");
    refused(&renumber(dropped), "entries 7..=7 are missing");
    // Reordered: two independent Intents swapped, seqs renumbered so no other check sees it.
    let mut swapped = all.clone();
    swapped.swap(3, 4);
    refused(
        &renumber(swapped),
        "do not hash to the root of the checkpoint",
    );
    // Added: a valid Intent inserted, the rest renumbered.
    let extra = builders::propose(key.key(), "cp/extra", json!({}), &[]).expect("intent");
    let mut added = all.clone();
    added.insert(
        2,
        json!({"seq": 3, "at": all[2]["at"], "record": extra.to_value()}),
    );
    let err = refused(&renumber(added), "line 7 (seq 7)");
    assert!(err.contains("entries 1..=7 do not hash"), "{err}");
    // With a server, bisection over its consistency proofs names the first seq that
    // differs (a root alone cannot).
    let located = |lines: &[Value], seq: u64| {
        write_lines(&bad, lines);
        let (_, err) = nexus_fails(
            &["--server", url, "verify", &path(&bad), "--checkpoint", &cpf],
            &[],
        );
        let want = format!("line {seq} (seq {seq}): ");
        assert!(
            err.contains(&want)
                && err.contains(&format!("seq {seq} is the first entry that differs")),
            "expected seq {seq} in: {err}"
        );
    };
    let mut swapped = all.clone();
    swapped.swap(3, 4);
    located(&renumber(swapped), 4);
    let mut added = all.clone();
    added.insert(
        2,
        json!({"seq": 3, "at": all[2]["at"], "record": extra.to_value()}),
    );
    located(&renumber(added), 3);
    let mut changed = all.clone();
    changed[1]["at"] = json!(changed[1]["at"].as_u64().expect("at") + 1);
    located(&changed, 2);
    // Changed: a commit time (no signature covers it: only the tree does) ...
    let mut changed = all.clone();
    changed[1]["at"] = json!(changed[1]["at"].as_u64().expect("at") + 1);
    write_lines(&bad, &changed);
    nexus_ok(&["verify", &path(&bad)], &[]);
    refused(&changed, "do not hash to the root");
    // ... or a record's body (its hash no longer matches).
    let mut changed = all.clone();
    assert!(changed[2]["record"]["body"].is_object(), "{}", changed[2]);
    changed[2]["record"]["body"] = json!({"i": 99});
    let err = refused(&changed, "hash mismatch");
    assert!(err.contains("line 3 (seq 3"), "{err}");

    // A checkpoint signed by another key is refused, pinned or not.
    let other = nexus_tlog::LogKey::from_seed([9; 32])
        .signer(&saved.origin)
        .expect("signer");
    let root = nexus_tlog::hash_from_base64(&saved.root).expect("root");
    let forged = dir.path().join("forged.json");
    let mut f = nexus_tlog::SignedCheckpoint::sign(&other, saved.size, &root);
    std::fs::write(&forged, serde_json::to_string(&f).expect("json")).expect("write");
    let (_, err) = nexus_fails(
        &[
            "verify",
            &path(&export),
            "--checkpoint",
            &path(&forged),
            "--log-key",
            &saved.log_key,
        ],
        &[],
    );
    assert!(err.contains("not signed by log key"), "{err}");
    f.log_key = saved.log_key.clone();
    std::fs::write(&forged, serde_json::to_string(&f).expect("json")).expect("write");
    let (_, err) = nexus_fails(
        &["verify", &path(&export), "--checkpoint", &path(&forged)],
        &[],
    );
    assert!(err.contains("not signed by log key"), "{err}");
    let (_, err) = nexus_fails(
        &[
            "--server",
            url,
            "checkpoint",
            "--log-key",
            &other.verifier_key(),
        ],
        &[],
    );
    assert!(err.contains("not signed by log key"), "{err}");
    // The data directory's key file pins the key too.
    let key_file = path(&server.data.join("log.key"));
    nexus_ok(
        &["--server", url, "checkpoint", "--log-key", &key_file],
        &[],
    );
}

#[test]
fn offline_inclusion_and_consistency_with_a_kept_checkpoint() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(&dir.path().join("data"), true);
    let c = server.client();
    let key = KeyFile::generate().expect("key");
    write_some(&c, &key, 0, 3);
    let (url, old) = (server.url.clone(), dir.path().join("old.json"));
    nexus_ok(&["--server", &url, "checkpoint", "--out", &path(&old)], &[]);
    write_some(&c, &key, 3, 4);
    let proof = dir.path().join("proof.json");
    nexus_ok(
        &[
            "--server",
            &url,
            "proof",
            "--seq",
            "2",
            "--out",
            &path(&proof),
        ],
        &[],
    );
    // Consistency: today's log extends the kept checkpoint (proof from the server) ...
    let said = nexus_ok(
        &["--server", &url, "verify", "--consistent", &path(&old)],
        &[],
    );
    assert!(said.contains("extends the checkpoint at size 4"), "{said}");
    let new = dir.path().join("new.json");
    nexus_ok(&["--server", &url, "checkpoint", "--out", &path(&new)], &[]);
    nexus_ok(
        &[
            "--server",
            &url,
            "verify",
            "--consistent",
            &path(&old),
            "--checkpoint",
            &path(&new),
        ],
        &[],
    );
    // ... but not a made-up one, even signed by the log's own key (a fork) ...
    let kept: nexus_tlog::SignedCheckpoint =
        serde_json::from_str(&std::fs::read_to_string(&old).expect("old")).expect("cp");
    let signer = server_signer(&server.data, &kept.origin);
    let forked = dir.path().join("forked.json");
    let fork =
        nexus_tlog::SignedCheckpoint::sign(&signer, kept.size, &nexus_tlog::leaf_hash(b"fork"));
    std::fs::write(&forked, serde_json::to_string(&fork).expect("json")).expect("write");
    let (_, err) = nexus_fails(
        &["--server", &url, "verify", "--consistent", &path(&forked)],
        &[],
    );
    assert!(
        err.contains("does not extend the checkpoint at size 4"),
        "{err}"
    );
    // ... nor one by another key when the log's key is pinned.
    let other = nexus_tlog::LogKey::from_seed([5; 32])
        .signer(&kept.origin)
        .expect("signer");
    let root = nexus_tlog::hash_from_base64(&kept.root).expect("root");
    let alien = nexus_tlog::SignedCheckpoint::sign(&other, kept.size, &root);
    std::fs::write(&forked, serde_json::to_string(&alien).expect("json")).expect("write");
    let (_, err) = nexus_fails(
        &[
            "--server",
            &url,
            "verify",
            "--consistent",
            &path(&forked),
            "--log-key",
            &kept.log_key,
        ],
        &[],
    );
    assert!(err.contains("not signed by log key"), "{err}");

    // Inclusion, with the server gone.
    drop(server);
    let said = nexus_ok(&["verify", "--inclusion", &path(&proof)], &[]);
    assert!(
        said.contains("ok: seq 2 is in the log") && said.contains("size 9"),
        "{said}"
    );
    nexus_ok(
        &[
            "verify",
            "--inclusion",
            &path(&proof),
            "--log-key",
            &kept.log_key,
        ],
        &[],
    );
    let good: Value =
        serde_json::from_str(&std::fs::read_to_string(&proof).expect("proof")).expect("json");
    let tampered = dir.path().join("tampered.json");
    let refused = |v: &Value, needle: &str| {
        std::fs::write(&tampered, v.to_string()).expect("write");
        let (_, err) = nexus_fails(&["verify", "--inclusion", &path(&tampered)], &[]);
        assert!(err.contains(needle), "expected {needle:?} in: {err}");
    };
    let mut v = good.clone();
    v["proof"][0] = json!(nexus_tlog::leaf_hash(b"x").to_string());
    refused(&v, "seq 2 is not shown in the log");
    let mut v = good.clone();
    v["entry"]["at"] = json!(v["entry"]["at"].as_u64().expect("at") + 1);
    refused(&v, "seq 2 is not shown in the log");
    let mut v = good.clone();
    v["seq"] = json!(3);
    refused(&v, "the entry is seq 2");
    let mut v = good;
    v["checkpoint"]["checkpoint"] = json!(alien.checkpoint);
    refused(&v, "not signed by log key");
}
