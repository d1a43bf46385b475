//! The directory's side of the mesh: messages forwarded to the node that serves an entity (and
//! followed to the node it names, while leadership moves), requests other nodes' directories
//! send here, and questions asked of every node (queries, actor records).

use std::time::Duration;

use tracing::Instrument;

use super::{Directory, DirectoryError, FAILOVER_WAIT, OWNER_RETRY};
use crate::placement::{MeshReply, MeshRequest, Place, Placement, Query};
use crate::{ActorKey, ActorRecord, KindMessage, trace};

/// Extra time a forwarded message gets over the call timeout, so that the owner's own timeout
/// (with its clearer error) fires first.
const FORWARD_MARGIN: Duration = Duration::from_secs(1);

/// Nodes a message may be sent on to without a pause (replica to leader, and once more while
/// leadership moves).
const MAX_QUICK_HOPS: usize = 3;

/// How long a node may take to list its actors for a cluster-wide listing.
const RECORDS_TIMEOUT: Duration = Duration::from_secs(2);

impl Directory {
    /// Sends `request` to `node`'s directory and answers the payload of its reply; every
    /// failure on the way is an error about `key`.
    pub(crate) async fn ask_node(
        &self,
        node: &str,
        key: &ActorKey,
        request: &MeshRequest,
    ) -> Result<Vec<u8>, DirectoryError> {
        let unavailable = |reason: String| DirectoryError::Unavailable { key: key.to_string(), reason };
        let placement = self.placement().ok_or_else(|| unavailable("this node is in no cluster".into()))?;
        let request = serv_storage::codec::encode(request).map_err(|e| unavailable(e.to_string()))?;
        let answer =
            placement.forward(node, request, self.hub.config.call_timeout).await.map_err(unavailable)?;
        let answer: MeshReply =
            serv_storage::codec::decode(&answer).map_err(|e| unavailable(e.to_string()))?;
        answer
    }

    /// Forwards `msg` to the directory of `owner`, asking again while the owner's view of the
    /// cluster disagrees with ours (until `deadline`). Answers the encoded reply.
    pub(super) async fn forward<M: KindMessage>(
        &self,
        placement: &dyn Placement,
        owner: &str,
        key: &ActorKey,
        msg: &M,
        wants_reply: bool,
        deadline: tokio::time::Instant,
    ) -> Result<Vec<u8>, DirectoryError> {
        let unavailable = |reason: String| DirectoryError::Unavailable { key: key.to_string(), reason };
        let read_only = msg.is_read_only();
        let msg = serv_storage::codec::encode(msg).map_err(|e| unavailable(format!("cannot encode: {e}")))?;
        let request = MeshRequest::Deliver {
            key: key.clone(),
            msg,
            wants_reply,
            traceparent: trace::current_traceparent(),
        };
        let request =
            serv_storage::codec::encode(&request).map_err(|e| unavailable(format!("cannot encode: {e}")))?;
        let mut owner = owner.to_string();
        // Asking a node that does not serve the key ends in a retry (towards the node it named,
        // or wherever the placement says now) until the owner answers or FAILOVER_WAIT is up:
        // such a node handled nothing. A node that could not be reached may have handled the
        // message before it died, so that is an error for the caller (sending it again would
        // deliver it twice).
        let give_up = deadline.min(tokio::time::Instant::now() + FAILOVER_WAIT);
        let mut hops = 0;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            // A read that the node lost is asked again (the caller routes it anew); anything
            // else may have been handled, so the caller is told.
            let lost = |reason: String| match read_only {
                true => DirectoryError::Moving { key: key.to_string(), reason },
                false => unavailable(reason),
            };
            let answer = tokio::select! {
                answer = placement.forward(&owner, request.clone(), left + FORWARD_MARGIN) => answer.map_err(lost)?,
                reason = gone_from(placement, key, &owner) => return Err(lost(reason)),
            };
            let answer: MeshReply = serv_storage::codec::decode(&answer)
                .map_err(|e| unavailable(format!("node {owner} answered undecodably: {e}")))?;
            hops += 1;
            let named = match answer {
                // The node asked knows who serves the key: ask that one (after a pause once
                // the nodes have sent the message around a few times).
                Err(DirectoryError::NotOwner { owner: theirs, .. })
                    if tokio::time::Instant::now() < give_up =>
                {
                    placement.leader_named(key, &theirs);
                    if hops > MAX_QUICK_HOPS {
                        tokio::time::sleep(OWNER_RETRY).await;
                    }
                    Some(theirs)
                }
                // No one serves it for the moment (an election): ask again once the placement
                // has had time to change.
                Err(DirectoryError::Moving { .. }) if tokio::time::Instant::now() < give_up => {
                    tokio::time::sleep(OWNER_RETRY).await;
                    None
                }
                Err(DirectoryError::NotOwner { owner: theirs, .. }) => {
                    return Err(unavailable(format!(
                        "the nodes kept sending it on ({owner}, then {theirs}) until it was time to give up"
                    )));
                }
                Err(DirectoryError::Moving { reason, .. }) => return Err(unavailable(reason)),
                answer => return answer,
            };
            match named {
                Some(theirs) if theirs != self.hub.node_id => owner = theirs,
                // Named this node, or no one: wherever this node's placement says now (a node
                // that names this one while this one disagrees is asked again).
                _ => match placement.place(key) {
                    Place::Here => {
                        // It is this node's now: the caller routes it again.
                        let reason = "it is served by this node now".to_string();
                        return Err(DirectoryError::Moving { key: key.to_string(), reason });
                    }
                    Place::There(next) => owner = next,
                    Place::Nowhere(reason) => return Err(unavailable(reason)),
                    Place::Moving(_) => {}
                },
            }
        }
    }

    /// Answers a request another node's directory forwarded here (see [`crate::placement`]).
    pub async fn serve_remote(&self, request: Vec<u8>) -> Vec<u8> {
        let answer = match serv_storage::codec::decode::<MeshRequest>(&request) {
            Err(error) => Err(DirectoryError::Unavailable {
                key: String::new(),
                reason: format!("an undecodable request: {error}"),
            }),
            Ok(MeshRequest::Records) => serv_storage::codec::encode(&self.records())
                .map_err(|e| DirectoryError::Unavailable { key: String::new(), reason: e.to_string() }),
            Ok(MeshRequest::Reset { key }) => self.reset(&key).await.map(|()| Vec::new()),
            Ok(MeshRequest::Passivate { key }) => self.passivate(&key).await.map(|()| Vec::new()),
            Ok(MeshRequest::Query { name, args }) => {
                let query = self.hub.queries.read().unwrap_or_else(|p| p.into_inner()).get(&name).cloned();
                match query {
                    Some(query) => {
                        query(args).await.map_err(|reason| DirectoryError::Unavailable { key: name, reason })
                    }
                    None => {
                        Err(DirectoryError::Unavailable { key: name, reason: "no such query here".into() })
                    }
                }
            }
            Ok(MeshRequest::Deliver { key, msg, wants_reply, traceparent }) => {
                let span = tracing::info_span!("remote", key = %key);
                trace::link_parent(&span, traceparent.as_deref());
                self.deliver_remote(key, msg, wants_reply).instrument(span).await
            }
        };
        serv_storage::codec::encode(&answer).unwrap_or_default()
    }

    async fn deliver_remote(&self, key: ActorKey, msg: Vec<u8>, wants_reply: bool) -> MeshReply {
        // Until this node knows where entities live, it serves no other node: it could take an
        // entity it does not hold.
        let Some(placement) = self.placement() else {
            return Err(DirectoryError::Moving {
                key: key.to_string(),
                reason: "the node is still joining".into(),
            });
        };
        match placement.place(&key) {
            Place::Here => {}
            Place::There(owner) => return Err(DirectoryError::NotOwner { key: key.to_string(), owner }),
            Place::Nowhere(reason) => {
                return Err(DirectoryError::Unavailable { key: key.to_string(), reason });
            }
            Place::Moving(reason) => return Err(DirectoryError::Moving { key: key.to_string(), reason }),
        }
        let spawner =
            self.hub.spawner(key.kind).ok_or(DirectoryError::NotServed { kind: key.kind.to_string() })?;
        spawner.serve(self.clone(), key, msg, wants_reply).await
    }

    /// Delivers an encoded message of kind `M` here: the owner's half of a forwarded message.
    pub(crate) async fn serve_encoded<M: KindMessage>(
        &self,
        key: ActorKey,
        msg: Vec<u8>,
        wants_reply: bool,
    ) -> MeshReply {
        let msg: M = serv_storage::codec::decode(&msg).map_err(|error| DirectoryError::Unavailable {
            key: key.to_string(),
            reason: format!("an undecodable message: {error}"),
        })?;
        let deadline = tokio::time::Instant::now() + self.hub.config.call_timeout;
        if !wants_reply {
            return tokio::time::timeout_at(deadline, self.deliver(&key, msg, None))
                .await
                .map_err(|_| self.timed_out(&key))?
                .map(|()| Vec::new())
                .map_err(DirectoryError::from);
        }
        let answer = self.call_here(&key, msg, deadline).await.map_err(DirectoryError::from)?;
        serv_storage::codec::encode(&answer)
            .map_err(|e| DirectoryError::Entity { key: key.to_string(), message: e.to_string() })
    }

    /// Answers `name` queries from other nodes with `query` (see [`Query`]).
    pub fn register_query(&self, name: &str, query: Query) {
        self.hub.queries.write().unwrap_or_else(|p| p.into_inner()).insert(name.to_string(), query);
    }

    /// Asks every other node that is up the query `name`; answers each node's id with its
    /// encoded answer or why there is none. A lone node has no peers to ask.
    pub async fn query_peers(&self, name: &str, args: Vec<u8>) -> Vec<(String, Result<Vec<u8>, String>)> {
        let request = MeshRequest::Query { name: name.to_string(), args };
        self.ask_peers(&request, self.hub.config.call_timeout).await
    }

    /// Inspection records of every actor on every node that answers, this node's first. A node
    /// that does not answer is left out (its records are not invented).
    pub async fn cluster_records(&self) -> Vec<ActorRecord> {
        let mut records = self.records();
        for (_, answer) in self.ask_peers(&MeshRequest::Records, RECORDS_TIMEOUT).await {
            let theirs = answer.ok().and_then(|a| serv_storage::codec::decode::<Vec<ActorRecord>>(&a).ok());
            records.extend(theirs.unwrap_or_default());
        }
        records
    }

    /// Sends `request` to every other node that is up, all at once; answers each node's id with
    /// the payload of its answer or why there is none.
    pub(super) async fn ask_peers(
        &self,
        request: &MeshRequest,
        timeout: Duration,
    ) -> Vec<(String, Result<Vec<u8>, String>)> {
        let Some(placement) = self.placement() else { return Vec::new() };
        let request = match serv_storage::codec::encode(request) {
            Ok(request) => request,
            Err(error) => return vec![(self.node_id().to_string(), Err(error.to_string()))],
        };
        let mut tasks = tokio::task::JoinSet::new();
        for node in placement.peers() {
            let answer = placement.forward(&node, request.clone(), timeout);
            tasks.spawn(async move {
                let answer = answer.await.and_then(|answer| {
                    let answer: MeshReply =
                        serv_storage::codec::decode(&answer).map_err(|e| e.to_string())?;
                    answer.map_err(|e| e.to_string())
                });
                (node, answer)
            });
        }
        let mut answers = Vec::new();
        while let Some(done) = tasks.join_next().await {
            answers.extend(done.ok());
        }
        answers
    }
}

/// Resolves once `owner` is no longer where `key` lives while it has a request for it: it went
/// down, or another node serves the key now (so `owner` was deposed, and cannot acknowledge a
/// write any more). The answer says why. An election still under way is waited out.
async fn gone_from(placement: &dyn Placement, key: &ActorKey, owner: &str) -> String {
    loop {
        tokio::time::sleep(OWNER_RETRY).await;
        if !placement.peers().iter().any(|peer| peer == owner) {
            return format!("node {owner} went down while it had the request (it may have handled it)");
        }
        match placement.place(key) {
            Place::There(now) if now == owner => {}
            Place::Moving(_) => {}
            Place::There(now) => {
                return format!(
                    "node {now} serves it now; node {owner} had the request (it may have handled it)"
                );
            }
            Place::Here => {
                return format!(
                    "this node serves it now; node {owner} had the request (it may have handled it)"
                );
            }
            Place::Nowhere(reason) => return reason,
        }
    }
}
