//! Transparency-log test vectors (`spec/tlog_vectors.json`), generated from the Rust
//! code that makes leaves (`LogEntry::encode`), export lines (`archive::encode_line`),
//! the tree, proofs and checkpoints (`nexus-tlog`).
//!
//! * `NEXUS_BLESS=1 cargo test -p nexus-api --test tlog_vectors` writes the file.
//! * Without `NEXUS_BLESS`, the committed file must equal what the generator writes.
//!
//! Generation fails when a case does not show what it is meant to: every positive
//! vector verifies with `nexus-tlog`, every negative one is refused by it.
//! `spec/check_tlog.py` checks the same file independently, in Python.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::path::PathBuf;

use nexus_core::archive::encode_line;
use nexus_core::*;
use nexus_tlog::{CheckpointError, Hash, HashSource, LogKey, TreeError, leaf_hash};
use serde_json::{Value, json};

const T0: u64 = 1_764_000_000_000;
const ORIGIN: &str = "nexus/0123456789abcdef0123456789abcdef";
/// Tree sizes whose roots, proofs and checkpoints the vectors state.
const SIZES: [u64; 8] = [0, 1, 2, 3, 7, 8, 9, 13];

/// Stored hashes in memory.
#[derive(Default)]
struct Tree {
    size: u64,
    hashes: BTreeMap<u64, Hash>,
}

impl HashSource for Tree {
    type Error = Infallible;
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Option<Hash>>, Infallible> {
        Ok(indexes
            .iter()
            .map(|i| self.hashes.get(i).copied())
            .collect())
    }
}

impl Tree {
    fn push(&mut self, leaf: Hash) {
        let new = nexus_tlog::append(self.size, &[leaf], self).expect("append");
        self.hashes.extend(new);
        self.size += 1;
    }
    fn root(&self, n: u64) -> Hash {
        nexus_tlog::root(n, self).expect("root")
    }
}

fn key(n: u8) -> SigningKey {
    SigningKey::from_seed(&[n; 32])
}

fn h(label: &str) -> FihHash {
    FihHash::of_canonical(label.as_bytes())
}

fn topic(s: &str) -> Topic {
    s.parse().expect("topic")
}

/// The log entries of the vectors: each entry and, for a record, the record.
fn entries() -> Vec<(&'static str, LogEntry, Option<Record>)> {
    let (alice, bob, gov) = (key(1), key(2), key(3));
    let dep: Deployment = "0123456789abcdef0123456789abcdef"
        .parse()
        .expect("deployment");
    let limits = Limits::default();
    let signed = |c: Content, k: &SigningKey| Record::sign(c, k, &limits).expect("sign record");
    let action = |c: ActionContent, k: &SigningKey| {
        Action::sign(c, k, &limits).expect("sign action").to_value()
    };
    let intent = signed(
        Content::Intent(Intent {
            topic: topic("chem/solubility"),
            body: json!({"compound": "NaCl", "temp_c": 25}),
            parents: vec![],
            author: alice.author(),
            time: T0,
        }),
        &alice,
    );
    let fact = signed(
        Content::Fact(Fact {
            topic: topic("chem/solubility/NaCl"),
            body: json!({"notes": "at 25 °C\n\"quoted\" \\ \u{0}\u{1f}\u{7f}", "g": 360}),
            parents: vec![intent.hash()],
            resolves: Some(Resolves {
                intent: intent.hash(),
                token: 1,
            }),
            author: bob.author(),
            time: T0 + 50,
        }),
        &bob,
    );
    let hint = signed(
        Content::Hint(Hint {
            selector: Selector {
                topic: Some("chem/**".parse().expect("glob")),
                body: None,
            },
            effect: Effect::Priority(3),
            reason: "ünïcödé \u{1f600} reason\twith a tab".into(),
            source: None,
            expires: None,
            author: gov.author(),
            time: T0 + 1,
        }),
        &gov,
    );
    let claim = action(
        ActionContent::Claim {
            intent: intent.hash(),
            lease_ms: 60_000,
            author: bob.author(),
            deployment: Some(dep.clone()),
            time: T0 + 10,
        },
        &bob,
    );
    let renew = action(
        ActionContent::Renew {
            intent: intent.hash(),
            token: 1,
            lease_ms: 120_000,
            author: bob.author(),
            deployment: Some(dep.clone()),
            time: T0 + 20,
        },
        &bob,
    );
    let withdraw_v1 = action(
        ActionContent::Withdraw {
            intent: h("another-intent"),
            author: alice.author(),
            deployment: None,
            time: T0 + 30,
        },
        &alice,
    );
    let retract = action(
        ActionContent::Retract {
            hint: hint.hash(),
            author: gov.author(),
            deployment: Some(dep),
            time: T0 + 40,
        },
        &gov,
    );
    // Not a valid action, but the leaf form is stated for any action JSON: keys out of
    // byte order (upper case, non-ASCII, a key sorting by UTF-8 bytes rather than
    // UTF-16 units), every escape, characters left unescaped, nesting, integers.
    let awkward: Value = serde_json::from_str(
        r#"{"z":1,"Z":-9007199254740991,"\u00e9":"\u00e9\ud83d\ude00\u2028\u007f/","\uff61":"halfwidth","\ud83d\ude00":"astral key",
           "esc":"\"\\\b\t\n\f\r\u0000\u0001\u001f","nested":{"b":[true,false,null,[],{}],"a":{"y":0,"x":9007199254740991}},"":""}"#,
    )
    .expect("json");
    let rec_entry = |r: &Record, at| LogEntry::Record {
        hash: r.hash(),
        kind: r.content().kind(),
        at,
    };
    let act = |a: Value, at| LogEntry::Action { action: a, at };
    vec![
        ("intent", rec_entry(&intent, T0 + 5), Some(intent.clone())),
        ("claim_v2", act(claim, T0 + 11), None),
        (
            "hint_priority",
            rec_entry(&hint, T0 + 12),
            Some(hint.clone()),
        ),
        ("renew_v2", act(renew, T0 + 21), None),
        (
            "fact_resolving",
            rec_entry(&fact, T0 + 51),
            Some(fact.clone()),
        ),
        ("withdraw_v1", act(withdraw_v1, T0 + 31), None),
        ("retract_v2", act(retract, T0 + 41), None),
        ("awkward_action_json", act(awkward.clone(), 0), None),
        (
            "intent_again_at_zero",
            rec_entry(&intent, 0),
            Some(intent.clone()),
        ),
        ("fact_again", rec_entry(&fact, T0 + 60), Some(fact.clone())),
        (
            "hint_again",
            rec_entry(&hint, 9_007_199_254_740_991),
            Some(hint),
        ),
        ("awkward_again", act(awkward, T0 + 70), None),
        ("fact_last", rec_entry(&fact, T0 + 80), Some(fact)),
    ]
}

fn b64s(hs: &[Hash]) -> Vec<String> {
    hs.iter().map(ToString::to_string).collect()
}

/// A proof with one byte of hash `i` flipped.
fn tampered(proof: &[Hash], i: usize) -> Vec<String> {
    let mut out = b64s(proof);
    let mut raw = proof[i].0;
    raw[0] ^= 1;
    out[i] = Hash(raw).to_string();
    out
}

fn build() -> Value {
    let mut tree = Tree::default();
    let mut lines = Vec::new();
    for (seq, (name, entry, record)) in (1..).zip(entries()) {
        let data = entry.encode();
        tree.push(leaf_hash(&data));
        let line = encode_line(seq, &entry, record.as_ref()).expect("export line");
        let line = String::from_utf8(line).expect("utf-8");
        lines.push(json!({
            "name": name,
            "line": line.trim_end(),
            "leaf_data": String::from_utf8(data).expect("utf-8"),
            "leaf_hash": leaf_hash(&entry.encode()).to_string(),
        }));
    }
    let roots: Vec<Value> = (0..=tree.size)
        .map(|n| json!({"size": n, "root": tree.root(n).to_string()}))
        .collect();
    let mut inclusion = Vec::new();
    let mut consistency = Vec::new();
    for &n in SIZES.iter().filter(|&&n| n > 0) {
        for seq in 1..=n {
            let proof = nexus_tlog::prove_inclusion(n, seq - 1, &tree).expect("prove");
            let leaf = lines[(seq - 1) as usize]["leaf_hash"].clone();
            let parsed = nexus_tlog::hash_from_base64(leaf.as_str().expect("str")).expect("hash");
            nexus_tlog::verify_inclusion(&proof, n, tree.root(n), seq - 1, parsed)
                .expect("inclusion verifies");
            inclusion.push(json!({"seq": seq, "size": n, "leaf_hash": leaf,
                "root": tree.root(n).to_string(), "proof": b64s(&proof)}));
        }
    }
    for &n in &SIZES {
        for m in 0..=n {
            let proof = nexus_tlog::prove_consistency(m, n, &tree).expect("prove");
            nexus_tlog::verify_consistency(&proof, m, tree.root(m), n, tree.root(n))
                .expect("consistency verifies");
            consistency.push(
                json!({"from": m, "to": n, "from_root": tree.root(m).to_string(),
                "to_root": tree.root(n).to_string(), "proof": b64s(&proof)}),
            );
        }
    }
    let signer = LogKey::from_seed([0x11; 32])
        .signer(ORIGIN)
        .expect("signer");
    let other = LogKey::from_seed([0x22; 32])
        .signer(ORIGIN)
        .expect("signer");
    let vkey = signer.verifier_key();
    // Seed 22..22's verifier key has '+' in its base64, beside the two separators.
    assert!(other.verifier_key().matches('+').count() > 2);
    let checkpoints: Vec<Value> = [(0, &signer, 0x11), (1, &signer, 0x11), (8, &signer, 0x11)]
        .into_iter()
        .chain([(tree.size, &signer, 0x11), (tree.size, &other, 0x22)])
        .map(|(n, s, seed): (u64, &nexus_tlog::LogSigner, u8)| {
            let note = s.sign(n, &tree.root(n));
            let key = s.verifier_key();
            nexus_tlog::verify_checkpoint(&note, &key).expect("checkpoint verifies");
            json!({"name": format!("size_{n}_seed_{seed:02x}"), "seed_hex": format!("{seed:02x}").repeat(32),
                "origin": ORIGIN, "size": n, "log_key": key, "note": note})
        })
        .collect();

    // Negative vectors, each refused by nexus-tlog too.
    let n = tree.size;
    let good = signer.sign(n, &tree.root(n));
    let mut invalid = Vec::new();
    let mut bad_cp = |name: &str, error: &str, note: String, key: &str| {
        let code = match nexus_tlog::verify_checkpoint(&note, key) {
            Ok(_) => panic!("{name} verifies"),
            Err(CheckpointError::NotSigned(_)) => "not_signed",
            Err(CheckpointError::BadSignature(_)) => "bad_signature",
            Err(CheckpointError::Malformed(_)) => "malformed",
            Err(e) => panic!("{name}: unexpected {e}"),
        };
        assert_eq!(code, error, "{name}");
        invalid.push(json!({"name": name, "check": "checkpoint", "error": error,
            "log_key": key, "note": note}));
    };
    bad_cp(
        "checkpoint_size_changed",
        "bad_signature",
        good.replacen("\n13\n", "\n12\n", 1),
        &vkey,
    );
    let mut flipped = good.clone().into_bytes();
    let at = flipped.len() - 10;
    flipped[at] = if flipped[at] == b'A' { b'B' } else { b'A' };
    bad_cp(
        "checkpoint_signature_byte_flipped",
        "bad_signature",
        String::from_utf8(flipped).expect("utf-8"),
        &vkey,
    );
    bad_cp(
        "checkpoint_signed_by_other_key",
        "not_signed",
        other.sign(n, &tree.root(n)),
        &vkey,
    );
    bad_cp(
        "checkpoint_checked_against_other_key",
        "not_signed",
        good.clone(),
        &other.verifier_key(),
    );
    bad_cp(
        "checkpoint_no_signature",
        "malformed",
        good.replacen(&good[good.rfind("\n\u{2014}").expect("sig") + 1..], "", 1),
        &vkey,
    );
    // A validly signed checkpoint whose root is not the log's.
    let wrong_root = signer.sign(n, &tree.root(n - 1));
    invalid.push(
        json!({"name": "checkpoint_root_not_the_logs", "check": "checkpoint", "error": "root_mismatch",
        "log_key": vkey, "note": wrong_root}),
    );

    let mut bad_incl = |name: &str, seq: u64, size: u64, leaf: Hash, proof: Vec<String>| {
        let parsed: Vec<Hash> = proof
            .iter()
            .map(|p| nexus_tlog::hash_from_base64(p).expect("hash"))
            .collect();
        assert!(
            matches!(
                nexus_tlog::verify_inclusion(&parsed, size, tree.root(size), seq - 1, leaf),
                Err(TreeError::InvalidProof)
            ),
            "{name} verifies"
        );
        invalid.push(
            json!({"name": name, "check": "inclusion", "error": "invalid_proof", "seq": seq, "size": size,
            "leaf_hash": leaf.to_string(), "root": tree.root(size).to_string(), "proof": proof}),
        );
    };
    let leaf = |seq: u64| leaf_hash(&entries()[(seq - 1) as usize].1.encode());
    let p5 = nexus_tlog::prove_inclusion(n, 4, &tree).expect("prove");
    bad_incl(
        "inclusion_proof_byte_flipped",
        5,
        n,
        leaf(5),
        tampered(&p5, 1),
    );
    bad_incl("inclusion_wrong_leaf", 5, n, leaf(6), b64s(&p5));
    bad_incl("inclusion_wrong_index", 6, n, leaf(5), b64s(&p5));
    bad_incl(
        "inclusion_proof_truncated",
        5,
        n,
        leaf(5),
        b64s(&p5[..p5.len() - 1]),
    );
    let mut longer = b64s(&p5);
    longer.push(tree.root(1).to_string());
    bad_incl("inclusion_proof_extended", 5, n, leaf(5), longer);

    let mut bad_cons = |name: &str, m: u64, to: u64, from_root: Hash, proof: Vec<String>| {
        let parsed: Vec<Hash> = proof
            .iter()
            .map(|p| nexus_tlog::hash_from_base64(p).expect("hash"))
            .collect();
        assert!(
            matches!(
                nexus_tlog::verify_consistency(&parsed, m, from_root, to, tree.root(to)),
                Err(TreeError::InvalidProof)
            ),
            "{name} verifies"
        );
        invalid.push(json!({"name": name, "check": "consistency", "error": "invalid_proof", "from": m, "to": to,
            "from_root": from_root.to_string(), "to_root": tree.root(to).to_string(), "proof": proof}));
    };
    let c7 = nexus_tlog::prove_consistency(7, n, &tree).expect("prove");
    bad_cons(
        "consistency_proof_byte_flipped",
        7,
        n,
        tree.root(7),
        tampered(&c7, 2),
    );
    bad_cons("consistency_wrong_old_root", 7, n, tree.root(6), b64s(&c7));
    bad_cons(
        "consistency_proof_truncated",
        7,
        n,
        tree.root(7),
        b64s(&c7[..c7.len() - 1]),
    );
    bad_cons("consistency_empty_proof", 7, n, tree.root(7), Vec::new());
    let c8 = nexus_tlog::prove_consistency(8, n, &tree).expect("prove");
    bad_cons(
        "consistency_power_of_two_byte_flipped",
        8,
        n,
        tree.root(8),
        tampered(&c8, 0),
    );
    bad_cons(
        "consistency_from_empty_nonempty_proof",
        0,
        n,
        tree.root(0),
        b64s(&c8),
    );

    for (name, line) in [
        (
            "leaf_record_hash_upper_case",
            r#"{"at":1,"record":{"hash":"AB","kind":"fact"},"seq":1}"#.to_owned(),
        ),
        (
            "leaf_record_unknown_kind",
            format!(
                r#"{{"at":1,"record":{{"hash":"{}","kind":"claim"}},"seq":1}}"#,
                "ab".repeat(32)
            ),
        ),
        (
            "leaf_float_in_action",
            r#"{"at":1,"action":{"x":1.5},"seq":1}"#.to_owned(),
        ),
        (
            "leaf_negative_at",
            r#"{"at":-1,"action":{},"seq":1}"#.to_owned(),
        ),
        (
            "leaf_record_and_action",
            format!(
                r#"{{"at":1,"action":{{}},"record":{{"hash":"{}","kind":"fact"}},"seq":1}}"#,
                "ab".repeat(32)
            ),
        ),
    ] {
        assert!(
            serde_json::from_str::<Value>(&line).is_ok(),
            "{name} is JSON"
        );
        invalid.push(json!({"name": name, "check": "leaf", "error": "bad_entry", "line": line}));
    }

    json!({
        "version": 1,
        "description": "neXus transparency-log vectors (spec/tlog.md): export lines and the \
            leaf data and leaf hash of each (entry i is seq i, leaf i-1), the root of every \
            prefix, RFC 9162 inclusion and consistency proofs for several tree sizes, \
            checkpoints signed with seed 11..11, and invalid vectors a checker must refuse. \
            Generated by crates/nexus-api/tests/tlog_vectors.rs; checked by spec/check_tlog.py.",
        "entries": lines,
        "roots": roots,
        "inclusion": inclusion,
        "consistency": consistency,
        "checkpoints": checkpoints,
        "invalid": invalid,
    })
}

fn path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../spec/tlog_vectors.json")
}

#[test]
fn tlog_vectors() {
    let mut text = serde_json::to_string_pretty(&build()).expect("serialise");
    text.push('\n');
    let file = path();
    if std::env::var_os("NEXUS_BLESS").is_some_and(|v| v == "1") {
        std::fs::write(&file, &text).expect("write spec/tlog_vectors.json");
        eprintln!("wrote {}", file.display());
        return;
    }
    let committed = std::fs::read_to_string(&file).unwrap_or_else(|e| {
        panic!(
            "read {}: {e} (run with NEXUS_BLESS=1 to create it)",
            file.display()
        )
    });
    assert!(
        committed == text,
        "spec/tlog_vectors.json is not what the Rust code writes now: rerun with \
         NEXUS_BLESS=1 and review the diff"
    );
}
