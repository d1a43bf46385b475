//! Publishing to a destination from any edge (a STOMP SEND, a webhook through the gateway):
//! the messages are appended to the destination's topic actor in order, in one commit, creating
//! the destination with default settings on first use; the answer comes once they are durable.
//! A destination at its max length with overflow `reject-publish` refuses what would exceed it.

use serv_actors::topic::{Appended, LengthLimit, LogRecord, TopicConfig, TopicMsg, TopicRefusal, TopicReply};
use serv_actors::{ActorKey, ActorKind, Directory, DirectoryError};

/// Why messages were not stored.
#[derive(Debug)]
pub enum PublishError {
    /// The destination's owner could not be reached (or failed): nothing is acknowledged.
    Unreachable(DirectoryError),
    /// The destination is full: the first `stored.len()` messages were stored (as told), the
    /// next one would have exceeded `limit`, and neither it nor any after it was stored.
    Full { stored: Vec<Appended>, limit: LengthLimit },
    /// The destination answered something other than the offsets.
    Refused(String),
    /// The destination does not exist and the publisher may not create one (why).
    NotCreated(String),
}

impl std::fmt::Display for PublishError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PublishError::Unreachable(error) => write!(f, "{error}"),
            PublishError::Full { limit, .. } => write!(f, "the destination is full: {limit}"),
            PublishError::Refused(reason) => write!(f, "not stored: {reason}"),
            PublishError::NotCreated(reason) => write!(f, "{reason}"),
        }
    }
}

/// Appends `batch` (each message with its optional dedup id) to `topic` (`queue/NAME` or
/// `topic/NAME`, already checked): what became of each message (stored, a duplicate, or sent to
/// the dead-letter topic by the destination's transform). A destination that does not exist yet
/// is created if `may_create` allows it.
pub async fn append(
    directory: &Directory,
    topic: &str,
    batch: Vec<(LogRecord, Option<String>)>,
    may_create: impl FnOnce() -> Result<(), String>,
) -> Result<Vec<Appended>, PublishError> {
    let key = ActorKey::new(ActorKind::Topic, topic);
    let ask = |msg| async { directory.call(&key, msg).await.map_err(PublishError::Unreachable) };
    let mut reply = ask(TopicMsg::AppendMany(batch.clone())).await?;
    if matches!(reply, TopicReply::Refused(TopicRefusal::NoSuchTopic)) {
        may_create().map_err(PublishError::NotCreated)?;
        ask(TopicMsg::Ensure { config: TopicConfig::default() }).await?;
        reply = ask(TopicMsg::AppendMany(batch)).await?;
    }
    match reply {
        TopicReply::AppendedMany(offsets) => Ok(offsets),
        TopicReply::Full { stored, limit } => Err(PublishError::Full { stored, limit }),
        other => Err(PublishError::Refused(format!("{other:?}"))),
    }
}

/// What a producer is told when `topic` is full, whichever edge it came through.
pub fn full_detail(topic: &str, limit: &LengthLimit) -> String {
    format!(
        "Destination /{topic} is full: the message would take it past its {limit} (overflow \
         reject-publish), so it was not stored. There is room again once consumers take messages, \
         or once an operator raises the limit (PUT /v1/topics/{topic})."
    )
}
