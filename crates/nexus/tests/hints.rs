//! Hint authority, withdrawal, quotas and a loud contract-Hint failure, through the
//! real `nexus serve` binary on a closed server (an allowlist, an operator key):
//! the attacks of issue 16 by an allowed agent "M" that is no contract steward.

mod common;
mod conformance;

use std::path::Path;

use common::{Server, nexus_ok};
use conformance::hints::{code, everything};
use nexus_client::{Client, ClientError, builders};
use nexus_core::{Effect, FihHash, Record, SigningKey};
use serde_json::json;

fn key(n: u8) -> SigningKey {
    SigningKey::from_seed(&[n; 32])
}

/// The operator, the contract's steward.
fn operator() -> SigningKey {
    key(1)
}

/// M: an allowed agent, not a steward.
fn m() -> SigningKey {
    key(2)
}

/// A data directory that allows `agents` and names the operator key.
fn closed_data(dir: &Path, agents: &[SigningKey]) -> std::path::PathBuf {
    let data = dir.join("data");
    let d = data.to_str().expect("path");
    for a in agents {
        nexus_ok(
            &["agents", "add", &a.author().to_string(), "--data", d],
            &[],
        );
    }
    nexus_ok(
        &[
            "agents",
            "add",
            "--operator",
            &operator().author().to_string(),
            "--data",
            d,
        ],
        &[],
    );
    data
}

fn hint(k: &SigningKey, topic: Option<&str>, effect: Effect, reason: &str) -> Record {
    let selector = builders::selector(topic, None).expect("selector");
    builders::hint(k, selector, effect, reason).expect("hint")
}

fn propose(c: &Client, k: &SigningKey, topic: &str, n: u64) -> Result<FihHash, ClientError> {
    let i = builders::propose(k, topic, json!({"n": n}), &[]).expect("intent");
    c.submit(&i).map(|s| s.hash)
}

/// A contract that denies `lab/{x}/**` once a Fact under `lab/{x}` says `stop`.
fn stop_contract(steward: &SigningKey) -> String {
    format!(
        r#"contract = "stops"

[upgrade]
keys = ["{}"]

[[rule]]
name = "stop"
topic = "lab/**"
where = "fact.body.status == 'stop'"
group = "fact.topic"
threshold = 1
within = "24h"
emit = {{ effect = "deny", topic = "${{group}}/**", reason = "stopped under ${{group}}" }}
"#,
        steward.author()
    )
}

fn deploy(c: &Client, steward: &SigningKey, source: &str) {
    let rec = builders::fact(
        steward,
        nexus_contract::governance::DEPLOY_TOPIC,
        json!({"source": source, "expected": null}),
        &[],
        None,
    )
    .expect("deployment");
    let (status, v) = c
        .post_json("/v1/contract", &rec.to_json())
        .expect("deployed");
    assert_eq!(status, 201, "{v}");
}

fn stop(c: &Client, k: &SigningKey, topic: &str) {
    let f = builders::fact(k, topic, json!({"status": "stop"}), &[], None).expect("fact");
    c.submit(&f).expect("fact committed");
}

#[test]
fn an_agent_may_not_post_deny_or_allow_hints() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(&closed_data(dir.path(), &[m()]), false);
    let c = server.client();

    // M's empty deny (every proposal refused, no expiry): refused, nothing stored.
    let head = c.health().expect("health").log_head;
    let e = c
        .submit(&everything(&m(), Effect::Deny, "m"))
        .expect_err("deny refused");
    assert_eq!(code(&e), (Some(403), Some("hint_not_permitted")));
    let e = c
        .submit(&everything(&m(), Effect::Allow, "m"))
        .expect_err("allow refused");
    assert_eq!(code(&e), (Some(403), Some("hint_not_permitted")));
    assert_eq!(c.health().expect("health").log_head, head);
    assert!(c.hints().expect("hints").is_empty());
    propose(&c, &m(), "lab/a", 1).expect("proposals go on");

    // A priority Hint is an agent's to post; deny and allow are the operator's.
    c.submit(&everything(&m(), Effect::Priority(5), "m"))
        .expect("priority");
    c.submit(&hint(&operator(), Some("lab/**"), Effect::Deny, "op"))
        .expect("operator deny");
    let e = propose(&c, &m(), "lab/b", 2).expect_err("denied by the operator");
    assert_eq!(code(&e), (Some(403), Some("inadmissible")));
}

#[test]
fn an_agents_allow_cannot_cancel_the_contracts_deny() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(&closed_data(dir.path(), &[m()]), false);
    let c = server.client();
    deploy(&c, &operator(), &stop_contract(&operator()));
    stop(&c, &m(), "lab/chem");
    let e = propose(&c, &m(), "lab/chem/x", 1).expect_err("the contract denies");
    assert_eq!(code(&e), (Some(403), Some("inadmissible")));

    let e = c
        .submit(&everything(&m(), Effect::Allow, "m"))
        .expect_err("allow refused");
    assert_eq!(code(&e), (Some(403), Some("hint_not_permitted")));
    let e = propose(&c, &m(), "lab/chem/x", 1).expect_err("still denied");
    assert_eq!(code(&e), (Some(403), Some("inadmissible")));
}

/// `k` posts `n` inert priority Hints, one after the other (concurrent ones would race
/// on the active list); every refusal must be `refusal`. Answers how many were refused.
fn flood(c: &Client, k: &SigningKey, n: i64, refusal: (u16, &str)) -> usize {
    let mut refused = 0;
    for i in 0..n {
        let r = hint(k, Some("inert/**"), Effect::Priority(i), "flood");
        if let Err(e) = c.submit(&r) {
            assert_eq!(code(&e), (Some(refusal.0), Some(refusal.1)), "{i}");
            refused += 1;
        }
    }
    refused
}

#[test]
fn a_flood_of_hints_stops_at_the_quota_and_the_contracts_hint_still_lands() {
    let dir = tempfile::tempdir().expect("tempdir");
    // 33 agents × 32 Hints each would be 1,056: more than the 1,000 posted Hints allowed.
    let agents: Vec<SigningKey> = (10..43).map(key).collect();
    let mut allowed = agents.clone();
    allowed.push(m());
    let server = Server::start(&closed_data(dir.path(), &allowed), false);
    let c = server.client();
    deploy(&c, &operator(), &stop_contract(&operator()));

    // M alone: 32 inert Hints, then 429 hint_quota for each of the rest.
    let refused = flood(&c, &m(), 1_000, (429, "hint_quota"));
    assert_eq!(refused, 1_000 - 32);
    // The others fill the room of posted Hints (1,000): the last ones answer 409.
    let full: usize = agents
        .iter()
        .map(|a| flood(&c, a, 32, (409, "too_many_hints")))
        .sum();
    assert_eq!(full, 33 * 32 + 32 - 1_000);
    assert_eq!(c.hints().expect("hints").len(), 1_000);

    // The contract's Hint has its own room: it lands and denies the Intent.
    stop(&c, &m(), "lab/chem");
    assert_eq!(c.hints().expect("hints").len(), 1_001);
    let e = propose(&c, &m(), "lab/chem/x", 1).expect_err("the contract denies");
    assert_eq!(code(&e), (Some(403), Some("inadmissible")));
    assert_eq!(c.health().expect("health").status, "ok");
}

#[test]
fn a_hint_is_retracted_by_its_author_or_an_operator_not_by_another_agent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let other = key(3);
    let server = Server::start(&closed_data(dir.path(), &[m(), other.clone()]), false);
    conformance::hints::authority_and_retract(&server.url, &operator(), &m(), &other);
    let c = server.client();

    // Through the CLI: `nexus hint retract PREFIX` by the Hint's author.
    let mine = hint(&m(), None, Effect::Priority(7), "mine");
    c.submit(&mine).expect("posted");
    let home = dir.path().join("m");
    std::fs::create_dir_all(&home).expect("home");
    nexus_client::KeyFile::from_signing_key(m())
        .save(home.join("key"), false)
        .expect("key");
    let env = [
        ("NEXUS_HOME", home.as_path()),
        ("NEXUS_SERVER", Path::new(&server.url)),
    ];
    let out = nexus_ok(&["hint", "retract", &mine.hash().to_hex()[..12]], &env);
    assert!(out.contains("retracted"), "{out}");
    assert!(c.hints().expect("hints").is_empty());

    // Nobody retracts a contract's Hint, not even an operator.
    deploy(&c, &operator(), &stop_contract(&operator()));
    stop(&c, &m(), "lab/chem");
    let contract_hint = c.hints().expect("hints")[0].hash;
    let e = c
        .retract(
            &builders::retract(
                &operator(),
                &c.deployment().expect("deployment"),
                contract_hint,
            )
            .expect("retract"),
        )
        .expect_err("a contract's Hint");
    assert_eq!(code(&e), (Some(403), Some("hint_not_permitted")));

    // The retractions are logged and replay.
    let out = nexus_ok(&["verify", "--replay", &server.url], &env);
    assert!(out.contains("4 retractions"), "{out}");
}

#[test]
fn a_failed_contract_hint_commit_is_loud_and_fails_closed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = closed_data(dir.path(), &[m()]);
    let server = Server::start_with(&data, false, &["--max-contract-hints", "1"]);
    let c = server.client();
    deploy(&c, &operator(), &stop_contract(&operator()));
    stop(&c, &m(), "lab/a");
    assert_eq!(c.hints().expect("hints").len(), 1);
    assert_eq!(c.health().expect("health").status, "ok");

    // A second deny would pass the contract's room: its commit fails.
    stop(&c, &m(), "lab/b");
    let health = c.health().expect("health");
    assert_eq!(health.status, "degraded");
    assert_eq!(health.reason.as_deref(), Some("governance"));
    assert!(
        c.metrics()
            .expect("metrics")
            .contains("nexus_governance_pending 1")
    );
    // What the missing Hint would deny is not admitted, nor any other proposal.
    for topic in ["lab/b/x", "elsewhere"] {
        let e = propose(&c, &m(), topic, 1).expect_err("fails closed");
        assert_eq!(code(&e), (Some(503), Some("governance_pending")), "{topic}");
    }
    drop(server);

    // With room for the contract's Hints, the catch-up at start commits them.
    let server = Server::start_with(&data, false, &["--max-contract-hints", "2"]);
    let c = server.client();
    assert_eq!(c.health().expect("health").status, "ok");
    let e = propose(&c, &m(), "lab/b/x", 1).expect_err("denied");
    assert_eq!(code(&e), (Some(403), Some("inadmissible")));
    propose(&c, &m(), "elsewhere", 1).expect("admitted");
}
