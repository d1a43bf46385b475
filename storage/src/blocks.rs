//! Content-addressed blocks: object bodies cut into blocks, each stored once under its BLAKE3
//! hash and kept while something references it.
//!
//! A block is referenced by rows of [`BLOCK_REFS`], one per `(hash, owner)`, where the owner names
//! whatever uses the block (an object version, an upload's part). The owner's entity writes and
//! deletes its rows in the same [`crate::WriteSet`] as the record that uses the block, so the
//! references change atomically with the data; rows rather than counters mean no
//! read-modify-write is ever shared between entities.
//!
//! A block that is being written or read has no row yet, or may lose its last one meanwhile: it is
//! **pinned** in memory instead ([`Pins`]). The garbage collector removes a block only when it is
//! neither pinned nor referenced, and checks both while holding the pin lock, so a writer that
//! pins a block (and then finds it present) can never have it collected under it. Candidates for
//! collection are the blocks whose last pin went away and those whose references an owner
//! released; a full sweep at start-up finds the orphans a crash left behind.
//!
//! Durability: [`BlockStore::put`] resolves once the block is written to the journal, without an
//! fsync of its own: a block matters only once a commit references it, that commit comes later
//! in the same journal, and the fsync that makes the commit durable makes the block durable too
//! (a block written and never referenced, say by a crash in between, is swept at start-up). So
//! an object costs one fsync, its metadata's, shared with every other commit of its group.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::commit::Committer;
use crate::key::{KeyPart, KeyPrefix};
use crate::writeset::Keyspaces;
use crate::{Record, Result, StorageError, Table, TableDef};

/// The BLAKE3 hash that names a block.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct BlockHash(pub [u8; 32]);

impl BlockHash {
    /// The hash of `data`.
    pub fn of(data: &[u8]) -> Self {
        Self(*blake3::hash(data).as_bytes())
    }
}

impl fmt::Display for BlockHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for BlockHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BlockHash({self})")
    }
}

impl KeyPart for BlockHash {
    fn encode_part(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.0);
    }

    fn decode_part(bytes: &mut &[u8]) -> Option<Self> {
        let (head, rest) = bytes.split_first_chunk::<32>()?;
        *bytes = rest;
        Some(Self(*head))
    }
}

/// A reference row: `owner` uses the block. The row itself is the reference.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct BlockRef;

impl Record for BlockRef {
    const FORMAT: u8 = 1;
}

/// References to blocks, keyed by `(hash, owner)`; written by the owners' entities.
pub const BLOCK_REFS: TableDef<(BlockHash, String), BlockRef> = TableDef::new("block_refs");

const BLOCKS_KEYSPACE: &str = "blocks";

/// Counts of stored blocks, as exported in `/metrics`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlockStats {
    /// Distinct blocks stored.
    pub blocks: u64,
    /// Bytes of all stored blocks.
    pub bytes: u64,
    /// Blocks removed by the garbage collector since start.
    pub collected: u64,
}

/// What one garbage collection pass removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Blocks checked.
    pub checked: u64,
    /// Blocks removed.
    pub removed: u64,
    /// Bytes freed.
    pub bytes: u64,
}

/// The node's block store.
#[derive(Clone)]
pub struct BlockStore {
    inner: Arc<Inner>,
}

struct Inner {
    blocks: fjall::Keyspace,
    refs: Table<(BlockHash, String), BlockRef>,
    committer: Arc<Committer>,
    pins: Mutex<PinState>,
    blocks_stored: AtomicU64,
    bytes_stored: AtomicU64,
    collected: AtomicU64,
}

#[derive(Default)]
struct PinState {
    counts: HashMap<BlockHash, usize>,
    /// Blocks that may have become garbage (their last reference gone).
    candidates: HashSet<BlockHash>,
    /// Blocks whose last pin went, and when: collected only once [`PinState::grace`] has
    /// passed, so that a replica still applying the manifest that names a block it was sent
    /// keeps it (the edge's session, which pinned it, may end first).
    unpinned: HashMap<BlockHash, std::time::Instant>,
    /// How long an unpinned, unreferenced block is kept (zero unless set).
    grace: std::time::Duration,
    /// New blocks being written, so that concurrent writers of one block count it once.
    writing: HashSet<BlockHash>,
}

impl BlockStore {
    pub(crate) fn open(keyspaces: &Keyspaces, committer: Arc<Committer>) -> Result<Self> {
        let blocks = keyspaces
            .db
            .keyspace(BLOCKS_KEYSPACE, || {
                fjall::KeyspaceCreateOptions::default()
                    .with_kv_separation(Some(fjall::KvSeparationOptions::default()))
            })
            .map_err(|source| StorageError::Io { table: BLOCKS_KEYSPACE, source })?;
        keyspaces.register(BLOCKS_KEYSPACE, &blocks);
        let refs = Table::open(keyspaces, BLOCK_REFS)?;
        let (mut count, mut bytes) = (0, 0);
        for guard in blocks.iter() {
            let size = guard.size().map_err(|source| StorageError::Io { table: BLOCKS_KEYSPACE, source })?;
            count += 1;
            bytes += u64::from(size);
        }
        Ok(Self {
            inner: Arc::new(Inner {
                blocks,
                refs,
                committer,
                pins: Mutex::new(PinState::default()),
                blocks_stored: AtomicU64::new(count),
                bytes_stored: AtomicU64::new(bytes),
                collected: AtomicU64::new(0),
            }),
        })
    }

    /// The reference rows, for owners that write them in their own write sets.
    /// Those of `hashes` this store does not hold.
    pub fn missing(&self, hashes: impl IntoIterator<Item = BlockHash>) -> Result<Vec<BlockHash>> {
        let mut missing = Vec::new();
        for hash in hashes {
            let held = self
                .inner
                .blocks
                .contains_key(hash.0)
                .map_err(|source| StorageError::Io { table: BLOCKS_KEYSPACE, source })?;
            if !held {
                missing.push(hash);
            }
        }
        Ok(missing)
    }

    pub fn refs(&self) -> &Table<(BlockHash, String), BlockRef> {
        &self.inner.refs
    }

    /// Stores `data` (unless a block with its hash exists) and resolves once it is written (it is
    /// durable with the next commit, see the module docs); the block stays pinned until the
    /// returned [`Pins`] is dropped.
    pub async fn put(&self, data: Bytes) -> Result<(BlockHash, Pins)> {
        let hash = BlockHash::of(&data);
        let len = data.len() as u64;
        let (present, counts) = {
            let mut pins = self.inner.lock_pins();
            *pins.counts.entry(hash).or_default() += 1;
            let present = self.contains(&hash);
            // Of concurrent writers of one new block, all write it (a writer must not trust a
            // write that may yet fail) but only the first counts it.
            let counts = matches!(present, Ok(false)) && pins.writing.insert(hash);
            (present, counts)
        };
        let pinned = Pins { store: self.inner.clone(), hashes: vec![hash] };
        if !present? {
            // A block body goes to the journal as it is, never copied into a write set.
            let mut batch = self.inner.committer.batch();
            batch.insert(&self.inner.blocks, hash.0.as_slice(), data.as_ref());
            let outcome = match self.inner.committer.write_unsynced(batch) {
                Ok(staged) => staged.await,
                Err(error) => Err(error),
            };
            if counts {
                self.inner.lock_pins().writing.remove(&hash);
                if outcome.is_ok() {
                    self.inner.blocks_stored.fetch_add(1, Ordering::Relaxed);
                    self.inner.bytes_stored.fetch_add(len, Ordering::Relaxed);
                }
            }
            outcome?;
        }
        Ok((hash, pinned))
    }

    /// Pins blocks that must already exist (to read them, or to reference them again). Fails with
    /// the first missing hash, holding no pins.
    pub fn pin_existing(&self, hashes: &[BlockHash]) -> Result<Result<Pins, BlockHash>> {
        let mut pins = self.inner.lock_pins();
        for hash in hashes {
            if !self.contains(hash)? {
                return Ok(Err(*hash));
            }
        }
        for hash in hashes {
            *pins.counts.entry(*hash).or_default() += 1;
        }
        Ok(Ok(Pins { store: self.inner.clone(), hashes: hashes.to_vec() }))
    }

    /// The bytes of a block, if stored.
    pub fn get(&self, hash: &BlockHash) -> Result<Option<Bytes>> {
        let value = self
            .inner
            .blocks
            .get(hash.0)
            .map_err(|source| StorageError::Io { table: BLOCKS_KEYSPACE, source })?;
        Ok(value.map(|slice| Bytes::copy_from_slice(&slice)))
    }

    /// Marks blocks whose references an owner has just deleted (after its commit) as candidates
    /// for collection.
    pub fn released(&self, hashes: impl IntoIterator<Item = BlockHash>) {
        self.inner.lock_pins().candidates.extend(hashes);
    }

    /// Removes the candidate blocks that are neither pinned nor referenced.
    pub fn collect_garbage(&self) -> Result<GcReport> {
        let candidates = {
            let mut pins = self.inner.lock_pins();
            let grace = pins.grace;
            let mut due = std::mem::take(&mut pins.candidates);
            pins.unpinned.retain(|hash, since| match since.elapsed() >= grace {
                true => {
                    due.insert(*hash);
                    false
                }
                false => true,
            });
            due
        };
        self.collect(candidates.into_iter())
    }

    /// Keeps a block that lost its last pin without gaining a reference for `grace` before
    /// collecting it (a node whose blocks other nodes write sets this).
    pub fn set_unpinned_grace(&self, grace: std::time::Duration) {
        self.inner.lock_pins().grace = grace;
    }

    /// Checks every stored block (at start-up: a crash may have left unreferenced blocks behind).
    pub fn sweep(&self) -> Result<GcReport> {
        let mut hashes = Vec::new();
        for guard in self.inner.blocks.iter() {
            let key = guard.key().map_err(|source| StorageError::Io { table: BLOCKS_KEYSPACE, source })?;
            let mut bytes: &[u8] = &key;
            if let Some(hash) = BlockHash::decode_part(&mut bytes) {
                hashes.push(hash);
            }
        }
        self.collect(hashes.into_iter())
    }

    /// Current counts.
    pub fn stats(&self) -> BlockStats {
        BlockStats {
            blocks: self.inner.blocks_stored.load(Ordering::Relaxed),
            bytes: self.inner.bytes_stored.load(Ordering::Relaxed),
            collected: self.inner.collected.load(Ordering::Relaxed),
        }
    }

    fn collect(&self, hashes: impl Iterator<Item = BlockHash>) -> Result<GcReport> {
        let mut report = GcReport::default();
        for hash in hashes {
            report.checked += 1;
            // Pin check, reference check and removal under one lock: see the module docs.
            let pins = self.inner.lock_pins();
            if pins.counts.contains_key(&hash) || self.referenced(&hash)? {
                continue;
            }
            let size = self
                .inner
                .blocks
                .size_of(hash.0)
                .map_err(|source| StorageError::Io { table: BLOCKS_KEYSPACE, source })?;
            let Some(size) = size else { continue };
            self.inner
                .blocks
                .remove(hash.0.to_vec())
                .map_err(|source| StorageError::Io { table: BLOCKS_KEYSPACE, source })?;
            drop(pins);
            report.removed += 1;
            report.bytes += u64::from(size);
        }
        self.inner.blocks_stored.fetch_sub(report.removed, Ordering::Relaxed);
        self.inner.bytes_stored.fetch_sub(report.bytes, Ordering::Relaxed);
        self.inner.collected.fetch_add(report.removed, Ordering::Relaxed);
        Ok(report)
    }

    fn contains(&self, hash: &BlockHash) -> Result<bool> {
        self.inner
            .blocks
            .contains_key(hash.0)
            .map_err(|source| StorageError::Io { table: BLOCKS_KEYSPACE, source })
    }

    fn referenced(&self, hash: &BlockHash) -> Result<bool> {
        let prefix = KeyPrefix::new().part(hash);
        self.inner.refs.scan(&prefix, None).next().transpose().map(|first| first.is_some())
    }
}

impl Inner {
    fn lock_pins(&self) -> std::sync::MutexGuard<'_, PinState> {
        self.pins.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Blocks held in memory against collection; unpinned on drop.
pub struct Pins {
    store: Arc<Inner>,
    hashes: Vec<BlockHash>,
}

impl Pins {
    /// An empty set of pins on `store`.
    pub fn none(store: &BlockStore) -> Self {
        Self { store: store.inner.clone(), hashes: Vec::new() }
    }

    /// Moves `other`'s pins into this set.
    pub fn absorb(&mut self, mut other: Pins) {
        self.hashes.append(&mut other.hashes);
    }
}

impl Drop for Pins {
    fn drop(&mut self) {
        if self.hashes.is_empty() {
            return;
        }
        let mut pins = self.store.lock_pins();
        for hash in self.hashes.drain(..) {
            if let Some(count) = pins.counts.get_mut(&hash) {
                *count -= 1;
                if *count == 0 {
                    pins.counts.remove(&hash);
                    pins.unpinned.insert(hash, std::time::Instant::now());
                }
            }
        }
    }
}
