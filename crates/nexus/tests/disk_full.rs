//! The real `nexus serve` on a real full file system: a small tmpfs mounted for the
//! test, filled up with a file, then freed. Needs root (it mounts), so it is ignored
//! by default: `sudo -E cargo test -p nexus --test disk_full -- --ignored`. The same
//! behaviour runs in CI through the injected backend (`serve::tests` in the binary).

mod common;

use std::io::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::Server;
use nexus_core::{Content, Intent, Limits, Record, SigningKey};

/// A tmpfs mounted at a fresh directory, unmounted on drop.
struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().expect("tempdir");
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("run mount");
        assert!(ok.success(), "mount -t tmpfs failed (this test needs root)");
        Tmpfs(dir)
    }

    fn path(&self) -> &Path {
        self.0.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0.path()).status();
    }
}

fn intent(key: &SigningKey, n: u32) -> Record {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64;
    Record::sign(
        Content::Intent(Intent {
            topic: "disk/full".parse().expect("topic"),
            body: serde_json::json!({"n": n, "pad": "x".repeat(60_000)}),
            parents: vec![],
            author: key.author(),
            time: now,
        }),
        key,
        &Limits::default(),
    )
    .expect("sign")
}

/// Writes zeros to `path` until the file system is full.
fn fill(path: &Path) {
    let mut file = std::fs::File::create(path).expect("filler");
    let chunk = vec![0u8; 64 << 10];
    while file.write_all(&chunk).is_ok() {}
    let _ = file.sync_all();
}

#[test]
#[ignore = "needs root: mounts a tmpfs"]
fn the_binary_on_a_full_tmpfs_answers_507_and_recovers_without_a_restart() {
    let fs = Tmpfs::mount("8m");
    let data = fs.path().join("data");
    std::fs::create_dir_all(&data).expect("data dir");
    let server = Server::start(&data, true);
    let client = server.client();
    let key = SigningKey::from_seed(&[9; 32]);
    assert_eq!(client.submit(&intent(&key, 0)).expect("first").seq, Some(1));

    let filler = fs.path().join("filler");
    fill(&filler);
    let mut refused = None;
    for n in 1..200 {
        let record = intent(&key, n);
        match client.submit(&record) {
            Ok(_) => continue,
            Err(e) => {
                assert_eq!(e.status(), Some(507), "{e}");
                assert_eq!(e.code(), Some("insufficient_storage"), "{e}");
                refused = Some(record);
                break;
            }
        }
    }
    let refused = refused.expect("the full tmpfs refused a write");
    let health = client.health().expect("health");
    assert_eq!(health.status, "degraded");
    assert_eq!(health.reason.as_deref(), Some("storage_full"));
    let head = health.log_head;
    assert!(client.log(1, Some(10)).is_ok(), "reads go on");

    std::fs::remove_file(&filler).expect("free the space");
    // Writes resume by themselves (the store retries at most once a second).
    let deadline = Instant::now() + Duration::from_secs(10);
    let done = loop {
        match client.submit(&refused) {
            Ok(done) => break done,
            Err(e) if e.status() == Some(507) && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => panic!("writes did not resume: {e}"),
        }
    };
    assert_eq!(done.seq, Some(head + 1));
    assert_eq!(client.health().expect("health").status, "ok");
    drop(server);
}
