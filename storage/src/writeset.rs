//! Write sets: the changes one commit applies atomically, as plain data.
//!
//! A [`WriteSet`] names its rows by keyspace name and key bytes rather than holding database
//! handles, so the same set can be committed on this node, or encoded into a partition's
//! replicated log and applied, in the same order, on every replica. The [`Keyspaces`] registry
//! turns the names back into open keyspaces when a set is applied.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{PoisonError, RwLock};

use serde::{Deserialize, Serialize};

use crate::key::key_bytes;
use crate::{Record, Result, StorageError, Table, TableKey};

/// One change of a [`WriteSet`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum Op {
    /// Store `value` under `key`.
    Put {
        keyspace: Cow<'static, str>,
        #[serde(with = "crate::codec::serde_bytes")]
        key: Vec<u8>,
        /// Shared, not copied, by the clones a replicated log makes of an entry.
        value: bytes::Bytes,
    },
    /// Remove `key`.
    Delete {
        keyspace: Cow<'static, str>,
        #[serde(with = "crate::codec::serde_bytes")]
        key: Vec<u8>,
    },
}

/// A set of changes applied atomically by [`crate::Storage::commit`]: plain data that can be
/// encoded, replicated and applied elsewhere.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteSet {
    ops: Vec<Op>,
}

impl WriteSet {
    /// A new, empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Stores `value` under `key` in `table`.
    pub fn put<K: TableKey, V: Record>(&mut self, table: &Table<K, V>, key: &K, value: &V) -> Result<()> {
        let value = table.encode_value(value)?;
        self.ops.push(Op::Put {
            keyspace: Cow::Borrowed(table.name()),
            key: key_bytes(key),
            value: value.into(),
        });
        Ok(())
    }

    /// Removes `key` from `table`.
    pub fn delete<K: TableKey, V: Record>(&mut self, table: &Table<K, V>, key: &K) {
        self.ops.push(Op::Delete { keyspace: Cow::Borrowed(table.name()), key: key_bytes(key) });
    }

    /// Every change as (keyspace, key, true for a put or false for a removal).
    pub(crate) fn rows(&self) -> impl Iterator<Item = (&str, &[u8], bool)> {
        self.ops.iter().map(|op| match op {
            Op::Put { keyspace, key, .. } => (keyspace.as_ref(), key.as_slice(), true),
            Op::Delete { keyspace, key } => (keyspace.as_ref(), key.as_slice(), false),
        })
    }

    /// Stores raw bytes under raw key bytes in a keyspace of the storage layer's own.
    pub(crate) fn put_bytes(&mut self, keyspace: &'static str, key: Vec<u8>, value: bytes::Bytes) {
        self.ops.push(Op::Put { keyspace: Cow::Borrowed(keyspace), key, value });
    }

    /// Removes raw key bytes from a keyspace of the storage layer's own.
    pub(crate) fn delete_bytes(&mut self, keyspace: &'static str, key: Vec<u8>) {
        self.ops.push(Op::Delete { keyspace: Cow::Borrowed(keyspace), key });
    }

    /// Stores a row of a keyspace named at run time (a row from another replica).
    pub(crate) fn put_bytes_owned(&mut self, keyspace: String, key: Vec<u8>, value: bytes::Bytes) {
        self.ops.push(Op::Put { keyspace: Cow::Owned(keyspace), key, value });
    }

    /// Removes a row of a keyspace named at run time.
    pub(crate) fn delete_bytes_owned(&mut self, keyspace: String, key: Vec<u8>) {
        self.ops.push(Op::Delete { keyspace: Cow::Owned(keyspace), key });
    }

    /// Appends every change of `other` after this set's own.
    pub fn extend(&mut self, other: WriteSet) {
        self.ops.extend(other.ops);
    }

    /// True if the set changes nothing.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Bytes of the keys and values the set holds.
    pub fn bytes(&self) -> usize {
        self.ops
            .iter()
            .map(|op| match op {
                Op::Put { key, value, .. } => key.len() + value.len(),
                Op::Delete { key, .. } => key.len(),
            })
            .sum()
    }

    /// How many changes the set holds.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// The set's changes as one fjall batch (not yet committed), keyspaces resolved by name.
    pub(crate) fn to_batch(&self, keyspaces: &Keyspaces) -> Result<fjall::OwnedWriteBatch> {
        let mut batch = keyspaces.db.batch().durability(None);
        for op in &self.ops {
            match op {
                Op::Put { keyspace, key, value } => {
                    batch.insert(&keyspaces.resolve(keyspace)?, key.as_slice(), value.as_ref())
                }
                Op::Delete { keyspace, key } => batch.remove(&keyspaces.resolve(keyspace)?, key.as_slice()),
            }
        }
        Ok(batch)
    }
}

impl WriteSet {
    /// Applies the set and syncs the journal on this thread, outside the group (start-up only).
    pub(crate) fn commit_synced(&self, keyspaces: &Keyspaces) -> Result<()> {
        self.to_batch(keyspaces)?
            .durability(Some(fjall::PersistMode::SyncAll))
            .commit()
            .map_err(|e| StorageError::Commit(e.to_string()))
    }
}

/// The database's open keyspaces by name, so that a [`WriteSet`] decoded from a log (which names
/// its keyspaces) can be applied. A keyspace is registered when its table opens; a name never
/// seen on this node opens as a plain table keyspace.
pub(crate) struct Keyspaces {
    pub(crate) db: fjall::Database,
    open: RwLock<HashMap<String, fjall::Keyspace>>,
}

impl Keyspaces {
    pub(crate) fn new(db: fjall::Database) -> Self {
        Self { db, open: RwLock::default() }
    }

    /// Remembers `keyspace`, opened by its owner with its own options, under `name`.
    pub(crate) fn register(&self, name: &str, keyspace: &fjall::Keyspace) {
        self.open
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(name.to_string())
            .or_insert_with(|| keyspace.clone());
    }

    pub(crate) fn resolve(&self, name: &str) -> Result<fjall::Keyspace> {
        if let Some(keyspace) = self.open.read().unwrap_or_else(PoisonError::into_inner).get(name) {
            return Ok(keyspace.clone());
        }
        let keyspace = self
            .db
            .keyspace(name, fjall::KeyspaceCreateOptions::default)
            .map_err(|source| StorageError::Io { table: "keyspace registry", source })?;
        self.register(name, &keyspace);
        Ok(keyspace)
    }
}
