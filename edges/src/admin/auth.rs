//! Bearer-token auth of the `/v1` admin endpoints.

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::AdminState;
use super::error::{ApiError, ErrorCode};

/// Lets the request through only with `Authorization: Bearer <admin token>`.
pub(super) async fn require_token(State(state): State<AdminState>, request: Request, next: Next) -> Response {
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        None => {
            ApiError::new(ErrorCode::MissingToken, "this endpoint needs Authorization: Bearer <admin token>")
                .into_response()
        }
        Some(token) if !same(token.trim().as_bytes(), state.inner.token.as_bytes()) => {
            ApiError::new(ErrorCode::InvalidToken, "the admin token is not valid").into_response()
        }
        Some(_) => next.run(request).await,
    }
}

/// Compares in time independent of where the inputs differ (tokens, passcodes).
pub(crate) fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    #[test]
    fn tokens_compare_exactly() {
        assert!(super::same(b"abc", b"abc"));
        assert!(!super::same(b"abc", b"abd"));
        assert!(!super::same(b"abc", b"abcd"));
    }
}
