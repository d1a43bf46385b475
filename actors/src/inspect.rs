//! Inspection records: what every actor (entity or supervisor) reports about itself.
//!
//! Each actor shares an [`ActorStats`] with its supervisor and the directory. Counters are
//! atomics updated on the hot path; the rest changes rarely and sits behind small locks. The
//! [`Registry`] holds the stats of every live actor of the node, so the admin API can list them
//! without sending a message to anyone.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::ActorKind;

/// What an actor record describes; written as its lower-case name in every format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum RecordKind {
    /// The node's root supervisor.
    Node,
    /// The supervisor of one entity kind.
    Supervisor,
    /// An entity of the given kind.
    Entity(ActorKind),
}

impl From<RecordKind> for String {
    fn from(kind: RecordKind) -> String {
        kind.as_str().to_string()
    }
}

impl TryFrom<String> for RecordKind {
    type Error = String;

    fn try_from(name: String) -> Result<Self, String> {
        match name.as_str() {
            "node" => Ok(RecordKind::Node),
            "supervisor" => Ok(RecordKind::Supervisor),
            other => {
                ActorKind::parse(other).map(RecordKind::Entity).ok_or_else(|| format!("no kind {other}"))
            }
        }
    }
}

impl RecordKind {
    /// Lower-case name used in JSON and in the `?kind=` filter.
    pub fn as_str(self) -> &'static str {
        match self {
            RecordKind::Node => "node",
            RecordKind::Supervisor => "supervisor",
            RecordKind::Entity(kind) => kind.as_str(),
        }
    }
}

/// Where an actor is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ActorStatus {
    /// Loading its state.
    Starting,
    /// Handling messages.
    Running,
    /// Crashed; waiting out its backoff before the next start.
    Restarting,
    /// Crashed too often; escalated and not restarted until reset.
    Failed,
}

/// The inspection record of one actor, as the admin API and console show it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ActorRecord {
    /// `kind/name` of an entity, or `supervisor/<kind>` and `supervisor/node`.
    pub key: String,
    /// Entity kind, or `supervisor` / `node`.
    pub kind: RecordKind,
    /// Id of the node the actor runs on.
    pub node: String,
    /// Life-cycle status.
    pub status: ActorStatus,
    /// One-line summary of the actor's state, written by the actor.
    pub state: String,
    /// Messages sent to the actor and not yet handled.
    pub mailbox_depth: u64,
    /// Messages handled since the actor was activated.
    pub handled: u64,
    /// Restarts after a crash since activation.
    pub restarts: u64,
    /// The last error the actor failed with.
    pub last_error: Option<String>,
    /// Time since the current incarnation started.
    pub uptime_ms: u64,
}

/// The state summary of an entity whose name has nothing stored: never created, or deleted. Its
/// actor runs (a message for the name activated it) but holds nothing, and passivates when idle.
pub const ABSENT: &str = "absent";

impl ActorRecord {
    /// True for the actor of an entity that does not exist (its summary is [`ABSENT`]).
    pub fn is_absent(&self) -> bool {
        matches!(self.kind, RecordKind::Entity(_)) && self.state == ABSENT
    }
}

/// Bit of a [`Gate`] set once an actor has decided to stop taking messages.
const CLOSING: u64 = 1 << 63;

/// The pending-message count of one incarnation of an actor, plus a closing bit.
///
/// A sender may only add a message while the bit is clear, and the actor may only set it when
/// nothing is pending, so no message is ever accepted by an actor that is about to passivate.
/// A restarted actor gets a new gate: senders still holding the old one fail over cleanly.
#[derive(Debug, Default)]
pub struct Gate(AtomicU64);

impl Gate {
    /// Counts one more pending message, unless the actor is closing.
    pub fn try_enter(&self) -> bool {
        self.0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |gate| {
                (gate & CLOSING == 0).then_some(gate + 1)
            })
            .is_ok()
    }

    /// Takes back a pending message that was never delivered or has been handled.
    pub fn leave(&self) {
        let before = self.0.fetch_sub(1, Ordering::AcqRel);
        debug_assert!(before & !CLOSING > 0, "gate left more often than entered");
    }

    /// Closes the gate if nothing is pending; true if the actor may now stop.
    pub fn try_close(&self) -> bool {
        self.0.compare_exchange(0, CLOSING, Ordering::AcqRel, Ordering::Acquire).is_ok()
    }

    /// Closes the gate whatever is pending: the incarnation was found dead (its mailbox is
    /// gone), or is to handle what it holds and stop (a restart or passivation on request).
    pub fn close(&self) {
        self.0.fetch_or(CLOSING, Ordering::AcqRel);
    }

    /// True once the actor has closed its gate.
    pub fn is_closing(&self) -> bool {
        self.0.load(Ordering::Acquire) & CLOSING != 0
    }

    /// Messages sent and not yet handled.
    pub fn pending(&self) -> u64 {
        self.0.load(Ordering::Acquire) & !CLOSING
    }
}

/// The live counters and status of one actor, kept across its restarts.
#[derive(Debug)]
pub struct ActorStats {
    key: String,
    kind: RecordKind,
    node: String,
    totals: Arc<KindTotals>,
    handled: AtomicU64,
    restarts: AtomicU64,
    /// When the stats were created; `last_active_ms` counts from here.
    created: Instant,
    /// Last handled message (or start), in ms since `created`: an atomic, so that handling a
    /// message takes no lock.
    last_active_ms: AtomicU64,
    mutable: Mutex<Mutable>,
}

#[derive(Debug)]
struct Mutable {
    status: ActorStatus,
    state: String,
    last_error: Option<String>,
    started: Instant,
    gate: Arc<Gate>,
}

impl ActorStats {
    fn new(key: String, kind: RecordKind, node: &str, totals: Arc<KindTotals>) -> Arc<Self> {
        let now = Instant::now();
        Arc::new(Self {
            key,
            kind,
            node: node.to_string(),
            totals,
            handled: AtomicU64::new(0),
            restarts: AtomicU64::new(0),
            created: now,
            last_active_ms: AtomicU64::new(0),
            mutable: Mutex::new(Mutable {
                status: ActorStatus::Starting,
                state: String::new(),
                last_error: None,
                started: now,
                gate: Arc::default(),
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Mutable> {
        self.mutable.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn since_created_ms(&self) -> u64 {
        u64::try_from(self.created.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Records one handled message (lock-free: it runs for every message).
    pub fn handled_one(&self) {
        self.handled.fetch_add(1, Ordering::Relaxed);
        self.totals.handled.fetch_add(1, Ordering::Relaxed);
        self.last_active_ms.store(self.since_created_ms(), Ordering::Relaxed);
    }

    /// Replaces the one-line state summary.
    pub fn set_state(&self, state: String) {
        self.lock().state = state;
    }

    /// Time since the actor last handled a message (or started).
    pub fn idle_for(&self) -> std::time::Duration {
        let idle_ms = self.since_created_ms().saturating_sub(self.last_active_ms.load(Ordering::Relaxed));
        std::time::Duration::from_millis(idle_ms)
    }

    /// Marks a new incarnation running with the given state summary and gate.
    pub fn running(&self, state: String, gate: Arc<Gate>) {
        let mut mutable = self.lock();
        mutable.status = ActorStatus::Running;
        mutable.state = state;
        mutable.started = Instant::now();
        mutable.gate = gate;
        self.last_active_ms.store(self.since_created_ms(), Ordering::Relaxed);
    }

    /// Sets the life-cycle status.
    pub fn set_status(&self, status: ActorStatus) {
        self.lock().status = status;
    }

    /// Records a failure; `restarted` counts it as one more restart.
    pub fn failed(&self, error: String, restarted: bool) {
        if restarted {
            self.restarts.fetch_add(1, Ordering::Relaxed);
            self.totals.restarts.fetch_add(1, Ordering::Relaxed);
        }
        let mut mutable = self.lock();
        mutable.status = if restarted { ActorStatus::Restarting } else { ActorStatus::Failed };
        mutable.last_error = Some(error);
    }

    /// Counts a restart that was asked for (not a crash): the last error stays as it was.
    pub fn restarted(&self) {
        self.restarts.fetch_add(1, Ordering::Relaxed);
        self.totals.restarts.fetch_add(1, Ordering::Relaxed);
    }

    /// Sets the last error without changing the status (e.g. an escalation seen by a parent).
    pub fn note_error(&self, error: String) {
        self.lock().last_error = Some(error);
    }

    /// A snapshot of the record.
    pub fn record(&self) -> ActorRecord {
        let mutable = self.lock();
        ActorRecord {
            key: self.key.clone(),
            kind: self.kind,
            node: self.node.clone(),
            status: mutable.status,
            state: mutable.state.clone(),
            mailbox_depth: mutable.gate.pending(),
            handled: self.handled.load(Ordering::Relaxed),
            restarts: self.restarts.load(Ordering::Relaxed),
            last_error: mutable.last_error.clone(),
            uptime_ms: u64::try_from(mutable.started.elapsed().as_millis()).unwrap_or(u64::MAX),
        }
    }
}

/// Monotonic counters of one record kind, kept across passivations (for `/metrics`).
#[derive(Debug, Default)]
pub struct KindTotals {
    /// Messages handled by actors of this kind since the node started.
    pub handled: AtomicU64,
    /// Restarts of actors of this kind since the node started.
    pub restarts: AtomicU64,
}

/// Every record kind a node reports, in a stable order.
fn record_kinds() -> impl Iterator<Item = RecordKind> {
    [RecordKind::Node, RecordKind::Supervisor]
        .into_iter()
        .chain(ActorKind::ALL.iter().map(|kind| RecordKind::Entity(*kind)))
}

/// The stats of every live actor on this node, by record key, and per-kind totals.
#[derive(Debug)]
pub struct Registry {
    node_id: String,
    actors: RwLock<BTreeMap<String, Arc<ActorStats>>>,
    totals: Vec<(RecordKind, Arc<KindTotals>)>,
}

impl Registry {
    /// An empty registry for the node `node_id`.
    pub fn new(node_id: &str) -> Self {
        Self {
            node_id: node_id.to_string(),
            actors: RwLock::default(),
            totals: record_kinds().map(|kind| (kind, Arc::default())).collect(),
        }
    }

    /// Fresh stats for an actor of `kind` that is starting (not yet registered).
    pub fn new_stats(&self, key: String, kind: RecordKind) -> Arc<ActorStats> {
        let totals = self.totals_of(kind);
        ActorStats::new(key, kind, &self.node_id, totals)
    }

    fn totals_of(&self, kind: RecordKind) -> Arc<KindTotals> {
        self.totals
            .iter()
            .find(|(k, _)| *k == kind)
            .map(|(_, totals)| totals.clone())
            .expect("every record kind has totals")
    }

    /// Monotonic per-kind counters, in a stable order.
    pub fn totals(&self) -> impl Iterator<Item = (RecordKind, &KindTotals)> {
        self.totals.iter().map(|(kind, totals)| (*kind, totals.as_ref()))
    }

    /// Adds (or replaces) an actor's stats.
    pub fn insert(&self, stats: Arc<ActorStats>) {
        self.actors.write().unwrap_or_else(|p| p.into_inner()).insert(stats.key.clone(), stats);
    }
    /// Removes an actor's stats, if they are still the given ones.
    pub fn remove(&self, stats: &Arc<ActorStats>) {
        let mut actors = self.actors.write().unwrap_or_else(|p| p.into_inner());
        if actors.get(&stats.key).is_some_and(|current| Arc::ptr_eq(current, stats)) {
            actors.remove(&stats.key);
        }
    }

    /// The stats of one live actor.
    pub fn get(&self, key: &str) -> Option<Arc<ActorStats>> {
        self.actors.read().unwrap_or_else(|p| p.into_inner()).get(key).cloned()
    }

    /// Removes the stats of every actor of `kind`.
    pub fn remove_kind(&self, kind: RecordKind) {
        self.actors.write().unwrap_or_else(|p| p.into_inner()).retain(|_, stats| stats.kind != kind);
    }

    /// Records of every live actor, in key order.
    pub fn records(&self) -> Vec<ActorRecord> {
        let actors = self.actors.read().unwrap_or_else(|p| p.into_inner());
        actors.values().map(|stats| stats.record()).collect()
    }
}

/// Events per second over the last completed window of [`Rate::WINDOW`], for state summaries
/// (a topic's appends, a group's deliveries).
#[derive(Debug)]
pub struct Rate {
    window_start: std::time::Instant,
    in_window: u64,
    last: f64,
}

impl Default for Rate {
    fn default() -> Self {
        Self { window_start: std::time::Instant::now(), in_window: 0, last: 0.0 }
    }
}

impl Rate {
    /// The length of a measuring window.
    pub const WINDOW: std::time::Duration = std::time::Duration::from_secs(5);

    /// Counts `n` events now.
    pub fn add(&mut self, n: u64) {
        self.roll();
        self.in_window += n;
    }

    /// Events per second in the last complete window, as of the last event (summaries are
    /// formatted from `&self`).
    pub fn last_per_second(&self) -> f64 {
        if self.window_start.elapsed() >= 2 * Self::WINDOW { 0.0 } else { self.last }
    }

    fn roll(&mut self) {
        let elapsed = self.window_start.elapsed();
        if elapsed >= Self::WINDOW {
            // A window with no events, or several quiet ones, reads as 0.
            self.last =
                if elapsed >= 2 * Self::WINDOW { 0.0 } else { self.in_window as f64 / elapsed.as_secs_f64() };
            self.in_window = 0;
            self.window_start = std::time::Instant::now();
        }
    }
}
