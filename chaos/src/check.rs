//! The checkers: the invariants of ARCHITECTURE.md read against a run's history, the final reads
//! made after every fault healed, and the actors the nodes report. Each violation names the
//! operations that prove it.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Serialize;

use crate::history::{Op, OpKind, Outcome};
use crate::messages::Subscription;
use crate::s3::Read;

/// A broken invariant, with the ops that show it.
#[derive(Clone, Debug, Serialize)]
pub struct Violation {
    /// Which invariant (`s3-acknowledged-write-lost`, `stomp-message-lost`, ...).
    pub invariant: &'static str,
    pub message: String,
    /// The ops involved (ids in the history).
    pub ops: Vec<u64>,
    /// When it shows, in ms since the run started (the op that proves it).
    pub at_ms: u64,
}

/// What a node answered for a key in the final reads.
pub type FinalReads = BTreeMap<String, Vec<(usize, Result<Read, String>)>>;

/// The writes (PUT, DELETE) of one key that may have taken effect: everything but refusals.
fn writes_of<'a>(ops: &'a [Op], target: &str) -> Vec<&'a Op> {
    ops.iter()
        .filter(|op| matches!(op.kind, OpKind::S3Put | OpKind::S3Delete) && op.target == target)
        .filter(|op| op.outcome != Outcome::Fail)
        .collect()
}

/// When a write is known to have taken effect by: its completion if acknowledged, never if not.
fn done_by(op: &Op) -> u64 {
    if op.outcome == Outcome::Ok { op.complete_ms } else { u64::MAX }
}

/// Invariant 1 after heal: the state of every key, read through every node, is what some write
/// left that no acknowledged write invoked later can have replaced, with exact bytes.
pub fn s3_final_state(ops: &[Op], reads: &FinalReads) -> Vec<Violation> {
    let mut violations = Vec::new();
    for (target, answers) in reads {
        let writes = writes_of(ops, target);
        let acked: Vec<&Op> = writes.iter().copied().filter(|op| op.outcome == Outcome::Ok).collect();
        // A write is a possible final state unless an acknowledged write began after it ended.
        let possible: Vec<&Op> =
            writes.iter().copied().filter(|op| superseded_by(done_by(op), &acked).is_none()).collect();
        let initial_possible = acked.is_empty();
        let last_acked: Vec<u64> =
            acked.iter().filter(|op| possible.iter().any(|p| p.id == op.id)).map(|op| op.id).collect();
        for (node, answer) in answers {
            let at_ms = acked.iter().map(|op| op.complete_ms).max().unwrap_or(0);
            let fine = match answer {
                Ok(Read::Absent) => initial_possible || possible.iter().any(|op| op.kind == OpKind::S3Delete),
                Ok(Read::Value(id)) => {
                    possible.iter().any(|op| op.kind == OpKind::S3Put && op.value == Some(*id))
                }
                Ok(Read::Corrupt(why)) => {
                    violations.push(Violation {
                        invariant: "s3-corrupt-read",
                        message: format!("{target} read through n{} is corrupt: {why}", node + 1),
                        ops: last_acked.clone(),
                        at_ms,
                    });
                    continue;
                }
                Err(error) => {
                    violations.push(Violation {
                        invariant: "s3-unreadable-after-heal",
                        message: format!(
                            "{target} could not be read through n{} after heal: {error}",
                            node + 1
                        ),
                        ops: last_acked.clone(),
                        at_ms,
                    });
                    continue;
                }
            };
            if !fine {
                let read = answer.as_ref().map(Read::describe).unwrap_or_default();
                let expected: Vec<String> = acked
                    .iter()
                    .filter(|op| last_acked.contains(&op.id))
                    .map(|op| {
                        let what = if op.kind == OpKind::S3Put { "PUT" } else { "DELETE" };
                        format!(
                            "{what} op {} (n{}, acknowledged at {} ms)",
                            op.id,
                            op.node + 1,
                            op.complete_ms
                        )
                    })
                    .collect();
                violations.push(Violation {
                    invariant: "s3-acknowledged-write-lost",
                    message: format!(
                        "{target} through n{} reads {read}, but the last acknowledged write was {}",
                        node + 1,
                        expected.join(" or ")
                    ),
                    ops: last_acked.clone(),
                    at_ms,
                });
            }
        }
    }
    violations
}

/// The first acknowledged write in `acked` that began after a write known done by `done_by`
/// (see `done_by`): proof that the earlier write can no longer be the key's state.
fn superseded_by<'a>(done_by: u64, acked: &[&'a Op]) -> Option<&'a Op> {
    acked.iter().copied().find(|w| w.invoke_ms > done_by)
}

/// Reads during the run see every write acknowledged before they began: a GET must not return
/// a value (or absence) that an acknowledged write, done before the GET began, had replaced.
/// Each entity has one owner, so S3 reads are expected to be linearizable.
pub fn s3_stale_reads(ops: &[Op]) -> Vec<Violation> {
    let mut violations = Vec::new();
    let gets = ops.iter().filter(|op| {
        op.kind == OpKind::S3Get && op.outcome == Outcome::Ok && !op.detail.starts_with("corrupt")
    });
    let mut writes_by_key: HashMap<&str, Vec<&Op>> = HashMap::new();
    for op in ops
        .iter()
        .filter(|op| matches!(op.kind, OpKind::S3Put | OpKind::S3Delete) && op.outcome != Outcome::Fail)
    {
        writes_by_key.entry(op.target.as_str()).or_default().push(op);
    }
    for get in gets {
        let writes = writes_by_key.get(get.target.as_str()).map(Vec::as_slice).unwrap_or_default();
        let before: Vec<&Op> = writes
            .iter()
            .copied()
            .filter(|w| w.outcome == Outcome::Ok && w.complete_ms < get.invoke_ms)
            .collect();
        if before.is_empty() {
            continue;
        }
        // The writes that could have left what the GET saw, and whether one of them still could.
        let sources: Vec<Option<&Op>> = match get.value {
            Some(value) => writes.iter().copied().filter(|w| w.value == Some(value)).map(Some).collect(),
            None => writes
                .iter()
                .copied()
                .filter(|w| w.kind == OpKind::S3Delete)
                .map(Some)
                .chain([None])
                .collect(),
        };
        let stale = sources.iter().all(|source| superseded_by(source.map_or(0, done_by), &before).is_some());
        if stale {
            let newer = before.iter().max_by_key(|w| w.invoke_ms).expect("not empty");
            let what = if newer.kind == OpKind::S3Put { "PUT" } else { "DELETE" };
            let saw = get.value.map_or("absent".to_string(), |v| format!("the value of op {v}"));
            violations.push(Violation {
                invariant: "s3-stale-read",
                message: format!(
                    "GET op {} of {} through n{} at {} ms saw {saw}, but {what} op {} was acknowledged at {} ms",
                    get.id,
                    get.target,
                    get.node + 1,
                    get.invoke_ms,
                    newer.id,
                    newer.complete_ms
                ),
                ops: vec![get.id, newer.id],
                at_ms: get.complete_ms,
            });
        }
    }
    violations
}

/// Reads during the run: a GET returns a value some PUT of that key had begun writing, with its
/// exact bytes; a listing names only keys some PUT had begun writing.
pub fn s3_reads(ops: &[Op]) -> Vec<Violation> {
    let puts: HashMap<u64, &Op> = ops
        .iter()
        .filter(|op| op.kind == OpKind::S3Put && op.outcome != Outcome::Fail)
        .map(|op| (op.id, op))
        .collect();
    let mut violations = Vec::new();
    for op in ops.iter().filter(|op| op.outcome == Outcome::Ok) {
        match op.kind {
            OpKind::S3Get if op.detail.starts_with("corrupt") => violations.push(Violation {
                invariant: "s3-corrupt-read",
                message: format!("GET op {} of {} through n{}: {}", op.id, op.target, op.node + 1, op.detail),
                ops: vec![op.id],
                at_ms: op.complete_ms,
            }),
            OpKind::S3Get => {
                let Some(value) = op.value else { continue };
                let written =
                    puts.get(&value).filter(|put| put.target == op.target && put.invoke_ms <= op.complete_ms);
                if written.is_none() {
                    violations.push(Violation {
                        invariant: "s3-invented-value",
                        message: format!(
                            "GET op {} of {} through n{} read the value of op {value}, which never wrote that key before",
                            op.id,
                            op.target,
                            op.node + 1
                        ),
                        ops: vec![op.id, value],
                        at_ms: op.complete_ms,
                    });
                }
            }
            OpKind::S3List => {
                for key in op.detail.split_whitespace() {
                    let target = format!("{}/{key}", op.target);
                    let written =
                        puts.values().any(|put| put.target == target && put.invoke_ms <= op.complete_ms);
                    if !written {
                        violations.push(Violation {
                            invariant: "s3-invented-key",
                            message: format!(
                                "list op {} through n{} named {target}, never written",
                                op.id,
                                op.node + 1
                            ),
                            ops: vec![op.id],
                            at_ms: op.complete_ms,
                        });
                    }
                }
            }
            _ => {}
        }
    }
    violations
}

/// The acknowledged messages no subscription of their destination has received yet (the
/// harness waits for this to empty before checking).
pub fn undelivered(ops: &[Op], subscriptions: &[Subscription]) -> usize {
    let delivered = delivered_sets(ops);
    let mut missing = 0;
    for op in ops.iter().filter(|op| is_send(op) && op.outcome == Outcome::Ok) {
        for subscription in subscriptions.iter().filter(|s| s.destination == op.target) {
            let seen = delivered
                .get(&subscription.name())
                .is_some_and(|set| op.value.is_some_and(|v| set.contains(&v)));
            missing += usize::from(!seen);
        }
    }
    missing
}

fn is_send(op: &Op) -> bool {
    matches!(op.kind, OpKind::Send | OpKind::TxSend)
}

fn delivered_sets(ops: &[Op]) -> HashMap<String, HashSet<u64>> {
    let mut sets: HashMap<String, HashSet<u64>> = HashMap::new();
    for op in ops.iter().filter(|op| op.kind == OpKind::Deliver) {
        if let Some(value) = op.value {
            sets.entry(op.target.clone()).or_default().insert(value);
        }
    }
    sets
}

/// Invariant 2: every receipted message reached every subscription of its destination at least
/// once; every delivery is of a message sent there; a repeat carries `redelivered:true`.
pub fn stomp(ops: &[Op], subscriptions: &[Subscription]) -> Vec<Violation> {
    let mut violations = Vec::new();
    let sends: HashMap<u64, &Op> =
        ops.iter().filter(|op| is_send(op) && op.outcome != Outcome::Fail).map(|op| (op.id, op)).collect();
    let delivered = delivered_sets(ops);
    for op in ops.iter().filter(|op| is_send(op) && op.outcome == Outcome::Ok) {
        for subscription in subscriptions.iter().filter(|s| s.destination == op.target) {
            let name = subscription.name();
            if !delivered.get(&name).is_some_and(|set| op.value.is_some_and(|v| set.contains(&v))) {
                violations.push(Violation {
                    invariant: "stomp-acknowledged-message-lost",
                    message: format!(
                        "message {} sent to {} through n{} and receipted at {} ms never reached {name}",
                        op.id,
                        op.target,
                        op.node + 1,
                        op.complete_ms
                    ),
                    ops: vec![op.id],
                    at_ms: op.complete_ms,
                });
            }
        }
    }
    let mut seen: HashSet<(String, u64)> = HashSet::new();
    let mut deliveries: Vec<&Op> = ops.iter().filter(|op| op.kind == OpKind::Deliver).collect();
    deliveries.sort_by_key(|op| (op.complete_ms, op.id));
    for delivery in deliveries {
        let destination =
            subscriptions.iter().find(|s| s.name() == delivery.target).map(|s| s.destination.as_str());
        let sent = delivery.value.and_then(|id| sends.get(&id)).filter(|send| {
            Some(send.target.as_str()) == destination && send.invoke_ms <= delivery.complete_ms
        });
        let Some(sent) = sent else {
            violations.push(Violation {
                invariant: "stomp-invented-message",
                message: format!(
                    "{} received a message (chaos-id {:?}) through n{} that was never sent there",
                    delivery.target,
                    delivery.value,
                    delivery.node + 1
                ),
                ops: vec![delivery.id],
                at_ms: delivery.complete_ms,
            });
            continue;
        };
        let first = seen.insert((delivery.target.clone(), sent.id));
        if !first && !delivery.redelivered {
            violations.push(Violation {
                invariant: "stomp-repeat-without-redelivered",
                message: format!(
                    "{} received message {} again through n{} without redelivered:true",
                    delivery.target,
                    sent.id,
                    delivery.node + 1
                ),
                ops: vec![sent.id, delivery.id],
                at_ms: delivery.complete_ms,
            });
        }
    }
    violations
}

/// One actor as a node reports it.
#[derive(Clone, Debug)]
pub struct Placed {
    pub key: String,
    pub node: String,
}

/// Invariant 4: each entity runs on exactly one node, the one its ring names.
/// Every delivery carried what its destination makes of the message sent: the body as sent, or
/// the transform's output when the destination has one (never a raw or a garbled body).
pub fn untransformed(ops: &[Op]) -> Vec<Violation> {
    ops.iter()
        .filter(|op| op.kind == OpKind::Deliver && op.detail.starts_with(crate::messages::UNEXPECTED_BODY))
        .map(|op| Violation {
            invariant: "stomp-delivery-not-as-published",
            message: format!(
                "{} delivered message {} to {} with an {}",
                op.worker,
                op.value.map_or("?".to_string(), |v| v.to_string()),
                op.target,
                op.detail
            ),
            ops: vec![op.id],
            at_ms: op.complete_ms,
        })
        .collect()
}

pub fn single_owner(actors: &[Placed], ring_owner: &HashMap<String, String>, at_ms: u64) -> Vec<Violation> {
    let mut nodes_of: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for actor in actors.iter().filter(|a| !a.key.starts_with("supervisor/")) {
        nodes_of.entry(actor.key.as_str()).or_default().push(actor.node.as_str());
    }
    let mut violations = Vec::new();
    for (key, nodes) in nodes_of {
        let owner = ring_owner.get(key);
        let wrong = nodes.len() > 1 || owner.is_some_and(|owner| owner != nodes[0]);
        if wrong {
            violations.push(Violation {
                invariant: "single-owner",
                message: format!(
                    "{key} runs on {} but its partition's leader is {}",
                    nodes.join(", "),
                    owner.map_or("?", |o| o)
                ),
                ops: Vec::new(),
                at_ms,
            });
        }
    }
    violations
}

/// With `--expect-availability` (for when replication lands): during a fault, a GET sent to a
/// node the fault did not touch succeeds. `faulted` holds (node, start ms, end ms) of each fault.
pub fn available_during_faults(ops: &[Op], faulted: &[(usize, u64, u64)]) -> Vec<Violation> {
    let mut violations = Vec::new();
    for op in ops.iter().filter(|op| op.kind == OpKind::S3Get && op.outcome != Outcome::Ok) {
        // A read in flight when its own node was faulted failed for that fault.
        let own = faulted
            .iter()
            .any(|(node, start, end)| *node == op.node && *start <= op.complete_ms && *end >= op.invoke_ms);
        if own {
            continue;
        }
        let during = faulted
            .iter()
            .find(|(node, start, end)| *node != op.node && op.invoke_ms >= *start && op.invoke_ms <= *end);
        if let Some((node, ..)) = during {
            violations.push(Violation {
                invariant: "available-during-fault",
                message: format!(
                    "GET op {} of {} through n{} failed ({}) while only n{} was faulted",
                    op.id,
                    op.target,
                    op.node + 1,
                    op.detail,
                    node + 1
                ),
                ops: vec![op.id],
                at_ms: op.complete_ms,
            });
        }
    }
    violations
}

/// With `--expect-availability`, invariant 3: a node cut off from the others (a minority of
/// one) acknowledges no write while the partition holds. `partitions` holds (node, from ms,
/// until ms) of each partition, the time it was certainly in place. A write asked for after
/// the cut was complete and acknowledged before it began to heal is a violation; one
/// acknowledged later may have been committed once the majority was back.
pub fn minority_acknowledged_nothing(ops: &[Op], partitions: &[(usize, u64, u64)]) -> Vec<Violation> {
    let writes = ops.iter().filter(|op| {
        op.outcome == Outcome::Ok
            && matches!(op.kind, OpKind::S3Put | OpKind::S3Delete | OpKind::Send | OpKind::TxSend)
    });
    let mut violations = Vec::new();
    for op in writes {
        let cut = partitions
            .iter()
            .find(|(node, start, end)| *node == op.node && op.invoke_ms >= *start && op.complete_ms <= *end);
        if cut.is_some() {
            violations.push(Violation {
                invariant: "minority-acknowledged-write",
                message: format!(
                    "{:?} op {} of {} was acknowledged by n{} while it was cut off from the other nodes",
                    op.kind,
                    op.id,
                    op.target,
                    op.node + 1
                ),
                ops: vec![op.id],
                at_ms: op.complete_ms,
            });
        }
    }
    violations
}

#[cfg(test)]
mod tests;
