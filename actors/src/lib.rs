//! Serv actors: every named thing a user creates (a bucket, a topic, a consumer group, a gateway
//! route) is an entity actor, and this crate is where they live.
//!
//! - [`key`]: `ActorKey { kind, name }`, the address of an entity.
//! - [`entity`]: the [`Entity`] trait a kind implements and the ractor actor that runs it; each
//!   kind has one message enum ([`KindMessage`]), serde-serializable through the one codec so the
//!   same message can cross the mesh unchanged.
//! - [`supervisor`]: `NodeSupervisor` → one supervisor per kind → entity actors, with restart
//!   backoff, escalation and passivation of idle entities.
//! - [`directory`]: `send(key, msg)` / `call(key, msg)`, activating the entity on first use.
//! - [`placement`]: which node serves a key, and forwarding to it on another node.
//! - [`inspect`]: the inspection record every actor keeps, read by the admin API and console.
//! - [`route`]: the gateway route entity (its config and on/off switch).
//! - [`module`]: the WASM module entity and the node's [`module::ModuleRuntime`].
//! - [`trace`]: the W3C `traceparent` carried inside every actor message.

pub mod bucket;
pub mod directory;
pub mod entity;
mod evict;
pub mod group;
pub mod inspect;
pub mod key;
pub mod module;
pub mod placement;
pub mod route;
mod serde_bytes;
pub mod supervisor;
pub mod topic;
pub mod trace;

pub use directory::{CommitPaths, Directory, DirectoryError};
pub use entity::{Entity, EntityContext, EntityError, KindMessage};
pub use inspect::{ActorRecord, ActorStatus, RecordKind, Registry};
pub use key::{ActorKey, ActorKind};
pub use placement::{Place, Placement, Query};
pub use supervisor::SupervisionConfig;

/// Wall-clock time in Unix milliseconds, as entities record it (publish times, last-modified).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod testing;
#[cfg(test)]
mod tests;
