//! `/v1/keys`: access keys for the S3 (and STOMP) edges. A key's secret is answered once, when
//! the key is created; listings never carry secrets.
//!
//! Every node keeps every key ([`serv_storage::keys`] merges them): a change made here is pushed
//! to the other nodes before it is answered, and every [`SYNC_INTERVAL`] each node pulls what the
//! others know, so a node that was down catches up.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serv_actors::Directory;
use serv_storage::keys::{AccessKeys, KeyRefusal, KeySync};

use super::{AdminState, ApiError, ErrorCode};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CreateKey {
    name: String,
}

/// How often a node pulls the keys the others know.
pub const SYNC_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

impl crate::owned::Merged for AccessKeys {
    type Sync = KeySync;
    const NAME: &'static str = "keys";

    fn export(&self) -> Result<KeySync, String> {
        AccessKeys::export(self).map_err(|e| e.to_string())
    }

    async fn merge(&self, sync: KeySync) -> Result<usize, String> {
        AccessKeys::merge(self, sync).await.map_err(|e| e.to_string())
    }
}

/// Shares this node's keys with the others and keeps pulling theirs.
pub fn replicate(directory: &Directory, keys: AccessKeys) {
    crate::owned::keep_merged(directory, keys, SYNC_INTERVAL);
}

/// Pushes this node's keys to every other node that is up.
async fn push(state: &AdminState) {
    let Ok(sync) = state.inner.storage.access_keys().export() else { return };
    crate::owned::push::<AccessKeys>(&state.inner.directory, &sync).await;
}

fn refused(refusal: KeyRefusal) -> ApiError {
    let code = match refusal {
        KeyRefusal::InvalidName => ErrorCode::InvalidParameter,
        KeyRefusal::NameTaken(_) => ErrorCode::Conflict,
        KeyRefusal::TooMany => ErrorCode::LimitExceeded,
        KeyRefusal::NotFound(_) => ErrorCode::NotFound,
    };
    ApiError::new(code, refusal.to_string())
}

fn failed(error: serv_storage::StorageError) -> ApiError {
    tracing::error!(%error, "access key change failed");
    ApiError::new(ErrorCode::Internal, "the change could not be made durable")
}

pub(super) async fn create(
    State(state): State<AdminState>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let request: CreateKey = super::error::json_body(&body, r#"{"name": "..."}"#)?;
    let created = state.inner.storage.access_keys().create(&request.name).await.map_err(failed);
    let created = created.and_then(|created| created.map_err(refused));
    let key = super::audit::recorded(&state, "create", &format!("key/{}", request.name), created).await?;
    push(&state).await;
    tracing::info!(access_key = %key.access_key, name = %key.name, "access key created");
    Ok((StatusCode::CREATED, Json(key)).into_response())
}

pub(super) async fn list(State(state): State<AdminState>) -> Json<serde_json::Value> {
    Json(serde_json::json!({ "keys": state.inner.storage.access_keys().list() }))
}

pub(super) async fn revoke(
    State(state): State<AdminState>,
    Path(access_key): Path<String>,
) -> Result<StatusCode, ApiError> {
    let revoked = state.inner.storage.access_keys().revoke(&access_key).await.map_err(failed);
    let revoked = revoked.and_then(|revoked| revoked.map_err(refused));
    super::audit::recorded(&state, "revoke", &format!("key/{access_key}"), revoked).await?;
    push(&state).await;
    tracing::info!(%access_key, "access key revoked");
    Ok(StatusCode::NO_CONTENT)
}
