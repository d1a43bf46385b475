//! What one module call costs: compiling `tests/wasm/upper.wat`, then calls of its transform on
//! bodies of several sizes, each in a fresh instance with the default limits, on one thread.
//! Figures are printed, never asserted. Run: `cargo bench -p serv-wasm-host --bench calls`.

use std::time::{Duration, Instant};

use serv_wasm_host::{Hook, Limits, WasmHost};

fn main() {
    let host = WasmHost::new(Limits::default()).expect("engine");
    let text = include_str!("../../tests/wasm/upper.wat");
    let started = Instant::now();
    let module = host.compile(text.as_bytes()).expect("compiles");
    println!(
        "compile upper.wat: {:.2} ms (then cached by content hash)",
        started.elapsed().as_secs_f64() * 1e3
    );
    println!("{:>10} {:>12} {:>10} {:>10}", "body", "calls/s", "us/call", "MB/s");
    for size in [64usize, 1024, 16 * 1024, 256 * 1024] {
        let body = vec![b'a'; size];
        let budget = Duration::from_secs(2);
        let started = Instant::now();
        let mut calls = 0u64;
        while started.elapsed() < budget {
            let out = host.call(&module, Hook::Transform, &body).expect("call");
            assert_eq!(out.len(), size);
            calls += 1;
        }
        let secs = started.elapsed().as_secs_f64();
        println!(
            "{:>10} {:>12.0} {:>10.1} {:>10.1}",
            size,
            calls as f64 / secs,
            secs * 1e6 / calls as f64,
            (calls as f64 * size as f64) / secs / 1e6
        );
    }
}
