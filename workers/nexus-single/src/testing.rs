//! Test-only hooks (the `test-hooks` feature; never in a deployed build): the storage
//! conformance cases of `nexus_store::conformance` run against the coordinator's
//! SQL-backed [`ObjectStore`](nexus_store::ObjectStore), inside the Durable Object.

use serde::Serialize;
use worker::{Env, Method, Request, RequestInit, Response, Result};

use nexus_store::conformance::{Op, Outcome, apply, cases};
use nexus_store::{
    BlobStore, Commit, CommitOutcome, KeyValueStore, ObjectStore, StoreError, StoreResult,
};

use crate::coordinator::SqlStates;
use crate::protocol::CONFORMANCE_PATH;

/// What the conformance run found.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    /// Cases run (those made only of object-tier operations).
    pub cases: usize,
    /// Steps run.
    pub steps: usize,
    /// Each divergence: case, step, op, expected and actual outcome.
    pub failures: Vec<String>,
}

/// The object tier alone: the key-value and blob tiers are not the coordinator's, and
/// the cases that touch them are not run here.
struct StatesOnly<'a>(&'a SqlStates);

fn not_here() -> StoreError {
    StoreError::Backend("the coordinator holds only the object tier".into())
}

impl KeyValueStore for StatesOnly<'_> {
    fn get(&self, _: &str) -> StoreResult<Option<Vec<u8>>> {
        Err(not_here())
    }
    fn set(&self, _: &str, _: &[u8]) -> StoreResult<()> {
        Err(not_here())
    }
    fn delete(&self, _: &str) -> StoreResult<()> {
        Err(not_here())
    }
    fn list(&self, _: &str, _: Option<&str>, _: usize) -> StoreResult<Vec<String>> {
        Err(not_here())
    }
}

impl BlobStore for StatesOnly<'_> {
    fn get_blob(&self, _: &str) -> StoreResult<Option<Vec<u8>>> {
        Err(not_here())
    }
    fn put_blob(&self, _: &str, _: &[u8]) -> StoreResult<()> {
        Err(not_here())
    }
    fn delete_blob(&self, _: &str) -> StoreResult<()> {
        Err(not_here())
    }
    fn list_blobs(&self, _: &str, _: Option<&str>, _: usize) -> StoreResult<Vec<String>> {
        Err(not_here())
    }
}

impl ObjectStore for StatesOnly<'_> {
    fn get_state(&self, key: &str) -> StoreResult<Option<Vec<u8>>> {
        self.0.get_state(key)
    }
    fn get_states(&self, keys: &[&str]) -> StoreResult<Vec<Option<Vec<u8>>>> {
        self.0.get_states(keys)
    }
    fn put_state(&self, key: &str, expected: Option<&[u8]>, new: &[u8]) -> StoreResult<bool> {
        self.0.put_state(key, expected, new)
    }
    fn list_states(&self, p: &str, after: Option<&str>, limit: usize) -> StoreResult<Vec<String>> {
        self.0.list_states(p, after, limit)
    }
    fn commit(&self, commit: &Commit) -> StoreResult<CommitOutcome> {
        self.0.commit(commit)
    }
}

fn object_tier(op: &Op) -> bool {
    matches!(
        op,
        Op::StateGet(_)
            | Op::StateGetMany(_)
            | Op::StatePut { .. }
            | Op::StateList { .. }
            | Op::Commit(_)
    )
}

/// Runs every object-tier conformance case, each on an emptied store.
pub fn run_conformance(store: &SqlStates) -> Report {
    let mut report = Report::default();
    for case in cases() {
        if !case.steps.iter().all(|s| object_tier(&s.op)) {
            continue;
        }
        report.cases += 1;
        if let Err(e) = store.clear() {
            report.failures.push(format!("{}: clear: {e}", case.name));
            continue;
        }
        for (i, step) in case.steps.iter().enumerate() {
            report.steps += 1;
            let got: Outcome = apply(&StatesOnly(store), &step.op);
            if got != step.expect {
                report.failures.push(format!(
                    "case {:?}, step {i}: {:?}: expected {:?}, got {got:?}",
                    case.name, step.op, step.expect
                ));
            }
        }
    }
    report
}

/// `POST /__test/conformance`: runs [`run_conformance`] in a coordinator instance of
/// its own (named `conformance`), so the real one is untouched.
pub async fn conformance_route(env: &Env) -> Result<Response> {
    let stub = env
        .durable_object(crate::DO_BINDING)?
        .get_by_name("conformance")?;
    let mut init = RequestInit::new();
    init.with_method(Method::Post);
    let req = Request::new_with_init(&format!("https://coordinator{CONFORMANCE_PATH}"), &init)?;
    stub.fetch_with_request(req).await
}
