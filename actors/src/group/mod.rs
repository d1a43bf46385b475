//! Consumer groups: the subscriptions that share a topic's messages, each message to one member,
//! with acknowledgements, redelivery and a dead-letter path.
//!
//! A group is named `TOPIC#GROUP` (`queue/orders#queue`, `topic/prices#billing`). Its actor keeps
//! the delivery logic of [`state`] and persists what must survive a restart: the cursor, and each
//! outstanding offset's delivery count (and delay); members live in memory, so after a restart
//! what was in flight is delivered again, marked as a redelivery (a member told `NotAMember`
//! after a restart or passivation joins again). Members pull: `Fetch` hands out
//! what is ready for them within their prefetch, reading the topic's log through the directory.
//! A message refused `max_deliveries` times (the topic's setting) moves to the dead-letter topic
//! `TOPIC.dlq` with headers naming its origin and the reason. While the topic has a max length,
//! the group reports its backlog to it and, under `drop-head`, drops its own oldest ready
//! messages (see [`length`]).

mod dead_letter;
mod length;
mod parked;
pub mod state;

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serv_storage::codec::{self, CodecError};
use serv_storage::{KeyPrefix, Record, Staged, Table, TableDef, WriteSet};

use crate::inspect::Rate;
use crate::topic::{Backlog, LengthLimits, LogRecord, TopicConfig, TopicInfo, TopicMsg, TopicReply};
use crate::{ActorKey, ActorKind, Directory, Entity, EntityContext, EntityError, KindMessage, now_ms};
use parked::Parked;
use state::{AckError, GroupState, Outstanding, Refused, Slot};

/// A group's durable description.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GroupMeta {
    pub created_ms: u64,
    /// Next offset of the topic never handed out.
    pub cursor: u64,
}

impl Record for GroupMeta {
    const FORMAT: u8 = 1;
}

impl Record for Outstanding {
    const FORMAT: u8 = 2;

    fn upgrade(format: u8, body: &[u8]) -> Option<Result<Self, CodecError>> {
        // Format 1, before body sizes: the same fields without `body_bytes`.
        let v1 = |(deliveries, slot): (u32, Slot)| Outstanding { deliveries, slot, body_bytes: 0 };
        (format == 1).then(|| codec::decode::<(u32, Slot)>(body).map(v1))
    }
}

/// Groups by name (`TOPIC#GROUP`).
pub const GROUPS: TableDef<String, GroupMeta> = TableDef::new("groups");
/// Outstanding offsets by (group, offset).
pub const OUTSTANDING: TableDef<(String, u64), Outstanding> = TableDef::new("group_outstanding");

/// Where a new group starts reading its topic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StartAt {
    Earliest,
    Latest,
    Offset(u64),
    /// The first message published at or after this Unix time in milliseconds.
    Time(u64),
}

/// How a member acknowledges (STOMP's `ack` header).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AckMode {
    /// A message counts as acknowledged once handed out.
    Auto,
    /// An ACK acknowledges every message of the member up to it.
    Client,
    /// An ACK acknowledges that message only.
    ClientIndividual,
}

/// What can be asked of a group.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum GroupMsg {
    /// Adds a member (creating the group at `start` if it is new).
    Join {
        member: String,
        prefetch: u32,
        ack: AckMode,
        ack_timeout_ms: u64,
        start: StartAt,
    },
    /// Removes a member; what it held is delivered to others.
    Leave {
        member: String,
    },
    /// Hands `member` up to `max` messages that are ready for it; with nothing ready, waits up
    /// to `wait_ms` for some (a long poll) before answering with none.
    Fetch {
        member: String,
        max: usize,
        wait_ms: u64,
    },
    /// Something may be ready for waiting fetches (new messages, or a timer).
    Wake,
    Ack {
        member: String,
        offset: u64,
    },
    /// Several ACKs of one member, in order, in one commit; refused at the first that fails
    /// (the ones before it count).
    AckMany {
        member: String,
        offsets: Vec<u64>,
    },
    Nack {
        member: String,
        offset: u64,
    },
    Info,
    /// Removes the group (a subscription without a durable group, when it ends).
    Delete,
    /// The topic has a max length that this group may be past: reports the backlog and, under
    /// `drop-head`, drops the oldest ready messages beyond it (a queue's group that does not
    /// exist yet starts at the oldest message, as for its first subscriber).
    CheckLength,
}

impl KindMessage for GroupMsg {
    const KIND: ActorKind = ActorKind::Group;
    type Reply = GroupReply;
}

/// One message handed to a member.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Delivered {
    pub offset: u64,
    pub record: LogRecord,
    /// Deliveries before this one: > 0 means a redelivery.
    pub previous: u32,
}

/// A group as reported.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GroupInfo {
    pub name: String,
    pub cursor: u64,
    pub outstanding: usize,
    pub in_flight: usize,
    pub members: usize,
    pub dead_lettered: u64,
}

/// Why a group refused a request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum GroupRefusal {
    #[error("group names are TOPIC#GROUP")]
    BadName,
    #[error("no such destination")]
    NoSuchTopic,
    #[error("no such group")]
    NoSuchGroup,
    #[error("not a member of this group")]
    NotAMember,
    #[error("{0}")]
    Ack(String),
}

/// What a group answers.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum GroupReply {
    Done,
    Messages(Vec<Delivered>),
    Info(GroupInfo),
    Refused(GroupRefusal),
}

pub use crate::topic::{DLQ_ORIGIN_HEADER, DLQ_REASON_HEADER};

struct MemberInfo {
    ack: AckMode,
    ack_timeout_ms: u64,
}

/// A group's actor.
pub struct Group {
    name: String,
    topic: String,
    meta: Option<GroupMeta>,
    state: GroupState,
    members: HashMap<String, MemberInfo>,
    groups: Table<String, GroupMeta>,
    outstanding: Table<(String, u64), Outstanding>,
    dead_lettered: u64,
    parked: Vec<Parked>,
    /// The topic's next offset when last read: with the cursor and the outstanding set, the lag.
    head: u64,
    /// Deliveries per second, for the summary.
    deliveries: Rate,
    /// The topic's length limits as last seen (the group reports its backlog while it has some).
    limits: Option<LengthLimits>,
    /// The backlog last reported to the topic.
    reported: Option<Backlog>,
}

type Outcome = Result<GroupReply, EntityError>;

fn refused(refusal: GroupRefusal) -> Outcome {
    Ok(GroupReply::Refused(refusal))
}

impl Entity for Group {
    type Msg = GroupMsg;

    async fn load(ctx: &EntityContext) -> Result<Self, EntityError> {
        let storage = &ctx.storage;
        storage.commit(storage.write_set()).await?; // changes an earlier incarnation staged
        let groups = storage.table(GROUPS)?;
        let outstanding = storage.table(OUTSTANDING)?;
        let name = ctx.key.name.clone();
        let topic = name.rsplit_once('#').map(|(topic, _)| topic.to_string()).unwrap_or_default();
        let meta = groups.get(&name)?;
        let state = match &meta {
            Some(meta) => {
                let prefix = KeyPrefix::new().part(&name);
                let rows = outstanding.scan(&prefix, None);
                let restored = rows
                    .map(|row| row.map(|((_, offset), entry)| (offset, entry)))
                    .collect::<Result<_, _>>()?;
                GroupState::restored(meta.cursor, restored)
            }
            None => GroupState::default(),
        };
        Ok(Group {
            name,
            topic,
            meta,
            state,
            members: HashMap::new(),
            groups,
            outstanding,
            dead_lettered: 0,
            parked: Vec::new(),
            head: 0,
            deliveries: Rate::default(),
            limits: None,
            reported: None,
        })
    }

    async fn handle(&mut self, msg: GroupMsg, ctx: &EntityContext) -> Outcome {
        if self.topic.is_empty() {
            return refused(GroupRefusal::BadName);
        }
        let Some(directory) = ctx.directory() else {
            return Err(EntityError::dependency("the node is shutting down"));
        };
        if let GroupMsg::Join { member, prefetch, ack, ack_timeout_ms, start } = msg {
            if self.meta.is_none() {
                let Some(info) = self.topic_info(&directory).await? else {
                    return refused(GroupRefusal::NoSuchTopic);
                };
                let cursor = match start {
                    StartAt::Earliest => info.first_offset,
                    StartAt::Latest => info.next_offset,
                    StartAt::Offset(offset) => offset.clamp(info.first_offset, info.next_offset),
                    StartAt::Time(unix_ms) => {
                        match ask_topic(&directory, &self.topic, TopicMsg::OffsetAt { unix_ms }).await? {
                            TopicReply::Offset(offset) => offset,
                            _ => return refused(GroupRefusal::NoSuchTopic),
                        }
                    }
                };
                self.create(cursor, ctx).await?;
                self.limits = info.config.length_limits();
                self.check_length(false, &directory, ctx).await?;
            }
            self.state.join(&member, prefetch);
            self.members.insert(member, MemberInfo { ack, ack_timeout_ms });
            return Ok(GroupReply::Done);
        }
        if let GroupMsg::CheckLength = msg {
            return self.check_length_now(&directory, ctx).await;
        }
        if self.meta.is_none() {
            return refused(GroupRefusal::NoSuchGroup);
        }
        match msg {
            GroupMsg::Join { .. } | GroupMsg::CheckLength => unreachable!("handled above"),
            GroupMsg::Leave { member } => {
                self.state.leave(&member);
                self.members.remove(&member);
                self.parked.retain(|parked| parked.member != member);
                // What it held is ready for the others.
                self.wake(&directory, ctx).await?;
                self.check_length(false, &directory, ctx).await?;
                Ok(GroupReply::Done)
            }
            GroupMsg::Fetch { member, max, wait_ms } => {
                let (messages, staged) = match self.hand_out(&member, max, &directory, ctx).await? {
                    Ok(handed) => handed,
                    Err(refusal) => return refused(refusal),
                };
                if messages.is_empty() && wait_ms > 0 {
                    self.park(member, max, wait_ms, &directory, ctx);
                    return Ok(GroupReply::Messages(Vec::new())); // replaced by the parked answer
                }
                if let Some(staged) = staged {
                    ctx.reply_when_durable(staged);
                }
                Ok(GroupReply::Messages(messages))
            }
            GroupMsg::Wake => {
                self.wake(&directory, ctx).await?;
                Ok(GroupReply::Done)
            }
            GroupMsg::Ack { member, offset } => self.ack(member, vec![offset], &directory, ctx).await,
            GroupMsg::AckMany { member, offsets } => self.ack(member, offsets, &directory, ctx).await,
            GroupMsg::Nack { member, offset } => {
                if !self.members.contains_key(&member) {
                    return refused(GroupRefusal::NotAMember);
                }
                let config = self.topic_config(&directory).await?;
                self.limits = config.length_limits();
                match self.state.nack(&member, offset, config.max_deliveries) {
                    Ok(Refused::Redeliver) => {
                        self.wake(&directory, ctx).await?;
                        self.check_length(false, &directory, ctx).await?;
                        Ok(GroupReply::Done)
                    }
                    Ok(Refused::Dead { deliveries }) => {
                        let reason = format!("rejected after {deliveries} deliveries");
                        self.dead_letter(&directory, offset, reason).await?;
                        let mut changes = ctx.storage.write_set();
                        self.persist(&mut changes, [offset])?;
                        ctx.storage.commit(changes).await?;
                        Ok(GroupReply::Done)
                    }
                    Err(error) => refused(ack_refusal(error)),
                }
            }
            GroupMsg::Info => Ok(GroupReply::Info(GroupInfo {
                name: self.name.clone(),
                cursor: self.state.cursor(),
                outstanding: self.state.outstanding().len(),
                in_flight: self.state.in_flight(),
                members: self.state.members(),
                dead_lettered: self.dead_lettered,
            })),
            GroupMsg::Delete => {
                let mut changes = ctx.storage.write_set();
                for offset in self.state.outstanding().keys() {
                    changes.delete(&self.outstanding, &(self.name.clone(), *offset));
                }
                changes.delete(&self.groups, &self.name);
                ctx.storage.commit(changes).await?;
                self.forget_length(&directory).await?;
                self.meta = None;
                self.state = GroupState::default();
                self.members.clear();
                // Nothing answers them once the group is gone (a deleted group takes no Wake).
                for parked in self.parked.drain(..) {
                    let _ = parked.answer.send(GroupReply::Refused(GroupRefusal::NoSuchGroup));
                }
                Ok(GroupReply::Done)
            }
        }
    }

    fn can_passivate(&self) -> bool {
        // A fetch whose fetcher went away (its connection closed) holds nothing up.
        self.parked.iter().all(|parked| parked.answer.is_closed())
    }

    fn summary(&self) -> String {
        match &self.meta {
            Some(_) => format!(
                "lag={} cursor={} outstanding={} in_flight={} members={} dead_lettered={} out_rate={:.1}/s",
                self.head.saturating_sub(self.state.cursor()) + self.state.outstanding().len() as u64,
                self.state.cursor(),
                self.state.outstanding().len(),
                self.state.in_flight(),
                self.state.members(),
                self.dead_lettered,
                self.deliveries.last_per_second()
            ),
            None => crate::inspect::ABSENT.to_string(),
        }
    }
}

fn ack_refusal(error: AckError) -> GroupRefusal {
    GroupRefusal::Ack(error.to_string())
}

async fn ask_topic(directory: &Directory, topic: &str, msg: TopicMsg) -> Result<TopicReply, EntityError> {
    directory
        .call(&ActorKey::new(ActorKind::Topic, topic), msg)
        .await
        .map_err(|e| EntityError::dependency(format!("topic {topic}: {e}")))
}

impl Group {
    /// Creates the group, reading its topic from `cursor` on.
    async fn create(&mut self, cursor: u64, ctx: &EntityContext) -> Result<(), EntityError> {
        let meta = GroupMeta { created_ms: now_ms(), cursor };
        let mut changes = ctx.storage.write_set();
        changes.put(&self.groups, &self.name, &meta)?;
        ctx.storage.commit(changes).await?;
        self.state = GroupState::starting_at(cursor);
        self.meta = Some(meta);
        Ok(())
    }

    async fn topic_info(&self, directory: &Directory) -> Result<Option<TopicInfo>, EntityError> {
        match ask_topic(directory, &self.topic, TopicMsg::Info).await? {
            TopicReply::Info(info) => Ok(Some(info)),
            _ => Ok(None),
        }
    }

    async fn topic_config(&self, directory: &Directory) -> Result<TopicConfig, EntityError> {
        Ok(self.topic_info(directory).await?.map(|info| info.config).unwrap_or_default())
    }

    /// Acknowledges `offsets` of `member` in order (through each, in client mode), in one commit
    /// answered once durable; a refusal stops at the offset refused.
    async fn ack(
        &mut self,
        member: String,
        offsets: Vec<u64>,
        directory: &Directory,
        ctx: &EntityContext,
    ) -> Outcome {
        let Some(info) = self.members.get(&member) else { return refused(GroupRefusal::NotAMember) };
        let mode = info.ack;
        let mut acked = Vec::new();
        let mut refusal = None;
        for offset in offsets {
            let outcome = match mode {
                AckMode::Client => self.state.ack_through(&member, offset),
                _ => self.state.ack(&member, offset).map(|()| vec![offset]),
            };
            match outcome {
                Ok(offsets) => acked.extend(offsets),
                Err(error) => {
                    refusal = Some(ack_refusal(error));
                    break;
                }
            }
        }
        if !acked.is_empty() {
            let mut changes = ctx.storage.write_set();
            self.persist(&mut changes, acked)?;
            let staged = ctx.storage.stage(changes)?;
            // The member has room again: a fetch of its waiting for it goes on now.
            if self.state.has_room_for_a_batch(&member) {
                self.wake(directory, ctx).await?;
            }
            if refusal.is_none() {
                ctx.reply_when_durable(staged);
            } else {
                staged.await?;
            }
        }
        match refusal {
            Some(refusal) => refused(refusal),
            None => Ok(GroupReply::Done),
        }
    }

    /// Writes the group's cursor and the current state of `offsets` into `changes`.
    fn persist(
        &self,
        changes: &mut WriteSet,
        offsets: impl IntoIterator<Item = u64>,
    ) -> Result<(), EntityError> {
        for offset in offsets {
            let row = (self.name.clone(), offset);
            match self.state.outstanding().get(&offset) {
                Some(entry) => changes.put(&self.outstanding, &row, entry)?,
                None => changes.delete(&self.outstanding, &row),
            }
        }
        let meta =
            GroupMeta { cursor: self.state.cursor(), ..self.meta.clone().expect("callers check the group") };
        changes.put(&self.groups, &self.name, &meta)?;
        Ok(())
    }

    /// Hands `member` what is ready for it, and the commit that records it (to answer once
    /// durable).
    async fn hand_out(
        &mut self,
        member: &str,
        max: usize,
        directory: &Directory,
        ctx: &EntityContext,
    ) -> Result<Result<(Vec<Delivered>, Option<Staged>), GroupRefusal>, EntityError> {
        let Some(info) = self.members.get(member) else { return Ok(Err(GroupRefusal::NotAMember)) };
        let (ack, deadline) = (info.ack, now_ms() + info.ack_timeout_ms);
        let Some(topic) = self.topic_info(directory).await? else {
            return Ok(Err(GroupRefusal::NoSuchTopic));
        };
        let now = now_ms();
        self.head = topic.next_offset;
        let mut touched = Vec::new();
        // Messages the log no longer holds are skipped; exhausted ones go to the dead letters.
        self.state.skip_to(topic.first_offset);
        self.state.tick(now);
        self.limits = topic.config.length_limits();
        for (offset, deliveries) in self.state.take_exhausted(topic.config.max_deliveries) {
            let reason = format!("unacknowledged after {deliveries} deliveries");
            self.dead_letter(directory, offset, reason).await?;
            touched.push(offset);
        }
        let mut handed = self.state.redeliveries(member, max, deadline);
        let room = max.saturating_sub(handed.len()).min(self.state.credits(member));
        let mut records: HashMap<u64, LogRecord> = HashMap::new();
        if room > 0 && self.state.cursor() < topic.next_offset {
            let from = self.state.cursor();
            if let TopicReply::Records { records: read, .. } = ask_topic(
                directory,
                &self.topic,
                TopicMsg::Read { from, max: room, max_bytes: 4 * 1024 * 1024 },
            )
            .await?
            {
                let due: Vec<(u64, Option<u64>)> = read.iter().map(|(o, r)| (*o, r.deliver_at_ms)).collect();
                let before = self.state.cursor();
                handed.extend(self.state.advance(member, &due, now, deadline));
                touched.extend(before..self.state.cursor());
                for (offset, record) in &read {
                    self.state.note_body_bytes(*offset, record.body.len() as u64);
                }
                records.extend(read);
            }
        }
        let mut messages = Vec::with_capacity(handed.len());
        for delivery in handed {
            touched.push(delivery.offset);
            let record = match records.remove(&delivery.offset) {
                Some(record) => Some(record),
                None => self.record(directory, delivery.offset).await?,
            };
            match record {
                Some(record) => {
                    messages.push(Delivered { offset: delivery.offset, record, previous: delivery.previous })
                }
                None => {
                    // Trimmed by retention while outstanding: nothing left to deliver.
                    let _ = self.state.ack(member, delivery.offset);
                }
            }
        }
        self.deliveries.add(messages.len() as u64);
        if ack == AckMode::Auto {
            for message in &messages {
                let _ = self.state.ack(member, message.offset);
            }
        }
        let staged = if touched.is_empty() {
            None
        } else {
            let mut changes = ctx.storage.write_set();
            self.persist(&mut changes, touched)?;
            Some(ctx.storage.stage(changes)?)
        };
        // The topic hears what this took from the backlog before the member does.
        self.check_length(false, directory, ctx).await?;
        Ok(Ok((messages, staged)))
    }
}

#[cfg(test)]
mod tests;
