//! The bucket actor against a model: seeded random puts, deletes (plain and by version id),
//! versioning changes and passivations (the actor reloads from storage), checked after every step against a plain in-memory history.
//! At the end everything is deleted and no block reference may be left behind.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serv_storage::{KeyPrefix, Storage, StorageOptions};

use super::*;
use crate::{ActorKey, ActorKind, Directory, SupervisionConfig};

/// One entry of a key's history in the model: (version id, content) or a delete marker.
#[derive(Clone, Debug, PartialEq)]
struct Entry {
    version_id: Option<String>,
    content: Option<u8>,
}

#[derive(Default)]
struct Model {
    versioning: Versioning,
    /// Newest first.
    history: BTreeMap<String, Vec<Entry>>,
}

impl Model {
    fn current(&self, key: &str) -> Option<u8> {
        self.history.get(key).and_then(|h| h.first()).and_then(|e| e.content)
    }
}

async fn ask(directory: &Directory, msg: BucketMsg) -> BucketReply {
    directory.call(&ActorKey::new(ActorKind::Bucket, "model"), msg).await.expect("bucket answers")
}

async fn body(storage: &Storage, content: u8) -> ObjectBody {
    // Contents repeat across keys and versions, so blocks are shared and references must count.
    let data = Bytes::from(vec![content; 1000 + usize::from(content)]);
    let (hash, _pins) = storage.blocks().put(data.clone()).await.unwrap();
    ObjectBody {
        size: data.len() as u64,
        etag: format!("{content:032x}"),
        chunks: vec![Chunk { hash, len: data.len() as u32 }],
        meta: ObjectMeta::default(),
        checksums: Checksums::default(),
        part_sizes: Vec::new(),
    }
}

async fn check(directory: &Directory, model: &Model, keys: &[&str]) {
    for key in keys {
        let newest = model.history.get(*key).and_then(|h| h.first());
        let got = match ask(directory, BucketMsg::GetObject { key: key.to_string(), version_id: None }).await
        {
            BucketReply::Object(object) => Some(object.body.etag),
            BucketReply::Refused(Refusal::NoSuchKey) => {
                assert!(newest.is_none_or(|e| e.content.is_some()), "{key}'s delete marker is not named");
                None
            }
            BucketReply::Refused(Refusal::DeletedByMarker(marker)) => {
                let named = newest.filter(|e| e.content.is_none()).and_then(|e| e.version_id.clone());
                assert_eq!(Some(marker.version_id), named, "the marker a refusal of {key} names");
                None
            }
            other => panic!("unexpected {other:?}"),
        };
        assert_eq!(got, model.current(key).map(|c| format!("{c:032x}")), "current object of {key}");
    }
    let request = ListVersionsRequest { max: 1000, ..Default::default() };
    let BucketReply::Versions(listing) = ask(directory, BucketMsg::ListVersions(request)).await else {
        panic!("no version listing")
    };
    let listed: Vec<_> = listing
        .versions
        .iter()
        .map(|v| (v.key.clone(), v.is_latest, v.object.as_ref().map(|(_, etag)| etag.clone())))
        .collect();
    let expected: Vec<_> = model
        .history
        .iter()
        .flat_map(|(key, history)| {
            history
                .iter()
                .enumerate()
                .map(move |(i, e)| (key.clone(), i == 0, e.content.map(|c| format!("{c:032x}"))))
        })
        .collect();
    assert_eq!(listed, expected, "version listing");
}

#[tokio::test]
async fn random_histories_match_the_model_and_leave_no_references() {
    let seed = std::env::var("SERV_TEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(7u64);
    let mut rng = StdRng::seed_from_u64(seed);
    let node = crate::testing::node_with::<Bucket>().await;
    let (directory, storage) = (node.directory.clone(), node.storage.clone());
    let keys = ["a", "a/b", "b", "c"];
    assert!(matches!(
        ask(&directory, BucketMsg::Create { owner: "root".into(), grants: Vec::new(), object_lock: false })
            .await,
        BucketReply::Done
    ));
    let mut model = Model::default();

    for step in 0..300 {
        let key = keys[rng.random_range(0..keys.len())].to_string();
        match rng.random_range(0..100) {
            0..45 => {
                let content = rng.random_range(0..6u8);
                let body = body(&storage, content).await;
                let BucketReply::Committed { version_id, .. } = ask(
                    &directory,
                    BucketMsg::PutObject {
                        key: key.clone(),
                        body,
                        tags: Vec::new(),
                        condition: None,
                        lock: ObjectLock::default(),
                        acl: Box::new(ObjectAcl { owner: "root".into(), grants: Vec::new() }),
                    },
                )
                .await
                else {
                    panic!("put refused at step {step}")
                };
                let history = model.history.entry(key).or_default();
                match model.versioning {
                    Versioning::Unversioned => {
                        *history = vec![Entry { version_id: None, content: Some(content) }]
                    }
                    Versioning::Suspended => {
                        history.retain(|e| e.version_id.as_deref() != Some(NULL_VERSION));
                        history.insert(0, Entry { version_id, content: Some(content) });
                    }
                    Versioning::Enabled => history.insert(0, Entry { version_id, content: Some(content) }),
                }
            }
            45..65 => {
                let BucketReply::Deleted { version_id, delete_marker } = ask(
                    &directory,
                    BucketMsg::DeleteObject {
                        key: key.clone(),
                        version_id: None,
                        if_match: None,
                        bypass_governance: false,
                    },
                )
                .await
                else {
                    panic!("delete refused at step {step}")
                };
                let history = model.history.entry(key.clone()).or_default();
                match model.versioning {
                    Versioning::Unversioned => history.clear(),
                    versioning => {
                        assert!(delete_marker);
                        if versioning == Versioning::Suspended {
                            history.retain(|e| e.version_id.as_deref() != Some(NULL_VERSION));
                        }
                        history.insert(0, Entry { version_id, content: None });
                    }
                }
                if history.is_empty() {
                    model.history.remove(&key);
                }
            }
            65..85 => {
                let Some(history) = model.history.get_mut(&key) else { continue };
                if model.versioning == Versioning::Unversioned {
                    continue;
                }
                let index = rng.random_range(0..history.len());
                let version_id = history[index].version_id.clone().expect("versioned entries have ids");
                let reply = ask(
                    &directory,
                    BucketMsg::DeleteObject {
                        key: key.clone(),
                        version_id: Some(version_id),
                        if_match: None,
                        bypass_governance: false,
                    },
                )
                .await;
                assert!(matches!(reply, BucketReply::Deleted { .. }), "step {step}: {reply:?}");
                history.remove(index);
                if history.is_empty() {
                    model.history.remove(&key);
                }
            }
            85..93 => {
                let wanted = if rng.random_bool(0.5) { Versioning::Enabled } else { Versioning::Suspended };
                assert!(matches!(ask(&directory, BucketMsg::SetVersioning(wanted)).await, BucketReply::Done));
                if model.versioning == Versioning::Unversioned {
                    for history in model.history.values_mut() {
                        history[0].version_id = Some(NULL_VERSION.to_string());
                    }
                }
                model.versioning = wanted;
            }
            _ => {
                // Idle long enough to passivate: the next message reloads the bucket from storage,
                // so nothing may depend on what the actor held in memory.
                tokio::time::sleep(Duration::from_millis(120)).await;
            }
        }
        check(&directory, &model, &keys).await;
    }

    // Deleting every version empties the bucket and drops every block reference.
    let request = ListVersionsRequest { max: 1000, ..Default::default() };
    let BucketReply::Versions(listing) = ask(&directory, BucketMsg::ListVersions(request)).await else {
        panic!("no version listing")
    };
    for version in listing.versions {
        let version_id = Some(version.version_id);
        ask(
            &directory,
            BucketMsg::DeleteObject {
                key: version.key,
                version_id,
                if_match: None,
                bypass_governance: false,
            },
        )
        .await;
    }
    if model.versioning == Versioning::Unversioned {
        for key in keys {
            ask(
                &directory,
                BucketMsg::DeleteObject {
                    key: key.to_string(),
                    version_id: None,
                    if_match: None,
                    bypass_governance: false,
                },
            )
            .await;
        }
    }
    assert!(matches!(ask(&directory, BucketMsg::Delete).await, BucketReply::Done), "seed {seed}");
    let refs = storage.blocks().refs().scan(&KeyPrefix::new(), None).count();
    assert_eq!(refs, 0, "no block reference outlives its versions (seed {seed})");
    storage.blocks().collect_garbage().unwrap();
    assert_eq!(storage.blocks().stats().blocks, 0, "every block is collected (seed {seed})");
}

#[tokio::test]
async fn pipelined_writes_from_many_senders_keep_totals_and_references_exact() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::open(dir.path(), StorageOptions::default()).unwrap();
    let directory = Directory::start(storage.clone(), SupervisionConfig::default()).await.unwrap();
    directory.register::<Bucket>();
    ask(&directory, BucketMsg::Create { owner: "root".into(), grants: Vec::new(), object_lock: false }).await;
    let bodies: Vec<ObjectBody> = futures_bodies(&storage).await;

    let mut senders = Vec::new();
    for sender in 0..16u64 {
        let (directory, bodies) = (directory.clone(), bodies.clone());
        senders.push(tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(sender);
            for _ in 0..60 {
                let key = format!("k{}", rng.random_range(0..5));
                let msg = if rng.random_bool(0.75) {
                    let body = bodies[rng.random_range(0..bodies.len())].clone();
                    BucketMsg::PutObject {
                        key,
                        body,
                        tags: Vec::new(),
                        condition: None,
                        lock: ObjectLock::default(),
                        acl: Box::new(ObjectAcl { owner: "root".into(), grants: Vec::new() }),
                    }
                } else {
                    BucketMsg::DeleteObject {
                        key,
                        version_id: None,
                        if_match: None,
                        bypass_governance: false,
                    }
                };
                let reply = directory.call(&ActorKey::new(ActorKind::Bucket, "model"), msg).await.unwrap();
                assert!(
                    matches!(reply, BucketReply::Committed { .. } | BucketReply::Deleted { .. }),
                    "{reply:?}"
                );
            }
        }));
    }
    for sender in senders {
        sender.await.unwrap();
    }

    // A listing fences: storage now holds every staged write, and the totals must agree with it.
    let BucketReply::Listing(listing) =
        ask(&directory, BucketMsg::List(ListRequest { max: 1000, ..Default::default() })).await
    else {
        panic!("no listing")
    };
    let BucketReply::Info(_) = ask(&directory, BucketMsg::Head).await else { panic!("no info") };
    let meta = storage.table(BUCKETS).unwrap().get(&"model".to_string()).unwrap().unwrap();
    assert_eq!(meta.objects, listing.objects.len() as u64);
    assert_eq!(meta.bytes, listing.objects.iter().map(|o| o.size).sum::<u64>());
    let refs = storage.blocks().refs().scan(&KeyPrefix::new(), None).count();
    assert_eq!(refs, listing.objects.len(), "one reference per current object (one block each)");

    for object in listing.objects {
        ask(
            &directory,
            BucketMsg::DeleteObject {
                key: object.key,
                version_id: None,
                if_match: None,
                bypass_governance: false,
            },
        )
        .await;
    }
    assert!(matches!(ask(&directory, BucketMsg::Delete).await, BucketReply::Done));
    assert_eq!(storage.blocks().refs().scan(&KeyPrefix::new(), None).count(), 0);
    // Releases follow durability; give the last replies' tasks a moment, then collect.
    tokio::time::sleep(Duration::from_millis(50)).await;
    storage.blocks().collect_garbage().unwrap();
    assert_eq!(storage.blocks().stats().blocks, 0, "every block is collected");
}

async fn futures_bodies(storage: &Storage) -> Vec<ObjectBody> {
    let mut bodies = Vec::new();
    for content in 0..4u8 {
        bodies.push(body(storage, content).await);
    }
    bodies
}

#[tokio::test]
async fn delimiter_listings_page_through_prefixes_and_keys_one_entry_at_a_time() {
    let node = crate::testing::node_with::<Bucket>().await;
    let directory = node.directory.clone();
    ask(&directory, BucketMsg::Create { owner: "root".into(), grants: Vec::new(), object_lock: false }).await;
    let keys = ["a/1", "a/2", "a/x/3", "b", "c/1", "c0", "d/", "d/e/f"];
    for key in keys {
        let body = body(&node.storage, 1).await;
        ask(
            &directory,
            BucketMsg::PutObject {
                key: key.into(),
                body,
                tags: Vec::new(),
                condition: None,
                lock: ObjectLock::default(),
                acl: Box::new(ObjectAcl { owner: "root".into(), grants: Vec::new() }),
            },
        )
        .await;
    }
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let request =
            ListRequest { prefix: String::new(), delimiter: Some("/".into()), after: after.clone(), max: 1 };
        let BucketReply::Listing(page) = ask(&directory, BucketMsg::List(request)).await else { panic!() };
        seen.extend(page.common_prefixes.iter().cloned());
        seen.extend(page.objects.iter().map(|o| o.key.clone()));
        match page.next_after {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert_eq!(seen, ["a/", "b", "c/", "c0", "d/"]);
    let request = ListRequest { prefix: "a/".into(), delimiter: Some("/".into()), after: None, max: 10 };
    let BucketReply::Listing(page) = ask(&directory, BucketMsg::List(request)).await else { panic!() };
    let keys: Vec<_> = page.objects.iter().map(|o| o.key.as_str()).collect();
    assert_eq!((keys, page.common_prefixes), (vec!["a/1", "a/2"], vec!["a/x/".to_string()]));
}

#[test]
fn a_format_1_bucket_meta_reads_back_without_cors_rules() {
    use serv_storage::Record;
    let old = prev::v1::BucketMeta {
        owner: "owner".into(),
        created_ms: 7,
        acl: CannedAcl::PublicRead,
        policy: Some("{}".into()),
        versioning: Versioning::Suspended,
        objects: 3,
        bytes: 300,
        versions: 4,
        uploads: 1,
        next_seq: 9,
    };
    let body = serv_storage::codec::encode(&old).unwrap();
    let meta = BucketMeta::upgrade(1, &body).expect("format 1 is known").expect("it decodes");
    let public_read = vec![Grant { grantee: Grantee::AllUsers, permission: Permission::Read }];
    assert_eq!((meta.owner.as_str(), meta.created_ms, meta.grants), ("owner", 7, public_read));
    assert_eq!((meta.policy.as_deref(), meta.versioning), (Some("{}"), Versioning::Suspended));
    assert_eq!((meta.objects, meta.bytes, meta.versions, meta.uploads, meta.next_seq), (3, 300, 4, 1, 9));
    assert_eq!(meta.cors, None);
    assert!(BucketMeta::upgrade(4, &body).is_none(), "an unknown format is not guessed at");
}

#[test]
fn a_format_1_upload_reads_back_without_tags() {
    use serv_storage::Record;
    let meta = ObjectMeta { content_type: Some("text/plain".into()), ..Default::default() };
    let old = prev::v1::UploadRecord {
        key: "k".into(),
        initiated_ms: 5,
        meta: meta.clone(),
        initiator: "me".into(),
    };
    let body = serv_storage::codec::encode(&old).unwrap();
    let upload = UploadRecord::upgrade(1, &body).expect("format 1 is known").expect("it decodes");
    assert_eq!((upload.key.as_str(), upload.initiated_ms, upload.initiator.as_str()), ("k", 5, "me"));
    assert_eq!((upload.meta, upload.tags), (meta, Vec::new()));
    assert!(UploadRecord::upgrade(5, &body).is_none(), "an unknown format is not guessed at");
}

/// A three-byte body without blocks, for records that are only encoded and decoded.
fn small_body() -> ObjectBody {
    ObjectBody {
        size: 3,
        etag: "abc".into(),
        chunks: Vec::new(),
        meta: ObjectMeta::default(),
        checksums: Checksums::default(),
        part_sizes: vec![3],
    }
}

#[test]
fn format_1_objects_and_versions_read_back_without_an_upload_id() {
    use serv_storage::Record;
    let body = small_body();
    let old = || prev::v1::ObjectRecord {
        body: body.clone(),
        version_id: Some("v".into()),
        seq: 4,
        last_modified_ms: 8,
        block_owner: "o/b/1/4".into(),
        tags: vec![("t".into(), "1".into())],
    };
    let encoded = serv_storage::codec::encode(&old()).unwrap();
    let object = ObjectRecord::upgrade(1, &encoded).expect("format 1 is known").expect("it decodes");
    assert_eq!((&object.body, object.version_id.as_deref(), object.seq), (&body, Some("v"), 4));
    assert_eq!((object.last_modified_ms, object.block_owner.as_str()), (8, "o/b/1/4"));
    assert_eq!((object.tags.len(), object.upload_id), (1, None));
    assert!(ObjectRecord::upgrade(4, &encoded).is_none(), "an unknown format is not guessed at");

    for content in [Some(old()), None] {
        let marker = content.is_none();
        let encoded = serv_storage::codec::encode(&prev::v1::VersionRecord {
            version_id: "v".into(),
            last_modified_ms: 8,
            object: content,
        })
        .unwrap();
        let version = VersionRecord::upgrade(1, &encoded).expect("format 1 is known").expect("it decodes");
        assert_eq!((version.version_id.as_str(), version.last_modified_ms), ("v", 8));
        assert_eq!(version.object.is_none(), marker);
        assert!(version.object.is_none_or(|o| o.body == body && o.upload_id.is_none()));
    }
}

#[tokio::test]
async fn locked_versions_are_not_deleted_but_a_plain_delete_adds_a_marker() {
    let node = crate::testing::node_with::<Bucket>().await;
    let (directory, storage) = (&node.directory, &node.storage);
    ask(directory, BucketMsg::Create { owner: "root".into(), grants: Vec::new(), object_lock: false }).await;
    let config = ObjectLockConfig {
        default_retention: Some(DefaultRetention {
            mode: RetentionMode::Governance,
            period: RetentionPeriod::Days(1),
        }),
    };
    let reply = ask(directory, BucketMsg::SetObjectLock(config)).await;
    assert!(matches!(reply, BucketReply::Refused(Refusal::ObjectLockNeedsVersioning)), "{reply:?}");
    ask(directory, BucketMsg::SetVersioning(Versioning::Enabled)).await;
    assert!(matches!(ask(directory, BucketMsg::SetObjectLock(config)).await, BucketReply::Done));
    let reply = ask(directory, BucketMsg::SetVersioning(Versioning::Suspended)).await;
    assert!(matches!(reply, BucketReply::Refused(Refusal::VersioningLocked)), "{reply:?}");

    let put = |content, lock| async move {
        let body = body(storage, content).await;
        let acl = Box::new(ObjectAcl { owner: "root".into(), grants: Vec::new() });
        let msg =
            BucketMsg::PutObject { key: "k".into(), body, tags: Vec::new(), condition: None, lock, acl };
        let BucketReply::Committed { version_id: Some(id), .. } = ask(directory, msg).await else {
            panic!("no version")
        };
        id
    };
    let delete = |version_id: &str, bypass_governance| {
        let version_id = Some(version_id.to_string());
        ask(
            directory,
            BucketMsg::DeleteObject { key: "k".into(), version_id, if_match: None, bypass_governance },
        )
    };
    let governed = put(1, ObjectLock::default()).await;
    assert!(matches!(delete(&governed, false).await, BucketReply::Refused(Refusal::ObjectLocked)));
    let retention = Some(Retention { mode: RetentionMode::Compliance, until_ms: now_ms() + 60_000 });
    let complied = put(2, ObjectLock { retention, legal_hold: false }).await;
    assert!(matches!(delete(&complied, true).await, BucketReply::Refused(Refusal::ObjectLocked)));
    let msg = BucketMsg::DeleteObject {
        key: "k".into(),
        version_id: None,
        if_match: None,
        bypass_governance: false,
    };
    assert!(matches!(ask(directory, msg).await, BucketReply::Deleted { delete_marker: true, .. }));
    let msg = BucketMsg::GetObject { key: "k".into(), version_id: Some(complied.clone()) };
    let BucketReply::Object(object) = ask(directory, msg).await else { panic!("the locked version is gone") };
    assert_eq!(object.lock.retention, retention);

    let hold = |on| BucketMsg::PutLegalHold { key: "k".into(), version_id: Some(governed.clone()), on };
    assert!(matches!(ask(directory, hold(true)).await, BucketReply::Done));
    assert!(matches!(delete(&governed, true).await, BucketReply::Refused(Refusal::ObjectLocked)));
    assert!(matches!(ask(directory, hold(false)).await, BucketReply::Done));
    assert!(matches!(delete(&governed, true).await, BucketReply::Deleted { .. }), "bypassed once released");
}

#[test]
fn format_2_records_read_back_without_object_lock() {
    use serv_storage::Record;
    let old = prev::v2::BucketMeta {
        owner: "owner".into(),
        created_ms: 7,
        acl: CannedAcl::Private,
        policy: None,
        cors: Some(CorsConfiguration { rules: Vec::new() }),
        versioning: Versioning::Enabled,
        objects: 3,
        bytes: 300,
        versions: 4,
        uploads: 1,
        next_seq: 9,
    };
    let meta = BucketMeta::upgrade(2, &serv_storage::codec::encode(&old).unwrap()).unwrap().unwrap();
    assert_eq!((meta.versioning, meta.next_seq, meta.object_lock), (Versioning::Enabled, 9, None));
    assert_eq!(meta.cors, Some(CorsConfiguration { rules: Vec::new() }));

    let object = prev::v2::ObjectRecord {
        body: small_body(),
        version_id: Some("v".into()),
        seq: 4,
        last_modified_ms: 8,
        block_owner: "o/b/1/4".into(),
        tags: Vec::new(),
        upload_id: Some("u".into()),
    };
    let version =
        prev::v2::VersionRecord { version_id: "v".into(), last_modified_ms: 8, object: Some(object) };
    let encoded = serv_storage::codec::encode(&version).unwrap();
    let version = VersionRecord::upgrade(2, &encoded).expect("format 2 is known").expect("it decodes");
    let object = version.object.expect("an object version");
    assert_eq!((object.upload_id.as_deref(), object.lock), (Some("u"), ObjectLock::default()));
    assert_eq!(object.acl, None, "a version from before ACLs is the bucket owner's");

    let upload = prev::v2::UploadRecord {
        key: "k".into(),
        initiated_ms: 5,
        meta: ObjectMeta::default(),
        initiator: "me".into(),
        tags: vec![("t".into(), "1".into())],
    };
    let upload = UploadRecord::upgrade(2, &serv_storage::codec::encode(&upload).unwrap()).unwrap().unwrap();
    assert_eq!((upload.tags.len(), upload.lock), (1, ObjectLock::default()));
}

#[test]
fn format_3_records_read_back_with_canned_acls_as_grants_and_uploads_without() {
    use serv_storage::Record;
    let old = prev::v3::BucketMeta {
        owner: "owner".into(),
        created_ms: 7,
        acl: CannedAcl::AuthenticatedRead,
        policy: None,
        cors: None,
        versioning: Versioning::Enabled,
        object_lock: None,
        objects: 0,
        bytes: 0,
        versions: 0,
        uploads: 0,
        next_seq: 2,
    };
    let meta = BucketMeta::upgrade(3, &serv_storage::codec::encode(&old).unwrap()).unwrap().unwrap();
    let read = vec![Grant { grantee: Grantee::AuthenticatedUsers, permission: Permission::Read }];
    assert_eq!((meta.owner.as_str(), meta.grants), ("owner", read));

    let upload = prev::v3::UploadRecord {
        key: "k".into(),
        initiated_ms: 5,
        meta: ObjectMeta::default(),
        initiator: "me".into(),
        tags: Vec::new(),
        lock: ObjectLock::default(),
    };
    let upload = UploadRecord::upgrade(3, &serv_storage::codec::encode(&upload).unwrap()).unwrap().unwrap();
    assert_eq!((upload.initiator.as_str(), upload.grants), ("me", Vec::new()));
}
