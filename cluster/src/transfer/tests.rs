//! A block session between two meshes in one process: blocks stored through it are durable on
//! the owner and read back; pins last as long as the session; bad requests end only the session.

use std::time::Duration;

use serv_storage::{Storage, StorageOptions};

use super::*;
use crate::identity::ClusterIdentity;
use crate::membership::MemberState;

const SECRET: &str = "transfer-test-cluster-secret";

struct Owner {
    storage: Storage,
    addr: SocketAddr,
    _mesh: Mesh,
    _dir: tempfile::TempDir,
}

fn mesh(id: &str) -> Mesh {
    let endpoint =
        ClusterIdentity::new(SECRET, id).unwrap().endpoint("127.0.0.1:0".parse().unwrap()).unwrap();
    Mesh::start(endpoint).0
}

fn owner() -> Owner {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::open(dir.path(), StorageOptions::default()).unwrap();
    let mesh = mesh("owner");
    serve(&mesh, storage.blocks().clone());
    Owner { addr: mesh.local_addr().unwrap(), storage, _mesh: mesh, _dir: dir }
}

fn client_of(owner: &Owner) -> BlockTransfer {
    let view = vec![MemberView {
        id: "owner".into(),
        addr: owner.addr,
        state: MemberState::Alive,
        incarnation: 0,
        meta: None,
    }];
    BlockTransfer::new(mesh("client"), watch::channel(view).1)
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..200 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting until {what}");
}

#[tokio::test]
async fn blocks_stored_through_a_session_are_on_the_owner_and_read_back() {
    let owner = owner();
    let session = client_of(&owner).open("owner").await.unwrap();
    let block = vec![7u8; 300_000];
    let hash = session.put(&block).await.unwrap();
    assert_eq!(hash, BlockHash::of(&block));
    assert_eq!(owner.storage.blocks().get(&hash).unwrap().as_deref(), Some(&block[..]));
    assert_eq!(session.get(&hash).await.unwrap().as_deref(), Some(&block[..]));
    let absent = BlockHash::of(b"never stored");
    assert_eq!(session.get(&absent).await.unwrap(), None);
    assert_eq!(session.pin(&[hash, absent]).await.unwrap(), Err(absent));
    assert!(matches!(client_of(&owner).open("stranger").await, Err(TransferError::UnknownNode(_))));
}

#[tokio::test]
async fn what_a_session_holds_is_collected_only_after_it_ends() {
    let owner = owner();
    let blocks = owner.storage.blocks().clone();
    let session = client_of(&owner).open("owner").await.unwrap();
    // Unreferenced blocks: one stored through the session, one pinned by it.
    let stored = session.put(b"stored remotely").await.unwrap();
    let (pinned, local_pins) = blocks.put(bytes::Bytes::from_static(b"pinned remotely")).await.unwrap();
    assert_eq!(session.pin(&[pinned]).await.unwrap(), Ok(()));
    drop(local_pins);
    blocks.collect_garbage().unwrap();
    assert!(blocks.get(&stored).unwrap().is_some() && blocks.get(&pinned).unwrap().is_some());

    drop(session);
    eventually("the owner drops the session's pins and collects", || {
        blocks.collect_garbage().unwrap();
        blocks.get(&stored).unwrap().is_none() && blocks.get(&pinned).unwrap().is_none()
    })
    .await;
}

#[tokio::test]
async fn a_bad_request_ends_its_session_with_a_reason_and_the_owner_keeps_serving() {
    let owner = owner();
    let transfer = client_of(&owner);
    let session = transfer.open("owner").await.unwrap();
    {
        let mut stream = session.stream.lock().await;
        let (send, recv) = &mut *stream;
        send.write_u8(PUT).await.unwrap();
        send.write_u32(MAX_BLOCK_BYTES + 1).await.unwrap();
        let refused = status(recv).await.unwrap_err();
        assert!(refused.to_string().contains("over"), "{refused}");
    }
    let fresh = transfer.open("owner").await.unwrap();
    let hash = fresh.put(b"still serving").await.unwrap();
    assert_eq!(fresh.get(&hash).await.unwrap().as_deref(), Some(&b"still serving"[..]));
}
