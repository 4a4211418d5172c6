//! Crash safety of the core on the real redb store: a worker child runs the Intent
//! lifecycle (propose an Intent with a 4–16 KiB body, claim it, resolve it with a Fact)
//! in a loop and is SIGKILLed at random moments, many times over, on the same database
//! file; each new child resumes from what it finds. After every kill the parent reopens
//! the file and checks that committed records are complete and verify, that no record is
//! half-written, that every Intent state is backed by the commit log, that the log is
//! dense and holds exactly the deterministic workload's entries, and that links point to
//! committed records. At the end it flushes (which must repair lost index entries) and
//! exports the whole log.
//!
//! The child is this very test binary, re-executed by [`nexus_testkit::CrashTest`] with
//! `--exact <this test> --nocapture` and an environment variable naming the database:
//! libtest then runs only this test, which sees the variable and plays the worker. That
//! works the same under `cargo test` and under `cargo nextest run`.
//!
//! The workload is a pure function of the loop counter `i`: item `i` is log entries
//! `3i+1` (the Intent), `3i+2` (its claim) and `3i+3` (the resolving Fact); the Intent of
//! item `i > 0` names the Fact of item `i - 1` as its parent.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use nexus_core::storage::keys;
use nexus_core::*;
use nexus_store::{BlobStore, LOG_HEAD_KEY, ObjectStore, Snapshot, parse_head, parse_log_key};
use nexus_store_redb::RedbStore;
use nexus_testkit::{CrashTest, xorshift};
use serde_json::json;

type Redb = CompositeColdStorage<RedbStore, RedbStore, RedbStore>;

/// 24 kills; every 6th comes at a random moment of start-up or of the open (redb's
/// repair of the previous crash) instead of during the workload.
const CRASH: CrashTest = CrashTest {
    test_name: "core_worker_killed_at_random_moments_leaves_a_consistent_store",
    child_env: "NEXUS_CORE_REDB_CRASH_CHILD_DB",
    kills: 24,
    early_kill_every: 6,
    max_delay_ms: 120,
};
/// A child left alone (the parent died) stops working after this long.
const CHILD_LIFETIME: Duration = Duration::from_secs(60);
const LEASE_MS: u64 = 60_000;
const PROPOSER: u8 = 1;
/// Workers are `key(WORKER_BASE + i % WORKERS)`.
const WORKER_BASE: u8 = 2;
const WORKERS: u64 = 3;

/// 4–16 KiB of hex digits, a function of `i` and `salt`.
fn pad(i: u64, salt: u64) -> String {
    let mut x = (i.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ salt) | 1;
    let len = 4 * 1024 + usize::try_from(xorshift(&mut x) % (12 * 1024)).expect("small");
    let mut out = String::with_capacity(len + 16);
    while out.len() < len {
        out.push_str(&format!("{:016x}", xorshift(&mut x)));
    }
    out.truncate(len);
    out
}

fn worker(i: u64) -> SigningKey {
    key(WORKER_BASE + u8::try_from(i % WORKERS).expect("few workers"))
}

/// Host time at which item `i` is proposed; it is claimed at `+1` and resolved at `+2`.
fn now_of(i: u64) -> u64 {
    T0 + i * 10_000
}

/// Item `i` of the workload: its Intent, the claim on it and the Fact resolving it.
struct Item {
    intent: Record,
    claim: Action,
    fact: Record,
}

impl Item {
    /// `parent` is the hash of the Fact of item `i - 1` (`None` for item 0).
    fn new(i: u64, parent: Option<FihHash>) -> Self {
        let now = now_of(i);
        let topic = format!("crash/work/{}", i % 4);
        let proposed = intent(
            &key(PROPOSER),
            &topic,
            json!({ "i": i, "pad": pad(i, 1) }),
            parent.into_iter().collect(),
            now,
        );
        let h = proposed.hash();
        let w = worker(i);
        Self {
            claim: claim(&w, h, LEASE_MS, now + 1),
            fact: fact(
                &w,
                &topic,
                json!({ "i": i, "result": pad(i, 2) }),
                vec![h],
                Some((h, 1)),
                now + 2,
            ),
            intent: proposed,
        }
    }

    /// The log entry that step `step` (0: propose, 1: claim, 2: resolve) appends.
    fn entry(&self, i: u64, step: u64) -> LogEntry {
        let at = now_of(i) + step;
        match step {
            0 => LogEntry::Record {
                hash: self.intent.hash(),
                kind: Kind::Intent,
                at,
            },
            1 => LogEntry::Action {
                action: self.claim.to_value(),
                at,
            },
            _ => LogEntry::Record {
                hash: self.fact.hash(),
                kind: Kind::Fact,
                at,
            },
        }
    }
}

/// The whole workload, built lazily (records chain, so item `i` needs item `i - 1`).
#[derive(Default)]
struct Model {
    items: Vec<Item>,
}

impl Model {
    fn item(&mut self, i: u64) -> &Item {
        let i = usize::try_from(i).expect("index");
        while self.items.len() <= i {
            let parent = self.items.last().map(|it| it.fact.hash());
            self.items.push(Item::new(self.items.len() as u64, parent));
        }
        &self.items[i]
    }

    /// The log entry with sequence number `seq` (from 1).
    fn entry(&mut self, seq: u64) -> LogEntry {
        let (i, step) = ((seq - 1) / 3, (seq - 1) % 3);
        self.item(i).entry(i, step)
    }

    /// The record whose content the commit of log entry `seq` writes first, if any.
    fn record_at(&mut self, seq: u64) -> Option<&Record> {
        let (i, step) = ((seq - 1) / 3, (seq - 1) % 3);
        let item = self.item(i);
        match step {
            0 => Some(&item.intent),
            1 => None,
            _ => Some(&item.fact),
        }
    }
}

fn head_of(store: &RedbStore) -> u64 {
    store
        .get_state(LOG_HEAD_KEY)
        .expect("read log head")
        .map_or(0, |v| parse_head(&v).expect("log head"))
}

/// The worker: resumes after the last commit-log entry and loops until killed. Every
/// step must succeed and land at the log position the workload predicts.
fn run_child(path: &Path) {
    let store = RedbStore::open(path).expect("child: open");
    CRASH.ready();
    let head = head_of(&store);
    let s: Redb = CompositeColdStorage::unified(store, Limits::default());
    s.init_deployment(&dep()).expect("child: deployment");
    let (mut i, mut step) = (head / 3, head % 3);
    let mut parent = match i {
        0 => None,
        _ => match s.log_entries(3 * i, 1).expect("child: read log").pop() {
            Some((_, LogEntry::Record { hash, .. })) => Some(hash),
            other => panic!("child: log entry {} is not a Fact: {other:?}", 3 * i),
        },
    };
    let deadline = Instant::now() + CHILD_LIFETIME;
    let mut item = Item::new(i, parent);
    while Instant::now() < deadline {
        let seq = 3 * i + step + 1;
        let now = now_of(i) + step;
        match step {
            0 => {
                let sub = s.submit(&item.intent, now).expect("child: propose");
                assert_eq!(sub.seq, Some(seq), "child: intent {i} committed");
            }
            1 => {
                let lease = match s.act(&item.claim, now).expect("child: claim") {
                    Applied::Leased(lease) => lease,
                    other => panic!("child: claim {i} gave {other:?}"),
                };
                assert_eq!(lease.token, 1, "child: claim {i}");
            }
            _ => {
                let sub = s.submit(&item.fact, now).expect("child: resolve");
                assert_eq!(sub.seq, Some(seq), "child: fact {i} committed");
            }
        }
        step += 1;
        if step == 3 {
            parent = Some(item.fact.hash());
            (i, step) = (i + 1, 0);
            item = Item::new(i, parent);
        }
    }
    // Never reached while the parent is alive: it kills us first.
    std::process::exit(3);
}

/// What the parent already verified (signature checks are slow in debug builds, and
/// stored values are write-once, so each distinct value is verified once).
#[derive(Default)]
struct Verified {
    /// KV key -> the stored bytes and the record they verified as.
    records: HashMap<String, (Vec<u8>, Record)>,
    /// Log sequence number -> the action JSON logged there and what it verified as.
    actions: HashMap<u64, (serde_json::Value, Action)>,
}

impl Verified {
    /// Parses and verifies a stored record.
    fn record(&mut self, key: &str, bytes: &[u8]) -> Record {
        if let Some((seen, rec)) = self.records.get(key)
            && seen.as_slice() == bytes
        {
            return rec.clone();
        }
        let rec = Record::from_json(bytes, &Limits::default())
            .unwrap_or_else(|e| panic!("{key} is half-written or corrupt: {e}"));
        assert_eq!(keys::record(&rec.hash()), key, "{key} holds another record");
        self.records
            .insert(key.to_owned(), (bytes.to_vec(), rec.clone()));
        rec
    }

    /// Parses and verifies a logged action.
    fn action(&mut self, seq: u64, value: &serde_json::Value) -> Action {
        if let Some((seen, action)) = self.actions.get(&seq)
            && seen == value
        {
            return action.clone();
        }
        let action = Action::from_value(value.clone(), &Limits::default())
            .unwrap_or_else(|e| panic!("log entry {seq}: action does not verify: {e}"));
        self.actions.insert(seq, (value.clone(), action.clone()));
        action
    }
}

/// What one check after a kill found.
struct Found {
    /// The log head.
    head: u64,
    /// Whether a record was written whose commit never happened.
    orphan: bool,
    /// Committed records whose index entries the kill cut off.
    unindexed: usize,
}

/// Reopens the database after a kill and checks every invariant; returns the log head.
fn verify(path: &Path, model: &mut Model, cache: &mut Verified) -> Found {
    let store = RedbStore::open(path).expect("reopen after kill");
    let snap = store.snapshot().expect("snapshot");
    let head = head_of(&store);
    let s: Redb = CompositeColdStorage::unified(store, Limits::default());

    // The commit log: dense 1..=head, every entry parses, and it is exactly the
    // workload's prefix of length head.
    let log_seqs: Vec<u64> = snap
        .states
        .keys()
        .filter(|k| {
            k.starts_with("log/")
                && k.as_str() != LOG_HEAD_KEY
                && !k.starts_with(nexus_store::TREE_PREFIX)
        })
        .map(|k| parse_log_key(k).unwrap_or_else(|| panic!("malformed log key {k}")))
        .collect();
    assert_eq!(
        log_seqs,
        (1..=head).collect::<Vec<_>>(),
        "log is dense 1..=head"
    );
    let mut log = Vec::new();
    while (log.len() as u64) < head {
        let page = s
            .log_entries(log.len() as u64 + 1, 256)
            .expect("log entries parse");
        assert!(!page.is_empty(), "log entries below head are readable");
        log.extend(page);
    }
    for (seq, entry) in &log {
        assert_eq!(
            *entry,
            model.entry(*seq),
            "log entry {seq} is the workload's"
        );
    }

    // Records committed by the log, and claims applied by it.
    let mut logged: BTreeMap<FihHash, Kind> = BTreeMap::new();
    let mut claimed: BTreeSet<(FihHash, AuthorKey)> = BTreeSet::new();
    for (seq, entry) in &log {
        match entry {
            LogEntry::Record { hash, kind, .. } => {
                assert!(logged.insert(*hash, *kind).is_none(), "{hash} logged twice");
            }
            LogEntry::Action { action, .. } => {
                let action = cache.action(*seq, action);
                if let ActionContent::Claim { intent, author, .. } = action.content() {
                    claimed.insert((*intent, *author));
                }
            }
        }
    }

    // Object tier: rec/ markers match the logged records one to one; every Intent state
    // is backed by the log; nothing else is stored.
    let mut committed: BTreeMap<FihHash, Kind> = BTreeMap::new();
    let mut states = 0;
    for (k, v) in &snap.states {
        if let Some(h) = k.strip_prefix(keys::COMMITTED_PREFIX) {
            let h: FihHash = h.parse().expect("committed marker names a hash");
            let kind: Kind = std::str::from_utf8(v)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{k} does not hold a kind"));
            committed.insert(h, kind);
        } else if let Some(h) = k.strip_prefix(keys::INTENT_PREFIX) {
            let h: FihHash = h.parse().expect("intent state names a hash");
            let state = IntentState::decode(k, v).expect("intent state parses");
            assert_eq!(
                logged.get(&h),
                Some(&Kind::Intent),
                "{k}: a committed Intent"
            );
            match &state {
                IntentState::Available { token } => assert_eq!(*token, 0, "{k}"),
                IntentState::Claimed { holder, token, .. } => {
                    assert_eq!(*token, 1, "{k}");
                    assert!(claimed.contains(&(h, *holder)), "{k}: claim in the log");
                }
                IntentState::Resolved { fact, by, token } => {
                    assert_eq!(*token, 1, "{k}");
                    assert!(claimed.contains(&(h, *by)), "{k}: claim in the log");
                    assert_eq!(logged.get(fact), Some(&Kind::Fact), "{k}: Fact in the log");
                    let bytes = snap.kv.get(&keys::record(fact)).expect("Fact content");
                    let resolving = cache.record(&keys::record(fact), bytes);
                    let Content::Fact(f) = resolving.content() else {
                        panic!("{k}: resolved by a non-Fact");
                    };
                    let r = f.resolves.as_ref().expect("the resolving Fact resolves");
                    assert_eq!((r.intent, r.token, f.author), (h, *token, *by), "{k}");
                }
                IntentState::Withdrawn { .. } => panic!("{k}: nothing was withdrawn"),
            }
            // Exactly the state the workload reached.
            let i = (0..=head / 3)
                .find(|&i| model.item(i).intent.hash() == h)
                .expect("a workload Intent");
            let expected = if head >= 3 * i + 3 {
                IntentState::Resolved {
                    fact: model.item(i).fact.hash(),
                    by: worker(i).author(),
                    token: 1,
                }
            } else if head >= 3 * i + 2 {
                IntentState::Claimed {
                    holder: worker(i).author(),
                    lease_until: now_of(i) + 1 + LEASE_MS,
                    token: 1,
                }
            } else {
                IntentState::Available { token: 0 }
            };
            assert_eq!(state, expected, "{k}");
            states += 1;
        } else if !k.starts_with("log/")
            && !k.starts_with(keys::ACTS_PREFIX)
            && k != keys::DEPLOYMENT
        {
            panic!("unexpected state {k}");
        }
    }
    assert_eq!(committed, logged, "rec/ markers match the log's records");
    let intents = logged.values().filter(|k| **k == Kind::Intent).count();
    assert_eq!(states, intents, "every committed Intent has a state");

    // Key-value tier: every record content present is complete and verifies; every
    // committed record has its content and its links are committed; the only orphan
    // allowed is the record of the commit that was under way; index entries (written
    // after the commit) name committed records.
    let mut orphan = false;
    for (k, v) in &snap.kv {
        if k.starts_with("r/") {
            let rec = cache.record(k, v);
            let h = rec.hash();
            match committed.get(&h) {
                Some(kind) => assert_eq!(*kind, rec.content().kind(), "{k}"),
                None => {
                    assert_eq!(
                        model.record_at(head + 1).map(Record::hash),
                        Some(h),
                        "orphan {k} is the record of the interrupted commit"
                    );
                    orphan = true;
                }
            }
        } else if keys::is_after_commit(k) {
            let (time, h) = keys::parse_index(k).unwrap_or_else(|| panic!("bad index key {k}"));
            assert!(
                committed.contains_key(&h),
                "index {k} names a committed record"
            );
            let bytes = snap.kv.get(&keys::record(&h)).expect("indexed content");
            let rec = cache.record(&keys::record(&h), bytes);
            assert_eq!(rec.content().time(), time, "{k}");
        } else {
            panic!("unexpected kv key {k}");
        }
    }
    let mut unindexed = 0;
    for h in committed.keys() {
        let key = keys::record(h);
        let bytes = snap
            .kv
            .get(&key)
            .unwrap_or_else(|| panic!("committed record {h} has no content"));
        let rec = cache.record(&key, bytes);
        let c = rec.content();
        let topic = c.topic().expect("Intents and Facts have a topic");
        let index = [
            keys::topic_index(c.kind(), topic, c.time(), h),
            keys::time_index(c.kind(), c.time(), h),
        ];
        unindexed += usize::from(!index.iter().all(|k| snap.kv.contains_key(k)));
        for link in c.links() {
            assert!(
                committed.contains_key(&link),
                "{h} links uncommitted {link}"
            );
        }
    }
    assert!(snap.blobs.is_empty(), "nothing flushed yet");
    Found {
        head,
        orphan,
        unindexed,
    }
}

/// The final checks: a flush over the whole log archives every Fact and repairs every
/// index entry a kill lost, and exporting the log yields records that verify.
fn flush_and_export(path: &Path, model: &mut Model, head: u64) {
    let s: Redb = CompositeColdStorage::unified(
        RedbStore::open(path).expect("reopen for export"),
        Limits::default(),
    );
    let policy = nexus_core::archive::WindowPolicy {
        max_entries: u64::MAX,
        max_age_ms: 0,
    };
    let report = s.flush(&policy, 0).expect("flush");
    let window = report.window.expect("a window over the whole log");
    assert_eq!(
        (window.first, window.last),
        (1, head),
        "flush covers the log"
    );
    let lines = s
        .blobs()
        .get_blob(&window.archive)
        .expect("read")
        .expect("archive");
    let archived: Vec<FihHash> = nexus_core::archive::check_archive(&window, &lines)
        .expect("archive matches its manifest")
        .iter()
        .filter_map(|l| {
            let v: serde_json::Value = serde_json::from_slice(l).expect("json");
            let rec = v.get("record")?.clone();
            let rec = Record::from_value(rec, &Limits::default()).expect("archived record");
            (rec.content().kind() == Kind::Fact).then(|| rec.hash())
        })
        .collect();
    let facts: Vec<FihHash> = (0..head / 3).map(|i| model.item(i).fact.hash()).collect();
    assert_eq!(
        archived, facts,
        "the archive holds every committed Fact, in order"
    );

    let mut exported = 0;
    let mut next = 1;
    loop {
        let page = s.log_entries(next, 100).expect("export log");
        let Some((last, _)) = page.last() else { break };
        next = last + 1;
        for (seq, entry) in page {
            if let LogEntry::Record { hash, kind, .. } = entry {
                let rec = s
                    .get_record(&hash)
                    .expect("load exported record")
                    .unwrap_or_else(|| panic!("log entry {seq}: {hash} not committed"));
                assert_eq!((rec.hash(), rec.content().kind()), (hash, kind));
                assert_eq!(Some(&rec), model.record_at(seq), "log entry {seq}");
                exported += 1;
            }
        }
    }
    assert_eq!(next - 1, head, "export reached the head");
    assert_eq!(
        exported,
        head.div_ceil(3) + head / 3,
        "every record exported"
    );

    // After the flush every committed record is findable through the indexes.
    let mut indexed = BTreeSet::new();
    for kind in [Kind::Intent, Kind::Fact] {
        let mut after = None;
        loop {
            let page = s
                .by_time(kind, TimeRange::default(), after.as_deref(), 1_000)
                .expect("query");
            indexed.extend(page.items);
            match page.next {
                Some(n) => after = Some(n),
                None => break,
            }
        }
    }
    let committed: BTreeSet<FihHash> = (1..=head)
        .filter_map(|seq| model.record_at(seq).map(Record::hash))
        .collect();
    assert_eq!(indexed, committed, "flush repaired every index entry");
}

#[test]
fn core_worker_killed_at_random_moments_leaves_a_consistent_store() {
    if let Some(path) = CRASH.child_path() {
        run_child(&path);
        return;
    }
    let started = Instant::now();
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("core-crash.redb");
    let mut model = Model::default();
    let mut cache = Verified::default();
    let (mut head, mut grew, mut mid_item, mut orphans, mut unindexed) = (0, 0, 0, 0, 0);
    CRASH.run(&path, |kill| {
        let found = verify(&path, &mut model, &mut cache);
        let new_head = found.head;
        // A kill cuts off the index entries of at most the one record it interrupts.
        assert!(
            found.unindexed <= unindexed + 1,
            "kill {kill}: {} records lost index entries, before it {unindexed}",
            found.unindexed
        );
        unindexed = found.unindexed;
        orphans += usize::from(found.orphan);
        assert!(
            new_head >= head,
            "the log went backwards: {head} -> {new_head}"
        );
        grew += usize::from(new_head > head);
        mid_item += usize::from(!new_head.is_multiple_of(3));
        head = new_head;
    });
    let kills = CRASH.kills;
    assert!(
        grew >= kills / 2,
        "the worker made progress in only {grew} of {kills} runs"
    );
    flush_and_export(&path, &mut model, head);
    eprintln!(
        "{kills} SIGKILLs ({mid_item} mid-item, {orphans} between a record's write and its \
         commit, {unindexed} records' index entries cut off and repaired by flush), {} items / \
         {head} log entries survived and verified, in {:.2?}",
        head / 3,
        started.elapsed()
    );
}
