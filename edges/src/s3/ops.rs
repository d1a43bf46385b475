//! The S3 operations: each one authorizes the caller against the bucket, then asks the bucket's
//! actor (through the directory) and translates its reply.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use s3s::auth::Credentials;
use s3s::checksum::ChecksumHasher;
use s3s::crypto::Checksum as _;
use s3s::dto::*;
use s3s::{S3, S3Error, S3ErrorCode, S3Request, S3Response, S3Result, s3_error};
use serv_actors::bucket::{
    BUCKETS, BucketInfo, BucketMeta, BucketMsg, BucketReply, CannedAcl, Checksums, ListVersionsRequest,
    Listing, ObjectBody, ObjectMeta, ObjectRecord, PartRecord, Versioning, WriteCondition,
};
use serv_actors::{ActorKey, ActorKind, Directory};
use serv_cluster::partition::BlockPlacement;
use serv_storage::{Storage, Table};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::auth::Keys;
use super::body::{self, Blocks, Hold, Written, hex};
use super::policy::{Decision, Policy};
use super::{S3Limits, error};

/// The checksums a request with a body claims in its headers (PutObject, UploadPart).
macro_rules! claimed_checksums {
    ($input:expr) => {
        Checksum {
            checksum_crc32: $input.checksum_crc32.clone(),
            checksum_crc32c: $input.checksum_crc32c.clone(),
            checksum_crc64nvme: $input.checksum_crc64nvme.clone(),
            checksum_sha1: $input.checksum_sha1.clone(),
            checksum_sha256: $input.checksum_sha256.clone(),
            ..Default::default()
        }
    };
}

/// An output struct with the given fields plus the computed checksums of a written body.
macro_rules! with_checksums {
    ($output:ident { $($field:ident: $value:expr),* $(,)? }, $sums:expr) => {{
        let sums = $sums;
        $output {
            $($field: $value,)*
            checksum_crc32: sums.checksum_crc32,
            checksum_crc32c: sums.checksum_crc32c,
            checksum_sha1: sums.checksum_sha1,
            checksum_sha256: sums.checksum_sha256,
            checksum_crc64nvme: sums.checksum_crc64nvme,
            ..Default::default()
        }
    }};
}

/// The object headers a request carries (PutObject, CopyObject with REPLACE, multipart create).
macro_rules! meta_from {
    ($input:expr) => {
        object_meta(
            $input.content_type,
            $input.content_encoding,
            $input.content_disposition,
            $input.content_language,
            $input.cache_control,
            $input.expires,
            $input.metadata,
        )
    };
}

/// A GET or HEAD answer: the given fields plus the object's stored headers (overridden by the
/// request's `response-*` parameters), validators and, for whole objects, checksums.
macro_rules! described_object {
    ($output:ident { $($field:ident: $value:expr),* $(,)? }, $input:expr, $record:expr, $span:expr,
     $content_range:expr, $checksums:expr) => {{
        let (record, meta, checksums) = (&$record, &$record.body.meta, $checksums);
        $output {
            $($field: $value,)*
            content_length: Some(($span.end - $span.start) as i64),
            content_range: $content_range,
            accept_ranges: Some("bytes".to_string()),
            e_tag: Some(strong(&record.body.etag)),
            last_modified: Some(timestamp(record.last_modified_ms)),
            content_type: $input.response_content_type.or_else(|| meta.content_type.clone()),
            content_encoding: $input.response_content_encoding.or_else(|| meta.content_encoding.clone()),
            content_disposition: $input.response_content_disposition.or_else(|| meta.content_disposition.clone()),
            content_language: $input.response_content_language.or_else(|| meta.content_language.clone()),
            cache_control: $input.response_cache_control.or_else(|| meta.cache_control.clone()),
            expires: meta.expires.as_deref().and_then(parse_http_date),
            metadata: user_metadata(meta),
            parts_count: (!record.body.part_sizes.is_empty()).then_some(record.body.part_sizes.len() as i32),
            version_id: record.version_id.clone(),
            checksum_crc32: checksums.and_then(|c: &Checksums| c.crc32.clone()),
            checksum_crc32c: checksums.and_then(|c: &Checksums| c.crc32c.clone()),
            checksum_sha1: checksums.and_then(|c: &Checksums| c.sha1.clone()),
            checksum_sha256: checksums.and_then(|c: &Checksums| c.sha256.clone()),
            ..Default::default()
        }
    }};
}

/// Our implementation of the S3 operations.
pub(super) struct ServS3 {
    directory: Directory,
    storage: Storage,
    buckets: Option<Table<String, BucketMeta>>,
    keys: Keys,
    limits: S3Limits,
    region: String,
    bodies: Arc<Semaphore>,
    /// Block sessions to other nodes, for buckets owned elsewhere (none on a lone node).
    blocks: Option<BlockPlacement>,
}

/// What a canned ACL must grant for an access.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Need {
    Read,
    Write,
    /// Bucket configuration: the owner's alone.
    Owner,
}

/// One access a request makes: an S3 action on the bucket or on one of its keys.
#[derive(Clone, Copy)]
struct Access<'a> {
    action: &'static str,
    key: Option<&'a str>,
}

impl<'a> Access<'a> {
    fn bucket(action: &'static str) -> Self {
        Self { action, key: None }
    }

    fn object(action: &'static str, key: &'a str) -> Self {
        Self { action, key: Some(key) }
    }

    fn resource(&self, bucket: &str) -> String {
        match self.key {
            Some(key) => format!("arn:aws:s3:::{bucket}/{key}"),
            None => format!("arn:aws:s3:::{bucket}"),
        }
    }

    fn need(&self) -> Need {
        const OWNER: &[&str] = &[
            "s3:DeleteBucket",
            "s3:PutBucketAcl",
            "s3:GetBucketAcl",
            "s3:PutBucketVersioning",
            "s3:PutBucketPolicy",
            "s3:GetBucketPolicy",
            "s3:DeleteBucketPolicy",
        ];
        if OWNER.contains(&self.action) {
            Need::Owner
        } else if self.action.starts_with("s3:Get") || self.action.starts_with("s3:List") {
            Need::Read
        } else {
            Need::Write
        }
    }
}

impl ServS3 {
    pub(super) fn new(
        directory: Directory,
        storage: Storage,
        keys: Keys,
        limits: S3Limits,
        region: String,
        blocks: Option<BlockPlacement>,
    ) -> Self {
        let buckets = storage.table(BUCKETS).ok();
        let bodies = Arc::new(Semaphore::new(limits.max_inflight_bodies));
        Self { directory, storage, buckets, keys, limits, region, bodies, blocks }
    }

    /// Where `bucket`'s blocks are stored: here on a node of one, else on its partition's
    /// replicas, as the partition layer places them.
    async fn blocks_of(&self, bucket: &str) -> S3Result<Blocks> {
        let Some(placement) = &self.blocks else { return Ok(Blocks::Local(self.storage.blocks().clone())) };
        let key = ActorKey::new(ActorKind::Bucket, bucket).to_string();
        match placement.for_key(&key) {
            Ok(None) => Ok(Blocks::Local(self.storage.blocks().clone())),
            Ok(Some(replicas)) => Ok(Blocks::Replicated(Arc::new(replicas))),
            Err(reason) => Err(S3Error::with_message(
                S3ErrorCode::ServiceUnavailable,
                format!("bucket {bucket}'s blocks cannot be stored or read now: {reason}"),
            )),
        }
    }

    async fn ask(&self, bucket: &str, msg: BucketMsg) -> S3Result<BucketReply> {
        let key = ActorKey::new(ActorKind::Bucket, bucket);
        match self.directory.call(&key, msg).await {
            Ok(BucketReply::Refused(refusal)) => Err(error::refusal(refusal)),
            Ok(reply) => Ok(reply),
            Err(e) => Err(error::directory(e)),
        }
    }

    /// The bucket, if the caller may do `access` on it: root and the owner may do anything a
    /// policy does not deny; others what the bucket's policy allows or, failing a statement
    /// about them, what its canned ACL allows. Bucket configuration stays the owner's.
    async fn authorize(
        &self,
        bucket: &str,
        credentials: Option<&Credentials>,
        access: Access<'_>,
    ) -> S3Result<BucketInfo> {
        let BucketReply::Info(info) = self.ask(bucket, BucketMsg::Head).await? else {
            return Err(unexpected());
        };
        let caller = credentials.map(|c| c.access_key.as_str());
        if caller.is_some_and(|key| self.keys.is_root(key)) {
            return Ok(info);
        }
        let denied = || s3_error!(AccessDenied, "Access Denied");
        let decision = match info.policy.as_deref().map(|document| Policy::parse(document, bucket)) {
            Some(Ok(policy)) => policy.decide(caller, access.action, &access.resource(bucket)),
            Some(Err(error)) => return Err(error::internal("a stored bucket policy does not parse", error)),
            None => Decision::Silent,
        };
        let need = access.need();
        match decision {
            Decision::Deny => return Err(denied()),
            Decision::Allow if need != Need::Owner => return Ok(info),
            _ => {}
        }
        if caller == Some(info.owner.as_str()) {
            return Ok(info);
        }
        let allowed = match (info.acl, need) {
            (CannedAcl::PublicReadWrite, Need::Read | Need::Write) => true,
            (CannedAcl::PublicRead, Need::Read) => true,
            (CannedAcl::AuthenticatedRead, Need::Read) => caller.is_some(),
            _ => false,
        };
        if allowed { Ok(info) } else { Err(denied()) }
    }

    fn check_key(&self, key: &str) -> S3Result<()> {
        if key.len() > self.limits.max_key_bytes {
            return Err(S3Error::with_message(
                S3ErrorCode::KeyTooLongError,
                format!("Your key is too long (at most {} bytes)", self.limits.max_key_bytes),
            ));
        }
        Ok(())
    }

    /// A slot for one body in flight, or `SlowDown` when all are taken.
    fn body_slot(&self) -> S3Result<OwnedSemaphorePermit> {
        self.bodies
            .clone()
            .try_acquire_owned()
            .map_err(|_| S3Error::with_message(S3ErrorCode::SlowDown, "Please reduce your request rate."))
    }

    /// The object's current record with its blocks pinned for reading (retried if the object is
    /// replaced, and its blocks collected, between the two steps), and where its blocks are.
    async fn pinned_object(
        &self,
        bucket: &str,
        key: &str,
        version_id: Option<String>,
    ) -> S3Result<(ObjectRecord, Blocks, Hold)> {
        let mut blocks = None;
        for _ in 0..3 {
            let msg = BucketMsg::GetObject { key: key.to_string(), version_id: version_id.clone() };
            let BucketReply::Object(record) = self.ask(bucket, msg).await? else { return Err(unexpected()) };
            let hashes: Vec<_> = record.body.chunks.iter().map(|chunk| chunk.hash).collect();
            let store = match blocks.take() {
                Some(store) => store,
                None => self.blocks_of(bucket).await?,
            };
            match store.pin(&hashes).await? {
                Ok(hold) => return Ok((*record, store, hold)),
                Err(_missing) => blocks = Some(store),
            }
        }
        Err(S3Error::with_message(S3ErrorCode::SlowDown, "The object is changing too fast to read; retry."))
    }

    /// Writes a request body to blocks and verifies Content-MD5 and the requested checksums.
    async fn write_body(
        &self,
        bucket: &str,
        req: &BodyRequest<'_>,
        body: Option<StreamingBlob>,
        max_size: u64,
    ) -> S3Result<Written> {
        let hasher = hasher_for(req.claimed, req.algorithm);
        let blocks = self.blocks_of(bucket).await?;
        let written = match body {
            Some(body) => body::write(&blocks, body, self.limits.block_size, max_size, hasher).await?,
            None => {
                body::write(
                    &blocks,
                    futures_util::stream::empty::<Result<bytes::Bytes, std::io::Error>>(),
                    self.limits.block_size,
                    max_size,
                    hasher,
                )
                .await?
            }
        };
        if let Some(content_md5) = req.content_md5 {
            let expected = base64_simd::STANDARD.decode_to_vec(content_md5.as_bytes()).map_err(|_| {
                S3Error::with_message(
                    S3ErrorCode::InvalidDigest,
                    "The Content-MD5 you specified is not valid.",
                )
            })?;
            if expected != written.md5 {
                return Err(S3Error::with_message(
                    S3ErrorCode::BadDigest,
                    "The Content-MD5 you specified did not match what we received.",
                ));
            }
        }
        let trailers = req.trailers.and_then(|t| t.take());
        let trailer = |name: &str| {
            trailers.as_ref().and_then(|t| t.get(name)).and_then(|v| v.to_str().ok()).map(str::to_string)
        };
        let claims = by_header(req.claimed).into_iter().zip(by_header(&written.checksums));
        for ((name, claimed), (_, computed)) in claims {
            let claimed = claimed.cloned().or_else(|| trailer(name));
            if let (Some(claimed), Some(computed)) = (claimed, computed)
                && claimed != *computed
            {
                return Err(S3Error::with_message(
                    S3ErrorCode::BadDigest,
                    format!("The {name} you specified did not match the calculated checksum."),
                ));
            }
        }
        Ok(written)
    }

    async fn list(&self, bucket: &str, request: serv_actors::bucket::ListRequest) -> S3Result<Listing> {
        match self.ask(bucket, BucketMsg::List(request)).await? {
            BucketReply::Listing(listing) => Ok(listing),
            _ => Err(unexpected()),
        }
    }

    fn page_size(&self, max_keys: Option<i32>) -> S3Result<usize> {
        match max_keys {
            Some(n) if n < 0 => Err(s3_error!(InvalidArgument, "max-keys must not be negative")),
            Some(n) => Ok((n as usize).min(self.limits.max_list_page)),
            None => Ok(self.limits.max_list_page),
        }
    }

    async fn upload_key(&self, bucket: &str, upload_id: &str, key: &str) -> S3Result<()> {
        let BucketReply::Upload(upload) =
            self.ask(bucket, BucketMsg::GetUpload { upload_id: upload_id.to_string() }).await?
        else {
            return Err(unexpected());
        };
        if upload.key != key {
            return Err(s3_error!(NoSuchUpload, "The upload belongs to another key"));
        }
        Ok(())
    }

    fn part_number(&self, n: i32) -> S3Result<u32> {
        if n < 1 || n as u32 > self.limits.max_parts {
            return Err(S3Error::with_message(
                S3ErrorCode::InvalidArgument,
                format!("Part number must be an integer between 1 and {}", self.limits.max_parts),
            ));
        }
        Ok(n as u32)
    }

    async fn commit_part(
        &self,
        bucket: &str,
        upload_id: String,
        part_number: u32,
        written: Written,
    ) -> S3Result<String> {
        let etag = written.md5_hex();
        let part = PartRecord {
            size: written.size,
            etag: etag.clone(),
            chunks: written.chunks.clone(),
            last_modified_ms: 0,
            block_owner: String::new(),
        };
        self.ask(bucket, BucketMsg::PutPart { upload_id, part_number, part }).await?;
        drop(written.pins);
        Ok(etag)
    }
}

/// The parts of a request that say how its body must check out.
struct BodyRequest<'a> {
    content_md5: Option<&'a String>,
    claimed: &'a Checksum,
    algorithm: Option<&'a ChecksumAlgorithm>,
    trailers: Option<&'a s3s::TrailingHeaders>,
}

fn hasher_for(claimed: &Checksum, algorithm: Option<&ChecksumAlgorithm>) -> ChecksumHasher {
    let wants = |name: &str, header: &Option<String>| {
        header.is_some() || algorithm.is_some_and(|a| a.as_str() == name)
    };
    ChecksumHasher {
        crc32: wants(ChecksumAlgorithm::CRC32, &claimed.checksum_crc32).then(s3s::crypto::Crc32::new),
        crc32c: wants(ChecksumAlgorithm::CRC32C, &claimed.checksum_crc32c).then(s3s::crypto::Crc32c::new),
        sha1: wants(ChecksumAlgorithm::SHA1, &claimed.checksum_sha1).then(s3s::crypto::Sha1::new),
        sha256: wants(ChecksumAlgorithm::SHA256, &claimed.checksum_sha256).then(s3s::crypto::Sha256::new),
        crc64nvme: wants(ChecksumAlgorithm::CRC64NVME, &claimed.checksum_crc64nvme)
            .then(s3s::crypto::Crc64Nvme::new),
    }
}

/// Each checksum with the header (or trailer) that carries it.
fn by_header(checksum: &Checksum) -> [(&'static str, Option<&String>); 5] {
    [
        ("x-amz-checksum-crc32", checksum.checksum_crc32.as_ref()),
        ("x-amz-checksum-crc32c", checksum.checksum_crc32c.as_ref()),
        ("x-amz-checksum-sha1", checksum.checksum_sha1.as_ref()),
        ("x-amz-checksum-sha256", checksum.checksum_sha256.as_ref()),
        ("x-amz-checksum-crc64nvme", checksum.checksum_crc64nvme.as_ref()),
    ]
}

fn unexpected() -> S3Error {
    error::internal("bucket actor", "unexpected reply")
}

fn timestamp(ms: u64) -> Timestamp {
    Timestamp::from(UNIX_EPOCH + Duration::from_millis(ms))
}

fn unix_secs(ts: &Timestamp) -> i64 {
    let at: time::OffsetDateTime = ts.clone().into();
    at.unix_timestamp()
}

fn http_date(ts: &Timestamp) -> Option<String> {
    let mut out = Vec::new();
    ts.format(TimestampFormat::HttpDate, &mut out).ok()?;
    String::from_utf8(out).ok()
}

fn parse_http_date(s: &str) -> Option<Timestamp> {
    Timestamp::parse(TimestampFormat::HttpDate, s).ok()
}

fn strong(etag: &str) -> ETag {
    ETag::Strong(etag.to_string())
}

fn etag_condition_matches(condition: &ETagCondition, etag: &str) -> bool {
    match condition {
        ETagCondition::Any => true,
        ETagCondition::ETag(given) => given.value() == etag,
    }
}

fn checksums_of(checksum: &Checksum) -> Checksums {
    Checksums {
        crc32: checksum.checksum_crc32.clone(),
        crc32c: checksum.checksum_crc32c.clone(),
        sha1: checksum.checksum_sha1.clone(),
        sha256: checksum.checksum_sha256.clone(),
    }
}

fn canned(acl: Option<&str>) -> S3Result<CannedAcl> {
    Ok(match acl {
        None | Some("private") => CannedAcl::Private,
        Some("public-read") => CannedAcl::PublicRead,
        Some("public-read-write") => CannedAcl::PublicReadWrite,
        Some("authenticated-read") => CannedAcl::AuthenticatedRead,
        Some(other) => return Err(s3_error!(InvalidArgument, "Unsupported canned ACL {}", other)),
    })
}

/// The headers an object stores, from a request's fields.
#[allow(clippy::too_many_arguments)]
fn object_meta(
    content_type: Option<String>,
    content_encoding: Option<String>,
    content_disposition: Option<String>,
    content_language: Option<String>,
    cache_control: Option<String>,
    expires: Option<Timestamp>,
    metadata: Option<Metadata>,
) -> ObjectMeta {
    ObjectMeta {
        // What S3 stores when a writer names no type.
        content_type: content_type.or_else(|| Some("binary/octet-stream".to_string())),
        content_encoding,
        content_disposition,
        content_language,
        cache_control,
        expires: expires.as_ref().and_then(http_date),
        user: metadata.unwrap_or_default().into_iter().map(|(k, v)| (k.to_ascii_lowercase(), v)).collect(),
    }
}

fn user_metadata(meta: &ObjectMeta) -> Option<Metadata> {
    (!meta.user.is_empty())
        .then(|| meta.user.iter().map(|(k, v)| (k.clone(), v.clone())).collect::<HashMap<_, _>>())
}

/// Evaluates GET/HEAD preconditions in the order RFC 9110 gives them.
fn preconditions(
    record: &ObjectRecord,
    if_match: Option<&ETagCondition>,
    if_none_match: Option<&ETagCondition>,
    if_modified_since: Option<&Timestamp>,
    if_unmodified_since: Option<&Timestamp>,
) -> S3Result<()> {
    let etag = record.body.etag.as_str();
    let modified = (record.last_modified_ms / 1000) as i64;
    let failed = || {
        S3Error::with_message(
            S3ErrorCode::PreconditionFailed,
            "At least one of the pre-conditions you specified did not hold",
        )
    };
    let not_modified = || S3Error::new(S3ErrorCode::NotModified);
    match if_match {
        Some(condition) if !etag_condition_matches(condition, etag) => return Err(failed()),
        Some(_) => {}
        None => {
            if if_unmodified_since.is_some_and(|since| modified > unix_secs(since)) {
                return Err(failed());
            }
        }
    }
    match if_none_match {
        Some(condition) if etag_condition_matches(condition, etag) => return Err(not_modified()),
        Some(_) => {}
        None => {
            if if_modified_since.is_some_and(|since| modified <= unix_secs(since)) {
                return Err(not_modified());
            }
        }
    }
    Ok(())
}

/// The byte range a GET asks for (a Range header or a part number), and the part count if any.
fn requested_range(
    record: &ObjectRecord,
    range: Option<Range>,
    part_number: Option<i32>,
) -> S3Result<Option<std::ops::Range<u64>>> {
    let size = record.body.size;
    if let Some(n) = part_number {
        let sizes =
            if record.body.part_sizes.is_empty() { vec![size] } else { record.body.part_sizes.clone() };
        if n < 1 || n as usize > sizes.len() {
            let mut error = S3Error::with_message(
                S3ErrorCode::Custom("InvalidPartNumber".into()),
                "The requested partnumber is not satisfiable",
            );
            error.set_status_code(axum::http::StatusCode::RANGE_NOT_SATISFIABLE);
            return Err(error);
        }
        let start: u64 = sizes[..n as usize - 1].iter().sum();
        return Ok(Some(start..start + sizes[n as usize - 1]));
    }
    match range {
        None => Ok(None),
        Some(range) => range.check(size).map(Some).map_err(|_| {
            S3Error::with_message(S3ErrorCode::InvalidRange, "The requested range is not satisfiable")
        }),
    }
}

#[async_trait::async_trait]
impl S3 for ServS3 {
    async fn create_bucket(
        &self,
        req: S3Request<CreateBucketInput>,
    ) -> S3Result<S3Response<CreateBucketOutput>> {
        let Some(credentials) = req.credentials.as_ref() else { return Err(s3_error!(AccessDenied)) };
        let acl = canned(req.input.acl.as_ref().map(|a| a.as_str()))?;
        let msg = BucketMsg::Create { owner: credentials.access_key.clone(), acl };
        self.ask(&req.input.bucket, msg).await?;
        let output = CreateBucketOutput { location: Some(format!("/{}", req.input.bucket)) };
        Ok(S3Response::new(output))
    }

    async fn delete_bucket(
        &self,
        req: S3Request<DeleteBucketInput>,
    ) -> S3Result<S3Response<DeleteBucketOutput>> {
        self.authorize(&req.input.bucket, req.credentials.as_ref(), Access::bucket("s3:DeleteBucket"))
            .await?;
        self.ask(&req.input.bucket, BucketMsg::Delete).await?;
        Ok(S3Response::new(DeleteBucketOutput {}))
    }

    async fn head_bucket(&self, req: S3Request<HeadBucketInput>) -> S3Result<S3Response<HeadBucketOutput>> {
        self.authorize(&req.input.bucket, req.credentials.as_ref(), Access::bucket("s3:ListBucket")).await?;
        Ok(S3Response::new(HeadBucketOutput {
            bucket_region: Some(self.region.clone()),
            ..Default::default()
        }))
    }

    async fn get_bucket_location(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> S3Result<S3Response<GetBucketLocationOutput>> {
        self.authorize(&req.input.bucket, req.credentials.as_ref(), Access::bucket("s3:GetBucketLocation"))
            .await?;
        // us-east-1 is reported as an empty constraint, as S3 does.
        let location =
            (self.region != "us-east-1").then(|| BucketLocationConstraint::from(self.region.clone()));
        Ok(S3Response::new(GetBucketLocationOutput { location_constraint: location }))
    }

    async fn put_bucket_acl(
        &self,
        req: S3Request<PutBucketAclInput>,
    ) -> S3Result<S3Response<PutBucketAclOutput>> {
        let input = req.input;
        self.authorize(&input.bucket, req.credentials.as_ref(), Access::bucket("s3:PutBucketAcl")).await?;
        let grants =
            [&input.grant_full_control, &input.grant_read, &input.grant_read_acp, &input.grant_write];
        if input.access_control_policy.is_some() || grants.iter().any(|g| g.is_some()) {
            return Err(s3_error!(NotImplemented, "Only canned ACLs (x-amz-acl) are supported"));
        }
        let acl = canned(input.acl.as_ref().map(|a| a.as_str()))?;
        self.ask(&input.bucket, BucketMsg::SetAcl(acl)).await?;
        Ok(S3Response::new(PutBucketAclOutput::default()))
    }

    async fn get_bucket_acl(
        &self,
        req: S3Request<GetBucketAclInput>,
    ) -> S3Result<S3Response<GetBucketAclOutput>> {
        let input = req.input;
        let info = self
            .authorize(&input.bucket, req.credentials.as_ref(), Access::bucket("s3:GetBucketAcl"))
            .await?;
        let owner = Owner { id: Some(info.owner.clone()), display_name: Some(info.owner.clone()) };
        let grant =
            |type_: &'static str, id: Option<String>, uri: Option<&str>, permission: &'static str| Grant {
                grantee: Some(Grantee {
                    type_: Type::from_static(type_),
                    id: id.clone(),
                    display_name: id,
                    uri: uri.map(str::to_string),
                    email_address: None,
                }),
                permission: Some(Permission::from_static(permission)),
            };
        let mut grants =
            vec![grant(Type::CANONICAL_USER, Some(info.owner.clone()), None, Permission::FULL_CONTROL)];
        const ALL_USERS: &str = "http://acs.amazonaws.com/groups/global/AllUsers";
        const AUTHENTICATED: &str = "http://acs.amazonaws.com/groups/global/AuthenticatedUsers";
        match info.acl {
            CannedAcl::Private => {}
            CannedAcl::PublicRead => grants.push(grant(Type::GROUP, None, Some(ALL_USERS), Permission::READ)),
            CannedAcl::PublicReadWrite => {
                grants.push(grant(Type::GROUP, None, Some(ALL_USERS), Permission::READ));
                grants.push(grant(Type::GROUP, None, Some(ALL_USERS), Permission::WRITE));
            }
            CannedAcl::AuthenticatedRead => {
                grants.push(grant(Type::GROUP, None, Some(AUTHENTICATED), Permission::READ))
            }
        }
        Ok(S3Response::new(GetBucketAclOutput { grants: Some(grants), owner: Some(owner) }))
    }

    async fn put_bucket_versioning(
        &self,
        req: S3Request<PutBucketVersioningInput>,
    ) -> S3Result<S3Response<PutBucketVersioningOutput>> {
        let input = req.input;
        self.authorize(&input.bucket, req.credentials.as_ref(), Access::bucket("s3:PutBucketVersioning"))
            .await?;
        let versioning = match input.versioning_configuration.status.as_ref().map(|s| s.as_str()) {
            Some(BucketVersioningStatus::ENABLED) => Versioning::Enabled,
            Some(BucketVersioningStatus::SUSPENDED) => Versioning::Suspended,
            _ => return Err(s3_error!(MalformedXML, "Status must be Enabled or Suspended")),
        };
        self.ask(&input.bucket, BucketMsg::SetVersioning(versioning)).await?;
        Ok(S3Response::new(PutBucketVersioningOutput::default()))
    }

    async fn get_bucket_versioning(
        &self,
        req: S3Request<GetBucketVersioningInput>,
    ) -> S3Result<S3Response<GetBucketVersioningOutput>> {
        let info = self
            .authorize(&req.input.bucket, req.credentials.as_ref(), Access::bucket("s3:GetBucketVersioning"))
            .await?;
        let status = match info.versioning {
            Versioning::Unversioned => None,
            Versioning::Enabled => Some(BucketVersioningStatus::from_static(BucketVersioningStatus::ENABLED)),
            Versioning::Suspended => {
                Some(BucketVersioningStatus::from_static(BucketVersioningStatus::SUSPENDED))
            }
        };
        Ok(S3Response::new(GetBucketVersioningOutput { status, mfa_delete: None }))
    }

    async fn list_object_versions(
        &self,
        req: S3Request<ListObjectVersionsInput>,
    ) -> S3Result<S3Response<ListObjectVersionsOutput>> {
        let input = req.input;
        self.authorize(&input.bucket, req.credentials.as_ref(), Access::bucket("s3:ListBucketVersions"))
            .await?;
        let max = self.page_size(input.max_keys)?;
        let request = ListVersionsRequest {
            prefix: input.prefix.clone().unwrap_or_default(),
            delimiter: input.delimiter.clone(),
            key_marker: input.key_marker.clone().filter(|k| !k.is_empty()),
            version_marker: input.version_id_marker.clone(),
            max,
        };
        let BucketReply::Versions(listing) =
            self.ask(&input.bucket, BucketMsg::ListVersions(request)).await?
        else {
            return Err(unexpected());
        };
        let url = input.encoding_type.as_ref().is_some_and(|e| e.as_str() == EncodingType::URL);
        let (mut versions, mut markers) = (Vec::new(), Vec::new());
        for v in listing.versions {
            let (key, last_modified) = (Some(encode_if(url, &v.key)), Some(timestamp(v.last_modified_ms)));
            match v.object {
                Some((size, etag)) => versions.push(ObjectVersion {
                    key,
                    version_id: Some(v.version_id),
                    is_latest: Some(v.is_latest),
                    last_modified,
                    size: Some(size as i64),
                    e_tag: Some(strong(&etag)),
                    storage_class: Some(ObjectVersionStorageClass::from_static(
                        ObjectVersionStorageClass::STANDARD,
                    )),
                    ..Default::default()
                }),
                None => markers.push(DeleteMarkerEntry {
                    key,
                    version_id: Some(v.version_id),
                    is_latest: Some(v.is_latest),
                    last_modified,
                    owner: None,
                }),
            }
        }
        let output = ListObjectVersionsOutput {
            name: Some(input.bucket),
            prefix: input.prefix.map(|p| encode_if(url, &p)),
            delimiter: input.delimiter.map(|d| encode_if(url, &d)),
            key_marker: input.key_marker,
            version_id_marker: input.version_id_marker,
            max_keys: Some(max as i32),
            is_truncated: Some(listing.next.is_some()),
            next_key_marker: listing.next.as_ref().map(|(key, _)| encode_if(url, key)),
            next_version_id_marker: listing.next.map(|(_, version)| version).filter(|v| !v.is_empty()),
            encoding_type: input.encoding_type,
            versions: Some(versions),
            delete_markers: Some(markers),
            common_prefixes: Some(
                listing
                    .common_prefixes
                    .iter()
                    .map(|p| CommonPrefix { prefix: Some(encode_if(url, p)) })
                    .collect(),
            ),
            ..Default::default()
        };
        Ok(S3Response::new(output))
    }

    async fn put_bucket_policy(
        &self,
        req: S3Request<PutBucketPolicyInput>,
    ) -> S3Result<S3Response<PutBucketPolicyOutput>> {
        let input = req.input;
        self.authorize(&input.bucket, req.credentials.as_ref(), Access::bucket("s3:PutBucketPolicy")).await?;
        Policy::parse(&input.policy, &input.bucket)
            .map_err(|e| S3Error::with_message(S3ErrorCode::MalformedPolicy, e))?;
        self.ask(&input.bucket, BucketMsg::SetPolicy(Some(input.policy))).await?;
        Ok(S3Response::new(PutBucketPolicyOutput::default()))
    }

    async fn get_bucket_policy(
        &self,
        req: S3Request<GetBucketPolicyInput>,
    ) -> S3Result<S3Response<GetBucketPolicyOutput>> {
        let access = Access::bucket("s3:GetBucketPolicy");
        let info = self.authorize(&req.input.bucket, req.credentials.as_ref(), access).await?;
        let Some(policy) = info.policy else {
            return Err(s3_error!(NoSuchBucketPolicy, "The bucket policy does not exist"));
        };
        Ok(S3Response::new(GetBucketPolicyOutput { policy: Some(policy) }))
    }

    async fn delete_bucket_policy(
        &self,
        req: S3Request<DeleteBucketPolicyInput>,
    ) -> S3Result<S3Response<DeleteBucketPolicyOutput>> {
        let access = Access::bucket("s3:DeleteBucketPolicy");
        self.authorize(&req.input.bucket, req.credentials.as_ref(), access).await?;
        self.ask(&req.input.bucket, BucketMsg::SetPolicy(None)).await?;
        Ok(S3Response::new(DeleteBucketPolicyOutput::default()))
    }

    async fn list_buckets(
        &self,
        req: S3Request<ListBucketsInput>,
    ) -> S3Result<S3Response<ListBucketsOutput>> {
        let Some(credentials) = req.credentials.as_ref() else { return Err(s3_error!(AccessDenied)) };
        let Some(table) = &self.buckets else { return Err(error::internal("bucket table", "not open")) };
        let root = self.keys.is_root(&credentials.access_key);
        // Each node's table lists the buckets it owns: ask every node that is up.
        let all = crate::owned::everywhere(&self.directory, table)
            .await
            .map_err(|reason| S3Error::with_message(S3ErrorCode::ServiceUnavailable, reason))?;
        let mut buckets = Vec::new();
        for (name, meta) in all {
            if root || meta.owner == credentials.access_key {
                buckets.push(Bucket {
                    name: Some(name),
                    creation_date: Some(timestamp(meta.created_ms)),
                    bucket_region: Some(self.region.clone()),
                });
            }
        }
        let owner = Owner {
            id: Some(credentials.access_key.clone()),
            display_name: Some(credentials.access_key.clone()),
        };
        Ok(S3Response::new(ListBucketsOutput {
            buckets: Some(buckets),
            owner: Some(owner),
            ..Default::default()
        }))
    }

    async fn put_object(&self, req: S3Request<PutObjectInput>) -> S3Result<S3Response<PutObjectOutput>> {
        let S3Request { input, credentials, trailing_headers, .. } = req;
        self.authorize(&input.bucket, credentials.as_ref(), Access::object("s3:PutObject", &input.key))
            .await?;
        self.check_key(&input.key)?;
        let _slot = self.body_slot()?;
        let claimed = claimed_checksums!(input);
        let request = BodyRequest {
            content_md5: input.content_md5.as_ref(),
            claimed: &claimed,
            algorithm: input.checksum_algorithm.as_ref(),
            trailers: trailing_headers.as_ref(),
        };
        let written =
            self.write_body(&input.bucket, &request, input.body, self.limits.max_object_size).await?;
        let condition = match (&input.if_none_match, &input.if_match) {
            (Some(ETagCondition::Any), _) => Some(WriteCondition::Absent),
            (_, Some(ETagCondition::ETag(etag))) => Some(WriteCondition::ETag(etag.value().to_string())),
            (_, Some(ETagCondition::Any)) => Some(WriteCondition::ETag("*".to_string())),
            _ => None,
        };
        let meta = meta_from!(input);
        let body = ObjectBody {
            size: written.size,
            etag: written.md5_hex(),
            chunks: written.chunks.clone(),
            meta,
            checksums: checksums_of(&written.checksums),
            part_sizes: Vec::new(),
        };
        let msg = BucketMsg::PutObject { key: input.key, body, condition };
        let reply = if crate::fault_injection::lose(crate::fault_injection::Loss::S3Put) {
            BucketReply::Committed { etag: written.md5_hex(), version_id: None }
        } else {
            self.ask(&input.bucket, msg).await?
        };
        let BucketReply::Committed { etag, version_id } = reply else {
            return Err(unexpected());
        };
        drop(written.pins);
        let output = with_checksums!(
            PutObjectOutput { e_tag: Some(strong(&etag)), version_id: version_id },
            written.checksums
        );
        Ok(S3Response::new(output))
    }

    async fn get_object(&self, req: S3Request<GetObjectInput>) -> S3Result<S3Response<GetObjectOutput>> {
        let input = req.input;
        self.authorize(&input.bucket, req.credentials.as_ref(), Access::object("s3:GetObject", &input.key))
            .await?;
        let (record, blocks, pins) =
            self.pinned_object(&input.bucket, &input.key, input.version_id.clone()).await?;
        preconditions(
            &record,
            input.if_match.as_ref(),
            input.if_none_match.as_ref(),
            input.if_modified_since.as_ref(),
            input.if_unmodified_since.as_ref(),
        )?;
        let size = record.body.size;
        let range = requested_range(&record, input.range, input.part_number)?;
        let span = range.clone().unwrap_or(0..size);
        // Checksums are of the whole object: a part of it is sent without them, as S3 does.
        let whole = range.is_none();
        let content_range = range.map(|r| format!("bytes {}-{}/{size}", r.start, r.end.saturating_sub(1)));
        let slot = self.body_slot()?;
        let stream = body::read(blocks, record.body.chunks.clone(), span.clone(), pins);
        // The slot is held until the body has been sent.
        let stream = futures_util::StreamExt::map(stream, move |piece| {
            let _ = &slot;
            piece
        });
        let checksums = (whole && input.checksum_mode.is_some()).then_some(&record.body.checksums);
        let output = described_object!(
            GetObjectOutput {
                body: Some(StreamingBlob::wrap(stream)),
                tag_count: (!record.tags.is_empty()).then_some(record.tags.len() as i32),
            },
            input,
            record,
            span,
            content_range,
            checksums
        );
        Ok(S3Response::new(output))
    }

    async fn head_object(&self, req: S3Request<HeadObjectInput>) -> S3Result<S3Response<HeadObjectOutput>> {
        let input = req.input;
        self.authorize(&input.bucket, req.credentials.as_ref(), Access::object("s3:GetObject", &input.key))
            .await?;
        let msg = BucketMsg::GetObject { key: input.key.clone(), version_id: input.version_id.clone() };
        let BucketReply::Object(record) = self.ask(&input.bucket, msg).await? else {
            return Err(unexpected());
        };
        preconditions(
            &record,
            input.if_match.as_ref(),
            input.if_none_match.as_ref(),
            input.if_modified_since.as_ref(),
            input.if_unmodified_since.as_ref(),
        )?;
        let range = requested_range(&record, input.range, input.part_number)?;
        let size = record.body.size;
        let span = range.clone().unwrap_or(0..size);
        let whole = range.is_none();
        let checksums = (whole && input.checksum_mode.is_some()).then_some(&record.body.checksums);
        let content_range = range.map(|r| format!("bytes {}-{}/{size}", r.start, r.end.saturating_sub(1)));
        let output = described_object!(HeadObjectOutput {}, input, record, span, content_range, checksums);
        Ok(S3Response::new(output))
    }

    async fn delete_object(
        &self,
        req: S3Request<DeleteObjectInput>,
    ) -> S3Result<S3Response<DeleteObjectOutput>> {
        let input = req.input;
        self.authorize(
            &input.bucket,
            req.credentials.as_ref(),
            Access::object("s3:DeleteObject", &input.key),
        )
        .await?;
        let msg = BucketMsg::DeleteObject { key: input.key, version_id: input.version_id };
        let BucketReply::Deleted { version_id, delete_marker } = self.ask(&input.bucket, msg).await? else {
            return Err(unexpected());
        };
        let output = DeleteObjectOutput {
            version_id,
            delete_marker: delete_marker.then_some(true),
            ..Default::default()
        };
        Ok(S3Response::new(output))
    }

    async fn delete_objects(
        &self,
        req: S3Request<DeleteObjectsInput>,
    ) -> S3Result<S3Response<DeleteObjectsOutput>> {
        let input = req.input;
        self.authorize(&input.bucket, req.credentials.as_ref(), Access::bucket("s3:DeleteObject")).await?;
        if input.delete.objects.len() > 1000 {
            return Err(s3_error!(MalformedXML, "At most 1000 keys may be deleted in one request"));
        }
        let quiet = input.delete.quiet.unwrap_or(false);
        let (mut deleted, mut errors) = (Vec::new(), Vec::new());
        for object in input.delete.objects {
            let msg =
                BucketMsg::DeleteObject { key: object.key.clone(), version_id: object.version_id.clone() };
            match self.ask(&input.bucket, msg).await {
                Ok(BucketReply::Deleted { version_id, delete_marker }) => {
                    if !quiet {
                        // A new delete marker is reported by its own id; a version deleted by
                        // id is reported with that id.
                        let (version_id, marker_id) = match (delete_marker, object.version_id) {
                            (true, None) => (None, version_id),
                            (true, requested) => (requested.clone(), requested),
                            (false, _) => (version_id, None),
                        };
                        deleted.push(DeletedObject {
                            key: Some(object.key),
                            version_id,
                            delete_marker: delete_marker.then_some(true),
                            delete_marker_version_id: marker_id,
                        });
                    }
                }
                Ok(_) => return Err(unexpected()),
                Err(e) => errors.push(Error {
                    code: e.code().as_str().to_string().into(),
                    key: Some(object.key),
                    message: e.message().map(str::to_string),
                    version_id: object.version_id,
                }),
            }
        }
        let output =
            DeleteObjectsOutput { deleted: Some(deleted), errors: Some(errors), ..Default::default() };
        Ok(S3Response::new(output))
    }

    async fn copy_object(&self, req: S3Request<CopyObjectInput>) -> S3Result<S3Response<CopyObjectOutput>> {
        let input = req.input;
        let CopySource::Bucket { bucket: source_bucket, key: source_key, version_id } = &input.copy_source
        else {
            return Err(s3_error!(NotImplemented, "Copying from an access point is not supported"));
        };
        self.authorize(source_bucket, req.credentials.as_ref(), Access::object("s3:GetObject", source_key))
            .await?;
        self.authorize(&input.bucket, req.credentials.as_ref(), Access::object("s3:PutObject", &input.key))
            .await?;
        self.check_key(&input.key)?;
        let (source, source_blocks, pins) =
            self.pinned_object(source_bucket, source_key, version_id.as_ref().map(|v| v.to_string())).await?;
        copy_preconditions(
            &source,
            &input.copy_source_if_match,
            &input.copy_source_if_none_match,
            input.copy_source_if_modified_since.as_ref(),
            input.copy_source_if_unmodified_since.as_ref(),
        )?;
        let replace =
            input.metadata_directive.as_ref().is_some_and(|d| d.as_str() == MetadataDirective::REPLACE);
        if !replace && **source_bucket == *input.bucket && **source_key == *input.key {
            return Err(s3_error!(
                InvalidRequest,
                "This copy request is illegal because it is trying to copy an object to itself without changing the object's metadata."
            ));
        }
        let meta = if replace { meta_from!(input) } else { source.body.meta.clone() };
        let body = ObjectBody { meta, ..source.body.clone() };
        // The copy references the same blocks; when the buckets live on different nodes, the
        // blocks are copied to the destination's owner first (and held there until committed).
        let destination = self.blocks_of(&input.bucket).await?;
        let _copies = match destination.same_as(&source_blocks) {
            true => None,
            false => Some(body::copy_blocks(&source_blocks, &destination, &source.body.chunks).await?),
        };
        let msg = BucketMsg::PutObject { key: input.key, body, condition: None };
        let BucketReply::Committed { etag, version_id: new_version } = self.ask(&input.bucket, msg).await?
        else {
            return Err(unexpected());
        };
        drop(pins);
        let output = CopyObjectOutput {
            copy_object_result: Some(CopyObjectResult {
                e_tag: Some(strong(&etag)),
                last_modified: Some(Timestamp::from(SystemTime::now())),
                ..Default::default()
            }),
            version_id: new_version,
            ..Default::default()
        };
        Ok(S3Response::new(output))
    }

    async fn list_objects_v2(
        &self,
        req: S3Request<ListObjectsV2Input>,
    ) -> S3Result<S3Response<ListObjectsV2Output>> {
        let input = req.input;
        self.authorize(&input.bucket, req.credentials.as_ref(), Access::bucket("s3:ListBucket")).await?;
        let max = self.page_size(input.max_keys)?;
        let after = match &input.continuation_token {
            Some(token) => Some(decode_token(token)?),
            None => input.start_after.clone(),
        };
        let prefix = input.prefix.clone().unwrap_or_default();
        let request =
            serv_actors::bucket::ListRequest { prefix, delimiter: input.delimiter.clone(), after, max };
        let listing = self.list(&input.bucket, request).await?;
        let url = input.encoding_type.as_ref().is_some_and(|e| e.as_str() == EncodingType::URL);
        let key_count = (listing.objects.len() + listing.common_prefixes.len()) as i32;
        let output = ListObjectsV2Output {
            name: Some(input.bucket),
            prefix: input.prefix.map(|p| encode_if(url, &p)),
            delimiter: input.delimiter.map(|d| encode_if(url, &d)),
            max_keys: Some(max as i32),
            key_count: Some(key_count),
            continuation_token: input.continuation_token,
            start_after: input.start_after.map(|s| encode_if(url, &s)),
            is_truncated: Some(listing.next_after.is_some()),
            next_continuation_token: listing.next_after.as_deref().map(encode_token),
            encoding_type: input.encoding_type,
            contents: Some(listed_objects(&listing, url)),
            common_prefixes: Some(common_prefixes(&listing, url)),
            ..Default::default()
        };
        Ok(S3Response::new(output))
    }

    async fn list_objects(
        &self,
        req: S3Request<ListObjectsInput>,
    ) -> S3Result<S3Response<ListObjectsOutput>> {
        let input = req.input;
        self.authorize(&input.bucket, req.credentials.as_ref(), Access::bucket("s3:ListBucket")).await?;
        let max = self.page_size(input.max_keys)?;
        let prefix = input.prefix.clone().unwrap_or_default();
        let request = serv_actors::bucket::ListRequest {
            prefix,
            delimiter: input.delimiter.clone(),
            after: input.marker.clone().filter(|m| !m.is_empty()),
            max,
        };
        let listing = self.list(&input.bucket, request).await?;
        let url = input.encoding_type.as_ref().is_some_and(|e| e.as_str() == EncodingType::URL);
        let output = ListObjectsOutput {
            name: Some(input.bucket),
            prefix: input.prefix.map(|p| encode_if(url, &p)),
            delimiter: input.delimiter.map(|d| encode_if(url, &d)),
            marker: input.marker.map(|m| encode_if(url, &m)),
            max_keys: Some(max as i32),
            is_truncated: Some(listing.next_after.is_some()),
            next_marker: listing.next_after.as_deref().map(|m| encode_if(url, m)),
            encoding_type: input.encoding_type,
            contents: Some(listed_objects(&listing, url)),
            common_prefixes: Some(common_prefixes(&listing, url)),
            ..Default::default()
        };
        Ok(S3Response::new(output))
    }

    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        let input = req.input;
        self.authorize(&input.bucket, req.credentials.as_ref(), Access::object("s3:PutObject", &input.key))
            .await?;
        self.check_key(&input.key)?;
        let meta = meta_from!(input);
        let initiator = req.credentials.map(|c| c.access_key).unwrap_or_default();
        let msg = BucketMsg::CreateUpload { key: input.key.clone(), meta, initiator };
        let BucketReply::Upload(upload) = self.ask(&input.bucket, msg).await? else {
            return Err(unexpected());
        };
        let output = CreateMultipartUploadOutput {
            bucket: Some(input.bucket),
            key: Some(input.key),
            upload_id: Some(upload.upload_id),
            ..Default::default()
        };
        Ok(S3Response::new(output))
    }

    async fn upload_part(&self, req: S3Request<UploadPartInput>) -> S3Result<S3Response<UploadPartOutput>> {
        let S3Request { input, credentials, trailing_headers, .. } = req;
        self.authorize(&input.bucket, credentials.as_ref(), Access::object("s3:PutObject", &input.key))
            .await?;
        let part_number = self.part_number(input.part_number)?;
        self.upload_key(&input.bucket, &input.upload_id, &input.key).await?;
        let _slot = self.body_slot()?;
        let claimed = claimed_checksums!(input);
        let request = BodyRequest {
            content_md5: input.content_md5.as_ref(),
            claimed: &claimed,
            algorithm: input.checksum_algorithm.as_ref(),
            trailers: trailing_headers.as_ref(),
        };
        let written =
            self.write_body(&input.bucket, &request, input.body, self.limits.max_object_size).await?;
        let checksums = written.checksums.clone();
        let etag = self.commit_part(&input.bucket, input.upload_id, part_number, written).await?;
        let output = with_checksums!(UploadPartOutput { e_tag: Some(strong(&etag)) }, checksums);
        Ok(S3Response::new(output))
    }

    async fn upload_part_copy(
        &self,
        req: S3Request<UploadPartCopyInput>,
    ) -> S3Result<S3Response<UploadPartCopyOutput>> {
        let input = req.input;
        let CopySource::Bucket { bucket: source_bucket, key: source_key, version_id } = &input.copy_source
        else {
            return Err(s3_error!(NotImplemented, "Copying from an access point is not supported"));
        };
        self.authorize(source_bucket, req.credentials.as_ref(), Access::object("s3:GetObject", source_key))
            .await?;
        self.authorize(&input.bucket, req.credentials.as_ref(), Access::object("s3:PutObject", &input.key))
            .await?;
        let part_number = self.part_number(input.part_number)?;
        self.upload_key(&input.bucket, &input.upload_id, &input.key).await?;
        let (source, source_blocks, pins) =
            self.pinned_object(source_bucket, source_key, version_id.as_ref().map(|v| v.to_string())).await?;
        copy_preconditions(
            &source,
            &input.copy_source_if_match,
            &input.copy_source_if_none_match,
            input.copy_source_if_modified_since.as_ref(),
            input.copy_source_if_unmodified_since.as_ref(),
        )?;
        let size = source.body.size;
        let span = match &input.copy_source_range {
            None => 0..size,
            Some(header) => {
                let invalid = || {
                    S3Error::with_message(
                        S3ErrorCode::InvalidRange,
                        "The x-amz-copy-source-range is not satisfiable",
                    )
                };
                match Range::parse(header).map_err(|_| invalid())? {
                    range @ Range::Int { last: Some(_), .. } => range.check(size).map_err(|_| invalid())?,
                    _ => {
                        return Err(s3_error!(
                            InvalidArgument,
                            "x-amz-copy-source-range must be bytes=first-last"
                        ));
                    }
                }
            }
        };
        let _slot = self.body_slot()?;
        let stream = Box::pin(body::read(source_blocks, source.body.chunks.clone(), span, pins));
        let no_checksums = Checksum::default();
        let request =
            BodyRequest { content_md5: None, claimed: &no_checksums, algorithm: None, trailers: None };
        let hasher = hasher_for(request.claimed, None);
        let destination = self.blocks_of(&input.bucket).await?;
        let written =
            body::write(&destination, stream, self.limits.block_size, self.limits.max_object_size, hasher)
                .await?;
        let etag = self.commit_part(&input.bucket, input.upload_id, part_number, written).await?;
        let output = UploadPartCopyOutput {
            copy_part_result: Some(CopyPartResult {
                e_tag: Some(strong(&etag)),
                last_modified: Some(Timestamp::from(SystemTime::now())),
                ..Default::default()
            }),
            ..Default::default()
        };
        Ok(S3Response::new(output))
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        let input = req.input;
        self.authorize(&input.bucket, req.credentials.as_ref(), Access::object("s3:PutObject", &input.key))
            .await?;
        self.upload_key(&input.bucket, &input.upload_id, &input.key).await?;
        let Some(parts) = input.multipart_upload.and_then(|m| m.parts) else {
            return Err(s3_error!(MalformedXML, "The XML you provided did not list any parts"));
        };
        if parts.len() > self.limits.max_parts as usize {
            return Err(s3_error!(MalformedXML, "Too many parts"));
        }
        let mut wanted = Vec::with_capacity(parts.len());
        for part in parts {
            let (Some(number), Some(etag)) = (part.part_number, part.e_tag) else {
                return Err(s3_error!(MalformedXML, "Each part needs a PartNumber and an ETag"));
            };
            wanted.push((self.part_number(number)?, etag.value().to_string()));
        }
        let msg = BucketMsg::CompleteUpload {
            upload_id: input.upload_id,
            parts: wanted,
            min_part_size: self.limits.min_part_size,
        };
        let BucketReply::Committed { etag, version_id } = self.ask(&input.bucket, msg).await? else {
            return Err(unexpected());
        };
        let output = CompleteMultipartUploadOutput {
            bucket: Some(input.bucket.clone()),
            key: Some(input.key.clone()),
            e_tag: Some(strong(&etag)),
            location: Some(format!("/{}/{}", input.bucket, input.key)),
            version_id,
            ..Default::default()
        };
        Ok(S3Response::new(output))
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        let input = req.input;
        self.authorize(
            &input.bucket,
            req.credentials.as_ref(),
            Access::object("s3:AbortMultipartUpload", &input.key),
        )
        .await?;
        self.upload_key(&input.bucket, &input.upload_id, &input.key).await?;
        self.ask(&input.bucket, BucketMsg::AbortUpload { upload_id: input.upload_id }).await?;
        Ok(S3Response::new(AbortMultipartUploadOutput::default()))
    }

    async fn list_parts(&self, req: S3Request<ListPartsInput>) -> S3Result<S3Response<ListPartsOutput>> {
        let input = req.input;
        self.authorize(
            &input.bucket,
            req.credentials.as_ref(),
            Access::object("s3:ListMultipartUploadParts", &input.key),
        )
        .await?;
        self.upload_key(&input.bucket, &input.upload_id, &input.key).await?;
        let max = input.max_parts.unwrap_or(1000).clamp(0, 1000) as usize;
        let after = input.part_number_marker.unwrap_or(0).max(0) as u32;
        let msg = BucketMsg::ListParts { upload_id: input.upload_id.clone(), after, max };
        let BucketReply::Parts { parts, truncated } = self.ask(&input.bucket, msg).await? else {
            return Err(unexpected());
        };
        let next = parts.last().map(|p| p.part_number as i32);
        let parts = parts
            .into_iter()
            .map(|p| Part {
                part_number: Some(p.part_number as i32),
                size: Some(p.size as i64),
                e_tag: Some(strong(&p.etag)),
                last_modified: Some(timestamp(p.last_modified_ms)),
                ..Default::default()
            })
            .collect();
        let output = ListPartsOutput {
            bucket: Some(input.bucket),
            key: Some(input.key),
            upload_id: Some(input.upload_id),
            max_parts: Some(max as i32),
            part_number_marker: input.part_number_marker,
            next_part_number_marker: next,
            is_truncated: Some(truncated),
            parts: Some(parts),
            ..Default::default()
        };
        Ok(S3Response::new(output))
    }

    async fn list_multipart_uploads(
        &self,
        req: S3Request<ListMultipartUploadsInput>,
    ) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
        let input = req.input;
        self.authorize(
            &input.bucket,
            req.credentials.as_ref(),
            Access::bucket("s3:ListBucketMultipartUploads"),
        )
        .await?;
        let max = input.max_uploads.unwrap_or(1000).clamp(0, 1000) as usize;
        let after =
            input.key_marker.clone().map(|key| (key, input.upload_id_marker.clone().unwrap_or_default()));
        let msg = BucketMsg::ListUploads { prefix: input.prefix.clone().unwrap_or_default(), after, max };
        let BucketReply::Uploads { uploads, truncated, .. } = self.ask(&input.bucket, msg).await? else {
            return Err(unexpected());
        };
        let last = uploads.last().map(|u| (u.key.clone(), u.upload_id.clone()));
        let uploads = uploads
            .into_iter()
            .map(|u| MultipartUpload {
                key: Some(u.key),
                upload_id: Some(u.upload_id),
                initiated: Some(timestamp(u.initiated_ms)),
                initiator: Some(Initiator { id: Some(u.initiator.clone()), display_name: Some(u.initiator) }),
                ..Default::default()
            })
            .collect();
        let output = ListMultipartUploadsOutput {
            bucket: Some(input.bucket),
            prefix: input.prefix,
            key_marker: input.key_marker,
            upload_id_marker: input.upload_id_marker,
            max_uploads: Some(max as i32),
            is_truncated: Some(truncated),
            next_key_marker: last.as_ref().filter(|_| truncated).map(|(k, _)| k.clone()),
            next_upload_id_marker: last.filter(|_| truncated).map(|(_, id)| id),
            uploads: Some(uploads),
            ..Default::default()
        };
        Ok(S3Response::new(output))
    }

    async fn put_object_tagging(
        &self,
        req: S3Request<PutObjectTaggingInput>,
    ) -> S3Result<S3Response<PutObjectTaggingOutput>> {
        let input = req.input;
        self.authorize(
            &input.bucket,
            req.credentials.as_ref(),
            Access::object("s3:PutObjectTagging", &input.key),
        )
        .await?;
        let tags = validate_tags(input.tagging.tag_set)?;
        let msg = BucketMsg::PutTags { key: input.key, version_id: input.version_id.clone(), tags };
        self.ask(&input.bucket, msg).await?;
        Ok(S3Response::new(PutObjectTaggingOutput { version_id: input.version_id }))
    }

    async fn get_object_tagging(
        &self,
        req: S3Request<GetObjectTaggingInput>,
    ) -> S3Result<S3Response<GetObjectTaggingOutput>> {
        let input = req.input;
        self.authorize(
            &input.bucket,
            req.credentials.as_ref(),
            Access::object("s3:GetObjectTagging", &input.key),
        )
        .await?;
        let msg = BucketMsg::GetObject { key: input.key, version_id: input.version_id.clone() };
        let BucketReply::Object(record) = self.ask(&input.bucket, msg).await? else {
            return Err(unexpected());
        };
        let tag_set =
            record.tags.iter().map(|(k, v)| Tag { key: Some(k.clone()), value: Some(v.clone()) }).collect();
        Ok(S3Response::new(GetObjectTaggingOutput { tag_set, version_id: input.version_id }))
    }

    async fn delete_object_tagging(
        &self,
        req: S3Request<DeleteObjectTaggingInput>,
    ) -> S3Result<S3Response<DeleteObjectTaggingOutput>> {
        let input = req.input;
        self.authorize(
            &input.bucket,
            req.credentials.as_ref(),
            Access::object("s3:DeleteObjectTagging", &input.key),
        )
        .await?;
        let msg =
            BucketMsg::PutTags { key: input.key, version_id: input.version_id.clone(), tags: Vec::new() };
        self.ask(&input.bucket, msg).await?;
        Ok(S3Response::new(DeleteObjectTaggingOutput { version_id: input.version_id }))
    }
}

fn copy_preconditions(
    source: &ObjectRecord,
    if_match: &Option<ETagCondition>,
    if_none_match: &Option<ETagCondition>,
    if_modified_since: Option<&Timestamp>,
    if_unmodified_since: Option<&Timestamp>,
) -> S3Result<()> {
    preconditions(source, if_match.as_ref(), if_none_match.as_ref(), if_modified_since, if_unmodified_since)
        .map_err(|e| {
            if *e.code() == S3ErrorCode::NotModified {
                S3Error::with_message(
                    S3ErrorCode::PreconditionFailed,
                    "At least one of the pre-conditions you specified did not hold",
                )
            } else {
                e
            }
        })
}

/// S3's tag limits: at most 10 tags, keys up to 128 and values up to 256 characters, unique keys.
fn validate_tags(tag_set: TagSet) -> S3Result<Vec<(String, String)>> {
    if tag_set.len() > 10 {
        return Err(s3_error!(InvalidTag, "Object tags cannot be greater than 10"));
    }
    let mut tags: Vec<(String, String)> = Vec::with_capacity(tag_set.len());
    for tag in tag_set {
        let (key, value) = (tag.key.unwrap_or_default(), tag.value.unwrap_or_default());
        if key.is_empty() || key.chars().count() > 128 || value.chars().count() > 256 {
            return Err(s3_error!(InvalidTag, "The tag key or value is too long or empty"));
        }
        if tags.iter().any(|(k, _)| *k == key) {
            return Err(s3_error!(InvalidTag, "Cannot provide multiple Tags with the same key"));
        }
        tags.push((key, value));
    }
    Ok(tags)
}

fn listed_objects(listing: &Listing, url: bool) -> Vec<Object> {
    listing
        .objects
        .iter()
        .map(|o| Object {
            key: Some(encode_if(url, &o.key)),
            size: Some(o.size as i64),
            e_tag: Some(strong(&o.etag)),
            last_modified: Some(timestamp(o.last_modified_ms)),
            storage_class: Some(ObjectStorageClass::from_static(ObjectStorageClass::STANDARD)),
            ..Default::default()
        })
        .collect()
}

fn common_prefixes(listing: &Listing, url: bool) -> Vec<CommonPrefix> {
    listing.common_prefixes.iter().map(|p| CommonPrefix { prefix: Some(encode_if(url, p)) }).collect()
}

/// Continuation tokens are the hex of the key or prefix a page ended on: opaque to clients, and
/// safe in XML whatever the key holds.
fn encode_token(after: &str) -> String {
    hex(after.as_bytes())
}

fn decode_token(token: &str) -> S3Result<String> {
    let invalid = || s3_error!(InvalidArgument, "The continuation token provided is incorrect");
    if !token.len().is_multiple_of(2) {
        return Err(invalid());
    }
    let bytes: Option<Vec<u8>> =
        (0..token.len()).step_by(2).map(|i| u8::from_str_radix(&token[i..i + 2], 16).ok()).collect();
    String::from_utf8(bytes.ok_or_else(invalid)?).map_err(|_| invalid())
}

/// `encoding-type=url`: percent-encodes everything but unreserved characters and `/`.
fn encode_if(url: bool, value: &str) -> String {
    if !url {
        return value.to_string();
    }
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
