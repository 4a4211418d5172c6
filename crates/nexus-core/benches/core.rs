//! Criterion benches of the core (see `BENCHMARKS.md` at the repository root).
//!
//! * `record_1k` — one Intent whose body is ~1 KiB of canonical JSON: canonicalising,
//!   BLAKE3 alone, canonicalise + hash, full verification of the wire form, an Ed25519
//!   verification alone, and `serde_json_canonicalizer` as a peer.
//! * `cycle` — one propose → claim → resolve cycle (a fresh Intent every iteration) on
//!   the in-memory store directly, through an IoBuffer session per operation, on a
//!   durable redb file, and a raw-redb baseline of as many durable write transactions.
//!
//! What a cycle includes: the three core operations with all their reads, validation,
//! encoding and commits, and the one Ed25519 verification the claim does when it reads
//! the stored Intent back. What it does not include: signing (the client's cost) and the
//! verification of the three incoming wire forms (the records are already `Signed`
//! values); see `record_1k/verify_wire` for that per-record cost.

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use nexus_core::record::{canonical_bytes, hash_content};
use nexus_core::storage::{ReadSet, keys};
use nexus_core::{
    Action, ActionContent, Applied, CompositeColdStorage, Content, CoreResult, Fact, FihHash,
    Intent, IntentState, Limits, Record, Resolves, SigningKey, Topic, canonical,
};
use nexus_iobuf::{Delta, Executed, IoBufferBlob, IoBufferKv, IoBufferObject, StoreSession};
use nexus_store::{
    BlobStore, CasOp, Commit, CommitOutcome, KeyValueStore, MemoryStore, ObjectStore,
};
use nexus_store_redb::{PutPhase, RedbStore, WriteBatch};
use nexus_testkit::{Call, Hooked};
use serde_json::{Value, json};

/// Host time of every operation: actions are stamped with it, so leases stay live.
const NOW: u64 = 1_764_000_000_000;
/// Lease asked for by every claim.
const LEASE_MS: u64 = 60_000;
/// Canonical size the `record_1k` body is padded to.
const BODY_BYTES: usize = 1024;

/// The deployment the bench's stores have and its actions are signed for.
fn dep() -> nexus_core::Deployment {
    "bench".parse().expect("deployment")
}

/// `store` with its deployment id written (as a host does at its first start).
fn ready<S>(store: S) -> S
where
    S: nexus_store::KeyValueStore + nexus_store::BlobStore + nexus_store::ObjectStore + Clone,
{
    CompositeColdStorage::unified(store.clone(), Limits::default())
        .init_deployment(&dep())
        .expect("deployment");
    store
}

fn key(n: u8) -> SigningKey {
    SigningKey::from_seed(&[n; 32])
}

fn topic(s: &str) -> Topic {
    s.parse().expect("valid topic")
}

// ---------------------------------------------------------------------------------
// record_1k
// ---------------------------------------------------------------------------------

/// A realistic Intent body: nested objects, strings with escapes and non-ASCII text,
/// integers (some negative, some large), arrays; padded to exactly `BODY_BYTES`
/// canonical bytes.
fn body_1k() -> Value {
    let mut body = json!({
        "experiment": "solubility-sweep/v3",
        "compound": {
            "name": "sodium chloride",
            "formula": "NaCl",
            "cas": "7647-14-5",
            "smiles": "[Na+].[Cl-]",
            "molar_mass_ug": 58_443_000
        },
        "conditions": {
            "solvent": "water",
            "temp_mk": [278_150, 288_150, 298_150, 308_150, 318_150, 328_150],
            "pressure_pa": 101_325,
            "stir_rpm": 400,
            "ph_milli": 7_000
        },
        "notes": "Shake-flask method (\"OECD 105\");\n\tfilter at 0.45 µm, then gravimetric.\nSee lab log §4.2 — rev. 3 \\ draft.",
        "steps": [
            {"op": "weigh", "mg": 1_500, "tolerance_ug": -250},
            {"op": "dissolve", "ml": 10, "wait_s": 3_600},
            {"op": "filter", "pore_nm": 450},
            {"op": "dry", "temp_mk": 378_150, "wait_s": 86_400},
            {"op": "weigh", "mg": 0, "repeat": 3}
        ],
        "tags": ["chem", "solubility", "baseline", "überprüfung", "溶解度"],
        "budget": {"max_runs": 48, "max_minutes": 720, "priority": -2},
        "requester": "agent:alpha/7",
        "seed": 9_007_199_254_740_991_i64,
        "pad": ""
    });
    let size = |b: &Value| canonical::to_vec(b).expect("canonical body").len();
    let short = BODY_BYTES
        .checked_sub(size(&body))
        .expect("body template is under BODY_BYTES");
    body["pad"] = Value::String("x".repeat(short));
    assert_eq!(size(&body), BODY_BYTES, "body padded to size");
    body
}

fn bench_record_1k(c: &mut Criterion) {
    let limits = Limits::default();
    let alice = key(1);
    let body = body_1k();
    let content = Content::Intent(Intent {
        topic: topic("chem/solubility"),
        body: body.clone(),
        parents: vec![
            FihHash::of_canonical(b"parent-1"),
            FihHash::of_canonical(b"parent-2"),
        ],
        author: alice.author(),
        time: NOW,
    });
    let bytes = canonical_bytes(&content, &limits).expect("canonical bytes");
    let record = Record::sign(content.clone(), &alice, &limits).expect("sign");
    let wire = record.to_json();
    let content_value = serde_json::to_value(&content).expect("content as JSON");
    // The peer must produce the very bytes we hash, or the comparison is void.
    assert_eq!(
        serde_json_canonicalizer::to_vec(&content_value).expect("peer canonical"),
        bytes
    );
    assert_eq!(
        serde_json_canonicalizer::to_vec(&body).expect("peer canonical"),
        canonical::to_vec(&body).expect("ours")
    );
    eprintln!(
        "record_1k: body {} B canonical, record {} B canonical, wire form {} B",
        BODY_BYTES,
        bytes.len(),
        wire.len()
    );

    let mut g = c.benchmark_group("record_1k");
    g.throughput(Throughput::Bytes(bytes.len() as u64));
    g.bench_function("canonicalise", |b| {
        b.iter(|| canonical_bytes(black_box(&content), &limits).expect("canonical"))
    });
    g.bench_function("blake3", |b| {
        b.iter(|| FihHash::of_canonical(black_box(&bytes)))
    });
    g.bench_function("canonicalise_hash", |b| {
        b.iter(|| hash_content(black_box(&content), &limits).expect("hash"))
    });
    g.bench_function("jcs_peer_record", |b| {
        b.iter(|| serde_json_canonicalizer::to_vec(black_box(&content_value)).expect("peer"))
    });
    g.throughput(Throughput::Bytes(BODY_BYTES as u64));
    g.bench_function("canonicalise_body", |b| {
        b.iter(|| canonical::to_vec(black_box(&body)).expect("canonical"))
    });
    g.bench_function("jcs_peer_body", |b| {
        b.iter(|| serde_json_canonicalizer::to_vec(black_box(&body)).expect("peer"))
    });
    g.throughput(Throughput::Bytes(wire.len() as u64));
    g.bench_function("verify_wire", |b| {
        b.iter(|| Record::from_json(black_box(&wire), &limits).expect("verifies"))
    });
    g.throughput(Throughput::Elements(1));
    let (hash, sig) = (record.hash(), record.sig());
    g.bench_function("ed25519_verify", |b| {
        b.iter(|| assert!(alice.author().verify(black_box(&hash), black_box(&sig))))
    });
    // The client's share of every write: one signature.
    g.bench_function("ed25519_sign", |b| b.iter(|| alice.sign(black_box(&hash))));
    g.finish();
}

// ---------------------------------------------------------------------------------
// cycle
// ---------------------------------------------------------------------------------

/// The signed inputs of one propose → claim → resolve cycle.
struct Cycle {
    intent: Record,
    claim: Action,
    fact: Record,
}

/// Signs cycle inputs (outside any timed region): a fresh Intent per call.
struct Signer {
    proposer: SigningKey,
    worker: SigningKey,
    limits: Limits,
    body: Option<Value>,
    n: u64,
}

impl Signer {
    /// Small bodies (`{"compound":…,"n":…,"temp_c":…}`), or `body` with a counter.
    fn new(body: Option<Value>) -> Self {
        Self {
            proposer: key(1),
            worker: key(2),
            limits: Limits::default(),
            body,
            n: 0,
        }
    }

    fn next(&mut self) -> Cycle {
        self.n += 1;
        let n = self.n;
        let body = match &self.body {
            None => json!({"compound": "NaCl", "n": n, "temp_c": 25}),
            Some(b) => {
                let mut b = b.clone();
                b["n"] = json!(n);
                b
            }
        };
        let intent = Record::sign(
            Content::Intent(Intent {
                topic: topic("chem/solubility"),
                body,
                parents: vec![],
                author: self.proposer.author(),
                time: NOW,
            }),
            &self.proposer,
            &self.limits,
        )
        .expect("sign intent");
        let claim = Action::sign(
            ActionContent::Claim {
                intent: intent.hash(),
                lease_ms: LEASE_MS,
                author: self.worker.author(),
                deployment: Some(dep()),
                time: NOW,
            },
            &self.worker,
            &self.limits,
        )
        .expect("sign claim");
        // A fresh Intent starts at token 0; its first claim receives token 1.
        let fact = Record::sign(
            Content::Fact(Fact {
                topic: topic("chem/solubility/results"),
                body: json!({"g_per_l": 359, "n": n}),
                parents: vec![intent.hash()],
                resolves: Some(Resolves {
                    intent: intent.hash(),
                    token: 1,
                }),
                author: self.worker.author(),
                time: NOW,
            }),
            &self.worker,
            &self.limits,
        )
        .expect("sign fact");
        Cycle {
            intent,
            claim,
            fact,
        }
    }
}

fn expect_token_1(applied: Applied) {
    match applied {
        Applied::Leased(lease) => assert_eq!(lease.token, 1, "first claim gets token 1"),
        other => panic!("expected a lease, got {other:?}"),
    }
}

/// One cycle directly on a composite storage.
fn cycle_direct<K, B, O>(core: &CompositeColdStorage<K, B, O>, c: &Cycle)
where
    K: KeyValueStore,
    B: BlobStore,
    O: ObjectStore,
{
    core.submit(&c.intent, NOW).expect("propose");
    expect_token_1(core.act(&c.claim, NOW).expect("claim"));
    core.submit(&c.fact, NOW).expect("resolve");
}

type BufCore = CompositeColdStorage<IoBufferKv, IoBufferBlob, IoBufferObject>;

/// Runs one operation through a fresh IoBuffer session over `store` (hydrating it from
/// `store`, first with `prehydrate` if given, as a host does); returns the result, the
/// delta to flush, and the number of rounds.
fn in_session<S, T>(
    store: &S,
    prehydrate: Option<&ReadSet>,
    op: impl Fn(&BufCore) -> CoreResult<T>,
) -> (T, Delta, usize)
where
    S: KeyValueStore + BlobStore + ObjectStore,
{
    let mut driver = StoreSession::new();
    if let Some(reads) = prehydrate {
        let sess = driver.session();
        if !reads.states.is_empty() {
            let refs: Vec<&str> = reads.states.iter().map(String::as_str).collect();
            let values = store.get_states(&refs).expect("hydrate states");
            sess.object_buf()
                .hydrate_batch(reads.states.iter().cloned().zip(values));
        }
        if !reads.kv.is_empty() {
            let refs: Vec<&str> = reads.kv.iter().map(String::as_str).collect();
            let values = store.get_many(&refs).expect("hydrate kv");
            sess.kv_buf()
                .hydrate_batch(reads.kv.iter().cloned().zip(values));
        }
    }
    let (out, delta) = driver
        .run(store, |sess| {
            let core = CompositeColdStorage::new(
                sess.kv_buf().clone(),
                sess.blob_buf().clone(),
                sess.object_buf().clone(),
                Limits::default(),
            );
            op(&core)
        })
        .expect("session converges");
    (out.expect("operation succeeds"), delta, driver.rounds())
}

/// How a session's delta reaches the backing store.
#[derive(Clone, Copy)]
enum Flush {
    /// [`Delta::flush`]: puts, the commit, after-commit puts (one store call each).
    Delta,
    /// One [`RedbStore::write_batch`] per operation (one `fsync`).
    RedbBatch,
}

trait FlushTarget: KeyValueStore + BlobStore + ObjectStore {
    fn write_batch(&self, delta: &Delta);
}

impl FlushTarget for MemoryStore {
    fn write_batch(&self, _: &Delta) {
        unreachable!("write_batch is a redb path")
    }
}

impl FlushTarget for RedbStore {
    fn write_batch(&self, delta: &Delta) {
        assert!(delta.kv_deletes.is_empty() && delta.blob_deletes.is_empty());
        let mut batch = WriteBatch::new(delta.commit.clone());
        for (k, v) in &delta.blob_puts {
            batch.blob(PutPhase::BeforeCommit, k.clone(), v.clone());
        }
        for (k, v) in &delta.kv_puts {
            let phase = if keys::is_after_commit(k) {
                PutPhase::AfterCommit
            } else {
                PutPhase::BeforeCommit
            };
            batch.kv(phase, k.clone(), v.clone());
        }
        let outcome = RedbStore::write_batch(self, &batch).expect("write batch");
        assert!(
            matches!(outcome, CommitOutcome::Applied { .. }),
            "batch applied"
        );
    }
}

fn flush<S: FlushTarget>(store: &S, delta: &Delta, how: Flush) {
    match how {
        Flush::Delta => {
            delta
                .flush(store, keys::is_after_commit)
                .expect("flush delta");
        }
        Flush::RedbBatch => store.write_batch(delta),
    }
}

/// One cycle, one session per operation; returns the rounds of each operation.
fn cycle_session<S: FlushTarget>(store: &S, c: &Cycle, prehydrate: bool, how: Flush) -> [usize; 3] {
    let reads = |r: ReadSet| prehydrate.then_some(r);
    let rs = reads(ReadSet::for_record(&c.intent));
    let (_, delta, r1) = in_session(store, rs.as_ref(), |core| core.submit(&c.intent, NOW));
    flush(store, &delta, how);
    let rs = reads(ReadSet::for_action(&c.claim));
    let (applied, delta, r2) = in_session(store, rs.as_ref(), |core| core.act(&c.claim, NOW));
    expect_token_1(applied);
    flush(store, &delta, how);
    let rs = reads(ReadSet::for_record(&c.fact));
    let (_, delta, r3) = in_session(store, rs.as_ref(), |core| core.submit(&c.fact, NOW));
    flush(store, &delta, how);
    [r1, r2, r3]
}

/// Write calls and bytes (keys + values + log entries) that reach a store.
#[derive(Clone)]
struct Counting {
    store: Hooked<MemoryStore>,
    writes: Arc<AtomicU64>,
    bytes: Arc<AtomicU64>,
}

impl Counting {
    fn new() -> Self {
        let (writes, bytes) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let (w, n) = (Arc::clone(&writes), Arc::clone(&bytes));
        let store =
            Hooked::new(ready(MemoryStore::new())).with_before(move |_: &MemoryStore, call| {
                let size = match call {
                    Call::KvSet(k, v) | Call::BlobPut(k, v) | Call::StatePut(k, v) => {
                        k.len() + v.len()
                    }
                    Call::KvDelete(k) | Call::BlobDelete(k) => k.len(),
                    Call::Commit(c) => {
                        let ops: usize = c
                            .ops
                            .iter()
                            .map(|op| op.key.len() + op.new.as_ref().map_or(0, Vec::len))
                            .sum();
                        ops + c.log.iter().map(Vec::len).sum::<usize>()
                    }
                    _ => return Ok(()),
                };
                w.fetch_add(1, Ordering::Relaxed);
                n.fetch_add(size as u64, Ordering::Relaxed);
                Ok(())
            });
        Self {
            store,
            writes,
            bytes,
        }
    }
    fn totals(&self) -> (u64, u64) {
        (
            self.writes.load(Ordering::Relaxed),
            self.bytes.load(Ordering::Relaxed),
        )
    }
}

/// Checks one cycle end to end and reports what it writes (outside any timing).
fn probe_cycle() -> (u64, u64) {
    let store = Counting::new();
    let core = CompositeColdStorage::unified(store.store.clone(), Limits::default());
    let mut signer = Signer::new(None);
    // Warm the store with one cycle so the probe sees the steady state (log head exists).
    cycle_direct(&core, &signer.next());
    let before = store.totals();
    let c = signer.next();
    cycle_direct(&core, &c);
    let after = store.totals();
    assert!(
        matches!(
            core.intent_state(&c.intent.hash()).expect("state"),
            Some(IntentState::Resolved { .. })
        ),
        "the cycle resolves the Intent"
    );
    (after.0 - before.0, after.1 - before.1)
}

/// `n` raw durable redb write transactions, each one commit putting `bytes` bytes under
/// a fresh key (no core logic): the floor under a durable cycle.
fn raw_commits(store: &RedbStore, seq: &mut u64, n: u64, value: &[u8]) {
    for _ in 0..n {
        *seq += 1;
        let commit = Commit {
            reads: Vec::new(),
            ops: vec![CasOp {
                key: format!("raw/{:016}", *seq),
                expected: None,
                new: Some(value.to_vec()),
            }],
            log: vec![],
        };
        let outcome = store.commit(&commit).expect("raw commit");
        assert!(matches!(outcome, CommitOutcome::Applied { .. }));
    }
}

fn bench_cycle(c: &mut Criterion) {
    let (writes, bytes) = probe_cycle();
    let per_write = (bytes / writes.max(1)) as usize;
    eprintln!("cycle: {writes} store write calls, {bytes} B written per cycle (direct path)");
    {
        let store = ready(MemoryStore::new());
        let mut signer = Signer::new(None);
        let rounds = cycle_session(&store, &signer.next(), false, Flush::Delta);
        let hydrated = cycle_session(&store, &signer.next(), true, Flush::Delta);
        eprintln!(
            "cycle: session rounds per op (propose, claim, resolve): cold {rounds:?}, pre-hydrated {hydrated:?}"
        );
        // What a pre-hydrated proposal still misses in its first round.
        let cy = signer.next();
        let reads = ReadSet::for_record(&cy.intent);
        let mut driver = StoreSession::new();
        let refs: Vec<&str> = reads.states.iter().map(String::as_str).collect();
        let values = store.get_states(&refs).expect("hydrate states");
        driver
            .session()
            .object_buf()
            .hydrate_batch(reads.states.iter().cloned().zip(values));
        let first = driver
            .execute(|sess| {
                CompositeColdStorage::new(
                    sess.kv_buf().clone(),
                    sess.blob_buf().clone(),
                    sess.object_buf().clone(),
                    Limits::default(),
                )
                .submit(&cy.intent, NOW)
                .map(|_| ())
            })
            .expect("execute");
        match first {
            Executed::NeedsHydration(misses) => {
                eprintln!("cycle: a pre-hydrated proposal still misses {misses:?}")
            }
            Executed::Done(..) => eprintln!("cycle: a pre-hydrated proposal needs one round"),
        }
    }

    let mut g = c.benchmark_group("cycle");
    g.throughput(Throughput::Elements(1));
    g.warm_up_time(Duration::from_secs(1));
    g.measurement_time(Duration::from_secs(4));

    {
        let core = CompositeColdStorage::unified(ready(MemoryStore::new()), Limits::default());
        let mut signer = Signer::new(None);
        g.bench_function("memory_direct", |b| {
            b.iter_batched(
                || signer.next(),
                |cy| cycle_direct(&core, &cy),
                BatchSize::SmallInput,
            )
        });
    }
    {
        let core = CompositeColdStorage::unified(ready(MemoryStore::new()), Limits::default());
        let mut signer = Signer::new(Some(body_1k()));
        g.bench_function("memory_direct_1k_body", |b| {
            b.iter_batched(
                || signer.next(),
                |cy| cycle_direct(&core, &cy),
                BatchSize::SmallInput,
            )
        });
    }
    // The cycle's three operations one at a time (earlier steps run untimed in setup).
    {
        let core = CompositeColdStorage::unified(ready(MemoryStore::new()), Limits::default());
        let mut signer = Signer::new(None);
        g.bench_function("memory_op_propose", |b| {
            b.iter_batched(
                || signer.next(),
                |cy| core.submit(&cy.intent, NOW).expect("propose"),
                BatchSize::SmallInput,
            )
        });
        g.bench_function("memory_op_claim", |b| {
            b.iter_batched(
                || {
                    let cy = signer.next();
                    core.submit(&cy.intent, NOW).expect("propose");
                    cy
                },
                |cy| expect_token_1(core.act(&cy.claim, NOW).expect("claim")),
                BatchSize::SmallInput,
            )
        });
        g.bench_function("memory_op_resolve", |b| {
            b.iter_batched(
                || {
                    let cy = signer.next();
                    core.submit(&cy.intent, NOW).expect("propose");
                    core.act(&cy.claim, NOW).expect("claim");
                    cy
                },
                |cy| core.submit(&cy.fact, NOW).expect("resolve"),
                BatchSize::SmallInput,
            )
        });
    }
    for (name, prehydrate) in [("memory_session", false), ("memory_session_hydrated", true)] {
        let store = ready(MemoryStore::new());
        let mut signer = Signer::new(None);
        g.bench_function(name, |b| {
            b.iter_batched(
                || signer.next(),
                |cy| cycle_session(&store, &cy, prehydrate, Flush::Delta),
                BatchSize::SmallInput,
            )
        });
    }

    // Durable: every store write is an fsync'd redb transaction.
    g.sample_size(10);
    g.warm_up_time(Duration::from_millis(500));
    g.measurement_time(Duration::from_secs(5));
    let dir = tempfile::tempdir().expect("temp dir");
    {
        let store = RedbStore::open(dir.path().join("direct.redb")).expect("open redb");
        let store = ready(store);
        let core = CompositeColdStorage::unified(store, Limits::default());
        let mut signer = Signer::new(None);
        g.bench_function("redb_direct", |b| {
            b.iter_batched(
                || signer.next(),
                |cy| cycle_direct(&core, &cy),
                BatchSize::SmallInput,
            )
        });
    }
    {
        let store = RedbStore::open(dir.path().join("session.redb")).expect("open redb");
        let store = ready(store);
        let mut signer = Signer::new(None);
        g.bench_function("redb_session_write_batch", |b| {
            b.iter_batched(
                || signer.next(),
                |cy| cycle_session(&store, &cy, true, Flush::RedbBatch),
                BatchSize::SmallInput,
            )
        });
    }
    {
        let store = RedbStore::open(dir.path().join("raw.redb")).expect("open redb");
        let store = ready(store);
        let value = vec![b'v'; per_write];
        let mut seq = 0;
        g.bench_function(format!("redb_raw_{writes}_commits"), |b| {
            b.iter(|| raw_commits(&store, &mut seq, writes, &value))
        });
        let value = vec![b'v'; (bytes / 3) as usize];
        g.bench_function("redb_raw_3_commits", |b| {
            b.iter(|| raw_commits(&store, &mut seq, 3, &value))
        });
    }
    g.finish();
}

criterion_group!(benches, bench_record_1k, bench_cycle);
criterion_main!(benches);
