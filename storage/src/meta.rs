//! Node metadata kept in storage: the node's stable id.

use serde::{Deserialize, Serialize};

use crate::writeset::Keyspaces;
use crate::{Record, Result, Table, TableDef, WriteSet};

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
pub(crate) fn load_or_create_node_id(keyspaces: &Keyspaces) -> Result<String> {
    let meta = Table::open(keyspaces, META)?;
    if let Some(MetaValue::NodeId(id)) = meta.get(&NODE_ID.to_string())? {
        return Ok(id);
    }
    let id = format!("{:016x}", rand::random::<u64>());
    let mut changes = WriteSet::new();
    changes.put(&meta, &NODE_ID.to_string(), &MetaValue::NodeId(id.clone()))?;
    // The node id must be durable before anything is built on it.
    changes.commit_synced(keyspaces)?;
    Ok(id)
}
