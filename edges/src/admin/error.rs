//! The JSON error of the admin API: `{"error", "code", "trace_id"}` with the matching status.

use axum::Json;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use opentelemetry::trace::TraceContextExt;
use serde::Serialize;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Machine-readable error codes of the admin API.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum ErrorCode {
    /// No endpoint at this path.
    NotFound,
    /// The endpoint exists but not for this method.
    MethodNotAllowed,
    /// A query parameter or body field is invalid.
    InvalidParameter,
    /// No bearer token was given.
    MissingToken,
    /// The bearer token is wrong.
    InvalidToken,
    /// The console session token was good but has expired: sign in again.
    TokenExpired,
    /// The token is good but may not do this (a session token opening a session).
    Forbidden,
    /// The node is not (or no longer) ready.
    NotReady,
    /// The request conflicts with what exists (a name in use).
    Conflict,
    /// A configured limit would be exceeded.
    LimitExceeded,
    /// What the request needs lives on a node that is down or cannot be reached now.
    Unavailable,
    /// Something failed inside the node.
    Internal,
    /// The uploaded WASM module does not compile or does not follow the module ABI.
    InvalidModule,
    /// Gateway: a route's middleware module refused the request (with the status it chose).
    MiddlewareRefused,
    /// Gateway: a route's middleware module failed (trapped, ran out of fuel or time, answered
    /// a malformed head) or is missing: the request is refused, never let through unchecked.
    MiddlewareFailed,
    /// Gateway: no route takes the request's host and path.
    NoRoute,
    /// Gateway: the route is disabled.
    RouteDisabled,
    /// Gateway: the route's rate limit is reached; retry after `Retry-After`.
    RateLimited,
    /// Gateway: the route's upstreams kept failing; its circuit is open until `Retry-After`.
    CircuitOpen,
    /// Gateway: the upstream did not answer within the route's timeout.
    UpstreamTimeout,
    /// Gateway: no upstream could be reached.
    UpstreamUnreachable,
    /// Gateway: the request body is larger than the route takes.
    BodyTooLarge,
    /// Gateway: too many request bodies are held at once; retry after `Retry-After`.
    Overloaded,
    /// The destination is at its max length (overflow `reject-publish`): nothing was stored;
    /// there is room again once its consumers take messages.
    DestinationFull,
    /// Gateway: the route takes only requests signed with its key (`X-Hub-Signature-256`), and
    /// this one's signature is missing or wrong.
    InvalidSignature,
}

impl ErrorCode {
    /// The HTTP status that goes with the code.
    pub fn status(self) -> StatusCode {
        match self {
            ErrorCode::NotFound => StatusCode::NOT_FOUND,
            ErrorCode::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::InvalidParameter | ErrorCode::InvalidModule => StatusCode::BAD_REQUEST,
            // The status a middleware refusal carries is the module's (see the gateway).
            ErrorCode::MiddlewareRefused => StatusCode::FORBIDDEN,
            ErrorCode::MissingToken
            | ErrorCode::InvalidToken
            | ErrorCode::TokenExpired
            | ErrorCode::InvalidSignature => StatusCode::UNAUTHORIZED,
            ErrorCode::Forbidden => StatusCode::FORBIDDEN,
            ErrorCode::NotReady | ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Conflict | ErrorCode::LimitExceeded => StatusCode::CONFLICT,
            ErrorCode::Internal | ErrorCode::MiddlewareFailed => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::NoRoute => StatusCode::NOT_FOUND,
            ErrorCode::RouteDisabled
            | ErrorCode::CircuitOpen
            | ErrorCode::Overloaded
            | ErrorCode::DestinationFull => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            ErrorCode::UpstreamUnreachable => StatusCode::BAD_GATEWAY,
            ErrorCode::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        }
    }
}

/// An error answered as JSON, carrying the trace id of the request it belongs to.
#[derive(Debug, Serialize)]
pub struct ApiError {
    /// What went wrong, for a person.
    pub error: String,
    /// What went wrong, for a program.
    pub code: ErrorCode,
    /// The trace of the request, to find its logs and spans.
    pub trace_id: String,
}

impl ApiError {
    /// An error with `code` and `message`, in the current request's trace.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { error: message.into(), code, trace_id: current_trace_id() }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.code.status();
        let mut response = (status, Json(&self)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// The trace id of the current span, or a fresh random one when tracing is not recording.
pub(super) fn current_trace_id() -> String {
    let context = tracing::Span::current().context();
    let span = context.span();
    let span_context = span.span_context();
    if span_context.is_valid() {
        span_context.trace_id().to_string()
    } else {
        format!("{:032x}", rand::random::<u128>())
    }
}

/// The answer to a directory call that failed: 503 `Unavailable` when the entity's owner cannot
/// be reached now (down, moving, too slow), 500 otherwise.
pub(super) fn directory_failed(error: serv_actors::DirectoryError) -> ApiError {
    use serv_actors::DirectoryError::{Moving, Timeout, Unavailable};
    match error {
        Unavailable { .. } | Moving { .. } | Timeout { .. } => {
            ApiError::new(ErrorCode::Unavailable, error.to_string())
        }
        other => ApiError::new(ErrorCode::Internal, other.to_string()),
    }
}

/// Decodes a request's JSON body, whatever its Content-Type says (every endpoint takes a body
/// without one: one rule for curl users). `shape` says what the body must be, in the error.
pub(super) fn json_body<T: serde::de::DeserializeOwned>(body: &[u8], shape: &str) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::new(ErrorCode::InvalidParameter, format!("the body must be {shape}: {e}")))
}
