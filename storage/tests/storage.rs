//! Integration tests of the storage layer as a node uses it: open a data directory, commit
//! through group commit, read back, reopen, and get clear errors for unusable directories and
//! records written by an unknown format.

use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serv_storage::{DurabilityMode, KeyPrefix, Storage, StorageError, StorageOptions, TableDef};

/// A plain record for the commit tests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Note {
    text: String,
}

impl serv_storage::Record for Note {
    const FORMAT: u8 = 1;
}

const NOTES: TableDef<String, Note> = TableDef::new("notes");

/// Number of concurrent committers in the group-commit tests.
const WRITERS: usize = 64;

/// Opens storage in `dir` with the given durability and a small cache.
fn open(dir: &Path, durability: DurabilityMode) -> Storage {
    Storage::open(dir, StorageOptions { durability, cache_bytes: 8 * 1024 * 1024 }).expect("open storage")
}

/// The value the test stores under writer `i`'s key.
fn note_for(i: usize) -> Note {
    Note { text: format!("note number {i} from its own writer") }
}

/// Starts `WRITERS` tasks together, each committing its own key, and waits for all of them.
async fn commit_concurrently(storage: &Storage) {
    let table = storage.table(NOTES).expect("open table");
    let start = Arc::new(tokio::sync::Barrier::new(WRITERS));
    let mut tasks = Vec::with_capacity(WRITERS);
    for i in 0..WRITERS {
        let (storage, table, start) = (storage.clone(), table.clone(), start.clone());
        tasks.push(tokio::spawn(async move {
            let mut changes = storage.write_set();
            changes.put(&table, &format!("key-{i:03}"), &note_for(i)).expect("put");
            start.wait().await;
            storage.commit(changes).await.expect("commit");
        }));
    }
    for task in tasks {
        task.await.expect("writer task");
    }
}

/// Asserts that every writer's key reads back with its value.
fn assert_all_notes_present(storage: &Storage) {
    let table = storage.table(NOTES).expect("open table");
    for i in 0..WRITERS {
        let key = format!("key-{i:03}");
        assert_eq!(table.get(&key).expect("get"), Some(note_for(i)), "value of {key}");
    }
    assert_eq!(table.entries().count(), WRITERS, "no extra records");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_commits_share_fsyncs() {
    let dir = tempfile::tempdir().expect("temp dir");
    let storage = open(dir.path(), DurabilityMode::Group);
    // The node id written at open is synced outside the committer and must not be counted.
    let before = storage.commit_stats();
    assert_eq!((before.commits, before.fsyncs), (0, 0), "open counts no commits: {before:?}");

    commit_concurrently(&storage).await;

    assert_all_notes_present(&storage);
    let stats = storage.commit_stats();
    assert_eq!(stats.commits, WRITERS as u64, "{stats:?}");
    assert!(stats.fsyncs >= 1, "at least one fsync made the commits durable: {stats:?}");
    assert!(stats.fsyncs < WRITERS as u64, "{WRITERS} commits must share fsyncs: {stats:?}");
    assert_eq!(stats.group_size_sum, WRITERS as u64, "every commit is in one group: {stats:?}");
    assert_eq!(stats.fsync_seconds.count, stats.fsyncs, "each fsync's time is observed: {stats:?}");
    storage.close().expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_commit_mode_syncs_every_commit() {
    let dir = tempfile::tempdir().expect("temp dir");
    let storage = open(dir.path(), DurabilityMode::PerCommit);

    commit_concurrently(&storage).await;

    assert_all_notes_present(&storage);
    let stats = storage.commit_stats();
    assert_eq!(stats.commits, WRITERS as u64, "{stats:?}");
    assert_eq!(stats.fsyncs, stats.commits, "one fsync per commit: {stats:?}");
    assert_eq!(stats.group_size_buckets[0], WRITERS as u64, "every group holds one: {stats:?}");
    assert_eq!(stats.fsync_seconds.count, stats.fsyncs, "each commit's sync is observed: {stats:?}");
    storage.close().expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_bytes_counts_what_the_data_dir_takes_and_grows_with_commits() {
    let dir = tempfile::tempdir().expect("temp dir");
    let storage = open(dir.path(), DurabilityMode::Group);
    let empty = storage.disk_bytes();
    assert!(empty > 0, "a fresh database has its journal and node id");
    let table = storage.table(NOTES).expect("open table");
    let mut changes = storage.write_set();
    for i in 0..256 {
        // Random hex, so that the journal's compression cannot shrink it much.
        let text = (0..512).map(|_| format!("{:016x}", rand::random::<u64>())).collect();
        changes.put(&table, &format!("big-{i}"), &Note { text }).expect("put");
    }
    storage.commit(changes).await.expect("commit");
    let grown = storage.disk_bytes();
    assert!(grown >= empty + 1024 * 1024, "2 MiB of notes take disk: {empty} -> {grown}");
    storage.close().expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_records_survive_reopen() {
    let dir = tempfile::tempdir().expect("temp dir");
    let storage = open(dir.path(), DurabilityMode::Group);
    commit_concurrently(&storage).await;
    storage.close().expect("close");
    drop(storage);

    let reopened = open(dir.path(), DurabilityMode::Group);
    assert_all_notes_present(&reopened);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_after_close_is_refused_and_not_applied() {
    for durability in [DurabilityMode::Group, DurabilityMode::PerCommit] {
        let dir = tempfile::tempdir().expect("temp dir");
        let storage = open(dir.path(), durability);
        let table = storage.table(NOTES).expect("open table");
        storage.close().expect("close");

        let mut changes = storage.write_set();
        changes.put(&table, &"late".to_string(), &note_for(0)).expect("put");
        let late = storage.commit(changes).await;

        assert!(matches!(late, Err(StorageError::Closed)), "{durability:?}: got {late:?}");
        assert_eq!(table.get(&"late".to_string()).expect("get"), None, "{durability:?}");
        assert_eq!(storage.commit_stats().commits, 0, "{durability:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_id_is_stable_across_reopen() {
    let dir = tempfile::tempdir().expect("temp dir");
    let first = open(dir.path(), DurabilityMode::Group);
    let id = first.node_id().to_string();
    assert!(!id.is_empty(), "a node id is created on first open");
    first.close().expect("close");
    drop(first);

    let again = open(dir.path(), DurabilityMode::Group);
    assert_eq!(again.node_id(), id, "the same data dir keeps the same node id");

    let other_dir = tempfile::tempdir().expect("temp dir");
    let other = open(other_dir.path(), DurabilityMode::Group);
    assert_ne!(other.node_id(), id, "another data dir is another node");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_open_of_same_dir_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let first = open(dir.path(), DurabilityMode::Group);

    let second = Storage::open(dir.path(), StorageOptions::default());

    let Err(error) = second else { panic!("a second open of {} succeeded", dir.path().display()) };
    assert!(matches!(error, StorageError::Locked { .. }), "expected Locked, got {error:?}");
    let message = error.to_string();
    assert!(message.contains(&dir.path().display().to_string()), "names the dir: {message}");
    assert!(message.contains("in use"), "says the dir is in use: {message}");
    assert!(message.contains(&std::process::id().to_string()), "names the holder: {message}");

    first.close().expect("close");
    drop(first);
    let after_close = Storage::open(dir.path(), StorageOptions::default());
    assert!(after_close.is_ok(), "the dir is free once closed: {:?}", after_close.err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unusable_data_dir_is_a_clear_error() {
    let parent = tempfile::tempdir().expect("temp dir");
    let file = parent.path().join("not-a-dir");
    std::fs::write(&file, b"a regular file").expect("write file");
    let data_dir = file.join("sub");

    let opened = Storage::open(&data_dir, StorageOptions::default());

    let Err(error) = opened else { panic!("opened storage under a regular file") };
    let StorageError::DataDir { path, .. } = &error else {
        panic!("expected DataDir, got {error:?}");
    };
    assert_eq!(path, &data_dir, "the error carries the path");
    let message = error.to_string();
    assert!(message.contains(&data_dir.display().to_string()), "names the path: {message}");
}

/// The first layout of a record kept in the `evolving` table.
#[derive(Debug, Serialize, Deserialize)]
struct SettingV1 {
    value: String,
}

impl serv_storage::Record for SettingV1 {
    const FORMAT: u8 = 1;
}

/// A later layout of the same record, which does not know how to read format 1.
#[derive(Debug, Serialize, Deserialize)]
struct SettingV2 {
    value: String,
    enabled: bool,
}

impl serv_storage::Record for SettingV2 {
    const FORMAT: u8 = 2;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn record_from_unknown_format_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let key = "greeting".to_string();
    {
        let storage = open(dir.path(), DurabilityMode::Group);
        let table = storage.table(TableDef::<String, SettingV1>::new("evolving")).expect("table");
        let mut changes = storage.write_set();
        changes.put(&table, &key, &SettingV1 { value: "hello".into() }).expect("put");
        storage.commit(changes).await.expect("commit");
        storage.close().expect("close");
    }

    let storage = open(dir.path(), DurabilityMode::Group);
    let table = storage.table(TableDef::<String, SettingV2>::new("evolving")).expect("table");
    let read = table.get(&key);

    match read {
        Err(StorageError::UnknownFormat { table: "evolving", found: 1, expected: 2 }) => {}
        other => panic!("expected UnknownFormat(found 1, expected 2), got {other:?}"),
    }
    assert!(
        matches!(table.entries().next(), Some(Err(StorageError::UnknownFormat { .. }))),
        "a scan refuses the record too"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_record_stays_deleted_after_reopen() {
    let dir = tempfile::tempdir().expect("temp dir");
    let storage = open(dir.path(), DurabilityMode::Group);
    commit_concurrently(&storage).await;
    let table = storage.table(NOTES).expect("table");
    let gone = "key-000".to_string();
    assert!(table.get(&gone).expect("get").is_some(), "the record exists before the delete");
    let mut changes = storage.write_set();
    changes.delete(&table, &gone);
    storage.commit(changes).await.expect("commit the delete");
    assert!(table.get(&gone).expect("get").is_none());
    storage.close().expect("close");
    drop((table, storage));

    let reopened = open(dir.path(), DurabilityMode::Group);
    let table = reopened.table(NOTES).expect("table");
    assert!(table.get(&gone).expect("get").is_none(), "the delete was durable");
    assert_eq!(table.entries().count(), WRITERS - 1, "only that record went");
}

#[test]
fn a_prefix_scan_lists_in_key_order_from_a_continuation_point() {
    const PAIRS: TableDef<(String, String), Note> = TableDef::new("pairs");
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::open(dir.path(), StorageOptions::default()).unwrap();
    let table = storage.table(PAIRS).unwrap();
    let mut changes = storage.write_set();
    for (bucket, key) in
        [("b", "photos/2"), ("b", "photos/1"), ("b", "notes"), ("b2", "photos/0"), ("a", "photos/9")]
    {
        changes.put(&table, &(bucket.to_string(), key.to_string()), &Note { text: key.to_string() }).unwrap();
    }
    tokio::runtime::Runtime::new().unwrap().block_on(storage.commit(changes)).unwrap();
    let prefix = KeyPrefix::new().part(&"b".to_string()).partial_str("photos/");
    let keys = |after: Option<&(String, String)>| -> Vec<String> {
        table.scan(&prefix, after).map(|entry| entry.unwrap().0.1).collect()
    };
    assert_eq!(keys(None), ["photos/1", "photos/2"]);
    assert_eq!(keys(Some(&("b".to_string(), "photos/1".to_string()))), ["photos/2"]);
    assert!(keys(Some(&("b".to_string(), "photos/2".to_string()))).is_empty());
}

#[tokio::test]
async fn staged_commits_apply_in_staging_order_and_a_later_commit_fences_them() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::open(dir.path(), StorageOptions::default()).unwrap();
    let notes = storage.table(NOTES).unwrap();
    let mut staged = Vec::new();
    for n in 0..200 {
        let mut changes = storage.write_set();
        changes.put(&notes, &"same".to_string(), &Note { text: n.to_string() }).unwrap();
        changes.put(&notes, &format!("key-{n:03}"), &Note { text: n.to_string() }).unwrap();
        staged.push(storage.stage(changes).unwrap());
    }
    // An empty commit resolves only once everything staged before it is applied and durable.
    storage.commit(storage.write_set()).await.unwrap();
    assert_eq!(notes.get(&"same".to_string()).unwrap().unwrap().text, "199", "the last staged write wins");
    assert_eq!(notes.entries().count(), 201);
    for outcome in staged {
        outcome.await.unwrap();
    }
    assert!(storage.commit_stats().commits >= 201);
}

#[test]
fn a_scan_past_a_prefix_skips_every_key_under_it() {
    const PAIRS: TableDef<(String, String), Note> = TableDef::new("pairs");
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::open(dir.path(), StorageOptions::default()).unwrap();
    let table = storage.table(PAIRS).unwrap();
    let mut changes = storage.write_set();
    let keys = ["a/1", "a/2", "a/\u{10FFFF}", "a0", "b/1", "b\0x", "c"];
    for key in keys {
        changes.put(&table, &("bkt".to_string(), key.to_string()), &Note { text: key.to_string() }).unwrap();
    }
    tokio::runtime::Runtime::new().unwrap().block_on(storage.commit(changes)).unwrap();
    let all = KeyPrefix::new().part(&"bkt".to_string());
    let after = |past: &str| -> Vec<String> {
        let past = KeyPrefix::new().part(&"bkt".to_string()).partial_str(past);
        table.scan_past(&all, &past).map(|entry| entry.unwrap().0.1).collect()
    };
    assert_eq!(after("a/"), ["a0", "b\0x", "b/1", "c"], "UTF-8 byte order: NUL before /");
    assert_eq!(after("b"), ["c"]);
    assert_eq!(after("b\0"), ["b/1", "c"], "an escaped NUL at the end of the prefix");
    assert!(after("c").is_empty());
}

/// Installing a snapshot deletes a partition's rows and puts the new ones in one set: a row in
/// both must come out as put, in memory and after a reopen.
#[tokio::test]
async fn a_delete_then_a_put_of_one_key_in_one_set_leaves_the_put() {
    let dir = tempfile::tempdir().expect("temp dir");
    let storage = open(dir.path(), DurabilityMode::Group);
    let table = storage.table(NOTES).expect("table");
    let key = "both".to_string();
    let mut first = storage.write_set();
    first.put(&table, &key, &note_for(1)).expect("put");
    storage.commit(first).await.expect("commit");
    for round in 2..40 {
        let mut changes = storage.write_set();
        changes.delete(&table, &key);
        changes.put(&table, &key, &note_for(round)).expect("put");
        storage.commit(changes).await.expect("commit");
        assert_eq!(table.get(&key).expect("get"), Some(note_for(round)), "round {round}");
    }
    storage.close().expect("close");
    drop((table, storage));
    let reopened = open(dir.path(), DurabilityMode::Group);
    let table = reopened.table(NOTES).expect("table");
    assert_eq!(table.get(&key).expect("get"), Some(note_for(39)), "after a reopen");
}
