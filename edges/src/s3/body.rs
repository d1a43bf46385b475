//! Streaming bodies into content blocks and back out of them.

use std::ops::Range;

use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use s3s::checksum::ChecksumHasher;
use s3s::crypto::{Checksum as _, Md5};
use s3s::{S3Error, S3ErrorCode, S3Result};
use serv_actors::bucket::Chunk;
use serv_storage::blocks::{BlockStore, Pins};

use super::error;

/// A body written to the block store, pinned until its object or part is committed.
pub(super) struct Written {
    pub size: u64,
    pub md5: [u8; 16],
    pub chunks: Vec<Chunk>,
    pub checksums: s3s::dto::Checksum,
    pub pins: Pins,
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
    blocks: &BlockStore,
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
    let mut pins = Pins::none(blocks);
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

async fn store(blocks: &BlockStore, block: Bytes, chunks: &mut Vec<Chunk>, pins: &mut Pins) -> S3Result<()> {
    let len = block.len() as u32;
    let (hash, pin) = blocks.put(block).await.map_err(|e| error::internal("storing a block failed", e))?;
    pins.absorb(pin);
    chunks.push(Chunk { hash, len });
    Ok(())
}

/// The bytes `range` of the object made of `chunks`, read block by block while `pins` holds them.
pub(super) fn read(
    blocks: BlockStore,
    chunks: Vec<Chunk>,
    range: Range<u64>,
    pins: Pins,
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
                let block = match blocks.get(&hash) {
                    Ok(Some(block)) => block,
                    Ok(None) => {
                        return Some((
                            Err(std::io::Error::other(format!("block {hash} is missing"))),
                            (usize::MAX, 0, pins),
                        ));
                    }
                    Err(e) => {
                        return Some((Err(std::io::Error::other(e.to_string())), (usize::MAX, 0, pins)));
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
