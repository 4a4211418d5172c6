//! The real `nexus serve` binary over HTTP: the conformance suite, claim races, the
//! allowlist, and durability across `kill -9`.

mod common;
mod conformance;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::thread;
use std::time::Duration;

use common::{Server, nexus_ok};
use nexus_client::builders;
use nexus_client::http::IntentQuery;
use nexus_client::{Client, KeyFile};
use nexus_core::{FihHash, IntentState, SigningKey};
use serde_json::json;

#[test]
fn conformance_against_the_binary() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), true);
    conformance::run_conformance(&server.url);
    // Twice against the same store: the suite tolerates earlier data.
    conformance::run_conformance(&format!("{}/", server.url));
}

fn errors_counted(c: &Client, code: &str) -> u64 {
    let metrics = c.metrics().expect("metrics");
    let prefix = format!("nexus_errors_total{{code=\"{code}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map(|n| n.trim().parse().expect("count"))
        .unwrap_or(0)
}

#[test]
fn request_bodies_over_the_limit_are_refused_and_counted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), true);
    let c = server.client();
    let before = errors_counted(&c, "body_too_large");
    for size in [129 * 1024, 4 << 20] {
        let e = conformance::expect_error(&c, "oversize", 413, "body_too_large", || {
            c.post_json("/v1/intents", &vec![b'x'; size])
        });
        assert_eq!(e.detail("limit"), Some(&json!(128 * 1024)));
        assert_eq!(e.detail("size"), Some(&json!(size)));
    }
    assert_eq!(errors_counted(&c, "body_too_large"), before + 2);
}

#[test]
fn two_agents_race_for_each_claim_200_times() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), true);
    let c = server.client();
    let alice = SigningKey::from_seed(&[21; 32]);
    let racers = [
        SigningKey::from_seed(&[22; 32]),
        SigningKey::from_seed(&[23; 32]),
    ];
    let mut wins = [0u32; 2];
    for round in 0..200 {
        let intent =
            builders::propose(&alice, "race/claim", json!({"round": round}), &[]).expect("intent");
        c.submit(&intent).expect("propose");
        let barrier = Barrier::new(2);
        let results: Vec<_> = thread::scope(|s| {
            let handles: Vec<_> = racers
                .iter()
                .map(|key| {
                    let (c, barrier) = (c.clone(), &barrier);
                    let claim = builders::claim(
                        key,
                        &c.deployment().expect("deployment"),
                        intent.hash(),
                        30_000,
                    )
                    .expect("claim");
                    s.spawn(move || {
                        barrier.wait();
                        c.claim(&claim)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("racer"))
                .collect()
        });
        let winners: Vec<usize> = (0..2).filter(|&i| results[i].is_ok()).collect();
        assert_eq!(winners.len(), 1, "round {round}: {results:?}");
        let (w, l) = (winners[0], 1 - winners[0]);
        wins[w] += 1;
        let lease = results[w].as_ref().expect("winner");
        assert_eq!(lease.token, 1);
        let err = results[l].as_ref().expect_err("loser");
        let api = err.api().expect("API error");
        assert_eq!(
            (api.status, api.code.as_str()),
            (409, "already_claimed"),
            "{api}"
        );
        assert_eq!(api.holder(), Some(racers[w].author()), "round {round}");
        assert_eq!(api.lease_until(), Some(lease.lease_until));
        assert_eq!(api.token(), Some(1));
    }
    assert_eq!(wins[0] + wins[1], 200);
    // 200 proposals and 200 winning claims; the losers left nothing.
    assert_eq!(c.health().expect("health").log_head, 400);
}

#[test]
fn allowlist_refuses_unknown_keys_and_accepts_added_ones() {
    let dir = tempfile::tempdir().expect("tempdir");
    let home = tempfile::tempdir().expect("home");
    let data = dir.path().join("data");
    // An agent key made by the binary, allowed with `nexus agents add` (own key).
    nexus_ok(&["keygen"], &[("NEXUS_HOME", home.path())]);
    let added = nexus_ok(
        &["agents", "add", "--data", data.to_str().expect("utf-8")],
        &[("NEXUS_HOME", home.path())],
    );
    let alice = KeyFile::load(home.path().join("key")).expect("alice's key");
    assert_eq!(added.trim(), format!("allowed {}", alice.author()));
    // A second key allowed by name.
    let bob = SigningKey::from_seed(&[31; 32]);
    nexus_ok(
        &[
            "agents",
            "add",
            "--data",
            data.to_str().expect("utf-8"),
            &bob.author().to_string(),
        ],
        &[],
    );
    let listed = nexus_ok(
        &["agents", "list", "--data", data.to_str().expect("utf-8")],
        &[],
    );
    assert_eq!(listed.lines().count(), 2, "{listed}");

    let server = Server::start(&data, false);
    let c = server.client();
    let mallory = SigningKey::from_seed(&[32; 32]);
    let e = conformance::expect_error(&c, "unknown author", 403, "author_not_allowed", || {
        c.submit(&builders::propose(&mallory, "allow/x", json!(1), &[]).expect("intent"))
    });
    assert!(!e.message.is_empty());
    let intent = builders::propose(alice.key(), "allow/x", json!(1), &[]).expect("intent");
    assert_eq!(c.submit(&intent).expect("alice may write").seq, Some(1));
    // Actions are checked too: Mallory may not claim, Bob may.
    conformance::expect_error(&c, "unknown claimer", 403, "author_not_allowed", || {
        c.claim(
            &builders::claim(
                &mallory,
                &c.deployment().expect("deployment"),
                intent.hash(),
                30_000,
            )
            .expect("claim"),
        )
    });
    let lease = c
        .claim(
            &builders::claim(
                &bob,
                &c.deployment().expect("deployment"),
                intent.hash(),
                30_000,
            )
            .expect("claim"),
        )
        .expect("bob may claim");
    assert_eq!(lease.token, 1);
}

/// What the writers saw acknowledged.
#[derive(Default)]
struct Acked {
    records: BTreeMap<FihHash, u64>,
    claims: BTreeMap<FihHash, (SigningKeyId, u64)>,
    max_seq: u64,
}
type SigningKeyId = usize;

#[test]
fn every_acknowledged_write_survives_kill_9() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), true);
    let url = server.url.clone();
    let keys: Vec<SigningKey> = (0..4u8)
        .map(|i| SigningKey::from_seed(&[40 + i; 32]))
        .collect();
    let acked = Arc::new(Mutex::new(Acked::default()));
    let count = Arc::new(AtomicU64::new(0));
    // Four agents write concurrently (so group commits hold several jobs) until the
    // server dies under them: each ends on a failed request.
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let (acked, count) = (Arc::clone(&acked), Arc::clone(&count));
            let key = keys[w].clone();
            let c = Client::new(&url)
                .expect("client")
                .with_timeout(Duration::from_secs(5));
            thread::spawn(move || {
                for n in 0.. {
                    let intent =
                        builders::propose(&key, &format!("durable/w{w}"), json!({"n": n}), &[])
                            .expect("intent");
                    let s = match c.submit(&intent) {
                        Ok(s) => s,
                        Err(e) => return e,
                    };
                    {
                        let mut a = acked.lock().expect("lock");
                        a.records.insert(intent.hash(), s.seq.expect("seq"));
                        a.max_seq = a.max_seq.max(s.seq.unwrap_or(0));
                    }
                    count.fetch_add(1, Ordering::Relaxed);
                    // Every other Intent is claimed by this writer.
                    if n % 2 == 0 {
                        let claim = builders::claim(
                            &key,
                            &c.deployment().expect("deployment"),
                            intent.hash(),
                            600_000,
                        )
                        .expect("claim");
                        let l = match c.claim(&claim) {
                            Ok(l) => l,
                            Err(e) => return e,
                        };
                        acked
                            .lock()
                            .expect("lock")
                            .claims
                            .insert(intent.hash(), (w, l.token));
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                }
                unreachable!("the loop only ends on an error")
            })
        })
        .collect();
    while count.load(Ordering::Relaxed) < 300 && writers.iter().all(|h| !h.is_finished()) {
        thread::sleep(Duration::from_millis(5));
    }
    // Kill while the writers are still writing.
    server.kill9();
    for w in writers {
        let e = w.join().expect("writer");
        // The server is gone: no answer at all, never an API error.
        assert!(e.api().is_none(), "{e}");
    }
    let acked = Arc::try_unwrap(acked)
        .map_err(|_| "still shared")
        .expect("writers done")
        .into_inner()
        .expect("lock");
    assert!(
        acked.records.len() >= 150,
        "{} records",
        acked.records.len()
    );

    let server = Server::start(dir.path(), true);
    let c = server.client();
    let head = c.health().expect("health").log_head;
    assert!(
        head >= acked.max_seq,
        "head {head} < acknowledged seq {}",
        acked.max_seq
    );
    for (hash, seq) in &acked.records {
        let info = c
            .record(&hash.to_string())
            .expect("acknowledged record is there");
        assert_eq!(info.record.hash(), *hash);
        let entry = c.log(*seq, Some(1)).expect("log");
        assert_eq!(entry.entries[0]["record"]["hash"], json!(hash), "seq {seq}");
    }
    for (w, key) in keys.iter().enumerate() {
        let claimed: BTreeMap<FihHash, IntentState> = c
            .all_intents(&IntentQuery {
                state: Some("claimed".into()),
                topic: Some(format!("durable/w{w}")),
                limit: Some(500),
                ..IntentQuery::default()
            })
            .map(|i| i.map(|i| (i.record.hash(), i.state)))
            .collect::<Result<_, _>>()
            .expect("claimed intents");
        for (intent, (holder, token)) in acked.claims.iter().filter(|(_, (h, _))| *h == w) {
            match claimed.get(intent) {
                Some(IntentState::Claimed {
                    holder: h,
                    token: t,
                    ..
                }) => assert_eq!((h, t), (&key.author(), token)),
                other => panic!("claim of {intent} by writer {holder} lost: {other:?}"),
            }
        }
    }

    // The log verifies from the server and from an export, with the binary.
    let out = nexus_ok(&["verify", &server.url], &[]);
    assert!(
        out.starts_with(&format!("ok: {head} entries verified")),
        "{out}"
    );
    let file = dir.path().join("export.jsonl");
    nexus_ok(
        &[
            "export",
            "--server",
            &server.url,
            "--out",
            file.to_str().expect("utf-8"),
        ],
        &[],
    );
    let text = std::fs::read_to_string(&file).expect("export");
    assert_eq!(text.lines().count() as u64, head);
    let out = nexus_ok(&["verify", "--replay", file.to_str().expect("utf-8")], &[]);
    assert!(
        out.starts_with(&format!("ok: {head} entries verified")),
        "{out}"
    );
}

/// The OpenAPI document the binary serves is the one checked in (`spec/openapi.json`,
/// itself checked against the generator by nexus-api's tests).
#[test]
fn the_served_openapi_document_is_the_checked_in_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), true);
    let served = Client::new(&server.url)
        .expect("client")
        .openapi()
        .expect("openapi");
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../spec/openapi.json");
    let text = std::fs::read_to_string(path).expect("spec/openapi.json");
    let checked_in: serde_json::Value = serde_json::from_str(&text).expect("json");
    assert_eq!(
        served, checked_in,
        "spec/openapi.json differs from what the server serves"
    );
}
