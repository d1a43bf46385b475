//! Listings: objects (v1 and v2, with continuation tokens) and object versions.

use s3s::dto::*;
use s3s::{S3Request, S3Response, S3Result, s3_error};
use serv_actors::bucket::{BucketMsg, BucketReply, ListVersionsRequest, Listing};

use super::super::body::hex;
use super::access::Access;
use super::headers::{strong, timestamp};
use super::{ServS3, unexpected};

pub(super) async fn list_objects(
    s3: &ServS3,
    req: S3Request<ListObjectsInput>,
) -> S3Result<S3Response<ListObjectsOutput>> {
    let input = req.input;
    let access = Access::bucket("s3:ListBucket").expecting(input.expected_bucket_owner.as_deref());
    let info = s3.authorize(&input.bucket, req.credentials.as_ref(), access).await?;
    let max = s3.page_size(input.max_keys)?;
    let prefix = input.prefix.clone().unwrap_or_default();
    let request = serv_actors::bucket::ListRequest {
        prefix,
        delimiter: input.delimiter.clone(),
        after: input.marker.clone().filter(|m| !m.is_empty()),
        max,
    };
    let url = url_encoded(input.encoding_type.as_ref())?;
    let listing = s3.list(&input.bucket, request).await?;
    let output = ListObjectsOutput {
        name: Some(input.bucket),
        prefix: echoed(url, input.prefix),
        delimiter: echoed_delimiter(url, input.delimiter),
        marker: echoed(url, input.marker),
        max_keys: Some(max as i32),
        is_truncated: Some(listing.next_after.is_some()),
        next_marker: listing.next_after.as_deref().map(|m| encode_if(url, m)),
        encoding_type: input.encoding_type,
        contents: Some(listed_objects(&listing, url, Some((s3, &info.owner)))),
        common_prefixes: Some(common_prefixes(&listing, url)),
        ..Default::default()
    };
    Ok(S3Response::new(output))
}

pub(super) async fn list_objects_v2(
    s3: &ServS3,
    req: S3Request<ListObjectsV2Input>,
) -> S3Result<S3Response<ListObjectsV2Output>> {
    let input = req.input;
    let access = Access::bucket("s3:ListBucket").expecting(input.expected_bucket_owner.as_deref());
    let info = s3.authorize(&input.bucket, req.credentials.as_ref(), access).await?;
    // Owners only when asked for, as S3 answers ListObjectsV2.
    let owners = input.fetch_owner.unwrap_or(false).then_some((s3, info.owner.as_str()));
    let max = s3.page_size(input.max_keys)?;
    let after = match &input.continuation_token {
        Some(token) => Some(decode_token(token)?),
        None => input.start_after.clone(),
    };
    let prefix = input.prefix.clone().unwrap_or_default();
    let request = serv_actors::bucket::ListRequest { prefix, delimiter: input.delimiter.clone(), after, max };
    let url = url_encoded(input.encoding_type.as_ref())?;
    let listing = s3.list(&input.bucket, request).await?;
    let key_count = (listing.objects.len() + listing.common_prefixes.len()) as i32;
    let output = ListObjectsV2Output {
        name: Some(input.bucket),
        prefix: echoed(url, input.prefix),
        delimiter: echoed_delimiter(url, input.delimiter),
        max_keys: Some(max as i32),
        key_count: Some(key_count),
        continuation_token: input.continuation_token,
        start_after: input.start_after.map(|s| encode_if(url, &s)),
        is_truncated: Some(listing.next_after.is_some()),
        next_continuation_token: listing.next_after.as_deref().map(encode_token),
        encoding_type: input.encoding_type,
        contents: Some(listed_objects(&listing, url, owners)),
        common_prefixes: Some(common_prefixes(&listing, url)),
        ..Default::default()
    };
    Ok(S3Response::new(output))
}

pub(super) async fn list_object_versions(
    s3: &ServS3,
    req: S3Request<ListObjectVersionsInput>,
) -> S3Result<S3Response<ListObjectVersionsOutput>> {
    let input = req.input;
    let access = Access::bucket("s3:ListBucketVersions").expecting(input.expected_bucket_owner.as_deref());
    let info = s3.authorize(&input.bucket, req.credentials.as_ref(), access).await?;
    let max = s3.page_size(input.max_keys)?;
    let url = url_encoded(input.encoding_type.as_ref())?;
    let request = ListVersionsRequest {
        prefix: input.prefix.clone().unwrap_or_default(),
        delimiter: input.delimiter.clone(),
        key_marker: input.key_marker.clone().filter(|k| !k.is_empty()),
        version_marker: input.version_id_marker.clone(),
        max,
    };
    let BucketReply::Versions(listing) = s3.ask(&input.bucket, BucketMsg::ListVersions(request)).await?
    else {
        return Err(unexpected());
    };
    let (mut versions, mut markers) = (Vec::new(), Vec::new());
    for v in listing.versions {
        let (key, last_modified) = (Some(encode_if(url, &v.key)), Some(timestamp(v.last_modified_ms)));
        let owner = Some(s3.keys.owner(v.owner.as_deref().unwrap_or(&info.owner)));
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
                owner,
                ..Default::default()
            }),
            None => markers.push(DeleteMarkerEntry {
                key,
                version_id: Some(v.version_id),
                is_latest: Some(v.is_latest),
                last_modified,
                owner,
            }),
        }
    }
    let output = ListObjectVersionsOutput {
        name: Some(input.bucket),
        prefix: echoed(url, input.prefix),
        delimiter: echoed_delimiter(url, input.delimiter),
        key_marker: echoed(url, input.key_marker),
        version_id_marker: Some(input.version_id_marker.unwrap_or_default()),
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

impl ServS3 {
    pub(super) async fn list(
        &self,
        bucket: &str,
        request: serv_actors::bucket::ListRequest,
    ) -> S3Result<Listing> {
        match self.ask(bucket, BucketMsg::List(request)).await? {
            BucketReply::Listing(listing) => Ok(listing),
            _ => Err(unexpected()),
        }
    }

    pub(super) fn page_size(&self, max_keys: Option<i32>) -> S3Result<usize> {
        match max_keys {
            Some(n) if n < 0 => Err(s3_error!(InvalidArgument, "max-keys must not be negative")),
            Some(n) => Ok((n as usize).min(self.limits.max_list_page)),
            None => Ok(self.limits.max_list_page),
        }
    }
}

/// The listed objects as S3 shows them; with `owners` (the edge and the bucket's owner, for
/// objects from before owners were kept), each with its owner.
pub(super) fn listed_objects(listing: &Listing, url: bool, owners: Option<(&ServS3, &str)>) -> Vec<Object> {
    listing
        .objects
        .iter()
        .map(|o| Object {
            key: Some(encode_if(url, &o.key)),
            size: Some(o.size as i64),
            e_tag: Some(strong(&o.etag)),
            last_modified: Some(timestamp(o.last_modified_ms)),
            storage_class: Some(ObjectStorageClass::from_static(ObjectStorageClass::STANDARD)),
            owner: owners.map(|(s3, bucket_owner)| s3.keys.owner(o.owner.as_deref().unwrap_or(bucket_owner))),
            ..Default::default()
        })
        .collect()
}

pub(super) fn common_prefixes(listing: &Listing, url: bool) -> Vec<CommonPrefix> {
    listing.common_prefixes.iter().map(|p| CommonPrefix { prefix: Some(encode_if(url, p)) }).collect()
}

/// Continuation tokens are the hex of the key or prefix a page ended on: opaque to clients, and
/// safe in XML whatever the key holds.
pub(super) fn encode_token(after: &str) -> String {
    hex(after.as_bytes())
}

pub(super) fn decode_token(token: &str) -> S3Result<String> {
    let invalid = || s3_error!(InvalidArgument, "The continuation token provided is incorrect");
    if !token.len().is_multiple_of(2) {
        return Err(invalid());
    }
    let bytes: Option<Vec<u8>> =
        (0..token.len()).step_by(2).map(|i| u8::from_str_radix(&token[i..i + 2], 16).ok()).collect();
    String::from_utf8(bytes.ok_or_else(invalid)?).map_err(|_| invalid())
}

/// Whether a listing's names are to be URL-encoded: `encoding-type=url`, the one type S3 knows.
pub(super) fn url_encoded(encoding_type: Option<&EncodingType>) -> S3Result<bool> {
    match encoding_type.map(|e| e.as_str()) {
        None => Ok(false),
        Some(EncodingType::URL) => Ok(true),
        Some(_) => Err(s3_error!(InvalidArgument, "Invalid Encoding Method specified in Request")),
    }
}

/// A request parameter as a listing echoes it: always, empty when the request had none (as S3
/// answers `<Prefix/>` and `<Marker/>`), URL-encoded when asked.
fn echoed(url: bool, value: Option<String>) -> Option<String> {
    Some(encode_if(url, value.as_deref().unwrap_or_default()))
}

/// The delimiter as a listing echoes it: only a non-empty one (an empty one delimits nothing).
fn echoed_delimiter(url: bool, delimiter: Option<String>) -> Option<String> {
    delimiter.filter(|d| !d.is_empty()).map(|d| encode_if(url, &d))
}

/// `encoding-type=url`: percent-encodes everything but unreserved characters and `/`.
pub(super) fn encode_if(url: bool, value: &str) -> String {
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
