//! Block repair: a replica refills the blocks that its partitions' objects name and it lacks.
//!
//! A block is written to a majority of the replica set of its day, so a replica may lack some:
//! it joined the set later (it got the manifests through the log or a snapshot, never the
//! blocks), it was down or too slow when the block was written, or its start-up sweep removed a
//! block whose manifest its log had not replayed yet. And when the set changes, the nodes that
//! leave it may hold the only copies of blocks written before. So every node looks, every
//! [`REPAIR_EVERY`], through the block references of each partition it holds (the partition's
//! row index, no row is read) and fetches what it lacks from the other members, replicas first.

use std::sync::Arc;
use std::time::Duration;

use serv_storage::Storage;
use serv_storage::blocks::BlockHash;

use super::{BlockPlacement, Partitions, REPLICA_BLOCK_TIMEOUT};
use crate::transfer::BlockSession;

/// How often a node checks the blocks of every partition it holds.
pub const REPAIR_EVERY: Duration = Duration::from_secs(10);

/// What one partition's repair did.
#[derive(Debug, Default, PartialEq, Eq)]
struct Repaired {
    fetched: usize,
    /// Blocks no member that was asked holds (yet: a write may be on its way).
    unfound: usize,
}

/// Checks the blocks of every partition this node holds, every [`REPAIR_EVERY`].
pub fn spawn_block_repair(
    partitions: Arc<Partitions>,
    placement: BlockPlacement,
    storage: Storage,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(REPAIR_EVERY).await;
            for partition in (0..partitions.count()).filter(|p| partitions.holds(*p)) {
                match repair(partition, &placement, &storage).await {
                    Ok(Repaired { fetched: 0, unfound: 0 }) => {}
                    Ok(done) => tracing::info!(
                        partition,
                        fetched = done.fetched,
                        unfound = done.unfound,
                        "blocks repaired"
                    ),
                    Err(error) => tracing::warn!(partition, %error, "block repair failed"),
                }
            }
        }
    })
}

/// Fetches the blocks `partition`'s references name and this node lacks.
async fn repair(
    partition: u64,
    placement: &BlockPlacement,
    storage: &Storage,
) -> Result<Repaired, String> {
    let blocks = storage.blocks();
    let named = storage.owned_keys(partition, blocks.refs()).map_err(|e| e.to_string())?;
    let mut hashes: Vec<BlockHash> = named.into_iter().map(|(hash, _)| hash).collect();
    hashes.dedup();
    let missing = blocks.missing(hashes).map_err(|e| e.to_string())?;
    if missing.is_empty() {
        return Ok(Repaired::default());
    }
    // The partition's replicas first, then any other member that is up (one that left the set
    // may hold the only copies).
    let me = placement.sets.me();
    let mut sources = placement.sets.of(partition);
    sources.extend(placement.sets.members().into_iter().map(|(id, _)| id));
    let mut seen = std::collections::HashSet::new();
    sources.retain(|node| node != me && placement.sets.is_up(node) && seen.insert(node.clone()));
    let mut sessions: Vec<Option<BlockSession>> = Vec::new();
    for node in &sources {
        let opened = tokio::time::timeout(REPLICA_BLOCK_TIMEOUT, placement.transfer.open(node)).await;
        sessions.push(opened.ok().and_then(Result::ok));
    }
    let mut done = Repaired::default();
    for hash in missing {
        let mut found = None;
        for slot in sessions.iter_mut() {
            let Some(session) = slot else { continue };
            match tokio::time::timeout(REPLICA_BLOCK_TIMEOUT, session.get(&hash)).await {
                // Checked: a member's answer is input like any other.
                Ok(Ok(Some(block))) if BlockHash::of(&block) == hash => {
                    found = Some(block);
                    break;
                }
                Ok(Ok(_)) => {}
                // A session that failed (or was cut mid-answer) is not asked again.
                Ok(Err(_)) | Err(_) => *slot = None,
            }
        }
        let Some(block) = found else {
            done.unfound += 1;
            continue;
        };
        // Held by the references already in this node's tables once stored.
        blocks.put(block).await.map_err(|e| e.to_string())?;
        done.fetched += 1;
    }
    Ok(done)
}
