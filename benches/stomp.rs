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

mod common;

use bytes::Bytes;
use common::stomp::{Broker, Produced, consume, kib_body, produce};
use common::{ACCESS, ADMIN_TOKEN, Node, SECRET, env_or, loopback};
use serv_chaos::http::Http;

#[tokio::main]
async fn main() {
    let n: usize = env_or("BENCH_MESSAGES", 5000);
    let body = kib_body();
    let client = Http::new(ACCESS, SECRET, ADMIN_TOKEN);
    let mut node = Node::start("servd", &[]);
    node.wait_ready(&client).await;
    let mut brokers = vec![Broker::servd("servd", node.stomp)];
    match std::env::var("RABBITMQ_STOMP_PORT").ok().and_then(|p| p.parse().ok()) {
        Some(port) => brokers.push(Broker {
            name: "rabbitmq".into(),
            port,
            login: "guest",
            passcode: "guest",
            durable: &[("persistent", "true")],
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
        for (phase, produced) in [("produce, receipt each", each), ("produce, receipt per 100", batched)] {
            print_produced(&broker.name, phase, produced);
        }
        println!(
            "{:<9} {:<28} {:>10.0} {:>9} {:>9}",
            broker.name, "consume, client-individual", consumed, "-", "-"
        );
        rates.push(vec![each.rate, batched.rate, consumed]);
    }
    let run = std::process::id();
    let queue = format!("queue/bench-transform-{run}");
    let upper = std::fs::read("tests/wasm/upper.wat").expect("run from the workspace root");
    admin_put(&client, &node, "/v1/modules/upper", upper.into()).await;
    admin_put(
        &client,
        &node,
        &format!("/v1/topics/{queue}"),
        Bytes::from_static(br#"{"transform": "upper"}"#),
    )
    .await;
    let transformed = produce(&brokers[0], &format!("/{queue}"), n, &body, 100).await;
    print_produced("servd", "receipt per 100, transform", transformed);
    println!(
        "  (WASM transform vs none: {:.2}x the msgs/s)",
        transformed.rate / rates[0][1].max(f64::MIN_POSITIVE)
    );
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

fn print_produced(broker: &str, phase: &str, produced: Produced) {
    let Produced { rate, p50_ms, p99_ms } = produced;
    println!("{broker:<9} {phase:<28} {rate:>10.0} {p50_ms:>9.2} {p99_ms:>9.2}");
}

/// A PUT to the node's admin API; panics unless 200.
async fn admin_put(client: &Http, node: &Node, path: &str, body: Bytes) {
    let answer = client.admin_with("PUT", loopback(node.admin), path, body).await;
    let status = answer.as_ref().map(|r| r.status).map_err(|f| f.error.clone());
    assert_eq!(status, Ok(200), "PUT {path}");
}
