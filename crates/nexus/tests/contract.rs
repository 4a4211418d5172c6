//! Contract governance through the real `nexus serve` binary and the `nexus` CLI:
//! check, deploy, Facts that spend a budget, a proposal refused with the Hint's reason,
//! `hints --explain`, a stale upgrade refused with 409 (nothing changes), an upgrade
//! by compare-and-swap after which the proposal is admitted, and the history.

mod common;

use std::path::Path;

use common::{Server, nexus_fails, nexus_ok};
use nexus_client::{Client, builders};
use nexus_core::SigningKey;
use serde_json::json;

fn budget(threshold: u32, upgrader: &str) -> String {
    format!(
        r#"contract = "lab-budget"

[upgrade]
keys = ["{upgrader}"]

[[rule]]
name = "failure-budget"
topic = "lab/**"
where = "has(fact.resolves) && fact.body.status == 'failed'"
group = "fact.topic"
threshold = {threshold}
within = "24h"
emit = {{ effect = "deny", topic = "${{group}}/**", reason = "failure budget spent under ${{group}}" }}
"#
    )
}

fn failed_run(c: &Client, k: &SigningKey, topic: &str, n: u64) {
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
}

fn log_head(c: &Client) -> u64 {
    c.health().expect("health").log_head
}

#[test]
fn deploy_refuse_upgrade_through_the_server_and_cli() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(&dir.path().join("data"), true);
    let c = server.client();
    let lead_home = dir.path().join("lead");
    let lead = nexus_ok(&["keygen"], &[("NEXUS_HOME", &lead_home)])
        .trim()
        .to_owned();
    let env = [
        ("NEXUS_HOME", lead_home.as_path()),
        ("NEXUS_SERVER", Path::new(&server.url)),
    ];

    // check: a broken contract is refused with file, line, column and message.
    let broken = dir.path().join("broken.nex");
    std::fs::write(&broken, "contract = \"x\"\n\n[[rule]]\nname = \"r\"\ntopic = \"lab/**\"\nwhere = \"fact.bdy == 1\"\nemit = { effect = \"deny\", reason = \"r\" }\n").expect("write");
    let (_, err) = nexus_fails(&["contract", "check", broken.to_str().expect("path")], &env);
    assert!(
        err.contains("broken.nex:6:14: unknown field `bdy` of a Fact"),
        "{err}"
    );
    let v1 = dir.path().join("v1.nex");
    std::fs::write(&v1, budget(2, &lead)).expect("write");
    let ok = nexus_ok(&["contract", "check", v1.to_str().expect("path")], &env);
    assert!(
        ok.starts_with("ok: contract \"lab-budget\" (1 rules)"),
        "{ok}"
    );

    let out = nexus_ok(&["contract", "deploy", v1.to_str().expect("path")], &env);
    assert!(out.contains("version 1"), "{out}");
    let (_, shown) = c.get_json("/v1/contract").expect("contract");
    let v1_hash = shown["hash"].as_str().expect("hash").to_owned();

    // Two failed runs under lab/chem spend the budget.
    let agent = SigningKey::from_seed(&[42; 32]);
    failed_run(&c, &agent, "lab/chem", 1);
    failed_run(&c, &agent, "lab/chem", 2);
    let hints = c.hints().expect("hints");
    assert_eq!(hints.len(), 1);
    let hint = hints[0].hash;

    let refused = c
        .submit(&builders::propose(&agent, "lab/chem/next", json!({}), &[]).expect("intent"))
        .expect_err("refused");
    assert_eq!(refused.status(), Some(403));
    assert_eq!(refused.code(), Some("inadmissible"));
    let api = refused.api().expect("api error");
    assert_eq!(api.details["hint"], hint.to_hex());
    assert_eq!(api.details["reason"], "failure budget spent under lab/chem");

    // The Hint explained: the rule and the two Facts behind it.
    let explained = nexus_ok(&["hints", "--explain", &hint.to_hex()[..12]], &env);
    assert!(
        explained.contains("emitted by rule \"failure-budget\""),
        "{explained}"
    );
    assert!(explained.contains("because of 2 fact(s)"), "{explained}");

    // A stale upgrade (wrong expected hash) answers 409 and changes nothing.
    let v2 = dir.path().join("v2.nex");
    std::fs::write(&v2, budget(5, &lead)).expect("write");
    let head = log_head(&c);
    let wrong = "00".repeat(32);
    let (_, err) = nexus_fails(
        &[
            "contract",
            "deploy",
            v2.to_str().expect("path"),
            "--expect",
            &wrong,
        ],
        &env,
    );
    assert!(err.contains("HTTP 409 stale_contract"), "{err}");
    assert_eq!(log_head(&c), head);
    assert_eq!(
        c.get_json("/v1/contract").expect("contract").1["hash"],
        v1_hash
    );
    // So does an upgrade by a key the contract does not allow.
    let other_home = dir.path().join("other");
    nexus_ok(&["keygen"], &[("NEXUS_HOME", &other_home)]);
    let other_env = [
        ("NEXUS_HOME", other_home.as_path()),
        ("NEXUS_SERVER", Path::new(&server.url)),
    ];
    let (_, err) = nexus_fails(
        &["contract", "deploy", v2.to_str().expect("path")],
        &other_env,
    );
    assert!(err.contains("HTTP 403 upgrade_refused"), "{err}");
    assert_eq!(log_head(&c), head);

    // The upgrade by compare-and-swap from v1: the budget is not spent under v2.
    let out = nexus_ok(
        &[
            "contract",
            "deploy",
            v2.to_str().expect("path"),
            "--expect",
            &v1_hash,
        ],
        &env,
    );
    assert!(out.contains("version 2"), "{out}");
    assert!(c.hints().expect("hints").is_empty());
    c.submit(&builders::propose(&agent, "lab/chem/next", json!({}), &[]).expect("intent"))
        .expect("admitted");

    // The whole log verifies offline, lifecycle and admissibility replayed: the
    // deployment withdrew v1's deny Hint, so the admitted proposal replays too.
    let verified = nexus_ok(&["verify", "--replay", &server.url], &env);
    assert!(verified.starts_with("ok:"), "{verified}");
    // A deployment cannot sneak in as a plain Fact.
    let sneaky =
        builders::fact(&agent, "nexus/contract", json!({"source": "x"}), &[], None).expect("fact");
    assert_eq!(
        c.submit(&sneaky).expect_err("refused").code(),
        Some("bad_request")
    );

    let history = nexus_ok(&["contract", "show", "--history", "--json"], &env);
    let history: serde_json::Value = serde_json::from_str(&history).expect("json");
    let versions = history["versions"].as_array().expect("versions");
    assert_eq!(versions.len(), 2);
    assert_eq!(versions[0]["hash"], v1_hash);
    assert_eq!(versions[1]["previous"], v1_hash);
    assert_eq!(versions[1]["deployer"], lead);
}

#[test]
fn contract_hints_survive_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let agent = SigningKey::from_seed(&[43; 32]);
    let lead_home = dir.path().join("lead");
    let lead = nexus_ok(&["keygen"], &[("NEXUS_HOME", &lead_home)])
        .trim()
        .to_owned();
    let file = dir.path().join("c.nex");
    std::fs::write(&file, budget(1, &lead)).expect("write");
    let hint = {
        let server = Server::start(&data, true);
        let env = [
            ("NEXUS_HOME", lead_home.as_path()),
            ("NEXUS_SERVER", Path::new(&server.url)),
        ];
        nexus_ok(&["contract", "deploy", file.to_str().expect("path")], &env);
        let c = server.client();
        failed_run(&c, &agent, "lab/bio", 1);
        let hints = c.hints().expect("hints");
        assert_eq!(hints.len(), 1);
        server.kill9();
        hints[0].hash
    };
    let server = Server::start(&data, true);
    let c = server.client();
    let hints = c.hints().expect("hints");
    assert_eq!(hints.iter().map(|h| h.hash).collect::<Vec<_>>(), vec![hint]);
    let e = c
        .submit(&builders::propose(&agent, "lab/bio/more", json!({}), &[]).expect("intent"))
        .expect_err("refused after restart");
    assert_eq!(e.code(), Some("inadmissible"));
}
