//! Rebalance: when the ring changes (a node joins), entities move to their new owners with their
//! state, and no entity is ever served by two nodes or by one without its state.
//!
//! Keys only move to the node that joined (consistent hashing), so:
//! - every node **hands off** each entity it holds whose owner on the new ring is another node:
//!   it evicts the entity (the entity finishes what it holds), sends its blocks on a block
//!   session and its rows as an import, which the new owner makes durable, then deletes its own
//!   copy. Meanwhile messages for it go to the new owner, which refuses them (503 / ERROR,
//!   retryable) until the ring is settled.
//! - a node **settles** on a ring once it has handed off everything for that ring and every
//!   other member of the ring says the same. Until then it serves only the keys it owned on the
//!   ring it last settled on; the keys it gains wait. A member that is down holds the ring
//!   unsettled (it may hold state to hand over), which keeps those keys refused until it is back.
//!
//! The settled ring is kept in storage, so a restarted node serves what it owned at once.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serv_actors::{ActorKey, Directory};
use serv_cluster::transfer::BlockTransfer;
use serv_storage::{Record, Storage, TableDef};

use crate::cluster::RingPlacement;

/// How often an unsettled node retries its hand-off and asks the others how far they are.
const RETRY: Duration = Duration::from_millis(500);

/// Largest batch of rows one import message carries (the mesh refuses frames over 16 MiB).
const IMPORT_BATCH_BYTES: usize = 8 * 1024 * 1024;

const STATUS_QUERY: &str = "ring/status";

const CLUSTER_STATE: TableDef<String, SettledRing> = TableDef::new("cluster_state");
const SETTLED: &str = "settled_ring";

#[derive(Serialize, Deserialize)]
struct SettledRing(Vec<String>);

impl Record for SettledRing {
    const FORMAT: u8 = 1;
}

/// The ring this node last settled on. A node without one owns nothing yet, unless it starts a
/// cluster (no seeds): then it owns everything.
pub fn load_settled(storage: &Storage, me: &str, founder: bool) -> Result<BTreeSet<String>, String> {
    let table = storage.table(CLUSTER_STATE).map_err(|e| e.to_string())?;
    match table.get(&SETTLED.to_string()).map_err(|e| e.to_string())? {
        Some(SettledRing(ids)) => Ok(ids.into_iter().collect()),
        None if founder => Ok(BTreeSet::from([me.to_string()])),
        None => Ok(BTreeSet::new()),
    }
}

/// What a node tells the others: the ring it is on and whether it has handed off for it.
#[derive(Serialize, Deserialize)]
struct Status {
    ring: Vec<String>,
    handed_off: bool,
}

/// Answers the others' status questions and keeps this node's hand-off and settling going. A
/// node that joins (not the `founder`) never settles on a ring of itself alone: it would take
/// every key before it has heard of the nodes that hold them.
pub fn start(
    placement: Arc<RingPlacement>,
    directory: Directory,
    storage: Storage,
    transfer: BlockTransfer,
    founder: bool,
) {
    let asked = placement.clone();
    directory.register_query(
        STATUS_QUERY,
        Arc::new(move |_| {
            let ring = asked.ring_ids();
            let handed_off = asked.handed_off().as_ref() == Some(&ring);
            let status = Status { ring: ring.into_iter().collect(), handed_off };
            Box::pin(std::future::ready(serv_storage::codec::encode(&status).map_err(|e| e.to_string())))
        }),
    );
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(RETRY).await;
            let ring = placement.ring_ids();
            if placement.handed_off().as_ref() != Some(&ring)
                && hand_off_all(&placement, &directory, &storage, &transfer).await
            {
                tracing::info!(members = ring.len(), "handed off every entity this node no longer owns");
                placement.set_handed_off(ring.clone());
            }
            let alone = ring.len() == 1 && !founder;
            if !alone
                && placement.settled_ids() != ring
                && placement.handed_off().as_ref() == Some(&ring)
                && all_handed_off(&placement, &directory, &ring).await
            {
                if let Err(error) = save_settled(&storage, &ring).await {
                    tracing::warn!(%error, "the settled ring could not be stored");
                    continue;
                }
                tracing::info!(members = ring.len(), "settled on the ring");
                placement.set_settled(ring);
            }
        }
    });
}

async fn save_settled(storage: &Storage, ring: &BTreeSet<String>) -> Result<(), String> {
    let table = storage.table(CLUSTER_STATE).map_err(|e| e.to_string())?;
    let mut changes = storage.write_set();
    changes
        .put(&table, &SETTLED.to_string(), &SettledRing(ring.iter().cloned().collect()))
        .map_err(|e| e.to_string())?;
    storage.commit(changes).await.map_err(|e| e.to_string())
}

/// True when every other member of `ring` is up, on the same ring, and has handed off for it.
async fn all_handed_off(placement: &RingPlacement, directory: &Directory, ring: &BTreeSet<String>) -> bool {
    let others = placement.others();
    if others.iter().any(|(_, up)| !up) {
        return false;
    }
    let answers = directory.query_peers(STATUS_QUERY, Vec::new()).await;
    others.iter().all(|(id, _)| {
        answers.iter().any(|(node, answer)| {
            node == id
                && answer
                    .as_ref()
                    .ok()
                    .and_then(|a| serv_storage::codec::decode::<Status>(a).ok())
                    .is_some_and(|status| {
                        status.handed_off && status.ring.iter().cloned().collect::<BTreeSet<_>>() == *ring
                    })
        })
    })
}

/// Hands off every entity this node holds that another node owns now; true if none is left.
async fn hand_off_all(
    placement: &RingPlacement,
    directory: &Directory,
    storage: &Storage,
    transfer: &BlockTransfer,
) -> bool {
    if placement.others().is_empty() {
        return true; // a ring of this node alone gives nothing away: no need to list every entity
    }
    let keys = match directory.local_entities() {
        // Topics first: a group's handler may wait on its topic, so a group is evicted only
        // once the topics it may be waiting on have moved (no node's hand-off waits on another).
        Ok(mut keys) => {
            keys.sort_by_key(|key| key.kind != serv_actors::ActorKind::Topic);
            keys
        }
        Err(error) => {
            tracing::warn!(%error, "cannot list the entities this node holds");
            return false;
        }
    };
    let mut complete = true;
    for key in keys {
        let Some((owner, up)) = placement.owner_of(&key) else { continue };
        if owner == placement.me() {
            continue;
        }
        if !up {
            complete = false; // its new owner is down: hand it over when it is back
            continue;
        }
        match hand_off(&key, &owner, directory, storage, transfer).await {
            Ok(()) => tracing::info!(%key, to = %owner, "handed off"),
            Err(error) => {
                tracing::warn!(%key, to = %owner, %error, "hand-off failed; will retry");
                complete = false;
            }
        }
    }
    complete
}

/// Moves one entity to `owner`: evict, blocks, rows (durable there), then delete here.
async fn hand_off(
    key: &ActorKey,
    owner: &str,
    directory: &Directory,
    storage: &Storage,
    transfer: &BlockTransfer,
) -> Result<(), String> {
    directory.evict(key).await.map_err(|e| e.to_string())?;
    // The entity may have pipelined writes that are staged but not yet applied: a commit
    // resolves only after everything staged before it, so the export below sees them all.
    storage.commit(storage.write_set()).await.map_err(|e| e.to_string())?;
    let state = directory.export_state(key).map_err(|e| e.to_string())?;
    // The session keeps the blocks pinned on the owner until its import references them.
    let session = match state.refs.is_empty() {
        true => None,
        false => Some(transfer.open(owner).await.map_err(|e| e.to_string())?),
    };
    if let Some(session) = &session {
        for hash in state.blocks() {
            let block = storage.blocks().get(&hash).map_err(|e| e.to_string())?;
            let block = block.ok_or_else(|| format!("block {hash} of {key} is missing here"))?;
            session.put(&block).await.map_err(|e| e.to_string())?;
        }
    }
    let batches = batches(&state);
    let count = batches.len();
    for (index, batch) in batches.into_iter().enumerate() {
        directory.send_state(owner, key, batch, index + 1 == count).await.map_err(|e| e.to_string())?;
    }
    directory.drop_state(key, &state).await.map_err(|e| e.to_string())?;
    drop(session);
    Ok(())
}

/// The state split into imports small enough for one mesh frame; the block references travel
/// with the first.
fn batches(state: &serv_actors::handoff::EntityState) -> Vec<serv_actors::handoff::EntityState> {
    let mut batches = vec![serv_actors::handoff::EntityState { rows: Vec::new(), refs: state.refs.clone() }];
    let mut size = 0;
    for row in &state.rows {
        let row_size = row.0.len() + row.1.len() + row.2.len();
        if size + row_size > IMPORT_BATCH_BYTES && !batches.last().is_some_and(|b| b.rows.is_empty()) {
            batches.push(serv_actors::handoff::EntityState::default());
            size = 0;
        }
        size += row_size;
        batches.last_mut().expect("one batch at least").rows.push(row.clone());
    }
    batches
}

#[cfg(test)]
mod tests {
    use serv_actors::handoff::EntityState;

    use super::*;

    #[test]
    fn a_large_state_travels_in_batches_under_the_frame_limit_with_its_refs_first() {
        let row = |n: usize| ("topic_log".to_string(), n.to_be_bytes().to_vec(), vec![7u8; 1024 * 1024]);
        let refs = vec![(serv_storage::blocks::BlockHash([1; 32]), "owner".to_string())];
        let state = EntityState { rows: (0..20).map(row).collect(), refs: refs.clone() };
        let batches = batches(&state);
        assert!(batches.len() >= 3, "20 MiB in batches of at most 8 MiB");
        assert_eq!(batches[0].refs, refs);
        assert!(batches[1..].iter().all(|b| b.refs.is_empty()));
        for batch in &batches {
            let bytes: usize = batch.rows.iter().map(|r| r.0.len() + r.1.len() + r.2.len()).sum();
            assert!(bytes <= IMPORT_BATCH_BYTES, "{bytes}");
        }
        let rows: Vec<_> = batches.into_iter().flat_map(|b| b.rows).collect();
        assert_eq!(rows, state.rows, "every row, once, in order");
        // A small state is one batch.
        assert_eq!(super::batches(&EntityState { rows: vec![row(0)], refs: Vec::new() }).len(), 1);
    }
}
