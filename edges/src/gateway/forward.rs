//! Sending a request to a route's upstreams: the upstream request is built from the client's
//! (hop-by-hop headers dropped, `X-Forwarded-*` added, the trace carried), and each attempt is
//! bounded by the route's timeout and guarded by its circuit. An attempt that could not reach the
//! upstream is always retried on the next one; after a timeout or a 502/503/504, only an
//! idempotent request is, since the upstream may have acted on it.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;

use super::table::Entry;

pub type UpstreamClient = Client<HttpConnector, Full<Bytes>>;

/// Base of the exponential pause between attempts.
const RETRY_BACKOFF: Duration = Duration::from_millis(25);

/// Headers that belong to one connection, never forwarded (RFC 9110 §7.6.1); the body's framing
/// is redone by each side, so `transfer-encoding` goes too.
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// How forwarding ended when it produced no upstream response.
#[derive(Debug)]
pub enum Failure {
    /// No attempt was allowed: the circuit is open for this long.
    CircuitOpen(Duration),
    /// The last attempt timed out.
    Timeout,
    /// The last attempt could not reach an upstream (the text says why).
    Unreachable(String),
}

/// What the client sent, kept whole so that a retry can send it again.
pub struct Outgoing {
    pub method: Method,
    /// Path and query as the upstream gets them (after prefix stripping).
    pub path_and_query: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub client: SocketAddr,
    /// The `Host` the client named, for `X-Forwarded-Host`.
    pub host: Option<String>,
    /// How the client reached the gateway, for `X-Forwarded-Proto`.
    pub scheme: super::Scheme,
}

fn idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

/// Drops the hop-by-hop headers, and those the `Connection` header names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

fn request_for(upstream: &str, outgoing: &Outgoing) -> Result<Request<Full<Bytes>>, String> {
    let base = upstream.trim_end_matches('/');
    let uri: Uri = format!("{base}{}", outgoing.path_and_query).parse().map_err(|e| format!("{e}"))?;
    let mut headers = outgoing.headers.clone();
    strip_hop_by_hop(&mut headers);
    headers.remove(header::HOST);
    headers.remove(header::CONTENT_LENGTH);
    let forwarded_for = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(earlier) => format!("{earlier}, {}", outgoing.client.ip()),
        None => outgoing.client.ip().to_string(),
    };
    let mut set = |name: &'static str, value: &str| {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(name, value);
        }
    };
    set("x-forwarded-for", &forwarded_for);
    set("x-forwarded-proto", outgoing.scheme.as_str());
    if let Some(host) = &outgoing.host {
        set("x-forwarded-host", host);
    }
    if !outgoing.headers.contains_key("traceparent")
        && let Some(traceparent) = serv_actors::trace::current_traceparent()
    {
        set("traceparent", &traceparent);
    }
    let mut request = Request::builder()
        .method(outgoing.method.clone())
        .uri(uri)
        .body(Full::new(outgoing.body.clone()))
        .map_err(|e| e.to_string())?;
    *request.headers_mut() = headers;
    Ok(request)
}

/// Sends `outgoing` to `entry`'s upstreams, retrying as the route allows; the first usable
/// response (or the last one, when every attempt got a retryable 5xx), or why there is none.
pub async fn forward(
    client: &UpstreamClient,
    entry: &Entry,
    outgoing: &Outgoing,
) -> Result<Response<Incoming>, Failure> {
    let config = &entry.record.config;
    let timeout = Duration::from_millis(config.timeout_ms);
    let attempts = 1 + config.retries;
    let mut last = Failure::Unreachable("no attempt was made".into());
    let idempotent = idempotent(&outgoing.method);
    if config.upstreams.is_empty() {
        return Err(Failure::Unreachable("the route has no upstream".into()));
    }
    for attempt in 0..attempts {
        if attempt > 0 {
            tokio::time::sleep(RETRY_BACKOFF * 2u32.saturating_pow(attempt - 1).min(64)).await;
        }
        if let Err(wait) = entry.breaker.allow() {
            return Err(match attempt {
                0 => Failure::CircuitOpen(wait),
                _ => last,
            });
        }
        let position = entry.next_upstream.fetch_add(1, Ordering::Relaxed);
        let upstream = &config.upstreams[position % config.upstreams.len()];
        let request = request_for(upstream, outgoing).map_err(Failure::Unreachable)?;
        let result = tokio::time::timeout(timeout, client.request(request)).await;
        let succeeded = matches!(&result, Ok(Ok(response)) if !response.status().is_server_error());
        entry.breaker.record(succeeded);
        if !succeeded {
            entry.stats.upstream_failed();
        }
        let more = attempt + 1 < attempts;
        match result {
            Ok(Ok(response)) => {
                let retryable = matches!(
                    response.status(),
                    StatusCode::BAD_GATEWAY | StatusCode::SERVICE_UNAVAILABLE | StatusCode::GATEWAY_TIMEOUT
                );
                if succeeded || !(retryable && idempotent && more) {
                    return Ok(response);
                }
            }
            Ok(Err(error)) => {
                // Not sent: the next upstream may take it, whatever the method.
                let retry = more && (idempotent || error.is_connect());
                last = Failure::Unreachable(format!("{upstream}: {error}"));
                if !retry {
                    return Err(last);
                }
            }
            Err(_elapsed) => {
                last = Failure::Timeout;
                if !(more && idempotent) {
                    return Err(last);
                }
            }
        }
    }
    Err(last)
}
