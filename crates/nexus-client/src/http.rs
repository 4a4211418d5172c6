//! A blocking client for the v1 HTTP+JSON API (spec/api.md).
//!
//! Every route has a method returning a typed answer. Records in answers are verified
//! (hash and signature) before they are handed out, so a client never trusts the server
//! for authorship. Every error answer becomes [`ClientError::Api`] carrying the
//! server's [`ApiError`] (status, stable `code`, message and named details such as the
//! `holder` of an `already_claimed`).
//!
//! ```no_run
//! use nexus_client::{Client, KeyFile, builders};
//! use serde_json::json;
//!
//! let key = KeyFile::load_default()?;
//! let client = Client::new("http://127.0.0.1:7878")?;
//! let intent = builders::propose(key.key(), "chem/solubility", json!({"compound": "NaCl"}), &[])?;
//! client.submit(&intent)?;
//! // Actions are signed for the server's deployment (read once per client).
//! let deployment = client.deployment()?;
//! let lease = client.claim(&builders::claim(key.key(), &deployment, intent.hash(), 30_000)?)?;
//! let fact = builders::fact(key.key(), "chem/solubility", json!({"g_per_l": 360}),
//!                           &[intent.hash()], Some((intent.hash(), lease.token)))?;
//! client.submit(&fact)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use ureq::tls::{Certificate, RootCerts, TlsConfig};

use nexus_core::{
    Action, ActionContent, AuthorKey, Deployment, FihHash, Kind, Limits, Record, ValidationError,
};
use nexus_wire::body as wire;
use serde::de::DeserializeOwned;
use serde_json::Value;

pub use nexus_wire::{AnyErrorCode, ErrorCode};

/// Default timeout for each step of a request (connect, send, wait for the answer, read it).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Largest answer body read, in bytes (a full log page of large records fits).
pub const MAX_RESPONSE_BYTES: u64 = 256 << 20;

/// Entries asked for per `GET /v1/log` page by [`Client::log_pages`] (the server's maximum).
pub const LOG_PAGE_SIZE: u32 = 1_000;

/// An error answer of the server: `{"error":{"code","message",…details}}`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("HTTP {status} {code}: {message}")]
pub struct ApiError {
    /// HTTP status.
    pub status: u16,
    /// Stable machine-readable code (`already_claimed`, `unknown_parent`, …); a code
    /// this version does not know (from a newer server) is kept as
    /// [`AnyErrorCode::Unknown`].
    pub code: AnyErrorCode,
    /// For people.
    pub message: String,
    /// The other members of the error object (e.g. `holder`, `lease_until`, `token`
    /// for `already_claimed`; `parent` for `unknown_parent`), as a JSON object.
    pub details: Value,
}

impl ApiError {
    /// A detail member.
    pub fn detail(&self, name: &str) -> Option<&Value> {
        self.details.get(name)
    }

    /// `holder` of an `already_claimed`.
    pub fn holder(&self) -> Option<AuthorKey> {
        self.detail("holder")?.as_str()?.parse().ok()
    }

    /// `lease_until` of an `already_claimed`.
    pub fn lease_until(&self) -> Option<u64> {
        self.detail("lease_until")?.as_u64()
    }

    /// `token` of an `already_claimed`.
    pub fn token(&self) -> Option<u64> {
        self.detail("token")?.as_u64()
    }

    /// `parent` of an `unknown_parent`.
    pub fn parent(&self) -> Option<FihHash> {
        self.detail("parent")?.as_str()?.parse().ok()
    }
}

/// Why a request failed. Every variant names the method and URL.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The base URL is not an `http://` or `https://` URL.
    #[error("invalid server URL {url:?}: {reason}")]
    BadUrl {
        /// As given.
        url: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// No connection could be made (refused, host not found, connect timeout).
    #[error("cannot reach the neXus server at {url} ({method}): {source}")]
    Unreachable {
        /// HTTP method.
        method: &'static str,
        /// The full URL.
        url: String,
        /// The underlying error.
        #[source]
        source: Box<ureq::Error>,
    },
    /// The exchange failed after connecting (timeout, protocol error, reset).
    #[error("{method} {url}: {source}")]
    Transport {
        /// HTTP method.
        method: &'static str,
        /// The full URL.
        url: String,
        /// The underlying error.
        #[source]
        source: Box<ureq::Error>,
    },
    /// The server answered with an error.
    #[error("{method} {url}: {error}")]
    Api {
        /// HTTP method.
        method: &'static str,
        /// The full URL.
        url: String,
        /// The server's error.
        #[source]
        error: Box<ApiError>,
    },
    /// The answer is not what the API promises (not JSON, wrong shape, non-API error).
    #[error("{method} {url}: unexpected answer (HTTP {status}): {reason}")]
    Unexpected {
        /// HTTP method.
        method: &'static str,
        /// The full URL.
        url: String,
        /// HTTP status.
        status: u16,
        /// What is wrong, with the start of the body.
        reason: String,
    },
    /// A CA certificate to trust could not be used.
    #[error("invalid CA certificate: {reason}")]
    BadCaCert {
        /// What is wrong.
        reason: String,
    },
    /// A record or action in the answer does not verify.
    #[error("{method} {url}: the server sent an invalid record: {source}")]
    InvalidRecord {
        /// HTTP method.
        method: &'static str,
        /// The full URL.
        url: String,
        /// Why it does not verify.
        #[source]
        source: Box<ValidationError>,
    },
}

impl ClientError {
    /// The server's error, if it answered with one.
    pub fn api(&self) -> Option<&ApiError> {
        match self {
            ClientError::Api { error, .. } => Some(error),
            _ => None,
        }
    }

    /// The server's error code as sent, if it answered with one.
    pub fn code(&self) -> Option<&str> {
        self.api().map(|e| e.code.as_str())
    }

    /// The server's error code, if it answered with one this version knows.
    pub fn error_code(&self) -> Option<ErrorCode> {
        self.api().and_then(|e| e.code.known())
    }

    /// The HTTP status, if there was an answer.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { error, .. } => Some(error.status),
            ClientError::Unexpected { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// Answer to a record submission (`POST /v1/intents|facts|hints`).
pub type Submitted = wire::Created;

/// Answer to a claim or renewal (converts into a [`Lease`]).
pub type Leased = wire::LeaseBody;

/// Answer to a withdrawal.
pub type Withdrawn = wire::WithdrawnBody;
/// Answer to a retraction.
pub type Retracted = wire::RetractedBody;

/// What an action did ([`Client::act`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Acted {
    /// A claim, takeover or renewal.
    Leased(Leased),
    /// A withdrawal.
    Withdrawn(Withdrawn),
    /// A Hint's retraction.
    Retracted(Retracted),
}

/// One item of a batch ([`Client::batch`]): a signed record or a signed action.
#[derive(Debug, Clone, PartialEq)]
pub enum BatchItem {
    /// A Fact, Intent or Hint.
    Record(Record),
    /// A claim, renewal, withdrawal or retraction.
    Action(Action),
}

impl BatchItem {
    /// The item's wire form: `{"record": …}` or `{"action": …}`.
    pub fn to_value(&self) -> Value {
        match self {
            BatchItem::Record(r) => serde_json::json!({ "record": r.to_value() }),
            BatchItem::Action(a) => serde_json::json!({ "action": a.to_value() }),
        }
    }
}

impl From<Record> for BatchItem {
    fn from(r: Record) -> Self {
        BatchItem::Record(r)
    }
}

impl From<Action> for BatchItem {
    fn from(a: Action) -> Self {
        BatchItem::Action(a)
    }
}

/// What one batch item did: the answer of its own route.
pub type BatchResult = wire::BatchResult;

/// Filters of `GET /v1/intents`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IntentQuery {
    /// `available`, `claimed`, `resolved` or `withdrawn`.
    pub state: Option<String>,
    /// Topic (subtopics included).
    pub topic: Option<String>,
    /// Page size (server default 50, max 500).
    pub limit: Option<u32>,
    /// `next` of the previous page.
    pub cursor: Option<String>,
}

/// Filters of `GET /v1/facts`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FactQuery {
    /// Topic (subtopics included).
    pub topic: Option<String>,
    /// Inclusive lower bound on time, ms.
    pub since: Option<u64>,
    /// Exclusive upper bound on time, ms.
    pub until: Option<u64>,
    /// Page size (server default 50, max 500).
    pub limit: Option<u32>,
    /// `next` of the previous page.
    pub cursor: Option<String>,
}

/// One Intent of a listing (its record verified).
pub type IntentItem = wire::IntentItem;

/// A page of `GET /v1/intents`.
pub type IntentPage = wire::IntentList;

/// A page of `GET /v1/facts` (the Facts verified, oldest first).
pub type FactPage = wire::FactList;

/// `GET /v1/records/{id}` (the record verified).
pub type RecordInfo = wire::RecordBody;

/// `GET /v1/records/{id}/provenance` (the records verified).
pub type Provenance = wire::ProvenanceBody;

/// An active Hint (`GET /v1/hints`; the record verified, see
/// [`content`](wire::HintItem::content)).
pub type HintItem = wire::HintItem;

/// A page of `GET /v1/log`. Entries are kept as sent (`{"seq","at","record"|"action"}`)
/// so that an export is what the server sent;
/// [`verify_export`](crate::verify::verify_export) checks them.
pub type LogPage = wire::LogBody<Value>;

/// `GET /v1/health`.
pub type Health = wire::Health;

/// Percent-encodes everything but RFC 3986 unreserved characters.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

fn query(pairs: &[(&str, Option<String>)]) -> String {
    let mut q = String::new();
    for (name, value) in pairs {
        if let Some(v) = value {
            q.push(if q.is_empty() { '?' } else { '&' });
            q.push_str(name);
            q.push('=');
            q.push_str(&encode(v));
        }
    }
    q
}

fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut s: String = text.chars().take(200).collect();
    if text.chars().nth(200).is_some() {
        s.push('…');
    }
    s
}

/// The HTTP agent every neXus client uses: statuses are answers, not errors; keep-alive
/// connections; `timeout` bounds each step of a request (connect, send the request,
/// send the body, wait for the answer, read it).
///
/// The steps are bounded one by one rather than with ureq's whole-request timeout on
/// purpose: with that one set, ureq resolves the host name on a new thread for every
/// request (to be able to abandon a slow DNS lookup), which cost more CPU than the
/// rest of a request on loopback. Name lookups are then as slow as the system's own.
pub fn http_agent(timeout: Duration) -> ureq::Agent {
    http_agent_trusting(timeout, None)
}

/// [`http_agent`] that trusts, for `https://`, only the CA certificates `roots` (when
/// given) instead of the built-in public roots: for a server whose certificate a
/// private CA signed.
pub fn http_agent_trusting(
    timeout: Duration,
    roots: Option<&[Certificate<'static>]>,
) -> ureq::Agent {
    agent_with(timeout, roots, true)
}

/// The agent of [`http_agent_trusting`]; without a body timeout (for an event stream,
/// whose body never ends) when `body_timeout` is false.
fn agent_with(
    timeout: Duration,
    roots: Option<&[Certificate<'static>]>,
    body_timeout: bool,
) -> ureq::Agent {
    let step = Some(timeout);
    let tls = match roots {
        Some(certs) => TlsConfig::builder()
            .root_certs(RootCerts::new_with_certs(certs))
            .build(),
        None => TlsConfig::default(),
    };
    let config = ureq::Agent::config_builder()
        .tls_config(tls)
        .http_status_as_error(false)
        .timeout_connect(step)
        .timeout_send_request(step)
        .timeout_send_body(step)
        .timeout_recv_response(step)
        .timeout_recv_body(body_timeout.then_some(timeout))
        .user_agent(concat!("nexus-client/", env!("CARGO_PKG_VERSION")))
        .build();
    ureq::Agent::new_with_config(config)
}

/// A blocking client for one neXus server.
#[derive(Debug, Clone)]
pub struct Client {
    base: String,
    agent: ureq::Agent,
    limits: Limits,
    timeout: Duration,
    /// CA certificates trusted instead of the public roots.
    roots: Option<Arc<Vec<Certificate<'static>>>>,
    /// `Authorization` header value (`Bearer …`) sent with every request.
    authorization: Option<String>,
    /// The server's deployment id, once read ([`Client::deployment`]).
    deployment: Arc<std::sync::OnceLock<Deployment>>,
}

impl Client {
    /// A client for the server at `base_url` (`http://host:port` or `https://…`,
    /// optionally with a path prefix; a trailing `/` is ignored).
    pub fn new(base_url: &str) -> Result<Self, ClientError> {
        let base = base_url.trim_end_matches('/');
        let bad = |reason| ClientError::BadUrl {
            url: base_url.to_owned(),
            reason,
        };
        let rest = base
            .strip_prefix("http://")
            .or_else(|| base.strip_prefix("https://"))
            .ok_or_else(|| bad("it must start with http:// or https://"))?;
        if rest.is_empty() || rest.starts_with('/') {
            return Err(bad("it names no host"));
        }
        if base.contains(['?', '#']) || base.chars().any(char::is_whitespace) {
            return Err(bad("it must not contain a query, fragment or spaces"));
        }
        Ok(Self {
            base: base.to_owned(),
            agent: http_agent(DEFAULT_TIMEOUT),
            limits: Limits::default(),
            timeout: DEFAULT_TIMEOUT,
            roots: None,
            authorization: None,
            deployment: Arc::default(),
        })
    }

    fn rebuild_agent(&mut self) {
        self.agent = http_agent_trusting(self.timeout, self.roots.as_ref().map(|r| r.as_slice()));
    }

    /// Sets the timeout of each step of a request (default [`DEFAULT_TIMEOUT`]).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self.rebuild_agent();
        self
    }

    /// Trusts, for `https://`, only the CA certificates in `pem` (one or more PEM
    /// `CERTIFICATE` blocks) instead of the built-in public roots.
    pub fn with_ca_pem(mut self, pem: &[u8]) -> Result<Self, ClientError> {
        let bad = |reason: String| ClientError::BadCaCert { reason };
        let mut certs = Vec::new();
        for item in ureq::tls::parse_pem(pem) {
            match item.map_err(|e| bad(e.to_string()))? {
                ureq::tls::PemItem::Certificate(c) => certs.push(c),
                _ => continue, // keys and other blocks are not trust anchors
            }
        }
        if certs.is_empty() {
            return Err(bad("no PEM CERTIFICATE block".into()));
        }
        self.roots = Some(Arc::new(certs));
        self.rebuild_agent();
        Ok(self)
    }

    /// Sends `Authorization: Bearer <token>` with every request (a server whose reads
    /// need a token answers `401 unauthorized` without it).
    pub fn with_bearer_token(mut self, token: &str) -> Self {
        self.authorization = Some(format!("Bearer {}", token.trim()));
        self
    }

    /// Sets the limits records in answers are verified against (default: the
    /// defaults every host uses; set the server's own if it was configured otherwise).
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// The base URL, without a trailing `/`.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// The request timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    // ---- raw requests ----

    /// Sends a request; answers 2xx with the status and body, anything else as an
    /// error (an [`ApiError`] when the body has the API's error shape).
    fn exchange(
        &self,
        method: &'static str,
        path: &str,
        body: Option<&[u8]>,
    ) -> Result<(u16, Vec<u8>), ClientError> {
        let url = format!("{}{}", self.base, path);
        let (status, bytes) = self.send(method, &url, body)?;
        answer(method, url, status, bytes)
    }

    /// Sends a request to `url`; answers any status with its body.
    fn send(
        &self,
        method: &'static str,
        url: &str,
        body: Option<&[u8]>,
    ) -> Result<(u16, Vec<u8>), ClientError> {
        let auth = self.authorization.as_deref();
        let result = match body {
            Some(bytes) => {
                let mut req = self
                    .agent
                    .post(url)
                    .header("content-type", "application/json");
                if let Some(a) = auth {
                    req = req.header("authorization", a);
                }
                req.send(bytes)
            }
            None => {
                let mut req = self.agent.get(url);
                if let Some(a) = auth {
                    req = req.header("authorization", a);
                }
                req.call()
            }
        };
        let mut response = result.map_err(|e| transport(method, url, e))?;
        let status = response.status().as_u16();
        let bytes = response
            .body_mut()
            .with_config()
            .limit(MAX_RESPONSE_BYTES)
            .read_to_vec()
            .map_err(|e| transport(method, url, e))?;
        Ok((status, bytes))
    }

    fn decode<T: DeserializeOwned>(
        &self,
        method: &'static str,
        path: &str,
        body: Option<&[u8]>,
    ) -> Result<T, ClientError> {
        let (status, bytes) = self.exchange(method, path, body)?;
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Unexpected {
            method,
            url: format!("{}{}", self.base, path),
            status,
            reason: format!("{e}: {}", snippet(&bytes)),
        })
    }

    fn verify(&self, method: &'static str, path: &str, v: Value) -> Result<Record, ClientError> {
        Record::from_value(v, &self.limits).map_err(|source| ClientError::InvalidRecord {
            method,
            url: format!("{}{}", self.base, path),
            source: Box::new(source),
        })
    }

    /// `GET path` (with its query), answering the status and JSON body of a 2xx; for
    /// routes or parameters the typed methods do not cover, and for tests.
    pub fn get_json(&self, path: &str) -> Result<(u16, Value), ClientError> {
        self.decode_with_status("GET", path, None)
    }

    /// `POST path` with `body` as `application/json` (sent as given, valid or not),
    /// answering the status and JSON body of a 2xx.
    pub fn post_json(&self, path: &str, body: &[u8]) -> Result<(u16, Value), ClientError> {
        self.decode_with_status("POST", path, Some(body))
    }

    fn decode_with_status(
        &self,
        method: &'static str,
        path: &str,
        body: Option<&[u8]>,
    ) -> Result<(u16, Value), ClientError> {
        let (status, bytes) = self.exchange(method, path, body)?;
        let v = serde_json::from_slice(&bytes).map_err(|e| ClientError::Unexpected {
            method,
            url: format!("{}{}", self.base, path),
            status,
            reason: format!("{e}: {}", snippet(&bytes)),
        })?;
        Ok((status, v))
    }

    // ---- writes ----

    /// Submits a record to the route of its kind (`/v1/intents`, `/v1/facts`,
    /// `/v1/hints`).
    pub fn submit(&self, record: &Record) -> Result<Submitted, ClientError> {
        let path = match record.content().kind() {
            Kind::Intent => "/v1/intents",
            Kind::Fact => "/v1/facts",
            Kind::Hint => "/v1/hints",
        };
        self.decode("POST", path, Some(&record.to_json()))
    }

    /// `POST /v1/intents` (whatever the record's kind: the server checks).
    pub fn submit_intent(&self, record: &Record) -> Result<Submitted, ClientError> {
        self.decode("POST", "/v1/intents", Some(&record.to_json()))
    }

    /// `POST /v1/facts` (a Fact with `resolves` resolves its Intent atomically).
    pub fn submit_fact(&self, record: &Record) -> Result<Submitted, ClientError> {
        self.decode("POST", "/v1/facts", Some(&record.to_json()))
    }

    /// `POST /v1/hints`.
    pub fn submit_hint(&self, record: &Record) -> Result<Submitted, ClientError> {
        self.decode("POST", "/v1/hints", Some(&record.to_json()))
    }

    fn action_path(action: &Action, verb: &str) -> String {
        let on = match action.content() {
            ActionContent::Retract { .. } => "hints",
            _ => "intents",
        };
        format!("/v1/{on}/{}/{verb}", action.content().target())
    }

    /// Sends an action to the route of its kind.
    pub fn act(&self, action: &Action) -> Result<Acted, ClientError> {
        match action.content() {
            ActionContent::Claim { .. } => self.claim(action).map(Acted::Leased),
            ActionContent::Renew { .. } => self.renew(action).map(Acted::Leased),
            ActionContent::Withdraw { .. } => self.withdraw(action).map(Acted::Withdrawn),
            ActionContent::Retract { .. } => self.retract(action).map(Acted::Retracted),
        }
    }

    /// `POST /v1/hints/{hint}/retract`.
    pub fn retract(&self, action: &Action) -> Result<Retracted, ClientError> {
        let path = Self::action_path(action, "retract");
        self.decode("POST", &path, Some(&action.to_json()))
    }

    /// `POST /v1/intents/{intent}/claim`.
    pub fn claim(&self, action: &Action) -> Result<Leased, ClientError> {
        let path = Self::action_path(action, "claim");
        self.decode("POST", &path, Some(&action.to_json()))
    }

    /// `POST /v1/intents/{intent}/renew`.
    pub fn renew(&self, action: &Action) -> Result<Leased, ClientError> {
        let path = Self::action_path(action, "renew");
        self.decode("POST", &path, Some(&action.to_json()))
    }

    /// `POST /v1/intents/{intent}/withdraw`.
    pub fn withdraw(&self, action: &Action) -> Result<Withdrawn, ClientError> {
        let path = Self::action_path(action, "withdraw");
        self.decode("POST", &path, Some(&action.to_json()))
    }

    /// `POST /v1/batch`: commits every item, in order, in one atomic commit (each item
    /// sees what the ones before it did), answering each item's result; or, if any
    /// item fails, nothing, with that item's error (its index is the error's `item`
    /// detail, see [`ApiError::detail`]). At most 64 items.
    pub fn batch(&self, items: &[BatchItem]) -> Result<Vec<BatchResult>, ClientError> {
        let body = serde_json::json!({
            "items": items.iter().map(BatchItem::to_value).collect::<Vec<_>>()
        });
        let answer: wire::BatchBody = self.decode(
            "POST",
            "/v1/batch",
            Some(&serde_json::to_vec(&body).unwrap_or_default()),
        )?;
        Ok(answer.results)
    }

    // ---- reads ----

    /// `GET /v1/intents` (one page).
    pub fn intents(&self, q: &IntentQuery) -> Result<IntentPage, ClientError> {
        let path = format!(
            "/v1/intents{}",
            query(&[
                ("state", q.state.clone()),
                ("topic", q.topic.clone()),
                ("limit", q.limit.map(|l| l.to_string())),
                ("cursor", q.cursor.clone()),
            ])
        );
        let raw: wire::IntentList<Value> = self.decode("GET", &path, None)?;
        let intents = raw
            .intents
            .into_iter()
            .map(|i| {
                Ok(IntentItem {
                    record: self.verify("GET", &path, i.record)?,
                    state: i.state,
                    priority: i.priority,
                })
            })
            .collect::<Result<_, ClientError>>()?;
        Ok(IntentPage {
            intents,
            next: raw.next,
        })
    }

    /// `GET /v1/intents/{id}`: one Intent and its state (`id`: a full hash or a prefix
    /// of at least 8 hex digits).
    pub fn intent(&self, id: &str) -> Result<IntentItem, ClientError> {
        let path = format!("/v1/intents/{}", encode(id));
        let raw: wire::IntentItem<Value> = self.decode("GET", &path, None)?;
        Ok(IntentItem {
            record: self.verify("GET", &path, raw.record)?,
            state: raw.state,
            priority: raw.priority,
        })
    }

    /// `GET /v1/facts` (one page).
    pub fn facts(&self, q: &FactQuery) -> Result<FactPage, ClientError> {
        let path = format!(
            "/v1/facts{}",
            query(&[
                ("topic", q.topic.clone()),
                ("since", q.since.map(|v| v.to_string())),
                ("until", q.until.map(|v| v.to_string())),
                ("limit", q.limit.map(|l| l.to_string())),
                ("cursor", q.cursor.clone()),
            ])
        );
        let raw: wire::FactList<Value> = self.decode("GET", &path, None)?;
        let facts = raw
            .facts
            .into_iter()
            .map(|f| self.verify("GET", &path, f))
            .collect::<Result<_, _>>()?;
        Ok(FactPage {
            facts,
            next: raw.next,
        })
    }

    /// Every Intent matching `q`, following `next` cursors page by page (from
    /// `q.cursor`, pages of `q.limit`). Stops after the first error.
    pub fn all_intents(
        &self,
        q: &IntentQuery,
    ) -> impl Iterator<Item = Result<IntentItem, ClientError>> + '_ {
        let mut q = q.clone();
        paged(move || {
            let page = self.intents(&q)?;
            let next = advance(&mut q.cursor, page.next, "/v1/intents", &self.base)?;
            Ok((page.intents, next))
        })
    }

    /// Every Fact matching `q`, following `next` cursors page by page.
    pub fn all_facts(
        &self,
        q: &FactQuery,
    ) -> impl Iterator<Item = Result<Record, ClientError>> + '_ {
        let mut q = q.clone();
        paged(move || {
            let page = self.facts(&q)?;
            let next = advance(&mut q.cursor, page.next, "/v1/facts", &self.base)?;
            Ok((page.facts, next))
        })
    }

    /// `GET /v1/records/{id}` (`id`: a full hash or a prefix of at least 8 hex digits).
    pub fn record(&self, id: &str) -> Result<RecordInfo, ClientError> {
        let path = format!("/v1/records/{}", encode(id));
        let raw: wire::RecordBody<Value> = self.decode("GET", &path, None)?;
        Ok(RecordInfo {
            record: self.verify("GET", &path, raw.record)?,
            kind: raw.kind,
            parents: raw.parents,
        })
    }

    /// `GET /v1/records/{id}/provenance?depth=`.
    pub fn provenance(&self, id: &str, depth: Option<u32>) -> Result<Provenance, ClientError> {
        let path = format!(
            "/v1/records/{}/provenance{}",
            encode(id),
            query(&[("depth", depth.map(|d| d.to_string()))])
        );
        let raw: wire::ProvenanceBody<Value> = self.decode("GET", &path, None)?;
        let records = raw
            .records
            .into_iter()
            .map(|r| self.verify("GET", &path, r))
            .collect::<Result<_, _>>()?;
        Ok(Provenance {
            root: raw.root,
            records,
        })
    }

    /// `GET /v1/hints`: the Hints in force.
    pub fn hints(&self) -> Result<Vec<HintItem>, ClientError> {
        let path = "/v1/hints";
        let raw: wire::HintList<Value> = self.decode("GET", path, None)?;
        raw.hints
            .into_iter()
            .map(|h| {
                let record = self.verify("GET", path, h.hint)?;
                if record.hash() != h.hash || record.content().kind() != Kind::Hint {
                    return Err(ClientError::Unexpected {
                        method: "GET",
                        url: format!("{}{path}", self.base),
                        status: 200,
                        reason: format!("hint {} is not the Hint record it lists", h.hash),
                    });
                }
                Ok(HintItem {
                    hash: h.hash,
                    hint: record,
                })
            })
            .collect()
    }

    /// `GET /v1/log?from=&limit=`: one page of the commit log from `from` (inclusive,
    /// the first entry is 1).
    pub fn log(&self, from: u64, limit: Option<u32>) -> Result<LogPage, ClientError> {
        let path = format!(
            "/v1/log{}",
            query(&[
                ("from", Some(from.to_string())),
                ("limit", limit.map(|l| l.to_string())),
            ])
        );
        self.decode("GET", &path, None)
    }

    /// The commit log from `from` on, page by page, until the head the server reports
    /// (pages of [`LOG_PAGE_SIZE`]).
    pub fn log_pages(&self, from: u64) -> LogPages<'_> {
        LogPages {
            client: self,
            next: from.max(1),
            done: false,
        }
    }

    /// The commit log from `from` on, entry by entry: feed it to
    /// [`export_to`](crate::verify::export_to) to write an export.
    pub fn log_entries(&self, from: u64) -> impl Iterator<Item = Result<Value, ClientError>> + '_ {
        self.log_pages(from).flat_map(|page| {
            let (ok, err) = match page {
                Ok(p) => (p.entries, None),
                Err(e) => (vec![], Some(e)),
            };
            ok.into_iter().map(Ok).chain(err.map(Err))
        })
    }

    /// Writes the commit log from `from` on to `writer` as an export (JSON lines, see
    /// [`verify`](crate::verify)); returns how many entries were written.
    pub fn export<W: std::io::Write>(
        &self,
        from: u64,
        writer: W,
    ) -> Result<u64, crate::verify::ExportError<ClientError>> {
        crate::verify::export_to(writer, self.log_entries(from))
    }

    /// `GET /v1/health`. A degraded server (`503` with a health body, which still names
    /// the log head: its disk is full, reads go on) answers `Ok` with
    /// `status: "degraded"` (see [`Health::is_ok`]); any other failure is an error.
    pub fn health(&self) -> Result<Health, ClientError> {
        let url = format!("{}/v1/health", self.base);
        let (status, bytes) = self.send("GET", &url, None)?;
        if status == 503
            && let Ok(health) = serde_json::from_slice::<Health>(&bytes)
        {
            return Ok(health);
        }
        let (status, bytes) = answer("GET", url.clone(), status, bytes)?;
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Unexpected {
            method: "GET",
            url,
            status,
            reason: format!("{e}: {}", snippet(&bytes)),
        })
    }

    /// The server's deployment id (from `GET /v1/health`, read once per client and its
    /// clones): what the actions sent to it must be signed for
    /// ([`builders::claim`](crate::builders::claim) and the others).
    pub fn deployment(&self) -> Result<Deployment, ClientError> {
        if let Some(d) = self.deployment.get() {
            return Ok(d.clone());
        }
        let url = format!("{}/v1/health", self.base);
        let health = self.health()?;
        let d = health
            .deployment
            .as_deref()
            .and_then(|d| d.parse::<Deployment>().ok())
            .ok_or_else(|| ClientError::Unexpected {
                method: "GET",
                url,
                status: 200,
                reason: "the answer names no valid deployment id (a server older than wire \
                         format v2?)"
                    .to_owned(),
            })?;
        Ok(self.deployment.get_or_init(|| d).clone())
    }

    /// `GET /metrics` (Prometheus text).
    pub fn metrics(&self) -> Result<String, ClientError> {
        let (_, bytes) = self.exchange("GET", "/metrics", None)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// `GET /v1/openapi.json`.
    pub fn openapi(&self) -> Result<Value, ClientError> {
        self.decode("GET", "/v1/openapi.json", None)
    }
}

/// Pages of the commit log ([`Client::log_pages`]). Stops after the page that reaches
/// the head the server reported, on an empty page, or after an error.
#[derive(Debug)]
pub struct LogPages<'a> {
    client: &'a Client,
    next: u64,
    done: bool,
}

impl Iterator for LogPages<'_> {
    type Item = Result<LogPage, ClientError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let page = match self.client.log(self.next, Some(LOG_PAGE_SIZE)) {
            Ok(p) => p,
            Err(e) => {
                self.done = true;
                return Some(Err(e));
            }
        };
        let last = page
            .entries
            .last()
            .and_then(|e| e.get("seq"))
            .and_then(Value::as_u64);
        match last {
            Some(seq) if seq >= self.next => {
                self.next = seq + 1;
                if seq >= page.head {
                    self.done = true;
                }
                Some(Ok(page))
            }
            Some(seq) => {
                self.done = true;
                Some(Err(ClientError::Unexpected {
                    method: "GET",
                    url: format!("{}/v1/log?from={}", self.client.base, self.next),
                    status: 200,
                    reason: format!("the page ends at seq {seq}, before `from`"),
                }))
            }
            None if page.entries.is_empty() => {
                self.done = true;
                None
            }
            None => {
                self.done = true;
                Some(Err(ClientError::Unexpected {
                    method: "GET",
                    url: format!("{}/v1/log?from={}", self.client.base, self.next),
                    status: 200,
                    reason: "the last entry has no integer `seq`".into(),
                }))
            }
        }
    }
}

/// Moves `cursor` to `next`; `Ok(false)` when there is no next page. A server that
/// hands back the cursor it was given would loop forever: that is an error.
fn advance(
    cursor: &mut Option<String>,
    next: Option<String>,
    path: &str,
    base: &str,
) -> Result<bool, ClientError> {
    match next {
        None => Ok(false),
        Some(n) if cursor.as_ref() == Some(&n) => Err(ClientError::Unexpected {
            method: "GET",
            url: format!("{base}{path}"),
            status: 200,
            reason: format!("the server returned the same cursor {n:?} again"),
        }),
        Some(n) => {
            *cursor = Some(n);
            Ok(true)
        }
    }
}

/// Flattens pages: `fetch` answers a page's items and whether another page follows.
fn paged<T>(
    mut fetch: impl FnMut() -> Result<(Vec<T>, bool), ClientError>,
) -> impl Iterator<Item = Result<T, ClientError>> {
    let mut buffer = std::collections::VecDeque::new();
    let mut more = true;
    std::iter::from_fn(move || {
        loop {
            if let Some(item) = buffer.pop_front() {
                return Some(Ok(item));
            }
            if !more {
                return None;
            }
            match fetch() {
                Ok((items, next)) => {
                    buffer.extend(items);
                    more = next;
                }
                Err(e) => {
                    more = false;
                    return Some(Err(e));
                }
            }
        }
    })
}

fn transport(method: &'static str, url: &str, e: ureq::Error) -> ClientError {
    let unreachable = match &e {
        ureq::Error::ConnectionFailed | ureq::Error::HostNotFound => true,
        ureq::Error::Timeout(t) => matches!(t, ureq::Timeout::Connect | ureq::Timeout::Resolve),
        ureq::Error::Io(io) => matches!(
            io.kind(),
            std::io::ErrorKind::ConnectionRefused
                | std::io::ErrorKind::AddrNotAvailable
                | std::io::ErrorKind::HostUnreachable
                | std::io::ErrorKind::NetworkUnreachable
        ),
        _ => false,
    };
    let (method, url, source) = (method, url.to_owned(), Box::new(e));
    if unreachable {
        ClientError::Unreachable {
            method,
            url,
            source,
        }
    } else {
        ClientError::Transport {
            method,
            url,
            source,
        }
    }
}

/// How a [`Client::events_with`] stream deals with silence and broken connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventOptions {
    /// Silence (not even a heartbeat) after which the connection counts as dead.
    /// Default: three heartbeat intervals ([`nexus_wire::HEARTBEAT_SECS`]).
    pub idle_timeout: Duration,
    /// How long to keep trying to reconnect after a break before the stream gives up
    /// with the error; `None`: never reconnect, the stream ends at the first break.
    /// Default: 30 s.
    pub reconnect_for: Option<Duration>,
}

impl Default for EventOptions {
    fn default() -> Self {
        Self {
            idle_timeout: Duration::from_secs(3 * nexus_wire::HEARTBEAT_SECS),
            reconnect_for: Some(Duration::from_secs(30)),
        }
    }
}

/// Pauses between reconnection attempts: the first, doubled up to the last.
const RECONNECT_BACKOFF: (Duration, Duration) =
    (Duration::from_millis(100), Duration::from_secs(5));

/// The entries of a `GET /v1/events` stream ([`Client::events`]), in log order, as
/// `GET /v1/log` gives them. Blocks until the next one commits; heartbeats are
/// skipped. When the connection breaks, or sends nothing (not even a heartbeat) for
/// [`EventOptions::idle_timeout`], it reconnects from the entry after the last one it
/// gave, so every entry comes once, in order; it ends with the error once it could not
/// reconnect for [`EventOptions::reconnect_for`] (at once without reconnection, when
/// [`EventStream::last_seq`] + 1 is where to resume).
pub struct EventStream {
    client: Client,
    from: u64,
    topic: Option<String>,
    options: EventOptions,
    lines: Option<Box<dyn std::io::BufRead + Send>>,
    url: String,
    last_seq: Option<u64>,
    connections: u32,
    done: bool,
}

impl std::fmt::Debug for EventStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventStream")
            .field("url", &self.url)
            .field("last_seq", &self.last_seq)
            .field("connections", &self.connections)
            .finish_non_exhaustive()
    }
}

impl EventStream {
    /// The `seq` of the last entry this stream gave.
    pub fn last_seq(&self) -> Option<u64> {
        self.last_seq
    }

    /// How many connections the stream made (1 + reconnections).
    pub fn connections(&self) -> u32 {
        self.connections
    }

    /// The entry the next connection starts at.
    fn resume_at(&self) -> u64 {
        self.last_seq.map_or(self.from, |s| s + 1)
    }

    /// Opens a connection from [`Self::resume_at`].
    fn open(&mut self) -> Result<(), ClientError> {
        let path = format!(
            "/v1/events{}",
            query(&[
                ("from", Some(self.resume_at().to_string())),
                ("topic", self.topic.clone()),
            ])
        );
        let c = &self.client;
        let url = format!("{}{}", c.base, path);
        self.url.clone_from(&url);
        let agent = agent_with(c.timeout, c.roots.as_ref().map(|r| r.as_slice()), false);
        let mut req = agent
            .get(&url)
            .header("accept", "text/event-stream")
            .config()
            .timeout_per_read(Some(self.options.idle_timeout))
            .build();
        if let Some(a) = &c.authorization {
            req = req.header("authorization", a);
        }
        let response = req.call().map_err(|e| transport("GET", &url, e))?;
        let status = response.status().as_u16();
        if status != 200 {
            let mut response = response;
            let bytes = response
                .body_mut()
                .with_config()
                .limit(MAX_RESPONSE_BYTES)
                .read_to_vec()
                .map_err(|e| transport("GET", &url, e))?;
            answer("GET", url.clone(), status, bytes)?;
            return Err(ClientError::Unexpected {
                method: "GET",
                url,
                status,
                reason: "not an event stream".into(),
            });
        }
        let reader = response.into_body().into_reader();
        self.lines = Some(Box::new(std::io::BufReader::new(reader)));
        self.connections += 1;
        Ok(())
    }

    /// Reconnects after a break, retrying until [`EventOptions::reconnect_for`] has
    /// passed; a refusal by the API (an answer other than a busy one) is final.
    fn reconnect(&mut self) -> Result<(), ClientError> {
        let Some(window) = self.options.reconnect_for else {
            return Err(ClientError::Unexpected {
                method: "GET",
                url: self.url.clone(),
                status: 200,
                reason: "the event stream broke".into(),
            });
        };
        let deadline = std::time::Instant::now() + window;
        let mut pause = RECONNECT_BACKOFF.0;
        loop {
            match self.open() {
                Ok(()) => return Ok(()),
                Err(e) => {
                    let busy = matches!(e.status(), Some(429 | 503));
                    if (e.api().is_some() && !busy) || std::time::Instant::now() >= deadline {
                        return Err(e);
                    }
                }
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(RECONNECT_BACKOFF.1);
        }
    }

    /// The next line, reconnecting as needed: `Ok(None)` at the end of a stream that
    /// does not reconnect.
    fn line(&mut self, line: &mut String) -> Result<Option<()>, ClientError> {
        loop {
            let Some(lines) = self.lines.as_mut() else {
                self.reconnect()?;
                continue;
            };
            line.clear();
            let broke = match lines.read_line(line) {
                Ok(0) => None,
                Ok(_) => return Ok(Some(())),
                Err(e) => Some(e),
            };
            self.lines = None;
            if self.options.reconnect_for.is_none() {
                return match broke {
                    None => Ok(None),
                    Some(e) => Err(ClientError::Transport {
                        method: "GET",
                        url: self.url.clone(),
                        source: Box::new(ureq::Error::Io(e)),
                    }),
                };
            }
        }
    }
}

impl Iterator for EventStream {
    type Item = Result<Value, ClientError>;

    fn next(&mut self) -> Option<Self::Item> {
        let mut data = String::new();
        let mut event = String::new();
        let mut line = String::new();
        let mut connection = self.connections;
        loop {
            if self.done {
                return None;
            }
            match self.line(&mut line) {
                Ok(Some(())) => {}
                Ok(None) => {
                    self.done = true;
                    return None;
                }
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            }
            if self.connections != connection {
                // A new connection: an event the old one cut short is dropped.
                connection = self.connections;
                data.clear();
                event.clear();
            }
            let line = line.trim_end_matches(['\r', '\n']);
            if line.is_empty() {
                if data.is_empty() {
                    continue; // a comment (heartbeat) or `retry:` block ended
                }
                let parsed = serde_json::from_str::<Value>(&data);
                let is_error = event == "error";
                data.clear();
                event.clear();
                let v = match parsed {
                    Ok(v) => v,
                    Err(e) => {
                        return Some(Err(ClientError::Unexpected {
                            method: "GET",
                            url: self.url.clone(),
                            status: 200,
                            reason: format!("an event that is not JSON: {e}"),
                        }));
                    }
                };
                if is_error {
                    // The server's own failure ends the stream: it would happen again.
                    self.done = true;
                    let error = api_error(500, v.to_string().as_bytes());
                    return Some(Err(match error {
                        Some(error) => ClientError::Api {
                            method: "GET",
                            url: self.url.clone(),
                            error: Box::new(error),
                        },
                        None => ClientError::Unexpected {
                            method: "GET",
                            url: self.url.clone(),
                            status: 200,
                            reason: format!("the stream failed: {v}"),
                        },
                    }));
                }
                self.last_seq = v.get("seq").and_then(Value::as_u64).or(self.last_seq);
                return Some(Ok(v));
            }
            if let Some(d) = line.strip_prefix("data:") {
                if !data.is_empty() {
                    data.push('\n');
                }
                data.push_str(d.strip_prefix(' ').unwrap_or(d));
            } else if let Some(e) = line.strip_prefix("event:") {
                event = e.trim().to_owned();
            }
            // `id:`, `retry:` and comments need nothing here.
        }
    }
}

impl Client {
    /// `GET /v1/events?from={from}[&topic={topic}]`: the log from `from`, then each
    /// entry as it commits (spec/api.md, "Live events"), with the default
    /// [`EventOptions`]: a connection silent for three heartbeat intervals counts as
    /// dead, and a dead or broken one is reopened after the last entry given.
    /// Connecting and the first answer use the client's timeout; a refusal (a bad
    /// topic, no read token) is the error of this call.
    pub fn events(&self, from: u64, topic: Option<&str>) -> Result<EventStream, ClientError> {
        self.events_with(from, topic, EventOptions::default())
    }

    /// [`Client::events`] with other [`EventOptions`].
    pub fn events_with(
        &self,
        from: u64,
        topic: Option<&str>,
        options: EventOptions,
    ) -> Result<EventStream, ClientError> {
        let mut stream = EventStream {
            client: self.clone(),
            from,
            topic: topic.map(str::to_owned),
            options,
            lines: None,
            url: String::new(),
            last_seq: None,
            connections: 0,
            done: false,
        };
        stream.open()?;
        Ok(stream)
    }
}

/// A 2xx answer's status and body; anything else as an error (an [`ApiError`] when
/// the body has the API's error shape).
fn answer(
    method: &'static str,
    url: String,
    status: u16,
    bytes: Vec<u8>,
) -> Result<(u16, Vec<u8>), ClientError> {
    if (200..300).contains(&status) {
        return Ok((status, bytes));
    }
    Err(match api_error(status, &bytes) {
        Some(error) => ClientError::Api {
            method,
            url,
            error: Box::new(error),
        },
        None => ClientError::Unexpected {
            method,
            url,
            status,
            reason: format!("not an API error body: {}", snippet(&bytes)),
        },
    })
}

fn api_error(status: u16, body: &[u8]) -> Option<ApiError> {
    let wire::ErrorBody { error } =
        serde_json::from_slice::<wire::ErrorBody<AnyErrorCode>>(body).ok()?;
    Some(ApiError {
        status,
        code: error.code,
        message: error.message,
        details: Value::Object(error.details),
    })
}

#[cfg(test)]
mod tests;
