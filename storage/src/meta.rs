//! Node metadata kept in storage: the node's stable id.

use serde::{Deserialize, Serialize};

use crate::{Record, Result, Storage, TableDef};

/// Node-level facts, keyed by name.
const META: TableDef<String, MetaValue> = TableDef::new("meta");
const NODE_ID: &str = "node_id";

#[derive(Serialize, Deserialize)]
enum MetaValue {
    NodeId(String),
}

impl Record for MetaValue {
    const FORMAT: u8 = 1;
}

/// Reads the node id, creating and durably storing a random one on first start.
pub(crate) fn load_or_create_node_id(storage: &Storage) -> Result<String> {
    let meta = storage.table(META)?;
    if let Some(MetaValue::NodeId(id)) = meta.get(&NODE_ID.to_string())? {
        return Ok(id);
    }
    let id = format!("{:016x}", rand::random::<u64>());
    let mut changes = storage.write_set();
    changes.put(&meta, &NODE_ID.to_string(), &MetaValue::NodeId(id.clone()))?;
    // The node id must be durable before anything is built on it.
    changes.commit_synced()?;
    Ok(id)
}
