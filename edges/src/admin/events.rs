//! `GET /v1/events`: a Server-Sent Events feed for live views (the console). Every
//! `interval_ms` it sends an `actors` event (the body of `/v1/actors`, cluster-wide) and a
//! `members` event (the body of `/v1/cluster/members`); a client reconnects on its own. A feed
//! opened with a console session ends when the session does: reconnecting then answers 401.

use std::collections::HashMap;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Extension, Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;

use super::auth::Credential;
use super::{AdminState, ApiError, ErrorCode, actors_body, members_body};

/// The default and the bounds of `interval_ms`.
const DEFAULT_INTERVAL_MS: u64 = 1_000;
const MIN_INTERVAL_MS: u64 = 250;
const MAX_INTERVAL_MS: u64 = 60_000;

pub(super) async fn feed(
    State(state): State<AdminState>,
    Extension(credential): Extension<Credential>,
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
    let ends_ms = match credential {
        Credential::AdminToken => u64::MAX,
        Credential::Session { expires_ms } => expires_ms,
    };
    let ticks = tokio::time::interval(Duration::from_millis(interval_ms));
    let stream = futures_util::stream::unfold((state, ticks), move |(state, mut ticks)| async move {
        ticks.tick().await;
        if serv_actors::now_ms() >= ends_ms {
            return None;
        }
        let actors = Event::default().event("actors").json_data(actors_body(&state, None, None, false).await);
        let members = Event::default().event("members").json_data(members_body(&state));
        let events = [actors, members].into_iter().filter_map(Result::ok).map(Ok::<_, Infallible>);
        Some((futures_util::stream::iter(events), (state, ticks)))
    });
    Ok(Sse::new(futures_util::StreamExt::flatten(stream)).keep_alive(KeepAlive::default()))
}
