//! The neXus Worker under `wrangler dev` (workerd): the native server's conformance
//! suite unchanged, byte-identical error bodies, the per-request metrics header,
//! persistence across a restart, the coordinator's storage conformance, claim races
//! and injected faults.
//!
//! Ignored by default (they need the built Worker and npm's wrangler): `scripts/test`
//! runs them with `cargo nextest run -p nexus-worker-test --run-ignored only`.

#[path = "../../nexus/tests/conformance/mod.rs"]
mod conformance;

use std::collections::BTreeMap;
use std::time::Duration;

use nexus_api::{Api, ApiConfig, Request};
use nexus_client::builders::{self, now_ms};
use nexus_client::{Client, ErrorCode, KeyFile};
use nexus_core::Effect;
use nexus_store::MemoryStore;
use nexus_worker_test::{Build, WranglerDev, agent, nexus_bin};
use serde_json::{Value, json};

const NEEDS: &str = "needs the built Worker and wrangler (scripts/test runs it)";

fn client(dev: &WranglerDev) -> Client {
    Client::new(&dev.url)
        .expect("client")
        .with_timeout(Duration::from_secs(30))
}

/// The Worker's deployment id, which its actions are signed for.
fn dep(dev: &WranglerDev) -> nexus_core::Deployment {
    client(dev).deployment().expect("deployment")
}

fn key() -> KeyFile {
    KeyFile::generate().expect("key")
}

/// One raw exchange: status, body bytes and the metrics header.
struct Raw {
    status: u16,
    body: Vec<u8>,
    metrics: BTreeMap<String, u64>,
    /// Every header (lowercase names) that is text.
    headers: BTreeMap<String, String>,
}

fn raw(url: &str, method: &str, target: &str, body: &[u8], headers: &[(&str, &str)]) -> Raw {
    let agent = agent(Duration::from_secs(30));
    let full = format!("{url}{target}");
    let mut resp = match method {
        "GET" => {
            let mut r = agent.get(&full);
            for (k, v) in headers {
                r = r.header(*k, *v);
            }
            r.call()
        }
        _ => {
            let mut r = agent.post(&full);
            for (k, v) in headers {
                r = r.header(*k, *v);
            }
            r.send(body)
        }
    }
    .expect("HTTP exchange");
    let metrics = resp
        .headers()
        .get("x-nexus-metrics")
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .filter_map(|kv| kv.split_once('='))
                .filter_map(|(k, v)| Some((k.to_owned(), v.parse().ok()?)))
                .collect()
        })
        .unwrap_or_default();
    let headers = resp
        .headers()
        .iter()
        .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
        .collect();
    let status = resp.status().as_u16();
    let body = resp
        .body_mut()
        .with_config()
        .limit(16 << 20)
        .read_to_vec()
        .expect("body");
    Raw {
        status,
        body,
        metrics,
        headers,
    }
}

fn post_json(url: &str, target: &str, body: &[u8], headers: &[(&str, &str)]) -> Raw {
    let mut all = vec![("content-type", "application/json")];
    all.extend_from_slice(headers);
    raw(url, "POST", target, body, &all)
}

#[test]
#[ignore = "needs the built Worker and wrangler (scripts/test runs it)"]
fn conformance_suite_passes_against_the_worker() {
    let _ = NEEDS;
    let state = tempfile::tempdir().expect("tempdir");
    let dev = WranglerDev::start(Build::Deploy, state.path());
    conformance::run_conformance(&dev.url);
    // Again on the same state, with a trailing slash on the base URL.
    conformance::run_conformance(&format!("{}/", dev.url));
    // The checkpoints the suite verified are signed by the NEXUS_LOG_KEY secret.
    let signed = conformance::tlog::checkpoint(&client(&dev));
    let seed: nexus_tlog::LogKey = nexus_worker_test::TEST_LOG_KEY.parse().expect("seed");
    let expected = seed.signer(&signed.checkpoint.origin).expect("signer");
    assert_eq!(signed.log_key, expected.verifier_key());
    // And the independent Python checker (spec/check_tlog.py) agrees: the root over the
    // Worker's log, its inclusion and consistency proofs, its signature by that key.
    let root = nexus_worker_test::worker_dir().join("../..");
    let python = std::env::var_os("NEXUS_PYTHON")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| root.join(".venv/bin/python"));
    let out = std::process::Command::new(&python)
        .arg(root.join("spec/check_tlog.py"))
        .args(["--server", &dev.url, "--log-key", &expected.verifier_key()])
        .output()
        .unwrap_or_else(|e| panic!("{}: {e} (scripts/setup makes the venv)", python.display()));
    assert!(
        out.status.success(),
        "check_tlog.py --server refused the Worker's log:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
#[ignore = "needs the built Worker and wrangler (scripts/test runs it)"]
fn conformance_suite_passes_against_the_worker_over_four_shards() {
    let (_state, dev) = over_four_shards(Build::Deploy, &[]);
    // Every case but those of the one log's order (per shard over N shards).
    conformance::run_conformance_over(&dev.url, false);
    conformance::run_conformance_over(&format!("{}/", dev.url), false);
    // Governance reads one shard's log: a deployment is refused rather than half
    // governed.
    let lead = conformance::contract::lead();
    let source = conformance::contract::budget("four", 2, &lead.author().to_string());
    let body = conformance::contract::deployment(&lead, &source, None).to_json();
    let r = raw(&dev.url, "POST", "/v1/contract", &body, &[]);
    assert_eq!(
        (r.status, error_code(&r).as_str()),
        (501, "not_implemented")
    );
}

#[test]
#[ignore = "needs the built Worker and wrangler (scripts/test runs it)"]
fn without_a_usable_log_key_the_worker_signs_no_checkpoint_but_serves_proofs() {
    for secret in ["", "not hex"] {
        let state = tempfile::tempdir().expect("tempdir");
        let dev = WranglerDev::start_with(
            "wrangler.toml",
            Build::Deploy,
            state.path(),
            &[("NEXUS_LOG_KEY", secret)],
        );
        let c = client(&dev);
        let intent = builders::propose(key().key(), "tl/w", json!({}), &[]).expect("intent");
        c.submit_intent(&intent).expect("propose");
        let r = raw(&dev.url, "GET", "/v1/checkpoint", b"", &[]);
        assert_eq!(
            (r.status, error_code(&r).as_str()),
            (503, "no_log_key"),
            "{secret:?}"
        );
        let (status, p) = c
            .get_json("/v1/proof/inclusion?seq=1&size=1")
            .expect("inclusion");
        assert_eq!(status, 200, "{p}");
        let leaf =
            nexus_tlog::hash_from_base64(p["leaf_hash"].as_str().expect("leaf")).expect("hash");
        // The tree of one leaf is that leaf: its proof is empty.
        assert_eq!(p["proof"], json!([]), "{p}");
        assert_eq!(
            p["root"].as_str().map(nexus_tlog::hash_from_base64),
            Some(Some(leaf)),
            "{p}"
        );
    }
}

#[test]
#[ignore = "needs the built Worker and wrangler (scripts/test runs it)"]
fn error_bodies_are_byte_identical_to_nexus_api() {
    let state = tempfile::tempdir().expect("tempdir");
    let dev = WranglerDev::start(Build::Deploy, state.path());
    let api = Api::new(ApiConfig {
        open: true,
        ..ApiConfig::default()
    });
    let deployment = client(&dev).deployment().expect("deployment");
    // The reference store has the Worker's deployment id, as the coordinator does.
    let store = MemoryStore::new();
    nexus_core::CompositeColdStorage::unified(store.clone(), nexus_core::Limits::default())
        .init_deployment(&deployment)
        .expect("deployment");
    let ghost = nexus_core::FihHash::of_canonical(b"worker test: no such record");
    let alice = key();
    let claim = builders::claim(alice.key(), &deployment, ghost, 30_000).expect("claim");
    let other: nexus_core::Deployment = "another-deployment".parse().expect("deployment");
    let elsewhere = builders::claim(alice.key(), &other, ghost, 30_000).expect("claim");
    let intent =
        builders::propose(alice.key(), "worker/bytes", json!({"n": 1}), &[]).expect("intent");
    let mut bad_sig = intent.to_value();
    let other = builders::propose(alice.key(), "worker/bytes", json!({"n": 2}), &[]).expect("x");
    bad_sig["sig"] = json!(other.sig().to_string());
    let cases: Vec<(&str, String, Vec<u8>)> = vec![
        ("POST", "/v1/intents".into(), b"{\"kind\":".to_vec()),
        (
            "POST",
            "/v1/intents".into(),
            serde_json::to_vec(&bad_sig).expect("json"),
        ),
        ("POST", "/v1/facts".into(), vec![b' '; 256 * 1024]),
        ("GET", "/v1/records/not-a-hash".into(), vec![]),
        ("GET", format!("/v1/records/{ghost}"), vec![]),
        (
            "POST",
            format!("/v1/intents/{ghost}/claim"),
            claim.to_json(),
        ),
        (
            "POST",
            format!("/v1/intents/{ghost}/claim"),
            elsewhere.to_json(),
        ),
        ("GET", "/v1/intents?state=sleeping".into(), vec![]),
        ("GET", "/v1/intents?limit=100000".into(), vec![]),
        ("POST", "/v1/health".into(), b"{}".to_vec()),
        ("GET", "/v1/nothing/here".into(), vec![]),
    ];
    for (method, target, body) in cases {
        let native = api.run_sync(
            &store,
            &Request::new(method, &target, body.clone()),
            now_ms(),
        );
        let worker = raw(&dev.url, method, &target, &body, &[]);
        assert!(native.status >= 400, "{method} {target}: not an error case");
        assert_eq!(
            (worker.status, String::from_utf8_lossy(&worker.body)),
            (native.status, String::from_utf8_lossy(&native.body)),
            "{method} {target}"
        );
    }
    // A deployment carries its costs too: its commit, and nothing refused.
    let source = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../examples/contracts/budget.nex"),
    )
    .expect("example contract");
    let deployment = builders::fact(
        alice.key(),
        "nexus/contract",
        json!({"source": source, "expected": null}),
        &[],
        None,
    )
    .expect("deployment");
    let deploy = post_json(&dev.url, "/v1/contract", &deployment.to_json(), &[]);
    assert_eq!(
        deploy.status,
        201,
        "{}",
        String::from_utf8_lossy(&deploy.body)
    );
    assert_eq!(
        deploy.metrics.get("commits"),
        Some(&1),
        "{:?}",
        deploy.metrics
    );
}

#[test]
#[ignore = "needs the built Worker and wrangler (scripts/test runs it)"]
fn every_answer_carries_its_costs() {
    let state = tempfile::tempdir().expect("tempdir");
    let dev = WranglerDev::start(Build::Deploy, state.path());
    let alice = key();
    let intent =
        builders::propose(alice.key(), "worker/metrics", json!({"n": 1}), &[]).expect("intent");
    let created = post_json(&dev.url, "/v1/intents", &intent.to_json(), &[]);
    assert_eq!(
        created.status,
        201,
        "{}",
        String::from_utf8_lossy(&created.body)
    );
    let m = &created.metrics;
    for name in [
        "wall_ms",
        "kv_reads",
        "kv_writes",
        "r2_reads",
        "r2_writes",
        "do_calls",
    ] {
        assert!(m.contains_key(name), "{name} missing from {m:?}");
    }
    // The record, and ONE coordinator call: the commit, which carries the index
    // entries (one by time, one per topic level: "worker", "worker/metrics").
    assert_eq!(m["kv_writes"], 1, "{m:?}");
    assert_eq!((m["do_calls"], m["commits"]), (1, 1), "{m:?}");

    // Claim, renew and resolve: one coordinator call each.
    let claim = builders::claim(alice.key(), &dep(&dev), intent.hash(), 30_000).expect("claim");
    let target = format!("/v1/intents/{}/claim", intent.hash());
    let claimed = post_json(&dev.url, &target, &claim.to_json(), &[]);
    assert_eq!(claimed.status, 200);
    let m = &claimed.metrics;
    assert_eq!(
        (m["do_calls"], m["commits"], m["kv_writes"]),
        (1, 1, 0),
        "{m:?}"
    );
    let renew = builders::renew(alice.key(), &dep(&dev), intent.hash(), 1, 60_000).expect("renew");
    let target = format!("/v1/intents/{}/renew", intent.hash());
    let renewed = post_json(&dev.url, &target, &renew.to_json(), &[]);
    assert_eq!(renewed.status, 200);
    assert_eq!(renewed.metrics["do_calls"], 1, "{:?}", renewed.metrics);
    let fact = builders::fact(
        alice.key(),
        "worker/metrics",
        json!({"done": true}),
        &[intent.hash()],
        Some((intent.hash(), 1)),
    )
    .expect("fact");
    let resolved = post_json(&dev.url, "/v1/facts", &fact.to_json(), &[]);
    assert_eq!(
        resolved.status,
        201,
        "{}",
        String::from_utf8_lossy(&resolved.body)
    );
    assert_eq!(resolved.metrics["do_calls"], 1, "{:?}", resolved.metrics);

    // An error is only answered on states read from the coordinator: a claim of the
    // resolved Intent reads them (one call) and commits nothing.
    let late = builders::claim(alice.key(), &dep(&dev), intent.hash(), 30_000).expect("claim");
    let target = format!("/v1/intents/{}/claim", intent.hash());
    let refused = post_json(&dev.url, &target, &late.to_json(), &[]);
    assert_eq!(refused.status, 409);
    let m = &refused.metrics;
    assert_eq!((m["do_calls"], m["commits"]), (1, 0), "{m:?}");

    // A read: one coordinator call.
    let read = raw(
        &dev.url,
        "GET",
        &format!("/v1/records/{}", intent.hash()),
        b"",
        &[],
    );
    assert_eq!(
        (read.status, read.metrics["do_calls"]),
        (200, 1),
        "{:?}",
        read.metrics
    );

    // A refused request costs no commit and no write.
    let bad = post_json(&dev.url, "/v1/intents", b"{", &[]);
    assert_eq!(bad.status, 400);
    assert_eq!(
        (bad.metrics["do_calls"], bad.metrics["kv_writes"]),
        (0, 0),
        "{:?}",
        bad.metrics
    );
}

#[test]
#[ignore = "needs the built Worker and wrangler (scripts/test runs it)"]
fn state_survives_a_restart_with_persist_to() {
    let state = tempfile::tempdir().expect("tempdir");
    let alice = key();
    let bob = key();
    let intent =
        builders::propose(alice.key(), "worker/persist", json!({"n": 1}), &[]).expect("intent");
    let (head, lease) = {
        let dev = WranglerDev::start(Build::Deploy, state.path());
        let c = client(&dev);
        c.submit(&intent).expect("propose");
        let lease = c
            .claim(&builders::claim(bob.key(), &dep(&dev), intent.hash(), 60_000).expect("claim"))
            .expect("claim");
        (c.health().expect("health").log_head, lease)
    };
    let dev = WranglerDev::start(Build::Deploy, state.path());
    let c = client(&dev);
    assert_eq!(c.health().expect("health").log_head, head);
    let info = c
        .record(&intent.hash().to_string())
        .expect("record after restart");
    assert_eq!(info.record, intent);
    let e = c
        .claim(&builders::claim(alice.key(), &dep(&dev), intent.hash(), 60_000).expect("claim"))
        .expect_err("still claimed by bob");
    let api = e.api().expect("api error");
    assert_eq!(api.code, ErrorCode::AlreadyClaimed);
    assert_eq!(api.holder(), Some(bob.author()));
    assert_eq!(api.lease_until(), Some(lease.lease_until));
    let log = c.log(1, None).expect("log");
    assert_eq!(log.head, head);
}

/// Runs a storage conformance hook of the test build and checks its report: at least
/// `cases` cases and `steps` steps run, no failure. Answers the names of the cases run.
fn storage_conformance(hook: &str, cases: u64, steps: u64) -> Vec<String> {
    let state = tempfile::tempdir().expect("tempdir");
    let dev = WranglerDev::start(Build::Test, state.path());
    let r = raw(&dev.url, "POST", hook, b"", &[]);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let report: Value = serde_json::from_slice(&r.body).expect("report");
    eprintln!("{hook}: {report}");
    assert!(
        report["cases"].as_u64().expect("cases") >= cases,
        "{report}"
    );
    assert!(
        report["steps"].as_u64().expect("steps") >= steps,
        "{report}"
    );
    assert_eq!(report["failures"], json!([]), "{report}");
    serde_json::from_value(report["ran"].clone()).expect("names of the cases run")
}

#[test]
#[ignore = "needs the built Worker and wrangler (scripts/test runs it)"]
fn coordinator_storage_passes_the_store_conformance_cases() {
    // The object-tier cases, inside the Durable Object; among them every case of a
    // commit with read checks (the coordinator refuses a commit whose read changed).
    let ran = storage_conformance("/__test/conformance", 9, 68);
    let with_reads: Vec<&str> = nexus_store::conformance::cases()
        .into_iter()
        .filter(|case| {
            case.steps.iter().any(
                |s| matches!(&s.op, nexus_store::conformance::Op::Commit(c) if !c.reads.is_empty()),
            )
        })
        .map(|case| case.name)
        .collect();
    assert!(with_reads.len() >= 3, "{with_reads:?}");
    for name in with_reads {
        assert!(
            ran.iter().any(|r| r == name),
            "{name:?} did not run: {ran:?}"
        );
    }
}

#[test]
#[ignore = "needs the built Worker and wrangler (scripts/test runs it)"]
fn kv_and_r2_adapters_pass_the_store_conformance_cases() {
    // The key-value cases (6) and blob cases (2), through the bridge's adapters.
    storage_conformance("/__test/tiers", 8, 40);
}

#[test]
#[ignore = "needs the built Worker and wrangler (scripts/test runs it)"]
fn test_hooks_are_not_in_the_deployed_build() {
    let state = tempfile::tempdir().expect("tempdir");
    let dev = WranglerDev::start(Build::Deploy, state.path());
    for hook in [
        "/__test/conformance",
        "/__test/tiers",
        "/__test/wipe",
        "/__test/archive",
        "/__test/governance",
    ] {
        let r = raw(&dev.url, "POST", hook, b"", &[]);
        assert_eq!(
            r.status,
            404,
            "{hook}: {}",
            String::from_utf8_lossy(&r.body)
        );
    }
    // A fault header is ignored: the commit applies.
    let alice = key();
    let intent =
        builders::propose(alice.key(), "worker/hooks", json!({"n": 1}), &[]).expect("intent");
    let created = post_json(
        &dev.url,
        "/v1/intents",
        &intent.to_json(),
        &[("x-nexus-test-fail-commit-after", "0")],
    );
    assert_eq!(created.status, 201);
    // Without the NEXUS_ADMIN_TOKENS secret the admin route does not exist, and the
    // wipe above did not run: the log is there.
    let admin = post_json(
        &dev.url,
        "/admin/restore",
        b"",
        &[("authorization", "Bearer x")],
    );
    assert_eq!(
        admin.status,
        404,
        "{}",
        String::from_utf8_lossy(&admin.body)
    );
    assert_eq!(client(&dev).health().expect("health").log_head, 1);
}

/// Phase 2: two Workers in two `wrangler dev` processes (so two isolates, as two edge
/// locations would be) race to claim the same Intent, 200 times. Both reach the one
/// coordinator: exactly one claim wins each round, the other is refused with 409
/// naming the winner.
#[test]
#[ignore = "needs the built Worker and wrangler (scripts/test runs it)"]
fn two_workers_race_a_claim_200_times_one_winner_each() {
    race_claims_200_times(1);
}

#[test]
#[ignore = "needs the built Worker and wrangler (scripts/test runs it)"]
fn over_four_shards_two_workers_race_claims_200_times_one_winner_each() {
    race_claims_200_times(4);
}

/// A Worker over 4 coordinator shards serving `build`, with `vars` besides, and the
/// directory of its state (dropped with it).
fn over_four_shards(build: Build, vars: &[(&str, &str)]) -> (tempfile::TempDir, WranglerDev) {
    let state = tempfile::tempdir().expect("tempdir");
    let mut all = vec![("NEXUS_SHARDS", "4")];
    all.extend_from_slice(vars);
    let dev = WranglerDev::start_with("wrangler.toml", build, state.path(), &all);
    (state, dev)
}

/// The shard of a hash over `n` shards (spec/shards.md: its first 16 hex digits).
fn shard_of(hash: &nexus_core::FihHash, n: u64) -> usize {
    let text = hash.to_string();
    (u64::from_str_radix(&text[..16], 16).expect("hex") % n) as usize
}

/// Two Workers over `shards` coordinator shards race for each of 200 Intents.
fn race_claims_200_times(shards: u64) {
    let state = tempfile::tempdir().expect("tempdir");
    let n = shards.to_string();
    let vars = [("NEXUS_SHARDS", n.as_str())];
    let a = WranglerDev::start_with("wrangler.toml", Build::Deploy, state.path(), &vars);
    let mut b = WranglerDev::start_with("wrangler.peer.toml", Build::Deploy, state.path(), &vars);
    let health = raw(&a.url, "GET", "/v1/health", b"", &[]);
    let health: Value = serde_json::from_slice(&health.body).expect("health");
    assert_eq!(health["shards"], json!(shards), "{health}");
    let mut spread = vec![0u32; usize::try_from(shards).expect("shards")];
    let (ca, cb) = (client(&a), client(&b));
    let (alice, bob, carol) = (key(), key(), key());
    let mut wins = [0u32; 2];
    for round in 0..200 {
        let intent = builders::propose(alice.key(), "worker/race", json!({ "round": round }), &[])
            .expect("intent");
        // Proposed through either Worker; seen by the other at once (the coordinator
        // is the one place states live).
        let (proposer, other) = if round % 2 == 0 {
            (&ca, &cb)
        } else {
            (&cb, &ca)
        };
        proposer.submit(&intent).expect("propose");
        spread[shard_of(&intent.hash(), shards)] += 1;
        let seen = other
            .record(&intent.hash().to_string())
            .expect("seen by the other");
        assert_eq!(seen.record, intent);

        let claims = [
            builders::claim(
                bob.key(),
                &ca.deployment().expect("deployment"),
                intent.hash(),
                30_000,
            )
            .expect("claim"),
            builders::claim(
                carol.key(),
                &ca.deployment().expect("deployment"),
                intent.hash(),
                30_000,
            )
            .expect("claim"),
        ];
        let barrier = std::sync::Barrier::new(2);
        let results: Vec<_> = std::thread::scope(|s| {
            let handles: Vec<_> = [(&ca, &claims[0]), (&cb, &claims[1])]
                .into_iter()
                .map(|(c, claim)| {
                    let barrier = &barrier;
                    s.spawn(move || {
                        barrier.wait();
                        c.claim(claim)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("claimer thread"))
                .collect()
        });
        let authors = [bob.author(), carol.author()];
        let winners: Vec<usize> = (0..2).filter(|i| results[*i].is_ok()).collect();
        assert_eq!(winners.len(), 1, "round {round}: {results:?}");
        let (w, l) = (winners[0], 1 - winners[0]);
        wins[w] += 1;
        let lease = results[w].as_ref().expect("winner");
        assert_eq!((lease.token, lease.takeover), (1, false), "round {round}");
        let lost = results[l].as_ref().expect_err("loser");
        let e = lost
            .api()
            .unwrap_or_else(|| panic!("round {round}: {lost}"));
        assert_eq!(
            (e.status, e.code.as_str()),
            (409, "already_claimed"),
            "round {round}: {e}"
        );
        assert_eq!(
            e.holder(),
            Some(authors[w]),
            "round {round}: the loser is told the winner"
        );
        assert_eq!(e.token(), Some(1), "round {round}");
    }
    eprintln!("wins through worker A / B: {wins:?}; Intents per shard: {spread:?}");
    // Every round committed one proposal and one claim, in one log.
    let head = ca.health().expect("health").log_head;
    if shards == 1 {
        assert_eq!(head, 400);
    } else {
        // Shard 0's log (spec/shards.md, "The API over N shards"): a proposal and a
        // claim of each of its Intents.
        assert_eq!(head, 2 * u64::from(spread[0]));
        assert!(spread.iter().all(|&k| k > 0), "{spread:?}");
    }
    assert_eq!(cb.health().expect("health").log_head, head);
    // B has no coordinator of its own: with A stopped, B cannot reach one.
    drop(a);
    let r = raw(&b.url, "GET", "/v1/health", b"", &[]);
    assert_eq!(r.status, 500, "{}", String::from_utf8_lossy(&r.body));
    b.stop();
}

fn error_code(r: &Raw) -> String {
    let v: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
    v["error"]["code"].as_str().unwrap_or_default().to_owned()
}

/// A coordinator commit that fails part-way (injected inside its storage transaction)
/// leaves nothing visible: no record, no state, no log entry. The record content that
/// the Worker wrote to KV before the commit point is harmless: content-addressed, it
/// makes no Intent claimable, and the same proposal commits later as new.
#[test]
#[ignore = "needs the built Worker and wrangler (scripts/test runs it)"]
fn a_commit_failing_part_way_leaves_nothing_visible() {
    let state = tempfile::tempdir().expect("tempdir");
    let dev = WranglerDev::start(Build::Test, state.path());
    let c = client(&dev);
    let (alice, bob) = (key(), key());
    let topic = format!("worker/faults/t{}", &alice.author().to_string()[..12]);
    let intent = builders::propose(alice.key(), &topic, json!({"n": 1}), &[]).expect("intent");
    let head = c.health().expect("health").log_head;
    // The proposal commits two ops (record marker, Intent state) and one log entry:
    // fail before the first op, between the two, and after the log entry.
    for fail_after in ["0", "1", "2"] {
        let r = post_json(
            &dev.url,
            "/v1/intents",
            &intent.to_json(),
            &[("x-nexus-test-fail-commit-after", fail_after)],
        );
        assert_eq!(
            (r.status, error_code(&r).as_str()),
            (500, "storage"),
            "{fail_after}"
        );
        assert_eq!(r.metrics["commits"], 0, "{:?}", r.metrics);
        assert_eq!(
            r.metrics["kv_writes"], 1,
            "the record content only: {:?}",
            r.metrics
        );
        assert_eq!(c.health().expect("health").log_head, head, "{fail_after}");
        let e = c
            .record(&intent.hash().to_string())
            .expect_err("not committed");
        assert_eq!(
            e.error_code(),
            Some(ErrorCode::NotFound),
            "{fail_after}: {e}"
        );
        let claim = builders::claim(bob.key(), &dep(&dev), intent.hash(), 30_000).expect("claim");
        let e = c.claim(&claim).expect_err("not claimable");
        assert_eq!(
            e.error_code(),
            Some(ErrorCode::NotFound),
            "{fail_after}: {e}"
        );
        let listed = c
            .intents(&nexus_client::http::IntentQuery {
                topic: Some(topic.clone()),
                ..Default::default()
            })
            .expect("intents");
        assert!(listed.intents.is_empty(), "{fail_after}: {listed:?}");
    }
    let created = c.submit(&intent).expect("propose without a fault");
    assert_eq!((created.duplicate, created.seq), (false, Some(head + 1)));

    // A resolving Fact whose commit fails part-way leaves the claim as it was.
    let lease = c
        .claim(&builders::claim(bob.key(), &dep(&dev), intent.hash(), 60_000).expect("claim"))
        .expect("claim");
    let fact = builders::fact(
        bob.key(),
        &topic,
        json!({"answer": 42}),
        &[intent.hash()],
        Some((intent.hash(), lease.token)),
    )
    .expect("fact");
    let r = post_json(
        &dev.url,
        "/v1/facts",
        &fact.to_json(),
        &[("x-nexus-test-fail-commit-after", "1")],
    );
    assert_eq!((r.status, error_code(&r).as_str()), (500, "storage"));
    let e = c
        .record(&fact.hash().to_string())
        .expect_err("fact not committed");
    assert_eq!(e.error_code(), Some(ErrorCode::NotFound));
    let claimed = c
        .intents(&nexus_client::http::IntentQuery {
            state: Some("claimed".into()),
            topic: Some(topic.clone()),
            ..Default::default()
        })
        .expect("intents");
    assert_eq!(claimed.intents.len(), 1, "{claimed:?}");
    assert_eq!(c.submit(&fact).expect("resolve").seq, Some(head + 3));
}

/// A commit that comes without its index entries (as from a Worker of an earlier
/// version during a deploy; simulated by a test fault) is indexed by the coordinator
/// from its commit log, and the commits after it still list.
#[test]
#[ignore = "needs the built Worker and wrangler (scripts/test runs it)"]
fn a_commit_without_its_index_entries_is_indexed_from_the_commit_log() {
    let state = tempfile::tempdir().expect("tempdir");
    let dev = WranglerDev::start_with(
        "wrangler.toml",
        Build::Test,
        state.path(),
        // Long enough for the "not indexed yet" check below even on a loaded machine.
        &[("NEXUS_INDEX_REPAIR_DELAY_MS", "8000")],
    );
    let c = client(&dev);
    let alice = key();
    let topic = format!("worker/repair/t{}", &alice.author().to_string()[..12]);
    let fact = builders::fact(alice.key(), &topic, json!({"n": 1}), &[], None).expect("fact");
    let r = post_json(
        &dev.url,
        "/v1/facts",
        &fact.to_json(),
        &[("x-nexus-test-drop-index", "1")],
    );
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(
        (r.metrics["commits"], r.metrics["kv_writes"]),
        (1, 1),
        "committed without its index entries: {:?}",
        r.metrics
    );
    let query = nexus_client::http::FactQuery {
        topic: Some(topic.clone()),
        ..Default::default()
    };
    // Committed (the record is there) but not indexed yet.
    assert_eq!(
        c.record(&fact.hash().to_string()).expect("record").record,
        fact
    );
    assert!(c.facts(&query).expect("facts").facts.is_empty());
    // A commit that carries its entries is listed at once, also while the index is
    // behind the log.
    let second = builders::fact(alice.key(), &topic, json!({"n": 2}), &[], None).expect("fact");
    let r = post_json(&dev.url, "/v1/facts", &second.to_json(), &[]);
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(c.facts(&query).expect("facts").facts, vec![second.clone()]);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let listed = c.facts(&query).expect("facts").facts;
        if listed == vec![fact.clone(), second.clone()] {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the commit was not indexed from the log: {listed:?}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    // Also by time, without a topic.
    let all = c
        .facts(&nexus_client::http::FactQuery::default())
        .expect("facts");
    assert!(all.facts.contains(&fact));
}

/// A Worker executes writes on the states it cached; the commit checks every state the
/// write read. A deny Hint committed through another Worker (another isolate) after
/// this one cached the active Hints must still stop a proposal here: the stale read
/// fails the commit's check, and the proposal is refused on the current Hints.
#[test]
#[ignore = "needs the built Worker and wrangler (scripts/test runs it)"]
fn a_stale_cache_never_admits_what_the_coordinator_forbids() {
    let state = tempfile::tempdir().expect("tempdir");
    let a = WranglerDev::start(Build::Deploy, state.path());
    let b = WranglerDev::start_with("wrangler.peer.toml", Build::Deploy, state.path(), &[]);
    let (alice, carol) = (key(), key());
    let topic = format!("worker/stale/t{}", &alice.author().to_string()[..12]);
    // A caches the (empty) active Hints with a first proposal.
    let first = builders::propose(alice.key(), &format!("{topic}/a"), json!(1), &[]).expect("a");
    let r = post_json(&a.url, "/v1/intents", &first.to_json(), &[]);
    assert_eq!(r.status, 201);
    // B commits a deny Hint over the topic, valid for 5 minutes.
    let commit_deny = |glob: String, reason: &str| {
        let selector = builders::selector(Some(&glob), None).expect("selector");
        let (now, until) = (now_ms(), Some(now_ms() + 300_000));
        let hint = builders::hint_at(
            carol.key(),
            selector,
            Effect::Deny,
            reason,
            None,
            until,
            now,
        )
        .expect("deny");
        let r = post_json(&b.url, "/v1/hints", &hint.to_json(), &[]);
        assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
        hint
    };
    let deny = commit_deny(format!("{topic}/**"), "worker test: stale caches");
    // A proposes under the topic: refused, naming the Hint.
    let second = builders::propose(alice.key(), &format!("{topic}/b"), json!(2), &[]).expect("b");
    let r = post_json(&a.url, "/v1/intents", &second.to_json(), &[]);
    let body: Value = serde_json::from_slice(&r.body).expect("json");
    assert_eq!(
        (r.status, &body["error"]["code"]),
        (403, &json!("inadmissible")),
        "{body}"
    );
    assert_eq!(body["error"]["hint"], json!(deny.hash()), "{body}");
    assert_eq!(r.metrics["commits"], 0, "{:?}", r.metrics);
    assert!(
        r.metrics["conflicts"] >= 1,
        "the stale read was caught: {:?}",
        r.metrics
    );
    let e = client(&a)
        .record(&second.hash().to_string())
        .expect_err("not committed");
    assert_eq!(e.error_code(), Some(ErrorCode::NotFound));

    // B commits another Hint, elsewhere: A's cached Hints are stale again. A proposal
    // they do not deny commits after one conflict, and its retry does not write the
    // record to KV a second time (KV refuses a second write to a key within a second).
    commit_deny(format!("{topic}-elsewhere/**"), "worker test: another Hint");
    let third = builders::propose(alice.key(), &format!("{topic}-ok/c"), json!(3), &[]).expect("c");
    let retried = post_json(&a.url, "/v1/intents", &third.to_json(), &[]);
    assert_eq!(
        retried.status,
        201,
        "{}",
        String::from_utf8_lossy(&retried.body)
    );
    assert_eq!(retried.metrics["commits"], 1, "{:?}", retried.metrics);
    assert!(retried.metrics["conflicts"] >= 1, "{:?}", retried.metrics);
    let fourth =
        builders::propose(alice.key(), &format!("{topic}-ok/d"), json!(4), &[]).expect("d");
    let direct = post_json(&a.url, "/v1/intents", &fourth.to_json(), &[]);
    assert_eq!(direct.status, 201);
    assert_eq!(direct.metrics["conflicts"], 0, "{:?}", direct.metrics);
    assert_eq!(
        retried.metrics["kv_writes"], direct.metrics["kv_writes"],
        "the same writes with and without a retry: {:?} vs {:?}",
        retried.metrics, direct.metrics
    );
}

/// KV reaches other locations only within about a minute: a Worker there may find a
/// record committed at the coordinator while its KV has no content for it yet. The
/// record's R2 copy answers then (simulated: the test build's KV answers every record
/// as absent).
#[test]
#[ignore = "needs the built Worker and wrangler (scripts/test runs it)"]
fn records_kv_has_not_got_yet_are_read_from_r2() {
    let state = tempfile::tempdir().expect("tempdir");
    let dev = WranglerDev::start(Build::Test, state.path());
    let (alice, bob) = (key(), key());
    let intent =
        builders::propose(alice.key(), "worker/lag", json!({"n": 1}), &[]).expect("intent");
    let created = post_json(&dev.url, "/v1/intents", &intent.to_json(), &[]);
    assert_eq!(created.status, 201);
    assert_eq!(created.metrics["r2_writes"], 1, "{:?}", created.metrics);
    let lag = [("x-nexus-test-kv-misses-records", "1")];

    let target = format!("/v1/records/{}", intent.hash());
    let read = raw(&dev.url, "GET", &target, b"", &lag);
    assert_eq!(read.status, 200, "{}", String::from_utf8_lossy(&read.body));
    let body: Value = serde_json::from_slice(&read.body).expect("json");
    assert_eq!(body["record"]["hash"], json!(intent.hash()));
    assert_eq!(read.metrics["r2_reads"], 1, "{:?}", read.metrics);

    let claim = builders::claim(bob.key(), &dep(&dev), intent.hash(), 30_000).expect("claim");
    let target = format!("/v1/intents/{}/claim", intent.hash());
    let claimed = post_json(&dev.url, &target, &claim.to_json(), &lag);
    assert_eq!(
        claimed.status,
        200,
        "{}",
        String::from_utf8_lossy(&claimed.body)
    );
    assert!(claimed.metrics["r2_reads"] >= 1, "{:?}", claimed.metrics);
}

/// Hint authority and withdrawal on the Worker (the native server's scenario,
/// `conformance::hints`): with `NEXUS_OPERATORS` naming a key, every other key is an
/// agent even on an open Worker: its deny and allow are refused, its priority Hint is
/// its own to retract, and only its author or the operator may retract a Hint.
#[test]
#[ignore = "needs the built Worker and wrangler (scripts/test runs it)"]
fn hint_authority_and_retraction_hold_on_the_worker() {
    let state = tempfile::tempdir().expect("tempdir");
    let (operator, agent, other) = (key(), key(), key());
    let operators = operator.author().to_string();
    let dev = WranglerDev::start_with(
        "wrangler.toml",
        Build::Deploy,
        state.path(),
        &[("NEXUS_OPERATORS", &operators)],
    );
    conformance::hints::authority_and_retract(&dev.url, operator.key(), agent.key(), other.key());
    // The retractions are in the log and replay.
    let mut export = Vec::new();
    client(&dev).export(1, &mut export).expect("export");
    let options = nexus_client::VerifyOptions {
        replay: true,
        ..Default::default()
    };
    let report = nexus_client::verify_export_with(export.as_slice(), &options, |_| {})
        .expect("the log replays");
    assert_eq!(report.retractions, 3);
}

/// Percent-encodes a query value (every byte but the unreserved ones).
fn encode_query(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The Fact hashes and `next` cursor of one `GET /v1/facts` page, and its costs.
fn facts_page(dev: &WranglerDev, query: &str) -> (Vec<String>, Option<String>, Raw) {
    let r = raw(&dev.url, "GET", &format!("/v1/facts?{query}"), b"", &[]);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let body: Value = serde_json::from_slice(&r.body).expect("json");
    let hashes = body["facts"]
        .as_array()
        .expect("facts")
        .iter()
        .map(|f| {
            let rec: nexus_core::Record =
                nexus_core::Record::from_json(f.to_string().as_bytes(), &Default::default())
                    .expect("record");
            rec.hash().to_string()
        })
        .collect();
    let next = body["next"].as_str().map(str::to_owned);
    (hashes, next, r)
}

/// Issue 16, scenario 6: a listing starts at its cursor. The index is kept by the
/// coordinator, so every page — the first, one deep behind a cursor, one from a late
/// `since` — costs one coordinator call and no KV list call, however deep it starts
/// (Workers KV lists only from the start of a prefix: a cursor past the 100,000th
/// entry would cost 100 list calls), and a Fact shows in its listing as soon as it
/// is committed.
#[test]
#[ignore = "needs the built Worker and wrangler (scripts/test runs it)"]
fn listings_start_at_their_cursor_in_one_coordinator_call() {
    let state = tempfile::tempdir().expect("tempdir");
    let dev = WranglerDev::start(Build::Deploy, state.path());
    let alice = key();
    let topic = format!("worker/cursor/t{}", &alice.author().to_string()[..12]);
    let mut posted = Vec::new();
    for i in 0..24 {
        let fact = builders::fact(alice.key(), &topic, json!({"n": i}), &[], None).expect("fact");
        let r = post_json(&dev.url, "/v1/facts", &fact.to_json(), &[]);
        assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
        // The index entries travel in the commit: the record is the only KV write.
        assert_eq!(
            (r.metrics["kv_writes"], r.metrics["do_calls"]),
            (1, 1),
            "{:?}",
            r.metrics
        );
        // Listed as soon as committed (here: the newest of its topic since its time).
        let since = fact.content().time();
        let (listed, _, _) = facts_page(
            &dev,
            &format!("topic={}&since={since}", encode_query(&topic)),
        );
        assert!(
            listed.contains(&fact.hash().to_string()),
            "fact {i} is committed but not listed: {listed:?}"
        );
        posted.push(fact);
    }
    let mut expected: Vec<(u64, String)> = posted
        .iter()
        .map(|f| (f.content().time(), f.hash().to_string()))
        .collect();
    expected.sort();
    let expected: Vec<String> = expected.into_iter().map(|(_, h)| h).collect();

    // Page by page, one Fact a page: every page costs the same, however deep.
    let mut walked = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut query = format!("topic={}&limit=1", encode_query(&topic));
        if let Some(c) = &cursor {
            query.push_str(&format!("&cursor={}", encode_query(c)));
        }
        let (hashes, next, r) = facts_page(&dev, &query);
        let m = &r.metrics;
        assert_eq!(
            (m["kv_lists"], m["do_calls"]),
            (0, 1),
            "page {} ({query}): {m:?}",
            walked.len()
        );
        assert!(m["kv_reads"] <= 1, "one bulk get of the records: {m:?}");
        walked.extend(hashes);
        match next {
            Some(n) => cursor = Some(n),
            None => break,
        }
        assert!(walked.len() <= posted.len(), "the walk does not end");
    }
    assert_eq!(walked, expected);

    // From a late `since`, by topic and over every topic (the time index).
    let late = posted[20].content().time();
    for query in [
        format!("topic={}&since={late}", encode_query(&topic)),
        format!("since={late}&limit=500"),
    ] {
        let (hashes, _, r) = facts_page(&dev, &query);
        assert_eq!(
            (r.metrics["kv_lists"], r.metrics["do_calls"]),
            (0, 1),
            "{query}: {:?}",
            r.metrics
        );
        for h in &expected[20..] {
            assert!(hashes.contains(h), "{query}: {h} missing from {hashes:?}");
        }
        assert!(
            !hashes.contains(&expected[0]),
            "{query}: listed a Fact older than since"
        );
    }
}

/// `GET /v1/events` on the Worker: the backlog in order, then entries as they commit,
/// and `Last-Event-ID` resumes right after it (spec/api.md, "Live events").
#[test]
#[ignore = "needs the built Worker and wrangler (scripts/test runs it)"]
fn the_event_stream_sends_the_backlog_then_each_commit_and_resumes() {
    let state = tempfile::tempdir().expect("tempdir");
    let dev = WranglerDev::start(Build::Deploy, state.path());
    let c = client(&dev);
    let alice = key();
    let topic = format!("worker/events/t{}", &alice.author().to_string()[..12]);
    for n in 0..3 {
        let i = builders::propose(alice.key(), &topic, json!({"n": n}), &[]).expect("intent");
        c.submit_intent(&i).expect("propose");
    }
    let mut stream = c.events(1, None).expect("stream");
    let seqs: Vec<u64> = stream
        .by_ref()
        .take(3)
        .map(|e| e.expect("entry")["seq"].as_u64().expect("seq"))
        .collect();
    assert_eq!(seqs, vec![1, 2, 3]);
    let live = builders::propose(alice.key(), &topic, json!({"n": 3}), &[]).expect("intent");
    c.submit_intent(&live).expect("propose");
    let e = stream.next().expect("an entry").expect("ok");
    assert_eq!(e["seq"], 4);
    assert_eq!(e["record"]["hash"], live.hash().to_string());

    // Last-Event-ID overrides `from`.
    let agent = agent(Duration::from_secs(30));
    let mut resp = agent
        .get(&format!("{}/v1/events?from=1", dev.url))
        .header("last-event-id", "2")
        .call()
        .expect("events");
    assert_eq!(resp.status(), 200);
    let mut reader = std::io::BufReader::new(resp.body_mut().as_reader());
    let mut line = String::new();
    let first_id = loop {
        line.clear();
        std::io::BufRead::read_line(&mut reader, &mut line).expect("line");
        if let Some(id) = line.trim_end().strip_prefix("id: ") {
            break id.parse::<u64>().expect("id");
        }
    };
    assert_eq!(first_id, 3);
    // Bad input is refused before the stream starts.
    let e = c.events(1, Some("a//b")).expect_err("bad topic");
    assert_eq!(e.error_code(), Some(ErrorCode::BadRequest), "{e}");
}

/// The next `n` event ids (`seq`s) of an SSE body.
fn sse_ids(r: &mut impl std::io::BufRead, n: usize) -> Vec<u64> {
    let mut ids = Vec::with_capacity(n);
    let mut line = String::new();
    while ids.len() < n {
        line.clear();
        let read = r.read_line(&mut line).expect("read the stream");
        assert!(read > 0, "the stream ended after {ids:?}");
        if let Some(id) = line.trim_end().strip_prefix("id: ") {
            ids.push(id.parse().expect("id"));
        }
    }
    ids
}

/// `GET /v1/events?from=1`, with `Last-Event-ID: last` when given: the body, unread.
fn open_events(url: &str, last: Option<u64>) -> impl std::io::BufRead {
    let agent = agent(Duration::from_secs(60));
    let mut req = agent.get(&format!("{url}/v1/events?from=1"));
    if let Some(last) = last {
        req = req.header("last-event-id", last.to_string());
    }
    let resp = req.call().expect("events");
    assert_eq!(resp.status(), 200);
    std::io::BufReader::new(resp.into_body().into_reader())
}

/// A reader that drops its connection every few entries while a writer keeps
/// committing, and comes back with `Last-Event-ID`, gets every entry exactly once, in
/// order (issue 13: tested on both hosts; the native one is in
/// crates/nexus/tests/events.rs).
#[test]
#[ignore = "needs the built Worker and wrangler (scripts/test runs it)"]
fn a_reader_reconnecting_with_last_event_id_gets_every_entry_once_in_order() {
    const N: u64 = 40;
    let state = tempfile::tempdir().expect("tempdir");
    let dev = WranglerDev::start(Build::Deploy, state.path());
    let c = client(&dev);
    let writer = std::thread::spawn(move || {
        let alice = key();
        for n in 0..N {
            let i = builders::propose(alice.key(), "worker/resume", json!({"n": n}), &[])
                .expect("intent");
            c.submit_intent(&i).expect("propose");
            std::thread::sleep(Duration::from_millis(25));
        }
    });
    let mut got: Vec<u64> = Vec::new();
    let mut connections = 0;
    while (got.len() as u64) < N {
        let mut body = open_events(&dev.url, got.last().copied());
        connections += 1;
        let take = 7.min(N as usize - got.len());
        got.extend(sse_ids(&mut body, take));
        drop(body); // mid-stream: the writer goes on meanwhile
        std::thread::sleep(Duration::from_millis(150));
    }
    writer.join().expect("writer");
    assert_eq!(got, (1..=N).collect::<Vec<_>>());
    assert!(connections >= 6, "{connections} connections");
}

/// A reader that opens the stream and takes nothing blocks no writer; the Worker
/// reads the log for it only as the connection takes bytes (a `ReadableStream`
/// pulled on demand), so it stops far short of the head instead of buffering the
/// log; once the reader reads, it gets every entry in order.
#[test]
#[ignore = "needs the built Worker and wrangler (scripts/test runs it)"]
fn a_stalled_reader_blocks_no_writer_and_the_worker_stops_reading_for_it() {
    const N: u64 = 300;
    let state = tempfile::tempdir().expect("tempdir");
    let dev = WranglerDev::start(Build::Test, state.path());
    let c = client(&dev);
    let alice = key();
    let mut stalled = open_events(&dev.url, None);
    // Large bodies (18 MB in all), so that the connection's buffers fill long before
    // the end.
    let pad = "x".repeat(60_000);
    let started = std::time::Instant::now();
    for n in 0..N {
        let i = builders::propose(
            alice.key(),
            "worker/stalled",
            json!({"n": n, "pad": pad}),
            &[],
        )
        .expect("intent");
        c.submit_intent(&i).expect("propose");
    }
    eprintln!(
        "{N} writes of 60 kB with a stalled reader: {:?}",
        started.elapsed()
    );
    std::thread::sleep(Duration::from_secs(3)); // time for the stream to read what it may
    let hook = raw(&dev.url, "GET", "/__test/events", b"", &[]);
    assert_eq!(hook.status, 200);
    let hook: Value = serde_json::from_slice(&hook.body).expect("json");
    let read = hook["read_upto"].as_u64().expect("read_upto");
    eprintln!("the stalled stream read the log up to seq {read} of {N}");
    assert!(
        read < N,
        "the Worker read the whole log for a reader that took nothing"
    );
    assert_eq!(
        sse_ids(&mut stalled, N as usize),
        (1..=N).collect::<Vec<_>>()
    );
}

/// The Worker serves the provenance explorer at `/` with the same bytes and headers as
/// `nexus serve` (both from nexus-explorer), publicly, while the API stays the API.
#[test]
#[ignore = "needs the built Worker and wrangler (scripts/test runs it)"]
fn serves_the_explorer_at_the_root() {
    let state = tempfile::tempdir().expect("tempdir");
    let dev = WranglerDev::start(Build::Deploy, state.path());
    for path in ["/", "/explorer/app.js", "/explorer/app.css"] {
        let want = nexus_explorer::asset("GET", path).expect("an asset");
        let r = raw(&dev.url, "GET", path, b"", &[]);
        assert_eq!(r.status, 200, "{path}");
        let header = |name: &str| r.headers.get(name).map(String::as_str);
        assert_eq!(header("content-type"), Some(want.content_type), "{path}");
        assert_eq!(
            header("content-security-policy"),
            Some(nexus_explorer::CONTENT_SECURITY_POLICY),
            "{path}"
        );
        assert_eq!(r.body, want.body, "{path}: the bytes nexus serve serves");
    }
    let r = raw(&dev.url, "GET", "/explorer/nothing", b"", &[]);
    assert_eq!(r.status, 404);
    assert_eq!(error_code(&r), "no_route");
}

/// `nexus demo --server` on the Worker: the swarm runs through the same API under the
/// demo's contract (the governance object denies the cursed regions), the summary is
/// the one the embedded host gives for the seed, and the log verifies with `--replay`.
#[test]
#[ignore = "needs the built Worker and wrangler (scripts/test runs it)"]
fn the_demo_swarm_runs_on_the_worker_and_its_summary_is_the_seeds() {
    let state = tempfile::tempdir().expect("tempdir");
    let dev = WranglerDev::start(Build::Deploy, state.path());
    let run = || -> Value {
        let args = [
            "demo", "--agents", "4", "--work", "0ms", "--lease", "1s", "--seed", "5", "--json",
            "--server", &dev.url,
        ];
        serde_json::from_str(&nexus_worker_test::nexus(&args)).expect("one JSON document")
    };
    let first = run();
    assert_eq!(first["verified"], true, "{first}");
    assert_eq!(first["governed"], true, "{first}");
    assert!(
        !first["denied_regions"].as_array().expect("list").is_empty(),
        "{first}"
    );
    let embedded: Value = serde_json::from_str(&nexus_worker_test::nexus(&[
        "demo", "--agents", "4", "--work", "0ms", "--lease", "1s", "--seed", "5", "--json",
    ]))
    .expect("one JSON document");
    assert_eq!(first, embedded, "the host does not change the summary");
    assert_eq!(
        first["crashed"].as_array().map(Vec::len),
        Some(2),
        "{first}"
    );
    assert!(
        first["search_intents_resolved"].as_u64() > Some(0),
        "{first}"
    );
    // A second run on the same Worker (a topic of its own) has the same summary.
    assert_eq!(run(), first, "the summary is a function of the seed");
    let out = nexus_worker_test::nexus(&["verify", "--replay", &dev.url]);
    assert!(out.starts_with("ok: "), "{out}");
}

/// The coordinator's log head and flush cursor, and the archive and snapshot
/// manifests in the bucket (the test build's `/__test/archive`).
fn archive_status(dev: &WranglerDev) -> Value {
    let r = raw(&dev.url, "GET", "/__test/archive", b"", &[]);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    serde_json::from_slice(&r.body).expect("json")
}

/// Waits (polling, at most two minutes) until the alarm archived the whole log.
fn wait_archived(dev: &WranglerDev) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let s = archive_status(dev);
        if s["cursor"]["seq"] == s["head"] && s["cursor"]["pending"].is_null() {
            return s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the log was not archived: {s}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Runs `nexus verify PATH` (an export file or an archive directory); it must pass.
fn nexus_verify(path: &std::path::Path) {
    let out = std::process::Command::new(nexus_bin())
        .arg("verify")
        .arg(path)
        .output()
        .expect("run nexus verify");
    assert!(
        out.status.success(),
        "nexus verify {}: {}{}",
        path.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The export (the whole log as `nexus export` writes it) and the checkpoint answer.
fn export_and_checkpoint(dev: &WranglerDev) -> (Vec<u8>, Raw) {
    let mut export = Vec::new();
    client(dev).export(1, &mut export).expect("export");
    (export, raw(&dev.url, "GET", "/v1/checkpoint", b"", &[]))
}

/// The Worker's cold tier (spec/archive.md, "On the Worker"): with small windows the
/// coordinator's alarm archives a few hundred records and actions to R2 and writes
/// snapshots, retrying the steps that are made to fail; its storage wiped, it restores itself before serving (the first request
/// waits for it), and again through `POST /admin/restore`: the export is
/// byte-identical, `nexus verify` passes on it, and claims go on at the next seq while
/// the archive chain continues.
#[test]
#[ignore = "needs the built Worker and wrangler (scripts/test runs it)"]
fn a_wiped_coordinator_restores_itself_from_its_archives() {
    const ADMIN: &str = "admin-t0ken";
    let state = tempfile::tempdir().expect("tempdir");
    let dev = WranglerDev::start_with(
        "wrangler.toml",
        Build::Test,
        state.path(),
        &[
            ("NEXUS_FLUSH_ENTRIES", "40"),
            ("NEXUS_FLUSH_SECS", "0.5"),
            ("NEXUS_SNAPSHOT_EVERY", "3"),
            ("NEXUS_ADMIN_TOKENS", ADMIN),
            // The first six archive steps fail, twice at each point of a window
            // (fixed; archive written; manifest written): the alarm retries each.
            ("NEXUS_TEST_ARCHIVE_FAULTS", "6"),
        ],
    );
    let c = client(&dev);
    let d = dep(&dev);
    let (alice, bob) = (key(), key());
    let mut first = None;
    for n in 0..100u64 {
        let i = builders::propose(alice.key(), "worker/cold", json!({"n": n}), &[]).expect("i");
        c.submit_intent(&i).expect("propose");
        first.get_or_insert_with(|| i.clone());
        let lease = c
            .claim(&builders::claim(bob.key(), &d, i.hash(), 600_000).expect("claim"))
            .expect("claim");
        if n % 2 == 0 {
            let done = builders::fact(
                bob.key(),
                "worker/cold/done",
                json!({"n": n}),
                &[i.hash()],
                Some((i.hash(), lease.token)),
            )
            .expect("fact");
            c.submit_fact(&done).expect("resolve");
        }
        if n % 3 == 0 {
            let f = builders::fact(alice.key(), "worker/cold/seen", json!({"n": n}), &[], None)
                .expect("fact");
            c.submit_fact(&f).expect("fact");
        }
    }
    let archived = wait_archived(&dev);
    let head = archived["head"].as_u64().expect("head");
    assert_eq!(head, 100 + 100 + 50 + 34);
    let windows = archived["cursor"]["windows"].as_u64().expect("windows");
    assert!(windows >= 8, "at most 40 entries a window: {archived}");
    // One archive and one manifest per window: the retries wrote no other.
    for blobs in ["manifests", "archives"] {
        assert_eq!(
            archived[blobs].as_array().map(Vec::len),
            Some(windows as usize),
            "{archived}"
        );
    }
    assert!(
        archived["snapshots"]
            .as_array()
            .is_some_and(|s| !s.is_empty()),
        "a snapshot every third window: {archived}"
    );
    let (export, checkpoint) = export_and_checkpoint(&dev);
    let first = first.expect("an Intent");

    // The bucket's archive is the native one: `nexus verify DIR` passes on a copy.
    let r = raw(&dev.url, "GET", "/__test/archive?blobs", b"", &[]);
    assert_eq!(r.status, 200);
    let copy: Value = serde_json::from_slice(&r.body).expect("json");
    let dir = state.path().join("archive-copy");
    for (k, v) in copy["blobs"].as_object().expect("blobs") {
        let path = dir.join(k);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        let bytes = hex::decode(v.as_str().expect("hex")).expect("hex bytes");
        std::fs::write(&path, bytes).expect("write blob");
    }
    nexus_verify(&dir);

    // The admin route needs its token, and a coordinator that holds a log refuses it.
    let bad = post_json(
        &dev.url,
        "/admin/restore",
        b"",
        &[("authorization", "Bearer nope")],
    );
    assert_eq!(bad.status, 401);
    let auth = format!("Bearer {ADMIN}");
    let busy = post_json(&dev.url, "/admin/restore", b"", &[("authorization", &auth)]);
    assert_eq!(busy.status, 409, "{}", String::from_utf8_lossy(&busy.body));

    // Wiped, the coordinator restores itself on the first request.
    assert_eq!(raw(&dev.url, "POST", "/__test/wipe", b"", &[]).status, 200);
    assert_eq!(c.health().expect("health").log_head, head, "restored first");
    let (again, checkpoint_again) = export_and_checkpoint(&dev);
    assert!(
        again == export,
        "the export is byte-identical after the restore"
    );
    assert_eq!(checkpoint_again.status, checkpoint.status);
    if checkpoint.status == 200 {
        assert_eq!(
            checkpoint_again.body, checkpoint.body,
            "the same checkpoint"
        );
    }

    // Wiped again, with the bucket's record copies, restored through the admin route,
    // from a snapshot plus replay.
    let sample = format!("/v1/records/{}", first.hash());
    let before = raw(&dev.url, "GET", &sample, b"", &[]);
    assert_eq!(before.status, 200);
    let wipe = raw(&dev.url, "POST", "/__test/wipe?records", b"", &[]);
    assert_eq!(wipe.status, 200);
    let r = post_json(&dev.url, "/admin/restore", b"", &[("authorization", &auth)]);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let report: Value = serde_json::from_slice(&r.body).expect("json");
    assert_eq!(report["restored"], true, "{report}");
    assert_eq!(report["log_head"].as_u64(), Some(head), "{report}");
    assert_eq!(report["windows"].as_u64(), Some(windows), "{report}");
    let snap = report["snapshot"].as_u64().expect("a snapshot was used");
    assert_eq!(report["replayed"].as_u64(), Some(head - snap), "{report}");
    let (again, _) = export_and_checkpoint(&dev);
    assert!(again == export, "byte-identical after the second restore");
    // The records the bucket lost were written back: read from R2 (KV answering none).
    let lag = [("x-nexus-test-kv-misses-records", "1")];
    let from_r2 = raw(&dev.url, "GET", &sample, b"", &lag);
    assert_eq!(
        from_r2.status,
        200,
        "{}",
        String::from_utf8_lossy(&from_r2.body)
    );
    assert_eq!(from_r2.metrics["r2_reads"], 1, "{:?}", from_r2.metrics);
    assert_eq!(from_r2.body, before.body);

    // `nexus verify` passes on the export.
    let file = state.path().join("export.jsonl");
    std::fs::write(&file, &export).expect("write export");
    nexus_verify(&file);

    // Claims go on at the next seq, and the archive chain continues after the restore.
    let i = builders::propose(alice.key(), "worker/cold", json!({"n": "after"}), &[]).expect("i");
    assert_eq!(c.submit_intent(&i).expect("propose").seq, Some(head + 1));
    let lease = c
        .claim(&builders::claim(bob.key(), &d, i.hash(), 600_000).expect("claim"))
        .expect("claim after the restore");
    let done = builders::fact(
        bob.key(),
        "worker/cold/done",
        json!({"n": "after"}),
        &[i.hash()],
        Some((i.hash(), lease.token)),
    )
    .expect("fact");
    assert_eq!(c.submit_fact(&done).expect("resolve").seq, Some(head + 3));
    let after = wait_archived(&dev);
    assert_eq!(after["head"].as_u64(), Some(head + 3));
    assert_eq!(
        after["cursor"]["windows"].as_u64(),
        Some(windows + 1),
        "{after}"
    );
}

/// `r`, which must have answered `status`.
fn answered(r: Raw, status: u16) -> Raw {
    assert_eq!(r.status, status, "{}", String::from_utf8_lossy(&r.body));
    r
}

/// `GET target`.
fn get(url: &str, target: &str) -> Raw {
    raw(url, "GET", target, b"", &[])
}

/// That no shard holds `record`: `GET /v1/records/{hash}` answers 404.
fn assert_not_stored(url: &str, record: &nexus_core::Record) {
    let got = get(url, &format!("/v1/records/{}", record.hash()));
    assert_eq!(got.status, 404, "{}", String::from_utf8_lossy(&got.body));
}

/// The first record `make(k)` (k = 0, 1, …) whose hash falls on `shard` of `n`.
fn on_shard(shard: usize, n: u64, make: impl Fn(u64) -> nexus_core::Record) -> nexus_core::Record {
    (0u64..)
        .map(make)
        .find(|r| shard_of(&r.hash(), n) == shard)
        .expect("some k")
}

/// An Intent by `author` under `topic` whose hash falls on `shard` of `n`.
fn intent_on(author: &KeyFile, topic: &str, shard: usize, n: u64) -> nexus_core::Record {
    on_shard(shard, n, |k| {
        builders::propose(author.key(), topic, json!({ "k": k }), &[]).expect("intent")
    })
}

/// A Fact by `author` resolving `intent` (token 1) whose hash falls on `shard` of `n`.
fn fact_on(
    author: &KeyFile,
    intent: &nexus_core::Record,
    shard: usize,
    n: u64,
) -> nexus_core::Record {
    on_shard(shard, n, |k| {
        let resolves = Some((intent.hash(), 1));
        builders::fact(
            author.key(),
            "worker/shards",
            json!({ "k": k }),
            &[intent.hash()],
            resolves,
        )
        .expect("fact")
    })
}

fn intent_state(url: &str, intent: &nexus_core::Record) -> (Value, Raw) {
    let r = get(url, &format!("/v1/intents/{}", intent.hash()));
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let v: Value = serde_json::from_slice(&r.body).expect("json");
    (v["state"].clone(), r)
}

#[test]
#[ignore = "needs the built Worker and wrangler (scripts/test runs it)"]
fn over_four_shards_commits_take_their_calls_and_batches_are_atomic() {
    let (_state, dev) = over_four_shards(Build::Deploy, &[]);
    let (alice, bob) = (key(), key());
    // A claim touches its Intent's shard only: one call. A Fact resolving an Intent of
    // another shard: prewrite, commit point, release.
    let intent = intent_on(&alice, "worker/shards", 1, 4);
    let created = answered(
        post_json(&dev.url, "/v1/intents", &intent.to_json(), &[]),
        201,
    );
    let claim = builders::claim(bob.key(), &dep(&dev), intent.hash(), 30_000).expect("claim");
    let target = format!("/v1/intents/{}/claim", intent.hash());
    let claimed = answered(post_json(&dev.url, &target, &claim.to_json(), &[]), 200);
    let fact = fact_on(&bob, &intent, 3, 4);
    let resolved = answered(post_json(&dev.url, "/v1/facts", &fact.to_json(), &[]), 201);
    eprintln!(
        "coordinator calls: propose {}, claim {}, cross-shard resolve {}",
        created.metrics["do_calls"], claimed.metrics["do_calls"], resolved.metrics["do_calls"]
    );
    assert_eq!(claimed.metrics["do_calls"], 1, "{:?}", claimed.metrics);
    assert_eq!(resolved.metrics["do_calls"], 3, "{:?}", resolved.metrics);
    let (state_now, _) = intent_state(&dev.url, &intent);
    assert_eq!(state_now["state"], "resolved", "{state_now}");
    assert_eq!(state_now["fact"], fact.hash().to_string(), "{state_now}");

    // A batch over three shards: a claim (shard 0), the Fact resolving it (shard 2), a
    // follow-up that derives from the Fact (shard 1).
    let second = intent_on(&alice, "worker/shards", 0, 4);
    assert_eq!(
        post_json(&dev.url, "/v1/intents", &second.to_json(), &[]).status,
        201
    );
    let claim = builders::claim(bob.key(), &dep(&dev), second.hash(), 30_000).expect("claim");
    let fact = fact_on(&bob, &second, 2, 4);
    let next = on_shard(1, 4, |k| {
        builders::propose(
            bob.key(),
            "worker/shards/next",
            json!({ "k": k }),
            &[fact.hash()],
        )
        .expect("follow-up")
    });
    let batch = json!({"items": [
        {"action": claim.to_value()},
        {"record": fact.to_value()},
        {"record": next.to_value()},
    ]});
    let done = answered(
        post_json(
            &dev.url,
            "/v1/batch",
            &serde_json::to_vec(&batch).expect("json"),
            &[],
        ),
        200,
    );
    eprintln!(
        "coordinator calls: batch over 3 shards {}",
        done.metrics["do_calls"]
    );
    let (state_now, _) = intent_state(&dev.url, &second);
    assert_eq!(state_now["state"], "resolved", "{state_now}");
    let follow = get(&dev.url, &format!("/v1/records/{}", next.hash()));
    assert_eq!(
        follow.status,
        200,
        "{}",
        String::from_utf8_lossy(&follow.body)
    );

    // A failing batch stores nothing on any shard: a new Intent (shard 3) and a Fact
    // resolving an Intent already resolved (item 1).
    let fresh = intent_on(&alice, "worker/shards/fresh", 3, 4);
    let late = fact_on(&alice, &second, 2, 4);
    let batch = json!({"items": [{"record": fresh.to_value()}, {"record": late.to_value()}]});
    answered(
        post_json(
            &dev.url,
            "/v1/batch",
            &serde_json::to_vec(&batch).expect("json"),
            &[],
        ),
        409,
    );
    for r in [&fresh, &late] {
        assert_not_stored(&dev.url, r);
    }
    let listed = get(&dev.url, "/v1/intents?topic=worker/shards/fresh");
    let listed: Value = serde_json::from_slice(&listed.body).expect("json");
    assert_eq!(listed["intents"], json!([]), "{listed}");
    // Listings fan out over the shards and merge: both first Intents, in one page.
    let page = get(&dev.url, "/v1/intents?topic=worker/shards");
    let page: Value = serde_json::from_slice(&page.body).expect("json");
    let hashes: Vec<&str> = page["intents"]
        .as_array()
        .expect("intents")
        .iter()
        .filter_map(|i| i["record"]["hash"].as_str())
        .collect();
    for r in [&intent, &second] {
        assert!(hashes.contains(&r.hash().to_string().as_str()), "{page}");
    }
}

/// Shard `shard`'s cross-shard parts (test hook).
fn parts(url: &str, shard: usize) -> Vec<Value> {
    let r = get(url, &format!("/__test/parts?shard={shard}"));
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let v: Value = serde_json::from_slice(&r.body).expect("json");
    v["parts"].as_array().cloned().unwrap_or_default()
}

#[test]
#[ignore = "needs the built Worker and wrangler (scripts/test runs it)"]
fn over_four_shards_a_commit_stalled_after_its_prewrite_is_resolved() {
    let (_state, dev) = over_four_shards(Build::Test, &[("NEXUS_LOCK_TTL_MS", "1000")]);
    let (alice, bob) = (key(), key());
    let stall = [("x-nexus-fault", "stall-after-prewrite")];
    for (round, by_alarm) in [(0, true), (1, false)] {
        // The Intent on shard 1, the Fact on shard 2: the prewrite locks the keys of
        // the secondary, the commit point on the primary is never reached.
        let intent = intent_on(&alice, &format!("worker/stall/{round}"), 1, 4);
        assert_eq!(
            post_json(&dev.url, "/v1/intents", &intent.to_json(), &[]).status,
            201
        );
        let claim = builders::claim(bob.key(), &dep(&dev), intent.hash(), 60_000).expect("claim");
        let target = format!("/v1/intents/{}/claim", intent.hash());
        assert_eq!(
            post_json(&dev.url, &target, &claim.to_json(), &[]).status,
            200
        );
        let fact = fact_on(&bob, &intent, 2, 4);
        answered(
            post_json(&dev.url, "/v1/facts", &fact.to_json(), &stall),
            500,
        );
        // The prepared part stays on the secondary (the primary is the participant
        // a hash of the commit picks: either shard).
        let held: Vec<usize> = [1, 2]
            .into_iter()
            .filter(|&s| !parts(&dev.url, s).is_empty())
            .collect();
        assert_eq!(held.len(), 1, "one prepared part: {held:?}");
        let secondary = held[0];
        // A young lock holds nothing up for readers: the last committed state.
        let (now, _) = intent_state(&dev.url, &intent);
        assert_eq!(now["state"], "claimed", "{now}");
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        if by_alarm {
            // Nobody touches the keys: the shard's alarm settles the part.
            while !parts(&dev.url, secondary).is_empty() {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the alarm never swept"
                );
                std::thread::sleep(Duration::from_millis(200));
            }
        } else {
            // Past the TTL a reader of a locked key resolves it (unless the alarm
            // came first): the Intent's keys, or the Fact's marker.
            std::thread::sleep(Duration::from_millis(1_100));
            let (now, r) = intent_state(&dev.url, &intent);
            assert_eq!(now["state"], "claimed", "{now}");
            let record = get(&dev.url, &format!("/v1/records/{}", fact.hash()));
            eprintln!(
                "reads after the TTL (part on shard {secondary}): {:?}, {:?}",
                r.metrics, record.metrics
            );
            assert!(parts(&dev.url, secondary).is_empty());
        }
        // Rolled back: the Fact is not stored, the Intent still Bob's; sent again, it
        // resolves the Intent.
        assert_not_stored(&dev.url, &fact);
        answered(post_json(&dev.url, "/v1/facts", &fact.to_json(), &[]), 201);
        let (now, _) = intent_state(&dev.url, &intent);
        assert_eq!(now["state"], "resolved", "{now}");
    }
}

/// Fail closed (spec/contract.md, "On the Worker"): while the governance object's
/// catch-ups fail (the test build's `/__test/governance?fail=1`), a committed Fact's
/// Hints are not committed, so proposals and claims answer `503 governance_pending`
/// and `/v1/health` answers `503 degraded` (`reason: governance`), as on the native
/// host; other writes and reads go on. Once catch-ups succeed again, the next gated
/// write repairs the Hints first: the Fact's deny Hint is in force and the claim of an
/// Intent it denies is refused with it, health is ok again.
#[test]
#[ignore = "needs the built Worker and wrangler (scripts/test runs it)"]
fn governance_fails_closed_on_the_worker_and_recovers() {
    let state = tempfile::tempdir().expect("tempdir");
    let dev = WranglerDev::start(Build::Test, state.path());
    let c = client(&dev);
    let agent = key();
    let k = agent.key();
    let tag = format!("failclosed/t{}", &agent.author().to_string()[..8]);
    let topic = format!("{tag}/chem");
    let lead = conformance::contract::lead();
    let source = conformance::contract::budget(&tag, 1, &lead.author().to_string());
    let (status, body) = conformance::contract::deploy(&c, &source, None);
    assert_eq!(status, 201, "{body}");
    let waiting = builders::propose(k, &format!("{topic}/later"), json!({}), &[]).expect("intent");
    c.submit(&waiting).expect("admitted");

    let fail = |on: bool| {
        let r = raw(
            &dev.url,
            "GET",
            &format!("/__test/governance?fail={}", u8::from(on)),
            b"",
            &[],
        );
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    };
    fail(true);
    // The Fact commits (its answer is 2xx); its Hints do not.
    conformance::contract::failed_run(&c, k, &topic, 1);
    assert!(c.hints().expect("hints").is_empty(), "no Hint committed");
    let claim = builders::claim(k, &dep(&dev), waiting.hash(), 30_000).expect("claim");
    let e = c.claim(&claim).expect_err("fails closed");
    assert_eq!(
        (e.status(), e.code()),
        (Some(503), Some("governance_pending")),
        "{e}"
    );
    let more = builders::propose(k, &format!("{tag}/other"), json!({}), &[]).expect("intent");
    let e = c.submit(&more).expect_err("fails closed");
    assert_eq!(e.code(), Some("governance_pending"), "{e}");
    let health = raw(&dev.url, "GET", "/v1/health", b"", &[]);
    assert_eq!(health.status, 503);
    let h: Value = serde_json::from_slice(&health.body).expect("json");
    assert_eq!(
        (&h["status"], &h["reason"]),
        (&json!("degraded"), &json!("governance")),
        "{h}"
    );
    assert!(
        h["message"]
            .as_str()
            .is_some_and(|m| m.contains("test hook")),
        "{h}"
    );
    // Reads and ungated writes go on.
    let fact = builders::fact(k, &format!("{tag}/note"), json!({}), &[], None).expect("fact");
    c.submit(&fact).expect("a Fact is not gated");

    fail(false);
    // The claim's gate retries the catch-up, which commits the deny Hint first.
    let e = c.claim(&claim).expect_err("denied by the repaired Hint");
    assert_eq!(
        (e.status(), e.code()),
        (Some(403), Some("inadmissible")),
        "{e}"
    );
    assert_eq!(c.hints().expect("hints").len(), 1);
    assert_eq!(c.health().expect("health").status, "ok");
    c.submit(&more)
        .expect("admitted again (not under the denied topic)");
}
