//! What replication costs and buys (issue #15), in one run against release `servd` builds:
//!
//! 1. One node (`--replication-factor 1`): S3 PUT of 4 KiB objects at 16 connections and of
//!    1 MiB objects at 8, STOMP produce of 1 KiB messages with a receipt per message and per
//!    100, and consume with client-individual acks.
//! 2. Three nodes (R=3): the same, driven through the node that leads the bucket's and the
//!    queues' partitions, and the 4 KiB PUTs once more through a node that does not lead (each
//!    request forwarded); a table with both and the ratio R=3/R=1, with the CPU time every
//!    `servd` of the configuration (and the bench itself) spent per PUT: on one machine that
//!    hosts all three nodes, R=3 is bound by the cores long before the disk or the network.
//! 3. Failover, `BENCH_KILLS` times: SIGKILL of the leader of a bucket's partition, then the
//!    time until a PUT through another node is served (a new attempt every [`RETRY_EVERY`], each
//!    given [`ATTEMPT_TIMEOUT`]); the node is restarted on its data dir and ports, and the next
//!    round waits until every partition is back on three replicas with its preferred leader.
//! 4. Catch-up: with one node stopped, `BENCH_CATCHUP_MIB` objects of 1 MiB are written through
//!    the bucket's leader; the node is restarted and timed until it holds them (see [`catch_up`]
//!    for exactly what is measured).
//!
//! Run with `scripts/bench-replication`. Figures are printed, never asserted. Environment:
//! `SERVD_BIN`, `BENCH_SECONDS` per S3 phase (default 4), `BENCH_MESSAGES` per STOMP phase
//! (default 5000), `BENCH_KILLS` (default 10), `BENCH_CATCHUP_MIB` (default 64).

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::s3::{Puts, create_bucket, distinct, pattern, put_phase, rates, send};
use common::stomp::{Broker, Produced, consume, kib_body, produce};
use common::{ACCESS, ADMIN_TOKEN, Node, POLL_EVERY, SECRET, env_or, metric, node_id, owner, partitions};
use serv_chaos::http::Http;
use tokio::task::JoinSet;

/// Replicas of every partition in the cluster phases (and its nodes).
const REPLICAS: usize = 3;
const SMALL_BYTES: usize = 4 * 1024;
const SMALL_CONNECTIONS: usize = 16;
const LARGE_BYTES: usize = 1024 * 1024;
const LARGE_CONNECTIONS: usize = 8;
/// How often a new PUT is tried while the cluster fails over.
const RETRY_EVERY: Duration = Duration::from_millis(50);
/// Longest one PUT attempt is given during a failover.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(1);
/// Longest a failover may take before the round is reported as not served.
const FAILOVER_LIMIT: Duration = Duration::from_secs(60);
/// Longest a returning node may take to hold what was written while it was down.
const CATCH_UP_LIMIT: Duration = Duration::from_secs(300);
/// Longest the nodes' block stores are given to agree before a node is stopped (two block
/// repair passes and some).
const BLOCKS_CONVERGE_LIMIT: Duration = Duration::from_secs(30);
/// How often the returning node's progress is sampled.
const CATCH_UP_SAMPLE_EVERY: Duration = Duration::from_millis(200);
/// Connections that write the catch-up objects.
const CATCH_UP_CONNECTIONS: usize = 4;
/// Tries of one catch-up PUT before it counts as failed.
const CATCH_UP_PUT_TRIES: usize = 3;
const BLOCK_BYTES_METRIC: &str = "serv_block_bytes_stored";

/// One configuration's figures.
#[derive(Default)]
struct Figures {
    /// (ops/s, MiB/s, failed requests) of the 4 KiB and the 1 MiB PUTs.
    small: (f64, f64, u64),
    large: (f64, f64, u64),
    /// CPU ms per PUT of the 4 KiB and the 1 MiB phases: every servd together, and the bench.
    small_cpu: (f64, f64),
    large_cpu: (f64, f64),
    each: Produced,
    batched: Produced,
    consumed: f64,
}

/// Where one configuration's load goes: S3 and STOMP ports, the bucket, and the queues of the
/// receipt-each and receipt-per-100 phases (the second is consumed).
struct Route {
    s3: u16,
    stomp: u16,
    bucket: String,
    queues: [String; 2],
}

/// (ops/s, MiB/s, failed requests) of PUTs of `size` bytes under `prefix` through `port`.
async fn put_rate(
    client: &Http,
    port: u16,
    prefix: String,
    size: usize,
    connections: usize,
    seconds: f64,
) -> (f64, f64, u64) {
    let Puts { ops, errors, .. } = put_phase(client, port, prefix, size, connections, seconds).await;
    let (rate, mib) = rates(ops, seconds, size);
    (rate, mib, errors)
}

/// CPU ms per operation between two [`common::cpu_sample`]s: (servd, bench).
fn cpu_per_op(before: (f64, f64), after: (f64, f64), ops: f64) -> (f64, f64) {
    let per_op = |used: f64| used * 1000.0 / ops.max(1.0);
    (per_op(after.0 - before.0), per_op(after.1 - before.1))
}

/// The figures of one configuration, `nodes` being all of its processes (for their CPU use).
async fn measure(client: &Http, route: &Route, nodes: &[&Node], seconds: f64, messages: usize) -> Figures {
    create_bucket(client, route.s3, &route.bucket).await;
    let prefix = |tag: &str| format!("{}/{tag}", route.bucket);
    let before = common::cpu_sample(nodes);
    let small = put_rate(client, route.s3, prefix("small"), SMALL_BYTES, SMALL_CONNECTIONS, seconds).await;
    let between = common::cpu_sample(nodes);
    let large = put_rate(client, route.s3, prefix("large"), LARGE_BYTES, LARGE_CONNECTIONS, seconds).await;
    let after = common::cpu_sample(nodes);
    let small_cpu = cpu_per_op(before, between, small.0 * seconds);
    let large_cpu = cpu_per_op(between, after, large.0 * seconds);
    let broker = Broker::servd("servd", route.stomp);
    let body = kib_body();
    let [each_queue, batch_queue] = route.queues.clone().map(|q| format!("/queue/{q}"));
    let each = produce(&broker, &each_queue, messages, &body, 1).await;
    let batched = produce(&broker, &batch_queue, messages, &body, 100).await;
    let consumed = consume(&broker, &batch_queue, messages).await;
    Figures { small, large, small_cpu, large_cpu, each, batched, consumed }
}

fn print_table(one: &Figures, three: &Figures, forwarded: (f64, f64, u64)) {
    println!("\n{:<44} {:>10} {:>10} {:>9}", "figure", "R=1", "R=3", "R=3/R=1");
    let row = |name: &str, r1: f64, r3: f64| {
        // CPU figures are fractions of a millisecond: they get three decimals.
        let digits = if name.contains("CPU") { 3 } else { 1 };
        println!("{name:<44} {r1:>10.digits$} {r3:>10.digits$} {:>8.2}x", r3 / r1.max(f64::MIN_POSITIVE));
    };
    row("S3 PUT 4 KiB @16, ops/s", one.small.0, three.small.0);
    row("S3 PUT 4 KiB @16, MiB/s", one.small.1, three.small.1);
    row("S3 PUT 4 KiB @16 via a non-leader, ops/s", one.small.0, forwarded.0);
    row("S3 PUT 4 KiB @16, servd CPU ms/op (all nodes)", one.small_cpu.0, three.small_cpu.0);
    row("S3 PUT 4 KiB @16, bench client CPU ms/op", one.small_cpu.1, three.small_cpu.1);
    row("S3 PUT 1 MiB @8, ops/s", one.large.0, three.large.0);
    row("S3 PUT 1 MiB @8, MiB/s", one.large.1, three.large.1);
    row("S3 PUT 1 MiB @8, servd CPU ms/op (all nodes)", one.large_cpu.0, three.large_cpu.0);
    for (name, r1, r3) in
        [("receipt each", one.each, three.each), ("receipt per 100", one.batched, three.batched)]
    {
        row(&format!("STOMP produce 1 KiB, {name}, msgs/s"), r1.rate, r3.rate);
        row(&format!("STOMP produce 1 KiB, {name}, p50 ms"), r1.p50_ms, r3.p50_ms);
        row(&format!("STOMP produce 1 KiB, {name}, p99 ms"), r1.p99_ms, r3.p99_ms);
    }
    row("STOMP consume, client-individual acks, msgs/s", one.consumed, three.consumed);
    let failed = [one.small.2, one.large.2, three.small.2, three.large.2, forwarded.2];
    if failed.iter().any(|&n| n > 0) {
        println!(
            "failed PUTs (not counted): R=1 {}+{}, R=3 {}+{}, via a non-leader {}",
            failed[0], failed[1], failed[2], failed[3], failed[4]
        );
    }
}

/// `--seeds` naming every node but `except`.
fn seeds_but(nodes: &[Node], except: usize) -> Vec<String> {
    let others: Vec<String> =
        (0..nodes.len()).filter(|&i| i != except).map(|i| format!("127.0.0.1:{}", nodes[i].mesh)).collect();
    vec!["--seeds".into(), others.join(",")]
}

/// The index of the node that leads `key`'s partition, and the partition, as the first node
/// that answers knows them (waited for while an election runs).
async fn leader_of(client: &Http, nodes: &[Node], ids: &[String], key: &str) -> (usize, u64) {
    let started = Instant::now();
    loop {
        for node in nodes {
            if let (partition, Some(leader)) = owner(client, node.admin, key).await
                && let Some(index) = ids.iter().position(|id| *id == leader)
            {
                return (index, partition);
            }
        }
        assert!(started.elapsed() < FAILOVER_LIMIT, "{key}'s partition has no leader");
        tokio::time::sleep(POLL_EVERY).await;
    }
}

/// Time from now until a PUT of `path` through `port` is served: a new attempt every
/// [`RETRY_EVERY`] (earlier ones left running), each given [`ATTEMPT_TIMEOUT`]; `None` when
/// none is served within [`FAILOVER_LIMIT`].
async fn time_to_write(client: &Http, port: u16, path: &str) -> Option<Duration> {
    let started = Instant::now();
    let mut attempts = JoinSet::new();
    let mut retry = tokio::time::interval(RETRY_EVERY);
    while started.elapsed() < FAILOVER_LIMIT {
        tokio::select! {
            _ = retry.tick() => {
                let (client, path) = (client.clone(), path.to_string());
                attempts.spawn(async move {
                    let put = send(&client, "PUT", port, &path, Bytes::from_static(b"after the kill"));
                    let served = matches!(tokio::time::timeout(ATTEMPT_TIMEOUT, put).await, Ok(Ok(200)));
                    served.then(Instant::now)
                });
            }
            Some(Ok(Some(served))) = attempts.join_next() => return Some(served - started),
        }
    }
    None
}

/// Kills the leader of a bucket's partition `kills` times; prints each time to a served PUT,
/// and their median and max.
async fn failover(client: &Http, nodes: &mut [Node], ids: &[String], kills: usize) {
    let bucket = "failover";
    create_bucket(client, nodes[0].s3, bucket).await;
    println!(
        "\nfailover: SIGKILL of the leader of bucket {bucket}'s partition, then PUTs through another node"
    );
    let mut times = Vec::new();
    for round in 1..=kills {
        let (victim, _) = leader_of(client, nodes, ids, &format!("bucket/{bucket}")).await;
        let survivor = (victim + 1) % nodes.len();
        nodes[victim].kill();
        let took = time_to_write(client, nodes[survivor].s3, &format!("/{bucket}/round-{round}")).await;
        let restarted = Instant::now();
        let seeds = seeds_but(nodes, victim);
        nodes[victim].spawn(&seeds);
        nodes[victim].wait_ready(client).await;
        common::wait_replicated(client, nodes, REPLICAS).await;
        let back = restarted.elapsed().as_secs_f64();
        match took {
            Some(took) => {
                println!(
                    "  round {round:>2}: killed {}, served through {} after {:.3} s (whole again {back:.1} s after restart)",
                    nodes[victim].name,
                    nodes[survivor].name,
                    took.as_secs_f64()
                );
                times.push(took);
            }
            None => println!(
                "  round {round:>2}: killed {}, no PUT served within {FAILOVER_LIMIT:?}",
                nodes[victim].name
            ),
        }
    }
    times.sort();
    if let (Some(median), Some(max)) = (times.get(times.len() / 2), times.last()) {
        println!(
            "  time from SIGKILL to writes served again: median {:.3} s, max {:.3} s ({} of {kills} rounds served)",
            median.as_secs_f64(),
            max.as_secs_f64(),
            times.len()
        );
    }
}

/// Each node's block bytes, once they are the same on every node (block repair has refilled
/// what a node missed while it was down, the collector dropped what no object names) or
/// [`BLOCKS_CONVERGE_LIMIT`] has passed: the baseline a returning node is measured against.
async fn blocks_converged(client: &Http, nodes: &[Node]) -> Vec<u64> {
    let started = Instant::now();
    loop {
        let mut held = Vec::new();
        for node in nodes {
            held.push(metric(client, node.admin, BLOCK_BYTES_METRIC).await.unwrap_or_default() as u64);
        }
        if held.iter().all(|&bytes| bytes == held[0]) || started.elapsed() > BLOCKS_CONVERGE_LIMIT {
            return held;
        }
        tokio::time::sleep(CATCH_UP_SAMPLE_EVERY).await;
    }
}

/// The least block bytes any of `among` holds (a node that does not answer counts as holding
/// everything).
async fn least_block_bytes(client: &Http, nodes: &[Node], among: &[usize]) -> f64 {
    let mut least = f64::MAX;
    for &i in among {
        least = least.min(metric(client, nodes[i].admin, BLOCK_BYTES_METRIC).await.unwrap_or(f64::MAX));
    }
    least
}

/// Writes `count` distinct objects of `size` bytes to `/{bucket}/{n}` through `port` with
/// [`CATCH_UP_CONNECTIONS`] connections; answers how many failed (each tried
/// [`CATCH_UP_PUT_TRIES`] times).
async fn put_count(client: &Http, port: u16, bucket: &str, count: u64, size: usize) -> u64 {
    let (next, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let body = pattern(size);
    let mut writers = JoinSet::new();
    for worker in 0..CATCH_UP_CONNECTIONS {
        let (client, next, failed, body, bucket) =
            (client.clone(), next.clone(), failed.clone(), body.clone(), bucket.to_string());
        writers.spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= count {
                    break;
                }
                let object = distinct(&body, worker, n);
                let mut served = false;
                for _ in 0..CATCH_UP_PUT_TRIES {
                    if let Ok(200) =
                        send(&client, "PUT", port, &format!("/{bucket}/{n}"), object.clone()).await
                    {
                        served = true;
                        break;
                    }
                }
                if !served {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }
    writers.join_all().await;
    failed.load(Ordering::Relaxed)
}

/// With one node stopped, writes `mib` objects of 1 MiB, restarts the node and times, from its
/// start, until it holds them.
///
/// A returning replica gets the objects' manifests through its partition's Raft log (the
/// leader sends the entries it lacks) but never their blocks: those come only from block
/// repair (cluster/src/partition/repair.rs), which every `REPAIR_EVERY` (10 s, the first pass
/// 10 s after start) fetches the blocks its partitions' references name and it lacks. So two
/// moments are measured, from a start where every node holds the same block bytes (waited for,
/// see [`blocks_converged`]): the log caught up (its applied index of the bucket's partition reaches
/// the leader's last log index as it was before the restart), and the blocks caught up (its
/// `serv_block_bytes_stored` reaches the smallest of the survivors', each of which holds every
/// block, as R=3 on three nodes puts every block on every replica that is up). Printed are
/// both, and two rates: MiB over the time from start to blocks caught up (what a returning node
/// takes end to end, repair period included), and MiB over the time from the last sample before
/// its block bytes first grew to blocks caught up (the transfer itself).
async fn catch_up(client: &Http, nodes: &mut [Node], ids: &[String], mib: u64) {
    let bucket = "catch-up";
    create_bucket(client, nodes[0].s3, bucket).await;
    let (leader, partition) = leader_of(client, nodes, ids, &format!("bucket/{bucket}")).await;
    // A follower of the bucket's partition, so that the writes need no election.
    let stopped = (leader + 1) % nodes.len();
    let survivors: Vec<usize> = (0..nodes.len()).filter(|&i| i != stopped).collect();
    let held = blocks_converged(client, nodes).await;
    if held.iter().any(|&bytes| bytes != held[0]) {
        println!("\n(block bytes per node still differ after {BLOCKS_CONVERGE_LIMIT:?}: {held:?})");
    }
    nodes[stopped].kill();
    let failed = put_count(client, nodes[leader].s3, bucket, mib, LARGE_BYTES).await;
    let last_index = partitions(client, nodes[leader].admin)
        .await
        .into_iter()
        .find(|p| p.partition == partition)
        .map_or(0, |p| p.last_log_index);
    let written = least_block_bytes(client, nodes, &survivors).await;
    let grew = (written - held[stopped] as f64) / LARGE_BYTES as f64;
    println!(
        "\ncatch-up: {} stopped, {mib} MiB written in 1 MiB objects through {} ({failed} failed; the survivors' \
         blocks grew by {grew:.1} MiB); restarted",
        nodes[stopped].name, nodes[leader].name
    );
    let seeds = seeds_but(nodes, stopped);
    let started = Instant::now();
    nodes[stopped].spawn(&seeds);
    let admin = nodes[stopped].admin;
    let (mut log_at, mut growing_from, mut previous) = (None, None, None::<(f64, Duration)>);
    let (mut bytes, mut target) = (0.0, f64::MAX);
    while started.elapsed() < CATCH_UP_LIMIT {
        tokio::time::sleep(CATCH_UP_SAMPLE_EVERY).await;
        let now = started.elapsed();
        let applied = partitions(client, admin).await.into_iter().find(|p| p.partition == partition);
        if log_at.is_none() && applied.is_some_and(|p| p.applied_index >= last_index) {
            log_at = Some(now);
        }
        // The survivors are read each time: their collector may still drop a block no object
        // names (a PUT that failed half-way).
        target = least_block_bytes(client, nodes, &survivors).await;
        let Some(held) = metric(client, admin, BLOCK_BYTES_METRIC).await else { continue };
        bytes = held;
        if let Some((before, at)) = previous
            && growing_from.is_none()
            && held > before
        {
            growing_from = Some(at);
        }
        previous = Some((held, now));
        if log_at.is_some() && held >= target {
            break;
        }
    }
    let done = started.elapsed();
    let Some(log_at) = log_at else {
        println!(
            "  its log of partition {partition} did not reach index {last_index} within {CATCH_UP_LIMIT:?}"
        );
        return;
    };
    println!(
        "  log caught up (partition {partition}, index {last_index}) {:.2} s after start",
        log_at.as_secs_f64()
    );
    if bytes < target {
        println!("  blocks not caught up within {CATCH_UP_LIMIT:?}: {bytes:.0} of {target:.0} bytes");
        return;
    }
    let mib = mib as f64;
    let Some(growing_from) = growing_from else {
        println!("  blocks caught up {:.2} s after start, without one fetched", done.as_secs_f64());
        return;
    };
    println!(
        "  blocks caught up {:.2} s after start (first fetched after {:.2} s; repair runs every 10 s)",
        done.as_secs_f64(),
        growing_from.as_secs_f64()
    );
    println!(
        "  catch-up throughput: {:.1} MiB/s end to end, {:.1} MiB/s while blocks were fetched",
        mib / done.as_secs_f64(),
        mib / (done - growing_from).as_secs_f64().max(f64::MIN_POSITIVE)
    );
}

#[tokio::main]
async fn main() {
    let seconds: f64 = env_or("BENCH_SECONDS", 4.0);
    let messages: usize = env_or("BENCH_MESSAGES", 5000);
    let kills: usize = env_or("BENCH_KILLS", 10);
    let catch_up_mib: u64 = env_or("BENCH_CATCHUP_MIB", 64);
    let client = Http::new(ACCESS, SECRET, ADMIN_TOKEN);
    println!(
        "{seconds} s per S3 phase, {messages} STOMP messages of 1 KiB per phase; one node (R=1), then three (R=3)"
    );

    let mut single = Node::start("single", &["--replication-factor".into(), "1".into()]);
    single.wait_ready(&client).await;
    let queues = ["bench-each".to_string(), "bench-batch".to_string()];
    let route = Route { s3: single.s3, stomp: single.stomp, bucket: "bench".into(), queues };
    let one = measure(&client, &route, &[&single], seconds, messages).await;
    drop(single);

    let mut nodes = common::start_cluster(&client, REPLICAS, REPLICAS, &[]).await;
    let mut ids = Vec::new();
    for node in &nodes {
        ids.push(node_id(&client, node.admin).await);
    }
    let led = |kind: &'static str, prefix: &'static str| {
        common::name_led_by(&client, nodes[0].admin, kind, prefix, &ids[0])
    };
    let bucket = led("bucket", "bench").await;
    let queues = [led("topic/queue", "bench-each").await, led("topic/queue", "bench-batch").await];
    println!("three nodes settled; bucket {bucket} and queues {queues:?} are led by n1");
    let route = Route { s3: nodes[0].s3, stomp: nodes[0].stomp, bucket: bucket.clone(), queues };
    let three = measure(&client, &route, &nodes.iter().collect::<Vec<_>>(), seconds, messages).await;
    let prefix = format!("{bucket}/forwarded");
    let forwarded = put_rate(&client, nodes[1].s3, prefix, SMALL_BYTES, SMALL_CONNECTIONS, seconds).await;
    print_table(&one, &three, forwarded);

    failover(&client, &mut nodes, &ids, kills).await;
    catch_up(&client, &mut nodes, &ids, catch_up_mib).await;
}
