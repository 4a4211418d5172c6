//! Issue 16 (A), through the real binary: a signed action takes effect at most once,
//! and only on the deployment it was signed for. Actions are public (`GET /v1/log`):
//! a client with no key replays them as they are.

mod common;

use std::sync::Barrier;
use std::thread;
use std::time::{Duration, Instant};

use common::{NEXUS, Server, nexus_ok};
use nexus_client::{Client, ClientError, builders};
use nexus_core::{Action, Deployment, SigningKey};
use serde_json::{Value, json};

/// The shortest lease a server grants (ms): the one the lapse test waits out.
const SHORT_LEASE: u64 = 1_000;

/// A closed server (`--data DATA`) whose allowlist holds `keys`.
fn closed_server(data: &std::path::Path, keys: &[&SigningKey], args: &[&str]) -> Server {
    for k in keys {
        nexus_ok(
            &[
                "agents",
                "add",
                "--data",
                data.to_str().expect("utf-8"),
                &k.author().to_string(),
            ],
            &[],
        );
    }
    Server::start_with(data, false, args)
}

/// The error an answer carried: (status, code).
fn refused<T: std::fmt::Debug>(r: Result<T, ClientError>) -> (u16, String) {
    let e = r.expect_err("expected an error answer");
    let api = e.api().unwrap_or_else(|| panic!("not an API error: {e}"));
    (api.status, api.code.as_str().to_owned())
}

/// Sends `action` as its raw wire bytes, as a client without any key would.
fn replay(c: &Client, verb: &str, action: &Action) -> Result<(u16, Value), ClientError> {
    c.post_json(
        &format!("/v1/intents/{}/{verb}", action.content().target()),
        &action.to_json(),
    )
}

/// The applied actions of the log with this hash.
fn times_logged(c: &Client, hash: &nexus_core::FihHash) -> usize {
    c.log(1, Some(1_000))
        .expect("log")
        .entries
        .iter()
        .filter(|e| e["action"]["hash"] == json!(hash.to_string()))
        .count()
}

#[test]
fn a_claim_replayed_after_its_lease_lapses_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b) = (
        SigningKey::from_seed(&[41; 32]),
        SigningKey::from_seed(&[42; 32]),
    );
    let server = closed_server(&dir.path().join("data"), &[&a, &b], &[]);
    let c = server.client();
    let d = c.deployment().expect("deployment");
    let intent = builders::propose(&a, "replay/claim", json!({"n": 1}), &[]).expect("intent");
    c.submit(&intent).expect("propose");
    let claim = builders::claim(&a, &d, intent.hash(), SHORT_LEASE).expect("claim");
    assert_eq!(c.claim(&claim).expect("A claims").token, 1);
    // Wait out A's lease (bounded: many times the lease).
    let start = Instant::now();
    while c
        .get_json("/v1/intents?state=available&topic=replay/claim")
        .expect("list")
        .1["intents"]
        .as_array()
        .is_none_or(Vec::is_empty)
    {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the lease never lapsed"
        );
        thread::sleep(Duration::from_millis(100));
    }
    // The attacker (no key) replays A's claim from the log: refused, nothing changes.
    assert_eq!(
        refused(replay(&c, "claim", &claim)),
        (409, "replayed".into())
    );
    assert_eq!(times_logged(&c, &claim.hash()), 1);
    // So B takes the lapsed Intent over, with the next token.
    let l = c
        .claim(&builders::claim(&b, &d, intent.hash(), 30_000).expect("claim"))
        .expect("B claims");
    assert_eq!((l.token, l.takeover), (2, true));
}

#[test]
fn a_replayed_renewal_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = SigningKey::from_seed(&[43; 32]);
    let server = closed_server(&dir.path().join("data"), &[&a], &[]);
    let c = server.client();
    let d = c.deployment().expect("deployment");
    let intent = builders::propose(&a, "replay/renew", json!({"n": 1}), &[]).expect("intent");
    c.submit(&intent).expect("propose");
    c.claim(&builders::claim(&a, &d, intent.hash(), 30_000).expect("claim"))
        .expect("claim");
    let renew = builders::renew(&a, &d, intent.hash(), 1, 60_000).expect("renew");
    let first = c.renew(&renew).expect("renewal");
    // The same renewal again would extend a (possibly dead) holder's lease: refused.
    assert_eq!(
        refused(replay(&c, "renew", &renew)),
        (409, "replayed".into())
    );
    let (_, state) = c
        .get_json("/v1/intents?state=claimed&topic=replay/renew")
        .expect("list");
    assert_eq!(
        state["intents"][0]["state"]["lease_until"],
        json!(first.lease_until),
        "the replay did not move the lease"
    );
    assert_eq!(times_logged(&c, &renew.hash()), 1);
}

#[test]
fn sixteen_copies_of_an_action_at_once_apply_it_exactly_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(&dir.path().join("data"), true);
    let c = server.client();
    let d = c.deployment().expect("deployment");
    let a = SigningKey::from_seed(&[44; 32]);
    for round in 0..8 {
        let intent =
            builders::propose(&a, "replay/race", json!({"round": round}), &[]).expect("intent");
        c.submit(&intent).expect("propose");
        let claim = builders::claim(&a, &d, intent.hash(), 30_000).expect("claim");
        let barrier = Barrier::new(16);
        let answers: Vec<Result<(u16, Value), ClientError>> = thread::scope(|s| {
            let handles: Vec<_> = (0..16)
                .map(|_| {
                    let (c, barrier, claim) = (c.clone(), &barrier, &claim);
                    s.spawn(move || {
                        barrier.wait();
                        replay(&c, "claim", claim)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("thread"))
                .collect()
        });
        let ok = answers.iter().filter(|r| r.is_ok()).count();
        assert_eq!(ok, 1, "round {round}: {answers:?}");
        for r in answers.into_iter().filter(Result::is_err) {
            assert_eq!(refused(r), (409, "replayed".into()), "round {round}");
        }
        assert_eq!(times_logged(&c, &claim.hash()), 1, "round {round}");
    }
}

#[test]
fn an_action_signed_for_another_deployment_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = SigningKey::from_seed(&[45; 32]);
    let one = Server::start(&dir.path().join("one"), true);
    let two = Server::start(&dir.path().join("two"), true);
    let (c1, c2) = (one.client(), two.client());
    let (d1, d2) = (c1.deployment().expect("one"), c2.deployment().expect("two"));
    assert_ne!(d1, d2, "every new store gets its own id");
    assert_eq!(d1.as_str().len(), 32);
    // The same Intent on both servers; a claim signed for one is refused by the other.
    let intent = builders::propose(&a, "replay/where", json!({}), &[]).expect("intent");
    c1.submit(&intent).expect("propose on one");
    c2.submit(&intent).expect("propose on two");
    let claim = builders::claim(&a, &d1, intent.hash(), 30_000).expect("claim");
    let e = c2.claim(&claim).expect_err("two refuses");
    let api = e.api().expect("API error");
    assert_eq!((api.status, api.code.as_str()), (403, "wrong_deployment"));
    assert_eq!(api.detail("signed"), Some(&json!(d1.as_str())));
    assert_eq!(api.detail("ours"), Some(&json!(d2.as_str())));
    assert_eq!(c1.claim(&claim).expect("one accepts").token, 1);
}

#[test]
fn the_deployment_id_is_kept_across_restarts_and_can_be_chosen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let chosen: Deployment = "lab-7".parse().expect("id");
    let server = Server::start_with(&data, true, &["--deployment", "lab-7"]);
    assert_eq!(server.client().deployment().expect("id"), chosen);
    server.kill9();
    let server = Server::start(&data, true);
    assert_eq!(server.client().deployment().expect("id"), chosen);
    drop(server);
    // A store never changes its id.
    let out = std::process::Command::new(NEXUS)
        .args([
            "serve",
            "--open",
            "--addr",
            "127.0.0.1:0",
            "--deployment",
            "other",
        ])
        .arg("--data")
        .arg(&data)
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("deployment id is lab-7"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn an_old_v1_export_still_verifies_and_a_doubled_action_does_not() {
    // Made by the binary of main before wire format v2 (`nexus export`): a claim, a
    // renewal, a resolution and a withdrawal, all version 1 actions.
    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/export-v1.jsonl"
    );
    let out = nexus_ok(&["verify", fixture, "--replay"], &[]);
    assert!(out.contains("6 entries verified"), "{out}");
    assert!(out.contains("1 claim, 1 renewal, 1 withdrawal"), "{out}");
    // The same log with its claim applied a second time (as a replay did before v2).
    let text = std::fs::read_to_string(fixture).expect("fixture");
    let lines: Vec<&str> = text.lines().collect();
    let mut claim: Value = serde_json::from_str(lines[1]).expect("claim line");
    claim["seq"] = json!(lines.len() + 1);
    let doubled = dir_file(&format!("{text}{claim}\n"));
    for args in [vec!["verify"], vec!["verify", "--replay"]] {
        let mut args = args.clone();
        args.insert(1, doubled.1.to_str().expect("utf-8"));
        let out = common::nexus(&args, &[]);
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("action already applied on line 2"), "{err}");
    }
}

/// Writes `text` to a file in a new temporary directory (kept alive by the guard).
fn dir_file(text: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("export.jsonl");
    std::fs::write(&path, text).expect("write");
    (dir, path)
}
