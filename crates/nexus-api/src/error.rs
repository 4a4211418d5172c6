//! The one error shape of the API and the mapping from core errors to it.

use serde_json::{Map, Value, json};

use nexus_core::{CoreError, ValidationError};

use crate::{ErrorCode, Response};

/// An error answer: a stable code (which gives the HTTP status), a message and named
/// details, sent as `{"error":{"code","message",…details}}`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{code} ({status}): {message}", status = code.status())]
pub struct ApiError {
    /// Stable machine-readable code (see `spec/api.md`); it gives the status.
    pub code: ErrorCode,
    /// For people.
    pub message: String,
    /// Named detail fields, flattened into the error object.
    pub details: Map<String, Value>,
}

impl ApiError {
    /// An error with `code` (and so its status) and `message`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            details: Map::new(),
        }
    }

    /// `400 bad_request`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadRequest, message)
    }

    /// The HTTP status (the code's).
    pub fn status(&self) -> u16 {
        self.code.status()
    }

    /// Adds a detail field.
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.details.insert(key.to_owned(), value.into());
        self
    }

    /// The JSON body.
    pub fn body(&self) -> Value {
        let mut error = Map::new();
        error.insert("code".into(), Value::from(self.code.as_str()));
        error.insert("message".into(), Value::from(self.message.clone()));
        for (k, v) in &self.details {
            error.insert(k.clone(), v.clone());
        }
        json!({ "error": error })
    }

    /// The HTTP response.
    pub fn to_response(&self) -> Response {
        let mut r = Response::json(self.status(), &self.body());
        r.code = Some(self.code);
        r
    }
}

impl From<&CoreError> for ApiError {
    fn from(e: &CoreError) -> Self {
        core_error(e)
    }
}

/// The code of a core error (what [`CoreError::code`] names, as an [`ErrorCode`]).
pub fn core_code(e: &CoreError) -> ErrorCode {
    match e {
        CoreError::Invalid(v) => match v {
            ValidationError::HashMismatch { .. } => ErrorCode::HashMismatch,
            ValidationError::BadSignature { .. } => ErrorCode::BadSignature,
            ValidationError::BodyTooLarge { .. } => ErrorCode::BodyTooLarge,
            ValidationError::TooManyParents { .. } => ErrorCode::TooManyParents,
            ValidationError::SelectorTooLarge { .. } => ErrorCode::SelectorTooLarge,
            _ => ErrorCode::InvalidRecord,
        },
        CoreError::UnknownRecord(_) | CoreError::UnknownPrefix(_) | CoreError::HintNotActive(_) => {
            ErrorCode::NotFound
        }
        CoreError::AmbiguousId(_) => ErrorCode::AmbiguousId,
        CoreError::UnknownParent(_) => ErrorCode::UnknownParent,
        CoreError::WrongKind { .. } => ErrorCode::WrongKind,
        CoreError::Inadmissible { .. } => ErrorCode::Inadmissible,
        CoreError::AlreadyClaimed { .. } => ErrorCode::AlreadyClaimed,
        CoreError::LeaseExpired { .. } => ErrorCode::LeaseExpired,
        CoreError::NotHolder { .. } => ErrorCode::NotHolder,
        CoreError::StaleToken { .. } => ErrorCode::StaleToken,
        CoreError::AlreadyResolved { .. } => ErrorCode::AlreadyResolved,
        CoreError::Withdrawn => ErrorCode::Withdrawn,
        CoreError::NotProposer { .. } => ErrorCode::NotProposer,
        CoreError::LeaseOutOfRange { .. } => ErrorCode::LeaseOutOfRange,
        CoreError::ClockSkew { .. } => ErrorCode::ClockSkew,
        CoreError::LegacyAction => ErrorCode::LegacyAction,
        CoreError::WrongDeployment { .. } => ErrorCode::WrongDeployment,
        CoreError::Replayed { .. } => ErrorCode::Replayed,
        CoreError::TooManyHints(_) | CoreError::HintListFull { .. } => ErrorCode::TooManyHints,
        CoreError::HintQuota { .. } => ErrorCode::HintQuota,
        CoreError::HintNotPermitted { .. } => ErrorCode::HintNotPermitted,
        CoreError::Conflict { .. } => ErrorCode::Conflict,
        CoreError::Store(nexus_store::StoreError::Full(_)) => ErrorCode::InsufficientStorage,
        CoreError::Store(_) => ErrorCode::Storage,
        // CoreError is non-exhaustive: a new variant whose code the API does not know
        // yet is a server fault until it is added here.
        _ => ErrorCode::from_wire(e.code()).unwrap_or(ErrorCode::Storage),
    }
}

/// Maps a record or action validation failure.
pub fn validation_error(v: &ValidationError) -> ApiError {
    core_error(&CoreError::Invalid(v.clone()))
}

/// Maps every [`CoreError`] to its status, code, message and details.
pub fn core_error(e: &CoreError) -> ApiError {
    let err = ApiError::new(core_code(e), e.to_string());
    match e {
        CoreError::Invalid(v) => match v {
            ValidationError::HashMismatch { stated, computed } => err
                .with("stated", stated.to_string())
                .with("computed", computed.to_string()),
            ValidationError::BadSignature { author, hash } => err
                .with("author", author.to_string())
                .with("hash", hash.to_string()),
            ValidationError::BodyTooLarge { size, limit }
            | ValidationError::SelectorTooLarge { size, limit } => {
                err.with("size", *size as u64).with("limit", *limit as u64)
            }
            ValidationError::TooManyParents { count, limit } => err
                .with("count", *count as u64)
                .with("limit", *limit as u64),
            ValidationError::DuplicateParent(h) => err.with("parent", h.to_string()),
            _ => err,
        },
        CoreError::UnknownRecord(h) | CoreError::HintNotActive(h) => err.with("id", h.to_string()),
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
        CoreError::LegacyAction => err,
        CoreError::WrongDeployment { signed, ours } => {
            let err = err.with("signed", signed.as_str());
            match ours {
                Some(d) => err.with("ours", d.as_str()),
                None => err,
            }
        }
        CoreError::Replayed { action } => err.with("action", action.to_string()),
        CoreError::TooManyHints(n) => err.with("active", *n as u64),
        CoreError::HintQuota {
            author,
            active,
            quota,
        } => err
            .with("author", author.to_string())
            .with("active", *active as u64)
            .with("quota", *quota as u64),
        CoreError::HintNotPermitted { author, .. } => err.with("author", author.to_string()),
        CoreError::HintListFull { bytes, limit } => err
            .with("bytes", *bytes as u64)
            .with("limit", *limit as u64),
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
            (CoreError::LegacyAction, 400, "legacy_action", vec![]),
            (
                CoreError::WrongDeployment {
                    signed: "theirs".parse().expect("deployment"),
                    ours: Some("ours".parse().expect("deployment")),
                },
                403,
                "wrong_deployment",
                vec![("signed", json!("theirs")), ("ours", json!("ours"))],
            ),
            (
                CoreError::Replayed { action: h },
                409,
                "replayed",
                vec![("action", json!(h.to_string()))],
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
            (
                CoreError::Store(StoreError::Full("no space".into())),
                507,
                "insufficient_storage",
                vec![],
            ),
        ];
        for (e, status, code, details) in cases {
            let api = core_error(&e);
            assert_eq!((api.status(), api.code.as_str()), (status, code), "{e:?}");
            assert_eq!(api.code.as_str(), e.code(), "the core names the same code");
            let body = api.body();
            assert_eq!(body["error"]["code"], code);
            assert_eq!(body["error"]["message"], e.to_string());
            for (k, v) in details {
                assert_eq!(body["error"][k], v, "{code}: {k}");
            }
            let r = api.to_response();
            assert_eq!((r.status, r.code), (status, Some(api.code)));
        }
    }
}
