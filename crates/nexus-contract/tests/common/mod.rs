//! A lab: a real in-memory store, agents with keys, and a contract evaluator fed
//! from the store's commit log.
#![allow(dead_code)]

use std::sync::Arc;

use nexus_contract::{Contract, Evaluator};
use nexus_core::{
    Action, ActionContent, Applied, ColdStorage, CompositeColdStorage, Content, CoreError, Fact,
    FihHash, Hint, Intent, Kind, Limits, LogEntry, Record, Resolves, SigningKey,
};
use nexus_store::MemoryStore;
use serde_json::Value;

pub type Store = CompositeColdStorage<MemoryStore, MemoryStore, MemoryStore>;

pub const T0: u64 = 1_764_000_000_000;
pub const HOUR: u64 = 3_600_000;

pub fn key(i: u8) -> SigningKey {
    SigningKey::from_seed(&[i; 32])
}

pub fn example(name: &str) -> Arc<Contract> {
    let path = format!(
        "{}/../../examples/contracts/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    let src = std::fs::read_to_string(&path).expect("example contract");
    Arc::new(Contract::parse(name, &src).unwrap_or_else(|e| panic!("{e}")))
}

pub fn fact(key: &SigningKey, topic: &str, body: Value, time: u64) -> Fact {
    Fact {
        topic: topic.parse().expect("topic"),
        body,
        parents: vec![],
        resolves: None,
        author: key.author(),
        time,
    }
}

pub fn sign(content: Content, key: &SigningKey) -> Record {
    Record::sign(content, key, &Limits::default()).expect("valid record")
}

pub struct Lab {
    pub store: Store,
    pub eval: Evaluator,
    /// Log entries already played into the evaluator.
    pub played: u64,
}

/// The deployment id of a lab's store, which its claims are signed for.
pub fn lab_deployment() -> nexus_core::Deployment {
    "lab".parse().expect("deployment")
}

impl Lab {
    pub fn new(contract: Arc<Contract>) -> Self {
        let store = CompositeColdStorage::unified(MemoryStore::new(), Limits::default());
        store
            .init_deployment(&lab_deployment())
            .expect("deployment");
        Self {
            store,
            eval: Evaluator::new(contract),
            played: 0,
        }
    }

    pub fn propose(
        &self,
        who: &SigningKey,
        topic: &str,
        body: Value,
        time: u64,
    ) -> Result<FihHash, CoreError> {
        let rec = sign(
            Content::Intent(Intent {
                topic: topic.parse().expect("topic"),
                body,
                parents: vec![],
                author: who.author(),
                time,
            }),
            who,
        );
        self.store.submit(&rec, time).map(|s| s.hash)
    }

    pub fn claim(&self, who: &SigningKey, intent: FihHash, time: u64) -> Result<u64, CoreError> {
        let action = Action::sign(
            ActionContent::Claim {
                intent,
                lease_ms: 60_000,
                author: who.author(),
                deployment: Some(lab_deployment()),
                time,
            },
            who,
            &Limits::default(),
        )
        .expect("valid action");
        match self.store.act(&action, time)? {
            Applied::Leased(l) => Ok(l.token),
            other => panic!("unexpected {other:?}"),
        }
    }

    /// Proposes, claims and resolves an Intent under `topic` with a Fact of `body`.
    pub fn run(&self, who: &SigningKey, topic: &str, body: Value, time: u64) -> FihHash {
        let intent = self
            .propose(who, topic, serde_json::json!({"run": time}), time)
            .expect("admissible");
        let token = self.claim(who, intent, time).expect("claimable");
        let mut f = fact(who, topic, body, time + 1);
        f.parents = vec![intent];
        f.resolves = Some(Resolves { intent, token });
        self.submit_fact(who, f)
    }

    pub fn submit_fact(&self, who: &SigningKey, f: Fact) -> FihHash {
        let time = f.time;
        let rec = sign(Content::Fact(f), who);
        self.store.submit(&rec, time).expect("fact commits").hash
    }

    /// Plays the new commit log entries into the evaluator, and commits the Hints it
    /// emits into the store (as the host does), returning them.
    pub fn play(&mut self, now: u64) -> Vec<Record> {
        let mut emitted = Vec::new();
        loop {
            let entries = self.store.log_entries(self.played + 1, 100).expect("log");
            if entries.is_empty() {
                return emitted;
            }
            for (seq, e) in entries {
                self.played = seq;
                if let LogEntry::Record {
                    hash,
                    kind: Kind::Fact,
                    at,
                } = e
                {
                    let rec = self
                        .store
                        .get_record(&hash)
                        .expect("read")
                        .expect("committed");
                    let Content::Fact(f) = rec.content() else {
                        unreachable!()
                    };
                    let delta = self.eval.add_fact(hash, f, at);
                    emitted.extend(delta.added);
                }
            }
            for h in &emitted {
                self.store.submit(h, now).expect("hint commits");
            }
        }
    }

    pub fn hints(&self) -> Vec<Hint> {
        self.eval
            .hints()
            .map(|r| match r.content() {
                Content::Hint(h) => h.clone(),
                _ => unreachable!(),
            })
            .collect()
    }
}
