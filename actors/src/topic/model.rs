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
}

impl Record for TopicMeta {
    const FORMAT: u8 = 2;

    fn upgrade(format: u8, body: &[u8]) -> Option<Result<Self, CodecError>> {
        (format == 1).then(|| codec::decode::<v1::TopicMeta>(body).map(Into::into))
    }
}

/// Format 1, before transforms.
mod v1 {
    use serde::Deserialize;

    #[derive(Deserialize)]
    pub struct TopicConfig {
        retention_count: u64,
        retention_bytes: u64,
        retention_age_ms: u64,
        max_deliveries: u32,
        dedup_window_ms: u64,
    }

    #[derive(Deserialize)]
    pub struct TopicMeta {
        created_ms: u64,
        config: TopicConfig,
        first_offset: u64,
        next_offset: u64,
        bytes: u64,
    }

    impl From<TopicMeta> for super::TopicMeta {
        fn from(old: TopicMeta) -> Self {
            let c = old.config;
            let config = super::TopicConfig {
                retention_count: c.retention_count,
                retention_bytes: c.retention_bytes,
                retention_age_ms: c.retention_age_ms,
                max_deliveries: c.max_deliveries,
                dedup_window_ms: c.dedup_window_ms,
                transform: None,
            };
            let TopicMeta { created_ms, first_offset, next_offset, bytes, .. } = old;
            super::TopicMeta { created_ms, config, first_offset, next_offset, bytes }
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
}
