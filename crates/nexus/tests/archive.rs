//! Archives, snapshots and restore through the real binary (spec/archive.md): `nexus
//! serve` archives its log window by window; `nexus restore` rebuilds from the archive
//! directory alone a data directory whose export equals the original's; a server killed
//! (SIGKILL) again and again while it flushes leaves a chain with no gap and no
//! duplicate window; a tampered archive is refused with its line.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{Server, nexus, nexus_ok};
use nexus_client::{Client, builders};
use nexus_core::SigningKey;
use nexus_core::archive::{Chain, keys};
use serde_json::json;

/// Small windows, closed fast, a snapshot every second window.
const FAST: &[&str] = &[
    "--flush-entries",
    "10",
    "--flush-secs",
    "200ms",
    "--snapshot-every",
    "2",
];

/// Writes `n` rounds of propose, claim and resolve (3 entries each).
fn write_rounds(c: &Client, k: &SigningKey, from: u64, n: u64) {
    let d = c.deployment().expect("deployment");
    for i in from..from + n {
        let intent =
            builders::propose(k, &format!("arch/{}", i % 5), json!({"i": i}), &[]).expect("intent");
        c.submit(&intent).expect("propose");
        let lease = c
            .claim(&builders::claim(k, &d, intent.hash(), 30_000).expect("claim"))
            .expect("claim");
        let fact = builders::fact(
            k,
            &format!("arch/{}", i % 5),
            json!({"done": i}),
            &[intent.hash()],
            Some((intent.hash(), lease.token)),
        )
        .expect("fact");
        c.submit(&fact).expect("resolve");
    }
}

/// The chain of the archive directory, checked (no gap, no overlap, no duplicate).
fn chain(dir: &Path) -> Chain {
    let mdir = dir.join(keys::MANIFEST_PREFIX);
    let mut names: Vec<_> = std::fs::read_dir(&mdir)
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name()).collect())
        .unwrap_or_default();
    names.sort();
    let mut chain = Chain::default();
    for n in names {
        let n = n.to_string_lossy().into_owned();
        if n.ends_with(".partial") {
            continue;
        }
        let bytes = std::fs::read(mdir.join(&n)).expect("manifest");
        chain.push(&n, &bytes).unwrap_or_else(|e| panic!("{e}"));
    }
    chain
}

/// Waits until the archive holds the whole log of `c`.
fn wait_archived(c: &Client, dir: &Path) -> u64 {
    let head = c.health().expect("health").log_head;
    let start = Instant::now();
    while chain(dir).last_seq() < head {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "never archived up to {head}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(chain(dir).last_seq(), head);
    head
}

fn export(url: &str, out: &Path) -> Vec<u8> {
    nexus_ok(
        &["--server", url, "export", "--out", &out.to_string_lossy()],
        &[],
    );
    std::fs::read(out).expect("export")
}

#[test]
fn a_restore_from_the_archives_alone_exports_what_the_original_did() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let archive = dir.path().join("archive");
    let mut args = FAST.to_vec();
    let archive_arg = archive.to_string_lossy().into_owned();
    args.extend(["--archive-dir", &archive_arg]);
    let server = Server::start_with(&data, true, &args);
    let c = server.client();
    let k = SigningKey::from_seed(&[7; 32]);
    write_rounds(&c, &k, 0, 40);
    let head = wait_archived(&c, &archive);
    assert_eq!(head, 120);
    let before = export(&server.url, &dir.path().join("before.jsonl"));
    assert!(
        std::fs::read_dir(archive.join("snapshot"))
            .expect("snapshots")
            .count()
            > 0,
        "snapshots were written"
    );
    // The archive's concatenation is the export.
    let cat: Vec<u8> = chain(&archive)
        .windows
        .iter()
        .flat_map(|m| std::fs::read(archive.join(&m.archive)).expect("archive"))
        .collect();
    assert_eq!(cat, before, "archives = export lines");
    server.kill9();

    // A non-empty target is refused.
    let out = nexus(
        &[
            "restore",
            "--from",
            &archive_arg,
            "--data",
            &data.to_string_lossy(),
        ],
        &[],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not empty"));

    let restored = dir.path().join("restored");
    let said = nexus_ok(
        &[
            "restore",
            "--from",
            &archive_arg,
            "--data",
            &restored.to_string_lossy(),
        ],
        &[],
    );
    assert!(
        said.contains("restored 120 entries") && said.contains("snapshot of seq"),
        "{said}"
    );
    let server = Server::start_with(&restored, true, &args);
    let after = export(&server.url, &dir.path().join("after.jsonl"));
    assert_eq!(after, before, "the restored export is byte-identical");
    nexus_ok(
        &[
            "verify",
            "--replay",
            &dir.path().join("after.jsonl").to_string_lossy(),
        ],
        &[],
    );
    // Writes go on, and the chain continues.
    let c = server.client();
    write_rounds(&c, &k, 40, 3);
    assert_eq!(wait_archived(&c, &archive), 129);
}

#[test]
fn sigkill_while_flushing_leaves_no_gap_and_no_duplicate_window() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let archive = data.join("archive");
    let args = [
        "--flush-entries",
        "3",
        "--flush-secs",
        "50ms",
        "--snapshot-every",
        "3",
    ];
    let k = SigningKey::from_seed(&[8; 32]);
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let mut rounds = 0;
    for kill in 0..6 {
        let server = Server::start_with(&data, true, &args);
        let c = server.client();
        write_rounds(&c, &k, rounds, 8);
        rounds += 8;
        // Kill at a random moment while windows are being closed.
        std::thread::sleep(Duration::from_millis(
            nexus_testkit::xorshift(&mut seed) % 120,
        ));
        server.kill9();
        let got = chain(&archive);
        eprintln!("kill {kill}: archived up to seq {}", got.last_seq());
    }
    let server = Server::start_with(&data, true, &args);
    let c = server.client();
    let head = wait_archived(&c, &archive);
    assert_eq!(head, rounds * 3);
    let manifests = std::fs::read_dir(archive.join(keys::MANIFEST_PREFIX))
        .expect("manifests")
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| !e.file_name().to_string_lossy().ends_with(".partial"))
        })
        .count();
    assert_eq!(manifests, chain(&archive).windows.len(), "no stray window");
    let before = export(&server.url, &dir.path().join("before.jsonl"));
    server.kill9();
    let restored = dir.path().join("restored");
    nexus_ok(
        &[
            "restore",
            "--from",
            &archive.to_string_lossy(),
            "--data",
            &restored.to_string_lossy(),
        ],
        &[],
    );
    let server = Server::start_with(&restored, true, &["--no-archive"]);
    assert_eq!(export(&server.url, &dir.path().join("after.jsonl")), before);
}

#[test]
fn a_tampered_archive_is_refused_with_its_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let server = Server::start_with(&data, true, FAST);
    let c = server.client();
    write_rounds(&c, &SigningKey::from_seed(&[9; 32]), 0, 10);
    let archive = data.join("archive");
    wait_archived(&c, &archive);
    server.kill9();
    let m = chain(&archive).windows[1].clone();
    let path = archive.join(&m.archive);
    let good = std::fs::read(&path).expect("archive");
    let lines: Vec<&[u8]> = good.split_inclusive(|b| *b == b'\n').collect();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "dropped",
            [&lines[..4], &lines[5..]].concat().concat(),
            "line 5",
        ),
        (
            "reordered",
            [&lines[..2], &[lines[3], lines[2]], &lines[4..]]
                .concat()
                .concat(),
            "line 3",
        ),
        (
            "changed",
            String::from_utf8_lossy(&good)
                .replacen("\"done\":", "\"done\":1", 1)
                .into_bytes(),
            "hash",
        ),
    ];
    for (what, bytes, expect) in cases {
        std::fs::write(&path, &bytes).expect("tamper");
        let dir_arg = archive.to_string_lossy().into_owned();
        let target = dir.path().join(format!("r-{what}"));
        let target = target.to_string_lossy().into_owned();
        let verify = vec!["verify", dir_arg.as_str()];
        let restore = vec![
            "restore",
            "--from",
            dir_arg.as_str(),
            "--data",
            target.as_str(),
        ];
        for args in [verify, restore] {
            let out = nexus(&args, &[]);
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success(), "{what}: {args:?} accepted it");
            assert!(
                err.contains(&m.archive) && err.contains(expect),
                "{what}: {args:?}: {err}"
            );
        }
    }
    std::fs::write(&path, &good).expect("restore the archive");
    nexus_ok(&["verify", &archive.to_string_lossy()], &[]);
}

#[test]
fn archive_manifests_end_at_checkpoints_that_verify_and_restore_checks_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let server = Server::start_with(&data, true, FAST);
    let c = server.client();
    write_rounds(&c, &SigningKey::from_seed(&[3; 32]), 0, 10);
    let archive = data.join("archive");
    wait_archived(&c, &archive);
    let (_, served) = c.get_json("/v1/checkpoint").expect("checkpoint");
    let vkey = served["log_key"].as_str().expect("log key").to_owned();
    server.kill9();
    let windows = chain(&archive).windows;
    for m in &windows {
        let (_, cp) = m
            .verified_checkpoint(Some(&vkey))
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|| panic!("window {} has no checkpoint", m.window));
        assert_eq!(cp.size, m.last);
    }
    let snapshots: Vec<_> = std::fs::read_dir(archive.join("snapshot"))
        .expect("snapshots")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".json"))
        .collect();
    assert!(!snapshots.is_empty());
    for name in &snapshots {
        let m: serde_json::Value =
            serde_json::from_slice(&std::fs::read(archive.join("snapshot").join(name)).expect("m"))
                .expect("json");
        let head = m["head"].as_u64().expect("head");
        let verified = nexus_core::archive::verify_manifest_checkpoint(
            name,
            m.get("checkpoint").filter(|v| !v.is_null()),
            head,
            Some(&vkey),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(verified.is_some(), "snapshot {name} has a checkpoint");
    }
    let dir_arg = archive.to_string_lossy().into_owned();
    let key_file = data.join("log.key").to_string_lossy().into_owned();
    let said = nexus_ok(&["verify", &dir_arg, "--log-key", &vkey], &[]);
    assert!(
        said.contains("matches the checkpoint of tree size 30"),
        "{said}"
    );
    let other = nexus_tlog::LogKey::from_seed([8; 32])
        .signer(served["origin"].as_str().expect("origin"))
        .expect("signer")
        .verifier_key();
    let restored = |name: &str| dir.path().join(name).to_string_lossy().into_owned();
    for args in [
        vec!["verify", dir_arg.as_str(), "--log-key", other.as_str()],
        vec![
            "restore",
            "--from",
            &dir_arg,
            "--data",
            &restored("r-other"),
            "--log-key",
            &other,
        ],
    ] {
        let out = nexus(&args, &[]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains("not signed by log key"),
            "{args:?}: {err}"
        );
    }
    nexus_ok(
        &[
            "restore",
            "--from",
            &dir_arg,
            "--data",
            &restored("r-good"),
            "--log-key",
            &key_file,
        ],
        &[],
    );
    // The restored directory signs with the old key: kept checkpoints stay checkable.
    assert_eq!(
        std::fs::read(dir.path().join("r-good").join("log.key")).expect("restored key"),
        std::fs::read(data.join("log.key")).expect("old key")
    );
    let server = Server::start_with(&dir.path().join("r-good"), true, &[]);
    let (_, again) = server
        .client()
        .get_json("/v1/checkpoint")
        .expect("checkpoint");
    assert_eq!(
        (again["log_key"].as_str(), again["root"].clone()),
        (Some(vkey.as_str()), served["root"].clone())
    );
    drop(server);

    // Without --log-key, `DATA/log.key` beside `DATA/archive` is the key: a last window
    // re-signed by another key (its manifest has no successor to notice) is refused.
    let last = windows.last().expect("a window").clone();
    let mpath = archive.join(keys::manifest(last.first));
    let good_manifest = std::fs::read(&mpath).expect("manifest");
    let (signed, cp) = last
        .verified_checkpoint(None)
        .expect("ok")
        .expect("present");
    let forger = nexus_tlog::LogKey::from_seed([8; 32])
        .signer(&signed.origin)
        .expect("signer");
    let mut resigned = last.clone();
    resigned.checkpoint = Some(
        serde_json::to_value(nexus_tlog::SignedCheckpoint::sign(
            &forger, cp.size, &cp.root,
        ))
        .expect("json"),
    );
    std::fs::write(&mpath, resigned.encode()).expect("re-sign");
    let out = nexus(&["verify", &dir_arg], &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("not signed by log key"),
        "{err}"
    );
    std::fs::write(&mpath, &good_manifest).expect("put back");
    nexus_ok(&["verify", &dir_arg], &[]);

    // A commit time changed in the last window (its manifest fixed to match: it has no
    // successor to notice) breaks only the Merkle root, which the checkpoint catches.
    let path = archive.join(&last.archive);
    let good = std::fs::read_to_string(&path).expect("archive");
    let mut first: serde_json::Value =
        serde_json::from_str(good.lines().next().expect("line")).expect("json");
    first["at"] = json!(first["at"].as_u64().expect("at") + 1);
    let bad = good.replacen(good.lines().next().expect("line"), &first.to_string(), 1);
    std::fs::write(&path, &bad).expect("tamper");
    let mut fixed = last.clone();
    fixed.bytes = bad.len() as u64;
    fixed.blake3 = nexus_core::archive::blake3_hex(bad.as_bytes());
    std::fs::write(archive.join(keys::manifest(last.first)), fixed.encode()).expect("manifest");
    for args in [
        vec!["verify", dir_arg.as_str()],
        vec!["restore", "--from", &dir_arg, "--data", &restored("r-bad")],
    ] {
        let out = nexus(&args, &[]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} accepted it");
        assert!(
            err.contains("do not hash to the root") || err.contains("Merkle root at size 30"),
            "{args:?}: {err}"
        );
    }
}
