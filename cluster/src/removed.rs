//! Members an operator removed (`DELETE /v1/cluster/members/ID`): a dead node that is not coming
//! back, whose id must leave the ring so that its partitions are re-replicated on the others.
//!
//! A removal is a tombstone, kept for ever in every node's storage: the set only grows, so
//! nodes merge theirs by union in any order. The node that takes the request pushes it to the
//! others, and each node pulls the others' now and then, so one that was down learns it too.
//! The membership view the ring, the replica sets and the admin API read leaves removed members
//! out, whatever SWIM or the remembered members still say of them.

use std::collections::BTreeMap;
use std::sync::{Arc, PoisonError, RwLock};

use serde::{Deserialize, Serialize};
use serv_storage::{Record, Storage, Table, TableDef};
use tokio::sync::watch;

const REMOVED_MEMBERS: TableDef<String, Removed> = TableDef::new("cluster_removed_members");

#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
struct Removed {
    at_ms: u64,
}

impl Record for Removed {
    const FORMAT: u8 = 1;
}

/// This node's set of removed members (node id → when it was removed, Unix ms). Cheap to clone.
#[derive(Clone)]
pub struct RemovedMembers {
    storage: Storage,
    table: Table<String, Removed>,
    known: Arc<RwLock<BTreeMap<String, u64>>>,
    /// Bumped after every change, once it is durable.
    changed: Arc<watch::Sender<u64>>,
}

impl RemovedMembers {
    /// The removals stored in `storage`.
    pub fn open(storage: &Storage) -> serv_storage::Result<Self> {
        let table = storage.table(REMOVED_MEMBERS)?;
        let mut known = BTreeMap::new();
        for entry in table.entries() {
            let (id, removed) = entry?;
            known.insert(id, removed.at_ms);
        }
        Ok(Self {
            storage: storage.clone(),
            table,
            known: Arc::new(RwLock::new(known)),
            changed: Arc::new(watch::channel(0).0),
        })
    }

    /// True when `id` was removed.
    pub fn contains(&self, id: &str) -> bool {
        self.known.read().unwrap_or_else(PoisonError::into_inner).contains_key(id)
    }

    /// Every removal: (node id, removed at, Unix ms).
    pub fn list(&self) -> Vec<(String, u64)> {
        let known = self.known.read().unwrap_or_else(PoisonError::into_inner);
        known.iter().map(|(id, at)| (id.clone(), *at)).collect()
    }

    /// Adds the removals this node lacks, durably; answers how many were new.
    pub async fn merge(&self, removals: Vec<(String, u64)>) -> serv_storage::Result<usize> {
        let new: Vec<(String, u64)> = removals.into_iter().filter(|(id, _)| !self.contains(id)).collect();
        if new.is_empty() {
            return Ok(0);
        }
        let mut changes = self.storage.write_set();
        for (id, at_ms) in &new {
            changes.put(&self.table, id, &Removed { at_ms: *at_ms })?;
        }
        self.storage.commit(changes).await?;
        let mut known = self.known.write().unwrap_or_else(PoisonError::into_inner);
        for (id, at_ms) in &new {
            known.insert(id.clone(), *at_ms);
        }
        drop(known);
        self.changed.send_modify(|version| *version += 1);
        Ok(new.len())
    }

    /// Changes whenever a removal was added.
    pub fn watch(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn removals_are_durable_merge_by_union_and_are_announced() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(dir.path(), serv_storage::StorageOptions::default()).unwrap();
        let removed = RemovedMembers::open(&storage).unwrap();
        let mut changes = removed.watch();
        assert_eq!(removed.merge(vec![("a".into(), 1), ("b".into(), 2)]).await.unwrap(), 2);
        assert!(changes.has_changed().unwrap(), "a change is announced");
        changes.mark_unchanged();
        assert_eq!(removed.merge(vec![("b".into(), 9), ("c".into(), 3)]).await.unwrap(), 1, "only c is new");
        assert_eq!(removed.merge(vec![("a".into(), 5)]).await.unwrap(), 0);
        assert_eq!(removed.list(), vec![("a".into(), 1), ("b".into(), 2), ("c".into(), 3)]);
        drop(removed);
        drop(storage);
        let storage = Storage::open(dir.path(), serv_storage::StorageOptions::default()).unwrap();
        let reopened = RemovedMembers::open(&storage).unwrap();
        assert!(reopened.contains("a") && reopened.contains("c") && !reopened.contains("d"));
    }
}
