//! Contract governance through the real `nexus serve` binary and the `nexus` CLI:
//! check, deploy, Facts that spend a budget, a proposal refused with the Hint's reason,
//! `hints --explain`, a stale upgrade refused with 409 (nothing changes), an upgrade
//! by compare-and-swap after which the proposal is admitted, and the history.

mod common;
mod conformance;

use std::path::Path;

use common::{Server, nexus_fails, nexus_ok};
use nexus_client::{Client, builders};
use nexus_core::SigningKey;
use serde_json::json;

/// The conformance suite's budget contract under `lab/**`.
fn budget(threshold: u32, upgrader: &str) -> String {
    conformance::contract::budget("lab", threshold, upgrader)
}

fn failed_run(c: &Client, k: &SigningKey, topic: &str, n: u64) {
    conformance::contract::failed_run(c, k, topic, n);
}

fn log_head(c: &Client) -> u64 {
    c.health().expect("health").log_head
}

/// An open server in a fresh directory, and a lead key (its home, its public key).
fn open_server_with_lead() -> (tempfile::TempDir, Server, std::path::PathBuf, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(&dir.path().join("data"), true);
    let lead_home = dir.path().join("lead");
    let lead = nexus_ok(&["keygen"], &[("NEXUS_HOME", &lead_home)])
        .trim()
        .to_owned();
    (dir, server, lead_home, lead)
}

#[test]
fn deploy_refuse_upgrade_through_the_server_and_cli() {
    let (dir, server, lead_home, lead) = open_server_with_lead();
    let c = server.client();
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
        ok.starts_with("ok: contract \"conformance-budget\" (1 rules)"),
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

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Issue 16, scenario 1: a record's stated time is its author's word. Far-dated records
/// are refused (`clock_skew`, as actions are), and a rule's window, its Hint's time and
/// expiry follow commit times: two failures stated 290 s apart, committed a moment
/// apart, fall in a one-minute window (before, the rule reckoned in stated times and
/// let the Intent through), and the deny lasts an hour from its commit, not from a time
/// the author chose.
#[test]
fn stated_times_move_no_window_and_far_dates_are_refused() {
    let (dir, server, lead_home, lead) = open_server_with_lead();
    let c = server.client();
    let file = dir.path().join("pair.nex");
    std::fs::write(
        &file,
        format!(
            r#"contract = "pair"

[upgrade]
keys = ["{lead}"]

[[rule]]
name = "pair"
topic = "lab/**"
where = "fact.body.status == 'failed'"
threshold = 2
within = "1m"
emit = {{ effect = "deny", topic = "lab/**", reason = "two failures within a minute", expires = "1h" }}
"#
        ),
    )
    .expect("write");
    let env = [
        ("NEXUS_HOME", lead_home.as_path()),
        ("NEXUS_SERVER", Path::new(&server.url)),
    ];
    nexus_ok(&["contract", "deploy", file.to_str().expect("path")], &env);
    let m = SigningKey::from_seed(&[44; 32]);
    let failed = json!({"status": "failed"});

    // Backdated to 1970 and dated a year ahead: refused, whatever the kind.
    let year = 365 * 24 * 3_600_000;
    for time in [1_000, now_ms() + year] {
        let f = builders::fact_at(&m, "lab/x", failed.clone(), &[], None, time).expect("fact");
        let e = c.submit(&f).expect_err("a far-dated Fact is refused");
        assert_eq!(e.code(), Some("clock_skew"), "{e}");
        let i = builders::propose_at(&m, "lab/x", json!({}), &[], time).expect("intent");
        let e = c.submit(&i).expect_err("a far-dated Intent is refused");
        assert_eq!(e.code(), Some("clock_skew"), "{e}");
    }
    assert!(c.hints().expect("hints").is_empty());

    // Within the skew bound, stated 290 s apart: one minute apart by no clock but the
    // authors'. Their commits are a moment apart, so the rule fires.
    let before = now_ms();
    let early = builders::fact_at(&m, "lab/x", failed.clone(), &[], None, before - 290_000);
    c.submit(&early.expect("fact"))
        .expect("within the skew bound");
    let late = builders::fact_at(&m, "lab/y", failed, &[], None, now_ms());
    c.submit(&late.expect("fact")).expect("commits");
    let after = now_ms();
    let hints = c.hints().expect("hints");
    assert_eq!(hints.len(), 1, "{hints:?}");
    let nexus_core::Content::Hint(h) = hints[0].hint.content() else {
        panic!("not a hint");
    };
    assert!(
        (before..=after).contains(&h.time),
        "the Hint is dated by the commit ({before}..={after}), not by an author: {}",
        h.time
    );
    assert_eq!(h.expires, Some(h.time + 3_600_000));
    let e = c
        .submit(&builders::propose(&m, "lab/z", json!({}), &[]).expect("intent"))
        .expect_err("the contract denies it");
    assert_eq!(e.code(), Some("inadmissible"), "{e}");
}

/// The quorum contract of `examples/contracts/quorum.nex`, whose stewards are the keys
/// of seeds 1, 2 and 3.
fn stewards() -> (String, [SigningKey; 3]) {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/contracts/quorum.nex"
    );
    let source = std::fs::read_to_string(path).expect("quorum.nex");
    let keys = [1u8, 2, 3].map(|n| SigningKey::from_seed(&[n; 32]));
    for k in &keys {
        assert!(
            source.contains(&k.author().to_string()),
            "steward {n:?}",
            n = k.author()
        );
    }
    (source, keys)
}

/// A server without rate limits (floods and costly Facts are the point), with more
/// environment variables.
fn unlimited_server(dir: &Path, env: &[(&str, &str)]) -> Server {
    let args = ["--author-rate", "0", "--address-rate", "0"];
    Server::start_env(&dir.join("data"), true, &args, env)
}

/// `nexus contract deploy FILE ARGS…` of `source`, written to `dir/name`, by the key
/// of `dir/lead` (made on first use); answers its stdout.
fn deploy_as_lead(dir: &Path, server: &Server, name: &str, source: &str, args: &[&str]) -> String {
    let home = dir.join("lead");
    if !home.exists() {
        nexus_ok(&["keygen"], &[("NEXUS_HOME", &home)]);
    }
    let file = dir.join(name);
    std::fs::write(&file, source).expect("write");
    let mut argv = vec!["contract", "deploy", file.to_str().expect("path")];
    argv.extend(args);
    let env = [
        ("NEXUS_HOME", home.as_path()),
        ("NEXUS_SERVER", Path::new(&server.url)),
    ];
    nexus_ok(&argv, &env)
}

/// Posts `n` Facts signed by `k` under `topic` (bodies that approve nothing), from four
/// threads.
fn flood(server: &common::Server, k: &SigningKey, topic: &str, n: u64) {
    std::thread::scope(|s| {
        for part in 0..4 {
            let c = server.client();
            s.spawn(move || {
                for i in (part..n).step_by(4) {
                    let f = builders::fact(k, topic, json!({"flood": i}), &[], None).expect("fact");
                    c.submit(&f).expect("flood fact");
                }
            });
        }
    });
}

/// An allowed non-steward key posts more Facts under the approvals topic than the
/// deploy check reads per key (and earlier than any approval): two stewards'
/// approvals still make the quorum, because the check reads each steward's own
/// Facts from the author index, never the flood.
#[test]
fn an_approval_flood_does_not_hide_a_quorum() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = unlimited_server(dir.path(), &[]);
    let c = server.client();
    let (v1, [s1, s2, _]) = stewards();
    deploy_as_lead(dir.path(), &server, "v1.nex", &v1, &[]);
    let v1_hash = nexus_contract::contract_hash(v1.as_bytes());
    let v2 = "contract = \"steward-quorum-2\"\n";
    let v2_hash = nexus_contract::contract_hash(v2.as_bytes());

    let mallory = SigningKey::from_seed(&[66; 32]);
    // The attack's size: more than the 10,000 approvals a topic-wide scan read.
    flood(&server, &mallory, "governance/upgrade", 10_001);
    for s in [&s1, &s2] {
        let approval = builders::fact(
            s,
            "governance/upgrade",
            json!({"contract": v2_hash.to_hex(), "replaces": v1_hash.to_hex()}),
            &[],
            None,
        )
        .expect("approval");
        c.submit(&approval).expect("approve");
    }
    let out = deploy_as_lead(
        dir.path(),
        &server,
        "v2.nex",
        v2,
        &["--expect", &v1_hash.to_hex()],
    );
    assert!(out.contains("version 2"), "{out}");
    let (_, history) = c.get_json("/v1/contract/history").expect("history");
    let counted = history["versions"][1]["approvals"].as_array().map(Vec::len);
    assert_eq!(counted, Some(2), "{history}");
}

/// A contract of `n` rules that each walk a Fact's list `l` (none matches), and the
/// static cost of one rule.
fn walking_rules(n: u64) -> (String, u64) {
    let rule = |i: u64| {
        format!(
            "\n[[rule]]\nname = \"walk-{i}\"\ntopic = \"lab/**\"\nwhere = \"fact.body.l.exists(x, x == 7)\"\nemit = {{ effect = \"deny\", reason = \"a seven\" }}\n"
        )
    };
    let one = format!("contract = \"walk\"\n{}", rule(0));
    let one = nexus_contract::Contract::parse("one.nex", &one).expect("one rule");
    let cost = one.rules()[0].cost();
    let rules: String = (0..n).map(rule).collect();
    (format!("contract = \"walk\"\n{rules}"), cost)
}

/// How many walking rules fit the contract's budget on one Fact.
fn rules_at_the_bound() -> u64 {
    let (_, cost) = walking_rules(1);
    nexus_contract::MAX_CONTRACT_STEPS / cost
}

/// Each rule is within its own budget, but together the rules are over the contract's
/// budget on one Fact: refused at `POST /v1/contract` (and by `check`), before a Fact
/// ever pays for them.
#[test]
fn a_contract_over_its_total_cost_bound_is_refused_at_deploy() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(&dir.path().join("data"), true);
    let n = rules_at_the_bound();
    let (over, cost) = walking_rules(n + 1);
    assert!(cost <= nexus_contract::DEFAULT_MAX_STEPS);
    let file = dir.path().join("over.nex");
    std::fs::write(&file, &over).expect("write");
    let total = (n + 1) * cost;
    let message = format!(
        "rule `walk-{n}` brings the contract to up to {total} evaluation steps on one Fact"
    );
    let (_, err) = nexus_fails(&["contract", "check", file.to_str().expect("path")], &[]);
    assert!(err.contains(&message), "{err}");
    // So does the server (the CLI would not send it), with the checker's message.
    let lead = SigningKey::from_seed(&[45; 32]);
    let deploy = builders::fact(
        &lead,
        "nexus/contract",
        json!({"source": over, "expected": null}),
        &[],
        None,
    )
    .expect("deployment");
    let refused = server
        .client()
        .post_json("/v1/contract", &deploy.to_json())
        .expect_err("refused");
    assert_eq!(
        (refused.status(), refused.code()),
        (Some(400), Some("invalid_contract"))
    );
    let api = refused.api().expect("api error");
    assert!(api.message.contains(&message), "{}", api.message);
    let none = server
        .client()
        .get_json("/v1/contract")
        .expect_err("nothing deployed");
    assert_eq!(none.status(), Some(404));
    // At the bound it deploys.
    let (at, _) = walking_rules(n);
    let out = deploy_as_lead(dir.path(), &server, "at.nex", &at, &[]);
    assert!(out.contains("version 1"), "{out}");
}

/// With a contract at its cost bound evaluating a Fact, `/v1/health` still answers:
/// the evaluation runs on the governance thread, not on the runtime's only worker
/// (`TOKIO_WORKER_THREADS=1`). A health answer that shows the Fact committed comes
/// back, and a second health request completes, before the Fact's own answer, which
/// waits for its evaluation.
#[test]
fn health_answers_while_a_costly_contract_evaluates() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = unlimited_server(dir.path(), &[("TOKIO_WORKER_THREADS", "1")]);
    let (at, _) = walking_rules(rules_at_the_bound());
    deploy_as_lead(dir.path(), &server, "at.nex", &at, &[]);
    let c = server.client();
    let head = log_head(&c);
    let agent = SigningKey::from_seed(&[44; 32]);
    let fact =
        builders::fact(&agent, "lab/walk", json!({"l": vec![1; 30_000]}), &[], None).expect("fact");
    let answered = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        let submitter = s.spawn(|| {
            let r = server.client().submit(&fact);
            answered.store(true, std::sync::atomic::Ordering::SeqCst);
            r
        });
        // Until a health answer shows the Fact committed (its evaluation then runs)...
        while log_head(&c) == head {
            assert!(
                !answered.load(std::sync::atomic::Ordering::SeqCst),
                "the Fact was answered before any health answer showed it committed"
            );
        }
        // ...and one more health request, all answered before the Fact.
        log_head(&c);
        assert!(
            !answered.load(std::sync::atomic::Ordering::SeqCst),
            "health waited for the contract's evaluation"
        );
        submitter
            .join()
            .expect("submitter")
            .expect("the Fact is accepted");
    });
    assert!(c.hints().expect("hints").is_empty());
}
