//! Contract governance through the API (the reference driver `Api::run_sync` on a
//! memory store): deployment, Hints emitted from Facts, enforcement, upgrades by
//! compare-and-swap, history.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use nexus_core::FihHash;
use serde_json::{Value, json};

fn budget(threshold: u32, upgrader: &nexus_core::SigningKey) -> String {
    format!(
        r#"contract = "budget"

[upgrade]
keys = ["{}"]

[[rule]]
name = "failures"
topic = "lab/**"
where = "has(fact.resolves) && fact.body.status == 'failed'"
group = "fact.topic"
threshold = {threshold}
emit = {{ effect = "deny", topic = "${{group}}/**", reason = "budget spent under ${{group}}" }}
"#,
        upgrader.author()
    )
}

fn deploy(
    k: &nexus_core::SigningKey,
    source: &str,
    expected: Option<FihHash>,
    t: u64,
) -> nexus_core::Record {
    fact(
        k,
        "nexus/contract",
        json!({"source": source, "expected": expected.map(|h| h.to_hex())}),
        vec![],
        None,
        t,
    )
}

fn post_deploy(h: &Harness, rec: nexus_core::Record) -> Answer {
    h.post("/v1/contract", &rec, NOW)
}

/// Proposes, claims and resolves an Intent under `topic` with a failed Fact.
fn failed_run(h: &Harness, k: &nexus_core::SigningKey, topic: &str, n: u64) -> Answer {
    let i = intent_at(k, topic, json!({"n": n}), vec![], NOW + n);
    let a = h.submit(&i);
    if a.status != 201 {
        return a;
    }
    let c = h.act(&claim_at(k, i.hash(), LEASE, NOW + n), NOW + n);
    assert_eq!(c.status, 200, "{}", c.json);
    let token = c.json["token"].as_u64().unwrap();
    h.submit(&fact(
        k,
        topic,
        json!({"status": "failed"}),
        vec![i.hash()],
        Some((i.hash(), token)),
        NOW + n,
    ))
}

#[test]
fn deploy_enforce_upgrade_by_cas() {
    let h = Harness::open();
    let (lead, other) = (key(1), key(2));
    assert_eq!(h.get("/v1/contract").code(), "not_found");

    // A broken contract is refused with its positions, and nothing changes.
    let bad = h.expect_error(400, "invalid_contract", |h| {
        post_deploy(
            h,
            deploy(&lead, "contract = \"x\"\n[[rule]]\nname = 1\n", None, NOW),
        )
    });
    assert_eq!(bad.json["error"]["errors"][0]["line"], 3);

    let v1 = budget(2, &lead);
    let a = post_deploy(&h, deploy(&lead, &v1, None, NOW));
    assert_eq!(a.status, 201, "{}", a.json);
    let v1_hash: FihHash = a.json["hash"].as_str().unwrap().parse().unwrap();
    assert_eq!(a.json["version"], 1);
    // The deployment Fact is indexed like any Fact: listed under its topic and above.
    for topic in ["nexus", "nexus/contract"] {
        let listed = h.get(&format!("/v1/facts?topic={topic}")).json;
        assert_eq!(
            listed["facts"].as_array().unwrap().len(),
            1,
            "{topic}: {listed}"
        );
    }
    let shown = h.get("/v1/contract");
    assert_eq!(shown.json["hash"], v1_hash.to_hex());
    assert_eq!(shown.json["source"], v1);
    assert_eq!(shown.json["rules"][0]["name"], "failures");

    // Two failed runs under lab/chem spend its budget.
    assert_eq!(failed_run(&h, &other, "lab/chem", 1).status, 201);
    assert!(
        h.get("/v1/hints").json["hints"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    assert_eq!(failed_run(&h, &other, "lab/chem", 2).status, 201);
    let hints = h.get("/v1/hints").json["hints"].clone();
    assert_eq!(hints.as_array().unwrap().len(), 1, "{hints}");
    let hint = &hints[0]["hint"];
    assert_eq!(hint["source"]["contract"], v1_hash.to_hex());
    assert_eq!(hint["source"]["rule"], "failures");
    assert_eq!(hint["source"]["facts"].as_array().unwrap().len(), 2);
    // The Hint is a committed record: fetchable, with its Facts as links.
    let hint_id = hints[0]["hash"].as_str().unwrap().to_owned();
    let rec = h.get(&format!("/v1/records/{hint_id}"));
    assert_eq!(rec.json["parents"].as_array().unwrap().len(), 2);

    // Its key is public (derived from the contract's hash), so the same Hint cannot be
    // submitted by anyone: contract Hints come only from evaluation.
    let forged = h.get(&format!("/v1/records/{hint_id}")).json["record"].clone();
    h.expect_error(400, "bad_request", |h| h.post("/v1/hints", &forged, NOW));
    // Proposing under lab/chem is refused, naming the Hint and its reason.
    let refused = h.expect_error(403, "inadmissible", |h| {
        h.submit(&intent_at(
            &other,
            "lab/chem/hot",
            json!({}),
            vec![],
            NOW + 10,
        ))
    });
    assert_eq!(refused.json["error"]["hint"], hint_id);
    assert_eq!(
        refused.json["error"]["reason"],
        "budget spent under lab/chem"
    );
    // Elsewhere is fine.
    assert_eq!(
        h.submit(&intent_at(&other, "lab/bio", json!({}), vec![], NOW + 10))
            .status,
        201
    );

    let v2 = budget(5, &lead);
    // Only the lead may upgrade (the policy of the version in force)…
    h.expect_error(403, "upgrade_refused", |h| {
        post_deploy(h, deploy(&other, &v2, Some(v1_hash), NOW + 20))
    });
    // …and only from the version in force: a stale expectation changes nothing.
    let stale = h.expect_error(409, "stale_contract", |h| {
        post_deploy(h, deploy(&lead, &v2, Some(FihHash([7; 32])), NOW + 20))
    });
    assert_eq!(stale.json["error"]["current"], v1_hash.to_hex());
    let up = post_deploy(&h, deploy(&lead, &v2, Some(v1_hash), NOW + 21));
    assert_eq!(up.status, 201, "{}", up.json);
    assert_eq!(up.json["version"], 2);
    assert_eq!(up.json["previous"], v1_hash.to_hex());
    // Under v2 two failures are within budget: the deny Hint is gone, the proposal is admitted.
    assert!(
        h.get("/v1/hints").json["hints"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        h.submit(&intent_at(
            &other,
            "lab/chem/hot",
            json!({}),
            vec![],
            NOW + 22
        ))
        .status,
        201
    );
    // Re-deploying the same request (same signed Fact) is a duplicate, not a new version.
    let again = post_deploy(&h, deploy(&lead, &v2, Some(v1_hash), NOW + 21));
    assert_eq!(
        (again.status, again.json["duplicate"].clone()),
        (200, Value::Bool(true))
    );

    let history = h.get("/v1/contract/history").json["versions"].clone();
    let versions: Vec<(u64, String)> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["version"].as_u64().unwrap(),
                v["hash"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(versions.len(), 2);
    assert_eq!(versions[0], (1, v1_hash.to_hex()));
    assert_eq!(history[1]["previous"], v1_hash.to_hex());
    assert_eq!(history[1]["deployer"], lead.author().to_string());
}

#[test]
fn a_restarted_api_rebuilds_the_contract_hints_from_the_log() {
    let h = Harness::open();
    let lead = key(1);
    assert_eq!(
        post_deploy(&h, deploy(&lead, &budget(1, &lead), None, NOW)).status,
        201
    );
    assert_eq!(failed_run(&h, &lead, "lab/a", 1).status, 201);
    let before = h.get("/v1/hints").json;
    assert_eq!(before["hints"].as_array().unwrap().len(), 1);
    // A fresh API over the same store (a restart) agrees, and changes nothing.
    let fresh = Harness {
        api: nexus_api::Api::new(nexus_api::ApiConfig {
            open: true,
            ..Default::default()
        }),
        store: h.store.clone(),
    };
    let snapshot = fresh.snapshot();
    let r = fresh
        .api
        .governor()
        .catch_up(&limits(), |j| fresh.api.run_job(&fresh.store, &j, NOW));
    assert!(r.is_ok(), "{r:?}");
    assert_eq!(fresh.get("/v1/hints").json, before);
    assert_eq!(fresh.snapshot(), snapshot);
    let explained = fresh
        .api
        .governor()
        .explain(
            &before["hints"][0]["hash"]
                .as_str()
                .unwrap()
                .parse()
                .unwrap(),
        )
        .expect("explained");
    assert_eq!(explained.rule, "failures");
    assert_eq!(explained.group, json!("lab/a"));
}

/// `examples/contracts/quorum.nex` (stewards: the keys of seeds 1, 2, 3) deployed by
/// `by`, and the next version: (hash in force, next source, next hash).
fn deploy_quorum(h: &Harness, by: &nexus_core::SigningKey) -> (FihHash, &'static str, FihHash) {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/contracts/quorum.nex"
    );
    let v1 = std::fs::read_to_string(path).unwrap();
    let a = post_deploy(h, deploy(by, &v1, None, NOW));
    assert_eq!(a.status, 201, "{}", a.json);
    let v1_hash: FihHash = a.json["hash"].as_str().unwrap().parse().unwrap();
    let v2 = "contract = \"steward-quorum-2\"\n";
    (v1_hash, v2, nexus_contract::contract_hash(v2.as_bytes()))
}

#[test]
fn a_quorum_contract_governs_its_own_upgrade() {
    let h = Harness::open();
    let (s1, s2, s3, outsider) = (key(1), key(2), key(3), key(4));
    let (v1_hash, v2, v2_hash) = deploy_quorum(&h, &outsider);
    let approve = |k: &nexus_core::SigningKey, t: u64| {
        let f = fact(
            k,
            "governance/upgrade",
            json!({"contract": v2_hash.to_hex(), "replaces": v1_hash.to_hex()}),
            vec![],
            None,
            NOW + t,
        );
        assert_eq!(h.submit(&f).status, 201);
        f.hash()
    };
    // No approval yet, then one steward (twice) and an outsider: no quorum.
    let refused = h.expect_error(403, "upgrade_refused", |h| {
        post_deploy(h, deploy(&s3, v2, Some(v1_hash), NOW + 1))
    });
    assert_eq!(
        (
            refused.json["error"]["needed"].clone(),
            refused.json["error"]["found"].clone()
        ),
        (json!(2), json!(0))
    );
    let first = approve(&s1, 2);
    approve(&s1, 3);
    approve(&outsider, 4);
    let refused = h.expect_error(403, "upgrade_refused", |h| {
        post_deploy(h, deploy(&s3, v2, Some(v1_hash), NOW + 5))
    });
    assert_eq!(refused.json["error"]["found"], 1);
    // A second steward approves: any allowed key may now deploy it.
    let second = approve(&s2, 6);
    let up = post_deploy(&h, deploy(&outsider, v2, Some(v1_hash), NOW + 7));
    assert_eq!(up.status, 201, "{}", up.json);
    assert_eq!(
        up.json["approvals"],
        json!([first.to_hex(), second.to_hex()])
    );
    let history = h.get("/v1/contract/history").json;
    assert_eq!(history["versions"][1]["approvals"], up.json["approvals"]);
}

/// Through the whole pipeline (API, store, governor, Hint commits): whatever order
/// Facts commit in, and whatever times they state, the Hints in force are exactly those
/// a fresh evaluator derives from the host's own log (its Facts in log order with the
/// entries' commit times) — what a replay derives — and the rules reckon in commit times.
#[test]
fn the_hints_in_force_are_the_logs() {
    let source = r#"contract = "order"

[[rule]]
name = "window"
topic = "lab/**"
where = "fact.body.status == 'failed'"
group = "fact.topic"
threshold = 3
within = "10s"
emit = { effect = "deny", topic = "${group}/**", reason = "${size(facts)} failures, the last at ${fact.at}" }

[[rule]]
name = "first-two"
topic = "lab/a"
threshold = 2
emit = { effect = "priority", priority = 2, topic = "lab/a/**", reason = "two, stated ${facts[0].time}, ${facts[1].time}" }
"#;
    let authors = [key(5), key(6), key(7)];
    // (topic, failed, seconds after NOW)
    let specs = [
        ("lab/a", true, 30),
        ("lab/a", true, 34),
        ("lab/a", true, 38),
        ("lab/b", true, 3),
        ("lab/a", true, 2),
        ("lab/a", false, 1),
        ("lab/b", true, 9),
        ("lab/a", true, 6),
        ("lab/b", true, 11),
        ("lab/a", true, 9),
    ];
    let facts: Vec<nexus_core::Record> = specs
        .iter()
        .enumerate()
        .map(|(i, (topic, failed, dt))| {
            let status = if *failed { "failed" } else { "ok" };
            fact(
                &authors[i % 3],
                topic,
                json!({"status": status, "i": i}),
                vec![],
                None,
                NOW + dt * 1_000,
            )
        })
        .collect();
    let n = facts.len();
    let orders: Vec<Vec<usize>> = vec![
        (0..n).collect(),
        (0..n).rev().collect(),
        vec![4, 0, 7, 1, 9, 2, 3, 5, 8, 6],
        vec![2, 1, 0, 9, 8, 7, 6, 5, 4, 3],
    ];
    let contract = std::sync::Arc::new(
        nexus_contract::Contract::parse("order.nex", source).expect("contract"),
    );
    for order in &orders {
        let h = Harness::open();
        assert_eq!(
            post_deploy(&h, deploy(&key(1), source, None, NOW)).status,
            201
        );
        // Committed 4 s apart: the window of 10 s holds three consecutive commits.
        for (n, &i) in order.iter().enumerate() {
            let path = "/v1/facts";
            let r = h.post(path, &facts[i], NOW + 4_000 * n as u64);
            assert_eq!(r.status, 201, "{}", r.json);
        }
        let mut held: Vec<String> = h.get("/v1/hints").json["hints"]
            .as_array()
            .expect("hints")
            .iter()
            .map(|x| x["hash"].as_str().expect("hash").to_owned())
            .collect();
        held.sort();
        let mut eval = nexus_contract::Evaluator::new(std::sync::Arc::clone(&contract));
        for e in h.get("/v1/log?from=1&limit=1000").json["entries"]
            .as_array()
            .expect("entries")
        {
            if e["record"]["kind"] != "fact" || e["record"]["topic"] == "nexus/contract" {
                continue;
            }
            let bytes = serde_json::to_vec(&e["record"]).expect("json");
            let rec = nexus_core::Record::from_json(&bytes, &Default::default()).expect("record");
            let nexus_core::Content::Fact(f) = rec.content() else {
                unreachable!()
            };
            eval.add_fact(rec.hash(), f, e["at"].as_u64().expect("at"));
        }
        let mut derived: Vec<String> = eval.hints().map(|r| r.hash().to_hex()).collect();
        derived.sort();
        assert!(!derived.is_empty(), "order {order:?} fires no rule");
        assert_eq!(held, derived, "order {order:?}");
        for r in eval.hints() {
            let nexus_core::Content::Hint(hint) = r.content() else {
                unreachable!()
            };
            // Dated by a commit (NOW + 4 s × n), never by a stated time (NOW + dt s).
            assert_eq!((hint.time - NOW) % 4_000, 0, "{hint:?}");
        }
    }
}

/// A steward's own flood under the approvals topic (more Facts than the check reads
/// per key, all earlier than any approval) hides at most its own approval, never
/// another steward's: the check reads each key's Facts apart.
#[test]
fn a_stewards_flood_hides_only_its_own_approval() {
    let h = Harness::open();
    let (s1, s2, s3) = (key(1), key(2), key(3));
    let (v1_hash, v2, v2_hash) = deploy_quorum(&h, &s3);
    let approval = json!({"contract": v2_hash.to_hex(), "replaces": v1_hash.to_hex()});
    let scanned = nexus_contract::governance::MAX_APPROVALS_SCANNED as u64;
    for i in 0..=scanned {
        let f = fact(
            &s3,
            "governance/upgrade",
            json!({"n": i}),
            vec![],
            None,
            NOW + 1,
        );
        assert_eq!(h.submit(&f).status, 201);
    }
    let t = NOW + 2;
    for s in [&s3, &s1] {
        let f = fact(s, "governance/upgrade", approval.clone(), vec![], None, t);
        assert_eq!(h.submit(&f).status, 201);
    }
    // s3's approval lies past its own flood: only s1's counts.
    let refused = h.expect_error(403, "upgrade_refused", |h| {
        post_deploy(h, deploy(&s1, v2, Some(v1_hash), t + 1))
    });
    assert_eq!(refused.json["error"]["found"], 1, "{}", refused.json);
    let f = fact(
        &s2,
        "governance/upgrade/steward-2",
        approval,
        vec![],
        None,
        t + 2,
    );
    assert_eq!(h.submit(&f).status, 201);
    let up = post_deploy(&h, deploy(&s1, v2, Some(v1_hash), t + 3));
    assert_eq!(up.status, 201, "{}", up.json);
    assert_eq!(up.json["approvals"].as_array().map(Vec::len), Some(2));
}

/// The catch-up as a state machine (what the Worker's governance object drives): a
/// fresh governor asks for the contract head, the contract, the log and then one Hint
/// commit, in that order; a job that fails part-way ends it with the failure recorded
/// (the gate refuses until a later catch-up succeeds); a catch-up dropped part-way
/// holds no lock; once done it only answers an error.
#[test]
fn the_catch_up_state_machine_asks_for_each_job_in_turn() {
    use nexus_api::{CatchUpStep, Governor, Route};
    let h = Harness::open();
    let lead = key(1);
    let d = post_deploy(&h, deploy(&lead, &budget(1, &lead), None, NOW));
    assert_eq!(d.status, 201);
    assert_eq!(failed_run(&h, &lead, "lab/a", 1).status, 201);
    let before = h.get("/v1/hints").json;
    assert_eq!(before["hints"].as_array().unwrap().len(), 1);

    let gov = Governor::new();
    let run = |j: &nexus_api::Job| h.api.run_job(&h.store, j, NOW);
    // Dropped after its first step: nothing is held.
    let mut c = gov.start(&limits());
    assert!(matches!(c.poll(), CatchUpStep::Run(j) if j.route() == Route::GetContract));
    drop(c);

    // Drives a catch-up, answering the jobs of route `fail` with an error; answers
    // the outcome and the routes of the jobs it ran.
    let drive = |fail: Option<Route>| {
        let mut c = gov.start(&limits());
        let mut routes = Vec::new();
        let result = loop {
            match c.poll() {
                CatchUpStep::Run(j) => {
                    routes.push(j.route());
                    c.feed(if Some(j.route()) == fail {
                        nexus_api::storage_error("injected")
                    } else {
                        run(&j)
                    });
                }
                CatchUpStep::Done(r) => break r,
            }
        };
        assert!(matches!(c.poll(), CatchUpStep::Done(Err(_))), "done once");
        (result, routes)
    };
    // A log page that fails: the catch-up ends, recorded, and the gate refuses.
    let (result, routes) = drive(Some(Route::Log));
    assert!(result.is_err(), "{result:?}");
    assert_eq!(routes, [Route::GetContract, Route::GetContract, Route::Log]);
    assert!(gov.failure().is_some_and(|f| f.contains("injected")));
    let refused = gov.gate(Route::Claim).unwrap_err().to_response();
    assert_eq!(refused.status, 503);
    assert_eq!(refused.json_body()["error"]["code"], "governance_pending");
    assert!(
        gov.gate(Route::SubmitFact).is_ok(),
        "only proposals and claims wait"
    );

    // The next catch-up reads the log again and commits the Hints wholesale (here
    // the same ones): the failure is cleared.
    let (result, routes) = drive(None);
    assert!(result.is_ok(), "{result:?}");
    assert_eq!(
        routes,
        [Route::GetContract, Route::Log, Route::SubmitHint],
        "head, log, the Hint commit (the contract was read before)"
    );
    assert_eq!(gov.failure(), None);
    assert!(gov.gate(Route::Claim).is_ok());
    assert_eq!(h.get("/v1/hints").json, before);
    // Caught up: one read, nothing to commit.
    let mut c = gov.start(&limits());
    let CatchUpStep::Run(j) = c.poll() else {
        panic!("the head first")
    };
    c.feed(run(&j));
    assert!(matches!(c.poll(), CatchUpStep::Done(Ok(None))));
}
