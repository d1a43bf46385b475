//! What every workload task is given: its name in the history, its own random stream, the shared
//! history, the flag that stops it and its pace.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::history::History;
use crate::rng::Rng;

/// One workload task's context.
pub struct Worker {
    pub name: String,
    pub rng: Rng,
    pub history: Arc<History>,
    pub stop: Arc<AtomicBool>,
    /// A pause after each op (zero: none).
    pub pace: Duration,
}

impl Worker {
    /// False once the run told its workers to stop.
    pub fn running(&self) -> bool {
        !self.stop.load(Ordering::Relaxed)
    }

    /// Waits out the pace between two ops.
    pub async fn rest(&self) {
        if !self.pace.is_zero() {
            tokio::time::sleep(self.pace).await;
        }
    }

    /// A random index below `n`.
    pub fn pick(&mut self, n: usize) -> usize {
        self.rng.below(n as u64) as usize
    }
}
