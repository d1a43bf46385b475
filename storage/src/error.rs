//! The errors of the storage layer, each carrying what a person needs to act on it.

use std::path::PathBuf;

/// Why a storage operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The data directory cannot be created or used.
    #[error("data dir {path}: {source}")]
    DataDir { path: PathBuf, source: std::io::Error },
    /// Another process holds the data directory.
    #[error("data dir {path} is in use by another servd ({holder}); stop it or choose another --data-dir")]
    Locked { path: PathBuf, holder: String },
    /// The database could not be opened.
    #[error("cannot open database at {path}: {source}")]
    Open { path: PathBuf, source: fjall::Error },
    /// A read or write of the database failed.
    #[error("storage I/O failed on {table}: {source}")]
    Io { table: &'static str, source: fjall::Error },
    /// A durable commit failed; nothing of it may be acknowledged.
    #[error("commit failed, not durable: {0}")]
    Commit(String),
    /// The write went to a partition this node no longer leads; nothing of it was committed
    /// here (the leader, when known, takes writes).
    #[error("not the leader of partition {partition} (leader: {})", leader.as_deref().unwrap_or("unknown"))]
    NotLeader { partition: u64, leader: Option<String> },
    /// A read would hold more than its limit in memory.
    #[error("{what} are over the {limit}-byte limit")]
    TooLarge { what: String, limit: usize },
    /// The storage is closed and takes no more commits.
    #[error("storage is closed")]
    Closed,
    /// A stored record could not be decoded.
    #[error("corrupt record in {table}: {detail}")]
    Corrupt { table: &'static str, detail: String },
    /// A record was written by a format this build does not know.
    #[error("record in {table} has format version {found}, this build reads {expected}")]
    UnknownFormat { table: &'static str, found: u8, expected: u8 },
    /// A value could not be encoded.
    #[error("cannot encode value for {table}: {detail}")]
    Encode { table: &'static str, detail: String },
}
