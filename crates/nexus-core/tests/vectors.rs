//! Cross-language test vectors (`spec/vectors.json`), generated from and checked
//! against this crate.
//!
//! * `NEXUS_BLESS=1 cargo test -p nexus-core --test vectors` regenerates the file from
//!   the Rust implementation (every expectation in it is what this code computes; the
//!   case list below only says what each case is *meant* to show, and generation fails
//!   if the code disagrees with that intent).
//! * Without `NEXUS_BLESS`, every vector in the file is re-checked against the code, and
//!   the file must equal what the generator would write now.
//!
//! `spec/check_vectors.py` checks the same file independently, in Python.

use std::path::PathBuf;

use nexus_core::canonical::{self, CanonicalError, MAX_SAFE_INTEGER};
use nexus_core::crypto::{HASH_CONTEXT, SIG_DOMAIN};
use nexus_core::record::canonical_bytes;
use nexus_core::*;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

const T0: u64 = 1_764_000_000_000;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Doc {
    version: u32,
    description: String,
    hash_context: String,
    sig_domain_hex: String,
    max_safe_integer: i64,
    limits: Value,
    canonical: Vec<CanonVector>,
    records: Vec<RecordVector>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct CanonVector {
    name: String,
    /// JSON text, exactly as a client would receive it.
    input: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    canonical: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    hash: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct RecordVector {
    name: String,
    /// "record" (fact / intent / hint) or "action" (claim / renew / withdraw /
    /// retract).
    #[serde(rename = "type")]
    ty: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    note: Option<String>,
    /// The wire form, with `hash` and `sig`.
    record: Value,
    valid: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    /// Canonical encoding of the content (when it has one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    canonical: Option<String>,
    /// FihHash of `canonical` (may differ from `record.hash` in invalid vectors).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    hash: Option<String>,
    /// Seed of the key that produced `record.sig` (Ed25519 signing is deterministic).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    seed_hex: Option<String>,
}

// ---------------------------------------------------------------------------------
// Mapping Rust errors to the codes the vectors use.

fn canon_code(e: &CanonicalError) -> &'static str {
    match e {
        CanonicalError::NotAnInteger(_) => "not_an_integer",
        CanonicalError::OutOfRange(_) => "out_of_range",
        CanonicalError::TooDeep(_) => "too_deep",
    }
}

fn validation_code(e: &ValidationError) -> &'static str {
    match e {
        ValidationError::Malformed(_) => "malformed",
        ValidationError::Topic { .. } => "topic",
        ValidationError::Canonical { source, .. } => canon_code(source),
        ValidationError::BodyTooLarge { .. } => "body_too_large",
        ValidationError::TooManyParents { .. } => "too_many_parents",
        ValidationError::DuplicateParent(_) => "duplicate_parent",
        ValidationError::OutOfRange { .. } => "out_of_range",
        ValidationError::Reason { .. } => "reason",
        ValidationError::SelectorTooLarge { .. } => "selector_too_large",
        ValidationError::HashMismatch { .. } => "hash_mismatch",
        ValidationError::BadSignature { .. } => "bad_signature",
        _ => "other",
    }
}

/// What the Rust code makes of a canonicalisation input: the canonical text or an
/// error code.
fn canonicalise(input: &str) -> Result<String, &'static str> {
    let v: Value = serde_json::from_str(input).map_err(|_| "invalid_json")?;
    let bytes = canonical::to_vec(&v).map_err(|e| canon_code(&e))?;
    Ok(String::from_utf8(bytes).expect("canonical JSON is UTF-8"))
}

/// What the Rust code makes of a wire form: `Ok(())` or an error code.
fn verify_wire(ty: &str, wire: &Value) -> Result<(), &'static str> {
    let limits = Limits::default();
    let r = match ty {
        "record" => Record::from_value(wire.clone(), &limits).map(|_| ()),
        "action" => Action::from_value(wire.clone(), &limits).map(|_| ()),
        other => panic!("unknown vector type {other}"),
    };
    r.map_err(|e| validation_code(&e))
}

/// The canonical content of a wire form (everything but hash and sig), if it parses
/// and has one.
fn content_canonical(ty: &str, wire: &Value) -> Option<String> {
    let mut map = wire.as_object()?.clone();
    map.remove("hash");
    map.remove("sig");
    let limits = Limits::default();
    let bytes = match ty {
        "record" => canonical_bytes(
            &serde_json::from_value::<Content>(Value::Object(map)).ok()?,
            &limits,
        ),
        _ => canonical_bytes(
            &serde_json::from_value::<ActionContent>(Value::Object(map)).ok()?,
            &limits,
        ),
    }
    .ok()?;
    Some(String::from_utf8(bytes).expect("utf8"))
}

fn hash_hex(canonical: &str) -> String {
    FihHash::of_canonical(canonical.as_bytes()).to_string()
}

// ---------------------------------------------------------------------------------
// The cases.

fn canonical_cases() -> Vec<(&'static str, String)> {
    let mut all_controls = String::from("\"");
    for c in 0u32..0x20 {
        all_controls.push_str(&format!("\\u{c:04x}"));
    }
    all_controls.push('"');
    let cases: Vec<(&str, String)> = vec![
        // Key ordering.
        (
            "rfc8785_utf16_sort_example",
            r#"{"\u20ac":"Euro Sign","\r":"Carriage Return","\ufb33":"Hebrew Letter Dalet With Dagesh","1":"One","\ud83d\ude00":"Emoji: Grinning Face","\u0080":"Control","\u00f6":"Latin Small Letter O With Diaeresis"}"#.into(),
        ),
        (
            "sort_ascii_case_and_prefix",
            r#"{"b":1,"a":2,"aa":3,"A":4,"":5,"a0":6,"B":7}"#.into(),
        ),
        (
            "sort_non_bmp_before_private_use",
            // UTF-16 puts U+10000 (D800 DC00) before U+E000; UTF-8 byte order would not.
            r#"{"\ue000":"private use","\ud800\udc00":"linear b","\uffff":"max bmp","\ud83d\ude00":"emoji"}"#.into(),
        ),
        (
            "sort_nested_objects_every_level",
            r#"{"z":{"y":{"b":[{"d":1,"c":2}],"a":null}},"a":{"c":3,"b":{"f":5,"e":4}}}"#.into(),
        ),
        ("sort_keys_that_need_escaping", "{\"\\n\":1,\"\\u0000\":2,\"\\\"\":3,\"\\\\\":4,\" \":5}".into()),
        // Strings and escapes.
        ("escape_all_c0_controls", all_controls),
        ("escape_short_forms", r#""\b\f\n\r\t""#.into()),
        ("escape_quote_and_backslash", r#""a\"b\\c""#.into()),
        ("solidus_is_not_escaped", r#""a\/b/c""#.into()),
        ("del_u007f_is_literal", r#""\u007f""#.into()),
        ("line_separators_are_literal", r#""\u2028\u2029""#.into()),
        ("unicode_escapes_become_literal_utf8", r#""\u00e9\u00E9\u4e2d\u0041""#.into()),
        ("raw_utf8_input_stays_literal", "\"é中€\u{1f600}\"".into()),
        ("non_bmp_from_surrogate_pair", r#""\ud834\udd1e and \uD83D\uDE00""#.into()),
        ("c1_control_u0080_is_literal", r#""\u0080\u009f""#.into()),
        // Structure and empty values.
        ("empty_object", "{}".into()),
        ("empty_array", "[]".into()),
        ("empty_string", r#""""#.into()),
        ("null", "null".into()),
        ("true_false", "[true,false]".into()),
        ("nested_arrays", "[[],[[]],[[[1]]],[{}],[\"\"]]".into()),
        ("array_order_is_kept", "[3,1,2,\"b\",\"a\"]".into()),
        (
            "mixed_nesting",
            r#"{"list":[{"b":[],"a":{}},null,"",0],"obj":{"":{"":[]}}}"#.into(),
        ),
        // Whitespace.
        (
            "whitespace_everywhere",
            " \t\r\n{ \"b\" :\n[ 1 ,\t2 ] ,\r\n \"a\" : { } } \n".into(),
        ),
        ("whitespace_inside_strings_is_kept", r#"{ "a b" : " x\ty " }"#.into()),
        // Integers.
        ("integer_zero", "0".into()),
        ("integer_negative", "-1".into()),
        ("integer_max_safe", "9007199254740991".into()),
        ("integer_min_safe", "-9007199254740991".into()),
        (
            "integers_in_object",
            r#"{"big":9007199254740991,"small":-9007199254740991,"n":-42,"z":0}"#.into(),
        ),
        // Refused numbers.
        ("integer_above_max_safe", "9007199254740992".into()),
        ("integer_below_min_safe", "-9007199254740992".into()),
        ("integer_u64_max", "18446744073709551615".into()),
        ("float_one_point_zero", "1.0".into()),
        ("float_half", "0.5".into()),
        ("exponent_lowercase", "1e3".into()),
        ("exponent_uppercase_integer_valued", "1E2".into()),
        ("exponent_with_plus", "10E+0".into()),
        ("exponent_negative", "1e-2".into()),
        ("negative_zero", "-0".into()),
        ("negative_zero_float", "-0.0".into()),
        ("float_nested_in_object", r#"{"a":[1,{"b":2.5}]}"#.into()),
        ("out_of_range_nested_in_array", "[1,[2,[-9007199254740992]]]".into()),
    ];
    cases.into_iter().map(|(n, s)| (n, s.to_string())).collect()
}

fn key(n: u8) -> SigningKey {
    SigningKey::from_seed(&[n; 32])
}

fn h(label: &str) -> FihHash {
    FihHash::of_canonical(label.as_bytes())
}

fn sign_record(c: Content, k: &SigningKey) -> Value {
    Record::sign(c, k, &Limits::default())
        .expect("sign record")
        .to_value()
}

fn sign_action(c: ActionContent, k: &SigningKey) -> Value {
    Action::sign(c, k, &Limits::default())
        .expect("sign action")
        .to_value()
}

fn flip_hex_bit(s: &str, char_index: usize) -> String {
    let mut chars: Vec<char> = s.chars().collect();
    let d = chars[char_index].to_digit(16).expect("hex") ^ 1;
    chars[char_index] = char::from_digit(d, 16).expect("digit");
    chars.into_iter().collect()
}

struct RecordCase {
    name: &'static str,
    ty: &'static str,
    note: Option<&'static str>,
    wire: Value,
    /// The key that produced `sig`, if one did.
    seed: Option<u8>,
    /// What the case is meant to show: "valid" or an error code.
    intent: &'static str,
}

fn rc(
    name: &'static str,
    ty: &'static str,
    wire: Value,
    seed: Option<u8>,
    intent: &'static str,
) -> RecordCase {
    RecordCase {
        name,
        ty,
        note: None,
        wire,
        seed,
        intent,
    }
}

fn noted(mut c: RecordCase, note: &'static str) -> RecordCase {
    c.note = Some(note);
    c
}

fn record_cases() -> Vec<RecordCase> {
    let (alice, bob, gov) = (key(1), key(2), key(3));
    let topic = |s: &str| s.parse::<Topic>().expect("topic");
    let glob = |s: &str| s.parse::<TopicGlob>().expect("glob");
    let obj = |v: Value| v.as_object().cloned().expect("object");

    let fact_min = Content::Fact(Fact {
        topic: topic("chem/solubility"),
        body: json!({"ok": true}),
        parents: vec![],
        resolves: None,
        author: alice.author(),
        time: T0,
    });
    let fact_resolves = Content::Fact(Fact {
        topic: topic("chem/solubility/NaCl"),
        body: json!({"g_per_l": 360, "notes": "at 25 °C\n", "series": [1, 2, 3], "meta": {"z": null, "a": ""}}),
        parents: vec![h("fact-parent-1"), h("intent-parent-2")],
        resolves: Some(Resolves {
            intent: h("the-intent"),
            token: 7,
        }),
        author: bob.author(),
        time: T0 + 5_000,
    });
    let fact_null_body = Content::Fact(Fact {
        topic: topic("a"),
        body: Value::Null,
        parents: vec![],
        resolves: None,
        author: alice.author(),
        time: 0,
    });
    let intent_parents = Content::Intent(Intent {
        topic: topic("chem/solubility"),
        body: json!({"compound": "NaCl", "temp_c": 25}),
        parents: vec![h("p1"), h("p2"), h("p3")],
        author: alice.author(),
        time: T0,
    });
    let intent_unicode = Content::Intent(Intent {
        topic: topic("x:y/z=1,2/v-1.0_~+"),
        body: serde_json::from_str(
            r#"{"\u20ac":"€","\r":"\u0000\u001f\"\\/","\ufb33":[],"1":{},"\ud83d\ude00":"\u2028\u007f","\u0080":-9007199254740991,"\u00f6":9007199254740991}"#,
        )
        .expect("json"),
        parents: vec![],
        author: alice.author(),
        time: MAX_SAFE_INTEGER as u64,
    });
    let hint_deny = Content::Hint(Hint {
        selector: Selector {
            topic: Some(glob("chem/**")),
            body: None,
        },
        effect: Effect::Deny,
        reason: "budget exhausted for chem".into(),
        source: None,
        expires: None,
        author: gov.author(),
        time: T0,
    });
    let hint_allow = Content::Hint(Hint {
        selector: Selector {
            topic: None,
            body: Some(obj(json!({"compound": "NaCl"}))),
        },
        effect: Effect::Allow,
        reason: "NaCl is always admissible".into(),
        source: Some(HintSource {
            contract: Some(h("contract.nex")),
            rule: Some("allow_nacl".into()),
            facts: vec![h("trigger-fact-1")],
        }),
        expires: Some(T0 + 3_600_000),
        author: gov.author(),
        time: T0,
    });
    let hint_priority = Content::Hint(Hint {
        selector: Selector {
            topic: Some(glob("chem/*/NaCl")),
            body: Some(obj(json!({"temp_c": 25, "tags": ["hot", "wet"]}))),
        },
        effect: Effect::Priority(5),
        reason: "prioritise".into(),
        source: Some(HintSource {
            contract: None,
            rule: None,
            facts: vec![h("f1"), h("f2")],
        }),
        expires: None,
        author: gov.author(),
        time: T0 + 1,
    });
    let hint_priority_neg = Content::Hint(Hint {
        selector: Selector::default(),
        effect: Effect::Priority(-MAX_SAFE_INTEGER),
        reason: "ünïcödé reason \u{1f600}".into(),
        source: Some(HintSource::default()),
        expires: Some(0),
        author: gov.author(),
        time: T0,
    });
    // Version 1 actions (no `deployment`): still valid records of an old log.
    let claim = ActionContent::Claim {
        intent: h("the-intent"),
        lease_ms: 60_000,
        author: bob.author(),
        deployment: None,
        time: T0 + 10,
    };
    let renew = ActionContent::Renew {
        intent: h("the-intent"),
        token: 7,
        lease_ms: 120_000,
        author: bob.author(),
        deployment: None,
        time: T0 + 30_000,
    };
    let withdraw = ActionContent::Withdraw {
        intent: h("the-intent"),
        author: alice.author(),
        deployment: None,
        time: T0 + 60_000,
    };
    // Version 2: each names the deployment it is signed for.
    let dep: Deployment = "0123456789abcdef0123456789abcdef"
        .parse()
        .expect("deployment");
    let v2 = |c: &ActionContent| {
        let mut c = c.clone();
        match &mut c {
            ActionContent::Claim { deployment, .. }
            | ActionContent::Renew { deployment, .. }
            | ActionContent::Withdraw { deployment, .. }
            | ActionContent::Retract { deployment, .. } => *deployment = Some(dep.clone()),
        }
        c
    };
    let (claim2, renew2, withdraw2) = (v2(&claim), v2(&renew), v2(&withdraw));
    // A retraction exists only in version 2.
    let retract = ActionContent::Retract {
        hint: h("the-hint"),
        author: gov.author(),
        deployment: Some(dep.clone()),
        time: T0 + 90_000,
    };

    let s = |c: &Content, k: &SigningKey| sign_record(c.clone(), k);
    let mut out = vec![
        // Valid records and actions.
        rc(
            "fact_minimal",
            "record",
            s(&fact_min, &alice),
            Some(1),
            "valid",
        ),
        rc(
            "fact_with_parents_and_resolves",
            "record",
            s(&fact_resolves, &bob),
            Some(2),
            "valid",
        ),
        rc(
            "fact_null_body_time_zero",
            "record",
            s(&fact_null_body, &alice),
            Some(1),
            "valid",
        ),
        rc(
            "intent_with_parents",
            "record",
            s(&intent_parents, &alice),
            Some(1),
            "valid",
        ),
        rc(
            "intent_unicode_body_max_time",
            "record",
            s(&intent_unicode, &alice),
            Some(1),
            "valid",
        ),
        rc(
            "hint_deny_topic_glob",
            "record",
            s(&hint_deny, &gov),
            Some(3),
            "valid",
        ),
        rc(
            "hint_allow_body_selector_source_expires",
            "record",
            s(&hint_allow, &gov),
            Some(3),
            "valid",
        ),
        rc(
            "hint_priority_source_facts_only",
            "record",
            s(&hint_priority, &gov),
            Some(3),
            "valid",
        ),
        rc(
            "hint_priority_negative_empty_selector_empty_source",
            "record",
            s(&hint_priority_neg, &gov),
            Some(3),
            "valid",
        ),
        rc(
            "action_claim",
            "action",
            sign_action(claim.clone(), &bob),
            Some(2),
            "valid",
        ),
        rc(
            "action_renew",
            "action",
            sign_action(renew.clone(), &bob),
            Some(2),
            "valid",
        ),
        rc(
            "action_withdraw",
            "action",
            sign_action(withdraw.clone(), &alice),
            Some(1),
            "valid",
        ),
        rc(
            "action_retract",
            "action",
            sign_action(retract.clone(), &gov),
            Some(3),
            "valid",
        ),
        noted(
            rc(
                "action_claim_v2",
                "action",
                sign_action(claim2.clone(), &bob),
                Some(2),
                "valid",
            ),
            "version 2: names its deployment",
        ),
        rc(
            "action_renew_v2",
            "action",
            sign_action(renew2, &bob),
            Some(2),
            "valid",
        ),
        rc(
            "action_withdraw_v2",
            "action",
            sign_action(withdraw2.clone(), &alice),
            Some(1),
            "valid",
        ),
    ];
    let mut w = sign_action(claim2.clone(), &bob);
    w["deployment"] = json!("another-deployment");
    out.push(noted(
        rc(
            "claim_v2_deployment_edited",
            "action",
            w,
            Some(2),
            "hash_mismatch",
        ),
        "`deployment` is part of the hash",
    ));
    let mut w = sign_action(withdraw2, &alice);
    w["deployment"] = json!("not/an id");
    out.push(noted(
        rc(
            "withdraw_v2_bad_deployment",
            "action",
            w,
            Some(1),
            "malformed",
        ),
        "a deployment id is 1..=64 bytes of [A-Za-z0-9._-]",
    ));
    let mut w = sign_action(claim.clone(), &bob);
    w["deployment"] = Value::Null;
    out.push(noted(
        rc("claim_deployment_null", "action", w, Some(2), "malformed"),
        "a version 1 action leaves `deployment` out, never null",
    ));

    // Non-normal wire forms are refused: one wire form per hash.
    let mut w = sign_action(withdraw.clone(), &alice);
    w["token"] = json!(1);
    out.push(noted(
        rc("action_unknown_field", "action", w, Some(1), "malformed"),
        "a member the action kind does not have is refused, not dropped unhashed",
    ));
    let mut w = s(&fact_min, &alice);
    w.as_object_mut().expect("obj").remove("parents");
    out.push(noted(
        rc(
            "fact_wire_without_parents",
            "record",
            w,
            Some(1),
            "malformed",
        ),
        "`parents` must be present (as [] when empty): the wire form must be the hashed form",
    ));
    let mut w = s(&fact_min, &alice);
    w["resolves"] = Value::Null;
    out.push(noted(
        rc("fact_wire_resolves_null", "record", w, Some(1), "malformed"),
        "an absent optional member must be left out, not written as null",
    ));
    let mut w = s(&hint_deny, &gov);
    w["expires"] = Value::Null;
    w["source"] = Value::Null;
    w["selector"]["body"] = Value::Null;
    out.push(noted(
        rc(
            "hint_wire_null_optionals",
            "record",
            w,
            Some(3),
            "malformed",
        ),
        "null expires / source / selector.body are refused: leave them out",
    ));
    let mut w = s(&hint_priority_neg, &gov);
    w["source"].as_object_mut().expect("obj").remove("facts");
    out.push(noted(
        rc(
            "hint_wire_source_without_facts",
            "record",
            w,
            Some(3),
            "malformed",
        ),
        "`source.facts` must be present (as [] when empty)",
    ));

    // Signature failures.
    let mut w = s(&intent_parents, &alice);
    w["sig"] = json!(
        bob.sign(&w["hash"].as_str().expect("hash").parse().expect("hash"))
            .to_string()
    );
    out.push(noted(
        rc(
            "intent_signed_by_wrong_key",
            "record",
            w,
            Some(2),
            "bad_signature",
        ),
        "correct hash, signed by seed_hex (not the author)",
    ));
    let mut w = s(&intent_parents, &alice);
    w["sig"] = json!(flip_hex_bit(w["sig"].as_str().expect("sig"), 10));
    out.push(rc(
        "intent_sig_bit_flipped",
        "record",
        w,
        Some(1),
        "bad_signature",
    ));
    let mut w = s(&hint_allow, &gov);
    w["sig"] = json!(flip_hex_bit(w["sig"].as_str().expect("sig"), 127));
    out.push(rc(
        "hint_sig_last_bit_flipped",
        "record",
        w,
        Some(3),
        "bad_signature",
    ));
    let mut w = sign_action(claim.clone(), &bob);
    w["sig"] = json!(flip_hex_bit(w["sig"].as_str().expect("sig"), 0));
    out.push(rc(
        "claim_sig_bit_flipped",
        "action",
        w,
        Some(2),
        "bad_signature",
    ));
    let mut w = sign_action(withdraw.clone(), &alice);
    w["sig"] = json!(
        bob.sign(&w["hash"].as_str().expect("hash").parse().expect("hash"))
            .to_string()
    );
    out.push(noted(
        rc(
            "withdraw_signed_by_wrong_key",
            "action",
            w,
            Some(2),
            "bad_signature",
        ),
        "correct hash, signed by seed_hex (not the author)",
    ));
    {
        // The identity point as author and the trivial signature (R = identity, S = 0):
        // accepted by a non-strict (cofactored or OpenSSL-style) verifier for any message.
        let identity = format!("01{}", "00".repeat(31));
        let mut c = intent_parents.clone();
        if let Content::Intent(i) = &mut c {
            i.author = identity.parse().expect("identity point decodes");
        }
        let canonical =
            String::from_utf8(canonical_bytes(&c, &Limits::default()).expect("c")).expect("utf8");
        let mut w = serde_json::to_value(&c).expect("value");
        w["hash"] = json!(hash_hex(&canonical));
        w["sig"] = json!(format!("01{}", "00".repeat(63)));
        out.push(noted(
            rc(
                "small_order_author_forgery",
                "record",
                w,
                None,
                "bad_signature",
            ),
            "author is the identity point (small order); R = identity, S = 0 passes \
             non-strict verification: strict verification must refuse it",
        ));
    }
    {
        // A valid signature with S replaced by S + L (same value mod L, non-canonical).
        let mut w = s(&intent_parents, &alice);
        let sig = hex::decode(w["sig"].as_str().expect("sig")).expect("hex");
        let l: [u8; 32] = [
            0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9,
            0xde, 0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
        ];
        let mut s_plus_l = [0u8; 32];
        let mut carry = 0u16;
        for i in 0..32 {
            let v = sig[32 + i] as u16 + l[i] as u16 + carry;
            s_plus_l[i] = v as u8;
            carry = v >> 8;
        }
        assert_eq!(carry, 0);
        let mut new_sig = sig[..32].to_vec();
        new_sig.extend_from_slice(&s_plus_l);
        w["sig"] = json!(hex::encode(new_sig));
        out.push(noted(
            rc(
                "intent_sig_non_canonical_s",
                "record",
                w,
                Some(1),
                "bad_signature",
            ),
            "a valid signature with S replaced by S + L (the group order): must be refused",
        ));
    }

    // Hash mismatches.
    let mut w = s(&intent_parents, &alice);
    w["body"]["temp_c"] = json!(26);
    out.push(noted(
        rc("intent_body_edited_after_signing", "record", w, Some(1), "hash_mismatch"),
        "`hash` is the FihHash of the unedited content; `canonical`/`hash` here are of the edited one",
    ));
    let mut w = s(&intent_parents, &alice);
    w["hash"] = json!(flip_hex_bit(w["hash"].as_str().expect("hash"), 63));
    out.push(rc(
        "intent_hash_bit_flipped",
        "record",
        w,
        Some(1),
        "hash_mismatch",
    ));
    let mut w = s(&fact_resolves, &bob);
    w["author"] = json!(alice.author().to_string());
    out.push(rc(
        "fact_author_swapped",
        "record",
        w,
        Some(2),
        "hash_mismatch",
    ));
    let mut w = s(&fact_resolves, &bob);
    w["resolves"]["token"] = json!(8);
    out.push(rc(
        "fact_resolves_token_edited",
        "record",
        w,
        Some(2),
        "hash_mismatch",
    ));
    let mut w = s(&hint_deny, &gov);
    w["effect"] = json!("allow");
    out.push(rc(
        "hint_effect_edited",
        "record",
        w,
        Some(3),
        "hash_mismatch",
    ));
    let mut w = sign_action(renew.clone(), &bob);
    w["token"] = json!(8);
    out.push(rc(
        "renew_token_edited",
        "action",
        w,
        Some(2),
        "hash_mismatch",
    ));
    let mut w = sign_action(withdraw.clone(), &alice);
    w["kind"] = json!("retract");
    let intent = w
        .as_object_mut()
        .expect("obj")
        .remove("intent")
        .expect("intent");
    w["hint"] = intent;
    out.push(noted(
        rc(
            "withdraw_relabelled_as_retract",
            "action",
            w,
            Some(1),
            "hash_mismatch",
        ),
        "a retraction names a `hint`, and its `kind` is part of the hash",
    ));
    let mut w = sign_action(claim.clone(), &bob);
    w["kind"] = json!("withdraw");
    w.as_object_mut().expect("obj").remove("lease_ms");
    out.push(noted(
        rc(
            "claim_relabelled_as_withdraw",
            "action",
            w,
            Some(2),
            "hash_mismatch",
        ),
        "`kind` is part of the hash",
    ));

    // Malformed wire forms.
    let mut w = s(&fact_min, &alice);
    w["extra"] = json!(1);
    out.push(noted(
        rc(
            "fact_unknown_extra_field",
            "record",
            w,
            Some(1),
            "malformed",
        ),
        "unknown members are refused, so nothing rides along unhashed",
    ));
    let mut w = s(&fact_resolves, &bob);
    w["resolves"]["extra"] = json!(true);
    out.push(rc(
        "fact_unknown_field_in_resolves",
        "record",
        w,
        Some(2),
        "malformed",
    ));
    // An unknown member in an *action* (e.g. `token` on a claim) is not here yet: the
    // Rust code accepts it (see `action_unknown_fields_are_refused` below).
    let mut w = s(&intent_parents, &alice);
    w["hash"] = json!(w["hash"].as_str().expect("hash").to_uppercase());
    out.push(noted(
        rc("intent_uppercase_hash", "record", w, Some(1), "malformed"),
        "hashes, keys and signatures are lowercase hex only",
    ));
    let mut w = s(&intent_parents, &alice);
    w.as_object_mut().expect("obj").remove("sig");
    out.push(rc("intent_missing_sig", "record", w, Some(1), "malformed"));
    let mut w = s(&intent_parents, &alice);
    w["kind"] = json!("note");
    out.push(rc("record_unknown_kind", "record", w, Some(1), "malformed"));
    let mut w = s(&fact_min, &alice);
    w["topic"] = json!("chem//solubility");
    out.push(rc("fact_bad_topic", "record", w, Some(1), "malformed"));
    let mut w = s(&intent_parents, &alice);
    w["time"] = json!(1.0);
    out.push(noted(
        rc("intent_time_float", "record", w, Some(1), "malformed"),
        "time must be a JSON integer",
    ));

    // Content that has no canonical form or breaks a rule.
    let mut w = s(&intent_parents, &alice);
    w["body"]["temp_c"] = json!(25.5);
    out.push(rc(
        "intent_float_in_body",
        "record",
        w,
        Some(1),
        "not_an_integer",
    ));
    let mut w = s(&fact_min, &alice);
    w["body"] = json!({"n": 9_007_199_254_740_992_i64});
    out.push(rc(
        "fact_body_integer_out_of_range",
        "record",
        w,
        Some(1),
        "out_of_range",
    ));
    let mut w = s(&intent_parents, &alice);
    w["time"] = json!(9_007_199_254_740_992_u64);
    out.push(rc(
        "intent_time_out_of_range",
        "record",
        w,
        Some(1),
        "out_of_range",
    ));
    let mut w = s(&hint_priority, &gov);
    w["effect"] = json!({"priority": 9_007_199_254_740_992_i64});
    out.push(rc(
        "hint_priority_out_of_range",
        "record",
        w,
        Some(3),
        "out_of_range",
    ));
    let mut w = s(&intent_parents, &alice);
    w["parents"] = json!([
        h("p1").to_string(),
        h("p2").to_string(),
        h("p1").to_string()
    ]);
    out.push(rc(
        "intent_duplicate_parent",
        "record",
        w,
        Some(1),
        "duplicate_parent",
    ));
    let mut w = s(&hint_deny, &gov);
    w["reason"] = json!("");
    out.push(rc("hint_empty_reason", "record", w, Some(3), "reason"));
    let mut w = s(&hint_deny, &gov);
    w["selector"] = json!({"topic": "lab/**", "body": {"pad": "x".repeat(4_100)}});
    out.push(rc(
        "hint_selector_too_large",
        "record",
        w,
        Some(3),
        "selector_too_large",
    ));

    out
}

fn build() -> Doc {
    let canonical = canonical_cases()
        .into_iter()
        .map(|(name, input)| {
            let r = canonicalise(&input);
            CanonVector {
                name: name.into(),
                hash: r.as_ref().ok().map(|c| hash_hex(c)),
                canonical: r.as_ref().ok().cloned(),
                error: r.err().map(str::to_string),
                input,
            }
        })
        .collect();
    let records = record_cases()
        .into_iter()
        .map(|c| {
            let r = verify_wire(c.ty, &c.wire);
            let got = match r {
                Ok(()) => "valid",
                Err(code) => code,
            };
            assert_eq!(
                got, c.intent,
                "vector {}: the Rust code says {got}, the case was meant to show {}",
                c.name, c.intent
            );
            let canonical = content_canonical(c.ty, &c.wire);
            RecordVector {
                name: c.name.into(),
                ty: c.ty.into(),
                note: c.note.map(str::to_string),
                valid: r.is_ok(),
                error: r.err().map(str::to_string),
                hash: canonical.as_deref().map(hash_hex),
                canonical,
                seed_hex: c.seed.map(|n| hex::encode([n; 32])),
                record: c.wire,
            }
        })
        .collect();
    let limits = Limits::default();
    Doc {
        version: 2,
        description: "neXus FihHash / signature test vectors, generated by \
                      crates/nexus-core/tests/vectors.rs (see spec/README.md)"
            .into(),
        hash_context: HASH_CONTEXT.into(),
        sig_domain_hex: hex::encode(SIG_DOMAIN),
        max_safe_integer: MAX_SAFE_INTEGER,
        limits: json!({
            "max_body_bytes": limits.max_body_bytes,
            "max_parents": limits.max_parents,
            "max_json_depth": limits.max_json_depth,
            "max_reason_bytes": limits.max_reason_bytes,
            "max_selector_bytes": limits.max_selector_bytes,
        }),
        canonical,
        records,
    }
}

fn path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../spec/vectors.json")
}

/// Checks one file vector against the Rust code, independently of the generator.
fn check_doc(doc: &Doc) -> Vec<String> {
    let mut fails = Vec::new();
    if doc.hash_context != HASH_CONTEXT {
        fails.push(format!(
            "hash_context {:?} != {HASH_CONTEXT:?}",
            doc.hash_context
        ));
    }
    if doc.sig_domain_hex != hex::encode(SIG_DOMAIN) {
        fails.push("sig_domain_hex differs from SIG_DOMAIN".into());
    }
    for v in &doc.canonical {
        let want = match (&v.canonical, &v.error) {
            (Some(c), None) => Ok(c.clone()),
            (None, Some(e)) => Err(e.as_str()),
            _ => {
                fails.push(format!(
                    "canonical/{}: needs exactly one of canonical, error",
                    v.name
                ));
                continue;
            }
        };
        let got = canonicalise(&v.input);
        if got != want {
            fails.push(format!(
                "canonical/{}: file says {want:?}, code says {got:?}",
                v.name
            ));
        }
        if let Some(c) = &v.canonical
            && v.hash.as_deref() != Some(hash_hex(c).as_str())
        {
            fails.push(format!(
                "canonical/{}: hash {:?} != {}",
                v.name,
                v.hash,
                hash_hex(c)
            ));
        }
    }
    for v in &doc.records {
        let got = verify_wire(&v.ty, &v.record);
        let want = if v.valid {
            Ok(())
        } else {
            Err(v.error.as_deref().unwrap_or("<missing error>"))
        };
        if got != want {
            fails.push(format!(
                "records/{}: file says {want:?}, code says {got:?}",
                v.name
            ));
        }
        let canonical = content_canonical(&v.ty, &v.record);
        if canonical != v.canonical {
            fails.push(format!(
                "records/{}: canonical {:?} != code's {canonical:?}",
                v.name, v.canonical
            ));
        }
        if v.hash != canonical.as_deref().map(hash_hex) {
            fails.push(format!("records/{}: hash differs from the code's", v.name));
        }
        if v.valid {
            let seed: [u8; 32] = v
                .seed_hex
                .as_deref()
                .and_then(|s| hex::decode(s).ok())
                .and_then(|b| b.try_into().ok())
                .unwrap_or([0; 32]);
            let hash: FihHash = v.record["hash"]
                .as_str()
                .unwrap_or("")
                .parse()
                .unwrap_or(FihHash([0; 32]));
            let resigned = SigningKey::from_seed(&seed).sign(&hash).to_string();
            if v.record["sig"].as_str() != Some(resigned.as_str()) {
                fails.push(format!(
                    "records/{}: re-signing with seed_hex gives {resigned}",
                    v.name
                ));
            }
        }
    }
    fails
}

#[test]
fn vectors() {
    let generated = build();
    assert!(
        check_doc(&generated).is_empty(),
        "generator is inconsistent: {:?}",
        check_doc(&generated)
    );
    let file = path();
    if std::env::var_os("NEXUS_BLESS").is_some_and(|v| v == "1") {
        let mut text = serde_json::to_string_pretty(&generated).expect("serialise");
        text.push('\n');
        std::fs::write(&file, text).expect("write spec/vectors.json");
        eprintln!(
            "wrote {} ({} canonical + {} record vectors)",
            file.display(),
            generated.canonical.len(),
            generated.records.len()
        );
        return;
    }
    let text = std::fs::read_to_string(&file).unwrap_or_else(|e| {
        panic!(
            "read {}: {e} (run with NEXUS_BLESS=1 to create it)",
            file.display()
        )
    });
    let doc: Doc = serde_json::from_str(&text).expect("spec/vectors.json parses");
    let fails = check_doc(&doc);
    assert!(
        fails.is_empty(),
        "spec/vectors.json disagrees with the Rust code:\n  {}",
        fails.join("\n  ")
    );
    assert!(
        doc == generated,
        "spec/vectors.json is valid but stale: the generator's cases changed; \
         rerun with NEXUS_BLESS=1 and review the diff"
    );
}

#[test]
fn coverage_is_sufficient() {
    let doc = build();
    assert!(doc.canonical.len() + doc.records.len() >= 40);
    let mut names: Vec<&str> = doc
        .canonical
        .iter()
        .map(|v| v.name.as_str())
        .chain(doc.records.iter().map(|v| v.name.as_str()))
        .collect();
    names.sort_unstable();
    let n = names.len();
    names.dedup();
    assert_eq!(names.len(), n, "vector names are unique");
}

/// An unknown member must not ride along unhashed on a claim, renewal or withdrawal.
#[test]
fn action_unknown_fields_are_refused() {
    let bob = key(2);
    let claim = ActionContent::Claim {
        intent: h("the-intent"),
        lease_ms: 60_000,
        author: bob.author(),
        deployment: None,
        time: T0,
    };
    let mut w = sign_action(claim, &bob);
    w["token"] = json!(1);
    assert_eq!(verify_wire("action", &w), Err("malformed"));
}
