//! The node's memory budget: a node that nears `--max-memory-bytes` refuses new work with each
//! protocol's back-off answer instead of growing (S3 `503 SlowDown` for writes, a STOMP ERROR for
//! SEND and SUBSCRIBE, gateway `503 Overloaded`). Work that frees memory or costs little still
//! goes through: S3 reads, listings and deletes, STOMP ACK/NACK/UNSUBSCRIBE, and the admin API.
//!
//! A sampler reads the process's resident memory every [`SAMPLE_EVERY`]; the node refuses from
//! [`REFUSE_FROM`] of the budget until it is back under [`RESUME_UNDER`] (the gap keeps it from
//! flapping at the edge). Without a sampler (a test that starts no node), nothing is refused.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// How often the resident memory is read.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(250);
/// The share of the budget (in percent) from which new work is refused.
pub const REFUSE_FROM: u64 = 90;
/// The share below which it is taken again.
pub const RESUME_UNDER: u64 = 80;

/// The edges that refuse work, for the counters.
#[derive(Clone, Copy, Debug)]
pub enum Edge {
    S3 = 0,
    Stomp = 1,
    Gateway = 2,
}

/// Edge names, in [`Edge`] order, as `/metrics` labels them.
pub const EDGES: [&str; 3] = ["s3", "stomp", "gateway"];

struct Budget {
    limit: u64,
    refusing: AtomicBool,
    refused: [AtomicU64; 3],
}

static BUDGET: OnceLock<Budget> = OnceLock::new();

/// Starts watching the process's memory against `limit_bytes` (once per process).
pub fn watch(limit_bytes: u64) {
    let budget = Budget { limit: limit_bytes, refusing: AtomicBool::new(false), refused: Default::default() };
    if BUDGET.set(budget).is_err() {
        return;
    }
    tokio::spawn(async {
        let mut ticker = tokio::time::interval(SAMPLE_EVERY);
        loop {
            ticker.tick().await;
            if let (Some(budget), Some(resident)) = (BUDGET.get(), resident_bytes()) {
                budget.judge(resident);
            }
        }
    });
}

impl Budget {
    /// Refuses from [`REFUSE_FROM`] % of the limit, takes work again under [`RESUME_UNDER`] %.
    fn judge(&self, resident: u64) {
        let percent = resident.saturating_mul(100) / self.limit.max(1);
        let was = self.refusing.load(Ordering::Relaxed);
        let now = if was { percent >= RESUME_UNDER } else { percent >= REFUSE_FROM };
        if now != was {
            self.refusing.store(now, Ordering::Relaxed);
            match now {
                true => {
                    tracing::warn!(resident, limit = self.limit, "near the memory budget: refusing new work")
                }
                false => tracing::info!(
                    resident,
                    limit = self.limit,
                    "back under the memory budget: taking new work"
                ),
            }
        }
    }
}

/// True while the node refuses new work; counts the refusal for `edge` when it does.
pub fn refuses(edge: Edge) -> bool {
    let Some(budget) = BUDGET.get() else { return false };
    let refusing = budget.refusing.load(Ordering::Relaxed);
    if refusing {
        budget.refused[edge as usize].fetch_add(1, Ordering::Relaxed);
    }
    refusing
}

/// What `/metrics` shows: the budget (0 unwatched), whether work is refused, and the refusals by
/// edge.
pub fn state() -> (u64, bool, [u64; 3]) {
    match BUDGET.get() {
        None => (0, false, [0; 3]),
        Some(budget) => (
            budget.limit,
            budget.refusing.load(Ordering::Relaxed),
            std::array::from_fn(|i| budget.refused[i].load(Ordering::Relaxed)),
        ),
    }
}

/// The words every edge's refusal carries.
pub fn refusal(limit_flag: &str) -> String {
    let (limit, _, _) = state();
    format!(
        "the node is near its memory budget ({limit} bytes, {limit_flag}) and refuses new work for now; retry shortly"
    )
}

/// The process's resident memory, from `/proc/self/status`.
pub fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The default budget: three quarters of the memory this process may use, the machine's or its
/// cgroup's limit, whichever is smaller.
pub fn default_limit() -> u64 {
    let machine = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|info| {
            let line = info.lines().find(|l| l.starts_with("MemTotal:"))?.to_string();
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .map_or(u64::MAX, |kib| kib * 1024);
    let cgroup = std::fs::read_to_string("/sys/fs/cgroup/memory.max")
        .ok()
        .and_then(|max| max.trim().parse::<u64>().ok())
        .unwrap_or(u64::MAX);
    match machine.min(cgroup) {
        u64::MAX => 4 * 1024 * 1024 * 1024,
        bytes => bytes / 4 * 3,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_from_ninety_percent_until_back_under_eighty() {
        let budget = Budget { limit: 1000, refusing: AtomicBool::new(false), refused: Default::default() };
        let steps = [(850, false), (900, true), (850, true), (799, false), (850, false), (1200, true)];
        for (resident, refusing) in steps {
            budget.judge(resident);
            assert_eq!(budget.refusing.load(Ordering::Relaxed), refusing, "at {resident}");
        }
    }

    #[test]
    fn the_default_is_under_the_machines_memory() {
        let limit = default_limit();
        assert!(limit > 64 * 1024 * 1024, "{limit}");
        assert!(resident_bytes().is_some_and(|rss| rss < limit));
    }
}
