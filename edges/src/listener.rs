//! Listening sockets with the limits every edge needs: at most `max_connections` open at once
//! (further clients wait in the kernel's backlog until one closes), and a connection that moves
//! no byte either way for `idle_timeout` is closed, so a silent or stalled client cannot hold a
//! slot forever. A long download or upload stays open as long as bytes keep moving. An edge's
//! second listener (its TLS one) shares the first one's cap: the limit is the edge's.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

/// Limits of one listener.
#[derive(Clone, Copy, Debug)]
pub struct ConnectionLimits {
    /// Most connections open at once.
    pub max_connections: usize,
    /// A connection with no traffic for this long is closed.
    pub idle_timeout: Duration,
}

/// A TCP listener that enforces [`ConnectionLimits`]; serves axum directly.
pub struct LimitedListener {
    listener: TcpListener,
    permits: Arc<Semaphore>,
    idle_timeout: Duration,
}

impl LimitedListener {
    /// Wraps a bound listener.
    pub fn new(listener: TcpListener, limits: ConnectionLimits) -> Self {
        Self {
            listener,
            permits: Arc::new(Semaphore::new(limits.max_connections)),
            idle_timeout: limits.idle_timeout,
        }
    }

    /// Wraps another bound listener of the same edge: connections on either count against one cap.
    pub fn sharing_limits(&self, listener: TcpListener) -> Self {
        Self { listener, permits: self.permits.clone(), idle_timeout: self.idle_timeout }
    }

    /// Waits for a free connection slot, then for a client.
    pub async fn accept_limited(&mut self) -> (LimitedStream, SocketAddr) {
        let permit = self.permits.clone().acquire_owned().await.expect("the semaphore is never closed");
        loop {
            match self.listener.accept().await {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    return (LimitedStream::new(stream, permit, self.idle_timeout), peer);
                }
                Err(error) if is_per_connection(&error) => {}
                Err(error) => {
                    // Out of file descriptors or similar: back off instead of spinning.
                    tracing::error!(%error, "accept failed; retrying in 1 s");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }
}

fn is_per_connection(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
    )
}

impl axum::serve::Listener for LimitedListener {
    type Io = LimitedStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        self.accept_limited().await
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}

/// An accepted connection: holds its slot until dropped and times out when idle.
pub struct LimitedStream {
    stream: TcpStream,
    idle_timeout: Duration,
    idle: Pin<Box<Sleep>>,
    _slot: OwnedSemaphorePermit,
}

impl LimitedStream {
    fn new(stream: TcpStream, slot: OwnedSemaphorePermit, idle_timeout: Duration) -> Self {
        let idle = Box::pin(tokio::time::sleep(idle_timeout));
        Self { stream, idle_timeout, idle, _slot: slot }
    }

    /// Notes traffic: the idle clock starts again.
    fn active(&mut self) {
        let deadline = Instant::now() + self.idle_timeout;
        self.idle.as_mut().reset(deadline);
    }

    /// Turns a pending operation into a timeout error once the connection has idled too long.
    fn pending_or_idle<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        match self.idle.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "connection idle"))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncRead for LimitedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.stream).poll_read(cx, buf) {
            Poll::Ready(outcome) => {
                self.active();
                Poll::Ready(outcome)
            }
            Poll::Pending => self.pending_or_idle(cx),
        }
    }
}

impl AsyncWrite for LimitedStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.stream).poll_write(cx, data) {
            Poll::Ready(outcome) => {
                self.active();
                Poll::Ready(outcome)
            }
            Poll::Pending => self.pending_or_idle(cx),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.stream).poll_write_vectored(cx, bufs) {
            Poll::Ready(outcome) => {
                self.active();
                Poll::Ready(outcome)
            }
            Poll::Pending => self.pending_or_idle(cx),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}
