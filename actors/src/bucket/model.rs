//! What a bucket stores and what can be asked of it: records, tables, messages and replies.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serv_storage::blocks::BlockHash;
use serv_storage::codec::{self, CodecError};
use serv_storage::{Record, TableDef};

use super::acl::{Grant, ObjectAcl};
use super::lock::{ObjectLock, ObjectLockConfig, Retention};
use super::prev::{v1, v2, v3};
use crate::{ActorKind, KindMessage};

/// Who may do what on a bucket besides its owner (S3 canned ACLs), as buckets stored it before
/// format 4 (now: [`Grant`]s).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum CannedAcl {
    /// Only the owner.
    #[default]
    Private,
    /// Anyone may read objects and list.
    PublicRead,
    /// Anyone may read and write.
    PublicReadWrite,
    /// Any authenticated key may read and list.
    AuthenticatedRead,
}

/// A bucket's versioning state (S3: never enabled, enabled, or suspended after being enabled).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Versioning {
    #[default]
    Unversioned,
    Enabled,
    Suspended,
}

/// A bucket's durable description and running totals (the bucket actor is its only writer).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BucketMeta {
    /// Access key that created the bucket (its account owns the bucket).
    pub owner: String,
    /// Creation time, Unix milliseconds; also tells one incarnation of a name from the next.
    pub created_ms: u64,
    /// ACL grants besides the owner's full control, at most [`super::MAX_GRANTS`].
    pub grants: Vec<Grant>,
    /// Bucket policy document (JSON, checked by the edge before it is set).
    pub policy: Option<String>,
    /// CORS rules (checked by the edge before they are set); none: cross-origin requests refused.
    pub cors: Option<CorsConfiguration>,
    pub versioning: Versioning,
    /// Object lock, once enabled (for good; versioning then stays enabled); none: never enabled.
    pub object_lock: Option<ObjectLockConfig>,
    /// Current objects (not counting older versions and delete markers).
    pub objects: u64,
    /// Bytes of those objects.
    pub bytes: u64,
    /// Entries of version history (versions and delete markers), once versioning is on.
    pub versions: u64,
    /// Multipart uploads in progress.
    pub uploads: u64,
    /// Next sequence number, unique within this incarnation (block owners, upload ids).
    pub next_seq: u64,
}

impl Record for BucketMeta {
    const FORMAT: u8 = 4;

    fn upgrade(format: u8, body: &[u8]) -> Option<Result<Self, CodecError>> {
        match format {
            1 => Some(
                codec::decode::<v1::BucketMeta>(body)
                    .map(|old| v3::BucketMeta::from(v2::BucketMeta::from(old)).into()),
            ),
            2 => Some(codec::decode::<v2::BucketMeta>(body).map(|old| v3::BucketMeta::from(old).into())),
            3 => Some(codec::decode::<v3::BucketMeta>(body).map(Into::into)),
            _ => None,
        }
    }
}

/// A bucket's CORS configuration (S3 `CORSConfiguration`): its rules, tried in order, at least one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CorsConfiguration {
    pub rules: Vec<CorsRule>,
}

/// One CORS rule (S3 `CORSRule`): which origins may make which requests, and what a browser
/// is told about them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CorsRule {
    /// Optional name of the rule.
    pub id: Option<String>,
    /// Origins allowed, each with at most one `*` wildcard; at least one.
    pub allowed_origins: Vec<String>,
    /// HTTP methods allowed (GET, PUT, POST, DELETE, HEAD); at least one.
    pub allowed_methods: Vec<String>,
    /// Request headers a preflight may ask for, each with at most one `*` wildcard.
    pub allowed_headers: Vec<String>,
    /// Response headers a browser may let scripts read.
    pub expose_headers: Vec<String>,
    /// How long a browser may cache the preflight answer, in seconds.
    pub max_age_seconds: Option<i32>,
}

/// One stretch of an object's body: a content block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chunk {
    /// The block holding the bytes.
    pub hash: BlockHash,
    /// Its length.
    pub len: u32,
}

/// The headers an object keeps and returns.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectMeta {
    pub content_type: Option<String>,
    pub content_encoding: Option<String>,
    pub content_disposition: Option<String>,
    pub content_language: Option<String>,
    pub cache_control: Option<String>,
    pub expires: Option<String>,
    /// `x-amz-meta-*` pairs, names lower-cased without the prefix.
    pub user: BTreeMap<String, String>,
}

/// Checksums requested by the writer, base64 as S3 sends them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checksums {
    pub crc32: Option<String>,
    pub crc32c: Option<String>,
    pub sha1: Option<String>,
    pub sha256: Option<String>,
}

/// An object's body and description, as written by the edge.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ObjectBody {
    pub size: u64,
    /// ETag without quotes: MD5 hex, or `md5-of-md5s-N` for a multipart object.
    pub etag: String,
    pub chunks: Vec<Chunk>,
    pub meta: ObjectMeta,
    pub checksums: Checksums,
    /// Part sizes of a multipart object (for `partNumber` reads), empty otherwise.
    pub part_sizes: Vec<u64>,
}

/// A stored version of an object (the current one in [`OBJECTS`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ObjectRecord {
    pub body: ObjectBody,
    /// Its version id: `None` in a bucket that never had versioning, else an id or `null`.
    pub version_id: Option<String>,
    /// Sequence number of the write that made it (orders versions).
    pub seq: u64,
    pub last_modified_ms: u64,
    /// Owner name of this version's block references.
    pub block_owner: String,
    pub tags: Vec<(String, String)>,
    /// The multipart upload that completed into this version, if one did: a repeated
    /// CompleteMultipartUpload of it answers with this version, as S3 does.
    pub upload_id: Option<String>,
    /// Its object lock: retention and legal hold (none in a bucket without object lock).
    pub lock: ObjectLock,
    /// Its owner and ACL grants; `None` for versions written before format 4, which belong to
    /// the bucket's owner and grant nothing more.
    pub acl: Option<ObjectAcl>,
}

impl Record for ObjectRecord {
    const FORMAT: u8 = 4;

    fn upgrade(format: u8, body: &[u8]) -> Option<Result<Self, CodecError>> {
        match format {
            1 => Some(
                codec::decode::<v1::ObjectRecord>(body)
                    .map(|old| v3::ObjectRecord::from(v2::ObjectRecord::from(old)).into()),
            ),
            2 => Some(codec::decode::<v2::ObjectRecord>(body).map(|old| v3::ObjectRecord::from(old).into())),
            3 => Some(codec::decode::<v3::ObjectRecord>(body).map(Into::into)),
            _ => None,
        }
    }
}

/// One entry of a key's version history: an object version or a delete marker.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VersionRecord {
    pub version_id: String,
    pub last_modified_ms: u64,
    /// The version's object, or `None` for a delete marker.
    pub object: Option<ObjectRecord>,
}

impl Record for VersionRecord {
    const FORMAT: u8 = 4;

    fn upgrade(format: u8, body: &[u8]) -> Option<Result<Self, CodecError>> {
        match format {
            1 => Some(
                codec::decode::<v1::VersionRecord>(body)
                    .map(|old| v3::VersionRecord::from(v2::VersionRecord::from(old)).into()),
            ),
            2 => {
                Some(codec::decode::<v2::VersionRecord>(body).map(|old| v3::VersionRecord::from(old).into()))
            }
            3 => Some(codec::decode::<v3::VersionRecord>(body).map(Into::into)),
            _ => None,
        }
    }
}

/// A multipart upload in progress.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UploadRecord {
    pub key: String,
    pub initiated_ms: u64,
    pub meta: ObjectMeta,
    pub initiator: String,
    /// Tags the completed object gets (`x-amz-tagging` of CreateMultipartUpload).
    pub tags: Vec<(String, String)>,
    /// The object lock the completed object asks for (`x-amz-object-lock-*` of
    /// CreateMultipartUpload); the bucket's default retention applies on completion if it names none.
    pub lock: ObjectLock,
    /// ACL grants the completed object gets (the ACL CreateMultipartUpload asked for).
    pub grants: Vec<Grant>,
}

impl Record for UploadRecord {
    const FORMAT: u8 = 4;

    fn upgrade(format: u8, body: &[u8]) -> Option<Result<Self, CodecError>> {
        match format {
            1 => Some(
                codec::decode::<v1::UploadRecord>(body)
                    .map(|old| v3::UploadRecord::from(v2::UploadRecord::from(old)).into()),
            ),
            2 => Some(codec::decode::<v2::UploadRecord>(body).map(|old| v3::UploadRecord::from(old).into())),
            3 => Some(codec::decode::<v3::UploadRecord>(body).map(Into::into)),
            _ => None,
        }
    }
}

/// One uploaded part.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PartRecord {
    pub size: u64,
    /// MD5 hex of the part, without quotes.
    pub etag: String,
    pub chunks: Vec<Chunk>,
    pub last_modified_ms: u64,
    pub block_owner: String,
}

impl Record for PartRecord {
    const FORMAT: u8 = 1;
}

/// Buckets by name.
pub const BUCKETS: TableDef<String, BucketMeta> = TableDef::new("buckets");
/// Current objects by (bucket, key).
pub const OBJECTS: TableDef<(String, String), ObjectRecord> = TableDef::new("objects");
/// Version history by (bucket, key, `u64::MAX - seq`): newest first. Kept once versioning has
/// been enabled on a bucket.
pub const VERSIONS: TableDef<(String, String, u64), VersionRecord> = TableDef::new("versions");
/// Uploads in progress by (bucket, upload id).
pub const UPLOADS: TableDef<(String, String), UploadRecord> = TableDef::new("uploads");
/// Parts by (bucket, upload id, part number).
pub const PARTS: TableDef<(String, String, u64), PartRecord> = TableDef::new("parts");

/// A condition on the object a write replaces (S3 conditional writes), checked by the bucket
/// actor when it commits, so that no other write can come between the check and the write.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WriteCondition {
    /// Only if the key has no current object (`If-None-Match: *`); a delete marker is none.
    Absent,
    /// Only if the current object has this ETag (`If-Match`; `*` matches any object).
    ETag(String),
}

/// What can be asked of a bucket.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum BucketMsg {
    Create {
        owner: String,
        grants: Vec<Grant>,
        /// Enable object lock (and so versioning) from the start.
        object_lock: bool,
    },
    Delete,
    Head,
    SetAcl(Vec<Grant>),
    /// Replaces the grants of `key` (or one version of it).
    SetObjectAcl {
        key: String,
        version_id: Option<String>,
        grants: Vec<Grant>,
    },
    SetPolicy(Option<String>),
    SetCors(Option<CorsConfiguration>),
    SetVersioning(Versioning),
    /// Enables object lock, or changes the default retention of a bucket that has it.
    SetObjectLock(ObjectLockConfig),
    ListVersions(ListVersionsRequest),
    PutObject {
        key: String,
        body: ObjectBody,
        tags: Vec<(String, String)>,
        condition: Option<WriteCondition>,
        /// The lock the new version asks for (the bucket's default retention if it names none).
        lock: ObjectLock,
        /// Its owner and grants (boxed: the message stays small).
        acl: Box<ObjectAcl>,
    },
    GetObject {
        key: String,
        version_id: Option<String>,
    },
    /// Deletes `key` (or one version of it); with `if_match`, only if that object has this ETag.
    DeleteObject {
        key: String,
        version_id: Option<String>,
        if_match: Option<String>,
        /// The caller asked to bypass GOVERNANCE retention and may.
        bypass_governance: bool,
    },
    /// Sets (or, with `None`, removes) the retention of `key` (or one version of it).
    PutRetention {
        key: String,
        version_id: Option<String>,
        retention: Option<Retention>,
        /// The caller asked to bypass GOVERNANCE retention and may.
        bypass_governance: bool,
    },
    /// Turns the legal hold of `key` (or one version of it) on or off.
    PutLegalHold {
        key: String,
        version_id: Option<String>,
        on: bool,
    },
    PutTags {
        key: String,
        version_id: Option<String>,
        tags: Vec<(String, String)>,
    },
    List(ListRequest),
    CreateUpload {
        key: String,
        meta: ObjectMeta,
        initiator: String,
        tags: Vec<(String, String)>,
        lock: ObjectLock,
        /// Grants the completed object gets.
        grants: Vec<Grant>,
    },
    GetUpload {
        upload_id: String,
    },
    PutPart {
        upload_id: String,
        part_number: u32,
        part: PartRecord,
    },
    /// Completes `key`'s upload (or, repeated, answers as the first completion did).
    CompleteUpload {
        key: String,
        upload_id: String,
        parts: Vec<(u32, String)>,
        min_part_size: u64,
        condition: Option<WriteCondition>,
    },
    AbortUpload {
        upload_id: String,
    },
    ListParts {
        upload_id: String,
        after: u32,
        max: usize,
    },
    ListUploads {
        prefix: String,
        after: Option<(String, String)>,
        max: usize,
    },
}

impl KindMessage for BucketMsg {
    const KIND: ActorKind = ActorKind::Bucket;
    type Reply = BucketReply;

    fn is_read_only(&self) -> bool {
        matches!(
            self,
            BucketMsg::Head
                | BucketMsg::ListVersions(_)
                | BucketMsg::GetObject { .. }
                | BucketMsg::List(_)
                | BucketMsg::GetUpload { .. }
                | BucketMsg::ListParts { .. }
                | BucketMsg::ListUploads { .. }
        )
    }
}

/// A page of a listing by prefix (and delimiter).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ListRequest {
    pub prefix: String,
    pub delimiter: Option<String>,
    /// Continue after this key or common prefix.
    pub after: Option<String>,
    pub max: usize,
}

/// A page of a version listing, continuing after (key, version id) markers.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ListVersionsRequest {
    pub prefix: String,
    pub delimiter: Option<String>,
    pub key_marker: Option<String>,
    pub version_marker: Option<String>,
    pub max: usize,
}

/// One listed version or delete marker.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ListedVersion {
    pub key: String,
    pub version_id: String,
    pub is_latest: bool,
    pub last_modified_ms: u64,
    /// Access key that wrote it; `None`: the bucket's owner.
    pub owner: Option<String>,
    /// Size and ETag of an object version; `None` for a delete marker.
    pub object: Option<(u64, String)>,
}

/// A version listing page.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct VersionListing {
    pub versions: Vec<ListedVersion>,
    pub common_prefixes: Vec<String>,
    /// (key, version id) to continue after, when truncated.
    pub next: Option<(String, String)>,
}

/// One listed object.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ListedObject {
    pub key: String,
    /// Access key that wrote it; `None`: the bucket's owner.
    pub owner: Option<String>,
    pub size: u64,
    pub etag: String,
    pub last_modified_ms: u64,
}

/// A listing page.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Listing {
    pub objects: Vec<ListedObject>,
    pub common_prefixes: Vec<String>,
    /// Where the next page starts (the last key or common prefix of this one), when truncated.
    pub next_after: Option<String>,
}

/// A bucket's description for HEAD and for the access checks of the edge.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BucketInfo {
    pub name: String,
    pub owner: String,
    pub created_ms: u64,
    pub grants: Vec<Grant>,
    pub policy: Option<String>,
    pub cors: Option<CorsConfiguration>,
    pub versioning: Versioning,
    pub object_lock: Option<ObjectLockConfig>,
}

/// An upload in progress, as listed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UploadInfo {
    pub upload_id: String,
    pub key: String,
    pub initiated_ms: u64,
    pub initiator: String,
    pub meta: ObjectMeta,
}

/// One listed part.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PartInfo {
    pub part_number: u32,
    pub size: u64,
    pub etag: String,
    pub last_modified_ms: u64,
}

/// Why a bucket refused a request; each maps to one S3 error code.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Refusal {
    #[error("The specified bucket does not exist")]
    NoSuchBucket,
    #[error("Your previous request to create the named bucket succeeded and you already own it")]
    BucketAlreadyOwnedByYou,
    #[error("The requested bucket name is not available")]
    BucketAlreadyExists,
    #[error("The bucket you tried to delete is not empty")]
    BucketNotEmpty,
    #[error("The specified key does not exist")]
    NoSuchKey,
    #[error("The specified version does not exist")]
    NoSuchVersion,
    #[error("The specified multipart upload does not exist")]
    NoSuchUpload,
    #[error(
        "One or more of the specified parts could not be found or its entity tag did not match: part {0}"
    )]
    InvalidPart(u32),
    #[error("The list of parts was not in ascending order")]
    InvalidPartOrder,
    #[error("Your proposed upload is smaller than the minimum allowed size (part {0})")]
    EntityTooSmall(u32),
    #[error("At least one of the preconditions you specified did not hold")]
    PreconditionFailed,
    /// The key's current version is a delete marker: S3 answers NoSuchKey, naming the marker.
    #[error("The specified key does not exist")]
    DeletedByMarker(MarkerInfo),
    /// The version asked for is a delete marker, which has no body or headers to read.
    #[error("The specified method is not allowed against this resource (a delete marker)")]
    DeleteMarker(MarkerInfo),
    #[error("Invalid version id specified")]
    InvalidVersionId,
    #[error("Versioning cannot be turned off once enabled; suspend it instead")]
    CannotUnversion,
    /// A version under retention or legal hold cannot be deleted, nor its retention weakened.
    #[error("Access Denied because object protected by object lock")]
    ObjectLocked,
    #[error("Bucket is missing Object Lock Configuration")]
    ObjectLockNotEnabled,
    #[error("Versioning must be 'Enabled' on the bucket to apply a Object Lock configuration")]
    ObjectLockNeedsVersioning,
    #[error(
        "An Object Lock configuration is present on this bucket, so the versioning state cannot be changed"
    )]
    VersioningLocked,
}

/// A delete marker, as a refusal names it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MarkerInfo {
    pub version_id: String,
    pub last_modified_ms: u64,
}

/// What a bucket answers.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum BucketReply {
    Done,
    Info(BucketInfo),
    Object(Box<ObjectRecord>),
    Committed { etag: String, version_id: Option<String> },
    Deleted { version_id: Option<String>, delete_marker: bool },
    Listing(Listing),
    Versions(VersionListing),
    Upload(UploadInfo),
    Parts { parts: Vec<PartInfo>, truncated: bool },
    Uploads { uploads: Vec<UploadInfo>, common_prefixes: Vec<String>, truncated: bool },
    Refused(Refusal),
}
