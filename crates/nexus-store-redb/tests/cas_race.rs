//! Exactly-once claims under contention: threads race to claim the same fresh key with
//! `put_state` and with `commit` (op + log entry); every round has exactly one winner,
//! the stored value names it and the commit log gets exactly one entry per round.

use std::sync::Barrier;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use nexus_store::{CasOp, Commit, CommitOutcome, LOG_HEAD_KEY, ObjectStore, log_key};
use nexus_store_redb::RedbStore;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

const ROUNDS_PER_CASE: u64 = 100;
const CASES: u32 = 10;

/// What one thread got in one round: whether its `put_state` and its `commit` won, and
/// the log sequence number its commit got.
struct Attempt {
    state_won: bool,
    commit_seq: Option<u64>,
}

fn state_key(round: u64) -> String {
    format!("claim/state/{round:06}")
}

fn commit_key(round: u64) -> String {
    format!("claim/commit/{round:06}")
}

fn claim(thread: usize) -> Vec<u8> {
    format!("claimed:{thread}").into_bytes()
}

fn attempt(store: &RedbStore, round: u64, thread: usize) -> Attempt {
    let state_won = store
        .put_state(&state_key(round), Some(b"available"), &claim(thread))
        .expect("put_state");
    let outcome = store
        .commit(&Commit {
            reads: Vec::new(),
            ops: vec![CasOp {
                key: commit_key(round),
                expected: Some(b"available".to_vec()),
                new: Some(claim(thread)),
            }],
            log: vec![format!("round {round} claimed by {thread}").into_bytes()],
        })
        .expect("commit");
    let commit_seq = match outcome {
        CommitOutcome::Applied { first_seq } => {
            Some(first_seq.expect("a commit with a log entry gets a sequence number"))
        }
        CommitOutcome::Conflict(failures) => {
            assert_eq!(failures.len(), 1);
            assert_eq!(failures[0].key, commit_key(round));
            let current = failures[0].current.as_deref().expect("claimed, not absent");
            assert!(current.starts_with(b"claimed:"), "{current:?}");
            None
        }
        other => panic!("unexpected outcome {other:?}"),
    };
    Attempt {
        state_won,
        commit_seq,
    }
}

/// Makes the keys of `rounds` available, in one commit (one fsync).
fn prepare(store: &RedbStore, rounds: std::ops::Range<u64>) {
    let ops = rounds
        .flat_map(|r| [state_key(r), commit_key(r)])
        .map(|key| CasOp {
            key,
            expected: None,
            new: Some(b"available".to_vec()),
        })
        .collect();
    let outcome = store
        .commit(&Commit {
            reads: Vec::new(),
            ops,
            log: vec![],
        })
        .expect("prepare");
    assert_eq!(outcome, CommitOutcome::Applied { first_seq: None });
}

fn race(store: &RedbStore, round: u64, threads: usize) -> Result<(), TestCaseError> {
    let barrier = Barrier::new(threads);
    let attempts: Vec<Attempt> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let barrier = &barrier;
                scope.spawn(move || {
                    barrier.wait();
                    attempt(store, round, t)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("racer panicked"))
            .collect()
    });
    let state_winners: Vec<usize> = (0..threads).filter(|&t| attempts[t].state_won).collect();
    let commit_winners: Vec<(usize, u64)> = (0..threads)
        .filter_map(|t| attempts[t].commit_seq.map(|seq| (t, seq)))
        .collect();
    proptest::prop_assert_eq!(state_winners.len(), 1, "round {}: put_state winners", round);
    proptest::prop_assert_eq!(commit_winners.len(), 1, "round {}: commit winners", round);
    let state_winner = state_winners[0];
    let (commit_winner, seq) = commit_winners[0];
    proptest::prop_assert_eq!(
        store.get_state(&state_key(round)).expect("get"),
        Some(claim(state_winner))
    );
    proptest::prop_assert_eq!(
        store.get_state(&commit_key(round)).expect("get"),
        Some(claim(commit_winner))
    );
    proptest::prop_assert_eq!(
        store.get_state(&log_key(seq)).expect("get log entry"),
        Some(format!("round {round} claimed by {commit_winner}").into_bytes())
    );
    Ok(())
}

#[test]
fn concurrent_claims_succeed_exactly_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = RedbStore::open(dir.path().join("cas.redb")).expect("open");
    let started = Instant::now();
    let rounds = AtomicU64::new(0);
    let mut runner = TestRunner::new(Config {
        cases: CASES,
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&(2usize..=8), |threads| {
        let first = rounds.fetch_add(ROUNDS_PER_CASE, Ordering::SeqCst);
        prepare(&store, first..first + ROUNDS_PER_CASE);
        for round in first..first + ROUNDS_PER_CASE {
            race(&store, round, threads)?;
        }
        Ok(())
    });
    if let Err(err) = result {
        panic!("{err}");
    }
    let rounds = rounds.load(Ordering::SeqCst);
    assert!(rounds >= u64::from(CASES) * ROUNDS_PER_CASE);

    // the log holds exactly one entry per round, densely numbered, each naming its round
    let head = store.get_state(LOG_HEAD_KEY).expect("head");
    assert_eq!(head, Some(rounds.to_string().into_bytes()));
    let log = store
        .list_states("log/0", None, usize::MAX)
        .expect("list log");
    assert_eq!(log.len() as u64, rounds);
    let mut seen = vec![false; rounds as usize];
    for (i, key) in log.iter().enumerate() {
        assert_eq!(*key, log_key(i as u64 + 1));
        let entry = String::from_utf8(store.get_state(key).expect("entry").expect("present"))
            .expect("utf-8");
        let round: usize = entry
            .strip_prefix("round ")
            .and_then(|rest| rest.split(' ').next())
            .and_then(|r| r.parse().ok())
            .expect("entry names its round");
        assert!(!seen[round], "round {round} logged twice");
        seen[round] = true;
    }
    eprintln!(
        "{rounds} contended rounds (put_state + commit, 2-8 threads) in {:.2?}",
        started.elapsed()
    );
}
