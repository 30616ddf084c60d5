#!/usr/bin/env bash
# Builds every C test guest of cowvfs (tests/guests/*.c) into a
# wasm32-wasip1 core module: OUT_DIR/<name>.wasm.
#
#   tests/guests/build.sh OUT_DIR
#   tests/guests/build.sh --install-toolchain    (only make sure the
#                                                 toolchain is there)
#
# The toolchain is Debian's: clang-19, lld-19 (wasm-ld), wasi-libc and the
# wasm32 compiler-rt builtins. Whatever is missing is installed with
# apt-get (running `apt-get update` first when the install fails); when it
# cannot be, the build fails and says which tool and which command.
#
# Every guest is linked with the small runtime in rt/ (see the comments
# there: a malloc-based cabi_realloc for the preview1 adapter and correct
# utimensat/futimens for this wasi-libc). A guest that includes "sqlite3.h"
# also gets the SQLite amalgamation, taken from the crates.io crate
# libsqlite3-sys through cargo and compiled once.
#
# Incremental: a guest is rebuilt only when the stamp of what goes into it
# (its source, every .h here, rt/, this script, the flags, SQLite's object)
# changed. Runs on the same OUT_DIR are serialized with a lock.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
me="tests/guests/build.sh"
die() {
    echo "$me: $*" >&2
    exit 1
}

[ $# -eq 1 ] || die "usage: $me OUT_DIR | --install-toolchain"
CC=clang-19
WASI_INC=/usr/include/wasm32-wasi
WASI_LIB=/usr/lib/wasm32-wasi
PACKAGES=(clang-19 lld-19 wasi-libc libclang-rt-19-dev-wasm32)
INSTALL="apt-get install -y ${PACKAGES[*]}"

# What is missing, one "tool (package)" per line.
missing() {
    command -v "$CC" >/dev/null || echo "clang-19 (package clang-19)"
    [ -x /usr/lib/llvm-19/bin/wasm-ld ] || echo "wasm-ld (package lld-19)"
    { [ -f "$WASI_LIB/libc.a" ] && [ -f "$WASI_LIB/crt1.o" ] && [ -f "$WASI_INC/wasi/api.h" ]; } ||
        echo "wasi-libc (package wasi-libc)"
    if command -v "$CC" >/dev/null; then
        local rt
        rt="$("$CC" --target=wasm32-wasi -print-libgcc-file-name 2>/dev/null || true)"
        [ -n "$rt" ] && [ -f "$rt" ] ||
            echo "wasm32 compiler-rt builtins (package libclang-rt-19-dev-wasm32)"
    fi
}

need="$(missing)"
if [ -n "$need" ]; then
    echo "$me: installing the guest toolchain: ${PACKAGES[*]}" >&2
    command -v apt-get >/dev/null ||
        die "missing $(echo "$need" | paste -sd, -) and no apt-get to install it; install it with: $INSTALL"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y "${PACKAGES[@]}" >&2; then
        apt-get update >&2 || true
        apt-get install -y "${PACKAGES[@]}" >&2 ||
            die "could not install $(echo "$need" | paste -sd, -); install it with: apt-get update && $INSTALL"
    fi
    need="$(missing)"
    [ -z "$need" ] ||
        die "still missing after the install: $(echo "$need" | paste -sd, -); install it with: $INSTALL"
fi
command -v sha256sum >/dev/null || die "missing sha256sum; install it with: apt-get install -y coreutils"
[ "$1" != --install-toolchain ] || exit 0

mkdir -p "$1"
out="$(cd "$1" && pwd)"
exec 9>"$out/.lock"
flock 9

CFLAGS=(--target=wasm32-wasi -nostdlibinc -isystem "$WASI_INC" -O2
    -D_WASI_EMULATED_MMAN -D_WASI_EMULATED_SIGNAL
    -D_WASI_EMULATED_PROCESS_CLOCKS -D_WASI_EMULATED_GETPID)
LDFLAGS=(-nostartfiles "$WASI_LIB/crt1.o" -L"$WASI_LIB" -Wl,--strip-debug
    -lwasi-emulated-mman -lwasi-emulated-signal
    -lwasi-emulated-process-clocks -lwasi-emulated-getpid)
SQLITE_FLAGS=(-DSQLITE_THREADSAFE=0 -DSQLITE_OMIT_LOAD_EXTENSION
    -DSQLITE_TEMP_STORE=3 -DSQLITE_MAX_MMAP_SIZE=0 -DSQLITE_OMIT_WAL)
SQLITE_CRATE=libsqlite3-sys
SQLITE_VERSION=0.30.1

stamp_of() { cat "$@" | sha256sum | cut -d' ' -f1; }

# The SQLite amalgamation's directory, fetched through cargo into the
# registry (Debian's libsqlite3-dev has no C sources).
sqlite_dir() {
    local fetch="$out/sqlite-fetch"
    mkdir -p "$fetch/src"
    cat >"$fetch/Cargo.toml" <<EOF
[package]
name = "cowvfs-guest-sqlite-fetch"
version = "0.0.0"
edition = "2021"
publish = false

[dependencies]
$SQLITE_CRATE = { version = "=$SQLITE_VERSION", default-features = false }

[workspace]
EOF
    : >"$fetch/src/lib.rs"
    command -v cargo >/dev/null ||
        die "missing cargo (needed to fetch the SQLite amalgamation from crate $SQLITE_CRATE); install it with: apt-get install -y cargo"
    local meta manifest
    meta="$(cargo metadata --format-version 1 --manifest-path "$fetch/Cargo.toml")" ||
        die "cargo could not fetch crate $SQLITE_CRATE =$SQLITE_VERSION (the SQLite amalgamation)"
    manifest="$(grep -o "\"manifest_path\":\"[^\"]*/$SQLITE_CRATE-$SQLITE_VERSION/Cargo.toml\"" <<<"$meta" |
        head -n1 | cut -d'"' -f4)"
    [ -n "$manifest" ] && [ -f "$(dirname "$manifest")/sqlite3/sqlite3.c" ] ||
        die "crate $SQLITE_CRATE =$SQLITE_VERSION has no sqlite3/sqlite3.c"
    echo "$(dirname "$manifest")/sqlite3"
}

# SQLite's object, compiled once per change of its source or flags.
SQLITE_OBJ="$out/sqlite3.o"
SQLITE_INC=""
build_sqlite() {
    [ -z "$SQLITE_INC" ] || return 0
    SQLITE_INC="$(sqlite_dir)"
    local stamp
    stamp="$( (stamp_of "$SQLITE_INC/sqlite3.c" "$SQLITE_INC/sqlite3.h"
        echo "${CFLAGS[*]} ${SQLITE_FLAGS[*]}") | sha256sum | cut -d' ' -f1)"
    if [ -f "$SQLITE_OBJ" ] && [ "$(cat "$SQLITE_OBJ.stamp" 2>/dev/null)" = "$stamp" ]; then
        return 0
    fi
    echo "$me: compiling SQLite ($SQLITE_INC/sqlite3.c)" >&2
    "$CC" "${CFLAGS[@]}" "${SQLITE_FLAGS[@]}" -w -c "$SQLITE_INC/sqlite3.c" -o "$SQLITE_OBJ.tmp" ||
        die "compiling SQLite failed"
    mv "$SQLITE_OBJ.tmp" "$SQLITE_OBJ"
    echo "$stamp" >"$SQLITE_OBJ.stamp"
}

shopt -s nullglob
guests=("$here"/*.c)
[ ${#guests[@]} -gt 0 ] || die "no guests in $here"
rt=("$here"/rt/*.c)
[ ${#rt[@]} -gt 0 ] || die "no runtime sources in $here/rt"
headers=("$here"/*.h "$here"/rt/*.h)

built=0
for src in "${guests[@]}"; do
    name="$(basename "$src" .c)"
    wasm="$out/$name.wasm"
    extra=()
    deps=("$src" "${headers[@]}" "${rt[@]}" "${BASH_SOURCE[0]}")
    if grep -q '#include[[:space:]]*"sqlite3.h"' "$src"; then
        build_sqlite
        extra=(-I "$SQLITE_INC" "${SQLITE_FLAGS[@]}" "$SQLITE_OBJ")
        deps+=("$SQLITE_OBJ.stamp")
    fi
    stamp="$( (stamp_of "${deps[@]}"; echo "${CFLAGS[*]} ${LDFLAGS[*]} ${extra[*]}") |
        sha256sum | cut -d' ' -f1)"
    if [ -f "$wasm" ] && [ "$(cat "$wasm.stamp" 2>/dev/null)" = "$stamp" ]; then
        continue
    fi
    echo "$me: building $name.wasm" >&2
    "$CC" "${CFLAGS[@]}" -I "$here" -Wall -o "$wasm.tmp" "$src" "${rt[@]}" "${extra[@]}" "${LDFLAGS[@]}" ||
        die "building $name.wasm failed"
    # crt1-command.o would make wasm-ld wrap every export in ctor/dtor
    # calls (".command_export"); the adapter's cabi_realloc must not be.
    if grep -aq command_export "$wasm.tmp"; then
        rm -f "$wasm.tmp"
        die "$name.wasm has .command_export wrappers: it was linked with crt1-command.o"
    fi
    grep -aq cabi_realloc "$wasm.tmp" || die "$name.wasm does not export cabi_realloc"
    mv "$wasm.tmp" "$wasm"
    echo "$stamp" >"$wasm.stamp"
    built=$((built + 1))
done
echo "$me: ${#guests[@]} guests in $out ($built rebuilt)" >&2
