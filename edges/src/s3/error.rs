//! Mapping refusals and internal failures to S3 errors (XML with the right code and status).

use s3s::{S3Error, S3ErrorCode};
use serv_actors::DirectoryError;
use serv_actors::bucket::Refusal;

/// The S3 error a bucket's refusal becomes.
pub(super) fn refusal(refusal: Refusal) -> S3Error {
    let code = match &refusal {
        Refusal::NoSuchBucket => S3ErrorCode::NoSuchBucket,
        Refusal::BucketAlreadyOwnedByYou => S3ErrorCode::BucketAlreadyOwnedByYou,
        Refusal::BucketAlreadyExists => S3ErrorCode::BucketAlreadyExists,
        Refusal::BucketNotEmpty => S3ErrorCode::BucketNotEmpty,
        Refusal::NoSuchKey => S3ErrorCode::NoSuchKey,
        Refusal::NoSuchVersion => S3ErrorCode::NoSuchVersion,
        Refusal::NoSuchUpload => S3ErrorCode::NoSuchUpload,
        Refusal::InvalidPart(_) => S3ErrorCode::InvalidPart,
        Refusal::InvalidPartOrder => S3ErrorCode::InvalidPartOrder,
        Refusal::EntityTooSmall(_) => S3ErrorCode::EntityTooSmall,
        Refusal::PreconditionFailed => S3ErrorCode::PreconditionFailed,
        Refusal::DeleteMarker => S3ErrorCode::MethodNotAllowed,
        Refusal::InvalidVersionId => S3ErrorCode::InvalidArgument,
        Refusal::CannotUnversion => S3ErrorCode::IllegalVersioningConfigurationException,
    };
    S3Error::with_message(code, refusal.to_string())
}

/// A failure to reach or run the bucket actor: the client may retry.
pub(super) fn directory(error: DirectoryError) -> S3Error {
    tracing::warn!(%error, "bucket actor unavailable");
    match error {
        DirectoryError::Timeout { .. } => {
            S3Error::with_message(S3ErrorCode::SlowDown, "Please reduce your request rate.")
        }
        DirectoryError::ShuttingDown
        | DirectoryError::Unavailable { .. }
        | DirectoryError::Moving { .. }
        | DirectoryError::Failed { .. } => {
            S3Error::with_message(S3ErrorCode::ServiceUnavailable, "The bucket is unavailable; retry later.")
        }
        other => S3Error::with_message(S3ErrorCode::InternalError, other.to_string()),
    }
}

/// A storage failure: logged, and reported without internals.
pub(super) fn internal(context: &str, error: impl std::fmt::Display) -> S3Error {
    tracing::error!(%error, "{context}");
    S3Error::with_message(S3ErrorCode::InternalError, "We encountered an internal error. Please try again.")
}
