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

use super::{BlockPlacement, Partitions};

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
                    Ok(done) => {
                        tracing::info!(
                            partition,
                            fetched = done.fetched,
                            unfound = done.unfound,
                            "blocks repaired"
                        )
                    }
                    Err(error) => tracing::warn!(partition, %error, "block repair failed"),
                }
            }
        }
    })
}

/// Fetches the blocks `partition`'s references name and this node lacks.
async fn repair(partition: u64, placement: &BlockPlacement, storage: &Storage) -> Result<Repaired, String> {
    let blocks = storage.blocks();
    let named = storage.owned_keys(partition, blocks.refs()).map_err(|e| e.to_string())?;
    let mut hashes: Vec<BlockHash> = named.into_iter().map(|(hash, _)| hash).collect();
    hashes.dedup();
    let missing = blocks.missing(hashes).map_err(|e| e.to_string())?;
    if missing.is_empty() {
        return Ok(Repaired::default());
    }
    let sources = placement.sources(partition);
    let mut done = Repaired::default();
    for hash in missing {
        match sources.get(&hash).await {
            Ok(Some(block)) => {
                // Held by the references already in this node's tables once stored.
                blocks.put(block).await.map_err(|e| e.to_string())?;
                done.fetched += 1;
            }
            Ok(None) | Err(_) => done.unfound += 1,
        }
    }
    Ok(done)
}
