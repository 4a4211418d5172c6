//! Contract governance over HTTP, the same cases on every host (spec/api.md,
//! "Contract"; spec/contract.md): a deployment, Facts that spend the contract's failure
//! budget so that it emits a deny Hint, a proposal and a claim of denied Intents
//! refused naming it, what `nexus hints --explain` reads for it, a stale upgrade
//! refused with `409 stale_contract` (nothing changes), an upgrade by compare-and-swap
//! after which the Intents are admitted again, and the history.
//!
//! The deployer is one fixed key, so the suite can run again on the same store: it
//! upgrades from whatever contract is in force (one it deployed before).

use nexus_client::{Client, KeyFile, builders};
use nexus_core::{Content, Effect, FihHash, SigningKey};
use serde_json::{Value, json};

use super::expect_error;

/// The deploy topic of `POST /v1/contract`.
const DEPLOY_TOPIC: &str = "nexus/contract";

/// The suite's deployer: the same key on every run, so that a later run may upgrade
/// the contract an earlier one left in force.
pub fn lead() -> SigningKey {
    SigningKey::from_seed(&[0x6c; 32])
}

/// A failure budget under `tag/**`: `threshold` failed resolutions under one topic
/// deny further Intents under it (the budget contract of the native CLI test).
pub fn budget(tag: &str, threshold: u32, upgrader: &str) -> String {
    format!(
        r#"contract = "conformance-budget"

[upgrade]
keys = ["{upgrader}"]

[[rule]]
name = "failure-budget"
topic = "{tag}/**"
where = "has(fact.resolves) && fact.body.status == 'failed'"
group = "fact.topic"
threshold = {threshold}
within = "24h"
emit = {{ effect = "deny", topic = "${{group}}/**", reason = "failure budget spent under ${{group}}" }}
"#
    )
}

/// The deployment record of `source` replacing `expected`.
pub fn deployment(k: &SigningKey, source: &str, expected: Option<FihHash>) -> nexus_core::Record {
    builders::fact(
        k,
        DEPLOY_TOPIC,
        json!({"source": source, "expected": expected.map(|h| h.to_hex())}),
        &[],
        None,
    )
    .expect("deployment")
}

/// The hash of the contract in force, if any.
pub fn current(c: &Client) -> Option<FihHash> {
    match c.get_json("/v1/contract") {
        Ok((_, v)) => Some(v["hash"].as_str().expect("hash").parse().expect("hash")),
        Err(e) if e.status() == Some(404) => None,
        Err(e) => panic!("GET /v1/contract: {e}"),
    }
}

/// `POST /v1/contract`: answers the status and body.
pub fn deploy(c: &Client, source: &str, expected: Option<FihHash>) -> (u16, Value) {
    c.post_json(
        "/v1/contract",
        &deployment(&lead(), source, expected).to_json(),
    )
    .expect("deployment")
}

/// A run under `topic` that fails: proposed, claimed, resolved by a failed Fact.
/// Answers the Fact.
pub fn failed_run(c: &Client, k: &SigningKey, topic: &str, n: u64) -> nexus_core::Record {
    let i = builders::propose(k, topic, json!({"n": n}), &[]).expect("intent");
    c.submit(&i).expect("propose");
    let lease = c
        .claim(
            &builders::claim(k, &c.deployment().expect("deployment"), i.hash(), 30_000)
                .expect("claim"),
        )
        .expect("claimed");
    let f = builders::fact(
        k,
        topic,
        json!({"status": "failed"}),
        &[i.hash()],
        Some((i.hash(), lease.token)),
    )
    .expect("fact");
    c.submit(&f).expect("resolve");
    f
}

/// [`failed_run`] as one `POST /v1/batch`: the proposal, its claim (token 1) and the
/// failed Fact commit together, and the contract must see the Fact all the same.
pub fn failed_run_batched(c: &Client, k: &SigningKey, topic: &str, n: u64) -> nexus_core::Record {
    use nexus_client::http::BatchItem;
    let i = builders::propose(k, topic, json!({"n": n}), &[]).expect("intent");
    let claim =
        builders::claim(k, &c.deployment().expect("deployment"), i.hash(), 30_000).expect("claim");
    let f = builders::fact(
        k,
        topic,
        json!({"status": "failed"}),
        &[i.hash()],
        Some((i.hash(), 1)),
    )
    .expect("fact");
    c.batch(&[
        BatchItem::Record(i),
        BatchItem::Action(claim),
        BatchItem::Record(f.clone()),
    ])
    .expect("one batch");
    f
}

/// The contract Hints in force under `topic/**` (there may be others from other runs).
fn hints_under(c: &Client, topic: &str) -> Vec<nexus_core::Record> {
    c.hints()
        .expect("hints")
        .into_iter()
        .map(|h| h.hint)
        .filter(|r| match r.content() {
            Content::Hint(h) => {
                h.selector.topic.as_ref().map(|t| t.as_str()) == Some(&format!("{topic}/**"))
            }
            _ => false,
        })
        .collect()
}

/// The whole contract case (see the module docs), under the topic prefix `tag`.
pub fn governance(c: &Client, tag: &str, agent: &KeyFile) {
    let lead = lead();
    let lead_key = lead.author().to_string();
    let k = agent.key();
    let topic = format!("{tag}/chem");
    let before = current(c);
    let history_before = c.get_json("/v1/contract/history").expect("history").1["versions"]
        .as_array()
        .map_or(0, Vec::len);

    // Deploy (from whatever is in force: an earlier run's contract, or none).
    let v1 = budget(tag, 2, &lead_key);
    let (status, body) = deploy(c, &v1, before);
    assert_eq!(status, 201, "{body}");
    let v1_hash = nexus_contract_hash(&body);
    assert_eq!(
        body["previous"].as_str(),
        before.map(|h| h.to_hex()).as_deref()
    );
    let (_, shown) = c.get_json("/v1/contract").expect("contract");
    assert_eq!(shown["hash"], v1_hash.to_hex());
    assert_eq!(shown["source"], v1);
    assert!(
        hints_under(c, &topic).is_empty(),
        "a fresh budget denies nothing"
    );

    // Proposed before the budget is spent: claimed after, it is refused.
    let waiting = builders::propose(k, &format!("{topic}/later"), json!({}), &[]).expect("intent");
    c.submit(&waiting)
        .expect("admitted before the budget is spent");
    let f1 = failed_run(c, k, &topic, 1);
    assert!(
        hints_under(c, &topic).is_empty(),
        "one failure is within the budget"
    );
    // The second failure's answer comes after the contract's Hints committed, also
    // when its Fact came in a batch.
    let f2 = failed_run_batched(c, k, &topic, 2);
    let hints = hints_under(c, &topic);
    assert_eq!(hints.len(), 1, "{hints:?}");
    let hint = hints[0].clone();
    let Content::Hint(h) = hint.content() else {
        unreachable!("filtered")
    };
    assert_eq!(h.effect, Effect::Deny);
    assert_eq!(h.reason, format!("failure budget spent under {topic}"));

    // A proposal and a claim of denied Intents are refused, naming the Hint.
    let denied = |e: nexus_client::ApiError, what: &str| {
        assert_eq!(
            (e.status, e.code.as_str()),
            (403, "inadmissible"),
            "{what}: {e}"
        );
        assert_eq!(e.details["hint"], hint.hash().to_hex(), "{what}");
        assert_eq!(
            e.details["reason"],
            format!("failure budget spent under {topic}"),
            "{what}"
        );
    };
    let next = builders::propose(k, &format!("{topic}/next"), json!({}), &[]).expect("intent");
    denied(
        expect_error(c, "a denied proposal", 403, "inadmissible", || {
            c.submit(&next)
        }),
        "proposal",
    );
    let claim = builders::claim(
        k,
        &c.deployment().expect("deployment"),
        waiting.hash(),
        30_000,
    )
    .expect("claim");
    denied(
        expect_error(c, "a denied claim", 403, "inadmissible", || c.claim(&claim)),
        "claim",
    );

    // What `nexus hints --explain` reads: the Hint's source (the contract in force,
    // the rule, the two Facts) and the rule's text in the contract.
    let info = c
        .record(&hint.hash().to_hex()[..12])
        .expect("the Hint by prefix");
    assert_eq!(info.record.hash(), hint.hash());
    let Content::Hint(stored) = info.record.content() else {
        panic!("not a Hint")
    };
    let source = stored
        .source
        .as_ref()
        .expect("a contract Hint has a source");
    assert_eq!(source.contract, Some(v1_hash));
    assert_eq!(source.rule.as_deref(), Some("failure-budget"));
    let mut facts = source.facts.clone();
    facts.sort();
    let mut expected = vec![f1.hash(), f2.hash()];
    expected.sort();
    assert_eq!(facts, expected);
    for f in &source.facts {
        c.record(&f.to_hex())
            .expect("each triggering Fact is served");
    }

    // A stale upgrade (a wrong `expected`) answers 409 and changes nothing.
    let v2 = budget(tag, 5, &lead_key);
    let wrong: FihHash = "00".repeat(32).parse().expect("hash");
    let e = expect_error(c, "a stale upgrade", 409, "stale_contract", || {
        c.post_json(
            "/v1/contract",
            &deployment(&lead, &v2, Some(wrong)).to_json(),
        )
    });
    assert!(!e.message.is_empty());
    assert_eq!(current(c), Some(v1_hash));
    // So does a first deployment's `expected: null` while one is in force.
    expect_error(
        c,
        "a deployment over one in force",
        409,
        "stale_contract",
        || c.post_json("/v1/contract", &deployment(&lead, &v2, None).to_json()),
    );
    // And an upgrade by a key the contract does not name.
    let stranger = SigningKey::from_seed(&[0x6d; 32]);
    expect_error(
        c,
        "an upgrade by another key",
        403,
        "upgrade_refused",
        || {
            c.post_json(
                "/v1/contract",
                &deployment(&stranger, &v2, Some(v1_hash)).to_json(),
            )
        },
    );

    // The upgrade by compare-and-swap from v1: v2's budget is not spent, so v1's deny
    // is withdrawn and the Intents are admitted again.
    let upgrade = deployment(&lead, &v2, Some(v1_hash));
    let (status, body) = c
        .post_json("/v1/contract", &upgrade.to_json())
        .expect("the upgrade");
    assert_eq!(status, 201, "{body}");
    let v2_hash = nexus_contract_hash(&body);
    assert_eq!(body["previous"], v1_hash.to_hex());
    assert_eq!(current(c), Some(v2_hash));
    assert!(hints_under(c, &topic).is_empty(), "v1's Hint is withdrawn");
    c.submit(&next).expect("admitted under v2");
    c.claim(&claim).expect("claimed under v2");
    // The same deployment again is a duplicate.
    let (status, body) = c
        .post_json("/v1/contract", &upgrade.to_json())
        .expect("the same deployment again");
    assert_eq!((status, &body["duplicate"]), (200, &json!(true)), "{body}");

    // The history: both versions, in order, the upgrade naming v1.
    let (_, history) = c.get_json("/v1/contract/history").expect("history");
    let versions = history["versions"].as_array().expect("versions");
    assert_eq!(versions.len(), history_before + 2, "{history}");
    let (a, b) = (&versions[history_before], &versions[history_before + 1]);
    assert_eq!(a["hash"], v1_hash.to_hex());
    assert_eq!(b["hash"], v2_hash.to_hex());
    assert_eq!(b["previous"], v1_hash.to_hex());
    assert_eq!(b["version"].as_u64(), a["version"].as_u64().map(|v| v + 1));
    assert_eq!(a["deployer"], lead_key);
    assert_eq!(b["deployer"], lead_key);
}

/// The contract hash of a deployment's answer.
fn nexus_contract_hash(body: &Value) -> FihHash {
    body["hash"]
        .as_str()
        .unwrap_or_else(|| panic!("no hash in {body}"))
        .parse()
        .expect("hash")
}
