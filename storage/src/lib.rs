//! Serv storage: one fjall database per node, in the node's data directory.
//!
//! Everything a node keeps lives here, behind small typed APIs: a [`Table`] maps a typed key to a
//! versioned, typed record, and a [`WriteSet`] groups changes that [`Storage::commit`] applies
//! atomically. `commit` resolves only once the changes are durable; concurrent committers share
//! one fsync (group commit, see [`commit`]). The data directory is locked for the life of the
//! [`Storage`], so a second node on the same directory is refused instead of corrupting it.

pub mod blocks;
pub mod codec;
pub mod commit;
mod error;
pub mod histogram;
pub mod key;
pub mod keys;
mod lock;
mod meta;
mod owned;
mod table;
mod writeset;

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use commit::{CommitPath, CommitStats, DurabilityMode, Staged};
pub use error::StorageError;
pub use key::{KeyPart, KeyPrefix, TableKey};
pub use lock::DataDirLock;
pub use owned::{OwnedRow, View};
pub use table::{Record, Table, TableDef};
pub use writeset::WriteSet;

/// Result of a storage operation.
pub type Result<T, E = StorageError> = std::result::Result<T, E>;

/// Most directory entries [`Storage::disk_bytes`] looks at, so that a scrape stays cheap.
pub const MAX_DISK_WALK_ENTRIES: usize = 100_000;

/// Bytes of disk allocated to a file.
fn allocated_bytes(metadata: &std::fs::Metadata) -> u64 {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        metadata.blocks() * 512 // st_blocks counts 512-byte units whatever the file system's block
    }
    #[cfg(not(unix))]
    {
        metadata.len()
    }
}

/// Options for opening a node's storage.
#[derive(Clone, Debug)]
pub struct StorageOptions {
    /// How commits reach the disk: shared fsyncs (the default) or one fsync per commit.
    pub durability: DurabilityMode,
    /// Block cache size of the database, in bytes.
    pub cache_bytes: u64,
}

impl Default for StorageOptions {
    fn default() -> Self {
        Self { durability: DurabilityMode::Group, cache_bytes: 64 * 1024 * 1024 }
    }
}

/// A node's open database: typed tables, group commit and the node's identity.
///
/// A handle may be bound to another [`CommitPath`] ([`Storage::with_commit_path`]): an entity's
/// handle commits through its partition's replicated log, while node-local data (block bodies,
/// the node's own records) commits straight through this node's group commit.
#[derive(Clone)]
pub struct Storage {
    inner: Arc<Inner>,
    path: Option<Arc<dyn CommitPath>>,
}

struct Inner {
    keyspaces: Arc<writeset::Keyspaces>,
    committer: Arc<commit::Committer>,
    blocks: blocks::BlockStore,
    keys: keys::AccessKeys,
    dir: PathBuf,
    node_id: String,
    // Held for the life of the storage; dropped last so the directory stays ours until closed.
    _lock: DataDirLock,
}

impl Storage {
    /// Opens (creating if needed) the database in `dir`, locking the directory first.
    pub fn open(dir: impl AsRef<Path>, options: StorageOptions) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir)
            .map_err(|source| StorageError::DataDir { path: dir.clone(), source })?;
        let lock = DataDirLock::acquire(&dir)?;
        let db_path = dir.join("db");
        let db = fjall::Database::builder(&db_path)
            .cache_size(options.cache_bytes)
            .manual_journal_persist(true)
            .open()
            .map_err(|source| StorageError::Open { path: db_path, source })?;
        let keyspaces = Arc::new(writeset::Keyspaces::new(db));
        let node_id = meta::load_or_create_node_id(&keyspaces)?;
        let committer = Arc::new(commit::Committer::start(keyspaces.clone(), options.durability)?);
        let blocks = blocks::BlockStore::open(&keyspaces, committer.clone())?;
        let keys = keys::AccessKeys::open(&keyspaces, &dir, committer.clone())?;
        let inner = Inner { keyspaces, committer, blocks, keys, dir, node_id, _lock: lock };
        Ok(Self { inner: Arc::new(inner), path: None })
    }

    /// This storage, committing through `path` instead of the node's own group commit.
    pub fn with_commit_path(&self, path: Arc<dyn CommitPath>) -> Storage {
        Storage { inner: self.inner.clone(), path: Some(path) }
    }

    /// This storage, committing through the node's own group commit (node-local data).
    pub fn local(&self) -> Storage {
        Storage { inner: self.inner.clone(), path: None }
    }

    /// The node's stable id, created on first start and kept in the data directory.
    pub fn node_id(&self) -> &str {
        &self.inner.node_id
    }

    /// The data directory this storage lives in.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Opens the table `def`, creating its keyspace on first use.
    pub fn table<K: TableKey, V: Record>(&self, def: TableDef<K, V>) -> Result<Table<K, V>> {
        Table::open(&self.inner.keyspaces, def)
    }

    /// The content-addressed block store (object bodies).
    pub fn blocks(&self) -> &blocks::BlockStore {
        &self.inner.blocks
    }

    /// The access keys clients authenticate with.
    pub fn access_keys(&self) -> &keys::AccessKeys {
        &self.inner.keys
    }

    /// A new, empty set of changes to commit atomically.
    pub fn write_set(&self) -> WriteSet {
        WriteSet::new()
    }

    /// Applies `changes` atomically and resolves once they are durable.
    pub async fn commit(&self, changes: WriteSet) -> Result<()> {
        self.stage(changes)?.await
    }

    /// Hands `changes` to the commit path now, ordered after every commit handed before, and
    /// returns what resolves once they are durable. The caller need not wait before staging more:
    /// an entity can pipeline its writes, applied in the order it staged them.
    ///
    /// Until the commit thread applies them (at most one fsync later), staged changes are not yet
    /// visible to reads; a caller that must read them back keeps its own view meanwhile, or waits
    /// on a later [`Storage::commit`], which resolves only after everything staged before it.
    pub fn stage(&self, changes: WriteSet) -> Result<Staged> {
        match &self.path {
            Some(path) => path.stage(changes),
            None => self.inner.committer.stage(&changes),
        }
    }

    /// Like [`Storage::stage`] on the node's own group commit, but `then` is called with the
    /// outcome by the commit thread itself once the changes are durable (no task wakes up in
    /// between): for a replicated log's appends. `then` must be quick and must not block.
    pub fn stage_then(&self, changes: &WriteSet, then: Box<dyn FnOnce(Result<()>) + Send>) -> Result<()> {
        self.inner.committer.stage_then(changes, then)
    }

    /// Applies `changes` in order after every commit handed before, resolving once they are
    /// readable, without an fsync of its own: only for a replicated state machine, whose durable
    /// log replays whatever a crash loses of it (the next fsync of the node's journal makes it
    /// durable too).
    pub fn apply_unsynced(&self, changes: &WriteSet) -> Result<Staged> {
        self.inner.committer.apply_unsynced(changes)
    }

    /// A consistent view of the whole database at this instant (keep it short-lived: it holds
    /// back the removal of what was overwritten since).
    pub fn view(&self) -> View<'_> {
        View::new(&self.inner.keyspaces)
    }

    /// The changes that replace every row `owner` holds (see [`WriteSet::owned_by`]) with `rows`.
    pub fn replace_owned(&self, owner: u64, rows: Vec<OwnedRow>) -> Result<WriteSet> {
        owned::replace_owned(&self.inner.keyspaces, owner, rows)
    }

    /// The keys of `table` that `owner` holds (see [`WriteSet::owned_by`]).
    pub fn owned_keys<K: TableKey, V: Record>(&self, owner: u64, table: &Table<K, V>) -> Result<Vec<K>> {
        owned::owned_keys(&self.inner.keyspaces, owner, table)
    }

    /// Counters of the commit path: commits, fsyncs, group sizes and fsync latency.
    pub fn commit_stats(&self) -> CommitStats {
        self.inner.committer.stats()
    }

    /// Bytes the data directory takes on disk: the blocks allocated to its files, so the
    /// journal's preallocated, still sparse, tail does not count (fjall's own `disk_space` counts
    /// it whole). Walks the directory: call it off the async workers. Past
    /// [`MAX_DISK_WALK_ENTRIES`] entries it stops and returns what it has counted.
    pub fn disk_bytes(&self) -> u64 {
        let mut total = 0;
        let mut entries = 0;
        let mut dirs = vec![self.inner.dir.clone()];
        while let Some(dir) = dirs.pop() {
            // Compaction removes files as we go: what cannot be read is skipped.
            let Ok(listing) = std::fs::read_dir(&dir) else { continue };
            for entry in listing.flatten() {
                entries += 1;
                if entries > MAX_DISK_WALK_ENTRIES {
                    return total;
                }
                let Ok(metadata) = entry.metadata() else { continue };
                if metadata.is_dir() {
                    dirs.push(entry.path());
                }
                total += allocated_bytes(&metadata);
            }
        }
        total
    }

    /// Why the storage refuses commits (a failed fsync poisons it), or `None` while healthy.
    pub fn failure(&self) -> Option<String> {
        self.inner.committer.failure()
    }

    /// Makes everything written so far durable and stops the commit thread.
    pub fn close(&self) -> Result<()> {
        self.inner.committer.shutdown()
    }
}
