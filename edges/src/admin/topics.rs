//! `/v1/topics/{queue|topic}/NAME`: create, configure, inspect and delete destinations. Every
//! change goes to the destination's topic actor; the listing reads the topics table.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serv_actors::topic::{Overflow, TOPICS, TopicConfig, TopicInfo, TopicMsg, TopicRefusal, TopicReply};
use serv_actors::{ActorKey, ActorKind};
use serv_wasm_host::Hook;

use super::{AdminState, ApiError, ErrorCode};

pub use serv_actors::topic::{MAX_DESTINATION_NAME, destination};

/// Configuration fields to change; the others keep their value (or default, for a new topic).
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct ConfigChange {
    retention_count: Option<u64>,
    retention_bytes: Option<u64>,
    retention_age_ms: Option<u64>,
    max_deliveries: Option<u32>,
    dedup_window_ms: Option<u64>,
    /// `"name"` attaches module `name` as the transform, `null` detaches it, absent keeps it.
    #[serde(default, deserialize_with = "present")]
    transform: Option<Option<String>>,
    /// A number sets the limit, `null` removes it, absent keeps it (likewise `max_length_bytes`).
    #[serde(default, deserialize_with = "present")]
    max_length: Option<Option<u64>>,
    #[serde(default, deserialize_with = "present")]
    max_length_bytes: Option<Option<u64>>,
    /// `"reject-publish"` or `"drop-head"`.
    overflow: Option<Overflow>,
}

/// A field that is present, even as `null` (absent is the `default`).
fn present<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(
    deserializer: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(deserializer).map(Some)
}

impl ConfigChange {
    fn is_empty(&self) -> bool {
        self.retention_count.is_none()
            && self.retention_bytes.is_none()
            && self.retention_age_ms.is_none()
            && self.max_deliveries.is_none()
            && self.dedup_window_ms.is_none()
            && self.transform.is_none()
            && self.max_length.is_none()
            && self.max_length_bytes.is_none()
            && self.overflow.is_none()
    }

    fn applied_to(&self, config: &TopicConfig) -> TopicConfig {
        TopicConfig {
            retention_count: self.retention_count.unwrap_or(config.retention_count),
            retention_bytes: self.retention_bytes.unwrap_or(config.retention_bytes),
            retention_age_ms: self.retention_age_ms.unwrap_or(config.retention_age_ms),
            max_deliveries: self.max_deliveries.unwrap_or(config.max_deliveries),
            dedup_window_ms: self.dedup_window_ms.unwrap_or(config.dedup_window_ms),
            transform: self.transform.clone().unwrap_or_else(|| config.transform.clone()),
            max_length: self.max_length.unwrap_or(config.max_length),
            max_length_bytes: self.max_length_bytes.unwrap_or(config.max_length_bytes),
            overflow: self.overflow.unwrap_or(config.overflow),
        }
    }
}

pub(super) async fn ask(state: &AdminState, name: &str, msg: TopicMsg) -> Result<TopicReply, ApiError> {
    let name = destination(name).map_err(|e| ApiError::new(ErrorCode::InvalidParameter, e))?;
    let key = ActorKey::new(ActorKind::Topic, name);
    match state.inner.directory.call(&key, msg).await {
        Ok(TopicReply::Refused(TopicRefusal::NoSuchTopic)) => {
            Err(ApiError::new(ErrorCode::NotFound, format!("no destination {name}")))
        }
        Ok(TopicReply::Refused(refusal)) => {
            Err(ApiError::new(ErrorCode::InvalidParameter, refusal.to_string()))
        }
        Ok(reply) => Ok(reply),
        Err(error) => Err(super::error::directory_failed(error)),
    }
}

fn info(reply: TopicReply) -> Result<Json<TopicInfo>, ApiError> {
    match reply {
        TopicReply::Info(info) => Ok(Json(info)),
        other => Err(ApiError::new(ErrorCode::Internal, format!("unexpected answer {other:?}"))),
    }
}

/// PUT: creates the destination if needed, then applies the given configuration fields.
pub(super) async fn put(
    State(state): State<AdminState>,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<TopicInfo>, ApiError> {
    let put = configure(&state, &name, &body).await;
    super::audit::recorded(&state, "put", &format!("topic/{name}"), put).await
}

async fn configure(state: &AdminState, name: &str, body: &[u8]) -> Result<Json<TopicInfo>, ApiError> {
    // No body: create with defaults. A body is JSON, whatever its Content-Type says.
    let change: ConfigChange = if body.iter().all(u8::is_ascii_whitespace) {
        ConfigChange::default()
    } else {
        super::error::json_body(body, "a JSON object of settings")?
    };
    if let Some(Some(module)) = &change.transform {
        super::modules::check_hook(state, module, &[Hook::Transform], "topic transform").await?;
    }
    let created =
        ask(state, name, TopicMsg::Ensure { config: change.applied_to(&TopicConfig::default()) }).await?;
    let TopicReply::Info(current) = created else { return info(created) };
    if change.is_empty() || change.applied_to(&current.config) == current.config {
        return Ok(Json(current));
    }
    info(ask(state, name, TopicMsg::Configure(change.applied_to(&current.config))).await?)
}

pub(super) async fn get(
    State(state): State<AdminState>,
    Path(name): Path<String>,
) -> Result<Json<TopicInfo>, ApiError> {
    info(ask(&state, &name, TopicMsg::Info).await?)
}

pub(super) async fn delete(
    State(state): State<AdminState>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    let deleted = ask(&state, &name, TopicMsg::Delete).await;
    super::audit::recorded(&state, "delete", &format!("topic/{name}"), deleted).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Every destination with its configuration, from the topics tables of every node.
pub(super) async fn list(State(state): State<AdminState>) -> Result<Json<serde_json::Value>, ApiError> {
    let table =
        state.inner.storage.table(TOPICS).map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))?;
    let rows = crate::owned::everywhere(&state.inner.directory, &table)
        .await
        .map_err(|reason| ApiError::new(ErrorCode::Unavailable, reason))?;
    let mut topics = Vec::new();
    for (name, meta) in rows {
        topics.push(serde_json::json!({
            "name": name,
            "config": meta.config,
            "messages": meta.next_offset - meta.first_offset,
            "bytes": meta.bytes,
        }));
    }
    Ok(Json(serde_json::json!({ "topics": topics, "unreachable": super::down_members(&state) })))
}
