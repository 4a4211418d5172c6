//! The store on disk through the real binary: `nexus compact` and `--cache-mb`.

mod common;

use common::{Server, nexus, nexus_fails};
use nexus_client::builders;
use nexus_client::{Client, KeyFile};
use serde_json::{Value, json};

fn log_of(c: &Client) -> Vec<Value> {
    c.log_entries(1).collect::<Result<_, _>>().expect("log")
}

/// Issue 15, item 6: a store written in random key order shrinks when compacted, and
/// holds the same log after (served, and verified with replay).
#[test]
fn compact_keeps_the_log_and_shrinks_the_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path();
    let before = {
        let server = Server::start_with(data, true, &["--cache-mb", "8"]);
        let c = server.client();
        let key = KeyFile::generate().expect("key");
        let dep = c.deployment().expect("deployment");
        for i in 0..300 {
            let intent =
                builders::propose(key.key(), "store/compact", json!({"i": i}), &[]).expect("i");
            c.submit_intent(&intent).expect("propose");
            if i % 2 == 0 {
                let claim = builders::claim(key.key(), &dep, intent.hash(), 30_000).expect("c");
                c.claim(&claim).expect("claim");
            }
        }
        log_of(&c)
    };
    let file = data.join("nexus.redb");
    let size_before = std::fs::metadata(&file).expect("store").len();
    let data_arg = data.to_str().expect("utf-8 path");
    let out = nexus(&["compact", "--data", data_arg], &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("compacted"), "{stderr}");
    let size_after = std::fs::metadata(&file).expect("store").len();
    assert!(
        size_after < size_before,
        "{size_before} -> {size_after} bytes"
    );
    assert!(!data.join("nexus.redb.compacting").exists());

    let server = Server::start(data, true);
    let c = server.client();
    assert_eq!(log_of(&c), before);
    let url = format!("http://{}", server.addr());
    let out = nexus(&["verify", "--replay", &url], &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The replay on a scratch store on disk says what the replay in memory says, on
    // the log and on a log with an entry taken out.
    let out = nexus(&["verify", "--replay", "--on-disk", &url], &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let export = dir.path().join("export.jsonl");
    // The first claim committed 10 minutes after it was signed: only the replay
    // (which checks an action's time against its commit time) refuses it.
    let first_claim = before
        .iter()
        .position(|l| l.get("action").is_some())
        .expect("a claim");
    let lines: Vec<String> = before
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let mut v = l.clone();
            if i == first_claim {
                v["at"] = json!(v["at"].as_u64().expect("at") + 600_000);
            }
            v.to_string()
        })
        .collect();
    std::fs::write(&export, lines.join("\n") + "\n").expect("write export");
    let export = export.to_str().expect("utf-8 path");
    let in_memory = nexus(&["--json", "verify", "--replay", export], &[]);
    let on_disk = nexus(&["--json", "verify", "--replay", "--on-disk", export], &[]);
    assert!(!in_memory.status.success());
    let said = String::from_utf8_lossy(&in_memory.stdout);
    assert!(said.contains("replay"), "{said}");
    assert_eq!(in_memory.status.code(), on_disk.status.code());
    assert_eq!(in_memory.stdout, on_disk.stdout);
    // The server holds the store: compacting under it is refused, and changes nothing.
    let (_, err) = nexus_fails(&["compact", "--data", data_arg], &[]);
    assert!(err.contains("stop it first"), "{err}");
    assert_eq!(log_of(&c), before);
}

#[test]
fn compact_without_a_store_and_a_zero_cache_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().to_str().expect("utf-8 path");
    let (_, err) = nexus_fails(&["compact", "--data", data], &[]);
    assert!(err.contains("no store to compact"), "{err}");
    let (_, err) = nexus_fails(&["serve", "--data", data, "--cache-mb", "0"], &[]);
    assert!(err.contains("--cache-mb"), "{err}");
}
