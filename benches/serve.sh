#!/usr/bin/env bash
# `cowvfs serve` under load (issue #16): POST /v1/run of a trivial preview1
# guest over loopback HTTP, driven by the `wrk` load generator (C, one
# thread, closed loop; benches/serve.lua) with 1, 8 and 32 connections, from a base of 100,000 files + 1 GiB; then the same
# request done the usual way (copy the base directory on tmpfs, run the
# guest with stock wasmtime-wasi on the copy: examples/stock_wasi_baseline.rs);
# then the server's resident memory holding 10,000 saved snapshots, each one
# small change away from the base.
#
#   benches/serve.sh [SECONDS_PER_LOAD_RUN (default 10)] [BASELINE_REQUESTS (default 5)]
#
# The base: 100 directories of 1,000 small distinct files, and one 1 GiB
# file made of a 1 MiB random block repeated 1,024 times. That file is cheap
# to build and to hold: its chunks are the same 1 MiB over and over, so the
# checkpoint and the server hold each once (the baseline's `cp -a`, having no
# dedup, copies the whole GiB each time, as a user's copy would).
#
# The guest (below) fills 8 bytes from random_get, writes them to
# /note.txt (creating it) and prints "ok": a real file-system change per
# request, distinct per request, so 10,000 saves are 10,000 snapshots.
#
# Needs wrk (Debian package; installed with apt-get if missing), curl,
# python3 and tmpfs at /dev/shm. Set CARGO_LOCK=FILE to build under
# `flock FILE` (shared build machines).
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-10}"
baseline_n="${2:-5}"
target="${CARGO_TARGET_DIR:-$HOME/.cache/cowvfs-target}"
say() { echo "serve.sh: $*" >&2; }
if ! command -v wrk >/dev/null; then
    say "installing wrk (apt-get install -y wrk)"
    apt-get install -y wrk >/dev/null 2>&1 ||
        { apt-get update >/dev/null 2>&1 && apt-get install -y wrk >/dev/null 2>&1; } ||
        { say "wrk is missing; install it with: apt-get install -y wrk"; exit 1; }
fi
for tool in curl python3; do
    command -v "$tool" >/dev/null ||
        { say "$tool is missing; install it with: apt-get install -y $tool"; exit 1; }
done
[ -d /dev/shm ] || { say "needs tmpfs at /dev/shm"; exit 1; }

${CARGO_LOCK:+flock "$CARGO_LOCK"} cargo build --release --quiet \
    --bin cowvfs --example stock_wasi_baseline
cowvfs="$target/release/cowvfs"
baseline="$target/release/examples/stock_wasi_baseline"

work=$(mktemp -d /dev/shm/cowvfs-serve-bench-XXXXXX)
server_pid=""
cleanup() {
    [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

cat >"$work/trivial.wat" <<'EOF'
(module
  (import "wasi_snapshot_preview1" "random_get" (func $random_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_open"
    (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_close" (func $fd_close (param i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 1024) "note.txt")
  (data (i32.const 1040) "ok\n")
  (func $check (param $e i32)
    (if (local.get $e) (then (call $proc_exit (i32.add (local.get $e) (i32.const 100))))))
  (func (export "_start") (local $fd i32)
    (call $check (call $random_get (i32.const 100) (i32.const 8)))
    ;; note.txt in the preopen (fd 3): O_CREAT|O_TRUNC, rights fd_write
    (call $check (call $path_open (i32.const 3) (i32.const 0) (i32.const 1024) (i32.const 8)
                                  (i32.const 9) (i64.const 64) (i64.const 64) (i32.const 0) (i32.const 8)))
    (local.set $fd (i32.load (i32.const 8)))
    (i32.store (i32.const 16) (i32.const 100))
    (i32.store (i32.const 20) (i32.const 8))
    (call $check (call $fd_write (local.get $fd) (i32.const 16) (i32.const 1) (i32.const 12)))
    (call $check (call $fd_close (local.get $fd)))
    (i32.store (i32.const 16) (i32.const 1040))
    (i32.store (i32.const 20) (i32.const 3))
    (call $check (call $fd_write (i32.const 1) (i32.const 16) (i32.const 1) (i32.const 12)))))
EOF

say "building the base (100,000 files + 1 GiB) in $work/base"
python3 - "$work/base" <<'EOF'
import os, sys
base = sys.argv[1]
for d in range(100):
    dd = os.path.join(base, "src", f"d{d:03}")
    os.makedirs(dd)
    for f in range(1000):
        with open(os.path.join(dd, f"f{f:03}.txt"), "w") as fh:
            fh.write(f"file {d}/{f}\n")
block = os.urandom(1 << 20)
with open(os.path.join(base, "data.bin"), "wb") as fh:
    for _ in range(1024):
        fh.write(block)
EOF
t0=$(date +%s.%N)
"$cowvfs" checkpoint import "$work/base" "$work/base.ckpt" >/dev/null
t1=$(date +%s.%N)
say "checkpoint: $(stat -c %s "$work/base.ckpt") bytes, imported in $(python3 -c "print(f'{$t1-$t0:.1f}')") s"

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

"$cowvfs" serve --listen 127.0.0.1:0 >"$work/server.out" 2>"$work/server.err" &
server_pid=$!
for _ in $(seq 100); do
    grep -q "listening on" "$work/server.out" 2>/dev/null && break
    sleep 0.1
done
url=$(sed -n 's/^cowvfs serve: listening on //p' "$work/server.out" | head -1)
[ -n "$url" ] || { say "the server did not start:"; cat "$work/server.err" >&2; exit 1; }
rss_empty=$(rss_kib "$server_pid")

curl -sf -X PUT --data-binary @"$work/trivial.wat" "$url/v1/modules/trivial" >/dev/null
curl -sf -X PUT --data-binary @"$work/base.ckpt" -H 'content-type: application/octet-stream' \
    "$url/v1/snapshots/base" >/dev/null
# The base is opened lazily: one run reads nothing of data.bin, so read
# one file of it all the way to have every chunk in memory once.
curl -sf "$url/v1/snapshots/base/files/data.bin" -o /dev/null
rss_base=$(rss_kib "$server_pid")

body='{"base":"base","module":"trivial","args":["x"]}'
check=$(curl -sf -X POST -H 'content-type: application/json' -d "$body" "$url/v1/run")
python3 -c 'import json,sys; v=json.loads(sys.argv[1]); assert v["exit_code"]==0 and v["stdout"]=="ok\n", v' "$check" ||
    { say "the trivial run failed: $check"; exit 1; }

load=$(cut -d' ' -f1-3 /proc/loadavg)
building=$(pgrep -c rustc || true)
echo "== cowvfs serve: POST /v1/run, trivial guest, base of 100,000 files + 1 GiB"
echo "   $(nproc) cores, load average $load, rustc processes running: $building"
echo "   WRK_BODY='$body' wrk -t1 -c C -d${secs}s -s benches/serve.lua $url/v1/run"
# wrk records every latency to the microsecond; serve.lua prints the
# percentiles and counts as one STATS line.
load() { # CONNECTIONS SECONDS BODY
    WRK_BODY="$3" wrk -t1 -c "$1" -d "${2}s" -s benches/serve.lua "$url/v1/run" |
        sed -n 's/^STATS //p'
}
row() { # CONNECTIONS STATS
    python3 - "$1" "$2" <<'EOF'
import sys
c, kv = sys.argv[1], dict(x.split("=") for x in sys.argv[2].split())
n, secs = int(kv["requests"]), int(kv["duration_us"]) / 1e6
bad = int(kv["non_2xx"]) + int(kv["socket_errors"])
print(f"{c:>8} {int(kv['p50_us']) / 1e3:>10.3f} {int(kv['p99_us']) / 1e3:>10.3f} {n / secs:>10.0f} {n:>10} {bad:>8}")
EOF
}
printf "%8s %10s %10s %10s %10s %8s\n" clients p50_ms p99_ms req_per_s requests non_200
load 8 2 "$body" >/dev/null
for c in 1 8 32; do
    row "$c" "$(load "$c" "$secs" "$body")"
done
echo "   server's own count of runs by outcome (every one should be ok):"
curl -sf "$url/metrics" | grep '^cowvfs_runs_total' | sed 's/^/     /'

echo "== baseline: per request cp -a of the base on tmpfs + stock wasmtime-wasi (preview1) on the copy"
"$baseline" "$work/base" "$work/trivial.wat" "$baseline_n" | tee "$work/baseline.out"
base_p50=$(sed -n 's/.*baseline p50_ms=\([0-9.]*\).*/\1/p' "$work/baseline.out")
p50_c1=$(load 1 3 "$body" | sed -n 's/.*p50_us=\([0-9]*\).*/\1/p' |
    awk '{printf "%.3f", $1 / 1000}')
echo "   cowvfs serve p50 at 1 client (HTTP included): $p50_c1 ms; ratio baseline/cowvfs: $(python3 -c "print(f'{$base_p50/$p50_c1:,.0f}x')")"

echo "== memory: 10,000 runs with save:true from the base, each snapshot kept"
save='{"base":"base","module":"trivial","args":["x"],"save":true}'
charged_before=$(curl -sf "$url/v1/snapshots" | python3 -c 'import json,sys; print(json.load(sys.stdin)["memory_bytes"])')
# 8 keep-alive clients, 1,250 requests each (wrk runs for a time, not a
# count).
python3 - "$url" "$save" <<'EOF' || { say "not every save answered 200"; exit 1; }
import http.client, sys, threading, urllib.parse
url, body = urllib.parse.urlsplit(sys.argv[1]), sys.argv[2].encode()
bad = []
def client():
    c = http.client.HTTPConnection(url.hostname, url.port)
    for _ in range(1250):
        c.request("POST", "/v1/run", body, {"Content-Type": "application/json"})
        r = c.getresponse()
        text = r.read()
        if r.status != 200 or b'"snapshot"' not in text:
            bad.append((r.status, text[:200]))
threads = [threading.Thread(target=client) for _ in range(8)]
for t in threads: t.start()
for t in threads: t.join()
if bad:
    print(f"{len(bad)} saves failed, first: {bad[0]}", file=sys.stderr)
    sys.exit(1)
EOF
rss_saved=$(rss_kib "$server_pid")
curl -sf "$url/v1/snapshots" | python3 -c '
import json, sys
v = json.load(sys.stdin)
held = [s for s in v["snapshots"] if s["held"]]
saved = [s for s in held if not s["names"]]
mib = v["memory_bytes"] / 2**20
saves = (v["memory_bytes"] - int(sys.argv[1])) / 2**20
print(f"   snapshots held in memory: {len(held)} ({len(saved)} unnamed saves); "
      f"accounted snapshot memory {mib:.1f} MiB, of which the saves {saves:.1f} MiB")
assert len(saved) >= 10000, "fewer than 10,000 saved snapshots are held"
' "$charged_before"
echo "   accounted before the saves (the base): $((charged_before / 1048576)) MiB"
echo "   server VmRSS: empty $((rss_empty / 1024)) MiB, with the base read $((rss_base / 1024)) MiB, with 10,000 saves $((rss_saved / 1024)) MiB (+$(((rss_saved - rss_base) / 1024)) MiB)"
