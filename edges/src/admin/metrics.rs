//! `/metrics` in the Prometheus text exposition format (version 0.0.4).

use std::fmt::Write;
use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use serv_actors::ActorRecord;
use serv_actors::inspect::KindTotals;
use serv_storage::commit::GROUP_SIZE_BUCKETS;
use serv_storage::histogram::HistogramSnapshot;

use super::AdminState;

/// Writes one metric family: its HELP and TYPE lines, then its samples.
struct Family<'a> {
    out: &'a mut String,
    name: &'static str,
}

impl<'a> Family<'a> {
    fn new(out: &'a mut String, name: &'static str, kind: &str, help: &str) -> Self {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        Self { out, name }
    }

    fn sample(&mut self, suffix: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) -> &mut Self {
        let _ = write!(self.out, "{}{suffix}", self.name);
        if !labels.is_empty() {
            let labels: Vec<_> = labels.iter().map(|(k, v)| format!("{k}=\"{}\"", escape(v))).collect();
            let _ = write!(self.out, "{{{}}}", labels.join(","));
        }
        let _ = writeln!(self.out, " {value}");
        self
    }

    /// The samples of one histogram: its buckets (`le`, cumulative), sum and count, each with
    /// `labels`.
    fn histogram(&mut self, labels: &[(&str, &str)], histogram: &HistogramSnapshot) -> &mut Self {
        for (bound, count) in &histogram.buckets {
            self.sample("_bucket", &[labels, &[("le", &bound.to_string())]].concat(), count);
        }
        self.sample("_bucket", &[labels, &[("le", "+Inf")]].concat(), histogram.count)
            .sample("_sum", labels, histogram.sum_seconds)
            .sample("_count", labels, histogram.count)
    }
}

fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Resident set size of this process, from `/proc/self/status`.
pub(super) fn resident_bytes() -> Option<u64> {
    crate::memory::resident_bytes()
}

/// The memory budget: its size, whether the node refuses new work, and refusals by edge.
fn render_memory(out: &mut String) {
    let (limit, refusing, refused) = crate::memory::state();
    Family::new(out, "serv_memory_limit_bytes", "gauge", "The node's memory budget (--max-memory-bytes).")
        .sample("", &[], limit);
    Family::new(
        out,
        "serv_memory_refusing",
        "gauge",
        "1 while the node is near its memory budget and refuses new work, else 0.",
    )
    .sample("", &[], u8::from(refusing));
    let mut family = Family::new(
        out,
        "serv_memory_refused_total",
        "counter",
        "Requests and frames refused because the node was near its memory budget, by edge.",
    );
    for (edge, count) in crate::memory::EDGES.iter().zip(refused) {
        family.sample("", &[("edge", edge)], count);
    }
}

/// Computes one per-kind sample from the kind's name and monotonic totals.
type PerKind<'a> = dyn Fn(&str, &KindTotals) -> u64 + 'a;

/// The live actors of one record kind.
fn live<'a>(records: &'a [ActorRecord], kind: &'a str) -> impl Iterator<Item = &'a ActorRecord> + 'a {
    records.iter().filter(move |r| r.kind.as_str() == kind)
}

pub(super) async fn render(State(state): State<AdminState>) -> impl IntoResponse {
    let mut out = String::new();
    Family::new(
        &mut out,
        "serv_process_resident_memory_bytes",
        "gauge",
        "Resident memory of the servd process.",
    )
    .sample("", &[], resident_bytes().unwrap_or(0));
    render_memory(&mut out);
    Family::new(&mut out, "serv_uptime_seconds", "gauge", "Seconds since the node started.").sample(
        "",
        &[],
        state.uptime_ms() as f64 / 1000.0,
    );

    let records = state.inner.directory.records();
    let registry = state.inner.directory.registry();
    let kinds: Vec<_> = registry.totals().map(|(kind, totals)| (kind.as_str(), totals)).collect();
    let per_kind: [(&'static str, &str, &str, &PerKind); 4] = [
        ("serv_actors", "gauge", "Live actors by kind.", &|kind, _| live(&records, kind).count() as u64),
        (
            "serv_actor_mailbox_depth",
            "gauge",
            "Messages waiting in live actors' mailboxes, by kind.",
            &|kind, _| live(&records, kind).map(|r| r.mailbox_depth).sum(),
        ),
        (
            "serv_actor_messages_handled_total",
            "counter",
            "Messages handled by actors since start, by kind.",
            &|_, totals| totals.handled.load(Ordering::Relaxed),
        ),
        (
            "serv_actor_restarts_total",
            "counter",
            "Actor restarts after a crash since start, by kind.",
            &|_, totals| totals.restarts.load(Ordering::Relaxed),
        ),
    ];
    for (name, kind_of_metric, help, value) in per_kind {
        let mut family = Family::new(&mut out, name, kind_of_metric, help);
        for (kind, totals) in &kinds {
            family.sample("", &[("kind", kind)], value(kind, totals));
        }
    }

    let commits = state.inner.storage.commit_stats();
    Family::new(&mut out, "serv_storage_commits_total", "counter", "Durable commits acknowledged.").sample(
        "",
        &[],
        commits.commits,
    );
    Family::new(
        &mut out,
        "serv_storage_fsyncs_total",
        "counter",
        "Journal fsyncs performed by the commit path.",
    )
    .sample("", &[], commits.fsyncs);
    let mut family = Family::new(
        &mut out,
        "serv_storage_group_commit_size",
        "histogram",
        "Commits made durable by one fsync.",
    );
    for (bound, count) in GROUP_SIZE_BUCKETS.iter().zip(commits.group_size_buckets) {
        family.sample("_bucket", &[("le", &bound.to_string())], count);
    }
    family
        .sample("_bucket", &[("le", "+Inf")], commits.fsyncs)
        .sample("_sum", &[], commits.group_size_sum)
        .sample("_count", &[], commits.fsyncs);
    Family::new(&mut out, "serv_storage_fsync_seconds", "histogram", "Time each journal fsync took.")
        .histogram(&[], &commits.fsync_seconds);
    // Measuring walks the data directory: not on an async worker.
    let storage = state.inner.storage.clone();
    if let Ok(bytes) = tokio::task::spawn_blocking(move || storage.disk_bytes()).await {
        let help =
            "Bytes of disk the node's data directory takes (its database: journal, tables, object blocks).";
        Family::new(&mut out, "serv_storage_bytes", "gauge", help).sample("", &[], bytes);
    }

    let blocks = state.inner.storage.blocks().stats();
    let block_families: [(&'static str, &str, &str, u64); 3] = [
        ("serv_blocks_stored", "gauge", "Distinct content blocks stored (each stored once).", blocks.blocks),
        ("serv_block_bytes_stored", "gauge", "Bytes of the content blocks stored.", blocks.bytes),
        (
            "serv_blocks_collected_total",
            "counter",
            "Unreferenced blocks removed by the collector since start.",
            blocks.collected,
        ),
    ];
    for (name, kind, help, value) in block_families {
        Family::new(&mut out, name, kind, help).sample("", &[], value);
    }

    if let Some(members) = &state.inner.members {
        render_members(&mut out, &members.borrow());
    }
    if let Some(partitions) = &state.inner.partitions {
        render_partitions(&mut out, partitions);
    }
    render_s3(&mut out, &crate::s3::metrics::snapshot());
    render_stomp(&mut out, &crate::stomp::metrics::snapshot());
    if let Some(gateway) = &state.inner.gateway {
        render_gateway(&mut out, &gateway.stats());
    }
    if let Some(modules) = state.inner.directory.modules() {
        render_modules(&mut out, &modules.stats());
    }

    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], out)
}

/// The members of this node's view by state, and the suspicions it saw.
fn render_members(out: &mut String, view: &[serv_cluster::membership::MemberView]) {
    use serv_cluster::membership::MemberState;
    let mut family = Family::new(
        out,
        "serv_cluster_members",
        "gauge",
        "Members of this node's view (itself included), by state.",
    );
    for (state, label) in
        [(MemberState::Alive, "alive"), (MemberState::Suspect, "suspect"), (MemberState::Down, "down")]
    {
        family.sample("", &[("state", label)], view.iter().filter(|member| member.state == state).count());
    }
    Family::new(
        out,
        "serv_cluster_suspicions_total",
        "counter",
        "Times this node saw a member become suspect (missed probes), since start.",
    )
    .sample("", &[], serv_cluster::membership::suspicions_total());
}

/// The S3 edge's requests, by operation (`unknown` when refused before one was known) and status.
fn render_s3(out: &mut String, operations: &[crate::s3::metrics::OperationView]) {
    let mut requests = Family::new(
        out,
        "serv_s3_requests_total",
        "counter",
        "S3 requests answered, by operation and HTTP status (refusals included).",
    );
    for view in operations {
        for (status, count) in &view.statuses {
            requests.sample("", &[("operation", view.operation), ("status", status)], count);
        }
    }
    let mut latency = Family::new(
        out,
        "serv_s3_request_duration_seconds",
        "histogram",
        "Time from an S3 request's arrival to its response's head (bodies of downloads stream after), by operation.",
    );
    for view in operations {
        latency.histogram(&[("operation", view.operation)], &view.latency);
    }
}

/// The STOMP edge's connections, frames and messages.
fn render_stomp(out: &mut String, stomp: &crate::stomp::metrics::StompView) {
    let help = "STOMP connections open now (TCP and WebSocket).";
    Family::new(out, "serv_stomp_connections", "gauge", help).sample("", &[], stomp.connections_open);
    let counters: [(&'static str, &str, u64); 8] = [
        ("serv_stomp_connections_total", "STOMP connections accepted since start.", stomp.connections),
        ("serv_stomp_messages_published_total", "Messages stored by SEND frames.", stomp.published),
        ("serv_stomp_messages_delivered_total", "MESSAGE frames sent to subscribers.", stomp.delivered),
        ("serv_stomp_messages_acked_total", "Messages settled by clients' ACK frames.", stomp.acked),
        ("serv_stomp_messages_nacked_total", "Messages rejected by clients' NACK frames.", stomp.nacked),
        (
            "serv_stomp_messages_dead_lettered_total",
            "Messages this node moved to a dead-letter topic (deliveries exhausted, refused by a transform, or dropped for a max length).",
            serv_actors::topic::dead_lettered_total(),
        ),
        (
            "serv_stomp_messages_rejected_total",
            "SEND frames refused because their destination was at its max length (overflow reject-publish).",
            stomp.rejected,
        ),
        (
            "serv_stomp_messages_dropped_total",
            "Messages this node moved from a full destination's head to its dead-letter topic (overflow drop-head).",
            serv_actors::topic::dropped_total(),
        ),
    ];
    for (name, help, value) in counters {
        Family::new(out, name, "counter", help).sample("", &[], value);
    }
    let frames = [
        (
            "serv_stomp_frames_received_total",
            "STOMP frames read from clients, by command (`other`: not a STOMP command).",
            &stomp.frames_received,
        ),
        ("serv_stomp_frames_sent_total", "STOMP frames written to clients, by command.", &stomp.frames_sent),
    ];
    for (name, help, counts) in frames {
        let mut family = Family::new(out, name, "counter", help);
        for (command, count) in counts {
            family.sample("", &[("command", command)], count);
        }
    }
}

/// The partitions, their replication as this node sees it, and the proposals this node made to
/// their Raft groups.
fn render_partitions(out: &mut String, partitions: &serv_cluster::partition::Partitions) {
    let led = partitions.led();
    let stats = partitions.proposal_stats();
    let statuses = partitions.status();
    let under_replicated = statuses.iter().filter(|status| status.under_replicated).count();
    let families: [(&'static str, &str, &str, u64); 6] = [
        (
            "serv_partitions",
            "gauge",
            "Partitions of the cluster (fixed when it was founded).",
            partitions.count(),
        ),
        ("serv_partitions_led", "gauge", "Partitions whose Raft group this node leads.", led as u64),
        (
            "serv_partitions_under_replicated",
            "gauge",
            "Partitions of which this node holds a replica that have no leader, fewer alive voters than their replica set, or (where this node leads) a lagging voter.",
            under_replicated as u64,
        ),
        (
            "serv_raft_leader_changes_total",
            "counter",
            "Times a partition's leader became another node, as this node saw it.",
            partitions.leader_changes(),
        ),
        (
            "serv_raft_proposals_total",
            "counter",
            "Write sets this node proposed to its partitions' logs.",
            stats.proposals,
        ),
        (
            "serv_raft_proposals_failed_total",
            "counter",
            "Proposals that were not committed (not the leader, group stopped, storage failed).",
            stats.failed,
        ),
    ];
    for (name, kind, help, value) in families {
        Family::new(out, name, kind, help).sample("", &[], value);
    }
    Family::new(
        out,
        "serv_raft_proposal_seconds",
        "summary",
        "Time from proposal to committed and applied, of the proposals that were.",
    )
    .sample("_sum", &[], stats.latency_us_sum as f64 / 1e6)
    .sample("_count", &[], stats.committed);
    // Per follower, the most entries it lacks of any partition this node leads: one sample per
    // other node, however many partitions there are.
    let mut lag = std::collections::BTreeMap::<&str, u64>::new();
    for status in statuses.iter().filter(|status| status.role == "leader") {
        for (node, entries) in status.lag.iter().filter(|(node, _)| Some(*node) != status.leader.as_ref()) {
            let most = lag.entry(node).or_default();
            *most = (*most).max(*entries);
        }
    }
    let help =
        "Log entries a follower lacks, the most over the partitions this node leads, by follower node id.";
    let mut family = Family::new(out, "serv_raft_replication_lag_entries", "gauge", help);
    for (node, entries) in lag {
        family.sample("", &[("follower", node)], entries);
    }
}

/// This node's gateway counters, by route (and by status class for the answers).
fn render_gateway(out: &mut String, stats: &[(String, crate::gateway::stats::StatsView)]) {
    let mut answers = Family::new(
        out,
        "serv_gateway_responses_total",
        "counter",
        "Gateway answers by route and status class.",
    );
    for (route, view) in stats {
        let classes = [
            ("2xx", view.status_2xx),
            ("3xx", view.status_3xx),
            ("4xx", view.status_4xx),
            ("5xx", view.status_5xx),
        ];
        for (class, count) in classes {
            answers.sample("", &[("route", route), ("class", class)], count);
        }
    }
    let counters: [Counter<crate::gateway::stats::StatsView>; 2] = [
        (
            "serv_gateway_refused_total",
            "Requests the gateway answered itself (rate limited, circuit open, disabled, too large), by route.",
            |view| view.refused,
        ),
        (
            "serv_gateway_upstream_failures_total",
            "Upstream attempts that failed (unreachable, timeout, 5xx), retries included, by route.",
            |view| view.upstream_failures,
        ),
    ];
    counter_families(out, "route", stats.iter().map(|(route, view)| (route, view)), &counters);
    let mut open = Family::new(
        out,
        "serv_gateway_circuit_open",
        "gauge",
        "1 while a route's circuit is not closed here.",
    );
    for (route, view) in stats {
        open.sample("", &[("route", route)], u8::from(view.breaker != "closed"));
    }
}

/// This node's WASM module calls, by module.
fn render_modules(
    out: &mut String,
    stats: &std::collections::BTreeMap<String, serv_actors::module::ModuleStats>,
) {
    let counters: [Counter<serv_actors::module::ModuleStats>; 3] = [
        ("serv_wasm_calls_total", "WASM module calls on this node, by module.", |s| s.calls),
        (
            "serv_wasm_failures_total",
            "WASM module calls that refused their input or failed (trap, fuel, memory, deadline), by module.",
            |s| s.failures,
        ),
        ("serv_wasm_busy_microseconds_total", "Time spent in WASM module calls, by module.", |s| s.busy_us),
    ];
    counter_families(out, "module", stats.iter(), &counters);
}

/// A counter family: its name, its help and how to count a row.
type Counter<T> = (&'static str, &'static str, fn(&T) -> u64);

/// One counter family per `(name, help, count)`, with a sample of each row labelled `label`.
fn counter_families<'a, T: 'a>(
    out: &mut String,
    label: &str,
    rows: impl Iterator<Item = (&'a String, &'a T)> + Clone,
    counters: &[Counter<T>],
) {
    for (name, help, count) in counters {
        let mut family = Family::new(out, name, "counter", help);
        for (key, row) in rows.clone() {
            family.sample("", &[(label, key)], count(row));
        }
    }
}
