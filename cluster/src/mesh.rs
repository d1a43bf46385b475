//! The mesh: one QUIC endpoint per node that carries everything between nodes on one UDP port.
//! Membership packets travel as datagrams; remote actor sessions and bulk transfers each open
//! their own bi-directional streams, tagged by their first byte so the receiver knows which
//! layer they belong to. Every connection was authenticated by the cluster identity
//! ([`crate::identity`]) before anything here sees it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;

use crate::identity::SERVER_NAME;

/// How long a new stream may take to say which layer it is for.
const TAG_TIMEOUT: Duration = Duration::from_secs(5);

/// Datagrams waiting for membership to read them, beyond which new ones are dropped (SWIM
/// tolerates loss; memory does not grow).
const DATAGRAM_BACKLOG: usize = 4096;

/// Which layer a stream belongs to: its first byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum StreamKind {
    /// A ractor_cluster node session ([`crate::remote`]).
    ActorSession = 1,
    /// A bulk transfer of blocks.
    Blocks = 2,
    /// One Raft RPC between two replicas of a partition ([`crate::partition`]).
    Raft = 3,
}

impl StreamKind {
    fn from_tag(tag: u8) -> Option<Self> {
        [Self::ActorSession, Self::Blocks, Self::Raft].into_iter().find(|kind| *kind as u8 == tag)
    }
}

/// A stream a peer opened to this node.
#[derive(Debug)]
pub struct IncomingStream {
    /// The peer's mesh address.
    pub from: SocketAddr,
    pub send: quinn::SendStream,
    pub recv: quinn::RecvStream,
}

type Connections = Arc<Mutex<HashMap<SocketAddr, quinn::Connection>>>;
type StreamHandlers = Arc<Mutex<HashMap<StreamKind, mpsc::Sender<IncomingStream>>>>;

/// A handle on the node's mesh endpoint. Cheap to clone.
#[derive(Clone)]
pub struct Mesh {
    endpoint: quinn::Endpoint,
    connections: Connections,
    handlers: StreamHandlers,
    datagrams: mpsc::Sender<Bytes>,
    /// Why the last connection attempt to an address failed, until one succeeds.
    failures: Arc<Mutex<HashMap<SocketAddr, String>>>,
}

impl Mesh {
    /// Starts accepting connections on `endpoint`; the receiver gets every datagram that arrives.
    pub fn start(endpoint: quinn::Endpoint) -> (Self, mpsc::Receiver<Bytes>) {
        let (datagrams, inbox) = mpsc::channel(DATAGRAM_BACKLOG);
        let mesh = Self {
            endpoint,
            connections: Arc::default(),
            handlers: Arc::default(),
            datagrams,
            failures: Arc::default(),
        };
        tokio::spawn(mesh.clone().accept());
        (mesh, inbox)
    }

    /// Closes every connection and the endpoint: this node is gone for its peers.
    pub fn close(&self) {
        self.endpoint.close(0u32.into(), b"node stopped");
    }

    /// The address the endpoint is bound to.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.endpoint.local_addr()
    }

    /// From now on, streams of `kind` that peers open are handed to the returned receiver.
    pub fn streams(&self, kind: StreamKind) -> mpsc::Receiver<IncomingStream> {
        let (handler, streams) = mpsc::channel(64);
        self.handlers.lock().unwrap_or_else(PoisonError::into_inner).insert(kind, handler);
        streams
    }

    /// Sends `data` to `to` as a datagram, connecting first if needed. Delivery is not promised:
    /// a failure is noticed by whoever waits for an answer.
    pub fn send_datagram(&self, to: SocketAddr, data: Bytes) {
        if let Some(connection) = self.live_connection(to) {
            let _ = connection.send_datagram(data);
            return;
        }
        let mesh = self.clone();
        tokio::spawn(async move {
            if let Ok(connection) = mesh.connect(to).await {
                let _ = connection.send_datagram(data);
            }
        });
    }

    /// Opens a stream of `kind` to the node at `to`.
    pub async fn open(
        &self,
        to: SocketAddr,
        kind: StreamKind,
    ) -> Result<(quinn::SendStream, quinn::RecvStream), MeshError> {
        let connection = match self.live_connection(to) {
            Some(connection) => connection,
            None => self.connect(to).await?,
        };
        let (mut send, recv) = connection.open_bi().await.map_err(|e| MeshError::Stream(e.to_string()))?;
        send.write_all(&[kind as u8]).await.map_err(|e| MeshError::Stream(e.to_string()))?;
        Ok((send, recv))
    }

    fn live_connection(&self, to: SocketAddr) -> Option<quinn::Connection> {
        let connections = self.connections.lock().unwrap_or_else(PoisonError::into_inner);
        connections.get(&to).filter(|c| c.close_reason().is_none()).cloned()
    }

    async fn connect(&self, to: SocketAddr) -> Result<quinn::Connection, MeshError> {
        let connected = match self.endpoint.connect(to, SERVER_NAME) {
            Ok(connecting) => connecting.await.map_err(|e| e.to_string()),
            Err(error) => Err(error.to_string()),
        };
        let mut failures = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        match connected {
            Ok(connection) => {
                failures.remove(&to);
                drop(failures);
                self.adopt(connection.clone());
                Ok(connection)
            }
            Err(error) => {
                failures.insert(to, error.clone());
                Err(MeshError::Connect(error))
            }
        }
    }

    /// Why the last attempt to connect to `to` failed, if it did (and none succeeded since).
    pub fn connect_failure(&self, to: SocketAddr) -> Option<String> {
        self.failures.lock().unwrap_or_else(PoisonError::into_inner).get(&to).cloned()
    }

    /// Keeps `connection` for later sends and serves what the peer sends on it.
    fn adopt(&self, connection: quinn::Connection) {
        self.connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(connection.remote_address(), connection.clone());
        tokio::spawn(read_datagrams(connection.clone(), self.datagrams.clone()));
        tokio::spawn(self.clone().accept_streams(connection));
    }

    async fn accept(self) {
        while let Some(incoming) = self.endpoint.accept().await {
            let mesh = self.clone();
            tokio::spawn(async move {
                if let Ok(connection) = incoming.await {
                    mesh.adopt(connection);
                }
            });
        }
    }

    async fn accept_streams(self, connection: quinn::Connection) {
        while let Ok((send, mut recv)) = connection.accept_bi().await {
            let from = connection.remote_address();
            let handlers = self.handlers.clone();
            tokio::spawn(async move {
                let Ok(Ok(tag)) = tokio::time::timeout(TAG_TIMEOUT, recv.read_u8()).await else { return };
                let Some(kind) = StreamKind::from_tag(tag) else {
                    tracing::debug!(%from, tag, "mesh stream of an unknown kind refused");
                    return;
                };
                let handler = handlers.lock().unwrap_or_else(PoisonError::into_inner).get(&kind).cloned();
                if let Some(handler) = handler {
                    let _ = handler.send(IncomingStream { from, send, recv }).await;
                }
            });
        }
    }
}

async fn read_datagrams(connection: quinn::Connection, datagrams: mpsc::Sender<Bytes>) {
    while let Ok(datagram) = connection.read_datagram().await {
        if let Err(mpsc::error::TrySendError::Closed(_)) = datagrams.try_send(datagram) {
            return;
        }
    }
}

/// Why the mesh could not reach a peer.
#[derive(Debug, thiserror::Error)]
pub enum MeshError {
    #[error("cannot connect: {0}")]
    Connect(String),
    #[error("cannot open a stream: {0}")]
    Stream(String),
}
