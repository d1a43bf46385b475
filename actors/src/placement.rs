//! Placement: which node serves an entity, and how the directory reaches it elsewhere.
//!
//! The directory asks its [`Placement`] where a key lives. On a single node (no placement set)
//! everything lives here. In a cluster the placement is the leader of the key's partition: the
//! directory forwards a message for another node as a [`MeshRequest`] in our codec, and that
//! node's directory delivers it locally (activating the entity on demand) and sends back the
//! encoded reply. The receiver checks that it serves the key in its own view, so two nodes whose
//! views differ for a moment never both run the entity: the sender is told
//! [`DirectoryError::NotOwner`] (with the node the receiver believes serves it) and asks that one.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{ActorKey, DirectoryError};

/// Where an entity lives, as this node sees the cluster now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Place {
    /// On this node.
    Here,
    /// On the node with this id.
    There(String),
    /// On a node that is down or unreachable (the reason says which and why).
    Nowhere(String),
    /// Served by no node for the moment (its partition is electing a leader): ask again shortly.
    Moving(String),
}

/// A request's answer on its way back from another node, or why the node could not be reached.
pub type Forwarded = Pin<Box<dyn Future<Output = Result<Vec<u8>, String>> + Send>>;

/// The cluster as the directory needs it: where keys live, and a way to talk to other nodes.
pub trait Placement: Send + Sync + 'static {
    /// Where `key` lives now.
    fn place(&self, key: &ActorKey) -> Place;

    /// The ids of the other nodes that are up.
    fn peers(&self) -> Vec<String>;

    /// True unless the partitions this node leads are still moving to their replica sets (or
    /// their preferred leaders).
    fn settled(&self) -> bool {
        true
    }

    /// True once this node is part of its cluster (it holds a replica, or sees other members);
    /// false for a node that has not managed to join yet.
    fn joined(&self) -> bool {
        true
    }

    /// Another node named `node` as the one that serves `key` (a hint for the next message).
    fn leader_named(&self, _key: &ActorKey, _node: &str) {}

    /// Sends an encoded [`MeshRequest`] to `node`'s directory and returns its encoded answer.
    fn forward(&self, node: &str, request: Vec<u8>, timeout: Duration) -> Forwarded;
}

/// What one directory asks another.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum MeshRequest {
    /// Deliver `msg` (the kind's message, encoded) to the entity `key`; with `wants_reply` the
    /// answer is the encoded reply, otherwise an empty acknowledgement of delivery.
    Deliver { key: ActorKey, msg: Vec<u8>, wants_reply: bool, traceparent: Option<String> },
    /// The inspection records of every actor on the node.
    Records,
    /// Restart the entity `key` (see [`crate::Directory::reset`]).
    Reset { key: ActorKey },
    /// Run the node-local query registered under `name` (see [`Query`]).
    Query { name: String, args: Vec<u8> },
    /// Passivate the entity `key` (see [`crate::Directory::passivate`]).
    Passivate { key: ActorKey },
}

/// A question every node answers about what it holds locally (the buckets it owns, say), so an
/// edge can list across the cluster: encoded arguments in, encoded answer out.
pub type Query = std::sync::Arc<
    dyn Fn(Vec<u8>) -> Pin<Box<dyn Future<Output = Result<Vec<u8>, String>> + Send>> + Send + Sync,
>;

/// A directory's answer to a [`MeshRequest`].
pub(crate) type MeshReply = Result<Vec<u8>, DirectoryError>;
