//! Serving HTTP/1.1 from a [`LimitedListener`](crate::listener::LimitedListener) (or, through a
//! [`TlsListener`](crate::tls::TlsListener) around one, over TLS) with the limits a public
//! endpoint needs beyond the listener's: a client must send its request headers within
//! `header_timeout` (a slowloris dribbling one byte at a time is cut off), and headers may not
//! exceed `max_header_bytes` (answered `431`). On shutdown the listener stops accepting and open connections finish their
//! current request.

use std::future::Future;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::Service;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;

/// Request-level limits of an HTTP edge.
#[derive(Clone, Copy, Debug)]
pub struct HttpLimits {
    /// Longest a client may take to send a request's headers.
    pub header_timeout: Duration,
    /// Largest request head (request line and headers), in bytes.
    pub max_header_bytes: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self { header_timeout: Duration::from_secs(30), max_header_bytes: 64 * 1024 }
    }
}

/// Serves on `listener` until `shutdown` resolves, then lets open connections finish; each
/// connection gets the service `make` builds for its client's address.
pub async fn serve<L, S, B>(
    mut listener: L,
    make: impl Fn(std::net::SocketAddr) -> S,
    limits: HttpLimits,
    shutdown: impl Future<Output = ()> + Send,
) where
    L: axum::serve::Listener<Addr = std::net::SocketAddr>,
    S: Service<Request<Incoming>, Response = Response<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192));
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let connection = builder.serve_connection(TokioIo::new(stream), make(peer));
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "connection ended with an error");
            }
        });
    }
    drop(listener); // stop accepting (and, over TLS, handshaking) while the open ones finish
    graceful.shutdown().await;
}
