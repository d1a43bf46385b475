//! TLS for the client edges. Every edge serves one certificate (a PEM chain and its private key,
//! [`TlsFiles`]), held by one [`ServerCertificate`] that [`reload`](ServerCertificate::reload)
//! replaces in place (on SIGHUP): a handshake picks the certificate current when it starts, so
//! new connections get the new one while open connections keep theirs.
//!
//! A [`TlsListener`] wraps an edge's [`LimitedListener`]: it accepts within the listener's
//! connection cap, runs each handshake in a task of its own under `handshake_timeout` (a client
//! that connects and never sends a ClientHello holds its slot only that long, and never delays
//! another's), and hands on finished TLS streams. It implements axum's `Listener`, as the plain
//! listener does, so each edge serves TLS with the very code that serves it in the clear.
//!
//! The crypto provider is ring's, as on the mesh: one provider for the whole binary.

use std::fs::File;
use std::io::{self, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{InconsistentKeys, ServerConfig};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::listener::{LimitedListener, LimitedStream};

/// Longest a TLS client may take to finish its handshake, unless configured otherwise.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest certificate or key file read; PEM files of real chains are a few KiB.
const MAX_PEM_FILE_BYTES: u64 = 1024 * 1024;

/// Finished handshakes waiting for the edge to take them; past it, handshakes wait.
const HANDSHAKEN_QUEUE_LEN: usize = 64;

/// Where the certificate chain and its private key are, both PEM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain, the server's own certificate first.
    pub cert: PathBuf,
    /// The private key of the first certificate: PKCS#8, PKCS#1 (RSA) or SEC1 (EC).
    pub key: PathBuf,
}

/// Why a certificate or key could not be used; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("{path} is larger than {MAX_PEM_FILE_BYTES} bytes, which no PEM certificate or key is")]
    TooLarge { path: PathBuf },
    #[error("{path} is not valid PEM: {source}")]
    Pem { path: PathBuf, source: pem::Error },
    #[error("{path} holds no certificate (no PEM `BEGIN CERTIFICATE` section)")]
    NoCertificate { path: PathBuf },
    #[error(
        "{path} holds no private key (no PEM `BEGIN PRIVATE KEY`, `BEGIN RSA PRIVATE KEY` or `BEGIN EC PRIVATE KEY` section)"
    )]
    NoKey { path: PathBuf },
    #[error("the first certificate in {path} is not a valid X.509 certificate: {source}")]
    BadCertificate { path: PathBuf, source: rustls::Error },
    #[error("the private key in {key} is not the key of the first certificate in {cert}")]
    KeyMismatch { cert: PathBuf, key: PathBuf },
    #[error("cannot use the certificate in {cert} with the key in {key}: {source}")]
    Unusable { cert: PathBuf, key: PathBuf, source: rustls::Error },
}

/// Which application protocol an edge agrees in the handshake (ALPN).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Alpn {
    /// HTTP/1.1: S3, the gateway, the admin API, STOMP over WebSocket. No edge serves h2.
    Http1,
    /// None: STOMP over TLS has no ALPN name, so none is agreed.
    None,
}

/// The certificate every TLS listener of the node serves; replaced in place by a reload.
#[derive(Debug)]
pub struct ServerCertificate {
    files: TlsFiles,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<CertifiedKey>>,
}

impl ServerCertificate {
    /// Reads and checks the certificate chain and key in `files`.
    pub fn load(files: TlsFiles) -> Result<Arc<Self>, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let current = RwLock::new(Arc::new(certified_key(&files, &provider)?));
        Ok(Arc::new(Self { files, provider, current }))
    }

    /// Reads the files again; on success new handshakes serve what they now hold, on failure the
    /// certificate served stays the one loaded before.
    pub fn reload(&self) -> Result<(), TlsError> {
        let fresh = Arc::new(certified_key(&self.files, &self.provider)?);
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = fresh;
        Ok(())
    }

    /// The files it is read from.
    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// Certificates in the chain served now.
    pub fn chain_len(&self) -> usize {
        self.current().cert.len()
    }

    fn current(&self) -> Arc<CertifiedKey> {
        self.current.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// A server configuration for one edge that serves this certificate, reloads included.
    pub fn server_config(self: &Arc<Self>, alpn: Alpn) -> Arc<ServerConfig> {
        let mut config = ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .expect("ring's provider supports TLS 1.2 and 1.3")
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = match alpn {
            Alpn::Http1 => vec![b"http/1.1".to_vec()],
            Alpn::None => Vec::new(),
        };
        Arc::new(config)
    }
}

impl ResolvesServerCert for ServerCertificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

fn read_pem_file(path: &Path) -> Result<Vec<u8>, TlsError> {
    let read = |source| TlsError::Read { path: path.to_path_buf(), source };
    let mut bytes = Vec::new();
    File::open(path).map_err(read)?.take(MAX_PEM_FILE_BYTES + 1).read_to_end(&mut bytes).map_err(read)?;
    if bytes.len() as u64 > MAX_PEM_FILE_BYTES {
        return Err(TlsError::TooLarge { path: path.to_path_buf() });
    }
    Ok(bytes)
}

/// The chain and key of `files`, checked to belong together.
fn certified_key(files: &TlsFiles, provider: &CryptoProvider) -> Result<CertifiedKey, TlsError> {
    let (cert, key) = (&files.cert, &files.key);
    let chain = CertificateDer::pem_slice_iter(&read_pem_file(cert)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Pem { path: cert.clone(), source })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate { path: cert.clone() });
    }
    let private_key = match PrivateKeyDer::from_pem_slice(&read_pem_file(key)?) {
        Ok(private_key) => private_key,
        Err(pem::Error::NoItemsFound) => return Err(TlsError::NoKey { path: key.clone() }),
        Err(source) => return Err(TlsError::Pem { path: key.clone(), source }),
    };
    CertifiedKey::from_der(chain, private_key, provider).map_err(|source| match source {
        rustls::Error::InconsistentKeys(InconsistentKeys::KeyMismatch) => {
            TlsError::KeyMismatch { cert: cert.clone(), key: key.clone() }
        }
        source @ rustls::Error::InvalidCertificate(_) => {
            TlsError::BadCertificate { path: cert.clone(), source }
        }
        source => TlsError::Unusable { cert: cert.clone(), key: key.clone(), source },
    })
}

/// A listener whose connections speak TLS: accepted within the wrapped [`LimitedListener`]'s
/// limits (a connection holds its slot from the TCP accept on, handshake included), handed on
/// once their handshake is done. Dropping it stops accepting and ends unfinished handshakes.
pub struct TlsListener {
    handshaken: mpsc::Receiver<(TlsStream<LimitedStream>, SocketAddr)>,
    local_addr: SocketAddr,
    accepting: tokio::task::JoinHandle<()>,
}

impl TlsListener {
    /// Starts accepting on `listener` with `config`; a handshake not finished within
    /// `handshake_timeout` is dropped, and its connection with it.
    pub fn new(
        listener: LimitedListener,
        config: Arc<ServerConfig>,
        handshake_timeout: Duration,
    ) -> io::Result<Self> {
        let local_addr = axum::serve::Listener::local_addr(&listener)?;
        let (to_edge, handshaken) = mpsc::channel(HANDSHAKEN_QUEUE_LEN);
        let acceptor = TlsAcceptor::from(config);
        let accepting = tokio::spawn(accept(listener, acceptor, handshake_timeout, to_edge));
        Ok(Self { handshaken, local_addr, accepting })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

async fn accept(
    mut listener: LimitedListener,
    acceptor: TlsAcceptor,
    handshake_timeout: Duration,
    to_edge: mpsc::Sender<(TlsStream<LimitedStream>, SocketAddr)>,
) {
    // Owned here, so that aborting this task (the listener dropped) ends every handshake.
    let mut handshakes = JoinSet::new();
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept_limited() => accepted,
            Some(_) = handshakes.join_next() => continue,
        };
        let (acceptor, to_edge) = (acceptor.clone(), to_edge.clone());
        handshakes.spawn(async move {
            match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
                Ok(Ok(stream)) => {
                    let _ = to_edge.send((stream, peer)).await;
                }
                Ok(Err(error)) => tracing::debug!(%peer, %error, "TLS handshake failed"),
                Err(_) => tracing::debug!(
                    %peer,
                    timeout_ms = handshake_timeout.as_millis() as u64,
                    "TLS handshake not finished in time; connection closed"
                ),
            }
        });
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<LimitedStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.handshaken.recv().await {
            Some(accepted) => accepted,
            // Only once the accepting task is gone, which happens only when this is dropped.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local_addr)
    }
}

#[cfg(test)]
mod tests;
