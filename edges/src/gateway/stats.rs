//! What each node's gateway counts per route: requests, responses by class, what it refused on
//! its own, and how its circuit stands. Counters live as long as the node and survive config
//! changes; `GET /v1/routes` sums them over every node.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

/// One route's counters on one node: plain atomics, so that counting costs a request no lock.
#[derive(Debug, Default)]
pub struct RouteStats {
    /// Answers by class: 2xx, 3xx, 4xx, 5xx (the gateway's own errors included).
    classes: [AtomicU64; 4],
    /// Requests the gateway answered itself: rate limited, circuit open, disabled, too large.
    refused: AtomicU64,
    /// Attempts that failed upstream (unreachable, timeout, 5xx), retried ones included.
    upstream_failures: AtomicU64,
}

impl RouteStats {
    /// Counts one request that got `status`.
    pub fn answered(&self, status: u16) {
        let class = usize::from((status / 100).clamp(2, 5) - 2);
        self.classes[class].fetch_add(1, Ordering::Relaxed);
    }

    pub fn refused(&self) {
        self.refused.fetch_add(1, Ordering::Relaxed);
    }

    pub fn upstream_failed(&self) {
        self.upstream_failures.fetch_add(1, Ordering::Relaxed);
    }

    pub fn view(&self, breaker: &str) -> StatsView {
        let [status_2xx, status_3xx, status_4xx, status_5xx] =
            self.classes.each_ref().map(|c| c.load(Ordering::Relaxed));
        StatsView {
            requests: status_2xx + status_3xx + status_4xx + status_5xx,
            status_2xx,
            status_3xx,
            status_4xx,
            status_5xx,
            refused: self.refused.load(Ordering::Relaxed),
            upstream_failures: self.upstream_failures.load(Ordering::Relaxed),
            breaker: breaker.to_string(),
        }
    }
}

/// A route's counters on one node, as they cross the mesh and show in `/v1/routes`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StatsView {
    /// Every answer, whatever its class (a rate is the difference of two readings over time).
    pub requests: u64,
    pub status_2xx: u64,
    pub status_3xx: u64,
    pub status_4xx: u64,
    pub status_5xx: u64,
    pub refused: u64,
    pub upstream_failures: u64,
    /// `closed`, `open` or `half-open`.
    pub breaker: String,
}
