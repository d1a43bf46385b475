;; A gateway middleware: serv_request lets a request through only if its head holds the line
;; "x-key: open", and then adds the header "x-gate: passed"; it refuses any other with 401.
;; serv_response adds "x-gate: passed" to the upstream's answer.
(module
  (memory (export "memory") 1)
  (data (i32.const 0) "\nx-key: open\n")
  (data (i32.const 16) "x-gate: passed\n")
  (func (export "serv_alloc") (param $len i32) (result i32)
    (local $need i32)
    (local.set $need
      (i32.sub (i32.add (i32.shr_u (i32.add (local.get $len) (i32.const 1088)) (i32.const 16)) (i32.const 1))
               (memory.size)))
    (if (i32.gt_s (local.get $need) (i32.const 0))
      (then (drop (memory.grow (local.get $need)))))
    (i32.const 1024))
  ;; Whether the 13 bytes at 0 occur in [ptr, ptr+len).
  (func $has_key (param $ptr i32) (param $len i32) (result i32)
    (local $at i32) (local $k i32)
    (block $none
      (loop $start
        (br_if $none (i32.gt_u (i32.add (local.get $at) (i32.const 13)) (local.get $len)))
        (local.set $k (i32.const 0))
        (block $mismatch
          (loop $byte
            (br_if $mismatch
              (i32.ne (i32.load8_u (i32.add (i32.add (local.get $ptr) (local.get $at)) (local.get $k)))
                      (i32.load8_u (local.get $k))))
            (local.set $k (i32.add (local.get $k) (i32.const 1)))
            (if (i32.eq (local.get $k) (i32.const 13)) (then (return (i32.const 1))))
            (br $byte)))
        (local.set $at (i32.add (local.get $at) (i32.const 1)))
        (br $start)))
    (i32.const 0))
  ;; The head at [ptr, ptr+len) with "x-gate: passed\n" after it.
  (func $passed (param $ptr i32) (param $len i32) (result i64)
    (memory.copy (i32.add (local.get $ptr) (local.get $len)) (i32.const 16) (i32.const 15))
    (i64.or (i64.shl (i64.extend_i32_u (local.get $ptr)) (i64.const 32))
            (i64.extend_i32_u (i32.add (local.get $len) (i32.const 15)))))
  (func (export "serv_request") (param $ptr i32) (param $len i32) (result i64)
    (if (i32.eqz (call $has_key (local.get $ptr) (local.get $len)))
      (then (return (i64.const -401))))
    (call $passed (local.get $ptr) (local.get $len)))
  (func (export "serv_response") (param $ptr i32) (param $len i32) (result i64)
    (call $passed (local.get $ptr) (local.get $len))))
