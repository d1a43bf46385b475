//! The supervision tree: `NodeSupervisor` → one [`KindSupervisor`] per kind → entity actors.
//!
//! A kind supervisor activates entities on demand (the directory asks it), restarts a crashed
//! entity from its durable state after an exponential backoff, and escalates to the node
//! supervisor when an entity crashes more than `max_restarts` times within `restart_window`:
//! the entity is then marked failed and refuses messages until it is reset, so a poison entity
//! cannot spin. An idle entity passivates itself; its supervisor forgets it until the next message.
//! Activation runs in a task of its own, so a slow `load` never blocks the other entities.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::SupervisionEvent;
use ractor::{Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, ActorStatus as CellStatus};
use tokio::sync::oneshot;

use crate::directory::{Hub, Incarnation, WeakDirectory};
use crate::entity::{EntityActor, EntityArgs, EntityContext, EntityError};
use crate::inspect::{ActorStats, ActorStatus, Gate, RecordKind};
use crate::placement::MeshReply;
use crate::{ActorKey, ActorKind, Directory, DirectoryError, Entity};

/// Limits of supervision and passivation, all configurable.
#[derive(Clone, Debug)]
pub struct SupervisionConfig {
    /// An entity that handled nothing for this long passivates.
    pub passivate_after: Duration,
    /// How often an entity checks whether it is idle.
    pub idle_check: Duration,
    /// Backoff before the first restart; doubled for each further crash in the window.
    pub restart_backoff_min: Duration,
    /// Upper bound of the restart backoff.
    pub restart_backoff_max: Duration,
    /// Crashes tolerated within `restart_window` before escalating.
    pub max_restarts: u32,
    /// The window over which crashes are counted.
    pub restart_window: Duration,
    /// How long `call` waits for an answer.
    pub call_timeout: Duration,
}

impl Default for SupervisionConfig {
    fn default() -> Self {
        Self {
            passivate_after: Duration::from_secs(300),
            idle_check: Duration::from_secs(1),
            restart_backoff_min: Duration::from_millis(100),
            restart_backoff_max: Duration::from_secs(10),
            max_restarts: 5,
            restart_window: Duration::from_secs(60),
            call_timeout: Duration::from_secs(30),
        }
    }
}

type Activation = oneshot::Sender<Result<Incarnation, DirectoryError>>;
type SpawnFuture = Pin<Box<dyn Future<Output = Result<ActorCell, String>> + Send>>;

/// Starts entity actors of one type; lets supervisors stay free of entity types.
pub(crate) trait Spawn: Send + Sync {
    fn spawn(&self, args: EntityArgs, supervisor: ActorCell) -> SpawnFuture;

    /// Delivers a message of this kind that another node forwarded, still encoded.
    fn serve(
        &self,
        directory: Directory,
        key: ActorKey,
        msg: Vec<u8>,
        wants_reply: bool,
    ) -> Pin<Box<dyn Future<Output = MeshReply> + Send>>;
}

pub(crate) struct Spawner<E>(PhantomData<fn() -> E>);

impl<E> Spawner<E> {
    pub(crate) fn new() -> Self {
        Self(PhantomData)
    }
}

impl<E: Entity> Spawn for Spawner<E> {
    fn spawn(&self, args: EntityArgs, supervisor: ActorCell) -> SpawnFuture {
        Box::pin(async move {
            Actor::spawn_linked(None, EntityActor::<E>::new(), args, supervisor)
                .await
                .map(|(actor, _)| actor.get_cell())
                .map_err(|error| error.to_string())
        })
    }

    fn serve(
        &self,
        directory: Directory,
        key: ActorKey,
        msg: Vec<u8>,
        wants_reply: bool,
    ) -> Pin<Box<dyn Future<Output = MeshReply> + Send>> {
        Box::pin(async move { directory.serve_encoded::<E::Msg>(key, msg, wants_reply).await })
    }
}

/// Messages of a kind supervisor.
pub(crate) enum KindMsg {
    /// Find or start the entity `name` and answer with its live incarnation.
    Activate { name: String, reply: Activation },
    /// A start finished (successfully or not).
    Started { name: String, generation: u64, gate: Arc<Gate>, result: Result<ActorCell, String> },
    /// A backoff ran out: start the entity again.
    Respawn { name: String, generation: u64 },
    /// Start the entity again from its durable state (see `KindState::reset`).
    Reset { name: String, reply: oneshot::Sender<Result<(), DirectoryError>> },
}

impl ractor::Message for KindMsg {}

enum Phase {
    Starting(Vec<Activation>),
    Running(Incarnation),
    /// Stopping (passivating or crashed); waiters get the next incarnation.
    Stopping(Vec<Activation>),
    Backoff(Vec<Activation>),
    Failed(String),
}

struct Child {
    stats: Arc<ActorStats>,
    phase: Phase,
    crashes: VecDeque<Instant>,
    generation: u64,
    /// Asked to restart: when the running incarnation stops, start the next one at once.
    restart: bool,
}

pub(crate) struct KindSupervisor;

pub(crate) struct KindState {
    myself: ActorRef<KindMsg>,
    kind: ActorKind,
    hub: Arc<Hub>,
    stats: Arc<ActorStats>,
    node: ActorRef<NodeMsg>,
    children: HashMap<String, Child>,
    by_cell: HashMap<ActorId, String>,
    passivated: u64,
}

impl KindState {
    fn key(&self, name: &str) -> ActorKey {
        ActorKey::new(self.kind, name)
    }

    fn summary(&self) -> String {
        let count = |f: fn(&Phase) -> bool| self.children.values().filter(|c| f(&c.phase)).count();
        format!(
            "active={} restarting={} failed={} passivated={}",
            count(|p| matches!(p, Phase::Running(_) | Phase::Starting(_) | Phase::Stopping(_))),
            count(|p| matches!(p, Phase::Backoff(_))),
            count(|p| matches!(p, Phase::Failed(_))),
            self.passivated
        )
    }

    fn activate(&mut self, name: String, reply: Activation) {
        if self.hub.is_stopping() {
            let _ = reply.send(Err(DirectoryError::ShuttingDown));
            return;
        }
        let key = self.key(&name);
        let Some(child) = self.children.get_mut(&name) else {
            if !self.hub.serves(self.kind) {
                let _ = reply.send(Err(DirectoryError::NotServed { kind: self.kind.to_string() }));
                return;
            }
            let stats = self.hub.registry.new_stats(key.to_string(), RecordKind::Entity(self.kind));
            self.hub.registry.insert(stats.clone());
            let child = Child {
                stats,
                phase: Phase::Starting(vec![reply]),
                crashes: VecDeque::new(),
                generation: 0,
                restart: false,
            };
            self.children.insert(name.clone(), child);
            self.start(&name);
            return;
        };
        match &mut child.phase {
            Phase::Running(incarnation) => {
                if alive(&incarnation.cell) && !incarnation.gate.is_closing() {
                    let _ = reply.send(Ok(incarnation.clone()));
                } else {
                    child.phase = Phase::Stopping(vec![reply]);
                }
            }
            Phase::Starting(waiters) | Phase::Stopping(waiters) | Phase::Backoff(waiters) => {
                waiters.push(reply)
            }
            Phase::Failed(error) => {
                let _ = reply
                    .send(Err(DirectoryError::Failed { key: key.to_string(), last_error: error.clone() }));
            }
        }
    }

    /// Starts a new incarnation of `name` in a task; `Started` reports back.
    fn start(&mut self, name: &str) {
        let Some(child) = self.children.get_mut(name) else { return };
        let Some(spawner) = self.hub.spawner(self.kind) else { return };
        child.generation += 1;
        child.stats.set_status(ActorStatus::Starting);
        let gate = Arc::new(Gate::default());
        let key = ActorKey::new(self.kind, name);
        let args = EntityArgs {
            ctx: EntityContext::new(
                key.clone(),
                self.hub.entity_storage(&key),
                self.hub.node_id.clone(),
                WeakDirectory::new(&self.hub, self.node.clone()),
            ),
            stats: child.stats.clone(),
            gate: gate.clone(),
            passivate_after: self.hub.config.passivate_after,
            tick: self.hub.config.idle_check,
        };
        let (supervisor, name, generation) = (self.myself.clone(), name.to_string(), child.generation);
        tokio::spawn(async move {
            let result = spawner.spawn(args, supervisor.get_cell()).await;
            let _ = supervisor.cast(KindMsg::Started { name, generation, gate, result });
        });
    }

    fn started(&mut self, name: String, generation: u64, gate: Arc<Gate>, result: Result<ActorCell, String>) {
        let current = self.children.get(&name).is_some_and(|c| c.generation == generation);
        match result {
            Ok(cell) if !current => cell.stop(Some("superseded".into())),
            // It stopped before we learnt of it, so its exit event came (or will come) for a cell
            // we do not know: start another incarnation rather than wait for that event.
            Ok(cell) if !alive(&cell) => self.start(&name),
            Ok(cell) => {
                self.by_cell.insert(cell.get_id(), name.clone());
                let incarnation = Incarnation { cell, gate };
                self.hub.set_live(self.key(&name), incarnation.clone());
                let Some(child) = self.children.get_mut(&name) else { return };
                let waiters = match std::mem::replace(&mut child.phase, Phase::Running(incarnation.clone())) {
                    Phase::Starting(waiters) => waiters,
                    _ => Vec::new(),
                };
                for waiter in waiters {
                    let _ = waiter.send(Ok(incarnation.clone()));
                }
            }
            Err(error) if current => self.crashed(name, format!("activation failed: {error}"), true),
            Err(_) => {}
        }
    }

    fn terminated(&mut self, cell: &ActorCell, reason: Option<String>) {
        let Some(name) = self.by_cell.remove(&cell.get_id()) else { return };
        self.hub.clear_live(&self.key(&name), cell);
        let Some(child) = self.children.get_mut(&name) else { return };
        let waiters = match std::mem::replace(&mut child.phase, Phase::Starting(Vec::new())) {
            Phase::Stopping(waiters) | Phase::Starting(waiters) => waiters,
            _ => Vec::new(),
        };
        let restart = std::mem::take(&mut child.restart);
        if restart && !self.hub.is_stopping() {
            child.stats.restarted();
            child.phase = Phase::Starting(waiters);
            self.start(&name);
            return;
        }
        if !waiters.is_empty() && !self.hub.is_stopping() {
            child.phase = Phase::Starting(waiters);
            self.start(&name);
            return;
        }
        // An entity drained on request (no reason) was passivated, as one idle that stopped itself.
        if reason.is_none() || reason.as_deref() == Some(crate::entity::PASSIVATED) {
            self.passivated += 1;
        }
        if let Some(child) = self.children.remove(&name) {
            self.hub.registry.remove(&child.stats);
        }
    }

    /// An entity failed; `dependency`: because another entity it needed was unreachable.
    fn failed_cell(&mut self, cell: &ActorCell, error: String, dependency: bool) {
        let Some(name) = self.by_cell.remove(&cell.get_id()) else { return };
        self.hub.clear_live(&self.key(&name), cell);
        self.crashed(name, error, !dependency);
    }

    /// Schedules a restart of `name` after a crash, or escalates; a crash that is not `counted`
    /// (another entity was unreachable) restarts it without counting towards escalation.
    fn crashed(&mut self, name: String, error: String, counted: bool) {
        if !self.serves(&name) {
            return self.forget(name, error);
        }
        let key = self.key(&name).to_string();
        let config = &self.hub.config;
        let Some(child) = self.children.get_mut(&name) else { return };
        let now = Instant::now();
        if counted {
            child.crashes.push_back(now);
        }
        while child.crashes.front().is_some_and(|t| now.duration_since(*t) > config.restart_window) {
            child.crashes.pop_front();
        }
        let waiters = match std::mem::replace(&mut child.phase, Phase::Failed(error.clone())) {
            Phase::Starting(waiters) | Phase::Stopping(waiters) | Phase::Backoff(waiters) => waiters,
            Phase::Running(_) | Phase::Failed(_) => Vec::new(),
        };
        if child.crashes.len() > config.max_restarts as usize || self.hub.is_stopping() {
            tracing::error!(%key, %error, crashes = child.crashes.len(), "entity keeps crashing; escalating");
            child.stats.failed(error.clone(), false);
            for waiter in waiters {
                let _ =
                    waiter.send(Err(DirectoryError::Failed { key: key.clone(), last_error: error.clone() }));
            }
            let _ = self.node.cast(NodeMsg::Escalated { key, error });
            return;
        }
        let exponent = u32::try_from(child.crashes.len().saturating_sub(1)).unwrap_or(u32::MAX).min(16);
        let backoff =
            config.restart_backoff_min.saturating_mul(1 << exponent).min(config.restart_backoff_max);
        tracing::warn!(%key, %error, backoff_ms = backoff.as_millis() as u64, "entity crashed; restarting");
        child.stats.failed(error, true);
        child.phase = Phase::Backoff(waiters);
        let generation = child.generation;
        self.myself.send_after(backoff, move || KindMsg::Respawn { name, generation });
    }

    /// False when this node's placement puts the entity `name` on another node (or on none for
    /// now): it lost the entity's partition.
    fn serves(&self, name: &str) -> bool {
        let placement = self.hub.placement.read().unwrap_or_else(|p| p.into_inner()).clone();
        placement.is_none_or(|placement| placement.place(&self.key(name)) == crate::Place::Here)
    }

    /// Drops an entity that failed on a node that no longer serves it: it is not restarted here
    /// (where it could only fail again, its writes fenced) and leaves no failed record; whoever
    /// waited for it routes again.
    fn forget(&mut self, name: String, error: String) {
        let key = self.key(&name).to_string();
        tracing::debug!(%key, %error, "an entity failed where its partition is no longer served; not restarted here");
        let Some(child) = self.children.remove(&name) else { return };
        self.hub.registry.remove(&child.stats);
        let waiters = match child.phase {
            Phase::Starting(waiters) | Phase::Stopping(waiters) | Phase::Backoff(waiters) => waiters,
            Phase::Running(_) | Phase::Failed(_) => Vec::new(),
        };
        for waiter in waiters {
            let reason = format!("it failed on a node that no longer serves it: {error}");
            let _ = waiter.send(Err(DirectoryError::Moving { key: key.clone(), reason }));
        }
    }

    fn respawn(&mut self, name: String, generation: u64) {
        let Some(child) = self.children.get_mut(&name) else { return };
        if child.generation != generation {
            return;
        }
        // Only a child still waiting out its backoff restarts; a reset may have started it already.
        if let Phase::Backoff(waiters) = &mut child.phase {
            child.phase = Phase::Starting(std::mem::take(waiters));
            self.start(&name);
        }
    }

    /// Starts `name` again from its durable state, counting one restart: a failed entity at
    /// once (its crash history cleared), a running one once it has drained: it takes no new
    /// message and stops after handling what it was sent. One already (re)starting is left to it.
    fn reset(&mut self, name: String) -> Result<(), DirectoryError> {
        let key = self.key(&name).to_string();
        let child = self.children.get_mut(&name).ok_or(DirectoryError::NotActive { key })?;
        match &child.phase {
            Phase::Failed(_) => {
                child.crashes.clear();
                child.stats.restarted();
                child.phase = Phase::Starting(Vec::new());
                self.start(&name);
            }
            Phase::Running(incarnation) => {
                child.restart = true;
                incarnation.gate.close();
                let _ = incarnation.cell.drain();
            }
            Phase::Starting(_) | Phase::Stopping(_) | Phase::Backoff(_) => {}
        }
        Ok(())
    }
}

/// True while the actor has not begun to stop.
fn alive(cell: &ActorCell) -> bool {
    cell.get_status() <= CellStatus::Upgrading
}

/// Arguments of a kind supervisor.
pub(crate) struct KindArgs {
    pub kind: ActorKind,
    pub hub: Arc<Hub>,
    pub node: ActorRef<NodeMsg>,
    pub stats: Arc<ActorStats>,
}

impl Actor for KindSupervisor {
    type Msg = KindMsg;
    type State = KindState;
    type Arguments = KindArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<KindMsg>,
        args: KindArgs,
    ) -> Result<KindState, ActorProcessingErr> {
        let state = KindState {
            myself,
            kind: args.kind,
            hub: args.hub,
            stats: args.stats,
            node: args.node,
            children: HashMap::new(),
            by_cell: HashMap::new(),
            passivated: 0,
        };
        state.stats.running(state.summary(), Arc::default());
        Ok(state)
    }

    async fn handle(
        &self,
        _myself: ActorRef<KindMsg>,
        message: KindMsg,
        state: &mut KindState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            KindMsg::Activate { name, reply } => state.activate(name, reply),
            KindMsg::Started { name, generation, gate, result } => {
                state.started(name, generation, gate, result)
            }
            KindMsg::Respawn { name, generation } => state.respawn(name, generation),
            KindMsg::Reset { name, reply } => {
                let _ = reply.send(state.reset(name));
            }
        }
        state.stats.handled_one();
        state.stats.set_state(state.summary());
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<KindMsg>,
        event: SupervisionEvent,
        state: &mut KindState,
    ) -> Result<(), ActorProcessingErr> {
        match event {
            SupervisionEvent::ActorTerminated(cell, _, reason) => state.terminated(&cell, reason),
            SupervisionEvent::ActorFailed(cell, error) => {
                let dependency = error.downcast_ref::<EntityError>().is_some_and(|e| e.dependency);
                state.failed_cell(&cell, error.to_string(), dependency)
            }
            _ => {}
        }
        state.stats.handled_one();
        state.stats.set_state(state.summary());
        Ok(())
    }
}

/// Messages of the node supervisor.
pub(crate) enum NodeMsg {
    /// An entity crashed too often and was marked failed.
    Escalated { key: String, error: String },
}

impl ractor::Message for NodeMsg {}

pub(crate) struct NodeSupervisor;

pub(crate) struct NodeState {
    hub: Arc<Hub>,
    stats: Arc<ActorStats>,
    kinds: HashMap<ActorId, ActorKind>,
    escalations: u64,
}

impl NodeState {
    fn summary(&self) -> String {
        format!("kinds={} escalations={}", self.kinds.len(), self.escalations)
    }

    async fn spawn_kind(
        &mut self,
        myself: &ActorRef<NodeMsg>,
        kind: ActorKind,
    ) -> Result<(), ActorProcessingErr> {
        let key = format!("supervisor/{kind}");
        let stats = self
            .hub
            .registry
            .get(&key)
            .unwrap_or_else(|| self.hub.registry.new_stats(key, RecordKind::Supervisor));
        self.hub.registry.insert(stats.clone());
        let args = KindArgs { kind, hub: self.hub.clone(), node: myself.clone(), stats };
        let (actor, _) = Actor::spawn_linked(None, KindSupervisor, args, myself.get_cell()).await?;
        self.kinds.insert(actor.get_id(), kind);
        self.hub.set_supervisor(kind, actor);
        Ok(())
    }
}

impl Actor for NodeSupervisor {
    type Msg = NodeMsg;
    type State = NodeState;
    type Arguments = (Arc<Hub>, Arc<ActorStats>);

    async fn pre_start(
        &self,
        myself: ActorRef<NodeMsg>,
        (hub, stats): Self::Arguments,
    ) -> Result<NodeState, ActorProcessingErr> {
        let mut state = NodeState { hub, stats, kinds: HashMap::new(), escalations: 0 };
        // Kind supervisors start before `spawn` returns, so a started directory can route at once.
        for kind in ActorKind::ALL {
            state.spawn_kind(&myself, *kind).await?;
        }
        state.stats.running(state.summary(), Arc::default());
        Ok(state)
    }

    async fn handle(
        &self,
        _myself: ActorRef<NodeMsg>,
        message: NodeMsg,
        state: &mut NodeState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            NodeMsg::Escalated { key, error } => {
                state.escalations += 1;
                state.stats.note_error(format!("{key} escalated: {error}"));
            }
        }
        state.stats.handled_one();
        state.stats.set_state(state.summary());
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<NodeMsg>,
        event: SupervisionEvent,
        state: &mut NodeState,
    ) -> Result<(), ActorProcessingErr> {
        // A kind supervisor that dies takes its entities along (ractor terminates children);
        // the new one activates them again on their next message.
        if let SupervisionEvent::ActorFailed(cell, error) = event
            && let Some(kind) = state.kinds.remove(&cell.get_id())
        {
            tracing::error!(%kind, %error, "kind supervisor crashed; restarting it");
            if let Some(stats) = state.hub.registry.get(&format!("supervisor/{kind}")) {
                stats.failed(error.to_string(), true);
            }
            state.hub.forget_kind(kind);
            state.spawn_kind(&myself, kind).await?;
        }
        state.stats.handled_one();
        state.stats.set_state(state.summary());
        Ok(())
    }
}
