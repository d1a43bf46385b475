//! The S3 workload: workers PUT, GET, DELETE and list over a fixed key set in a few buckets,
//! through any node. A value is identified by the op that wrote it: its body starts with that op's
//! id and the rest is derived from the seed and the id, so a read names the write it saw and is
//! checked byte for byte.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::history::{OpKind, Outcome};
use crate::http::{Failure, Http, Response, short_hash};
use crate::rng::Rng;
use crate::worker::Worker;

/// The shape of the S3 workload.
#[derive(Clone, Debug)]
pub struct S3Config {
    pub seed: u64,
    pub buckets: Vec<String>,
    pub keys_per_bucket: usize,
    /// Largest body, in bytes (a few PUTs are this size, most are small).
    pub max_body_bytes: usize,
}

/// What a read found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Read {
    Absent,
    /// The value written by this op, with exactly its bytes.
    Value(u64),
    /// A body that is not any value the workload writes (or not its exact bytes).
    Corrupt(String),
}

impl Read {
    pub fn describe(&self) -> String {
        match self {
            Read::Absent => "absent".into(),
            Read::Value(id) => format!("value of op {id}"),
            Read::Corrupt(why) => format!("corrupt: {why}"),
        }
    }
}

/// The body a PUT by op `id` writes.
pub fn body(seed: u64, id: u64, size: usize) -> Vec<u8> {
    let header = format!("chaos-value op={id} size={size}\n");
    let mut out = vec![0; size.max(header.len())];
    out[..header.len()].copy_from_slice(header.as_bytes());
    Rng::new(seed, id).fill(&mut out[header.len()..]);
    out
}

/// Which value `bytes` is, checked against the body its op would have written.
pub fn identify(seed: u64, bytes: &[u8]) -> Read {
    let line = bytes.split(|b| *b == b'\n').next().unwrap_or_default();
    let text = String::from_utf8_lossy(line);
    let parsed = text.strip_prefix("chaos-value op=").and_then(|rest| {
        let (id, size) = rest.split_once(" size=")?;
        Some((id.parse::<u64>().ok()?, size.parse::<usize>().ok()?))
    });
    match parsed {
        None => Read::Corrupt(format!("{} bytes without a value header", bytes.len())),
        Some((id, size)) if bytes == body(seed, id, size).as_slice() => Read::Value(id),
        Some((id, size)) => {
            Read::Corrupt(format!("{} bytes claim to be op {id}'s {size} bytes but differ", bytes.len()))
        }
    }
}

pub fn object_path(bucket: &str, key: &str) -> String {
    format!("/{bucket}/{key}")
}

/// Key `n` of a bucket.
pub fn key_name(n: usize) -> String {
    format!("k{n:04}")
}

/// Creates the buckets through the first node that takes them (retrying while nodes start).
pub async fn setup(http: &Http, nodes: &[SocketAddr], config: &S3Config) -> Result<(), String> {
    for bucket in &config.buckets {
        let mut last = String::new();
        let created = 'tries: {
            for attempt in 0..100 {
                let addr = nodes[attempt % nodes.len()];
                match http.s3("PUT", addr, &format!("/{bucket}"), "", Bytes::new()).await {
                    Ok(Response { status: 200, .. }) => break 'tries true,
                    Ok(r) if String::from_utf8_lossy(&r.body).contains("BucketAlreadyOwnedByYou") => {
                        break 'tries true;
                    }
                    Ok(r) => last = format!("HTTP {}: {}", r.status, String::from_utf8_lossy(&r.body)),
                    Err(f) => last = f.error,
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            false
        };
        if !created {
            return Err(format!("cannot create bucket {bucket}: {last}"));
        }
    }
    Ok(())
}

/// One worker: random ops on random keys through random nodes until the run stops it.
pub async fn worker(mut worker: Worker, http: Http, nodes: Vec<SocketAddr>, config: Arc<S3Config>) {
    while worker.running() {
        let node = worker.pick(nodes.len());
        let addr = nodes[node];
        let bucket = &config.buckets[worker.pick(config.buckets.len())];
        let key = key_name(worker.pick(config.keys_per_bucket));
        let target = format!("{bucket}/{key}");
        let path = object_path(bucket, &key);
        let (history, name, rng) = (&worker.history, worker.name.as_str(), &mut worker.rng);
        let roll = rng.below(100);
        if roll < 50 {
            let size = match rng.below(100) {
                0..70 => rng.between(64, 4_096),
                70..95 => rng.between(4_096, 65_536),
                _ => rng.between(config.max_body_bytes as u64 / 2, config.max_body_bytes as u64),
            } as usize;
            let mut op = history.invoke(OpKind::S3Put, name, node, target);
            let id = op.id();
            op.set_value(id);
            let value = Bytes::from(body(config.seed, id, size));
            op.set_hash(format!("{} bytes sha256 {}", value.len(), short_hash(&value)));
            let result = http.s3("PUT", addr, &path, "", value).await;
            let (outcome, detail) = classify(&result, &[200]);
            op.finish(outcome, detail);
        } else if roll < 80 {
            let mut op = history.invoke(OpKind::S3Get, name, node, target);
            match http.s3("GET", addr, &path, "", Bytes::new()).await {
                Ok(Response { status: 200, body }) => match identify(config.seed, &body) {
                    Read::Value(id) => {
                        op.set_value(id);
                        op.finish(Outcome::Ok, "");
                    }
                    other => {
                        op.finish(Outcome::Ok, other.describe());
                    }
                },
                Ok(Response { status: 404, .. }) => {
                    op.finish(Outcome::Ok, "absent");
                }
                result => {
                    let (outcome, detail) = classify(&result, &[]);
                    op.finish(outcome, detail);
                }
            }
        } else if roll < 90 {
            let op = history.invoke(OpKind::S3Delete, name, node, target);
            let result = http.s3("DELETE", addr, &path, "", Bytes::new()).await;
            let (outcome, detail) = classify(&result, &[204, 200]);
            op.finish(outcome, detail);
        } else {
            let op = history.invoke(OpKind::S3List, name, node, bucket.clone());
            match http.s3("GET", addr, &format!("/{bucket}"), "list-type=2", Bytes::new()).await {
                Ok(Response { status: 200, body }) => {
                    let keys = listed_keys(&String::from_utf8_lossy(&body));
                    op.finish(Outcome::Ok, keys.join(" "));
                }
                result => {
                    let (outcome, detail) = classify(&result, &[]);
                    op.finish(outcome, detail);
                }
            }
        }
        worker.rest().await;
    }
}

/// The keys of a ListObjectsV2 answer.
pub fn listed_keys(xml: &str) -> Vec<String> {
    xml.split("<Key>")
        .skip(1)
        .filter_map(|part| part.split_once("</Key>").map(|(key, _)| key.to_string()))
        .collect()
}

/// An outcome from a response: `ok` statuses are acknowledged, other 4xx refused, the rest unknown.
fn classify(result: &Result<Response, Failure>, ok: &[u16]) -> (Outcome, String) {
    match result {
        Ok(response) if ok.contains(&response.status) => (Outcome::Ok, String::new()),
        Ok(response) => {
            let text = String::from_utf8_lossy(&response.body);
            let code = text.split("<Code>").nth(1).and_then(|rest| rest.split('<').next()).unwrap_or("");
            let outcome =
                if (400..500).contains(&response.status) { Outcome::Fail } else { Outcome::Unknown };
            (outcome, format!("HTTP {} {code}", response.status))
        }
        Err(failure) => (failure.outcome, failure.error.clone()),
    }
}

/// How long the one try of a final read made at (or past) the deadline may take.
const LAST_TRY: Duration = Duration::from_secs(1);

/// Reads `bucket/key` through the node at `addr` until it answers (a 503 while the cluster
/// settles is retried until `until`; at least one try is made). No request outlives the shared
/// deadline by more than [`LAST_TRY`]: a node that does not answer costs the run that deadline
/// once, not a request timeout per key.
pub async fn final_read(
    http: &Http,
    addr: SocketAddr,
    seed: u64,
    bucket: &str,
    key: &str,
    until: std::time::Instant,
) -> Result<Read, String> {
    loop {
        let budget = until.saturating_duration_since(std::time::Instant::now()).max(LAST_TRY);
        let path = object_path(bucket, key);
        let read = tokio::time::timeout(budget, http.s3("GET", addr, &path, "", Bytes::new()));
        let answer = read.await.unwrap_or_else(|_| {
            Err(Failure {
                outcome: Outcome::Unknown,
                error: "no answer before the final reads' deadline".to_string(),
            })
        });
        let last = match answer {
            Ok(Response { status: 200, body }) => return Ok(identify(seed, &body)),
            Ok(Response { status: 404, body }) if String::from_utf8_lossy(&body).contains("NoSuchKey") => {
                return Ok(Read::Absent);
            }
            Ok(response) => format!("HTTP {} {}", response.status, String::from_utf8_lossy(&response.body)),
            Err(failure) => failure.error,
        };
        if std::time::Instant::now() >= until {
            return Err(last);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_names_its_write_and_any_changed_byte_is_corrupt() {
        let value = body(7, 42, 5_000);
        assert_eq!(identify(7, &value), Read::Value(42));
        let mut changed = value.clone();
        changed[4_000] ^= 1;
        assert!(matches!(identify(7, &changed), Read::Corrupt(_)));
        assert!(matches!(identify(7, &value[..4_999]), Read::Corrupt(_)));
        assert!(matches!(identify(8, &value), Read::Corrupt(_)), "another seed's bytes differ");
        assert!(matches!(identify(7, b"hello"), Read::Corrupt(_)));
    }

    #[tokio::test]
    async fn a_node_that_never_answers_costs_the_final_reads_their_deadline_not_a_timeout_each() {
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = silent.local_addr().unwrap();
        let _held = tokio::spawn(async move {
            let mut open = Vec::new();
            while let Ok((stream, _)) = silent.accept().await {
                open.push(stream); // accepted, never answered
            }
        });
        let http = Http::new("AK", "SK", "token");
        let started = std::time::Instant::now();
        let until = started + Duration::from_millis(500);
        let keys: Vec<String> = (0..8).map(|i| format!("k{i}")).collect();
        let reads = keys.iter().map(|key| final_read(&http, addr, 1, "b", key, until));
        let answers = futures_util::future::join_all(reads).await;
        assert!(answers.iter().all(Result::is_err));
        let took = started.elapsed();
        assert!(took < Duration::from_secs(4), "8 reads of a silent node took {took:?}");
    }

    #[test]
    fn list_answers_give_their_keys() {
        let xml = "<ListBucketResult><Contents><Key>k0001</Key></Contents><Contents><Key>k0002</Key></Contents></ListBucketResult>";
        assert_eq!(listed_keys(xml), vec!["k0001", "k0002"]);
    }
}
