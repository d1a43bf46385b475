//! Injecting the schedule's faults into the running nodes: each fault injected, held, healed,
//! and ended only once its node is whole again; a wiped node's old id removed as an operator
//! would. What happened is recorded as [`FaultEvent`]s.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::Serialize;

use crate::history::History;
use crate::http::Http;
use crate::netns::{NETEM, Network};
use crate::nodes::Nodes;
use crate::schedule::{Fault, FaultKind};

/// A fault as it happened.
#[derive(Clone, Debug, Serialize)]
pub struct FaultEvent {
    pub kind: String,
    pub node: usize,
    /// From just before the fault was injected to when the node was whole again after the heal
    /// (ready, and seeing every member alive): when it may have been in effect, or its node
    /// not yet back as a full member.
    pub start_ms: u64,
    pub end_ms: u64,
    /// From just after it was injected to just before it was healed: when it was certainly in
    /// effect.
    pub held_from_ms: u64,
    pub held_until_ms: u64,
    pub detail: String,
    /// The harness could not inject or heal it: the run proves nothing about this fault.
    pub failed: bool,
    /// When the node was whole again after the heal; `None` when it was not within the
    /// rejoin patience.
    pub rejoined_ms: Option<u64>,
}

/// Applies the schedule; restarts a node that exits on its own (and records that as a crash).
pub(crate) async fn inject(
    nodes: &mut Nodes,
    network: Option<&Network>,
    http: &Http,
    planned: &[Fault],
    history: &History,
    duration_ms: u64,
) -> Vec<FaultEvent> {
    let mut events = Vec::new();
    let mut next = planned.iter().peekable();
    loop {
        let now = history.now_ms();
        if now >= duration_ms {
            break;
        }
        for index in 0..nodes.len() {
            if let Some(status) = nodes.exited(index) {
                events.push(FaultEvent {
                    kind: "crash".into(),
                    node: index,
                    start_ms: now,
                    end_ms: now,
                    held_from_ms: now,
                    held_until_ms: now,
                    detail: format!("exited on its own: {status}; log tail:\n{}", nodes.log_tail(index, 20)),
                    failed: false,
                    rejoined_ms: None,
                });
                let _ = nodes.start(index);
            }
        }
        match next.peek() {
            Some(fault) if fault.at_ms <= now => {
                let fault = next.next().expect("peeked");
                events.push(apply(nodes, network, http, fault, history).await);
            }
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    events
}

/// How long a healed node may take to be whole again (ready, every member alive) before the
/// run says it did not rejoin.
const REJOIN_PATIENCE: Duration = Duration::from_secs(30);

/// One fault: inject, hold, heal, and wait until the node is whole again, so that the next
/// fault (of another node, perhaps) never meets a cluster that is still missing this one.
async fn apply(
    nodes: &mut Nodes,
    network: Option<&Network>,
    http: &Http,
    fault: &Fault,
    history: &History,
) -> FaultEvent {
    let index = fault.node;
    let start_ms = history.now_ms();
    // A wiped node comes back as a new member; its old id is removed as an operator would.
    let wiped_id = match fault.kind {
        FaultKind::Wipe => node_id(http, nodes, index).await,
        _ => None,
    };
    let injected = tokio::task::block_in_place(|| match fault.kind {
        FaultKind::Kill => nodes.kill(index).map(|()| "SIGKILL".to_string()),
        FaultKind::Pause => nodes.pause(index).map(|()| "SIGSTOP".to_string()),
        FaultKind::Restart => nodes.terminate(index).map(|status| format!("SIGTERM: {status}")),
        FaultKind::Wipe => nodes.wipe(index).map(|()| "SIGKILL and data dir deleted".to_string()),
        FaultKind::Partition => {
            on_network(network, |n| n.partition(index)).map(|()| "cut off from the other nodes".into())
        }
        FaultKind::Netem => {
            on_network(network, |n| n.degrade(index)).map(|()| format!("netem {}", NETEM.join(" ")))
        }
    });
    let held_from_ms = history.now_ms();
    tokio::time::sleep(Duration::from_millis(fault.hold_ms)).await;
    let held_until_ms = history.now_ms();
    let healed = tokio::task::block_in_place(|| match fault.kind {
        FaultKind::Pause => nodes.resume(index),
        FaultKind::Partition => on_network(network, |n| n.heal_partition(index)),
        FaultKind::Netem => on_network(network, |n| n.restore(index)),
        FaultKind::Kill | FaultKind::Restart | FaultKind::Wipe => nodes.start(index),
    });
    let (mut detail, failed) = match (injected, healed) {
        (Ok(what), Ok(())) => (what, false),
        (Err(e), _) | (_, Err(e)) => (format!("{e:#}"), true),
    };
    let mut rejoined = wait_cluster(http, nodes, &[index], nodes.len(), false, REJOIN_PATIENCE).await;
    if let (Some(old), Ok(())) = (&wiped_id, &rejoined) {
        // Then its partitions are re-replicated to the new member before the next fault.
        rejoined = match remove_member(http, nodes, index, old).await {
            Ok(()) => {
                detail.push_str(&format!("; old id {old} removed"));
                let all: Vec<usize> = (0..nodes.len()).collect();
                wait_cluster(http, nodes, &all, nodes.len(), true, REJOIN_PATIENCE).await
            }
            Err(error) => Err(error),
        };
    }
    let end_ms = history.now_ms();
    let rejoined_ms = match rejoined {
        Ok(()) => Some(end_ms),
        Err(error) => {
            detail.push_str(&format!("; healed, but {error:#}"));
            None
        }
    };
    let kind = fault.kind.name().into();
    FaultEvent {
        kind,
        node: index,
        start_ms,
        end_ms,
        held_from_ms,
        held_until_ms,
        detail,
        failed,
        rejoined_ms,
    }
}

/// The node id `index` runs under, if it answers.
async fn node_id(http: &Http, nodes: &Nodes, index: usize) -> Option<String> {
    let node = &nodes.nodes[index];
    let answer = http.admin_json(node.addr(node.ports.admin), "/v1/node").await.ok()?;
    answer["id"].as_str().map(str::to_string)
}

/// Removes member `old` (down for good) through a node other than `index`, as an operator
/// would (`DELETE /v1/cluster/members/ID`); retried while the nodes still see it up.
async fn remove_member(http: &Http, nodes: &Nodes, index: usize, old: &str) -> Result<()> {
    let asked = &nodes.nodes[(index + 1) % nodes.len()];
    let path = format!("/v1/cluster/members/{old}");
    let started = Instant::now();
    loop {
        let answer = http.admin("DELETE", asked.addr(asked.ports.admin), &path).await;
        let why = match answer {
            Ok(response) if response.status == 200 => return Ok(()),
            Ok(response) => format!("HTTP {} {}", response.status, String::from_utf8_lossy(&response.body)),
            Err(failure) => failure.error,
        };
        if started.elapsed() > REJOIN_PATIENCE {
            anyhow::bail!("the wiped node's old id {old} could not be removed: {why}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn on_network(network: Option<&Network>, act: impl FnOnce(&Network) -> Result<()>) -> Result<()> {
    act(network.context("a network fault needs the nodes in namespaces (--hosts netns)")?)
}

/// Waits until each of `which` answers /readyz and sees `want` members alive, and (when
/// `need_settled`) reports a settled ring of them: leaders where they are preferred.
pub(crate) async fn wait_cluster(
    http: &Http,
    nodes: &Nodes,
    which: &[usize],
    want: usize,
    need_settled: bool,
    patience: Duration,
) -> Result<()> {
    let started = Instant::now();
    let mut last = String::new();
    while started.elapsed() < patience {
        let mut ready = true;
        for &index in which {
            let node = &nodes.nodes[index];
            let admin = node.addr(node.ports.admin);
            let up = matches!(http.admin("GET", admin, "/readyz").await, Ok(r) if r.status == 200);
            let ring = http.admin_json(admin, "/v1/cluster/ring").await;
            let settled = match &ring {
                Ok(ring) => {
                    (!need_settled || ring["settled"] == true)
                        && ring["nodes"].as_array().is_some_and(|nodes| nodes.len() >= want)
                }
                Err(_) => false,
            };
            let members = http.admin_json(admin, "/v1/cluster/members").await;
            let alive = members.as_ref().map_or(0, |m| {
                m["members"].as_array().map_or(0, |all| all.iter().filter(|m| m["state"] == "alive").count())
            });
            if !(up && settled && alive >= want) {
                let why = ring.err().or(members.err()).unwrap_or_default();
                last = format!(
                    "{}: ready {up}, settled {settled}, {alive} of {want} members alive {why}",
                    node.name()
                );
                ready = false;
                break;
            }
        }
        if ready {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    anyhow::bail!("not ready within {patience:?}: {last}")
}
