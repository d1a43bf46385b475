//! Replication health: how far each replica is behind its leader, how often a group's leader
//! changes, and the one rule that says a partition is under-replicated, which
//! `GET /v1/cluster/partitions`, `/metrics` and the console all read.
//!
//! Every figure here is this node's view: lag is known only where this node leads (openraft
//! reports replication only to the leader), and a node that holds no replica of a partition
//! judges nothing about it.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use openraft::{EmptyNode, RaftMetrics};
use serde::{Deserialize, Serialize};

use super::{PartitionStatus, Partitions, ReplicaSets, node_name};

/// A voter more than this many entries behind its leader's log is lagging (as a learner within
/// as many counts as caught up and is made a voter, see `replicas::CAUGHT_UP_SLACK`).
pub const LAGGING_ENTRIES: u64 = super::replicas::CAUGHT_UP_SLACK;

/// Why a partition is under-replicated.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum Shortfall {
    /// No replica leads the partition, as this node knows: it takes no writes.
    NoLeader,
    /// Fewer of its voters are alive members than the partition should have (its replication
    /// factor, or every member where the cluster has fewer); `down` names the voters that are not.
    TooFewVoters { alive: usize, wanted: usize, down: Vec<String> },
    /// Voters more than [`LAGGING_ENTRIES`] behind the leader's log (one the leader never reached
    /// lags by the whole log), as the leader knows.
    Lagging { voters: Vec<String> },
}

/// Why `status` is under-replicated, given the size of its replica set (`wanted`) and whether a
/// node is an alive member; empty when it is not. A partition is under-replicated when it has no
/// leader, or fewer of its voters than `wanted` are alive, or (known only on its leader, which
/// alone has `lag`) a voter lags by more than [`LAGGING_ENTRIES`].
pub fn shortfalls(status: &PartitionStatus, wanted: usize, is_up: impl Fn(&str) -> bool) -> Vec<Shortfall> {
    let mut found = Vec::new();
    if status.leader.is_none() {
        found.push(Shortfall::NoLeader);
    }
    let down: Vec<String> = status.replicas.iter().filter(|node| !is_up(node)).cloned().collect();
    let alive = status.replicas.len() - down.len();
    if alive < wanted {
        found.push(Shortfall::TooFewVoters { alive, wanted, down });
    }
    let lagging: Vec<String> = status
        .replicas
        .iter()
        .filter(|node| status.lag.get(*node).is_some_and(|lag| *lag > LAGGING_ENTRIES))
        .cloned()
        .collect();
    if !lagging.is_empty() {
        found.push(Shortfall::Lagging { voters: lagging });
    }
    found
}

/// Entries of the leader's log each replica lacks, by node, from the leader's replication
/// metrics: its last log index minus the replica's matched index (the whole log where nothing is
/// matched yet). Empty where this node does not lead.
pub(super) fn lag(m: &RaftMetrics<u64, EmptyNode>) -> BTreeMap<String, u64> {
    let Some(replication) = &m.replication else { return BTreeMap::new() };
    let entries = m.last_log_index.map_or(0, |last| last + 1);
    replication
        .iter()
        .map(|(node, matched)| {
            let held = matched.map_or(0, |id| id.index + 1);
            (node_name(*node), entries.saturating_sub(held))
        })
        .collect()
}

/// The commit index as the leader knows it: the highest index a majority of every voter
/// configuration (both, during a joint change) holds, from its replication metrics, and never
/// below what it applied. `None` where this node does not lead: openraft 0.9 tells a follower no
/// commit index.
pub(super) fn commit_index(m: &RaftMetrics<u64, EmptyNode>) -> Option<u64> {
    let replication = m.replication.as_ref()?;
    let matched = |node: &u64| replication.get(node).copied().flatten().map(|id| id.index);
    let quorum = m
        .membership_config
        .membership()
        .get_joint_config()
        .iter()
        .map(|voters| {
            let mut held: Vec<Option<u64>> = voters.iter().map(matched).collect();
            held.sort_unstable_by(|a, b| b.cmp(a));
            held.get(voters.len() / 2).copied().flatten()
        })
        .min()
        .flatten();
    quorum.max(m.last_applied.map(|id| id.index))
}

impl PartitionStatus {
    /// This status with its shortfalls judged, against the replica sets where the node knows
    /// them. A node that holds no replica of the partition knows neither its leader nor its
    /// replicas' state, and judges nothing.
    pub(super) fn judged(mut self, sets: Option<&ReplicaSets>) -> Self {
        if self.role == "none" {
            return self;
        }
        self.shortfalls = match sets {
            Some(sets) => shortfalls(&self, sets.of(self.partition).len(), |node| sets.is_up(node)),
            None => shortfalls(&self, 0, |_| true),
        };
        self.under_replicated = !self.shortfalls.is_empty();
        self
    }
}

/// Counts into `stats`, until the group stops, each time its leader (as this node hears it)
/// becomes another node than the last one it had. openraft publishes every change of leader on
/// the group's server-metrics watch, so a change is missed only if it is undone before this task
/// wakes; the first leader this node learns after it starts is not a change.
pub(super) fn count_leader_changes(
    raft: &openraft::Raft<super::TypeConfig>,
    stats: std::sync::Arc<super::Counters>,
) {
    let mut server = raft.server_metrics();
    tokio::spawn(async move {
        let mut last = None;
        loop {
            let leader = server.borrow_and_update().current_leader;
            if leader.is_some() && leader != last {
                if last.is_some() {
                    stats.leader_changes.fetch_add(1, Ordering::Relaxed);
                }
                last = leader;
            }
            if server.changed().await.is_err() {
                return; // the group stopped
            }
        }
    });
}

impl Partitions {
    /// Changes of leader this node saw, summed over its partitions (see [`count_leader_changes`]).
    pub fn leader_changes(&self) -> u64 {
        self.groups().iter().map(|group| group.stats.leader_changes.load(Ordering::Relaxed)).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "000000000000000a";
    const B: &str = "000000000000000b";
    const C: &str = "000000000000000c";

    /// A partition led by A over voters A, B and C, with `lag` as A reports it.
    fn led_by_a(lag: &[(&str, u64)]) -> PartitionStatus {
        PartitionStatus {
            partition: 7,
            replicas: vec![A.into(), B.into(), C.into()],
            changing: false,
            leader: Some(A.into()),
            preferred_leader: Some(A.into()),
            term: 3,
            role: "leader".into(),
            last_log_index: Some(200),
            commit_index: Some(200),
            applied_index: Some(200),
            snapshot_index: None,
            purged_index: None,
            lag: lag.iter().map(|(node, entries)| (node.to_string(), *entries)).collect(),
            under_replicated: false,
            shortfalls: Vec::new(),
        }
    }

    #[test]
    fn a_led_partition_with_every_voter_up_and_caught_up_is_fully_replicated() {
        let status = led_by_a(&[(A, 0), (B, 3), (C, LAGGING_ENTRIES)]);
        assert_eq!(shortfalls(&status, 3, |_| true), []);
    }

    #[test]
    fn a_partition_without_a_leader_is_under_replicated() {
        let status = PartitionStatus { leader: None, ..led_by_a(&[]) };
        assert_eq!(shortfalls(&status, 3, |_| true), [Shortfall::NoLeader]);
    }

    #[test]
    fn a_voter_that_is_down_leaves_its_partition_under_replicated() {
        let status = led_by_a(&[]);
        let found = shortfalls(&status, 3, |node| node != C);
        assert_eq!(found, [Shortfall::TooFewVoters { alive: 2, wanted: 3, down: vec![C.into()] }]);
    }

    #[test]
    fn fewer_voters_than_the_replica_set_is_under_replicated_and_more_members_than_it_is_not() {
        let alone = PartitionStatus { replicas: vec![A.into()], ..led_by_a(&[]) };
        let found = shortfalls(&alone, 3, |_| true);
        assert_eq!(found, [Shortfall::TooFewVoters { alive: 1, wanted: 3, down: vec![] }]);
        // A cluster of one member, or a replication factor of one, wants one voter.
        assert_eq!(shortfalls(&alone, 1, |_| true), []);
    }

    #[test]
    fn a_voter_the_leader_reports_far_behind_is_lagging() {
        let status = led_by_a(&[(A, 0), (B, LAGGING_ENTRIES + 1), (C, 0)]);
        assert_eq!(shortfalls(&status, 3, |_| true), [Shortfall::Lagging { voters: vec![B.into()] }]);
    }

    #[test]
    fn a_node_that_holds_no_replica_judges_nothing() {
        let status = PartitionStatus { role: "none".into(), leader: None, ..led_by_a(&[]) };
        let judged = status.judged(None);
        assert!(!judged.under_replicated && judged.shortfalls.is_empty(), "{judged:?}");
    }
}
