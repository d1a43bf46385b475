use std::time::{Duration, Instant};

use super::*;

const UPPER: &str = include_str!("../../tests/wasm/upper.wat");
const SPIN: &str = include_str!("../../tests/wasm/spin.wat");
const HUNGRY: &str = include_str!("../../tests/wasm/hungry.wat");
const GATE: &str = include_str!("../../tests/wasm/gate.wat");

fn host(limits: Limits) -> WasmHost {
    WasmHost::new(limits).expect("engine starts")
}

#[test]
fn a_transform_rewrites_its_input_and_may_refuse_it() {
    let host = host(Limits::default());
    let upper = host.compile(UPPER.as_bytes()).expect("compiles");
    assert_eq!(upper.hooks, vec![Hook::Transform]);
    assert_eq!(host.call(&upper, Hook::Transform, b"hello, World 42").unwrap(), b"HELLO, WORLD 42");
    assert_eq!(host.call(&upper, Hook::Transform, b"").unwrap(), b"");
    // An input larger than the module's first page makes it grow its memory.
    let big = vec![b'x'; 300_000];
    assert_eq!(host.call(&upper, Hook::Transform, &big).unwrap(), vec![b'X'; 300_000]);
    assert_eq!(host.call(&upper, Hook::Transform, b"!no"), Err(WasmError::Refused(33)));
    // A hook the module lacks is an error, not a crash.
    assert!(matches!(host.call(&upper, Hook::Request, b"GET /\n"), Err(WasmError::Failed(_))));
}

#[test]
fn text_and_binary_of_one_module_share_a_hash_and_a_compilation() {
    let host = host(Limits::default());
    let from_text = host.compile(UPPER.as_bytes()).unwrap();
    let binary = wat::parse_str(UPPER).unwrap();
    let from_binary = host.compile(&binary).unwrap();
    assert!(Arc::ptr_eq(&from_text, &from_binary));
    assert_eq!(from_text.hash, blake3::hash(&binary).to_hex().to_string());
    assert_eq!(*from_text.wasm, binary);
    assert!(host.cached(&from_text.hash).is_some());
}

#[test]
fn a_module_that_never_returns_is_stopped_by_fuel_or_by_its_deadline() {
    let fuel = host(Limits { fuel: 1_000_000, ..Limits::default() });
    let spin = fuel.compile(SPIN.as_bytes()).unwrap();
    assert_eq!(fuel.call(&spin, Hook::Transform, b"x"), Err(WasmError::OutOfFuel(1_000_000)));

    let deadline = Limits { fuel: u64::MAX, deadline: Duration::from_millis(50), ..Limits::default() };
    let clock = host(deadline);
    let spin = clock.compile(SPIN.as_bytes()).unwrap();
    let started = Instant::now();
    assert_eq!(clock.call(&spin, Hook::Transform, b"x"), Err(WasmError::Deadline(50)));
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(50) && took < Duration::from_secs(2), "stopped after {took:?}");
    // The host is still good for the next call.
    let upper = clock.compile(UPPER.as_bytes()).unwrap();
    assert_eq!(clock.call(&upper, Hook::Transform, b"ok").unwrap(), b"OK");
}

#[test]
fn a_module_that_grows_past_its_memory_limit_is_stopped() {
    let host = host(Limits { memory_bytes: 4 * 1024 * 1024, ..Limits::default() });
    let hungry = host.compile(HUNGRY.as_bytes()).unwrap();
    assert_eq!(host.call(&hungry, Hook::Transform, b"x"), Err(WasmError::MemoryLimit(4 * 1024 * 1024)));
    // An input the limit cannot hold fails the same way.
    let upper = host.compile(UPPER.as_bytes()).unwrap();
    let big = vec![b'a'; 5 * 1024 * 1024];
    assert_eq!(host.call(&upper, Hook::Transform, &big), Err(WasmError::MemoryLimit(4 * 1024 * 1024)));
}

#[test]
fn a_request_hook_sees_the_head_and_may_add_to_it_or_refuse_it() {
    let host = host(Limits::default());
    let gate = host.compile(GATE.as_bytes()).unwrap();
    assert_eq!(gate.hooks, vec![Hook::Request, Hook::Response]);
    let open = b"GET /x\nhost: a\nx-key: open\n";
    let out = host.call(&gate, Hook::Request, open).unwrap();
    assert_eq!(out, b"GET /x\nhost: a\nx-key: open\nx-gate: passed\n");
    assert_eq!(host.call(&gate, Hook::Request, b"GET /x\nx-key: shut\n"), Err(WasmError::Refused(401)));
    let answer = host.call(&gate, Hook::Response, b"200\ncontent-length: 2\n").unwrap();
    assert_eq!(answer, b"200\ncontent-length: 2\nx-gate: passed\n");
}

#[test]
fn an_output_outside_memory_or_over_the_limit_is_refused() {
    let outside = r#"(module (memory (export "memory") 1)
        (func (export "serv_alloc") (param i32) (result i32) (i32.const 0))
        (func (export "serv_transform") (param i32 i32) (result i64) (i64.const 0x0000ffff00000004)))"#;
    let host = host(Limits { max_output_bytes: 8, ..Limits::default() });
    let module = host.compile(outside.as_bytes()).unwrap();
    let Err(WasmError::Failed(why)) = host.call(&module, Hook::Transform, b"") else { panic!() };
    assert!(why.contains("outside its memory"), "{why}");
    let upper = host.compile(UPPER.as_bytes()).unwrap();
    let Err(WasmError::Failed(why)) = host.call(&upper, Hook::Transform, b"more than 8") else { panic!() };
    assert!(why.contains("more than the limit of 8"), "{why}");
}

#[test]
fn modules_outside_the_abi_are_refused_with_the_reason() {
    let host = host(Limits::default());
    let refused = |text: &str| match host.compile(text.as_bytes()) {
        Err(WasmError::Invalid(why)) => why,
        other => panic!("{text} gave {other:?}"),
    };
    assert!(refused("not wasm at all").contains("expected"));
    let imports = r#"(module (import "env" "f" (func)) (memory (export "memory") 1))"#;
    assert!(refused(imports).contains("imports env.f"));
    assert!(refused("(module)").contains("no memory"));
    let no_alloc = r#"(module (memory (export "memory") 1))"#;
    assert!(refused(no_alloc).contains("serv_alloc"));
    let no_hook = r#"(module (memory (export "memory") 1)
        (func (export "serv_alloc") (param i32) (result i32) (i32.const 0)))"#;
    assert!(refused(no_hook).contains("exports no hook"));
    let bad_hook = r#"(module (memory (export "memory") 1)
        (func (export "serv_alloc") (param i32) (result i32) (i32.const 0))
        (func (export "serv_transform") (param i32) (result i32) (i32.const 0)))"#;
    assert!(refused(bad_hook).contains("serv_transform must be a function of type"));
}
