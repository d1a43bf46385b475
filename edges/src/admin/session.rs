//! Console sessions: a person signs in with the admin token once and gets a bearer token that
//! expires (`POST /v1/sessions`), so that what a browser keeps stops working on its own.
//!
//! A session token is stateless: `serv-session.v1.<expires_ms>.<nonce>.<mac>`, where the MAC is
//! HMAC-SHA256 over everything before it, keyed by the admin token. Any node with the same admin
//! token accepts it until it expires; changing the admin token ends every session at once.

use std::time::Duration;

use axum::extract::{Extension, State};
use axum::http::StatusCode;
use axum::{Json, body::Bytes};
use hmac::{Hmac, KeyInit, Mac};
use serde::Deserialize;
use serv_actors::now_ms;
use sha2::Sha256;

use super::auth::{Credential, same};
use super::{AdminState, ApiError, ErrorCode};

/// What every session token starts with.
pub(super) const PREFIX: &str = "serv-session.v1.";
/// The shortest session anyone can ask for.
const MIN_TTL: Duration = Duration::from_secs(1);

/// How a presented session token stands.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Check {
    /// Good until `expires_ms` (Unix ms).
    Valid { expires_ms: u64 },
    /// Well signed, but past its end (Unix ms).
    Expired { at_ms: u64 },
    /// Not a token this admin token signed.
    Forged,
}

fn mac(key: &[u8], signed: &str) -> String {
    hmac_sha256_hex(key, signed.as_bytes())
}

/// The HMAC-SHA256 of `message` under `key`, in lowercase hex.
pub(crate) fn hmac_sha256_hex(key: &[u8], message: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(message);
    mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect()
}

/// A token valid until `expires_ms`, signed with `key`.
pub(super) fn issue(key: &[u8], expires_ms: u64) -> String {
    let nonce: u128 = rand::random();
    let signed = format!("{PREFIX}{expires_ms}.{nonce:032x}");
    let mac = mac(key, &signed);
    format!("{signed}.{mac}")
}

/// Checks a token that starts with `PREFIX` against `key` at `now`.
pub(super) fn check(key: &[u8], token: &str, now: u64) -> Check {
    let Some((signed, given)) = token.rsplit_once('.') else { return Check::Forged };
    if !same(mac(key, signed).as_bytes(), given.as_bytes()) {
        return Check::Forged;
    }
    let expires = signed
        .strip_prefix(PREFIX)
        .and_then(|rest| rest.split_once('.'))
        .and_then(|(expires, _nonce)| expires.parse::<u64>().ok());
    match expires {
        None => Check::Forged,
        Some(at_ms) if at_ms <= now => Check::Expired { at_ms },
        Some(expires_ms) => Check::Valid { expires_ms },
    }
}

/// The body of `POST /v1/sessions`; empty for the longest session allowed.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SessionRequest {
    /// How long the session lasts, at most the node's `admin_session_ttl_ms`.
    ttl_ms: Option<u64>,
}

/// `POST /v1/sessions [{"ttl_ms"}]`, with the admin token itself: `201 {"token",
/// "expires_at_ms"}`. A session token cannot open another session, so none outlives its end.
pub(super) async fn open(
    State(state): State<AdminState>,
    Extension(credential): Extension<Credential>,
    body: Bytes,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    if credential != Credential::AdminToken {
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            "a session token cannot open a session; sign in with the admin token",
        ));
    }
    let request: SessionRequest = match body.is_empty() {
        true => SessionRequest::default(),
        false => super::error::json_body(&body, r#"{"ttl_ms": N} or empty"#)?,
    };
    let longest = state.inner.session_ttl;
    let ttl = match request.ttl_ms.map(Duration::from_millis) {
        None => longest,
        Some(ttl) if (MIN_TTL..=longest).contains(&ttl) => ttl,
        Some(ttl) => {
            return Err(ApiError::new(
                ErrorCode::InvalidParameter,
                format!(
                    "ttl_ms is {} to {} (admin_session_ttl_ms), not {}",
                    MIN_TTL.as_millis(),
                    longest.as_millis(),
                    ttl.as_millis()
                ),
            ));
        }
    };
    let expires_at_ms = now_ms().saturating_add(ttl.as_millis() as u64);
    // The request came in with the admin token, and a node never forgets the one it has.
    let admin_token = state.inner.credentials.admin_token().ok_or_else(|| {
        ApiError::new(ErrorCode::NotReady, "this node has not adopted its cluster's admin token yet")
    })?;
    let token = issue(admin_token.as_bytes(), expires_at_ms);
    Ok((StatusCode::CREATED, Json(serde_json::json!({ "token": token, "expires_at_ms": expires_at_ms }))))
}

#[cfg(test)]
mod tests {
    use super::{Check, check, issue};

    #[test]
    fn a_session_token_is_valid_until_it_expires_and_only_under_its_key() {
        let token = issue(b"admin", 10_000);
        assert_eq!(check(b"admin", &token, 9_999), Check::Valid { expires_ms: 10_000 });
        assert_eq!(check(b"admin", &token, 10_000), Check::Expired { at_ms: 10_000 });
        assert_eq!(check(b"another admin token", &token, 0), Check::Forged);
        assert_ne!(issue(b"admin", 10_000), token, "each session is its own token");
    }

    #[test]
    fn a_session_token_with_any_part_changed_is_refused() {
        let token = issue(b"admin", 10_000);
        let later = token.replacen(".10000.", ".99999.", 1);
        assert_eq!(check(b"admin", &later, 0), Check::Forged, "its end cannot be moved");
        assert_eq!(check(b"admin", &token[..token.len() - 1], 0), Check::Forged);
        assert_eq!(check(b"admin", "serv-session.v1.", 0), Check::Forged);
        assert_eq!(check(b"admin", "serv-session.v1.x.y.z", 0), Check::Forged);
    }
}
