//! Who may read, and the errors of a host's own limits (rate, time, connections).
//!
//! Writes are authorized by their signature and the allowlist ([`crate::ApiConfig`]);
//! reads by this module: a deployment either serves them to anyone or asks for
//! `Authorization: Bearer <token>`. Hosts check it before they read a request's body,
//! with the route [`crate::route_for`] gives for the method and path, so that both hosts
//! answer the same `401 unauthorized`.

use crate::{ApiError, ErrorCode, Route};

/// Who may call the routes that do not change state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReadAccess {
    /// BLAKE3 of each accepted token; empty: reads are public.
    tokens: Vec<blake3::Hash>,
    /// `GET /v1/health` and `GET /metrics` need no token even when reads do.
    public_status: bool,
}

impl ReadAccess {
    /// Reads are public (and so are health and metrics).
    pub fn public() -> Self {
        Self::default()
    }

    /// Reads need one of `tokens` (surrounding white space is ignored; empty ones
    /// are skipped). With no usable token this is [`ReadAccess::public`].
    pub fn with_tokens<I, S>(tokens: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let tokens = tokens
            .into_iter()
            .filter_map(|t| {
                let t = t.as_ref().trim();
                (!t.is_empty()).then(|| blake3::hash(t.as_bytes()))
            })
            .collect();
        Self {
            tokens,
            public_status: false,
        }
    }

    /// Parses a token file: one token a line; blank lines and lines starting with `#`
    /// are skipped (several lines let a token be rotated without downtime).
    pub fn from_token_file(text: &str) -> Self {
        Self::with_tokens(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#')),
        )
    }

    /// Whether health and metrics are served without a token (default: they need one
    /// whenever reads do).
    pub fn with_public_status(mut self, public: bool) -> Self {
        self.public_status = public;
        self
    }

    /// Whether reads need a token.
    pub fn requires_token(&self) -> bool {
        !self.tokens.is_empty()
    }

    /// Whether health and metrics are public.
    pub fn status_is_public(&self) -> bool {
        self.public_status || !self.requires_token()
    }

    /// Checks a request to `route` with the `Authorization` header `authorization`:
    /// writes (authorized by their signatures) always pass; health and metrics as
    /// [`with_public_status`](Self::with_public_status) says; everything else (reads,
    /// unknown paths) needs a token when tokens are set. The token is compared through
    /// its BLAKE3 hash, whose equality is constant-time (and hides the length).
    pub fn check(&self, route: Route, authorization: Option<&[u8]>) -> Result<(), ApiError> {
        if !self.requires_token() || route.is_write() {
            return Ok(());
        }
        if self.public_status && matches!(route, Route::Health | Route::Metrics) {
            return Ok(());
        }
        if authorization.is_none() {
            return Err(unauthorized(
                "this server needs `Authorization: Bearer <token>` for reads",
            ));
        }
        self.check_bearer(authorization)
    }

    /// Checks that `authorization` is `Bearer <token>` with one of the tokens, whatever
    /// the route (a host's own admin routes, whose tokens are not the read tokens:
    /// build a second `ReadAccess` from them). Refuses everything when there are none.
    pub fn check_bearer(&self, authorization: Option<&[u8]>) -> Result<(), ApiError> {
        let Some(value) = authorization else {
            return Err(unauthorized(
                "this route needs `Authorization: Bearer <token>`",
            ));
        };
        let token = bearer(value)
            .ok_or_else(|| unauthorized("the Authorization header must be `Bearer <token>`"))?;
        let presented = blake3::hash(token);
        // Every token is compared, so the time does not say which one matched.
        let mut ok = false;
        for t in &self.tokens {
            ok |= *t == presented;
        }
        if ok {
            Ok(())
        } else {
            Err(unauthorized("the bearer token is not accepted"))
        }
    }
}

/// The token of `Bearer <token>` (scheme case-insensitive, RFC 7235).
fn bearer(value: &[u8]) -> Option<&[u8]> {
    let value = value.trim_ascii();
    let (scheme, rest) = value.split_at_checked(6)?;
    if !scheme.eq_ignore_ascii_case(b"bearer") || !rest.first()?.is_ascii_whitespace() {
        return None;
    }
    let token = rest.trim_ascii();
    (!token.is_empty()).then_some(token)
}

/// `401 unauthorized`: a read without an accepted bearer token. Hosts add
/// `WWW-Authenticate: Bearer`.
pub fn unauthorized(message: &str) -> ApiError {
    ApiError::new(ErrorCode::Unauthorized, message)
}

/// `429 rate_limited`: `scope` (`"author"` or `"address"`) spent its requests; the
/// next one is allowed in `retry_after_ms`. Hosts send `Retry-After` with
/// [`retry_after_secs`] of it.
pub fn rate_limited(scope: &'static str, retry_after_ms: u64) -> ApiError {
    ApiError::new(
        ErrorCode::RateLimited,
        format!(
            "too many requests from this {scope}: retry in {} s",
            retry_after_secs(retry_after_ms)
        ),
    )
    .with("scope", scope)
    .with("retry_after_ms", retry_after_ms)
}

/// Whole seconds for `Retry-After` (rounded up, at least 1).
pub fn retry_after_secs(ms: u64) -> u64 {
    ms.div_ceil(1_000).max(1)
}

/// `408 request_timeout`: the request's body did not arrive within `limit_ms`.
pub fn request_timeout(limit_ms: u64) -> ApiError {
    ApiError::new(
        ErrorCode::RequestTimeout,
        format!("the request body did not arrive within {limit_ms} ms"),
    )
    .with("limit_ms", limit_ms)
}

/// `503 too_many_connections`: the host holds its most open connections (`limit`).
pub fn too_many_connections(limit: usize) -> ApiError {
    ApiError::new(
        ErrorCode::TooManyConnections,
        format!("the server holds its most open connections ({limit}); retry shortly"),
    )
    .with("limit", limit as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_need_a_token_writes_do_not() {
        let access = ReadAccess::from_token_file("# comment\n\n s3cret \nother\n");
        assert!(access.requires_token());
        assert!(access.check(Route::ProposeIntent, None).is_ok());
        let e = access
            .check(Route::ListIntents, None)
            .expect_err("no token");
        assert_eq!((e.status(), e.code), (401, ErrorCode::Unauthorized));
        for ok in [&b"Bearer s3cret"[..], b"bearer  other ", b"BEARER s3cret"] {
            assert!(access.check(Route::Log, Some(ok)).is_ok(), "{ok:?}");
        }
        for bad in [
            &b"Bearer s3cre"[..],
            b"Bearer",
            b"Basic s3cret",
            b"Bearers3cret",
            b"",
        ] {
            assert!(access.check(Route::Log, Some(bad)).is_err(), "{bad:?}");
        }
        assert!(access.check(Route::Unmatched, None).is_err());
        assert!(access.check(Route::Health, None).is_err());
        // The bearer check alone, for any route: writes get no pass there.
        assert!(access.check_bearer(Some(b"Bearer s3cret")).is_ok());
        assert!(access.check_bearer(Some(b"Bearer nope")).is_err());
        assert!(access.check_bearer(None).is_err());
        let none = ReadAccess::from_token_file("# no tokens\n");
        assert!(
            none.check_bearer(Some(b"Bearer s3cret")).is_err(),
            "no token: refused"
        );
        let status = access.with_public_status(true);
        assert!(status.check(Route::Health, None).is_ok());
        assert!(status.check(Route::Metrics, None).is_ok());
        assert!(status.check(Route::Log, None).is_err());
    }

    #[test]
    fn no_token_means_public() {
        let access = ReadAccess::with_tokens(["", "  "]);
        assert!(!access.requires_token());
        assert!(access.status_is_public());
        assert!(access.check(Route::Log, None).is_ok());
    }

    #[test]
    fn limit_errors_have_their_status() {
        assert_eq!(rate_limited("author", 1).status(), 429);
        assert_eq!(rate_limited("author", 1).details["retry_after_ms"], 1);
        assert_eq!(retry_after_secs(1), 1);
        assert_eq!(retry_after_secs(1_001), 2);
        assert_eq!(retry_after_secs(0), 1);
        assert_eq!(request_timeout(5).status(), 408);
        assert_eq!(too_many_connections(5).status(), 503);
        assert_eq!(unauthorized("x").status(), 401);
    }
}
