//! Builders shared by the core's integration tests.
#![allow(dead_code, missing_docs)]

use nexus_core::*;
use nexus_store::MemoryStore;
use serde_json::{Value, json};

pub type Mem = CompositeColdStorage<MemoryStore, MemoryStore, MemoryStore>;

pub const T0: u64 = 1_764_000_000_000;

pub fn key(n: u8) -> SigningKey {
    SigningKey::from_seed(&[n; 32])
}

/// The deployment every test store has and every test action is signed for.
pub fn dep() -> Deployment {
    "test-deployment".parse().expect("deployment")
}

pub fn mem() -> (MemoryStore, Mem) {
    let store = MemoryStore::new();
    let s = CompositeColdStorage::unified(store.clone(), Limits::default());
    s.init_deployment(&dep()).expect("deployment");
    (store, s)
}

pub fn topic(s: &str) -> Topic {
    s.parse().expect("topic")
}

pub fn intent(k: &SigningKey, t: &str, body: Value, parents: Vec<FihHash>, time: u64) -> Record {
    Record::sign(
        Content::Intent(Intent {
            topic: topic(t),
            body,
            parents,
            author: k.author(),
            time,
        }),
        k,
        &Limits::default(),
    )
    .expect("sign intent")
}

pub fn fact(
    k: &SigningKey,
    t: &str,
    body: Value,
    parents: Vec<FihHash>,
    resolves: Option<(FihHash, u64)>,
    time: u64,
) -> Record {
    Record::sign(
        Content::Fact(Fact {
            topic: topic(t),
            body,
            parents,
            resolves: resolves.map(|(intent, token)| Resolves { intent, token }),
            author: k.author(),
            time,
        }),
        k,
        &Limits::default(),
    )
    .expect("sign fact")
}

pub fn hint(
    k: &SigningKey,
    selector: Selector,
    effect: Effect,
    reason: &str,
    expires: Option<u64>,
) -> Record {
    Record::sign(
        Content::Hint(Hint {
            selector,
            effect,
            reason: reason.into(),
            source: None,
            expires,
            author: k.author(),
            time: T0,
        }),
        k,
        &Limits::default(),
    )
    .expect("sign hint")
}

pub fn topic_selector(glob: &str) -> Selector {
    Selector {
        topic: Some(glob.parse().expect("glob")),
        body: None,
    }
}

pub fn claim(k: &SigningKey, intent: FihHash, lease_ms: u64, time: u64) -> Action {
    Action::sign(
        ActionContent::Claim {
            intent,
            lease_ms,
            author: k.author(),
            deployment: Some(dep()),
            time,
        },
        k,
        &Limits::default(),
    )
    .expect("sign claim")
}

pub fn renew(k: &SigningKey, intent: FihHash, token: u64, lease_ms: u64, time: u64) -> Action {
    Action::sign(
        ActionContent::Renew {
            intent,
            token,
            lease_ms,
            author: k.author(),
            deployment: Some(dep()),
            time,
        },
        k,
        &Limits::default(),
    )
    .expect("sign renew")
}

pub fn withdraw(k: &SigningKey, intent: FihHash, time: u64) -> Action {
    Action::sign(
        ActionContent::Withdraw {
            intent,
            author: k.author(),
            deployment: Some(dep()),
            time,
        },
        k,
        &Limits::default(),
    )
    .expect("sign withdraw")
}

pub fn leased(a: Applied) -> Lease {
    match a {
        Applied::Leased(l) => l,
        other => panic!("expected a lease, got {other:?}"),
    }
}

pub fn body(n: i64) -> Value {
    json!({ "n": n })
}
