//! The S3 load of the benches: signed requests through the chaos harness's client (hyper,
//! SigV4 with UNSIGNED-PAYLOAD, so that the server and not a client is measured), and a loop of
//! workers that sends them for a fixed time.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use serv_chaos::http::Http;

use super::loopback;

/// An S3 request's status.
pub async fn send(client: &Http, method: &str, port: u16, path: &str, body: Bytes) -> Result<u16, String> {
    client.s3(method, loopback(port), path, "", body).await.map(|r| r.status).map_err(|f| f.error)
}

/// Creates `bucket` (or finds it made already); panics otherwise.
pub async fn create_bucket(client: &Http, port: u16, bucket: &str) {
    let status = send(client, "PUT", port, &format!("/{bucket}"), Bytes::new()).await;
    assert!(matches!(status, Ok(200 | 409)), "creating bucket {bucket} on port {port}: {status:?}");
}

/// `size` bytes of a fixed pattern.
pub fn pattern(size: usize) -> Bytes {
    Bytes::from((0..size).map(|i| (i * 31 % 251) as u8).collect::<Vec<_>>())
}

/// Bytes between two stamps of an object's id in [`distinct`]: no larger than a block, so
/// that no block of one object is a block of another.
const STAMP_EVERY_BYTES: usize = 4 * 1024;

/// `body` made unique to worker `worker`'s object `n` (its id stamped every
/// [`STAMP_EVERY_BYTES`]), so that block dedup does not flatter servd.
pub fn distinct(body: &Bytes, worker: usize, n: u64) -> Bytes {
    let id = ((worker as u128) << 64 | u128::from(n)).to_le_bytes();
    let mut object = body.to_vec();
    for chunk in object.chunks_mut(STAMP_EVERY_BYTES) {
        let len = chunk.len().min(id.len());
        chunk[..len].copy_from_slice(&id[..len]);
    }
    Bytes::from(object)
}

/// (ops/s, MiB/s) of `count` requests of `size` bytes in `seconds`.
pub fn rates(count: u64, seconds: f64, size: usize) -> (f64, f64) {
    let rate = count as f64 / seconds;
    (rate, rate * size as f64 / (1024.0 * 1024.0))
}

/// Runs `concurrency` workers for `seconds`; returns (ops, errors).
pub async fn phase(
    client: &Http,
    port: u16,
    concurrency: usize,
    seconds: f64,
    make: impl Fn(usize, u64) -> (&'static str, String, Bytes) + Send + Sync + 'static,
) -> (u64, u64) {
    let (ops, errors, stop) =
        (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)), Arc::new(AtomicBool::new(false)));
    let make = Arc::new(make);
    let workers: Vec<_> = (0..concurrency)
        .map(|worker| {
            let (client, ops, errors, stop, make) =
                (client.clone(), ops.clone(), errors.clone(), stop.clone(), make.clone());
            tokio::spawn(async move {
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    let (method, path, body) = make(worker, n);
                    match send(&client, method, port, &path, body).await {
                        Ok(200) => ops.fetch_add(1, Ordering::Relaxed),
                        _ => errors.fetch_add(1, Ordering::Relaxed),
                    };
                    n += 1;
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        let _ = worker.await;
    }
    (ops.load(Ordering::Relaxed), errors.load(Ordering::Relaxed))
}

/// What a PUT phase did: successful PUTs, failed ones, and how many objects each worker
/// attempted (a worker's objects below its count are written, unless they failed).
pub struct Puts {
    pub ops: u64,
    pub errors: u64,
    pub attempted: Arc<Vec<AtomicU64>>,
}

/// PUTs distinct objects of `size` bytes to `/{prefix}/{worker}/{n}` through `port` with
/// `concurrency` workers for `seconds`.
pub async fn put_phase(
    client: &Http,
    port: u16,
    prefix: String,
    size: usize,
    concurrency: usize,
    seconds: f64,
) -> Puts {
    let body = pattern(size);
    let attempted: Arc<Vec<AtomicU64>> = Arc::new((0..concurrency).map(|_| AtomicU64::new(0)).collect());
    let counts = attempted.clone();
    let (ops, errors) = phase(client, port, concurrency, seconds, move |w, n| {
        counts[w].store(n, Ordering::Relaxed); // object n-1 is done when n starts
        ("PUT", format!("/{prefix}/{w}/{n}"), distinct(&body, w, n))
    })
    .await;
    Puts { ops, errors, attempted }
}
