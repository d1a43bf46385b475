//! What each node's gateway counts per route: requests, responses by class, what it refused on
//! its own, and how its circuit stands. Counters live as long as the node and survive config
//! changes; `GET /v1/routes` sums them over every node.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use serv_actors::inspect::Rate;

/// One route's counters on one node.
#[derive(Debug, Default)]
pub struct RouteStats {
    requests: AtomicU64,
    /// Answers by class: 2xx, 3xx, 4xx, 5xx (the gateway's own errors included).
    classes: [AtomicU64; 4],
    /// Requests the gateway answered itself: rate limited, circuit open, disabled, too large.
    refused: AtomicU64,
    /// Attempts that failed upstream (unreachable, timeout, 5xx), retried ones included.
    upstream_failures: AtomicU64,
    rate: Mutex<Rate>,
}

impl RouteStats {
    /// Counts one request that got `status`.
    pub fn answered(&self, status: u16) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if let Some(class) = (status / 100).checked_sub(2).and_then(|c| self.classes.get(c as usize)) {
            class.fetch_add(1, Ordering::Relaxed);
        }
        self.rate.lock().unwrap_or_else(|p| p.into_inner()).add(1);
    }

    pub fn refused(&self) {
        self.refused.fetch_add(1, Ordering::Relaxed);
    }

    pub fn upstream_failed(&self) {
        self.upstream_failures.fetch_add(1, Ordering::Relaxed);
    }

    pub fn view(&self, breaker: &str) -> StatsView {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        StatsView {
            requests: load(&self.requests),
            per_s: self.rate.lock().unwrap_or_else(|p| p.into_inner()).last_per_second(),
            status_2xx: load(&self.classes[0]),
            status_3xx: load(&self.classes[1]),
            status_4xx: load(&self.classes[2]),
            status_5xx: load(&self.classes[3]),
            refused: load(&self.refused),
            upstream_failures: load(&self.upstream_failures),
            breaker: breaker.to_string(),
        }
    }
}

/// A route's counters on one node, as they cross the mesh and show in `/v1/routes`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StatsView {
    pub requests: u64,
    /// Requests per second over the last few seconds.
    pub per_s: f64,
    pub status_2xx: u64,
    pub status_3xx: u64,
    pub status_4xx: u64,
    pub status_5xx: u64,
    pub refused: u64,
    pub upstream_failures: u64,
    /// `closed`, `open` or `half-open`.
    pub breaker: String,
}
