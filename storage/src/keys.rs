//! Access keys: the credentials S3 (and STOMP) clients sign or log in with, besides the node's
//! root pair.
//!
//! SigV4 needs the secret itself, so a secret cannot be stored hashed; it is stored sealed
//! (XChaCha20-Poly1305) under a key kept in its own file in the data directory (`secrets.key`,
//! mode 0600, created on first open). A copy of the database alone (a backup, a replica's disk)
//! then holds no usable secret. Secrets are returned once, on creation, and never listed or
//! logged.
//!
//! In a cluster every node keeps every key, so any node authenticates any client. Nodes
//! exchange [`KeySync`]s (keys with their secrets, over the mesh's mutual TLS) and [`merge`]
//! them: the set of keys grows, and a revocation (kept as a tombstone) wins over the key it
//! revokes whichever order they arrive in, so every node ends with the same keys.
//!
//! [`merge`]: AccessKeys::merge

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use serde::{Deserialize, Serialize};

use crate::commit::Committer;
use crate::writeset::Keyspaces;
use crate::{Record, Result, StorageError, Table, TableDef, WriteSet};

/// Most access keys a node keeps.
pub const MAX_KEYS: usize = 10_000;
/// Longest key name.
pub const MAX_NAME_LEN: usize = 64;

const KEY_FILE: &str = "secrets.key";

#[derive(Clone, Debug, Serialize, Deserialize)]
struct StoredKey {
    name: String,
    created_ms: u64,
    nonce: [u8; 24],
    sealed: Vec<u8>,
}

impl Record for StoredKey {
    const FORMAT: u8 = 1;
}

const ACCESS_KEYS: TableDef<String, StoredKey> = TableDef::new("access_keys");

/// When a key was revoked: kept so that a revocation spreads and wins over copies of the key.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Revoked {
    revoked_ms: u64,
}

impl Record for Revoked {
    const FORMAT: u8 = 1;
}

const REVOKED_KEYS: TableDef<String, Revoked> = TableDef::new("access_keys_revoked");

/// Keys and revocations as nodes exchange them. Carries secrets: send it only over the mesh.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct KeySync {
    /// (access key, name, secret, created ms)
    pub keys: Vec<(String, String, String, u64)>,
    /// (access key, revoked ms)
    pub revoked: Vec<(String, u64)>,
}

/// A newly created key: the only time its secret is shown.
#[derive(Clone, Debug, Serialize)]
pub struct NewKey {
    pub access_key: String,
    pub secret_key: String,
    pub name: String,
}

/// A key as listed (never with its secret).
#[derive(Clone, Debug, Serialize)]
pub struct KeyInfo {
    pub access_key: String,
    pub name: String,
    pub created_ms: u64,
}

/// Why a key could not be created or revoked.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeyRefusal {
    #[error("name must be 1 to {MAX_NAME_LEN} characters of A-Z a-z 0-9 . _ -")]
    InvalidName,
    #[error("a key named {0:?} exists")]
    NameTaken(String),
    #[error("a node keeps at most {MAX_KEYS} access keys")]
    TooMany,
    #[error("no access key {0:?}")]
    NotFound(String),
}

/// The node's access keys.
#[derive(Clone)]
pub struct AccessKeys {
    inner: Arc<Inner>,
}

struct Inner {
    table: Table<String, StoredKey>,
    revoked: Table<String, Revoked>,
    committer: Arc<Committer>,
    cipher: XChaCha20Poly1305,
    /// access key -> (name, secret, created); the table's contents, decrypted once.
    cache: RwLock<HashMap<String, (String, String, u64)>>,
    /// Serializes changes, so that name uniqueness and the count limit hold.
    changes: tokio::sync::Mutex<()>,
}

impl AccessKeys {
    pub(crate) fn open(keyspaces: &Keyspaces, dir: &Path, committer: Arc<Committer>) -> Result<Self> {
        let cipher = XChaCha20Poly1305::new(&load_or_create_sealing_key(dir)?.into());
        let table = Table::open(keyspaces, ACCESS_KEYS)?;
        let mut cache = HashMap::new();
        for entry in table.entries() {
            let (access, stored) = entry?;
            let secret = cipher
                .decrypt(XNonce::from_slice(&stored.nonce), stored.sealed.as_slice())
                .ok()
                .and_then(|plain| String::from_utf8(plain).ok())
                .ok_or_else(|| StorageError::Corrupt {
                    table: "access_keys",
                    detail: format!("secret of {access} does not open with {KEY_FILE}"),
                })?;
            cache.insert(access, (stored.name, secret, stored.created_ms));
        }
        let revoked = Table::open(keyspaces, REVOKED_KEYS)?;
        let inner = Inner {
            table,
            revoked,
            committer,
            cipher,
            cache: RwLock::new(cache),
            changes: Default::default(),
        };
        Ok(Self { inner: Arc::new(inner) })
    }

    /// The secret of `access_key`, if it is a live key.
    pub fn secret(&self, access_key: &str) -> Option<String> {
        self.read().get(access_key).map(|(_, secret, _)| secret.clone())
    }

    /// The name of `access_key`, if it is a live key.
    pub fn name(&self, access_key: &str) -> Option<String> {
        self.read().get(access_key).map(|(name, _, _)| name.clone())
    }

    /// Every key, by name, without secrets.
    pub fn list(&self) -> Vec<KeyInfo> {
        let mut keys: Vec<_> = self
            .read()
            .iter()
            .map(|(access, (name, _, created_ms))| KeyInfo {
                access_key: access.clone(),
                name: name.clone(),
                created_ms: *created_ms,
            })
            .collect();
        keys.sort_by(|a, b| a.name.cmp(&b.name));
        keys
    }

    /// Creates a key called `name`; resolves once it is durable.
    pub async fn create(&self, name: &str) -> Result<Result<NewKey, KeyRefusal>> {
        let valid = (1..=MAX_NAME_LEN).contains(&name.len())
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if !valid {
            return Ok(Err(KeyRefusal::InvalidName));
        }
        let _serial = self.inner.changes.lock().await;
        {
            let cache = self.read();
            if cache.values().any(|(existing, _, _)| existing == name) {
                return Ok(Err(KeyRefusal::NameTaken(name.to_string())));
            }
            if cache.len() >= MAX_KEYS {
                return Ok(Err(KeyRefusal::TooMany));
            }
        }
        let access_key = format!("SV{}", random_hex(9).to_uppercase());
        let secret_key = random_hex(20);
        let created_ms = now_ms();
        let stored = self.seal(name, &secret_key, created_ms)?;
        let mut changes = WriteSet::new();
        changes.put(&self.inner.table, &access_key, &stored)?;
        self.inner.committer.stage(&changes)?.await?;
        self.write().insert(access_key.clone(), (name.to_string(), secret_key.clone(), created_ms));
        Ok(Ok(NewKey { access_key, secret_key, name: name.to_string() }))
    }

    /// Revokes `access_key`; resolves once the revocation is durable.
    pub async fn revoke(&self, access_key: &str) -> Result<Result<(), KeyRefusal>> {
        let _serial = self.inner.changes.lock().await;
        if !self.read().contains_key(access_key) {
            return Ok(Err(KeyRefusal::NotFound(access_key.to_string())));
        }
        let mut changes = WriteSet::new();
        changes.delete(&self.inner.table, &access_key.to_string());
        changes.put(&self.inner.revoked, &access_key.to_string(), &Revoked { revoked_ms: now_ms() })?;
        self.inner.committer.stage(&changes)?.await?;
        self.write().remove(access_key);
        Ok(Ok(()))
    }

    /// Every live key (with its secret) and every revocation this node knows.
    pub fn export(&self) -> Result<KeySync> {
        let keys = self
            .read()
            .iter()
            .map(|(access, (name, secret, created))| (access.clone(), name.clone(), secret.clone(), *created))
            .collect();
        let revoked: Result<Vec<(String, u64)>> =
            self.inner.revoked.entries().map(|e| e.map(|(access, r)| (access, r.revoked_ms))).collect();
        Ok(KeySync { keys, revoked: revoked? })
    }

    /// Takes in what another node knows: keys this node lacks (unless it knows them revoked)
    /// and revocations. Answers how many changes it made; resolves once they are durable.
    pub async fn merge(&self, sync: KeySync) -> Result<usize> {
        let _serial = self.inner.changes.lock().await;
        let mut changes = WriteSet::new();
        let mut added: Vec<(String, String, String, u64)> = Vec::new();
        let mut removed = Vec::new();
        for (access, revoked_ms) in &sync.revoked {
            if self.inner.revoked.get(access)?.is_none() {
                changes.put(&self.inner.revoked, access, &Revoked { revoked_ms: *revoked_ms })?;
                changes.delete(&self.inner.table, access);
                removed.push(access.clone());
            }
        }
        let revoked: std::collections::HashSet<&String> = sync.revoked.iter().map(|(a, _)| a).collect();
        for (access, name, secret, created_ms) in sync.keys {
            let known = self.read().contains_key(&access) || added.iter().any(|(a, ..)| *a == access);
            if known || revoked.contains(&access) || self.inner.revoked.get(&access)?.is_some() {
                continue;
            }
            changes.put(&self.inner.table, &access, &self.seal(&name, &secret, created_ms)?)?;
            added.push((access, name, secret, created_ms));
        }
        let count = added.len() + removed.len();
        if count == 0 {
            return Ok(0);
        }
        self.inner.committer.stage(&changes)?.await?;
        let mut cache = self.write();
        for access in removed {
            cache.remove(&access);
        }
        for (access, name, secret, created_ms) in added {
            cache.insert(access, (name, secret, created_ms));
        }
        Ok(count)
    }

    fn seal(&self, name: &str, secret: &str, created_ms: u64) -> Result<StoredKey> {
        let nonce: [u8; 24] = rand::random();
        let sealed =
            self.inner.cipher.encrypt(XNonce::from_slice(&nonce), secret.as_bytes()).map_err(|_| {
                StorageError::Encode { table: "access_keys", detail: "sealing failed".into() }
            })?;
        Ok(StoredKey { name: name.to_string(), created_ms, nonce, sealed })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, (String, String, u64)>> {
        self.inner.cache.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, (String, String, u64)>> {
        self.inner.cache.write().unwrap_or_else(PoisonError::into_inner)
    }
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// `bytes` random bytes as lower-case hex (generated keys, tokens and secrets).
pub fn random_hex(bytes: usize) -> String {
    (0..bytes).map(|_| format!("{:02x}", rand::random::<u8>())).collect()
}

/// Reads the sealing key, or creates it (0600, synced) on first open.
fn load_or_create_sealing_key(dir: &Path) -> Result<[u8; 32]> {
    let path = dir.join(KEY_FILE);
    let io = |source: std::io::Error| StorageError::DataDir { path: path.clone(), source };
    match std::fs::read(&path) {
        Ok(bytes) => {
            return bytes.try_into().map_err(|_| StorageError::Corrupt {
                table: "access_keys",
                detail: format!("{} must hold exactly 32 bytes", path.display()),
            });
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(e)),
    }
    let key: [u8; 32] = rand::random();
    let mut file = OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path).map_err(io)?;
    file.write_all(&key).and_then(|()| file.sync_all()).map_err(io)?;
    Ok(key)
}
