//! The directory: the one way to reach an entity. `send(key, msg)` and `call(key, msg)` find the
//! entity's live incarnation (activating it through its kind supervisor on first use) and deliver.
//!
//! Delivery never loses a message to a race: a message enters an incarnation's [`Gate`] before it
//! is sent, and an incarnation that is passivating or has crashed refuses the gate or the send;
//! the directory then asks the supervisor for the next incarnation and retries. Where an entity
//! runs is the [`Placement`]'s answer (in a cluster, its partition's leader): a message for
//! another node goes to that node's directory, encoded by the one codec.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use ractor::{Actor, ActorCell, ActorRef, MessagingErr};
use serde::{Deserialize, Serialize};
use serv_storage::Storage;
use tokio::sync::oneshot;

use crate::entity::{EntityMsg, ReplyTo};
use crate::inspect::{Gate, RecordKind, Registry};
use crate::placement::{MeshRequest, Place, Placement, Query};
use crate::supervisor::{KindMsg, NodeMsg, NodeSupervisor, Spawn, Spawner};
use crate::{ActorKey, ActorKind, ActorRecord, Entity, KindMessage, SupervisionConfig, trace};

mod mesh;

/// Attempts at delivery before giving up on an entity that keeps going away.
const MAX_DELIVERY_ATTEMPTS: usize = 16;

/// Pause before asking again when two nodes disagree on an entity's owner.
pub(crate) const OWNER_RETRY: Duration = Duration::from_millis(100);

/// Longest a message waits for its entity to have a serving owner again (its partition electing
/// a leader after a node died) before it is refused as unavailable: longer than a failover
/// takes, far shorter than the call timeout, so that a cluster without a majority answers
/// promptly.
pub const FAILOVER_WAIT: Duration = Duration::from_secs(8);

/// Where a message goes.
enum Route {
    Local,
    Remote(String, Arc<dyn Placement>),
}

/// A message this node could not hand to a local entity.
pub(crate) enum Undelivered<M> {
    /// The node does not serve the entity (any more): the message, to route again.
    NotHere(M, DirectoryError),
    Failed(DirectoryError),
}

impl<M> From<Undelivered<M>> for DirectoryError {
    fn from(undelivered: Undelivered<M>) -> Self {
        match undelivered {
            Undelivered::NotHere(_, error) | Undelivered::Failed(error) => error,
        }
    }
}

/// Why a message could not be delivered or answered; the same error crosses the mesh.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum DirectoryError {
    /// The message type belongs to another kind than the key.
    #[error("{key} is not a {expected} entity")]
    WrongKind { key: String, expected: String },
    /// No entity of this kind is served by this build.
    #[error("{kind} entities are not served by this node")]
    NotServed { kind: String },
    /// The entity crashed too often and is refusing messages until reset.
    #[error("{key} failed and was escalated: {last_error}")]
    Failed { key: String, last_error: String },
    /// The entity crashed while handling this message.
    #[error("{key} crashed while handling the message")]
    Crashed { key: String },
    /// The entity refused the message with an error and restarts from its durable state.
    #[error("{key}: {message}")]
    Entity { key: String, message: String },
    /// No answer within the call timeout.
    #[error("{key} did not answer within {timeout_ms} ms")]
    Timeout { key: String, timeout_ms: u64 },
    /// The entity kept going away while the message was being delivered.
    #[error("{key} is unavailable: {reason}")]
    Unavailable { key: String, reason: String },
    /// The entity is not active on this node.
    #[error("{key} is not active")]
    NotActive { key: String },
    /// The node is shutting down.
    #[error("the node is shutting down")]
    ShuttingDown,
    /// No node serves the entity for the moment (its partition is electing a leader, or it
    /// just came to this node); ask again shortly.
    #[error("{key} is moving: {reason}")]
    Moving { key: String, reason: String },
    /// The node asked does not own the entity in its view of the cluster (views differ while
    /// membership changes; the sender asks again).
    #[error("{key} is owned by {owner}, not by the node asked")]
    NotOwner { key: String, owner: String },
}

/// A live incarnation of an entity: its actor and its gate.
#[derive(Clone)]
pub(crate) struct Incarnation {
    pub cell: ActorCell,
    pub gate: Arc<Gate>,
}

/// What the directory and the supervisors of one node share.
pub(crate) struct Hub {
    pub node_id: String,
    pub storage: Storage,
    pub config: SupervisionConfig,
    pub registry: Registry,
    stopping: AtomicBool,
    live: RwLock<HashMap<ActorKey, Incarnation>>,
    supervisors: RwLock<HashMap<ActorKind, ActorRef<KindMsg>>>,
    spawners: RwLock<HashMap<ActorKind, Arc<dyn Spawn>>>,
    pub(crate) placement: RwLock<Option<Arc<dyn Placement>>>,
    queries: RwLock<HashMap<String, Query>>,
    modules: std::sync::OnceLock<Arc<crate::module::ModuleRuntime>>,
    commit_paths: std::sync::OnceLock<CommitPaths>,
}

/// Where an entity's writes go, by its key: its partition's replicated log.
pub type CommitPaths = Arc<dyn Fn(&ActorKey) -> Arc<dyn serv_storage::CommitPath> + Send + Sync>;

impl Hub {
    /// The storage an entity of `key` reads and writes through: its writes go to its partition's
    /// log when the node has partitions, else straight to the node's group commit.
    pub(crate) fn entity_storage(&self, key: &ActorKey) -> Storage {
        match self.commit_paths.get() {
            Some(paths) => self.storage.with_commit_path(paths(key)),
            None => self.storage.clone(),
        }
    }

    pub(crate) fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    pub(crate) fn serves(&self, kind: ActorKind) -> bool {
        self.spawner(kind).is_some()
    }

    pub(crate) fn spawner(&self, kind: ActorKind) -> Option<Arc<dyn Spawn>> {
        self.spawners.read().unwrap_or_else(|p| p.into_inner()).get(&kind).cloned()
    }

    pub(crate) fn set_live(&self, key: ActorKey, incarnation: Incarnation) {
        self.live.write().unwrap_or_else(|p| p.into_inner()).insert(key, incarnation);
    }

    /// Forgets the live incarnation of `key` if it is still `cell`.
    pub(crate) fn clear_live(&self, key: &ActorKey, cell: &ActorCell) {
        let mut live = self.live.write().unwrap_or_else(|p| p.into_inner());
        if live.get(key).is_some_and(|i| i.cell.get_id() == cell.get_id()) {
            live.remove(key);
        }
    }

    /// The keys of the live incarnations that `pick` picks.
    pub(crate) fn live_keys(&self, pick: impl Fn(&ActorKey) -> bool) -> Vec<ActorKey> {
        let live = self.live.read().unwrap_or_else(|p| p.into_inner());
        live.keys().filter(|key| pick(key)).cloned().collect()
    }

    pub(crate) fn live_incarnation(&self, key: &ActorKey) -> Option<Incarnation> {
        self.live(key)
    }

    fn live(&self, key: &ActorKey) -> Option<Incarnation> {
        self.live.read().unwrap_or_else(|p| p.into_inner()).get(key).cloned()
    }

    pub(crate) fn set_supervisor(&self, kind: ActorKind, actor: ActorRef<KindMsg>) {
        self.supervisors.write().unwrap_or_else(|p| p.into_inner()).insert(kind, actor);
    }

    fn supervisor(&self, kind: ActorKind) -> Option<ActorRef<KindMsg>> {
        self.supervisors.read().unwrap_or_else(|p| p.into_inner()).get(&kind).cloned()
    }

    /// Drops every live incarnation and record of `kind` (its supervisor died and took them along).
    pub(crate) fn forget_kind(&self, kind: ActorKind) {
        self.live.write().unwrap_or_else(|p| p.into_inner()).retain(|key, _| key.kind != kind);
        self.registry.remove_kind(RecordKind::Entity(kind));
    }
}

/// Finds, activates and messages entity actors. Cheap to clone.
#[derive(Clone)]
pub struct Directory {
    hub: Arc<Hub>,
    node: ActorRef<NodeMsg>,
}

/// A directory handle that entities hold without keeping the node alive (the directory owns
/// the entities, so a strong handle would be a cycle).
#[derive(Clone)]
pub(crate) struct WeakDirectory {
    hub: std::sync::Weak<Hub>,
    node: ActorRef<NodeMsg>,
}

impl WeakDirectory {
    pub(crate) fn new(hub: &Arc<Hub>, node: ActorRef<NodeMsg>) -> Self {
        Self { hub: Arc::downgrade(hub), node }
    }

    /// The directory, unless the node is gone.
    pub(crate) fn upgrade(&self) -> Option<Directory> {
        Some(Directory { hub: self.hub.upgrade()?, node: self.node.clone() })
    }
}

impl Directory {
    /// Starts the node's supervision tree on `storage`.
    pub async fn start(storage: Storage, config: SupervisionConfig) -> Result<Self, String> {
        let node_id = storage.node_id().to_string();
        let hub = Arc::new(Hub {
            node_id: node_id.clone(),
            storage,
            config,
            registry: Registry::new(&node_id),
            stopping: AtomicBool::new(false),
            live: RwLock::default(),
            supervisors: RwLock::default(),
            spawners: RwLock::default(),
            placement: RwLock::default(),
            queries: RwLock::default(),
            modules: std::sync::OnceLock::new(),
            commit_paths: std::sync::OnceLock::new(),
        });
        let stats = hub.registry.new_stats("supervisor/node".into(), RecordKind::Node);
        hub.registry.insert(stats.clone());
        let (node, _) = Actor::spawn(None, NodeSupervisor, (hub.clone(), stats))
            .await
            .map_err(|e| format!("cannot start the node supervisor: {e}"))?;
        Ok(Self { hub, node })
    }

    /// Serves entities of type `E`: from now on their kind's supervisor can activate them.
    pub fn register<E: Entity>(&self) {
        let kind = <E::Msg as KindMessage>::KIND;
        let spawner: Arc<dyn Spawn> = Arc::new(Spawner::<E>::new());
        self.hub.spawners.write().unwrap_or_else(|p| p.into_inner()).insert(kind, spawner);
    }

    /// Sends every entity's writes through the commit path `paths` gives for its key (once, at
    /// start, before any entity is activated).
    pub fn set_commit_paths(&self, paths: CommitPaths) {
        let _ = self.hub.commit_paths.set(paths);
    }

    /// Gives the node's entities and edges its module runtime (once, at start).
    pub fn set_modules(&self, runtime: Arc<crate::module::ModuleRuntime>) {
        let _ = self.hub.modules.set(runtime);
    }

    /// The node's module runtime (`None` on a node started without one, as in some tests).
    pub fn modules(&self) -> Option<&Arc<crate::module::ModuleRuntime>> {
        self.hub.modules.get()
    }

    /// The id of the node this directory runs on.
    pub fn node_id(&self) -> &str {
        &self.hub.node_id
    }

    /// True while the supervision tree is up and not shutting down.
    pub fn is_ready(&self) -> bool {
        !self.hub.is_stopping() && ActorKind::ALL.iter().all(|kind| self.hub.supervisor(*kind).is_some())
    }

    /// Inspection records of every actor on this node, in key order.
    pub fn records(&self) -> Vec<ActorRecord> {
        self.hub.registry.records()
    }

    /// The node's registry of actor stats and per-kind totals.
    pub fn registry(&self) -> &Registry {
        &self.hub.registry
    }

    /// Delivers `msg` to the entity `key` without waiting for it to be handled.
    ///
    /// Waits (up to the call timeout) only while the entity is being activated or restarted.
    /// Delivery is to the mailbox: a message queued behind one that crashes the entity goes down
    /// with that incarnation, so anything a client is told succeeded must go through [`call`].
    ///
    /// [`call`]: Directory::call
    pub async fn send<M: KindMessage>(&self, key: &ActorKey, mut msg: M) -> Result<(), DirectoryError> {
        let deadline = tokio::time::Instant::now() + self.hub.config.call_timeout;
        loop {
            match self.route::<M>(key, deadline).await? {
                Route::Remote(owner, placement) => {
                    match self.forward(&*placement, &owner, key, &msg, false, deadline).await {
                        Err(DirectoryError::Moving { .. }) if tokio::time::Instant::now() < deadline => {
                            continue;
                        }
                        outcome => return outcome.map(drop),
                    }
                }
                Route::Local => match tokio::time::timeout_at(deadline, self.deliver(key, msg, None)).await {
                    Err(_) => return Err(self.timed_out(key)),
                    Ok(Err(Undelivered::NotHere(back, _))) if tokio::time::Instant::now() < deadline => {
                        msg = back;
                    }
                    Ok(outcome) => return outcome.map_err(DirectoryError::from),
                },
            }
        }
    }

    fn timed_out(&self, key: &ActorKey) -> DirectoryError {
        let timeout_ms = u64::try_from(self.hub.config.call_timeout.as_millis()).unwrap_or(u64::MAX);
        DirectoryError::Timeout { key: key.to_string(), timeout_ms }
    }

    /// Delivers `msg` to the entity `key` and waits for its answer (up to the call timeout).
    pub async fn call<M: KindMessage>(&self, key: &ActorKey, mut msg: M) -> Result<M::Reply, DirectoryError> {
        let deadline = tokio::time::Instant::now() + self.hub.config.call_timeout;
        loop {
            match self.route::<M>(key, deadline).await? {
                Route::Remote(owner, placement) => {
                    let answer = match self.forward(&*placement, &owner, key, &msg, true, deadline).await {
                        Err(DirectoryError::Moving { .. }) if tokio::time::Instant::now() < deadline => {
                            continue;
                        }
                        answer => answer?,
                    };
                    return serv_storage::codec::decode(&answer).map_err(|error| {
                        DirectoryError::Unavailable {
                            key: key.to_string(),
                            reason: format!("node {owner} answered with an undecodable reply: {error}"),
                        }
                    });
                }
                Route::Local => match self.call_here(key, msg, deadline).await {
                    Err(Undelivered::NotHere(back, _)) if tokio::time::Instant::now() < deadline => {
                        msg = back
                    }
                    outcome => return outcome.map_err(DirectoryError::from),
                },
            }
        }
    }

    /// Delivers `msg` to the entity `key` on this node and waits for its answer.
    pub(crate) async fn call_here<M: KindMessage>(
        &self,
        key: &ActorKey,
        msg: M,
        deadline: tokio::time::Instant,
    ) -> Result<M::Reply, Undelivered<M>> {
        let (reply, answer) = oneshot::channel();
        tokio::time::timeout_at(deadline, self.deliver(key, msg, Some(reply)))
            .await
            .map_err(|_| Undelivered::Failed(self.timed_out(key)))??;
        match tokio::time::timeout_at(deadline, answer).await {
            Err(_) => Err(Undelivered::Failed(self.timed_out(key))),
            Ok(Err(_)) => Err(Undelivered::Failed(DirectoryError::Crashed { key: key.to_string() })),
            Ok(Ok(answer)) => answer.map_err(Undelivered::Failed),
        }
    }

    /// Uses `placement` to find where entities live and to reach other nodes' directories.
    pub fn set_placement(&self, placement: Arc<dyn Placement>) {
        *self.hub.placement.write().unwrap_or_else(|p| p.into_inner()) = Some(placement);
    }

    /// False until this node has joined its cluster.
    pub fn is_joined(&self) -> bool {
        self.placement().is_none_or(|placement| placement.joined())
    }

    /// False while the partitions this node leads are still moving to their replica sets.
    pub fn is_settled(&self) -> bool {
        self.placement().is_none_or(|placement| placement.settled())
    }

    /// Where `key` lives as this node sees the cluster now (always here on a lone node).
    pub fn place(&self, key: &ActorKey) -> Place {
        self.placement().map_or(Place::Here, |placement| placement.place(key))
    }

    pub(crate) fn hub(&self) -> &Hub {
        &self.hub
    }

    pub(crate) fn placement(&self) -> Option<Arc<dyn Placement>> {
        self.hub.placement.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Where a message for `key` goes: this node, or the owner's directory. A key whose
    /// replicas are all down is [`DirectoryError::Unavailable`] at once rather than a wait for
    /// the timeout; a key without a serving owner for the moment (an election, a move) is
    /// waited for, up to [`FAILOVER_WAIT`] and never past `deadline`.
    async fn route<M: KindMessage>(
        &self,
        key: &ActorKey,
        deadline: tokio::time::Instant,
    ) -> Result<Route, DirectoryError> {
        if key.kind != M::KIND {
            return Err(DirectoryError::WrongKind { key: key.to_string(), expected: M::KIND.to_string() });
        }
        let Some(placement) = self.placement() else { return Ok(Route::Local) };
        let give_up = deadline.min(tokio::time::Instant::now() + FAILOVER_WAIT);
        loop {
            return match placement.place(key) {
                Place::Here => Ok(Route::Local),
                Place::There(owner) => Ok(Route::Remote(owner, placement)),
                Place::Nowhere(reason) => Err(DirectoryError::Unavailable { key: key.to_string(), reason }),
                Place::Moving(_) if tokio::time::Instant::now() < give_up => {
                    tokio::time::sleep(OWNER_RETRY).await;
                    continue;
                }
                Place::Moving(reason) => Err(DirectoryError::Unavailable { key: key.to_string(), reason }),
            };
        }
    }

    /// Passivates an entity on whichever node owns it: it stops once it has handled what it
    /// was sent, and starts again from durable state on its next message. `NotActive` if it is
    /// not running there.
    pub async fn passivate(&self, key: &ActorKey) -> Result<(), DirectoryError> {
        if let Place::There(owner) = self.place(key) {
            return self.ask_node(&owner, key, &MeshRequest::Passivate { key: key.clone() }).await.map(drop);
        }
        if self.hub().live_incarnation(key).is_none() {
            return Err(DirectoryError::NotActive { key: key.to_string() });
        }
        self.evict(key).await
    }

    /// Restarts an entity from its durable state, on whichever node owns it, counting one
    /// restart: a failed one (its crash history cleared) at once, a running one after it has
    /// handled what it was already sent. `NotActive` if it is not running there.
    pub async fn reset(&self, key: &ActorKey) -> Result<(), DirectoryError> {
        if let Place::There(owner) = self.place(key) {
            return self.ask_node(&owner, key, &MeshRequest::Reset { key: key.clone() }).await.map(drop);
        }
        let supervisor = self.supervisor_of(key)?;
        // A running entity takes no new message from now on and finishes what it was sent.
        self.close_gate(key);
        let (reply, answer) = oneshot::channel();
        supervisor
            .cast(KindMsg::Reset { name: key.name.clone(), reply })
            .map_err(|_| DirectoryError::ShuttingDown)?;
        answer.await.map_err(|_| DirectoryError::ShuttingDown)?
    }

    /// Closes the gate of `key`'s live incarnation at once, whatever it holds (new messages then
    /// wait for the next incarnation), and returns that incarnation; `None` if none is live.
    /// The caller drains it, so what it was already sent is still handled: waiting for an empty
    /// mailbox instead would never end for an entity under steady traffic.
    pub(crate) fn close_gate(&self, key: &ActorKey) -> Option<Incarnation> {
        let live = self.hub().live_incarnation(key)?;
        live.gate.close();
        Some(live)
    }

    /// Hands `msg` to the entity `key` on this node, activating it if needed; gives the message
    /// back if this node does not serve the entity (any more), for the caller to route again.
    pub(crate) async fn deliver<M: KindMessage>(
        &self,
        key: &ActorKey,
        msg: M,
        reply: Option<ReplyTo<M>>,
    ) -> Result<(), Undelivered<M>> {
        if key.kind != M::KIND {
            let expected = M::KIND.to_string();
            return Err(Undelivered::Failed(DirectoryError::WrongKind { key: key.to_string(), expected }));
        }
        let mut envelope = EntityMsg::Deliver { msg, reply, traceparent: trace::current_traceparent() };
        for attempt in 0..MAX_DELIVERY_ATTEMPTS {
            let incarnation = match self.hub.live(key) {
                Some(live) if attempt == 0 => live,
                _ => match self.activate(key).await {
                    Ok(incarnation) => incarnation,
                    Err(error @ DirectoryError::Moving { .. }) => {
                        let EntityMsg::Deliver { msg, .. } = envelope else {
                            unreachable!("only deliveries are sent here")
                        };
                        return Err(Undelivered::NotHere(msg, error));
                    }
                    Err(error) => return Err(Undelivered::Failed(error)),
                },
            };
            if !incarnation.gate.try_enter() {
                tokio::task::yield_now().await;
                continue;
            }
            match incarnation.cell.send_message(envelope) {
                Ok(()) => return Ok(()),
                Err(MessagingErr::SendErr(returned)) => {
                    // Its mailbox is gone though its status may not say so yet: make sure the
                    // supervisor does not hand out this incarnation again.
                    incarnation.gate.close();
                    incarnation.gate.leave();
                    envelope = returned;
                    tokio::task::yield_now().await;
                }
                Err(error) => {
                    incarnation.gate.leave();
                    let reason = error.to_string();
                    return Err(Undelivered::Failed(DirectoryError::Unavailable {
                        key: key.to_string(),
                        reason,
                    }));
                }
            }
        }
        let reason = "it kept stopping during delivery".into();
        Err(Undelivered::Failed(DirectoryError::Unavailable { key: key.to_string(), reason }))
    }

    fn supervisor_of(&self, key: &ActorKey) -> Result<ActorRef<KindMsg>, DirectoryError> {
        if self.hub.is_stopping() {
            return Err(DirectoryError::ShuttingDown);
        }
        self.hub.supervisor(key.kind).ok_or_else(|| DirectoryError::Unavailable {
            key: key.to_string(),
            reason: "its supervisor is restarting".into(),
        })
    }

    /// Asks the kind supervisor for the live incarnation of `key`, starting it if needed; an
    /// entity this node does not serve (any more) is `Moving` instead, never started here.
    async fn activate(&self, key: &ActorKey) -> Result<Incarnation, DirectoryError> {
        if let Some(placement) = self.placement() {
            match placement.place(key) {
                Place::Here => {}
                Place::Moving(reason) | Place::Nowhere(reason) => {
                    return Err(DirectoryError::Moving { key: key.to_string(), reason });
                }
                Place::There(node) => {
                    let reason = format!("node {node} serves it");
                    return Err(DirectoryError::Moving { key: key.to_string(), reason });
                }
            }
        }
        let supervisor = self.supervisor_of(key)?;
        let (reply, answer) = oneshot::channel();
        supervisor.cast(KindMsg::Activate { name: key.name.clone(), reply }).map_err(|_| {
            DirectoryError::Unavailable { key: key.to_string(), reason: "its supervisor stopped".into() }
        })?;
        answer.await.map_err(|_| DirectoryError::Unavailable {
            key: key.to_string(),
            reason: "its supervisor stopped".into(),
        })?
    }

    /// Stops taking messages, lets every entity finish what is in its mailbox, then stops the
    /// supervision tree; gives up waiting after `timeout`.
    pub async fn shutdown(&self, timeout: Duration) {
        self.hub.stopping.store(true, Ordering::Release);
        let supervisors: Vec<_> =
            self.hub.supervisors.read().unwrap_or_else(|p| p.into_inner()).values().cloned().collect();
        let drain_all = async {
            for supervisor in &supervisors {
                supervisor.get_cell().drain_children_and_wait(Some(timeout)).await;
            }
        };
        let _ = tokio::time::timeout(timeout, drain_all).await;
        let _ = self.node.stop_and_wait(Some("shutdown".into()), Some(timeout)).await;
    }
}
