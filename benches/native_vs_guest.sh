#!/usr/bin/env bash
# The physical reference: the WASI benchmark's guest (tests/guests/bench_io.c:
# 64 MiB written in 64 KiB blocks and read back four times, then 5,000 small
# files created, stat'ed, listed and unlinked) as a native program compiled
# with gcc -O2 on tmpfs, against the same source compiled to wasm32-wasip1 and
# run by `cowvfs run` with its tree in memory (native preview1), compilation
# cache warm. Timed as whole processes with hyperfine.
#
#   benches/native_vs_guest.sh [HYPERFINE ARGS...]
#
# Installs what it needs: hyperfine (Debian package) and the guest toolchain
# (tests/guests/build.sh); a tool that cannot be installed is an error that
# names it.
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-$HOME/.cache/cowvfs-target}"
if ! command -v hyperfine >/dev/null; then
    echo "native_vs_guest: installing hyperfine (apt-get install -y hyperfine)"
    apt-get install -y hyperfine >/dev/null 2>&1 ||
        { apt-get update >/dev/null 2>&1 && apt-get install -y hyperfine >/dev/null 2>&1; } ||
        { echo "native_vs_guest: hyperfine is missing; install it with: apt-get install -y hyperfine" >&2; exit 1; }
fi
command -v gcc >/dev/null ||
    { echo "native_vs_guest: gcc is missing; install it with: apt-get install -y gcc" >&2; exit 1; }
[ -d /dev/shm ] || { echo "native_vs_guest: needs tmpfs at /dev/shm" >&2; exit 1; }

cargo build --release --quiet --bin cowvfs
work="$target/native-vs-guest"
mkdir -p "$work"
tests/guests/build.sh "$work/guests"
gcc -O2 -o "$work/bench_io_native" -Itests/guests tests/guests/bench_io.c
shm=$(mktemp -d /dev/shm/cowvfs-native-XXXXXX)
trap 'rm -rf "$shm"' EXIT

hyperfine --warmup 3 --min-runs 20 -N "$@" \
    -n "native gcc -O2 on tmpfs" "$work/bench_io_native $shm" \
    -n "wasm guest, cowvfs run (memory tree)" \
    "$target/release/cowvfs run --preopen / $work/guests/bench_io.wasm /"
