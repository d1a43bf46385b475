//! Earlier formats of the bucket's stored records, kept readable: each record type's `upgrade`
//! decodes one of these and converts it to the current layout (see [`serv_storage::Record`]).
//! Tests write them too, to prove an old record still reads.

//! Each format converts to the next one, so that an upgrade is a chain of small steps.

/// Format 1: buckets before CORS rules; uploads before tags; objects and versions before the id
/// of the upload that completed them.
pub(super) mod v1 {
    use serde::Deserialize;

    use super::super::model::{CannedAcl, ObjectBody, ObjectMeta, Versioning};
    use super::v2 as model;

    #[derive(Deserialize)]
    #[cfg_attr(test, derive(serde::Serialize))]
    pub struct BucketMeta {
        pub(in crate::bucket) owner: String,
        pub(in crate::bucket) created_ms: u64,
        pub(in crate::bucket) acl: CannedAcl,
        pub(in crate::bucket) policy: Option<String>,
        pub(in crate::bucket) versioning: Versioning,
        pub(in crate::bucket) objects: u64,
        pub(in crate::bucket) bytes: u64,
        pub(in crate::bucket) versions: u64,
        pub(in crate::bucket) uploads: u64,
        pub(in crate::bucket) next_seq: u64,
    }

    impl From<BucketMeta> for model::BucketMeta {
        fn from(old: BucketMeta) -> Self {
            Self {
                owner: old.owner,
                created_ms: old.created_ms,
                acl: old.acl,
                policy: old.policy,
                cors: None,
                versioning: old.versioning,
                objects: old.objects,
                bytes: old.bytes,
                versions: old.versions,
                uploads: old.uploads,
                next_seq: old.next_seq,
            }
        }
    }

    #[derive(Deserialize)]
    #[cfg_attr(test, derive(serde::Serialize))]
    pub struct UploadRecord {
        pub(in crate::bucket) key: String,
        pub(in crate::bucket) initiated_ms: u64,
        pub(in crate::bucket) meta: ObjectMeta,
        pub(in crate::bucket) initiator: String,
    }

    impl From<UploadRecord> for model::UploadRecord {
        fn from(old: UploadRecord) -> Self {
            Self {
                key: old.key,
                initiated_ms: old.initiated_ms,
                meta: old.meta,
                initiator: old.initiator,
                tags: Vec::new(),
            }
        }
    }

    #[derive(Deserialize)]
    #[cfg_attr(test, derive(serde::Serialize))]
    pub struct ObjectRecord {
        pub(in crate::bucket) body: ObjectBody,
        pub(in crate::bucket) version_id: Option<String>,
        pub(in crate::bucket) seq: u64,
        pub(in crate::bucket) last_modified_ms: u64,
        pub(in crate::bucket) block_owner: String,
        pub(in crate::bucket) tags: Vec<(String, String)>,
    }

    impl From<ObjectRecord> for model::ObjectRecord {
        fn from(old: ObjectRecord) -> Self {
            Self {
                body: old.body,
                version_id: old.version_id,
                seq: old.seq,
                last_modified_ms: old.last_modified_ms,
                block_owner: old.block_owner,
                tags: old.tags,
                upload_id: None,
            }
        }
    }

    #[derive(Deserialize)]
    #[cfg_attr(test, derive(serde::Serialize))]
    pub struct VersionRecord {
        pub(in crate::bucket) version_id: String,
        pub(in crate::bucket) last_modified_ms: u64,
        pub(in crate::bucket) object: Option<ObjectRecord>,
    }

    impl From<VersionRecord> for model::VersionRecord {
        fn from(old: VersionRecord) -> Self {
            Self {
                version_id: old.version_id,
                last_modified_ms: old.last_modified_ms,
                object: old.object.map(Into::into),
            }
        }
    }
}

/// Format 2: buckets, objects, versions and uploads before object lock (each converts to format 3).
pub(super) mod v2 {
    use serde::Deserialize;

    use super::super::lock::ObjectLock;
    use super::super::model::{CannedAcl, CorsConfiguration, ObjectBody, ObjectMeta, Versioning};
    use super::v3 as model;

    #[derive(Deserialize)]
    #[cfg_attr(test, derive(serde::Serialize))]
    pub struct BucketMeta {
        pub(in crate::bucket) owner: String,
        pub(in crate::bucket) created_ms: u64,
        pub(in crate::bucket) acl: CannedAcl,
        pub(in crate::bucket) policy: Option<String>,
        pub(in crate::bucket) cors: Option<CorsConfiguration>,
        pub(in crate::bucket) versioning: Versioning,
        pub(in crate::bucket) objects: u64,
        pub(in crate::bucket) bytes: u64,
        pub(in crate::bucket) versions: u64,
        pub(in crate::bucket) uploads: u64,
        pub(in crate::bucket) next_seq: u64,
    }

    impl From<BucketMeta> for model::BucketMeta {
        fn from(old: BucketMeta) -> Self {
            Self {
                owner: old.owner,
                created_ms: old.created_ms,
                acl: old.acl,
                policy: old.policy,
                cors: old.cors,
                versioning: old.versioning,
                object_lock: None,
                objects: old.objects,
                bytes: old.bytes,
                versions: old.versions,
                uploads: old.uploads,
                next_seq: old.next_seq,
            }
        }
    }

    #[derive(Deserialize)]
    #[cfg_attr(test, derive(serde::Serialize))]
    pub struct UploadRecord {
        pub(in crate::bucket) key: String,
        pub(in crate::bucket) initiated_ms: u64,
        pub(in crate::bucket) meta: ObjectMeta,
        pub(in crate::bucket) initiator: String,
        pub(in crate::bucket) tags: Vec<(String, String)>,
    }

    impl From<UploadRecord> for model::UploadRecord {
        fn from(old: UploadRecord) -> Self {
            Self {
                key: old.key,
                initiated_ms: old.initiated_ms,
                meta: old.meta,
                initiator: old.initiator,
                tags: old.tags,
                lock: ObjectLock::default(),
            }
        }
    }

    #[derive(Deserialize)]
    #[cfg_attr(test, derive(serde::Serialize))]
    pub struct ObjectRecord {
        pub(in crate::bucket) body: ObjectBody,
        pub(in crate::bucket) version_id: Option<String>,
        pub(in crate::bucket) seq: u64,
        pub(in crate::bucket) last_modified_ms: u64,
        pub(in crate::bucket) block_owner: String,
        pub(in crate::bucket) tags: Vec<(String, String)>,
        pub(in crate::bucket) upload_id: Option<String>,
    }

    impl From<ObjectRecord> for model::ObjectRecord {
        fn from(old: ObjectRecord) -> Self {
            Self {
                body: old.body,
                version_id: old.version_id,
                seq: old.seq,
                last_modified_ms: old.last_modified_ms,
                block_owner: old.block_owner,
                tags: old.tags,
                upload_id: old.upload_id,
                lock: ObjectLock::default(),
            }
        }
    }

    #[derive(Deserialize)]
    #[cfg_attr(test, derive(serde::Serialize))]
    pub struct VersionRecord {
        pub(in crate::bucket) version_id: String,
        pub(in crate::bucket) last_modified_ms: u64,
        pub(in crate::bucket) object: Option<ObjectRecord>,
    }

    impl From<VersionRecord> for model::VersionRecord {
        fn from(old: VersionRecord) -> Self {
            Self {
                version_id: old.version_id,
                last_modified_ms: old.last_modified_ms,
                object: old.object.map(Into::into),
            }
        }
    }
}

/// Format 3: buckets with a canned ACL; objects, versions and uploads without owner or grants.
pub(super) mod v3 {
    use serde::Deserialize;

    use super::super::acl::grants_of;
    use super::super::lock::{ObjectLock, ObjectLockConfig};
    use super::super::model::{self, CannedAcl, CorsConfiguration, ObjectBody, ObjectMeta, Versioning};

    #[derive(Deserialize)]
    #[cfg_attr(test, derive(serde::Serialize))]
    pub struct UploadRecord {
        pub(in crate::bucket) key: String,
        pub(in crate::bucket) initiated_ms: u64,
        pub(in crate::bucket) meta: ObjectMeta,
        pub(in crate::bucket) initiator: String,
        pub(in crate::bucket) tags: Vec<(String, String)>,
        pub(in crate::bucket) lock: ObjectLock,
    }

    impl From<UploadRecord> for model::UploadRecord {
        fn from(old: UploadRecord) -> Self {
            Self {
                key: old.key,
                initiated_ms: old.initiated_ms,
                meta: old.meta,
                initiator: old.initiator,
                tags: old.tags,
                lock: old.lock,
                grants: Vec::new(),
            }
        }
    }

    #[derive(Deserialize)]
    #[cfg_attr(test, derive(serde::Serialize))]
    pub struct BucketMeta {
        pub(in crate::bucket) owner: String,
        pub(in crate::bucket) created_ms: u64,
        pub(in crate::bucket) acl: CannedAcl,
        pub(in crate::bucket) policy: Option<String>,
        pub(in crate::bucket) cors: Option<CorsConfiguration>,
        pub(in crate::bucket) versioning: Versioning,
        pub(in crate::bucket) object_lock: Option<ObjectLockConfig>,
        pub(in crate::bucket) objects: u64,
        pub(in crate::bucket) bytes: u64,
        pub(in crate::bucket) versions: u64,
        pub(in crate::bucket) uploads: u64,
        pub(in crate::bucket) next_seq: u64,
    }

    impl From<BucketMeta> for model::BucketMeta {
        fn from(old: BucketMeta) -> Self {
            Self {
                owner: old.owner,
                created_ms: old.created_ms,
                grants: grants_of(old.acl),
                policy: old.policy,
                cors: old.cors,
                versioning: old.versioning,
                object_lock: old.object_lock,
                objects: old.objects,
                bytes: old.bytes,
                versions: old.versions,
                uploads: old.uploads,
                next_seq: old.next_seq,
            }
        }
    }

    #[derive(Deserialize)]
    #[cfg_attr(test, derive(serde::Serialize))]
    pub struct ObjectRecord {
        pub(in crate::bucket) body: ObjectBody,
        pub(in crate::bucket) version_id: Option<String>,
        pub(in crate::bucket) seq: u64,
        pub(in crate::bucket) last_modified_ms: u64,
        pub(in crate::bucket) block_owner: String,
        pub(in crate::bucket) tags: Vec<(String, String)>,
        pub(in crate::bucket) upload_id: Option<String>,
        pub(in crate::bucket) lock: ObjectLock,
    }

    impl From<ObjectRecord> for model::ObjectRecord {
        fn from(old: ObjectRecord) -> Self {
            Self {
                body: old.body,
                version_id: old.version_id,
                seq: old.seq,
                last_modified_ms: old.last_modified_ms,
                block_owner: old.block_owner,
                tags: old.tags,
                upload_id: old.upload_id,
                lock: old.lock,
                acl: None,
            }
        }
    }

    #[derive(Deserialize)]
    #[cfg_attr(test, derive(serde::Serialize))]
    pub struct VersionRecord {
        pub(in crate::bucket) version_id: String,
        pub(in crate::bucket) last_modified_ms: u64,
        pub(in crate::bucket) object: Option<ObjectRecord>,
    }

    impl From<VersionRecord> for model::VersionRecord {
        fn from(old: VersionRecord) -> Self {
            Self {
                version_id: old.version_id,
                last_modified_ms: old.last_modified_ms,
                object: old.object.map(Into::into),
            }
        }
    }
}
