;; A bad module: never returns (stopped by fuel or the deadline), as a transform or a middleware.
(module
  (memory (export "memory") 1)
  (func (export "serv_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "serv_transform") (export "serv_request") (param i32 i32) (result i64)
    (loop $forever (br $forever))
    (i64.const 0)))
