//! One chaos run: start the nodes, run the workloads while the schedule's faults hit them, heal
//! everything, let consumers drain, read every key back through every node, check the history and
//! write the report.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::Serialize;

use crate::check::{self, FinalReads, Placed, Violation};
pub use crate::faults::FaultEvent;
use crate::faults::{inject, wait_cluster};
use crate::history::{History, Op, OpKind, Outcome};
use crate::http::Http;
use crate::messages::{self, MessageConfig};
use crate::netns::Network;
use crate::nodes::{ACCESS_KEY, ADMIN_TOKEN, Nodes, PortPicker, Ports, SECRET_KEY};
use crate::rng::Rng;
use crate::s3::{self, S3Config};
use crate::schedule::{self, Fault, FaultKind, Shape};
use crate::worker::Worker;

/// Which protocols the workload drives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Workload {
    S3,
    Stomp,
    Mixed,
}

/// Where the nodes run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum HostMode {
    /// Namespaces where the machine allows them (root and iproute2), else loopback.
    Auto,
    /// Every node on 127.0.0.1 (no network faults).
    Loopback,
    /// Each node in its own network namespace on a bridge.
    Netns,
}

/// Everything a run is made of.
#[derive(Clone, Debug)]
pub struct RunConfig {
    pub servd: PathBuf,
    pub nodes: usize,
    pub duration: Duration,
    pub seed: u64,
    pub faults: Vec<FaultKind>,
    pub report: PathBuf,
    pub workload: Workload,
    /// S3 workers, and as many STOMP producers.
    pub concurrency: usize,
    /// A pause after each op of a worker (0: as fast as the nodes answer).
    pub pace: Duration,
    pub fault_interval: Duration,
    pub max_hold: Duration,
    pub heal_timeout: Duration,
    pub keys: usize,
    pub expect_availability: bool,
    /// Run every STOMP destination through a WASM transform, and check deliveries are its output.
    pub transform: bool,
    pub base_port: Option<u16>,
    pub hosts: HostMode,
    /// Extra environment for every servd (e.g. a fault-injection switch of a test build).
    pub servd_env: Vec<(String, String)>,
    /// The command line that replays this run.
    pub replay: String,
}

/// What a run found (the report is written from it).
#[derive(Debug, Serialize)]
pub struct RunResult {
    pub seed: u64,
    pub replay: String,
    pub nodes: Vec<Ports>,
    pub schedule: Vec<Fault>,
    pub faults: Vec<FaultEvent>,
    pub violations: Vec<Violation>,
    pub stats: Stats,
    pub notes: Vec<String>,
    pub history: Vec<Op>,
}

/// Counts by op kind and outcome.
#[derive(Debug, Default, Serialize)]
pub struct Stats {
    pub duration_ms: u64,
    pub ops: usize,
    pub by_kind: HashMap<String, HashMap<String, usize>>,
    pub final_reads: usize,
    pub acknowledged_writes: usize,
    pub acknowledged_messages: usize,
    pub deliveries: usize,
}

const BUCKETS: usize = 4;
const QUEUES: usize = 2;
const GROUPS: usize = 2;

/// Runs the whole thing; the result carries every violation found.
pub async fn run(config: RunConfig) -> Result<RunResult> {
    std::fs::create_dir_all(&config.report)
        .with_context(|| format!("cannot create {}", config.report.display()))?;
    let node_dir = config.report.join("nodes");
    if node_dir.exists() {
        std::fs::remove_dir_all(&node_dir).context("cannot clear the old nodes dir")?;
    }
    std::fs::create_dir_all(&node_dir)?;
    let mut notes = Vec::new();
    let network = network(&config, &mut notes)?;
    let hosts = match &network {
        Some(network) => network.hosts.iter().map(|h| (h.ip, Some(h.namespace.clone()))).collect(),
        None => vec![(Ipv4Addr::LOCALHOST, None); config.nodes],
    };
    let mut ports = PortPicker::new(config.base_port);
    let mut nodes = Nodes::new(&config.servd, &node_dir, hosts, &mut ports, config.servd_env.clone())?;
    let http = Http::new(ACCESS_KEY, SECRET_KEY, ADMIN_TOKEN);

    for index in 0..nodes.len() {
        nodes.start(index)?;
        if index == 0 {
            wait_cluster(&http, &nodes, &[0], 1, true, Duration::from_secs(30))
                .await
                .context("the first node did not start")?;
        }
    }
    let all: Vec<usize> = (0..nodes.len()).collect();
    wait_cluster(&http, &nodes, &all, nodes.len(), true, Duration::from_secs(60))
        .await
        .context("the cluster did not form")?;

    let s3_addrs: Vec<SocketAddr> = nodes.nodes.iter().map(|n| n.addr(n.ports.s3)).collect();
    let stomp_addrs: Vec<SocketAddr> = nodes.nodes.iter().map(|n| n.addr(n.ports.stomp)).collect();
    let s3_config = Arc::new(S3Config {
        seed: config.seed,
        buckets: (0..BUCKETS).map(|n| format!("chaos-b{n}")).collect(),
        keys_per_bucket: config.keys,
        max_body_bytes: 2 * 1024 * 1024 + 17,
    });
    let use_s3 = config.workload != Workload::Stomp;
    let use_stomp = config.workload != Workload::S3;
    if use_s3 {
        s3::setup(&http, &s3_addrs, &s3_config).await.map_err(anyhow::Error::msg)?;
    }
    let mut message_config =
        if use_stomp { MessageConfig::new(QUEUES, GROUPS) } else { MessageConfig::new(0, 0) };
    if use_stomp && config.transform {
        let admin = nodes.nodes[0].addr(nodes.nodes[0].ports.admin);
        messages::attach_transform(&http, admin, &message_config).await.map_err(anyhow::Error::msg)?;
        message_config.transformed = true;
    }
    let message_config = Arc::new(message_config);

    let history = Arc::new(History::new());
    let stop_writers = Arc::new(AtomicBool::new(false));
    let stop_consumers = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    let mut consumers = Vec::new();
    let worker = |name: String, stream: u64, stop: &Arc<AtomicBool>| Worker {
        name,
        rng: Rng::new(config.seed, stream),
        history: history.clone(),
        stop: stop.clone(),
        pace: config.pace,
    };
    for (n, subscription) in message_config.subscriptions.iter().enumerate() {
        for c in 0..message_config.consumers_per_subscription {
            let consumer = worker(format!("consumer-{n}-{c}"), 1_000 + (n * 10 + c) as u64, &stop_consumers);
            consumers.push(tokio::spawn(messages::consumer(
                consumer,
                stomp_addrs.clone(),
                subscription.clone(),
                message_config.transformed,
            )));
        }
    }
    for w in 0..config.concurrency {
        if use_s3 {
            let s3_worker = worker(format!("s3-{w}"), w as u64, &stop_writers);
            writers.push(tokio::spawn(s3::worker(
                s3_worker,
                http.clone(),
                s3_addrs.clone(),
                s3_config.clone(),
            )));
        }
        if use_stomp {
            let producer = worker(format!("producer-{w}"), 100 + w as u64, &stop_writers);
            writers.push(tokio::spawn(messages::producer(
                producer,
                stomp_addrs.clone(),
                message_config.clone(),
            )));
        }
    }

    let shape = Shape {
        nodes: config.nodes,
        duration_ms: config.duration.as_millis() as u64,
        interval_ms: config.fault_interval.as_millis() as u64,
        max_hold_ms: config.max_hold.as_millis() as u64,
        kinds: config.faults.clone(),
    };
    let planned = schedule::draw(config.seed, &shape);
    let faults = inject(&mut nodes, network.as_ref(), &http, &planned, &history, shape.duration_ms).await;

    stop_writers.store(true, Ordering::Relaxed);
    for writer in writers {
        let _ = writer.await;
    }
    let workload_ms = history.now_ms();
    tokio::task::block_in_place(|| nodes.heal())?;
    if let Some(network) = &network {
        for index in 0..nodes.len() {
            // Whatever a fault left behind (a failed heal) goes too; errors mean nothing was left.
            let _ = network.heal_partition(index);
            let _ = network.restore(index);
        }
    }
    if let Err(error) = wait_cluster(&http, &nodes, &all, nodes.len(), true, config.heal_timeout).await {
        notes.push(format!("after heal: {error:#}"));
    }

    // Consumers keep going until every acknowledged message reached every subscription.
    let drained = Instant::now();
    while check::undelivered(&history.snapshot(), &message_config.subscriptions) > 0
        && drained.elapsed() < config.heal_timeout
    {
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // A moment more, so that a repeat delivery still in flight is seen and checked.
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop_consumers.store(true, Ordering::Relaxed);
    for consumer in consumers {
        let _ = tokio::time::timeout(Duration::from_secs(5), consumer).await;
    }

    let ops = history.snapshot();
    let mut violations = Vec::new();
    let mut final_reads = FinalReads::new();
    if use_s3 {
        let mut targets: Vec<&str> = ops
            .iter()
            .filter(|op| matches!(op.kind, OpKind::S3Put | OpKind::S3Delete))
            .map(|op| op.target.as_str())
            .collect();
        targets.sort_unstable();
        targets.dedup();
        // Reads retry a 503 while the cluster settles, all within one heal timeout: a key that
        // stays unreadable (its owner gone for good) must not hold the run for long.
        // Every key through every node at once, all under that one deadline.
        let reads_until = Instant::now() + config.heal_timeout;
        let reads = targets
            .iter()
            .filter_map(|target| target.split_once('/').map(|pair| (*target, pair)))
            .map(|(target, (bucket, key))| {
                let http = &http;
                let reads = s3_addrs.iter().enumerate().map(move |(node, addr)| async move {
                    (node, s3::final_read(http, *addr, config.seed, bucket, key, reads_until).await)
                });
                async move { (target.to_string(), futures_util::future::join_all(reads).await) }
            });
        final_reads.extend(futures_util::future::join_all(reads).await);
        violations.extend(check::s3_final_state(&ops, &final_reads));
        violations.extend(check::s3_reads(&ops));
        violations.extend(check::s3_stale_reads(&ops));
    }
    if use_stomp {
        violations.extend(check::stomp(&ops, &message_config.subscriptions));
        violations.extend(check::untransformed(&ops));
    }
    match placements(&http, &nodes).await {
        Ok((placed, owners)) => violations.extend(check::single_owner(&placed, &owners, history.now_ms())),
        Err(error) => notes.push(format!("could not list actors after heal: {error}")),
    }
    if config.expect_availability {
        let windows: Vec<_> = faults.iter().map(|f| (f.node, f.start_ms, f.end_ms)).collect();
        violations.extend(check::available_during_faults(&ops, &windows));
        let partitions: Vec<_> = faults
            .iter()
            .filter(|f| f.kind == "partition")
            .map(|f| (f.node, f.held_from_ms, f.held_until_ms))
            .collect();
        violations.extend(check::minority_acknowledged_nothing(&ops, &partitions));
    }
    violations.extend(faults.iter().filter(|f| f.kind != "crash" && f.rejoined_ms.is_none()).map(|f| {
        Violation {
            invariant: "node-rejoins",
            message: format!(
                "n{} was not whole again after its {} was healed: {}",
                f.node + 1,
                f.kind,
                f.detail
            ),
            ops: Vec::new(),
            at_ms: f.end_ms,
        }
    }));
    for (index, node) in nodes.nodes.iter().enumerate() {
        if nodes.running(index) && node.starts > 1 {
            notes.push(format!("{} was started {} times", node.name(), node.starts));
        }
    }
    violations.sort_by_key(|v| v.at_ms);

    let stats = stats(&ops, workload_ms, final_reads.values().map(Vec::len).sum());
    let result = RunResult {
        seed: config.seed,
        replay: config.replay.clone(),
        nodes: nodes.nodes.iter().map(|n| n.ports.clone()).collect(),
        schedule: planned,
        faults,
        violations,
        stats,
        notes,
        history: ops,
    };
    // The nodes' data dirs of a run that found nothing hold nothing to look at and take hundreds
    // of megabytes each (a table of 40 runs filled a disk); their logs stay. A run with a
    // violation keeps them for the post-mortem.
    let data_dirs: Vec<PathBuf> = nodes.nodes.iter().map(|node| node.data_dir.clone()).collect();
    drop(nodes);
    if result.violations.is_empty() {
        for dir in data_dirs {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
    Ok(result)
}

/// The namespaces the nodes run in, or none (loopback), as `--hosts` asks and the machine allows.
fn network(config: &RunConfig, notes: &mut Vec<String>) -> Result<Option<Network>> {
    let needs_network = config.faults.iter().any(|kind| kind.needs_network());
    let why_not = Network::unavailable();
    match (config.hosts, why_not) {
        (HostMode::Loopback, _) if needs_network => {
            anyhow::bail!("partition and netem faults need --hosts netns (or auto)")
        }
        (HostMode::Loopback, _) => Ok(None),
        (HostMode::Netns, Some(why)) => anyhow::bail!("--hosts netns: {why}"),
        (HostMode::Auto, Some(why)) if needs_network => {
            anyhow::bail!("partition and netem faults need namespaces: {why}")
        }
        (HostMode::Auto, Some(why)) => {
            notes.push(format!("nodes ran on loopback: {why}"));
            Ok(None)
        }
        (HostMode::Auto | HostMode::Netns, None) => {
            let network = Network::create(config.nodes).context("cannot make the nodes' namespaces")?;
            if config.faults.contains(&FaultKind::Netem) {
                network.probe_netem()?;
            }
            notes.push(format!(
                "each node ran in its own network namespace: {}",
                network
                    .hosts
                    .iter()
                    .map(|h| format!("{} {}", h.namespace, h.ip))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
            Ok(Some(network))
        }
    }
}

/// Every entity actor the cluster reports, and the node that serves each (its partition's leader).
async fn placements(http: &Http, nodes: &Nodes) -> Result<(Vec<Placed>, HashMap<String, String>), String> {
    let admin = nodes.nodes[0].addr(nodes.nodes[0].ports.admin);
    let listing = http.admin_json(admin, "/v1/actors").await?;
    let mut placed = Vec::new();
    for actor in listing["actors"].as_array().into_iter().flatten() {
        let (Some(key), Some(node)) = (actor["key"].as_str(), actor["node"].as_str()) else { continue };
        placed.push(Placed { key: key.into(), node: node.into() });
    }
    let mut owners = HashMap::new();
    for actor in placed.iter().filter(|a| !a.key.starts_with("supervisor/")) {
        let path = format!("/v1/cluster/ring/owner?key={}", encode_query(&actor.key));
        let answer = http.admin_json(admin, &path).await?;
        if let Some(owner) = answer["leader"].as_str() {
            owners.insert(actor.key.clone(), owner.to_string());
        }
    }
    Ok((placed, owners))
}

fn encode_query(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn stats(ops: &[Op], duration_ms: u64, final_reads: usize) -> Stats {
    let mut stats = Stats { duration_ms, ops: ops.len(), final_reads, ..Stats::default() };
    for op in ops {
        let kind = serde_json::to_value(op.kind)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        let outcome = serde_json::to_value(op.outcome)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        *stats.by_kind.entry(kind).or_default().entry(outcome).or_default() += 1;
        let acked = op.outcome == Outcome::Ok;
        stats.acknowledged_writes +=
            usize::from(acked && matches!(op.kind, OpKind::S3Put | OpKind::S3Delete));
        stats.acknowledged_messages += usize::from(acked && matches!(op.kind, OpKind::Send | OpKind::TxSend));
        stats.deliveries += usize::from(op.kind == OpKind::Deliver);
    }
    stats
}
