//! Directory and supervision tests, with a test-only `Probe` entity: a durable counter.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serv_storage::{Record, Storage, StorageOptions, TableDef};

use crate::inspect::ActorStatus;
use crate::{ActorKey, ActorKind, ActorRecord, Directory, DirectoryError, Entity, EntityContext, EntityError, KindMessage, SupervisionConfig};

const COUNTERS: TableDef<String, Counter> = TableDef::new("probe_counters");

#[derive(Serialize, Deserialize)]
struct Counter(u64);

impl Record for Counter {
    const FORMAT: u8 = 1;
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
enum ProbeMsg {
    Add(u64),
    Get,
    Panic,
}

impl KindMessage for ProbeMsg {
    const KIND: ActorKind = ActorKind::Probe;
    type Reply = u64;
}

struct Probe {
    value: u64,
}

impl Entity for Probe {
    type Msg = ProbeMsg;

    async fn load(ctx: &EntityContext) -> Result<Self, EntityError> {
        let table = ctx.storage.table(COUNTERS)?;
        Ok(Probe { value: table.get(&ctx.key.name)?.map_or(0, |c| c.0) })
    }

    async fn handle(&mut self, msg: ProbeMsg, ctx: &EntityContext) -> Result<u64, EntityError> {
        match msg {
            ProbeMsg::Add(n) => {
                let table = ctx.storage.table(COUNTERS)?;
                let mut changes = ctx.storage.write_set();
                changes.put(&table, &ctx.key.name, &Counter(self.value + n))?;
                ctx.storage.commit(changes).await?;
                self.value += n;
            }
            ProbeMsg::Get => {}
            ProbeMsg::Panic => panic!("probe asked to panic"),
        }
        Ok(self.value)
    }

    fn summary(&self) -> String {
        format!("value={}", self.value)
    }
}

struct Node {
    directory: Directory,
    _dir: tempfile::TempDir,
}

async fn node(config: SupervisionConfig) -> Node {
    let dir = tempfile::tempdir().expect("temp dir");
    let storage = Storage::open(dir.path(), StorageOptions::default()).expect("storage");
    let directory = Directory::start(storage, config).await.expect("directory");
    directory.register::<Probe>();
    Node { directory, _dir: dir }
}

fn quick() -> SupervisionConfig {
    SupervisionConfig {
        idle_check: Duration::from_millis(20),
        restart_backoff_min: Duration::from_millis(10),
        restart_backoff_max: Duration::from_millis(100),
        call_timeout: Duration::from_secs(10),
        ..SupervisionConfig::default()
    }
}

fn record(directory: &Directory, key: &str) -> Option<ActorRecord> {
    directory.records().into_iter().find(|r| r.key == key)
}

async fn wait_until(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..500 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting until {what}");
}

fn probe(name: &str) -> ActorKey {
    ActorKey::new(ActorKind::Probe, name)
}

#[tokio::test]
async fn fresh_node_lists_its_supervisors() {
    let node = node(quick()).await;
    let keys: Vec<_> = node.directory.records().into_iter().map(|r| r.key).collect();
    for expected in ["supervisor/node", "supervisor/bucket", "supervisor/topic", "supervisor/group", "supervisor/route"] {
        assert!(keys.iter().any(|k| k == expected), "{expected} missing from {keys:?}");
    }
    assert!(node.directory.is_ready());
}

#[tokio::test]
async fn entity_is_activated_by_its_first_message() {
    let node = node(quick()).await;
    assert!(record(&node.directory, "probe/a").is_none());
    assert_eq!(node.directory.call(&probe("a"), ProbeMsg::Add(3)).await, Ok(3));
    let record = record(&node.directory, "probe/a").expect("activated entity has a record");
    assert_eq!(record.status, ActorStatus::Running);
    assert_eq!(record.handled, 1);
    assert_eq!(record.restarts, 0);
    assert_eq!(record.state, "value=3");
    assert_eq!(record.node, node.directory.node_id());
}

#[tokio::test]
async fn idle_entity_passivates_and_reactivates_with_its_state() {
    let node = node(SupervisionConfig { passivate_after: Duration::from_millis(100), ..quick() }).await;
    node.directory.call(&probe("idle"), ProbeMsg::Add(7)).await.unwrap();
    wait_until("the idle entity passivates", || record(&node.directory, "probe/idle").is_none()).await;
    let supervisor = record(&node.directory, "supervisor/probe").unwrap();
    assert!(supervisor.state.contains("passivated=1"), "{}", supervisor.state);
    assert_eq!(node.directory.call(&probe("idle"), ProbeMsg::Get).await, Ok(7));
    assert_eq!(record(&node.directory, "probe/idle").unwrap().handled, 1, "a new incarnation");
}

#[tokio::test]
async fn crashed_entity_restarts_from_durable_state() {
    let node = node(quick()).await;
    let key = probe("crashy");
    node.directory.call(&key, ProbeMsg::Add(5)).await.unwrap();
    assert_eq!(node.directory.call(&key, ProbeMsg::Panic).await, Err(DirectoryError::Crashed { key: key.to_string() }));
    assert_eq!(node.directory.call(&key, ProbeMsg::Get).await, Ok(5));
    let record = record(&node.directory, "probe/crashy").unwrap();
    assert_eq!(record.restarts, 1);
    assert_eq!(record.status, ActorStatus::Running);
    assert!(record.last_error.as_deref().unwrap_or_default().contains("probe asked to panic"), "{record:?}");
}

#[tokio::test]
async fn entity_crashing_too_often_is_escalated_until_reset() {
    let node = node(SupervisionConfig { max_restarts: 2, ..quick() }).await;
    let key = probe("poison");
    node.directory.call(&key, ProbeMsg::Add(1)).await.unwrap();
    for _ in 0..3 {
        let _ = node.directory.call(&key, ProbeMsg::Panic).await;
    }
    let failed = record(&node.directory, "probe/poison").unwrap();
    assert_eq!(failed.status, ActorStatus::Failed);
    assert_eq!(failed.restarts, 2);
    assert!(matches!(node.directory.call(&key, ProbeMsg::Get).await, Err(DirectoryError::Failed { .. })));
    wait_until("the node supervisor records the escalation", || {
        let node_record = record(&node.directory, "supervisor/node").unwrap();
        node_record.state.contains("escalations=1")
            && node_record.last_error.is_some_and(|e| e.contains("probe/poison"))
    })
    .await;
    node.directory.reset(&key).await.unwrap();
    assert_eq!(node.directory.call(&key, ProbeMsg::Get).await, Ok(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_message_is_lost_while_entities_passivate_under_load() {
    let node = node(SupervisionConfig {
        passivate_after: Duration::from_millis(1),
        idle_check: Duration::from_millis(1),
        ..quick()
    })
    .await;
    let key = probe("churn");
    let mut senders = Vec::new();
    for _ in 0..4 {
        let (directory, key) = (node.directory.clone(), key.clone());
        senders.push(tokio::spawn(async move {
            for i in 0..100u64 {
                directory.send(&key, ProbeMsg::Add(1)).await.unwrap();
                if i % 10 == 0 {
                    tokio::time::sleep(Duration::from_millis(3)).await;
                }
            }
        }));
    }
    for sender in senders {
        sender.await.unwrap();
    }
    let mut value = 0;
    for _ in 0..200 {
        value = node.directory.call(&key, ProbeMsg::Get).await.unwrap();
        if value == 400 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(value, 400, "every sent Add must be applied exactly once");
    let supervisor = record(&node.directory, "supervisor/probe").unwrap();
    assert!(!supervisor.state.contains("passivated=0"), "the test must have passivated: {}", supervisor.state);
}

#[tokio::test]
async fn messages_for_the_wrong_or_unserved_kind_are_refused() {
    let node = node(quick()).await;
    let wrong = ActorKey::new(ActorKind::Bucket, "photos");
    assert!(matches!(node.directory.call(&wrong, ProbeMsg::Get).await, Err(DirectoryError::WrongKind { .. })));
    let directory = Directory::start(
        Storage::open(tempfile::tempdir().unwrap().keep(), StorageOptions::default()).unwrap(),
        quick(),
    )
    .await
    .unwrap();
    assert!(matches!(directory.call(&probe("x"), ProbeMsg::Get).await, Err(DirectoryError::NotServed { .. })));
}

#[test]
fn messages_and_errors_cross_the_codec_unchanged() {
    use serv_storage::codec::{decode, encode};
    let msg = ProbeMsg::Add(42);
    assert_eq!(decode::<ProbeMsg>(&encode(&msg).unwrap()).unwrap(), msg);
    let error = DirectoryError::Failed { key: "bucket/a".into(), last_error: "boom".into() };
    assert_eq!(decode::<DirectoryError>(&encode(&error).unwrap()).unwrap(), error);
    let key = ActorKey::new(ActorKind::Group, "orders/billing");
    assert_eq!(decode::<ActorKey>(&encode(&key).unwrap()).unwrap(), key);
}
