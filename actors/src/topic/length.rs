//! A destination's length, for its max-length limits (`max_length`, `max_length_bytes`): the
//! messages ready in its fullest consumer group, and what the topic does when that is too many.
//!
//! The topic owns the log; its consumer groups own what they handed out. They run apart (often on
//! other nodes), and a topic never waits on a group (groups wait on their topic), so each group
//! that counts reports its backlog to the topic whenever that changes (`ReportBacklog`: its
//! cursor, and the messages below it that are ready again), before it answers its consumers. The
//! topic keeps each group's latest report durably, as a [`GroupView`], and counts the group's
//! length from it at any time: the messages from the cursor to the log's end (every append adds
//! to every group) plus the ready ones below the cursor. A queue's group counts before it first
//! reports, from the start of the log.
//!
//! `reject-publish`: an append that would take the fullest group past a limit is refused
//! ([`Room`]). `drop-head`: the append is stored, and each group it takes past a limit is told to
//! check its length (`GroupMsg::CheckLength`) once the append is durable; the group, which alone
//! knows which of its messages are in flight, moves its oldest ready ones to the dead-letter topic.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serv_storage::{KeyPrefix, Record, Storage, TableDef, WriteSet};

use super::{
    Backlog, BodyTally, Length, LengthLimit, LengthLimits, Overflow, Topic, TopicMeta, TopicReply,
    queue_group,
};
use crate::group::GroupMsg;
use crate::{ActorKey, ActorKind, EntityContext, EntityError};

/// The latest backlog a consumer group reported, as its topic keeps it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupView {
    /// The next offset the group never handed out.
    pub cursor: u64,
    /// Body bytes of the log before `cursor`, in the terms of the topic's [`BodyTally`].
    pub cursor_body_bytes: u64,
    /// Messages below the cursor the group holds ready.
    pub ready: u64,
    /// Their body bytes.
    pub ready_bytes: u64,
}

impl Record for GroupView {
    const FORMAT: u8 = 1;
}

/// Consumer groups' views by (topic, group).
pub const BACKLOGS: TableDef<(String, String), GroupView> = TableDef::new("topic_backlogs");

/// The log as a length counts it: its bounds and body-byte totals.
#[derive(Clone, Copy, Debug)]
pub(super) struct LogBounds {
    pub first: u64,
    pub next: u64,
    pub tally: BodyTally,
}

impl LogBounds {
    /// The bounds of `meta`'s log, once its body bytes are counted.
    pub(super) fn of(meta: &TopicMeta) -> Option<Self> {
        Some(Self { first: meta.first_offset, next: meta.next_offset, tally: meta.body_bytes? })
    }
}

impl GroupView {
    /// A group reading from the start of the log with nothing ready below it: a queue's group
    /// before it ever reported (no one subscribed yet, so every message waits).
    pub(super) fn at_start(log: &LogBounds) -> Self {
        Self { cursor: log.first, cursor_body_bytes: log.tally.dropped, ready: 0, ready_bytes: 0 }
    }

    /// The group's length over `log`.
    pub(super) fn length(&self, log: &LogBounds) -> Length {
        let from = self.cursor.clamp(log.first, log.next);
        let before = self.cursor_body_bytes.max(log.tally.dropped);
        Length {
            messages: log.next - from + self.ready,
            bytes: log.tally.appended.saturating_sub(before) + self.ready_bytes,
        }
    }
}

/// The longest of `lengths`, limit by limit (each limit is checked against its fullest group).
pub(super) fn longest(lengths: impl Iterator<Item = Length>) -> Length {
    lengths.fold(Length::default(), |a, b| Length {
        messages: a.messages.max(b.messages),
        bytes: a.bytes.max(b.bytes),
    })
}

/// What the fullest group may still take under `reject-publish`.
#[derive(Clone, Copy, Debug)]
pub(super) struct Room {
    /// Messages left, and the limit.
    messages: Option<(u64, u64)>,
    /// Body bytes left, and the limit.
    bytes: Option<(u64, u64)>,
}

impl Room {
    /// The room `limits` leave above `longest` (`None` unless they reject publishes).
    pub(super) fn left(limits: &LengthLimits, longest: Length) -> Option<Room> {
        (limits.overflow == Overflow::RejectPublish).then(|| Room {
            messages: limits.max_length.map(|max| (max.saturating_sub(longest.messages), max)),
            bytes: limits.max_length_bytes.map(|max| (max.saturating_sub(longest.bytes), max)),
        })
    }

    /// Takes room for one message of `body_bytes`, or names the limit it would exceed (and
    /// takes nothing).
    pub(super) fn take(&mut self, body_bytes: u64) -> Result<(), LengthLimit> {
        if let Some((0, max)) = self.messages {
            return Err(LengthLimit::Messages(max));
        }
        if let Some((left, max)) = self.bytes
            && body_bytes > left
        {
            return Err(LengthLimit::Bytes(max));
        }
        if let Some((left, _)) = &mut self.messages {
            *left -= 1;
        }
        if let Some((left, _)) = &mut self.bytes {
            *left -= body_bytes;
        }
        Ok(())
    }
}

/// How far a group is over its destination's `drop-head` limits: what its oldest ready
/// messages must make up for to go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Excess {
    pub messages: u64,
    pub bytes: u64,
}

impl Excess {
    /// How far `length` is over `limits`, if they drop from the head and it is.
    pub fn of(limits: &LengthLimits, length: Length) -> Option<Excess> {
        let over = |limit: Option<u64>, value: u64| limit.map_or(0, |max| value.saturating_sub(max));
        let excess = Excess {
            messages: over(limits.max_length, length.messages),
            bytes: over(limits.max_length_bytes, length.bytes),
        };
        (limits.overflow == Overflow::DropHead && !excess.is_met()).then_some(excess)
    }

    /// Nothing more needs to go.
    pub fn is_met(&self) -> bool {
        self.messages == 0 && self.bytes == 0
    }

    /// Counts a message of `body_bytes` gone.
    pub fn take(&mut self, body_bytes: u64) {
        self.messages = self.messages.saturating_sub(1);
        self.bytes = self.bytes.saturating_sub(body_bytes);
    }
}

impl Topic {
    /// The views that count over `log`: every group's that reported, and a queue's own group's
    /// before it did.
    fn counted(&self, log: &LogBounds) -> impl Iterator<Item = (String, GroupView)> + '_ {
        let unreported = queue_group(&self.name)
            .filter(|group| !self.views.contains_key(group))
            .map(|group| (group, GroupView::at_start(log)));
        self.views.iter().map(|(group, view)| (group.clone(), *view)).chain(unreported)
    }

    /// The limits and the log's bounds, while the topic has a length limit.
    fn limited(&self) -> Option<(LengthLimits, LogBounds)> {
        let meta = self.meta.as_ref()?;
        Some((meta.config.length_limits()?, LogBounds::of(meta)?))
    }

    /// The current length, while a length limit is set.
    pub(super) fn length(&self) -> Option<Length> {
        let (_, log) = self.limited()?;
        Some(longest(self.counted(&log).map(|(_, view)| view.length(&log))))
    }

    /// What the next appends may still take, under `reject-publish`.
    pub(super) fn room(&self) -> Option<Room> {
        let (limits, _) = self.limited()?;
        Room::left(&limits, self.length()?)
    }

    /// The groups a `drop-head` limit finds too long now.
    pub(super) fn overflowing(&self) -> Vec<String> {
        let Some((limits, log)) = self.limited() else { return Vec::new() };
        self.counted(&log)
            .filter(|(_, view)| Excess::of(&limits, view.length(&log)).is_some())
            .map(|(group, _)| group)
            .collect()
    }

    /// Takes the latest backlog of `group`: answers its length, or `Done` when the topic has no
    /// length limit (then the group stops reporting).
    pub(super) fn report(&mut self, group: String, backlog: Backlog, storage: &Storage) -> super::Outcome {
        let Some((_, log)) = self.limited() else {
            self.forget(group, storage)?;
            return Ok(TopicReply::Done);
        };
        let cursor = backlog.cursor.min(log.next);
        let view = GroupView {
            cursor,
            cursor_body_bytes: self.body_bytes_before(cursor, self.views.get(&group), &log)?,
            ready: backlog.ready,
            ready_bytes: backlog.ready_bytes,
        };
        if self.views.get(&group) != Some(&view) {
            let mut changes = storage.write_set();
            changes.put(&self.backlogs, &(self.name.clone(), group.clone()), &view)?;
            // Nobody waits for this write: the view in memory is the current one meanwhile, and a
            // view a crash loses is reported again by the group's next change.
            drop(storage.stage(changes)?);
            self.views.insert(group, view);
        }
        Ok(TopicReply::Length(view.length(&log)))
    }

    /// Stops counting `group`.
    pub(super) fn forget(&mut self, group: String, storage: &Storage) -> Result<(), EntityError> {
        if self.views.remove(&group).is_some() {
            let mut changes = storage.write_set();
            changes.delete(&self.backlogs, &(self.name.clone(), group));
            drop(storage.stage(changes)?);
        }
        Ok(())
    }

    /// Readies `meta` (about to be stored with `changes`) for its new configuration's length
    /// limits: counts the log's body bytes once a limit is set, or forgets the views when none
    /// is. The groups to tell to check their length once it is stored.
    pub(super) fn configure_length(
        &mut self,
        meta: &mut TopicMeta,
        changes: &mut WriteSet,
    ) -> Result<Vec<String>, EntityError> {
        if meta.config.length_limits().is_none() {
            for group in std::mem::take(&mut self.views).into_keys() {
                changes.delete(&self.backlogs, &(self.name.clone(), group));
            }
            return Ok(Vec::new());
        }
        if meta.body_bytes.is_none() {
            let appended = self.body_bytes_between(meta.first_offset, meta.next_offset)?;
            meta.body_bytes = Some(BodyTally { appended, dropped: 0 });
        }
        // Every group that may count, so that each reports at once rather than at its next change.
        let mut groups: Vec<String> = self.views.keys().cloned().collect();
        groups.extend(queue_group(&self.name));
        groups.extend(self.watchers.iter().cloned());
        groups.sort();
        groups.dedup();
        Ok(groups)
    }

    /// Forgets every view (the topic is deleted), into `changes`.
    pub(super) fn forget_all(&mut self, changes: &mut WriteSet) {
        for group in std::mem::take(&mut self.views).into_keys() {
            changes.delete(&self.backlogs, &(self.name.clone(), group));
        }
    }

    /// Loads the topic's views.
    pub(super) fn load_views(
        name: &str,
        backlogs: &serv_storage::Table<(String, String), GroupView>,
    ) -> Result<BTreeMap<String, GroupView>, EntityError> {
        let mut views = BTreeMap::new();
        for entry in backlogs.scan(&KeyPrefix::new().part(&name.to_string()), None) {
            let ((_, group), view) = entry?;
            views.insert(group, view);
        }
        Ok(views)
    }

    /// The log's body bytes before `cursor`: from the group's `known` view when it has only
    /// moved on since (the messages it just handed out), else from the nearer end of the log.
    fn body_bytes_before(
        &self,
        cursor: u64,
        known: Option<&GroupView>,
        log: &LogBounds,
    ) -> Result<u64, EntityError> {
        if cursor <= log.first {
            return Ok(log.tally.dropped);
        }
        if cursor >= log.next {
            return Ok(log.tally.appended);
        }
        if let Some(known) = known.filter(|known| known.cursor <= cursor) {
            let (from, before) = match known.cursor >= log.first {
                true => (known.cursor, known.cursor_body_bytes),
                false => (log.first, log.tally.dropped),
            };
            return Ok(before + self.body_bytes_between(from, cursor)?);
        }
        if cursor - log.first <= log.next - cursor {
            Ok(log.tally.dropped + self.body_bytes_between(log.first, cursor)?)
        } else {
            Ok(log.tally.appended.saturating_sub(self.body_bytes_between(cursor, log.next)?))
        }
    }

    /// Body bytes of the messages from `from` up to `to`, staged or stored.
    fn body_bytes_between(&self, from: u64, to: u64) -> Result<u64, EntityError> {
        let mut total = 0;
        let start = (from > 0).then(|| (self.name.clone(), from - 1));
        for entry in self.log.scan(&KeyPrefix::new().part(&self.name), start.as_ref()) {
            let ((_, offset), record) = entry?;
            if offset >= to {
                break;
            }
            if !self.pending.contains_key(&offset) {
                total += record.body.len() as u64;
            }
        }
        Ok(total + self.pending.range(from..to).map(|(_, record)| record.body.len() as u64).sum::<u64>())
    }

    /// Tells each of `groups` to check its length (a message, never a wait: groups call topics).
    pub(super) fn tell_to_check(groups: Vec<String>, ctx: &EntityContext) {
        let Some(directory) = ctx.directory() else { return };
        if groups.is_empty() {
            return;
        }
        tokio::spawn(async move {
            for group in groups {
                let _ = directory
                    .send(&ActorKey::new(ActorKind::Group, group.as_str()), GroupMsg::CheckLength)
                    .await;
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(first: u64, next: u64, appended: u64, dropped: u64) -> LogBounds {
        LogBounds { first, next, tally: BodyTally { appended, dropped } }
    }

    fn view(cursor: u64, cursor_body_bytes: u64, ready: u64, ready_bytes: u64) -> GroupView {
        GroupView { cursor, cursor_body_bytes, ready, ready_bytes }
    }

    fn limits(max_length: Option<u64>, max_length_bytes: Option<u64>, overflow: Overflow) -> LengthLimits {
        LengthLimits { max_length, max_length_bytes, overflow }
    }

    #[test]
    fn a_groups_length_is_what_it_never_took_plus_what_came_back() {
        // 10 messages of 10 bytes each, none dropped; the group took 4 and 1 came back.
        let log = log(0, 10, 100, 0);
        assert_eq!(view(4, 40, 1, 10).length(&log), Length { messages: 7, bytes: 70 });
        // In flight or acknowledged messages are not counted: all 10 taken, nothing back.
        assert_eq!(view(10, 100, 0, 0).length(&log), Length { messages: 0, bytes: 0 });
        // Before anyone subscribed, a queue's group counts every message.
        assert_eq!(GroupView::at_start(&log).length(&log), Length { messages: 10, bytes: 100 });
    }

    #[test]
    fn messages_dropped_from_the_head_leave_a_slow_groups_length() {
        // Retention dropped the first 3 (30 bytes) while the group still read from 1.
        let log = log(3, 10, 100, 30);
        assert_eq!(view(1, 10, 0, 0).length(&log), Length { messages: 7, bytes: 70 });
        assert_eq!(GroupView::at_start(&log).length(&log), Length { messages: 7, bytes: 70 });
    }

    #[test]
    fn each_limit_is_checked_against_its_fullest_group() {
        let lengths = [Length { messages: 5, bytes: 10 }, Length { messages: 2, bytes: 90 }];
        assert_eq!(longest(lengths.into_iter()), Length { messages: 5, bytes: 90 });
        assert_eq!(longest(std::iter::empty()), Length::default(), "a topic without groups is empty");
    }

    #[test]
    fn reject_publish_takes_messages_until_one_would_exceed_a_limit() {
        let reject = limits(Some(3), Some(100), Overflow::RejectPublish);
        let mut room = Room::left(&reject, Length { messages: 1, bytes: 10 }).expect("rejects");
        assert_eq!(room.take(50), Ok(()));
        assert_eq!(room.take(41), Err(LengthLimit::Bytes(100)), "61 + 41 bytes is over 100");
        assert_eq!(room.take(40), Ok(()), "a refused message takes no room");
        assert_eq!(room.take(0), Err(LengthLimit::Messages(3)));
        let full = Room::left(&reject, Length { messages: 7, bytes: 0 });
        assert_eq!(full.expect("rejects").take(0), Err(LengthLimit::Messages(3)), "already over: refused");
        assert!(Room::left(&limits(Some(3), None, Overflow::DropHead), Length::default()).is_none());
    }

    #[test]
    fn drop_head_asks_for_as_many_of_the_oldest_as_make_up_the_excess() {
        let drop = limits(Some(3), Some(100), Overflow::DropHead);
        assert_eq!(Excess::of(&drop, Length { messages: 3, bytes: 100 }), None, "at the limit is within it");
        let mut excess = Excess::of(&drop, Length { messages: 5, bytes: 130 }).expect("over");
        assert_eq!(excess, Excess { messages: 2, bytes: 30 });
        excess.take(10);
        assert!(!excess.is_met());
        excess.take(25);
        assert!(excess.is_met());
        let reject = limits(Some(3), None, Overflow::RejectPublish);
        assert_eq!(
            Excess::of(&reject, Length { messages: 9, bytes: 0 }),
            None,
            "reject-publish drops nothing"
        );
    }
}
