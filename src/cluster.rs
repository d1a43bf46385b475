//! The node's place in the cluster: the mesh endpoint, membership, remote actor sessions, and
//! the placement the directory routes by (the ring over every member the node has known).
//!
//! Members are remembered in storage: a node that restarts while another is down still places
//! entities on the ring that includes it (and refuses them as down) instead of taking them over
//! without their state.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serv_actors::placement::Forwarded;
use serv_actors::{ActorKey, Directory, Place, Placement};
use serv_cluster::identity::ClusterIdentity;
use serv_cluster::membership::{MemberState, MemberView, Membership, NodeIdentity, NodeMeta, placement_ring};
use serv_cluster::mesh::Mesh;
use serv_cluster::remote::Remote;
use serv_cluster::ring::Ring;
use serv_cluster::transfer::{self, BlockTransfer};
use serv_edges::admin::NodeInfo;
use serv_storage::{Record, Storage, TableDef};
use tokio::sync::watch;

use crate::config::Config;
use crate::secrets;

/// Every member this node has seen, by id, with the mesh address it last had.
const KNOWN_MEMBERS: TableDef<String, KnownMember> = TableDef::new("cluster_members");

#[derive(Serialize, Deserialize)]
struct KnownMember {
    addr: SocketAddr,
    first_seen_ms: u64,
}

impl Record for KnownMember {
    const FORMAT: u8 = 1;
}

/// The cluster side of a running node.
pub struct Cluster {
    pub membership: Membership,
    /// The membership view plus every remembered member it lacks (as down): what the ring,
    /// the admin API and the console see.
    pub members: watch::Receiver<Vec<MemberView>>,
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
    storage: &Storage,
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
    transfer::serve(&mesh, storage.blocks().clone());
    let transfer = BlockTransfer::new(mesh.clone(), membership.watch());
    let remote = Remote::start(&node.id, &secret, mesh, membership.watch(), handler).await?;
    let members = remember_members(storage, membership.watch())?;
    let settled = crate::rebalance::load_settled(storage, &node.id, config.seeds.is_empty())?;
    let placement = RingPlacement::start(node.id.clone(), settled, members.clone(), remote.clone());
    directory.set_placement(placement.clone());
    let founder = config.seeds.is_empty();
    crate::rebalance::start(placement, directory.clone(), storage.clone(), transfer.clone(), founder);
    Ok(Cluster { membership, members, remote, transfer })
}

/// The membership view with every member remembered in storage added (as down) when the view
/// lacks it; members seen for the first time are remembered.
fn remember_members(
    storage: &Storage,
    mut view: watch::Receiver<Vec<MemberView>>,
) -> Result<watch::Receiver<Vec<MemberView>>, String> {
    let table = storage.table(KNOWN_MEMBERS).map_err(|e| e.to_string())?;
    let mut known = std::collections::BTreeMap::new();
    for entry in table.entries() {
        let (id, member) = entry.map_err(|e| format!("remembered members: {e}"))?;
        known.insert(id, member.addr);
    }
    let merge = |view: &[MemberView], known: &std::collections::BTreeMap<String, SocketAddr>| {
        let mut merged = view.to_vec();
        for (id, addr) in known {
            if !view.iter().any(|m| &m.id == id) {
                merged.push(MemberView {
                    id: id.clone(),
                    addr: *addr,
                    state: MemberState::Down,
                    incarnation: 0,
                    meta: None,
                });
            }
        }
        merged
    };
    let (publish, merged) = watch::channel(merge(&view.borrow_and_update(), &known));
    let storage = storage.clone();
    tokio::spawn(async move {
        loop {
            let current = view.borrow_and_update().clone();
            let mut changes = storage.write_set();
            let mut news = 0;
            for member in &current {
                if known.get(&member.id) != Some(&member.addr) {
                    let record = KnownMember { addr: member.addr, first_seen_ms: serv_actors::now_ms() };
                    if changes.put(&table, &member.id, &record).is_ok() {
                        known.insert(member.id.clone(), member.addr);
                        news += 1;
                    }
                }
            }
            if news > 0
                && let Err(error) = storage.commit(changes).await
            {
                tracing::warn!(%error, "new members could not be remembered");
            }
            publish.send_replace(merge(&current, &known));
            if view.changed().await.is_err() {
                return;
            }
        }
    });
    Ok(merged)
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

/// The ring over the members this node knows, rebuilt whenever they change, and how far this
/// node is through the hand-off that a new ring asks for (see [`crate::rebalance`]).
pub struct RingPlacement {
    me: String,
    current: RwLock<Current>,
    /// The ring this node last finished a rebalance for: it serves the keys it owned there.
    settled: RwLock<(BTreeSet<String>, Ring)>,
    /// The ring this node has handed off every entity it no longer owns for.
    handed_off: RwLock<Option<BTreeSet<String>>>,
    /// Keys whose whole state was handed over to this node since it last settled: served at
    /// once, before the rest of the rebalance is done.
    arrived: RwLock<std::collections::HashSet<ActorKey>>,
    remote: Remote,
}

struct Current {
    ids: BTreeSet<String>,
    ring: Ring,
    members: Vec<MemberView>,
}

impl Current {
    fn of(members: Vec<MemberView>) -> Self {
        Self { ids: members.iter().map(|m| m.id.clone()).collect(), ring: placement_ring(&members), members }
    }
}

impl RingPlacement {
    fn start(
        me: String,
        settled: BTreeSet<String>,
        mut view: watch::Receiver<Vec<MemberView>>,
        remote: Remote,
    ) -> Arc<Self> {
        let current = Current::of(view.borrow_and_update().clone());
        let settled_ring = Ring::with_default_vnodes(settled.iter().cloned());
        let placement = Arc::new(Self {
            me,
            current: RwLock::new(current),
            settled: RwLock::new((settled, settled_ring)),
            handed_off: RwLock::new(None),
            arrived: RwLock::default(),
            remote,
        });
        let weak = Arc::downgrade(&placement);
        tokio::spawn(async move {
            while view.changed().await.is_ok() {
                let Some(placement) = weak.upgrade() else { return };
                let current = Current::of(view.borrow_and_update().clone());
                *placement.current.write().unwrap_or_else(|p| p.into_inner()) = current;
            }
        });
        placement
    }

    pub fn me(&self) -> &str {
        &self.me
    }

    /// The members of the current ring.
    pub fn ring_ids(&self) -> BTreeSet<String> {
        self.current.read().unwrap_or_else(|p| p.into_inner()).ids.clone()
    }

    /// The owner of `key` on the current ring, and whether that member is up.
    pub fn owner_of(&self, key: &ActorKey) -> Option<(String, bool)> {
        let current = self.current.read().unwrap_or_else(|p| p.into_inner());
        let owner = current.ring.owner(key.to_string().as_bytes())?.to_string();
        let up = current.members.iter().any(|m| m.id == owner && m.state != MemberState::Down);
        Some((owner, up))
    }

    pub fn settled_ids(&self) -> BTreeSet<String> {
        self.settled.read().unwrap_or_else(|p| p.into_inner()).0.clone()
    }

    pub fn set_settled(&self, ids: BTreeSet<String>) {
        let ring = Ring::with_default_vnodes(ids.iter().cloned());
        *self.settled.write().unwrap_or_else(|p| p.into_inner()) = (ids, ring);
        self.arrived.write().unwrap_or_else(|p| p.into_inner()).clear();
    }

    pub fn handed_off(&self) -> Option<BTreeSet<String>> {
        self.handed_off.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn set_handed_off(&self, ids: BTreeSet<String>) {
        *self.handed_off.write().unwrap_or_else(|p| p.into_inner()) = Some(ids);
    }

    /// The members of the current ring other than this node, and whether each is up.
    pub fn others(&self) -> Vec<(String, bool)> {
        let current = self.current.read().unwrap_or_else(|p| p.into_inner());
        current
            .members
            .iter()
            .filter(|m| m.id != self.me)
            .map(|m| (m.id.clone(), m.state != MemberState::Down))
            .collect()
    }
}

impl Placement for RingPlacement {
    fn place(&self, key: &ActorKey) -> Place {
        let current = self.current.read().unwrap_or_else(|p| p.into_inner());
        let point = key.to_string();
        let Some(owner) = current.ring.owner(point.as_bytes()) else {
            return Place::Moving("this node has not joined its cluster yet".into());
        };
        if owner == self.me {
            // A key this node gains with a new ring waits until every node has handed over
            // what it held (see rebalance); the keys it owned before stay served.
            let settled = self.settled.read().unwrap_or_else(|p| p.into_inner());
            if settled.0 == current.ids
                || settled.1.owner(point.as_bytes()) == Some(self.me.as_str())
                || self.arrived.read().unwrap_or_else(|p| p.into_inner()).contains(key)
            {
                return Place::Here;
            }
            return Place::Moving(format!(
                "its new owner, node {owner}, is taking it over from the previous one; retry shortly"
            ));
        }
        match current.members.iter().find(|m| m.id == owner).map(|m| m.state) {
            Some(MemberState::Down) => Place::Nowhere(format!("its owner, node {owner}, is down")),
            _ => Place::There(owner.to_string()),
        }
    }

    fn peers(&self) -> Vec<String> {
        self.others().into_iter().filter(|(_, up)| *up).map(|(id, _)| id).collect()
    }

    fn joined(&self) -> bool {
        self.settled.read().unwrap_or_else(|p| p.into_inner()).0.contains(&self.me)
    }

    fn settled(&self) -> bool {
        let current = self.current.read().unwrap_or_else(|p| p.into_inner());
        self.settled.read().unwrap_or_else(|p| p.into_inner()).0 == current.ids
    }

    fn arrived(&self, key: &ActorKey) {
        self.arrived.write().unwrap_or_else(|p| p.into_inner()).insert(key.clone());
    }

    fn forward(&self, node: &str, request: Vec<u8>, timeout: Duration) -> Forwarded {
        let (remote, node) = (self.remote.clone(), node.to_string());
        Box::pin(
            async move { remote.request(&node, request, timeout).await.map_err(|error| error.to_string()) },
        )
    }
}
