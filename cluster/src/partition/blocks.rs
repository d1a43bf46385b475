//! Block placement: an object's body is stored on its partition's replicas, never in the log.
//!
//! Blocks are content-addressed, so writing one twice is harmless. A block is written to every
//! replica of the partition that is up (this node's store when it is one of them, the others
//! through block sessions) and counts as stored once a majority of the replica set holds it
//! durably; only then may the manifest that names it be proposed. A replica that missed it (it
//! was down, or joined later) is not refilled here: a reader asks the replicas in turn, so a
//! block a majority holds stays readable through the loss of any minority.
//!
//! What a [`PartitionBlocks`] stored or pinned stays pinned, here and on every replica it
//! reached, until it is dropped (the session pins on the peers, [`Pins`] here). A read pins the
//! blocks only where it reads them; a write, a copy included, stores them on a majority.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use serv_storage::blocks::{BlockHash, BlockStore, Pins};
use tokio::sync::OnceCell;

use super::ReplicaSets;
use crate::transfer::{BlockSession, BlockTransfer, TransferError};

/// Longest a replica may take to open a block session or to store one block before the write
/// goes on without it (it is then left out for the rest of the body).
pub const REPLICA_BLOCK_TIMEOUT: Duration = Duration::from_secs(5);

/// Most block hashes one pin request carries when a node checks that another holds them.
const PIN_BATCH: usize = 4096;

/// Where the blocks of a partition are written and read from: its replica set and the
/// sessions to reach it. Cheap to clone.
#[derive(Clone)]
pub struct BlockPlacement {
    pub sets: ReplicaSets,
    pub transfer: BlockTransfer,
    pub local: BlockStore,
}

impl BlockPlacement {
    /// The replica set of the partition `key` belongs to: `None` when it is this node alone
    /// (its block store is all there is), else the replicas, reached through sessions opened
    /// when first needed (a read this node's store answers opens none).
    pub fn for_key(&self, key: &str) -> Result<Option<PartitionBlocks>, String> {
        let partition = self.sets.partition_of(key);
        let set = self.sets.of(partition);
        let me = self.sets.me();
        if set.is_empty() {
            return Err("this node has not joined its cluster yet".into());
        }
        if set.len() == 1 && set[0] == me {
            return Ok(None);
        }
        let needed = set.len() / 2 + 1;
        let local = set
            .iter()
            .any(|node| node == me)
            .then(|| (self.local.clone(), Mutex::new(Pins::none(&self.local))));
        let remotes: Vec<Replica> = set
            .iter()
            .filter(|node| *node != me && self.sets.is_up(node))
            .map(|node| Replica {
                node: node.clone(),
                session: OnceCell::new(),
                failed: AtomicBool::new(false),
            })
            .collect();
        let reachable = remotes.len() + usize::from(local.is_some());
        if reachable < needed {
            return Err(format!(
                "only {reachable} of the {} replicas of partition {partition} ({}) are up; {needed} must hold each block",
                set.len(),
                set.join(", ")
            ));
        }
        Ok(Some(PartitionBlocks { partition, needed, local, remotes, transfer: self.transfer.clone() }))
    }

    /// Every other member that is up, as a source to read `partition`'s blocks from: its
    /// replicas first, then the rest (a node that left the replica set may hold the only copies
    /// of blocks written before). Reads only: nothing is written through it.
    /// True when a majority of `replicas` (node ids, this node never among them) hold every
    /// block of `hashes`: a node leaving the replica set may then drop its copies.
    pub async fn held_by_majority(
        &self,
        replicas: &std::collections::BTreeSet<u64>,
        hashes: &[BlockHash],
    ) -> bool {
        if hashes.is_empty() {
            return true;
        }
        let needed = replicas.len() / 2 + 1;
        let mut holding = 0;
        for node in replicas.iter().map(|id| super::node_name(*id)).filter(|node| node != self.sets.me()) {
            if self.holds_all(&node, hashes).await {
                holding += 1;
            }
            if holding >= needed {
                return true;
            }
        }
        false
    }

    /// True when `node` answers that it holds every block of `hashes` (asked by pinning them,
    /// for as long as the check lasts).
    async fn holds_all(&self, node: &str, hashes: &[BlockHash]) -> bool {
        let opened = tokio::time::timeout(REPLICA_BLOCK_TIMEOUT, self.transfer.open(node)).await;
        let Ok(Ok(session)) = opened else { return false };
        for batch in hashes.chunks(PIN_BATCH) {
            match tokio::time::timeout(REPLICA_BLOCK_TIMEOUT, session.pin(batch)).await {
                Ok(Ok(Ok(()))) => {}
                _ => return false,
            }
        }
        true
    }

    pub(super) fn sources(&self, partition: u64) -> PartitionBlocks {
        let me = self.sets.me();
        let mut nodes = self.sets.of(partition);
        nodes.extend(self.sets.members().into_iter().map(|(id, _)| id));
        let mut seen = std::collections::HashSet::new();
        nodes.retain(|node| node != me && self.sets.is_up(node) && seen.insert(node.clone()));
        let remotes = nodes
            .into_iter()
            .map(|node| Replica { node, session: OnceCell::new(), failed: AtomicBool::new(false) })
            .collect();
        PartitionBlocks {
            partition,
            needed: usize::MAX,
            local: None,
            remotes,
            transfer: self.transfer.clone(),
        }
    }
}

/// One partition's replicas, for the blocks of one request.
pub struct PartitionBlocks {
    partition: u64,
    /// Replicas that must hold a block for it to count as stored.
    needed: usize,
    /// This node's store, when this node is a replica, and what was pinned in it.
    local: Option<(BlockStore, Mutex<Pins>)>,
    /// The other replicas that are up, preferred first.
    remotes: Vec<Replica>,
    transfer: BlockTransfer,
}

struct Replica {
    node: String,
    /// The session, once opened (`None`: it could not be).
    session: OnceCell<Option<BlockSession>>,
    /// The replica failed or was too slow once; its session is not used again (an abandoned
    /// request may have left it mid-frame).
    failed: AtomicBool,
}

impl Replica {
    /// The session with the replica, opened on first use; `None` once it failed.
    async fn session(&self, transfer: &BlockTransfer) -> Option<&BlockSession> {
        if self.failed.load(Ordering::Acquire) {
            return None;
        }
        let opened = self
            .session
            .get_or_init(|| async {
                match tokio::time::timeout(REPLICA_BLOCK_TIMEOUT, transfer.open(&self.node)).await {
                    Ok(Ok(session)) => Some(session),
                    Ok(Err(error)) => {
                        self.fail(error);
                        None
                    }
                    Err(_) => {
                        self.fail("opening a block session timed out");
                        None
                    }
                }
            })
            .await;
        opened.as_ref().filter(|_| !self.failed.load(Ordering::Acquire))
    }

    fn fail(&self, error: impl std::fmt::Display) {
        tracing::debug!(node = %self.node, %error, "a replica left out of a block request");
        self.failed.store(true, Ordering::Release);
    }

    /// `request` on the replica's session within [`REPLICA_BLOCK_TIMEOUT`]; a replica that
    /// fails or is too slow is left out from then on.
    async fn ask<'a, T, F>(
        &'a self,
        transfer: &BlockTransfer,
        request: impl FnOnce(&'a BlockSession) -> F,
    ) -> Result<T, String>
    where
        F: Future<Output = Result<T, TransferError>>,
    {
        let session =
            self.session(transfer).await.ok_or_else(|| format!("node {}: unreachable", self.node))?;
        match tokio::time::timeout(REPLICA_BLOCK_TIMEOUT, request(session)).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(error)) => {
                let reason = format!("node {}: {error}", self.node);
                self.fail(&reason);
                Err(reason)
            }
            Err(_) => {
                let reason = format!("node {}: timed out", self.node);
                self.fail(&reason);
                Err(reason)
            }
        }
    }
}

impl PartitionBlocks {
    /// The partition these blocks belong to.
    pub fn partition(&self) -> u64 {
        self.partition
    }

    /// Stores `block` on every replica it can reach; answers its hash once a majority of the
    /// replica set holds it durably.
    pub async fn put(&self, block: Bytes) -> Result<BlockHash, String> {
        let local = async {
            let (store, pins) = self.local.as_ref()?;
            Some(match store.put(block.clone()).await {
                Ok((hash, pinned)) => {
                    pins.lock().unwrap_or_else(PoisonError::into_inner).absorb(pinned);
                    Ok(hash)
                }
                Err(error) => Err(format!("this node: {error}")),
            })
        };
        let block = &block;
        let remote =
            self.remotes.iter().map(|replica| replica.ask(&self.transfer, |session| session.put(block)));
        let (local, remote) = tokio::join!(local, futures_util::future::join_all(remote));
        let mut stored = 0;
        let mut errors = Vec::new();
        // Content addressing: a replica that names the bytes otherwise did not store them.
        let expected = BlockHash::of(block);
        for outcome in local.into_iter().chain(remote) {
            match outcome {
                Ok(theirs) if theirs == expected => stored += 1,
                Ok(theirs) => errors.push(format!("a replica answered {theirs} for block {expected}")),
                Err(error) => errors.push(error),
            }
        }
        match stored >= self.needed {
            true => Ok(expected),
            false => Err(format!(
                "the block reached {stored} replicas of partition {}, {} needed ({})",
                self.partition,
                self.needed,
                errors.join("; ")
            )),
        }
    }

    /// The bytes of a block: from this node's store, else from the replicas in turn.
    pub async fn get(&self, hash: &BlockHash) -> Result<Option<Bytes>, String> {
        let mut errors = Vec::new();
        if let Some((store, _)) = &self.local {
            match store.get(hash) {
                Ok(Some(block)) => return Ok(Some(block)),
                Ok(None) => {}
                Err(error) => errors.push(format!("this node: {error}")),
            }
        }
        for replica in &self.remotes {
            match replica.ask(&self.transfer, |session| session.get(hash)).await {
                // Checked: another node's answer is input like any other.
                Ok(Some(block)) if BlockHash::of(&block) == *hash => return Ok(Some(block)),
                Ok(Some(_)) => {
                    replica.fail("it answered other bytes for a block");
                    errors.push(format!("node {}: other bytes for block {hash}", replica.node));
                }
                Ok(None) => {}
                Err(error) => errors.push(error),
            }
        }
        match errors.is_empty() {
            true => Ok(None),
            false => Err(errors.join("; ")),
        }
    }

    /// Pins blocks that must exist where they will be read: this node's store when it holds
    /// them all, else the first replica that does (reads ask in that order); answers a hash
    /// that no replica holds instead.
    pub async fn pin(&self, hashes: &[BlockHash]) -> Result<Result<(), BlockHash>, String> {
        let mut missing = None;
        if let Some((store, pins)) = &self.local {
            match store.pin_existing(hashes) {
                Ok(Ok(held)) => {
                    pins.lock().unwrap_or_else(PoisonError::into_inner).absorb(held);
                    return Ok(Ok(()));
                }
                Ok(Err(hash)) => missing = Some(hash),
                Err(error) => tracing::debug!(%error, "pinning blocks here failed"),
            }
        }
        for replica in &self.remotes {
            match replica.ask(&self.transfer, |session| session.pin(hashes)).await {
                Ok(Ok(())) => return Ok(Ok(())),
                Ok(Err(hash)) => missing = missing.or(Some(hash)),
                Err(_) => {}
            }
        }
        missing.map(Err).ok_or_else(|| "no replica could be reached to pin the blocks".to_string())
    }
}
