//! Plain counters rendered as Prometheus text.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::{ErrorCode, Response, Route};

/// Upper bounds of the latency histogram's buckets, in µs (`+Inf` follows).
pub const LATENCY_BUCKETS_US: [u64; 14] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 5_000_000,
];

#[derive(Debug, Default)]
struct Counts {
    requests: BTreeMap<(Route, u16), u64>,
    /// By wire string, so the exposition lists codes alphabetically.
    errors: BTreeMap<&'static str, u64>,
    /// Per bucket of [`LATENCY_BUCKETS_US`], then `+Inf` (not cumulative).
    buckets: [u64; LATENCY_BUCKETS_US.len() + 1],
    sum_us: u64,
    count: u64,
    /// Requests refused by a rate limit, by scope (`author`, `address`).
    rate_limited: BTreeMap<&'static str, u64>,
    /// Connections closed by a host timeout, by what timed out (`header`, `body`, `tls`).
    timeouts: BTreeMap<&'static str, u64>,
}

/// Requests by route template and status, errors by code, commits, CAS conflicts and a
/// latency histogram. Shared by reference between threads.
#[derive(Debug, Default)]
pub struct Metrics {
    counts: Mutex<Counts>,
    commits: AtomicU64,
    conflicts: AtomicU64,
    connections_open: AtomicU64,
    connections_refused: AtomicU64,
    governance_failures: AtomicU64,
    governance_pending: AtomicU64,
}

impl Metrics {
    /// All zero.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records one answered request: its route, status, error code (if any) and the
    /// latency the host measured, in µs.
    pub fn observe(&self, route: Route, status: u16, code: Option<ErrorCode>, micros: u64) {
        let mut c = self.lock();
        *c.requests.entry((route, status)).or_insert(0) += 1;
        if let Some(code) = code {
            *c.errors.entry(code.as_str()).or_insert(0) += 1;
        }
        let i = LATENCY_BUCKETS_US
            .iter()
            .position(|b| micros <= *b)
            .unwrap_or(LATENCY_BUCKETS_US.len());
        c.buckets[i] += 1;
        c.sum_us = c.sum_us.saturating_add(micros);
        c.count += 1;
    }

    /// [`observe`](Self::observe) with the status and code of `response`.
    pub fn observe_response(&self, route: Route, response: &Response, micros: u64) {
        self.observe(route, response.status, response.code, micros);
    }

    /// Counts an applied commit.
    pub fn record_commit(&self) {
        self.commits.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a commit refused by compare-and-swap.
    pub fn record_conflict(&self) {
        self.conflicts.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a request refused by the rate limit of `scope` (`author`, `address`).
    pub fn record_rate_limited(&self, scope: &'static str) {
        *self.lock().rate_limited.entry(scope).or_insert(0) += 1;
    }

    /// Counts a connection the host closed because `what` (`header`, `body`, `tls`)
    /// did not arrive in time.
    pub fn record_timeout(&self, what: &'static str) {
        *self.lock().timeouts.entry(what).or_insert(0) += 1;
    }

    /// Counts a connection opened (the host serves it).
    pub fn connection_opened(&self) {
        self.connections_open.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a served connection closed.
    pub fn connection_closed(&self) {
        let _ = self
            .connections_open
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
    }

    /// Counts a connection refused over the host's connection cap.
    pub fn record_connection_refused(&self) {
        self.connections_refused.fetch_add(1, Ordering::Relaxed);
    }

    /// Sets the governor's state: catch-ups that failed so far, and whether the
    /// contract's Hints are not committed now.
    pub fn set_governance(&self, failures: u64, pending: bool) {
        self.governance_failures.store(failures, Ordering::Relaxed);
        self.governance_pending
            .store(u64::from(pending), Ordering::Relaxed);
    }

    /// Connections open now.
    pub fn connections_open(&self) -> u64 {
        self.connections_open.load(Ordering::Relaxed)
    }

    /// Connections refused over the cap.
    pub fn connections_refused(&self) -> u64 {
        self.connections_refused.load(Ordering::Relaxed)
    }

    /// Requests refused by the rate limit of `scope`.
    pub fn rate_limited(&self, scope: &str) -> u64 {
        self.lock().rate_limited.get(scope).copied().unwrap_or(0)
    }

    /// Connections closed because `what` timed out.
    pub fn timeouts(&self, what: &str) -> u64 {
        self.lock().timeouts.get(what).copied().unwrap_or(0)
    }

    /// Requests counted for `route` with `status`.
    pub fn requests(&self, route: Route, status: u16) -> u64 {
        self.lock()
            .requests
            .get(&(route, status))
            .copied()
            .unwrap_or(0)
    }

    /// Errors counted with `code`.
    pub fn errors(&self, code: ErrorCode) -> u64 {
        self.lock().errors.get(code.as_str()).copied().unwrap_or(0)
    }

    /// Applied commits.
    pub fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    /// Refused commits.
    pub fn conflicts(&self) -> u64 {
        self.conflicts.load(Ordering::Relaxed)
    }

    /// The Prometheus text exposition (format 0.0.4).
    pub fn render_prometheus(&self) -> String {
        let c = self.lock();
        let mut out = String::new();
        out.push_str("# HELP nexus_requests_total Requests answered, by route and status.\n");
        out.push_str("# TYPE nexus_requests_total counter\n");
        for ((route, status), n) in &c.requests {
            let _ = writeln!(
                out,
                "nexus_requests_total{{method=\"{}\",route=\"{}\",status=\"{status}\"}} {n}",
                route.method(),
                route.template()
            );
        }
        out.push_str("# HELP nexus_errors_total Error answers, by code.\n");
        out.push_str("# TYPE nexus_errors_total counter\n");
        for (code, n) in &c.errors {
            let _ = writeln!(out, "nexus_errors_total{{code=\"{code}\"}} {n}");
        }
        out.push_str("# HELP nexus_commits_total Commits applied.\n");
        out.push_str("# TYPE nexus_commits_total counter\n");
        let _ = writeln!(out, "nexus_commits_total {}", self.commits());
        out.push_str("# HELP nexus_cas_conflicts_total Commits refused by compare-and-swap.\n");
        out.push_str("# TYPE nexus_cas_conflicts_total counter\n");
        let _ = writeln!(out, "nexus_cas_conflicts_total {}", self.conflicts());
        out.push_str(
            "# HELP nexus_rate_limited_total Requests refused by a rate limit, by scope.\n",
        );
        out.push_str("# TYPE nexus_rate_limited_total counter\n");
        for (scope, n) in &c.rate_limited {
            let _ = writeln!(out, "nexus_rate_limited_total{{scope=\"{scope}\"}} {n}");
        }
        out.push_str(
            "# HELP nexus_timeouts_total Connections closed by a timeout, by what was late.\n",
        );
        out.push_str("# TYPE nexus_timeouts_total counter\n");
        for (what, n) in &c.timeouts {
            let _ = writeln!(out, "nexus_timeouts_total{{what=\"{what}\"}} {n}");
        }
        out.push_str("# HELP nexus_connections_open Connections the host serves now.\n");
        out.push_str("# TYPE nexus_connections_open gauge\n");
        let _ = writeln!(out, "nexus_connections_open {}", self.connections_open());
        out.push_str(
            "# HELP nexus_connections_refused_total Connections refused over the connection cap.\n",
        );
        out.push_str("# TYPE nexus_connections_refused_total counter\n");
        let _ = writeln!(
            out,
            "nexus_connections_refused_total {}",
            self.connections_refused()
        );
        let governance = [
            (
                "nexus_governance_failures_total",
                "counter",
                "Failed commits of the contract's Hints.",
                &self.governance_failures,
            ),
            (
                "nexus_governance_pending",
                "gauge",
                "1 while the contract's Hints are not committed.",
                &self.governance_pending,
            ),
        ];
        for (name, kind, help, value) in governance {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            let _ = writeln!(out, "{name} {}", value.load(Ordering::Relaxed));
        }
        out.push_str("# HELP nexus_request_duration_seconds Request latency.\n");
        out.push_str("# TYPE nexus_request_duration_seconds histogram\n");
        let mut cumulative = 0;
        for (i, bound) in LATENCY_BUCKETS_US.iter().enumerate() {
            cumulative += c.buckets[i];
            let _ = writeln!(
                out,
                "nexus_request_duration_seconds_bucket{{le=\"{}\"}} {cumulative}",
                seconds(*bound)
            );
        }
        cumulative += c.buckets[LATENCY_BUCKETS_US.len()];
        let _ = writeln!(
            out,
            "nexus_request_duration_seconds_bucket{{le=\"+Inf\"}} {cumulative}"
        );
        let _ = writeln!(
            out,
            "nexus_request_duration_seconds_sum {}",
            seconds(c.sum_us)
        );
        let _ = writeln!(out, "nexus_request_duration_seconds_count {}", c.count);
        out
    }

    /// The `GET /metrics` answer.
    pub fn response(&self) -> Response {
        Response {
            status: 200,
            content_type: "text/plain; version=0.0.4; charset=utf-8",
            body: self.render_prometheus().into_bytes(),
            code: None,
        }
    }
}

/// µs as decimal seconds, exactly (no float rounding).
fn seconds(us: u64) -> String {
    let (s, frac) = (us / 1_000_000, us % 1_000_000);
    if frac == 0 {
        return s.to_string();
    }
    let frac = format!("{frac:06}");
    format!("{s}.{}", frac.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counts_and_a_cumulative_histogram() {
        let m = Metrics::new();
        m.observe(Route::Claim, 200, None, 90);
        m.observe(Route::Claim, 409, Some(ErrorCode::AlreadyClaimed), 3_000);
        m.observe(Route::Unmatched, 404, Some(ErrorCode::NoRoute), 9_000_000);
        m.record_commit();
        m.record_conflict();
        m.record_rate_limited("author");
        m.record_timeout("body");
        m.connection_opened();
        m.connection_opened();
        m.connection_closed();
        m.record_connection_refused();
        let text = m.render_prometheus();
        for line in [
            "nexus_requests_total{method=\"POST\",route=\"/v1/intents/{id}/claim\",status=\"200\"} 1",
            "nexus_requests_total{method=\"POST\",route=\"/v1/intents/{id}/claim\",status=\"409\"} 1",
            "nexus_errors_total{code=\"already_claimed\"} 1",
            "nexus_commits_total 1",
            "nexus_cas_conflicts_total 1",
            "nexus_rate_limited_total{scope=\"author\"} 1",
            "nexus_timeouts_total{what=\"body\"} 1",
            "nexus_connections_open 1",
            "nexus_connections_refused_total 1",
            "nexus_request_duration_seconds_bucket{le=\"0.0001\"} 1",
            "nexus_request_duration_seconds_bucket{le=\"0.005\"} 2",
            "nexus_request_duration_seconds_bucket{le=\"5\"} 2",
            "nexus_request_duration_seconds_bucket{le=\"+Inf\"} 3",
            "nexus_request_duration_seconds_sum 9.00309",
            "nexus_request_duration_seconds_count 3",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        assert_eq!(m.requests(Route::Claim, 409), 1);
        assert_eq!(m.errors(ErrorCode::NoRoute), 1);
    }
}
