//! Fetches that found nothing wait in their group ("parked") until the topic has news, their
//! wait is over, or the group is deleted.

use std::time::Duration;

use tokio::sync::oneshot;

use super::{Group, GroupMsg, GroupReply};
use crate::topic::TopicMsg;
use crate::{ActorKey, ActorKind, Directory, EntityContext, EntityError, now_ms};

impl Group {
    /// Holds a fetch that found nothing: it is answered by [`Group::wake`] when the topic has
    /// news (it is asked to say so) or at the latest after `wait_ms`. A timer also wakes the
    /// group at least every [`RECHECK`], in case the topic forgot its watchers (passivation),
    /// and when a delayed or in-flight message falls due.
    pub(super) fn park(
        &mut self,
        member: String,
        max: usize,
        wait_ms: u64,
        directory: &Directory,
        ctx: &EntityContext,
    ) {
        let (answer, answered) = oneshot::channel();
        let until_ms = now_ms() + wait_ms;
        self.parked.push(Parked { member, max, until_ms, answer });
        ctx.reply_later(async move { answered.await.unwrap_or(GroupReply::Messages(Vec::new())) });
        let (directory, group, topic) = (directory.clone(), self.name.clone(), self.topic.clone());
        let watch = TopicMsg::Watch { group: group.clone() };
        let due =
            self.state.next_due().map_or(RECHECK, |at| Duration::from_millis(at.saturating_sub(now_ms())));
        let sleep = due.min(RECHECK).min(Duration::from_millis(wait_ms));
        tokio::spawn(async move {
            let _ = directory.send(&ActorKey::new(ActorKind::Topic, topic.as_str()), watch).await;
            tokio::time::sleep(sleep).await;
            let _ = directory.send(&ActorKey::new(ActorKind::Group, group.as_str()), GroupMsg::Wake).await;
        });
    }

    /// Answers the parked fetches that now have messages, or whose wait is over.
    pub(super) async fn wake(
        &mut self,
        directory: &Directory,
        ctx: &EntityContext,
    ) -> Result<(), EntityError> {
        let mut still = Vec::new();
        for parked in std::mem::take(&mut self.parked) {
            if parked.answer.is_closed() {
                continue; // the fetcher gave up (timed out or went away)
            }
            let (messages, staged) = match self.hand_out(&parked.member, parked.max, directory, ctx).await? {
                Ok(handed) => handed,
                Err(refusal) => {
                    let _ = parked.answer.send(GroupReply::Refused(refusal));
                    continue;
                }
            };
            if messages.is_empty() && now_ms() < parked.until_ms {
                still.push(parked);
                continue;
            }
            tokio::spawn(async move {
                let durable = match staged {
                    Some(staged) => staged.await.is_ok(),
                    None => true,
                };
                // Not durable: the messages stay outstanding and come again.
                let answer = GroupReply::Messages(if durable { messages } else { Vec::new() });
                let _ = parked.answer.send(answer);
            });
        }
        self.parked = still;
        if !self.parked.is_empty() {
            // Keep watching until every parked fetch is answered.
            let (directory, group, topic) = (directory.clone(), self.name.clone(), self.topic.clone());
            let watch = TopicMsg::Watch { group: group.clone() };
            tokio::spawn(async move {
                let _ = directory.send(&ActorKey::new(ActorKind::Topic, topic.as_str()), watch).await;
                tokio::time::sleep(RECHECK).await;
                let _ =
                    directory.send(&ActorKey::new(ActorKind::Group, group.as_str()), GroupMsg::Wake).await;
            });
        }
        Ok(())
    }
}

/// Longest a parked fetch goes without a re-check.
pub(super) const RECHECK: Duration = Duration::from_secs(1);

/// A fetch waiting for messages.
pub(super) struct Parked {
    pub(super) member: String,
    max: usize,
    until_ms: u64,
    pub(super) answer: oneshot::Sender<GroupReply>,
}
