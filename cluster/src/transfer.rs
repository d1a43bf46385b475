//! Block transfer: object bodies travel between nodes on their own mesh streams, never through
//! actor messages. A bucket's blocks live with the bucket's owner; an edge on another node opens
//! a [`BlockSession`] to the owner and stores, pins or reads blocks through it.
//!
//! One session is one stream; requests on it are answered in order. Blocks a session stored or
//! pinned stay pinned on the owner until the session ends, which is how an edge keeps the blocks
//! of an upload alive until the bucket actor has committed the manifest that references them
//! (and a crashed edge's blocks become collectable when its stream goes away).
//!
//! Wire format, all integers big-endian:
//! - `PUT  (1) len:u32 bytes`      → `OK (0) hash:[32]`            (the block is durable)
//! - `GET  (2) hash:[32]`          → `OK (0) len:u32 bytes` or `MISSING (2)`
//! - `PIN  (3) n:u32 hash:[32]*n`  → `OK (0)` or `MISSING (2) hash:[32]` (nothing pinned then)
//! - any failure                   → `FAILED (1) len:u16 message`

use std::net::SocketAddr;

use bytes::Bytes;
use serv_storage::blocks::{BlockHash, BlockStore, Pins};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{Mutex, watch};

use crate::membership::MemberView;
use crate::mesh::{IncomingStream, Mesh, StreamKind};

/// Largest block a session carries.
pub const MAX_BLOCK_BYTES: u32 = 64 * 1024 * 1024;

/// Most hashes one PIN request may name.
pub const MAX_PIN_HASHES: u32 = 1 << 20;

const PUT: u8 = 1;
const GET: u8 = 2;
const PIN: u8 = 3;
const OK: u8 = 0;
const FAILED: u8 = 1;
const MISSING: u8 = 2;

/// Why a block request failed.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    #[error("node {0} is not a known member")]
    UnknownNode(String),
    #[error("the block stream failed: {0}")]
    Stream(String),
    #[error("the owner refused: {0}")]
    Refused(String),
}

impl From<std::io::Error> for TransferError {
    fn from(error: std::io::Error) -> Self {
        TransferError::Stream(error.to_string())
    }
}

impl From<quinn::WriteError> for TransferError {
    fn from(error: quinn::WriteError) -> Self {
        TransferError::Stream(error.to_string())
    }
}

/// Serves block sessions that peers open to this node, on `store`.
pub fn serve(mesh: &Mesh, store: BlockStore) {
    let mut sessions = mesh.streams(StreamKind::Blocks);
    tokio::spawn(async move {
        while let Some(stream) = sessions.recv().await {
            tokio::spawn(serve_session(stream, store.clone()));
        }
    });
}

async fn serve_session(stream: IncomingStream, store: BlockStore) {
    let IncomingStream { from, mut send, mut recv } = stream;
    let mut held = Pins::none(&store);
    loop {
        let op = match recv.read_u8().await {
            Ok(op) => op,
            Err(_) => return, // the session ended: `held` goes with it
        };
        let outcome = match op {
            PUT => put(&store, &mut recv, &mut send, &mut held).await,
            GET => get(&store, &mut recv, &mut send).await,
            PIN => pin(&store, &mut recv, &mut send, &mut held).await,
            other => Err(TransferError::Refused(format!("unknown block request {other}"))),
        };
        match outcome {
            Ok(()) => {}
            Err(TransferError::Refused(message)) => {
                let _ = fail(&mut send, &message).await;
                return;
            }
            Err(error) => {
                tracing::debug!(%from, %error, "block session ended");
                return;
            }
        }
    }
}

async fn put(
    store: &BlockStore,
    recv: &mut quinn::RecvStream,
    send: &mut quinn::SendStream,
    held: &mut Pins,
) -> Result<(), TransferError> {
    let len = recv.read_u32().await?;
    if len > MAX_BLOCK_BYTES {
        return Err(TransferError::Refused(format!("a block of {len} bytes is over {MAX_BLOCK_BYTES}")));
    }
    let mut data = vec![0u8; len as usize];
    recv.read_exact(&mut data).await.map_err(|e| TransferError::Stream(e.to_string()))?;
    match store.put(Bytes::from(data)).await {
        Ok((hash, pins)) => {
            held.absorb(pins);
            send.write_u8(OK).await?;
            send.write_all(&hash.0).await?;
            Ok(())
        }
        Err(error) => fail(send, &error.to_string()).await,
    }
}

async fn get(
    store: &BlockStore,
    recv: &mut quinn::RecvStream,
    send: &mut quinn::SendStream,
) -> Result<(), TransferError> {
    let hash = read_hash(recv).await?;
    match store.get(&hash) {
        Ok(Some(block)) => {
            send.write_u8(OK).await?;
            send.write_u32(block.len() as u32).await?;
            send.write_all(&block).await?;
            Ok(())
        }
        Ok(None) => Ok(send.write_u8(MISSING).await?),
        Err(error) => fail(send, &error.to_string()).await,
    }
}

async fn pin(
    store: &BlockStore,
    recv: &mut quinn::RecvStream,
    send: &mut quinn::SendStream,
    held: &mut Pins,
) -> Result<(), TransferError> {
    let count = recv.read_u32().await?;
    if count > MAX_PIN_HASHES {
        return Err(TransferError::Refused(format!(
            "{count} hashes in one pin request is over {MAX_PIN_HASHES}"
        )));
    }
    let mut hashes = Vec::with_capacity(count as usize);
    for _ in 0..count {
        hashes.push(read_hash(recv).await?);
    }
    match store.pin_existing(&hashes) {
        Ok(Ok(pins)) => {
            held.absorb(pins);
            Ok(send.write_u8(OK).await?)
        }
        Ok(Err(missing)) => {
            send.write_u8(MISSING).await?;
            Ok(send.write_all(&missing.0).await?)
        }
        Err(error) => fail(send, &error.to_string()).await,
    }
}

async fn read_hash(recv: &mut quinn::RecvStream) -> Result<BlockHash, TransferError> {
    let mut hash = [0u8; 32];
    recv.read_exact(&mut hash).await.map_err(|e| TransferError::Stream(e.to_string()))?;
    Ok(BlockHash(hash))
}

async fn fail(send: &mut quinn::SendStream, message: &str) -> Result<(), TransferError> {
    let message = &message.as_bytes()[..message.len().min(u16::MAX as usize)];
    send.write_u8(FAILED).await?;
    send.write_u16(message.len() as u16).await?;
    send.write_all(message).await?;
    Ok(())
}

/// Opens block sessions to other nodes by id. Cheap to clone.
#[derive(Clone)]
pub struct BlockTransfer {
    mesh: Mesh,
    view: watch::Receiver<Vec<MemberView>>,
}

impl BlockTransfer {
    pub fn new(mesh: Mesh, view: watch::Receiver<Vec<MemberView>>) -> Self {
        Self { mesh, view }
    }

    /// A new session with node `node`.
    pub async fn open(&self, node: &str) -> Result<BlockSession, TransferError> {
        let addr: SocketAddr = self
            .view
            .borrow()
            .iter()
            .find(|member| member.id == node)
            .map(|member| member.addr)
            .ok_or_else(|| TransferError::UnknownNode(node.to_string()))?;
        let (send, recv) = self
            .mesh
            .open(addr, StreamKind::Blocks)
            .await
            .map_err(|e| TransferError::Stream(e.to_string()))?;
        Ok(BlockSession { node: node.to_string(), stream: Mutex::new((send, recv)) })
    }
}

/// A session with one node's block store; what it stored or pinned stays pinned until it is
/// dropped.
pub struct BlockSession {
    node: String,
    stream: Mutex<(quinn::SendStream, quinn::RecvStream)>,
}

impl BlockSession {
    /// The node this session is with.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Stores `block` on the node; answers its hash once it is durable there.
    pub async fn put(&self, block: &[u8]) -> Result<BlockHash, TransferError> {
        let len = u32::try_from(block.len()).ok().filter(|len| *len <= MAX_BLOCK_BYTES);
        let len = len.ok_or_else(|| TransferError::Refused("the block is too large to send".into()))?;
        let mut stream = self.stream.lock().await;
        let (send, recv) = &mut *stream;
        send.write_u8(PUT).await?;
        send.write_u32(len).await?;
        send.write_all(block).await?;
        match status(recv).await? {
            OK => read_hash(recv).await,
            other => Err(unexpected(other)),
        }
    }

    /// The bytes of a block, if the node has it.
    pub async fn get(&self, hash: &BlockHash) -> Result<Option<Bytes>, TransferError> {
        let mut stream = self.stream.lock().await;
        let (send, recv) = &mut *stream;
        send.write_u8(GET).await?;
        send.write_all(&hash.0).await?;
        match status(recv).await? {
            OK => {
                let len = recv.read_u32().await?;
                if len > MAX_BLOCK_BYTES {
                    return Err(TransferError::Stream(format!("a block of {len} bytes is over the limit")));
                }
                let mut data = vec![0u8; len as usize];
                recv.read_exact(&mut data).await.map_err(|e| TransferError::Stream(e.to_string()))?;
                Ok(Some(Bytes::from(data)))
            }
            MISSING => Ok(None),
            other => Err(unexpected(other)),
        }
    }

    /// Pins blocks that must exist on the node for as long as this session lives; answers the
    /// first missing hash instead (pinning nothing).
    pub async fn pin(&self, hashes: &[BlockHash]) -> Result<Result<(), BlockHash>, TransferError> {
        let count = u32::try_from(hashes.len()).ok().filter(|n| *n <= MAX_PIN_HASHES);
        let count = count.ok_or_else(|| TransferError::Refused("too many blocks to pin at once".into()))?;
        let mut stream = self.stream.lock().await;
        let (send, recv) = &mut *stream;
        send.write_u8(PIN).await?;
        send.write_u32(count).await?;
        for hash in hashes {
            send.write_all(&hash.0).await?;
        }
        match status(recv).await? {
            OK => Ok(Ok(())),
            MISSING => Ok(Err(read_hash(recv).await?)),
            other => Err(unexpected(other)),
        }
    }
}

/// Reads a response's status byte; a FAILED response becomes the owner's error.
async fn status(recv: &mut quinn::RecvStream) -> Result<u8, TransferError> {
    let status = recv.read_u8().await?;
    if status != FAILED {
        return Ok(status);
    }
    let len = recv.read_u16().await?;
    let mut message = vec![0u8; len as usize];
    recv.read_exact(&mut message).await.map_err(|e| TransferError::Stream(e.to_string()))?;
    Err(TransferError::Refused(String::from_utf8_lossy(&message).into_owned()))
}

fn unexpected(status: u8) -> TransferError {
    TransferError::Stream(format!("unexpected response status {status}"))
}

#[cfg(test)]
mod tests;
