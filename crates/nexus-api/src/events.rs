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

use nexus_core::{FihHash, Record, TopicGlob};
use serde_json::Value;

use crate::ApiError;
use crate::query::Query;

/// Log entries read per page while a stream catches up.
pub const EVENTS_PAGE: usize = 256;
/// Seconds between heartbeats on a stream with nothing to send.
pub const HEARTBEAT_SECS: u64 = 15;
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
/// (Hints, which have none, only without a filter), and actions on the Intents it
/// matches.
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
        match (&self.topic, record.content().topic()) {
            (None, _) => true,
            (Some(g), Some(t)) => g.matches(t),
            (Some(_), None) => false,
        }
    }

    /// Remembers whether an Intent's record matches (for actions on it).
    pub fn learn(&mut self, intent: &Record) {
        if self.intents.len() >= FILTER_MEMORY {
            self.intents.clear();
        }
        let m = self.matches(intent);
        self.intents.insert(intent.hash(), m);
    }

    /// Whether to send `entry` (a log entry as `GET /v1/log` answers it).
    pub fn verdict(&mut self, entry: &Value) -> Verdict {
        if self.topic.is_none() {
            return Verdict::Send;
        }
        if let Some(r) = entry.get("record") {
            // The server's own log: it parsed when it was committed.
            let Ok(record) = Record::from_value(r.clone(), &nexus_core::Limits::default()) else {
                return Verdict::Skip;
            };
            if record.content().kind() == nexus_core::Kind::Intent {
                self.learn(&record);
            }
            return if self.matches(&record) {
                Verdict::Send
            } else {
                Verdict::Skip
            };
        }
        let target = entry
            .get("action")
            .and_then(|a| a.get("intent").or_else(|| a.get("hint")))
            .and_then(Value::as_str)
            .and_then(|h| h.parse::<FihHash>().ok());
        match target {
            None => Verdict::Skip,
            Some(h) => match self.intents.get(&h) {
                Some(true) => Verdict::Send,
                Some(false) => Verdict::Skip,
                None => Verdict::NeedIntent(h),
            },
        }
    }

    /// An action's target that could not be read (not an Intent, or gone): skip its
    /// actions from now on.
    pub fn unknown(&mut self, h: FihHash) {
        self.intents.insert(h, false);
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
}
