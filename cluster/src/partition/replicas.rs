//! Replica sets: which nodes hold a partition, which of them serves it, and the membership
//! changes that bring each group's voters to the set the ring asks for.
//!
//! A partition's **replica set** is the first R distinct members of the ring's preference list
//! for `partition/P` (fewer while the cluster is smaller). Members that are down stay in the
//! ring, so a dead node keeps its place (the other replicas are a majority without it) until an
//! operator removes it; only a member that joins or is removed changes the sets.
//!
//! The leader of each group brings its voters to the set: a node the set gains is first added as
//! a learner (openraft sends it the log, or a snapshot when the log has moved past it) and is made
//! a voter, with the nodes the set lost dropped, in one joint change once it has caught up.
//!
//! A node **serves** a partition (hosts its entities) only while it leads the group, has applied
//! every entry of earlier terms (its own term's first entry is applied) and heard from a majority
//! within [`SERVING_LEASE`]: a majority that acknowledged the leader at `t` grants no other
//! candidate a vote before `t` plus openraft's leader lease (the election timeout's upper bound),
//! so a leader cut off from its majority stops serving reads before another can be elected.
//! Each term of leadership is **taken up** before it is served: the node first stops any entity
//! an earlier term left behind (one activated by a request that raced a loss of leadership), so
//! no entity answers from state older than the term it serves in.

use std::collections::BTreeSet;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use openraft::{EmptyNode, ServerState};
use tokio::sync::watch;

use super::{Group, Partitions, node_name};
use crate::membership::{MemberState, MemberView, placement_ring};
use crate::ring::Ring;

/// How recently a majority must have acknowledged a leader for it to serve its partition; well
/// inside openraft's leader lease (`election_timeout_max`, 2 s), within which no other replica
/// can be elected.
pub const SERVING_LEASE: Duration = Duration::from_millis(1000);

/// A learner within this many entries of the leader's log counts as caught up and is made a
/// voter.
pub(super) const CAUGHT_UP_SLACK: u64 = 64;

/// Longest one membership step of one partition may take before the round moves on (the next
/// round tries again).
const CHANGE_TIMEOUT: Duration = Duration::from_secs(10);

/// Who serves a partition, as this node knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Serving {
    /// This node: it leads the group, is up to date and holds its majority.
    Here,
    /// Another replica leads the group (by this node's last word from it).
    Leader(u64),
    /// This node is a voter of the group, and no replica serves it for the moment (an
    /// election, or a leader here that is catching up or lost its majority); the reason says
    /// which.
    Unknown(String),
    /// This node is not a voter of the group and knows no leader: a replica can tell.
    Elsewhere,
}

/// The replica set of `partition` on `ring`: the first `replicas` distinct members of the
/// ring's preference list for `partition/P`.
pub fn replica_set(ring: &Ring, partition: u64, replicas: usize) -> Vec<String> {
    ring.preference_list(format!("partition/{partition}").as_bytes(), replicas)
        .into_iter()
        .map(str::to_string)
        .collect()
}

/// What a round of membership changes did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Reconciled {
    /// Partitions this node leads whose voters are the replica set.
    pub settled: usize,
    /// Partitions this node leads that are still on their way to it.
    pub pending: usize,
}

impl Partitions {
    /// Who serves `partition` now.
    pub fn serving(&self, partition: u64) -> Serving {
        self.group(partition).serving()
    }

    /// The partitions this node is ready to serve in a term it has not taken up yet, with the
    /// term: each is served once [`Partitions::take_up`] says its earlier entities are gone.
    pub fn to_take_up(&self) -> Vec<(u64, u64)> {
        self.groups().iter().filter_map(|group| group.ready().map(|term| (group.partition, term))).collect()
    }

    /// This node serves `partition` in `term` from now on (while it leads in that term): every
    /// entity of the partition left from an earlier term has been stopped.
    pub fn take_up(&self, partition: u64, term: u64) {
        let group = &self.group(partition);
        *group.taken_up_at.lock().unwrap_or_else(PoisonError::into_inner) = std::time::Instant::now();
        group.taken_up.store(term, std::sync::atomic::Ordering::Release);
    }

    /// True when this node holds a replica (a voter or a learner) of `partition`.
    pub fn holds(&self, partition: u64) -> bool {
        self.group(partition).is_member()
    }

    /// True when this node holds a replica (a voter or a learner) of at least one partition:
    /// it has founded a cluster or been taken into one.
    pub fn holds_any(&self) -> bool {
        self.groups().iter().any(|group| group.is_member())
    }

    /// One round of membership changes: every partition this node serves moves its voters one
    /// step towards `desired(partition)` (node ids). Partitions led elsewhere are their
    /// leaders' to change.
    pub async fn reconcile(&self, desired: impl Fn(u64) -> BTreeSet<u64>) -> Reconciled {
        let mut steps = Vec::new();
        let mut round = Reconciled::default();
        for group in self.groups() {
            if group.serving() != Serving::Here {
                continue;
            }
            let wanted = desired(group.partition);
            if wanted.is_empty() {
                continue;
            }
            match group.next_step(&wanted) {
                Progress::Settled => round.settled += 1,
                Progress::Waiting => round.pending += 1,
                Progress::Take(step) => {
                    round.pending += 1;
                    steps.push(async move {
                        let outcome = tokio::time::timeout(CHANGE_TIMEOUT, group.take(step)).await;
                        if let Ok(Err(error)) = outcome {
                            tracing::debug!(partition = group.partition, %error, "membership step failed");
                        }
                    });
                }
            }
        }
        futures_util::future::join_all(steps).await;
        round
    }
}

/// Where a group stands on its way to its replica set.
#[derive(Debug)]
enum Progress {
    /// Its voters are the replica set.
    Settled,
    /// A change is being committed, or a new replica is catching up.
    Waiting,
    Take(Step),
}

/// One membership step of a group.
#[derive(Debug)]
enum Step {
    /// Add these nodes as learners, so that the leader starts to send them the log.
    AddLearners(BTreeSet<u64>),
    /// Make these the voters (every one of them is caught up); the others leave the group.
    Voters(BTreeSet<u64>),
}

impl Group {
    fn is_member(&self) -> bool {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        metrics.membership_config.membership().get_node(&self.me).is_some()
    }

    /// This node's leadership of the group: `None` where it does not lead; else the term it can
    /// serve in (taken up or not: it has applied its own term's first entry and holds its
    /// majority), or why it cannot yet.
    fn leadership(&self, m: &openraft::RaftMetrics<u64, EmptyNode>) -> Option<Result<u64, String>> {
        if m.state != ServerState::Leader {
            return None;
        }
        if self.handing_over.load(std::sync::atomic::Ordering::Acquire) {
            return Some(Err(format!(
                "partition {} is handing its leadership to another replica",
                self.partition
            )));
        }
        let current = m.last_applied.is_some_and(|id| id.leader_id.get_term() == m.current_term);
        let held = m.millis_since_quorum_ack.is_some_and(|ms| ms <= SERVING_LEASE.as_millis() as u64);
        Some(match (current, held) {
            (true, true) => Ok(m.current_term),
            (false, _) => {
                Err(format!("partition {} has a new leader that is still applying its log", self.partition))
            }
            (true, false) => Err(format!(
                "partition {}'s leader here has not heard from a majority of its replicas",
                self.partition
            )),
        })
    }

    /// The term this node can serve the group in and has not taken up yet.
    fn ready(&self) -> Option<u64> {
        let term = self.leadership(&self.raft.metrics().borrow())?.ok()?;
        (self.taken_up.load(std::sync::atomic::Ordering::Acquire) != term).then_some(term)
    }

    pub(super) fn serving(&self) -> Serving {
        let metrics = self.raft.metrics();
        let m = metrics.borrow();
        match self.leadership(&m) {
            Some(Ok(term)) if self.taken_up.load(std::sync::atomic::Ordering::Acquire) == term => {
                return Serving::Here;
            }
            Some(Ok(_)) => {
                return Serving::Unknown(format!(
                    "partition {}'s new leader is taking it up",
                    self.partition
                ));
            }
            Some(Err(reason)) => return Serving::Unknown(reason),
            None => {}
        }
        match m.current_leader {
            Some(leader) if leader != self.me => Serving::Leader(leader),
            _ if !m.membership_config.membership().voter_ids().any(|id| id == self.me) => Serving::Elsewhere,
            _ => Serving::Unknown(format!("partition {} is electing a leader", self.partition)),
        }
    }

    /// The next step towards `wanted`.
    fn next_step(&self, wanted: &BTreeSet<u64>) -> Progress {
        let metrics = self.raft.metrics();
        let m = metrics.borrow();
        let membership = m.membership_config.membership();
        if membership.get_joint_config().len() > 1 {
            return Progress::Waiting; // a joint change is being committed
        }
        let voters: BTreeSet<u64> = membership.voter_ids().collect();
        if &voters == wanted {
            return Progress::Settled;
        }
        let known: BTreeSet<u64> = membership.nodes().map(|(id, _)| *id).collect();
        let missing: BTreeSet<u64> = wanted.difference(&known).copied().collect();
        if !missing.is_empty() {
            return Progress::Take(Step::AddLearners(missing));
        }
        let last = m.last_log_index.unwrap_or(0);
        let matched = |node: &u64| {
            m.replication
                .as_ref()
                .and_then(|replication| replication.get(node))
                .and_then(|matched| matched.map(|id| id.index))
                .is_some_and(|index| index + CAUGHT_UP_SLACK >= last)
        };
        match wanted.iter().filter(|node| !voters.contains(node)).all(matched) {
            true => Progress::Take(Step::Voters(wanted.clone())),
            false => Progress::Waiting,
        }
    }

    async fn take(&self, step: Step) -> Result<(), String> {
        match step {
            Step::AddLearners(nodes) => {
                for node in nodes {
                    tracing::info!(partition = self.partition, node = %node_name(node), "adding a replica");
                    self.raft.add_learner(node, EmptyNode {}, false).await.map_err(|e| e.to_string())?;
                }
            }
            Step::Voters(voters) => {
                let names: Vec<String> = voters.iter().copied().map(node_name).collect();
                tracing::info!(partition = self.partition, voters = ?names, "changing the replicas");
                self.raft.change_membership(voters, false).await.map_err(|e| e.to_string())?;
            }
        }
        Ok(())
    }
}

/// The replica set of every partition on the ring over the cluster's members, kept current as
/// members join (or are removed), and whether each member is up: what routing, block placement
/// and the membership changes all read. Cheap to clone.
#[derive(Clone)]
pub struct ReplicaSets {
    me: String,
    replicas: usize,
    count: u64,
    current: Arc<RwLock<(Vec<MemberView>, Ring)>>,
}

impl ReplicaSets {
    /// Replica sets of `replicas` members among `count` partitions, on the ring over `members`
    /// (every member this node knows, down ones too), as seen from node `me`.
    pub fn new(me: &str, replicas: usize, count: u64, mut members: watch::Receiver<Vec<MemberView>>) -> Self {
        let of = |view: Vec<MemberView>| {
            let ring = placement_ring(&view);
            (view, ring)
        };
        let current = Arc::new(RwLock::new(of(members.borrow_and_update().clone())));
        let weak = Arc::downgrade(&current);
        tokio::spawn(async move {
            while members.changed().await.is_ok() {
                let Some(current) = weak.upgrade() else { return };
                let next = of(members.borrow_and_update().clone());
                *current.write().unwrap_or_else(PoisonError::into_inner) = next;
            }
        });
        Self { me: me.to_string(), replicas: replicas.max(1), count, current }
    }

    /// This node's id.
    pub fn me(&self) -> &str {
        &self.me
    }

    /// The partition `key` belongs to.
    pub fn partition_of(&self, key: &str) -> u64 {
        super::partition_of(key, self.count)
    }

    /// The replica set of `partition`, preferred first.
    pub fn of(&self, partition: u64) -> Vec<String> {
        let current = self.current.read().unwrap_or_else(PoisonError::into_inner);
        replica_set(&current.1, partition, self.replicas)
    }

    /// The replica that should lead `partition`: the first member of its set that is up.
    pub fn preferred(&self, partition: u64) -> Option<u64> {
        self.of(partition).iter().find(|node| self.is_up(node)).and_then(|node| super::node_number(node))
    }

    /// The replica set of `partition` as Raft node ids.
    pub fn numbers(&self, partition: u64) -> BTreeSet<u64> {
        self.of(partition).iter().filter_map(|name| super::node_number(name)).collect()
    }

    /// False for a member known to be down (or not known at all).
    pub fn is_up(&self, node: &str) -> bool {
        let current = self.current.read().unwrap_or_else(PoisonError::into_inner);
        current.0.iter().any(|member| member.id == node && member.state != MemberState::Down)
    }

    /// Every member this node knows, and whether it is up.
    pub fn members(&self) -> Vec<(String, bool)> {
        let current = self.current.read().unwrap_or_else(PoisonError::into_inner);
        current.0.iter().map(|member| (member.id.clone(), member.state != MemberState::Down)).collect()
    }

    /// True when another member than this node is up: the node is in touch with a cluster.
    pub fn sees_others(&self) -> bool {
        let current = self.current.read().unwrap_or_else(PoisonError::into_inner);
        current.0.iter().any(|member| member.id != self.me && member.state != MemberState::Down)
    }
}
