//! The client against the real request handling of `nexus-api` (`Api::run_sync` on a
//! `MemoryStore`), served over loopback TCP by a minimal HTTP/1.1 loop: a whole
//! lifecycle, the error shapes, every read route, and an export that verifies offline.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use nexus_api::{Api, ApiConfig, Request};
use nexus_client::builders::{self, now_ms};
use nexus_client::http::{FactQuery, IntentQuery};
use nexus_client::{
    Client, ClientError, KeyFile, VerifyOptions, verify_export, verify_export_with,
};
use nexus_core::{Effect, IntentState, Kind, SigningKey};
use nexus_store::MemoryStore;
use serde_json::json;

fn read_request(stream: &TcpStream) -> Option<Request> {
    let mut r = BufReader::new(stream);
    let mut line = String::new();
    r.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next()?.to_owned(), parts.next()?.to_owned());
    let mut len = 0usize;
    loop {
        let mut h = String::new();
        r.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((name, value)) = h.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            len = value.trim().parse().ok()?;
        }
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body).ok()?;
    Some(Request::new(&method, &target, body))
}

/// Serves an open (any valid key) API on a fresh loopback port.
fn serve() -> Client {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let api = Arc::new(Api::new(ApiConfig {
        open: true,
        ..ApiConfig::default()
    }));
    let store = MemoryStore::new();
    nexus_core::CompositeColdStorage::unified(store.clone(), nexus_core::Limits::default())
        .init_deployment(&"against-api".parse().expect("deployment"))
        .expect("deployment");
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let Some(req) = read_request(&stream) else {
                continue;
            };
            let resp = api.run_sync(&store, &req, now_ms());
            let head = format!(
                "HTTP/1.1 {} X\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                resp.status,
                resp.content_type,
                resp.body.len()
            );
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(&resp.body);
        }
    });
    Client::new(&format!("http://{addr}"))
        .expect("client")
        .with_timeout(Duration::from_secs(20))
}

#[test]
fn lifecycle_reads_errors_and_export() {
    let client = serve();
    // Actions are signed for the server's deployment, read once per client.
    let d = client.deployment().expect("deployment");
    assert_eq!(d.as_str(), "against-api");
    let alice = KeyFile::from_signing_key(SigningKey::from_seed(&[11; 32]));
    let bob = SigningKey::from_seed(&[12; 32]);
    let carol = SigningKey::from_seed(&[13; 32]);
    assert_eq!(client.health().expect("health").log_head, 0);

    // Propose; a resubmission is a duplicate.
    let intent = builders::propose(
        alice.key(),
        "chem/solubility",
        json!({"compound": "NaCl"}),
        &[],
    )
    .expect("intent");
    let s = client.submit(&intent).expect("propose");
    assert_eq!(
        (s.hash, s.kind, s.duplicate, s.seq),
        (intent.hash(), Kind::Intent, false, Some(1))
    );
    let again = client.submit(&intent).expect("resubmit");
    assert!(again.duplicate);

    // Bob claims; Carol's claim conflicts and names Bob as holder.
    let lease = client
        .claim(&builders::claim(&bob, &d, intent.hash(), 30_000).expect("claim"))
        .expect("claimed");
    assert_eq!((lease.token, lease.takeover), (1, false));
    let err = client
        .claim(&builders::claim(&carol, &d, intent.hash(), 30_000).expect("claim"))
        .expect_err("conflict");
    let api = err.api().expect("api error");
    assert_eq!((api.status, api.code.as_str()), (409, "already_claimed"));
    assert_eq!(api.holder(), Some(bob.author()));
    assert_eq!(api.token(), Some(1));
    assert_eq!(api.lease_until(), Some(lease.lease_until));

    // Renew, then resolve with a Fact.
    let renewed = client
        .renew(&builders::renew(&bob, &d, intent.hash(), 1, 60_000).expect("renew"))
        .expect("renewed");
    assert_eq!(renewed.token, 1);
    let fact = builders::fact(
        &bob,
        "chem/solubility",
        json!({"g_per_l": 360}),
        &[intent.hash()],
        Some((intent.hash(), 1)),
    )
    .expect("fact");
    assert_eq!(client.submit(&fact).expect("fact").kind, Kind::Fact);

    // A Fact naming an unknown parent: 422 naming it.
    let ghost = nexus_core::FihHash::of_canonical(b"ghost");
    let orphan = builders::fact(&bob, "chem/x", json!(1), &[ghost], None).expect("orphan");
    let err = client.submit(&orphan).expect_err("orphan");
    assert_eq!(err.status(), Some(422));
    assert_eq!(err.code(), Some("unknown_parent"));
    assert_eq!(err.api().and_then(|e| e.parent()), Some(ghost));

    // A second Intent, withdrawn; a priority Hint.
    let other =
        builders::propose(alice.key(), "chem/other", json!(2), &[fact.hash()]).expect("other");
    client.submit(&other).expect("other");
    let wd = client
        .withdraw(&builders::withdraw(alice.key(), &d, other.hash()).expect("withdraw"))
        .expect("withdrawn");
    assert_eq!(wd.state, "withdrawn");
    let sel = builders::selector(Some("bio/**"), None).expect("sel");
    let hint = builders::hint(&carol, sel, Effect::Priority(5), "bio first").expect("hint");
    assert_eq!(client.submit(&hint).expect("hint").kind, Kind::Hint);

    // Reads.
    let resolved = client
        .intents(&IntentQuery {
            state: Some("resolved".into()),
            ..IntentQuery::default()
        })
        .expect("intents");
    assert_eq!(resolved.intents.len(), 1);
    assert_eq!(resolved.intents[0].record, intent);
    assert!(matches!(
        resolved.intents[0].state,
        IntentState::Resolved { token: 1, .. }
    ));
    let facts = client
        .facts(&FactQuery {
            topic: Some("chem".into()),
            ..FactQuery::default()
        })
        .expect("facts");
    assert_eq!(facts.facts, vec![fact.clone()]);
    let info = client
        .record(&fact.hash().to_string()[..10])
        .expect("record by prefix");
    assert_eq!((info.kind, info.parents), (Kind::Fact, vec![intent.hash()]));
    let prov = client
        .provenance(&other.hash().to_string(), None)
        .expect("provenance");
    assert_eq!(prov.root, other.hash());
    assert_eq!(prov.records.len(), 3);
    let hints = client.hints().expect("hints");
    assert_eq!(hints.len(), 1);
    assert_eq!(hints[0].hash, hint.hash());
    let err = client.record("zz").expect_err("bad id");
    assert_eq!(err.status(), Some(400));
    assert!(client.metrics().expect("metrics").contains("nexus_"));
    assert!(client.openapi().expect("openapi")["paths"].is_object());
    let head = client.health().expect("health").log_head;
    assert_eq!(head, 7);

    // Export and verify offline.
    let mut out = vec![];
    let n = client.export(1, &mut out).expect("export");
    assert_eq!(n, head);
    let report = verify_export(&out[..], |_| {}).expect("export verifies");
    let replayed = verify_export_with(
        &out[..],
        &VerifyOptions {
            replay: true,
            ..VerifyOptions::default()
        },
        |_| {},
    )
    .expect("export replays through the lifecycle");
    assert_eq!(replayed, report);
    assert_eq!(
        (report.lines, report.intents, report.facts, report.hints),
        (7, 2, 1, 1)
    );
    assert_eq!(
        (report.claims, report.renewals, report.withdrawals),
        (1, 1, 1)
    );
}

#[test]
fn malformed_writes_get_the_api_error_shape() {
    let client = serve();
    let err = client
        .post_json("/v1/intents", b"{not json")
        .expect_err("malformed");
    assert!(matches!(err, ClientError::Api { .. }), "{err:?}");
    assert_eq!(err.status(), Some(400));
    assert_eq!(err.code(), Some("malformed_json"));
    let err = client.get_json("/v1/nowhere").expect_err("404");
    assert_eq!(err.code(), Some("no_route"));
}

#[test]
fn cursors_are_followed_across_pages() {
    let client = serve();
    let key = SigningKey::from_seed(&[21; 32]);
    let mut intents = vec![];
    for i in 0..5 {
        let intent = builders::propose(&key, "paging/t", json!({"i": i}), &[]).expect("i");
        client.submit(&intent).expect("submit");
        let fact =
            builders::fact(&key, "paging/t", json!({"i": i}), &[intent.hash()], None).expect("f");
        client.submit(&fact).expect("submit");
        intents.push(intent.hash());
    }
    let got: Vec<_> = client
        .all_intents(&IntentQuery {
            topic: Some("paging".into()),
            limit: Some(2),
            ..IntentQuery::default()
        })
        .map(|r| r.expect("page").record.hash())
        .collect();
    let mut want = intents.clone();
    want.sort();
    let mut sorted = got.clone();
    sorted.sort();
    assert_eq!(sorted, want, "every intent once");
    let facts: Vec<_> = client
        .all_facts(&FactQuery {
            topic: Some("paging/t".into()),
            limit: Some(2),
            ..FactQuery::default()
        })
        .collect::<Result<_, _>>()
        .expect("facts");
    assert_eq!(facts.len(), 5);
}
