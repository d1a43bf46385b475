//! The S3 operations: each one authorizes the caller against the bucket, then asks the bucket's
//! actor (through the directory) and translates its reply.
//!
//! s3s wants them as one `impl S3`; that impl (at the end) only names, for each operation, the
//! module that answers it: [`bucket`], [`acl`], [`object`], [`listing`], [`multipart`] or [`lock`]. What they share
//! lives beside them: access checks in [`access`], object headers and validators in [`headers`],
//! bodies in flight in [`payload`].

#[macro_use]
mod headers;
#[macro_use]
mod payload;
mod access;
#[macro_use]
mod acl;
mod bucket;
mod listing;
#[macro_use]
mod lock;
mod multipart;
mod object;

use std::sync::Arc;

use s3s::dto::*;
use s3s::{S3, S3Error, S3ErrorCode, S3Request, S3Response, S3Result};
use serv_actors::bucket::{BUCKETS, BucketMeta, BucketMsg, BucketReply};
use serv_actors::{ActorKey, ActorKind, Directory};
use serv_cluster::partition::BlockPlacement;
use serv_storage::{Storage, Table};
use tokio::sync::Semaphore;

pub(super) use headers::{http_date, timestamp};

use super::auth::Keys;
use super::body::Blocks;
use super::{S3Limits, error};

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
    pub(super) async fn blocks_of(&self, bucket: &str) -> S3Result<Blocks> {
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

    pub(super) async fn ask(&self, bucket: &str, msg: BucketMsg) -> S3Result<BucketReply> {
        let key = ActorKey::new(ActorKind::Bucket, bucket);
        match self.directory.call(&key, msg).await {
            Ok(BucketReply::Refused(refusal)) => Err(error::refusal(refusal)),
            Ok(reply) => Ok(reply),
            Err(e) => Err(error::directory(e)),
        }
    }

    pub(super) fn check_key(&self, key: &str) -> S3Result<()> {
        if key.len() > self.limits.max_key_bytes {
            return Err(S3Error::with_message(
                S3ErrorCode::KeyTooLongError,
                format!("Your key is too long (at most {} bytes)", self.limits.max_key_bytes),
            ));
        }
        Ok(())
    }
}

pub(super) fn unexpected() -> S3Error {
    error::internal("bucket actor", "unexpected reply")
}

/// The `impl S3` s3s calls: each listed operation `module::op(Input) -> Output` is answered by the
/// function `module::op`, the others by s3s's default (`NotImplemented`).
macro_rules! operations {
    ($($module:ident::$op:ident($input:ident) -> $output:ident;)*) => {
        #[async_trait::async_trait]
        impl S3 for ServS3 {
            $(
                async fn $op(&self, req: S3Request<$input>) -> S3Result<S3Response<$output>> {
                    $module::$op(self, req).await
                }
            )*
        }
    };
}

operations! {
    bucket::create_bucket(CreateBucketInput) -> CreateBucketOutput;
    bucket::delete_bucket(DeleteBucketInput) -> DeleteBucketOutput;
    bucket::head_bucket(HeadBucketInput) -> HeadBucketOutput;
    bucket::get_bucket_location(GetBucketLocationInput) -> GetBucketLocationOutput;
    acl::put_bucket_acl(PutBucketAclInput) -> PutBucketAclOutput;
    acl::get_bucket_acl(GetBucketAclInput) -> GetBucketAclOutput;
    acl::put_object_acl(PutObjectAclInput) -> PutObjectAclOutput;
    acl::get_object_acl(GetObjectAclInput) -> GetObjectAclOutput;
    bucket::put_bucket_versioning(PutBucketVersioningInput) -> PutBucketVersioningOutput;
    bucket::get_bucket_versioning(GetBucketVersioningInput) -> GetBucketVersioningOutput;
    bucket::put_bucket_policy(PutBucketPolicyInput) -> PutBucketPolicyOutput;
    bucket::get_bucket_policy(GetBucketPolicyInput) -> GetBucketPolicyOutput;
    bucket::delete_bucket_policy(DeleteBucketPolicyInput) -> DeleteBucketPolicyOutput;
    bucket::put_bucket_cors(PutBucketCorsInput) -> PutBucketCorsOutput;
    bucket::get_bucket_cors(GetBucketCorsInput) -> GetBucketCorsOutput;
    bucket::delete_bucket_cors(DeleteBucketCorsInput) -> DeleteBucketCorsOutput;
    bucket::list_buckets(ListBucketsInput) -> ListBucketsOutput;
    object::put_object(PutObjectInput) -> PutObjectOutput;
    object::get_object(GetObjectInput) -> GetObjectOutput;
    object::head_object(HeadObjectInput) -> HeadObjectOutput;
    object::delete_object(DeleteObjectInput) -> DeleteObjectOutput;
    object::delete_objects(DeleteObjectsInput) -> DeleteObjectsOutput;
    object::copy_object(CopyObjectInput) -> CopyObjectOutput;
    object::put_object_tagging(PutObjectTaggingInput) -> PutObjectTaggingOutput;
    object::get_object_tagging(GetObjectTaggingInput) -> GetObjectTaggingOutput;
    object::delete_object_tagging(DeleteObjectTaggingInput) -> DeleteObjectTaggingOutput;
    listing::list_objects(ListObjectsInput) -> ListObjectsOutput;
    listing::list_objects_v2(ListObjectsV2Input) -> ListObjectsV2Output;
    listing::list_object_versions(ListObjectVersionsInput) -> ListObjectVersionsOutput;
    multipart::create_multipart_upload(CreateMultipartUploadInput) -> CreateMultipartUploadOutput;
    multipart::upload_part(UploadPartInput) -> UploadPartOutput;
    multipart::upload_part_copy(UploadPartCopyInput) -> UploadPartCopyOutput;
    multipart::complete_multipart_upload(CompleteMultipartUploadInput) -> CompleteMultipartUploadOutput;
    multipart::abort_multipart_upload(AbortMultipartUploadInput) -> AbortMultipartUploadOutput;
    multipart::list_parts(ListPartsInput) -> ListPartsOutput;
    multipart::list_multipart_uploads(ListMultipartUploadsInput) -> ListMultipartUploadsOutput;
    lock::put_object_lock_configuration(PutObjectLockConfigurationInput) -> PutObjectLockConfigurationOutput;
    lock::get_object_lock_configuration(GetObjectLockConfigurationInput) -> GetObjectLockConfigurationOutput;
    lock::put_object_retention(PutObjectRetentionInput) -> PutObjectRetentionOutput;
    lock::get_object_retention(GetObjectRetentionInput) -> GetObjectRetentionOutput;
    lock::put_object_legal_hold(PutObjectLegalHoldInput) -> PutObjectLegalHoldOutput;
    lock::get_object_legal_hold(GetObjectLegalHoldInput) -> GetObjectLegalHoldOutput;
}
