//! A short time series of this node's traffic, errors, memory and disk, kept in memory for the
//! console's overview charts.
//!
//! Every [`SAMPLE_INTERVAL`] a sampler task reads the node's own counters, the sources `/metrics`
//! renders (the S3 and STOMP edges' counter tables, the process's resident memory, the data
//! directory's size), and appends one [`Sample`] to a ring of the last [`MAX_SAMPLES`]: rates per
//! second from the counters' growth since the reading before, gauges as read. Nothing is stored:
//! a node that restarts starts a new series. `GET /v1/series` answers this node's series and every
//! other node's, asked over the mesh (the directory query [`SERIES_QUERY`]); a node that is down
//! or does not answer is named in `unreachable`, not drawn.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::{Query, State};
use serde::{Deserialize, Serialize};
use serv_actors::Directory;
use serv_storage::Storage;

use super::{AdminState, ApiError, ErrorCode};

/// Time between two samples.
pub const SAMPLE_INTERVAL: Duration = Duration::from_secs(5);
/// Samples kept per node: 30 minutes at one every [`SAMPLE_INTERVAL`].
pub const MAX_SAMPLES: usize = 360;
/// The directory query that asks a node for its series (no argument).
const SERIES_QUERY: &str = "series/samples";

/// One point of a node's series: rates over the interval that ends at `at_ms`, gauges at `at_ms`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// When it was taken (Unix ms).
    pub at_ms: u64,
    /// Messages stored by STOMP SEND frames, per second.
    pub messages_in_per_s: f64,
    /// STOMP MESSAGE frames sent to subscribers, per second.
    pub messages_out_per_s: f64,
    /// S3 requests answered (refusals included), per second.
    pub s3_requests_per_s: f64,
    /// S3 requests answered 4xx or 5xx, per second.
    pub s3_errors_per_s: f64,
    /// STOMP ERROR frames sent, per second.
    pub stomp_errors_per_s: f64,
    /// Resident memory of the process, in bytes.
    pub resident_bytes: u64,
    /// The node's memory budget (`--max-memory-bytes`); 0 from a node that did not say.
    #[serde(default)]
    pub memory_limit_bytes: u64,
    /// Whether the node was near its budget and refusing new work.
    #[serde(default)]
    pub memory_refusing: bool,
    /// Disk the data directory takes, in bytes.
    pub storage_bytes: u64,
}

/// The counters and gauges read at one instant.
#[derive(Clone, Copy, Debug)]
struct Reading {
    at: Instant,
    at_ms: u64,
    messages_in: u64,
    messages_out: u64,
    s3_requests: u64,
    s3_errors: u64,
    stomp_errors: u64,
    resident_bytes: u64,
    memory_limit_bytes: u64,
    memory_refusing: bool,
    storage_bytes: u64,
}

impl Reading {
    /// Reads this node's counters and gauges now (the data directory's size off the async workers).
    async fn take(storage: &Storage) -> Self {
        let storage = storage.clone();
        let storage_bytes = tokio::task::spawn_blocking(move || storage.disk_bytes()).await.unwrap_or(0);
        let s3 = crate::s3::metrics::snapshot();
        let statuses = || s3.iter().flat_map(|view| view.statuses.iter());
        let stomp = crate::stomp::metrics::snapshot();
        let (memory_limit_bytes, memory_refusing, _) = crate::memory::state();
        Self {
            at: Instant::now(),
            at_ms: serv_actors::now_ms(),
            messages_in: stomp.published,
            messages_out: stomp.delivered,
            s3_requests: statuses().map(|(_, count)| count).sum(),
            s3_errors: statuses()
                .filter(|(status, _)| status.starts_with('4') || status.starts_with('5'))
                .map(|(_, count)| count)
                .sum(),
            stomp_errors: stomp
                .frames_sent
                .iter()
                .filter(|(command, _)| *command == "ERROR")
                .map(|(_, n)| n)
                .sum(),
            resident_bytes: super::metrics::resident_bytes().unwrap_or(0),
            memory_limit_bytes,
            memory_refusing,
            storage_bytes,
        }
    }

    /// The sample of the interval from `before` to this reading.
    fn since(&self, before: &Reading) -> Sample {
        let elapsed = self.at.saturating_duration_since(before.at);
        let rate = |now: u64, then: u64| per_second(then, now, elapsed);
        Sample {
            at_ms: self.at_ms,
            messages_in_per_s: rate(self.messages_in, before.messages_in),
            messages_out_per_s: rate(self.messages_out, before.messages_out),
            s3_requests_per_s: rate(self.s3_requests, before.s3_requests),
            s3_errors_per_s: rate(self.s3_errors, before.s3_errors),
            stomp_errors_per_s: rate(self.stomp_errors, before.stomp_errors),
            resident_bytes: self.resident_bytes,
            memory_limit_bytes: self.memory_limit_bytes,
            memory_refusing: self.memory_refusing,
            storage_bytes: self.storage_bytes,
        }
    }
}

/// How fast a counter grew from `then` to `now` over `elapsed`, rounded to hundredths. A counter
/// below its last reading was reset (counting began again from zero), so all of `now` is growth:
/// a rate is never negative.
fn per_second(then: u64, now: u64, elapsed: Duration) -> f64 {
    let grown = if now >= then { now - then } else { now };
    let seconds = elapsed.as_secs_f64();
    if seconds <= 0.0 {
        return 0.0;
    }
    let rate = (grown as f64 / seconds * 100.0).round() / 100.0;
    debug_assert!(rate >= 0.0, "a rate is never negative");
    rate
}

/// The last [`MAX_SAMPLES`] samples of this node, oldest first.
#[derive(Default)]
pub(super) struct Series {
    samples: Mutex<VecDeque<Sample>>,
}

impl Series {
    /// Appends `sample`, dropping the oldest once [`MAX_SAMPLES`] are kept.
    fn push(&self, sample: Sample) {
        let mut samples = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        if samples.len() == MAX_SAMPLES {
            samples.pop_front();
        }
        samples.push_back(sample);
        debug_assert!(samples.len() <= MAX_SAMPLES, "the series is bounded");
    }

    /// The samples kept, oldest first.
    fn samples(&self) -> Vec<Sample> {
        self.samples.lock().unwrap_or_else(|p| p.into_inner()).iter().cloned().collect()
    }

    /// Starts sampling this node into a new series, and answers other nodes' [`SERIES_QUERY`] with
    /// it; the sampler ends once the series is dropped.
    pub(super) fn start(directory: &Directory, storage: Storage) -> Arc<Self> {
        let series = Arc::new(Self::default());
        let answering = Arc::downgrade(&series);
        crate::owned::answer(directory, SERIES_QUERY, move |_| {
            answering.upgrade().map(|series| series.samples()).ok_or_else(|| "not sampling".to_string())
        });
        tokio::spawn(sample(Arc::downgrade(&series), storage));
        series
    }
}

/// Appends a sample to `series` every [`SAMPLE_INTERVAL`] until it is dropped.
async fn sample(series: Weak<Series>, storage: Storage) {
    let mut ticks = tokio::time::interval(SAMPLE_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await; // the first tick is now: the baseline reading
    let mut last = Reading::take(&storage).await;
    loop {
        ticks.tick().await;
        let reading = Reading::take(&storage).await;
        let Some(series) = series.upgrade() else { return };
        series.push(reading.since(&last));
        last = reading;
    }
}

/// One node's series as `/v1/series` answers it.
#[derive(Serialize)]
struct NodeSeries {
    node: String,
    samples: Vec<Sample>,
}

/// `GET /v1/series[?node=ID]`: `{"interval_ms", "max_samples", "nodes": [{"node", "samples":
/// [...]}], "unreachable": [...]}`: this node's series first, then every other node's that
/// answered (or only node `ID`'s); `unreachable` names the nodes down or that did not answer.
pub(super) async fn list(
    State(state): State<AdminState>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let mut only = None;
    for (name, value) in &params {
        match name.as_str() {
            "node" => only = Some(value.as_str()),
            other => {
                return Err(ApiError::new(
                    ErrorCode::InvalidParameter,
                    format!("unknown parameter {other:?}; /v1/series takes node"),
                ));
            }
        }
    }
    let me = &state.inner.node.id;
    if let Some(node) = only.filter(|node| *node != me) {
        let known = state.inner.members.as_ref().is_some_and(|m| m.borrow().iter().any(|m| m.id == node));
        if !known {
            return Err(ApiError::new(
                ErrorCode::NotFound,
                format!("no member {node:?} in this node's view"),
            ));
        }
    }
    let wanted = |node: &str| only.is_none_or(|only| only == node);
    let mut nodes = Vec::new();
    if wanted(me) {
        nodes.push(NodeSeries { node: me.clone(), samples: state.inner.series.samples() });
    }
    // Down members are not asked: their series are missing, not invented.
    let mut unreachable: Vec<String> =
        super::down_members(&state).into_iter().filter(|n| wanted(n)).collect();
    if only.is_none_or(|node| node != me) {
        let answers =
            crate::owned::ask_peers::<Vec<Sample>>(&state.inner.directory, SERIES_QUERY, Vec::new()).await;
        for (node, answer) in answers.into_iter().filter(|(node, _)| wanted(node)) {
            match answer {
                Ok(samples) => nodes.push(NodeSeries { node, samples }),
                Err(_) => unreachable.push(node),
            }
        }
    }
    // This node first, then the others by id.
    let others = usize::from(wanted(me));
    nodes[others..].sort_by(|a, b| a.node.cmp(&b.node));
    Ok(Json(serde_json::json!({
        "interval_ms": SAMPLE_INTERVAL.as_millis() as u64,
        "max_samples": MAX_SAMPLES,
        "nodes": nodes,
        "unreachable": unreachable,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(at: Instant, count: u64) -> Reading {
        Reading {
            at,
            at_ms: 0,
            messages_in: count,
            messages_out: count,
            s3_requests: count,
            s3_errors: count,
            stomp_errors: count,
            resident_bytes: 7,
            memory_limit_bytes: 8,
            memory_refusing: true,
            storage_bytes: 9,
        }
    }

    #[test]
    fn rates_are_growth_per_second_between_readings() {
        let start = Instant::now();
        let sample = reading(start + Duration::from_secs(5), 60).since(&reading(start, 10));
        assert_eq!(sample.messages_in_per_s, 10.0);
        assert_eq!(sample.s3_errors_per_s, 10.0);
        assert_eq!((sample.resident_bytes, sample.storage_bytes), (7, 9), "gauges as read");
        assert_eq!((sample.memory_limit_bytes, sample.memory_refusing), (8, true), "the budget as read");
        assert_eq!(per_second(0, 1, Duration::from_secs(3)), 0.33, "rounded to hundredths");
    }

    #[test]
    fn a_counter_that_went_back_was_reset_and_never_gives_a_negative_rate() {
        let start = Instant::now();
        let sample = reading(start + Duration::from_secs(5), 20).since(&reading(start, 1_000));
        assert_eq!(sample.s3_requests_per_s, 4.0, "the 20 counted since the reset");
        assert_eq!(per_second(5, 0, Duration::from_secs(5)), 0.0);
        assert_eq!(per_second(0, 10, Duration::ZERO), 0.0, "no time, no rate");
    }

    #[test]
    fn the_series_keeps_only_the_newest_samples() {
        let series = Series::default();
        let start = Instant::now();
        for i in 0..(MAX_SAMPLES as u64 + 40) {
            let mut sample = reading(start, 0).since(&reading(start, 0));
            sample.at_ms = i;
            series.push(sample);
        }
        let kept = series.samples();
        assert_eq!(kept.len(), MAX_SAMPLES);
        assert_eq!(
            (kept[0].at_ms, kept[MAX_SAMPLES - 1].at_ms),
            (40, MAX_SAMPLES as u64 + 39),
            "oldest first"
        );
    }
}
