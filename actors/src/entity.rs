//! Entities: the [`Entity`] trait a kind implements, and the ractor actor that runs one.
//!
//! An entity's durable state lives in storage; the actor holds a loaded copy. `load` rebuilds it
//! from storage on activation and after every crash, so a restart never loses what was committed.
//! `handle` returns the reply to the sender; a domain refusal (no such key, say) belongs in the
//! reply type, while an `Err` means the loaded state can no longer be trusted: the caller gets the
//! error and the actor is restarted from storage.

use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serv_storage::{Storage, StorageError};
use tokio::sync::oneshot;
use tracing::Instrument;

use crate::directory::WeakDirectory;
use crate::inspect::{ActorStats, Gate};
use crate::{ActorKey, ActorKind, Directory, DirectoryError, trace};

/// The message enum of one entity kind: what can be asked of it, and what it answers.
///
/// Messages are serde types encoded by [`serv_storage::codec`] when they cross the mesh.
pub trait KindMessage: Serialize + DeserializeOwned + Send + 'static {
    /// The kind of entity these messages are for.
    const KIND: ActorKind;
    /// What the entity answers to one message.
    type Reply: Serialize + DeserializeOwned + Send + 'static;

    /// True for a message that changes nothing (a read): when the node that had it goes down or
    /// is deposed before it answers, the directory sends it again to the next leader rather
    /// than tell the caller it may have been handled.
    fn is_read_only(&self) -> bool {
        false
    }
}

/// A kind of entity: how it loads from storage and handles its messages.
pub trait Entity: Sized + Send + Sync + 'static {
    /// The kind's message enum.
    type Msg: KindMessage;

    /// Loads the entity's state from storage (first activation, reactivation, restart).
    fn load(ctx: &EntityContext) -> impl Future<Output = Result<Self, EntityError>> + Send;

    /// Handles one message; `Err` restarts the entity from its durable state.
    fn handle(
        &mut self,
        msg: Self::Msg,
        ctx: &EntityContext,
    ) -> impl Future<Output = Result<Reply<Self>, EntityError>> + Send;

    /// One-line summary of the state for the inspection record.
    fn summary(&self) -> String;

    /// False while the entity holds work that passivation would drop (answers it owes later).
    fn can_passivate(&self) -> bool {
        true
    }
}

/// The reply type of an entity.
pub type Reply<E> = <<E as Entity>::Msg as KindMessage>::Reply;

/// What the reply of a pipelined message waits for: a commit to be durable (then the handler's
/// answer is sent), or the answer itself, computed later.
pub(crate) type Deferred = std::pin::Pin<
    Box<dyn Future<Output = Result<Option<Box<dyn std::any::Any + Send>>, StorageError>> + Send>,
>;

/// What an entity knows about where it runs.
#[derive(Clone)]
pub struct EntityContext {
    /// The entity's own key.
    pub key: ActorKey,
    /// The node's storage.
    pub storage: Storage,
    /// The id of the node it runs on.
    pub node_id: String,
    /// What the current message's reply waits for (see [`EntityContext::reply_when_durable`]).
    pub(crate) deferred: Arc<std::sync::Mutex<Option<Deferred>>>,
    directory: WeakDirectory,
}

impl EntityContext {
    pub(crate) fn new(key: ActorKey, storage: Storage, node_id: String, directory: WeakDirectory) -> Self {
        Self { key, storage, node_id, deferred: Default::default(), directory }
    }

    /// The node's directory, to message other entities (`None` once the node is shutting down).
    /// An entity must not `call` an entity that may `call` it back: two actors waiting on each
    /// other would both time out. `send` never waits.
    pub fn directory(&self) -> Option<Directory> {
        self.directory.upgrade()
    }

    /// Answers the current message later, with what `answer` resolves to (a long poll: the
    /// entity handles other messages meanwhile). The reply the handler returns is dropped.
    /// `R` must be the kind's reply type; anything else answers the sender with an error.
    pub fn reply_later<R: Send + 'static>(&self, answer: impl Future<Output = R> + Send + 'static) {
        let later = async move { Ok(Some(Box::new(answer.await) as Box<dyn std::any::Any + Send>)) };
        *self.deferred.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Box::pin(later));
    }

    /// Pipelines the current message: its reply is sent once `staged` is durable, and the
    /// entity goes on to its next message meanwhile. The entity must keep its own view of what it
    /// staged until the commit is applied (see [`serv_storage::Storage::stage`]). If the commit fails, the
    /// sender gets an error instead of the reply.
    pub fn reply_when_durable(
        &self,
        staged: impl Future<Output = Result<(), StorageError>> + Send + 'static,
    ) {
        let durable = async move { staged.await.map(|()| None) };
        *self.deferred.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Box::pin(durable));
    }

    fn take_deferred(&self) -> Option<Deferred> {
        self.deferred.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take()
    }
}

/// Why an entity could not load or handle a message.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct EntityError {
    pub message: String,
    /// Another entity it needed could not be reached (its owner down, moving, slow). That is not
    /// this entity's fault: its caller is told `Unavailable`, and the restart does not count
    /// towards escalation, so an outage elsewhere never leaves this entity failed for good.
    pub dependency: bool,
}

impl EntityError {
    /// The entity's own failure (bad state, storage).
    pub fn new(message: impl Into<String>) -> Self {
        EntityError { message: message.into(), dependency: false }
    }

    /// Another entity this one needed could not be reached.
    pub fn dependency(message: impl Into<String>) -> Self {
        EntityError { message: message.into(), dependency: true }
    }
}

impl From<StorageError> for EntityError {
    fn from(error: StorageError) -> Self {
        EntityError::new(error.to_string())
    }
}

/// Where the answer to a message goes, if the sender waits for one.
pub(crate) type ReplyTo<M> = oneshot::Sender<Result<<M as KindMessage>::Reply, DirectoryError>>;

/// The ractor message of an entity actor of message type `M`.
pub enum EntityMsg<M: KindMessage> {
    /// A message from the directory, with the trace it belongs to.
    Deliver { msg: M, reply: Option<ReplyTo<M>>, traceparent: Option<String> },
    /// Periodic check for passivation.
    Tick,
}

// Local-only envelope: the serializable part is `M`, which crosses the mesh through the codec.
impl<M: KindMessage> ractor::Message for EntityMsg<M> {}

/// Runs one entity of type `E`.
pub(crate) struct EntityActor<E>(PhantomData<fn() -> E>);

impl<E> EntityActor<E> {
    pub(crate) fn new() -> Self {
        Self(PhantomData)
    }
}

/// What an entity actor is started with.
pub(crate) struct EntityArgs {
    pub ctx: EntityContext,
    pub stats: Arc<ActorStats>,
    pub gate: Arc<Gate>,
    pub passivate_after: Duration,
    pub tick: Duration,
}

pub(crate) struct EntityState<E> {
    entity: E,
    args: EntityArgs,
    ticker: Option<tokio::task::JoinHandle<()>>,
}

impl<E: Entity> Actor for EntityActor<E> {
    type Msg = EntityMsg<E::Msg>;
    type State = EntityState<E>;
    type Arguments = EntityArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: EntityArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let entity = E::load(&args.ctx).await?;
        Ok(EntityState { entity, args, ticker: None })
    }

    async fn post_start(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        state.args.stats.running(state.entity.summary(), state.args.gate.clone());
        state.ticker = Some(myself.send_interval(state.args.tick, || EntityMsg::Tick));
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(ticker) = state.ticker.take() {
            ticker.abort();
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            EntityMsg::Deliver { msg, reply, traceparent } => {
                let span = tracing::info_span!("entity", key = %state.args.ctx.key);
                trace::link_parent(&span, traceparent.as_deref());
                let outcome = state.entity.handle(msg, &state.args.ctx).instrument(span).await;
                state.args.gate.leave();
                state.args.stats.handled_one();
                // The summary is formatted once the mailbox runs dry, not for every message of a
                // burst; it is current again before the last sender gets its answer.
                if state.args.gate.pending() == 0 {
                    state.args.stats.set_state(state.entity.summary());
                }
                let deferred = state.args.ctx.take_deferred();
                match outcome {
                    Ok(answer) => {
                        match (reply, deferred) {
                            (Some(reply), Some(staged)) => {
                                let key = state.args.ctx.key.to_string();
                                tokio::spawn(async move {
                                    let answer = match staged.await {
                                        Ok(None) => Ok(answer),
                                        Ok(Some(later)) => {
                                            later.downcast::<Reply<E>>().map(|a| *a).map_err(|_| {
                                                DirectoryError::Entity {
                                                    key,
                                                    message: "a deferred answer of the wrong type".into(),
                                                }
                                            })
                                        }
                                        Err(error) => {
                                            Err(DirectoryError::Entity { key, message: error.to_string() })
                                        }
                                    };
                                    let _ = reply.send(answer);
                                });
                            }
                            (Some(reply), None) => {
                                let _ = reply.send(Ok(answer));
                            }
                            (None, _) => {}
                        }
                        Ok(())
                    }
                    Err(error) => {
                        if let Some(reply) = reply {
                            let (key, message) = (state.args.ctx.key.to_string(), error.message.clone());
                            let _ = reply.send(Err(if error.dependency {
                                DirectoryError::Unavailable { key, reason: message }
                            } else {
                                DirectoryError::Entity { key, message }
                            }));
                        }
                        Err(error.into())
                    }
                }
            }
            EntityMsg::Tick => {
                if state.args.stats.idle_for() >= state.args.passivate_after
                    && state.entity.can_passivate()
                    && state.args.gate.try_close()
                {
                    tracing::debug!(key = %state.args.ctx.key, "passivating idle entity");
                    myself.stop(Some(PASSIVATED.to_string()));
                }
                Ok(())
            }
        }
    }
}

/// Stop reason of an entity that passivated itself.
pub(crate) const PASSIVATED: &str = "passivated";
