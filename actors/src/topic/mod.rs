//! The topic entity: a destination's durable, append-only log (`/queue/NAME` and `/topic/NAME`
//! alike; how messages are handed out is the consumer groups' business).
//!
//! Appends are pipelined like a bucket's writes: each is staged to the group-commit path in order
//! and answered once durable, while the actor takes the next one. Until a fence, the actor reads
//! its own staged records (`pending`) together with storage, so a reader sees every message the
//! moment it has an offset. Retention (count, bytes, age) trims the oldest messages as new ones
//! arrive; a `dedup-id` seen within the window is answered with the original's offset and stored
//! again never. A max length (see [`length`]) refuses or makes room for new messages.

mod length;
mod model;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serv_storage::{KeyPrefix, Storage, Table, WriteSet};

pub use length::{BACKLOGS, Excess, GroupView};
pub use model::*;

use serv_wasm_host::Hook;

use crate::group::GroupMsg;
use crate::inspect::Rate;
use crate::module::ModuleFailure;
use crate::{ActorKey, ActorKind, Entity, EntityContext, EntityError, now_ms};

/// Most staged messages the actor keeps in its own view before fencing (durable ones leave it
/// as their replies go out, so this is reached only when the disk falls behind).
const MAX_PENDING: usize = 1024;
/// Most old messages one append trims, so that a retention change is applied gradually.
const MAX_TRIM_PER_APPEND: usize = 1024;

/// A destination's actor. A name without a topic loads as absent.
pub struct Topic {
    name: String,
    meta: Option<TopicMeta>,
    topics: Table<String, TopicMeta>,
    log: Table<(String, u64), LogRecord>,
    dedup: Table<(String, String), DedupRecord>,
    backlogs: Table<(String, String), GroupView>,
    /// The latest backlog each counted consumer group reported, for the length.
    views: BTreeMap<String, GroupView>,
    /// Staged messages not yet known to be applied, by offset.
    pending: BTreeMap<u64, LogRecord>,
    /// Dedup ids of staged messages.
    pending_dedup: HashMap<String, u64>,
    /// Groups waiting for the next message.
    watchers: HashSet<String>,
    /// Every offset below this is durable (so applied): set by the replies of staged appends.
    /// Reads hand out only these, and `pending` drops them without waiting for a fence.
    durable_below: Arc<AtomicU64>,
    /// Appends per second, for the summary.
    appends: Rate,
}

type Outcome = Result<TopicReply, EntityError>;

/// Where a message of a transformed batch went.
enum Place {
    /// Appended: its index among the kept messages.
    Kept(usize),
    /// Dead-lettered: its index among the dead letters.
    Dead(usize),
    /// A duplicate of the message at this offset.
    Known(u64),
}

/// The header that names a message's deduplication id.
pub const DEDUP_HEADER: &str = "dedup-id";

impl Entity for Topic {
    type Msg = TopicMsg;

    async fn load(ctx: &EntityContext) -> Result<Self, EntityError> {
        let storage = &ctx.storage;
        // Appends an earlier incarnation staged may not be applied yet: wait for them first.
        storage.commit(storage.write_set()).await?;
        let topics = storage.table(TOPICS)?;
        let meta = topics.get(&ctx.key.name)?;
        // After the fence above, everything the log holds is durable.
        let durable_below = Arc::new(AtomicU64::new(meta.as_ref().map_or(0, |m| m.next_offset)));
        let backlogs = storage.table(BACKLOGS)?;
        Ok(Topic {
            name: ctx.key.name.clone(),
            meta,
            topics,
            log: storage.table(LOG)?,
            dedup: storage.table(DEDUP)?,
            views: Topic::load_views(&ctx.key.name, &backlogs)?,
            backlogs,
            pending: BTreeMap::new(),
            pending_dedup: HashMap::new(),
            watchers: HashSet::new(),
            durable_below,
            appends: Rate::default(),
        })
    }

    async fn handle(&mut self, msg: TopicMsg, ctx: &EntityContext) -> Outcome {
        let storage = &ctx.storage;
        self.forget_durable();
        if let TopicMsg::Ensure { config } = msg {
            if self.meta.is_none() {
                if let Err(refusal) = validate(&config) {
                    return Ok(TopicReply::Refused(refusal));
                }
                let meta = TopicMeta {
                    created_ms: now_ms(),
                    config,
                    first_offset: 0,
                    next_offset: 0,
                    bytes: 0,
                    body_bytes: Some(BodyTally::default()),
                };
                let mut changes = storage.write_set();
                changes.put(&self.topics, &self.name, &meta)?;
                storage.commit(changes).await?;
                self.meta = Some(meta);
            }
            return Ok(TopicReply::Info(self.info()));
        }
        if self.meta.is_none() {
            return Ok(TopicReply::Refused(TopicRefusal::NoSuchTopic));
        }
        match msg {
            TopicMsg::Ensure { .. } => unreachable!("handled above"),
            TopicMsg::Append { record, dedup_id } => {
                let (answers, _) = self.append(vec![(record, dedup_id)], None, ctx).await?;
                let (offset, duplicate) = answers[0];
                Ok(TopicReply::Appended { offset, duplicate })
            }
            TopicMsg::AppendMany(batch) => match self.publish(batch, ctx).await? {
                (stored, None) => Ok(TopicReply::AppendedMany(stored)),
                (stored, Some(limit)) => Ok(TopicReply::Full { stored, limit }),
            },
            TopicMsg::Read { from, max, max_bytes } => self.read(from, max, max_bytes),
            TopicMsg::OffsetAt { unix_ms } => self.offset_at(unix_ms),
            TopicMsg::Info => Ok(TopicReply::Info(self.info())),
            TopicMsg::Watch { group } => {
                self.watchers.insert(group);
                Ok(TopicReply::Done)
            }
            TopicMsg::Configure(config) => {
                if let Err(refusal) = validate(&config) {
                    return Ok(TopicReply::Refused(refusal));
                }
                self.fence(storage).await?;
                let mut meta = self.meta.clone().expect("checked above");
                meta.config = config;
                let mut changes = storage.write_set();
                let to_check = self.configure_length(&mut meta, &mut changes)?;
                self.trim(&mut changes, &mut meta, now_ms(), usize::MAX)?;
                changes.put(&self.topics, &self.name, &meta)?;
                storage.commit(changes).await?;
                self.meta = Some(meta);
                Topic::tell_to_check(to_check, ctx);
                Ok(TopicReply::Info(self.info()))
            }
            TopicMsg::DropBefore { offset } => {
                self.fence(storage).await?;
                let mut meta = self.meta.clone().expect("checked above");
                let mut changes = storage.write_set();
                while meta.first_offset < offset.min(meta.next_offset) {
                    if let Some(oldest) = self.record(meta.first_offset)? {
                        if let Some((_, id)) = oldest.headers.iter().find(|(name, _)| name == DEDUP_HEADER) {
                            changes.delete(&self.dedup, &(self.name.clone(), id.clone()));
                        }
                        meta.bytes = meta.bytes.saturating_sub(oldest.size());
                        if let Some(tally) = &mut meta.body_bytes {
                            tally.dropped += oldest.body.len() as u64;
                        }
                    }
                    changes.delete(&self.log, &(self.name.clone(), meta.first_offset));
                    self.pending.remove(&meta.first_offset);
                    meta.first_offset += 1;
                }
                changes.put(&self.topics, &self.name, &meta)?;
                storage.commit(changes).await?;
                self.meta = Some(meta);
                Ok(TopicReply::Info(self.info()))
            }
            TopicMsg::Delete => {
                self.fence(storage).await?;
                let mut changes = storage.write_set();
                let prefix = KeyPrefix::new().part(&self.name);
                for entry in self.log.scan(&prefix, None) {
                    changes.delete(&self.log, &entry?.0);
                }
                for entry in self.dedup.scan(&prefix, None) {
                    changes.delete(&self.dedup, &entry?.0);
                }
                changes.delete(&self.topics, &self.name);
                self.forget_all(&mut changes);
                storage.commit(changes).await?;
                self.meta = None;
                Ok(TopicReply::Done)
            }
            TopicMsg::ReportBacklog { group, backlog } => self.report(group, backlog, storage),
            TopicMsg::ForgetGroup { group } => {
                self.forget(group, storage)?;
                Ok(TopicReply::Done)
            }
        }
    }

    fn summary(&self) -> String {
        match &self.meta {
            Some(meta) => format!(
                "messages={} bytes={} first={} next={} in_rate={:.1}/s",
                meta.next_offset - meta.first_offset,
                meta.bytes,
                meta.first_offset,
                meta.next_offset,
                self.appends.last_per_second()
            ),
            None => "absent".to_string(),
        }
    }
}

/// A configuration a topic can run with.
fn validate(config: &TopicConfig) -> Result<(), TopicRefusal> {
    if config.retention_count == 0 || config.retention_bytes == 0 || config.retention_age_ms == 0 {
        return Err(TopicRefusal::InvalidConfig("retention limits must be greater than 0".into()));
    }
    if config.max_deliveries == 0 {
        return Err(TopicRefusal::InvalidConfig("max_deliveries must be at least 1".into()));
    }
    let limits = [
        ("max_length", config.max_length, MAX_LENGTH_LIMIT_MESSAGES),
        ("max_length_bytes", config.max_length_bytes, MAX_LENGTH_LIMIT_BYTES),
    ];
    for (name, value, most) in limits {
        if value.is_some_and(|value| !(1..=most).contains(&value)) {
            return Err(TopicRefusal::InvalidConfig(format!("{name} must be from 1 to {most}")));
        }
    }
    Ok(())
}

impl Topic {
    fn info(&self) -> TopicInfo {
        let meta = self.meta.as_ref().expect("callers check the topic exists");
        TopicInfo {
            name: self.name.clone(),
            config: meta.config.clone(),
            first_offset: meta.first_offset,
            next_offset: meta.next_offset,
            bytes: meta.bytes,
            created_ms: meta.created_ms,
            length: self.length(),
        }
    }

    /// The message at `offset`, staged or stored.
    fn record(&self, offset: u64) -> Result<Option<LogRecord>, EntityError> {
        if let Some(record) = self.pending.get(&offset) {
            return Ok(Some(record.clone()));
        }
        Ok(self.log.get(&(self.name.clone(), offset))?)
    }

    /// Drops from the actor's own view the staged records storage now holds for sure.
    fn forget_durable(&mut self) {
        let below = self.durable_below.load(Ordering::Acquire);
        if self.pending.first_key_value().is_some_and(|(offset, _)| *offset < below) {
            self.pending = self.pending.split_off(&below);
            self.pending_dedup.retain(|_, offset| *offset >= below);
        }
    }

    /// Waits until every staged append is applied: storage is current again.
    async fn fence(&mut self, storage: &Storage) -> Result<(), EntityError> {
        if !self.pending.is_empty() {
            storage.commit(storage.write_set()).await?;
            self.pending.clear();
            self.pending_dedup.clear();
        }
        Ok(())
    }

    /// The offset of the message stored with dedup id `id` within the window, if any.
    fn seen(&self, id: &str, now: u64) -> Result<Option<u64>, EntityError> {
        let window = self.meta.as_ref().map_or(0, |meta| meta.config.dedup_window_ms);
        Ok(self
            .dedup
            .get(&(self.name.clone(), id.to_string()))?
            .filter(|seen| seen.seen_ms + window > now)
            .map(|seen| seen.offset))
    }

    /// A producer's batch: runs the topic's transform (if any) on each message not already known
    /// by its dedup id, sends those it refuses or fails on to the dead-letter topic, and appends
    /// the rest. If the module or the dead-letter topic cannot be reached, nothing is stored.
    /// Under `reject-publish`, the batch ends before the first message the destination has no
    /// room for: what became of the ones before it, and the limit that one would exceed.
    async fn publish(
        &mut self,
        batch: Vec<(LogRecord, Option<String>)>,
        ctx: &EntityContext,
    ) -> Result<(Vec<Appended>, Option<LengthLimit>), EntityError> {
        let stored = |(offset, duplicate)| Appended { offset, duplicate, dead_letter: None };
        let transform = self.meta.as_ref().and_then(|meta| meta.config.transform.clone());
        let Some(module) = transform else {
            let (answers, full) = self.append(batch, self.room(), ctx).await?;
            return Ok((answers.into_iter().map(stored).collect(), full));
        };
        let directory =
            ctx.directory().ok_or_else(|| EntityError::dependency("the node is shutting down"))?;
        let runtime = directory
            .modules()
            .cloned()
            .ok_or_else(|| EntityError::dependency("this node runs no modules"))?;
        // A message whose dedup id is known is answered here with its original's offset, never
        // passed on (were its window to end meanwhile, it would be stored untransformed). An
        // original still staged must be durable before a duplicate of it is answered.
        if batch.iter().any(|(_, id)| id.as_ref().is_some_and(|id| self.pending_dedup.contains_key(id))) {
            self.fence(&ctx.storage).await?;
        }
        let now = now_ms();
        let mut known = Vec::with_capacity(batch.len());
        for (_, id) in &batch {
            known.push(match id {
                Some(id) => self.seen(id, now)?,
                None => None,
            });
        }
        let inputs = batch
            .iter()
            .zip(&known)
            .filter(|(_, known)| known.is_none())
            .map(|((r, _), _)| r.body.clone())
            .collect();
        let outputs: Vec<Result<Vec<u8>, String>> =
            match runtime.run(&directory, &module, Hook::Transform, inputs).await {
                Ok(outputs) => {
                    outputs.into_iter().map(|o| o.map_err(|e| format!("transform {module} {e}"))).collect()
                }
                Err(failure @ (ModuleFailure::NoSuchModule(_) | ModuleFailure::NoHook(..))) => {
                    vec![Err(format!("transform: {failure}")); known.iter().filter(|k| k.is_none()).count()]
                }
                Err(failure @ ModuleFailure::Unavailable(..)) => {
                    return Err(EntityError::dependency(failure.to_string()));
                }
            };
        let mut outputs = outputs.into_iter();
        let (mut keep, mut dead, mut places) = (Vec::new(), Vec::new(), Vec::with_capacity(batch.len()));
        for ((mut record, id), known) in batch.into_iter().zip(known) {
            if let Some(offset) = known {
                places.push(Place::Known(offset));
                continue;
            }
            match outputs.next().expect("one output per input") {
                Ok(body) => {
                    record.body = body;
                    places.push(Place::Kept(keep.len()));
                    keep.push((record, id));
                }
                Err(reason) => {
                    mark_dead(&mut record, &self.name, reason.clone());
                    places.push(Place::Dead(dead.len()));
                    dead.push((record, id, reason));
                }
            }
        }
        // The transformed bodies are what the destination stores: its room is checked on them.
        let mut full = None;
        if let Some(mut room) = self.room() {
            for (at, place) in places.iter().enumerate() {
                let Place::Kept(i) = place else { continue };
                if let Err(limit) = room.take(keep[*i].0.body.len() as u64) {
                    full = Some((at, limit));
                    break;
                }
            }
        }
        if let Some((cut, _)) = full {
            places.truncate(cut);
            keep.truncate(places.iter().filter(|place| matches!(place, Place::Kept(_))).count());
            dead.truncate(places.iter().filter(|place| matches!(place, Place::Dead(_))).count());
        }
        let full = full.map(|(_, limit)| limit);
        // Dead letters first: if their topic cannot take them, nothing of the batch is stored.
        let dlq = dead_letter_topic(&self.name);
        let mut dead_answers = Vec::with_capacity(dead.len());
        if !dead.is_empty() {
            let ask = |msg| async {
                directory
                    .call(&ActorKey::new(ActorKind::Topic, dlq.as_str()), msg)
                    .await
                    .map_err(|e| EntityError::dependency(format!("dead-letter topic {dlq} unreachable: {e}")))
            };
            ask(TopicMsg::Ensure { config: TopicConfig::default() }).await?;
            for (record, dedup_id, reason) in dead {
                let TopicReply::Appended { offset, duplicate } =
                    ask(TopicMsg::Append { record, dedup_id }).await?
                else {
                    return Err(EntityError::new(format!("dead-letter topic {dlq} refused a message")));
                };
                if !duplicate {
                    count_dead_lettered();
                }
                let dead_letter = Some(DeadLettered { topic: dlq.clone(), reason });
                dead_answers.push(Appended { offset, duplicate, dead_letter });
            }
        }
        let (kept, _) = self.append(keep, None, ctx).await?;
        let kept: Vec<Appended> = kept.into_iter().map(stored).collect();
        let answers = places
            .into_iter()
            .map(|place| match place {
                Place::Kept(i) => kept[i].clone(),
                Place::Dead(i) => dead_answers[i].clone(),
                Place::Known(offset) => Appended { offset, duplicate: true, dead_letter: None },
            })
            .collect();
        Ok((answers, full))
    }

    /// Appends `batch` in order, in one commit answered once durable: each message's offset, and
    /// whether it was a duplicate (then nothing was stored for it). With `room`, the batch ends
    /// before the first message that has none, and the limit it would exceed is returned.
    async fn append(
        &mut self,
        batch: Vec<(LogRecord, Option<String>)>,
        mut room: Option<length::Room>,
        ctx: &EntityContext,
    ) -> Result<(Vec<(u64, bool)>, Option<LengthLimit>), EntityError> {
        let storage = &ctx.storage;
        let now = now_ms();
        // An original still staged must be durable before a duplicate of it is answered.
        if batch.iter().any(|(_, id)| id.as_ref().is_some_and(|id| self.pending_dedup.contains_key(id))) {
            self.fence(storage).await?;
        }
        let mut meta = self.meta.clone().expect("checked by handle");
        let mut changes = storage.write_set();
        let mut answers = Vec::with_capacity(batch.len());
        let mut in_batch: HashMap<String, u64> = HashMap::new();
        let mut full = None;
        for (record, dedup_id) in batch {
            if let Some(id) = &dedup_id {
                let seen = match in_batch.get(id) {
                    Some(&offset) => Some(offset),
                    None => self.seen(id, now)?,
                };
                if let Some(offset) = seen {
                    answers.push((offset, true));
                    continue;
                }
            }
            if let Some(Err(limit)) = room.as_mut().map(|room| room.take(record.body.len() as u64)) {
                full = Some(limit);
                break;
            }
            let offset = meta.next_offset;
            meta.next_offset += 1;
            meta.bytes += record.size();
            if let Some(tally) = &mut meta.body_bytes {
                tally.appended += record.body.len() as u64;
            }
            changes.put(&self.log, &(self.name.clone(), offset), &record)?;
            if let Some(id) = dedup_id {
                let seen = DedupRecord { offset, seen_ms: now };
                changes.put(&self.dedup, &(self.name.clone(), id.clone()), &seen)?;
                self.pending_dedup.insert(id.clone(), offset);
                in_batch.insert(id, offset);
            }
            self.pending.insert(offset, record);
            answers.push((offset, false));
        }
        let stored = answers.iter().filter(|(_, duplicate)| !duplicate).count();
        if stored == 0 {
            return Ok((answers, full));
        }
        self.appends.add(stored as u64);
        let last = meta.next_offset - 1;
        self.trim(&mut changes, &mut meta, now, MAX_TRIM_PER_APPEND)?;
        changes.put(&self.topics, &self.name, &meta)?;
        let staged = storage.stage(changes)?;
        self.meta = Some(meta);
        // Watching groups hear of the messages once they are durable, never before; so do the
        // groups a drop-head limit now finds too long.
        let watchers = std::mem::take(&mut self.watchers);
        let overflowing = self.overflowing();
        let directory = ctx.directory();
        let durable_below = self.durable_below.clone();
        ctx.reply_when_durable(async move {
            staged.await?;
            // Commits become durable in staging order, so everything before this one is too.
            durable_below.fetch_max(last + 1, Ordering::AcqRel);
            if let Some(directory) = directory {
                let news = watchers.into_iter().map(|group| (group, GroupMsg::Wake));
                let news = news.chain(overflowing.into_iter().map(|group| (group, GroupMsg::CheckLength)));
                for (group, msg) in news {
                    let _ = directory.send(&ActorKey::new(ActorKind::Group, group.as_str()), msg).await;
                }
            }
            Ok(())
        });
        if self.pending.len() >= MAX_PENDING {
            self.fence(storage).await?;
        }
        Ok((answers, full))
    }

    /// Drops the oldest messages beyond the retention limits (at most `budget` of them); the
    /// newest message always stays, so a write set never both adds and drops one message.
    fn trim(
        &mut self,
        changes: &mut WriteSet,
        meta: &mut TopicMeta,
        now: u64,
        budget: usize,
    ) -> Result<(), EntityError> {
        let config = meta.config.clone();
        let mut trimmed = 0;
        while meta.first_offset + 1 < meta.next_offset && trimmed < budget {
            let Some(oldest) = self.record(meta.first_offset)? else {
                meta.first_offset += 1; // already gone (an earlier trim, before a crash)
                continue;
            };
            let count = meta.next_offset - meta.first_offset;
            let expired = oldest.published_ms + config.retention_age_ms <= now;
            if count <= config.retention_count && meta.bytes <= config.retention_bytes && !expired {
                break;
            }
            changes.delete(&self.log, &(self.name.clone(), meta.first_offset));
            if let Some((_, id)) = oldest.headers.iter().find(|(name, _)| name == DEDUP_HEADER) {
                changes.delete(&self.dedup, &(self.name.clone(), id.clone()));
            }
            self.pending.remove(&meta.first_offset);
            meta.bytes = meta.bytes.saturating_sub(oldest.size());
            if let Some(tally) = &mut meta.body_bytes {
                tally.dropped += oldest.body.len() as u64;
            }
            meta.first_offset += 1;
            trimmed += 1;
        }
        Ok(())
    }

    fn read(&self, from: u64, max: usize, max_bytes: u64) -> Outcome {
        let meta = self.meta.as_ref().expect("checked by handle");
        let from = from.max(meta.first_offset);
        // Only durable messages are handed out: a consumer never sees one a crash could undo.
        let durable_below = self.durable_below.load(Ordering::Acquire);
        let prefix = KeyPrefix::new().part(&self.name);
        let start = (from > 0).then(|| (self.name.clone(), from - 1));
        let (mut records, mut bytes) = (Vec::new(), 0u64);
        for entry in self.log.scan(&prefix, start.as_ref()).take(max) {
            let ((_, offset), record) = entry?;
            if offset >= durable_below {
                break;
            }
            if !records.is_empty() && bytes + record.size() > max_bytes {
                break;
            }
            bytes += record.size();
            records.push((offset, record));
        }
        let next = records.last().map_or(from, |(offset, _)| offset + 1);
        Ok(TopicReply::Records { records, next })
    }

    /// The first offset published at or after `unix_ms`: a binary search (publish times only
    /// grow along the log, as far as the clock does).
    fn offset_at(&self, unix_ms: u64) -> Outcome {
        let meta = self.meta.as_ref().expect("checked by handle");
        let (mut low, mut high) = (meta.first_offset, meta.next_offset);
        while low < high {
            let middle = low + (high - low) / 2;
            match self.record(middle)? {
                Some(record) if record.published_ms < unix_ms => low = middle + 1,
                Some(_) => high = middle,
                None => low = middle + 1,
            }
        }
        Ok(TopicReply::Offset(low))
    }
}

#[cfg(test)]
mod tests;
