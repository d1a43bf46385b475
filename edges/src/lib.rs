//! Serv edges: the protocol front ends of a node. Each edge translates its protocol into
//! messages to entity actors (through the directory) and the replies back; none of them touches
//! storage or another edge directly.
//!
//! - [`admin`]: the admin API (axum): health, readiness, Prometheus metrics, node and actor
//!   inspection, JSON errors with trace ids, bearer-token auth.
//! - [`credentials`]: the admin token and root key pair every node of a cluster shares.
//! - [`listener`]: TCP listeners with a connection cap and an idle timeout, for every edge.
//! - [`tls`]: the certificate every edge serves over TLS (reloaded on SIGHUP) and the TLS
//!   listener that wraps an edge's listener.
//! - [`http1`]: HTTP/1.1 serving with header deadlines and size caps (the S3 edge).
//! - [`s3`]: the S3 edge (s3s) over bucket actors and content blocks.
//! - [`stomp`]: the STOMP edge: the frame codec, sessions, and the listener.
//! - The HTTP gateway arrives with its issue, sharing the directory, auth, tracing and error
//!   types from one place each.

pub mod admin;
pub mod credentials;
pub mod fault_injection;
pub mod gateway;
pub mod http1;
pub mod listener;
pub mod memory;
pub mod owned;
pub mod publish;
pub mod s3;
pub mod stomp;
pub mod tls;
