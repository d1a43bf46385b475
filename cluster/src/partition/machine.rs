//! A partition's state machine: the node's own tables, to which committed write sets are applied.
//!
//! Entities read the same tables they always did; what changes is who writes them: an entry's
//! write set is applied here once the partition's log has committed it. Applying needs no fsync
//! of its own: the entry is already durable in the log, and the applied point is written in the
//! same batch as the changes, so after a crash the partition resumes from a consistent point and
//! openraft re-applies the committed entries past it.
//!
//! A snapshot of a partition is those same tables as of its applied point, so building one costs
//! one fsync (the applied point becomes durable, and with it everything the log up to there said);
//! nothing is copied. The rows are read out only when a snapshot must travel to another replica.

use std::sync::Arc;

use openraft::storage::RaftStateMachine;
use openraft::{
    EmptyNode, Entry, EntryPayload, LogId, RaftSnapshotBuilder, Snapshot, SnapshotMeta, StorageError,
    StorageIOError, StoredMembership,
};
use serv_storage::{Storage, Table, WriteSet};

use super::recent::Recent;
use super::{Meta, MetaKey, OrRaft, PartitionSnapshot, TypeConfig, meta_table};

type Result<T> = std::result::Result<T, StorageError<u64>>;

pub(crate) const APPLIED: &str = "applied";
pub(crate) const SNAPSHOT: &str = "snapshot";

/// A partition's rows and the log point they are the state of, read at one instant: what a
/// replica that is behind the log installs.
pub(crate) fn read_out(
    storage: &Storage,
    partition: u64,
    max_bytes: usize,
) -> serv_storage::Result<(SnapshotMeta<u64, EmptyNode>, Vec<serv_storage::OwnedRow>)> {
    let meta = meta_table(storage)?;
    let view = storage.view();
    let applied = view.get(&meta, &(partition, APPLIED.to_string()))?;
    let rows = view.owned_rows(partition, max_bytes)?;
    Ok((snapshot_meta(partition, applied, "sent"), rows))
}

/// The applied point and its membership, from the stored `Applied` fact (none yet: nothing).
fn applied_point(stored: Option<Meta>) -> (Option<LogId<u64>>, StoredMembership<u64, EmptyNode>) {
    match stored {
        Some(Meta::Applied { last, membership }) => (last, membership),
        _ => (None, StoredMembership::default()),
    }
}

/// The meta of a snapshot of `partition` at its stored applied point; `origin` tells a snapshot
/// built here from one read out to be sent.
fn snapshot_meta(partition: u64, applied: Option<Meta>, origin: &str) -> SnapshotMeta<u64, EmptyNode> {
    let (last_log_id, last_membership) = applied_point(applied);
    let snapshot_id = match last_log_id {
        Some(id) => format!("{partition}-{}-{}-{origin}", id.leader_id, id.index),
        None => format!("{partition}-empty-{origin}"),
    };
    SnapshotMeta { last_log_id, last_membership, snapshot_id }
}

/// The state machine of one partition.
#[derive(Clone)]
pub(crate) struct StateMachine {
    partition: u64,
    storage: Storage,
    meta: Table<MetaKey, Meta>,
    /// The applied point and the membership in force there, as last written.
    applied: (Option<LogId<u64>>, StoredMembership<u64, EmptyNode>),
    /// The log's entries in memory, which need not stay there once applied.
    recent: Arc<Recent>,
}

impl StateMachine {
    pub(crate) fn open(storage: &Storage, partition: u64, recent: Arc<Recent>) -> serv_storage::Result<Self> {
        let meta = meta_table(storage)?;
        let applied = applied_point(meta.get(&(partition, APPLIED.to_string()))?);
        Ok(Self { partition, storage: storage.local(), meta, applied, recent })
    }

    fn key(&self, field: &str) -> MetaKey {
        (self.partition, field.to_string())
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = StateMachine;

    async fn applied_state(&mut self) -> Result<(Option<LogId<u64>>, StoredMembership<u64, EmptyNode>)> {
        Ok(self.applied.clone())
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<()>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let mut changes = WriteSet::new();
        let mut replies = Vec::new();
        let (mut last, mut membership) = self.applied.clone();
        #[cfg(test)]
        let mut steps = Vec::new();
        for entry in entries {
            assert!(
                Some(entry.log_id) > last,
                "partition {}: entry {} applied after {:?}: the applied point must only move forward",
                self.partition,
                entry.log_id,
                last
            );
            #[cfg(test)]
            steps.push(observed::Applied::of(&self.storage, self.partition, &entry));
            match entry.payload {
                EntryPayload::Blank => {}
                EntryPayload::Normal(set) => {
                    // The partition's row index moves with its rows, so that a snapshot can
                    // read out exactly what this log wrote.
                    let index = set.owned_by(self.partition);
                    changes.extend(set);
                    changes.extend(index);
                }
                EntryPayload::Membership(config) => {
                    membership = StoredMembership::new(Some(entry.log_id), config);
                }
            }
            last = Some(entry.log_id);
            replies.push(());
        }
        if replies.is_empty() {
            return Ok(replies);
        }
        let applied = Meta::Applied { last, membership: membership.clone() };
        changes.put(&self.meta, &self.key(APPLIED), &applied).or_raft(StorageIOError::write_state_machine)?;
        self.storage
            .apply_unsynced(&changes)
            .or_raft(StorageIOError::write_state_machine)?
            .await
            .or_raft(StorageIOError::write_state_machine)?;
        if let Some(last) = last {
            self.recent.applied(last.index);
        }
        self.applied = (last, membership);
        #[cfg(test)]
        observed::record(steps);
        Ok(replies)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<PartitionSnapshot>> {
        Ok(Box::new(PartitionSnapshot::Rows(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, EmptyNode>,
        snapshot: Box<PartitionSnapshot>,
    ) -> Result<()> {
        let fail = |e: &dyn std::fmt::Display| {
            StorageError::from(StorageIOError::write_snapshot(
                Some(meta.signature()),
                &std::io::Error::other(format!("partition {}: {e}", self.partition)),
            ))
        };
        let PartitionSnapshot::Rows(rows) = *snapshot else {
            return Err(fail(&"a snapshot to install must carry its rows"));
        };
        // Everything this replica held of the partition goes, the leader's rows come, and the
        // applied point moves to the snapshot's, in one batch, durable before openraft drops
        // the log behind it.
        let mut changes = self.storage.replace_owned(self.partition, rows).map_err(|e| fail(&e))?;
        let applied = Meta::Applied { last: meta.last_log_id, membership: meta.last_membership.clone() };
        changes.put(&self.meta, &self.key(APPLIED), &applied).map_err(|e| fail(&e))?;
        changes.put(&self.meta, &self.key(SNAPSHOT), &Meta::Snapshot(meta.clone())).map_err(|e| fail(&e))?;
        self.storage.commit(changes).await.map_err(|e| fail(&e))?;
        if let Some(last) = meta.last_log_id {
            self.recent.applied(last.index);
        }
        self.applied = (meta.last_log_id, meta.last_membership.clone());
        #[cfg(test)]
        observed::record(vec![observed::Applied::snapshot(&self.storage, self.partition, meta.last_log_id)]);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>> {
        match self.meta.get(&self.key(SNAPSHOT)).or_raft(|e| StorageIOError::read_snapshot(None, e))? {
            Some(Meta::Snapshot(meta)) => {
                Ok(Some(Snapshot { meta, snapshot: Box::new(PartitionSnapshot::Here) }))
            }
            _ => Ok(None),
        }
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>> {
        // The applied point as written now (apply may have moved on since this builder was
        // made: a snapshot may cover more than asked, never less).
        let applied = self.meta.get(&self.key(APPLIED)).or_raft(StorageIOError::read_state_machine)?;
        let meta = snapshot_meta(self.partition, applied, "built");
        // The snapshot's record is committed with an fsync, which makes everything applied up to
        // there durable too, before openraft may drop the log behind it.
        let mut changes = WriteSet::new();
        changes
            .put(&self.meta, &self.key(SNAPSHOT), &Meta::Snapshot(meta.clone()))
            .or_raft(|e| StorageIOError::write_snapshot(Some(meta.signature()), e))?;
        self.storage
            .commit(changes)
            .await
            .or_raft(|e| StorageIOError::write_snapshot(Some(meta.signature()), e))?;
        Ok(Snapshot { meta, snapshot: Box::new(PartitionSnapshot::Here) })
    }
}

/// What every state machine of this process applied, in the order each applied it (tests only):
/// the simulation checks that replicas agree on what each index holds and that no write is
/// applied twice.
#[cfg(test)]
pub(crate) mod observed {
    use std::hash::{DefaultHasher, Hash, Hasher};
    use std::sync::{Mutex, PoisonError};

    use openraft::{Entry, EntryPayload, LogId};
    use serv_storage::{Storage, WriteSet, codec};

    use crate::partition::TypeConfig;

    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub(crate) enum Step {
        Blank,
        Membership,
        /// A write set, by a hash of its encoding.
        Write(u64),
        /// The replica's rows were replaced by a snapshot up to the log id.
        Snapshot,
    }

    #[derive(Clone, Debug)]
    pub(crate) struct Applied {
        pub node: String,
        pub partition: u64,
        pub log_id: Option<LogId<u64>>,
        pub step: Step,
    }

    static APPLIED: Mutex<Vec<Applied>> = Mutex::new(Vec::new());

    impl Applied {
        pub(crate) fn of(storage: &Storage, partition: u64, entry: &Entry<TypeConfig>) -> Self {
            let step = match &entry.payload {
                EntryPayload::Blank => Step::Blank,
                EntryPayload::Membership(_) => Step::Membership,
                EntryPayload::Normal(set) => Step::Write(hash_of(set)),
            };
            Self { node: storage.node_id().to_string(), partition, log_id: Some(entry.log_id), step }
        }

        pub(crate) fn snapshot(storage: &Storage, partition: u64, log_id: Option<LogId<u64>>) -> Self {
            Self { node: storage.node_id().to_string(), partition, log_id, step: Step::Snapshot }
        }
    }

    /// A write set, known by a hash of its encoding.
    pub(crate) fn hash_of(set: &WriteSet) -> u64 {
        let mut hasher = DefaultHasher::new();
        codec::encode(set).expect("a logged write set encodes").hash(&mut hasher);
        hasher.finish()
    }

    pub(crate) fn record(steps: Vec<Applied>) {
        APPLIED.lock().unwrap_or_else(PoisonError::into_inner).extend(steps);
    }

    /// Everything applied since the last call, which forgets it.
    pub(crate) fn take() -> Vec<Applied> {
        std::mem::take(&mut *APPLIED.lock().unwrap_or_else(PoisonError::into_inner))
    }
}
