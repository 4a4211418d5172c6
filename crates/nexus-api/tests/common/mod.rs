//! Helpers shared by the integration tests: keys, signed records and actions, and a
//! harness that runs requests through `Api::run_sync` on a `MemoryStore`.

#![allow(dead_code, clippy::unwrap_used)]

use std::collections::BTreeSet;

use serde_json::Value;

use nexus_api::{Api, ApiConfig, Request, Response};
use nexus_core::{
    Action, ActionContent, Content, Effect, Fact, FihHash, Hint, HintSource, Intent, Limits,
    Record, Resolves, Selector, SigningKey,
};
use nexus_store::{MemoryStore, Snapshot, StoreSnapshot};

pub const NOW: u64 = 1_764_000_000_000;
pub const LEASE: u64 = 30_000;

pub fn key(n: u8) -> SigningKey {
    SigningKey::from_seed(&[n; 32])
}

pub fn limits() -> Limits {
    Limits::default()
}

pub fn intent_at(
    k: &SigningKey,
    topic: &str,
    body: Value,
    parents: Vec<FihHash>,
    time: u64,
) -> Record {
    Record::sign(
        Content::Intent(Intent {
            topic: topic.parse().unwrap(),
            body,
            parents,
            author: k.author(),
            time,
        }),
        k,
        &limits(),
    )
    .unwrap()
}

pub fn intent(k: &SigningKey, topic: &str, body: Value) -> Record {
    intent_at(k, topic, body, vec![], NOW)
}

pub fn fact(
    k: &SigningKey,
    topic: &str,
    body: Value,
    parents: Vec<FihHash>,
    resolves: Option<(FihHash, u64)>,
    time: u64,
) -> Record {
    Record::sign(
        Content::Fact(Fact {
            topic: topic.parse().unwrap(),
            body,
            parents,
            resolves: resolves.map(|(intent, token)| Resolves { intent, token }),
            author: k.author(),
            time,
        }),
        k,
        &limits(),
    )
    .unwrap()
}

pub fn hint(
    k: &SigningKey,
    glob: &str,
    effect: Effect,
    reason: &str,
    facts: Vec<FihHash>,
) -> Record {
    Record::sign(
        Content::Hint(Hint {
            selector: Selector {
                topic: Some(glob.parse().unwrap()),
                body: None,
            },
            effect,
            reason: reason.into(),
            source: if facts.is_empty() {
                None
            } else {
                Some(HintSource {
                    contract: None,
                    rule: Some("r".into()),
                    facts,
                })
            },
            expires: None,
            author: k.author(),
            time: NOW,
        }),
        k,
        &limits(),
    )
    .unwrap()
}

/// The deployment of the harness's store, which its actions are signed for.
pub fn dep() -> nexus_core::Deployment {
    nexus_testkit::TEST_DEPLOYMENT.parse().unwrap()
}

/// A memory store with its deployment id, as a host makes it at its first start.
pub fn store() -> MemoryStore {
    let store = MemoryStore::new();
    nexus_core::CompositeColdStorage::unified(store.clone(), limits())
        .init_deployment(&dep())
        .unwrap();
    store
}

pub fn claim_at(k: &SigningKey, intent: FihHash, lease_ms: u64, time: u64) -> Action {
    Action::sign(
        ActionContent::Claim {
            intent,
            lease_ms,
            author: k.author(),
            deployment: Some(dep()),
            time,
        },
        k,
        &limits(),
    )
    .unwrap()
}

pub fn renew_at(k: &SigningKey, intent: FihHash, token: u64, lease_ms: u64, time: u64) -> Action {
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
        &limits(),
    )
    .unwrap()
}

pub fn withdraw_at(k: &SigningKey, intent: FihHash, time: u64) -> Action {
    Action::sign(
        ActionContent::Withdraw {
            intent,
            author: k.author(),
            deployment: Some(dep()),
            time,
        },
        k,
        &limits(),
    )
    .unwrap()
}

/// An API and a store.
pub struct Harness {
    pub api: Api,
    pub store: MemoryStore,
}

pub struct Answer {
    pub status: u16,
    pub json: Value,
    pub response: Response,
}

impl Answer {
    pub fn code(&self) -> &str {
        self.json["error"]["code"].as_str().unwrap_or("")
    }
}

impl Harness {
    /// Open mode (any valid key may write).
    pub fn open() -> Self {
        Self::with(ApiConfig {
            open: true,
            ..ApiConfig::default()
        })
    }

    pub fn with(config: ApiConfig) -> Self {
        Self {
            api: Api::new(config),
            store: store(),
        }
    }

    /// Closed mode with an allowlist.
    pub fn allowing(keys: &[&SigningKey]) -> Self {
        Self::with(ApiConfig {
            allowed: keys.iter().map(|k| k.author()).collect::<BTreeSet<_>>(),
            ..ApiConfig::default()
        })
    }

    pub fn raw(&self, method: &str, target: &str, body: Vec<u8>, now: u64) -> Answer {
        let response = self
            .api
            .run_sync(&self.store, &Request::new(method, target, body), now);
        Answer {
            status: response.status,
            json: response.json_body(),
            response,
        }
    }

    pub fn get(&self, target: &str) -> Answer {
        self.raw("GET", target, vec![], NOW)
    }

    pub fn get_at(&self, target: &str, now: u64) -> Answer {
        self.raw("GET", target, vec![], now)
    }

    pub fn post<T: serde::Serialize>(&self, target: &str, body: &T, now: u64) -> Answer {
        self.raw("POST", target, serde_json::to_vec(body).unwrap(), now)
    }

    pub fn submit(&self, rec: &Record) -> Answer {
        let path = match rec.content() {
            Content::Intent(_) => "/v1/intents",
            Content::Fact(_) => "/v1/facts",
            Content::Hint(_) => "/v1/hints",
        };
        self.post(path, rec, NOW)
    }

    pub fn act(&self, action: &Action, now: u64) -> Answer {
        let c = action.content();
        let on = match c {
            ActionContent::Retract { .. } => "hints",
            _ => "intents",
        };
        let path = format!("/v1/{on}/{}/{}", c.target(), c.kind());
        self.post(&path, action, now)
    }

    pub fn snapshot(&self) -> StoreSnapshot {
        self.store.snapshot().unwrap()
    }

    /// Runs `f`, asserts it answered the error `status`/`code` and left the store
    /// unchanged, and returns the answer.
    pub fn expect_error(&self, status: u16, code: &str, f: impl FnOnce(&Self) -> Answer) -> Answer {
        let before = self.snapshot();
        let a = f(self);
        assert_eq!(
            (a.status, a.code()),
            (status, code),
            "unexpected answer {}",
            a.json
        );
        assert_eq!(
            a.response.code.map(nexus_api::ErrorCode::as_str),
            Some(code)
        );
        assert!(
            a.json["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
        assert_eq!(
            self.snapshot(),
            before,
            "an error changed the store ({code})"
        );
        a
    }
}
