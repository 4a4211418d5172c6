//! Records (Fact, Intent, Hint), signed lifecycle actions, and their validation.
//!
//! Wire form: one JSON object per record, tagged by `kind`, carrying `hash` (the
//! FihHash of everything else, canonically encoded) and `sig` (the author's signature
//! over that hash). Unknown fields are refused, so that nothing can ride along unhashed.
//!
//! ```json
//! {"kind":"fact","topic":"chem/solubility","body":{"ok":true},"parents":["…"],
//!  "resolves":{"intent":"…","token":1},"author":"…","time":1764000000000,
//!  "hash":"…","sig":"…"}
//! ```

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use crate::canonical::{self, CanonicalError, MAX_SAFE_INTEGER, write_i53, write_str};
use crate::crypto::{AuthorKey, FihHash, ParseError, Signature, SigningKey};

/// Most `/`-separated segments a topic may have.
pub const MAX_TOPIC_DEPTH: usize = 16;
/// Longest topic, in bytes.
pub const MAX_TOPIC_BYTES: usize = 256;

/// Configurable bounds on what a record or action may carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest canonical body, in bytes.
    pub max_body_bytes: usize,
    /// Most parents per record (and source Facts per Hint).
    pub max_parents: usize,
    /// Deepest nesting of arrays/objects in a body.
    pub max_json_depth: usize,
    /// Longest Hint reason, in bytes.
    pub max_reason_bytes: usize,
    /// Largest Hint selector (the canonical `selector` object: topic glob and body
    /// members), in bytes. Every active Hint's selector is matched against every
    /// proposal, so this bounds the work a Hint can put on each write.
    pub max_selector_bytes: usize,
    /// Shortest lease a claim or renewal may ask for, in ms.
    pub min_lease_ms: u64,
    /// Longest lease a claim or renewal may ask for, in ms.
    pub max_lease_ms: u64,
    /// How far an action's `time` may be from the host's clock, in ms (bounds replays).
    pub max_clock_skew_ms: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 64 * 1024,
            max_parents: 64,
            max_json_depth: 32,
            max_reason_bytes: 1024,
            max_selector_bytes: 4096,
            min_lease_ms: 1_000,
            max_lease_ms: 3_600_000,
            max_clock_skew_ms: 300_000,
        }
    }
}

/// Why a record or action is malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ValidationError {
    /// The JSON does not have the record's shape.
    #[error("malformed record: {0}")]
    Malformed(String),
    /// A topic or topic glob is not well formed.
    #[error("invalid topic {topic:?}: {reason}")]
    Topic {
        /// The topic as given (truncated).
        topic: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// A value has no canonical encoding (float, out-of-range integer, too deep).
    #[error("{field}: {source}")]
    Canonical {
        /// Which field.
        field: &'static str,
        /// Why.
        source: CanonicalError,
    },
    /// The body is larger than allowed.
    #[error("body is {size} bytes canonically encoded; the limit is {limit}")]
    BodyTooLarge {
        /// Canonical size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// Too many parents (or source Facts).
    #[error("{count} parents; the limit is {limit}")]
    TooManyParents {
        /// How many were given.
        count: usize,
        /// The limit.
        limit: usize,
    },
    /// The same parent twice.
    #[error("parent {0} is listed twice")]
    DuplicateParent(FihHash),
    /// A number field (time, token, lease, priority) outside its range.
    #[error("{field} = {value} is out of range ({range})")]
    OutOfRange {
        /// Which field.
        field: &'static str,
        /// The value given.
        value: i128,
        /// The allowed range, in words.
        range: String,
    },
    /// A Hint's reason is empty or too long.
    #[error("hint reason must be 1..={limit} bytes, got {len}")]
    Reason {
        /// Its length.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// A Hint's selector is larger than allowed, canonically encoded.
    #[error("hint selector is {size} bytes canonically encoded; the limit is {limit}")]
    SelectorTooLarge {
        /// Canonical size of the `selector` object.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The stated hash is not the hash of the content.
    #[error("hash mismatch: the record says {stated} but its content hashes to {computed}")]
    HashMismatch {
        /// The `hash` field.
        stated: FihHash,
        /// What the content hashes to.
        computed: FihHash,
    },
    /// The signature does not verify under the author key.
    #[error("signature does not verify for author {author} over hash {hash}")]
    BadSignature {
        /// The claimed author.
        author: AuthorKey,
        /// The record's hash.
        hash: FihHash,
    },
}

fn check_segment(seg: &str, glob: bool) -> Result<(), &'static str> {
    if seg.is_empty() {
        return Err("empty segment (leading, trailing or doubled '/')");
    }
    if glob && (seg == "*" || seg == "**") {
        return Ok(());
    }
    if seg == "." || seg == ".." {
        return Err("'.' and '..' are not segments");
    }
    if !seg
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-_.~:+=,".contains(&b))
    {
        return Err("segments use only ASCII letters, digits and - _ . ~ : + = ,");
    }
    Ok(())
}

fn check_topic_text(s: &str, glob: bool) -> Result<(), ValidationError> {
    let err = |reason| ValidationError::Topic {
        topic: s.chars().take(80).collect(),
        reason,
    };
    if s.is_empty() {
        return Err(err("empty topic"));
    }
    if s.len() > MAX_TOPIC_BYTES {
        return Err(err("longer than 256 bytes"));
    }
    let segs: Vec<&str> = s.split('/').collect();
    if segs.len() > MAX_TOPIC_DEPTH {
        return Err(err("more than 16 segments"));
    }
    for (i, seg) in segs.iter().enumerate() {
        check_segment(seg, glob).map_err(err)?;
        if glob && *seg == "**" && i + 1 != segs.len() {
            return Err(err("'**' may only be the last segment"));
        }
    }
    Ok(())
}

/// A `/`-separated topic path: 1..=16 non-empty segments of `[A-Za-z0-9-_.~:+=,]`,
/// at most 256 bytes.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Topic(String);

impl Topic {
    /// The topic text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The topic and every topic above it, shortest first: `a/b/c` gives `a`, `a/b`,
    /// `a/b/c`.
    pub fn self_and_ancestors(&self) -> impl Iterator<Item = Topic> + '_ {
        self.0
            .match_indices('/')
            .map(|(i, _)| i)
            .chain(std::iter::once(self.0.len()))
            .map(|end| Topic(self.0[..end].to_owned()))
    }

    /// True when `self` equals `prefix` or lies under it (segment-wise).
    pub fn starts_with(&self, prefix: &Topic) -> bool {
        self.0 == prefix.0
            || (self.0.starts_with(&prefix.0)
                && self.0.as_bytes().get(prefix.0.len()) == Some(&b'/'))
    }
}

impl FromStr for Topic {
    type Err = ValidationError;
    fn from_str(s: &str) -> Result<Self, ValidationError> {
        check_topic_text(s, false)?;
        Ok(Self(s.to_owned()))
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl fmt::Debug for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Topic({})", self.0)
    }
}

/// A topic pattern: topic segments, where `*` matches exactly one segment and a final
/// `**` matches zero or more.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct TopicGlob(String);

impl TopicGlob {
    /// The pattern text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `topic` matches.
    pub fn matches(&self, topic: &Topic) -> bool {
        let mut pat = self.0.split('/');
        let mut segs = topic.0.split('/');
        loop {
            match (pat.next(), segs.next()) {
                (Some("**"), _) => return true,
                (Some("*"), Some(_)) => {}
                (Some(p), Some(s)) if p == s => {}
                (None, None) => return true,
                _ => return false,
            }
        }
    }
}

impl FromStr for TopicGlob {
    type Err = ValidationError;
    fn from_str(s: &str) -> Result<Self, ValidationError> {
        check_topic_text(s, true)?;
        Ok(Self(s.to_owned()))
    }
}
impl fmt::Display for TopicGlob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl fmt::Debug for TopicGlob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TopicGlob({})", self.0)
    }
}

macro_rules! str_serde {
    ($t:ty) => {
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}
str_serde!(Topic);
str_serde!(TopicGlob);

/// Longest deployment id, in bytes.
pub const MAX_DEPLOYMENT_BYTES: usize = 64;

/// The id of one deployment of neXus (one store, served by one host): 1..=64 bytes of
/// `[A-Za-z0-9._-]`. Hosts generate 32 lowercase hex digits at the first start of a
/// store (or take one from their configuration) and keep it in the store. A version 2
/// action names the deployment it was signed for, and every other deployment refuses it.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Deployment(String);

impl Deployment {
    /// The id text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The id made of 16 (random) bytes: 32 lowercase hex digits.
    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(hex::encode(bytes))
    }
}

impl FromStr for Deployment {
    type Err = ValidationError;
    fn from_str(s: &str) -> Result<Self, ValidationError> {
        let ok = (1..=MAX_DEPLOYMENT_BYTES).contains(&s.len())
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if !ok {
            return Err(ValidationError::Malformed(format!(
                "deployment id {:?} must be 1..={MAX_DEPLOYMENT_BYTES} bytes of \
                 [A-Za-z0-9._-]",
                s.chars().take(80).collect::<String>()
            )));
        }
        Ok(Self(s.to_owned()))
    }
}

impl fmt::Display for Deployment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl fmt::Debug for Deployment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Deployment({})", self.0)
    }
}
str_serde!(Deployment);

/// What a Fact resolves: an Intent, and the fencing token of the claim it resolves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resolves {
    /// The Intent answered.
    pub intent: FihHash,
    /// The fencing token the resolver's claim received.
    pub token: u64,
}

/// A validated observation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fact {
    /// Where it belongs.
    pub topic: Topic,
    /// What was observed (JSON, integers only).
    pub body: Value,
    /// Records it derives from.
    #[serde(default)]
    pub parents: Vec<FihHash>,
    /// The Intent it answers, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolves: Option<Resolves>,
    /// Who observed it.
    pub author: AuthorKey,
    /// When, in ms since the Unix epoch (as stated by the author).
    pub time: u64,
}

/// A proposed piece of exploration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Intent {
    /// Where it belongs.
    pub topic: Topic,
    /// What to explore (JSON, integers only).
    pub body: Value,
    /// Records it derives from.
    #[serde(default)]
    pub parents: Vec<FihHash>,
    /// Who proposes it.
    pub author: AuthorKey,
    /// When, in ms since the Unix epoch.
    pub time: u64,
}

/// Which Intents a Hint applies to. An empty selector selects every Intent.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Selector {
    /// Topic pattern the Intent's topic must match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<TopicGlob>,
    /// Top-level members the Intent's body must contain with equal values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<Map<String, Value>>,
}

impl Selector {
    /// Whether the selector selects `intent`.
    pub fn selects(&self, intent: &Intent) -> bool {
        if let Some(glob) = &self.topic
            && !glob.matches(&intent.topic)
        {
            return false;
        }
        if let Some(want) = &self.body {
            let Some(have) = intent.body.as_object() else {
                return want.is_empty();
            };
            return want.iter().all(|(k, v)| have.get(k) == Some(v));
        }
        true
    }
}

/// What a Hint does to the Intents it selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum Effect {
    /// They may not be proposed or claimed.
    Deny,
    /// They are admissible even where a deny Hint selects them.
    Allow,
    /// They rank higher (or lower, if negative) in the available listing.
    Priority(i64),
}

/// Where a Hint came from: the contract, its rule, and the Facts that triggered it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HintSource {
    /// Hash of the contract blob that emitted it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contract: Option<FihHash>,
    /// Name of the rule within the contract.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// The Facts that triggered the rule.
    #[serde(default)]
    pub facts: Vec<FihHash>,
}

/// A constraint on which Intents are admissible.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hint {
    /// The Intents it applies to.
    pub selector: Selector,
    /// What it does to them.
    pub effect: Effect,
    /// Why, for people.
    pub reason: String,
    /// Where it came from (absent for a Hint inserted directly by an agent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<HintSource>,
    /// When it stops applying, in ms since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<u64>,
    /// Who emitted it.
    pub author: AuthorKey,
    /// When, in ms since the Unix epoch.
    pub time: u64,
}

impl Hint {
    /// Whether the Hint is in force at `now`.
    pub fn active_at(&self, now: u64) -> bool {
        self.expires.is_none_or(|e| now < e)
    }
}

/// The content of a record: everything its hash covers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Content {
    /// A Fact.
    Fact(Fact),
    /// An Intent.
    Intent(Intent),
    /// A Hint.
    Hint(Hint),
}

/// The kind of a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// [`Fact`].
    Fact,
    /// [`Intent`].
    Intent,
    /// [`Hint`].
    Hint,
}

impl Kind {
    /// The `kind` tag.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Fact => "fact",
            Kind::Intent => "intent",
            Kind::Hint => "hint",
        }
    }
}

impl FromStr for Kind {
    type Err = ValidationError;
    fn from_str(s: &str) -> Result<Self, ValidationError> {
        match s {
            "fact" => Ok(Kind::Fact),
            "intent" => Ok(Kind::Intent),
            "hint" => Ok(Kind::Hint),
            other => Err(ValidationError::Malformed(format!(
                "unknown record kind {other:?} (expected fact, intent or hint)"
            ))),
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A signed action: a lifecycle step of an Intent, or the retraction of a Hint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum ActionContent {
    /// Take the Intent (or take it over after its lease lapsed).
    Claim {
        /// The Intent.
        intent: FihHash,
        /// Requested lease, in ms.
        lease_ms: u64,
        /// The claimer.
        author: AuthorKey,
        /// The deployment it was signed for (wire format v2); `None`: a version 1
        /// action, which only an old log may hold.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        deployment: Option<Deployment>,
        /// When, in ms since the Unix epoch.
        time: u64,
    },
    /// Extend the lease of a held claim.
    Renew {
        /// The Intent.
        intent: FihHash,
        /// The fencing token of the holder's claim.
        token: u64,
        /// New lease from now, in ms.
        lease_ms: u64,
        /// The holder.
        author: AuthorKey,
        /// The deployment it was signed for (wire format v2); `None`: a version 1
        /// action, which only an old log may hold.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        deployment: Option<Deployment>,
        /// When, in ms since the Unix epoch.
        time: u64,
    },
    /// Retract an Intent (its proposer only).
    Withdraw {
        /// The Intent.
        intent: FihHash,
        /// The proposer.
        author: AuthorKey,
        /// The deployment it was signed for (wire format v2); `None`: a version 1
        /// action, which only an old log may hold.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        deployment: Option<Deployment>,
        /// When, in ms since the Unix epoch.
        time: u64,
    },
    /// Take an active Hint out of force (its author, or an operator key; never a
    /// contract's Hint, which its evaluation withdraws).
    Retract {
        /// The Hint.
        hint: FihHash,
        /// Who retracts it.
        author: AuthorKey,
        /// The deployment it was signed for (wire format v2; a retraction has no
        /// version 1, so the core refuses one without it).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        deployment: Option<Deployment>,
        /// When, in ms since the Unix epoch.
        time: u64,
    },
}

/// Content that has a canonical encoding and an author, and so can be signed.
pub trait Signable: Serialize + serde::de::DeserializeOwned + Clone {
    /// Appends the canonical encoding (every field but `hash` and `sig`) to `out`,
    /// checking limits on the way.
    fn write_canonical(&self, out: &mut Vec<u8>, limits: &Limits) -> Result<(), ValidationError>;
    /// The signer.
    fn author(&self) -> &AuthorKey;
}

/// Writes `{"k":v,…}` member by member; keys must come in canonical order.
struct Obj<'a> {
    out: &'a mut Vec<u8>,
    first: bool,
    #[cfg(debug_assertions)]
    last: Option<&'static str>,
}

impl<'a> Obj<'a> {
    fn new(out: &'a mut Vec<u8>) -> Self {
        out.push(b'{');
        Self {
            out,
            first: true,
            #[cfg(debug_assertions)]
            last: None,
        }
    }
    fn key(&mut self, k: &'static str) -> &mut Vec<u8> {
        #[cfg(debug_assertions)]
        {
            debug_assert!(self.last.is_none_or(|l| l < k), "canonical key order");
            self.last = Some(k);
        }
        if !self.first {
            self.out.push(b',');
        }
        self.first = false;
        write_str(self.out, k);
        self.out.push(b':');
        self.out
    }
    fn str(&mut self, k: &'static str, v: &str) {
        write_str(self.key(k), v);
    }
    /// A 32-byte value (hash or key) as a lowercase hex string.
    fn hex32(&mut self, k: &'static str, v: &[u8; 32]) {
        push_hex32(self.key(k), v);
    }
    fn int(&mut self, k: &'static str, field: &'static str, v: u64) -> Result<(), ValidationError> {
        write_i53(self.key(k), check_u53(field, v)?);
        Ok(())
    }
    fn hashes(&mut self, k: &'static str, hs: &[FihHash]) {
        let out = self.key(k);
        out.push(b'[');
        for (i, h) in hs.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            push_hex32(out, &h.0);
        }
        out.push(b']');
    }
    fn end(self) {
        self.out.push(b'}');
    }
}

/// Appends `"` + 64 lowercase hex digits + `"` without allocating.
fn push_hex32(out: &mut Vec<u8>, v: &[u8; 32]) {
    let mut buf = [0u8; 64];
    // Cannot fail: the buffer is exactly twice the input.
    if hex::encode_to_slice(v, &mut buf).is_ok() {
        out.push(b'"');
        out.extend_from_slice(&buf);
        out.push(b'"');
    }
}

fn check_u53(field: &'static str, v: u64) -> Result<i64, ValidationError> {
    if v > MAX_SAFE_INTEGER as u64 {
        return Err(ValidationError::OutOfRange {
            field,
            value: v as i128,
            range: "0..=9007199254740991".into(),
        });
    }
    Ok(v as i64)
}

fn write_body(
    out: &mut Vec<u8>,
    field: &'static str,
    body: &Value,
    limits: &Limits,
) -> Result<(), ValidationError> {
    let start = out.len();
    canonical::write_value(out, body, limits.max_json_depth)
        .map_err(|source| ValidationError::Canonical { field, source })?;
    let size = out.len() - start;
    if size > limits.max_body_bytes {
        return Err(ValidationError::BodyTooLarge {
            size,
            limit: limits.max_body_bytes,
        });
    }
    Ok(())
}

fn check_parents(parents: &[FihHash], limits: &Limits) -> Result<(), ValidationError> {
    if parents.len() > limits.max_parents {
        return Err(ValidationError::TooManyParents {
            count: parents.len(),
            limit: limits.max_parents,
        });
    }
    let mut sorted = parents.to_vec();
    sorted.sort_unstable();
    if let Some(w) = sorted.windows(2).find(|w| w[0] == w[1]) {
        return Err(ValidationError::DuplicateParent(w[0]));
    }
    Ok(())
}

impl Signable for Content {
    fn write_canonical(&self, out: &mut Vec<u8>, limits: &Limits) -> Result<(), ValidationError> {
        let mut o = Obj::new(out);
        match self {
            Content::Fact(f) => {
                check_parents(&f.parents, limits)?;
                o.hex32("author", f.author.as_bytes());
                write_body(o.key("body"), "body", &f.body, limits)?;
                o.str("kind", "fact");
                o.hashes("parents", &f.parents);
                if let Some(r) = &f.resolves {
                    let mut inner = Obj::new(o.key("resolves"));
                    inner.hex32("intent", r.intent.as_bytes());
                    inner.int("token", "resolves.token", r.token)?;
                    inner.end();
                }
                o.int("time", "time", f.time)?;
                o.str("topic", f.topic.as_str());
            }
            Content::Intent(i) => {
                check_parents(&i.parents, limits)?;
                o.hex32("author", i.author.as_bytes());
                write_body(o.key("body"), "body", &i.body, limits)?;
                o.str("kind", "intent");
                o.hashes("parents", &i.parents);
                o.int("time", "time", i.time)?;
                o.str("topic", i.topic.as_str());
            }
            Content::Hint(h) => {
                if h.reason.is_empty() || h.reason.len() > limits.max_reason_bytes {
                    return Err(ValidationError::Reason {
                        len: h.reason.len(),
                        limit: limits.max_reason_bytes,
                    });
                }
                o.hex32("author", h.author.as_bytes());
                let out = o.key("effect");
                match h.effect {
                    Effect::Deny => write_str(out, "deny"),
                    Effect::Allow => write_str(out, "allow"),
                    Effect::Priority(p) => {
                        if !(-MAX_SAFE_INTEGER..=MAX_SAFE_INTEGER).contains(&p) {
                            return Err(ValidationError::OutOfRange {
                                field: "effect.priority",
                                value: p as i128,
                                range: "±9007199254740991".into(),
                            });
                        }
                        out.extend_from_slice(b"{\"priority\":");
                        write_i53(out, p);
                        out.push(b'}');
                    }
                }
                if let Some(e) = h.expires {
                    o.int("expires", "expires", e)?;
                }
                o.str("kind", "hint");
                o.str("reason", &h.reason);
                let start = o.key("selector").len();
                let mut sel = Obj::new(&mut *o.out);
                if let Some(body) = &h.selector.body {
                    let body = Value::Object(body.clone());
                    write_body(sel.key("body"), "selector.body", &body, limits)?;
                }
                if let Some(t) = &h.selector.topic {
                    sel.str("topic", t.as_str());
                }
                sel.end();
                let size = o.out.len() - start;
                if size > limits.max_selector_bytes {
                    return Err(ValidationError::SelectorTooLarge {
                        size,
                        limit: limits.max_selector_bytes,
                    });
                }
                if let Some(src) = &h.source {
                    check_parents(&src.facts, limits)?;
                    let mut s = Obj::new(o.key("source"));
                    if let Some(c) = &src.contract {
                        s.hex32("contract", c.as_bytes());
                    }
                    s.hashes("facts", &src.facts);
                    if let Some(r) = &src.rule {
                        s.str("rule", r);
                    }
                    s.end();
                }
                o.int("time", "time", h.time)?;
            }
        }
        o.end();
        Ok(())
    }

    fn author(&self) -> &AuthorKey {
        match self {
            Content::Fact(f) => &f.author,
            Content::Intent(i) => &i.author,
            Content::Hint(h) => &h.author,
        }
    }
}

impl Content {
    /// The record's kind.
    pub fn kind(&self) -> Kind {
        match self {
            Content::Fact(_) => Kind::Fact,
            Content::Intent(_) => Kind::Intent,
            Content::Hint(_) => Kind::Hint,
        }
    }

    /// The records this one derives from: parents, the resolved Intent, a Hint's
    /// source Facts. Every one must exist before this record is accepted.
    pub fn links(&self) -> Vec<FihHash> {
        match self {
            Content::Fact(f) => {
                let mut v = f.parents.clone();
                if let Some(r) = &f.resolves
                    && !v.contains(&r.intent)
                {
                    v.push(r.intent);
                }
                v
            }
            Content::Intent(i) => i.parents.clone(),
            Content::Hint(h) => h
                .source
                .as_ref()
                .map(|s| s.facts.clone())
                .unwrap_or_default(),
        }
    }

    /// The author's stated time.
    pub fn time(&self) -> u64 {
        match self {
            Content::Fact(f) => f.time,
            Content::Intent(i) => i.time,
            Content::Hint(h) => h.time,
        }
    }

    /// The topic, for Facts and Intents.
    pub fn topic(&self) -> Option<&Topic> {
        match self {
            Content::Fact(f) => Some(&f.topic),
            Content::Intent(i) => Some(&i.topic),
            Content::Hint(_) => None,
        }
    }
}

impl Signable for ActionContent {
    fn write_canonical(&self, out: &mut Vec<u8>, _limits: &Limits) -> Result<(), ValidationError> {
        let mut o = Obj::new(out);
        match self {
            ActionContent::Claim {
                intent,
                lease_ms,
                author,
                deployment,
                time,
            } => {
                o.hex32("author", author.as_bytes());
                write_deployment(&mut o, deployment.as_ref());
                o.hex32("intent", intent.as_bytes());
                o.str("kind", "claim");
                o.int("lease_ms", "lease_ms", *lease_ms)?;
                o.int("time", "time", *time)?;
            }
            ActionContent::Renew {
                intent,
                token,
                lease_ms,
                author,
                deployment,
                time,
            } => {
                o.hex32("author", author.as_bytes());
                write_deployment(&mut o, deployment.as_ref());
                o.hex32("intent", intent.as_bytes());
                o.str("kind", "renew");
                o.int("lease_ms", "lease_ms", *lease_ms)?;
                o.int("time", "time", *time)?;
                o.int("token", "token", *token)?;
            }
            ActionContent::Withdraw {
                intent,
                author,
                deployment,
                time,
            } => {
                o.hex32("author", author.as_bytes());
                write_deployment(&mut o, deployment.as_ref());
                o.hex32("intent", intent.as_bytes());
                o.str("kind", "withdraw");
                o.int("time", "time", *time)?;
            }
            ActionContent::Retract {
                hint,
                author,
                deployment,
                time,
            } => {
                o.hex32("author", author.as_bytes());
                write_deployment(&mut o, deployment.as_ref());
                o.hex32("hint", hint.as_bytes());
                o.str("kind", "retract");
                o.int("time", "time", *time)?;
            }
        }
        o.end();
        Ok(())
    }

    fn author(&self) -> &AuthorKey {
        match self {
            ActionContent::Claim { author, .. }
            | ActionContent::Renew { author, .. }
            | ActionContent::Withdraw { author, .. }
            | ActionContent::Retract { author, .. } => author,
        }
    }
}

fn write_deployment(o: &mut Obj<'_>, deployment: Option<&Deployment>) {
    if let Some(d) = deployment {
        o.str("deployment", d.as_str());
    }
}

impl ActionContent {
    /// The deployment the action was signed for (`None`: a version 1 action).
    pub fn deployment(&self) -> Option<&Deployment> {
        match self {
            ActionContent::Claim { deployment, .. }
            | ActionContent::Renew { deployment, .. }
            | ActionContent::Withdraw { deployment, .. }
            | ActionContent::Retract { deployment, .. } => deployment.as_ref(),
        }
    }

    /// The wire format version of the action: 2 when it names its deployment, else 1.
    pub fn version(&self) -> u8 {
        match self.deployment() {
            Some(_) => 2,
            None => 1,
        }
    }

    /// The Intent acted on (`None` for a retraction, which acts on a Hint).
    pub fn intent(&self) -> Option<&FihHash> {
        match self {
            ActionContent::Claim { intent, .. }
            | ActionContent::Renew { intent, .. }
            | ActionContent::Withdraw { intent, .. } => Some(intent),
            ActionContent::Retract { .. } => None,
        }
    }

    /// The record acted on: the Intent, or the retracted Hint.
    pub fn target(&self) -> &FihHash {
        match self {
            ActionContent::Claim { intent, .. }
            | ActionContent::Renew { intent, .. }
            | ActionContent::Withdraw { intent, .. } => intent,
            ActionContent::Retract { hint, .. } => hint,
        }
    }

    /// The action's kind, as on the wire (`claim`, `renew`, `withdraw`, `retract`).
    pub fn kind(&self) -> &'static str {
        match self {
            ActionContent::Claim { .. } => "claim",
            ActionContent::Renew { .. } => "renew",
            ActionContent::Withdraw { .. } => "withdraw",
            ActionContent::Retract { .. } => "retract",
        }
    }

    /// The author's stated time.
    pub fn time(&self) -> u64 {
        match self {
            ActionContent::Claim { time, .. }
            | ActionContent::Renew { time, .. }
            | ActionContent::Withdraw { time, .. }
            | ActionContent::Retract { time, .. } => *time,
        }
    }
}

/// Content with its verified hash and signature. The only way to obtain one is to
/// sign content ([`Signed::sign`]) or to verify a wire form ([`Signed::verify`]), so a
/// `Signed` value always carries a hash and signature that check out.
#[derive(Debug, Clone, PartialEq)]
pub struct Signed<C> {
    content: C,
    hash: FihHash,
    sig: Signature,
}

/// A signed Fact, Intent or Hint.
pub type Record = Signed<Content>;
/// A signed claim, renewal or withdrawal.
pub type Action = Signed<ActionContent>;

/// Computes the FihHash of content (validating it against `limits` on the way).
pub fn hash_content<C: Signable>(content: &C, limits: &Limits) -> Result<FihHash, ValidationError> {
    let mut buf = Vec::with_capacity(256);
    content.write_canonical(&mut buf, limits)?;
    Ok(FihHash::of_canonical(&buf))
}

/// The canonical bytes a record's hash is computed over.
pub fn canonical_bytes<C: Signable>(
    content: &C,
    limits: &Limits,
) -> Result<Vec<u8>, ValidationError> {
    let mut buf = Vec::with_capacity(256);
    content.write_canonical(&mut buf, limits)?;
    Ok(buf)
}

impl<C: Signable> Signed<C> {
    /// Validates, hashes and signs `content`. The key must be the content's author.
    pub fn sign(content: C, key: &SigningKey, limits: &Limits) -> Result<Self, ValidationError> {
        if key.author() != *content.author() {
            return Err(ValidationError::Malformed(format!(
                "signing key {} is not the author {}",
                key.author(),
                content.author()
            )));
        }
        let hash = hash_content(&content, limits)?;
        let sig = key.sign(&hash);
        Ok(Self { content, hash, sig })
    }

    /// Checks stated `hash` and `sig` against `content`.
    pub fn verify(
        content: C,
        hash: FihHash,
        sig: Signature,
        limits: &Limits,
    ) -> Result<Self, ValidationError> {
        let computed = hash_content(&content, limits)?;
        Self::check(content, computed, hash, sig)
    }

    fn check(
        content: C,
        computed: FihHash,
        hash: FihHash,
        sig: Signature,
    ) -> Result<Self, ValidationError> {
        if computed != hash {
            return Err(ValidationError::HashMismatch {
                stated: hash,
                computed,
            });
        }
        if !content.author().verify(&hash, &sig) {
            return Err(ValidationError::BadSignature {
                author: *content.author(),
                hash,
            });
        }
        Ok(Self { content, hash, sig })
    }

    /// Parses and verifies the wire form (a JSON object with `hash` and `sig`).
    pub fn from_json(bytes: &[u8], limits: &Limits) -> Result<Self, ValidationError> {
        let value: Value =
            serde_json::from_slice(bytes).map_err(|e| ValidationError::Malformed(e.to_string()))?;
        Self::from_value(value, limits)
    }

    /// Reads a wire form from the host's own storage: like [`from_json`](Self::from_json),
    /// the hash is recomputed and must match, but the signature is not re-verified
    /// (it was when the record was accepted). Never use this on input from the network.
    pub fn from_stored_json(bytes: &[u8], limits: &Limits) -> Result<Self, ValidationError> {
        let value: Value =
            serde_json::from_slice(bytes).map_err(|e| ValidationError::Malformed(e.to_string()))?;
        Self::parse(value, limits, false)
    }

    /// Verifies a wire form already parsed into JSON.
    pub fn from_value(value: Value, limits: &Limits) -> Result<Self, ValidationError> {
        Self::parse(value, limits, true)
    }

    fn parse(value: Value, limits: &Limits, check_sig: bool) -> Result<Self, ValidationError> {
        let Value::Object(mut map) = value else {
            return Err(ValidationError::Malformed("expected a JSON object".into()));
        };
        let mut take = |field: &str| -> Result<String, ValidationError> {
            match map.remove(field) {
                Some(Value::String(s)) => Ok(s),
                Some(_) => Err(ValidationError::Malformed(format!(
                    "{field} must be a string"
                ))),
                None => Err(ValidationError::Malformed(format!(
                    "missing field `{field}`"
                ))),
            }
        };
        let hash: FihHash = take("hash")?.parse().map_err(malformed)?;
        let sig: Signature = take("sig")?.parse().map_err(malformed)?;
        let wire = Value::Object(map);
        // One wire form per hash: the canonical encoding of what was sent must be the
        // very bytes that are hashed. This refuses `null` for an absent optional
        // member, a missing `parents`, and any member the record type does not have,
        // so nothing can ride along unhashed and every client can hash what it sees.
        let wire_bytes = canonical::to_vec(&wire).ok();
        let content: C =
            serde_json::from_value(wire).map_err(|e| ValidationError::Malformed(e.to_string()))?;
        let bytes = canonical_bytes(&content, limits)?;
        if wire_bytes.as_deref() != Some(bytes.as_slice()) {
            return Err(ValidationError::Malformed(
                "not in normal form: optional members must be left out rather than null, \
                 `parents` (and a Hint source's `facts`) must be present, and no other \
                 members are allowed"
                    .into(),
            ));
        }
        let computed = FihHash::of_canonical(&bytes);
        if !check_sig && computed == hash {
            return Ok(Self { content, hash, sig });
        }
        Self::check(content, computed, hash, sig)
    }

    /// The wire form as JSON.
    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    /// The wire form as compact JSON bytes.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// The content.
    pub fn content(&self) -> &C {
        &self.content
    }

    /// The FihHash.
    pub fn hash(&self) -> FihHash {
        self.hash
    }

    /// The author's signature over the hash.
    pub fn sig(&self) -> Signature {
        self.sig
    }

    /// The author.
    pub fn author(&self) -> &AuthorKey {
        self.content.author()
    }
}

fn malformed(e: ParseError) -> ValidationError {
    ValidationError::Malformed(e.to_string())
}

/// The wire form, serialised directly (no intermediate `Value`).
impl<C: Signable> Serialize for Signed<C> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Wire<'a, C> {
            #[serde(flatten)]
            content: &'a C,
            hash: FihHash,
            sig: Signature,
        }
        Wire {
            content: &self.content,
            hash: self.hash,
            sig: self.sig,
        }
        .serialize(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn key(n: u8) -> SigningKey {
        SigningKey::from_seed(&[n; 32])
    }

    fn intent(k: &SigningKey) -> Content {
        Content::Intent(Intent {
            topic: "chem/solubility".parse().expect("topic"),
            body: json!({"compound": "NaCl", "temp_c": 25}),
            parents: vec![],
            author: k.author(),
            time: 1_764_000_000_000,
        })
    }

    #[test]
    fn topics_are_validated() {
        for ok in ["a", "a/b", "chem/solubility-v2", "x:y/z=1,2"] {
            assert!(ok.parse::<Topic>().is_ok(), "{ok}");
        }
        for bad in [
            "", "/a", "a/", "a//b", "a b", "a/*", "a/./b", "a/../b", "a@b",
        ] {
            assert!(bad.parse::<Topic>().is_err(), "{bad}");
        }
        assert!(vec!["s"; 16].join("/").parse::<Topic>().is_ok());
        assert!(vec!["s"; 17].join("/").parse::<Topic>().is_err());
        assert!("a".repeat(257).parse::<Topic>().is_err());
    }

    #[test]
    fn globs_match_segmentwise() {
        let t = |s: &str| s.parse::<Topic>().expect("topic");
        let g = |s: &str| s.parse::<TopicGlob>().expect("glob");
        assert!(g("chem/*").matches(&t("chem/x")));
        assert!(!g("chem/*").matches(&t("chem/x/y")));
        assert!(!g("chem/*").matches(&t("chem")));
        assert!(g("chem/**").matches(&t("chem")));
        assert!(g("chem/**").matches(&t("chem/x/y")));
        assert!(!g("chem/**").matches(&t("chemistry/x")));
        assert!(g("**").matches(&t("anything/at/all")));
        assert!("a/**/b".parse::<TopicGlob>().is_err());
        assert!(t("chem/x").starts_with(&t("chem")));
        assert!(!t("chemistry").starts_with(&t("chem")));
    }

    #[test]
    fn sign_verify_roundtrip_through_json() {
        let k = key(1);
        let limits = Limits::default();
        let rec = Record::sign(intent(&k), &k, &limits).expect("sign");
        let wire = rec.to_json();
        let back = Record::from_json(&wire, &limits).expect("verify");
        assert_eq!(back, rec);
    }

    #[test]
    fn canonical_form_matches_generic_canonicalisation_of_wire_form() {
        let k = key(2);
        let limits = Limits::default();
        let mut contents = vec![intent(&k)];
        contents.push(Content::Fact(Fact {
            topic: "a/b".parse().expect("topic"),
            body: json!({"z": [1, {"é": "\n"}], "a": null}),
            parents: vec![FihHash::of_canonical(b"p")],
            resolves: Some(Resolves {
                intent: FihHash::of_canonical(b"i"),
                token: 3,
            }),
            author: k.author(),
            time: 5,
        }));
        contents.push(Content::Hint(Hint {
            selector: Selector {
                topic: Some("a/**".parse().expect("glob")),
                body: Some(json!({"x": 1}).as_object().cloned().expect("obj")),
            },
            effect: Effect::Priority(-4),
            reason: "budget".into(),
            source: Some(HintSource {
                contract: Some(FihHash::of_canonical(b"c")),
                rule: Some("r1".into()),
                facts: vec![FihHash::of_canonical(b"f")],
            }),
            expires: Some(99),
            author: k.author(),
            time: 6,
        }));
        for c in contents {
            let ours = canonical_bytes(&c, &limits).expect("canonical");
            let generic =
                canonical::to_vec(&serde_json::to_value(&c).expect("value")).expect("canon");
            assert_eq!(
                String::from_utf8_lossy(&ours),
                String::from_utf8_lossy(&generic)
            );
        }
    }

    #[test]
    fn tampering_is_detected() {
        let k = key(3);
        let limits = Limits::default();
        let rec = Record::sign(intent(&k), &k, &limits).expect("sign");
        let mut v = rec.to_value();
        v["body"]["temp_c"] = json!(26);
        assert!(matches!(
            Record::from_value(v, &limits),
            Err(ValidationError::HashMismatch { .. })
        ));
        let mut v = rec.to_value();
        let other = key(4).sign(&rec.hash());
        v["sig"] = json!(other.to_string());
        assert!(matches!(
            Record::from_value(v, &limits),
            Err(ValidationError::BadSignature { .. })
        ));
        let mut v = rec.to_value();
        v["extra"] = json!(1);
        assert!(matches!(
            Record::from_value(v, &limits),
            Err(ValidationError::Malformed(_))
        ));
    }

    #[test]
    fn limits_are_enforced() {
        let k = key(5);
        let limits = Limits {
            max_body_bytes: 10,
            max_parents: 1,
            ..Limits::default()
        };
        assert!(matches!(
            Record::sign(intent(&k), &k, &limits),
            Err(ValidationError::BodyTooLarge { .. })
        ));
        let mut c = intent(&k);
        if let Content::Intent(i) = &mut c {
            i.body = json!(1.5);
        }
        assert!(matches!(
            Record::sign(c.clone(), &k, &Limits::default()),
            Err(ValidationError::Canonical { .. })
        ));
        if let Content::Intent(i) = &mut c {
            i.body = json!(1);
            i.parents = vec![FihHash::of_canonical(b"a"), FihHash::of_canonical(b"b")];
        }
        assert!(matches!(
            Record::sign(
                c.clone(),
                &k,
                &Limits {
                    max_parents: 1,
                    ..Limits::default()
                }
            ),
            Err(ValidationError::TooManyParents { .. })
        ));
        if let Content::Intent(i) = &mut c {
            i.parents = vec![FihHash::of_canonical(b"a"), FihHash::of_canonical(b"a")];
        }
        assert!(matches!(
            Record::sign(c.clone(), &k, &Limits::default()),
            Err(ValidationError::DuplicateParent(_))
        ));
        if let Content::Intent(i) = &mut c {
            i.parents = vec![];
            i.time = 1 << 53;
        }
        assert!(matches!(
            Record::sign(c, &k, &Limits::default()),
            Err(ValidationError::OutOfRange { .. })
        ));
    }

    #[test]
    fn stored_records_are_rehashed_but_not_reverified() {
        let k = key(8);
        let limits = Limits::default();
        let rec = Record::sign(intent(&k), &k, &limits).expect("sign");
        // A signature damaged in storage is not re-checked on read (it was on accept)...
        let mut v = rec.to_value();
        v["sig"] = json!(key(9).sign(&rec.hash()).to_string());
        let bytes = serde_json::to_vec(&v).expect("json");
        assert!(Record::from_stored_json(&bytes, &limits).is_ok());
        assert!(Record::from_json(&bytes, &limits).is_err());
        // ...but damaged content never passes.
        let mut v = rec.to_value();
        v["body"]["temp_c"] = json!(99);
        let bytes = serde_json::to_vec(&v).expect("json");
        assert!(matches!(
            Record::from_stored_json(&bytes, &limits),
            Err(ValidationError::HashMismatch { .. })
        ));
    }

    #[test]
    fn signing_with_a_foreign_key_is_refused() {
        let k = key(6);
        assert!(Record::sign(intent(&k), &key(7), &Limits::default()).is_err());
    }
}
