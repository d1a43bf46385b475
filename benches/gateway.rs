//! HTTP gateway throughput and latency: GETs of a 1 KiB answer at concurrency 1, 16 and 64 on
//! keep-alive connections, sent straight to an upstream, through a fresh release `servd`'s
//! gateway (one route, defaults: retries, circuit breaker), and through nginx as a reverse proxy
//! when it is installed, with servd's ratio to it; then through a servd route whose WASM
//! middleware ([`PASS`]: both hooks, each answering the head it got) sees every request and
//! answer, to show what a middleware costs.
//!
//! Every target is measured twice: with this bench's own client (hyper, in this process), and
//! with `wrk` when it is installed, at 16 and 64 connections. Our client shares the cores with
//! the proxies and can be what caps them all; `wrk` is the independent measure, and the ratio
//! servd / nginx is printed for both.
//!
//! Run with `scripts/bench-gateway` (it builds servd and installs nginx and wrk when it can).
//! The upstream is a hyper server in this process; client, upstream and proxy share the
//! machine, so the figures compare proxies under the same conditions rather than measure any
//! alone. Figures are printed, never asserted.
//!
//! Environment: `SERVD_BIN`, `NGINX_BIN` (default `nginx` on the PATH), `WRK_BIN` (default `wrk`),
//! `BENCH_SECONDS` per phase (default 4).

use std::convert::Infallible;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::{Request, Response};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};

const BODY_BYTES: usize = 1024;
/// A middleware that lets every request and answer through unchanged.
const PASS: &str = r#"(module
  (memory (export "memory") 1)
  (func (export "serv_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "serv_request") (export "serv_response") (param $ptr i32) (param $len i32) (result i64)
    (i64.or (i64.shl (i64.extend_i32_u (local.get $ptr)) (i64.const 32)) (i64.extend_i32_u (local.get $len)))))"#;
const CONCURRENCY: [usize; 3] = [1, 16, 64];
/// Connections of the `wrk` phases (its threads: [`WRK_THREADS`]).
const WRK_CONCURRENCY: [usize; 2] = [16, 64];
const WRK_THREADS: usize = 2;

/// A proxy process and its directory, both gone when the bench ends.
struct Proxy {
    name: &'static str,
    /// Base URL requests go to.
    url: String,
    _process: Option<(Child, tempfile::TempDir)>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some((child, _)) = &mut self._process {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The upstream: answers every request with the same 1 KiB body.
async fn start_upstream() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let body = Bytes::from(vec![b'x'; BODY_BYTES]);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let _ = stream.set_nodelay(true);
            let body = body.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |_request: Request<hyper::body::Incoming>| {
                    let body = body.clone();
                    async move { Ok::<_, Infallible>(Response::new(Full::new(body))) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

async fn start_servd(upstream: SocketAddr) -> Proxy {
    let bin = std::env::var_os("SERVD_BIN").map(PathBuf::from).unwrap_or_else(|| {
        let target =
            std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| PathBuf::from("target"), PathBuf::from);
        target.join("release/servd")
    });
    let dir = tempfile::tempdir().unwrap();
    let (http, admin) = (free_port(), free_port());
    let child = Command::new(&bin)
        .args(["--data-dir", dir.path().to_str().unwrap(), "--log-level", "warn"])
        .args(["--http-addr", &format!("127.0.0.1:{http}"), "--admin-addr", &format!("127.0.0.1:{admin}")])
        .args(["--s3-addr", &format!("127.0.0.1:{}", free_port())])
        .args(["--stomp-addr", &format!("127.0.0.1:{}", free_port())])
        .args(["--stomp-ws-addr", &format!("127.0.0.1:{}", free_port())])
        .args(["--mesh-addr", &format!("127.0.0.1:{}", free_port())])
        .env("SERV_ADMIN_TOKEN", "bench")
        .env("SERV_ACCESS_KEY", "BENCHACCESSKEY")
        .env("SERV_SECRET_KEY", "bench-secret-key-0123456789")
        .env("SERV_CLUSTER_SECRET", "bench-cluster-secret-0123456789")
        .stdout(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e} (build it: cargo build --release)", bin.display()));
    let proxy =
        Proxy { name: "servd", url: format!("http://127.0.0.1:{http}"), _process: Some((child, dir)) };
    let client: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let put = |path: &str, body: String| {
        Request::put(format!("http://127.0.0.1:{admin}{path}"))
            .header("authorization", "Bearer bench")
            .body(Full::new(Bytes::from(body)))
            .unwrap()
    };
    let config = format!(r#"{{"path_prefix": "/", "upstreams": ["http://{upstream}"]}}"#);
    let mut up = false;
    for _ in 0..200 {
        if let Ok(response) = client.request(put("/v1/routes/bench", config.clone())).await {
            assert!(response.status().is_success(), "servd refused the route: {}", response.status());
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(up, "servd did not come up");
    // The same upstream behind /wasm, through the pass-through middleware.
    let module = client.request(put("/v1/modules/pass", PASS.to_string())).await.unwrap();
    assert!(module.status().is_success(), "servd refused the module: {}", module.status());
    let config =
        format!(r#"{{"path_prefix": "/wasm", "upstreams": ["http://{upstream}"], "middleware": "pass"}}"#);
    let route = client.request(put("/v1/routes/bench-wasm", config)).await.unwrap();
    assert!(route.status().is_success(), "servd refused the middleware route: {}", route.status());
    proxy
}

/// nginx as a reverse proxy to the upstream with keep-alive both ways, if it is installed: one
/// process (no master), so that killing it at the end leaves no worker behind.
fn start_nginx(upstream: SocketAddr) -> Option<Proxy> {
    let bin = std::env::var("NGINX_BIN").unwrap_or_else(|_| "nginx".into());
    Command::new(&bin).arg("-v").stderr(Stdio::null()).status().ok()?;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let root = dir.path().display();
    let config = format!(
        "master_process off; daemon off; pid {root}/nginx.pid; error_log {root}/error.log warn;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  client_body_temp_path {root}; proxy_temp_path {root}; fastcgi_temp_path {root};
  uwsgi_temp_path {root}; scgi_temp_path {root};
  upstream app {{ server {upstream}; keepalive 128; }}
  server {{
    listen 127.0.0.1:{port};
    location / {{ proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection \"\"; }}
  }}
}}
"
    );
    let path = dir.path().join("nginx.conf");
    std::fs::write(&path, config).unwrap();
    let child = Command::new(&bin)
        .args(["-p", &root.to_string(), "-c", path.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let proxy =
        Proxy { name: "nginx", url: format!("http://127.0.0.1:{port}"), _process: Some((child, dir)) };
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Some(proxy);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize].as_secs_f64() * 1000.0
}

/// `concurrency` clients GET `url` for `seconds`: (requests/s, p50 ms, p99 ms).
async fn load(url: &str, concurrency: usize, seconds: f64) -> (f64, f64, f64) {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Client<HttpConnector, Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).pool_max_idle_per_host(concurrency).build(connector);
    // Warm the connections up before measuring.
    for _ in 0..concurrency {
        let response = client.get(url.parse().unwrap()).await.expect("the target answers");
        assert!(response.status().is_success(), "{url}: {}", response.status());
        response.into_body().collect().await.unwrap();
    }
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (client, stop, url) = (client.clone(), stop.clone(), url.to_string());
        workers.spawn(async move {
            let mut latencies = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let sent = Instant::now();
                let response = client.get(url.parse().unwrap()).await.expect("request");
                let status = response.status();
                let body = response.into_body().collect().await.expect("body").to_bytes();
                assert!(status.is_success() && body.len() == BODY_BYTES, "bad answer {status}");
                latencies.push(sent.elapsed());
            }
            latencies
        });
    }
    tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let mut latencies = Vec::new();
    while let Some(done) = workers.join_next().await {
        latencies.extend(done.unwrap());
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort();
    (latencies.len() as f64 / elapsed, percentile(&latencies, 0.5), percentile(&latencies, 0.99))
}

/// `wrk` with `connections` keep-alive connections GETting `url` for `seconds`: (requests/s,
/// p50 ms, p99 ms), or why there are none. Run off the runtime, which serves the upstream.
async fn wrk_load(url: &str, connections: usize, seconds: f64) -> Result<(f64, f64, f64), String> {
    let bin = std::env::var("WRK_BIN").unwrap_or_else(|_| "wrk".into());
    let args = [
        format!("-t{WRK_THREADS}"),
        format!("-c{connections}"),
        format!("-d{}s", seconds.ceil() as u64),
        "--latency".into(),
        url.to_string(),
    ];
    let output = tokio::task::spawn_blocking(move || Command::new(bin).args(args).output())
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("wrk: {e}"))?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() || text.contains("Non-2xx") || text.contains("Socket errors") {
        return Err(format!("wrk found errors:\n{text}"));
    }
    let field = |prefix: &str| {
        text.lines().find_map(|line| line.trim().strip_prefix(prefix).map(|rest| rest.trim().to_string()))
    };
    let rate =
        field("Requests/sec:").and_then(|r| r.parse().ok()).ok_or("no Requests/sec in wrk's output")?;
    let p50 = field("50%").and_then(|d| wrk_ms(&d)).ok_or("no 50% latency in wrk's output")?;
    let p99 = field("99%").and_then(|d| wrk_ms(&d)).ok_or("no 99% latency in wrk's output")?;
    Ok((rate, p50, p99))
}

/// A duration as `wrk` prints it (`812.00us`, `1.25ms`, `2.00s`), in milliseconds.
fn wrk_ms(duration: &str) -> Option<f64> {
    let split = duration.find(|c: char| c.is_ascii_alphabetic())?;
    let (value, unit) = duration.split_at(split);
    let value: f64 = value.parse().ok()?;
    match unit {
        "us" => Some(value / 1000.0),
        "ms" => Some(value),
        "s" => Some(value * 1000.0),
        "m" => Some(value * 60_000.0),
        _ => None,
    }
}

/// The `wrk` phases of every target, with servd's ratios to nginx and to itself without a
/// middleware; nothing when `wrk` is not installed.
async fn wrk_phases(targets: &[&Proxy], seconds: f64) {
    let mut figures = Vec::new();
    for target in targets {
        for connections in WRK_CONCURRENCY {
            let url = format!("{}/bench/item", target.url);
            match wrk_load(&url, connections, seconds).await {
                Ok((rate, p50, p99)) => {
                    if figures.is_empty() {
                        println!("\nwith wrk ({WRK_THREADS} threads)");
                        println!(
                            "{:<10} {:>5} {:>10} {:>9} {:>9}",
                            "target", "conn", "req/s", "p50 ms", "p99 ms"
                        );
                    }
                    println!(
                        "{:<10} {:>5} {:>10.0} {:>9.2} {:>9.2}",
                        target.name, connections, rate, p50, p99
                    );
                    figures.push((target.name, connections, rate, p99));
                }
                Err(reason) if figures.is_empty() && reason.starts_with("wrk:") => {
                    eprintln!("wrk is not available ({reason}): measured with our own client only");
                    return;
                }
                Err(reason) => println!("{:<10} {:>5} failed: {reason}", target.name, connections),
            }
        }
    }
    let figure = |name, connections| figures.iter().find(|f| f.0 == name && f.1 == connections);
    for connections in WRK_CONCURRENCY {
        if let (Some(servd), Some(nginx)) = (figure("servd", connections), figure("nginx", connections)) {
            println!(
                "wrk: servd / nginx at {connections} connections: {:.2}x req/s, p99 {:.2} vs {:.2} ms",
                servd.2 / nginx.2,
                servd.3,
                nginx.3
            );
        }
        if let (Some(wasm), Some(servd)) = (figure("servd+wasm", connections), figure("servd", connections)) {
            println!(
                "wrk: servd with / without a WASM middleware at {connections} connections: {:.2}x",
                wasm.2 / servd.2
            );
        }
    }
}

#[tokio::main]
async fn main() {
    let seconds: f64 = std::env::var("BENCH_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(4.0);
    let upstream = start_upstream().await;
    let direct = Proxy { name: "direct", url: format!("http://{upstream}"), _process: None };
    let servd = start_servd(upstream).await;
    let nginx = start_nginx(upstream);
    let wasm = Proxy { name: "servd+wasm", url: format!("{}/wasm", servd.url), _process: None };
    if nginx.is_none() {
        eprintln!("nginx is not installed here: measuring servd and the upstream alone");
    }
    println!("GET of a {BODY_BYTES} B answer, keep-alive, {seconds} s per phase; our own client first");
    println!("{:<10} {:>5} {:>10} {:>9} {:>9}", "target", "conc", "req/s", "p50 ms", "p99 ms");
    let mut figures = Vec::new();
    let targets: Vec<&Proxy> =
        [Some(&direct), Some(&servd), nginx.as_ref(), Some(&wasm)].into_iter().flatten().collect();
    for target in &targets {
        for concurrency in CONCURRENCY {
            let url = format!("{}/bench/item", target.url);
            let (rate, p50, p99) = load(&url, concurrency, seconds).await;
            println!("{:<10} {:>5} {:>10.0} {:>9.2} {:>9.2}", target.name, concurrency, rate, p50, p99);
            figures.push((target.name, concurrency, rate));
        }
    }
    for concurrency in CONCURRENCY {
        let rate = |name| figures.iter().find(|f| f.0 == name && f.1 == concurrency).map_or(0.0, |f| f.2);
        if nginx.is_some() {
            println!("servd / nginx at concurrency {concurrency}: {:.2}x", rate("servd") / rate("nginx"));
        }
        println!(
            "servd with / without a WASM middleware at concurrency {concurrency}: {:.2}x",
            rate("servd+wasm") / rate("servd")
        );
    }
    wrk_phases(&targets, seconds).await;
}
