//! Hand-off: moving an entity's durable state to its new owner when the ring changes.
//!
//! Every kind keeps its state in tables keyed by the entity's name first ([`StateTable`]), so
//! an entity's state is the rows under its name in those tables, plus (for buckets) the block
//! references its records hold. The old owner evicts the entity (it finishes what it holds and
//! stops), exports its rows, sends them (after the blocks, on their own streams) to the new
//! owner, which writes them in one durable commit; only then does the old owner delete its copy.

use serde::{Deserialize, Serialize};
use serv_storage::blocks::BlockHash;
use serv_storage::{KeyPrefix, Record, Storage, StorageError, Table, TableKey, WriteSet};

use crate::placement::{MeshReply, MeshRequest};
use crate::{ActorKey, ActorKind, Directory, DirectoryError};

/// Rows as stored: (key bytes, value bytes).
pub type RawRows = Vec<(Vec<u8>, Vec<u8>)>;

/// One table of a kind's state, keyed by the entity's name (an index table) or by a tuple whose
/// first part is the name.
pub trait StateTable: Send + Sync {
    fn table_name(&self) -> &'static str;
    /// The rows of entity `name`, as stored.
    fn export(&self, name: &str) -> Result<RawRows, StorageError>;
    /// Writes a row as exported (refused unless it decodes as this table's row of `name`).
    fn import(
        &self,
        changes: &mut WriteSet,
        name: &str,
        key: &[u8],
        value: &[u8],
    ) -> Result<(), StorageError>;
    fn delete(&self, changes: &mut WriteSet, key: &[u8]);
}

fn prefix_of(name: &str) -> KeyPrefix {
    KeyPrefix::new().part(&name.to_string())
}

impl<K: TableKey, V: Record> StateTable for Table<K, V> {
    fn table_name(&self) -> &'static str {
        self.name()
    }

    fn export(&self, name: &str) -> Result<RawRows, StorageError> {
        let mut rows = self.raw_rows(&prefix_of(name))?;
        if let Some(value) = self.raw_row(name.as_bytes())? {
            rows.push((name.as_bytes().to_vec(), value));
        }
        Ok(rows)
    }

    fn import(
        &self,
        changes: &mut WriteSet,
        name: &str,
        key: &[u8],
        value: &[u8],
    ) -> Result<(), StorageError> {
        if key != name.as_bytes() && !key.starts_with(prefix_of(name).as_bytes()) {
            return Err(StorageError::Corrupt {
                table: self.name(),
                detail: "a row of another entity".into(),
            });
        }
        changes.put_raw_row(self, key, value)
    }

    fn delete(&self, changes: &mut WriteSet, key: &[u8]) {
        changes.delete_raw_row(self, key);
    }
}

/// An entity's durable state on its way to a new owner.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct EntityState {
    /// (table, key bytes, value bytes)
    pub rows: Vec<(String, Vec<u8>, Vec<u8>)>,
    /// The block references the rows hold: (block, reference owner).
    pub refs: Vec<(BlockHash, String)>,
}

impl EntityState {
    /// The distinct blocks the state references.
    pub fn blocks(&self) -> Vec<BlockHash> {
        let mut blocks: Vec<BlockHash> = self.refs.iter().map(|(hash, _)| *hash).collect();
        blocks.sort_by_key(|hash| hash.0);
        blocks.dedup();
        blocks
    }
}

/// What a kind tells the hand-off about its state.
pub trait HandOff {
    /// The kind's state tables; the first is keyed by the name alone and lists the entities.
    fn state_tables(storage: &Storage) -> Result<Vec<Box<dyn StateTable>>, StorageError>;
    /// The entities whose state this node holds.
    fn names(storage: &Storage) -> Result<Vec<String>, StorageError>;
    /// The block references held by exported rows.
    fn refs(
        _storage: &Storage,
        _rows: &[(String, Vec<u8>, Vec<u8>)],
    ) -> Result<Vec<(BlockHash, String)>, StorageError> {
        Ok(Vec::new())
    }
}

pub(crate) fn export<H: HandOff>(storage: &Storage, name: &str) -> Result<EntityState, StorageError> {
    let mut rows = Vec::new();
    for table in H::state_tables(storage)? {
        for (key, value) in table.export(name)? {
            rows.push((table.table_name().to_string(), key, value));
        }
    }
    let refs = H::refs(storage, &rows)?;
    Ok(EntityState { rows, refs })
}

pub(crate) async fn import<H: HandOff>(
    storage: &Storage,
    name: &str,
    state: &EntityState,
) -> Result<(), StorageError> {
    let tables = H::state_tables(storage)?;
    let mut changes = storage.write_set();
    for (table, key, value) in &state.rows {
        let table = tables.iter().find(|t| t.table_name() == table).ok_or_else(|| StorageError::Corrupt {
            table: "hand-off",
            detail: format!("{table} is not a state table of this kind"),
        })?;
        table.import(&mut changes, name, key, value)?;
    }
    let refs = storage.blocks().refs();
    for (hash, owner) in &state.refs {
        if storage.blocks().get(hash)?.is_none() {
            return Err(StorageError::Corrupt {
                table: "hand-off",
                detail: format!("block {hash} did not arrive"),
            });
        }
        changes.put(refs, &(*hash, owner.clone()), &serv_storage::blocks::BlockRef)?;
    }
    storage.commit(changes).await
}

pub(crate) async fn drop_state<H: HandOff>(
    storage: &Storage,
    state: &EntityState,
) -> Result<(), StorageError> {
    let tables = H::state_tables(storage)?;
    let mut changes = storage.write_set();
    for (table, key, _) in &state.rows {
        if let Some(table) = tables.iter().find(|t| t.table_name() == table) {
            table.delete(&mut changes, key);
        }
    }
    let refs = storage.blocks().refs();
    for (hash, owner) in &state.refs {
        changes.delete(refs, &(*hash, owner.clone()));
    }
    storage.commit(changes).await?;
    storage.blocks().released(state.blocks());
    Ok(())
}

impl Directory {
    /// The entities of every served kind whose state this node holds.
    pub fn local_entities(&self) -> Result<Vec<ActorKey>, DirectoryError> {
        let mut keys = Vec::new();
        for kind in ActorKind::ALL {
            if let Some(spawner) = self.hub().spawner(*kind) {
                let names =
                    spawner.names(&self.hub().storage).map_err(|e| storage_failed(kind.as_str(), e))?;
                keys.extend(names.into_iter().map(|name| ActorKey::new(*kind, name)));
            }
        }
        Ok(keys)
    }

    /// The durable state of `key` as this node holds it.
    pub fn export_state(&self, key: &ActorKey) -> Result<EntityState, DirectoryError> {
        let spawner =
            self.hub().spawner(key.kind).ok_or(DirectoryError::NotServed { kind: key.kind.to_string() })?;
        spawner.export(&self.hub().storage, &key.name).map_err(|e| storage_failed(&key.to_string(), e))
    }

    /// Sends `state` of `key` to `node`'s directory, which makes it durable before answering;
    /// `last` says this completes the entity's state there.
    pub async fn send_state(
        &self,
        node: &str,
        key: &ActorKey,
        state: EntityState,
        last: bool,
    ) -> Result<(), DirectoryError> {
        self.ask_node(node, key, &MeshRequest::Import { key: key.clone(), state, last }).await.map(drop)
    }

    /// Writes state another node handed over (the new owner's half of a hand-off).
    pub(crate) async fn import_state(&self, key: &ActorKey, state: EntityState) -> MeshReply {
        let spawner =
            self.hub().spawner(key.kind).ok_or(DirectoryError::NotServed { kind: key.kind.to_string() })?;
        if self.hub().live_incarnation(key).is_some() {
            return Err(DirectoryError::Unavailable {
                key: key.to_string(),
                reason: "the entity is already active on its new owner".into(),
            });
        }
        spawner
            .import(&self.hub().storage, &key.name, &state)
            .await
            .map_err(|e| storage_failed(&key.to_string(), e))?;
        Ok(Vec::new())
    }

    /// Deletes this node's copy of `key`'s state, once its new owner holds it.
    pub async fn drop_state(&self, key: &ActorKey, state: &EntityState) -> Result<(), DirectoryError> {
        let spawner =
            self.hub().spawner(key.kind).ok_or(DirectoryError::NotServed { kind: key.kind.to_string() })?;
        spawner.drop_state(&self.hub().storage, state).await.map_err(|e| storage_failed(&key.to_string(), e))
    }
}

fn storage_failed(what: &str, error: StorageError) -> DirectoryError {
    DirectoryError::Entity { key: what.to_string(), message: error.to_string() }
}

/// The names listed in a kind's index table (keyed by the name alone).
fn index_names<V: Record>(table: Table<String, V>) -> Result<Vec<String>, StorageError> {
    table.entries().map(|entry| entry.map(|(name, _)| name)).collect()
}

impl HandOff for crate::bucket::Bucket {
    fn state_tables(storage: &Storage) -> Result<Vec<Box<dyn StateTable>>, StorageError> {
        use crate::bucket::{BUCKETS, OBJECTS, PARTS, UPLOADS, VERSIONS};
        Ok(vec![
            Box::new(storage.table(BUCKETS)?),
            Box::new(storage.table(OBJECTS)?),
            Box::new(storage.table(VERSIONS)?),
            Box::new(storage.table(UPLOADS)?),
            Box::new(storage.table(PARTS)?),
        ])
    }

    fn names(storage: &Storage) -> Result<Vec<String>, StorageError> {
        index_names(storage.table(crate::bucket::BUCKETS)?)
    }

    fn refs(
        storage: &Storage,
        rows: &[(String, Vec<u8>, Vec<u8>)],
    ) -> Result<Vec<(BlockHash, String)>, StorageError> {
        use crate::bucket::{OBJECTS, PARTS, VERSIONS};
        let (objects, versions, parts) =
            (storage.table(OBJECTS)?, storage.table(VERSIONS)?, storage.table(PARTS)?);
        let mut refs = Vec::new();
        let mut add = |chunks: &[crate::bucket::Chunk], owner: &str| {
            refs.extend(chunks.iter().map(|chunk| (chunk.hash, owner.to_string())));
        };
        for (table, key, value) in rows {
            match table.as_str() {
                name if name == objects.name() => {
                    let (_, object) = objects.decode_raw(key, value)?;
                    add(&object.body.chunks, &object.block_owner);
                }
                name if name == versions.name() => {
                    if let (_, crate::bucket::VersionRecord { object: Some(object), .. }) =
                        versions.decode_raw(key, value)?
                    {
                        add(&object.body.chunks, &object.block_owner);
                    }
                }
                name if name == parts.name() => {
                    let (_, part) = parts.decode_raw(key, value)?;
                    add(&part.chunks, &part.block_owner);
                }
                _ => {}
            }
        }
        refs.sort_by(|a, b| (a.0.0, &a.1).cmp(&(b.0.0, &b.1)));
        refs.dedup();
        Ok(refs)
    }
}

impl HandOff for crate::topic::Topic {
    fn state_tables(storage: &Storage) -> Result<Vec<Box<dyn StateTable>>, StorageError> {
        use crate::topic::{DEDUP, LOG, TOPICS};
        Ok(vec![
            Box::new(storage.table(TOPICS)?),
            Box::new(storage.table(LOG)?),
            Box::new(storage.table(DEDUP)?),
        ])
    }

    fn names(storage: &Storage) -> Result<Vec<String>, StorageError> {
        index_names(storage.table(crate::topic::TOPICS)?)
    }
}

impl HandOff for crate::group::Group {
    fn state_tables(storage: &Storage) -> Result<Vec<Box<dyn StateTable>>, StorageError> {
        use crate::group::{GROUPS, OUTSTANDING};
        Ok(vec![Box::new(storage.table(GROUPS)?), Box::new(storage.table(OUTSTANDING)?)])
    }

    fn names(storage: &Storage) -> Result<Vec<String>, StorageError> {
        index_names(storage.table(crate::group::GROUPS)?)
    }
}

impl HandOff for crate::route::Route {
    fn state_tables(storage: &Storage) -> Result<Vec<Box<dyn StateTable>>, StorageError> {
        Ok(vec![Box::new(storage.table(crate::route::ROUTES)?)])
    }

    fn names(storage: &Storage) -> Result<Vec<String>, StorageError> {
        index_names(storage.table(crate::route::ROUTES)?)
    }
}

impl HandOff for crate::module::Module {
    fn state_tables(storage: &Storage) -> Result<Vec<Box<dyn StateTable>>, StorageError> {
        use crate::module::{MODULE_BINARIES, MODULES};
        Ok(vec![Box::new(storage.table(MODULES)?), Box::new(storage.table(MODULE_BINARIES)?)])
    }

    fn names(storage: &Storage) -> Result<Vec<String>, StorageError> {
        index_names(storage.table(crate::module::MODULES)?)
    }
}
