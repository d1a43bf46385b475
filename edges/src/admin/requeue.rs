//! `POST /v1/dlq/requeue` `{"dlq": "queue/NAME.dlq"}`: moves every message of a dead-letter
//! topic back to the destination it came from (its `dlq-original-destination` header), then drops
//! them from the dead-letter topic, and writes an audit entry. At least once: a crash between the
//! two steps leaves a message in both. An origin that is full (max length, `reject-publish`)
//! stops the requeue there: what went back is dropped from the dead-letter topic, the rest stays.

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use serv_actors::group::{DLQ_ORIGIN_HEADER, DLQ_REASON_HEADER};
use serv_actors::topic::{LogRecord, TopicConfig, TopicMsg, TopicReply};

use super::audit;
use super::topics::ask;
use super::{AdminState, ApiError, ErrorCode};

/// Messages read from the dead-letter topic per round.
const BATCH: usize = 100;
/// About this many bytes per round.
const BATCH_BYTES: u64 = 8 * 1024 * 1024;

/// Consecutive messages bound back to one destination, in order, with their offsets in the
/// dead-letter topic.
type Run = (String, Vec<u64>, Vec<(LogRecord, Option<String>)>);

#[derive(Deserialize)]
struct RequeueRequest {
    /// The dead-letter topic, as `/v1/topics` names it (`queue/NAME.dlq`, `topic/NAME.dlq`).
    dlq: String,
}

pub(super) async fn requeue(
    State(state): State<AdminState>,
    body: axum::body::Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    let request: RequeueRequest = super::error::json_body(&body, r#"{"dlq": "queue/NAME.dlq"}"#)?;
    if !request.dlq.ends_with(".dlq") {
        return Err(ApiError::new(
            ErrorCode::InvalidParameter,
            format!("{:?} is not a dead-letter topic (NAME.dlq)", request.dlq),
        ));
    }
    let result = move_back(&state, &request.dlq).await;
    let outcome = match &result {
        Ok(moved) => format!("ok: {moved} message(s)"),
        Err(error) => error.error.clone(),
    };
    audit::record(&state, "requeue", &request.dlq, outcome).await?;
    let moved = result?;
    Ok(Json(serde_json::json!({ "dlq": request.dlq, "requeued": moved })))
}

/// Appends the dead-letter topic's messages to their origins, in order, then drops them.
async fn move_back(state: &AdminState, dlq: &str) -> Result<u64, ApiError> {
    let TopicReply::Info(info) = ask(state, dlq, TopicMsg::Info).await? else {
        return Err(ApiError::new(ErrorCode::Internal, format!("{dlq} did not answer with its info")));
    };
    let (mut from, end) = (info.first_offset, info.next_offset);
    let mut moved = 0;
    while from < end {
        let read = TopicMsg::Read { from, max: BATCH, max_bytes: BATCH_BYTES };
        let TopicReply::Records { records, next } = ask(state, dlq, read).await? else {
            return Err(ApiError::new(ErrorCode::Internal, format!("{dlq} did not answer a read")));
        };
        if records.is_empty() {
            break;
        }
        // Consecutive messages with one origin go back in one append, in their order.
        let mut runs: Vec<Run> = Vec::new();
        for (offset, mut record) in records.into_iter().filter(|(offset, _)| *offset < end) {
            let origin = record
                .headers
                .iter()
                .find(|(name, _)| name == DLQ_ORIGIN_HEADER)
                .map(|(_, value)| value.trim_start_matches('/').to_string())
                .ok_or_else(|| {
                    ApiError::new(
                        ErrorCode::InvalidParameter,
                        format!("message {offset} of {dlq} names no origin"),
                    )
                })?;
            record.headers.retain(|(name, _)| name != DLQ_ORIGIN_HEADER && name != DLQ_REASON_HEADER);
            record.published_ms = serv_actors::now_ms();
            record.deliver_at_ms = None;
            match runs.last_mut() {
                Some((last, offsets, batch)) if *last == origin => {
                    offsets.push(offset);
                    batch.push((record, None));
                }
                _ => runs.push((origin, vec![offset], vec![(record, None)])),
            }
        }
        for (origin, offsets, batch) in runs {
            let count = batch.len() as u64;
            ask(state, &origin, TopicMsg::Ensure { config: TopicConfig::default() }).await?;
            if let TopicReply::Full { stored, limit } =
                ask(state, &origin, TopicMsg::AppendMany(batch)).await?
            {
                let requeued = moved + stored.len() as u64;
                ask(state, dlq, TopicMsg::DropBefore { offset: offsets[stored.len()] }).await?;
                let detail = crate::publish::full_detail(&origin, &limit);
                let message = format!("{requeued} message(s) requeued, then: {detail}");
                return Err(ApiError::new(ErrorCode::DestinationFull, message));
            }
            moved += count;
        }
        from = next.min(end);
    }
    ask(state, dlq, TopicMsg::DropBefore { offset: from }).await?;
    Ok(moved)
}
