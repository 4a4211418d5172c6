//! `CompositeColdStorage`: the three tiers bound into FIH persistence, the Intent
//! lifecycle, queries and the flush cursor.
//!
//! # Key layout
//!
//! | tier | key | value |
//! |---|---|---|
//! | KV | `r/{hash}` | the record's wire JSON (immutable, written before its commit) |
//! | KV | `x/t/{kind}/{topic}/@{time:016}/{hash}` | empty: topic index (write-once, after commit) |
//! | KV | `x/m/{kind}/{time:016}/{hash}` | empty: time index (write-once, after commit) |
//! | KV | `x/a/{author}/{topic}/@{time:016}/{hash}` | empty: Fact author index (write-once, after commit) |
//! | Object | `rec/{hash}` | the record's kind: present iff the record is committed |
//! | Object | `intent/{hash}` | the Intent's [`IntentState`] |
//! | Object | `hints/active` | the active Hints (JSON array, ordered by hash) |
//! | Object | `meta/deployment` | this store's [`Deployment`] id (written once, at its first start) |
//! | Object | `acts/{intent}` | the [`ActionLedger`] of the Intent: actions applied to it lately |
//! | Object | `flush/cursor` | how far the log is archived ([`crate::archive::FlushCursor`], JSON) |
//! | Object | `log/…` | the commit log ([`LogEntry`] JSON, numbered by the store) |
//! | Blob | `archive/log/{first:020}-{last:020}.jsonl` | log entries `first..=last`, as export lines |
//! | Blob | `archive/manifest/{first:020}.json` | the window's [`crate::archive::Manifest`] |
//! | Blob | `snapshot/{head:020}.json`, `….chunk{i:06}` | a hot-state snapshot (spec/archive.md) |
//!
//! # Commit order
//!
//! Every mutating operation reads what it needs, then writes in the design's order:
//! the immutable record first (idempotent, content-addressed: harmless if the commit
//! then fails, and invisible, because a record counts only once `rec/{hash}` is
//! committed), then **one** [`ObjectStore::commit`] carrying every compare-and-swap
//! and the log entry (the commit point), then the write-once index entries. Index
//! entries lost after a commit are rewritten by the next [`FlushCapable::flush`] that
//! passes over their log entry. (A host may keep the index entries with its object
//! tier and write them in the commit itself, as the Worker's coordinator does: the
//! core only needs `KeyValueStore::list` over them to answer.)

use std::sync::{Arc, Mutex, PoisonError};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use nexus_store::{
    BlobStore, CasOp, Commit, CommitOutcome, KeyValueStore, LOG_HEAD_KEY, ObjectStore, log_key,
    parse_head,
};

use crate::archive::{self, FlushCursor, HotState, Manifest, Pending, WindowPolicy};
use crate::crypto::{AuthorKey, FihHash};
use crate::lifecycle::{CoreError, CoreResult, IntentState, check_holder, claim_transition};
use crate::record::{
    Action, ActionContent, Content, Deployment, Effect, Hint, Intent, Kind, Limits, Record, Topic,
};

/// Most Hints posted through `POST /v1/hints` (by agents and operators) that may be
/// active at once. The contract's Hints are not counted here: they have their own room
/// ([`MAX_CONTRACT_HINTS`]), so posted Hints can never crowd them out.
pub const MAX_ACTIVE_HINTS: usize = 1_000;
/// Default most Hints the contract in force may have active at once (a host may set
/// its own bound); past it the contract's Hint commit fails, loudly (see
/// `nexus_api::Governor`).
pub const MAX_CONTRACT_HINTS: usize = 1_000;
/// Default most active Hints one agent key may have posted (`nexus serve
/// --hint-quota`).
pub const DEFAULT_HINT_QUOTA: usize = 32;
/// Most bytes the posted Hints may take in the active list (`hints/active`, JSON):
/// every proposal, claim and Intent listing reads and decodes it, and every Hint write
/// rewrites it, so this bounds what the Hints in force cost each request (see
/// BENCHMARKS.md). The contract's Hints have their own room (counted, not in these
/// bytes: their selectors are bounded by `max_selector_bytes` and their number by the
/// host's contract room), so posted Hints cannot crowd them out.
pub const MAX_ACTIVE_HINT_BYTES: usize = 512 * 1024;
/// Most index keys one query page examines before it returns (with a cursor).
pub const MAX_SCAN: usize = 1_000;

/// Storage keys (see the module docs).
pub mod keys {
    use crate::crypto::{AuthorKey, FihHash};
    use crate::record::{Content, Kind, Record, Topic};

    /// Active Hints.
    pub const HINTS: &str = "hints/active";
    /// Flush cursor.
    pub const FLUSH_CURSOR: &str = "flush/cursor";
    /// Prefix of committed-record markers.
    pub const COMMITTED_PREFIX: &str = "rec/";
    /// Prefix of Intent states.
    pub const INTENT_PREFIX: &str = "intent/";
    /// Prefix of every index entry (written after the commit).
    pub const INDEX_PREFIX: &str = "x/";
    /// The store's deployment id.
    pub const DEPLOYMENT: &str = "meta/deployment";
    /// Prefix of the Intents' action ledgers.
    pub const ACTS_PREFIX: &str = "acts/";

    /// Object key of an Intent's action ledger.
    pub fn acts(h: &FihHash) -> String {
        format!("{ACTS_PREFIX}{h}")
    }

    /// KV key of a record's content.
    pub fn record(h: &FihHash) -> String {
        format!("r/{h}")
    }
    /// Object key marking a record committed.
    pub fn committed(h: &FihHash) -> String {
        format!("{COMMITTED_PREFIX}{h}")
    }
    /// Object key of an Intent's state.
    pub fn intent(h: &FihHash) -> String {
        format!("{INTENT_PREFIX}{h}")
    }
    /// Prefix of the topic index for records of `kind` under `topic`, subtopics
    /// included, in time order: a record is indexed under its topic and under each
    /// topic above it ([`topic_indexes`]). (`@` never occurs in a topic, so the prefix
    /// takes no deeper topic's entries.)
    pub fn topic_prefix(kind: Kind, topic: &Topic) -> String {
        format!("x/t/{kind}/{topic}/@")
    }
    /// Every topic index entry of a record: one under its topic and one under each
    /// topic above it, so that a listing under any topic is one time-ordered scan.
    pub fn topic_indexes(kind: Kind, topic: &Topic, time: u64, h: &FihHash) -> Vec<String> {
        topic
            .self_and_ancestors()
            .map(|t| topic_index(kind, &t, time, h))
            .collect()
    }
    /// Topic index entry of a record under `topic` (its own topic or one above it).
    pub fn topic_index(kind: Kind, topic: &Topic, time: u64, h: &FihHash) -> String {
        format!("x/t/{kind}/{topic}/@{time:016}/{h}")
    }
    /// Prefix of the author index of the Facts `author` signed under `topic` or below
    /// it (in topic order, then time order within a topic). A Fact is indexed under
    /// its own topic only ([`author_index`]): the `/` that ends the prefix takes every
    /// deeper topic and no sibling such as `{topic}s`.
    pub fn author_prefix(author: &AuthorKey, topic: &Topic) -> String {
        format!("x/a/{author}/{topic}/")
    }
    /// Author index entry of a Fact by `author` under `topic`.
    pub fn author_index(author: &AuthorKey, topic: &Topic, time: u64, h: &FihHash) -> String {
        format!("x/a/{author}/{topic}/@{time:016}/{h}")
    }
    /// Every index entry of a committed record: its topic entries, a Fact's author
    /// entry, and its time entry (what [`super::CompositeColdStorage`] writes after the
    /// commit).
    pub fn index_keys(rec: &Record) -> Vec<String> {
        let (h, c) = (rec.hash(), rec.content());
        let mut out = match c.topic() {
            Some(topic) => topic_indexes(c.kind(), topic, c.time(), &h),
            None => Vec::new(),
        };
        if let Content::Fact(f) = c {
            out.push(author_index(&f.author, &f.topic, f.time, &h));
        }
        out.push(time_index(c.kind(), c.time(), &h));
        out
    }
    /// Prefix of the time index for records of `kind`.
    pub fn time_prefix(kind: Kind) -> String {
        format!("x/m/{kind}/")
    }
    /// Time index entry.
    pub fn time_index(kind: Kind, time: u64, h: &FihHash) -> String {
        format!("x/m/{kind}/{time:016}/{h}")
    }
    /// Whether a KV key is written after the commit (an index entry) rather than before.
    pub fn is_after_commit(key: &str) -> bool {
        key.starts_with(INDEX_PREFIX)
    }
    /// Reads `(time, hash)` back from an index key.
    pub fn parse_index(key: &str) -> Option<(u64, FihHash)> {
        let (rest, hash) = key.rsplit_once('/')?;
        let (_, time) = rest.rsplit_once('/')?;
        let time = time.strip_prefix('@').unwrap_or(time);
        Some((time.parse().ok()?, hash.parse().ok()?))
    }
}

/// The keys an operation will read: hosts hydrate them before the first execution
/// so that a session usually completes in one round.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReadSet {
    /// Key-value tier keys.
    pub kv: Vec<String>,
    /// Object tier keys.
    pub states: Vec<String>,
}

impl ReadSet {
    /// What [`CompositeColdStorage::submit`] reads for `rec`.
    pub fn for_record(rec: &Record) -> Self {
        let mut states = vec![keys::committed(&rec.hash())];
        states.extend(rec.content().links().iter().map(keys::committed));
        match rec.content() {
            Content::Fact(f) => {
                if let Some(r) = &f.resolves {
                    states.push(keys::intent(&r.intent));
                }
            }
            // A new Intent's state key is created by CAS from absent: read it too.
            Content::Intent(_) => {
                states.push(keys::HINTS.to_owned());
                states.push(keys::intent(&rec.hash()));
            }
            Content::Hint(_) => states.push(keys::HINTS.to_owned()),
        }
        Self { kv: vec![], states }
    }

    /// What [`CompositeColdStorage::act`] reads for `action`.
    pub fn for_action(action: &Action) -> Self {
        let h = action.content().target();
        if let ActionContent::Retract { .. } = action.content() {
            return Self {
                kv: vec![],
                states: vec![keys::HINTS.to_owned(), keys::committed(h)],
            };
        }
        let kv = match action.content() {
            ActionContent::Renew { .. } => vec![],
            _ => vec![keys::record(h)],
        };
        Self {
            kv,
            states: vec![
                keys::intent(h),
                keys::committed(h),
                keys::HINTS.to_owned(),
                keys::DEPLOYMENT.to_owned(),
                keys::acts(h),
            ],
        }
    }
}

/// The `type`s of the log entries of the sharding protocol (`nexus_shard`'s
/// `ProtocolEntry`, spec/shards.md): a shard's log holds them beside the core's
/// [`LogEntry`]s, and the core's log readings skip them.
pub const SHARD_PROTOCOL_TYPES: [&str; 5] = ["prepared", "commit", "release", "abort", "after"];

/// Whether `bytes` is a log entry of the sharding protocol ([`SHARD_PROTOCOL_TYPES`]).
pub fn is_shard_protocol_entry(bytes: &[u8]) -> bool {
    #[derive(Deserialize)]
    struct Typed<'a> {
        #[serde(rename = "type", borrow)]
        kind: std::borrow::Cow<'a, str>,
    }
    serde_json::from_slice::<Typed<'_>>(bytes)
        .is_ok_and(|t| SHARD_PROTOCOL_TYPES.contains(&t.kind.as_ref()))
}

/// One entry of the commit log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum LogEntry {
    /// A record was committed.
    Record {
        /// Its hash.
        hash: FihHash,
        /// Its kind.
        kind: Kind,
        /// Host time of the commit, ms.
        at: u64,
    },
    /// A signed lifecycle action was applied.
    Action {
        /// The action's wire JSON (verifiable on its own).
        action: Value,
        /// Host time of the commit, ms.
        at: u64,
    },
}

impl LogEntry {
    /// The stored bytes: the entry's compact JSON (spec/tlog.md, "Leaves"), which is
    /// also the data of its leaf in the commit log's Merkle tree.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// The entry's leaf hash in the commit log's Merkle tree.
    pub fn leaf_hash(&self) -> nexus_tlog::Hash {
        nexus_tlog::leaf_hash(&self.encode())
    }

    /// The entry of record `rec` committed at `at`.
    pub fn of_record(rec: &Record, at: u64) -> Self {
        Self::Record {
            hash: rec.hash(),
            kind: rec.content().kind(),
            at,
        }
    }

    /// Host time of the commit, ms.
    pub fn at(&self) -> u64 {
        match self {
            Self::Record { at, .. } | Self::Action { at, .. } => *at,
        }
    }
}

/// The actions applied to one Intent lately, as `[time, hash]` pairs in the order they
/// were applied: what makes every action take effect at most once. An action whose hash
/// is in its Intent's ledger is refused as [`CoreError::Replayed`]; each applied action
/// is added in the same commit as its effect (a compare-and-swap on the ledger, so two
/// copies racing cannot both commit), and the same commit drops the entries whose time
/// is older than `now − 2 × max_clock_skew_ms`: such an action is refused by its time
/// already ([`CoreError::ClockSkew`]), with one more skew of margin for a host clock that
/// steps back. A ledger thus holds at most the actions of the last `2 × skew` on its
/// Intent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ActionLedger(pub Vec<(u64, FihHash)>);

impl ActionLedger {
    /// Reads a stored ledger (absent: empty).
    pub fn decode(key: &str, bytes: Option<&[u8]>) -> CoreResult<Self> {
        match bytes {
            None => Ok(Self::default()),
            Some(b) => serde_json::from_slice(b)
                .map_err(|e| CoreError::Store(corrupt(key, &e.to_string()))),
        }
    }

    /// The stored encoding.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Whether the action `hash` was applied.
    pub fn contains(&self, hash: &FihHash) -> bool {
        self.0.iter().any(|(_, h)| h == hash)
    }

    /// The ledger after applying action `hash` (stated time `time`) at `now`: entries
    /// older than `now − horizon_ms` dropped, the action added.
    pub fn with(&self, time: u64, hash: FihHash, now: u64, horizon_ms: u64) -> Self {
        let oldest = now.saturating_sub(horizon_ms);
        let mut kept: Vec<(u64, FihHash)> = self
            .0
            .iter()
            .copied()
            .filter(|(t, _)| *t >= oldest)
            .collect();
        kept.push((time, hash));
        Self(kept)
    }
}

/// A half-open time window `[since, until)` in ms; `None` leaves a side open.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TimeRange {
    /// Inclusive lower bound.
    pub since: Option<u64>,
    /// Exclusive upper bound.
    pub until: Option<u64>,
}

impl TimeRange {
    /// Whether `t` lies in the window.
    pub fn contains(&self, t: u64) -> bool {
        self.since.is_none_or(|s| t >= s) && self.until.is_none_or(|u| t < u)
    }
}

/// One page of a query: record hashes, and a cursor to continue from if there may be more.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Page {
    /// Matching records, in index order.
    pub items: Vec<FihHash>,
    /// Pass as `after` to continue; `None` when the query is exhausted.
    pub next: Option<String>,
}

/// What [`CompositeColdStorage::submit`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submitted {
    /// The record.
    pub hash: FihHash,
    /// Its kind.
    pub kind: Kind,
    /// True when the record was already committed (nothing changed).
    pub duplicate: bool,
    /// The commit log sequence number of this commit (`None` for a duplicate, or when
    /// the store numbers entries only at flush time, as a session buffer does).
    pub seq: Option<u64>,
}

/// The result of a successful claim, takeover or renewal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The Intent.
    pub intent: FihHash,
    /// The fencing token to present when renewing or resolving.
    pub token: u64,
    /// End of the lease, ms.
    pub lease_until: u64,
    /// True when the claim took the Intent over from a lapsed holder.
    pub takeover: bool,
}

/// What an applied action did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// A claim, takeover or renewal.
    Leased(Lease),
    /// A withdrawal.
    Withdrawn(FihHash),
    /// A retraction: the Hint is no longer in force.
    Retracted(FihHash),
}

/// A Hint in force, with its hash.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActiveHint {
    /// The Hint record's hash.
    pub hash: FihHash,
    /// The Hint.
    pub hint: Hint,
}

/// An Intent in a listing.
#[derive(Debug, Clone, PartialEq)]
pub struct IntentListing {
    /// The Intent record.
    pub record: Record,
    /// Its state.
    pub state: IntentState,
    /// Sum of the active priority Hints that select it.
    pub priority: i64,
}

/// What one [`FlushCapable::flush`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FlushReport {
    /// The window archived (`None`: no window was due).
    pub window: Option<crate::archive::Manifest>,
    /// The flush cursor after the call: last archived seq.
    pub cursor: u64,
    /// Index entries (re)written.
    pub indexed: usize,
}

/// FIH persistence over the tiers: records by hash, queries through write-once index
/// entries, and the commit log.
pub trait ColdStorage {
    /// A committed record.
    fn get_record(&self, hash: &FihHash) -> CoreResult<Option<Record>>;
    /// Records of `kind` under `topic` (subtopics included) with a time in `range`.
    fn by_topic(
        &self,
        kind: Kind,
        topic: &Topic,
        range: TimeRange,
        after: Option<&str>,
        limit: usize,
    ) -> CoreResult<Page>;
    /// Records of `kind` with a time in `range`, oldest first.
    fn by_time(
        &self,
        kind: Kind,
        range: TimeRange,
        after: Option<&str>,
        limit: usize,
    ) -> CoreResult<Page>;
    /// Commit log entries from sequence number `from`, at most `limit` (entries of
    /// the sharding protocol in that range skipped: [`is_shard_protocol_entry`]).
    fn log_entries(&self, from: u64, limit: usize) -> CoreResult<Vec<(u64, LogEntry)>>;
}

/// Archives the commit log to the blob tier, one window at a time (spec/archive.md).
pub trait FlushCapable {
    /// Closes and archives the next window if `policy` says one is due at `now` (or
    /// finishes an interrupted one): fixes the window in the cursor, writes its archive
    /// and its manifest, rewrites its records' index entries, then moves the cursor past
    /// it, each step by compare-and-swap. Archives at most one window per call.
    fn flush(&self, policy: &crate::archive::WindowPolicy, now: u64) -> CoreResult<FlushReport>;
    /// The flush cursor.
    fn flush_cursor(&self) -> CoreResult<crate::archive::FlushCursor>;
}

/// Binds a [`KeyValueStore`], a [`BlobStore`] and an [`ObjectStore`] into neXus
/// storage (design §4). All operations are deterministic given the stores' contents,
/// the arguments and `now`.
#[derive(Debug, Clone)]
pub struct CompositeColdStorage<K, B, O> {
    kv: K,
    blobs: B,
    objects: O,
    limits: Limits,
    /// Signs the checkpoints that archive and snapshot manifests end at.
    log_signer: Option<nexus_tlog::LogSigner>,
}

impl<S: Clone> CompositeColdStorage<S, S, S> {
    /// Uses one store for all three tiers.
    pub fn unified(store: S, limits: Limits) -> Self {
        Self {
            kv: store.clone(),
            blobs: store.clone(),
            objects: store,
            limits,
            log_signer: None,
        }
    }
}

impl<K, B, O> CompositeColdStorage<K, B, O>
where
    K: KeyValueStore,
    B: BlobStore,
    O: ObjectStore,
{
    /// Binds the tiers.
    pub fn new(kv: K, blobs: B, objects: O, limits: Limits) -> Self {
        Self {
            kv,
            blobs,
            objects,
            limits,
            log_signer: None,
        }
    }

    /// Signs each archive window's and snapshot's manifest with the checkpoint of the
    /// tree at its last seq (spec/archive.md), with `signer` (the host's log key).
    #[must_use]
    pub fn with_log_signer(mut self, signer: nexus_tlog::LogSigner) -> Self {
        self.log_signer = Some(signer);
        self
    }

    /// The signed checkpoint of the tree of `size` leaves as a manifest holds it:
    /// `None` without a log signer, or while the store's tree (catching up with a log
    /// older than it) does not cover `size` yet.
    pub fn checkpoint_at(&self, size: u64) -> CoreResult<Option<Value>> {
        let Some(signer) = &self.log_signer else {
            return Ok(None);
        };
        let head = self.log_head()?;
        let objects = &self.objects;
        if nexus_store::tree_size(head, &mut |k| objects.get_state(k))? < size {
            return Ok(None);
        }
        let root =
            nexus_tlog::root(size, &nexus_store::StoreHashes(objects)).map_err(|e| match e {
                nexus_tlog::TreeError::Source(e) => CoreError::Store(e),
                other => CoreError::Store(corrupt(nexus_store::TREE_SIZE_KEY, &other.to_string())),
            })?;
        let cp = nexus_tlog::SignedCheckpoint::sign(signer, size, &root);
        Ok(serde_json::to_value(cp).ok())
    }

    /// The limits records and actions are checked against.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The key-value tier.
    pub fn kv(&self) -> &K {
        &self.kv
    }

    /// The blob tier.
    pub fn blobs(&self) -> &B {
        &self.blobs
    }

    /// The object tier.
    pub fn objects(&self) -> &O {
        &self.objects
    }

    /// The kind of a committed record, `None` if not committed.
    pub fn committed_kind(&self, h: &FihHash) -> CoreResult<Option<Kind>> {
        let key = keys::committed(h);
        self.objects
            .get_state(&key)?
            .map(|v| parse_kind(&key, &v))
            .transpose()
    }

    /// The state of an Intent (`None`: no such Intent).
    pub fn intent_state(&self, h: &FihHash) -> CoreResult<Option<IntentState>> {
        let key = keys::intent(h);
        Ok(self
            .objects
            .get_state(&key)?
            .map(|v| IntentState::decode(&key, &v))
            .transpose()?)
    }

    /// Resolves a hex id or unambiguous prefix of at least 8 hex digits to a
    /// committed record's hash.
    pub fn resolve_id(&self, id: &str) -> CoreResult<FihHash> {
        if let Ok(h) = id.parse::<FihHash>() {
            return match self.committed_kind(&h)? {
                Some(_) => Ok(h),
                None => Err(CoreError::UnknownRecord(h)),
            };
        }
        if id.len() < 8
            || id.len() > 64
            || !id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        {
            return Err(CoreError::Invalid(crate::ValidationError::Malformed(
                format!("record id must be 8 to 64 lowercase hex digits, got {id:?}"),
            )));
        }
        let prefix = format!("{}{id}", keys::COMMITTED_PREFIX);
        let found = self.objects.list_states(&prefix, None, 2)?;
        match found.as_slice() {
            [one] => one[keys::COMMITTED_PREFIX.len()..]
                .parse()
                .map_err(|_| CoreError::Store(corrupt(one, "bad committed-record key"))),
            [] => Err(CoreError::UnknownPrefix(id.to_owned())),
            _ => Err(CoreError::AmbiguousId(id.to_owned())),
        }
    }

    fn load_record(&self, h: &FihHash) -> CoreResult<Record> {
        let key = keys::record(h);
        let bytes = self.kv.get(&key)?.ok_or_else(|| {
            CoreError::Store(corrupt(&key, "committed record content is missing"))
        })?;
        decode_stored_record(&key, &bytes, &self.limits)
    }

    /// The Hints in force at `now`, ordered by hash.
    pub fn active_hints(&self, now: u64) -> CoreResult<Vec<ActiveHint>> {
        Ok(self
            .stored_hints()?
            .iter()
            .filter(|h| h.hint.active_at(now))
            .cloned()
            .collect())
    }

    fn stored_hints(&self) -> CoreResult<Arc<Vec<ActiveHint>>> {
        decode_hints(self.objects.get_state(keys::HINTS)?.as_deref())
    }

    /// Fails with [`CoreError::Inadmissible`] when an active deny Hint selects the
    /// Intent and no active allow Hint does.
    pub fn check_admissible(&self, intent: &Intent, now: u64) -> CoreResult<()> {
        admissibility(&self.stored_hints()?, intent, now)
    }

    /// Sum of the active priority Hints selecting `intent`.
    pub fn priority_of(hints: &[ActiveHint], intent: &Intent) -> i64 {
        hints
            .iter()
            .filter(|h| h.hint.selector.selects(intent))
            .filter_map(|h| match h.hint.effect {
                Effect::Priority(p) => Some(p),
                _ => None,
            })
            .fold(0i64, i64::saturating_add)
    }

    /// [`submit_within`](Self::submit_within) with the whole room of posted Hints as
    /// the author's quota.
    pub fn submit(&self, rec: &Record, now: u64) -> CoreResult<Submitted> {
        self.submit_within(rec, now, MAX_ACTIVE_HINTS)
    }

    /// Validates and commits a record: its links must be committed; an Intent must be
    /// admissible and starts `available`; a Fact with `resolves` must come from the
    /// holder of a live claim with that fencing token and resolves the Intent in the
    /// same commit; a Hint becomes active, if its author has fewer than `hint_quota`
    /// active posted Hints and fewer than [`MAX_ACTIVE_HINTS`] posted Hints are active
    /// (the contract's Hints count in neither). Submitting a committed record again
    /// changes nothing and reports `duplicate`.
    pub fn submit_within(
        &self,
        rec: &Record,
        now: u64,
        hint_quota: usize,
    ) -> CoreResult<Submitted> {
        let h = rec.hash();
        let kind = rec.content().kind();
        // One batched read of every state the submission depends on, so that a
        // session over unhydrated buffers learns its whole read set in one round.
        let reads = ReadSet::for_record(rec);
        let refs: Vec<&str> = reads.states.iter().map(String::as_str).collect();
        let mut states: std::collections::HashMap<&str, Option<Vec<u8>>> = refs
            .iter()
            .copied()
            .zip(self.objects.get_states(&refs)?)
            .collect();
        let mut take = |key: &str| states.get_mut(key).and_then(Option::take);
        if take(&keys::committed(&h)).is_some() {
            return Ok(Submitted {
                hash: h,
                kind,
                duplicate: true,
                seq: None,
            });
        }
        // A record's stated time is its author's word: bounded by the host's clock as an
        // action's is, so that no author can date a record into another window (the
        // topic and time indexes order by it). Governance does not use it at all: the
        // contract evaluates Facts at their commit time (spec/contract.md §4).
        self.check_time(rec.content().time(), now)?;
        let links = rec.content().links();
        let mut link_kinds = Vec::with_capacity(links.len());
        for link in &links {
            let key = keys::committed(link);
            match take(&key) {
                None => return Err(CoreError::UnknownParent(*link)),
                Some(v) => link_kinds.push((*link, parse_kind(&key, &v)?)),
            }
        }
        let hints_value = take(keys::HINTS);
        let hints = decode_hints(hints_value.as_deref())?;
        let mut ops = vec![CasOp {
            key: keys::committed(&h),
            expected: None,
            new: Some(kind.as_str().as_bytes().to_vec()),
        }];
        match rec.content() {
            Content::Intent(intent) => {
                for (link, k) in &link_kinds {
                    require_kind(*link, *k, &[Kind::Fact, Kind::Intent])?;
                }
                admissibility(&hints, intent, now)?;
                ops.push(CasOp {
                    key: keys::intent(&h),
                    expected: None,
                    new: Some(IntentState::Available { token: 0 }.encode()),
                });
            }
            Content::Fact(fact) => {
                for (link, k) in &link_kinds {
                    let resolved = fact.resolves.as_ref().is_some_and(|r| r.intent == *link);
                    if resolved {
                        require_kind(*link, *k, &[Kind::Intent])?;
                    } else {
                        require_kind(*link, *k, &[Kind::Fact, Kind::Intent])?;
                    }
                }
                if let Some(r) = &fact.resolves {
                    let key = keys::intent(&r.intent);
                    let current = take(&key)
                        .ok_or_else(|| CoreError::Store(corrupt(&key, "intent has no state")))?;
                    let state = IntentState::decode(&key, &current)?;
                    check_holder(&state, &fact.author, r.token, now)?;
                    ops.push(CasOp {
                        key,
                        expected: Some(current),
                        new: Some(
                            IntentState::Resolved {
                                fact: h,
                                by: fact.author,
                                token: r.token,
                            }
                            .encode(),
                        ),
                    });
                }
            }
            Content::Hint(hint) => {
                for (link, k) in &link_kinds {
                    require_kind(*link, *k, &[Kind::Fact])?;
                }
                let mut hints = Vec::clone(&hints);
                hints.retain(|a| a.hint.active_at(now));
                if hint.active_at(now) {
                    // A contract's Hint reaches `submit` only when a log is replayed
                    // (the API refuses it): it has the contract's own room.
                    if !is_contract_hint(hint) {
                        check_room(&hints, &hint.author, hint_quota)?;
                    }
                    let at = hints.partition_point(|a| a.hash < h);
                    hints.insert(
                        at,
                        ActiveHint {
                            hash: h,
                            hint: hint.clone(),
                        },
                    );
                }
                if !is_contract_hint(hint) {
                    check_posted_bytes(&hints)?;
                }
                ops.push(CasOp {
                    key: keys::HINTS.to_owned(),
                    expected: hints_value,
                    new: Some(encode_active_hints(&hints)),
                });
            }
        }
        let entry = LogEntry::Record {
            hash: h,
            kind,
            at: now,
        };
        self.kv.set(&keys::record(&h), &rec.to_json())?;
        let seq = self.commit(ops, &entry)?;
        self.write_indexes(rec)?;
        Ok(Submitted {
            hash: h,
            kind,
            duplicate: false,
            seq,
        })
    }

    /// [`act_as`](Self::act_as) for an author without operator authority.
    pub fn act(&self, action: &Action, now: u64) -> CoreResult<Applied> {
        self.act_as(action, now, false)
    }

    /// Applies a signed claim, renewal, withdrawal or retraction; `operator`: the
    /// author has operator authority (it may retract any key's Hint).
    ///
    /// Only a version 2 action signed for this store's deployment is applied
    /// ([`CoreError::LegacyAction`], [`CoreError::WrongDeployment`]), at most once
    /// ([`CoreError::Replayed`], see [`ActionLedger`]).
    pub fn act_as(&self, action: &Action, now: u64, operator: bool) -> CoreResult<Applied> {
        self.apply_action(action, now, false, operator)
    }

    /// Re-applies an action of a committed log at its commit time `now`, for a replay
    /// of the log (`nexus verify --replay`): as [`act_as`](Self::act_as) by an operator
    /// (who posted or retracted what is the server's configuration, not in the log),
    /// except that a version 1 action (of a log older than wire format v2) is applied
    /// too. A version 2 action must name this store's deployment (a replay store takes
    /// the one of the log's first version 2 action, see
    /// [`init_deployment`](Self::init_deployment)), and no action may be applied twice,
    /// whatever its version.
    pub fn replay_action(&self, action: &Action, now: u64) -> CoreResult<Applied> {
        self.apply_action(action, now, true, true)
    }

    fn apply_action(
        &self,
        action: &Action,
        now: u64,
        legacy: bool,
        operator: bool,
    ) -> CoreResult<Applied> {
        let content = action.content();
        if content.deployment().is_none() && !legacy {
            return Err(CoreError::LegacyAction);
        }
        let time = content.time();
        self.check_time(time, now)?;
        if let ActionContent::Retract { hint, author, .. } = content {
            return self.retract(action, *hint, author, now, operator);
        }
        let intent_hash = *content.target();
        let key = keys::intent(&intent_hash);
        let committed_key = keys::committed(&intent_hash);
        let acts_key = keys::acts(&intent_hash);
        let [current, committed, hints_value, ours, acts]: [Option<Vec<u8>>; 5] = self
            .objects
            .get_states(&[
                &key,
                &committed_key,
                keys::HINTS,
                keys::DEPLOYMENT,
                &acts_key,
            ])?
            .try_into()
            .map_err(|_| CoreError::Store(corrupt(&key, "bulk read returned a wrong count")))?;
        let ledger = self.check_once(action, ours.as_deref(), &acts_key, acts.as_deref())?;
        // The Intent's record is needed to check the proposer of a withdrawal, and a
        // claim's admissibility when any Hint is active (none: nothing can deny it).
        let hints = decode_hints(hints_value.as_deref())?;
        let needs_record = match content {
            ActionContent::Renew { .. } => false,
            ActionContent::Claim { .. } => hints.iter().any(|h| h.hint.active_at(now)),
            ActionContent::Withdraw { .. } => true,
            ActionContent::Retract { .. } => false,
        };
        let record = match needs_record {
            true => self.kv.get(&keys::record(&intent_hash))?,
            false => None,
        };
        let Some(current) = current else {
            return Err(match committed {
                None => CoreError::UnknownRecord(intent_hash),
                Some(v) => CoreError::WrongKind {
                    hash: intent_hash,
                    actual: parse_kind(&committed_key, &v)?,
                    expected: Kind::Intent,
                },
            });
        };
        let load_intent = || -> CoreResult<Intent> {
            let rkey = keys::record(&intent_hash);
            let bytes = record.as_deref().ok_or_else(|| {
                CoreError::Store(corrupt(&rkey, "committed record content is missing"))
            })?;
            match decode_stored_record(&rkey, bytes, &self.limits)?.content() {
                Content::Intent(i) => Ok(i.clone()),
                other => Err(CoreError::WrongKind {
                    hash: intent_hash,
                    actual: other.kind(),
                    expected: Kind::Intent,
                }),
            }
        };
        let state = IntentState::decode(&key, &current)?;
        let (next, applied) = match content {
            ActionContent::Claim {
                lease_ms, author, ..
            } => {
                self.check_lease(*lease_ms)?;
                let next = claim_transition(&state, *author, *lease_ms, now)?;
                if needs_record {
                    admissibility(&hints, &load_intent()?, now)?;
                }
                let lease = Lease {
                    intent: intent_hash,
                    token: next.token(),
                    lease_until: now.saturating_add(*lease_ms),
                    takeover: matches!(state, IntentState::Claimed { .. }),
                };
                (next, Applied::Leased(lease))
            }
            ActionContent::Renew {
                token,
                lease_ms,
                author,
                ..
            } => {
                self.check_lease(*lease_ms)?;
                check_holder(&state, author, *token, now)?;
                let lease_until = now.saturating_add(*lease_ms);
                let next = IntentState::Claimed {
                    holder: *author,
                    lease_until,
                    token: *token,
                };
                let lease = Lease {
                    intent: intent_hash,
                    token: *token,
                    lease_until,
                    takeover: false,
                };
                (next, Applied::Leased(lease))
            }
            ActionContent::Withdraw { author, .. } => {
                let proposer = load_intent()?.author;
                if proposer != *author {
                    return Err(CoreError::NotProposer { proposer });
                }
                let next = match &state {
                    IntentState::Resolved { fact, .. } => {
                        return Err(CoreError::AlreadyResolved { fact: *fact });
                    }
                    IntentState::Withdrawn { .. } => return Err(CoreError::Withdrawn),
                    other => IntentState::Withdrawn {
                        token: other.token(),
                    },
                };
                (next, Applied::Withdrawn(intent_hash))
            }
            // Dispatched to `retract` above.
            ActionContent::Retract { hint, .. } => return Err(CoreError::HintNotActive(*hint)),
        };
        let effect = CasOp {
            key,
            expected: Some(current),
            new: Some(next.encode()),
        };
        self.commit_action(action, effect, acts_key, acts, ledger, now)?;
        Ok(applied)
    }

    /// Commits an applied action: its `effect`, its entry in its target's ledger (read
    /// as `acts` from `acts_key`, pruned past twice the clock skew) and its log entry,
    /// in one commit.
    fn commit_action(
        &self,
        action: &Action,
        effect: CasOp,
        acts_key: String,
        acts: Option<Vec<u8>>,
        ledger: ActionLedger,
        now: u64,
    ) -> CoreResult<()> {
        let horizon = self.limits.max_clock_skew_ms.saturating_mul(2);
        let time = action.content().time();
        let ops = vec![
            effect,
            CasOp {
                key: acts_key,
                new: Some(ledger.with(time, action.hash(), now, horizon).encode()),
                expected: acts,
            },
        ];
        let entry = LogEntry::Action {
            action: action.to_value(),
            at: now,
        };
        self.commit(ops, &entry).map(|_| ())
    }

    /// Refuses an action signed for another deployment than the stored one (`ours`),
    /// or already in its target's ledger (`acts`, read from `acts_key`); answers the
    /// ledger, to which the action's commit adds it.
    fn check_once(
        &self,
        action: &Action,
        ours: Option<&[u8]>,
        acts_key: &str,
        acts: Option<&[u8]>,
    ) -> CoreResult<ActionLedger> {
        let ours = decode_deployment(ours)?;
        if let Some(signed) = action.content().deployment()
            && ours.as_ref() != Some(signed)
        {
            return Err(CoreError::WrongDeployment {
                signed: signed.clone(),
                ours,
            });
        }
        let ledger = ActionLedger::decode(acts_key, acts)?;
        if ledger.contains(&action.hash()) {
            return Err(CoreError::Replayed {
                action: action.hash(),
            });
        }
        Ok(ledger)
    }

    /// Refuses a stated `time` more than `max_clock_skew_ms` from the host's `now`.
    fn check_time(&self, time: u64, now: u64) -> CoreResult<()> {
        if time.abs_diff(now) > self.limits.max_clock_skew_ms {
            return Err(CoreError::ClockSkew {
                time,
                now,
                max_skew_ms: self.limits.max_clock_skew_ms,
            });
        }
        Ok(())
    }

    /// Takes Hint `hint` out of the active list in one commit, logged as the action:
    /// the Hint's author may, and an operator; a contract's Hint may not be retracted
    /// (its evaluation withdraws it).
    fn retract(
        &self,
        action: &Action,
        hint: FihHash,
        author: &crate::AuthorKey,
        now: u64,
        operator: bool,
    ) -> CoreResult<Applied> {
        let committed_key = keys::committed(&hint);
        let acts_key = keys::acts(&hint);
        let [hints_value, committed, ours, acts]: [Option<Vec<u8>>; 4] = self
            .objects
            .get_states(&[keys::HINTS, &committed_key, keys::DEPLOYMENT, &acts_key])?
            .try_into()
            .map_err(|_| {
                CoreError::Store(corrupt(keys::HINTS, "bulk read returned a wrong count"))
            })?;
        let ledger = self.check_once(action, ours.as_deref(), &acts_key, acts.as_deref())?;
        let hints = decode_hints(hints_value.as_deref())?;
        let Some(found) = hints
            .iter()
            .find(|a| a.hash == hint && a.hint.active_at(now))
        else {
            return Err(match committed {
                None => CoreError::UnknownRecord(hint),
                Some(v) => match parse_kind(&committed_key, &v)? {
                    Kind::Hint => CoreError::HintNotActive(hint),
                    actual => CoreError::WrongKind {
                        hash: hint,
                        actual,
                        expected: Kind::Hint,
                    },
                },
            });
        };
        if is_contract_hint(&found.hint) {
            return Err(CoreError::HintNotPermitted {
                author: *author,
                what: "retract a contract's Hint: the contract's evaluation withdraws it".into(),
            });
        }
        if found.hint.author != *author && !operator {
            return Err(CoreError::HintNotPermitted {
                author: *author,
                what: format!(
                    "retract Hint {hint}: only its author ({}) or an operator key may",
                    found.hint.author
                ),
            });
        }
        let kept: Vec<ActiveHint> = hints
            .iter()
            .filter(|a| a.hash != hint && a.hint.active_at(now))
            .cloned()
            .collect();
        let effect = CasOp {
            key: keys::HINTS.to_owned(),
            expected: hints_value,
            new: Some(encode_active_hints(&kept)),
        };
        self.commit_action(action, effect, acts_key, acts, ledger, now)?;
        Ok(Applied::Retracted(hint))
    }

    /// This store's deployment id, if it has one yet.
    pub fn deployment(&self) -> CoreResult<Option<Deployment>> {
        decode_deployment(self.objects.get_state(keys::DEPLOYMENT)?.as_deref())
    }

    /// The store's deployment id: the one it has, or else `candidate`, written now (by
    /// compare-and-swap from absent, so that of two first starts racing one id wins and
    /// both answer it). Hosts call this at start (or first use) with a fresh random id
    /// or the configured one; it never changes afterwards.
    pub fn init_deployment(&self, candidate: &Deployment) -> CoreResult<Deployment> {
        if let Some(d) = self.deployment()? {
            return Ok(d);
        }
        let commit = Commit {
            reads: Vec::new(),
            ops: vec![CasOp {
                key: keys::DEPLOYMENT.to_owned(),
                expected: None,
                new: Some(candidate.as_str().as_bytes().to_vec()),
            }],
            log: vec![],
        };
        match self.objects.commit(&commit)? {
            CommitOutcome::Applied { .. } => Ok(candidate.clone()),
            _ => self.deployment()?.ok_or_else(|| {
                CoreError::Store(corrupt(
                    keys::DEPLOYMENT,
                    "lost the race but nothing was written",
                ))
            }),
        }
    }

    fn check_lease(&self, lease_ms: u64) -> CoreResult<()> {
        let (min, max) = (self.limits.min_lease_ms, self.limits.max_lease_ms);
        if !(min..=max).contains(&lease_ms) {
            return Err(CoreError::LeaseOutOfRange {
                requested: lease_ms,
                min,
                max,
            });
        }
        Ok(())
    }

    fn commit(&self, ops: Vec<CasOp>, entry: &LogEntry) -> CoreResult<Option<u64>> {
        let log = vec![entry.encode()];
        self.commit_raw(&Commit {
            reads: Vec::new(),
            ops,
            log,
        })
    }

    /// The commit point: applies `commit` or reports the lost race.
    fn commit_raw(&self, commit: &Commit) -> CoreResult<Option<u64>> {
        match self.objects.commit(commit)? {
            CommitOutcome::Applied { first_seq } => Ok(first_seq),
            CommitOutcome::Conflict(failed) => Err(CoreError::Conflict {
                keys: failed.into_iter().map(|f| f.key).collect(),
            }),
            // CommitOutcome is non-exhaustive: anything else is not an applied commit.
            _ => Err(CoreError::Conflict { keys: vec![] }),
        }
    }

    /// Writes the index entries of a committed record; returns how many.
    fn write_indexes(&self, rec: &Record) -> CoreResult<usize> {
        let keys = keys::index_keys(rec);
        for key in &keys {
            self.kv.set(key, b"")?;
        }
        Ok(keys.len())
    }

    /// Facts signed by `author` under `topic` or below it, at most `limit` (in topic
    /// order, then time order; each page examines at most [`MAX_SCAN`] index entries).
    /// Other authors' Facts cost nothing here, however many there are.
    pub fn facts_by_author(
        &self,
        author: &AuthorKey,
        topic: &Topic,
        after: Option<&str>,
        limit: usize,
    ) -> CoreResult<Page> {
        self.scan_index(
            &keys::author_prefix(author, topic),
            TimeRange::default(),
            after,
            limit,
        )
    }

    /// Intents under `topic` (all if `None`) in state `state` (any if `None`; a claim
    /// whose lease lapsed counts as `available`, see [`IntentState::effective_name`]), with
    /// their priority; available ones first by priority (highest first), then by time
    /// and hash. Examines at most `scan` Intents (in key order).
    pub fn list_intents(
        &self,
        state: Option<&str>,
        topic: Option<&Topic>,
        now: u64,
        scan: usize,
    ) -> CoreResult<Vec<IntentListing>> {
        let state_keys = self.objects.list_states(keys::INTENT_PREFIX, None, scan)?;
        let refs: Vec<&str> = state_keys.iter().map(String::as_str).collect();
        let states = self.objects.get_states(&refs)?;
        let hashes: Vec<FihHash> = state_keys
            .iter()
            .filter_map(|k| k[keys::INTENT_PREFIX.len()..].parse().ok())
            .collect();
        let rec_keys: Vec<String> = hashes.iter().map(keys::record).collect();
        let rec_refs: Vec<&str> = rec_keys.iter().map(String::as_str).collect();
        let records = self.kv.get_many(&rec_refs)?;
        let hints = self.active_hints(now)?;
        let mut out = Vec::new();
        for ((key, st), (rk, rec)) in state_keys
            .iter()
            .zip(states)
            .zip(rec_keys.iter().zip(records))
        {
            let (Some(st), Some(rec)) = (st, rec) else {
                continue;
            };
            let st = IntentState::decode(key, &st)?;
            if state.is_some_and(|want| st.effective_name(now) != want) {
                continue;
            }
            let record = decode_stored_record(rk, &rec, &self.limits)?;
            let Content::Intent(intent) = record.content() else {
                continue;
            };
            if topic.is_some_and(|t| !intent.topic.starts_with(t)) {
                continue;
            }
            let priority = Self::priority_of(&hints, intent);
            out.push(IntentListing {
                record,
                state: st,
                priority,
            });
        }
        out.sort_by(|a, b| {
            b.priority
                .cmp(&a.priority)
                .then(a.record.content().time().cmp(&b.record.content().time()))
                .then(a.record.hash().cmp(&b.record.hash()))
        });
        Ok(out)
    }

    /// Scans an index whose keys are `{prefix}{time:016}/{hash}`, so ordered by time:
    /// starts at `since` directly and ends the paging past `until`.
    fn scan_by_time(
        &self,
        prefix: &str,
        range: TimeRange,
        after: Option<&str>,
        limit: usize,
    ) -> CoreResult<Page> {
        let start = match (after, range.since) {
            (Some(a), _) => Some(a.to_owned()),
            (None, Some(since)) if since > 0 => Some(format!("{prefix}{:016}", since - 1)),
            _ => None,
        };
        let mut page = self.scan_index(prefix, range, start.as_deref(), limit)?;
        // Past `until` nothing more can match.
        if let (Some(until), Some(next)) = (range.until, &page.next)
            && keys::parse_index(next).is_some_and(|(t, _)| t + 1 >= until)
        {
            page.next = None;
        }
        Ok(page)
    }

    fn scan_index(
        &self,
        prefix: &str,
        range: TimeRange,
        after: Option<&str>,
        limit: usize,
    ) -> CoreResult<Page> {
        let mut items = Vec::new();
        let mut cursor = after.map(str::to_owned);
        let mut scanned = 0;
        loop {
            let want = (MAX_SCAN - scanned).min(256);
            let batch = self.kv.list(prefix, cursor.as_deref(), want)?;
            let exhausted = batch.len() < want;
            for key in batch {
                scanned += 1;
                cursor = Some(key.clone());
                if let Some((t, h)) = keys::parse_index(&key)
                    && range.contains(t)
                {
                    items.push(h);
                    if items.len() == limit {
                        return Ok(Page {
                            items,
                            next: cursor,
                        });
                    }
                }
            }
            if exhausted {
                return Ok(Page { items, next: None });
            }
            if scanned >= MAX_SCAN {
                return Ok(Page {
                    items,
                    next: cursor,
                });
            }
        }
    }

    /// Loads the records committed in `entries` (one bulk read), in log order.
    fn load_logged_records(&self, entries: &[(u64, LogEntry)]) -> CoreResult<Vec<Record>> {
        let rec_keys: Vec<String> = entries
            .iter()
            .filter_map(|(_, e)| match e {
                LogEntry::Record { hash, .. } => Some(keys::record(hash)),
                LogEntry::Action { .. } => None,
            })
            .collect();
        let refs: Vec<&str> = rec_keys.iter().map(String::as_str).collect();
        let values = self.kv.get_many(&refs)?;
        rec_keys
            .iter()
            .zip(values)
            .map(|(key, v)| {
                let v =
                    v.ok_or_else(|| CoreError::Store(corrupt(key, "committed record missing")))?;
                decode_stored_record(key, &v, &self.limits)
            })
            .collect()
    }

    /// Rewrites the index entries of the records committed in `entries`; returns how
    /// many were written. Idempotent.
    pub fn repair_indexes(&self, entries: &[(u64, LogEntry)]) -> CoreResult<usize> {
        let mut n = 0;
        for rec in self.load_logged_records(entries)? {
            n += self.write_indexes(&rec)?;
        }
        Ok(n)
    }

    fn log_head(&self) -> CoreResult<u64> {
        Ok(match self.objects.get_state(LOG_HEAD_KEY)? {
            None => 0,
            Some(v) => parse_head(&v)?,
        })
    }
}

/// Whether a Hint came from a contract's evaluation (the only way one naming a
/// contract is committed).
pub fn is_contract_hint(hint: &Hint) -> bool {
    hint.source.as_ref().is_some_and(|s| s.contract.is_some())
}

/// Whether one more Hint posted by `author` fits: the posted Hints' room and the
/// author's quota (the contract's Hints count in neither).
fn check_room(hints: &[ActiveHint], author: &crate::AuthorKey, quota: usize) -> CoreResult<()> {
    let posted = || hints.iter().filter(|a| !is_contract_hint(&a.hint));
    let total = posted().count();
    if total >= MAX_ACTIVE_HINTS {
        return Err(CoreError::TooManyHints(total));
    }
    let active = posted().filter(|a| a.hint.author == *author).count();
    if active >= quota {
        return Err(CoreError::HintQuota {
            author: *author,
            active,
            quota,
        });
    }
    Ok(())
}

fn admissibility(hints: &[ActiveHint], intent: &Intent, now: u64) -> CoreResult<()> {
    let selecting = || {
        hints
            .iter()
            .filter(|h| h.hint.active_at(now) && h.hint.selector.selects(intent))
    };
    if selecting().any(|h| h.hint.effect == Effect::Allow) {
        return Ok(());
    }
    match selecting().find(|h| h.hint.effect == Effect::Deny) {
        Some(deny) => Err(CoreError::Inadmissible {
            hint: deny.hash,
            reason: deny.hint.reason.clone(),
        }),
        None => Ok(()),
    }
}

/// Refuses a list whose posted Hints (not the contract's) take more than
/// [`MAX_ACTIVE_HINT_BYTES`] of JSON ([`CoreError::HintListFull`]); their number is
/// bounded by [`check_room`].
fn check_posted_bytes(hints: &[ActiveHint]) -> CoreResult<()> {
    let posted: Vec<&ActiveHint> = hints
        .iter()
        .filter(|a| !is_contract_hint(&a.hint))
        .collect();
    let bytes = serde_json::to_vec(&posted).map_or(usize::MAX, |v| v.len());
    if bytes > MAX_ACTIVE_HINT_BYTES {
        return Err(CoreError::HintListFull {
            bytes,
            limit: MAX_ACTIVE_HINT_BYTES,
        });
    }
    Ok(())
}

fn decode_deployment(value: Option<&[u8]>) -> CoreResult<Option<Deployment>> {
    let Some(v) = value else { return Ok(None) };
    std::str::from_utf8(v)
        .ok()
        .and_then(|s| s.parse().ok())
        .map(Some)
        .ok_or_else(|| CoreError::Store(corrupt(keys::DEPLOYMENT, "not a deployment id")))
}

/// The stored form of the active Hint list (`hints/active`): every writer of it (a
/// Hint's submission, a retraction, the contract's Hint updates) goes through this one
/// encoding, so that the decoded-list cache below can compare stored bytes.
pub fn encode_active_hints(hints: &[ActiveHint]) -> Vec<u8> {
    serde_json::to_vec(hints).unwrap_or_default()
}

/// The last active Hint list decoded, with its stored bytes: every proposal, claim and
/// listing reads the list, which changes only when a Hint is written, so a read whose
/// bytes equal the last ones (one comparison) skips decoding up to
/// [`MAX_ACTIVE_HINTS`] Hints.
static LAST_HINTS: Mutex<Option<DecodedHints>> = Mutex::new(None);

/// Stored bytes of the active Hint list and what they decode to.
type DecodedHints = (Vec<u8>, Arc<Vec<ActiveHint>>);

fn decode_hints(value: Option<&[u8]>) -> CoreResult<Arc<Vec<ActiveHint>>> {
    let Some(bytes) = value else {
        return Ok(Arc::default());
    };
    let mut last = LAST_HINTS.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some((b, hints)) = last.as_ref()
        && b.as_slice() == bytes
    {
        return Ok(Arc::clone(hints));
    }
    let hints: Arc<Vec<ActiveHint>> = Arc::new(
        serde_json::from_slice(bytes)
            .map_err(|e| CoreError::Store(corrupt(keys::HINTS, &e.to_string())))?,
    );
    *last = Some((bytes.to_vec(), Arc::clone(&hints)));
    Ok(hints)
}

fn require_kind(link: FihHash, actual: Kind, allowed: &[Kind]) -> CoreResult<()> {
    if allowed.contains(&actual) {
        Ok(())
    } else {
        Err(CoreError::WrongKind {
            hash: link,
            actual,
            expected: allowed[0],
        })
    }
}

fn parse_kind(key: &str, v: &[u8]) -> CoreResult<Kind> {
    std::str::from_utf8(v)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| CoreError::Store(corrupt(key, "not a record kind")))
}

fn corrupt(key: &str, reason: &str) -> nexus_store::StoreError {
    nexus_store::StoreError::Corrupt {
        key: key.to_owned(),
        reason: reason.to_owned(),
    }
}

/// Reads a record back from the KV tier. Its hash is recomputed (a damaged value is
/// reported as corrupt, never served) but its signature is not re-verified: it was
/// verified when the record was accepted, and an Ed25519 check on every read would
/// dominate claims. `nexus verify` re-checks every signature of an export offline.
pub fn decode_stored_record(key: &str, bytes: &[u8], limits: &Limits) -> CoreResult<Record> {
    Record::from_stored_json(bytes, limits)
        .map_err(|e| CoreError::Store(corrupt(key, &e.to_string())))
}

impl<K, B, O> ColdStorage for CompositeColdStorage<K, B, O>
where
    K: KeyValueStore,
    B: BlobStore,
    O: ObjectStore,
{
    fn get_record(&self, hash: &FihHash) -> CoreResult<Option<Record>> {
        if self.committed_kind(hash)?.is_none() {
            return Ok(None);
        }
        self.load_record(hash).map(Some)
    }

    fn by_topic(
        &self,
        kind: Kind,
        topic: &Topic,
        range: TimeRange,
        after: Option<&str>,
        limit: usize,
    ) -> CoreResult<Page> {
        self.scan_by_time(&keys::topic_prefix(kind, topic), range, after, limit)
    }

    fn by_time(
        &self,
        kind: Kind,
        range: TimeRange,
        after: Option<&str>,
        limit: usize,
    ) -> CoreResult<Page> {
        self.scan_by_time(&keys::time_prefix(kind), range, after, limit)
    }

    fn log_entries(&self, from: u64, limit: usize) -> CoreResult<Vec<(u64, LogEntry)>> {
        let head = self.log_head()?;
        let from = from.max(1);
        if from > head || limit == 0 {
            return Ok(vec![]);
        }
        let to = head.min(from.saturating_add(limit as u64 - 1));
        let keys: Vec<String> = (from..=to).map(log_key).collect();
        let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
        let values = self.objects.get_states(&refs)?;
        let mut out = Vec::with_capacity(keys.len());
        for ((seq, key), v) in (from..=to).zip(&keys).zip(values) {
            let v =
                v.ok_or_else(|| CoreError::Store(corrupt(key, "log entry missing below head")))?;
            let entry = match serde_json::from_slice(&v) {
                Ok(entry) => entry,
                // An entry of the sharding protocol (a shard's log over N coordinator
                // shards, spec/shards.md): not the core's; skipped.
                Err(_) if is_shard_protocol_entry(&v) => continue,
                Err(e) => return Err(CoreError::Store(corrupt(key, &e.to_string()))),
            };
            out.push((seq, entry));
        }
        Ok(out)
    }
}

impl<K, B, O> FlushCapable for CompositeColdStorage<K, B, O>
where
    K: KeyValueStore,
    B: BlobStore,
    O: ObjectStore,
{
    fn flush(&self, policy: &WindowPolicy, now: u64) -> CoreResult<FlushReport> {
        self.fix_window(policy, now)?;
        self.archive_pending()
    }

    fn flush_cursor(&self) -> CoreResult<FlushCursor> {
        decode_cursor(self.objects.get_state(keys::FLUSH_CURSOR)?.as_deref())
    }
}

impl<K, B, O> CompositeColdStorage<K, B, O>
where
    K: KeyValueStore,
    B: BlobStore,
    O: ObjectStore,
{
    /// Step 1 of [`FlushCapable::flush`] alone: if no window is pending and `policy`
    /// says one is due at `now`, fixes it in the flush cursor (one compare-and-swap of
    /// the object tier; no other tier is touched). Answers the cursor afterwards, whose
    /// `pending` is the window to archive (an earlier, interrupted one included).
    ///
    /// A host whose blob tier is asynchronous (the Worker) runs this directly against
    /// its object store, so that the window is fixed before any blob is written, and
    /// then [`archive_pending`](Self::archive_pending) over buffers.
    pub fn fix_window(&self, policy: &WindowPolicy, now: u64) -> CoreResult<FlushCursor> {
        let stored = self.objects.get_state(keys::FLUSH_CURSOR)?;
        let mut cursor = decode_cursor(stored.as_deref())?;
        if cursor.pending.is_some() {
            return Ok(cursor);
        }
        let head = self.log_head()?;
        let Some((_, first)) = self.log_entries(cursor.seq + 1, 1)?.into_iter().next() else {
            return Ok(cursor);
        };
        let Some(last) = policy.close(cursor.seq, head, first.at(), now) else {
            return Ok(cursor);
        };
        // Fix the window first: a retry after a crash archives exactly it.
        cursor.pending = Some(Pending {
            first: cursor.seq + 1,
            last,
            closed_at: now,
        });
        self.put_cursor(stored.as_deref(), &cursor.encode())?;
        Ok(cursor)
    }

    /// When the next window is due, in ms from `now` (0: now, or one is pending), by
    /// `policy`; `None` when every log entry is archived. What a host's timer (the
    /// Worker's alarm) waits for.
    pub fn window_due_in(&self, policy: &WindowPolicy, now: u64) -> CoreResult<Option<u64>> {
        let cursor = self.flush_cursor()?;
        if cursor.pending.is_some() {
            return Ok(Some(0));
        }
        let head = self.log_head()?;
        let Some((_, first)) = self.log_entries(cursor.seq + 1, 1)?.into_iter().next() else {
            return Ok(None);
        };
        Ok(policy.due_in(cursor.seq, head, first.at(), now))
    }

    /// Steps 2–5 of [`FlushCapable::flush`]: archives the window pending in the flush
    /// cursor (see [`fix_window`](Self::fix_window)), if any: reads its entries and
    /// records, writes its archive and then its manifest, rewrites its records' index
    /// entries, and moves the cursor past it by compare-and-swap. Without a pending
    /// window it writes nothing (`window: None`).
    pub fn archive_pending(&self) -> CoreResult<FlushReport> {
        let stored = self.objects.get_state(keys::FLUSH_CURSOR)?;
        let cursor = decode_cursor(stored.as_deref())?;
        let expected = stored;
        let Some(pending) = cursor.pending else {
            return Ok(FlushReport {
                cursor: cursor.seq,
                ..FlushReport::default()
            });
        };
        let count = usize::try_from(pending.last - pending.first + 1).unwrap_or(usize::MAX);
        let entries = self.log_entries(pending.first, count)?;
        if entries.len() != count {
            return Err(CoreError::Store(corrupt(
                keys::FLUSH_CURSOR,
                "pending window passes the log head",
            )));
        }
        let records = self.load_logged_records(&entries)?;
        let mut bytes = Vec::new();
        let mut recs = records.iter();
        for (seq, entry) in &entries {
            let rec = match entry {
                LogEntry::Record { .. } => recs.next(),
                LogEntry::Action { .. } => None,
            };
            let line = archive::encode_line(*seq, entry, rec).ok_or_else(|| {
                CoreError::Store(corrupt(&log_key(*seq), "entry has no archive line"))
            })?;
            bytes.extend_from_slice(&line);
        }
        let manifest = Manifest {
            format: archive::FORMAT,
            window: cursor.windows + 1,
            first: pending.first,
            last: pending.last,
            archive: archive::keys::archive(pending.first, pending.last),
            bytes: bytes.len() as u64,
            blake3: archive::blake3_hex(&bytes),
            prev: cursor.manifest.clone(),
            checkpoint: self.checkpoint_at(pending.last)?,
            closed_at: pending.closed_at,
        };
        let encoded = manifest.encode();
        // Archive, then manifest, then the cursor: the cursor never passes what is durable.
        self.blobs.put_blob(&manifest.archive, &bytes)?;
        self.blobs
            .put_blob(&archive::keys::manifest(manifest.first), &encoded)?;
        let mut indexed = 0;
        for rec in &records {
            indexed += self.write_indexes(rec)?;
        }
        let done = FlushCursor {
            seq: pending.last,
            windows: manifest.window,
            manifest: Some(archive::blake3_hex(&encoded)),
            pending: None,
        };
        self.put_cursor(expected.as_deref(), &done.encode())?;
        Ok(FlushReport {
            cursor: done.seq,
            window: Some(manifest),
            indexed,
        })
    }
}

fn decode_cursor(bytes: Option<&[u8]>) -> CoreResult<FlushCursor> {
    FlushCursor::decode(keys::FLUSH_CURSOR, bytes)
        .map_err(|e| CoreError::Store(corrupt(keys::FLUSH_CURSOR, &e.to_string())))
}

impl<K, B, O> CompositeColdStorage<K, B, O>
where
    K: KeyValueStore,
    B: BlobStore,
    O: ObjectStore,
{
    fn put_cursor(&self, expected: Option<&[u8]>, new: &[u8]) -> CoreResult<()> {
        self.commit_raw(&Commit {
            reads: Vec::new(),
            ops: vec![CasOp {
                key: keys::FLUSH_CURSOR.to_owned(),
                expected: expected.map(<[u8]>::to_vec),
                new: Some(new.to_vec()),
            }],
            log: vec![],
        })
        .map(|_| ())
    }

    /// Reads the hot state ([`archive::is_hot_key`]) as of one log head: the head is
    /// read before and after the states, and the capture is retried (up to `attempts`
    /// times) while commits moved it, since every commit that changes state appends to
    /// the log. `None` when the log never stood still long enough.
    pub fn capture_hot_state(&self, attempts: usize) -> CoreResult<Option<HotState>> {
        for _ in 0..attempts {
            let before = self.log_head()?;
            let mut states = std::collections::BTreeMap::new();
            let mut after_key: Option<String> = None;
            loop {
                let page = self.objects.list_states("", after_key.as_deref(), 1_000)?;
                let hot: Vec<&str> = page
                    .iter()
                    .map(String::as_str)
                    .filter(|k| archive::is_hot_key(k))
                    .collect();
                for (k, v) in hot.iter().zip(self.objects.get_states(&hot)?) {
                    let Some(v) = v else { continue };
                    let v = String::from_utf8(v).map_err(|_| {
                        CoreError::Store(corrupt(k, "hot state value is not UTF-8"))
                    })?;
                    states.insert((*k).to_owned(), v);
                }
                if page.len() < 1_000 {
                    break;
                }
                after_key = page.last().cloned();
            }
            if self.log_head()? == before {
                return Ok(Some(HotState {
                    head: before,
                    states,
                }));
            }
        }
        Ok(None)
    }

    /// Writes `state` as a snapshot: its chunks, then its manifest (the snapshot exists
    /// once the manifest does). Answers the manifest's key.
    pub fn write_snapshot(&self, state: &HotState, now: u64) -> CoreResult<String> {
        let mut blobs = state.to_blobs(archive::SNAPSHOT_CHUNK_BYTES, now);
        blobs.manifest.checkpoint = self.checkpoint_at(state.head)?;
        for (key, bytes) in &blobs.chunks {
            self.blobs.put_blob(key, bytes)?;
        }
        let manifest = serde_json::to_vec(&blobs.manifest).unwrap_or_default();
        self.blobs.put_blob(&blobs.manifest_key, &manifest)?;
        Ok(blobs.manifest_key)
    }

    /// Restores archived entries as they were committed, without re-running their
    /// lifecycle (a restore does this for the entries a snapshot covers): the records'
    /// content, then one commit of their committed markers and log entries (which must
    /// get exactly the entries' seqs), then their index entries. Every record and action
    /// was verified (hash, signature) by its parser.
    pub fn load_archived(&self, entries: &[(u64, u64, Archived)]) -> CoreResult<()> {
        let Some((first, _, _)) = entries.first() else {
            return Ok(());
        };
        let mut ops = Vec::new();
        let mut log = Vec::with_capacity(entries.len());
        for (_, at, item) in entries {
            let entry = match item {
                Archived::Record(rec) => {
                    let h = rec.hash();
                    self.kv.set(&keys::record(&h), &rec.to_json())?;
                    ops.push(CasOp {
                        key: keys::committed(&h),
                        expected: None,
                        new: Some(rec.content().kind().to_string().into_bytes()),
                    });
                    LogEntry::of_record(rec, *at)
                }
                Archived::Action(a) => LogEntry::Action {
                    action: a.clone(),
                    at: *at,
                },
            };
            log.push(entry.encode());
        }
        let seq = self.commit_raw(&Commit {
            reads: Vec::new(),
            ops,
            log,
        })?;
        if seq.is_some_and(|s| s != *first) {
            return Err(CoreError::Store(corrupt(
                &log_key(*first),
                &format!("restored entries numbered from {seq:?}"),
            )));
        }
        for (_, _, item) in entries {
            if let Archived::Record(rec) = item {
                self.write_indexes(rec)?;
            }
        }
        Ok(())
    }

    /// Writes a snapshot's hot state into a store being restored (its keys must be
    /// absent), and the flush cursor `cursor` in the same commit.
    pub fn install_hot_state(&self, state: &HotState, cursor: &FlushCursor) -> CoreResult<()> {
        let mut ops: Vec<CasOp> = state
            .states
            .iter()
            .filter(|(k, _)| k.as_str() != keys::FLUSH_CURSOR && k.as_str() != LOG_HEAD_KEY)
            .map(|(k, v)| CasOp {
                key: k.clone(),
                expected: None,
                new: Some(v.clone().into_bytes()),
            })
            .collect();
        ops.push(CasOp {
            key: keys::FLUSH_CURSOR.to_owned(),
            expected: self.objects.get_state(keys::FLUSH_CURSOR)?,
            new: Some(cursor.encode()),
        });
        self.commit_raw(&Commit {
            reads: Vec::new(),
            ops,
            log: vec![],
        })
        .map(|_| ())
    }

    /// Sets the flush cursor of a restored store to the end of the archive chain, so
    /// that its next window continues the chain.
    pub fn set_flush_cursor(&self, cursor: &FlushCursor) -> CoreResult<()> {
        let current = self.objects.get_state(keys::FLUSH_CURSOR)?;
        self.put_cursor(current.as_deref(), &cursor.encode())
    }
}

/// One archived log entry's content, parsed (and so verified).
#[derive(Debug, Clone)]
pub enum Archived {
    /// A record (boxed: a batch holds many entries of either kind).
    Record(Box<Record>),
    /// An action's wire JSON (as the log stores it).
    Action(Value),
}
