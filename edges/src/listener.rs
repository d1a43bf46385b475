//! Listening sockets with the limits every edge needs, so that idle or abusive clients cannot lock
//! others out:
//! - at most `max_connections` open at once, and at most `max_per_ip` from one client address;
//! - a connection must send its first byte within `first_byte_timeout`, and one that then moves
//!   no byte either way for `idle_timeout` is closed (a long download or upload stays open as long
//!   as bytes keep moving);
//! - **admission**: where `evict_idle` is set (the HTTP edges), a new client that finds the edge
//!   (or its own address) at its cap is served by closing the connection that has been idle the
//!   longest (at least [`MIN_IDLE_TO_EVICT`]); without an idle one it waits, as before, for a slot,
//!   and where its address is at its cap it is closed. Idle means between requests: the node has
//!   written since the client last sent a byte (or the client never sent one). A connection whose
//!   request is still being answered (a slow upstream, say) is busy, however quiet. So a flood of silent connections costs a
//!   well-behaved client at most the time to close one of them; the admin API's `/healthz`,
//!   `/readyz` and `/metrics` stay reachable the same way.
//!
//! An edge's second listener (its TLS one) shares the first one's caps: the limits are the edge's.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::task::AtomicWaker;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

/// How long a connection must have moved no byte before it may be closed to admit a new client.
pub const MIN_IDLE_TO_EVICT: Duration = Duration::from_millis(500);

/// How often a new client waiting for a slot looks again for an idle connection to close.
const EVICTION_RETRY: Duration = Duration::from_millis(100);

/// Limits of one listener.
#[derive(Clone, Copy, Debug)]
pub struct ConnectionLimits {
    /// Most connections open at once.
    pub max_connections: usize,
    /// A connection with no traffic for this long is closed.
    pub idle_timeout: Duration,
    /// Most connections open at once from one client address.
    pub max_per_ip: usize,
    /// A new connection that sends nothing for this long is closed.
    pub first_byte_timeout: Duration,
    /// At a cap, close the longest-idle connection to admit a new client (HTTP edges), rather
    /// than have the new client wait (STOMP, whose quiet subscribers are not idle clients).
    pub evict_idle: bool,
}

impl ConnectionLimits {
    /// `max_connections` and `idle_timeout`, with the defaults for the rest: a quarter of the
    /// cap per address (at least 16, or the whole of a smaller cap), 10 s for the first byte, no
    /// eviction.
    pub fn new(max_connections: usize, idle_timeout: Duration) -> Self {
        Self {
            max_connections,
            idle_timeout,
            max_per_ip: (max_connections / 4).max(max_connections.min(16)),
            first_byte_timeout: Duration::from_secs(10),
            evict_idle: false,
        }
    }
}

/// A TCP listener that enforces [`ConnectionLimits`]; serves axum directly.
pub struct LimitedListener {
    listener: TcpListener,
    permits: Arc<Semaphore>,
    limits: ConnectionLimits,
    open: Arc<Registry>,
}

/// The connections of an edge that are open, for admission.
#[derive(Default)]
struct Registry {
    inner: Mutex<RegistryInner>,
    epoch: std::sync::OnceLock<Instant>,
}

#[derive(Default)]
struct RegistryInner {
    next_id: u64,
    connections: HashMap<u64, Arc<Tracked>>,
    per_ip: HashMap<IpAddr, usize>,
}

/// What admission knows of one open connection.
struct Tracked {
    ip: IpAddr,
    /// When a byte last moved either way, in ms since the registry's epoch.
    last_active_ms: AtomicU64,
    /// The client sent bytes the node has not written anything since: a request is being
    /// answered (or uploaded), so the connection is busy however quiet.
    awaiting_answer: AtomicBool,
    /// Asked to close, to admit a newer client.
    evicted: AtomicBool,
    /// Wakes the connection's task to see it was asked to close.
    waker: AtomicWaker,
}

impl Tracked {
    /// Since when the connection has been quiet between requests, or `None` while a request of
    /// it is being answered.
    fn idle_since(&self) -> Option<u64> {
        let busy = self.awaiting_answer.load(Ordering::Acquire);
        (!busy).then(|| self.last_active_ms.load(Ordering::Relaxed))
    }
}

impl Registry {
    fn now_ms(&self) -> u64 {
        self.epoch.get_or_init(Instant::now).elapsed().as_millis() as u64
    }

    fn count(&self, ip: IpAddr) -> usize {
        self.lock().per_ip.get(&ip).copied().unwrap_or(0)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RegistryInner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn add(&self, ip: IpAddr) -> (u64, Arc<Tracked>) {
        let now = self.now_ms();
        let tracked = Arc::new(Tracked {
            ip,
            last_active_ms: AtomicU64::new(now),
            awaiting_answer: AtomicBool::new(false),
            evicted: AtomicBool::new(false),
            waker: AtomicWaker::new(),
        });
        let mut inner = self.lock();
        inner.next_id += 1;
        let id = inner.next_id;
        inner.connections.insert(id, tracked.clone());
        *inner.per_ip.entry(ip).or_default() += 1;
        (id, tracked)
    }

    fn remove(&self, id: u64) {
        let mut inner = self.lock();
        if let Some(tracked) = inner.connections.remove(&id)
            && let Some(count) = inner.per_ip.get_mut(&tracked.ip)
        {
            *count -= 1;
            if *count == 0 {
                inner.per_ip.remove(&tracked.ip);
            }
        }
    }

    /// Asks the connection idle the longest (from `ip`, or from anywhere) to close; true if
    /// there was one idle for at least [`MIN_IDLE_TO_EVICT`].
    fn evict_oldest_idle(&self, ip: Option<IpAddr>) -> bool {
        let idle_since = self.now_ms().saturating_sub(MIN_IDLE_TO_EVICT.as_millis() as u64);
        let inner = self.lock();
        let oldest = inner
            .connections
            .values()
            .filter(|tracked| {
                ip.is_none_or(|ip| tracked.ip == ip) && !tracked.evicted.load(Ordering::Acquire)
            })
            .filter_map(|tracked| {
                tracked.idle_since().filter(|since| *since <= idle_since).map(|since| (since, tracked))
            })
            .min_by_key(|(since, _)| *since)
            .map(|(_, tracked)| tracked);
        let Some(oldest) = oldest else { return false };
        oldest.evicted.store(true, Ordering::Release);
        oldest.waker.wake();
        true
    }
}

impl LimitedListener {
    /// Wraps a bound listener.
    pub fn new(listener: TcpListener, limits: ConnectionLimits) -> Self {
        Self {
            listener,
            permits: Arc::new(Semaphore::new(limits.max_connections)),
            limits,
            open: Arc::default(),
        }
    }

    /// Wraps another bound listener of the same edge: connections on either count against one cap.
    pub fn sharing_limits(&self, listener: TcpListener) -> Self {
        Self { listener, permits: self.permits.clone(), limits: self.limits, open: self.open.clone() }
    }

    /// The next client admitted: accepted, then given a slot (see the module's text).
    pub async fn accept_limited(&mut self) -> (LimitedStream, SocketAddr) {
        loop {
            let (stream, peer) = self.accept().await;
            if self.open.count(peer.ip()) >= self.limits.max_per_ip
                && !(self.limits.evict_idle && self.open.evict_oldest_idle(Some(peer.ip())))
            {
                tracing::debug!(%peer, max_per_ip = self.limits.max_per_ip, "connection refused: its address is at its cap");
                continue; // dropped: closed
            }
            let permit = self.slot().await;
            let _ = stream.set_nodelay(true);
            let (id, tracked) = self.open.add(peer.ip());
            let stream = LimitedStream::new(
                stream,
                permit,
                self.limits,
                Admitted { id, tracked, open: self.open.clone() },
            );
            return (stream, peer);
        }
    }

    /// A free slot; at the cap, one freed by closing the longest-idle connection (tried again
    /// as connections become idle) where the edge evicts, else the first one to close.
    async fn slot(&self) -> OwnedSemaphorePermit {
        loop {
            if let Ok(permit) = self.permits.clone().try_acquire_owned() {
                return permit;
            }
            if self.limits.evict_idle {
                self.open.evict_oldest_idle(None);
            }
            let retry =
                tokio::time::sleep(if self.limits.evict_idle { EVICTION_RETRY } else { Duration::MAX });
            tokio::select! {
                permit = self.permits.clone().acquire_owned() => {
                    return permit.expect("the semaphore is never closed");
                }
                () = retry => {}
            }
        }
    }

    async fn accept(&mut self) -> (TcpStream, SocketAddr) {
        loop {
            match self.listener.accept().await {
                Ok(accepted) => return accepted,
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

/// A connection's entry in its edge's registry, removed when the connection is dropped.
struct Admitted {
    id: u64,
    tracked: Arc<Tracked>,
    open: Arc<Registry>,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.open.remove(self.id);
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

/// An accepted connection: holds its slot until dropped, times out when idle, and closes when
/// admission asks it to.
pub struct LimitedStream {
    stream: TcpStream,
    idle_timeout: Duration,
    idle: Pin<Box<Sleep>>,
    admitted: Admitted,
    _slot: OwnedSemaphorePermit,
}

impl LimitedStream {
    fn new(
        stream: TcpStream,
        slot: OwnedSemaphorePermit,
        limits: ConnectionLimits,
        admitted: Admitted,
    ) -> Self {
        // Until its first byte, a connection has the (shorter) first-byte timeout.
        let idle = Box::pin(tokio::time::sleep(limits.first_byte_timeout.min(limits.idle_timeout)));
        Self { stream, idle_timeout: limits.idle_timeout, idle, admitted, _slot: slot }
    }

    /// Notes traffic (bytes read from the client when `read`, else written to it): the idle
    /// clock starts again.
    fn active(&mut self, read: bool) {
        let deadline = Instant::now() + self.idle_timeout;
        self.idle.as_mut().reset(deadline);
        let tracked = &self.admitted.tracked;
        tracked.last_active_ms.store(self.admitted.open.now_ms(), Ordering::Relaxed);
        tracked.awaiting_answer.store(read, Ordering::Release);
    }

    /// Turns a pending operation into an error once the connection has idled too long or was
    /// asked to close to admit a newer client.
    fn pending_or_idle<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        let tracked = &self.admitted.tracked;
        tracked.waker.register(cx.waker());
        if tracked.evicted.load(Ordering::Acquire) {
            let closed = "idle connection closed to admit a newer client";
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::ConnectionAborted, closed)));
        }
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
        let before = buf.filled().len();
        match Pin::new(&mut self.stream).poll_read(cx, buf) {
            Poll::Ready(outcome) => {
                if buf.filled().len() > before {
                    self.active(true);
                }
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
                self.active(false);
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
                self.active(false);
                Poll::Ready(outcome)
            }
            Poll::Pending => self.pending_or_idle(cx),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}
