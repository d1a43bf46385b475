//! What a gateway route stores and what can be asked of it.

use serde::{Deserialize, Serialize};
use serv_storage::codec::{self, CodecError};
use serv_storage::{Record, TableDef};

use crate::{ActorKind, KindMessage};

/// Every route, by name; a route's row lives with its owner (the route actor is its only writer).
pub const ROUTES: TableDef<String, RouteRecord> = TableDef::new("routes");

/// Largest request body a route may buffer (bodies are kept whole so that a retry can resend them).
pub const MAX_BODY_BYTES_LIMIT: u64 = 1024 * 1024 * 1024;
/// Longest per-attempt timeout a route may set.
pub const MAX_TIMEOUT_MS: u64 = 300_000;
/// Most retries a route may ask for.
pub const MAX_RETRIES: u32 = 10;
/// Most upstreams of one route.
pub const MAX_UPSTREAMS: usize = 64;
/// Shortest and longest secret a route's `auth` may name (a bearer token or an HMAC key).
pub const MIN_SECRET_BYTES: usize = 16;
pub const MAX_SECRET_BYTES: usize = 1024;

/// Who may call a route: what a request must carry, else it is refused with 401.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum RouteAuth {
    /// `Authorization: Bearer TOKEN`, this token.
    Bearer(String),
    /// `X-Hub-Signature-256: sha256=HEX`, the HMAC-SHA256 of the body under this key (the
    /// convention of GitHub's and many other services' webhooks).
    HmacSha256(String),
}

impl RouteAuth {
    /// The scheme alone, for views: a secret is never shown.
    pub fn scheme(&self) -> &'static str {
        match self {
            RouteAuth::Bearer(_) => "bearer",
            RouteAuth::HmacSha256(_) => "hmac_sha256",
        }
    }
}

/// Where a request goes and how it is guarded (the `/v1/routes/NAME` admin API sets it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RouteConfig {
    /// The `Host` the request must name (port ignored): exact, or `*.example.com` for any
    /// subdomain; `None` matches any host.
    pub host: Option<String>,
    /// The path the request must start with, at a segment boundary (`/api` matches `/api` and
    /// `/api/x`, not `/apix`).
    pub path_prefix: String,
    /// Methods allowed; empty allows any.
    pub methods: Vec<String>,
    /// Drop `path_prefix` from the path sent upstream.
    pub strip_prefix: bool,
    /// Base URLs (`http://host:port[/base]`) tried in turn, round robin.
    pub upstreams: Vec<String>,
    /// Instead of upstreams: a destination (`queue/NAME`, `topic/NAME`) that each request's
    /// body is published to, answered 202 once durable (a webhook bridge).
    pub topic: Option<String>,
    /// Longest wait for an upstream's response headers, per attempt.
    pub timeout_ms: u64,
    /// Further attempts after a failure: always when the upstream could not be reached, and for
    /// idempotent methods also after a timeout or a 502/503/504.
    pub retries: u32,
    /// Requests per second allowed through this node (with `rate_limit_burst`); `None`: no limit.
    pub rate_limit_per_s: Option<u32>,
    /// Requests allowed at once above the rate; defaults to the rate.
    pub rate_limit_burst: Option<u32>,
    /// Failures in a row (unreachable, timeout, 5xx) that open the circuit on a node.
    pub breaker_failures: u32,
    /// How long an open circuit refuses requests before it lets one trial through.
    pub breaker_open_ms: u64,
    /// Largest request body accepted (413 past it).
    pub max_body_bytes: u64,
    /// The WASM module whose `serv_request` hook sees each request's head first: it may let it
    /// through, rewrite its path and headers, or refuse it with a status.
    pub middleware: Option<String>,
    /// What a request must carry to be let through (checked before the rate limit, and for a
    /// signature once the body is read); `None`: anyone may call the route.
    pub auth: Option<RouteAuth>,
}

impl Default for RouteConfig {
    fn default() -> Self {
        Self {
            host: None,
            path_prefix: "/".into(),
            methods: Vec::new(),
            strip_prefix: false,
            upstreams: Vec::new(),
            topic: None,
            timeout_ms: 10_000,
            retries: 2,
            rate_limit_per_s: None,
            rate_limit_burst: None,
            breaker_failures: 5,
            breaker_open_ms: 10_000,
            max_body_bytes: 10 * 1024 * 1024,
            middleware: None,
            auth: None,
        }
    }
}

/// A route's durable record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteRecord {
    pub config: RouteConfig,
    /// A disabled route still matches, and answers 503 without reaching its upstreams.
    pub enabled: bool,
    pub created_ms: u64,
    pub updated_ms: u64,
}

impl Record for RouteRecord {
    const FORMAT: u8 = 3;

    fn upgrade(format: u8, body: &[u8]) -> Option<Result<Self, CodecError>> {
        match format {
            1 => Some(codec::decode::<v1::RouteRecord>(body).map(|old| v2::RouteRecord::from(old).into())),
            2 => Some(codec::decode::<v2::RouteRecord>(body).map(Into::into)),
            _ => None,
        }
    }
}

/// Format 2, before `auth`.
mod v2 {
    use serde::Deserialize;

    #[derive(Deserialize)]
    pub struct RouteConfig {
        pub host: Option<String>,
        pub path_prefix: String,
        pub methods: Vec<String>,
        pub strip_prefix: bool,
        pub upstreams: Vec<String>,
        pub topic: Option<String>,
        pub timeout_ms: u64,
        pub retries: u32,
        pub rate_limit_per_s: Option<u32>,
        pub rate_limit_burst: Option<u32>,
        pub breaker_failures: u32,
        pub breaker_open_ms: u64,
        pub max_body_bytes: u64,
        pub middleware: Option<String>,
    }

    #[derive(Deserialize)]
    pub struct RouteRecord {
        pub config: RouteConfig,
        pub enabled: bool,
        pub created_ms: u64,
        pub updated_ms: u64,
    }

    impl From<RouteRecord> for super::RouteRecord {
        fn from(old: RouteRecord) -> Self {
            let c = old.config;
            let config = super::RouteConfig {
                host: c.host,
                path_prefix: c.path_prefix,
                methods: c.methods,
                strip_prefix: c.strip_prefix,
                upstreams: c.upstreams,
                topic: c.topic,
                timeout_ms: c.timeout_ms,
                retries: c.retries,
                rate_limit_per_s: c.rate_limit_per_s,
                rate_limit_burst: c.rate_limit_burst,
                breaker_failures: c.breaker_failures,
                breaker_open_ms: c.breaker_open_ms,
                max_body_bytes: c.max_body_bytes,
                middleware: c.middleware,
                auth: None,
            };
            super::RouteRecord {
                config,
                enabled: old.enabled,
                created_ms: old.created_ms,
                updated_ms: old.updated_ms,
            }
        }
    }
}

/// Format 1, before middleware.
mod v1 {
    use serde::Deserialize;

    #[derive(Deserialize)]
    pub struct RouteConfig {
        host: Option<String>,
        path_prefix: String,
        methods: Vec<String>,
        strip_prefix: bool,
        upstreams: Vec<String>,
        topic: Option<String>,
        timeout_ms: u64,
        retries: u32,
        rate_limit_per_s: Option<u32>,
        rate_limit_burst: Option<u32>,
        breaker_failures: u32,
        breaker_open_ms: u64,
        max_body_bytes: u64,
    }

    #[derive(Deserialize)]
    pub struct RouteRecord {
        config: RouteConfig,
        enabled: bool,
        created_ms: u64,
        updated_ms: u64,
    }

    impl From<RouteRecord> for super::v2::RouteRecord {
        fn from(old: RouteRecord) -> Self {
            let c = old.config;
            let config = super::v2::RouteConfig {
                host: c.host,
                path_prefix: c.path_prefix,
                methods: c.methods,
                strip_prefix: c.strip_prefix,
                upstreams: c.upstreams,
                topic: c.topic,
                timeout_ms: c.timeout_ms,
                retries: c.retries,
                rate_limit_per_s: c.rate_limit_per_s,
                rate_limit_burst: c.rate_limit_burst,
                breaker_failures: c.breaker_failures,
                breaker_open_ms: c.breaker_open_ms,
                max_body_bytes: c.max_body_bytes,
                middleware: None,
            };
            super::v2::RouteRecord {
                config,
                enabled: old.enabled,
                created_ms: old.created_ms,
                updated_ms: old.updated_ms,
            }
        }
    }
}

/// What can be asked of a route.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RouteMsg {
    /// Creates the route (enabled) or replaces its config (keeping whether it is enabled).
    Put(Box<RouteConfig>),
    Get,
    /// Enables or disables the route.
    SetEnabled(bool),
    Delete,
}

/// A route's answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RouteReply {
    Route(Box<RouteRecord>),
    Deleted,
    Refused(RouteRefusal),
}

/// Why a route refused a message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RouteRefusal {
    NoSuchRoute,
    /// The config is not valid; the text says which field and why.
    Invalid(String),
}

impl KindMessage for RouteMsg {
    const KIND: ActorKind = ActorKind::Route;
    type Reply = RouteReply;
}

/// Checks a config before it is stored: every problem named with its field.
pub fn validate(config: &RouteConfig) -> Result<(), String> {
    let prefix = &config.path_prefix;
    if !prefix.starts_with('/') || prefix.chars().any(|c| c.is_whitespace() || c == '?' || c == '#') {
        return Err(format!("path_prefix must be a path starting with '/', not {prefix:?}"));
    }
    if let Some(host) = &config.host {
        let bare = host.strip_prefix("*.").unwrap_or(host);
        let valid = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '.';
        if bare.is_empty() || !bare.chars().all(valid) || host != &host.to_ascii_lowercase() {
            return Err(format!("host must be a lowercase DNS name or *.name, not {host:?}"));
        }
    }
    for method in &config.methods {
        if method.is_empty() || !method.chars().all(|c| c.is_ascii_uppercase()) {
            return Err(format!("methods must be uppercase HTTP methods, not {method:?}"));
        }
    }
    if let Some(module) = &config.middleware {
        crate::module::module_name(module).map_err(|e| format!("middleware: {e}"))?;
    }
    match &config.topic {
        Some(_) if !config.upstreams.is_empty() => {
            return Err("a route has upstreams or a topic, not both".into());
        }
        Some(topic) => {
            crate::topic::destination(topic).map_err(|e| format!("topic: {e}"))?;
        }
        None if config.upstreams.is_empty() || config.upstreams.len() > MAX_UPSTREAMS => {
            return Err(format!("upstreams must list 1 to {MAX_UPSTREAMS} base URLs (or give a topic)"));
        }
        None => {}
    }
    for upstream in &config.upstreams {
        let rest = upstream.strip_prefix("http://").ok_or_else(|| {
            format!("upstream {upstream:?} must start with http:// (TLS to upstreams is not supported yet)")
        })?;
        let authority = rest.split('/').next().unwrap_or_default();
        let port_ok = authority
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
        if !port_ok || upstream.contains(['?', '#', ' ']) {
            return Err(format!("upstream {upstream:?} must be http://HOST:PORT[/base]"));
        }
    }
    if !(1..=MAX_TIMEOUT_MS).contains(&config.timeout_ms) {
        return Err(format!("timeout_ms is 1 to {MAX_TIMEOUT_MS}"));
    }
    if config.retries > MAX_RETRIES {
        return Err(format!("retries is 0 to {MAX_RETRIES}"));
    }
    if config.rate_limit_per_s == Some(0) || config.rate_limit_burst == Some(0) {
        return Err("rate_limit_per_s and rate_limit_burst must be at least 1 when given".into());
    }
    if config.rate_limit_burst.is_some() && config.rate_limit_per_s.is_none() {
        return Err("rate_limit_burst needs rate_limit_per_s".into());
    }
    if config.breaker_failures == 0 || config.breaker_open_ms == 0 {
        return Err("breaker_failures and breaker_open_ms must be at least 1".into());
    }
    if !(1..=MAX_BODY_BYTES_LIMIT).contains(&config.max_body_bytes) {
        return Err(format!("max_body_bytes is 1 to {MAX_BODY_BYTES_LIMIT}"));
    }
    if let Some(RouteAuth::Bearer(secret) | RouteAuth::HmacSha256(secret)) = &config.auth {
        if !(MIN_SECRET_BYTES..=MAX_SECRET_BYTES).contains(&secret.len()) {
            return Err(format!("auth: the secret is {MIN_SECRET_BYTES} to {MAX_SECRET_BYTES} bytes"));
        }
        if !secret.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("auth: the secret is printable ASCII without spaces".into());
        }
    }
    Ok(())
}
