//! A route's `auth`: what a request must carry to be let through (401 otherwise). A bearer token
//! is checked on the request's head, before the rate limit and before any body is read; a
//! signature needs the body, and is checked once the body is read, before anything is forwarded
//! or published.

use axum::body::Body;
use axum::http::{HeaderMap, Response, header};
use axum::response::IntoResponse;
use serv_actors::route::RouteAuth;

use crate::admin::auth::same;
use crate::admin::session::hmac_sha256_hex;
use crate::admin::{ApiError, ErrorCode};

/// The header a signed request carries its signature in: `sha256=` and the hex HMAC-SHA256 of
/// the body under the route's key.
pub(super) const SIGNATURE_HEADER: &str = "x-hub-signature-256";

/// Lets a request through the head's check: the bearer token a route asks for.
pub(super) fn check_head(
    auth: Option<&RouteAuth>,
    route: &str,
    headers: &HeaderMap,
) -> Result<(), Response<Body>> {
    let Some(RouteAuth::Bearer(token)) = auth else { return Ok(()) };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match given {
        None => Err(ApiError::new(
            ErrorCode::MissingToken,
            format!("route {route} needs Authorization: Bearer <the route's token>"),
        )
        .into_response()),
        Some(given) if same(given.as_bytes(), token.as_bytes()) => Ok(()),
        Some(_) => Err(ApiError::new(ErrorCode::InvalidToken, format!("the token is not route {route}'s"))
            .into_response()),
    }
}

/// Lets a request through the body's check: the signature a route asks for.
pub(super) fn check_body(
    auth: Option<&RouteAuth>,
    route: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), Response<Body>> {
    let Some(RouteAuth::HmacSha256(key)) = auth else { return Ok(()) };
    let given =
        headers.get(SIGNATURE_HEADER).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("sha256="));
    let expected = hmac_sha256_hex(key.as_bytes(), body);
    match given {
        Some(given) if same(given.trim().to_ascii_lowercase().as_bytes(), expected.as_bytes()) => Ok(()),
        None => Err(ApiError::new(
            ErrorCode::InvalidSignature,
            format!("route {route} takes only signed requests: X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the body>"),
        )
        .into_response()),
        Some(_) => Err(ApiError::new(
            ErrorCode::InvalidSignature,
            format!("the signature is not of this body under route {route}'s key"),
        )
        .into_response()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(name, value)| (header::HeaderName::from_static(name), value.parse().unwrap()))
            .collect()
    }

    #[test]
    fn a_bearer_route_takes_its_token_only() {
        let auth = RouteAuth::Bearer("a-token-of-sixteen".into());
        assert!(
            check_head(Some(&auth), "r", &headers(&[("authorization", "Bearer a-token-of-sixteen")])).is_ok()
        );
        for wrong in [headers(&[]), headers(&[("authorization", "Bearer another-token-here")])] {
            let refused = check_head(Some(&auth), "r", &wrong).unwrap_err();
            assert_eq!(refused.status(), 401);
        }
        assert!(check_body(Some(&auth), "r", &headers(&[]), b"any").is_ok(), "no signature asked");
        assert!(check_head(None, "r", &headers(&[])).is_ok(), "an open route");
    }

    #[test]
    fn a_signed_route_checks_the_hmac_of_the_body() {
        // The example GitHub documents for X-Hub-Signature-256.
        let auth = RouteAuth::HmacSha256("It's a Secret to Everybody".into());
        let good = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert!(
            check_body(Some(&auth), "r", &headers(&[("x-hub-signature-256", good)]), b"Hello, World!")
                .is_ok()
        );
        let refused =
            check_body(Some(&auth), "r", &headers(&[("x-hub-signature-256", good)]), b"Hello, World?");
        assert_eq!(refused.unwrap_err().status(), 401);
        assert_eq!(check_body(Some(&auth), "r", &headers(&[]), b"Hello, World!").unwrap_err().status(), 401);
    }
}
