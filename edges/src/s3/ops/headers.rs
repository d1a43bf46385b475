//! Object headers and validators: what an object stores from a request's headers, what a GET or
//! HEAD answers with, and the conditions (`If-Match`, ranges, part numbers) a read must meet.

use std::collections::HashMap;
use std::time::{Duration, UNIX_EPOCH};

use axum::http::header::{ETAG, HeaderMap, HeaderValue, LAST_MODIFIED};
use s3s::dto::*;
use s3s::{S3Error, S3ErrorCode, S3Result};
use serv_actors::bucket::{ObjectMeta, ObjectRecord, WriteCondition};

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
/// request's `response-*` parameters), validators, object lock and, for whole objects, checksums.
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
            // S3 counts the parts only for a read of one part (`partNumber`).
            parts_count: $input.part_number.and_then(|_| {
                (!record.body.part_sizes.is_empty()).then_some(record.body.part_sizes.len() as i32)
            }),
            version_id: record.version_id.clone(),
            object_lock_mode: lock_mode(&record.lock),
            object_lock_retain_until_date: lock_until(&record.lock),
            object_lock_legal_hold_status: lock_hold(&record.lock),
            checksum_crc32: checksums.and_then(|c: &Checksums| c.crc32.clone()),
            checksum_crc32c: checksums.and_then(|c: &Checksums| c.crc32c.clone()),
            checksum_sha1: checksums.and_then(|c: &Checksums| c.sha1.clone()),
            checksum_sha256: checksums.and_then(|c: &Checksums| c.sha256.clone()),
            ..Default::default()
        }
    }};
}

pub(in crate::s3) fn timestamp(ms: u64) -> Timestamp {
    Timestamp::from(UNIX_EPOCH + Duration::from_millis(ms))
}

pub(super) fn unix_secs(ts: &Timestamp) -> i64 {
    let at: time::OffsetDateTime = ts.clone().into();
    at.unix_timestamp()
}

pub(in crate::s3) fn http_date(ts: &Timestamp) -> Option<String> {
    let mut out = Vec::new();
    ts.format(TimestampFormat::HttpDate, &mut out).ok()?;
    String::from_utf8(out).ok()
}

pub(super) fn parse_http_date(s: &str) -> Option<Timestamp> {
    Timestamp::parse(TimestampFormat::HttpDate, s).ok()
}

pub(super) fn strong(etag: &str) -> ETag {
    ETag::Strong(etag.to_string())
}

pub(super) fn etag_condition_matches(condition: &ETagCondition, etag: &str) -> bool {
    match condition {
        ETagCondition::Any => true,
        ETagCondition::ETag(given) => given.value() == etag,
    }
}

/// The headers an object stores, from a request's fields.
#[allow(clippy::too_many_arguments)]
pub(super) fn object_meta(
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

pub(super) fn user_metadata(meta: &ObjectMeta) -> Option<Metadata> {
    (!meta.user.is_empty())
        .then(|| meta.user.iter().map(|(k, v)| (k.clone(), v.clone())).collect::<HashMap<_, _>>())
}

/// Evaluates GET/HEAD preconditions in the order RFC 9110 gives them.
pub(super) fn preconditions(
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
    let not_modified = || {
        let mut error = S3Error::new(S3ErrorCode::NotModified);
        error.set_headers(validator_headers(record));
        error
    };
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

/// The validators a 304 answer carries, as S3 sends them: the object's ETag and Last-Modified.
/// (s3s sends an error's headers in place of its own.)
fn validator_headers(record: &ObjectRecord) -> HeaderMap {
    let mut headers = HeaderMap::new();
    if let Ok(etag) = HeaderValue::from_str(&format!("\"{}\"", record.body.etag)) {
        headers.insert(ETAG, etag);
    }
    let modified = http_date(&timestamp(record.last_modified_ms));
    if let Some(modified) = modified.and_then(|date| HeaderValue::from_str(&date).ok()) {
        headers.insert(LAST_MODIFIED, modified);
    }
    headers
}

pub(super) fn copy_preconditions(
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

/// The byte range a GET asks for (a Range header or a part number), and the part count if any.
pub(super) fn requested_range(
    record: &ObjectRecord,
    range: Option<Range>,
    part_number: Option<i32>,
) -> S3Result<Option<std::ops::Range<u64>>> {
    let size = record.body.size;
    if part_number.is_some() && range.is_some() {
        return Err(S3Error::with_message(
            S3ErrorCode::InvalidRequest,
            "Cannot specify both Range header and partNumber query parameter",
        ));
    }
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

/// The condition a write's `If-None-Match` or `If-Match` header puts on the object it replaces,
/// checked by the bucket actor as it commits. On a write S3 takes only `*` in `If-None-Match`,
/// and one of the two headers, not both.
pub(super) fn write_condition(
    if_none_match: Option<&ETagCondition>,
    if_match: Option<&ETagCondition>,
) -> S3Result<Option<WriteCondition>> {
    match (if_none_match, if_match) {
        (Some(_), Some(_)) => Err(S3Error::with_message(
            S3ErrorCode::InvalidRequest,
            "If-Match and If-None-Match cannot be used together on a write",
        )),
        (Some(ETagCondition::Any), None) => Ok(Some(WriteCondition::Absent)),
        (Some(ETagCondition::ETag(_)), None) => Err(S3Error::with_message(
            S3ErrorCode::NotImplemented,
            "A header you provided implies functionality that is not implemented: If-None-Match takes only *",
        )),
        (None, Some(condition)) => Ok(Some(WriteCondition::ETag(if_match_etag(condition)))),
        (None, None) => Ok(None),
    }
}

/// The ETag an `If-Match` header names, without quotes (`*` for any object).
pub(super) fn if_match_etag(condition: &ETagCondition) -> String {
    match condition {
        ETagCondition::Any => "*".to_string(),
        ETagCondition::ETag(etag) => etag.value().to_string(),
    }
}
