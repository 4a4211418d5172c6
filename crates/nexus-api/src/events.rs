//! `GET /v1/events`: the commit log as Server-Sent Events, one event per committed log
//! entry (spec/api.md, "Live events"). What both hosts share lives here: the query,
//! the frames, and which entries a topic filter keeps; a host reads the log with
//! [`Job::log`](crate::Job::log) pages and writes the frames.
//!
//! ```text
//! id: 42
//! event: entry
//! data: {"seq":42,"at":…,"record":{…}}
//!
//! : heartbeat
//! ```

use std::collections::HashMap;

use nexus_core::{FihHash, Record, Topic, TopicGlob};
use serde_json::Value;

use crate::ApiError;
use crate::query::Query;

/// Log entries read per page while a stream catches up.
pub const EVENTS_PAGE: usize = 256;
/// Seconds between heartbeats on a stream with nothing to send (the wire's, which
/// clients reckon their idle timeout from).
pub use nexus_wire::HEARTBEAT_SECS;
/// Most Intent topics one stream remembers for its topic filter (past it, it starts
/// afresh and looks Intents up again).
pub const FILTER_MEMORY: usize = 100_000;

/// What a stream sends: entries from `from` on, those `topic` selects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventsQuery {
    /// First `seq` sent (1: the whole log).
    pub from: u64,
    /// Only records under this topic glob and actions on Intents under it.
    pub topic: Option<TopicGlob>,
}

impl EventsQuery {
    /// Parses `from` and `topic`; a `Last-Event-ID` (the `seq` of the last event the
    /// client got, sent by a reconnecting `EventSource`) overrides `from` with the
    /// entry after it.
    pub fn parse(query: Option<&str>, last_event_id: Option<&str>) -> Result<Self, ApiError> {
        let q = Query::parse(query, &["from", "topic"])?;
        let mut from = q.int("from", 1, 0, u64::MAX)?.max(1);
        if let Some(id) = last_event_id.map(str::trim).filter(|s| !s.is_empty()) {
            let last: u64 = id.parse().map_err(|_| {
                ApiError::bad_request(format!("Last-Event-ID must be a seq, got {id:?}"))
                    .with("parameter", "Last-Event-ID")
            })?;
            from = last.saturating_add(1);
        }
        let topic = q
            .get("topic")
            .map(|t| {
                t.parse::<TopicGlob>().map_err(|e| {
                    ApiError::bad_request(format!("topic: {e}")).with("parameter", "topic")
                })
            })
            .transpose()?;
        Ok(Self { from, topic })
    }
}

/// The frame of one log entry (as `GET /v1/log` answers it).
pub fn entry_frame(entry: &Value) -> String {
    let seq = entry.get("seq").and_then(Value::as_u64).unwrap_or(0);
    format!("id: {seq}\nevent: entry\ndata: {entry}\n\n")
}

/// A heartbeat (an SSE comment, ignored by clients).
pub const HEARTBEAT_FRAME: &str = ": heartbeat\n\n";

/// The first frame of a stream: how long a client waits before reconnecting.
pub const RETRY_FRAME: &str = "retry: 1000\n\n";

/// The entries of a `GET /v1/log` page answer ([`Job::log`](crate::Job::log)), or the
/// answer's error body (one line of JSON) when it is not a page.
pub fn page_entries(page: &crate::Response) -> Result<Vec<Value>, String> {
    if page.status != 200 {
        return Err(one_line(&page.body));
    }
    Ok(serde_json::from_slice::<Value>(&page.body)
        .ok()
        .and_then(|v| v.get("entries").and_then(Value::as_array).cloned())
        .unwrap_or_default())
}

/// The request that reads record `h` (its answer goes to [`answered_record`]).
pub fn record_request(h: &FihHash) -> crate::Request {
    crate::Request::new("GET", &format!("/v1/records/{h}"), Vec::new())
}

/// The record of a `GET /v1/records/{id}` answer: `Ok(None)` when there is none,
/// `Err` (the error body, one line of JSON) when the read failed.
pub fn answered_record(r: &crate::Response) -> Result<Option<Record>, String> {
    match r.status {
        200 => {}
        404 => return Ok(None),
        _ => return Err(one_line(&r.body)),
    }
    let body: Value = serde_json::from_slice(&r.body).map_err(|e| e.to_string())?;
    Ok(body
        .get("record")
        .and_then(|r| Record::from_value(r.clone(), &nexus_core::Limits::default()).ok()))
}

fn one_line(body: &[u8]) -> String {
    String::from_utf8_lossy(body).replace('\n', " ")
}

/// What a log entry changes besides adding itself: the state of the Intent it acts on
/// or resolves, and the set of Hints in force. Read from the entry's JSON members, as
/// [`EventFilter::verdict`] reads them; what a client watching views (an Intent's
/// state, the Hints) goes by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Concerns {
    /// The Intent proposed, claimed, renewed, withdrawn or resolved by the entry.
    pub intent: Option<FihHash>,
    /// Whether the entry adds a Hint or retracts one.
    pub hints: bool,
}

impl Concerns {
    /// What `entry` (a log entry as `GET /v1/log` answers it) changes.
    pub fn of(entry: &Value) -> Self {
        let hash_of = |v: Option<&Value>| {
            v.and_then(Value::as_str)
                .and_then(|h| h.parse::<FihHash>().ok())
        };
        if let Some(r) = entry.get("record") {
            return match r.get("kind").and_then(Value::as_str) {
                Some("intent") => Self {
                    intent: hash_of(r.get("hash")),
                    hints: false,
                },
                Some("fact") => Self {
                    intent: hash_of(r.get("resolves").and_then(|x| x.get("intent"))),
                    hints: false,
                },
                Some("hint") => Self {
                    intent: None,
                    hints: true,
                },
                _ => Self::default(),
            };
        }
        let Some(action) = entry.get("action") else {
            return Self::default();
        };
        Self {
            intent: hash_of(action.get("intent")),
            hints: action.get("hint").is_some(),
        }
    }
}

/// What the filter says of an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Send it.
    Send,
    /// Do not.
    Skip,
    /// An action on an Intent this stream has not seen: [`EventFilter::learn`] its
    /// record, then ask again.
    NeedIntent(FihHash),
}

/// Which entries a stream's topic filter keeps: records whose topic it matches
/// (Hints, which have none, only without a filter), Facts that resolve an Intent it
/// matches, and actions on the Intents it matches.
#[derive(Debug, Default)]
pub struct EventFilter {
    topic: Option<TopicGlob>,
    intents: HashMap<FihHash, bool>,
}

impl EventFilter {
    /// The filter of `topic` (`None`: every entry).
    pub fn new(topic: Option<TopicGlob>) -> Self {
        Self {
            topic,
            intents: HashMap::new(),
        }
    }

    fn matches(&self, record: &Record) -> bool {
        self.matches_topic(record.content().topic().map(|t| t.as_str()))
    }

    fn matches_topic(&self, topic: Option<&str>) -> bool {
        match (&self.topic, topic) {
            (None, _) => true,
            (Some(g), Some(t)) => t.parse::<Topic>().is_ok_and(|t| g.matches(&t)),
            (Some(_), None) => false,
        }
    }

    /// Remembers whether an Intent's record matches (for actions on it).
    pub fn learn(&mut self, intent: &Record) {
        let m = self.matches(intent);
        self.remember(intent.hash(), m);
    }

    fn remember(&mut self, h: FihHash, matches: bool) {
        if self.intents.len() >= FILTER_MEMORY {
            self.intents.clear();
        }
        self.intents.insert(h, matches);
    }

    /// What an entry's target Intent says: send when it matches, or ask for it.
    fn by_intent(&self, h: FihHash) -> Verdict {
        match self.intents.get(&h) {
            Some(true) => Verdict::Send,
            Some(false) => Verdict::Skip,
            None => Verdict::NeedIntent(h),
        }
    }

    /// Whether to send `entry` (a log entry of the server's own log, as `GET /v1/log`
    /// answers it). Read from its JSON members (`kind`, `topic`, `hash`, `resolves`):
    /// the log was verified when it was committed, so nothing is parsed or checked
    /// again here.
    pub fn verdict(&mut self, entry: &Value) -> Verdict {
        if self.topic.is_none() {
            return Verdict::Send;
        }
        let hash_of = |v: Option<&Value>| {
            v.and_then(Value::as_str)
                .and_then(|h| h.parse::<FihHash>().ok())
        };
        if let Some(r) = entry.get("record") {
            let topic = r.get("topic").and_then(Value::as_str);
            let matches = self.matches_topic(topic);
            match r.get("kind").and_then(Value::as_str) {
                Some("intent") => {
                    if let Some(h) = hash_of(r.get("hash")) {
                        self.remember(h, matches);
                    }
                }
                // A Fact that resolves an Intent the filter matches is sent too,
                // whatever its own topic: it ends that Intent.
                Some("fact") if !matches => {
                    if let Some(h) = hash_of(r.get("resolves").and_then(|x| x.get("intent"))) {
                        return self.by_intent(h);
                    }
                }
                _ => {}
            }
            return if matches {
                Verdict::Send
            } else {
                Verdict::Skip
            };
        }
        let Some(action) = entry.get("action") else {
            return Verdict::Skip;
        };
        // Retractions target Hints, which have no topic: never under a filter.
        match hash_of(action.get("intent")) {
            None => Verdict::Skip,
            Some(h) => self.by_intent(h),
        }
    }

    /// An action's target that could not be read (not an Intent, or gone): skip its
    /// actions from now on.
    pub fn unknown(&mut self, h: FihHash) {
        self.remember(h, false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_event_id_resumes_after_it_and_bad_input_is_refused() {
        assert_eq!(EventsQuery::parse(None, None).expect("ok").from, 1);
        assert_eq!(
            EventsQuery::parse(Some("from=5"), None).expect("ok").from,
            5
        );
        assert_eq!(
            EventsQuery::parse(Some("from=5"), Some("41"))
                .expect("ok")
                .from,
            42
        );
        assert!(EventsQuery::parse(Some("from=x"), None).is_err());
        assert!(EventsQuery::parse(None, Some("nope")).is_err());
        assert!(EventsQuery::parse(Some("topic=a//b"), None).is_err());
        assert!(EventsQuery::parse(Some("limit=3"), None).is_err());
        let q = EventsQuery::parse(Some("topic=chem%2F**"), None).expect("ok");
        assert_eq!(q.topic.map(|t| t.to_string()).as_deref(), Some("chem/**"));
    }

    #[test]
    fn frames_carry_the_seq_as_their_id() {
        let e = serde_json::json!({"seq": 7, "at": 1, "record": {}});
        assert_eq!(
            entry_frame(&e),
            "id: 7\nevent: entry\ndata: {\"at\":1,\"record\":{},\"seq\":7}\n\n"
        );
    }

    #[test]
    fn an_entry_concerns_the_intent_it_acts_on_or_resolves_and_hints_it_adds_or_retracts() {
        let h = |c: char| c.to_string().repeat(64);
        let hash = |c: char| h(c).parse::<FihHash>().expect("hash");
        let of = |v: Value| Concerns::of(&v);
        let intent = |c| Concerns {
            intent: Some(hash(c)),
            hints: false,
        };
        assert_eq!(
            of(serde_json::json!({"record": {"kind": "intent", "hash": h('a')}})),
            intent('a')
        );
        assert_eq!(
            of(serde_json::json!({"action": {"kind": "claim", "intent": h('a')}})),
            intent('a')
        );
        assert_eq!(
            of(
                serde_json::json!({"record": {"kind": "fact", "hash": h('b'),
                "resolves": {"intent": h('a'), "token": 1}}})
            ),
            intent('a')
        );
        assert_eq!(
            of(serde_json::json!({"record": {"kind": "fact", "hash": h('b')}})),
            Concerns::default()
        );
        let hints = Concerns {
            intent: None,
            hints: true,
        };
        assert_eq!(
            of(serde_json::json!({"record": {"kind": "hint", "hash": h('c')}})),
            hints
        );
        assert_eq!(
            of(serde_json::json!({"action": {"kind": "retract", "hint": h('c')}})),
            hints
        );
    }

    #[test]
    fn a_filter_keeps_its_topic_the_actions_on_it_and_the_facts_resolving_it() {
        let glob = "chem/**".parse().expect("glob");
        let mut f = EventFilter::new(Some(glob));
        let h = |c: char| c.to_string().repeat(64);
        let intent = |hash: &str, topic: &str| serde_json::json!({"seq": 1, "record": {"kind": "intent", "hash": hash, "topic": topic}});
        assert_eq!(f.verdict(&intent(&h('a'), "chem/x")), Verdict::Send);
        assert_eq!(f.verdict(&intent(&h('b'), "bio/x")), Verdict::Skip);
        let claim =
            |hash: &str| serde_json::json!({"seq": 2, "action": {"kind": "claim", "intent": hash}});
        assert_eq!(f.verdict(&claim(&h('a'))), Verdict::Send);
        assert_eq!(f.verdict(&claim(&h('b'))), Verdict::Skip);
        let unseen: FihHash = h('c').parse().expect("hash");
        assert_eq!(f.verdict(&claim(&h('c'))), Verdict::NeedIntent(unseen));
        f.unknown(unseen);
        assert_eq!(f.verdict(&claim(&h('c'))), Verdict::Skip);
        // A Fact elsewhere that resolves a matched Intent is sent; one that resolves
        // an unmatched Intent is not.
        let fact = |topic: &str, resolves: &str| {
            serde_json::json!({"seq": 3, "record":
            {"kind": "fact", "hash": h('d'), "topic": topic, "resolves": {"intent": resolves, "token": 1}}})
        };
        assert_eq!(f.verdict(&fact("results/x", &h('a'))), Verdict::Send);
        assert_eq!(f.verdict(&fact("results/x", &h('b'))), Verdict::Skip);
        assert_eq!(f.verdict(&fact("chem/y", &h('b'))), Verdict::Send);
        // Hints and retractions have no topic.
        let hint = serde_json::json!({"seq": 4, "record": {"kind": "hint", "hash": h('e')}});
        assert_eq!(f.verdict(&hint), Verdict::Skip);
        let retract = serde_json::json!({"seq": 5, "action": {"kind": "retract", "hint": h('e')}});
        assert_eq!(f.verdict(&retract), Verdict::Skip);
        // Without a filter, everything.
        assert_eq!(EventFilter::new(None).verdict(&retract), Verdict::Send);
    }
}
