//! STOMP throughput and latency: 1 KiB durable messages sent with a receipt per message and with
//! a receipt per 100, then consumed with client-individual acks; against a fresh release
//! `servd` and, when it runs here, RabbitMQ's STOMP plugin, with the ratio; then servd again with
//! a WASM transform (`tests/wasm/upper.wat`) on the queue, to show what a transform costs.
//!
//! Run with `scripts/bench-stomp` (it builds servd and starts RabbitMQ when it can). A Rust
//! client over our own frame codec is used so that the broker, not the client, is measured.
//! Figures are printed, never asserted.
//!
//! Environment: `SERVD_BIN`, `RABBITMQ_STOMP_PORT` (a RabbitMQ STOMP listener to compare with,
//! login guest/guest), `BENCH_MESSAGES` (default 5000).

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command as Process, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use serv_edges::stomp::codec::{FrameLimits, Item, StompCodec};
use serv_edges::stomp::frame::{Command, Frame, Version};
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

const LOGIN: &str = "BENCHACCESSKEY";
const PASSCODE: &str = "bench-secret-key-0123456789";

type Conn = Framed<TcpStream, StompCodec>;

struct Broker {
    name: &'static str,
    port: u16,
    login: &'static str,
    passcode: &'static str,
    /// Extra SEND headers the broker needs for durable messages.
    durable: &'static [(&'static str, &'static str)],
    /// servd's admin port (to attach a transform).
    admin_port: Option<u16>,
    _process: Option<ChildGuard>,
}

/// A broker process and its data directory, both gone when the bench ends.
struct ChildGuard(Child, #[allow(dead_code)] tempfile::TempDir);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn start_servd() -> Broker {
    let bin = std::env::var_os("SERVD_BIN").map(PathBuf::from).unwrap_or_else(|| {
        let target =
            std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| PathBuf::from("target"), PathBuf::from);
        target.join("release/servd")
    });
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let admin_port = free_port();
    let child = Process::new(&bin)
        .args(["--data-dir", dir.path().to_str().unwrap(), "--log-level", "warn"])
        .args(["--stomp-addr", &format!("127.0.0.1:{port}")])
        .args(["--stomp-ws-addr", &format!("127.0.0.1:{}", free_port())])
        .args(["--http-addr", &format!("127.0.0.1:{}", free_port())])
        .args([
            "--s3-addr",
            &format!("127.0.0.1:{}", free_port()),
            "--admin-addr",
            &format!("127.0.0.1:{admin_port}"),
        ])
        .env("SERV_ACCESS_KEY", LOGIN)
        .env("SERV_SECRET_KEY", PASSCODE)
        .env("SERV_ADMIN_TOKEN", "bench")
        .stdout(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e} (build it: cargo build --release)", bin.display()));
    Broker {
        name: "servd",
        port,
        login: LOGIN,
        passcode: PASSCODE,
        durable: &[],
        admin_port: Some(admin_port),
        _process: Some(ChildGuard(child, dir)),
    }
}

async fn connect(broker: &Broker) -> Conn {
    for _ in 0..200 {
        if let Ok(stream) = TcpStream::connect(("127.0.0.1", broker.port)).await {
            let _ = stream.set_nodelay(true);
            let mut conn = Framed::new(stream, StompCodec::new(FrameLimits::default()));
            let connect = Frame::new(Command::Connect)
                .with_header("accept-version", "1.2")
                .with_header("host", "/")
                .with_header("login", broker.login)
                .with_header("passcode", broker.passcode)
                .with_header("heart-beat", "0,0");
            conn.send(Item::Frame(connect)).await.unwrap();
            let answer = next_frame(&mut conn).await;
            assert_eq!(answer.command, Command::Connected, "{} refused the bench: {answer:?}", broker.name);
            conn.codec_mut().set_version(Version::V1_2);
            return conn;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{} did not come up on port {}", broker.name, broker.port);
}

async fn next_frame(conn: &mut Conn) -> Frame {
    loop {
        match conn.next().await {
            Some(Ok(Item::Frame(frame))) => return frame,
            Some(Ok(Item::HeartBeat)) => continue,
            other => panic!("connection failed: {other:?}"),
        }
    }
}

fn send_frame(broker: &Broker, destination: &str, body: &Bytes, receipt: Option<String>) -> Frame {
    let mut frame = Frame::new(Command::Send).with_header("destination", destination);
    for (name, value) in broker.durable {
        frame = frame.with_header(*name, *value);
    }
    if let Some(receipt) = receipt {
        frame = frame.with_header("receipt", receipt);
    }
    frame.with_header("content-type", "application/octet-stream").with_body(body.clone())
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[index].as_secs_f64() * 1000.0
}

/// Sends `n` messages in batches of `per_receipt`, the last of each batch receipted and waited
/// for: (msgs/s, p50 and p99 ms of a batch's wait for its receipt).
async fn produce(
    broker: &Broker,
    destination: &str,
    n: usize,
    body: &Bytes,
    per_receipt: usize,
) -> (f64, f64, f64) {
    let mut conn = connect(broker).await;
    let mut latencies = Vec::with_capacity(n.div_ceil(per_receipt));
    let started = Instant::now();
    for batch in 0..n.div_ceil(per_receipt) {
        let sent = Instant::now();
        let size = per_receipt.min(n - batch * per_receipt);
        for i in 0..size {
            let receipt = (i + 1 == size).then(|| format!("b{batch}"));
            conn.feed(Item::Frame(send_frame(broker, destination, body, receipt))).await.unwrap();
        }
        conn.flush().await.unwrap();
        let receipt = next_frame(&mut conn).await;
        assert_eq!(receipt.command, Command::Receipt, "{receipt:?}");
        latencies.push(sent.elapsed());
    }
    let rate = n as f64 / started.elapsed().as_secs_f64();
    latencies.sort();
    (rate, percentile(&latencies, 0.5), percentile(&latencies, 0.99))
}

/// Consumes `n` messages with client-individual acks: msgs/s.
async fn consume(broker: &Broker, destination: &str, n: usize) -> f64 {
    let mut conn = connect(broker).await;
    let subscribe = Frame::new(Command::Subscribe)
        .with_header("destination", destination)
        .with_header("id", "bench")
        .with_header("ack", "client-individual")
        .with_header("prefetch-count", "500");
    conn.send(Item::Frame(subscribe)).await.unwrap();
    let started = Instant::now();
    for received in 0..n {
        let message = next_frame(&mut conn).await;
        assert_eq!(message.command, Command::Message, "after {received}: {message:?}");
        let id = message.header("ack").or_else(|| message.header("message-id")).unwrap().to_string();
        conn.feed(Item::Frame(Frame::new(Command::Ack).with_header("id", id))).await.unwrap();
        if received % 64 == 63 {
            conn.flush().await.unwrap();
        }
    }
    conn.flush().await.unwrap();
    n as f64 / started.elapsed().as_secs_f64()
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::var("BENCH_MESSAGES").ok().and_then(|s| s.parse().ok()).unwrap_or(5000);
    let body = Bytes::from((0..1024).map(|i| b'a' + (i % 26) as u8).collect::<Vec<_>>());
    let mut brokers = vec![start_servd()];
    match std::env::var("RABBITMQ_STOMP_PORT").ok().and_then(|p| p.parse().ok()) {
        Some(port) => brokers.push(Broker {
            name: "rabbitmq",
            port,
            login: "guest",
            passcode: "guest",
            durable: &[("persistent", "true")],
            admin_port: None,
            _process: None,
        }),
        None => println!(
            "RabbitMQ not running (scripts/bench-stomp starts it when it can): measuring servd alone"
        ),
    }
    println!("{n} messages of 1 KiB per phase, durable, one connection each");
    println!("{:<9} {:<28} {:>10} {:>9} {:>9}", "broker", "phase", "msgs/s", "p50 ms", "p99 ms");
    let mut rates: Vec<Vec<f64>> = Vec::new();
    for broker in &brokers {
        let run = std::process::id();
        let each = produce(broker, &format!("/queue/bench-each-{run}"), n, &body, 1).await;
        let batched = produce(broker, &format!("/queue/bench-batch-{run}"), n, &body, 100).await;
        let consumed = consume(broker, &format!("/queue/bench-batch-{run}"), n).await;
        for (phase, (rate, p50, p99)) in
            [("produce, receipt each", each), ("produce, receipt per 100", batched)]
        {
            println!("{:<9} {:<28} {:>10.0} {:>9.2} {:>9.2}", broker.name, phase, rate, p50, p99);
        }
        println!(
            "{:<9} {:<28} {:>10.0} {:>9} {:>9}",
            broker.name, "consume, client-individual", consumed, "-", "-"
        );
        rates.push(vec![each.0, batched.0, consumed]);
    }
    let servd = &brokers[0];
    let run = std::process::id();
    let queue = format!("queue/bench-transform-{run}");
    let upper = std::fs::read("tests/wasm/upper.wat").expect("run from the workspace root");
    admin_put(servd, "/v1/modules/upper", &upper).await;
    admin_put(servd, &format!("/v1/topics/{queue}"), br#"{"transform": "upper"}"#).await;
    let (rate, p50, p99) = produce(servd, &format!("/{queue}"), n, &body, 100).await;
    println!("{:<9} {:<28} {:>10.0} {:>9.2} {:>9.2}", "servd", "receipt per 100, transform", rate, p50, p99);
    println!("  (WASM transform vs none: {:.2}x the msgs/s)", rate / rates[0][1].max(f64::MIN_POSITIVE));
    if rates.len() == 2 {
        println!("\nservd / rabbitmq (msgs/s ratio)");
        for (i, phase) in ["produce, receipt each", "produce, receipt per 100", "consume, client-individual"]
            .iter()
            .enumerate()
        {
            println!("{phase:<28} {:>8.2}x", rates[0][i] / rates[1][i].max(f64::MIN_POSITIVE));
        }
    }
}

/// A PUT to servd's admin API (bearer "bench"), over a plain HTTP/1.1 connection; panics unless 200.
async fn admin_put(broker: &Broker, path: &str, body: &[u8]) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let port = broker.admin_port.expect("servd's admin port");
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let head = format!(
        "PUT {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer bench\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "PUT {path}: {answer}");
}
