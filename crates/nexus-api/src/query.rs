//! Query strings: percent-decoding and typed, validated parameters.

use crate::error::ApiError;

/// Decoded `name=value` pairs of a query string, each name at most once, all names
/// from an allowed list.
#[derive(Debug, Default)]
pub struct Query {
    pairs: Vec<(String, String)>,
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Percent-decodes one component. `+` stays `+` (RFC 3986 query semantics: topics may
/// contain `+` and never contain spaces).
pub fn percent_decode(s: &str) -> Result<String, ApiError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hi = bytes.get(i + 1).copied().and_then(hex_val);
            let lo = bytes.get(i + 2).copied().and_then(hex_val);
            match (hi, lo) {
                (Some(h), Some(l)) => out.push(h * 16 + l),
                _ => {
                    return Err(ApiError::bad_request(format!(
                        "bad percent-encoding in query component {s:?}"
                    )));
                }
            }
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out)
        .map_err(|_| ApiError::bad_request("query component is not UTF-8 after decoding"))
}

impl Query {
    /// Parses `query`, refusing names outside `allowed` and repeated names.
    pub fn parse(query: Option<&str>, allowed: &[&str]) -> Result<Self, ApiError> {
        let mut pairs: Vec<(String, String)> = Vec::new();
        for part in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (name, value) = part.split_once('=').unwrap_or((part, ""));
            let name = percent_decode(name)?;
            let value = percent_decode(value)?;
            if !allowed.contains(&name.as_str()) {
                let hint = if allowed.is_empty() {
                    "this route takes no query parameters".to_owned()
                } else {
                    format!("allowed: {}", allowed.join(", "))
                };
                return Err(ApiError::bad_request(format!(
                    "unknown query parameter {name:?} ({hint})"
                ))
                .with("parameter", name));
            }
            if pairs.iter().any(|(n, _)| *n == name) {
                return Err(
                    ApiError::bad_request(format!("query parameter {name:?} given twice"))
                        .with("parameter", name),
                );
            }
            pairs.push((name, value));
        }
        Ok(Self { pairs })
    }

    /// The value of `name`, if given (an empty value counts as not given).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(n, v)| n == name && !v.is_empty())
            .map(|(_, v)| v.as_str())
    }

    /// An integer parameter within `min..=max`, or `default`.
    pub fn int(&self, name: &str, default: u64, min: u64, max: u64) -> Result<u64, ApiError> {
        match self.get(name) {
            None => Ok(default),
            Some(v) => {
                let n = self.opt_int(name, v)?;
                if !(min..=max).contains(&n) {
                    return Err(ApiError::bad_request(format!(
                        "{name} must be between {min} and {max}, got {n}"
                    ))
                    .with("parameter", name));
                }
                Ok(n)
            }
        }
    }

    /// An optional non-negative integer parameter.
    pub fn opt_u64(&self, name: &str) -> Result<Option<u64>, ApiError> {
        self.get(name).map(|v| self.opt_int(name, v)).transpose()
    }

    fn opt_int(&self, name: &str, v: &str) -> Result<u64, ApiError> {
        if v.is_empty() || v.len() > 20 || !v.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ApiError::bad_request(format!(
                "{name} must be a non-negative integer, got {v:?}"
            ))
            .with("parameter", name));
        }
        v.parse().map_err(|_| {
            ApiError::bad_request(format!("{name} is out of range: {v}")).with("parameter", name)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_validates() {
        let q = Query::parse(
            Some("topic=chem%2Fsol&limit=5&cursor="),
            &["topic", "limit", "cursor"],
        )
        .expect("parse");
        assert_eq!(q.get("topic"), Some("chem/sol"));
        assert_eq!(q.int("limit", 50, 1, 500).expect("limit"), 5);
        assert_eq!(q.get("cursor"), None);
        assert!(Query::parse(Some("x=1"), &["topic"]).is_err());
        assert!(Query::parse(Some("topic=a&topic=b"), &["topic"]).is_err());
        assert!(Query::parse(Some("topic=%zz"), &["topic"]).is_err());
        let q = Query::parse(Some("limit=0"), &["limit"]).expect("parse");
        assert!(q.int("limit", 50, 1, 500).is_err());
        let q = Query::parse(Some("limit=-1"), &["limit"]).expect("parse");
        assert!(q.int("limit", 50, 1, 500).is_err());
        assert_eq!(percent_decode("a+b").expect("decode"), "a+b");
    }
}
