//! Remote actor messages: ractor_cluster node sessions that run over the mesh's QUIC streams.
//!
//! Every node runs a ractor_cluster `NodeServer` and one *gateway* actor, which it makes known
//! to its peers in the process group `serv-gateway/<node id>`. A request for a node is a call on
//! that node's gateway: ractor_cluster carries it over the session and brings the reply back.
//! What a request means is up to the [`Handler`] the node installed (the directory): here it is
//! opaque bytes in our codec, decoded with errors handled rather than by a panicking
//! `BytesConvertable`.
//!
//! Sessions: of two members, the one with the smaller id opens the session, over a mesh stream
//! ([`StreamKind::ActorSession`]); a session that drops is opened again within a second while
//! the membership lists the peer alive. The session handshake checks a cookie derived from the
//! cluster secret, on top of the mesh's mutual TLS.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use ractor_cluster::{
    BoxRead, BoxWrite, ClusterBidiStream, NodeServer, NodeServerMessage, RactorClusterMessage,
};
use tokio::sync::watch;

use crate::membership::{MemberState, MemberView};
use crate::mesh::{IncomingStream, Mesh, StreamKind};

/// The host part of every node's ractor_cluster name (`<node id>@serv`).
const HOSTNAME: &str = "serv";

/// How often sessions are checked against the membership view.
const SESSION_CHECK: Duration = Duration::from_secs(1);

/// How long an opened session may take to become usable before it is opened again.
const SESSION_GRACE: Duration = Duration::from_secs(3);

/// How long a request waits for a session with its node to be ready: nothing has been sent
/// yet, so waiting is safe. A session with a node that restarted can take one
/// [`SESSION_GRACE`] and a new attempt to open (about 4 s measured), while the node already
/// leads partitions.
const SESSION_WAIT: Duration = Duration::from_secs(8);

/// Largest request or reply one call carries (ractor_cluster refuses bigger frames; object
/// bodies never go this way, they travel on their own streams).
pub const MAX_FRAME_BYTES: u64 = 16 * 1024 * 1024;

/// What a node does with a request from another node: bytes in, bytes out.
pub type Handler = Arc<dyn Fn(Vec<u8>) -> Pin<Box<dyn Future<Output = Vec<u8>> + Send>> + Send + Sync>;

/// The one message a gateway takes: a request and the port for its reply.
#[derive(RactorClusterMessage)]
pub enum GatewayMsg {
    #[rpc]
    Request(Vec<u8>, RpcReplyPort<Vec<u8>>),
}

/// Serves requests from other nodes with the node's handler, each in its own task so a slow
/// request (a long poll) never holds up the next.
struct Gateway;

impl Actor for Gateway {
    type Msg = GatewayMsg;
    type State = Handler;
    type Arguments = Handler;

    async fn pre_start(
        &self,
        _: ActorRef<GatewayMsg>,
        handler: Handler,
    ) -> Result<Handler, ActorProcessingErr> {
        Ok(handler)
    }

    async fn handle(
        &self,
        _: ActorRef<GatewayMsg>,
        message: GatewayMsg,
        handler: &mut Handler,
    ) -> Result<(), ActorProcessingErr> {
        let GatewayMsg::Request(request, reply) = message;
        let handler = handler.clone();
        tokio::spawn(async move {
            let answer = handler(request).await;
            let _ = reply.send(answer);
        });
        Ok(())
    }
}

fn gateway_group(node_id: &str) -> String {
    format!("serv-gateway/{node_id}")
}

/// A mesh stream as ractor_cluster's transport.
struct QuicStream {
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    peer: SocketAddr,
}

impl ClusterBidiStream for QuicStream {
    fn split(self: Box<Self>) -> (BoxRead, BoxWrite) {
        (Box::new(self.recv), Box::new(self.send))
    }

    fn peer_label(&self) -> Option<String> {
        Some(self.peer.to_string())
    }
}

/// Why a request to another node got no answer.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// There is no session with the node (it is down, or the session is being opened).
    #[error("no session with node {0}")]
    NoSession(String),
    /// The node did not answer in time.
    #[error("node {0} did not answer in time")]
    Timeout(String),
    /// The session failed while the request was under way.
    #[error("the session with node {node} failed: {reason}")]
    Failed { node: String, reason: String },
}

/// This node's end of the remote actor sessions. Cheap to clone.
#[derive(Clone)]
pub struct Remote {
    server: ActorRef<NodeServerMessage>,
    node_id: String,
}

impl Remote {
    /// Starts the node server and the gateway (serving requests with `handler`), and keeps a
    /// session open with every member that `view` lists alive.
    pub async fn start(
        node_id: &str,
        cluster_secret: &str,
        mesh: Mesh,
        view: watch::Receiver<Vec<MemberView>>,
        handler: Handler,
    ) -> Result<Self, String> {
        let cookie = blake3::derive_key("serv 2026 ractor_cluster cookie", cluster_secret.as_bytes());
        let cookie: String = cookie.iter().map(|b| format!("{b:02x}")).collect();
        // ractor_cluster always opens a TCP listener too; ours only ever speaks over the mesh,
        // so it listens on loopback, on a port the OS picks, and is never announced.
        let server = NodeServer::new(
            0,
            cookie,
            node_id.to_string(),
            HOSTNAME.to_string(),
            None,
            Some(ractor_cluster::node::NodeConnectionMode::Isolated),
        )
        .with_listen_addr(std::net::Ipv4Addr::LOCALHOST.into())
        .with_max_inbound_frame_size(MAX_FRAME_BYTES);
        let (server, _) =
            Actor::spawn(None, server, ()).await.map_err(|e| format!("cannot start the node server: {e}"))?;
        let (gateway, _) = Actor::spawn(None, Gateway, handler)
            .await
            .map_err(|e| format!("cannot start the gateway: {e}"))?;
        ractor::pg::join(gateway_group(node_id), vec![gateway.get_cell()]);

        let inbound = mesh.streams(StreamKind::ActorSession);
        tokio::spawn(accept_sessions(server.clone(), inbound));
        tokio::spawn(keep_sessions(node_id.to_string(), server.clone(), mesh, view));
        Ok(Self { server, node_id: node_id.to_string() })
    }

    /// Sends `request` to `node`'s handler and waits (up to `timeout`) for its answer. A session
    /// that is being opened (a node that just joined or came back) is waited for a moment.
    pub async fn request(
        &self,
        node: &str,
        request: Vec<u8>,
        timeout: Duration,
    ) -> Result<Vec<u8>, RemoteError> {
        let group = gateway_group(node);
        let find = || {
            let members = ractor::pg::get_members(&group);
            members.into_iter().find(|cell| !cell.get_id().is_local() || node == self.node_id)
        };
        let wait_until = tokio::time::Instant::now() + timeout.min(SESSION_WAIT);
        let gateway = loop {
            if let Some(gateway) = find() {
                break gateway;
            }
            if tokio::time::Instant::now() >= wait_until {
                return Err(RemoteError::NoSession(node.to_string()));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let gateway = ActorRef::<GatewayMsg>::from(gateway);
        match gateway.call(|reply| GatewayMsg::Request(request, reply), Some(timeout)).await {
            Ok(ractor::rpc::CallResult::Success(answer)) => Ok(answer),
            Ok(ractor::rpc::CallResult::Timeout) => Err(RemoteError::Timeout(node.to_string())),
            Ok(ractor::rpc::CallResult::SenderError) => {
                Err(RemoteError::Failed { node: node.to_string(), reason: "the reply was dropped".into() })
            }
            Err(error) => Err(RemoteError::Failed { node: node.to_string(), reason: error.to_string() }),
        }
    }

    /// Stops the node server, closing every session.
    pub fn stop(&self) {
        self.server.stop(None);
    }
}

/// Hands the sessions peers open to this node to the node server.
async fn accept_sessions(
    server: ActorRef<NodeServerMessage>,
    mut inbound: tokio::sync::mpsc::Receiver<IncomingStream>,
) {
    while let Some(stream) = inbound.recv().await {
        let stream = Box::new(QuicStream { send: stream.send, recv: stream.recv, peer: stream.from });
        if server.cast(NodeServerMessage::ConnectionOpenedExternal { stream, is_server: true }).is_err() {
            return;
        }
    }
}

/// Opens a session to every alive member with a larger id that has none, whenever the view
/// changes and every [`SESSION_CHECK`].
async fn keep_sessions(
    me: String,
    server: ActorRef<NodeServerMessage>,
    mesh: Mesh,
    mut view: watch::Receiver<Vec<MemberView>>,
) {
    let mut opened: HashMap<String, Instant> = HashMap::new();
    let mut tick = tokio::time::interval(SESSION_CHECK);
    loop {
        tokio::select! {
            changed = view.changed() => if changed.is_err() { return },
            _ = tick.tick() => {}
        }
        let Ok(sessions) = server.call(NodeServerMessage::GetSessions, Some(SESSION_CHECK)).await else {
            return;
        };
        let sessions = match sessions {
            ractor::rpc::CallResult::Success(sessions) => sessions,
            _ => continue,
        };
        let members: Vec<MemberView> = view.borrow().clone();
        let mut connected = Vec::new();
        for session in sessions.values() {
            let Some(peer) =
                session.peer_name.as_ref().and_then(|p| p.name.strip_suffix(&format!("@{HOSTNAME}")))
            else {
                continue;
            };
            // A session with a node seen down is dead even if its connection has not timed out
            // yet: end it, so that the node's next incarnation gets a fresh one.
            if members.iter().any(|m| m.id == peer && m.state == MemberState::Down) {
                session.actor.stop(Some("the peer is down".into()));
                continue;
            }
            connected.push(peer.to_string());
        }
        for member in members {
            let wanted = member.state == MemberState::Alive && member.id > me;
            if !wanted || connected.contains(&member.id) {
                continue;
            }
            if opened.get(&member.id).is_some_and(|at| at.elapsed() < SESSION_GRACE) {
                continue;
            }
            opened.insert(member.id.clone(), Instant::now());
            let (mesh, server, addr) = (mesh.clone(), server.clone(), member.addr);
            tokio::spawn(async move {
                match mesh.open(addr, StreamKind::ActorSession).await {
                    Ok((send, recv)) => {
                        let stream = Box::new(QuicStream { send, recv, peer: addr });
                        let _ = ractor_cluster::client_connect_external(&server, stream).await;
                    }
                    Err(error) => tracing::debug!(%addr, %error, "cannot open an actor session"),
                }
            });
        }
    }
}
