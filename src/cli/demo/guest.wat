;; The guest every demo sandbox runs, as a preview1 module: it writes its
;; first argument into /app/notes/note.txt (creating or truncating it) and
;; over bytes 1,000,000.. of the shared /app/data/blob.bin.
(module
  (import "wasi_snapshot_preview1" "args_sizes_get" (func $args_sizes_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_get" (func $args_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_open"
    (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_pwrite" (func $fd_pwrite (param i32 i32 i32 i64 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_close" (func $fd_close (param i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 1024) "app/notes/note.txt")
  (data (i32.const 1056) "app/data/blob.bin")
  ;; Any error ends the guest with exit code 100 + errno.
  (func $check (param $e i32)
    (if (local.get $e) (then (call $proc_exit (i32.add (local.get $e) (i32.const 100))))))
  (func (export "_start")
    (local $arg i32) (local $len i32) (local $fd i32)
    (call $check (call $args_sizes_get (i32.const 0) (i32.const 4)))
    (if (i32.ne (i32.load (i32.const 0)) (i32.const 2)) (then (call $proc_exit (i32.const 2))))
    (if (i32.gt_u (i32.load (i32.const 4)) (i32.const 4096)) (then (call $proc_exit (i32.const 3))))
    (call $check (call $args_get (i32.const 64) (i32.const 2048)))
    (local.set $arg (i32.load (i32.const 68)))
    (local.set $len (i32.sub (i32.sub (i32.add (i32.const 2048) (i32.load (i32.const 4)))
                                      (local.get $arg)) (i32.const 1)))
    (i32.store (i32.const 16) (local.get $arg))
    (i32.store (i32.const 20) (local.get $len))
    ;; note.txt: O_CREAT|O_TRUNC, rights fd_read|fd_write
    (call $check (call $path_open (i32.const 3) (i32.const 1) (i32.const 1024) (i32.const 18)
                                  (i32.const 9) (i64.const 66) (i64.const 66) (i32.const 0) (i32.const 8)))
    (local.set $fd (i32.load (i32.const 8)))
    (call $check (call $fd_write (local.get $fd) (i32.const 16) (i32.const 1) (i32.const 12)))
    (call $check (call $fd_close (local.get $fd)))
    ;; blob.bin: overwrite at offset 1,000,000
    (call $check (call $path_open (i32.const 3) (i32.const 1) (i32.const 1056) (i32.const 17)
                                  (i32.const 0) (i64.const 66) (i64.const 66) (i32.const 0) (i32.const 8)))
    (local.set $fd (i32.load (i32.const 8)))
    (call $check (call $fd_pwrite (local.get $fd) (i32.const 16) (i32.const 1) (i64.const 1000000)
                                  (i32.const 12)))
    (call $check (call $fd_close (local.get $fd))))
)
