;; A bad transform: never returns (stopped by fuel or the deadline).
(module
  (memory (export "memory") 1)
  (func (export "serv_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "serv_transform") (param i32 i32) (result i64)
    (loop $forever (br $forever))
    (i64.const 0)))
