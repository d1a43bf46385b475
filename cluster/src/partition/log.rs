//! A partition's Raft log, vote and commit point, kept in the node's one fjall database.
//!
//! Every partition's entries live in one table keyed by `(partition, index)`, so a range of one
//! partition's log is one range scan. Appends go through the node's group commit: the appends of
//! all partitions on a node share fsyncs, and openraft is told an append is flushed only once it
//! is durable. Recent entries also sit in memory until applied (see [`super::recent`]), so that
//! a reader never misses an entry the commit thread has not written yet, and the state machine
//! does not decode back what was just encoded.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{Entry, LogId, LogState, RaftLogId, RaftLogReader, StorageError, StorageIOError, Vote};
use serv_storage::{KeyPrefix, Record, Storage, Table, TableDef, WriteSet};

use super::recent::Recent;
use super::{Meta, MetaKey, OrRaft, TypeConfig, meta_table};

/// Every partition's log entries, by `(partition, index)`.
pub(crate) const RAFT_LOG: TableDef<(u64, u64), LogRecord> =
    TableDef::new("raft_log").max_memtable_bytes(RAFT_LOG_MEMTABLE_BYTES);

/// The log's in-memory write buffer: entries are read back rarely (a replica catching up) and
/// purged soon, while the same bytes also sit in the tables they are applied to, so the buffer
/// is kept small rather than at the 64 MiB of a table that is read.
pub const RAFT_LOG_MEMTABLE_BYTES: u64 = 4 * 1024 * 1024;

/// One stored log entry.
#[derive(serde::Serialize, serde::Deserialize)]
pub(crate) struct LogRecord(pub Entry<TypeConfig>);

impl Record for LogRecord {
    const FORMAT: u8 = 1;
}

type Result<T> = std::result::Result<T, StorageError<u64>>;

/// The log of one partition.
#[derive(Clone)]
pub(crate) struct LogStore {
    partition: u64,
    storage: Storage,
    log: Table<(u64, u64), LogRecord>,
    meta: Table<MetaKey, Meta>,
    recent: Arc<Recent>,
}

impl LogStore {
    pub(crate) fn open(storage: &Storage, partition: u64, recent: Arc<Recent>) -> serv_storage::Result<Self> {
        Ok(Self {
            partition,
            storage: storage.local(),
            log: storage.table(RAFT_LOG)?,
            meta: meta_table(storage)?,
            recent,
        })
    }

    fn meta_key(&self, field: &str) -> MetaKey {
        (self.partition, field.to_string())
    }

    fn read_meta(&self, field: &str) -> Result<Option<Meta>> {
        self.meta.get(&self.meta_key(field)).or_raft(StorageIOError::read)
    }

    async fn write_meta(&self, field: &str, value: Meta) -> Result<()> {
        let mut changes = WriteSet::new();
        changes.put(&self.meta, &self.meta_key(field), &value).or_raft(StorageIOError::write)?;
        self.storage.commit(changes).await.or_raft(StorageIOError::write)
    }

    /// Entries with index in `range`, from the table and then those not yet written there.
    fn read_range(&self, range: impl RangeBounds<u64>) -> Result<Vec<Entry<TypeConfig>>> {
        let start = match range.start_bound() {
            Bound::Included(&i) => i,
            Bound::Excluded(&i) => i.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(&i) => i.saturating_add(1),
            Bound::Excluded(&i) => i,
            Bound::Unbounded => u64::MAX,
        };
        if start >= end {
            return Ok(Vec::new());
        }
        let (held, complete) = self.recent.range(start, end);
        if complete {
            return Ok(held.into_iter().map(|(_, entry)| entry).collect());
        }
        let mut entries = BTreeMap::new();
        let prefix = KeyPrefix::new().part(&self.partition);
        let after = start.checked_sub(1).map(|after| (self.partition, after));
        for row in self.log.scan(&prefix, after.as_ref()) {
            let ((_, index), LogRecord(entry)) = row.or_raft(StorageIOError::read_logs)?;
            if index >= end {
                break;
            }
            entries.insert(index, entry);
        }
        entries.extend(held);
        Ok(entries.into_values().collect())
    }

    fn last_entry_id(&self) -> Result<Option<LogId<u64>>> {
        if let Some(id) = self.recent.last() {
            return Ok(Some(id));
        }
        let prefix = KeyPrefix::new().part(&self.partition);
        match self.log.scan_rev(&prefix).next() {
            Some(row) => Ok(Some(*row.or_raft(StorageIOError::read_logs)?.1.0.get_log_id())),
            None => Ok(None),
        }
    }

    /// Removes the entries with index in `[from, to)` and resolves once that is durable: those
    /// in the table and those still on their way there (their removal is ordered after them).
    async fn remove_range(&self, from: u64, to: u64) -> Result<()> {
        let mut changes = WriteSet::new();
        for index in self.recent.remove(from, to) {
            changes.delete(&self.log, &(self.partition, index));
        }
        let prefix = KeyPrefix::new().part(&self.partition);
        let after = from.checked_sub(1).map(|after| (self.partition, after));
        for row in self.log.scan(&prefix, after.as_ref()) {
            let ((_, index), _) = row.or_raft(StorageIOError::read_logs)?;
            if index >= to {
                break;
            }
            changes.delete(&self.log, &(self.partition, index));
        }
        self.storage.commit(changes).await.or_raft(StorageIOError::write_logs)
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>> {
        self.read_range(range)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>> {
        let last_purged_log_id = match self.read_meta(PURGED)? {
            Some(Meta::LogId(id)) => id,
            _ => None,
        };
        let last_log_id = self.last_entry_id()?.or(last_purged_log_id);
        Ok(LogState { last_purged_log_id, last_log_id })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> Result<()> {
        self.write_meta(VOTE, Meta::Vote(*vote)).await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<u64>>> {
        match self.read_meta(VOTE)? {
            Some(Meta::Vote(vote)) => Ok(Some(vote)),
            _ => Ok(None),
        }
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<()>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<Entry<TypeConfig>> = entries.into_iter().collect();
        let mut changes = WriteSet::new();
        let mut ids = Vec::with_capacity(entries.len());
        for entry in &entries {
            let id = *entry.get_log_id();
            changes
                .put(&self.log, &(self.partition, id.index), &LogRecord(entry.clone()))
                .or_raft(StorageIOError::write_logs)?;
            ids.push(id);
        }
        self.recent.appended(entries);
        // The commit thread tells openraft itself once the entries are durable.
        let recent = self.recent.clone();
        let then = Box::new(move |outcome: serv_storage::Result<()>| {
            if outcome.is_ok() {
                recent.durable(&ids);
            }
            callback.log_io_completed(outcome.map_err(std::io::Error::other));
        });
        self.storage.stage_then(&changes, then).or_raft(StorageIOError::write_logs)
    }

    async fn truncate(&mut self, log_id: LogId<u64>) -> Result<()> {
        self.remove_range(log_id.index, u64::MAX).await
    }

    async fn purge(&mut self, log_id: LogId<u64>) -> Result<()> {
        // The purge point first: should the removal be cut short, the log still starts after it.
        self.write_meta(PURGED, Meta::LogId(Some(log_id))).await?;
        self.remove_range(0, log_id.index + 1).await
    }
}

const VOTE: &str = "vote";
pub(crate) const PURGED: &str = "purged";
