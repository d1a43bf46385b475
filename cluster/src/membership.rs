//! SWIM membership (foca) over the QUIC mesh: foca's packets travel as QUIC datagrams between
//! nodes that proved membership with the cluster identity ([`crate::identity`]).
//!
//! foca is synchronous and transport-agnostic; one task owns it and feeds it what arrives
//! (datagrams, timer expiries, commands), then carries out what it asks (send, schedule) and
//! publishes the member view on a watch channel. A node joins by announcing itself to seed
//! addresses, whose identities it need not know: foca learns them from the answers.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::num::{NonZeroU32, NonZeroUsize};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes};
use foca::{AccumulatingRuntime, Foca, Incarnation, Member, OwnedNotification, State, Timer};
use rand_foca::SeedableRng;
use rand_foca::rngs::StdRng;
use serde::{Deserialize, Serialize};
use serv_storage::codec::CodecError;
use tokio::sync::{mpsc, watch};

use crate::mesh::Mesh;

/// A node as the membership knows it: its stable id, mesh address and boot (start time, ms),
/// so that a restarted node is a newer identity of the same id.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NodeIdentity {
    pub id: String,
    pub addr: SocketAddr,
    pub boot: u64,
}

impl foca::Identity for NodeIdentity {
    type Addr = SocketAddr;

    fn renew(&self) -> Option<Self> {
        Some(Self { boot: self.boot + 1, ..self.clone() })
    }

    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        self.boot > adversary.boot
    }
}

/// What a node tells the others about itself: its edges' addresses and its version. Each node
/// broadcasts its own; a newer (boot, seq) replaces an older one.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeMeta {
    pub id: String,
    pub boot: u64,
    pub seq: u64,
    pub version: String,
    /// Listener addresses by edge name (`s3`, `stomp`, `admin`, ...).
    pub addresses: std::collections::BTreeMap<String, String>,
}

/// The dissemination key of a metadata broadcast: a newer stamp of the same node replaces it.
#[derive(Debug)]
struct MetaKey {
    id: String,
    stamp: (u64, u64),
}

impl foca::Invalidates for MetaKey {
    fn invalidates(&self, other: &Self) -> bool {
        self.id == other.id && self.stamp >= other.stamp
    }
}

type MetaTable = Arc<Mutex<HashMap<String, NodeMeta>>>;

/// Keeps the newest metadata of every node, and tells foca which broadcasts are news.
struct MetaHandler(MetaTable);

impl foca::BroadcastHandler<NodeIdentity> for MetaHandler {
    type Key = MetaKey;
    type Error = CodecError;

    fn receive_item(
        &mut self,
        data: &[u8],
        _sender: Option<&NodeIdentity>,
    ) -> Result<Option<MetaKey>, CodecError> {
        let meta: NodeMeta = serv_storage::codec::decode(data)?;
        let mut table = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let stamp = (meta.boot, meta.seq);
        if table.get(&meta.id).is_some_and(|known| (known.boot, known.seq) >= stamp) {
            return Ok(None); // nothing new: stop spreading it
        }
        let key = MetaKey { id: meta.id.clone(), stamp };
        table.insert(meta.id.clone(), meta);
        Ok(Some(key))
    }
}

/// foca's wire format: our codec (bincode) over its serde types.
struct WireCodec;

impl foca::Codec<NodeIdentity> for WireCodec {
    type Error = CodecError;

    fn encode_header(
        &mut self,
        header: &foca::Header<NodeIdentity>,
        buf: impl BufMut,
    ) -> Result<(), CodecError> {
        put(header, buf)
    }

    fn decode_header(&mut self, buf: impl Buf) -> Result<foca::Header<NodeIdentity>, CodecError> {
        take(buf)
    }

    fn encode_member(
        &mut self,
        member: &foca::Member<NodeIdentity>,
        buf: impl BufMut,
    ) -> Result<(), CodecError> {
        put(member, buf)
    }

    fn decode_member(&mut self, buf: impl Buf) -> Result<foca::Member<NodeIdentity>, CodecError> {
        take(buf)
    }
}

/// Appends `value` in our codec.
fn put<T: Serialize>(value: &T, mut buf: impl BufMut) -> Result<(), CodecError> {
    buf.put_slice(&serv_storage::codec::encode(value)?);
    Ok(())
}

/// Reads one value from the front of `buf`, consuming exactly its bytes.
fn take<T: serde::de::DeserializeOwned>(mut buf: impl Buf) -> Result<T, CodecError> {
    let (value, used) = serv_storage::codec::decode_prefix(buf.chunk())?;
    buf.advance(used);
    Ok(value)
}

/// Named limits and timings of the membership protocol.
#[derive(Clone, Debug)]
pub struct MembershipConfig {
    /// How often a member probes another.
    pub probe_period: Duration,
    /// How long a probe waits for its answer before asking others to probe.
    pub probe_rtt: Duration,
    /// How long a suspect member has to refute the suspicion before it is declared down.
    pub suspect_to_down_after: Duration,
    /// Cluster size foca tunes its dissemination for.
    pub expected_size: u32,
}

impl Default for MembershipConfig {
    fn default() -> Self {
        Self {
            probe_period: Duration::from_millis(1000),
            probe_rtt: Duration::from_millis(500),
            suspect_to_down_after: Duration::from_secs(3),
            expected_size: 8,
        }
    }
}

/// How a member stands in this node's view.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MemberState {
    Alive,
    Suspect,
    Down,
}

/// One member in this node's view (itself included).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberView {
    pub id: String,
    pub addr: SocketAddr,
    pub state: MemberState,
    pub incarnation: u64,
    /// What the node told about itself, once its broadcast arrived.
    pub meta: Option<NodeMeta>,
}

enum Event {
    Data(Bytes),
    Timer(Timer<NodeIdentity>),
    Announce(SocketAddr),
    Leave,
    /// Time to declare down the members suspect past their time ([`Suspicions`]).
    Overdue,
}

/// A running membership: the view, and a handle to act on it.
pub struct Membership {
    view: watch::Receiver<Vec<MemberView>>,
    events: mpsc::Sender<Event>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Membership {
    /// Starts the membership of `me` on `mesh` (reading its `datagrams`), announces it to
    /// `seeds` and spreads `meta`.
    pub fn start(
        me: NodeIdentity,
        meta: NodeMeta,
        mesh: Mesh,
        mut datagrams: mpsc::Receiver<Bytes>,
        config: MembershipConfig,
        seeds: Vec<SocketAddr>,
    ) -> Self {
        let (events, inbox) = mpsc::channel(1024);
        let (publish, view) = watch::channel(Vec::new());
        let forward = events.clone();
        tokio::spawn(async move {
            while let Some(datagram) = datagrams.recv().await {
                if forward.send(Event::Data(datagram)).await.is_err() {
                    return;
                }
            }
        });
        let task = tokio::spawn(run(me, meta, mesh, config, inbox, events.clone(), publish));
        let membership = Self { view, events, task: Some(task) };
        for seed in seeds {
            let _ = membership.events.try_send(Event::Announce(seed));
        }
        membership
    }

    /// The members this node knows, itself first.
    pub fn members(&self) -> Vec<MemberView> {
        self.view.borrow().clone()
    }

    /// A receiver that sees every change of the view.
    pub fn watch(&self) -> watch::Receiver<Vec<MemberView>> {
        self.view.clone()
    }

    /// Announces this node to `seed` (again).
    pub async fn announce(&self, seed: SocketAddr) {
        let _ = self.events.send(Event::Announce(seed)).await;
    }

    /// Tells the others this node leaves, then stops.
    pub async fn leave(mut self) {
        let _ = self.events.send(Event::Leave).await;
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(2), task).await;
        }
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

async fn run(
    me: NodeIdentity,
    mut meta: NodeMeta,
    mesh: Mesh,
    config: MembershipConfig,
    mut inbox: mpsc::Receiver<Event>,
    events: mpsc::Sender<Event>,
    publish: watch::Sender<Vec<MemberView>>,
) {
    let mut foca_config =
        foca::Config::new_lan(NonZeroU32::new(config.expected_size.max(1)).expect("at least 1"));
    foca_config.probe_period = config.probe_period;
    foca_config.probe_rtt = config.probe_rtt;
    foca_config.suspect_to_down_after = config.suspect_to_down_after;
    foca_config.max_packet_size = NonZeroUsize::new(1100).expect("non-zero");
    // After a partition each side holds the other down and stops probing it; only an announce
    // to down members brings them back. foca's LAN default waits 65 s for that; a partition
    // found by the chaos harness kept nodes apart for the whole of a 30 s heal. Every 5 probe
    // periods costs a datagram or two and heals in seconds.
    foca_config.periodic_announce_to_down_members = Some(foca::PeriodicParams {
        frequency: config.probe_period * 5,
        num_members: NonZeroUsize::new(2).expect("non-zero"),
    });
    let table: MetaTable = Arc::default();
    let mut foca = Foca::with_custom_broadcast(
        me.clone(),
        foca_config,
        StdRng::try_from_rng(&mut rand_foca::rngs::SysRng).expect("the OS gives randomness"),
        WireCodec,
        MetaHandler(table.clone()),
    );
    let mut runtime = AccumulatingRuntime::new();
    let mut down: HashMap<String, NodeIdentity> = HashMap::new();
    meta.id = me.id.clone();
    meta.boot = me.boot;
    broadcast_meta(&mut foca, &meta);
    publish_view(&foca, &me, &meta, &table, &down, &publish);
    // Broadcasts reach members by chance (piggybacked on probes a few times each): saying it
    // again now and then makes sure every member hears every other's metadata.
    let mut rebroadcast = tokio::time::interval(config.probe_period * 10);
    rebroadcast.tick().await;
    let mut suspicions = Suspicions::default();
    let mut overdue = tokio::time::interval(config.suspect_to_down_after);
    loop {
        let event = tokio::select! {
            event = inbox.recv() => match event {
                Some(event) => event,
                None => return,
            },
            _ = rebroadcast.tick() => {
                meta.seq += 1;
                broadcast_meta(&mut foca, &meta);
                continue;
            }
            _ = overdue.tick() => Event::Overdue,
        };
        let outcome = match event {
            Event::Overdue => {
                let overdue = suspicions.overdue(config.suspect_to_down_after * SUSPICION_LOST_AFTER);
                for member in &overdue {
                    tracing::info!(member = %member.id().id, "a member suspect past its time is declared down");
                }
                foca.apply_many(overdue.into_iter(), true, &mut runtime)
            }
            Event::Data(data) => foca.handle_data(&data, &mut runtime),
            Event::Timer(timer) => foca.handle_timer(timer, &mut runtime),
            Event::Announce(addr) => {
                foca.announce(NodeIdentity { id: String::new(), addr, boot: 0 }, &mut runtime)
            }
            Event::Leave => {
                let _ = foca.leave_cluster(&mut runtime);
                while let Some((to, data)) = runtime.to_send() {
                    mesh.send_datagram(to.addr, data);
                }
                tokio::time::sleep(Duration::from_millis(200)).await; // let the datagrams go out
                return;
            }
        };
        if let Err(error) = outcome {
            tracing::debug!(%error, "membership input refused");
        }
        while let Some((to, data)) = runtime.to_send() {
            mesh.send_datagram(to.addr, data);
        }
        while let Some((after, timer)) = runtime.to_schedule() {
            let events = events.clone();
            tokio::spawn(async move {
                tokio::time::sleep(after).await;
                let _ = events.send(Event::Timer(timer)).await;
            });
        }
        while let Some(notification) = runtime.to_notify() {
            match notification {
                OwnedNotification::MemberUp(member) => {
                    down.remove(&member.id);
                    // A newcomer missed what was spread before it came: say it again.
                    meta.seq += 1;
                    broadcast_meta(&mut foca, &meta);
                }
                OwnedNotification::MemberDown(member) => {
                    down.insert(member.id.clone(), member);
                }
                _ => {}
            }
        }
        suspicions.follow(&foca);
        // Membership or metadata may have changed with any input; an unchanged view is not sent.
        publish_view(&foca, &me, &meta, &table, &down, &publish);
    }
}

/// Times this process saw a member (an identity at an incarnation) become suspect, for `/metrics`.
static SUSPICIONS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Times this node saw a member become suspect since it started.
pub fn suspicions_total() -> u64 {
    SUSPICIONS.load(std::sync::atomic::Ordering::Relaxed)
}

/// A suspect held this many times `suspect_to_down_after` lost its timer (see [`Suspicions`]).
const SUSPICION_LOST_AFTER: u32 = 2;

/// The members foca holds as suspect, and since when. A suspect either refutes (a higher
/// incarnation) or is declared down when its timer fires; but foca drops every pending timer
/// when it resets (this node came back under a renewed identity, or had lost every member),
/// and a suspect it held then stayed suspect for ever. Found by the chaos harness: after a
/// partition healed, a node held another suspect for minutes. Declaring such a member down is
/// what the lost timer would have done; the member then rejoins under a renewed identity.
#[derive(Default)]
struct Suspicions(HashMap<NodeIdentity, (Incarnation, Instant)>);

impl Suspicions {
    fn follow(&mut self, foca: &Foca<NodeIdentity, WireCodec, StdRng, MetaHandler>) {
        let now = Instant::now();
        let suspects: HashMap<&NodeIdentity, Incarnation> = foca
            .iter_membership_state()
            .filter(|member| member.state() == State::Suspect)
            .map(|member| (member.id(), member.incarnation()))
            .collect();
        self.0.retain(|id, (incarnation, _)| suspects.get(id) == Some(incarnation));
        for (id, incarnation) in suspects {
            self.0.entry(id.clone()).or_insert_with(|| {
                SUSPICIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                (incarnation, now)
            });
        }
    }

    /// The members suspect for longer than `after`, as down.
    fn overdue(&self, after: Duration) -> Vec<Member<NodeIdentity>> {
        self.0
            .iter()
            .filter(|(_, (_, since))| since.elapsed() > after)
            .map(|(id, (incarnation, _))| Member::new(id.clone(), *incarnation, State::Down))
            .collect()
    }
}

/// Queues this node's metadata for dissemination.
fn broadcast_meta(foca: &mut Foca<NodeIdentity, WireCodec, StdRng, MetaHandler>, meta: &NodeMeta) {
    match serv_storage::codec::encode(meta) {
        Ok(bytes) => {
            if let Err(error) = foca.add_broadcast(&bytes) {
                tracing::warn!(%error, "node metadata not broadcast");
            }
        }
        Err(error) => tracing::warn!(%error, "node metadata not encoded"),
    }
}

fn publish_view(
    foca: &Foca<NodeIdentity, WireCodec, StdRng, MetaHandler>,
    me: &NodeIdentity,
    my_meta: &NodeMeta,
    table: &MetaTable,
    down: &HashMap<String, NodeIdentity>,
    publish: &watch::Sender<Vec<MemberView>>,
) {
    let mut view = vec![MemberView {
        id: me.id.clone(),
        addr: me.addr,
        state: MemberState::Alive,
        incarnation: 0,
        meta: Some(my_meta.clone()),
    }];
    // One entry per node id: its newest identity (a restarted node has a newer boot, and foca
    // may still hold the old one as down).
    let mut newest: HashMap<String, (u64, MemberView)> = HashMap::new();
    for member in foca.iter_membership_state() {
        let state = match member.state() {
            State::Alive => MemberState::Alive,
            State::Suspect => MemberState::Suspect,
            State::Down => MemberState::Down,
        };
        keep_newest(&mut newest, &me.id, member.id(), state, u64::from(member.incarnation()));
    }
    for gone in down.values() {
        if !newest.contains_key(&gone.id) {
            keep_newest(&mut newest, &me.id, gone, MemberState::Down, 0);
        }
    }
    let table = table.lock().unwrap_or_else(PoisonError::into_inner);
    let mut others: Vec<MemberView> = newest
        .into_values()
        .map(|(_, mut entry)| {
            entry.meta = table.get(&entry.id).cloned();
            entry
        })
        .collect();
    others.sort_by(|a, b| a.id.cmp(&b.id));
    view.extend(others);
    if *publish.borrow() == view {
        return; // unchanged: watchers are not woken
    }
    let _ = publish.send(view);
}

/// Records `identity` in `newest` unless it is this node, a seed placeholder, or older than the
/// identity already recorded for its id.
fn keep_newest(
    newest: &mut HashMap<String, (u64, MemberView)>,
    me: &str,
    identity: &NodeIdentity,
    state: MemberState,
    incarnation: u64,
) {
    if identity.id.is_empty() || identity.id == me {
        return;
    }
    if newest.get(&identity.id).is_some_and(|(boot, _)| *boot > identity.boot) {
        return;
    }
    let entry = MemberView { id: identity.id.clone(), addr: identity.addr, state, incarnation, meta: None };
    newest.insert(identity.id.clone(), (identity.boot, entry));
}

#[cfg(test)]
mod tests;

/// The ring that places entities, over one view: every member the view knows, whatever its
/// state. An entity stays with its owner while that owner is down (and answers "unavailable")
/// rather than moving to a node that does not hold its state.
pub fn placement_ring(view: &[MemberView]) -> crate::ring::Ring {
    crate::ring::Ring::with_default_vnodes(view.iter().map(|member| member.id.clone()))
}
