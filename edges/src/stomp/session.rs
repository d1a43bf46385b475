//! One STOMP connection: CONNECT (credentials, version, virtual host, heart-beats), then SEND to a
//! destination's topic actor, SUBSCRIBE as a member of a consumer group, ACK/NACK, transactions
//! and receipts.
//!
//! The session translates frames into actor messages and back; it keeps no message state of its
//! own beyond a transaction's buffered frames and what each subscription was sent. Reading is
//! sequential: a SEND is answered (and receipted) only once the topic has made it durable, and
//! the next frame is not read before, so a producer faster than the destination is slowed by TCP
//! instead of growing memory. Each subscription runs a [`delivery`] task that fetches from its
//! group within the prefetch and queues MESSAGE frames to the one writer task, through a bounded
//! channel.
//!
//! Destinations are `/queue/NAME` (each message to one subscriber: the group `queue`) and
//! `/topic/NAME` (each subscription gets every message: a group of its own, or the shared group
//! named by a `group` header, whose position survives disconnects). A destination is created on
//! first use.
//!
//! A frame inside a transaction (SEND, ACK, NACK) takes effect at COMMIT, and so does its
//! receipt: it is sent once the frame's effect is durable, before the COMMIT's own; an ABORT
//! drops the frames and their receipts.

mod ack;
mod connect;
mod delivery;
mod fault;
mod publish;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::{FutureExt, SinkExt, StreamExt};
use serv_actors::group::{AckMode, GroupMsg, GroupReply, StartAt};
use serv_actors::topic::{TopicConfig, TopicMsg, TopicRefusal, TopicReply, queue_group};
use serv_actors::{ActorKey, Directory, KindMessage};
use tokio::sync::mpsc;
use tokio_util::codec::Framed;

use self::ack::Delivered;
use self::delivery::Delivery;
use self::fault::{
    BAD_TRANSACTION, DESTINATION_UNAVAILABLE, Fault, INVALID_HEADER, MEMORY_LIMIT, MISSING_HEADER,
    TOO_MANY_DESTINATIONS, TOO_MANY_SUBSCRIPTIONS, fault,
};
pub use self::publish::{DEAD_LETTER_HEADER, DEAD_LETTER_REASON_HEADER};
use self::publish::{check_client_headers, topic_of};
use super::codec::{FrameError, FrameLimits, Item, StompCodec};
use super::frame::{Command, Frame, HeartBeat, Version};
use crate::s3::Keys;

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
    /// Most subscriptions one connection may hold at once.
    pub max_subscriptions: usize,
    /// Most destinations one connection may create (by a first SEND or SUBSCRIBE to them).
    pub max_new_destinations: usize,
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
            max_subscriptions: 1000,
            max_new_destinations: 1000,
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

struct Subscription {
    group: String,
    member: String,
    ack: AckMode,
    /// Ephemeral groups (a topic subscription without a `group` header) go when it ends.
    ephemeral: bool,
    task: tokio::task::JoinHandle<()>,
    /// What was sent to the client and awaits, or had, its acknowledgement (client ack modes).
    delivered: Delivered,
}

/// A frame deferred until its transaction commits; its receipt waits with it.
enum Pending {
    Send(Frame),
    Ack { subscription: String, offset: u64, nack: bool, receipt: Option<String> },
}

/// Runs one connection to its end.
pub(super) async fn run<S: Connection>(stream: S, shared: Arc<Shared>, session_id: String) {
    let _open = super::metrics::OpenConnection::new();
    let mut framed = Framed::new(stream, StompCodec::new(shared.settings.limits));
    let connected = tokio::time::timeout(
        shared.settings.connect_timeout,
        connect::connect(&mut framed, &shared, &session_id),
    )
    .await;
    let (version, beats) = match connected {
        Ok(Ok(agreed)) => agreed,
        Ok(Err(fault)) => {
            if framed.send(Item::Frame(fault::error_frame(&fault, None))).await.is_ok() {
                fault::linger(framed.into_inner()).await;
            }
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
        created: AtomicUsize::new(0),
    };
    // A client that promised heart-beats and goes silent for twice as long is dead.
    let read_timeout = beats.client_to_server.map(|every| every * 2);
    // A frame read while gathering a burst that is not part of it.
    let mut lookahead = None;
    let mut failed = false;
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
        let outcome = match next {
            None => break,
            Some(Ok(Item::HeartBeat)) => continue,
            Some(Ok(Item::Frame(frame))) => session.serve(frame, &mut frames, &mut lookahead).await,
            Some(Err(error)) => Err((Fault::from(error), None)),
        };
        match outcome {
            Ok(Flow::Continue) => {}
            Ok(Flow::Disconnect) => break,
            Err((fault, receipt)) => {
                session.fail(fault, receipt.as_deref()).await;
                failed = true;
                break;
            }
        }
    }
    session.close().await;
    drop(session);
    let Ok(sink) = writer.await else { return };
    if failed && let Ok(framed) = frames.reunite(sink) {
        fault::linger(framed.into_inner()).await;
    }
}

/// Sends queued frames, and a heart-beat when the connection was quiet for the agreed interval;
/// returns the sink, closed, once the session drops its sender.
async fn write_frames<S: Connection>(
    mut sink: futures_util::stream::SplitSink<Framed<S, StompCodec>, Item>,
    mut outbound: mpsc::Receiver<Item>,
    beat: Option<Duration>,
) -> futures_util::stream::SplitSink<Framed<S, StompCodec>, Item> {
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
    sink
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
    /// Destinations this connection created (see [`StompSettings::max_new_destinations`]).
    created: AtomicUsize,
}

impl Session {
    async fn send(&self, frame: Frame) {
        let _ = self.out.send(Item::Frame(frame)).await;
    }

    async fn fail(&self, fault: Fault, receipt: Option<&str>) {
        let _ = self.out.send(Item::Frame(fault::error_frame(&fault, receipt))).await;
    }

    /// Handles `frame` (and, for a SEND or ACK, those like it that arrived with it), receipts
    /// included; an error names the fault and the receipt the ERROR answers.
    async fn serve<S: futures_util::Stream<Item = Result<Item, FrameError>> + Unpin>(
        &mut self,
        frame: Frame,
        frames: &mut S,
        lookahead: &mut Option<Result<Item, FrameError>>,
    ) -> Result<Flow, (Fault, Option<String>)> {
        // Near the memory budget, what would store or hold more waits; acks (which free) go on.
        if matches!(frame.command, Command::Send | Command::Subscribe | Command::Commit)
            && crate::memory::refuses(crate::memory::Edge::Stomp)
        {
            let refusal = fault(MEMORY_LIMIT, crate::memory::refusal("--max-memory-bytes"));
            return Err((refusal, receipt_of(&frame)));
        }
        if is_plain_send(&frame) {
            // Take every SEND to the same destination that has already arrived: one commit.
            let destination = frame.header("destination").map(str::to_string);
            let burst = gather(frames, frame, lookahead, |next| {
                is_plain_send(next) && next.header("destination") == destination.as_deref()
            });
            return self.publish_burst(burst).await.map(|()| Flow::Continue);
        }
        if is_plain_ack(&frame) {
            // Likewise every ACK that has already arrived: one commit for all of them.
            let burst = gather(frames, frame, lookahead, is_plain_ack);
            return self.acknowledge_burst(burst).await.map(|()| Flow::Continue);
        }
        let receipt = receipt_of(&frame);
        // A frame inside a transaction is receipted when the transaction commits.
        let held = frame.header("transaction").is_some()
            && matches!(frame.command, Command::Send | Command::Ack | Command::Nack);
        let flow = self.handle(frame).await.map_err(|fault| (fault, receipt.clone()))?;
        if let Some(id) = receipt.filter(|_| !held) {
            self.send(Frame::new(Command::Receipt).with_header("receipt-id", id)).await;
        }
        Ok(flow)
    }

    async fn handle(&mut self, frame: Frame) -> Result<Flow, Fault> {
        match frame.command {
            Command::Send => self.buffer_send(frame)?,
            Command::Subscribe => self.subscribe(&frame).await?,
            Command::Unsubscribe => {
                let id = self.subscription_id(&frame)?;
                let subscription = self.subscriptions.remove(&id).ok_or_else(|| {
                    fault("No subscription found", format!("there is no subscription '{id}'"))
                })?;
                self.end(subscription).await;
            }
            Command::Ack | Command::Nack => {
                let (subscription, offset) = self.ack_target(&frame)?;
                let nack = frame.command == Command::Nack;
                match frame.header("transaction") {
                    Some(tx) => {
                        let receipt = receipt_of(&frame);
                        self.buffer(tx, Pending::Ack { subscription, offset, nack, receipt })?
                    }
                    None => self.acknowledge(&subscription, offset, nack).await?,
                }
            }
            Command::Begin => {
                let tx = frame.header("transaction").ok_or_else(|| missing_transaction(&frame))?;
                if self.transactions.insert(tx.to_string(), Vec::new()).is_some() {
                    return Err(fault(BAD_TRANSACTION, format!("transaction '{tx}' is already begun")));
                }
            }
            Command::Commit => {
                for action in self.take_transaction(&frame)? {
                    match action {
                        Pending::Send(frame) => self.publish(frame).await?,
                        Pending::Ack { subscription, offset, nack, receipt } => {
                            self.acknowledge(&subscription, offset, nack).await?;
                            if let Some(id) = receipt {
                                self.send(Frame::new(Command::Receipt).with_header("receipt-id", id)).await;
                            }
                        }
                    }
                }
            }
            Command::Abort => {
                self.take_transaction(&frame)?;
            }
            Command::Disconnect => return Ok(Flow::Disconnect),
            Command::Connect | Command::Stomp => {
                return Err(fault("Bad command", "CONNECT may be sent once"));
            }
            other => return Err(fault("Bad command", format!("a client may not send {other}"))),
        }
        Ok(Flow::Continue)
    }

    fn buffer(&mut self, tx: &str, action: Pending) -> Result<(), Fault> {
        self.transactions
            .get_mut(tx)
            .ok_or_else(|| fault(BAD_TRANSACTION, format!("there is no transaction '{tx}'")))?
            .push(action);
        Ok(())
    }

    fn take_transaction(&mut self, frame: &Frame) -> Result<Vec<Pending>, Fault> {
        let tx = frame.header("transaction").ok_or_else(|| missing_transaction(frame))?;
        self.transactions
            .remove(tx)
            .ok_or_else(|| fault(BAD_TRANSACTION, format!("there is no transaction '{tx}'")))
    }

    /// A SEND inside a transaction (others go through bursts): checked now, stored at COMMIT.
    fn buffer_send(&mut self, frame: Frame) -> Result<(), Fault> {
        check_client_headers(&frame)?;
        topic_of(&frame)?;
        let tx = frame.header("transaction").unwrap_or_default().to_string();
        self.buffer(&tx, Pending::Send(frame))
    }

    async fn topic(&self, topic: &str, msg: TopicMsg) -> Result<TopicReply, Fault> {
        self.ask(topic, msg, DESTINATION_UNAVAILABLE).await
    }

    /// Asks the entity `name` of `M`'s kind; a failure to reach it ends the session.
    async fn ask<M: KindMessage>(
        &self,
        name: &str,
        msg: M,
        failure: &'static str,
    ) -> Result<M::Reply, Fault> {
        let key = ActorKey::new(M::KIND, name);
        self.shared.directory.call(&key, msg).await.map_err(|e| fault(failure, e.to_string()))
    }

    fn subscription_id(&self, frame: &Frame) -> Result<String, Fault> {
        match (frame.header("id"), self.version) {
            (Some(id), _) => Ok(id.to_string()),
            (None, Version::V1_0) => Ok(frame.header("destination").unwrap_or_default().to_string()),
            (None, _) => Err(fault(MISSING_HEADER, format!("{} must include an 'id' header", frame.command))),
        }
    }

    async fn subscribe(&mut self, frame: &Frame) -> Result<(), Fault> {
        let id = self.subscription_id(frame)?;
        if self.subscriptions.contains_key(&id) {
            return Err(fault(
                "Duplicated subscription identifier",
                format!("A subscription identified by '{id}' already exists"),
            ));
        }
        let most = self.shared.settings.max_subscriptions;
        if self.subscriptions.len() >= most {
            return Err(fault(
                TOO_MANY_SUBSCRIPTIONS,
                format!(
                    "This connection holds {most} subscriptions, the most one connection may \
                     (--stomp-max-subscriptions): UNSUBSCRIBE one first."
                ),
            ));
        }
        let topic = topic_of(frame)?;
        let invalid = |name: &str, what: &str| fault(INVALID_HEADER, format!("'{name}' must be {what}"));
        let ack = match frame.header("ack").unwrap_or("auto") {
            "auto" => AckMode::Auto,
            "client" => AckMode::Client,
            "client-individual" => AckMode::ClientIndividual,
            _ => return Err(invalid("ack", "auto, client or client-individual")),
        };
        let prefetch = match frame.header("prefetch-count") {
            Some(n) => n.parse::<u32>().map_err(|_| invalid("prefetch-count", "a whole number"))?,
            None => self.shared.settings.default_prefetch,
        };
        let is_queue = topic.starts_with("queue/");
        let (group, ephemeral) = match frame.header("group") {
            _ if is_queue => (queue_group(&topic).unwrap_or_default(), false),
            Some(name) if !name.is_empty() && !name.contains('#') => (format!("{topic}#{name}"), false),
            Some(_) => return Err(invalid("group", "a name without '#'")),
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
                Err(_) => return Err(invalid("offset", "earliest, latest, a number or Unix milliseconds")),
            },
        };
        if let TopicReply::Refused(TopicRefusal::NoSuchTopic) = self.topic(&topic, TopicMsg::Info).await? {
            self.may_create(&topic).map_err(|why| fault(TOO_MANY_DESTINATIONS, why))?;
            self.topic(&topic, TopicMsg::Ensure { config: TopicConfig::default() }).await?;
        }
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
            other => return Err(fault("Subscription refused", format!("{other:?}"))),
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

    /// Counts a destination this connection is about to create, or says why it may not.
    fn may_create(&self, topic: &str) -> Result<(), String> {
        let most = self.shared.settings.max_new_destinations;
        let counted =
            self.created.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| (n < most).then_some(n + 1));
        counted.map(drop).map_err(|_| {
            format!(
                "Destination /{topic} does not exist, and this connection has created {most} destinations, the \
                 most one connection may (--stomp-max-new-destinations): use existing ones, or have an \
                 operator create it (PUT /v1/topics/{topic})."
            )
        })
    }

    async fn group(&self, group: &str, msg: GroupMsg) -> Result<GroupReply, Fault> {
        self.ask(group, msg, "Subscription unavailable").await
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

fn missing_transaction(frame: &Frame) -> Fault {
    fault(MISSING_HEADER, format!("{} must include a 'transaction' header", frame.command))
}

/// Most SENDs stored in one commit.
const MAX_BURST: usize = 256;

/// Most body bytes of one burst: it travels to its destination's node as one message, which
/// must stay well under the mesh's 16 MiB frame (`serv_cluster::remote::MAX_FRAME_BYTES`).
const MAX_BURST_BYTES: usize = 4 * 1024 * 1024;

/// A SEND outside any transaction: it may join a burst.
fn is_plain_send(frame: &Frame) -> bool {
    frame.command == Command::Send && frame.header("transaction").is_none()
}

/// An ACK outside any transaction: it may join a burst.
fn is_plain_ack(frame: &Frame) -> bool {
    frame.command == Command::Ack && frame.header("transaction").is_none()
}

/// `first` and the frames after it that have already arrived and `belong` with it (at most
/// [`MAX_BURST`] frames, and no more once their bodies reach [`MAX_BURST_BYTES`]); the first
/// frame that does not is left in `lookahead`, to be handled next.
fn gather<S: futures_util::Stream<Item = Result<Item, FrameError>> + Unpin>(
    frames: &mut S,
    first: Frame,
    lookahead: &mut Option<Result<Item, FrameError>>,
    belong: impl Fn(&Frame) -> bool,
) -> Vec<Frame> {
    let mut bytes = first.body.len();
    let mut burst = vec![first];
    while burst.len() < MAX_BURST && bytes < MAX_BURST_BYTES {
        match frames.next().now_or_never() {
            Some(Some(Ok(Item::HeartBeat))) => continue,
            Some(Some(Ok(Item::Frame(next))))
                if belong(&next) && bytes + next.body.len() <= MAX_BURST_BYTES =>
            {
                bytes += next.body.len();
                burst.push(next);
            }
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
