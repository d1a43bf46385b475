//! CORS, as S3 does it: a bucket's rules (set with PutBucketCors, kept in its meta), the checks a
//! configuration must pass, and how a browser's request is matched against them.
//!
//! s3s routes no `OPTIONS`, so [`Cors`] answers preflight requests itself, before s3s sees them,
//! and adds `Access-Control-*` headers to the answers of actual cross-origin requests. A preflight
//! is unauthenticated, as in S3: it reveals only what the bucket's rules allow.

use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::http::{Method, StatusCode};
use s3s::dto::{CORSRule, CORSRules};
use s3s::{S3Error, S3ErrorCode, S3Result};
use serv_actors::bucket::{BucketMsg, BucketReply, CorsConfiguration, CorsRule, Refusal};
use serv_actors::{ActorKey, ActorKind, Directory};

use super::VirtualHosts;

/// Most rules in one bucket's CORS configuration (S3's limit).
pub(super) const MAX_CORS_RULES: usize = 100;
/// Largest CORS configuration, counting the text of its rules, in bytes (S3's limit: 64 KB).
pub(super) const MAX_CORS_CONFIGURATION_BYTES: usize = 64 * 1024;
/// Longest rule id, in characters.
const MAX_CORS_ID_CHARS: usize = 255;
/// The methods a CORS rule may allow.
const CORS_METHODS: [&str; 5] = ["GET", "PUT", "POST", "DELETE", "HEAD"];
/// Why a preflight no rule allows is refused.
const NOT_ALLOWED: &str = "CORSResponse: This CORS request is not allowed: no CORS rule of the bucket \
    allows its Origin, its method (Access-Control-Request-Method) and every header it asks for \
    (Access-Control-Request-Headers).";

/// The configuration a PutBucketCors stores, once it passes S3's checks: at least one rule and
/// at most [`MAX_CORS_RULES`], each with an origin and a known method, at most one `*` in an
/// origin or header pattern, and no more than [`MAX_CORS_CONFIGURATION_BYTES`] in all.
pub(super) fn configuration(rules: CORSRules) -> S3Result<CorsConfiguration> {
    let invalid = |message: String| Err(S3Error::with_message(S3ErrorCode::InvalidRequest, message));
    if rules.is_empty() {
        return Err(S3Error::with_message(
            S3ErrorCode::MalformedXML,
            "A CORS configuration needs a CORSRule",
        ));
    }
    if rules.len() > MAX_CORS_RULES {
        return Err(S3Error::with_message(
            S3ErrorCode::MalformedXML,
            format!("A CORS configuration may hold at most {MAX_CORS_RULES} rules"),
        ));
    }
    let mut bytes = 0;
    let mut stored = Vec::with_capacity(rules.len());
    for rule in rules {
        let rule = CorsRule {
            id: rule.id,
            allowed_origins: rule.allowed_origins,
            allowed_methods: rule.allowed_methods,
            allowed_headers: rule.allowed_headers.unwrap_or_default(),
            expose_headers: rule.expose_headers.unwrap_or_default(),
            max_age_seconds: rule.max_age_seconds,
        };
        if rule.allowed_origins.is_empty() || rule.allowed_methods.is_empty() {
            return Err(S3Error::with_message(
                S3ErrorCode::MalformedXML,
                "Each CORSRule needs an AllowedOrigin and an AllowedMethod",
            ));
        }
        if let Some(method) = rule.allowed_methods.iter().find(|m| !CORS_METHODS.contains(&m.as_str())) {
            return invalid(format!(
                "Found unsupported HTTP method in CORS config. Unsupported method is {method}"
            ));
        }
        for origin in &rule.allowed_origins {
            if origin.matches('*').count() > 1 {
                return invalid(format!("AllowedOrigin \"{origin}\" can not have more than one wildcard."));
            }
        }
        for allowed in &rule.allowed_headers {
            if allowed.matches('*').count() > 1 {
                return invalid(format!("AllowedHeader \"{allowed}\" can not have more than one wildcard."));
            }
        }
        if rule.id.as_ref().is_some_and(|id| id.chars().count() > MAX_CORS_ID_CHARS) {
            return invalid(format!("A CORSRule ID may be at most {MAX_CORS_ID_CHARS} characters"));
        }
        if rule.max_age_seconds.is_some_and(|age| age < 0) {
            return invalid("MaxAgeSeconds must not be negative".to_string());
        }
        let lists =
            [&rule.allowed_origins, &rule.allowed_methods, &rule.allowed_headers, &rule.expose_headers];
        bytes += rule.id.as_ref().map_or(0, String::len)
            + lists.iter().flat_map(|list| list.iter()).map(String::len).sum::<usize>();
        if bytes > MAX_CORS_CONFIGURATION_BYTES {
            return invalid(format!(
                "The CORS configuration is larger than {MAX_CORS_CONFIGURATION_BYTES} bytes"
            ));
        }
        stored.push(rule);
    }
    Ok(CorsConfiguration { rules: stored })
}

/// A stored configuration as GetBucketCors answers it.
pub(super) fn rules_of(configuration: CorsConfiguration) -> CORSRules {
    let non_empty = |list: Vec<String>| (!list.is_empty()).then_some(list);
    configuration
        .rules
        .into_iter()
        .map(|rule| CORSRule {
            id: rule.id,
            allowed_origins: rule.allowed_origins,
            allowed_methods: rule.allowed_methods,
            allowed_headers: non_empty(rule.allowed_headers),
            expose_headers: non_empty(rule.expose_headers),
            max_age_seconds: rule.max_age_seconds,
        })
        .collect()
}

/// The first rule that allows a request from `origin` with `method` (the request's own, or the
/// one a preflight announces) and, for a preflight, `request_headers`: S3 uses that rule alone.
pub(super) fn matching_rule<'a>(
    configuration: &'a CorsConfiguration,
    origin: &str,
    method: &str,
    request_headers: &[&str],
) -> Option<&'a CorsRule> {
    configuration.rules.iter().find(|rule| {
        rule.allowed_origins.iter().any(|allowed| wildcard_match(allowed, origin, false))
            && rule.allowed_methods.iter().any(|allowed| allowed == method)
            && request_headers.iter().all(|wanted| {
                rule.allowed_headers.iter().any(|allowed| wildcard_match(allowed, wanted, true))
            })
    })
}

/// Whether `value` matches `pattern`, in which one `*` stands for any run of characters.
fn wildcard_match(pattern: &str, value: &str, ignore_case: bool) -> bool {
    let (pattern, value) = if ignore_case {
        (pattern.to_ascii_lowercase(), value.to_ascii_lowercase())
    } else {
        (pattern.to_string(), value.to_string())
    };
    match pattern.split_once('*') {
        None => pattern == value,
        Some((head, tail)) => {
            value.len() >= head.len() + tail.len() && value.starts_with(head) && value.ends_with(tail)
        }
    }
}

/// The `Access-Control-*` headers that grant `origin` what `rule` allows; for a preflight, with
/// the request headers it asked for.
fn grant(rule: &CorsRule, origin: &str, preflight_headers: Option<&[&str]>) -> HeaderMap {
    let mut headers = HeaderMap::new();
    let mut put = |name: HeaderName, value: String| {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(name, value);
        }
    };
    // A rule open to every origin answers `*`, and then no credentials may be sent.
    if rule.allowed_origins.iter().any(|allowed| allowed == "*") {
        put(header::ACCESS_CONTROL_ALLOW_ORIGIN, "*".to_string());
    } else {
        put(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.to_string());
        put(header::ACCESS_CONTROL_ALLOW_CREDENTIALS, "true".to_string());
    }
    put(header::ACCESS_CONTROL_ALLOW_METHODS, rule.allowed_methods.join(", "));
    if let Some(requested) = preflight_headers.filter(|requested| !requested.is_empty()) {
        put(header::ACCESS_CONTROL_ALLOW_HEADERS, requested.join(", "));
    }
    if !rule.expose_headers.is_empty() {
        put(header::ACCESS_CONTROL_EXPOSE_HEADERS, rule.expose_headers.join(", "));
    }
    if let Some(age) = rule.max_age_seconds {
        put(header::ACCESS_CONTROL_MAX_AGE, age.to_string());
    }
    put(header::VARY, "Origin, Access-Control-Request-Headers, Access-Control-Request-Method".to_string());
    headers
}

/// Answers preflights and decorates cross-origin answers, reading each bucket's rules from its
/// actor.
pub(super) struct Cors {
    directory: Directory,
    hosts: Option<VirtualHosts>,
}

/// What a bucket's actor says of its CORS rules.
enum Rules {
    Set(CorsConfiguration),
    Unset,
    NoBucket,
}

/// The bucket a request names, and whether it names an object in it.
struct Target {
    bucket: String,
    object: bool,
}

impl Cors {
    pub(super) fn new(directory: Directory, hosts: Option<VirtualHosts>) -> Self {
        Self { directory, hosts }
    }

    /// The bucket of a request: from a virtual host (`bucket.domain`) or the path's first segment.
    fn target(&self, headers: &HeaderMap, path: &str) -> Option<Target> {
        let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
        let path = path.trim_start_matches('/');
        if let Some(bucket) = self.hosts.as_ref().zip(host).and_then(|(hosts, host)| hosts.bucket_of(host)) {
            return Some(Target { bucket: bucket.to_string(), object: !path.is_empty() });
        }
        let (bucket, key) = path.split_once('/').unwrap_or((path, ""));
        (!bucket.is_empty()).then(|| Target { bucket: bucket.to_string(), object: !key.is_empty() })
    }

    /// The bucket's CORS rules, or the error to answer when its actor cannot say.
    async fn rules(&self, bucket: &str) -> Result<Rules, s3s::HttpResponse> {
        let key = ActorKey::new(ActorKind::Bucket, bucket);
        match self.directory.call(&key, BucketMsg::Head).await {
            Ok(BucketReply::Info(info)) => Ok(info.cors.map_or(Rules::Unset, Rules::Set)),
            Ok(BucketReply::Refused(Refusal::NoSuchBucket)) => Ok(Rules::NoBucket),
            Ok(other) => {
                tracing::error!(?other, "bucket actor gave an unexpected answer to Head");
                Err(error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "InternalError",
                    "We encountered an internal error. Please try again.",
                    None,
                ))
            }
            Err(e) => {
                tracing::warn!(error = %e, "bucket actor unavailable for a CORS check");
                Err(error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "ServiceUnavailable",
                    "The bucket is unavailable; retry later.",
                    None,
                ))
            }
        }
    }

    /// The answer to an `OPTIONS` request: 200 with what the first matching rule grants, else an
    /// S3 error (400 without `Origin` or a method to check, 403 when no rule allows it or there is
    /// no such bucket, as S3 answers).
    pub(super) async fn preflight(&self, headers: &HeaderMap, path: &str) -> s3s::HttpResponse {
        let text = |name: HeaderName| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
        let Some(origin) = text(header::ORIGIN) else {
            return error(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                "Insufficient information. Origin request header needed.",
                None,
            );
        };
        let Some(method) = text(header::ACCESS_CONTROL_REQUEST_METHOD).filter(|m| !m.is_empty()) else {
            return error(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                "Invalid Access-Control-Request-Method: null",
                None,
            );
        };
        let requested: Vec<&str> = text(header::ACCESS_CONTROL_REQUEST_HEADERS)
            .map(|list| list.split(',').map(str::trim).filter(|h| !h.is_empty()).collect())
            .unwrap_or_default();
        let forbidden = |message: &str, target: Option<&Target>| {
            let resource = match target {
                Some(Target { object: true, .. }) => "OBJECT",
                _ => "BUCKET",
            };
            error(StatusCode::FORBIDDEN, "AccessForbidden", message, Some((method, resource)))
        };
        let Some(target) = self.target(headers, path) else {
            return forbidden("CORSResponse: Bucket not found", None);
        };
        let configuration = match self.rules(&target.bucket).await {
            Ok(Rules::Set(configuration)) => configuration,
            Ok(Rules::Unset) => {
                return forbidden("CORSResponse: CORS is not enabled for this bucket.", Some(&target));
            }
            Ok(Rules::NoBucket) => return forbidden("CORSResponse: Bucket not found", Some(&target)),
            Err(answer) => return answer,
        };
        match matching_rule(&configuration, origin, method, &requested) {
            Some(rule) => {
                let mut response = respond(StatusCode::OK, String::new());
                response.headers_mut().extend(grant(rule, origin, Some(&requested)));
                response
            }
            None => forbidden(NOT_ALLOWED, Some(&target)),
        }
    }

    /// Adds to the answer of an actual request from `origin` what the bucket's first rule that
    /// allows it grants (nothing when none does).
    pub(super) async fn decorate(
        &self,
        request: (&Method, &HeaderMap, &str),
        origin: &str,
        response: &mut s3s::HttpResponse,
    ) {
        let (method, headers, path) = request;
        let Some(target) = self.target(headers, path) else { return };
        let Ok(Rules::Set(configuration)) = self.rules(&target.bucket).await else { return };
        if let Some(rule) = matching_rule(&configuration, origin, method.as_str(), &[]) {
            response.headers_mut().extend(grant(rule, origin, None));
        }
    }
}

fn respond(status: StatusCode, body: String) -> s3s::HttpResponse {
    let mut response = s3s::HttpResponse::new(s3s::Body::from(body));
    *response.status_mut() = status;
    response
}

/// An S3 XML error answer; a refused preflight also names the method and kind of resource.
fn error(status: StatusCode, code: &str, message: &str, refused: Option<(&str, &str)>) -> s3s::HttpResponse {
    let mut xml = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{}</Message>",
        escape(message)
    );
    if let Some((method, resource)) = refused {
        xml.push_str(&format!("<Method>{}</Method><ResourceType>{resource}</ResourceType>", escape(method)));
    }
    xml.push_str("</Error>");
    let mut response = respond(status, xml);
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/xml"));
    response
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

#[cfg(test)]
mod tests;
