//! Serv cluster. Here now: [`ring`], the consistent-hash ring that places every entity on a
//! node and lists its replicas; [`identity`], mutual TLS for the QUIC mesh from the shared
//! cluster secret. To come with the [cluster] issue: the QUIC endpoint (quinn) that
//! carries every byte between nodes on one UDP port, SWIM membership (foca) with node metadata
//! broadcasts, remote actor sessions (ractor_cluster over QUIC bi-streams) that the directory
//! forwards to, and the block/replication streams.

pub mod identity;
pub mod membership;
pub mod ring;
