//! Serv edges: the protocol front ends of a node. Each edge translates its protocol into
//! messages to entity actors (through the directory) and the replies back; none of them touches
//! storage or another edge directly.
//!
//! - [`admin`]: the admin API (axum): health, readiness, Prometheus metrics, node and actor
//!   inspection, JSON errors with trace ids, bearer-token auth.
//! - [`listener`]: TCP listeners with a connection cap and an idle timeout, for every edge.
//! - S3, STOMP and the HTTP gateway arrive with their issues, sharing the directory, auth,
//!   tracing and error types from one place each.

pub mod admin;
pub mod http1;
pub mod listener;
pub mod s3;
