;; A topic transform: reverses the body's bytes (a second version to swap to).
(module
  (memory (export "memory") 1)
  (func (export "serv_alloc") (param $len i32) (result i32)
    (local $need i32)
    (local.set $need
      (i32.sub (i32.add (i32.shr_u (i32.add (local.get $len) (i32.const 1024)) (i32.const 16)) (i32.const 1))
               (memory.size)))
    (if (i32.gt_s (local.get $need) (i32.const 0))
      (then (drop (memory.grow (local.get $need)))))
    (i32.const 1024))
  (func (export "serv_transform") (param $ptr i32) (param $len i32) (result i64)
    (local $i i32) (local $j i32) (local $c i32)
    (local.set $j (i32.sub (i32.add (local.get $ptr) (local.get $len)) (i32.const 1)))
    (local.set $i (local.get $ptr))
    (block $done
      (loop $each
        (br_if $done (i32.ge_s (local.get $i) (local.get $j)))
        (local.set $c (i32.load8_u (local.get $i)))
        (i32.store8 (local.get $i) (i32.load8_u (local.get $j)))
        (i32.store8 (local.get $j) (local.get $c))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (local.set $j (i32.sub (local.get $j) (i32.const 1)))
        (br $each)))
    (i64.or (i64.shl (i64.extend_i32_u (local.get $ptr)) (i64.const 32)) (i64.extend_i32_u (local.get $len)))))
