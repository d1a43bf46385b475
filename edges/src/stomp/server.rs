//! The STOMP listeners: TCP and WebSocket, each also over TLS when configured; one task per
//! connection, within the listeners' connection limits.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serv_actors::Directory;

use super::session::{self, Shared, StompSettings};
use crate::listener::LimitedListener;
use crate::s3::Keys;
use crate::tls::TlsListener;

/// Where the STOMP edge listens.
pub struct StompListeners {
    /// STOMP over TCP.
    pub tcp: LimitedListener,
    /// STOMP over WebSocket, at `/ws`.
    pub ws: LimitedListener,
    /// STOMP over TLS.
    pub tls: Option<TlsListener>,
    /// STOMP over WebSocket over TLS (`wss`), at `/ws`.
    pub wss: Option<TlsListener>,
}

/// Serves STOMP on `listeners` until `shutdown` resolves; open sessions end with the process.
pub async fn serve(
    listeners: StompListeners,
    directory: Directory,
    keys: Keys,
    settings: StompSettings,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let shared = Arc::new(Shared { directory, keys, settings });
    let (stop_ws, ws_stopped) = tokio::sync::watch::channel(false);
    let mut ws = vec![tokio::spawn(serve_ws(listeners.ws, shared.clone(), ws_stopped.clone()))];
    ws.extend(listeners.wss.map(|wss| tokio::spawn(serve_ws(wss, shared.clone(), ws_stopped))));
    let ids = SessionIds { node: rand::random::<u32>(), sessions: AtomicU64::new(0) };
    let tls = async {
        match listeners.tls {
            Some(tls) => accept_sessions(tls, &shared, &ids).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        () = accept_sessions(listeners.tcp, &shared, &ids) => {}
        () = tls => {}
        () = shutdown => {}
    }
    let _ = stop_ws.send(true);
    for server in ws {
        let _ = server.await;
    }
}

/// Names sessions: this process's random prefix and a counter.
struct SessionIds {
    node: u32,
    sessions: AtomicU64,
}

/// Runs a session for each connection `listener` accepts (it never stops by itself).
async fn accept_sessions(
    mut listener: impl axum::serve::Listener<Addr = std::net::SocketAddr>,
    shared: &Arc<Shared>,
    ids: &SessionIds,
) {
    loop {
        let (stream, peer) = listener.accept().await;
        let id = format!("{:08x}-{}", ids.node, ids.sessions.fetch_add(1, Ordering::Relaxed));
        tracing::debug!(session = %id, %peer, "stomp connection");
        tokio::spawn(session::run(stream, shared.clone(), id));
    }
}

/// Serves STOMP over WebSocket on `listener` until `stop` turns true.
async fn serve_ws(
    listener: impl axum::serve::Listener<Addr = std::net::SocketAddr>,
    shared: Arc<Shared>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let stopped = async move {
        let _ = stop.wait_for(|stop| *stop).await;
    };
    let _ = axum::serve(listener, super::ws::router(shared)).with_graceful_shutdown(stopped).await;
}
