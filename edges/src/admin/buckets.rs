//! `GET /v1/buckets`: every bucket of the cluster with its running totals, from the buckets
//! table of every node (each bucket's row lives with its owner), for the console's buckets page.

use axum::Json;
use axum::extract::State;
use serv_actors::bucket::{BUCKETS, Versioning};

use super::{AdminState, ApiError, ErrorCode};

pub(super) async fn list(State(state): State<AdminState>) -> Result<Json<serde_json::Value>, ApiError> {
    let table =
        state.inner.storage.table(BUCKETS).map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))?;
    let rows = crate::owned::everywhere(&state.inner.directory, &table)
        .await
        .map_err(|reason| ApiError::new(ErrorCode::Unavailable, reason))?;
    let buckets: Vec<_> = rows
        .into_iter()
        .map(|(name, meta)| {
            let versioning = match meta.versioning {
                Versioning::Unversioned => "unversioned",
                Versioning::Enabled => "enabled",
                Versioning::Suspended => "suspended",
            };
            serde_json::json!({
                "name": name,
                "objects": meta.objects,
                "bytes": meta.bytes,
                "versioning": versioning,
                "created_ms": meta.created_ms,
                "owner": meta.owner,
            })
        })
        .collect();
    Ok(Json(serde_json::json!({ "buckets": buckets, "unreachable": super::down_members(&state) })))
}
