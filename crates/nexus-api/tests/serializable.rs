//! Group commit is serializable: the commit log order is a serial order of the
//! committed requests, also when a group's jobs all executed on the state from before
//! the group (issue 10: claims committed after a deny Hint that selects them).

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use serde_json::{Value, json};

use nexus_api::{Api, ApiConfig, Prepared, Request, Response};
use nexus_core::{Effect, FihHash};
use nexus_iobuf::SessionServer;
use nexus_store::{BatchWrite, BlobStore, KeyValueStore, MemoryStore, ObjectStore, WriteBatch};
use nexus_testkit::{Hooked, without_reads};

fn open_api() -> Api {
    Api::new(ApiConfig {
        open: true,
        ..ApiConfig::default()
    })
}

fn request(api: &Api, method: &str, target: &str, body: Vec<u8>) -> nexus_api::Job {
    match api.prepare(&Request::new(method, target, body)) {
        Prepared::Job(job) => job,
        Prepared::Respond(_, r) => panic!("{target}: answered at once: {}", r.status),
        Prepared::Metrics => panic!("metrics"),
        Prepared::Events(_) => panic!("events"),
    }
}

/// Queues every job on one grouped server and runs them as ONE group; answers in
/// queue order.
fn one_group<S>(api: &Api, store: S, jobs: Vec<nexus_api::Job>) -> Vec<Response>
where
    S: KeyValueStore + BlobStore + ObjectStore + BatchWrite,
{
    let server = SessionServer::new(store);
    let client = server.client();
    let answers: Vec<_> = jobs
        .into_iter()
        .map(|job| {
            let (done, answer) = std::sync::mpsc::channel();
            client.submit_driver(job.driver(&limits(), NOW, false), move |r| {
                let _ = done.send(r);
            });
            answer
        })
        .collect();
    let n = answers.len();
    assert_eq!(server.process_group(n), n, "one group takes every job");
    answers
        .into_iter()
        .map(|a| api.finish(a.recv().unwrap()))
        .collect()
}

/// The log as (kind, intent or record hash) in commit order.
fn log(api: &Api, store: &MemoryStore) -> Vec<(String, Value)> {
    let r = api.run_sync(
        store,
        &Request::new("GET", "/v1/log?limit=1000", vec![]),
        NOW,
    );
    r.json_body()["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| match e.get("record") {
            Some(record) => (
                record["kind"].as_str().unwrap_or("record").to_owned(),
                record["hash"].clone(),
            ),
            None => (
                e["action"]["kind"].as_str().unwrap_or("action").to_owned(),
                e["action"]["intent"].clone(),
            ),
        })
        .collect()
}

/// Proposes `n` Intents under `race/r`, then runs one group: their claims with a deny
/// Hint selecting `race/r/**` queued at `hint_at`. Answers the claim statuses, the
/// Hint's status and the log.
fn race(
    store: MemoryStore,
    grouped: impl KeyValueStore + BlobStore + ObjectStore + BatchWrite,
    n: usize,
    hint_at: usize,
) -> (Vec<u16>, u16, Vec<(String, Value)>) {
    let api = open_api();
    let (alice, bob, carol) = (key(1), key(2), key(3));
    let intents: Vec<FihHash> = (0..n)
        .map(|i| {
            let rec = intent(&alice, &format!("race/r/{i}"), json!({"i": i}));
            let r = api.run_sync(
                &store,
                &Request::new("POST", "/v1/intents", rec.to_json()),
                NOW,
            );
            assert_eq!(r.status, 201);
            rec.hash()
        })
        .collect();
    let deny = hint(&carol, "race/r/**", Effect::Deny, "stop the race", vec![]);
    let mut jobs: Vec<nexus_api::Job> = intents
        .iter()
        .map(|h| {
            let claim = claim_at(&bob, *h, LEASE, NOW).to_json();
            request(&api, "POST", &format!("/v1/intents/{h}/claim"), claim)
        })
        .collect();
    jobs.insert(hint_at, request(&api, "POST", "/v1/hints", deny.to_json()));
    let mut answers: Vec<u16> = one_group(&api, grouped, jobs)
        .iter()
        .map(|r| r.status)
        .collect();
    let hint_status = answers.remove(hint_at);
    (answers, hint_status, log(&api, &store))
}

/// Every claim in the log comes before the deny Hint (the Hint selects them all).
fn claims_after_the_hint(log: &[(String, Value)]) -> usize {
    let Some(at) = log.iter().position(|(kind, _)| kind == "hint") else {
        return 0;
    };
    log[at..].iter().filter(|(kind, _)| kind == "claim").count()
}

#[test]
fn a_claim_executed_before_a_deny_hint_of_its_group_is_refused_after_it() {
    for hint_at in [0, 1, 16, 31, 32] {
        let store = store();
        let (claims, hint, log) = race(store.clone(), store.clone(), 32, hint_at);
        assert_eq!(hint, 201);
        assert_eq!(claims_after_the_hint(&log), 0, "hint queued at {hint_at}");
        // The claims queued before the Hint commit before it; the others re-ran on the
        // Hint's state and are refused, naming it.
        assert_eq!(claims[..hint_at], vec![200; hint_at][..]);
        assert_eq!(claims[hint_at..], vec![403; 32 - hint_at][..]);
    }
}

#[test]
fn without_read_checks_the_same_group_commits_claims_after_the_hint() {
    // The defect of issue 10, reproduced: a store that drops read checks applies the
    // claims the Hint denies, after the Hint. The test above would catch it.
    let store = store();
    let broken =
        Hooked::new(store.clone()).with_group(|inner: &MemoryStore, batches: &[WriteBatch]| {
            let stripped: Vec<WriteBatch> = batches
                .iter()
                .map(|b| WriteBatch {
                    commit: without_reads(&b.commit),
                    ..b.clone()
                })
                .collect();
            Some(inner.write_batch_group(&stripped))
        });
    let (claims, hint, log) = race(store, broken, 32, 0);
    assert_eq!(hint, 201);
    assert_eq!(claims, vec![200; 32]);
    assert_eq!(claims_after_the_hint(&log), 32);
}
