//! A consumer group's part in its destination's max length. While the topic has one, the group
//! reports its backlog to the topic whenever that changes, before it answers its members (so a
//! message a consumer was handed is never still counted when the consumer publishes again).
//! Under `drop-head`, when the topic finds the group too long, the group moves its own oldest
//! waiting messages to the dead-letter topic (`dlq-reason: maxlen`): those that came back first
//! (NACKed, timed out, left by a member), then those never handed out. The group drops, not the
//! topic, because only the group knows which messages are in flight: those are never dropped.
//! They are acknowledged, or come back and count again, redelivered with their count and
//! `max_deliveries` as ever.
//!
//! Groups of plain subscriptions (`TOPIC#~...`, a SUBSCRIBE to a topic without a `group`) end
//! with their connection and do not count.

use super::{Group, GroupMsg, GroupReply, Outcome, ask_topic};
use crate::topic::{
    Backlog, Excess, MAXLEN_REASON, Overflow, TopicMsg, TopicReply, count_dropped, queue_group,
};
use crate::{ActorKey, ActorKind, Directory, EntityContext, EntityError};

/// Most messages one check drops (another check follows at once for the rest), so that members
/// are not kept waiting behind a long drop.
const MAX_DROPS_PER_CHECK: usize = 256;
/// Messages read from the topic at a time while dropping.
const DROP_READ: usize = 100;
/// About this many bytes read from the topic at a time while dropping.
const DROP_READ_BYTES: u64 = 4 * 1024 * 1024;

impl Group {
    /// Whether this group counts towards its topic's length.
    fn counts(&self) -> bool {
        !self.name.rsplit_once('#').is_some_and(|(_, group)| group.starts_with('~'))
    }

    /// What the group holds back: where it reads, and what waits below that.
    fn backlog(&self) -> Backlog {
        let waiting = self.state.waiting();
        Backlog {
            cursor: self.state.cursor(),
            ready: waiting.len() as u64,
            ready_bytes: waiting.iter().map(|(_, body_bytes)| body_bytes).sum(),
        }
    }

    /// Reports the backlog to the topic, while it has length limits, if it changed since the
    /// last report (or `always`); then drops what `drop-head` finds too many.
    pub(super) async fn check_length(
        &mut self,
        always: bool,
        directory: &Directory,
        ctx: &EntityContext,
    ) -> Result<(), EntityError> {
        let Some(limits) = self.limits.clone().filter(|_| self.counts() && self.meta.is_some()) else {
            return Ok(());
        };
        let mut dropped = 0;
        loop {
            let backlog = self.backlog();
            if !always && self.reported == Some(backlog) {
                return Ok(());
            }
            let report = TopicMsg::ReportBacklog { group: self.name.clone(), backlog };
            let TopicReply::Length(length) = ask_topic(directory, &self.topic, report).await? else {
                // No limit any more (or no topic): nothing to report until one is set.
                (self.limits, self.reported) = (None, None);
                return Ok(());
            };
            self.reported = Some(backlog);
            let Some(excess) = Excess::of(&limits, length) else { return Ok(()) };
            if dropped >= MAX_DROPS_PER_CHECK {
                let (directory, key) =
                    (directory.clone(), ActorKey::new(ActorKind::Group, self.name.as_str()));
                tokio::spawn(async move { directory.send(&key, GroupMsg::CheckLength).await });
                return Ok(());
            }
            match self.drop_head(excess, MAX_DROPS_PER_CHECK - dropped, directory, ctx).await? {
                // Nothing durable to drop yet: the topic asks again once its appends are.
                0 => return Ok(()),
                now => dropped += now,
            }
        }
    }

    /// `GroupMsg::CheckLength`: checks with the topic's current limits. A queue's group that no
    /// one subscribed to yet is made first (under `drop-head`), at the queue's oldest message.
    pub(super) async fn check_length_now(&mut self, directory: &Directory, ctx: &EntityContext) -> Outcome {
        let Some(info) = self.topic_info(directory).await? else { return Ok(GroupReply::Done) };
        self.limits = info.config.length_limits();
        if self.meta.is_none() {
            let drops = self.limits.as_ref().is_some_and(|limits| limits.overflow == Overflow::DropHead);
            if !drops || queue_group(&self.topic).as_deref() != Some(self.name.as_str()) {
                return Ok(GroupReply::Done);
            }
            self.create(info.first_offset, ctx).await?;
        }
        self.check_length(true, directory, ctx).await?;
        Ok(GroupReply::Done)
    }

    /// The group is deleted: its topic stops counting it (best effort: a topic that does not
    /// hear of it keeps its last view).
    pub(super) async fn forget_length(&mut self, directory: &Directory) -> Result<(), EntityError> {
        self.reported = None;
        if self.counts() {
            let forget = TopicMsg::ForgetGroup { group: self.name.clone() };
            let _ = directory.send(&ActorKey::new(ActorKind::Topic, self.topic.as_str()), forget).await;
        }
        Ok(())
    }

    /// Moves up to `most` of the oldest waiting messages to the dead-letter topic until `excess`
    /// is made up: those that came back first, then those never handed out; never one in
    /// flight. How many it moved.
    async fn drop_head(
        &mut self,
        mut excess: Excess,
        most: usize,
        directory: &Directory,
        ctx: &EntityContext,
    ) -> Result<usize, EntityError> {
        let mut came_back = Vec::new();
        for (offset, body_bytes) in self.state.waiting() {
            if excess.is_met() || came_back.len() >= most {
                break;
            }
            self.dead_letter(directory, offset, MAXLEN_REASON.to_string()).await?;
            self.state.drop_waiting(offset);
            excess.take(body_bytes);
            came_back.push(offset);
        }
        let mut dropped = came_back.len();
        while !excess.is_met() && dropped < most {
            let from = self.state.cursor();
            let read =
                TopicMsg::Read { from, max: (most - dropped).min(DROP_READ), max_bytes: DROP_READ_BYTES };
            let TopicReply::Records { records, .. } = ask_topic(directory, &self.topic, read).await? else {
                break;
            };
            if records.is_empty() {
                break;
            }
            for (offset, record) in records {
                if excess.is_met() {
                    break;
                }
                excess.take(record.body.len() as u64);
                self.dead_letter_record(directory, record, MAXLEN_REASON.to_string()).await?;
                self.state.pass(offset);
                dropped += 1;
            }
        }
        if dropped > 0 {
            (0..dropped).for_each(|_| count_dropped());
            let mut changes = ctx.storage.write_set();
            self.persist(&mut changes, came_back)?;
            ctx.storage.commit(changes).await?;
        }
        Ok(dropped)
    }
}
