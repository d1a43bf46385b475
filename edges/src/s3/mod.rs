//! The S3 edge: `s3s` speaks the protocol (routing, XML, SigV4 and presigned URLs), and
//! [`ops::ServS3`] turns each operation into messages to bucket actors.
//!
//! Bodies stream: an upload is cut into content blocks written to the node's block store as it
//! arrives (MD5 and requested checksums computed on the way), and only then does the bucket actor
//! commit the object that references them; a download streams the blocks back. Memory per request
//! stays within about one block, and the number of bodies in flight is capped: past the cap a
//! client gets `503 SlowDown` instead of the node growing without bound.
//!
//! Browsers' CORS preflights (`OPTIONS`, which s3s does not route) are answered around s3s by
//! [`cors::Cors`], which also adds `Access-Control-*` headers to cross-origin answers.

mod auth;
mod body;
mod cors;
mod error;
pub(crate) mod metrics;
mod ops;
mod policy;

use std::sync::Arc;
use std::time::Duration;

use s3s::service::{S3Service, S3ServiceBuilder};
use serv_actors::Directory;
use serv_storage::Storage;

pub use auth::Keys;

use crate::http1::HttpLimits;

/// Named limits of the S3 edge.
#[derive(Clone, Debug)]
pub struct S3Limits {
    /// Largest object (and largest part) accepted, in bytes.
    pub max_object_size: u64,
    /// Smallest part of a multipart upload, except the last.
    pub min_part_size: u64,
    /// Most parts in one multipart upload.
    pub max_parts: u32,
    /// Longest object key, in bytes.
    pub max_key_bytes: usize,
    /// Most entries in one listing page.
    pub max_list_page: usize,
    /// Size of the content blocks bodies are cut into.
    pub block_size: usize,
    /// Most request bodies being written or read at once; past it, `SlowDown`.
    pub max_inflight_bodies: usize,
    /// Longest an XML request body may be.
    pub max_xml_body: usize,
}

impl Default for S3Limits {
    fn default() -> Self {
        Self {
            max_object_size: 5 * 1024 * 1024 * 1024,
            min_part_size: 5 * 1024 * 1024,
            max_parts: 10_000,
            max_key_bytes: 1024,
            max_list_page: 1000,
            block_size: 1024 * 1024,
            max_inflight_bodies: 256,
            max_xml_body: 4 * 1024 * 1024,
        }
    }
}

/// What the S3 edge is built from.
pub struct S3Settings {
    pub limits: S3Limits,
    /// Region reported by GetBucketLocation and expected in signatures.
    pub region: String,
    /// Base domain for virtual-host-style addressing (`bucket.DOMAIN`), if any.
    pub domain: Option<String>,
    /// Where the partition layer places a bucket's blocks (none: this node's store alone).
    pub blocks: Option<serv_cluster::partition::BlockPlacement>,
}

/// The S3 edge's HTTP service: s3s for the protocol, with CORS answered around it.
#[derive(Clone)]
pub struct S3Edge {
    s3: S3Service,
    cors: Arc<cors::Cors>,
}

/// Builds the S3 protocol service over the node's directory and storage.
pub fn service(
    directory: Directory,
    storage: Storage,
    keys: Keys,
    settings: S3Settings,
) -> Result<S3Edge, String> {
    if let Ok(table) = storage.table(serv_actors::bucket::BUCKETS) {
        crate::owned::share(&directory, table);
    }
    let hosts = settings.domain.as_deref().map(VirtualHosts::new).transpose()?;
    let cors = Arc::new(cors::Cors::new(directory.clone(), hosts.clone()));
    let s3 = ops::ServS3::new(
        directory,
        storage,
        keys.clone(),
        settings.limits.clone(),
        settings.region,
        settings.blocks,
    );
    let mut builder = S3ServiceBuilder::new(s3);
    let mut config = s3s::config::S3Config::default();
    config.xml_max_body_size = settings.limits.max_xml_body;
    builder.set_config(Arc::new(s3s::config::StaticConfigProvider::new(Arc::new(config))));
    builder.set_auth(keys.clone());
    builder.set_access(auth::Access);
    if let Some(hosts) = hosts {
        builder.set_host(hosts);
    }
    Ok(S3Edge { s3: builder.build(), cors })
}

/// Virtual-host-style addressing under one base domain: `BUCKET.DOMAIN[:port]` names a bucket,
/// any other host (`DOMAIN`, `localhost:9000`, an IP) means path style. (s3s's `SingleDomain`
/// keeps the port in the host and would read `bucket.domain:9000` as a bucket name.)
#[derive(Clone)]
struct VirtualHosts {
    domain: String,
}

impl VirtualHosts {
    fn new(domain: &str) -> Result<Self, String> {
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        let valid = !domain.is_empty()
            && domain.split('.').all(|label| {
                !label.is_empty() && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            });
        if !valid {
            return Err(format!("--s3-domain {domain:?} is not a domain name"));
        }
        Ok(Self { domain })
    }

    /// The bucket `host` names (`BUCKET.DOMAIN[:port]`), if it names one.
    fn bucket_of<'a>(&self, host: &'a str) -> Option<&'a str> {
        let name = match host.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
            _ => host,
        };
        name.len()
            .checked_sub(self.domain.len() + 1)
            .filter(|&at| name[at..].eq_ignore_ascii_case(&format!(".{}", self.domain)))
            .map(|at| &name[..at])
            .filter(|bucket| !bucket.is_empty())
    }
}

impl s3s::host::S3Host for VirtualHosts {
    fn parse_host_header<'a>(&'a self, host: &'a str) -> s3s::S3Result<s3s::host::VirtualHost<'a>> {
        let virtual_host = s3s::host::VirtualHost::new(self.domain.as_str());
        Ok(match self.bucket_of(host) {
            Some(bucket) => virtual_host.with_bucket(bucket),
            None => virtual_host,
        })
    }
}

/// Serves `service` on `listener` until `shutdown` resolves, then lets open requests finish.
pub async fn serve(
    listener: impl axum::serve::Listener<Addr = std::net::SocketAddr>,
    service: S3Edge,
    limits: HttpLimits,
    shutdown: impl std::future::Future<Output = ()> + Send,
) {
    let service = ExpectCloses(service);
    crate::http1::serve(listener, move |_| service.clone(), limits, shutdown).await
}

/// Answers CORS preflights and decorates cross-origin answers (see [`cors`]), counts each
/// request for `/metrics` (see [`metrics`]), stamps each answer with a request id (see
/// [`error::stamp_request_id`]), logs each refused (debug) or failed (info) answer in one line
/// with it, and closes the connection after answering a request that asked
/// `Expect: 100-continue` when the answer may have come before its body was read: an empty body,
/// or any answer but a success.
///
/// hyper sends `100 Continue` only when the body is read. botocore mishandles the two cases
/// where it never is:
/// - an empty body (boto/botocore#3755): its pooled connection keeps expecting an interim
///   response, and the client's next request on it stalls until its read timeout (60 s);
/// - an early final answer (an AccessDenied or NoSuchUpload before the body was wanted): botocore
///   keeps that answer's status line on the connection, and the next `Expect` request on it is
///   read with the old status and no headers: a bare `403 Forbidden` or `400` for a PUT that
///   succeeded. The e2e suite hit this about once in ten runs.
///
/// Closing the connection makes botocore reset it; the client pays a reconnect.
#[derive(Clone)]
struct ExpectCloses(S3Edge);

impl hyper::service::Service<hyper::Request<hyper::body::Incoming>> for ExpectCloses {
    type Response = s3s::HttpResponse;
    type Error = s3s::HttpError;
    type Future =
        std::pin::Pin<Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn call(&self, request: hyper::Request<hyper::body::Incoming>) -> Self::Future {
        use hyper::header::{CONNECTION, CONTENT_LENGTH, EXPECT, HeaderValue, ORIGIN};
        let cors = self.0.cors.clone();
        if request.method() == hyper::Method::OPTIONS {
            let (parts, _body) = request.into_parts();
            let answer = async move {
                Ok::<_, s3s::HttpError>(cors.preflight(&parts.headers, parts.uri.path()).await)
            };
            return Box::pin(metrics::measure(answer, |outcome| {
                outcome.as_ref().map_or(500, |r| r.status().as_u16())
            }));
        }
        let request_id = error::new_request_id();
        let headers = request.headers();
        let expect = headers.get(EXPECT).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
        let empty = headers.get(CONTENT_LENGTH).is_some_and(|v| v.as_bytes() == b"0");
        let (method, path) = (request.method().clone(), request.uri().path().to_string());
        // A cross-origin request: its answer gets the headers the bucket's CORS rules grant.
        let origin = headers.get(ORIGIN).and_then(|v| v.to_str().ok()).map(str::to_string);
        let cross_origin = origin.map(|origin| (origin, headers.clone()));
        let answer = hyper::service::Service::call(&self.0.s3, request);
        // An error here is one s3s could not turn into an answer: hyper drops the connection.
        let answer =
            metrics::measure(answer, |outcome| outcome.as_ref().map_or(500, |r| r.status().as_u16()));
        Box::pin(async move {
            let mut response = answer.await?;
            error::stamp_request_id(&mut response, &request_id);
            let status = response.status();
            if status.is_server_error() {
                tracing::info!(%method, %path, status = status.as_u16(), %request_id, "S3 request failed");
            } else if status.is_client_error() {
                tracing::debug!(%method, %path, status = status.as_u16(), %request_id, "S3 request refused");
            }
            if expect && (empty || !status.is_success()) {
                response.headers_mut().insert(CONNECTION, HeaderValue::from_static("close"));
            }
            if let Some((origin, headers)) = cross_origin {
                cors.decorate((&method, &headers, &path), &origin, &mut response).await;
            }
            Ok(response)
        })
    }
}

/// Collects unreferenced blocks: a full sweep now (a crash may have left orphans), then the
/// candidates every `every`.
pub fn spawn_block_collector(storage: Storage, every: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let sweep = tokio::task::spawn_blocking({
            let storage = storage.clone();
            move || storage.blocks().sweep()
        });
        match sweep.await {
            Ok(Ok(report)) if report.removed > 0 => {
                tracing::info!(
                    removed = report.removed,
                    bytes = report.bytes,
                    "start-up sweep removed orphan blocks"
                )
            }
            Ok(Ok(_)) => {}
            Ok(Err(error)) => tracing::error!(%error, "start-up block sweep failed"),
            Err(error) => tracing::error!(%error, "start-up block sweep panicked"),
        }
        let mut ticker = tokio::time::interval(every);
        loop {
            ticker.tick().await;
            let storage = storage.clone();
            match tokio::task::spawn_blocking(move || storage.blocks().collect_garbage()).await {
                Ok(Ok(report)) if report.removed > 0 => {
                    tracing::debug!(removed = report.removed, bytes = report.bytes, "collected blocks")
                }
                Ok(Ok(_)) => {}
                Ok(Err(error)) => tracing::error!(%error, "block collection failed"),
                Err(error) => tracing::error!(%error, "block collection panicked"),
            }
        }
    })
}
