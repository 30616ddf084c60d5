;; A tiny preview1 command used by the examples:
;;   upper IN_FD IN_PATH OUT_FD OUT_PATH
;; reads up to 64 KiB from IN_PATH (relative to preopen IN_FD, a digit),
;; upper-cases ASCII letters and writes the result to OUT_PATH (relative to
;; OUT_FD), creating or truncating it. Exit code 100 + errno on any error.
(module
  (import "wasi_snapshot_preview1" "args_sizes_get" (func $args_sizes_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_get" (func $args_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_open"
    (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_close" (func $fd_close (param i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  ;; 0 argc | 4 argv buffer size | 8 opened fd | 12 byte count | 16 iovec
  ;; 64 argv pointers | 2048 argv strings | 65536 data (64 KiB)
  (memory (export "memory") 2)
  (func $check (param $e i32)
    (if (local.get $e) (then (call $proc_exit (i32.add (local.get $e) (i32.const 100))))))
  ;; Pointer to argv[i].
  (func $arg (param $i i32) (result i32)
    (i32.load (i32.add (i32.const 64) (i32.mul (local.get $i) (i32.const 4)))))
  ;; Length of argv[i] (without its NUL).
  (func $len (param $i i32) (result i32)
    (if (result i32) (i32.eq (local.get $i) (i32.const 4))
      (then (i32.sub (i32.sub (i32.add (i32.const 2048) (i32.load (i32.const 4)))
                              (call $arg (local.get $i))) (i32.const 1)))
      (else (i32.sub (i32.sub (call $arg (i32.add (local.get $i) (i32.const 1)))
                              (call $arg (local.get $i))) (i32.const 1)))))
  (func $digit (param $i i32) (result i32)
    (i32.sub (i32.load8_u (call $arg (local.get $i))) (i32.const 48)))
  (func (export "_start")
    (local $fd i32) (local $n i32) (local $i i32) (local $b i32)
    (call $check (call $args_sizes_get (i32.const 0) (i32.const 4)))
    (if (i32.ne (i32.load (i32.const 0)) (i32.const 5)) (then (call $proc_exit (i32.const 2))))
    (if (i32.gt_u (i32.load (i32.const 4)) (i32.const 4096)) (then (call $proc_exit (i32.const 3))))
    (call $check (call $args_get (i32.const 64) (i32.const 2048)))
    ;; read the input (rights: fd_read)
    (call $check (call $path_open (call $digit (i32.const 1)) (i32.const 1)
      (call $arg (i32.const 2)) (call $len (i32.const 2))
      (i32.const 0) (i64.const 2) (i64.const 2) (i32.const 0) (i32.const 8)))
    (local.set $fd (i32.load (i32.const 8)))
    (i32.store (i32.const 16) (i32.const 65536))
    (i32.store (i32.const 20) (i32.const 65536))
    (call $check (call $fd_read (local.get $fd) (i32.const 16) (i32.const 1) (i32.const 12)))
    (local.set $n (i32.load (i32.const 12)))
    (call $check (call $fd_close (local.get $fd)))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
        (local.set $b (i32.load8_u (i32.add (i32.const 65536) (local.get $i))))
        (if (i32.and (i32.ge_u (local.get $b) (i32.const 97)) (i32.le_u (local.get $b) (i32.const 122)))
          (then (i32.store8 (i32.add (i32.const 65536) (local.get $i)) (i32.sub (local.get $b) (i32.const 32)))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    ;; write the output: O_CREAT|O_TRUNC, rights fd_write
    (call $check (call $path_open (call $digit (i32.const 3)) (i32.const 1)
      (call $arg (i32.const 4)) (call $len (i32.const 4))
      (i32.const 9) (i64.const 64) (i64.const 64) (i32.const 0) (i32.const 8)))
    (local.set $fd (i32.load (i32.const 8)))
    (i32.store (i32.const 20) (local.get $n))
    (call $check (call $fd_write (local.get $fd) (i32.const 16) (i32.const 1) (i32.const 12)))
    (call $check (call $fd_close (local.get $fd))))
)
