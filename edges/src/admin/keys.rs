//! `/v1/keys`: access keys for the S3 (and STOMP) edges. A key's secret is answered once, when
//! the key is created; listings never carry secrets.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serv_storage::keys::KeyRefusal;

use super::{AdminState, ApiError, ErrorCode};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CreateKey {
    name: String,
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
    body: Result<Json<CreateKey>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(request) = body.map_err(|rejection| {
        ApiError::new(
            ErrorCode::InvalidParameter,
            format!("expected {{\"name\": \"...\"}}: {}", rejection.body_text()),
        )
    })?;
    let created = state.inner.storage.access_keys().create(&request.name).await.map_err(failed)?;
    let key = created.map_err(refused)?;
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
    let revoked = state.inner.storage.access_keys().revoke(&access_key).await.map_err(failed)?;
    revoked.map_err(refused)?;
    tracing::info!(%access_key, "access key revoked");
    Ok(StatusCode::NO_CONTENT)
}
