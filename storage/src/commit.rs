//! Group commit: a write is acknowledged only once it is durable, and concurrent writers share
//! one fsync.
//!
//! fjall makes a batch durable by syncing its journal under the journal lock, so N writers that
//! each ask for a sync pay N fsyncs in a row, and a writer that merely appends waits on that lock
//! for as long as a sync runs. Here a writer instead hands its batch to one commit thread and
//! awaits the outcome, never touching the journal itself. The thread takes every batch queued so
//! far, appends them to the journal without syncing (this applies them, so reads see them), syncs
//! once, and then resolves them all. While one fsync runs, the writers that arrive queue up and
//! the next fsync covers them all, so the group size adapts to the load with no added delay, and
//! no async worker thread ever blocks on the disk.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Instant;

use fjall::PersistMode;
use tokio::sync::oneshot;

use crate::histogram::{Histogram, HistogramSnapshot};
use crate::writeset::Keyspaces;
use crate::{Result, StorageError, WriteSet};

/// How commits are made durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DurabilityMode {
    /// Concurrent commits share one fsync (the default).
    Group,
    /// Each commit pays its own fsync (for comparison in benchmarks).
    PerCommit,
}

/// Upper bounds of the group-size histogram buckets (commits per fsync).
pub const GROUP_SIZE_BUCKETS: [u64; 9] = [1, 2, 4, 8, 16, 32, 64, 128, 256];

/// Upper bounds of the fsync-latency histogram buckets, in microseconds (100 µs to 2.5 s).
pub const FSYNC_BUCKETS_US: [u64; 14] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000,
    2_500_000,
];

/// Most commits one fsync covers, so that one round's latency stays bounded under a flood.
pub const MAX_GROUP_COMMITS: usize = 1024;

/// Counters of the commit path, as exported in `/metrics`.
#[derive(Clone, Debug, Default)]
pub struct CommitStats {
    /// Commits acknowledged as durable.
    pub commits: u64,
    /// Journal fsyncs performed.
    pub fsyncs: u64,
    /// Cumulative count of fsyncs whose group held at most the matching bucket's commits.
    pub group_size_buckets: [u64; GROUP_SIZE_BUCKETS.len()],
    /// Sum of all group sizes (equals the commits covered by group fsyncs).
    pub group_size_sum: u64,
    /// How long each fsync took (in `PerCommit` mode, each commit's write and fsync).
    pub fsync_seconds: HistogramSnapshot,
}

/// Where the outcome of a batch goes: a waiting writer, or a function the commit thread calls.
pub(crate) enum Done {
    Port(oneshot::Sender<Result<()>>),
    Call(Box<dyn FnOnce(Result<()>) + Send>),
}

impl Done {
    fn send(self, outcome: Result<()>) {
        match self {
            Done::Port(port) => {
                let _ = port.send(outcome); // the writer may have stopped waiting
            }
            Done::Call(call) => call(outcome),
        }
    }
}

/// A port the commit thread answers, and what resolves with its answer. The thread answers every
/// queued batch, even while stopping: a dropped port means it died (`gone` says what was lost).
fn answered(gone: &'static str) -> (Done, Staged) {
    let (port, outcome) = oneshot::channel();
    let staged =
        Staged::new(async move { outcome.await.unwrap_or_else(|_| Err(StorageError::Commit(gone.into()))) });
    (Done::Port(port), staged)
}

/// A batch handed to the commit thread, with the port its outcome goes to.
struct Pending {
    batch: fjall::OwnedWriteBatch,
    done: Done,
    /// Answered once written, before the group's fsync (see [`Committer::apply_unsynced`]).
    unsynced: bool,
}

struct Queue {
    /// Batches waiting for the commit thread, in arrival order.
    pending: Vec<Pending>,
    /// Set by `shutdown`: no new commits; the thread drains `pending`, then exits.
    stopping: bool,
    /// Set once the journal could not be written or synced: nothing more is acknowledged.
    failed: Option<String>,
}

impl Queue {
    /// Refuses a new commit once the storage is closed or poisoned.
    fn check_accepting(&self) -> Result<()> {
        if let Some(reason) = &self.failed {
            return Err(StorageError::Commit(reason.clone()));
        }
        if self.stopping {
            return Err(StorageError::Closed);
        }
        Ok(())
    }
}

struct Shared {
    keyspaces: Arc<Keyspaces>,
    queue: Mutex<Queue>,
    wake: Condvar,
    commits: AtomicU64,
    fsyncs: AtomicU64,
    group_buckets: [AtomicU64; GROUP_SIZE_BUCKETS.len()],
    group_sum: AtomicU64,
    fsync_latency: Histogram<{ FSYNC_BUCKETS_US.len() }>,
}

/// A commit handed to its commit path: resolves once it is durable (and applied).
pub struct Staged {
    outcome: std::pin::Pin<Box<dyn std::future::Future<Output = Result<()>> + Send>>,
}

impl Staged {
    /// What resolves when `outcome` does: for commit paths other than this node's own.
    pub fn new(outcome: impl std::future::Future<Output = Result<()>> + Send + 'static) -> Self {
        Self { outcome: Box::pin(outcome) }
    }
}

impl std::future::Future for Staged {
    type Output = Result<()>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<()>> {
        self.outcome.as_mut().poll(cx)
    }
}

/// How a [`WriteSet`] becomes durable: this node's commit thread, or (for an entity's state) its
/// partition's replicated log, which applies the set once a majority holds it.
pub trait CommitPath: Send + Sync + 'static {
    /// Hands `changes` on now, in order after everything handed before, and returns what resolves
    /// once they are durable and applied.
    fn stage(&self, changes: WriteSet) -> Result<Staged>;
}

/// Owns the commit thread and hands it the batches of grouped commits.
pub(crate) struct Committer {
    shared: Arc<Shared>,
    mode: DurabilityMode,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Committer {
    pub(crate) fn start(keyspaces: Arc<Keyspaces>, mode: DurabilityMode) -> Result<Self> {
        let shared = Arc::new(Shared {
            keyspaces,
            queue: Mutex::new(Queue { pending: Vec::new(), stopping: false, failed: None }),
            wake: Condvar::new(),
            commits: AtomicU64::new(0),
            fsyncs: AtomicU64::new(0),
            group_buckets: Default::default(),
            group_sum: AtomicU64::new(0),
            fsync_latency: Histogram::new(FSYNC_BUCKETS_US),
        });
        let thread = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("serv-commit".into())
                .spawn(move || shared.run())
                .map_err(|e| StorageError::Commit(format!("cannot start commit thread: {e}")))?
        };
        Ok(Self { shared, mode, thread: Mutex::new(Some(thread)) })
    }

    /// Hands `changes` to the commit thread now, in order after everything handed before, and
    /// returns what resolves once they are durable. (In `PerCommit` mode, the bench-only
    /// comparison, the commit is made right here, on the caller's thread.)
    pub(crate) fn stage(&self, changes: &WriteSet) -> Result<Staged> {
        self.stage_batch(changes.to_batch(&self.shared.keyspaces)?)
    }

    /// Hands `changes` to the commit thread, which calls `then` with the outcome once they are
    /// durable (from its own thread: `then` must be quick and must not block).
    pub(crate) fn stage_then(
        &self,
        changes: &WriteSet,
        then: Box<dyn FnOnce(Result<()>) + Send>,
    ) -> Result<()> {
        self.enqueue(changes.to_batch(&self.shared.keyspaces)?, Done::Call(then), false)
    }

    /// An empty batch of the database, for changes made directly on keyspaces (block bodies).
    pub(crate) fn batch(&self) -> fjall::OwnedWriteBatch {
        self.shared.keyspaces.db.batch().durability(None)
    }

    /// [`Committer::stage`] for a batch built directly.
    pub(crate) fn stage_batch(&self, batch: fjall::OwnedWriteBatch) -> Result<Staged> {
        match self.mode {
            DurabilityMode::Group => {
                let (done, staged) = answered("commit thread stopped before the commit was durable");
                self.enqueue(batch, done, false)?;
                Ok(staged)
            }
            DurabilityMode::PerCommit => {
                self.shared.lock_queue().check_accepting()?;
                let started = Instant::now();
                let outcome = batch.durability(Some(PersistMode::SyncData)).commit();
                self.shared.fsync_latency.record(started.elapsed());
                let outcome = match outcome {
                    Ok(()) => {
                        self.shared.record_group(1);
                        self.shared.commits.fetch_add(1, Ordering::Relaxed);
                        Ok(())
                    }
                    Err(e) => Err(self.shared.fail(format!("journal write or fsync failed: {e}"))),
                };
                Ok(Staged::new(std::future::ready(outcome)))
            }
        }
    }

    /// Applies `changes` in order with the commits handed before, and resolves once they are
    /// written (readable), without waiting for an fsync: for a replicated state machine, whose
    /// log (already durable) replays whatever a crash loses of this. The write is made by the
    /// commit thread between its fsyncs, so no caller ever waits on the journal's lock while a
    /// sync holds it.
    pub(crate) fn apply_unsynced(&self, changes: &WriteSet) -> Result<Staged> {
        self.write_unsynced(changes.to_batch(&self.shared.keyspaces)?)
    }

    /// [`Committer::apply_unsynced`] for a batch built directly (block bodies, which become
    /// durable with the fsync of the commit that references them, always later in the journal).
    pub(crate) fn write_unsynced(&self, batch: fjall::OwnedWriteBatch) -> Result<Staged> {
        let (done, staged) = answered("commit thread stopped before the changes were applied");
        self.enqueue(batch, done, true)?;
        Ok(staged)
    }

    /// Queues `batch` for the commit thread, which answers `done` after the group's fsync (or,
    /// when `unsynced`, as soon as the batch is written).
    fn enqueue(&self, batch: fjall::OwnedWriteBatch, done: Done, unsynced: bool) -> Result<()> {
        {
            let mut queue = self.shared.lock_queue();
            queue.check_accepting()?;
            queue.pending.push(Pending { batch, done, unsynced });
        }
        self.shared.wake.notify_one();
        Ok(())
    }

    pub(crate) fn stats(&self) -> CommitStats {
        let shared = &self.shared;
        let mut stats = CommitStats {
            commits: shared.commits.load(Ordering::Relaxed),
            fsyncs: shared.fsyncs.load(Ordering::Relaxed),
            group_size_sum: shared.group_sum.load(Ordering::Relaxed),
            fsync_seconds: shared.fsync_latency.snapshot(),
            ..CommitStats::default()
        };
        for (slot, counter) in stats.group_size_buckets.iter_mut().zip(&shared.group_buckets) {
            *slot = counter.load(Ordering::Relaxed);
        }
        stats
    }

    /// Why commits are refused, once a journal write or sync has failed.
    pub(crate) fn failure(&self) -> Option<String> {
        self.shared.lock_queue().failed.clone()
    }

    /// Syncs what is pending, stops the commit thread and refuses further commits.
    pub(crate) fn shutdown(&self) -> Result<()> {
        self.shared.lock_queue().stopping = true;
        self.shared.wake.notify_all();
        if let Some(thread) = self.thread.lock().unwrap_or_else(PoisonError::into_inner).take() {
            let _ = thread.join();
        }
        self.shared
            .keyspaces
            .db
            .persist(PersistMode::SyncAll)
            .map_err(|e| StorageError::Commit(e.to_string()))
    }
}

impl Drop for Committer {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

impl Shared {
    /// The queue, even if a panicking holder poisoned its lock (its state stays consistent).
    fn lock_queue(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn run(&self) {
        // Should the thread die, waiting writers get an error instead of waiting forever.
        let _answer_on_exit = FailOnExit(self);
        loop {
            let group: Vec<Pending> = {
                let mut queue = self.lock_queue();
                while queue.pending.is_empty() && !queue.stopping {
                    queue = self.wake.wait(queue).unwrap_or_else(PoisonError::into_inner);
                }
                if queue.pending.is_empty() {
                    return; // stopping, and every queued batch has been answered
                }
                let size = queue.pending.len().min(MAX_GROUP_COMMITS);
                queue.pending.drain(..size).collect()
            };
            self.commit_group(group);
        }
    }

    /// Appends every batch of `group` to the journal, syncs once and answers them all.
    fn commit_group(&self, group: Vec<Pending>) {
        let mut written = Vec::with_capacity(group.len());
        for Pending { batch, done, unsynced } in group {
            match batch.commit() {
                Ok(()) if unsynced => {
                    done.send(Ok(()));
                }
                Ok(()) => written.push(done),
                Err(e) => {
                    done.send(Err(self.fail(format!("journal write failed: {e}"))));
                }
            }
        }
        if written.is_empty() {
            return;
        }
        // Every batch in `written` is in the journal: one sync makes them all durable.
        let started = Instant::now();
        let synced = self.keyspaces.db.persist(PersistMode::SyncData);
        self.fsync_latency.record(started.elapsed());
        match synced {
            Ok(()) => {
                self.record_group(written.len() as u64);
                self.commits.fetch_add(written.len() as u64, Ordering::Relaxed);
                for done in written {
                    done.send(Ok(()));
                }
            }
            Err(e) => {
                let reason = format!("fsync failed: {e}");
                self.fail(reason.clone());
                for done in written {
                    done.send(Err(StorageError::Commit(reason.clone())));
                }
            }
        }
    }

    /// Marks the storage failed so that nothing more is acknowledged, and returns the error.
    fn fail(&self, reason: String) -> StorageError {
        tracing::error!(%reason, "durable commit failed; refusing further commits");
        self.lock_queue().failed.get_or_insert_with(|| reason.clone());
        StorageError::Commit(reason)
    }

    fn record_group(&self, size: u64) {
        debug_assert!(size > 0, "an fsync always covers at least one commit");
        self.fsyncs.fetch_add(1, Ordering::Relaxed);
        self.group_sum.fetch_add(size, Ordering::Relaxed);
        for (bound, counter) in GROUP_SIZE_BUCKETS.iter().zip(&self.group_buckets) {
            if size <= *bound {
                counter.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Fails the storage and drops every queued batch (erroring its writer) if the commit thread
/// unwinds.
struct FailOnExit<'a>(&'a Shared);

impl Drop for FailOnExit<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let mut queue = self.0.lock_queue();
            queue.failed.get_or_insert_with(|| "commit thread panicked".into());
            queue.pending.clear();
        }
    }
}
