//! Bearer-token auth of the `/v1` admin endpoints: the admin token itself, or a console session
//! token signed with it (`session.rs`).

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::AdminState;
use super::error::{ApiError, ErrorCode};
use super::session::{self, Check};

/// Which kind of token let a request in (handlers read it as an extension).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Credential {
    AdminToken,
    /// A console session, good until `expires_ms` (Unix ms).
    Session {
        expires_ms: u64,
    },
}

tokio::task_local! {
    /// Who the request being served came with, for the audit log: `admin token`, or `session`
    /// and a fingerprint of the session token (which tells one console session from another
    /// without keeping the token).
    pub(super) static ACTOR: String;
}

fn fingerprint(token: &str) -> String {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let mut hasher = DefaultHasher::new();
    token.hash(&mut hasher);
    format!("{:08x}", hasher.finish() as u32)
}

/// Lets the request through only with `Authorization: Bearer <admin token or session token>`.
pub(super) async fn require_token(
    State(state): State<AdminState>,
    mut request: Request,
    next: Next,
) -> Response {
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let Some(admin_token) = state.inner.credentials.admin_token() else {
        let message = "this node has not adopted its cluster's admin token yet: it does once it reaches \
                       a node named in --seeds (see /readyz)";
        return ApiError::new(ErrorCode::NotReady, message).into_response();
    };
    let admin_token = admin_token.as_bytes();
    let credential = match given {
        None => {
            return ApiError::new(
                ErrorCode::MissingToken,
                "this endpoint needs Authorization: Bearer <admin token>",
            )
            .into_response();
        }
        Some(token) if token.starts_with(session::PREFIX) => {
            match session::check(admin_token, token, serv_actors::now_ms()) {
                Check::Valid { expires_ms } => Credential::Session { expires_ms },
                Check::Expired { at_ms } => {
                    let message = format!("the session expired at {at_ms} (Unix ms); sign in again");
                    return ApiError::new(ErrorCode::TokenExpired, message).into_response();
                }
                Check::Forged => {
                    let message = "the session token is not valid (was the admin token changed?)";
                    return ApiError::new(ErrorCode::InvalidToken, message).into_response();
                }
            }
        }
        Some(token) if same(token.as_bytes(), admin_token) => Credential::AdminToken,
        Some(_) => {
            return ApiError::new(ErrorCode::InvalidToken, "the admin token is not valid").into_response();
        }
    };
    let actor = match (credential, given) {
        (Credential::Session { .. }, Some(token)) => format!("session {}", fingerprint(token)),
        _ => "admin token".to_string(),
    };
    request.extensions_mut().insert(credential);
    ACTOR.scope(actor, next.run(request)).await
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
