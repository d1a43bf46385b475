//! Publishing to a destination from any edge (a STOMP SEND, a webhook through the gateway):
//! the messages are appended to the destination's topic actor in order, in one commit, creating
//! the destination with default settings on first use; the answer comes once they are durable.

use serv_actors::topic::{Appended, LogRecord, TopicConfig, TopicMsg, TopicRefusal, TopicReply};
use serv_actors::{ActorKey, ActorKind, Directory, DirectoryError};

/// Why messages were not stored.
#[derive(Debug)]
pub enum PublishError {
    /// The destination's owner could not be reached (or failed): nothing is acknowledged.
    Unreachable(DirectoryError),
    /// The destination answered something other than the offsets.
    Refused(String),
}

impl std::fmt::Display for PublishError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PublishError::Unreachable(error) => write!(f, "{error}"),
            PublishError::Refused(reason) => write!(f, "not stored: {reason}"),
        }
    }
}

/// Appends `batch` (each message with its optional dedup id) to `topic` (`queue/NAME` or
/// `topic/NAME`, already checked): what became of each message (stored, a duplicate, or sent to
/// the dead-letter topic by the destination's transform).
pub async fn append(
    directory: &Directory,
    topic: &str,
    batch: Vec<(LogRecord, Option<String>)>,
) -> Result<Vec<Appended>, PublishError> {
    let key = ActorKey::new(ActorKind::Topic, topic);
    let ask = |msg| async { directory.call(&key, msg).await.map_err(PublishError::Unreachable) };
    let mut reply = ask(TopicMsg::AppendMany(batch.clone())).await?;
    if matches!(reply, TopicReply::Refused(TopicRefusal::NoSuchTopic)) {
        ask(TopicMsg::Ensure { config: TopicConfig::default() }).await?;
        reply = ask(TopicMsg::AppendMany(batch)).await?;
    }
    match reply {
        TopicReply::AppendedMany(offsets) => Ok(offsets),
        other => Err(PublishError::Refused(format!("{other:?}"))),
    }
}
