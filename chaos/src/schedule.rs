//! The fault schedule: which fault hits which node when, for how long. It is a pure function of
//! the seed and the run's shape, so a seed replays the same faults; the report prints it.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

use crate::rng::Rng;

/// A fault the harness can inject into one node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FaultKind {
    /// SIGKILL, then start the node again after the hold.
    Kill,
    /// SIGSTOP, then SIGCONT after the hold: the node is frozen, its sockets stay open.
    Pause,
    /// SIGTERM (a graceful drain), wait for the exit, start again after the hold.
    Restart,
    /// SIGKILL, delete the data dir, start again after the hold: a replaced disk. Without
    /// replication this loses every acknowledged write the node held, and the checker says so.
    Wipe,
    /// Cut the node off from every other node (clients still reach it); needs namespaces.
    Partition,
    /// Delay and drop the node's outgoing packets (`tc netem`); needs namespaces.
    Netem,
}

impl FaultKind {
    pub const ALL: [FaultKind; 6] = [
        FaultKind::Kill,
        FaultKind::Pause,
        FaultKind::Restart,
        FaultKind::Wipe,
        FaultKind::Partition,
        FaultKind::Netem,
    ];

    /// Whether it acts on the network, so needs each node on its own host (namespace).
    pub fn needs_network(self) -> bool {
        matches!(self, FaultKind::Partition | FaultKind::Netem)
    }

    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Kill => "kill",
            FaultKind::Pause => "pause",
            FaultKind::Restart => "restart",
            FaultKind::Wipe => "wipe",
            FaultKind::Partition => "partition",
            FaultKind::Netem => "netem",
        }
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for FaultKind {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        FaultKind::ALL.into_iter().find(|kind| kind.name() == text).ok_or_else(|| {
            let names: Vec<_> = FaultKind::ALL.iter().map(|kind| kind.name()).collect();
            format!("unknown fault {text:?} (known: {}, or none)", names.join(", "))
        })
    }
}

/// One scheduled fault.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Fault {
    /// When it starts, in ms since the workload started.
    pub at_ms: u64,
    pub kind: FaultKind,
    /// The node's index (0-based; the report calls it n1, n2, ...).
    pub node: usize,
    /// How long the node stays down or frozen before it is healed.
    pub hold_ms: u64,
}

/// The shape of a run that a schedule is drawn for.
#[derive(Clone, Debug)]
pub struct Shape {
    pub nodes: usize,
    pub duration_ms: u64,
    /// Mean quiet time between the end of one fault and the start of the next.
    pub interval_ms: u64,
    /// The longest a node stays down or frozen.
    pub max_hold_ms: u64,
    pub kinds: Vec<FaultKind>,
}

/// Nothing is injected in the first moments: the workload sets up its buckets and groups first.
pub const WARMUP_MS: u64 = 3_000;

/// The faults of a run: one at a time (a node is healed before the next fault), all healed
/// before the run's end.
pub fn draw(seed: u64, shape: &Shape) -> Vec<Fault> {
    let mut rng = Rng::new(seed, u64::MAX);
    let mut faults = Vec::new();
    if shape.kinds.is_empty() || shape.nodes == 0 {
        return faults;
    }
    let min_hold = (shape.max_hold_ms / 4).max(200);
    let mut at = WARMUP_MS + rng.below(shape.interval_ms.max(1));
    loop {
        let kind = shape.kinds[rng.below(shape.kinds.len() as u64) as usize];
        let node = rng.below(shape.nodes as u64) as usize;
        let hold_ms = rng.between(min_hold, shape.max_hold_ms.max(min_hold));
        if at + hold_ms >= shape.duration_ms {
            return faults;
        }
        faults.push(Fault { at_ms: at, kind, node, hold_ms });
        at += hold_ms + rng.between(shape.interval_ms / 2, shape.interval_ms * 3 / 2);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(kinds: Vec<FaultKind>) -> Shape {
        Shape { nodes: 3, duration_ms: 90_000, interval_ms: 4_000, max_hold_ms: 4_000, kinds }
    }

    #[test]
    fn a_seed_gives_the_same_schedule_and_another_seed_another() {
        let all = shape(FaultKind::ALL.to_vec());
        assert_eq!(draw(7, &all), draw(7, &all));
        assert_ne!(draw(7, &all), draw(8, &all));
    }

    #[test]
    fn faults_are_one_at_a_time_within_the_run_and_only_of_the_kinds_asked() {
        let asked = shape(vec![FaultKind::Kill, FaultKind::Pause]);
        let faults = draw(3, &asked);
        assert!(faults.len() >= 5, "90 s at a 4 s interval gives many faults: {faults:?}");
        for pair in faults.windows(2) {
            assert!(pair[0].at_ms + pair[0].hold_ms < pair[1].at_ms, "overlap: {pair:?}");
        }
        assert!(faults.iter().all(|f| f.at_ms >= WARMUP_MS && f.at_ms + f.hold_ms < 90_000));
        assert!(faults.iter().all(|f| asked.kinds.contains(&f.kind) && f.node < 3));
        assert!(draw(3, &shape(Vec::new())).is_empty());
    }

    #[test]
    fn fault_names_parse_and_a_wrong_one_says_what_is_known() {
        assert_eq!("pause".parse::<FaultKind>(), Ok(FaultKind::Pause));
        let error = "flood".parse::<FaultKind>().unwrap_err();
        assert!(error.contains("kill, pause, restart, wipe, partition, netem"), "{error}");
    }
}
