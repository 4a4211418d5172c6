//! `nexus demo`: the swarm on an embedded server and on a running one; the summary is
//! a function of the seed; the run verifies with `--replay`.

mod common;

use common::{Server, nexus, nexus_fails, nexus_ok};
use serde_json::Value;

const FAST: &[&str] = &["--agents", "4", "--work", "0ms", "--lease", "1s"];

fn demo(extra: &[&str]) -> String {
    let mut args = vec!["demo"];
    args.extend_from_slice(FAST);
    args.extend_from_slice(extra);
    nexus_ok(&args, &[])
}

#[test]
fn same_seed_same_summary_and_the_log_replays() {
    let first = demo(&["--seed", "11"]);
    let second = demo(&["--seed", "11"]);
    assert_eq!(first, second, "the summary is a function of the seed");
    assert!(
        first.starts_with("neXus demo, seed 11: 4 agents"),
        "{first}"
    );
    assert!(
        first.contains("verify         --replay ok"),
        "the run ends with a passing replay: {first}"
    );
    assert!(first.contains("contract denied r"), "{first}");
    assert!(first.contains("(leases lapsed, taken over)"), "{first}");
    let other = demo(&["--seed", "12"]);
    assert_ne!(first, other, "another seed, another problem");
}

#[test]
fn against_a_running_server_the_summary_is_the_same() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), true);
    let json: Value =
        serde_json::from_str(&demo(&["--seed", "5", "--json", "--server", &server.url]))
            .expect("one JSON document");
    assert_eq!(json["verified"], true, "{json}");
    assert_eq!(json["seed"], 5);
    assert_eq!(json["agents"], 4);
    assert!(
        !json["denied_regions"].as_array().expect("list").is_empty(),
        "{json}"
    );
    assert_eq!(json["crashed"].as_array().expect("list").len(), 2, "{json}");
    let embedded: Value =
        serde_json::from_str(&demo(&["--seed", "5", "--json"])).expect("one JSON document");
    assert_eq!(json, embedded, "the host does not change the summary");
    // The server's log verifies on its own too, and holds the contract's deny Hints.
    let out = nexus_ok(&["verify", "--replay", &server.url], &[]);
    assert!(out.starts_with("ok: "), "{out}");
    let hints = nexus_ok(&["--server", &server.url, "hints"], &[]);
    assert!(hints.contains("failure budget spent"), "{hints}");
}

#[test]
fn a_closed_server_is_refused_with_the_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), false);
    let mut args = vec!["demo", "--seed", "1", "--server", &server.url];
    args.extend_from_slice(FAST);
    let (_, err) = nexus_fails(&args, &[]);
    assert!(err.contains("serve with --open"), "{err}");
    assert!(err.contains("author_not_allowed"), "{err}");
}

#[test]
fn work_longer_than_half_a_lease_is_refused() {
    let out = nexus(&["demo", "--work", "1s", "--lease", "1s"], &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("must be under half of --lease"), "{err}");
}
