//! WASM middleware: a route's module sees each request's head before anything else is done with
//! it, and lets it through (possibly rewritten) or refuses it; and it sees the upstream's answer
//! (status and headers) before the gateway sends it on, and may rewrite or refuse that too.
//!
//! A head crosses as text: for a request `METHOD PATH[?QUERY]\n`, for a response `STATUS\n`, then
//! `name: value\n` per header (names in lower case, values that are not UTF-8 left out). The
//! module's `serv_request` / `serv_response` answers the head to go on with, in the same form (it
//! replaces the request's method, path and headers, or the response's status and headers; the
//! body's framing headers stay the gateway's), or a negative status: `-S` with `S` in 400..=599
//! is answered with status `S`, any other with 403. A module with only one of the hooks leaves
//! the other side alone.

use axum::body::Body;
use axum::response::IntoResponse;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::http::{request, response};
use hyper::{Method, Response, StatusCode, Uri};
use serv_actors::Directory;
use serv_actors::module::ModuleFailure;
use serv_wasm_host::{Hook, WasmError};

use crate::admin::{ApiError, ErrorCode};

/// Runs the `serv_request` of `module` (if it has one) on the request head in `parts`: `Ok` with
/// `parts` rewritten as the module answered, or the response that refuses the request.
pub(super) async fn request(
    directory: &Directory,
    route: &str,
    module: &str,
    parts: &mut request::Parts,
) -> Result<(), Response<Body>> {
    let Some(output) = call(directory, route, module, Hook::Request, request_head(parts)).await? else {
        return Ok(());
    };
    rewrite_request(parts, &output).map_err(|why| malformed(route, module, &why))
}

/// Runs the `serv_response` of `module` (if it has one) on the upstream's answer in `parts`: `Ok`
/// with `parts` rewritten as the module answered, or the response that replaces it.
pub(super) async fn response(
    directory: &Directory,
    route: &str,
    module: &str,
    parts: &mut response::Parts,
) -> Result<(), Response<Body>> {
    let Some(output) = call(directory, route, module, Hook::Response, response_head(parts)).await? else {
        return Ok(());
    };
    rewrite_response(parts, &output).map_err(|why| malformed(route, module, &why))
}

fn refuse(code: ErrorCode, message: String) -> Response<Body> {
    ApiError::new(code, message).into_response()
}

fn malformed(route: &str, module: &str, why: &str) -> Response<Body> {
    refuse(ErrorCode::MiddlewareFailed, format!("route {route}'s middleware {module} answered {why}"))
}

/// The module's answer to `hook` on `head`; `None` when it has no such hook.
async fn call(
    directory: &Directory,
    route: &str,
    module: &str,
    hook: Hook,
    head: Vec<u8>,
) -> Result<Option<Vec<u8>>, Response<Body>> {
    let Some(runtime) = directory.modules() else {
        return Err(refuse(ErrorCode::MiddlewareFailed, "this node runs no WASM modules".into()));
    };
    let failure = |failure: ModuleFailure| {
        let code = match failure {
            ModuleFailure::Unavailable(..) => ErrorCode::Unavailable,
            _ => ErrorCode::MiddlewareFailed,
        };
        refuse(code, format!("route {route}'s middleware: {failure}"))
    };
    let outputs = match runtime.run(directory, module, hook, vec![head]).await {
        Ok(outputs) => outputs,
        // A middleware with only the other hook leaves this side alone.
        Err(ModuleFailure::NoHook(..)) => return Ok(None),
        Err(other) => return Err(failure(other)),
    };
    let why = match outputs.into_iter().next() {
        Some(Ok(output)) => return Ok(Some(output)),
        Some(Err(WasmError::Refused(code))) => {
            let status = u16::try_from(code)
                .ok()
                .and_then(|code| StatusCode::from_u16(code).ok())
                .filter(|status| status.is_client_error() || status.is_server_error())
                .unwrap_or(StatusCode::FORBIDDEN);
            let side = if hook == Hook::Request { "request" } else { "upstream's response" };
            let message = format!("route {route}'s middleware {module} refused the {side} ({status})");
            let mut response = refuse(ErrorCode::MiddlewareRefused, message);
            *response.status_mut() = status;
            return Err(response);
        }
        Some(Err(error)) => error.to_string(),
        None => "answered nothing".to_string(),
    };
    Err(refuse(ErrorCode::MiddlewareFailed, format!("route {route}'s middleware {module} {why}")))
}

fn request_head(parts: &request::Parts) -> Vec<u8> {
    let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    with_headers(format!("{} {target}\n", parts.method), &parts.headers)
}

fn response_head(parts: &response::Parts) -> Vec<u8> {
    with_headers(format!("{}\n", parts.status.as_u16()), &parts.headers)
}

fn with_headers(first: String, headers: &HeaderMap) -> Vec<u8> {
    let mut head = first.into_bytes();
    for (name, value) in headers {
        if let Ok(value) = value.to_str() {
            head.extend_from_slice(format!("{name}: {value}\n").as_bytes());
        }
    }
    head
}

/// Replaces the method, path and headers of `parts` with those of the module's answer.
fn rewrite_request(parts: &mut request::Parts, output: &[u8]) -> Result<(), String> {
    let (first, headers) = parse(output)?;
    let (method, target) =
        first.split_once(' ').ok_or_else(|| format!("a first line {first:?}, not METHOD PATH"))?;
    let method = Method::from_bytes(method.as_bytes()).map_err(|_| format!("a bad method {method:?}"))?;
    if !target.starts_with('/') {
        return Err(format!("a path {target:?} that does not start with '/'"));
    }
    let uri: Uri = target.parse().map_err(|_| format!("a bad path {target:?}"))?;
    parts.method = method;
    parts.uri = uri;
    parts.headers = framed_as_before(headers, &parts.headers);
    Ok(())
}

/// Replaces the status and headers of `parts` with those of the module's answer.
fn rewrite_response(parts: &mut response::Parts, output: &[u8]) -> Result<(), String> {
    let (first, headers) = parse(output)?;
    let status = first
        .parse::<u16>()
        .ok()
        .and_then(|code| StatusCode::from_u16(code).ok())
        .ok_or_else(|| format!("a first line {first:?}, not a status"))?;
    parts.status = status;
    parts.headers = framed_as_before(headers, &parts.headers);
    Ok(())
}

/// The first line and the headers of a head the module answered.
fn parse(output: &[u8]) -> Result<(&str, HeaderMap), String> {
    let text = std::str::from_utf8(output).map_err(|_| "a head that is not UTF-8".to_string())?;
    let mut lines = text.split('\n');
    let first = lines.next().unwrap_or_default();
    let mut headers = HeaderMap::new();
    for line in lines.filter(|line| !line.is_empty()) {
        let (name, value) =
            line.split_once(':').ok_or_else(|| format!("a header line {line:?} without ':'"))?;
        let name = HeaderName::from_bytes(name.trim().as_bytes())
            .map_err(|_| format!("a bad header name {name:?}"))?;
        let value =
            HeaderValue::from_str(value.trim()).map_err(|_| format!("a bad value for header {name}"))?;
        headers.append(name, value);
    }
    Ok((first, headers))
}

/// `headers` with the body's framing (`content-length`, `transfer-encoding`) as it was: the body
/// is passed on as it is, so its framing is not the module's to change.
fn framed_as_before(mut headers: HeaderMap, before: &HeaderMap) -> HeaderMap {
    for name in [header::CONTENT_LENGTH, header::TRANSFER_ENCODING] {
        headers.remove(&name);
        for value in before.get_all(&name) {
            headers.append(name.clone(), value.clone());
        }
    }
    headers
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(method: &str, target: &str, headers: &[(&str, &str)]) -> request::Parts {
        let mut builder = hyper::Request::builder().method(method).uri(target);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).unwrap().into_parts().0
    }

    #[test]
    fn the_head_crosses_as_text_and_comes_back_as_the_request() {
        let mut request = parts("POST", "/a/b?x=1", &[("host", "api"), ("x-key", "open")]);
        let text = request_head(&request);
        assert_eq!(text, b"POST /a/b?x=1\nhost: api\nx-key: open\n");
        rewrite_request(&mut request, b"GET /c?y=2\nhost: api\nx-added: yes\n").unwrap();
        assert_eq!((request.method.as_str(), request.uri.to_string().as_str()), ("GET", "/c?y=2"));
        assert_eq!(request.headers.get("x-added").unwrap(), "yes");
        assert!(request.headers.get("x-key").is_none(), "the module's headers replace the request's");
    }

    #[test]
    fn a_malformed_answer_is_refused_and_changes_nothing() {
        let mut request = parts("GET", "/a", &[("host", "api")]);
        for bad in
            [&b"GET"[..], b"GET a", b"G\x01T /a", b"GET /a\nno colon\n", b"GET /a\nbad name: v\n", b"\xff"]
        {
            assert!(rewrite_request(&mut request, bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        assert_eq!((request.method.as_str(), request.uri.path()), ("GET", "/a"));
        assert_eq!(request.headers.get("host").unwrap(), "api");
    }

    #[test]
    fn a_response_head_is_rewritten_but_its_framing_stays() {
        let (mut answer, ()) = hyper::Response::builder()
            .status(200)
            .header("content-length", "5")
            .header("x-upstream", "a")
            .body(())
            .unwrap()
            .into_parts();
        assert_eq!(response_head(&answer), b"200\ncontent-length: 5\nx-upstream: a\n");
        rewrite_response(&mut answer, b"203\ncontent-length: 999\nx-added: yes\n").unwrap();
        assert_eq!(answer.status, StatusCode::NON_AUTHORITATIVE_INFORMATION);
        assert_eq!(answer.headers.get("content-length").unwrap(), "5", "the body's framing stays");
        assert_eq!(answer.headers.get("x-added").unwrap(), "yes");
        assert!(answer.headers.get("x-upstream").is_none());
        for bad in [&b"OK\n"[..], b"99\n", b"200\nno colon\n"] {
            assert!(rewrite_response(&mut answer, bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }
}
