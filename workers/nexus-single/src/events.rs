//! `GET /v1/events` on the Worker: the commit log as Server-Sent Events, with the
//! frames and topic filter `nexus serve` uses (`nexus_api::EventFilter`,
//! spec/api.md "Live events").
//!
//! The stream is the Worker's response body, pulled by the runtime as the client
//! reads (`Response::from_stream` makes a `ReadableStream` whose high-water mark is 0,
//! so the runtime polls it only when the connection can take more): each pull reads
//! the next page of the log through the same read job as
//! `GET /v1/log` (one coordinator call, the records from KV), and while the log has
//! nothing new it asks again once a second. So a slow reader makes the stream wait
//! and misses nothing, and a connection holds at most one page. Why polling rather
//! than a push from the coordinator (a stream it holds, or hibernatable WebSockets):
//! a Durable Object that holds open streams cannot hibernate and is billed for the
//! whole time, and one coordinator is the single writer every commit already goes
//! through; a poll costs one coordinator read per second per idle stream, served
//! from its storage, and leaves it free to commit. Push from the coordinator
//! (hibernatable WebSockets, which wake it only to send) belongs with the sharded
//! coordinators of phase 4.

use std::collections::VecDeque;
use std::time::Duration;

use nexus_api::{Api, EVENTS_PAGE, EventFilter, EventsQuery, HEARTBEAT_SECS, Job, Verdict};
use nexus_core::{Kind, Record};
use serde_json::Value;
use worker::{Date, Delay, Env, Headers, Response, Result};

use crate::{Faults, host};

/// Pause between reads of a log that has nothing new.
const POLL: Duration = Duration::from_secs(1);

/// Test hook (`GET /__test/events`): the furthest `seq` any event stream of this
/// isolate has read from the log, which shows that a stalled reader stops the reads.
#[cfg(feature = "test-hooks")]
pub static READ_UPTO: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

struct Stream {
    env: Env,
    api: &'static Api,
    filter: EventFilter,
    next: u64,
    done: bool,
    sent_at: u64,
    pending: VecDeque<Vec<u8>>,
}

/// A read job's answer, or a `500 storage` body when the bindings failed.
async fn run(env: &Env, api: &Api, job: &Job) -> nexus_api::Response {
    match host(env, Faults::default()) {
        Ok(h) => h.run(api, job, Date::now().as_millis()).await,
        Err(e) => nexus_api::storage_error(&format!("bindings: {e}")),
    }
}

impl Stream {
    /// The record `h`: `Ok(None)` when there is none, `Err` (an error body) when the
    /// read failed.
    async fn record(&self, h: &nexus_core::FihHash) -> std::result::Result<Option<Record>, String> {
        let nexus_api::Prepared::Job(job) = self.api.prepare(&nexus_api::record_request(h)) else {
            return Ok(None);
        };
        nexus_api::answered_record(&run(&self.env, self.api, &job).await)
    }

    fn fail(&mut self, why: String) {
        self.pending
            .push_back(format!("event: error\ndata: {why}\n\n").into_bytes());
        self.done = true;
    }

    /// Reads the next page into `pending`; waits a little first when it is empty.
    async fn fill(&mut self) {
        let page = run(&self.env, self.api, &Job::log(self.next, EVENTS_PAGE)).await;
        let entries = match nexus_api::page_entries(&page) {
            Ok(e) => e,
            Err(why) => {
                self.fail(why);
                return;
            }
        };
        let now = Date::now().as_millis();
        if entries.is_empty() {
            if now.saturating_sub(self.sent_at) >= HEARTBEAT_SECS * 1_000 {
                self.pending.push_back(nexus_api::HEARTBEAT_FRAME.into());
                self.sent_at = now;
            } else {
                Delay::from(POLL).await;
            }
            return;
        }
        for entry in &entries {
            let Some(seq) = entry.get("seq").and_then(Value::as_u64) else {
                self.done = true;
                return;
            };
            self.next = seq + 1;
            #[cfg(feature = "test-hooks")]
            READ_UPTO.fetch_max(seq, std::sync::atomic::Ordering::Relaxed);
            let send = loop {
                match self.filter.verdict(entry) {
                    Verdict::Send => break true,
                    Verdict::Skip => break false,
                    Verdict::NeedIntent(h) => match self.record(&h).await {
                        Ok(Some(r)) if r.content().kind() == Kind::Intent => self.filter.learn(&r),
                        Ok(_) => self.filter.unknown(h),
                        Err(why) => {
                            self.fail(why);
                            return;
                        }
                    },
                }
            };
            if send {
                self.pending
                    .push_back(nexus_api::entry_frame(entry).into_bytes());
                self.sent_at = Date::now().as_millis();
            }
        }
        // A long filtered catch-up sends nothing: keep the connection alive.
        if self.pending.is_empty()
            && Date::now().as_millis().saturating_sub(self.sent_at) >= HEARTBEAT_SECS * 1_000
        {
            self.pending.push_back(nexus_api::HEARTBEAT_FRAME.into());
            self.sent_at = Date::now().as_millis();
        }
    }
}

/// The streaming response of `GET /v1/events` for `query`.
pub fn respond(env: Env, api: &'static Api, query: EventsQuery) -> Result<Response> {
    let state = Stream {
        env,
        api,
        filter: EventFilter::new(query.topic.clone()),
        next: query.from,
        done: false,
        sent_at: Date::now().as_millis(),
        pending: VecDeque::from([nexus_api::RETRY_FRAME.as_bytes().to_vec()]),
    };
    let body = futures_util::stream::unfold(state, |mut st| async move {
        loop {
            if let Some(frame) = st.pending.pop_front() {
                return Some((Ok::<Vec<u8>, worker::Error>(frame), st));
            }
            if st.done {
                return None;
            }
            st.fill().await;
        }
    });
    let headers = Headers::new();
    headers.set("content-type", "text/event-stream")?;
    headers.set("cache-control", "no-store")?;
    Ok(Response::from_stream(body)?.with_headers(headers))
}
