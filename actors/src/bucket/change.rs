//! Changes of an existing bucket. Each builds one write set (records, block references and the
//! bucket's meta), commits it, and only then adopts the new meta and releases blocks.
//!
//! Versioning: in a bucket that never had it, a key has one record (in [`OBJECTS`]) and a write
//! replaces it. Once enabled, every version and delete marker is also a row of [`VERSIONS`],
//! newest first, and [`OBJECTS`] holds the current object of each key (none when the newest
//! entry is a delete marker). A version's block references are dropped only when the version
//! itself goes (deleted by id, or a `null` version replaced while versioning is suspended).

use serv_storage::blocks::{BlockHash, BlockRef};
use serv_storage::{KeyPrefix, Storage, WriteSet};

use super::acl::{Grant, ObjectAcl};
use super::lock::ObjectLock;
use super::model::*;
use super::{Bucket, NULL_VERSION, Outcome, VersionRow, refused, upload_info};
use crate::now_ms;
use crate::{EntityContext, EntityError};

/// An object version a write makes.
pub(super) struct NewObject {
    pub body: ObjectBody,
    pub tags: Vec<(String, String)>,
    /// The multipart upload it completes, if it does.
    pub upload_id: Option<String>,
    /// The lock its write asks for.
    pub lock: ObjectLock,
    /// Its owner and grants.
    pub acl: ObjectAcl,
}

/// One change of an existing bucket: a working copy of its meta and what to release after.
pub(super) struct Op<'a> {
    pub bucket: &'a mut Bucket,
    pub meta: BucketMeta,
    pub storage: &'a Storage,
    /// Blocks whose references this change deletes, released to the collector once durable.
    released: Vec<BlockHash>,
}

impl<'a> Op<'a> {
    pub fn new(bucket: &'a mut Bucket, meta: BucketMeta, storage: &'a Storage) -> Self {
        Self { bucket, meta, storage, released: Vec::new() }
    }

    pub fn info(&self) -> BucketInfo {
        BucketInfo {
            name: self.bucket.name.clone(),
            owner: self.meta.owner.clone(),
            created_ms: self.meta.created_ms,
            grants: self.meta.grants.clone(),
            policy: self.meta.policy.clone(),
            cors: self.meta.cors.clone(),
            versioning: self.meta.versioning,
            object_lock: self.meta.object_lock,
        }
    }

    fn next_seq(&mut self) -> u64 {
        let seq = self.meta.next_seq;
        self.meta.next_seq += 1;
        seq
    }

    fn owner_name(&self, kind: &str, seq: u64) -> String {
        format!("{kind}/{}/{}/{seq}", self.bucket.name, self.meta.created_ms)
    }

    fn version_row(&self, key: &str, seq: u64) -> VersionRow {
        (self.bucket.name.clone(), key.to_string(), u64::MAX - seq)
    }

    fn add_refs(&self, changes: &mut WriteSet, chunks: &[Chunk], owner: &str) -> Result<(), EntityError> {
        for chunk in chunks {
            changes.put(&self.bucket.tables.refs, &(chunk.hash, owner.to_string()), &BlockRef)?;
        }
        Ok(())
    }

    fn drop_refs(&mut self, changes: &mut WriteSet, chunks: &[Chunk], owner: &str) {
        for chunk in chunks {
            changes.delete(&self.bucket.tables.refs, &(chunk.hash, owner.to_string()));
            self.released.push(chunk.hash);
        }
    }

    /// Commits `changes` with the updated meta, then adopts the meta and releases blocks.
    pub async fn commit(mut self, mut changes: WriteSet) -> Result<(), EntityError> {
        changes.put(&self.bucket.tables.buckets, &self.bucket.name, &self.meta)?;
        self.storage.commit(changes).await?;
        // Nothing was staged before (see `Bucket::fence`), so storage now holds everything.
        self.bucket.pending.clear();
        self.bucket.meta = Some(self.meta);
        self.storage.blocks().released(std::mem::take(&mut self.released));
        Ok(())
    }

    /// Stages `changes` with the updated meta and adopts the meta at once: the reply waits for
    /// durability (and blocks are released then) while the actor takes its next message. The
    /// current objects this change set stay in `Bucket::pending` until a fence.
    pub fn stage(mut self, mut changes: WriteSet, ctx: &EntityContext) -> Result<(), EntityError> {
        changes.put(&self.bucket.tables.buckets, &self.bucket.name, &self.meta)?;
        let staged = self.storage.stage(changes)?;
        self.bucket.meta = Some(self.meta);
        let (blocks, released) = (self.storage.blocks().clone(), std::mem::take(&mut self.released));
        ctx.reply_when_durable(async move {
            staged.await?;
            blocks.released(released);
            Ok(())
        });
        Ok(())
    }

    /// Makes `current` the current object of `key` (or none), keeping the totals right.
    fn set_current(
        &mut self,
        changes: &mut WriteSet,
        key: &str,
        current: Option<&ObjectRecord>,
    ) -> Result<(), EntityError> {
        let row = (self.bucket.name.clone(), key.to_string());
        if let Some(old) = self.bucket.object(key)? {
            self.meta.objects -= 1;
            self.meta.bytes -= old.body.size;
        }
        self.bucket.pending.insert(key.to_string(), current.cloned());
        match current {
            Some(record) => {
                changes.put(&self.bucket.tables.objects, &row, record)?;
                self.meta.objects += 1;
                self.meta.bytes += record.body.size;
            }
            None => changes.delete(&self.bucket.tables.objects, &row),
        }
        Ok(())
    }

    /// Removes a version row for good: its blocks lose this version's references. The one place
    /// a version goes, so the one place object lock is asserted: a version under retention or
    /// legal hold is never removed (`bypass`: GOVERNANCE retention was bypassed by a caller
    /// allowed to).
    fn forget_version(
        &mut self,
        changes: &mut WriteSet,
        row: &VersionRow,
        version: &VersionRecord,
        bypass: bool,
    ) {
        changes.delete(&self.bucket.tables.versions, row);
        if let Some(object) = &version.object {
            assert!(
                object.lock.may_delete(bypass, now_ms()),
                "version {} of {} in bucket {} is locked ({:?}) but was about to be deleted",
                version.version_id,
                row.1,
                self.bucket.name,
                object.lock,
            );
            self.drop_refs(changes, &object.body.chunks, &object.block_owner);
        }
        self.meta.versions = self.meta.versions.saturating_sub(1);
    }

    /// Removes the `null` version of `key`, if it has one (a suspended bucket's write replaces it).
    fn forget_null_version(&mut self, changes: &mut WriteSet, key: &str) -> Result<(), EntityError> {
        if let Some((row, version)) = self.bucket.find_version(key, NULL_VERSION)? {
            // Never under object lock: versioning cannot be suspended once object lock is on.
            self.forget_version(changes, &row, &version, false);
        }
        Ok(())
    }

    /// Adds a new newest entry to `key`'s history: an object version or (with `None`) a marker.
    /// Returns its version id (`None` in a bucket that never had versioning).
    fn write_version(
        &mut self,
        changes: &mut WriteSet,
        key: &str,
        object: Option<NewObject>,
    ) -> Result<Option<String>, EntityError> {
        let seq = self.next_seq();
        let version_id = match self.meta.versioning {
            Versioning::Unversioned => None,
            Versioning::Enabled => Some(self.bucket.version_id(self.meta.created_ms, seq)),
            Versioning::Suspended => Some(NULL_VERSION.to_string()),
        };
        let lock_config = self.meta.object_lock;
        let record = object.map(|object| ObjectRecord {
            lock: lock_config.map_or(object.lock, |config| config.lock_of_new(object.lock, now_ms())),
            body: object.body,
            version_id: version_id.clone(),
            seq,
            last_modified_ms: now_ms(),
            block_owner: self.owner_name("o", seq),
            tags: object.tags,
            upload_id: object.upload_id,
            acl: Some(object.acl),
        });
        if let Some(record) = &record {
            self.add_refs(changes, &record.body.chunks, &record.block_owner)?;
        }
        match &version_id {
            None => {
                // The one record of the key is replaced: its blocks lose their references.
                if let Some(old) = self.bucket.object(key)? {
                    self.drop_refs(changes, &old.body.chunks, &old.block_owner);
                }
            }
            Some(version_id) => {
                if version_id == NULL_VERSION {
                    self.forget_null_version(changes, key)?;
                }
                let version = VersionRecord {
                    version_id: version_id.clone(),
                    last_modified_ms: now_ms(),
                    object: record.clone(),
                };
                changes.put(&self.bucket.tables.versions, &self.version_row(key, seq), &version)?;
                self.meta.versions += 1;
            }
        }
        self.set_current(changes, key, record.as_ref())?;
        Ok(version_id)
    }

    pub async fn set_versioning(mut self, versioning: Versioning) -> Outcome {
        match (self.meta.versioning, versioning) {
            (current, wanted) if current == wanted => return Ok(BucketReply::Done),
            _ if self.meta.object_lock.is_some() => return refused(Refusal::VersioningLocked),
            (_, Versioning::Unversioned) => return refused(Refusal::CannotUnversion),
            _ => {}
        }
        let mut changes = self.storage.write_set();
        if self.meta.versioning == Versioning::Unversioned {
            // Objects written before become `null` versions in the history.
            let all = KeyPrefix::new().part(&self.bucket.name);
            let objects: Vec<_> = self.bucket.tables.objects.scan(&all, None).collect::<Result<_, _>>()?;
            for ((_, key), mut object) in objects {
                object.version_id = Some(NULL_VERSION.to_string());
                let version = VersionRecord {
                    version_id: NULL_VERSION.to_string(),
                    last_modified_ms: object.last_modified_ms,
                    object: Some(object.clone()),
                };
                changes.put(&self.bucket.tables.versions, &self.version_row(&key, object.seq), &version)?;
                changes.put(&self.bucket.tables.objects, &(self.bucket.name.clone(), key), &object)?;
                self.meta.versions += 1;
            }
        }
        self.meta.versioning = versioning;
        self.commit(changes).await?;
        Ok(BucketReply::Done)
    }

    pub async fn delete_bucket(mut self) -> Outcome {
        let all = KeyPrefix::new().part(&self.bucket.name);
        let has_objects = self.bucket.tables.objects.scan(&all, None).next().transpose()?.is_some();
        let has_versions = self.bucket.tables.versions.scan(&all, None).next().transpose()?.is_some();
        if has_objects || has_versions {
            return refused(Refusal::BucketNotEmpty);
        }
        // Uploads in progress go with the bucket.
        let mut changes = self.storage.write_set();
        let uploads: Vec<_> = self.bucket.tables.uploads.scan(&all, None).collect::<Result<_, _>>()?;
        for ((_, upload_id), _) in uploads {
            self.remove_upload(&mut changes, &upload_id)?;
        }
        changes.delete(&self.bucket.tables.buckets, &self.bucket.name);
        self.storage.commit(changes).await?;
        self.storage.blocks().released(std::mem::take(&mut self.released));
        self.bucket.meta = None;
        Ok(BucketReply::Done)
    }

    fn remove_upload(&mut self, changes: &mut WriteSet, upload_id: &str) -> Result<(), EntityError> {
        let parts: Vec<_> = self.bucket.parts_of(upload_id).collect::<Result<_, _>>()?;
        for (number, part) in parts {
            self.drop_refs(changes, &part.chunks, &part.block_owner);
            let key = (self.bucket.name.clone(), upload_id.to_string(), u64::from(number));
            changes.delete(&self.bucket.tables.parts, &key);
        }
        changes.delete(&self.bucket.tables.uploads, &(self.bucket.name.clone(), upload_id.to_string()));
        self.meta.uploads = self.meta.uploads.saturating_sub(1);
        Ok(())
    }

    /// PutObject, staged (pipelined) when `ctx` is given, else committed before returning.
    pub async fn put_object_with(
        mut self,
        key: String,
        object: NewObject,
        condition: Option<WriteCondition>,
        ctx: Option<&EntityContext>,
    ) -> Outcome {
        if let Some(refusal) = self.unmet(condition.as_ref(), &key)?.or(self.unlockable(&object.lock)) {
            return refused(refusal);
        }
        let etag = object.body.etag.clone();
        let mut changes = self.storage.write_set();
        let version_id = self.write_version(&mut changes, &key, Some(object))?;
        match ctx {
            Some(ctx) => self.stage(changes, ctx)?,
            None => self.commit(changes).await?,
        }
        Ok(BucketReply::Committed { etag, version_id })
    }

    /// Why a write asking for `lock` must not happen: it asks for a lock in a bucket without.
    fn unlockable(&self, lock: &ObjectLock) -> Option<Refusal> {
        (*lock != ObjectLock::default() && self.meta.object_lock.is_none())
            .then_some(Refusal::ObjectLockNotEnabled)
    }

    /// Why a write to `key` under `condition` must not happen, if it must not: S3 answers
    /// `If-Match` on a key without a current object (none, or a delete marker) with NoSuchKey.
    fn unmet(&self, condition: Option<&WriteCondition>, key: &str) -> Result<Option<Refusal>, EntityError> {
        let Some(condition) = condition else { return Ok(None) };
        let current = self.bucket.object(key)?;
        let holds = match (condition, &current) {
            (WriteCondition::Absent, current) => current.is_none(),
            (WriteCondition::ETag(etag), Some(current)) => etag_matches(etag, &current.body.etag),
            (WriteCondition::ETag(_), None) => return Ok(Some(Refusal::NoSuchKey)),
        };
        Ok((!holds).then_some(Refusal::PreconditionFailed))
    }

    /// DeleteObject of an unversioned bucket, staged (pipelined).
    pub fn delete_unversioned_staged(mut self, key: String, ctx: &EntityContext) -> Outcome {
        let Some(old) = self.bucket.object(&key)? else {
            return Ok(BucketReply::Deleted { version_id: None, delete_marker: false });
        };
        let mut changes = self.storage.write_set();
        self.drop_refs(&mut changes, &old.body.chunks, &old.block_owner);
        self.set_current(&mut changes, &key, None)?;
        self.stage(changes, ctx)?;
        Ok(BucketReply::Deleted { version_id: None, delete_marker: false })
    }

    /// DeleteObject; with `if_match`, only if the object it deletes (the version named, else the
    /// current object) has that ETag. As in S3, a delete whose object does not exist proceeds.
    /// A version under object lock is not deleted (`bypass`: GOVERNANCE retention is bypassed);
    /// a delete without a version id only adds a delete marker, which object lock allows.
    pub async fn delete_object(
        mut self,
        key: String,
        version_id: Option<String>,
        if_match: Option<String>,
        bypass: bool,
    ) -> Outcome {
        if let Some(etag) = &if_match {
            let target = match &version_id {
                Some(id) => self.bucket.find_version(&key, id)?.and_then(|(_, version)| version.object),
                None => self.bucket.object(&key)?,
            };
            if target.is_some_and(|object| !etag_matches(etag, &object.body.etag)) {
                return refused(Refusal::PreconditionFailed);
            }
        }
        let mut changes = self.storage.write_set();
        let reply = if self.meta.versioning == Versioning::Unversioned {
            if version_id.as_deref().is_some_and(|v| v != NULL_VERSION) {
                return refused(Refusal::NoSuchVersion);
            }
            let Some(old) = self.bucket.object(&key)? else {
                return Ok(BucketReply::Deleted { version_id, delete_marker: false });
            };
            self.drop_refs(&mut changes, &old.body.chunks, &old.block_owner);
            self.set_current(&mut changes, &key, None)?;
            BucketReply::Deleted { version_id, delete_marker: false }
        } else if let Some(id) = version_id {
            let Some((row, version)) = self.bucket.find_version(&key, &id)? else {
                if id != NULL_VERSION && self.bucket.parse_version_id(&id).is_none() {
                    return refused(Refusal::InvalidVersionId);
                }
                return Ok(BucketReply::Deleted { version_id: Some(id), delete_marker: false });
            };
            if version.object.as_ref().is_some_and(|object| !object.lock.may_delete(bypass, now_ms())) {
                return refused(Refusal::ObjectLocked);
            }
            self.forget_version(&mut changes, &row, &version, bypass);
            // The newest remaining entry decides the current object.
            let newest = self.bucket.history(&key)?.into_iter().find(|(other, _)| *other != row);
            let current = newest.and_then(|(_, v)| v.object);
            self.set_current(&mut changes, &key, current.as_ref())?;
            BucketReply::Deleted { version_id: Some(id), delete_marker: version.object.is_none() }
        } else {
            let marker = self.write_version(&mut changes, &key, None)?;
            BucketReply::Deleted { version_id: marker, delete_marker: true }
        };
        self.commit(changes).await?;
        Ok(reply)
    }

    pub async fn put_tags(
        self,
        key: String,
        version_id: Option<String>,
        tags: Vec<(String, String)>,
    ) -> Outcome {
        let mut object = match self.bucket.version(&key, version_id.as_deref())? {
            Ok(object) => object,
            Err(refusal) => return refused(refusal),
        };
        object.tags = tags;
        self.rewrite(key, object).await
    }

    /// Replaces the grants of a version of `key`; a version from before owners were kept
    /// becomes the bucket owner's explicitly.
    pub async fn set_object_acl(
        self,
        key: String,
        version_id: Option<String>,
        grants: Vec<Grant>,
    ) -> Outcome {
        let mut object = match self.bucket.version(&key, version_id.as_deref())? {
            Ok(object) => object,
            Err(refusal) => return refused(refusal),
        };
        let owner = object.acl.map_or_else(|| self.meta.owner.clone(), |acl| acl.owner);
        object.acl = Some(ObjectAcl { owner, grants });
        self.rewrite(key, object).await
    }

    /// Stores a changed description (tags, lock) of an existing version of `key`: its history
    /// row and, if it is the current one, its current object.
    pub async fn rewrite(self, key: String, object: ObjectRecord) -> Outcome {
        let mut changes = self.storage.write_set();
        if let Some(version_id) = &object.version_id
            && let Some((row, mut version)) = self.bucket.find_version(&key, version_id)?
        {
            version.object = Some(object.clone());
            changes.put(&self.bucket.tables.versions, &row, &version)?;
        }
        if self.bucket.object(&key)?.is_some_and(|current| current.seq == object.seq) {
            changes.put(&self.bucket.tables.objects, &(self.bucket.name.clone(), key), &object)?;
        }
        self.commit(changes).await?;
        Ok(BucketReply::Done)
    }

    pub async fn create_upload(
        mut self,
        key: String,
        meta: ObjectMeta,
        initiator: String,
        (tags, lock, grants): (Vec<(String, String)>, ObjectLock, Vec<Grant>),
    ) -> Outcome {
        if let Some(refusal) = self.unlockable(&lock) {
            return refused(refusal);
        }
        let seq = self.next_seq();
        let upload_id = format!("{:x}{:012x}", self.meta.created_ms, seq);
        let upload = UploadRecord { key, initiated_ms: now_ms(), meta, initiator, tags, lock, grants };
        let mut changes = self.storage.write_set();
        changes.put(&self.bucket.tables.uploads, &(self.bucket.name.clone(), upload_id.clone()), &upload)?;
        self.meta.uploads += 1;
        self.commit(changes).await?;
        Ok(BucketReply::Upload(upload_info(upload_id, upload)))
    }

    pub async fn put_part(mut self, upload_id: String, part_number: u32, mut part: PartRecord) -> Outcome {
        if self.bucket.upload(&upload_id)?.is_none() {
            return refused(Refusal::NoSuchUpload);
        }
        let row = (self.bucket.name.clone(), upload_id, u64::from(part_number));
        let mut changes = self.storage.write_set();
        if let Some(old) = self.bucket.tables.parts.get(&row)? {
            self.drop_refs(&mut changes, &old.chunks, &old.block_owner);
        }
        let seq = self.next_seq();
        part.block_owner = self.owner_name("p", seq);
        part.last_modified_ms = now_ms();
        self.add_refs(&mut changes, &part.chunks, &part.block_owner)?;
        changes.put(&self.bucket.tables.parts, &row, &part)?;
        self.commit(changes).await?;
        Ok(BucketReply::Committed { etag: part.etag, version_id: None })
    }

    /// CompleteMultipartUpload of `key`'s upload `upload_id` from the `wanted` parts (number,
    /// ETag), each but the last at least `min_part_size` bytes.
    pub async fn complete_upload(
        mut self,
        key: String,
        upload_id: String,
        wanted: Vec<(u32, String)>,
        min_part_size: u64,
        condition: Option<WriteCondition>,
    ) -> Outcome {
        let Some(upload) = self.bucket.upload(&upload_id)? else {
            return self.completed_before(&key, &upload_id, &wanted);
        };
        if upload.key != key {
            return refused(Refusal::NoSuchUpload);
        }
        // A refused condition leaves the upload in place: the client may abort it or retry.
        if let Some(refusal) = self.unmet(condition.as_ref(), &upload.key)? {
            return refused(refusal);
        }
        if wanted.is_empty() {
            return refused(Refusal::InvalidPart(0));
        }
        if wanted.windows(2).any(|pair| pair[0].0 >= pair[1].0) {
            return refused(Refusal::InvalidPartOrder);
        }
        let stored: std::collections::BTreeMap<u32, PartRecord> =
            self.bucket.parts_of(&upload_id).collect::<Result<_, _>>()?;
        let mut chosen = Vec::with_capacity(wanted.len());
        for (index, (number, etag)) in wanted.iter().enumerate() {
            let Some(part) = stored.get(number).filter(|part| etag_matches(etag, &part.etag)) else {
                return refused(Refusal::InvalidPart(*number));
            };
            if index + 1 < wanted.len() && part.size < min_part_size {
                return refused(Refusal::EntityTooSmall(*number));
            }
            chosen.push(part);
        }
        let etag = multipart_etag(chosen.iter().map(|part| part.etag.as_str()))
            .ok_or_else(|| EntityError::new("stored part etag is not hex"))?;
        let body = ObjectBody {
            size: chosen.iter().map(|part| part.size).sum(),
            etag,
            chunks: chosen.iter().flat_map(|part| part.chunks.iter().copied()).collect(),
            meta: upload.meta,
            checksums: Checksums::default(),
            part_sizes: chosen.iter().map(|part| part.size).collect(),
        };
        let etag = body.etag.clone();
        let mut changes = self.storage.write_set();
        // The completed object is the initiator's, with the ACL CreateMultipartUpload asked for.
        let acl = ObjectAcl { owner: upload.initiator, grants: upload.grants };
        let object =
            NewObject { body, tags: upload.tags, upload_id: Some(upload_id.clone()), lock: upload.lock, acl };
        let version_id = self.write_version(&mut changes, &upload.key, Some(object))?;
        self.remove_upload(&mut changes, &upload_id)?;
        self.commit(changes).await?;
        Ok(BucketReply::Committed { etag, version_id })
    }

    /// A repeated CompleteMultipartUpload of an upload already completed: S3 answers it as it
    /// answered the first while `key`'s current version is still what that upload made of the
    /// same parts; otherwise the upload is gone.
    fn completed_before(&self, key: &str, upload_id: &str, wanted: &[(u32, String)]) -> Outcome {
        let Some(current) = self.bucket.object(key)? else { return refused(Refusal::NoSuchUpload) };
        let same_parts = multipart_etag(wanted.iter().map(|(_, etag)| etag.trim_matches('"')))
            .is_some_and(|etag| etag == current.body.etag);
        if current.upload_id.as_deref() != Some(upload_id) || !same_parts {
            return refused(Refusal::NoSuchUpload);
        }
        Ok(BucketReply::Committed { etag: current.body.etag, version_id: current.version_id })
    }

    pub async fn abort_upload(mut self, upload_id: String) -> Outcome {
        if self.bucket.upload(&upload_id)?.is_none() {
            return refused(Refusal::NoSuchUpload);
        }
        let mut changes = self.storage.write_set();
        self.remove_upload(&mut changes, &upload_id)?;
        self.commit(changes).await?;
        Ok(BucketReply::Done)
    }
}

/// ETags compare without their quotes.
fn etag_matches(given: &str, stored: &str) -> bool {
    given.trim_matches('"') == stored || given.trim() == "*"
}

/// A multipart object's ETag: the MD5 of its parts' MD5s (given as hex ETags), and their count.
fn multipart_etag<'e>(part_etags: impl ExactSizeIterator<Item = &'e str>) -> Option<String> {
    let count = part_etags.len();
    let mut md5s = Vec::with_capacity(count * 16);
    for etag in part_etags {
        md5s.extend(decode_hex(etag)?);
    }
    Some(format!("{}-{count}", md5_hex(&md5s)))
}

fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    (0..hex.len())
        .step_by(2)
        .map(|i| hex.get(i..i + 2).and_then(|byte| u8::from_str_radix(byte, 16).ok()))
        .collect()
}

fn md5_hex(data: &[u8]) -> String {
    use md5::Digest;
    md5::Md5::digest(data).iter().map(|b| format!("{b:02x}")).collect()
}
