//! The STOMP workload: receipted producers (plain and transactional SENDs) to a few queues and a
//! topic, and acking consumers: each queue's subscribers and each consumer group on the topic is
//! one *subscription* that must see every acknowledged message at least once.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::history::{History, Op, OpKind, Outcome};
use crate::http::Http;
use crate::nodes::{ACCESS_KEY, SECRET_KEY};
use crate::stomp::{Connection, HEART_BEAT_MS};
use crate::worker::Worker;

/// How a delivery's `detail` starts when its body is not the expected one.
pub const UNEXPECTED_BODY: &str = "unexpected body ";
/// How long a producer waits for a RECEIPT before the message's fate is unknown.
const RECEIPT_TIMEOUT: Duration = Duration::from_secs(10);
/// Messages in one transaction.
const TX_SIZE: usize = 3;

/// A subscription the checker follows: who must receive what is sent to `destination`.
#[derive(Clone, Debug)]
pub struct Subscription {
    /// `/queue/NAME` or `/topic/NAME`.
    pub destination: String,
    /// The consumer group (for a topic).
    pub group: Option<String>,
}

impl Subscription {
    /// How the history names it.
    pub fn name(&self) -> String {
        match &self.group {
            Some(group) => format!("{} group {group}", self.destination),
            None => self.destination.clone(),
        }
    }
}

/// The shape of the STOMP workload.
#[derive(Clone, Debug)]
pub struct MessageConfig {
    pub destinations: Vec<String>,
    pub subscriptions: Vec<Subscription>,
    pub consumers_per_subscription: usize,
    /// Percent of sends made in transactions.
    pub transaction_percent: u64,
    /// Every destination runs [`TRANSFORM`]: deliveries must carry its output.
    pub transformed: bool,
}

/// The transform `--transform` attaches (upper-cases the body): the WAT the servd tests use.
const TRANSFORM: &str = include_str!("../../tests/wasm/upper.wat");
/// Its module name.
const TRANSFORM_NAME: &str = "chaos-upper";

/// What a delivery of message `id` carries: the body sent, through the transform when there is one.
fn expected_body(id: u64, transformed: bool) -> String {
    let body = format!("chaos message {id}");
    if transformed { body.to_uppercase() } else { body }
}

/// Uploads [`TRANSFORM`] through `admin` and attaches it to every destination of `config`.
pub async fn attach_transform(http: &Http, admin: SocketAddr, config: &MessageConfig) -> Result<(), String> {
    let put = |path: String, body: Bytes| async move {
        match http.admin_with("PUT", admin, &path, body).await {
            Ok(response) if response.status == 200 => Ok(()),
            Ok(response) => Err(format!(
                "PUT {path}: HTTP {} {}",
                response.status,
                String::from_utf8_lossy(&response.body)
            )),
            Err(failure) => Err(format!("PUT {path}: {}", failure.error)),
        }
    };
    put(format!("/v1/modules/{TRANSFORM_NAME}"), Bytes::from_static(TRANSFORM.as_bytes())).await?;
    for destination in &config.destinations {
        let attach = format!(r#"{{"transform": "{TRANSFORM_NAME}"}}"#);
        put(format!("/v1/topics{destination}"), Bytes::from(attach)).await?;
    }
    Ok(())
}

impl MessageConfig {
    /// `queues` queues and one topic with `groups` consumer groups.
    pub fn new(queues: usize, groups: usize) -> Self {
        let mut destinations: Vec<String> = (0..queues).map(|n| format!("/queue/chaos-q{n}")).collect();
        let mut subscriptions: Vec<Subscription> =
            destinations.iter().map(|d| Subscription { destination: d.clone(), group: None }).collect();
        if groups > 0 {
            destinations.push("/topic/chaos-t".into());
            subscriptions.extend((0..groups).map(|n| Subscription {
                destination: "/topic/chaos-t".into(),
                group: Some(format!("g{n}")),
            }));
        }
        MessageConfig {
            destinations,
            subscriptions,
            consumers_per_subscription: 2,
            transaction_percent: 15,
            transformed: false,
        }
    }
}

/// One producer: receipted SENDs (some in transactions) through random nodes until stopped.
pub async fn producer(mut worker: Worker, nodes: Vec<SocketAddr>, config: Arc<MessageConfig>) {
    let mut session: Option<(usize, Connection)> = None;
    while worker.running() {
        let (node, mut connection) = match session.take() {
            Some(open) => open,
            None => {
                let node = worker.pick(nodes.len());
                match Connection::open(nodes[node], ACCESS_KEY, SECRET_KEY).await {
                    Ok(connection) => (node, connection),
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                }
            }
        };
        let destination = &config.destinations[worker.pick(config.destinations.len())];
        let (name, history) = (&worker.name, &worker.history);
        let kept = if worker.rng.percent(config.transaction_percent) {
            send_transaction(name, node, &mut connection, destination, history).await
        } else {
            send_one(name, node, &mut connection, destination, history).await
        };
        if kept {
            session = Some((node, connection));
        }
        worker.rest().await;
    }
}

/// One receipted SEND; false if the connection is no longer usable.
async fn send_one(
    name: &str,
    node: usize,
    connection: &mut Connection,
    destination: &str,
    history: &History,
) -> bool {
    let mut op = history.invoke(OpKind::Send, name, node, destination.to_string());
    let id = op.id();
    op.set_value(id);
    let (id_text, receipt) = (id.to_string(), format!("r{id}"));
    let headers =
        [("destination", destination), ("persistent", "true"), ("chaos-id", &id_text), ("receipt", &receipt)];
    let result = match connection.send("SEND", &headers, expected_body(id, false).as_bytes()).await {
        Ok(()) => await_receipt(connection, &receipt).await,
        Err(e) => Err((Outcome::Unknown, e.to_string())),
    };
    match result {
        Ok(()) => {
            op.finish(Outcome::Ok, "");
            true
        }
        Err((outcome, detail)) => {
            op.finish(outcome, detail);
            false
        }
    }
}

/// BEGIN, `TX_SIZE` SENDs, COMMIT with a receipt: the SENDs are acknowledged by that receipt.
async fn send_transaction(
    name: &str,
    node: usize,
    connection: &mut Connection,
    destination: &str,
    history: &History,
) -> bool {
    let mut ops = Vec::new();
    let tx = format!("tx{}", history.next_id());
    let mut result = connection.send("BEGIN", &[("transaction", &tx)], b"").await.map_err(|e| e.to_string());
    for _ in 0..TX_SIZE {
        let mut op = history.invoke(OpKind::TxSend, name, node, destination.to_string());
        let id = op.id();
        op.set_value(id);
        ops.push(op);
        if result.is_ok() {
            let id_text = id.to_string();
            let headers = [
                ("destination", destination),
                ("persistent", "true"),
                ("chaos-id", &id_text),
                ("transaction", &tx),
            ];
            result = connection
                .send("SEND", &headers, expected_body(id, false).as_bytes())
                .await
                .map_err(|e| e.to_string());
        }
    }
    let receipt = format!("c{tx}");
    let result = match result {
        Ok(()) => {
            match connection.send("COMMIT", &[("transaction", &tx), ("receipt", &receipt)], b"").await {
                Ok(()) => await_receipt(connection, &receipt).await,
                Err(e) => Err((Outcome::Unknown, e.to_string())),
            }
        }
        Err(e) => Err((Outcome::Unknown, e)),
    };
    let kept = result.is_ok();
    let (outcome, detail) = result.map_or_else(|e| e, |()| (Outcome::Ok, String::new()));
    for op in ops {
        op.finish(outcome, format!("{tx} {detail}").trim().to_string());
    }
    kept
}

async fn await_receipt(connection: &mut Connection, receipt: &str) -> Result<(), (Outcome, String)> {
    let deadline = tokio::time::Instant::now() + RECEIPT_TIMEOUT;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            return Err((Outcome::Unknown, format!("no RECEIPT within {RECEIPT_TIMEOUT:?}")));
        }
        let frame = connection.next(left).await.map_err(|e| (Outcome::Unknown, e.to_string()))?;
        match frame.command.as_str() {
            "RECEIPT" if frame.header("receipt-id") == Some(receipt) => return Ok(()),
            "ERROR" => return Err((Outcome::Unknown, frame.error_text())),
            _ => {}
        }
    }
}

/// One consumer of a subscription: receives, records and ACKs every message; moves to another
/// node when its connection breaks or goes silent; runs until stopped.
pub async fn consumer(
    mut worker: Worker,
    nodes: Vec<SocketAddr>,
    subscription: Subscription,
    transformed: bool,
) {
    let target = subscription.name();
    while worker.running() {
        let node = worker.pick(nodes.len());
        let Ok(mut connection) = Connection::open(nodes[node], ACCESS_KEY, SECRET_KEY).await else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let mut headers = vec![
            ("id", "0"),
            ("destination", subscription.destination.as_str()),
            ("ack", "client-individual"),
            ("prefetch-count", "20"),
        ];
        if let Some(group) = &subscription.group {
            headers.extend([("group", group.as_str()), ("offset", "earliest")]);
        }
        if connection.send("SUBSCRIBE", &headers, b"").await.is_err() {
            continue;
        }
        let mut beat = tokio::time::interval(Duration::from_millis(HEART_BEAT_MS));
        while worker.running() {
            let frame = tokio::select! {
                frame = connection.next(Duration::from_secs(3_600)) => frame,
                _ = beat.tick() => {
                    if connection.beat().await.is_err() { break }
                    continue;
                }
            };
            let Ok(frame) = frame else { break };
            if frame.command != "MESSAGE" {
                break;
            }
            let history = &worker.history;
            let now = history.now_ms();
            let value: Option<u64> = frame.header("chaos-id").and_then(|id| id.parse().ok());
            // A body other than what the destination makes of what was sent is named in `detail`.
            let detail = match value {
                Some(id) if frame.body != expected_body(id, transformed).as_bytes() => {
                    format!("{UNEXPECTED_BODY}{:?}", String::from_utf8_lossy(&frame.body))
                }
                _ => String::new(),
            };
            history.record(Op {
                id: history.next_id(),
                kind: OpKind::Deliver,
                worker: worker.name.clone(),
                node,
                target: target.clone(),
                value,
                hash: None,
                invoke_ms: now,
                complete_ms: now,
                outcome: Outcome::Ok,
                detail,
                redelivered: frame.header("redelivered") == Some("true"),
            });
            let Some(ack) = frame.header("ack").map(str::to_string) else { break };
            if connection.send("ACK", &[("id", &ack)], b"").await.is_err() {
                break;
            }
        }
        let _ = connection.send("DISCONNECT", &[], b"").await;
    }
}
