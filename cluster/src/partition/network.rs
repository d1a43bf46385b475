//! How a partition's Raft group reaches its other replicas.
//!
//! Partitions have one replica, this node, until replica sets follow the ring (the next step of
//! replication): a group of one never sends an RPC. Should openraft ask for a client anyway, the
//! peer is reported unreachable, which openraft treats as "back off and retry", never as success.

use std::future::Future;

use openraft::error::{Fatal, RPCError, RaftError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::RPCOption;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::{EmptyNode, RaftNetwork, RaftNetworkFactory, Snapshot, Vote};

use super::TypeConfig;

/// Makes the clients of one group.
pub(crate) struct Network;

/// A client of one peer of one group.
pub(crate) struct PeerClient {
    peer: u64,
}

impl PeerClient {
    fn unreachable(&self) -> Unreachable {
        Unreachable::new(&std::io::Error::other(format!(
            "node {:016x} is not reachable for Raft: partitions have one replica on this build",
            self.peer
        )))
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerClient;

    async fn new_client(&mut self, target: u64, _node: &EmptyNode) -> PeerClient {
        PeerClient { peer: target }
    }
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        _rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, EmptyNode, RaftError<u64>>> {
        Err(RPCError::Unreachable(self.unreachable()))
    }

    async fn vote(
        &mut self,
        _rpc: VoteRequest<u64>,
        _option: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, EmptyNode, RaftError<u64>>> {
        Err(RPCError::Unreachable(self.unreachable()))
    }

    async fn full_snapshot(
        &mut self,
        _vote: Vote<u64>,
        _snapshot: Snapshot<TypeConfig>,
        _cancel: impl Future<Output = ReplicationClosed> + Send + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<u64>, StreamingError<TypeConfig, Fatal<u64>>> {
        Err(StreamingError::Unreachable(self.unreachable()))
    }
}
