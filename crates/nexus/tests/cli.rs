//! The `nexus` command-line client against a real server: the README's walkthrough,
//! step for step, then every other verb, `--json`, and the error paths.

mod common;

use std::path::Path;

use common::{Server, nexus, nexus_fails, nexus_ok};
use serde_json::Value;

/// The full hash in `intent <hash> committed (seq N)`.
fn committed_hash(out: &str, kind: &str) -> String {
    let rest = out
        .trim()
        .strip_prefix(&format!("{kind} "))
        .unwrap_or_else(|| panic!("not a {kind} line: {out}"));
    let (hash, tail) = rest.split_once(' ').expect("hash and tail");
    assert_eq!(hash.len(), 64, "{out}");
    assert!(tail.starts_with("committed (seq "), "{out}");
    hash.to_owned()
}

fn json(out: &str) -> Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("not one JSON document ({e}): {out}"))
}

/// The README's five-minute walkthrough, as written there (the server on a port of its
/// own instead of 7878, through NEXUS_SERVER).
#[test]
fn readme_walkthrough() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(&dir.path().join("nexus-data"), true);
    let alice_home = dir.path().join("alice");
    let bob_home = dir.path().join("bob");
    let url = Path::new(&server.url);
    let alice = [("NEXUS_HOME", alice_home.as_path()), ("NEXUS_SERVER", url)];
    let bob = [("NEXUS_HOME", bob_home.as_path()), ("NEXUS_SERVER", url)];
    let anyone = [("NEXUS_SERVER", url)];

    // Two agent keys.
    let alice_key = nexus_ok(&["keygen"], &alice);
    let bob_key = nexus_ok(&["keygen"], &bob);
    assert_eq!(alice_key.trim().len(), 64);
    assert!(alice_home.join("key").is_file() && bob_home.join("key").is_file());

    // Alice proposes.
    let out = nexus_ok(
        &[
            "intent",
            "propose",
            "chem/solubility",
            "--body",
            r#"{"compound":"NaCl"}"#,
        ],
        &alice,
    );
    let id = committed_hash(&out, "intent");
    assert!(out.trim().ends_with("(seq 1)"), "{out}");
    let short = &id[..8];

    // Bob claims by short id.
    let out = nexus_ok(&["intent", "claim", short, "--lease", "5m"], &bob);
    assert!(
        out.starts_with(&format!("claimed {id}\n  token 1  lease until ")),
        "{out}"
    );

    // Alice's claim loses, naming Bob.
    let (_, err) = nexus_fails(&["intent", "claim", short], &alice);
    assert!(err.contains("HTTP 409 already_claimed"), "{err}");
    assert!(err.contains(&format!("holder={}", bob_key.trim())), "{err}");

    // Bob resolves with his token.
    let out = nexus_ok(
        &[
            "fact",
            "submit",
            "chem/solubility",
            "--body",
            r#"{"g_per_l":360}"#,
            "--parent",
            short,
            "--resolves",
            short,
            "--token",
            "1",
        ],
        &bob,
    );
    let fact = committed_hash(&out, "fact");
    assert!(out.trim().ends_with("(seq 3)"), "{out}");

    // Look around.
    let out = nexus_ok(&["intent", "list", "--state", "resolved"], &anyone);
    assert!(out.contains(&id[..12]) && out.contains("resolved"), "{out}");
    assert!(
        out.contains(&format!("(by fact {}, token 1)", &fact[..12])),
        "{out}"
    );
    let out = nexus_ok(&["show", &fact[..8]], &anyone);
    assert!(out.starts_with(&format!("fact {fact}\n")), "{out}");
    assert!(out.contains(&format!("resolves {id} (token 1)")), "{out}");
    assert!(
        out.contains(&format!("parents\n    {id} intent chem/solubility")),
        "{out}"
    );
    let out = nexus_ok(&["log"], &anyone);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 4, "{out}");
    assert!(
        lines[0].contains("intent") && lines[1].contains("claim"),
        "{out}"
    );
    assert!(
        lines[2].contains("fact") && lines[2].contains("resolves"),
        "{out}"
    );
    assert_eq!(lines[3], "(head 3)");

    // Export and verify, from the file and from the server.
    let file = dir.path().join("nexus-export.jsonl");
    nexus_ok(&["export", "--out", file.to_str().expect("utf-8")], &anyone);
    let expected = "ok: 3 entries verified (seq 1..3)\n  2 records: 1 intent, 1 fact (1 resolving), 0 hints\n  1 action: 1 claim, 0 renewals, 0 withdrawals\n";
    assert_eq!(
        nexus_ok(&["verify", file.to_str().expect("utf-8")], &[]),
        expected
    );
    assert_eq!(nexus_ok(&["verify", &server.url], &[]), expected);
}

#[test]
fn every_verb_json_and_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(&dir.path().join("data"), true);
    let (a_home, b_home, empty) = (
        dir.path().join("a"),
        dir.path().join("b"),
        dir.path().join("e"),
    );
    let url = Path::new(&server.url);
    let a = [("NEXUS_HOME", a_home.as_path()), ("NEXUS_SERVER", url)];
    let b = [("NEXUS_HOME", b_home.as_path()), ("NEXUS_SERVER", url)];
    nexus_ok(&["keygen"], &a);
    nexus_ok(
        &[
            "keygen",
            "--out",
            b_home.join("key").to_str().expect("utf-8"),
        ],
        &[],
    );
    // A second keygen refuses to overwrite.
    let (_, err) = nexus_fails(&["keygen"], &a);
    assert!(err.contains("already exists"), "{err}");

    // --json: one document per command.
    let v = json(&nexus_ok(
        &["--json", "intent", "propose", "work/a", "--body", "[1,2]"],
        &a,
    ));
    assert_eq!(
        (
            v["kind"].as_str(),
            v["duplicate"].as_bool(),
            v["seq"].as_u64()
        ),
        (Some("intent"), Some(false), Some(1))
    );
    let id = v["hash"].as_str().expect("hash").to_owned();
    let v = json(&nexus_ok(
        &["intent", "claim", &id, "--lease", "1500ms", "--json"],
        &b,
    ));
    assert_eq!(
        (v["token"].as_u64(), v["takeover"].as_bool()),
        (Some(1), Some(false))
    );
    let v = json(&nexus_ok(
        &[
            "intent",
            "renew",
            &id[..10],
            "--token",
            "1",
            "--lease",
            "2m",
            "--json",
        ],
        &b,
    ));
    assert_eq!(v["token"].as_u64(), Some(1));
    let out = nexus_ok(&["intent", "renew", &id[..10], "--token", "1"], &b);
    assert!(out.starts_with(&format!("renewed {id}")), "{out}");
    let v = json(&nexus_ok(
        &[
            "intent", "list", "--json", "--state", "claimed", "--topic", "work", "--limit", "5",
        ],
        &a,
    ));
    assert_eq!(
        v["intents"][0]["record"]["hash"].as_str(),
        Some(id.as_str())
    );
    assert_eq!(v["intents"][0]["state"]["state"].as_str(), Some("claimed"));

    // Errors carry the server's status, code and details (in --json too), exit 1.
    let (out, err) = nexus_fails(&["--json", "intent", "claim", &id], &a);
    let v = json(&out);
    assert_eq!(v["error"]["code"], "already_claimed");
    assert_eq!(v["error"]["status"], 409);
    assert_eq!(v["error"]["token"], 1);
    assert!(err.contains("already_claimed"), "{err}");
    let (_, err) = nexus_fails(&["intent", "renew", &id, "--token", "9"], &b);
    assert!(err.contains("HTTP 409 stale_token"), "{err}");
    let (_, err) = nexus_fails(&["intent", "withdraw", &id], &b);
    assert!(err.contains("HTTP 403 not_proposer"), "{err}");
    let out = nexus_ok(&["intent", "withdraw", &id[..8]], &a);
    assert_eq!(out.trim(), format!("withdrew {id}"));
    let (_, err) = nexus_fails(&["intent", "claim", &id], &b);
    assert!(err.contains("HTTP 409 withdrawn"), "{err}");

    // Hints: a deny Hint names itself when it refuses.
    let v = json(&nexus_ok(
        &[
            "hint",
            "add",
            "--deny",
            "--topic",
            "secret/**",
            "--reason",
            "not here",
            "--expires-in",
            "1h",
            "--json",
        ],
        &a,
    ));
    let deny = v["hash"].as_str().expect("hash").to_owned();
    nexus_ok(
        &[
            "hint",
            "add",
            "--priority",
            "-3",
            "--where",
            r#"{"lang":"fr"}"#,
            "--reason",
            "later",
        ],
        &a,
    );
    let out = nexus_ok(&["hint", "list"], &a);
    assert!(
        out.contains(&deny[..12]) && out.contains("deny") && out.contains("topic secret/**"),
        "{out}"
    );
    assert!(
        out.contains("priority -3") && out.contains(r#"where {"lang":"fr"}"#),
        "{out}"
    );
    let (_, err) = nexus_fails(&["intent", "propose", "secret/plan"], &a);
    assert!(err.contains("HTTP 403 inadmissible"), "{err}");
    assert!(
        err.contains(&format!("hint={deny}")) && err.contains("reason=not here"),
        "{err}"
    );
    let (_, err) = nexus_fails(
        &["hint", "add", "--allow", "--where", "[1]", "--reason", "x"],
        &a,
    );
    assert!(err.contains("JSON object"), "{err}");

    // show, log, export to stdout.
    let v = json(&nexus_ok(&["show", &id[..8], "--json"], &a));
    assert_eq!(v["kind"], "intent");
    let v = json(&nexus_ok(
        &["log", "--from", "2", "--limit", "2", "--json"],
        &a,
    ));
    assert_eq!(v["entries"].as_array().map(Vec::len), Some(2));
    assert_eq!(v["entries"][0]["seq"], 2);
    let out = nexus_ok(&["log", "--limit", "2"], &a);
    assert!(out.trim_end().ends_with("more with --from 3)"), "{out}");
    let export = nexus_ok(&["export"], &a);
    let head = v["head"].as_u64().expect("head");
    assert_eq!(export.lines().count() as u64, head);

    // A broken export: the first bad entry, precisely; --json says the same.
    let mut lines: Vec<String> = export.lines().map(str::to_owned).collect();
    lines.remove(1);
    let broken = dir.path().join("broken.jsonl");
    std::fs::write(&broken, lines.join("\n") + "\n").expect("write");
    let (_, err) = nexus_fails(&["verify", broken.to_str().expect("utf-8")], &[]);
    assert!(
        err.contains("line 2 (seq 3") && err.contains("gap in seq: expected 2, found 3"),
        "{err}"
    );
    let (out, _) = nexus_fails(&["verify", "--json", broken.to_str().expect("utf-8")], &[]);
    let v = json(&out);
    assert_eq!(
        (v["ok"].as_bool(), v["line"].as_u64(), v["seq"].as_u64()),
        (Some(false), Some(2), Some(3))
    );
    let v = json(&nexus_ok(
        &["verify", "--json", "--replay", &server.url],
        &[],
    ));
    assert_eq!(
        (v["ok"].as_bool(), v["entries"].as_u64()),
        (Some(true), Some(head))
    );

    // A reader that goes away (`nexus log | head -1`) is no error and no panic.
    let mut child = std::process::Command::new(common::NEXUS)
        .args(["log", "--server", &server.url])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    drop(child.stdout.take());
    let done = child.wait_with_output().expect("wait");
    assert_eq!(done.status.code(), Some(0));
    assert!(
        done.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );

    // An empty log exports and verifies.
    let empty_server = Server::start(&dir.path().join("empty-data"), true);
    let out = nexus_ok(&["verify", &empty_server.url], &[]);
    assert_eq!(out, "ok: the log is empty (no entries)\n");
    let export = nexus_ok(&["export", "--server", &empty_server.url], &[]);
    assert_eq!(export, "");

    // Errors a person makes: unknown id, no key, no server, bad input, bad usage.
    let (_, err) = nexus_fails(&["show", "deadbeef00"], &a);
    assert!(err.contains("HTTP 404 not_found"), "{err}");
    let (_, err) = nexus_fails(&["intent", "claim", "abc"], &a);
    assert!(err.contains("HTTP 400"), "{err}");
    let no_key = [("NEXUS_HOME", empty.as_path()), ("NEXUS_SERVER", url)];
    let (_, err) = nexus_fails(&["intent", "propose", "x"], &no_key);
    assert!(err.contains("nexus keygen"), "{err}");
    let (_, err) = nexus_fails(&["--server", "http://127.0.0.1:1", "log"], &[]);
    assert!(err.contains("cannot reach"), "{err}");
    let (_, err) = nexus_fails(&["intent", "propose", "x", "--body", "{nope"], &a);
    assert!(err.contains("--body is not JSON"), "{err}");
    let (_, err) = nexus_fails(&["intent", "propose", "bad topic"], &a);
    assert!(err.contains("topic"), "{err}");
    let (_, err) = nexus_fails(&["intent", "claim", &id, "--lease", "30"], &a);
    assert!(err.contains("no unit"), "{err}");
    let out = nexus(&["intent"], &a);
    assert_eq!(out.status.code(), Some(2));
    let (_, err) = nexus_fails(
        &[
            "verify",
            dir.path().join("missing").to_str().expect("utf-8"),
        ],
        &[],
    );
    assert!(err.contains("cannot open"), "{err}");
}

/// `nexus batch`: a plan that proposes, claims, resolves and follows up in one commit,
/// with `@N` ids; a failing plan names its step and stores nothing; bad plans are
/// refused before anything is sent.
#[test]
fn batch_plans_commit_all_or_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(&dir.path().join("nexus-data"), true);
    let home = dir.path().join("agent");
    let url = Path::new(&server.url);
    let env = [("NEXUS_HOME", home.as_path()), ("NEXUS_SERVER", url)];
    nexus_ok(&["keygen"], &env);

    let plan = dir.path().join("plan.jsonl");
    std::fs::write(
        &plan,
        r#"# propose, claim it, resolve it, and follow up from the Fact
{"propose": {"topic": "chem/x", "body": {"n": 1}}}
{"claim": {"intent": "@0", "lease": "1m"}}
{"fact": {"topic": "chem/x", "body": {"g": 3}, "parents": ["@0"], "resolves": "@0", "token": 1}}
{"propose": {"topic": "chem/x/next", "parents": ["@2"]}}
"#,
    )
    .expect("plan");
    let out = nexus_ok(&["batch", plan.to_str().expect("path")], &env);
    assert!(out.starts_with("4 steps committed in one commit"), "{out}");
    assert!(
        out.contains("  0: intent ") && out.contains("(seq 1)"),
        "{out}"
    );
    assert!(
        out.contains("  1: leased ") && out.contains(" token 1 "),
        "{out}"
    );
    assert!(
        out.contains("  3: intent ") && out.contains("(seq 4)"),
        "{out}"
    );
    let log = json(&nexus_ok(&["--json", "log"], &env));
    assert_eq!(log["head"], 4, "{log}");
    let resolved = json(&nexus_ok(
        &["--json", "intent", "list", "--state", "resolved"],
        &env,
    ));
    assert_eq!(
        resolved["intents"].as_array().map(Vec::len),
        Some(1),
        "{resolved}"
    );

    // As a JSON array: a claim of the resolved Intent fails at step 1, and
    // step 0's proposal is not stored.
    let first = log["entries"][0]["record"]["hash"]
        .as_str()
        .expect("hash")
        .to_owned();
    let bad =
        format!(r#"[{{"propose": {{"topic": "chem/y"}}}}, {{"claim": {{"intent": "{first}"}}}}]"#);
    let bad_plan = dir.path().join("bad.json");
    std::fs::write(&bad_plan, bad).expect("plan");
    let (_, err) = nexus_fails(&["batch", bad_plan.to_str().expect("path")], &env);
    assert!(
        err.contains("failed at step 1; nothing was stored"),
        "{err}"
    );
    assert!(err.contains("already_resolved"), "{err}");
    let log = json(&nexus_ok(&["--json", "log"], &env));
    assert_eq!(log["head"], 4, "nothing stored: {log}");
    // The log of a batch replays like any other.
    let out = nexus_ok(&["verify", &server.url, "--replay"], &env);
    assert!(out.contains("4 entries"), "{out}");

    for (plan, says) in [
        ("", "no steps"),
        ("{\"propose\": {}}\n", "propose needs a topic"),
        (
            "{\"claim\": {\"intent\": \"@5\"}}\n",
            "only the steps before it",
        ),
        ("{\"fly\": {}}\n", "unknown step"),
        ("not json\n", "line 1 of the plan is not JSON"),
    ] {
        let p = dir.path().join("p.jsonl");
        std::fs::write(&p, plan).expect("plan");
        let (_, err) = nexus_fails(&["batch", p.to_str().expect("path")], &env);
        assert!(err.contains(says), "{plan:?}: {err}");
    }
    let (_, err) = nexus_fails(&["batch", "/nonexistent/plan"], &env);
    assert!(err.contains("cannot read the plan"), "{err}");
}
