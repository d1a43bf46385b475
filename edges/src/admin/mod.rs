//! The admin API: `/healthz`, `/readyz`, `/metrics` for machines, and the versioned `/v1/...`
//! JSON API (bearer token) that people, scripts and the console use.

mod audit;
pub(crate) mod auth;
mod buckets;
mod credentials;
mod error;
mod events;
mod keys;
mod members;
mod metrics;
mod modules;
mod requeue;
mod routes;
mod series;
pub(crate) mod session;
pub mod topics;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::extract::{Query, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::{Json, Router};
use serde::Serialize;
use serv_actors::{ActorKind, Directory, RecordKind};
use serv_cluster::membership::MemberView;
use serv_cluster::partition::{Partitions, Serving};
use serv_cluster::ring::Ring;
use serv_storage::Storage;
use tracing::Instrument;

pub use error::{ApiError, ErrorCode};

/// What the admin API shows about the node it runs on.
#[derive(Clone, Debug, Serialize)]
pub struct NodeInfo {
    /// The node's stable id.
    pub id: String,
    /// The `servd` version.
    pub version: String,
    /// Addresses of the listeners this node serves, by edge name.
    pub addresses: BTreeMap<String, String>,
}

/// Who may use the `/v1` API: the admin token, and console sessions signed with it.
#[derive(Clone)]
pub struct AdminAuth {
    /// The bearer token of the admin API: the cluster's, once this node has adopted it.
    pub credentials: crate::credentials::ClusterCredentials,
    /// The longest a console session lasts (`POST /v1/sessions`).
    pub session_ttl: Duration,
}

/// Everything the admin handlers read.
#[derive(Clone)]
pub struct AdminState {
    inner: Arc<Inner>,
}

struct Inner {
    node: NodeInfo,
    directory: Directory,
    storage: Storage,
    credentials: crate::credentials::ClusterCredentials,
    session_ttl: Duration,
    audit: Arc<audit::AuditLog>,
    /// This node's HTTP gateway, told when a route changes through this node.
    gateway: Option<crate::gateway::Gateway>,
    started: Instant,
    draining: AtomicBool,
    /// The cluster membership view, when the node runs the mesh.
    members: Option<tokio::sync::watch::Receiver<Vec<MemberView>>>,
    /// The node's partitions (their Raft groups), when it runs them.
    partitions: Option<Arc<Partitions>>,
    /// The members an operator removed, when the node runs the mesh.
    removed: Option<serv_cluster::removed::RemovedMembers>,
    /// This node's recent traffic, errors, memory and disk (`/v1/series`).
    series: Arc<series::Series>,
}

impl AdminState {
    /// State for a node whose admin endpoints require `auth`; `members` is the cluster view.
    pub fn new(
        node: NodeInfo,
        directory: Directory,
        storage: Storage,
        auth: AdminAuth,
        members: Option<tokio::sync::watch::Receiver<Vec<MemberView>>>,
        gateway: Option<crate::gateway::Gateway>,
        partitions: Option<Arc<Partitions>>,
        removed: Option<serv_cluster::removed::RemovedMembers>,
    ) -> Result<Self, serv_storage::StorageError> {
        keys::replicate(&directory, storage.access_keys().clone());
        credentials::replicate(&directory, auth.credentials.clone());
        if let Some(removed) = &removed {
            members::replicate(&directory, removed.clone());
        }
        // Other nodes' topic listings include the destinations this node owns.
        if let Ok(topics) = storage.table(serv_actors::topic::TOPICS) {
            crate::owned::share(&directory, topics);
        }
        modules::share(&directory, storage.clone());
        let audit = audit::AuditLog::open(storage.clone(), &directory, audit::MAX_AUDIT_ENTRIES)?;
        let series = series::Series::start(&directory, storage.clone());
        let inner = Inner {
            node,
            directory,
            storage,
            credentials: auth.credentials,
            session_ttl: auth.session_ttl,
            audit,
            gateway,
            started: Instant::now(),
            draining: AtomicBool::new(false),
            members,
            partitions,
            removed,
            series,
        };
        Ok(Self { inner: Arc::new(inner) })
    }

    /// Marks the node as draining: `/readyz` answers 503 from now on.
    pub fn set_draining(&self) {
        self.inner.draining.store(true, Ordering::Release);
    }

    fn uptime_ms(&self) -> u64 {
        u64::try_from(self.inner.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

/// The admin API router.
pub fn router(state: AdminState) -> Router {
    let v1 = Router::new()
        .route("/v1/node", get(node))
        .route("/v1/sessions", axum::routing::post(session::open))
        .route("/v1/actors", get(actors))
        .route("/v1/events", get(events::feed))
        .route("/v1/series", get(series::list))
        .route("/v1/actors/restart", axum::routing::post(audit::restart))
        .route("/v1/actors/passivate", axum::routing::post(audit::passivate))
        .route("/v1/audit", get(audit::list))
        .route("/v1/buckets", get(buckets::list))
        .route("/v1/dlq/requeue", axum::routing::post(requeue::requeue))
        .route("/v1/keys", get(keys::list).post(keys::create))
        .route("/v1/keys/{access_key}", delete(keys::revoke))
        .route("/v1/cluster/members", get(cluster_members))
        .route("/v1/cluster/rotate-admin-token", axum::routing::post(credentials::rotate_admin_token))
        .route("/v1/cluster/rotate-root-credentials", axum::routing::post(credentials::rotate_root_secret))
        .route("/v1/cluster/members/{id}", delete(members::remove))
        .route("/v1/cluster/ring", get(cluster_ring))
        .route("/v1/cluster/partitions", get(cluster_partitions))
        .route("/v1/cluster/ring/owner", get(ring_owner))
        .route("/v1/topics", get(topics::list))
        .route("/v1/routes", get(routes::list))
        .route("/v1/routes/{name}", get(routes::get).put(routes::put).delete(routes::delete))
        .route("/v1/routes/{name}/enable", axum::routing::post(routes::enable))
        .route("/v1/routes/{name}/disable", axum::routing::post(routes::disable))
        .route("/v1/modules", get(modules::list))
        .route("/v1/modules/{name}", get(modules::get).put(modules::put).delete(modules::delete))
        .route("/v1/modules/{name}/wasm", get(modules::wasm))
        .route("/v1/topics/{*name}", get(topics::get).put(topics::put).delete(topics::delete))
        .route_layer(middleware::from_fn_with_state(state.clone(), auth::require_token));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics::render))
        .merge(v1)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn(trace_request))
        .with_state(state)
}

/// Runs each request in a span that continues the caller's `traceparent`, if any.
async fn trace_request(request: Request, next: Next) -> Response {
    let span = tracing::info_span!("admin", method = %request.method(), path = %request.uri().path());
    let traceparent = request.headers().get("traceparent").and_then(|v| v.to_str().ok());
    serv_actors::trace::link_parent(&span, traceparent);
    next.run(request).instrument(span).await
}

async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

async fn readyz(State(state): State<AdminState>) -> Response {
    if state.inner.draining.load(Ordering::Acquire) {
        return ApiError::new(ErrorCode::NotReady, "the node is draining").into_response();
    }
    if let Some(failure) = state.inner.storage.failure() {
        return ApiError::new(ErrorCode::NotReady, format!("storage refuses writes: {failure}"))
            .into_response();
    }
    if !state.inner.directory.is_ready() {
        return ApiError::new(ErrorCode::NotReady, "supervisors are not up").into_response();
    }
    if state.inner.removed.as_ref().is_some_and(|removed| removed.contains(&state.inner.node.id)) {
        let message =
            "an operator removed this node from its cluster: start it on a new data dir to join again";
        return ApiError::new(ErrorCode::NotReady, message).into_response();
    }
    if !state.inner.directory.is_joined() {
        let message = "not joined: the node has not yet settled on its cluster's ring (check --seeds and SERV_CLUSTER_SECRET)";
        return ApiError::new(ErrorCode::NotReady, message).into_response();
    }
    if !state.inner.credentials.adopted() {
        let message =
            "joined, but the cluster's admin token and root credentials have not reached this node yet";
        return ApiError::new(ErrorCode::NotReady, message).into_response();
    }
    Json(serde_json::json!({ "status": "ready" })).into_response()
}

#[derive(Serialize)]
struct NodeView {
    #[serde(flatten)]
    info: NodeInfo,
    uptime_ms: u64,
    data_dir: String,
}

async fn node(State(state): State<AdminState>) -> Json<NodeView> {
    Json(NodeView {
        info: state.inner.node.clone(),
        uptime_ms: state.uptime_ms(),
        data_dir: state.inner.storage.dir().display().to_string(),
    })
}

/// `{"members": [...]}`: this node first, then every member it knows, with its state, version,
/// edge addresses and start time (as each node broadcast them; null until its broadcast
/// arrived), and its uptime while it is not down.
async fn cluster_members(State(state): State<AdminState>) -> Json<serde_json::Value> {
    Json(members_body(&state))
}

/// `{"count", "node", "partitions": [...]}`: every partition's replicas, leader, term, this
/// node's role and its log, applied and snapshot indexes, each replica's lag (where this node
/// leads) and whether it is under-replicated and why, as this node's groups see them.
async fn cluster_partitions(State(state): State<AdminState>) -> Json<serde_json::Value> {
    let Some(partitions) = &state.inner.partitions else {
        return Json(serde_json::json!({"count": 0, "node": state.inner.node.id, "partitions": []}));
    };
    Json(serde_json::json!({
        "count": partitions.count(),
        "node": state.inner.node.id,
        "partitions": partitions.status(),
    }))
}

/// The body of `/v1/cluster/members`.
fn members_body(state: &AdminState) -> serde_json::Value {
    let view = state.inner.members.as_ref().map(|members| members.borrow().clone()).unwrap_or_default();
    let now = serv_actors::now_ms();
    let members: Vec<_> = view
        .into_iter()
        .map(|member| {
            let meta = member.meta.as_ref();
            let address = |edge: &str| meta.and_then(|meta| meta.addresses.get(edge).cloned());
            // A node's boot is its start time (Unix ms), the stamp of its identity.
            let started_ms = meta.map(|meta| meta.boot);
            let up = member.state != serv_cluster::membership::MemberState::Down;
            let uptime_ms = started_ms.filter(|_| up).map(|started| now.saturating_sub(started));
            serde_json::json!({
                "id": member.id,
                "mesh_addr": member.addr.to_string(),
                "state": member.state,
                "incarnation": member.incarnation,
                "version": meta.map(|meta| meta.version.clone()),
                "s3_addr": address("s3"),
                "stomp_addr": address("stomp"),
                "http_addr": address("http"),
                "admin_addr": address("admin"),
                "started_ms": started_ms,
                "uptime_ms": uptime_ms,
            })
        })
        .collect();
    serde_json::json!({ "members": members })
}

/// The members this node sees down: cluster-wide listings cannot ask them, so they name them
/// (`unreachable`) rather than look complete without their rows.
fn down_members(state: &AdminState) -> Vec<String> {
    let view = state.inner.members.as_ref().map(|members| members.borrow().clone()).unwrap_or_default();
    view.into_iter()
        .filter(|member| member.state == serv_cluster::membership::MemberState::Down)
        .map(|member| member.id)
        .collect()
}

/// The ring that places entities, as this node sees the cluster (the directory uses the same).
fn live_ring(state: &AdminState) -> Ring {
    let view = state.inner.members.as_ref().map(|members| members.borrow().clone()).unwrap_or_default();
    serv_cluster::membership::placement_ring(&view)
}

/// `{"nodes": [{"id", "tokens": [...]}]}`: every live member's tokens on the ring.
async fn cluster_ring(State(state): State<AdminState>) -> Json<serde_json::Value> {
    let ring = live_ring(&state);
    let nodes: Vec<_> = ring
        .members()
        .iter()
        .map(|member| serde_json::json!({ "id": member.id, "tokens": ring.tokens_of(&member.id) }))
        .collect();
    // settled: false while this node is still taking entities over after the ring changed.
    Json(serde_json::json!({ "nodes": nodes, "settled": state.inner.directory.is_settled() }))
}

/// `{"key", "point", "partition", "leader", "preference_list": [...]}`: where `key` (an actor
/// key such as `bucket/photos`) lives: its point on the ring, its partition, the partition's
/// leader as this node knows it (the node that serves the entity; null during an election), and
/// the partition's replica set on the ring (`n` replicas, default 3).
async fn ring_owner(
    State(state): State<AdminState>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let key = params
        .get("key")
        .filter(|key| !key.is_empty())
        .ok_or_else(|| ApiError::new(ErrorCode::InvalidParameter, "give the key: ?key=bucket/NAME"))?;
    let n = match params.get("n") {
        Some(n) => n
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=16).contains(n))
            .ok_or_else(|| ApiError::new(ErrorCode::InvalidParameter, "n must be 1 to 16"))?,
        None => 3,
    };
    let ring = live_ring(&state);
    let Some(partitions) = &state.inner.partitions else {
        return Ok(Json(serde_json::json!({
            "key": key,
            "point": Ring::key_point(key.as_bytes()),
            "partition": null,
            "leader": null,
            "preference_list": ring.preference_list(key.as_bytes(), n),
        })));
    };
    let partition = partitions.partition_of(key);
    let leader = match partitions.serving(partition) {
        Serving::Here => Some(state.inner.node.id.clone()),
        Serving::Leader(id) => Some(serv_cluster::partition::node_name(id)),
        Serving::Unknown(_) | Serving::Elsewhere => None,
    };
    Ok(Json(serde_json::json!({
        "key": key,
        "point": Ring::key_point(key.as_bytes()),
        "partition": partition,
        "leader": leader,
        "preference_list": serv_cluster::partition::replica_set(&ring, partition, n),
    })))
}

async fn actors(
    State(state): State<AdminState>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let mut kind = None;
    let mut node = None;
    let mut absent = false;
    for (name, value) in &params {
        match name.as_str() {
            "kind" => kind = Some(parse_record_kind(value)?),
            "node" => node = Some(value.as_str()),
            "absent" => {
                absent = value.parse().map_err(|_| {
                    ApiError::new(
                        ErrorCode::InvalidParameter,
                        format!("absent is true or false, not {value:?}"),
                    )
                })?
            }
            other => {
                return Err(ApiError::new(
                    ErrorCode::InvalidParameter,
                    format!("unknown parameter {other:?}; /v1/actors takes kind, node and absent"),
                ));
            }
        }
    }
    Ok(Json(actors_body(&state, kind, node, absent).await))
}

/// The body of `/v1/actors`: every node's records, filtered by kind and node. The actors of
/// entities that do not exist (a deleted bucket's, until it passivates) are left out unless
/// `absent`: they are not entities an operator has, only names something asked for.
async fn actors_body(
    state: &AdminState,
    kind: Option<RecordKind>,
    node: Option<&str>,
    absent: bool,
) -> serde_json::Value {
    let actors: Vec<_> = state
        .inner
        .directory
        .cluster_records()
        .await
        .into_iter()
        .filter(|r| kind.is_none_or(|k| r.kind == k))
        .filter(|r| node.is_none_or(|n| r.node == n))
        .filter(|r| absent || !r.is_absent())
        .collect();
    serde_json::json!({ "actors": actors })
}

fn parse_record_kind(value: &str) -> Result<RecordKind, ApiError> {
    match value {
        "node" => Ok(RecordKind::Node),
        "supervisor" => Ok(RecordKind::Supervisor),
        other => ActorKind::parse(other).map(RecordKind::Entity).ok_or_else(|| {
            let kinds: Vec<_> = ActorKind::ALL.iter().map(|k| k.as_str()).collect();
            ApiError::new(
                ErrorCode::InvalidParameter,
                format!("unknown kind {other:?}; expected node, supervisor, {}", kinds.join(", ")),
            )
        }),
    }
}

async fn not_found(request: Request) -> ApiError {
    ApiError::new(ErrorCode::NotFound, format!("no such endpoint: {}", request.uri().path()))
}

async fn method_not_allowed(request: Request) -> ApiError {
    ApiError::new(
        ErrorCode::MethodNotAllowed,
        format!("{} is not allowed on {}", request.method(), request.uri().path()),
    )
}
