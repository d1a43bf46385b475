//! Access keys: created durable, listed without secrets, sealed at rest, revoked for good.

use serv_storage::keys::KeyRefusal;
use serv_storage::{Storage, StorageOptions};

fn open(dir: &std::path::Path) -> Storage {
    Storage::open(dir, StorageOptions::default()).unwrap()
}

/// Every byte under `dir`, to look for a secret in plaintext.
fn all_bytes(dir: &std::path::Path) -> Vec<u8> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(all_bytes(&path));
        } else {
            out.extend(std::fs::read(&path).unwrap());
        }
    }
    out
}

#[tokio::test]
async fn keys_survive_a_restart_sealed_and_stay_revoked() {
    let dir = tempfile::tempdir().unwrap();
    let (kept, revoked) = {
        let storage = open(dir.path());
        let keys = storage.access_keys();
        let kept = keys.create("alt").await.unwrap().unwrap();
        assert_eq!(keys.create("alt").await.unwrap().unwrap_err(), KeyRefusal::NameTaken("alt".into()));
        assert_eq!(keys.create("no spaces").await.unwrap().unwrap_err(), KeyRefusal::InvalidName);
        let revoked = keys.create("temp").await.unwrap().unwrap();
        assert_eq!(keys.secret(&kept.access_key).as_deref(), Some(kept.secret_key.as_str()));
        keys.revoke(&revoked.access_key).await.unwrap().unwrap();
        assert!(keys.secret(&revoked.access_key).is_none());
        storage.close().unwrap();
        (kept, revoked)
    };
    let db = all_bytes(&dir.path().join("db"));
    let plaintext = kept.secret_key.as_bytes();
    assert!(
        !db.windows(plaintext.len()).any(|w| w == plaintext),
        "the secret must not be stored in plaintext"
    );

    let storage = open(dir.path());
    let keys = storage.access_keys();
    assert_eq!(keys.secret(&kept.access_key).as_deref(), Some(kept.secret_key.as_str()));
    assert!(keys.secret(&revoked.access_key).is_none(), "a revoked key stays revoked");
    let listed = keys.list();
    assert_eq!(listed.len(), 1);
    assert_eq!((listed[0].access_key.as_str(), listed[0].name.as_str()), (kept.access_key.as_str(), "alt"));
    assert_eq!(
        keys.revoke(&revoked.access_key).await.unwrap().unwrap_err(),
        KeyRefusal::NotFound(revoked.access_key.clone())
    );
}

#[tokio::test]
async fn nodes_that_merge_each_others_keys_agree_and_revocations_win() {
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = (open(a_dir.path()), open(b_dir.path()));
    let on_a = a.access_keys().create("made-on-a").await.unwrap().unwrap();
    let on_b = b.access_keys().create("made-on-b").await.unwrap().unwrap();
    // B revokes A's key before it ever heard of it; A still has it live.
    b.access_keys().merge(a.access_keys().export().unwrap()).await.unwrap();
    b.access_keys().revoke(&on_a.access_key).await.unwrap().unwrap();
    assert_eq!(a.access_keys().merge(b.access_keys().export().unwrap()).await.unwrap(), 2);
    // An old copy of the key arriving again does not bring it back.
    let stale = {
        let mut s = b.access_keys().export().unwrap();
        s.keys.push((on_a.access_key.clone(), "made-on-a".into(), on_a.secret_key.clone(), 1));
        s
    };
    assert_eq!(a.access_keys().merge(stale).await.unwrap(), 0);
    for node in [&a, &b] {
        let keys = node.access_keys();
        assert!(keys.secret(&on_a.access_key).is_none(), "revoked everywhere");
        assert_eq!(keys.secret(&on_b.access_key).as_deref(), Some(on_b.secret_key.as_str()));
    }
    // Merged keys are sealed under each node's own sealing key and survive a restart.
    a.close().unwrap();
    drop(a);
    let a = open(a_dir.path());
    assert_eq!(a.access_keys().secret(&on_b.access_key).as_deref(), Some(on_b.secret_key.as_str()));
    assert!(a.access_keys().secret(&on_a.access_key).is_none());
}
