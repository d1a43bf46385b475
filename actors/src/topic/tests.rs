//! The topic log: pipelined appends read back at once, dedup, retention, replay by time, and
//! everything acknowledged still there after the actor reloads.

use std::time::Duration;

use serv_storage::Storage;

use super::*;
use crate::{ActorKey, ActorKind, Directory};

async fn node() -> (Directory, Storage, crate::testing::TestNode) {
    let node = crate::testing::node_with::<Topic>().await;
    (node.directory.clone(), node.storage.clone(), node)
}

async fn ask(directory: &Directory, msg: TopicMsg) -> TopicReply {
    directory.call(&ActorKey::new(ActorKind::Topic, "queue/orders"), msg).await.expect("topic answers")
}

/// Message `n`, published `at` ms after the start of this test run (so within retention).
fn message(n: u64, at: u64) -> LogRecord {
    static START: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    LogRecord {
        headers: vec![("n".into(), n.to_string())],
        body: format!("body {n}\0with nul").into_bytes(),
        published_ms: START.get_or_init(now_ms) + at,
        deliver_at_ms: None,
    }
}

async fn read_all(directory: &Directory, from: u64) -> Vec<(u64, LogRecord)> {
    match ask(directory, TopicMsg::Read { from, max: 10_000, max_bytes: u64::MAX }).await {
        TopicReply::Records { records, .. } => records,
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn appends_from_many_senders_get_distinct_offsets_and_read_back_in_order() {
    let (directory, _storage, _dir) = node().await;
    assert!(matches!(ask(&directory, TopicMsg::Info).await, TopicReply::Refused(TopicRefusal::NoSuchTopic)));
    ask(&directory, TopicMsg::Ensure { config: TopicConfig::default() }).await;
    let mut senders = Vec::new();
    for sender in 0..8u64 {
        let directory = directory.clone();
        senders.push(tokio::spawn(async move {
            let mut offsets = Vec::new();
            for i in 0..50 {
                let record = message(sender * 1000 + i, 1);
                match ask(&directory, TopicMsg::Append { record, dedup_id: None }).await {
                    TopicReply::Appended { offset, duplicate: false } => offsets.push(offset),
                    other => panic!("{other:?}"),
                }
            }
            offsets
        }));
    }
    let mut offsets = Vec::new();
    for sender in senders {
        let mine = sender.await.unwrap();
        assert!(mine.windows(2).all(|w| w[0] < w[1]), "one sender's messages keep their order");
        offsets.extend(mine);
    }
    offsets.sort();
    assert_eq!(offsets, (0..400).collect::<Vec<_>>());
    let records = read_all(&directory, 0).await;
    assert_eq!(records.iter().map(|(o, _)| *o).collect::<Vec<_>>(), offsets);

    // A read right after an append sees it (staged or applied), and pages continue.
    let TopicReply::Appended { offset, .. } =
        ask(&directory, TopicMsg::Append { record: message(9, 2), dedup_id: None }).await
    else {
        panic!()
    };
    let TopicReply::Records { records, next } =
        ask(&directory, TopicMsg::Read { from: offset, max: 10, max_bytes: u64::MAX }).await
    else {
        panic!()
    };
    assert_eq!((records.len(), records[0].1.body.clone(), next), (1, message(9, 2).body, offset + 1));
}

#[tokio::test]
async fn dedup_ids_within_the_window_are_not_stored_twice() {
    let (directory, _storage, _dir) = node().await;
    ask(&directory, TopicMsg::Ensure { config: TopicConfig::default() }).await;
    let append =
        |n: u64, id: &str| TopicMsg::Append { record: message(n, 1), dedup_id: Some(id.to_string()) };
    let TopicReply::Appended { offset: first, duplicate: false } = ask(&directory, append(1, "a")).await
    else {
        panic!()
    };
    let TopicReply::Appended { offset, duplicate } = ask(&directory, append(2, "a")).await else { panic!() };
    assert_eq!((offset, duplicate), (first, true), "the original's offset, nothing stored");
    let TopicReply::Appended { duplicate: false, .. } = ask(&directory, append(3, "b")).await else {
        panic!()
    };
    assert_eq!(read_all(&directory, 0).await.len(), 2);

    // Outside the window the id is new again.
    let config = TopicConfig { dedup_window_ms: 1, ..TopicConfig::default() };
    ask(&directory, TopicMsg::Configure(config)).await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    let TopicReply::Appended { duplicate: false, .. } = ask(&directory, append(4, "a")).await else {
        panic!()
    };
}

#[tokio::test]
async fn retention_trims_the_oldest_by_count_bytes_and_age() {
    let (directory, _storage, _dir) = node().await;
    let config = TopicConfig { retention_count: 5, ..TopicConfig::default() };
    ask(&directory, TopicMsg::Ensure { config }).await;
    for n in 0..12 {
        ask(&directory, TopicMsg::Append { record: message(n, 1), dedup_id: None }).await;
    }
    let offsets: Vec<_> = read_all(&directory, 0).await.into_iter().map(|(o, _)| o).collect();
    assert_eq!(offsets, (7..12).collect::<Vec<_>>());

    let size = message(10, 1).size();
    let config = TopicConfig { retention_bytes: 3 * size, ..TopicConfig::default() }; // 9, 10 and 11 are larger
    ask(&directory, TopicMsg::Configure(config)).await;
    assert_eq!(read_all(&directory, 0).await.len(), 3);

    tokio::time::sleep(Duration::from_millis(20)).await;
    let config = TopicConfig { retention_age_ms: 10, ..TopicConfig::default() };
    let TopicReply::Info(info) = ask(&directory, TopicMsg::Configure(config)).await else { panic!() };
    assert_eq!(info.next_offset - info.first_offset, 1, "every message is too old, but the newest stays");
}

#[tokio::test]
async fn replay_by_time_finds_the_first_message_at_or_after() {
    let (directory, _storage, _dir) = node().await;
    ask(&directory, TopicMsg::Ensure { config: TopicConfig::default() }).await;
    for (n, at) in [(0, 100), (1, 200), (2, 200), (3, 300)] {
        ask(&directory, TopicMsg::Append { record: message(n, at), dedup_id: None }).await;
    }
    let start = message(0, 0).published_ms;
    for (at, expected) in [(0, 0), (100, 0), (150, 1), (200, 1), (250, 3), (300, 3), (301, 4)] {
        let TopicReply::Offset(offset) = ask(&directory, TopicMsg::OffsetAt { unix_ms: start + at }).await
        else {
            panic!()
        };
        assert_eq!(offset, expected, "offset at {at} ms");
    }
}

#[tokio::test]
async fn acknowledged_appends_survive_passivation_and_reload() {
    let (directory, storage, _dir) = node().await;
    ask(&directory, TopicMsg::Ensure { config: TopicConfig::default() }).await;
    for n in 0..100 {
        ask(&directory, TopicMsg::Append { record: message(n, 1), dedup_id: Some(format!("id-{n}")) }).await;
    }
    tokio::time::sleep(Duration::from_millis(150)).await; // passivates; the next message reloads
    let records = read_all(&directory, 0).await;
    assert_eq!(records.len(), 100);
    assert!(records.iter().enumerate().all(|(i, (o, r))| *o == i as u64 && *r == message(i as u64, 1)));
    let TopicReply::Appended { duplicate: true, offset } =
        ask(&directory, TopicMsg::Append { record: message(5, 1), dedup_id: Some("id-5".into()) }).await
    else {
        panic!("dedup ids are durable too")
    };
    assert_eq!(offset, 5);
    ask(&directory, TopicMsg::Delete).await;
    assert_eq!(storage.table(LOG).unwrap().entries().count(), 0);
}

#[tokio::test]
async fn a_batch_is_appended_in_order_in_one_commit_with_dedup_inside_it() {
    let (directory, storage, _node) = node().await;
    ask(&directory, TopicMsg::Ensure { config: TopicConfig::default() }).await;
    let fsyncs = storage.commit_stats().fsyncs;
    let batch = vec![
        (message(0, 1), Some("x".to_string())),
        (message(1, 1), None),
        (message(2, 1), Some("x".to_string())),
        (message(3, 1), None),
    ];
    let TopicReply::AppendedMany(answers) = ask(&directory, TopicMsg::AppendMany(batch)).await else {
        panic!()
    };
    let answers: Vec<_> = answers.into_iter().map(|a| (a.offset, a.duplicate, a.dead_letter)).collect();
    assert_eq!(answers, [(0, false, None), (1, false, None), (0, true, None), (2, false, None)]);
    assert!(storage.commit_stats().fsyncs - fsyncs <= 1, "one commit for the batch");
    let bodies: Vec<_> = read_all(&directory, 0).await.into_iter().map(|(_, r)| r.body).collect();
    assert_eq!(bodies, [message(0, 1).body, message(1, 1).body, message(3, 1).body]);
}

#[test]
fn a_topic_stored_before_transforms_existed_still_loads() {
    use serv_storage::Record;
    // Format 1: the same fields without `transform` (the codec writes a struct as its fields).
    let v1 =
        serv_storage::codec::encode(&(7u64, (10u64, 20u64, 30u64, 4u32, 50u64), 1u64, 3u64, 99u64)).unwrap();
    let meta = TopicMeta::upgrade(1, &v1).expect("format 1 is known").expect("decodes");
    assert_eq!((meta.created_ms, meta.first_offset, meta.next_offset, meta.bytes), (7, 1, 3, 99));
    let expected = TopicConfig {
        retention_count: 10,
        retention_bytes: 20,
        retention_age_ms: 30,
        max_deliveries: 4,
        dedup_window_ms: 50,
        ..TopicConfig::default()
    };
    assert_eq!(meta.config, expected);
    assert_eq!(meta.body_bytes, None, "its log's body bytes are counted once a length limit is set");
    assert!(TopicMeta::upgrade(9, &v1).is_none(), "an unknown format is not guessed at");
}

#[test]
fn a_topic_stored_before_length_limits_still_loads() {
    use serv_storage::Record;
    // Format 2: format 1's fields with `transform` after the settings.
    let settings = (10u64, 20u64, 30u64, 4u32, 50u64, Some("up".to_string()));
    let v2 = serv_storage::codec::encode(&(7u64, settings, 1u64, 3u64, 99u64)).unwrap();
    let meta = TopicMeta::upgrade(2, &v2).expect("format 2 is known").expect("decodes");
    assert_eq!((meta.created_ms, meta.first_offset, meta.next_offset, meta.bytes), (7, 1, 3, 99));
    assert_eq!((meta.config.retention_count, meta.config.transform.as_deref()), (10, Some("up")));
    assert_eq!((meta.config.max_length, meta.config.overflow), (None, Overflow::RejectPublish));
}
