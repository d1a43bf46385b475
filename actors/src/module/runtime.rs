//! Running modules on a node: name → current binary → compiled module, cached, with the call
//! itself off the async runtime's threads. Each node also keeps a durable copy of the version of
//! each module it last ran (`module_copies`, never handed off), so that it can go on running it
//! while the module's owner is down, even after restarting itself.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serv_wasm_host::{Compiled, Hook, WasmError, WasmHost};

use serv_storage::{Record, Storage, TableDef};

use super::{ModuleMsg, ModuleReply};
use crate::{ActorKey, ActorKind, Directory};

/// This node's copy of the version of each module it last ran, by name.
pub const MODULE_COPIES: TableDef<String, ModuleCopy> = TableDef::new("module_copies");

/// A module binary as this node last ran it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModuleCopy {
    pub hash: String,
    #[serde(with = "crate::serde_bytes")]
    pub wasm: Vec<u8>,
}

impl Record for ModuleCopy {
    const FORMAT: u8 = 1;
}

/// Why a module could not be run at all (a failed call is a [`WasmError`] per input).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ModuleFailure {
    #[error("no module {0}")]
    NoSuchModule(String),
    #[error("module {0} exports no {1} hook")]
    NoHook(String, &'static str),
    /// Its owner could not be asked and this node has never loaded it.
    #[error("module {0} cannot be loaded: {1}")]
    Unavailable(String, String),
}

/// One module's calls on this node.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModuleStats {
    pub calls: u64,
    /// Calls that refused their input or failed.
    pub failures: u64,
    /// Time spent in calls, in microseconds.
    pub busy_us: u64,
    pub last_error: Option<String>,
}

/// The node's module runner (one per node, shared by its entities and edges).
pub struct ModuleRuntime {
    host: WasmHost,
    storage: Storage,
    recheck: Duration,
    names: Mutex<HashMap<String, Resolved>>,
    stats: Mutex<BTreeMap<String, ModuleStats>>,
}

struct Resolved {
    compiled: Arc<Compiled>,
    checked: Instant,
}

impl ModuleRuntime {
    /// A runner on `host` that asks for a module's current binary at most every `recheck`, and
    /// keeps its copies in `storage`.
    pub fn new(host: WasmHost, storage: Storage, recheck: Duration) -> Self {
        Self { host, storage, recheck, names: Mutex::default(), stats: Mutex::default() }
    }

    pub fn host(&self) -> &WasmHost {
        &self.host
    }

    /// Compiles `bytes` off the async runtime's threads.
    pub async fn compile(&self, bytes: Vec<u8>) -> Result<Arc<Compiled>, WasmError> {
        let host = self.host.clone();
        tokio::task::spawn_blocking(move || host.compile(&bytes))
            .await
            .unwrap_or_else(|e| Err(WasmError::Failed(format!("compilation panicked: {e}"))))
    }

    /// Makes this node ask for `name`'s binary again on its next use (after a change made here).
    pub fn forget(&self, name: &str) {
        self.names.lock().expect("module names lock").remove(name);
    }

    /// Each module's calls on this node, by name.
    pub fn stats(&self) -> BTreeMap<String, ModuleStats> {
        self.stats.lock().expect("module stats lock").clone()
    }

    /// Module `name` as currently stored, compiled. When its owner cannot be asked, the version
    /// this node last ran is used (from memory, else from this node's copy).
    pub async fn resolve(&self, directory: &Directory, name: &str) -> Result<Arc<Compiled>, ModuleFailure> {
        let known = {
            let names = self.names.lock().expect("module names lock");
            match names.get(name) {
                Some(resolved) if resolved.checked.elapsed() < self.recheck => {
                    return Ok(resolved.compiled.clone());
                }
                Some(resolved) => Some(resolved.compiled.clone()),
                None => None,
            }
        };
        let key = ActorKey::new(ActorKind::Module, name);
        let head = match directory.call(&key, ModuleMsg::Head).await {
            Ok(ModuleReply::Head(head)) => head,
            Ok(ModuleReply::NoSuchModule) => {
                self.forget(name);
                if self.copy(name).is_some() {
                    self.drop_copy(name).await;
                }
                return Err(ModuleFailure::NoSuchModule(name.to_string()));
            }
            Ok(other) => return Err(ModuleFailure::Unavailable(name.into(), format!("answered {other:?}"))),
            Err(error) => {
                let unavailable = |why: String| ModuleFailure::Unavailable(name.into(), why);
                let compiled = match known {
                    Some(compiled) => compiled,
                    None => {
                        let copy = self.copy(name).ok_or_else(|| unavailable(error.to_string()))?;
                        self.compile(copy.wasm).await.map_err(|e| unavailable(e.to_string()))?
                    }
                };
                tracing::warn!(module = name, %error, hash = %compiled.hash, "module owner unreachable: running the version this node ran last");
                self.remember(name, &compiled);
                return Ok(compiled);
            }
        };
        // Only a switch to another version can make this node's copy out of date.
        let switched = known.as_ref().is_none_or(|c| c.hash != head.hash);
        let compiled = match known.filter(|c| c.hash == head.hash).or_else(|| self.host.cached(&head.hash)) {
            Some(compiled) => compiled,
            None => {
                let wasm = match directory.call(&key, ModuleMsg::Get).await {
                    Ok(ModuleReply::Binary(wasm)) => wasm,
                    Ok(ModuleReply::NoSuchModule) => {
                        return Err(ModuleFailure::NoSuchModule(name.to_string()));
                    }
                    Ok(other) => {
                        return Err(ModuleFailure::Unavailable(name.into(), format!("answered {other:?}")));
                    }
                    Err(error) => return Err(ModuleFailure::Unavailable(name.into(), error.to_string())),
                };
                self.compile(wasm)
                    .await
                    .map_err(|e| ModuleFailure::Unavailable(name.into(), e.to_string()))?
            }
        };
        if switched && self.copy(name).is_none_or(|copy| copy.hash != compiled.hash) {
            self.keep_copy(name, &compiled).await;
        }
        self.remember(name, &compiled);
        Ok(compiled)
    }

    fn remember(&self, name: &str, compiled: &Arc<Compiled>) {
        let resolved = Resolved { compiled: compiled.clone(), checked: Instant::now() };
        self.names.lock().expect("module names lock").insert(name.to_string(), resolved);
    }

    /// This node's copy of `name`, if it has one it can read.
    fn copy(&self, name: &str) -> Option<ModuleCopy> {
        let table = self.storage.table(MODULE_COPIES).ok()?;
        table.get(&name.to_string()).ok().flatten()
    }

    async fn keep_copy(&self, name: &str, compiled: &Compiled) {
        let copy = ModuleCopy { hash: compiled.hash.clone(), wasm: compiled.wasm.to_vec() };
        let kept = async {
            let table = self.storage.table(MODULE_COPIES)?;
            let mut changes = self.storage.write_set();
            changes.put(&table, &name.to_string(), &copy)?;
            self.storage.commit(changes).await
        };
        if let Err(error) = kept.await {
            tracing::warn!(module = name, %error, "cannot keep a copy of the module on this node");
        }
    }

    async fn drop_copy(&self, name: &str) {
        let dropped = async {
            let table = self.storage.table(MODULE_COPIES)?;
            let mut changes = self.storage.write_set();
            changes.delete(&table, &name.to_string());
            self.storage.commit(changes).await
        };
        if let Err(error) = dropped.await {
            tracing::warn!(module = name, %error, "cannot drop this node's copy of the module");
        }
    }

    /// Runs `hook` of module `name` on each input, in order, off the async runtime's threads:
    /// each input's output or why the call failed.
    pub async fn run(
        &self,
        directory: &Directory,
        name: &str,
        hook: Hook,
        inputs: Vec<Vec<u8>>,
    ) -> Result<Vec<Result<Vec<u8>, WasmError>>, ModuleFailure> {
        let compiled = self.resolve(directory, name).await?;
        if !compiled.hooks.contains(&hook) {
            return Err(ModuleFailure::NoHook(name.to_string(), hook.as_str()));
        }
        let host = self.host.clone();
        let started = Instant::now();
        let outputs = tokio::task::spawn_blocking(move || {
            inputs.iter().map(|input| host.call(&compiled, hook, input)).collect::<Vec<_>>()
        })
        .await
        .map_err(|e| ModuleFailure::Unavailable(name.into(), format!("call panicked: {e}")))?;
        let mut stats = self.stats.lock().expect("module stats lock");
        let entry = stats.entry(name.to_string()).or_default();
        entry.calls += outputs.len() as u64;
        entry.busy_us += started.elapsed().as_micros() as u64;
        for error in outputs.iter().filter_map(|o| o.as_ref().err()) {
            entry.failures += 1;
            entry.last_error = Some(error.to_string());
        }
        Ok(outputs)
    }
}
