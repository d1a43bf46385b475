//! S3 throughput: PUT and GET of 4 KiB and 1 MiB objects at concurrency 1, 16 and 64 against a
//! fresh `servd` (release build), and against `s3s-fs` when it is installed, with the ratio.
//!
//! Run with `scripts/bench-s3` (builds servd, installs s3s-fs if it can, then runs this).
//! Figures are printed, never asserted. The chaos harness's Rust client (hyper, SigV4 with UNSIGNED-PAYLOAD) is
//! used so that the server, not a Python client, is measured.
//!
//! Environment: `SERVD_BIN` (default `$CARGO_TARGET_DIR/release/servd`), `S3S_FS_BIN` (default:
//! `s3s-fs` on PATH or in ~/.cargo/bin), `BENCH_SECONDS` per phase (default 4).
//!
//! `BENCH_CLUSTER=1` measures forwarding instead: two nodes, one bucket whose partition the
//! first leads, driven once through its leader and once through the other node (every request
//! forwarded over the mesh, bodies on block sessions), with the ratio.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use common::s3::{Puts, create_bucket, phase, put_phase, rates, send};
use common::{ACCESS, ADMIN_TOKEN, Node, SECRET, env_or, free_port};
use serv_chaos::http::Http;

const SIZES: [(usize, &str); 2] = [(4 * 1024, "4 KiB"), (1024 * 1024, "1 MiB")];
const CONCURRENCY: [usize; 3] = [1, 16, 64];

/// Where a series of phases is sent.
struct Target {
    name: &'static str,
    port: u16,
    /// The bucket the phases use.
    bucket: String,
}

/// s3s-fs and its data directory, both gone when the bench ends.
struct Peer(Child, #[allow(dead_code)] tempfile::TempDir);

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_s3s_fs() -> Option<(Target, Peer)> {
    let bin = std::env::var_os("S3S_FS_BIN").map(PathBuf::from).or_else(|| {
        let home = std::env::var_os("HOME").map(PathBuf::from)?.join(".cargo/bin/s3s-fs");
        home.exists().then_some(home)
    })?;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let process = Command::new(&bin)
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args(["--access-key", ACCESS, "--secret-key", SECRET])
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    Some((Target { name: "s3s-fs", port, bucket: "bench".into() }, Peer(process, dir)))
}

async fn wait_until_up(client: &Http, target: &Target) {
    for _ in 0..200 {
        if let Ok(200) = send(client, "GET", target.port, "/", Bytes::new()).await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{} did not come up on port {}", target.name, target.port);
}

/// Two nodes, once every partition is on both: targets are the leader of the bench bucket's
/// partition and the other node.
async fn start_cluster(client: &Http) -> (Vec<Target>, Vec<Node>) {
    let nodes = common::start_cluster(client, 2, 2, &[]).await;
    let leader = common::node_id(client, nodes[0].admin).await;
    let bucket = common::name_led_by(client, nodes[0].admin, "bucket", "bench", &leader).await;
    let targets = vec![
        Target { name: "owner", port: nodes[0].s3, bucket: bucket.clone() },
        Target { name: "forwarded", port: nodes[1].s3, bucket },
    ];
    (targets, nodes)
}

#[tokio::main]
async fn main() {
    let seconds: f64 = env_or("BENCH_SECONDS", 4.0);
    let client = Http::new(ACCESS, SECRET, ADMIN_TOKEN);
    let cluster = std::env::var_os("BENCH_CLUSTER").is_some_and(|v| v == "1");
    let (mut targets, mut nodes, mut peer) = (Vec::new(), Vec::new(), None);
    if cluster {
        (targets, nodes) = start_cluster(&client).await;
        println!("two nodes; bucket {} led by the first, driven through each", targets[0].bucket);
    } else {
        let mut node = Node::start("servd", &[]);
        node.wait_ready(&client).await;
        targets.push(Target { name: "servd", port: node.s3, bucket: "bench".into() });
        nodes.push(node);
        match start_s3s_fs() {
            Some((target, process)) => {
                targets.push(target);
                peer = Some(process);
            }
            None => println!("s3s-fs not found (scripts/bench-s3 installs it): measuring servd alone"),
        }
    }
    println!("{seconds} s per phase; ops/s and MiB/s of successful requests (errors in brackets)");
    println!("{:<8} {:>5} {:>4} {:>5} {:>10} {:>9}", "target", "size", "conc", "op", "ops/s", "MiB/s");
    // (size, concurrency, op) -> ops/s, per target
    let mut results: Vec<Vec<f64>> = Vec::new();
    for target in &targets {
        wait_until_up(&client, target).await;
        let bucket = target.bucket.clone();
        create_bucket(&client, target.port, &bucket).await;
        let mut row = Vec::new();
        for (size, size_name) in SIZES {
            for concurrency in CONCURRENCY {
                // Each target writes its own keys (in cluster mode both share one bucket).
                let put_tag = format!("{bucket}/{}-{size}-{concurrency}", target.name);
                let get_tag = put_tag.clone();
                let Puts { ops: puts, errors: put_errors, attempted } =
                    put_phase(&client, target.port, put_tag, size, concurrency, seconds).await;
                // A worker reads back only the objects below its count.
                let (gets, get_errors) = phase(&client, target.port, concurrency, seconds, move |w, n| {
                    let written = attempted[w].load(Ordering::Relaxed).max(1);
                    ("GET", format!("/{get_tag}/{w}/{}", n % written), Bytes::new())
                })
                .await;
                for (op, count, errors) in [("PUT", puts, put_errors), ("GET", gets, get_errors)] {
                    let (rate, mib) = rates(count, seconds, size);
                    let errors = if errors > 0 { format!(" [{errors}]") } else { String::new() };
                    println!(
                        "{:<8} {:>5} {:>4} {:>5} {:>10.0} {:>9.1}{errors}",
                        target.name, size_name, concurrency, op, rate, mib
                    );
                    row.push(rate);
                }
            }
        }
        results.push(row);
    }
    if results.len() == 2 {
        println!("\n{} / {} (ops/s ratio)", targets[0].name, targets[1].name);
        let mut i = 0;
        for (_, size_name) in SIZES {
            for concurrency in CONCURRENCY {
                for op in ["PUT", "GET"] {
                    let ratio = results[0][i] / results[1][i].max(f64::MIN_POSITIVE);
                    println!("{size_name:>5} {concurrency:>4} {op:>5} {ratio:>8.2}x");
                    i += 1;
                }
            }
        }
    }
    drop((peer, nodes));
}
