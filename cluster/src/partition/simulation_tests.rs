//! A seeded simulation of the partition layer: three or five nodes in one process, each
//! partition's group on all of them, real QUIC meshes, and a network that drops, delays and
//! duplicates Raft RPCs, loses replies, cuts a node off, while nodes crash and restart from their
//! storage, and writers keep proposing. Afterwards, with the weather calm and every node up, it
//! checks what Raft promises:
//! - every acknowledged write is in the rows of every replica;
//! - the replicas agree on what each log index holds, and each applied its log in order,
//!   without a gap (a snapshot aside);
//! - no write set was applied at two indexes (exactly once), and a writer's acknowledged
//!   writes to one partition were applied in the order it made them.
//!
//! The seed fixes the fault plan and every draw of the weather; the order in which tokio runs
//! tasks and the timing of fsyncs do not repeat exactly, so a seed replays the same faults, not
//! the same interleaving. `SERV_SIMULATION_SEEDS=N` runs N seeds (default 4), from
//! `SERV_SIMULATION_FIRST_SEED` (default 1); each prints what it did.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::RwLock;

use super::machine::observed::{self, Step};
use super::network::{Fate, Weather};
use super::replicated_tests::{Node, blocks_of, cluster_in, eventually, leader_of, move_voters, restart};
use super::tests::{NOTES, Note};
use super::*;

/// How long writers write and faults fall, per seed.
const WEATHER_FOR: Duration = Duration::from_secs(5);
const WRITERS: usize = 4;

/// A small, seedable generator (SplitMix64): the simulation must not depend on the machine's.
struct Draws(u64);

impl Draws {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `low..high`.
    fn between(&mut self, low: u64, high: u64) -> u64 {
        low + self.next() % (high - low).max(1)
    }

    /// True with probability `per_mille` / 1000.
    fn chance(&mut self, per_mille: u64) -> bool {
        self.next() % 1000 < per_mille
    }
}

/// What the network does to RPCs: per-mille rates of each misfortune, and the node cut off.
#[derive(Default)]
struct Sky {
    draws: Mutex<Option<Draws>>,
    drop: AtomicU64,
    lose_reply: AtomicU64,
    duplicate: AtomicU64,
    delay: AtomicU64,
    cut: Mutex<Option<u64>>,
    /// How many RPCs met each fate but delivery.
    suffered: Mutex<BTreeMap<&'static str, u64>>,
}

impl Sky {
    fn new(seed: u64) -> Arc<Sky> {
        Arc::new(Sky { draws: Mutex::new(Some(Draws(seed ^ 0x5eed))), ..Sky::default() })
    }

    fn calm(&self) {
        for rate in [&self.drop, &self.lose_reply, &self.duplicate, &self.delay] {
            rate.store(0, Ordering::Relaxed);
        }
        *self.cut.lock().unwrap() = None;
    }

    fn fate(&self, from: u64, to: u64) -> Fate {
        let cut = *self.cut.lock().unwrap();
        let fate = if cut == Some(from) || cut == Some(to) {
            Fate::Drop
        } else {
            let mut draws = self.draws.lock().unwrap();
            let draws = draws.as_mut().expect("the sky has its draws");
            let rates = [&self.drop, &self.lose_reply, &self.duplicate, &self.delay]
                .map(|r| r.load(Ordering::Relaxed));
            if draws.chance(rates[0]) {
                Fate::Drop
            } else if draws.chance(rates[1]) {
                Fate::LoseReply
            } else if draws.chance(rates[2]) {
                Fate::Duplicate
            } else if draws.chance(rates[3]) {
                Fate::Delay(Duration::from_millis(draws.between(1, 120)))
            } else {
                Fate::Deliver
            }
        };
        let name = match fate {
            Fate::Deliver => return fate,
            Fate::Drop if cut.is_some_and(|cut| cut == from || cut == to) => "cut",
            Fate::Drop => "dropped",
            Fate::LoseReply => "reply lost",
            Fate::Duplicate => "duplicated",
            Fate::Delay(_) => "delayed",
        };
        *self.suffered.lock().unwrap().entry(name).or_default() += 1;
        fate
    }

    fn weather_of(self: &Arc<Self>, me: u64) -> Weather {
        let sky = self.clone();
        Arc::new(move |to, _partition| sky.fate(me, to))
    }
}

/// A write a writer made: its key and value, and whether it was acknowledged.
struct Attempt {
    writer: usize,
    key: String,
    value: u64,
    acknowledged: bool,
}

/// The write set a writer proposes for `key` = `value`, as the log will hold it.
fn write_set(storage: &Storage, key: &str, value: u64) -> WriteSet {
    let notes = storage.table(NOTES).unwrap();
    let mut changes = WriteSet::new();
    changes.put(&notes, &key.to_string(), &Note(value)).unwrap();
    changes
}

/// Writes keys of its own through whichever node leads the key's partition (or any node, when
/// none is known to), until told to stop.
async fn writer(
    nodes: Arc<RwLock<Vec<Node>>>,
    seed: u64,
    writer: usize,
    stop: Arc<AtomicBool>,
) -> Vec<Attempt> {
    let mut attempts = Vec::new();
    let mut draws = Draws(seed.wrapping_mul(31).wrapping_add(writer as u64));
    for n in 0.. {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let key = format!("w{writer}/k{}", draws.between(0, 12));
        let value = (writer as u64) << 32 | n;
        let (storage, partitions) = {
            let nodes = nodes.read().await;
            let partition = nodes[0].partitions.partition_of(&key);
            let through = leader_of(&nodes, partition)
                .and_then(|leader| nodes.iter().position(|node| node.id == leader))
                .unwrap_or(draws.between(0, nodes.len() as u64) as usize);
            (nodes[through].storage.clone(), nodes[through].partitions.clone())
        };
        let path = partitions.commit_path(partitions.partition_of(&key));
        let outcome = storage.with_commit_path(path).commit(write_set(&storage, &key, value)).await;
        attempts.push(Attempt { writer, key, value, acknowledged: outcome.is_ok() });
        if outcome.is_err() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    attempts
}

/// The faults of one seed, one at a time: a node cut off, a node crashed and restarted, new
/// rates of drops, lost replies, duplicates and delays, or a partition's replica set moved off
/// a node (which drops its copy) and back. Returns what it did.
async fn storm(nodes: &Arc<RwLock<Vec<Node>>>, sky: &Sky, seed: u64) -> Vec<String> {
    let mut draws = Draws(seed.wrapping_mul(0x2545_F491_4F6C_DD1D));
    let mut done = Vec::new();
    let until = Instant::now() + WEATHER_FOR;
    while Instant::now() < until {
        let count = nodes.read().await.len() as u64;
        let victim = draws.between(0, count) as usize;
        let hold = Duration::from_millis(draws.between(200, 1_200));
        match draws.between(0, 4) {
            0 => {
                let id = nodes.read().await[victim].id;
                *sky.cut.lock().unwrap() = Some(id);
                tokio::time::sleep(hold).await;
                *sky.cut.lock().unwrap() = None;
                done.push(format!("cut n{victim} {} ms", hold.as_millis()));
            }
            1 => {
                nodes.read().await[victim].kill().await;
                tokio::time::sleep(hold).await;
                restart(&mut nodes.write().await, victim).await;
                done.push(format!("crash n{victim} {} ms", hold.as_millis()));
            }
            3 => {
                let partition = draws.between(0, PARTITIONS_SIMULATED);
                done.push(reshape(&nodes.read().await, partition, victim).await);
            }
            _ => {
                let rates = [
                    draws.between(0, 100),
                    draws.between(0, 50),
                    draws.between(0, 100),
                    draws.between(0, 200),
                ];
                for (rate, value) in
                    [&sky.drop, &sky.lose_reply, &sky.duplicate, &sky.delay].iter().zip(rates)
                {
                    rate.store(value, Ordering::Relaxed);
                }
                done.push(format!(
                    "rates ‰ drop {} lose {} dup {} delay {}",
                    rates[0], rates[1], rates[2], rates[3]
                ));
            }
        }
        tokio::time::sleep(Duration::from_millis(draws.between(100, 600))).await;
    }
    done
}

/// Moves the voters of `partition` off `nodes[victim]`, has it drop its copy, and moves them
/// back (it is sent the partition again); says how far that got under the weather.
async fn reshape(nodes: &[Node], partition: u64, victim: usize) -> String {
    let all: BTreeSet<u64> = nodes.iter().map(|node| node.id).collect();
    let without: BTreeSet<u64> = all.iter().copied().filter(|id| *id != nodes[victim].id).collect();
    let moved = move_voters(nodes, partition, &without, Duration::from_secs(5)).await;
    let mut dropped = 0;
    if moved {
        let blocks = blocks_of(&nodes[victim]);
        let desired = |p: u64| if p == partition { without.clone() } else { all.clone() };
        let deadline = Instant::now() + Duration::from_secs(3);
        while dropped == 0 && Instant::now() < deadline {
            dropped = nodes[victim].partitions.drop_left(desired, &blocks).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let back = move_voters(nodes, partition, &all, Duration::from_secs(5)).await;
    format!("reshape p{partition} off n{victim}: moved {moved}, dropped {dropped}, back {back}")
}

/// Waits until every partition has a leader and every replica applied all of its log.
async fn converged(nodes: &[Node]) {
    eventually("every replica applied its partition's whole log", Duration::from_secs(45), || {
        (0..PARTITIONS_SIMULATED)
            .all(|partition| {
                let Some(leader) = leader_of(nodes, partition) else { return false };
                let leading = nodes.iter().find(|node| node.id == leader).unwrap();
                let end = leading.partitions.status()[partition as usize].last_log_index;
                nodes.iter().all(|node| node.partitions.status()[partition as usize].applied_index == end)
            })
            .then_some(())
    })
    .await;
}

const PARTITIONS_SIMULATED: u64 = super::replicated_tests::PARTITIONS;

/// What each node applied, by partition, in the order it applied it.
type Applied = BTreeMap<(String, u64), Vec<(Option<openraft::LogId<u64>>, Step)>>;

fn check(seed: u64, nodes: &[Node], attempts: &[Attempt], applied: &Applied) {
    let acknowledged: Vec<&Attempt> = attempts.iter().filter(|a| a.acknowledged).collect();
    // Every acknowledged write is in every replica's rows: the last acknowledged value of a key,
    // or a later attempt of it (one that was not acknowledged may still have been committed).
    for node in nodes {
        for (key, last) in acknowledged.iter().map(|a| (&a.key, a.value)).collect::<BTreeMap<_, _>>() {
            let held = node.note(key).map(|note| note.0);
            let later = attempts.iter().any(|a| &a.key == key && Some(a.value) == held && a.value >= last);
            assert!(later, "seed {seed}: node {} holds {key} = {held:?}, acknowledged {last}", node.id);
        }
    }
    // The replicas agree on each index; each applied in order, without a gap but by a snapshot.
    let mut agreed: BTreeMap<(u64, u64), (openraft::LogId<u64>, Step)> = BTreeMap::new();
    for ((node, partition), steps) in applied {
        let mut previous: Option<u64> = None;
        for (log_id, step) in steps {
            let index = log_id.map_or(0, |id| id.index);
            if *step != Step::Snapshot {
                let log_id = log_id.expect("an applied entry has a log id");
                assert!(
                    previous.is_none_or(|previous| index <= previous + 1),
                    "seed {seed}: node {node} partition {partition} applied {index} after {previous:?}: a gap"
                );
                let first = agreed.entry((*partition, index)).or_insert((log_id, *step));
                assert_eq!(
                    *first,
                    (log_id, *step),
                    "seed {seed}: partition {partition} index {index} differs between replicas (node {node})"
                );
            }
            previous = Some(index);
        }
    }
    // No write set at two indexes; a writer's acknowledged writes of a partition in its order.
    let mut at: BTreeMap<(u64, u64), u64> = BTreeMap::new();
    for ((partition, index), (_, step)) in &agreed {
        if let Step::Write(hash) = step {
            let twice = at.insert((*partition, *hash), *index);
            assert!(
                twice.is_none(),
                "seed {seed}: partition {partition} applied one write at {twice:?} and {index}"
            );
        }
    }
    let storage = &nodes[0].storage;
    let mut last_index: BTreeMap<(usize, u64), u64> = BTreeMap::new();
    for attempt in &acknowledged {
        let partition = nodes[0].partitions.partition_of(&attempt.key);
        let hash = observed::hash_of(&write_set(storage, &attempt.key, attempt.value));
        let Some(index) = at.get(&(partition, hash)) else { continue };
        if let Some(before) = last_index.insert((attempt.writer, partition), *index) {
            assert!(
                before < *index,
                "seed {seed}: writer {}'s writes to partition {partition} applied out of order",
                attempt.writer
            );
        }
    }
}

async fn simulate(seed: u64) {
    observed::take();
    let count = if seed.is_multiple_of(2) { 5 } else { 3 };
    let sky = Sky::new(seed);
    let nodes = Arc::new(RwLock::new(cluster_in(count, |me| Some(sky.weather_of(me))).await));
    {
        let nodes = nodes.read().await;
        eventually("every partition has a leader", Duration::from_secs(20), || {
            (0..PARTITIONS_SIMULATED).all(|p| leader_of(&nodes, p).is_some()).then_some(())
        })
        .await;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> =
        (0..WRITERS).map(|w| tokio::spawn(writer(nodes.clone(), seed, w, stop.clone()))).collect();
    let started = Instant::now();
    let faults = storm(&nodes, &sky, seed).await;
    stop.store(true, Ordering::Relaxed);
    let mut attempts = Vec::new();
    for writer in writers {
        attempts.extend(writer.await.expect("a writer finishes"));
    }
    sky.calm();
    let nodes = nodes.read().await;
    let all: BTreeSet<u64> = nodes.iter().map(|node| node.id).collect();
    for partition in 0..PARTITIONS_SIMULATED {
        let back = move_voters(&nodes, partition, &all, Duration::from_secs(30)).await;
        assert!(back, "seed {seed}: partition {partition} never had every node as a voter again");
    }
    converged(&nodes).await;
    let ids: BTreeSet<String> = nodes.iter().map(|node| node.storage.node_id().to_string()).collect();
    let mut applied = Applied::new();
    for step in observed::take().into_iter().filter(|step| ids.contains(&step.node)) {
        applied.entry((step.node, step.partition)).or_default().push((step.log_id, step.step));
    }
    check(seed, &nodes, &attempts, &applied);
    let acknowledged = attempts.iter().filter(|a| a.acknowledged).count();
    println!(
        "seed {seed}: {count} nodes, {} s; {acknowledged} of {} writes acknowledged; {} steps applied; faults: {}; RPCs {:?}",
        started.elapsed().as_secs(),
        attempts.len(),
        applied.values().map(Vec::len).sum::<usize>(),
        faults.join(", "),
        sky.suffered.lock().unwrap()
    );
    assert!(acknowledged > 0, "seed {seed}: no write was acknowledged in {WEATHER_FOR:?}");
    for node in nodes.iter() {
        node.partitions.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_a_seeded_storm_applied_once_in_order_on_every_replica() {
    let number =
        |name: &str, default: u64| std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default);
    let first = number("SERV_SIMULATION_FIRST_SEED", 1);
    let seeds = number("SERV_SIMULATION_SEEDS", 4);
    for seed in first..first + seeds {
        simulate(seed).await;
    }
    println!("simulation: {seeds} seeds from {first} passed");
}
