//! The client against a tiny in-test HTTP server answering canned JSON.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;

use nexus_core::{IntentState, Lease, SigningKey};
use serde_json::json;

use super::*;
use crate::builders::*;

const T: u64 = 1_764_000_000_000;

/// A request as the test server saw it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    target: String,
    content_type: Option<String>,
    body: Vec<u8>,
}

/// A canned answer.
struct Answer {
    status: u16,
    content_type: &'static str,
    body: String,
}

fn json_answer(status: u16, body: Value) -> Answer {
    Answer {
        status,
        content_type: "application/json",
        body: body.to_string(),
    }
}

type Handler = Box<dyn Fn(&Seen) -> Answer + Send>;

/// The request targets the server has seen, in order.
fn targets_of(seen: &Mutex<Vec<Seen>>) -> Vec<String> {
    seen.lock()
        .expect("lock")
        .iter()
        .map(|s| s.target.clone())
        .collect()
}

/// Serves every connection on a fresh loopback port with `handler`, one request per
/// connection (`Connection: close`). The thread is detached; it ends with the test
/// process.
fn serve(handler: Handler) -> (Client, Arc<Mutex<Vec<Seen>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            if let Some(req) = read_request(&stream) {
                let answer = handler(&req);
                log.lock().expect("lock").push(req);
                let _ = write_answer(stream, &answer);
            }
        }
    });
    let client = Client::new(&format!("http://{addr}/"))
        .expect("client")
        .with_timeout(Duration::from_secs(10));
    (client, seen)
}

fn read_request(stream: &TcpStream) -> Option<Seen> {
    let mut r = BufReader::new(stream);
    let mut line = String::new();
    r.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_owned();
    let target = parts.next()?.to_owned();
    let mut len = 0usize;
    let mut content_type = None;
    loop {
        let mut h = String::new();
        r.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (name, value) = h.split_once(':')?;
        let value = value.trim();
        match name.to_ascii_lowercase().as_str() {
            "content-length" => len = value.parse().ok()?,
            "content-type" => content_type = Some(value.to_owned()),
            _ => {}
        }
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body).ok()?;
    Some(Seen {
        method,
        target,
        content_type,
        body,
    })
}

fn write_answer(mut stream: TcpStream, a: &Answer) -> std::io::Result<()> {
    write!(
        stream,
        "HTTP/1.1 {} X\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
        a.status,
        a.content_type,
        a.body.len(),
        a.body
    )?;
    stream.flush()
}

fn alice() -> SigningKey {
    SigningKey::from_seed(&[1; 32])
}
fn dep() -> nexus_core::Deployment {
    "test-deployment".parse().expect("deployment")
}

fn bob() -> SigningKey {
    SigningKey::from_seed(&[2; 32])
}

#[test]
fn submit_decodes_success_and_sends_the_wire_form() {
    let intent = propose_at(&alice(), "chem/solubility", json!({"c": 1}), &[], T).expect("i");
    let hash = intent.hash().to_string();
    let (client, seen) = serve(Box::new(move |_| {
        json_answer(
            201,
            json!({"hash": hash, "kind": "intent", "duplicate": false, "seq": 1}),
        )
    }));
    let s = client.submit(&intent).expect("submit");
    assert_eq!(
        s,
        Submitted {
            hash: intent.hash(),
            kind: Kind::Intent,
            duplicate: false,
            seq: Some(1)
        }
    );
    let seen = seen.lock().expect("lock").clone();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].method, "POST");
    assert_eq!(seen[0].target, "/v1/intents");
    assert_eq!(seen[0].content_type.as_deref(), Some("application/json"));
    assert_eq!(
        Record::from_json(&seen[0].body, &Limits::default()).expect("wire form"),
        intent
    );
}

#[test]
fn duplicate_submission_has_no_seq() {
    let f = fact_at(&bob(), "t", json!(1), &[], None, T).expect("f");
    let hash = f.hash().to_string();
    let (client, seen) = serve(Box::new(move |_| {
        json_answer(
            200,
            json!({"hash": hash, "kind": "fact", "duplicate": true, "seq": null}),
        )
    }));
    let s = client.submit(&f).expect("submit");
    assert!(s.duplicate);
    assert_eq!(s.seq, None);
    assert_eq!(seen.lock().expect("lock")[0].target, "/v1/facts");
}

#[test]
fn claim_conflict_carries_the_holder() {
    let intent = propose_at(&alice(), "t", json!(1), &[], T).expect("i");
    let claim = claim_at(&bob(), &dep(), intent.hash(), 30_000, T).expect("claim");
    let holder = alice().author().to_string();
    let (client, seen) = serve(Box::new(move |_| {
        json_answer(
            409,
            json!({"error": {"code": "already_claimed",
                             "message": "intent is claimed by someone else",
                             "holder": holder, "lease_until": T + 30_000, "token": 1}}),
        )
    }));
    let err = client.claim(&claim).expect_err("409");
    assert_eq!(err.status(), Some(409));
    assert_eq!(err.code(), Some("already_claimed"));
    let api = err.api().expect("api error");
    assert_eq!(api.holder(), Some(alice().author()));
    assert_eq!(api.lease_until(), Some(T + 30_000));
    assert_eq!(api.token(), Some(1));
    assert_eq!(api.message, "intent is claimed by someone else");
    assert!(
        api.detail("code").is_none(),
        "code is not repeated in details"
    );
    let text = err.to_string();
    assert!(
        text.contains("409") && text.contains("already_claimed"),
        "{text}"
    );
    assert!(
        text.contains(&format!("/v1/intents/{}/claim", intent.hash())),
        "{text}"
    );
    let seen = seen.lock().expect("lock").clone();
    assert_eq!(
        seen[0].target,
        format!("/v1/intents/{}/claim", intent.hash())
    );
    assert_eq!(
        Action::from_json(&seen[0].body, &Limits::default()).expect("action"),
        claim
    );
}

#[test]
fn connection_refused_names_the_url() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    let client = Client::new(&format!("http://{addr}")).expect("client");
    let err = client.health().expect_err("refused");
    assert!(matches!(err, ClientError::Unreachable { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains(&format!("http://{addr}/v1/health")),
        "the message names the URL: {text}"
    );
    assert!(text.contains("cannot reach"), "{text}");
    assert_eq!(err.status(), None);
}

#[test]
fn bad_base_urls_are_refused() {
    for bad in [
        "127.0.0.1:7878",
        "ftp://x",
        "http://",
        "http:///x",
        "http://a?b",
    ] {
        let err = Client::new(bad).expect_err(bad);
        assert!(matches!(err, ClientError::BadUrl { .. }), "{bad}");
        assert!(err.to_string().contains(bad));
    }
    let c = Client::new("https://nexus.example/api/").expect("ok");
    assert_eq!(c.base_url(), "https://nexus.example/api");
}

#[test]
fn a_degraded_health_is_an_answer_other_503s_are_errors() {
    let (client, _) = serve(Box::new(|s| match s.target.as_str() {
        "/v1/health" => json_answer(
            503,
            json!({"status": "degraded", "reason": "storage_full", "message": "no space", "log_head": 3}),
        ),
        _ => json_answer(
            503,
            json!({"error": {"code": "too_many_connections", "message": "busy", "limit": 1}}),
        ),
    }));
    let health = client.health().expect("degraded is an answer");
    assert!(!health.is_ok());
    assert_eq!(
        (
            health.reason.as_deref(),
            health.message.as_deref(),
            health.log_head
        ),
        (Some("storage_full"), Some("no space"), 3)
    );
    let err = client.log(1, None).expect_err("503");
    assert_eq!(err.status(), Some(503), "{err:?}");

    // A 503 without a health body (the connection cap) stays an error.
    let (client, _) = serve(Box::new(|_| {
        json_answer(
            503,
            json!({"error": {"code": "too_many_connections", "message": "busy", "limit": 1}}),
        )
    }));
    let err = client.health().expect_err("the cap");
    assert!(matches!(err, ClientError::Api { .. }), "{err:?}");
}

#[test]
fn non_api_errors_and_bad_json_are_unexpected() {
    let (client, _) = serve(Box::new(|s| {
        if s.target == "/v1/health" {
            Answer {
                status: 502,
                content_type: "text/html",
                body: "<html>bad gateway</html>".into(),
            }
        } else {
            json_answer(200, json!({"status": "ok"}))
        }
    }));
    let err = client.health().expect_err("502");
    assert!(
        matches!(err, ClientError::Unexpected { status: 502, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("bad gateway"));
    // 200 with the wrong shape.
    let err = client.log(1, None).expect_err("shape");
    assert!(
        matches!(err, ClientError::Unexpected { status: 200, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("/v1/log?from=1"), "{err}");
}

#[test]
fn listings_are_decoded_and_verified() {
    let a = alice();
    let intent = propose_at(&a, "chem/x+y", json!({"c": 1}), &[], T).expect("i");
    let fact = fact_at(&bob(), "chem/x+y", json!(2), &[intent.hash()], None, T + 1).expect("f");
    let hint = hint_at(
        &a,
        selector(Some("chem/**"), None).expect("sel"),
        nexus_core::Effect::Priority(2),
        "boost",
        None,
        None,
        T,
    )
    .expect("h");
    let (iv, fv, hv) = (intent.to_value(), fact.to_value(), hint.to_value());
    let (ih, fh, hh) = (intent.hash(), fact.hash(), hint.hash());
    let holder = bob().author().to_string();
    let (client, seen) = serve(Box::new(move |s| {
        let path = s.target.split('?').next().unwrap_or_default();
        match path {
            "/v1/intents" => json_answer(
                200,
                json!({"intents": [{"record": iv, "state": {"state": "claimed", "holder": holder,
                        "lease_until": T + 5, "token": 2}, "priority": 2}], "next": "c/2"}),
            ),
            "/v1/facts" => json_answer(200, json!({"facts": [fv], "next": null})),
            p if p.ends_with("/provenance") => {
                json_answer(200, json!({"root": fh.to_string(), "records": [fv, iv]}))
            }
            p if p.starts_with("/v1/records/") => json_answer(
                200,
                json!({"record": fv, "kind": "fact", "parents": [ih.to_string()]}),
            ),
            "/v1/hints" => json_answer(
                200,
                json!({"hints": [{"hash": hh.to_string(), "hint": hv}]}),
            ),
            "/v1/health" => json_answer(200, json!({"status": "ok", "log_head": 7})),
            "/metrics" => Answer {
                status: 200,
                content_type: "text/plain; version=0.0.4",
                body: "nexus_commits_total 7\n".into(),
            },
            "/v1/openapi.json" => json_answer(200, json!({"openapi": "3.1.0"})),
            _ => json_answer(404, json!({"error": {"code": "no_route", "message": "no"}})),
        }
    }));

    let page = client
        .intents(&IntentQuery {
            state: Some("claimed".into()),
            topic: Some("chem/x+y".into()),
            limit: Some(10),
            cursor: Some("c/1 &=".into()),
        })
        .expect("intents");
    assert_eq!(page.intents.len(), 1);
    assert_eq!(page.intents[0].record, intent);
    assert_eq!(page.intents[0].priority, 2);
    assert_eq!(
        page.intents[0].state,
        IntentState::Claimed {
            holder: bob().author(),
            lease_until: T + 5,
            token: 2
        }
    );
    assert_eq!(page.next.as_deref(), Some("c/2"));

    let facts = client
        .facts(&FactQuery {
            topic: Some("chem".into()),
            since: Some(T),
            until: Some(T + 10),
            ..FactQuery::default()
        })
        .expect("facts");
    assert_eq!(facts.facts, vec![fact.clone()]);
    assert_eq!(facts.next, None);

    let info = client.record(&fh.to_string()[..8]).expect("record");
    assert_eq!(
        (info.record, info.kind, info.parents),
        (fact.clone(), Kind::Fact, vec![ih])
    );
    let prov = client.provenance(&fh.to_string(), Some(3)).expect("prov");
    assert_eq!(prov.root, fh);
    assert_eq!(prov.records, vec![fact, intent]);
    let hints = client.hints().expect("hints");
    assert_eq!(hints.len(), 1);
    assert_eq!(hints[0].hash, hh);
    assert_eq!(hints[0].content().map(|h| h.reason.as_str()), Some("boost"));
    assert_eq!(client.health().expect("health"), Health::ok(7, None));
    assert!(
        client
            .metrics()
            .expect("metrics")
            .contains("nexus_commits_total")
    );
    assert_eq!(client.openapi().expect("openapi")["openapi"], "3.1.0");
    let err = client.get_json("/v1/nowhere").expect_err("404");
    assert_eq!(err.code(), Some("no_route"));

    let targets = targets_of(&seen);
    assert_eq!(
        targets[0],
        "/v1/intents?state=claimed&topic=chem%2Fx%2By&limit=10&cursor=c%2F1%20%26%3D"
    );
    assert_eq!(
        targets[1],
        format!("/v1/facts?topic=chem&since={T}&until={}", T + 10)
    );
    assert_eq!(targets[2], format!("/v1/records/{}", &fh.to_string()[..8]));
    assert_eq!(targets[3], format!("/v1/records/{fh}/provenance?depth=3"));
}

#[test]
fn tampered_records_in_answers_are_refused() {
    let f = fact_at(&bob(), "t", json!(1), &[], None, T).expect("f");
    let mut v = f.to_value();
    v["body"] = json!(2);
    let (client, _) = serve(Box::new(move |_| {
        json_answer(200, json!({"facts": [v], "next": null}))
    }));
    let err = client.facts(&FactQuery::default()).expect_err("tampered");
    assert!(
        matches!(
            &err,
            ClientError::InvalidRecord { source, .. }
                if matches!(**source, ValidationError::HashMismatch { .. })
        ),
        "{err:?}"
    );
}

#[test]
fn actions_go_to_their_routes() {
    let intent = propose_at(&alice(), "t", json!(1), &[], T).expect("i");
    let ih = intent.hash().to_string();
    let (client, seen) = serve(Box::new(move |s| {
        if s.target.ends_with("/withdraw") {
            json_answer(200, json!({"intent": ih, "state": "withdrawn"}))
        } else {
            json_answer(
                200,
                json!({"intent": ih, "token": 3, "lease_until": T + 9, "takeover": true}),
            )
        }
    }));
    let c = claim_at(&bob(), &dep(), intent.hash(), 30_000, T).expect("c");
    let r = renew_at(&bob(), &dep(), intent.hash(), 3, 30_000, T).expect("r");
    let w = withdraw_at(&alice(), &dep(), intent.hash(), T).expect("w");
    let Acted::Leased(l) = client.act(&c).expect("claim") else {
        panic!("leased")
    };
    let lease: Lease = l.into();
    assert_eq!(
        (lease.token, lease.lease_until, lease.takeover),
        (3, T + 9, true)
    );
    assert!(matches!(client.act(&r), Ok(Acted::Leased(_))));
    assert_eq!(
        client.act(&w).expect("withdraw"),
        Acted::Withdrawn(Withdrawn {
            intent: intent.hash(),
            state: "withdrawn".into()
        })
    );
    let targets = targets_of(&seen);
    let base = format!("/v1/intents/{}", intent.hash());
    assert_eq!(
        targets,
        vec![
            format!("{base}/claim"),
            format!("{base}/renew"),
            format!("{base}/withdraw")
        ]
    );
}

/// A log of `n` entries served in pages of at most `page` (ignoring the client's
/// `limit`), honouring `from`.
fn log_server(n: u64, page: u64) -> (Client, Arc<Mutex<Vec<Seen>>>, Vec<Value>) {
    let a = alice();
    let entries: Vec<Value> = (1..=n)
        .map(|seq| {
            let r = propose_at(&a, "t", json!(seq), &[], T).expect("i");
            json!({"seq": seq, "at": T + seq, "record": r.to_value()})
        })
        .collect();
    let served = entries.clone();
    let (client, seen) = serve(Box::new(move |s| {
        let from: u64 = s
            .target
            .split(['?', '&'])
            .find_map(|p| p.strip_prefix("from="))
            .and_then(|v| v.parse().ok())
            .unwrap_or(1)
            .max(1);
        let chunk: Vec<Value> = served
            .iter()
            .skip((from - 1) as usize)
            .take(page as usize)
            .cloned()
            .collect();
        json_answer(200, json!({"head": n, "entries": chunk}))
    }));
    (client, seen, entries)
}

#[test]
fn log_pages_walk_to_the_head_and_export_verifies() {
    let (client, seen, entries) = log_server(7, 3);
    let pages: Vec<LogPage> = client
        .log_pages(1)
        .collect::<Result<_, _>>()
        .expect("pages");
    assert_eq!(
        pages.iter().map(|p| p.entries.len()).collect::<Vec<_>>(),
        vec![3, 3, 1]
    );
    let targets = targets_of(&seen);
    assert_eq!(
        targets,
        vec![
            "/v1/log?from=1&limit=1000",
            "/v1/log?from=4&limit=1000",
            "/v1/log?from=7&limit=1000"
        ]
    );
    let mut out = vec![];
    let n = crate::verify::export_to(&mut out, client.log_entries(0)).expect("export");
    assert_eq!(n, 7);
    let flat: Vec<Value> = out
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).expect("json"))
        .collect();
    assert_eq!(flat, entries);
    let report = crate::verify::verify_export(&out[..], |_| {}).expect("verifies");
    assert_eq!((report.lines, report.intents, report.head), (7, 7, 7));
    // From the middle, and from past the head.
    assert_eq!(client.log_entries(5).count(), 3);
    assert_eq!(client.log_entries(8).count(), 0);
}

#[test]
fn log_entries_surface_errors() {
    let (client, _) = serve(Box::new(|_| {
        json_answer(
            500,
            json!({"error": {"code": "storage", "message": "disk on fire"}}),
        )
    }));
    let got: Vec<_> = client.log_entries(1).collect();
    assert_eq!(got.len(), 1);
    let err = got.into_iter().next().expect("one").expect_err("error");
    assert_eq!(err.code(), Some("storage"));
    let mut out = vec![];
    let e = crate::verify::export_to(&mut out, client.log_entries(1)).expect_err("fails");
    assert!(e.to_string().contains("disk on fire"), "{e}");
}

#[test]
fn a_repeated_cursor_is_an_error_not_a_loop() {
    let (client, seen) = serve(Box::new(|_| {
        json_answer(200, json!({"facts": [], "next": "same"}))
    }));
    let got: Vec<_> = client.all_facts(&FactQuery::default()).take(10).collect();
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(matches!(got[0], Err(ClientError::Unexpected { .. })));
    assert_eq!(seen.lock().expect("lock").len(), 2);
}

#[test]
fn error_codes_are_typed_and_unknown_ones_are_kept() {
    let (client, _) = serve(Box::new(|s| {
        let code = if s.target.starts_with("/v1/records/") {
            "stale_token"
        } else {
            "brand_new_code"
        };
        json_answer(
            418,
            json!({"error": {"code": code, "message": "m", "x": 1}}),
        )
    }));
    let known = client.record("abcdef01").expect_err("error");
    assert_eq!(known.error_code(), Some(ErrorCode::StaleToken));
    assert_eq!(
        known.api().map(|a| &a.code),
        Some(&ErrorCode::StaleToken.into())
    );
    let newer = client.health().expect_err("error");
    assert_eq!(newer.error_code(), None);
    assert_eq!(newer.code(), Some("brand_new_code"));
    let api = newer.api().expect("an API error");
    assert_eq!(api.code, AnyErrorCode::Unknown("brand_new_code".into()));
    assert_eq!((api.status, api.detail("x")), (418, Some(&json!(1))));
    assert!(
        newer.to_string().contains("HTTP 418 brand_new_code: m"),
        "{newer}"
    );
}

/// An event stream server that goes silent: each connection gets the headers, then
/// the entries from its `from` on, `per_connection` of them, and then nothing (no
/// heartbeat) while the socket stays open. Answers the client and the targets seen.
fn silent_events_server(per_connection: u64) -> (Client, Arc<Mutex<Vec<Seen>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    thread::spawn(move || {
        let mut open = Vec::new(); // kept open, silent, until the test process ends
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let Some(req) = read_request(&stream) else {
                continue;
            };
            let from: u64 = req
                .target
                .split(['?', '&'])
                .find_map(|kv| kv.strip_prefix("from="))
                .and_then(|v| v.parse().ok())
                .unwrap_or(1);
            log.lock().expect("lock").push(req);
            let mut out = String::from(
                "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\nretry: 1000\n\n",
            );
            for seq in from..from + per_connection {
                let entry = json!({"seq": seq, "at": T, "action": {"kind": "claim"}});
                out.push_str(&format!("id: {seq}\nevent: entry\ndata: {entry}\n\n"));
            }
            let _ = stream.write_all(out.as_bytes());
            let _ = stream.flush();
            open.push(stream);
        }
    });
    let client = Client::new(&format!("http://{addr}/"))
        .expect("client")
        .with_timeout(Duration::from_secs(10));
    (client, seen)
}

#[test]
fn a_silent_event_stream_counts_as_dead_and_is_reopened_after_the_last_entry() {
    let (client, seen) = silent_events_server(2);
    let options = EventOptions {
        idle_timeout: Duration::from_millis(200),
        reconnect_for: Some(Duration::from_secs(5)),
    };
    let (tx, rx) = std::sync::mpsc::channel();
    thread::spawn(move || {
        let mut stream = client.events_with(1, Some("a/b"), options).expect("stream");
        let seqs: Vec<u64> = stream
            .by_ref()
            .take(5)
            .map(|e| e.expect("entry")["seq"].as_u64().expect("seq"))
            .collect();
        let _ = tx.send((seqs, stream.connections()));
    });
    // Without the idle timeout the stream would wait for ever on the first connection.
    let (seqs, connections) = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("the silent connections were given up");
    assert_eq!(seqs, vec![1, 2, 3, 4, 5]);
    assert_eq!(connections, 3);
    assert_eq!(
        targets_of(&seen),
        [
            "/v1/events?from=1&topic=a%2Fb",
            "/v1/events?from=3&topic=a%2Fb",
            "/v1/events?from=5&topic=a%2Fb"
        ]
    );
}

#[test]
fn without_reconnection_a_silent_stream_ends_with_an_error() {
    let (client, seen) = silent_events_server(1);
    let options = EventOptions {
        idle_timeout: Duration::from_millis(200),
        reconnect_for: None,
    };
    let (tx, rx) = std::sync::mpsc::channel();
    thread::spawn(move || {
        let mut stream = client.events_with(7, None, options).expect("stream");
        assert_eq!(stream.next().expect("one").expect("entry")["seq"], 7);
        let started = std::time::Instant::now();
        let e = stream.next().expect("an error").expect_err("idle");
        let waited = started.elapsed();
        let _ = tx.send((e, waited, stream.next().is_none(), stream.last_seq()));
    });
    let (e, waited, ended, last) = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("the silent connection was given up");
    assert!(
        waited >= Duration::from_millis(200),
        "before the idle timeout"
    );
    assert!(matches!(e, ClientError::Transport { .. }), "{e}");
    assert!(ended);
    assert_eq!(last, Some(7));
    assert_eq!(targets_of(&seen).len(), 1);
}
