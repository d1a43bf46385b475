//! The group actor over a real topic actor: sharing, acks, redelivery, dead letters, restarts,
//! start positions, ack modes and delayed messages.

use std::time::Duration;

use super::*;
use crate::testing::{TestNode, node_with};
use crate::topic::Topic;

async fn node() -> TestNode {
    let node = node_with::<Group>().await;
    node.directory.register::<Topic>();
    node
}

async fn topic(node: &TestNode, name: &str, msg: TopicMsg) -> TopicReply {
    node.directory.call(&ActorKey::new(ActorKind::Topic, name), msg).await.unwrap()
}

async fn group(node: &TestNode, name: &str, msg: GroupMsg) -> GroupReply {
    node.directory.call(&ActorKey::new(ActorKind::Group, name), msg).await.unwrap()
}

async fn publish(node: &TestNode, name: &str, count: u64, deliver_at_ms: Option<u64>) {
    for n in 0..count {
        let record = LogRecord {
            headers: vec![("n".into(), n.to_string())],
            body: format!("m{n}").into_bytes(),
            published_ms: now_ms(),
            deliver_at_ms,
        };
        assert!(matches!(
            topic(node, name, TopicMsg::Append { record, dedup_id: None }).await,
            TopicReply::Appended { .. }
        ));
    }
}

fn join(member: &str, prefetch: u32, ack: AckMode, start: StartAt) -> GroupMsg {
    GroupMsg::Join { member: member.into(), prefetch, ack, ack_timeout_ms: 60_000, start }
}

async fn fetch(node: &TestNode, name: &str, member: &str, max: usize) -> Vec<Delivered> {
    match group(node, name, GroupMsg::Fetch { member: member.into(), max, wait_ms: 0 }).await {
        GroupReply::Messages(messages) => messages,
        other => panic!("{other:?}"),
    }
}

fn offsets(messages: &[Delivered]) -> Vec<u64> {
    messages.iter().map(|m| m.offset).collect()
}

#[tokio::test]
async fn members_share_a_queue_and_acked_messages_never_return() {
    let node = node().await;
    topic(&node, "queue/q", TopicMsg::Ensure { config: TopicConfig::default() }).await;
    publish(&node, "queue/q", 10, None).await;
    let g = "queue/q#queue";
    group(&node, g, join("a", 3, AckMode::ClientIndividual, StartAt::Earliest)).await;
    group(&node, g, join("b", 0, AckMode::ClientIndividual, StartAt::Latest)).await;
    let a = fetch(&node, g, "a", 100).await;
    let b = fetch(&node, g, "b", 100).await;
    assert_eq!(
        (offsets(&a), offsets(&b)),
        (vec![0, 1, 2], (3..10).collect()),
        "prefetch 3 for a; the group started at earliest"
    );
    assert_eq!(a[0].record.body, b"m0");
    for m in a.iter().chain(&b) {
        assert!(matches!(
            group(
                &node,
                g,
                GroupMsg::Ack { member: if m.offset < 3 { "a" } else { "b" }.into(), offset: m.offset }
            )
            .await,
            GroupReply::Done
        ));
    }
    assert!(fetch(&node, g, "a", 100).await.is_empty());
    let GroupReply::Refused(GroupRefusal::Ack(_)) =
        group(&node, g, GroupMsg::Ack { member: "a".into(), offset: 0 }).await
    else {
        panic!("an ACK for a message no longer awaiting one is refused")
    };
}

#[tokio::test]
async fn nacked_messages_come_back_marked_then_go_to_the_dead_letter_topic() {
    let node = node().await;
    let config = TopicConfig { max_deliveries: 2, ..TopicConfig::default() };
    topic(&node, "queue/jobs", TopicMsg::Ensure { config }).await;
    publish(&node, "queue/jobs", 1, None).await;
    let g = "queue/jobs#queue";
    group(&node, g, join("w", 0, AckMode::ClientIndividual, StartAt::Earliest)).await;
    let first = fetch(&node, g, "w", 10).await;
    assert_eq!((first[0].offset, first[0].previous), (0, 0));
    group(&node, g, GroupMsg::Nack { member: "w".into(), offset: 0 }).await;
    let second = fetch(&node, g, "w", 10).await;
    assert_eq!((second[0].offset, second[0].previous), (0, 1), "a redelivery says so");
    group(&node, g, GroupMsg::Nack { member: "w".into(), offset: 0 }).await;
    assert!(fetch(&node, g, "w", 10).await.is_empty(), "dead after max-deliveries");

    let TopicReply::Records { records, .. } =
        topic(&node, "queue/jobs.dlq", TopicMsg::Read { from: 0, max: 10, max_bytes: u64::MAX }).await
    else {
        panic!("the dead-letter topic exists")
    };
    assert_eq!(records.len(), 1);
    let headers = &records[0].1.headers;
    assert!(headers.contains(&(DLQ_ORIGIN_HEADER.into(), "/queue/jobs".into())));
    assert!(headers.iter().any(|(k, v)| k == DLQ_REASON_HEADER && v.contains("2 deliveries")));
    let GroupReply::Info(info) = group(&node, g, GroupMsg::Info).await else { panic!() };
    assert_eq!((info.dead_lettered, info.outstanding), (1, 0));
}

#[tokio::test]
async fn a_reloaded_group_redelivers_what_was_in_flight_and_not_what_was_acked() {
    let node = node().await;
    topic(&node, "topic/t", TopicMsg::Ensure { config: TopicConfig::default() }).await;
    publish(&node, "topic/t", 4, None).await;
    let g = "topic/t#billing";
    group(&node, g, join("a", 0, AckMode::ClientIndividual, StartAt::Earliest)).await;
    assert_eq!(offsets(&fetch(&node, g, "a", 10).await), [0, 1, 2, 3]);
    group(&node, g, GroupMsg::Ack { member: "a".into(), offset: 1 }).await;
    tokio::time::sleep(Duration::from_millis(150)).await; // the group passivates; members are gone
    group(&node, g, join("b", 0, AckMode::ClientIndividual, StartAt::Latest)).await;
    let again = fetch(&node, g, "b", 10).await;
    assert_eq!(
        offsets(&again),
        [0, 2, 3],
        "the group resumes, the start position applies only when it is new"
    );
    assert!(again.iter().all(|m| m.previous == 1));
}

#[tokio::test]
async fn start_positions_and_ack_modes() {
    let node = node().await;
    topic(&node, "topic/s", TopicMsg::Ensure { config: TopicConfig::default() }).await;
    publish(&node, "topic/s", 5, None).await;
    for (name, start, expected) in [
        ("topic/s#e", StartAt::Earliest, vec![0, 1, 2, 3, 4]),
        ("topic/s#l", StartAt::Latest, vec![]),
        ("topic/s#o", StartAt::Offset(3), vec![3, 4]),
        ("topic/s#t", StartAt::Time(now_ms() + 60_000), vec![]),
    ] {
        group(&node, name, join("m", 0, AckMode::Auto, start)).await;
        assert_eq!(offsets(&fetch(&node, name, "m", 10).await), expected, "{name}");
    }
    // Auto: handed out is acknowledged; nothing comes back after the member leaves.
    group(&node, "topic/s#e", GroupMsg::Leave { member: "m".into() }).await;
    group(&node, "topic/s#e", join("m2", 0, AckMode::Auto, StartAt::Earliest)).await;
    assert!(fetch(&node, "topic/s#e", "m2", 10).await.is_empty());
    // Client: one ACK covers every earlier message of the member.
    group(&node, "topic/s#c", join("m", 0, AckMode::Client, StartAt::Earliest)).await;
    assert_eq!(fetch(&node, "topic/s#c", "m", 10).await.len(), 5);
    group(&node, "topic/s#c", GroupMsg::Ack { member: "m".into(), offset: 3 }).await;
    let GroupReply::Info(info) = group(&node, "topic/s#c", GroupMsg::Info).await else { panic!() };
    assert_eq!(info.outstanding, 1);
}

#[tokio::test]
async fn delayed_messages_are_held_until_due() {
    let node = node().await;
    topic(&node, "queue/later", TopicMsg::Ensure { config: TopicConfig::default() }).await;
    publish(&node, "queue/later", 1, Some(now_ms() + 300)).await;
    publish(&node, "queue/later", 1, None).await;
    let g = "queue/later#queue";
    group(&node, g, join("a", 0, AckMode::ClientIndividual, StartAt::Earliest)).await;
    assert_eq!(offsets(&fetch(&node, g, "a", 10).await), [1], "the due message is not held back");
    assert!(fetch(&node, g, "a", 10).await.is_empty());
    tokio::time::sleep(Duration::from_millis(350)).await;
    // The idle group passivated meanwhile and forgot its members: a member joins again.
    let GroupReply::Refused(GroupRefusal::NotAMember) =
        group(&node, g, GroupMsg::Fetch { member: "a".into(), max: 10, wait_ms: 0 }).await
    else {
        panic!("members live in memory")
    };
    group(&node, g, join("a", 0, AckMode::ClientIndividual, StartAt::Earliest)).await;
    let late = fetch(&node, g, "a", 10).await;
    let seen: Vec<_> = late.iter().map(|m| (m.offset, m.previous)).collect();
    assert_eq!(seen, [(0, 0), (1, 1)], "the delayed one for the first time; the unacked one again");
}

#[tokio::test]
async fn groups_need_a_topic_and_a_well_formed_name() {
    let node = node().await;
    let GroupReply::Refused(GroupRefusal::BadName) = group(&node, "no-hash", GroupMsg::Info).await else {
        panic!()
    };
    let GroupReply::Refused(GroupRefusal::NoSuchTopic) =
        group(&node, "queue/none#queue", join("a", 0, AckMode::Auto, StartAt::Earliest)).await
    else {
        panic!()
    };
    let GroupReply::Refused(GroupRefusal::NoSuchGroup) =
        group(&node, "queue/none#queue", GroupMsg::Info).await
    else {
        panic!()
    };
}

#[tokio::test]
async fn a_waiting_fetch_is_answered_when_a_message_arrives_or_its_wait_ends() {
    let node = node().await;
    topic(&node, "queue/wait", TopicMsg::Ensure { config: TopicConfig::default() }).await;
    let g = "queue/wait#queue";
    group(&node, g, join("a", 0, AckMode::Auto, StartAt::Earliest)).await;

    let started = std::time::Instant::now();
    let empty = group(&node, g, GroupMsg::Fetch { member: "a".into(), max: 10, wait_ms: 300 }).await;
    assert!(matches!(empty, GroupReply::Messages(ref m) if m.is_empty()), "{empty:?}");
    assert!(started.elapsed() >= Duration::from_millis(250), "it waited");

    let directory = node.directory.clone();
    let waiting = tokio::spawn(async move {
        let started = std::time::Instant::now();
        let reply = directory
            .call(
                &ActorKey::new(ActorKind::Group, g),
                GroupMsg::Fetch { member: "a".into(), max: 10, wait_ms: 10_000 },
            )
            .await
            .unwrap();
        (reply, started.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    publish(&node, "queue/wait", 1, None).await;
    let (reply, waited) = waiting.await.unwrap();
    let GroupReply::Messages(messages) = reply else { panic!() };
    assert_eq!(offsets(&messages), [0]);
    assert!(waited < Duration::from_secs(2), "woken by the message, not by the end of the wait: {waited:?}");
}

#[tokio::test]
async fn the_summary_shows_lag_in_flight_and_members() {
    let node = node().await;
    topic(&node, "queue/lag", TopicMsg::Ensure { config: TopicConfig::default() }).await;
    publish(&node, "queue/lag", 5, None).await;
    let g = "queue/lag#queue";
    group(&node, g, join("a", 2, AckMode::ClientIndividual, StartAt::Earliest)).await;
    assert_eq!(fetch(&node, g, "a", 10).await.len(), 2);
    let record = node.directory.records().into_iter().find(|r| r.key == format!("group/{g}")).unwrap();
    for part in ["lag=5 ", "cursor=2 ", "in_flight=2 ", "members=1 "] {
        assert!(record.state.contains(part), "{part} in {}", record.state);
    }
    let topic_record = node.directory.records().into_iter().find(|r| r.key == "topic/queue/lag").unwrap();
    assert!(
        topic_record.state.contains("messages=5 ") && topic_record.state.contains("in_rate="),
        "{}",
        topic_record.state
    );
}

/// Appends `bodies` to `name` in one producer's batch: the answer as is.
async fn produce(node: &TestNode, name: &str, bodies: &[&str]) -> TopicReply {
    let batch = bodies
        .iter()
        .map(|body| {
            let record = LogRecord {
                headers: vec![],
                body: body.as_bytes().to_vec(),
                published_ms: now_ms(),
                deliver_at_ms: None,
            };
            (record, None)
        })
        .collect();
    topic(node, name, TopicMsg::AppendMany(batch)).await
}

async fn length(node: &TestNode, name: &str) -> Option<crate::topic::Length> {
    match topic(node, name, TopicMsg::Info).await {
        TopicReply::Info(info) => info.length,
        other => panic!("{other:?}"),
    }
}

async fn bodies(node: &TestNode, name: &str) -> Vec<(String, Option<String>)> {
    let TopicReply::Records { records, .. } =
        topic(node, name, TopicMsg::Read { from: 0, max: 100, max_bytes: u64::MAX }).await
    else {
        return Vec::new();
    };
    let reason =
        |r: &LogRecord| r.headers.iter().find(|(k, _)| k == DLQ_REASON_HEADER).map(|(_, v)| v.clone());
    records.into_iter().map(|(_, r)| (String::from_utf8(r.body.clone()).unwrap(), reason(&r))).collect()
}

#[tokio::test]
async fn a_full_queue_refuses_what_would_exceed_it_and_a_delivery_makes_room() {
    use crate::topic::{Length, LengthLimit};
    let node = node().await;
    let config = TopicConfig { max_length: Some(3), max_length_bytes: Some(100), ..TopicConfig::default() };
    topic(&node, "queue/full", TopicMsg::Ensure { config }).await;
    let TopicReply::Full { stored, limit } = produce(&node, "queue/full", &["a", "b", "c", "d", "e"]).await
    else {
        panic!("a batch past the limit is cut")
    };
    assert_eq!((stored.len(), limit), (3, LengthLimit::Messages(3)));
    assert_eq!(
        length(&node, "queue/full").await,
        Some(Length { messages: 3, bytes: 3 }),
        "before any subscriber"
    );

    // A delivery takes a message from the ready ones (in flight, it does not count).
    let g = "queue/full#queue";
    group(&node, g, join("w", 1, AckMode::ClientIndividual, StartAt::Earliest)).await;
    assert_eq!(offsets(&fetch(&node, g, "w", 10).await), [0]);
    assert_eq!(length(&node, "queue/full").await, Some(Length { messages: 2, bytes: 2 }));
    assert!(matches!(produce(&node, "queue/full", &["f"]).await, TopicReply::AppendedMany(_)));
    assert!(matches!(produce(&node, "queue/full", &["g"]).await, TopicReply::Full { .. }));

    // A NACKed message waits again and counts again; the byte limit counts bodies.
    group(&node, g, GroupMsg::Nack { member: "w".into(), offset: 0 }).await;
    assert_eq!(length(&node, "queue/full").await, Some(Length { messages: 4, bytes: 4 }));
    let config = TopicConfig { max_length: None, max_length_bytes: Some(10), ..TopicConfig::default() };
    topic(&node, "queue/full", TopicMsg::Configure(config)).await;
    let TopicReply::Full { stored, limit } = produce(&node, "queue/full", &["hello", "world"]).await else {
        panic!("4 + 5 + 5 bytes is over 10")
    };
    assert_eq!((stored.len(), limit), (1, LengthLimit::Bytes(10)));

    // The length and the groups' views survive a reload of both.
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(length(&node, "queue/full").await, Some(Length { messages: 5, bytes: 9 }));
    topic(&node, "queue/full", TopicMsg::Configure(TopicConfig::default())).await;
    assert_eq!(length(&node, "queue/full").await, None, "not counted without a limit");
}

#[tokio::test]
async fn drop_head_moves_the_oldest_waiting_messages_to_the_dead_letter_topic_never_one_in_flight() {
    use crate::topic::{Length, Overflow};
    let node = node().await;
    let config = TopicConfig { max_length: Some(2), overflow: Overflow::DropHead, ..TopicConfig::default() };
    topic(&node, "queue/news", TopicMsg::Ensure { config }).await;
    // No one subscribed yet: the queue's own group is made, at its oldest message.
    assert!(matches!(produce(&node, "queue/news", &["1", "2", "3", "4"]).await, TopicReply::AppendedMany(_)));
    wait_for_dlq(&node, "queue/news.dlq", 2).await;
    assert_eq!(
        bodies(&node, "queue/news.dlq").await,
        [("1".into(), Some("maxlen".into())), ("2".into(), Some("maxlen".into()))]
    );

    let g = "queue/news#queue";
    group(&node, g, join("w", 1, AckMode::ClientIndividual, StartAt::Earliest)).await;
    assert_eq!(offsets(&fetch(&node, g, "w", 10).await), [2], "the newest two were kept");
    // "3" is in flight and never dropped: of the five waiting ("4" to "8"), the oldest three go.
    assert!(matches!(produce(&node, "queue/news", &["5", "6", "7", "8"]).await, TopicReply::AppendedMany(_)));
    wait_for_dlq(&node, "queue/news.dlq", 5).await;
    let dropped: Vec<String> = bodies(&node, "queue/news.dlq").await.into_iter().map(|(b, _)| b).collect();
    assert_eq!(dropped, ["1", "2", "4", "5", "6"]);
    assert_eq!(length(&node, "queue/news").await, Some(Length { messages: 2, bytes: 2 }));
    assert!(matches!(
        group(&node, g, GroupMsg::Ack { member: "w".into(), offset: 2 }).await,
        GroupReply::Done
    ));
    let next = fetch(&node, g, "w", 10).await;
    assert_eq!(
        (next[0].offset, next[0].record.body.as_slice()),
        (6, b"7".as_slice()),
        "then the newest, in order"
    );
}

async fn wait_for_dlq(node: &TestNode, dlq: &str, count: usize) {
    for _ in 0..200 {
        if bodies(node, dlq).await.len() >= count {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{dlq} has {:?}, not {count} messages", bodies(node, dlq).await);
}

#[test]
fn an_outstanding_offset_stored_before_body_sizes_still_loads() {
    let v1 = serv_storage::codec::encode(&(3u32, Slot::Ready)).unwrap();
    let entry = Outstanding::upgrade(1, &v1).expect("format 1 is known").expect("decodes");
    assert_eq!(entry, Outstanding { deliveries: 3, slot: Slot::Ready, body_bytes: 0 });
}

#[tokio::test]
async fn a_deleted_group_answers_its_waiting_fetches_and_passivates() {
    let node = node().await;
    topic(&node, "topic/t", TopicMsg::Ensure { config: TopicConfig::default() }).await;
    let g = "topic/t#s1";
    let key = ActorKey::new(ActorKind::Group, g);
    for member in ["a", "b"] {
        group(&node, g, join(member, 10, AckMode::ClientIndividual, StartAt::Latest)).await;
    }
    let wait = |member: &str| {
        let (directory, key) = (node.directory.clone(), key.clone());
        let fetch = GroupMsg::Fetch { member: member.into(), max: 10, wait_ms: 60_000 };
        tokio::spawn(async move { directory.call(&key, fetch).await })
    };
    // Both fetches wait for messages; a's fetcher then goes away, as with a closed connection.
    let (gone, waiting) = (wait("a"), wait("b"));
    tokio::time::sleep(Duration::from_millis(100)).await;
    gone.abort();
    group(&node, g, GroupMsg::Delete).await;
    let answer = tokio::time::timeout(Duration::from_secs(2), waiting).await.expect("b's fetch is answered");
    assert!(matches!(answer.unwrap(), Ok(GroupReply::Refused(GroupRefusal::NoSuchGroup))));
    // Nothing holds the deleted group up any more: it passivates like any idle entity.
    let live = || node.directory.records().into_iter().any(|r| r.key == key.to_string());
    for _ in 0..500 {
        if !live() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the deleted group is still live 5 s later");
}
