//! Group commit: a write is acknowledged only once it is durable, and concurrent writers share
//! one fsync.
//!
//! fjall makes a batch durable by syncing its journal under the journal lock, so N writers that
//! each ask for a sync pay N fsyncs in a row. Here a writer instead commits its batch to the
//! journal without syncing, takes a ticket, and waits; one commit thread syncs the journal and
//! releases every ticket taken before that sync started. While one fsync runs, the writers that
//! arrive queue up and the next fsync covers them all, so the group size adapts to the load with
//! no added delay.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use fjall::PersistMode;
use tokio::sync::watch;

use crate::table::key_bytes;
use crate::{Record, Result, StorageError, Table, TableKey};

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
}

/// A set of changes applied atomically by [`crate::Storage::commit`].
pub struct WriteSet {
    batch: fjall::OwnedWriteBatch,
}

impl WriteSet {
    pub(crate) fn new(db: &fjall::Database) -> Self {
        Self { batch: db.batch().durability(None) }
    }

    /// Stores `value` under `key` in `table`.
    pub fn put<K: TableKey, V: Record>(
        &mut self,
        table: &Table<K, V>,
        key: &K,
        value: &V,
    ) -> Result<()> {
        let bytes = table.encode_value(value)?;
        self.batch.insert(table.keyspace(), key_bytes(key), bytes);
        Ok(())
    }

    /// Removes `key` from `table`.
    pub fn delete<K: TableKey, V: Record>(&mut self, table: &Table<K, V>, key: &K) {
        self.batch.remove(table.keyspace(), key_bytes(key));
    }

    /// Applies the set and syncs the journal on this thread, outside the group (start-up only).
    pub(crate) fn commit_synced(self) -> Result<()> {
        self.batch
            .durability(Some(PersistMode::SyncAll))
            .commit()
            .map_err(|e| StorageError::Commit(e.to_string()))
    }

    /// Number of changes in the set.
    pub fn len(&self) -> usize {
        self.batch.len()
    }

    /// True when the set holds no change.
    pub fn is_empty(&self) -> bool {
        self.batch.is_empty()
    }
}

#[derive(Clone, Debug, Default)]
struct Progress {
    /// Every ticket up to this one is durable.
    synced: u64,
    /// Set once a sync failed: the database is poisoned and nothing more is acknowledged.
    failed: Option<String>,
}

struct Queue {
    /// Tickets handed out: commits written to the journal, waiting for a sync.
    written: u64,
    synced: u64,
    stopping: bool,
}

struct Shared {
    db: fjall::Database,
    queue: Mutex<Queue>,
    wake: Condvar,
    progress: watch::Sender<Progress>,
    commits: AtomicU64,
    fsyncs: AtomicU64,
    group_buckets: [AtomicU64; GROUP_SIZE_BUCKETS.len()],
    group_sum: AtomicU64,
}

/// Owns the commit thread and hands out durability tickets.
pub(crate) struct Committer {
    shared: Arc<Shared>,
    mode: DurabilityMode,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Committer {
    pub(crate) fn start(db: fjall::Database, mode: DurabilityMode) -> Result<Self> {
        let shared = Arc::new(Shared {
            db,
            queue: Mutex::new(Queue { written: 0, synced: 0, stopping: false }),
            wake: Condvar::new(),
            progress: watch::Sender::new(Progress::default()),
            commits: AtomicU64::new(0),
            fsyncs: AtomicU64::new(0),
            group_buckets: Default::default(),
            group_sum: AtomicU64::new(0),
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

    pub(crate) async fn commit(&self, changes: WriteSet) -> Result<()> {
        if let Some(reason) = &self.shared.progress.borrow().failed {
            return Err(StorageError::Commit(reason.clone()));
        }
        // Checked before the batch reaches the journal: a commit refused as closed must not
        // be applied anyway (group mode), nor slip past `shutdown` (per-commit mode).
        if self.shared.queue.lock().expect("commit queue lock").stopping {
            return Err(StorageError::Closed);
        }
        match self.mode {
            DurabilityMode::Group => self.commit_grouped(changes).await,
            DurabilityMode::PerCommit => self.commit_alone(changes).await,
        }?;
        self.shared.commits.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    async fn commit_grouped(&self, changes: WriteSet) -> Result<()> {
        changes.batch.commit().map_err(|e| StorageError::Commit(e.to_string()))?;
        let ticket = {
            let mut queue = self.shared.queue.lock().expect("commit queue lock");
            if queue.stopping {
                return Err(StorageError::Closed);
            }
            queue.written += 1;
            queue.written
        };
        self.shared.wake.notify_one();
        let mut progress = self.shared.progress.subscribe();
        let progress = progress
            .wait_for(|p| p.synced >= ticket || p.failed.is_some())
            .await
            .map_err(|_| StorageError::Closed)?;
        match &progress.failed {
            Some(reason) if progress.synced < ticket => Err(StorageError::Commit(reason.clone())),
            _ => Ok(()),
        }
    }

    async fn commit_alone(&self, changes: WriteSet) -> Result<()> {
        let shared = self.shared.clone();
        tokio::task::spawn_blocking(move || {
            changes
                .batch
                .durability(Some(PersistMode::SyncData))
                .commit()
                .map_err(|e| StorageError::Commit(e.to_string()))?;
            shared.record_group(1);
            Ok(())
        })
        .await
        .map_err(|e| StorageError::Commit(format!("commit task failed: {e}")))?
    }

    pub(crate) fn stats(&self) -> CommitStats {
        let shared = &self.shared;
        let mut stats = CommitStats {
            commits: shared.commits.load(Ordering::Relaxed),
            fsyncs: shared.fsyncs.load(Ordering::Relaxed),
            group_size_sum: shared.group_sum.load(Ordering::Relaxed),
            ..CommitStats::default()
        };
        for (slot, counter) in stats.group_size_buckets.iter_mut().zip(&shared.group_buckets) {
            *slot = counter.load(Ordering::Relaxed);
        }
        stats
    }

    /// Syncs what is pending, stops the commit thread and refuses further commits.
    pub(crate) fn shutdown(&self) -> Result<()> {
        self.shared.queue.lock().expect("commit queue lock").stopping = true;
        self.shared.wake.notify_all();
        if let Some(thread) = self.thread.lock().expect("commit thread lock").take() {
            let _ = thread.join();
        }
        self.shared
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
    fn run(&self) {
        loop {
            let (from, target) = {
                let mut queue = self.queue.lock().expect("commit queue lock");
                while queue.written == queue.synced && !queue.stopping {
                    queue = self.wake.wait(queue).expect("commit queue lock");
                }
                if queue.written == queue.synced {
                    return; // stopping, and nothing left to sync
                }
                (queue.synced, queue.written)
            };
            // Every ticket <= target belongs to a batch already in the journal: one sync covers all.
            let outcome = self.db.persist(PersistMode::SyncData);
            self.queue.lock().expect("commit queue lock").synced = target;
            match outcome {
                Ok(()) => {
                    self.record_group(target - from);
                    self.progress.send_modify(|p| p.synced = target);
                }
                Err(e) => {
                    tracing::error!(error = %e, "journal fsync failed; refusing further commits");
                    self.progress.send_modify(|p| p.failed = Some(format!("fsync failed: {e}")));
                    return;
                }
            }
        }
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
