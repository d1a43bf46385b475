//! Counts of S3 requests by operation and status, and their latency by operation, for
//! `/metrics`.
//!
//! Counting is a few relaxed atomic adds per request, into static tables sized once: the
//! operations are the S3 operations `s3s` routes (a fixed list) plus `unknown`, for requests
//! refused before one was resolved (a bad signature, an unknown route); the statuses are the
//! defined 2xx, 3xx, 4xx and 5xx codes plus `other`. Label cardinality is therefore bounded
//! whatever clients send. The operation is learned by the access check, which `s3s` runs once
//! it has resolved it, inside the request's task: [`measure`] gives that task a slot for it.
//! The tables are per process, which serves one node.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serv_storage::histogram::{Histogram, HistogramSnapshot};

/// Every operation `s3s` routes, sorted so that a name is found by binary search.
const OPERATIONS: [&str; 99] = [
    "AbortMultipartUpload",
    "CompleteMultipartUpload",
    "CopyObject",
    "CreateBucket",
    "CreateBucketMetadataTableConfiguration",
    "CreateMultipartUpload",
    "CreateSession",
    "DeleteBucket",
    "DeleteBucketAnalyticsConfiguration",
    "DeleteBucketCors",
    "DeleteBucketEncryption",
    "DeleteBucketIntelligentTieringConfiguration",
    "DeleteBucketInventoryConfiguration",
    "DeleteBucketLifecycle",
    "DeleteBucketMetadataTableConfiguration",
    "DeleteBucketMetricsConfiguration",
    "DeleteBucketOwnershipControls",
    "DeleteBucketPolicy",
    "DeleteBucketReplication",
    "DeleteBucketTagging",
    "DeleteBucketWebsite",
    "DeleteObject",
    "DeleteObjectTagging",
    "DeleteObjects",
    "DeletePublicAccessBlock",
    "GetBucketAccelerateConfiguration",
    "GetBucketAcl",
    "GetBucketAnalyticsConfiguration",
    "GetBucketCors",
    "GetBucketEncryption",
    "GetBucketIntelligentTieringConfiguration",
    "GetBucketInventoryConfiguration",
    "GetBucketLifecycleConfiguration",
    "GetBucketLocation",
    "GetBucketLogging",
    "GetBucketMetadataTableConfiguration",
    "GetBucketMetricsConfiguration",
    "GetBucketNotificationConfiguration",
    "GetBucketOwnershipControls",
    "GetBucketPolicy",
    "GetBucketPolicyStatus",
    "GetBucketReplication",
    "GetBucketRequestPayment",
    "GetBucketTagging",
    "GetBucketVersioning",
    "GetBucketWebsite",
    "GetObject",
    "GetObjectAcl",
    "GetObjectAttributes",
    "GetObjectLegalHold",
    "GetObjectLockConfiguration",
    "GetObjectRetention",
    "GetObjectTagging",
    "GetObjectTorrent",
    "GetPublicAccessBlock",
    "HeadBucket",
    "HeadObject",
    "ListBucketAnalyticsConfigurations",
    "ListBucketIntelligentTieringConfigurations",
    "ListBucketInventoryConfigurations",
    "ListBucketMetricsConfigurations",
    "ListBuckets",
    "ListDirectoryBuckets",
    "ListMultipartUploads",
    "ListObjectVersions",
    "ListObjects",
    "ListObjectsV2",
    "ListParts",
    "PostObject",
    "PutBucketAccelerateConfiguration",
    "PutBucketAcl",
    "PutBucketAnalyticsConfiguration",
    "PutBucketCors",
    "PutBucketEncryption",
    "PutBucketIntelligentTieringConfiguration",
    "PutBucketInventoryConfiguration",
    "PutBucketLifecycleConfiguration",
    "PutBucketLogging",
    "PutBucketMetricsConfiguration",
    "PutBucketNotificationConfiguration",
    "PutBucketOwnershipControls",
    "PutBucketPolicy",
    "PutBucketReplication",
    "PutBucketRequestPayment",
    "PutBucketTagging",
    "PutBucketVersioning",
    "PutBucketWebsite",
    "PutObject",
    "PutObjectAcl",
    "PutObjectLegalHold",
    "PutObjectLockConfiguration",
    "PutObjectRetention",
    "PutObjectTagging",
    "PutPublicAccessBlock",
    "RestoreObject",
    "SelectObjectContent",
    "UploadPart",
    "UploadPartCopy",
    "WriteGetObjectResponse",
];

/// The operation label of a request refused before its operation was known.
const UNKNOWN: &str = "unknown";

/// The status codes counted one by one, as `(first, how many)`; any other is `other`.
const STATUS_RANGES: [(u16, usize); 4] = [(200, 8), (300, 9), (400, 32), (500, 12)];

/// Status slots of one operation: the ranges, then `other`.
const STATUS_SLOTS: usize = {
    let mut slots = 1;
    let mut i = 0;
    while i < STATUS_RANGES.len() {
        slots += STATUS_RANGES[i].1;
        i += 1;
    }
    slots
};

/// Upper bounds of the request-latency buckets, in microseconds (1 ms to 30 s).
const LATENCY_BUCKETS_US: [u64; 14] = [
    1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000, 5_000_000,
    10_000_000, 30_000_000,
];

/// One operation's requests, by status, and their latency.
struct OperationStats {
    statuses: [AtomicU64; STATUS_SLOTS],
    latency: Histogram<{ LATENCY_BUCKETS_US.len() }>,
}

impl OperationStats {
    const fn new() -> Self {
        Self {
            statuses: [const { AtomicU64::new(0) }; STATUS_SLOTS],
            latency: Histogram::new(LATENCY_BUCKETS_US),
        }
    }
}

/// One row per operation of [`OPERATIONS`], then one for [`UNKNOWN`].
static STATS: [OperationStats; OPERATIONS.len() + 1] =
    [const { OperationStats::new() }; OPERATIONS.len() + 1];

tokio::task_local! {
    /// The operation of the request the current task serves, once the access check knows it.
    static OPERATION: Cell<Option<usize>>;
}

/// Serves one request through `answer`, then counts it under the operation the access check
/// noted (or `unknown`) with the status [`status_of`] reads from its outcome, and the time to
/// the response's head (a download's body streams after).
pub(super) async fn measure<T, E>(
    answer: impl Future<Output = Result<T, E>>,
    status_of: impl FnOnce(&Result<T, E>) -> u16,
) -> Result<T, E> {
    let started = Instant::now();
    let (outcome, operation) = OPERATION
        .scope(Cell::new(None), async {
            let outcome = answer.await;
            (outcome, OPERATION.with(Cell::get))
        })
        .await;
    count(operation.unwrap_or(OPERATIONS.len()), status_of(&outcome), started.elapsed());
    outcome
}

/// Notes `name` as the operation of the current request (called by the access check).
pub(super) fn note_operation(name: &str) {
    let _ = OPERATION.try_with(|slot| slot.set(OPERATIONS.binary_search(&name).ok()));
}

fn count(operation: usize, status: u16, elapsed: Duration) {
    debug_assert!(operation < STATS.len(), "an operation row exists for every index given");
    let Some(stats) = STATS.get(operation) else { return };
    stats.statuses[status_slot(status)].fetch_add(1, Ordering::Relaxed);
    stats.latency.record(elapsed);
}

/// The slot of `status` among an operation's status counters.
fn status_slot(status: u16) -> usize {
    let mut base = 0;
    for (first, len) in STATUS_RANGES {
        if let Some(offset) = status.checked_sub(first).map(usize::from).filter(|offset| *offset < len) {
            return base + offset;
        }
        base += len;
    }
    base
}

/// The status label of `slot`, the inverse of [`status_slot`].
fn status_label(slot: usize) -> String {
    let mut base = 0;
    for (first, len) in STATUS_RANGES {
        if slot < base + len {
            return (usize::from(first) + slot - base).to_string();
        }
        base += len;
    }
    "other".to_string()
}

/// One operation's counts as read for `/metrics`.
pub(crate) struct OperationView {
    /// The S3 operation name, or `unknown`.
    pub operation: &'static str,
    /// Requests by status label, those with any.
    pub statuses: Vec<(String, u64)>,
    pub latency: HistogramSnapshot,
}

/// The operations that served any request, with their counts.
pub(crate) fn snapshot() -> Vec<OperationView> {
    OPERATIONS
        .iter()
        .chain(std::iter::once(&UNKNOWN))
        .zip(&STATS)
        .filter_map(|(operation, stats)| {
            let statuses: Vec<(String, u64)> = stats
                .statuses
                .iter()
                .enumerate()
                .map(|(slot, count)| (slot, count.load(Ordering::Relaxed)))
                .filter(|(_, count)| *count > 0)
                .map(|(slot, count)| (status_label(slot), count))
                .collect();
            (!statuses.is_empty()).then(|| OperationView {
                operation,
                statuses,
                latency: stats.latency.snapshot(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_are_sorted_so_binary_search_finds_each() {
        assert!(OPERATIONS.is_sorted());
        for (i, name) in OPERATIONS.iter().enumerate() {
            assert_eq!(OPERATIONS.binary_search(name), Ok(i));
        }
    }

    #[test]
    fn every_status_maps_to_a_bounded_slot_and_back() {
        for status in [200, 204, 206, 301, 304, 307, 400, 403, 404, 409, 412, 416, 431, 500, 501, 503, 511] {
            assert_eq!(status_label(status_slot(status)), status.to_string());
        }
        for status in [0, 100, 199, 208, 309, 432, 499, 512, 599, 999] {
            assert_eq!(status_slot(status), STATUS_SLOTS - 1, "{status}");
        }
        assert_eq!(status_label(STATUS_SLOTS - 1), "other");
    }

    #[tokio::test]
    async fn a_request_counts_under_the_operation_noted_while_it_ran_or_unknown() {
        let count_of = |operation: &str, status: &str| {
            let views = snapshot();
            let view = views.into_iter().find(|view| view.operation == operation);
            view.and_then(|view| view.statuses.into_iter().find(|(s, _)| s == status)).map_or(0, |(_, n)| n)
        };
        // A request whose access check noted `operation` (if any), answered with `status`.
        let request = |operation: Option<&'static str>, status: u16| {
            measure(
                async move {
                    operation.into_iter().for_each(note_operation);
                    Ok::<_, ()>(status)
                },
                |outcome| *outcome.as_ref().unwrap_or(&500),
            )
        };
        let (cors, unknown) = (count_of("GetBucketCors", "501"), count_of(UNKNOWN, "403"));
        assert_eq!(request(Some("GetBucketCors"), 501).await, Ok(501), "the answer passes through");
        assert!(count_of("GetBucketCors", "501") > cors);
        // A name s3s does not route, and no name at all, both count as unknown.
        request(Some("NotAnOperation"), 403).await.ok();
        request(None, 403).await.ok();
        assert!(count_of(UNKNOWN, "403") >= unknown + 2);
        assert!(snapshot().iter().all(|view| view.operation != "NotAnOperation"));
    }
}
