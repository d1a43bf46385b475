//! Serv cluster (to come with the [cluster] issue): the QUIC endpoint (quinn) that carries every
//! byte between nodes on one UDP port, SWIM membership (foca) with node metadata broadcasts, the
//! consistent-hash ring and its preference lists, remote actor sessions (ractor_cluster over QUIC
//! bi-streams) that the directory forwards to, and the block/replication streams.
