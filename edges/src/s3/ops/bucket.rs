//! Bucket operations: create, delete, head, location, versioning, policy, CORS, and the listing
//! of buckets (ACLs are in [`super::acl`]).

use s3s::dto::*;
use s3s::{S3Error, S3ErrorCode, S3Request, S3Response, S3Result, s3_error};
use serv_actors::bucket::{BucketMsg, Versioning};

use super::super::auth::account_id;
use super::super::policy::Policy;
use super::super::{cors, error};
use super::ServS3;
use super::access::Access;
use super::acl::AclOf;
use super::headers::timestamp;
use super::listing::{decode_token, encode_token};

pub(super) async fn create_bucket(
    s3: &ServS3,
    req: S3Request<CreateBucketInput>,
) -> S3Result<S3Response<CreateBucketOutput>> {
    let Some(credentials) = req.credentials.as_ref() else { return Err(s3_error!(AccessDenied)) };
    let input = &req.input;
    let request = acl_request!(input, None);
    let grants = request.grants(AclOf::Bucket, &account_id(&credentials.access_key))?;
    // Object lock turns versioning on with it, for good.
    let object_lock = input.object_lock_enabled_for_bucket.unwrap_or(false);
    let msg = BucketMsg::Create { owner: credentials.access_key.clone(), grants, object_lock };
    s3.ask(&req.input.bucket, msg).await?;
    let output = CreateBucketOutput { location: Some(format!("/{}", req.input.bucket)) };
    Ok(S3Response::new(output))
}

pub(super) async fn delete_bucket(
    s3: &ServS3,
    req: S3Request<DeleteBucketInput>,
) -> S3Result<S3Response<DeleteBucketOutput>> {
    s3.authorize(
        &req.input.bucket,
        req.credentials.as_ref(),
        Access::bucket("s3:DeleteBucket").expecting(req.input.expected_bucket_owner.as_deref()),
    )
    .await?;
    s3.ask(&req.input.bucket, BucketMsg::Delete).await?;
    Ok(S3Response::new(DeleteBucketOutput {}))
}

pub(super) async fn head_bucket(
    s3: &ServS3,
    req: S3Request<HeadBucketInput>,
) -> S3Result<S3Response<HeadBucketOutput>> {
    s3.authorize(
        &req.input.bucket,
        req.credentials.as_ref(),
        Access::bucket("s3:ListBucket").expecting(req.input.expected_bucket_owner.as_deref()),
    )
    .await?;
    Ok(S3Response::new(HeadBucketOutput { bucket_region: Some(s3.region.clone()), ..Default::default() }))
}

pub(super) async fn get_bucket_location(
    s3: &ServS3,
    req: S3Request<GetBucketLocationInput>,
) -> S3Result<S3Response<GetBucketLocationOutput>> {
    s3.authorize(
        &req.input.bucket,
        req.credentials.as_ref(),
        Access::bucket("s3:GetBucketLocation").expecting(req.input.expected_bucket_owner.as_deref()),
    )
    .await?;
    // us-east-1 is reported as an empty constraint, as S3 does.
    let location = (s3.region != "us-east-1").then(|| BucketLocationConstraint::from(s3.region.clone()));
    Ok(S3Response::new(GetBucketLocationOutput { location_constraint: location }))
}

pub(super) async fn put_bucket_versioning(
    s3: &ServS3,
    req: S3Request<PutBucketVersioningInput>,
) -> S3Result<S3Response<PutBucketVersioningOutput>> {
    let input = req.input;
    s3.authorize(
        &input.bucket,
        req.credentials.as_ref(),
        Access::bucket("s3:PutBucketVersioning").expecting(input.expected_bucket_owner.as_deref()),
    )
    .await?;
    let versioning = match input.versioning_configuration.status.as_ref().map(|s| s.as_str()) {
        Some(BucketVersioningStatus::ENABLED) => Versioning::Enabled,
        Some(BucketVersioningStatus::SUSPENDED) => Versioning::Suspended,
        _ => return Err(s3_error!(MalformedXML, "Status must be Enabled or Suspended")),
    };
    s3.ask(&input.bucket, BucketMsg::SetVersioning(versioning)).await?;
    Ok(S3Response::new(PutBucketVersioningOutput::default()))
}

pub(super) async fn get_bucket_versioning(
    s3: &ServS3,
    req: S3Request<GetBucketVersioningInput>,
) -> S3Result<S3Response<GetBucketVersioningOutput>> {
    let info = s3
        .authorize(
            &req.input.bucket,
            req.credentials.as_ref(),
            Access::bucket("s3:GetBucketVersioning").expecting(req.input.expected_bucket_owner.as_deref()),
        )
        .await?;
    let status = match info.versioning {
        Versioning::Unversioned => None,
        Versioning::Enabled => Some(BucketVersioningStatus::from_static(BucketVersioningStatus::ENABLED)),
        Versioning::Suspended => Some(BucketVersioningStatus::from_static(BucketVersioningStatus::SUSPENDED)),
    };
    Ok(S3Response::new(GetBucketVersioningOutput { status, mfa_delete: None }))
}

pub(super) async fn put_bucket_policy(
    s3: &ServS3,
    req: S3Request<PutBucketPolicyInput>,
) -> S3Result<S3Response<PutBucketPolicyOutput>> {
    let input = req.input;
    s3.authorize(
        &input.bucket,
        req.credentials.as_ref(),
        Access::bucket("s3:PutBucketPolicy").expecting(input.expected_bucket_owner.as_deref()),
    )
    .await?;
    Policy::parse(&input.policy, &input.bucket)
        .map_err(|e| S3Error::with_message(S3ErrorCode::MalformedPolicy, e))?;
    s3.ask(&input.bucket, BucketMsg::SetPolicy(Some(input.policy))).await?;
    Ok(S3Response::new(PutBucketPolicyOutput::default()))
}

pub(super) async fn get_bucket_policy(
    s3: &ServS3,
    req: S3Request<GetBucketPolicyInput>,
) -> S3Result<S3Response<GetBucketPolicyOutput>> {
    let access = Access::bucket("s3:GetBucketPolicy").expecting(req.input.expected_bucket_owner.as_deref());
    let info = s3.authorize(&req.input.bucket, req.credentials.as_ref(), access).await?;
    let Some(policy) = info.policy else {
        return Err(s3_error!(NoSuchBucketPolicy, "The bucket policy does not exist"));
    };
    Ok(S3Response::new(GetBucketPolicyOutput { policy: Some(policy) }))
}

pub(super) async fn delete_bucket_policy(
    s3: &ServS3,
    req: S3Request<DeleteBucketPolicyInput>,
) -> S3Result<S3Response<DeleteBucketPolicyOutput>> {
    let access =
        Access::bucket("s3:DeleteBucketPolicy").expecting(req.input.expected_bucket_owner.as_deref());
    s3.authorize(&req.input.bucket, req.credentials.as_ref(), access).await?;
    s3.ask(&req.input.bucket, BucketMsg::SetPolicy(None)).await?;
    Ok(S3Response::new(DeleteBucketPolicyOutput::default()))
}

pub(super) async fn put_bucket_cors(
    s3: &ServS3,
    req: S3Request<PutBucketCorsInput>,
) -> S3Result<S3Response<PutBucketCorsOutput>> {
    let input = req.input;
    s3.authorize(
        &input.bucket,
        req.credentials.as_ref(),
        Access::bucket("s3:PutBucketCORS").expecting(input.expected_bucket_owner.as_deref()),
    )
    .await?;
    let configuration = cors::configuration(input.cors_configuration.cors_rules)?;
    s3.ask(&input.bucket, BucketMsg::SetCors(Some(configuration))).await?;
    Ok(S3Response::new(PutBucketCorsOutput::default()))
}

pub(super) async fn get_bucket_cors(
    s3: &ServS3,
    req: S3Request<GetBucketCorsInput>,
) -> S3Result<S3Response<GetBucketCorsOutput>> {
    let access = Access::bucket("s3:GetBucketCORS").expecting(req.input.expected_bucket_owner.as_deref());
    let info = s3.authorize(&req.input.bucket, req.credentials.as_ref(), access).await?;
    let Some(configuration) = info.cors else {
        return Err(s3_error!(NoSuchCORSConfiguration, "The CORS configuration does not exist"));
    };
    Ok(S3Response::new(GetBucketCorsOutput { cors_rules: Some(cors::rules_of(configuration)) }))
}

/// DeleteBucketCors: S3 checks it as `s3:PutBucketCORS`.
pub(super) async fn delete_bucket_cors(
    s3: &ServS3,
    req: S3Request<DeleteBucketCorsInput>,
) -> S3Result<S3Response<DeleteBucketCorsOutput>> {
    let access = Access::bucket("s3:PutBucketCORS").expecting(req.input.expected_bucket_owner.as_deref());
    s3.authorize(&req.input.bucket, req.credentials.as_ref(), access).await?;
    s3.ask(&req.input.bucket, BucketMsg::SetCors(None)).await?;
    Ok(S3Response::new(DeleteBucketCorsOutput::default()))
}

/// Most buckets in one ListBuckets page (S3's bound on `max-buckets`, and its page size).
const MAX_BUCKETS_PAGE: usize = 10_000;

/// ListBuckets: the caller's buckets (root's: all), by name, in pages of `max-buckets` continued
/// by a token, optionally only those whose name starts with `prefix`.
pub(super) async fn list_buckets(
    s3: &ServS3,
    req: S3Request<ListBucketsInput>,
) -> S3Result<S3Response<ListBucketsOutput>> {
    let Some(credentials) = req.credentials.as_ref() else { return Err(s3_error!(AccessDenied)) };
    let Some(table) = &s3.buckets else { return Err(error::internal("bucket table", "not open")) };
    let input = req.input;
    let max = match input.max_buckets {
        Some(n) if n < 1 || n as usize > MAX_BUCKETS_PAGE => {
            return Err(s3_error!(InvalidArgument, "max-buckets must be between 1 and {}", MAX_BUCKETS_PAGE));
        }
        Some(n) => n as usize,
        None => MAX_BUCKETS_PAGE,
    };
    let after = input.continuation_token.as_deref().map(decode_token).transpose()?;
    let prefix = input.prefix.as_deref().unwrap_or_default();
    let region_matches = input.bucket_region.as_ref().is_none_or(|region| *region == s3.region);
    let root = s3.keys.is_root(&credentials.access_key);
    // Each node's table lists the buckets it owns: ask every node that is up.
    let all = crate::owned::everywhere(&s3.directory, table)
        .await
        .map_err(|reason| S3Error::with_message(S3ErrorCode::ServiceUnavailable, reason))?;
    let mut listed = all.into_iter().filter(|(name, meta)| {
        (root || meta.owner == credentials.access_key)
            && region_matches
            && name.starts_with(prefix)
            && after.as_ref().is_none_or(|after| name > after)
    });
    let buckets: Vec<Bucket> = listed
        .by_ref()
        .take(max)
        .map(|(name, meta)| Bucket {
            name: Some(name),
            creation_date: Some(timestamp(meta.created_ms)),
            bucket_region: Some(s3.region.clone()),
        })
        .collect();
    let truncated = listed.next().is_some();
    let next = buckets.last().and_then(|last| last.name.as_deref()).filter(|_| truncated).map(encode_token);
    let owner = s3.keys.owner(&credentials.access_key);
    Ok(S3Response::new(ListBucketsOutput {
        buckets: Some(buckets),
        owner: Some(owner),
        continuation_token: next,
        prefix: input.prefix,
    }))
}
