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
//! `BENCH_CLUSTER=1` measures forwarding instead: two nodes, one bucket owned by the first,
//! driven once through its owner and once through the other node (every request forwarded over
//! the mesh, bodies on block sessions), with the ratio.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use serv_chaos::http::Http;

const ACCESS: &str = "BENCHACCESSKEY";
const SECRET: &str = "bench-secret-key-0123456789";
const SIZES: [(usize, &str); 2] = [(4 * 1024, "4 KiB"), (1024 * 1024, "1 MiB")];
const CONCURRENCY: [usize; 3] = [1, 16, 64];

struct Target {
    name: &'static str,
    port: u16,
    /// The bucket the phases use.
    bucket: String,
    /// The admin port (0 for a peer without one).
    admin: u16,
    process: Child,
    _dir: tempfile::TempDir,
}

impl Drop for Target {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn start_servd() -> Target {
    start_node("servd", &[])
}

/// A servd node named `name`, started with `extra` flags (its mesh port is in `--mesh-addr`).
fn start_node(name: &'static str, extra: &[String]) -> Target {
    let bin = std::env::var_os("SERVD_BIN").map(PathBuf::from).unwrap_or_else(|| {
        let target =
            std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| PathBuf::from("target"), PathBuf::from);
        target.join("release/servd")
    });
    let dir = tempfile::tempdir().unwrap();
    let (port, admin) = (free_port(), free_port());
    let process = Command::new(&bin)
        .args(["--data-dir", dir.path().to_str().unwrap()])
        .args(["--s3-addr", &format!("127.0.0.1:{port}"), "--admin-addr", &format!("127.0.0.1:{admin}")])
        .args(["--log-level", "warn"])
        .args(["--stomp-addr", &format!("127.0.0.1:{}", free_port())])
        .args(["--stomp-ws-addr", &format!("127.0.0.1:{}", free_port())])
        .args(["--http-addr", &format!("127.0.0.1:{}", free_port())])
        .args(extra)
        .env("SERV_ACCESS_KEY", ACCESS)
        .env("SERV_SECRET_KEY", SECRET)
        .env("SERV_ADMIN_TOKEN", "bench")
        .env("SERV_CLUSTER_SECRET", "bench-cluster-secret-0123456789")
        .stdout(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e} (build it: cargo build --release)", bin.display()));
    Target { name, port, bucket: "bench".into(), process, _dir: dir, admin }
}

fn start_s3s_fs() -> Option<Target> {
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
    Some(Target { name: "s3s-fs", port, bucket: "bench".into(), admin: 0, process, _dir: dir })
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

/// Runs `concurrency` workers for `seconds`; returns (ops, errors).
async fn phase(
    client: &Http,
    port: u16,
    concurrency: usize,
    seconds: f64,
    make: impl Fn(usize, u64) -> (&'static str, String, Bytes) + Send + Sync + 'static,
) -> (u64, u64) {
    let (ops, errors, stop) =
        (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)), Arc::new(AtomicBool::new(false)));
    let make = Arc::new(make);
    let workers: Vec<_> = (0..concurrency)
        .map(|worker| {
            let (client, ops, errors, stop, make) =
                (client.clone(), ops.clone(), errors.clone(), stop.clone(), make.clone());
            tokio::spawn(async move {
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    let (method, path, body) = make(worker, n);
                    match send(&client, method, port, &path, body).await {
                        Ok(200) => ops.fetch_add(1, Ordering::Relaxed),
                        _ => errors.fetch_add(1, Ordering::Relaxed),
                    };
                    n += 1;
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        let _ = worker.await;
    }
    (ops.load(Ordering::Relaxed), errors.load(Ordering::Relaxed))
}

/// GET on a node's admin API (bearer `bench`); the body as text.
async fn admin_get(client: &Http, admin: u16, path: &str) -> String {
    client
        .admin("GET", SocketAddr::from(([127, 0, 0, 1], admin)), path)
        .await
        .map(|r| String::from_utf8_lossy(&r.body).into_owned())
        .unwrap_or_default()
}

/// An S3 request's status.
async fn send(client: &Http, method: &str, port: u16, path: &str, body: Bytes) -> Result<u16, String> {
    client
        .s3(method, SocketAddr::from(([127, 0, 0, 1], port)), path, "", body)
        .await
        .map(|r| r.status)
        .map_err(|f| f.error)
}

/// The first quoted value after `"field":` in a JSON text.
fn json_str<'a>(text: &'a str, field: &str) -> Option<&'a str> {
    let start = text.find(&format!("\"{field}\":"))? + field.len() + 3;
    let rest = text[start..].trim_start_matches(['[', ' ']);
    rest.strip_prefix('"')?.split('"').next()
}

/// Two nodes: the bucket is owned by the first; targets are the owner and the other node.
async fn start_cluster(client: &Http) -> Vec<Target> {
    let (mesh1, mesh2) = (free_port(), free_port());
    let owner = start_node("owner", &["--mesh-addr".into(), format!("127.0.0.1:{mesh1}")]);
    let seeds =
        ["--seeds".into(), format!("127.0.0.1:{mesh1}"), "--mesh-addr".into(), format!("127.0.0.1:{mesh2}")];
    let mut other = start_node("forwarded", &seeds);
    let settled = |text: String| text.contains("\"settled\":true") && text.matches("\"id\"").count() == 2;
    let mut tries = 0;
    while !(settled(admin_get(client, owner.admin, "/v1/cluster/ring").await)
        && settled(admin_get(client, other.admin, "/v1/cluster/ring").await))
    {
        tries += 1;
        assert!(tries < 400, "the two nodes did not form a settled cluster within 20 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let owner_id =
        json_str(&admin_get(client, owner.admin, "/v1/node").await, "id").unwrap_or_default().to_string();
    let mut bucket = String::new();
    for n in 0..1000 {
        let candidate = format!("bench-{n}");
        let text =
            admin_get(client, owner.admin, &format!("/v1/cluster/ring/owner?key=bucket/{candidate}")).await;
        if json_str(&text, "preference_list") == Some(owner_id.as_str()) {
            bucket = candidate;
            break;
        }
    }
    assert!(!bucket.is_empty(), "some bucket is owned by the first node");
    let mut owner = owner;
    owner.bucket = bucket.clone();
    other.bucket = bucket;
    vec![owner, other]
}

#[tokio::main]
async fn main() {
    let seconds: f64 = std::env::var("BENCH_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(4.0);
    let client = Http::new(ACCESS, SECRET, "bench");
    let cluster = std::env::var_os("BENCH_CLUSTER").is_some_and(|v| v == "1");
    let mut targets = Vec::new();
    if cluster {
        targets = start_cluster(&client).await;
        println!("two nodes; bucket {} owned by the first, driven through each", targets[0].bucket);
    } else {
        targets.push(start_servd());
        match start_s3s_fs() {
            Some(peer) => targets.push(peer),
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
        let status = send(&client, "PUT", target.port, &format!("/{bucket}"), Bytes::new()).await;
        assert!(matches!(status, Ok(200 | 409)), "creating the bench bucket on {}: {status:?}", target.name);
        let mut row = Vec::new();
        for (size, size_name) in SIZES {
            let body = Bytes::from((0..size).map(|i| (i * 31 % 251) as u8).collect::<Vec<_>>());
            for concurrency in CONCURRENCY {
                let tag = format!("{size}-{concurrency}");
                let put_body = body.clone();
                // Each target writes its own keys (in cluster mode both share one bucket).
                let put_tag = format!("{bucket}/{}-{tag}", target.name);
                let get_tag = put_tag.clone();
                // Objects each worker attempted; a worker reads back only the ones below its count.
                let attempted: Arc<Vec<AtomicU64>> =
                    Arc::new((0..concurrency).map(|_| AtomicU64::new(0)).collect());
                let counts = attempted.clone();
                let (puts, put_errors) = phase(&client, target.port, concurrency, seconds, move |w, n| {
                    counts[w].store(n, Ordering::Relaxed); // object n-1 is done when n starts
                    // Distinct content per object, so that block dedup does not flatter servd.
                    let mut object = put_body.to_vec();
                    object[..16].copy_from_slice(&((w as u128) << 64 | u128::from(n)).to_le_bytes());
                    ("PUT", format!("/{put_tag}/{w}/{n}"), Bytes::from(object))
                })
                .await;
                let (gets, get_errors) = phase(&client, target.port, concurrency, seconds, move |w, n| {
                    let written = attempted[w].load(Ordering::Relaxed).max(1);
                    ("GET", format!("/{get_tag}/{w}/{}", n % written), Bytes::new())
                })
                .await;
                for (op, count, errors) in [("PUT", puts, put_errors), ("GET", gets, get_errors)] {
                    let rate = count as f64 / seconds;
                    let mib = rate * size as f64 / (1024.0 * 1024.0);
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
}
