//! What a module entity stores and what can be asked of it.

use serde::{Deserialize, Serialize};
use serv_storage::{Record, TableDef};

use crate::{ActorKind, KindMessage};

/// Longest module name.
pub const MAX_MODULE_NAME: usize = 100;

/// Modules by name, without their binaries (listings read these).
pub const MODULES: TableDef<String, ModuleRecord> = TableDef::new("modules");
/// Each module's current binary, by name.
pub const MODULE_BINARIES: TableDef<String, ModuleBinary> = TableDef::new("module_binaries");

/// A module name, checked: 1 to 100 characters of `a-z 0-9 . _ -`.
pub fn module_name(name: &str) -> Result<&str, String> {
    crate::key::plain_name("module name", name, MAX_MODULE_NAME)
}

/// A stored module: what its current binary is and offers (the binary is in [`MODULE_BINARIES`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModuleRecord {
    /// Hex BLAKE3 of the binary.
    pub hash: String,
    /// The binary's size in bytes.
    pub size: u64,
    /// The hooks it exports (`transform`, `request`).
    pub hooks: Vec<String>,
    /// 1 for the first upload, one more for each upload of a different binary.
    pub version: u64,
    pub created_ms: u64,
    pub updated_ms: u64,
}

impl Record for ModuleRecord {
    const FORMAT: u8 = 1;
}

/// A module's binary.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModuleBinary {
    #[serde(with = "crate::serde_bytes")]
    pub wasm: Vec<u8>,
}

impl Record for ModuleBinary {
    const FORMAT: u8 = 1;
}

impl ModuleRecord {
    pub fn head(&self, name: &str) -> ModuleHead {
        ModuleHead {
            name: name.to_string(),
            hash: self.hash.clone(),
            size: self.size,
            hooks: self.hooks.clone(),
            version: self.version,
            created_ms: self.created_ms,
            updated_ms: self.updated_ms,
        }
    }
}

/// A module without its binary.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModuleHead {
    pub name: String,
    pub hash: String,
    pub size: u64,
    pub hooks: Vec<String>,
    pub version: u64,
    pub created_ms: u64,
    pub updated_ms: u64,
}

/// What can be asked of a module.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum ModuleMsg {
    /// Stores a new binary (already compiled and checked by the caller) in place of the old one.
    Put {
        #[serde(with = "crate::serde_bytes")]
        wasm: Vec<u8>,
        hash: String,
        hooks: Vec<String>,
    },
    /// The module without its binary.
    Head,
    /// The module's binary.
    Get,
    Delete,
}

/// A module's answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ModuleReply {
    Head(ModuleHead),
    Binary(#[serde(with = "crate::serde_bytes")] Vec<u8>),
    Deleted,
    NoSuchModule,
}

impl KindMessage for ModuleMsg {
    const KIND: ActorKind = ActorKind::Module;
    type Reply = ModuleReply;
}
