//! The HTTP conformance suite of spec/api.md, parameterised by base URL: any host that
//! serves the v1 API (the native `nexus serve`, the Worker) must pass
//! [`run_conformance`]. It uses fresh random keys and topics under a random prefix, so
//! it can run against a server that already holds data; it assumes no other client
//! writes while it runs (it checks that every error leaves the store unchanged).
//!
//! It needs `nexus-client`, `nexus-core`, `nexus-tlog` and `serde_json` only; the host
//! must have a log key (a Worker its `NEXUS_LOG_KEY`).

#![allow(dead_code)]

pub mod batch;
pub mod contract;
pub mod hints;
pub mod tlog;

use std::time::Duration;

use nexus_client::builders::{self, now_ms};
use nexus_client::http::{FactQuery, Health, IntentQuery};
use nexus_client::{ApiError, Client, ClientError, KeyFile};
use nexus_core::{Effect, FihHash, IntentState, Kind, Record};
use serde_json::{Value, json};

/// What must not change when a request fails: the health answer and the log's head
/// entry.
#[derive(Debug, PartialEq)]
pub struct Snapshot {
    /// `GET /v1/health`.
    pub health: Health,
    /// `head` of `GET /v1/log`.
    pub log_head: u64,
    /// The newest entry of `GET /v1/log`.
    pub last: Vec<Value>,
}

/// The store's observable state.
pub fn snapshot(c: &Client) -> Snapshot {
    let health = c.health().expect("GET /v1/health");
    assert_eq!(health.status, "ok");
    let page = c.log(health.log_head.max(1), Some(1)).expect("GET /v1/log");
    Snapshot {
        health,
        log_head: page.head,
        last: page.entries,
    }
}

/// Runs `request`, expects the API error `status`/`code`, and that the store is
/// unchanged; answers the error for further checks.
pub fn expect_error<T: std::fmt::Debug>(
    c: &Client,
    what: &str,
    status: u16,
    code: &str,
    request: impl FnOnce() -> Result<T, ClientError>,
) -> ApiError {
    let before = snapshot(c);
    let err = match request() {
        Ok(v) => panic!("{what}: expected {status} {code}, got success {v:?}"),
        Err(e) => e,
    };
    let api = err
        .api()
        .unwrap_or_else(|| panic!("{what}: expected an API error, got {err}"))
        .clone();
    assert_eq!(
        (api.status, api.code.as_str()),
        (status, code),
        "{what}: {api}"
    );
    assert!(!api.message.is_empty(), "{what}: empty message");
    assert_eq!(snapshot(c), before, "{what}: the store changed");
    api
}

fn key() -> KeyFile {
    KeyFile::generate().expect("key")
}

thread_local! {
    /// Whether the server has one commit log (every host but a Worker over N > 1
    /// coordinator shards, whose logs, `seq` numbers and checkpoints are per shard:
    /// spec/shards.md, "The API over N shards"). Without one, the cases that check
    /// `seq`, `GET /v1/log` and the transparency log are skipped.
    static ONE_LOG: std::cell::Cell<bool> = const { std::cell::Cell::new(true) };
}

/// Whether the server under test has one commit log (see [`run_conformance_over`]).
pub fn one_log() -> bool {
    ONE_LOG.with(std::cell::Cell::get)
}

/// Runs the whole suite against the server at `base_url`.
pub fn run_conformance(base_url: &str) {
    run_conformance_over(base_url, true);
}

/// Runs the suite against the server at `base_url`; `one_log: false` (a Worker over N
/// shards) skips the cases of the one commit log's order (`seq` numbers, `GET
/// /v1/log`, checkpoints and proofs), which hold per shard there, and contract
/// governance, which reads that log.
pub fn run_conformance_over(base_url: &str, one_log: bool) {
    ONE_LOG.with(|o| o.set(one_log));
    let c = Client::new(base_url)
        .expect("base URL")
        .with_timeout(Duration::from_secs(20));
    let (alice, bob, carol) = (key(), key(), key());
    // A topic prefix of our own: the server may hold other data.
    let tag = format!("conformance/t{}", &alice.author().to_string()[..12]);
    let before = one_log.then(|| tlog::checkpoint(&c));
    let lc = lifecycle(&c, &tag, &alice, &bob, &carol);
    errors(&c, &tag, &alice, &bob, &carol, &lc);
    batch::check(&c, &tag, &alice, &bob, &carol);
    // Contract governance reads the one log (over N shards it would see shard 0's).
    if one_log {
        contract::governance(&c, &tag, &carol);
    }
    if let Some(before) = before {
        tlog::check(&c, &before, &tlog::checkpoint(&c));
    }
}

/// What the lifecycle left behind, for the error cases.
pub struct Lifecycle {
    /// Resolved by Bob's Fact with token 1.
    pub resolved: Record,
    /// The resolving Fact.
    pub fact: Record,
    /// Withdrawn by Alice.
    pub withdrawn: Record,
}

fn lifecycle(c: &Client, tag: &str, alice: &KeyFile, bob: &KeyFile, carol: &KeyFile) -> Lifecycle {
    let start = snapshot(c).log_head;
    let topic = format!("{tag}/chem");

    // Propose: 201 with the next seq; a resubmission answers 200 duplicate, unchanged.
    let intent =
        builders::propose(alice.key(), &topic, json!({"compound": "NaCl"}), &[]).expect("intent");
    let (status, body) = c
        .post_json("/v1/intents", &intent.to_json())
        .expect("propose");
    assert_eq!(status, 201);
    let seq = if one_log() {
        json!(start + 1)
    } else {
        body["seq"].clone()
    };
    assert_eq!(
        body,
        json!({"hash": intent.hash(), "kind": "intent", "duplicate": false, "seq": seq})
    );
    let before = snapshot(c);
    let (status, body) = c
        .post_json("/v1/intents", &intent.to_json())
        .expect("resubmit");
    assert_eq!((status, &body["duplicate"]), (200, &json!(true)), "{body}");
    assert_eq!(snapshot(c), before, "a duplicate changes nothing");

    // Bob claims with his own key: token 1, a 30 s lease on the server's clock.
    let t0 = now_ms();
    let lease = c
        .claim(
            &builders::claim(
                bob.key(),
                &c.deployment().expect("deployment"),
                intent.hash(),
                30_000,
            )
            .expect("claim"),
        )
        .expect("claimed");
    assert_eq!(
        (lease.intent, lease.token, lease.takeover),
        (intent.hash(), 1, false)
    );
    assert!(
        lease.lease_until >= t0 + 25_000 && lease.lease_until <= now_ms() + 35_000,
        "lease_until {} vs now {t0}",
        lease.lease_until
    );
    let claimed = c
        .intents(&IntentQuery {
            state: Some("claimed".into()),
            topic: Some(topic.clone()),
            ..IntentQuery::default()
        })
        .expect("claimed list");
    assert_eq!(claimed.intents.len(), 1);
    assert_eq!(
        claimed.intents[0].state,
        IntentState::Claimed {
            holder: bob.author(),
            lease_until: lease.lease_until,
            token: 1
        }
    );

    // Renew: same token, later lease.
    let renewed = c
        .renew(
            &builders::renew(
                bob.key(),
                &c.deployment().expect("deployment"),
                intent.hash(),
                1,
                60_000,
            )
            .expect("renew"),
        )
        .expect("renewed");
    assert_eq!((renewed.token, renewed.takeover), (1, false));
    assert!(renewed.lease_until > lease.lease_until);

    // Resolve with a Fact carrying the token, in one commit.
    let fact = builders::fact(
        bob.key(),
        &topic,
        json!({"g_per_l": 360}),
        &[intent.hash()],
        Some((intent.hash(), 1)),
    )
    .expect("fact");
    let (status, body) = c.post_json("/v1/facts", &fact.to_json()).expect("fact");
    assert_eq!(status, 201);
    assert_eq!(body["kind"], "fact");
    if one_log() {
        assert_eq!(body["seq"], start + 4);
    }

    // Reads: the record by prefix, provenance, listings.
    let info = c
        .record(&intent.hash().to_string()[..8])
        .expect("record by 8-hex prefix");
    assert_eq!((info.kind, &info.record), (Kind::Intent, &intent));
    assert!(info.parents.is_empty());
    let info = c.record(&fact.hash().to_string()).expect("fact record");
    assert_eq!((info.kind, info.parents), (Kind::Fact, vec![intent.hash()]));
    let prov = c
        .provenance(&fact.hash().to_string(), None)
        .expect("provenance");
    assert_eq!(prov.root, fact.hash());
    assert_eq!(prov.records, vec![fact.clone(), intent.clone()]);
    let resolved = c
        .intents(&IntentQuery {
            state: Some("resolved".into()),
            topic: Some(tag.to_owned()),
            ..IntentQuery::default()
        })
        .expect("resolved list");
    assert_eq!(resolved.intents.len(), 1);
    assert_eq!(resolved.intents[0].record, intent);
    assert_eq!(
        resolved.intents[0].state,
        IntentState::Resolved {
            fact: fact.hash(),
            by: bob.author(),
            token: 1
        }
    );
    // One Intent by prefix: as the listing has it; a Fact is no Intent; nothing is 404.
    let one = c
        .intent(&intent.hash().to_string()[..8])
        .expect("one Intent");
    assert_eq!(
        (&one.record, &one.state, one.priority),
        (
            &resolved.intents[0].record,
            &resolved.intents[0].state,
            resolved.intents[0].priority
        )
    );
    expect_error(c, "GET /v1/intents/{fact}", 422, "wrong_kind", || {
        c.intent(&fact.hash().to_string())
    });
    expect_error(c, "GET /v1/intents/{none}", 404, "not_found", || {
        c.intent(&"0".repeat(64))
    });
    let facts = c
        .facts(&FactQuery {
            topic: Some(tag.to_owned()),
            ..FactQuery::default()
        })
        .expect("facts");
    assert_eq!(facts.facts, vec![fact.clone()]);

    // The log: exactly these four commits, in order (one log only).
    if one_log() {
        let log = c.log(start + 1, None).expect("log");
        assert_eq!(log.head, start + 4);
        let seqs: Vec<u64> = log
            .entries
            .iter()
            .map(|e| e["seq"].as_u64().expect("seq"))
            .collect();
        assert_eq!(seqs, vec![start + 1, start + 2, start + 3, start + 4]);
        assert_eq!(log.entries[0]["record"]["hash"], json!(intent.hash()));
        assert_eq!(log.entries[1]["action"]["kind"], "claim");
        assert_eq!(log.entries[2]["action"]["kind"], "renew");
        assert_eq!(log.entries[3]["record"]["hash"], json!(fact.hash()));
        for e in &log.entries {
            assert!(e["at"].as_u64().expect("at") >= t0 - 60_000);
        }
    }

    // A second Intent, withdrawn by its proposer.
    let withdrawn = builders::propose(
        alice.key(),
        &format!("{tag}/other"),
        json!(2),
        &[fact.hash()],
    )
    .expect("other");
    c.submit(&withdrawn).expect("propose other");
    let w = c
        .withdraw(
            &builders::withdraw(
                alice.key(),
                &c.deployment().expect("deployment"),
                withdrawn.hash(),
            )
            .expect("withdraw"),
        )
        .expect("withdrawn");
    assert_eq!(
        (w.intent, w.state.as_str()),
        (withdrawn.hash(), "withdrawn")
    );

    // A priority Hint ranks the Intents it selects.
    let sel = builders::selector(Some(&format!("{tag}/prio/**")), None).expect("selector");
    let hint = builders::hint_at(
        carol.key(),
        sel,
        Effect::Priority(5),
        "conformance: prio first",
        None,
        Some(now_ms() + 300_000),
        now_ms(),
    )
    .expect("hint");
    assert_eq!(c.submit(&hint).expect("hint").kind, Kind::Hint);
    assert!(
        c.hints()
            .expect("hints")
            .iter()
            .any(|h| h.hash == hint.hash())
    );
    let prio =
        builders::propose(alice.key(), &format!("{tag}/prio/a"), json!(3), &[]).expect("prio");
    c.submit(&prio).expect("propose prio");
    let avail = c
        .intents(&IntentQuery {
            state: Some("available".into()),
            topic: Some(format!("{tag}/prio")),
            ..IntentQuery::default()
        })
        .expect("available");
    assert_eq!(avail.intents.len(), 1);
    assert_eq!(
        (&avail.intents[0].record, avail.intents[0].priority),
        (&prio, 5)
    );

    Lifecycle {
        resolved: intent,
        fact,
        withdrawn,
    }
}

fn with_member(record: &Record, name: &str, value: Value) -> Vec<u8> {
    let mut v = record.to_value();
    v[name] = value;
    serde_json::to_vec(&v).expect("json")
}

fn errors(c: &Client, tag: &str, alice: &KeyFile, bob: &KeyFile, carol: &KeyFile, lc: &Lifecycle) {
    let fresh = |topic: &str| {
        builders::propose(alice.key(), &format!("{tag}/{topic}"), json!({"n": 1}), &[])
            .expect("intent")
    };
    let ghost = FihHash::of_canonical(b"conformance: no such record");

    // 400: the body is not JSON.
    expect_error(c, "malformed JSON", 400, "malformed_json", || {
        c.post_json("/v1/intents", b"{\"kind\":")
    });
    // 400: the stated hash is not the content's.
    let intent = fresh("bad-hash");
    let other = fresh("bad-hash-2");
    expect_error(c, "hash mismatch", 400, "hash_mismatch", || {
        c.post_json(
            "/v1/intents",
            &with_member(&intent, "hash", json!(other.hash())),
        )
    });
    // 401: the signature is another record's.
    expect_error(c, "bad signature", 401, "bad_signature", || {
        c.post_json(
            "/v1/intents",
            &with_member(&intent, "sig", json!(other.sig().to_string())),
        )
    });
    // 400: ids that are not hashes or are too short.
    expect_error(c, "bad id", 400, "bad_request", || c.record("not-a-hash"));
    expect_error(c, "short id", 400, "bad_request", || c.record("abc123"));
    // 404: unknown record; claim of an unknown Intent.
    expect_error(c, "unknown record", 404, "not_found", || {
        c.record(&ghost.to_string())
    });
    expect_error(c, "claim unknown", 404, "not_found", || {
        c.claim(
            &builders::claim(
                bob.key(),
                &c.deployment().expect("deployment"),
                ghost,
                30_000,
            )
            .expect("claim"),
        )
    });
    // 422: unknown parent, named.
    let orphan =
        builders::fact(bob.key(), &format!("{tag}/x"), json!(1), &[ghost], None).expect("orphan");
    let e = expect_error(c, "unknown parent", 422, "unknown_parent", || {
        c.submit(&orphan)
    });
    assert_eq!(e.parent(), Some(ghost));
    // 422: a Fact sent as an Intent; a claim on a Fact.
    expect_error(c, "fact as intent", 422, "wrong_kind", || {
        c.submit_intent(&lc.fact)
    });
    expect_error(c, "claim a fact", 422, "wrong_kind", || {
        c.claim(
            &builders::claim(
                bob.key(),
                &c.deployment().expect("deployment"),
                lc.fact.hash(),
                30_000,
            )
            .expect("claim"),
        )
    });
    // 413: a request body over the limit; a record body over the limit.
    expect_error(c, "oversize request", 413, "body_too_large", || {
        c.post_json("/v1/facts", &vec![b' '; 256 * 1024])
    });
    let mut big = fresh("big").to_value();
    big["body"] = json!("x".repeat(80 * 1024));
    expect_error(c, "oversize record body", 413, "body_too_large", || {
        c.post_json("/v1/intents", &serde_json::to_vec(&big).expect("json"))
    });

    // 403: a deny Hint makes proposing and claiming inadmissible, naming the Hint.
    let late = fresh("late/x");
    c.submit(&late).expect("propose before the deny hint");
    let deny = builders::hint_at(
        carol.key(),
        builders::selector(Some(&format!("{tag}/late/**")), None).expect("selector"),
        Effect::Deny,
        "conformance: no late work",
        None,
        Some(now_ms() + 300_000),
        now_ms(),
    )
    .expect("deny");
    c.submit(&deny).expect("deny hint");
    let e = expect_error(c, "inadmissible proposal", 403, "inadmissible", || {
        c.submit(&fresh("late/y"))
    });
    assert_eq!(e.detail("hint"), Some(&json!(deny.hash())));
    assert_eq!(
        e.detail("reason"),
        Some(&json!("conformance: no late work"))
    );
    let e = expect_error(c, "inadmissible claim", 403, "inadmissible", || {
        c.claim(
            &builders::claim(
                bob.key(),
                &c.deployment().expect("deployment"),
                late.hash(),
                30_000,
            )
            .expect("claim"),
        )
    });
    assert_eq!(e.detail("hint"), Some(&json!(deny.hash())));

    // 409: a lost compare-and-swap names the holder, lease and token.
    let held = fresh("held");
    c.submit(&held).expect("propose held");
    let replayed = fresh("replayed");
    c.submit(&replayed).expect("propose replayed");
    let lease = c
        .claim(
            &builders::claim(
                bob.key(),
                &c.deployment().expect("deployment"),
                held.hash(),
                30_000,
            )
            .expect("claim"),
        )
        .expect("bob claims");
    let e = expect_error(c, "lost claim", 409, "already_claimed", || {
        c.claim(
            &builders::claim(
                carol.key(),
                &c.deployment().expect("deployment"),
                held.hash(),
                30_000,
            )
            .expect("claim"),
        )
    });
    assert_eq!(e.holder(), Some(bob.author()));
    assert_eq!(e.lease_until(), Some(lease.lease_until));
    assert_eq!(e.token(), Some(1));
    // 409: a stale token can neither renew nor resolve.
    expect_error(c, "stale renew", 409, "stale_token", || {
        c.renew(
            &builders::renew(
                bob.key(),
                &c.deployment().expect("deployment"),
                held.hash(),
                7,
                30_000,
            )
            .expect("renew"),
        )
    });
    let stale = builders::fact(
        bob.key(),
        &format!("{tag}/held"),
        json!(0),
        &[held.hash()],
        Some((held.hash(), 7)),
    )
    .expect("fact");
    expect_error(c, "stale resolve", 409, "stale_token", || c.submit(&stale));
    // 409: only the holder renews.
    expect_error(c, "renew by another", 409, "not_holder", || {
        c.renew(
            &builders::renew(
                carol.key(),
                &c.deployment().expect("deployment"),
                held.hash(),
                1,
                30_000,
            )
            .expect("renew"),
        )
    });
    // 403: only the proposer withdraws.
    expect_error(c, "withdraw by another", 403, "not_proposer", || {
        c.withdraw(
            &builders::withdraw(
                carol.key(),
                &c.deployment().expect("deployment"),
                held.hash(),
            )
            .expect("withdraw"),
        )
    });
    // 409: an action takes effect at most once — the same signed claim or renewal
    // again (anyone may copy it from the log) is a replay.
    let first = builders::claim(
        bob.key(),
        &c.deployment().expect("deployment"),
        replayed.hash(),
        30_000,
    )
    .expect("claim");
    let l = c.claim(&first).expect("first claim");
    let e = expect_error(c, "replayed claim", 409, "replayed", || c.claim(&first));
    assert_eq!(e.detail("action"), Some(&json!(first.hash())));
    let renewal = builders::renew(
        bob.key(),
        &c.deployment().expect("deployment"),
        replayed.hash(),
        l.token,
        30_000,
    )
    .expect("renew");
    c.renew(&renewal).expect("renewal");
    expect_error(c, "replayed renewal", 409, "replayed", || c.renew(&renewal));
    // 403: an action signed for another deployment; 400: a version 1 action.
    let elsewhere: nexus_core::Deployment = "another-deployment".parse().expect("deployment");
    let e = expect_error(c, "wrong deployment", 403, "wrong_deployment", || {
        c.claim(&builders::claim(carol.key(), &elsewhere, replayed.hash(), 30_000).expect("claim"))
    });
    assert_eq!(e.detail("signed"), Some(&json!("another-deployment")));
    assert_eq!(
        e.detail("ours"),
        Some(&json!(c.deployment().expect("deployment").as_str()))
    );
    let v1 = nexus_core::ActionContent::Claim {
        intent: replayed.hash(),
        lease_ms: 30_000,
        author: carol.author(),
        deployment: None,
        time: now_ms(),
    };
    expect_error(c, "version 1 action", 400, "legacy_action", || {
        c.claim(&builders::sign_action(carol.key(), v1).expect("v1 claim"))
    });
    // 409: withdrawn and resolved Intents cannot be claimed.
    expect_error(c, "claim withdrawn", 409, "withdrawn", || {
        c.claim(
            &builders::claim(
                bob.key(),
                &c.deployment().expect("deployment"),
                lc.withdrawn.hash(),
                30_000,
            )
            .expect("claim"),
        )
    });
    expect_error(c, "claim resolved", 409, "already_resolved", || {
        c.claim(
            &builders::claim(
                carol.key(),
                &c.deployment().expect("deployment"),
                lc.resolved.hash(),
                30_000,
            )
            .expect("claim"),
        )
    });
    // 400: lease out of range; an action from the past; path and action disagree.
    let open = fresh("open");
    c.submit(&open).expect("propose open");
    expect_error(c, "lease too short", 400, "lease_out_of_range", || {
        c.claim(
            &builders::claim(
                bob.key(),
                &c.deployment().expect("deployment"),
                open.hash(),
                10,
            )
            .expect("claim"),
        )
    });
    expect_error(c, "clock skew", 400, "clock_skew", || {
        c.claim(
            &builders::claim_at(
                bob.key(),
                &c.deployment().expect("deployment"),
                open.hash(),
                30_000,
                now_ms() - 3_600_000,
            )
            .expect("claim"),
        )
    });
    let claim = builders::claim(
        bob.key(),
        &c.deployment().expect("deployment"),
        open.hash(),
        30_000,
    )
    .expect("claim");
    expect_error(c, "id mismatch", 400, "bad_request", || {
        c.post_json(
            &format!("/v1/intents/{}/claim", held.hash()),
            &claim.to_json(),
        )
    });
    // 400: bad query parameters.
    expect_error(c, "bad state", 400, "bad_request", || {
        c.get_json("/v1/intents?state=sleeping")
    });
    expect_error(c, "bad limit", 400, "bad_request", || {
        c.get_json("/v1/intents?limit=100000")
    });
    // 405 and 404 for requests that match no route.
    let e = expect_error(c, "GET a claim route", 405, "method_not_allowed", || {
        c.get_json(&format!("/v1/intents/{}/claim", open.hash()))
    });
    assert_eq!(e.detail("allow"), Some(&json!(["POST"])));
    expect_error(c, "POST health", 405, "method_not_allowed", || {
        c.post_json("/v1/health", b"{}")
    });
    expect_error(c, "no route", 404, "no_route", || {
        c.get_json("/v1/nothing/here")
    });

    // The claim that was refused for the mismatch still works at its own path.
    let ok = c.claim(&claim).expect("claim at its own path");
    assert_eq!(ok.token, 1);

    // Metrics count errors by code; the OpenAPI document is served.
    let metrics = c.metrics().expect("metrics");
    for code in [
        "already_claimed",
        "body_too_large",
        "bad_signature",
        "no_route",
    ] {
        assert!(
            metrics.contains(&format!("code=\"{code}\"")),
            "{code}: {metrics}"
        );
    }
    assert!(c.openapi().expect("openapi")["paths"].is_object());
}
