//! `GET /v1/events` and `nexus watch` through the real binary (issue 13, item 2).

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{NEXUS, Server};
use nexus_client::builders;
use nexus_client::{Client, ErrorCode, KeyFile};
use serde_json::{Value, json};

fn seqs(entries: &[Value]) -> Vec<u64> {
    entries
        .iter()
        .map(|e| e["seq"].as_u64().expect("seq"))
        .collect()
}

fn propose(c: &Client, key: &KeyFile, topic: &str, n: u64) -> nexus_core::Record {
    let intent = builders::propose(key.key(), topic, json!({"n": n}), &[]).expect("intent");
    c.submit_intent(&intent).expect("propose");
    intent
}

#[test]
fn the_stream_sends_the_backlog_then_each_commit_in_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), true);
    let c = server.client();
    let key = KeyFile::generate().expect("key");
    let dep = c.deployment().expect("deployment");
    let a = propose(&c, &key, "ev/a/x", 1);
    propose(&c, &key, "ev/b/y", 2);
    propose(&c, &key, "ev/a/z", 3);
    let claim = builders::claim(key.key(), &dep, a.hash(), 30_000).expect("claim");
    c.claim(&claim).expect("claim");

    let mut all = c.events(1, None).expect("stream");
    let backlog: Vec<Value> = all
        .by_ref()
        .take(4)
        .collect::<Result<_, _>>()
        .expect("entries");
    assert_eq!(seqs(&backlog), vec![1, 2, 3, 4]);
    // The entries are the log's.
    let log: Vec<Value> = c.log_entries(1).collect::<Result<_, _>>().expect("log");
    assert_eq!(backlog, log);

    let mut topic = c.events(1, Some("ev/a/**")).expect("stream");
    let only: Vec<Value> = topic
        .by_ref()
        .take(3)
        .collect::<Result<_, _>>()
        .expect("entries");
    assert_eq!(
        seqs(&only),
        vec![1, 3, 4],
        "the a/ Intents and the claim on one"
    );

    // Live: a commit after the streams caught up reaches both (the claim's Intent is
    // matched by topic even for an action).
    let writer = {
        let c = c.clone();
        let key = key.key().clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            let i = builders::propose(&key, "ev/a/live", json!(5), &[]).expect("intent");
            c.submit_intent(&i).expect("propose");
            let j = builders::propose(&key, "ev/b/live", json!(6), &[]).expect("intent");
            c.submit_intent(&j).expect("propose");
        })
    };
    let started = Instant::now();
    let live = all.next().expect("an entry").expect("ok");
    assert_eq!(live["seq"], 5);
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(all.next().expect("an entry").expect("ok")["seq"], 6);
    assert_eq!(topic.next().expect("an entry").expect("ok")["seq"], 5);
    writer.join().expect("writer");
    assert_eq!(all.last_seq(), Some(6));

    // Bad input is refused before the stream starts.
    let e = c.events(1, Some("a//b")).expect_err("bad topic");
    assert_eq!(e.error_code(), Some(ErrorCode::BadRequest), "{e}");
}

/// Reads raw SSE lines until the first `id:`; answers it.
fn first_id(addr: std::net::SocketAddr, headers: &str) -> (String, u64) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        s,
        "GET /v1/events?from=2 HTTP/1.1\r\nHost: t\r\nAccept: text/event-stream\r\n{headers}\r\n"
    )
    .expect("send");
    let mut r = BufReader::new(s);
    let mut head = String::new();
    loop {
        let mut line = String::new();
        r.read_line(&mut line).expect("read");
        if line == "\r\n" {
            break;
        }
        head.push_str(&line);
    }
    loop {
        let mut line = String::new();
        r.read_line(&mut line).expect("read");
        // Chunked framing lines are hex sizes; the event lines are what matter.
        if let Some(id) = line.trim_end().strip_prefix("id: ") {
            return (head, id.parse().expect("id"));
        }
    }
}

#[test]
fn last_event_id_resumes_right_after_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), true);
    let c = server.client();
    let key = KeyFile::generate().expect("key");
    for n in 0..5 {
        propose(&c, &key, "ev/resume", n);
    }
    let (head, id) = first_id(server.addr(), "");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/event-stream"),
        "{head}"
    );
    assert_eq!(id, 2, "from=2");
    let (_, id) = first_id(server.addr(), "Last-Event-ID: 3\r\n");
    assert_eq!(id, 4, "Last-Event-ID overrides from");
}

#[test]
fn nexus_watch_prints_entries_as_they_commit_and_shutdown_ends_open_streams() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = Server::start(dir.path(), true);
    let c = server.client();
    let key = KeyFile::generate().expect("key");
    propose(&c, &key, "ev/watch", 1);
    let url = format!("http://{}", server.addr());
    let mut watch = Command::new(NEXUS)
        .args(["--server", &url, "--json", "watch", "--from", "1"])
        .env_remove("NEXUS_SERVER")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("nexus watch");
    let mut out = BufReader::new(watch.stdout.take().expect("stdout"));
    let mut line = String::new();
    out.read_line(&mut line).expect("line");
    let first: Value = serde_json::from_str(&line).expect("json");
    assert_eq!(first["seq"], 1);
    propose(&c, &key, "ev/watch", 2);
    line.clear();
    out.read_line(&mut line).expect("line");
    let second: Value = serde_json::from_str(&line).expect("json");
    assert_eq!(second["seq"], 2);
    assert_eq!(second["record"]["topic"], "ev/watch");

    // A server shutting down ends its open streams rather than waiting for them.
    let mut stream = c.events(1, None).expect("stream");
    assert!(stream.next().is_some());
    let asked = Instant::now();
    server.interrupt();
    let status = server.wait();
    assert!(status.success(), "{status:?}");
    assert!(
        asked.elapsed() < Duration::from_secs(10),
        "shutdown waited {:?} for the streams",
        asked.elapsed()
    );
    let _ = watch.kill();
    let _ = watch.wait();
    let mut rest = String::new();
    let _ = watch.stderr.take().map(|mut e| e.read_to_string(&mut rest));
}

/// A consumer that reads nothing blocks no writer, and once it reads, it gets every
/// entry in order (the stream waits for it instead of dropping entries).
#[test]
fn a_stalled_consumer_blocks_no_writer_and_misses_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), true);
    let c = server.client();
    let key = KeyFile::generate().expect("key");
    let mut s = TcpStream::connect(server.addr()).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    write!(s, "GET /v1/events?from=1 HTTP/1.1\r\nHost: t\r\n\r\n").expect("send");
    // Large bodies, so that the stream's buffers fill long before the end.
    let big = "x".repeat(30_000);
    let started = Instant::now();
    for n in 0..300u64 {
        let intent = builders::propose(key.key(), "ev/stalled", json!({"n": n, "pad": big}), &[])
            .expect("intent");
        c.submit_intent(&intent).expect("propose");
    }
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "writes waited for the stalled reader: {:?}",
        started.elapsed()
    );
    let mut r = BufReader::new(s);
    let mut ids = Vec::new();
    let mut line = String::new();
    while ids.len() < 300 {
        line.clear();
        r.read_line(&mut line).expect("read");
        if let Some(id) = line.trim_end().strip_prefix("id: ") {
            ids.push(id.parse::<u64>().expect("id"));
        }
    }
    assert_eq!(ids, (1..=300).collect::<Vec<_>>());
}

/// Streams that join at different moments, one of them slow enough to fall behind
/// the live tail, each get every entry exactly once, in order, while writers race.
#[test]
fn every_stream_gets_every_entry_once_in_order_under_concurrent_writes() {
    const WRITES: u64 = 600;
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), true);
    let c = server.client();
    let readers: Vec<_> = (0..6u64)
        .map(|i| {
            let c = c.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(40 * i));
                let stream = c.events(1, None).expect("stream");
                let mut seqs = Vec::new();
                for e in stream.take(WRITES as usize) {
                    seqs.push(e.expect("entry")["seq"].as_u64().expect("seq"));
                    if i == 0 {
                        // The slow one: falls behind the tail and catches up from the store.
                        std::thread::sleep(Duration::from_millis(2));
                    }
                }
                seqs
            })
        })
        .collect();
    let writers: Vec<_> = (0..4u64)
        .map(|w| {
            let c = c.clone();
            std::thread::spawn(move || {
                let key = KeyFile::generate().expect("key");
                for n in 0..WRITES / 4 {
                    propose(&c, &key, &format!("ev/race/w{w}"), n);
                }
            })
        })
        .collect();
    for w in writers {
        w.join().expect("writer");
    }
    for r in readers {
        assert_eq!(r.join().expect("reader"), (1..=WRITES).collect::<Vec<_>>());
    }
}

/// Connects, asks for `/v1/events?from=1` with `Last-Event-ID: last` when given,
/// reads the next `n` event ids and drops the connection mid-stream.
fn ids_then_disconnect(addr: std::net::SocketAddr, last: Option<u64>, n: usize) -> Vec<u64> {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let header = last.map_or(String::new(), |l| format!("Last-Event-ID: {l}\r\n"));
    write!(
        s,
        "GET /v1/events?from=1 HTTP/1.1\r\nHost: t\r\n{header}\r\n"
    )
    .expect("send");
    let mut r = BufReader::new(s);
    let mut ids = Vec::new();
    let mut line = String::new();
    while ids.len() < n {
        line.clear();
        assert!(
            r.read_line(&mut line).expect("read") > 0,
            "ended after {ids:?}"
        );
        // Chunked framing lines are hex sizes; the event lines are what matter.
        if let Some(id) = line.trim_end().strip_prefix("id: ") {
            ids.push(id.parse().expect("id"));
        }
    }
    ids
}

/// A reader that drops its connection every few entries while a writer keeps
/// committing, and comes back with `Last-Event-ID`, gets every entry exactly once, in
/// order (the Worker's counterpart is in crates/nexus-worker-test/tests/worker.rs).
#[test]
fn a_reader_reconnecting_with_last_event_id_gets_every_entry_once_in_order() {
    const N: u64 = 120;
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), true);
    let c = server.client();
    let writer = std::thread::spawn(move || {
        let key = KeyFile::generate().expect("key");
        for n in 0..N {
            propose(&c, &key, "ev/reconnect", n);
            std::thread::sleep(Duration::from_millis(2));
        }
    });
    let mut got: Vec<u64> = Vec::new();
    let mut connections = 0;
    while (got.len() as u64) < N {
        let take = 7.min(N as usize - got.len());
        got.extend(ids_then_disconnect(
            server.addr(),
            got.last().copied(),
            take,
        ));
        connections += 1;
        std::thread::sleep(Duration::from_millis(10));
    }
    writer.join().expect("writer");
    assert_eq!(got, (1..=N).collect::<Vec<_>>());
    assert!(connections >= N / 7, "{connections} connections");
}
