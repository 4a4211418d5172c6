//! Property tests of the core over random operation sequences:
//!
//! * **session equivalence** — every operation run through an IoBuffer session
//!   (hydrate → execute → drain → flush) leaves the store byte-for-byte equal to running
//!   it directly, and returns the same result;
//! * **no dangling parent** — every committed record's links are committed;
//! * **fencing** — a resolution lands only for the holder of a live claim presenting
//!   its current token; a takeover happens only after the lease lapsed.

mod common;

use common::*;
use nexus_core::storage::keys;
use nexus_core::*;
use nexus_iobuf::{IoBufferBlob, IoBufferKv, IoBufferObject, StoreSession};
use nexus_store::{MemoryStore, Snapshot};
use proptest::prelude::*;
use serde_json::json;

/// Windows of at most 8 entries, closed at once when shorter.
const FLUSH_POLICY: archive::WindowPolicy = archive::WindowPolicy {
    max_entries: 8,
    max_age_ms: 0,
};

/// One step of a random workload. Indices pick among records created so far.
#[derive(Debug, Clone)]
enum Op {
    Propose {
        agent: u8,
        topic: u8,
        parent: Option<usize>,
    },
    Fact {
        agent: u8,
        topic: u8,
        parent: Option<usize>,
        dangling: bool,
    },
    Claim {
        agent: u8,
        intent: usize,
        lease: u64,
    },
    Renew {
        agent: u8,
        intent: usize,
        token_delta: i8,
    },
    Resolve {
        agent: u8,
        intent: usize,
        token_delta: i8,
    },
    Withdraw {
        agent: u8,
        intent: usize,
    },
    Deny {
        topic: u8,
        ttl: u64,
    },
    Priority {
        topic: u8,
        p: i8,
    },
    Flush,
    Tick(u64),
}

fn arb_op() -> impl Strategy<Value = Op> {
    let agent = 0u8..4;
    let topic = 0u8..3;
    let idx = 0usize..64;
    prop_oneof![
        3 => (agent.clone(), topic.clone(), prop::option::of(idx.clone()))
            .prop_map(|(agent, topic, parent)| Op::Propose { agent, topic, parent }),
        2 => (agent.clone(), topic.clone(), prop::option::of(idx.clone()), prop::bool::weighted(0.2))
            .prop_map(|(agent, topic, parent, dangling)| Op::Fact { agent, topic, parent, dangling }),
        4 => (agent.clone(), idx.clone(), 1_000u64..5_000)
            .prop_map(|(agent, intent, lease)| Op::Claim { agent, intent, lease }),
        1 => (agent.clone(), idx.clone(), -1i8..=1)
            .prop_map(|(agent, intent, token_delta)| Op::Renew { agent, intent, token_delta }),
        3 => (agent.clone(), idx.clone(), -1i8..=1)
            .prop_map(|(agent, intent, token_delta)| Op::Resolve { agent, intent, token_delta }),
        1 => (agent, idx).prop_map(|(agent, intent)| Op::Withdraw { agent, intent }),
        1 => (topic.clone(), 0u64..4_000).prop_map(|(topic, ttl)| Op::Deny { topic, ttl }),
        1 => (topic, -3i8..=3).prop_map(|(topic, p)| Op::Priority { topic, p }),
        1 => Just(Op::Flush),
        3 => (0u64..3_000).prop_map(Op::Tick),
    ]
}

/// What a step produced, in a form both paths must agree on.
#[derive(Debug, PartialEq, Eq)]
enum Out {
    Record(FihHash, bool),
    Lease(u64, u64, bool),
    Withdrawn,
    Flushed(Option<(u64, u64)>, u64),
    Error(&'static str),
}

/// A record or action to apply, built once so that both paths see identical input.
enum Input {
    Record(Record),
    Action(Action),
    Flush,
}

fn apply<K, B, O>(s: &CompositeColdStorage<K, B, O>, input: &Input, now: u64) -> Out
where
    K: nexus_store::KeyValueStore,
    B: nexus_store::BlobStore,
    O: nexus_store::ObjectStore,
{
    let r = match input {
        Input::Record(rec) => s.submit(rec, now).map(|x| Out::Record(x.hash, x.duplicate)),
        Input::Action(a) => s.act(a, now).map(|x| match x {
            Applied::Leased(l) => Out::Lease(l.token, l.lease_until, l.takeover),
            Applied::Withdrawn(_) | Applied::Retracted(_) => Out::Withdrawn,
        }),
        Input::Flush => s
            .flush(&FLUSH_POLICY, now)
            .map(|r| Out::Flushed(r.window.map(|w| (w.first, w.last)), r.cursor)),
    };
    r.unwrap_or_else(|e| Out::Error(e.code()))
}

fn via_session(store: &MemoryStore, input: &Input, now: u64) -> Out {
    let mut driver = StoreSession::new();
    let (out, delta) = driver
        .run(store, |sess| {
            let core = CompositeColdStorage::<IoBufferKv, IoBufferBlob, IoBufferObject>::new(
                sess.kv_buf().clone(),
                sess.blob_buf().clone(),
                sess.object_buf().clone(),
                Limits::default(),
            );
            apply(&core, input, now)
        })
        .expect("session converges");
    delta.flush(store, keys::is_after_commit).expect("flush");
    out
}

/// Checks that every committed record's links are committed records.
fn assert_no_dangling(store: &MemoryStore) {
    let snap = store.snapshot().expect("snapshot");
    for key in snap.states.keys() {
        let Some(hex) = key.strip_prefix(keys::COMMITTED_PREFIX) else {
            continue;
        };
        let h: FihHash = hex.parse().expect("hash key");
        let bytes = snap
            .kv
            .get(&keys::record(&h))
            .expect("committed record has content");
        let rec = Record::from_json(bytes, &Limits::default()).expect("stored record verifies");
        for link in rec.content().links() {
            assert!(
                snap.states.contains_key(&keys::committed(&link)),
                "record {h} links to uncommitted {link}"
            );
        }
    }
}

struct World {
    intents: Vec<FihHash>,
    records: Vec<FihHash>,
    now: u64,
    n: i64,
}

impl World {
    fn pick(v: &[FihHash], i: usize) -> Option<FihHash> {
        (!v.is_empty()).then(|| v[i % v.len()])
    }

    /// The Intent's current fencing token, off by `delta`.
    fn token(direct: &Mem, i: &FihHash, delta: i8) -> Option<u64> {
        let state = direct.intent_state(i).ok()??;
        Some(state.token().saturating_add_signed(i64::from(delta)))
    }

    fn topic(t: u8) -> String {
        format!("lab/t{t}")
    }

    /// Builds the input for `op`; `state_of` reads the direct store to pick tokens.
    fn input(&mut self, op: &Op, direct: &Mem) -> Option<Input> {
        self.n += 1;
        let n = self.n;
        Some(match op {
            Op::Propose {
                agent,
                topic,
                parent,
            } => {
                let parents = parent
                    .and_then(|p| Self::pick(&self.records, p))
                    .into_iter()
                    .collect();
                Input::Record(intent(
                    &key(*agent),
                    &Self::topic(*topic),
                    body(n),
                    parents,
                    self.now,
                ))
            }
            Op::Fact {
                agent,
                topic,
                parent,
                dangling,
            } => {
                let mut parents: Vec<FihHash> = parent
                    .and_then(|p| Self::pick(&self.records, p))
                    .into_iter()
                    .collect();
                if *dangling {
                    parents.push(FihHash::of_canonical(format!("ghost{n}").as_bytes()));
                }
                Input::Record(fact(
                    &key(*agent),
                    &Self::topic(*topic),
                    body(n),
                    parents,
                    None,
                    self.now,
                ))
            }
            Op::Claim {
                agent,
                intent,
                lease,
            } => {
                let i = Self::pick(&self.intents, *intent)?;
                Input::Action(claim(&key(*agent), i, *lease, self.now))
            }
            Op::Renew {
                agent,
                intent,
                token_delta,
            } => {
                let i = Self::pick(&self.intents, *intent)?;
                let token = Self::token(direct, &i, *token_delta)?;
                Input::Action(renew(&key(*agent), i, token, 2_000, self.now))
            }
            Op::Resolve {
                agent,
                intent,
                token_delta,
            } => {
                let i = Self::pick(&self.intents, *intent)?;
                let token = Self::token(direct, &i, *token_delta)?;
                Input::Record(fact(
                    &key(*agent),
                    "lab/results",
                    body(n),
                    vec![],
                    Some((i, token)),
                    self.now,
                ))
            }
            Op::Withdraw { agent, intent } => {
                let i = Self::pick(&self.intents, *intent)?;
                Input::Action(withdraw(&key(*agent), i, self.now))
            }
            Op::Deny { topic, ttl } => Input::Record(hint(
                &key(9),
                topic_selector(&Self::topic(*topic)),
                Effect::Deny,
                &format!("deny {n}"),
                Some(self.now + ttl),
            )),
            Op::Priority { topic, p } => Input::Record(hint(
                &key(9),
                topic_selector(&Self::topic(*topic)),
                Effect::Priority(*p as i64),
                &format!("priority {n}"),
                None,
            )),
            Op::Flush => Input::Flush,
            Op::Tick(_) => return None,
        })
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn sessions_are_equivalent_to_direct_execution_and_invariants_hold(
        ops in prop::collection::vec(arb_op(), 1..48)
    ) {
        let (direct_store, direct) = mem();
        let session_store = MemoryStore::new();
        CompositeColdStorage::unified(session_store.clone(), Limits::default())
            .init_deployment(&dep())
            .expect("deployment");
        let mut world = World { intents: vec![], records: vec![], now: T0, n: 0 };
        for op in &ops {
            if let Op::Tick(dt) = op {
                world.now += dt;
                continue;
            }
            let Some(input) = world.input(op, &direct) else { continue };
            let state_before = match (op, &input) {
                (Op::Resolve { .. }, Input::Record(r)) => match r.content() {
                    Content::Fact(Fact { resolves: Some(res), .. }) => direct.intent_state(&res.intent).expect("state"),
                    _ => None,
                },
                _ => None,
            };
            let a = apply(&direct, &input, world.now);
            let b = via_session(&session_store, &input, world.now);
            prop_assert_eq!(&a, &b, "results differ for {:?}", op);
            prop_assert_eq!(
                direct_store.snapshot().expect("snapshot"),
                session_store.snapshot().expect("snapshot"),
                "stores differ after {:?}", op
            );
            // Fencing: a landed resolution was presented by the live holder with its token.
            if let (Out::Record(_, false), Input::Record(r)) = (&a, &input)
                && let Content::Fact(Fact { resolves: Some(res), author, .. }) = r.content()
            {
                match state_before {
                    Some(IntentState::Claimed { holder, lease_until, token }) => {
                        prop_assert_eq!(holder, *author);
                        prop_assert_eq!(token, res.token);
                        prop_assert!(lease_until > world.now);
                    }
                    other => prop_assert!(false, "resolution landed from state {:?}", other),
                }
            }
            if let (Out::Record(h, false), Input::Record(r)) = (&a, &input) {
                world.records.push(*h);
                if matches!(r.content(), Content::Intent(_)) {
                    world.intents.push(*h);
                }
            }
        }
        assert_no_dangling(&direct_store);
    }
}

#[test]
fn a_session_that_loses_the_race_changes_nothing_and_retries_into_a_clear_error() {
    let (store, direct) = mem();
    let (alice, bob, carol) = (key(1), key(2), key(3));
    let i = intent(&alice, "t", json!({}), vec![], T0);
    direct.submit(&i, T0).expect("propose");

    // Bob's session hydrates and executes, then Carol commits first.
    let mut driver = StoreSession::new();
    let bob_claim = claim(&bob, i.hash(), 5_000, T0);
    let run = |sess: &nexus_iobuf::IoBufferSession| {
        CompositeColdStorage::new(
            sess.kv_buf().clone(),
            sess.blob_buf().clone(),
            sess.object_buf().clone(),
            Limits::default(),
        )
        .act(&bob_claim, T0)
        .map(|_| ())
        .map_err(|e| e.code())
    };
    let (out, delta) = driver.run(&store, run).expect("session");
    assert_eq!(out, Ok(()));
    direct
        .act(&claim(&carol, i.hash(), 5_000, T0), T0)
        .expect("carol wins");
    let before = store.snapshot().expect("snapshot");
    let failures = match delta.flush(&store, keys::is_after_commit) {
        Err(nexus_iobuf::FlushError::Conflict { failures }) => failures,
        other => panic!("expected a conflict, got {other:?}"),
    };
    assert!(
        failures.iter().any(|f| f.key == keys::intent(&i.hash())),
        "{failures:?}"
    );
    assert_eq!(
        store.snapshot().expect("snapshot"),
        before,
        "nothing partial"
    );
    // Retrying from hydration now reports who holds the Intent.
    driver.restart(&failures);
    let (out, delta) = driver.run(&store, run).expect("session");
    assert_eq!(out, Err("already_claimed"));
    assert!(delta.is_empty());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Duplicated delivery: every signed action, delivered any number of times in any
    /// order (with the clock moving on, leases lapsing), takes effect at most once —
    /// each later copy is `replayed` (or refused by its time), never applied, and the
    /// commit log holds each action hash at most once.
    #[test]
    fn every_action_takes_effect_at_most_once_under_duplicated_delivery(
        script in prop::collection::vec((0usize..3, 0usize..4, 0u64..3, 0u64..1_500), 1..24),
        copies in prop::collection::vec(0usize..64, 1..64),
    ) {
        let (_, s) = mem();
        let agents = [key(1), key(2), key(3)];
        let i = intent(&agents[0], "dup", json!({}), vec![], T0);
        s.submit(&i, T0).expect("propose");
        // The signed actions: claims, renewals with a plausible token, a withdrawal.
        let actions: Vec<Action> = script
            .iter()
            .enumerate()
            .map(|(n, (who, what, token, dt))| {
                let k = &agents[*who];
                let time = T0 + n as u64 * 10 + dt;
                match what {
                    0 | 1 => claim(k, i.hash(), 1_000, time),
                    2 => renew(k, i.hash(), 1 + token, 1_000, time),
                    _ => withdraw(k, i.hash(), time),
                }
            })
            .collect();
        let mut applied = std::collections::BTreeSet::new();
        let mut now = T0;
        for c in &copies {
            let a = &actions[c % actions.len()];
            now += (*c as u64 % 7) * 100;
            match s.act(a, now) {
                Ok(_) => prop_assert!(applied.insert(a.hash()), "applied twice: {}", a.hash()),
                Err(CoreError::Replayed { action }) => {
                    prop_assert_eq!(action, a.hash());
                    prop_assert!(applied.contains(&a.hash()), "replayed before it applied");
                }
                Err(_) => {}
            }
        }
        let mut logged = std::collections::BTreeSet::new();
        for (_, e) in s.log_entries(1, 10_000).expect("log") {
            if let LogEntry::Action { action, .. } = e {
                let a = Action::from_value(action, &Limits::default()).expect("logged action");
                prop_assert!(logged.insert(a.hash()), "logged twice: {}", a.hash());
            }
        }
        prop_assert_eq!(logged, applied);
    }
}
