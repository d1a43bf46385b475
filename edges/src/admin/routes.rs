//! `/v1/routes/NAME`: create, change, inspect, switch and delete gateway routes. Every change
//! goes to the route's actor, and is answered once this node's gateway serves it (the others
//! serve it within their refresh). The listing gives every route of the cluster with its counters summed
//! over every node's gateway, and each node's circuit state.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serv_actors::route::{ROUTES, RouteConfig, RouteMsg, RouteRecord, RouteRefusal, RouteReply};
use serv_actors::{ActorKey, ActorKind};

use super::{AdminState, ApiError, ErrorCode, audit};
use crate::gateway::stats::StatsView;

/// Longest route name.
pub const MAX_ROUTE_NAME: usize = 63;

fn checked_name(name: &str) -> Result<&str, ApiError> {
    serv_actors::key::plain_name("route name", name, MAX_ROUTE_NAME)
        .map_err(|e| ApiError::new(ErrorCode::InvalidParameter, e))
}

async fn ask(state: &AdminState, name: &str, msg: RouteMsg) -> Result<RouteReply, ApiError> {
    let name = checked_name(name)?;
    let changes = !matches!(msg, RouteMsg::Get);
    let reply = match state.inner.directory.call(&ActorKey::new(ActorKind::Route, name), msg).await {
        Ok(RouteReply::Refused(RouteRefusal::NoSuchRoute)) => {
            return Err(ApiError::new(ErrorCode::NotFound, format!("no route {name}")));
        }
        Ok(RouteReply::Refused(RouteRefusal::Invalid(reason))) => {
            return Err(ApiError::new(ErrorCode::InvalidParameter, reason));
        }
        Ok(reply) => reply,
        Err(error) => return Err(super::error::directory_failed(error)),
    };
    if changes && let Some(gateway) = &state.inner.gateway {
        gateway.refresh().await;
    }
    Ok(reply)
}

/// A route as the API shows it; `stats` only in the listing.
fn view(name: &str, record: &RouteRecord, stats: Option<serde_json::Value>) -> serde_json::Value {
    let mut view = serde_json::json!({
        "name": name,
        "enabled": record.enabled,
        "config": record.config,
        "created_ms": record.created_ms,
        "updated_ms": record.updated_ms,
    });
    // A route's secret is never shown, only which scheme it uses.
    if let Some(auth) = &record.config.auth {
        view["config"]["auth"] = serde_json::json!(auth.scheme());
    }
    if let Some(stats) = stats {
        view["stats"] = stats;
    }
    view
}

fn route(name: &str, reply: RouteReply) -> Result<Json<serde_json::Value>, ApiError> {
    match reply {
        RouteReply::Route(record) => Ok(Json(view(name, &record, None))),
        other => Err(ApiError::new(ErrorCode::Internal, format!("unexpected answer {other:?}"))),
    }
}

/// PUT: creates the route (enabled) or replaces its config; the body is the whole config, fields
/// left out taking their defaults.
pub(super) async fn put(
    State(state): State<AdminState>,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    let config: RouteConfig = super::error::json_body(&body, "a JSON route config")?;
    if let Some(module) = &config.middleware {
        let hooks = [serv_wasm_host::Hook::Request, serv_wasm_host::Hook::Response];
        super::modules::check_hook(&state, module, &hooks, "route middleware").await?;
    }
    let put = ask(&state, &name, RouteMsg::Put(Box::new(config))).await;
    route(&name, audit::recorded(&state, "put", &format!("route/{name}"), put).await?)
}

pub(super) async fn get(
    State(state): State<AdminState>,
    Path(name): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    route(&name, ask(&state, &name, RouteMsg::Get).await?)
}

pub(super) async fn delete(
    State(state): State<AdminState>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    let deleted = ask(&state, &name, RouteMsg::Delete).await;
    audit::recorded(&state, "delete", &format!("route/{name}"), deleted).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v1/routes/NAME/enable`: the route takes requests again; audited.
pub(super) async fn enable(
    state: State<AdminState>,
    name: Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    switch(state, name, true).await
}

/// `POST /v1/routes/NAME/disable`: the route answers 503 `RouteDisabled` without reaching its
/// upstreams; audited.
pub(super) async fn disable(
    state: State<AdminState>,
    name: Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    switch(state, name, false).await
}

async fn switch(
    State(state): State<AdminState>,
    Path(name): Path<String>,
    enabled: bool,
) -> Result<Json<serde_json::Value>, ApiError> {
    checked_name(&name)?;
    let result = ask(&state, &name, RouteMsg::SetEnabled(enabled)).await;
    let action = if enabled { "enable" } else { "disable" };
    route(&name, audit::recorded(&state, action, &format!("route/{name}"), result).await?)
}

/// Counters of one route summed over nodes, with each node's circuit state.
#[derive(Default)]
struct Totals {
    sum: StatsView,
    breakers: BTreeMap<String, String>,
}

impl Totals {
    fn add(&mut self, node: &str, stats: &StatsView) {
        let sum = &mut self.sum;
        sum.requests += stats.requests;
        sum.status_2xx += stats.status_2xx;
        sum.status_3xx += stats.status_3xx;
        sum.status_4xx += stats.status_4xx;
        sum.status_5xx += stats.status_5xx;
        sum.refused += stats.refused;
        sum.upstream_failures += stats.upstream_failures;
        self.breakers.insert(node.to_string(), stats.breaker.clone());
    }

    fn json(&self) -> serde_json::Value {
        let mut json = serde_json::to_value(&self.sum).unwrap_or_default();
        json["breaker"] = serde_json::json!(self.breakers);
        json
    }
}

/// `{"routes": [...], "unreachable": [...]}`: every route of the cluster with its counters
/// summed over every node that answered (`unreachable` names those down or that did not).
pub(super) async fn list(State(state): State<AdminState>) -> Result<Json<serde_json::Value>, ApiError> {
    let table =
        state.inner.storage.table(ROUTES).map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))?;
    let rows = crate::owned::everywhere(&state.inner.directory, &table)
        .await
        .map_err(|reason| ApiError::new(ErrorCode::Unavailable, reason))?;
    let mut totals: BTreeMap<String, Totals> = BTreeMap::new();
    // Down members are not asked: their routes and counters are missing.
    let mut unreachable = super::down_members(&state);
    if let Some(gateway) = &state.inner.gateway {
        let mine = (state.inner.node.id.clone(), Ok(gateway.stats()));
        for (node, answer) in std::iter::once(mine).chain(gateway.peer_stats().await) {
            match answer {
                Ok(stats) => {
                    for (route, stats) in stats {
                        totals.entry(route).or_default().add(&node, &stats);
                    }
                }
                Err(_) => unreachable.push(node),
            }
        }
    }
    let routes: Vec<_> = rows
        .iter()
        .map(|(name, record)| view(name, record, Some(totals.remove(name).unwrap_or_default().json())))
        .collect();
    Ok(Json(serde_json::json!({ "routes": routes, "unreachable": unreachable })))
}
