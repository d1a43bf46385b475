//! `/v1/cluster/rotate-*`: new shared credentials for the whole cluster. The node that rotates
//! stores the new value, pushes it to every other node that is up and answers it once; a node
//! that was down adopts it from the others when it is back (the pull of
//! [`crate::owned::keep_merged`]).

use axum::Json;
use axum::extract::State;
use serv_actors::Directory;

use super::{AdminState, ApiError, ErrorCode};
use crate::credentials::{ClusterCredentials, RotateRefusal};

/// How often a node pulls the others' credentials: a joining node adopts them within this, and
/// a rotation that a push missed reaches a node within this.
pub const SYNC_INTERVAL: std::time::Duration = std::time::Duration::from_secs(3);

/// Shares this node's credentials with the others and keeps pulling theirs.
pub fn replicate(directory: &Directory, credentials: ClusterCredentials) {
    crate::owned::keep_merged(directory, credentials, SYNC_INTERVAL);
}

fn refused(refusal: RotateRefusal) -> ApiError {
    let code = match refusal {
        RotateRefusal::Pinned(..) => ErrorCode::Conflict,
        RotateRefusal::NotAdopted(_) => ErrorCode::NotReady,
        RotateRefusal::Storage(..) => ErrorCode::Internal,
    };
    ApiError::new(code, refusal.to_string())
}

/// Audits the rotation and pushes it; answers `value` to the caller, the only time it is shown.
async fn rotated<T>(
    state: &AdminState,
    target: &str,
    rotation: Result<T, RotateRefusal>,
) -> Result<T, ApiError> {
    let value = super::audit::recorded(state, "rotate", target, rotation.map_err(refused)).await?;
    let credentials = &state.inner.credentials;
    crate::owned::push::<ClusterCredentials>(&state.inner.directory, &credentials.export()).await;
    tracing::warn!(%target, "rotated for the whole cluster; the old value is no longer accepted");
    Ok(value)
}

/// `POST /v1/cluster/rotate-admin-token`: `{"token": NEW}`. Every node accepts the new token
/// (and console sessions signed with it) and refuses the old one once it has the change.
pub(super) async fn rotate_admin_token(
    State(state): State<AdminState>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let rotation = state.inner.credentials.rotate_admin_token();
    let token = rotated(&state, "cluster/admin-token", rotation).await?;
    Ok(Json(serde_json::json!({ "token": token })))
}

/// `POST /v1/cluster/rotate-root-credentials`: `{"access_key": SAME, "secret_key": NEW}`.
pub(super) async fn rotate_root_secret(
    State(state): State<AdminState>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let rotation = state.inner.credentials.rotate_root_secret();
    let root = rotated(&state, "cluster/root-credentials", rotation).await?;
    Ok(Json(serde_json::json!({ "access_key": root.access_key, "secret_key": root.secret_key })))
}
