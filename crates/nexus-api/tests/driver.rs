//! The sync driver's retry and failure paths, and jobs driven by hand as a session host
//! would.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};

use common::*;
use serde_json::json;

use nexus_api::{Api, ApiConfig, Prepared, Request, health_response, session_core, store_error};
use nexus_core::storage::keys;
use nexus_iobuf::{Executed, FlushError, FlushStage, JobError, SessionError, StoreSession};
use nexus_store::{
    BlobStore, Commit, CommitOutcome, KeyValueStore, MemoryStore, ObjectStore, Snapshot,
    StoreError, StoreHealth,
};
use nexus_testkit::Hooked;

fn open_api() -> Api {
    Api::new(ApiConfig {
        open: true,
        ..ApiConfig::default()
    })
}

fn post(
    api: &Api,
    store: &(impl KeyValueStore + BlobStore + ObjectStore),
    path: &str,
    body: &impl serde::Serialize,
) -> (u16, serde_json::Value) {
    let r = api.run_sync(
        store,
        &Request::new("POST", path, serde_json::to_vec(body).unwrap()),
        NOW,
    );
    (r.status, r.json_body())
}

#[test]
fn a_lost_commit_is_retried_and_then_reports_the_winner() {
    let api = open_api();
    let base = store();
    let (alice, bob, carol) = (key(1), key(2), key(3));
    let i = intent(&alice, "race", json!({}));
    assert_eq!(post(&api, &base, "/v1/intents", &i).0, 201);
    // Carol's claim sneaks in right before Bob's commit.
    let rival = claim_at(&carol, i.hash(), LEASE, NOW);
    let fired = AtomicUsize::new(0);
    let rival_api = open_api();
    let target = format!("/v1/intents/{}/claim", i.hash());
    let store = Hooked::new(base.clone()).with_commit(move |inner: &MemoryStore, _: &Commit| {
        if fired.fetch_add(1, Ordering::SeqCst) == 0 {
            let (s, _) = post(&rival_api, inner, &target, &rival);
            assert_eq!(s, 200);
        }
        None
    });
    let (status, body) = post(
        &api,
        &store,
        &format!("/v1/intents/{}/claim", i.hash()),
        &claim_at(&bob, i.hash(), LEASE, NOW),
    );
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "already_claimed");
    assert_eq!(body["error"]["holder"], carol.author().to_string());
    assert_eq!(api.metrics().conflicts(), 1);
}

#[test]
fn endless_conflicts_answer_409_conflict_and_store_nothing() {
    let api = open_api();
    let store = Hooked::new(MemoryStore::new()).with_commit(|_: &MemoryStore, c: &Commit| {
        Some(Ok(CommitOutcome::Conflict(
            c.ops
                .iter()
                .map(|op| nexus_store::CasFailure {
                    key: op.key.clone(),
                    current: None,
                })
                .collect(),
        )))
    });
    let i = intent(&key(1), "a", json!({}));
    let (status, body) = post(&api, &store, "/v1/intents", &i);
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "conflict");
    assert!(
        body["error"]["keys"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| *k == keys::committed(&i.hash()))
    );
    assert_eq!(api.metrics().conflicts(), nexus_api::MAX_ATTEMPTS as u64);
    // Nothing visible: the record content may be written before the commit point (it is
    // idempotent and invisible), but nothing is committed.
    let snap = store.inner().snapshot().unwrap();
    assert!(snap.states.is_empty(), "{:?}", snap.states.keys());
    assert_eq!(
        api.run_sync(
            store.inner(),
            &Request::new("GET", &format!("/v1/records/{}", i.hash()), vec![]),
            NOW
        )
        .status,
        404
    );
}

/// Proposes an Intent to a store whose every commit fails with `err`: the answer and
/// what the store holds.
fn propose_failing(api: &Api, err: StoreError) -> (u16, serde_json::Value, MemoryStore) {
    let store = Hooked::new(MemoryStore::new())
        .with_commit(move |_: &MemoryStore, _: &Commit| Some(Err(err.clone())));
    let (status, body) = post(api, &store, "/v1/intents", &intent(&key(1), "a", json!({})));
    (status, body, store.inner().clone())
}

#[test]
fn a_failing_store_answers_500_storage() {
    let api = open_api();
    let (status, body, _) = propose_failing(&api, StoreError::Backend("disk on fire".into()));
    assert_eq!(status, 500);
    assert_eq!(body["error"]["code"], "storage");
    // One prefix, not "storage failed: flush failed during commit: storage backend failed: …".
    assert_eq!(body["error"]["message"], "storage failed: disk on fire");
}

#[test]
fn a_full_store_answers_507_once_and_health_answers_503_degraded() {
    let api = open_api();
    let full = StoreError::Full("redb: commit write transaction: No space left on device".into());
    let (status, body, store) = propose_failing(&api, full);
    assert_eq!(status, 507);
    assert_eq!(body["error"]["code"], "insufficient_storage");
    assert_eq!(
        body["error"]["message"],
        "storage is full: redb: commit write transaction: No space left on device; \
         writes resume once space is freed"
    );
    // Nothing committed (no state, no log entry; the content-addressed record written
    // before the commit point is idempotent and harmless, as for any failed commit).
    assert!(store.snapshot().unwrap().states.is_empty());

    // Every host's failure (the group-commit server's, the Worker's) maps the same way
    // through Api::finish: by the error's type, not its text.
    let failed = |source: StoreError| {
        Err(JobError::Flush(FlushError::Store {
            stage: FlushStage::Commit,
            source,
        }))
    };
    let r = api.finish(failed(StoreError::Full("no space".into())));
    assert_eq!(
        (r.status, r.code),
        (507, Some(nexus_api::ErrorCode::InsufficientStorage))
    );
    let r = api.finish(failed(StoreError::Backend("disk on fire".into())));
    assert_eq!(
        r.json_body()["error"]["message"],
        "storage failed: disk on fire"
    );
    let r = api.finish(Err(JobError::Session(SessionError::Hydrate(
        StoreError::Full("no space".into()),
    ))));
    assert_eq!(r.status, 507);
    assert_eq!(
        r.json_body()["error"]["message"],
        "storage is full: no space; writes resume once space is freed"
    );

    // Health: the job's answer while ok; 503 degraded naming the reason otherwise.
    let ok = api.run_sync(&store, &Request::new("GET", "/v1/health", vec![]), NOW);
    assert_eq!(ok.status, 200);
    let same = health_response(&StoreHealth::Ok, ok.clone());
    assert_eq!((same.status, same.json_body()), (200, ok.json_body()));
    let full = StoreHealth::Full {
        message: "no space".into(),
    };
    let degraded = health_response(&full, ok.clone());
    assert_eq!(degraded.status, 503);
    assert_eq!(
        degraded.json_body(),
        json!({"status": "degraded", "reason": "storage_full", "message": "no space", "log_head": 0})
    );
    let down = StoreHealth::Unavailable {
        message: "gone".into(),
    };
    let unavailable = health_response(&down, ok);
    assert_eq!(unavailable.status, 503);
    assert_eq!(unavailable.json_body()["reason"], "storage_unavailable");
    // A store that cannot even read its log head keeps the health job's own error.
    let failed = store_error(&StoreError::Backend("gone".into()));
    let unreadable = health_response(&down, failed.clone());
    assert_eq!(
        (unreadable.status, unreadable.json_body()),
        (500, failed.json_body())
    );
}

/// A session host: hydrate the read set, execute, and the job completes in one round.
#[test]
fn read_sets_let_writes_finish_in_one_round() {
    let api = open_api();
    let store = store();
    let (alice, bob) = (key(1), key(2));
    let i = intent(&alice, "a", json!({}));
    let f = fact(&alice, "a", json!(1), vec![], None, NOW);
    let h = hint(
        &alice,
        "z/**",
        nexus_core::Effect::Deny,
        "no",
        vec![f.hash()],
    );
    let mut answers = vec![];
    for (path, body) in [
        ("/v1/intents".to_owned(), i.to_json()),
        ("/v1/facts".to_owned(), f.to_json()),
        ("/v1/hints".to_owned(), h.to_json()),
        (
            format!("/v1/intents/{}/claim", i.hash()),
            claim_at(&bob, i.hash(), LEASE, NOW).to_json(),
        ),
        (
            format!("/v1/intents/{}/renew", i.hash()),
            renew_at(&bob, i.hash(), 1, LEASE, NOW).to_json(),
        ),
        (
            format!("/v1/intents/{}/withdraw", i.hash()),
            withdraw_at(&alice, i.hash(), NOW).to_json(),
        ),
    ] {
        let Prepared::Job(job) = api.prepare(&Request::new("POST", &path, body)) else {
            panic!("{path} did not prepare a job");
        };
        assert!(job.is_write());
        let mut driver = StoreSession::with_max_rounds(1);
        driver.hydrate_from(&store, &job.read_set()).unwrap();
        let limits = api.config().limits.clone();
        let Executed::Done(outcome, delta) = driver
            .execute(|s| job.execute(&session_core(s, &limits), NOW))
            .unwrap()
        else {
            panic!("{path} missed data after hydrating its read set");
        };
        assert!(outcome.commits(), "{path}: {:?}", outcome.error());
        let report = delta.flush(&store, keys::is_after_commit).unwrap();
        let r = outcome.response(report.first_seq);
        answers.push((r.status, r.json_body()));
    }
    assert_eq!(answers[0].1["seq"], 1);
    assert_eq!(answers[2].1["seq"], 3);
    assert_eq!(answers[3].1["token"], 1);
    assert_eq!(answers[5].1["state"], "withdrawn");
}

/// Reads run as jobs too, and produce empty deltas.
#[test]
fn reads_are_jobs_with_empty_deltas() {
    let api = open_api();
    let store = store();
    let i = intent(&key(1), "a", json!({}));
    api.run_sync(
        &store,
        &Request::new("POST", "/v1/intents", i.to_json()),
        NOW,
    );
    for target in [
        "/v1/intents?state=available".to_owned(),
        "/v1/facts?topic=a".to_owned(),
        format!("/v1/records/{}", &i.hash().to_string()[..8]),
        format!("/v1/records/{}/provenance", i.hash()),
        "/v1/hints".to_owned(),
        "/v1/log".to_owned(),
        "/v1/health".to_owned(),
    ] {
        let Prepared::Job(job) = api.prepare(&Request::new("GET", &target, vec![])) else {
            panic!("{target} is not a job");
        };
        assert!(!job.is_write());
        let mut driver = StoreSession::with_max_rounds(job.max_rounds());
        driver.hydrate_from(&store, &job.read_set()).unwrap();
        let limits = api.config().limits.clone();
        let (outcome, delta) = driver
            .run(&store, |s| job.execute(&session_core(s, &limits), NOW))
            .unwrap();
        assert!(delta.is_empty(), "{target}");
        assert_eq!(outcome.response(None).status, 200, "{target}");
        assert!(driver.rounds() <= 3, "{target}: {} rounds", driver.rounds());
    }
}

#[test]
fn provenance_stops_at_a_thousand_records() {
    let h = Harness::open();
    let k = key(1);
    let mut mids = vec![];
    for m in 0..20u64 {
        let leaves: Vec<_> = (0..60u64)
            .map(|n| {
                let f = fact(&k, "w", json!([m, n]), vec![], None, NOW);
                assert_eq!(h.submit(&f).status, 201);
                f.hash()
            })
            .collect();
        let mid = fact(&k, "w", json!(m), leaves, None, NOW);
        assert_eq!(h.submit(&mid).status, 201);
        mids.push(mid.hash());
    }
    let top = fact(&k, "w", json!("top"), mids, None, NOW);
    h.submit(&top);
    let a = h.get(&format!("/v1/records/{}/provenance", top.hash()));
    assert_eq!(a.status, 200);
    assert_eq!(
        a.json["records"].as_array().unwrap().len(),
        nexus_api::PROVENANCE_MAX_RECORDS
    );
}

#[test]
fn failed_jobs_leave_empty_deltas_and_jobs_are_send() {
    fn send_sync<T: Send + Sync + 'static>() {}
    send_sync::<nexus_api::Job>();
    send_sync::<nexus_api::Outcome>();
    send_sync::<Api>();
    let api = open_api();
    let store = store();
    let orphan = intent_at(
        &key(1),
        "a",
        json!({}),
        vec![nexus_core::FihHash::of_canonical(b"x")],
        NOW,
    );
    let Prepared::Job(job) = api.prepare(&Request::new("POST", "/v1/intents", orphan.to_json()))
    else {
        panic!("not a job");
    };
    let mut driver = StoreSession::new();
    let limits = api.config().limits.clone();
    let (outcome, delta) = driver
        .run(&store, |s| job.execute_session(s, &limits, NOW))
        .unwrap();
    assert_eq!(
        outcome.error().map(|e| e.code),
        Some(nexus_api::ErrorCode::UnknownParent)
    );
    assert!(delta.is_empty());
}

/// The native host's path: each job's driver on a `SessionServer` (sequential queue),
/// answered with `Api::finish`.
#[test]
fn jobs_run_on_a_session_server() {
    use nexus_iobuf::SessionServer;
    let api = open_api();
    let server = SessionServer::new(store());
    let limits = api.config().limits.clone();
    let ask = |method: &str, target: &str, body: Vec<u8>| {
        let job = match api.prepare(&Request::new(method, target, body)) {
            Prepared::Job(job) => job,
            Prepared::Respond(_, r) => return (r.status, r.json_body()),
            Prepared::Metrics => panic!("metrics"),
            Prepared::Events(_) => panic!("events"),
        };
        let (done, answer) = std::sync::mpsc::channel();
        server
            .client()
            .submit_driver(job.driver(&limits, NOW, false), move |r| {
                let _ = done.send(r);
            });
        assert!(server.process_one());
        let r = api.finish(answer.recv().unwrap());
        (r.status, r.json_body())
    };
    let (alice, bob, carol) = (key(1), key(2), key(3));
    let i = intent(&alice, "srv", json!({}));
    let (s, body) = ask("POST", "/v1/intents", i.to_json());
    assert_eq!((s, body["seq"].clone()), (201, json!(1)));
    let claim = |k| claim_at(k, i.hash(), LEASE, NOW).to_json();
    let path = format!("/v1/intents/{}/claim", i.hash());
    assert_eq!(ask("POST", &path, claim(&bob)).0, 200);
    let before = server.store().snapshot().unwrap();
    let (s, body) = ask("POST", &path, claim(&carol));
    assert_eq!(
        (s, body["error"]["holder"].clone()),
        (409, json!(bob.author().to_string()))
    );
    assert_eq!(server.store().snapshot().unwrap(), before);
    let (s, body) = ask(
        "GET",
        &format!("/v1/records/{}/provenance", i.hash()),
        vec![],
    );
    assert_eq!(
        (s, body["root"].clone()),
        (200, json!(i.hash().to_string()))
    );
    let (s, body) = ask("GET", "/v1/log", vec![]);
    assert_eq!((s, body["head"].clone()), (200, json!(2)));
    assert_eq!(api.metrics().commits(), 2);
}
