//! The module entity: a named WASM module's current binary, stored by the module's owner like
//! any entity's state. Nodes run modules through their [`ModuleRuntime`], which fetches a
//! binary by name, compiles it once per content hash and rechecks the name's current hash
//! periodically, so an upload reaches every node within one recheck; a call in flight finishes
//! on the version it started with.

mod model;
mod runtime;

use serv_storage::Table;

pub use model::*;
pub use runtime::{MODULE_COPIES, ModuleCopy, ModuleFailure, ModuleRuntime, ModuleStats};

use crate::{Entity, EntityContext, EntityError, now_ms};

/// A module's actor. A name without a stored module loads as absent.
pub struct Module {
    name: String,
    record: Option<ModuleRecord>,
    modules: Table<String, ModuleRecord>,
    binaries: Table<String, ModuleBinary>,
}

impl Entity for Module {
    type Msg = ModuleMsg;

    async fn load(ctx: &EntityContext) -> Result<Self, EntityError> {
        let modules = ctx.storage.table(MODULES)?;
        let record = modules.get(&ctx.key.name)?;
        let binaries = ctx.storage.table(MODULE_BINARIES)?;
        Ok(Module { name: ctx.key.name.clone(), record, modules, binaries })
    }

    async fn handle(&mut self, msg: ModuleMsg, ctx: &EntityContext) -> Result<ModuleReply, EntityError> {
        match (msg, &self.record) {
            (ModuleMsg::Put { wasm, hash, hooks }, existing) => {
                let now = now_ms();
                let size = wasm.len() as u64;
                let same = existing.as_ref().is_some_and(|old| old.hash == hash);
                let record = match existing {
                    Some(old) if same => ModuleRecord { hooks, ..old.clone() },
                    Some(old) => ModuleRecord {
                        hash,
                        size,
                        hooks,
                        version: old.version + 1,
                        updated_ms: now,
                        ..old.clone()
                    },
                    None => ModuleRecord { hash, size, hooks, version: 1, created_ms: now, updated_ms: now },
                };
                let mut changes = ctx.storage.write_set();
                changes.put(&self.modules, &self.name, &record)?;
                if !same {
                    changes.put(&self.binaries, &self.name, &ModuleBinary { wasm })?;
                }
                ctx.storage.commit(changes).await?;
                let head = record.head(&self.name);
                self.record = Some(record);
                Ok(ModuleReply::Head(head))
            }
            (_, None) => Ok(ModuleReply::NoSuchModule),
            (ModuleMsg::Head, Some(record)) => Ok(ModuleReply::Head(record.head(&self.name))),
            (ModuleMsg::Get, Some(_)) => match self.binaries.get(&self.name)? {
                Some(binary) => Ok(ModuleReply::Binary(binary.wasm)),
                None => Err(EntityError::new(format!("module {} has no binary stored", self.name))),
            },
            (ModuleMsg::Delete, Some(_)) => {
                let mut changes = ctx.storage.write_set();
                changes.delete(&self.modules, &self.name);
                changes.delete(&self.binaries, &self.name);
                ctx.storage.commit(changes).await?;
                self.record = None;
                Ok(ModuleReply::Deleted)
            }
        }
    }

    fn summary(&self) -> String {
        match &self.record {
            Some(record) => format!(
                "version={} hash={} bytes={} hooks={}",
                record.version,
                &record.hash[..12.min(record.hash.len())],
                record.size,
                record.hooks.join(",")
            ),
            None => crate::inspect::ABSENT.to_string(),
        }
    }
}

#[cfg(test)]
mod tests;
