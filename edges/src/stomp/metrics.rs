//! Counts of the STOMP edge for `/metrics`: connections, frames in and out by command, and
//! messages published, delivered, acknowledged, nacked and refused by full destinations.
//!
//! Frames are counted by the codec, the one place every frame of every connection (TCP or
//! WebSocket) passes, into a fixed table indexed by [`Command`]; a frame whose command is not a
//! STOMP command counts as `other`, so the label stays within the command set. Every count is a
//! relaxed atomic add on a static: per process, which serves one node.

use std::sync::atomic::{AtomicU64, Ordering};

use super::frame::Command;

/// The frame counters of one direction: one per command, then `other`.
type FrameCounters = [AtomicU64; Command::ALL.len() + 1];

static FRAMES_RECEIVED: FrameCounters = [const { AtomicU64::new(0) }; Command::ALL.len() + 1];
static FRAMES_SENT: FrameCounters = [const { AtomicU64::new(0) }; Command::ALL.len() + 1];
static CONNECTIONS_OPEN: AtomicU64 = AtomicU64::new(0);
static CONNECTIONS: AtomicU64 = AtomicU64::new(0);
static PUBLISHED: AtomicU64 = AtomicU64::new(0);
static DELIVERED: AtomicU64 = AtomicU64::new(0);
static ACKED: AtomicU64 = AtomicU64::new(0);
static NACKED: AtomicU64 = AtomicU64::new(0);
static REJECTED: AtomicU64 = AtomicU64::new(0);

/// The slot of `command` (`None`: not a STOMP command) in a [`FrameCounters`].
fn slot(command: Option<Command>) -> usize {
    // `Command::ALL` lists the variants in declaration order, so a variant's discriminant is
    // its index there (a unit test checks it).
    command.map_or(Command::ALL.len(), |command| command as usize)
}

/// Counts a frame read from a client (`None`: its command line named no STOMP command).
pub(super) fn frame_received(command: Option<Command>) {
    FRAMES_RECEIVED[slot(command)].fetch_add(1, Ordering::Relaxed);
}

/// Counts a frame written to a client.
pub(super) fn frame_sent(command: Command) {
    FRAMES_SENT[slot(Some(command))].fetch_add(1, Ordering::Relaxed);
}

/// Messages stored by SENDs.
pub(super) fn published(messages: usize) {
    PUBLISHED.fetch_add(messages as u64, Ordering::Relaxed);
}

/// A MESSAGE frame queued to a subscriber.
pub(super) fn delivered() {
    DELIVERED.fetch_add(1, Ordering::Relaxed);
}

/// Messages settled by a client's ACK.
pub(super) fn acked(messages: usize) {
    ACKED.fetch_add(messages as u64, Ordering::Relaxed);
}

/// Messages rejected by a client's NACK.
pub(super) fn nacked(messages: usize) {
    NACKED.fetch_add(messages as u64, Ordering::Relaxed);
}

/// A SEND refused because its destination was full (max length, `reject-publish`).
pub(super) fn rejected() {
    REJECTED.fetch_add(1, Ordering::Relaxed);
}

/// An open connection: counted when made, and as open until dropped.
pub(super) struct OpenConnection(());

impl OpenConnection {
    pub(super) fn new() -> Self {
        CONNECTIONS.fetch_add(1, Ordering::Relaxed);
        CONNECTIONS_OPEN.fetch_add(1, Ordering::Relaxed);
        Self(())
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        CONNECTIONS_OPEN.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The STOMP counters as read for `/metrics`.
pub(crate) struct StompView {
    pub connections_open: u64,
    pub connections: u64,
    /// Frames received, by command label (every command, then `other`).
    pub frames_received: Vec<(&'static str, u64)>,
    /// Frames sent, by command label (the commands a server sends).
    pub frames_sent: Vec<(&'static str, u64)>,
    pub published: u64,
    pub delivered: u64,
    pub acked: u64,
    pub nacked: u64,
    pub rejected: u64,
}

/// The counters as they stand.
pub(crate) fn snapshot() -> StompView {
    let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
    let labels = Command::ALL.iter().map(|command| command.as_str()).chain(["other"]);
    StompView {
        connections_open: load(&CONNECTIONS_OPEN),
        connections: load(&CONNECTIONS),
        frames_received: labels.zip(FRAMES_RECEIVED.iter().map(load)).collect(),
        frames_sent: Command::ALL
            .iter()
            .filter(|command| !command.is_client())
            .map(|command| (command.as_str(), load(&FRAMES_SENT[slot(Some(*command))])))
            .collect(),
        published: load(&PUBLISHED),
        delivered: load(&DELIVERED),
        acked: load(&ACKED),
        nacked: load(&NACKED),
        rejected: load(&REJECTED),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_command_has_its_own_slot_and_unknown_ones_share_other() {
        for (index, command) in Command::ALL.into_iter().enumerate() {
            assert_eq!(slot(Some(command)), index, "{command}");
        }
        assert_eq!(slot(None), Command::ALL.len());
        let view = snapshot();
        let labels: Vec<_> = view.frames_received.iter().map(|(label, _)| *label).collect();
        assert_eq!(labels.len(), Command::ALL.len() + 1);
        assert_eq!(labels.last(), Some(&"other"));
        let sent: Vec<_> = view.frames_sent.iter().map(|(label, _)| *label).collect();
        assert_eq!(sent, ["CONNECTED", "MESSAGE", "RECEIPT", "ERROR"]);
    }
}
