//! Mapping refusals and internal failures to S3 errors (XML with the right code and status), and
//! the request id every answer carries.

use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderMap, HeaderValue, LAST_MODIFIED};
use s3s::header::{X_AMZ_DELETE_MARKER, X_AMZ_REQUEST_ID, X_AMZ_VERSION_ID};
use s3s::{S3Error, S3ErrorCode};
use serv_actors::DirectoryError;
use serv_actors::bucket::{MarkerInfo, Refusal};

use super::ops::{http_date, timestamp};

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
        Refusal::DeletedByMarker(_) => S3ErrorCode::NoSuchKey,
        Refusal::DeleteMarker(_) => S3ErrorCode::MethodNotAllowed,
        Refusal::InvalidVersionId => S3ErrorCode::InvalidArgument,
        Refusal::CannotUnversion => S3ErrorCode::IllegalVersioningConfigurationException,
        Refusal::ObjectLocked => S3ErrorCode::AccessDenied,
        Refusal::ObjectLockNotEnabled => S3ErrorCode::InvalidRequest,
        Refusal::ObjectLockNeedsVersioning | Refusal::VersioningLocked => S3ErrorCode::InvalidBucketState,
    };
    let mut error = S3Error::with_message(code, refusal.to_string());
    match &refusal {
        Refusal::DeletedByMarker(marker) => error.set_headers(marker_headers(marker, false)),
        Refusal::DeleteMarker(marker) => error.set_headers(marker_headers(marker, true)),
        _ => {}
    }
    error
}

/// What S3 says of a delete marker a read ran into: that it is one, its version id and, when the
/// marker itself was asked for, when it was written. (s3s sends these headers in place of its
/// own, so the content type is among them.)
fn marker_headers(marker: &MarkerInfo, with_time: bool) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/xml"));
    headers.insert(X_AMZ_DELETE_MARKER, HeaderValue::from_static("true"));
    if let Ok(id) = HeaderValue::from_str(&marker.version_id) {
        headers.insert(X_AMZ_VERSION_ID, id);
    }
    let modified = with_time.then(|| http_date(&timestamp(marker.last_modified_ms))).flatten();
    if let Some(modified) = modified.and_then(|date| HeaderValue::from_str(&date).ok()) {
        headers.insert(LAST_MODIFIED, modified);
    }
    headers
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

/// A fresh request id: 16 hex digits, as S3's look.
pub(super) fn new_request_id() -> String {
    format!("{:016X}", rand::random::<u64>())
}

/// Stamps an answer with its request id as S3 does: the `x-amz-request-id` header on every
/// answer and, in an error's XML (which s3s writes without one), a `<RequestId>` element.
pub(super) fn stamp_request_id(response: &mut s3s::HttpResponse, id: &str) {
    let Ok(value) = HeaderValue::from_str(id) else { return };
    response.headers_mut().insert(X_AMZ_REQUEST_ID, value);
    let status = response.status();
    if !status.is_client_error() && !status.is_server_error() {
        return;
    }
    const CLOSE: &[u8] = b"</Error>";
    let Some(xml) = response.body().bytes().filter(|xml| xml.ends_with(CLOSE)) else { return };
    if xml.windows(b"<RequestId>".len()).any(|w| w == b"<RequestId>") {
        return;
    }
    // An id is hex digits: nothing in it needs escaping.
    let element = format!("<RequestId>{id}</RequestId>");
    let mut stamped = Vec::with_capacity(xml.len() + element.len());
    stamped.extend_from_slice(&xml[..xml.len() - CLOSE.len()]);
    stamped.extend_from_slice(element.as_bytes());
    stamped.extend_from_slice(CLOSE);
    if response.headers().contains_key(CONTENT_LENGTH) {
        response.headers_mut().insert(CONTENT_LENGTH, HeaderValue::from(stamped.len()));
    }
    *response.body_mut() = s3s::Body::from(stamped);
}
