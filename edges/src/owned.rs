//! Listings and queries across the cluster. An entity's table rows live on the replicas of its
//! partition, so a list of every bucket or every topic is this node's rows plus every other
//! node's, asked over the mesh with a directory query named after the table, with the copies
//! that several replicas hold listed once. [`answer`] and
//! [`ask_peers`] are the typed sides of any directory query (bytes through our codec).

use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serv_actors::Directory;
use serv_storage::{Record, Table, TableKey};

/// Answers the directory query `name` from other nodes with what `respond` makes of its
/// arguments, encoded.
pub fn answer<T: Serialize>(
    directory: &Directory,
    name: &str,
    respond: impl Fn(&[u8]) -> Result<T, String> + Send + Sync + 'static,
) {
    directory.register_query(
        name,
        Arc::new(move |args| {
            let answer =
                respond(&args).and_then(|t| serv_storage::codec::encode(&t).map_err(|e| e.to_string()));
            Box::pin(std::future::ready(answer))
        }),
    );
}

/// Answers the directory query `name` from other nodes by decoding its argument and handing it
/// to `apply`; the answer is empty once applied.
pub fn accept<T, Applied>(
    directory: &Directory,
    name: &str,
    apply: impl Fn(T) -> Applied + Send + Sync + 'static,
) where
    T: DeserializeOwned,
    Applied: std::future::Future<Output = Result<(), String>> + Send + 'static,
{
    directory.register_query(
        name,
        Arc::new(move |args| {
            let applied = serv_storage::codec::decode::<T>(&args).map(&apply).map_err(|e| e.to_string());
            Box::pin(async move { applied?.await.map(|()| Vec::new()) })
        }),
    );
}

/// Asks every other node that is up the directory query `name`: each node's decoded answer, or
/// why there is none.
pub async fn ask_peers<T: DeserializeOwned>(
    directory: &Directory,
    name: &str,
    args: Vec<u8>,
) -> Vec<(String, Result<T, String>)> {
    let answers = directory.query_peers(name, args).await;
    let decode = |answer: Vec<u8>| serv_storage::codec::decode(&answer).map_err(|e| e.to_string());
    answers.into_iter().map(|(node, answer)| (node, answer.and_then(decode))).collect()
}

/// A set every node keeps whole by merging what the others hold (access keys, member
/// removals): a change is pushed to the other nodes that are up ([`push`]), and each node pulls
/// the others' sets ([`keep_merged`]), so a node that was down catches up.
pub trait Merged: Clone + Send + Sync + 'static {
    /// What one node sends another: its whole set, or the change it pushes.
    type Sync: Serialize + DeserializeOwned + Send + 'static;
    /// Names the set's directory queries (`{NAME}/export`, `{NAME}/merge`) and its log lines.
    const NAME: &'static str;
    fn export(&self) -> Result<Self::Sync, String>;
    /// Merges `from` durably; how many entries it changed.
    fn merge(&self, from: Self::Sync) -> impl std::future::Future<Output = Result<usize, String>> + Send;
}

/// Answers the other nodes' pulls and pushes of `set`, and pulls theirs: every second until
/// some node has answered (a node that just started catches up at once), then every `every`.
pub fn keep_merged<S: Merged>(directory: &Directory, set: S, every: std::time::Duration) {
    let exporting = set.clone();
    answer(directory, &format!("{}/export", S::NAME), move |_| exporting.export());
    let merging = set.clone();
    accept(directory, &format!("{}/merge", S::NAME), move |sync: S::Sync| {
        let set = merging.clone();
        async move { set.merge(sync).await.map(drop) }
    });
    let directory = directory.clone();
    tokio::spawn(async move {
        let mut heard = false;
        loop {
            tokio::time::sleep(if heard { every } else { std::time::Duration::from_secs(1) }).await;
            heard |= pull(&directory, &set).await;
        }
    });
}

/// Merges what every other node holds into `set`; true if any node answered.
async fn pull<S: Merged>(directory: &Directory, set: &S) -> bool {
    let mut heard = false;
    for (node, sync) in ask_peers::<S::Sync>(directory, &format!("{}/export", S::NAME), Vec::new()).await {
        heard |= sync.is_ok();
        match sync {
            Ok(sync) => match set.merge(sync).await {
                Ok(0) => {}
                Ok(changes) => {
                    tracing::info!(%node, changes, set = S::NAME, "merged what another node holds")
                }
                Err(error) => {
                    tracing::warn!(%node, %error, set = S::NAME, "what another node holds not merged")
                }
            },
            Err(error) => tracing::debug!(%node, %error, set = S::NAME, "nothing pulled from another node"),
        }
    }
    heard
}

/// Pushes `change` of a [`Merged`] set to every other node that is up (best effort: the nodes'
/// pulls repair whatever this misses).
pub async fn push<S: Merged>(directory: &Directory, change: &S::Sync) {
    let Ok(args) = serv_storage::codec::encode(change) else { return };
    for (node, answer) in directory.query_peers(&format!("{}/merge", S::NAME), args).await {
        if let Err(error) = answer {
            tracing::warn!(%node, %error, set = S::NAME, "change not pushed; the node will pull it");
        }
    }
}

/// Answers other nodes' listings of `table` with this node's rows.
pub fn share<K: TableKey + Serialize + DeserializeOwned + Ord, V: Record>(
    directory: &Directory,
    table: Table<K, V>,
) {
    answer(directory, &format!("rows/{}", table.name()), move |_| local(&table));
}

/// Every row of `table` on every node that is up, sorted by key, each key once (the first
/// node's copy: this node's, when it holds one); or the first node that could not answer, and
/// why (a partial listing would look complete).
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
    rows.sort_by(|a, b| a.0.cmp(&b.0)); // stable: the first node's copy stays first
    rows.dedup_by(|later, first| later.0 == first.0);
    Ok(rows)
}

/// The rows of `table` of this node (first) and of every other node that is up, each node's
/// answer on its own: a caller can keep what it knew of a node that did not answer.
pub async fn by_node<K: TableKey + Serialize + DeserializeOwned + Ord, V: Record>(
    directory: &Directory,
    table: &Table<K, V>,
) -> Vec<(String, Result<Vec<(K, V)>, String>)> {
    let mut answers = vec![(directory.node_id().to_string(), local(table))];
    answers.extend(ask_peers(directory, &format!("rows/{}", table.name()), Vec::new()).await);
    answers
}

fn local<K: TableKey + Serialize + DeserializeOwned + Ord, V: Record>(
    table: &Table<K, V>,
) -> Result<Vec<(K, V)>, String> {
    table.entries().map(|entry| entry.map_err(|e| e.to_string())).collect()
}
