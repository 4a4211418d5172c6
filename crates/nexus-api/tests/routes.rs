//! Every route and error case through `Api::run_sync` on a `MemoryStore`.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use serde_json::json;

use nexus_api::{Api, ApiConfig, Request, Route};
use nexus_core::{Effect, FihHash, Limits};
use nexus_store::MemoryStore;

#[test]
fn full_lifecycle_propose_claim_renew_resolve_provenance_log() {
    let h = Harness::open();
    let (alice, bob) = (key(1), key(2));
    let i = intent(&alice, "chem/solubility", json!({"compound": "NaCl"}));
    let a = h.submit(&i);
    assert_eq!(a.status, 201, "{}", a.json);
    assert_eq!(
        a.json,
        json!({"hash": i.hash().to_string(), "kind": "intent", "duplicate": false, "seq": 1})
    );
    // Resubmission: 200, duplicate, nothing changes.
    let before = h.snapshot();
    let a = h.submit(&i);
    assert_eq!(a.status, 200);
    assert_eq!(a.json["duplicate"], true);
    assert_eq!(a.json["seq"], json!(null));
    assert_eq!(h.snapshot(), before);

    // Claim by prefix id, then renew.
    let c = claim_at(&bob, i.hash(), LEASE, NOW);
    let prefix = &i.hash().to_string()[..12];
    let a = h.post(&format!("/v1/intents/{prefix}/claim"), &c, NOW);
    assert_eq!(a.status, 200, "{}", a.json);
    assert_eq!(
        a.json,
        json!({"intent": i.hash().to_string(), "token": 1, "lease_until": NOW + LEASE, "takeover": false})
    );
    let a = h.act(
        &renew_at(&bob, i.hash(), 1, LEASE, NOW + 1_000),
        NOW + 1_000,
    );
    assert_eq!(a.status, 200, "{}", a.json);
    assert_eq!(a.json["lease_until"], NOW + 1_000 + LEASE);
    assert_eq!(a.json["takeover"], false);

    // Listing shows it claimed.
    let a = h.get("/v1/intents?state=claimed");
    assert_eq!(a.json["intents"].as_array().unwrap().len(), 1);
    assert_eq!(
        a.json["intents"][0]["state"]["holder"],
        bob.author().to_string()
    );
    assert_eq!(a.json["intents"][0]["record"]["hash"], i.hash().to_string());
    assert_eq!(a.json["next"], json!(null));

    // Resolve with a Fact carrying the token.
    let f = fact(
        &bob,
        "chem/solubility",
        json!({"g_per_l": 360}),
        vec![i.hash()],
        Some((i.hash(), 1)),
        NOW + 2_000,
    );
    let a = h.post("/v1/facts", &f, NOW + 2_000);
    assert_eq!(a.status, 201, "{}", a.json);
    assert_eq!(a.json["kind"], "fact");
    assert_eq!(a.json["seq"], 4);
    let a = h.get("/v1/intents?state=resolved");
    assert_eq!(a.json["intents"][0]["state"]["fact"], f.hash().to_string());

    // The record, its provenance and the log.
    let a = h.get(&format!("/v1/records/{}", f.hash()));
    assert_eq!(a.status, 200);
    assert_eq!(a.json["kind"], "fact");
    assert_eq!(a.json["parents"], json!([i.hash().to_string()]));
    assert_eq!(a.json["record"], f.to_value());
    let a = h.get(&format!("/v1/records/{}/provenance", f.hash()));
    assert_eq!(a.status, 200, "{}", a.json);
    assert_eq!(a.json["root"], f.hash().to_string());
    assert_eq!(a.json["records"], json!([f.to_value(), i.to_value()]));

    let a = h.get("/v1/log");
    assert_eq!(a.json["head"], 4);
    let entries = a.json["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 4);
    assert_eq!(
        entries[0],
        json!({"seq": 1, "at": NOW, "record": i.to_value()})
    );
    assert_eq!(entries[1]["action"], c.to_value());
    assert_eq!(entries[2]["action"]["kind"], "renew");
    assert_eq!(
        entries[3],
        json!({"seq": 4, "at": NOW + 2_000, "record": f.to_value()})
    );
    let a = h.get("/v1/log?from=3&limit=1");
    assert_eq!(a.json["entries"].as_array().unwrap().len(), 1);
    assert_eq!(a.json["entries"][0]["seq"], 3);

    let a = h.get("/v1/health");
    assert_eq!(
        a.json,
        json!({"status": "ok", "log_head": 4, "deployment": "test-deployment"})
    );
    let a = h.get("/v1/facts?topic=chem");
    assert_eq!(a.json, json!({"facts": [f.to_value()], "next": null}));

    // Commits are counted.
    assert_eq!(h.api.metrics().commits(), 4);
}

#[test]
fn withdraw_by_proposer_only() {
    let h = Harness::open();
    let (alice, bob) = (key(1), key(2));
    let i = intent(&alice, "a", json!(1));
    h.submit(&i);
    let a = h.expect_error(403, "not_proposer", |h| {
        h.act(&withdraw_at(&bob, i.hash(), NOW), NOW)
    });
    assert_eq!(a.json["error"]["proposer"], alice.author().to_string());
    let a = h.act(&withdraw_at(&alice, i.hash(), NOW), NOW);
    assert_eq!(a.status, 200);
    assert_eq!(
        a.json,
        json!({"intent": i.hash().to_string(), "state": "withdrawn"})
    );
    h.expect_error(409, "replayed", |h| {
        h.act(&withdraw_at(&alice, i.hash(), NOW), NOW)
    });
    h.expect_error(409, "withdrawn", |h| {
        h.act(&withdraw_at(&alice, i.hash(), NOW + 1), NOW)
    });
    h.expect_error(409, "withdrawn", |h| {
        h.act(&claim_at(&bob, i.hash(), LEASE, NOW), NOW)
    });
    let a = h.get("/v1/intents?state=withdrawn");
    assert_eq!(a.json["intents"].as_array().unwrap().len(), 1);
}

#[test]
fn two_agents_race_a_claim_the_second_is_told_the_holder() {
    let h = Harness::open();
    let (alice, bob, carol) = (key(1), key(2), key(3));
    let i = intent(&alice, "race", json!({}));
    h.submit(&i);
    let a = h.act(&claim_at(&bob, i.hash(), LEASE, NOW), NOW);
    assert_eq!(a.status, 200);
    let a = h.expect_error(409, "already_claimed", |h| {
        h.act(&claim_at(&carol, i.hash(), LEASE, NOW + 5), NOW + 5)
    });
    assert_eq!(a.json["error"]["holder"], bob.author().to_string());
    assert_eq!(a.json["error"]["lease_until"], NOW + LEASE);
    assert_eq!(a.json["error"]["token"], 1);
}

#[test]
fn racing_claims_on_threads_exactly_one_wins() {
    for round in 0..20u8 {
        let h = std::sync::Arc::new(Harness::open());
        let i = intent(&key(1), "race", json!({"round": round}));
        h.submit(&i);
        let agents: Vec<_> = (10..14u8).map(key).collect();
        let answers: Vec<_> = std::thread::scope(|s| {
            let handles: Vec<_> = agents
                .iter()
                .map(|k| {
                    let h = h.clone();
                    let c = claim_at(k, i.hash(), LEASE, NOW);
                    s.spawn(move || {
                        let a = h.act(&c, NOW);
                        (a.status, a.json)
                    })
                })
                .collect();
            handles.into_iter().map(|t| t.join().unwrap()).collect()
        });
        let winners: Vec<_> = answers.iter().filter(|(s, _)| *s == 200).collect();
        assert_eq!(winners.len(), 1, "{answers:?}");
        let holder =
            h.get("/v1/intents?state=claimed").json["intents"][0]["state"]["holder"].clone();
        for (status, json) in &answers {
            if *status != 200 {
                assert_eq!(*status, 409);
                assert_eq!(json["error"]["code"], "already_claimed");
                assert_eq!(json["error"]["holder"], holder);
            }
        }
    }
}

#[test]
fn takeover_after_lapse_fences_the_old_holder() {
    let h = Harness::open();
    let (alice, bob, carol) = (key(1), key(2), key(3));
    let i = intent(&alice, "t", json!({}));
    h.submit(&i);
    h.act(&claim_at(&bob, i.hash(), 1_000, NOW), NOW);
    let later = NOW + 2_000;
    // The lapsed claim lists as available.
    let a = h.get_at("/v1/intents?state=available", later);
    assert_eq!(a.json["intents"].as_array().unwrap().len(), 1);
    h.expect_error(409, "lease_expired", |h| {
        h.act(&renew_at(&bob, i.hash(), 1, LEASE, later), later)
    });
    let a = h.act(&claim_at(&carol, i.hash(), LEASE, later), later);
    assert_eq!(
        (a.json["token"].clone(), a.json["takeover"].clone()),
        (json!(2), json!(true))
    );
    h.expect_error(409, "not_holder", |h| {
        h.act(&renew_at(&bob, i.hash(), 1, LEASE, later), later)
    });
    h.expect_error(409, "stale_token", |h| {
        h.act(&renew_at(&carol, i.hash(), 1, LEASE, later), later)
    });
    let a = h.expect_error(409, "not_holder", |h| {
        let f = fact(&bob, "t", json!(0), vec![], Some((i.hash(), 1)), later);
        h.post("/v1/facts", &f, later)
    });
    assert_eq!(a.json["error"]["holder"], carol.author().to_string());
    let f = fact(&carol, "t", json!(1), vec![], Some((i.hash(), 2)), later);
    assert_eq!(h.post("/v1/facts", &f, later).status, 201);
    let a = h.expect_error(409, "already_resolved", |h| {
        h.act(&claim_at(&bob, i.hash(), LEASE, later), later)
    });
    assert_eq!(a.json["error"]["fact"], f.hash().to_string());
}

#[test]
fn lease_and_clock_checks() {
    let h = Harness::open();
    let i = intent(&key(1), "t", json!({}));
    h.submit(&i);
    let a = h.expect_error(400, "lease_out_of_range", |h| {
        h.act(&claim_at(&key(2), i.hash(), 10, NOW), NOW)
    });
    assert_eq!(a.json["error"]["min"], Limits::default().min_lease_ms);
    let a = h.expect_error(400, "clock_skew", |h| {
        h.act(&claim_at(&key(2), i.hash(), LEASE, NOW - 600_000), NOW)
    });
    assert_eq!(a.json["error"]["now"], NOW);
    h.expect_error(409, "not_holder", |h| {
        h.act(&renew_at(&key(2), i.hash(), 0, LEASE, NOW), NOW)
    });
}

#[test]
fn inadmissible_intents_name_the_hint() {
    let h = Harness::open();
    let deny = hint(&key(9), "secret/**", Effect::Deny, "off limits", vec![]);
    let a = h.submit(&deny);
    assert_eq!((a.status, a.json["kind"].clone()), (201, json!("hint")));
    let a = h.expect_error(403, "inadmissible", |h| {
        h.submit(&intent(&key(1), "secret/x", json!({})))
    });
    assert_eq!(a.json["error"]["hint"], deny.hash().to_string());
    assert_eq!(a.json["error"]["reason"], "off limits");
    let a = h.get("/v1/hints");
    assert_eq!(
        a.json,
        json!({"hints": [{"hash": deny.hash().to_string(), "hint": deny.to_value()}]})
    );
}

#[test]
fn priority_orders_a_page() {
    let h = Harness::open();
    let low = intent_at(&key(1), "p/low", json!(1), vec![], NOW);
    let high = intent_at(&key(1), "p/high", json!(2), vec![], NOW + 1);
    h.submit(&low);
    h.submit(&high);
    h.submit(&hint(
        &key(9),
        "p/high",
        Effect::Priority(5),
        "urgent",
        vec![],
    ));
    let a = h.get("/v1/intents?state=available&topic=p");
    let items = a.json["intents"].as_array().unwrap();
    assert_eq!(items[0]["record"]["hash"], high.hash().to_string());
    assert_eq!(items[0]["priority"], 5);
    assert_eq!(items[1]["priority"], 0);
    let a = h.get("/v1/intents?topic=p/low");
    assert_eq!(a.json["intents"].as_array().unwrap().len(), 1);
}

#[test]
fn record_errors_leave_the_store_unchanged() {
    let h = Harness::open();
    let alice = key(1);
    let i = intent(&alice, "a", json!({"x": 1}));
    h.submit(&i);

    h.expect_error(400, "malformed_json", |h| {
        h.raw("POST", "/v1/intents", b"{not json".to_vec(), NOW)
    });
    h.expect_error(400, "invalid_record", |h| {
        h.post("/v1/intents", &json!({"kind": "intent"}), NOW)
    });
    let mut v = intent(&alice, "a", json!({"x": 2})).to_value();
    v["body"] = json!({"x": 3});
    let a = h.expect_error(400, "hash_mismatch", |h| h.post("/v1/intents", &v, NOW));
    assert!(a.json["error"]["computed"].is_string());
    let mut v = intent(&alice, "a", json!({"x": 4})).to_value();
    v["sig"] = json!(key(2).sign(&FihHash::of_canonical(b"other")).to_string());
    h.expect_error(401, "bad_signature", |h| h.post("/v1/intents", &v, NOW));

    let missing = FihHash::of_canonical(b"nope");
    let orphan = intent_at(&alice, "a", json!({}), vec![missing], NOW);
    let a = h.expect_error(422, "unknown_parent", |h| h.submit(&orphan));
    assert_eq!(a.json["error"]["parent"], missing.to_string());

    let f = fact(&alice, "a", json!(1), vec![], None, NOW);
    let a = h.expect_error(422, "wrong_kind", |h| h.post("/v1/intents", &f, NOW));
    assert_eq!(a.json["error"]["expected"], "intent");
    h.expect_error(422, "wrong_kind", |h| h.post("/v1/hints", &i, NOW));
    // A Hint whose source names an Intent (not a Fact).
    h.expect_error(422, "wrong_kind", |h| {
        h.submit(&hint(&alice, "a", Effect::Deny, "r", vec![i.hash()]))
    });
    // A Fact resolving something that is not a claimed Intent.
    h.expect_error(409, "not_holder", |h| {
        h.submit(&fact(
            &alice,
            "a",
            json!(1),
            vec![],
            Some((i.hash(), 0)),
            NOW,
        ))
    });

    let many = Harness::with(ApiConfig {
        open: true,
        limits: Limits {
            max_parents: 1,
            ..Limits::default()
        },
        ..ApiConfig::default()
    });
    let two = intent_at(&alice, "a", json!({}), vec![missing, i.hash()], NOW);
    many.expect_error(400, "too_many_parents", |h| h.submit(&two));
}

#[test]
fn oversize_bodies_are_refused_with_413() {
    let h = Harness::with(ApiConfig {
        open: true,
        max_request_bytes: 1_000,
        ..ApiConfig::default()
    });
    let big = intent(&key(1), "a", json!({"pad": "x".repeat(2_000)}));
    let a = h.expect_error(413, "body_too_large", |h| h.submit(&big));
    assert_eq!(a.json["error"]["limit"], 1_000);
    // A host that refuses on the declared length alone answers the very same bytes.
    let size = big.to_json().len();
    assert_eq!(
        nexus_api::served_route("post", "/v1/intents"),
        Some(Route::ProposeIntent)
    );
    assert_eq!(
        nexus_api::body_too_large(size, 1_000).to_response().body,
        serde_json::to_vec(&a.json).unwrap()
    );
    assert_eq!(nexus_api::served_route("DELETE", "/v1/intents"), None);
    assert_eq!(nexus_api::served_route("POST", "/v1/nowhere"), None);
    // A record body over the record limit, within the request limit.
    let h = Harness::with(ApiConfig {
        open: true,
        limits: Limits {
            max_body_bytes: 100,
            ..Limits::default()
        },
        ..ApiConfig::default()
    });
    let rec = intent(&key(1), "a", json!({"pad": "x".repeat(200)}));
    h.expect_error(413, "body_too_large", |h| h.submit(&rec));
}

#[test]
fn allowlist_gates_writes_unless_open() {
    let (alice, mallory) = (key(1), key(66));
    let h = Harness::allowing(&[&alice]);
    let a = h.expect_error(403, "author_not_allowed", |h| {
        h.submit(&intent(&mallory, "a", json!({})))
    });
    assert_eq!(a.json["error"]["author"], mallory.author().to_string());
    let i = intent(&alice, "a", json!({}));
    assert_eq!(h.submit(&i).status, 201);
    h.expect_error(403, "author_not_allowed", |h| {
        h.act(&claim_at(&mallory, i.hash(), LEASE, NOW), NOW)
    });
    // Reads are not gated.
    assert_eq!(h.get("/v1/intents").status, 200);
    // Verification comes first: a bad signature is 401 even from an unknown author.
    let mut v = intent(&mallory, "a", json!({"y": 1})).to_value();
    v["sig"] = json!(mallory.sign(&FihHash::of_canonical(b"x")).to_string());
    h.expect_error(401, "bad_signature", |h| h.post("/v1/intents", &v, NOW));
    let open = Harness::open();
    assert_eq!(open.submit(&intent(&mallory, "a", json!({}))).status, 201);
}

#[test]
fn routes_methods_and_ids() {
    let h = Harness::open();
    let i = intent(&key(1), "a", json!({}));
    h.submit(&i);
    h.expect_error(404, "no_route", |h| h.get("/v1/nothing"));
    h.expect_error(404, "no_route", |h| h.get("/v1/intents/"));
    let a = h.expect_error(405, "method_not_allowed", |h| {
        h.raw("DELETE", "/v1/intents", vec![], NOW)
    });
    assert_eq!(a.json["error"]["allow"], json!(["GET", "POST"]));
    h.expect_error(405, "method_not_allowed", |h| {
        h.get(&format!("/v1/intents/{}/claim", i.hash()))
    });
    h.expect_error(405, "method_not_allowed", |h| {
        h.raw("POST", "/v1/health", vec![], NOW)
    });
    h.expect_error(400, "bad_request", |h| h.get("/v1/records/abc"));
    h.expect_error(400, "bad_request", |h| h.get("/v1/records/zzzzzzzzzz"));
    let a = h.expect_error(404, "not_found", |h| {
        h.get(&format!("/v1/records/{}", FihHash::of_canonical(b"q")))
    });
    assert!(a.json["error"]["id"].is_string());
    h.expect_error(404, "not_found", |h| h.get("/v1/records/00000000"));
    h.expect_error(404, "not_found", |h| {
        h.act(
            &claim_at(&key(2), FihHash::of_canonical(b"q"), LEASE, NOW),
            NOW,
        )
    });
    // Uppercase ids and prefixes resolve.
    let upper = i.hash().to_string()[..10].to_ascii_uppercase();
    assert_eq!(h.get(&format!("/v1/records/{upper}")).status, 200);
    // Path id and action disagree; action kind and route disagree.
    let other = FihHash::of_canonical(b"other").to_string();
    let c = claim_at(&key(2), i.hash(), LEASE, NOW);
    h.expect_error(400, "bad_request", |h| {
        h.post(&format!("/v1/intents/{other}/claim"), &c, NOW)
    });
    h.expect_error(400, "bad_request", |h| {
        h.post(&format!("/v1/intents/{}/renew", i.hash()), &c, NOW)
    });
    // A record where an action belongs.
    h.expect_error(400, "invalid_record", |h| {
        h.post(&format!("/v1/intents/{}/claim", i.hash()), &i, NOW)
    });
    // Writes take no query parameters.
    h.expect_error(400, "bad_request", |h| h.post("/v1/intents?x=1", &i, NOW));
    // Claiming a Fact.
    let f = fact(&key(1), "a", json!(1), vec![], None, NOW);
    h.submit(&f);
    h.expect_error(422, "wrong_kind", |h| {
        h.act(&claim_at(&key(2), f.hash(), LEASE, NOW), NOW)
    });
}

#[test]
fn query_parameters_are_validated() {
    let h = Harness::open();
    for target in [
        "/v1/intents?limit=0",
        "/v1/intents?limit=501",
        "/v1/intents?limit=ten",
        "/v1/intents?state=busy",
        "/v1/intents?topic=a//b",
        "/v1/intents?cursor=xyz",
        "/v1/intents?bogus=1",
        "/v1/intents?limit=1&limit=2",
        "/v1/facts?since=-5",
        "/v1/facts?until=1e3",
        "/v1/facts?since=10&until=5",
        "/v1/facts?cursor=nope",
        "/v1/facts?topic=a&cursor=..%2Fx%2F%400000000000000001%2Fabc",
        "/v1/records/0123456789abcdef/provenance?depth=65",
        "/v1/log?limit=1001",
        "/v1/log?from=x",
        "/v1/health?verbose=1",
        "/v1/hints?topic=a",
        "/v1/intents?topic=%ZZ",
    ] {
        let a = h.expect_error(400, "bad_request", |h| h.get(target));
        assert!(
            a.json["error"]["message"].as_str().unwrap().len() > 5,
            "{target}"
        );
    }
    // Accepted edge values.
    for target in [
        "/v1/intents?limit=500&state=available&topic=a%2Fb",
        "/v1/facts?since=0&until=0",
        "/v1/log?from=0&limit=1000",
    ] {
        assert_eq!(h.get(target).status, 200, "{target}");
    }
}

/// Follows `next` from `first` (a `/v1/intents` query): every Intent hash seen (each
/// seen once) and the number of pages (fewer than 10).
fn intent_pages(h: &Harness, first: &str) -> (std::collections::BTreeSet<String>, usize) {
    let mut seen = std::collections::BTreeSet::new();
    let mut target = first.to_owned();
    let mut pages = 0;
    loop {
        let a = h.get(&target);
        assert_eq!(a.status, 200, "{}", a.json);
        for it in a.json["intents"].as_array().unwrap() {
            assert!(seen.insert(it["record"]["hash"].as_str().unwrap().to_owned()));
        }
        pages += 1;
        match a.json["next"].as_str() {
            Some(c) => target = format!("{first}&cursor={c}"),
            None => return (seen, pages),
        }
        assert!(pages < 10);
    }
}

#[test]
fn intent_pages_cover_everything_once() {
    let h = Harness::open();
    let mut all = std::collections::BTreeSet::new();
    for n in 0..7 {
        let i = intent_at(&key(1), "pg", json!({"n": n}), vec![], NOW + n);
        all.insert(i.hash().to_string());
        h.submit(&i);
    }
    h.submit(&intent(&key(1), "elsewhere", json!({})));
    let (seen, _) = intent_pages(&h, "/v1/intents?topic=pg&limit=3");
    assert_eq!(seen, all);
}

#[test]
fn fact_pages_and_time_windows() {
    let h = Harness::open();
    let mut hashes = vec![];
    for n in 0..5u64 {
        let f = fact(
            &key(1),
            if n % 2 == 0 { "f/even" } else { "f/odd" },
            json!(n),
            vec![],
            None,
            NOW + n * 10,
        );
        hashes.push(f.hash().to_string());
        h.submit(&f);
    }
    let collect = |base: &str| {
        let mut out = vec![];
        let mut cursor: Option<String> = None;
        for _ in 0..10 {
            let target = match &cursor {
                Some(c) => format!(
                    "{base}&cursor={}",
                    c.replace('/', "%2F").replace('@', "%40")
                ),
                None => base.to_owned(),
            };
            let a = h.get(&target);
            assert_eq!(a.status, 200, "{target}: {}", a.json);
            for f in a.json["facts"].as_array().unwrap() {
                out.push(f["hash"].as_str().unwrap().to_owned());
            }
            match a.json["next"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => return out,
            }
        }
        panic!("too many pages");
    };
    assert_eq!(collect("/v1/facts?limit=2"), hashes);
    let window = format!("/v1/facts?limit=1&since={}&until={}", NOW + 10, NOW + 30);
    assert_eq!(collect(&window), hashes[1..3].to_vec());
    assert_eq!(
        collect("/v1/facts?limit=1&topic=f/odd"),
        vec![hashes[1].clone(), hashes[3].clone()]
    );
    let mut by_topic = collect("/v1/facts?limit=2&topic=f");
    by_topic.sort();
    let mut sorted = hashes.clone();
    sorted.sort();
    assert_eq!(by_topic, sorted);
}

#[test]
fn provenance_is_breadth_first_and_bounded() {
    let h = Harness::open();
    let k = key(1);
    // A chain r0 <- r1 <- r2 <- r3, plus r3 also naming r0 directly.
    let r0 = fact(&k, "p", json!(0), vec![], None, NOW);
    let r1 = fact(&k, "p", json!(1), vec![r0.hash()], None, NOW);
    let r2 = intent_at(&k, "p", json!(2), vec![r1.hash()], NOW);
    let r3 = fact(&k, "p", json!(3), vec![r2.hash(), r0.hash()], None, NOW);
    for r in [&r0, &r1, &r2, &r3] {
        assert_eq!(h.submit(r).status, 201);
    }
    let hashes = |a: &Answer| -> Vec<String> {
        a.json["records"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["hash"].as_str().unwrap().to_owned())
            .collect()
    };
    let s = |r: &nexus_core::Record| r.hash().to_string();
    let a = h.get(&format!("/v1/records/{}/provenance", r3.hash()));
    assert_eq!(hashes(&a), vec![s(&r3), s(&r2), s(&r0), s(&r1)]);
    let a = h.get(&format!("/v1/records/{}/provenance?depth=1", r3.hash()));
    assert_eq!(hashes(&a), vec![s(&r3), s(&r2), s(&r0)]);
    let a = h.get(&format!("/v1/records/{}/provenance?depth=0", r3.hash()));
    assert_eq!(hashes(&a), vec![s(&r3)]);
    // A deep chain is walked to the requested depth (one session round per level).
    let mut prev = r0.hash();
    for n in 0..40u64 {
        let r = fact(&k, "deep", json!(n), vec![prev], None, NOW);
        h.submit(&r);
        prev = r.hash();
    }
    let a = h.get(&format!("/v1/records/{prev}/provenance?depth=64"));
    assert_eq!(a.status, 200, "{}", a.json);
    assert_eq!(a.json["records"].as_array().unwrap().len(), 41);
    let a = h.get(&format!("/v1/records/{prev}/provenance?depth=10"));
    assert_eq!(a.json["records"].as_array().unwrap().len(), 11);
}

#[test]
fn reads_change_nothing() {
    let h = Harness::open();
    let i = intent(&key(1), "a", json!({}));
    h.submit(&i);
    let before = h.snapshot();
    for target in [
        "/v1/intents".to_owned(),
        "/v1/facts".to_owned(),
        format!("/v1/records/{}", i.hash()),
        format!("/v1/records/{}/provenance", i.hash()),
        "/v1/hints".to_owned(),
        "/v1/log".to_owned(),
        "/v1/health".to_owned(),
        "/v1/openapi.json".to_owned(),
        "/metrics".to_owned(),
    ] {
        assert_eq!(h.get(&target).status, 200, "{target}");
    }
    assert_eq!(h.snapshot(), before);
}

#[test]
fn metrics_render_through_the_api() {
    let h = Harness::open();
    let api = &h.api;
    let req = Request::new("GET", "/v1/nothing", vec![]);
    let prepared = api.prepare(&req);
    assert_eq!(prepared.route(), Route::Unmatched);
    let r = api.run_sync(&h.store, &req, NOW);
    api.metrics().observe_response(prepared.route(), &r, 120);
    h.submit(&intent(&key(1), "a", json!({})));
    let m = api.run_sync(&h.store, &Request::new("GET", "/metrics", vec![]), NOW);
    assert_eq!(m.status, 200);
    assert!(m.content_type.starts_with("text/plain"));
    let text = String::from_utf8(m.body).unwrap();
    assert!(
        text.contains("nexus_errors_total{code=\"no_route\"} 1"),
        "{text}"
    );
    assert!(text.contains("nexus_commits_total 1"), "{text}");
    let _ = Api::new(ApiConfig::default());
    let _ = MemoryStore::new();
}

#[test]
fn intent_pages_follow_priority_across_pages() {
    let h = Harness::open();
    let mut expected = vec![];
    for n in 0..9u64 {
        let topic = format!("q/p{}", n % 3);
        let i = intent_at(&key(1), &topic, json!({"n": n}), vec![], NOW + n);
        h.submit(&i);
        expected.push(((n % 3) as i64, NOW + n, i.hash().to_string()));
    }
    // q/p2 ranks highest, then q/p1, then q/p0.
    h.submit(&hint(&key(9), "q/p1", Effect::Priority(1), "one", vec![]));
    h.submit(&hint(&key(9), "q/p2", Effect::Priority(2), "two", vec![]));
    expected.sort_by_key(|(p, t, _)| (std::cmp::Reverse(*p), *t));
    let expected: Vec<String> = expected.into_iter().map(|(_, _, h)| h).collect();
    let mut got = vec![];
    let mut cursor: Option<String> = None;
    for _ in 0..10 {
        let target = match &cursor {
            Some(c) => format!("/v1/intents?state=available&limit=2&cursor={c}"),
            None => "/v1/intents?state=available&limit=2".to_owned(),
        };
        let a = h.get(&target);
        assert_eq!(a.status, 200, "{}", a.json);
        for it in a.json["intents"].as_array().unwrap() {
            got.push(it["record"]["hash"].as_str().unwrap().to_owned());
        }
        match a.json["next"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(got, expected);
    // Malformed cursors are refused.
    for bad in ["start.x.1.2", "nothex", "start.1.2", "start.1.2.3.4"] {
        h.expect_error(400, "bad_request", |h| {
            h.get(&format!("/v1/intents?cursor={bad}"))
        });
    }
}

#[test]
fn intent_listing_continues_past_a_scan_window() {
    let h = Harness::open();
    let n = nexus_api::INTENT_SCAN + 10;
    for i in 0..n {
        h.submit(&intent_at(&key(1), "w", json!({"i": i}), vec![], NOW));
    }
    let (seen, pages) = intent_pages(&h, "/v1/intents?limit=500");
    assert_eq!(seen.len(), n);
    assert_eq!(pages, 3);
}
