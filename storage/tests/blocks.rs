//! The block store: stored once, kept while referenced or pinned, collected otherwise.

use bytes::Bytes;
use serv_storage::blocks::{BlockRef, BlockStats};
use serv_storage::{Storage, StorageOptions};

fn open(dir: &std::path::Path) -> Storage {
    Storage::open(dir, StorageOptions::default()).unwrap()
}

#[tokio::test]
async fn identical_content_is_stored_once_and_kept_while_referenced() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(dir.path());
    let blocks = storage.blocks();
    let data = Bytes::from(vec![7u8; 300_000]);

    let (hash, first) = blocks.put(data.clone()).await.unwrap();
    let (again, second) = blocks.put(data.clone()).await.unwrap();
    assert_eq!(hash, again);
    assert_eq!(blocks.stats(), BlockStats { blocks: 1, bytes: 300_000, collected: 0 });

    // One owner references it; the writers' pins go away.
    let mut changes = storage.write_set();
    changes.put(blocks.refs(), &(hash, "bucket/a".to_string()), &BlockRef).unwrap();
    storage.commit(changes).await.unwrap();
    drop((first, second));
    assert_eq!(blocks.collect_garbage().unwrap().removed, 0, "a referenced block is kept");
    assert_eq!(blocks.get(&hash).unwrap().as_deref(), Some(&data[..]));

    // A reader pins it, then the owner releases its reference.
    let reading = blocks.pin_existing(&[hash]).unwrap().unwrap();
    let mut changes = storage.write_set();
    changes.delete(blocks.refs(), &(hash, "bucket/a".to_string()));
    storage.commit(changes).await.unwrap();
    blocks.released([hash]);
    assert_eq!(blocks.collect_garbage().unwrap().removed, 0, "a pinned block is kept");
    assert!(blocks.get(&hash).unwrap().is_some());

    drop(reading);
    let report = blocks.collect_garbage().unwrap();
    assert_eq!((report.removed, report.bytes), (1, 300_000));
    assert_eq!(blocks.get(&hash).unwrap(), None);
    assert_eq!(blocks.stats().blocks, 0);
    assert!(blocks.pin_existing(&[hash]).unwrap().is_err(), "a collected block cannot be pinned");
}

#[tokio::test]
async fn a_block_sent_here_outlives_its_senders_pin_for_the_grace_and_no_longer() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(dir.path());
    let blocks = storage.blocks();
    let grace = std::time::Duration::from_millis(300);
    blocks.set_unpinned_grace(grace);
    // Another node's edge stored it here and its session ended before the manifest that names
    // the block was applied on this replica.
    let (hash, pinned) = blocks.put(Bytes::from_static(b"sent by a peer")).await.unwrap();
    drop(pinned);
    assert_eq!(blocks.collect_garbage().unwrap().removed, 0, "kept within the grace");
    assert!(blocks.get(&hash).unwrap().is_some());
    // A block whose last reference an owner released is not kept for the grace.
    let (released, pinned) = blocks.put(Bytes::from_static(b"released by its owner")).await.unwrap();
    let mut changes = storage.write_set();
    changes.put(blocks.refs(), &(released, "bucket/r".to_string()), &BlockRef).unwrap();
    storage.commit(changes).await.unwrap();
    drop(pinned);
    let mut changes = storage.write_set();
    changes.delete(blocks.refs(), &(released, "bucket/r".to_string()));
    storage.commit(changes).await.unwrap();
    blocks.released([released]);
    let report = blocks.collect_garbage().unwrap();
    assert_eq!(report.removed, 1);
    assert_eq!(blocks.get(&released).unwrap(), None);
    assert!(blocks.get(&hash).unwrap().is_some(), "the unpinned one waits for its grace");
    // Past the grace, with still no manifest naming it, it goes.
    tokio::time::sleep(grace).await;
    assert_eq!(blocks.collect_garbage().unwrap().removed, 1);
    assert_eq!(blocks.get(&hash).unwrap(), None);
}

#[tokio::test]
async fn a_restart_counts_stored_blocks_and_the_sweep_removes_orphans() {
    let dir = tempfile::tempdir().unwrap();
    let (kept, orphan) = {
        let storage = open(dir.path());
        let blocks = storage.blocks();
        let (kept, _pin) = blocks.put(Bytes::from_static(b"kept block")).await.unwrap();
        let (orphan, _pin2) = blocks.put(Bytes::from_static(b"orphan block")).await.unwrap();
        let mut changes = storage.write_set();
        changes.put(blocks.refs(), &(kept, "bucket/k".to_string()), &BlockRef).unwrap();
        storage.commit(changes).await.unwrap();
        storage.close().unwrap();
        (kept, orphan)
    };
    let storage = open(dir.path());
    let blocks = storage.blocks();
    assert_eq!(blocks.stats().blocks, 2, "counts are rebuilt from disk");
    let report = blocks.sweep().unwrap();
    assert_eq!((report.checked, report.removed), (2, 1));
    assert!(blocks.get(&kept).unwrap().is_some());
    assert!(blocks.get(&orphan).unwrap().is_none());
    assert_eq!(blocks.stats().blocks, 1);
}
