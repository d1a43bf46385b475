//! Test-only data loss, to prove that the chaos harness catches lost writes. Built only with the
//! `fault-injection` feature (`cargo build --features fault-injection`); without it `lose` is a
//! constant `false` and nothing here exists in the binary. With the feature and
//! `SERV_FAULT_LOSE_EVERY=N`, every Nth S3 PUT and every Nth STOMP message is acknowledged but
//! not stored.

/// Which stream of writes a loss is counted in.
pub enum Loss {
    S3Put,
    Message,
}

/// Whether to drop this write while acknowledging it.
#[cfg(feature = "fault-injection")]
pub fn lose(loss: Loss) -> bool {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};
    static EVERY: OnceLock<u64> = OnceLock::new();
    static COUNTS: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];
    let every = *EVERY.get_or_init(|| {
        let every = std::env::var("SERV_FAULT_LOSE_EVERY").ok().and_then(|n| n.parse().ok()).unwrap_or(0);
        if every > 0 {
            tracing::warn!(
                every,
                "fault injection: every {every}th S3 PUT and message is acknowledged and LOST"
            );
        }
        every
    });
    every > 0 && COUNTS[loss as usize].fetch_add(1, Ordering::Relaxed) % every == every - 1
}

/// Whether to drop this write while acknowledging it: never, in this build.
#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub fn lose(_loss: Loss) -> bool {
    false
}
