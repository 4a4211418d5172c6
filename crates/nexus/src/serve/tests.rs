//! The server on a disk that fills up (the injected backend of `nexus_testkit::faults`):
//! `507` while full, reads go on, health `503 degraded`, and writes resume once space
//! returns, with no restart and nothing of the failed write stored.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::time::Duration;

use nexus_client::Client;
use nexus_core::{Content, Intent, Record, SigningKey};
use nexus_testkit::faults::{DiskFaults, Fault};

use super::*;

/// A server on `store` listening on a free loopback port (the accept loop of
/// `nexus serve`, no rate limits), on a runtime of its own thread; dropping it stops it.
struct TestServer {
    url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    writes: Option<ServerThread<RedbStore>>,
}

impl TestServer {
    fn start(store: RedbStore) -> Self {
        let config = ApiConfig {
            open: true,
            ..ApiConfig::default()
        };
        let guard = Guard {
            header_timeout: Duration::from_secs(30),
            body_timeout: Duration::from_secs(30),
            max_connections: 64,
            author_rate: Rate {
                per_second: 0,
                burst: 0,
            },
            address_rate: Rate {
                per_second: 0,
                burst: 0,
            },
            read_access: ReadAccess::public(),
            public_reads: false,
            tls: None,
        };
        let net = NetConfig {
            header_timeout: guard.header_timeout,
            max_connections: guard.max_connections,
            tls: None,
        };
        let (state, writes) = start(store, config, &guard).unwrap();
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                addr_tx.send(listener.local_addr().unwrap()).unwrap();
                let stop = async {
                    let _ = stopped.await;
                };
                net::serve(listener, net, state, stop).await.unwrap();
            });
        });
        let addr = addr_rx.recv().unwrap();
        Self {
            url: format!("http://{addr}"),
            stop: Some(stop),
            thread: Some(thread),
            writes: Some(writes),
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        if let Some(writes) = self.writes.take() {
            let _ = writes.shutdown();
        }
    }
}

/// A signed Intent with a body of nearly the largest size the limits allow.
fn big_intent(key: &SigningKey, n: u32) -> Record {
    let body = serde_json::json!({"n": n, "pad": "x".repeat(60_000)});
    let content = Content::Intent(Intent {
        topic: "disk/full".parse().unwrap(),
        body,
        parents: vec![],
        author: key.author(),
        time: now_ms(),
    });
    Record::sign(content, key, &nexus_core::Limits::default()).unwrap()
}

#[test]
fn a_full_disk_answers_507_reads_go_on_health_is_degraded_and_writes_resume() {
    let dir = tempfile::tempdir().unwrap();
    let disk = DiskFaults::new();
    let path = dir.path().join("nexus.redb");
    let (faulty, at) = (disk.clone(), path.clone());
    let store = RedbStore::open_with(move || faulty.database(&at)).unwrap();
    store.set_full_retry_interval(Duration::ZERO);
    let server = TestServer::start(store);
    let client = Client::new(&server.url).unwrap();
    let key = SigningKey::from_seed(&[7; 32]);

    let first = big_intent(&key, 0);
    assert_eq!(client.submit(&first).unwrap().seq, Some(1));
    assert_eq!(client.health().unwrap().status, "ok");

    // The disk fills: some write finds no room (the first ones may still fit in the
    // space redb had freed before).
    disk.set(Fault::Full);
    let mut committed = 1;
    let mut refused = None;
    for n in 1..20 {
        let intent = big_intent(&key, n);
        match client.submit(&intent) {
            Ok(done) => {
                committed += 1;
                assert_eq!(done.seq, Some(committed));
            }
            Err(e) => {
                assert_eq!(e.status(), Some(507), "{e}");
                assert_eq!(e.code(), Some("insufficient_storage"), "{e}");
                let message = e.api().unwrap().message.clone();
                assert!(message.starts_with("storage is full: redb: "), "{message}");
                assert_eq!(message.matches("storage").count(), 1, "{message}");
                assert!(message.contains("No space left on device"), "{message}");
                refused = Some(intent);
                break;
            }
        }
    }
    let refused = refused.expect("the full disk refused a write");

    // Health says so, and names the log head; reads go on.
    let health = client.health().unwrap();
    assert_eq!(health.status, "degraded");
    assert_eq!(health.reason.as_deref(), Some("storage_full"));
    assert!(health.message.unwrap().contains("No space left"));
    assert_eq!(health.log_head, committed);
    let (status, raw) = client
        .get_json("/v1/log?from=1")
        .unwrap_or((0, Default::default()));
    assert_eq!((status, raw["head"].as_u64()), (200, Some(committed)));
    assert!(client.record(&first.hash().to_string()).is_ok());
    let missing = client.record(&refused.hash().to_string()).unwrap_err();
    assert_eq!(missing.status(), Some(404), "{missing}");
    // Writes keep failing the same way while the disk is full.
    assert_eq!(client.submit(&refused).unwrap_err().status(), Some(507));

    // Space returns: the same write now commits, numbered right after the others, with
    // no restart; health is ok again.
    disk.set(Fault::None);
    let done = client.submit(&refused).unwrap();
    assert!(!done.duplicate);
    assert_eq!(done.seq, Some(committed + 1));
    let health = client.health().unwrap();
    assert_eq!((health.status.as_str(), health.reason), ("ok", None));
    assert_eq!(health.log_head, committed + 1);
    assert!(client.record(&refused.hash().to_string()).is_ok());
    drop(client);
    drop(server);

    // On disk: every acknowledged write, in order.
    let reopened = RedbStore::open(&path).unwrap();
    let head = nexus_store::ObjectStore::get_state(&reopened, nexus_store::LOG_HEAD_KEY).unwrap();
    assert_eq!(head, Some((committed + 1).to_string().into_bytes()));
}
