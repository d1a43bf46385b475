//! Partitions with three replicas, on three nodes in one process that talk over real QUIC
//! meshes: a write is acknowledged once a majority holds it and reaches every replica; a
//! follower refuses writes and names the leader; when the leader's node dies another replica
//! leads within seconds with every acknowledged write; a node cut off from the others
//! acknowledges nothing.

use std::time::{Duration, Instant};

use serv_storage::{Storage, StorageOptions};
use tokio::sync::watch;

use super::network::Weather;
use super::tests::{NOTES, Note};
use super::*;
use crate::identity::ClusterIdentity;
use crate::membership::{MemberState, MemberView};
use crate::mesh::Mesh;

const SECRET: &str = "partition-test-cluster-secret";
pub(super) const PARTITIONS: u64 = 4;

pub(super) struct Node {
    pub(super) id: u64,
    pub(super) storage: Storage,
    mesh: Mesh,
    pub(super) partitions: Arc<Partitions>,
    /// What this node's transport knows of the members' addresses.
    view: watch::Sender<Vec<MemberView>>,
    /// What the network does to the RPCs this node sends (simulations only).
    weather: Option<Weather>,
    _dir: tempfile::TempDir,
}

fn options(
    mesh: &Mesh,
    founders: &BTreeSet<u64>,
    view: &watch::Sender<Vec<MemberView>>,
    weather: Option<&Weather>,
) -> PartitionOptions {
    let transport = RaftTransport::new(mesh.clone(), view.subscribe());
    let transport = match weather {
        Some(weather) => transport.in_weather(weather.clone()),
        None => transport,
    };
    PartitionOptions {
        count: Some(PARTITIONS),
        founders: founders.clone(),
        transport: Some((transport, RaftServer::serve(mesh))),
        proposal_timeout: Some(Duration::from_secs(3)),
        join: false,
    }
}

fn mesh_of(storage: &Storage) -> Mesh {
    let identity = ClusterIdentity::new(SECRET, storage.node_id()).unwrap();
    Mesh::start(identity.endpoint("127.0.0.1:0".parse().unwrap()).unwrap()).0
}

fn member(storage: &Storage, mesh: &Mesh) -> MemberView {
    MemberView {
        id: storage.node_id().to_string(),
        addr: mesh.local_addr().unwrap(),
        state: MemberState::Alive,
        incarnation: 0,
        meta: None,
    }
}

impl Node {
    pub(super) fn note(&self, key: &str) -> Option<Note> {
        self.storage.table(NOTES).unwrap().get(&key.to_string()).unwrap()
    }

    pub(super) async fn write(&self, key: &str, value: u64) -> serv_storage::Result<()> {
        let notes = self.storage.table(NOTES).unwrap();
        let mut changes = WriteSet::new();
        changes.put(&notes, &key.to_string(), &Note(value)).unwrap();
        let path = self.partitions.commit_path(self.partitions.partition_of(key));
        self.storage.with_commit_path(path).commit(changes).await
    }

    /// Stops the node as a crash would, as far as its peers can tell.
    pub(super) async fn kill(&self) {
        self.mesh.close();
        self.partitions.shutdown().await;
    }
}

/// Three nodes whose partitions have all three as replicas.
async fn cluster() -> Vec<Node> {
    cluster_in(3, |_| None).await
}

/// `count` nodes whose partitions have them all as replicas, each node's RPCs in the weather
/// `weather` gives for its id (none: a plain network).
pub(super) async fn cluster_in(count: usize, weather: impl Fn(u64) -> Option<Weather>) -> Vec<Node> {
    let mut prepared = Vec::new();
    for _ in 0..count {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(dir.path(), StorageOptions::default()).unwrap();
        let mesh = mesh_of(&storage);
        prepared.push((dir, storage, mesh));
    }
    let view: Vec<MemberView> = prepared.iter().map(|(_, storage, mesh)| member(storage, mesh)).collect();
    let founders: BTreeSet<u64> =
        prepared.iter().map(|(_, storage, _)| node_number(storage.node_id()).unwrap()).collect();
    let views: Vec<_> = prepared.iter().map(|_| watch::channel(view.clone()).0).collect();
    let weathers: Vec<_> =
        prepared.iter().map(|(_, storage, _)| weather(node_number(storage.node_id()).unwrap())).collect();
    let starts = prepared.iter().zip(&views).zip(&weathers).map(|(((_, storage, mesh), view), weather)| {
        Partitions::start(storage, options(mesh, &founders, view, weather.as_ref()))
    });
    let started = futures_util::future::join_all(starts).await;
    prepared
        .into_iter()
        .zip(started)
        .zip(views)
        .zip(weathers)
        .map(|((((dir, storage, mesh), partitions), view), weather)| Node {
            id: node_number(storage.node_id()).unwrap(),
            partitions: partitions.expect("the nodes start their partitions together"),
            storage,
            mesh,
            view,
            weather,
            _dir: dir,
        })
        .collect()
}

pub(super) fn leader_of(nodes: &[Node], partition: u64) -> Option<u64> {
    nodes.iter().find_map(|node| {
        let status = &node.partitions.status()[partition as usize];
        (status.role == "leader").then_some(node.id)
    })
}

pub(super) async fn eventually<T>(what: &str, within: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(found) = check() {
            return found;
        }
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_reaches_every_replica_and_a_follower_names_the_leader() {
    let nodes = cluster().await;
    let partition = nodes[0].partitions.partition_of("bucket/photos");
    for node in &nodes {
        let status = &node.partitions.status()[partition as usize];
        assert_eq!(status.replicas.len(), 3, "{status:?}");
    }
    let leader =
        eventually("one replica leads", Duration::from_secs(10), || leader_of(&nodes, partition)).await;
    let leading = nodes.iter().find(|node| node.id == leader).unwrap();
    leading.write("bucket/photos", 1).await.expect("the leader commits on a majority");
    assert_eq!(leading.note("bucket/photos"), Some(Note(1)), "applied on the leader when acknowledged");
    let led = &leading.partitions.status()[partition as usize];
    assert!(led.commit_index.is_some() && led.commit_index >= led.applied_index, "{led:?}");
    assert!(led.commit_index <= led.last_log_index, "{led:?}");
    eventually("every replica applied the write", Duration::from_secs(10), || {
        nodes.iter().all(|node| node.note("bucket/photos") == Some(Note(1))).then_some(())
    })
    .await;

    let follower = nodes.iter().find(|node| node.id != leader).unwrap();
    assert_eq!(
        follower.partitions.status()[partition as usize].commit_index,
        None,
        "a follower is told none"
    );
    match follower.write("bucket/photos", 2).await {
        Err(StorageError::NotLeader { partition: p, leader: named }) => {
            assert_eq!(p, partition);
            assert_eq!(named, Some(node_name(leader)));
        }
        other => panic!("a follower must refuse and name the leader, got {other:?}"),
    }
    assert_eq!(follower.note("bucket/photos"), Some(Note(1)), "the refused write changed nothing");
    for node in &nodes {
        node.partitions.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_leader_dies_another_replica_leads_with_every_acknowledged_write() {
    let nodes = cluster().await;
    let partition = nodes[0].partitions.partition_of("topic/orders");
    let leader =
        eventually("one replica leads", Duration::from_secs(10), || leader_of(&nodes, partition)).await;
    let leading = nodes.iter().find(|node| node.id == leader).unwrap();
    for value in 0..50 {
        leading.write("topic/orders", value).await.expect("acknowledged");
    }
    leading.kill().await;
    let killed = Instant::now();

    let survivors: Vec<&Node> = nodes.iter().filter(|node| node.id != leader).collect();
    let successor = eventually("a survivor leads", Duration::from_secs(15), || {
        survivors.iter().find(|node| node.partitions.status()[partition as usize].role == "leader").copied()
    })
    .await;
    // Writes are served again once a survivor leads; its first write proves it has a majority.
    successor.write("topic/orders", 50).await.expect("the new leader commits with the other survivor");
    println!("writes served again {} ms after the leader died", killed.elapsed().as_millis());
    assert_eq!(successor.note("topic/orders"), Some(Note(50)));
    let other = survivors.iter().find(|node| node.id != successor.id).unwrap();
    eventually("the other survivor applied every write", Duration::from_secs(10), || {
        (other.note("topic/orders") == Some(Note(50))).then_some(())
    })
    .await;
    for node in survivors {
        node.partitions.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_cut_off_from_the_others_acknowledges_nothing() {
    let nodes = cluster().await;
    let partition = nodes[0].partitions.partition_of("bucket/cut");
    let leader =
        eventually("one replica leads", Duration::from_secs(10), || leader_of(&nodes, partition)).await;
    // The two others die: whichever replica is left has no majority, leader or not.
    let alone = nodes.iter().find(|node| node.id == leader).unwrap();
    for node in nodes.iter().filter(|node| node.id != leader) {
        node.kill().await;
    }
    let started = Instant::now();
    let refused = alone.write("bucket/cut", 1).await;
    assert!(refused.is_err(), "a replica without a majority acknowledged a write");
    assert!(started.elapsed() < Duration::from_secs(10), "the writer is told within the proposal timeout");
    assert_eq!(alone.note("bucket/cut"), None, "nothing was applied without a majority");
    alone.partitions.shutdown().await;
}

/// Starts `nodes[index]` again from its storage (after [`Node::kill`]) on a new mesh address,
/// which every node's view learns.
pub(super) async fn restart(nodes: &mut [Node], index: usize) {
    let mesh = mesh_of(&nodes[index].storage);
    let moved = member(&nodes[index].storage, &mesh);
    for node in nodes.iter() {
        node.view.send_modify(|view| {
            for member in view.iter_mut().filter(|member| member.id == moved.id) {
                member.addr = moved.addr;
            }
        });
    }
    let founders: BTreeSet<u64> = nodes.iter().map(|node| node.id).collect();
    let node = &mut nodes[index];
    let options = options(&mesh, &founders, &node.view, node.weather.as_ref());
    node.partitions = Partitions::start(&node.storage, options).await.unwrap();
    node.mesh = mesh;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_behind_the_purged_log_catches_up_from_a_snapshot() {
    let mut nodes = cluster().await;
    let partition = nodes[0].partitions.partition_of("doomed");
    let keys: Vec<String> = (0..20_000)
        .map(|i| format!("k{i}"))
        .filter(|key| nodes[0].partitions.partition_of(key) == partition)
        .take((SNAPSHOT_EVERY_ENTRIES + LOG_KEPT_BEHIND_SNAPSHOT) as usize + 300)
        .collect();
    // Just after the start, leadership may still move to the partition's preferred leader: the
    // first write goes to whichever replica leads when it is taken.
    let started = Instant::now();
    let leading = loop {
        let leader =
            eventually("one replica leads", Duration::from_secs(10), || leader_of(&nodes, partition)).await;
        let leading = nodes.iter().position(|node| node.id == leader).unwrap();
        match nodes[leading].write("doomed", 1).await {
            Ok(()) => break leading,
            Err(error) => {
                assert!(
                    started.elapsed() < Duration::from_secs(10),
                    "no leader took the first write: {error:?}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    let behind = (0..3).find(|i| *i != leading).unwrap();
    eventually("the replica to stop has the first write", Duration::from_secs(10), || {
        (nodes[behind].note("doomed") == Some(Note(1))).then_some(())
    })
    .await;
    nodes[behind].kill().await;

    // While it is away: a row it holds is removed, and more entries than the log keeps arrive.
    let notes = nodes[leading].storage.table(NOTES).unwrap();
    let mut removal = WriteSet::new();
    removal.delete(&notes, &"doomed".to_string());
    let path = nodes[leading].partitions.commit_path(partition);
    nodes[leading].storage.with_commit_path(path).commit(removal).await.unwrap();
    for (value, key) in keys.iter().enumerate() {
        nodes[leading].write(key, value as u64).await.unwrap();
    }
    let purged = eventually("the leader purged its log", Duration::from_secs(15), || {
        nodes[leading].partitions.status()[partition as usize].purged_index.filter(|index| *index > 100)
    })
    .await;

    restart(&mut nodes, behind).await;
    let caught_up = Instant::now();
    eventually("the restarted replica holds every row and no removed one", Duration::from_secs(20), || {
        let node = &nodes[behind];
        let complete = keys.iter().enumerate().all(|(value, key)| node.note(key) == Some(Note(value as u64)));
        (complete && node.note("doomed").is_none()).then_some(())
    })
    .await;
    // The rows are visible once the install's batch is written; openraft reports the snapshot
    // just after.
    let installed = || {
        let status = nodes[behind].partitions.status()[partition as usize].clone();
        status.snapshot_index.is_some_and(|index| index >= purged).then_some(())
    };
    eventually("the restarted replica reports the snapshot it installed", Duration::from_secs(5), installed)
        .await;
    println!(
        "{} rows caught up in {} ms by snapshot (log purged to {purged})",
        keys.len(),
        caught_up.elapsed().as_millis()
    );
    for node in &nodes {
        node.partitions.shutdown().await;
    }
}

/// Asks `node` to stand for election in `partition` until it leads. Each call waits until the
/// term has not changed for longer than the leader lease (2 s): within it the replicas refuse
/// votes, and a failed call starts a term whose election the old leader may win again, which
/// would restart the lease.
async fn elect(nodes: &[Node], node: usize, partition: u64) {
    let raft = &nodes[node].partitions.group(partition).raft;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut term = (raft.metrics().borrow().current_term, Instant::now() - leadership::LED_BEFORE_HAND_OVER);
    while leader_of(nodes, partition) != Some(nodes[node].id) {
        assert!(Instant::now() < deadline, "node {} was asked to stand and does not lead", nodes[node].id);
        let now = raft.metrics().borrow().current_term;
        if now != term.0 {
            term = (now, Instant::now());
        }
        if term.1.elapsed() >= leadership::LED_BEFORE_HAND_OVER {
            raft.trigger().elect().await.unwrap();
        }
        let _ = raft
            .wait(Some(Duration::from_millis(500)))
            .metrics(|m| m.state == openraft::ServerState::Leader, "leads")
            .await;
    }
}

/// Makes `nodes[node]` lead `partition` and write `value` under `key` through a path of that
/// leadership (again, should another replica win an election in between); answers the path.
async fn lead_and_write(nodes: &[Node], node: usize, key: &str, value: u64) -> Arc<dyn CommitPath> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let partition = nodes[node].partitions.partition_of(key);
        elect(nodes, node, partition).await;
        let path = nodes[node].partitions.commit_path(partition);
        let notes = nodes[node].storage.table(NOTES).unwrap();
        let mut changes = WriteSet::new();
        changes.put(&notes, &key.to_string(), &Note(value)).unwrap();
        match nodes[node].storage.with_commit_path(path.clone()).commit(changes).await {
            Ok(()) => return path,
            Err(StorageError::NotLeader { .. }) if Instant::now() < deadline => continue,
            Err(error) => panic!("the path of the current leadership must write: {error}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_path_of_an_earlier_leadership_refuses_writes_when_the_node_leads_again() {
    let nodes = cluster().await;
    let partition = nodes[0].partitions.partition_of("bucket/fenced");
    let stale = lead_and_write(&nodes, 0, "bucket/fenced", 1).await;
    // Another replica leads for a while, then this node again, in a later term.
    lead_and_write(&nodes, 1, "bucket/fenced", 2).await;
    lead_and_write(&nodes, 0, "bucket/fenced", 3).await;
    assert_eq!(nodes[0].note("bucket/fenced"), Some(Note(3)));

    let notes = nodes[0].storage.table(NOTES).unwrap();
    let mut changes = WriteSet::new();
    changes.put(&notes, &"bucket/fenced".to_string(), &Note(4)).unwrap();
    match nodes[0].storage.with_commit_path(stale).commit(changes).await {
        Err(StorageError::NotLeader { partition: p, .. }) => assert_eq!(p, partition),
        other => panic!("a path of an earlier leadership must refuse, got {other:?}"),
    }
    assert_eq!(nodes[0].note("bucket/fenced"), Some(Note(3)), "the refused write changed nothing");
    for node in &nodes {
        node.partitions.shutdown().await;
    }
}

/// Makes the nodes follow their replica sets, and another replica than `key`'s preferred leader
/// lead its partition, having taken it up and written `key`, until it offers the partition to
/// the preferred one: (partition, preferred leader, index of the leading node).
async fn led_elsewhere_than_preferred(nodes: &[Node], key: &str) -> (u64, u64, usize) {
    for node in nodes {
        let sets = ReplicaSets::new(node.storage.node_id(), 3, PARTITIONS, node.view.subscribe());
        node.partitions.follow(sets);
    }
    let partition = nodes[0].partitions.partition_of(key);
    let status = nodes[0].partitions.status()[partition as usize].clone();
    let preferred = node_number(status.preferred_leader.as_ref().unwrap()).unwrap();
    let other = nodes.iter().position(|node| node.id != preferred).unwrap();
    lead_and_write(nodes, other, key, 1).await;
    let term = nodes[other].partitions.status()[partition as usize].term;
    nodes[other].partitions.take_up(partition, term);
    // Once it has led for longer than its leader lease, the leader offers the partition.
    eventually("the leader offers the partition to the preferred replica", Duration::from_secs(5), || {
        nodes[other].partitions.hand_overs(MAX_HAND_OVERS).contains(&(partition, preferred)).then_some(())
    })
    .await;
    (partition, preferred, other)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_hands_its_partition_to_the_preferred_replica_with_every_write() {
    let nodes = cluster().await;
    let (partition, preferred, other) = led_elsewhere_than_preferred(&nodes, "bucket/handed").await;
    let started = Instant::now();
    let drained = std::sync::atomic::AtomicBool::new(false);
    let drain = async { drained.store(true, std::sync::atomic::Ordering::SeqCst) };
    nodes[other].partitions.hand_over(partition, preferred, drain).await.expect("handed over");
    assert!(drained.load(std::sync::atomic::Ordering::SeqCst), "the entities were stopped first");
    eventually("the preferred replica leads", Duration::from_secs(5), || {
        (leader_of(&nodes, partition) == Some(preferred)).then_some(())
    })
    .await;
    println!("handed over in {} ms", started.elapsed().as_millis());
    let successor = nodes.iter().find(|node| node.id == preferred).unwrap();
    assert_eq!(successor.note("bucket/handed"), Some(Note(1)), "the successor has every write");
    successor.write("bucket/handed", 2).await.expect("the successor writes");
    assert!(!nodes[other].partitions.hand_overs(MAX_HAND_OVERS).contains(&(partition, preferred)));
    for node in &nodes {
        node.partitions.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hand_over_to_an_unreachable_replica_gives_the_partition_back_and_is_not_retried_at_once() {
    let nodes = cluster().await;
    let (partition, preferred, other) = led_elsewhere_than_preferred(&nodes, "bucket/kept").await;
    // The preferred replica dies before it can be asked (the members' view still says it is up).
    nodes.iter().find(|node| node.id == preferred).unwrap().kill().await;
    let started = Instant::now();
    let refused = nodes[other].partitions.hand_over(partition, preferred, async {}).await;
    assert!(refused.is_err(), "a hand-over to a dead replica cannot succeed");
    assert!(started.elapsed() < HAND_OVER_TIMEOUT, "given back within {:?}", started.elapsed());
    assert_eq!(nodes[other].partitions.serving(partition), Serving::Here, "the leader serves again");
    nodes[other].write("bucket/kept", 2).await.expect("and writes with the third replica");
    assert!(
        !nodes[other].partitions.hand_overs(MAX_HAND_OVERS).contains(&(partition, preferred)),
        "not offered again before the back-off"
    );
    for node in nodes.iter().filter(|node| node.id != preferred) {
        node.partitions.shutdown().await;
    }
}

/// Has whichever node leads `partition` move its voters to `voters` (every other partition
/// keeps all the nodes); false if that did not happen `within`.
pub(super) async fn move_voters(
    nodes: &[Node],
    partition: u64,
    voters: &BTreeSet<u64>,
    within: Duration,
) -> bool {
    let all: BTreeSet<u64> = nodes.iter().map(|node| node.id).collect();
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Some(leading) =
            leader_of(nodes, partition).and_then(|id| nodes.iter().find(|node| node.id == id))
        {
            let partitions = &leading.partitions;
            for (p, term) in partitions.to_take_up() {
                partitions.take_up(p, term);
            }
            partitions.reconcile(|p| if p == partition { voters.clone() } else { all.clone() }).await;
            let status = &partitions.status()[partition as usize];
            let now: BTreeSet<u64> = status.replicas.iter().filter_map(|name| node_number(name)).collect();
            if &now == voters && !status.changing {
                return true;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// Where `node` reads and checks blocks, as a node of the cluster does.
pub(super) fn blocks_of(node: &Node) -> BlockPlacement {
    BlockPlacement {
        sets: ReplicaSets::new(node.storage.node_id(), 3, PARTITIONS, node.view.subscribe()),
        transfer: crate::transfer::BlockTransfer::new(node.mesh.clone(), node.view.subscribe()),
        local: node.storage.blocks().clone(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_leaves_a_replica_set_drops_its_copy_and_is_refilled_when_added_back() {
    let mut nodes = cluster().await;
    let key = "bucket/leaving";
    let partition = nodes[0].partitions.partition_of(key);
    lead_and_write(&nodes, 0, key, 1).await;
    for value in 2..=40 {
        nodes[0].write(key, value).await.expect("the leader writes");
    }
    eventually("the leaving node applied every write", Duration::from_secs(10), || {
        (nodes[2].note(key) == Some(Note(40))).then_some(())
    })
    .await;
    let all: BTreeSet<u64> = nodes.iter().map(|node| node.id).collect();
    let two: BTreeSet<u64> = all.iter().copied().filter(|id| *id != nodes[2].id).collect();
    let desired = |set: &BTreeSet<u64>| {
        let (set, all) = (set.clone(), all.clone());
        move |p: u64| if p == partition { set.clone() } else { all.clone() }
    };

    let blocks = blocks_of(&nodes[2]);

    // Its copy stays while the group still counts it.
    assert_eq!(
        nodes[2].partitions.drop_left(desired(&two), &blocks).await,
        0,
        "the group still has it as a voter"
    );
    assert_eq!(nodes[2].note(key), Some(Note(40)));

    assert!(
        move_voters(&nodes, partition, &two, Duration::from_secs(30)).await,
        "the voters leave node 2 out"
    );
    // Once the leader has applied (committed) the membership without it: a round may come first.
    let deadline = Instant::now() + Duration::from_secs(20);
    while nodes[2].partitions.drop_left(desired(&two), &blocks).await == 0 {
        assert!(Instant::now() < deadline, "node 2 never dropped the partition it left");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(nodes[2].note(key), None, "its rows of the partition are gone");
    let status = &nodes[2].partitions.status()[partition as usize];
    assert_eq!((status.last_log_index, status.applied_index), (None, None), "{status:?}");
    let log = nodes[2].storage.table(log::RAFT_LOG).unwrap();
    assert_eq!(
        log.scan(&serv_storage::KeyPrefix::new().part(&partition), None).count(),
        0,
        "its log is gone"
    );
    let other = (partition + 1) % PARTITIONS;
    assert!(nodes[2].partitions.status()[other as usize].last_log_index.is_some(), "other partitions stay");
    assert_eq!(nodes[2].partitions.drop_left(desired(&two), &blocks).await, 0, "nothing is left to drop");
    nodes[0].write(key, 41).await.expect("the two replicas left still commit");

    // Restarted, it holds nothing of the partition still, and keeps its floor.
    nodes[2].kill().await;
    restart(&mut nodes, 2).await;
    assert_eq!(nodes[2].partitions.status()[partition as usize].last_log_index, None);

    // It votes only for a candidate whose log reaches what it held.
    let floor = leave::vote_floor(&nodes[2].storage, partition).unwrap().expect("the drop keeps a floor");
    assert!(floor.index >= 40, "{floor:?}");
    let group = nodes[2].partitions.group(partition);
    let behind = openraft::raft::VoteRequest { vote: Vote::new(1000, nodes[1].id), last_log_id: None };
    let refusal = group.refuses_vote(&behind).expect("a candidate with an empty log is refused");
    assert!(!refusal.vote_granted);
    let level = openraft::raft::VoteRequest { vote: Vote::new(1000, nodes[1].id), last_log_id: Some(floor) };
    assert!(group.refuses_vote(&level).is_none(), "a candidate at the floor is judged by the group");

    // Added back, it is sent the partition again.
    assert!(move_voters(&nodes, partition, &all, Duration::from_secs(30)).await, "node 2 is a voter again");
    eventually("the node added back holds the partition again", Duration::from_secs(15), || {
        (nodes[2].note(key) == Some(Note(41))).then_some(())
    })
    .await;
    for node in &nodes {
        node.partitions.shutdown().await;
    }
}
