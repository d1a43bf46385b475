//! The node's place in the cluster: the mesh endpoint, membership, remote actor sessions, and
//! the placement the directory routes by (the ring over the membership view).

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serv_actors::placement::Forwarded;
use serv_actors::{ActorKey, Directory, Place, Placement};
use serv_cluster::identity::ClusterIdentity;
use serv_cluster::membership::{MemberState, MemberView, Membership, NodeIdentity, NodeMeta, placement_ring};
use serv_cluster::mesh::Mesh;
use serv_cluster::remote::Remote;
use serv_cluster::ring::Ring;
use serv_cluster::transfer::{self, BlockTransfer};
use serv_edges::admin::NodeInfo;
use serv_storage::blocks::BlockStore;
use tokio::sync::watch;

use crate::config::Config;
use crate::secrets;

/// The cluster side of a running node.
pub struct Cluster {
    pub membership: Membership,
    pub remote: Remote,
    /// Block sessions to other nodes (for buckets they own).
    pub transfer: BlockTransfer,
}

/// Joins the cluster: the mesh endpoint with the cluster identity, SWIM membership seeded with
/// `--seeds` (resolved now; a seed that does not resolve is reported and skipped), and remote
/// actor sessions that serve other nodes' requests with `directory`, which from now on routes
/// every message to its owner; other nodes' block sessions are served from `blocks`.
pub async fn join(
    config: &Config,
    node: &NodeInfo,
    directory: &Directory,
    blocks: BlockStore,
) -> Result<Cluster, String> {
    let secret = secrets::cluster_secret(&config.data_dir)?;
    let identity = ClusterIdentity::new(&secret, &node.id).map_err(|e| format!("cluster identity: {e}"))?;
    let endpoint = identity.endpoint(config.mesh_addr).map_err(|e| format!("mesh: {e}"))?;
    let (mesh, datagrams) = Mesh::start(endpoint);
    let bound = mesh.local_addr().map_err(|e| e.to_string())?;
    let advertised = config.mesh_advertise.unwrap_or(bound);
    let seeds = resolve_seeds(&config.seeds, advertised).await;
    let boot = serv_actors::now_ms();
    let me = NodeIdentity { id: node.id.clone(), addr: advertised, boot };
    tracing::info!(mesh = %bound, advertised = %advertised, seeds = seeds.len(), "joining the cluster");
    let mut addresses = node.addresses.clone();
    addresses.insert("mesh".to_string(), advertised.to_string());
    let meta = NodeMeta { version: node.version.clone(), addresses, ..NodeMeta::default() };
    let membership = Membership::start(me, meta, mesh.clone(), datagrams, config.membership.clone(), seeds);

    let serving = directory.clone();
    let handler: serv_cluster::remote::Handler = Arc::new(move |request| {
        let directory = serving.clone();
        Box::pin(async move { directory.serve_remote(request).await })
    });
    transfer::serve(&mesh, blocks);
    let transfer = BlockTransfer::new(mesh.clone(), membership.watch());
    let remote = Remote::start(&node.id, &secret, mesh, membership.watch(), handler).await?;
    let placement = RingPlacement::start(node.id.clone(), membership.watch(), remote.clone());
    directory.set_placement(placement);
    Ok(Cluster { membership, remote, transfer })
}

async fn resolve_seeds(seeds: &[String], me: SocketAddr) -> Vec<SocketAddr> {
    let mut resolved = Vec::new();
    for seed in seeds {
        match tokio::net::lookup_host(seed.as_str()).await {
            Ok(addresses) => resolved.extend(addresses.filter(|a| *a != me).take(1)),
            Err(error) => tracing::warn!(%seed, %error, "seed does not resolve; skipped"),
        }
    }
    resolved
}

/// The ring over the membership view, rebuilt whenever the view changes.
struct RingPlacement {
    me: String,
    current: RwLock<(Ring, Vec<MemberView>)>,
    remote: Remote,
}

impl RingPlacement {
    fn start(me: String, mut view: watch::Receiver<Vec<MemberView>>, remote: Remote) -> Arc<Self> {
        let members = view.borrow_and_update().clone();
        let placement =
            Arc::new(Self { me, current: RwLock::new((placement_ring(&members), members)), remote });
        let weak = Arc::downgrade(&placement);
        tokio::spawn(async move {
            while view.changed().await.is_ok() {
                let Some(placement) = weak.upgrade() else { return };
                let members = view.borrow_and_update().clone();
                let ring = placement_ring(&members);
                *placement.current.write().unwrap_or_else(|p| p.into_inner()) = (ring, members);
            }
        });
        placement
    }
}

impl Placement for RingPlacement {
    fn place(&self, key: &ActorKey) -> Place {
        let current = self.current.read().unwrap_or_else(|p| p.into_inner());
        let (ring, members) = &*current;
        let Some(owner) = ring.owner(key.to_string().as_bytes()) else { return Place::Here };
        if owner == self.me {
            return Place::Here;
        }
        match members.iter().find(|m| m.id == owner).map(|m| m.state) {
            Some(MemberState::Down) => Place::Nowhere(format!("its owner, node {owner}, is down")),
            _ => Place::There(owner.to_string()),
        }
    }

    fn peers(&self) -> Vec<String> {
        let current = self.current.read().unwrap_or_else(|p| p.into_inner());
        current
            .1
            .iter()
            .filter(|m| m.id != self.me && m.state != MemberState::Down)
            .map(|m| m.id.clone())
            .collect()
    }

    fn forward(&self, node: &str, request: Vec<u8>, timeout: Duration) -> Forwarded {
        let (remote, node) = (self.remote.clone(), node.to_string());
        Box::pin(
            async move { remote.request(&node, request, timeout).await.map_err(|error| error.to_string()) },
        )
    }
}
