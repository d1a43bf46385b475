;; A topic transform: upper-cases ASCII letters; refuses a body starting with "!" (code 33).
(module
  (memory (export "memory") 1)
  ;; Every call runs in a fresh instance: input goes at 1024, after room for a little data.
  (func (export "serv_alloc") (param $len i32) (result i32)
    (local $need i32)
    (local.set $need
      (i32.sub (i32.add (i32.shr_u (i32.add (local.get $len) (i32.const 1024)) (i32.const 16)) (i32.const 1))
               (memory.size)))
    (if (i32.gt_s (local.get $need) (i32.const 0))
      (then (drop (memory.grow (local.get $need)))))
    (i32.const 1024))
  (func (export "serv_transform") (param $ptr i32) (param $len i32) (result i64)
    (local $i i32) (local $c i32)
    (if (i32.and (i32.gt_u (local.get $len) (i32.const 0))
                 (i32.eq (i32.load8_u (local.get $ptr)) (i32.const 33)))
      (then (return (i64.const -33))))
    (block $done
      (loop $each
        (br_if $done (i32.ge_u (local.get $i) (local.get $len)))
        (local.set $c (i32.load8_u (i32.add (local.get $ptr) (local.get $i))))
        (if (i32.and (i32.ge_u (local.get $c) (i32.const 97)) (i32.le_u (local.get $c) (i32.const 122)))
          (then (i32.store8 (i32.add (local.get $ptr) (local.get $i)) (i32.sub (local.get $c) (i32.const 32)))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $each)))
    (i64.or (i64.shl (i64.extend_i32_u (local.get $ptr)) (i64.const 32)) (i64.extend_i32_u (local.get $len)))))
