//! `GET /v1/events` on `nexus serve`: the commit log as Server-Sent Events
//! (spec/api.md, "Live events").
//!
//! One **tail** task reads each new log page once, after each commit (the write path
//! bumps [`Streams::commits`]; a second at most, for entries committed elsewhere, such
//! as the contract's Hints), and broadcasts each entry with its frame, serialized once.
//! A task per stream sends the frames through a channel of a few entries that the
//! response body drains. A stream first catches up from the store, in pages, through
//! the same read job as `GET /v1/log`; once caught up it takes the tail's entries, and
//! whenever it falls behind them (it lagged past the broadcast's capacity, or it sees a
//! gap) it reads from the store again. So a slow reader makes only its own task wait:
//! it misses nothing, holds a bounded amount of memory, and costs the writers nothing.
//! A stream sends a heartbeat after 15 s of silence and ends when the client goes away
//! or the server shuts down.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response as AxumResponse;
use hyper::body::Frame;
use nexus_api::{EVENTS_PAGE, EventFilter, EventsQuery, HEARTBEAT_SECS, Job, Verdict};
use nexus_core::{FihHash, Kind, Record};
use serde_json::Value;
use tokio::sync::{mpsc, watch};

use crate::serve::{AppState, now_ms};

/// Frames buffered per stream (each a log entry, at most about 80 KiB).
const BUFFER_FRAMES: usize = 64;
/// Longest wait for a commit before the log is read again.
const POLL: Duration = Duration::from_secs(1);

/// Event streams served at once (`503 too_many_streams` above it): each holds a
/// connection, a task and up to [`BUFFER_FRAMES`] frames.
pub const MAX_STREAMS: usize = 256;
/// Longest a stream waits for its reader to take a frame before it ends (the client
/// resumes with `Last-Event-ID`): a reader that stopped reading does not hold its
/// connection and task forever.
const SEND_TIMEOUT: Duration = Duration::from_secs(60);

/// Entries the tail keeps for streams that are a little behind.
const TAIL_CAPACITY: usize = 256;

/// One entry as the tail broadcasts it.
#[derive(Debug, Clone)]
pub struct Tailed {
    seq: u64,
    entry: Arc<Value>,
    frame: Bytes,
}

/// What the streams of a server share.
#[derive(Debug)]
pub struct Streams {
    /// Bumped after every committed write (the tail wakes up).
    pub commits: watch::Sender<u64>,
    /// Set when the server shuts down (the streams end).
    pub closing: watch::Sender<bool>,
    /// The tail's entries.
    tail: tokio::sync::broadcast::Sender<Tailed>,
    /// One permit per stream served.
    slots: Arc<tokio::sync::Semaphore>,
}

impl Default for Streams {
    fn default() -> Self {
        Self {
            commits: watch::Sender::new(0),
            closing: watch::Sender::new(false),
            tail: tokio::sync::broadcast::Sender::new(TAIL_CAPACITY),
            slots: Arc::new(tokio::sync::Semaphore::new(MAX_STREAMS)),
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

/// A page of the log from `from`: its entries, or `None` when the store failed (with
/// the answer's body).
async fn log_page(state: &Arc<AppState>, from: u64) -> Result<Vec<Value>, String> {
    match read(state, Job::log(from, EVENTS_PAGE)).await {
        Some(page) => nexus_api::page_entries(&page),
        None => Err(storage_error("the log read failed")),
    }
}

/// The body of a `500 storage` error, as one line of JSON.
fn storage_error(why: &str) -> String {
    let body = nexus_api::ApiError::new(nexus_api::ErrorCode::Storage, why).to_response();
    String::from_utf8_lossy(&body.body).replace('\n', " ")
}

/// The tail: reads each new page of the log once and broadcasts it; runs until the
/// server shuts down. Reads nothing while no stream listens.
pub async fn tail(state: Arc<AppState>) {
    let mut commits = state.streams.commits.subscribe();
    let mut closing = state.streams.closing.subscribe();
    let mut next: Option<u64> = None;
    loop {
        commits.borrow_and_update();
        if state.streams.tail.receiver_count() == 0 {
            // Nobody listens: start again from what commits next.
            next = None;
        } else {
            let from = match next {
                Some(n) => n,
                // From the head on: a stream reads what came before from the store.
                None => {
                    let head = read(&state, Job::log(u64::MAX, 1))
                        .await
                        .filter(|r| r.status == 200)
                        .and_then(|r| serde_json::from_slice::<Value>(&r.body).ok())
                        .and_then(|v| v.get("head").and_then(Value::as_u64));
                    match head {
                        Some(h) => h + 1,
                        // The store failed: try again later, not from the start.
                        None => {
                            tokio::select! {
                                _ = tokio::time::sleep(POLL) => {}
                                _ = closing.changed() => return,
                            }
                            continue;
                        }
                    }
                }
            };
            next = Some(from);
            if let Ok(entries) = log_page(&state, from).await
                && !entries.is_empty()
            {
                for entry in entries {
                    let Some(seq) = entry.get("seq").and_then(Value::as_u64) else {
                        break;
                    };
                    next = Some(seq + 1);
                    let frame = Bytes::from(nexus_api::entry_frame(&entry));
                    let _ = state.streams.tail.send(Tailed {
                        seq,
                        entry: Arc::new(entry),
                        frame,
                    });
                }
                continue; // there may be more
            }
        }
        tokio::select! {
            _ = commits.changed() => {}
            _ = tokio::time::sleep(POLL) => {}
            _ = closing.changed() => return,
        }
    }
}

/// Starts the stream of `query` and answers its response (`200 text/event-stream`),
/// or `Err` with the `503` to answer when [`MAX_STREAMS`] are served already.
pub fn respond(
    state: Arc<AppState>,
    query: EventsQuery,
) -> Result<AxumResponse, nexus_api::ApiError> {
    let Ok(permit) = Arc::clone(&state.streams.slots).try_acquire_owned() else {
        return Err(nexus_api::ApiError::new(
            nexus_api::ErrorCode::TooManyConnections,
            format!("{MAX_STREAMS} event streams are served already; retry later"),
        )
        .with("limit", MAX_STREAMS as u64));
    };
    let (tx, rx) = mpsc::channel(BUFFER_FRAMES);
    tokio::spawn(async move {
        run(state, query, tx).await;
        drop(permit);
    });
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
    Ok(resp)
}

/// Runs a read job on a blocking thread.
async fn read(state: &Arc<AppState>, job: Job) -> Option<nexus_api::Response> {
    let st = Arc::clone(state);
    tokio::task::spawn_blocking(move || st.api.run_job(&st.store, &job, now_ms()))
        .await
        .ok()
}

/// The record `h` (read as `GET /v1/records/{h}` reads it): `Ok(None)` when there is
/// none, `Err` (a `500 storage` body) when the read failed.
async fn record(state: &Arc<AppState>, h: &FihHash) -> Result<Option<Record>, String> {
    let nexus_api::Prepared::Job(job) = state.api.prepare(&nexus_api::record_request(h)) else {
        return Ok(None);
    };
    let r = read(state, job)
        .await
        .ok_or_else(|| storage_error("the record read failed"))?;
    nexus_api::answered_record(&r)
}

/// Sends `frame`; false when the stream must end: the client has gone, it has not
/// taken a frame for [`SEND_TIMEOUT`], or the server shuts down.
async fn send(
    tx: &mpsc::Sender<Bytes>,
    closing: &mut watch::Receiver<bool>,
    frame: impl Into<Bytes>,
) -> bool {
    if *closing.borrow() {
        return false;
    }
    tokio::select! {
        sent = tokio::time::timeout(SEND_TIMEOUT, tx.send(frame.into())) => matches!(sent, Ok(Ok(()))),
        _ = closing.changed() => false,
    }
}

/// What happened to one entry offered to a stream.
enum Offered {
    /// Sent.
    Sent,
    /// Not for this stream (its filter).
    Skipped,
    /// The stream must end (the client went away, or the store failed: said in an
    /// `error` event).
    End,
}

/// Offers one entry to a stream: sent (`frame` when the tail made it) or not, as its
/// filter says.
async fn offer(
    state: &Arc<AppState>,
    filter: &mut EventFilter,
    tx: &mpsc::Sender<Bytes>,
    closing: &mut watch::Receiver<bool>,
    entry: &Value,
    frame: Option<&Bytes>,
) -> Offered {
    let send_it = loop {
        match filter.verdict(entry) {
            Verdict::Send => break true,
            Verdict::Skip => break false,
            Verdict::NeedIntent(h) => match record(state, &h).await {
                Ok(Some(r)) if r.content().kind() == Kind::Intent => filter.learn(&r),
                Ok(_) => filter.unknown(h),
                Err(why) => {
                    let _ = send(tx, closing, format!("event: error\ndata: {why}\n\n")).await;
                    return Offered::End;
                }
            },
        }
    };
    if !send_it {
        return if tx.is_closed() {
            Offered::End
        } else {
            Offered::Skipped
        };
    }
    let sent = match frame {
        Some(f) => send(tx, closing, f.clone()).await,
        None => send(tx, closing, nexus_api::entry_frame(entry)).await,
    };
    if sent { Offered::Sent } else { Offered::End }
}

async fn run(state: Arc<AppState>, query: EventsQuery, tx: mpsc::Sender<Bytes>) {
    use tokio::sync::broadcast::error::RecvError;
    let mut closing = state.streams.closing.subscribe();
    let mut filter = EventFilter::new(query.topic.clone());
    let mut next = query.from;
    let heartbeat_every = Duration::from_secs(HEARTBEAT_SECS);
    // When this stream last sent anything (a heartbeat is due 15 s after).
    let mut sent_at = Instant::now();
    if !send(&tx, &mut closing, nexus_api::RETRY_FRAME).await {
        return;
    }
    // Subscribed before catching up, so that nothing committed meanwhile is missed.
    let mut tail = state.streams.tail.subscribe();
    // Wakes the tail, which read nothing while no stream listened.
    state.streams.committed();
    'catch_up: loop {
        // From the store, until it has nothing after `next`.
        loop {
            if tx.is_closed() || *closing.borrow() {
                return;
            }
            let entries = match log_page(&state, next).await {
                Ok(e) => e,
                Err(why) => {
                    // The store failed: say so, and end (the client resumes).
                    let _ = send(&tx, &mut closing, format!("event: error\ndata: {why}\n\n")).await;
                    return;
                }
            };
            if entries.is_empty() {
                break;
            }
            for entry in &entries {
                let Some(seq) = entry.get("seq").and_then(Value::as_u64) else {
                    return;
                };
                next = seq + 1;
                match offer(&state, &mut filter, &tx, &mut closing, entry, None).await {
                    Offered::Sent => sent_at = Instant::now(),
                    Offered::Skipped => {}
                    Offered::End => return,
                }
            }
            // A long filtered catch-up sends nothing: keep the connection alive.
            if sent_at.elapsed() >= heartbeat_every {
                if !send(&tx, &mut closing, nexus_api::HEARTBEAT_FRAME).await {
                    return;
                }
                sent_at = Instant::now();
            }
        }
        // Live, from the tail.
        loop {
            let heartbeat = heartbeat_every.saturating_sub(sent_at.elapsed());
            let got = tokio::select! {
                got = tail.recv() => got,
                () = tokio::time::sleep(heartbeat) => {
                    if !send(&tx, &mut closing, nexus_api::HEARTBEAT_FRAME).await {
                        return;
                    }
                    sent_at = Instant::now();
                    continue;
                }
                _ = closing.changed() => return,
                () = tx.closed() => return,
            };
            match got {
                Ok(t) if t.seq < next => {} // sent from the store already
                Ok(t) if t.seq == next => {
                    next = t.seq + 1;
                    match offer(
                        &state,
                        &mut filter,
                        &tx,
                        &mut closing,
                        &t.entry,
                        Some(&t.frame),
                    )
                    .await
                    {
                        Offered::Sent => sent_at = Instant::now(),
                        Offered::Skipped => {}
                        Offered::End => return,
                    }
                }
                // A gap (the tail started after this stream's last entry) or entries
                // dropped for this slow stream: read them from the store.
                Ok(_) | Err(RecvError::Lagged(_)) => continue 'catch_up,
                Err(RecvError::Closed) => return,
            }
        }
    }
}
