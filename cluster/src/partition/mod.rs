//! Partitions: every entity's writes go through the Raft log of the partition its key hashes to.
//!
//! A cluster has a fixed number of partitions, chosen when its first node starts and stored, so
//! a key's partition never changes under it. Each partition is one openraft group; the groups of
//! a node share its fjall database (log, vote and applied state in their own tables, see [`log`]
//! and [`machine`]) and its group commit, so the log appends of every partition on the node share
//! fsyncs.
//!
//! An entity commits a [`WriteSet`] through its partition's [`CommitPath`]: the set is proposed
//! to the group, and the commit resolves once the entry is durable on a majority of the group and
//! applied to this node's tables, so the entity reads back what it wrote. Proposals are handed to
//! openraft in the order they are staged, so an entity that pipelines its writes sees them
//! applied in that order.
//!
//! A founding node starts every group with itself as the one replica; a node that joins starts
//! its groups empty and is added to those whose replica set names it (see [`replicas`]).

mod blocks;
mod health;
mod leadership;
mod leave;
mod log;
mod machine;
mod network;
mod proposer;
mod recent;
mod repair;
mod replicas;
mod start;

pub use blocks::{BlockPlacement, PartitionBlocks, REPLICA_BLOCK_TIMEOUT};
pub use health::{LAGGING_ENTRIES, Shortfall, shortfalls};
pub use leadership::{HAND_OVER_TIMEOUT, MAX_HAND_OVERS};
pub use network::{MAX_RAFT_FRAME_BYTES, MAX_SNAPSHOT_BYTES, RaftServer, RaftTransport};
pub use repair::{REPAIR_EVERY, spawn_block_repair};
pub use replicas::{Reconciled, ReplicaSets, SERVING_LEASE, Serving, replica_set};

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::{EmptyNode, LogId, Raft, ServerState, SnapshotMeta, SnapshotPolicy, StoredMembership, Vote};
use serde::{Deserialize, Serialize};
use serv_storage::{CommitPath, Record, Staged, Storage, StorageError, Table, TableDef, WriteSet};

openraft::declare_raft_types!(
    /// The types of every partition's Raft group.
    pub TypeConfig:
        D = WriteSet,
        R = (),
        NodeId = u64,
        Node = EmptyNode,
        SnapshotData = PartitionSnapshot,
);

/// Partitions of a new cluster unless the operator chooses otherwise.
pub const DEFAULT_PARTITIONS: u64 = 64;

/// Most partitions a cluster may have.
pub const MAX_PARTITIONS: u64 = 4096;

/// How long a node waits at start for every partition to have a leader.
pub const LEADERSHIP_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a group waits at start for openraft to publish the membership it holds: a group
/// still empty after this (one waiting to be joined) has none.
const MEMBERSHIP_LOAD_TIMEOUT: Duration = Duration::from_millis(500);

/// Log entries past the last snapshot that make a partition take a new one (which lets the log
/// before it go).
const SNAPSHOT_EVERY_ENTRIES: u64 = 1024;

/// Entries kept in a partition's log behind its snapshot, for replicas a little behind.
const LOG_KEPT_BEHIND_SNAPSHOT: u64 = 256;

/// Longest a snapshot may take to reach a replica and be installed there, in milliseconds.
const SNAPSHOT_TIMEOUT_MS: u64 = 30_000;

/// A partition's state as a snapshot: the node's own tables as of the snapshot's applied point.
/// Held as a reference while at rest; the rows are read out, at one instant together with the
/// applied point they belong to, only when a snapshot travels to another replica.
#[derive(Debug)]
pub enum PartitionSnapshot {
    /// The partition's rows in this node's tables.
    Here,
    /// Rows that came from another replica, to install.
    Rows(Vec<serv_storage::OwnedRow>),
}

/// The facts the partition layer keeps per partition (and, under [`CLUSTER`], for the node).
pub(crate) type MetaKey = (u64, String);

#[derive(Serialize, Deserialize)]
pub(crate) enum Meta {
    Vote(Vote<u64>),
    LogId(Option<LogId<u64>>),
    Applied { last: Option<LogId<u64>>, membership: StoredMembership<u64, EmptyNode> },
    Snapshot(SnapshotMeta<u64, EmptyNode>),
    Partitions(u64),
}

impl Record for Meta {
    const FORMAT: u8 = 1;
}

const RAFT_META: TableDef<MetaKey, Meta> = TableDef::new("raft_meta");

/// The partition-number slot of [`MetaKey`] for facts of the node as a whole.
const CLUSTER: u64 = u64::MAX;

pub(crate) fn meta_table(storage: &Storage) -> serv_storage::Result<Table<MetaKey, Meta>> {
    storage.table(RAFT_META)
}

/// openraft's storage error for one of ours, `verb` saying what failed
/// (`StorageIOError::write_logs`, ...).
pub(crate) trait OrRaft<T> {
    fn or_raft(
        self,
        verb: impl FnOnce(openraft::AnyError) -> openraft::StorageIOError<u64>,
    ) -> std::result::Result<T, openraft::StorageError<u64>>;
}

impl<T> OrRaft<T> for serv_storage::Result<T> {
    fn or_raft(
        self,
        verb: impl FnOnce(openraft::AnyError) -> openraft::StorageIOError<u64>,
    ) -> std::result::Result<T, openraft::StorageError<u64>> {
        self.map_err(|error| verb(openraft::AnyError::new(&error)).into())
    }
}

/// Why the partition layer could not start.
#[derive(Debug, thiserror::Error)]
pub enum PartitionError {
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
    #[error(
        "this data dir belongs to a cluster of {stored} partitions; --partitions {asked} cannot change that (leave it out, or use a new data dir)"
    )]
    CountMismatch { stored: u64, asked: u64 },
    #[error("--partitions must be between 1 and {MAX_PARTITIONS}, not {0}")]
    CountOutOfRange(u64),
    #[error("node id {0:?} is not 16 hex digits")]
    NodeId(String),
    #[error("partition {partition}: {message}")]
    Raft { partition: u64, message: String },
}

/// One partition's state, as `GET /v1/cluster/partitions` shows it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PartitionStatus {
    pub partition: u64,
    /// Node ids of the voting replicas (of both configurations while `changing`).
    pub replicas: Vec<String>,
    /// A change of the voters is being committed (old and new voters must both agree; the
    /// partition is not yet on its new replicas).
    pub changing: bool,
    pub leader: Option<String>,
    /// The replica that should lead: the first of the replica set that is up. The leader hands
    /// the partition over to it once it holds the whole log. None for a group of more than
    /// three voters, which is not handed over.
    pub preferred_leader: Option<String>,
    pub term: u64,
    /// This node's role in the group: `leader`, `follower`, `candidate`, `learner`, or `none`
    /// (it holds no replica: never added, or removed).
    pub role: String,
    pub last_log_index: Option<u64>,
    /// Entries up to here are committed (held by a majority); known only where this node leads
    /// (see [`health::commit_index`]), null elsewhere.
    pub commit_index: Option<u64>,
    pub applied_index: Option<u64>,
    pub snapshot_index: Option<u64>,
    /// The log before (and at) this index is gone: a replica behind it gets a snapshot.
    pub purged_index: Option<u64>,
    /// Entries of this node's log each replica lacks, by node (see [`health`]); only where this
    /// node leads, empty elsewhere. (openraft 0.9 publishes no commit index, so none is shown.)
    pub lag: BTreeMap<String, u64>,
    /// The partition lacks a leader or healthy voters, as this node judges (see [`shortfalls`]).
    pub under_replicated: bool,
    /// Why it is under-replicated; empty when it is not.
    pub shortfalls: Vec<Shortfall>,
}

/// Counters of the proposals this node made, for `/metrics`.
#[derive(Clone, Debug, Default)]
pub struct ProposalStats {
    pub proposals: u64,
    /// Proposals committed and applied.
    pub committed: u64,
    pub failed: u64,
    /// Sum of the time from proposal to applied, in microseconds.
    pub latency_us_sum: u64,
}

/// How a node's partitions start.
#[derive(Clone, Default)]
pub struct PartitionOptions {
    /// `--partitions` as given: taken when the data dir is new, checked against the stored
    /// count otherwise.
    pub count: Option<u64>,
    /// The voting replicas of every new group (node ids); empty: this node alone.
    pub founders: BTreeSet<u64>,
    /// This node joins a cluster that exists: its new groups start empty and wait for their
    /// leaders to add it, rather than founding groups of their own.
    pub join: bool,
    /// How groups reach their replicas on other nodes, and the server that answers them; none
    /// for groups of one.
    pub transport: Option<(RaftTransport, RaftServer)>,
    /// Longest a proposal waits to be committed before its writer is told it failed (a leader
    /// cut off from its majority never commits; the write may still commit later, but it was
    /// never acknowledged); [`PROPOSAL_TIMEOUT`] when unset.
    pub proposal_timeout: Option<Duration>,
}

/// How long a proposal may wait for a majority unless [`PartitionOptions`] says otherwise.
pub const PROPOSAL_TIMEOUT: Duration = Duration::from_secs(10);

/// The partitions of this node: one Raft group each.
pub struct Partitions {
    /// The group of each partition, by partition number; a group is replaced when this node
    /// drops its replica (see [`leave`]).
    groups: Arc<Slots>,
    /// What starts a group (again).
    starter: Starter,
    /// How this node reaches the other replicas (none for a node whose groups are alone).
    transport: Option<RaftTransport>,
    /// The replica sets the groups follow, once the node knows its cluster's members.
    sets: std::sync::OnceLock<ReplicaSets>,
}

use start::Starter;

/// Each partition's group, replaceable.
type Slots = Vec<std::sync::RwLock<Arc<Group>>>;

struct Group {
    partition: u64,
    me: u64,
    raft: Raft<TypeConfig>,
    stats: Arc<Counters>,
    proposer: proposer::Proposer,
    /// The term of this node's leadership the node has taken up (stopped whatever entities an
    /// earlier term left) and serves in; [`NO_TERM`] before the first.
    taken_up: std::sync::atomic::AtomicU64,
    /// When this node took up its current term of leadership.
    taken_up_at: std::sync::Mutex<Instant>,
    /// This node is handing its leadership to another replica: it does not serve meanwhile.
    handing_over: std::sync::atomic::AtomicBool,
    /// When this node's last hand-over of the group failed.
    hand_over_failed: std::sync::Mutex<Option<Instant>>,
    /// The last log id this node held before it dropped its replica of the partition, if it
    /// did: it votes only for a candidate whose log reaches it (see [`leave`]).
    vote_floor: Option<LogId<u64>>,
}

/// [`Group::taken_up`] before any term was.
const NO_TERM: u64 = u64::MAX;

#[derive(Default)]
struct Counters {
    proposals: std::sync::atomic::AtomicU64,
    committed: std::sync::atomic::AtomicU64,
    failed: std::sync::atomic::AtomicU64,
    latency_us_sum: std::sync::atomic::AtomicU64,
    /// Changes of the group's leader this node saw (see [`health::count_leader_changes`]).
    leader_changes: std::sync::atomic::AtomicU64,
}

impl Partitions {
    /// Starts every partition's group on `storage` and waits until each has a leader (and,
    /// where this node leads, has applied its whole log).
    pub async fn start(storage: &Storage, options: PartitionOptions) -> Result<Arc<Self>, PartitionError> {
        let node = node_number(storage.node_id())
            .ok_or_else(|| PartitionError::NodeId(storage.node_id().to_string()))?;
        let count = partition_count(storage, options.count).await?;
        let founders = match options.founders.is_empty() {
            true => BTreeSet::from([node]),
            false => options.founders.clone(),
        };
        let transport = options.transport.as_ref().map(|(transport, _)| transport.clone());
        let config = Arc::new(
            openraft::Config {
                cluster_name: "serv".into(),
                heartbeat_interval: 250,
                election_timeout_min: 1000,
                election_timeout_max: 2000,
                snapshot_policy: SnapshotPolicy::LogsSinceLast(SNAPSHOT_EVERY_ENTRIES),
                max_in_snapshot_log_to_keep: LOG_KEPT_BEHIND_SNAPSHOT,
                install_snapshot_timeout: SNAPSHOT_TIMEOUT_MS,
                ..Default::default()
            }
            .validate()
            .map_err(|e| PartitionError::Raft { partition: 0, message: e.to_string() })?,
        );
        let started = Instant::now();
        let starter = Starter {
            storage: storage.clone(),
            node,
            config,
            transport,
            proposal_timeout: options.proposal_timeout.unwrap_or(PROPOSAL_TIMEOUT),
        };
        let mut groups = Vec::with_capacity(count as usize);
        let mut waiting_to_join = Vec::with_capacity(count as usize);
        for partition in 0..count {
            let founding = (!options.join).then_some(&founders);
            // A group holding nothing (waiting to be joined, or dropped when this node left the
            // replica set) publishes no membership: waiting for one would cost every such group
            // the load timeout at each start (13-15 s for 26 partitions at 5 nodes, measured).
            let (group, holds_nothing) = starter.start(partition, founding, Arc::default()).await?;
            waiting_to_join.push(holds_nothing);
            groups.push(group);
        }
        let slots: Arc<Slots> = Arc::new(groups.iter().cloned().map(std::sync::RwLock::new).collect());
        if let Some((_, server)) = &options.transport {
            server.install(node, slots.clone());
        }
        // An entity loads its state from the applied tables, so none may start before its
        // partition has applied every entry its log holds: after a crash, entries acknowledged
        // (durable in the log) may not have reached the tables yet, and are applied again now.
        // A group of this node alone is waited for here; a replicated one may have no majority
        // up yet, and serves only once it has a leader that applied its log (see [`Serving`]).
        for (group, waiting) in groups.iter().zip(waiting_to_join) {
            if waiting || !group.alone().await {
                continue;
            }
            group
                .raft
                .wait(Some(LEADERSHIP_TIMEOUT))
                .metrics(
                    |m| match m.current_leader {
                        Some(leader) if leader == node => {
                            m.last_applied.map(|id| id.index) >= m.last_log_index
                        }
                        Some(_) => true,
                        None => false,
                    },
                    "the partition has a leader, and applied its whole log where this node leads",
                )
                .await
                .map_err(|e| PartitionError::Raft { partition: group.partition, message: e.to_string() })?;
        }
        tracing::info!(
            partitions = count,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "partitions started"
        );
        let transport = starter.transport.clone();
        Ok(Arc::new(Self { groups: slots, starter, transport, sets: std::sync::OnceLock::new() }))
    }

    /// The group of `partition` now.
    fn group(&self, partition: u64) -> Arc<Group> {
        self.groups[partition as usize].read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Every partition's group now, in partition order.
    fn groups(&self) -> Vec<Arc<Group>> {
        self.groups
            .iter()
            .map(|slot| slot.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone())
            .collect()
    }

    /// How many partitions the cluster has.
    pub fn count(&self) -> u64 {
        self.groups.len() as u64
    }

    /// The partition `key` belongs to (for an entity: its key as text, `bucket/photos`).
    pub fn partition_of(&self, key: &str) -> u64 {
        partition_of(key, self.count())
    }

    /// Where the writes of an entity of `partition` activated now go: its group's log, fenced to
    /// the term of the group this node knows now. Once this node no longer leads in that term
    /// (even if it leads again later) the path refuses every write as `NotLeader`, so an entity
    /// can only write under the leadership whose state it loaded.
    pub fn commit_path(&self, partition: u64) -> Arc<dyn CommitPath> {
        let group = self.group(partition);
        let term = group.raft.metrics().borrow().current_term;
        Arc::new(Fenced { group, term })
    }

    /// Every partition's state, in partition order.
    pub fn status(&self) -> Vec<PartitionStatus> {
        let sets = self.sets.get();
        self.groups()
            .iter()
            .map(|group| {
                let status = group.status();
                let handed_over = status.replicas.len() <= leadership::MAX_VOTERS_TO_HAND_OVER;
                let preferred = sets.filter(|_| handed_over).and_then(|sets| sets.preferred(group.partition));
                PartitionStatus { preferred_leader: preferred.map(node_name), ..status }.judged(sets)
            })
            .collect()
    }

    /// The replica sets (of the cluster's members) that the groups follow: their voters and
    /// their preferred leaders. Set once, when the node knows its members.
    pub fn follow(&self, sets: ReplicaSets) {
        let _ = self.sets.set(sets);
    }

    /// Counters of this node's proposals, summed over its partitions.
    pub fn proposal_stats(&self) -> ProposalStats {
        use std::sync::atomic::Ordering::Relaxed;
        let mut stats = ProposalStats::default();
        for group in self.groups() {
            stats.proposals += group.stats.proposals.load(Relaxed);
            stats.committed += group.stats.committed.load(Relaxed);
            stats.failed += group.stats.failed.load(Relaxed);
            stats.latency_us_sum += group.stats.latency_us_sum.load(Relaxed);
        }
        stats
    }

    /// How many partitions this node leads.
    pub fn led(&self) -> usize {
        self.groups()
            .iter()
            .filter(|group| group.raft.metrics().borrow().state == ServerState::Leader)
            .count()
    }

    /// Stops every group (after the entities that propose to them have stopped).
    pub async fn shutdown(&self) {
        for group in self.groups() {
            if let Err(error) = group.raft.shutdown().await {
                tracing::warn!(partition = group.partition, %error, "partition group did not stop cleanly");
            }
        }
    }
}

/// The partition of `key` among `count`: the first 8 bytes of its BLAKE3 hash, modulo `count`.
pub fn partition_of(key: &str, count: u64) -> u64 {
    let hash = blake3::hash(key.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&hash.as_bytes()[..8]);
    u64::from_be_bytes(first) % count
}

/// The stored partition count, or `asked` (or the default) stored durably for a new data dir.
async fn partition_count(storage: &Storage, asked: Option<u64>) -> Result<u64, PartitionError> {
    if let Some(asked) = asked
        && !(1..=MAX_PARTITIONS).contains(&asked)
    {
        return Err(PartitionError::CountOutOfRange(asked));
    }
    let meta = meta_table(storage)?;
    let key = (CLUSTER, "partitions".to_string());
    match meta.get(&key)? {
        Some(Meta::Partitions(stored)) => match asked {
            Some(asked) if asked != stored => Err(PartitionError::CountMismatch { stored, asked }),
            _ => Ok(stored),
        },
        _ => {
            let count = asked.unwrap_or(DEFAULT_PARTITIONS);
            let mut changes = WriteSet::new();
            changes.put(&meta, &key, &Meta::Partitions(count))?;
            storage.local().commit(changes).await?;
            Ok(count)
        }
    }
}

impl Group {
    /// True when this node is the group's one voter (once openraft has published the
    /// membership it loaded or was initialized with; a group still waiting to be joined has
    /// none, and is not alone).
    async fn alone(&self) -> bool {
        let published = self
            .raft
            .wait(Some(MEMBERSHIP_LOAD_TIMEOUT))
            .metrics(|m| m.membership_config.membership().nodes().next().is_some(), "membership published")
            .await;
        published.is_ok_and(|m| m.membership_config.membership().voter_ids().eq([self.me]))
    }

    fn status(&self) -> PartitionStatus {
        let metrics = self.raft.metrics().borrow().clone();
        let member = metrics.membership_config.membership().get_node(&self.me).is_some();
        let role = match metrics.state {
            ServerState::Leader => "leader",
            ServerState::Follower => "follower",
            ServerState::Candidate => "candidate",
            ServerState::Learner if member => "learner",
            // Never added to the group, or removed from it.
            ServerState::Learner => "none",
            ServerState::Shutdown => "shutdown",
        };
        // A node removed from the group while it led it keeps its own id as the last leader it
        // knew; it no longer hears who leads.
        let leader =
            metrics.current_leader.filter(|id| *id != self.me || metrics.state == ServerState::Leader);
        PartitionStatus {
            partition: self.partition,
            replicas: metrics.membership_config.membership().voter_ids().map(node_name).collect(),
            changing: metrics.membership_config.membership().get_joint_config().len() > 1,
            leader: leader.map(node_name),
            preferred_leader: None,
            term: metrics.current_term,
            role: role.to_string(),
            last_log_index: metrics.last_log_index,
            commit_index: health::commit_index(&metrics),
            applied_index: metrics.last_applied.map(|id| id.index),
            snapshot_index: metrics.snapshot.map(|id| id.index),
            purged_index: metrics.purged.map(|id| id.index),
            lag: health::lag(&metrics),
            under_replicated: false,
            shortfalls: Vec::new(),
        }
    }
}

/// A node's id as the rest of Serv spells it (16 hex digits, as the storage layer makes it).
pub fn node_name(id: u64) -> String {
    format!("{id:016x}")
}

/// A node's id as its Raft groups know it: the number its 16 hex digits spell.
pub fn node_number(name: &str) -> Option<u64> {
    u64::from_str_radix(name, 16).ok().filter(|_| name.len() == 16)
}

/// A group's log as one leadership term of this node writes to it (see
/// [`Partitions::commit_path`]).
struct Fenced {
    group: Arc<Group>,
    term: u64,
}

impl CommitPath for Fenced {
    fn stage(&self, changes: WriteSet) -> serv_storage::Result<Staged> {
        self.group.proposer.stage(changes, Some(self.term))
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod replicated_tests;

#[cfg(test)]
mod simulation_tests;
