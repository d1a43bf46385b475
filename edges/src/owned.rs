//! Listings across the cluster. An entity's table rows live on the node that owns it, so a list
//! of every bucket or every topic is this node's rows plus every other node's, asked over the
//! mesh with a directory query named after the table.

use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serv_actors::Directory;
use serv_storage::{Record, Table, TableKey};

/// Answers other nodes' listings of `table` with this node's rows.
pub fn share<K: TableKey + Serialize + DeserializeOwned + Ord, V: Record>(
    directory: &Directory,
    table: Table<K, V>,
) {
    let query = format!("rows/{}", table.name());
    directory.register_query(
        &query,
        Arc::new(move |_| {
            let rows =
                local(&table).and_then(|rows| serv_storage::codec::encode(&rows).map_err(|e| e.to_string()));
            Box::pin(std::future::ready(rows))
        }),
    );
}

/// Every row of `table` on every node that is up, sorted by key; or the first node that could
/// not answer, and why (a partial listing would look complete).
pub async fn everywhere<K: TableKey + Serialize + DeserializeOwned + Ord, V: Record>(
    directory: &Directory,
    table: &Table<K, V>,
) -> Result<Vec<(K, V)>, String> {
    let mut rows = Vec::new();
    for (node, answer) in by_node(directory, table).await {
        rows.extend(
            answer.map_err(|reason| format!("node {node} could not list its {}: {reason}", table.name()))?,
        );
    }
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(rows)
}

/// The rows of `table` of this node (first) and of every other node that is up, each node's
/// answer on its own: a caller can keep what it knew of a node that did not answer.
pub async fn by_node<K: TableKey + Serialize + DeserializeOwned + Ord, V: Record>(
    directory: &Directory,
    table: &Table<K, V>,
) -> Vec<(String, Result<Vec<(K, V)>, String>)> {
    let mut answers = vec![(directory.node_id().to_string(), local(table))];
    for (node, answer) in directory.query_peers(&format!("rows/{}", table.name()), Vec::new()).await {
        let theirs =
            answer.and_then(|a| serv_storage::codec::decode::<Vec<(K, V)>>(&a).map_err(|e| e.to_string()));
        answers.push((node, theirs));
    }
    answers
}

fn local<K: TableKey + Serialize + DeserializeOwned + Ord, V: Record>(
    table: &Table<K, V>,
) -> Result<Vec<(K, V)>, String> {
    table.entries().map(|entry| entry.map_err(|e| e.to_string())).collect()
}
