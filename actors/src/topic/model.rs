//! What a topic stores and what can be asked of it.

use serde::{Deserialize, Serialize};
use serv_storage::codec::{self, CodecError};
use serv_storage::{Record, TableDef};

use crate::{ActorKind, KindMessage};

/// Longest destination name after `queue/` or `topic/`.
pub const MAX_DESTINATION_NAME: usize = 200;

/// A destination's topic name (`queue/orders`, `topic/prices`), checked.
pub fn destination(name: &str) -> Result<&str, String> {
    let valid = name.split_once('/').is_some_and(|(kind, rest)| {
        matches!(kind, "queue" | "topic")
            && (1..=MAX_DESTINATION_NAME).contains(&rest.len())
            && rest.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    });
    if valid {
        Ok(name)
    } else {
        Err(format!(
            "destination {name:?} must be queue/NAME or topic/NAME, NAME 1 to {MAX_DESTINATION_NAME} characters of A-Z a-z 0-9 . _ -"
        ))
    }
}

/// Per-destination settings (the `/v1/topics/NAME` admin API sets them).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicConfig {
    /// Most messages kept; older ones are dropped first.
    pub retention_count: u64,
    /// Most message bytes (bodies and headers) kept.
    pub retention_bytes: u64,
    /// Oldest message kept, in milliseconds.
    pub retention_age_ms: u64,
    /// Deliveries of one message before it goes to the dead-letter topic.
    pub max_deliveries: u32,
    /// How long a `dedup-id` is remembered.
    pub dedup_window_ms: u64,
    /// The WASM module whose `serv_transform` rewrites each published message's body; a message
    /// it refuses (or fails on) goes to the dead-letter topic instead.
    pub transform: Option<String>,
    /// Most messages ready in any one consumer group (see [`Length`]); none: no limit.
    pub max_length: Option<u64>,
    /// Most body bytes of the messages ready in any one consumer group; none: no limit.
    pub max_length_bytes: Option<u64>,
    /// What a full destination does with the next message.
    pub overflow: Overflow,
}

/// Largest `max_length` a destination takes, in messages.
pub const MAX_LENGTH_LIMIT_MESSAGES: u64 = 1_000_000_000;
/// Largest `max_length_bytes` a destination takes, in bytes (1 TiB).
pub const MAX_LENGTH_LIMIT_BYTES: u64 = 1 << 40;

/// What a destination at its max length does with a new message (RabbitMQ's `x-overflow`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Overflow {
    /// The producer is refused and nothing is stored (a STOMP ERROR, an HTTP 503).
    #[default]
    RejectPublish,
    /// The message is stored and the oldest ready messages move to the dead-letter topic
    /// (`dlq-reason: maxlen`) to make room.
    DropHead,
}

/// A destination's length limits, when it has one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LengthLimits {
    pub max_length: Option<u64>,
    pub max_length_bytes: Option<u64>,
    pub overflow: Overflow,
}

impl TopicConfig {
    /// The length limits, if a max length (in messages or bytes) is set.
    pub fn length_limits(&self) -> Option<LengthLimits> {
        (self.max_length.is_some() || self.max_length_bytes.is_some()).then_some(LengthLimits {
            max_length: self.max_length,
            max_length_bytes: self.max_length_bytes,
            overflow: self.overflow,
        })
    }
}

/// How long a destination is: the messages ready in its fullest consumer group (stored, not
/// acknowledged, not in flight to a subscriber) and their body bytes. A queue counts its
/// subscribers' group (before anyone subscribed: every message it holds); a topic counts each
/// consumer group (`group` subscriptions), not plain subscriptions, and nothing without one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Length {
    pub messages: u64,
    pub bytes: u64,
}

/// The limit a destination's length reached, with its value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LengthLimit {
    Messages(u64),
    Bytes(u64),
}

impl std::fmt::Display for LengthLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LengthLimit::Messages(max) => write!(f, "max_length of {max} messages"),
            LengthLimit::Bytes(max) => write!(f, "max_length_bytes of {max} body bytes"),
        }
    }
}

impl Default for TopicConfig {
    fn default() -> Self {
        Self {
            retention_count: 1_000_000,
            retention_bytes: 1024 * 1024 * 1024,
            retention_age_ms: 7 * 24 * 3600 * 1000,
            max_deliveries: 5,
            dedup_window_ms: 10 * 60 * 1000,
            transform: None,
            max_length: None,
            max_length_bytes: None,
            overflow: Overflow::RejectPublish,
        }
    }
}

/// A topic's durable description and log bounds (the topic actor is its only writer).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TopicMeta {
    pub created_ms: u64,
    pub config: TopicConfig,
    /// Offset of the oldest message kept.
    pub first_offset: u64,
    /// Offset the next message gets.
    pub next_offset: u64,
    /// Bytes of the messages kept.
    pub bytes: u64,
    /// Body bytes through the log, for lengths in bytes; `None` in a topic stored before length
    /// limits, until one is set (then its log is counted once).
    pub body_bytes: Option<BodyTally>,
}

/// Running totals of the log's body bytes: the body bytes before offset `o` of the log, for
/// any `o` from the first offset kept, are `dropped` plus those of the messages kept below `o`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BodyTally {
    /// Body bytes of every message appended (since counting began).
    pub appended: u64,
    /// Of those, the body bytes of the messages dropped from the head (retention, requeues).
    pub dropped: u64,
}

impl Record for TopicMeta {
    const FORMAT: u8 = 3;

    fn upgrade(format: u8, body: &[u8]) -> Option<Result<Self, CodecError>> {
        match format {
            1 => Some(codec::decode::<prev::V1>(body).map(Into::into)),
            2 => Some(codec::decode::<prev::V2>(body).map(Into::into)),
            _ => None,
        }
    }
}

/// Formats 1 and 2, before length limits (format 2 added `transform` to the configuration).
mod prev {
    use serde::Deserialize;

    /// The settings of format 1, which format 2 follows with `transform`.
    #[derive(Deserialize)]
    pub struct Settings {
        retention_count: u64,
        retention_bytes: u64,
        retention_age_ms: u64,
        max_deliveries: u32,
        dedup_window_ms: u64,
    }

    #[derive(Deserialize)]
    pub struct TopicMeta<C> {
        created_ms: u64,
        config: C,
        first_offset: u64,
        next_offset: u64,
        bytes: u64,
    }

    /// Format 1.
    pub type V1 = TopicMeta<Settings>;
    /// Format 2 (the codec writes a pair as its two parts in turn, as it writes a struct).
    pub type V2 = TopicMeta<(Settings, Option<String>)>;

    impl<C> TopicMeta<C> {
        fn upgraded(self, settings: impl FnOnce(C) -> (Settings, Option<String>)) -> super::TopicMeta {
            let (s, transform) = settings(self.config);
            let config = super::TopicConfig {
                retention_count: s.retention_count,
                retention_bytes: s.retention_bytes,
                retention_age_ms: s.retention_age_ms,
                max_deliveries: s.max_deliveries,
                dedup_window_ms: s.dedup_window_ms,
                transform,
                ..super::TopicConfig::default()
            };
            let TopicMeta { created_ms, first_offset, next_offset, bytes, .. } = self;
            super::TopicMeta { created_ms, config, first_offset, next_offset, bytes, body_bytes: None }
        }
    }

    impl From<V1> for super::TopicMeta {
        fn from(old: V1) -> Self {
            old.upgraded(|settings| (settings, None))
        }
    }

    impl From<V2> for super::TopicMeta {
        fn from(old: V2) -> Self {
            old.upgraded(|settings| settings)
        }
    }
}

/// One message of a topic's log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogRecord {
    /// The headers the producer sent that travel with the message.
    pub headers: Vec<(String, String)>,
    #[serde(with = "crate::serde_bytes")]
    pub body: Vec<u8>,
    pub published_ms: u64,
    /// Not delivered before this time (Unix milliseconds), for delayed messages.
    pub deliver_at_ms: Option<u64>,
}

impl LogRecord {
    /// Bytes the message counts for retention.
    pub fn size(&self) -> u64 {
        let headers: usize = self.headers.iter().map(|(k, v)| k.len() + v.len()).sum();
        (headers + self.body.len()) as u64
    }
}

impl Record for LogRecord {
    const FORMAT: u8 = 1;
}

/// A remembered `dedup-id`: the offset its message got and when.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DedupRecord {
    pub offset: u64,
    pub seen_ms: u64,
}

impl Record for DedupRecord {
    const FORMAT: u8 = 1;
}

/// Topics by name.
pub const TOPICS: TableDef<String, TopicMeta> = TableDef::new("topics");
/// Messages by (topic, offset).
pub const LOG: TableDef<(String, u64), LogRecord> = TableDef::new("topic_log");
/// Remembered dedup ids by (topic, dedup id).
pub const DEDUP: TableDef<(String, String), DedupRecord> = TableDef::new("topic_dedup");

/// What can be asked of a topic.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum TopicMsg {
    /// Creates the topic with `config` if it does not exist (destinations are created on first
    /// use); answers its info either way.
    Ensure {
        config: TopicConfig,
    },
    /// Replaces the configuration (retention applies at once).
    Configure(TopicConfig),
    /// Appends a message; answered once it is durable.
    Append {
        record: LogRecord,
        dedup_id: Option<String>,
    },
    /// Appends messages in order in one commit (a producer's burst); answered once durable.
    /// This is the producers' path: the topic's transform, if it has one, runs on each message
    /// (`Append` stores its message as given: the runtime's own moves use it).
    AppendMany(Vec<(LogRecord, Option<String>)>),
    /// Reads up to `max` messages (and about `max_bytes`) from `from` on.
    Read {
        from: u64,
        max: usize,
        max_bytes: u64,
    },
    /// The first offset published at or after `unix_ms` (replay by time).
    OffsetAt {
        unix_ms: u64,
    },
    Info,
    /// Asks to be told (`GroupMsg::Wake`) once the next message is durable.
    Watch {
        group: String,
    },
    /// Deletes the topic and its log.
    Delete,
    /// Drops every message below `offset` (those requeued from a dead-letter topic); answered
    /// with the topic's info once durable.
    DropBefore {
        offset: u64,
    },
    /// A consumer group's backlog, sent by the group whenever it changes while the topic has a
    /// length limit; answered with the group's length, or `Done` when the topic has no limit.
    ReportBacklog {
        group: String,
        backlog: Backlog,
    },
    /// The group is gone: it no longer counts towards the length.
    ForgetGroup {
        group: String,
    },
}

/// What a consumer group reports of itself for its destination's length.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backlog {
    /// The next offset it never handed out.
    pub cursor: u64,
    /// Messages below the cursor it holds ready (due again, or delayed).
    pub ready: u64,
    /// Their body bytes.
    pub ready_bytes: u64,
}

impl KindMessage for TopicMsg {
    const KIND: ActorKind = ActorKind::Topic;
    type Reply = TopicReply;
}

/// A topic's state as reported.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TopicInfo {
    pub name: String,
    pub config: TopicConfig,
    pub first_offset: u64,
    pub next_offset: u64,
    pub bytes: u64,
    pub created_ms: u64,
    /// The current length, while a max length is set (`null` otherwise: not counted).
    pub length: Option<Length>,
}

/// What became of one published message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Appended {
    /// Its offset: in the topic, or in the dead-letter topic when `dead_letter` is set.
    pub offset: u64,
    /// Its dedup id was seen within the window: nothing was stored, `offset` is the original's.
    pub duplicate: bool,
    /// The topic's transform refused or failed on it, so it went to the dead-letter topic.
    pub dead_letter: Option<DeadLettered>,
}

/// Where a message the transform refused went, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLettered {
    pub topic: String,
    pub reason: String,
}

/// The dead-letter topic of `topic`.
pub fn dead_letter_topic(topic: &str) -> String {
    format!("{topic}.dlq")
}

/// Messages this process moved to a dead-letter topic (exhausted deliveries, or refused by a
/// transform), for `/metrics`.
static DEAD_LETTERED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Counts a message moved to a dead-letter topic.
pub(crate) fn count_dead_lettered() {
    DEAD_LETTERED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

/// Messages this process has moved to dead-letter topics since it started.
pub fn dead_lettered_total() -> u64 {
    DEAD_LETTERED.load(std::sync::atomic::Ordering::Relaxed)
}

/// Messages this process moved to a dead-letter topic to keep a destination within its max
/// length (overflow `drop-head`), for `/metrics`.
static DROPPED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Counts a message dropped from a full destination's head.
pub(crate) fn count_dropped() {
    DROPPED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

/// Messages this process has dropped from full destinations' heads since it started.
pub fn dropped_total() -> u64 {
    DROPPED.load(std::sync::atomic::Ordering::Relaxed)
}

/// The reason a message dropped from a full destination's head carries in `dlq-reason`.
pub const MAXLEN_REASON: &str = "maxlen";

/// The consumer group of a queue's subscribers.
pub fn queue_group(topic: &str) -> Option<String> {
    topic.starts_with("queue/").then(|| format!("{topic}#queue"))
}

/// Headers a dead-lettered message gains.
pub const DLQ_ORIGIN_HEADER: &str = "dlq-original-destination";
pub const DLQ_REASON_HEADER: &str = "dlq-reason";

/// Marks `record` as dead-lettered from `topic`, for `reason`.
pub fn mark_dead(record: &mut LogRecord, topic: &str, reason: String) {
    record.headers.retain(|(name, _)| name != DLQ_ORIGIN_HEADER && name != DLQ_REASON_HEADER);
    record.headers.push((DLQ_ORIGIN_HEADER.into(), format!("/{topic}")));
    record.headers.push((DLQ_REASON_HEADER.into(), reason));
}

/// Why a topic refused a request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum TopicRefusal {
    #[error("no such destination")]
    NoSuchTopic,
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
}

/// What a topic answers.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum TopicReply {
    Done,
    Info(TopicInfo),
    /// The message's offset; `duplicate` when its dedup id was seen within the window (then
    /// nothing was stored and the offset is the original's).
    Appended {
        offset: u64,
        duplicate: bool,
    },
    /// What became of each message, in the order given.
    AppendedMany(Vec<Appended>),
    /// Messages in offset order, and the offset to read from next.
    Records {
        records: Vec<(u64, LogRecord)>,
        next: u64,
    },
    Offset(u64),
    Refused(TopicRefusal),
    /// A consumer group's length, as the topic counts it.
    Length(Length),
    /// The destination is full (overflow `reject-publish`): the first `stored.len()` messages
    /// were stored as told, the one after them would have exceeded `limit`, and neither it nor
    /// any after it was stored.
    Full {
        stored: Vec<Appended>,
        limit: LengthLimit,
    },
}
