//! STOMP over WebSocket (`/ws`, subprotocols `v10.stomp`, `v11.stomp`, `v12.stomp`), for stompjs
//! in browsers: the socket's messages are bridged to a byte stream and served by the same session
//! code as TCP. Frames may span messages and a message may hold several frames either way.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use axum::routing::get;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::session::{self, Shared};

/// The WebSocket endpoint's router.
pub(super) fn router(shared: Arc<Shared>) -> Router {
    Router::new().route("/ws", get(upgrade)).with_state(shared)
}

async fn upgrade(socket: WebSocketUpgrade, State(shared): State<Arc<Shared>>) -> Response {
    let limit = shared.settings.limits.max_frame_bytes;
    socket
        .protocols(["v12.stomp", "v11.stomp", "v10.stomp"])
        .max_message_size(limit)
        .on_upgrade(move |socket| bridge(socket, shared))
}

async fn bridge(socket: WebSocket, shared: Arc<Shared>) {
    let (ours, theirs) = tokio::io::duplex(64 * 1024);
    let id = format!("ws-{:016x}", rand::random::<u64>());
    let session = tokio::spawn(session::run(theirs, shared, id));
    let (mut to_client, mut from_client) = socket.split();
    let (mut from_session, mut to_session) = tokio::io::split(ours);
    let inbound = async move {
        while let Some(Ok(message)) = from_client.next().await {
            let written = match message {
                Message::Text(text) => to_session.write_all(text.as_bytes()).await,
                Message::Binary(bytes) => to_session.write_all(&bytes).await,
                Message::Close(_) => break,
                Message::Ping(_) | Message::Pong(_) => Ok(()),
            };
            if written.is_err() {
                break;
            }
        }
        let _ = to_session.shutdown().await;
    };
    let outbound = async move {
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            let read = match from_session.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(read) => read,
            };
            // Text when the bytes are UTF-8 (what stompjs expects), else binary.
            let message = match std::str::from_utf8(&buffer[..read]) {
                Ok(text) => Message::Text(text.to_owned().into()),
                Err(_) => Message::Binary(buffer[..read].to_vec().into()),
            };
            if to_client.send(message).await.is_err() {
                break;
            }
        }
        let _ = to_client.close().await;
    };
    tokio::join!(inbound, outbound);
    let _ = session.await;
}
