;; A bad transform: grows its memory until it is stopped.
(module
  (memory (export "memory") 1)
  (func (export "serv_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "serv_transform") (param i32 i32) (result i64)
    (loop $more
      (drop (memory.grow (i32.const 16)))
      (br $more))
    (i64.const 0)))
