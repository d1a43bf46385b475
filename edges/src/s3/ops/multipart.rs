//! Multipart uploads: create, upload a part (or copy one), complete, abort, and list parts and
//! uploads.

use std::time::SystemTime;

use s3s::dto::*;
use s3s::{S3Error, S3ErrorCode, S3Request, S3Response, S3Result, s3_error};
use serv_actors::bucket::{BucketMsg, BucketReply, ObjectAcl, PartRecord, UploadInfo};

use super::super::body::{self, Written};
use super::access::Access;
use super::headers::{copy_preconditions, object_meta, strong, timestamp, write_condition};
use super::lock::requested_lock;
use super::object::header_tags;
use super::payload::{BodyRequest, hasher_for};
use super::{ServS3, unexpected};

pub(super) async fn create_multipart_upload(
    s3: &ServS3,
    req: S3Request<CreateMultipartUploadInput>,
) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
    let input = req.input;
    let access = Access::object("s3:PutObject", &input.key).expecting(input.expected_bucket_owner.as_deref());
    let info = s3.authorize(&input.bucket, req.credentials.as_ref(), access).await?;
    s3.check_key(&input.key)?;
    let tags = header_tags(input.tagging.as_deref())?;
    let lock = lock_from!(input)?;
    let meta = meta_from!(input);
    // The upload, and the object it completes into, are the initiator's (the bucket owner's when
    // anonymous).
    let ObjectAcl { owner: initiator, grants } =
        new_object_acl!(input, &info.owner, req.credentials.as_ref())?;
    let msg = BucketMsg::CreateUpload { key: input.key.clone(), meta, initiator, tags, lock, grants };
    let BucketReply::Upload(upload) = s3.ask(&input.bucket, msg).await? else {
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

pub(super) async fn upload_part(
    s3: &ServS3,
    req: S3Request<UploadPartInput>,
) -> S3Result<S3Response<UploadPartOutput>> {
    let S3Request { input, credentials, trailing_headers, .. } = req;
    s3.authorize(
        &input.bucket,
        credentials.as_ref(),
        Access::object("s3:PutObject", &input.key).expecting(input.expected_bucket_owner.as_deref()),
    )
    .await?;
    let part_number = s3.part_number(input.part_number)?;
    s3.upload_key(&input.bucket, &input.upload_id, &input.key).await?;
    let _slot = s3.body_slot()?;
    let claimed = claimed_checksums!(input);
    let request = BodyRequest {
        content_md5: input.content_md5.as_ref(),
        claimed: &claimed,
        algorithm: input.checksum_algorithm.as_ref(),
        trailers: trailing_headers.as_ref(),
    };
    let written = s3.write_body(&input.bucket, &request, input.body, s3.limits.max_object_size).await?;
    let checksums = written.checksums.clone();
    let etag = s3.commit_part(&input.bucket, input.upload_id, part_number, written).await?;
    let output = with_checksums!(UploadPartOutput { e_tag: Some(strong(&etag)) }, checksums);
    Ok(S3Response::new(output))
}

pub(super) async fn upload_part_copy(
    s3: &ServS3,
    req: S3Request<UploadPartCopyInput>,
) -> S3Result<S3Response<UploadPartCopyOutput>> {
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
    s3.authorize(
        &input.bucket,
        req.credentials.as_ref(),
        Access::object("s3:PutObject", &input.key).expecting(input.expected_bucket_owner.as_deref()),
    )
    .await?;
    let part_number = s3.part_number(input.part_number)?;
    s3.upload_key(&input.bucket, &input.upload_id, &input.key).await?;
    let (source, source_blocks, pins) =
        s3.pinned_object(source_bucket, source_key, version_id.as_ref().map(|v| v.to_string())).await?;
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
    let _slot = s3.body_slot()?;
    let stream = Box::pin(body::read(source_blocks, source.body.chunks.clone(), span, pins));
    let no_checksums = Checksum::default();
    let request = BodyRequest { content_md5: None, claimed: &no_checksums, algorithm: None, trailers: None };
    let hasher = hasher_for(request.claimed, None);
    let destination = s3.blocks_of(&input.bucket).await?;
    let written =
        body::write(&destination, stream, s3.limits.block_size, s3.limits.max_object_size, hasher).await?;
    let etag = s3.commit_part(&input.bucket, input.upload_id, part_number, written).await?;
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

pub(super) async fn complete_multipart_upload(
    s3: &ServS3,
    req: S3Request<CompleteMultipartUploadInput>,
) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
    let input = req.input;
    s3.authorize(
        &input.bucket,
        req.credentials.as_ref(),
        Access::object("s3:PutObject", &input.key).expecting(input.expected_bucket_owner.as_deref()),
    )
    .await?;
    let condition = write_condition(input.if_none_match.as_ref(), input.if_match.as_ref())?;
    let Some(parts) = input.multipart_upload.and_then(|m| m.parts) else {
        return Err(s3_error!(MalformedXML, "The XML you provided did not list any parts"));
    };
    if parts.len() > s3.limits.max_parts as usize {
        return Err(s3_error!(MalformedXML, "Too many parts"));
    }
    let mut wanted = Vec::with_capacity(parts.len());
    for part in parts {
        let (Some(number), Some(etag)) = (part.part_number, part.e_tag) else {
            return Err(s3_error!(MalformedXML, "Each part needs a PartNumber and an ETag"));
        };
        wanted.push((s3.part_number(number)?, etag.value().to_string()));
    }
    // The bucket checks the upload is the key's: a repeated complete finds it gone.
    let msg = BucketMsg::CompleteUpload {
        key: input.key.clone(),
        upload_id: input.upload_id,
        parts: wanted,
        min_part_size: s3.limits.min_part_size,
        condition,
    };
    let BucketReply::Committed { etag, version_id } = s3.ask(&input.bucket, msg).await? else {
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

pub(super) async fn abort_multipart_upload(
    s3: &ServS3,
    req: S3Request<AbortMultipartUploadInput>,
) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
    let input = req.input;
    s3.authorize(
        &input.bucket,
        req.credentials.as_ref(),
        Access::object("s3:AbortMultipartUpload", &input.key)
            .expecting(input.expected_bucket_owner.as_deref()),
    )
    .await?;
    s3.upload_key(&input.bucket, &input.upload_id, &input.key).await?;
    s3.ask(&input.bucket, BucketMsg::AbortUpload { upload_id: input.upload_id }).await?;
    Ok(S3Response::new(AbortMultipartUploadOutput::default()))
}

pub(super) async fn list_parts(
    s3: &ServS3,
    req: S3Request<ListPartsInput>,
) -> S3Result<S3Response<ListPartsOutput>> {
    let input = req.input;
    s3.authorize(
        &input.bucket,
        req.credentials.as_ref(),
        Access::object("s3:ListMultipartUploadParts", &input.key)
            .expecting(input.expected_bucket_owner.as_deref()),
    )
    .await?;
    let upload = s3.upload_key(&input.bucket, &input.upload_id, &input.key).await?;
    let owner = s3.keys.owner(&upload.initiator);
    let max = input.max_parts.unwrap_or(1000).clamp(0, 1000) as usize;
    let after = input.part_number_marker.unwrap_or(0).max(0) as u32;
    let msg = BucketMsg::ListParts { upload_id: input.upload_id.clone(), after, max };
    let BucketReply::Parts { parts, truncated } = s3.ask(&input.bucket, msg).await? else {
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
        initiator: Some(Initiator { id: owner.id.clone(), display_name: owner.display_name.clone() }),
        owner: Some(owner),
        ..Default::default()
    };
    Ok(S3Response::new(output))
}

pub(super) async fn list_multipart_uploads(
    s3: &ServS3,
    req: S3Request<ListMultipartUploadsInput>,
) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
    let input = req.input;
    s3.authorize(
        &input.bucket,
        req.credentials.as_ref(),
        Access::bucket("s3:ListBucketMultipartUploads").expecting(input.expected_bucket_owner.as_deref()),
    )
    .await?;
    let max = input.max_uploads.unwrap_or(1000).clamp(0, 1000) as usize;
    let after = input.key_marker.clone().map(|key| (key, input.upload_id_marker.clone().unwrap_or_default()));
    let msg = BucketMsg::ListUploads { prefix: input.prefix.clone().unwrap_or_default(), after, max };
    let BucketReply::Uploads { uploads, truncated, .. } = s3.ask(&input.bucket, msg).await? else {
        return Err(unexpected());
    };
    let last = uploads.last().map(|u| (u.key.clone(), u.upload_id.clone()));
    let uploads = uploads
        .into_iter()
        .map(|u| {
            let owner = s3.keys.owner(&u.initiator);
            MultipartUpload {
                key: Some(u.key),
                upload_id: Some(u.upload_id),
                initiated: Some(timestamp(u.initiated_ms)),
                initiator: Some(Initiator { id: owner.id.clone(), display_name: owner.display_name.clone() }),
                owner: Some(owner),
                ..Default::default()
            }
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

impl ServS3 {
    /// The upload `upload_id` of `key` (NoSuchUpload if it is another key's).
    pub(super) async fn upload_key(&self, bucket: &str, upload_id: &str, key: &str) -> S3Result<UploadInfo> {
        let BucketReply::Upload(upload) =
            self.ask(bucket, BucketMsg::GetUpload { upload_id: upload_id.to_string() }).await?
        else {
            return Err(unexpected());
        };
        if upload.key != key {
            return Err(s3_error!(NoSuchUpload, "The upload belongs to another key"));
        }
        Ok(upload)
    }

    pub(super) fn part_number(&self, n: i32) -> S3Result<u32> {
        if n < 1 || n as u32 > self.limits.max_parts {
            return Err(S3Error::with_message(
                S3ErrorCode::InvalidArgument,
                format!("Part number must be an integer between 1 and {}", self.limits.max_parts),
            ));
        }
        Ok(n as u32)
    }

    pub(super) async fn commit_part(
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
