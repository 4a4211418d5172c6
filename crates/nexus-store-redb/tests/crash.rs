//! Crash safety with a real process: a writer child is SIGKILLed at random moments, many
//! times over, on the same database file; after every kill the parent reopens the file
//! and checks that nothing is half-written and that claims, log entries and the log head
//! agree.
//!
//! The child is this very test binary, re-executed by [`nexus_testkit::CrashTest`] with
//! `--exact <this test> --nocapture` and an environment variable naming the database:
//! libtest then runs only this test, which sees the variable and plays the writer. That
//! works the same under `cargo test` and under `cargo nextest run`.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use nexus_store::{
    CasOp, Commit, CommitOutcome, KeyValueStore, LOG_HEAD_KEY, ObjectStore, Snapshot, parse_head,
    parse_log_key,
};
use nexus_store_redb::{PutPhase, RedbStore, WriteBatch};
use nexus_testkit::CrashTest;

/// 25 kills; every 5th comes at a random moment of start-up or of the open (redb's
/// repair of the previous crash) instead of during the writes.
const CRASH: CrashTest = CrashTest {
    test_name: "writer_killed_at_random_moments_leaves_a_consistent_store",
    child_env: "NEXUS_STORE_REDB_CRASH_CHILD_DB",
    kills: 25,
    early_kill_every: 5,
    max_delay_ms: 50,
};
const RECORD_LEN: usize = 64 * 1024;
/// A child left alone (the parent died) stops writing after this long.
const CHILD_LIFETIME: Duration = Duration::from_secs(60);

/// The content rule of record `i`: 64 KiB of xorshift output seeded by `i`, so a record
/// that is torn, truncated or mixed up with another one is detected.
fn record(i: u64) -> Vec<u8> {
    let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(RECORD_LEN);
    while out.len() < RECORD_LEN {
        out.extend_from_slice(&nexus_testkit::xorshift(&mut x).to_le_bytes());
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
        reads: Vec::new(),
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
    CRASH.ready();
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
        if key == LOG_HEAD_KEY || key.starts_with(nexus_store::TREE_PREFIX) {
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
    // the log's Merkle tree: exactly the stored hashes of `head` leaves, as computed
    // afresh from the entries (a kill never leaves the tree apart from the log)
    let tree: std::collections::BTreeMap<u64, nexus_tlog::Hash> = snap
        .states
        .range(nexus_store::TREE_PREFIX.to_owned()..)
        .take_while(|(k, _)| k.starts_with(nexus_store::TREE_PREFIX))
        .map(|(k, v)| {
            let index = k[nexus_store::TREE_PREFIX.len()..]
                .parse()
                .expect("tree index");
            (
                index,
                nexus_store::decode_tree_hash(k, v).expect("32 bytes"),
            )
        })
        .collect();
    let leaves: Vec<_> = (1..=head)
        .map(|seq| nexus_tlog::leaf_hash(&snap.states[&nexus_store::log_key(seq)]))
        .collect();
    let afresh = nexus_tlog::append(
        0,
        &leaves,
        &nexus_store::StoreHashes(&nexus_store::MemoryStore::new()),
    )
    .expect("tree afresh");
    assert_eq!(
        tree.into_iter().collect::<Vec<_>>(),
        afresh,
        "the tree matches the log"
    );
    assert_eq!(
        snap.states.len() as u64,
        2 * head + u64::from(head > 0) * 2 + nexus_tlog::stored_hash_count(head),
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

#[test]
fn writer_killed_at_random_moments_leaves_a_consistent_store() {
    if let Some(path) = CRASH.child_path() {
        run_child(&path);
        return;
    }
    let started = Instant::now();
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("crash.redb");
    let mut head = 0;
    let mut grew = 0;
    CRASH.run(&path, |_| {
        let new_head = verify(&path);
        assert!(
            new_head >= head,
            "the log went backwards: {head} -> {new_head}"
        );
        grew += usize::from(new_head > head);
        head = new_head;
    });
    assert!(
        grew >= CRASH.kills / 2,
        "the writer made progress in only {grew} of {} runs",
        CRASH.kills
    );
    eprintln!(
        "{} SIGKILLs, {head} claims of 64 KiB records survived, in {:.2?}",
        CRASH.kills,
        started.elapsed()
    );
}
