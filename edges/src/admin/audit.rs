//! The audit log and the actions it records. Every action taken through the admin API (restart
//! or passivate an actor) is written, once it has ended, to the `audit` table of the node that took
//! the request, made durable before the answer: when, what, on what, how it ended, and the
//! request's trace id. `GET /v1/audit` lists the newest first.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::extract::{Query, State};
use serde::{Deserialize, Serialize};
use serv_actors::{ActorKey, ActorKind, DirectoryError, now_ms};
use serv_storage::{Record, TableDef};

use super::error::current_trace_id;
use super::{AdminState, ApiError, ErrorCode};

/// The audit log: entries by a time-ordered sequence number.
const AUDIT: TableDef<u64, AuditEntry> = TableDef::new("audit");
/// Entries kept; the oldest go past this.
pub const MAX_AUDIT_ENTRIES: usize = 10_000;
/// The default and largest `limit` of `GET /v1/audit`.
const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1_000;

/// One action taken through the admin API.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AuditEntry {
    /// When it ended (Unix ms).
    pub at_ms: u64,
    /// What was done (`restart`).
    pub action: String,
    /// What it was done to (an actor key).
    pub target: String,
    /// `ok`, or why it failed.
    pub outcome: String,
    /// The trace id of the request that asked for it.
    pub trace_id: String,
}

impl Record for AuditEntry {
    const FORMAT: u8 = 1;
}

/// A key after every earlier one: microseconds now, or one past the last key handed out.
fn next_key() -> u64 {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64);
    let previous = LAST.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |last| Some(now.max(last + 1)));
    previous.map_or(now, |last| now.max(last + 1))
}

/// Writes `entry` durably, dropping the oldest entries past `MAX_AUDIT_ENTRIES`.
pub(super) async fn record(state: &AdminState, entry: &AuditEntry) -> Result<(), ApiError> {
    let storage = &state.inner.storage;
    let internal =
        |e: serv_storage::StorageError| ApiError::new(ErrorCode::Internal, format!("audit log: {e}"));
    let table = storage.table(AUDIT).map_err(internal)?;
    let mut changes = storage.write_set();
    changes.put(&table, &next_key(), entry).map_err(internal)?;
    let keys: Vec<u64> = table.entries().filter_map(|row| row.ok().map(|(key, _)| key)).collect();
    for key in keys.iter().take((keys.len() + 1).saturating_sub(MAX_AUDIT_ENTRIES)) {
        changes.delete(&table, key);
    }
    storage.commit(changes).await.map_err(internal)
}

/// `GET /v1/audit[?limit=N]`: `{"entries": [...]}`, newest first.
pub(super) async fn list(
    State(state): State<AdminState>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let mut limit = DEFAULT_LIMIT;
    for (name, value) in &params {
        match name.as_str() {
            "limit" => {
                limit = value.parse().ok().filter(|n| (1..=MAX_LIMIT).contains(n)).ok_or_else(|| {
                    ApiError::new(
                        ErrorCode::InvalidParameter,
                        format!("limit is 1 to {MAX_LIMIT}, not {value:?}"),
                    )
                })?
            }
            other => {
                return Err(ApiError::new(
                    ErrorCode::InvalidParameter,
                    format!("unknown parameter {other:?}; /v1/audit takes limit"),
                ));
            }
        }
    }
    let table = state
        .inner
        .storage
        .table(AUDIT)
        .map_err(|e| ApiError::new(ErrorCode::Internal, format!("audit log: {e}")))?;
    let mut entries: Vec<AuditEntry> =
        table.entries().filter_map(|row| row.ok().map(|(_, entry)| entry)).collect();
    entries.reverse();
    entries.truncate(limit);
    Ok(Json(serde_json::json!({ "entries": entries })))
}

/// The body of `POST /v1/actors/{restart,passivate}`.
#[derive(Deserialize)]
struct ActorRequest {
    /// `kind/name`, as `/v1/actors` lists it.
    key: String,
}

/// What can be done to an actor through the admin API.
#[derive(Clone, Copy)]
enum Action {
    Restart,
    Passivate,
}

impl Action {
    fn name(self) -> &'static str {
        match self {
            Action::Restart => "restart",
            Action::Passivate => "passivate",
        }
    }
}

/// `POST /v1/actors/restart` `{"key"}`: restarts the entity from its durable state on the node
/// that owns it (a failed one is started again), counts one restart and writes an audit entry.
pub(super) async fn restart(
    State(state): State<AdminState>,
    body: axum::body::Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    act(state, body, Action::Restart).await
}

/// `POST /v1/actors/passivate` `{"key"}`: stops the entity on its owner once it has handled
/// what it was sent (it starts again on its next message) and writes an audit entry.
pub(super) async fn passivate(
    State(state): State<AdminState>,
    body: axum::body::Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    act(state, body, Action::Passivate).await
}

async fn act(
    state: AdminState,
    body: axum::body::Bytes,
    action: Action,
) -> Result<Json<serde_json::Value>, ApiError> {
    let request: ActorRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            ErrorCode::InvalidParameter,
            format!("the body must be {{\"key\": \"kind/name\"}}: {e}"),
        )
    })?;
    let key = request
        .key
        .split_once('/')
        .and_then(|(kind, name)| Some(ActorKey::new(ActorKind::parse(kind)?, name)))
        .filter(|key| !key.name.is_empty())
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::InvalidParameter,
                format!("{:?} is not an entity key (kind/name)", request.key),
            )
        })?;
    let directory = &state.inner.directory;
    let result = match action {
        Action::Restart => directory.reset(&key).await,
        Action::Passivate => directory.passivate(&key).await,
    };
    let outcome = match &result {
        Ok(()) => "ok".to_string(),
        Err(error) => error.to_string(),
    };
    let entry = AuditEntry {
        at_ms: now_ms(),
        action: action.name().into(),
        target: request.key,
        outcome,
        trace_id: current_trace_id(),
    };
    record(&state, &entry).await?;
    match result {
        Ok(()) => Ok(Json(serde_json::json!({ "key": entry.target, "action": action.name(), "done": true }))),
        Err(DirectoryError::NotActive { key }) => Err(ApiError::new(
            ErrorCode::NotFound,
            format!("{key} is not running: nothing to {}", action.name()),
        )),
        Err(error) => Err(ApiError::new(ErrorCode::Unavailable, error.to_string())),
    }
}
