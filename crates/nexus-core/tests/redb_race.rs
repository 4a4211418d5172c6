//! Exactly-once claims through the core on the real redb store: in every round a fresh
//! Intent is proposed, then 2 to 8 threads, each with its own agent key, race
//! `act(claim)` on it at the same `now`. Exactly one of them gets the lease (token 1),
//! every loser is told who won or that it lost the race at the commit point, the stored
//! state names the winner, and the commit log holds exactly one claim per round.

mod common;

use std::collections::BTreeMap;
use std::sync::Barrier;
use std::time::Instant;

use common::*;
use nexus_core::storage::keys;
use nexus_core::*;
use nexus_store_redb::RedbStore;

type Redb = CompositeColdStorage<RedbStore, RedbStore, RedbStore>;

const ROUNDS: u64 = 1_000;
const MIN_THREADS: usize = 2;
const MAX_THREADS: usize = 8;
const LEASE_MS: u64 = 30_000;
/// Proposer of every Intent; agents are `key(AGENT_BASE + t)` for thread `t`.
const PROPOSER: u8 = 1;
const AGENT_BASE: u8 = 10;

/// The host time of round `round`.
fn now_of(round: u64) -> u64 {
    T0 + round * 1_000
}

/// How many threads race in round `round`: a fixed, well-mixed choice in 2..=8, so that
/// a failure reproduces with the same contention.
fn threads_of(round: u64) -> usize {
    let mut x = round.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    x ^= x >> 31;
    x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^= x >> 29;
    let span = (MAX_THREADS - MIN_THREADS + 1) as u64;
    MIN_THREADS + usize::try_from(x % span).expect("small")
}

/// Proposes the Intent of round `round`.
fn propose(s: &Redb, round: u64) -> FihHash {
    let now = now_of(round);
    let proposed = intent(
        &key(PROPOSER),
        "race/claims",
        body(round as i64),
        vec![],
        now,
    );
    let sub = s.submit(&proposed, now).expect("propose");
    assert!(!sub.duplicate, "round {round}: a fresh Intent");
    assert_eq!(
        s.intent_state(&sub.hash).expect("state"),
        Some(IntentState::Available { token: 0 }),
        "round {round}: proposed Intents start available"
    );
    sub.hash
}

/// What one round produced.
struct Outcome {
    /// The winner's claim.
    won: Action,
    /// How many losers lost the compare-and-swap at the commit point (the others read
    /// the winner's claim and were refused before committing).
    conflicts: usize,
}

/// One racing round on the freshly proposed Intent `h`.
fn race(s: &Redb, agents: &[SigningKey], round: u64, h: FihHash) -> Outcome {
    let now = now_of(round);
    let threads = threads_of(round);
    // Sign outside the race so that the threads reach the store together.
    let claims: Vec<Action> = agents[..threads]
        .iter()
        .map(|k| claim(k, h, LEASE_MS, now))
        .collect();
    let barrier = Barrier::new(threads);
    let results: Vec<CoreResult<Applied>> = std::thread::scope(|scope| {
        let handles: Vec<_> = claims
            .iter()
            .map(|action| {
                let barrier = &barrier;
                scope.spawn(move || {
                    barrier.wait();
                    s.act(action, now)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|t| t.join().expect("racer panicked"))
            .collect()
    });

    let winners: Vec<usize> = results
        .iter()
        .enumerate()
        .filter(|(_, r)| r.is_ok())
        .map(|(t, _)| t)
        .collect();
    assert_eq!(
        winners.len(),
        1,
        "round {round} ({threads} threads): exactly one winner, got {winners:?}: {results:?}"
    );
    let winner = winners[0];
    let winner_key = agents[winner].author();
    match &results[winner] {
        Ok(Applied::Leased(lease)) => assert_eq!(
            *lease,
            Lease {
                intent: h,
                token: 1,
                lease_until: now + LEASE_MS,
                takeover: false,
            },
            "round {round}: the winner's lease"
        ),
        other => panic!("round {round}: the winner got {other:?}"),
    }
    let mut conflicts = 0;
    for (t, result) in results.iter().enumerate().filter(|(t, _)| *t != winner) {
        match result {
            Err(CoreError::AlreadyClaimed {
                holder,
                lease_until,
                token,
            }) => {
                assert_eq!(
                    *holder, winner_key,
                    "round {round}: loser {t} names the winner"
                );
                assert_eq!((*token, *lease_until), (1, now + LEASE_MS), "round {round}");
            }
            Err(CoreError::Conflict { keys: failed }) => {
                assert!(
                    failed.contains(&keys::intent(&h)),
                    "round {round}: loser {t}: {failed:?}"
                );
                conflicts += 1;
            }
            other => panic!("round {round}: loser {t} got {other:?}"),
        }
    }
    assert_eq!(
        s.intent_state(&h).expect("state"),
        Some(IntentState::Claimed {
            holder: winner_key,
            lease_until: now + LEASE_MS,
            token: 1,
        }),
        "round {round}: the stored state names the winner"
    );
    Outcome {
        won: claims[winner].clone(),
        conflicts,
    }
}

#[test]
fn concurrent_claims_through_the_core_succeed_exactly_once() {
    let started = Instant::now();
    let dir = tempfile::tempdir().expect("temp dir");
    let store = RedbStore::open(dir.path().join("race.redb")).expect("open redb");
    let s: Redb = CompositeColdStorage::unified(store, Limits::default());
    s.init_deployment(&dep()).expect("deployment");
    let agents: Vec<SigningKey> = (0..MAX_THREADS)
        .map(|t| key(AGENT_BASE + u8::try_from(t).expect("few threads")))
        .collect();

    // intent hash -> (round, the winning claim's wire JSON)
    let mut winners = BTreeMap::new();
    let mut conflicts = 0;
    let mut contention = [0u64; MAX_THREADS + 1];
    std::thread::scope(|scope| {
        // A proposer runs a few rounds ahead (its fsyncs overlap the races); every race
        // is still on an Intent nobody has touched since it was proposed.
        let (fresh, proposed) = std::sync::mpsc::sync_channel(4);
        let s = &s;
        scope.spawn(move || {
            for round in 0..ROUNDS {
                if fresh.send((round, propose(s, round))).is_err() {
                    return; // the racing side failed
                }
            }
        });
        for (round, h) in proposed {
            let outcome = race(s, &agents, round, h);
            winners.insert(h, (round, outcome.won.to_value()));
            conflicts += outcome.conflicts;
            contention[threads_of(round)] += 1;
        }
    });
    assert_eq!(winners.len() as u64, ROUNDS, "every round was raced");
    assert!(
        contention[MIN_THREADS..].iter().all(|&n| n > 0),
        "every thread count was exercised: {contention:?}"
    );

    // The commit log: one Intent record and exactly one claim action per round, each
    // claim by that round's winner, densely numbered.
    let mut claims: BTreeMap<FihHash, Vec<serde_json::Value>> = BTreeMap::new();
    let mut records = 0;
    let mut next = 1;
    loop {
        let page = s.log_entries(next, 500).expect("log entries");
        let Some((last, _)) = page.last() else {
            break;
        };
        next = last + 1;
        for (_, entry) in page {
            match entry {
                LogEntry::Record { hash, kind, .. } => {
                    assert_eq!(kind, Kind::Intent);
                    assert!(
                        winners.contains_key(&hash),
                        "logged record {hash} was proposed"
                    );
                    records += 1;
                }
                LogEntry::Action { action, .. } => {
                    // Compared whole with the winner's signed claim below (re-verifying
                    // 1,000 signatures would double the test's time in a debug build).
                    assert_eq!(action["kind"], "claim", "only claims were applied");
                    let intent: FihHash = action["intent"]
                        .as_str()
                        .and_then(|h| h.parse().ok())
                        .expect("a logged claim names its Intent");
                    claims.entry(intent).or_default().push(action);
                }
            }
        }
    }
    assert_eq!(next - 1, 2 * ROUNDS, "log head");
    assert_eq!(records, ROUNDS, "one Intent record per round");
    assert_eq!(
        claims.len() as u64,
        ROUNDS,
        "claims of every round's Intent"
    );
    for (h, (round, winner)) in &winners {
        assert_eq!(
            claims.get(h),
            Some(&vec![winner.clone()]),
            "round {round}: exactly one logged claim, by the winner"
        );
    }
    // Losers must also have reached the commit point, or the CAS went untested.
    assert!(conflicts > 0, "no loser ever lost at the commit point");
    let raced: u64 = contention
        .iter()
        .enumerate()
        .map(|(n, c)| n as u64 * c)
        .sum();
    eprintln!(
        "{ROUNDS} rounds, {raced} claims raced by 2-8 threads ({conflicts} losers lost the CAS \
         at the commit point, the others saw the winner's claim) through the core on redb \
         in {:.2?}",
        started.elapsed()
    );
}
