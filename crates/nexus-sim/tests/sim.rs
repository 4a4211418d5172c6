//! The simulator in CI: a bounded number of seeds with every fault on, the same seed
//! giving the same history byte for byte, and the checker catching a broken commit.
//!
//! `NEXUS_SIM_SEEDS` raises the seeds of each shard (default [`CI_SEEDS`]); the long
//! run is `cargo run -p nexus-sim --release -- --seeds 10000`.

use nexus_sim::{Broken, Faults, Options, Violation, run_seed};

/// Seeds per shard in CI (four shards: about 15 s each in a debug build).
const CI_SEEDS: u64 = 750;

fn seeds() -> u64 {
    std::env::var("NEXUS_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(CI_SEEDS)
}

/// Runs `seeds()` seeds of shard `shard` (seeds `shard·10⁶ + i`) with every fault.
fn shard(shard: u64) {
    let options = Options::default();
    assert_eq!(options.faults, Faults::all());
    let from = shard * 1_000_000;
    for seed in from..from + seeds() {
        let run = run_seed(seed, &options);
        assert!(run.verdict.violations.is_empty(), "{}", run.report());
    }
}

#[test]
fn every_fault_shard_0() {
    shard(0);
}

#[test]
fn every_fault_shard_1() {
    shard(1);
}

#[test]
fn every_fault_shard_2() {
    shard(2);
}

#[test]
fn every_fault_shard_3() {
    shard(3);
}

#[test]
fn the_same_seed_gives_the_same_history_byte_for_byte() {
    let options = Options::default();
    for seed in [0, 17, 4_242] {
        let (a, b) = (run_seed(seed, &options), run_seed(seed, &options));
        assert_eq!(a.history.trace, b.history.trace, "seed {seed}");
        assert_eq!(a.verdict.export, b.verdict.export, "seed {seed}");
        assert_eq!(a.history.states, b.history.states, "seed {seed}");
        assert_eq!(a.history.kv, b.history.kv, "seed {seed}");
        assert_eq!(a.history.injected, b.history.injected, "seed {seed}");
        assert!(a.verdict.log_entries > 0, "seed {seed} committed nothing");
    }
    let (a, b) = (run_seed(1, &options), run_seed(2, &options));
    assert_ne!(a.history.trace, b.history.trace);
}

/// Seeds of the bounded search for a violation of a broken coordinator.
const SEARCH: u64 = 100;

/// The first seed below [`SEARCH`] whose history the checker refuses, with its
/// violations.
fn first_violation(broken: Broken) -> Option<(u64, Vec<Violation>)> {
    let options = Options {
        broken,
        ..Options::default()
    };
    (0..SEARCH).find_map(|seed| {
        let run = run_seed(seed, &options);
        (!run.verdict.violations.is_empty()).then_some((seed, run.verdict.violations))
    })
}

#[test]
fn the_checker_catches_commits_without_read_checks() {
    // Read checks off: a claim executed on the Hints from before a deny Hint commits
    // after it (the deny-Hint race of issue 10): the log no longer replays.
    let (seed, violations) =
        first_violation(Broken::StripReads).expect("no violation in the bounded search");
    let race = violations.iter().any(|v| match v {
        Violation::Replay(e) => e.contains("inadmissible"),
        Violation::NotLinearizable { .. } => true,
        _ => false,
    });
    assert!(race, "seed {seed}: {violations:?}");
}

#[test]
fn the_checker_catches_a_coordinator_that_ignores_expected_values() {
    let (seed, violations) =
        first_violation(Broken::IgnoreExpected).expect("no violation in the bounded search");
    assert!(
        violations.iter().any(|v| matches!(
            v,
            Violation::Replay(_) | Violation::DoubleClaim(_) | Violation::NotLinearizable { .. }
        )),
        "seed {seed}: {violations:?}"
    );
}

#[test]
fn without_faults_nothing_is_unknown() {
    let options = Options {
        faults: Faults::none(),
        ..Options::default()
    };
    for seed in 0..50 {
        let run = run_seed(seed, &options);
        assert!(run.verdict.violations.is_empty(), "{}", run.report());
        assert!(run.history.injected.is_empty());
        assert!(run.history.calls.iter().all(|c| !c.answer.unknown()));
    }
}

#[test]
fn faults_parse_and_print_as_the_reproduction_takes_them() {
    for arg in ["all", "none", "reset,kv-lag", "lost-response", "stall"] {
        let f = Faults::parse(arg).expect("known faults");
        assert_eq!(f.to_arg(), arg);
    }
    assert!(Faults::parse("gremlins").is_err());
    let repro = Options::default().repro(12345);
    assert_eq!(
        repro,
        "cargo run -p nexus-sim --release -- --seed 12345 --faults all"
    );
}

/// Seeds of the sharded runs in CI (each about as costly as an unsharded one).
const SHARDED_SEEDS: u64 = 150;

/// Runs `SHARDED_SEEDS` seeds over `shards` coordinator shards with every fault
/// (stalled cross-shard commits included).
fn sharded(shards: usize) {
    let options = Options {
        shards,
        ..Options::default()
    };
    let mut stalled = 0;
    for seed in 0..SHARDED_SEEDS {
        let run = run_seed(seed, &options);
        assert!(run.verdict.violations.is_empty(), "{}", run.report());
        assert_eq!(run.history.other_shards.len(), shards - 1);
        stalled += run.history.injected.get("stall").copied().unwrap_or(0);
    }
    assert!(
        stalled > 0,
        "no cross-shard commit stalled in {SHARDED_SEEDS} seeds"
    );
}

#[test]
fn every_fault_two_shards() {
    sharded(2);
}

#[test]
fn every_fault_four_shards() {
    sharded(4);
}

#[test]
fn every_fault_eight_shards() {
    sharded(8);
}

#[test]
fn a_sharded_seed_gives_the_same_history_byte_for_byte() {
    let options = Options {
        shards: 4,
        ..Options::default()
    };
    for seed in [3, 99] {
        let (a, b) = (run_seed(seed, &options), run_seed(seed, &options));
        assert_eq!(a.history.trace, b.history.trace, "seed {seed}");
        assert_eq!(
            a.history.other_shards, b.history.other_shards,
            "seed {seed}"
        );
        assert_eq!(a.verdict.export, b.verdict.export, "seed {seed}");
    }
    assert_eq!(
        options.repro(7),
        "cargo run -p nexus-sim --release -- --seed 7 --faults all --shards 4"
    );
}
