//! The STOMP listener: one task per connection, within the listener's connection limits.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serv_actors::Directory;

use super::session::{self, Shared, StompSettings};
use crate::listener::LimitedListener;
use crate::s3::Keys;

/// Serves STOMP on `listener` (TCP) and, over WebSocket at `/ws`, on `ws_listener`, until
/// `shutdown` resolves; open sessions end with the process.
pub async fn serve(
    mut listener: LimitedListener,
    ws_listener: LimitedListener,
    directory: Directory,
    keys: Keys,
    settings: StompSettings,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let shared = Arc::new(Shared { directory, keys, settings });
    let (stop_ws, ws_stopped) = tokio::sync::oneshot::channel::<()>();
    let ws = tokio::spawn(
        axum::serve(ws_listener, super::ws::router(shared.clone()))
            .with_graceful_shutdown(async move {
                let _ = ws_stopped.await;
            })
            .into_future(),
    );
    let sessions = AtomicU64::new(0);
    let node = rand::random::<u32>();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept_limited() => accepted,
            () = &mut shutdown => break,
        };
        let id = format!("{node:08x}-{}", sessions.fetch_add(1, Ordering::Relaxed));
        tracing::debug!(session = %id, %peer, "stomp connection");
        tokio::spawn(session::run(stream, shared.clone(), id));
    }
    let _ = stop_ws.send(());
    let _ = ws.await;
}
