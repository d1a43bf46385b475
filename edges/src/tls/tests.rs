//! Loading, reloading and serving the TLS certificate, with certificates made by rcgen and a
//! rustls client over real loopback sockets.

use std::path::Path;
use std::time::Duration;

use axum::serve::Listener;
use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::*;
use crate::listener::ConnectionLimits;

/// A certificate authority and a `localhost` certificate it signed, as PEM.
#[derive(Clone)]
struct Issued {
    ca: CertificateDer<'static>,
    cert_pem: String,
    key_pem: String,
}

fn issue() -> Issued {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert =
        CertificateParams::new(vec!["localhost".to_string()]).unwrap().signed_by(&key, &ca, &ca_key).unwrap();
    Issued { ca: ca.der().clone(), cert_pem: cert.pem(), key_pem: key.serialize_pem() }
}

fn write(dir: &Path, issued: &Issued) -> TlsFiles {
    let files = TlsFiles { cert: dir.join("cert.pem"), key: dir.join("key.pem") };
    std::fs::write(&files.cert, &issued.cert_pem).unwrap();
    std::fs::write(&files.key, &issued.key_pem).unwrap();
    files
}

/// The error a fresh certificate and key are refused with once `spoil` has changed them.
fn refused(spoil: impl FnOnce(&mut TlsFiles)) -> TlsError {
    let dir = tempfile::tempdir().unwrap();
    let mut files = write(dir.path(), &issue());
    spoil(&mut files);
    ServerCertificate::load(files).expect_err("the files must be refused")
}

fn replace(path: &Path, from: &str, to: &str) {
    let pem = std::fs::read_to_string(path).unwrap();
    std::fs::write(path, pem.replace(from, to)).unwrap();
}

#[test]
fn a_missing_file_is_named_in_the_error() {
    let error = refused(|files| files.cert.set_file_name("absent.pem"));
    assert!(matches!(error, TlsError::Read { .. }) && error.to_string().contains("absent.pem"), "{error}");
}

#[test]
fn a_certificate_file_without_a_certificate_is_refused() {
    let error = refused(|files| files.cert = files.key.clone());
    assert!(
        matches!(error, TlsError::NoCertificate { .. }) && error.to_string().contains("key.pem"),
        "{error}"
    );
}

#[test]
fn a_key_file_without_a_key_is_refused() {
    let error = refused(|files| files.key = files.cert.clone());
    assert!(matches!(error, TlsError::NoKey { .. }) && error.to_string().contains("cert.pem"), "{error}");
}

#[test]
fn a_truncated_certificate_is_refused_as_bad_pem() {
    let error = refused(|files| replace(&files.cert, "-----END CERTIFICATE-----", ""));
    assert!(matches!(error, TlsError::Pem { .. }), "{error}");
}

#[test]
fn a_certificate_that_is_not_der_inside_is_refused() {
    let not_der = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
    let error = refused(|files| std::fs::write(&files.cert, not_der).unwrap());
    assert!(matches!(error, TlsError::BadCertificate { .. }), "{error}");
}

#[test]
fn the_key_of_another_certificate_is_refused() {
    let error = refused(|files| std::fs::write(&files.key, issue().key_pem).unwrap());
    assert!(matches!(error, TlsError::KeyMismatch { .. }), "{error}");
}

#[test]
fn a_failed_reload_keeps_the_certificate_served() {
    let dir = tempfile::tempdir().unwrap();
    let first = issue();
    let files = write(dir.path(), &first);
    let certificate = ServerCertificate::load(files.clone()).unwrap();
    std::fs::write(&files.cert, "not a certificate").unwrap();
    assert!(matches!(certificate.reload(), Err(TlsError::NoCertificate { .. })));
    assert_eq!(certificate.current().cert[0].as_ref(), first_der(&first).as_ref());
    let second = write(dir.path(), &issue());
    certificate.reload().unwrap();
    assert_ne!(certificate.current().cert[0].as_ref(), first_der(&first).as_ref());
    assert_eq!(certificate.files(), &second);
}

fn first_der(issued: &Issued) -> CertificateDer<'static> {
    CertificateDer::from_pem_slice(issued.cert_pem.as_bytes()).unwrap()
}

async fn tls_listener(
    certificate: &Arc<ServerCertificate>,
    max_connections: usize,
    timeout: Duration,
) -> TlsListener {
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let limits = ConnectionLimits::new(max_connections, Duration::from_secs(30));
    TlsListener::new(LimitedListener::new(tcp, limits), certificate.server_config(Alpn::Http1), timeout)
        .unwrap()
}

type ClientStream = tokio_rustls::client::TlsStream<TcpStream>;

/// Connects with a client that trusts `issued`'s CA, sends `ping`; the certificate the server
/// showed, and the open connection.
async fn handshake(addr: SocketAddr, issued: Issued) -> io::Result<(CertificateDer<'static>, ClientStream)> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(issued.ca).unwrap();
    let config =
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(addr).await?;
    let mut stream = connector.connect(ServerName::try_from("localhost").unwrap(), tcp).await?;
    stream.write_all(b"ping").await?;
    let served = stream.get_ref().1.peer_certificates().unwrap()[0].clone();
    Ok((served, stream))
}

#[tokio::test]
async fn new_connections_get_the_reloaded_certificate_and_open_ones_keep_working() {
    let dir = tempfile::tempdir().unwrap();
    let (first, second) = (issue(), issue());
    let files = write(dir.path(), &first);
    let certificate = ServerCertificate::load(files).unwrap();
    let mut listener = tls_listener(&certificate, 8, Duration::from_secs(5)).await;
    let addr = listener.local_addr().unwrap();

    let client = tokio::spawn(handshake(addr, first.clone()));
    let (mut before, _) = listener.accept().await;
    let (served, mut opened_before) = client.await.unwrap().unwrap();
    let mut ping = [0u8; 4];
    before.read_exact(&mut ping).await.unwrap();
    assert_eq!(&ping, b"ping");

    write(dir.path(), &second);
    certificate.reload().unwrap();
    let client = tokio::spawn(handshake(addr, second.clone()));
    let (_after, _) = listener.accept().await;
    let (served_after, _open_after) = client.await.unwrap().unwrap();
    assert_ne!(served, served_after, "a new connection gets the new certificate");
    assert_eq!(served_after, first_der(&second));

    // The connection opened before the reload still carries bytes both ways.
    before.write_all(b"pong").await.unwrap();
    before.flush().await.unwrap();
    let mut pong = [0u8; 4];
    opened_before.read_exact(&mut pong).await.unwrap();
    assert_eq!(&pong, b"pong");
}

#[tokio::test]
async fn a_client_that_sends_no_client_hello_is_closed_and_frees_its_slot() {
    let dir = tempfile::tempdir().unwrap();
    let issued = issue();
    let certificate = ServerCertificate::load(write(dir.path(), &issued)).unwrap();
    // One slot: the silent client holds it until its handshake times out.
    let mut listener = tls_listener(&certificate, 1, Duration::from_millis(300)).await;
    let addr = listener.local_addr().unwrap();
    let mut silent = TcpStream::connect(addr).await.unwrap();
    let mut byte = [0u8; 1];
    let closed = tokio::time::timeout(Duration::from_secs(5), silent.read(&mut byte)).await;
    assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))), "the server closes a silent client: {closed:?}");

    let client = tokio::spawn(handshake(addr, issued));
    let accepted = tokio::time::timeout(Duration::from_secs(5), listener.accept()).await;
    assert!(accepted.is_ok(), "the slot the silent client held is free again");
    client.await.unwrap().unwrap();
}
