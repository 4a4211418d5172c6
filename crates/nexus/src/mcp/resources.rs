//! The board as MCP resources, and notifications when the views change.
//!
//! | URI | what `resources/read` answers | changes |
//! |---|---|---|
//! | `nexus://record/{id}` | `{"record","kind","parents"}` (`GET /v1/records/{id}`) | never (records are immutable) |
//! | `nexus://intent/{id}` | `{"intent","state","priority"}` (`GET /v1/intents/{id}`: claim holder, lease, token, resolution) | on each claim, renewal, withdrawal and resolution |
//! | `nexus://hints` | the Hints in force (`GET /v1/hints`) | when a Hint is added or retracted |
//!
//! `{id}` is a hash or a prefix of at least 8 hex digits. A subscription
//! (`resources/subscribe`, or `subscriptions/listen` from protocol 2026-07-28 on) to an
//! Intent or to the Hints gets `notifications/resources/updated` with the URI it
//! subscribed to when a committed log entry changes that view. What drives them is one
//! `GET /v1/events` stream per `nexus mcp` process, opened at the first subscription
//! from the log head of that moment (so nothing committed after a subscription is
//! answered is missed) and fanned out to every session: no view is polled. A
//! `subscriptions/listen` is acknowledged by the SDK before the listener runs, so each
//! of its views is also notified once when the listener starts: read on that, and no
//! change between the acknowledgment and the listener is lost. A lease
//! that lapses commits nothing and so notifies nothing (the view's `lease_until` says
//! when it will lapse), nor does a Hint that expires.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use nexus_api::Concerns;
use nexus_client::{Client, ClientError};
use rmcp::ErrorData;
use rmcp::model::{
    ReadResourceResult, Resource, ResourceContents, ResourceTemplate,
    ResourceUpdatedNotificationParam,
};
use rmcp::service::{Peer, RoleServer};
use serde_json::{Value, json};
use tokio::sync::broadcast;

use super::{Failure, hints_json, intent_json, record_json};

/// URI of a record (immutable).
pub const RECORD_TEMPLATE: &str = "nexus://record/{id}";
/// URI of an Intent's state (mutable).
pub const INTENT_TEMPLATE: &str = "nexus://intent/{id}";
/// URI of the Hints in force (mutable).
pub const HINTS_URI: &str = "nexus://hints";
/// Most resources one MCP session (or one `subscriptions/listen`) may subscribe to.
pub const MAX_SUBSCRIPTIONS: usize = 256;
/// Changes buffered for each session's forwarder; a session that falls further behind
/// is told that every view it subscribed to changed (a spurious update is harmless, a
/// missed one is not).
const FANOUT_CAPACITY: usize = 1_024;
/// Pause before the shared event stream is opened again after it broke.
const RECONNECT: Duration = Duration::from_secs(1);

const JSON: &str = "application/json";

/// A resource URI, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Uri {
    Record(String),
    Intent(String),
    Hints,
}

impl Uri {
    fn parse(uri: &str) -> Result<Self, ErrorData> {
        let id = |rest: &str| {
            if rest.is_empty() || rest.contains('/') {
                Err(not_found(uri, "no such resource".into()))
            } else {
                Ok(rest.to_owned())
            }
        };
        if uri == HINTS_URI {
            Ok(Uri::Hints)
        } else if let Some(rest) = uri.strip_prefix("nexus://record/") {
            id(rest).map(Uri::Record)
        } else if let Some(rest) = uri.strip_prefix("nexus://intent/") {
            id(rest).map(Uri::Intent)
        } else {
            Err(not_found(
                uri,
                format!(
                    "no such resource: neXus serves {RECORD_TEMPLATE}, {INTENT_TEMPLATE} and {HINTS_URI}"
                ),
            ))
        }
    }
}

fn not_found(uri: &str, message: String) -> ErrorData {
    ErrorData::resource_not_found(message, Some(json!({ "uri": uri })))
}

/// The MCP error of a failed read of `uri`: `resource not found` when the API answered
/// 404, `invalid params` (with the API's error object) for other refusals.
fn read_error(uri: &str, e: ClientError) -> ErrorData {
    let status = e.status();
    match Failure::from(e) {
        Failure::Api(api) if status == Some(404) => {
            let message = api["message"].as_str().unwrap_or("not found").to_owned();
            ErrorData::resource_not_found(message, Some(json!({"uri": uri, "error": api})))
        }
        Failure::Api(api) if status.is_some_and(|s| s < 500) => {
            let message = api["message"].as_str().unwrap_or("refused").to_owned();
            ErrorData::invalid_params(message, Some(json!({"uri": uri, "error": api})))
        }
        Failure::Api(api) => ErrorData::internal_error(
            format!("the server failed: {}", api["message"]),
            Some(json!({"uri": uri, "error": api})),
        ),
        Failure::Other(m) => ErrorData::internal_error(m, Some(json!({ "uri": uri }))),
    }
}

/// The resource templates (`resources/templates/list`).
pub fn templates() -> Vec<ResourceTemplate> {
    vec![
        ResourceTemplate::new(RECORD_TEMPLATE, "record")
            .with_title("A record")
            .with_description(
                "An Intent, Fact or Hint by hash (or a prefix of at least 8 hex digits), \
                 verified, with its parents. Records never change.",
            )
            .with_mime_type(JSON),
        ResourceTemplate::new(INTENT_TEMPLATE, "intent")
            .with_title("An Intent's state")
            .with_description(
                "An Intent and its state: who holds the claim, the lease end, the fencing \
                 token, the resolving Fact; and its Hint priority. Subscribe to be told \
                 when it is claimed, renewed, withdrawn or resolved.",
            )
            .with_mime_type(JSON),
    ]
}

/// The concrete resources (`resources/list`): the Hints in force.
pub fn resources() -> Vec<Resource> {
    vec![
        Resource::new(HINTS_URI, "hints")
            .with_title("Hints in force")
            .with_description(
                "The deny, allow and priority Hints in force. Subscribe to be told when \
                 one is added or retracted.",
            )
            .with_mime_type(JSON),
    ]
}

/// `resources/read` of `uri` (blocking: the client is synchronous).
pub fn read(client: &Client, uri: &str) -> Result<ReadResourceResult, ErrorData> {
    let value = view(client, &Uri::parse(uri)?, uri)?;
    Ok(ReadResourceResult::new(vec![
        ResourceContents::text(value.to_string(), uri).with_mime_type(JSON),
    ]))
}

fn view(client: &Client, parsed: &Uri, uri: &str) -> Result<Value, ErrorData> {
    let e = |e| read_error(uri, e);
    match parsed {
        Uri::Record(id) => client.record(id).map(|r| record_json(&r)).map_err(e),
        Uri::Intent(id) => client.intent(id).map(|i| intent_json(&i)).map_err(e),
        Uri::Hints => client.hints().map_err(e).and_then(|h| {
            hints_json(&h).map_err(|_| ErrorData::internal_error("cannot encode the Hints", None))
        }),
    }
}

/// Checks that `uri` names a view that exists and can change, and answers the key the
/// change feed names it by (the full hash for an Intent).
pub fn subscription_key(client: &Client, uri: &str) -> Result<String, ErrorData> {
    match Uri::parse(uri)? {
        Uri::Record(_) => Err(ErrorData::invalid_params(
            format!("{uri}: records never change, there is nothing to subscribe to"),
            Some(json!({ "uri": uri })),
        )),
        Uri::Hints => Ok(HINTS_URI.to_owned()),
        Uri::Intent(id) => {
            let item = client.intent(&id).map_err(|e| read_error(uri, e))?;
            Ok(intent_key(&item.record.hash().to_hex()))
        }
    }
}

fn intent_key(hash: &str) -> String {
    format!("nexus://intent/{hash}")
}

/// The views a log entry changes, by key.
fn changed(entry: &Value) -> Vec<String> {
    let c = Concerns::of(entry);
    let mut keys: Vec<String> = c
        .intent
        .map(|h| intent_key(&h.to_hex()))
        .into_iter()
        .collect();
    if c.hints {
        keys.push(HINTS_URI.to_owned());
    }
    keys
}

/// Which views changed: the keys of one entry, or `None` when a forwarder fell behind
/// the feed and lost changes, in which case every view may have changed.
pub type Change = Option<Arc<[String]>>;

/// The change feed of one `nexus mcp` process: one `GET /v1/events` stream, opened at
/// the first subscription, fanned out to every session's forwarder.
pub struct Changes {
    client: Client,
    tx: OnceLock<broadcast::Sender<Change>>,
}

impl Changes {
    /// The feed of the server `client` talks to (not opened yet).
    pub fn new(client: Client) -> Self {
        Self {
            client,
            tx: OnceLock::new(),
        }
    }

    /// A receiver of the changes committed from now on; opens the stream on first use.
    /// Blocking: the first call reads the log head.
    pub fn receiver(&self) -> Result<broadcast::Receiver<Change>, ErrorData> {
        if let Some(tx) = self.tx.get() {
            return Ok(tx.subscribe());
        }
        let head = self
            .client
            .health()
            .map_err(|e| read_error(HINTS_URI, e))?
            .log_head;
        let mut started = false;
        let tx = self.tx.get_or_init(|| {
            started = true;
            broadcast::channel(FANOUT_CAPACITY).0
        });
        let rx = tx.subscribe();
        if started {
            let (client, tx) = (self.client.clone(), tx.clone());
            std::thread::Builder::new()
                .name("nexus-mcp-changes".into())
                .spawn(move || feed(&client, head + 1, &tx))
                .map_err(|e| {
                    ErrorData::internal_error(format!("cannot start the change feed: {e}"), None)
                })?;
        }
        Ok(rx)
    }
}

/// Reads the log from `from` on, for ever, and sends what each entry changes; after a
/// broken stream it resumes after the last entry it read, so no entry is skipped.
fn feed(client: &Client, mut from: u64, tx: &broadcast::Sender<Change>) {
    loop {
        match client.events(from, None) {
            Ok(stream) => {
                for entry in stream {
                    let Ok(entry) = entry else { break };
                    if let Some(seq) = entry.get("seq").and_then(Value::as_u64) {
                        from = seq + 1;
                    }
                    let keys = changed(&entry);
                    if !keys.is_empty() {
                        // No receiver (every session gone) is not an error.
                        let _ = tx.send(Some(keys.into()));
                    }
                }
            }
            Err(e) => tracing::warn!("the change feed cannot reach the server: {e}"),
        }
        std::thread::sleep(RECONNECT);
    }
}

/// One session's subscriptions: key → the URI as the client subscribed to it.
#[derive(Default)]
pub struct Subscriptions {
    uris: Mutex<HashMap<String, String>>,
    forwarding: OnceLock<()>,
}

impl Subscriptions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        self.uris.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds `uri` under `key`; refused past [`MAX_SUBSCRIPTIONS`].
    pub fn add(&self, key: String, uri: String) -> Result<(), ErrorData> {
        let mut uris = self.lock();
        if uris.len() >= MAX_SUBSCRIPTIONS && !uris.contains_key(&key) {
            return Err(ErrorData::invalid_request(
                format!("a session may subscribe to at most {MAX_SUBSCRIPTIONS} resources"),
                Some(json!({ "limit": MAX_SUBSCRIPTIONS })),
            ));
        }
        uris.insert(key, uri);
        Ok(())
    }

    /// Removes `uri` (whatever form of its id it was subscribed with).
    pub fn remove(&self, key: Option<&str>, uri: &str) {
        let mut uris = self.lock();
        match key {
            Some(k) => {
                uris.remove(k);
            }
            None => uris.retain(|_, v| v != uri),
        }
    }

    /// The subscribed URIs a change touches.
    fn touched(&self, change: &Change) -> Vec<String> {
        let uris = self.lock();
        match change {
            Some(keys) => keys.iter().filter_map(|k| uris.get(k).cloned()).collect(),
            None => uris.values().cloned().collect(),
        }
    }

    /// Starts this session's forwarder once: it sends `notifications/resources/updated`
    /// to `peer` for each change to a subscribed view, until the session closes.
    pub fn forward(self: &Arc<Self>, mut rx: broadcast::Receiver<Change>, peer: Peer<RoleServer>) {
        if self.forwarding.set(()).is_err() {
            return;
        }
        let this = Arc::clone(self);
        tokio::spawn(async move {
            loop {
                let change = match rx.recv().await {
                    Ok(c) => c,
                    Err(broadcast::error::RecvError::Lagged(_)) => None,
                    Err(broadcast::error::RecvError::Closed) => return,
                };
                if peer.is_transport_closed() {
                    return;
                }
                for uri in this.touched(&change) {
                    let param = ResourceUpdatedNotificationParam::new(uri);
                    if peer.notify_resource_updated(param).await.is_err() {
                        return;
                    }
                }
            }
        });
    }
}

/// The subscription filter a `subscriptions/listen` may have: the Intent and Hints
/// URIs among those requested (ids as given: they are not looked up here), at most
/// [`MAX_SUBSCRIPTIONS`].
pub fn listenable(requested: &[String]) -> Vec<String> {
    requested
        .iter()
        .filter(|u| matches!(Uri::parse(u), Ok(Uri::Intent(_) | Uri::Hints)))
        .take(MAX_SUBSCRIPTIONS)
        .cloned()
        .collect()
}

/// The URIs of `accepted` a change touches (a listen's filter names full Intent hashes
/// to be matched; a prefix never matches).
pub fn touched_of(accepted: &[String], change: &Change) -> Vec<String> {
    match change {
        Some(keys) => accepted
            .iter()
            .filter(|u| keys.iter().any(|k| k == *u))
            .cloned()
            .collect(),
        None => accepted.to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_parse_into_views_and_others_are_not_found() {
        assert_eq!(
            Uri::parse("nexus://record/abcd1234").expect("record"),
            Uri::Record("abcd1234".into())
        );
        assert_eq!(
            Uri::parse("nexus://intent/ff").expect("intent"),
            Uri::Intent("ff".into())
        );
        assert_eq!(Uri::parse(HINTS_URI).expect("hints"), Uri::Hints);
        for bad in [
            "nexus://record/",
            "nexus://intent/a/b",
            "nexus://board",
            "file:///etc/passwd",
        ] {
            let e = Uri::parse(bad).expect_err(bad);
            assert_eq!(e.code, rmcp::model::ErrorCode::RESOURCE_NOT_FOUND, "{bad}");
        }
    }

    #[test]
    fn an_entry_changes_the_intent_it_acts_on_and_hint_entries_change_the_hints() {
        let h = "ab".repeat(32);
        let claim = json!({"seq": 3, "action": {"kind": "claim", "intent": h}});
        assert_eq!(changed(&claim), vec![intent_key(&h)]);
        let retract = json!({"seq": 4, "action": {"kind": "retract", "hint": h}});
        assert_eq!(changed(&retract), vec![HINTS_URI.to_owned()]);
        let fact = json!({"seq": 5, "record": {"kind": "fact", "hash": h}});
        assert!(changed(&fact).is_empty());
    }

    #[test]
    fn subscriptions_are_bounded_and_a_gap_touches_every_one() {
        let s = Subscriptions::default();
        for i in 0..MAX_SUBSCRIPTIONS {
            s.add(format!("k{i}"), format!("u{i}"))
                .expect("under the bound");
        }
        assert!(s.add("more".into(), "more".into()).is_err());
        s.add("k0".into(), "again".into())
            .expect("a key already there");
        let one: Change = Some(vec!["k1".to_owned(), "nope".to_owned()].into());
        assert_eq!(s.touched(&one), vec!["u1".to_owned()]);
        assert_eq!(s.touched(&None).len(), MAX_SUBSCRIPTIONS);
        s.remove(Some("k1"), "u1");
        s.remove(None, "u2");
        assert!(s.touched(&one).is_empty());
        assert_eq!(s.touched(&None).len(), MAX_SUBSCRIPTIONS - 2);
        let accepted = listenable(&[
            HINTS_URI.to_owned(),
            "nexus://record/ab".to_owned(),
            "x".to_owned(),
        ]);
        assert_eq!(accepted, vec![HINTS_URI.to_owned()]);
        let hints: Change = Some(vec![HINTS_URI.to_owned()].into());
        assert_eq!(touched_of(&accepted, &hints), accepted);
        assert!(touched_of(&accepted, &one).is_empty());
    }
}
