//! Latency summaries from recorded samples (µs), by sorting: exact percentiles, no
//! histogram buckets.

use serde_json::{Value, json};

/// p50/p99/max/mean of one step's latencies, in µs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    /// Samples.
    pub count: usize,
    /// Median (nearest rank).
    pub p50: u64,
    /// 99th percentile (nearest rank).
    pub p99: u64,
    /// Largest sample.
    pub max: u64,
    /// Arithmetic mean.
    pub mean: f64,
}

/// The nearest-rank percentile `p` (0 < p ≤ 100) of `sorted` (ascending, non-empty):
/// the smallest sample such that at least p% of the samples are ≤ it.
pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    debug_assert!(!sorted.is_empty());
    let n = sorted.len();
    let rank = ((p / 100.0) * n as f64).ceil() as usize;
    sorted[rank.clamp(1, n) - 1]
}

impl Summary {
    /// Summarises `samples` (µs); `None` when there are none.
    pub fn of(samples: &mut [u64]) -> Option<Self> {
        if samples.is_empty() {
            return None;
        }
        samples.sort_unstable();
        let sum: u128 = samples.iter().map(|&s| u128::from(s)).sum();
        Some(Self {
            count: samples.len(),
            p50: percentile(samples, 50.0),
            p99: percentile(samples, 99.0),
            max: samples[samples.len() - 1],
            mean: sum as f64 / samples.len() as f64,
        })
    }

    /// As JSON, in ms.
    pub fn to_json(self) -> Value {
        json!({
            "count": self.count,
            "p50_ms": ms(self.p50),
            "p99_ms": ms(self.p99),
            "max_ms": ms(self.max),
            "mean_ms": (self.mean / 10.0).round() / 100.0,
        })
    }
}

/// µs as ms, rounded to 0.01 ms.
pub fn ms(us: u64) -> f64 {
    (us as f64 / 10.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let mut v: Vec<u64> = (1..=100).rev().collect();
        let s = Summary::of(&mut v).expect("non-empty");
        assert_eq!((s.count, s.p50, s.p99, s.max), (100, 50, 99, 100));
        assert!((s.mean - 50.5).abs() < 1e-9);
        // Few samples: p99 is the maximum, p50 the lower middle.
        let mut w = vec![30, 10, 20, 40];
        let s = Summary::of(&mut w).expect("non-empty");
        assert_eq!((s.p50, s.p99, s.max), (20, 40, 40));
        let mut one = vec![7];
        let s = Summary::of(&mut one).expect("non-empty");
        assert_eq!((s.p50, s.p99, s.max), (7, 7, 7));
        assert_eq!(Summary::of(&mut []), None);
    }

    #[test]
    fn ms_rounds_to_hundredths() {
        assert_eq!(ms(1_234), 1.23);
        assert_eq!(ms(1_235), 1.24);
        assert_eq!(ms(0), 0.0);
    }
}
