//! The one error shape of the API and the mapping from core errors to it.

use serde_json::{Map, Value, json};

use nexus_core::{CoreError, ValidationError};

use crate::Response;

/// An error answer: HTTP status, stable code, message and named details, sent as
/// `{"error":{"code","message",…details}}`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{code} ({status}): {message}")]
pub struct ApiError {
    /// HTTP status.
    pub status: u16,
    /// Stable machine-readable code (see `spec/api.md`).
    pub code: &'static str,
    /// For people.
    pub message: String,
    /// Named detail fields, flattened into the error object.
    pub details: Map<String, Value>,
}

impl ApiError {
    /// An error with the status [`status_of`] gives `code`.
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status: status_of(code),
            code,
            message: message.into(),
            details: Map::new(),
        }
    }

    /// `400 bad_request`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new("bad_request", message)
    }

    /// Adds a detail field.
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.details.insert(key.to_owned(), value.into());
        self
    }

    /// The JSON body.
    pub fn body(&self) -> Value {
        let mut error = Map::new();
        error.insert("code".into(), Value::from(self.code));
        error.insert("message".into(), Value::from(self.message.clone()));
        for (k, v) in &self.details {
            error.insert(k.clone(), v.clone());
        }
        json!({ "error": error })
    }

    /// The HTTP response.
    pub fn to_response(&self) -> Response {
        let mut r = Response::json(self.status, &self.body());
        r.code = Some(self.code);
        r
    }
}

impl From<&CoreError> for ApiError {
    fn from(e: &CoreError) -> Self {
        core_error(e)
    }
}

/// The HTTP status of an error code (the table of `spec/api.md`; unknown codes: 500).
pub fn status_of(code: &str) -> u16 {
    match code {
        "malformed_json" | "invalid_record" | "hash_mismatch" | "too_many_parents"
        | "lease_out_of_range" | "clock_skew" | "ambiguous_id" | "bad_request"
        | "invalid_contract" => 400,
        "bad_signature" | "unauthorized" => 401,
        "inadmissible" | "not_proposer" | "author_not_allowed" | "upgrade_refused" => 403,
        "not_found" | "no_route" => 404,
        "method_not_allowed" => 405,
        "request_timeout" => 408,
        "already_claimed" | "lease_expired" | "not_holder" | "stale_token" | "already_resolved"
        | "withdrawn" | "conflict" | "too_many_hints" | "stale_contract" => 409,
        "body_too_large" => 413,
        "unknown_parent" | "wrong_kind" => 422,
        "rate_limited" => 429,
        "not_implemented" => 501,
        "too_many_connections" => 503,
        _ => 500,
    }
}

/// Maps a record or action validation failure.
pub fn validation_error(v: &ValidationError) -> ApiError {
    core_error(&CoreError::Invalid(v.clone()))
}

/// Maps every [`CoreError`] to its status, code, message and details.
pub fn core_error(e: &CoreError) -> ApiError {
    let err = ApiError::new(e.code(), e.to_string());
    match e {
        CoreError::Invalid(v) => match v {
            ValidationError::HashMismatch { stated, computed } => err
                .with("stated", stated.to_string())
                .with("computed", computed.to_string()),
            ValidationError::BadSignature { author, hash } => err
                .with("author", author.to_string())
                .with("hash", hash.to_string()),
            ValidationError::BodyTooLarge { size, limit } => {
                err.with("size", *size as u64).with("limit", *limit as u64)
            }
            ValidationError::TooManyParents { count, limit } => err
                .with("count", *count as u64)
                .with("limit", *limit as u64),
            ValidationError::DuplicateParent(h) => err.with("parent", h.to_string()),
            _ => err,
        },
        CoreError::UnknownRecord(h) => err.with("id", h.to_string()),
        CoreError::UnknownPrefix(p) | CoreError::AmbiguousId(p) => err.with("id", p.clone()),
        CoreError::UnknownParent(h) => err.with("parent", h.to_string()),
        CoreError::WrongKind {
            hash,
            actual,
            expected,
        } => err
            .with("hash", hash.to_string())
            .with("actual", actual.as_str())
            .with("expected", expected.as_str()),
        CoreError::Inadmissible { hint, reason } => err
            .with("hint", hint.to_string())
            .with("reason", reason.clone()),
        CoreError::AlreadyClaimed {
            holder,
            lease_until,
            token,
        } => err
            .with("holder", holder.to_string())
            .with("lease_until", *lease_until)
            .with("token", *token),
        CoreError::LeaseExpired {
            holder,
            lease_until,
        } => err
            .with("holder", holder.to_string())
            .with("lease_until", *lease_until),
        CoreError::NotHolder { state, holder } => {
            let err = err.with("state", *state);
            match holder {
                Some(h) => err.with("holder", h.to_string()),
                None => err,
            }
        }
        CoreError::StaleToken { presented, current } => {
            err.with("presented", *presented).with("current", *current)
        }
        CoreError::AlreadyResolved { fact } => err.with("fact", fact.to_string()),
        CoreError::Withdrawn => err,
        CoreError::NotProposer { proposer } => err.with("proposer", proposer.to_string()),
        CoreError::LeaseOutOfRange {
            requested,
            min,
            max,
        } => err
            .with("requested", *requested)
            .with("min", *min)
            .with("max", *max),
        CoreError::ClockSkew {
            time,
            now,
            max_skew_ms,
        } => err
            .with("time", *time)
            .with("now", *now)
            .with("max_skew_ms", *max_skew_ms),
        CoreError::TooManyHints(n) => err.with("active", *n as u64),
        CoreError::Conflict { keys } => err.with("keys", keys.clone()),
        CoreError::Store(_) => err,
        // CoreError is non-exhaustive: a new variant keeps its code and message.
        _ => err,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nexus_core::{FihHash, Kind, SigningKey};
    use nexus_store::StoreError;

    /// Every `CoreError` variant: status, code, and the named details.
    #[test]
    fn every_core_error_maps_to_status_code_and_details() {
        let h = FihHash::of_canonical(b"h");
        let who = SigningKey::from_seed(&[1; 32]).author();
        type Case = (CoreError, u16, &'static str, Vec<(&'static str, Value)>);
        let cases: Vec<Case> = vec![
            (
                CoreError::Invalid(ValidationError::Malformed("x".into())),
                400,
                "invalid_record",
                vec![],
            ),
            (
                CoreError::Invalid(ValidationError::HashMismatch {
                    stated: h,
                    computed: h,
                }),
                400,
                "hash_mismatch",
                vec![("stated", json!(h.to_string()))],
            ),
            (
                CoreError::Invalid(ValidationError::BadSignature {
                    author: who,
                    hash: h,
                }),
                401,
                "bad_signature",
                vec![("author", json!(who.to_string()))],
            ),
            (
                CoreError::Invalid(ValidationError::BodyTooLarge { size: 9, limit: 8 }),
                413,
                "body_too_large",
                vec![("size", json!(9)), ("limit", json!(8))],
            ),
            (
                CoreError::Invalid(ValidationError::TooManyParents { count: 9, limit: 8 }),
                400,
                "too_many_parents",
                vec![("count", json!(9))],
            ),
            (
                CoreError::Invalid(ValidationError::DuplicateParent(h)),
                400,
                "invalid_record",
                vec![("parent", json!(h.to_string()))],
            ),
            (
                CoreError::UnknownRecord(h),
                404,
                "not_found",
                vec![("id", json!(h.to_string()))],
            ),
            (
                CoreError::UnknownPrefix("abcdef01".into()),
                404,
                "not_found",
                vec![("id", json!("abcdef01"))],
            ),
            (
                CoreError::AmbiguousId("abcdef01".into()),
                400,
                "ambiguous_id",
                vec![("id", json!("abcdef01"))],
            ),
            (
                CoreError::UnknownParent(h),
                422,
                "unknown_parent",
                vec![("parent", json!(h.to_string()))],
            ),
            (
                CoreError::WrongKind {
                    hash: h,
                    actual: Kind::Fact,
                    expected: Kind::Intent,
                },
                422,
                "wrong_kind",
                vec![("actual", json!("fact")), ("expected", json!("intent"))],
            ),
            (
                CoreError::Inadmissible {
                    hint: h,
                    reason: "no".into(),
                },
                403,
                "inadmissible",
                vec![("hint", json!(h.to_string())), ("reason", json!("no"))],
            ),
            (
                CoreError::AlreadyClaimed {
                    holder: who,
                    lease_until: 5,
                    token: 2,
                },
                409,
                "already_claimed",
                vec![
                    ("holder", json!(who.to_string())),
                    ("lease_until", json!(5)),
                    ("token", json!(2)),
                ],
            ),
            (
                CoreError::LeaseExpired {
                    holder: who,
                    lease_until: 5,
                },
                409,
                "lease_expired",
                vec![("lease_until", json!(5))],
            ),
            (
                CoreError::NotHolder {
                    state: "claimed",
                    holder: Some(who),
                },
                409,
                "not_holder",
                vec![
                    ("state", json!("claimed")),
                    ("holder", json!(who.to_string())),
                ],
            ),
            (
                CoreError::StaleToken {
                    presented: 1,
                    current: 2,
                },
                409,
                "stale_token",
                vec![("presented", json!(1)), ("current", json!(2))],
            ),
            (
                CoreError::AlreadyResolved { fact: h },
                409,
                "already_resolved",
                vec![("fact", json!(h.to_string()))],
            ),
            (CoreError::Withdrawn, 409, "withdrawn", vec![]),
            (
                CoreError::NotProposer { proposer: who },
                403,
                "not_proposer",
                vec![("proposer", json!(who.to_string()))],
            ),
            (
                CoreError::LeaseOutOfRange {
                    requested: 1,
                    min: 2,
                    max: 3,
                },
                400,
                "lease_out_of_range",
                vec![
                    ("requested", json!(1)),
                    ("min", json!(2)),
                    ("max", json!(3)),
                ],
            ),
            (
                CoreError::ClockSkew {
                    time: 1,
                    now: 2,
                    max_skew_ms: 0,
                },
                400,
                "clock_skew",
                vec![("time", json!(1)), ("now", json!(2))],
            ),
            (
                CoreError::TooManyHints(1000),
                409,
                "too_many_hints",
                vec![("active", json!(1000))],
            ),
            (
                CoreError::Conflict {
                    keys: vec!["intent/x".into()],
                },
                409,
                "conflict",
                vec![("keys", json!(["intent/x"]))],
            ),
            (
                CoreError::Store(StoreError::Backend("down".into())),
                500,
                "storage",
                vec![],
            ),
        ];
        for (e, status, code, details) in cases {
            let api = core_error(&e);
            assert_eq!((api.status, api.code), (status, code), "{e:?}");
            let body = api.body();
            assert_eq!(body["error"]["code"], code);
            assert_eq!(body["error"]["message"], e.to_string());
            for (k, v) in details {
                assert_eq!(body["error"][k], v, "{code}: {k}");
            }
            let r = api.to_response();
            assert_eq!((r.status, r.code), (status, Some(code)));
        }
    }

    #[test]
    fn api_codes_have_their_statuses() {
        for (code, status) in [
            ("malformed_json", 400),
            ("bad_request", 400),
            ("author_not_allowed", 403),
            ("no_route", 404),
            ("method_not_allowed", 405),
            ("body_too_large", 413),
            ("unauthorized", 401),
            ("request_timeout", 408),
            ("rate_limited", 429),
            ("too_many_connections", 503),
            ("anything_else", 500),
        ] {
            assert_eq!(status_of(code), status, "{code}");
        }
    }
}
