//! The dead-letter path of a group: a message refused `max_deliveries` times, left
//! unacknowledged that often, or dropped from the head of a full destination moves to the
//! topic's dead-letter topic (`TOPIC.dlq`), with headers naming its origin and the reason.

use super::{Group, ask_topic};
use crate::topic::{LogRecord, TopicConfig, TopicMsg, TopicReply};
use crate::{Directory, EntityError};

impl Group {
    /// The message at `offset` of the topic, if it still holds it.
    pub(super) async fn record(
        &self,
        directory: &Directory,
        offset: u64,
    ) -> Result<Option<LogRecord>, EntityError> {
        match ask_topic(directory, &self.topic, TopicMsg::Read { from: offset, max: 1, max_bytes: u64::MAX })
            .await?
        {
            TopicReply::Records { records, .. } => {
                Ok(records.into_iter().find(|(o, _)| *o == offset).map(|(_, record)| record))
            }
            _ => Ok(None),
        }
    }

    /// Appends message `offset` to the dead-letter topic, with where it came from and why.
    pub(super) async fn dead_letter(
        &mut self,
        directory: &Directory,
        offset: u64,
        reason: String,
    ) -> Result<(), EntityError> {
        let Some(record) = self.record(directory, offset).await? else { return Ok(()) };
        self.dead_letter_record(directory, record, reason).await
    }

    /// Appends `record` to the dead-letter topic, with where it came from and why.
    pub(super) async fn dead_letter_record(
        &mut self,
        directory: &Directory,
        mut record: LogRecord,
        reason: String,
    ) -> Result<(), EntityError> {
        let dlq = crate::topic::dead_letter_topic(&self.topic);
        ask_topic(directory, &dlq, TopicMsg::Ensure { config: TopicConfig::default() }).await?;
        crate::topic::mark_dead(&mut record, &self.topic, reason);
        match ask_topic(directory, &dlq, TopicMsg::Append { record, dedup_id: None }).await? {
            TopicReply::Appended { .. } => {
                self.dead_lettered += 1;
                crate::topic::count_dead_lettered();
                Ok(())
            }
            other => Err(EntityError::new(format!("dead-letter topic {dlq} refused a message: {other:?}"))),
        }
    }
}
