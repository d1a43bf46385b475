//! Bodies in flight: the slots that cap them, pinned reads of an object's blocks, and uploads
//! written to blocks and checked against Content-MD5 and the checksums the client claims.

use s3s::checksum::ChecksumHasher;
use s3s::crypto::Checksum as _;
use s3s::dto::*;
use s3s::{S3Error, S3ErrorCode, S3Result};
use serv_actors::bucket::{BucketMsg, BucketReply, Checksums, ObjectRecord};
use tokio::sync::OwnedSemaphorePermit;

use super::super::body::{self, Blocks, Hold, Written};
use super::{ServS3, unexpected};

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

impl ServS3 {
    /// A slot for one body in flight, or `SlowDown` when all are taken.
    pub(super) fn body_slot(&self) -> S3Result<OwnedSemaphorePermit> {
        self.bodies
            .clone()
            .try_acquire_owned()
            .map_err(|_| S3Error::with_message(S3ErrorCode::SlowDown, "Please reduce your request rate."))
    }

    /// The object's current record with its blocks pinned for reading (retried if the object is
    /// replaced, and its blocks collected, between the two steps), and where its blocks are.
    pub(super) async fn pinned_object(
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
    pub(super) async fn write_body(
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
}

/// The parts of a request that say how its body must check out.
pub(super) struct BodyRequest<'a> {
    pub(super) content_md5: Option<&'a String>,
    pub(super) claimed: &'a Checksum,
    pub(super) algorithm: Option<&'a ChecksumAlgorithm>,
    pub(super) trailers: Option<&'a s3s::TrailingHeaders>,
}

pub(super) fn hasher_for(claimed: &Checksum, algorithm: Option<&ChecksumAlgorithm>) -> ChecksumHasher {
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
pub(super) fn by_header(checksum: &Checksum) -> [(&'static str, Option<&String>); 5] {
    [
        ("x-amz-checksum-crc32", checksum.checksum_crc32.as_ref()),
        ("x-amz-checksum-crc32c", checksum.checksum_crc32c.as_ref()),
        ("x-amz-checksum-sha1", checksum.checksum_sha1.as_ref()),
        ("x-amz-checksum-sha256", checksum.checksum_sha256.as_ref()),
        ("x-amz-checksum-crc64nvme", checksum.checksum_crc64nvme.as_ref()),
    ]
}

pub(super) fn checksums_of(checksum: &Checksum) -> Checksums {
    Checksums {
        crc32: checksum.checksum_crc32.clone(),
        crc32c: checksum.checksum_crc32c.clone(),
        sha1: checksum.checksum_sha1.clone(),
        sha256: checksum.checksum_sha256.clone(),
    }
}
