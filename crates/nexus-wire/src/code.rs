//! The API's error codes: one enum, each code with its HTTP status.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Declares [`ErrorCode`] from one table: variant, wire string, status. `ALL`,
/// `as_str`, `status` and the parser are generated from it, so they cannot disagree.
macro_rules! error_codes {
    ($( $(#[$doc:meta])* $variant:ident = ($code:literal, $status:literal), )+) => {
        /// A stable, machine-readable error code of the API: the `code` of every error
        /// body (`{"error":{"code","message",…details}}`), with the HTTP status it is
        /// always sent with. Serialised as its snake_case string (`already_claimed`);
        /// `spec/api.md` lists them by status.
        ///
        /// New codes may be added (hence `non_exhaustive`): a client reading answers of
        /// a newer server should parse codes into [`AnyErrorCode`], which keeps the ones
        /// it does not know.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        #[non_exhaustive]
        pub enum ErrorCode {
            $( $(#[$doc])* $variant, )+
        }

        impl ErrorCode {
            /// Every code, in the order of the table (by status).
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant),+];

            /// The wire string (`already_claimed`).
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $code,)+
                }
            }

            /// The HTTP status every answer with this code has.
            pub const fn status(self) -> u16 {
                match self {
                    $(ErrorCode::$variant => $status,)+
                }
            }

            /// The code whose wire string is `code`, if this version knows it.
            pub fn from_wire(code: &str) -> Option<ErrorCode> {
                match code {
                    $($code => Some(ErrorCode::$variant),)+
                    _ => None,
                }
            }
        }
    };
}

error_codes! {
    /// The request body is not JSON (or not the JSON object the route takes).
    MalformedJson = ("malformed_json", 400),
    /// A record or action is malformed: a missing or unknown member, a bad topic, a
    /// duplicate parent, a value out of its domain.
    InvalidRecord = ("invalid_record", 400),
    /// The stated `hash` is not the FihHash of the content (names `stated`,
    /// `computed`).
    HashMismatch = ("hash_mismatch", 400),
    /// A record names more parents than the limit (names `count`, `limit`).
    TooManyParents = ("too_many_parents", 400),
    /// A Hint's selector is larger than the limit, canonically encoded (names `size`,
    /// `limit`).
    SelectorTooLarge = ("selector_too_large", 400),
    /// A claim or renewal asks for a lease outside the server's range (names
    /// `requested`, `min`, `max`).
    LeaseOutOfRange = ("lease_out_of_range", 400),
    /// An action's time is too far from the server's clock (names `time`, `now`,
    /// `max_skew_ms`).
    ClockSkew = ("clock_skew", 400),
    /// A version 1 action (it names no `deployment`): the server applies only version 2
    /// actions, signed for its deployment (`deployment` of `GET /v1/health`).
    LegacyAction = ("legacy_action", 400),
    /// An id prefix matches more than one record (names `id`).
    AmbiguousId = ("ambiguous_id", 400),
    /// A query parameter is invalid, or the path and the action name different
    /// Intents (names `parameter` for query parameters).
    BadRequest = ("bad_request", 400),
    /// A deployed contract does not parse or check (names `errors`:
    /// `[{"line","column","message"}]`).
    InvalidContract = ("invalid_contract", 400),
    /// The signature does not verify against the author's key (names `author`,
    /// `hash`).
    BadSignature = ("bad_signature", 401),
    /// A read without an accepted bearer token, where the deployment requires one;
    /// hosts add `WWW-Authenticate: Bearer`.
    Unauthorized = ("unauthorized", 401),
    /// An active deny Hint selects the Intent (names `hint`, `reason`).
    Inadmissible = ("inadmissible", 403),
    /// Only the proposer may withdraw an Intent (names `proposer`).
    NotProposer = ("not_proposer", 403),
    /// The action is signed for another deployment than this server's (names
    /// `signed`, and `ours` when the server has an id).
    WrongDeployment = ("wrong_deployment", 403),
    /// The author's key is not on the server's allowlist.
    AuthorNotAllowed = ("author_not_allowed", 403),
    /// Only an operator key (or the contract in force) may post a `deny` or `allow`
    /// Hint, and only a Hint's author or an operator may retract it (names `author`).
    HintNotPermitted = ("hint_not_permitted", 403),
    /// The contract in force does not let this key upgrade it, or the approval
    /// quorum is missing (names `needed`, `found`).
    UpgradeRefused = ("upgrade_refused", 403),
    /// No record (or contract) has this id (names `id`).
    NotFound = ("not_found", 404),
    /// No route has this path.
    NoRoute = ("no_route", 404),
    /// The path exists, but not with this method.
    MethodNotAllowed = ("method_not_allowed", 405),
    /// The request's body did not arrive within the body timeout (names `limit_ms`);
    /// the connection is closed.
    RequestTimeout = ("request_timeout", 408),
    /// Another agent holds a live claim on the Intent (names `holder`,
    /// `lease_until`, `token`).
    AlreadyClaimed = ("already_claimed", 409),
    /// The actor's lease has lapsed (names `holder`, `lease_until`).
    LeaseExpired = ("lease_expired", 409),
    /// The actor does not hold the Intent's claim (names `state`, and `holder` when
    /// there is one).
    NotHolder = ("not_holder", 409),
    /// The fencing token presented is not the current one (names `presented`,
    /// `current`).
    StaleToken = ("stale_token", 409),
    /// The Intent is already resolved (names `fact`).
    AlreadyResolved = ("already_resolved", 409),
    /// The Intent was withdrawn.
    Withdrawn = ("withdrawn", 409),
    /// This very action (same hash) was already applied: an action takes effect at
    /// most once (names `action`).
    Replayed = ("replayed", 409),
    /// Every attempt of the commit lost its compare-and-swap race (names `keys`); the
    /// client may retry.
    Conflict = ("conflict", 409),
    /// As many Hints are active as the limit allows (names `active`), or the active
    /// Hints would take more bytes than the limit with this one (names `bytes`,
    /// `limit`).
    TooManyHints = ("too_many_hints", 409),
    /// A deployment names a contract version that is no longer the one in force
    /// (names `current`, `expected`).
    StaleContract = ("stale_contract", 409),
    /// The request body, or a record's body, is over the limit (names `size`,
    /// `limit` when known).
    BodyTooLarge = ("body_too_large", 413),
    /// A parent is not committed (names `parent`).
    UnknownParent = ("unknown_parent", 422),
    /// A linked record is not of the kind the link needs (names `hash`, `actual`,
    /// `expected`).
    WrongKind = ("wrong_kind", 422),
    /// The author already has as many active Hints as its quota allows (names
    /// `author`, `active`, `quota`); a Hint must expire or be retracted first.
    HintQuota = ("hint_quota", 429),
    /// Too many requests from one author key or client address (names `scope`,
    /// `retry_after_ms`; hosts send `Retry-After`); nothing was stored.
    RateLimited = ("rate_limited", 429),
    /// A store call failed, or a request could not be handled (the message says
    /// which); nothing was written.
    Storage = ("storage", 500),
    /// This host does not serve the route (names `route`).
    NotImplemented = ("not_implemented", 501),
    /// The host holds its most open connections (names `limit`; `Retry-After: 1`, the
    /// connection is closed).
    TooManyConnections = ("too_many_connections", 503),
    /// The contract's Hints could not be committed (names `message`): proposals and
    /// claims, whose admissibility they decide, are refused until they are.
    GovernancePending = ("governance_pending", 503),
    /// The host has no log key (a Worker without its `NEXUS_LOG_KEY` secret), so it
    /// cannot sign a checkpoint.
    NoLogKey = ("no_log_key", 503),
    /// The store is out of space (a full disk); nothing was written.
    InsufficientStorage = ("insufficient_storage", 507),
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that is not a code this version knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownErrorCode(pub String);

impl fmt::Display for UnknownErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown error code {:?}", self.0)
    }
}

impl std::error::Error for UnknownErrorCode {}

impl FromStr for ErrorCode {
    type Err = UnknownErrorCode;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ErrorCode::from_wire(s).ok_or_else(|| UnknownErrorCode(s.to_owned()))
    }
}

impl Serialize for ErrorCode {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ErrorCode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for ErrorCode {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, SchemaType, Type};
        ObjectBuilder::new()
            .schema_type(SchemaType::Type(Type::String))
            .description(Some(
                "Stable machine-readable code (`spec/api.md` gives each one's status).",
            ))
            .enum_values(Some(ErrorCode::ALL.iter().map(|c| c.as_str())))
            .into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for ErrorCode {}

/// An error code as a client reads it: one this version knows, or the string of a code
/// a newer server added. Compares equal to the [`ErrorCode`] it holds; serialised as
/// the string either way.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AnyErrorCode {
    /// A code this version knows.
    Known(ErrorCode),
    /// Any other string (from a newer server).
    Unknown(String),
}

impl AnyErrorCode {
    /// The wire string.
    pub fn as_str(&self) -> &str {
        match self {
            AnyErrorCode::Known(c) => c.as_str(),
            AnyErrorCode::Unknown(s) => s,
        }
    }

    /// The code, if this version knows it.
    pub fn known(&self) -> Option<ErrorCode> {
        match self {
            AnyErrorCode::Known(c) => Some(*c),
            AnyErrorCode::Unknown(_) => None,
        }
    }
}

impl From<ErrorCode> for AnyErrorCode {
    fn from(c: ErrorCode) -> Self {
        AnyErrorCode::Known(c)
    }
}

impl From<&str> for AnyErrorCode {
    fn from(s: &str) -> Self {
        match ErrorCode::from_wire(s) {
            Some(c) => AnyErrorCode::Known(c),
            None => AnyErrorCode::Unknown(s.to_owned()),
        }
    }
}

impl PartialEq<ErrorCode> for AnyErrorCode {
    fn eq(&self, other: &ErrorCode) -> bool {
        self.known() == Some(*other)
    }
}

impl PartialEq<AnyErrorCode> for ErrorCode {
    fn eq(&self, other: &AnyErrorCode) -> bool {
        other == self
    }
}

impl fmt::Display for AnyErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for AnyErrorCode {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for AnyErrorCode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Ok(AnyErrorCode::from(&*s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_round_trips_through_its_wire_string() {
        for &code in ErrorCode::ALL {
            let s = code.as_str();
            assert!(
                s.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{s}"
            );
            assert_eq!(s.parse::<ErrorCode>(), Ok(code));
            assert_eq!(serde_json::to_value(code).ok(), Some(s.into()));
            let back: ErrorCode = serde_json::from_value(s.into()).expect(s);
            assert_eq!(back, code);
            assert_eq!(code.to_string(), s);
            assert!((400..600).contains(&code.status()), "{s}");
        }
        let mut names: Vec<_> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ErrorCode::ALL.len(), "a wire string twice");
    }

    #[test]
    fn statuses_of_some_codes() {
        for (code, status) in [
            (ErrorCode::MalformedJson, 400),
            (ErrorCode::BadSignature, 401),
            (ErrorCode::AuthorNotAllowed, 403),
            (ErrorCode::NoRoute, 404),
            (ErrorCode::MethodNotAllowed, 405),
            (ErrorCode::AlreadyClaimed, 409),
            (ErrorCode::BodyTooLarge, 413),
            (ErrorCode::UnknownParent, 422),
            (ErrorCode::Storage, 500),
            (ErrorCode::NotImplemented, 501),
            (ErrorCode::Unauthorized, 401),
            (ErrorCode::RequestTimeout, 408),
            (ErrorCode::RateLimited, 429),
            (ErrorCode::TooManyConnections, 503),
            (ErrorCode::InsufficientStorage, 507),
        ] {
            assert_eq!(code.status(), status, "{code}");
        }
    }

    #[test]
    fn unknown_codes_are_refused_strictly_and_kept_leniently() {
        assert!("teapot".parse::<ErrorCode>().is_err());
        assert!(serde_json::from_str::<ErrorCode>("\"teapot\"").is_err());
        let any: AnyErrorCode = serde_json::from_str("\"teapot\"").expect("any string");
        assert_eq!(any, AnyErrorCode::Unknown("teapot".into()));
        assert_eq!((any.as_str(), any.known()), ("teapot", None));
        assert_eq!(
            serde_json::to_string(&any).ok().as_deref(),
            Some("\"teapot\"")
        );
        let known: AnyErrorCode = serde_json::from_str("\"stale_token\"").expect("known");
        assert_eq!(known, ErrorCode::StaleToken);
        assert_eq!(ErrorCode::StaleToken, known);
        assert_ne!(any, ErrorCode::StaleToken);
    }
}
