//! WASM middleware: a route's module sees each request's head before anything else is done with
//! it, and lets it through (possibly rewritten) or refuses it.
//!
//! The head crosses as text: `METHOD PATH[?QUERY]\n`, then `name: value\n` per header (names in
//! lower case, values that are not UTF-8 left out). The module's `serv_request` answers the head
//! to go on with, in the same form (its method, path and headers replace the request's), or a
//! negative status: `-S` with `S` in 400..=599 is answered with status `S`, any other with 403.

use axum::body::Body;
use axum::response::IntoResponse;
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper::http::request::Parts;
use hyper::{Method, Response, StatusCode, Uri};
use serv_actors::Directory;
use serv_actors::module::ModuleFailure;
use serv_wasm_host::{Hook, WasmError};

use crate::admin::{ApiError, ErrorCode};

/// Runs `module` on the request head in `parts` for route `route`: `Ok` with `parts` rewritten
/// as the module answered, or the response that refuses the request.
pub(super) async fn apply(
    directory: &Directory,
    route: &str,
    module: &str,
    parts: &mut Parts,
) -> Result<(), Response<Body>> {
    let refuse = |code, message: String| ApiError::new(code, message).into_response();
    let Some(runtime) = directory.modules() else {
        return Err(refuse(ErrorCode::MiddlewareFailed, "this node runs no WASM modules".into()));
    };
    let outputs = match runtime.run(directory, module, Hook::Request, vec![head(parts)]).await {
        Ok(outputs) => outputs,
        Err(failure @ ModuleFailure::Unavailable(..)) => {
            return Err(refuse(ErrorCode::Unavailable, format!("route {route}'s middleware: {failure}")));
        }
        Err(failure) => {
            return Err(refuse(
                ErrorCode::MiddlewareFailed,
                format!("route {route}'s middleware: {failure}"),
            ));
        }
    };
    let why = match outputs.into_iter().next() {
        Some(Ok(output)) => match rewrite(parts, &output) {
            Ok(()) => return Ok(()),
            Err(why) => format!("answered {why}"),
        },
        Some(Err(WasmError::Refused(code))) => {
            let status = u16::try_from(code)
                .ok()
                .and_then(|code| StatusCode::from_u16(code).ok())
                .filter(|status| status.is_client_error() || status.is_server_error())
                .unwrap_or(StatusCode::FORBIDDEN);
            let message = format!("route {route}'s middleware {module} refused the request ({status})");
            let mut response = refuse(ErrorCode::MiddlewareRefused, message);
            *response.status_mut() = status;
            return Err(response);
        }
        Some(Err(error)) => error.to_string(),
        None => "answered nothing".to_string(),
    };
    Err(refuse(ErrorCode::MiddlewareFailed, format!("route {route}'s middleware {module} {why}")))
}

/// The head as the module sees it.
fn head(parts: &Parts) -> Vec<u8> {
    let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut head = format!("{} {target}\n", parts.method).into_bytes();
    for (name, value) in &parts.headers {
        if let Ok(value) = value.to_str() {
            head.extend_from_slice(format!("{name}: {value}\n").as_bytes());
        }
    }
    head
}

/// Replaces the method, path and headers of `parts` with those of the module's answer.
fn rewrite(parts: &mut Parts, output: &[u8]) -> Result<(), String> {
    let text = std::str::from_utf8(output).map_err(|_| "a head that is not UTF-8".to_string())?;
    let mut lines = text.split('\n');
    let first = lines.next().unwrap_or_default();
    let (method, target) =
        first.split_once(' ').ok_or_else(|| format!("a first line {first:?}, not METHOD PATH"))?;
    let method = Method::from_bytes(method.as_bytes()).map_err(|_| format!("a bad method {method:?}"))?;
    if !target.starts_with('/') {
        return Err(format!("a path {target:?} that does not start with '/'"));
    }
    let uri: Uri = target.parse().map_err(|_| format!("a bad path {target:?}"))?;
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
    parts.method = method;
    parts.uri = uri;
    parts.headers = headers;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(method: &str, target: &str, headers: &[(&str, &str)]) -> Parts {
        let mut builder = hyper::Request::builder().method(method).uri(target);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).unwrap().into_parts().0
    }

    #[test]
    fn the_head_crosses_as_text_and_comes_back_as_the_request() {
        let mut request = parts("POST", "/a/b?x=1", &[("host", "api"), ("x-key", "open")]);
        let text = head(&request);
        assert_eq!(text, b"POST /a/b?x=1\nhost: api\nx-key: open\n");
        rewrite(&mut request, b"GET /c?y=2\nhost: api\nx-added: yes\n").unwrap();
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
            assert!(rewrite(&mut request, bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        assert_eq!((request.method.as_str(), request.uri.path()), ("GET", "/a"));
        assert_eq!(request.headers.get("host").unwrap(), "api");
    }
}
