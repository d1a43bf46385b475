//! The TLS part of the configuration: the certificate and key every edge serves, and a TLS
//! listener per edge, each off unless its address is given. A TLS address needs the certificate
//! and key; they are read (and checked) at start, not here.

use std::net::SocketAddr;
use std::time::Duration;

use serv_edges::tls::{DEFAULT_HANDSHAKE_TIMEOUT, TlsFiles};

use super::{Cli, FileConfig};

/// TLS listeners and what they serve.
#[derive(Clone, Debug)]
pub struct TlsConfig {
    /// The certificate chain and key every TLS listener serves.
    pub files: Option<TlsFiles>,
    /// S3 over TLS (https).
    pub s3_addr: Option<SocketAddr>,
    /// The HTTP gateway over TLS (https).
    pub http_addr: Option<SocketAddr>,
    /// The admin API and console over TLS (https).
    pub admin_addr: Option<SocketAddr>,
    /// STOMP over TLS.
    pub stomp_addr: Option<SocketAddr>,
    /// STOMP over WebSocket over TLS (wss), path /ws.
    pub stomp_wss_addr: Option<SocketAddr>,
    /// A client must finish its TLS handshake within this time.
    pub handshake_timeout: Duration,
}

impl TlsConfig {
    /// Flags over the file's keys; the rest of the configuration takes the other fields.
    pub(super) fn resolve(cli: &Cli, file: &FileConfig) -> Result<Self, String> {
        let cert = cli.tls_cert.clone().or_else(|| file.tls_cert.clone());
        let key = cli.tls_key.clone().or_else(|| file.tls_key.clone());
        let files = match (cert, key) {
            (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
            (None, None) => None,
            (Some(_), None) => {
                return Err("--tls-cert needs --tls-key (the certificate's private key)".into());
            }
            (None, Some(_)) => {
                return Err("--tls-key needs --tls-cert (the certificate chain it signs for)".into());
            }
        };
        Ok(Self {
            files,
            s3_addr: cli.s3_tls_addr.or(file.s3_tls_addr),
            http_addr: cli.http_tls_addr.or(file.http_tls_addr),
            admin_addr: cli.admin_tls_addr.or(file.admin_tls_addr),
            stomp_addr: cli.stomp_tls_addr.or(file.stomp_tls_addr),
            stomp_wss_addr: cli.stomp_wss_addr.or(file.stomp_wss_addr),
            handshake_timeout: cli
                .tls_handshake_timeout_ms
                .or(file.tls_handshake_timeout_ms)
                .map_or(DEFAULT_HANDSHAKE_TIMEOUT, Duration::from_millis),
        })
    }

    /// The TLS listeners given, by configuration key.
    pub fn listeners(&self) -> impl Iterator<Item = (&'static str, SocketAddr)> {
        [
            ("s3_tls_addr", self.s3_addr),
            ("http_tls_addr", self.http_addr),
            ("admin_tls_addr", self.admin_addr),
            ("stomp_tls_addr", self.stomp_addr),
            ("stomp_wss_addr", self.stomp_wss_addr),
        ]
        .into_iter()
        .filter_map(|(name, addr)| Some((name, addr?)))
    }

    /// Refuses a TLS listener without a certificate to serve.
    pub(super) fn validate(&self) -> Result<(), String> {
        if self.files.is_none()
            && let Some((name, _)) = self.listeners().next()
        {
            let flag = format!("--{}", name.replace('_', "-"));
            return Err(format!(
                "{flag} needs --tls-cert and --tls-key (the PEM certificate chain and key every TLS listener serves)"
            ));
        }
        if self.handshake_timeout.is_zero() {
            return Err("tls_handshake_timeout_ms must be greater than 0".into());
        }
        Ok(())
    }
}
