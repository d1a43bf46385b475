//! The module entity and topic transforms: a module is stored and versioned by content; a
//! topic with a transform stores what the module makes of each message, and sends what it refuses
//! or fails on to the dead-letter topic with the reason; a new version is used after a recheck.

use std::sync::Arc;
use std::time::Duration;

use serv_wasm_host::{Limits, WasmHost};

use super::*;
use crate::topic::{
    Appended, DLQ_ORIGIN_HEADER, DLQ_REASON_HEADER, LogRecord, Topic, TopicConfig, TopicMsg, TopicReply,
};
use crate::{ActorKey, ActorKind, Directory};

const UPPER: &str = include_str!("../../../tests/wasm/upper.wat");
const REVERSE: &str = include_str!("../../../tests/wasm/reverse.wat");
const SPIN: &str = include_str!("../../../tests/wasm/spin.wat");

async fn node(recheck: Duration) -> crate::testing::TestNode {
    let node = crate::testing::node_with::<Topic>().await;
    node.directory.register::<Module>();
    let host = WasmHost::new(Limits { fuel: 5_000_000, ..Limits::default() }).expect("engine");
    node.directory.set_modules(Arc::new(ModuleRuntime::new(host, node.storage.clone(), recheck)));
    node
}

async fn upload(directory: &Directory, name: &str, text: &str) -> ModuleHead {
    let compiled = directory.modules().unwrap().compile(text.as_bytes().to_vec()).await.expect("compiles");
    let hooks = compiled.hooks.iter().map(|h| h.as_str().to_string()).collect();
    let put = ModuleMsg::Put { wasm: compiled.wasm.to_vec(), hash: compiled.hash.clone(), hooks };
    match directory.call(&ActorKey::new(ActorKind::Module, name), put).await.unwrap() {
        ModuleReply::Head(head) => head,
        other => panic!("{other:?}"),
    }
}

async fn topic(directory: &Directory, name: &str, msg: TopicMsg) -> TopicReply {
    directory.call(&ActorKey::new(ActorKind::Topic, name), msg).await.expect("topic answers")
}

async fn publish(directory: &Directory, bodies: &[&str]) -> Vec<Appended> {
    let batch = bodies
        .iter()
        .map(|body| {
            let record = LogRecord {
                headers: vec![("k".into(), "v".into())],
                body: body.as_bytes().to_vec(),
                published_ms: crate::now_ms(),
                deliver_at_ms: None,
            };
            (record, Some(format!("id-{body}")))
        })
        .collect();
    match topic(directory, "queue/in", TopicMsg::AppendMany(batch)).await {
        TopicReply::AppendedMany(answers) => answers,
        other => panic!("{other:?}"),
    }
}

async fn bodies(directory: &Directory, name: &str) -> Vec<LogRecord> {
    match topic(directory, name, TopicMsg::Read { from: 0, max: 100, max_bytes: u64::MAX }).await {
        TopicReply::Records { records, .. } => records.into_iter().map(|(_, r)| r).collect(),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_module_is_versioned_by_content_and_kept_across_reloads() {
    let node = node(Duration::ZERO).await;
    let directory = &node.directory;
    let key = ActorKey::new(ActorKind::Module, "up");
    assert_eq!(directory.call(&key, ModuleMsg::Head).await.unwrap(), ModuleReply::NoSuchModule);
    let first = upload(directory, "up", UPPER).await;
    assert_eq!((first.version, first.hooks.clone()), (1, vec!["transform".to_string()]));
    // The same binary again is the same version; another binary is the next one.
    assert_eq!(upload(directory, "up", UPPER).await.version, 1);
    let second = upload(directory, "up", REVERSE).await;
    assert_eq!(second.version, 2);
    assert_ne!(second.hash, first.hash);
    tokio::time::sleep(Duration::from_millis(100)).await; // passivated: the next message reloads it
    let ModuleReply::Head(stored) = directory.call(&key, ModuleMsg::Head).await.unwrap() else { panic!() };
    assert_eq!((stored.version, &stored.hash), (2, &second.hash));
    let ModuleReply::Binary(wasm) = directory.call(&key, ModuleMsg::Get).await.unwrap() else { panic!() };
    let reverse = directory.modules().unwrap().host().compile(REVERSE.as_bytes()).unwrap();
    assert_eq!((wasm.len() as u64, &wasm), (stored.size, &*reverse.wasm), "the binary of version 2");
    assert_eq!(directory.call(&key, ModuleMsg::Delete).await.unwrap(), ModuleReply::Deleted);
    assert_eq!(directory.call(&key, ModuleMsg::Get).await.unwrap(), ModuleReply::NoSuchModule);
}

#[tokio::test]
async fn a_transform_rewrites_messages_and_dead_letters_what_it_refuses() {
    let node = node(Duration::ZERO).await;
    let directory = &node.directory;
    upload(directory, "up", UPPER).await;
    let config = TopicConfig { transform: Some("up".into()), ..TopicConfig::default() };
    topic(directory, "queue/in", TopicMsg::Ensure { config }).await;

    let counted = crate::topic::dead_lettered_total();
    let answers = publish(directory, &["hello", "!refused", "world"]).await;
    assert!(crate::topic::dead_lettered_total() > counted, "the refusal counts for /metrics");
    assert_eq!((answers[0].offset, answers[0].dead_letter.is_none()), (0, true));
    assert_eq!((answers[2].offset, answers[2].dead_letter.is_none()), (1, true));
    let dead = answers[1].dead_letter.clone().expect("refused: dead-lettered");
    assert_eq!((dead.topic.as_str(), answers[1].offset), ("queue/in.dlq", 0));
    assert!(dead.reason.contains("transform up refused by the module (code 33)"), "{}", dead.reason);

    let stored: Vec<_> = bodies(directory, "queue/in").await.into_iter().map(|r| r.body).collect();
    assert_eq!(stored, [b"HELLO".to_vec(), b"WORLD".to_vec()]);
    let letters = bodies(directory, "queue/in.dlq").await;
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].body, b"!refused", "a dead letter keeps the body as published");
    let header = |name: &str| letters[0].headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone());
    assert_eq!(header(DLQ_ORIGIN_HEADER).as_deref(), Some("/queue/in"));
    assert_eq!(header(DLQ_REASON_HEADER), Some(dead.reason));
    assert_eq!(header("k").as_deref(), Some("v"));

    // A retry is a duplicate, answered without running the module or storing anything.
    let again = publish(directory, &["hello", "!refused"]).await;
    assert_eq!((again[0].offset, again[0].duplicate), (0, true));
    assert_eq!((again[1].offset, again[1].duplicate, again[1].dead_letter.is_some()), (0, true, true));
    assert_eq!(bodies(directory, "queue/in.dlq").await.len(), 1);
    let stats = directory.modules().unwrap().stats()["up"].clone();
    assert_eq!((stats.calls, stats.failures), (4, 2), "the retried \"!refused\" ran again: {stats:?}");
}

#[tokio::test]
async fn a_new_version_is_used_after_a_recheck_and_a_bad_or_missing_module_dead_letters() {
    let node = node(Duration::from_millis(300)).await;
    let directory = &node.directory;
    upload(directory, "t", UPPER).await;
    let config = TopicConfig { transform: Some("t".into()), ..TopicConfig::default() };
    topic(directory, "queue/in", TopicMsg::Ensure { config }).await;
    publish(directory, &["abc"]).await;
    upload(directory, "t", REVERSE).await;
    publish(directory, &["def"]).await; // within the recheck: still the old version
    tokio::time::sleep(Duration::from_millis(350)).await;
    publish(directory, &["ghi"]).await;
    let stored: Vec<_> = bodies(directory, "queue/in").await.into_iter().map(|r| r.body).collect();
    assert_eq!(stored, [b"ABC".to_vec(), b"DEF".to_vec(), b"ihg".to_vec()]);

    // A module that never ends runs out of fuel; its message is dead-lettered, the topic goes on.
    upload(directory, "t", SPIN).await;
    tokio::time::sleep(Duration::from_millis(350)).await;
    let answers = publish(directory, &["spin"]).await;
    let reason = answers[0].dead_letter.clone().expect("dead-lettered").reason;
    assert!(reason.contains("ran out of fuel"), "{reason}");

    // A deleted module: every message is dead-lettered, saying so.
    directory.call(&ActorKey::new(ActorKind::Module, "t"), ModuleMsg::Delete).await.unwrap();
    tokio::time::sleep(Duration::from_millis(350)).await;
    let answers = publish(directory, &["gone"]).await;
    let reason = answers[0].dead_letter.clone().expect("dead-lettered").reason;
    assert!(reason.contains("no module t"), "{reason}");
    assert_eq!(bodies(directory, "queue/in").await.len(), 3);
    assert_eq!(bodies(directory, "queue/in.dlq").await.len(), 2);
}
