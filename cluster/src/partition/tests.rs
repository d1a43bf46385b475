//! The partition layer on one node: writes go through each partition's log, are applied in the
//! order they were staged, survive a restart, and the log does not grow without bound.

use serde::{Deserialize, Serialize};
use serv_storage::{Record, Storage, StorageOptions, TableDef};

use super::*;

/// The record the partition tests write: a number under a key.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
pub(super) struct Note(pub u64);

impl Record for Note {
    const FORMAT: u8 = 1;
}

pub(super) const NOTES: TableDef<String, Note> = TableDef::new("partition_test_notes");

fn count(count: u64) -> PartitionOptions {
    PartitionOptions { count: Some(count), ..PartitionOptions::default() }
}

fn open(dir: &std::path::Path) -> Storage {
    Storage::open(dir, StorageOptions::default()).expect("storage opens")
}

async fn write(partitions: &Partitions, storage: &Storage, key: &str, value: u64) {
    let notes = storage.table(NOTES).unwrap();
    let mut changes = WriteSet::new();
    changes.put(&notes, &key.to_string(), &Note(value)).unwrap();
    let path = partitions.commit_path(partitions.partition_of(key));
    storage.with_commit_path(path).commit(changes).await.expect("the write commits");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_committed_write_is_applied_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(dir.path());
    let partitions = Partitions::start(&storage, count(8)).await.unwrap();
    let before = partitions.status();
    assert!(before.iter().all(|p| p.role == "leader" && p.replicas.len() == 1), "{before:?}");

    write(&partitions, &storage, "bucket/photos", 7).await;
    let notes = storage.table(NOTES).unwrap();
    assert_eq!(notes.get(&"bucket/photos".to_string()).unwrap(), Some(Note(7)), "read back at once");
    let partition = partitions.partition_of("bucket/photos") as usize;
    // The status is openraft's metrics, published just after the apply that answered the write.
    let expected = before[partition].applied_index.map(|i| i + 1);
    let deadline = Instant::now() + Duration::from_secs(5);
    while partitions.status()[partition].applied_index != expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let after = partitions.status();
    assert_eq!(after[partition].applied_index, expected);
    assert_eq!(partitions.proposal_stats().proposals, 1);

    partitions.shutdown().await;
    storage.close().unwrap();
    drop((partitions, storage, notes));

    let storage = open(dir.path());
    let partitions = Partitions::start(&storage, PartitionOptions::default()).await.unwrap();
    assert_eq!(partitions.count(), 8, "the stored count, not the default");
    let notes = storage.table(NOTES).unwrap();
    assert_eq!(notes.get(&"bucket/photos".to_string()).unwrap(), Some(Note(7)));
    let status = partitions.status();
    assert!(status[partition].applied_index >= after[partition].applied_index);
    write(&partitions, &storage, "bucket/photos", 8).await;
    assert_eq!(notes.get(&"bucket/photos".to_string()).unwrap(), Some(Note(8)));
    partitions.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_partition_count_of_a_data_dir_never_changes() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(dir.path());
    let partitions = Partitions::start(&storage, count(4)).await.unwrap();
    partitions.shutdown().await;
    drop(partitions);
    let refused = Partitions::start(&storage, count(16)).await.err().expect("a different count is refused");
    assert!(matches!(refused, PartitionError::CountMismatch { stored: 4, asked: 16 }), "{refused}");
    assert!(matches!(
        Partitions::start(&storage, count(0)).await.err(),
        Some(PartitionError::CountOutOfRange(0))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_writes_are_applied_in_the_order_they_were_staged() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(dir.path());
    let partitions = Partitions::start(&storage, count(2)).await.unwrap();
    let notes = storage.table(NOTES).unwrap();
    let routed = storage.with_commit_path(partitions.commit_path(partitions.partition_of("k")));
    let mut staged = Vec::new();
    for value in 0..300u64 {
        let mut changes = WriteSet::new();
        changes.put(&notes, &"k".to_string(), &Note(value)).unwrap();
        changes.put(&notes, &format!("k{value:03}"), &Note(value)).unwrap();
        staged.push(routed.stage(changes).unwrap());
    }
    for outcome in staged {
        outcome.await.unwrap();
    }
    assert_eq!(notes.get(&"k".to_string()).unwrap(), Some(Note(299)), "the last staged write wins");
    for value in 0..300u64 {
        assert_eq!(notes.get(&format!("k{value:03}")).unwrap(), Some(Note(value)));
    }
    partitions.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_partition_snapshots_and_keeps_a_bounded_log() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(dir.path());
    let partitions = Partitions::start(&storage, count(1)).await.unwrap();
    let writes = SNAPSHOT_EVERY_ENTRIES * 3;
    for value in 0..writes {
        write(&partitions, &storage, &format!("key{}", value % 10), value).await;
    }
    let status = &partitions.status()[0];
    assert!(status.snapshot_index.is_some(), "a snapshot after {writes} writes: {status:?}");
    // openraft purges behind the snapshot in the background.
    let log = storage.table(log::RAFT_LOG).unwrap();
    let bound = (SNAPSHOT_EVERY_ENTRIES + LOG_KEPT_BEHIND_SNAPSHOT + 64) as usize;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut kept = usize::MAX;
    while Instant::now() < deadline {
        kept = log.entries().count();
        if kept <= bound {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(kept <= bound, "{kept} log entries kept after {writes} writes (bound {bound})");
    partitions.shutdown().await;
    storage.close().unwrap();
    drop((partitions, storage, log));

    // After the purge the partition restarts from its applied point and serves on.
    let storage = open(dir.path());
    let partitions = Partitions::start(&storage, PartitionOptions::default()).await.unwrap();
    let notes = storage.table(NOTES).unwrap();
    let last = format!("key{}", (writes - 1) % 10);
    assert_eq!(notes.get(&last).unwrap(), Some(Note(writes - 1)), "the last write before the restart");
    write(&partitions, &storage, &last, 1).await;
    assert_eq!(notes.get(&last).unwrap(), Some(Note(1)));
    partitions.shutdown().await;
}

const PINNED_PHOTOS: u64 = 21;
const PINNED_ORDERS: u64 = 126;

#[test]
fn a_key_always_hashes_to_the_same_partition() {
    // Stored data is placed by this function: changing it would move every key of every
    // existing cluster, so these values are pinned.
    assert_eq!(partition_of("bucket/photos", 64), PINNED_PHOTOS);
    assert_eq!(partition_of("topic/queue/orders", 256), PINNED_ORDERS);
    let spread: std::collections::HashSet<u64> =
        (0..1000).map(|i| partition_of(&format!("topic/t{i}"), 64)).collect();
    assert_eq!(spread.len(), 64, "1000 keys reach every one of 64 partitions");
    assert!((0..1000).all(|i| partition_of(&format!("k{i}"), 7) < 7));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_durable_in_the_log_but_never_applied_is_applied_at_restart() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(dir.path());
    let partitions = Partitions::start(&storage, count(1)).await.unwrap();
    write(&partitions, &storage, "before", 1).await;
    partitions.shutdown().await;
    drop(partitions);

    // What a crash can leave: an entry durable in the log (so acknowledged) whose application
    // never reached the tables.
    let log = storage.table(log::RAFT_LOG).unwrap();
    let last = log.entries().last().unwrap().unwrap().1.0;
    let notes = storage.table(NOTES).unwrap();
    let mut lost = WriteSet::new();
    lost.put(&notes, &"after".to_string(), &Note(2)).unwrap();
    let id = openraft::LogId::new(last.log_id.leader_id, last.log_id.index + 1);
    let entry = openraft::Entry { log_id: id, payload: openraft::EntryPayload::Normal(lost) };
    let mut changes = WriteSet::new();
    changes.put(&log, &(0, id.index), &log::LogRecord(entry)).unwrap();
    storage.local().commit(changes).await.unwrap();
    assert_eq!(notes.get(&"after".to_string()).unwrap(), None);

    let partitions = Partitions::start(&storage, PartitionOptions::default()).await.unwrap();
    assert_eq!(notes.get(&"after".to_string()).unwrap(), Some(Note(2)), "applied before any entity can read");
    assert_eq!(partitions.status()[0].applied_index, Some(id.index));
    partitions.shutdown().await;
}
