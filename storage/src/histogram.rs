//! Latency histograms that any thread records into without a lock, read by `/metrics`.
//!
//! Recording is two relaxed atomic adds and no allocation, so a histogram can sit on a hot path
//! (every fsync, every S3 request). It lives in this crate because every other crate depends on
//! it: the commit path records fsyncs here, and the edges record their requests with the same type.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A fixed-bucket histogram of durations, bounds in microseconds, ascending.
pub struct Histogram<const N: usize> {
    bounds_us: [u64; N],
    /// Observations per bucket, not cumulative: slot `i` counts those in
    /// `(bounds_us[i-1], bounds_us[i]]`, slot `N` those above the last bound.
    counts: [AtomicU64; N],
    over: AtomicU64,
    sum_us: AtomicU64,
}

/// What a [`Histogram`] held when read, in the shape Prometheus exposes.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HistogramSnapshot {
    /// Upper bound in seconds and cumulative count of the observations at or below it.
    pub buckets: Vec<(f64, u64)>,
    /// Every observation (the `+Inf` bucket).
    pub count: u64,
    /// Sum of the observations, in seconds.
    pub sum_seconds: f64,
}

impl<const N: usize> Histogram<N> {
    /// An empty histogram with these bucket bounds (microseconds, ascending).
    pub const fn new(bounds_us: [u64; N]) -> Self {
        Self {
            bounds_us,
            counts: [const { AtomicU64::new(0) }; N],
            over: AtomicU64::new(0),
            sum_us: AtomicU64::new(0),
        }
    }

    /// Counts one observation of `elapsed`.
    pub fn record(&self, elapsed: Duration) {
        let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        debug_assert!(self.bounds_us.is_sorted(), "histogram bounds ascend");
        let slot = self.bounds_us.partition_point(|bound| *bound < us);
        self.counts.get(slot).unwrap_or(&self.over).fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
    }

    /// The buckets as they stand, cumulative; `count` is their total, so the `+Inf` bucket and
    /// the count always agree even while other threads record.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut total = 0;
        let buckets = self
            .bounds_us
            .iter()
            .zip(&self.counts)
            .map(|(bound, count)| {
                total += count.load(Ordering::Relaxed);
                (*bound as f64 / 1e6, total)
            })
            .collect();
        let count = total + self.over.load(Ordering::Relaxed);
        HistogramSnapshot { buckets, count, sum_seconds: self.sum_us.load(Ordering::Relaxed) as f64 / 1e6 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_the_first_bucket_that_holds_them_and_count_cumulatively() {
        let histogram = Histogram::new([1_000, 10_000]);
        for us in [0, 1_000, 1_001, 10_000, 50_000] {
            histogram.record(Duration::from_micros(us));
        }
        let snapshot = histogram.snapshot();
        assert_eq!(snapshot.buckets, vec![(0.001, 2), (0.01, 4)]);
        assert_eq!(snapshot.count, 5);
        assert!((snapshot.sum_seconds - 0.062_001).abs() < 1e-9);
    }
}
