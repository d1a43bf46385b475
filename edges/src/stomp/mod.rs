//! The STOMP edge: clients publish and subscribe over STOMP 1.0, 1.1 and 1.2 frames on a TCP
//! connection. [`frame`] holds frames as values and what CONNECT negotiates (version and
//! heart-beats); [`codec`] turns bytes into frames and back, within named size limits, so the
//! connection handling built on it sees only whole, well-formed frames. [`session`] runs one
//! connection, translating frames into messages to topic and group actors and back; [`server`]
//! accepts connections, on TCP and (through `ws`) over WebSocket for browsers; [`metrics`] counts
//! connections, frames and messages for `/metrics`.

pub mod codec;
pub mod frame;
pub(crate) mod metrics;
pub mod server;
pub mod session;
mod ws;
