//! The HTTP gateway: routes requests to upstream services. Every route is an entity (its config
//! and on/off switch live with the route actor on its owner node); every node's gateway serves
//! from a snapshot of all routes ([`table`]) and guards each route on its own:
//!
//! 1. match: the most specific route for the `Host` and path (404 `NoRoute`), its methods (405),
//!    its switch (503 `RouteDisabled`);
//! 2. the route's `auth`, if it has one ([`auth`]): a bearer token here, a signature of the
//!    body once it is read (401);
//! 3. rate limit per route and node ([`governor`], 429 `RateLimited` with `Retry-After`);
//! 4. the route's WASM middleware, if it has one ([`middleware`]): it sees the request head and
//!    lets it through, rewritten or not, or refuses it with its own status (and later sees the
//!    upstream's answer the same way);
//! 5. the body, up to the route's `max_body_bytes` (413 `BodyTooLarge`), kept for retries;
//! 6. forward ([`forward`]) with a per-attempt timeout, retries and a circuit breaker
//!    ([`breaker`]); no answer gives 502 `UpstreamUnreachable`, 504 `UpstreamTimeout` or
//!    503 `CircuitOpen`. A route with a `topic` instead publishes the body there (a webhook
//!    bridge) and answers 202 once it is durable.
//!
//! The gateway's own errors are the admin API's JSON errors (`{"error", "code", "trace_id"}`);
//! every answer names its route in `x-serv-route`. Counters per route are in [`stats`].

mod auth;
mod breaker;
mod forward;
mod middleware;
pub mod stats;
mod table;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use axum::body::Body;
use axum::response::IntoResponse;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serv_actors::Directory;
use serv_actors::route::{ROUTES, RouteRecord};
use serv_actors::topic::LogRecord;
use serv_storage::{Storage, StorageError, Table};
use tracing::Instrument;

use crate::admin::{ApiError, ErrorCode};
use crate::http1::HttpLimits;
use crate::publish::PublishError;
use forward::{Failure, Outgoing, UpstreamClient};
use stats::{RouteStats, StatsView};
use table::{Entry, RouteTable};

/// The mesh query that asks a node for its gateway's counters.
const STATS_QUERY: &str = "gateway/stats";
/// Longest an upstream connection may take to open (an attempt's timeout may cut it shorter).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How the gateway runs.
#[derive(Clone, Copy, Debug)]
pub struct GatewaySettings {
    /// How often the route table is fetched again from every node.
    pub refresh: Duration,
    /// Most requests whose bodies are held at once (each up to its route's `max_body_bytes`,
    /// kept until forwarding ends so that a retry can resend it); past it, 503 `Overloaded`.
    pub max_inflight_bodies: usize,
}

/// A node's gateway: cheap to clone, shared by its connections and the admin API.
#[derive(Clone)]
pub struct Gateway {
    inner: Arc<Inner>,
}

struct Inner {
    directory: Directory,
    routes: Table<String, RouteRecord>,
    table: RwLock<Arc<RouteTable>>,
    stats: Mutex<HashMap<String, Arc<RouteStats>>>,
    client: UpstreamClient,
    /// Held while the table is fetched, so that a fetch begun before a change cannot replace
    /// the table fetched after it.
    refreshing: tokio::sync::Mutex<()>,
    /// One permit per request body held (see `GatewaySettings::max_inflight_bodies`).
    bodies: Arc<tokio::sync::Semaphore>,
    settings: GatewaySettings,
}

impl Gateway {
    /// A gateway over the routes of the cluster; other nodes may now list this node's routes
    /// and counters.
    pub fn new(
        directory: Directory,
        storage: &Storage,
        settings: GatewaySettings,
    ) -> Result<Self, StorageError> {
        let routes = storage.table(ROUTES)?;
        crate::owned::share(&directory, routes.clone());
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        let client = Client::builder(TokioExecutor::new()).build(connector);
        let inner = Inner {
            directory,
            routes,
            table: RwLock::new(Arc::new(RouteTable::default())),
            stats: Mutex::new(HashMap::new()),
            client,
            refreshing: tokio::sync::Mutex::new(()),
            bodies: Arc::new(tokio::sync::Semaphore::new(settings.max_inflight_bodies)),
            settings,
        };
        let gateway = Self { inner: Arc::new(inner) };
        let shared = gateway.clone();
        crate::owned::answer(&gateway.inner.directory, STATS_QUERY, move |_| Ok(shared.stats()));
        Ok(gateway)
    }

    /// Keeps the route table fresh: fetched again every `refresh`.
    pub fn spawn_refresh(&self) -> tokio::task::JoinHandle<()> {
        let gateway = self.clone();
        tokio::spawn(async move {
            loop {
                gateway.refresh().await;
                tokio::time::sleep(gateway.inner.settings.refresh).await;
            }
        })
    }

    /// Fetches every node's routes; a node that does not answer (or, being down, is not asked)
    /// keeps its routes as last seen. Called after a change made through this node, it returns
    /// once this node serves it.
    pub async fn refresh(&self) {
        let _one_at_a_time = self.inner.refreshing.lock().await;
        let previous = self.snapshot();
        let mut rows = Vec::new();
        let mut answered = std::collections::HashSet::new();
        for (node, answer) in crate::owned::by_node(&self.inner.directory, &self.inner.routes).await {
            match answer {
                Ok(theirs) => {
                    rows.extend(theirs.into_iter().map(|(name, record)| (node.clone(), name, record)));
                    answered.insert(node);
                }
                Err(reason) => {
                    tracing::debug!(%node, %reason, "keeping the routes last seen from a node that did not answer")
                }
            }
        }
        let kept = previous.entries().iter().filter(|e| !answered.contains(&e.node));
        rows.extend(kept.map(|e| (e.node.clone(), e.name.clone(), e.record.clone())));
        // A route that moved between nodes is listed by both while it moves: keep one.
        rows.sort_by(|a, b| a.1.cmp(&b.1).then(b.2.updated_ms.cmp(&a.2.updated_ms)));
        rows.dedup_by(|a, b| a.1 == b.1);
        let table = RouteTable::build(rows, &previous, &self.inner.stats);
        *self.inner.table.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(table);
    }

    fn snapshot(&self) -> Arc<RouteTable> {
        self.inner.table.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// This node's counters of every route it knows, with its circuit's state.
    pub fn stats(&self) -> Vec<(String, StatsView)> {
        let table = self.snapshot();
        table.entries().iter().map(|e| (e.name.clone(), e.stats.view(e.breaker.state().as_str()))).collect()
    }

    /// Every other node's counters, or why a node has none to give.
    pub async fn peer_stats(&self) -> Vec<(String, Result<Vec<(String, StatsView)>, String>)> {
        crate::owned::ask_peers(&self.inner.directory, STATS_QUERY, Vec::new()).await
    }

    /// Answers one client request.
    pub async fn handle(&self, request: Request<Incoming>, client: SocketAddr) -> Response<Body> {
        let span = tracing::info_span!("gateway", method = %request.method(), path = %request.uri().path());
        let traceparent = request.headers().get("traceparent").and_then(|v| v.to_str().ok());
        serv_actors::trace::link_parent(&span, traceparent);
        self.route(request, client).instrument(span).await
    }

    async fn route(&self, request: Request<Incoming>, client: SocketAddr) -> Response<Body> {
        let host = request_host(&request);
        let path = request.uri().path().to_string();
        let table = self.snapshot();
        let Some(entry) = table.find(host.as_deref(), &path) else {
            let shown = host.as_deref().unwrap_or("");
            return ApiError::new(ErrorCode::NoRoute, format!("no route takes {shown}{path}"))
                .into_response();
        };
        let mut response = match self.guarded(entry, request, client).await {
            Ok(response) => response,
            Err(refusal) => {
                entry.stats.refused();
                refusal
            }
        };
        entry.stats.answered(response.status().as_u16());
        if let Ok(name) = HeaderValue::from_str(&entry.name) {
            response.headers_mut().insert("x-serv-route", name);
        }
        response
    }

    /// Applies the route's switch, methods, rate limit and body limit, then forwards; `Err` is
    /// the gateway's own refusal (counted apart from what upstreams answered).
    async fn guarded(
        &self,
        entry: &Entry,
        request: Request<Incoming>,
        client: SocketAddr,
    ) -> Result<Response<Body>, Response<Body>> {
        let config = &entry.record.config;
        if !entry.allows(request.method()) {
            let mut response = ApiError::new(
                ErrorCode::MethodNotAllowed,
                format!("route {} takes {}, not {}", entry.name, config.methods.join(", "), request.method()),
            )
            .into_response();
            if let Ok(allow) = HeaderValue::from_str(&config.methods.join(", ")) {
                response.headers_mut().insert(header::ALLOW, allow);
            }
            return Err(response);
        }
        if !entry.record.enabled {
            return Err(ApiError::new(ErrorCode::RouteDisabled, format!("route {} is disabled", entry.name))
                .into_response());
        }
        auth::check_head(config.auth.as_ref(), &entry.name, request.headers())?;
        if crate::memory::refuses(crate::memory::Edge::Gateway) {
            let refusal = ApiError::new(ErrorCode::Overloaded, crate::memory::refusal("--max-memory-bytes"));
            return Err(with_retry_after(refusal.into_response(), Duration::from_secs(1)));
        }
        if let Some(limiter) = &entry.limiter
            && let Err(not_until) = limiter.check()
        {
            let wait = not_until
                .wait_time_from(governor::clock::Clock::now(&governor::clock::DefaultClock::default()));
            let message =
                format!("route {} allows {} requests/s", entry.name, config.rate_limit_per_s.unwrap_or(0));
            return Err(with_retry_after(
                ApiError::new(ErrorCode::RateLimited, message).into_response(),
                wait,
            ));
        }
        let (mut parts, body) = request.into_parts();
        if let Some(module) = &config.middleware {
            middleware::request(&self.inner.directory, &entry.name, module, &mut parts).await?;
        }
        // A request with a body holds a permit until it is answered: memory stays bounded.
        let has_body = parts.headers.contains_key(header::TRANSFER_ENCODING)
            || parts.headers.get(header::CONTENT_LENGTH).is_some_and(|v| v.as_bytes() != b"0");
        let _permit = match has_body {
            false => None,
            true => match self.inner.bodies.clone().try_acquire_owned() {
                Ok(permit) => Some(permit),
                Err(_) => {
                    let message = format!(
                        "the gateway holds {} request bodies already (--http-max-inflight-bodies); retry shortly",
                        self.inner.settings.max_inflight_bodies
                    );
                    let refusal = ApiError::new(ErrorCode::Overloaded, message).into_response();
                    return Err(with_retry_after(refusal, Duration::from_secs(1)));
                }
            },
        };
        let too_large = || {
            ApiError::new(
                ErrorCode::BodyTooLarge,
                format!("route {} takes bodies up to {} bytes", entry.name, config.max_body_bytes),
            )
            .into_response()
        };
        let declared =
            parts.headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|length| length > config.max_body_bytes) {
            return Err(too_large());
        }
        let limit = usize::try_from(config.max_body_bytes).unwrap_or(usize::MAX);
        let body = match Limited::new(body, limit).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(error) if error.is::<http_body_util::LengthLimitError>() => return Err(too_large()),
            Err(error) => {
                let message = format!("the request body could not be read: {error}");
                return Ok(ApiError::new(ErrorCode::InvalidParameter, message).into_response());
            }
        };
        auth::check_body(config.auth.as_ref(), &entry.name, &parts.headers, &body)?;
        if let Some(topic) = &config.topic {
            return Ok(self.publish(entry, topic, &parts, body).await);
        }
        let path = parts.uri.path();
        // The route matched at a segment boundary, so what follows its prefix is a path (or
        // nothing, or the rest of a segment after a prefix ending in '/').
        // (A middleware may have rewritten the path: then there may be no prefix to strip.)
        let strip = config.strip_prefix && path.starts_with(&config.path_prefix);
        let forwarded_path = match path.get(config.path_prefix.len()..).filter(|_| strip) {
            None => path.to_string(),
            Some(rest) if rest.starts_with('/') => rest.to_string(),
            Some(rest) => format!("/{rest}"),
        };
        let path_and_query = match parts.uri.query() {
            Some(query) => format!("{forwarded_path}?{query}"),
            None => forwarded_path,
        };
        // X-Forwarded-Host carries the Host header as the client sent it, port included.
        let host = parts.headers.get(header::HOST).and_then(|v| v.to_str().ok()).map(str::to_string);
        let scheme = parts.extensions.get::<Scheme>().copied().unwrap_or(Scheme::Http);
        let outgoing = Outgoing {
            method: parts.method,
            path_and_query,
            headers: parts.headers,
            body,
            client,
            host,
            scheme,
        };
        match forward::forward(&self.inner.client, entry, &outgoing).await {
            Ok(response) => {
                let (mut parts, body) = response.into_parts();
                forward::strip_hop_by_hop(&mut parts.headers);
                if let Some(module) = &config.middleware {
                    middleware::response(&self.inner.directory, &entry.name, module, &mut parts).await?;
                }
                Ok(Response::from_parts(parts, Body::new(body)))
            }
            Err(Failure::CircuitOpen(wait)) => {
                let message = format!("route {}'s upstreams keep failing; the circuit is open", entry.name);
                Err(with_retry_after(ApiError::new(ErrorCode::CircuitOpen, message).into_response(), wait))
            }
            Err(Failure::Timeout) => {
                let message =
                    format!("route {}'s upstream did not answer within {} ms", entry.name, config.timeout_ms);
                Ok(ApiError::new(ErrorCode::UpstreamTimeout, message).into_response())
            }
            Err(Failure::Unreachable(reason)) => {
                let message = format!("route {}'s upstreams could not be reached: {reason}", entry.name);
                Ok(ApiError::new(ErrorCode::UpstreamUnreachable, message).into_response())
            }
        }
    }
}

impl Gateway {
    /// A webhook: publishes the request's body to the route's topic, answered 202 `{"topic",
    /// "offset", "duplicate"}` once durable. The message carries the request's method, path,
    /// content type and trace; an `Idempotency-Key` header is its dedup id, so a retried webhook
    /// is stored once.
    async fn publish(
        &self,
        entry: &Entry,
        topic: &str,
        parts: &hyper::http::request::Parts,
        body: bytes::Bytes,
    ) -> Response<Body> {
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let mut headers = vec![
            ("http-method".to_string(), parts.method.to_string()),
            ("http-path".to_string(), path.to_string()),
            ("x-serv-route".to_string(), entry.name.clone()),
        ];
        let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
        for name in ["content-type", "traceparent"] {
            if let Some(value) = header(name) {
                headers.push((name.to_string(), value));
            }
        }
        let dedup_id = header("idempotency-key");
        if let Some(id) = &dedup_id {
            headers.push((serv_actors::topic::DEDUP_HEADER.to_string(), id.clone()));
        }
        let record = LogRecord {
            headers,
            body: body.to_vec(),
            published_ms: serv_actors::now_ms(),
            deliver_at_ms: None,
        };
        match crate::publish::append(&self.inner.directory, topic, vec![(record, dedup_id)], || Ok(())).await
        {
            Ok(answers) => {
                let Some(appended) = answers.into_iter().next() else {
                    return ApiError::new(ErrorCode::Internal, "the topic answered nothing").into_response();
                };
                let answer = match appended.dead_letter {
                    None => serde_json::json!({
                        "topic": topic, "offset": appended.offset, "duplicate": appended.duplicate,
                        "dead_letter": null,
                    }),
                    Some(dead) => serde_json::json!({
                        "topic": topic, "offset": null, "duplicate": appended.duplicate,
                        "dead_letter": { "topic": dead.topic, "offset": appended.offset, "reason": dead.reason },
                    }),
                };
                (hyper::StatusCode::ACCEPTED, axum::Json(answer)).into_response()
            }
            Err(error @ PublishError::Unreachable(_)) => {
                let message =
                    format!("route {}'s topic {topic} cannot take messages now: {error}", entry.name);
                ApiError::new(ErrorCode::Unavailable, message).into_response()
            }
            Err(PublishError::Full { limit, .. }) => {
                ApiError::new(ErrorCode::DestinationFull, crate::publish::full_detail(topic, &limit))
                    .into_response()
            }
            Err(error) => {
                ApiError::new(ErrorCode::Internal, format!("route {}'s topic {topic}: {error}", entry.name))
                    .into_response()
            }
        }
    }
}

/// The host a request names (its `Host` header, else its URI's), lowercase and without port.
fn request_host<B>(request: &Request<B>) -> Option<String> {
    let raw =
        request.headers().get(header::HOST).and_then(|v| v.to_str().ok()).or_else(|| request.uri().host())?;
    let host = match raw.strip_prefix('[') {
        Some(literal) => literal.split_once(']').map_or(literal, |(address, _)| address),
        None => raw
            .rsplit_once(':')
            .filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit()))
            .map_or(raw, |(h, _)| h),
    };
    Some(host.trim_end_matches('.').to_ascii_lowercase())
}

fn with_retry_after(mut response: Response<Body>, wait: Duration) -> Response<Body> {
    let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
    response
}

/// How a client reached the gateway: what upstreams get in `X-Forwarded-Proto`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

/// Serves `gateway` on `listener`, whose clients come in over `scheme`, until `shutdown`
/// resolves, then lets open requests finish.
pub async fn serve(
    listener: impl axum::serve::Listener<Addr = SocketAddr>,
    scheme: Scheme,
    gateway: Gateway,
    limits: HttpLimits,
    shutdown: impl std::future::Future<Output = ()> + Send,
) {
    let make = move |client: SocketAddr| {
        let gateway = gateway.clone();
        hyper::service::service_fn(move |mut request: Request<Incoming>| {
            request.extensions_mut().insert(scheme);
            let gateway = gateway.clone();
            async move { Ok::<_, std::convert::Infallible>(gateway.handle(request, client).await) }
        })
    };
    crate::http1::serve(listener, make, limits, shutdown).await
}
