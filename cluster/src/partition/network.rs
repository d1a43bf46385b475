//! How a partition's Raft group reaches its other replicas: Raft RPCs over the node's QUIC mesh.
//!
//! Every group of a node talks to a peer over the one mesh connection to that peer: an RPC is a
//! bi-directional stream of kind [`StreamKind::Raft`] on it (QUIC streams are multiplexed and cost
//! no round trip to open), carrying one length-prefixed request naming its partition and the node
//! it is for, and answered by one length-prefixed reply. The receiving node hands the request to
//! its group of that partition ([`RaftServer`]).
//!
//! A replica behind the leader's purged log gets the partition's rows (see [`super::machine`]).
//!
//! A group with one replica never sends an RPC; should openraft ask for a client on a node with
//! no transport, the peer is reported unreachable, which openraft treats as "back off and
//! retry", never as success.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use openraft::error::{
    Fatal, NetworkError, RPCError, RaftError, RemoteError, ReplicationClosed, StreamingError, Unreachable,
};
use openraft::network::RPCOption;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::{EmptyNode, Raft, RaftNetwork, RaftNetworkFactory, Snapshot, SnapshotMeta, Vote};
use serde::{Deserialize, Serialize};
use serv_storage::{OwnedRow, Storage, codec};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

use super::leave::Standing;
use super::machine::read_out;
use super::{PartitionSnapshot, Slots, TypeConfig, node_name};
use crate::membership::MemberView;
use crate::mesh::{IncomingStream, Mesh, StreamKind};

/// Largest Raft request or reply a node sends or accepts, in bytes.
pub const MAX_RAFT_FRAME_BYTES: u32 = 64 * 1024 * 1024;

/// Largest snapshot (a partition's rows: metadata, never object bodies) sent in one message; a
/// larger partition waits for snapshots sent in parts.
pub const MAX_SNAPSHOT_BYTES: usize = MAX_RAFT_FRAME_BYTES as usize - 1024 * 1024;

/// How long a node waits for the rest of a request once a peer opened its stream.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a leader handing a partition over waits for the successor to say it called the
/// election: the partition is not served meanwhile.
const ELECT_TIMEOUT: Duration = Duration::from_secs(1);

/// What one node's group asks a peer's group of the same partition.
#[derive(Serialize, Deserialize)]
enum Request {
    Append(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<u64>),
    /// The partition's rows as of `meta`'s log point, for a replica behind the leader's log.
    Snapshot {
        vote: Vote<u64>,
        meta: SnapshotMeta<u64, EmptyNode>,
        rows: Vec<OwnedRow>,
    },
    /// Stand for election now: the leader is handing the partition over.
    Elect,
    /// Where the group stands as this replica sees it: asked by a node that may have left the
    /// replica set, before it drops its copy (see [`super::leave`]).
    Standing,
}

/// A request with its address: the partition, and the node it is meant for (a peer that now
/// runs under another id at the same address refuses it).
#[derive(Serialize, Deserialize)]
struct Envelope {
    partition: u64,
    to: u64,
    request: Request,
}

#[derive(Serialize, Deserialize)]
enum Reply {
    Append(Result<AppendEntriesResponse<u64>, RaftError<u64>>),
    Vote(Result<VoteResponse<u64>, RaftError<u64>>),
    Snapshot(Result<SnapshotResponse<u64>, Fatal<u64>>),
    /// The election was called (its outcome shows in the leader's metrics), or why not.
    Elect(Result<(), String>),
    Standing(Standing),
    /// The request could not be handed to a group (no such partition, not this node, not ready).
    Refused(String),
}

/// Reaches the partition groups of other nodes over the mesh, by node id. Cheap to clone.
#[derive(Clone)]
pub struct RaftTransport {
    mesh: Mesh,
    view: watch::Receiver<Vec<MemberView>>,
    /// What a simulated network does to each RPC (tests only).
    #[cfg(test)]
    weather: Option<Weather>,
}

/// What a simulated network does to an RPC, asked with the node it is for and its partition.
#[cfg(test)]
pub(crate) type Weather = Arc<dyn Fn(u64, u64) -> Fate + Send + Sync>;

/// One RPC's fate on a simulated network.
#[cfg(test)]
#[derive(Clone, Copy, Debug)]
pub(crate) enum Fate {
    Deliver,
    /// The request is lost: the caller hears nothing within its time to live.
    Drop,
    /// The request arrives and is acted on; the reply is lost.
    LoseReply,
    Delay(Duration),
    /// The request arrives twice (both are acted on); the first reply counts.
    Duplicate,
}

impl RaftTransport {
    /// A transport over `mesh`, finding nodes' addresses in the membership `view`.
    pub fn new(mesh: Mesh, view: watch::Receiver<Vec<MemberView>>) -> Self {
        Self {
            mesh,
            view,
            #[cfg(test)]
            weather: None,
        }
    }

    /// This transport on a network that does to each RPC what `weather` says.
    #[cfg(test)]
    pub(crate) fn in_weather(self, weather: Weather) -> Self {
        Self { weather: Some(weather), ..self }
    }

    fn address_of(&self, node: u64) -> Option<SocketAddr> {
        let name = node_name(node);
        self.view.borrow().iter().find(|member| member.id == name).map(|member| member.addr)
    }

    async fn call(&self, node: u64, envelope: &Envelope, ttl: Duration) -> Result<Reply, RpcFailure> {
        let addr = self.address_of(node).ok_or(RpcFailure::Unknown)?;
        let body = codec::encode(envelope).map_err(|e| RpcFailure::Network(e.to_string()))?;
        #[cfg(test)]
        if let Some(weather) = &self.weather {
            let fate = weather(node, envelope.partition);
            return tokio::time::timeout(ttl, self.suffer(fate, addr, &body, ttl))
                .await
                .map_err(|_| RpcFailure::Timeout)?;
        }
        tokio::time::timeout(ttl, self.exchange(addr, &body)).await.map_err(|_| RpcFailure::Timeout)?
    }

    /// One request sent and its reply read, on a stream of its own.
    async fn exchange(&self, addr: SocketAddr, body: &[u8]) -> Result<Reply, RpcFailure> {
        let (mut send, mut recv) = self
            .mesh
            .open(addr, StreamKind::Raft)
            .await
            .map_err(|e| RpcFailure::Unreachable(e.to_string()))?;
        write_frame(&mut send, body).await.map_err(RpcFailure::Network)?;
        let _ = send.finish();
        let answer = read_frame(&mut recv).await.map_err(RpcFailure::Network)?;
        codec::decode::<Reply>(&answer).map_err(|e| RpcFailure::Network(e.to_string()))
    }

    /// The exchange as the simulated network's `fate` for it has it.
    #[cfg(test)]
    async fn suffer(
        &self,
        fate: Fate,
        addr: SocketAddr,
        body: &[u8],
        ttl: Duration,
    ) -> Result<Reply, RpcFailure> {
        match fate {
            Fate::Deliver => self.exchange(addr, body).await,
            Fate::Drop => {
                tokio::time::sleep(ttl).await;
                Err(RpcFailure::Timeout)
            }
            Fate::LoseReply => {
                let _ = self.exchange(addr, body).await;
                Err(RpcFailure::Timeout)
            }
            Fate::Delay(delay) => {
                tokio::time::sleep(delay).await;
                self.exchange(addr, body).await
            }
            Fate::Duplicate => {
                futures_util::future::join(self.exchange(addr, body), self.exchange(addr, body)).await.0
            }
        }
    }
}

impl RaftTransport {
    /// Asks `node`'s group of `partition` to stand for election at once.
    pub(crate) async fn ask_to_elect(&self, partition: u64, node: u64) -> Result<(), String> {
        let envelope = Envelope { partition, to: node, request: Request::Elect };
        match self.call(node, &envelope, ELECT_TIMEOUT).await {
            Ok(Reply::Elect(outcome)) => outcome,
            Ok(Reply::Refused(reason)) => Err(format!("node {} refused: {reason}", node_name(node))),
            Ok(_) => Err(format!("node {} answered another request", node_name(node))),
            Err(failure) => Err(failure.into_unreachable(node).to_string()),
        }
    }

    /// Asks `node`'s group of `partition` where the group stands.
    pub(crate) async fn ask_standing(&self, partition: u64, node: u64) -> Result<Standing, String> {
        let envelope = Envelope { partition, to: node, request: Request::Standing };
        match self.call(node, &envelope, ELECT_TIMEOUT).await {
            Ok(Reply::Standing(standing)) => Ok(standing),
            Ok(Reply::Refused(reason)) => Err(format!("node {} refused: {reason}", node_name(node))),
            Ok(_) => Err(format!("node {} answered another request", node_name(node))),
            Err(failure) => Err(failure.into_unreachable(node).to_string()),
        }
    }
}

/// Calls an election in `raft` (this node's group, `me` in it), if this node is one of its voters.
async fn stand_for_election(raft: &Raft<TypeConfig>, me: u64) -> Result<(), String> {
    let voter = raft.metrics().borrow().membership_config.membership().voter_ids().any(|id| id == me);
    if !voter {
        return Err(format!("node {} is not a voter of this partition", node_name(me)));
    }
    raft.trigger().elect().await.map_err(|e| e.to_string())
}

/// Why an RPC got no answer from the peer's group.
enum RpcFailure {
    /// The peer is not in the membership view.
    Unknown,
    Unreachable(String),
    Network(String),
    Timeout,
}

impl RpcFailure {
    fn into_unreachable(self, peer: u64) -> Unreachable {
        unreachable(match self {
            RpcFailure::Unknown => format!("node {} is not a known member", node_name(peer)),
            RpcFailure::Unreachable(reason) => format!("node {}: {reason}", node_name(peer)),
            RpcFailure::Network(reason) => format!("node {}: {reason}", node_name(peer)),
            RpcFailure::Timeout => format!("node {} did not answer in time", node_name(peer)),
        })
    }
}

async fn write_frame(send: &mut quinn::SendStream, body: &[u8]) -> Result<(), String> {
    let len = u32::try_from(body.len()).ok().filter(|len| *len <= MAX_RAFT_FRAME_BYTES).ok_or_else(|| {
        format!("a Raft message of {} bytes is over the {MAX_RAFT_FRAME_BYTES}-byte limit", body.len())
    })?;
    send.write_u32(len).await.map_err(|e| e.to_string())?;
    send.write_all(body).await.map_err(|e| e.to_string())
}

async fn read_frame(recv: &mut quinn::RecvStream) -> Result<Vec<u8>, String> {
    let len = recv.read_u32().await.map_err(|e| e.to_string())?;
    if len > MAX_RAFT_FRAME_BYTES {
        return Err(format!("a Raft message of {len} bytes is over the {MAX_RAFT_FRAME_BYTES}-byte limit"));
    }
    let mut body = vec![0; len as usize];
    recv.read_exact(&mut body).await.map_err(|e| e.to_string())?;
    Ok(body)
}

/// Hands Raft requests that peers send this node to its partition groups.
#[derive(Clone, Default)]
pub struct RaftServer {
    node: Arc<RwLock<Option<(u64, Arc<Slots>)>>>,
}

impl RaftServer {
    /// Serves the Raft streams peers open on `mesh`; requests are refused until
    /// [`RaftServer::install`] gives it this node's groups.
    pub fn serve(mesh: &Mesh) -> Self {
        let server = Self::default();
        let mut streams = mesh.streams(StreamKind::Raft);
        let serving = server.clone();
        tokio::spawn(async move {
            while let Some(stream) = streams.recv().await {
                tokio::spawn(serving.clone().answer(stream));
            }
        });
        server
    }

    pub(super) fn install(&self, node: u64, groups: Arc<Slots>) {
        *self.node.write().unwrap_or_else(PoisonError::into_inner) = Some((node, groups));
    }

    async fn answer(self, stream: IncomingStream) {
        let IncomingStream { from, mut send, mut recv } = stream;
        let request = match tokio::time::timeout(REQUEST_TIMEOUT, read_frame(&mut recv)).await {
            Ok(Ok(body)) => body,
            Ok(Err(reason)) => {
                tracing::debug!(%from, %reason, "Raft request unreadable");
                return;
            }
            Err(_) => return,
        };
        let reply = match codec::decode::<Envelope>(&request) {
            Ok(envelope) => self.dispatch(envelope).await,
            Err(error) => Reply::Refused(format!("undecodable Raft request: {error}")),
        };
        if let Ok(body) = codec::encode(&reply) {
            let _ = write_frame(&mut send, &body).await;
            let _ = send.finish();
        }
    }

    async fn dispatch(&self, envelope: Envelope) -> Reply {
        let installed = self.node.read().unwrap_or_else(PoisonError::into_inner).clone();
        let Some((node, groups)) = installed else {
            return Reply::Refused("this node's partitions are not started yet".into());
        };
        if envelope.to != node {
            return Reply::Refused(format!(
                "this is node {}, not {}",
                node_name(node),
                node_name(envelope.to)
            ));
        }
        let Some(slot) = groups.get(envelope.partition as usize) else {
            return Reply::Refused(format!("no partition {} on this node", envelope.partition));
        };
        let group = slot.read().unwrap_or_else(PoisonError::into_inner).clone();
        let raft = &group.raft;
        match envelope.request {
            Request::Append(request) => Reply::Append(raft.append_entries(request).await),
            Request::Vote(request) => match group.refuses_vote(&request) {
                Some(refusal) => Reply::Vote(Ok(refusal)),
                None => Reply::Vote(raft.vote(request).await),
            },
            Request::Snapshot { vote, meta, rows } => {
                let snapshot = Snapshot { meta, snapshot: Box::new(PartitionSnapshot::Rows(rows)) };
                Reply::Snapshot(raft.install_full_snapshot(vote, snapshot).await)
            }
            Request::Elect => Reply::Elect(stand_for_election(raft, node).await),
            Request::Standing => Reply::Standing(group.standing()),
        }
    }
}

/// Makes the clients of one group.
pub(crate) struct Network {
    pub partition: u64,
    pub transport: Option<RaftTransport>,
    /// This node's storage, where the rows of a snapshot to send are read.
    pub storage: Storage,
}

/// A client of one peer of one group.
pub(crate) struct PeerClient {
    partition: u64,
    peer: u64,
    transport: Option<RaftTransport>,
    storage: Storage,
}

impl PeerClient {
    async fn call(&self, request: Request, option: &RPCOption) -> Result<Reply, RpcFailure> {
        let Some(transport) = &self.transport else {
            return Err(RpcFailure::Unreachable("this node runs its partitions without a mesh".into()));
        };
        let envelope = Envelope { partition: self.partition, to: self.peer, request };
        transport.call(self.peer, &envelope, option.hard_ttl()).await
    }

    /// What a group's answer (taken out of its reply by `take`) or the failure to get one means
    /// to openraft.
    fn answer<T>(
        &self,
        reply: Result<Reply, RpcFailure>,
        take: impl FnOnce(Reply) -> Result<Result<T, RaftError<u64>>, Reply>,
    ) -> Result<T, RPCError<u64, EmptyNode, RaftError<u64>>> {
        match reply.map(take) {
            Ok(Ok(Ok(answer))) => Ok(answer),
            Ok(Ok(Err(error))) => Err(RPCError::RemoteError(RemoteError::new(self.peer, error))),
            Ok(Err(other)) => {
                Err(RPCError::Network(NetworkError::new(&std::io::Error::other(self.refusal(other)))))
            }
            Err(failure) => Err(RPCError::Unreachable(failure.into_unreachable(self.peer))),
        }
    }

    /// Why a reply that is not the answer asked for came.
    fn refusal(&self, reply: Reply) -> String {
        let reason = match reply {
            Reply::Refused(reason) => reason,
            _ => "an answer to another request".into(),
        };
        format!("node {} refused: {reason}", node_name(self.peer))
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerClient;

    async fn new_client(&mut self, target: u64, _node: &EmptyNode) -> PeerClient {
        PeerClient {
            partition: self.partition,
            peer: target,
            transport: self.transport.clone(),
            storage: self.storage.clone(),
        }
    }
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, EmptyNode, RaftError<u64>>> {
        let reply = self.call(Request::Append(rpc), &option).await;
        self.answer(reply, |reply| match reply {
            Reply::Append(answer) => Ok(answer),
            other => Err(other),
        })
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, EmptyNode, RaftError<u64>>> {
        let reply = self.call(Request::Vote(rpc), &option).await;
        self.answer(reply, |reply| match reply {
            Reply::Vote(answer) => Ok(answer),
            other => Err(other),
        })
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote<u64>,
        _snapshot: Snapshot<TypeConfig>,
        _cancel: impl Future<Output = ReplicationClosed> + Send + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<u64>, StreamingError<TypeConfig, Fatal<u64>>> {
        // The rows are read now, with the applied point they belong to, at one instant: the
        // snapshot sent may be newer than the one openraft built, never older, and the log
        // after it is replicated as usual.
        let (meta, rows) = read_out(&self.storage, self.partition, MAX_SNAPSHOT_BYTES).map_err(|error| {
            tracing::warn!(partition = self.partition, peer = %node_name(self.peer), %error, "cannot read out a snapshot");
            StreamingError::Unreachable(unreachable(error))
        })?;
        // Every failure to install is "back off and retry" for openraft, but the peer's own
        // refusal of the leader (a newer vote), which it must see.
        match self.call(Request::Snapshot { vote, meta, rows }, &option).await {
            Ok(Reply::Snapshot(Ok(response))) => Ok(response),
            Ok(Reply::Snapshot(Err(fatal))) => {
                Err(StreamingError::RemoteError(RemoteError::new(self.peer, fatal)))
            }
            Ok(other) => Err(StreamingError::Unreachable(unreachable(self.refusal(other)))),
            Err(failure) => Err(StreamingError::Unreachable(failure.into_unreachable(self.peer))),
        }
    }
}

fn unreachable(reason: impl std::fmt::Display) -> Unreachable {
    Unreachable::new(&std::io::Error::other(reason.to_string()))
}
