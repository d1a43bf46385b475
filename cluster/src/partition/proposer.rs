//! The proposer of one partition: gathers the write sets staged while the previous entry is on
//! its way into one log entry.
//!
//! openraft appends a leader's entries one flush at a time (a command that waits for a flush
//! holds back those queued behind it), so one entry per write set would cost one fsync per write.
//! Instead, write sets queue here in the order they were staged; one entry is in flight at a
//! time, and everything that queued meanwhile (up to [`MAX_BATCH_SETS`] sets and
//! [`MAX_BATCH_BYTES`]) becomes the next entry, applied in order. Under load an fsync covers many
//! writes, as the node's group commit did before; alone, a write waits for nothing but its own.
//!
//! A write set may be **fenced** to one term of this node's leadership (an entity's writes are:
//! see [`super::Partitions::commit_path`]): it is refused, never proposed, unless this node still
//! leads the group in that term when the set is handed to openraft. An entity activated under one
//! leadership can then never write under a later one, whose state it has not seen.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use futures_util::stream::{FuturesOrdered, StreamExt};
use openraft::Raft;
use openraft::error::ClientWriteError;
use serv_storage::{Staged, StorageError, WriteSet};
use tokio::sync::{mpsc, oneshot};

use super::{Counters, TypeConfig, node_name};

/// Entries a partition has in flight at once: the next one is appended while the last is
/// applied.
pub const MAX_ENTRIES_IN_FLIGHT: usize = 2;

/// Most write sets one log entry carries.
pub const MAX_BATCH_SETS: usize = 1024;

/// Most bytes (keys and values) one log entry gathers from several write sets; a single larger
/// set still travels, alone.
pub const MAX_BATCH_BYTES: usize = 4 * 1024 * 1024;

/// A write set waiting to be proposed, and where its outcome goes.
struct Waiting {
    changes: WriteSet,
    /// The term of this node's leadership the set belongs to, if it is fenced.
    term: Option<u64>,
    done: oneshot::Sender<Result<(), StorageError>>,
    staged: Instant,
}

/// Hands one partition's write sets to its Raft group, batched.
pub(crate) struct Proposer {
    partition: u64,
    queue: mpsc::UnboundedSender<Waiting>,
}

impl Proposer {
    pub(crate) fn start(
        partition: u64,
        raft: Raft<TypeConfig>,
        stats: Arc<Counters>,
        timeout: Duration,
    ) -> Self {
        let (queue, waiting) = mpsc::unbounded_channel();
        tokio::spawn(run(partition, raft, waiting, stats, timeout));
        Self { partition, queue }
    }

    /// Queues `changes` behind everything staged before; resolves once committed and applied.
    /// With a `term`, the set is refused unless this node leads the group in that term.
    pub(crate) fn stage(&self, changes: WriteSet, term: Option<u64>) -> serv_storage::Result<Staged> {
        let partition = self.partition;
        let (done, outcome) = oneshot::channel();
        self.queue
            .send(Waiting { changes, term, done, staged: Instant::now() })
            .map_err(|_| StorageError::Commit(format!("partition {partition} has stopped")))?;
        Ok(Staged::new(async move {
            outcome.await.unwrap_or_else(|_| {
                Err(StorageError::Commit(format!(
                    "partition {partition} stopped before the write was committed"
                )))
            })
        }))
    }
}

/// What became of one entry, told to each of its write sets.
#[derive(Clone)]
enum Outcome {
    Committed,
    NotLeader(Option<u64>),
    Failed(String),
}

impl Outcome {
    fn to_result(&self, partition: u64) -> Result<(), StorageError> {
        match self {
            Outcome::Committed => Ok(()),
            Outcome::NotLeader(leader) => {
                Err(StorageError::NotLeader { partition, leader: leader.map(node_name) })
            }
            Outcome::Failed(reason) => Err(StorageError::Commit(format!("partition {partition}: {reason}"))),
        }
    }
}

async fn run(
    partition: u64,
    raft: Raft<TypeConfig>,
    mut waiting: mpsc::UnboundedReceiver<Waiting>,
    stats: Arc<Counters>,
    timeout: Duration,
) {
    let mut in_flight = FuturesOrdered::new();
    let mut open = true;
    while open || !in_flight.is_empty() {
        tokio::select! {
            Some((batch, outcome)) = in_flight.next(), if !in_flight.is_empty() => {
                answer(partition, batch, outcome, &stats);
            }
            first = waiting.recv(), if open && in_flight.len() < MAX_ENTRIES_IN_FLIGHT => {
                let Some(first) = first else {
                    open = false;
                    continue;
                };
                let batch = gather(first, &mut waiting);
                stats.proposals.fetch_add(batch.len() as u64, Relaxed);
                let (mut batch, stale) = fence(&raft, batch);
                if !stale.is_empty() {
                    let leader = raft.metrics().borrow().current_leader;
                    answer(partition, stale, Outcome::NotLeader(leader), &stats);
                }
                if batch.is_empty() {
                    continue;
                }
                let mut entry = WriteSet::new();
                for waiter in &mut batch {
                    entry.extend(std::mem::take(&mut waiter.changes));
                }
                // Handed to openraft here, in order; only the wait happens in the future.
                let pending = propose(&raft, entry, timeout);
                in_flight.push_back(async move { (batch, pending.await) });
            }
        }
    }
}

/// `first` and what queued behind it, within the batch limits.
fn gather(first: Waiting, waiting: &mut mpsc::UnboundedReceiver<Waiting>) -> Vec<Waiting> {
    let mut bytes = first.changes.bytes();
    let mut batch = vec![first];
    while batch.len() < MAX_BATCH_SETS && bytes < MAX_BATCH_BYTES {
        match waiting.try_recv() {
            Ok(next) => {
                bytes += next.changes.bytes();
                batch.push(next);
            }
            Err(_) => break,
        }
    }
    batch
}

/// The sets of `batch` that may be proposed now, and those fenced to a term in which this node
/// no longer leads (or never led).
fn fence(raft: &Raft<TypeConfig>, batch: Vec<Waiting>) -> (Vec<Waiting>, Vec<Waiting>) {
    if batch.iter().all(|waiter| waiter.term.is_none()) {
        return (batch, Vec::new());
    }
    let leading = {
        let metrics = raft.metrics();
        let m = metrics.borrow();
        (m.state == openraft::ServerState::Leader).then_some(m.current_term)
    };
    batch.into_iter().partition(|waiter| waiter.term.is_none() || waiter.term == leading)
}

fn answer(partition: u64, batch: Vec<Waiting>, outcome: Outcome, stats: &Counters) {
    for waiter in batch {
        match outcome {
            Outcome::Committed => {
                stats.committed.fetch_add(1, Relaxed);
                stats.latency_us_sum.fetch_add(waiter.staged.elapsed().as_micros() as u64, Relaxed);
            }
            _ => {
                stats.failed.fetch_add(1, Relaxed);
            }
        }
        let _ = waiter.done.send(outcome.to_result(partition)); // the writer may have gone
    }
}

/// Proposes one entry now and returns what waits (up to `timeout`) until it is committed and
/// applied here.
fn propose(
    raft: &Raft<TypeConfig>,
    entry: WriteSet,
    timeout: Duration,
) -> impl Future<Output = Outcome> + use<> {
    // Handing an entry to openraft is a send on an unbounded channel: it completes at once.
    let receiver = match raft.client_write_ff(entry).now_or_never() {
        Some(Ok(receiver)) => Ok(receiver),
        Some(Err(fatal)) => Err(Outcome::Failed(format!("the group has stopped: {fatal}"))),
        None => Err(Outcome::Failed("the group is stopping".into())),
    };
    async move {
        let receiver = match receiver {
            Ok(receiver) => receiver,
            Err(outcome) => return outcome,
        };
        wait(receiver, timeout).await
    }
}

async fn wait(
    receiver: tokio::sync::oneshot::Receiver<openraft::raft::ClientWriteResult<TypeConfig>>,
    timeout: Duration,
) -> Outcome {
    match tokio::time::timeout(timeout, receiver).await {
        Err(_) => Outcome::Failed(format!(
            "not committed within {} ms (no majority of its replicas answered)",
            timeout.as_millis()
        )),
        Ok(Ok(Ok(_))) => Outcome::Committed,
        Ok(Ok(Err(ClientWriteError::ForwardToLeader(forward)))) => Outcome::NotLeader(forward.leader_id),
        Ok(Ok(Err(error))) => Outcome::Failed(error.to_string()),
        Ok(Err(_)) => Outcome::Failed("the group stopped before the write was committed".into()),
    }
}
