//! Crash safety with a real process: a writer child is SIGKILLed at random moments, many
//! times over, on the same database file; after every kill the parent reopens the file
//! and checks that nothing is half-written and that claims, log entries and the log head
//! agree.
//!
//! The child is this very test binary, re-executed with `--exact <this test> --nocapture`
//! and [`CHILD_ENV`] naming the database: libtest then runs only this test, which sees the
//! variable and plays the writer. That works the same under `cargo test` and under
//! `cargo nextest run` (both run the same libtest binary).

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nexus_store::{
    CasOp, Commit, CommitOutcome, KeyValueStore, LOG_HEAD_KEY, ObjectStore, Snapshot, parse_head,
    parse_log_key,
};
use nexus_store_redb::{PutPhase, RedbStore, WriteBatch};

const TEST_NAME: &str = "writer_killed_at_random_moments_leaves_a_consistent_store";
const CHILD_ENV: &str = "NEXUS_STORE_REDB_CRASH_CHILD_DB";
const RECORD_LEN: usize = 64 * 1024;
const KILLS: usize = 25;
/// Every this many runs, the kill comes at a random moment of start-up or of the open
/// (redb's repair of the previous crash) instead of during the writes.
const EARLY_KILL_EVERY: usize = 5;
/// What the child prints once the database is open.
const READY: &str = "writer ready";
/// A child left alone (the parent died) stops writing after this long.
const CHILD_LIFETIME: Duration = Duration::from_secs(60);

/// The content rule of record `i`: 64 KiB of xorshift output seeded by `i`, so a record
/// that is torn, truncated or mixed up with another one is detected.
fn record(i: u64) -> Vec<u8> {
    let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(RECORD_LEN);
    while out.len() < RECORD_LEN {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out
}

fn rec_key(i: u64) -> String {
    format!("rec/{i:08}")
}

fn claim_key(i: u64) -> String {
    format!("claim/{i:08}")
}

/// Claims `i` and appends its log entry; also advances `progress` from `i - 1` to `i`, so
/// a commit that half-applied across keys would show.
fn claim_commit(i: u64) -> Commit {
    let progress = |n: u64| (n > 0).then(|| n.to_string().into_bytes());
    Commit {
        ops: vec![
            CasOp {
                key: claim_key(i),
                expected: None,
                new: Some(rec_key(i).into_bytes()),
            },
            CasOp {
                key: "progress".into(),
                expected: progress(i - 1),
                new: progress(i),
            },
        ],
        log: vec![format!("claim {i}").into_bytes()],
    }
}

fn head_of(store: &RedbStore) -> u64 {
    store
        .get_state(LOG_HEAD_KEY)
        .expect("read head")
        .map_or(0, |v| parse_head(&v).expect("head"))
}

/// The writer: loops until killed. Even records are written with `set` then `commit`
/// (two transactions), odd ones with one `write_batch`.
fn run_child(path: &Path) {
    let store = RedbStore::open(path).expect("child: open");
    // Tell the parent the database is open (opening is slow in debug builds, where redb
    // checks its allocator state), so that most kills land while records are written.
    println!("{READY}");
    std::io::Write::flush(&mut std::io::stdout()).expect("child: flush stdout");
    let deadline = Instant::now() + CHILD_LIFETIME;
    let mut i = head_of(&store) + 1;
    while Instant::now() < deadline {
        let outcome = if i.is_multiple_of(2) {
            store.set(&rec_key(i), &record(i)).expect("child: set");
            store.commit(&claim_commit(i)).expect("child: commit")
        } else {
            let mut batch = WriteBatch::new(claim_commit(i));
            batch.kv(PutPhase::BeforeCommit, rec_key(i), record(i));
            store.write_batch(&batch).expect("child: write_batch")
        };
        assert_eq!(outcome, CommitOutcome::Applied { first_seq: Some(i) });
        i += 1;
    }
    // Never reached while the parent is alive: it kills us first.
    std::process::exit(3);
}

/// Reopens the database after a kill and checks every invariant; returns the log head.
fn verify(path: &Path) -> u64 {
    let store = RedbStore::open(path).expect("reopen after kill");
    let snap = store.snapshot().expect("snapshot");
    let head = head_of(&store);

    // log: dense 1..=head, entry i names claim i
    let mut seqs = Vec::new();
    for (key, value) in snap.states.range("log/".to_owned()..) {
        if key == LOG_HEAD_KEY {
            continue;
        }
        if !key.starts_with("log/") {
            break;
        }
        let seq = parse_log_key(key).expect("well-formed log key");
        assert_eq!(value, format!("claim {seq}").as_bytes(), "log entry {seq}");
        seqs.push(seq);
    }
    assert_eq!(
        seqs,
        (1..=head).collect::<Vec<_>>(),
        "log is dense 1..=head"
    );

    // claims: exactly 1..=head, each naming its record
    let claims: Vec<u64> = snap
        .states
        .iter()
        .filter_map(|(k, v)| {
            let i: u64 = k.strip_prefix("claim/")?.parse().expect("claim number");
            assert_eq!(v, rec_key(i).as_bytes(), "claim {i}");
            Some(i)
        })
        .collect();
    assert_eq!(
        claims,
        (1..=head).collect::<Vec<_>>(),
        "claims match the log"
    );

    let progress = snap.states.get("progress").map(|v| {
        std::str::from_utf8(v)
            .expect("utf-8")
            .parse::<u64>()
            .expect("number")
    });
    assert_eq!(progress.unwrap_or(0), head, "progress moved with the log");
    assert_eq!(
        snap.states.len() as u64,
        2 * head + u64::from(head > 0) * 2,
        "no stray states"
    );

    // records: complete, matching their content rule; one for every claim, and at most
    // the one being claimed when the kill came on top
    let recs: BTreeSet<u64> = snap
        .kv
        .iter()
        .map(|(k, v)| {
            let i: u64 = k
                .strip_prefix("rec/")
                .and_then(|n| n.parse().ok())
                .expect("only rec/ keys in kv");
            assert_eq!(v.len(), RECORD_LEN, "record {i} has its full length");
            assert!(*v == record(i), "record {i} matches its content rule");
            i
        })
        .collect();
    for i in 1..=head {
        assert!(recs.contains(&i), "claimed record {i} is present");
    }
    assert!(
        recs.iter().all(|&i| i <= head + 1),
        "no record beyond the next claim: {recs:?}"
    );
    assert!(snap.blobs.is_empty());
    head
}

fn stderr_of(child: &mut Child) -> String {
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        let _ = pipe.read_to_string(&mut stderr);
    }
    stderr
}

/// Blocks until the child printed [`READY`]; panics with its stderr if it died first.
fn wait_until_ready(child: &mut Child) {
    let stdout = child.stdout.take().expect("child stdout is piped");
    let mut lines = BufReader::new(stdout).lines();
    loop {
        match lines.next() {
            // libtest may print "test <name> ... " on the same line first
            Some(Ok(line)) if line.trim_end().ends_with(READY) => return,
            Some(Ok(_)) => {}
            Some(Err(err)) => panic!("reading the child's stdout: {err}"),
            None => {
                let status = child.wait().expect("reap the child");
                panic!(
                    "writer child exited ({status}) before opening the database:\n{}",
                    stderr_of(child)
                );
            }
        }
    }
}

/// Kills the child if the parent's test panics before it does.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn writer_killed_at_random_moments_leaves_a_consistent_store() {
    if let Some(path) = std::env::var_os(CHILD_ENV) {
        run_child(Path::new(&path));
        return;
    }
    let started = Instant::now();
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("crash.redb");
    let exe = std::env::current_exe().expect("test binary path");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    let mut seed = now.map_or(0x5EED, |d| d.as_nanos() as u64) | 1;
    eprintln!("crash test: kill timing seed {seed:#x}");
    let mut next_random = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };

    let mut head = 0;
    let mut grew = 0;
    for kill in 0..KILLS {
        let mut child = KillOnDrop(
            Command::new(&exe)
                .args(["--exact", TEST_NAME, "--nocapture", "--test-threads=1"])
                .env(CHILD_ENV, &path)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn writer child"),
        );
        let early = kill % EARLY_KILL_EVERY == EARLY_KILL_EVERY - 1;
        if early {
            std::thread::sleep(Duration::from_millis(next_random() % 40));
        } else {
            wait_until_ready(&mut child.0);
            std::thread::sleep(Duration::from_millis(next_random() % 50));
        }
        if let Some(status) = child.0.try_wait().expect("poll child") {
            panic!(
                "writer child exited on its own ({status}) before kill {kill}:\n{}",
                stderr_of(&mut child.0)
            );
        }
        // Child::kill is SIGKILL on unix: no destructor, no flush, no clean shutdown.
        child.0.kill().expect("SIGKILL the child");
        child.0.wait().expect("reap the child");

        drop(child);
        let new_head = verify(&path);
        assert!(
            new_head >= head,
            "the log went backwards: {head} -> {new_head}"
        );
        grew += usize::from(new_head > head);
        head = new_head;
    }
    assert!(
        grew >= KILLS / 2,
        "the writer made progress in only {grew} of {KILLS} runs"
    );
    eprintln!(
        "{KILLS} SIGKILLs, {head} claims of 64 KiB records survived, in {:.2?}",
        started.elapsed()
    );
}
