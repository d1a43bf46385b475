//! The recent entries of a partition's log, kept in memory from append until applied.
//!
//! An entry openraft appends is needed twice soon after: by the state machine once committed,
//! and by the replication to other replicas. Both read it from here instead of decoding it back
//! from the table; entries whose write sets share their value bytes (`bytes::Bytes`) cost little
//! to hold. An entry is also here while its append is not yet durable, and for those this is not
//! an optimisation: the table does not hold them yet, and a reader must not miss them.
//!
//! Bounded: once more than [`MAX_RECENT_ENTRIES`] are held, the oldest durable ones go (they are
//! in the table); entries not yet durable always stay, and they are bounded by what openraft has
//! in flight.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use openraft::{Entry, LogId, RaftLogId};

use super::TypeConfig;

/// Most durable entries a partition keeps in memory for the state machine and replication.
pub const MAX_RECENT_ENTRIES: usize = 1024;

struct Held {
    entry: Entry<TypeConfig>,
    durable: bool,
}

/// A partition's recent entries by index.
#[derive(Default)]
pub(crate) struct Recent {
    entries: Mutex<BTreeMap<u64, Held>>,
}

impl Recent {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<u64, Held>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Holds entries that are on their way to the table.
    pub(crate) fn appended(&self, entries: impl IntoIterator<Item = Entry<TypeConfig>>) {
        let mut held = self.lock();
        for entry in entries {
            held.insert(entry.get_log_id().index, Held { entry, durable: false });
        }
    }

    /// The entries `ids` are durable in the table now (an entry replaced meanwhile, truncated
    /// and appended again, is another one and stays as it is).
    pub(crate) fn durable(&self, ids: &[LogId<u64>]) {
        let mut held = self.lock();
        for id in ids {
            if let Some(slot) = held.get_mut(&id.index)
                && slot.entry.get_log_id() == id
            {
                slot.durable = true;
            }
        }
        let excess = held.len().saturating_sub(MAX_RECENT_ENTRIES);
        if excess > 0 {
            let oldest: Vec<u64> =
                held.iter().filter(|(_, slot)| slot.durable).map(|(index, _)| *index).take(excess).collect();
            for index in oldest {
                held.remove(&index);
            }
        }
    }

    /// The state machine has applied everything up to `index`: those entries are not needed here.
    pub(crate) fn applied(&self, index: u64) {
        let mut held = self.lock();
        while let Some(entry) = held.first_entry() {
            if *entry.key() > index || !entry.get().durable {
                break;
            }
            entry.remove();
        }
    }

    /// Forgets the entries with index in `[from, to)`, and answers their indexes.
    pub(crate) fn remove(&self, from: u64, to: u64) -> Vec<u64> {
        let mut held = self.lock();
        let doomed: Vec<u64> = held.range(from..to).map(|(index, _)| *index).collect();
        for index in &doomed {
            held.remove(index);
        }
        doomed
    }

    /// The held entries with index in `[start, end)`, and whether they are all of that range.
    pub(crate) fn range(&self, start: u64, end: u64) -> (Vec<(u64, Entry<TypeConfig>)>, bool) {
        let held = self.lock();
        let found: Vec<(u64, Entry<TypeConfig>)> =
            held.range(start..end).map(|(index, slot)| (*index, slot.entry.clone())).collect();
        let complete = end != u64::MAX
            && found.len() as u64 == end - start
            && found.first().is_none_or(|(first, _)| *first == start);
        (found, complete)
    }

    /// The id of the last held entry.
    pub(crate) fn last(&self) -> Option<LogId<u64>> {
        self.lock().last_key_value().map(|(_, slot)| *slot.entry.get_log_id())
    }
}
