//! Cluster identity: proof that a peer belongs to the cluster, from the shared cluster secret.
//!
//! rustls offers no pre-shared-key mode, so the secret becomes a certificate authority: every
//! node derives the same CA key pair from the secret (an Ed25519 seed, BLAKE3-derived), and signs
//! a certificate of its own with it. QUIC connections between nodes are mutual TLS 1.3 with that
//! CA as the only trust anchor: a node that does not know the secret can present no certificate
//! the others accept, and cannot accept theirs, so it never reaches an actor. The secret itself
//! never crosses the wire.

use std::sync::Arc;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rcgen::{BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::WebPkiClientVerifier;

/// The name every node's certificate carries, and that a connecting node expects.
pub const SERVER_NAME: &str = "serv-cluster";
/// The application protocol of the mesh.
pub const ALPN: &[u8] = b"serv-mesh/1";

/// Why an identity could not be made.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("the cluster secret must be at least 16 characters")]
    WeakSecret,
    #[error("certificate: {0}")]
    Certificate(#[from] rcgen::Error),
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    #[error("QUIC configuration: {0}")]
    Quic(String),
}

/// A node's credentials in the cluster.
pub struct ClusterIdentity {
    ca: CertificateDer<'static>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivatePkcs8KeyDer<'static>,
}

/// PKCS#8 (v1) wrapping of an Ed25519 private key seed (RFC 8410).
fn ed25519_pkcs8(seed: &[u8; 32]) -> Vec<u8> {
    const PREFIX: [u8; 16] =
        [0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20];
    let mut der = PREFIX.to_vec();
    der.extend_from_slice(seed);
    der
}

/// How often an idle mesh connection proves it is alive.
const KEEP_ALIVE: std::time::Duration = std::time::Duration::from_secs(1);

/// How long a mesh connection may hear nothing before it counts as dead, so that the sessions
/// on it end (and are opened again) soon after a peer is killed.
const IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

fn transport() -> Arc<quinn::TransportConfig> {
    let mut transport = quinn::TransportConfig::default();
    transport.keep_alive_interval(Some(KEEP_ALIVE));
    transport.max_idle_timeout(Some(IDLE_TIMEOUT.try_into().expect("a small timeout")));
    Arc::new(transport)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl ClusterIdentity {
    /// The identity of node `node_id` in the cluster of `secret`.
    pub fn new(secret: &str, node_id: &str) -> Result<Self, IdentityError> {
        if secret.len() < 16 {
            return Err(IdentityError::WeakSecret);
        }
        let seed = blake3::derive_key("serv cluster certificate authority v1", secret.as_bytes());
        let ca_key = KeyPair::try_from(ed25519_pkcs8(&seed).as_slice())?;
        let mut ca_params = CertificateParams::default();
        ca_params.distinguished_name = DistinguishedName::new();
        ca_params.distinguished_name.push(DnType::CommonName, "serv cluster authority");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        ca_params.not_before = rcgen::date_time_ymd(2024, 1, 1);
        ca_params.not_after = rcgen::date_time_ymd(2124, 1, 1);
        let ca = ca_params.self_signed(&ca_key)?;

        let node_key = KeyPair::generate()?;
        let mut params = CertificateParams::new(vec![SERVER_NAME.to_string()])?;
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, node_id);
        params.not_before = rcgen::date_time_ymd(2024, 1, 1);
        params.not_after = rcgen::date_time_ymd(2124, 1, 1);
        let node = params.signed_by(&node_key, &ca, &ca_key)?;
        Ok(Self {
            ca: ca.der().clone(),
            chain: vec![node.der().clone()],
            key: PrivatePkcs8KeyDer::from(node_key.serialize_der()),
        })
    }

    fn roots(&self) -> Result<Arc<rustls::RootCertStore>, IdentityError> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca.clone())?;
        Ok(Arc::new(roots))
    }

    /// How this node accepts mesh connections: only from holders of a cluster certificate.
    pub fn server_config(&self) -> Result<quinn::ServerConfig, IdentityError> {
        let verifier = WebPkiClientVerifier::builder_with_provider(self.roots()?, provider())
            .build()
            .map_err(|e| IdentityError::Quic(e.to_string()))?;
        let mut tls = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.chain.clone(), PrivateKeyDer::Pkcs8(self.key.clone_key()))?;
        tls.alpn_protocols = vec![ALPN.to_vec()];
        let quic = QuicServerConfig::try_from(tls).map_err(|e| IdentityError::Quic(e.to_string()))?;
        let mut config = quinn::ServerConfig::with_crypto(Arc::new(quic));
        config.transport_config(transport());
        Ok(config)
    }

    /// How this node connects to others: presenting its certificate, trusting only the cluster's.
    pub fn client_config(&self) -> Result<quinn::ClientConfig, IdentityError> {
        let mut tls = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_root_certificates(self.roots()?)
            .with_client_auth_cert(self.chain.clone(), PrivateKeyDer::Pkcs8(self.key.clone_key()))?;
        tls.alpn_protocols = vec![ALPN.to_vec()];
        let quic = QuicClientConfig::try_from(tls).map_err(|e| IdentityError::Quic(e.to_string()))?;
        let mut config = quinn::ClientConfig::new(Arc::new(quic));
        config.transport_config(transport());
        Ok(config)
    }

    /// A QUIC endpoint on `addr` that serves and connects as this identity.
    pub fn endpoint(&self, addr: std::net::SocketAddr) -> Result<quinn::Endpoint, IdentityError> {
        let mut endpoint = quinn::Endpoint::server(self.server_config()?, addr)
            .map_err(|e| IdentityError::Quic(format!("cannot bind {addr}: {e}")))?;
        endpoint.set_default_client_config(self.client_config()?);
        Ok(endpoint)
    }
}

#[cfg(test)]
mod tests;
