//! What an actor costs in memory (issue #19), against one release `servd` (R=1):
//!
//! 1. `BENCH_ENTITIES` buckets are created through S3 (each create activates the bucket's
//!    actor); the node's resident memory is sampled before and after, with the count of live
//!    bucket actors, and their difference divided: bytes per live actor, everything a new
//!    bucket brings included (its stored rows in the database's write buffer too).
//! 2. The node is left idle until its actors passivate (`--passivate-after-ms`), and its
//!    resident memory is sampled again: what passivation gave back.
//! 3. Every bucket is touched again (a HEAD activates its actor from storage, writing
//!    nothing): bytes per actor activated without any write, then passivation once more.
//!
//! Resident memory is the kernel's figure for the process (`VmRSS`), so what the allocator
//! keeps after a free counts: that is the point of step 2. Run with `scripts/bench-actors`.
//! Figures are printed, never asserted. Environment: `SERVD_BIN`, `BENCH_ENTITIES` (default
//! 100000), `BENCH_CONNECTIONS` (default 32), `BENCH_PASSIVATE_SECONDS` (default 120: longer
//! than a phase takes, so that every actor of a phase is live at its end).

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::s3::send;
use common::{ACCESS, ADMIN_TOKEN, Node, SECRET, env_or, metric};
use serv_chaos::http::Http;

/// Longest the bench waits for the actors to passivate, beyond `--passivate-after-ms`.
const PASSIVATION_LIMIT: Duration = Duration::from_secs(60);
/// How often the live actor count is sampled while waiting for passivation.
const SAMPLE_EVERY: Duration = Duration::from_millis(500);
/// Tries of one request before it counts as failed.
const TRIES: usize = 3;
const LIVE_BUCKETS: &str = "serv_actors{kind=\"bucket\"}";
const MIB: f64 = 1024.0 * 1024.0;

/// Resident memory of the node's process, from `/proc/PID/status`, in bytes.
fn resident_bytes(node: &Node) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", node.pid())).unwrap_or_default();
    let kib = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .unwrap_or(0.0);
    kib * 1024.0
}

async fn live_buckets(client: &Http, node: &Node) -> f64 {
    metric(client, node.admin, LIVE_BUCKETS).await.unwrap_or(0.0)
}

/// Sends `method /bucket-N` for every N below `count` over `connections` workers; answers
/// the requests that failed every try.
async fn each_bucket(client: &Http, node: &Node, method: &'static str, count: u64, connections: u64) -> u64 {
    let next = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..connections)
        .map(|_| {
            let (client, next, failed, port) = (client.clone(), next.clone(), failed.clone(), node.s3);
            tokio::spawn(async move {
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= count {
                        break;
                    }
                    let path = format!("/bench-{n}");
                    let mut served = false;
                    for _ in 0..TRIES {
                        if let Ok(200 | 409) = send(&client, method, port, &path, Bytes::new()).await {
                            served = true;
                            break;
                        }
                    }
                    if !served {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await.unwrap();
    }
    failed.load(Ordering::Relaxed)
}

/// Waits until no bucket actor is live (or [`PASSIVATION_LIMIT`]); answers how long it took
/// and how many were still live.
async fn passivated(client: &Http, node: &Node, after: Duration) -> (Duration, f64) {
    let started = Instant::now();
    loop {
        let live = live_buckets(client, node).await;
        if live == 0.0 || started.elapsed() > after + PASSIVATION_LIMIT {
            // A moment for the allocator to return what the last actors freed.
            tokio::time::sleep(SAMPLE_EVERY * 4).await;
            return (started.elapsed(), live);
        }
        tokio::time::sleep(SAMPLE_EVERY).await;
    }
}

/// One activation phase: `method` on every bucket, then passivation; prints its figures.
async fn phase(client: &Http, node: &Node, name: &str, method: &'static str, load: Load) {
    let Load { count, connections, passivate_after } = load;
    let (rss_before, live_before) = (resident_bytes(node), live_buckets(client, node).await);
    let started = Instant::now();
    let failed = each_bucket(client, node, method, count, connections).await;
    let took = started.elapsed().as_secs_f64();
    let (rss_active, live) = (resident_bytes(node), live_buckets(client, node).await);
    let activated = (live - live_before).max(1.0);
    println!(
        "{name}: {count} buckets in {took:.1} s ({:.0}/s, {failed} failed); live bucket actors {live_before:.0} -> {live:.0}",
        count as f64 / took
    );
    println!(
        "  resident {:.1} -> {:.1} MiB: {:.0} bytes per live actor",
        rss_before / MIB,
        rss_active / MIB,
        (rss_active - rss_before) / activated
    );
    let (waited, left) = passivated(client, node, passivate_after).await;
    let rss_after = resident_bytes(node);
    println!(
        "  after passivation ({:.1} s, {left:.0} still live): resident {:.1} MiB, {:.1} MiB above the start of the phase ({:.0}% of what activation took kept)",
        waited.as_secs_f64(),
        rss_after / MIB,
        (rss_after - rss_before) / MIB,
        100.0 * (rss_after - rss_before) / (rss_active - rss_before).max(1.0)
    );
}

/// What one phase does: `count` buckets over `connections` workers, on a node whose actors
/// passivate after `passivate_after`.
#[derive(Clone, Copy)]
struct Load {
    count: u64,
    connections: u64,
    passivate_after: Duration,
}

#[tokio::main]
async fn main() {
    let count: u64 = env_or("BENCH_ENTITIES", 100_000);
    let connections: u64 = env_or("BENCH_CONNECTIONS", 32);
    let passivate_after = Duration::from_secs(env_or("BENCH_PASSIVATE_SECONDS", 120));
    let load = Load { count, connections, passivate_after };
    let client = Http::new(ACCESS, SECRET, ADMIN_TOKEN);
    let passivate = passivate_after.as_millis().to_string();
    let mut node = Node::start(
        "actors",
        &["--replication-factor".into(), "1".into(), "--passivate-after-ms".into(), passivate],
    );
    node.wait_ready(&client).await;
    println!(
        "one node (R=1), {count} buckets over {connections} connections, passivation after {passivate_after:?}; resident at start {:.1} MiB",
        resident_bytes(&node) / MIB
    );
    phase(&client, &node, "create", "PUT", load).await;
    phase(&client, &node, "activate (HEAD, nothing written)", "HEAD", load).await;
}
