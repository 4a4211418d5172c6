//! `GET /v1/events` on `nexus serve`: the commit log as Server-Sent Events
//! (spec/api.md, "Live events"). A task per stream reads the log in pages through the
//! same read job as `GET /v1/log`, filters it with [`nexus_api::EventFilter`], and
//! sends the frames through a channel of a few pages that the response body drains:
//! a slow reader makes the task wait (it misses nothing, and holds a bounded amount
//! of memory). After the backlog it waits for the next commit (the write path bumps
//! [`Streams::commits`]; a second at most, for entries committed elsewhere, such as
//! the contract's Hints), sends a heartbeat after 15 s of silence, and ends when the
//! client goes away or the server shuts down.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response as AxumResponse;
use hyper::body::Frame;
use nexus_api::{EVENTS_PAGE, EventFilter, EventsQuery, HEARTBEAT_SECS, Job, Request, Verdict};
use nexus_core::{FihHash, Kind, Record};
use serde_json::Value;
use tokio::sync::{mpsc, watch};

use crate::serve::{AppState, now_ms};

/// Frames buffered per stream (each a log entry, at most about 80 KiB).
const BUFFER_FRAMES: usize = 64;
/// Longest wait for a commit before the log is read again.
const POLL: Duration = Duration::from_secs(1);

/// What the streams of a server share.
#[derive(Debug)]
pub struct Streams {
    /// Bumped after every committed write (the streams wake up).
    pub commits: watch::Sender<u64>,
    /// Set when the server shuts down (the streams end).
    pub closing: watch::Sender<bool>,
}

impl Default for Streams {
    fn default() -> Self {
        Self {
            commits: watch::Sender::new(0),
            closing: watch::Sender::new(false),
        }
    }
}

impl Streams {
    /// Wakes the streams: something committed.
    pub fn committed(&self) {
        self.commits.send_modify(|n| *n = n.wrapping_add(1));
    }
}

/// The response body: the frames the stream's task sends.
struct ChannelBody(mpsc::Receiver<Bytes>);

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.0.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b))))
    }
}

/// Starts the stream of `query` and answers its response (`200 text/event-stream`).
pub fn respond(state: Arc<AppState>, query: EventsQuery) -> AxumResponse {
    let (tx, rx) = mpsc::channel(BUFFER_FRAMES);
    tokio::spawn(run(state, query, tx));
    let mut resp = AxumResponse::new(Body::new(ChannelBody(rx)));
    *resp.status_mut() = StatusCode::OK;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // For reverse proxies that buffer (nginx): this stream must not be.
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    resp
}

/// Runs a read job on a blocking thread.
async fn read(state: &Arc<AppState>, job: Job) -> Option<nexus_api::Response> {
    let st = Arc::clone(state);
    tokio::task::spawn_blocking(move || st.api.run_job(&st.store, &job, now_ms()))
        .await
        .ok()
}

/// The record `h`, if it is committed (read as `GET /v1/records/{h}` reads it).
async fn record(state: &Arc<AppState>, h: &FihHash) -> Option<Record> {
    let req = Request::new("GET", &format!("/v1/records/{h}"), Vec::new());
    let nexus_api::Prepared::Job(job) = state.api.prepare(&req) else {
        return None;
    };
    let r = read(state, job).await?;
    if r.status != 200 {
        return None;
    }
    let body: Value = serde_json::from_slice(&r.body).ok()?;
    Record::from_value(body.get("record")?.clone(), &nexus_core::Limits::default()).ok()
}

/// Sends `frame`; false when the client has gone.
async fn send(tx: &mpsc::Sender<Bytes>, frame: impl Into<Bytes>) -> bool {
    tx.send(frame.into()).await.is_ok()
}

async fn run(state: Arc<AppState>, query: EventsQuery, tx: mpsc::Sender<Bytes>) {
    let mut commits = state.streams.commits.subscribe();
    let mut closing = state.streams.closing.subscribe();
    let mut filter = EventFilter::new(query.topic.clone());
    let mut next = query.from;
    let mut sent_at = Instant::now();
    if !send(&tx, nexus_api::RETRY_FRAME).await {
        return;
    }
    loop {
        if *closing.borrow() {
            return;
        }
        // Marks what is seen before reading, so that a commit during the read wakes
        // the next wait.
        commits.borrow_and_update();
        let Some(page) = read(&state, Job::log(next, EVENTS_PAGE)).await else {
            return;
        };
        if page.status != 200 {
            // The store failed: say so, and end (the client reconnects and resumes).
            let data = String::from_utf8_lossy(&page.body).replace('\n', " ");
            let _ = send(&tx, format!("event: error\ndata: {data}\n\n")).await;
            return;
        }
        let entries = serde_json::from_slice::<Value>(&page.body)
            .ok()
            .and_then(|v| v.get("entries").and_then(Value::as_array).cloned())
            .unwrap_or_default();
        if entries.is_empty() {
            tokio::select! {
                _ = commits.changed() => {}
                _ = tokio::time::sleep(POLL) => {}
                _ = closing.changed() => return,
                () = tx.closed() => return,
            }
            if sent_at.elapsed() >= Duration::from_secs(HEARTBEAT_SECS) {
                if !send(&tx, nexus_api::HEARTBEAT_FRAME).await {
                    return;
                }
                sent_at = Instant::now();
            }
            continue;
        }
        for entry in &entries {
            let Some(seq) = entry.get("seq").and_then(Value::as_u64) else {
                return;
            };
            next = seq + 1;
            let send_it = loop {
                match filter.verdict(entry) {
                    Verdict::Send => break true,
                    Verdict::Skip => break false,
                    Verdict::NeedIntent(h) => match record(&state, &h).await {
                        Some(r) if r.content().kind() == Kind::Intent => filter.learn(&r),
                        _ => filter.unknown(h),
                    },
                }
            };
            if send_it {
                if !send(&tx, nexus_api::entry_frame(entry)).await {
                    return;
                }
                sent_at = Instant::now();
            }
        }
    }
}
