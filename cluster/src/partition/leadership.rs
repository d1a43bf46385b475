//! Leadership hand-over: each partition is led by its preferred replica whenever that replica
//! is up, so the leaders (and with them the entities and their work) spread over the nodes as
//! the replica sets do, and come back to a node that returns after a failure.
//!
//! A partition's **preferred leader** is the first member of its replica set that is up (see
//! [`super::ReplicaSets::preferred`]). A leader that is not the preferred one hands the partition over
//! once the preferred replica is a voter within a few entries of its log:
//! 1. it stops serving the partition, and its entities are drained and stopped (a message that
//!    arrives meanwhile waits for the next leader, as in a failover);
//! 2. it waits until it has applied every entry and the successor holds them all;
//! 3. it asks the successor to stand for election.
//!
//! openraft 0.9 has no leadership transfer, but the election wins at once: the old leader grants
//! the vote, which with three replicas is a majority, and steps down when it grants it. (A
//! replica refuses any vote within the leader lease, 2 s, of its own vote changing: for the
//! leader, of its election. So a partition is handed over only once its leader has led it for
//! [`LED_BEFORE_HAND_OVER`].) With four or more voters the two are no majority: the others
//! refuse within their lease, the old leader has stepped down, and whoever wins the election
//! that follows leads (measured on 5 nodes at R=5: the old leader won again and again, 56
//! hand-overs of 16 partitions in 90 s). Such groups are not handed over, for now: a transfer
//! there needs the leader to fall silent for a lease first. A hand-over that fails (the
//! successor cannot be reached) or has not ended within [`HAND_OVER_TIMEOUT`] gives the
//! partition back to its leader, which serves it again and does not try again for
//! [`HAND_OVER_BACKOFF`].

use std::future::Future;
use std::sync::atomic::Ordering;
use std::time::Duration;

use openraft::ServerState;

use super::{Group, Partitions, Serving, node_name, node_number};

/// Most hand-overs a node runs at once: each leaves its partition unserved while it runs
/// (requests wait), so they are spread over the rounds.
pub const MAX_HAND_OVERS: usize = 16;

/// Longest one step of a hand-over may take before the leader serves its partition again.
pub const HAND_OVER_TIMEOUT: Duration = Duration::from_secs(5);

/// Most voters a group may have to be handed over: the old leader's vote and its successor's
/// must be a majority.
pub const MAX_VOTERS_TO_HAND_OVER: usize = 3;

/// How long a leader waits before it tries again to hand over a partition whose last hand-over
/// did not end (the successor could not be reached, say): each try leaves the partition
/// unserved for a moment.
pub const HAND_OVER_BACKOFF: Duration = Duration::from_secs(30);

/// How long a leader must have served a partition before it hands it over: past openraft's
/// leader lease (`election_timeout_max`), within which it would refuse its successor's vote.
pub const LED_BEFORE_HAND_OVER: Duration = Duration::from_millis(2500);

impl Partitions {
    /// Partitions this node serves whose preferred leader is another voter holding the whole
    /// log, with that replica: what this node should hand over (at most `most`).
    pub fn hand_overs(&self, most: usize) -> Vec<(u64, u64)> {
        let Some(sets) = self.sets.get() else { return Vec::new() };
        self.groups()
            .iter()
            .filter(|group| group.serving() == Serving::Here)
            .filter_map(|group| {
                let to = group.hand_over_target(sets)?;
                group.ready_to_hand_to(to).then_some((group.partition, to))
            })
            .take(most)
            .collect()
    }

    /// Every partition this node leads that another replica can take now, with that replica:
    /// the first of the replica set, after this node, that is up and caught up. What a
    /// node about to stop hands over, so that its partitions are led again within a hand-over
    /// (tens of ms) rather than an election once it is gone (seconds, and a drain before it).
    pub fn successors(&self) -> Vec<(u64, u64)> {
        let Some(sets) = self.sets.get() else { return Vec::new() };
        self.groups()
            .iter()
            .filter_map(|group| {
                let mut others = sets.of(group.partition).into_iter().filter(|node| sets.is_up(node));
                let to = others.find_map(|node| {
                    node_number(&node).filter(|to| *to != group.me && group.ready_to_hand_to(*to))
                })?;
                Some((group.partition, to))
            })
            .collect()
    }

    /// True when no partition this node leads is to be handed over: each is led by its
    /// preferred replica (this node), or its preferred replica cannot take it (not a voter, or
    /// down), or it is not handed over (more than [`MAX_VOTERS_TO_HAND_OVER`] voters).
    pub fn led_as_preferred(&self) -> bool {
        let Some(sets) = self.sets.get() else { return true };
        self.groups().iter().all(|group| {
            group.raft.metrics().borrow().state != ServerState::Leader
                || group.hand_over_target(sets).is_none()
        })
    }

    /// Hands `partition` to `to`: stops serving it, awaits `drain` (which stops its entities
    /// here), and asks `to` to stand for election once it holds every entry. Answers once this
    /// node stepped down, or why the partition stays here.
    pub async fn hand_over(
        &self,
        partition: u64,
        to: u64,
        drain: impl Future<Output = ()>,
    ) -> Result<(), String> {
        let group = &self.group(partition);
        let Some(transport) = &self.transport else {
            return Err("this node runs its partitions without a mesh".into());
        };
        group.handing_over.store(true, Ordering::Release);
        // Served again however this ends, also if the caller gives up on it (a drain's deadline).
        let _serve_again = ServeAgain(&group.handing_over);
        let outcome = async {
            drain.await;
            group
                .raft
                .wait(Some(HAND_OVER_TIMEOUT))
                .metrics(
                    |m| {
                        let last = m.last_log_index;
                        m.last_applied.map(|id| id.index) == last && matched(m, to) == last
                    },
                    "every entry applied here and held by the successor",
                )
                .await
                .map_err(|e| e.to_string())?;
            transport.ask_to_elect(partition, to).await?;
            group
                .raft
                .wait(Some(HAND_OVER_TIMEOUT))
                .metrics(|m| m.state != ServerState::Leader, "stepped down")
                .await
                .map_err(|e| e.to_string())?;
            Ok(())
        }
        .await;
        match &outcome {
            Ok(()) => tracing::info!(partition, to = %node_name(to), "handed the leadership over"),
            Err(error) => {
                *group.hand_over_failed.lock().unwrap_or_else(std::sync::PoisonError::into_inner) =
                    Some(std::time::Instant::now());
                tracing::warn!(partition, to = %node_name(to), %error, "hand-over did not end; leading on");
            }
        }
        outcome
    }
}

/// Ends a hand-over's hold on its partition when dropped.
struct ServeAgain<'a>(&'a std::sync::atomic::AtomicBool);

impl Drop for ServeAgain<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// True when `node` holds the leader's log but for a few entries: a partition being written
/// never has a successor holding every entry at the instant it is looked at, and the hand-over
/// waits for the rest once the partition's writes have stopped.
fn caught_up(m: &openraft::RaftMetrics<u64, openraft::EmptyNode>, node: u64) -> bool {
    let held = matched(m, node).map_or(0, |index| index + 1);
    let entries = m.last_log_index.map_or(0, |index| index + 1);
    entries.saturating_sub(held) <= super::replicas::CAUGHT_UP_SLACK
}

/// The last entry `node` is known to hold, by the leader's replication metrics.
fn matched(m: &openraft::RaftMetrics<u64, openraft::EmptyNode>, node: u64) -> Option<u64> {
    m.replication.as_ref()?.get(&node)?.map(|id| id.index)
}

impl Group {
    /// The replica this group's leader should hand it to: its preferred leader, when that is
    /// another voter and the group has few enough voters to be handed over.
    fn hand_over_target(&self, sets: &super::ReplicaSets) -> Option<u64> {
        let to = sets.preferred(self.partition).filter(|to| *to != self.me)?;
        let metrics = self.raft.metrics();
        let m = metrics.borrow();
        let voters: Vec<u64> = m.membership_config.membership().voter_ids().collect();
        (voters.len() <= MAX_VOTERS_TO_HAND_OVER && voters.contains(&to)).then_some(to)
    }

    /// True when this node leads the group (for long enough, and no hand-over of it failed
    /// lately), no change of voters is under way, and `to` is a caught-up voter of few enough
    /// voters to be handed over.
    fn ready_to_hand_to(&self, to: u64) -> bool {
        let metrics = self.raft.metrics();
        let m = metrics.borrow();
        let voters: Vec<u64> = m.membership_config.membership().voter_ids().collect();
        if voters.len() > MAX_VOTERS_TO_HAND_OVER || !voters.contains(&to) {
            return false;
        }
        let led = self.taken_up_at.lock().unwrap_or_else(std::sync::PoisonError::into_inner).elapsed();
        let failed = *self.hand_over_failed.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        m.state == ServerState::Leader
            && led >= LED_BEFORE_HAND_OVER
            && failed.is_none_or(|at| at.elapsed() >= HAND_OVER_BACKOFF)
            && m.membership_config.membership().get_joint_config().len() == 1
            && caught_up(&m, to)
    }
}
