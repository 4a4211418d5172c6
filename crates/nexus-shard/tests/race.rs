//! Claim races across shards: two commits that expect the same Intent state, each with
//! a key of its own on some shard, run interleaved call by call with lost answers —
//! exactly one applies, every round.

mod common;

use common::*;
use nexus_shard::{CrossCommit, CrossError, Fault, ShardMap, ShardStep};
use nexus_store::{Commit, CommitOutcome, MemoryStore};

/// xorshift64*: a round's schedule replays from its number.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}

/// One racer: its machine, and its outcome once done (`None` inside: unknown).
struct Racer {
    cc: CrossCommit,
    done: Option<Result<CommitOutcome, CrossError>>,
}

/// Advances `r` by one call; lost answers as `rng` draws them.
fn step(r: &mut Racer, stores: &[MemoryStore], rng: &mut Rng) {
    if r.done.is_some() {
        return;
    }
    match r.cc.poll() {
        ShardStep::Call { shard, commit } => {
            let fault = match rng.below(10) {
                0 => Fault::LoseAnswer,
                1 => Fault::LoseCall,
                _ => Fault::Deliver,
            };
            let answer = call(&stores[shard], &commit, fault).expect("no stall");
            r.cc.feed(shard, answer);
        }
        ShardStep::Read { .. } => panic!("a commit never reads"),
        ShardStep::Done(d) => r.done = Some(d),
    }
}

#[test]
fn two_hundred_cross_shard_claim_races_have_exactly_one_winner_each() {
    let n = 4;
    let map = ShardMap::new(n).expect("map");
    let mut shapes = std::collections::BTreeSet::new();
    for round in 0..200usize {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ round as u64);
        let stores = stores(n);
        let x = round % n;
        let intent = key("intent/", n, x, round);
        put(&stores[x], &intent, "available");
        let (a, b) = (rng.below(n as u64) as usize, rng.below(n as u64) as usize);
        let own = |who: &str, shard: usize, j: usize| {
            let k = key("acts/", n, shard, 1000 * j + round);
            let c = Commit::new(
                vec![
                    cas(&intent, Some("available"), Some(&format!("claimed-{who}"))),
                    cas(&k, None, Some(who)),
                ],
                vec![format!("claim {who}").into_bytes()],
            );
            (k, c)
        };
        let (ka, ca) = own("A", a, 1);
        let (kb, cb) = own("B", b, 2);
        let mut racers = [
            Racer {
                cc: CrossCommit::new(&map, &ca, 0, 0).expect("split"),
                done: None,
            },
            Racer {
                cc: CrossCommit::new(&map, &cb, 0, 1).expect("split"),
                done: None,
            },
        ];
        shapes.insert((
            racers[0].cc.split().participants(),
            racers[1].cc.split().participants(),
        ));
        let mut steps = 0;
        while racers.iter().any(|r| r.done.is_none()) {
            let i = rng.below(2) as usize;
            step(&mut racers[i], &stores, &mut rng);
            steps += 1;
            assert!(steps < 1_000, "round {round} does not finish");
        }
        let claimed = get(&stores[x], &intent).expect("intent state");
        let winner = match claimed.as_str() {
            "claimed-A" => 0,
            "claimed-B" => 1,
            other => panic!("round {round}: nobody won ({other})"),
        };
        let (win_key, lose_key) = if winner == 0 { (&ka, &kb) } else { (&kb, &ka) };
        assert!(
            get(&stores[map.home(win_key)], win_key).is_some(),
            "round {round}"
        );
        assert_eq!(
            get(&stores[map.home(lose_key)], lose_key),
            None,
            "round {round}"
        );
        for (i, r) in racers.iter().enumerate() {
            match r.done.as_ref().expect("done") {
                Ok(CommitOutcome::Applied { .. }) => assert_eq!(i, winner, "round {round}"),
                Ok(CommitOutcome::Conflict(f)) => {
                    assert_ne!(i, winner, "round {round}");
                    assert!(f.iter().any(|f| f.key == intent), "round {round}: {f:?}");
                }
                // A single-shard commit's lost answer: the state above decided it.
                Err(CrossError::OutcomeUnknown { .. }) => {}
                other => panic!("round {round}: {other:?}"),
            }
        }
        for s in &stores {
            assert!(pending_rows(s).is_empty(), "round {round}");
        }
    }
    // The rounds covered single-shard and cross-shard racers alike.
    assert!(shapes.len() > 10, "{shapes:?}");
}
