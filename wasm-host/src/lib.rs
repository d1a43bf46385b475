//! Serv WASM host (to come): one shared wasmtime engine with a compiled-module cache, modules
//! stored by content hash and swapped atomically, and every call bounded by fuel, a memory limit
//! and an epoch deadline, so a bad module costs its caller an error and never the node. Hooks:
//! topic message transforms, object transforms and gateway middleware.
