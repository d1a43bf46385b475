//! Object Lock operations: a bucket's lock configuration, a version's retention and legal hold,
//! and what the object operations share about locks (the `x-amz-object-lock-*` headers of a
//! write and of a read, and who may bypass GOVERNANCE retention). The rules themselves are the
//! bucket's (see `serv_actors::bucket::ObjectLock`); this layer parses and formats.

use s3s::auth::Credentials;
use s3s::dto::*;
use s3s::{S3Error, S3ErrorCode, S3Request, S3Response, S3Result, s3_error};
use serv_actors::bucket::{
    BucketInfo, BucketMsg, BucketReply, DefaultRetention, MAX_RETENTION_YEARS, ObjectLock, ObjectLockConfig,
    Retention, RetentionMode, RetentionPeriod,
};

use super::access::Access;
use super::headers::timestamp;
use super::payload::BodyRequest;
use super::{ServS3, unexpected};

/// Milliseconds in the longest retention a retain-until date may name ([`MAX_RETENTION_YEARS`]
/// of 366 days: never less than that many calendar years).
const MAX_RETENTION_MS: u64 = MAX_RETENTION_YEARS as u64 * 366 * 86_400_000;

pub(super) async fn put_object_lock_configuration(
    s3: &ServS3,
    req: S3Request<PutObjectLockConfigurationInput>,
) -> S3Result<S3Response<PutObjectLockConfigurationOutput>> {
    let input = req.input;
    let access = Access::bucket("s3:PutBucketObjectLockConfiguration")
        .expecting(input.expected_bucket_owner.as_deref());
    s3.authorize(&input.bucket, req.credentials.as_ref(), access).await?;
    let Some(configuration) = input.object_lock_configuration else {
        return Err(s3_error!(MalformedXML, "The XML you provided was not well-formed"));
    };
    if configuration.object_lock_enabled.as_ref().map(|e| e.as_str()) != Some(ObjectLockEnabled::ENABLED) {
        return Err(s3_error!(MalformedXML, "ObjectLockEnabled must be Enabled"));
    }
    let default_retention = match configuration.rule {
        None => None,
        Some(rule) => Some(default_retention(rule)?),
    };
    s3.ask(&input.bucket, BucketMsg::SetObjectLock(ObjectLockConfig { default_retention })).await?;
    Ok(S3Response::new(PutObjectLockConfigurationOutput::default()))
}

/// A rule's default retention: a mode and either days or years, within S3's bounds.
fn default_retention(rule: ObjectLockRule) -> S3Result<DefaultRetention> {
    let Some(s3s::dto::DefaultRetention { mode: Some(mode), days, years }) = rule.default_retention else {
        return Err(s3_error!(MalformedXML, "A default retention needs a Mode and either Days or Years"));
    };
    let period = match (days, years) {
        (Some(days), None) => RetentionPeriod::Days(u32::try_from(days).unwrap_or(0)),
        (None, Some(years)) => RetentionPeriod::Years(u32::try_from(years).unwrap_or(0)),
        _ => return Err(s3_error!(MalformedXML, "A default retention needs either Days or Years, not both")),
    };
    if !period.is_valid() {
        return Err(s3_error!(
            InvalidArgument,
            "Default retention period must be a positive integer value of at most {} years",
            MAX_RETENTION_YEARS
        ));
    }
    Ok(DefaultRetention { mode: retention_mode(mode.as_str())?, period })
}

pub(super) async fn get_object_lock_configuration(
    s3: &ServS3,
    req: S3Request<GetObjectLockConfigurationInput>,
) -> S3Result<S3Response<GetObjectLockConfigurationOutput>> {
    let access = Access::bucket("s3:GetBucketObjectLockConfiguration")
        .expecting(req.input.expected_bucket_owner.as_deref());
    let info = s3.authorize(&req.input.bucket, req.credentials.as_ref(), access).await?;
    let Some(config) = info.object_lock else {
        return Err(S3Error::with_message(
            S3ErrorCode::ObjectLockConfigurationNotFoundError,
            "Object Lock configuration does not exist for this bucket",
        ));
    };
    let rule = config.default_retention.map(|default| {
        let (days, years) = match default.period {
            RetentionPeriod::Days(days) => (Some(days as i32), None),
            RetentionPeriod::Years(years) => (None, Some(years as i32)),
        };
        let mode = Some(ObjectLockRetentionMode::from_static(mode_name(default.mode)));
        ObjectLockRule { default_retention: Some(s3s::dto::DefaultRetention { days, mode, years }) }
    });
    let configuration = ObjectLockConfiguration {
        object_lock_enabled: Some(ObjectLockEnabled::from_static(ObjectLockEnabled::ENABLED)),
        rule,
    };
    Ok(S3Response::new(GetObjectLockConfigurationOutput { object_lock_configuration: Some(configuration) }))
}

pub(super) async fn put_object_retention(
    s3: &ServS3,
    req: S3Request<PutObjectRetentionInput>,
) -> S3Result<S3Response<PutObjectRetentionOutput>> {
    let input = req.input;
    let credentials = req.credentials.as_ref();
    s3.authorize(
        &input.bucket,
        credentials,
        Access::object("s3:PutObjectRetention", &input.key).expecting(input.expected_bucket_owner.as_deref()),
    )
    .await?;
    let given = input.retention.unwrap_or_default();
    let retention = retention(given.mode.as_ref().map(|m| m.as_str()), given.retain_until_date.as_ref())?;
    let bypass_governance =
        s3.may_bypass(&input.bucket, credentials, &input.key, input.bypass_governance_retention).await;
    let msg = BucketMsg::PutRetention {
        key: input.key,
        version_id: input.version_id,
        retention,
        bypass_governance,
    };
    s3.ask(&input.bucket, msg).await?;
    Ok(S3Response::new(PutObjectRetentionOutput::default()))
}

pub(super) async fn get_object_retention(
    s3: &ServS3,
    req: S3Request<GetObjectRetentionInput>,
) -> S3Result<S3Response<GetObjectRetentionOutput>> {
    let input = req.input;
    let access =
        Access::object("s3:GetObjectRetention", &input.key).expecting(input.expected_bucket_owner.as_deref());
    let lock =
        s3.lock_of(&input.bucket, req.credentials.as_ref(), access, &input.key, input.version_id).await?;
    let Some(retention) = lock.retention else {
        return Err(S3Error::with_message(
            S3ErrorCode::NoSuchObjectLockConfiguration,
            "The specified object does not have a ObjectLock configuration",
        ));
    };
    let retention = ObjectLockRetention {
        mode: Some(ObjectLockRetentionMode::from_static(mode_name(retention.mode))),
        retain_until_date: Some(timestamp(retention.until_ms)),
    };
    Ok(S3Response::new(GetObjectRetentionOutput { retention: Some(retention) }))
}

pub(super) async fn put_object_legal_hold(
    s3: &ServS3,
    req: S3Request<PutObjectLegalHoldInput>,
) -> S3Result<S3Response<PutObjectLegalHoldOutput>> {
    let input = req.input;
    let access =
        Access::object("s3:PutObjectLegalHold", &input.key).expecting(input.expected_bucket_owner.as_deref());
    s3.authorize(&input.bucket, req.credentials.as_ref(), access).await?;
    let status = input.legal_hold.and_then(|hold| hold.status);
    let on = legal_hold(status.as_ref().map(|s| s.as_str()))?
        .ok_or_else(|| s3_error!(MalformedXML, "A legal hold needs a Status of ON or OFF"))?;
    let msg = BucketMsg::PutLegalHold { key: input.key, version_id: input.version_id, on };
    s3.ask(&input.bucket, msg).await?;
    Ok(S3Response::new(PutObjectLegalHoldOutput::default()))
}

pub(super) async fn get_object_legal_hold(
    s3: &ServS3,
    req: S3Request<GetObjectLegalHoldInput>,
) -> S3Result<S3Response<GetObjectLegalHoldOutput>> {
    let input = req.input;
    let access =
        Access::object("s3:GetObjectLegalHold", &input.key).expecting(input.expected_bucket_owner.as_deref());
    let lock =
        s3.lock_of(&input.bucket, req.credentials.as_ref(), access, &input.key, input.version_id).await?;
    let status = if lock.legal_hold { ObjectLockLegalHoldStatus::ON } else { ObjectLockLegalHoldStatus::OFF };
    let legal_hold = ObjectLockLegalHold { status: Some(ObjectLockLegalHoldStatus::from_static(status)) };
    Ok(S3Response::new(GetObjectLegalHoldOutput { legal_hold: Some(legal_hold) }))
}

impl ServS3 {
    /// The lock of `key` (or one version of it), if the caller may read it and the bucket has
    /// object lock.
    async fn lock_of(
        &self,
        bucket: &str,
        credentials: Option<&Credentials>,
        access: Access<'_>,
        key: &str,
        version_id: Option<String>,
    ) -> S3Result<ObjectLock> {
        let info = self.authorize(bucket, credentials, access).await?;
        if info.object_lock.is_none() {
            return Err(s3_error!(InvalidRequest, "Bucket is missing Object Lock Configuration"));
        }
        let msg = BucketMsg::GetObject { key: key.to_string(), version_id };
        let BucketReply::Object(record) = self.ask(bucket, msg).await? else { return Err(unexpected()) };
        Ok(record.lock)
    }

    /// Whether a request that asks to bypass GOVERNANCE retention (`asked`) may: only callers
    /// allowed `s3:BypassGovernanceRetention` (root and the bucket's owner) do; for others the
    /// header is ignored, and a locked version stays locked.
    pub(super) async fn may_bypass(
        &self,
        bucket: &str,
        credentials: Option<&Credentials>,
        key: &str,
        asked: Option<bool>,
    ) -> bool {
        let access = Access::object("s3:BypassGovernanceRetention", key);
        asked == Some(true) && self.authorize(bucket, credentials, access).await.is_ok()
    }
}

/// The lock a write asks for with its `x-amz-object-lock-*` headers (PutObject, CopyObject,
/// CreateMultipartUpload).
macro_rules! lock_from {
    ($input:expr) => {
        requested_lock(
            $input.object_lock_mode.as_ref(),
            $input.object_lock_retain_until_date.as_ref(),
            $input.object_lock_legal_hold_status.as_ref(),
        )
    };
}

/// The lock of headers `x-amz-object-lock-mode`, `-retain-until-date` and `-legal-hold`.
pub(super) fn requested_lock(
    mode: Option<&ObjectLockMode>,
    until: Option<&Timestamp>,
    legal_hold_status: Option<&ObjectLockLegalHoldStatus>,
) -> S3Result<ObjectLock> {
    let retention = retention(mode.map(|m| m.as_str()), until).map_err(|e| match e.code() {
        S3ErrorCode::MalformedXML => s3_error!(
            InvalidArgument,
            "x-amz-object-lock-retain-until-date and x-amz-object-lock-mode must both be supplied"
        ),
        _ => e,
    })?;
    let legal_hold = legal_hold(legal_hold_status.map(|s| s.as_str()))?.unwrap_or(false);
    Ok(ObjectLock { retention, legal_hold })
}

/// A PutObject that gives its version a retention (its own, or the bucket's default) must carry
/// Content-MD5 or a checksum, as S3 requires.
pub(super) fn require_integrity(info: &BucketInfo, lock: &ObjectLock, body: &BodyRequest) -> S3Result<()> {
    let retained =
        lock.retention.is_some() || info.object_lock.is_some_and(|config| config.default_retention.is_some());
    let claimed = body.claimed;
    let checked = body.content_md5.is_some()
        || body.algorithm.is_some()
        || body.trailers.is_some()
        || [
            &claimed.checksum_crc32,
            &claimed.checksum_crc32c,
            &claimed.checksum_crc64nvme,
            &claimed.checksum_sha1,
            &claimed.checksum_sha256,
        ]
        .iter()
        .any(|sum| sum.is_some());
    if retained && !checked {
        return Err(s3_error!(
            InvalidRequest,
            "Content-MD5 OR x-amz-checksum- HTTP header is required for Put Object requests with Object Lock parameters"
        ));
    }
    Ok(())
}

/// A retention from its mode and retain-until date: both or neither (`None`).
fn retention(mode: Option<&str>, until: Option<&Timestamp>) -> S3Result<Option<Retention>> {
    let (mode, until) = match (mode, until) {
        (None, None) => return Ok(None),
        (Some(mode), Some(until)) => (retention_mode(mode)?, until),
        _ => return Err(s3_error!(MalformedXML, "A retention needs both a Mode and a RetainUntilDate")),
    };
    let at: time::OffsetDateTime = until.clone().into();
    let until_ms = u64::try_from(at.unix_timestamp_nanos() / 1_000_000).unwrap_or(0);
    let now_ms = serv_actors::now_ms();
    if until_ms <= now_ms {
        return Err(s3_error!(InvalidArgument, "The retain until date must be in the future!"));
    }
    if until_ms - now_ms > MAX_RETENTION_MS {
        return Err(s3_error!(
            InvalidArgument,
            "The retain until date is more than {} years away",
            MAX_RETENTION_YEARS
        ));
    }
    Ok(Some(Retention { mode, until_ms }))
}

fn retention_mode(name: &str) -> S3Result<RetentionMode> {
    match name {
        ObjectLockRetentionMode::GOVERNANCE => Ok(RetentionMode::Governance),
        ObjectLockRetentionMode::COMPLIANCE => Ok(RetentionMode::Compliance),
        _ => Err(s3_error!(InvalidArgument, "Unknown wormMode directive: {}", name)),
    }
}

fn mode_name(mode: RetentionMode) -> &'static str {
    match mode {
        RetentionMode::Governance => ObjectLockRetentionMode::GOVERNANCE,
        RetentionMode::Compliance => ObjectLockRetentionMode::COMPLIANCE,
    }
}

/// A legal hold status: ON, OFF, or none given.
fn legal_hold(status: Option<&str>) -> S3Result<Option<bool>> {
    match status {
        None => Ok(None),
        Some(ObjectLockLegalHoldStatus::ON) => Ok(Some(true)),
        Some(ObjectLockLegalHoldStatus::OFF) => Ok(Some(false)),
        Some(other) => Err(s3_error!(InvalidArgument, "Unknown legal hold status: {}", other)),
    }
}

/// The `x-amz-object-lock-mode` a read of a version answers with.
pub(super) fn lock_mode(lock: &ObjectLock) -> Option<ObjectLockMode> {
    lock.retention.map(|retention| ObjectLockMode::from_static(mode_name(retention.mode)))
}

/// The `x-amz-object-lock-retain-until-date` a read of a version answers with.
pub(super) fn lock_until(lock: &ObjectLock) -> Option<Timestamp> {
    lock.retention.map(|retention| timestamp(retention.until_ms))
}

/// The `x-amz-object-lock-legal-hold` a read of a version answers with (only when ON).
pub(super) fn lock_hold(lock: &ObjectLock) -> Option<ObjectLockLegalHoldStatus> {
    lock.legal_hold.then(|| ObjectLockLegalHoldStatus::from_static(ObjectLockLegalHoldStatus::ON))
}
