//! `/v1/modules/NAME`: upload (PUT a WASM binary or WAT text), inspect, download and delete WASM
//! modules. An upload is compiled and checked against the ABI on the node that takes it, so a bad
//! module is refused before it is stored. The listing says where each module is attached (topic
//! transforms, route middleware) and sums its calls over every node.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use http_body_util::BodyExt;
use serde::{Deserialize, Serialize};
use serv_actors::module::{
    MODULES, ModuleHead, ModuleMsg, ModuleReply, ModuleRuntime, ModuleStats, module_name,
};
use serv_actors::{ActorKey, ActorKind, Directory};
use serv_storage::Storage;
use serv_wasm_host::{Hook, WasmError};

use super::{AdminState, ApiError, ErrorCode, audit};

/// The directory query each node answers with its modules and their calls there.
const MODULES_QUERY: &str = "modules/list";

/// One node's part of the listing: the modules it owns, and every module's calls on it.
#[derive(Serialize, Deserialize, Default)]
struct NodeModules {
    heads: Vec<ModuleHead>,
    stats: BTreeMap<String, ModuleStats>,
}

fn local(storage: &Storage, runtime: Option<&Arc<ModuleRuntime>>) -> Result<NodeModules, String> {
    let table = storage.table(MODULES).map_err(|e| e.to_string())?;
    let heads = table
        .entries()
        .map(|row| row.map(|(name, record)| record.head(&name)).map_err(|e| e.to_string()))
        .collect::<Result<_, _>>()?;
    Ok(NodeModules { heads, stats: runtime.map(|r| r.stats()).unwrap_or_default() })
}

/// Answers other nodes' module listings with this node's part.
pub(super) fn share(directory: &Directory, storage: Storage) {
    let runtime = directory.modules().cloned();
    crate::owned::answer(directory, MODULES_QUERY, move |_| local(&storage, runtime.as_ref()));
}

fn runtime(state: &AdminState) -> Result<&Arc<ModuleRuntime>, ApiError> {
    state
        .inner
        .directory
        .modules()
        .ok_or_else(|| ApiError::new(ErrorCode::Unavailable, "this node runs no WASM modules"))
}

fn checked_name(name: &str) -> Result<&str, ApiError> {
    module_name(name).map_err(|e| ApiError::new(ErrorCode::InvalidParameter, e))
}

async fn ask(state: &AdminState, name: &str, msg: ModuleMsg) -> Result<ModuleReply, ApiError> {
    let name = checked_name(name)?;
    match state.inner.directory.call(&ActorKey::new(ActorKind::Module, name), msg).await {
        Ok(ModuleReply::NoSuchModule) => Err(ApiError::new(ErrorCode::NotFound, format!("no module {name}"))),
        Ok(reply) => Ok(reply),
        Err(error) => Err(super::error::directory_failed(error)),
    }
}

fn head(reply: ModuleReply) -> Result<Json<ModuleHead>, ApiError> {
    match reply {
        ModuleReply::Head(head) => Ok(Json(head)),
        other => Err(ApiError::new(ErrorCode::Internal, format!("unexpected answer {other:?}"))),
    }
}

/// Checks that module `name` exists and exports one of `hooks`, before it is attached somewhere
/// as `role` (a topic transform, a route middleware).
pub(super) async fn check_hook(
    state: &AdminState,
    name: &str,
    hooks: &[Hook],
    role: &str,
) -> Result<(), ApiError> {
    let Json(head) = head(ask(state, name, ModuleMsg::Head).await?)?;
    if !hooks.iter().any(|hook| head.hooks.iter().any(|h| h == hook.as_str())) {
        let wanted: Vec<&str> = hooks.iter().map(|h| h.as_str()).collect();
        let exports: Vec<&str> = hooks.iter().map(|h| h.export()).collect();
        let message = format!(
            "module {name} exports no {} hook (it has: {}); a {role} needs {}",
            wanted.join(" or "),
            head.hooks.join(", "),
            exports.join(" or ")
        );
        return Err(ApiError::new(ErrorCode::InvalidParameter, message));
    }
    Ok(())
}

/// PUT: stores the body (a WASM binary or WAT text) as module `name`'s current version, once it
/// compiles and follows the ABI; nodes running it switch within one recheck. Audited.
pub(super) async fn put(
    State(state): State<AdminState>,
    Path(name): Path<String>,
    body: axum::body::Body,
) -> Result<Json<ModuleHead>, ApiError> {
    checked_name(&name)?;
    let result = upload(&state, &name, body).await;
    let outcome = match &result {
        Ok(Json(head)) => format!("ok: version {} ({})", head.version, &head.hash[..12]),
        Err(error) => error.error.clone(),
    };
    audit::record(&state, "upload", &format!("module/{name}"), outcome).await?;
    result
}

async fn upload(
    state: &AdminState,
    name: &str,
    body: axum::body::Body,
) -> Result<Json<ModuleHead>, ApiError> {
    let runtime = runtime(state)?;
    let limit = runtime.host().limits().max_module_bytes;
    // Read no more than the limit: a larger upload is refused without being held.
    let body = http_body_util::Limited::new(body, limit).collect().await.map_err(|error| {
        match error.downcast_ref::<http_body_util::LengthLimitError>() {
            Some(_) => ApiError::new(
                ErrorCode::BodyTooLarge,
                format!("the module is larger than --wasm-max-module-bytes {limit}"),
            ),
            None => ApiError::new(ErrorCode::InvalidParameter, format!("reading the module: {error}")),
        }
    })?;
    let compiled = runtime.compile(body.to_bytes().to_vec()).await.map_err(|error| match error {
        WasmError::Invalid(why) => ApiError::new(ErrorCode::InvalidModule, format!("module {name}: {why}")),
        other => ApiError::new(ErrorCode::Internal, format!("module {name}: {other}")),
    })?;
    // A new version must still serve where the module is attached.
    for attachment in attachments(state).await?.remove(name).unwrap_or_default() {
        let (needed, role) = attachment.needs();
        if !compiled.hooks.iter().any(|hook| needed.contains(hook)) {
            let exports: Vec<&str> = needed.iter().map(|h| h.export()).collect();
            let message = format!(
                "module {name} is attached to {} {} as its {role}, and this version exports no {}: detach it first",
                attachment.kind,
                attachment.name,
                exports.join(" or ")
            );
            return Err(ApiError::new(ErrorCode::Conflict, message));
        }
    }
    let hooks = compiled.hooks.iter().map(|h| h.as_str().to_string()).collect();
    let msg = ModuleMsg::Put { wasm: compiled.wasm.to_vec(), hash: compiled.hash.clone(), hooks };
    let result = ask(state, name, msg).await.and_then(head);
    runtime.forget(name);
    result
}

pub(super) async fn get(
    State(state): State<AdminState>,
    Path(name): Path<String>,
) -> Result<Json<ModuleHead>, ApiError> {
    head(ask(&state, &name, ModuleMsg::Head).await?)
}

/// `GET /v1/modules/NAME/wasm`: the current binary.
pub(super) async fn wasm(
    State(state): State<AdminState>,
    Path(name): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    match ask(&state, &name, ModuleMsg::Get).await? {
        ModuleReply::Binary(wasm) => Ok(([(header::CONTENT_TYPE, "application/wasm")], wasm)),
        other => Err(ApiError::new(ErrorCode::Internal, format!("unexpected answer {other:?}"))),
    }
}

/// DELETE: refused (409) while the module is attached anywhere; audited.
pub(super) async fn delete(
    State(state): State<AdminState>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    checked_name(&name)?;
    let attached = attachments(&state).await?.remove(&name).unwrap_or_default();
    let result = if attached.is_empty() {
        ask(&state, &name, ModuleMsg::Delete).await.map(|_| ())
    } else {
        let users: Vec<String> = attached.iter().map(|a| format!("{} {}", a.kind, a.name)).collect();
        Err(ApiError::new(
            ErrorCode::Conflict,
            format!("module {name} is attached to {}: detach it first", users.join(", ")),
        ))
    };
    if let Some(runtime) = state.inner.directory.modules() {
        runtime.forget(&name);
    }
    let outcome = result.as_ref().map_or_else(|e| e.error.clone(), |_| "ok".to_string());
    audit::record(&state, "delete", &format!("module/{name}"), outcome).await?;
    result.map(|_| StatusCode::NO_CONTENT)
}

/// Where a module is attached.
#[derive(Serialize, Clone, Debug)]
struct Attachment {
    /// `topic` (its transform) or `route` (its middleware).
    kind: &'static str,
    name: String,
}

impl Attachment {
    /// The hooks an attached module needs here (one of them), and the role it plays.
    fn needs(&self) -> (&'static [Hook], &'static str) {
        match self.kind {
            "topic" => (&[Hook::Transform], "transform"),
            _ => (&[Hook::Request, Hook::Response], "middleware"),
        }
    }
}

/// Every attachment of every module, from the topics and routes of every node that is up.
async fn attachments(state: &AdminState) -> Result<BTreeMap<String, Vec<Attachment>>, ApiError> {
    let directory = &state.inner.directory;
    let unavailable = |reason| ApiError::new(ErrorCode::Unavailable, reason);
    let table = |e: serv_storage::StorageError| ApiError::new(ErrorCode::Internal, e.to_string());
    let topics = state.inner.storage.table(serv_actors::topic::TOPICS).map_err(table)?;
    let routes = state.inner.storage.table(serv_actors::route::ROUTES).map_err(table)?;
    let mut attached: BTreeMap<String, Vec<Attachment>> = BTreeMap::new();
    for (name, meta) in crate::owned::everywhere(directory, &topics).await.map_err(unavailable)? {
        if let Some(module) = meta.config.transform {
            attached.entry(module).or_default().push(Attachment { kind: "topic", name });
        }
    }
    for (name, record) in crate::owned::everywhere(directory, &routes).await.map_err(unavailable)? {
        if let Some(module) = record.config.middleware {
            attached.entry(module).or_default().push(Attachment { kind: "route", name });
        }
    }
    Ok(attached)
}

/// `{"modules": [...], "unreachable": [...]}`: every module of the cluster with where it is
/// attached and its calls summed over the nodes that answered (`unreachable` names the others).
pub(super) async fn list(State(state): State<AdminState>) -> Result<Json<serde_json::Value>, ApiError> {
    let directory = &state.inner.directory;
    let mine = local(&state.inner.storage, directory.modules())
        .map_err(|e| ApiError::new(ErrorCode::Internal, e))?;
    let mut parts = vec![(directory.node_id().to_string(), Ok(mine))];
    parts.extend(crate::owned::ask_peers::<NodeModules>(directory, MODULES_QUERY, Vec::new()).await);
    let mut unreachable = super::down_members(&state);
    let mut heads: BTreeMap<String, ModuleHead> = BTreeMap::new();
    let mut stats: BTreeMap<String, ModuleStats> = BTreeMap::new();
    for (node, part) in parts {
        let Ok(part) = part else {
            unreachable.push(node);
            continue;
        };
        for head in part.heads {
            // Every replica of its partition holds a module: the newest record is the current one.
            if heads.get(&head.name).is_none_or(|known| known.updated_ms < head.updated_ms) {
                heads.insert(head.name.clone(), head);
            }
        }
        for (name, node_stats) in part.stats {
            let sum = stats.entry(name).or_default();
            sum.calls += node_stats.calls;
            sum.failures += node_stats.failures;
            sum.busy_us += node_stats.busy_us;
            if node_stats.last_error.is_some() {
                sum.last_error = node_stats.last_error;
            }
        }
    }
    let mut attached = attachments(&state).await?;
    let modules: Vec<_> = heads
        .into_values()
        .map(|head| {
            let calls = stats.remove(&head.name).unwrap_or_default();
            let attached_to = attached.remove(&head.name).unwrap_or_default();
            serde_json::json!({
                "name": head.name, "hash": head.hash, "size": head.size, "hooks": head.hooks,
                "version": head.version, "created_ms": head.created_ms, "updated_ms": head.updated_ms,
                "attached": attached_to, "stats": calls,
            })
        })
        .collect();
    Ok(Json(serde_json::json!({ "modules": modules, "unreachable": unreachable })))
}
