//! The delivery state of one consumer group over one topic log, as plain data: which offsets
//! are handed out to which member, acknowledged, due again, delayed or dead.
//!
//! Offsets below `cursor` have all been handed out at least once; every one of them that is not
//! yet acknowledged is `outstanding`. An outstanding offset is in flight with one member (until
//! it acks, nacks, leaves or its ack deadline passes), ready to be handed out again (marked
//! redelivered), or delayed until a time. A message whose deliveries reach `max_deliveries` and
//! is refused once more is dead: the caller moves it to the dead-letter topic, then acks it.
//!
//! The group actor persists `cursor` and `outstanding` (without members: after a restart, what
//! was in flight is ready again) and keeps members in memory; this module is the logic both
//! share, tested on its own.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

/// Where an outstanding offset stands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Slot {
    /// Handed to `member`; due again at `deadline_ms` unless acknowledged.
    InFlight { member: String, deadline_ms: u64 },
    /// To be handed out (again).
    Ready,
    /// Not to be handed out before `until_ms`.
    Delayed { until_ms: u64 },
}

/// An offset handed out (or delayed) and not yet acknowledged.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outstanding {
    /// Times it was handed out so far.
    pub deliveries: u32,
    pub slot: Slot,
    /// Body bytes of its message, for the destination's length (0 when stored before format 2).
    pub body_bytes: u64,
}

/// One delivery to make: the offset, and whether (and how often) it was delivered before.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Delivery {
    pub offset: u64,
    /// Deliveries before this one (the `redelivery-count` header); 0 on the first.
    pub previous: u32,
}

/// Why an acknowledgement was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AckError {
    #[error("message {0} is not awaiting an acknowledgement")]
    Unknown(u64),
    #[error("message {0} was delivered to another subscription")]
    NotYours(u64),
}

/// What became of a refused (nacked) message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// It will be delivered again.
    Redeliver,
    /// It was delivered `max_deliveries` times: move it to the dead-letter topic, then ack it.
    Dead { deliveries: u32 },
}

#[derive(Clone, Debug, Default)]
struct Member {
    prefetch: u32,
    in_flight: BTreeSet<u64>,
}

/// The state of one group (see the module docs).
#[derive(Clone, Debug, Default)]
pub struct GroupState {
    cursor: u64,
    outstanding: BTreeMap<u64, Outstanding>,
    members: HashMap<String, Member>,
}

impl GroupState {
    /// A group that starts reading at `cursor` (replay from an offset, or the log's end).
    pub fn starting_at(cursor: u64) -> Self {
        Self { cursor, ..Self::default() }
    }

    /// A group as persisted: what was in flight is ready again (its member is gone).
    pub fn restored(cursor: u64, outstanding: BTreeMap<u64, Outstanding>) -> Self {
        let outstanding = outstanding
            .into_iter()
            .map(|(offset, mut entry)| {
                if matches!(entry.slot, Slot::InFlight { .. }) {
                    entry.slot = Slot::Ready;
                }
                (offset, entry)
            })
            .collect();
        Self { cursor, outstanding, members: HashMap::new() }
    }

    pub fn cursor(&self) -> u64 {
        self.cursor
    }

    pub fn outstanding(&self) -> &BTreeMap<u64, Outstanding> {
        &self.outstanding
    }

    /// Messages handed out and not yet acknowledged.
    pub fn in_flight(&self) -> usize {
        self.members.values().map(|m| m.in_flight.len()).sum()
    }

    pub fn members(&self) -> usize {
        self.members.len()
    }

    /// Adds (or updates) a member that may hold `prefetch` unacknowledged messages (0: no limit).
    pub fn join(&mut self, member: &str, prefetch: u32) {
        self.members.entry(member.to_string()).or_default().prefetch = prefetch;
    }

    /// Removes a member; what it held in flight is ready for the others.
    pub fn leave(&mut self, member: &str) {
        if let Some(gone) = self.members.remove(member) {
            for offset in gone.in_flight {
                if let Some(entry) = self.outstanding.get_mut(&offset) {
                    entry.slot = Slot::Ready;
                }
            }
        }
    }

    /// Whether `member` has room for a worthwhile batch: a quarter of its prefetch (at least one),
    /// so that acks free room in batches instead of one message at a time.
    pub fn has_room_for_a_batch(&self, member: &str) -> bool {
        match self.members.get(member) {
            Some(m) if m.prefetch == 0 => true,
            Some(m) => self.credits(member) >= (m.prefetch as usize / 4).max(1),
            None => false,
        }
    }

    /// How many more messages `member` may receive now.
    pub fn credits(&self, member: &str) -> usize {
        match self.members.get(member) {
            Some(m) if m.prefetch == 0 => usize::MAX,
            Some(m) => (m.prefetch as usize).saturating_sub(m.in_flight.len()),
            None => 0,
        }
    }

    /// Makes in-flight messages past their deadline, and delayed ones now due, ready.
    pub fn tick(&mut self, now_ms: u64) {
        let mut expired = Vec::new();
        for (offset, entry) in &mut self.outstanding {
            match &entry.slot {
                Slot::InFlight { member, deadline_ms } if *deadline_ms <= now_ms => {
                    expired.push((member.clone(), *offset));
                    entry.slot = Slot::Ready;
                }
                Slot::Delayed { until_ms } if *until_ms <= now_ms => entry.slot = Slot::Ready,
                _ => {}
            }
        }
        for (member, offset) in expired {
            if let Some(m) = self.members.get_mut(&member) {
                m.in_flight.remove(&offset);
            }
        }
    }

    /// The earliest time something delayed or in flight falls due, to wake up for.
    pub fn next_due(&self) -> Option<u64> {
        self.outstanding
            .values()
            .filter_map(|entry| match &entry.slot {
                Slot::InFlight { deadline_ms, .. } => Some(*deadline_ms),
                Slot::Delayed { until_ms } => Some(*until_ms),
                Slot::Ready => None,
            })
            .min()
    }

    /// Hands `member` what is ready again first (oldest first), within its credits and `max`.
    pub fn redeliveries(&mut self, member: &str, max: usize, deadline_ms: u64) -> Vec<Delivery> {
        let room = self.credits(member).min(max);
        let ready: Vec<u64> = self
            .outstanding
            .iter()
            .filter(|(_, entry)| entry.slot == Slot::Ready)
            .map(|(offset, _)| *offset)
            .take(room)
            .collect();
        ready.into_iter().map(|offset| self.hand_out(member, offset, deadline_ms)).collect()
    }

    /// Takes the next offsets of the log (from `cursor`) for `member`: `due` says, for each
    /// offset read, when it may be delivered (`None`: now). Delayed ones are set aside; the
    /// cursor moves past every offset considered. `head` is the log's next offset.
    pub fn advance(
        &mut self,
        member: &str,
        read: &[(u64, Option<u64>)],
        now_ms: u64,
        deadline_ms: u64,
    ) -> Vec<Delivery> {
        let mut room = self.credits(member);
        let mut deliveries = Vec::new();
        for &(offset, due) in read {
            if offset < self.cursor {
                continue;
            }
            if room == 0 {
                break;
            }
            self.cursor = offset + 1;
            match due {
                Some(until_ms) if until_ms > now_ms => {
                    let slot = Slot::Delayed { until_ms };
                    self.outstanding.insert(offset, Outstanding { deliveries: 0, slot, body_bytes: 0 });
                }
                _ => {
                    let entry = Outstanding { deliveries: 0, slot: Slot::Ready, body_bytes: 0 };
                    self.outstanding.insert(offset, entry);
                    deliveries.push(self.hand_out(member, offset, deadline_ms));
                    room = room.saturating_sub(1);
                }
            }
        }
        deliveries
    }

    /// Notes the body size of outstanding `offset`'s message (read when it was handed out).
    pub fn note_body_bytes(&mut self, offset: u64, body_bytes: u64) {
        if let Some(entry) = self.outstanding.get_mut(&offset) {
            entry.body_bytes = body_bytes;
        }
    }

    /// The outstanding messages that wait in the group (due again, or delayed: not in flight),
    /// oldest first, with their body bytes.
    pub fn waiting(&self) -> Vec<(u64, u64)> {
        let waiting =
            self.outstanding.iter().filter(|(_, entry)| !matches!(entry.slot, Slot::InFlight { .. }));
        waiting.map(|(offset, entry)| (*offset, entry.body_bytes)).collect()
    }

    /// Forgets a waiting message (dropped from the head of a full destination). In flight, it
    /// stays: only waiting messages are dropped.
    pub fn drop_waiting(&mut self, offset: u64) {
        if self.outstanding.get(&offset).is_some_and(|entry| !matches!(entry.slot, Slot::InFlight { .. })) {
            self.outstanding.remove(&offset);
        }
    }

    /// Moves the cursor past `offset` without handing it out (dropped from the head of a full
    /// destination before anyone had it).
    pub fn pass(&mut self, offset: u64) {
        self.cursor = self.cursor.max(offset + 1);
    }

    /// Moves the cursor past offsets the log no longer holds (trimmed by retention).
    pub fn skip_to(&mut self, first_offset: u64) {
        self.cursor = self.cursor.max(first_offset);
        self.outstanding.retain(|offset, _| *offset >= first_offset);
        for member in self.members.values_mut() {
            member.in_flight.retain(|offset| *offset >= first_offset);
        }
    }

    fn hand_out(&mut self, member: &str, offset: u64, deadline_ms: u64) -> Delivery {
        let entry = self.outstanding.get_mut(&offset).expect("callers hand out outstanding offsets");
        let previous = entry.deliveries;
        entry.deliveries += 1;
        entry.slot = Slot::InFlight { member: member.to_string(), deadline_ms };
        if let Some(m) = self.members.get_mut(member) {
            m.in_flight.insert(offset);
        }
        Delivery { offset, previous }
    }

    fn take_in_flight(&mut self, member: &str, offset: u64) -> Result<(), AckError> {
        match self.outstanding.get(&offset).map(|entry| &entry.slot) {
            Some(Slot::InFlight { member: holder, .. }) if holder == member => {}
            Some(Slot::InFlight { .. }) => return Err(AckError::NotYours(offset)),
            _ => return Err(AckError::Unknown(offset)),
        }
        if let Some(m) = self.members.get_mut(member) {
            m.in_flight.remove(&offset);
        }
        Ok(())
    }

    /// `member` acknowledges `offset`: it is done for this group.
    pub fn ack(&mut self, member: &str, offset: u64) -> Result<(), AckError> {
        self.take_in_flight(member, offset)?;
        self.outstanding.remove(&offset);
        Ok(())
    }

    /// `member` acknowledges every message it holds up to and including `offset` (STOMP's
    /// `client` ack mode); returns the offsets acknowledged.
    pub fn ack_through(&mut self, member: &str, offset: u64) -> Result<Vec<u64>, AckError> {
        let held: Vec<u64> = match self.members.get(member) {
            Some(m) if m.in_flight.contains(&offset) => m.in_flight.range(..=offset).copied().collect(),
            _ => return Err(self.refusal(member, offset)),
        };
        for acked in &held {
            self.ack(member, *acked)?;
        }
        Ok(held)
    }

    /// `member` refuses `offset`: it goes out again, or is dead after `max_deliveries`.
    pub fn nack(&mut self, member: &str, offset: u64, max_deliveries: u32) -> Result<Refused, AckError> {
        self.take_in_flight(member, offset)?;
        let entry = self.outstanding.get_mut(&offset).expect("checked in flight");
        if entry.deliveries >= max_deliveries {
            let deliveries = entry.deliveries;
            self.outstanding.remove(&offset);
            return Ok(Refused::Dead { deliveries });
        }
        entry.slot = Slot::Ready;
        Ok(Refused::Redeliver)
    }

    /// Ready messages delivered `max_deliveries` times already (their last delivery expired or
    /// its member left): dead, to move to the dead-letter topic.
    pub fn take_exhausted(&mut self, max_deliveries: u32) -> Vec<(u64, u32)> {
        let dead: Vec<(u64, u32)> = self
            .outstanding
            .iter()
            .filter(|(_, entry)| entry.slot == Slot::Ready && entry.deliveries >= max_deliveries)
            .map(|(offset, entry)| (*offset, entry.deliveries))
            .collect();
        for (offset, _) in &dead {
            self.outstanding.remove(offset);
        }
        dead
    }

    fn refusal(&self, member: &str, offset: u64) -> AckError {
        match self.outstanding.get(&offset).map(|entry| &entry.slot) {
            Some(Slot::InFlight { member: holder, .. }) if holder != member => AckError::NotYours(offset),
            _ => AckError::Unknown(offset),
        }
    }
}

#[cfg(test)]
mod tests;
