//! Rows owned by a replicated log: an index of every row a partition's log wrote, so that the
//! partition's whole state can be read out at one instant (a snapshot for a replica that is
//! behind) and replaced by another replica's (installing that snapshot).
//!
//! The index lives in its own keyspace, keyed by the owner (a partition number, big-endian),
//! then the row's keyspace name and `0x00`, then the row's key; values are empty. The log's
//! state machine writes the index changes in the same batch as the rows they index, so the two
//! never disagree.

use bytes::Bytes;
use fjall::Readable;
use serde::{Deserialize, Serialize};

use crate::writeset::Keyspaces;
use crate::{Result, StorageError, Table, TableKey, WriteSet};

/// The keyspace of the index.
pub(crate) const OWNED_ROWS: &str = "owned_rows";

/// One row of an owner's state, as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnedRow {
    pub keyspace: String,
    #[serde(with = "crate::codec::serde_bytes")]
    pub key: Vec<u8>,
    pub value: Bytes,
}

fn index_key(owner: u64, keyspace: &str, key: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(8 + keyspace.len() + 1 + key.len());
    bytes.extend_from_slice(&owner.to_be_bytes());
    bytes.extend_from_slice(keyspace.as_bytes());
    bytes.push(0);
    bytes.extend_from_slice(key);
    bytes
}

/// The row an index key names: its keyspace and key.
fn parse_index_key(bytes: &[u8]) -> Option<(&str, &[u8])> {
    let rest = bytes.get(8..)?;
    let split = rest.iter().position(|b| *b == 0)?;
    Some((std::str::from_utf8(&rest[..split]).ok()?, &rest[split + 1..]))
}

impl WriteSet {
    /// The changes that keep `owner`'s row index in step with this set: one index entry put for
    /// each row put, one removed for each row removed.
    pub fn owned_by(&self, owner: u64) -> WriteSet {
        let mut index = WriteSet::new();
        for (keyspace, key, put) in self.rows() {
            let entry = index_key(owner, keyspace, key);
            match put {
                true => index.put_bytes(OWNED_ROWS, entry, Bytes::new()),
                false => index.delete_bytes(OWNED_ROWS, entry),
            }
        }
        index
    }
}

/// An instant of the database, read consistently across tables.
pub struct View<'a> {
    keyspaces: &'a Keyspaces,
    snapshot: fjall::Snapshot,
}

impl<'a> View<'a> {
    pub(crate) fn new(keyspaces: &'a Keyspaces) -> Self {
        Self { keyspaces, snapshot: keyspaces.db.snapshot() }
    }

    /// The record stored under `key` in `table` at this instant.
    pub fn get<K: TableKey, V: crate::Record>(&self, table: &Table<K, V>, key: &K) -> Result<Option<V>> {
        let keyspace = self.keyspaces.resolve(table.name())?;
        let bytes = self
            .snapshot
            .get(&keyspace, crate::key::key_bytes(key))
            .map_err(|source| StorageError::Io { table: table.name(), source })?;
        bytes.map(|bytes| table.decode_value(&bytes)).transpose()
    }

    /// Every row `owner` holds at this instant; fails once their encoded size would pass
    /// `max_bytes`.
    pub fn owned_rows(&self, owner: u64, max_bytes: usize) -> Result<Vec<OwnedRow>> {
        let index = self.keyspaces.resolve(OWNED_ROWS)?;
        let mut rows = Vec::new();
        let mut size = 0usize;
        for guard in self.snapshot.prefix(&index, owner.to_be_bytes()) {
            let entry = guard.key().map_err(|source| StorageError::Io { table: OWNED_ROWS, source })?;
            let (keyspace, key) = parse_index_key(&entry).ok_or_else(|| StorageError::Corrupt {
                table: OWNED_ROWS,
                detail: "an index key that names no row".into(),
            })?;
            let source = self.keyspaces.resolve(keyspace)?;
            let value = self
                .snapshot
                .get(&source, key)
                .map_err(|source| StorageError::Io { table: OWNED_ROWS, source })?;
            // Indexed in the same batch as the row: a missing row is a broken invariant.
            let value = value.ok_or_else(|| StorageError::Corrupt {
                table: OWNED_ROWS,
                detail: format!("indexed row of {keyspace} is missing"),
            })?;
            size += keyspace.len() + key.len() + value.len() + 16;
            if size > max_bytes {
                return Err(StorageError::TooLarge {
                    what: format!("the rows of owner {owner}"),
                    limit: max_bytes,
                });
            }
            rows.push(OwnedRow {
                keyspace: keyspace.to_string(),
                key: key.to_vec(),
                value: Bytes::from(value.to_vec()),
            });
        }
        Ok(rows)
    }
}

/// The keys of `table` that `owner` holds, from the index alone (no row is read).
pub(crate) fn owned_keys<K: crate::TableKey, V: crate::Record>(
    keyspaces: &Keyspaces,
    owner: u64,
    table: &Table<K, V>,
) -> Result<Vec<K>> {
    let index = keyspaces.resolve(OWNED_ROWS)?;
    let prefix = index_key(owner, table.name(), &[]);
    let mut keys = Vec::new();
    for guard in index.prefix(&prefix) {
        let entry = guard.key().map_err(|source| StorageError::Io { table: OWNED_ROWS, source })?;
        let key = K::decode_key(&entry[prefix.len()..])
            .ok_or_else(|| StorageError::Corrupt { table: table.name(), detail: "undecodable key".into() })?;
        keys.push(key);
    }
    Ok(keys)
}

/// The changes that replace everything `owner` holds now with `rows` (and index them).
pub(crate) fn replace_owned(keyspaces: &Keyspaces, owner: u64, rows: Vec<OwnedRow>) -> Result<WriteSet> {
    let index = keyspaces.resolve(OWNED_ROWS)?;
    let mut changes = WriteSet::new();
    for guard in index.prefix(owner.to_be_bytes()) {
        let entry = guard.key().map_err(|source| StorageError::Io { table: OWNED_ROWS, source })?;
        if let Some((keyspace, key)) = parse_index_key(&entry) {
            changes.delete_bytes_owned(keyspace.to_string(), key.to_vec());
        }
        changes.delete_bytes(OWNED_ROWS, entry.to_vec());
    }
    for row in rows {
        changes.put_bytes(OWNED_ROWS, index_key(owner, &row.keyspace, &row.key), Bytes::new());
        changes.put_bytes_owned(row.keyspace, row.key, row.value);
    }
    Ok(changes)
}
