//! The bucket entity: every change of a bucket (create, delete, commit or delete an object,
//! multipart uploads) is a message to its actor, which commits it durably before replying.
//!
//! Object bodies are content blocks written by the edge before it asks the bucket to commit; the
//! bucket writes the object record and the block reference rows in one write set, so an object
//! is visible exactly when its references exist, and releases the references of whatever the
//! write replaced (see [`serv_storage::blocks`]).

mod model;

use std::time::{SystemTime, UNIX_EPOCH};

use serv_storage::blocks::{BlockHash, BlockRef};
use serv_storage::{KeyPrefix, Storage, Table, WriteSet};

pub use model::*;

use crate::{Entity, EntityContext, EntityError};

/// A bucket name's actor. A name without a bucket loads as absent and refuses object requests.
pub struct Bucket {
    name: String,
    meta: Option<BucketMeta>,
    tables: Tables,
}

struct Tables {
    buckets: Table<String, BucketMeta>,
    objects: Table<(String, String), ObjectRecord>,
    uploads: Table<(String, String), UploadRecord>,
    parts: Table<(String, String, u64), PartRecord>,
    refs: Table<(BlockHash, String), BlockRef>,
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// The version id of an object in a bucket that never had versioning.
pub const NULL_VERSION: &str = "null";

type Outcome = Result<BucketReply, EntityError>;

fn refused(refusal: Refusal) -> Outcome {
    Ok(BucketReply::Refused(refusal))
}

impl Entity for Bucket {
    type Msg = BucketMsg;

    async fn load(ctx: &EntityContext) -> Result<Self, EntityError> {
        let storage = &ctx.storage;
        let tables = Tables {
            buckets: storage.table(BUCKETS)?,
            objects: storage.table(OBJECTS)?,
            uploads: storage.table(UPLOADS)?,
            parts: storage.table(PARTS)?,
            refs: storage.blocks().refs().clone(),
        };
        let meta = tables.buckets.get(&ctx.key.name)?;
        Ok(Bucket { name: ctx.key.name.clone(), meta, tables })
    }

    async fn handle(&mut self, msg: BucketMsg, ctx: &EntityContext) -> Outcome {
        let storage = &ctx.storage;
        if let BucketMsg::Create { owner, acl } = msg {
            return self.create(storage, owner, acl).await;
        }
        let Some(meta) = self.meta.clone() else { return refused(Refusal::NoSuchBucket) };
        let mut op = Op { bucket: self, meta, storage, released: Vec::new() };
        match msg {
            BucketMsg::Create { .. } => unreachable!("handled above"),
            BucketMsg::Delete => op.delete_bucket().await,
            BucketMsg::Head => Ok(BucketReply::Info(op.info())),
            BucketMsg::SetAcl(acl) => {
                op.meta.acl = acl;
                op.commit(storage.write_set()).await?;
                Ok(BucketReply::Done)
            }
            BucketMsg::PutObject { key, body, condition } => op.put_object(key, body, condition).await,
            BucketMsg::GetObject { key, version_id } => {
                match op.bucket.version(&key, version_id.as_deref())? {
                    Ok(object) => Ok(BucketReply::Object(Box::new(object))),
                    Err(refusal) => refused(refusal),
                }
            }
            BucketMsg::DeleteObject { key, version_id } => op.delete_object(key, version_id).await,
            BucketMsg::PutTags { key, version_id, tags } => op.put_tags(key, version_id, tags).await,
            BucketMsg::List(request) => Ok(BucketReply::Listing(op.bucket.list(&request)?)),
            BucketMsg::CreateUpload { key, meta, initiator } => op.create_upload(key, meta, initiator).await,
            BucketMsg::GetUpload { upload_id } => match op.bucket.upload(&upload_id)? {
                Some(upload) => Ok(BucketReply::Upload(upload_info(upload_id, upload))),
                None => refused(Refusal::NoSuchUpload),
            },
            BucketMsg::PutPart { upload_id, part_number, part } => {
                op.put_part(upload_id, part_number, part).await
            }
            BucketMsg::CompleteUpload { upload_id, parts, min_part_size } => {
                op.complete_upload(upload_id, parts, min_part_size).await
            }
            BucketMsg::AbortUpload { upload_id } => op.abort_upload(upload_id).await,
            BucketMsg::ListParts { upload_id, after, max } => op.bucket.list_parts(&upload_id, after, max),
            BucketMsg::ListUploads { prefix, after, max } => op.bucket.list_uploads(&prefix, after, max),
        }
    }

    fn summary(&self) -> String {
        match &self.meta {
            Some(meta) => format!("objects={} bytes={} uploads={}", meta.objects, meta.bytes, meta.uploads),
            None => "absent".to_string(),
        }
    }
}

impl Bucket {
    async fn create(&mut self, storage: &Storage, owner: String, acl: CannedAcl) -> Outcome {
        if let Some(meta) = &self.meta {
            let refusal = if meta.owner == owner {
                Refusal::BucketAlreadyOwnedByYou
            } else {
                Refusal::BucketAlreadyExists
            };
            return refused(refusal);
        }
        let meta =
            BucketMeta { owner, created_ms: now_ms(), acl, objects: 0, bytes: 0, uploads: 0, next_seq: 1 };
        let mut changes = storage.write_set();
        changes.put(&self.tables.buckets, &self.name, &meta)?;
        storage.commit(changes).await?;
        self.meta = Some(meta);
        Ok(BucketReply::Done)
    }

    fn object(&self, key: &str) -> Result<Option<ObjectRecord>, EntityError> {
        Ok(self.tables.objects.get(&(self.name.clone(), key.to_string()))?)
    }

    /// The object at `key`, or the given version of it (only `null` until versioning lands).
    fn version(
        &self,
        key: &str,
        version_id: Option<&str>,
    ) -> Result<Result<ObjectRecord, Refusal>, EntityError> {
        match (self.object(key)?, version_id) {
            (Some(object), None | Some(NULL_VERSION)) => Ok(Ok(object)),
            (None, None) => Ok(Err(Refusal::NoSuchKey)),
            (_, Some(_)) => Ok(Err(Refusal::NoSuchVersion)),
        }
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
        let after = request
            .after
            .as_ref()
            .filter(|after| after.as_str() >= request.prefix.as_str())
            .map(|after| (self.name.clone(), after.clone()));
        let mut listing = Listing::default();
        let mut last: Option<String> = None;
        for entry in self.tables.objects.scan(&prefix, after.as_ref()) {
            let ((_, key), object) = entry?;
            let common = request.delimiter.as_deref().filter(|d| !d.is_empty()).and_then(|delimiter| {
                let rest = &key[request.prefix.len()..];
                rest.find(delimiter).map(|at| key[..request.prefix.len() + at + delimiter.len()].to_string())
            });
            // A common prefix that the previous page ended on is not repeated.
            let name = common.clone().unwrap_or_else(|| key.clone());
            if last.as_deref() == Some(name.as_str())
                || request.after.as_deref().is_some_and(|after| name.as_str() <= after)
            {
                continue;
            }
            if listing.objects.len() + listing.common_prefixes.len() >= request.max {
                listing.next_after = last;
                return Ok(listing);
            }
            match common {
                Some(common) => listing.common_prefixes.push(common),
                None => listing.objects.push(ListedObject {
                    key: key.clone(),
                    size: object.body.size,
                    etag: object.body.etag.clone(),
                    last_modified_ms: object.last_modified_ms,
                }),
            }
            last = Some(name);
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

fn upload_info(upload_id: String, upload: UploadRecord) -> UploadInfo {
    UploadInfo {
        upload_id,
        key: upload.key,
        initiated_ms: upload.initiated_ms,
        initiator: upload.initiator,
        meta: upload.meta,
    }
}

/// One change of an existing bucket: a working copy of its meta, the write set's companions.
struct Op<'a> {
    bucket: &'a mut Bucket,
    meta: BucketMeta,
    storage: &'a Storage,
    /// Blocks whose references this change deletes, released to the collector once durable.
    released: Vec<BlockHash>,
}

impl Op<'_> {
    fn info(&self) -> BucketInfo {
        BucketInfo {
            name: self.bucket.name.clone(),
            owner: self.meta.owner.clone(),
            created_ms: self.meta.created_ms,
            acl: self.meta.acl,
        }
    }

    fn next_owner(&mut self, kind: &str) -> String {
        let seq = self.meta.next_seq;
        self.meta.next_seq += 1;
        format!("{kind}/{}/{}/{seq}", self.bucket.name, self.meta.created_ms)
    }

    /// A new current version made of `body`, with its own block-reference owner.
    fn new_object(&mut self, body: ObjectBody) -> ObjectRecord {
        ObjectRecord { body, last_modified_ms: now_ms(), block_owner: self.next_owner("o"), tags: Vec::new() }
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
    async fn commit(mut self, mut changes: WriteSet) -> Result<(), EntityError> {
        changes.put(&self.bucket.tables.buckets, &self.bucket.name, &self.meta)?;
        self.storage.commit(changes).await?;
        self.bucket.meta = Some(self.meta);
        self.storage.blocks().released(std::mem::take(&mut self.released));
        Ok(())
    }

    async fn delete_bucket(mut self) -> Outcome {
        let all = KeyPrefix::new().part(&self.bucket.name);
        if self.bucket.tables.objects.scan(&all, None).next().transpose()?.is_some() {
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

    /// Replaces (or creates) the object at `key` with `record`, in `changes`.
    fn replace_object(
        &mut self,
        changes: &mut WriteSet,
        key: String,
        record: &ObjectRecord,
    ) -> Result<(), EntityError> {
        let row = (self.bucket.name.clone(), key);
        if let Some(old) = self.bucket.tables.objects.get(&row)? {
            self.drop_refs(changes, &old.body.chunks, &old.block_owner);
            self.meta.objects -= 1;
            self.meta.bytes -= old.body.size;
        }
        self.add_refs(changes, &record.body.chunks, &record.block_owner)?;
        changes.put(&self.bucket.tables.objects, &row, record)?;
        self.meta.objects += 1;
        self.meta.bytes += record.body.size;
        Ok(())
    }

    async fn put_object(
        mut self,
        key: String,
        body: ObjectBody,
        condition: Option<WriteCondition>,
    ) -> Outcome {
        if let Some(condition) = condition {
            let current = self.bucket.object(&key)?;
            let holds = match (&condition, &current) {
                (WriteCondition::Absent, current) => current.is_none(),
                (WriteCondition::ETag(etag), Some(current)) => etag_matches(etag, &current.body.etag),
                (WriteCondition::ETag(_), None) => return refused(Refusal::NoSuchKey),
            };
            if !holds {
                return refused(Refusal::PreconditionFailed);
            }
        }
        let etag = body.etag.clone();
        let record = self.new_object(body);
        let mut changes = self.storage.write_set();
        self.replace_object(&mut changes, key, &record)?;
        self.commit(changes).await?;
        Ok(BucketReply::Committed { etag, version_id: None })
    }

    async fn delete_object(mut self, key: String, version_id: Option<String>) -> Outcome {
        let deleted = BucketReply::Deleted { version_id: version_id.clone(), delete_marker: false };
        if version_id.as_deref().is_some_and(|v| v != NULL_VERSION) {
            return refused(Refusal::NoSuchVersion);
        }
        let row = (self.bucket.name.clone(), key);
        let Some(old) = self.bucket.tables.objects.get(&row)? else { return Ok(deleted) };
        let mut changes = self.storage.write_set();
        self.drop_refs(&mut changes, &old.body.chunks, &old.block_owner);
        changes.delete(&self.bucket.tables.objects, &row);
        self.meta.objects -= 1;
        self.meta.bytes -= old.body.size;
        self.commit(changes).await?;
        Ok(deleted)
    }

    async fn put_tags(self, key: String, version_id: Option<String>, tags: Vec<(String, String)>) -> Outcome {
        let mut object = match self.bucket.version(&key, version_id.as_deref())? {
            Ok(object) => object,
            Err(refusal) => return refused(refusal),
        };
        let row = (self.bucket.name.clone(), key);
        object.tags = tags;
        let mut changes = self.storage.write_set();
        changes.put(&self.bucket.tables.objects, &row, &object)?;
        self.commit(changes).await?;
        Ok(BucketReply::Done)
    }

    async fn create_upload(mut self, key: String, meta: ObjectMeta, initiator: String) -> Outcome {
        let seq = self.meta.next_seq;
        self.meta.next_seq += 1;
        let upload_id = format!("{:x}{:012x}", self.meta.created_ms, seq);
        let upload = UploadRecord { key, initiated_ms: now_ms(), meta, initiator };
        let mut changes = self.storage.write_set();
        changes.put(&self.bucket.tables.uploads, &(self.bucket.name.clone(), upload_id.clone()), &upload)?;
        self.meta.uploads += 1;
        self.commit(changes).await?;
        Ok(BucketReply::Upload(upload_info(upload_id, upload)))
    }

    async fn put_part(mut self, upload_id: String, part_number: u32, mut part: PartRecord) -> Outcome {
        if self.bucket.upload(&upload_id)?.is_none() {
            return refused(Refusal::NoSuchUpload);
        }
        let row = (self.bucket.name.clone(), upload_id, u64::from(part_number));
        let mut changes = self.storage.write_set();
        if let Some(old) = self.bucket.tables.parts.get(&row)? {
            self.drop_refs(&mut changes, &old.chunks, &old.block_owner);
        }
        part.block_owner = self.next_owner("p");
        part.last_modified_ms = now_ms();
        self.add_refs(&mut changes, &part.chunks, &part.block_owner)?;
        changes.put(&self.bucket.tables.parts, &row, &part)?;
        self.commit(changes).await?;
        Ok(BucketReply::Committed { etag: part.etag, version_id: None })
    }

    async fn complete_upload(
        mut self,
        upload_id: String,
        wanted: Vec<(u32, String)>,
        min_part_size: u64,
    ) -> Outcome {
        let Some(upload) = self.bucket.upload(&upload_id)? else { return refused(Refusal::NoSuchUpload) };
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
        let mut md5s = Vec::with_capacity(chosen.len() * 16);
        for part in &chosen {
            md5s.extend(
                decode_hex(&part.etag).ok_or_else(|| EntityError("stored part etag is not hex".into()))?,
            );
        }
        let body = ObjectBody {
            size: chosen.iter().map(|part| part.size).sum(),
            etag: format!("{}-{}", md5_hex(&md5s), chosen.len()),
            chunks: chosen.iter().flat_map(|part| part.chunks.iter().copied()).collect(),
            meta: upload.meta,
            checksums: Checksums::default(),
            part_sizes: chosen.iter().map(|part| part.size).collect(),
        };
        let etag = body.etag.clone();
        let record = self.new_object(body);
        let mut changes = self.storage.write_set();
        self.replace_object(&mut changes, upload.key, &record)?;
        self.remove_upload(&mut changes, &upload_id)?;
        self.commit(changes).await?;
        Ok(BucketReply::Committed { etag, version_id: None })
    }

    async fn abort_upload(mut self, upload_id: String) -> Outcome {
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
