//! Canonical JSON (RFC 8785, restricted to i53 integers).
//!
//! A FihHash is computed over one byte sequence per value, so that a client in any
//! language can reproduce it. neXus uses the JSON Canonicalization Scheme (RFC 8785)
//! with one restriction: **numbers must be integers in the i53 range**
//! (±9,007,199,254,740,991, the integers every JSON implementation represents exactly).
//! Any other number (a fraction, an exponent form, `-0`, a larger integer) is refused
//! with [`CanonicalError`] rather than rounded; write such values as strings.
//!
//! Within that domain the rules are: no whitespace; object members sorted by the UTF-16
//! code units of their names; strings escaped as ECMAScript's `JSON.stringify` does
//! (`\"`, `\\`, `\b`, `\f`, `\n`, `\r`, `\t`, other controls as `\u00xx`, everything else
//! literal UTF-8); integers in shortest decimal form.
//!
//! Written by hand rather than taken from a crate because the encoder has to run on
//! every record on the hot path: it writes straight into a reusable buffer without
//! building an intermediate tree, checks the i53 restriction in the same pass, and is
//! tested against `serde_json_canonicalizer` and the RFC's own examples.

use std::cmp::Ordering;

use serde_json::{Map, Number, Value};

/// The largest integer a record may carry (2^53 − 1).
pub const MAX_SAFE_INTEGER: i64 = (1 << 53) - 1;

/// Why a value has no canonical form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CanonicalError {
    /// A number with a fraction or exponent, or `-0`.
    #[error(
        "number {0} is not an integer: record numbers must be integers in ±9007199254740991 (write other numbers as strings)"
    )]
    NotAnInteger(String),
    /// An integer beyond 2^53 − 1 in magnitude.
    #[error("integer {0} is outside the i53 range ±9007199254740991")]
    OutOfRange(String),
    /// Arrays and objects nested deeper than allowed.
    #[error("JSON is nested deeper than {0} levels")]
    TooDeep(usize),
}

/// Appends the canonical encoding of `value` to `out`, refusing numbers outside the
/// i53 integer domain and nesting deeper than `max_depth`.
pub fn write_value(
    out: &mut Vec<u8>,
    value: &Value,
    max_depth: usize,
) -> Result<(), CanonicalError> {
    write_at(out, value, 0, max_depth)
}

/// The canonical encoding of `value` (no depth limit beyond the parser's own).
pub fn to_vec(value: &Value) -> Result<Vec<u8>, CanonicalError> {
    let mut out = Vec::new();
    write_value(&mut out, value, usize::MAX)?;
    Ok(out)
}

fn write_at(
    out: &mut Vec<u8>,
    value: &Value,
    depth: usize,
    max_depth: usize,
) -> Result<(), CanonicalError> {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => write_i53(out, checked_i53(n)?),
        Value::String(s) => write_str(out, s),
        Value::Array(items) => {
            if depth >= max_depth {
                return Err(CanonicalError::TooDeep(max_depth));
            }
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_at(out, item, depth + 1, max_depth)?;
            }
            out.push(b']');
        }
        Value::Object(map) => {
            if depth >= max_depth {
                return Err(CanonicalError::TooDeep(max_depth));
            }
            write_object(out, map, depth, max_depth)?;
        }
    }
    Ok(())
}

fn write_object(
    out: &mut Vec<u8>,
    map: &Map<String, Value>,
    depth: usize,
    max_depth: usize,
) -> Result<(), CanonicalError> {
    out.push(b'{');
    // serde_json's map iterates in UTF-8 byte order, which is the RFC's UTF-16 order
    // unless supplementary-plane characters meet U+E000..U+FFFF; check, sort if needed.
    let in_order = map
        .keys()
        .zip(map.keys().skip(1))
        .all(|(a, b)| cmp_utf16(a, b) == Ordering::Less);
    let mut write_member = |i: usize, k: &str, v: &Value| {
        if i > 0 {
            out.push(b',');
        }
        write_str(out, k);
        out.push(b':');
        write_at(out, v, depth + 1, max_depth)
    };
    if in_order {
        for (i, (k, v)) in map.iter().enumerate() {
            write_member(i, k, v)?;
        }
    } else {
        let mut members: Vec<(&String, &Value)> = map.iter().collect();
        members.sort_by(|a, b| cmp_utf16(a.0, b.0));
        for (i, (k, v)) in members.into_iter().enumerate() {
            write_member(i, k, v)?;
        }
    }
    out.push(b'}');
    Ok(())
}

/// Compares two strings by their UTF-16 code units, as RFC 8785 §3.2.3 orders members.
pub fn cmp_utf16(a: &str, b: &str) -> Ordering {
    // Without 4-byte UTF-8 sequences both orders coincide with byte order.
    if !a.bytes().chain(b.bytes()).any(|x| x >= 0xF0) {
        return a.as_bytes().cmp(b.as_bytes());
    }
    a.encode_utf16().cmp(b.encode_utf16())
}

/// The value of `n` if it is an integer in the i53 range.
pub fn checked_i53(n: &Number) -> Result<i64, CanonicalError> {
    if let Some(i) = n.as_i64() {
        if (-MAX_SAFE_INTEGER..=MAX_SAFE_INTEGER).contains(&i) {
            return Ok(i);
        }
        return Err(CanonicalError::OutOfRange(n.to_string()));
    }
    if n.as_u64().is_some() {
        return Err(CanonicalError::OutOfRange(n.to_string()));
    }
    Err(CanonicalError::NotAnInteger(n.to_string()))
}

/// Appends an integer in shortest decimal form.
pub fn write_i53(out: &mut Vec<u8>, i: i64) {
    let mut buf = itoa::Buffer::new();
    out.extend_from_slice(buf.format(i).as_bytes());
}

/// Appends a JSON string literal, escaped as RFC 8785 requires.
pub fn write_str(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.reserve(s.len() + 2);
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let short: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0x00..=0x1f => &[],
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        if short.is_empty() {
            out.extend_from_slice(b"\\u00");
            out.push(HEX[(b >> 4) as usize]);
            out.push(HEX[(b & 0xf) as usize]);
        } else {
            out.extend_from_slice(short);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn canon(v: &Value) -> String {
        String::from_utf8(to_vec(v).expect("canonical")).expect("utf8")
    }

    #[test]
    fn rfc8785_sorting_example() {
        // RFC 8785 §3.2.3: members sorted by UTF-16 code units.
        let v: Value = serde_json::from_str(
            r#"{"\u20ac":"Euro Sign","\r":"Carriage Return","\ufb33":"Hebrew Letter Dalet With Dagesh","1":"One","\ud83d\ude00":"Emoji: Grinning Face","\u0080":"Control","\u00f6":"Latin Small Letter O With Diaeresis"}"#,
        )
        .expect("json");
        let names: Vec<String> = serde_json::from_str::<Value>(&canon(&v))
            .expect("reparse")
            .as_object()
            .expect("object")
            .keys()
            .cloned()
            .collect();
        let out = canon(&v);
        let order = [
            "\r",
            "1",
            "\u{80}",
            "\u{f6}",
            "\u{20ac}",
            "\u{1f600}",
            "\u{fb33}",
        ];
        let mut pos = 0;
        for name in order {
            let at = out[pos..]
                .find(&format!("\"{}\"", name.replace('\r', "\\r")))
                .map(|p| p + pos)
                .unwrap_or_else(|| panic!("{name:?} out of order in {out}"));
            pos = at + 1;
        }
        assert_eq!(names.len(), 7);
    }

    #[test]
    fn rfc8785_string_escapes() {
        let v = json!([
            "\u{0}\u{1f}\u{7f}",
            "\"\\/",
            "\u{8}\u{c}\n\r\t",
            "€$\u{f}\u{a}A'\u{42}\u{22}\u{5c}\\\"/"
        ]);
        assert_eq!(
            canon(&v),
            "[\"\\u0000\\u001f\u{7f}\",\"\\\"\\\\/\",\"\\b\\f\\n\\r\\t\",\"€$\\u000f\\nA'B\\\"\\\\\\\\\\\"/\"]"
        );
    }

    #[test]
    fn whitespace_and_nesting() {
        let v: Value = serde_json::from_str(
            r#" { "b" : [ 1 , { "z":null, "a":true } ], "a" : {} , "c":[] } "#,
        )
        .expect("json");
        assert_eq!(canon(&v), r#"{"a":{},"b":[1,{"a":true,"z":null}],"c":[]}"#);
    }

    #[test]
    fn i53_limits() {
        assert_eq!(canon(&json!(9007199254740991_i64)), "9007199254740991");
        assert_eq!(canon(&json!(-9007199254740991_i64)), "-9007199254740991");
        assert!(matches!(
            to_vec(&json!(9007199254740992_i64)),
            Err(CanonicalError::OutOfRange(_))
        ));
        assert!(matches!(
            to_vec(&json!(u64::MAX)),
            Err(CanonicalError::OutOfRange(_))
        ));
        assert!(matches!(
            to_vec(&json!(1.5)),
            Err(CanonicalError::NotAnInteger(_))
        ));
        let parsed: Value = serde_json::from_str("1.0").expect("json");
        assert!(matches!(
            to_vec(&parsed),
            Err(CanonicalError::NotAnInteger(_))
        ));
        let parsed: Value = serde_json::from_str("1e3").expect("json");
        assert!(matches!(
            to_vec(&parsed),
            Err(CanonicalError::NotAnInteger(_))
        ));
        let parsed: Value = serde_json::from_str("-0").expect("json");
        // serde_json reads -0 as the integer 0 or as the float -0.0; either is fine as
        // long as the float is refused and the integer encodes as 0.
        match to_vec(&parsed) {
            Ok(bytes) => assert_eq!(bytes, b"0"),
            Err(e) => assert!(matches!(e, CanonicalError::NotAnInteger(_))),
        }
    }

    #[test]
    fn depth_is_bounded() {
        let mut v = json!(1);
        for _ in 0..10 {
            v = json!([v]);
        }
        let mut out = Vec::new();
        assert!(write_value(&mut out, &v, 10).is_ok());
        out.clear();
        assert_eq!(
            write_value(&mut out, &v, 9),
            Err(CanonicalError::TooDeep(9))
        );
    }

    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            (-MAX_SAFE_INTEGER..=MAX_SAFE_INTEGER).prop_map(|i| json!(i)),
            any::<String>().prop_map(Value::String),
            "[\\u{0}-\\u{7f}\\u{e000}-\\u{ffff}\\u{10000}-\\u{10ffff}]{0,4}"
                .prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 64, 8, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
                prop::collection::btree_map(
                    "[a-z\\u{e000}-\\u{e002}\\u{1f600}-\\u{1f602}\\u{0}-\\u{20}]{0,3}",
                    inner,
                    0..8
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn agrees_with_serde_json_canonicalizer(v in arb_json()) {
            let ours = to_vec(&v).expect("canonical");
            let theirs = serde_json_canonicalizer::to_vec(&v).expect("theirs");
            prop_assert_eq!(String::from_utf8_lossy(&ours), String::from_utf8_lossy(&theirs));
        }

        #[test]
        fn encode_decode_encode_is_stable(v in arb_json()) {
            let once = to_vec(&v).expect("canonical");
            let back: Value = serde_json::from_slice(&once).expect("reparse");
            prop_assert_eq!(&back, &v);
            prop_assert_eq!(to_vec(&back).expect("canonical"), once);
        }
    }
}
