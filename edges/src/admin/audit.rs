//! The audit log and the actions it records. Every change made through the admin API (restart
//! or passivate an actor, requeue a dead-letter topic, put or delete a route, topic or module,
//! create or revoke a key, remove a member) is written, once it has ended, to the `audit` table
//! of the node that took the request, made durable before the answer: when, who (the admin
//! token, or which console session), what, on what, how it ended, and the request's trace id. `GET /v1/audit` lists every node's entries,
//! newest first, each naming its node.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::extract::{Query, State};
use serde::{Deserialize, Serialize};
use serv_actors::{ActorKey, ActorKind, Directory, DirectoryError, now_ms};
use serv_storage::{Record, Storage, StorageError, Table, TableDef};

use super::error::current_trace_id;
use super::{AdminState, ApiError, ErrorCode};

/// The audit log: entries by a time-ordered sequence number.
const AUDIT: TableDef<u64, AuditEntry> = TableDef::new("audit");
/// Entries kept on each node; the oldest go past this.
pub const MAX_AUDIT_ENTRIES: usize = 10_000;
/// The default and largest `limit` of `GET /v1/audit`.
const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1_000;
/// The mesh query that asks a node for its newest entries (the argument: how many, as u64).
const AUDIT_QUERY: &str = "audit/newest";

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
    /// Who asked: `admin token`, or `session` and the session token's fingerprint.
    pub actor: String,
}

/// An entry as written before entries named who asked (format 1).
#[derive(Deserialize)]
struct AuditEntryV1 {
    at_ms: u64,
    action: String,
    target: String,
    outcome: String,
    trace_id: String,
}

impl Record for AuditEntry {
    const FORMAT: u8 = 2;

    fn upgrade(format: u8, body: &[u8]) -> Option<Result<Self, serv_storage::codec::CodecError>> {
        (format == 1).then(|| {
            serv_storage::codec::decode::<AuditEntryV1>(body).map(|v1| AuditEntry {
                at_ms: v1.at_ms,
                action: v1.action,
                target: v1.target,
                outcome: v1.outcome,
                trace_id: v1.trace_id,
                actor: "unknown (recorded before actors were)".into(),
            })
        })
    }
}

/// A key after every earlier one: microseconds now, or one past the last key handed out.
fn next_key() -> u64 {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64);
    let previous = LAST.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |last| Some(now.max(last + 1)));
    previous.map_or(now, |last| now.max(last + 1))
}

/// One node's audit table, bounded to `max` entries.
pub(super) struct AuditLog {
    storage: Storage,
    table: Table<u64, AuditEntry>,
    max: usize,
    /// Entries in the table, counted once on the first append; the lock also keeps appends in
    /// order with their trimming.
    len: tokio::sync::Mutex<Option<usize>>,
}

impl AuditLog {
    /// Opens the log in `storage`, and answers other nodes' listings from it.
    pub(super) fn open(
        storage: Storage,
        directory: &Directory,
        max: usize,
    ) -> Result<Arc<Self>, StorageError> {
        let table = storage.table(AUDIT)?;
        let log = Arc::new(Self { storage, table, max, len: tokio::sync::Mutex::new(None) });
        let shared = log.clone();
        crate::owned::answer(directory, AUDIT_QUERY, move |args| {
            let limit = serv_storage::codec::decode::<u64>(args).map_or(DEFAULT_LIMIT, |n| n as usize);
            shared.newest(limit.min(MAX_LIMIT))
        });
        Ok(log)
    }

    /// Writes `entry` durably, dropping the oldest entries past `max`.
    pub(super) async fn append(&self, entry: &AuditEntry) -> Result<(), StorageError> {
        let mut len = self.len.lock().await;
        let before = match *len {
            Some(n) => n,
            None => self.table.entries().count(),
        };
        let mut changes = self.storage.write_set();
        changes.put(&self.table, &next_key(), entry)?;
        let excess = (before + 1).saturating_sub(self.max);
        // The oldest keys come first: reading them costs the excess, not the whole table.
        for row in self.table.entries().take(excess) {
            changes.delete(&self.table, &row?.0);
        }
        self.storage.commit(changes).await?;
        *len = Some(before + 1 - excess);
        Ok(())
    }

    /// This node's newest `limit` entries, newest first.
    fn newest(&self, limit: usize) -> Result<Vec<AuditEntry>, String> {
        self.table
            .entries_rev()
            .take(limit)
            .map(|row| row.map(|(_, e)| e).map_err(|e| e.to_string()))
            .collect()
    }
}

/// Writes to this node's audit log, durably, that `action` was done to `target` with `outcome`
/// (`ok`, or why not), in the current request's trace.
pub(super) async fn record(
    state: &AdminState,
    action: &str,
    target: &str,
    outcome: String,
) -> Result<(), ApiError> {
    let entry = AuditEntry {
        at_ms: now_ms(),
        action: action.into(),
        target: target.into(),
        outcome,
        trace_id: current_trace_id(),
        actor: super::auth::ACTOR.try_with(Clone::clone).unwrap_or_else(|_| "unknown".into()),
    };
    state
        .inner
        .audit
        .append(&entry)
        .await
        .map_err(|e| ApiError::new(ErrorCode::Internal, format!("audit log: {e}")))
}

/// Records `action` on `target` as `result` ended (`ok`, or its error), and hands it back.
pub(super) async fn recorded<T>(
    state: &AdminState,
    action: &str,
    target: &str,
    result: Result<T, ApiError>,
) -> Result<T, ApiError> {
    let outcome = match &result {
        Ok(_) => "ok".to_string(),
        Err(error) => error.error.clone(),
    };
    record(state, action, target, outcome).await?;
    result
}

/// `GET /v1/audit[?limit=N]`: `{"entries": [...], "unreachable": [...]}`: the newest `limit`
/// entries of every node, newest first, each with its `node`; `unreachable` names the nodes that
/// could not answer (their entries are missing, not invented).
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
    let mine = state.inner.audit.newest(limit).map_err(|e| ApiError::new(ErrorCode::Internal, e))?;
    let mut entries: Vec<(String, AuditEntry)> =
        mine.into_iter().map(|entry| (state.inner.node.id.clone(), entry)).collect();
    // Down members are not asked; their entries are missing too.
    let mut unreachable = super::down_members(&state);
    let args = serv_storage::codec::encode(&(limit as u64))
        .map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))?;
    let answers = crate::owned::ask_peers::<Vec<AuditEntry>>(&state.inner.directory, AUDIT_QUERY, args).await;
    for (node, answer) in answers {
        match answer {
            Ok(theirs) => entries.extend(theirs.into_iter().map(|entry| (node.clone(), entry))),
            Err(_) => unreachable.push(node),
        }
    }
    entries.sort_by_key(|(_, entry)| std::cmp::Reverse(entry.at_ms));
    entries.truncate(limit);
    let entries: Vec<_> = entries
        .into_iter()
        .map(|(node, entry)| {
            let mut row = serde_json::to_value(entry).unwrap_or_default();
            row["node"] = serde_json::Value::String(node);
            row
        })
        .collect();
    Ok(Json(serde_json::json!({ "entries": entries, "unreachable": unreachable })))
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
    let request: ActorRequest = super::error::json_body(&body, r#"{"key": "kind/name"}"#)?;
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
    record(&state, action.name(), &request.key, outcome).await?;
    match result {
        Ok(()) => Ok(Json(serde_json::json!({ "key": request.key, "action": action.name(), "done": true }))),
        Err(DirectoryError::NotActive { key }) => Err(ApiError::new(
            ErrorCode::NotFound,
            format!("{key} is not running: nothing to {}", action.name()),
        )),
        Err(error) => Err(ApiError::new(ErrorCode::Unavailable, error.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use serv_actors::{Directory, SupervisionConfig};
    use serv_storage::{Storage, StorageOptions};

    use super::{AuditEntry, AuditLog};

    #[test]
    fn an_entry_written_before_actors_were_reads_as_of_an_unknown_actor() {
        use serv_storage::Record;
        #[derive(serde::Serialize)]
        struct V1 {
            at_ms: u64,
            action: String,
            target: String,
            outcome: String,
            trace_id: String,
        }
        let old = V1 {
            at_ms: 7,
            action: "restart".into(),
            target: "bucket/b".into(),
            outcome: "ok".into(),
            trace_id: "t".into(),
        };
        let body = serv_storage::codec::encode(&old).unwrap();
        let read = AuditEntry::upgrade(1, &body).expect("format 1 is known").unwrap();
        assert_eq!((read.at_ms, read.action.as_str(), read.target.as_str()), (7, "restart", "bucket/b"));
        assert!(read.actor.starts_with("unknown"), "{}", read.actor);
        assert!(AuditEntry::upgrade(3, &body).is_none(), "a format it does not know is not guessed");
    }

    fn entry(n: usize) -> AuditEntry {
        AuditEntry {
            at_ms: n as u64,
            action: "restart".into(),
            target: format!("bucket/b{n}"),
            outcome: "ok".into(),
            trace_id: String::new(),
            actor: "admin token".into(),
        }
    }

    fn targets(log: &AuditLog) -> Vec<String> {
        log.newest(100).unwrap().into_iter().map(|e| e.target).collect()
    }

    #[tokio::test]
    async fn the_audit_log_keeps_the_newest_entries_up_to_its_bound_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(dir.path(), StorageOptions::default()).unwrap();
        let directory = Directory::start(storage.clone(), SupervisionConfig::default()).await.unwrap();
        let log = AuditLog::open(storage.clone(), &directory, 5).unwrap();
        for n in 0..12 {
            log.append(&entry(n)).await.unwrap();
        }
        assert_eq!(targets(&log), ["bucket/b11", "bucket/b10", "bucket/b9", "bucket/b8", "bucket/b7"]);
        // Opened again (a restarted node), it counts what is there and still keeps five.
        let reopened = AuditLog::open(storage, &directory, 5).unwrap();
        reopened.append(&entry(12)).await.unwrap();
        assert_eq!(targets(&reopened), ["bucket/b12", "bucket/b11", "bucket/b10", "bucket/b9", "bucket/b8"]);
        assert_eq!(reopened.newest(2).unwrap().len(), 2);
    }
}
