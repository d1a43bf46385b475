//! Eviction: stopping live entities that this node must no longer serve (the node lost its
//! partition's leadership, or an operator passivated one), after they have handled what they
//! were already sent.

use crate::{ActorKey, Directory, DirectoryError};

impl Directory {
    /// Stops `key`'s live incarnation once it has handled every message it holds (it is not
    /// started again here while the placement sends its messages elsewhere). `Timeout` if it
    /// is still draining after the call timeout.
    pub async fn evict(&self, key: &ActorKey) -> Result<(), DirectoryError> {
        let deadline = tokio::time::Instant::now() + self.hub().config.call_timeout;
        let Some(live) = self.close_gate(key) else { return Ok(()) };
        // Drained, it handles what its mailbox holds, refuses anything later, then stops.
        let _ = live.cell.drain();
        while self.hub().live_incarnation(key).is_some_and(|l| l.cell.get_id() == live.cell.get_id()) {
            if tokio::time::Instant::now() >= deadline {
                let timeout_ms = self.hub().config.call_timeout.as_millis() as u64;
                return Err(DirectoryError::Timeout { key: key.to_string(), timeout_ms });
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        Ok(())
    }

    /// Evicts every live entity whose key `leaving` picks, all at once; answers how many.
    pub async fn evict_where(&self, leaving: impl Fn(&ActorKey) -> bool) -> usize {
        let keys = self.hub().live_keys(leaving);
        let count = keys.len();
        let evictions = keys.iter().map(|key| async move {
            if let Err(error) = self.evict(key).await {
                tracing::warn!(%key, %error, "an entity this node no longer serves did not stop in time");
            }
        });
        futures_util::future::join_all(evictions).await;
        count
    }
}
