//! The route table every node's gateway serves from: a snapshot of every route of the cluster
//! (each route's row lives with its owner), refreshed every `refresh` and at once after a change
//! made through this node. A node that does not answer keeps its routes as last seen, so the
//! gateway goes on serving them while their owner is down.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use hyper::Method;
use serv_actors::route::RouteRecord;

use super::breaker::Breaker;
use super::stats::RouteStats;

/// One route as the gateway serves it: its record, and the guards built from its config.
pub struct Entry {
    pub name: String,
    /// The node whose answer listed it (its owner when last seen).
    pub node: String,
    pub record: RouteRecord,
    pub limiter: Option<DefaultDirectRateLimiter>,
    pub breaker: Breaker,
    /// Round-robin position over the upstreams.
    pub next_upstream: AtomicUsize,
    pub stats: Arc<RouteStats>,
}

impl Entry {
    fn new(name: String, node: String, record: RouteRecord, stats: Arc<RouteStats>) -> Self {
        let config = &record.config;
        let limiter = config.rate_limit_per_s.and_then(NonZeroU32::new).map(|rate| {
            let burst = config.rate_limit_burst.and_then(NonZeroU32::new).unwrap_or(rate);
            RateLimiter::direct(Quota::per_second(rate).allow_burst(burst))
        });
        let breaker = Breaker::new(config.breaker_failures, Duration::from_millis(config.breaker_open_ms));
        Self { name, node, record, limiter, breaker, next_upstream: AtomicUsize::new(0), stats }
    }

    /// True if the route's host and path prefix take this request (its method aside).
    fn takes(&self, host: Option<&str>, path: &str) -> bool {
        let config = &self.record.config;
        let host_ok = match (&config.host, host) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(wanted), Some(host)) => match wanted.strip_prefix("*.") {
                // A subdomain: something, a dot, then the domain.
                Some(domain) => {
                    host.strip_suffix(domain).is_some_and(|sub| sub.len() > 1 && sub.ends_with('.'))
                }
                None => host == wanted,
            },
        };
        host_ok && under_prefix(path, &config.path_prefix)
    }

    pub fn allows(&self, method: &Method) -> bool {
        let methods = &self.record.config.methods;
        methods.is_empty() || methods.iter().any(|m| m == method.as_str())
    }
}

/// True if `path` is `prefix` or below it at a segment boundary.
pub fn under_prefix(path: &str, prefix: &str) -> bool {
    match path.strip_prefix(prefix) {
        None => false,
        Some(rest) => prefix.ends_with('/') || rest.is_empty() || rest.starts_with('/'),
    }
}

/// Every route, most specific first: a route naming a host before one for any host, then the
/// longest path prefix, then by name (so equal routes resolve the same way on every node).
#[derive(Default)]
pub struct RouteTable {
    entries: Vec<Arc<Entry>>,
}

impl RouteTable {
    /// The route that takes a request for `host` (lowercase, without port) and `path`.
    pub fn find(&self, host: Option<&str>, path: &str) -> Option<&Arc<Entry>> {
        self.entries.iter().find(|entry| entry.takes(host, path))
    }

    pub fn entries(&self) -> &[Arc<Entry>] {
        &self.entries
    }

    /// A table of `rows` (node, name, record). An unchanged route keeps its entry from
    /// `previous` (its limiter, circuit and round-robin position); a changed one starts them
    /// afresh. Counters are kept by name in `stats`, whatever changes.
    pub fn build(
        rows: Vec<(String, String, RouteRecord)>,
        previous: &RouteTable,
        stats: &Mutex<HashMap<String, Arc<RouteStats>>>,
    ) -> Self {
        let kept: HashMap<&str, &Arc<Entry>> =
            previous.entries.iter().map(|e| (e.name.as_str(), e)).collect();
        let mut stats = stats.lock().unwrap_or_else(|p| p.into_inner());
        let mut entries: Vec<Arc<Entry>> = rows
            .into_iter()
            .map(|(node, name, record)| match kept.get(name.as_str()) {
                Some(old) if old.record == record && old.node == node => Arc::clone(old),
                _ => {
                    let counters = stats.entry(name.clone()).or_default().clone();
                    Arc::new(Entry::new(name, node, record, counters))
                }
            })
            .collect();
        entries.sort_by(|a, b| {
            let key = |e: &Entry| {
                let config = &e.record.config;
                (config.host.is_none(), std::cmp::Reverse(config.path_prefix.len()))
            };
            key(a).cmp(&key(b)).then_with(|| a.name.cmp(&b.name))
        });
        Self { entries }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Mutex;

    use serv_actors::route::{RouteConfig, RouteRecord};

    use super::{RouteTable, under_prefix};

    fn row(name: &str, host: Option<&str>, prefix: &str) -> (String, String, RouteRecord) {
        let config = RouteConfig {
            host: host.map(str::to_string),
            path_prefix: prefix.into(),
            upstreams: vec!["http://127.0.0.1:1".into()],
            ..Default::default()
        };
        let record = RouteRecord { config, enabled: true, created_ms: 0, updated_ms: 0 };
        ("node".into(), name.into(), record)
    }

    #[test]
    fn prefixes_match_at_segment_boundaries() {
        assert!(under_prefix("/api", "/api"));
        assert!(under_prefix("/api/v1", "/api"));
        assert!(!under_prefix("/apix", "/api"));
        assert!(under_prefix("/anything", "/"));
        assert!(under_prefix("/api/x", "/api/"));
        assert!(!under_prefix("/api", "/api/"));
    }

    #[test]
    fn the_most_specific_route_wins() {
        let rows = vec![
            row("root", None, "/"),
            row("api", None, "/api"),
            row("api-v2", None, "/api/v2"),
            row("tenant", Some("*.example.com"), "/api"),
            row("exact", Some("shop.test"), "/"),
        ];
        let table = RouteTable::build(rows, &RouteTable::default(), &Mutex::new(HashMap::new()));
        let name = |host: Option<&str>, path: &str| table.find(host, path).map(|e| e.name.clone());
        assert_eq!(name(None, "/api/v2/users").as_deref(), Some("api-v2"));
        assert_eq!(name(None, "/api/v1").as_deref(), Some("api"));
        assert_eq!(name(None, "/static").as_deref(), Some("root"));
        assert_eq!(name(Some("a.example.com"), "/api/v2").as_deref(), Some("tenant"));
        assert_eq!(name(Some("example.com"), "/api/v2").as_deref(), Some("api-v2"), "*.x is subdomains only");
        assert_eq!(name(Some("shop.test"), "/api").as_deref(), Some("exact"));
    }
}
