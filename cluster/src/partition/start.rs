//! Starting a partition's Raft group on this node: its log and state machine on the node's
//! storage, openraft's engine over the mesh, its proposer and its counters. At node start for
//! every partition, and again for a partition whose copy this node dropped (see [`super::leave`]).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::{EmptyNode, Raft};
use serv_storage::Storage;

use super::{
    Counters, Group, NO_TERM, PartitionError, RaftTransport, health, leave, log, machine, network, proposer,
    recent,
};

/// What starting a partition's group takes.
pub(super) struct Starter {
    pub(super) storage: Storage,
    pub(super) node: u64,
    pub(super) config: Arc<openraft::Config>,
    pub(super) transport: Option<RaftTransport>,
    pub(super) proposal_timeout: Duration,
}

impl Starter {
    /// Starts the group of `partition` on this node's storage, initialized with the voters
    /// `founding` when it was never initialized (else left to wait for a leader to add it); true
    /// when the group holds no log entry (never initialized here, or its copy dropped when this
    /// node left the replica set): there is nothing to apply, and no membership to wait for.
    /// `stats` are the counters the group adds to.
    pub(super) async fn start(
        &self,
        partition: u64,
        founding: Option<&BTreeSet<u64>>,
        stats: Arc<Counters>,
    ) -> Result<(Arc<Group>, bool), PartitionError> {
        let failed = |e: &dyn std::fmt::Display| PartitionError::Raft { partition, message: e.to_string() };
        let storage = &self.storage;
        let recent = Arc::new(recent::Recent::default());
        let mut log = log::LogStore::open(storage, partition, recent.clone())?;
        let empty = openraft::storage::RaftLogStorage::get_log_state(&mut log)
            .await
            .map_err(|e| failed(&e))?
            .last_log_id
            .is_none();
        let vote_floor = leave::vote_floor(storage, partition)?;
        let machine = machine::StateMachine::open(storage, partition, recent)?;
        let network =
            network::Network { partition, transport: self.transport.clone(), storage: storage.clone() };
        let raft =
            Raft::new(self.node, self.config.clone(), network, log, machine).await.map_err(|e| failed(&e))?;
        let fresh = !raft.is_initialized().await.map_err(|e| failed(&e))?;
        let founded = founding.filter(|_| fresh);
        if let Some(founders) = founded {
            let members: BTreeMap<u64, EmptyNode> = founders.iter().map(|id| (*id, EmptyNode {})).collect();
            raft.initialize(members).await.map_err(|e| failed(&e))?;
        }
        let holds_nothing = empty && founded.is_none();
        health::count_leader_changes(&raft, stats.clone());
        let proposer =
            proposer::Proposer::start(partition, raft.clone(), stats.clone(), self.proposal_timeout);
        let group = Group {
            partition,
            me: self.node,
            raft,
            stats,
            proposer,
            taken_up: NO_TERM.into(),
            taken_up_at: Instant::now().into(),
            handing_over: false.into(),
            hand_over_failed: None.into(),
            vote_floor,
        };
        Ok((Arc::new(group), holds_nothing))
    }
}
