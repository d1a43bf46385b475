//! Object operations: put, get, head, delete (one or many), copy, and object tags.

use std::time::SystemTime;

use axum::http::HeaderValue;
use s3s::dto::*;
use s3s::header::X_AMZ_TAGGING_COUNT;
use s3s::{S3Request, S3Response, S3Result, s3_error};
use serv_actors::bucket::{BucketMsg, BucketReply, Checksums, ObjectBody};

use super::super::body;
use super::access::Access;
use super::headers::{
    copy_preconditions, if_match_etag, object_meta, parse_http_date, preconditions, requested_range, strong,
    timestamp, user_metadata, write_condition,
};
use super::lock::{lock_hold, lock_mode, lock_until, requested_lock, require_integrity};
use super::payload::{BodyRequest, checksums_of};
use super::{ServS3, unexpected};

pub(super) async fn put_object(
    s3: &ServS3,
    req: S3Request<PutObjectInput>,
) -> S3Result<S3Response<PutObjectOutput>> {
    let S3Request { input, credentials, trailing_headers, .. } = req;
    let info = s3
        .authorize(
            &input.bucket,
            credentials.as_ref(),
            Access::object("s3:PutObject", &input.key).expecting(input.expected_bucket_owner.as_deref()),
        )
        .await?;
    s3.check_key(&input.key)?;
    let _slot = s3.body_slot()?;
    let claimed = claimed_checksums!(input);
    let request = BodyRequest {
        content_md5: input.content_md5.as_ref(),
        claimed: &claimed,
        algorithm: input.checksum_algorithm.as_ref(),
        trailers: trailing_headers.as_ref(),
    };
    let condition = write_condition(input.if_none_match.as_ref(), input.if_match.as_ref())?;
    let tags = header_tags(input.tagging.as_deref())?;
    let lock = lock_from!(input)?;
    require_integrity(&info, &lock, &request)?;
    let written = s3.write_body(&input.bucket, &request, input.body, s3.limits.max_object_size).await?;
    let meta = meta_from!(input);
    let body = ObjectBody {
        size: written.size,
        etag: written.md5_hex(),
        chunks: written.chunks.clone(),
        meta,
        checksums: checksums_of(&written.checksums),
        part_sizes: Vec::new(),
    };
    let acl = new_object_acl!(input, &info.owner, credentials.as_ref())?;
    let msg = BucketMsg::PutObject { key: input.key, body, tags, condition, lock, acl: Box::new(acl) };
    let reply = if crate::fault_injection::lose(crate::fault_injection::Loss::S3Put) {
        BucketReply::Committed { etag: written.md5_hex(), version_id: None }
    } else {
        s3.ask(&input.bucket, msg).await?
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

pub(super) async fn get_object(
    s3: &ServS3,
    req: S3Request<GetObjectInput>,
) -> S3Result<S3Response<GetObjectOutput>> {
    let input = req.input;
    let access = Access::object("s3:GetObject", &input.key)
        .version(input.version_id.as_deref())
        .expecting(input.expected_bucket_owner.as_deref());
    s3.authorize(&input.bucket, req.credentials.as_ref(), access).await?;
    let (record, blocks, pins) =
        s3.pinned_object(&input.bucket, &input.key, input.version_id.clone()).await?;
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
    let slot = s3.body_slot()?;
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

pub(super) async fn head_object(
    s3: &ServS3,
    req: S3Request<HeadObjectInput>,
) -> S3Result<S3Response<HeadObjectOutput>> {
    let input = req.input;
    let access = Access::object("s3:GetObject", &input.key)
        .version(input.version_id.as_deref())
        .expecting(input.expected_bucket_owner.as_deref());
    s3.authorize(&input.bucket, req.credentials.as_ref(), access).await?;
    let msg = BucketMsg::GetObject { key: input.key.clone(), version_id: input.version_id.clone() };
    let BucketReply::Object(record) = s3.ask(&input.bucket, msg).await? else {
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
    // HeadObjectOutput has no field for it: the header a GET of the object carries.
    let mut response = S3Response::new(output);
    if !record.tags.is_empty() {
        response.headers.insert(X_AMZ_TAGGING_COUNT, HeaderValue::from(record.tags.len()));
    }
    Ok(response)
}

pub(super) async fn delete_object(
    s3: &ServS3,
    req: S3Request<DeleteObjectInput>,
) -> S3Result<S3Response<DeleteObjectOutput>> {
    let input = req.input;
    s3.authorize(
        &input.bucket,
        req.credentials.as_ref(),
        Access::object("s3:DeleteObject", &input.key).expecting(input.expected_bucket_owner.as_deref()),
    )
    .await?;
    if input.if_match_last_modified_time.is_some() || input.if_match_size.is_some() {
        return Err(only_if_match());
    }
    let if_match = input.if_match.as_ref().map(if_match_etag);
    let bypass_governance = s3
        .may_bypass(&input.bucket, req.credentials.as_ref(), &input.key, input.bypass_governance_retention)
        .await;
    let msg =
        BucketMsg::DeleteObject { key: input.key, version_id: input.version_id, if_match, bypass_governance };
    let BucketReply::Deleted { version_id, delete_marker } = s3.ask(&input.bucket, msg).await? else {
        return Err(unexpected());
    };
    let output =
        DeleteObjectOutput { version_id, delete_marker: delete_marker.then_some(true), ..Default::default() };
    Ok(S3Response::new(output))
}

pub(super) async fn delete_objects(
    s3: &ServS3,
    req: S3Request<DeleteObjectsInput>,
) -> S3Result<S3Response<DeleteObjectsOutput>> {
    let input = req.input;
    s3.authorize(
        &input.bucket,
        req.credentials.as_ref(),
        Access::bucket("s3:DeleteObject").expecting(input.expected_bucket_owner.as_deref()),
    )
    .await?;
    if input.delete.objects.len() > 1000 {
        return Err(s3_error!(MalformedXML, "At most 1000 keys may be deleted in one request"));
    }
    if input.delete.objects.iter().any(|o| o.last_modified_time.is_some() || o.size.is_some()) {
        return Err(only_if_match());
    }
    let quiet = input.delete.quiet.unwrap_or(false);
    let bypass_governance =
        s3.may_bypass(&input.bucket, req.credentials.as_ref(), "*", input.bypass_governance_retention).await;
    let (mut deleted, mut errors) = (Vec::new(), Vec::new());
    for object in input.delete.objects {
        let msg = BucketMsg::DeleteObject {
            key: object.key.clone(),
            version_id: object.version_id.clone(),
            if_match: object.e_tag.as_ref().map(|etag| etag.value().to_string()),
            bypass_governance,
        };
        match s3.ask(&input.bucket, msg).await {
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
    let output = DeleteObjectsOutput { deleted: Some(deleted), errors: Some(errors), ..Default::default() };
    Ok(S3Response::new(output))
}

pub(super) async fn copy_object(
    s3: &ServS3,
    req: S3Request<CopyObjectInput>,
) -> S3Result<S3Response<CopyObjectOutput>> {
    let input = req.input;
    let CopySource::Bucket { bucket: source_bucket, key: source_key, version_id } = &input.copy_source else {
        return Err(s3_error!(NotImplemented, "Copying from an access point is not supported"));
    };
    s3.authorize(
        source_bucket,
        req.credentials.as_ref(),
        Access::object("s3:GetObject", source_key).expecting(input.expected_source_bucket_owner.as_deref()),
    )
    .await?;
    let access = Access::object("s3:PutObject", &input.key).expecting(input.expected_bucket_owner.as_deref());
    let info = s3.authorize(&input.bucket, req.credentials.as_ref(), access).await?;
    s3.check_key(&input.key)?;
    let acl = new_object_acl!(input, &info.owner, req.credentials.as_ref())?;
    let (source, source_blocks, pins) =
        s3.pinned_object(source_bucket, source_key, version_id.as_ref().map(|v| v.to_string())).await?;
    copy_preconditions(
        &source,
        &input.copy_source_if_match,
        &input.copy_source_if_none_match,
        input.copy_source_if_modified_since.as_ref(),
        input.copy_source_if_unmodified_since.as_ref(),
    )?;
    let replace = input.metadata_directive.as_ref().is_some_and(|d| d.as_str() == MetadataDirective::REPLACE);
    if !replace && **source_bucket == *input.bucket && **source_key == *input.key {
        return Err(s3_error!(
            InvalidRequest,
            "This copy request is illegal because it is trying to copy an object to itself without changing the object's metadata."
        ));
    }
    let meta = if replace { meta_from!(input) } else { source.body.meta.clone() };
    let replace_tags =
        input.tagging_directive.as_ref().is_some_and(|d| d.as_str() == TaggingDirective::REPLACE);
    let tags = if replace_tags { header_tags(input.tagging.as_deref())? } else { source.tags.clone() };
    // The copy is a new version: it gets the lock its request names (or the bucket's default),
    // not the source's, as in S3.
    let lock = lock_from!(input)?;
    let body = ObjectBody { meta, ..source.body.clone() };
    // The copy references the same blocks; when the buckets live on different nodes, the
    // blocks are copied to the destination's owner first (and held there until committed).
    let destination = s3.blocks_of(&input.bucket).await?;
    let _copies = match destination.same_as(&source_blocks) {
        true => None,
        false => Some(body::copy_blocks(&source_blocks, &destination, &source.body.chunks).await?),
    };
    let msg = BucketMsg::PutObject { key: input.key, body, tags, condition: None, lock, acl: Box::new(acl) };
    let BucketReply::Committed { etag, version_id: new_version } = s3.ask(&input.bucket, msg).await? else {
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

pub(super) async fn put_object_tagging(
    s3: &ServS3,
    req: S3Request<PutObjectTaggingInput>,
) -> S3Result<S3Response<PutObjectTaggingOutput>> {
    let input = req.input;
    s3.authorize(
        &input.bucket,
        req.credentials.as_ref(),
        Access::object("s3:PutObjectTagging", &input.key).expecting(input.expected_bucket_owner.as_deref()),
    )
    .await?;
    let tags = validate_tags(input.tagging.tag_set)?;
    let msg = BucketMsg::PutTags { key: input.key, version_id: input.version_id.clone(), tags };
    s3.ask(&input.bucket, msg).await?;
    Ok(S3Response::new(PutObjectTaggingOutput { version_id: input.version_id }))
}

pub(super) async fn get_object_tagging(
    s3: &ServS3,
    req: S3Request<GetObjectTaggingInput>,
) -> S3Result<S3Response<GetObjectTaggingOutput>> {
    let input = req.input;
    s3.authorize(
        &input.bucket,
        req.credentials.as_ref(),
        Access::object("s3:GetObjectTagging", &input.key).expecting(input.expected_bucket_owner.as_deref()),
    )
    .await?;
    let msg = BucketMsg::GetObject { key: input.key, version_id: input.version_id.clone() };
    let BucketReply::Object(record) = s3.ask(&input.bucket, msg).await? else {
        return Err(unexpected());
    };
    let tag_set =
        record.tags.iter().map(|(k, v)| Tag { key: Some(k.clone()), value: Some(v.clone()) }).collect();
    Ok(S3Response::new(GetObjectTaggingOutput { tag_set, version_id: input.version_id }))
}

pub(super) async fn delete_object_tagging(
    s3: &ServS3,
    req: S3Request<DeleteObjectTaggingInput>,
) -> S3Result<S3Response<DeleteObjectTaggingOutput>> {
    let input = req.input;
    s3.authorize(
        &input.bucket,
        req.credentials.as_ref(),
        Access::object("s3:DeleteObjectTagging", &input.key)
            .expecting(input.expected_bucket_owner.as_deref()),
    )
    .await?;
    let msg = BucketMsg::PutTags { key: input.key, version_id: input.version_id.clone(), tags: Vec::new() };
    s3.ask(&input.bucket, msg).await?;
    Ok(S3Response::new(DeleteObjectTaggingOutput { version_id: input.version_id }))
}

/// A delete conditioned on last-modified time or size (S3 offers these for directory buckets only).
fn only_if_match() -> s3s::S3Error {
    s3_error!(NotImplemented, "A conditional delete may name an ETag (If-Match) only, not a time or a size")
}

/// Most tags on one object (S3's limit).
const MAX_TAGS: usize = 10;
/// Longest tag key, in Unicode characters (S3's limit).
const MAX_TAG_KEY_CHARS: usize = 128;
/// Longest tag value, in Unicode characters (S3's limit).
const MAX_TAG_VALUE_CHARS: usize = 256;

/// S3's tag limits: at most [`MAX_TAGS`] tags with unique, non-empty keys of at most
/// [`MAX_TAG_KEY_CHARS`] and values of at most [`MAX_TAG_VALUE_CHARS`] characters.
pub(super) fn validate_tags(tag_set: TagSet) -> S3Result<Vec<(String, String)>> {
    if tag_set.len() > MAX_TAGS {
        return Err(s3_error!(InvalidTag, "Object tags cannot be greater than {}", MAX_TAGS));
    }
    let mut tags: Vec<(String, String)> = Vec::with_capacity(tag_set.len());
    for tag in tag_set {
        let (key, value) = (tag.key.unwrap_or_default(), tag.value.unwrap_or_default());
        if key.is_empty() || key.chars().count() > MAX_TAG_KEY_CHARS {
            return Err(s3_error!(
                InvalidTag,
                "The TagKey you have provided is empty or too long, max {}",
                MAX_TAG_KEY_CHARS
            ));
        }
        if value.chars().count() > MAX_TAG_VALUE_CHARS {
            return Err(s3_error!(
                InvalidTag,
                "The TagValue you have provided is too long, max {}",
                MAX_TAG_VALUE_CHARS
            ));
        }
        if tags.iter().any(|(k, _)| *k == key) {
            return Err(s3_error!(InvalidTag, "Cannot provide multiple Tags with the same key"));
        }
        tags.push((key, value));
    }
    Ok(tags)
}

/// The tags an `x-amz-tagging` header sets (URL query encoded: `k1=v1&k2=v2`), under the same
/// limits as a tag set.
pub(super) fn header_tags(header: Option<&str>) -> S3Result<Vec<(String, String)>> {
    let Some(header) = header.filter(|h| !h.is_empty()) else { return Ok(Vec::new()) };
    let tag_set = form_urlencoded::parse(header.as_bytes())
        .map(|(key, value)| Tag { key: Some(key.into_owned()), value: Some(value.into_owned()) })
        .collect();
    validate_tags(tag_set)
}
