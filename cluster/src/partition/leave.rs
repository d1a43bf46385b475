//! Leaving a replica set: a node that is no longer one of a partition's replicas drops its copy.
//!
//! When the ring moves a partition's replica set off a node (a member joined, say), the
//! partition's leader makes the new set the voters and the node leaves the group (see
//! [`super::replicas`]); without this, its rows, its log and the blocks those rows name would
//! stay on its disk for good. So a node asks, for every partition it holds something of while
//! the partition's replica set (as this node sees the ring) leaves it out, the replicas of the set
//! where the group stands ([`Standing`]). Once the group's leader answers that a membership
//! leaving this node out is committed (applied there), and that membership is no older than the
//! newest this node holds, and a majority of the set holds every block the partition's rows
//! name (the new replicas fetch what they lack from any member, this node included: see
//! [`super::repair`]), the node stops its group, deletes the partition's rows, log and applied
//! state in one commit (its vote stays), and starts the group again, empty: should the set come
//! back to it, the leader adds it as it adds any new replica. The blocks only those rows named
//! are then garbage: they are handed to the block collector as candidates.
//!
//! **The vote floor.** Raft's election safety rests on the voters' logs: a replica votes only
//! for a candidate whose log is at least as up to date as its own. A replica that dropped its
//! log would vote for anyone, and a candidate still on the old membership (one that missed the
//! change) could count it towards a majority of the old voters and be elected without entries
//! that majority committed. So the node keeps the last log id it held as its *vote floor*,
//! durably with the drop, and refuses every candidate whose log is behind it, as its log would
//! have; once its log, refilled, passes the floor, openraft's own check is the stricter one.

use std::collections::BTreeSet;
use std::sync::{Arc, PoisonError};

use openraft::raft::{VoteRequest, VoteResponse};
use openraft::{LogId, ServerState};
use serde::{Deserialize, Serialize};
use serv_storage::blocks::{BLOCK_REFS, BlockHash};
use serv_storage::{KeyPrefix, Storage};

use super::log::RAFT_LOG;
use super::machine::APPLIED;
use super::{BlockPlacement, Group, Meta, PartitionError, Partitions, SERVING_LEASE, meta_table, node_name};

/// Where the meta table keeps a partition's vote floor.
const VOTE_FLOOR: &str = "vote_floor";

/// The facts of a partition that a drop deletes (its vote stays, and its floor is written).
const DROPPED_FACTS: [&str; 3] = [APPLIED, super::machine::SNAPSHOT, super::log::PURGED];

/// Where a partition's group stands, as one replica sees it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Standing {
    /// The replica leads the group and heard from a majority within the serving lease.
    pub leader: bool,
    /// The newest membership the replica holds, and its log id.
    pub membership: Option<LogId<u64>>,
    /// Its voters and learners.
    pub members: BTreeSet<u64>,
    /// It is a joint membership (a change under way).
    pub joint: bool,
    /// The replica applied it: it is committed.
    pub committed: bool,
}

/// The vote floor stored for `partition`, if its replica here was ever dropped.
pub(super) fn vote_floor(storage: &Storage, partition: u64) -> serv_storage::Result<Option<LogId<u64>>> {
    match meta_table(storage)?.get(&(partition, VOTE_FLOOR.to_string()))? {
        Some(Meta::LogId(floor)) => Ok(floor),
        _ => Ok(None),
    }
}

impl Group {
    pub(super) fn standing(&self) -> Standing {
        let m = self.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        Standing {
            leader: m.state == ServerState::Leader
                && m.millis_since_quorum_ack.is_some_and(|ms| ms <= SERVING_LEASE.as_millis() as u64),
            membership: *m.membership_config.log_id(),
            members: membership.nodes().map(|(id, _)| *id).collect(),
            joint: membership.get_joint_config().len() > 1,
            committed: m.last_applied >= *m.membership_config.log_id(),
        }
    }

    /// The refusal of a candidate whose log is behind this replica's vote floor; `None` for any
    /// other request, which the group judges itself.
    pub(super) fn refuses_vote(&self, request: &VoteRequest<u64>) -> Option<VoteResponse<u64>> {
        let floor = self.vote_floor?;
        if request.last_log_id >= Some(floor) {
            return None;
        }
        let vote = self.raft.metrics().borrow().vote;
        Some(VoteResponse { vote, vote_granted: false, last_log_id: Some(floor) })
    }

    /// True when the group holds anything of the partition: entries, or applied rows.
    fn holds_data(&self) -> bool {
        let m = self.raft.metrics();
        let m = m.borrow();
        m.last_log_index.is_some() || m.last_applied.is_some()
    }

    /// True when `standing` (another replica's answer) lets this node drop its copy: a leader's
    /// committed membership without this node, no older than the newest membership here.
    fn may_drop(&self, standing: &Standing) -> bool {
        let mine = *self.raft.metrics().borrow().membership_config.log_id();
        standing.leader
            && standing.committed
            && !standing.joint
            && !standing.members.contains(&self.me)
            && standing.membership >= mine
    }
}

impl Partitions {
    /// Drops this node's copy of every partition whose replica set, `desired(partition)`, leaves
    /// it out, whose leader confirms the group left it too, and whose blocks a majority of the
    /// set holds (see the module's text); how many it dropped.
    pub async fn drop_left(&self, desired: impl Fn(u64) -> BTreeSet<u64>, blocks: &BlockPlacement) -> usize {
        let Some(transport) = &self.transport else { return 0 };
        let mut dropped = 0;
        for group in self.groups() {
            let set = desired(group.partition);
            if set.is_empty() || set.contains(&group.me) || !group.holds_data() {
                continue;
            }
            // The leader's word first (one small RPC): the blocks are checked, by pinning them on
            // the new replicas, only once the group has left this node.
            let mut standing = None;
            for &replica in &set {
                match transport.ask_standing(group.partition, replica).await {
                    Ok(answer) if group.may_drop(&answer) => {
                        standing = Some(answer);
                        break;
                    }
                    _ => {}
                }
            }
            let Some(standing) = standing else { continue };
            // The new replicas fetch the blocks they lack from any member (block repair), this
            // node included: it keeps them until a majority of the set has them.
            match self.named_blocks(group.partition) {
                Ok(hashes) if blocks.held_by_majority(&set, &hashes).await => {}
                Ok(hashes) => {
                    tracing::debug!(
                        partition = group.partition,
                        blocks = hashes.len(),
                        "the partition's new replicas lack some of its blocks yet: its copy here stays"
                    );
                    continue;
                }
                Err(error) => {
                    tracing::warn!(partition = group.partition, %error, "cannot list the partition's blocks");
                    continue;
                }
            }
            match self.drop_replica(&group, &standing).await {
                Ok(true) => dropped += 1,
                Ok(false) => {}
                Err(error) => {
                    tracing::warn!(partition = group.partition, %error, "could not drop the partition's replica here")
                }
            }
        }
        dropped
    }

    /// Stops `group`, deletes its copy of the partition if `standing` still allows it once the
    /// group has stopped (it may have been added back meanwhile), and starts it again; true if
    /// it deleted the copy.
    async fn drop_replica(&self, group: &Arc<Group>, standing: &Standing) -> Result<bool, PartitionError> {
        let partition = group.partition;
        let slot = &self.groups[partition as usize];
        group
            .raft
            .shutdown()
            .await
            .map_err(|e| PartitionError::Raft { partition, message: e.to_string() })?;
        // Stopped: nothing reaches the log or the tables any more, and the metrics are final.
        let drop = group.may_drop(standing);
        let outcome = match drop {
            true => self.delete_copy(partition).await,
            false => Ok(None),
        };
        // Started again whatever happened: emptied, or as it was.
        let (restarted, _) = self.starter.start(partition, None, group.stats.clone()).await?;
        *slot.write().unwrap_or_else(PoisonError::into_inner) = restarted;
        let floor = outcome?;
        if drop {
            let members: Vec<String> = standing.members.iter().copied().map(node_name).collect();
            tracing::info!(partition, replicas = ?members, vote_floor = ?floor, "left the replica set: dropped this node's copy of the partition");
        }
        Ok(drop)
    }

    /// The blocks the rows of `partition` here name.
    fn named_blocks(&self, partition: u64) -> serv_storage::Result<Vec<BlockHash>> {
        let storage = &self.starter.storage;
        let mut hashes: Vec<BlockHash> = storage
            .owned_keys(partition, &storage.table(BLOCK_REFS)?)?
            .into_iter()
            .map(|(hash, _)| hash)
            .collect();
        hashes.dedup();
        Ok(hashes)
    }

    /// Deletes the partition's rows, log and applied state in one durable commit, with the
    /// newest log id it held (durably: what it may have acknowledged) as its vote floor, which
    /// it answers; its vote stays.
    async fn delete_copy(&self, partition: u64) -> serv_storage::Result<Option<LogId<u64>>> {
        let storage = &self.starter.storage;
        let meta = meta_table(storage)?;
        let log = storage.table(RAFT_LOG)?;
        // Once the rows are gone, any of their blocks no other row names is garbage.
        let named = self.named_blocks(partition)?;
        let mut changes = storage.replace_owned(partition, Vec::new())?;
        let mut floor = vote_floor(storage, partition)?;
        for row in log.scan(&KeyPrefix::new().part(&partition), None) {
            let (key, super::log::LogRecord(entry)) = row?;
            floor = floor.max(Some(entry.log_id));
            changes.delete(&log, &key);
        }
        for fact in DROPPED_FACTS {
            let key = (partition, fact.to_string());
            floor = floor.max(match meta.get(&key)? {
                Some(Meta::LogId(id)) => id,
                Some(Meta::Applied { last, .. }) => last,
                Some(Meta::Snapshot(snapshot)) => snapshot.last_log_id,
                _ => None,
            });
            changes.delete(&meta, &key);
        }
        changes.put(&meta, &(partition, VOTE_FLOOR.to_string()), &Meta::LogId(floor))?;
        storage.local().commit(changes).await?;
        storage.blocks().released(named);
        Ok(floor)
    }
}
