//! Streaming bodies into content blocks and back out of them.
//!
//! A bucket's blocks live on its partition's replicas: this node's block store on a node of
//! one, else wherever the partition layer places them ([`PartitionBlocks`]: a majority of the
//! replicas holds each block before it counts as stored). Either way, what a request wrote or is
//! reading stays pinned (a [`Hold`]) until the manifest is committed or the body has been sent.

use std::ops::Range;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use s3s::checksum::ChecksumHasher;
use s3s::crypto::{Checksum as _, Md5};
use s3s::{S3Error, S3ErrorCode, S3Result};
use serv_actors::bucket::Chunk;
use serv_cluster::partition::PartitionBlocks;
use serv_storage::blocks::{BlockHash, BlockStore, Pins};

use super::error;

/// Where a bucket's blocks are stored.
#[derive(Clone)]
pub(super) enum Blocks {
    /// On this node.
    Local(BlockStore),
    /// On the bucket's partition's replicas, which hold what this request touches pinned.
    Replicated(Arc<PartitionBlocks>),
}

/// Blocks held against collection until dropped.
pub(super) enum Hold {
    Local(Pins),
    /// The replicas keep pinned everything the request stored or pinned until it ends.
    Replicated(#[allow(dead_code)] Arc<PartitionBlocks>),
}

impl Blocks {
    /// True when both are this node's store, so blocks of one are already in the other (a
    /// copy between replicated buckets stores its blocks on a majority again, as any write does:
    /// a read pinned them on one replica only).
    pub fn same_as(&self, other: &Blocks) -> bool {
        matches!((self, other), (Blocks::Local(_), Blocks::Local(_)))
    }

    /// Nothing held yet.
    pub fn hold_none(&self) -> Hold {
        match self {
            Blocks::Local(store) => Hold::Local(Pins::none(store)),
            Blocks::Replicated(replicas) => Hold::Replicated(replicas.clone()),
        }
    }

    /// Stores `block` durably, held by the returned hold.
    pub async fn put(&self, block: Bytes) -> S3Result<(BlockHash, Hold)> {
        match self {
            Blocks::Local(store) => {
                let (hash, pins) =
                    store.put(block).await.map_err(|e| error::internal("storing a block failed", e))?;
                Ok((hash, Hold::Local(pins)))
            }
            Blocks::Replicated(replicas) => {
                let hash = replicas.put(block).await.map_err(replicas_failed)?;
                Ok((hash, Hold::Replicated(replicas.clone())))
            }
        }
    }

    /// Holds blocks that must exist; answers the first missing hash instead.
    pub async fn pin(&self, hashes: &[BlockHash]) -> S3Result<Result<Hold, BlockHash>> {
        match self {
            Blocks::Local(store) => match store.pin_existing(hashes) {
                Ok(pinned) => Ok(pinned.map(Hold::Local)),
                Err(e) => Err(error::internal("pinning blocks failed", e)),
            },
            Blocks::Replicated(replicas) => {
                let pinned = replicas.pin(hashes).await.map_err(replicas_failed)?;
                Ok(pinned.map(|()| Hold::Replicated(replicas.clone())))
            }
        }
    }

    /// The bytes of a block, if stored.
    async fn get(&self, hash: &BlockHash) -> Result<Option<Bytes>, String> {
        match self {
            Blocks::Local(store) => store.get(hash).map_err(|e| e.to_string()),
            Blocks::Replicated(replicas) => replicas.get(hash).await,
        }
    }
}

impl Hold {
    /// Moves `other`'s blocks into this hold.
    fn absorb(&mut self, other: Hold) {
        match (self, other) {
            (Hold::Local(mine), Hold::Local(theirs)) => mine.absorb(theirs),
            // The replicas hold everything the request touched for as long as it lives.
            (Hold::Replicated(_), Hold::Replicated(_)) => {}
            _ => unreachable!("one body is written to one store"),
        }
    }
}

fn replicas_failed(error: String) -> S3Error {
    S3Error::with_message(
        S3ErrorCode::ServiceUnavailable,
        format!("too few of the bucket's replicas could be reached for its blocks: {error}"),
    )
}

/// Copies the blocks of `chunks` from one store to another (when a copy's source and
/// destination buckets live on different nodes); the copies are held by the returned hold.
pub(super) async fn copy_blocks(from: &Blocks, to: &Blocks, chunks: &[Chunk]) -> S3Result<Hold> {
    let mut hold = to.hold_none();
    let mut seen = std::collections::HashSet::new();
    for chunk in chunks {
        if !seen.insert(chunk.hash) {
            continue;
        }
        let block = match from.get(&chunk.hash).await {
            Ok(Some(block)) => block,
            Ok(None) => {
                return Err(error::internal("copying blocks", format!("block {} is missing", chunk.hash)));
            }
            Err(e) => return Err(error::internal("copying blocks", e)),
        };
        let (hash, held) = to.put(block).await?;
        if hash != chunk.hash {
            return Err(error::internal(
                "copying blocks",
                format!("block {} changed in transit", chunk.hash),
            ));
        }
        hold.absorb(held);
    }
    Ok(hold)
}

/// A body written to the block store, pinned until its object or part is committed.
pub(super) struct Written {
    pub size: u64,
    pub md5: [u8; 16],
    pub chunks: Vec<Chunk>,
    pub checksums: s3s::dto::Checksum,
    pub pins: Hold,
}

impl Written {
    pub fn md5_hex(&self) -> String {
        hex(&self.md5)
    }
}

pub(super) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Cuts `body` into blocks of `block_size` and stores each, computing MD5 and the checksums
/// `hasher` was set up for; refuses a body longer than `max_size` as soon as it is.
pub(super) async fn write<S, E>(
    blocks: &Blocks,
    mut body: S,
    block_size: usize,
    max_size: u64,
    mut hasher: ChecksumHasher,
) -> S3Result<Written>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let mut md5 = Md5::new();
    let mut pending = BytesMut::new();
    let mut chunks = Vec::new();
    let mut pins = blocks.hold_none();
    let mut size = 0u64;
    while let Some(piece) = body.next().await {
        let piece = piece.map_err(|e| {
            S3Error::with_message(
                S3ErrorCode::IncompleteBody,
                format!("the request body could not be read: {e}"),
            )
        })?;
        size += piece.len() as u64;
        if size > max_size {
            return Err(S3Error::with_message(
                S3ErrorCode::EntityTooLarge,
                format!("Your proposed upload exceeds the maximum allowed size of {max_size} bytes"),
            ));
        }
        md5.update(&piece);
        hasher.update(&piece);
        pending.extend_from_slice(&piece);
        while pending.len() >= block_size {
            let block = pending.split_to(block_size).freeze();
            store(blocks, block, &mut chunks, &mut pins).await?;
        }
    }
    if !pending.is_empty() {
        store(blocks, pending.freeze(), &mut chunks, &mut pins).await?;
    }
    Ok(Written { size, md5: md5.finalize(), chunks, checksums: hasher.finalize(), pins })
}

async fn store(blocks: &Blocks, block: Bytes, chunks: &mut Vec<Chunk>, pins: &mut Hold) -> S3Result<()> {
    let len = block.len() as u32;
    let (hash, pin) = blocks.put(block).await?;
    pins.absorb(pin);
    chunks.push(Chunk { hash, len });
    Ok(())
}

/// The bytes `range` of the object made of `chunks`, read block by block while `pins` holds them.
pub(super) fn read(
    blocks: Blocks,
    chunks: Vec<Chunk>,
    range: Range<u64>,
    pins: Hold,
) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send + Sync + 'static {
    let chunks: std::sync::Arc<[Chunk]> = chunks.into();
    // (chunk index, offset of that chunk in the object), advanced as blocks are sent.
    let state = (0usize, 0u64, pins);
    futures_util::stream::unfold(state, move |(mut index, mut start, pins)| {
        let blocks = blocks.clone();
        let chunk_list = chunks.clone();
        let range = range.clone();
        async move {
            while let Some(chunk) = chunk_list.get(index) {
                let end = start + u64::from(chunk.len);
                let (chunk_start, hash) = (start, chunk.hash);
                index += 1;
                start = end;
                if end <= range.start || chunk_start >= range.end {
                    if chunk_start >= range.end {
                        return None;
                    }
                    continue;
                }
                let block = match blocks.get(&hash).await {
                    Ok(Some(block)) => block,
                    Ok(None) => {
                        return Some((
                            Err(std::io::Error::other(format!("block {hash} is missing"))),
                            (usize::MAX, 0, pins),
                        ));
                    }
                    Err(e) => {
                        return Some((Err(std::io::Error::other(e)), (usize::MAX, 0, pins)));
                    }
                };
                let from = range.start.saturating_sub(chunk_start) as usize;
                let to = (range.end.min(end) - chunk_start) as usize;
                return Some((Ok(block.slice(from..to)), (index, start, pins)));
            }
            None
        }
    })
}
