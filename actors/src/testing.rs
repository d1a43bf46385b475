//! Test support shared by the entity kinds' tests: a node with one kind registered.

use std::time::Duration;

use serv_storage::{Storage, StorageOptions};

use crate::{Directory, Entity, SupervisionConfig};

/// A directory over fresh storage; entities passivate after 40 ms idle, so that a short sleep
/// makes the next message reload an entity from storage.
pub(crate) struct TestNode {
    pub directory: Directory,
    pub storage: Storage,
    _dir: tempfile::TempDir,
}

pub(crate) async fn node_with<E: Entity>() -> TestNode {
    let dir = tempfile::tempdir().expect("temp dir");
    let storage = Storage::open(dir.path(), StorageOptions::default()).expect("storage");
    let config = SupervisionConfig {
        passivate_after: Duration::from_millis(40),
        idle_check: Duration::from_millis(10),
        ..SupervisionConfig::default()
    };
    let directory = Directory::start(storage.clone(), config).await.expect("directory");
    directory.register::<E>();
    TestNode { directory, storage, _dir: dir }
}
