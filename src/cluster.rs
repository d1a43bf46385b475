//! The node's place in the cluster: the mesh endpoint, membership, remote actor sessions, the
//! partitions (one Raft group each, replicated to the ring's replica set) and the placement the
//! directory routes by: an entity is served by its partition's leader.
//!
//! Members are remembered in storage: a node that restarts while another is down still counts
//! it in the replica sets (as down) rather than moving its partitions elsewhere.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serv_actors::placement::Forwarded;
use serv_actors::{ActorKey, Directory, Place, Placement};
use serv_cluster::identity::ClusterIdentity;
use serv_cluster::membership::{MemberState, MemberView, Membership, NodeIdentity, NodeMeta};
use serv_cluster::mesh::Mesh;
use serv_cluster::partition::{
    BlockPlacement, MAX_HAND_OVERS, PartitionOptions, Partitions, RaftServer, RaftTransport, ReplicaSets,
    Serving, node_name, spawn_block_repair,
};
use serv_cluster::remote::Remote;
use serv_cluster::removed::RemovedMembers;
use serv_cluster::transfer::{self, BlockTransfer};
use serv_edges::admin::NodeInfo;
use serv_storage::{Record, Storage, TableDef};
use tokio::sync::watch;

use crate::config::Config;
use crate::secrets;

/// Every member this node has seen, by id, with the mesh address it last had.
const KNOWN_MEMBERS: TableDef<String, KnownMember> = TableDef::new("cluster_members");

#[derive(Serialize, Deserialize)]
struct KnownMember {
    addr: SocketAddr,
    first_seen_ms: u64,
}

impl Record for KnownMember {
    const FORMAT: u8 = 1;
}

/// The cluster side of a running node.
pub struct Cluster {
    pub membership: Membership,
    /// The membership view plus every remembered member it lacks (as down): what the ring,
    /// the admin API and the console see.
    pub members: watch::Receiver<Vec<MemberView>>,
    pub remote: Remote,
    /// This node's replicas of the partitions.
    pub partitions: Arc<Partitions>,
    /// The members an operator removed: left out of `members`.
    pub removed: RemovedMembers,
    /// Where object blocks go: the replicas of their bucket's partition.
    pub blocks: BlockPlacement,
}

/// How often a node checks which partitions it serves, to stop the entities of those it no
/// longer serves and take up those it leads anew.
const LEADERSHIP_CHECK: Duration = Duration::from_millis(50);

/// How often the leader of a partition moves its voters towards the replica set.
const RECONCILE_EVERY: Duration = Duration::from_secs(1);

/// How often a node looks for partitions whose replica set left it, to drop its copy.
const LEAVE_CHECK_EVERY: Duration = Duration::from_secs(10);

/// How long a block another node stored here is kept without a manifest naming it: the edge's
/// session (which pinned it) may end before this replica has applied the manifest.
const UNPINNED_BLOCK_GRACE: Duration = Duration::from_secs(60);

/// Joins the cluster: the mesh endpoint with the cluster identity, SWIM membership seeded with
/// `--seeds` (resolved now; a seed that does not resolve is reported and skipped), this node's
/// partition groups (founding them on a node without seeds and a new data dir, else waiting to
/// be added by their leaders), and remote actor sessions that serve other nodes' requests with
/// `directory`, which from now on routes every message to its partition's leader.
pub async fn join(
    config: &Config,
    node: &NodeInfo,
    directory: &Directory,
    storage: &Storage,
) -> Result<Cluster, String> {
    let secret = secrets::cluster_secret(&config.data_dir)?;
    let identity = ClusterIdentity::new(&secret, &node.id).map_err(|e| format!("cluster identity: {e}"))?;
    let endpoint = identity.endpoint(config.mesh_addr).map_err(|e| format!("mesh: {e}"))?;
    let (mesh, datagrams) = Mesh::start(endpoint);
    let bound = mesh.local_addr().map_err(|e| e.to_string())?;
    let advertised = config.mesh_advertise.unwrap_or(bound);
    let seeds = resolve_seeds(&config.seeds, advertised).await;
    let boot = serv_actors::now_ms();
    let me = NodeIdentity { id: node.id.clone(), addr: advertised, boot };
    tracing::info!(mesh = %bound, advertised = %advertised, seeds = seeds.len(), "joining the cluster");
    let mut addresses = node.addresses.clone();
    addresses.insert("mesh".to_string(), advertised.to_string());
    let meta = NodeMeta { version: node.version.clone(), addresses, ..NodeMeta::default() };
    if !seeds.is_empty() {
        tokio::spawn(warn_until_joined(directory.clone(), mesh.clone(), seeds.clone()));
    }
    let membership = Membership::start(me, meta, mesh.clone(), datagrams, config.membership.clone(), seeds);
    let removed = RemovedMembers::open(storage).map_err(|e| format!("removed members: {e}"))?;
    let members = remember_members(storage, membership.watch(), &removed)?;

    let options = PartitionOptions {
        count: config.partitions,
        join: !config.seeds.is_empty(),
        transport: Some((RaftTransport::new(mesh.clone(), members.clone()), RaftServer::serve(&mesh))),
        ..PartitionOptions::default()
    };
    let partitions =
        Partitions::start(storage, options).await.map_err(|e| format!("cannot start partitions: {e}"))?;
    // Before any entity can be activated (by this node's edges or by a peer's request): every
    // entity's writes go through its partition's log.
    directory.set_commit_paths({
        let partitions = partitions.clone();
        Arc::new(move |key: &ActorKey| partitions.commit_path(partitions.partition_of(&key.to_string())))
    });
    let sets = ReplicaSets::new(&node.id, config.replication_factor, partitions.count(), members.clone());
    partitions.follow(sets.clone());

    let serving = directory.clone();
    let handler: serv_cluster::remote::Handler = Arc::new(move |request| {
        let directory = serving.clone();
        Box::pin(async move { directory.serve_remote(request).await })
    });
    storage.blocks().set_unpinned_grace(UNPINNED_BLOCK_GRACE);
    transfer::serve(&mesh, storage.blocks().clone());
    let blocks = BlockPlacement {
        sets: sets.clone(),
        transfer: BlockTransfer::new(mesh.clone(), membership.watch()),
        local: storage.blocks().clone(),
    };
    let remote = Remote::start(&node.id, &secret, mesh, membership.watch(), handler).await?;
    let placement = Arc::new(PartitionPlacement {
        partitions: partitions.clone(),
        sets: sets.clone(),
        hints: RwLock::default(),
        settled: AtomicBool::new(false),
        remote: remote.clone(),
    });
    directory.set_placement(placement.clone());
    tokio::spawn(reconcile(placement.clone(), directory.clone()));
    tokio::spawn(leave_replica_sets(partitions.clone(), blocks.clone()));
    tokio::spawn(follow_leadership(partitions.clone(), directory.clone()));
    spawn_block_repair(partitions.clone(), blocks.clone(), storage.clone());
    Ok(Cluster { membership, members, remote, partitions, blocks, removed })
}

/// Moves every partition this node leads towards its replica set, and hands those it should
/// not lead to their preferred leaders (a few at a time), round after round.
async fn reconcile(placement: Arc<PartitionPlacement>, directory: Directory) {
    let partitions = &placement.partitions;
    loop {
        tokio::time::sleep(RECONCILE_EVERY).await;
        let sets = &placement.sets;
        let round = partitions.reconcile(|partition| sets.numbers(partition)).await;
        let settled = round.pending == 0 && partitions.led_as_preferred();
        placement.settled.store(settled, Ordering::Release);
        hand_over(partitions, &directory, partitions.hand_overs(MAX_HAND_OVERS)).await;
    }
}

/// Drops this node's copy of each partition whose replica set moved off it, once the
/// partition's leader confirms the group left it (see `serv_cluster::partition::leave`).
async fn leave_replica_sets(partitions: Arc<Partitions>, blocks: BlockPlacement) {
    loop {
        tokio::time::sleep(LEAVE_CHECK_EVERY).await;
        partitions.drop_left(|partition| blocks.sets.numbers(partition), &blocks).await;
    }
}

/// Hands each partition of `moves` to its replica, all at once, each after its entities here
/// are stopped; answers how many moved.
async fn hand_over(partitions: &Arc<Partitions>, directory: &Directory, moves: Vec<(u64, u64)>) -> usize {
    let mut hand_overs = tokio::task::JoinSet::new();
    for (partition, to) in moves {
        let (partitions, directory) = (partitions.clone(), directory.clone());
        hand_overs.spawn(async move {
            let only = std::collections::HashSet::from([partition]);
            let drain = async {
                evict_partitions(&partitions, &directory, &only).await;
            };
            partitions.hand_over(partition, to, drain).await.is_ok()
        });
    }
    hand_overs.join_all().await.into_iter().filter(|moved| *moved).count()
}

/// Before this node stops: hands every partition it leads to another replica that can take it
/// at once, so that a planned stop costs them a hand-over rather than an election after the
/// drain. Answers (handed over, led before).
pub async fn step_down(partitions: &Arc<Partitions>, directory: &Directory) -> (usize, usize) {
    let led = partitions.led();
    (hand_over(partitions, directory, partitions.successors()).await, led)
}

/// Stops the entities of every partition this node stops serving (it lost the leadership or its
/// majority), so that none of them answers from state another leader may be changing; and takes
/// up each new term of leadership once the entities an earlier term left are stopped, so that
/// none answers from state older than the term.
async fn follow_leadership(partitions: Arc<Partitions>, directory: Directory) {
    let mut served = vec![false; partitions.count() as usize];
    loop {
        tokio::time::sleep(LEADERSHIP_CHECK).await;
        let mut lost = std::collections::HashSet::new();
        for (partition, was) in served.iter_mut().enumerate() {
            let now = partitions.serving(partition as u64) == Serving::Here;
            if *was && !now {
                lost.insert(partition as u64);
            }
            *was = now;
        }
        if !lost.is_empty() {
            let stopped = evict_partitions(&partitions, &directory, &lost).await;
            tracing::info!(partitions = ?lost, entities = stopped, "stopped serving partitions");
        }
        let taking_up = partitions.to_take_up();
        if !taking_up.is_empty() {
            let leftover = taking_up.iter().map(|(partition, _)| *partition).collect();
            let stopped = evict_partitions(&partitions, &directory, &leftover).await;
            for (partition, term) in &taking_up {
                partitions.take_up(*partition, *term);
            }
            tracing::debug!(
                partitions = taking_up.len(),
                leftover = stopped,
                "serving partitions in new terms"
            );
        }
    }
}

/// Stops this node's entities of `which` partitions; answers how many there were.
async fn evict_partitions(
    partitions: &Partitions,
    directory: &Directory,
    which: &std::collections::HashSet<u64>,
) -> usize {
    directory.evict_where(|key| which.contains(&partitions.partition_of(&key.to_string()))).await
}

/// The membership view with every member remembered in storage added (as down) when the view
/// lacks it, and every member an operator removed left out; members seen for the first time
/// are remembered.
fn remember_members(
    storage: &Storage,
    mut view: watch::Receiver<Vec<MemberView>>,
    removed: &RemovedMembers,
) -> Result<watch::Receiver<Vec<MemberView>>, String> {
    let table = storage.table(KNOWN_MEMBERS).map_err(|e| e.to_string())?;
    let mut known = std::collections::BTreeMap::new();
    for entry in table.entries() {
        let (id, member) = entry.map_err(|e| format!("remembered members: {e}"))?;
        known.insert(id, member.addr);
    }
    let me = storage.node_id().to_string();
    let mut removals = removed.watch();
    let removed = removed.clone();
    // A removed node still sees itself (and says so in /readyz).
    let merge = move |view: &[MemberView], known: &std::collections::BTreeMap<String, SocketAddr>| {
        let kept = |id: &String| *id == me || !removed.contains(id);
        let mut merged: Vec<MemberView> = view.iter().filter(|m| kept(&m.id)).cloned().collect();
        for (id, addr) in known {
            if kept(id) && !view.iter().any(|m| &m.id == id) {
                merged.push(MemberView {
                    id: id.clone(),
                    addr: *addr,
                    state: MemberState::Down,
                    incarnation: 0,
                    meta: None,
                });
            }
        }
        merged
    };
    let (publish, merged) = watch::channel(merge(&view.borrow_and_update(), &known));
    let storage = storage.clone();
    tokio::spawn(async move {
        loop {
            let current = view.borrow_and_update().clone();
            let mut changes = storage.write_set();
            let mut news = 0;
            for member in &current {
                if known.get(&member.id) != Some(&member.addr) {
                    let record = KnownMember { addr: member.addr, first_seen_ms: serv_actors::now_ms() };
                    if changes.put(&table, &member.id, &record).is_ok() {
                        known.insert(member.id.clone(), member.addr);
                        news += 1;
                    }
                }
            }
            if news > 0
                && let Err(error) = storage.commit(changes).await
            {
                tracing::warn!(%error, "new members could not be remembered");
            }
            publish.send_replace(merge(&current, &known));
            tokio::select! {
                changed = view.changed() => if changed.is_err() { return },
                changed = removals.changed() => if changed.is_err() { return },
            }
        }
    });
    Ok(merged)
}

/// How often a node that has not joined its cluster says so, and why.
const JOIN_WARN_EVERY: Duration = Duration::from_secs(5);

/// Logs a warning every [`JOIN_WARN_EVERY`] until this node has joined its cluster, with what
/// each seed answered: a node with the wrong cluster secret (a refused handshake) or unreachable
/// seeds would otherwise say only, on `/readyz`, that it has not joined.
async fn warn_until_joined(directory: Directory, mesh: Mesh, seeds: Vec<SocketAddr>) {
    let mut tick = tokio::time::interval(JOIN_WARN_EVERY);
    tick.tick().await;
    loop {
        tick.tick().await;
        if directory.is_joined() {
            return;
        }
        let answers: Vec<String> = seeds
            .iter()
            .map(|seed| match mesh.connect_failure(*seed) {
                Some(failure) => format!("{seed}: {failure}"),
                None => format!("{seed}: connected, no membership answer yet"),
            })
            .collect();
        tracing::warn!(
            seeds = %answers.join("; "),
            "not joined the cluster yet (a refused handshake means another SERV_CLUSTER_SECRET)"
        );
    }
}

async fn resolve_seeds(seeds: &[String], me: SocketAddr) -> Vec<SocketAddr> {
    let mut resolved = Vec::new();
    for seed in seeds {
        match tokio::net::lookup_host(seed.as_str()).await {
            Ok(addresses) => resolved.extend(addresses.filter(|a| *a != me).take(1)),
            Err(error) => tracing::warn!(%seed, %error, "seed does not resolve; skipped"),
        }
    }
    resolved
}

/// Where entities live: with their partition's leader. A node that holds a replica knows the
/// leader from its group; one that does not asks a replica, which names the leader.
pub struct PartitionPlacement {
    partitions: Arc<Partitions>,
    sets: ReplicaSets,
    /// Leaders other nodes named, for partitions this node holds no replica of.
    hints: RwLock<HashMap<u64, String>>,
    /// Every partition this node leads has the replica set as its voters and this node as its
    /// preferred leader.
    settled: AtomicBool,
    remote: Remote,
}

impl Placement for PartitionPlacement {
    fn place(&self, key: &ActorKey) -> Place {
        let partition = self.sets.partition_of(&key.to_string());
        match self.partitions.serving(partition) {
            Serving::Here => Place::Here,
            Serving::Leader(leader) => {
                let leader = node_name(leader);
                match self.sets.is_up(&leader) {
                    true => Place::There(leader),
                    false => Place::Moving(format!(
                        "partition {partition}'s leader, node {leader}, is down; its other replicas are electing a leader"
                    )),
                }
            }
            Serving::Unknown(reason) => Place::Moving(reason),
            Serving::Elsewhere => {
                let hint = self.hints.read().unwrap_or_else(|p| p.into_inner()).get(&partition).cloned();
                if let Some(hint) = hint.filter(|node| self.sets.is_up(node)) {
                    return Place::There(hint);
                }
                let replicas = self.sets.of(partition);
                let me = self.sets.me();
                match replicas.iter().find(|node| *node != me && self.sets.is_up(node)) {
                    Some(replica) => Place::There(replica.clone()),
                    None if replicas.iter().all(|node| node == me) => {
                        Place::Moving("this node has not joined its cluster yet".into())
                    }
                    None => Place::Nowhere(format!(
                        "every replica of partition {partition} ({}) is down",
                        replicas.join(", ")
                    )),
                }
            }
        }
    }

    fn leader_named(&self, key: &ActorKey, node: &str) {
        let partition = self.sets.partition_of(&key.to_string());
        let mut hints = self.hints.write().unwrap_or_else(|p| p.into_inner());
        // A peer that names this node, which does not serve the partition (else it would not
        // route by hint), knows something stale: the node led the partition before it moved off
        // it. Keeping that hint sent the message to itself until the caller gave up (found by
        // the chaos harness, 5 nodes); without one, the node asks a replica.
        if node == self.sets.me() {
            hints.remove(&partition);
        } else {
            hints.insert(partition, node.to_string());
        }
    }

    fn peers(&self) -> Vec<String> {
        self.sets
            .members()
            .into_iter()
            .filter(|(id, up)| *up && id != self.sets.me())
            .map(|(id, _)| id)
            .collect()
    }

    fn joined(&self) -> bool {
        self.partitions.holds_any() || self.sets.sees_others()
    }

    fn settled(&self) -> bool {
        self.settled.load(Ordering::Acquire)
    }

    fn forward(&self, node: &str, request: Vec<u8>, timeout: Duration) -> Forwarded {
        let (remote, node) = (self.remote.clone(), node.to_string());
        Box::pin(
            async move { remote.request(&node, request, timeout).await.map_err(|error| error.to_string()) },
        )
    }
}
