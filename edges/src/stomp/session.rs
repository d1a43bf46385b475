//! One STOMP connection: CONNECT (credentials, version, heart-beats), then SEND to a destination's
//! topic actor, SUBSCRIBE as a member of a consumer group, ACK/NACK, transactions and receipts.
//!
//! The session translates frames into actor messages and back; it keeps no message state of its
//! own beyond a transaction's buffered frames. Reading is sequential: a SEND is answered (and
//! receipted) only once the topic has made it durable, and the next frame is not read before,
//! so a producer faster than the destination is slowed by TCP instead of growing memory.
//! Each subscription runs a delivery task that fetches from its group within the prefetch and
//! queues MESSAGE frames to the one writer task, through a bounded channel.
//!
//! Destinations are `/queue/NAME` (each message to one subscriber: the group `queue`) and
//! `/topic/NAME` (each subscription gets every message: a group of its own, or the shared group
//! named by a `group` header, whose position survives disconnects). A destination is created on
//! first use.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{FutureExt, SinkExt, StreamExt};
use serv_actors::group::{AckMode, GroupMsg, GroupRefusal, GroupReply, StartAt};
use serv_actors::topic::{DEDUP_HEADER, DeadLettered, LogRecord, TopicConfig, TopicMsg, TopicReply};
use serv_actors::{ActorKey, ActorKind, Directory, KindMessage, now_ms};
use tokio::sync::mpsc;
use tokio_util::codec::Framed;

use super::codec::{FrameError, FrameLimits, Item, StompCodec};
use super::frame::{Command, Frame, HeartBeat, HeartBeatIntervals, Version};
use crate::admin::topics::destination;
use crate::s3::Keys;

/// RECEIPT headers saying that the destination's transform sent the message to this dead-letter
/// topic instead, and why.
pub const DEAD_LETTER_HEADER: &str = "dead-letter";
pub const DEAD_LETTER_REASON_HEADER: &str = "dead-letter-reason";

/// Settings of the STOMP edge.
#[derive(Clone, Debug)]
pub struct StompSettings {
    pub limits: FrameLimits,
    /// Heart-beats the server offers and asks for (`heart-beat` of CONNECTED).
    pub heart_beat: HeartBeat,
    /// Longest a client may take to send CONNECT.
    pub connect_timeout: Duration,
    /// Unacknowledged messages a subscription may hold when it names no `prefetch-count`.
    pub default_prefetch: u32,
    /// An unacknowledged message is delivered again after this long.
    pub ack_timeout: Duration,
    /// Frames queued to a slow client before its deliveries wait.
    pub outbound_queue: usize,
}

impl Default for StompSettings {
    fn default() -> Self {
        Self {
            limits: FrameLimits::default(),
            heart_beat: HeartBeat { send_ms: 10_000, receive_ms: 10_000 },
            connect_timeout: Duration::from_secs(10),
            default_prefetch: 100,
            ack_timeout: Duration::from_secs(30),
            outbound_queue: 256,
        }
    }
}

/// What every session shares.
pub(super) struct Shared {
    pub directory: Directory,
    pub keys: Keys,
    pub settings: StompSettings,
}

/// A byte stream a session runs over: a TCP connection, or a WebSocket's bytes.
pub(super) trait Connection:
    tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static
{
}

impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static> Connection for T {}

/// Why a session ends with an ERROR frame.
struct Fault {
    message: String,
    detail: String,
}

fn fault(message: impl Into<String>, detail: impl Into<String>) -> Fault {
    Fault { message: message.into(), detail: detail.into() }
}

impl From<FrameError> for Fault {
    fn from(error: FrameError) -> Self {
        fault("malformed frame", error.to_string())
    }
}

struct Subscription {
    group: String,
    member: String,
    ack: AckMode,
    /// Ephemeral groups (a topic subscription without a `group` header) go when it ends.
    ephemeral: bool,
    task: tokio::task::JoinHandle<()>,
    /// Offsets sent to the client and not yet acknowledged (client ack modes only).
    delivered: Delivered,
}

/// The offsets a subscription sent and awaits acknowledgements for, with how many times each
/// was sent (a message the group lost is sent again, and the client acknowledges each copy). An acknowledgement the
/// group refuses for one of these is not the client's mistake: the group lost the delivery
/// (it moved to another node or restarted) and will deliver the message again, marked as a
/// redelivery; such an acknowledgement is let go instead of ending the session.
type Delivered = Arc<std::sync::Mutex<std::collections::HashMap<u64, u32>>>;

fn forget(delivered: &Delivered, offsets: impl IntoIterator<Item = u64>) -> bool {
    let mut delivered = delivered.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut all = true;
    for offset in offsets {
        match delivered.get_mut(&offset) {
            Some(count) if *count > 1 => *count -= 1,
            Some(_) => {
                delivered.remove(&offset);
            }
            None => all = false,
        }
    }
    all
}

/// A frame deferred until its transaction commits.
enum Pending {
    Send(Frame),
    Ack { subscription: String, offset: u64, nack: bool },
}

/// Runs one connection to its end.
pub(super) async fn run<S: Connection>(stream: S, shared: Arc<Shared>, session_id: String) {
    let mut framed = Framed::new(stream, StompCodec::new(shared.settings.limits));
    let connected =
        tokio::time::timeout(shared.settings.connect_timeout, connect(&mut framed, &shared, &session_id))
            .await;
    let (version, beats) = match connected {
        Ok(Ok(agreed)) => agreed,
        Ok(Err(fault)) => {
            let _ = framed.send(Item::Frame(error_frame(&fault, None))).await;
            return;
        }
        Err(_) => return, // never sent CONNECT: close
    };
    framed.codec_mut().set_version(version);
    let (sink, mut frames) = framed.split();
    let (out, outbound) = mpsc::channel::<Item>(shared.settings.outbound_queue);
    let writer = tokio::spawn(write_frames(sink, outbound, beats.server_to_client));
    let mut session = Session {
        shared: shared.clone(),
        id: session_id,
        version,
        out,
        subscriptions: HashMap::new(),
        transactions: HashMap::new(),
    };
    // A client that promised heart-beats and goes silent for twice as long is dead.
    let read_timeout = beats.client_to_server.map(|every| every * 2);
    // A frame read while gathering a burst that is not part of it.
    let mut lookahead = None;
    loop {
        let next = match lookahead.take() {
            Some(next) => Some(next),
            None => match read_timeout {
                Some(limit) => match tokio::time::timeout(limit, frames.next()).await {
                    Ok(next) => next,
                    Err(_) => {
                        tracing::debug!(session = %session.id, "no heart-beat from the client: closing");
                        break;
                    }
                },
                None => frames.next().await,
            },
        };
        let frame = match next {
            None => break,
            Some(Ok(Item::HeartBeat)) => continue,
            Some(Ok(Item::Frame(frame))) => frame,
            Some(Err(error)) => {
                session.fail(Fault::from(error), None).await;
                break;
            }
        };
        if is_plain_send(&frame) {
            // Take every SEND to the same destination that has already arrived: one commit.
            let destination = frame.header("destination").map(str::to_string);
            let burst = gather(&mut frames, frame, &mut lookahead, |next| {
                is_plain_send(next) && next.header("destination") == destination.as_deref()
            });
            if let Err((fault, receipt)) = session.publish_burst(burst).await {
                session.fail(fault, receipt.as_deref()).await;
                break;
            }
            continue;
        }
        if is_plain_ack(&frame) {
            // Likewise every ACK that has already arrived: one commit for all of them.
            let burst = gather(&mut frames, frame, &mut lookahead, is_plain_ack);
            if let Err((fault, receipt)) = session.acknowledge_burst(burst).await {
                session.fail(fault, receipt.as_deref()).await;
                break;
            }
            continue;
        }
        let receipt = frame.header("receipt").map(str::to_string);
        match session.handle(frame).await {
            Ok(Flow::Continue) => {
                if let Some(id) = receipt {
                    session.send(Frame::new(Command::Receipt).with_header("receipt-id", id)).await;
                }
            }
            Ok(Flow::Disconnect) => {
                if let Some(id) = receipt {
                    session.send(Frame::new(Command::Receipt).with_header("receipt-id", id)).await;
                }
                break;
            }
            Err(fault) => {
                session.fail(fault, receipt.as_deref()).await;
                break;
            }
        }
    }
    session.close().await;
    drop(session);
    let _ = writer.await;
}

/// Reads CONNECT (or STOMP), checks credentials, agrees on version and heart-beats, answers
/// CONNECTED. Returns the version and the agreed heart-beat intervals.
async fn connect(
    framed: &mut Framed<impl Connection, StompCodec>,
    shared: &Shared,
    session_id: &str,
) -> Result<(Version, HeartBeatIntervals), Fault> {
    let frame = loop {
        match framed.next().await {
            None => return Err(fault("connection closed before CONNECT", "")),
            Some(Ok(Item::HeartBeat)) => continue,
            Some(Ok(Item::Frame(frame))) => break frame,
            Some(Err(error)) => return Err(error.into()),
        }
    };
    if !matches!(frame.command, Command::Connect | Command::Stomp) {
        return Err(fault("expected CONNECT", format!("got {} before CONNECT", frame.command)));
    }
    let version = Version::negotiate(frame.header("accept-version"))
        .ok_or_else(|| fault("unsupported protocol version", "supported versions are 1.0,1.1,1.2"))?;
    let login = frame.header("login").unwrap_or_default();
    let passcode = frame.header("passcode").unwrap_or_default();
    let valid = shared
        .keys
        .secret(login)
        .is_some_and(|secret| crate::admin::auth::same(secret.as_bytes(), passcode.as_bytes()));
    if !valid {
        return Err(fault("access refused", "login and passcode must be an access key and its secret"));
    }
    let client = frame.header("heart-beat").and_then(HeartBeat::parse).unwrap_or_default();
    let agreed = HeartBeat::negotiate(client, shared.settings.heart_beat);
    let mut connected = Frame::new(Command::Connected)
        .with_header("version", version.as_str())
        .with_header("server", format!("serv/{}", env!("CARGO_PKG_VERSION")))
        .with_header("session", session_id);
    if version > Version::V1_0 {
        connected = connected.with_header("heart-beat", shared.settings.heart_beat.to_string());
    }
    framed.send(Item::Frame(connected)).await.map_err(|e| fault("write failed", e.to_string()))?;
    // STOMP 1.0 has no heart-beats.
    let agreed = if version == Version::V1_0 {
        HeartBeatIntervals { client_to_server: None, server_to_client: None }
    } else {
        agreed
    };
    Ok((version, agreed))
}

/// Sends queued frames, and a heart-beat when the connection was quiet for the agreed interval.
async fn write_frames(
    mut sink: futures_util::stream::SplitSink<Framed<impl Connection, StompCodec>, Item>,
    mut outbound: mpsc::Receiver<Item>,
    beat: Option<Duration>,
) {
    loop {
        let next = match beat {
            Some(every) => match tokio::time::timeout(every, outbound.recv()).await {
                Ok(next) => next,
                Err(_) => Some(Item::HeartBeat),
            },
            None => outbound.recv().await,
        };
        let Some(item) = next else { break };
        if sink.send(item).await.is_err() {
            break;
        }
    }
    let _ = sink.close().await;
}

enum Flow {
    Continue,
    Disconnect,
}

struct Session {
    shared: Arc<Shared>,
    id: String,
    version: Version,
    out: mpsc::Sender<Item>,
    subscriptions: HashMap<String, Subscription>,
    transactions: HashMap<String, Vec<Pending>>,
}

/// The topic name of a `/queue/NAME` or `/topic/NAME` destination.
fn topic_of(destination_header: Option<&str>) -> Result<String, Fault> {
    let value = destination_header
        .ok_or_else(|| fault("missing destination", "the frame needs a destination header"))?;
    let name = value.strip_prefix('/').unwrap_or(value);
    destination(name).map(str::to_string).map_err(|e| fault("invalid destination", e))
}

impl Session {
    async fn send(&self, frame: Frame) {
        let _ = self.out.send(Item::Frame(frame)).await;
    }

    async fn fail(&self, fault: Fault, receipt: Option<&str>) {
        let _ = self.out.send(Item::Frame(error_frame(&fault, receipt))).await;
    }

    async fn handle(&mut self, frame: Frame) -> Result<Flow, Fault> {
        match frame.command {
            Command::Send => self.buffer_send(frame)?,
            Command::Subscribe => self.subscribe(&frame).await?,
            Command::Unsubscribe => {
                let id = self.subscription_id(&frame)?;
                let subscription = self
                    .subscriptions
                    .remove(&id)
                    .ok_or_else(|| fault("unknown subscription", format!("no subscription {id}")))?;
                self.end(subscription).await;
            }
            Command::Ack | Command::Nack => {
                let (subscription, offset) = self.ack_target(&frame)?;
                let nack = frame.command == Command::Nack;
                match frame.header("transaction") {
                    Some(tx) => self.buffer(tx, Pending::Ack { subscription, offset, nack })?,
                    None => self.acknowledge(&subscription, offset, nack).await?,
                }
            }
            Command::Begin => {
                let tx = frame
                    .header("transaction")
                    .ok_or_else(|| fault("missing transaction", "BEGIN needs a transaction header"))?;
                if self.transactions.insert(tx.to_string(), Vec::new()).is_some() {
                    return Err(fault("transaction already begun", tx.to_string()));
                }
            }
            Command::Commit => {
                let pending = self.take_transaction(&frame)?;
                for action in pending {
                    match action {
                        Pending::Send(frame) => self.publish(frame).await?,
                        Pending::Ack { subscription, offset, nack } => {
                            self.acknowledge(&subscription, offset, nack).await?
                        }
                    }
                }
            }
            Command::Abort => {
                self.take_transaction(&frame)?;
            }
            Command::Disconnect => return Ok(Flow::Disconnect),
            Command::Connect | Command::Stomp => {
                return Err(fault("already connected", "CONNECT may be sent once"));
            }
            other => return Err(fault("unexpected frame", format!("a client may not send {other}"))),
        }
        Ok(Flow::Continue)
    }

    fn buffer(&mut self, tx: &str, action: Pending) -> Result<(), Fault> {
        self.transactions
            .get_mut(tx)
            .ok_or_else(|| fault("unknown transaction", format!("no transaction {tx}")))?
            .push(action);
        Ok(())
    }

    fn take_transaction(&mut self, frame: &Frame) -> Result<Vec<Pending>, Fault> {
        let tx = frame
            .header("transaction")
            .ok_or_else(|| fault("missing transaction", "the frame needs a transaction header"))?;
        self.transactions
            .remove(tx)
            .ok_or_else(|| fault("unknown transaction", format!("no transaction {tx}")))
    }

    /// A SEND inside a transaction (others go through bursts): checked now, stored at COMMIT.
    fn buffer_send(&mut self, frame: Frame) -> Result<(), Fault> {
        topic_of(frame.header("destination"))?;
        let tx = frame.header("transaction").unwrap_or_default().to_string();
        self.buffer(&tx, Pending::Send(frame))
    }

    /// The log record (and dedup id) a SEND stores.
    fn record_of(frame: &Frame) -> Result<(LogRecord, Option<String>), Fault> {
        let now = now_ms();
        let deliver_at_ms = match (frame.header("deliver-at"), frame.header("delay")) {
            (Some(at), _) => Some(
                at.parse::<u64>()
                    .map_err(|_| fault("invalid deliver-at", "deliver-at is Unix milliseconds"))?,
            ),
            (None, Some(delay)) => Some(
                now + delay.parse::<u64>().map_err(|_| fault("invalid delay", "delay is milliseconds"))?,
            ),
            (None, None) => None,
        };
        const TRANSPORT: &[&str] = &["content-length", "receipt", "transaction"];
        let headers: Vec<(String, String)> =
            frame.headers.iter().filter(|(name, _)| !TRANSPORT.contains(&name.as_str())).cloned().collect();
        let dedup_id = frame.header(DEDUP_HEADER).map(str::to_string);
        Ok((LogRecord { headers, body: frame.body.to_vec(), published_ms: now, deliver_at_ms }, dedup_id))
    }

    /// Appends a SEND's message to its destination; resolves once it is durable.
    async fn publish(&self, frame: Frame) -> Result<(), Fault> {
        let topic = topic_of(frame.header("destination"))?;
        self.publish_many(&topic, vec![Self::record_of(&frame)?]).await.map(drop)
    }

    /// Appends messages to one destination in order, in one commit; resolves once durable with,
    /// for each message, where the destination's transform sent it instead, if it did.
    async fn publish_many(
        &self,
        topic: &str,
        batch: Vec<(LogRecord, Option<String>)>,
    ) -> Result<Vec<Option<DeadLettered>>, Fault> {
        let kept: Vec<bool> = batch
            .iter()
            .map(|_| !crate::fault_injection::lose(crate::fault_injection::Loss::Message))
            .collect();
        let batch: Vec<_> = batch.into_iter().zip(&kept).filter(|(_, kept)| **kept).map(|(m, _)| m).collect();
        if batch.is_empty() {
            return Ok(vec![None; kept.len()]);
        }
        match crate::publish::append(&self.shared.directory, topic, batch).await {
            Ok(answers) => {
                let mut answers = answers.into_iter();
                Ok(kept
                    .iter()
                    .map(|kept| answers.next().filter(|_| *kept).and_then(|a| a.dead_letter))
                    .collect())
            }
            Err(error @ crate::publish::PublishError::Unreachable(_)) => {
                Err(fault("destination unavailable", error.to_string()))
            }
            Err(error) => Err(fault("message not stored", error.to_string())),
        }
    }

    /// A burst of SENDs (consecutive, to one destination, outside transactions): stored in one
    /// commit, then each receipt in order. A frame that fails its checks ends the burst there:
    /// the ones before it are stored and receipted, it gets the ERROR.
    async fn publish_burst(&self, burst: Vec<Frame>) -> Result<(), (Fault, Option<String>)> {
        let topic = topic_of(burst[0].header("destination")).map_err(|f| (f, receipt_of(&burst[0])))?;
        let mut records = Vec::with_capacity(burst.len());
        let mut failed = None;
        for frame in &burst {
            match Self::record_of(frame) {
                Ok(record) => records.push(record),
                Err(fault) => {
                    failed = Some((fault, receipt_of(frame)));
                    break;
                }
            }
        }
        let stored = records.len();
        let fates = match stored {
            0 => Vec::new(),
            _ => self.publish_many(&topic, records).await.map_err(|f| (f, None))?,
        };
        for (frame, fate) in burst[..stored].iter().zip(fates) {
            if let Some(id) = receipt_of(frame) {
                let mut receipt = Frame::new(Command::Receipt).with_header("receipt-id", id);
                // The destination's transform refused the message: it is durable in the
                // dead-letter topic, and the producer is told where and why.
                if let Some(dead) = fate {
                    receipt = receipt
                        .with_header(DEAD_LETTER_HEADER, format!("/{}", dead.topic))
                        .with_header(DEAD_LETTER_REASON_HEADER, dead.reason);
                }
                self.send(receipt).await;
            }
        }
        failed.map_or(Ok(()), Err)
    }

    async fn topic(&self, topic: &str, msg: TopicMsg) -> Result<TopicReply, Fault> {
        self.ask(topic, msg, "destination unavailable").await
    }

    /// Asks the entity `name` of `M`'s kind; a failure to reach it ends the session.
    async fn ask<M: KindMessage>(&self, name: &str, msg: M, failure: &str) -> Result<M::Reply, Fault> {
        let key = ActorKey::new(M::KIND, name);
        self.shared.directory.call(&key, msg).await.map_err(|e| fault(failure, e.to_string()))
    }

    fn subscription_id(&self, frame: &Frame) -> Result<String, Fault> {
        match (frame.header("id"), self.version) {
            (Some(id), _) => Ok(id.to_string()),
            (None, Version::V1_0) => Ok(frame.header("destination").unwrap_or_default().to_string()),
            (None, _) => Err(fault("missing id", "SUBSCRIBE and UNSUBSCRIBE need an id header")),
        }
    }

    async fn subscribe(&mut self, frame: &Frame) -> Result<(), Fault> {
        let id = self.subscription_id(frame)?;
        if self.subscriptions.contains_key(&id) {
            return Err(fault("duplicate subscription", format!("subscription {id} exists")));
        }
        let topic = topic_of(frame.header("destination"))?;
        let ack = match frame.header("ack").unwrap_or("auto") {
            "auto" => AckMode::Auto,
            "client" => AckMode::Client,
            "client-individual" => AckMode::ClientIndividual,
            other => {
                return Err(fault(
                    "invalid ack mode",
                    format!("ack {other:?} is not auto, client or client-individual"),
                ));
            }
        };
        let prefetch = match frame.header("prefetch-count") {
            Some(n) => n.parse::<u32>().map_err(|_| fault("invalid prefetch-count", n.to_string()))?,
            None => self.shared.settings.default_prefetch,
        };
        let is_queue = topic.starts_with("queue/");
        let (group, ephemeral) = match frame.header("group") {
            _ if is_queue => (format!("{topic}#queue"), false),
            Some(name) if !name.is_empty() && !name.contains('#') => (format!("{topic}#{name}"), false),
            Some(name) => return Err(fault("invalid group", format!("group {name:?}"))),
            None => (format!("{topic}#~{}-{id}", self.id), true),
        };
        let start = match frame.header("offset") {
            None if is_queue => StartAt::Earliest,
            None => StartAt::Latest,
            Some("earliest") => StartAt::Earliest,
            Some("latest") => StartAt::Latest,
            // Offsets are small; Unix milliseconds are past 10^12.
            Some(n) => match n.parse::<u64>() {
                Ok(n) if n >= 1_000_000_000_000 => StartAt::Time(n),
                Ok(n) => StartAt::Offset(n),
                Err(_) => {
                    return Err(fault("invalid offset", "offset is earliest, latest, a number or Unix ms"));
                }
            },
        };
        self.topic(&topic, TopicMsg::Ensure { config: TopicConfig::default() }).await?;
        let member = format!("{}/{id}", self.id);
        let join = GroupMsg::Join {
            member: member.clone(),
            prefetch,
            ack,
            ack_timeout_ms: self.shared.settings.ack_timeout.as_millis() as u64,
            start,
        };
        match self.group(&group, join.clone()).await? {
            GroupReply::Done => {}
            other => return Err(fault("subscription refused", format!("{other:?}"))),
        }
        let delivered = Delivered::default();
        let delivery = Delivery {
            delivered: (ack != AckMode::Auto).then(|| delivered.clone()),
            shared: self.shared.clone(),
            out: self.out.clone(),
            group: group.clone(),
            join,
            member: member.clone(),
            subscription: id.clone(),
            destination: frame.header("destination").unwrap_or_default().to_string(),
            version: self.version,
            prefetch,
        };
        let task = tokio::spawn(delivery.run());
        self.subscriptions.insert(id, Subscription { group, member, ack, ephemeral, task, delivered });
        Ok(())
    }

    async fn group(&self, group: &str, msg: GroupMsg) -> Result<GroupReply, Fault> {
        self.ask(group, msg, "subscription unavailable").await
    }

    /// The subscription and offset an ACK or NACK names (`id` in 1.2, `message-id` before).
    fn ack_target(&self, frame: &Frame) -> Result<(String, u64), Fault> {
        let id = match self.version {
            Version::V1_2 => frame.header("id"),
            _ => frame.header("message-id"),
        }
        .ok_or_else(|| fault("missing id", "ACK and NACK name the message (id in 1.2, message-id before)"))?;
        let (subscription, offset) = id
            .rsplit_once(':')
            .and_then(|(subscription, offset)| Some((subscription.to_string(), offset.parse::<u64>().ok()?)))
            .ok_or_else(|| fault("unknown message", format!("no message {id} awaits an acknowledgement")))?;
        Ok((subscription, offset))
    }

    async fn acknowledge(&self, subscription: &str, offset: u64, nack: bool) -> Result<(), Fault> {
        let Some(sub) = self.subscriptions.get(subscription) else {
            return Err(fault("unknown subscription", format!("no subscription {subscription}")));
        };
        if sub.ack == AckMode::Auto {
            return Err(fault(
                "nothing to acknowledge",
                format!("subscription {subscription} acknowledges automatically"),
            ));
        }
        let member = sub.member.clone();
        let msg = if nack { GroupMsg::Nack { member, offset } } else { GroupMsg::Ack { member, offset } };
        let reply = self.group(&sub.group, msg).await?;
        let was_delivered = match (sub.ack, nack) {
            // A cumulative ACK settles everything sent up to its offset.
            (AckMode::Client, false) => {
                let mut delivered = sub.delivered.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                let known = delivered.contains_key(&offset);
                delivered.retain(|sent, _| *sent > offset);
                known
            }
            _ => forget(&sub.delivered, [offset]),
        };
        match reply {
            GroupReply::Done => Ok(()),
            GroupReply::Refused(GroupRefusal::Ack(_) | GroupRefusal::NotAMember) if was_delivered => {
                tracing::debug!(group = %sub.group, offset, "acknowledgement of a delivery the group lost; it comes again");
                Ok(())
            }
            GroupReply::Refused(GroupRefusal::Ack(reason)) => Err(fault("unknown message", reason)),
            other => Err(fault("acknowledgement refused", format!("{other:?}"))),
        }
    }

    /// ACKs outside transactions, in order: consecutive ones for one subscription share a commit;
    /// receipts follow in order. The first one refused gets the ERROR.
    async fn acknowledge_burst(&self, burst: Vec<Frame>) -> Result<(), (Fault, Option<String>)> {
        let mut run: Vec<(u64, Option<String>)> = Vec::new();
        let mut run_subscription: Option<String> = None;
        for frame in burst {
            let receipt = receipt_of(&frame);
            let (subscription, offset) = self.ack_target(&frame).map_err(|f| (f, receipt.clone()))?;
            if run_subscription.as_ref().is_some_and(|current| *current != subscription) {
                self.acknowledge_run(run_subscription.take().unwrap(), std::mem::take(&mut run)).await?;
            }
            run_subscription = Some(subscription);
            run.push((offset, receipt));
        }
        if let Some(subscription) = run_subscription {
            self.acknowledge_run(subscription, run).await?;
        }
        Ok(())
    }

    async fn acknowledge_run(
        &self,
        subscription: String,
        run: Vec<(u64, Option<String>)>,
    ) -> Result<(), (Fault, Option<String>)> {
        let first_receipt = run.first().and_then(|(_, r)| r.clone());
        let Some(sub) = self.subscriptions.get(&subscription) else {
            return Err((
                fault("unknown subscription", format!("no subscription {subscription}")),
                first_receipt,
            ));
        };
        if sub.ack == AckMode::Auto {
            let detail = format!("subscription {subscription} acknowledges automatically");
            return Err((fault("nothing to acknowledge", detail), first_receipt));
        }
        let offsets: Vec<u64> = run.iter().map(|(offset, _)| *offset).collect();
        let was_delivered = forget(&sub.delivered, offsets.iter().copied());
        match self.group(&sub.group, GroupMsg::AckMany { member: sub.member.clone(), offsets }).await {
            Ok(GroupReply::Done) => {}
            Ok(GroupReply::Refused(GroupRefusal::Ack(_) | GroupRefusal::NotAMember)) if was_delivered => {
                tracing::debug!(group = %sub.group, "acknowledgements of deliveries the group lost; they come again");
            }
            Ok(GroupReply::Refused(GroupRefusal::Ack(reason))) => {
                return Err((fault("unknown message", reason), None));
            }
            Ok(other) => return Err((fault("acknowledgement refused", format!("{other:?}")), None)),
            Err(fault) => return Err((fault, None)),
        }
        for (_, receipt) in run {
            if let Some(id) = receipt {
                self.send(Frame::new(Command::Receipt).with_header("receipt-id", id)).await;
            }
        }
        Ok(())
    }

    async fn end(&self, subscription: Subscription) {
        subscription.task.abort();
        let msg = if subscription.ephemeral {
            GroupMsg::Delete
        } else {
            GroupMsg::Leave { member: subscription.member }
        };
        let _ = self.group(&subscription.group, msg).await;
    }

    async fn close(&mut self) {
        for (_, subscription) in std::mem::take(&mut self.subscriptions) {
            self.end(subscription).await;
        }
    }
}

/// Most SENDs stored in one commit.
const MAX_BURST: usize = 256;

/// A SEND outside any transaction: it may join a burst.
fn is_plain_send(frame: &Frame) -> bool {
    frame.command == Command::Send && frame.header("transaction").is_none()
}

/// An ACK outside any transaction: it may join a burst.
fn is_plain_ack(frame: &Frame) -> bool {
    frame.command == Command::Ack && frame.header("transaction").is_none()
}

/// `first` and the frames after it that have already arrived and `belong` with it (at most
/// [`MAX_BURST`]); the first frame that does not is left in `lookahead`, to be handled next.
fn gather<S: futures_util::Stream<Item = Result<Item, FrameError>> + Unpin>(
    frames: &mut S,
    first: Frame,
    lookahead: &mut Option<Result<Item, FrameError>>,
    belong: impl Fn(&Frame) -> bool,
) -> Vec<Frame> {
    let mut burst = vec![first];
    while burst.len() < MAX_BURST {
        match frames.next().now_or_never() {
            Some(Some(Ok(Item::HeartBeat))) => continue,
            Some(Some(Ok(Item::Frame(next)))) if belong(&next) => burst.push(next),
            Some(Some(other)) => {
                *lookahead = Some(other);
                break;
            }
            Some(None) | None => break,
        }
    }
    burst
}

fn receipt_of(frame: &Frame) -> Option<String> {
    frame.header("receipt").map(str::to_string)
}

fn error_frame(fault: &Fault, receipt: Option<&str>) -> Frame {
    let mut frame = Frame::new(Command::Error).with_header("message", fault.message.clone());
    if let Some(id) = receipt {
        frame = frame.with_header("receipt-id", id);
    }
    let body = if fault.detail.is_empty() { fault.message.clone() } else { fault.detail.clone() };
    frame.with_header("content-type", "text/plain").with_body(body.into_bytes())
}

/// How long one fetch waits for messages in the group (below the directory's call timeout).
const LONG_POLL_MS: u64 = 20_000;

/// One subscription's deliveries: fetch what its group has ready (waiting in the group while
/// nothing is), send it, repeat.
struct Delivery {
    /// Where sent offsets are noted, for subscriptions that acknowledge.
    delivered: Option<Delivered>,
    shared: Arc<Shared>,
    out: mpsc::Sender<Item>,
    group: String,
    join: GroupMsg,
    member: String,
    subscription: String,
    destination: String,
    version: Version,
    prefetch: u32,
}

impl Delivery {
    async fn run(self) {
        let key = ActorKey::new(ActorKind::Group, self.group.as_str());
        loop {
            let max = if self.prefetch == 0 { 100 } else { self.prefetch.min(100) as usize };
            let fetch = GroupMsg::Fetch { member: self.member.clone(), max, wait_ms: LONG_POLL_MS };
            let messages = match self.shared.directory.call(&key, fetch).await {
                Ok(GroupReply::Messages(messages)) => messages,
                Ok(GroupReply::Refused(GroupRefusal::NotAMember)) => {
                    // The group restarted or passivated: join again.
                    let _ = self.shared.directory.call(&key, self.join.clone()).await;
                    continue;
                }
                Ok(other) => {
                    tracing::warn!(group = %self.group, ?other, "subscription stopped");
                    return;
                }
                Err(error) => {
                    tracing::debug!(group = %self.group, %error, "fetch failed; retrying");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            for message in messages {
                if let Some(delivered) = &self.delivered {
                    let mut delivered = delivered.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                    *delivered.entry(message.offset).or_default() += 1;
                }
                if self.out.send(Item::Frame(self.frame(message))).await.is_err() {
                    return;
                }
            }
        }
    }

    fn frame(&self, message: serv_actors::group::Delivered) -> Frame {
        let id = format!("{}:{}", self.subscription, message.offset);
        let mut frame = Frame::new(Command::Message);
        for (name, value) in message.record.headers {
            if !matches!(name.as_str(), "destination" | "message-id" | "subscription" | "ack" | "redelivered")
            {
                frame = frame.with_header(name, value);
            }
        }
        frame = frame
            .with_header("destination", self.destination.clone())
            .with_header("message-id", id.clone())
            .with_header("subscription", self.subscription.clone());
        if self.version == Version::V1_2 {
            frame = frame.with_header("ack", id);
        }
        if message.previous > 0 {
            frame = frame
                .with_header("redelivered", "true")
                .with_header("redelivery-count", message.previous.to_string());
        }
        frame.with_body(message.record.body)
    }
}
