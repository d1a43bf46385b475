//! Serv WASM host: one shared wasmtime engine with a compiled-module cache keyed by content hash,
//! and every call bounded by fuel, a memory limit and a wall-clock deadline, so that a bad module
//! costs its caller an error and never the node.
//!
//! ## The module ABI
//! A module imports nothing and exports:
//! - `memory`, its linear memory;
//! - `serv_alloc(len: i32) -> i32`, which returns where the host may write `len` input bytes;
//! - one or more hooks, each `(ptr: i32, len: i32) -> i64`, called with the input written at
//!   `ptr`. A result `r >= 0` is the output: `r >> 32` is its address and `r & 0xffff_ffff` its
//!   length. A negative result refuses the input, with code `-r`.
//!
//! The hooks are [`Hook::Transform`] (`serv_transform`: a topic message's body in, the body to
//! store out), [`Hook::Request`] and [`Hook::Response`] (`serv_request`, `serv_response`: a
//! gateway request's or upstream response's head in, see `serv_edges::gateway`). Every call runs in a fresh instance, so no state survives a call.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::Duration;

use wasmtime::{
    Config, Engine, ExternType, FuncType, Instance, InstanceAllocationStrategy, Linker, Module,
    PoolingAllocationConfig, Store, StoreLimits, StoreLimitsBuilder, Trap, ValType,
};

/// How often the deadline clock ticks: a call's deadline is rounded up to this.
const EPOCH_TICK: Duration = Duration::from_millis(5);
/// Most compiled modules kept; past it the cache is emptied of modules no caller holds.
const MAX_CACHED: usize = 256;
/// Calls that can run at once: instances come from a pool of this many preallocated slots (a
/// fresh instance per call then costs a few microseconds, not an mmap); more callers wait.
const POOL_SLOTS: u32 = 32;

/// A hook a module can export.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Hook {
    /// `serv_transform`: rewrites a topic message's body as it is published.
    Transform,
    /// `serv_request`: inspects, rewrites or refuses a gateway request.
    Request,
    /// `serv_response`: inspects, rewrites or refuses an upstream's response (its status and
    /// headers) before the gateway sends it on.
    Response,
}

impl Hook {
    pub const ALL: [Hook; 3] = [Hook::Transform, Hook::Request, Hook::Response];

    /// The export's name.
    pub fn export(self) -> &'static str {
        match self {
            Hook::Transform => "serv_transform",
            Hook::Request => "serv_request",
            Hook::Response => "serv_response",
        }
    }

    /// The hook's short name, as the admin API shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            Hook::Transform => "transform",
            Hook::Request => "request",
            Hook::Response => "response",
        }
    }
}

/// What bounds one call.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Fuel (about one unit per WASM instruction).
    pub fuel: u64,
    /// Largest linear memory, in bytes.
    pub memory_bytes: usize,
    /// Wall-clock time one call may take.
    pub deadline: Duration,
    /// Largest output a call may return.
    pub max_output_bytes: usize,
    /// Largest module binary accepted.
    pub max_module_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            fuel: 50_000_000,
            memory_bytes: 64 * 1024 * 1024,
            deadline: Duration::from_millis(100),
            max_output_bytes: 16 * 1024 * 1024,
            max_module_bytes: 4 * 1024 * 1024,
        }
    }
}

/// Why a module was refused or a call failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WasmError {
    /// The bytes are not a module this host can run; the text says why.
    #[error("invalid module: {0}")]
    Invalid(String),
    /// The module refused the input, with its code.
    #[error("refused by the module (code {0})")]
    Refused(u64),
    #[error("ran out of fuel ({0} units)")]
    OutOfFuel(u64),
    #[error("exceeded its {0} ms deadline")]
    Deadline(u64),
    #[error("exceeded its memory limit of {0} bytes")]
    MemoryLimit(usize),
    /// The module trapped or broke the ABI; the text says how.
    #[error("failed: {0}")]
    Failed(String),
}

/// A compiled module and what it offers.
pub struct Compiled {
    /// Hex BLAKE3 of the module's binary.
    pub hash: String,
    /// The module's binary (WAT is converted on the way in).
    pub wasm: Arc<Vec<u8>>,
    /// The hooks it exports, in order.
    pub hooks: Vec<Hook>,
    module: Module,
}

impl std::fmt::Debug for Compiled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Compiled").field("hash", &self.hash).field("hooks", &self.hooks).finish()
    }
}

/// The node's WASM engine. Cloning shares it.
#[derive(Clone)]
pub struct WasmHost {
    inner: Arc<Inner>,
}

struct Inner {
    engine: Engine,
    limits: Limits,
    cache: Mutex<HashMap<String, Arc<Compiled>>>,
    /// Free instance slots, and the callers waiting for one.
    free: Mutex<u32>,
    freed: Condvar,
}

/// A taken instance slot, given back when dropped.
struct Slot<'a>(&'a Inner);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        *self.0.free.lock().expect("slot lock") += 1;
        self.0.freed.notify_one();
    }
}

impl Inner {
    fn slot(&self) -> Slot<'_> {
        let mut free = self.free.lock().expect("slot lock");
        while *free == 0 {
            free = self.freed.wait(free).expect("slot lock");
        }
        *free -= 1;
        Slot(self)
    }
}

struct CallState {
    limits: StoreLimits,
}

impl WasmHost {
    /// Starts the engine and the clock its deadlines run on (a thread that ends with the host).
    pub fn new(limits: Limits) -> Result<Self, WasmError> {
        let mut pool = PoolingAllocationConfig::default();
        pool.total_core_instances(POOL_SLOTS)
            .total_memories(POOL_SLOTS)
            .total_tables(POOL_SLOTS)
            .total_component_instances(0)
            .max_memory_size(limits.memory_bytes)
            .linear_memory_keep_resident(64 * 1024);
        let mut config = Config::new();
        config
            .consume_fuel(true)
            .epoch_interruption(true)
            .memory_reservation(limits.memory_bytes as u64)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config).map_err(|e| WasmError::Invalid(format!("engine: {e:#}")))?;
        let inner = Arc::new(Inner {
            engine,
            limits,
            cache: Mutex::new(HashMap::new()),
            free: Mutex::new(POOL_SLOTS),
            freed: Condvar::new(),
        });
        let clock: Weak<Inner> = Arc::downgrade(&inner);
        std::thread::Builder::new()
            .name("wasm-clock".into())
            .spawn(move || {
                while let Some(inner) = clock.upgrade() {
                    inner.engine.increment_epoch();
                    drop(inner);
                    std::thread::sleep(EPOCH_TICK);
                }
            })
            .map_err(|e| WasmError::Invalid(format!("cannot start the WASM clock: {e}")))?;
        Ok(Self { inner })
    }

    pub fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    /// Compiles `bytes` (a WASM binary or WAT text) and checks it against the ABI, or answers the
    /// cached compilation of the same binary. Compiling takes milliseconds: call it off the
    /// async runtime's threads.
    pub fn compile(&self, bytes: &[u8]) -> Result<Arc<Compiled>, WasmError> {
        let limit = self.inner.limits.max_module_bytes;
        let too_large =
            |size: usize| WasmError::Invalid(format!("{size} bytes, more than the limit of {limit}"));
        if bytes.len() > limit {
            return Err(too_large(bytes.len()));
        }
        let wasm = wat::parse_bytes(bytes).map_err(|e| WasmError::Invalid(e.to_string()))?.into_owned();
        if wasm.len() > limit {
            return Err(too_large(wasm.len()));
        }
        let hash = blake3::hash(&wasm).to_hex().to_string();
        if let Some(compiled) = self.cached(&hash) {
            return Ok(compiled);
        }
        let module =
            Module::new(&self.inner.engine, &wasm).map_err(|e| WasmError::Invalid(format!("{e:#}")))?;
        let hooks = check_abi(&module)?;
        let compiled = Arc::new(Compiled { hash: hash.clone(), wasm: Arc::new(wasm), hooks, module });
        let mut cache = self.inner.cache.lock().expect("module cache lock");
        if cache.len() >= MAX_CACHED {
            cache.retain(|_, held| Arc::strong_count(held) > 1);
        }
        cache.insert(hash, compiled.clone());
        Ok(compiled)
    }

    /// The compiled module with content hash `hash`, if this host has it.
    pub fn cached(&self, hash: &str) -> Option<Arc<Compiled>> {
        self.inner.cache.lock().expect("module cache lock").get(hash).cloned()
    }

    /// Runs `hook` of `module` on `input` in a fresh instance, within the limits. Blocks for up to
    /// the deadline: call it off the async runtime's threads.
    pub fn call(&self, module: &Compiled, hook: Hook, input: &[u8]) -> Result<Vec<u8>, WasmError> {
        let limits = &self.inner.limits;
        let _slot = self.inner.slot();
        let store_limits = StoreLimitsBuilder::new()
            .memory_size(limits.memory_bytes)
            .instances(1)
            .memories(1)
            .tables(4)
            .trap_on_grow_failure(true)
            .build();
        let mut store = Store::new(&self.inner.engine, CallState { limits: store_limits });
        store.limiter(|state| &mut state.limits);
        store.set_fuel(limits.fuel).map_err(|e| WasmError::Failed(e.to_string()))?;
        let ticks = limits.deadline.as_millis().div_ceil(EPOCH_TICK.as_millis()).max(1) as u64;
        // One tick more: the clock may tick right after the deadline is set.
        store.set_epoch_deadline(ticks + 1);
        store.epoch_deadline_trap();
        let trapped = |e: wasmtime::Error| self.failure(e);
        let linker: Linker<CallState> = Linker::new(&self.inner.engine);
        let instance: Instance = linker.instantiate(&mut store, &module.module).map_err(trapped)?;
        let memory = instance
            .get_memory(&mut store, "memory")
            .ok_or_else(|| WasmError::Invalid("exports no memory".into()))?;
        let alloc = instance.get_typed_func::<i32, i32>(&mut store, "serv_alloc").map_err(trapped)?;
        let run = instance.get_typed_func::<(i32, i32), i64>(&mut store, hook.export()).map_err(trapped)?;
        let len =
            i32::try_from(input.len()).map_err(|_| WasmError::Failed("input larger than 2 GiB".into()))?;
        let at = alloc.call(&mut store, len).map_err(trapped)?;
        memory
            .write(&mut store, at as u32 as usize, input)
            .map_err(|_| WasmError::Failed(format!("serv_alloc({len}) returned {at}, outside its memory")))?;
        let result = run.call(&mut store, (at, len)).map_err(trapped)?;
        if result < 0 {
            return Err(WasmError::Refused(result.unsigned_abs()));
        }
        let (out_at, out_len) = ((result >> 32) as usize, (result & 0xffff_ffff) as usize);
        if out_len > limits.max_output_bytes {
            return Err(WasmError::Failed(format!(
                "returned {out_len} bytes, more than the limit of {}",
                limits.max_output_bytes
            )));
        }
        let data = memory.data(&store);
        let output = data.get(out_at..out_at.saturating_add(out_len)).ok_or_else(|| {
            WasmError::Failed(format!("returned bytes {out_at}..+{out_len}, outside its memory"))
        })?;
        Ok(output.to_vec())
    }

    fn failure(&self, error: wasmtime::Error) -> WasmError {
        let limits = &self.inner.limits;
        match error.downcast_ref::<Trap>() {
            Some(Trap::OutOfFuel) => WasmError::OutOfFuel(limits.fuel),
            Some(Trap::Interrupt) => WasmError::Deadline(limits.deadline.as_millis() as u64),
            _ => {
                let text = format!("{error:#}");
                if text.contains("growing memory") || text.contains("exceeds memory limits") {
                    WasmError::MemoryLimit(limits.memory_bytes)
                } else {
                    WasmError::Failed(text)
                }
            }
        }
    }
}

/// The hooks `module` exports, once it is known to follow the ABI.
fn check_abi(module: &Module) -> Result<Vec<Hook>, WasmError> {
    if let Some(import) = module.imports().next() {
        return Err(WasmError::Invalid(format!(
            "imports {}.{}, but the host provides no imports",
            import.module(),
            import.name()
        )));
    }
    let engine = module.engine();
    let export = |name: &str| module.get_export(name);
    if !matches!(export("memory"), Some(ExternType::Memory(_))) {
        return Err(WasmError::Invalid("exports no memory named \"memory\"".into()));
    }
    let signature = |name: &str, expected: &FuncType| match export(name) {
        None => Ok(false),
        Some(ExternType::Func(found)) if FuncType::eq(&found, expected) => Ok(true),
        Some(_) => Err(WasmError::Invalid(format!("export {name} must be a function of type {expected}"))),
    };
    let alloc = FuncType::new(engine, [ValType::I32], [ValType::I32]);
    if !signature("serv_alloc", &alloc)? {
        return Err(WasmError::Invalid("exports no function serv_alloc (param i32) (result i32)".into()));
    }
    let hook = FuncType::new(engine, [ValType::I32, ValType::I32], [ValType::I64]);
    let mut hooks = Vec::new();
    for candidate in Hook::ALL {
        if signature(candidate.export(), &hook)? {
            hooks.push(candidate);
        }
    }
    if hooks.is_empty() {
        let names: Vec<_> = Hook::ALL.iter().map(|h| h.export()).collect();
        return Err(WasmError::Invalid(format!(
            "exports no hook: one of {} (param i32 i32) (result i64) is needed",
            names.join(", ")
        )));
    }
    Ok(hooks)
}

#[cfg(test)]
mod tests;
