//! Serv cluster: how nodes find each other and reach each other's actors.
//!
//! - [`identity`]: mutual TLS for the QUIC mesh from the shared cluster secret.
//! - [`mesh`]: the node's one QUIC endpoint; datagrams for membership, tagged bi-streams for
//!   remote actor sessions and bulk transfers.
//! - [`membership`]: SWIM (foca) over the mesh's datagrams, with node metadata broadcasts.
//! - [`ring`]: the consistent-hash ring that places every entity on a node and lists replicas.
//! - [`remote`]: ractor_cluster node sessions over mesh streams, and request/reply between the
//!   directories of two nodes.
//! - [`removed`]: the members an operator removed, kept as tombstones every node merges.
//! - [`transfer`]: block sessions that carry object bodies to and from a bucket's owner.

pub mod identity;
pub mod membership;
pub mod mesh;
pub mod partition;
pub mod remote;
pub mod removed;
pub mod ring;
pub mod transfer;
