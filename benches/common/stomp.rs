//! The STOMP load of the benches: a client over our own frame codec (so that the broker, not
//! the client, is measured) that produces durable messages with a receipt per message or per
//! batch, and consumes them with client-individual acks.

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use serv_edges::stomp::codec::{FrameLimits, Item, StompCodec};
use serv_edges::stomp::frame::{Command, Frame, Version};
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

use super::{ACCESS, SECRET};

type Conn = Framed<TcpStream, StompCodec>;

/// Messages a consumer may hold unacknowledged.
const PREFETCH_COUNT: &str = "500";
/// Acks sent in one flush.
const ACKS_PER_FLUSH: usize = 64;

/// A STOMP listener to measure and how to log in to it.
pub struct Broker {
    pub name: String,
    pub port: u16,
    pub login: &'static str,
    pub passcode: &'static str,
    /// Extra SEND headers the broker needs for durable messages.
    pub durable: &'static [(&'static str, &'static str)],
}

impl Broker {
    /// A servd node's STOMP listener, with the bench's root credentials.
    pub fn servd(name: &str, port: u16) -> Broker {
        Broker { name: name.into(), port, login: ACCESS, passcode: SECRET, durable: &[] }
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

/// The `p` quantile of sorted durations, in milliseconds.
pub fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[index].as_secs_f64() * 1000.0
}

/// A 1 KiB message body.
pub fn kib_body() -> Bytes {
    Bytes::from((0..1024).map(|i| b'a' + (i % 26) as u8).collect::<Vec<_>>())
}

/// What a produce phase measured.
#[derive(Clone, Copy, Default)]
pub struct Produced {
    pub rate: f64,
    /// Median and 99th percentile of a batch's wait for its receipt, in milliseconds.
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// Sends `n` messages in batches of `per_receipt`, the last of each batch receipted and waited
/// for.
pub async fn produce(
    broker: &Broker,
    destination: &str,
    n: usize,
    body: &Bytes,
    per_receipt: usize,
) -> Produced {
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
    Produced { rate, p50_ms: percentile(&latencies, 0.5), p99_ms: percentile(&latencies, 0.99) }
}

/// Consumes `n` messages with client-individual acks: msgs/s.
pub async fn consume(broker: &Broker, destination: &str, n: usize) -> f64 {
    let mut conn = connect(broker).await;
    let subscribe = Frame::new(Command::Subscribe)
        .with_header("destination", destination)
        .with_header("id", "bench")
        .with_header("ack", "client-individual")
        .with_header("prefetch-count", PREFETCH_COUNT);
    conn.send(Item::Frame(subscribe)).await.unwrap();
    let started = Instant::now();
    for received in 0..n {
        let message = next_frame(&mut conn).await;
        assert_eq!(message.command, Command::Message, "after {received}: {message:?}");
        let id = message.header("ack").or_else(|| message.header("message-id")).unwrap().to_string();
        conn.feed(Item::Frame(Frame::new(Command::Ack).with_header("id", id))).await.unwrap();
        if received % ACKS_PER_FLUSH == ACKS_PER_FLUSH - 1 {
            conn.flush().await.unwrap();
        }
    }
    conn.flush().await.unwrap();
    n as f64 / started.elapsed().as_secs_f64()
}
