//! `GET /v1/events`: a Server-Sent Events feed for live views (the console). Every
//! `interval_ms` it sends an `actors` event (the body of `/v1/actors`, cluster-wide) and a
//! `members` event (the body of `/v1/cluster/members`); a client reconnects on its own.

use std::collections::HashMap;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;

use super::{AdminState, ApiError, ErrorCode, actors_body, members_body};

/// The default and the bounds of `interval_ms`.
const DEFAULT_INTERVAL_MS: u64 = 1_000;
const MIN_INTERVAL_MS: u64 = 250;
const MAX_INTERVAL_MS: u64 = 60_000;

pub(super) async fn feed(
    State(state): State<AdminState>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let mut interval_ms = DEFAULT_INTERVAL_MS;
    for (name, value) in &params {
        match name.as_str() {
            "interval_ms" => {
                interval_ms = value
                    .parse()
                    .ok()
                    .filter(|ms| (MIN_INTERVAL_MS..=MAX_INTERVAL_MS).contains(ms))
                    .ok_or_else(|| {
                        ApiError::new(
                            ErrorCode::InvalidParameter,
                            format!("interval_ms is {MIN_INTERVAL_MS} to {MAX_INTERVAL_MS}, not {value:?}"),
                        )
                    })?
            }
            other => {
                return Err(ApiError::new(
                    ErrorCode::InvalidParameter,
                    format!("unknown parameter {other:?}; /v1/events takes interval_ms"),
                ));
            }
        }
    }
    let ticks = tokio::time::interval(Duration::from_millis(interval_ms));
    let stream = futures_util::stream::unfold((state, ticks), |(state, mut ticks)| async move {
        ticks.tick().await;
        let actors = Event::default().event("actors").json_data(actors_body(&state, None, None).await);
        let members = Event::default().event("members").json_data(members_body(&state));
        let events = [actors, members].into_iter().filter_map(Result::ok).map(Ok::<_, Infallible>);
        Some((futures_util::stream::iter(events), (state, ticks)))
    });
    Ok(Sse::new(futures_util::StreamExt::flatten(stream)).keep_alive(KeepAlive::default()))
}
