//! A backend-neutral conformance suite for the storage traits.
//!
//! The suite is data: each [`Case`] is a list of [`Step`]s, an [`Op`] and the
//! [`Outcome`] every correct store gives for it when the case starts on an empty store.
//! [`run_sync_suite`] drives it against any sync store; a host whose bindings are async
//! (the Cloudflare Worker) runs the very same cases by interpreting each [`Op`] against
//! its bindings and comparing outcomes, so both hosts are held to one definition.

use crate::{
    BlobStore, CasFailure, CasOp, Commit, CommitOutcome, KeyValueStore, LOG_HEAD_KEY, ObjectStore,
    StoreError, TREE_SIZE_KEY, log_key, tree_key,
};

/// One storage operation.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)] // the variants mirror the trait methods of the same names
pub enum Op {
    KvGet(String),
    KvGetMany(Vec<String>),
    KvSet(String, Vec<u8>),
    KvDelete(String),
    KvList {
        prefix: String,
        start_after: Option<String>,
        limit: usize,
    },
    BlobGet(String),
    BlobPut(String, Vec<u8>),
    BlobDelete(String),
    BlobList {
        prefix: String,
        start_after: Option<String>,
        limit: usize,
    },
    StateGet(String),
    StateGetMany(Vec<String>),
    StatePut {
        key: String,
        expected: Option<Vec<u8>>,
        new: Vec<u8>,
    },
    StateList {
        prefix: String,
        start_after: Option<String>,
        limit: usize,
    },
    Commit(Commit),
}

/// What an [`Op`] returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A write that returns nothing succeeded.
    Done,
    /// A single read.
    Value(Option<Vec<u8>>),
    /// A bulk read.
    Values(Vec<Option<Vec<u8>>>),
    /// A listing.
    Keys(Vec<String>),
    /// The result of `put_state`.
    Swapped(bool),
    /// The result of `commit`.
    Committed(CommitOutcome),
    /// The store refused the key (`StoreError::InvalidKey`).
    InvalidKey,
    /// Any other error, with its message (never expected by a case).
    Failed(String),
}

/// An operation and the outcome a correct store gives.
#[derive(Debug, Clone)]
pub struct Step {
    /// What to do.
    pub op: Op,
    /// What must come back.
    pub expect: Outcome,
}

/// A named sequence of steps run on a fresh, empty store.
#[derive(Debug, Clone)]
pub struct Case {
    /// Short description of the property the case checks.
    pub name: &'static str,
    /// The steps, in order.
    pub steps: Vec<Step>,
}

/// Maps a store error to the outcome a case can expect.
pub fn error_outcome(err: &StoreError) -> Outcome {
    match err {
        StoreError::InvalidKey { .. } => Outcome::InvalidKey,
        other => Outcome::Failed(other.to_string()),
    }
}

fn lift<T>(r: Result<T, StoreError>, f: impl FnOnce(T) -> Outcome) -> Outcome {
    match r {
        Ok(v) => f(v),
        Err(e) => error_outcome(&e),
    }
}

/// Runs one op against a sync store.
pub fn apply<S: KeyValueStore + BlobStore + ObjectStore>(store: &S, op: &Op) -> Outcome {
    fn refs(v: &[String]) -> Vec<&str> {
        v.iter().map(String::as_str).collect()
    }
    match op {
        Op::KvGet(k) => lift(store.get(k), Outcome::Value),
        Op::KvGetMany(ks) => lift(store.get_many(&refs(ks)), Outcome::Values),
        Op::KvSet(k, v) => lift(store.set(k, v), |_| Outcome::Done),
        Op::KvDelete(k) => lift(store.delete(k), |_| Outcome::Done),
        Op::KvList {
            prefix,
            start_after,
            limit,
        } => lift(
            store.list(prefix, start_after.as_deref(), *limit),
            Outcome::Keys,
        ),
        Op::BlobGet(k) => lift(store.get_blob(k), Outcome::Value),
        Op::BlobPut(k, v) => lift(store.put_blob(k, v), |_| Outcome::Done),
        Op::BlobDelete(k) => lift(store.delete_blob(k), |_| Outcome::Done),
        Op::BlobList {
            prefix,
            start_after,
            limit,
        } => lift(
            store.list_blobs(prefix, start_after.as_deref(), *limit),
            Outcome::Keys,
        ),
        Op::StateGet(k) => lift(store.get_state(k), Outcome::Value),
        Op::StateGetMany(ks) => lift(store.get_states(&refs(ks)), Outcome::Values),
        Op::StatePut { key, expected, new } => lift(
            store.put_state(key, expected.as_deref(), new),
            Outcome::Swapped,
        ),
        Op::StateList {
            prefix,
            start_after,
            limit,
        } => lift(
            store.list_states(prefix, start_after.as_deref(), *limit),
            Outcome::Keys,
        ),
        Op::Commit(c) => lift(store.commit(c), Outcome::Committed),
    }
}

/// Runs every case of [`cases`] on a fresh store from `make`, panicking with the case
/// name, step number, op and both outcomes at the first divergence.
pub fn run_sync_suite<S, F>(make: F)
where
    S: KeyValueStore + BlobStore + ObjectStore,
    F: Fn() -> S,
{
    for case in cases() {
        let store = make();
        for (i, step) in case.steps.iter().enumerate() {
            let got = apply(&store, &step.op);
            assert_eq!(
                got, step.expect,
                "conformance case {:?}, step {i}: {:?}",
                case.name, step.op
            );
        }
    }
}

fn s(x: &str) -> String {
    x.to_owned()
}
fn b(x: &str) -> Vec<u8> {
    x.as_bytes().to_vec()
}
fn step(op: Op, expect: Outcome) -> Step {
    Step { op, expect }
}
fn val(x: &str) -> Outcome {
    Outcome::Value(Some(b(x)))
}
fn keys(xs: &[&str]) -> Outcome {
    Outcome::Keys(xs.iter().map(|x| s(x)).collect())
}
fn cas(key: &str, expected: Option<&str>, new: Option<&str>) -> CasOp {
    CasOp {
        key: s(key),
        expected: expected.map(b),
        new: new.map(b),
    }
}
fn applied(first_seq: Option<u64>) -> Outcome {
    Outcome::Committed(CommitOutcome::Applied { first_seq })
}

/// Listing cases shared by the three tiers: `set` writes a key, `list` builds a listing.
fn listing_steps(
    set: impl Fn(&str) -> Op,
    set_outcome: Outcome,
    list: impl Fn(&str, Option<&str>, usize) -> Op,
) -> Vec<Step> {
    let mut steps: Vec<Step> = ["a/2", "a/10", "a/1", "b/1", "a", "a0"]
        .iter()
        .map(|k| step(set(k), set_outcome.clone()))
        .collect();
    steps.extend([
        step(list("a/", None, 10), keys(&["a/1", "a/10", "a/2"])),
        step(list("a/", None, 2), keys(&["a/1", "a/10"])),
        step(list("a/", Some("a/10"), 10), keys(&["a/2"])),
        step(list("a/", Some("a/2"), 10), keys(&[])),
        // a cursor before the prefix starts at the prefix
        step(list("a/", Some("0"), 10), keys(&["a/1", "a/10", "a/2"])),
        step(
            list("a", None, 10),
            keys(&["a", "a/1", "a/10", "a/2", "a0"]),
        ),
        step(
            list("", None, 100),
            keys(&["a", "a/1", "a/10", "a/2", "a0", "b/1"]),
        ),
        step(list("c/", None, 10), keys(&[])),
        step(list("a/", None, 0), keys(&[])),
    ]);
    steps
}

/// The conformance cases.
pub fn cases() -> Vec<Case> {
    let binary = vec![0u8, 255, 1, 254, b'\n'];
    vec![
        Case {
            name: "kv: absent keys read as none",
            steps: vec![
                step(Op::KvGet(s("missing")), Outcome::Value(None)),
                step(Op::KvDelete(s("missing")), Outcome::Done),
            ],
        },
        Case {
            name: "kv: set, get, overwrite, delete",
            steps: vec![
                step(Op::KvSet(s("k"), b("v1")), Outcome::Done),
                step(Op::KvGet(s("k")), val("v1")),
                step(Op::KvSet(s("k"), b("v2")), Outcome::Done),
                step(Op::KvGet(s("k")), val("v2")),
                step(Op::KvDelete(s("k")), Outcome::Done),
                step(Op::KvGet(s("k")), Outcome::Value(None)),
            ],
        },
        Case {
            name: "kv: binary and empty values survive unchanged",
            steps: vec![
                step(Op::KvSet(s("bin"), binary.clone()), Outcome::Done),
                step(Op::KvGet(s("bin")), Outcome::Value(Some(binary.clone()))),
                step(Op::KvSet(s("empty"), vec![]), Outcome::Done),
                step(Op::KvGet(s("empty")), Outcome::Value(Some(vec![]))),
            ],
        },
        Case {
            name: "kv: bulk get keeps request order and reports absent keys",
            steps: vec![
                step(Op::KvSet(s("x"), b("1")), Outcome::Done),
                step(Op::KvSet(s("z"), b("3")), Outcome::Done),
                step(
                    Op::KvGetMany(vec![s("z"), s("y"), s("x"), s("z")]),
                    Outcome::Values(vec![Some(b("3")), None, Some(b("1")), Some(b("3"))]),
                ),
                step(Op::KvGetMany(vec![]), Outcome::Values(vec![])),
            ],
        },
        Case {
            name: "kv: listing by prefix is ordered, bounded and resumable",
            steps: listing_steps(
                |k| Op::KvSet(s(k), b("v")),
                Outcome::Done,
                |p, a, l| Op::KvList {
                    prefix: s(p),
                    start_after: a.map(s),
                    limit: l,
                },
            ),
        },
        Case {
            name: "kv: invalid keys are refused",
            steps: vec![
                step(Op::KvSet(s(""), b("v")), Outcome::InvalidKey),
                step(Op::KvSet("k".repeat(513), b("v")), Outcome::InvalidKey),
                step(Op::KvGet(s("a\0b")), Outcome::InvalidKey),
                step(Op::KvSet("k".repeat(512), b("v")), Outcome::Done),
            ],
        },
        Case {
            name: "blob: put, get, delete, binary content",
            steps: vec![
                step(Op::BlobGet(s("blob/x")), Outcome::Value(None)),
                step(Op::BlobPut(s("blob/x"), binary.clone()), Outcome::Done),
                step(Op::BlobGet(s("blob/x")), Outcome::Value(Some(binary))),
                step(Op::BlobDelete(s("blob/x")), Outcome::Done),
                step(Op::BlobGet(s("blob/x")), Outcome::Value(None)),
                step(Op::BlobDelete(s("blob/x")), Outcome::Done),
                step(Op::BlobPut(s(""), b("v")), Outcome::InvalidKey),
            ],
        },
        Case {
            name: "blob: listing by prefix is ordered, bounded and resumable",
            steps: listing_steps(
                |k| Op::BlobPut(s(k), b("v")),
                Outcome::Done,
                |p, a, l| Op::BlobList {
                    prefix: s(p),
                    start_after: a.map(s),
                    limit: l,
                },
            ),
        },
        Case {
            name: "tiers are separate namespaces",
            steps: vec![
                step(Op::KvSet(s("same"), b("kv")), Outcome::Done),
                step(Op::BlobPut(s("same"), b("blob")), Outcome::Done),
                step(
                    Op::StatePut {
                        key: s("same"),
                        expected: None,
                        new: b("state"),
                    },
                    Outcome::Swapped(true),
                ),
                step(Op::KvGet(s("same")), val("kv")),
                step(Op::BlobGet(s("same")), val("blob")),
                step(Op::StateGet(s("same")), val("state")),
            ],
        },
        Case {
            name: "state: put_state is a compare-and-swap",
            steps: vec![
                step(Op::StateGet(s("intent/1")), Outcome::Value(None)),
                step(
                    Op::StatePut {
                        key: s("intent/1"),
                        expected: Some(b("available")),
                        new: b("claimed"),
                    },
                    Outcome::Swapped(false),
                ),
                step(Op::StateGet(s("intent/1")), Outcome::Value(None)),
                step(
                    Op::StatePut {
                        key: s("intent/1"),
                        expected: None,
                        new: b("available"),
                    },
                    Outcome::Swapped(true),
                ),
                step(
                    Op::StatePut {
                        key: s("intent/1"),
                        expected: None,
                        new: b("again"),
                    },
                    Outcome::Swapped(false),
                ),
                step(
                    Op::StatePut {
                        key: s("intent/1"),
                        expected: Some(b("available")),
                        new: b("claimed"),
                    },
                    Outcome::Swapped(true),
                ),
                step(
                    Op::StatePut {
                        key: s("intent/1"),
                        expected: Some(b("available")),
                        new: b("claimed-by-other"),
                    },
                    Outcome::Swapped(false),
                ),
                step(Op::StateGet(s("intent/1")), val("claimed")),
                step(
                    Op::StateGetMany(vec![s("intent/1"), s("intent/2")]),
                    Outcome::Values(vec![Some(b("claimed")), None]),
                ),
            ],
        },
        Case {
            name: "state: the commit log is written only by commits",
            steps: vec![
                step(
                    Op::StatePut {
                        key: s(LOG_HEAD_KEY),
                        expected: None,
                        new: b("7"),
                    },
                    Outcome::InvalidKey,
                ),
                step(
                    Op::Commit(Commit {
                        reads: Vec::new(),
                        ops: vec![cas(&log_key(1), None, Some("forged"))],
                        log: vec![],
                    }),
                    Outcome::InvalidKey,
                ),
                step(Op::StateGet(s(LOG_HEAD_KEY)), Outcome::Value(None)),
            ],
        },
        Case {
            name: "state: listing by prefix is ordered, bounded and resumable",
            steps: listing_steps(
                |k| Op::StatePut {
                    key: s(k),
                    expected: None,
                    new: b("v"),
                },
                Outcome::Swapped(true),
                |p, a, l| Op::StateList {
                    prefix: s(p),
                    start_after: a.map(s),
                    limit: l,
                },
            ),
        },
        Case {
            name: "commit: applies every op and numbers log entries from 1",
            steps: vec![
                step(
                    Op::StatePut {
                        key: s("b"),
                        expected: None,
                        new: b("old"),
                    },
                    Outcome::Swapped(true),
                ),
                step(
                    Op::Commit(Commit {
                        reads: Vec::new(),
                        ops: vec![cas("a", None, Some("1")), cas("b", Some("old"), None)],
                        log: vec![b("first"), b("second")],
                    }),
                    applied(Some(1)),
                ),
                step(Op::StateGet(s("a")), val("1")),
                step(Op::StateGet(s("b")), Outcome::Value(None)),
                step(Op::StateGet(log_key(1)), val("first")),
                step(Op::StateGet(log_key(2)), val("second")),
                step(Op::StateGet(s(LOG_HEAD_KEY)), val("2")),
                step(
                    Op::Commit(Commit {
                        reads: Vec::new(),
                        ops: vec![],
                        log: vec![b("third")],
                    }),
                    applied(Some(3)),
                ),
                step(Op::StateGet(s(LOG_HEAD_KEY)), val("3")),
                step(
                    Op::Commit(Commit {
                        reads: Vec::new(),
                        ops: vec![cas("c", None, Some("x"))],
                        log: vec![],
                    }),
                    applied(None),
                ),
                step(Op::StateGet(s(LOG_HEAD_KEY)), val("3")),
                step(
                    Op::StateList {
                        prefix: s("log/"),
                        start_after: None,
                        limit: 10,
                    },
                    Outcome::Keys(
                        [log_key(1), log_key(2), log_key(3), s(LOG_HEAD_KEY)]
                            .into_iter()
                            .chain((0..4).map(tree_key))
                            .collect(),
                    ),
                ),
                step(Op::Commit(Commit::default()), applied(None)),
            ],
        },
        Case {
            name: "commit: the log's Merkle tree is written with its entries (RFC 6962 stored hashes)",
            steps: vec![
                step(
                    Op::Commit(Commit::new(vec![], vec![b("first"), b("second")])),
                    applied(Some(1)),
                ),
                step(
                    Op::Commit(Commit::new(vec![], vec![b("third")])),
                    applied(Some(3)),
                ),
                // Stored hashes 0..4 of a 3-leaf tree: leaf 0, leaf 1, their node, leaf 2.
                step(
                    Op::StateGetMany((0..5).map(tree_key).collect()),
                    Outcome::Values({
                        let leaf = |e: &str| nexus_tlog::leaf_hash(e.as_bytes());
                        let (l0, l1, l2) = (leaf("first"), leaf("second"), leaf("third"));
                        [l0, l1, nexus_tlog::node_hash(l0, l1), l2]
                            .iter()
                            .map(|h| Some(h.0.to_vec()))
                            .chain([None])
                            .collect()
                    }),
                ),
                step(Op::StateGet(s(TREE_SIZE_KEY)), Outcome::Value(None)),
            ],
        },
        Case {
            name: "commit: one failed expectation applies nothing and names every failed key",
            steps: vec![
                step(
                    Op::Commit(Commit {
                        reads: Vec::new(),
                        ops: vec![cas("x", None, Some("1")), cas("y", None, Some("1"))],
                        log: vec![b("e1")],
                    }),
                    applied(Some(1)),
                ),
                step(
                    Op::Commit(Commit {
                        reads: Vec::new(),
                        ops: vec![
                            cas("new", None, Some("n")),
                            cas("x", Some("1"), Some("2")),
                            cas("y", Some("0"), Some("2")),
                            cas("z", Some("0"), None),
                        ],
                        log: vec![b("e2")],
                    }),
                    Outcome::Committed(CommitOutcome::Conflict(vec![
                        CasFailure {
                            key: s("y"),
                            current: Some(b("1")),
                        },
                        CasFailure {
                            key: s("z"),
                            current: None,
                        },
                    ])),
                ),
                step(Op::StateGet(s("new")), Outcome::Value(None)),
                step(Op::StateGet(s("x")), val("1")),
                step(Op::StateGet(s("y")), val("1")),
                step(Op::StateGet(log_key(2)), Outcome::Value(None)),
                step(Op::StateGet(s(LOG_HEAD_KEY)), val("1")),
            ],
        },
        Case {
            name: "commit: a key twice in one commit is refused and nothing applies",
            steps: vec![
                step(
                    Op::Commit(Commit {
                        reads: Vec::new(),
                        ops: vec![cas("d", None, Some("1")), cas("d", None, Some("2"))],
                        log: vec![b("e")],
                    }),
                    Outcome::InvalidKey,
                ),
                step(Op::StateGet(s("d")), Outcome::Value(None)),
                step(Op::StateGet(s(LOG_HEAD_KEY)), Outcome::Value(None)),
            ],
        },
        Case {
            name: "commit: read checks that still hold let it apply; reads are not written",
            steps: vec![
                step(
                    Op::StatePut {
                        key: s("hints"),
                        expected: None,
                        new: b("[]"),
                    },
                    Outcome::Swapped(true),
                ),
                step(
                    Op::Commit(
                        Commit::new(vec![cas("intent/1", None, Some("claimed"))], vec![b("e1")])
                            .with_read("hints", Some(b("[]")))
                            .with_read("rec/absent", None),
                    ),
                    applied(Some(1)),
                ),
                step(Op::StateGet(s("intent/1")), val("claimed")),
                step(Op::StateGet(s("hints")), val("[]")),
                step(Op::StateGet(s("rec/absent")), Outcome::Value(None)),
                // A commit of read checks alone changes nothing and applies.
                step(
                    Op::Commit(Commit::default().with_read("hints", Some(b("[]")))),
                    applied(None),
                ),
            ],
        },
        Case {
            name: "commit: a changed read refuses the whole commit and names the key",
            steps: vec![
                step(
                    Op::StatePut {
                        key: s("hints"),
                        expected: None,
                        new: b("[]"),
                    },
                    Outcome::Swapped(true),
                ),
                // Another writer changes the state the next commit read.
                step(
                    Op::StatePut {
                        key: s("hints"),
                        expected: Some(b("[]")),
                        new: b("[deny]"),
                    },
                    Outcome::Swapped(true),
                ),
                step(
                    Op::Commit(
                        Commit::new(vec![cas("intent/1", None, Some("claimed"))], vec![b("e1")])
                            .with_read("hints", Some(b("[]")))
                            .with_read("rec/p", None)
                            .with_read("contract", None),
                    ),
                    Outcome::Committed(CommitOutcome::Conflict(vec![CasFailure {
                        key: s("hints"),
                        current: Some(b("[deny]")),
                    }])),
                ),
                step(Op::StateGet(s("intent/1")), Outcome::Value(None)),
                step(Op::StateGet(s(LOG_HEAD_KEY)), Outcome::Value(None)),
                // A read of an absent key fails once the key exists; failed ops and
                // failed reads are all named, ops first.
                step(
                    Op::StatePut {
                        key: s("rec/p"),
                        expected: None,
                        new: b("fact"),
                    },
                    Outcome::Swapped(true),
                ),
                step(
                    Op::Commit(
                        Commit::new(
                            vec![cas("intent/1", Some("available"), Some("claimed"))],
                            vec![b("e1")],
                        )
                        .with_read("hints", Some(b("[deny]")))
                        .with_read("rec/p", None),
                    ),
                    Outcome::Committed(CommitOutcome::Conflict(vec![
                        CasFailure {
                            key: s("intent/1"),
                            current: None,
                        },
                        CasFailure {
                            key: s("rec/p"),
                            current: Some(b("fact")),
                        },
                    ])),
                ),
                step(Op::StateGet(s(LOG_HEAD_KEY)), Outcome::Value(None)),
            ],
        },
        Case {
            name: "commit: a read check may not repeat a key of the commit",
            steps: vec![
                step(
                    Op::Commit(
                        Commit::new(vec![cas("k", None, Some("1"))], vec![b("e")])
                            .with_read("k", None),
                    ),
                    Outcome::InvalidKey,
                ),
                step(
                    Op::Commit(Commit::default().with_read("", None)),
                    Outcome::InvalidKey,
                ),
                step(Op::StateGet(s("k")), Outcome::Value(None)),
                step(Op::StateGet(s(LOG_HEAD_KEY)), Outcome::Value(None)),
            ],
        },
    ]
}
