//! Serializable commits through the real `nexus serve` binary (design §5, "Isolation:
//! serializable"; issue 10): concurrent requests, each valid on its own, must leave a
//! commit log that is a serial order of them, so that `nexus verify --replay` accepts
//! it. The scenarios are shared with the Worker's tests (`tests/scenarios`).
//!
//! * `deny_hint_race_log_replays`: rounds of 32 claims and one deny Hint selecting
//!   their Intents, sent at the same moment; no claim may commit after the Hint. CI
//!   runs 60 rounds (15–20 s on a loaded 2-core machine); `NEXUS_RACE_ROUNDS=1000` for
//!   a long run (`NEXUS_RACE_INTENTS` sets the claims per round).
//! * `mixed_clients_log_replays`: 8 clients, each doing one seeded random operation a
//!   round (Hints, contract freezes and quorum upgrades, claims, takeovers after lapse,
//!   renewals, resolves, withdrawals); 200 rounds in CI (10–26 s),
//!   `NEXUS_MIXED_ROUNDS=1000` for a long run, `NEXUS_MIXED_SEED` to repeat a run's
//!   choices (the seed is printed), `NEXUS_MIXED_CLIENTS` for more clients.
//!
//! After each run the log passes the replay verifier (the code of `nexus verify
//! --replay`) and the real `nexus verify --replay URL` exits 0.

mod common;
mod scenarios;

use common::{Server, nexus_ok};
use scenarios::{MixedConfig, RaceConfig};

/// Rounds of the deny-Hint race in CI: the group commit of issue 10 broke it in the
/// first or second round of 32 claims on 2 cores, in every one of a dozen runs.
const RACE_ROUNDS: u64 = 60;

/// Rounds of the mixed scenario in CI.
const MIXED_ROUNDS: u64 = 200;

/// `nexus verify --replay URL` exits 0 and says ok.
fn cli_verify_replay(url: &str) {
    let out = nexus_ok(&["verify", "--replay", url], &[]);
    assert!(out.starts_with("ok:"), "{out}");
    assert!(out.contains("lifecycle replayed"), "{out}");
}

#[test]
fn deny_hint_race_log_replays() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), true);
    let config = RaceConfig::from_env(RACE_ROUNDS);
    scenarios::deny_hint_race_replays(std::slice::from_ref(&server.url), config);
    cli_verify_replay(&server.url);
}

#[test]
fn mixed_clients_log_replays() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), true);
    let config = MixedConfig::from_env(MIXED_ROUNDS, true);
    scenarios::mixed_replays(std::slice::from_ref(&server.url), &config);
    cli_verify_replay(&server.url);
}
