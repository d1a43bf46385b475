//! The credentials every node of a cluster shares: the admin API's token and the root access key
//! pair of the S3 and STOMP edges.
//!
//! A cluster has one of each. The founding node (started without `--seeds`) generates them on
//! its first start and prints them once; a node that joins adopts them from the nodes it reaches
//! and prints nothing. Each node keeps them in `DATA_DIR/cluster-credentials` (mode 0600, with a
//! copy of each value in `admin-token` and `root-credentials` for scripts) and pulls the others'
//! copies ([`crate::owned::keep_merged`]), so a rotation made on any node reaches every node, also
//! one that was down when it was made.
//!
//! `SERV_ADMIN_TOKEN`, or `SERV_ACCESS_KEY` with `SERV_SECRET_KEY`, **pin** a value on a node:
//! the node uses it, never adopts another and refuses to rotate it; the nodes that pin nothing
//! adopt it (give the variables to every node, or to none).
//!
//! Of two copies of a value, the one of the older founding wins (a node founded on its own by
//! mistake and then joined to a cluster adopts the cluster's), then the later generation (each
//! rotation makes one), then the later change, then the greater value: every node settles on
//! the same copy whatever order the copies reach it in.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use serde::{Deserialize, Serialize};
use serv_storage::keys::random_hex;

/// The file that holds this node's copy of the shared credentials.
const FILE: &str = "cluster-credentials";
/// Copies of the values alone, for scripts (`cat DATA_DIR/admin-token`).
const TOKEN_COPY: &str = "admin-token";
const ROOT_COPY: &str = "root-credentials";

/// One shared value with what orders its copies.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Versioned<T> {
    /// When the cluster that made the value was founded (Unix ms); 0 for a value pinned by the
    /// environment, which wins over every generated one.
    founded_ms: u64,
    /// 1 when generated, one more at each rotation.
    generation: u64,
    /// When it was set (Unix ms).
    changed_ms: u64,
    value: T,
}

impl<T: Ord> Versioned<T> {
    fn beats(&self, other: &Self) -> bool {
        let rank = |v: &Self| (std::cmp::Reverse(v.founded_ms), v.generation, v.changed_ms);
        (rank(self), &self.value) > (rank(other), &other.value)
    }
}

/// The root access key and its secret: they may do anything on the S3 and STOMP edges.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RootPair {
    pub access_key: String,
    pub secret_key: String,
}

/// This node's copy of the shared credentials, as stored and as exchanged between nodes: what
/// it has not adopted yet is `None`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shared {
    admin_token: Option<Versioned<String>>,
    root: Option<Versioned<RootPair>>,
}

/// Which values the environment pins on this node.
#[derive(Clone, Debug, Default)]
pub struct Pins {
    pub admin_token: Option<String>,
    pub root: Option<RootPair>,
}

impl Pins {
    /// `SERV_ADMIN_TOKEN`, and `SERV_ACCESS_KEY` with `SERV_SECRET_KEY` (both, or neither counts),
    /// when set and not blank.
    pub fn from_env() -> Self {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let root = match (var("SERV_ACCESS_KEY"), var("SERV_SECRET_KEY")) {
            (Some(access_key), Some(secret_key)) => Some(RootPair { access_key, secret_key }),
            _ => None,
        };
        Self { admin_token: var("SERV_ADMIN_TOKEN"), root }
    }
}

/// Why a rotation was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum RotateRefusal {
    #[error("{0} is pinned on this node by the environment ({1}); change it there")]
    Pinned(&'static str, &'static str),
    #[error("this node has not adopted the cluster's {0} yet")]
    NotAdopted(&'static str),
    #[error("the new {0} could not be stored: {1}")]
    Storage(&'static str, String),
}

/// The shared credentials as this node holds them; cheap to clone, read on every request.
#[derive(Clone)]
pub struct ClusterCredentials {
    inner: Arc<Inner>,
}

struct Inner {
    dir: PathBuf,
    pins: Pins,
    current: RwLock<Shared>,
    /// Serializes changes, so that the files are written in the order the changes were made.
    changes: Mutex<()>,
}

impl ClusterCredentials {
    /// This node's credentials from `data_dir` (or the environment's `pins`). A `founding` node
    /// (one started without seeds) generates what it lacks, stores it and prints it once; any
    /// other node waits to adopt what it lacks from the nodes it reaches.
    pub fn open(data_dir: &Path, pins: Pins, founding: bool) -> Result<Self, String> {
        let stored = load(data_dir)?;
        let mut current = Shared {
            admin_token: pinned(&pins.admin_token).or(stored.admin_token.clone()),
            root: pinned(&pins.root).or(stored.root.clone()),
        };
        let mut notices = Vec::new();
        if founding {
            let now = serv_actors::now_ms();
            if current.admin_token.is_none() {
                let token = random_hex(32);
                let path = data_dir.join(TOKEN_COPY);
                notices.push(format!(
                    "servd: generated admin token {token} (stored in {}, mode 0600)",
                    path.display()
                ));
                current.admin_token = Some(first(token, now));
            }
            if current.root.is_none() {
                let root = RootPair {
                    access_key: format!("SV{}", random_hex(9)).to_uppercase(),
                    secret_key: random_hex(20),
                };
                notices.push(format!(
                    "servd: generated root credentials: access key {}, secret key {} (stored in {}, mode 0600)",
                    root.access_key,
                    root.secret_key,
                    data_dir.join(ROOT_COPY).display()
                ));
                current.root = Some(first(root, now));
            }
        }
        let credentials = Self {
            inner: Arc::new(Inner {
                dir: data_dir.to_path_buf(),
                pins,
                current: RwLock::new(current),
                changes: Mutex::new(()),
            }),
        };
        credentials.store()?;
        // Printed once stored: a value printed is never lost to a crash.
        for notice in notices {
            println!("{notice}");
        }
        Ok(credentials)
    }

    /// The admin token, once this node has one.
    pub fn admin_token(&self) -> Option<String> {
        self.read().admin_token.as_ref().map(|token| token.value.clone())
    }

    /// The root pair, once this node has one.
    pub fn root(&self) -> Option<RootPair> {
        self.read().root.as_ref().map(|root| root.value.clone())
    }

    /// True once this node holds both values.
    pub fn adopted(&self) -> bool {
        let current = self.read();
        current.admin_token.is_some() && current.root.is_some()
    }

    /// This node's copy, to hand to another node.
    pub fn export(&self) -> Shared {
        self.read().clone()
    }

    /// Takes each value of `from` that beats this node's (and is not pinned here), durably; how
    /// many values changed.
    pub fn merge(&self, from: Shared) -> Result<usize, String> {
        let _change = self.inner.changes.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut next = self.export();
        let pins = &self.inner.pins;
        let changed =
            adopt("admin token", &mut next.admin_token, from.admin_token, pins.admin_token.is_some())
                + adopt("root credentials", &mut next.root, from.root, pins.root.is_some());
        if changed > 0 {
            self.replace(next)?;
        }
        Ok(changed)
    }

    /// Makes a new admin token for the cluster (the next generation), stores it and answers it.
    pub fn rotate_admin_token(&self) -> Result<String, RotateRefusal> {
        const WHAT: &str = "the admin token";
        if self.inner.pins.admin_token.is_some() {
            return Err(RotateRefusal::Pinned(WHAT, "SERV_ADMIN_TOKEN"));
        }
        self.rotate(WHAT, |shared| &mut shared.admin_token, |_| random_hex(32))
    }

    /// Makes a new secret for the root access key (which stays: it owns buckets), stores it and
    /// answers the pair.
    pub fn rotate_root_secret(&self) -> Result<RootPair, RotateRefusal> {
        const WHAT: &str = "the root credentials";
        if self.inner.pins.root.is_some() {
            return Err(RotateRefusal::Pinned(WHAT, "SERV_ACCESS_KEY, SERV_SECRET_KEY"));
        }
        self.rotate(
            WHAT,
            |shared| &mut shared.root,
            |old: &RootPair| RootPair { access_key: old.access_key.clone(), secret_key: random_hex(20) },
        )
    }

    fn rotate<T: Clone>(
        &self,
        what: &'static str,
        field: impl Fn(&mut Shared) -> &mut Option<Versioned<T>>,
        make: impl FnOnce(&T) -> T,
    ) -> Result<T, RotateRefusal> {
        let _change = self.inner.changes.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut next = self.export();
        let slot = field(&mut next);
        let old = slot.as_ref().ok_or(RotateRefusal::NotAdopted(what))?;
        let now = serv_actors::now_ms();
        let value = make(&old.value);
        *slot = Some(Versioned {
            founded_ms: old.founded_ms,
            generation: old.generation + 1,
            changed_ms: now.max(old.changed_ms + 1),
            value: value.clone(),
        });
        self.replace(next).map_err(|e| RotateRefusal::Storage(what, e))?;
        Ok(value)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Shared> {
        self.inner.current.read().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Stores `next` and then serves it: a value is never used before it is durable.
    fn replace(&self, next: Shared) -> Result<(), String> {
        *self.inner.current.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = next;
        self.store()
    }

    /// Writes what is not pinned to the file (atomically) and the copies of each value.
    fn store(&self) -> Result<(), String> {
        let current = self.export();
        let pins = &self.inner.pins;
        let stored = Shared {
            admin_token: current.admin_token.filter(|_| pins.admin_token.is_none()),
            root: current.root.filter(|_| pins.root.is_none()),
        };
        let dir = &self.inner.dir;
        let json = serde_json::to_vec_pretty(&stored).map_err(|e| e.to_string())?;
        write_0600(dir, FILE, &json)?;
        if let Some(token) = &stored.admin_token {
            write_0600(dir, TOKEN_COPY, format!("{}\n", token.value).as_bytes())?;
        }
        if let Some(root) = &stored.root {
            let pair = format!("{}:{}\n", root.value.access_key, root.value.secret_key);
            write_0600(dir, ROOT_COPY, pair.as_bytes())?;
        }
        Ok(())
    }
}

/// A value as made by the founding at `at_ms`.
fn first<T>(value: T, at_ms: u64) -> Versioned<T> {
    Versioned { founded_ms: at_ms, generation: 1, changed_ms: at_ms, value }
}

/// A pinned value: founded at 0, so it beats every generated one.
fn pinned<T: Clone>(value: &Option<T>) -> Option<Versioned<T>> {
    value.clone().map(|value| Versioned { founded_ms: 0, generation: 0, changed_ms: 0, value })
}

/// Puts `offered` in `slot` if it beats what is there (and the slot is not pinned); 1 if it did.
fn adopt<T: Ord + PartialEq>(
    what: &str,
    slot: &mut Option<Versioned<T>>,
    offered: Option<Versioned<T>>,
    pinned: bool,
) -> usize {
    let Some(offered) = offered else { return 0 };
    let better = slot.as_ref().is_none_or(|held| offered.beats(held));
    if !better {
        return 0;
    }
    if pinned {
        if slot.as_ref().is_some_and(|held| held.value != offered.value) {
            tracing::warn!(
                what,
                "another node holds a different {what} than the one this node's environment pins"
            );
        }
        return 0;
    }
    match slot {
        None => tracing::info!(what, generation = offered.generation, "adopted the cluster's {what}"),
        Some(held) if held.founded_ms != offered.founded_ms => tracing::warn!(
            what,
            this_node_founded_ms = held.founded_ms,
            cluster_founded_ms = offered.founded_ms,
            "this node's {what} came from another founding; it adopts the cluster's"
        ),
        Some(_) => tracing::info!(what, generation = offered.generation, "adopted a rotated {what}"),
    }
    *slot = Some(offered);
    1
}

/// What `data_dir` holds: the credentials file, or (written by a node before it existed) the
/// copies alone, taken as founded when they were written.
fn load(data_dir: &Path) -> Result<Shared, String> {
    let path = data_dir.join(FILE);
    match std::fs::read(&path) {
        Ok(bytes) => {
            return serde_json::from_slice(&bytes)
                .map_err(|e| format!("{} is malformed: {e}", path.display()));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    }
    let legacy = |name: &str| -> Result<Option<(String, u64)>, String> {
        let path = data_dir.join(name);
        match std::fs::read_to_string(&path) {
            Ok(value) if !value.trim().is_empty() => {
                let written = std::fs::metadata(&path)
                    .and_then(|meta| meta.modified())
                    .ok()
                    .and_then(|at| at.duration_since(std::time::UNIX_EPOCH).ok())
                    .map_or(1, |since| since.as_millis() as u64);
                Ok(Some((value.trim().to_string(), written)))
            }
            Ok(_) => Err(format!("{} is empty; remove it to adopt or generate a new one", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("cannot read {}: {e}", path.display())),
        }
    };
    let admin_token = legacy(TOKEN_COPY)?.map(|(token, written)| first(token, written));
    let root = match legacy(ROOT_COPY)? {
        None => None,
        Some((pair, written)) => {
            let (access_key, secret_key) = pair.split_once(':').ok_or_else(|| {
                format!(
                    "{}/{ROOT_COPY} is malformed; remove it to adopt or generate a new pair",
                    data_dir.display()
                )
            })?;
            let pair = RootPair { access_key: access_key.into(), secret_key: secret_key.into() };
            Some(first(pair, written))
        }
    };
    Ok(Shared { admin_token, root })
}

/// Writes `name` in `dir` with mode 0600 through a synced temporary file renamed over it.
fn write_0600(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), String> {
    let path = dir.join(name);
    let temporary = dir.join(format!(".{name}.new"));
    let fail = |e: std::io::Error| format!("cannot write {}: {e}", path.display());
    let _ = std::fs::remove_file(&temporary);
    let mut file =
        OpenOptions::new().write(true).create_new(true).mode(0o600).open(&temporary).map_err(fail)?;
    file.write_all(bytes).and_then(|()| file.sync_all()).map_err(fail)?;
    std::fs::rename(&temporary, &path).map_err(fail)?;
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(fail)
}

impl crate::owned::Merged for ClusterCredentials {
    type Sync = Shared;
    const NAME: &'static str = "credentials";

    fn export(&self) -> Result<Shared, String> {
        Ok(ClusterCredentials::export(self))
    }

    async fn merge(&self, from: Shared) -> Result<usize, String> {
        ClusterCredentials::merge(self, from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn versioned(founded_ms: u64, generation: u64, value: &str) -> Versioned<String> {
        Versioned { founded_ms, generation, changed_ms: founded_ms + generation, value: value.into() }
    }

    #[test]
    fn the_older_founding_wins_then_the_later_rotation() {
        let cluster = versioned(100, 1, "cluster");
        let stray = versioned(200, 5, "stray");
        assert!(cluster.beats(&stray), "a node founded later adopts the older cluster's value");
        assert!(!stray.beats(&cluster));
        let rotated = versioned(100, 2, "rotated");
        assert!(rotated.beats(&cluster) && !cluster.beats(&rotated));
        let pinned = pinned(&Some("pinned".to_string())).unwrap();
        assert!(pinned.beats(&rotated), "the environment's value wins over any generated one");
    }

    #[test]
    fn a_founder_generates_once_a_joiner_adopts_and_a_rotation_spreads() {
        let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
        let founder = ClusterCredentials::open(dirs[0].path(), Pins::default(), true).unwrap();
        let joiner = ClusterCredentials::open(dirs[1].path(), Pins::default(), false).unwrap();
        assert!(founder.adopted() && !joiner.adopted());
        assert_eq!(joiner.admin_token(), None, "a joiner never makes up its own token");

        assert_eq!(joiner.merge(founder.export()).unwrap(), 2);
        assert_eq!(joiner.admin_token(), founder.admin_token());
        assert_eq!(joiner.root(), founder.root());
        assert_eq!(joiner.merge(founder.export()).unwrap(), 0, "merging again changes nothing");

        let token = joiner.rotate_admin_token().unwrap();
        assert_eq!(founder.merge(joiner.export()).unwrap(), 1);
        assert_eq!(founder.admin_token(), Some(token.clone()));
        assert_eq!(joiner.merge(founder.export()).unwrap(), 0);

        let reopened = ClusterCredentials::open(dirs[0].path(), Pins::default(), true).unwrap();
        assert_eq!(reopened.admin_token(), Some(token.clone()), "the rotation is durable");
        let copy = std::fs::read_to_string(dirs[0].path().join(TOKEN_COPY)).unwrap();
        assert_eq!(copy.trim(), token, "the script copy follows the rotation");
        let old_root = founder.root().unwrap();
        let new_root = founder.rotate_root_secret().unwrap();
        assert_eq!(new_root.access_key, old_root.access_key);
        assert_ne!(new_root.secret_key, old_root.secret_key);
    }

    #[test]
    fn a_pinned_value_is_never_replaced_nor_rotated_and_wins_elsewhere() {
        let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
        let pins = Pins { admin_token: Some("from-env".into()), root: None };
        let pinned = ClusterCredentials::open(dirs[0].path(), pins, false).unwrap();
        let founder = ClusterCredentials::open(dirs[1].path(), Pins::default(), true).unwrap();
        assert_eq!(pinned.merge(founder.export()).unwrap(), 1, "only the root pair is adopted");
        assert_eq!(pinned.admin_token().as_deref(), Some("from-env"));
        assert!(matches!(pinned.rotate_admin_token(), Err(RotateRefusal::Pinned(..))));
        assert_eq!(founder.merge(pinned.export()).unwrap(), 1);
        assert_eq!(founder.admin_token().as_deref(), Some("from-env"));
        let stored = std::fs::read_to_string(dirs[0].path().join(FILE)).unwrap();
        assert!(!stored.contains("from-env"), "a pinned value is not written to the data dir");
    }

    #[test]
    fn files_of_an_older_node_are_read_as_its_founding() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(TOKEN_COPY), "old-token\n").unwrap();
        std::fs::write(dir.path().join(ROOT_COPY), "OLDACCESS:oldsecret\n").unwrap();
        let credentials = ClusterCredentials::open(dir.path(), Pins::default(), true).unwrap();
        assert_eq!(credentials.admin_token().as_deref(), Some("old-token"));
        assert_eq!(credentials.root().unwrap().access_key, "OLDACCESS");
        assert!(dir.path().join(FILE).exists());
    }
}
