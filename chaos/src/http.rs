//! The harness's HTTP client: plain hyper over loopback, SigV4 signing for S3 (unsigned payload,
//! path style) and bearer-token calls to the admin API. Every call has a deadline, and its error
//! says whether the request may have reached the node (see `Outcome`).

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use hmac::{Hmac, KeyInit, Mac};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use sha2::{Digest, Sha256};

use crate::history::Outcome;

/// How long one request may take before its outcome is unknown.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const REGION: &str = "us-east-1";

/// A response: status and body.
pub struct Response {
    pub status: u16,
    pub body: Bytes,
}

/// A request that got no response, and whether it may have been applied.
#[derive(Debug)]
pub struct Failure {
    /// `Fail` when the connection was refused (nothing was sent), else `Unknown`.
    pub outcome: Outcome,
    pub error: String,
}

/// A client for S3 and admin calls to any node.
#[derive(Clone)]
pub struct Http {
    client: Client<HttpConnector, Full<Bytes>>,
    access_key: String,
    secret_key: String,
    admin_token: String,
}

impl Http {
    pub fn new(access_key: &str, secret_key: &str, admin_token: &str) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(2)));
        let client =
            Client::builder(TokioExecutor::new()).pool_idle_timeout(Duration::from_secs(5)).build(connector);
        Http {
            client,
            access_key: access_key.into(),
            secret_key: secret_key.into(),
            admin_token: admin_token.into(),
        }
    }

    /// A SigV4-signed S3 request: `path` is already URI-encoded, `query` is canonical (sorted,
    /// encoded) or empty.
    pub async fn s3(
        &self,
        method: &str,
        addr: SocketAddr,
        path: &str,
        query: &str,
        body: Bytes,
    ) -> Result<Response, Failure> {
        let (date, host) = (amz_date(), addr.to_string());
        let day = &date[..8];
        let canonical = format!(
            "{method}\n{path}\n{query}\nhost:{host}\nx-amz-content-sha256:UNSIGNED-PAYLOAD\nx-amz-date:{date}\n\n\
             host;x-amz-content-sha256;x-amz-date\nUNSIGNED-PAYLOAD"
        );
        let scope = format!("{day}/{REGION}/s3/aws4_request");
        let to_sign =
            format!("AWS4-HMAC-SHA256\n{date}\n{scope}\n{}", hex(&Sha256::digest(canonical.as_bytes())));
        let key = [REGION, "s3", "aws4_request"]
            .iter()
            .fold(hmac(format!("AWS4{}", self.secret_key).as_bytes(), day), |key, part| hmac(&key, part));
        let authorization = format!(
            "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders=host;x-amz-content-sha256;x-amz-date, \
             Signature={}",
            self.access_key,
            hex(&hmac(&key, &to_sign))
        );
        let uri = if query.is_empty() {
            format!("http://{host}{path}")
        } else {
            format!("http://{host}{path}?{query}")
        };
        let request = hyper::Request::builder()
            .method(method)
            .uri(uri)
            .header("host", host)
            .header("x-amz-date", date)
            .header("x-amz-content-sha256", "UNSIGNED-PAYLOAD")
            .header("authorization", authorization)
            .body(Full::new(body))
            .map_err(|e| Failure { outcome: Outcome::Fail, error: e.to_string() })?;
        self.send(request).await
    }

    /// An admin API call with the bearer token.
    pub async fn admin(&self, method: &str, addr: SocketAddr, path: &str) -> Result<Response, Failure> {
        self.admin_with(method, addr, path, Bytes::new()).await
    }

    /// An admin API call with the bearer token and a body.
    pub async fn admin_with(
        &self,
        method: &str,
        addr: SocketAddr,
        path: &str,
        body: Bytes,
    ) -> Result<Response, Failure> {
        let request = hyper::Request::builder()
            .method(method)
            .uri(format!("http://{addr}{path}"))
            .header("authorization", format!("Bearer {}", self.admin_token))
            .body(Full::new(body))
            .map_err(|e| Failure { outcome: Outcome::Fail, error: e.to_string() })?;
        self.send(request).await
    }

    /// An admin GET whose body is JSON.
    pub async fn admin_json(&self, addr: SocketAddr, path: &str) -> Result<serde_json::Value, String> {
        let response = self.admin("GET", addr, path).await.map_err(|f| f.error)?;
        if response.status != 200 {
            return Err(format!(
                "{path}: HTTP {} {}",
                response.status,
                String::from_utf8_lossy(&response.body)
            ));
        }
        serde_json::from_slice(&response.body).map_err(|e| format!("{path}: {e}"))
    }

    async fn send(&self, request: hyper::Request<Full<Bytes>>) -> Result<Response, Failure> {
        let call = async {
            let response = self.client.request(request).await.map_err(|e| {
                let outcome = if e.is_connect() { Outcome::Fail } else { Outcome::Unknown };
                Failure { outcome, error: format!("{e:?}") }
            })?;
            let status = response.status().as_u16();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| Failure { outcome: Outcome::Unknown, error: e.to_string() })?
                .to_bytes();
            Ok(Response { status, body })
        };
        tokio::time::timeout(REQUEST_TIMEOUT, call).await.unwrap_or_else(|_| {
            Err(Failure {
                outcome: Outcome::Unknown,
                error: format!("no response within {REQUEST_TIMEOUT:?}"),
            })
        })
    }
}

/// `YYYYMMDDTHHMMSSZ` for now (UTC), from the civil-from-days algorithm.
fn amz_date() -> String {
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rest) = ((secs / 86_400) as i64, secs % 86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}{month:02}{day:02}T{:02}{:02}{:02}Z", rest / 3600, rest % 3600 / 60, rest % 60)
}

fn hmac(key: &[u8], data: &str) -> Vec<u8> {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(data.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A short content hash for the report: the first 8 bytes of SHA-256, in hex.
pub fn short_hash(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes)[..8])
}
