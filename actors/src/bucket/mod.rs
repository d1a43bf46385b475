//! The bucket entity: every change of a bucket (create, delete, commit or delete an object,
//! multipart uploads) is a message to its actor, which commits it durably before replying.
//!
//! Object bodies are content blocks written by the edge before it asks the bucket to commit; the
//! bucket writes the object record and the block reference rows in one write set, so an object
//! is visible exactly when its references exist, and releases the references of whatever the
//! write replaced (see [`serv_storage::blocks`]).

mod acl;
mod change;
mod lock;
mod model;
mod prev;

use std::collections::HashMap;

use serv_storage::blocks::{BlockHash, BlockRef};
use serv_storage::{KeyPrefix, Storage, Table};

use change::{NewObject, Op};

pub use acl::{Grant, Grantee, MAX_GRANTS, ObjectAcl, Permission, allows};
pub use lock::{
    DefaultRetention, MAX_RETENTION_DAYS, MAX_RETENTION_YEARS, ObjectLock, ObjectLockConfig, Retention,
    RetentionMode, RetentionPeriod,
};
pub use model::*;

use crate::{Entity, EntityContext, EntityError, now_ms};

/// A bucket name's actor. A name without a bucket loads as absent and refuses object requests.
pub struct Bucket {
    name: String,
    meta: Option<BucketMeta>,
    tables: Tables,
    /// Current objects changed by staged commits, by key, until a fence makes storage current:
    /// the actor's own view of what it wrote but storage may not show yet.
    pending: HashMap<String, Option<ObjectRecord>>,
}

/// Most keys the pipelined path keeps in its own view before fencing.
const MAX_PENDING: usize = 4096;

struct Tables {
    buckets: Table<String, BucketMeta>,
    objects: Table<(String, String), ObjectRecord>,
    versions: Table<(String, String, u64), VersionRecord>,
    uploads: Table<(String, String), UploadRecord>,
    parts: Table<(String, String, u64), PartRecord>,
    refs: Table<(BlockHash, String), BlockRef>,
}

/// The version id of an object in a bucket that never had versioning.
pub const NULL_VERSION: &str = "null";

/// The key of a history row: (bucket, key, `u64::MAX - seq`).
pub(super) type VersionRow = (String, String, u64);

pub(super) type Outcome = Result<BucketReply, EntityError>;

pub(super) fn refused(refusal: Refusal) -> Outcome {
    Ok(BucketReply::Refused(refusal))
}

impl Entity for Bucket {
    type Msg = BucketMsg;

    async fn load(ctx: &EntityContext) -> Result<Self, EntityError> {
        let storage = &ctx.storage;
        let tables = Tables {
            buckets: storage.table(BUCKETS)?,
            objects: storage.table(OBJECTS)?,
            versions: storage.table(VERSIONS)?,
            uploads: storage.table(UPLOADS)?,
            parts: storage.table(PARTS)?,
            refs: storage.blocks().refs().clone(),
        };
        // Commits an earlier incarnation staged may not be applied yet: wait for them first.
        storage.commit(storage.write_set()).await?;
        let meta = tables.buckets.get(&ctx.key.name)?;
        Ok(Bucket { name: ctx.key.name.clone(), meta, tables, pending: HashMap::new() })
    }

    async fn handle(&mut self, msg: BucketMsg, ctx: &EntityContext) -> Outcome {
        let storage = &ctx.storage;
        if let BucketMsg::Create { owner, grants, object_lock } = msg {
            return self.create(storage, owner, grants, object_lock).await;
        }
        let Some(meta) = self.meta.clone() else { return refused(Refusal::NoSuchBucket) };
        // The hot path of an unversioned bucket (put, get, delete of current objects) is
        // pipelined: writes are staged and their replies wait for durability off the actor.
        // Everything else first fences, so that it reads storage with every staged write applied;
        // conditional writes too, so that their condition is decided on durable state only.
        let pipelined = meta.versioning == Versioning::Unversioned
            && self.pending.len() < MAX_PENDING
            && matches!(
                &msg,
                BucketMsg::PutObject { condition: None, .. }
                    | BucketMsg::GetObject { version_id: None, .. }
                    | BucketMsg::DeleteObject {
                        version_id: None,
                        if_match: None,
                        bypass_governance: false,
                        ..
                    }
            );
        if !pipelined {
            self.fence(storage).await?;
        }
        let mut op = Op::new(self, meta, storage);
        match msg {
            BucketMsg::PutObject { key, body, tags, condition, lock, acl } if pipelined => {
                let object = NewObject { body, tags, upload_id: None, lock, acl: *acl };
                op.put_object_with(key, object, condition, Some(ctx)).await
            }
            BucketMsg::DeleteObject { key, version_id: None, if_match: None, .. } if pipelined => {
                op.delete_unversioned_staged(key, ctx)
            }
            BucketMsg::Create { .. } => unreachable!("handled above"),
            BucketMsg::Delete => op.delete_bucket().await,
            BucketMsg::Head => Ok(BucketReply::Info(op.info())),
            BucketMsg::SetAcl(grants) => {
                op.meta.grants = grants;
                op.commit(storage.write_set()).await?;
                Ok(BucketReply::Done)
            }
            BucketMsg::SetPolicy(policy) => {
                op.meta.policy = policy;
                op.commit(storage.write_set()).await?;
                Ok(BucketReply::Done)
            }
            BucketMsg::SetCors(cors) => {
                op.meta.cors = cors;
                op.commit(storage.write_set()).await?;
                Ok(BucketReply::Done)
            }
            BucketMsg::SetVersioning(versioning) => op.set_versioning(versioning).await,
            BucketMsg::SetObjectLock(config) => op.set_object_lock(config).await,
            BucketMsg::ListVersions(request) => Ok(BucketReply::Versions(op.bucket.list_versions(&request)?)),
            BucketMsg::PutObject { key, body, tags, condition, lock, acl } => {
                let object = NewObject { body, tags, upload_id: None, lock, acl: *acl };
                op.put_object_with(key, object, condition, None).await
            }
            BucketMsg::GetObject { key, version_id } => {
                match op.bucket.version(&key, version_id.as_deref())? {
                    Ok(object) => Ok(BucketReply::Object(Box::new(object))),
                    Err(refusal) => refused(refusal),
                }
            }
            BucketMsg::DeleteObject { key, version_id, if_match, bypass_governance } => {
                op.delete_object(key, version_id, if_match, bypass_governance).await
            }
            BucketMsg::PutRetention { key, version_id, retention, bypass_governance } => {
                op.put_retention(key, version_id, retention, bypass_governance).await
            }
            BucketMsg::PutLegalHold { key, version_id, on } => op.put_legal_hold(key, version_id, on).await,
            BucketMsg::PutTags { key, version_id, tags } => op.put_tags(key, version_id, tags).await,
            BucketMsg::SetObjectAcl { key, version_id, grants } => {
                op.set_object_acl(key, version_id, grants).await
            }
            BucketMsg::List(request) => Ok(BucketReply::Listing(op.bucket.list(&request)?)),
            BucketMsg::CreateUpload { key, meta, initiator, tags, lock, grants } => {
                op.create_upload(key, meta, initiator, (tags, lock, grants)).await
            }
            BucketMsg::GetUpload { upload_id } => match op.bucket.upload(&upload_id)? {
                Some(upload) => Ok(BucketReply::Upload(upload_info(upload_id, upload))),
                None => refused(Refusal::NoSuchUpload),
            },
            BucketMsg::PutPart { upload_id, part_number, part } => {
                op.put_part(upload_id, part_number, part).await
            }
            BucketMsg::CompleteUpload { key, upload_id, parts, min_part_size, condition } => {
                op.complete_upload(key, upload_id, parts, min_part_size, condition).await
            }
            BucketMsg::AbortUpload { upload_id } => op.abort_upload(upload_id).await,
            BucketMsg::ListParts { upload_id, after, max } => op.bucket.list_parts(&upload_id, after, max),
            BucketMsg::ListUploads { prefix, after, max } => op.bucket.list_uploads(&prefix, after, max),
        }
    }

    fn summary(&self) -> String {
        match &self.meta {
            Some(meta) => format!(
                "objects={} bytes={} uploads={} versions={}",
                meta.objects, meta.bytes, meta.uploads, meta.versions
            ),
            None => crate::inspect::ABSENT.to_string(),
        }
    }
}

impl Bucket {
    /// CreateBucket; with `object_lock`, the bucket has object lock (and versioning) from the start.
    async fn create(
        &mut self,
        storage: &Storage,
        owner: String,
        grants: Vec<Grant>,
        object_lock: bool,
    ) -> Outcome {
        if let Some(meta) = &self.meta {
            let refusal = if meta.owner == owner {
                Refusal::BucketAlreadyOwnedByYou
            } else {
                Refusal::BucketAlreadyExists
            };
            return refused(refusal);
        }
        let meta = BucketMeta {
            owner,
            created_ms: now_ms(),
            grants,
            policy: None,
            cors: None,
            versioning: if object_lock { Versioning::Enabled } else { Versioning::Unversioned },
            object_lock: object_lock.then(ObjectLockConfig::default),
            objects: 0,
            bytes: 0,
            versions: 0,
            uploads: 0,
            next_seq: 1,
        };
        let mut changes = storage.write_set();
        changes.put(&self.tables.buckets, &self.name, &meta)?;
        storage.commit(changes).await?;
        self.meta = Some(meta);
        Ok(BucketReply::Done)
    }

    /// The current object at `key`, as this actor last wrote it (staged or applied).
    fn object(&self, key: &str) -> Result<Option<ObjectRecord>, EntityError> {
        if let Some(staged) = self.pending.get(key) {
            return Ok(staged.clone());
        }
        Ok(self.tables.objects.get(&(self.name.clone(), key.to_string()))?)
    }

    /// Waits until every staged commit is applied (and durable): storage is current again.
    async fn fence(&mut self, storage: &Storage) -> Result<(), EntityError> {
        if !self.pending.is_empty() {
            storage.commit(storage.write_set()).await?;
            self.pending.clear();
        }
        Ok(())
    }

    /// The object at `key`, or the given version of it.
    fn version(
        &self,
        key: &str,
        version_id: Option<&str>,
    ) -> Result<Result<ObjectRecord, Refusal>, EntityError> {
        let Some(version_id) = version_id else {
            return match self.object(key)? {
                Some(object) => Ok(Ok(object)),
                None => Ok(Err(self.missing(key)?)),
            };
        };
        match self.find_version(key, version_id)? {
            Some((_, VersionRecord { object: Some(object), .. })) => Ok(Ok(object)),
            Some((_, VersionRecord { object: None, version_id, last_modified_ms })) => {
                Ok(Err(Refusal::DeleteMarker(MarkerInfo { version_id, last_modified_ms })))
            }
            None if version_id != NULL_VERSION && self.parse_version_id(version_id).is_none() => {
                Ok(Err(Refusal::InvalidVersionId))
            }
            None => Ok(Err(Refusal::NoSuchVersion)),
        }
    }

    /// Why `key` has no current object: it never had one (or lost it in a bucket without
    /// versioning), or its newest version is a delete marker.
    fn missing(&self, key: &str) -> Result<Refusal, EntityError> {
        if self.meta.as_ref().is_none_or(|m| m.versioning == Versioning::Unversioned) {
            return Ok(Refusal::NoSuchKey);
        }
        let prefix = KeyPrefix::new().part(&self.name).part(&key.to_string());
        Ok(match self.tables.versions.scan(&prefix, None).next().transpose()? {
            Some((_, VersionRecord { object: None, version_id, last_modified_ms })) => {
                Refusal::DeletedByMarker(MarkerInfo { version_id, last_modified_ms })
            }
            _ => Refusal::NoSuchKey,
        })
    }

    /// The id of the version written with `seq`: the bucket's creation time and the sequence
    /// number in hex, so ids never repeat across incarnations of a bucket name.
    fn version_id(&self, created_ms: u64, seq: u64) -> String {
        format!("{created_ms:012x}{seq:016x}")
    }

    fn parse_version_id(&self, id: &str) -> Option<u64> {
        let created_ms = self.meta.as_ref()?.created_ms;
        if id.len() != 28 || !id.is_ascii() || u64::from_str_radix(&id[..12], 16).ok()? != created_ms {
            return None;
        }
        u64::from_str_radix(&id[12..], 16).ok()
    }

    /// The history row of `key` with `version_id`. In a bucket that never had versioning, the
    /// current object is the `null` version.
    fn find_version(
        &self,
        key: &str,
        version_id: &str,
    ) -> Result<Option<(VersionRow, VersionRecord)>, EntityError> {
        if version_id == NULL_VERSION {
            if self.meta.as_ref().is_some_and(|m| m.versioning == Versioning::Unversioned) {
                let row = (self.name.clone(), key.to_string(), 0);
                return Ok(self.object(key)?.map(|object| {
                    let version = VersionRecord {
                        version_id: NULL_VERSION.to_string(),
                        last_modified_ms: object.last_modified_ms,
                        object: Some(object),
                    };
                    (row, version)
                }));
            }
            return Ok(self.history(key)?.into_iter().find(|(_, v)| v.version_id == NULL_VERSION));
        }
        let Some(seq) = self.parse_version_id(version_id) else { return Ok(None) };
        let row = (self.name.clone(), key.to_string(), u64::MAX - seq);
        Ok(self.tables.versions.get(&row)?.map(|version| (row, version)))
    }

    /// Every history row of `key`, newest first.
    fn history(&self, key: &str) -> Result<Vec<(VersionRow, VersionRecord)>, EntityError> {
        let prefix = KeyPrefix::new().part(&self.name).part(&key.to_string());
        Ok(self.tables.versions.scan(&prefix, None).collect::<Result<_, _>>()?)
    }

    fn upload(&self, upload_id: &str) -> Result<Option<UploadRecord>, EntityError> {
        Ok(self.tables.uploads.get(&(self.name.clone(), upload_id.to_string()))?)
    }

    fn parts_of(&self, upload_id: &str) -> impl Iterator<Item = Result<(u32, PartRecord), EntityError>> + '_ {
        let prefix = KeyPrefix::new().part(&self.name).part(&upload_id.to_string());
        let entries: Vec<_> = self.tables.parts.scan(&prefix, None).collect();
        entries.into_iter().map(|entry| {
            let ((_, _, number), part) = entry?;
            Ok((number as u32, part))
        })
    }

    fn list(&self, request: &ListRequest) -> Result<Listing, EntityError> {
        let prefix = KeyPrefix::new().part(&self.name).partial_str(&request.prefix);
        let delimiter = request.delimiter.as_deref().filter(|d| !d.is_empty());
        let after = request.after.as_deref().filter(|after| *after >= request.prefix.as_str());
        // Where the scan (re)starts: after the continuation key, or past every key under a
        // common prefix, so that a rolled-up prefix costs one seek however many keys it holds.
        let past = |common: &str| KeyPrefix::new().part(&self.name).partial_str(common);
        let mut start = match after {
            Some(after) if delimiter.is_some_and(|d| after.ends_with(d)) => Start::Past(past(after)),
            Some(after) => Start::After((self.name.clone(), after.to_string())),
            None => Start::Beginning,
        };
        let mut listing = Listing::default();
        let mut last: Option<String> = None;
        loop {
            let rows: Box<dyn Iterator<Item = _>> = match &start {
                Start::Beginning => Box::new(self.tables.objects.scan(&prefix, None)),
                Start::After(key) => Box::new(self.tables.objects.scan(&prefix, Some(key))),
                Start::Past(common) => Box::new(self.tables.objects.scan_past(&prefix, common)),
            };
            let mut next_start = None;
            for entry in rows {
                let ((_, key), object) = entry?;
                let common = rolled_up(&key, &request.prefix, delimiter);
                let name = common.clone().unwrap_or_else(|| key.clone());
                if after.is_some_and(|after| name.as_str() <= after) {
                    continue;
                }
                if listing.objects.len() + listing.common_prefixes.len() >= request.max {
                    listing.next_after = last;
                    return Ok(listing);
                }
                match common {
                    Some(common) => {
                        next_start = Some(Start::Past(past(&common)));
                        listing.common_prefixes.push(common);
                    }
                    None => listing.objects.push(ListedObject {
                        key: key.clone(),
                        size: object.body.size,
                        etag: object.body.etag.clone(),
                        last_modified_ms: object.last_modified_ms,
                        owner: object.acl.as_ref().map(|acl| acl.owner.clone()),
                    }),
                }
                last = Some(name);
                if next_start.is_some() {
                    break;
                }
            }
            match next_start {
                Some(next) => start = next,
                None => return Ok(listing),
            }
        }
    }

    fn list_versions(&self, request: &ListVersionsRequest) -> Result<VersionListing, EntityError> {
        let unversioned = self.meta.as_ref().is_some_and(|m| m.versioning == Versioning::Unversioned);
        let mut listing = VersionListing::default();
        // Entries in listing order, read lazily: (key, version).
        let prefix = KeyPrefix::new().part(&self.name).partial_str(&request.prefix);
        let object_after = request.key_marker.clone().map(|key| (self.name.clone(), key));
        let version_after = match (&request.key_marker, &request.version_marker) {
            (Some(key), Some(version)) if !version.is_empty() => self
                .find_version(key, version)?
                .map(|(row, _)| row)
                .or_else(|| Some((self.name.clone(), key.clone(), u64::MAX))),
            (Some(key), _) => Some((self.name.clone(), key.clone(), u64::MAX)),
            _ => None,
        };
        let entries: Box<dyn Iterator<Item = Result<(String, VersionRecord), EntityError>> + '_> =
            if unversioned {
                Box::new(self.tables.objects.scan(&prefix, object_after.as_ref()).map(|row| {
                    let ((_, key), object) = row?;
                    let version = VersionRecord {
                        version_id: NULL_VERSION.to_string(),
                        last_modified_ms: object.last_modified_ms,
                        object: Some(object),
                    };
                    Ok((key, version))
                }))
            } else {
                Box::new(self.tables.versions.scan(&prefix, version_after.as_ref()).map(|row| {
                    let ((_, key, _), version) = row?;
                    Ok((key, version))
                }))
            };
        // The first entry seen of a key is its latest, unless the page resumes inside that key.
        let mut previous_key = request
            .key_marker
            .clone()
            .filter(|_| request.version_marker.as_deref().is_some_and(|v| !v.is_empty()) && !unversioned);
        let mut last_common: Option<String> = None;
        let mut last: Option<(String, String)> = None;
        for entry in entries {
            let (key, version) = entry?;
            let is_latest = previous_key.as_deref() != Some(key.as_str());
            previous_key = Some(key.clone());
            let common = rolled_up(&key, &request.prefix, request.delimiter.as_deref());
            if let Some(common) = &common
                && (last_common.as_ref() == Some(common)
                    || request.key_marker.as_deref().is_some_and(|marker| common.as_str() <= marker))
            {
                continue;
            }
            if listing.versions.len() + listing.common_prefixes.len() >= request.max {
                listing.next = last;
                return Ok(listing);
            }
            match common {
                Some(common) => {
                    last = Some((common.clone(), String::new()));
                    listing.common_prefixes.push(common.clone());
                    last_common = Some(common);
                }
                None => {
                    last = Some((key.clone(), version.version_id.clone()));
                    listing.versions.push(ListedVersion {
                        key,
                        version_id: version.version_id,
                        is_latest,
                        last_modified_ms: version.last_modified_ms,
                        owner: version
                            .object
                            .as_ref()
                            .and_then(|o| o.acl.as_ref())
                            .map(|acl| acl.owner.clone()),
                        object: version.object.map(|o| (o.body.size, o.body.etag)),
                    });
                }
            }
        }
        Ok(listing)
    }

    fn list_parts(&self, upload_id: &str, after: u32, max: usize) -> Outcome {
        if self.upload(upload_id)?.is_none() {
            return refused(Refusal::NoSuchUpload);
        }
        let mut parts = Vec::new();
        for entry in self.parts_of(upload_id) {
            let (part_number, part) = entry?;
            if part_number <= after {
                continue;
            }
            if parts.len() == max {
                return Ok(BucketReply::Parts { parts, truncated: true });
            }
            parts.push(PartInfo {
                part_number,
                size: part.size,
                etag: part.etag,
                last_modified_ms: part.last_modified_ms,
            });
        }
        Ok(BucketReply::Parts { parts, truncated: false })
    }

    fn list_uploads(&self, prefix: &str, after: Option<(String, String)>, max: usize) -> Outcome {
        let mut uploads: Vec<UploadInfo> = Vec::new();
        let all = KeyPrefix::new().part(&self.name);
        for entry in self.tables.uploads.scan(&all, None) {
            let ((_, upload_id), upload) = entry?;
            if upload.key.starts_with(prefix) {
                uploads.push(upload_info(upload_id, upload));
            }
        }
        uploads.sort_by(|a, b| {
            (&a.key, a.initiated_ms, &a.upload_id).cmp(&(&b.key, b.initiated_ms, &b.upload_id))
        });
        if let Some((key, id)) = after {
            uploads.retain(|u| (u.key.as_str(), u.upload_id.as_str()) > (key.as_str(), id.as_str()));
        }
        let truncated = uploads.len() > max;
        uploads.truncate(max);
        Ok(BucketReply::Uploads { uploads, common_prefixes: Vec::new(), truncated })
    }
}

/// Where a listing scan starts.
enum Start {
    Beginning,
    After((String, String)),
    Past(KeyPrefix),
}

/// The common prefix `key` rolls up into under `prefix` and `delimiter`, if any.
fn rolled_up(key: &str, prefix: &str, delimiter: Option<&str>) -> Option<String> {
    let delimiter = delimiter.filter(|d| !d.is_empty())?;
    let rest = key.get(prefix.len()..)?;
    rest.find(delimiter).map(|at| key[..prefix.len() + at + delimiter.len()].to_string())
}

pub(super) fn upload_info(upload_id: String, upload: UploadRecord) -> UploadInfo {
    UploadInfo {
        upload_id,
        key: upload.key,
        initiated_ms: upload.initiated_ms,
        initiator: upload.initiator,
        meta: upload.meta,
    }
}
#[cfg(test)]
mod tests;
